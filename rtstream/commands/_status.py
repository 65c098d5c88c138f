"""The live status of a long-running command: one line, for ``send``, ``receive``, ``view``, ``demo``.

On a terminal (``sys.stderr.isatty()``) the line is redrawn in place once a second; else it
is logged as a plain ``status: ...`` line every ``--status-interval`` seconds (default 10;
0 turns it off). Each command gives a function returning its counters now
(:class:`Sample`); rates (frames/s, Mbit/s, packets/s) come from the difference between
two samples. Counters carry no patient data, so the log line is safe at INFO.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TextIO

log = logging.getLogger("rtstream.status")

__all__ = ["Sample", "add_status_argument", "format_status", "running_status", "status_interval"]


@dataclass(frozen=True)
class Sample:
    """Counters of a command at one instant (None: does not apply to this command)."""

    frames: int | None = None
    bytes: int | None = None
    packets: int | None = None
    lost: int | None = None
    late: int | None = None
    queued: int | None = None
    viewers: int | None = None
    recording: str | None = None  # e.g. "rec 42/150"
    legs: str | None = None  # ST 2022-7: e.g. "legs 1+2", "leg 2 DOWN"
    # several streams in one command: frames of each (the line shows each one's rate,
    # "60.0/59.9 fps", not their sum)
    frames_each: tuple[int, ...] | None = None


def seconds_up_to(maximum: float, hint: str) -> Callable[[str], float]:
    """An argparse type: a number of seconds in ``0..maximum``, else ``hint`` in the error."""

    def seconds(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: {hint}")
        return value

    return seconds


def add_status_argument(parser: argparse.ArgumentParser) -> None:
    """``--status-interval S``: 1 s redrawn on a terminal, a log line every 10 s otherwise."""

    parser.add_argument(
        "--status-interval", type=seconds_up_to(86400, "seconds >= 0 (0 = off)"), default=None, metavar="S",
        help="status line every S seconds (default: redrawn each second on a terminal, "
             "a log line every 10 s otherwise; 0 = off)",
    )


def status_interval(value: float | None, stream: TextIO | None = None) -> float:
    """The interval to use: the flag's, or 1 s on a terminal and 10 s elsewhere."""
    if value is not None:
        return value
    return 1.0 if (stream or sys.stderr).isatty() else 10.0


def format_status(now: Sample, before: Sample | None, seconds: float, elapsed: float) -> str:
    """``12.0s | 29.9 fps | 4.1 Mbit/s | lost 0 | late 0 | queued 2 | viewers 1``."""
    parts = [f"{elapsed:.0f}s"]
    dt = seconds if seconds > 0 else 1.0

    def rate(a: int | None, b: int | None) -> float | None:
        if a is None:
            return None
        return max(0, a - (b or 0)) / dt

    prev = before or Sample()
    each = now.frames_each
    if each is not None and len(each) > 1:
        was = prev.frames_each if prev.frames_each and len(prev.frames_each) == len(each) else None
        parts.append("/".join(f"{rate(n, was[i] if was else 0):.1f}" for i, n in enumerate(each))
                     + " fps")
    elif (fps := rate(now.frames, prev.frames if before else 0)) is not None:
        parts.append(f"{fps:.1f} fps")
    mbit = rate(now.bytes, prev.bytes if before else 0)
    if mbit is not None:
        parts.append(f"{mbit * 8 / 1e6:.1f} Mbit/s")
    elif now.packets is not None:
        pps = rate(now.packets, prev.packets if before else 0) or 0.0
        parts.append(f"{pps:.0f} pkt/s")
    for name in ("lost", "late", "queued", "viewers"):
        value = getattr(now, name)
        if value is not None:
            parts.append(f"{name} {value}")
    if now.recording:
        parts.append(now.recording)
    if now.legs:
        parts.append(now.legs)
    return " | ".join(parts)


@contextlib.asynccontextmanager
async def running_status(
    sample: Callable[[], Sample],
    interval: float,
    *,
    stream: TextIO | None = None,
) -> AsyncIterator[None]:
    """Show the status every ``interval`` seconds while the block runs (0: never)."""
    out = stream or sys.stderr
    tty = out.isatty()
    task: asyncio.Task[None] | None = None
    started = time.monotonic()

    async def tick() -> None:
        before: Sample | None = None
        last = started
        while True:
            await asyncio.sleep(interval)
            now_t = time.monotonic()
            try:
                now = sample()
            except Exception as exc:  # noqa: BLE001 - a status line never stops the command
                log.debug("status sample failed: %s", exc)
                continue
            line = format_status(now, before, now_t - last, now_t - started)
            before, last = now, now_t
            if tty:
                out.write("\r" + line + "\x1b[K")
                out.flush()
            else:
                log.info("status: %s", line)

    if interval > 0:
        task = asyncio.get_running_loop().create_task(tick(), name="rtstream-status")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if tty:
                out.write("\n")
                out.flush()
