"""One event-loop timer at the earliest pairing / audio deadline.

Pairers and audio orderers are sans-I/O: they tell when they next need a look
(``next_deadline()``, clock nanoseconds). After every read the receiver asks for the
earliest of those; this arms at most one ``call_later`` for it and re-arms only when a
sooner deadline comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rtstream.proto.clock import Clock

__all__ = ["DeadlineTimer"]


class DeadlineTimer:
    """Calls ``fire()`` once the clock reaches the earliest deadline it was given.

    Parameters
    ----------
    loop : asyncio.AbstractEventLoop
    clock : Clock
        The clock the deadlines are on.
    fire : callable
        Called (on the loop) when the armed deadline is reached.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock,
                 fire: Callable[[], None]) -> None:
        self._loop = loop
        self._clock = clock
        self._fire = fire
        self._timer: asyncio.TimerHandle | None = None
        self._at: int | None = None

    def arm(self, deadline: int | None) -> None:
        """Make sure the timer fires by ``deadline`` (+1 ns); None: nothing to wait for."""
        if deadline is None:
            return
        at = deadline + 1
        if self._timer is not None and self._at is not None and self._at <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, (at - self._clock.now_ns()) / 1e9)
        self._at = at
        self._timer = self._loop.call_later(delay, self._on_timer)

    def cancel(self) -> None:
        """Disarm."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._at = None

    def _on_timer(self) -> None:
        self._timer = None
        self._at = None
        self._fire()
