"""Benchmark worker processes: rtstream senders or receivers with a live counter feed.

``python -m rtstream.bench.worker send|recv ...`` runs the library :class:`Sender` or
:class:`Receiver` exactly as an application would, and prints one JSON line to stdout
every ``--status`` seconds (``{"t": monotonic, "frames": ..., ...}``) and a final line
``{"final": {...}}`` when it stops (end of ``--seconds`` or SIGINT/SIGTERM). The harness
(:mod:`rtstream.bench.harness`) reads those lines to count frames in its steady window;
CPU time is read from ``/proc`` by the harness, never by the worker.

One process can carry several streams on one event loop:

* ``send --streams N`` runs N :class:`Sender` objects; stream ``i`` uses the ports of
  ``--port + 10*i`` (video PORT, metadata PORT+2, so neighbours never collide). Stream
  ``i`` starts ``i/N`` of a frame period after stream 0, so the streams' packetizing and
  bursts interleave instead of piling up at the same instant.
* ``recv --sdp A --sdp B ...`` runs one :class:`Receiver` per SDP.

Status lines carry the sums over the streams (``frames``, ``late``/``lost``, ``packets``)
and the frames of each stream (``frames_each``); the final line carries summed totals and
a ``per_stream`` list.
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
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: port distance between the streams of one ``send --streams N`` process
PORT_STEP = 10

# Totals of SenderStats that add up over streams; the others are per process or per run.
_SUMMED = ("frames", "packets", "bytes", "late_frames", "metadata_grains", "static_parts",
           "audio_packets", "icmp_errors", "dropped")


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def sdp_path(template: str, index: int, streams: int) -> Path:
    """Where stream ``index`` of ``streams`` writes its SDP (``{i}`` is replaced)."""
    if "{i}" in template:
        return Path(template.replace("{i}", str(index)))
    path = Path(template)
    if streams == 1:
        return path
    return path.with_name(f"{path.stem}.{index}{path.suffix}")


def sum_sender_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """One dict of :class:`SenderStats` totals over the streams of a process.

    Counters add up; ``elapsed_s`` and ``cpu_s`` (the process's CPU time, the same for
    every stream of it) are the largest; ``fps`` and ``mbps`` are recomputed from the sums
    (``fps`` is per process: divide by ``streams`` for the rate of one stream).
    """
    out: dict[str, Any] = dict(stats[0])
    for key in _SUMMED:
        out[key] = sum(int(s.get(key) or 0) for s in stats)
    out["elapsed_s"] = max(float(s.get("elapsed_s") or 0.0) for s in stats)
    out["cpu_s"] = max(float(s.get("cpu_s") or 0.0) for s in stats)
    if out["elapsed_s"] > 0:
        out["fps"] = out["frames"] / out["elapsed_s"]
        out["mbps"] = out["bytes"] * 8 / out["elapsed_s"] / 1e6
    out["streams"] = len(stats)
    out["per_stream"] = [
        {"port": s.get("port"), "frames": s.get("frames"), "late_frames": s.get("late_frames"),
         "packets": s.get("packets"), "fps": s.get("fps")}
        for s in stats
    ]
    return out


async def _send(args: argparse.Namespace) -> None:
    from rtstream.proto.formats import Sampling
    from rtstream.sender import (
        NetworkConfig,
        Pacing,
        PacingConfig,
        RedundantConfig,
        Sender,
        SenderConfig,
        VideoConfig,
    )

    w, h = (int(v) for v in args.size.split("x"))
    fps = Fraction(args.fps)
    n = args.streams
    txs: list[Sender] = []
    for i in range(n):
        cfg = SenderConfig(
            source=f"raw:{args.raw}",
            loop=True,
            duration=args.seconds,
            frames=args.frames,
            video=VideoConfig(width=w, height=h, fps=fps, depth=args.depth,
                              sampling=Sampling.YCBCR_422),
            network=NetworkConfig(
                dest="127.0.0.1", port=args.port + PORT_STEP * i,
                redundant=None if args.port2 is None else RedundantConfig(
                    dest="127.0.0.1", port=args.port2 + PORT_STEP * i)),
            pacing=PacingConfig(mode=Pacing(args.pacing)),
            sdp_out=sdp_path(args.sdp_out, i, n) if args.sdp_out else None,
        )
        txs.append(Sender(cfg))

    def counters() -> dict[str, Any]:
        return {"t": time.monotonic(), "frames": sum(t.stats.frames for t in txs),
                "late": sum(t.stats.late_frames for t in txs),
                "packets": sum(t.stats.packets for t in txs),
                "frames_each": [t.stats.frames for t in txs]}

    async def one(i: int, tx: Sender) -> None:
        # Stagger the streams over one frame period (see the module docstring).
        await asyncio.sleep(float(i / (n * fps)))
        await tx.run()

    try:
        async with contextlib.AsyncExitStack() as stack:
            for tx in txs:
                await stack.enter_async_context(tx)
            task = asyncio.create_task(_status_feed(counters, args.status))
            try:
                async with asyncio.TaskGroup() as tg:
                    for i, tx in enumerate(txs):
                        tg.create_task(one(i, tx), name=f"sender {i}")
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                _emit(counters())
    finally:
        # after the senders closed (also when cancelled): their socket counters are in now
        each = []
        for tx in txs:
            d = tx.stats.as_dict()
            d["port"] = tx.cfg.network.port
            each.append(d)
        _emit({"final": sum_sender_stats(each)})


async def _status_feed(counters: Callable[[], dict[str, Any]], every: float) -> None:
    while True:
        _emit(counters())
        await asyncio.sleep(every)


def _rx_counters(rx: Any) -> dict[str, int]:
    """Cheap live counters of one receiver (no percentile work)."""
    return {
        "frames": rx.delivered_video,
        "lost": sum(f.depkt.stats.lost for f in rx.video),
        "packets": sum(f.packets for f in rx.video),
        "seen": sum(f.depkt.stats.frames_complete + f.depkt.stats.frames_incomplete
                    for f in rx.video),
        "placed": sum(f.depkt.stats.placed for f in rx.video),
    }


def sum_receiver_stats(stats: list[dict[str, Any]], sdps: list[str]) -> dict[str, Any]:
    """One dict of receiver totals over the streams of a process.

    Integer counters add up; latency percentiles are the worst stream's (largest).
    """
    out: dict[str, Any] = {}
    for s in stats:
        for key, v in s.items():
            if key == "flows" or isinstance(v, bool):
                continue
            if key.startswith("latency_"):
                if v is not None:
                    out[key] = max(float(v), out.get(key) or 0.0)
                else:
                    out.setdefault(key, None)
            elif isinstance(v, int):
                out[key] = out.get(key, 0) + v
    out["streams"] = len(stats)
    out["per_stream"] = [
        {"sdp": sdp, "frames_delivered": s.get("frames_delivered"),
         "packets": s.get("packets"), "video_packets": s.get("video_packets"),
         "packets_lost": s.get("packets_lost"),
         "frames_incomplete": s.get("frames_incomplete"),
         "latency_p50_us": s.get("latency_p50_us"), "latency_p99_us": s.get("latency_p99_us")}
        for s, sdp in zip(stats, sdps, strict=True)
    ]
    return out


async def _recv(args: argparse.Namespace) -> None:
    from rtstream.receiver import Receiver, ReceiverConfig

    sdps: list[str] = args.sdp
    rxs = [Receiver(ReceiverConfig(sdp=sdp, duration=args.seconds, rcvbuf=args.rcvbuf,
                                   dup_kernel_filter=not args.no_dup_kernel_filter))
           for sdp in sdps]

    def counters() -> dict[str, Any]:
        each = [_rx_counters(rx) for rx in rxs]
        out: dict[str, Any] = {"t": time.monotonic()}
        for key in ("frames", "lost", "packets", "seen", "placed"):
            out[key] = sum(c[key] for c in each)
        out["frames_each"] = [c["frames"] for c in each]
        return out

    async def consume(rx: Receiver) -> None:
        async for _item in rx:
            pass

    async with contextlib.AsyncExitStack() as stack:
        for rx in rxs:
            await stack.enter_async_context(rx)
            for flow in rx.video:
                flow.split = not args.no_split
        task = asyncio.create_task(_status_feed(counters, args.status))
        try:
            async with asyncio.TaskGroup() as tg:
                for i, rx in enumerate(rxs):
                    tg.create_task(consume(rx), name=f"receiver {i}")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            _emit(counters())
            stats = [rx.stats for rx in rxs]
            for st in stats:
                st["video_packets"] = sum(int(f["packets"]) for f in st["flows"].values()
                                          if f["kind"] == "video")
                # ST 2022-7 copies the kernel filter dropped: socket drops to the kernel too
                st["filtered_buffers"] = sum(int(leg["filtered_buffers"])
                                             for f in st["flows"].values()
                                             for leg in f.get("legs", ()))
            if len(stats) == 1:
                final = stats[0]
                final.pop("flows", None)
                final["streams"] = 1
            else:
                final = sum_receiver_stats(stats, sdps)
            _emit({"final": final})


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``send`` or ``recv``; stops cleanly on SIGINT/SIGTERM."""
    p = argparse.ArgumentParser(prog="python -m rtstream.bench.worker")
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("send")
    s.add_argument("--raw", required=True)
    s.add_argument("--size", default="1920x1080")
    s.add_argument("--fps", default="60")
    s.add_argument("--depth", type=int, default=10)
    s.add_argument("--port", type=int, required=True,
                   help=f"base port; stream i uses PORT + {PORT_STEP}*i")
    s.add_argument("--port2", type=int, default=None,
                   help="ST 2022-7: also send every flow to this base port (second leg)")
    s.add_argument("--streams", type=int, default=1,
                   help="senders in this process, one event loop (default 1)")
    s.add_argument("--frames", type=int, default=None,
                   help="stop each stream after this many frames")
    s.add_argument("--pacing", default="linear")
    s.add_argument("--sdp-out", default=None,
                   help="write each stream's SDP; '{i}' is replaced by the stream index "
                        "(else '.i' goes before the suffix when there are several)")
    r = sub.add_parser("recv")
    r.add_argument("--sdp", required=True, action="append",
                   help="SDP of a stream to receive; repeat for several in one process")
    r.add_argument("--rcvbuf", type=int, default=None,
                   help="SO_RCVBUF per socket (default: the receiver's own)")
    r.add_argument("--no-split", action="store_true",
                   help="read video with the copying path only (no split reads into the "
                        "frame), to compare the two")
    r.add_argument("--no-dup-kernel-filter", action="store_true",
                   help="ST 2022-7: drop every copy in the merge, none in the kernel")
    for q in (s, r):
        q.add_argument("--seconds", type=float, default=3600.0)
        q.add_argument("--status", type=float, default=0.1)
    args = p.parse_args(argv)
    if args.role == "send" and not 1 <= args.streams <= 64:
        p.error("--streams: 1..64")
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
