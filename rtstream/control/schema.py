"""The JSON schema of MQTT commands and a small validator for it.

Theory of operation
-------------------
A command arrives on ``rtstream/<node>/cmd`` as one UTF-8 JSON object (docs/mqtt.md)::

    {"id": "req-42", "action": "snapshot", "args": {"flow": "video0"}}

:data:`COMMAND_SCHEMA` is the contract, written as a JSON Schema (draft 2020-12) so that
clients in any language can validate before sending. Inside rtstream it is checked by
:func:`validate`, which implements exactly the keywords the schema uses (``type``,
``properties``, ``required``, ``additionalProperties``, ``enum``, ``pattern``,
``minLength``, ``maxLength``, ``minimum``, ``maximum``, ``exclusiveMinimum``); that keeps
the control plane free of a new dependency. Every number the validator visits must be finite:
RFC 8259 §6 has no NaN or Infinity, which Python's ``json`` accepts (as it turns ``1e999``
into ``inf``), and every comparison with NaN is false, so a range check alone would let it
through. :func:`parse_command` turns a payload into a
:class:`Command` or raises :class:`InvalidCommand` (a
:class:`~rtstream.errors.RemoteProtocolError`) naming the field, with the request id when
one could be read so that the reply can still reach the caller.
"""

from __future__ import annotations

import enum
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from rtstream.errors import RemoteProtocolError

__all__ = [
    "COMMAND_SCHEMA",
    "REQUEST_ID_PATTERN",
    "Action",
    "Command",
    "InvalidCommand",
    "parse_command",
    "validate",
]

#: Request ids become an MQTT topic level (``…/reply/<id>``): no ``/``, ``+``, ``#``.
REQUEST_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"

#: Largest command payload accepted (bytes); anything bigger is refused unparsed.
MAX_COMMAND_BYTES: Final = 16 * 1024


class Action(enum.Enum):
    """What a command asks the node to do (the ``action`` member)."""

    SNAPSHOT = "snapshot"
    RECORD_START = "record_start"
    RECORD_STOP = "record_stop"
    STREAM_START = "stream_start"
    STREAM_STOP = "stream_stop"


#: JSON Schema (draft 2020-12) of a command; documented in docs/mqtt.md.
COMMAND_SCHEMA: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:rtstream:mqtt:command:1",
        "title": "rtstream MQTT command",
        "type": "object",
        "required": ["id", "action"],
        "additionalProperties": False,
        "properties": {
            "id": {
                "type": "string",
                "pattern": REQUEST_ID_PATTERN,
                "description": "request id chosen by the caller; the reply is published "
                "on rtstream/<node>/reply/<id>",
            },
            "action": {"type": "string", "enum": [a.value for a in Action]},
            "args": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "flow": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 64,
                        "description": "SDP a=mid of the flow the action applies to "
                        "(default: the node's first video flow)",
                    },
                    "rtp_timestamp": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": 4294967295,
                        "description": "snapshot: the frame to store (default: latest)",
                    },
                    "stereo": {
                        "type": "boolean",
                        "description": "snapshot: store both views of a stereo rendition "
                        "as one two-frame instance (default: the node's --stereo)",
                    },
                    "max_seconds": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "maximum": 3600,
                        "description": "record_start: stop by itself after this long",
                    },
                    "description": {
                        "type": "string",
                        "maxLength": 64,
                        "description": "snapshot/record_start: free text for the stored "
                        "instance (no patient data)",
                    },
                },
            },
        },
    }
)

