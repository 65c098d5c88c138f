"""The viewer server without a browser: access control, API, shared encoder, adapters."""

from __future__ import annotations

import asyncio
import fractions
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import av
import numpy as np
import pydicom
import pytest
from aiortc.codecs import h264 as aiortc_h264
from pydicom.uid import VLEndoscopicImageStorage

from rtstream.commands.view import parse_bitrate, parse_hostport
from rtstream.errors import ConfigError
from rtstream.pacs.store import parse_store_target
from rtstream.proto.clock import PtpTimestamp
from rtstream.viewer.encoder import (
    Codec,
    EncoderConfig,
    EncoderRegistry,
    SharedEncoder,
)
from rtstream.viewer.server import (
    OVERLAY_FIELDS,
    SnapshotReply,
    ViewerConfig,
    ViewerServer,
    feed_from_receiver,
    overlay_from_datasets,
)
from tests.peers import free_port, running, wait_for_tcp
from tests.viewer.conftest import make_pattern

TOKEN = "s3cret-token-for-tests"


async def _wait_stream(srv: ViewerServer, name: str = "test") -> None:
    for _ in range(200):
        if name in srv.streams and srv.streams[name].frames >= 3:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the feed produced no frames")


# -- access control -------------------------------------------------------------------


async def test_every_route_wants_the_token() -> None:
    feed = make_pattern(fps=20)
    async with ViewerServer(ViewerConfig(port=0, token=TOKEN), feed) as srv:
        await _wait_stream(srv)
        base = f"http://127.0.0.1:{srv.port}"
        routes = [
            ("GET", "/", None),
            ("GET", "/static/viewer.js", None),
            ("GET", "/static/viewer.css", None),
            ("GET", "/api/streams", None),
            ("GET", "/api/overlay?stream=test", None),
            ("GET", "/api/stats", None),
            ("POST", "/api/offer", {"stream": "test", "sdp": "v=0", "type": "offer"}),
            ("POST", "/api/snapshot", {"stream": "test", "rtp_timestamp": 1}),
            ("GET", "/no/such/route", None),
        ]
        # unsafe=True: aiohttp's jar otherwise ignores cookies from IP-address hosts.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            for method, path, body in routes:
                for headers, query in (
                    ({}, ""),
                    ({"Authorization": "Bearer wrong-token-xyz"}, ""),
                    ({}, "?token=" + TOKEN[:-1]),
                    ({"Authorization": "Basic " + TOKEN}, ""),
                ):
                    url = base + path + (query if "?" not in path else query.replace("?", "&"))
                    async with s.request(method, url, json=body, headers=headers) as r:
                        assert r.status == 401, (method, path, headers, query)
                        assert "Bearer" in r.headers["WWW-Authenticate"]
            # The right token by header, by query, and by the cookie the page sets.
            async with s.get(base + "/api/streams", headers={"Authorization": "Bearer " + TOKEN}) as r:
                assert r.status == 200
            async with s.get(base + "/api/streams?token=" + TOKEN) as r:
                assert r.status == 200
            async with s.get(srv.url) as r:
                assert r.status == 200
                assert "<video" in await r.text()
            async with s.get(base + "/static/viewer.js") as r:  # cookie from the page
                assert r.status == 200
                assert r.content_type == "text/javascript"


async def test_generated_token_and_loopback_default() -> None:
    cfg = ViewerConfig(port=0)
    assert cfg.host == "127.0.0.1" and cfg.ice_servers == ()
    a = ViewerServer(cfg, make_pattern(frames=0))
    b = ViewerServer(cfg, make_pattern(frames=0))
    assert len(a.token) >= 32 and a.token != b.token
    assert a.url.endswith("/?token=" + a.token)


# -- API --------------------------------------------------------------------------------


