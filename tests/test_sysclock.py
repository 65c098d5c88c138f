"""The host clock: what CLOCK_TAI means (kernel TAI offset), and TAI always out (issue #17 §1)."""

from __future__ import annotations

import ctypes
import logging
import platform
import sys
import time
from typing import Any

import pytest

from rtstream import sysclock
from rtstream.proto.clock import NS_PER_S, TAI_UTC_OFFSET_S
from rtstream.sysclock import ClockKind, SystemClock, read_kernel_tai_offset

TOLERANCE_NS = 50_000_000
LINUX_X86_64 = sys.platform == "linux" and platform.machine() == "x86_64"


def tai_minus_wall_ns(clock: SystemClock) -> int:
    before = time.time_ns()
    tai = clock.now_ns()
    after = time.time_ns()
    return tai - (before + after) // 2


def test_leap_seconds_since_2017() -> None:
    assert TAI_UTC_OFFSET_S == 37  # IERS Bulletin C: no leap second since 2017-01-01


@pytest.mark.parametrize("kernel_offset", [0, 37], ids=["free-running", "ptp-simulated"])
def test_now_is_tai_whatever_the_kernel_offset(kernel_offset: int) -> None:
    clock = SystemClock(kernel_tai_offset=kernel_offset)
    assert abs(tai_minus_wall_ns(clock) - 37 * NS_PER_S) <= TOLERANCE_NS
    assert clock.tai_utc_offset_s == 37


def test_default_clock_is_tai_here() -> None:
    """The real kernel, read through adjtimex: TAI is UTC + 37 s on any correct host."""
    clock = SystemClock()
    assert abs(tai_minus_wall_ns(clock) - 37 * NS_PER_S) <= TOLERANCE_NS


def test_kinds() -> None:
    free = SystemClock(kernel_tai_offset=0)
    assert free.kind is ClockKind.HOST and not free.ptp_disciplined
    ptp = SystemClock(kernel_tai_offset=37)
    assert ptp.kind is ClockKind.PTP and ptp.ptp_disciplined


@pytest.mark.skipif(not LINUX_X86_64, reason="struct timex layout checked for x86_64 Linux")
def test_timex_layout_matches_glibc_x86_64() -> None:
    # sizeof(struct timex) and offsetof(tai) as gcc computes them on x86_64 glibc
    assert ctypes.sizeof(sysclock._Timex) == 208
    assert sysclock._Timex.tai.offset == 160
    assert sysclock._Timex.status.offset == 40
    assert sysclock._Timex.time.offset == 72


@pytest.mark.skipif(sys.platform != "linux", reason="adjtimex is Linux")
def test_kernel_offset_is_readable_here() -> None:
    offset = read_kernel_tai_offset()
    assert offset is not None and 0 <= offset <= 1000
    clock = SystemClock()
    assert clock.kind is (ClockKind.PTP if offset else ClockKind.HOST)


def test_unreadable_offset_falls_back_to_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libc(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no C library")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert read_kernel_tai_offset() is None
    clock = SystemClock()
    assert clock.kind is ClockKind.HOST and clock.tai_utc_offset_s == 37
    assert abs(tai_minus_wall_ns(clock) - 37 * NS_PER_S) <= TOLERANCE_NS


class _FakeAdjtimex:
    def __init__(self, result: int, tai: int) -> None:
        self.result, self.tai = result, tai
        self.argtypes: object = None
        self.restype: object = None

    def __call__(self, ref: Any) -> int:
        tx = ref._obj
        assert tx.modes == 0  # read only, never sets anything
        tx.tai = self.tai
        return self.result


class _FakeLibc:
    def __init__(self, result: int, tai: int) -> None:
        self.adjtimex = _FakeAdjtimex(result, tai)


@pytest.mark.parametrize(("result", "tai", "expected"), [
    (-1, 37, None),  # EPERM/ENOSYS (seccomp): unreadable
    (5, -3, None),  # garbage
    (5, 1_000_000, None),  # garbage
    (5, 0, 0),  # TIME_ERROR: unsynchronized, no offset
    (0, 37, 37),  # TIME_OK, PTP daemon set the offset
])
def test_adjtimex_results(monkeypatch: pytest.MonkeyPatch, result: int, tai: int,
                          expected: int | None) -> None:
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: _FakeLibc(result, tai))
    assert read_kernel_tai_offset() == expected


@pytest.mark.skipif(not hasattr(time, "CLOCK_TAI"), reason="needs CLOCK_TAI")
def test_kernel_offset_set_reads_clock_tai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sysclock, "read_kernel_tai_offset", lambda: 37)
    clock = SystemClock()
    assert clock.kind is ClockKind.PTP and clock.tai_utc_offset_s == 37
    # whatever the real kernel's offset, the PTP clock reads CLOCK_TAI untouched
    before = time.clock_gettime_ns(time.CLOCK_TAI)
    now = clock.now_ns()
    assert 0 <= now - before <= TOLERANCE_NS


def test_kernel_offset_other_than_the_leap_count_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rtstream.sysclock"):
        clock = SystemClock(kernel_tai_offset=36)
    assert clock.tai_utc_offset_s == 36 and clock.kind is ClockKind.PTP
    assert "IERS" in caplog.text
    assert abs(tai_minus_wall_ns(clock) - 36 * NS_PER_S) <= TOLERANCE_NS
