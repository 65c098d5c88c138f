"""The real clock: TAI nanoseconds from the kernel (outside the sans-I/O layer)."""

from __future__ import annotations

import time


class SystemClock:
    """Read ``CLOCK_TAI`` (Linux), falling back to ``CLOCK_REALTIME``.

    Without a PTP daemon the kernel's TAI offset is usually 0, so this is UTC: a local
    free-running clock, which the SDP then advertises as ``ts-refclk:localmac``.
    """

    def __init__(self) -> None:
        self._clk = getattr(time, "CLOCK_TAI", time.CLOCK_REALTIME)

    def now_ns(self) -> int:
        """Current TAI time in nanoseconds since 1970-01-01."""
        return time.clock_gettime_ns(self._clk)
