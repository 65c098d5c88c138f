"""Real-time IOD static parts, the grain schedule and receiver-side static tracking."""

from __future__ import annotations

import io
import uuid

import pytest
from PIL import ImageCms
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from rtstream.dicom.context import StreamContext
from rtstream.dicom.realtime import (
    BulkFlowRef,
    GrainBuilder,
    RtvSop,
    StaticTracker,
    static_part,
)
from rtstream.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from rtstream.proto.clock import NS_PER_S, FakeClock, PtpTimestamp
from rtstream.proto.formats import AudioFormat
from rtstream.proto.nmos_ext import ExtMap
from rtstream.proto.rtv_metadata import (
    GrainEvent,
    MetadataDepacketizer,
    MetadataPacketizer,
    RtvMetaInfo,
    decode_grain,
    encode_dataset,
)
from tests.vectors.rtv_vectors import VIDEO_FMT

BULK_VIDEO = BulkFlowRef(
    source_id=uuid.UUID(int=11), flow_id=uuid.UUID(int=12),
    transfer_syntax_uid=VIDEO_FMT.transfer_syntax_uid, sampling_rate=90000,
)  # fmt: skip
BULK_AUDIO = BulkFlowRef(
    source_id=uuid.UUID(int=21), flow_id=uuid.UUID(int=22),
    transfer_syntax_uid="1.2.840.10008.1.2.7.3", sampling_rate=48000,
)  # fmt: skip


def meta_for(sop: RtvSop, bulk: BulkFlowRef) -> RtvMetaInfo:
    return RtvMetaInfo(
        transfer_syntax_uid=bulk.transfer_syntax_uid, sop_class_uid=sop.value,
        sop_instance_uid=generate_uid(), source_id=uuid.uuid4(), flow_id=uuid.uuid4(),
        sampling_rate=bulk.sampling_rate,
    )  # fmt: skip


def builder(sop: RtvSop = RtvSop.ENDOSCOPIC, **kw: object) -> GrainBuilder:
    bulk = BULK_AUDIO if sop is RtvSop.AUDIO else BULK_VIDEO
    return GrainBuilder(
        sop, StreamContext(patient_name="Doe^Jane", patient_id="P1"), meta_for(sop, bulk), bulk,
        video=None if sop is RtvSop.AUDIO else VIDEO_FMT, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


# ---------------------------------------------------------------- StreamContext


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"patient_name": "A^B^C^D^E^F"}, "context.patient_name"),
        ({"patient_name": "back\\slash"}, "context.patient_name"),
        ({"birth_date": "20230230"}, "context.birth_date"),
        ({"birth_date": "2023-01-01"}, "context.birth_date"),
        ({"sex": "X"}, "context.sex"),
        ({"study_instance_uid": "1.02.3"}, "context.study_instance_uid"),
        ({"accession_number": "x" * 17}, "context.accession_number"),
    ],
)
def test_context_rejects_bad_values(kw: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        StreamContext(**kw)  # type: ignore[arg-type]
    assert info.value.key == key


def test_context_generates_study_uid() -> None:
    a, b = StreamContext(), StreamContext()
    assert a.study_uid != b.study_uid and a.study_instance_uid == a.study_uid
    assert StreamContext(study_instance_uid="1.2.3").study_uid == "1.2.3"


# ---------------------------------------------------------------- static parts


@pytest.mark.parametrize("sop", list(RtvSop))
def test_static_part_modules(sop: RtvSop) -> None:
    b = builder(sop)
    ds = b.static
    assert ds.SOPClassUID == sop.value and ds.SOPInstanceUID == b.meta.sop_instance_uid
    assert ds.Modality == sop.modality
    assert ds.TimeDistributionProtocol == "PTP"
    assert ds.SynchronizationTrigger == "NO TRIGGER" and ds.AcquisitionTimeSynchronized == "N"
    assert str(ds.PatientName) == "Doe^Jane"
    for kw in ("Manufacturer", "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions"):
        assert ds[kw].value  # Enhanced General Equipment: type 1
    (src,) = ds.RealTimeBulkDataFlowSequence
    (flow,) = src.FlowIdentifierSequence
    assert src.SourceIdentifier == b.bulk.source_id.bytes
    assert flow.FlowIdentifier == b.bulk.flow_id.bytes
    assert flow.FlowTransferSyntaxUID == b.meta.transfer_syntax_uid
    assert flow.FlowRTPSamplingRate == b.meta.sampling_rate
    assert "AcquisitionContextSequence" in ds
    assert not any(tag.group == 0x0006 for tag in ds.keys())
    if sop.is_video:
        assert ds.PhotometricInterpretation == "YBR_FULL_422"
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 10, 9)
        assert len(ds.SharedFunctionalGroupsSequence) == 1 and ds.StereoPairsPresent == "NO"
        profile = ImageCms.ImageCmsProfile(io.BytesIO(ds.ICCProfile))
        assert "sRGB" in ImageCms.getProfileDescription(profile)
        assert "PixelData" not in ds and "Rows" not in ds  # no Image Pixel module
    else:
        assert "ICCProfile" not in ds and "PhotometricInterpretation" not in ds
        assert ds.InstanceNumber == 1 and ds.ContentDate and ds.AcquisitionDateTime


def test_static_part_requires_bulk_and_video() -> None:
    ctx = StreamContext()
    with pytest.raises(ConfigError):
        static_part(RtvSop.ENDOSCOPIC, ctx, sop_instance_uid="1.2", bulk_flows=[], video=VIDEO_FMT)
    with pytest.raises(ConfigError):
        static_part(RtvSop.PHOTOGRAPHIC, ctx, sop_instance_uid="1.2", bulk_flows=[BULK_VIDEO])
    ds = static_part(
        RtvSop.AUDIO, ctx, sop_instance_uid="1.2", bulk_flows=[BULK_AUDIO], audio=AudioFormat(),
        ptp_synchronized=True,
    )  # fmt: skip
    assert ds.SynchronizationFrameOfReferenceUID == "1.2.840.10008.15.1.1"
    assert ds.AcquisitionTimeSynchronized == "Y"


