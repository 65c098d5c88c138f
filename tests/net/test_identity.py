"""Identity, numbering and idempotent snapshots of stored instances (issue #19, findings 1, 7, 8).

A real :class:`~rtstream.sender.Sender` (the test source) streams on 127.0.0.1 to a real
:class:`~rtstream.receiver.Receiver`, which stores into a folder. The "third-party" SDP is
the sender's own minus its metadata flows: the receiver then knows no patient or study.
Every file of a session is checked by dicom3tools: ``dciodvfy`` per file, ``dcentvfy``
across them (patient, study and series attributes agree).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import pydicom
import pytest

from rtstream.errors import ConfigError, LocalProtocolError
from rtstream.proto.sdp import MediaKind, write_sdp
from rtstream.receiver import Receiver, ReceiverConfig
from rtstream.sender import NetworkConfig, Sender, SenderConfig, VideoConfig
from tests.peers import free_port, require_program

IDENTITY = {"patient_id": "MRN-4711", "patient_name": "Doe^Jane", "accession_number": "A42"}


@dataclasses.dataclass
class Stream:
    sender: Sender
    sdp: Path  # the sender's own SDP, metadata flows included
    bare_sdp: Path  # the same flows without metadata: a third party's ST 2110 SDP


@pytest.fixture
async def stream(tmp_path: Path) -> AsyncIterator[Stream]:
    base = free_port(count=4, step=2)
    cfg = SenderConfig(source="testsrc", video=VideoConfig(width=64, height=48, fps=Fraction(30)),
                       network=NetworkConfig(dest="127.0.0.1", port=base))
    sender = Sender(cfg)  # a metadata flow nobody listens to is refused and goes on
    async with sender:
        session = sender.session()
        sdp = tmp_path / "rtv.sdp"
        sdp.write_text(write_sdp(session))
        bare = dataclasses.replace(
            session, media=tuple(m for m in session.media if m.kind is not MediaKind.METADATA))
        bare_sdp = tmp_path / "bare.sdp"
        bare_sdp.write_text(write_sdp(bare))
        task = asyncio.create_task(sender.run())
        try:
            yield Stream(sender, sdp, bare_sdp)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def receiver_config(sdp: Path, tmp_path: Path, **kw: object) -> ReceiverConfig:
    return ReceiverConfig(sdp=str(sdp), store_dir=tmp_path / "archive",
                          outbox=tmp_path / "outbox", **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def receiving(cfg: ReceiverConfig) -> AsyncIterator[Receiver]:
    """A receiver whose items are consumed, with a frame (and the static part of a stream
    with metadata) received before it is handed out."""
    (cfg.store_dir or Path()).mkdir(parents=True, exist_ok=True)
    async with Receiver(cfg) as rx:

        async def consume() -> None:
            async for _ in rx:
                pass

        task = asyncio.create_task(consume())
        try:
            await next_frame(rx, 0)
            for _ in range(300):  # the static part comes at least every 500 ms
                if all(m.static is not None for m in rx.metadata):
                    break
                await asyncio.sleep(0.01)
            yield rx
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def next_frame(rx: Receiver, seen: int) -> int:
    """Wait until more than ``seen`` video frames were delivered; the new count."""
    for _ in range(500):
        n = rx.delivered_video
        if n > seen:
            return n
        await asyncio.sleep(0.01)
    raise AssertionError(f"no video frame after {seen} ({rx.stats})")


async def record_clip(rx: Receiver, frames: int) -> str:
    rx.record_start(frames=frames)
    for _ in range(500):
        rec = rx.capture.recording
        if rec is not None and rec.frames >= frames:
            break
        await asyncio.sleep(0.01)
    res = await rx.record_stop()
    assert res.ok
    return res.sop_instance_uid


def stored(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


def dicom3tools_errors(files: list[Path]) -> list[str]:
    """``Error`` lines of dcentvfy over all files and of dciodvfy per file."""
    lines: list[str] = []
    out = subprocess.run([require_program("dcentvfy"), *map(str, files)],
                         capture_output=True, text=True, timeout=120)
    lines += [f"dcentvfy: {x}" for x in (out.stdout + out.stderr).splitlines() if "Error" in x]
    for f in files:
        out = subprocess.run([require_program("dciodvfy"), str(f)],
                             capture_output=True, text=True, timeout=60)
        lines += [f"dciodvfy {f.name}: {x}" for x in (out.stdout + out.stderr).splitlines()
                  if "Error" in x]
    return lines


# -- no identity: refused ------------------------------------------------------------------


async def test_stream_without_metadata_and_identity_is_refused(
    stream: Stream, tmp_path: Path
) -> None:
    async with receiving(receiver_config(stream.bare_sdp, tmp_path)) as rx:
        assert rx.metadata == []
        with pytest.raises(LocalProtocolError, match="--patient-id") as snap:
            await rx.snapshot()
        assert "no DICOM-RTV metadata" in str(snap.value)
        with pytest.raises(LocalProtocolError, match="--patient-id"):
            await rx.capture.queue_snapshot()  # the MQTT command's path
        with pytest.raises(LocalProtocolError, match="--patient-id"):
            rx.record_start(frames=3)
        from rtstream.viewer.server import snapshot_from_receiver

        rtp = rx.video[0].recent[-1].rtp_timestamp
        with pytest.raises(LocalProtocolError, match="--patient-id"):  # the viewer's button
            await snapshot_from_receiver(rx)("VID", rtp)
    assert stored(tmp_path / "archive") == []


@pytest.mark.parametrize("kw", [{"snapshot_every": 1.0}, {"record": 1.0}], ids=["every", "record"])
async def test_periodic_capture_of_a_bare_stream_fails_at_start(
    stream: Stream, tmp_path: Path, kw: dict[str, float]
) -> None:
    with pytest.raises(ConfigError, match="--patient-id") as err:
        async with Receiver(receiver_config(stream.bare_sdp, tmp_path, **kw)):
            pass
    assert err.value.key in ("--snapshot-every", "--record")


def test_identity_is_checked_when_configured() -> None:
    with pytest.raises(ConfigError, match=r"context\.patient_id"):
        ReceiverConfig(sdp="x.sdp", context={"patient_name": "Doe^Jane"})
    with pytest.raises(ConfigError, match=r"context\.patient_name"):
        ReceiverConfig(sdp="x.sdp", context={"patient_id": "1", "patient_name": "a\\b"})
    with pytest.raises(ConfigError, match=r"context\.patient_nmae"):
        ReceiverConfig(sdp="x.sdp", context={"patient_id": "1", "patient_nmae": "x"})


@pytest.mark.parametrize("command", ["receive", "view"])
def test_identity_flags(command: str) -> None:
    """receive and view take send's context flags (and --accession for short)."""
    from rtstream.cli import build_parser
    from rtstream.commands._identity_args import context_from_args

    args = build_parser().parse_args([
        command, "--sdp", "x.sdp", "--patient-id", "MRN-4711", "--patient-name", "Doe^Jane",
        "--accession", "A42", "--study-description", "Knee"])
    assert context_from_args(args) == {**IDENTITY, "study_description": "Knee"}
    if command == "receive":
        from rtstream.commands.receive import build_config

        assert build_config(args).context == {**IDENTITY, "study_description": "Knee"}
    bare = build_parser().parse_args([command, "--sdp", "x.sdp"])
    assert context_from_args(bare) is None


