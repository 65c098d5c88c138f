"""Stored DICOM instances made from a real-time stream: snapshots and clips.

Theory of operation
-------------------
PS3.22 leaves storage to the application; PS3.17 Annex PPPP.8.1 gives the principles
and spec/ps322.md §5 our mapping. The stored object says what was *imaged*, which the
real-time IOD cannot (PS3.22's real-time video IODs exist only as Endoscopic, Modality
ES, and Photographic, XC): the imaged modality comes from the static part's Acquisition
Context item (121139, DCM, "Modality") (:func:`rtstream.dicom.realtime.imaged_modality`),
else its Modality. By that modality (:func:`stored_classes`):

- ES: VL Endoscopic Image (A.32.1) / Video Endoscopic Image (A.32.5);
- XC: VL Photographic Image (A.32.4) / Video Photographic Image (A.32.7);
- anything else (US, OPT, OP, ...): Secondary Capture Image (A.8.1, Conversion Type DV
  "digitized video", the imaged Modality kept in the SC Equipment module) for stills,
  Multi-frame True Color Secondary Capture (A.8.5.4) for clips. The modalities' own IODs
  (US Image, Ophthalmic Tomography, ...) need type 1 acquisition attributes (ultrasound
  regions, OCT geometry) that a video frame cannot supply truthfully.

Attributes valid for the whole stream are copied by keyword from the latest static part
(patient, study unchanged, equipment, acquisition context, ICC profile); the stored
object gets a new SOP Instance UID, the caller's series and numbers, a Series
Description of its kind, Timezone Offset From UTC with every date and time in that one
offset (C.12.1.1.8), the lossy history carried on (C.7.6.1.1.5), its provenance (Source
Image Sequence with Purpose of Reference, CID 7202, naming the RTV instance and the
replayed source instance; Derivation Code Sequence, CID 7203; Common Instance
Reference; Contributing Equipment naming rtstream) and the file meta of rtstream's own
implementation (PS3.7 D.3.3.2). Group 0006 is real-time only (PS3.3 C.7.6.27 note) and
is never copied.

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
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
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
    PAIRED_REGIONS,
    RTSTREAM_VERSION,
    anatomic_region_for,
    new_uid,
)
from rtstream.dicom.realtime import (
    SOURCE_IMAGE_PURPOSE,
    civil_zone,
    code_item,
    dicom_dt,
    format_offset,
    imaged_modality,
    tai_ns_to_datetime,
)
from rtstream.dicom.video import encode_clip, wire_to_rgb
from rtstream.errors import LocalProtocolError
from rtstream.proto.clock import PtpTimestamp
from rtstream.proto.formats import VideoFormat
from rtstream.proto.pixfmt import wire_to_dicom
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

SNAPSHOT_SERIES_DESCRIPTION = "rtstream snapshots"
CLIP_SERIES_DESCRIPTION = "rtstream clips"

UNCOMPRESSED_PREDECESSOR = ("121320", "DCM", "Uncompressed predecessor")
"""CID 7202 Purpose of Reference of the RTV frames a clip compressed."""

LOSSY_COMPRESSION = ("113040", "DCM", "Lossy Compression")
"""CID 7203 Image Derivation of an H.264 clip."""

PROCESSING_EQUIPMENT = ("109102", "DCM", "Processing Equipment")
"""Purpose of Reference (CID 7005) of rtstream in Contributing Equipment Sequence."""


def stored_classes(static: Dataset) -> tuple[str, str, str]:
    """(imaged modality, still SOP class, clip SOP class) for a static part.

    ES -> VL Endoscopic / Video Endoscopic; XC -> VL Photographic / Video Photographic;
    any other imaged modality -> Secondary Capture / Multi-frame True Color Secondary
    Capture (PS3.3 A.8.1, A.8.5.4: Conversion Type DV, the source Modality kept; the SC
    Multi-frame modules take H.264's YBR_PARTIAL_420, PS3.5 §8.2.8). A static part that
    is not of a real-time video class gives Secondary Capture and no clip class.
    """
    rtv_class = str(static.get("SOPClassUID", ""))
    modality = imaged_modality(static) or "OT"
    if rtv_class not in SNAPSHOT_CLASS:
        return modality, SecondaryCaptureImageStorage, ""
    if modality == "ES":
        return modality, VLEndoscopicImageStorage, VideoEndoscopicImageStorage
    if modality == "XC":
        return modality, VLPhotographicImageStorage, VideoPhotographicImageStorage
    return (
        modality,
        SecondaryCaptureImageStorage,
        MultiFrameTrueColorSecondaryCaptureImageStorage,
    )

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
    "IssuerOfPatientID",
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


def _copy_static(static: Dataset, ds: Dataset, modality: str) -> None:
    """Patient and study unchanged (the study's attributes are the source study's when
    the static part reuses its UID), equipment, context; the imaged ``modality``."""
    for keyword in _COPIED:
        if keyword in static:
            ds[keyword] = static[keyword]
    if ds.get("DeviceSerialNumber") == "UNKNOWN":  # a placeholder of the real-time part
        del ds.DeviceSerialNumber
    ds.Modality = modality
    if "StudyInstanceUID" not in ds:
        raise LocalProtocolError("static: no Study Instance UID to store the instance under")


def _reference_rtv(
    static: Dataset, ds: Dataset, rtv_sop_instance_uid: str, purpose: tuple[str, str, str]
) -> None:
    """Source Image Sequence with Purpose of Reference (C.7.6.1, CID 7202) naming the RTV
    instance and the instance it replayed (the static part's own Source Image Sequence),
    and the Common Instance Reference module (C.12.2) for every one of them."""
    rtv_class = str(static.get("SOPClassUID", ""))
    if not rtv_class:
        raise LocalProtocolError("static: no SOP Class UID of the real-time instance")
    src = Dataset()
    src.ReferencedSOPClassUID = rtv_class
    src.ReferencedSOPInstanceUID = rtv_sop_instance_uid
    src.PurposeOfReferenceCodeSequence = [code_item(*purpose)]
    sources = [src]
    for item in static.get("SourceImageSequence", []):
        copy = Dataset()
        copy.ReferencedSOPClassUID = item.ReferencedSOPClassUID
        copy.ReferencedSOPInstanceUID = item.ReferencedSOPInstanceUID
        copy.PurposeOfReferenceCodeSequence = [code_item(*SOURCE_IMAGE_PURPOSE)]
        sources.append(copy)
    ds.SourceImageSequence = sources
    series_items: list[Dataset] = []
    if "SeriesInstanceUID" in static:
        ref = Dataset()
        ref.ReferencedSOPClassUID = rtv_class
        ref.ReferencedSOPInstanceUID = rtv_sop_instance_uid
        series = Dataset()
        series.SeriesInstanceUID = static.SeriesInstanceUID
        series.ReferencedInstanceSequence = [ref]
        series_items.append(series)
    series_items += list(static.get("ReferencedSeriesSequence", []))
    if series_items:
        ds.ReferencedSeriesSequence = series_items
    if "StudiesContainingOtherReferencedInstancesSequence" in static:
        ds.StudiesContainingOtherReferencedInstancesSequence = (
            static.StudiesContainingOtherReferencedInstancesSequence
        )


def _contributing_equipment(ds: Dataset, when: _dt.datetime, description: str) -> None:
    """Contributing Equipment Sequence (SOP Common, C.12.1): rtstream as processing
    equipment, appended to what the source listed."""
    item = Dataset()
    item.Manufacturer = "rtstream"
    item.ManufacturerModelName = "rtstream"
    item.SoftwareVersions = RTSTREAM_VERSION
    item.PurposeOfReferenceCodeSequence = [code_item(*PROCESSING_EQUIPMENT)]
    item.ContributionDateTime = dicom_dt(when)
    item.ContributionDescription = description[:1024]
    ds.ContributingEquipmentSequence = [*ds.get("ContributingEquipmentSequence", []), item]


def _lossy_history(static: Dataset, ds: Dataset, added: tuple[str, str] | None) -> None:
    """Lossy Image Compression (C.7.6.1.1.5): once ``01``, always ``01``; ``added`` is
    (method, ratio) of a compression this object applies, appended to the history."""
    lossy = static.get("LossyImageCompression") == "01" or added is not None
    ds.LossyImageCompression = "01" if lossy else "00"
    if not lossy:
        return
    methods = [str(m) for m in _values(static.get("LossyImageCompressionMethod"))]
    ratios = [str(r) for r in _values(static.get("LossyImageCompressionRatio"))]
    known = len(ratios) == len(methods)
    if added is not None:
        methods.append(added[0])
        ratios.append(added[1])
    if methods:
        ds.LossyImageCompressionMethod = methods
    if ratios and known:
        ds.LossyImageCompressionRatio = ratios


def _values(value: object) -> list[object]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return list(value)
    return [value]


def _anatomic_region(static: Dataset) -> tuple[str, str, str]:
    """The static part's Anatomic Region, else its Body Part Examined's CID 4031 code,
    else "Entire body"."""
    for item in static.get("AnatomicRegionSequence", []):
        return str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.CodeMeaning)
    found = anatomic_region_for(str(static.get("BodyPartExamined", "")))
    return found or ENTIRE_BODY


def _derivation(fmt: VideoFormat, target: str) -> str:
    text = (
        f"Frame(s) of a DICOM-RTV stream (SMPTE ST 2110-20 {fmt.sampling.value} "
        f"{fmt.depth}-bit, {fmt.width}x{fmt.height}) converted to {target}"
    )
    if fmt.depth > 8:
        text += f"; sample depth reduced from {fmt.depth} to 8 bits"
    return text[:1024]


def _new_dataset(sop_class: str, sop_instance_uid: str, transfer_syntax: str) -> Dataset:
    """Dataset + file meta naming rtstream's implementation (PS3.10 §7.1, PS3.7 D.3.3.2)."""
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance_uid
    return ds


def _strip_group_0006(ds: Dataset) -> None:
    for tag in [t for t in ds.keys() if t.group == 0x0006]:
        del ds[tag]



def _stamp_times(ds: Dataset, static: Dataset,
                 origin: PtpTimestamp) -> tuple[_dt.datetime, _dt.datetime]:
    """Instance creation date/time and Timezone Offset From UTC of a stored instance, all
    in one offset (PS3.3 C.12.1.1.8): the stream's (its static part's) when it says one,
    else this machine's at the capture instant. Returns the capture and creation instants
    in that offset."""
    captured_utc = tai_ns_to_datetime(origin.to_ns())
    zone = civil_zone(captured_utc, str(static.get("TimezoneOffsetFromUTC", "")))
    captured = captured_utc.astimezone(zone)
    created = _dt.datetime.now(_dt.UTC).astimezone(zone)
    ds.InstanceCreationDate = created.strftime("%Y%m%d")
    ds.InstanceCreationTime = created.strftime("%H%M%S.%f")
    ds.TimezoneOffsetFromUTC = format_offset(captured)
    return captured, created

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
    anatomic_region: tuple[str, str, str] | None,
    modality: str,
    series_description: str,
    purpose: tuple[str, str, str],
    description: str,
) -> None:
    _copy_static(static, ds, modality)
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    if series_description:
        ds.SeriesDescription = series_description
    captured, created = _stamp_times(ds, static, origin)
    ds.AcquisitionDateTime = dicom_dt(captured)
    ds.ContentDate = captured.strftime("%Y%m%d")
    ds.ContentTime = captured.strftime("%H%M%S.%f")
    ds.PatientOrientation = ""
    region = anatomic_region or _anatomic_region(static)
    ds.AnatomicRegionSequence = [code_item(*region)]
    if static.get("Laterality"):
        ds.Laterality = static.Laterality
    elif region[2] in PAIRED_REGIONS:  # type 2C for a paired structure (C.7.3.1)
        ds.Laterality = ""
    if burned_in_annotation is None:
        burned_in_annotation = static.get("BurnedInAnnotation", "NO") == "YES"
    ds.BurnedInAnnotation = "YES" if burned_in_annotation else "NO"
    # Value 2 stays the source's: a replayed DERIVED\SECONDARY cine stays SECONDARY.
    source_type = list(static.get("ImageType", []))
    ds.ImageType = ["DERIVED", "SECONDARY" if source_type[1:2] == ["SECONDARY"] else "PRIMARY"]
    _reference_rtv(static, ds, rtv_sop_instance_uid, purpose)
    _contributing_equipment(ds, created, description)


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
    anatomic_region: tuple[str, str, str] | None = None,
    series_description: str = SNAPSHOT_SERIES_DESCRIPTION,
    uid_root: str = "",
) -> Dataset:
    """One frame as a stored still image (Explicit VR Little Endian).

    VL Endoscopic / VL Photographic snapshots are RGB 8-bit (their VL Image module fixes
    8 bits); Secondary Capture snapshots keep the streamed samples at full depth
    (:func:`_native_pixels`). An interlaced frame is stored whole, both fields woven as
    the depacketizer delivers it.

    The SOP class follows the imaged modality (:func:`stored_classes`): VL Endoscopic
    Image for ES, VL Photographic Image for XC, Secondary Capture Image (Conversion Type
    DV, the imaged Modality) for any other modality or a non-video static part.

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
    anatomic_region : (code value, coding scheme, meaning) or None
        Anatomic Region Sequence item (C.8.12.1); None: the static part's region, else
        its Body Part Examined's CID 4031 code, else SNOMED CT "Entire body".
    series_description : str
        Series Description of the stored series.
    uid_root : str
        Root of the new SOP Instance UID (empty: ``2.25``, PS3.5 §B.2).
    """
    modality, sop_class, _ = stored_classes(static)
    uid = sop_instance_uid or new_uid(uid_root)
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
        modality=modality,
        series_description=series_description,
        purpose=SOURCE_IMAGE_PURPOSE,
        description="frame taken from a DICOM-RTV stream as a still image",
    )
    _lossy_history(static, ds, None)
    if sop_class == SecondaryCaptureImageStorage:
        _secondary_capture(ds)
        _native_pixels(ds, frame_wire, fmt)
    else:
        rgb = wire_to_rgb(frame_wire, fmt)
        ds.DerivationDescription = _derivation(fmt, "RGB 8-bit")
        _pixel_module(ds, fmt, "RGB")
        ds.PixelData = rgb.tobytes()
    _strip_group_0006(ds)
    return ds


