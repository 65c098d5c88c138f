"""The analysis hook end to end: ``rtstream send`` (a real process) -> Receiver.analyze.

A slow callable (50 ms a frame, slower than the stream) loses no packet and sees the
latest frames, skipping the rest (counted); malformed findings and exceptions are counted
and never stop it; a snapshot taken while findings exist stores, beside the image, a
presentation state and a TID 1500 SR that reference it (dciodvfy clean).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from rtstream.receiver import Receiver, ReceiverConfig
from rtstream.receiver.analysis import AnalysisContext
from tests.dicom.test_dciodvfy import dciodvfy
from tests.peers import free_port, stop

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def rtstream_send(tmp_path: Path, video: str = "640x360@30", *extra: str) -> Iterator[Path]:
    """``rtstream send --source testsrc`` in its own process; yields its SDP file."""
    port = free_port(count=7, step=2)  # PORT..PORT+12: with --audio, REND at +12
    sdp = tmp_path / "rtv.sdp"
    log = open(tmp_path / "send.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtstream", "--log-level", "WARNING", "send", "--source",
         "testsrc", "--dest", f"127.0.0.1:{port}", "--video", video, "--depth", "8",
         "--sdp-out", str(sdp), "--duration", "120", "--patient-id", "RTS-AN-1",
         "--patient-name", "Analysis^Test", *extra],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    try:
        for _ in range(300):
            if sdp.exists() and sdp.stat().st_size:
                break
            assert proc.poll() is None, (tmp_path / "send.log").read_text()
            time.sleep(0.05)
        yield sdp
    finally:
        stop(proc)
        log.close()


@contextlib.asynccontextmanager
async def consuming(rx: Receiver) -> AsyncIterator[Receiver]:
    async with rx:

        async def consume() -> None:
            async for _ in rx:
                pass

        task = asyncio.create_task(consume())
        try:
            yield rx
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def until(cond: Any, what: str, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_slow_callable_loses_no_packets(tmp_path: Path) -> None:
    seen: list[tuple[int, tuple[int, ...], str]] = []

    def slow(frame: np.ndarray, ctx: AnalysisContext) -> list[dict[str, Any]]:
        seen.append((ctx.rtp_timestamp, frame.shape, str(frame.dtype)))
        time.sleep(0.05)  # slower than the 33 ms frame period
        return [{"label": "slow", "point": [1, 1]}]

    with rtstream_send(tmp_path) as sdp:
        rx = Receiver(ReceiverConfig(sdp=str(sdp), frames=150))
        analyzer = rx.analyze(slow)
        sets: list[Any] = []
        analyzer.on_findings(sets.append)
        delivered: list[int] = []
        async with rx:
            async for item in rx:
                delivered.append(item.rtp_timestamp)
        st = rx.stats
    assert st["frames_delivered"] == 150
    assert st["packets_lost"] == 0 and st["frames_incomplete"] == 0, st
    a = st["analysis"]
    assert a["offered"] == 150
    assert a["analysed"] + a["skipped"] == a["offered"], a
    assert a["skipped"] > 0 and a["analysed"] >= 10, a
    assert a["exceptions"] == 0 and a["malformed"] == 0
    assert a["latency_p50_us"] > 0 and a["latency_max_us"] >= a["latency_p50_us"]
    assert {s for s in seen} and all(s[1:] == ((360, 640, 3), "uint8") for s in seen)
    # each analysed frame is one that was delivered, in order; findings carry its timestamp
    analysed = [s[0] for s in seen]
    assert set(analysed) <= set(delivered)
    assert analysed == sorted(analysed, key=delivered.index)
    assert [fs.rtp_timestamp for fs in sets] == analysed[: len(sets)]


async def test_findings_stored_with_snapshot(tmp_path: Path) -> None:
    calls = 0
    contexts: list[AnalysisContext] = []

    def flaky(frame: np.ndarray, ctx: AnalysisContext) -> list[Any]:
        nonlocal calls
        calls += 1
        contexts.append(ctx)
        if calls % 4 == 0:
            raise RuntimeError("the model fell over")
        return [
            {"label": "band", "box": [8, 8, 100, 50], "score": 0.5, "text": "bright"},
            {"label": "no geometry"},
            {"label": "far away", "point": [9999, 1]},
        ]

    archive = tmp_path / "archive"
    archive.mkdir()
    with rtstream_send(tmp_path, "320x240@30") as sdp:
        rx = Receiver(ReceiverConfig(sdp=str(sdp), store_dir=archive, outbox=tmp_path / "ob"))
        analyzer = rx.analyze(flaky, layout="yuv420p")
        async with consuming(rx):
            await until(lambda: analyzer.findings >= 4 and analyzer.exceptions >= 1, "findings")
            await until(lambda: all(m.static is not None for m in rx.metadata), "static part")
            res = await rx.snapshot()
            assert res.ok
            arch = rx.findings_archiver
            assert arch is not None
            await until(lambda: len(arch.results) == 2, "findings stored")
            await asyncio.gather(*(f for _, f in arch.results))
            st = rx.stats["analysis"]
    assert st["exceptions"] >= 1 and st["malformed"] == 2 * st["analysed"]
    assert st["findings"] == st["analysed"]
    # frames analysed before the stream's first static part (sent at least once a second)
    # know no patient yet; every later one does
    known = [i for i, c in enumerate(contexts) if c.static is not None]
    assert known and all(c.static is not None for c in contexts[known[0]:])
    ctx = contexts[known[0]]
    assert ctx.patient_id == "RTS-AN-1" and ctx.patient_name == "Analysis^Test"
    assert ctx.study_instance_uid and ctx.capture_time is not None and ctx.complete
    assert (ctx.width, ctx.height) == (320, 240)

    files = {pydicom.dcmread(p).SOPInstanceUID: p for p in archive.iterdir()}
    assert len(files) == 3, files
    image = pydicom.dcmread(files[res.sop_instance_uid])
    ps_uid, sr_uid = (uid for uid, _ in arch.results)
    ps, sr = pydicom.dcmread(files[ps_uid]), pydicom.dcmread(files[sr_uid])
    assert ps.Modality == "PR" and sr.Modality == "SR"
    ref = ps.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == image.SOPInstanceUID
    ev = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert ev.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID
    for ds in (ps, sr):
        assert ds.PatientID == image.PatientID == "RTS-AN-1"
        assert ds.StudyInstanceUID == image.StudyInstanceUID
        assert ds.SeriesInstanceUID != image.SeriesInstanceUID
    assert ps.SeriesInstanceUID != sr.SeriesInstanceUID
    graphics = ps.GraphicAnnotationSequence[0].GraphicObjectSequence
    assert [float(v) for v in graphics[0].GraphicData] == [8, 8, 108, 8, 108, 58, 8, 58, 8, 8]
    for uid in (ps_uid, sr_uid):
        lines = dciodvfy(files[uid])
        assert not [line for line in lines if "Error" in line], "\n".join(lines)


async def test_analyze_is_refused_twice_and_after_start(tmp_path: Path) -> None:
    rx = Receiver(ReceiverConfig(sdp=str(tmp_path / "none.sdp")))
    rx.analyze(lambda f, c: [])
    with pytest.raises(Exception, match="already"):
        rx.analyze(lambda f, c: [])
    with pytest.raises(Exception, match="layout"):
        Receiver(ReceiverConfig(sdp="x.sdp")).analyze(lambda f, c: [], layout="bgr")
    with pytest.raises(Exception, match="store_findings"):
        Receiver(ReceiverConfig(sdp="x.sdp")).analyze(lambda f, c: [], store_findings="pdf")