# -- with an identity: one patient, one study, a series per kind -----------------------------


@pytest.mark.peer("dciodvfy")
async def test_identity_session_stores_one_study_with_a_series_per_kind(
    stream: Stream, tmp_path: Path
) -> None:
    cfg = receiver_config(stream.bare_sdp, tmp_path, context=IDENTITY)
    async with receiving(cfg) as rx:
        seen = 0
        for _ in range(2):
            res = await rx.snapshot()
            assert res.ok
            seen = await next_frame(rx, seen or rx.delivered_video)
        clips = [await record_clip(rx, 3) for _ in range(2)]
    files = sorted((tmp_path / "archive").glob("*.dcm"))
    instances = [pydicom.dcmread(f) for f in files]
    assert len(instances) == 4
    assert {str(d.PatientName) for d in instances} == {"Doe^Jane"}
    assert {d.PatientID for d in instances} == {"MRN-4711"}
    assert {d.AccessionNumber for d in instances} == {"A42"}
    assert len({d.StudyInstanceUID for d in instances}) == 1
    stills = [d for d in instances if d.SOPInstanceUID not in clips]
    videos = [d for d in instances if d.SOPInstanceUID in clips]
    assert len(stills) == 2 and len(videos) == 2
    assert len({d.SeriesInstanceUID for d in stills}) == 1
    assert len({d.SeriesInstanceUID for d in videos}) == 1
    assert stills[0].SeriesInstanceUID != videos[0].SeriesInstanceUID
    assert len({d.SeriesNumber for d in stills}) == len({d.SeriesNumber for d in videos}) == 1
    assert stills[0].SeriesNumber != videos[0].SeriesNumber
    assert sorted(int(d.InstanceNumber) for d in stills) == [1, 2]
    assert sorted(int(d.InstanceNumber) for d in videos) == [1, 2]
    errors = dicom3tools_errors(files)
    assert not errors, "\n".join(errors)


