"""rtstream: real-time DICOM PS3.22 (DICOM-RTV) streaming.

Importing the package loads nothing heavy: the wire layer (:mod:`rtstream.proto`)
must stay free of asyncio, sockets and codecs (see ``DESIGN.md`` §2).
"""

__version__ = "0.1.0"