def _native_pixels(ds: Dataset, frame_wire: np.ndarray, fmt: VideoFormat) -> None:
    """The wire samples themselves, at their full depth, as native Pixel Data.

    Bits Allocated/Stored/High Bit per PS3.5 §8.2.13 / A.8 (8 in 8; 10, 12, 16 in 16),
    RGB as RGB and YCbCr as YBR_FULL (PS3.3 C.7.6.3.1.2; subsampled chroma repeated over
    its pixels, the one native form dicom3tools accepts for Secondary Capture); nothing
    is converted, so the stored samples are the streamed ones
    (:func:`rtstream.proto.pixfmt.wire_to_dicom`). The VL IODs cannot take this: their
    VL Image module (C.8.12.1) fixes 8 bits, so their snapshots are RGB 8-bit.
    """
    pixels, attrs = wire_to_dicom(
        np.ascontiguousarray(frame_wire).reshape(-1), fmt, full_chroma=True
    )
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.DerivationDescription = (
        f"Frame(s) of a DICOM-RTV stream (SMPTE ST 2110-20 {fmt.sampling.value} "
        f"{fmt.depth}-bit, {fmt.width}x{fmt.height}) stored as "
        f"{attrs['PhotometricInterpretation']} {fmt.depth}-bit samples, unconverted"
    )[:1024]
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB" if fmt.depth == 8 else "OW"


