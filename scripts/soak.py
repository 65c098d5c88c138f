#!/usr/bin/env python3
"""Soak run: ``rtstream send`` (a subprocess) -> :class:`rtstream.receiver.Receiver` (here).

Every ``--interval`` seconds the script samples, for the sender process and for itself
(the receiver): resident memory (VmRSS) and open file descriptors from ``/proc``, and from
the receiver: packets received and lost, incomplete frames, metadata pairing, and the
end-to-end latency of the frames delivered in that window -- delivery instant minus the
frame's capture instant (its grain's Frame Origin Timestamp, both on this host's clock).

Writes ``soak.json`` (all samples and a summary) and ``soak.png`` (matplotlib, Agg) into
``--out``. Default: 10 minutes of 1920x1080@30 10-bit 4:2:2 on 127.0.0.1.

    nice -n 10 .venv/bin/python scripts/soak.py --duration 600 --out /tmp/soak
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def proc_sample(pid: int) -> dict[str, int]:
    """Open fds, VmRSS (KiB) and thread count of ``pid`` from /proc."""
    out = {"fds": len(os.listdir(f"/proc/{pid}/fd")), "rss_kib": 0, "threads": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss_kib"] = int(line.split()[1])
        elif line.startswith("Threads:"):
            out["threads"] = int(line.split()[1])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_udp_base() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1]) & ~1
        socks = []
        try:
            for i in range(8):
                t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(t)
                t.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no free UDP port range")


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from rtstream.receiver import ItemKind, Receiver, ReceiverConfig
    from rtstream.sysclock import SystemClock

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    base = free_udp_base()
    sdp = out / "soak.sdp"
    sdp.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    send = [sys.executable, "-m", "rtstream", "send", "--dest", f"127.0.0.1:{base}",
            "--video", args.video, "--depth", str(args.depth), "--sdp-out", str(sdp),
            "--duration", str(args.duration + 5), "--stats-json", str(out / "sender.json")]
    if args.nice:
        send = ["nice", "-n", str(args.nice), *send]
    log = open(out / "sender.log", "wb")  # noqa: SIM115
    tx = subprocess.Popen(send, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True)
    clock = SystemClock()
    samples: list[dict[str, Any]] = []
    try:
        while not (sdp.exists() and sdp.stat().st_size):
            if tx.poll() is not None:
                raise RuntimeError(f"sender exited: {(out / 'sender.log').read_text()[-2000:]}")
            await asyncio.sleep(0.05)
        cfg = ReceiverConfig(sdp=str(sdp), duration=args.duration)
        lat: list[float] = []
        t0 = time.monotonic()
        next_at = t0 + args.interval
        prev: dict[str, Any] = {}
        me = os.getpid()
        cpu0 = {"send": cpu_seconds(tx.pid), "receive": cpu_seconds(me)}
        async with Receiver(cfg) as rx:
            async for item in rx:
                if item.kind is ItemKind.VIDEO and item.origin is not None:
                    lat.append((item.delivered_ns - item.origin.to_ns()) / 1e6)
                now = time.monotonic()
                if now < next_at:
                    continue
                next_at += args.interval
                st = rx.stats
                window = np.array(lat) if lat else np.zeros(0)
                lat = []
                row = {
                    "t": round(now - t0, 2),
                    "send": proc_sample(tx.pid), "receive": proc_sample(me),
                    "cpu_send_s": round(cpu_seconds(tx.pid) - cpu0["send"], 2),
                    "cpu_receive_s": round(cpu_seconds(me) - cpu0["receive"], 2),
                    "packets": st["packets"], "packets_lost": st["packets_lost"],
                    "frames_delivered": st["frames_delivered"],
                    "frames_incomplete": st["frames_incomplete"],
                    "metadata_matched": st["metadata_matched"],
                    "metadata_unmatched": st["metadata_unmatched"],
                    "window_packets": st["packets"] - prev.get("packets", 0),
                    "window_lost": st["packets_lost"] - prev.get("packets_lost", 0),
                    "latency_ms_p50": float(np.percentile(window, 50)) if len(window) else None,
                    "latency_ms_p99": float(np.percentile(window, 99)) if len(window) else None,
                    "latency_ms_max": float(window.max()) if len(window) else None,
                    "now_ns": clock.now_ns(),
                }
                prev = st
                samples.append(row)
                print(json.dumps({k: row[k] for k in ("t", "send", "receive", "window_lost",
                                                      "latency_ms_p50", "latency_ms_p99")}),
                      flush=True)
            final = rx.stats
    finally:
        if tx.poll() is None:
            tx.terminate()
            try:
                tx.wait(15)
            except subprocess.TimeoutExpired:
                tx.kill()
        log.close()
    sender = json.loads((out / "sender.json").read_text()) if (out / "sender.json").exists() else {}
    summary = summarize(samples, final, sender)
    doc = {"video": args.video, "depth": args.depth, "duration_s": args.duration,
           "interval_s": args.interval, "summary": summary, "samples": samples,
           "receiver_final": {k: v for k, v in final.items() if k != "flows"},
           "sender_final": sender}
    (out / "soak.json").write_text(json.dumps(doc, indent=1, default=str))
    plot(samples, out / "soak.png", title=f"rtstream soak {args.video} {args.depth}-bit")
    return summary


def summarize(samples: list[dict[str, Any]], final: dict[str, Any],
              sender: dict[str, Any]) -> dict[str, Any]:
    """First/last RSS and fds per process, loss ratio, latency percentiles over windows."""
    if not samples:
        return {}
    first, last = samples[0], samples[-1]
    p99 = [s["latency_ms_p99"] for s in samples if s["latency_ms_p99"] is not None]
    p50 = [s["latency_ms_p50"] for s in samples if s["latency_ms_p50"] is not None]
    sent = int(sender.get("packets", 0))
    return {
        "rss_kib": {p: [first[p]["rss_kib"], last[p]["rss_kib"]] for p in ("send", "receive")},
        "rss_growth_pct": {p: round(100 * (last[p]["rss_kib"] / first[p]["rss_kib"] - 1), 1)
                           for p in ("send", "receive")},
        "fds": {p: [first[p]["fds"], last[p]["fds"]] for p in ("send", "receive")},
        "packets_sent": sent,
        "packets_received": final["packets"],
        "packets_lost": final["packets_lost"],
        "loss_ratio": final["packets_lost"] / max(1, final["packets"] + final["packets_lost"]),
        "frames_sent": sender.get("frames"),
        "frames_delivered": final["frames_delivered"],
        "frames_incomplete": final["frames_incomplete"],
        "metadata_matched": final["metadata_matched"],
        "metadata_unmatched": final["metadata_unmatched"],
        "latency_ms_p50_median_window": sorted(p50)[len(p50) // 2] if p50 else None,
        "latency_ms_p99_worst_window": max(p99) if p99 else None,
        "sender_late_frames": sender.get("late_frames"),
        "cpu_s": {"send": last["cpu_send_s"], "receive": last["cpu_receive_s"]},
    }


def plot(samples: list[dict[str, Any]], path: Path, *, title: str) -> None:
    """RSS, fds, loss per window and latency against time, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    fig, ax = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    for proc in ("send", "receive"):
        ax[0].plot(t, [s[proc]["rss_kib"] / 1024 for s in samples], label=proc)
        ax[1].plot(t, [s[proc]["fds"] for s in samples], label=proc)
    ax[0].set_ylabel("RSS (MiB)")
    ax[1].set_ylabel("open fds")
    ax[2].plot(t, [s["window_lost"] for s in samples], color="tab:red")
    ax[2].set_ylabel("packets lost / window")
    for key in ("latency_ms_p50", "latency_ms_p99", "latency_ms_max"):
        ax[3].plot(t, [s[key] for s in samples], label=key.rsplit("_", 1)[1])
    ax[3].set_ylabel("capture -> delivery (ms)")
    ax[3].set_xlabel("time (s)")
    for a in (ax[0], ax[1], ax[3]):
        a.legend(loc="upper left")
    for a in ax:
        a.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--video", default="1920x1080@30", help="WxH@FPS (default 1920x1080@30)")
    parser.add_argument("--depth", type=int, default=10, choices=[8, 10])
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--nice", type=int, default=0, help="run the sender with nice -n N")
    parser.add_argument("--out", type=Path, default=Path("soak-out"))
    args = parser.parse_args(argv)
    summary = asyncio.run(soak(args))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
