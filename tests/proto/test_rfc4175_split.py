"""Split reads give exactly what the general path gives, whatever the network did.

A split read (``UdpReceiver.drain_split``) lets the kernel put each datagram's first 20
bytes into a header row and the rest where :meth:`VideoDepacketizer.plan_split` expects
the next in-order packet's payload: straight into the frame. ``feed_split`` then verifies
the headers and moves whatever landed in the wrong place. Here the kernel's part is
played by :func:`kernel_split`, which does what ``recvmsg(2)`` does with that iovec
array (fill each iovec in turn with the datagram's bytes, ``readv`` semantics), including
the reads the socket hands on to an ordinary drain (another segment size, a longer
datagram). The reference is a depacketizer fed the same datagrams, in the same batches,
through the general path only; frames (every byte, so anything a misplaced payload left
behind must have been zeroed or overwritten), flags and counters must be identical.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtstream.proto.formats import Sampling, VideoFormat
from rtstream.proto.rfc4175 import SplitPlan, VideoDepacketizer, VideoPacketizer
from tests.proto.test_rfc4175 import datagrams, make_fmt, random_frame, to_batch
from tests.proto.test_rfc4175_in_order import GeneralOnly, summary

FORMATS = [
    make_fmt(Sampling.YCBCR_422, 10, 64, 8),
    make_fmt(Sampling.YCBCR_422, 8, 48, 6),
    make_fmt(Sampling.RGB, 10, 24, 4),
    make_fmt(Sampling.YCBCR_444, 12, 24, 4),
    make_fmt(Sampling.YCBCR_420, 8, 32, 8),  # two lines per SRD row: never planned
]

Read = list[bytes]  # datagrams the kernel hands over in one read (GRO: equal sizes)


def kernel_split(plan: SplitPlan, reads: list[Read], rows: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Read | None]:
    """What the socket does for one drain_split: fill header rows, the planned slots of
    ``plan.data`` and spare rows read by read; a read of another segment size (or a
    datagram longer than a slot) is spread over the iovecs like any other, then handed
    on whole. Returns (headers, lengths, spare rows, the read handed on or None)."""
    hp, pay = plan.header, plan.payload
    heads = np.full((rows, hp), 0xEE, np.uint8)
    spare = np.full((rows, pay), 0xEE, np.uint8)
    lengths: list[int] = []
    n = 0
    for read in reads:
        stream = np.frombuffer(b"".join(read), np.uint8)
        pos, i = 0, n
        while pos < stream.size:  # readv: each iovec in turn
            take = min(hp, stream.size - pos)
            heads[i, :take] = stream[pos : pos + take]
            pos += take
            take = min(pay, stream.size - pos)
            if i < plan.slots:
                a = plan.start + i * pay
                plan.data[a : a + take] = stream[pos : pos + take]
            else:
                spare[i - plan.slots, :take] = stream[pos : pos + take]
            pos += take
            i += 1
        seg = len(read[0])
        if (len(read) > 1 and seg != hp + pay) or seg > hp + pay:
            return heads[:n], np.array(lengths, np.int64), spare[: max(0, n - plan.slots)], read
        lengths += [len(d) for d in read]
        n = i
    return heads[:n], np.array(lengths, np.int64), spare[: max(0, n - plan.slots)], None


def gro_reads(wire: list[bytes], sizes: list[int]) -> list[Read]:
    """Cut datagrams into reads as GRO coalesces them: equal sizes, a shorter one last."""
    reads: list[Read] = []
    cur: Read = []
    k = 0
    for d in wire:
        if cur and (len(d) > len(cur[0]) or len(cur) >= sizes[k % len(sizes)]):
            reads.append(cur)
            k += 1
            cur = []
        cur.append(d)
        if len(d) < len(cur[0]):
            reads.append(cur)
            k += 1
            cur = []
    if cur:
        reads.append(cur)
    return reads


def run_split(dp: VideoDepacketizer, drains: list[list[Read]]) -> tuple[list[Any], list[Any]]:
    """Feed ``dp`` as VideoReader does; also return the batches as they were fed."""
    out: list[Any] = []
    fed: list[Any] = []
    for t, reads in enumerate(drains):
        now = t * 300_000_000
        pending = list(reads)
        while pending:
            plan = dp.plan_split()
            if plan is None:  # an ordinary drain
                flat = [d for r in pending for d in r]
                out += [summary(e) for e in dp.feed(*to_batch(flat), now=now)]
                fed.append((flat, now))
                break
            heads, lengths, spare, carried = kernel_split(plan, pending, rows=4096)
            used = len(lengths)
            flat = [d for r in pending for d in r][:used]
            if used:
                out += [summary(e) for e in dp.feed_split(plan, heads, lengths, spare, now)]
                fed.append((flat, now))
            if carried is None:
                break
            # the carried read is the next ordinary drain's first read
            idx = pending.index(carried)
            out += [summary(e) for e in dp.feed(*to_batch(carried), now=now)]
            fed.append((carried, now))
            pending = pending[idx + 1 :]
    out += [summary(e) for e in dp.flush()]
    return out, fed


def run_reference(fed: list[Any], fmt: VideoFormat) -> tuple[list[Any], GeneralOnly]:
    ref = GeneralOnly(fmt)
    out: list[Any] = []
    for flat, now in fed:
        out += [summary(e) for e in ref.feed(*to_batch(flat), now=now)]
    out += [summary(e) for e in ref.flush()]
    return out, ref


@st.composite
def impaired(draw: st.DrawFn) -> tuple[VideoFormat, list[list[Read]]]:
    fmt = draw(st.sampled_from(FORMATS))
    pk = VideoPacketizer(fmt, ssrc=7, max_payload=draw(st.sampled_from([60, 120, 400])),
                         sequence=draw(st.sampled_from([0, 0xFFF0, 0xFFFFFFF0])))
    wire: list[bytes] = []
    for i in range(draw(st.integers(2, 4))):
        wire += datagrams(pk.packetize(random_frame(fmt, i), 1000 + 1500 * i))
    for _ in range(draw(st.integers(0, 5))):
        k = draw(st.integers(0, len(wire) - 1))
        what = draw(st.sampled_from(
            ["drop", "dup", "swap", "move", "truncate", "corrupt", "foreign", "late", "long"]))
        if what == "drop" and len(wire) > 1:
            del wire[k]
        elif what == "dup":
            wire.insert(draw(st.integers(0, len(wire))), wire[k])
        elif what == "swap" and k + 1 < len(wire):
            wire[k], wire[k + 1] = wire[k + 1], wire[k]
        elif what == "move":  # reordered far (earlier or later)
            wire.insert(draw(st.integers(0, len(wire) - 1)), wire.pop(k))
        elif what == "truncate" and len(wire[k]) > 1:
            wire[k] = wire[k][: draw(st.integers(1, len(wire[k]) - 1))]
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
        elif what == "long":  # longer than this sender's packets (trailing bytes)
            wire[k] = wire[k] + bytes(draw(st.integers(1, 30)))
    reads = gro_reads(wire, draw(st.lists(st.integers(1, 6), min_size=1, max_size=5)))
    drains: list[list[Read]] = []
    i = 0
    while i < len(reads):
        size = draw(st.integers(1, 3))
        drains.append(reads[i : i + size])
        i += size
    return fmt, drains


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(impaired())
def test_split_reads_give_the_general_paths_frames_and_counters(
    case: tuple[VideoFormat, list[list[Read]]],
) -> None:
    fmt, drains = case
    dp = VideoDepacketizer(fmt)
    got, fed = run_split(dp, drains)
    want, ref = run_reference(fed, fmt)
    assert got == want
    d = dp.stats.as_dict()
    assert d == ref.stats.as_dict()
    assert dp.stats.malformed_by_field == ref.stats.malformed_by_field


def clean_drains(fmt: VideoFormat, frames: list[np.ndarray], per_read: int = 5,
                 per_drain: int = 3) -> list[list[Read]]:
    pk = VideoPacketizer(fmt, ssrc=5, max_payload=120, sequence=0xFFFA)
    wire = [d for i, f in enumerate(frames) for d in datagrams(pk.packetize(f, 10 * i))]
    reads = gro_reads(wire, [per_read])
    return [reads[i : i + per_drain] for i in range(0, len(reads), per_drain)]


def test_a_clean_stream_lands_in_place_after_its_first_batch() -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 10, 64, 8)
    frames = [random_frame(fmt, i) for i in range(3)]
    dp = VideoDepacketizer(fmt)
    # 16 packets a frame, 4 a drain: the first drain seeds the sequence numbers, the
    # second (in order) shows the payload size; every later one lands in place, the
    # first packets of a frame in the spare buffer that becomes that frame
    got, _ = run_split(dp, clean_drains(fmt, frames, per_read=2, per_drain=2))
    assert [g[1] for g in got] == [0, 10, 20]
    assert all(g[3] for g in got)  # complete
    assert [g[2] for g in got] == [f.tobytes() for f in frames]
    assert dp.stats.packets == 48
    assert dp.stats.placed == 48 - 2 * 4


def test_a_lost_packet_sends_the_rest_of_the_batch_through_the_copy() -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 10, 64, 8)
    frames = [random_frame(fmt, i) for i in range(2)]
    drains = clean_drains(fmt, frames, per_read=4, per_drain=2)
    lost = drains[1][0].pop(1)  # the second packet of the second drain never comes
    dp = VideoDepacketizer(fmt)
    got, _ = run_split(dp, drains)
    # the slot the lost packet's payload belonged in held its successor's payload,
    # which was moved to its place: the frame is the original but for the lost bytes
    ev0 = got[0]
    assert not ev0[3]
    data = np.frombuffer(ev0[2], np.uint8)
    off = int.from_bytes(lost[18:20], "big") // fmt.pgroup_pixels_per_line * fmt.pgroup_bytes
    dst = int.from_bytes(lost[16:18], "big") * fmt.row_bytes + off
    size = len(lost) - 20
    assert (data[dst : dst + size] == 0).all()
    expect = frames[0].copy()
    expect[dst : dst + size] = 0
    assert np.array_equal(data, expect)
    assert dp.stats.lost == 1
    assert np.array_equal(np.frombuffer(got[1][2], np.uint8), frames[1]) and got[1][3]
    assert 0 < dp.stats.placed < dp.stats.packets


def test_plans_only_where_nothing_was_recorded() -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 10, 64, 8)
    pk = VideoPacketizer(fmt, ssrc=5, max_payload=120)
    wire = datagrams(pk.packetize(random_frame(fmt, 0), 0))
    dp = VideoDepacketizer(fmt)
    assert dp.plan_split() is None  # nothing known yet
    dp.feed(*to_batch(wire[:3]), now=0)
    dp.feed(*to_batch(wire[3:6]), now=0)  # an in-order batch shows the payload size
    plan = dp.plan_split()
    assert plan is not None
    assert plan.payload == len(wire[0]) - 20
    assert plan.start == 6 * plan.payload
    assert plan.slots == (fmt.frame_bytes - plan.start) // plan.payload
    # a packet from further on (reordered) moves the frontier past it
    dp.feed(*to_batch([wire[9]]), now=0)
    plan = dp.plan_split()
    assert plan is not None and plan.start == 10 * plan.payload


def test_a_plan_is_good_only_until_the_next_batch_or_frame() -> None:
    # A socket must never write where an old plan says: the frame it points into may
    # have been emitted (and handed to the application) since.
    fmt = make_fmt(Sampling.YCBCR_422, 10, 64, 8)
    pk = VideoPacketizer(fmt, ssrc=5, max_payload=120)
    wire = datagrams(pk.packetize(random_frame(fmt, 0), 0))
    dp = VideoDepacketizer(fmt)
    dp.feed(*to_batch(wire[:3]), now=0)
    dp.feed(*to_batch(wire[3:6]), now=0)
    plan = dp.plan_split()
    assert plan is not None and dp.plan_is_current(plan)
    (ev,) = dp.flush()  # e.g. the silence check of a paused flow
    assert not dp.plan_is_current(plan)
    before = ev.data.copy()
    # fed anyway (a caller that did not check): nothing is taken from the stale plan
    heads, lengths, spare, _ = kernel_split(plan, [wire[6:9]], rows=16)
    assert np.array_equal(ev.data[: plan.start], before[: plan.start])
    dp.feed_split(plan, heads, lengths, spare, now=0)
    assert dp.stats.placed == 0
    again = dp.plan_split()
    assert again is not None and again.generation != plan.generation
    dp.feed(*to_batch(wire[9:10]), now=0)
    assert not dp.plan_is_current(again)
