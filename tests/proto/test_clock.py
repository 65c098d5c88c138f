"""Media clock, PTP timestamps and the SDP reference clock (ST 2110-10, RFC 7273)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtstream.errors import ConfigError, RemoteProtocolError
from rtstream.proto.clock import NS_PER_S, FakeClock, PtpTimestamp, RefClock, rtp_timestamp


@pytest.mark.parametrize(
    ("tai_ns", "rate", "want"),
    [
        (0, 90_000, 0),
        (NS_PER_S, 90_000, 90_000),
        (NS_PER_S // 60, 90_000, 1499),  # 1499.99994: floor
        (-(-NS_PER_S // 60), 90_000, 1500),  # one 60 Hz frame, rounded up to the ns
        (1001 * NS_PER_S // 60000, 90_000, 1501),  # floor(1501.5)
        (NS_PER_S - 1, 48_000, 47_999),  # floor, never rounds up
        (1_700_000_000 * NS_PER_S, 90_000, (1_700_000_000 * 90_000) % (1 << 32)),
        (-(-(1 << 32) * NS_PER_S // 48_000), 48_000, 0),  # one wrap at 48 kHz
        ((1 << 32) * NS_PER_S // 48_000, 48_000, 0xFFFFFFFF),  # 1 ns before it
    ],
)
def test_rtp_timestamp(tai_ns: int, rate: int, want: int) -> None:
    assert rtp_timestamp(tai_ns, rate) == want


@given(st.integers(0, 1 << 62), st.sampled_from([90_000, 48_000, 44_100, 96_000]))
def test_rtp_timestamp_is_floor_mod_2_32(tai_ns: int, rate: int) -> None:
    ts = rtp_timestamp(tai_ns, rate)
    assert 0 <= ts < 1 << 32
    assert ts == (tai_ns * rate // NS_PER_S) % (1 << 32)
    # a frame and its metadata grain sampled at the same instant share the timestamp
    assert rtp_timestamp(tai_ns, rate) == ts


@given(st.integers(0, 1 << 50), st.integers(0, 10**9))
def test_rtp_timestamp_is_monotonic_modulo_wrap(t: int, dt: int) -> None:
    a, b = rtp_timestamp(t, 90_000), rtp_timestamp(t + dt, 90_000)
    assert (b - a) % (1 << 32) == ((t + dt) * 90_000 // NS_PER_S - t * 90_000 // NS_PER_S) % (
        1 << 32
    )


PTP_VECTORS = [
    (PtpTimestamp(0, 0), bytes(10)),
    (
        PtpTimestamp(1_700_000_000, 500_000_000),
        b"\x00\x00\x65\x53\xf1\x00"  # seconds 1700000000 (48 bits)
        b"\x1d\xcd\x65\x00",  # nanoseconds 500000000
    ),
    (
        PtpTimestamp((1 << 48) - 1, 999_999_999),
        b"\xff\xff\xff\xff\xff\xff"  # largest 48-bit seconds
        b"\x3b\x9a\xc9\xff",  # nanoseconds 999999999
    ),
]


@pytest.mark.parametrize(("ts", "wire"), PTP_VECTORS)
def test_ptp_vectors(ts: PtpTimestamp, wire: bytes) -> None:
    assert ts.to_bytes() == wire
    assert PtpTimestamp.from_bytes(wire) == ts


@given(st.integers(0, (1 << 48) * NS_PER_S - 1))
def test_ptp_roundtrip(ns: int) -> None:
    ts = PtpTimestamp.from_ns(ns)
    assert ts.to_ns() == ns
    assert PtpTimestamp.from_bytes(ts.to_bytes()) == ts


def test_ptp_every_truncated_prefix_and_bad_nanoseconds() -> None:
    wire = PTP_VECTORS[1][1]
    for k in range(10):
        with pytest.raises(RemoteProtocolError) as exc:
            PtpTimestamp.from_bytes(wire[:k], "Frame Origin Timestamp")
        assert exc.value.field == "Frame Origin Timestamp"
    with pytest.raises(RemoteProtocolError, match="nanoseconds"):
        PtpTimestamp.from_bytes(bytes(6) + (10**9).to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError):
        PtpTimestamp.from_bytes(wire + b"\x00")


@given(st.binary(max_size=12))
def test_ptp_garbage(data: bytes) -> None:
    try:
        ts = PtpTimestamp.from_bytes(data)
    except RemoteProtocolError as e:
        assert e.field == "PTP timestamp"
    else:
        assert ts.to_bytes() == data


def test_ptp_local_misuse() -> None:
    with pytest.raises(ValueError, match="seconds"):
        PtpTimestamp(1 << 48, 0)
    with pytest.raises(ValueError, match="nanoseconds"):
        PtpTimestamp(0, NS_PER_S)


def test_fake_clock() -> None:
    c = FakeClock(5)
    assert c.now_ns() == 5
    c.advance(10)
    assert c.now_ns() == 15
    c.set(3)
    assert c.now_ns() == 3


# --- RefClock ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "clock"),
    [
        (
            "ptp=IEEE1588-2008:08-00-11-FF-FE-21-E1-B0:127",
            RefClock(ptp_grandmaster="08-00-11-FF-FE-21-E1-B0"),
        ),
        (
            "ptp=IEEE1588-2008:39-a7-94-ff-fe-07-cb-d0:0",
            RefClock(ptp_grandmaster="39-A7-94-FF-FE-07-CB-D0", ptp_domain=0),
        ),
        (
            "ptp=IEEE1588-2019:39-A7-94-FF-FE-07-CB-D0",
            RefClock(ptp_grandmaster="39-A7-94-FF-FE-07-CB-D0", ptp_domain=0),
        ),
        ("localmac=02-00-00-00-00-01", RefClock(local_mac="02-00-00-00-00-01")),
        ("  localmac=ab-cd-ef-01-02-03 ", RefClock(local_mac="AB-CD-EF-01-02-03")),
    ],
)
def test_refclk_parse(value: str, clock: RefClock) -> None:
    assert RefClock.parse(value) == clock


def test_refclk_sdp_value() -> None:
    assert RefClock().sdp_value() == "localmac=00-00-00-00-00-00"
    assert (
        RefClock(ptp_grandmaster="08-00-11-ff-fe-21-e1-b0", ptp_domain=5).sdp_value()
        == "ptp=IEEE1588-2008:08-00-11-FF-FE-21-E1-B0:5"
    )


hexbyte = st.integers(0, 255).map(lambda b: f"{b:02x}")


@given(
    gm=st.none() | st.lists(hexbyte, min_size=8, max_size=8).map("-".join),
    domain=st.integers(0, 127),
    mac=st.lists(hexbyte, min_size=6, max_size=6).map("-".join),
)
def test_refclk_roundtrip(gm: str | None, domain: int, mac: str) -> None:
    clock = RefClock(ptp_grandmaster=gm, ptp_domain=domain, local_mac=mac)
    parsed = RefClock.parse(clock.sdp_value())
    if gm is None:
        assert parsed == RefClock(local_mac=mac)
    else:
        assert parsed == RefClock(ptp_grandmaster=gm, ptp_domain=domain)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("ntp=192.0.2.1", "ts-refclk"),
        ("gps", "ts-refclk"),
        ("localmac=02-00-00-00-00", "ts-refclk localmac"),
        ("localmac=02-00-00-00-00-01x", "ts-refclk localmac"),
        ("ptp=IEEE1588-2008:08-00-11-FF-FE-21-E1:1", "ts-refclk ptp grandmaster"),
        ("ptp=IEEE1588-2008:08-00-11-FF-FE-21-E1-B0:128", "ts-refclk ptp domain"),
        ("ptp=IEEE1588-2008:08-00-11-FF-FE-21-E1-B0:x", "ts-refclk ptp domain"),
        ("ptp=IEEE1588-2008:08-00-11-FF-FE-21-E1-B0:\u0661", "ts-refclk ptp domain"),
    ],
)
def test_refclk_bad(value: str, field: str) -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        RefClock.parse(value)
    assert exc.value.field == field


@given(st.text(max_size=60))
def test_refclk_garbage(value: str) -> None:
    try:
        RefClock.parse(value)
    except RemoteProtocolError as e:
        assert e.field.startswith("ts-refclk")


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"ptp_grandmaster": "nope"}, "clock.ptp_grandmaster"),
        ({"ptp_domain": 128}, "clock.ptp_domain"),
        ({"local_mac": "02:00:00:00:00:01"}, "clock.local_mac"),
    ],
)
def test_refclk_config_errors(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        RefClock(**kwargs)  # type: ignore[arg-type]
    assert exc.value.key == key
