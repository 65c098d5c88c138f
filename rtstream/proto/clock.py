"""One media clock for every flow (ST 2110-10 style), without reading any clock here.

Theory of operation
-------------------
Every flow of a rendition derives its RTP timestamps from one time base, TAI
nanoseconds since 1970-01-01 (the PTP epoch): ``rtp = floor(t * rate / 1e9) mod 2**32``
(ST 2110-10, signalled in SDP by ``a=mediaclk:direct=0``). A video frame and its
metadata grain sampled at the same instant therefore carry the same timestamp, and an
audio packet's timestamp is its first sample's instant at the audio rate.

This module never reads the time: callers pass ``now`` (an int of TAI nanoseconds)
from a :class:`Clock`. :class:`FakeClock` is driven by hand in tests; the system clock
lives in :mod:`rtstream.sysclock`, outside the sans-I/O layer.

The reference clock is advertised in SDP by :class:`RefClock`: ``ptp=IEEE1588-2008:
<gmid>:<domain>`` when a PTP grandmaster is configured, else ``localmac=<mac>`` (a local
free-running clock, self-consistent between our flows but not PTP-traceable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from rtstream.errors import ConfigError, RemoteProtocolError

NS_PER_S = 1_000_000_000

TAI_UTC_OFFSET_S = 37
"""TAI - UTC in seconds since 2017-01-01 (IERS Bulletin C): PTP and NMOS timestamps count
TAI, DICOM dates and times are civil (UTC). The one place rtstream keeps the leap-second
count: :class:`rtstream.sysclock.SystemClock` adds it to a free-running UTC host clock, and
:func:`tai_to_utc_ns` removes it again."""


def tai_to_utc_ns(tai_ns: int) -> int:
    """UTC nanoseconds since 1970 for a TAI instant (removes :data:`TAI_UTC_OFFSET_S`)."""
    return tai_ns - TAI_UTC_OFFSET_S * NS_PER_S
_MAX_PTP_SECONDS = (1 << 48) - 1


class Clock(Protocol):
    """A source of TAI time in integer nanoseconds since the PTP epoch."""

    def now_ns(self) -> int:
        """Return the current TAI time in nanoseconds."""
        ...


class FakeClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start_ns: int = 1_700_000_000 * NS_PER_S) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        """Return the time set by the test."""
        return self._now

    def advance(self, ns: int) -> None:
        """Move the clock forward by ``ns`` nanoseconds."""
        self._now += ns

    def set(self, ns: int) -> None:
        """Set the clock to ``ns``."""
        self._now = ns


def rtp_timestamp(tai_ns: int, clock_rate: int) -> int:
    """RTP timestamp of instant ``tai_ns`` at ``clock_rate`` Hz (ST 2110-10 media clock).

    Exact integer arithmetic: ``floor(tai_ns * clock_rate / 1e9) mod 2**32``.
    """
    return (tai_ns * clock_rate // NS_PER_S) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class PtpTimestamp:
    """An IEEE 1588-2008 timestamp: 48-bit seconds and 32-bit nanoseconds.

    Its 10-byte big-endian form is used by Frame Origin Timestamp (0034,0007),
    PS3.3 C.7.6.27.1.1, and by the NMOS sync/origin header-extension items.
    """

    seconds: int
    nanoseconds: int

    def __post_init__(self) -> None:
        if not 0 <= self.seconds <= _MAX_PTP_SECONDS:
            raise ValueError(f"seconds: {self.seconds} does not fit 48 bits")
        if not 0 <= self.nanoseconds < NS_PER_S:
            raise ValueError(f"nanoseconds: {self.nanoseconds} is not in 0..999999999")

    @classmethod
    def from_ns(cls, tai_ns: int) -> PtpTimestamp:
        """Split integer nanoseconds into seconds and nanoseconds."""
        return cls(tai_ns // NS_PER_S, tai_ns % NS_PER_S)

    def to_ns(self) -> int:
        """Integer nanoseconds since the epoch."""
        return self.seconds * NS_PER_S + self.nanoseconds

    def to_bytes(self) -> bytes:
        """The 10-byte wire form: 6 bytes seconds, 4 bytes nanoseconds, big-endian."""
        return self.seconds.to_bytes(6, "big") + self.nanoseconds.to_bytes(4, "big")

    @classmethod
    def from_bytes(cls, data: bytes, field: str = "PTP timestamp") -> PtpTimestamp:
        """Parse the 10-byte form.

        Raises
        ------
        RemoteProtocolError
            When ``data`` is not 10 bytes or the nanoseconds are >= 10**9.
        """
        if len(data) != 10:
            raise RemoteProtocolError(field, f"{len(data)} bytes, expected 10")
        ns = int.from_bytes(data[6:10], "big")
        if ns >= NS_PER_S:
            raise RemoteProtocolError(field, f"nanoseconds {ns} >= 10**9")
        return cls(int.from_bytes(data[0:6], "big"), ns)


_MAC = re.compile(r"^[0-9A-Fa-f]{2}(-[0-9A-Fa-f]{2}){5}$")
_GMID = re.compile(r"^[0-9A-Fa-f]{2}(-[0-9A-Fa-f]{2}){7}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class RefClock:
    """The reference clock advertised by ``a=ts-refclk`` (RFC 7273, ST 2110-10).

    Parameters
    ----------
    ptp_grandmaster : str or None
        EUI-64 of the PTP grandmaster as ``XX-XX-XX-XX-XX-XX-XX-XX``; None when the
        clock is local and free-running.
    ptp_domain : int
        PTP domain number (0-127).
    local_mac : str
        MAC address ``XX-XX-XX-XX-XX-XX`` of the interface whose local clock is used
        when there is no grandmaster.
    """

    ptp_grandmaster: str | None = None
    ptp_domain: int = 127
    local_mac: str = "00-00-00-00-00-00"

    def __post_init__(self) -> None:
        if self.ptp_grandmaster is not None and not _GMID.fullmatch(self.ptp_grandmaster):
            raise ConfigError(
                "clock.ptp_grandmaster", self.ptp_grandmaster, "an EUI-64 like 08-00-11-FF-FE-21-E1-B0"
            )
        if not 0 <= self.ptp_domain <= 127:
            raise ConfigError("clock.ptp_domain", self.ptp_domain, "an integer 0..127")
        if not _MAC.fullmatch(self.local_mac):
            raise ConfigError("clock.local_mac", self.local_mac, "a MAC like 02-00-00-00-00-01")
        # one spelling, so that parse(sdp_value()) == self
        if self.ptp_grandmaster is not None:
            object.__setattr__(self, "ptp_grandmaster", self.ptp_grandmaster.upper())
        object.__setattr__(self, "local_mac", self.local_mac.upper())

    def sdp_value(self) -> str:
        """The value of the ``a=ts-refclk:`` attribute."""
        if self.ptp_grandmaster is not None:
            return f"ptp=IEEE1588-2008:{self.ptp_grandmaster.upper()}:{self.ptp_domain}"
        return f"localmac={self.local_mac.upper()}"

    @classmethod
    def parse(cls, value: str) -> RefClock:
        """Parse an ``a=ts-refclk`` value written by us or by a third party.

        Raises
        ------
        RemoteProtocolError
            On a form we do not understand.
        """
        value = value.strip()
        if value.startswith("localmac="):
            mac = value[len("localmac=") :]
            if not _MAC.fullmatch(mac):
                raise RemoteProtocolError("ts-refclk localmac", f"bad MAC {mac!r}")
            return cls(local_mac=mac.upper())
        if value.startswith("ptp="):
            parts = value[4:].split(":")
            if len(parts) >= 2 and parts[0].startswith("IEEE1588"):
                gm = parts[1]
                if gm == "traceable":
                    return cls()
                domain = 0
                if len(parts) >= 3:
                    if not re.fullmatch(r"[0-9]{1,3}", parts[2]) or int(parts[2]) > 127:
                        raise RemoteProtocolError("ts-refclk ptp domain", f"bad domain {parts[2]!r}")
                    domain = int(parts[2])
                if not _GMID.fullmatch(gm):
                    raise RemoteProtocolError("ts-refclk ptp grandmaster", f"bad EUI-64 {gm!r}")
                return cls(ptp_grandmaster=gm.upper(), ptp_domain=domain)
        raise RemoteProtocolError("ts-refclk", f"unsupported reference clock {value!r}")
