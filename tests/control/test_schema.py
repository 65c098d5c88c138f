"""The MQTT command schema and its validator (rtstream.control.schema)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtstream.control.schema import (
    COMMAND_SCHEMA,
    Action,
    Command,
    InvalidCommand,
    parse_command,
    validate,
)
from rtstream.errors import RemoteProtocolError

# (payload, expected action, expected args) for valid commands.
VALID: list[tuple[dict[str, Any], Action, dict[str, Any]]] = [
    ({"id": "r1", "action": "snapshot"}, Action.SNAPSHOT, {}),
    ({"id": "a.b:c-d_9", "action": "snapshot", "args": {"flow": "video0",
                                                        "rtp_timestamp": 4294967295}},
     Action.SNAPSHOT, {"flow": "video0", "rtp_timestamp": 4294967295}),
    ({"id": "x", "action": "record_start", "args": {"max_seconds": 2.5}},
     Action.RECORD_START, {"max_seconds": 2.5}),
    ({"id": "x", "action": "record_stop", "args": {}}, Action.RECORD_STOP, {}),
    ({"id": "x", "action": "stream_start"}, Action.STREAM_START, {}),
    ({"id": "x", "action": "stream_stop", "args": {"flow": "a"}}, Action.STREAM_STOP,
     {"flow": "a"}),
]

# (payload, field named in the error, request id recoverable for the reply)
INVALID: list[tuple[bytes, str, str | None]] = [
    (b"", "cmd", None),
    (b"\xff\xfe", "cmd", None),
    (b"not json", "cmd", None),
    (b"[1, 2]", "cmd", None),
    (b'"snapshot"', "cmd", None),
    (b"{}", "cmd.id", None),
    (b'{"id": "r1"}', "cmd.action", "r1"),
    (b'{"id": "r1", "action": "reboot"}', "cmd.action", "r1"),
    (b'{"id": "r1", "action": 3}', "cmd.action", "r1"),
    (b'{"id": "a/b", "action": "snapshot"}', "cmd.id", None),
    (b'{"id": "#", "action": "snapshot"}', "cmd.id", None),
    (b'{"id": "", "action": "snapshot"}', "cmd.id", None),
    (b'{"id": 7, "action": "snapshot"}', "cmd.id", None),
    (b'{"id": "' + b"x" * 65 + b'", "action": "snapshot"}', "cmd.id", None),
    (b'{"id": "r2", "action": "snapshot", "extra": 1}', "cmd.extra", "r2"),
    (b'{"id": "r3", "action": "snapshot", "args": []}', "cmd.args", "r3"),
    (b'{"id": "r4", "action": "snapshot", "args": {"flow": ""}}', "cmd.args.flow", "r4"),
    (b'{"id": "r5", "action": "snapshot", "args": {"rtp_timestamp": -1}}',
     "cmd.args.rtp_timestamp", "r5"),
    (b'{"id": "r6", "action": "snapshot", "args": {"rtp_timestamp": 4294967296}}',
     "cmd.args.rtp_timestamp", "r6"),
    (b'{"id": "r7", "action": "snapshot", "args": {"rtp_timestamp": 1.5}}',
     "cmd.args.rtp_timestamp", "r7"),
    (b'{"id": "r8", "action": "snapshot", "args": {"rtp_timestamp": true}}',
     "cmd.args.rtp_timestamp", "r8"),
    (b'{"id": "r9", "action": "record_start", "args": {"max_seconds": 0}}',
     "cmd.args.max_seconds", "r9"),
    (b'{"id": "r10", "action": "record_start", "args": {"max_seconds": 3601}}',
     "cmd.args.max_seconds", "r10"),
    (b'{"id": "r11", "action": "snapshot", "args": {"bogus": 1}}', "cmd.args.bogus", "r11"),
    (b"[" * 100_000, "cmd", None),
    (b'{"id": "r12", "action": "snapshot", "args": {"description": "' + b"d" * 20_000 + b'"}}',
     "cmd", None),
]


@pytest.mark.parametrize(("doc", "action", "args"), VALID)
def test_valid_commands(doc: dict[str, Any], action: Action, args: dict[str, Any]) -> None:
    assert validate(doc, COMMAND_SCHEMA) == []
    cmd = parse_command(json.dumps(doc).encode())
    assert cmd == Command(id=doc["id"], action=action, args=args)
    assert parse_command(json.dumps(doc)) == cmd  # str payloads too
    with pytest.raises(TypeError):
        cmd.args["flow"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(("payload", "field", "request_id"), INVALID)
def test_invalid_commands_name_the_field(payload: bytes, field: str, request_id: str | None) -> None:
    with pytest.raises(InvalidCommand) as info:
        parse_command(payload)
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.field == field
    assert info.value.request_id == request_id
    assert info.value.reason.startswith(field + ": ")


def test_every_truncated_prefix_is_refused() -> None:
    payload = json.dumps(VALID[1][0]).encode()
    for n in range(len(payload)):
        with pytest.raises(InvalidCommand):
            parse_command(payload[:n])


def test_trailing_garbage_is_refused() -> None:
    payload = json.dumps(VALID[0][0]).encode()
    for tail in (b"x", b"}", b"\x00", b',"a":1}'):
        with pytest.raises(InvalidCommand):
            parse_command(payload + tail)


def test_several_problems_are_counted() -> None:
    with pytest.raises(InvalidCommand) as info:
        parse_command(b'{"id": "r", "action": "x", "y": 1, "z": 2}')
    assert "(and 2 more)" in str(info.value)


def test_schema_is_json_and_lists_every_action() -> None:
    doc = json.loads(json.dumps(dict(COMMAND_SCHEMA)))
    assert doc["properties"]["action"]["enum"] == [a.value for a in Action]
    assert doc["required"] == ["id", "action"]


@given(st.binary(max_size=200))
def test_garbage_bytes_raise_only_invalid_command(data: bytes) -> None:
    try:
        parse_command(data)
    except InvalidCommand as exc:
        assert exc.field.startswith("cmd")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(["id", "action", "args", "x"]), json_values, max_size=4))
def test_random_documents_raise_only_invalid_command(doc: dict[str, Any]) -> None:
    try:
        cmd = parse_command(json.dumps(doc).encode())
    except InvalidCommand:
        assert validate(doc, COMMAND_SCHEMA) != []
    else:
        assert validate(doc, COMMAND_SCHEMA) == []
        assert cmd.id == doc["id"]


@given(
    request_id=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z"),
    action=st.sampled_from(Action),
    flow=st.none() | st.text(min_size=1, max_size=64),
    ts=st.none() | st.integers(0, 2**32 - 1),
)
def test_round_trip(request_id: str, action: Action, flow: str | None, ts: int | None) -> None:
    args: dict[str, Any] = {}
    if flow is not None:
        args["flow"] = flow
    if ts is not None:
        args["rtp_timestamp"] = ts
    doc = {"id": request_id, "action": action.value, "args": args}
    assert parse_command(json.dumps(doc).encode()) == Command(id=request_id, action=action,
                                                               args=args)


def test_docs_show_the_current_schema() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "mqtt.md").read_text()
    block = text.split("Its schema", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(block) == json.loads(json.dumps(dict(COMMAND_SCHEMA)))
