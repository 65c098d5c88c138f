"""Fuzz :func:`rtstream.proto.rtp.parse_rtp` (RFC 3550 §5.1, §5.3.1).

Property: mutated valid datagrams and random bytes either parse or raise
RemoteProtocolError naming a field; whatever parses serializes back to a datagram that
parses to the same packet.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from rtstream.proto.rtp import RtpPacket, parse_rtp
from tests.fuzz.strategies import (
    fuzz_settings,
    gen_rtp,
    mutate,
    mutated,
    only_protocol_errors,
    seeded,
)

BATCH = 10


def _check(data: bytes) -> None:
    pkt = only_protocol_errors(parse_rtp, data)
    if pkt is None:
        return
    assert isinstance(pkt, RtpPacket)
    assert pkt.header_size + len(pkt.payload) + pkt.padding == len(data)
    again = parse_rtp(pkt.to_bytes())
    assert again == pkt, f"round trip changed the packet for {data!r}"


@fuzz_settings(per_example=BATCH)
@given(data=mutated(seeded(gen_rtp)), seed=st.integers(0, 2**64 - 1))
def test_mutated_datagrams_raise_only_protocol_errors(data: bytes, seed: int) -> None:
    _check(data)
    rng = random.Random(seed)
    pool = [gen_rtp(rng) for _ in range(4)]
    for _ in range(BATCH - 1):
        _check(mutate(rng.choice(pool), rng, pool=pool))


@fuzz_settings(per_example=BATCH)
@given(st.lists(st.binary(max_size=80), min_size=BATCH, max_size=BATCH))
def test_random_bytes_raise_only_protocol_errors(datagrams: list[bytes]) -> None:
    for data in datagrams:
        _check(data)
        # a valid first byte (V=2, random P/X/CC) gets past the version check
        if data:
            _check(bytes([0x80 | (data[0] & 0x3F)]) + data[1:])
