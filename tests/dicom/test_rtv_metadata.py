"""PS3.22 metadata grains: byte-exact codec, strict parsing, RTP fragmentation."""

from __future__ import annotations

import random
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.uid import generate_uid

from rtstream.errors import LocalProtocolError, RemoteProtocolError
from rtstream.proto.clock import TAI_UTC_OFFSET_S, PtpTimestamp
from rtstream.proto.nmos_ext import PROFILE_ONE_BYTE, ExtMap, NmosExtension
from rtstream.proto.rtp import RtpPacket, parse_rtp
from rtstream.proto.rtv_metadata import (
    RTV_SOP_CLASSES,
    GrainDropped,
    GrainEvent,
    MetadataDepacketizer,
    MetadataPacketizer,
    RtvMetaInfo,
    decode_grain,
    decode_meta,
    dynamic_part,
    encode_dataset,
    encode_dynamic_part,
    encode_grain,
)
from tests.vectors.rtv_vectors import (
    ACQ_DT,
    DYNAMIC_HEX,
    FLOW_ID,
    FRAME_NUMBER,
    META,
    META_HEX,
    ORIGIN,
    SOURCE_ID,
    hex_bytes,
)

EXTMAP = ExtMap.default()
SYNC = PtpTimestamp(1_700_000_000, 0)


def dyn_grain(frame: int = FRAME_NUMBER, origin: PtpTimestamp = ORIGIN) -> bytes:
    return META.encode() + encode_dynamic_part(
        origin=origin, frame_number=frame, acquisition_datetime=ACQ_DT
    )


# ---------------------------------------------------------------- byte-exact vectors


def test_meta_vector_is_byte_exact() -> None:
    assert META.encode() == hex_bytes(META_HEX)
    meta, end = decode_meta(hex_bytes(META_HEX))
    assert meta == META
    assert end == len(hex_bytes(META_HEX))


def test_dynamic_vector_is_byte_exact_both_routes() -> None:
    fast = encode_dynamic_part(
        origin=ORIGIN, frame_number=FRAME_NUMBER, acquisition_datetime=ACQ_DT
    )
    slow = encode_dataset(
        dynamic_part(origin=ORIGIN, frame_number=FRAME_NUMBER, acquisition_datetime=ACQ_DT)
    )
    assert fast == hex_bytes(DYNAMIC_HEX) == slow


def test_grain_decodes_to_vector_fields() -> None:
    grain = decode_grain(hex_bytes(META_HEX) + hex_bytes(DYNAMIC_HEX))
    assert grain.meta == META
    assert grain.origin == ORIGIN
    item = grain.dataset.CurrentFrameFunctionalGroupsSequence[0]
    assert item.FrameContentSequence[0].FrameAcquisitionNumber == FRAME_NUMBER
    assert item.FrameContentSequence[0].FrameAcquisitionDateTime == ACQ_DT
    assert not grain.has_static


def test_body_is_explicit_le_whatever_0002_0010_says() -> None:
    # (0002,0010) names an implicit-VR syntax; the body must still parse as explicit LE.
    meta = RtvMetaInfo(
        transfer_syntax_uid="1.2.840.10008.1.2",
        sop_class_uid=META.sop_class_uid,
        sop_instance_uid="1.2.3.4",
        source_id=SOURCE_ID,
        flow_id=FLOW_ID,
        sampling_rate=90000,
    )
    grain = decode_grain(meta.encode() + hex_bytes(DYNAMIC_HEX))
    assert grain.origin == ORIGIN


# ---------------------------------------------------------------- round trips


uid_st = (
    st.lists(st.integers(0, 10**9), min_size=2, max_size=6)
    .map(lambda parts: ".".join(str(p) for p in parts))
    .filter(lambda u: len(u) <= 64)
)


