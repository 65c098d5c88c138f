"""ST 2022-7 merge (rtstream.proto.dup): first copy wins, per-leg counters, skew, restarts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtstream.errors import LocalProtocolError
from rtstream.proto.dup import DupMerger, LegState
from rtstream.proto.rtp import write_rtp_headers

SSRC = 0x1234ABCD
MS = 1_000_000


def packets(first: int, count: int, *, ssrc: int = SSRC, stride: int = 32) -> np.ndarray:
    """``count`` datagrams numbered from ``first`` (16-bit wrap); payload = the number."""
    out = np.zeros((count, stride), np.uint8)
    write_rtp_headers(out, payload_type=96, sequence=first, timestamp=1000, ssrc=ssrc,
                      marker_last=False)
    nums = np.arange(first, first + count, dtype=np.int64)
    out[:, 12:20] = nums.astype(">i8").view(np.uint8).reshape(count, 8)
    return out


def numbers(rows: np.ndarray) -> list[int]:
    return [int(x) for x in rows[:, 12:20].copy().view(">i8").reshape(-1)]


def handed(out: list[tuple[np.ndarray, np.ndarray]]) -> list[int]:
    got: list[int] = []
    for rows, lens in out:
        assert len(rows) == len(lens)
        got += numbers(rows)
    return got


def lens(rows: np.ndarray) -> np.ndarray:
    return np.full(len(rows), rows.shape[1], np.int64)


def push(m: DupMerger, leg: int, rows: np.ndarray, now: int) -> list[int]:
    return handed(m.push(leg, rows, lens(rows), now))


def test_identical_legs_hand_each_packet_once_and_keep_the_batch() -> None:
    m = DupMerger()
    a = packets(100, 50)
    out = m.push(0, a, lens(a), 0)
    assert len(out) == 1 and np.shares_memory(out[0][0], a)  # steady state: a view, no copy
    assert push(m, 1, packets(100, 50), 1) == []
    assert push(m, 1, packets(150, 10), 2) == list(range(150, 160))
    assert push(m, 0, packets(150, 10), 3) == []
    legs = m.legs
    assert (legs[0].packets, legs[0].first, legs[0].redundant) == (60, 50, 10)
    assert (legs[1].packets, legs[1].first, legs[1].redundant) == (60, 10, 50)
    assert m.lost == 0 and m.leg_lost(0) == 0 and m.leg_lost(1) == 0 and m.winners == 60


def test_overlapping_batches_hand_on_the_new_tail() -> None:
    m = DupMerger()
    push(m, 0, packets(0, 100), 0)
    assert push(m, 1, packets(50, 100), 1) == list(range(100, 150))


def test_loss_on_one_leg_is_recovered_by_the_other() -> None:
    m = DupMerger()
    a = packets(0, 100)
    a_lost = np.delete(a, [10, 11, 50], axis=0)
    b = packets(0, 100)
    b_lost = np.delete(b, [70], axis=0)
    got = push(m, 0, a_lost, 0) + push(m, 1, b_lost, 1 * MS)
    assert sorted(got) == list(range(100))
    assert m.lost == 0
    assert m.leg_lost(0) == 3 and m.leg_recovered(0) == 3
    assert m.leg_lost(1) == 1 and m.leg_recovered(1) == 1
    assert m.held == 0


def test_gap_holds_until_the_other_copy_then_in_order() -> None:
    m = DupMerger(skew_ns=10 * MS)
    first = push(m, 0, np.delete(packets(0, 20), [5], axis=0), 0)
    assert first == list(range(5))  # 6.. wait for 5
    assert m.held == 14 and m.deadline == 10 * MS
    assert push(m, 1, packets(0, 20), 4 * MS) == list(range(5, 20))  # in sequence order
    assert m.held == 0 and m.lost == 0 and m.given_up == 0


def test_reordered_batch_that_continues_the_stream_is_handed_on_in_order() -> None:
    """A path that reorders: one drained batch holds exactly the next numbers, but not in
    order (a frame's last packet behind the next frame's first). The merged stream is in
    sequence order, so the depacketizer never sees the next frame begin before this one
    ends (it would hand this one on incomplete and count its last packet late)."""
    m = DupMerger()
    assert push(m, 0, packets(0, 10), 0) == list(range(10))
    assert push(m, 0, packets(10, 6)[[0, 1, 3, 4, 2, 5]], 1) == list(range(10, 16))
    assert m.held == 0 and m.lost == 0 and m.given_up == 0


def test_gap_given_up_after_the_skew() -> None:
    m = DupMerger(skew_ns=10 * MS)
    push(m, 0, np.delete(packets(0, 20), [5, 6], axis=0), 0)
    assert handed(m.release(9 * MS)) == []
    assert handed(m.release(10 * MS)) == list(range(7, 20))
    assert m.given_up == 2 and m.lost == 2
    # the copy arriving after that is handed on as a single path would (late)
    assert push(m, 1, packets(5, 2), 11 * MS) == [5, 6]
    assert m.lost == 0 and m.leg_lost(0) == 2


def test_too_much_held_gives_up_at_once() -> None:
    m = DupMerger(max_held=10)
    push(m, 0, packets(0, 5), 0)
    assert push(m, 0, packets(6, 20), 1) == list(range(6, 26))
    assert m.held == 0


def test_restart_far_behind_and_new_ssrc() -> None:
    m = DupMerger()
    push(m, 0, packets(30000, 100), 0)
    push(m, 1, packets(30000, 100), 1)
    assert push(m, 0, packets(5, 10), 2) == list(range(5, 15))  # restarted numbering
    assert m.restarts == 1
    assert push(m, 1, packets(5, 10), 3) == []  # its copy is redundant in the new stream
    assert push(m, 0, packets(7000, 5, ssrc=99), 4) == []  # other SSRC while locked
    assert m.legs[0].foreign == 5
    assert push(m, 0, packets(7000, 5, ssrc=99), 4 + 2_000 * MS) == list(range(7000, 7005))
    assert m.ssrc == 99


def test_malformed_rows_dropped_and_counted() -> None:
    m = DupMerger()
    rows = packets(0, 4)
    rows[1, 0] = 0x40  # version 1
    lengths = lens(rows)
    lengths[2] = 8
    assert handed(m.push(0, rows, lengths, 0)) == [0]  # 3 waits behind the dropped ones
    assert m.legs[0].malformed == 2
    assert handed(m.push(0, np.zeros((2, 8), np.uint8), np.full(2, 8), 1)) == []
    assert m.legs[0].malformed == 4


def test_wrap_of_sequence_numbers() -> None:
    m = DupMerger()
    assert push(m, 0, packets(65530, 12), 0) == list(range(65530, 65542))
    assert push(m, 1, packets(65530, 12), 1) == []
    assert m.lost == 0 and m.winners == 12


def test_leg_events() -> None:
    m = DupMerger(silence_ns=100 * MS)
    push(m, 0, packets(0, 1), 0)
    assert m.poll_legs(50 * MS) == []  # leg 1 still starting, leg 0 up quietly
    ev = m.poll_legs(100 * MS)
    assert [(e.leg, e.state) for e in ev] == [(0, LegState.SILENT), (1, LegState.MISSING)]
    push(m, 1, packets(1, 1), 120 * MS)
    ev = m.poll_legs(130 * MS)
    assert [(e.leg, e.state, e.last_rx_ns) for e in ev] == [(1, LegState.UP, 120 * MS)]
    assert m.poll_legs(140 * MS) == []


def test_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError, match="legs"):
        DupMerger(1)
    m = DupMerger()
    with pytest.raises(LocalProtocolError, match="leg"):
        m.push(2, packets(0, 1), np.full(1, 32), 0)


@settings(max_examples=60, deadline=None)
@given(
    loss_a=st.sets(st.integers(0, 299), max_size=120),
    loss_b=st.sets(st.integers(0, 299), max_size=120),
    cuts=st.lists(st.integers(1, 60), min_size=1, max_size=12),
    order=st.lists(st.booleans(), min_size=1, max_size=30),
)
def test_property_merge_is_the_union(loss_a: set[int], loss_b: set[int], cuts: list[int],
                                     order: list[bool]) -> None:
    """Whatever the losses and the interleaving of batches: every number either leg
    delivered is handed on exactly once, the merged loss is what both lost, and the
    per-leg counters match the drops."""
    total = 300
    m = DupMerger(skew_ns=5 * MS)

    def batches(lost: set[int]) -> list[np.ndarray]:
        rows = np.delete(packets(0, total), sorted(lost), axis=0)
        out, i, k = [], 0, 0
        while i < len(rows):
            step = cuts[k % len(cuts)]
            out.append(rows[i : i + step])
            i += step
            k += 1
        return out

    queues = [batches(loss_a), batches(loss_b)]
    got: list[int] = []
    now = 0
    k = 0
    while queues[0] or queues[1]:
        leg = 0 if order[k % len(order)] else 1
        if not queues[leg]:
            leg = 1 - leg
        b = queues[leg].pop(0)
        now += MS // 10
        got += push(m, leg, b, now)
        got += handed(m.release(now))
        k += 1
    got += handed(m.flush())
    both = loss_a & loss_b
    delivered = sorted(set(range(total)) - both)
    assert sorted(got) == delivered and len(got) == len(set(got))
    first, last = delivered[0] if delivered else 0, delivered[-1] if delivered else -1
    inner_lost = len([x for x in both if first <= x <= last])
    assert m.lost == inner_lost
    if delivered:
        span = set(range(first, last + 1))
        assert m.leg_lost(0) == len(span & loss_a)
        assert m.leg_lost(1) == len(span & loss_b)
        assert m.legs[0].unique == total - len(loss_a)
