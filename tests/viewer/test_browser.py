"""The viewer in a real browser: headless Chromium over CDP (Playwright), in a namespace
holding only loopback, so every ICE candidate and packet stays on ``lo``.

One test body (run by :func:`tests.viewer.netns.run_in_netns`) starts the server on a
synthetic feed, checks 401s, opens two viewers at once, measures the frame rate the page
sees over 10 s, reads the overlay, clicks snapshot -- stored into a real Orthanc running in
the same namespace -- and saves a screenshot; the test asserts on what it returns.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydicom.uid import VLEndoscopicImageStorage

from tests.peers import require_program
from tests.viewer.conftest import CHROMIUM, CHROMIUM_ARGS, OVERLAY, make_pattern
from tests.viewer.netns import run_in_netns

WIDTH, HEIGHT, FPS = 640, 360, 60
MEASURE_S = 10.0


async def _status(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> int:
    async with session.request(method, url, **kw) as resp:
        return resp.status


async def _body(artifacts: str, workdir: str, codec: str = "h264") -> dict[str, Any]:
    """Runs inside the namespace; returns measurements for the test to assert on.

    Orthanc runs inside the namespace too; snapshots take the real path: the pattern's
    kept frame -> wire RGB -> ``build_snapshot`` -> ``StoreClient`` outbox -> C-STORE.
    """
    import pydicom
    from playwright.async_api import async_playwright

    from rtstream.pacs.store import StoreClient, StoreConfig
    from rtstream.viewer.encoder import Codec, EncoderConfig, SharedEncoder
    from rtstream.viewer.server import SnapshotReply, ViewerConfig, ViewerServer
    from rtstream.viewer.snapshots import PatternSnapshots
    from tests.orthanc import Orthanc

    feed = make_pattern(width=WIDTH, height=HEIGHT, fps=FPS)
    snapped: list[dict[str, Any]] = []
    images: dict[str, bytes] = {}
    orthanc = Orthanc(Path(workdir) / "orthanc")
    await asyncio.to_thread(orthanc.start)
    store_cfg = StoreConfig.from_target(orthanc.target, outbox=Path(workdir) / "outbox")
    store = StoreClient(store_cfg)
    await store.__aenter__()
    archive = PatternSnapshots(feed, store)

    async def snapshot(stream: str, rtp: int) -> SnapshotReply:
        image = feed.frame_at(rtp)
        result = await archive(stream, rtp)
        if image is not None and result.sop_instance_uid:
            images[result.sop_instance_uid] = image.tobytes()
        snapped.append({"stream": stream, "rtp": rtp, "uid": result.sop_instance_uid,
                        "ok": result.ok, "error": result.error,
                        "shape": None if image is None else list(image.shape)})
        return result

    created_before = SharedEncoder.created
    cfg = ViewerConfig(
        port=0, encoder=EncoderConfig(codec=Codec(codec), bitrate=2_000_000, fps=FPS)
    )
    out: dict[str, Any] = {}
    async with ViewerServer(cfg, feed, snapshot) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        async with aiohttp.ClientSession() as s:
            out["unauth"] = {
                "page_missing": await _status(s, "GET", base + "/"),
                "page_wrong": await _status(s, "GET", base + "/?token=wrong-token-123"),
                "static_missing": await _status(s, "GET", base + "/static/viewer.js"),
                "streams_missing": await _status(s, "GET", base + "/api/streams"),
                "streams_wrong": await _status(
                    s, "GET", base + "/api/streams", headers={"Authorization": "Bearer nope"}
                ),
                "offer_missing": await _status(s, "POST", base + "/api/offer", json={"sdp": ""}),
                "snapshot_missing": await _status(
                    s, "POST", base + "/api/snapshot", json={"stream": "test", "rtp_timestamp": 1}
                ),
                "page_ok": await _status(s, "GET", srv.url),
            }
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            try:
                # Chromium gathers loopback candidates only for a page allowed to
                # enumerate networks, i.e. one holding camera/microphone permission.
                # One context (window) per viewer, so neither page is a hidden tab.
                pages = []
                for _ in range(2):
                    ctx = await browser.new_context(
                        viewport={"width": 1280, "height": 760},
                        permissions=["camera", "microphone"],
                    )
                    pages.append(await ctx.new_page())
                for page in pages:
                    page.on("console", lambda m: print("page:", m.type, m.text))
                    await page.goto(srv.url)
                for page in pages:
                    await page.wait_for_function(
                        "window.rtsViewer && window.rtsViewer.framesPresented > 10 && "
                        "window.rtsViewer.shown && window.rtsViewer.latencies.length > 0",
                        timeout=20_000,
                    )
                main = pages[0]
                probe = (
                    "() => ({frames: window.rtsViewer.framesPresented, t: performance.now(),"
                    " w: document.getElementById('video').videoWidth,"
                    " h: document.getElementById('video').videoHeight,"
                    " total: document.getElementById('video').getVideoPlaybackQuality()"
                    ".totalVideoFrames})"
                )
                first = [await pg.evaluate(probe) for pg in pages]
                enc = next(iter(srv.registry.encoders.values())).stats
                enc_first = (enc.frames_encoded, enc.frames_dropped)
                # Both viewers are connected now: the stream must still have one encoder.
                out["encoders_made"] = SharedEncoder.created - created_before
                out["registry"] = len(srv.registry.encoders)
                out["subscribers"] = [e.subscribers for e in srv.registry.encoders.values()]
                await asyncio.sleep(MEASURE_S)
                last = [await pg.evaluate(probe) for pg in pages]
                out["fps"] = [
                    (b["frames"] - a["frames"]) / ((b["t"] - a["t"]) / 1000)
                    for a, b in zip(first, last, strict=True)
                ]
                # what the encoder made and skipped meanwhile (frames/s, skipped frames)
                span = (last[0]["t"] - first[0]["t"]) / 1000
                out["encoded"] = ((enc.frames_encoded - enc_first[0]) / span,
                                  enc.frames_dropped - enc_first[1])
                out["video_size"] = [last[0]["w"], last[0]["h"]]
                out["total_frames"] = last[0]["total"]
                out["overlay_name"] = await main.inner_text("#ov-name")
                out["overlay_id"] = await main.inner_text("#ov-id")
                out["overlay_frame"] = await main.inner_text("#ov-frame")
                out["latencies"] = await main.evaluate("window.rtsViewer.latencies.slice(-300)")
                out["matched"] = await main.evaluate(
                    "[window.rtsViewer.matched, window.rtsViewer.lateMatched]"
                )
                out["jitter_buffer_ms"] = await main.evaluate("window.rtsViewer.jitterBufferMs")
                out["codec"] = await main.evaluate("window.rtsViewer.codec")
                await main.click("#snap")
                await main.wait_for_selector("#snap-result.ok, #snap-result.err", timeout=15_000)
                out["snapshot_text"] = await main.inner_text("#snap-result")
                out["snapshot_page"] = await main.evaluate("window.rtsViewer.snapshots")
                out["snapped"] = snapped
                shot = Path(artifacts) / f"viewer-{codec}.png"
                await main.screenshot(path=str(shot))
                out["screenshot"] = str(shot)
            finally:
                await browser.close()
        out["encoder_stats"] = [vars(e.stats) for e in srv.registry.encoders.values()]
        out["feed_fps"] = srv.streams["test"].fps
    out["encoders_made_total"] = SharedEncoder.created - created_before
    try:
        await store.aclose()
        out["outbox_left"] = sorted(p.name for p in (Path(workdir) / "outbox").glob("*.dcm"))
        # What Orthanc holds, through its REST API.
        out["orthanc_uids"] = await asyncio.to_thread(orthanc.sop_instance_uids)
        out["orthanc"] = []
        for uid in out["orthanc_uids"]:
            data = await asyncio.to_thread(orthanc.file, uid)
            ds = pydicom.dcmread(__import__("io").BytesIO(data))
            out["orthanc"].append({
                "uid": uid,
                "sop_class": str(ds.SOPClassUID),
                "patient_name": str(ds.PatientName),
                "size": [int(ds.Rows), int(ds.Columns)],
                "photometric": str(ds.PhotometricInterpretation),
                "pixels_equal_frame": ds.PixelData == images.get(uid),
                "referenced_rtv": str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID),
            })
        out["rtv_uid"] = archive.rtv_sop_instance_uid
    finally:
        await asyncio.to_thread(orthanc.stop)
    return out


@pytest.mark.netns
@pytest.mark.peer("chromium")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_viewer_in_chromium(artifacts_dir: Path, tmp_path: Path, codec: str) -> None:
    require_program("chromium")
    require_program("Orthanc")
    res = run_in_netns(
        "tests.viewer.test_browser:_body",
        {"artifacts": str(artifacts_dir), "workdir": str(tmp_path), "codec": codec},
    )

    assert all(v == 401 for k, v in res["unauth"].items() if k != "page_ok"), res["unauth"]
    assert res["unauth"]["page_ok"] == 200

    # One shared encode for two viewers.
    assert res["encoders_made"] == 1 and res["registry"] == 1
    assert res["subscribers"] == [2]
    assert res["encoders_made_total"] == 1

    assert res["codec"] == codec
    assert res["video_size"] == [WIDTH, HEIGHT]
    # Each viewer shows >= 25 fps of the 60 fps feed. On a machine too busy to encode
    # that many (the encoder then skips to the newest frame: 16 fps seen in a suite run
    # beside a busy loop), each shows at least 80% of what the encoder made.
    encoded_fps, skipped = res["encoded"]
    why = (res["fps"], res["encoded"], res["feed_fps"], res["encoder_stats"])
    if encoded_fps >= 25:
        assert all(f >= 25 for f in res["fps"]), why
    else:
        assert skipped > 0.25 * encoded_fps * MEASURE_S and encoded_fps >= 10, why
        assert all(f >= 0.8 * encoded_fps for f in res["fps"]), why

    assert res["overlay_name"] == OVERLAY["patient_name"]
    assert res["overlay_id"] == "ID " + OVERLAY["patient_id"]
    assert int(res["overlay_frame"]) > 0
    assert len(res["latencies"]) > 100, res["matched"]

    # The snapshot names the exact frame that was on screen and shows the UID.
    assert len(res["snapped"]) == 1
    snap = res["snapped"][0]
    assert snap["ok"], snap
    assert snap["stream"] == "test" and snap["shape"] == [HEIGHT, WIDTH, 3]
    assert res["snapshot_text"] == "stored: " + snap["uid"]
    assert res["snapshot_page"][-1]["rtp_timestamp"] == snap["rtp"]
    # ... and Orthanc (REST API) holds that instance, with that frame's pixels.
    assert res["orthanc_uids"] == [snap["uid"]]
    (stored,) = res["orthanc"]
    assert stored["sop_class"] == VLEndoscopicImageStorage
    assert stored["patient_name"] == OVERLAY["patient_name"]
    assert stored["size"] == [HEIGHT, WIDTH] and stored["photometric"] == "RGB"
    assert stored["pixels_equal_frame"] is True
    assert stored["referenced_rtv"] == res["rtv_uid"]
    assert res["outbox_left"] == []
    assert os.path.getsize(res["screenshot"]) > 10_000
    lat = sorted(res["latencies"])
    print(
        f"fps {res['fps']}, latency p50 {lat[len(lat) // 2]:.1f} ms "
        f"p95 {lat[int(len(lat) * 0.95)]:.1f} ms, jitter buffer {res['jitter_buffer_ms']}, "
        f"encoder {res['encoder_stats']}"
    )
