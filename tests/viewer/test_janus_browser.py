"""Many viewers through Janus, for real: rtstream feeds a Janus Streaming mountpoint and
headless Chromium watches it through Janus, in a namespace of its own.

The namespace (:func:`tests.viewer.netns.run_in_netns` with ``veth=True``) holds ``lo``
and a veth end carrying 127.0.0.2, the one interface Janus may offer
(``ice_enforce_list``): Janus skips loopback interfaces, so without it no candidate pair
exists. Real Janus 1.1.2, real Orthanc, real Chromium; the body returns what it saw and
the test asserts on it: the page watches through Janus (rtstream serves no peer
connection), the video has the stream's size and advances at >= 25 fps for 10 s, the
overlay shows the sender's patient, the latency readout works, a snapshot lands in
Orthanc with that frame's pixels; then Janus is killed, rtstream keeps running, Janus is
started again, rtstream feeds it again and a reloaded page plays.
"""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import VLEndoscopicImageStorage

from tests.peers import require_program
from tests.viewer.conftest import CHROMIUM, CHROMIUM_ARGS, OVERLAY, make_pattern
from tests.viewer.netns import VETH, run_in_netns

WIDTH, HEIGHT, FPS = 640, 360, 30
MEASURE_S = 10.0

_PROBE = (
    "() => ({frames: window.rtsViewer.framesPresented, t: performance.now(),"
    " w: document.getElementById('video').videoWidth,"
    " h: document.getElementById('video').videoHeight, via: window.rtsViewer.via})"
)
_PLAYING = (
    "window.rtsViewer && window.rtsViewer.via === 'janus' && "
    "window.rtsViewer.framesPresented > 10 && window.rtsViewer.shown !== null"
)


async def _wait(cond: Any, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.1)


# In the page: for a few presented frames, the source RTP timestamp the page names (through
# the offset it learnt) and 8x8 block means of the picture drawn from the video element.
_GRAB = """() => new Promise((resolve) => {
  const v = document.getElementById('video'), c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d', {willReadFrequently: true});
  const out = [], B = 8, bw = (c.width / B) | 0, bh = (c.height / B) | 0;
  let n = 0;
  const cb = (now, md) => {
    const s = window.rtsViewer;
    if (s.rtpOffset !== null && md.rtpTimestamp !== undefined && n++ % 7 === 0) {
      g.drawImage(v, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data, m = new Array(bw * bh).fill(0);
      for (let y = 0; y < bh * B; y++) for (let x = 0; x < bw * B; x++) {
        const i = (y * c.width + x) * 4;
        m[((y / B) | 0) * bw + ((x / B) | 0)] += d[i] + d[i + 1] + d[i + 2];
      }
      out.push({rtp: (md.rtpTimestamp - s.rtpOffset) >>> 0, blocks: m.map((x) => x / (B * B * 3))});
    }
    if (out.length < 8) v.requestVideoFrameCallback(cb); else resolve(out);
  };
  v.requestVideoFrameCallback(cb);
})"""


