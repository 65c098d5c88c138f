"""``rtstream bench all`` in a tiny configuration: the harness runs end to end with its
peers and writes the documented JSON structure, plots and document. No timing asserts."""

from __future__ import annotations

import json
from pathlib import Path

from rtstream.cli import main as cli_main
from tests.peers import require_program

TOOLS = ("rtstream", "gstreamer", "ffmpeg")


def test_bench_all_tiny(tmp_path: Path) -> None:
    require_program("gst-launch-1.0")
    require_program("ffmpeg")
    out = tmp_path / "bench.json"
    doc = tmp_path / "perf.md"
    rc = cli_main([
        "--log-level", "WARNING", "bench", "all", "--size", "64x32", "--fps", "30",
        "--seconds", "0.6", "--warmup", "1.2", "--depths", "10", "--max-streams", "1",
        "--json", str(out), "--plot", str(tmp_path / "img"), "--doc", str(doc),
        "--workdir", str(tmp_path / "work"),
    ])
    assert rc == 0
    result = json.loads(out.read_text())
    assert set(result) >= {"config", "machine", "summary", "runs", "samples", "scaling",
                           "max_streams_ok", "plots"}
    assert result["config"]["depths"] == [10]
    row = result["summary"]["64x32p30_422_10bit"]
    for key in ("send_cpu_ms_per_frame", "recv_cpu_ms_per_frame", "send_fps", "recv_fps",
                "recv_loss", "packets_per_s"):
        assert set(row[key]) == set(TOOLS), key
    assert set(row["latency_p50_us"]) == set(row["latency_p99_us"]) == {"rtstream"}
    assert set(row["send_ratio"]) == set(row["recv_ratio"]) == {"gstreamer", "ffmpeg"}
    assert set(result["runs"]) == {
        "rtstream->rtstream@10", "gstreamer->rtstream@10", "rtstream->gstreamer@10",
        "ffmpeg->rtstream@10", "rtstream->ffmpeg@10",
    }
    base = result["runs"]["rtstream->rtstream@10"]
    # every process ran and was measured (values, not speeds)
    assert base["sender_frames"] > 0 and base["receiver_frames"] > 0
    assert base["sender_cpu_s"] >= 0 and base["receiver_cpu_s"] >= 0
    assert base["late_frames"] is not None and base["packets_lost"] is not None
    for run in result["runs"].values():
        assert run["receiver_frames"] > 0, run
    assert [s["streams"] for s in result["scaling"]] == [1]
    assert {"ok", "loss", "late_frames", "min_fps", "cpu_s_per_s", "per_stream"} <= set(
        result["scaling"][0])
    names = sorted(Path(p).name for p in result["plots"])
    assert names == ["bench_cpu_per_frame.png", "bench_latency.png", "bench_scaling.png"]
    for p in result["plots"]:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = doc.read_text()
    assert "## Method" in text and "## Machine" in text and "| case | tool |" in text
