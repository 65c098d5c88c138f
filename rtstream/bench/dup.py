"""``rtstream bench dup``: what ST 2022-7 merging costs a receiver, next to GStreamer's.

Method
------
One rtstream sender process (``worker send --port2``) sends the prepared 4:2:2 10-bit
frames (1080p60 by default) as an ST 2022-7 sender: every flow twice, byte-identical, to
two ports on 127.0.0.1 (leg 1 and leg 2). The same sender feeds four receivers, one at a
time, each measured over a steady window exactly as in ``rtstream bench all`` (CPU from
``/proc`` over the window, frames from the process's own counter, start-up excluded):

* ``rtstream 1 leg``: the rtstream receiver given an SDP with leg 1 only (an ordinary
  receiver; leg 2 is taken by a socket nobody reads, so the sender sees no ICMP);
* ``rtstream 2 legs``: the rtstream receiver given the sender's SDP (``a=group:DUP``):
  both legs merged, first copy wins, the later copies dropped by the kernel filter of
  :mod:`rtstream.net.dupfilter` where the process may load it (else by the merge);
* ``rtstream 2 legs, merge only``: the same with ``--no-dup-kernel-filter``: every copy read
  and dropped by the merge (what an unprivileged receiver costs);
* ``gstreamer 1 leg``: ``udpsrc ! rtpvrawdepay ! fakesink``;
* ``gstreamer 2 legs``: two ``udpsrc`` into a ``funnel``, ``rtpjitterbuffer`` (which
  drops the duplicate sequence numbers; GStreamer has no 2022-7 element), then
  ``rtpvrawdepay ! fakesink`` -- the usual stand-in, the peer figure.

Reported per case: receiver CPU ms per frame, frames/s, loss (the rtstream receiver's
sequence-number loss of the merged stream plus the kernel's drops on its sockets, less
the copies its filter dropped, which the kernel counts as drops too; for GStreamer the
kernel's drops), and the ratios ``rtstream 2 legs / rtstream 1 leg`` (the issue's
target: at most 1.3), the same for ``merge only``, ``gstreamer 2 legs / gstreamer 1 leg``
and ``rtstream 2 legs / gstreamer 2 legs``. No ratio is asserted anywhere: they are
measurements of this machine.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from rtstream.bench.harness import (
    BenchConfig,
    Proc,
    _measure,
    _need,
    _per_frame,
    _py,
    _ratio,
    _wait_bound,
    free_ports,
    machine_info,
    udp_drops,
    write_frames,
)

log = logging.getLogger(__name__)

CASES = ("rtstream 1 leg", "rtstream 2 legs", "rtstream 2 legs, merge only", "gstreamer 1 leg",
         "gstreamer 2 legs")
DEPTH = 10


def _single_leg_sdp(dup_sdp: Path, out: Path) -> Path:
    """The sender's SDP without its second legs and groups: an ordinary receiver's view."""
    import dataclasses

    from rtstream.proto.sdp import parse_sdp, write_sdp

    s = parse_sdp(dup_sdp.read_text())
    first = tuple(m for m in s.media if not s.is_secondary_leg(m))
    out.write_text(write_sdp(dataclasses.replace(s, media=first, dup_groups=())))
    return out


def _gst_argv(cfg: BenchConfig, ports: tuple[int, ...]) -> list[str]:
    caps = ("application/x-rtp,media=(string)video,clock-rate=(int)90000,"
            "encoding-name=(string)RAW,sampling=(string)YCbCr-4:2:2,"
            f"depth=(string){DEPTH},width=(string){cfg.width},height=(string){cfg.height},"
            "payload=(int)96")
    gst = [_need("gst-launch-1.0"), "-v"]
    sink = ["rtpvrawdepay", "!", "fakesink", "silent=false", "sync=false"]
    if len(ports) == 1:
        return [*gst, "udpsrc", "address=127.0.0.1", f"port={ports[0]}",
                "buffer-size=33554432", f"caps={caps}", "!", *sink]
    argv = [*gst, "funnel", "name=f", "!", "rtpjitterbuffer", "latency=10", "!", *sink]
    for p in ports:
        argv += ["udpsrc", "address=127.0.0.1", f"port={p}", "buffer-size=33554432",
                 f"caps={caps}", "!", "f."]
    return argv


def _run_case(case: str, cfg: BenchConfig, wire: Path, work: Path) -> dict[str, Any]:
    base = free_ports(8)
    base2 = free_ports(8)
    while abs(base2 - base) < 8:
        base2 = free_ports(8)
    total = cfg.warmup + cfg.seconds + 30
    tag = f"dup-{case.replace(',', '').replace(' ', '-')}-{base}"
    from rtstream.bench._sdp import rtstream_sdp

    dup_sdp = rtstream_sdp(work / f"{tag}.sdp", wire, cfg, DEPTH, base, base2)
    two = "2 legs" in case
    procs: list[Proc] = []
    sinks: list[socket.socket] = []
    try:
        if not two:  # leg 2 goes to sockets nobody reads: no ICMP back to the sender
            for port in (base2, base2 + 2):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", port))
                sinks.append(s)
        if case.startswith("rtstream"):
            sdp = dup_sdp if two else _single_leg_sdp(dup_sdp, work / f"{tag}.1leg.sdp")
            rargv, rparse = [*_py(), "recv", "--sdp", str(sdp), "--seconds", str(total)], "json"
            if case.endswith("merge only"):
                rargv.append("--no-dup-kernel-filter")
        else:
            for port in (base + 2, base2 + 2):  # the metadata legs: nobody reads them here
                if two or port == base + 2:
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.bind(("127.0.0.1", port))
                    sinks.append(s)
            rargv, rparse = _gst_argv(cfg, (base, base2) if two else (base,)), "gst"
        rx = Proc(f"{tag}.rx", rargv, rparse, work)
        procs.append(rx)
        _wait_bound(base)
        if two:
            _wait_bound(base2)
        time.sleep(0.3)
        sargv = [*_py(), "send", "--raw", str(wire), "--size", f"{cfg.width}x{cfg.height}",
                 "--fps", str(cfg.fps), "--depth", str(DEPTH), "--port", str(base),
                 "--port2", str(base2), "--seconds", str(total)]
        tx = Proc(f"{tag}.tx", sargv, "json", work)
        procs.append(tx)
        w = _measure(procs, cfg)
        tx.stop()  # the sockets' drop counters settle before they are read
        time.sleep(0.2)
        drops = udp_drops(base) + (udp_drops(base2) if two else 0)
    finally:
        for p in reversed(procs):
            p.stop()
        for s in sinks:
            s.close()
    secs = w.t1 - w.t0
    frames = rx.frames_at(w.t1) - rx.frames_at(w.t0)
    cpu = w.cpu1[rx.name] - w.cpu0[rx.name]
    sent = tx.frames_at(w.t1) - tx.frames_at(w.t0)
    lost = int((rx.final or {}).get("packets_lost", rx.last.get("lost", 0))) if rparse == "json" \
        else None
    drops -= int((rx.final or {}).get("filtered_buffers", 0)) if rparse == "json" else 0
    return {
        "case": case, "window_s": secs, "receiver_cpu_s": cpu, "receiver_frames": frames,
        "sender_frames": sent, "receiver_fps": frames / secs if secs > 0 else None,
        "receiver_cpu_ms_per_frame": _per_frame(cpu, frames), "kernel_drops": drops,
        "packets_lost": lost, "loss": drops + (lost or 0),
        "sender_cpu_ms_per_frame": _per_frame(w.cpu1[tx.name] - w.cpu0[tx.name], sent),
        "cpu_pressure_pct": w.cpu_pressure(),
        "latency_p50_us": (rx.final or {}).get("latency_p50_us") if rparse == "json" else None,
        "latency_p99_us": (rx.final or {}).get("latency_p99_us") if rparse == "json" else None,
    }


def run_dup(cfg: BenchConfig, work: Path | None = None,
            cases: tuple[str, ...] = CASES) -> dict[str, Any]:
    """Run the cases (see the module docstring); a JSON-ready result."""
    own = work is None
    wdir = Path(tempfile.mkdtemp(prefix="rtstream-bench-dup-")) if work is None else work
    wdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    try:
        wire, _ = write_frames(wdir, cfg, DEPTH)
        runs: dict[str, dict[str, Any]] = {}
        for case in cases:
            log.info("2022-7 case: %s", case)
            runs[case] = _run_case(case, cfg, wire, wdir)
    finally:
        if own:
            shutil.rmtree(wdir, ignore_errors=True)

    def ms(case: str) -> float | None:
        run = runs.get(case)
        return None if run is None else run["receiver_cpu_ms_per_frame"]

    return {
        "config": {"seconds": cfg.seconds, "warmup": cfg.warmup, "width": cfg.width,
                   "height": cfg.height, "fps": cfg.fps, "depth": DEPTH},
        "machine": machine_info(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "runs": runs,
        "ratios": {
            "rtstream_2legs_over_1leg": _ratio(ms("rtstream 2 legs"), ms("rtstream 1 leg")),
            "rtstream_merge_only_over_1leg": _ratio(ms("rtstream 2 legs, merge only"),
                                                    ms("rtstream 1 leg")),
            "gstreamer_2legs_over_1leg": _ratio(ms("gstreamer 2 legs"), ms("gstreamer 1 leg")),
            "rtstream_over_gstreamer_2legs": _ratio(ms("rtstream 2 legs"), ms("gstreamer 2 legs")),
        },
    }


def table(result: dict[str, Any]) -> str:
    """A plain-text table of the cases and the ratios."""
    c = result["config"]
    head = ["case", "recv ms/frame", "recv fps", "loss", "p50 us", "p99 us", "CPU wait %"]
    rows = [head]
    for case, r in result["runs"].items():
        def f(v: Any, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)
        rows.append([case, f(r["receiver_cpu_ms_per_frame"], ".3f"), f(r["receiver_fps"], ".1f"),
                     str(r["loss"]), f(r["latency_p50_us"], ".0f"), f(r["latency_p99_us"], ".0f"),
                     f(r["cpu_pressure_pct"], ".0f")])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"ST 2022-7 receiver, {c['width']}x{c['height']}p{c['fps']} 4:2:2 {c['depth']}-bit, "
             "two legs on 127.0.0.1"]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(2, "-" * len(lines[1]))
    for name, v in result["ratios"].items():
        lines.append(f"{name}: {'-' if v is None else f'{v:.2f}'}")
    return "\n".join(lines)


def main_json(result: dict[str, Any]) -> str:
    """The result as JSON text."""
    return json.dumps(result, indent=2, default=str)
