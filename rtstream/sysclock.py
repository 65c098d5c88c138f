"""The real clock: TAI nanoseconds from the host (outside the sans-I/O layer).

Theory of operation
-------------------
Every timestamp rtstream puts on the wire (RTP media clock, Frame Origin Timestamp, NMOS
origin/sync items) counts TAI nanoseconds since 1970-01-01, the PTP epoch (ST 2110-10,
PS3.3 C.7.6.27.1.1). This module is the only place that reads the host clock, and it must
know what it reads:

* ``CLOCK_TAI`` is ``CLOCK_REALTIME`` (UTC) plus the kernel's TAI offset, the ``tai``
  field of ``adjtimex(2)``. A PTP stack (``ptp4l``/``phc2sys``) sets that offset; then
  ``CLOCK_TAI`` is TAI and is read as is (:attr:`ClockKind.PTP`).
* Without a PTP daemon the offset is 0 (or cannot be read), so ``CLOCK_TAI`` is UTC. The
  clock is then a free-running host clock (:attr:`ClockKind.HOST`): rtstream reads
  ``CLOCK_REALTIME`` and adds the current TAI - UTC leap-second count,
  :data:`~rtstream.proto.clock.TAI_UTC_OFFSET_S` (37 s since 2017-01-01, IERS
  Bulletin C), so :meth:`SystemClock.now_ns` is TAI in both cases.

Civil time is derived from a TAI instant in one place,
:func:`rtstream.dicom.realtime.tai_ns_to_datetime`, which subtracts the same count.
"""

from __future__ import annotations

import ctypes
import enum
import logging
import time

from rtstream.proto.clock import NS_PER_S, TAI_UTC_OFFSET_S

logger = logging.getLogger(__name__)

_MAX_PLAUSIBLE_TAI_OFFSET_S = 1000
"""A kernel ``tai`` value above this (or below 0) is garbage, not a leap-second count."""


class ClockKind(enum.Enum):
    """What the host clock is."""

    PTP = "ptp"
    """The kernel's TAI offset is set (PTP disciplined): ``CLOCK_TAI`` is TAI."""
    HOST = "host"
    """A free-running host clock (kernel TAI offset 0 or unreadable): UTC + leap seconds."""


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """``struct timex`` of glibc / Linux ``<sys/timex.h>`` (208 bytes on x86_64, ``tai``
    at offset 160; ctypes' natural alignment gives the same padding as the C compiler)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


def read_kernel_tai_offset() -> int | None:
    """The kernel's TAI - UTC offset in seconds (``adjtimex(2)`` ``tai``), read only.

    ``adjtimex`` is called on a zeroed ``struct timex`` with ``modes = 0``, which changes
    nothing and needs no privilege.

    Returns
    -------
    int or None
        The offset (0 when no daemon set it), or None when it cannot be read (no
        ``adjtimex`` in the C library, the call refused, an implausible value).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    adjtimex.argtypes = [ctypes.POINTER(_Timex)]
    adjtimex.restype = ctypes.c_int
    tx = _Timex()  # zeroed, modes = 0: read only
    if adjtimex(ctypes.byref(tx)) < 0:
        logger.debug("adjtimex: errno %d; kernel TAI offset unknown", ctypes.get_errno())
        return None
    if not 0 <= tx.tai <= _MAX_PLAUSIBLE_TAI_OFFSET_S:
        logger.debug("adjtimex: implausible tai %d; kernel TAI offset unknown", tx.tai)
        return None
    return int(tx.tai)


class SystemClock:
    """TAI nanoseconds from the host, whatever the kernel's TAI offset.

    Parameters
    ----------
    kernel_tai_offset : int or None
        None (the default) reads the kernel's offset with :func:`read_kernel_tai_offset`.
        An int simulates a kernel with that offset (tests): ``CLOCK_TAI`` is then read as
        ``CLOCK_REALTIME + kernel_tai_offset`` s, so 37 stands for a PTP-disciplined
        host and 0 for a free-running one. The host clock is never changed.

    Attributes
    ----------
    kind : ClockKind
        PTP when the kernel's TAI offset is non-zero, else HOST.
    tai_utc_offset_s : int
        The TAI - UTC seconds the clock's TAI contains: the kernel's offset (PTP) or
        the leap-second count added here (HOST).
    """

    def __init__(self, *, kernel_tai_offset: int | None = None) -> None:
        simulated = kernel_tai_offset is not None
        offset = read_kernel_tai_offset() if kernel_tai_offset is None else kernel_tai_offset
        tai_clock: int | None = getattr(time, "CLOCK_TAI", None)
        if offset and (simulated or tai_clock is not None):
            self.kind = ClockKind.PTP
            self.tai_utc_offset_s = offset
            if offset != TAI_UTC_OFFSET_S:
                logger.warning(
                    "kernel TAI offset %d s differs from TAI-UTC %d s (IERS Bulletin C): "
                    "clinical times will be off by the difference", offset, TAI_UTC_OFFSET_S,
                )
            # CLOCK_TAI is TAI: read it as is
            self._clk: int = time.CLOCK_REALTIME if simulated or tai_clock is None else tai_clock
            self._add_ns = offset * NS_PER_S if simulated else 0
        else:
            # CLOCK_TAI would read UTC: read UTC and add the leap seconds ourselves
            self.kind = ClockKind.HOST
            self.tai_utc_offset_s = TAI_UTC_OFFSET_S
            self._clk = time.CLOCK_REALTIME
            self._add_ns = TAI_UTC_OFFSET_S * NS_PER_S
        logger.debug("system clock: %s, TAI - UTC %d s%s", self.kind.value,
                     self.tai_utc_offset_s, " (simulated kernel)" if simulated else "")

    @property
    def ptp_disciplined(self) -> bool:
        """True when the kernel's TAI offset is set (a PTP daemon disciplines the clock)."""
        return self.kind is ClockKind.PTP

    def now_ns(self) -> int:
        """Current TAI time in nanoseconds since 1970-01-01 (the PTP epoch)."""
        return time.clock_gettime_ns(self._clk) + self._add_ns
