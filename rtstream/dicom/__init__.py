"""DICOM builders: real-time IODs' static/dynamic parts and stored snapshot/clip objects.

Importing the package registers (0006,0001) with pydicom (see :mod:`.dictionary`).
"""

from rtstream.dicom import dictionary as _dictionary  # noqa: F401  (registers (0006,0001))