def _nearest_frames(feed: Any, grabs: list[dict[str, Any]]) -> list[int | None]:
    """For each grabbed picture: how many frames away from the one the page named is the
    kept frame it looks most like (0: the page named the frame on screen)."""
    import numpy as np

    order = feed.kept()
    out: list[int | None] = []
    for grab in grabs:
        if grab["rtp"] not in order:
            out.append(None)
            continue
        i = order.index(grab["rtp"])
        seen = np.asarray(grab["blocks"], dtype=np.float64)
        best, best_err = None, float("inf")
        for k in range(max(0, i - 3), min(len(order), i + 4)):
            img = feed.frame_at(order[k]).astype(np.float64)
            h, w = (img.shape[0] // 8) * 8, (img.shape[1] // 8) * 8
            blocks = img[:h, :w].mean(axis=2).reshape(h // 8, 8, w // 8, 8).mean(axis=(1, 3))
            err = float(np.abs(blocks.ravel() - seen).mean())
            if err < best_err:
                best, best_err = k - i, err
        out.append(best)
    return out


async def _until(page: Any, cond: str, timeout_ms: int, janus: Any) -> None:
    """``page.wait_for_function``, failing with what the page and Janus knew."""
    try:
        await page.wait_for_function(cond, timeout=timeout_ms)
    except Exception as exc:
        state = await page.evaluate(
            "() => { const s = window.rtsViewer || {}; return {via: s.via, conn: s.connState,"
            " frames: s.framesPresented, offset: s.rtpOffset, arrivals: (s.arrivals||[]).length,"
            " votes: s.offsetVotes ? [...s.offsetVotes.entries()].slice(0, 8) : null,"
            " shown: !!s.shown, lat: (s.latencies||[]).length, clock: s.clockOffsetMs,"
            " cands: s.candidates, diag: s.diagnosis,"
            " err: document.getElementById('snap-result').textContent} }")
        log = "\n".join(line for line in janus.log_path.read_text(errors="replace").splitlines()
                        if "session" not in line.lower() and "handle" not in line.lower()
                        and "No WebRTC media" not in line)[-4000:]
        raise AssertionError(f"page never got to {cond!r}: {state}\n--- janus ---\n{log}") from exc


async def _body(artifacts: str, workdir: str) -> dict[str, Any]:
    """Runs inside the namespace; returns measurements for the test to assert on."""
    import pydicom
    from playwright.async_api import async_playwright

    from rtstream.pacs.store import StoreClient, StoreConfig
    from rtstream.viewer.encoder import EncoderConfig
    from rtstream.viewer.janus import FeedState, JanusConfig, JanusFeeder
    from rtstream.viewer.server import SnapshotReply, ViewerConfig, ViewerServer
    from rtstream.viewer.snapshots import PatternSnapshots
    from tests.orthanc import Orthanc
    from tests.viewer.janus_peer import MOUNTPOINT, SECRET, Janus

    out: dict[str, Any] = {}
    feed = make_pattern(width=WIDTH, height=HEIGHT, fps=FPS)
    images: dict[str, bytes] = {}
    snapped: list[dict[str, Any]] = []
    janus = Janus(Path(workdir) / "janus", enforce=VETH)
    await asyncio.to_thread(janus.start)
    orthanc = Orthanc(Path(workdir) / "orthanc")
    await asyncio.to_thread(orthanc.start)
    store = StoreClient(StoreConfig.from_target(orthanc.target, outbox=Path(workdir) / "outbox"))
    await store.__aenter__()
    archive = PatternSnapshots(feed, store)

    async def snapshot(stream: str, rtp: int) -> SnapshotReply:
        image = feed.frame_at(rtp)
        result = await archive(stream, rtp)
        if image is not None and result.sop_instance_uid:
            images[result.sop_instance_uid] = image.tobytes()
        snapped.append({"stream": stream, "rtp": rtp, "uid": result.sop_instance_uid,
                        "ok": result.ok, "error": result.error})
        return result

    cfg = ViewerConfig(port=0, encoder=EncoderConfig(bitrate=2_000_000, fps=FPS,
                                                     keyframe_interval_s=1.0))
    try:
        async with ViewerServer(cfg, feed, snapshot) as srv:
            stream = await srv.wait_stream(timeout=10)
            jcfg = JanusConfig(url=janus.url, mountpoint=MOUNTPOINT, secret=SECRET,
                               check_interval_s=0.5)
            async with JanusFeeder(jcfg, srv.registry, stream) as feeder:
                srv.add_janus(feeder)
                async with async_playwright() as p:
                    browser = await p.chromium.launch(executable_path=CHROMIUM,
                                                      args=CHROMIUM_ARGS, headless=True)
                    try:
                        ctx = await browser.new_context(viewport={"width": 1280, "height": 760},
                                                        permissions=["camera", "microphone"])
                        page = await ctx.new_page()
                        page.on("console", lambda m: print("page:", m.type, m.text))
                        await page.goto(srv.url)
                        await _until(page, _PLAYING + " && window.rtsViewer.latencies.length > 0",
                                     30_000, janus)
                        first = await page.evaluate(_PROBE)
                        await asyncio.sleep(MEASURE_S)
                        last = await page.evaluate(_PROBE)
                        out["fps"] = (last["frames"] - first["frames"]) / (
                            (last["t"] - first["t"]) / 1000)
                        out["video_size"] = [last["w"], last["h"]]
                        out["via"] = last["via"]
                        out["direct_peers"] = len(srv.peers)
                        info = await asyncio.to_thread(
                            janus.streaming, {"request": "info", "id": MOUNTPOINT,
                                              "secret": SECRET})
                        out["janus_viewers"] = info["info"]["viewers"]
                        out["overlay_name"] = await page.inner_text("#ov-name")
                        out["overlay_frame"] = await page.inner_text("#ov-frame")
                        out["latencies"] = await page.evaluate(
                            "window.rtsViewer.latencies.slice(-300)")
                        out["matched"] = await page.evaluate(
                            "[window.rtsViewer.matched, window.rtsViewer.lateMatched, "
                            "window.rtsViewer.rtpOffset]")
                        out["codec_text"] = await page.inner_text("#s-codec")
                        out["frame_named_vs_shown"] = _nearest_frames(
                            feed, await page.evaluate(_GRAB))
                        await page.click("#snap")
                        await page.wait_for_selector("#snap-result.ok, #snap-result.err",
                                                     timeout=15_000)
                        out["snapshot_text"] = await page.inner_text("#snap-result")
                        out["snapshot_page"] = await page.evaluate("window.rtsViewer.snapshots")
                        await page.screenshot(path=str(Path(artifacts) / "viewer-janus.png"))
                        out["screenshot"] = str(Path(artifacts) / "viewer-janus.png")

                        # Janus dies: rtstream goes on, and feeds it again when it is back.
                        frames_before = srv.streams[stream].frames
                        await asyncio.to_thread(janus.kill)
                        await _wait(lambda: feeder.state is FeedState.JANUS_DOWN, 15, "down")
                        out["state_while_down"] = feeder.state.value
                        await asyncio.sleep(2)
                        out["frames_while_down"] = srv.streams[stream].frames - frames_before
                        await asyncio.to_thread(janus.start)
                        await _wait(lambda: feeder.state is FeedState.FEEDING, 15, "back")
                        out["janus_losses"] = feeder.stats.janus_losses
                        out["janus_returns"] = feeder.stats.janus_returns
                        await page.reload()
                        await _until(page, _PLAYING, 30_000, janus)
                        again = await page.evaluate(_PROBE)
                        await asyncio.sleep(3)
                        later = await page.evaluate(_PROBE)
                        out["fps_after_restart"] = (later["frames"] - again["frames"]) / (
                            (later["t"] - again["t"]) / 1000)
                        out["overlay_name_after"] = await page.inner_text("#ov-name")
                    finally:
                        await browser.close()
                out["feeder"] = {k: v for k, v in vars(feeder.stats).items()
                                 if k != "packetizer"}
                out["packetizer"] = vars(feeder.stats.packetizer)
        await store.aclose()
        out["snapped"] = snapped
        out["orthanc"] = []
        for uid in await asyncio.to_thread(orthanc.sop_instance_uids):
            ds = pydicom.dcmread(io.BytesIO(await asyncio.to_thread(orthanc.file, uid)))
            out["orthanc"].append({
                "uid": uid, "sop_class": str(ds.SOPClassUID),
                "patient_name": str(ds.PatientName), "size": [int(ds.Rows), int(ds.Columns)],
                "pixels_equal_frame": ds.PixelData == images.get(uid),
            })
    finally:
        await asyncio.to_thread(orthanc.stop)
        await asyncio.to_thread(janus.stop)
    return out


@pytest.mark.netns
@pytest.mark.peer("chromium")
@pytest.mark.peer("janus")
@pytest.mark.timeout(180)
def test_viewer_through_janus_in_chromium(artifacts_dir: Path, tmp_path: Path) -> None:
    require_program("chromium")
    require_program("Orthanc")
    require_program("janus")
    res = run_in_netns("tests.viewer.test_janus_browser:_body",
                       {"artifacts": str(artifacts_dir), "workdir": str(tmp_path)},
                       timeout=170, veth=True)

    # The page watched through Janus: rtstream served no peer connection, Janus one.
    assert res["via"] == "janus" and res["codec_text"] == "H264 via Janus"
    assert res["direct_peers"] == 0 and res["janus_viewers"] == 1
    assert res["video_size"] == [WIDTH, HEIGHT]
    assert res["fps"] >= 25, (res["fps"], res["feeder"])

    assert res["overlay_name"] == OVERLAY["patient_name"]
    assert int(res["overlay_frame"]) > 0
    assert len(res["latencies"]) > 100, res["matched"]
    # The frame the page names (overlay, latency, snapshot) is the one on screen.
    assert res["frame_named_vs_shown"] == [0] * 8, res["frame_named_vs_shown"]

    (snap,) = res["snapped"]
    assert snap["ok"], snap
    assert res["snapshot_text"] == "stored: " + snap["uid"]
    assert res["snapshot_page"][-1]["rtp_timestamp"] == snap["rtp"]
    (stored,) = res["orthanc"]
    assert stored["uid"] == snap["uid"]
    assert stored["sop_class"] == VLEndoscopicImageStorage
    assert stored["patient_name"] == OVERLAY["patient_name"]
    assert stored["size"] == [HEIGHT, WIDTH] and stored["pixels_equal_frame"] is True
    assert os.path.getsize(res["screenshot"]) > 10_000

    # Janus killed and started again: rtstream kept going and fed it again.
    assert res["state_while_down"] == "janus-down"
    assert res["frames_while_down"] > 0
    assert res["janus_losses"] >= 1 and res["janus_returns"] >= 1
    assert res["fps_after_restart"] >= 20, res
    assert res["overlay_name_after"] == OVERLAY["patient_name"]
    assert res["packetizer"]["fragments"] > 0 and res["feeder"]["data_messages"] > 0
    lat = sorted(res["latencies"])
    print(f"through Janus: fps {res['fps']:.1f}, latency p50 {lat[len(lat) // 2]:.1f} ms "
          f"p95 {lat[int(len(lat) * 0.95)]:.1f} ms, feeder {res['feeder']}")
