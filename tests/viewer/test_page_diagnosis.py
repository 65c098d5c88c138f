"""The viewer page never sits on "connecting": its diagnosis, run with node, says what and why.

``viewer.js`` keeps the decision in a pure function, ``rtsDiagnose(situation)``, that the
page calls once a second (``watchdog``) and shows in ``#diag``; node loads the same file
(it exports the function when ``module`` exists and runs the page only when ``document``
does). A headless Chromium case would need ICE to fail for real and wait for it; the
function is the whole of the logic, so it is tested here, and the wiring by reading the page.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.peers import require_program

STATIC = Path(__file__).resolve().parents[2] / "rtstream" / "viewer" / "static"
JS = STATIC / "viewer.js"


def node(expr: str) -> Any:
    exe = require_program("node")
    script = f"const m = require({json.dumps(str(JS))}); console.log(JSON.stringify({expr}));"
    out = subprocess.run([exe, "-e", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def diagnose(**situation: Any) -> Any:
    base = {"connState": "connecting", "everConnected": False, "sinceConnectMs": 0,
            "lastFrameAgoMs": 0, "candidates": ["10.99.0.1"], "pageHost": "10.99.0.1:8080",
            "streamListed": True}
    return node(f"m.rtsDiagnose({json.dumps({**base, **situation})})")


def test_limits_are_at_most_ten_seconds() -> None:
    limits = node("[m.CONNECT_TIMEOUT_MS, m.STALL_MS]")
    assert all(0 < v <= 10_000 for v in limits), limits


def test_still_connecting_is_not_yet_an_error() -> None:
    assert diagnose(sinceConnectMs=5_000) is None


@pytest.mark.parametrize("situation", [
    {"sinceConnectMs": 10_000},                       # no pair after 10 s
    {"sinceConnectMs": 10_000, "connState": "checking"},
    {"connState": "failed", "sinceConnectMs": 2_000},  # ICE gave up early
])
def test_no_route_to_the_candidates_names_the_settings(situation: dict[str, Any]) -> None:
    d = diagnose(**situation)
    assert d is not None
    text = " ".join(d.values())
    assert "10.99.0.1" in d["cause"]  # the candidates the browser could not reach
    for needle in ("--http", "--ice-interface", "--ice-server"):
        assert needle in d["fix"], text


@pytest.mark.parametrize("situation", [
    {"connState": "connected", "everConnected": True, "lastFrameAgoMs": 10_000},
    {"connState": "connected", "everConnected": True, "streamListed": False},
    {"connState": "failed", "everConnected": True},
])
def test_stream_gone_names_the_sdp(situation: dict[str, Any]) -> None:
    d = diagnose(sinceConnectMs=60_000, **situation)
    assert d is not None and "--sdp" in d["fix"], d
    assert "--ice-interface" not in d["fix"]


def test_playing_is_not_an_error() -> None:
    assert diagnose(connState="connected", everConnected=True, sinceConnectMs=60_000,
                    lastFrameAgoMs=40) is None


def test_candidates_are_read_from_the_answer() -> None:
    sdp = ("v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n"
           "a=candidate:2 1 udp 2130706431 10.99.0.1 40001 typ host\r\na=mid:0\r\n")
    assert node(f"m.rtsCandidates({json.dumps(sdp)})") == ["127.0.0.1", "10.99.0.1"]


def test_the_page_runs_the_watchdog_and_has_where_to_say_it() -> None:
    js = JS.read_text()
    assert "setInterval(watchdog, 1000)" in js and "rtsDiagnose({" in js
    assert 'id="diag"' in (STATIC / "index.html").read_text()


# -- one real case in Chromium: the page is reachable, the viewer's ICE candidates are not --


async def _unreachable_ice_body() -> dict[str, Any]:
    """Viewer in a namespace of its own, serving on a veth, ICE told to use its ``lo``.

    The browser (in the test's namespace, across the veth) loads the page but its
    connectivity checks to the viewer's 127.0.0.1 candidate reach its own loopback: ICE
    can never succeed, which is what a viewer bound to the wrong interface looks like.
    """
    import os
    import sys

    from playwright.async_api import async_playwright

    from tests.peers import wait_for_tcp
    from tests.viewer.conftest import CHROMIUM, CHROMIUM_ARGS

    ns = f"rtsdiag-{os.getpid()}"
    token = "diagnosis-test-token"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", ns)
    proc = None
    try:
        ip("link", "add", "rtsx0", "type", "veth", "peer", "name", "rtsx1")
        ip("link", "set", "rtsx1", "netns", ns)
        ip("addr", "add", "10.99.0.2/24", "dev", "rtsx0")
        ip("link", "set", "rtsx0", "up")
        ip("-n", ns, "addr", "add", "10.99.0.1/24", "dev", "rtsx1")
        ip("-n", ns, "link", "set", "rtsx1", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "rtstream", "view",
             "--test-pattern", "--size", "160x120", "--fps", "10", "--token", token,
             "--http", "10.99.0.1:8080", "--ice-interface", "lo"],
            cwd=STATIC.parents[2], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_tcp(8080, host="10.99.0.1", timeout=60)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                              headless=True)
            try:
                page = await (await browser.new_context()).new_page()
                await page.goto(f"http://10.99.0.1:8080/?token={token}")
                await page.wait_for_function("window.rtsViewer && window.rtsViewer.diagnosis",
                                             timeout=30_000)
                return {
                    "diag": await page.inner_text("#diag"),
                    "visible": await page.is_visible("#diag"),
                    "conn": await page.inner_text("#conn"),
                    "candidates": await page.evaluate("window.rtsViewer.candidates"),
                }
            finally:
                await browser.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_chromium_says_why_ice_fails() -> None:
    from tests.viewer.netns import run_in_netns

    require_program("chromium")
    res = run_in_netns("tests.viewer.test_page_diagnosis:_unreachable_ice_body", {}, timeout=120)
    assert res["visible"] and res["conn"] == "failed", res
    assert "No connection to the viewer's media" in res["diag"], res
    assert "127.0.0.1" in res["diag"] and "--http" in res["diag"], res
    assert "--ice-interface" in res["diag"], res
