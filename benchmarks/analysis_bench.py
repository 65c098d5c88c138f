"""Live-analysis benchmark: the hook's own cost, and frame -> findings latency.

What is measured
----------------
One ``rtstream send --source testsrc`` process sends SIZE@FPS (8-bit 4:2:2) for the
whole run. Then, one after the other, each for SECONDS after a warm-up, a receiver
process reads it:

* ``ffmpeg``: FFmpeg 5.1 receiving the video flow (a video-only copy of the SDP) and
  discarding it (``-f null``): the peer's figure, the reference for the ratios;
* ``none``: ``rtstream receive`` without analysis;
* ``noop_wire``: ``rtstream receive --analyze`` a callable that returns ``[]`` at once,
  given the wire pgroups (``--analyze-layout wire``, no conversion): the mechanism's own
  overhead (observer, slot, worker thread, counters);
* ``noop``: the same callable given RGB (the default layout): adds the BT.601 conversion
  of every analysed frame, which a real model pays for anyway;
* ``bright_band``: the numpy example (``examples/bright_band.py``);
* ``slow50``: a callable that sleeps 50 ms (slower than the stream): the media path
  must lose nothing.

For each: the receiver process's CPU (user + system over the window, ``/proc/PID/stat``,
all threads) as a percentage of one core and its ratio to FFmpeg's and to ``none``;
packets lost; and for the analysed runs the analysis counters and the latency from the
frame's last packet read to the callable's return, i.e. when the finding set is handed
to the viewer's data channel (``Receiver.stats["analysis"]``: p50/p99/max over the last
4096 frames). The page adds the data channel and its draw, which the Chromium test
checks for alignment, not time.

usage: python benchmarks/analysis_bench.py [--seconds 5] [--warmup 2]
       [--size 1280x720] [--fps 30] [--modes ffmpeg,none,noop_wire,noop,bright_band,slow50]  (JSON)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent / "analysis_hooks.py"
#: mode -> (--analyze spec, --analyze-layout)
MODES: dict[str, tuple[str, str] | None] = {
    "none": None,
    "noop_wire": (f"{HOOKS}:noop", "wire"),
    "noop": (f"{HOOKS}:noop", "rgb24"),
    "bright_band": (f"{ROOT / 'examples' / 'bright_band.py'}:detect", "rgb24"),
    "slow50": (f"{HOOKS}:slow50", "rgb24"),
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(count: int = 4) -> int:
    """A base port with ``count`` consecutive free even UDP ports after it (PORT..PORT+2k)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1] & ~1
        if base + 2 * count > 65535:
            continue
        try:
            socks = []
            for i in range(2 * count):
                t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(t)
                t.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no free UDP ports")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def stop(proc: subprocess.Popen[bytes], sig: int = 2, timeout: float = 20) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def video_only_sdp(sdp: Path, out: Path) -> None:
    """The sender's SDP without its metadata flows (what a plain ST 2110 peer reads)."""
    sys.path.insert(0, str(ROOT))
    import dataclasses

    from rtstream.proto.sdp import MediaKind, parse_sdp, write_sdp

    session = parse_sdp(sdp.read_text())
    video = dataclasses.replace(
        session, media=tuple(m for m in session.media if m.kind is MediaKind.VIDEO))
    out.write_text(write_sdp(video))


