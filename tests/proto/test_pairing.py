"""Frame <-> grain pairing by RTP timestamp (PS3.17 PPPP.7), driven by a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtstream.errors import ConfigError
from rtstream.proto.clock import FakeClock, rtp_timestamp
from rtstream.proto.pairing import AudioOrderer, MediaClock, PairedFrame, Pairer

PERIOD_NS = 16_666_667
TICKS = 1500
WAIT = 2 * PERIOD_NS
SSRC = 0x1234


def make() -> tuple[Pairer[str, str], FakeClock]:
    return Pairer(wait_ns=WAIT, max_pending=8), FakeClock()


def frames_of(out: list[PairedFrame[str, str]]) -> list[tuple[str, str | None]]:
    return [(p.frame, p.grain) for p in out]


def test_grain_first_then_frame_pairs_at_once() -> None:
    p, clk = make()
    assert p.add_grain(rtp_timestamp=100, grain="g100", now=clk.now_ns()) == []
    out = p.add_frame(ssrc=SSRC, rtp_timestamp=100, frame="f100", now=clk.now_ns())
    assert frames_of(out) == [("f100", "g100")]
    assert out[0].waited_ns == 0
    assert p.stats.metadata_matched == 1 and p.stats.metadata_unmatched == 0


def test_frame_first_then_grain_pairs_on_grain() -> None:
    p, clk = make()
    assert p.add_frame(ssrc=SSRC, rtp_timestamp=100, frame="f", now=clk.now_ns()) == []
    clk.advance(1000)
    out = p.add_grain(rtp_timestamp=100, grain="g", now=clk.now_ns())
    assert frames_of(out) == [("f", "g")]
    assert out[0].waited_ns == 1000


def test_frame_without_grain_released_after_wait_unmatched() -> None:
    p, clk = make()
    p.add_frame(ssrc=SSRC, rtp_timestamp=100, frame="f", now=clk.now_ns())
    assert p.next_deadline() == clk.now_ns() + WAIT
    clk.advance(WAIT)
    assert p.poll(clk.now_ns()) == []  # exactly at the deadline it may still wait
    clk.advance(1)
    assert frames_of(p.poll(clk.now_ns())) == [("f", None)]
    assert p.stats.metadata_unmatched == 1
    # the grain that comes afterwards is dropped, never attached to anything
    assert p.add_grain(rtp_timestamp=100, grain="g", now=clk.now_ns()) == []
    assert p.stats.grains_unmatched == 1
    assert p.pending_grains == 0


def test_waits_end_only_in_poll_so_a_late_read_still_pairs() -> None:
    """A receiver whose loop ran late reads a grain, then its frame past the grain's
    wait (or a frame, then its grain past the frame's): nothing polled in between, so
    the arrival of the one does not first call the other expired. (It did: under load a
    frame's own arrival dropped its grain, CI stop 26.)"""
    p, clk = make()
    p.add_grain(rtp_timestamp=100, grain="g", now=clk.now_ns())
    clk.advance(WAIT + 5)
    out = p.add_frame(ssrc=SSRC, rtp_timestamp=100, frame="f", now=clk.now_ns())
    assert frames_of(out) == [("f", "g")]
    p.add_frame(ssrc=SSRC, rtp_timestamp=200, frame="f2", now=clk.now_ns())
    clk.advance(WAIT + 5)
    out = p.add_grain(rtp_timestamp=200, grain="g2", now=clk.now_ns())
    assert frames_of(out) == [("f2", "g2")]
    assert p.stats.metadata_unmatched == 0 and p.stats.grains_unmatched == 0
    # what nothing met by then, the poll ends
    p.add_grain(rtp_timestamp=300, grain="g3", now=clk.now_ns())
    clk.advance(WAIT + 1)
    assert p.poll(clk.now_ns()) == [] and p.stats.grains_unmatched == 1


def test_grain_of_other_timestamp_never_used() -> None:
    p, clk = make()
    p.add_grain(rtp_timestamp=101, grain="g101", now=clk.now_ns())
    p.add_frame(ssrc=SSRC, rtp_timestamp=100, frame="f100", now=clk.now_ns())
    clk.advance(WAIT + 1)
    out = p.poll(clk.now_ns())
    assert frames_of(out) == [("f100", None)]
    assert p.stats.grains_unmatched == 1


def test_grain_without_frame_dropped_after_wait() -> None:
    p, clk = make()
    p.add_grain(rtp_timestamp=5, grain="g", now=clk.now_ns())
    clk.advance(WAIT + 1)
    assert p.poll(clk.now_ns()) == []
    assert p.pending_grains == 0 and p.stats.grains_unmatched == 1
    assert p.add_frame(ssrc=SSRC, rtp_timestamp=5, frame="f", now=clk.now_ns()) == []
    clk.advance(WAIT + 1)
    assert frames_of(p.poll(clk.now_ns())) == [("f", None)]


def test_release_in_arrival_order_behind_waiting_head() -> None:
    p, clk = make()
    p.add_frame(ssrc=SSRC, rtp_timestamp=0, frame="f0", now=clk.now_ns())
    clk.advance(PERIOD_NS)
    p.add_grain(rtp_timestamp=TICKS, grain="g1", now=clk.now_ns())
    assert p.add_frame(ssrc=SSRC, rtp_timestamp=TICKS, frame="f1", now=clk.now_ns()) == []
    out = p.add_grain(rtp_timestamp=0, grain="g0", now=clk.now_ns())
    assert frames_of(out) == [("f0", "g0"), ("f1", "g1")]


def test_duplicate_grain_counted_not_reused() -> None:
    p, clk = make()
    p.add_grain(rtp_timestamp=7, grain="a", now=clk.now_ns())
    p.add_grain(rtp_timestamp=7, grain="b", now=clk.now_ns())
    out = p.add_frame(ssrc=SSRC, rtp_timestamp=7, frame="f", now=clk.now_ns())
    assert frames_of(out) == [("f", "a")]
    p.add_grain(rtp_timestamp=7, grain="c", now=clk.now_ns())
    assert p.stats.grains_duplicate == 1 and p.stats.grains_unmatched == 1


def test_bounded_memory() -> None:
    p, clk = make()
    for i in range(100):
        p.add_grain(rtp_timestamp=10_000 + i, grain=f"g{i}", now=clk.now_ns())
    assert p.pending_grains == 8 and p.stats.evicted_grains == 92
    released = []
    for i in range(100):
        released += p.add_frame(ssrc=SSRC, rtp_timestamp=i, frame=f"f{i}", now=clk.now_ns())
        assert p.pending_frames <= 8
    assert [r.frame for r in released] == [f"f{i}" for i in range(92)]
    assert all(r.grain is None for r in released)


def test_video_restart_releases_old_frames_and_follows_new_stream() -> None:
    p, clk = make()
    gen_a = (1, "1.2.3.1")
    for i in range(5):
        p.add_grain(rtp_timestamp=i * TICKS, grain=f"a{i}", now=clk.now_ns(), generation=gen_a)
        p.add_frame(ssrc=1, rtp_timestamp=i * TICKS, frame=f"A{i}", now=clk.now_ns())
        clk.advance(PERIOD_NS)
    # an old frame waiting for its grain when the sender dies
    p.add_frame(ssrc=1, rtp_timestamp=5 * TICKS, frame="A5", now=clk.now_ns())
    p.add_grain(rtp_timestamp=6 * TICKS, grain="a6", now=clk.now_ns(), generation=gen_a)
    clk.advance(PERIOD_NS * 30)
    # the new sender restarts with timestamps that collide with the old ones
    out = p.add_frame(ssrc=2, rtp_timestamp=6 * TICKS, frame="B6", now=clk.now_ns())
    assert frames_of(out) == [("A5", None)]
    assert p.stats.restarts == 1
    # a late grain of the old stream with the colliding timestamp: refused
    p.add_grain(rtp_timestamp=6 * TICKS, grain="a6bis", now=clk.now_ns(), generation=gen_a)
    gen_b = (2, "1.2.3.2")
    out = p.add_grain(rtp_timestamp=6 * TICKS, grain="b6", now=clk.now_ns(), generation=gen_b)
    assert frames_of(out) == [("B6", "b6")]
    clk.advance(PERIOD_NS)
    p.add_grain(rtp_timestamp=7 * TICKS, grain="b7", now=clk.now_ns(), generation=gen_b)
    out = p.add_frame(ssrc=2, rtp_timestamp=7 * TICKS, frame="B7", now=clk.now_ns())
    assert frames_of(out) == [("B7", "b7")]


def test_metadata_restart_first_is_kept_for_new_video() -> None:
    p, clk = make()
    p.add_grain(rtp_timestamp=0, grain="a0", now=clk.now_ns(), generation="A")
    p.add_frame(ssrc=1, rtp_timestamp=0, frame="A0", now=clk.now_ns())
    clk.advance(PERIOD_NS * 10)
    p.add_grain(rtp_timestamp=99, grain="b99", now=clk.now_ns(), generation="B")
    clk.advance(1000)
    out = p.add_frame(ssrc=2, rtp_timestamp=99, frame="B99", now=clk.now_ns())
    assert frames_of(out) == [("B99", "b99")]


def test_metadata_flow_that_goes_on_after_video_restart_is_accepted_again() -> None:
    p, clk = make()
    p.add_grain(rtp_timestamp=0, grain="a0", now=clk.now_ns(), generation="A")
    p.add_frame(ssrc=1, rtp_timestamp=0, frame="F0", now=clk.now_ns())
    clk.advance(PERIOD_NS * 10)
    p.add_frame(ssrc=2, rtp_timestamp=TICKS * 10, frame="N10", now=clk.now_ns())
    clk.advance(WAIT + 1)
    p.poll(clk.now_ns())
    p.add_grain(rtp_timestamp=TICKS * 20, grain="a20", now=clk.now_ns(), generation="A")
    out = p.add_frame(ssrc=2, rtp_timestamp=TICKS * 20, frame="N20", now=clk.now_ns())
    assert frames_of(out) == [("N20", "a20")]


def test_flush_releases_everything() -> None:
    p, clk = make()
    p.add_frame(ssrc=SSRC, rtp_timestamp=1, frame="f1", now=clk.now_ns())
    p.add_grain(rtp_timestamp=2, grain="g2", now=clk.now_ns())
    assert frames_of(p.flush(clk.now_ns())) == [("f1", None)]
    assert p.pending_grains == 0 and p.stats.grains_unmatched == 1


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="wait_ns"):
        Pairer(wait_ns=-1)
    with pytest.raises(ConfigError, match="max_pending"):
        Pairer(wait_ns=0, max_pending=0)
    with pytest.raises(ConfigError, match="clock_rate"):
        MediaClock(clock_rate=0)


# -- arbitrary interleavings: never a mis-pair -------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, list[tuple[int, str, int]], set[int], set[int]]:
    n = draw(st.integers(1, 30))
    base = draw(st.integers(0, 2**32 - 1))
    lost_grains = draw(st.sets(st.integers(0, n - 1)))
    lost_frames = draw(st.sets(st.integers(0, n - 1)))
    events: list[tuple[int, str, int]] = []  # (arrival ns, kind, index)
    for i in range(n):
        t_frame = i * PERIOD_NS + draw(st.integers(0, 3 * PERIOD_NS))
        t_grain = i * PERIOD_NS + draw(st.integers(0, 3 * PERIOD_NS))
        if i not in lost_frames:
            events.append((t_frame, "f", i))
        if i not in lost_grains:
            events.append((t_grain, "g", i))
            if draw(st.booleans()) and draw(st.booleans()):
                events.append((t_grain + draw(st.integers(0, PERIOD_NS)), "g", i))
    events.sort(key=lambda e: e[0])
    return base, events, lost_grains, lost_frames


@given(scenarios(), st.integers(0, 4 * PERIOD_NS), st.integers(1, 40))
def test_arbitrary_interleavings_never_mispair(
    scenario: tuple[int, list[tuple[int, str, int]], set[int], set[int]],
    wait: int,
    max_pending: int,
) -> None:
    base, events, lost_grains, lost_frames = scenario
    p: Pairer[int, int] = Pairer(wait_ns=wait, max_pending=max_pending)
    t0 = 10**18
    out: list[PairedFrame[int, int]] = []
    for t, kind, i in events:
        ts = (base + i * TICKS) & 0xFFFFFFFF
        now = t0 + t
        out += p.poll(now)
        if kind == "f":
            out += p.add_frame(ssrc=SSRC, rtp_timestamp=ts, frame=i, now=now)
        else:
            out += p.add_grain(rtp_timestamp=ts, grain=i, now=now)
    out += p.flush(t0 + 10**12)
    delivered = [o.frame for o in out]
    # every frame exactly once, in arrival order
    arrival = [i for _, kind, i in events if kind == "f"]
    assert delivered == arrival
    for o in out:
        assert o.grain is None or o.grain == o.frame, "paired with another frame's grain"
        assert o.rtp_timestamp == (base + o.frame * TICKS) & 0xFFFFFFFF
        assert o.grain is None or o.frame not in lost_grains
    s = p.stats
    assert s.metadata_matched + s.metadata_unmatched == len(arrival)
    assert s.metadata_matched == sum(o.grain is not None for o in out)
    n_grains = sum(kind == "g" for _, kind, _ in events)
    assert s.metadata_matched + s.grains_unmatched + s.grains_duplicate == n_grains
    assert p.pending_frames == 0 and p.pending_grains == 0


@given(st.lists(st.integers(0, 3 * PERIOD_NS), min_size=1, max_size=40))
def test_matched_when_both_arrive_within_wait(jitters: list[int]) -> None:
    """With a generous bound and no loss, every frame gets its own grain."""
    p: Pairer[int, int] = Pairer(wait_ns=4 * PERIOD_NS, max_pending=64)
    events = []
    for i, j in enumerate(jitters):
        events.append((i * PERIOD_NS + j, "f", i))
        events.append((i * PERIOD_NS + (3 * PERIOD_NS - j), "g", i))
    events.sort()
    out: list[PairedFrame[int, int]] = []
    for t, kind, i in events:
        if kind == "f":
            out += p.add_frame(ssrc=SSRC, rtp_timestamp=i * TICKS, frame=i, now=t)
        else:
            out += p.add_grain(rtp_timestamp=i * TICKS, grain=i, now=t)
    out += p.flush(10**15)
    arrival = [i for _, kind, i in events if kind == "f"]
    assert [(o.frame, o.grain) for o in out] == [(i, i) for i in arrival]


# -- media clock and audio ---------------------------------------------------------------


@given(
    st.integers(1_600_000_000 * 10**9, 2_100_000_000 * 10**9),
    st.sampled_from([90_000, 48_000, 44_100, 96_000]),
    st.integers(0, 2**32 - 1),
    st.integers(-10**9, 10**9),
)
def test_media_clock_inverts_rtp_timestamp(t: int, rate: int, offset: int, skew: int) -> None:
    clk = MediaClock(clock_rate=rate, offset=offset)
    ts = (rtp_timestamp(t, rate) + offset) & 0xFFFFFFFF
    ns = clk.to_ns(ts, t + skew)
    # the start of the tick that contains t
    assert ns <= t and rtp_timestamp(ns, rate) == rtp_timestamp(t, rate)
    assert t - ns < 10**9 / rate + 1


def test_audio_orderer_sorts_and_drops_late() -> None:
    a: AudioOrderer[int] = AudioOrderer(wait_ns=1000)
    assert a.add(ssrc=1, rtp_timestamp=48, item=48, now=0) == []
    assert a.add(ssrc=1, rtp_timestamp=0, item=0, now=10) == []
    assert a.add(ssrc=1, rtp_timestamp=96, item=96, now=1001) == [0, 48]
    assert a.poll(2002) == [96]
    assert a.add(ssrc=1, rtp_timestamp=48, item=48, now=2003) == []
    assert a.late == 1
    # a new SSRC starts over (sender restart), timestamps may go backwards
    assert a.add(ssrc=2, rtp_timestamp=5, item=5, now=3000) == []
    assert a.poll(5000) == [5]


@given(st.permutations(list(range(20))))
def test_audio_orderer_output_increasing(order: list[int]) -> None:
    a: AudioOrderer[int] = AudioOrderer(wait_ns=0)
    out: list[int] = []
    for k, i in enumerate(order):
        out += a.add(ssrc=1, rtp_timestamp=(2**32 - 480 + i * 48) & 0xFFFFFFFF, item=i, now=k)
    out += a.flush()
    assert out == sorted(out)
    assert len(out) + a.late == 20


def test_restart_new_grain_before_new_frame_with_colliding_timestamp() -> None:
    """The restarted sender's first grain comes before its first frame, same ts as an old one."""
    p, clk = make()
    for i in range(3):
        p.add_grain(rtp_timestamp=i * TICKS, grain=f"a{i}", now=clk.now_ns(), generation="A")
        p.add_frame(ssrc=1, rtp_timestamp=i * TICKS, frame=f"A{i}", now=clk.now_ns())
        clk.advance(PERIOD_NS)
    clk.advance(10**9)
    assert p.add_grain(rtp_timestamp=0, grain="b0", now=clk.now_ns(), generation="B") == []
    out = p.add_frame(ssrc=2, rtp_timestamp=0, frame="B0", now=clk.now_ns())
    assert frames_of(out) == [("B0", "b0")]
