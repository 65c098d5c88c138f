"""Child process for the SIGKILL test: queue instances into an outbox and send them.

usage: python -m tests.pacs.store_crash_child OUTBOX TARGET COUNT SEED

Writes ``queued <uid>`` per durable instance, then ``all-queued``, then waits until the
outbox is empty and prints ``flushed``. With COUNT 0 it only replays what the outbox holds.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from rtstream.pacs.store import StoreClient, StoreConfig, StoreResult
from tests.pacs.conftest import secondary_capture


async def main(outbox: Path, target: str, count: int, seed: int) -> int:
    cfg = StoreConfig.from_target(
        target, outbox=outbox, backoff_base=0.05, backoff_max=0.5, idle_timeout=5
    )
    async with StoreClient(cfg) as sc:
        futures: list[asyncio.Future[StoreResult]] = []
        for i in range(count):
            ds = secondary_capture(rows=16, cols=16, seed=seed * 1000 + i)
            futures.append(await sc.enqueue(ds))
            sys.stdout.write(f"queued {ds.SOPInstanceUID}\n")
            sys.stdout.flush()
        sys.stdout.write("all-queued\n")
        sys.stdout.flush()
        await sc.flush()
        failed = [f.result() for f in futures if not f.result().ok]
        sys.stdout.write(f"flushed stored={sc.counters['stored']} failed={len(failed)}\n")
        sys.stdout.flush()
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
