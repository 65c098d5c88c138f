"""Snapshot and clip builders: content, pixels, references and the no-overwrite writer."""

from __future__ import annotations

import datetime as _dt
import io
import uuid
from pathlib import Path

import av
import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.uid import (
    MPEG4HP41,
    SecondaryCaptureImageStorage,
    VideoEndoscopicImageStorage,
    VideoPhotographicImageStorage,
    VLEndoscopicImageStorage,
    VLPhotographicImageStorage,
    generate_uid,
)

from rtstream.dicom.context import StreamContext
from rtstream.dicom.realtime import BulkFlowRef, RtvSop, static_part
from rtstream.dicom.stored import build_clip, build_snapshot, save_new
from rtstream.errors import LocalProtocolError
from rtstream.proto.clock import PtpTimestamp
from rtstream.proto.formats import VideoFormat
from rtstream.proto.pixfmt import to_wire
from tests.vectors.rtv_vectors import VIDEO_FMT, VIDEO_FMT_8

ORIGIN = PtpTimestamp(1_700_000_037, 250_000_000)  # TAI; UTC is 37 s earlier


def bars_image(fmt: VideoFormat, shift: int = 0) -> np.ndarray:
    """Four flat colour bars (flat so that chroma subsampling is exact inside them)."""
    rgb = np.zeros((fmt.height, fmt.width, 3), np.uint8)
    bars = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (128, 128, 128)]
    w = fmt.width // 4
    for i, colour in enumerate(bars):
        rgb[:, i * w : (i + 1) * w] = colour
    return np.roll(rgb, shift, axis=1)


def make_static(sop: RtvSop, fmt: VideoFormat = VIDEO_FMT, **kw: object) -> pydicom.Dataset:
    bulk = BulkFlowRef(
        source_id=uuid.uuid4(), flow_id=uuid.uuid4(),
        transfer_syntax_uid=fmt.transfer_syntax_uid, sampling_rate=90000,
    )  # fmt: skip
    return static_part(
        sop, StreamContext(patient_name="Doe^Jane", patient_id="P-1"),
        sop_instance_uid=generate_uid(), bulk_flows=[bulk], video=fmt, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def snapshot(sop: RtvSop, fmt: VideoFormat = VIDEO_FMT, **kw: object) -> pydicom.Dataset:
    static = make_static(sop, fmt)
    wire = to_wire(bars_image(fmt), "rgb24", fmt)
    return build_snapshot(
        wire, fmt, static, rtv_sop_instance_uid=static.SOPInstanceUID, origin=ORIGIN,
        series_instance_uid="1.2.3.99", **kw,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("sop", "cls"),
    [
        (RtvSop.ENDOSCOPIC, VLEndoscopicImageStorage),
        (RtvSop.PHOTOGRAPHIC, VLPhotographicImageStorage),
    ],
)
@pytest.mark.parametrize("fmt", [VIDEO_FMT, VIDEO_FMT_8], ids=["10bit", "8bit"])
def test_snapshot_content(sop: RtvSop, cls: str, fmt: VideoFormat, tmp_path: Path) -> None:
    static = make_static(sop, fmt)
    wire = to_wire(bars_image(fmt), "rgb24", fmt)
    ds = build_snapshot(
        wire, fmt, static, rtv_sop_instance_uid=static.SOPInstanceUID, origin=ORIGIN,
        series_instance_uid="1.2.3.99", burned_in_annotation=True,
    )  # fmt: skip
    assert ds.SOPClassUID == cls and ds.file_meta.MediaStorageSOPClassUID == cls
    assert ds.SOPInstanceUID != static.SOPInstanceUID
    assert ds.StudyInstanceUID == static.StudyInstanceUID
    assert ds.SeriesInstanceUID == "1.2.3.99" and ds.Modality == static.Modality
    assert list(ds.ImageType) == ["DERIVED", "PRIMARY"]
    assert ds.BurnedInAnnotation == "YES"
    # the capture instant, written in the instance's Timezone Offset From UTC
    tz = ds.TimezoneOffsetFromUTC
    instant = _dt.datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=_dt.UTC)
    assert _dt.datetime.strptime(ds.AcquisitionDateTime, "%Y%m%d%H%M%S.%f%z") == instant
    assert ds.AcquisitionDateTime.endswith(tz)
    content = _dt.datetime.strptime(ds.ContentDate + ds.ContentTime + tz, "%Y%m%d%H%M%S.%f%z")
    assert content == instant
    (src,) = ds.SourceImageSequence
    assert (src.ReferencedSOPClassUID, src.ReferencedSOPInstanceUID) == (
        sop.value,
        static.SOPInstanceUID,
    )
    ref = ds.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == static.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == static.SOPInstanceUID
    assert ("10 to 8 bits" in ds.DerivationDescription) == (fmt.depth == 10)
    assert not any(tag.group == 0x0006 for tag in ds.keys())
    path = save_new(ds, tmp_path)
    back = pydicom.dcmread(path)
    assert back.PhotometricInterpretation == "RGB" and back.BitsAllocated == 8
    pixels = back.pixel_array
    assert pixels.shape == (fmt.height, fmt.width, 3)
    expected = bars_image(fmt).astype(int)
    w = fmt.width // 4
    inner = np.r_[2 : w - 2, w + 2 : 2 * w - 2, 2 * w + 2 : 3 * w - 2, 3 * w + 2 : 4 * w - 2]
    assert np.abs(pixels[:, inner].astype(int) - expected[:, inner]).max() <= 3
    assert ds.ICCProfile == static.ICCProfile


