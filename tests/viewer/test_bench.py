"""Smoke test of benchmarks/viewer_bench.py: its statistics, and a 2-second run.

Asserts only that the benchmark works and reports what it should, never its figures.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.peers import require_program, require_root

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "viewer_bench.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("viewer_bench", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_statistics() -> None:
    bench = _load()
    assert bench.percentile([], 0.5) is None
    assert bench.percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert bench.percentile(list(map(float, range(101))), 0.95) == 95.0

    def run(cpu: float, p50: float, p95: float) -> dict[str, object]:
        return {"cpu_percent": cpu, "latency_ms": {"p50": p50, "p95": p95}}

    ok = bench.summarize({1: run(20.0, 30, 40), 4: run(23.0, 50, 90)})
    assert ok["cpu_ratio_4_vs_1"] == 1.15 and ok["cpu_ratio_ok"] and ok["latency_ok"]
    bad = bench.summarize({1: run(20.0, 30, 40), 4: run(30.0, 120, 200)})
    assert not bad["cpu_ratio_ok"] and not bad["latency_ok"]


@pytest.mark.netns
@pytest.mark.peer("chromium")
@pytest.mark.timeout(60)
def test_bench_runs_two_seconds() -> None:
    require_root("a network namespace")
    require_program("chromium")
    require_program("unshare")
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--seconds", "2", "--warmup", "0.5", "--viewers", "1",
         "--size", "320x240", "--fps", "30", "--bitrate", "1M"],
        capture_output=True, text=True, timeout=50, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    run = result["runs"]["1"]
    assert run["viewers"] == 1 and run["cpu_seconds"] > 0
    assert run["latency_ms"]["samples"] > 0 and run["latency_ms"]["p50"] is not None
    assert set(result) >= {"config", "runs", "targets", "latency_ok"}


JANUS_BENCH = BENCH.parent / "janus_bench.py"


@pytest.mark.netns
@pytest.mark.peer("chromium")
@pytest.mark.peer("janus")
@pytest.mark.timeout(120)
def test_janus_bench_runs_briefly() -> None:
    """benchmarks/janus_bench.py, short: both modes, one viewer; figures reported, not judged."""
    require_root("a network namespace")
    for program in ("chromium", "unshare", "janus"):
        require_program(program)
    proc = subprocess.run(
        [sys.executable, str(JANUS_BENCH), "--seconds", "2", "--warmup", "0.5", "--viewers", "1",
         "--size", "320x240", "--fps", "30", "--bitrate", "1M"],
        capture_output=True, text=True, timeout=110, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    janus, direct = result["runs"]["janus"]["1"], result["runs"]["direct"]["1"]
    assert janus["mode"] == "janus" and direct["mode"] == "direct"
    assert janus["cpu_percent"] > 0 and janus["janus_cpu_percent"] is not None
    assert janus["latency_ms"]["samples"] > 0 and direct["latency_ms"]["samples"] > 0
    assert set(result) >= {"config", "runs", "targets", "janus_latency_ok"}
