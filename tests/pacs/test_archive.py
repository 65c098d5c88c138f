"""The embedded archive SCP, fed by our pynetdicom SCU and by dcmtk storescu."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import UID, VideoEndoscopicImageStorage, generate_uid
from pynetdicom import AE

from rtstream.errors import ConfigError
from rtstream.pacs.archive import Archive
from rtstream.pacs.store import StoreClient, StoreConfig
from tests.pacs.conftest import dataset_body, secondary_capture
from tests.peers import free_port, require_program, stop, wait_for_tcp

ROOT = Path(__file__).resolve().parents[2]
H264_HP41 = "1.2.840.10008.1.2.4.102"


def h264_video(frames: int = 8, width: int = 64, height: int = 48) -> pydicom.Dataset:
    """A Video Endoscopic Image (PS3.3 A.32.7) with a real H.264 stream made by PyAV."""
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = Fraction(1, 25)
    enc.options = {"preset": "ultrafast", "tune": "zerolatency"}
    stream = bytearray()
    rng = np.random.default_rng(5)
    for i in range(frames):
        img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        for pkt in enc.encode(frame):
            stream += bytes(pkt)
    for pkt in enc.encode(None):
        stream += bytes(pkt)
    ds = secondary_capture(rows=height, cols=width, sop_class_uid=VideoEndoscopicImageStorage)
    ds.file_meta.TransferSyntaxUID = UID(H264_HP41)
    ds.Modality = "ES"
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.NumberOfFrames = frames
    ds.FrameTime = 40
    ds.FrameIncrementPointer = (0x0018, 0x1063)
    ds.LossyImageCompression = "01"
    ds.PixelData = encapsulate([bytes(stream)])
    ds["PixelData"].VR = "OB"
    del ds.ConversionType
    return ds


def write_file(ds: pydicom.Dataset, path: Path) -> bytes:
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path.read_bytes()


async def test_store_client_into_archive_layout_and_bytes(archive: Archive, tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    sent = [
        secondary_capture(rows=24, cols=32, seed=i, study_uid=study, series_uid=series)
        for i in range(3)
    ]
    video = h264_video()
    cfg = StoreConfig.from_target(archive.target, outbox=tmp_path / "outbox")
    async with StoreClient(cfg) as sc:
        for ds in [*sent, video]:
            assert (await sc.submit(ds)).ok
    for ds in [*sent, video]:
        path = archive.path_of(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        assert path.exists()
        expected = io.BytesIO()
        pydicom.dcmwrite(expected, ds, enforce_file_format=True)
        assert dataset_body(path.read_bytes()) == dataset_body(expected.getvalue())
    assert archive.counters == {"received": 4, "duplicates": 0, "failed": 0}
    back = pydicom.dcmread(
        archive.path_of(video.StudyInstanceUID, video.SeriesInstanceUID, video.SOPInstanceUID)
    )
    assert back.file_meta.TransferSyntaxUID == H264_HP41
    assert back.PixelData == video.PixelData


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_duplicate_uid_keeps_first_and_answers_success(archive: Archive) -> None:
    first = secondary_capture(rows=8, cols=8, seed=1)
    second = secondary_capture(
        rows=8,
        cols=8,
        seed=2,
        sop_instance_uid=first.SOPInstanceUID,
        study_uid=first.StudyInstanceUID,
        series_uid=first.SeriesInstanceUID,
    )
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(first.SOPClassUID, [first.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", archive.port, ae_title=archive.aet)
    assert assoc.is_established
    try:
        assert assoc.send_c_store(first).Status == 0x0000
        assert assoc.send_c_store(second).Status == 0x0000
        bad = secondary_capture(rows=8, cols=8, seed=3)
        bad.StudyInstanceUID = "../../escape"
        assert assoc.send_c_store(bad).Status == 0xC000
    finally:
        assoc.release()
        ae.shutdown()
    path = archive.path_of(first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID)
    assert pydicom.dcmread(path).PixelData == first.PixelData
    assert archive.counters == {"received": 1, "duplicates": 1, "failed": 1}
    assert len(archive.files()) == 1
    assert not list(archive.directory.parent.glob("escape*"))


def test_dcmtk_storescu_into_archive(archive: Archive, tmp_path: Path) -> None:
    storescu = require_program("storescu")
    sc = secondary_capture(rows=20, cols=30, seed=9)
    video = h264_video()
    sc_bytes = write_file(sc, tmp_path / "sc.dcm")
    video_bytes = write_file(video, tmp_path / "video.dcm")
    base = [storescu, "-aet", "DCMTKSCU", "-aec", archive.aet, "127.0.0.1", str(archive.port)]
    subprocess.run([*base, str(tmp_path / "sc.dcm")], check=True, timeout=30, capture_output=True)
    subprocess.run(
        [storescu, "-R", "-xn", *base[1:], str(tmp_path / "video.dcm")],
        check=True,
        timeout=30,
        capture_output=True,
    )
    assert archive.wait_for(2, 10)
    for ds, raw in ((sc, sc_bytes), (video, video_bytes)):
        got = archive.path_of(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
        ).read_bytes()
        assert dataset_body(got) == dataset_body(raw)
        back = pydicom.dcmread(io.BytesIO(got))
        assert back.file_meta.TransferSyntaxUID == raw_ts(raw)


def raw_ts(raw: bytes) -> str:
    return str(
        pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True).file_meta.TransferSyntaxUID
    )


def test_archive_rejects_bad_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Archive(tmp_path, 70000)
    with pytest.raises(ConfigError):
        Archive(tmp_path, 0, "X" * 17)


def test_archive_command(tmp_path: Path) -> None:
    storescu = require_program("storescu")
    port = free_port(kind=socket.SOCK_STREAM)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "out.log"
    with open(out, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rtstream",
                "archive",
                "--dir",
                str(tmp_path / "a"),
                "--port",
                str(port),
                "--aet",
                "CLIARCH",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        try:
            wait_for_tcp(port, timeout=30)
            ds = secondary_capture(rows=8, cols=8)
            write_file(ds, tmp_path / "x.dcm")
            sent = subprocess.run(
                [storescu, "-aec", "CLIARCH", "127.0.0.1", str(port), str(tmp_path / "x.dcm")],
                timeout=30,
                capture_output=True,
                text=True,
            )
            assert sent.returncode == 0, (sent.stdout, sent.stderr, out.read_text())
            os.kill(proc.pid, signal.SIGTERM)
            assert proc.wait(15) == 0
        finally:
            stop(proc)
    text = out.read_text()
    assert "stored 1, duplicates 0, failed 0" in text, text
    assert (
        tmp_path / "a" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    ).exists()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "rtstream",
            "archive",
            "--dir",
            str(tmp_path / "b"),
            "--port",
            "0",
            "--aet",
            "X" * 17,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "--aet" in bad.stderr