def test_builder_checks_meta_against_bulk() -> None:
    meta = meta_for(RtvSop.ENDOSCOPIC, BULK_AUDIO)
    with pytest.raises(LocalProtocolError):
        GrainBuilder(RtvSop.ENDOSCOPIC, StreamContext(), meta, BULK_VIDEO, video=VIDEO_FMT)
    with pytest.raises(ConfigError):
        builder(static_interval_ns=2 * NS_PER_S)


# ---------------------------------------------------------------- schedule


@pytest.mark.parametrize("sop", list(RtvSop))
def test_static_in_first_grain_and_at_least_1_hz(sop: RtvSop) -> None:
    clock = FakeClock()
    b = builder(sop)
    static_times = []
    period = NS_PER_S // 60
    for i in range(60 * 4):
        data = b.grain(
            origin=PtpTimestamp.from_ns(clock.now_ns()), frame_number=i, now=clock.now_ns()
        )
        grain = decode_grain(data)
        assert grain.origin == PtpTimestamp.from_ns(clock.now_ns())
        if grain.has_static:
            static_times.append(clock.now_ns())
        if i == 0:
            assert grain.has_static
        clock.advance(period)
    gaps = [b - a for a, b in zip(static_times, static_times[1:], strict=False)]
    assert gaps and max(gaps) <= NS_PER_S // 2 + period
    assert len(static_times) >= 4 * 2 - 1
    assert b.static_grains == len(static_times) and b.grains == 240


def test_static_grain_prefixes() -> None:
    """Every prefix fails except the one that ends exactly where the dynamic part ends:
    that prefix *is* a complete dynamic-only grain (a data set has no end marker; the
    transport's reassembly, not the codec, guarantees completeness)."""
    b = builder()
    data = b.grain(origin=PtpTimestamp(1_700_000_000, 0), frame_number=1, now=0)
    dyn_only = b.grain(origin=PtpTimestamp(1_700_000_000, 0), frame_number=1, now=1)
    assert len(dyn_only) < len(data) and data.startswith(dyn_only)
    for n in range(len(data)):
        if n == len(dyn_only):
            assert not decode_grain(data[:n]).has_static
            continue
        with pytest.raises(RemoteProtocolError):
            decode_grain(data[:n])


def with_static(b: GrainBuilder, static: Dataset) -> GrainBuilder:
    """A builder like ``b`` whose grains carry ``static`` (invalid ones included)."""
    return GrainBuilder(b.sop, StreamContext(), b.meta, b.bulk, static=static)


def test_static_validation_names_the_field() -> None:
    b = builder()
    bad = b.static.copy()
    bad.Modality = "XC"
    b = with_static(b, bad)
    with pytest.raises(RemoteProtocolError) as info:
        decode_grain(b.grain(origin=PtpTimestamp(1, 0), frame_number=0, now=0))
    assert info.value.field == "(0008,0060) Modality"
    bad = b.static.copy()
    bad.Modality = "ES"
    bad.RealTimeBulkDataFlowSequence[0].FlowIdentifierSequence[0].FlowRTPSamplingRate = 1
    b = with_static(b, bad)
    with pytest.raises(RemoteProtocolError) as info:
        decode_grain(b.grain(origin=PtpTimestamp(1, 0), frame_number=0, now=0))
    assert info.value.field == "(0034,0004) Flow RTP Sampling Rate"
    bad = b.static.copy()
    del bad.RealTimeBulkDataFlowSequence[0].FlowIdentifierSequence[0].FlowRTPSamplingRate
    del bad.SharedFunctionalGroupsSequence
    bad.RealTimeBulkDataFlowSequence[0].FlowIdentifierSequence[0].FlowRTPSamplingRate = 90000
    b = with_static(b, bad)
    with pytest.raises(RemoteProtocolError) as info:
        decode_grain(b.grain(origin=PtpTimestamp(1, 0), frame_number=0, now=0))
    assert info.value.field == "(5200,9229) Shared Functional Groups Sequence"


# ---------------------------------------------------------------- receiver side


def test_static_tracker_over_rtp() -> None:
    clock = FakeClock()
    b = builder()
    extmap = ExtMap.default()
    pz = MetadataPacketizer(
        ssrc=5, extmap=extmap, source_id=b.meta.source_id, flow_id=b.meta.flow_id
    )
    dep = MetadataDepacketizer(extmap=extmap)
    tracker = StaticTracker()
    assert tracker.latest(b.meta.flow_id) is None
    seen_static = 0
    for i in range(90):
        now = clock.now_ns()
        origin = PtpTimestamp.from_ns(now)
        data = b.grain(origin=origin, frame_number=i, now=now)
        rtp_ts = (now * 90_000 // NS_PER_S) & 0xFFFFFFFF
        for pkt in pz.packetize(data, rtp_ts, sync=origin, origin=origin):
            for ev in dep.feed(pkt, now):
                assert isinstance(ev, GrainEvent) and ev.rtp_timestamp == rtp_ts
                static = tracker.observe(ev.grain, now)
                assert static is not None  # the first grain carried it
                seen_static += ev.grain.has_static
                assert "CurrentFrameFunctionalGroupsSequence" not in static
                assert encode_dataset(static) == encode_dataset(b.static)
        clock.advance(NS_PER_S // 30)
    assert seen_static >= 5 and tracker.latest(b.meta.flow_id) is not None
    assert dep.stats.grains == 90 and dep.stats.dropped == 0
