"""The ``rtstream`` command line.

Each subcommand is a module of :mod:`rtstream.commands` exposing ``HELP`` (one line),
``configure(parser)`` and ``run(args) -> int``; this file only wires them together, so
adding a command never touches it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

import rtstream
import rtstream.commands
from rtstream.errors import ConfigError, RtstreamError

log = logging.getLogger("rtstream")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command module."""
    parser = argparse.ArgumentParser(
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(rtstream.commands.__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"rtstream.commands.{info.name}")
        name = getattr(mod, "NAME", info.name)
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.configure(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        rc: int = args._run(args)
    except ConfigError as exc:
        print(f"rtstream {args.command}: {exc}", file=sys.stderr)
        return 2
    except RtstreamError as exc:
        print(f"rtstream {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
