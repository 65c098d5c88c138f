"""Every stored instance we build passes dicom3tools' dciodvfy with no Error line and
reads back with dcmtk's dcmdump and with pydicom.

dciodvfy (dicom3tools 1.00 in Debian) has no definition of the real-time IODs of
PS3.22; for a grain's data set it answers "Error - Information Object Not found". That
test records what it says and checks that this is the only complaint.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from rtstream.dicom.realtime import RtvSop
from rtstream.dicom.stored import build_clip, build_snapshot, save_new
from rtstream.proto.clock import PtpTimestamp
from rtstream.proto.pixfmt import to_wire
from rtstream.proto.rtv_metadata import decode_grain, split_static
from tests.dicom.test_realtime import builder
from tests.dicom.test_stored import ORIGIN, bars_image, make_static
from tests.peers import require_program
from tests.vectors.rtv_vectors import VIDEO_FMT, VIDEO_FMT_8


def dciodvfy(path: Path) -> list[str]:
    prog = require_program("dciodvfy")
    out = subprocess.run([prog, str(path)], capture_output=True, text=True, timeout=60)
    return (out.stdout + out.stderr).splitlines()


def dcmdump(path: Path) -> str:
    prog = require_program("dcmdump")
    out = subprocess.run([prog, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def instances() -> list[tuple[str, pydicom.Dataset]]:
    out = []
    for sop in (RtvSop.ENDOSCOPIC, RtvSop.PHOTOGRAPHIC):
        for fmt in (VIDEO_FMT, VIDEO_FMT_8):
            static = make_static(sop, fmt)
            wire = to_wire(bars_image(fmt), "rgb24", fmt)
            out.append(
                (
                    f"snapshot-{sop.name}-{fmt.depth}",
                    build_snapshot(
                        wire, fmt, static, rtv_sop_instance_uid=static.SOPInstanceUID,
                        origin=ORIGIN, series_instance_uid="1.2.3.99", burned_in_annotation=True,
                    ),
                )
            )  # fmt: skip
        static = make_static(sop)
        frames = [to_wire(bars_image(VIDEO_FMT, i), "rgb24", VIDEO_FMT) for i in range(6)]
        out.append(
            (
                f"clip-{sop.name}",
                build_clip(
                    frames, VIDEO_FMT, static, rtv_sop_instance_uid=static.SOPInstanceUID,
                    origin=ORIGIN, series_instance_uid="1.2.3.98",
                ),
            )
        )  # fmt: skip
    static = make_static(RtvSop.ENDOSCOPIC)
    static.SOPClassUID = "1.2.840.10008.10.3"
    wire = to_wire(bars_image(VIDEO_FMT), "rgb24", VIDEO_FMT)
    out.append(
        (
            "snapshot-secondary-capture",
            build_snapshot(
                wire, VIDEO_FMT, static, rtv_sop_instance_uid="1.2.3",
                origin=ORIGIN, series_instance_uid="1.2.3.97",
            ),
        )
    )  # fmt: skip
    return out


@pytest.mark.peer("dciodvfy")
@pytest.mark.parametrize(("name", "ds"), instances(), ids=lambda v: v if isinstance(v, str) else "")
def test_stored_instance_passes_dciodvfy(name: str, ds: pydicom.Dataset, tmp_path: Path) -> None:
    path = save_new(ds, tmp_path)
    lines = dciodvfy(path)
    errors = [line for line in lines if "Error" in line]
    assert not errors, "\n".join(lines)
    dump = dcmdump(path)
    assert ds.SOPInstanceUID in dump and "(0006,0001)" not in dump
    back = pydicom.dcmread(path)
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


@pytest.mark.peer("dciodvfy")
@pytest.mark.parametrize("sop", [RtvSop.ENDOSCOPIC, RtvSop.AUDIO])
def test_grain_data_set_dciodvfy_report(sop: RtvSop, tmp_path: Path) -> None:
    """dciodvfy does not know the RTV IODs; record what it says about a grain's static
    part saved as a file, and require that the unknown IOD is its only error."""
    b = builder(sop)
    grain = decode_grain(b.grain(origin=PtpTimestamp(1_700_000_000, 0), frame_number=0, now=0))
    ds = split_static(grain.dataset)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop.value)
    meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path = tmp_path / f"{uuid.uuid4()}.dcm"
    ds.save_as(path, enforce_file_format=True)
    lines = dciodvfy(path)
    print("\n".join(lines))  # the report, visible with -s
    errors = [line for line in lines if "Error" in line]
    assert errors == ["Error - Information Object Not found"]
    dump = dcmdump(path)
    assert "RealTimeBulkDataFlowSequence" in dump
