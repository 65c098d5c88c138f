"""``rtstream bench all`` in a tiny configuration: the harness runs end to end with its
peers and writes the documented JSON structure, plots and document. No timing asserts."""

from __future__ import annotations

import json
from pathlib import Path

from rtstream.bench.harness import BenchConfig, write_frames
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
        "rtstream->rtstream@10-copy", "rtstream->rtstream@10-2x",
    }
    # rtstream alone: the copying receiver, and twice the width and height
    assert set(result["summary"]) == {"64x32p30_422_10bit", "64x32p30_422_10bit-copy",
                                      "128x64p30_422_10bit"}
    assert result["runs"]["rtstream->rtstream@10-copy"]["placed_share"] == 0
    assert result["runs"]["rtstream->rtstream@10-2x"]["receiver_frames"] > 0
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


def _tiny(tmp_path: Path, scale_senders: int = 1, scale_receivers: int = 0
          ) -> tuple[BenchConfig, tuple[Path, Path]]:
    cfg = BenchConfig(width=64, height=32, fps=30, depths=(10,), seconds=0.6, warmup=1.2,
                      frames_in_file=2, scale_senders=scale_senders,
                      scale_receivers=scale_receivers)
    return cfg, write_frames(tmp_path, cfg, 10)


def test_worker_streams_in_one_process(tmp_path: Path) -> None:
    """``send --streams 2`` (one event loop) to ``recv --sdp A --sdp B`` (one process):
    every frame of each stream arrives, and both sides' counters agree per stream."""
    import signal
    import subprocess
    import sys

    from rtstream.bench._sdp import rtstream_sdp
    from rtstream.bench.harness import _wait_bound, free_ports
    from rtstream.bench.worker import PORT_STEP

    cfg, (wire, _) = _tiny(tmp_path)
    base = free_ports(2 * PORT_STEP)
    ports = [base, base + PORT_STEP]
    sdps = [rtstream_sdp(tmp_path / f"s{i}.sdp", wire, cfg, 10, p) for i, p in enumerate(ports)]
    worker = [sys.executable, "-m", "rtstream.bench.worker"]
    rx = subprocess.Popen([*worker, "recv", "--sdp", str(sdps[0]), "--sdp", str(sdps[1]),
                           "--status", "0.2", "--seconds", "30"],  # ends by itself at worst
                          stdout=subprocess.PIPE, text=True)
    try:
        for p in ports:
            _wait_bound(p)
        tx = subprocess.run([*worker, "send", "--raw", str(wire), "--size", "64x32",
                             "--fps", "30", "--port", str(base), "--streams", "2",
                             "--frames", "12", "--status", "0.2",
                             "--sdp-out", str(tmp_path / "out{i}.sdp")],
                            capture_output=True, text=True, timeout=60, check=True)
        lines = [json.loads(line) for line in tx.stdout.splitlines()]
        sent = lines[-1]["final"]
        # wait until the receiver delivered what was sent (its status lines say so)
        assert rx.stdout is not None
        for line in rx.stdout:
            if json.loads(line).get("frames") == sent["frames"]:
                break
    finally:
        rx.send_signal(signal.SIGINT)
        out, _ = rx.communicate(timeout=30)
    got = json.loads(out.splitlines()[-1])["final"]
    assert sent["streams"] == 2 and got["streams"] == 2
    assert [s["port"] for s in sent["per_stream"]] == ports
    assert [s["frames"] for s in sent["per_stream"]] == [12, 12]
    assert sent["frames"] == 24 and sent["late_frames"] == sum(
        s["late_frames"] for s in sent["per_stream"])
    assert sent["packets"] == sum(s["packets"] for s in sent["per_stream"])
    assert lines[-2]["frames_each"] == [12, 12] and lines[-2]["frames"] == 24
    for tx_s, rx_s in zip(sent["per_stream"], got["per_stream"], strict=True):
        assert rx_s["frames_delivered"] == tx_s["frames"]
        assert rx_s["video_packets"] == tx_s["packets"]
        assert rx_s["packets_lost"] == 0
    assert got["frames_delivered"] == 24 and got["video_packets"] == sent["packets"]
    for i in range(2):  # each stream published its own SDP on its own ports
        assert f"m=video {ports[i]} " in (tmp_path / f"out{i}.sdp").read_text()


