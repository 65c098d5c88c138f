"""Smoke test of benchmarks/analysis_bench.py: a short run of every mode against real
``rtstream send`` and FFmpeg processes. Asserts that it works and reports what it should,
never its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.peers import require_program

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "analysis_bench.py"


@pytest.mark.peer("ffmpeg")
@pytest.mark.timeout(120)
def test_analysis_bench_runs_briefly() -> None:
    require_program("ffmpeg")
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--seconds", "1", "--warmup", "1.5", "--size", "320x240",
         "--fps", "30", "--modes", "ffmpeg,none,noop_wire,bright_band"],
        capture_output=True, text=True, timeout=110, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    runs = res["runs"]
    assert set(runs) == {"ffmpeg", "none", "noop_wire", "bright_band"}
    assert all(r["cpu_seconds"] > 0 for r in runs.values())
    assert "analysis" not in runs["none"]
    for mode in ("noop_wire", "bright_band"):
        a = runs[mode]["analysis"]
        assert a["analysed"] > 0 and a["latency_p50_us"] > 0
    assert runs["bright_band"]["analysis"]["findings"] > 0
    assert runs["noop_wire"]["analysis"]["findings"] == 0
    assert set(res["ratios"]) >= {"none_vs_ffmpeg", "noop_wire_vs_none", "bright_band_vs_ffmpeg"}
