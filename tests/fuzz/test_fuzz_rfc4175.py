"""Fuzz :meth:`rtstream.proto.rfc4175.VideoDepacketizer.feed` (RFC 4175 / ST 2110-20).

Each example runs one depacketizer (progressive 4:2:2 10-bit, 4:2:0, RGB, interlaced
4:2:2) over batches cut from valid frames -- the packetizer's and hand-built ones with
several SRD segments per packet -- with datagrams dropped, duplicated, reordered,
byte-mutated (SRD lengths, rows, offsets, C and F bits, RTP header lengths) or replaced by
garbage, second SSRCs and lengths that lie. Property: ``feed`` and ``flush`` raise
nothing, every event is a well-formed frame, counters add up, and the pending state is
bounded whatever arrives.
"""

from __future__ import annotations

import random
import tracemalloc

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from rtstream.proto.rfc4175 import VideoDepacketizer, VideoFrameEvent, VideoPacketizer
from tests.fuzz.strategies import (
    VIDEO_FORMATS,
    VideoStream,
    fuzz_settings,
    mutate_rows,
    restamp,
    srd_packet,
    to_batch,
)

FRAMES = 4
PER_EXAMPLE = 40  # datagrams per example, about (FRAMES frames of ~10 packets)


def _check_event(ev: VideoFrameEvent, dp: VideoDepacketizer) -> None:
    fmt = dp.fmt
    assert isinstance(ev, VideoFrameEvent)
    assert ev.data.dtype == np.uint8 and ev.data.size == fmt.frame_bytes
    lines = fmt.height if fmt.interlaced else fmt.rows
    assert ev.missing_rows.dtype == bool and ev.missing_rows.shape in ((lines,), (fmt.rows,))
    assert ev.complete == (not ev.missing_rows.any())
    assert ev.packets >= 1 and 0 <= ev.first_seq <= 0xFFFFFFFF


def run_sequence(seed: int) -> int:
    """Feed random batches until PER_EXAMPLE datagrams went in; return how many did."""
    rng = random.Random(seed)
    fmt = rng.choice(VIDEO_FORMATS)
    dp = VideoDepacketizer(fmt, payload_type=rng.choice((None, 96)))
    streams = [VideoStream(fmt, rng) for _ in range(rng.choice((1, 1, 1, 2)))]
    fed = 0
    now = 0
    for _ in range(10 * FRAMES):
        if fed >= PER_EXAMPLE:
            break
        rows: list[bytes] = []
        for s in streams:
            rows += s.frame(rng)
        if rng.random() < 0.1:  # a sender restart: new sequence space
            rows = [restamp(r, seq=rng.getrandbits(16) + i) for i, r in enumerate(rows)]
        rows = mutate_rows(rows, rng, max_ops=8)
        if not rows:
            continue
        buf, lengths = to_batch(rows, rng, min_stride=rng.choice((0, 0, 20)))
        try:
            events = dp.feed(buf, lengths, now)
            if rng.random() < 0.1:
                events += dp.flush()
        except Exception as exc:
            raise AssertionError(
                f"{type(exc).__name__} escaped VideoDepacketizer.feed: {exc}\n"
                f"  fmt={fmt}\n  rows={[r.hex() for r in rows]}\n  lengths={lengths.tolist()}"
            ) from exc
        fed += len(rows)
        now += rng.choice((0, 10_000_000, 2 * 10**9))
        for ev in events:
            _check_event(ev, dp)
        stats = dp.stats
        assert stats.packets == fed
        assert stats.malformed == sum(stats.malformed_by_field.values()) <= fed
        assert min(stats.as_dict().values()) >= 0
    for ev in dp.flush():
        _check_event(ev, dp)
    return fed


@fuzz_settings(per_example=PER_EXAMPLE)
@given(seed=st.integers(0, 2**64 - 1))
def test_feed_never_raises_on_mutated_frames(seed: int) -> None:
    run_sequence(seed)


@fuzz_settings(per_example=PER_EXAMPLE)
@given(
    st.lists(st.binary(min_size=12, max_size=120), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE),
    st.sampled_from(VIDEO_FORMATS),
)
def test_feed_never_raises_on_random_datagrams(rows: list[bytes], fmt: object) -> None:
    dp = VideoDepacketizer(fmt)  # type: ignore[arg-type]
    # version 2 and no CSRC/extension/padding so that the SRD parser sees random headers
    buf, lengths = to_batch([bytes([0x80]) + r[1:] for r in rows])
    for ev in dp.feed(buf, lengths, 0) + dp.flush():
        _check_event(ev, dp)
    buf, lengths = to_batch(rows)
    for ev in dp.feed(buf, lengths, 0) + dp.flush():
        _check_event(ev, dp)


def test_memory_is_bounded_when_a_frame_never_ends() -> None:
    """A sender (or attacker) that never sets the marker nor changes the timestamp must not
    make the pending frame grow without bound: 200,000 datagrams of one timestamp, each a
    new sequence number, must keep the depacketizer's memory flat after the first 20,000
    (the frame buffer itself is allocated once)."""
    rng = random.Random(3)
    fmt = VIDEO_FORMATS[0]
    dp = VideoDepacketizer(fmt)
    rows = [srd_packet(rng, fmt, seq=0, ts=5678, ssrc=1234, marker=False) for _ in range(2000)]
    buf, lengths = to_batch(rows)
    seq = np.arange(len(rows), dtype=np.int64)
    tracemalloc.start()
    try:
        samples = []
        for i in range(100):
            s = seq + i * len(rows)
            buf[:, 2] = (s >> 8) & 0xFF
            buf[:, 3] = s & 0xFF
            buf[:, 12] = (s >> 24) & 0xFF
            buf[:, 13] = (s >> 16) & 0xFF
            dp.feed(buf, lengths, i)
            if i in (9, 99):
                samples.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert dp.stats.frames_complete + dp.stats.frames_incomplete <= 1
    growth = samples[1] - samples[0]
    assert growth < 1 << 20, f"pending state grew by {growth} bytes over 180,000 datagrams"
    # the datagrams past the cap are dropped and counted under their own name
    capped = dp.stats.malformed_by_field.get("SRD segments per frame", 0)
    assert capped > 150_000 and dp.stats.malformed == capped
    # the frame still ends (as incomplete or complete) with what fitted under the cap
    (ev,) = dp.flush()
    assert ev.rtp_timestamp == 5678 and ev.packets == 200_000 - capped


def test_a_normal_frame_after_a_capped_one_is_complete() -> None:
    """The cap only concerns the frame that overflowed: the next timestamp starts afresh."""
    rng = random.Random(4)
    fmt = VIDEO_FORMATS[0]
    dp = VideoDepacketizer(fmt)
    flood = [srd_packet(rng, fmt, seq=i, ts=1, ssrc=9, marker=False) for i in range(3000)]
    buf, lengths = to_batch(flood)
    assert dp.feed(buf, lengths, 0) == []
    assert dp.stats.malformed_by_field.get("SRD segments per frame", 0) > 0
    pk = VideoPacketizer(fmt, ssrc=9, sequence=5000)
    frame = np.random.default_rng(1).integers(0, 256, fmt.frame_bytes, np.uint8)
    batch = pk.packetize(frame, 2)
    events = dp.feed(batch.buf, batch.sizes, 1)
    assert [e.rtp_timestamp for e in events] == [1, 2]
    assert events[1].complete and np.array_equal(events[1].data, frame)
