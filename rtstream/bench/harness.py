"""``rtstream bench all``: rtstream next to GStreamer and FFmpeg, same frames, same run.

Method
------
One raw file of 1080p 4:2:2 frames is written per depth (a moving ramp with noise): in
the ST 2110-20 wire order for rtstream (``raw:`` source) and GStreamer
(``rawvideoparse format=uyvy|uyvp``, byte-identical to the pgroups), and as the same
picture in FFmpeg's own input format (``uyvy422`` / ``yuv422p10le``, packed by its
``rawvideo`` / ``bitpacked`` encoder). Every tool runs as its own process, one pair at a
time, all on 127.0.0.1:

* senders (measured while the rtstream receiver takes the stream): the rtstream
  :class:`~rtstream.sender.Sender` (``python -m rtstream.bench.worker send``), GStreamer
  ``multifilesrc loop=true ! rawvideoparse ! rtpvrawpay ! udpsink sync=true``, FFmpeg
  ``-re -stream_loop -1 -f rawvideo -i F -c:v rawvideo|bitpacked -f rtp``;
* receivers (measured while the rtstream sender sends): the rtstream
  :class:`~rtstream.receiver.Receiver`, GStreamer ``udpsrc ! rtpvrawdepay ! fakesink``,
  FFmpeg ``-i x.sdp -fps_mode passthrough -c:v copy -f null -`` (no decoding: every
  receiver hands over the frame in its wire layout).

CPU is ``utime + stime`` of each process from ``/proc/<pid>/stat`` (all its threads;
loopback delivery done in a system call is charged to the caller), sampled at the start
and at the end of a steady window that begins ``warmup`` seconds after start, so start-up
is excluded. Frames in the window come from each process's own counter (rtstream workers
print JSON counters; GStreamer's ``fakesink`` last-message lines; FFmpeg ``-progress``);
a peer sender's frames are the frames its receiver delivered. Loss is the rtstream
receiver's sequence-number loss plus the kernel's drop counter of the receiving socket
(``/proc/net/udp``), which is the loss measure for all receivers. Late frames are the
rtstream sender's (last packet after the next frame's capture instant); frame-ready
latency is the rtstream receiver's (last packet read -> item delivered with its metadata).

Two rtstream-only cases follow the matrix (10-bit): ``-copy`` is the same stream taken by
the rtstream receiver with split reads off (``worker recv --no-split``: every payload
copied from the read buffer into the frame, the path before issue 18), for a comparison
in the same run; and a stream of twice the width and height (3840x2160 from 1080p) end to
end, over its own window when ``--uhd-seconds`` is given. The rtstream rows also give the
share of video packets whose payload the kernel put straight into the frame (split reads).

Scaling runs ``n`` streams of 1080p60 10-bit at once, all sent and received on this
machine (n = 1, 2, 4, ... up to ``--max-streams``, stopping after the first ``n`` where a
stream loses packets, falls behind or sends late frames, then halving the interval
between the last clean ``n`` and that one: the last clean row is the most streams this
machine carries). By default one sender process drives all ``n`` streams on one event
loop (``worker send --streams n``) and one receiver process takes them all (``worker recv
--sdp A --sdp B ...``). That layout measured
cheapest here, since every process pays its own event-loop wake-ups: when it was chosen,
4 streams cost 0.9-1.0 CPU s/s in all with it against 1.26 with one receiver process per
stream (receivers at ~2.0 against ~3.0 CPU ms per frame). ``--scale-tx``/``--scale-rx``
choose other groupings (``each``: one process per stream, ``one``, or ``k`` processes
sharing the streams). Per ``n`` it reports late frames (the senders' own count over the
whole run, and the part of it in the steady window), packets lost (receiver
sequence-number loss, likewise, plus the kernel's drops on the video and metadata
sockets), the fps each stream achieved at the sender and at the receiver, the CPU per
frame of the sender processes and of the receiver processes (their CPU over the window
divided by the frames they sent or delivered) and how crowded the cores were (Linux PSI:
share of the window in which some task waited for a CPU).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from rtstream.errors import ConfigError

log = logging.getLogger(__name__)

CLK_TCK = os.sysconf("SC_CLK_TCK")
TOOLS = ("rtstream", "gstreamer", "ffmpeg")


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What ``rtstream bench all`` runs.

    Parameters
    ----------
    seconds : float
        Length of each steady measurement window.
    warmup : float
        Seconds from process start to the window (start-up excluded).
    width, height, fps : int, int, int
        Picture size and rate (1920x1080 at 60 unless testing the harness).
    depths : tuple of int
        Bit depths to run (8 and 10).
    max_streams : int
        Largest number of concurrent streams in the scaling run (0 skips it).
    repeat : int
        Repetitions of the whole matrix; figures are medians over them.
    tools : tuple of str
        Which peers to run next to rtstream.
    scale_senders, scale_receivers : int
        Processes the scaling run spreads its ``n`` senders / receivers over (streams
        split in contiguous groups, each process one event loop); 0 means one process
        per stream. Default: one sender process and one receiver process for all
        streams, the layout that measured cheapest here (see the module docstring).
    uhd_seconds : float or None
        Steady window of the 2160p case (None: ``seconds``); the issue's bar for it is a
        clean 60 s.
    split : bool
        rtstream receivers read video with split reads (payloads straight into the
        frame); False runs them with ``--no-split`` (the copying path) to compare.
    """

    seconds: float = 10.0
    warmup: float = 3.0
    width: int = 1920
    height: int = 1080
    fps: int = 60
    depths: tuple[int, ...] = (8, 10)
    max_streams: int = 8
    repeat: int = 1
    tools: tuple[str, ...] = TOOLS
    frames_in_file: int = 8
    scale_senders: int = 1
    scale_receivers: int = 1
    uhd_seconds: float | None = None
    split: bool = True

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ConfigError("--seconds", self.seconds, "a positive number of seconds")
        if self.uhd_seconds is not None and not self.uhd_seconds > 0:
            raise ConfigError("--uhd-seconds", self.uhd_seconds, "a positive number of seconds")
        if not self.warmup >= 0:
            raise ConfigError("--warmup", self.warmup, "zero or more seconds")
        if self.width % 2 or self.width < 16 or self.height < 2:
            raise ConfigError("--size", f"{self.width}x{self.height}", "an even width >= 16")
        for d in self.depths:
            if d not in (8, 10):
                raise ConfigError("--depths", d, "8 and/or 10")
        if self.max_streams < 0:
            raise ConfigError("--max-streams", self.max_streams, "0 or more")
        if self.repeat < 1:
            raise ConfigError("--repeat", self.repeat, "at least 1")
        for t in self.tools:
            if t not in TOOLS:
                raise ConfigError("--tools", t, "rtstream, gstreamer, ffmpeg")
        for key, v in (("--scale-tx", self.scale_senders), ("--scale-rx", self.scale_receivers)):
            if v < 0:
                raise ConfigError(key, v, "'each', 'one' or a number of processes")


