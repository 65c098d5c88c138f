"""Check that rtstream's sender and receiver keep a flat memory footprint.

Runs one rtstream sender and one receiver process (1080p60 4:2:2 10-bit by default, on
127.0.0.1) for ``--minutes``, samples each process's RSS from /proc every ``--every``
seconds, and compares the mean RSS of the last tenth of the run with the mean after the
warm-up (the first tenth, at least 20 s). Growth must stay below ``--limit`` percent.

usage: python scripts/memory_flat.py [--minutes 10] [--every 5] [--limit 5] [--json FILE]
Exit status 0 when both processes stay flat, 1 otherwise. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtstream.bench._sdp import rtstream_sdp  # noqa: E402
from rtstream.bench.harness import (  # noqa: E402
    BenchConfig,
    Proc,
    free_ports,
    receiver_argv,
    rss_bytes,
    sender_argv,
    write_frames,
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--every", type=float, default=5.0)
    p.add_argument("--limit", type=float, default=5.0, help="allowed RSS growth in percent")
    p.add_argument("--size", default="1920x1080")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    w, _, h = args.size.partition("x")
    cfg = BenchConfig(width=int(w), height=int(h), depths=(10,))
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="rtstream-mem-") as tmp:
        work = Path(tmp)
        files = write_frames(work, cfg, 10)
        port = free_ports(8)
        sdp = rtstream_sdp(work / "x.sdp", files[0], cfg, 10, port)
        ra, rp = receiver_argv("rtstream", cfg, 10, port, sdp, seconds + 60)
        rx = Proc("rx", ra, rp, work)
        time.sleep(1.5)
        ta, tp = sender_argv("rtstream", cfg, 10, port, files, seconds + 60)
        tx = Proc("tx", ta, tp, work)
        samples: dict[str, list[tuple[float, int]]] = {"sender": [], "receiver": []}
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < seconds:
                time.sleep(args.every)
                now = time.monotonic() - t0
                for name, proc in (("sender", tx), ("receiver", rx)):
                    if not proc.alive():
                        raise SystemExit(f"{name} exited: {proc.stderr_tail()}")
                    samples[name].append((now, rss_bytes(proc.pid)))
        finally:
            tx.stop()
            rx.stop()
    result: dict[str, object] = {"minutes": args.minutes, "limit_percent": args.limit}
    ok = True
    for name, series in samples.items():
        k = max(1, len(series) // 10)
        warm = [r for t, r in series if t >= min(20.0, seconds / 10)] or [r for _, r in series]
        head = statistics.fmean(warm[:k])
        tail = statistics.fmean(r for _, r in series[-k:])
        growth = 100.0 * (tail - head) / head
        ok &= growth < args.limit
        result[name] = {
            "rss_start_mib": head / 2**20, "rss_end_mib": tail / 2**20,
            "rss_max_mib": max(r for _, r in series) / 2**20, "growth_percent": growth,
            "samples": len(series),
        }
    result["frames_sent"] = (tx.final or {}).get("frames")
    result["receiver_frames"] = (rx.final or {}).get("frames_delivered")
    result["packets_lost"] = (rx.final or {}).get("packets_lost")
    result["flat"] = ok
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
