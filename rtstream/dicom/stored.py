"""Stored DICOM instances made from a real-time stream: snapshots and clips.

Theory of operation
-------------------
PS3.22 leaves storage to the application; PS3.17 Annex PPPP.8.1 gives the principles
and spec/ps322.md §5 our mapping. A snapshot is one frame stored as the still-image
counterpart of the real-time IOD (VL Endoscopic Image from A.32.9, VL Photographic Image
from A.32.10, Secondary Capture otherwise); a clip is a run of frames stored as Video
Endoscopic / Video Photographic Image with H.264 High Profile pixel data (PyAV,
libx264, yuv420p), built with the Cine and Multi-frame modules from the stream's frame
rate.

Attributes valid for the whole stream are copied by keyword from the latest static part
(patient, study, equipment, synchronization, acquisition context, ICC profile); the
stored object gets a new SOP Instance UID, the caller's recording-session series, and a
reference to the RTV instance it came from (Source Image Sequence and the Common
Instance Reference module). Group 0006 is real-time only (PS3.3 C.7.6.27 note) and is
never copied.

Builders are pure: they return a Dataset with its file meta. :func:`save_new` writes
one to a directory without ever replacing an existing file (``O_EXCL``).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    VideoEndoscopicImageStorage,
    VideoPhotographicImageStorage,
    VLEndoscopicImageStorage,
    VLPhotographicImageStorage,
    generate_uid,
)

from rtstream.dicom.realtime import dicom_dt, tai_ns_to_datetime
from rtstream.dicom.video import encode_clip, wire_to_rgb
from rtstream.errors import LocalProtocolError
from rtstream.proto.clock import PtpTimestamp
from rtstream.proto.formats import VideoFormat
from rtstream.proto.rtv_metadata import (
    RTV_VIDEO_ENDOSCOPIC,
    RTV_VIDEO_PHOTOGRAPHIC,
)

logger = logging.getLogger(__name__)

ENTIRE_BODY = ("38266002", "SCT", "Entire body")
"""Default Anatomic Region (CID 4031) when the region is not known."""

SNAPSHOT_CLASS: dict[str, str] = {
    RTV_VIDEO_ENDOSCOPIC: VLEndoscopicImageStorage,
    RTV_VIDEO_PHOTOGRAPHIC: VLPhotographicImageStorage,
}
"""Still-image SOP class for each real-time video SOP class (spec/ps322.md §5)."""

CLIP_CLASS: dict[str, str] = {
    RTV_VIDEO_ENDOSCOPIC: VideoEndoscopicImageStorage,
    RTV_VIDEO_PHOTOGRAPHIC: VideoPhotographicImageStorage,
}
"""Video SOP class for each real-time video SOP class (spec/ps322.md §5)."""

# Attributes copied from the static part (by keyword): Patient, General Study, General
# Series (minus identity), General/Enhanced Equipment, Acquisition Context, ICC Profile,
# SOP Common character set. The Synchronization module is not part of the stored IODs.
_COPIED = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "SeriesDescription",
    "OperatorsName",
    "BodyPartExamined",
    "Manufacturer",
    "InstitutionName",
    "StationName",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "SoftwareVersions",
    "AcquisitionContextSequence",
    "ICCProfile",
    "ColorSpace",
)


def _copy_static(static: Dataset, ds: Dataset) -> None:
    for keyword in _COPIED:
        if keyword in static:
            ds[keyword] = static[keyword]
    if "Modality" in static:
        ds.Modality = static.Modality
    else:
        ds.Modality = "OT"
    if "StudyInstanceUID" not in ds:
        raise LocalProtocolError("static: no Study Instance UID to store the instance under")


def _reference_rtv(static: Dataset, ds: Dataset, rtv_sop_instance_uid: str) -> None:
    """Source Image Sequence + Common Instance Reference (PS3.3 C.7.6.1, C.12.2)."""
    rtv_class = str(static.get("SOPClassUID", ""))
    if not rtv_class:
        raise LocalProtocolError("static: no SOP Class UID of the real-time instance")
    src = Dataset()
    src.ReferencedSOPClassUID = rtv_class
    src.ReferencedSOPInstanceUID = rtv_sop_instance_uid
    ds.SourceImageSequence = [src]
    if "SeriesInstanceUID" in static:
        ref = Dataset()
        ref.ReferencedSOPClassUID = rtv_class
        ref.ReferencedSOPInstanceUID = rtv_sop_instance_uid
        series = Dataset()
        series.SeriesInstanceUID = static.SeriesInstanceUID
        series.ReferencedInstanceSequence = [ref]
        ds.ReferencedSeriesSequence = [series]


def _derivation(fmt: VideoFormat, target: str) -> str:
    text = (
        f"Frame(s) of a DICOM-RTV stream (SMPTE ST 2110-20 {fmt.sampling.value} "
        f"{fmt.depth}-bit, {fmt.width}x{fmt.height}) converted to {target}"
    )
    if fmt.depth > 8:
        text += f"; sample depth reduced from {fmt.depth} to 8 bits"
    return text[:1024]


def _new_dataset(sop_class: str, sop_instance_uid: str, transfer_syntax: str) -> Dataset:
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance_uid
    now = _dt.datetime.now(_dt.UTC)
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S.%f")
    return ds


def _strip_group_0006(ds: Dataset) -> None:
    for tag in [t for t in ds.keys() if t.group == 0x0006]:
        del ds[tag]


def _common(
    ds: Dataset,
    static: Dataset,
    *,
    origin: PtpTimestamp,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
    burned_in_annotation: bool | None,
    rtv_sop_instance_uid: str,
    anatomic_region: tuple[str, str, str],
) -> None:
    _copy_static(static, ds)
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    captured = tai_ns_to_datetime(origin.to_ns())
    ds.AcquisitionDateTime = dicom_dt(captured)
    ds.ContentDate = captured.strftime("%Y%m%d")
    ds.ContentTime = captured.strftime("%H%M%S.%f")
    ds.PatientOrientation = ""
    if static.get("Laterality"):  # paired body parts only; absent for the default region
        ds.Laterality = static.Laterality
    code, scheme, meaning = anatomic_region
    region = Dataset()
    region.CodeValue = code
    region.CodingSchemeDesignator = scheme
    region.CodeMeaning = meaning
    ds.AnatomicRegionSequence = [region]
    if burned_in_annotation is None:
        burned_in_annotation = static.get("BurnedInAnnotation", "NO") == "YES"
    ds.BurnedInAnnotation = "YES" if burned_in_annotation else "NO"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    _reference_rtv(static, ds, rtv_sop_instance_uid)


def build_snapshot(
    frame_wire: np.ndarray,
    fmt: VideoFormat,
    static: Dataset,
    *,
    rtv_sop_instance_uid: str,
    origin: PtpTimestamp,
    series_instance_uid: str,
    series_number: int = 1,
    instance_number: int = 1,
    burned_in_annotation: bool | None = None,
    sop_instance_uid: str | None = None,
    anatomic_region: tuple[str, str, str] = ENTIRE_BODY,
) -> Dataset:
    """One frame as a stored still image (RGB 8-bit, Explicit VR Little Endian).

    VL Endoscopic Image Storage for an RTV endoscopic stream, VL Photographic Image
    Storage for a photographic one, Secondary Capture Image Storage otherwise.

    Parameters
    ----------
    frame_wire : numpy.ndarray
        ``fmt.frame_bytes`` uint8 in ST 2110-20 pgroup order.
    fmt : VideoFormat
    static : pydicom.Dataset
        The latest static part of the stream's metadata flow.
    rtv_sop_instance_uid : str
        The real-time instance the frame came from (referenced, never reused).
    origin : PtpTimestamp
        The frame's Frame Origin Timestamp (Acquisition DateTime, Content Date/Time).
    series_instance_uid : str
        The recording session's series.
    burned_in_annotation : bool or None
        Whether the pixels carry burned-in text; None takes the static part's value.
    anatomic_region : (code value, coding scheme, meaning)
        Anatomic Region Sequence item (VL Image, C.8.12.1), SNOMED CT "Entire body" by
        default when the caller knows nothing better.
    """
    rtv_class = str(static.get("SOPClassUID", ""))
    sop_class = SNAPSHOT_CLASS.get(rtv_class, SecondaryCaptureImageStorage)
    uid = sop_instance_uid or generate_uid()
    ds = _new_dataset(sop_class, uid, ExplicitVRLittleEndian)
    _common(
        ds,
        static,
        origin=origin,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        instance_number=instance_number,
        burned_in_annotation=burned_in_annotation,
        rtv_sop_instance_uid=rtv_sop_instance_uid,
        anatomic_region=anatomic_region,
    )
    if sop_class == SecondaryCaptureImageStorage:
        ds.ConversionType = "DV"  # digitized video (PS3.3 C.8.6.1)
        if "AcquisitionContextSequence" in ds:  # not part of the SC Image IOD
            del ds.AcquisitionContextSequence
    rgb = wire_to_rgb(frame_wire, fmt)
    ds.DerivationDescription = _derivation(fmt, "RGB 8-bit")
    ds.LossyImageCompression = "00"
    _pixel_module(ds, fmt, "RGB")
    ds.PixelData = rgb.tobytes()
    _strip_group_0006(ds)
    return ds


def _pixel_module(ds: Dataset, fmt: VideoFormat, photometric: str) -> None:
    """Image Pixel (C.7.6.3) for 8-bit, 3-sample data."""
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = photometric
    ds.PlanarConfiguration = 0
    ds.Rows = fmt.height
    ds.Columns = fmt.width
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0


def _ds_number(value: float) -> str:
    """A DS string of at most 16 characters."""
    text = f"{value:.10g}"
    return text[:16]


def encode_h264(
    frames: Sequence[np.ndarray], fmt: VideoFormat, rate: Fraction, *, crf: int = 20
) -> bytes:
    """The clip's container bytes (MP4, H.264 or HEVC); see :func:`rtstream.dicom.video.encode_clip`.

    Kept for callers of the old name; the bytes are no longer a raw Annex B stream.
    """
    return encode_clip(frames, fmt, rate, crf=crf).data


def build_clip(
    frames: Sequence[np.ndarray],
    fmt: VideoFormat,
    static: Dataset,
    *,
    rtv_sop_instance_uid: str,
    origin: PtpTimestamp,
    series_instance_uid: str,
    series_number: int = 1,
    instance_number: int = 1,
    burned_in_annotation: bool | None = None,
    frame_rate: Fraction | None = None,
    sop_instance_uid: str | None = None,
    crf: int = 20,
    anatomic_region: tuple[str, str, str] = ENTIRE_BODY,
) -> Dataset:
    """A run of frames as Video Endoscopic / Video Photographic Image (H.264 or HEVC).

    Pixel data: :func:`rtstream.dicom.video.encode_clip` (H.264 High Level 4.1/4.2 or
    HEVC Main, 4:2:0 8-bit, in MP4, transfer syntax from geometry and rate, PS3.5
    §8.2.7/8.2.8/8.2.10), one fragment after an empty Basic Offset Table. Cine and
    Multi-frame modules from the stream's frame rate; Acquisition DateTime from the
    first frame's origin.

    Parameters
    ----------
    frames : sequence of numpy.ndarray
        Wire-order frames (each ``fmt.frame_bytes`` uint8), consecutive.
    origin : PtpTimestamp
        Frame Origin Timestamp of the first frame.
    frame_rate : Fraction or None
        Frames per second; ``fmt.exactframerate`` when None.

    Raises
    ------
    LocalProtocolError
        For an unknown real-time SOP class in ``static``, an empty clip, or a size and
        rate no DICOM video transfer syntax carries (the message names both).
    """
    rtv_class = str(static.get("SOPClassUID", ""))
    if rtv_class not in CLIP_CLASS:
        raise LocalProtocolError(
            f"static.SOPClassUID: {rtv_class!r} is not a real-time video class"
        )
    rate = frame_rate or fmt.exactframerate
    clip = encode_clip(frames, fmt, rate, crf=crf)
    ts = clip.transfer_syntax
    sop_class = CLIP_CLASS[rtv_class]
    uid = sop_instance_uid or generate_uid()
    ds = _new_dataset(sop_class, uid, ts)
    _common(
        ds,
        static,
        origin=origin,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        instance_number=instance_number,
        burned_in_annotation=burned_in_annotation,
        rtv_sop_instance_uid=rtv_sop_instance_uid,
        anatomic_region=anatomic_region,
    )
    n = len(frames)
    frame_ms = 1000.0 / float(rate)
    ds.DerivationDescription = _derivation(fmt, clip.syntax.description)
    # Cine (C.7.6.5) and Multi-frame (C.7.6.6)
    ds.NumberOfFrames = n
    ds.FrameIncrementPointer = Tag("FrameTime")
    ds.FrameTime = _ds_number(frame_ms)
    ds.CineRate = round(float(rate))
    ds.RecommendedDisplayFrameRate = round(float(rate))
    ds.StartTrim = 1
    ds.StopTrim = n
    ds.ActualFrameDuration = max(1, round(frame_ms))
    ds.PreferredPlaybackSequencing = 0
    ds.FrameDelay = "0"
    # Image Pixel for H.264 (PS3.5 §8.2.8): YBR_PARTIAL_420, 8-bit
    _pixel_module(ds, fmt, "YBR_PARTIAL_420")
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = clip.syntax.lossy_method
    raw_size = n * fmt.width * fmt.height * 3
    ds.LossyImageCompressionRatio = _ds_number(raw_size / max(1, len(clip.data)))
    ds.PixelData = clip.pixel_data()  # one fragment, empty Basic Offset Table (PS3.5 A.4)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    _strip_group_0006(ds)
    return ds


def save_new(ds: Dataset, directory: str | os.PathLike[str]) -> Path:
    """Write ``ds`` as ``<directory>/<SOPInstanceUID>.dcm``; never replace a file.

    The file is created with ``O_CREAT | O_EXCL``, written in the PS3.10 format and
    fsynced; a failed write removes the partial file.

    Raises
    ------
    FileExistsError
        When the file already exists (nothing is written).
    """
    path = Path(directory) / f"{ds.SOPInstanceUID}.dcm"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as fp:
            ds.save_as(fp, enforce_file_format=True)
            fp.flush()
            os.fsync(fp.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
