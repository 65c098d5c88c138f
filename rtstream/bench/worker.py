"""Benchmark worker processes: an rtstream sender or receiver with a live counter feed.

``python -m rtstream.bench.worker send|recv ...`` runs the library :class:`Sender` or
:class:`Receiver` exactly as an application would, and prints one JSON line to stdout
every ``--status`` seconds (``{"t": monotonic, "frames": ..., ...}``) and a final line
``{"final": {...}}`` when it stops (end of ``--seconds`` or SIGINT/SIGTERM). The harness
(:mod:`rtstream.bench.harness`) reads those lines to count frames in its steady window;
CPU time is read from ``/proc`` by the harness, never by the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _send(args: argparse.Namespace) -> None:
    from rtstream.proto.formats import Sampling
    from rtstream.sender import (
        NetworkConfig,
        Pacing,
        PacingConfig,
        Sender,
        SenderConfig,
        VideoConfig,
    )

    w, h = (int(v) for v in args.size.split("x"))
    cfg = SenderConfig(
        source=f"raw:{args.raw}",
        loop=True,
        duration=args.seconds,
        video=VideoConfig(width=w, height=h, fps=Fraction(args.fps), depth=args.depth,
                          sampling=Sampling.YCBCR_422),
        network=NetworkConfig(dest="127.0.0.1", port=args.port),
        pacing=PacingConfig(mode=Pacing(args.pacing)),
        sdp_out=Path(args.sdp_out) if args.sdp_out else None,
    )
    async with Sender(cfg) as tx:
        stop = asyncio.Event()

        async def status() -> None:
            while not stop.is_set():
                s = tx.stats
                _emit({"t": time.monotonic(), "frames": s.frames, "late": s.late_frames,
                       "packets": s.packets})
                await asyncio.sleep(args.status)

        task = asyncio.create_task(status())
        try:
            await tx.run()
        finally:
            stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            s = tx.stats
            _emit({"t": time.monotonic(), "frames": s.frames, "late": s.late_frames,
                   "packets": s.packets})
            _emit({"final": s.as_dict()})


async def _recv(args: argparse.Namespace) -> None:
    from rtstream.receiver import Receiver, ReceiverConfig

    cfg = ReceiverConfig(sdp=args.sdp, duration=args.seconds, rcvbuf=args.rcvbuf)
    async with Receiver(cfg) as rx:
        stop = asyncio.Event()

        def counters() -> dict[str, Any]:
            frames = rx._delivered_video  # noqa: SLF001 - cheap live counter
            lost = sum(f.depkt.stats.lost for f in rx.video)
            packets = sum(f.packets for f in rx.video)
            seen = sum(f.depkt.stats.frames_complete + f.depkt.stats.frames_incomplete
                       for f in rx.video)
            return {"t": time.monotonic(), "frames": frames, "lost": lost, "packets": packets,
                    "seen": seen}

        async def status() -> None:
            while not stop.is_set():
                _emit(counters())
                await asyncio.sleep(args.status)

        task = asyncio.create_task(status())
        try:
            async for _item in rx:
                pass
        finally:
            stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            _emit(counters())
            stats = rx.stats
            stats.pop("flows", None)
            _emit({"final": stats})


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``send`` or ``recv``; stops cleanly on SIGINT/SIGTERM."""
    p = argparse.ArgumentParser(prog="python -m rtstream.bench.worker")
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("send")
    s.add_argument("--raw", required=True)
    s.add_argument("--size", default="1920x1080")
    s.add_argument("--fps", default="60")
    s.add_argument("--depth", type=int, default=10)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--pacing", default="linear")
    s.add_argument("--sdp-out", default=None)
    r = sub.add_parser("recv")
    r.add_argument("--sdp", required=True)
    r.add_argument("--rcvbuf", type=int, default=32 << 20)
    for q in (s, r):
        q.add_argument("--seconds", type=float, default=3600.0)
        q.add_argument("--status", type=float, default=0.1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    coro = _send(args) if args.role == "send" else _recv(args)

    async def guarded() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(guarded())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
