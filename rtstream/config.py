"""TOML configuration into frozen dataclasses, with command-line overrides.

A configuration file is a TOML document whose tables mirror nested keyword-only
dataclasses (``[video]`` fills the ``video`` field, and so on). :func:`from_mapping`
builds the dataclass tree, converting TOML values to the annotated field types (``int``,
``float``, ``str``, ``bool``, :class:`~pathlib.Path`, :class:`~fractions.Fraction`, enums,
nested dataclasses, ``X | None``); an unknown key, a wrong type or a value the
dataclass's own ``__post_init__`` rejects raises :class:`~rtstream.errors.ConfigError`
naming the dotted key, the value and what is allowed, with an example of the right type
(an unknown key also gets the nearest known one). Values are never coerced from strings:
``width = "1280"`` is an error, as is a table key given as a plain value. A dataclass
may accept a one-line text form of a table, as its command-line flag does, by mapping the
field name to a parser in a class attribute ``config_text_forms`` (``video =
"1280x720@30"`` like ``--video 1280x720@30``). :func:`merge` lays flag values over the
file's, so flags override.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from rtstream.errors import ConfigError

T = TypeVar("T")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing file or a syntax error is a :class:`ConfigError`."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("--config", str(p), "an existing TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", str(p), f"valid TOML ({exc})") from None


_SIZE_RATE = re.compile(r"^(?:(\d+)x(\d+))?(?:@(\d+(?:\.\d+)?(?:/\d+)?))?$")


def parse_size_rate(text: str, key: str = "--video") -> dict[str, Any]:
    """``WxH@FPS`` (either part optional) -> ``{"width", "height", "fps"}``.

    The one spelling of ``--video`` and of the TOML ``video = "1280x720@30"``.
    """
    m = _SIZE_RATE.match(text.strip())
    if not m or not text.strip():
        raise ConfigError(key, text, "WxH@FPS like 1920x1080@60, 1280x720@60000/1001 or 640x480"
                          " (or a [video] table with width, height, fps)")
    out: dict[str, Any] = {}
    if m.group(1):
        out["width"] = int(m.group(1))
        out["height"] = int(m.group(2))
    if m.group(3):
        try:
            out["fps"] = Fraction(m.group(3))
        except (ValueError, ZeroDivisionError):
            raise ConfigError(key, text, "a positive frame rate after '@'") from None
    return out


def expand_text_forms(cls: type, data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``data`` with the one-line text forms of ``cls``'s tables (``config_text_forms``) expanded.

    Call it on a file's data before :func:`merge`, so flags that set one key of the table
    (``--depth``) keep the others the text gave.
    """
    forms = getattr(cls, "config_text_forms", {})
    out = dict(data)
    for key, parse in forms.items():
        if isinstance(out.get(key), str):
            out[key] = parse(out[key], f"{prefix}{key}")
    return out


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` over ``base``; None values in ``override`` are ignored."""
    out: dict[str, Any] = dict(base)
    for key, value in override.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            prev = out.get(key)
            sub = merge(prev if isinstance(prev, Mapping) else {}, value)
            if prev is not None and not isinstance(prev, Mapping) and not sub:
                continue  # flags left it alone: the file's value stays, to be checked
            out[key] = sub
        else:
            out[key] = value
    return out


def from_mapping(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data`` (a TOML table), recursively.

    Raises
    ------
    ConfigError
        For an unknown key, a value of the wrong type, or one ``cls`` rejects.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(prefix.rstrip(".") or "config", data, "a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields or not fields[key].init:
            known = sorted(k for k, f in fields.items() if f.init)
            near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ConfigError(f"{prefix}{key}", value, f"a known key ({hint}known: {', '.join(known)})")
        text_form = getattr(cls, "config_text_forms", {}).get(key)
        if isinstance(value, str) and text_form is not None:
            value = text_form(value, f"{prefix}{key}")
        try:
            kwargs[key] = convert(hints[key], value, f"{prefix}{key}")
        except ConfigError as exc:
            if exc.key != f"{prefix}{key}" or ", e.g. " in exc.allowed:
                raise
            example = _example(fields[key], hints[key])
            if example is None:
                raise
            raise ConfigError(exc.key, exc.value, f"{exc.allowed}, e.g. {key} = {example}") from None
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(prefix.rstrip(".") or cls.__name__, dict(data), str(exc)) from None


def _toml(value: Any) -> str | None:
    """``value`` written as a TOML value, or None when it has no plain TOML form."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, enum.Enum):
        return _toml(value.value)
    if isinstance(value, str | Path):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Fraction):
        return str(value) if value.denominator == 1 else f'"{value}"'
    return None


_EXAMPLES: dict[Any, str] = {int: "1", float: "1.5", str: '"text"', bool: "true",
                             Path: '"path/to/file"', Fraction: '"60000/1001"'}


def _example(f: dataclasses.Field[Any], tp: Any) -> str | None:
    """A TOML value of field ``f`` for an error message: its default, else one of its type."""
    if f.default is not dataclasses.MISSING and f.default is not None:
        shown = _toml(f.default)
        if shown is not None:
            return shown
    if dataclasses.is_dataclass(tp):
        return None  # tables explain themselves ("a table")
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    for a in args:
        if a in _EXAMPLES:
            return _EXAMPLES[a]
        if isinstance(a, type) and issubclass(a, enum.Enum):
            return _toml(next(iter(a)))
    return None


def convert(tp: Any, value: Any, key: str) -> Any:
    """Convert one TOML value to annotated type ``tp`` (see module docstring)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return convert(a, value, key)
            except ConfigError as exc:
                errors.append(exc.allowed)
        raise ConfigError(key, value, " or ".join(errors))
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(key, value, "a list")
        inner = args[0] if args else Any
        items = [convert(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        return from_mapping(tp, value, f"{key}.")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        for member in tp:
            if value == member.value or (isinstance(value, str) and value.lower() == member.name.lower()):
                return member
        raise ConfigError(key, value, "one of " + ", ".join(repr(m.value) for m in tp))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, value, "true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, value, "an integer (no quotes)" if isinstance(value, str)
                          else "an integer")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(key, value, "a number (no quotes)" if isinstance(value, str)
                          else "a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, value, "a string")
    if tp is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise ConfigError(key, value, "a path string")
    if tp is Fraction:
        try:
            if isinstance(value, float):
                return Fraction(value).limit_denominator(1001)
            return Fraction(value)
        except (TypeError, ValueError, ZeroDivisionError):
            raise ConfigError(key, value, "a number or a ratio like 60000/1001") from None
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ConfigError(key, value, f"a {tp.__name__}")
    return value
