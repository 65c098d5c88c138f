"""CPU cost of the RFC 4175 wire layer per 1080p frame (``rtstream bench wire``).

Every sampling x depth pair (issue 16) at 1920x1080. Packetizing is timed per frame;
depacketizing feeds the frame's datagrams in batches of 1024 (what a drained receive
socket hands over), with ``time.process_time`` so that other processes on a shared
machine count less than with wall-clock time. The pixel columns time the lossless
conversions between the pair's own PyAV pixel format (:func:`native_pix_fmt`: what a
file or device source delivers) and wire pgroups, both ways.
"""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np

from rtstream.proto.formats import SUPPORTED_VIDEO, Sampling, VideoFormat
from rtstream.proto.pixfmt import from_wire, native_pix_fmt, to_wire
from rtstream.proto.rfc4175 import VideoDepacketizer, VideoPacketizer

RECEIVE_BATCH = 1024

_SHORT = {Sampling.YCBCR_422: "422", Sampling.YCBCR_444: "444", Sampling.YCBCR_420: "420",
          Sampling.RGB: "rgb"}

CASES: dict[str, VideoFormat] = {
    f"1080p_{_SHORT[s]}_{d}": VideoFormat(
        sampling=s, depth=d, width=1920, height=1080, exactframerate=Fraction(60),
    )
    for s, d in sorted(SUPPORTED_VIDEO, key=lambda sd: (list(_SHORT).index(sd[0]), sd[1]))
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
    # the pair's own pixel format <-> wire (a source's frame in, a frame out)
    pix = native_pix_fmt(fmt)
    image = from_wire(pool[0], fmt, pix)
    out_img = np.empty_like(image)
    out_wire = np.empty(fmt.frame_bytes, np.uint8)
    to_s = from_s = 0.0
    pixel_frames = max(1, frames // 3)
    for _ in range(pixel_frames):
        t0 = time.process_time()
        to_wire(image, pix, fmt, out=out_wire)
        t1 = time.process_time()
        from_wire(out_wire, fmt, pix, out=out_img)
        from_s += time.process_time() - t1
        to_s += t1 - t0
    if not np.array_equal(out_wire, pool[0]):
        raise RuntimeError(f"bench: {pix} round trip is not exact")
    return {
        "packetize_ms_per_frame": pack_ms,
        "depacketize_ms_per_frame": depack_ms,
        "wire_ms_per_frame": pack_ms + depack_ms,
        "to_wire_ms_per_frame": 1e3 * to_s / pixel_frames,
        "from_wire_ms_per_frame": 1e3 * from_s / pixel_frames,
        "packets_per_s": n * frames / both,
        "packets_per_frame": float(n),
        "frame_bytes": float(fmt.frame_bytes),
    }


def run_wire(frames: int = 30) -> dict[str, dict[str, float]]:
    """Benchmark every case; result keyed by metric, then by case name.

    Returns
    -------
    dict
        ``{"packetize_ms_per_frame": {"1080p_422_8": ..., "1080p_rgb_16": ...},
        "depacketize_ms_per_frame": {...}, "wire_ms_per_frame": {...} (the two),
        "to_wire_ms_per_frame": {...}, "from_wire_ms_per_frame": {...},
        "packets_per_s": {...}, "packets_per_frame": {...}, "frame_bytes": {...}}``,
        one case per sampling x depth pair; ``packets_per_s`` counts packets packetized
        and depacketized per CPU second of the two together.
    """
    out: dict[str, dict[str, float]] = {}
    for name, fmt in CASES.items():
        for metric, value in bench_case(fmt, frames).items():
            out.setdefault(metric, {})[name] = value
    return out
