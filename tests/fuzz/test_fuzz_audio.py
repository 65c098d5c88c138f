"""Fuzz :meth:`rtstream.proto.st2110_30.AudioDepacketizer.feed` (ST 2110-30, L16/L24).

Each example runs one depacketizer over a sequence of batches made from valid packets of
one or two flows, with datagrams dropped, duplicated, reordered, byte-mutated or replaced
by garbage, and lengths that lie. Property: ``feed`` raises nothing (malformed input is
counted), events hold well-formed samples in the encoding's range, counters add up, and
the state stays the same size however much is fed.
"""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from rtstream.proto.formats import AudioEncoding
from rtstream.proto.st2110_30 import AudioChunkEvent, AudioDepacketizer
from tests.fuzz.strategies import (
    AUDIO_FORMATS,
    AudioStream,
    fuzz_settings,
    mutate_rows,
    restamp,
    to_batch,
)

BATCHES = 6
ROWS = 8  # valid packets per batch before mutation
PER_EXAMPLE = BATCHES * ROWS


def run_sequence(seed: int) -> int:
    """Feed random batches until PER_EXAMPLE datagrams went in; return how many did."""
    rng = random.Random(seed)
    fmt = rng.choice(AUDIO_FORMATS)
    dp = AudioDepacketizer(fmt, payload_type=rng.choice((None, 97)))
    streams = [AudioStream(fmt, rng) for _ in range(rng.choice((1, 1, 2)))]
    fed = 0
    now = 0
    lo, hi = (-(1 << 15), (1 << 15) - 1) if fmt.encoding is AudioEncoding.L16 else (
        -(1 << 23), (1 << 23) - 1)  # fmt: skip
    for _ in range(10 * BATCHES):
        if fed >= PER_EXAMPLE:
            break
        rows: list[bytes] = []
        for s in streams:
            rows += s.packets(rng, rng.randint(1, ROWS))
        if rng.random() < 0.2:  # a sender restart: new sequence space
            rows = [restamp(r, seq=rng.getrandbits(16) + i) for i, r in enumerate(rows)]
        rows = mutate_rows(rows, rng)
        if not rows:
            continue
        buf, lengths = to_batch(rows, rng)
        before = dp.stats.samples
        try:
            events = dp.feed(buf, lengths, now)
        except Exception as exc:
            raise AssertionError(
                f"{type(exc).__name__} escaped AudioDepacketizer.feed: {exc}\n"
                f"  fmt={fmt}\n  rows={[r.hex() for r in rows]}\n  lengths={lengths.tolist()}"
            ) from exc
        fed += len(rows)
        now += rng.choice((0, 1_000_000, 10**9))
        got = 0
        for ev in events:
            assert isinstance(ev, AudioChunkEvent)
            assert ev.samples.dtype == np.int32 and ev.samples.ndim == 2
            assert ev.samples.shape[1] == fmt.channels and ev.samples.shape[0] > 0
            assert int(ev.samples.min()) >= lo and int(ev.samples.max()) <= hi
            assert ev.lost_before >= 0 and ev.packets >= 1
            got += ev.samples.shape[0]
        assert dp.stats.samples - before == got
        c = dp.stats
        assert c.packets + c.malformed + c.duplicates + c.late + c.wrong_payload_type <= fed
        assert min(c.as_dict().values()) >= 0
    return fed


@fuzz_settings(per_example=PER_EXAMPLE)
@given(seed=st.integers(0, 2**64 - 1))
def test_feed_never_raises_on_mutated_batches(seed: int) -> None:
    run_sequence(seed)


@fuzz_settings(per_example=PER_EXAMPLE)
@given(st.lists(st.binary(max_size=120), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
def test_feed_never_raises_on_random_datagrams(rows: list[bytes]) -> None:
    dp = AudioDepacketizer(AUDIO_FORMATS[0])
    buf, lengths = to_batch([bytes([0x80 | (r[0] & 0x3F)]) + r[1:] if r else r for r in rows])
    dp.feed(buf, lengths, 0)
    buf, lengths = to_batch(rows)
    dp.feed(buf, lengths, 0)
    assert dp.stats.malformed <= 2 * len(rows)


def test_state_stays_bounded() -> None:
    """Many flows, restarts and garbage later, the depacketizer keeps one fixed-size
    duplicate window (its only per-flow state)."""
    rng = random.Random(7)
    fmt = AUDIO_FORMATS[0]
    dp = AudioDepacketizer(fmt)
    for i in range(300):
        rows = AudioStream(fmt, rng).packets(rng, 16)
        rows = mutate_rows(rows, rng)
        if rows:
            buf, lengths = to_batch(rows)
            dp.feed(buf, lengths, i)
    tracker = dp._seq  # its window is the bound
    assert tracker.window == 4096 and tracker._ring.shape == (4096,)