def test_scaling_one_sender_process_grouped_receivers(tmp_path: Path) -> None:
    """A scaling step of 2 streams: one sender process (``--streams 2``), one receiver
    process for both SDPs; frames counted per stream at both ends."""
    from rtstream.bench.harness import _scale_once

    cfg, files = _tiny(tmp_path, scale_senders=1, scale_receivers=1)
    row = _scale_once(2, cfg, files, tmp_path)
    assert row["streams"] == 2
    assert row["sender_processes"] == 1 and row["receiver_processes"] == 1
    assert "one sender process for all 2 streams" in row["layout"]
    assert len(row["per_stream"]) == 2
    for s in row["per_stream"]:
        assert s["sender_fps"] > 0 and s["receiver_fps"] > 0, s
        assert s["loss"] == s["packets_lost"] + s["udp_drops"]
        assert s["late_frames"] >= 0
    assert row["loss"] == row["packets_lost"] + row["udp_drops"]
    assert row["late_frames"] == sum(s["late_frames"] for s in row["per_stream"])
    assert row["sender_cpu_ms_per_frame"] is not None
    assert row["receiver_cpu_ms_per_frame"] is not None


async def test_two_senders_share_one_event_loop(tmp_path: Path) -> None:
    """Two :class:`Sender` objects on one loop, as ``worker send --streams 2`` runs them:
    each sends all its frames to its own ports, and the collector freeze a run holds is
    released when the last one ends."""
    import asyncio
    import gc
    import socket
    from fractions import Fraction

    from rtstream.bench.harness import free_ports
    from rtstream.proto.formats import Sampling
    from rtstream.sender import NetworkConfig, Sender, SenderConfig, VideoConfig

    _, (wire, _) = _tiny(tmp_path)
    base = free_ports(20)
    sinks = []
    for port in (base, base + 2, base + 10, base + 12):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # hold every packet
        s.bind(("127.0.0.1", port))
        s.setblocking(False)
        sinks.append(s)
    frozen_before = gc.get_freeze_count()
    try:
        txs = [Sender(SenderConfig(
            source=f"raw:{wire}", loop=True, frames=8,
            video=VideoConfig(width=64, height=32, fps=Fraction(30), depth=10,
                              sampling=Sampling.YCBCR_422),
            network=NetworkConfig(dest="127.0.0.1", port=base + 10 * i)))
            for i in range(2)]
        async with txs[0], txs[1]:
            await asyncio.gather(txs[0].run(), txs[1].run())
        assert [t.stats.frames for t in txs] == [8, 8]
        assert txs[0].stats.packets == txs[1].stats.packets > 0
        assert gc.get_freeze_count() == frozen_before
        video = [0, 0]
        for i in range(2):
            while True:
                try:
                    sinks[2 * i].recv(65536)
                except BlockingIOError:
                    break
                video[i] += 1
        assert video == [t.stats.packets for t in txs]
    finally:
        for s in sinks:
            s.close()


def test_split_reads_place_payloads_and_no_split_turns_them_off(tmp_path: Path) -> None:
    # rtstream sender -> rtstream receiver over 127.0.0.1: with split reads (default) the
    # kernel puts nearly every payload in its frame; --no-split copies every one. Both
    # deliver every frame without loss (values, not speeds).
    from dataclasses import replace

    from rtstream.bench.harness import run_pair

    cfg, files = _tiny(tmp_path)
    shares = {}
    for split in (True, False):
        run = run_pair("rtstream", "rtstream", replace(cfg, split=split), 10, files, tmp_path)
        assert run["receiver_frames"] > 0 and run["loss"] == 0, run
        shares[split] = run["placed_share"]
    assert shares[False] == 0
    assert shares[True] > 0.5


def test_scaling_search_finds_the_most_clean_streams(monkeypatch, tmp_path: Path) -> None:
    """The scaling run doubles until a count fails, then halves the interval: the rows
    end with the largest clean count next to the smallest failed one."""
    from rtstream.bench import harness

    for capacity, max_streams, tried in ((5, 8, [1, 2, 4, 5, 6, 8]),
                                         (8, 8, [1, 2, 4, 8]),
                                         (0, 8, [1]),
                                         (2, 3, [1, 2, 3]),
                                         (9, 6, [1, 2, 4, 6])):
        runs: list[int] = []

        def scale_once(n: int, cfg: BenchConfig, files: object, work: Path,
                       capacity: int = capacity, runs: list[int] = runs) -> dict[str, object]:
            runs.append(n)
            return {"streams": n, "ok": n <= capacity, "layout": "test"}

        monkeypatch.setattr(harness, "_scale_once", scale_once)
        cfg = BenchConfig(max_streams=max_streams)
        rows = harness.run_scaling(cfg, (tmp_path, tmp_path), tmp_path)
        assert [r["streams"] for r in rows] == tried, (capacity, max_streams, runs)
        assert max((r["streams"] for r in rows if r["ok"]), default=0) == min(capacity,
                                                                              max_streams)
