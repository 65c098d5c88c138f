"""The depacketizer's in-order fast path gives exactly what the general path gives.

``VideoDepacketizer._feed_in_order`` handles batches that continue the stream without a
gap; every other batch goes through the general path. A depacketizer with the fast path
switched off is the reference: both see the same impaired streams, cut into the same
batches, and must produce the same frames and the same counters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtstream.proto.formats import Sampling, VideoFormat
from rtstream.proto.rfc4175 import (
    PayloadHeader,
    VideoDepacketizer,
    VideoFrameEvent,
    VideoPacketizer,
)
from rtstream.proto.rtp import parse_rtp
from tests.proto.test_rfc4175 import datagrams, make_fmt, random_frame, to_batch


class GeneralOnly(VideoDepacketizer):
    """The reference: every batch through the general path."""

    def _feed_in_order(self, *args: Any) -> None:
        return None


class Counting(VideoDepacketizer):
    """Counts the batches the fast path took."""

    fast_batches = 0

    def _feed_in_order(self, *args: Any) -> list[VideoFrameEvent] | None:
        out = super()._feed_in_order(*args)
        if out is not None:
            self.fast_batches += 1
        return out


def summary(ev: VideoFrameEvent) -> tuple[Any, ...]:
    return (ev.ssrc, ev.rtp_timestamp, ev.data.tobytes(), ev.complete,
            ev.missing_rows.tolist(), ev.packets, ev.first_seq)


def feed_all(dp: VideoDepacketizer, cuts: list[list[bytes]], stride: int) -> list[Any]:
    out = []
    for i, part in enumerate(cuts):
        batch, lengths = to_batch(part, stride)
        out += [summary(e) for e in dp.feed(batch, lengths, now=i * 400_000_000)]
    out += [summary(e) for e in dp.flush()]
    return out


FORMATS = [
    make_fmt(Sampling.YCBCR_422, 10, 64, 8),
    make_fmt(Sampling.YCBCR_422, 8, 48, 6),
    make_fmt(Sampling.YCBCR_420, 8, 32, 8),
    make_fmt(Sampling.RGB, 10, 24, 4),
    # every other pgroup shape of the 16 formats (issue 16)
    make_fmt(Sampling.YCBCR_422, 12, 24, 4),
    make_fmt(Sampling.YCBCR_422, 16, 24, 4),
    make_fmt(Sampling.YCBCR_420, 10, 24, 8),
    make_fmt(Sampling.YCBCR_420, 12, 24, 8),
    make_fmt(Sampling.YCBCR_420, 16, 24, 4),
    make_fmt(Sampling.YCBCR_444, 12, 24, 4),
    make_fmt(Sampling.RGB, 16, 24, 4),
]


@st.composite
def streams(draw: st.DrawFn) -> tuple[VideoFormat, list[list[bytes]], int]:
    fmt = draw(st.sampled_from(FORMATS))
    pk = VideoPacketizer(fmt, ssrc=7, max_payload=draw(st.sampled_from([60, 120, 400])),
                         sequence=draw(st.sampled_from([0, 0xFFF0, 0xFFFFFFF0, 12345])))
    wire: list[bytes] = []
    for i in range(draw(st.integers(1, 4))):
        wire += datagrams(pk.packetize(random_frame(fmt, i), 1000 + 1500 * i))
    # impairments, each at a random place
    for _ in range(draw(st.integers(0, 4))):
        k = draw(st.integers(0, len(wire) - 1))
        what = draw(st.sampled_from(["drop", "dup", "swap", "corrupt", "foreign", "late"]))
        if what == "drop":
            del wire[k]
        elif what == "dup":
            wire.insert(draw(st.integers(0, len(wire))), wire[k])
        elif what == "swap" and k + 1 < len(wire):
            wire[k], wire[k + 1] = wire[k + 1], wire[k]
        elif what == "corrupt":
            b = bytearray(wire[k])
            b[draw(st.integers(0, len(b) - 1))] ^= 1 << draw(st.integers(0, 7))
            wire[k] = bytes(b)
        elif what == "foreign":
            b = bytearray(wire[k])
            b[8:12] = b"\x00\x00\x00\x63"
            wire.insert(k, bytes(b))
        elif what == "late" and k > 0:
            wire.append(wire[k - 1])
        if not wire:
            wire = datagrams(pk.packetize(random_frame(fmt, 9), 99_000))
    cuts: list[list[bytes]] = []
    i = 0
    while i < len(wire):
        size = draw(st.integers(1, 40))
        cuts.append(wire[i : i + size])
        i += size
    stride = draw(st.sampled_from([0, 2048]))  # 0: rows exactly as wide as the longest
    return fmt, cuts, stride


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_same_frames_and_counters_as_the_general_path(
    case: tuple[VideoFormat, list[list[bytes]], int],
) -> None:
    fmt, cuts, stride = case
    fast, ref = VideoDepacketizer(fmt), GeneralOnly(fmt)
    assert feed_all(fast, cuts, stride) == feed_all(ref, cuts, stride)
    assert fast.stats.as_dict() == ref.stats.as_dict()
    assert fast.stats.malformed_by_field == ref.stats.malformed_by_field


def test_a_clean_stream_takes_the_fast_path_after_its_first_batch() -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 10, 64, 8)
    pk = VideoPacketizer(fmt, ssrc=5, max_payload=100, sequence=0xFFFFFFFA)
    frames = [random_frame(fmt, i) for i in range(3)]
    wire = [d for i, f in enumerate(frames) for d in datagrams(pk.packetize(f, 10 * i))]
    dp = Counting(fmt, payload_type=96)
    events = []
    cuts = [wire[i : i + 7] for i in range(0, len(wire), 7)]
    for part in cuts:
        events += dp.feed(*to_batch(part), now=0)
    assert dp.fast_batches == len(cuts) - 1  # the first batch seeds the sequence counter
    assert [e.rtp_timestamp for e in events] == [0, 10, 20]
    assert all(e.complete for e in events)
    assert [np.array_equal(e.data, f) for e, f in zip(events, frames, strict=True)] == [True] * 3
    assert dp.stats.as_dict() == {**dp.stats.as_dict(), "lost": 0, "duplicates": 0,
                                  "reordered": 0, "late": 0, "malformed": 0, "foreign": 0}


def test_a_packet_writing_over_another_never_hides_an_unwritten_region() -> None:
    # Row coverage counted in bytes would call this frame complete: one packet claims
    # its neighbour's place, so one region is written twice and another never. The frame
    # buffer is not zeroed in advance, so that region must be zeroed and flagged.
    fmt = make_fmt(Sampling.YCBCR_422, 8, 64, 4)
    pk = VideoPacketizer(fmt, ssrc=5, max_payload=32)
    frame = random_frame(fmt, 1) | 1  # no zero bytes in the picture
    for dp in (VideoDepacketizer(fmt), GeneralOnly(fmt)):
        for warm in range(3):  # earlier frames leave their bytes in recycled buffers
            b = pk.packetize(frame, 100 * warm)
            dp.feed(b.buf, b.sizes, now=0)
        wire = datagrams(pk.packetize(frame, 1000))
        victim = bytearray(wire[5])
        victim[18:20] = wire[4][18:20]  # packet 5 claims packet 4's offset
        wire[5] = bytes(victim)
        (ev,) = dp.feed(*to_batch(wire), now=0)
        assert not ev.complete
        row = int.from_bytes(wire[4][16:18], "big")
        assert ev.missing_rows.tolist() == [r == row for r in range(fmt.rows)]
        assert (ev.data == 0).sum() == len(wire[4]) - 20  # exactly the unwritten bytes


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FORMATS), st.sampled_from([40, 60, 200]), st.data())
def test_exactly_the_bytes_no_packet_wrote_are_zero(fmt: VideoFormat, max_payload: int,
                                                    data: st.DataObject) -> None:
    pk = VideoPacketizer(fmt, ssrc=5, max_payload=max_payload)
    ones = np.ones(fmt.frame_bytes, np.uint8)
    dp = VideoDepacketizer(fmt)
    warm = pk.packetize(ones, 0)  # leaves non-zero bytes in recycled buffers
    dp.feed(warm.buf, warm.sizes, now=0)
    wire = datagrams(pk.packetize(ones, 1000))
    kept = data.draw(st.lists(st.sampled_from(range(len(wire))), min_size=1, unique=True))
    events = dp.feed(*to_batch([wire[i] for i in sorted(kept)]), now=0) + dp.flush()
    (ev,) = events
    written = np.zeros(fmt.frame_bytes, bool)
    for i in kept:
        for srd in PayloadHeader.parse(parse_rtp(wire[i]).payload).srds:
            start = srd.row // fmt.lines_per_row * fmt.row_bytes + (
                srd.offset // fmt.pgroup_pixels_per_line * fmt.pgroup_bytes)
            written[start : start + srd.length] = True
    assert np.array_equal(ev.data == 0, ~written)
    rows_missing = ~written.reshape(-1, fmt.row_bytes).all(axis=1)
    assert ev.missing_rows.tolist() == rows_missing.tolist()


def test_frame_buffers_are_reused_only_when_nothing_holds_them() -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 8, 32, 4)
    pk = VideoPacketizer(fmt, ssrc=5)
    dp = VideoDepacketizer(fmt)

    def frame(i: int) -> VideoFrameEvent:
        b = pk.packetize(random_frame(fmt, i), i)
        (ev,) = dp.feed(b.buf, b.sizes, now=0)
        return ev

    held = frame(0)
    view = frame(1).data[2:]  # a view keeps its frame's buffer busy too
    addresses = {held.data.ctypes.data, view.base.ctypes.data}  # type: ignore[union-attr]
    third = frame(2)
    assert third.data.ctypes.data not in addresses  # neither buffer was written again
    assert np.array_equal(held.data, random_frame(fmt, 0))
    assert np.array_equal(view, random_frame(fmt, 1)[2:])
    released = third.data.ctypes.data
    del third
    assert frame(3).data.ctypes.data == released  # a free buffer is taken again
