"""Renditions (PS3.22 SOP class 1.2.840.10008.10.4) end to end on 127.0.0.1.

``rtstream send`` with two video sources (left and right views) and audio sends a
Rendition Selection Document flow; these tests read it off the wire byte for byte
(decoded with our own depacketizer, checked against the member flows' own grains), and
run the real Sender into the real Receiver, which groups the flows and pairs the two
views' frames by RTP timestamp.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_fragments
from pydicom.uid import generate_uid

from rtstream.dicom.context import StreamContext
from rtstream.dicom.realtime import (
    RenditionMember,
    RenditionRole,
    RenditionTitle,
    parse_rendition,
    rendition_document,
    uid_uuid,
    uuid_uid,
)
from rtstream.dicom.video import wire_to_rgb
from rtstream.errors import ConfigError, RemoteProtocolError
from rtstream.net.udp import UdpReceiver
from rtstream.pacs.store import StoreClient
from rtstream.proto.rtv_metadata import (
    RTV_AUDIO_WAVEFORM,
    RTV_RENDITION_SELECTION,
    RTV_VIDEO_ENDOSCOPIC,
    RtvMetaInfo,
    decode_grain,
    encode_grain,
)
from rtstream.proto.sdp import parse_sdp
from rtstream.receiver import ItemKind, Receiver, ReceiverConfig
from rtstream.sender import Sender, load_sender_config
from tests.dicom.test_dciodvfy import dciodvfy
from tests.net.test_sender import drain_all, grains, send
from tests.orthanc import Orthanc
from tests.pacs.conftest import orthanc  # noqa: F401 - the module's Orthanc fixture
from tests.pacs.test_store import fast
from tests.peers import free_port

RIGHT = "lavfi:smptebars=size=160x120:rate=30"


def member(role: RenditionRole, cls: str = RTV_VIDEO_ENDOSCOPIC) -> RenditionMember:
    return RenditionMember(sop_class_uid=cls, sop_instance_uid=generate_uid(),
                           source_id=uuid.uuid4(), flow_id=uuid.uuid4(), role=role)


def test_document_round_trips_through_a_grain() -> None:
    members = [member(RenditionRole.LEFT), member(RenditionRole.RIGHT),
               member(RenditionRole.AUDIO, RTV_AUDIO_WAVEFORM)]
    uid = generate_uid()
    doc = rendition_document(StreamContext(patient_id="P-R", patient_name="Stereo^Test"),
                             sop_instance_uid=uid, members=members,
                             title=RenditionTitle.AUDIO_STEREO_VIDEO)
    meta = RtvMetaInfo(transfer_syntax_uid="1.2.840.10008.1.2.7.1",
                       sop_class_uid=RTV_RENDITION_SELECTION, sop_instance_uid=uid,
                       source_id=uuid.uuid4(), flow_id=uuid.uuid4(), sampling_rate=None)
    grain = decode_grain(encode_grain(meta, doc))
    assert grain.has_static
    back = parse_rendition(grain.dataset)
    assert back.title is RenditionTitle.AUDIO_STEREO_VIDEO
    assert back.members == tuple(members)
    assert back.stereo == (members[0], members[1])
    items = grain.dataset.ContentSequence
    assert [i.ValueType for i in items] == ["IMAGE", "IMAGE", "WAVEFORM"]
    assert grain.dataset.ConceptNameCodeSequence[0].CodeValue == "130373"


def test_titles_and_uuid_uids() -> None:
    assert RenditionTitle.for_members(video=1, audio=1, stereo=False) is RenditionTitle.AUDIO_VIDEO
    assert RenditionTitle.for_members(video=2, audio=0, stereo=True) is RenditionTitle.STEREO_VIDEO
    assert RenditionTitle.for_members(video=1, audio=0, stereo=False) is RenditionTitle.RENDITION
    u = uuid.uuid4()
    assert uid_uuid(uuid_uid(u)) == u
    assert len(uuid_uid(uuid.UUID(int=(1 << 128) - 1))) <= 64  # a UI value fits
    assert uid_uuid("1.2.3") is None and uid_uuid(f"2.25.{1 << 128}") is None


def test_bad_documents_are_named() -> None:
    doc = rendition_document(StreamContext(patient_id="P"), sop_instance_uid=generate_uid(),
                             members=[member(RenditionRole.VIDEO)], title=RenditionTitle.RENDITION)
    doc.ConceptNameCodeSequence[0].CodeValue = "130999"
    with pytest.raises(RemoteProtocolError, match="Concept Name Code Sequence"):
        parse_rendition(doc)
    doc.ConceptNameCodeSequence[0].CodeValue = "130370"
    doc.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    with pytest.raises(RemoteProtocolError, match="Referenced SOP Class UID"):
        parse_rendition(doc)
    with pytest.raises(ConfigError, match="rendition.members"):
        rendition_document(StreamContext(patient_id="P"), sop_instance_uid=generate_uid(),
                           members=[], title=RenditionTitle.RENDITION)


def test_stereo_and_audio_rendition_on_the_wire(tmp_path: Path) -> None:
    port = free_port(count=7, step=2)
    offsets = (2, 6, 10, 12)  # left metadata, audio metadata, right metadata, rendition
    rxs = [UdpReceiver("127.0.0.1", port + k, rcvbuf=64 << 20) for k in offsets]
    try:
        assert send("--source", "testsrc", "--source", RIGHT, "--video", "160x120@30",
                    "--depth", "8", "--audio", "--duration", "2.5", "--dest", f"127.0.0.1:{port}",
                    "--sdp-out", str(tmp_path / "s.sdp")) == 0
        vmeta, ameta, rmeta, rend = (grains(drain_all(r)) for r in rxs)
    finally:
        for r in rxs:
            r.close()
    session = parse_sdp((tmp_path / "s.sdp").read_text())
    (rend_media,) = [m for m in session.metadata() if m.rendition]
    assert rend_media.mid == "REND" and rend_media.port == port + 12 and rend_media.describes is None
    assert [m.mid for m in session.video()] == ["VID", "VIDR"]
    # >= 1 Hz (PS3.22 §6.2.2): every grain is the whole document
    assert len(rend) >= 3
    origins = sorted(e.extension.origin_timestamp.to_ns() for e in rend)
    assert max(np.diff(origins)) <= 1_000_000_000
    first = rend[0]
    assert first.grain.meta.sop_class_uid == RTV_RENDITION_SELECTION
    assert first.extension.flow_id == first.grain.meta.flow_id  # the NMOS extension
    assert first.extension.source_id == first.grain.meta.source_id
    rendition = parse_rendition(first.grain.dataset)
    assert rendition.title is RenditionTitle.AUDIO_STEREO_VIDEO
    # each member is one metadata flow, named by its RTV instance and its identifiers
    flows = {RenditionRole.LEFT: vmeta, RenditionRole.RIGHT: rmeta, RenditionRole.AUDIO: ameta}
    assert [m.role for m in rendition.members] == list(flows)
    for m in rendition.members:
        meta = flows[m.role][0].grain.meta
        assert (m.sop_class_uid, m.sop_instance_uid) == (meta.sop_class_uid, meta.sop_instance_uid)
        assert (m.source_id, m.flow_id) == (meta.source_id, meta.flow_id)
    # the same document in every grain
    assert all(e.grain.raw == first.grain.raw for e in rend)


def test_audio_alone_makes_an_audio_and_video_rendition(tmp_path: Path) -> None:
    port = free_port(count=7, step=2)
    rx = UdpReceiver("127.0.0.1", port + 12, rcvbuf=8 << 20)
    try:
        assert send("--video", "160x120@30", "--depth", "8", "--audio", "--frames", "10",
                    "--dest", f"127.0.0.1:{port}") == 0
        events = grains(drain_all(rx))
    finally:
        rx.close()
    rendition = parse_rendition(events[0].grain.dataset)
    assert rendition.title is RenditionTitle.AUDIO_VIDEO
    assert [m.role for m in rendition.members] == [RenditionRole.VIDEO, RenditionRole.AUDIO]


def stereo_config(port: int, **extra: Any) -> Any:
    return load_sender_config(None, {
        "source": "testsrc",
        "stereo_source": RIGHT,
        "video": {"width": 160, "height": 120, "fps": 30, "depth": 8},
        "network": {"dest": "127.0.0.1", "port": port},
        "context": {"patient_name": "Stereo^Test", "patient_id": "RTS-ST"},
        **extra,
    })


@pytest.mark.parametrize("networks", [1, 2], ids=["one-network", "st2022-7"])
async def test_receiver_groups_the_rendition_and_pairs_stereo_frames(tmp_path: Path,
                                                                     networks: int) -> None:
    port = free_port(count=7, step=2)
    network: dict[str, Any] = {"dest": "127.0.0.1", "port": port}
    if networks == 2:  # every flow of the rendition, its own included, on both legs
        network["redundant"] = {"dest": "127.0.0.1", "port": free_port(count=7, step=2)}
    async with Sender(stereo_config(port, duration=6.0, network=network)) as tx:
        sdp = tmp_path / "rx.sdp"
        sdp.write_text(tx.sdp_text())
        if networks == 2:
            groups = {g[0] for g in parse_sdp(tx.sdp_text()).dup_groups}
            assert groups == {"VID", "VMETA", "VIDR", "VMETAR", "REND"}
        run = asyncio.create_task(tx.run())
        frames: dict[str, dict[int, bytes]] = {"VID": {}, "VIDR": {}}
        try:
            async with Receiver(ReceiverConfig(sdp=str(sdp))) as rx:
                async with asyncio.timeout(20):
                    async for item in rx:
                        if item.kind is ItemKind.VIDEO and item.frame is not None:
                            frames[item.flow][item.rtp_timestamp] = item.frame.tobytes()
                        if len(rx.stereo_pairs) >= 40:
                            break
                (group,) = rx.renditions
                pairs = list(rx.stereo_pairs)
                rx_stats = rx.stats
                for item in rx.take_queued():  # delivered, not yet consumed
                    if item.kind is ItemKind.VIDEO and item.frame is not None:
                        frames[item.flow][item.rtp_timestamp] = item.frame.tobytes()
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
    if networks == 2:  # each flow's second leg delivered too
        for name in ("VIDR", "REND"):
            legs = rx_stats["flows"][name]["legs"]
            assert [leg["leg"] for leg in legs] == [1, 2] and all(leg["packets"] > 0 for leg in legs)
    assert group.rendition.title is RenditionTitle.STEREO_VIDEO
    assert group.left is not None and group.left.name == "VID"
    assert group.right is not None and group.right.name == "VIDR"
    assert group.audio == []
    assert len(pairs) >= 40
    for pair in pairs:
        assert pair.left.flow == "VID" and pair.right.flow == "VIDR"
        assert pair.left.rtp_timestamp == pair.right.rtp_timestamp == pair.rtp_timestamp
        assert pair.left.frame is not None and pair.right.frame is not None
        # the views are the two sources' pictures, exactly as delivered on their flows
        assert pair.left.frame.tobytes() == frames["VID"][pair.rtp_timestamp]
        assert pair.right.frame.tobytes() == frames["VIDR"][pair.rtp_timestamp]
        assert not np.array_equal(pair.left.frame, pair.right.frame)
        assert pair.rendition == group.rendition.sop_instance_uid
    timestamps = [p.rtp_timestamp for p in pairs]
    assert timestamps == sorted(timestamps) and len(set(timestamps)) == len(timestamps)
    # every frame delivered on both flows since the rendition was known is in a pair
    both = set(frames["VID"]) & set(frames["VIDR"])
    assert set(timestamps) <= both
    assert len([t for t in both if timestamps[0] <= t <= timestamps[-1]]) == len(timestamps)


def decode_mp4_frames(ds: Any) -> list[np.ndarray]:
    """The frames of a clip's MP4 (its one Pixel Data fragment) as RGB, with PyAV."""
    import av

    fragment = b"".join(generate_fragments(ds.PixelData))
    with av.open(io.BytesIO(fragment)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.peer("Orthanc")
async def test_stereo_snapshot_stores_both_views(tmp_path: Path, orthanc: Orthanc) -> None:  # noqa: F811
    port = free_port(count=7, step=2)
    store = tmp_path / "store"
    async with Sender(stereo_config(port, duration=6.0)) as tx:
        sdp = tmp_path / "rx.sdp"
        sdp.write_text(tx.sdp_text())
        run = asyncio.create_task(tx.run())
        try:
            cfg = ReceiverConfig(sdp=str(sdp), store_dir=store, outbox=tmp_path / "outbox")
            async with Receiver(cfg) as rx:
                async with asyncio.timeout(20):
                    async for _item in rx:
                        if len(rx.stereo_pairs) >= 5:
                            break
                pair = rx.stereo_pairs[-1]
                result = await rx.stereo_snapshot(pair.rtp_timestamp)
                left_uid = rx.flows.video[0].meta.static_uid  # type: ignore[union-attr]
                right_uid = rx.flows.video[1].meta.static_uid  # type: ignore[union-attr]
                fmt = rx.flows.video[0].fmt
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
    assert result.ok
    (path,) = store.glob("*.dcm")
    ds = pydicom.dcmread(path)
    assert ds.SOPInstanceUID == result.sop_instance_uid
    assert ds.StereoPairsPresent == "YES" and int(ds.NumberOfFrames) == 2
    assert ds.PatientID == "RTS-ST"
    sources = [(s.ReferencedSOPInstanceUID, s.PurposeOfReferenceCodeSequence[0].CodeValue)
               for s in ds.SourceImageSequence]
    assert sources[:2] == [(left_uid, "121320"), (right_uid, "121320")]
    referenced = {i.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence
                  for i in s.ReferencedInstanceSequence}
    assert {left_uid, right_uid} <= referenced
    # frame 1 is the left view, frame 2 the right one (H.264: compare by error, not bytes)
    decoded = decode_mp4_frames(ds)
    assert len(decoded) == 2
    views = [wire_to_rgb(pair.left.frame, fmt), wire_to_rgb(pair.right.frame, fmt)]  # type: ignore[arg-type]

    def err(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())

    assert err(decoded[0], views[0]) < 8 < err(decoded[0], views[1])
    assert err(decoded[1], views[1]) < 8 < err(decoded[1], views[0])
    errors = [line for line in dciodvfy(path) if line.startswith("Error")]
    assert errors == []
    # a real archive takes it as sent
    async with StoreClient(fast(tmp_path / "outbox2", orthanc.target)) as sc:
        sent = await sc.submit(ds)
        assert sent.ok and sent.status == 0, sent
    back = pydicom.dcmread(io.BytesIO(orthanc.file(ds.SOPInstanceUID)))
    assert back.StereoPairsPresent == "YES" and back.PixelData == ds.PixelData


def test_sdp_rendition_flag_round_trips() -> None:
    from rtstream.proto.nmos_ext import ExtMap
    from rtstream.proto.sdp import MediaKind, SdpMedia, SdpSession, write_sdp

    rend = SdpMedia(kind=MediaKind.METADATA, port=5016, payload_type=104, address="127.0.0.1",
                    clock_rate=90000, extmap=ExtMap.default(), mid="REND", rendition=True)
    text = write_sdp(SdpSession(origin_address="127.0.0.1", session_name="r", session_id=1,
                                media=(rend,)))
    assert "a=x-rtstream-rendition\r\n" in text
    (back,) = parse_sdp(text).media
    assert back.rendition and back.describes is None
    # a media that says both is read as describing its flow, not as a rendition
    both = text.replace("a=x-rtstream-rendition", "a=x-rtstream-describes:VID\r\na=x-rtstream-rendition")
    assert not parse_sdp(both).media[0].rendition
    with pytest.raises(ConfigError, match="sdp.rendition"):
        SdpMedia(kind=MediaKind.METADATA, port=5016, payload_type=104, address="127.0.0.1",
                 clock_rate=90000, extmap=ExtMap.default(), describes="VID", rendition=True)


async def test_a_bad_rendition_grain_is_counted_and_the_stream_goes_on(tmp_path: Path) -> None:
    from rtstream.net.udp import UdpSender
    from rtstream.proto.clock import PtpTimestamp
    from rtstream.proto.nmos_ext import ExtMap
    from rtstream.proto.rtv_metadata import MetadataPacketizer

    port = free_port(count=7, step=2)
    bad = rendition_document(StreamContext(patient_id="P"), sop_instance_uid=generate_uid(),
                             members=[member(RenditionRole.VIDEO)], title=RenditionTitle.RENDITION)
    bad.ConceptNameCodeSequence[0].CodeValue = "999999"  # no rendition title
    meta = RtvMetaInfo(transfer_syntax_uid="1.2.840.10008.1.2.7.1",
                       sop_class_uid=RTV_RENDITION_SELECTION, sop_instance_uid=bad.SOPInstanceUID,
                       source_id=uuid.uuid4(), flow_id=uuid.uuid4(), sampling_rate=None)
    pkt = MetadataPacketizer(ssrc=7, extmap=ExtMap.default(), source_id=meta.source_id,
                             flow_id=meta.flow_id)
    origin = PtpTimestamp(1_700_000_000, 0)
    datagrams = pkt.packetize(encode_grain(meta, bad), 1234, sync=origin, origin=origin)
    async with Sender(stereo_config(port, duration=6.0)) as tx:
        sdp = tmp_path / "rx.sdp"
        sdp.write_text(tx.sdp_text())
        run = asyncio.create_task(tx.run())
        intruder = UdpSender(("127.0.0.1", port + 12), gso=False)
        delivered = 0
        try:
            async with Receiver(ReceiverConfig(sdp=str(sdp))) as rx:
                async with asyncio.timeout(20):
                    async for item in rx:
                        if item.kind is ItemKind.VIDEO:
                            delivered += 1
                        if delivered == 10:
                            for d in datagrams:
                                await intruder.send_async(d)
                        if delivered >= 60 and rx.renditions_invalid:
                            break
                groups = rx.renditions
        finally:
            intruder.close()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
    assert rx.renditions_invalid == 1
    (group,) = groups  # the sender's rendition, untouched by the bad one
    assert group.rendition.title is RenditionTitle.STEREO_VIDEO


async def test_rendition_counters_in_stats_and_metrics(tmp_path: Path) -> None:
    """renditions_seen, stereo_pairs, stereo_unpaired and renditions_invalid in rx.stats,
    the --stats-json dict, and as Prometheus counters: the right view is paused (its
    frames never reach pairing) while left frames go on, then a bad document arrives."""
    from rtstream.control.metrics import Registry
    from rtstream.control.observe import observe_receiver
    from rtstream.net.udp import UdpSender
    from rtstream.proto.clock import PtpTimestamp
    from rtstream.proto.nmos_ext import ExtMap
    from rtstream.proto.rtv_metadata import MetadataPacketizer
    from rtstream.receiver.sync import STEREO_PAIRS_KEPT
    from tests.control.test_observe import parse

    port = free_port(count=7, step=2)
    bad = rendition_document(StreamContext(patient_id="P"), sop_instance_uid=generate_uid(),
                             members=[member(RenditionRole.VIDEO)], title=RenditionTitle.RENDITION)
    bad.ConceptNameCodeSequence[0].CodeValue = "999999"
    meta = RtvMetaInfo(transfer_syntax_uid="1.2.840.10008.1.2.7.1",
                       sop_class_uid=RTV_RENDITION_SELECTION, sop_instance_uid=bad.SOPInstanceUID,
                       source_id=uuid.uuid4(), flow_id=uuid.uuid4(), sampling_rate=None)
    pkt = MetadataPacketizer(ssrc=9, extmap=ExtMap.default(), source_id=meta.source_id,
                             flow_id=meta.flow_id)
    origin = PtpTimestamp(1_700_000_000, 0)
    datagrams = pkt.packetize(encode_grain(meta, bad), 4321, sync=origin, origin=origin)
    left_while_paused: set[int] = set()
    right_seen: set[int] = set()
    async with Sender(stereo_config(port, duration=8.0)) as tx:
        sdp = tmp_path / "rx.sdp"
        sdp.write_text(tx.sdp_text())
        run = asyncio.create_task(tx.run())
        intruder = UdpSender(("127.0.0.1", port + 12), gso=False)
        try:
            async with Receiver(ReceiverConfig(sdp=str(sdp))) as rx:
                before = rx.stats
                phase = "pairing"
                async with asyncio.timeout(25):
                    async for item in rx:
                        if item.kind is ItemKind.VIDEO and item.flow == "VIDR":
                            right_seen.add(item.rtp_timestamp)
                        if phase == "pairing" and len(rx.stereo_pairs) >= 5:
                            rx.pause_flow("VIDR")
                            phase, paused_at = "paused", rx.stats["stereo_pairs"]
                        elif phase == "paused" and item.kind is ItemKind.VIDEO:
                            if item.flow == "VID":
                                left_while_paused.add(item.rtp_timestamp)
                            if len(left_while_paused - right_seen) >= 12:
                                rx.resume_flow("VIDR")
                                for d in datagrams:
                                    await intruder.send_async(d)
                                phase = "resumed"
                        elif (phase == "resumed" and rx.renditions_invalid
                              and rx.stats["stereo_pairs"] >= paused_at + 5):
                            break
                stats = rx.stats
                kept = list(rx.stereo_pairs)
                right_seen.update(i.rtp_timestamp for i in rx.take_queued() if i.flow == "VIDR")
                reg = Registry()
                observe_receiver(reg, rx)
                exp = parse(reg.render())
        finally:
            intruder.close()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
    assert (before["renditions_seen"], before["stereo_pairs"], before["stereo_unpaired"],
            before["renditions_invalid"]) == (0, 0, 0, 0)
    assert stats["renditions_seen"] == 1  # the sender's one document, repeated; not the bad one
    assert stats["renditions_invalid"] == 1
    if len(kept) < STEREO_PAIRS_KEPT:  # the ring still holds every pair made
        assert stats["stereo_pairs"] == len(kept)
    assert stats["stereo_pairs"] >= len(kept) >= 10
    # the left frames of the pause whose right view never came: in no pair, each given up
    orphans = left_while_paused - right_seen
    assert len(orphans) >= 12
    assert not orphans & {p.rtp_timestamp for p in kept}
    assert stats["stereo_unpaired"] >= len(orphans)
    for key, family in (("renditions_seen", "rtstream_renditions_seen_total"),
                        ("stereo_pairs", "rtstream_stereo_pairs_total"),
                        ("stereo_unpaired", "rtstream_stereo_unpaired_total"),
                        ("renditions_invalid", "rtstream_renditions_invalid_total")):
        assert exp.types[family] == "counter"
        assert exp.value(family) >= stats[key] > 0, family


def _paths(ds: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every element of ``ds`` as a path of (tag) and (tag, item index) steps."""
    out = []
    for elem in ds:
        out.append((*prefix, elem.tag))
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                out += _paths(item, (*prefix, elem.tag, i))
    return out


def test_every_element_removed_is_a_named_error_or_still_a_rendition() -> None:
    """A rendition document from the network with any one element missing: parsed, or
    refused with RemoteProtocolError (counted and dropped by the receiver), never
    another exception."""
    import copy

    doc = rendition_document(StreamContext(patient_id="P"), sop_instance_uid=generate_uid(),
                             members=[member(RenditionRole.LEFT), member(RenditionRole.RIGHT)],
                             title=RenditionTitle.STEREO_VIDEO)
    outcomes = set()
    for path in _paths(doc):
        broken = copy.deepcopy(doc)
        node = broken
        for step in path[:-1]:  # a sequence's tag, then an item's index
            node = node[step] if isinstance(step, int) else node[step].value
        del node[path[-1]]
        try:
            parse_rendition(broken)
            outcomes.add("parsed")
        except RemoteProtocolError:
            outcomes.add("refused")
    assert outcomes == {"parsed", "refused"}


async def test_viewer_shows_a_stereo_pair_side_by_side_and_snapshots_what_it_shows(
        tmp_path: Path) -> None:
    """The viewer's feed adds a ``stereo-`` stream whose picture is the left view next to
    the right one of the same instant; its snapshot stores the stereo instance, and the
    right view's own stream snapshots the right flow (not the left one, which shares its
    RTP timestamps)."""
    from rtstream.proto.pixfmt import from_wire
    from rtstream.viewer.server import feed_from_receiver, snapshot_from_receiver

    port = free_port(count=7, step=2)
    store = tmp_path / "store"
    async with Sender(stereo_config(port, duration=6.0)) as tx:
        sdp = tmp_path / "rx.sdp"
        sdp.write_text(tx.sdp_text())
        run = asyncio.create_task(tx.run())
        try:
            cfg = ReceiverConfig(sdp=str(sdp), store_dir=store, outbox=tmp_path / "outbox")
            async with Receiver(cfg) as rx:
                feed = feed_from_receiver(rx)
                shown: dict[tuple[str, int], Any] = {}
                composed = []
                async with asyncio.timeout(20):
                    async for frame in feed:
                        shown[frame.stream_id, frame.rtp_timestamp] = frame
                        if frame.stream_id.startswith("stereo-"):
                            composed.append(frame)
                            if len(composed) >= 10:
                                break
                wire = {(p.left.flow, p.rtp_timestamp): p.left.frame for p in rx.stereo_pairs}
                wire |= {(p.right.flow, p.rtp_timestamp): p.right.frame for p in rx.stereo_pairs}
                fmt = rx.flows.video[0].fmt
                streams = {flow: sid for sid, flow in feed.flows.items()}
                last = composed[-1]
                snap = snapshot_from_receiver(rx, feed)
                stereo_reply = await snap(last.stream_id, last.rtp_timestamp)
                right_reply = await snap(streams["VIDR"], last.rtp_timestamp)
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
    assert feed.stereo == {last.stream_id}
    h, w = 120, 160
    for frame in composed:
        left = shown[streams["VID"], frame.rtp_timestamp].image
        right = shown[streams["VIDR"], frame.rtp_timestamp].image
        assert frame.pix_fmt == "yuv420p" and frame.image.shape == (h * 3 // 2, 2 * w)
        # luma rows: left | right; each chroma plane likewise, at half size
        assert np.array_equal(frame.image[:h], np.hstack((left[:h], right[:h])))
        for lo, hi in ((h, h + h // 4), (h + h // 4, h * 3 // 2)):
            both = frame.image[lo:hi].reshape(h // 2, w)
            assert np.array_equal(both[:, : w // 2], left[lo:hi].reshape(h // 2, w // 2))
            assert np.array_equal(both[:, w // 2:], right[lo:hi].reshape(h // 2, w // 2))
        assert frame.overlay == shown[streams["VID"], frame.rtp_timestamp].overlay
    assert not np.array_equal(composed[-1].image[:h, :w], composed[-1].image[:h, w:])
    # the two snapshots: a two-frame stereo instance, and the right view's own frame
    assert stereo_reply.ok and right_reply.ok
    stereo = pydicom.dcmread(store.glob(f"**/{stereo_reply.sop_instance_uid}*").__next__())
    assert stereo.StereoPairsPresent == "YES" and int(stereo.NumberOfFrames) == 2
    right = pydicom.dcmread(store.glob(f"**/{right_reply.sop_instance_uid}*").__next__())
    expected = from_wire(wire["VIDR", last.rtp_timestamp], fmt, "rgb24")  # type: ignore[arg-type]
    assert np.array_equal(right.pixel_array, expected)
