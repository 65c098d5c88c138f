"""Findings of a live analysis reach the page in Chromium and are drawn over their frame.

Inside a loopback-only namespace: ``rtstream send`` (a real process, the test source's
ultrasound sector) -> Receiver running ``examples/bright_band.py:detect`` (loaded the way
``--analyze`` loads it) -> viewer -> headless Chromium. The page logs, for every frame it
shows, the RTP timestamp of that frame and of the finding set it drew; the test checks
that every drawn set is the frame's own or an earlier one within the hold time (never a
later frame's), that most are the frame's own, and that the drawn sets are those the
analysis produced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.peers import require_program
from tests.viewer.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.viewer.netns import run_in_netns

HOLD = 45000  # FINDINGS_HOLD of viewer.js


async def _body(workdir: str, artifacts: str) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    from rtstream.commands._analysis_args import load_callable
    from rtstream.receiver import Receiver, ReceiverConfig
    from rtstream.viewer.encoder import Codec, EncoderConfig
    from rtstream.viewer.server import (
        ViewerConfig,
        ViewerServer,
        feed_from_receiver,
        findings_to_viewer,
    )
    from tests.net.test_analysis import rtstream_send

    detect = load_callable("examples/bright_band.py:detect")
    out: dict[str, Any] = {}
    with rtstream_send(Path(workdir), "640x360@30") as sdp:
        rx = Receiver(ReceiverConfig(sdp=str(sdp)))
        analyzer = rx.analyze(detect)
        produced: dict[int, int] = {}
        analyzer.on_findings(lambda fs: produced.__setitem__(fs.rtp_timestamp, len(fs.findings)))
        async with rx:
            cfg = ViewerConfig(port=0, encoder=EncoderConfig(codec=Codec.H264,
                                                              bitrate=2_000_000, fps=30))
            async with ViewerServer(cfg, feed_from_receiver(rx), None) as srv:
                analyzer.on_findings(findings_to_viewer(srv))
                async with async_playwright() as p:
                    browser = await p.chromium.launch(executable_path=CHROMIUM,
                                                      args=CHROMIUM_ARGS, headless=True)
                    try:
                        ctx = await browser.new_context(viewport={"width": 1280, "height": 760},
                                                        permissions=["camera", "microphone"])
                        page = await ctx.new_page()
                        await page.goto(srv.url)
                        await page.wait_for_function(
                            "window.rtsViewer && window.rtsViewer.findingsLog"
                            ".filter(x => x.findings !== null).length > 90", timeout=40_000)
                        out["log"] = await page.evaluate("window.rtsViewer.findingsLog")
                        out["received"] = await page.evaluate("window.rtsViewer.findingsReceived")
                        out["painted"] = await page.evaluate(
                            "(() => { const c = document.getElementById('findings');"
                            " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                            " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++;"
                            " return n; })()")
                        shot = Path(artifacts) / "viewer-findings.png"
                        await page.screenshot(path=str(shot))
                        await page.click("#fd-toggle")
                        out["hidden"] = await page.evaluate(
                            "document.getElementById('findings').classList.contains('hidden')")
                    finally:
                        await browser.close()
        out["produced"] = {str(k): v for k, v in produced.items()}
        out["stats"] = rx.stats["analysis"]
        out["lost"] = rx.stats["packets_lost"]
    return out


@pytest.mark.netns
@pytest.mark.peer("chromium")
@pytest.mark.timeout(150)
def test_findings_drawn_in_sync_in_chromium(artifacts_dir: Path, tmp_path: Path) -> None:
    require_program("chromium")
    res = run_in_netns("tests.viewer.test_findings_browser:_body",
                       {"workdir": str(tmp_path), "artifacts": str(artifacts_dir)}, timeout=140)
    produced = {int(k): v for k, v in res["produced"].items()}
    drawn = [e for e in res["log"] if e["findings"] is not None]
    assert len(drawn) > 90 and res["received"] > 90
    for e in drawn:
        age = (e["frame"] - e["findings"]) & 0xFFFFFFFF
        assert age <= HOLD, e  # the frame's own set or an earlier one, never a later frame's
        assert e["findings"] in produced and e["n"] == produced[e["findings"]] >= 1, e
    exact = sum(e["frame"] == e["findings"] for e in drawn) / len(drawn)
    print(f"findings drawn over their own frame: {exact:.1%} of {len(drawn)}; "
          f"analysis {res['stats']}")
    assert exact >= 0.5, (exact, res["stats"])
    assert res["painted"] > 100  # the box and its caption are on the canvas
    assert res["hidden"] is True
    assert res["lost"] == 0




# -- which set the page draws over a frame (pure; node) ------------------------------------


@pytest.mark.peer("node")
def test_page_picks_the_frames_own_set_else_the_latest_earlier_one() -> None:
    import json
    import subprocess

    exe = require_program("node")
    js = Path(__file__).resolve().parents[2] / "rtstream" / "viewer" / "static" / "viewer.js"
    script = f"""const m = require({json.dumps(str(js))});
      const sets = new Map([[4294966000, {{rtp: 4294966000}}], [1000, {{rtp: 1000}}],
                            [4000, {{rtp: 4000}}]]);
      const pick = (f) => {{ const s = m.rtsFindingsFor(sets, f >>> 0); return s && s.rtp; }};
      console.log(JSON.stringify([pick(1000), pick(3999), pick(4000), pick(4001),
        pick(4000 + m.FINDINGS_HOLD), pick(4001 + m.FINDINGS_HOLD), pick(999), pick(500)]));"""
    out = subprocess.run([exe, "-e", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    # own set; the latest earlier one (across the 2^32 wrap too); never a later frame's;
    # nothing older than the hold time
    assert json.loads(out.stdout) == [1000, 1000, 4000, 4000, 4000, None, 4294966000,
                                      4294966000]
