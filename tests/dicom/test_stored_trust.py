"""Stored objects an archive can trust (issue #19 findings 2, 3, 5, 6, 9, 10).

Snapshots and clips are built from real-time static parts made the way the sender makes
them (the source's context -> :class:`StreamContext` -> :func:`static_part`): an
endoscope (ES), a camera (XC), the ultrasound cine ``samples/us-cine.dcm`` replayed
(US), a synthetic OCT context (OPT) and an H.264 file. They must say what was imaged,
keep the source study unchanged, write one time zone offset, carry the lossy history and
their provenance, and pass dciodvfy (no Error, no Warning) and dcentvfy together with
the source cine (no Error).
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    VideoEndoscopicImageStorage,
    VideoPhotographicImageStorage,
    VLEndoscopicImageStorage,
    VLPhotographicImageStorage,
)

from rtstream.dicom.context import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    StreamContext,
)
from rtstream.dicom.realtime import BulkFlowRef, RtvSop, imaged_modality, static_part
from rtstream.dicom.stored import build_clip, build_snapshot, save_new
from rtstream.media.sources import AvVideoSource, DicomSource, TestSource, context_fields
from rtstream.proto.clock import NS_PER_S, TAI_UTC_OFFSET_S
from rtstream.proto.pixfmt import to_wire
from rtstream.sender import rtv_sop_for
from tests.dicom.test_dciodvfy import dciodvfy
from tests.dicom.test_stored import ORIGIN, bars_image
from tests.peers import require_program
from tests.vectors.rtv_vectors import VIDEO_FMT_8

ROOT = Path(__file__).resolve().parents[2]
US_CINE = ROOT / "samples" / "us-cine.dcm"
MP4 = ROOT / "samples" / "clip.mp4"
FMT = VIDEO_FMT_8
STUDY_KEYWORDS = ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                  "ReferringPhysicianName", "StudyDescription")  # fmt: skip


_OCT_CINE: list[Path] = []


def oct_cine() -> Path:
    """The synthetic OCT cine of ``scripts/make_samples.py --oct`` (Modality OPT), made once."""
    if not _OCT_CINE:
        import importlib.util
        import tempfile

        spec = importlib.util.spec_from_file_location("make_samples", ROOT / "scripts" / "make_samples.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        import atexit
        import shutil

        folder = tempfile.mkdtemp(prefix="rtstream-oct-")
        atexit.register(shutil.rmtree, folder, True)
        path = Path(folder) / "oct-cine.dcm"
        module.write_oct_cine(path)
        _OCT_CINE.append(path)
    return _OCT_CINE[0]


def _context(values: dict[str, str]) -> StreamContext:
    return StreamContext(**context_fields(values, StreamContext))


def source_context(kind: str) -> tuple[StreamContext, RtvSop]:
    """The context the sender builds for a source, and the real-time class it sends."""
    if kind == "ES":
        ctx = StreamContext(patient_name="Doe^Jane", patient_id="P-1", modality="ES",
                            issuer_of_patient_id="HOSP-A", body_part="ABDOMEN")  # fmt: skip
        return ctx, rtv_sop_for(RtvSop.ENDOSCOPIC, ctx.modality)
    if kind == "XC":
        ctx = StreamContext(patient_name="Doe^Jane", patient_id="P-1", modality="XC")
        return ctx, rtv_sop_for(RtvSop.ENDOSCOPIC, ctx.modality)
    if kind == "US":
        src = DicomSource(f"dicom:{US_CINE}", US_CINE)
        ctx = _context(src.context)
        return ctx, rtv_sop_for(RtvSop.ENDOSCOPIC, ctx.modality)
    if kind == "OPT":  # a synthetic OCT scanner's context (worklist / [context])
        ctx = StreamContext(patient_name="Eye^Anna", patient_id="P-OCT", modality="OPT",
                            anatomic_region="Eye", laterality="R", study_date="20260102",
                            study_time="0930",
                            accession_number="OCT-7", study_id="OCT1")  # fmt: skip
        return ctx, rtv_sop_for(RtvSop.ENDOSCOPIC, ctx.modality)
    if kind == "OCTCINE":
        path = oct_cine()
        ctx = _context(DicomSource(f"dicom:{path}", path).context)
        return ctx, rtv_sop_for(RtvSop.ENDOSCOPIC, ctx.modality)
    if kind == "H264":
        av_src = AvVideoSource(f"file:{MP4}", str(MP4))
        av_src.close()
        ctx = _context(av_src.context)
        return ctx, rtv_sop_for(RtvSop.ENDOSCOPIC, ctx.modality)
    raise AssertionError(kind)


def make_static(kind: str, *, created_ns: int | None = None) -> pydicom.Dataset:
    ctx, sop = source_context(kind)
    bulk = BulkFlowRef(source_id=uuid.uuid4(), flow_id=uuid.uuid4(),
                       transfer_syntax_uid=FMT.transfer_syntax_uid, sampling_rate=90000)  # fmt: skip
    return static_part(sop, ctx, sop_instance_uid=pydicom.uid.generate_uid(prefix=None),
                       bulk_flows=[bulk], video=FMT, created_ns=created_ns)  # fmt: skip


def snapshot(static: pydicom.Dataset, **kw: Any) -> pydicom.Dataset:
    wire = to_wire(bars_image(FMT), "rgb24", FMT)
    return build_snapshot(wire, FMT, static, rtv_sop_instance_uid=static.SOPInstanceUID,
                          origin=ORIGIN, series_instance_uid=pydicom.uid.generate_uid(prefix=None),
                          series_number=101, **kw)  # fmt: skip


def clip(static: pydicom.Dataset, **kw: Any) -> pydicom.Dataset:
    frames = [to_wire(bars_image(FMT, 2 * i), "rgb24", FMT) for i in range(4)]
    return build_clip(frames, FMT, static, rtv_sop_instance_uid=static.SOPInstanceUID,
                      origin=ORIGIN, series_instance_uid=pydicom.uid.generate_uid(prefix=None),
                      series_number=102, **kw)  # fmt: skip


@pytest.fixture
def paris() -> Iterator[None]:
    """The process's local zone is Europe/Paris for the test."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Paris"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


