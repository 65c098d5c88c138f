"""Delivery to the consumer: a bounded queue, back-pressure by dropping, frame latency.

The readers push items on the event loop; ``async for item in rx`` takes them in order.
A consumer that falls behind by more than ``queue_size`` items loses the oldest ones
(counted in ``consumer_drops``): the sockets are never left unread because of it. The
latency of each delivered video frame (last datagram read -> handed to the consumer) goes
to a ring of the last 65,536, read by the stats and the metrics exporter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

import numpy as np

from rtstream.proto.clock import Clock
from rtstream.receiver.items import ItemKind, ReceivedItem

__all__ = ["ItemQueue"]


class ItemQueue:
    """The consumer's queue of :class:`ReceivedItem`, and what it counts.

    Parameters
    ----------
    queue_size : int
        Items kept for a slow consumer; beyond it the oldest are dropped.
    frames : int or None
        Stop after this many video items were delivered.
    clock : Clock
        Stamps ``delivered_ns``.
    """

    def __init__(self, *, queue_size: int, frames: int | None, clock: Clock) -> None:
        self.queue_size = queue_size
        self.frames = frames
        self.clock = clock
        self.deadline: float | None = None  # time.monotonic() at which iteration ends
        self.delivered_video = 0
        self.delivered_audio = 0
        self.consumer_drops = 0
        self._items: deque[ReceivedItem] = deque()
        self._wake = asyncio.Event()
        self._errors: list[BaseException] = []
        self._closed = False
        self._latency = np.zeros(1 << 16, np.int64)
        self._latency_n = 0

    # -- producer side ----------------------------------------------------------------

    def push(self, item: ReceivedItem) -> None:
        """Queue ``item``; drop the oldest beyond ``queue_size``."""
        self._items.append(item)
        while len(self._items) > self.queue_size:
            self._items.popleft()
            self.consumer_drops += 1
        self._wake.set()

    def fail(self, exc: BaseException) -> None:
        """Raise ``exc`` to the consumer at its next item."""
        self._errors.append(exc)
        self._wake.set()

    def wake(self) -> None:
        """Let a waiting consumer look again (the deadline may have passed)."""
        self._wake.set()

    def close(self) -> None:
        """End iteration once the queue is empty."""
        self._closed = True
        self._wake.set()

    # -- consumer side ----------------------------------------------------------------

    def limit_reached(self) -> bool:
        """``frames`` delivered, or the deadline passed."""
        if self.frames is not None and self.delivered_video >= self.frames:
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    async def get(self) -> ReceivedItem:
        """The next item (waiting for it); ``StopAsyncIteration`` at the end."""
        while True:
            if self.limit_reached():
                raise StopAsyncIteration
            if self._errors:
                raise self._errors.pop(0)
            if self._items:
                item = self._items.popleft()
                now = self.clock.now_ns()
                item.delivered_ns = now
                if item.kind is ItemKind.VIDEO:
                    self.delivered_video += 1
                    self._latency[self._latency_n % len(self._latency)] = now - item.received_ns
                    self._latency_n += 1
                else:
                    self.delivered_audio += 1
                return item
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            timeout = None
            if self.deadline is not None:
                timeout = max(0.0, self.deadline - time.monotonic())
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the inner
            # result when a wake and a cancel land in the same loop iteration, swallowing
            # the cancel (Ctrl-C ignored until --duration ran out, on a busy machine).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def take_queued(self) -> list[ReceivedItem]:
        """Remove and return what is queued now, without waiting (not counted delivered)."""
        items = list(self._items)
        self._items.clear()
        return items

    # -- latency ----------------------------------------------------------------------

    def latencies(self) -> np.ndarray:
        """Latencies (ns) of the video items delivered, as far as the ring holds them."""
        n = min(self._latency_n, len(self._latency))
        return self._latency[:n]

    def latencies_since(self, seen: int) -> tuple[np.ndarray, int]:
        """Latencies (ns) of the video items delivered after the first ``seen``, as far as
        the ring still holds them, and the new total to pass next time."""
        total = self._latency_n
        fresh = min(total - seen, len(self._latency)) if seen <= total else min(
            total, len(self._latency))
        if fresh <= 0:
            return np.zeros(0, np.int64), total
        idx = np.arange(total - fresh, total) % len(self._latency)
        return self._latency[idx], total
