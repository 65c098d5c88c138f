"""``rtstream bench``: measure the CPU cost of rtstream's data path."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

HELP = "measure the CPU cost of the data path (wire packetize/depacketize)"
DESCRIPTION = """Measure rtstream's data path in-process with CPU time (time.process_time).

  rtstream bench wire [--frames N] [--json FILE]

wire: RFC 4175 packetize and depacketize of 1080p 4:2:2 8- and 10-bit frames.
"""


def _wire(args: argparse.Namespace) -> dict[str, Any]:
    from rtstream.bench.wire import run_wire

    return run_wire(frames=args.frames)


def _print_wire(result: dict[str, Any]) -> None:
    cases = sorted({c for metric in result.values() for c in metric})
    header = f"{'metric':<28}" + "".join(f"{c:>16}" for c in cases)
    print(header)
    print("-" * len(header))
    for metric, values in result.items():
        print(f"{metric:<28}" + "".join(f"{values.get(c, float('nan')):>16.3f}" for c in cases))


#: what -> (runner, table printer); other benchmarks register here.
BENCHMARKS: dict[str, tuple[Callable[[argparse.Namespace], dict[str, Any]],
                            Callable[[dict[str, Any]], None]]] = {
    "wire": (_wire, _print_wire),
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the bench arguments."""
    parser.add_argument("what", choices=sorted(BENCHMARKS), help="which benchmark to run")
    parser.add_argument("--frames", type=int, default=30, help="frames per case (default 30)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write the results as JSON to FILE")


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark, print a table, optionally write JSON."""
    from rtstream.errors import ConfigError

    if args.frames < 1:
        raise ConfigError("--frames", args.frames, "a positive number of frames")
    runner, printer = BENCHMARKS[args.what]
    result = runner(args)
    printer(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0