def dcentvfy(paths: list[Path]) -> list[str]:
    prog = require_program("dcentvfy")
    out = subprocess.run([prog, *map(str, paths)], capture_output=True, text=True, timeout=60)
    return (out.stdout + out.stderr).splitlines()


# -- modality and SOP class (finding 2) ---------------------------------------------------

EXPECTED = {
    "ES": (RtvSop.ENDOSCOPIC, VLEndoscopicImageStorage, VideoEndoscopicImageStorage),
    "XC": (RtvSop.PHOTOGRAPHIC, VLPhotographicImageStorage, VideoPhotographicImageStorage),
    "US": (RtvSop.PHOTOGRAPHIC, SecondaryCaptureImageStorage,
           MultiFrameTrueColorSecondaryCaptureImageStorage),
    "OPT": (RtvSop.PHOTOGRAPHIC, SecondaryCaptureImageStorage,
            MultiFrameTrueColorSecondaryCaptureImageStorage),
    "OCTCINE": (RtvSop.PHOTOGRAPHIC, SecondaryCaptureImageStorage,
                MultiFrameTrueColorSecondaryCaptureImageStorage),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_modality_and_sop_class_follow_what_was_imaged(kind: str) -> None:
    rtv, still, video = EXPECTED[kind]
    static = make_static(kind)
    assert static.SOPClassUID == rtv.value and static.Modality == rtv.modality
    modality = "OPT" if kind == "OCTCINE" else kind
    assert imaged_modality(static) == modality  # the receiver learns it from the flow
    snap, movie = snapshot(static), clip(static)
    assert (snap.SOPClassUID, snap.Modality) == (still, modality)
    assert (movie.SOPClassUID, movie.Modality) == (video, modality)
    if still == SecondaryCaptureImageStorage:
        assert snap.ConversionType == "DV" and movie.ConversionType == "DV"


def test_unknown_modality_is_refused() -> None:
    from rtstream.errors import ConfigError

    with pytest.raises(ConfigError, match="context.modality"):
        StreamContext(modality="ULTRASOUND")


# -- dciodvfy / dcentvfy --------------------------------------------------------------------


@pytest.mark.peer("dciodvfy")
@pytest.mark.parametrize("kind", list(EXPECTED))
def test_dciodvfy_clean_and_dcentvfy_with_source(kind: str, tmp_path: Path) -> None:
    static = make_static(kind)
    paths = [save_new(snapshot(static), tmp_path), save_new(clip(static), tmp_path)]
    for path in paths:
        lines = dciodvfy(path)
        bad = [line for line in lines if line.startswith(("Error", "Warning"))]
        assert not bad, "\n".join(lines)
    if kind == "US":
        paths.append(US_CINE)
    if kind == "OCTCINE":
        paths.append(oct_cine())
    lines = dcentvfy(paths)
    assert not [line for line in lines if "Error" in line], "\n".join(lines)


# -- study consistency (finding 3) ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["US", "OCTCINE"])
def test_study_attributes_are_the_cines(kind: str) -> None:
    cine = pydicom.dcmread(US_CINE if kind == "US" else oct_cine(), stop_before_pixels=True)
    static = make_static(kind)
    for ds in (static, snapshot(static), clip(static)):
        for keyword in STUDY_KEYWORDS:
            assert ds.get(keyword) == cine.get(keyword), keyword
        assert (ds.PatientName, ds.PatientID) == (cine.PatientName, cine.PatientID)
        assert ds.TimezoneOffsetFromUTC == cine.get("TimezoneOffsetFromUTC", ds.TimezoneOffsetFromUTC)
    snap = snapshot(static)
    assert snap.SeriesNumber == 101 and snap.SeriesInstanceUID != cine.SeriesInstanceUID


# -- time zone (finding 5) ------------------------------------------------------------------


def _offset_of(ds: pydicom.Dataset) -> _dt.timezone:
    text = str(ds.TimezoneOffsetFromUTC)
    minutes = int(text[1:3]) * 60 + int(text[3:])
    return _dt.timezone(_dt.timedelta(minutes=-minutes if text[0] == "-" else minutes))


def _instant(date: str, tm: str, zone: _dt.tzinfo) -> _dt.datetime:
    return _dt.datetime.strptime(date + tm.split(".")[0], "%Y%m%d%H%M%S").replace(tzinfo=zone)


def test_timezone_offset_agrees_with_the_capture_instant_in_paris(paris: None) -> None:
    captured = _dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=_dt.UTC)  # ORIGIN in UTC
    created_ns = (int(captured.timestamp()) + TAI_UTC_OFFSET_S) * NS_PER_S
    static = make_static("ES", created_ns=created_ns)
    assert static.TimezoneOffsetFromUTC == "+0100"  # CET in November
    assert _instant(static.InstanceCreationDate, static.InstanceCreationTime,
                    _offset_of(static)) == captured  # fmt: skip
    assert static.AcquisitionDateTime.endswith("+0100")
    for ds in (snapshot(static), clip(static)):
        assert ds.TimezoneOffsetFromUTC == "+0100"
        zone = _offset_of(ds)
        assert ds.AcquisitionDateTime == "20231114231320.250000+0100"
        assert _instant(ds.ContentDate, ds.ContentTime, zone) == captured
        created = _instant(ds.InstanceCreationDate, ds.InstanceCreationTime, zone)
        assert abs(created - _dt.datetime.now(_dt.UTC)) < _dt.timedelta(minutes=5)
        assert ds.ContributingEquipmentSequence[-1].ContributionDateTime.endswith("+0100")


