"""``rtstream bench dup`` in a tiny configuration: every case runs with its peer and is
measured; the JSON has the documented shape. No timing or ratio asserts."""

from __future__ import annotations

import json
from pathlib import Path

from rtstream.bench.dup import CASES
from rtstream.cli import main as cli_main
from tests.peers import require_program


def test_bench_dup_tiny(tmp_path: Path) -> None:
    require_program("gst-launch-1.0")
    out = tmp_path / "dup.json"
    rc = cli_main(["--log-level", "WARNING", "bench", "dup", "--size", "64x32", "--fps", "30",
                   "--seconds", "0.6", "--warmup", "1.2", "--json", str(out),
                   "--workdir", str(tmp_path / "work")])
    assert rc == 0
    result = json.loads(out.read_text())
    assert set(result) >= {"config", "machine", "runs", "ratios"}
    assert list(result["runs"]) == list(CASES)
    for case, run in result["runs"].items():
        assert run["receiver_frames"] > 0, case
        assert run["receiver_cpu_s"] >= 0 and run["sender_frames"] > 0, case
    for case in ("rtstream 1 leg", "rtstream 2 legs", "rtstream 2 legs, merge only"):
        assert result["runs"][case]["packets_lost"] == 0, case
        # the socket drops the kernel counts for the copies its filter dropped are not loss
        assert result["runs"][case]["loss"] == 0, case
        assert result["runs"][case]["latency_p99_us"] is not None
    assert set(result["ratios"]) == {"rtstream_2legs_over_1leg", "rtstream_merge_only_over_1leg",
                                     "gstreamer_2legs_over_1leg", "rtstream_over_gstreamer_2legs"}
    # ratios are None only when a tiny window gave a process no CPU tick (10 ms)
    assert all(v is None or v > 0 for v in result["ratios"].values())
