"""RTP fixed header, sequence arithmetic and the vectorized header stores (RFC 3550)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtstream.errors import LocalProtocolError, RemoteProtocolError
from rtstream.proto.rtp import (
    RtpPacket,
    SequenceUnwrapper,
    parse_rtp,
    read_rtp_headers,
    seq_diff,
    ts_diff,
    write_rtp_headers,
)
from tests.vectors.rtp_vectors import RTP_VECTORS

RTP_FIELDS = {
    "RTP header",
    "RTP version",
    "RTP CSRC list",
    "RTP header extension",
    "RTP header extension length",
    "RTP padding",
}


@pytest.mark.parametrize(("name", "wire", "packet"), RTP_VECTORS, ids=[v[0] for v in RTP_VECTORS])
def test_vector_parse(name: str, wire: bytes, packet: RtpPacket) -> None:
    assert parse_rtp(wire) == packet


@pytest.mark.parametrize(("name", "wire", "packet"), RTP_VECTORS, ids=[v[0] for v in RTP_VECTORS])
def test_vector_serialize(name: str, wire: bytes, packet: RtpPacket) -> None:
    assert packet.to_bytes() == wire
    assert packet.header_size == len(wire) - len(packet.payload) - packet.padding


@pytest.mark.parametrize(("name", "wire", "packet"), RTP_VECTORS, ids=[v[0] for v in RTP_VECTORS])
def test_vector_every_truncated_prefix(name: str, wire: bytes, packet: RtpPacket) -> None:
    for k in range(len(wire)):
        prefix = wire[:k]
        if k < packet.header_size:
            with pytest.raises(RemoteProtocolError) as exc:
                parse_rtp(prefix)
            assert exc.value.field in RTP_FIELDS
        else:  # the header is whole; a shorter payload (or broken padding) remains
            try:
                got = parse_rtp(prefix)
            except RemoteProtocolError as e:
                assert e.field == "RTP padding"
            else:
                assert got.sequence == packet.sequence


def test_version_must_be_2() -> None:
    wire = bytearray(RTP_VECTORS[0][1])
    wire[0] = (wire[0] & 0x3F) | 0x40
    with pytest.raises(RemoteProtocolError, match="RTP version"):
        parse_rtp(bytes(wire))


def test_padding_count_zero_or_too_big() -> None:
    base = RtpPacket(payload_type=96, sequence=1, timestamp=2, ssrc=3, payload=b"ab", padding=2)
    wire = bytearray(base.to_bytes())
    wire[-1] = 0
    with pytest.raises(RemoteProtocolError, match="RTP padding"):
        parse_rtp(bytes(wire))
    wire[-1] = 200
    with pytest.raises(RemoteProtocolError, match="RTP padding"):
        parse_rtp(bytes(wire))


def test_extension_length_overrun() -> None:
    wire = bytearray(RTP_VECTORS[2][1])
    wire[14:16] = b"\x00\x20"  # 32 words: more than the datagram holds
    with pytest.raises(RemoteProtocolError) as exc:
        parse_rtp(bytes(wire))
    assert exc.value.field == "RTP header extension length"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"payload_type": 128},
        {"sequence": 65536},
        {"timestamp": -1},
        {"ssrc": 1 << 32},
        {"csrcs": tuple(range(16))},
        {"extension": b"\x00\x00\x00\x00"},
        {"extension_profile": 0xBEDE, "extension": b"\x00"},
        {"padding": 256},
    ],
)
def test_bad_packet_fields_are_local_errors(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"payload_type": 96, "sequence": 0, "timestamp": 0, "ssrc": 0}
    base.update(kwargs)
    with pytest.raises(LocalProtocolError):
        RtpPacket(**base)  # type: ignore[arg-type]


@st.composite
def rtp_packets(draw: st.DrawFn) -> RtpPacket:
    profile = draw(st.none() | st.integers(0, 0xFFFF))
    ext = b""
    if profile is not None:
        raw = draw(st.binary(max_size=20))
        ext = raw + bytes(-len(raw) % 4)
    return RtpPacket(
        payload_type=draw(st.integers(0, 127)),
        sequence=draw(st.integers(0, 0xFFFF)),
        timestamp=draw(st.integers(0, 0xFFFFFFFF)),
        ssrc=draw(st.integers(0, 0xFFFFFFFF)),
        marker=draw(st.booleans()),
        csrcs=tuple(draw(st.lists(st.integers(0, 0xFFFFFFFF), max_size=15))),
        extension_profile=profile,
        extension=ext,
        payload=draw(st.binary(max_size=64)),
        padding=draw(st.integers(0, 255)),
    )


@given(rtp_packets())
def test_roundtrip(packet: RtpPacket) -> None:
    assert parse_rtp(packet.to_bytes()) == packet


@given(st.binary(max_size=80))
def test_garbage_parses_or_raises_remote_error(data: bytes) -> None:
    try:
        parse_rtp(data)
    except RemoteProtocolError as e:
        assert e.field in RTP_FIELDS


@given(rtp_packets(), st.binary(min_size=1, max_size=32))
def test_trailing_garbage_without_padding_extends_payload(packet: RtpPacket, junk: bytes) -> None:
    if packet.padding:
        return
    got = parse_rtp(packet.to_bytes() + junk)
    assert got.payload == packet.payload + junk


# --- sequence arithmetic --------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "d"),
    [
        (1, 0, 1),
        (0, 1, -1),
        (0, 0xFFFF, 1),
        (0xFFFF, 0, -1),
        (5, 0xFFF0, 21),
        (0x8000, 0, -0x8000),
        (0x7FFF, 0, 0x7FFF),
    ],
)
def test_seq_diff_across_wrap(a: int, b: int, d: int) -> None:
    assert seq_diff(a, b) == d


@given(st.integers(0, 0xFFFF), st.integers(-0x8000, 0x7FFF))
def test_seq_diff_inverts_addition(b: int, d: int) -> None:
    assert seq_diff((b + d) & 0xFFFF, b) == d


@given(st.integers(0, 0xFFFFFFFF), st.integers(-(1 << 31), (1 << 31) - 1))
def test_ts_diff_inverts_addition(b: int, d: int) -> None:
    assert ts_diff((b + d) & 0xFFFFFFFF, b) == d


def test_unwrapper_counts_through_several_wraps() -> None:
    u = SequenceUnwrapper()
    start = 0xFFF0
    got = [u.unwrap((start + i) & 0xFFFF) for i in range(3 * 65536)]
    assert got == list(range(start, start + 3 * 65536))


def test_unwrapper_reordered_packet_maps_below_without_false_wrap() -> None:
    u = SequenceUnwrapper()
    assert u.unwrap(0xFFFE) == 0xFFFE
    assert u.unwrap(0x0001) == 0x10001  # wrapped forward
    assert u.unwrap(0xFFFF) == 0xFFFF  # late packet from before the wrap
    assert u.unwrap(0x0000) == 0x10000
    assert u.highest == 0x10001
    assert u.unwrap(0x0002) == 0x10002


def test_unwrapper_32_bit() -> None:
    u = SequenceUnwrapper(bits=32)
    assert u.unwrap(0xFFFFFFFF) == 0xFFFFFFFF
    assert u.unwrap(0) == 1 << 32


@given(st.integers(0, 0xFFFF), st.lists(st.integers(-100, 100), max_size=50))
def test_unwrapper_matches_true_counter_under_small_jitter(start: int, jitter: list[int]) -> None:
    u = SequenceUnwrapper()
    u.unwrap(start)
    true = start
    for j in jitter:
        true += 1
        value = true + j
        assert u.unwrap(value & 0xFFFF) == value


# --- vectorized header stores ---------------------------------------------------------


@given(
    n=st.integers(1, 40),
    pt=st.integers(0, 127),
    seq=st.integers(0, 0x1FFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    marker=st.booleans(),
    ext=st.booleans(),
)
def test_write_headers_matches_object_form(
    n: int, pt: int, seq: int, ts: int, ssrc: int, marker: bool, ext: bool
) -> None:
    out = np.zeros((n, 16), np.uint8)
    write_rtp_headers(
        out,
        payload_type=pt,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        marker_last=marker,
        extension=ext,
    )
    for i in range(n):
        want = RtpPacket(
            payload_type=pt,
            sequence=(seq + i) & 0xFFFF,
            timestamp=ts,
            ssrc=ssrc,
            marker=marker and i == n - 1,
        ).to_bytes()
        row = bytearray(want)
        if ext:
            row[0] |= 0x10
        assert out[i, :12].tobytes() == bytes(row)
    h = read_rtp_headers(out)
    assert (h.version == 2).all()
    assert (h.sequence == (seq + np.arange(n)) % 65536).all()
    assert (h.timestamp == ts).all() and (h.ssrc == ssrc).all()
    assert (h.payload_type == pt).all()
    assert h.marker.tolist() == [marker and i == n - 1 for i in range(n)]
    assert (h.extension == ext).all() and not h.padding.any() and not h.csrc_count.any()


def test_read_headers_of_vectors() -> None:
    stride = max(len(w) for _, w, _ in RTP_VECTORS)
    batch = np.zeros((len(RTP_VECTORS), stride), np.uint8)
    for i, (_, wire, _) in enumerate(RTP_VECTORS):
        batch[i, : len(wire)] = np.frombuffer(wire, np.uint8)
    h = read_rtp_headers(batch)
    for i, (_, _, p) in enumerate(RTP_VECTORS):
        assert int(h.sequence[i]) == p.sequence
        assert int(h.timestamp[i]) == p.timestamp
        assert int(h.ssrc[i]) == p.ssrc
        assert int(h.payload_type[i]) == p.payload_type
        assert bool(h.marker[i]) == p.marker
        assert int(h.csrc_count[i]) == len(p.csrcs)
        assert bool(h.extension[i]) == (p.extension_profile is not None)
        assert bool(h.padding[i]) == bool(p.padding)


def test_header_store_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        write_rtp_headers(
            np.zeros((2, 8), np.uint8), payload_type=96, sequence=0, timestamp=0, ssrc=0
        )
    with pytest.raises(LocalProtocolError):
        read_rtp_headers(np.zeros((2, 12), np.int16))
    write_rtp_headers(np.zeros((0, 12), np.uint8), payload_type=96, sequence=0, timestamp=0, ssrc=0)