def measure(args: list[str], seconds: float, warmup: float, log: Path) -> tuple[float, float]:
    """Start ``args``, wait ``warmup``, measure CPU over ``seconds``; returns (percent, cpu s)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)
        try:
            time.sleep(warmup)
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} ended early: {log.read_text()[-2000:]}")
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            c1, t1 = cpu_seconds(proc.pid), time.monotonic()
        finally:
            stop(proc)
    return 100 * (c1 - c0) / (t1 - t0), c1 - c0


def run(opts: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="rtstream-analysis-bench-"))
    port = free_port()
    sdp = work / "rtv.sdp"
    py = [sys.executable, "-m", "rtstream", "--log-level", "WARNING"]
    sender = subprocess.Popen(
        [*py, "send", "--source", "testsrc", "--dest", f"127.0.0.1:{port}", "--video",
         f"{opts.size}@{opts.fps}", "--depth", "8", "--sdp-out", str(sdp)],
        stdout=subprocess.DEVNULL, stderr=open(work / "send.log", "wb"),  # noqa: SIM115
        cwd=ROOT, start_new_session=True)
    runs: dict[str, Any] = {}
    try:
        for _ in range(400):
            if sdp.exists() and sdp.stat().st_size:
                break
            if sender.poll() is not None:
                raise RuntimeError((work / "send.log").read_text()[-2000:])
            time.sleep(0.05)
        total = opts.warmup + opts.seconds + 1
        for mode in opts.modes:
            if mode == "ffmpeg":
                ffmpeg = shutil.which("ffmpeg")
                if ffmpeg is None:
                    runs[mode] = {"error": "ffmpeg not installed"}
                    continue
                vsdp = work / "video.sdp"
                video_only_sdp(sdp, vsdp)
                cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning",
                       "-protocol_whitelist", "file,udp,rtp", "-buffer_size", "67108864",
                       "-i", str(vsdp), "-fps_mode", "passthrough", "-f", "null", "-"]
                pct, cpu = measure(cmd, opts.seconds, opts.warmup, work / "ffmpeg.log")
                runs[mode] = {"cpu_percent": round(pct, 1), "cpu_seconds": round(cpu, 3)}
                continue
            stats = work / f"{mode}.json"
            cmd = [*py, "receive", "--sdp", str(sdp), "--duration", f"{total + 5}",
                   "--stats-json", str(stats)]
            hook = MODES[mode]
            if hook is not None:
                cmd += ["--analyze", hook[0], "--analyze-layout", hook[1]]
            pct, cpu = measure(cmd, opts.seconds, opts.warmup, work / f"{mode}.log")
            for _ in range(100):  # written at exit (SIGINT)
                if stats.exists():
                    break
                time.sleep(0.05)
            st = json.loads(stats.read_text())
            entry: dict[str, Any] = {
                "cpu_percent": round(pct, 1), "cpu_seconds": round(cpu, 3),
                "frames": st["frames_delivered"], "packets": st["packets"],
                "packets_lost": st["packets_lost"], "frames_incomplete": st["frames_incomplete"],
            }
            if "analysis" in st:
                entry["analysis"] = st["analysis"]
            runs[mode] = entry
    finally:
        stop(sender)
        shutil.rmtree(work, ignore_errors=True)
    return {"config": {"size": opts.size, "fps": opts.fps, "seconds": opts.seconds,
                       "warmup": opts.warmup, "cpus": os.cpu_count()},
            "runs": runs, "ratios": ratios(runs)}


def ratios(runs: dict[str, Any]) -> dict[str, float | None]:
    """CPU ratios: each rtstream run against FFmpeg and against the receiver alone."""
    def cpu(mode: str) -> float | None:
        r = runs.get(mode) or {}
        v = r.get("cpu_percent")
        return float(v) if v else None

    out: dict[str, float | None] = {}
    for mode in MODES:
        if mode in runs and cpu(mode) is not None:
            for ref in ("ffmpeg", "none"):
                if ref != mode and cpu(ref):
                    out[f"{mode}_vs_{ref}"] = round(cpu(mode) / cpu(ref), 2)  # type: ignore[operator]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--fps", default="30")
    ap.add_argument("--modes", default="ffmpeg,none,noop_wire,noop,bright_band,slow50",
                    type=lambda s: [m for m in s.split(",") if m])
    opts = ap.parse_args()
    bad = [m for m in opts.modes if m != "ffmpeg" and m not in MODES]
    if bad:
        ap.error(f"--modes: unknown {bad}; known: ffmpeg, {', '.join(MODES)}")
    print(json.dumps(run(opts), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
