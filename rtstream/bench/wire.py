"""CPU cost of the RFC 4175 wire layer per 1080p frame (``rtstream bench wire``).

Packetizing is timed per frame; depacketizing feeds the frame's datagrams in batches of
1024 (what a drained receive socket hands over), with ``time.process_time`` so that other
processes on a shared machine count less than with wall-clock time.
"""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np

from rtstream.proto.formats import Sampling, VideoFormat
from rtstream.proto.rfc4175 import VideoDepacketizer, VideoPacketizer

RECEIVE_BATCH = 1024

CASES: dict[str, VideoFormat] = {
    "1080p_422_8": VideoFormat(
        sampling=Sampling.YCBCR_422, depth=8, width=1920, height=1080,
        exactframerate=Fraction(60),
    ),
    "1080p_422_10": VideoFormat(
        sampling=Sampling.YCBCR_422, depth=10, width=1920, height=1080,
        exactframerate=Fraction(60),
    ),
}


def bench_case(fmt: VideoFormat, frames: int) -> dict[str, float]:
    """Measure one format over ``frames`` frames (after one warm-up frame)."""
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 256, fmt.frame_bytes, dtype=np.uint8) for _ in range(2)]
    pk = VideoPacketizer(fmt, ssrc=0x5EED, sequence=0xFFFF0000)
    dp = VideoDepacketizer(fmt)
    n = pk.packets_per_frame
    captured = []
    pk.packetize(pool[0], 0)  # warm-up
    pack_s = 0.0
    for i in range(frames):
        t0 = time.process_time()
        batch = pk.packetize(pool[i % 2], 1500 * (i + 1))
        pack_s += time.process_time() - t0
        captured.append((batch.buf.copy(), batch.sizes.copy()))
    dp.feed(captured[0][0][:RECEIVE_BATCH], captured[0][1][:RECEIVE_BATCH], 0)  # warm-up
    dp = VideoDepacketizer(fmt)
    depack_s = 0.0
    complete = 0
    for buf, sizes in captured:
        t0 = time.process_time()
        for s in range(0, n, RECEIVE_BATCH):
            complete += sum(e.complete for e in dp.feed(buf[s:s + RECEIVE_BATCH],
                                                       sizes[s:s + RECEIVE_BATCH], 0))
        depack_s += time.process_time() - t0
    if complete != frames:
        raise RuntimeError(f"bench: {complete} of {frames} frames reassembled")
    pack_ms = 1e3 * pack_s / frames
    depack_ms = 1e3 * depack_s / frames
    both = max(pack_s + depack_s, 1e-9)
    return {
        "packetize_ms_per_frame": pack_ms,
        "depacketize_ms_per_frame": depack_ms,
        "packets_per_s": n * frames / both,
        "packets_per_frame": float(n),
    }


def run_wire(frames: int = 30) -> dict[str, dict[str, float]]:
    """Benchmark every case; result keyed by metric, then by case name.

    Returns
    -------
    dict
        ``{"packetize_ms_per_frame": {"1080p_422_8": ..., "1080p_422_10": ...},
        "depacketize_ms_per_frame": {...}, "packets_per_s": {...},
        "packets_per_frame": {...}}``; ``packets_per_s`` counts packets packetized and
        depacketized per CPU second of the two together.
    """
    out: dict[str, dict[str, float]] = {}
    for name, fmt in CASES.items():
        for metric, value in bench_case(fmt, frames).items():
            out.setdefault(metric, {})[name] = value
    return out