def test_stored_instance_keeps_the_streams_offset(paris: None) -> None:
    """A static part written in another zone (a source study's -0500) gives its offset
    to every stored time, whatever the receiver's zone: one offset per instance."""
    ctx, sop = source_context("ES")
    bulk = BulkFlowRef(source_id=uuid.uuid4(), flow_id=uuid.uuid4(),
                       transfer_syntax_uid=FMT.transfer_syntax_uid, sampling_rate=90000)  # fmt: skip
    import dataclasses

    static = static_part(sop, dataclasses.replace(ctx, timezone_offset="-0500"),
                         sop_instance_uid="1.2.3.4", bulk_flows=[bulk], video=FMT)  # fmt: skip
    snap = snapshot(static)
    assert static.TimezoneOffsetFromUTC == snap.TimezoneOffsetFromUTC == "-0500"
    assert snap.AcquisitionDateTime == "20231114171320.250000-0500"


# -- lossy history (finding 6) --------------------------------------------------------------


def test_h264_source_is_lossy_everywhere() -> None:
    static = make_static("H264")
    assert static.LossyImageCompression == "01"
    assert static.LossyImageCompressionMethod == "ISO_14496_10"
    assert float(static.LossyImageCompressionRatio) > 1
    snap = snapshot(static)
    assert snap.LossyImageCompression == "01"
    assert snap.LossyImageCompressionMethod == "ISO_14496_10"
    movie = clip(static)
    assert movie.LossyImageCompression == "01"
    assert list(movie.LossyImageCompressionMethod) == ["ISO_14496_10", "ISO_14496_10"]
    assert len(movie.LossyImageCompressionRatio) == 2


