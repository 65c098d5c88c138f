"""Snapshot-sized C-STORE latency: StoreClient into a real Orthanc, next to dcmtk storescu.

Each sample is one 1920x1080 RGB Secondary Capture instance (6.2 MB of pixel data):
``submit`` (outbox write + fsync + C-STORE on a reused association + success status +
outbox removal) until its result. For comparison, dcmtk ``storescu`` sends the same files
in one association in the same run; the ratio compares per-instance cost.

usage: python benchmarks/store_bench.py [--count 20]     (prints JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtstream.pacs.store import StoreClient, StoreConfig  # noqa: E402
from tests.orthanc import Orthanc  # noqa: E402
from tests.pacs.conftest import secondary_capture  # noqa: E402


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _ours(orthanc: Orthanc, work: Path, count: int) -> list[float]:
    cfg = StoreConfig.from_target(orthanc.target, outbox=work / "outbox")
    times = []
    async with StoreClient(cfg) as sc:
        warm = secondary_capture(rows=1080, cols=1920, seed=999)
        assert (await sc.submit(warm)).ok
        for i in range(count):
            ds = secondary_capture(rows=1080, cols=1920, seed=i)
            t0 = time.perf_counter()
            result = await sc.submit(ds)
            times.append(time.perf_counter() - t0)
            assert result.ok, result
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="store-bench-"))
    try:
        with Orthanc(work / "orthanc") as orthanc:
            times = asyncio.run(_ours(orthanc, work, args.count))
            files = []
            for i in range(args.count):
                path = work / f"dcmtk-{i}.dcm"
                pydicom.dcmwrite(
                    path,
                    secondary_capture(rows=1080, cols=1920, seed=500 + i),
                    enforce_file_format=True,
                )
                files.append(str(path))
            storescu = shutil.which("storescu")
            dcmtk_per_instance = None
            if storescu:
                t0 = time.perf_counter()
                subprocess.run(
                    [storescu, "-aec", orthanc.aet, "127.0.0.1", str(orthanc.dicom_port), *files],
                    check=True,
                    capture_output=True,
                )
                dcmtk_per_instance = (time.perf_counter() - t0) / args.count
            stored = len(orthanc.instances())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "store_1080p_rgb_into_orthanc",
        "instances": args.count,
        "instance_bytes": 1920 * 1080 * 3,
        "p50_ms": round(statistics.median(times) * 1000, 1),
        "p95_ms": round(_pct(times, 0.95) * 1000, 1),
        "max_ms": round(max(times) * 1000, 1),
        "mean_ms": round(statistics.fmean(times) * 1000, 1),
        "dcmtk_storescu_per_instance_ms": (
            round(dcmtk_per_instance * 1000, 1) if dcmtk_per_instance else None
        ),
        "ratio_ours_mean_to_dcmtk": (
            round(statistics.fmean(times) / dcmtk_per_instance, 2) if dcmtk_per_instance else None
        ),
        "orthanc_instances": stored,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
