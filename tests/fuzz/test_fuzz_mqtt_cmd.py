"""Fuzz the MQTT command validator (rtstream.control.schema, docs/mqtt.md).

Property: :func:`parse_command` raises nothing but :class:`InvalidCommand` (a
RemoteProtocolError) for mutated valid commands, random JSON documents and random bytes;
a command it accepts satisfies :data:`COMMAND_SCHEMA` with finite numbers in range;
:func:`validate` never raises and returns messages that start with the path at fault.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtstream.control.schema import (
    COMMAND_SCHEMA,
    Command,
    InvalidCommand,
    parse_command,
    validate,
)
from tests.fuzz.strategies import (
    fuzz_settings,
    gen_command,
    json_values,
    mutate_command,
    only_protocol_errors,
)

BATCH = 10

def _check(payload: bytes | str) -> None:
    cmd = only_protocol_errors(parse_command, payload)
    if cmd is None:
        try:
            parse_command(payload)
        except InvalidCommand:
            return
        except Exception as exc:  # a RemoteProtocolError that is not an InvalidCommand
            raise AssertionError(f"{type(exc).__name__} for {payload!r}") from exc
        return
    assert isinstance(cmd, Command)
    doc = json.loads(payload)
    assert validate(doc, COMMAND_SCHEMA) == []
    for key, value in cmd.args.items():
        if isinstance(value, float):
            assert math.isfinite(value), f"args.{key} = {value} accepted in {payload!r}"


@fuzz_settings(per_example=BATCH)
@given(seed=st.integers(0, 2**64 - 1))
def test_mutated_commands_raise_only_invalid_command(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(BATCH):
        _check(mutate_command(gen_command(rng), rng))


@fuzz_settings(per_example=BATCH)
@given(st.lists(json_values, min_size=BATCH, max_size=BATCH))
def test_random_documents_raise_only_invalid_command(docs: list[Any]) -> None:
    for doc in docs:
        text = json.dumps(doc)
        _check(text.encode("utf-8", "surrogatepass"))
        problems = validate(doc, COMMAND_SCHEMA)
        assert all(isinstance(p, str) and p.startswith("$") for p in problems)
        if isinstance(doc, dict):
            wrapped = {"id": "fuzz-1", "action": "snapshot", "args": doc}
            _check(json.dumps(wrapped).encode("utf-8", "surrogatepass"))


@fuzz_settings(per_example=BATCH)
@given(st.lists(st.binary(max_size=100), min_size=BATCH, max_size=BATCH))
def test_random_bytes_raise_only_invalid_command(payloads: list[bytes]) -> None:
    for p in payloads:
        _check(p)


_DIGITS = b'{"id":"a","action":"snapshot","args":{"rtp_timestamp":' + b"1" * 5000 + b"}}"


def _record(max_seconds: str) -> bytes:
    return b'{"id":"a","action":"record_start","args":{"max_seconds":%s}}' % max_seconds.encode()


def test_an_integer_over_the_digit_limit_is_invalid() -> None:
    """json.loads raises ValueError (not JSONDecodeError) past Python's 4300-digit limit."""
    with pytest.raises(InvalidCommand) as info:
        parse_command(_DIGITS)
    assert info.value.field == "cmd"
    assert "integer literal exceeds" in info.value.reason


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_non_finite_numbers_are_invalid(literal: str) -> None:
    """json.loads accepts NaN/Infinity and overflows 1e999 to inf; every comparison with
    NaN is False, so the range checks alone would pass it."""
    with pytest.raises(InvalidCommand) as info:
        parse_command(_record(literal))
    assert info.value.field == "cmd.args.max_seconds"
    assert "not a finite JSON number" in info.value.reason
    assert info.value.request_id == "a"  # the reply still reaches the caller


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_validate_reports_non_finite_numbers(value: float) -> None:
    for schema in ({}, {"type": "number"}, {"type": "integer"}, {"type": "string"}):
        assert validate(value, schema) == [f"$: {json.dumps(value)} is not a finite JSON number"]
    assert validate({"x": value}, {"properties": {"x": {}}}) == [
        f"$.x: {json.dumps(value)} is not a finite JSON number"
    ]
    cmd = {"id": "a", "action": "record_start", "args": {"max_seconds": value}}
    assert validate(cmd, COMMAND_SCHEMA) == [
        f"$.args.max_seconds: {json.dumps(value)} is not a finite JSON number"
    ]


def test_finite_max_seconds_is_still_accepted() -> None:
    assert parse_command(_record("12.5")).args["max_seconds"] == 12.5
