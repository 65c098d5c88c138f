"""The ``rtstream`` command line.

Each subcommand is a module of :mod:`rtstream.commands` exposing ``HELP`` (one line),
``configure(parser)`` and ``run(args) -> int``; this file only wires them together, so
adding a command never touches it.

Logging goes to stderr, as text lines or, with ``--log-format json`` (or the environment
variable ``RTSTREAM_LOG_FORMAT=json``), as one JSON object per line (``ts``, ``level``,
``logger``, ``msg`` and any extra fields; :class:`rtstream.control.observe.JsonLogFormatter`),
for log shippers. In JSON mode the errors that end a command are logged the same way.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import pkgutil
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import rtstream
import rtstream.commands
from rtstream.errors import ConfigError, RtstreamError

log = logging.getLogger("rtstream")


_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class _Parser(argparse.ArgumentParser):
    """An argument parser that suggests the nearest command, flag or choice on a typo.

    Long flags must be spelled out (``allow_abbrev=False``): an abbreviation such as
    ``--vide`` is an unknown flag with a suggestion, never silently ``--video``.
    """

    #: the words being parsed, set by :func:`main`: a "required" error may hide a typo
    argv: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        super().error(message + self._did_you_mean(message))

    def _did_you_mean(self, message: str) -> str:
        m = _INVALID_CHOICE.search(message)
        if m:
            choices = [c.strip().strip("'") for c in m.group(2).split(",")]
            near = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.5)
            return f"; did you mean {near[0]!r}?" if near else ""
        words: list[str] = []
        if message.startswith("unrecognized arguments:"):
            words = message.split(":", 1)[1].split()
        elif "required" in message:  # `view --test-patern`: say the typo, not only what is missing
            known = set(self._option_string_actions)
            words = [w for w in _Parser.argv if w.startswith("--") and w.split("=", 1)[0] not in known]
            words = [w for w in words if w.split("=", 1)[0] not in ("--log-level", "--log-format")]
        if words:
            flags = [f for f in self._option_string_actions if f.startswith("--")]
            hints = []
            for word in words:
                if not word.startswith("-"):
                    continue
                name = word.split("=", 1)[0]
                near = difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
                starts = [f for f in flags if f.startswith(name)] if len(name) > 2 else []
                if near or starts:
                    hints.append((name, (near or starts)[0]))
            if len(hints) == 1:
                return f"; did you mean {hints[0][1]}? (long flags are never abbreviated)"
            if hints:
                said = ", ".join(f"{good} for {bad}" for bad, good in hints)
                return f"; did you mean {said}? (long flags are never abbreviated)"
        return ""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command module."""
    parser = _Parser(
        prog="rtstream",
        description="Real-time DICOM PS3.22 (DICOM-RTV) streaming: send, receive, view and "
        "archive live medical video with its DICOM identity.",
    )
    parser.add_argument("--version", action="version", version=f"rtstream {rtstream.__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging threshold (patient data is never logged at INFO or above)",
    )
    parser.add_argument(
        "--log-format",
        default=os.environ.get("RTSTREAM_LOG_FORMAT", "text"),
        choices=["text", "json"],
        help="log lines on stderr as text or as one JSON object per line "
        "(default text, or $RTSTREAM_LOG_FORMAT)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(rtstream.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # helpers shared by the commands (_mqtt_args, _tls_args)
            continue
        mod = importlib.import_module(f"rtstream.commands.{info.name}")
        name = getattr(mod, "NAME", info.name)
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        mod.configure(p)
        p.set_defaults(_run=mod.run, _parser=p)  # _parser: for errors in its own words
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    from rtstream.control.observe import LOG_FORMATS, configure_logging

    parser = build_parser()
    _Parser.argv = tuple(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra:  # say it as the command's own parser, which knows the flags to suggest
        sub: argparse.ArgumentParser = getattr(args, "_parser", parser)
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.log_format not in LOG_FORMATS:  # a bad $RTSTREAM_LOG_FORMAT
        parser.error(f"--log-format: {args.log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    configure_logging(args.log_level, args.log_format)
    as_json = args.log_format == "json"
    try:
        rc: int = args._run(args)
    except ConfigError as exc:
        _fail(as_json, args.command, f"rtstream {args.command}: {exc}", 2)
        return 2
    except RtstreamError as exc:
        _fail(as_json, args.command, f"rtstream {args.command}: error: {exc}", 1)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception:
        if not as_json:
            raise
        log.exception("rtstream %s: unexpected error", args.command,
                      extra={"command": args.command, "exit_status": 1})
        return 1
    return rc


def _fail(as_json: bool, command: str, text: str, status: int) -> None:
    """Say why the command stopped: a plain line, or a JSON log record in JSON mode."""
    if as_json:
        log.error("%s", text, extra={"command": command, "exit_status": status})
    else:
        print(text, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
