"""Janus benchmark: rtstream's CPU with 1 and N viewers through Janus, against N viewers
served by rtstream directly, in the same run; glass-to-glass latency through Janus.

What is measured
----------------
For each mode and viewer count, a fresh ``rtstream view --test-pattern`` process (the
*server*) runs; in ``janus`` mode with ``--janus`` feeding a real Janus 1.1.2 (Debian
``janus``, the suite's fixture ``tests/viewer/janus_peer.py``: mountpoint with secret and
pin) and the pages watching through Janus; in ``direct`` mode the pages get their WebRTC
from rtstream itself (aiortc, one shared encode). Headless Chromium pages are the viewers
(one window each). The server's CPU is its user+system time over the window
(``/proc/PID/stat``, all threads) as a percentage of one core; Janus's CPU is reported
beside it. Latency is the page's readout (capture time -> display, see
``benchmarks/viewer_bench.py``), pooled over pages.

Everything runs in a fresh network namespace (``unshare --net``, root) holding ``lo`` and
a veth end with 127.0.0.2 (Janus offers no loopback candidate; it is told to use that
veth with ``nat.ice_enforce_list``); nothing leaves the namespace.

Targets (issue 20): through Janus, rtstream's CPU with N viewers within 5 % of its CPU
with 1; glass-to-glass p50 <= 100 ms, p95 <= 150 ms at 720p30.

usage: python benchmarks/janus_bench.py [--seconds 10] [--viewers 1,4] [--size 1280x720]
       [--fps 30] [--bitrate 4M] [--modes janus,direct]                      (prints JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import viewer_bench as vb  # noqa: E402  (the sibling benchmark's helpers)

TARGETS = {"p50_ms": 100.0, "p95_ms": 150.0, "janus_cpu_ratio": 1.05}
VETH, VETH_ADDRESS = "rts0", "127.0.0.2"


def summarize(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Ratios N vs 1 per mode and the targets met or not."""
    out: dict[str, Any] = {"targets": TARGETS}
    for mode, by_n in runs.items():
        counts = sorted(by_n)
        if len(counts) >= 2 and by_n[counts[0]]["cpu_percent"]:
            ratio = by_n[counts[-1]]["cpu_percent"] / by_n[counts[0]]["cpu_percent"]
            out[f"{mode}_cpu_ratio_{counts[-1]}_vs_{counts[0]}"] = round(ratio, 3)
            # A saturated machine encodes fewer frames; CPU per frame shows whether the
            # ratio above means anything (see benchmarks/viewer_bench.py).
            per = [by_n[n].get("cpu_ms_per_frame") for n in (counts[0], counts[-1])]
            if per[0] and per[1]:
                out[f"{mode}_cpu_per_frame_ratio_{counts[-1]}_vs_{counts[0]}"] = round(
                    per[1] / per[0], 3)
            if mode == "janus":
                out["janus_cpu_ratio_ok"] = ratio <= TARGETS["janus_cpu_ratio"]
    if "janus" in runs:
        ok = True
        for run in runs["janus"].values():
            p50, p95 = run["latency_ms"]["p50"], run["latency_ms"]["p95"]
            ok &= p50 is not None and p95 is not None
            ok &= (p50 or 1e9) <= TARGETS["p50_ms"] and (p95 or 1e9) <= TARGETS["p95_ms"]
        out["janus_latency_ok"] = ok
    return out


