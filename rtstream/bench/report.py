"""Tables, plots and the performance document from a ``bench all`` result."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rtstream.bench.harness import TOOLS


def _f(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _rows(result: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    for case, row in result["summary"].items():
        tools = [t for t in TOOLS if t in row["send_cpu_ms_per_frame"]]
        for t in tools:
            rows.append([
                case, t,
                _f(row["send_cpu_ms_per_frame"].get(t)),
                _f(row["recv_cpu_ms_per_frame"].get(t)),
                _f(row["send_fps"].get(t), 1),
                _f(row["recv_fps"].get(t), 1),
                _f(row["packets_per_s"].get(t), 0),
                _f(row["recv_loss"].get(t)),
                _f(row["send_late_frames"].get(t)),
                _f(row["latency_p50_us"].get(t), 0),
                _f(row["latency_p99_us"].get(t), 0),
                _f(row["send_ratio"].get(t)) if t != "rtstream" else "",
                _f(row["recv_ratio"].get(t)) if t != "rtstream" else "",
            ])
    return rows


HEADER = ["case", "tool", "send ms/frame", "recv ms/frame", "send fps", "recv fps",
          "packets/s", "recv loss", "late", "lat p50 µs", "lat p99 µs",
          "rtstream/peer send", "rtstream/peer recv"]


def table(result: dict[str, Any]) -> str:
    """A plain-text table of the summary and the scaling run."""
    rows = [HEADER, *_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    if result.get("scaling"):
        lines.append("")
        c = result["config"]
        lines.append(f"concurrent {c['width']}x{c['height']}p{c['fps']} 10-bit streams, all sent "
                     f"and received on this machine ({_layout(result)})")
        srows = [SCALING_HEADER, *_scaling_rows(result)]
        widths = [max(len(r[i]) for r in srows) for i in range(len(SCALING_HEADER))]
        lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))
                  for r in srows]
        lines.append(f"  most streams without loss or lateness: {result['max_streams_ok']}")
    return "\n".join(lines)


SCALING_HEADER = ["streams", "ok", "processes (send + recv)", "late", "lost", "udp drops",
                  "send fps/stream", "recv fps/stream", "slowest fps", "send ms/frame",
                  "recv ms/frame", "CPU s/s", "CPU wait %"]


def _layout(result: dict[str, Any]) -> str:
    text = (result.get("scaling_layout") or {}).get("text")
    if text:
        return str(text)
    scaling = result.get("scaling") or [{}]
    return str(scaling[-1].get("layout", ""))


def _in_window(total: Any, window: Any) -> str:
    """A whole-run count, with the part in the steady window when that differs."""
    if window is None or window == total:
        return _f(total)
    return f"{_f(total)} ({_f(window)} in window)"


def _scaling_rows(result: dict[str, Any]) -> list[list[str]]:
    return [[
        str(s["streams"]), "yes" if s["ok"] else "NO",
        f"{s.get('sender_processes', s['streams'])} + {s.get('receiver_processes', s['streams'])}",
        _in_window(s["late_frames"], s.get("late_frames_in_window")),
        _in_window(s.get("packets_lost"), s.get("packets_lost_in_window")),
        _f(s.get("udp_drops")),
        _f(s.get("sender_fps_per_stream"), 1), _f(s.get("receiver_fps_per_stream"), 1),
        _f(s["min_fps"], 1), _f(s.get("sender_cpu_ms_per_frame")),
        _f(s.get("receiver_cpu_ms_per_frame")), _f(s["cpu_s_per_s"]),
        _f(s.get("cpu_pressure_pct"), 0),
    ] for s in result["scaling"]]


def markdown_table(result: dict[str, Any]) -> str:
    """The summary as a markdown table."""
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(r) + " |" for r in _rows(result)]
    return "\n".join(out)


def plot(result: dict[str, Any], directory: Path) -> list[Path]:
    """PNG plots: CPU per frame per tool, rtstream latency, scaling. Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    summary = result["summary"]
    cases = list(summary)
    tools = [t for t in TOOLS if any(t in summary[c]["send_cpu_ms_per_frame"] for c in cases)]

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "send_cpu_ms_per_frame", "sender"),
                           (axes[1], "recv_cpu_ms_per_frame", "receiver")):
        width = 0.8 / max(1, len(tools))
        for i, t in enumerate(tools):
            vals = [summary[c][key].get(t) or 0.0 for c in cases]
            xs = [j + i * width for j in range(len(cases))]
            bars = ax.bar(xs, vals, width, label=t)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks([j + width * (len(tools) - 1) / 2 for j in range(len(cases))])
        ax.set_xticklabels([c.split("_", 1)[1] for c in cases])
        ax.set_title(f"{title}: CPU ms per frame (user+sys)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("CPU ms / frame")
    axes[1].legend()
    fig.tight_layout()
    p = directory / "bench_cpu_per_frame.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    paths.append(p)

    fig, ax = plt.subplots(figsize=(5, 4))
    p50 = [summary[c]["latency_p50_us"].get("rtstream") or 0.0 for c in cases]
    p99 = [summary[c]["latency_p99_us"].get("rtstream") or 0.0 for c in cases]
    xs = list(range(len(cases)))
    ax.bar([x - 0.2 for x in xs], p50, 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], p99, 0.4, label="p99")
    ax.set_xticks(xs)
    ax.set_xticklabels([c.split("_", 1)[1] for c in cases])
    ax.set_ylabel("µs")
    ax.set_title("rtstream frame-ready latency\n(last packet read -> item delivered)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    p = directory / "bench_latency.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    paths.append(p)

    scaling = result.get("scaling") or []
    if scaling:
        fig, ax1 = plt.subplots(figsize=(6, 4))
        ns = [s["streams"] for s in scaling]
        ax1.plot(ns, [s["cpu_s_per_s"] for s in scaling], "o-", label="CPU s/s (all processes)")
        ax1.axhline(os.cpu_count() or 2, color="grey", ls=":", label="cores")
        ax1.plot(ns, [s.get("sender_cpu_s_per_s") or 0.0 for s in scaling], "^:",
                 color="C2", label="CPU s/s (senders)")
        ax1.set_xlabel("concurrent 10-bit streams (all sent and received here)")
        ax1.set_ylabel("CPU seconds per second")
        ax2 = ax1.twinx()
        ax2.plot(ns, [s["min_fps"] for s in scaling], "s--", color="C1", label="slowest fps")
        ax2.set_ylabel("fps of the slowest stream")
        ax2.set_ylim(0, max(65.0, max(s["min_fps"] for s in scaling) + 5))
        for s in scaling:
            if not s["ok"]:
                ax1.annotate("loss/late", (s["streams"], s["cpu_s_per_s"]), color="red",
                             xytext=(-6, 6), textcoords="offset points", ha="right")
        ax1.set_xticks(ns)
        h1, l1 = ax1.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax1.legend(h1 + h2, l1 + l2, loc="center left", fontsize=8)
        ax1.set_title("scaling on this machine\n" + _layout(result), fontsize=9)
        fig.tight_layout()
        p = directory / "bench_scaling.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)
    return paths


NOTES = """
## What the data path does (and why it is cheap)

- **Sender**: a frame is packetized into one preallocated `(packets, stride)` buffer (RTP
  and SRD headers by vectorized stores, payload by one reshaped copy) and handed to the
  kernel with UDP segmentation offload, 45 datagrams per `sendmsg`, in 16 paced bursts
  per frame. GStreamer's `udpsink` and FFmpeg's RTP muxer make one system call per
  datagram (~4,300 per 1080p 10-bit frame).
- **Receiver**: the video socket has `UDP_GRO`. On this kernel a GSO burst looped back to a
  GRO socket arrives as one coalesced read (measured: 54,900-byte reads with
  `UDP_GRO` segment size 1,220), so a 1080p 10-bit frame is ~100 `recvmsg_into` calls.
  The reads land directly in a preallocated arena whose row stride is the segment size,
  so the `(n, stride)` batch handed to the depacketizer is a view of what the kernel wrote
  (no copy in between). A paced sender's burst wakes the receiver every ~1 ms with a few
  hundred datagrams; decoding costs about as much per batch as per datagram, so a batch
  without a marker bit stays in the arena and the next read appends to it (up to 1,024
  rows or 1 ms). The marker packet ends a frame and is decoded at once, so no frame waits
  for that. Once the stream runs in order, reads are *split* (issue 18, below): each
  datagram's 20 header bytes go to a header row and its payload straight to the place in
  the frame where the next in-order packet belongs, so the kernel's copy is the only
  one; the headers are then verified in a fixed number of numpy calls and only what
  landed elsewhere is moved. Without a plan (stream start, unknown layout, ST 2022-7
  merge, interlaced or 4:2:0 video), a batch that continues the stream exactly (next
  sequence number, locked SSRC, plain single-SRD packets with valid fields) is decoded
  from one compact copy of its 20-byte headers in a fixed number of numpy calls, and its
  payload goes to the frame in one strided copy per run of contiguous destinations; any
  other batch takes the general parser, with the same result (differential tests hold
  the three together). Early in a paced frame a split reader does not even wake per
  burst: a held batch stops the socket's readiness events until 3 ms before the frame's
  last packet is due (timed from the last frame's first read to its marker), and one
  read then takes what queued in the kernel meanwhile (below, "Deferred reads").
  Frame buffers come from a pool: a buffer is written again only when nothing outside
  the pool holds it, and the pool is faulted in when the receiver starts (fresh 5 MB
  buffers cost their page faults during the first frames: with four streams in one
  process that stall once lost ~175,000 packets). An incomplete frame zeroes exactly the
  bytes it never received. Metadata grains of one flow share a layout: a grain whose
  bytes differ from a recent one only in values inside (0006,0001) is rebuilt from that
  template and then validated in full (24 us instead of 173 us per grain).
- **Senders without GSO** (GStreamer, FFmpeg, most hardware) on a path that does not
  coalesce (loopback): every GRO read is one datagram. After 8 such batches in a row the
  socket drops `UDP_GRO` and reads with `recvmmsg` (through ctypes: up to 4,096
  datagrams per system call into the rows of one buffer), and a held batch that grew by
  fewer than 64 datagrams stops the socket's readiness events until the 1 ms hold timer,
  so datagrams queue in the kernel instead of waking the loop one by one. GStreamer
  splits packets at row ends (two SRDs); segments of one packet that continue in the
  frame are copied as one. What remains is the kernel's per-datagram receive cost.
- **No compiled kernel**: the remaining per-frame cost is dominated by writing the frame
  once into memory that is not in the cache (the frame buffers cycle through the frames
  the application keeps: 8 recent ones for snapshots, the queue, the pairing wait) and by
  fixed per-frame Python work (metadata grain, pairing, event loop). Split reads showed
  that removing the user-space copy does not remove that cost: the kernel then pays it
  (below). The project stays pure Python + numpy, installable with pip alone.

## Split reads: the kernel writes into the frame (issue 18)

How (module docstrings of `rtstream/net/udp.py` and `rtstream/proto/rfc4175.py`): once an
in-order batch has shown the sender's payload size and that size tiles every row, the
depacketizer plans where the next packets' payloads belong (right after the furthest byte
the frame has recorded, or byte 0 of a spare buffer for the next frame). Each GRO read is
one `recvmsg` (ctypes) into an iovec array alternating a 20-byte header row with a payload
slot in the frame; datagrams past the frame's end go to spare rows. The headers are then
verified in ~15 numpy calls (sequence, SSRC, payload type, timestamp, SRD length, row,
offset, continuation, datagram length, marker only on the frame's last packet); the
verified prefix is accounted without touching the payload, and every later datagram is
put back together from its header row and wherever its payload landed and goes through
the general path. Only bytes no recorded segment wrote are ever planned, so a misplaced
payload spoils nothing: it is moved out before anything else writes there, and bytes no
segment records are zeroed when the frame is emitted; and a plan is good only until the
next batch is fed or a frame emitted (a held batch whose plan went stale, as after a
paused flow's silence flush, is given up rather than read into a frame the application
may hold). `tests/proto/test_rfc4175_split.py`
holds it to the general path (byte-identical frames and counters) with lost, duplicated,
reordered, truncated, longer, corrupt and foreign datagrams and carried reads. The
copying path stays for everything else (`worker recv --no-split` forces it).

Measured 2026-12-06 on this shared 2-CPU machine (other engineers' jobs running: load
1.4-2.2), rtstream sender -> rtstream receiver, 1080p60 4:2:2 10-bit, 5 s windows
after 2 s, split and copying receivers alternated in one script (`run_pair`):

| receiver | CPU ms/frame (3 + 2 runs) | frame-ready p50 | p99 | payloads placed by the kernel |
|---|---|---|---|---|
| split reads | 3.87, 3.50, 3.64; 3.85, 3.97 | 210-235 us | 373-765 us | 99.9 % |
| copying (before) | 3.64, 3.64, 3.91; 3.72, 3.89 | 366-440 us | 638-2842 us | 0 |

- **CPU: no gain at 1080p.** `perf record` (cpu-clock) of the receiver over 6 s of the
  same stream: split 1,430 ms of CPU, of which the kernel's copy into the frame
  (`_copy_to_iter`) 21.2 %, the interpreter 42.8 %, numpy 18.9 %; copying 1,372 ms, of
  which `memmove` (arena -> frame) 18.2 %, `_copy_to_iter` (socket -> arena) 5.8 %, the
  interpreter 42.6 %, numpy 16.1 %. The copies together cost 303 ms against 329 ms: the
  user-space copy mostly moved into the kernel, because what it cost was writing 5 MB into
  frame memory that is not in the cache (the frame buffers cycle through the frames the
  application keeps), not the second pass over the data. The per-drain verification and
  the iovec set-up add about as much as that saves. py-spy top lines (busy samples),
  before: `_feed_in_order` payload copy 13-25 %, `_drain_gro` `recvmsg_into` 6-17 %;
  after: `_SplitReader.read` `recvmsg` (the kernel copy into the frame) 21-38 %, iovec
  set-up 3 % (8 % before the iovecs were aimed a few hundred rows at a time), header
  verification ~3 %. The rest (about 1.7 ms per frame) is the interpreter: event loop,
  timers, metadata grain, pairing.
- **Latency: halved.** The copying path holds batches (up to 1,024 datagrams or 1 ms) and
  copies the held payloads when the marker packet comes; with split reads they are
  already in place, so frame-ready p99 stays under the issue's 0.5 ms in most runs.
- **2160p60 10-bit** (the same script, 3840x2160, 5 s): split reads 7.56 CPU ms per frame
  against 9.14 for the copying receiver (0.83x; 2.0x the 1080p figure, the issue's
  bound is 4.5x), sender 7.4 ms per frame, p50 342 against 807 us. Neither was clean on
  the loaded machine (65,614 and 16,678 packets lost in 5 s, 34-43 % CPU wait from other
  jobs). On a quiet machine since (`bench all --uhd-seconds 60`, 2026-12-07): 0 lost and 0
  late over 60 s, 7.60 CPU ms per frame (2.9x 1080p), frame-ready p99 529 us.
- Tried and dropped: frame buffers on transparent huge pages (`MADV_HUGEPAGE`; the
  machine's THP mode is `madvise`): no gain in an in-process drain + depacketize loop
  (copying 2.27 against 2.09 ms per frame without, split 2.67 against 2.50). Not built:
  split reads for senders without GSO (`recvmmsg` with two iovecs per datagram).

## Deferred reads: one wake-up for most of a frame (issue 18)

`perf record` of the split receiver (1080p60 10-bit, 8 s, cpu-clock): the interpreter
44 %, numpy 16 %, the kernel 33 % (its copy into the frame, `_copy_to_iter`, 22 %). The
same receiver fed by an unpaced sender (`worker send --pacing none`: each frame in one
burst) spent 2.45-2.52 CPU ms per frame against 3.67-3.75 paced: about 1.2 ms per frame
went to waking up once per burst of the sender (16 per frame: `epoll_wait`, the read
callback, the timers, the pairing deadline), not to the data. So a held split batch
early in a frame now also stops the socket's readiness events (`VideoReader._hold`) until
3 ms before the frame's last packet is due, from the pacing of the last frame as read
(first read to marker read); one read then drains what queued in the kernel, and from
there the reader wakes per burst again, so the frame's last packets are read as they
arrive. The wait is at most one frame period and at most the time in which a quarter
of the socket's buffer fills (datagrams take up to twice their size there), and a
sender that sends a frame at once (GStreamer, FFmpeg, `--pacing none`) never triggers
it. It also ends before 4.5 MB of the frame have queued (a 1080p 10-bit frame is
5.2 MB, so 1080p is unaffected): at 2160p60 a single deferral up to the margin left ~17 MB
(~4 ms of reading) for one wake-up just before the frame's end, and frame-ready p99 was
2.06 ms; with the cap, 0.51-0.55 ms in two runs at the same 7.6 CPU ms per frame.
Margin measured (two runs each): 2 ms left the frame's last read too big (frame-ready
p99 2.6-2.9 ms), 3 ms gave 2.73-2.77 ms per frame with p99 0.41-0.48 ms, 4-5 ms saved
less (2.85-3.13). A test (`tests/net/test_receiver.py`, 720p in 16 bursts per frame)
checks that most frames are read this way and arrive byte-exact with their grains.
The cost: a frame whose packets come more than 3 ms sooner than the last one's did waits
in the kernel until the timer (at most one frame period); frame-ready latency as measured
here starts at the read, so it does not show that case. The flow's silence check (every
50 ms) read a deferred socket at once, which cut about one deferral in three short; it
now does so only when the flow looks silent. ST 2022-7 flows defer too (see "ST 2022-7:
two networks" below).
Nor does the copying path (frames it cannot read split): it would copy most of a frame
in one go just before the frame's end, and its frame-ready p99 rose to 2.1-2.8 ms in the
two `bench all` runs that tried it (CPU 3.14-3.41 against 3.68 ms per frame).

Several streams in one `rtstream receive` (`--sdp` given once per stream) run on one
event loop, the layout the scaling run measured cheapest (see above); one outbox and one
archive association serve them all.

How many streams this 2-core machine carries (2026-12-07, the scaling run with its
interval halving): **5** with one sender and one receiver process; at 6 the receiver
process fills its core (6 streams x 54 fps x 3.07 ms) and falls behind. Two receiver
processes sharing the streams (`--scale-rx 2`) did worse (3 clean; at 4 the sender
process, now sharing a core with a receiver, sent 7 frames late). Eight streams need
8 x 60 x (sender 2.0-2.4 + receiver 2.4-2.7) ms = 2.1-2.5 CPU seconds per second, more
than the two cores have, whatever the layout.

## Caveats

- The machine is shared: other test suites ran during the measurement (see the load
  averages above). Figures, especially late frames and loss under load, are noisy; rerun
  with `--repeat 3` when the machine is idle for medians.
- Peer senders are measured against the rtstream receiver, peer receivers against the
  rtstream sender (GSO). A receiver that does not use GRO (GStreamer, FFmpeg) gets every
  datagram with its own system call; rtstream gets coalesced reads because it asks for
  them: that difference is part of what is measured.
- Latency is reported for rtstream only (the peers have no equivalent event).

## ST 2022-7: two networks

`rtstream bench dup` (module docstring of `rtstream/bench/dup.py`: one rtstream sender
on two legs over 127.0.0.1, five receivers measured one after the other over a steady
window, CPU from `/proc`). Measured 2026-12-07 03:37 UTC on this 2-CPU machine with
nothing else running, 1080p60 4:2:2 10-bit, 10 s window (`rtstream bench dup --seconds 10`),
as root:

| receiver | CPU ms/frame | fps | loss | frame-ready p50 / p99 |
|---|---|---|---|---|
| rtstream, 1 leg | 3.15 | 60.0 | 0 | 290 / 1,211 us |
| rtstream, 2 legs merged, copies dropped in the kernel | 3.43 | 60.0 | 0 | 331 / 1,769 us |
| rtstream, 2 legs merged, copies dropped by the merge (`--no-dup-kernel-filter`) | 4.61 | 59.5 | 0 | 335 / 656 us |
| GStreamer `udpsrc ! rtpvrawdepay`, 1 leg | 9.85 | 60.0 | 0 | - |
| GStreamer 2 x `udpsrc ! funnel ! rtpjitterbuffer ! rtpvrawdepay` | (2.20) | (591) | 3,468,019 datagrams | - |

- Merging both legs costs **1.09x** the single-leg receiver in this run (1.17x in a run
  at 03:13 UTC on a busier machine; the issue's target is 1.3x). The second leg's copies
  never reach the process: an eBPF socket filter on each leg (`rtstream/net/dupfilter.py`)
  remembers, per RTP sequence number, the timestamp and SSRC of the packet last seen and
  which legs delivered it, and drops a receive buffer of the secondary leg when every
  datagram in it is a copy of the other leg's. The kernel still receives both legs (that
  work is the network's, not the process's); the process reads the second leg only for
  what the first lost or delivered late. The leg whose packets come first is the primary
  one and keeps them all (the reader moves that role when the other leg starts winning,
  e.g. during an outage), so two paths of equal delay do not split the stream between the
  two sockets.
- Without `CAP_BPF` (or with `--no-dup-kernel-filter`) the merge reads and drops every
  copy itself: **1.46x** here (1.81x at 03:13 UTC; 1.60-1.64x in the runs of 2026-12-06).
  What that costs, from `perf` on 2026-12-06: the kernel's copy of the second leg's
  datagrams to user space is ~0.7 ms a frame, and the Python and numpy around those
  reads ~0.6 more. The merged flow defers its reads as a single leg does (above): when
  the leading leg holds a split batch early in a paced frame, both legs stop their
  readiness events; at the wake the leading leg is read first, and the other leg 1 ms
  after the frame's last packet (its copies then drop as copies), or at once when a gap
  in the merge waits for it.
- The kernel counts each buffer its filter drops as a socket drop (`/proc/net/udp`) and a
  UDP `InErrors`; the benchmark takes the filter's own count (`filtered_buffers` of each
  leg) out of the drops it reports, so the loss column above is real loss.
- GStreamer's stand-in could not keep up at this rate here: its two sockets dropped
  3.5 M datagrams in the run (kernel drop counters) and its frame counter counts the
  depayloader's partial outputs (591/s), so its CPU per frame is meaningless; even when it
  keeps up, `rtpjitterbuffer` only drops duplicates and still loses what both paths do not
  carry in time, with its own latency (`latency=10` ms here).
- **Latency.** When both legs deliver, winners continue the stream and go on at once: no
  added latency beyond the second socket's reads. A packet missing on the leading leg
  holds the datagrams after it until the other leg's copy fills the gap or `dup_skew_ms`
  (default 10 ms) passes; so the path delay difference the merge tolerates without loss
  is also the most latency it adds, and only for the frames behind such a packet. Set it
  to the largest delay difference of the two networks (a few ms on one campus;
  tests/reliability/test_st2022_7.py uses 5 ms of delay on one leg and reordering on the
  other with the default).
"""


def write_doc(result: dict[str, Any], path: Path, plot_dir: Path | None) -> None:
    """(Re)write the performance document: method, machine, table, plots, scaling."""
    from rtstream.bench import harness

    m = result["machine"]
    cfg = result["config"]
    lines = [
        "# rtstream performance",
        "",
        "Generated by `rtstream bench all --json ... --plot docs/img --doc docs/performance.md`"
        f" on {result['started']} ({result['duration_s']:.0f} s). Do not edit by hand:"
        " rerun the harness.",
        "",
        "## Method",
        "",
        (harness.__doc__ or "").split("Method\n------\n", 1)[-1].strip(),
        "",
        f"Window {cfg['seconds']} s"
        + (f" (2160p: {cfg['uhd_seconds']} s)"
           if cfg.get("uhd_seconds", cfg["seconds"]) != cfg["seconds"] else "")
        + f" after {cfg['warmup']} s warm-up, "
        f"{cfg['width']}x{cfg['height']} at {cfg['fps']} fps, repeated {cfg['repeat']} time(s): "
        "figures are medians over the repeats; loss and late frames are the worst repeat.",
        "",
        "## Machine",
        "",
        f"- CPU: {m.get('lscpu', {}).get('Model name', '?')}, {m.get('cpus')} CPUs "
        f"({m.get('lscpu', {}).get('Hypervisor vendor', 'bare metal')} guest)",
        f"- kernel {m['kernel']}, Python {m['python']}",
        f"- {m.get('gst-launch-1.0')}; {m.get('ffmpeg')}",
        f"- load average at start {tuple(round(x, 2) for x in m['loadavg_start'])}, at end "
        f"{tuple(round(x, 2) for x in m.get('loadavg_end', (0, 0, 0)))} (shared machine: "
        "other work runs too)",
        "",
        "## Results",
        "",
        "CPU per frame is user+system CPU of the process over the window divided by the "
        "frames it sent or delivered; ratios below 1 mean rtstream is cheaper.",
        "",
        markdown_table(result),
        "",
    ]
    if plot_dir is not None:
        rel = os.path.relpath(plot_dir, path.parent)
        lines += [f"![CPU per frame]({rel}/bench_cpu_per_frame.png)",
                  f"![latency]({rel}/bench_latency.png)"]
        if result.get("scaling"):
            lines.append(f"![scaling]({rel}/bench_scaling.png)")
        lines.append("")
    if result.get("scaling"):
        layout = _layout(result)
        lines += ["## Concurrent streams", "",
                  f"n streams of {cfg['width']}x{cfg['height']}p{cfg['fps']} 4:2:2 10-bit, "
                  "all sent and received on this machine "
                  f"at once ({layout}). Late frames are the senders' count over the whole run "
                  "(start-up included; the part in the steady window in brackets when it "
                  "differs); lost packets are the receivers' sequence-number loss (same "
                  "convention), udp drops the "
                  "kernel's drops on the receiving sockets; CPU per frame is per side "
                  "(all its processes' CPU over the window / frames sent or delivered); "
                  "CPU wait is the share of the window in which some task of the machine "
                  "waited for a CPU (Linux PSI), a measure of how crowded the cores were.", "",
                  "| " + " | ".join(SCALING_HEADER) + " |", "|" + "---|" * len(SCALING_HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in _scaling_rows(result)]
        lines += ["", f"Most streams without loss or lateness: **{result['max_streams_ok']}**.",
                  ""]
    lines += [NOTES.strip(), ""]
    lines.append(f"<!-- generated {time.strftime('%Y-%m-%d %H:%M:%S')} -->")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