@given(
    ts=uid_st,
    cls=st.sampled_from(sorted(RTV_SOP_CLASSES - {"1.2.840.10008.10.4"})),
    inst=uid_st,
    src=st.uuids(),
    flow=st.uuids(),
    rate=st.integers(1, 2**32 - 1),
    duration=st.none() | st.floats(0, 1e6, allow_nan=False),
    seconds=st.integers(TAI_UTC_OFFSET_S, 253_402_300_799),  # 1970..9999 UTC
    ns=st.integers(0, 10**9 - 1),
    frame=st.integers(0, 2**20),
)
def test_grain_round_trip(
    ts: str, cls: str, inst: str, src: uuid.UUID, flow: uuid.UUID, rate: int,
    duration: float | None, seconds: int, ns: int, frame: int,
) -> None:  # fmt: skip
    meta = RtvMetaInfo(
        transfer_syntax_uid=ts, sop_class_uid=cls, sop_instance_uid=inst, source_id=src,
        flow_id=flow, sampling_rate=rate, frame_duration_ms=duration,
    )  # fmt: skip
    origin = PtpTimestamp(seconds, ns)
    ds = dynamic_part(origin=origin, frame_number=frame, frame_duration_ms=duration)
    data = encode_grain(meta, ds)
    assert data == meta.encode() + encode_dynamic_part(
        origin=origin, frame_number=frame, frame_duration_ms=duration
    )
    grain = decode_grain(data)
    assert grain.meta == meta
    assert grain.origin == origin
    assert grain.raw == data
    fc = grain.dataset.CurrentFrameFunctionalGroupsSequence[0].FrameContentSequence[0]
    assert fc.FrameAcquisitionNumber == frame & 0xFFFF


def test_audio_dynamic_part_has_no_frame_content() -> None:
    meta = RtvMetaInfo(
        transfer_syntax_uid="1.2.840.10008.1.2.7.3", sop_class_uid="1.2.840.10008.10.3",
        sop_instance_uid="1.2.3", source_id=SOURCE_ID, flow_id=FLOW_ID, sampling_rate=48000,
    )  # fmt: skip
    grain = decode_grain(meta.encode() + encode_dynamic_part(origin=ORIGIN, frame_number=None))
    item = grain.dataset.CurrentFrameFunctionalGroupsSequence[0]
    assert "FrameContentSequence" not in item
    assert grain.origin == ORIGIN


def test_optional_macros_in_dynamic_part() -> None:
    ds = dynamic_part(
        origin=ORIGIN, frame_number=1, includes_imaging_subject=True, includes_information=False
    )
    grain = decode_grain(encode_grain(META, ds))
    fu = grain.dataset.CurrentFrameFunctionalGroupsSequence[0].FrameUsefulnessGroupSequence[0]
    assert (fu.IncludesImagingSubject, fu.IncludesInformation) == ("YES", "NO")


# ---------------------------------------------------------------- strict parsing


def test_every_truncated_prefix_is_rejected() -> None:
    data = dyn_grain()
    for n in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            decode_grain(data[:n])


@pytest.mark.parametrize(
    ("offset", "value", "field"),
    [
        (128, b"DICX", "DICOM prefix"),
        (136, b"\xff\x00\x00\x00", "(0002,0000) group length"),
        (144 + 8, b"x", "(0002,0010) Transfer Syntax UID"),
    ],
)
def test_corrupt_meta_names_the_field(offset: int, value: bytes, field: str) -> None:
    data = bytearray(dyn_grain())
    data[offset : offset + len(value)] = value
    with pytest.raises(RemoteProtocolError) as info:
        decode_grain(bytes(data))
    assert info.value.field == field


def test_wrong_version_and_sop_class_are_rejected() -> None:
    data = dyn_grain()
    pos = data.index(b"\x00\x01", 170)  # (0002,0031) value
    bad = data[:pos] + b"\x00\x02" + data[pos + 2 :]
    with pytest.raises(RemoteProtocolError, match="0002,0031"):
        decode_grain(bad)
    bad = data.replace(b"1.2.840.10008.10.1", b"1.2.840.10008.10.9")
    with pytest.raises(RemoteProtocolError, match="0002,0032"):
        decode_grain(bad)


def test_missing_dynamic_part_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError, match="0006,0001"):
        decode_grain(META.encode())


