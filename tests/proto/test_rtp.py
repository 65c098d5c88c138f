"""RTP fixed header, sequence arithmetic and the vectorized header stores (RFC 3550)."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtstream.errors import LocalProtocolError, RemoteProtocolError
from rtstream.proto.rtp import (
    Arrival,
    RtpPacket,
    SequenceTracker,
    parse_rtp,
    read_rtp_headers,
    seq_add,
    seq_diff,
    seq_diff_array,
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


def test_seq_add_wraps() -> None:
    assert seq_add(0xFFFF, 1) == 0 and seq_add(0, -1) == 0xFFFF and seq_add(5, 3) == 8


@given(st.lists(st.integers(0, 0xFFFF), max_size=20), st.integers(-(1 << 40), 1 << 40))
def test_seq_diff_array_is_seq_diff(a: list[int], b: int) -> None:
    got = seq_diff_array(np.array(a, np.int64), b).tolist()
    assert got == [seq_diff(x, b & 0xFFFF) for x in a]


class ReferenceAccount:
    """The receiver's accounting before SequenceTracker (rtstream/receiver.py _SeqAccount):
    the last 1024 unique extended numbers in a deque."""

    def __init__(self) -> None:
        self.ssrc: int | None = None
        self.first = self.highest = self.unique = self.duplicates = self.reordered = 0
        self.lost_before = 0
        self._seen: deque[int] = deque(maxlen=1024)
        self._seen_set: set[int] = set()

    @property
    def lost(self) -> int:
        if self.ssrc is None:
            return self.lost_before
        return self.lost_before + max(0, self.highest - self.first + 1 - self.unique)

    def add(self, ssrc: int, seq: int) -> None:
        if ssrc != self.ssrc:
            self.lost_before = self.lost
            self.ssrc = ssrc
            self.first = self.highest = seq
            self.unique = 1
            self._seen.clear()
            self._seen_set = {seq}
            self._seen.append(seq)
            return
        ext = self.highest + seq_diff(seq, self.highest)
        if ext in self._seen_set:
            self.duplicates += 1
            return
        if ext < self.highest:
            self.reordered += 1
        else:
            self.highest = ext
        self.first = min(self.first, ext)
        self.unique += 1
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(ext)
        self._seen_set.add(ext)


def counters(t: SequenceTracker | ReferenceAccount) -> tuple[int, int, int]:
    return t.lost, t.reordered, t.duplicates


def test_tracker_extends_through_several_wraps() -> None:
    t = SequenceTracker()
    start = 0xFFF0
    for i in range(3 * 65536):
        assert t.add(7, (start + i) & 0xFFFF) is Arrival.IN_ORDER
    assert t.highest == start + 3 * 65536 - 1
    assert counters(t) == (0, 0, 0) and t.received == 3 * 65536


def test_tracker_wrap_65535_to_0_with_a_late_packet_from_before_it() -> None:
    t = SequenceTracker()
    assert t.add(1, 0xFFFE) is Arrival.IN_ORDER
    assert t.add(1, 0x0001) is Arrival.IN_ORDER  # wrapped forward, 0xFFFF and 0 missing
    assert t.highest == 0x10001 and t.lost == 2
    assert t.add(1, 0xFFFF) is Arrival.REORDERED  # from before the wrap: no false wrap
    assert t.add(1, 0x0000) is Arrival.REORDERED
    assert t.highest == 0x10001 and counters(t) == (0, 2, 0)
    assert t.add(1, 0xFFFF) is Arrival.DUPLICATE
    assert t.add(1, 0x0002) is Arrival.IN_ORDER
    assert counters(t) == (0, 2, 1) and t.received == 5


def test_tracker_reordered_before_the_first_packet_and_loss() -> None:
    t = SequenceTracker()
    for s in (10, 8, 9, 14):
        t.add(3, s)
    assert t.reordered == 2 and t.lost == 3  # 11..13 missing of 8..14
    t.add(3, 12)
    assert t.reordered == 3 and t.lost == 2


def test_tracker_duplicates_only_within_the_window() -> None:
    t = SequenceTracker(window=16)
    for s in range(40):
        t.add(1, s)
    assert t.add(1, 39) is Arrival.DUPLICATE
    assert t.add(1, 24) is Arrival.DUPLICATE  # 15 below the highest: in the window
    assert t.add(1, 23) is Arrival.REORDERED  # 16 below: too old to tell
    assert counters(t) == (0, 1, 2)


def test_tracker_ssrc_change_keeps_the_loss_and_restarts() -> None:
    t = SequenceTracker()
    for s in (100, 101, 104):  # 102, 103 lost
        t.add(1, s)
    assert t.lost == 2
    assert t.add(2, 5000) is Arrival.IN_ORDER and t.ssrc == 2 and t.highest == 5000
    t.add(2, 5003)  # 5001, 5002 lost
    assert t.lost == 4 and t.received == 2
    t.add(2, 5000)
    assert t.duplicates == 1


def test_tracker_rejects_a_window_that_is_not_a_power_of_two() -> None:
    with pytest.raises(LocalProtocolError, match="window"):
        SequenceTracker(window=1000)


def test_tracker_advance_is_record_of_the_next_numbers() -> None:
    a, b = SequenceTracker(window=8), SequenceTracker(window=8)
    for t in (a, b):
        t.record(t.extend(np.array([65530])))
    a.advance(20)
    b.record(b.extend((65531 + np.arange(20)) & 0xFFFF))
    assert (a.highest, a.received, counters(a)) == (b.highest, b.received, counters(b))
    again = (65530 + np.arange(14, 21)) & 0xFFFF
    assert (a.record(a.extend(again)).duplicate == b.record(b.extend(again)).duplicate).all()
    with pytest.raises(LocalProtocolError):
        SequenceTracker().advance(1)


def test_tracker_extend_seeds_the_first_packet() -> None:
    t = SequenceTracker()
    ext = t.extend(np.array([5, 4, 6]), first=(1 << 32) + (7 << 16) + 5)
    assert ext.tolist() == [(1 << 32) + (7 << 16) + k for k in (5, 4, 6)]
    with pytest.raises(LocalProtocolError, match="first"):
        t.extend(np.array([5]), first=6)


def test_tracker_extend_a_batch_longer_than_half_the_space() -> None:
    t = SequenceTracker()
    seq = (0xFFF0 + np.arange(100_000)) & 0xFFFF
    assert t.extend(seq).tolist() == list(range(0xFFF0, 0xFFF0 + 100_000))


def test_tracker_restarted_far_behind() -> None:
    t = SequenceTracker()
    t.record(t.extend(np.arange(1000, 1010)))
    assert t.restarted(t.extend(np.array([10, 11])))
    assert not t.restarted(t.extend(np.array([10])))  # one packet: wait for a second
    assert not t.restarted(t.extend(np.array([950, 951])))  # within MAX_MISORDER
    t.restart(t.ssrc)
    assert t.extend(np.array([10, 11])).tolist() == [10, 11]


@st.composite
def arrivals(draw: st.DrawFn, *, wild: bool) -> list[tuple[int, int]]:
    """(ssrc, seq) in arrival order: a stream with loss, duplicates, reordering and,
    when ``wild``, jumps anywhere and SSRC changes."""
    start = draw(st.integers(0, 0xFFFF))
    n = draw(st.integers(1, 300))
    seqs = [(start + i) & 0xFFFF for i in range(n)]
    out = [(1, s) for s in seqs]
    for _ in range(draw(st.integers(0, 12))):
        k = draw(st.integers(0, len(out) - 1))
        what = draw(st.sampled_from(["drop", "dup", "late", "jump", "ssrc"] if wild
                                    else ["drop", "dup", "late"]))
        if what == "drop" and len(out) > 1:
            del out[k]
        elif what == "dup":
            out.insert(draw(st.integers(k, len(out))), out[k])
        elif what == "late":
            out.insert(draw(st.integers(k, min(len(out), k + 30))), out.pop(k))
        elif what == "jump":
            out[k] = (out[k][0], draw(st.integers(0, 0xFFFF)))
        elif what == "ssrc":
            out[k:] = [(2, s) for _, s in out[k:]]
    return out


@given(arrivals(wild=False))
def test_tracker_add_counts_like_the_receivers_former_accounting(
    pkts: list[tuple[int, int]],
) -> None:
    t, ref = SequenceTracker(), ReferenceAccount()
    for ssrc, s in pkts:
        t.add(ssrc, s)
        ref.add(ssrc, s)
        assert counters(t) == counters(ref)


@settings(max_examples=300)
@given(arrivals(wild=True), st.lists(st.integers(1, 64), min_size=1), st.sampled_from([16, 1024]))
def test_tracker_batches_equal_the_scalar_path(
    pkts: list[tuple[int, int]], cuts: list[int], window: int
) -> None:
    scalar, batch = SequenceTracker(window=window), SequenceTracker(window=window)
    verdicts = [scalar.add(ssrc, s) for ssrc, s in pkts]
    got: list[Arrival] = []
    i = k = 0
    while i < len(pkts):
        part = pkts[i : i + cuts[k % len(cuts)]]
        k += 1
        j = 0
        while j < len(part):  # one SSRC per call, as the depacketizers split them
            ssrc = part[j][0]
            run = []
            while j < len(part) and part[j][0] == ssrc:
                run.append(part[j][1])
                j += 1
            if ssrc != batch.ssrc:
                batch.restart(ssrc)
            v = batch.record(batch.extend(np.array(run, np.int64)))
            got += [Arrival.DUPLICATE if d else Arrival.REORDERED if r else Arrival.IN_ORDER
                    for d, r in zip(v.duplicate.tolist(), v.reordered.tolist(), strict=True)]
        i += len(part)
    assert got == verdicts
    assert counters(batch) == counters(scalar)
    assert (batch.highest, batch.received) == (scalar.highest, scalar.received)


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
