"""The real-time IODs of PS3.22: static parts, grain scheduling and receiver tracking.

Theory of operation
-------------------
A metadata flow carries one SOP instance of a real-time IOD (PS3.3 A.32.9 Real-Time
Video Endoscopic Image, A.32.10 Real-Time Video Photographic Image, A.34.11 Real-Time
Audio Waveform). Its *static part* -- every module but Current Frame Functional Groups --
is built once by :func:`static_part` and encoded once; its *dynamic part* changes per
frame (:func:`rtstream.proto.rtv_metadata.dynamic_part`).

:class:`GrainBuilder` makes the grain of each frame. It puts the static part in the
first grain and again whenever ``static_interval_ns`` has passed since it last did, so
the PS3.22 §6.2.2 rule "at least once per second" holds with margin (0.5 s by default).
Time is passed in as ``now``; nothing here reads a clock unless the caller leaves the
creation time out of :func:`static_part`.

On the receiving side :class:`StaticTracker` keeps the latest static part per metadata
flow: a flow is usable only after one has been seen (PS3.22 §6.2.2 note).
"""

from __future__ import annotations

import datetime as _dt
import enum
import functools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from rtstream.dicom.context import IMAGED_MODALITIES, PAIRED_REGIONS, StreamContext, new_uid
from rtstream.errors import ConfigError, LocalProtocolError
from rtstream.proto.clock import NS_PER_S, TAI_UTC_OFFSET_S, PtpTimestamp, tai_to_utc_ns
from rtstream.proto.formats import PHOTOMETRIC, AudioFormat, VideoFormat, sample_bits
from rtstream.proto.rtv_metadata import (
    RTV_AUDIO_WAVEFORM,
    RTV_MODALITY,
    RTV_RENDITION_SELECTION,
    RTV_VIDEO_ENDOSCOPIC,
    RTV_VIDEO_PHOTOGRAPHIC,
    Grain,
    RtvMetaInfo,
    encode_dataset,
    encode_dynamic_part,
    split_static,
)

logger = logging.getLogger(__name__)

UTC_SYNCHRONIZATION_UID = "1.2.840.10008.15.1.1"
"""Well-known Synchronization Frame of Reference UID "Universal Coordinated Time"
(PS3.6 Annex A), used when the device clock is PTP-locked."""


class RtvSop(enum.Enum):
    """Real-time SOP classes of PS3.22 Table 7.2-1 that have a static/dynamic split."""

    ENDOSCOPIC = RTV_VIDEO_ENDOSCOPIC
    PHOTOGRAPHIC = RTV_VIDEO_PHOTOGRAPHIC
    AUDIO = RTV_AUDIO_WAVEFORM

    @property
    def modality(self) -> str:
        """Modality required by the IOD: ES, XC or AU."""
        return RTV_MODALITY[self.value]

    @property
    def is_video(self) -> bool:
        """True for the two video IODs."""
        return self is not RtvSop.AUDIO


@dataclass(frozen=True, kw_only=True)
class BulkFlowRef:
    """One bulk (video or audio) flow as listed in the Real-Time Bulk Data Flow Sequence.

    Parameters
    ----------
    source_id, flow_id : uuid.UUID
        The *bulk* flow's NMOS source and flow identifiers (PS3.3 C.7.6.26).
    transfer_syntax_uid : str
        e.g. 1.2.840.10008.1.2.7.1 (ST 2110-20 progressive).
    sampling_rate : int
        The bulk flow's RTP clock from its SDP (90000 for video).
    """

    source_id: uuid.UUID
    flow_id: uuid.UUID
    transfer_syntax_uid: str
    sampling_rate: int

    def __post_init__(self) -> None:
        if not 0 < self.sampling_rate <= 0xFFFFFFFF:
            raise ConfigError("bulk.sampling_rate", self.sampling_rate, "1..2**32-1 Hz")


@functools.lru_cache(maxsize=1)
def srgb_icc_profile() -> bytes:
    """An sRGB ICC profile (LittleCMS's built-in sRGB, via Pillow's ImageCms)."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    data: bytes = profile.tobytes()
    return data


def photometric_for(fmt: VideoFormat) -> tuple[str, int, int]:
    """Photometric Interpretation, Bits Allocated and Bits Stored for a flow format.

    PS3.5 §8.2.13 (spec/ps322.md §3.3), from the one table in :mod:`rtstream.proto.formats`.
    """
    allocated, stored, _ = sample_bits(fmt.depth)
    return PHOTOMETRIC[fmt.sampling], allocated, stored


def tai_ns_to_datetime(tai_ns: int) -> _dt.datetime:
    """A UTC :class:`datetime.datetime` for a TAI instant (TAI - UTC = 37 s).

    The one TAI -> civil conversion of stored instances and the viewer: it removes the
    leap seconds :class:`rtstream.sysclock.SystemClock` put in (``TAI_UTC_OFFSET_S``, IERS
    Bulletin C). :func:`rtstream.proto.rtv_metadata.tai_to_dicom_datetime` (grains) uses
    the same constant and gives the same DT value.
    """
    utc_ns = tai_to_utc_ns(tai_ns)
    secs, ns = divmod(utc_ns, NS_PER_S)
    try:
        return _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC) + _dt.timedelta(
            seconds=secs, microseconds=ns // 1000
        )
    except OverflowError:
        raise LocalProtocolError(f"time: {tai_ns} ns TAI is outside years 1..9999") from None


def dicom_dt(moment: _dt.datetime) -> str:
    """DT value with microseconds and the moment's own UTC offset (``+0000`` for UTC)."""
    return moment.strftime("%Y%m%d%H%M%S.%f") + format_offset(moment)


