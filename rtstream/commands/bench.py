"""``rtstream bench``: measure the CPU cost of rtstream's data path."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

HELP = "measure the data path, alone (wire) or next to GStreamer and FFmpeg (all)"
DESCRIPTION = """Measure rtstream's data path.

  rtstream bench wire [--frames N] [--json FILE]
  rtstream bench dup [--json FILE] [--seconds S]
  rtstream bench all [--json FILE] [--plot DIR] [--doc FILE] [--seconds S]
                     [--uhd-seconds S] [--max-streams N] [--repeat R]
                     [--scale-tx one|each|K] [--scale-rx one|each|K]

wire: RFC 4175 packetize and depacketize of 1080p 4:2:2 8- and 10-bit frames, in-process
      CPU time (time.process_time).
all:  rtstream's sender and receiver as processes next to GStreamer (rtpvrawpay /
      rtpvrawdepay) and FFmpeg (-f rtp / SDP input) on the same prepared 1080p60 4:2:2
      8- and 10-bit frames in the same run: CPU per frame (per process, /proc), fps,
      packets/s, loss, late frames, frame-ready latency and the ratio rtstream / peer;
      then 1, 2, 4, ... concurrent 10-bit streams, all sent and received on this
      machine, until loss or lateness, then the counts between the last clean one and
      the first that failed (by default one sender process drives them all
      and one receiver process takes them all). See docs/performance.md for the method.
dup:  SMPTE ST 2022-7: one rtstream sender on two legs; receiver CPU per frame of the
      rtstream receiver on one leg and merging both, and of GStreamer on one leg and
      with two udpsrc -> funnel -> rtpjitterbuffer (the usual stand-in), same run.
"""


def _wire(args: argparse.Namespace) -> dict[str, Any]:
    from rtstream.bench.wire import run_wire

    return run_wire(frames=args.frames)


def _print_wire(result: dict[str, Any]) -> None:
    # one line per format (every sampling x depth pair), one column per metric
    cases = list(dict.fromkeys(c for metric in result.values() for c in metric))
    metrics = list(result)
    short = [m.removesuffix("_per_frame") for m in metrics]
    header = f"{'format':<14}" + "".join(f"{m:>20}" for m in short)
    print(header)
    print("-" * len(header))
    for c in cases:
        print(f"{c:<14}" + "".join(f"{result[m].get(c, float('nan')):>20.3f}" for m in metrics))


def _all(args: argparse.Namespace) -> dict[str, Any]:
    from rtstream.bench.harness import BenchConfig, parse_procs, run_all

    w, _, h = args.size.partition("x")
    cfg = BenchConfig(
        seconds=args.seconds, warmup=args.warmup, width=int(w), height=int(h), fps=args.fps,
        depths=tuple(int(d) for d in args.depths.split(",")), max_streams=args.max_streams,
        repeat=args.repeat, tools=tuple(args.tools.split(",")),
        scale_senders=parse_procs(args.scale_tx, "--scale-tx"),
        scale_receivers=parse_procs(args.scale_rx, "--scale-rx"),
        uhd_seconds=args.uhd_seconds,
    )
    result = run_all(cfg, work=args.workdir)
    if args.plot is not None:
        from rtstream.bench.report import plot

        result["plots"] = [str(p) for p in plot(result, args.plot)]
    if args.doc is not None:
        from rtstream.bench.report import write_doc

        write_doc(result, args.doc, args.plot)
    return result


def _dup(args: argparse.Namespace) -> dict[str, Any]:
    from rtstream.bench.dup import run_dup
    from rtstream.bench.harness import BenchConfig

    w, _, h = args.size.partition("x")
    cfg = BenchConfig(seconds=args.seconds, warmup=args.warmup, width=int(w), height=int(h),
                      fps=args.fps, depths=(10,), max_streams=0)
    return run_dup(cfg, work=args.workdir)


def _print_dup(result: dict[str, Any]) -> None:
    from rtstream.bench.dup import table

    print(table(result))


def _print_all(result: dict[str, Any]) -> None:
    from rtstream.bench.report import table

    print(table(result))


#: what -> (runner, table printer); other benchmarks register here.
BENCHMARKS: dict[str, tuple[Callable[[argparse.Namespace], dict[str, Any]],
                            Callable[[dict[str, Any]], None]]] = {
    "wire": (_wire, _print_wire),
    "all": (_all, _print_all),
    "dup": (_dup, _print_dup),
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the bench arguments."""
    parser.add_argument("what", choices=sorted(BENCHMARKS), help="which benchmark to run")
    parser.add_argument("--frames", type=int, default=30, help="frames per case (default 30)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write the results as JSON to FILE")
    parser.add_argument("--plot", type=Path, default=None, metavar="DIR",
                        help="all: write PNG plots into DIR")
    parser.add_argument("--doc", type=Path, default=None, metavar="FILE",
                        help="all: (re)write the performance document FILE (markdown)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="all: steady window per run in seconds (default 10)")
    parser.add_argument("--uhd-seconds", type=float, default=None, metavar="S",
                        help="all: steady window of the 2160p case (default: --seconds)")
    parser.add_argument("--max-streams", type=int, default=8,
                        help="all: most concurrent 10-bit streams to try (default 8, 0 skips)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="all: repeat the matrix R times and report medians (default 1)")
    parser.add_argument("--scale-tx", default="one", metavar="one|each|K",
                        help="all: scaling run's sender processes: one for all streams "
                             "(default), one per stream, or K sharing them")
    parser.add_argument("--scale-rx", default="one", metavar="one|each|K",
                        help="all: scaling run's receiver processes: one for all streams "
                             "(default), one per stream, or K sharing them")
    # Hidden knobs for testing the harness itself in a tiny configuration.
    parser.add_argument("--warmup", type=float, default=3.0, help=argparse.SUPPRESS)
    parser.add_argument("--size", default="1920x1080", help=argparse.SUPPRESS)
    parser.add_argument("--fps", type=int, default=60, help=argparse.SUPPRESS)
    parser.add_argument("--depths", default="8,10", help=argparse.SUPPRESS)
    parser.add_argument("--tools", default="rtstream,gstreamer,ffmpeg", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark, print a table, optionally write JSON."""
    from rtstream.errors import ConfigError

    if args.frames < 1:
        raise ConfigError("--frames", args.frames, "a positive number of frames")
    runner, printer = BENCHMARKS[args.what]
    result = runner(args)
    printer(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0