def _secondary_capture(ds: Dataset) -> None:
    """SC Equipment (C.8.6.1): Conversion Type DV (digitized video), the imaged Modality
    kept; drop what the SC IODs do not include (Acquisition Context, VL-only Anatomic
    Region stays as General Image's)."""
    ds.ConversionType = "DV"
    if "AcquisitionContextSequence" in ds:  # not part of the SC IODs
        del ds.AcquisitionContextSequence


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
    anatomic_region: tuple[str, str, str] | None = None,
    series_description: str = CLIP_SERIES_DESCRIPTION,
    uid_root: str = "",
) -> Dataset:
    """A run of frames as Video Endoscopic / Video Photographic Image (H.264 or HEVC in
    MP4, :mod:`rtstream.dicom.video`), or as Multi-frame True Color Secondary Capture for
    another imaged modality (:func:`stored_classes`).

    A clip is lossy: Lossy Image Compression 01, the source's methods followed by the
    clip's (ISO_14496_10 or ISO_23008_2), Derivation Code (113040, DCM, "Lossy
    Compression") (CID 7203), the RTV instance referenced as (121320, DCM, "Uncompressed
    predecessor") (CID 7202).

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
    modality, _, sop_class = stored_classes(static)
    uid = sop_instance_uid or new_uid(uid_root)
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
        modality=modality,
        series_description=series_description,
        purpose=UNCOMPRESSED_PREDECESSOR,
        description="frames of a DICOM-RTV stream compressed to H.264",
    )
    if sop_class == MultiFrameTrueColorSecondaryCaptureImageStorage:
        _secondary_capture(ds)
    ds.DerivationCodeSequence = [code_item(*LOSSY_COMPRESSION)]
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
    raw_size = n * fmt.width * fmt.height * 3
    _lossy_history(static, ds, (clip.syntax.lossy_method,
                                _ds_number(raw_size / max(1, len(clip.data)))))
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
