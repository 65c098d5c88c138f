"""Dump files (``--dump-frames``, ``--dump-metadata``), written by one worker thread.

The event loop only submits: each complete frame as ``<rtp-timestamp>.raw`` (wire pgroup
order) and each grain as ``<rtp-timestamp>.dcm`` (as received). An existing file is never
replaced (``-1``, ``-2``... are appended). A failed write is counted and logged, and the
stream goes on.
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

__all__ = ["DumpWriter", "write_new"]

log = logging.getLogger(__name__)


def write_new(directory: Path, stem: str, suffix: str, data: bytes | np.ndarray) -> Path:
    """Write ``data`` to ``directory/stem+suffix``, never replacing a file (``-1``, ``-2``...)."""
    buf = data if isinstance(data, bytes) else data.data.cast("B")
    for n in range(1000):
        name = f"{stem}{suffix}" if n == 0 else f"{stem}-{n}{suffix}"
        path = directory / name
        try:
            with open(path, "xb") as f:
                f.write(buf)
            return path
        except FileExistsError:
            continue
    raise OSError(f"{directory}: too many files named {stem}*{suffix}")


class DumpWriter:
    """Writes dump files in a worker thread; counts the writes that failed (``errors``)."""

    def __init__(self) -> None:
        self.errors = 0
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtstream-rx-io")
        self._pending: set[Future[Path]] = set()

    def write(self, directory: Path, rtp_timestamp: int, suffix: str,
              data: bytes | np.ndarray) -> None:
        """Queue ``data`` for ``directory/<rtp_timestamp><suffix>``."""
        fut = self._io.submit(write_new, directory, str(rtp_timestamp), suffix, data)
        self._pending.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: Future[Path]) -> None:
        self._pending.discard(fut)
        exc = fut.exception()
        if exc is not None:
            self.errors += 1
            log.warning("dump write failed: %s", exc)

    def drain(self) -> None:
        """Wait for the queued writes (blocking: call it from a worker thread)."""
        for fut in list(self._pending):
            with contextlib.suppress(Exception):
                fut.result(timeout=60)

    def shutdown(self) -> None:
        """Stop the worker thread (after :meth:`drain`)."""
        self._io.shutdown(wait=True)
