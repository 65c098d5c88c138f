"""Stereo snapshots as a user takes them: ``rtstream receive --stereo`` as a process.

``rtstream send`` with two sources (left and right views, a stereo rendition flow) runs
as a process, and so does ``rtstream receive --snapshot-every S --stereo --mqtt URL``
against a real mosquitto: the periodic snapshots, and an operator's MQTT ``snapshot``
command, store both views as one two-frame instance (Stereo Pairs Present YES); the
command's ``"stereo": false`` stores one lossless frame instead. The receiver's
``--stats-json`` carries the rendition counters. ``--stereo`` on a stream that cannot be
stereo is refused at start, naming the flag.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from tests.control.conftest import Broker
from tests.control.test_wiring import RTSTREAM, operator
from tests.dicom.test_dciodvfy import dciodvfy
from tests.peers import free_port

RIGHT = "lavfi:smptebars=size=160x120:rate=30"


def _stop(*procs: subprocess.Popen[bytes] | None) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.send_signal(2)
    for proc in procs:
        if proc is not None:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_cli_stereo_snapshots_periodic_and_by_mqtt(broker: Broker, tmp_path: Path) -> None:
    port = free_port(count=7, step=2)
    sdp = tmp_path / "stereo.sdp"
    archive = tmp_path / "archive"
    stats_json = tmp_path / "stats.json"
    async with operator(broker, "stereo-rx") as op:
        tx = subprocess.Popen(
            [*RTSTREAM, "send", "--source", "testsrc", "--source", RIGHT, "--video",
             "160x120@30", "--depth", "8", "--dest", f"127.0.0.1:{port}", "--sdp-out", str(sdp),
             "--patient-id", "RTS-CLI-ST", "--duration", "60"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        rx: subprocess.Popen[bytes] | None = None
        try:
            deadline = time.monotonic() + 30
            while not sdp.exists():
                assert tx.poll() is None and time.monotonic() < deadline
                await asyncio.sleep(0.05)
            rx = subprocess.Popen(
                [*RTSTREAM, "receive", "--sdp", str(sdp), "--store-dir", str(archive),
                 "--outbox", str(tmp_path / "outbox"), "--snapshot-every", "0.5", "--stereo",
                 "--stats-json", str(stats_json), "--mqtt", broker.url, "--node", "stereo-rx",
                 "--duration", "60"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
            await op.until(lambda: op.status.get("state") == "online", timeout=30)
            stereo: dict[str, object] = {}
            for attempt in range(60):  # until the rendition is known and a pair was made
                stereo = await op.command(f"st-{attempt}", "snapshot")
                if stereo["ok"]:
                    break
                assert "stereo pair" in str(stereo["error"]), stereo
                await asyncio.sleep(0.25)
            assert stereo["ok"] is True and stereo["stereo"] is True, stereo
            single = await op.command("one", "snapshot", stereo=False)
            assert single["ok"] is True and single["stereo"] is False, single
            both = await op.command("bad", "snapshot", stereo=True, flow="VIDR")
            assert both["ok"] is False and "give no flow" in both["error"]
            # the flow named without "stereo": that flow's own frame, on a --stereo node
            right = await op.command("right", "snapshot", flow="VIDR")
            assert right["ok"] is True and right["stereo"] is False, right
            # a stopped view makes no new pairs: a stereo snapshot is refused, not stale
            assert (await op.command("stop-r", "stream_stop", flow="VIDR"))["ok"] is True
            stale = await op.command("stale", "snapshot")
            assert stale["ok"] is False and "VIDR is stopped" in stale["error"], stale
            assert (await op.command("start-r", "stream_start", flow="VIDR"))["ok"] is True
            await op.until(lambda: len(list(archive.glob("*.dcm"))) >= 5, timeout=30)
        finally:
            _stop(rx, tx)
        assert rx is not None and rx.returncode == 0, rx.stderr.read() if rx.stderr else ""
    by_uid = {p.stem: pydicom.dcmread(p) for p in archive.glob("*.dcm")}
    command = by_uid[str(stereo["sop_instance_uid"])]
    assert command.StereoPairsPresent == "YES" and int(command.NumberOfFrames) == 2
    assert command.PatientID == "RTS-CLI-ST"
    for key in ("one", "right"):
        ds = by_uid[str({"one": single, "right": right}[key]["sop_instance_uid"])]
        assert "StereoPairsPresent" not in ds and int(ds.get("NumberOfFrames", 1)) == 1
    # the periodic snapshots (neither asked by a command) are stereo instances too
    asked = {str(r["sop_instance_uid"]) for r in (stereo, single, right)}
    periodic = [ds for uid, ds in by_uid.items() if uid not in asked]
    assert len(periodic) >= 2
    for ds in periodic:
        assert ds.StereoPairsPresent == "YES" and int(ds.NumberOfFrames) == 2
        assert [s.ReferencedSOPInstanceUID for s in ds.SourceImageSequence][:2] == [
            s.ReferencedSOPInstanceUID for s in command.SourceImageSequence][:2]
    errors = [line for line in dciodvfy(archive / f"{stereo['sop_instance_uid']}.dcm")
              if line.startswith("Error")]
    assert errors == []
    stats = json.loads(stats_json.read_text())
    assert stats["renditions_seen"] == 1 and stats["renditions_invalid"] == 0
    assert stats["stereo_pairs"] >= 10


@pytest.mark.parametrize("second", [False, True], ids=["one-view", "two-views-no-rendition"])
def test_cli_stereo_refused_without_a_stereo_stream(tmp_path: Path, second: bool) -> None:
    from fractions import Fraction

    from rtstream.proto.formats import Sampling, VideoFormat
    from rtstream.proto.nmos_ext import ExtMap
    from rtstream.proto.sdp import MediaKind, SdpMedia, SdpSession, write_sdp

    fmt = VideoFormat(sampling=Sampling("YCbCr-4:2:2"), depth=8, width=160, height=120,
                      exactframerate=Fraction(30))
    port = free_port(count=7, step=2)
    media = [SdpMedia(kind=MediaKind.VIDEO, port=port, payload_type=96, address="127.0.0.1",
                      clock_rate=90000, extmap=ExtMap.default(), mid="VID", video=fmt)]
    if second:
        media.append(SdpMedia(kind=MediaKind.VIDEO, port=port + 8, payload_type=96,
                              address="127.0.0.1", clock_rate=90000, extmap=ExtMap.default(),
                              mid="VIDR", video=fmt))
    sdp = tmp_path / "mono.sdp"
    sdp.write_text(write_sdp(SdpSession(origin_address="127.0.0.1", session_name="m",
                                        session_id=1, media=tuple(media))))
    res = subprocess.run(
        [*RTSTREAM, "receive", "--sdp", str(sdp), "--snapshot-every", "1", "--stereo",
         "--store-dir", str(tmp_path / "a"), "--outbox", str(tmp_path / "o"),
         "--patient-id", "X", "--duration", "1"],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert "--stereo" in res.stderr and "rendition flow" in res.stderr
    assert f"{1 + second} video flow(s)" in res.stderr
