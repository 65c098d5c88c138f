"""RFC 4175 packetizer / depacketizer: vectors, invariants, loss, reordering, bad input."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtstream.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from rtstream.proto.formats import SUPPORTED_VIDEO, Sampling, VideoFormat
from rtstream.proto.rfc4175 import (
    PacketBatch,
    PayloadHeader,
    SrdHeader,
    VideoDepacketizer,
    VideoPacketizer,
)
from rtstream.proto.rtp import RtpPacket, parse_rtp
from tests.vectors.rfc4175_vectors import VECTORS, hex_bytes

FORMATS = sorted(SUPPORTED_VIDEO, key=lambda sd: (sd[0].value, sd[1]))


def make_fmt(
    sampling: Sampling, depth: int, width: int, height: int, interlaced: bool = False
) -> VideoFormat:
    return VideoFormat(
        sampling=sampling,
        depth=depth,
        width=width,
        height=height,
        exactframerate=Fraction(30),
        interlaced=interlaced,
    )


def fmt_1080(depth: int) -> VideoFormat:
    return make_fmt(Sampling.YCBCR_422, depth, 1920, 1080)


def random_frame(fmt: VideoFormat, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, fmt.frame_bytes, dtype=np.uint8)


def to_batch(datagrams: list[bytes], stride: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    buf = np.zeros((len(datagrams), max([stride, *map(len, datagrams)])), np.uint8)
    for i, d in enumerate(datagrams):
        buf[i, : len(d)] = np.frombuffer(d, np.uint8)
    return buf, np.array([len(d) for d in datagrams], np.int64)


def datagrams(batch: PacketBatch) -> list[bytes]:
    return [batch.datagram(i) for i in range(len(batch))]


# ------------------------------------------------------------------ header vectors


@pytest.mark.parametrize(("name", "text", "header"), VECTORS, ids=[v[0] for v in VECTORS])
def test_vector_serialize(name: str, text: str, header: PayloadHeader) -> None:
    assert header.to_bytes() == hex_bytes(text)
    assert header.size == len(hex_bytes(text))


@pytest.mark.parametrize(("name", "text", "header"), VECTORS, ids=[v[0] for v in VECTORS])
def test_vector_parse(name: str, text: str, header: PayloadHeader) -> None:
    raw = hex_bytes(text) + bytes(header.data_length)
    assert PayloadHeader.parse(raw) == header
    # trailing bytes after the announced pixel data are ignored
    assert PayloadHeader.parse(raw + b"\xff\xee") == header


@pytest.mark.parametrize(("name", "text", "header"), VECTORS, ids=[v[0] for v in VECTORS])
def test_vector_every_truncated_prefix_raises(name: str, text: str, header: PayloadHeader) -> None:
    raw = hex_bytes(text) + bytes(header.data_length)
    for cut in range(len(raw)):
        with pytest.raises(RemoteProtocolError) as info:
            PayloadHeader.parse(raw[:cut])
        assert info.value.field in ("Extended Sequence Number", "SRD header", "SRD Length")


@given(st.binary(max_size=200))
def test_parse_garbage_raises_only_remote_protocol_error(data: bytes) -> None:
    try:
        hdr = PayloadHeader.parse(data)
    except RemoteProtocolError:
        return
    assert hdr.size + hdr.data_length <= len(data)
    assert hdr.to_bytes() == data[: hdr.size]


def test_header_field_ranges_are_checked() -> None:
    with pytest.raises(LocalProtocolError, match="SRD Row Number"):
        SrdHeader(length=4, row=0x8000, offset=0)
    with pytest.raises(LocalProtocolError, match="SRD Offset"):
        SrdHeader(length=4, row=0, offset=-1)
    with pytest.raises(LocalProtocolError, match="srds"):
        PayloadHeader(extended_sequence=0, srds=())


# ------------------------------------------------------------------ packetizer


def test_1080p_layouts_are_equal_sized() -> None:
    p10 = VideoPacketizer(fmt_1080(10), ssrc=1)
    assert (p10.segments_per_row, p10.packets_per_frame, p10.stride) == (4, 4320, 1220)
    p8 = VideoPacketizer(fmt_1080(8), ssrc=1)
    assert (p8.segments_per_row, p8.packets_per_frame, p8.stride) == (3, 3240, 1300)
    b = p10.packetize(random_frame(fmt_1080(10)), 0)
    assert b.uniform and b.segment_size == 1220 and set(b.sizes.tolist()) == {1220}


def test_general_layout_when_no_divisor_fits() -> None:
    # 2018 pixels 4:2:2 8-bit: 1009 pgroups per row, a prime: no useful divisor
    fmt = make_fmt(Sampling.YCBCR_422, 8, 2018, 4)
    pk = VideoPacketizer(fmt, ssrc=7)
    assert pk.segments_per_row == 3
    frame = random_frame(fmt)
    b = pk.packetize(frame, 99)
    assert not b.uniform
    assert max(b.sizes) <= 1460
    dp = VideoDepacketizer(fmt)
    (ev,) = dp.feed(b.buf.copy(), b.sizes, now=0)
    assert ev.complete and np.array_equal(ev.data, frame)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="max_payload"):
        VideoPacketizer(fmt_1080(10), ssrc=1, max_payload=20)
    with pytest.raises(ConfigError, match="interlaced"):
        VideoPacketizer(make_fmt(Sampling.YCBCR_420, 8, 64, 4, interlaced=True), ssrc=1)
    with pytest.raises(LocalProtocolError, match="frame"):
        VideoPacketizer(fmt_1080(8), ssrc=1).packetize(np.zeros(10, np.uint8), 0)


@st.composite
def formats(draw: st.DrawFn) -> VideoFormat:
    sampling, depth = draw(st.sampled_from(FORMATS))
    probe = make_fmt(sampling, depth, 64, 2)
    step = probe.pgroup_pixels_per_line
    width = step * draw(st.integers(1, 2400 // step))
    height = probe.lines_per_row * draw(st.integers(1, 6))
    return make_fmt(sampling, depth, width, height)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=formats(),
    max_payload=st.integers(100, 9000),
    sequence=st.sampled_from([0, 0xFFF0, 0xFFFFFFF0, 12345]),
    seed=st.integers(0, 2**32 - 1),
)
def test_packetizer_invariants(fmt: VideoFormat, max_payload: int, sequence: int, seed: int) -> None:
    pgroup_plus_hdr = fmt.pgroup_bytes + 20
    if max_payload < pgroup_plus_hdr:
        max_payload = pgroup_plus_hdr
    pk = VideoPacketizer(fmt, ssrc=0xDEADBEEF, max_payload=max_payload, sequence=sequence)
    frames = [random_frame(fmt, seed), random_frame(fmt, seed + 1)]
    dp = VideoDepacketizer(fmt, payload_type=96)
    ext_expected = sequence
    for k, frame in enumerate(frames):
        b = pk.packetize(frame, 1000 * k)
        dgs = datagrams(b)
        assert len(dgs) == pk.packets_per_frame
        assert all(len(d) <= max_payload for d in dgs)
        coverage = np.zeros(fmt.frame_bytes, np.int64)
        for i, d in enumerate(dgs):
            rtp = parse_rtp(d)
            assert rtp.marker == (i == len(dgs) - 1)
            assert rtp.timestamp == 1000 * k and rtp.ssrc == 0xDEADBEEF
            hdr = PayloadHeader.parse(rtp.payload)
            ext = (hdr.extended_sequence << 16) | rtp.sequence
            assert ext == ext_expected & 0xFFFFFFFF
            ext_expected += 1
            pos = hdr.size
            for srd in hdr.srds:
                assert srd.row % fmt.lines_per_row == 0
                start = (srd.row // fmt.lines_per_row) * fmt.row_bytes + (
                    srd.offset // fmt.pgroup_pixels_per_line * fmt.pgroup_bytes
                )
                assert srd.length % fmt.pgroup_bytes == 0
                seg = np.frombuffer(rtp.payload[pos : pos + srd.length], np.uint8)
                assert np.array_equal(seg, frame[start : start + srd.length])
                coverage[start : start + srd.length] += 1
                pos += srd.length
        assert (coverage == 1).all(), "every pixel byte exactly once"
        events = dp.feed(b.buf.copy(), b.sizes, now=0)
        assert len(events) == 1
        ev = events[0]
        assert ev.complete and not ev.missing_rows.any()
        assert np.array_equal(ev.data, frame)
        assert ev.rtp_timestamp == 1000 * k and ev.ssrc == 0xDEADBEEF
        assert ev.first_seq == (sequence + k * pk.packets_per_frame) & 0xFFFFFFFF
        assert ev.packets == pk.packets_per_frame
    assert dp.stats.lost == 0 and dp.stats.malformed == 0 and dp.stats.duplicates == 0
    assert pk.sequence == (sequence + 2 * pk.packets_per_frame) & 0xFFFFFFFF


# ------------------------------------------------------------------ depacketizer


def general_packets(
    fmt: VideoFormat, frame: np.ndarray, ts: int, cut: int, seq0: int = 0
) -> list[bytes]:
    """Pack the frame as one pgroup stream cut every ``cut`` pgroups, packets spanning
    rows with several SRD headers (how GStreamer and FFmpeg pack)."""
    pg, rb = fmt.pgroup_bytes, fmt.row_bytes
    per_row = rb // pg
    total = fmt.rows * per_row
    out: list[bytes] = []
    g = 0
    while g < total:
        end = min(g + cut, total)
        srds = []
        data = b""
        while g < end:
            row, col = divmod(g, per_row)
            n = min(end - g, per_row - col)
            srds.append(SrdHeader(length=n * pg, row=row * fmt.lines_per_row,
                                  offset=col * fmt.pgroup_pixels_per_line))
            data += frame[row * rb + col * pg : row * rb + (col + n) * pg].tobytes()
            g += n
        seq = seq0 + len(out)
        hdr = PayloadHeader(extended_sequence=(seq >> 16) & 0xFFFF, srds=tuple(srds))
        out.append(
            RtpPacket(payload_type=96, sequence=seq & 0xFFFF, timestamp=ts, ssrc=5,
                      marker=g >= total, payload=hdr.to_bytes() + data).to_bytes()
        )
    return out


@settings(max_examples=40, deadline=None)
@given(fmt=formats(), cut=st.integers(1, 400), seed=st.integers(0, 1000))
def test_multi_srd_packets_spanning_rows(fmt: VideoFormat, cut: int, seed: int) -> None:
    frame = random_frame(fmt, seed)
    dgs = general_packets(fmt, frame, 77, cut)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(dgs) - 1).tolist() + [len(dgs) - 1]  # marker stays last
    batch, lengths = to_batch([dgs[i] for i in order])
    dp = VideoDepacketizer(fmt)
    (ev,) = dp.feed(batch, lengths, now=0)
    assert ev.complete and np.array_equal(ev.data, frame)
    assert dp.stats.malformed == 0 and dp.stats.lost == 0


def test_reorder_duplicates_and_loss() -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 10, 64, 16)
    pk = VideoPacketizer(fmt, ssrc=9, max_payload=100, sequence=0xFFFFFFF8)  # wraps 2**32
    f0, f1 = random_frame(fmt, 1), random_frame(fmt, 2)
    d0 = datagrams(pk.packetize(f0, 0))
    d1 = datagrams(pk.packetize(f1, 3000))
    n = len(d0)
    assert n >= 16
    # frame 0: reversed (except the marker), two duplicates; frame 1: packet 5 lost
    first = d0[-2::-1] + [d0[3], d0[7], d0[-1]]
    lost_row = PayloadHeader.parse(parse_rtp(d1[5]).payload).srds[0].row
    second = d1[:5] + d1[6:]
    dp = VideoDepacketizer(fmt)
    batch, lengths = to_batch(first + second)
    e0, e1 = dp.feed(batch, lengths, now=0)
    assert e0.complete and np.array_equal(e0.data, f0)
    assert e0.packets == n and e0.first_seq == 0xFFFFFFF8
    assert not e1.complete
    assert np.flatnonzero(e1.missing_rows).tolist() == [lost_row]
    good = ~e1.missing_rows
    rb = fmt.row_bytes
    assert np.array_equal(e1.data.reshape(-1, rb)[good], f1.reshape(-1, rb)[good])
    s = dp.stats
    assert (s.duplicates, s.lost, s.frames_complete, s.frames_incomplete) == (2, 1, 1, 1)
    assert s.reordered >= n - 2
    # a copy of a packet of frame 0 after it was emitted is a duplicate, not a new frame
    assert dp.feed(*to_batch([d0[2]]), now=0) == []
    assert dp.stats.duplicates == 3


def test_reordered_across_a_frame_end_in_one_batch() -> None:
    """One drained batch where a path reordered a packet of frame 0 behind frame 0's
    marker and frame 1's first packet: the batch is taken in sequence order, so frame 0
    is complete and nothing is late (across two batches it would be: the marker had
    ended the frame)."""
    fmt = make_fmt(Sampling.YCBCR_422, 8, 64, 16)
    pk = VideoPacketizer(fmt, ssrc=9, max_payload=100)
    f0, f1 = random_frame(fmt, 5), random_frame(fmt, 6)
    d0, d1 = datagrams(pk.packetize(f0, 0)), datagrams(pk.packetize(f1, 3000))
    k = len(d0) - 3
    dp = VideoDepacketizer(fmt)
    e0, e1 = dp.feed(*to_batch(d0[:k] + d0[k + 1 :] + d1[:1] + [d0[k]] + d1[1:]), now=0)
    assert e0.complete and np.array_equal(e0.data, f0)
    assert e1.complete and np.array_equal(e1.data, f1)
    assert (dp.stats.late, dp.stats.lost, dp.stats.frames_incomplete) == (0, 0, 0)
    assert dp.stats.reordered >= 1


def test_new_timestamp_completes_frame_without_marker() -> None:
    fmt = make_fmt(Sampling.RGB, 8, 32, 4)
    pk = VideoPacketizer(fmt, ssrc=3, max_payload=120)
    f0, f1 = random_frame(fmt, 3), random_frame(fmt, 4)
    all0 = datagrams(pk.packetize(f0, 10))
    d0 = all0[:-1]  # marker packet delayed
    d1 = datagrams(pk.packetize(f1, 20))
    dp = VideoDepacketizer(fmt)
    b, n = to_batch(d0)
    assert dp.feed(b, n, now=0) == []
    b, n = to_batch(d1[:2])
    (e0,) = dp.feed(b, n, now=0)
    assert e0.rtp_timestamp == 10 and not e0.complete and e0.missing_rows[-1]
    b, n = to_batch(d1[2:])
    (e1,) = dp.feed(b, n, now=0)
    assert e1.complete and np.array_equal(e1.data, f1)
    assert dp.flush() == []
    # the delayed marker packet of the emitted frame is late, it makes no new frame
    assert dp.feed(*to_batch(all0[-1:]), now=0) == []
    assert dp.stats.late == 1 and dp.flush() == []


def test_flush_emits_pending_frame() -> None:
    fmt = make_fmt(Sampling.YCBCR_420, 8, 16, 4)
    pk = VideoPacketizer(fmt, ssrc=3, max_payload=40)
    frame = random_frame(fmt)
    b, n = to_batch(datagrams(pk.packetize(frame, 10))[:-1])
    assert VideoDepacketizer(fmt).feed(b, n, now=0) == []
    dp = VideoDepacketizer(fmt)
    dp.feed(b, n, now=0)
    (ev,) = dp.flush()
    assert not ev.complete and ev.missing_rows.tolist() == [False, True]


def test_events_own_their_data() -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 8, 32, 2)
    pk = VideoPacketizer(fmt, ssrc=3)
    dp = VideoDepacketizer(fmt)
    frames = [random_frame(fmt, i) for i in range(3)]
    events = []
    for i, f in enumerate(frames):
        b = pk.packetize(f, i)
        events += dp.feed(b.buf, b.sizes, now=0)
    assert [np.array_equal(e.data, f) for e, f in zip(events, frames, strict=True)] == [True] * 3


def test_interlaced_fields_interleave() -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 8, 8, 4, interlaced=True)
    rb = fmt.row_bytes
    frame = random_frame(fmt)
    lines = frame.reshape(4, rb)
    dgs = []
    seq = 0
    for fld, ts in ((0, 100), (1, 1600)):
        for r in range(2):
            hdr = PayloadHeader(extended_sequence=0,
                                srds=(SrdHeader(length=rb, row=r, offset=0, field=bool(fld)),))
            dgs.append(RtpPacket(payload_type=96, sequence=seq, timestamp=ts, ssrc=1,
                                 marker=r == 1, payload=hdr.to_bytes() + lines[2 * r + fld].tobytes()
                                 ).to_bytes())
            seq += 1
    dp = VideoDepacketizer(fmt)
    b, n = to_batch(dgs[:2])
    assert dp.feed(b, n, now=0) == []  # first field's marker does not end the frame
    b, n = to_batch(dgs[2:])
    (ev,) = dp.feed(b, n, now=0)
    assert ev.complete and np.array_equal(ev.data, frame)


def test_progressive_rejects_f_bit_and_bad_rows() -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 8, 8, 2)
    rb = fmt.row_bytes

    def pkt(srd: SrdHeader, data_len: int) -> bytes:
        hdr = PayloadHeader(extended_sequence=0, srds=(srd,))
        return RtpPacket(payload_type=96, sequence=0, timestamp=0, ssrc=1,
                         payload=hdr.to_bytes() + bytes(data_len)).to_bytes()

    bad = [
        pkt(SrdHeader(length=rb, row=0, offset=0, field=True), rb),  # F bit
        pkt(SrdHeader(length=rb, row=2, offset=0), rb),  # row beyond the frame
        pkt(SrdHeader(length=rb + 4, row=0, offset=0), rb + 4),  # past the row end
        pkt(SrdHeader(length=3, row=0, offset=0), 3),  # not whole pgroups
        pkt(SrdHeader(length=4, row=0, offset=1), 4),  # offset inside a pgroup
        pkt(SrdHeader(length=0, row=0, offset=0), 0),  # empty segment
        pkt(SrdHeader(length=rb, row=0, offset=0), rb - 1),  # data shorter than SRD Length
    ]
    dp = VideoDepacketizer(fmt)
    b, n = to_batch(bad)
    assert dp.feed(b, n, now=0) == []
    assert dp.stats.malformed == len(bad)
    assert set(dp.stats.malformed_by_field) <= {"F bit", "SRD Row Number", "SRD Offset",
                                                "SRD Length"}
    assert dp.flush() == []


def test_every_truncated_prefix_is_counted_malformed() -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 10, 16, 2)
    pk = VideoPacketizer(fmt, ssrc=1)
    d = datagrams(pk.packetize(random_frame(fmt), 0))[0]
    dp = VideoDepacketizer(fmt)
    prefixes = [d[:k] for k in range(len(d))]
    b, n = to_batch(prefixes)
    assert dp.feed(b, n, now=0) == []
    assert dp.stats.malformed == len(prefixes)
    assert dp.stats.packets == len(prefixes)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=30))
def test_garbage_never_raises(garbage: list[bytes]) -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 8, 16, 4)
    dp = VideoDepacketizer(fmt)
    b, n = to_batch(garbage, stride=320)
    events = dp.feed(b, n, now=0) + dp.flush()
    s = dp.stats
    assert s.packets == len(garbage)
    assert s.malformed + s.foreign + s.duplicates + s.late <= s.packets
    for ev in events:
        assert ev.data.size == fmt.frame_bytes


def test_garbage_with_valid_rtp_header_is_malformed() -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 8, 16, 4)
    rng = np.random.default_rng(5)
    dgs = [b"\x80\x60" + rng.bytes(k) for k in range(0, 120, 3)]
    dp = VideoDepacketizer(fmt)
    b, n = to_batch(dgs)
    dp.feed(b, n, now=0)
    dp.flush()
    assert dp.stats.malformed + dp.stats.foreign >= len(dgs) - 2


def test_payload_type_and_ssrc_filters() -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 8, 16, 2)
    a = VideoPacketizer(fmt, ssrc=1, payload_type=97)
    c = VideoPacketizer(fmt, ssrc=2, payload_type=96)
    fa, fc = random_frame(fmt, 1), random_frame(fmt, 2)
    dp = VideoDepacketizer(fmt, payload_type=96)
    b, n = to_batch(datagrams(a.packetize(fa, 0)))
    assert dp.feed(b, n, now=0) == []
    assert dp.stats.foreign == a.packets_per_frame
    (ev,) = dp.feed(*to_batch(datagrams(c.packetize(fc, 0))), now=0)
    assert ev.ssrc == 2 and np.array_equal(ev.data, fc)
    # a second sender with another SSRC is ignored while the first is alive ...
    d = VideoPacketizer(fmt, ssrc=3, payload_type=96)
    assert dp.feed(*to_batch(datagrams(d.packetize(fa, 5))), now=10) == []
    # ... and taken over once the first has been silent for a second
    (ev2,) = dp.feed(*to_batch(datagrams(d.packetize(fa, 6))), now=2_000_000_000)
    assert ev2.ssrc == 3 and np.array_equal(ev2.data, fa)


def test_rtp_csrc_extension_and_padding_are_skipped() -> None:
    fmt = make_fmt(Sampling.RGB, 10, 8, 2)
    frame = random_frame(fmt)
    rb = fmt.row_bytes
    dgs = []
    for r in range(2):
        hdr = PayloadHeader(extended_sequence=0, srds=(SrdHeader(length=rb, row=r, offset=0),))
        dgs.append(RtpPacket(payload_type=96, sequence=r, timestamp=1, ssrc=1, marker=r == 1,
                             csrcs=(7,) * r, extension_profile=0xBEDE, extension=b"\x10\xaa\0\0",
                             padding=4 * r, payload=hdr.to_bytes() + frame[r * rb:(r + 1) * rb]
                             .tobytes()).to_bytes())
    (ev,) = VideoDepacketizer(fmt).feed(*to_batch(dgs), now=0)
    assert ev.complete and np.array_equal(ev.data, frame)


# ------------------------------------------------------------------ benchmark command


def test_bench_wire_writes_json(tmp_path: Path) -> None:
    from rtstream.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "wire", "--frames", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for metric in ("packetize_ms_per_frame", "depacketize_ms_per_frame", "packets_per_s",
                   "to_wire_ms_per_frame", "from_wire_ms_per_frame"):
        # every sampling x depth pair (issue 16)
        assert len(result[metric]) == 16
        assert {"1080p_422_8", "1080p_422_10", "1080p_422_16", "1080p_420_10"} <= set(
            result[metric])
        assert all(v > 0 for v in result[metric].values())