async def run_once(args: argparse.Namespace, mode: str, viewers: int,
                   janus: Any | None) -> dict[str, Any]:
    """One server process in ``mode`` with ``viewers`` pages; CPU and latency."""
    from playwright.async_api import async_playwright

    from tests.viewer.janus_peer import MOUNTPOINT, SECRET

    port = vb._free_port()
    cmd = [sys.executable, "-m", "rtstream", "view", "--test-pattern", "--http",
           f"127.0.0.1:{port}", "--token", vb.TOKEN, "--size", args.size, "--fps",
           str(args.fps), "--bitrate", args.bitrate, "--gop", "1"]
    env = dict(os.environ)
    if mode == "janus":
        assert janus is not None
        cmd += ["--janus", janus.url, "--janus-mountpoint", str(MOUNTPOINT)]
        env["RTSTREAM_JANUS_SECRET"] = SECRET
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        await vb._wait_http(port, 30)
        url = f"http://127.0.0.1:{port}/?token={vb.TOKEN}"
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=vb.CHROMIUM, args=vb.CHROMIUM_ARGS)
            try:
                pages = []
                for _ in range(viewers):
                    ctx = await browser.new_context(viewport={"width": 1400, "height": 900},
                                                    permissions=["camera", "microphone"])
                    page = await ctx.new_page()
                    await page.goto(url)
                    pages.append(page)
                for page in pages:
                    await page.wait_for_function(
                        f"window.rtsViewer && window.rtsViewer.via === '{'janus' if mode == 'janus' else 'rtstream'}'"
                        " && window.rtsViewer.latencies.length > 5", timeout=45_000)
                await asyncio.sleep(args.warmup)
                grab = "() => window.rtsViewer.latencies.splice(0)"
                probe = "() => [window.rtsViewer.framesPresented, performance.now()]"
                for page in pages:
                    await page.evaluate(grab)
                first = [await page.evaluate(probe) for page in pages]
                enc0 = await asyncio.to_thread(vb._frames_encoded, port)
                jpid = janus.proc.pid if janus is not None and janus.proc is not None else None
                cpu0, t0 = vb._cpu_seconds(server.pid), time.monotonic()
                j0 = vb._cpu_seconds(jpid) if jpid else 0.0
                samples: list[list[float]] = [[] for _ in pages]
                end = t0 + args.seconds
                while (now := time.monotonic()) < end:
                    await asyncio.sleep(min(2.0, end - now))
                    for i, page in enumerate(pages):
                        samples[i] += await page.evaluate(grab)
                cpu1, t1 = vb._cpu_seconds(server.pid), time.monotonic()
                j1 = vb._cpu_seconds(jpid) if jpid else 0.0
                enc1 = await asyncio.to_thread(vb._frames_encoded, port)
                last = [await page.evaluate(probe) for page in pages]
            finally:
                await browser.close()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    pooled = [x for s in samples for x in s]
    fps = [(b[0] - a[0]) / ((b[1] - a[1]) / 1000) for a, b in zip(first, last, strict=True)]
    window = t1 - t0
    return {
        "mode": mode, "viewers": viewers, "window_s": round(window, 2),
        "cpu_percent": round(100 * (cpu1 - cpu0) / window, 1),
        "encoded_fps": round((enc1 - enc0) / window, 1),
        "cpu_ms_per_frame": round(1000 * (cpu1 - cpu0) / max(1, enc1 - enc0), 2),
        "janus_cpu_percent": round(100 * (j1 - j0) / window, 1) if jpid else None,
        "latency_ms": {"samples": len(pooled), "p50": vb._round(vb.percentile(pooled, 0.5)),
                       "p95": vb._round(vb.percentile(pooled, 0.95)),
                       "per_page_p50": [vb._round(vb.percentile(s, 0.5)) for s in samples]},
        "page_fps": [round(f, 1) for f in fps],
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Janus mode then direct mode, every viewer count; the JSON document printed."""
    from tests.viewer.janus_peer import Janus

    counts = [int(x) for x in args.viewers.split(",")]
    modes = args.modes.split(",")
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="rts-janus-bench-") as tmp:
        janus = Janus(Path(tmp), enforce=VETH, debug_level=3)
        janus.start()
        try:
            for mode in modes:
                runs[mode] = {n: await run_once(args, mode, n, janus if mode == "janus" else None)
                              for n in counts}
        finally:
            janus.stop()
    return {
        "benchmark": "rtstream CPU with viewers through Janus vs served directly",
        "config": {"size": args.size, "fps": args.fps, "bitrate": args.bitrate,
                   "seconds": args.seconds, "warmup": args.warmup, "cpus": os.cpu_count(),
                   "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "runs": {m: {str(n): r for n, r in by_n.items()} for m, by_n in runs.items()},
        **summarize(runs),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse options, enter a namespace with lo + a 127.0.0.2 veth, run, print JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measurement window per run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    ap.add_argument("--viewers", default="1,4", help="viewer counts, e.g. 1,4")
    ap.add_argument("--modes", default="janus,direct", help="janus, direct, or both")
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--bitrate", default="4M")
    ap.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.in_netns:
        unshare = shutil.which("unshare")
        if unshare is None or os.geteuid() != 0:
            print("janus_bench: needs root and unshare for a namespace of its own",
                  file=sys.stderr)
            return 2
        cmd = [unshare, "--net", "--", sys.executable, str(Path(__file__).resolve()),
               *(argv if argv is not None else sys.argv[1:]), "--in-netns"]
        return subprocess.run(cmd, cwd=ROOT).returncode
    if [name for _, name in __import__("socket").if_nameindex()] != ["lo"]:
        print("janus_bench: the namespace is not fresh", file=sys.stderr)
        return 2
    for step in (["ip", "link", "set", "lo", "up"],
                 ["ip", "link", "add", VETH, "type", "veth", "peer", "name", "rts1"],
                 ["ip", "addr", "add", f"{VETH_ADDRESS}/32", "dev", VETH],
                 ["ip", "link", "set", VETH, "up"], ["ip", "link", "set", "rts1", "up"]):
        subprocess.run(step, check=True)
    result = asyncio.run(bench(args))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
