"""Pixel-format conversion benchmark: CPU ms per frame for every from_wire/to_wire pair.

What is measured
----------------
For each supported wire format (``rtstream.proto.formats.SUPPORTED_VIDEO``) and each
in-memory layout of ``rtstream.proto.pixfmt.PIX_FMTS``, the median process CPU time
(``time.process_time``, so other tenants of a shared machine disturb it less than wall
time would) of ``from_wire(wire, fmt, pix_fmt)`` and of ``to_wire(image, pix_fmt, fmt)``
over ``--repeat`` runs on one random frame (after one warm-up run). Keys are
``"<sampling>/<depth> -> <pix_fmt>"`` and ``"<pix_fmt> -> <sampling>/<depth>"``.

``--impl PATH`` loads another copy of ``pixfmt.py`` (for example the version before a
change, saved aside) instead of the installed module, so two tables can be compared on
the same machine in the same minute.

usage: python benchmarks/pixfmt_bench.py [--size 1920x1080] [--repeat 7]
       [--impl path/to/pixfmt.py] [--only SUBSTRING]                (prints JSON)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtstream.proto.formats import SUPPORTED_VIDEO, Sampling, VideoFormat  # noqa: E402

ORDER = [
    (Sampling.YCBCR_422, 8),
    (Sampling.YCBCR_422, 10),
    (Sampling.YCBCR_444, 8),
    (Sampling.YCBCR_444, 10),
    (Sampling.RGB, 8),
    (Sampling.RGB, 10),
    (Sampling.YCBCR_420, 8),
]


def load(impl: str | None) -> ModuleType:
    """The pixfmt module: the installed one, or the file at ``impl``."""
    if impl is None:
        import rtstream.proto.pixfmt as mod

        return mod
    spec = importlib.util.spec_from_file_location("pixfmt_under_test", impl)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cpu_ms(fn: Callable[[], Any], repeat: int) -> float:
    """Median process CPU time of ``fn()`` in ms (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return round(statistics.median(times) * 1000, 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--impl", default=None, help="path of another pixfmt.py to measure")
    ap.add_argument("--only", default=None, help="only keys containing this substring")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    mod = load(args.impl)
    rng = np.random.default_rng(7)
    table: dict[str, float] = {}
    for sampling, depth in ORDER:
        assert (sampling, depth) in SUPPORTED_VIDEO
        fmt = VideoFormat(sampling=sampling, depth=depth, width=w, height=h,
                          exactframerate=Fraction(30))
        name = f"{sampling.value.removeprefix('YCbCr-')}/{depth}"
        wire = rng.integers(0, 256, fmt.frame_bytes, dtype=np.uint8)
        for pix_fmt in mod.PIX_FMTS:
            key = f"{name} -> {pix_fmt}"
            if args.only is None or args.only in key:
                table[key] = cpu_ms(partial(mod.from_wire, wire, fmt, pix_fmt), args.repeat)
            key = f"{pix_fmt} -> {name}"
            if args.only is None or args.only in key:
                image = mod.from_wire(wire, fmt, pix_fmt)
                table[key] = cpu_ms(partial(mod.to_wire, image, pix_fmt, fmt), args.repeat)
    print(json.dumps({"size": args.size, "impl": args.impl or "rtstream.proto.pixfmt",
                      "unit": "CPU ms per frame (median)", "ms": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
