"""Fuzz the RFC 8285 one-byte element parser and the NMOS item decoder.

Property: :func:`decode_elements` and :meth:`NmosExtension.decode` raise nothing but
RemoteProtocolError on mutated valid bodies and random bytes; decoded elements are
well-formed and re-encode to a body that decodes to the same elements.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from rtstream.proto.nmos_ext import ExtMap, NmosExtension, decode_elements, encode_elements
from tests.fuzz.strategies import (
    fuzz_settings,
    gen_nmos_body,
    mutate,
    mutated,
    only_protocol_errors,
    random_extmap,
    seeded,
)

BATCH = 10


def _check(body: bytes, extmap: ExtMap) -> None:
    elements = only_protocol_errors(decode_elements, body)
    if elements is not None:
        for ident, data in elements:
            assert 1 <= ident <= 14 and 1 <= len(data) <= 16, (ident, data, body)
        assert decode_elements(encode_elements(elements)) == elements
    ext = only_protocol_errors(lambda b: NmosExtension.decode(b, extmap), body)
    if ext is not None:
        assert isinstance(ext, NmosExtension)
        # what decoded encodes again and decodes to the same items (when the map has ids)
        try:
            again = ext.encode(extmap)
        except Exception:  # an item the map lacks cannot occur: decode only sets mapped ones
            raise AssertionError(f"decoded extension does not re-encode: {body!r}") from None
        assert NmosExtension.decode(again, extmap) == ext


@fuzz_settings(per_example=BATCH)
@given(body=mutated(seeded(gen_nmos_body)), seed=st.integers(0, 2**64 - 1))
def test_mutated_bodies_raise_only_protocol_errors(body: bytes, seed: int) -> None:
    rng = random.Random(seed)
    extmap = ExtMap.default() if rng.random() < 0.6 else random_extmap(rng)
    _check(body, extmap)
    for _ in range(BATCH - 1):
        _check(mutate(gen_nmos_body(rng, extmap), rng), extmap)


@fuzz_settings(per_example=BATCH)
@given(st.lists(st.binary(max_size=64), min_size=BATCH, max_size=BATCH))
def test_random_bodies_raise_only_protocol_errors(bodies: list[bytes]) -> None:
    for body in bodies:
        _check(body, ExtMap.default())