def test_snapshot_burned_in_default_and_secondary_capture_fallback() -> None:
    assert snapshot(RtvSop.ENDOSCOPIC).BurnedInAnnotation == "NO"
    static = make_static(RtvSop.ENDOSCOPIC)
    static.SOPClassUID = "1.2.840.10008.10.3"  # not a video class: fallback
    wire = to_wire(bars_image(VIDEO_FMT), "rgb24", VIDEO_FMT)
    ds = build_snapshot(
        wire, VIDEO_FMT, static, rtv_sop_instance_uid="1.2.3", origin=ORIGIN,
        series_instance_uid="1.2.4",
    )  # fmt: skip
    assert ds.SOPClassUID == SecondaryCaptureImageStorage and ds.ConversionType == "DV"


@pytest.mark.parametrize(
    ("sop", "cls"),
    [
        (RtvSop.ENDOSCOPIC, VideoEndoscopicImageStorage),
        (RtvSop.PHOTOGRAPHIC, VideoPhotographicImageStorage),
    ],
)
def test_clip_content(sop: RtvSop, cls: str, tmp_path: Path) -> None:
    static = make_static(sop)
    frames = [to_wire(bars_image(VIDEO_FMT, 2 * i), "rgb24", VIDEO_FMT) for i in range(12)]
    ds = build_clip(
        frames, VIDEO_FMT, static, rtv_sop_instance_uid=static.SOPInstanceUID, origin=ORIGIN,
        series_instance_uid="1.2.3.99",
    )  # fmt: skip
    assert ds.SOPClassUID == cls and ds.file_meta.TransferSyntaxUID == MPEG4HP41
    assert ds.NumberOfFrames == 12 and float(ds.FrameTime) == pytest.approx(1000 / 30)
    assert ds.CineRate == 30 and ds.FrameIncrementPointer == 0x00181063
    assert ds.PhotometricInterpretation == "YBR_PARTIAL_420"
    assert not any(tag.group == 0x0006 for tag in ds.keys())
    back = pydicom.dcmread(save_new(ds, tmp_path))
    (stream,) = list(generate_frames(back.PixelData, number_of_frames=1))
    container = av.open(io.BytesIO(stream))  # MP4, found by probing
    decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 12 and decoded[0].shape == (48, 64, 3)
    ctx = container.streams.video[0].codec_context
    assert ctx.profile == "High"
    assert np.abs(decoded[5].astype(int) - bars_image(VIDEO_FMT, 10)).mean() < 12


def test_clip_refuses_empty_and_non_video() -> None:
    static = make_static(RtvSop.ENDOSCOPIC)
    with pytest.raises(LocalProtocolError):
        build_clip([], VIDEO_FMT, static, rtv_sop_instance_uid="1.2", origin=ORIGIN,
                   series_instance_uid="1.3")  # fmt: skip
    static.SOPClassUID = "1.2.840.10008.10.3"
    with pytest.raises(LocalProtocolError):
        build_clip([np.zeros(VIDEO_FMT.frame_bytes, np.uint8)], VIDEO_FMT, static,
                   rtv_sop_instance_uid="1.2", origin=ORIGIN, series_instance_uid="1.3")  # fmt: skip


def test_save_new_never_overwrites(tmp_path: Path) -> None:
    ds = snapshot(RtvSop.ENDOSCOPIC)
    path = save_new(ds, tmp_path)
    before = path.read_bytes()
    assert before[128:132] == b"DICM"
    ds.PatientID = "CHANGED"
    with pytest.raises(FileExistsError):
        save_new(ds, tmp_path)
    assert path.read_bytes() == before