_JSON_TYPES: Final[Mapping[str, tuple[type, ...]]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _is_type(value: object, name: str) -> bool:
    # JSON has no distinct bool in numbers: True must not pass as an integer.
    if isinstance(value, bool) and name not in ("boolean",):
        return False
    return isinstance(value, _JSON_TYPES[name])


def validate(instance: object, schema: Mapping[str, Any], path: str = "$") -> list[str]:
    """Check ``instance`` against ``schema``; return the problems found (empty: valid).

    Parameters
    ----------
    instance : object
        A value as ``json.loads`` returns it.
    schema : Mapping
        A schema using only the keywords listed in the module docstring; other keywords
        (``description``, ``title``, ``$id`` ...) are annotations and ignored.
    path : str
        JSONPath-like location used in the messages, e.g. ``$.args.flow``.

    Returns
    -------
    list of str
        One message per problem, each starting with the path at fault.
    """
    return [f"{where}: {what}" for where, what in _check(instance, schema, path)]


def _check(instance: object, schema: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    if isinstance(instance, float) and not math.isfinite(instance):
        # RFC 8259 §6: NaN and Infinity are not JSON numbers (json.loads accepts them).
        return [(path, f"{json.dumps(instance)} is not a finite JSON number")]
    expected = schema.get("type")
    if expected is not None and not _is_type(instance, expected):
        return [(path, f"expected {expected}, got {_json_type_name(instance)}")]
    if "enum" in schema and instance not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in schema["enum"])
        errors.append((path, f"{_short(instance)} is not one of {allowed}"))
    if isinstance(instance, str):
        if "minLength" in schema and len(instance) < schema["minLength"]:
            errors.append((path, f"shorter than {schema['minLength']} characters"))
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errors.append((path, f"longer than {schema['maxLength']} characters"))
        if "pattern" in schema and re.search(schema["pattern"], instance) is None:
            errors.append((path, f"{_short(instance)} does not match {schema['pattern']}"))
    if isinstance(instance, int | float) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append((path, f"{instance} is less than {schema['minimum']}"))
        if "exclusiveMinimum" in schema and instance <= schema["exclusiveMinimum"]:
            errors.append((path, f"{instance} must be greater than {schema['exclusiveMinimum']}"))
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append((path, f"{instance} is greater than {schema['maximum']}"))
    if isinstance(instance, dict):
        props: Mapping[str, Any] = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in instance:
                errors.append((f"{path}.{name}", "required member missing"))
        for name, value in instance.items():
            if name in props:
                errors.extend(_check(value, props[name], f"{path}.{name}"))
            elif schema.get("additionalProperties", True) is False:
                errors.append((f"{path}.{_member(name)}", "unknown member"))
    return errors


def _member(name: str) -> str:
    # A member name as it appears in a field path: printable, short, no separators.
    clean = re.sub(r"[^A-Za-z0-9_.-]", "?", name)
    return clean if len(clean) <= 32 else clean[:29] + "..."


def _json_type_name(value: object) -> str:
    for name in ("boolean", "null", "integer", "number", "string", "array", "object"):
        if _is_type(value, name):
            return name
    return type(value).__name__


def _short(value: object, limit: int = 40) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InvalidCommand(RemoteProtocolError):
    """A command payload that does not follow :data:`COMMAND_SCHEMA`.

    Parameters
    ----------
    field : str
        The member at fault, e.g. ``"cmd.action"``.
    message : str
        What was wrong.
    request_id : str or None
        The command's ``id`` when it could be read and is usable as a topic level, so the
        reply can go to ``…/reply/<id>``; ``None`` otherwise.
    """

    def __init__(self, field: str, message: str, *, request_id: str | None = None) -> None:
        super().__init__(field, message)
        self.request_id = request_id
        self.reason = f"{field}: {message}"


@dataclass(frozen=True, kw_only=True)
class Command:
    """A validated command.

    Attributes
    ----------
    id : str
        The caller's request id (matches :data:`REQUEST_ID_PATTERN`).
    action : Action
        What to do.
    args : Mapping
        The optional arguments, read-only (members listed in :data:`COMMAND_SCHEMA`).
    """

    id: str
    action: Action
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def parse_command(payload: bytes | bytearray | str) -> Command:
    """Decode and validate one command payload.

    Parameters
    ----------
    payload : bytes or str
        The MQTT message body (UTF-8 JSON).

    Returns
    -------
    Command

    Raises
    ------
    InvalidCommand
        For anything that is not a valid command: not UTF-8, not JSON, an integer
        literal over Python's digit limit, not an object, a non-finite number (NaN,
        Infinity, an overflowing literal such as ``1e999``), a schema violation. The message names the member (``cmd.<member>``); the
        exception's ``request_id`` is set when the id itself was valid.
    """
    if len(payload) > MAX_COMMAND_BYTES:
        raise InvalidCommand("cmd", f"payload of {len(payload)} bytes exceeds {MAX_COMMAND_BYTES}")
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes | bytearray) else payload
    except UnicodeDecodeError as exc:
        raise InvalidCommand("cmd", f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidCommand("cmd", f"not JSON ({exc.msg})") from None
    except RecursionError:
        raise InvalidCommand("cmd", "not JSON (nested too deeply)") from None
    except ValueError:
        # int() refuses literals over sys.get_int_max_str_digits() digits (4300 by
        # default) with a plain ValueError, not a JSONDecodeError.
        limit = sys.get_int_max_str_digits()
        raise InvalidCommand("cmd", f"an integer literal exceeds {limit} digits") from None
    if not isinstance(doc, dict):
        raise InvalidCommand("cmd", f"expected a JSON object, got {_json_type_name(doc)}")
    raw_id = doc.get("id")
    request_id = (
        raw_id
        if isinstance(raw_id, str) and re.search(REQUEST_ID_PATTERN, raw_id) is not None
        else None
    )
    problems = _check(doc, COMMAND_SCHEMA, "$")
    if problems:
        where, what = problems[0]
        member = "cmd" + where[1:]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InvalidCommand(member, what + more, request_id=request_id)
    assert request_id is not None  # the schema's pattern guarantees it
    args = doc.get("args", {})
    return Command(id=request_id, action=Action(doc["action"]), args=MappingProxyType(dict(args)))