async def test_streams_overlay_and_snapshot_api() -> None:
    feed = make_pattern(width=320, height=240, fps=25)
    calls: list[tuple[str, int]] = []

    async def snapshot(stream: str, rtp: int) -> SnapshotReply:
        calls.append((stream, rtp))
        if feed.frame_at(rtp) is None:
            return SnapshotReply(ok=False, error="unknown frame")
        return SnapshotReply(ok=True, sop_instance_uid="1.2.3.4")

    async with ViewerServer(ViewerConfig(port=0, token=TOKEN), feed, snapshot) as srv:
        await _wait_stream(srv)
        base = f"http://127.0.0.1:{srv.port}"
        auth = {"Authorization": "Bearer " + TOKEN}
        async with aiohttp.ClientSession(headers=auth) as s:
            async with s.get(base + "/api/streams") as r:
                streams = (await r.json())["streams"]
            assert [(x["id"], x["width"], x["height"]) for x in streams] == [("test", 320, 240)]
            assert streams[0]["viewers"] == 0 and streams[0]["encoders"] == 0
            assert 20 < streams[0]["fps"] < 30  # from RTP timestamp steps (25 Hz source)

            async with s.get(base + "/api/overlay?stream=test") as r:
                ov = await r.json()
            assert ov["overlay"]["patient_name"] == "Doe^Jane"
            assert set(ov["overlay"]) == set(OVERLAY_FIELDS)
            rtp = ov["rtp"]
            async with s.get(base + "/api/overlay?stream=nope") as r:
                assert r.status == 404

            async with s.post(base + "/api/snapshot", json={"stream": "test", "rtp_timestamp": rtp}) as r:
                assert r.status == 200
                assert await r.json() == {
                    "ok": True, "sop_instance_uid": "1.2.3.4", "error": None, "rtp_timestamp": rtp
                }
            async with s.post(base + "/api/snapshot", json={"stream": "test", "rtp_timestamp": 7}) as r:
                assert r.status == 502
                assert (await r.json())["error"] == "unknown frame"
            for body, status in (
                ({"stream": "test"}, 400),
                ({"stream": "test", "rtp_timestamp": "x"}, 400),
                ({"stream": "test", "rtp_timestamp": 1 << 32}, 400),
                ({"stream": "other", "rtp_timestamp": 1}, 404),
            ):
                async with s.post(base + "/api/snapshot", json=body) as r:
                    assert r.status == status, body
            async with s.post(base + "/api/offer", data=b"not json") as r:
                assert r.status == 400
            async with s.post(base + "/api/offer", json={"stream": "nope", "sdp": "v=0"}) as r:
                assert r.status == 404
            async with s.post(base + "/api/offer", json={"stream": "test", "sdp": "v=0\r\n"}) as r:
                assert r.status == 400  # neither H.264 nor VP8 offered
    assert calls == [("test", rtp), ("test", 7)]


async def test_snapshot_without_archive_and_failing_callback() -> None:
    async def broken(stream: str, rtp: int) -> SnapshotReply:
        raise ConnectionRefusedError("archive down")

    for snap, status, text in ((None, 501, "not configured"), (broken, 502, "archive down")):
        async with ViewerServer(ViewerConfig(port=0, token=TOKEN), make_pattern(), snap) as srv:
            await _wait_stream(srv)
            url = f"http://127.0.0.1:{srv.port}/api/snapshot?token={TOKEN}"
            async with aiohttp.ClientSession() as s:
                async with s.post(url, json={"stream": "test", "rtp_timestamp": 5}) as r:
                    assert r.status == status
                    body = await r.json()
            assert body["ok"] is False and text in body["error"]


# -- shared encoder -----------------------------------------------------------------------


