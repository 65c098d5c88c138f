"""Stopping a long-running command: the first signal drains, a second one leaves at once.

Theory of operation
-------------------
``SIGINT``/``SIGTERM`` the first time call the command's ``on_stop`` (media stops at once:
the receiver's item stream ends, the sender stops, the viewer closes); the command then
leaves its ``async with`` blocks, which give the outbox at most ``--flush-timeout`` seconds
to drain, and prints :func:`queued_line`. A second signal prints the same line and ends the
process at once with status 130 (``os._exit``: no thread, association or flush is waited
for). Nothing is lost either way: every instance was made durable in the outbox before it
was queued (:class:`rtstream.pacs.store.Outbox`) and is sent at the next start; one that
was on the wire when we left is sent again once, and the archive keeps its first copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["Stopper", "add_flush_argument", "echo_archive", "exit_promptly", "queued_line"]

#: Status of a process ended by a second signal (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def add_flush_argument(parser: Any) -> None:
    """``--flush-timeout S``: the most seconds the outbox gets to drain at exit."""

    from rtstream.commands._status import seconds_up_to

    parser.add_argument(
        "--flush-timeout", type=seconds_up_to(3600, "seconds, 0..3600"), default=5.0, metavar="S",
        help="at exit, give the outbox at most S seconds to drain (default 5); what is "
             "left stays queued on disk and is sent at the next start",
    )


def queued_count(outbox: Path) -> int:
    """Instances waiting in ``outbox`` (``failed/`` not counted)."""
    try:
        return sum(1 for _ in outbox.glob("*.dcm"))
    except OSError:
        return 0


def queued_line(command: str, outbox: Path) -> str:
    """``rtstream receive: 3 instance(s) stay queued in DIR; the next start sends them``."""
    n = queued_count(outbox)
    if n == 0:
        return f"rtstream {command}: nothing stays queued in {outbox}, every instance was stored"
    return (f"rtstream {command}: {n} instance(s) stay queued in {outbox}; "
            f"the next start sends them")


async def echo_archive(command: str, client: Any) -> None:
    """C-ECHO the store client's archive; one line on stderr when it does not answer."""
    if client is None or client.cfg.save_dir is not None:
        return
    error = await client.echo()
    if error is not None:
        cfg = client.cfg
        print(f"rtstream {command}: PACS {cfg.called_aet} at {cfg.host}:{cfg.port} does not "
              f"answer C-ECHO ({error}); instances stay queued in {cfg.outbox} until it does",
              file=sys.stderr, flush=True)


class Stopper:
    """Signal handling of one command, installed on the running loop by ``with``.

    Parameters
    ----------
    command : str
        The command's name, for the lines it prints.
    on_stop : callable
        Called on the event loop at the first signal: stop media now.
    outbox : Path or None
        The outbox, when the command stores instances (for the second signal's line).
    last_words : callable or None
        Called before a second signal ends the process (quick: e.g. ``--stats-json``).
    """

    def __init__(
        self, command: str, on_stop: Callable[[], object], outbox: Path | None = None,
        *, last_words: Callable[[], object] | None = None,
    ) -> None:
        self.command = command
        self.on_stop = on_stop
        self.outbox = outbox
        self.last_words = last_words
        self.stopping = False
        self._installed: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> Stopper:
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.add_signal_handler(sig, self._signal, sig)
                self._installed.append(sig)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Handlers stay until the flush is over; afterwards a signal is Python's default
        # (KeyboardInterrupt, status 130 from the CLI) for the last few lines.
        assert self._loop is not None
        for sig in self._installed:
            with contextlib.suppress(Exception):
                self._loop.remove_signal_handler(sig)
        self._installed.clear()

    def _signal(self, sig: int) -> None:
        if self.stopping:
            self.exit_now()
        self.stopping = True
        log.info("%s: stopping (signal %d); a second signal stops at once",
                 self.command, sig)
        self.on_stop()

    def exit_now(self) -> None:
        """Print what stays queued and end the process now, status 130."""
        if self.last_words is not None:
            with contextlib.suppress(Exception):
                self.last_words()
        with contextlib.suppress(Exception):
            if self.outbox is not None:
                print(queued_line(self.command, self.outbox), file=sys.stderr)
            else:
                print(f"rtstream {self.command}: stopped at once", file=sys.stderr)
            sys.stderr.flush()
            sys.stdout.flush()
        os._exit(EXIT_INTERRUPTED)


#: Our worker threads (store, builds, dumps) and asyncio's default executor's.
_WORKER_PREFIXES = ("rtstream-", "asyncio_")


def exit_promptly(rc: int, grace: float = 0.5) -> int:
    """Return ``rc``, or end the process with it now when a worker thread is stuck.

    The interpreter joins every executor thread at exit: a store thread still waiting on
    an archive that accepted TCP but never answers would hold the exit for its ACSE or
    DIMSE timeout (10-60 s) after ``--flush-timeout`` was over. Its instance is durable
    in the outbox, so after ``grace`` seconds the process leaves without it.
    """
    me = threading.current_thread()

    def busy() -> list[threading.Thread]:
        return [t for t in threading.enumerate()
                if t is not me and not t.daemon and t.is_alive()
                and t.name.startswith(_WORKER_PREFIXES)]

    deadline = time.monotonic() + grace
    for t in busy():
        t.join(max(0.0, deadline - time.monotonic()))
    left = busy()
    if not left:
        return rc
    log.info("leaving %d busy worker thread(s) behind: %s", len(left),
             ", ".join(t.name for t in left))
    logging.shutdown()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(rc)
