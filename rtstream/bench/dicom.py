"""Benchmark of the per-frame metadata path: build, serialize and parse one grain.

``run_grain_bench(n)`` times ``n`` dynamic-only grains (the case of every frame but
about two per second): :meth:`GrainBuilder.grain` (build + serialize, the sender's cost)
and :func:`decode_grain` (strict parse + validation, the receiver's cost). The target is
< 200 µs per frame for both together. Results are a JSON-ready dict.
"""

from __future__ import annotations

import statistics
import time
import uuid
from fractions import Fraction

from pydicom.uid import generate_uid

from rtstream.dicom.context import StreamContext
from rtstream.dicom.realtime import BulkFlowRef, GrainBuilder, RtvSop
from rtstream.proto.clock import NS_PER_S, PtpTimestamp
from rtstream.proto.formats import Sampling, VideoFormat
from rtstream.proto.rtv_metadata import RtvMetaInfo, decode_grain

TARGET_US = 200.0


def run_grain_bench(n: int = 2000) -> dict[str, float | int | str]:
    """Time ``n`` dynamic-only grains (build + serialize + parse), in microseconds.

    Returns
    -------
    dict
        ``build_us``, ``parse_us``, ``total_us`` (medians per grain), ``total_mean_us``,
        ``static_grain_total_us`` (one grain with the static part, for reference),
        ``grain_bytes``, ``static_grain_bytes``, ``n``, ``target_us``, ``meets_target``.
    """
    if n < 1:
        raise ValueError("n: at least one grain")
    fmt = VideoFormat(
        sampling=Sampling.YCBCR_422, depth=10, width=1920, height=1080,
        exactframerate=Fraction(60000, 1001),
    )  # fmt: skip
    bulk = BulkFlowRef(
        source_id=uuid.uuid4(), flow_id=uuid.uuid4(),
        transfer_syntax_uid=fmt.transfer_syntax_uid, sampling_rate=90000,
    )  # fmt: skip
    meta = RtvMetaInfo(
        transfer_syntax_uid=fmt.transfer_syntax_uid, sop_class_uid=RtvSop.ENDOSCOPIC.value,
        sop_instance_uid=generate_uid(), source_id=uuid.uuid4(), flow_id=uuid.uuid4(),
        sampling_rate=90000,
    )  # fmt: skip
    builder = GrainBuilder(
        RtvSop.ENDOSCOPIC, StreamContext(), meta, bulk, video=fmt, static_interval_ns=NS_PER_S
    )
    start = 1_700_000_000 * NS_PER_S
    t0 = time.perf_counter_ns()
    static_grain = builder.grain(origin=PtpTimestamp.from_ns(start), frame_number=0, now=0)
    decode_grain(static_grain)
    static_ns = time.perf_counter_ns() - t0
    period = int(fmt.frame_duration_ns)
    build: list[int] = []
    parse: list[int] = []
    size = 0
    for i in range(1, n + 1):
        origin = PtpTimestamp.from_ns(start + i * period)
        a = time.perf_counter_ns()
        data = builder.grain(origin=origin, frame_number=i, now=1)  # static not due
        b = time.perf_counter_ns()
        decode_grain(data)
        c = time.perf_counter_ns()
        build.append(b - a)
        parse.append(c - b)
        size = len(data)
    total = [x + y for x, y in zip(build, parse, strict=True)]
    total_us = statistics.median(total) / 1000
    return {
        "n": n,
        "build_us": round(statistics.median(build) / 1000, 1),
        "parse_us": round(statistics.median(parse) / 1000, 1),
        "total_us": round(total_us, 1),
        "total_mean_us": round(statistics.fmean(total) / 1000, 1),
        "static_grain_total_us": round(static_ns / 1000, 1),
        "grain_bytes": size,
        "static_grain_bytes": len(static_grain),
        "target_us": TARGET_US,
        "meets_target": "yes" if total_us < TARGET_US else "no",
    }
