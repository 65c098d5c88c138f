"""ST 2110-30 L16/L24 packetizer and depacketizer (RFC 3551 §4.5.11, RFC 3190 §4)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtstream.errors import LocalProtocolError
from rtstream.proto.formats import AudioEncoding, AudioFormat
from rtstream.proto.nmos_ext import PROFILE_ONE_BYTE, ExtMap, NmosExtension
from rtstream.proto.rtp import RtpPacket, parse_rtp
from rtstream.proto.st2110_30 import (
    AudioChunkEvent,
    AudioDepacketizer,
    AudioPacketizer,
    decode_pcm,
    encode_pcm,
)
from tests.vectors.rtp_vectors import (
    AUDIO_VECTORS,
    L16_MONO_125US_FORMAT,
    L16_MONO_125US_NEXT_HEADER,
    L16_MONO_125US_PACKET,
    L16_MONO_125US_SAMPLES,
)


@pytest.mark.parametrize(
    ("name", "enc", "wire", "samples"), AUDIO_VECTORS, ids=[v[0] for v in AUDIO_VECTORS]
)
def test_pcm_vectors(name: str, enc: AudioEncoding, wire: bytes, samples: np.ndarray) -> None:
    assert encode_pcm(samples, enc).tobytes() == wire
    got = decode_pcm(np.frombuffer(wire, np.uint8), enc, samples.shape[1])
    assert got.dtype == np.int32
    assert np.array_equal(got, samples)


def test_packet_vector() -> None:
    p = AudioPacketizer(L16_MONO_125US_FORMAT, ssrc=7, sequence=16)
    samples = np.concatenate([L16_MONO_125US_SAMPLES, L16_MONO_125US_SAMPLES])
    batch = p.packetize(samples, 48_000)
    assert batch.buf.shape == (2, 24) and batch.sizes.tolist() == [24, 24]
    assert batch.segment_size == 24
    assert batch.buf[0].tobytes() == L16_MONO_125US_PACKET
    assert batch.buf[1, :12].tobytes() == L16_MONO_125US_NEXT_HEADER
    assert p.sequence == 18
    pkt = parse_rtp(L16_MONO_125US_PACKET)
    assert (pkt.payload_type, pkt.sequence, pkt.timestamp, pkt.ssrc, pkt.marker) == (
        97,
        16,
        48_000,
        7,
        False,
    )


def chunked(events: list[AudioChunkEvent]) -> np.ndarray:
    return np.concatenate([e.samples for e in events]) if events else np.zeros((0, 1), np.int32)


formats = st.builds(
    AudioFormat,
    encoding=st.sampled_from(AudioEncoding),
    sample_rate=st.sampled_from([44_100, 48_000, 96_000]),
    channels=st.integers(1, 8),
    ptime_us=st.sampled_from([1000, 125]),
)


@given(formats, st.integers(0, 12), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFF), st.data())
def test_roundtrip(fmt: AudioFormat, packets: int, ts: int, seq: int, data: st.DataObject) -> None:
    lo, hi = (
        (-(1 << 15), (1 << 15) - 1)
        if fmt.encoding is AudioEncoding.L16
        else (-(1 << 23), (1 << 23) - 1)
    )
    n = packets * fmt.samples_per_packet
    seed = data.draw(st.integers(0, 2**32 - 1))
    samples = (
        np.random.default_rng(seed)
        .integers(lo, hi, (n, fmt.channels), endpoint=True)
        .astype(np.int32)
    )
    samples[:1] = lo  # the extremes always appear
    samples[1:2] = hi
    p = AudioPacketizer(fmt, ssrc=0x1234, sequence=seq)
    batch = p.packetize(samples, ts)
    assert len(batch.sizes) == packets
    assert (batch.sizes == 12 + fmt.packet_payload_bytes).all()
    for i in range(packets):  # each row is a proper RTP packet
        pkt = parse_rtp(batch.buf[i, : batch.sizes[i]].tobytes())
        assert pkt.sequence == (seq + i) & 0xFFFF
        assert pkt.timestamp == (ts + i * fmt.samples_per_packet) & 0xFFFFFFFF
    d = AudioDepacketizer(fmt, payload_type=97)
    events = d.feed(batch.buf, batch.sizes, now=0)
    if packets == 0:
        assert events == []
        return
    assert len(events) == 1
    (ev,) = events
    assert (ev.ssrc, ev.rtp_timestamp, ev.lost_before, ev.packets) == (0x1234, ts, 0, packets)
    assert np.array_equal(ev.samples, samples)
    assert d.stats.packets == packets and d.stats.lost == 0 and d.stats.malformed == 0


def stream(
    fmt: AudioFormat, packets: int, ts: int = 1000, seq: int = 65530
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = packets * fmt.samples_per_packet
    samples = (
        np.arange(n * fmt.channels, dtype=np.int32).reshape(n, fmt.channels) * 37
    ) % 30000 - 15000
    b = AudioPacketizer(fmt, ssrc=9, sequence=seq).packetize(samples, ts)
    return b.buf.copy(), b.sizes.copy(), samples


FMT = AudioFormat(encoding=AudioEncoding.L24, channels=2)
SPP = FMT.samples_per_packet


def test_loss_splits_chunks_and_counts() -> None:
    buf, sizes, samples = stream(FMT, 10)
    keep = np.array([0, 1, 2, 5, 6, 9])  # lose 3, 4 (across the 16-bit wrap) and 7, 8
    d = AudioDepacketizer(FMT)
    events = d.feed(buf[keep], sizes[keep], 0)
    assert [e.lost_before for e in events] == [0, 2, 2]
    assert [e.packets for e in events] == [3, 2, 1]
    assert [e.rtp_timestamp for e in events] == [1000, 1000 + 5 * SPP, 1000 + 9 * SPP]
    assert [e.first_seq for e in events] == [65530, 65535, 65539]
    assert np.array_equal(events[1].samples, samples[5 * SPP : 7 * SPP])
    assert d.stats.lost == 4 and d.stats.packets == 6


def test_loss_between_feeds() -> None:
    buf, sizes, samples = stream(FMT, 6)
    d = AudioDepacketizer(FMT)
    d.feed(buf[:2], sizes[:2], 0)
    (ev,) = d.feed(buf[4:], sizes[4:], 0)
    assert ev.lost_before == 2 and ev.rtp_timestamp == 1000 + 4 * SPP
    assert np.array_equal(ev.samples, samples[4 * SPP :])


def test_reorder_within_batch_is_repaired() -> None:
    buf, sizes, samples = stream(FMT, 6)
    order = np.array([1, 0, 2, 4, 3, 5])
    d = AudioDepacketizer(FMT)
    (ev,) = d.feed(buf[order], sizes[order], 0)
    assert np.array_equal(ev.samples, samples)
    assert d.stats.reordered == 2 and d.stats.lost == 0


def test_duplicates_and_late_packets() -> None:
    buf, sizes, samples = stream(FMT, 6)
    d = AudioDepacketizer(FMT)
    order = np.array([0, 1, 1, 2])
    (ev,) = d.feed(buf[order], sizes[order], 0)
    assert np.array_equal(ev.samples, samples[: 3 * SPP])
    assert d.stats.duplicates == 1
    # a repeat of an emitted packet is a duplicate; 3 is skipped (lost), then arrives late
    assert d.feed(buf[[2]], sizes[[2]], 0) == []
    assert d.stats.duplicates == 2
    (ev,) = d.feed(buf[[4, 5]], sizes[[4, 5]], 0)
    assert ev.lost_before == 1
    assert d.feed(buf[[3]], sizes[[3]], 0) == []
    assert d.stats.late == 1 and d.stats.packets == 5


def test_malformed_and_wrong_payload_type_are_dropped() -> None:
    buf, sizes, samples = stream(FMT, 4)
    bad = buf.copy()
    bad_sizes = sizes.copy()
    bad[0, 0] = 0x40  # version 1
    bad_sizes[1] = 12 + 5  # not a whole sample frame
    bad[2, 1] = 96  # other payload type
    bad_sizes[3] = 8  # shorter than a header
    d = AudioDepacketizer(FMT, payload_type=97)
    assert d.feed(bad, bad_sizes, 0) == []
    assert d.stats.malformed == 3 and d.stats.wrong_payload_type == 1 and d.stats.packets == 0
    events = AudioDepacketizer(FMT, payload_type=97).feed(buf, sizes, 0)
    assert np.array_equal(chunked(events), samples)


def test_csrc_extension_and_padding_are_skipped() -> None:
    """Audio flows may carry the NMOS extension (PS3.22 §6.2.1); third parties may pad."""
    samples = np.array([[1, -1], [2, -2], [3, -3]], np.int32)
    payload = encode_pcm(samples, AudioEncoding.L24).tobytes()
    ext = NmosExtension(grain_start=True).encode(ExtMap.default())
    rows = [
        RtpPacket(payload_type=97, sequence=1, timestamp=0, ssrc=5, payload=payload[:6]),
        RtpPacket(
            payload_type=97,
            sequence=2,
            timestamp=1,
            ssrc=5,
            csrcs=(1, 2),
            payload=payload[6:12],
            extension_profile=PROFILE_ONE_BYTE,
            extension=ext,
        ),
        RtpPacket(
            payload_type=97, sequence=3, timestamp=2, ssrc=5, payload=payload[12:], padding=3
        ),
    ]
    wires = [r.to_bytes() for r in rows]
    buf = np.zeros((3, 64), np.uint8)
    for i, w in enumerate(wires):
        buf[i, : len(w)] = np.frombuffer(w, np.uint8)
    d = AudioDepacketizer(FMT)
    (ev,) = d.feed(buf, np.array([len(w) for w in wires]), 0)
    assert np.array_equal(ev.samples, samples) and ev.packets == 3
    # broken extension length or padding count: malformed
    buf[1, 12 + 8 + 3] = 200
    buf[2, len(wires[2]) - 1] = 0
    d = AudioDepacketizer(FMT)
    d.feed(buf, np.array([len(w) for w in wires]), 0)
    assert d.stats.malformed == 2


def test_any_whole_frame_payload_size_and_timestamp_breaks() -> None:
    """Third-party senders (GStreamer) send more than 1 ms per packet."""
    fmt = AudioFormat(encoding=AudioEncoding.L16, channels=1)
    samples = np.arange(300, dtype=np.int32).reshape(-1, 1)
    payload = encode_pcm(samples, AudioEncoding.L16).tobytes()
    rows = [
        RtpPacket(payload_type=97, sequence=10, timestamp=0, ssrc=1, payload=payload[:200]),  # 100
        RtpPacket(
            payload_type=97, sequence=11, timestamp=100, ssrc=1, payload=payload[200:260]
        ),  # 30
        RtpPacket(
            payload_type=97, sequence=12, timestamp=500, ssrc=1, payload=payload[260:]
        ),  # jump
    ]
    buf = np.zeros((3, 400), np.uint8)
    for i, r in enumerate(rows):
        w = r.to_bytes()
        buf[i, : len(w)] = np.frombuffer(w, np.uint8)
    d = AudioDepacketizer(fmt)
    events = d.feed(buf, np.array([len(r.to_bytes()) for r in rows]), 0)
    assert [(e.rtp_timestamp, len(e.samples), e.lost_before) for e in events] == [
        (0, 130, 0),
        (500, 170, 0),
    ]
    assert np.array_equal(chunked(events), samples)


def test_ssrc_change_and_sequence_restart() -> None:
    buf, sizes, samples = stream(FMT, 4, seq=1000)
    d = AudioDepacketizer(FMT)
    d.feed(buf, sizes, 0)
    other = buf.copy()
    other[:, 8:12] = [0, 0, 0, 42]
    (ev,) = d.feed(other[:2], sizes[:2], 0)
    assert ev.ssrc == 42 and ev.lost_before == 0 and d.stats.ssrc_changes == 1
    # same SSRC 42 restarts its sequence far below: resynchronize after two packets
    again, again_sizes, _ = stream(FMT, 2, seq=10)
    again[:, 8:12] = [0, 0, 0, 42]
    (ev,) = d.feed(again, again_sizes, 0)
    assert d.stats.resyncs == 1 and ev.first_seq == 10 and ev.lost_before == 0


def test_packetizer_misuse() -> None:
    p = AudioPacketizer(FMT, ssrc=1)
    with pytest.raises(LocalProtocolError, match="multiple"):
        p.packetize(np.zeros((SPP + 1, 2), np.int32), 0)
    with pytest.raises(LocalProtocolError, match="shape"):
        p.packetize(np.zeros((SPP, 3), np.int32), 0)
    with pytest.raises(LocalProtocolError, match="outside"):
        p.packetize(np.full((SPP, 2), 1 << 23, np.int32), 0)
    with pytest.raises(LocalProtocolError, match="dtype"):
        p.packetize(np.zeros((SPP, 2), np.float32), 0)
    l16 = AudioPacketizer(AudioFormat(encoding=AudioEncoding.L16), ssrc=1)
    with pytest.raises(LocalProtocolError, match="outside"):
        l16.packetize(np.full((SPP, 2), -32769, np.int32), 0)
    with pytest.raises(LocalProtocolError):
        AudioPacketizer(FMT, ssrc=-1)


@given(st.binary(max_size=400), st.integers(1, 8))
def test_garbage_datagrams_never_raise(data: bytes, rows: int) -> None:
    stride = 64
    buf = np.zeros((rows, stride), np.uint8)
    raw = np.frombuffer(data[: rows * stride].ljust(rows * stride, b"\x00"), np.uint8)
    buf[:] = raw.reshape(rows, stride)
    lengths = np.array([len(data) % (stride + 1)] * rows)
    d = AudioDepacketizer(FMT)
    events = d.feed(buf, lengths, 0)
    total = d.stats.packets + d.stats.malformed + d.stats.duplicates + d.stats.late
    assert total == rows
    assert sum(e.packets for e in events) == d.stats.packets


def test_large_block_is_vectorized() -> None:
    """One second of 8-channel L24 at 125 µs: 8000 packets in one call, both ways."""
    fmt = AudioFormat(encoding=AudioEncoding.L24, channels=8, ptime_us=125)
    buf, sizes, samples = stream(fmt, 8000, seq=0)
    d = AudioDepacketizer(fmt)
    (ev,) = d.feed(buf, sizes, 0)
    assert np.array_equal(ev.samples, samples) and ev.packets == 8000
