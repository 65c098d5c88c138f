"""DICOM network services: the store client and its outbox, retrieve, worklist, archive SCP.

Everything here talks to a DICOM peer (pynetdicom associations in worker threads, asyncio
around them). The data sets they carry are built by the pure builders in
:mod:`rtstream.dicom`, which never import this package.
"""

from rtstream.dicom import dictionary as _dictionary  # noqa: F401  (registers (0006,0001))
