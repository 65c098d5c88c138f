"""TOML configuration into frozen dataclasses, with command-line overrides.

A configuration file is a TOML document whose tables mirror nested keyword-only
dataclasses (``[video]`` fills the ``video`` field, and so on). :func:`from_mapping`
builds the dataclass tree, converting TOML values to the annotated field types (``int``,
``float``, ``str``, ``bool``, :class:`~pathlib.Path`, :class:`~fractions.Fraction`, enums,
nested dataclasses, ``X | None``); an unknown key, a wrong type or a value the
dataclass's own ``__post_init__`` rejects raises :class:`~rtstream.errors.ConfigError`
naming the dotted key, the value and what is allowed. :func:`merge` lays flag values over
the file's, so flags override.
"""

from __future__ import annotations

import dataclasses
import enum
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


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` over ``base``; None values in ``override`` are ignored."""
    out: dict[str, Any] = dict(base)
    for key, value in override.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            prev = out.get(key)
            out[key] = merge(prev if isinstance(prev, Mapping) else {}, value)
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
            allowed = ", ".join(sorted(k for k, f in fields.items() if f.init))
            raise ConfigError(f"{prefix}{key}", value, f"a known key ({allowed})")
        kwargs[key] = convert(hints[key], value, f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(prefix.rstrip(".") or cls.__name__, dict(data), str(exc)) from None


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
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(key, value, "an integer")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(key, value, "a number") from None
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