def test_uncompressed_source_snapshot_not_lossy_clip_lossy() -> None:
    static = make_static("ES")
    assert static.LossyImageCompression == "00" and snapshot(static).LossyImageCompression == "00"
    movie = clip(static)
    assert movie.LossyImageCompression == "01"
    assert movie.LossyImageCompressionMethod == "ISO_14496_10"


def test_lossy_cine_is_lossy_in_the_static_part(tmp_path: Path) -> None:
    ds = pydicom.dcmread(US_CINE)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.LossyImageCompressionRatio = "12"
    path = tmp_path / "lossy.dcm"
    ds.save_as(path)
    ctx = _context(DicomSource(f"dicom:{path}", path).context)
    assert (ctx.lossy_compression, ctx.lossy_method, ctx.lossy_ratio) == ("01", "ISO_10918_1", "12")


# -- provenance (finding 9) -----------------------------------------------------------------


def _code(seq: Any) -> tuple[str, str, str]:
    item = seq[0]
    return str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.CodeMeaning)


def test_provenance_names_the_rtv_instance_the_cine_and_rtstream() -> None:
    cine = pydicom.dcmread(US_CINE, stop_before_pixels=True)
    static = make_static("US")
    (src,) = static.SourceImageSequence  # the cine travels in the static part
    assert src.ReferencedSOPInstanceUID == cine.SOPInstanceUID
    assert static.ReferencedSeriesSequence[0].SeriesInstanceUID == cine.SeriesInstanceUID
    snap, movie = snapshot(static), clip(static)
    for ds, purpose in ((snap, "121322"), (movie, "121320")):
        rtv, source = ds.SourceImageSequence
        assert rtv.ReferencedSOPInstanceUID == static.SOPInstanceUID
        assert _code(rtv.PurposeOfReferenceCodeSequence)[0] == purpose
        assert (source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID) == (
            cine.SOPClassUID, cine.SOPInstanceUID)  # fmt: skip
        assert _code(source.PurposeOfReferenceCodeSequence) == (
            "121322", "DCM", "Source image for image processing operation")  # fmt: skip
        series = {item.SeriesInstanceUID for item in ds.ReferencedSeriesSequence}
        assert series == {static.SeriesInstanceUID, cine.SeriesInstanceUID}
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]  # the cine was SECONDARY
        (equipment,) = ds.ContributingEquipmentSequence
        assert equipment.Manufacturer == "rtstream" and equipment.SoftwareVersions
        assert _code(equipment.PurposeOfReferenceCodeSequence) == (
            "109102", "DCM", "Processing Equipment")  # fmt: skip
    assert _code(movie.DerivationCodeSequence) == ("113040", "DCM", "Lossy Compression")


# -- placeholders (finding 10) --------------------------------------------------------------


def test_anatomic_region_from_body_part_and_configuration() -> None:
    snap = snapshot(make_static("ES"))  # body_part ABDOMEN
    assert _code(snap.AnatomicRegionSequence) == ("818981001", "SCT", "Abdomen")
    opt = snapshot(make_static("OPT"))
    assert _code(opt.AnatomicRegionSequence)[2] == "Eye" and opt.Laterality == "R"
    assert _code(snapshot(make_static("XC")).AnatomicRegionSequence)[2] == "Entire body"


def test_testsrc_has_burned_in_annotation() -> None:
    ctx = _context(TestSource().context)
    bulk = BulkFlowRef(source_id=uuid.uuid4(), flow_id=uuid.uuid4(),
                       transfer_syntax_uid=FMT.transfer_syntax_uid, sampling_rate=90000)  # fmt: skip
    static = static_part(RtvSop.ENDOSCOPIC, ctx, sop_instance_uid="1.2.3.5", bulk_flows=[bulk],
                         video=FMT)  # fmt: skip
    assert static.BurnedInAnnotation == "YES"
    assert snapshot(static).BurnedInAnnotation == "YES"
    assert clip(static).BurnedInAnnotation == "YES"


