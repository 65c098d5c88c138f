"""``--analyze MODULE:CALLABLE`` (and its companions) for ``receive`` and ``view``.

The flag names a callable ``fn(frame, context) -> findings`` by import path, as
``python -m`` and entry points do: ``package.module:function`` or
``package.module:object.method``; a path to a ``.py`` file works too
(``examples/bright_band.py:detect``). It is imported before the stream starts, so a bad
spec is a clear error naming the flag, not a failure in the middle of a session.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtstream.control.findings import publish_findings_events
from rtstream.errors import ConfigError
from rtstream.receiver import Receiver, ReceiverConfig
from rtstream.receiver.analysis import LAYOUTS, StoreFindings

__all__ = [
    "AnalysisSpec", "add_analysis_arguments", "analysis_from_args", "load_callable",
    "on_control_plane", "on_viewer",
]


@dataclass(frozen=True)
class AnalysisSpec:
    """What the flags asked for: the callable and how to run it."""

    spec: str
    fn: Any
    layout: str
    store_findings: StoreFindings

    def attach(self, rx: Receiver) -> Receiver:
        """``rx.analyze(...)`` with these settings; returns ``rx`` (for ``async with``)."""
        rx.analyze(self.fn, layout=self.layout, store_findings=self.store_findings)
        return rx

    @staticmethod
    def receiver(cfg: ReceiverConfig, spec: AnalysisSpec | None) -> Receiver:
        """A new :class:`Receiver`, running the analysis ``spec`` asks for (if any)."""
        rx = Receiver(cfg)
        return spec.attach(rx) if spec is not None else rx


def on_viewer(viewer: Any, rx: Receiver) -> None:
    """Send the receiver's finding sets to the pages of ``viewer`` (drawn over their frame)."""
    if rx.analyzer is not None:
        from rtstream.viewer.server import findings_to_viewer

        rx.analyzer.on_findings(findings_to_viewer(viewer))


def on_control_plane(plane: Any, rx: Receiver) -> None:
    """Publish the receiver's finding sets as MQTT ``findings`` events (docs/mqtt.md);
    nothing without an analysis. The subscription ends with the receiver."""
    if rx.analyzer is not None:
        publish_findings_events(plane, rx.analyzer)


def add_analysis_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--analyze``, ``--analyze-layout`` and ``--store-findings``."""
    parser.add_argument(
        "--analyze", metavar="MODULE:CALLABLE",
        help="run fn(frame, context) -> findings on the latest frame, off the media path "
             "(docs/python.md); e.g. examples/bright_band.py:detect")
    parser.add_argument(
        "--analyze-layout", default="rgb24", choices=LAYOUTS,
        help="the frame layout the callable gets (default rgb24: H x W x 3 uint8)")
    parser.add_argument(
        "--store-findings", default=StoreFindings.BOTH.value,
        choices=[w.value for w in StoreFindings],
        help="store a snapshot's findings as a presentation state (ps), a TID 1500 report "
             "(sr), both (default) or none")


def load_callable(spec: str, *, flag: str = "--analyze") -> Any:
    """Import ``MODULE:CALLABLE`` (or ``path/file.py:CALLABLE``) and return the callable.

    Raises
    ------
    ConfigError
        Naming ``flag``, for a malformed spec, a module that does not import, a missing
        attribute or something that is not callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(flag, spec, "MODULE:CALLABLE, e.g. mypkg.detect:find or file.py:find")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ConfigError(flag, spec, f"an existing Python file ({path} not found)")
            name = f"rtstream_analysis_{abs(hash(str(path.resolve())))}"
            mod_spec = importlib.util.spec_from_file_location(name, path)
            if mod_spec is None or mod_spec.loader is None:
                raise ConfigError(flag, spec, f"a Python file ({path} cannot be loaded)")
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the user's module raises on import
        raise ConfigError(flag, spec, f"an importable module ({type(exc).__name__}: {exc})") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(flag, spec, f"a callable: {module_name} has no {attr!r}") from None
    if not callable(obj):
        raise ConfigError(flag, spec, f"a callable ({attr} is a {type(obj).__name__})")
    return obj


def analysis_from_args(args: argparse.Namespace) -> AnalysisSpec | None:
    """The analysis the flags ask for, None without ``--analyze``."""
    spec = getattr(args, "analyze", None)
    if not spec:
        return None
    return AnalysisSpec(
        spec=spec, fn=load_callable(spec), layout=args.analyze_layout,
        store_findings=StoreFindings(args.store_findings),
    )