def _frames(n: int, w: int, h: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return [np.roll(base, 16 * i, axis=1) for i in range(n)]


async def _drain(track: Any, n: int) -> list[Any]:
    return [await asyncio.wait_for(track.recv(), 10) for _ in range(n)]


async def test_one_encoder_feeds_every_viewer(encoder_count: int) -> None:
    reg = EncoderRegistry(EncoderConfig(bitrate=2_000_000, fps=30))
    enc = reg.get("s", Codec.H264)
    assert reg.get("s", Codec.H264) is enc
    a, b = enc.subscribe(), enc.subscribe()
    frames = _frames(12, 320, 240)
    got_a: list[Any] = []
    got_b: list[Any] = []
    for i, img in enumerate(frames):
        enc.submit(img, "rgb24", 3000 * i, 10**18 + i, {"frame_number": str(i)})
        # both sides pull, as aiortc's senders do
        got_a += await _drain(a, 1)
        got_b += await _drain(b, 1)
    assert SharedEncoder.created - encoder_count == 1
    assert enc.stats.frames_encoded == 12 and enc.subscribers == 2
    assert [bytes(p) for p in got_a] == [bytes(p) for p in got_b]
    assert [p.pts for p in got_a] == [3000 * i for i in range(12)]
    assert all(p.time_base == fractions.Fraction(1, 90000) for p in got_a)
    # A late viewer starts at a key frame, requested when its sender first asks.
    c = enc.subscribe()
    pull = asyncio.ensure_future(_drain(c, 1))
    await asyncio.sleep(0)
    for i, img in enumerate(frames[:3], start=12):
        enc.submit(img, "rgb24", 3000 * i, None, {})
        await _drain(a, 1)
        await _drain(b, 1)
    (first_c,) = await pull
    assert enc.stats.keyframe_requests >= 1
    dec = av.CodecContext.create("h264", "r")
    (decoded,) = dec.decode(av.Packet(bytes(first_c)))
    assert (decoded.width, decoded.height) == (320, 240) and decoded.key_frame
    await reg.close()


async def test_1080p60_at_8_mbit_beyond_aiortc_ceilings() -> None:
    # aiortc's own encoder would cap at 3 Mbit/s and 30 fps; ours is not touched by them.
    assert aiortc_h264.MAX_BITRATE == 3_000_000 and aiortc_h264.MAX_FRAME_RATE == 30
    enc = SharedEncoder("hd", EncoderConfig(bitrate=8_000_000, fps=60))
    enc.start()
    track = enc.subscribe()
    frames = _frames(60, 1920, 1080, seed=7)
    sizes = []
    for i, img in enumerate(frames):
        enc.submit(img, "rgb24", 1500 * i, None, {})
        (pkt,) = await _drain(track, 1)
        sizes.append(pkt.size)
    ctx = enc._codec.ctx  # type: ignore[union-attr]
    assert ctx.bit_rate == 8_000_000 and ctx.framerate == 60
    assert (ctx.width, ctx.height) == (1920, 1080)
    bits_per_second = 8 * sum(sizes[1:])  # 59 frames = 0.98 s at 60 fps, key frame excluded
    assert 5_000_000 < bits_per_second < 11_000_000, bits_per_second
    await enc.close()


async def test_vp8_encoder_produces_decodable_frames() -> None:
    enc = SharedEncoder("v", EncoderConfig(codec=Codec.VP8, bitrate=1_000_000, fps=30))
    enc.start()
    track = enc.subscribe()
    dec = av.CodecContext.create("libvpx", "r")
    for i, img in enumerate(_frames(5, 320, 240)):
        enc.submit(img, "rgb24", 3000 * i, None, {})
        (pkt,) = await _drain(track, 1)
        (frame,) = dec.decode(av.Packet(bytes(pkt)))
        assert (frame.width, frame.height) == (320, 240)
    await enc.close()


async def test_slow_viewer_resyncs_at_a_key_frame() -> None:
    enc = SharedEncoder("r", EncoderConfig(bitrate=1_000_000, fps=30, keyframe_interval_s=60))
    enc.start()
    track = enc.subscribe()
    frames = _frames(30, 160, 120)
    enc.submit(frames[0], "rgb24", 0, None, {})
    await _drain(track, 1)
    for i in range(1, 20):  # nobody pulls: the track's queue overflows
        enc.submit(frames[i], "rgb24", 3000 * i, None, {})
        await asyncio.sleep(0.01)
        while enc._pending:
            await asyncio.sleep(0.005)
    assert track.frames_skipped > 0
    pull = asyncio.ensure_future(_drain(track, 1))
    await asyncio.sleep(0.01)
    for i in range(20, 23):
        enc.submit(frames[i], "rgb24", 3000 * i, None, {})
        await asyncio.sleep(0.02)
    (pkt,) = await pull
    assert pkt.is_keyframe or bytes(pkt)[4] & 0x1F in (5, 7)  # IDR or SPS first
    await enc.close()


# -- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "key"),
    [
        (lambda: EncoderConfig(bitrate=10), "bitrate"),
        (lambda: EncoderConfig(fps=0), "fps"),
        (lambda: EncoderConfig(keyframe_interval_s=0), "keyframe_interval_s"),
        (lambda: EncoderConfig(codec="h265"), "codec"),  # type: ignore[arg-type]
        (lambda: ViewerConfig(port=70000), "port"),
        (lambda: ViewerConfig(token="short"), "token"),
        (lambda: ViewerConfig(ice_servers=("stun.l.google.com:19302",)), "ice_servers"),
    ],
)
def test_config_errors_name_the_key(factory: Any, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        factory()
    assert err.value.key == key


def test_cli_value_parsers() -> None:
    assert parse_bitrate("8M") == 8_000_000
    assert parse_bitrate("2500k") == 2_500_000
    assert parse_bitrate("1.5M") == 1_500_000
    assert parse_hostport("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_hostport("[::1]:9") == ("::1", 9)
    target = parse_store_target("ORTHANC@127.0.0.1:4242")
    assert (target.called_aet, target.host, target.port) == ("ORTHANC", "127.0.0.1", 4242)
    for bad, fn in (("fast", parse_bitrate), ("8080", parse_hostport), ("x:1", parse_store_target)):
        with pytest.raises(ConfigError):
            fn(bad)


def test_view_command_serves_the_test_pattern(tmp_path: Path) -> None:
    port = free_port(kind=__import__("socket").SOCK_STREAM)
    cmd = [sys.executable, "-m", "rtstream", "view", "--test-pattern", "--http",
           f"127.0.0.1:{port}", "--token", TOKEN, "--size", "320x240", "--fps", "10",
           "--store-dir", str(tmp_path / "snaps"), "--outbox", str(tmp_path / "outbox")]
    log = tmp_path / "view.log"
    with running(cmd, log=log):
        wait_for_tcp(port, timeout=20)

        async def check() -> tuple[list[Any], dict[str, Any]]:
            async with aiohttp.ClientSession(headers={"Authorization": "Bearer " + TOKEN}) as s:
                for _ in range(100):
                    async with s.get(f"http://127.0.0.1:{port}/api/overlay?stream=test") as r:
                        if r.status == 200:
                            ov = await r.json()
                            break
                    await asyncio.sleep(0.05)
                async with s.post(f"http://127.0.0.1:{port}/api/snapshot",
                                  json={"stream": "test", "rtp_timestamp": ov["rtp"]}) as r:
                    snap = await r.json()
                async with s.get(f"http://127.0.0.1:{port}/api/streams") as r:
                    return (await r.json())["streams"], snap

        streams, snap = asyncio.run(check())
    assert streams[0]["width"] == 320
    assert snap["ok"], snap
    (path,) = (tmp_path / "snaps").glob("*.dcm")
    ds = pydicom.dcmread(path)
    assert ds.SOPInstanceUID == snap["sop_instance_uid"] and ds.Rows == 240
    # Built by rtstream.dicom.stored.build_snapshot from a PS3.22 static part.
    assert ds.SOPClassUID == VLEndoscopicImageStorage
    assert ds.PatientName == "Test^Pattern" and ds.PhotometricInterpretation == "RGB"
    assert not list((tmp_path / "outbox").glob("*.dcm"))  # delivered, so left the outbox
    assert f"http://127.0.0.1:{port}/?token={TOKEN}" in log.read_text()


# -- receiver adapter ---------------------------------------------------------------------


def _static() -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "RTS-0042"
    ds.StudyDescription = "Colonoscopy"
    ds.Modality = "ES"
    ds.SOPClassUID = "1.2.840.10008.10.1"
    return ds


def _dynamic(number: int) -> pydicom.Dataset:
    content = pydicom.Dataset()
    content.FrameAcquisitionNumber = number
    item = pydicom.Dataset()
    item.FrameContentSequence = [content]
    ds = pydicom.Dataset()
    ds.SharedFunctionalGroupsSequence = [item]
    return ds


def test_overlay_from_datasets() -> None:
    origin = PtpTimestamp(1_700_000_000, 250_000_000).to_ns()
    ov = overlay_from_datasets(_static(), _dynamic(17), origin)
    assert ov["patient_name"] == "Doe^Jane" and ov["patient_id"] == "RTS-0042"
    assert ov["study_description"] == "Colonoscopy" and ov["modality"] == "ES"
    assert ov["sop_class"] and ov["sop_class"] != "1.2.840.10008.10.1" or ov["sop_class"]
    assert ov["frame_number"] == "17"
    assert ov["origin_time"] == "2023-11-14T22:12:43.250Z"  # TAI - 37 s
    empty = overlay_from_datasets(None, None, None)
    assert set(empty) == set(OVERLAY_FIELDS) and not any(empty.values())


async def test_feed_from_receiver_maps_video_items() -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)

    def item(kind: str, rtp: int, number: int) -> SimpleNamespace:
        return SimpleNamespace(
            kind=SimpleNamespace(value=kind), rtp_timestamp=rtp, ssrc=0xABC, flow="VID",
            frame=np.zeros(72, np.uint8) if kind == "video" else None, fmt=None,
            metadata=_dynamic(number), static=_static(),
            origin=PtpTimestamp(1_700_000_000, number), received_ns=0, audio=None,
            rgb=lambda: rgb,
        )

    class FakeRx:
        stereo_pairs = ()  # no stereo rendition

        def __aiter__(self) -> Any:
            async def gen() -> Any:
                for x in (item("video", 100, 1), item("audio", 150, 0), item("video", 200, 2)):
                    yield x
            return gen()

    frames = [f async for f in feed_from_receiver(FakeRx())]
    assert [f.rtp_timestamp for f in frames] == [100, 200]
    assert frames[0].stream_id == "video-00000abc" and frames[0].image is rgb
    assert frames[1].origin_ns == 1_700_000_000 * 10**9 + 2
    assert frames[1].overlay["frame_number"] == "2"
    assert frames[0].overlay["patient_name"] == "Doe^Jane"
