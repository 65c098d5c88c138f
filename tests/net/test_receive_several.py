"""``rtstream receive`` with several ``--sdp``: the streams of one room in one process (issue #18).

Two real :class:`~rtstream.sender.Sender` (the test source, each with its own patient and
study) stream on 127.0.0.1; the real CLI receives both in one process, dumps each into its
own folder, snapshots both through one outbox into a folder, and writes the counters of
each. The "bare" case takes the same flows without their metadata flows (a third party's
ST 2110 SDPs) and stores them under the site's identity: one study for the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import pydicom
import pytest

from rtstream.errors import ConfigError
from rtstream.proto.sdp import MediaKind, write_sdp
from rtstream.sender import NetworkConfig, Sender, SenderConfig, VideoConfig
from tests.net.test_identity import dicom3tools_errors
from tests.peers import free_port

FRAMES = 40


@dataclasses.dataclass
class Room:
    senders: list[Sender]
    sdps: list[Path]  # the senders' own SDPs
    bare: list[Path]  # the same flows without metadata


@pytest.fixture
async def room(tmp_path: Path) -> AsyncIterator[Room]:
    base = free_port(count=8, step=2)
    senders = []
    for i, name in enumerate(("Endo^Scope", "Room^Camera")):
        cfg = SenderConfig(
            source="testsrc", video=VideoConfig(width=64 + 16 * i, height=48, fps=Fraction(30)),
            network=NetworkConfig(dest="127.0.0.1", port=base + 8 * i),
            context={"patient_id": f"P{i + 1}", "patient_name": name})
        senders.append(Sender(cfg))
    async with contextlib.AsyncExitStack() as stack:
        sdps, bare = [], []
        for i, sender in enumerate(senders):
            await stack.enter_async_context(sender)
            session = sender.session()
            sdps.append(tmp_path / f"cam{i + 1}.sdp")
            sdps[-1].write_text(write_sdp(session))
            bare.append(tmp_path / f"bare{i + 1}.sdp")
            bare[-1].write_text(write_sdp(dataclasses.replace(session, media=tuple(
                m for m in session.media if m.kind is not MediaKind.METADATA))))
        tasks = [asyncio.create_task(s.run()) for s in senders]
        try:
            yield Room(senders, sdps, bare)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def receive(*args: str | Path, timeout: float = 60) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rtstream", "receive", *map(str, args), "--status-interval", "0",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_two_streams_in_one_process(room: Room, tmp_path: Path) -> None:
    dumps, archive, outbox = tmp_path / "frames", tmp_path / "archive", tmp_path / "outbox"
    stats_json = tmp_path / "stats.json"
    rc, out = await receive(
        "--sdp", room.sdps[0], "--sdp", room.sdps[1], "--frames", FRAMES,
        "--dump-frames", dumps, "--snapshot-every", "0.5", "--store-dir", archive,
        "--outbox", outbox, "--stats-json", stats_json)
    assert rc == 0, out
    doc = json.loads(stats_json.read_text())
    streams = doc["streams"]
    assert [s["sdp"] for s in streams] == [str(p) for p in room.sdps]
    for n, (st, sender) in enumerate(zip(streams, room.senders, strict=True), start=1):
        assert st["frames_delivered"] == FRAMES, st
        assert st["packets_lost"] == 0
        # joining a running stream: at most the first frame's grain was sent before we bound
        assert st["metadata_unmatched"] <= 1 and st["metadata_matched"] >= FRAMES - 1
        raws = sorted((dumps / str(n)).glob("*.raw"))
        assert len(raws) == FRAMES
        w, h = sender.cfg.video.width, sender.cfg.video.height
        assert {p.stat().st_size for p in raws} == {w * h * 5 // 2}  # 4:2:2 10-bit pgroups
    # the summary line of each stream names its SDP
    summaries = [json.loads(x) for x in out.splitlines() if x.startswith('{"sdp"')]
    assert [s["sdp"] for s in summaries] == [str(p) for p in room.sdps]
    # snapshots of both streams, each under its own stream's patient, none left queued
    instances = [pydicom.dcmread(p) for p in sorted(archive.glob("*.dcm"))]
    by_patient: dict[str, set[tuple[int, int]]] = {}
    for d in instances:
        by_patient.setdefault(d.PatientID, set()).add((int(d.Columns), int(d.Rows)))
    assert by_patient == {"P1": {(64, 48)}, "P2": {(80, 48)}}, out
    assert sorted(outbox.glob("*.dcm")) == []
    assert "nothing stays queued" in out
    assert f"stored {len(instances)} instance(s)" in out


@pytest.mark.peer("dciodvfy")
async def test_bare_streams_share_the_session_study(room: Room, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    rc, out = await receive(
        "--sdp", room.bare[0], "--sdp", room.bare[1], "--frames", FRAMES,
        "--snapshot-every", "0.4", "--store-dir", archive, "--outbox", tmp_path / "outbox",
        "--patient-id", "MRN-4711", "--patient-name", "Doe^Jane")
    assert rc == 0, out
    files = sorted(archive.glob("*.dcm"))
    instances = [pydicom.dcmread(p) for p in files]
    sizes = {(int(d.Columns), int(d.Rows)) for d in instances}
    assert sizes == {(64, 48), (80, 48)}, out
    assert {d.PatientID for d in instances} == {"MRN-4711"}
    assert len({d.StudyInstanceUID for d in instances}) == 1  # one study for the session
    series = {(d.SeriesInstanceUID, d.SeriesNumber) for d in instances}
    assert len(series) == 2  # a series per stream ...
    assert len({number for _, number in series}) == 2  # ... told apart by their numbers
    errors = dicom3tools_errors(files)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(("extra", "flag"), [
    (["--sdp", "a.sdp"], "--sdp"),
    (["--http", "127.0.0.1:9100"], "--http"),
    (["--mqtt", "mqtt://127.0.0.1:1883"], "--mqtt"),
    (["--analyze", "examples/bright_band.py:analyze"], "--analyze"),
])
def test_what_several_streams_refuse(extra: list[str], flag: str) -> None:
    from rtstream.cli import build_parser
    from rtstream.commands.receive import build_configs

    args = build_parser().parse_args(["receive", "--sdp", "a.sdp", "--sdp", "b.sdp", *extra])
    with pytest.raises(ConfigError) as err:
        build_configs(args)
    assert err.value.key == flag


def test_several_streams_get_their_own_dump_folders(tmp_path: Path) -> None:
    from rtstream.cli import build_parser
    from rtstream.commands.receive import build_configs

    args = build_parser().parse_args([
        "receive", "--sdp", "a.sdp", "--sdp", "b.sdp", "--dump-frames", str(tmp_path / "f"),
        "--dump-metadata", str(tmp_path / "m"), "--patient-id", "MRN-4711"])
    one, two = build_configs(args)
    assert (one.sdp, two.sdp) == ("a.sdp", "b.sdp")
    assert (one.dump_frames, two.dump_frames) == (tmp_path / "f" / "1", tmp_path / "f" / "2")
    assert (one.dump_metadata, two.dump_metadata) == (tmp_path / "m" / "1", tmp_path / "m" / "2")
    assert one.context is not None and two.context is not None
    assert one.context["study_instance_uid"] == two.context["study_instance_uid"]
    single = build_configs(build_parser().parse_args([
        "receive", "--sdp", "a.sdp", "--dump-frames", str(tmp_path / "f")]))
    assert [c.dump_frames for c in single] == [tmp_path / "f"]  # one stream: as before