def format_offset(moment: _dt.datetime) -> str:
    """``+HHMM``/``-HHMM`` of an aware datetime (PS3.3 C.12.1.1.8)."""
    delta = moment.utcoffset() or _dt.timedelta(0)
    minutes = int(delta.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def parse_offset(text: str) -> _dt.timezone | None:
    """The fixed zone of a Timezone Offset From UTC value, None if it is not one."""
    text = str(text).strip()
    if len(text) != 5 or text[0] not in "+-" or not text[1:].isdigit():
        return None
    minutes = int(text[1:3]) * 60 + int(text[3:])
    return _dt.timezone(_dt.timedelta(minutes=-minutes if text[0] == "-" else minutes))


def civil_zone(moment: _dt.datetime, offset: str = "") -> _dt.timezone:
    """The one fixed offset an instance writes its dates and times in (C.12.1.1.8).

    ``offset`` when given (e.g. a source study's, or the static part's), else this
    machine's local offset at ``moment`` (``TZ``; UTC where none is set). One offset per
    instance, so Instance Creation, Content, Acquisition and Study times agree even
    across a daylight-saving change.
    """
    zone = parse_offset(offset) if offset else None
    if zone is not None:
        return zone
    local = moment.astimezone()
    return _dt.timezone(local.utcoffset() or _dt.timedelta(0))


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """A Code Sequence item (PS3.3 Table 8.8-1)."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


MODALITY_CONCEPT = ("121139", "DCM", "Modality")
"""Concept name of the Acquisition Context item that carries the imaged modality."""


def modality_context_item(modality: str) -> Dataset:
    """Acquisition Context item (C.7.6.14, Content Item macro) naming the imaged
    modality: (121139, DCM, "Modality") = (<term>, DCM, <CID 29 meaning>)."""
    item = Dataset()
    item.ValueType = "CODE"
    item.ConceptNameCodeSequence = [code_item(*MODALITY_CONCEPT)]
    item.ConceptCodeSequence = [code_item(modality, "DCM", IMAGED_MODALITIES[modality])]
    return item


def imaged_modality(static: Dataset) -> str:
    """The imaged modality a static part says: its Acquisition Context Modality item,
    else its own Modality (ES or XC for the real-time IODs)."""
    for item in static.get("AcquisitionContextSequence", []):
        names = item.get("ConceptNameCodeSequence", [])
        codes = item.get("ConceptCodeSequence", [])
        if (
            names
            and codes
            and names[0].get("CodeValue") == MODALITY_CONCEPT[0]
            and names[0].get("CodingSchemeDesignator") == MODALITY_CONCEPT[1]
        ):
            return str(codes[0].CodeValue)
    return str(static.get("Modality", ""))


def _bulk_flow_sequence(bulk_flows: Sequence[BulkFlowRef]) -> list[Dataset]:
    """PS3.3 C.7.6.26: one item per bulk source, its flows nested."""
    by_source: OrderedDict[uuid.UUID, list[BulkFlowRef]] = OrderedDict()
    for ref in bulk_flows:
        by_source.setdefault(ref.source_id, []).append(ref)
    items = []
    for source, refs in by_source.items():
        item = Dataset()
        item.SourceIdentifier = source.bytes
        flows = []
        for ref in refs:
            f = Dataset()
            f.FlowIdentifier = ref.flow_id.bytes
            f.FlowTransferSyntaxUID = ref.transfer_syntax_uid
            f.FlowRTPSamplingRate = ref.sampling_rate
            flows.append(f)
        item.FlowIdentifierSequence = flows
        items.append(item)
    return items


def _patient_and_study(ds: Dataset, ctx: StreamContext, date: str, tm: str) -> None:
    """Patient (PS3.3 C.7.1.1) and General Study (C.7.2.1) of the stream's context: a
    source study's values unchanged, else this session's (``date``/``tm``, the creation
    instant)."""
    ds.PatientName = ctx.patient_name
    ds.PatientID = ctx.patient_id
    if ctx.issuer_of_patient_id:
        ds.IssuerOfPatientID = ctx.issuer_of_patient_id
    ds.PatientBirthDate = ctx.birth_date
    ds.PatientSex = ctx.sex
    ds.StudyInstanceUID = ctx.study_uid
    ds.StudyDate = ctx.study_date or date
    ds.StudyTime = ctx.study_time if ctx.study_date else tm
    ds.ReferringPhysicianName = ctx.referring_physician
    ds.StudyID = ctx.study_id
    ds.AccessionNumber = ctx.accession_number
    if ctx.study_description:
        ds.StudyDescription = ctx.study_description


def static_part(
    sop: RtvSop,
    ctx: StreamContext,
    *,
    sop_instance_uid: str,
    bulk_flows: Sequence[BulkFlowRef],
    video: VideoFormat | None = None,
    audio: AudioFormat | None = None,
    series_instance_uid: str | None = None,
    series_number: int = 1,
    instance_number: int = 1,
    created_ns: int | None = None,
    acquisition_ns: int | None = None,
    ptp_synchronized: bool = False,
    synchronization_uid: str | None = None,
    time_source: str = "",
    burned_in_annotation: bool | None = None,
    stereo_pairs: bool = False,
    icc_profile: bytes | None = None,
) -> Dataset:
    """Build the static part of a real-time IOD (every module but the dynamic one).

    Modules per spec/ps322.md §2.5 (PS3.3 A.32.9, A.32.10, A.34.11): Patient, General
    Study, General Series, General Equipment, Enhanced General Equipment,
    Synchronization (Time Distribution Protocol PTP), Acquisition Context, Real-Time
    Bulk Data Flow, SOP Common; for video also General Acquisition, General Image,
    VL Image, ICC Profile, Common Instance Reference (nothing referenced, so empty) and
    Real-Time Acquisition; for audio Waveform Identification.

    Parameters
    ----------
    sop : RtvSop
    ctx : StreamContext
    sop_instance_uid : str
        The RTV SOP instance (one per RTP session).
    bulk_flows : sequence of BulkFlowRef
        At least the flow this metadata describes.
    video : VideoFormat or None
        Required for the video IODs (VL Image pixel description).
    audio : AudioFormat or None
        Accepted for the audio IOD (not needed by its static modules).
    created_ns : int or None
        TAI nanoseconds of instance creation (Content Date/Time); now when None.
    acquisition_ns : int or None
        TAI nanoseconds of the acquisition start; ``created_ns`` when None.
    ptp_synchronized : bool
        True when the media clock is locked to a PTP grandmaster: Acquisition Time
        Synchronized Y and the UTC Synchronization Frame of Reference.
    synchronization_uid : str or None
        Synchronization Frame of Reference UID of a free-running clock (generated
        when None and not PTP-synchronized).
    burned_in_annotation : bool or None
        None: ``ctx.burned_in_annotation`` (NO when that is empty).

    What the real-time IODs cannot say in their own attributes travels in modules they
    include (README "Conformance"): the imaged modality as an Acquisition Context item
    (C.7.6.14) (121139, DCM, "Modality"); a replayed cine as General Image Source Image
    Sequence (C.7.6.1) plus Common Instance Reference (C.12.2); the source's lossy
    history in Lossy Image Compression (C.7.6.1.1.5); dates and times in one offset,
    written as Timezone Offset From UTC (C.12.1.1.8).

    Raises
    ------
    ConfigError
        When ``bulk_flows`` is empty or ``video`` is missing for a video IOD.
    """
    if not bulk_flows:
        raise ConfigError("bulk_flows", list(bulk_flows), "at least one bulk flow (C.7.6.26)")
    if sop.is_video and video is None:
        raise ConfigError("video", None, "a VideoFormat for a real-time video IOD")
    if created_ns is None:
        created_ns = time.time_ns() + TAI_UTC_OFFSET_S * NS_PER_S
    created_utc = tai_ns_to_datetime(created_ns)
    zone = civil_zone(created_utc, ctx.timezone_offset)
    created = created_utc.astimezone(zone)
    acquired = tai_ns_to_datetime(
        created_ns if acquisition_ns is None else acquisition_ns
    ).astimezone(zone)
    date, tm = created.strftime("%Y%m%d"), created.strftime("%H%M%S.%f")

    ds = Dataset()
    # SOP Common (C.12.1)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = tm
    ds.SOPClassUID = sop.value
    ds.SOPInstanceUID = sop_instance_uid
    ds.TimezoneOffsetFromUTC = format_offset(created)
    _patient_and_study(ds, ctx, date, tm)
    # General Series (C.7.3.1)
    ds.Modality = sop.modality
    ds.SeriesInstanceUID = series_instance_uid or new_uid(ctx.uid_root)
    ds.SeriesNumber = series_number
    if ctx.series_description:
        ds.SeriesDescription = ctx.series_description
    if ctx.operator_name:
        ds.OperatorsName = ctx.operator_name
    if ctx.body_part:
        ds.BodyPartExamined = ctx.body_part
    region = ctx.anatomic_region_code
    if ctx.laterality:
        ds.Laterality = ctx.laterality
    elif region is not None and region[2] in PAIRED_REGIONS:
        ds.Laterality = ""  # type 2C for a paired structure; the side is not known
    # General Equipment (C.7.5.1) + Enhanced General Equipment (C.7.5.2)
    ds.Manufacturer = ctx.manufacturer or "UNKNOWN"
    ds.ManufacturerModelName = ctx.model_name or "UNKNOWN"
    ds.DeviceSerialNumber = ctx.device_serial or "UNKNOWN"
    ds.SoftwareVersions = ctx.software_versions or "UNKNOWN"
    if ctx.institution:
        ds.InstitutionName = ctx.institution
    if ctx.station_name:
        ds.StationName = ctx.station_name
    # Synchronization (C.7.4.2); Time Distribution Protocol PTP (A.32.9.3.5)
    if ptp_synchronized:
        ds.SynchronizationFrameOfReferenceUID = UTC_SYNCHRONIZATION_UID
    else:
        ds.SynchronizationFrameOfReferenceUID = synchronization_uid or new_uid(ctx.uid_root)
    ds.SynchronizationTrigger = "NO TRIGGER"
    ds.AcquisitionTimeSynchronized = "Y" if ptp_synchronized else "N"
    if time_source:
        ds.TimeSource = time_source
    ds.TimeDistributionProtocol = "PTP"
    # Acquisition Context (C.7.6.14): the imaged modality when known (README Conformance)
    ds.AcquisitionContextSequence = (
        [modality_context_item(ctx.modality)] if ctx.modality else []
    )
    # Real-Time Bulk Data Flow (C.7.6.26)
    ds.RealTimeBulkDataFlowSequence = _bulk_flow_sequence(bulk_flows)
    if sop.is_video:
        assert video is not None
        photometric, allocated, stored = photometric_for(video)
        # General Acquisition (C.7.10.1)
        ds.AcquisitionDateTime = dicom_dt(acquired)
        # General Image (C.7.6.1) and VL Image (C.8.12.1)
        ds.InstanceNumber = instance_number
        ds.PatientOrientation = ""
        ds.ContentDate = date
        ds.ContentTime = tm
        ds.ImageType = ctx.image_type.split("\\")[:2] if ctx.image_type else ["ORIGINAL", "PRIMARY"]
        if burned_in_annotation is None:
            burned_in_annotation = ctx.burned_in_annotation == "YES"
        ds.BurnedInAnnotation = "YES" if burned_in_annotation else "NO"
        _source_reference(ds, ctx)
        region = ctx.anatomic_region_code
        if region is not None:
            ds.AnatomicRegionSequence = [code_item(*region)]
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = photometric
        ds.PlanarConfiguration = 0
        ds.BitsAllocated = allocated
        ds.BitsStored = stored
        ds.HighBit = stored - 1
        ds.PixelRepresentation = 0
        _lossy_history(ds, ctx)
        # ICC Profile (C.11.15)
        ds.ICCProfile = icc_profile if icc_profile is not None else srgb_icc_profile()
        ds.ColorSpace = "SRGB"
        # Real-Time Acquisition (C.7.6.28)
        ds.SharedFunctionalGroupsSequence = [Dataset()]
        ds.StereoPairsPresent = "YES" if stereo_pairs else "NO"
    else:
        # Waveform Identification (C.10.8)
        ds.InstanceNumber = instance_number
        ds.ContentDate = date
        ds.ContentTime = tm
        ds.AcquisitionDateTime = dicom_dt(acquired)
    return ds


def _lossy_history(ds: Dataset, ctx: StreamContext) -> None:
    """Lossy Image Compression (C.7.6.1.1.5) of the source: once lossy, always lossy."""
    ds.LossyImageCompression = ctx.lossy_compression or "00"
    if ctx.lossy_compression == "01":
        if ctx.lossy_method:
            ds.LossyImageCompressionMethod = ctx.lossy_method.split("\\")
        if ctx.lossy_ratio:
            ds.LossyImageCompressionRatio = ctx.lossy_ratio.split("\\")


def _source_reference(ds: Dataset, ctx: StreamContext) -> None:
    """A replayed stored instance (``dicom:`` cine) as General Image Source Image
    Sequence (C.7.6.1, Purpose of Reference CID 7202 "Source image for image processing
    operation") and Common Instance Reference (C.12.2)."""
    if not (ctx.source_sop_class_uid and ctx.source_sop_instance_uid):
        return
    src = Dataset()
    src.ReferencedSOPClassUID = ctx.source_sop_class_uid
    src.ReferencedSOPInstanceUID = ctx.source_sop_instance_uid
    src.PurposeOfReferenceCodeSequence = [code_item(*SOURCE_IMAGE_PURPOSE)]
    ds.SourceImageSequence = [src]
    if not ctx.source_series_instance_uid:
        return
    ref = Dataset()
    ref.ReferencedSOPClassUID = ctx.source_sop_class_uid
    ref.ReferencedSOPInstanceUID = ctx.source_sop_instance_uid
    series = Dataset()
    series.SeriesInstanceUID = ctx.source_series_instance_uid
    series.ReferencedInstanceSequence = [ref]
    study = ctx.source_study_instance_uid or ctx.study_uid
    if study == ctx.study_uid:
        ds.ReferencedSeriesSequence = [series]
    else:
        other = Dataset()
        other.StudyInstanceUID = study
        other.ReferencedSeriesSequence = [series]
        ds.StudiesContainingOtherReferencedInstancesSequence = [other]


SOURCE_IMAGE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")
"""CID 7202 Purpose of Reference of a source the frames were taken from."""


class GrainBuilder:
    """Make the grain of each frame of one metadata flow.

    The static part goes into the first grain and again whenever
    ``static_interval_ns`` has passed (by ``now``) since it was last sent, so it is
    present at >= 1 Hz (PS3.22 §6.2.2) for any interval up to one second.

    Parameters
    ----------
    sop : RtvSop
    ctx : StreamContext
    meta : RtvMetaInfo
        The flow's meta header; its SOP class, transfer syntax and rate must match
        ``sop`` and ``bulk``.
    bulk : BulkFlowRef
        The bulk flow described.
    static_interval_ns : int
        0 < interval <= 1 s.
    video : VideoFormat or None
        Needed by the video IODs (unless ``static`` is given).
    static : pydicom.Dataset or None
        A prebuilt static part; built with :func:`static_part` when None.
    frame_duration_ms : float or None
        Frame Acquisition Duration of each frame, when known.
    """

    def __init__(
        self,
        sop: RtvSop,
        ctx: StreamContext,
        meta: RtvMetaInfo,
        bulk: BulkFlowRef,
        *,
        static_interval_ns: int = 500_000_000,
        video: VideoFormat | None = None,
        static: Dataset | None = None,
        frame_duration_ms: float | None = None,
    ) -> None:
        if not 0 < static_interval_ns <= NS_PER_S:
            raise ConfigError(
                "static_interval_ns", static_interval_ns, "0 < interval <= 1 s (PS3.22 §6.2.2)"
            )
        if meta.sop_class_uid != sop.value:
            raise LocalProtocolError("meta.sop_class_uid: differs from the GrainBuilder's SOP")
        if meta.transfer_syntax_uid != bulk.transfer_syntax_uid:
            raise LocalProtocolError("meta.transfer_syntax_uid: differs from the bulk flow's")
        if meta.sampling_rate != bulk.sampling_rate:
            raise LocalProtocolError("meta.sampling_rate: differs from the bulk flow's RTP rate")
        self.sop = sop
        self.meta = meta
        self.bulk = bulk
        self.static_interval_ns = static_interval_ns
        self.frame_duration_ms = frame_duration_ms
        if static is None:
            static = static_part(
                sop, ctx, sop_instance_uid=meta.sop_instance_uid, bulk_flows=[bulk], video=video
            )
        if static.SOPInstanceUID != meta.sop_instance_uid:
            raise LocalProtocolError("static.SOPInstanceUID: differs from meta.sop_instance_uid")
        self.static = static
        self._meta_bytes = meta.encode()
        self._static_bytes = encode_dataset(static)
        self._last_static_ns: int | None = None
        self.grains = 0
        self.static_grains = 0

    def force_static(self) -> None:
        """Put the static part into the next grain (e.g. after it changed)."""
        self._last_static_ns = None

    def grain(self, *, origin: PtpTimestamp, frame_number: int, now: int) -> bytes:
        """The encoded grain of one frame (or audio packet).

        Parameters
        ----------
        origin : PtpTimestamp
            Capture instant (Frame Origin Timestamp), consistent with the RTP timestamp.
        frame_number : int
            Frame Acquisition Number (video; ignored for audio).
        now : int
            TAI nanoseconds, for the static-part schedule.
        """
        due = self._last_static_ns is None or now - self._last_static_ns >= self.static_interval_ns
        dynamic = encode_dynamic_part(
            origin=origin,
            frame_number=frame_number if self.sop.is_video else None,
            frame_duration_ms=self.frame_duration_ms if self.sop.is_video else None,
        )
        self.grains += 1
        if due:
            self._last_static_ns = now
            self.static_grains += 1
            return self._meta_bytes + dynamic + self._static_bytes
        return self._meta_bytes + dynamic


class StaticTracker:
    """Keep the latest static part of each metadata flow (receiver side).

    Parameters
    ----------
    max_flows : int
        Flows remembered at once; the least recently updated is forgotten first.
    """

    def __init__(self, max_flows: int = 64) -> None:
        self.max_flows = max_flows
        self._static: OrderedDict[uuid.UUID, Dataset] = OrderedDict()

    def observe(self, grain: Grain, now: int | None = None) -> Dataset | None:
        """Record ``grain``'s static part if it has one; return the flow's latest.

        ``now`` is accepted for the callers that pass their receive time; nothing reads
        it any more (the unused ``last_seen_ns`` accessor was removed).
        """
        flow = grain.meta.flow_id
        if grain.has_static:
            self._static[flow] = split_static(grain.dataset)
            self._static.move_to_end(flow)
            while len(self._static) > self.max_flows:
                self._static.popitem(last=False)
        return self.latest(flow)

    def latest(self, flow_id: uuid.UUID) -> Dataset | None:
        """The latest static part of ``flow_id``, or None before the first one."""
        return self._static.get(flow_id)


# --------------------------------------------------------------------------------------
# Rendition Selection Document (PS3.22 SOP class 1.2.840.10008.10.4)
# --------------------------------------------------------------------------------------
#
# Theory of operation. A rendition flow carries one Rendition Selection Document
# (PS3.3 A.35.21): a Key Object Selection style SR document whose title (CID 7010,
# PS3.16 Annex D codes 130370-130373) says what the rendition is, and whose IMAGE and
# WAVEFORM content items reference the SOP Instance UIDs of the DICOM-RTV metadata flows
# that belong together (A.35.21: only RTV instances may be referenced). It has no
# dynamic part; the whole document is the static part and goes out at least once a
# second (PS3.22 §6.2.2). PS3.3's root template for it was not recovered
# (spec/ps322.md §2.7, §9 question 8), so the structure below is ours: root CONTAINER
# with the title, one IMAGE (video) or WAVEFORM (audio) item per member flow, in order
# (left view first for stereo), each with three HAS PROPERTIES items in rtstream's own
# coding scheme (PS3.16 §8.2 allows a private "99" designator): the member's RTV Source
# and Flow Identifiers (its metadata flow's (0002,0035)/(0002,0036)) as UUID-derived
# UIDs (PS3.5 B.2, ``2.25.<integer>``) and its role (VIDEO, AUDIO, LEFT, RIGHT).

RENDITION_SCHEME = "99RTSTREAM"
"""Coding scheme of rtstream's own concept names in the rendition document."""

_SOURCE_CONCEPT = ("RTVSRC", RENDITION_SCHEME, "RTV Source Identifier")
_FLOW_CONCEPT = ("RTVFLOW", RENDITION_SCHEME, "RTV Flow Identifier")
_ROLE_CONCEPT = ("RTVROLE", RENDITION_SCHEME, "Rendition role")


class RenditionTitle(enum.Enum):
    """Document titles of a rendition (PS3.16 Annex D, CID 7010)."""

    RENDITION = ("130370", "RTV Rendition")
    AUDIO_VIDEO = ("130371", "RTV Audio and Video Rendition")
    STEREO_VIDEO = ("130372", "RTV Stereo Video Rendition")
    AUDIO_STEREO_VIDEO = ("130373", "RTV Audio and Stereo Video Rendition")

    @property
    def code(self) -> tuple[str, str, str]:
        """(value, DCM, meaning)."""
        return (self.value[0], "DCM", self.value[1])

    @classmethod
    def for_members(cls, *, video: int, audio: int, stereo: bool) -> RenditionTitle:
        """The title for a rendition of ``video`` and ``audio`` flows."""
        if stereo and video == 2:
            return cls.AUDIO_STEREO_VIDEO if audio else cls.STEREO_VIDEO
        if video and audio:
            return cls.AUDIO_VIDEO
        return cls.RENDITION

    @classmethod
    def from_code(cls, value: str) -> RenditionTitle | None:
        """The title of code value ``value`` (DCM), None if it is none of them."""
        return next((t for t in cls if t.value[0] == value), None)


class RenditionRole(enum.Enum):
    """What one member flow is in its rendition."""

    VIDEO = "VIDEO"
    AUDIO = "AUDIO"
    LEFT = "LEFT"
    RIGHT = "RIGHT"


@dataclass(frozen=True, kw_only=True)
class RenditionMember:
    """One DICOM-RTV metadata flow named by a rendition.

    Parameters
    ----------
    sop_class_uid, sop_instance_uid : str
        The member's RTV SOP class and instance ((0002,0032)/(0002,0033) of its grains).
    source_id, flow_id : uuid.UUID
        Its metadata flow's RTV Source and Flow Identifiers ((0002,0035)/(0002,0036)).
    role : RenditionRole
    """

    sop_class_uid: str
    sop_instance_uid: str
    source_id: uuid.UUID
    flow_id: uuid.UUID
    role: RenditionRole

    @property
    def is_audio(self) -> bool:
        """True for an audio member (a WAVEFORM item)."""
        return self.sop_class_uid == RTV_AUDIO_WAVEFORM


@dataclass(frozen=True)
class Rendition:
    """A decoded rendition: its title and its members, in document order."""

    title: RenditionTitle
    members: tuple[RenditionMember, ...]
    sop_instance_uid: str

    @property
    def stereo(self) -> tuple[RenditionMember, RenditionMember] | None:
        """(left, right) of a stereo rendition, else None."""
        left = [m for m in self.members if m.role is RenditionRole.LEFT]
        right = [m for m in self.members if m.role is RenditionRole.RIGHT]
        if len(left) == 1 and len(right) == 1:
            return left[0], right[0]
        return None


def uuid_uid(value: uuid.UUID) -> str:
    """A UUID as a UID (PS3.5 B.2: ``2.25.`` and the UUID's integer value)."""
    return f"2.25.{value.int}"


def uid_uuid(uid: str) -> uuid.UUID | None:
    """The UUID of a ``2.25.<integer>`` UID, None for any other UID."""
    if not uid.startswith("2.25.") or not uid[5:].isdigit():
        return None
    n = int(uid[5:])
    return uuid.UUID(int=n) if n < 1 << 128 else None


def _content_item(value_type: str, relationship: str, concept: tuple[str, str, str] | None) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    if concept is not None:
        item.ConceptNameCodeSequence = [code_item(*concept)]
    return item


def rendition_document(
    ctx: StreamContext,
    *,
    sop_instance_uid: str,
    members: Sequence[RenditionMember],
    title: RenditionTitle,
    created_ns: int | None = None,
    series_instance_uid: str | None = None,
    ptp_synchronized: bool = False,
    synchronization_uid: str | None = None,
) -> Dataset:
    """The Rendition Selection Document data set (all static; PS3.3 A.35.21).

    Modules: Patient, General Study, Key Object Document Series (C.17.6.1), General
    Equipment, Key Object Document (C.17.6.2), SR Document Content (C.17.3) with the
    structure of the section notes above, Synchronization (C.7.4.2), SOP Common.

    Raises
    ------
    ConfigError
        For no members, or a member that is not a DICOM-RTV video or audio instance.
    """
    if not members:
        raise ConfigError("rendition.members", [], "at least one DICOM-RTV metadata flow")
    for m in members:
        if m.sop_class_uid not in RTV_MODALITY:
            raise ConfigError("rendition.members", m.sop_class_uid,
                              "a DICOM-RTV video or audio SOP class (PS3.3 A.35.21)")
    if created_ns is None:
        created_ns = time.time_ns() + TAI_UTC_OFFSET_S * NS_PER_S
    created_utc = tai_ns_to_datetime(created_ns)
    created = created_utc.astimezone(civil_zone(created_utc, ctx.timezone_offset))
    date, tm = created.strftime("%Y%m%d"), created.strftime("%H%M%S.%f")
    ds = Dataset()
    # SOP Common (C.12.1)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = tm
    ds.SOPClassUID = RTV_RENDITION_SELECTION
    ds.SOPInstanceUID = sop_instance_uid
    ds.TimezoneOffsetFromUTC = format_offset(created)
    # Patient (C.7.1.1) and General Study (C.7.2.1), as the member flows say them
    _patient_and_study(ds, ctx, date, tm)
    # Key Object Document Series (C.17.6.1)
    ds.Modality = "KO"
    ds.SeriesInstanceUID = series_instance_uid or new_uid(ctx.uid_root)
    ds.SeriesNumber = 1
    ds.ReferencedPerformedProcedureStepSequence = []
    # General Equipment (C.7.5.1)
    ds.Manufacturer = ctx.manufacturer or "UNKNOWN"
    # Key Object Document (C.17.6.2)
    ds.InstanceNumber = 1
    ds.ContentDate = date
    ds.ContentTime = tm
    # Synchronization (C.7.4.2)
    ds.SynchronizationFrameOfReferenceUID = (
        UTC_SYNCHRONIZATION_UID if ptp_synchronized else synchronization_uid or new_uid(ctx.uid_root))
    ds.SynchronizationTrigger = "NO TRIGGER"
    ds.AcquisitionTimeSynchronized = "Y" if ptp_synchronized else "N"
    # SR Document Content (C.17.3): the root container, titled, and its members
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [code_item(*title.code)]
    ds.ContinuityOfContent = "SEPARATE"
    items = []
    for m in members:
        item = _content_item("WAVEFORM" if m.is_audio else "IMAGE", "CONTAINS", None)
        ref = Dataset()
        ref.ReferencedSOPClassUID = m.sop_class_uid
        ref.ReferencedSOPInstanceUID = m.sop_instance_uid
        item.ReferencedSOPSequence = [ref]
        props = []
        for concept, uid in ((_SOURCE_CONCEPT, m.source_id), (_FLOW_CONCEPT, m.flow_id)):
            p = _content_item("UIDREF", "HAS PROPERTIES", concept)
            p.UID = uuid_uid(uid)
            props.append(p)
        role = _content_item("TEXT", "HAS PROPERTIES", _ROLE_CONCEPT)
        role.TextValue = m.role.value
        props.append(role)
        item.ContentSequence = props
        items.append(item)
    ds.ContentSequence = items
    return ds


def parse_rendition(ds: Dataset) -> Rendition:
    """Read a received Rendition Selection Document (the inverse of
    :func:`rendition_document`; items it does not know are skipped).

    Raises
    ------
    RemoteProtocolError
        Naming the attribute at fault: not a rendition, an unknown title, a member
        without a referenced RTV instance.
    """
    from rtstream.errors import RemoteProtocolError

    if str(ds.get("SOPClassUID", "")) != RTV_RENDITION_SELECTION:
        raise RemoteProtocolError("(0008,0016) SOP Class UID", "not a Rendition Selection Document")
    names = ds.get("ConceptNameCodeSequence") or []
    title = RenditionTitle.from_code(str(names[0].get("CodeValue", ""))) if names else None
    if title is None:
        raise RemoteProtocolError("(0040,A043) Concept Name Code Sequence",
                                  "not an RTV rendition title (DCM 130370-130373)")
    members = []
    for item in ds.get("ContentSequence") or []:
        kind = item.get("ValueType")
        if kind not in ("IMAGE", "WAVEFORM"):
            continue
        refs = item.get("ReferencedSOPSequence") or []
        if len(refs) != 1:
            raise RemoteProtocolError("(0008,1199) Referenced SOP Sequence", "not exactly one item")
        cls = str(refs[0].get("ReferencedSOPClassUID", ""))
        inst = str(refs[0].get("ReferencedSOPInstanceUID", ""))
        if cls not in RTV_MODALITY or not inst:
            raise RemoteProtocolError("(0008,1150) Referenced SOP Class UID",
                                      f"{cls!r} is not a DICOM-RTV video or audio class")
        found: dict[str, str] = {}
        for p in item.get("ContentSequence") or []:
            concept = (p.get("ConceptNameCodeSequence") or [None])[0]
            if concept is None or concept.get("CodingSchemeDesignator") != RENDITION_SCHEME:
                continue
            found[str(concept.get("CodeValue", ""))] = str(p.get("UID") or p.get("TextValue") or "")
        source = uid_uuid(found.get(_SOURCE_CONCEPT[0], ""))
        flow = uid_uuid(found.get(_FLOW_CONCEPT[0], ""))
        try:
            role = RenditionRole(found.get(_ROLE_CONCEPT[0], ""))
        except ValueError:
            role = RenditionRole.AUDIO if cls == RTV_AUDIO_WAVEFORM else RenditionRole.VIDEO
        members.append(RenditionMember(
            sop_class_uid=cls, sop_instance_uid=inst, source_id=source or uuid.UUID(int=0),
            flow_id=flow or uuid.UUID(int=0), role=role))
    if not members:
        raise RemoteProtocolError("(0040,A730) Content Sequence", "no IMAGE or WAVEFORM member")
    return Rendition(title, tuple(members), str(ds.get("SOPInstanceUID", "")))


class RenditionGrainBuilder:
    """The grains of a rendition flow: meta header + the whole document, every time.

    The document has no dynamic part (PS3.22 §6.2.2), so every grain is a static part;
    the sender's schedule (>= 1 Hz) decides how often one goes out.
    """

    def __init__(self, meta: RtvMetaInfo, document: Dataset) -> None:
        if meta.sop_class_uid != RTV_RENDITION_SELECTION:
            raise LocalProtocolError("meta.sop_class_uid: not the Rendition Selection class")
        if document.SOPInstanceUID != meta.sop_instance_uid:
            raise LocalProtocolError("document.SOPInstanceUID: differs from meta.sop_instance_uid")
        self.meta = meta
        self.document = document
        self._bytes = meta.encode() + encode_dataset(document)
        self.grains = 0

    def grain(self) -> bytes:
        """The encoded grain."""
        self.grains += 1
        return self._bytes