# ------------------------------------------------------------------------------ processes


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of process ``pid`` (all threads) from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        text = f.read()
    fields = text[text.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes."""
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def udp_drops(port: int) -> int:
    """Kernel drop counter summed over the sockets bound to UDP ``port`` (/proc/net/udp)."""
    total = 0
    want = f":{port:04X}"
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) > 12 and parts[1].endswith(want):
                total += int(parts[-1])
    return total


def free_ports(count: int = 8) -> int:
    """A base port such that ``base .. base+count-1`` are free UDP ports on 127.0.0.1.

    Below Linux's default ephemeral range (ip_local_port_range 32768-60999), so a peer's
    socket bound to port 0 before the receiver binds cannot take one of them."""
    for _ in range(200):
        base = random.randrange(10000, 32768 - count, 2)
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port range")


_GST_FRAME = re.compile(rb"last-message = chain")
_FF_FRAME = re.compile(rb"^frame=(\d+)")


class Proc:
    """A measured child process with a thread collecting its frame counter."""

    def __init__(self, name: str, argv: list[str], parser: str, logdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.parser = parser
        self.samples: list[tuple[float, int]] = [(time.monotonic(), 0)]
        # frames a receiver saw, complete or not (counts what a peer sender sent)
        self.seen: list[tuple[float, int]] = [(time.monotonic(), 0)]
        self.last: dict[str, Any] = {}
        # every JSON status line with its arrival time (per-stream counters of workers)
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self.final: dict[str, Any] | None = None
        self.stderr_path = logdir / f"{name}.err"
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._err,
                                      stdin=subprocess.DEVNULL, env=env)
        self._thread = threading.Thread(target=self._read, name=f"bench {name}", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        frames = 0
        for line in self.popen.stdout:
            now = time.monotonic()
            if self.parser == "json":
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if "final" in obj:
                    self.final = obj["final"]
                    continue
                self.last = obj
                self.lines.append((now, obj))
                self.samples.append((now, int(obj.get("frames", 0))))
                self.seen.append((now, int(obj.get("seen", obj.get("frames", 0)))))
            elif self.parser == "gst":
                if _GST_FRAME.search(line):
                    frames += 1
                    self.samples.append((now, frames))
            elif self.parser == "ffmpeg":
                m = _FF_FRAME.match(line.strip())
                if m:
                    self.samples.append((now, int(m.group(1))))

    def frames_at(self, t: float, seen: bool = False) -> int:
        """The process's frame counter as last reported at or before ``t``."""
        best = 0
        for ts, n in self.seen if seen else self.samples:
            if ts > t:
                break
            best = n
        return best

    def line_at(self, t: float) -> dict[str, Any]:
        """The worker's last JSON status line that arrived at or before ``t``."""
        best: dict[str, Any] = {}
        for ts, obj in self.lines:
            if ts > t:
                break
            best = obj
        return best

    def each_at(self, t: float, key: str = "frames_each") -> list[int]:
        """A per-stream counter list of a worker as last reported at or before ``t``."""
        return [int(v) for v in self.line_at(t).get(key, [])]

    def rates_each(self, t0: float, t1: float, key: str = "frames_each") -> list[float]:
        """Per-stream rates between the status lines last reported at ``t0`` and ``t1``.

        Counts and times both come from the worker's lines (its ``t`` is this host's
        monotonic clock), so the rate does not suffer from line arrival jitter.
        """
        a, b = self.line_at(t0), self.line_at(t1)
        span = float(b.get("t", 0.0)) - float(a.get("t", 0.0))
        if not a or not b or span <= 0:
            return []
        return [(int(y) - int(x)) / span
                for x, y in zip(a.get(key, []), b.get(key, []), strict=False)]

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT, then SIGKILL after ``timeout``; wait for the reader."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._thread.join(5)
        self._err.close()

    def stderr_tail(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-1500:]
        except OSError:
            return ""


# ------------------------------------------------------------------------------ frames


def _picture(width: int, height: int, index: int, rng: np.random.Generator) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    """(Y, Cb, Cr) 10-bit planes of a moving ramp with noise (4:2:2: chroma half width)."""
    x = np.arange(width)
    y = np.arange(height)[:, None]
    luma = 64 + ((x[None, :] * 3 + y * 2 + index * 16) % 876)
    luma = luma + rng.integers(0, 24, (height, width))
    cb = 512 + ((x[None, : width // 2] - index * 8) % 400) - 200 + 0 * y
    cr = 512 + ((y - index * 4) % 400) - 200 + 0 * x[None, : width // 2]
    clip = np.clip
    return (clip(luma, 64, 940).astype(np.uint16), clip(cb, 64, 960).astype(np.uint16),
            clip(cr, 64, 960).astype(np.uint16))


def write_frames(directory: Path, cfg: BenchConfig, depth: int) -> tuple[Path, Path]:
    """Write the raw frame files: (wire order for rtstream + GStreamer, FFmpeg input)."""
    from rtstream.proto.formats import Sampling, VideoFormat

    fmt = VideoFormat(sampling=Sampling.YCBCR_422, depth=depth, width=cfg.width,
                      height=cfg.height, exactframerate=Fraction(cfg.fps))
    wire_path = directory / f"frames_{depth}.wire"
    ff_path = directory / f"frames_{depth}.{'uyvy422' if depth == 8 else 'yuv422p10le'}"
    rng = np.random.default_rng(depth)
    with open(wire_path, "wb") as fw, open(ff_path, "wb") as ff:
        for i in range(cfg.frames_in_file):
            yy, cb, cr = _picture(cfg.width, cfg.height, i, rng)
            planar = np.concatenate([yy.reshape(-1), cb.reshape(-1), cr.reshape(-1)])
            if depth == 10:
                wire = _wire10(yy, cb, cr)
                ff.write(planar.astype("<u2").tobytes())
            else:
                y8, cb8, cr8 = (yy >> 2).astype(np.uint8), (cb >> 2).astype(np.uint8), \
                    (cr >> 2).astype(np.uint8)
                uyvy = np.empty((cfg.height, cfg.width // 2, 4), np.uint8)
                uyvy[..., 0] = cb8
                uyvy[..., 1] = y8[:, 0::2]
                uyvy[..., 2] = cr8
                uyvy[..., 3] = y8[:, 1::2]
                wire = uyvy.reshape(-1)
                ff.write(wire.tobytes())
            assert wire.size == fmt.frame_bytes
            blob = np.ascontiguousarray(wire).tobytes()
            fw.write(blob)
            wire_path.with_name(f"{wire_path.stem}_{i}.frame").write_bytes(blob)
    return wire_path, ff_path


def _wire10(yy: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """ST 2110-20 10-bit 4:2:2 pgroups (Cb Y0 Cr Y1, 40 bits big-endian in 5 bytes)."""
    h, w = yy.shape
    s = np.empty((h, w // 2, 4), np.uint64)
    s[..., 0] = cb
    s[..., 1] = yy[:, 0::2]
    s[..., 2] = cr
    s[..., 3] = yy[:, 1::2]
    v = (s[..., 0] << 30) | (s[..., 1] << 20) | (s[..., 2] << 10) | s[..., 3]
    out = np.empty((h, w // 2, 5), np.uint8)
    for k in range(5):
        out[..., k] = (v >> np.uint64(8 * (4 - k))) & np.uint64(0xFF)
    return out.reshape(-1)


def video_sdp(path: Path, cfg: BenchConfig, depth: int, port: int) -> Path:
    """A video-only SDP (RFC 4175, payload type 96) for ``port``."""
    from rtstream.proto.formats import Sampling, VideoFormat
    from rtstream.proto.sdp import MediaKind, SdpMedia, SdpSession, write_sdp

    fmt = VideoFormat(sampling=Sampling.YCBCR_422, depth=depth, width=cfg.width,
                      height=cfg.height, exactframerate=Fraction(cfg.fps))
    session = SdpSession(
        origin_address="127.0.0.1", session_name="rtstream bench", session_id=1,
        media=(SdpMedia(kind=MediaKind.VIDEO, port=port, payload_type=96,
                        address="127.0.0.1", clock_rate=90000, video=fmt),),
    )
    path.write_text(write_sdp(session))
    return path


# ------------------------------------------------------------------------------ commands


def _py() -> list[str]:
    return [sys.executable, "-m", "rtstream.bench.worker"]


def sender_argv(tool: str, cfg: BenchConfig, depth: int, port: int, files: tuple[Path, Path],
                total: float, sdp_out: Path | None = None, streams: int = 1
                ) -> tuple[list[str], str]:
    """(argv, output parser) of a sender (rtstream: ``streams`` senders in one process)."""
    wire, ffin = files
    size = f"{cfg.width}x{cfg.height}"
    if tool == "rtstream":
        argv = [*_py(), "send", "--raw", str(wire), "--size", size, "--fps", str(cfg.fps),
                "--depth", str(depth), "--port", str(port), "--seconds", str(total)]
        if streams != 1:
            argv += ["--streams", str(streams)]
        if sdp_out is not None:
            argv += ["--sdp-out", str(sdp_out)]
        return argv, "json"
    if tool == "gstreamer":
        fmt = "uyvy" if depth == 8 else "uyvp"
        # one frame per file: multifilesrc then hands rawvideoparse whole frames, which
        # it timestamps at the frame rate (a multi-frame file per buffer paces wrongly)
        pattern = wire.with_name(wire.stem + "_%d.frame")
        pipeline = (f"multifilesrc location={pattern} loop=true start-index=0 "
                    f"stop-index={cfg.frames_in_file - 1} ! rawvideoparse width={cfg.width} "
                    f"height={cfg.height} format={fmt} framerate={cfg.fps}/1 ! rtpvrawpay ! "
                    f"udpsink host=127.0.0.1 port={port} sync=true")
        return [_need("gst-launch-1.0"), "-q", *pipeline.split()], "none"
    if tool == "ffmpeg":
        pix, codec = ("uyvy422", "rawvideo") if depth == 8 else ("yuv422p10le", "bitpacked")
        return [_need("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
                "-stream_loop", "-1", "-f", "rawvideo", "-pix_fmt", pix, "-s", size,
                "-r", str(cfg.fps), "-i", str(ffin), "-c:v", codec, "-f", "rtp",
                f"rtp://127.0.0.1:{port}"], "none"
    raise ConfigError("--tools", tool, ", ".join(TOOLS))


def receiver_argv(tool: str, cfg: BenchConfig, depth: int, port: int, sdp: Path,
                  total: float) -> tuple[list[str], str]:
    """(argv, output parser) of a receiver; ``sdp`` is what rtstream/FFmpeg read."""
    if tool == "rtstream":
        extra = [] if cfg.split else ["--no-split"]
        # the receiver's own socket buffer (ReceiverConfig.rcvbuf None: 8 frames of a
        # video flow, at least 32 MiB)
        return [*_py(), "recv", "--sdp", str(sdp), "--seconds", str(total), *extra], "json"
    if tool == "gstreamer":
        caps = ("application/x-rtp,media=(string)video,clock-rate=(int)90000,"
                "encoding-name=(string)RAW,sampling=(string)YCbCr-4:2:2,"
                f"depth=(string){depth},width=(string){cfg.width},"
                f"height=(string){cfg.height},payload=(int)96")
        return [_need("gst-launch-1.0"), "-v", "udpsrc", "address=127.0.0.1", f"port={port}",
                "buffer-size=33554432", f"caps={caps}", "!", "rtpvrawdepay", "!",
                "fakesink", "silent=false", "sync=false"], "gst"
    if tool == "ffmpeg":
        return [_need("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error",
                "-protocol_whitelist", "file,udp,rtp", "-buffer_size", "33554432",
                "-i", str(sdp), "-fps_mode", "passthrough", "-c:v", "copy", "-f", "null", "-",
                "-progress", "pipe:1", "-stats_period", "0.1"], "ffmpeg"
    raise ConfigError("--tools", tool, ", ".join(TOOLS))


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise ConfigError("--tools", program, f"installed peers ({program} not found on PATH)")
    return path


# ------------------------------------------------------------------------------ runs


@dataclass
class Window:
    """CPU and frame counters of a set of processes over the steady window."""

    t0: float = 0.0
    t1: float = 0.0
    cpu0: dict[str, float] = field(default_factory=dict)
    cpu1: dict[str, float] = field(default_factory=dict)
    psi0: int | None = None
    psi1: int | None = None

    def cpu_pressure(self) -> float | None:
        """Share of the window (%) in which some runnable task of this machine waited for
        a CPU (Linux PSI ``/proc/pressure/cpu`` "some"); None when the kernel lacks PSI."""
        if self.psi0 is None or self.psi1 is None or self.t1 <= self.t0:
            return None
        return 100.0 * (self.psi1 - self.psi0) / 1e6 / (self.t1 - self.t0)


def cpu_pressure_total() -> int | None:
    """Microseconds some task waited for a CPU since boot (PSI), or None."""
    try:
        with open("/proc/pressure/cpu") as f:
            for line in f:
                if line.startswith("some"):
                    return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _measure(procs: list[Proc], cfg: BenchConfig) -> Window:
    deadline = time.monotonic() + cfg.warmup
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited early: {p.stderr_tail()}")
        time.sleep(0.05)
    w = Window()
    w.t0 = time.monotonic()
    w.cpu0 = {p.name: p.cpu() for p in procs}
    w.psi0 = cpu_pressure_total()
    time.sleep(cfg.seconds)
    w.t1 = time.monotonic()
    w.cpu1 = {p.name: p.cpu() for p in procs}
    w.psi1 = cpu_pressure_total()
    for p in procs:
        if not p.alive():
            raise RuntimeError(f"{p.name} exited during the window: {p.stderr_tail()}")
    return w


def _wait_bound(port: int, timeout: float = 10.0) -> None:
    """Wait until something has bound UDP ``port`` on this host."""
    want = f":{port:04X}"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with open("/proc/net/udp") as f:
            if any(line.split()[1].endswith(want) for line in list(f)[1:]):
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing bound UDP port {port} within {timeout} s")


def _per_frame(cpu: float, frames: int) -> float | None:
    return 1e3 * cpu / frames if frames > 0 else None


def run_pair(sender: str, receiver: str, cfg: BenchConfig, depth: int,
             files: tuple[Path, Path], work: Path) -> dict[str, Any]:
    """One sender -> receiver run; both processes measured."""
    port = free_ports(8)
    total = cfg.warmup + cfg.seconds + 30
    tag = f"{sender}-{receiver}-{depth}-{port}"
    rt_sdp = work / f"{tag}.rtstream.sdp"
    peer_sdp = video_sdp(work / f"{tag}.video.sdp", cfg, depth, port)
    procs: list[Proc] = []
    try:
        if receiver == "rtstream" and sender == "rtstream":
            # the receiver needs the sender's SDP (metadata flow included): write it first
            from rtstream.bench._sdp import rtstream_sdp

            rtstream_sdp(rt_sdp, files[0], cfg, depth, port)
            rx_sdp = rt_sdp
        else:
            rx_sdp = peer_sdp
        rargv, rparse = receiver_argv(receiver, cfg, depth, port, rx_sdp, total)
        rx = Proc(f"{tag}.rx", rargv, rparse, work)
        procs.append(rx)
        _wait_bound(port)
        time.sleep(0.3)
        sargv, sparse = sender_argv(sender, cfg, depth, port, files, total)
        tx = Proc(f"{tag}.tx", sargv, sparse, work)
        procs.append(tx)
        w = _measure(procs, cfg)
        drops = udp_drops(port)
    finally:
        for p in reversed(procs):
            p.stop()
    secs = w.t1 - w.t0
    rx_frames = rx.frames_at(w.t1) - rx.frames_at(w.t0)
    if sparse == "json":
        tx_frames = tx.frames_at(w.t1) - tx.frames_at(w.t0)
    else:  # a peer sender: the frames its rtstream receiver saw, complete or not
        tx_frames = rx.frames_at(w.t1, seen=True) - rx.frames_at(w.t0, seen=True)
    tx_cpu = w.cpu1[tx.name] - w.cpu0[tx.name]
    rx_cpu = w.cpu1[rx.name] - w.cpu0[rx.name]
    out: dict[str, Any] = {
        "sender": sender,
        "receiver": receiver,
        "depth": depth,
        "window_s": secs,
        "sender_cpu_s": tx_cpu,
        "receiver_cpu_s": rx_cpu,
        "sender_frames": tx_frames,
        "receiver_frames": rx_frames,
        "sender_fps": tx_frames / secs,
        "receiver_fps": rx_frames / secs,
        "sender_cpu_ms_per_frame": _per_frame(tx_cpu, tx_frames),
        "receiver_cpu_ms_per_frame": _per_frame(rx_cpu, rx_frames),
        "kernel_drops": drops,
        "cpu_pressure_pct": w.cpu_pressure(),
        "late_frames": None,
        "late_frames_in_window": None,
        "packets_lost": None,
        "packets_per_s": None,
        "latency_p50_us": None,
        "latency_p99_us": None,
    }
    if sparse == "json":
        tf = tx.final or {}
        out["late_frames"] = int(tf.get("late_frames", tx.last.get("late", 0)))
        out["late_frames_in_window"] = (int(tx.line_at(w.t1).get("late", 0))
                                        - int(tx.line_at(w.t0).get("late", 0)))
        out["packets_per_s"] = _rate(tx, w, "packets")
    if rparse == "json":
        rf = rx.final or {}
        out["packets_lost"] = int(rf.get("packets_lost", rx.last.get("lost", 0)))
        out["latency_p50_us"] = rf.get("latency_p50_us")
        out["latency_p99_us"] = rf.get("latency_p99_us")
        # packets whose payload the kernel put straight in the frame (split reads)
        out["placed_share"] = (int(rx.last.get("placed", 0)) / int(rx.last["packets"])
                               if rx.last.get("packets") else None)
        if out["packets_per_s"] is None:
            out["packets_per_s"] = _rate(rx, w, "packets")
    out["loss"] = drops + (out["packets_lost"] or 0)
    return out


def _rate(p: Proc, w: Window, key: str) -> float | None:
    """Per-second rate of a JSON counter over the window (from the worker's lines)."""
    # the reader keeps only frames in samples; re-derive from the final counters instead
    final = p.final or {}
    if key in final and final.get("elapsed_s"):
        return float(final[key]) / float(final["elapsed_s"])
    if key in final and p.samples:
        span = p.samples[-1][0] - p.samples[0][0]
        return float(final[key]) / span if span > 0 else None
    return None


def _groups(n: int, procs: int) -> list[range]:
    """Stream indices ``0..n-1`` in contiguous groups over ``procs`` processes (0: each)."""
    k = n if procs <= 0 else min(procs, n)
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(k)]


def _procs_label(procs: int, n: int, what: str) -> str:
    k = len(_groups(n, procs))
    if k == n and n > 1:
        return f"one {what} process per stream"
    if k == 1:
        return f"one {what} process" + (f" for all {n} streams" if n > 1 else "")
    return f"{k} {what} processes sharing the streams"


def scaling_layout(cfg: BenchConfig, n: int | None = None) -> str:
    """How the scaling run places ``n`` streams in processes (any ``n`` when None)."""
    if n is None:
        def label(procs: int, what: str) -> str:
            if procs == 0:
                return f"one {what} process per stream"
            if procs == 1:
                return f"one {what} process for all streams"
            return f"{procs} {what} processes sharing the streams"

        return f"{label(cfg.scale_senders, 'sender')}, {label(cfg.scale_receivers, 'receiver')}"
    return (f"{_procs_label(cfg.scale_senders, n, 'sender')}, "
            f"{_procs_label(cfg.scale_receivers, n, 'receiver')}")


def run_scaling(cfg: BenchConfig, files: tuple[Path, Path], work: Path) -> list[dict[str, Any]]:
    """n concurrent rtstream 10-bit streams for n = 1, 2, 4, ... (at most ``max_streams``)
    until one fails, then halving the interval between the last clean and the failed
    count, so the most streams without loss is found (rows in order of n)."""
    rows: dict[int, dict[str, Any]] = {}

    def run(n: int) -> bool:
        row = rows[n] = _scale_once(n, cfg, files, work)
        log.info("scaling %d streams (%s): ok=%s", n, row["layout"], row["ok"])
        return bool(row["ok"])

    good, n = 0, 1
    while n <= cfg.max_streams and run(n):
        good = n
        n = n + 1 if n == cfg.max_streams else min(2 * n, cfg.max_streams)
    while n <= cfg.max_streams and n - good > 1:
        mid = (good + n) // 2
        if run(mid):
            good = mid
        else:
            n = mid
    return [rows[k] for k in sorted(rows)]


def _scale_once(n: int, cfg: BenchConfig, files: tuple[Path, Path], work: Path
                ) -> dict[str, Any]:
    """``n`` streams sent and received on this machine at once; one row of the result."""
    from rtstream.bench._sdp import rtstream_sdp
    from rtstream.bench.worker import PORT_STEP

    depth = 10
    total = cfg.warmup + cfg.seconds + 30
    base = free_ports(PORT_STEP * n)
    ports = [base + PORT_STEP * i for i in range(n)]
    sdps = [rtstream_sdp(work / f"scale{n}-{i}-{p}.sdp", files[0], cfg, depth, p)
            for i, p in enumerate(ports)]
    tx_groups = _groups(n, cfg.scale_senders)
    rx_groups = _groups(n, cfg.scale_receivers)
    procs: list[Proc] = []
    txs: list[Proc] = []
    rxs: list[Proc] = []
    try:
        for g in rx_groups:
            argv = [*_py(), "recv", *(a for i in g for a in ("--sdp", str(sdps[i]))),
                    "--seconds", str(total)]
            rxs.append(Proc(f"scale{n}-rx{g.start}-{ports[g.start]}", argv, "json", work))
        procs += rxs
        for port in ports:
            _wait_bound(port)
        time.sleep(0.3)
        for g in tx_groups:
            argv, _ = sender_argv("rtstream", cfg, depth, ports[g.start], files, total,
                                  streams=len(g))
            txs.append(Proc(f"scale{n}-tx{g.start}-{ports[g.start]}", argv, "json", work))
        procs += txs
        w = _measure(procs, cfg)
        drops = [udp_drops(q) + udp_drops(q + 2) for q in ports]  # video + metadata
    finally:
        for p in reversed(procs):
            p.stop()
    secs = w.t1 - w.t0

    def per_stream(group_procs: list[Proc], groups: list[range]) -> list[int]:
        """Frames of each stream in the window, from the workers' ``frames_each``."""
        out = [0] * n
        for proc, g in zip(group_procs, groups, strict=True):
            a, b = proc.each_at(w.t0), proc.each_at(w.t1)
            for j, i in enumerate(g):
                out[i] = (b[j] if j < len(b) else 0) - (a[j] if j < len(a) else 0)
        return out

    def rates(group_procs: list[Proc], groups: list[range]) -> list[float]:
        out = [0.0] * n
        for proc, g in zip(group_procs, groups, strict=True):
            r = proc.rates_each(w.t0, w.t1)
            for j, i in enumerate(g):
                out[i] = r[j] if j < len(r) else 0.0
        return out

    tx_frames = per_stream(txs, tx_groups)
    rx_frames = per_stream(rxs, rx_groups)
    tx_fps = rates(txs, tx_groups)
    rx_fps = rates(rxs, rx_groups)
    late = [0] * n
    for proc, g in zip(txs, tx_groups, strict=True):
        final = proc.final or {}
        each = final.get("per_stream") or []
        for j, i in enumerate(g):
            late[i] = int(each[j]["late_frames"]) if j < len(each) else int(
                proc.last.get("late", 0))
    lost = [0] * n
    for proc, g in zip(rxs, rx_groups, strict=True):
        final = proc.final or {}
        if len(g) == 1:
            lost[g.start] = int(final.get("packets_lost", proc.last.get("lost", 0)))
        else:
            each = final.get("per_stream") or []
            for j, i in enumerate(g):
                lost[i] = int(each[j]["packets_lost"]) if j < len(each) else 0
    streams = [
        {"port": ports[i], "sender_fps": tx_fps[i], "receiver_fps": rx_fps[i],
         "late_frames": late[i], "packets_lost": lost[i], "udp_drops": drops[i],
         "loss": lost[i] + drops[i],
         "latency_p99_us": _stream_latency(rxs, rx_groups, i)}
        for i in range(n)
    ]
    tx_cpu = sum(w.cpu1[p.name] - w.cpu0[p.name] for p in txs)
    rx_cpu = sum(w.cpu1[p.name] - w.cpu0[p.name] for p in rxs)

    def in_window(group_procs: list[Proc], key: str) -> int:
        return sum(int(p.line_at(w.t1).get(key, 0)) - int(p.line_at(w.t0).get(key, 0))
                   for p in group_procs)

    fps = [s["sender_fps"] for s in streams] + [s["receiver_fps"] for s in streams]
    min_fps = min(fps)
    ok = (all(s["loss"] == 0 and s["late_frames"] == 0 for s in streams)
          and min_fps >= 0.97 * cfg.fps)
    return {
        "streams": n,
        "ok": ok,
        "layout": scaling_layout(cfg, n),
        "sender_processes": len(txs),
        "receiver_processes": len(rxs),
        "window_s": secs,
        "late_frames": sum(late),
        "packets_lost": sum(lost),
        # the part of them that happened in the steady window (the rest: start-up)
        "late_frames_in_window": in_window(txs, "late"),
        "packets_lost_in_window": in_window(rxs, "lost"),
        "udp_drops": sum(drops),
        "loss": sum(lost) + sum(drops),
        "min_fps": min_fps,
        "sender_fps_per_stream": statistics.fmean(s["sender_fps"] for s in streams),
        "receiver_fps_per_stream": statistics.fmean(s["receiver_fps"] for s in streams),
        "sender_cpu_ms_per_frame": _per_frame(tx_cpu, sum(tx_frames)),
        "receiver_cpu_ms_per_frame": _per_frame(rx_cpu, sum(rx_frames)),
        "sender_cpu_s_per_s": tx_cpu / secs,
        "receiver_cpu_s_per_s": rx_cpu / secs,
        "cpu_s_per_s": (tx_cpu + rx_cpu) / secs,
        "cpu_pressure_pct": w.cpu_pressure(),
        "per_stream": streams,
    }


def _stream_latency(rxs: list[Proc], groups: list[range], i: int) -> Any:
    for proc, g in zip(rxs, groups, strict=True):
        if i in g:
            final = proc.final or {}
            if len(g) == 1:
                return final.get("latency_p99_us")
            each = final.get("per_stream") or []
            j = i - g.start
            return each[j].get("latency_p99_us") if j < len(each) else None
    return None


# ------------------------------------------------------------------------------ driver


def machine_info() -> dict[str, Any]:
    """CPU model, core count, kernel, Python, peer versions, load average."""
    info: dict[str, Any] = {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
    }
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        keep = ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket",
                "Hypervisor vendor", "L1d cache", "L2 cache", "L3 cache")
        info["lscpu"] = {k.strip(): v.strip() for k, _, v in
                         (line.partition(":") for line in out.splitlines()) if k.strip() in keep}
    for prog, args in (("gst-launch-1.0", ["--version"]), ("ffmpeg", ["-version"])):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([prog, *args], capture_output=True, text=True,
                                 timeout=10).stdout
            info[prog] = out.splitlines()[0] if out else None
    return info


def _median(values: list[Any]) -> Any:
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not nums:
        return values[0] if values else None
    return statistics.median(nums)


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric field over repeated runs of one case (plus the samples)."""
    out = {k: _median([r[k] for r in runs]) for k in runs[0]}
    for k in ("loss", "late_frames", "late_frames_in_window", "kernel_drops", "packets_lost"):
        vals = [r[k] for r in runs if r[k] is not None]
        out[k] = max(vals) if vals else None  # the worst repeat, not the median
    out["repeats"] = len(runs)
    return out


def run_all(cfg: BenchConfig, work: Path | None = None) -> dict[str, Any]:
    """Run the whole matrix (and the scaling run); a JSON-ready result."""
    own = work is None
    wdir = Path(tempfile.mkdtemp(prefix="rtstream-bench-")) if work is None else work
    wdir.mkdir(parents=True, exist_ok=True)
    try:
        return _run_all(cfg, wdir)
    finally:
        if own:
            shutil.rmtree(wdir, ignore_errors=True)


def _pairs(tools: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    yield "rtstream", "rtstream"
    for t in tools:
        if t != "rtstream":
            yield t, "rtstream"
            yield "rtstream", t


#: runs of rtstream alone: the copying receiver (``--no-split``), and twice the picture size
COPY_KEY = "rtstream->rtstream@10-copy"
BIG_KEY = "rtstream->rtstream@10-2x"


def _rtstream_row(base: dict[str, Any]) -> dict[str, Any]:
    """A summary row of an rtstream-only run (no peer, no ratios)."""
    row = {key: {"rtstream": base[src]} for key, src in (
        ("send_cpu_ms_per_frame", "sender_cpu_ms_per_frame"),
        ("recv_cpu_ms_per_frame", "receiver_cpu_ms_per_frame"),
        ("send_fps", "sender_fps"), ("recv_fps", "receiver_fps"), ("recv_loss", "loss"),
        ("send_late_frames", "late_frames"), ("packets_per_s", "packets_per_s"),
        ("latency_p50_us", "latency_p50_us"), ("latency_p99_us", "latency_p99_us"))}
    row["send_ratio"] = {}
    row["recv_ratio"] = {}
    row["placed_share"] = {"rtstream": base.get("placed_share")}
    return row


def _run_all(cfg: BenchConfig, work: Path) -> dict[str, Any]:
    started = time.time()
    info = machine_info()
    files = {d: write_frames(work, cfg, d) for d in cfg.depths}
    samples: dict[str, list[dict[str, Any]]] = {}
    for r in range(cfg.repeat):
        for depth in cfg.depths:
            for s, rcv in _pairs(cfg.tools):
                key = f"{s}->{rcv}@{depth}"
                log.info("run %d/%d: %s", r + 1, cfg.repeat, key)
                samples.setdefault(key, []).append(run_pair(s, rcv, cfg, depth, files[depth],
                                                            work))
    if 10 in cfg.depths and "rtstream" in cfg.tools:
        # rtstream alone: the same 10-bit stream with the copying receiver (split reads
        # off) for a same-run comparison, and a stream of twice the width and height
        # (2160p from 1080p) end to end
        big = replace(cfg, width=2 * cfg.width, height=2 * cfg.height,
                      seconds=cfg.uhd_seconds or cfg.seconds)
        (work / "big").mkdir(exist_ok=True)
        big_files = write_frames(work / "big", big, 10)
        for r in range(cfg.repeat):
            log.info("run %d/%d: rtstream, copying receiver", r + 1, cfg.repeat)
            samples.setdefault(COPY_KEY, []).append(
                run_pair("rtstream", "rtstream", replace(cfg, split=False), 10, files[10], work))
            log.info("run %d/%d: rtstream %dx%d", r + 1, cfg.repeat, big.width, big.height)
            samples.setdefault(BIG_KEY, []).append(
                run_pair("rtstream", "rtstream", big, 10, big_files, work / "big"))
    runs = {k: _merge(v) for k, v in samples.items()}
    summary: dict[str, Any] = {}
    for depth in cfg.depths:
        row: dict[str, Any] = {}
        base = runs[f"rtstream->rtstream@{depth}"]
        row["send_cpu_ms_per_frame"] = {"rtstream": base["sender_cpu_ms_per_frame"]}
        row["recv_cpu_ms_per_frame"] = {"rtstream": base["receiver_cpu_ms_per_frame"]}
        row["send_fps"] = {"rtstream": base["sender_fps"]}
        row["recv_fps"] = {"rtstream": base["receiver_fps"]}
        row["recv_loss"] = {"rtstream": base["loss"]}
        row["send_late_frames"] = {"rtstream": base["late_frames"]}
        row["packets_per_s"] = {"rtstream": base["packets_per_s"]}
        row["latency_p50_us"] = {"rtstream": base["latency_p50_us"]}
        row["latency_p99_us"] = {"rtstream": base["latency_p99_us"]}
        row["placed_share"] = {"rtstream": base.get("placed_share")}
        row["send_ratio"] = {}
        row["recv_ratio"] = {}
        for t in cfg.tools:
            if t == "rtstream":
                continue
            tx = runs[f"{t}->rtstream@{depth}"]
            rx = runs[f"rtstream->{t}@{depth}"]
            row["send_cpu_ms_per_frame"][t] = tx["sender_cpu_ms_per_frame"]
            row["send_fps"][t] = tx["sender_fps"]
            row["recv_cpu_ms_per_frame"][t] = rx["receiver_cpu_ms_per_frame"]
            row["recv_fps"][t] = rx["receiver_fps"]
            row["recv_loss"][t] = rx["kernel_drops"]
            row["send_late_frames"][t] = None
            row["packets_per_s"][t] = tx["packets_per_s"]
            row["send_ratio"][t] = _ratio(base["sender_cpu_ms_per_frame"],
                                          tx["sender_cpu_ms_per_frame"])
            row["recv_ratio"][t] = _ratio(base["receiver_cpu_ms_per_frame"],
                                          rx["receiver_cpu_ms_per_frame"])
        summary[f"{cfg.width}x{cfg.height}p{cfg.fps}_422_{depth}bit"] = row
    if COPY_KEY in runs:
        summary[f"{cfg.width}x{cfg.height}p{cfg.fps}_422_10bit-copy"] = _rtstream_row(
            runs[COPY_KEY])
        summary[f"{2 * cfg.width}x{2 * cfg.height}p{cfg.fps}_422_10bit"] = _rtstream_row(
            runs[BIG_KEY])
    scaling: list[dict[str, Any]] = []
    if cfg.max_streams > 0 and 10 in cfg.depths:
        scaling = run_scaling(cfg, files[10], work)
    ok_streams = max((s["streams"] for s in scaling if s["ok"]), default=0)
    info["loadavg_end"] = os.getloadavg()
    return {
        "config": {
            "seconds": cfg.seconds, "uhd_seconds": cfg.uhd_seconds or cfg.seconds,
            "warmup": cfg.warmup, "width": cfg.width,
            "height": cfg.height, "fps": cfg.fps, "depths": list(cfg.depths),
            "max_streams": cfg.max_streams, "repeat": cfg.repeat, "tools": list(cfg.tools),
            "scale_senders": cfg.scale_senders, "scale_receivers": cfg.scale_receivers,
        },
        "machine": info,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": time.time() - started,
        "summary": summary,
        "runs": runs,
        "samples": samples,
        "scaling": scaling,
        "scaling_layout": {"sender_processes": _procs_name(cfg.scale_senders),
                           "receiver_processes": _procs_name(cfg.scale_receivers),
                           "text": scaling_layout(cfg)},
        "max_streams_ok": ok_streams,
    }


def _procs_name(procs: int) -> str:
    return "each" if procs == 0 else "one" if procs == 1 else str(procs)


def parse_procs(text: str, key: str) -> int:
    """``each`` (0), ``one`` (1) or a number of processes, for ``--scale-tx/-rx``."""
    if text == "each":
        return 0
    if text == "one":
        return 1
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise ConfigError(key, text, "'each', 'one' or a number of processes >= 1")


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b