@given(st.binary(min_size=0, max_size=400))
def test_garbage_raises_only_remote_protocol_error(garbage: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_grain(garbage)
    with pytest.raises(RemoteProtocolError):
        decode_grain(bytes(128) + b"DICM" + garbage)


@given(st.binary(min_size=1, max_size=200))
def test_trailing_garbage_on_dynamic_grain_is_rejected(garbage: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_grain(dyn_grain() + garbage)


@given(st.integers(0, 10**6), st.integers(0, 255))
def test_flipped_byte_never_raises_anything_else(where: int, value: int) -> None:
    data = bytearray(dyn_grain())
    data[where % len(data)] = value
    try:
        decode_grain(bytes(data))
    except RemoteProtocolError:
        pass


# ---------------------------------------------------------------- fragmentation


def big_grain(size: int = 3000, frame: int = 1) -> bytes:
    """A grain with a large (private-free) static-looking payload: the dynamic part plus
    a long Frame Acquisition DateTime... simplest valid large grain is a dynamic part
    with a big Camera Position item."""
    from pydicom.dataset import Dataset

    cam = Dataset()
    cam.add_new(0x00340010, "LO", "x")  # placeholder element inside the item
    cam.add_new(0x00391000, "OB", bytes(size))  # private-range filler, carried as is
    ds = dynamic_part(origin=ORIGIN, frame_number=frame, camera_position=cam)
    return encode_grain(META, ds)


def packetizer(max_payload: int = 500) -> MetadataPacketizer:
    return MetadataPacketizer(
        ssrc=0x1234, extmap=EXTMAP, source_id=SOURCE_ID, flow_id=FLOW_ID,
        max_payload=max_payload, sequence=65530,
    )  # fmt: skip


def test_packetizer_layout() -> None:
    grain = big_grain()
    pkts = [parse_rtp(p) for p in packetizer().packetize(grain, 4242, sync=SYNC, origin=ORIGIN)]
    assert len(pkts) > 3
    assert all(len(p.to_bytes()) <= 500 for p in pkts)
    assert {p.timestamp for p in pkts} == {4242}
    assert [p.sequence for p in pkts] == [(65530 + i) & 0xFFFF for i in range(len(pkts))]
    assert b"".join(p.payload for p in pkts) == grain
    first = NmosExtension.decode(pkts[0].extension, EXTMAP)
    assert pkts[0].extension_profile == PROFILE_ONE_BYTE
    assert (first.grain_start, first.grain_end) == (True, False)
    assert (first.flow_id, first.source_id) == (FLOW_ID, SOURCE_ID)
    assert (first.sync_timestamp, first.origin_timestamp) == (SYNC, ORIGIN)
    assert all(p.extension_profile is None and not p.marker for p in pkts[1:-1])
    last = NmosExtension.decode(pkts[-1].extension, EXTMAP)
    assert pkts[-1].marker and last.grain_end and not last.grain_start
    assert not any(p.marker for p in pkts[:-1])


def test_single_packet_grain_has_s_and_e() -> None:
    (pkt,) = packetizer(1460).packetize(dyn_grain(), 7, sync=SYNC, origin=ORIGIN)
    p = parse_rtp(pkt)
    ext = NmosExtension.decode(p.extension, EXTMAP)
    assert p.marker and ext.grain_start and ext.grain_end
    dep = MetadataDepacketizer(extmap=EXTMAP)
    (ev,) = dep.feed(pkt, now=0)
    assert isinstance(ev, GrainEvent) and ev.grain.raw == dyn_grain() and ev.rtp_timestamp == 7


def test_reassembly_in_order_and_reordered_within_grain() -> None:
    grain = big_grain()
    pkts = packetizer().packetize(grain, 100, sync=SYNC, origin=ORIGIN)
    dep = MetadataDepacketizer(extmap=EXTMAP)
    shuffled = pkts[:]
    random.Random(1).shuffle(shuffled)
    events = [e for p in shuffled for e in dep.feed(p, now=0)]
    assert len(events) == 1 and isinstance(events[0], GrainEvent)
    assert events[0].grain.raw == grain and events[0].packets == len(pkts)
    assert events[0].extension.origin_timestamp == ORIGIN


def test_gap_drops_grain_when_next_timestamp_arrives() -> None:
    pz = packetizer()
    a = pz.packetize(big_grain(frame=1), 100, sync=SYNC, origin=ORIGIN)
    b = pz.packetize(big_grain(frame=2), 200, sync=SYNC, origin=ORIGIN)
    dep = MetadataDepacketizer(extmap=EXTMAP)
    events = [e for p in a[:2] + a[3:] + b for e in dep.feed(p, now=0)]
    assert isinstance(events[0], GrainDropped) and events[0].rtp_timestamp == 100
    assert "sequence gap" in events[0].reason
    assert isinstance(events[1], GrainEvent) and events[1].rtp_timestamp == 200
    assert dep.stats.dropped == 1 and dep.stats.grains == 1


def test_lost_first_and_last_packets_are_named() -> None:
    pz = packetizer()
    a = pz.packetize(big_grain(), 100, sync=SYNC, origin=ORIGIN)
    dep = MetadataDepacketizer(extmap=EXTMAP)
    assert [e for p in a[1:] for e in dep.feed(p, 0)] == []
    (ev,) = dep.flush()
    assert isinstance(ev, GrainDropped) and "first packet" in ev.reason
    b = pz.packetize(big_grain(), 200, sync=SYNC, origin=ORIGIN)
    for p in b[:-1]:
        dep.feed(p, 0)
    (ev,) = dep.feed(b"\x80" * 3, 2_000_000_000)  # malformed packet; timeout fires
    assert isinstance(ev, GrainDropped) and "last packet" in ev.reason and "timed out" in ev.reason
    assert dep.stats.malformed == 1


def test_caps_protect_memory() -> None:
    grain = big_grain(6000)
    pkts = packetizer().packetize(grain, 1, sync=SYNC, origin=ORIGIN)
    dep = MetadataDepacketizer(extmap=EXTMAP, max_grain_bytes=4096)
    events = [e for p in pkts for e in dep.feed(p, 0)]
    assert len(events) == 1 and "max_grain_bytes" in events[0].reason  # type: ignore[union-attr]
    dep = MetadataDepacketizer(extmap=EXTMAP, max_packets_per_grain=4)
    events = [e for p in pkts for e in dep.feed(p, 0)]
    assert len(events) == 1 and "max_packets_per_grain" in events[0].reason  # type: ignore[union-attr]
    dep = MetadataDepacketizer(extmap=EXTMAP, max_partial_grains=2)
    firsts = [
        MetadataPacketizer(ssrc=s, extmap=EXTMAP, source_id=SOURCE_ID, flow_id=FLOW_ID,
                           max_payload=500).packetize(grain, 1, sync=SYNC, origin=ORIGIN)[0]
        for s in range(5)
    ]  # fmt: skip
    events = [e for p in firsts for e in dep.feed(p, 0)]
    assert len(events) == 3
    assert all("concurrent" in e.reason for e in events)  # type: ignore[union-attr]


def test_invalid_content_and_identity_mismatch_are_dropped() -> None:
    pz = packetizer(1460)
    dep = MetadataDepacketizer(extmap=EXTMAP)
    (ev,) = dep.feed(pz.packetize(b"not a grain", 1, sync=SYNC, origin=ORIGIN)[0], 0)
    assert isinstance(ev, GrainDropped) and ev.reason.startswith("invalid grain: RTV preamble")
    other = MetadataPacketizer(
        ssrc=9, extmap=EXTMAP, source_id=SOURCE_ID, flow_id=uuid.uuid4()
    ).packetize(dyn_grain(), 2, sync=SYNC, origin=ORIGIN)
    (ev,) = dep.feed(other[0], 0)
    assert isinstance(ev, GrainDropped) and "0002,0036" in ev.reason
    assert dep.stats.invalid == 2


def test_late_duplicate_and_wrong_payload_type_are_counted() -> None:
    pz = packetizer(1460)
    p1 = pz.packetize(dyn_grain(1), 10, sync=SYNC, origin=ORIGIN)[0]
    p2 = pz.packetize(dyn_grain(2), 20, sync=SYNC, origin=ORIGIN)[0]
    dep = MetadataDepacketizer(extmap=EXTMAP, payload_type=104)
    assert len(dep.feed(p2, 0)) == 1
    assert dep.feed(p1, 0) == [] and dep.stats.late == 1  # older timestamp
    assert dep.feed(p2, 0) == [] and dep.stats.late == 2  # already delivered
    wrong = RtpPacket(payload_type=100, sequence=1, timestamp=30, ssrc=1, payload=b"x")
    assert dep.feed(wrong.to_bytes(), 0) == [] and dep.stats.wrong_payload_type == 1


def test_packetizer_refuses_empty_grain() -> None:
    with pytest.raises(LocalProtocolError):
        packetizer().packetize(b"", 0, sync=SYNC, origin=ORIGIN)


@given(
    seed=st.integers(0, 2**32),
    loss=st.floats(0, 0.3),
    dup=st.floats(0, 0.3),
    swap=st.floats(0, 0.5),
)
def test_lossy_channel_never_yields_partial_grains(
    seed: int, loss: float, dup: float, swap: float
) -> None:
    rng = random.Random(seed)
    pz = packetizer(400)
    grains = {100 * i: big_grain(rng.randrange(0, 2500), frame=i) for i in range(1, 6)}
    stream = [p for ts, g in grains.items() for p in pz.packetize(g, ts, sync=SYNC, origin=ORIGIN)]
    channel: list[bytes] = []
    for p in stream:
        if rng.random() < loss:
            continue
        channel.append(p)
        if rng.random() < dup:
            channel.append(p)
    for i in range(len(channel) - 1):
        if rng.random() < swap:
            channel[i], channel[i + 1] = channel[i + 1], channel[i]
    dep = MetadataDepacketizer(extmap=EXTMAP)
    events = [e for p in channel for e in dep.feed(p, 0)] + dep.flush()
    seen: set[int] = set()
    for ev in events:
        assert ev.rtp_timestamp not in seen
        seen.add(ev.rtp_timestamp)
        if isinstance(ev, GrainEvent):
            assert ev.grain.raw == grains[ev.rtp_timestamp]
    if loss == 0 and swap == 0:
        assert all(isinstance(e, GrainEvent) for e in events) and len(events) == len(grains)


def test_meta_info_validation() -> None:
    with pytest.raises(LocalProtocolError, match="sop_class_uid"):
        RtvMetaInfo(transfer_syntax_uid="1.2", sop_class_uid="1.2.3", sop_instance_uid="1.2",
                    source_id=SOURCE_ID, flow_id=FLOW_ID, sampling_rate=1)  # fmt: skip
    with pytest.raises(LocalProtocolError, match="sop_instance_uid"):
        RtvMetaInfo(transfer_syntax_uid="1.2", sop_class_uid=META.sop_class_uid,
                    sop_instance_uid="01.2", source_id=SOURCE_ID, flow_id=FLOW_ID,
                    sampling_rate=1)  # fmt: skip
    assert generate_uid()  # pydicom UIDs are valid for us


def test_origin_outside_dt_range_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="origin"):
        dynamic_part(origin=PtpTimestamp(2**47, 0), frame_number=1)
    with pytest.raises(LocalProtocolError, match="origin"):
        encode_dynamic_part(origin=PtpTimestamp(2**47, 0), frame_number=1)
    # a PTP clock that started at 0 (no grandmaster) is 37 s before the UTC epoch
    assert b"19691231235923" in encode_dynamic_part(origin=PtpTimestamp(0, 0), frame_number=1)
    # the audio form carries no DT and accepts any PTP time
    assert encode_dynamic_part(origin=PtpTimestamp(2**47, 0), frame_number=None)