def test_no_placeholders_series_description_uids_issuer() -> None:
    static = make_static("ES")
    snap, movie = snapshot(static), clip(static)
    for ds, description in ((snap, "rtstream snapshots"), (movie, "rtstream clips")):
        assert ds.get("DeviceSerialNumber") != "UNKNOWN"
        assert ds.SeriesDescription == description
        assert ds.IssuerOfPatientID == "HOSP-A"
        assert ds.SOPInstanceUID.startswith("2.25.")
        assert ds.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
        assert ds.file_meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert static.IssuerOfPatientID == "HOSP-A"
    rooted = snapshot(static, uid_root="1.2.826.0.1.3680043.10.999")
    assert rooted.SOPInstanceUID.startswith("1.2.826.0.1.3680043.10.999.")


def test_file_meta_survives_save(tmp_path: Path) -> None:
    back = pydicom.dcmread(save_new(snapshot(make_static("US")), tmp_path))
    assert back.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert back.Modality == "US" and back.TimezoneOffsetFromUTC
    assert np.frombuffer(back.PixelData, np.uint8).size == FMT.width * FMT.height * 3


def test_non_es_modality_is_sent_as_photographic() -> None:
    assert rtv_sop_for(RtvSop.ENDOSCOPIC, "US") is RtvSop.PHOTOGRAPHIC
    assert rtv_sop_for(RtvSop.ENDOSCOPIC, "ES") is RtvSop.ENDOSCOPIC
    assert rtv_sop_for(RtvSop.ENDOSCOPIC, "") is RtvSop.ENDOSCOPIC  # unknown: as configured
    assert rtv_sop_for(RtvSop.PHOTOGRAPHIC, "ES") is RtvSop.PHOTOGRAPHIC


@pytest.mark.peer("dciodvfy")
@pytest.mark.parametrize("kind", ["US", "OPT", "H264"])
def test_static_part_with_source_context_only_unknown_iod(kind: str, tmp_path: Path) -> None:
    """The added static-part attributes (Acquisition Context item, Source Image, Common
    Instance Reference, lossy method, offset) raise nothing but dciodvfy's unknown IOD."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    ds = make_static(kind)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(ds.SOPClassUID)
    meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path = tmp_path / "static.dcm"
    ds.save_as(path, enforce_file_format=True)
    lines = dciodvfy(path)
    assert [line for line in lines if line.startswith(("Error", "Warning"))] == [
        "Error - Information Object Not found"
    ], "\n".join(lines)


@pytest.mark.peer("dciodvfy")
async def test_us_cine_sender_to_receiver_snapshot_is_ultrasound(tmp_path: Path) -> None:
    """End to end on 127.0.0.1: dicom:us-cine -> Sender -> Receiver -> snapshot on disk is
    a Secondary Capture with Modality US in the cine's study (dcentvfy with the cine)."""
    import asyncio

    from rtstream.receiver import ItemKind, Receiver, ReceiverConfig
    from rtstream.sender import Sender, load_sender_config
    from tests.peers import free_port

    port = free_port(count=4, step=2)
    cfg = load_sender_config(None, {
        "source": f"dicom:{US_CINE}", "frames": 20,
        "video": {"depth": 8},
        "network": {"dest": "127.0.0.1", "port": port},
    })  # fmt: skip
    store_dir = tmp_path / "store"
    async with Sender(cfg) as tx:
        assert tx.rtv_sop is RtvSop.PHOTOGRAPHIC
        sdp = tmp_path / "tx.sdp"
        sdp.write_text(tx.sdp_text())
        async with Receiver(ReceiverConfig(sdp=str(sdp), store_dir=store_dir)) as rx:
            run = asyncio.create_task(tx.run())
            try:
                async with asyncio.timeout(20):
                    async for item in rx:
                        if item.kind is ItemKind.VIDEO and item.metadata is not None:
                            break
                result = await rx.snapshot(item.rtp_timestamp)
            finally:
                await run
    assert result.ok
    (path,) = store_dir.rglob("*.dcm")
    ds = pydicom.dcmread(path)
    cine = pydicom.dcmread(US_CINE, stop_before_pixels=True)
    assert (ds.SOPClassUID, ds.Modality, ds.ConversionType) == (SecondaryCaptureImageStorage, "US", "DV")
    for keyword in STUDY_KEYWORDS:
        assert ds.get(keyword) == cine.get(keyword), keyword
    assert ds.SourceImageSequence[-1].ReferencedSOPInstanceUID == cine.SOPInstanceUID
    assert ds.TimezoneOffsetFromUTC
    assert not [line for line in dciodvfy(path) if line.startswith(("Error", "Warning"))]
    assert not [line for line in dcentvfy([path, US_CINE]) if "Error" in line]
