"""Clinical times are right (issue #17 §1): stored and displayed times are the capture time.

The wire carries TAI (PTP epoch); DICOM and the viewer show UTC. Whatever the kernel's TAI
offset (0 on a host without a PTP daemon, 37 s on a PTP-disciplined one, simulated here
through the clock object), a frame stamped from :class:`SystemClock` must be stored and
displayed at the wall-clock UTC instant it was captured, and every place that turns the
wire's TAI into civil time must agree with the others.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from rtstream.dicom.context import StreamContext
from rtstream.dicom.realtime import (
    BulkFlowRef,
    GrainBuilder,
    RtvSop,
    dicom_dt,
    static_part,
    tai_ns_to_datetime,
)
from rtstream.dicom.stored import build_snapshot
from rtstream.proto.clock import PtpTimestamp, rtp_timestamp
from rtstream.proto.nmos_ext import ExtMap, NmosExtension
from rtstream.proto.rtp import parse_rtp
from rtstream.proto.rtv_metadata import (
    GrainEvent,
    MetadataDepacketizer,
    MetadataPacketizer,
    RtvMetaInfo,
    frame_origin,
    tai_to_dicom_datetime,
)
from rtstream.sysclock import SystemClock
from rtstream.viewer.server import _origin_time
from tests.vectors.rtv_vectors import VIDEO_FMT_8

UTC = dt.UTC
CLOCK_TOLERANCE = dt.timedelta(milliseconds=50)
TRANSIT_BOUND = dt.timedelta(milliseconds=200)

CLOCKS = {
    "kernel": None,  # this host's kernel, as adjtimex reports it
    "free-running": 0,  # kernel TAI offset 0: CLOCK_TAI reads UTC
    "ptp": 37,  # PTP-disciplined kernel, simulated: CLOCK_TAI is TAI
}


@pytest.fixture(params=list(CLOCKS), ids=list(CLOCKS))
def clock(request: pytest.FixtureRequest) -> SystemClock:
    offset = CLOCKS[request.param]
    return SystemClock() if offset is None else SystemClock(kernel_tai_offset=offset)


def parse_dt(value: str) -> dt.datetime:
    """A DICOM DT written by rtstream (``YYYYMMDDHHMMSS.ffffff+0000``)."""
    return dt.datetime.strptime(str(value), "%Y%m%d%H%M%S.%f%z")


def parse_da_tm(date: str, time: str, offset: str = "+0000") -> dt.datetime:
    """A DA + TM pair written by rtstream in its Timezone Offset From UTC (C.12.1.1.8)."""
    return dt.datetime.strptime(str(date) + str(time) + str(offset), "%Y%m%d%H%M%S.%f%z")


def near(value: dt.datetime, wall: dt.datetime, bound: dt.timedelta = CLOCK_TOLERANCE) -> bool:
    return abs(value - wall) <= bound


def make_static(created_ns: int | None = None) -> pydicom.Dataset:
    bulk = BulkFlowRef(source_id=uuid.uuid4(), flow_id=uuid.uuid4(),
                       transfer_syntax_uid=VIDEO_FMT_8.transfer_syntax_uid, sampling_rate=90000)
    return static_part(RtvSop.ENDOSCOPIC, StreamContext(patient_name="Time^Test", patient_id="T-1"),
                       sop_instance_uid=generate_uid(), bulk_flows=[bulk], video=VIDEO_FMT_8,
                       created_ns=created_ns)


def capture(clock: SystemClock) -> tuple[dt.datetime, PtpTimestamp]:
    """Stamp a frame the way the sender and the receiver do, with the wall clock beside it."""
    wall = dt.datetime.now(UTC)
    return wall, PtpTimestamp.from_ns(clock.now_ns())


def snapshot(origin: PtpTimestamp) -> pydicom.Dataset:
    static = make_static()
    frame = np.zeros(VIDEO_FMT_8.frame_bytes, np.uint8)
    return build_snapshot(frame, VIDEO_FMT_8, static, rtv_sop_instance_uid=static.SOPInstanceUID,
                          origin=origin, series_instance_uid=generate_uid())


def test_clock_is_tai(clock: SystemClock) -> None:
    import time

    before = time.time_ns()
    tai = clock.now_ns()
    after = time.time_ns()
    assert abs(tai - (before + after) // 2 - 37_000_000_000) <= 50_000_000


def test_snapshot_times_are_the_capture_time(clock: SystemClock) -> None:
    wall, origin = capture(clock)
    ds = snapshot(origin)
    assert near(parse_dt(ds.AcquisitionDateTime), wall)
    tz = ds.TimezoneOffsetFromUTC
    assert near(parse_da_tm(ds.ContentDate, ds.ContentTime, tz), wall)
    assert near(parse_da_tm(ds.InstanceCreationDate, ds.InstanceCreationTime, tz), wall)


def test_static_part_times_are_now(clock: SystemClock) -> None:
    """The RTV static part: creation/acquisition from the clock, and its own default."""
    wall = dt.datetime.now(UTC)
    for static in (make_static(clock.now_ns()), make_static()):
        assert near(parse_dt(static.AcquisitionDateTime), wall)
        tz = static.TimezoneOffsetFromUTC
        assert near(parse_da_tm(static.ContentDate, static.ContentTime, tz), wall)
        assert near(parse_da_tm(static.InstanceCreationDate, static.InstanceCreationTime, tz), wall)


def test_nmos_origin_grain_origin_and_stored_time_agree(clock: SystemClock) -> None:
    """One instant, four spellings: NMOS origin item, Frame Origin Timestamp, the grain's
    Frame Acquisition DateTime and the stored Acquisition DateTime."""
    wall, origin = capture(clock)
    static = make_static()
    meta = RtvMetaInfo(transfer_syntax_uid=VIDEO_FMT_8.transfer_syntax_uid,
                       sop_class_uid=RtvSop.ENDOSCOPIC.value,
                       sop_instance_uid=static.SOPInstanceUID, source_id=uuid.uuid4(),
                       flow_id=uuid.uuid4(), sampling_rate=90000)
    bulk = BulkFlowRef(source_id=uuid.uuid4(), flow_id=uuid.uuid4(),
                       transfer_syntax_uid=VIDEO_FMT_8.transfer_syntax_uid, sampling_rate=90000)
    builder = GrainBuilder(RtvSop.ENDOSCOPIC, StreamContext(), meta, bulk, static=static)
    grain = builder.grain(origin=origin, frame_number=1, now=origin.to_ns())
    extmap = ExtMap.default()
    packetizer = MetadataPacketizer(ssrc=1, extmap=extmap, source_id=meta.source_id,
                                    flow_id=meta.flow_id)
    ts = rtp_timestamp(origin.to_ns(), 90000)
    datagrams = packetizer.packetize(grain, ts, sync=origin, origin=origin)

    nmos = NmosExtension.decode(parse_rtp(datagrams[0]).extension, extmap)
    depacketizer = MetadataDepacketizer(extmap=extmap)
    events = [e for d in datagrams for e in depacketizer.feed(d, now=0)]
    (event,) = [e for e in events if isinstance(e, GrainEvent)]
    grain_origin = frame_origin(event.grain.dataset)
    assert nmos.origin_timestamp == grain_origin == origin

    stored = snapshot(nmos.origin_timestamp)
    acquired = parse_dt(stored.AcquisitionDateTime)
    assert acquired == tai_ns_to_datetime(grain_origin.to_ns())
    assert near(acquired, wall)
    # the grain's own civil time (PS3.3 Frame Content macro) is the same instant
    item = event.grain.dataset[0x00060001].value[0]
    frame_dt = item[0x00209111].value[0][0x00189074].value
    # the same instant; the stored object writes it in its own offset (C.12.1.1.8)
    assert parse_dt(frame_dt) == acquired == parse_dt(tai_to_dicom_datetime(origin.to_ns()))
    assert dicom_dt(tai_ns_to_datetime(origin.to_ns())) == tai_to_dicom_datetime(origin.to_ns())


def test_viewer_time_is_the_stored_time(clock: SystemClock) -> None:
    wall, origin = capture(clock)
    stored = parse_dt(snapshot(origin).AcquisitionDateTime).astimezone(UTC)
    shown = _origin_time(origin.to_ns())
    assert shown == stored.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert near(dt.datetime.fromisoformat(shown), wall)


@pytest.mark.parametrize("kernel_offset", list(CLOCKS.values()), ids=list(CLOCKS))
async def test_sender_to_receiver_snapshot_is_stored_at_capture_time(
    kernel_offset: int | None, tmp_path: Path
) -> None:
    """End to end on 127.0.0.1: testsrc -> Sender -> Receiver -> snapshot in store_dir."""
    from rtstream.receiver import ItemKind, Receiver, ReceiverConfig
    from rtstream.sender import Sender, load_sender_config
    from tests.peers import free_port

    port = free_port(count=4, step=2)
    cfg = load_sender_config(None, {
        "source": "testsrc", "frames": 30,
        "video": {"width": 160, "height": 120, "fps": 30, "depth": 8},
        "network": {"dest": "127.0.0.1", "port": port},
    })
    store_dir = tmp_path / "store"
    def clock() -> SystemClock:
        return SystemClock() if kernel_offset is None else SystemClock(kernel_tai_offset=kernel_offset)

    async with Sender(cfg, clock=clock()) as tx:
        sdp = tmp_path / "tx.sdp"
        sdp.write_text(tx.sdp_text())
        rx_cfg = ReceiverConfig(sdp=str(sdp), store_dir=store_dir)
        async with Receiver(rx_cfg, clock=clock()) as rx:
            run = asyncio.create_task(tx.run())
            try:
                async with asyncio.timeout(20):
                    async for item in rx:
                        if item.kind is ItemKind.VIDEO and item.metadata is not None:
                            received = dt.datetime.now(UTC)
                            break
                result = await rx.snapshot(item.rtp_timestamp)
            finally:
                await run
    assert result.ok
    (path,) = store_dir.rglob("*.dcm")
    ds = pydicom.dcmread(path)
    assert ds.SOPInstanceUID == result.sop_instance_uid
    acquired = parse_dt(ds.AcquisitionDateTime)
    # captured before it was received, at most the transit earlier
    assert received - TRANSIT_BOUND <= acquired <= received + CLOCK_TOLERANCE
    assert near(parse_da_tm(ds.ContentDate, ds.ContentTime, ds.TimezoneOffsetFromUTC), acquired,
                dt.timedelta(0))


@pytest.mark.parametrize(("grandmaster", "kernel_offset", "ptp"), [
    (None, 0, False),  # free-running host clock
    (None, 37, False),  # disciplined, but no grandmaster configured: nothing to name
    ("08-00-11-FF-FE-21-E1-B0", 0, False),  # configured, but the clock is not disciplined
    ("08-00-11-FF-FE-21-E1-B0", 37, True),
], ids=["free", "ptp-unconfigured", "configured-free", "ptp"])
async def test_sdp_and_static_part_say_what_the_clock_is(
    grandmaster: str | None, kernel_offset: int, ptp: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from rtstream.dicom.realtime import UTC_SYNCHRONIZATION_UID
    from rtstream.sender import Sender, load_sender_config
    from tests.peers import free_port

    cfg = load_sender_config(None, {
        "source": "testsrc", "frames": 1,
        "video": {"width": 160, "height": 120, "fps": 30, "depth": 8},
        "network": {"dest": "127.0.0.1", "port": free_port(count=4, step=2)},
        "ptp_grandmaster": grandmaster, "ptp_domain": 0,
    })
    wall = dt.datetime.now(UTC)
    async with Sender(cfg, clock=SystemClock(kernel_tai_offset=kernel_offset)) as tx:
        sdp = tx.sdp_text()
        assert tx._video is not None
        static = tx._video.builder.static
    refclks = [line for line in sdp.splitlines() if line.startswith("a=ts-refclk:")]
    assert refclks
    if ptp:
        assert all(r == "a=ts-refclk:ptp=IEEE1588-2008:08-00-11-FF-FE-21-E1-B0:0" for r in refclks)
        assert static.AcquisitionTimeSynchronized == "Y"
        assert static.SynchronizationFrameOfReferenceUID == UTC_SYNCHRONIZATION_UID
    else:
        assert all(r.startswith("a=ts-refclk:localmac=") for r in refclks)
        assert static.AcquisitionTimeSynchronized == "N"
        assert static.SynchronizationFrameOfReferenceUID != UTC_SYNCHRONIZATION_UID
    assert ("free-running" in caplog.text) == (grandmaster is not None and not ptp)
    assert static.TimeDistributionProtocol == "PTP"  # fixed by A.32.9.3.5
    assert near(parse_dt(static.AcquisitionDateTime), wall)
