"""Fixtures for the store / archive / worklist tests: real Orthanc, dcmtk storescp, our SCP."""

from __future__ import annotations

import datetime
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

import rtstream.pacs.context
import rtstream.pacs.worklist
from rtstream.pacs.archive import Archive
from tests.orthanc import Orthanc, die_with_parent
from tests.peers import free_port, require_program, stop, wait_for_tcp

# The day the worklist entries of these tests are scheduled on. A query for "today" is
# asked on this day too, so that a run crossing midnight between writing the entries and
# querying them still finds them (one did: six worklist tests failed at 00:00).
TODAY = datetime.date.today().strftime("%Y%m%d")


@pytest.fixture(autouse=True)
def _today_is_the_day_of_the_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (rtstream.pacs.worklist, rtstream.pacs.context):
        monkeypatch.setattr(module, "today", lambda: TODAY)


def secondary_capture(
    *,
    rows: int = 48,
    cols: int = 64,
    seed: int = 0,
    sop_instance_uid: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_class_uid: str = SecondaryCaptureImageStorage,
) -> Dataset:
    """An RGB Secondary Capture Image (PS3.3 A.8.1) with random pixels from ``seed``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = "Test^Store"
    ds.PatientID = "RTS-STORE"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    pixels = np.random.default_rng(seed).integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    ds.PixelData = pixels.tobytes()
    return ds


def dataset_body(data: bytes) -> bytes:
    """The data set bytes of a PS3.10 file: what follows the File Meta group (PS3.10 §7.1)."""
    assert data[128:132] == b"DICM"
    assert data[132:136] == b"\x02\x00\x00\x00" and data[136:138] == b"UL"
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length :]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """One Orthanc per test module (started in ~1 s), stopped by PID afterwards."""
    o = Orthanc(tmp_path_factory.mktemp("orthanc"))
    o.start()
    try:
        yield o
    finally:
        o.stop()


class StoreScp:
    """dcmtk ``storescp`` receiving into ``directory`` (bit-preserving, all syntaxes)."""

    def __init__(self, directory: Path, port: int, aet: str) -> None:
        self.directory = directory
        self.port = port
        self.aet = aet

    @property
    def target(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.port}"

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())

    def file_for(self, sop_instance_uid: str) -> Path:
        hits = [
            p
            for p in self.files()
            if p.name.endswith("." + sop_instance_uid) or p.name == sop_instance_uid
        ]
        assert len(hits) == 1, (sop_instance_uid, self.files())
        return hits[0]


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreScp]:
    """dcmtk storescp: ``storescp -od DIR +xa -pm +B -aet STORESCP PORT``."""
    program = require_program("storescp")
    out = tmp_path / "storescp"
    out.mkdir()
    port = free_port(kind=socket.SOCK_STREAM)
    log = open(tmp_path / "storescp.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [program, "-od", str(out), "+xa", "-pm", "+B", "-aet", "STORESCP", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        wait_for_tcp(port, timeout=20)
        yield StoreScp(out, port, "STORESCP")
    finally:
        stop(proc)
        log.close()


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    """Our embedded Storage SCP on a free loopback port."""
    with Archive(tmp_path / "archive", 0, "TESTARCH") as arch:
        yield arch
