"""Fuzz :func:`rtstream.proto.sdp.parse_sdp` (RFC 4566 with the ST 2110 / PS3.22 parts).

Inputs are valid SDPs (rtstream's own for random sessions, and the third-party samples)
with line- and token-level mutations, random lines from a pool of SDP line templates,
and byte-level mutations of the UTF-8 text. Property: only RemoteProtocolError escapes,
and whatever parses is written back by :func:`write_sdp` to a text that parses to the
same session.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from rtstream.proto.sdp import SdpSession, parse_sdp, write_sdp
from tests.fuzz.strategies import (
    fuzz_settings,
    gen_sdp,
    mutate,
    mutate_sdp,
    mutated,
    only_protocol_errors,
    sdp_samples,
    seeded,
)

BATCH = 10


def _check(text: str | bytes) -> None:
    session = only_protocol_errors(parse_sdp, text)
    if session is None:
        return
    assert isinstance(session, SdpSession)
    written = write_sdp(session)
    assert parse_sdp(written) == session, f"write/parse round trip differs for {text!r}"


@fuzz_settings(per_example=BATCH)
@given(seed=st.integers(0, 2**64 - 1))
def test_mutated_sdp_text_raises_only_protocol_errors(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(BATCH):
        _check(mutate_sdp(gen_sdp(rng), rng))


@fuzz_settings(per_example=BATCH)
@given(raw=mutated(seeded(lambda r: gen_sdp(r).encode()), pool=()), seed=st.integers(0, 2**64 - 1))
def test_mutated_sdp_bytes_raise_only_protocol_errors(raw: bytes, seed: int) -> None:
    _check(raw)
    rng = random.Random(seed)
    pool = [s.encode() for s in sdp_samples()]
    for _ in range(BATCH - 1):
        _check(mutate(gen_sdp(rng).encode(), rng, pool=pool, max_ops=6))


@fuzz_settings(per_example=BATCH)
@given(st.lists(st.text(max_size=200), min_size=BATCH, max_size=BATCH))
def test_random_text_raises_only_protocol_errors(texts: list[str]) -> None:
    for text in texts:
        _check(text)
        _check("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=x\r\n" + text)