async def test_each_identity_session_is_its_own_study(stream: Stream, tmp_path: Path) -> None:
    studies = []
    for i in range(2):
        cfg = receiver_config(stream.bare_sdp, tmp_path / str(i), context=IDENTITY)
        async with receiving(cfg) as rx:
            res = await rx.snapshot()
        assert res.dataset is not None
        studies.append(res.dataset.StudyInstanceUID)
    assert studies[0] != studies[1]
    given = {**IDENTITY, "study_instance_uid": "1.2.826.0.1.3680043.2.1143.4711"}
    cfg = receiver_config(stream.bare_sdp, tmp_path / "given", context=given)
    async with receiving(cfg) as rx:
        res = await rx.snapshot()
    assert res.dataset is not None
    assert res.dataset.StudyInstanceUID == given["study_instance_uid"]


# -- idempotent snapshots ------------------------------------------------------------------


async def test_two_requests_for_one_frame_store_one_instance(
    stream: Stream, tmp_path: Path
) -> None:
    async with receiving(receiver_config(stream.sdp, tmp_path)) as rx:
        first = await rx.capture.queue_snapshot()  # the MQTT command's path
        rtp = first.rtp_timestamp
        again = await rx.capture.queue_snapshot(rtp_timestamp=rtp)
        clicked = await rx.snapshot(rtp)  # the viewer's button
        twice = await asyncio.gather(rx.snapshot(rtp), rx.snapshot(rtp))
        from rtstream.viewer.server import snapshot_from_receiver

        button = await snapshot_from_receiver(rx)("VID", rtp)
        assert button.ok and button.sop_instance_uid == first.sop_instance_uid
        assert again is first
        assert {clicked.sop_instance_uid, *(r.sop_instance_uid for r in twice)} == {
            first.sop_instance_uid}
        assert clicked.ok
        await next_frame(rx, rx.delivered_video)
        rtp2 = rx.video[0].recent[-1].rtp_timestamp
        assert rtp2 != rtp
        # two requests at once: the second waits for the first's build, no second build
        other, same = await asyncio.gather(rx.snapshot(rtp2), rx.snapshot(rtp2))
        assert other.sop_instance_uid == same.sop_instance_uid != first.sop_instance_uid
        assert len(rx.capture.snapshots) == 1  # rx.snapshot stored one new instance: rtp2
    uids = [d.SOPInstanceUID for d in stored(tmp_path / "archive")]
    assert sorted(uids) == sorted([first.sop_instance_uid, other.sop_instance_uid])


# -- two sessions on one stream ------------------------------------------------------------


async def test_two_sessions_on_one_stream_make_distinct_series(
    stream: Stream, tmp_path: Path
) -> None:
    results = []
    for i in range(2):
        async with receiving(receiver_config(stream.sdp, tmp_path / str(i))) as rx:
            res = await rx.snapshot()
            clip = await record_clip(rx, 2)
        assert res.dataset is not None
        results.append((res.dataset, pydicom.dcmread(tmp_path / str(i) / "archive" / f"{clip}.dcm")))
    (a, a_clip), (b, b_clip) = results
    assert a.StudyInstanceUID == b.StudyInstanceUID  # the stream's study
    series = {d.SeriesInstanceUID for d in (a, a_clip, b, b_clip)}
    numbers = {int(d.SeriesNumber) for d in (a, a_clip, b, b_clip)}
    assert len(series) == 4 and len(numbers) == 4
    assert a.ReferencedSeriesSequence[0].SeriesInstanceUID not in series  # the RTV series
    assert 1 not in numbers  # the real-time series' number (the sender's static part)
    assert all(int(d.InstanceNumber) == 1 for d in (a, a_clip, b, b_clip))


def test_series_numbers_of_sessions_started_in_one_millisecond_differ() -> None:
    from rtstream.receiver.capture import session_series_numbers

    t = 1_796_554_652_646_121_953
    a, b = session_series_numbers(t), session_series_numbers(t)
    assert a[1] == a[0] + 1 and b[1] == b[0] + 1
    assert len({*a, *b}) == 4
    top = session_series_numbers((10**9 - 1) * 1_000_000)
    assert 10_000 <= min(a) and max(top) <= 2**31 - 1  # IS is a signed 32-bit value
