"""Network exposure is what the README says: `view` and `demo` listen on loopback only.

Each body runs in a network namespace of its own (:func:`tests.viewer.netns.run_in_netns`)
to which it adds a veth pair holding 10.99.0.1/24 and 10.99.0.2/24, addresses that exist
inside that namespace only: a viewer that gathered ICE candidates on every interface
would bind them, and nothing can leave the namespace. The body starts the real command,
makes a browser-less WebRTC offer with an aiortc peer (gathering on loopback, or the
named interface, and carrying a browser-style mDNS ``*.local`` candidate, which aioice
would resolve by opening port 5353), then lists the process's sockets with ``ss``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from tests.peers import require_program
from tests.viewer.netns import run_in_netns

VETH_ADDR = "10.99.0.1"
MDNS_CANDIDATE = (
    "a=candidate:3 1 udp 2122260223 2b3c4d5e-0f1a-4b2c-9d8e-7f6a5b4c3d2e.local 54321 "
    "typ host generation 0\r\n"
)


def _veth() -> None:
    for cmd in (
        ["ip", "link", "add", "rtsx0", "type", "veth", "peer", "name", "rtsx1"],
        ["ip", "addr", "add", f"{VETH_ADDR}/24", "dev", "rtsx0"],
        ["ip", "addr", "add", "10.99.0.2/24", "dev", "rtsx1"],
        ["ip", "link", "set", "rtsx0", "up"],
        ["ip", "link", "set", "rtsx1", "up"],
    ):
        subprocess.run(cmd, check=True, capture_output=True)


def _sockets(pid: int) -> dict[str, list[str]]:
    """Local ``addr:port`` of every UDP socket and TCP listener of process ``pid``."""
    out: dict[str, list[str]] = {}
    for kind, flags in (("udp", "-uapn"), ("tcp", "-tlpn")):
        lines = subprocess.run(["ss", "-H", flags], check=True, capture_output=True,
                               text=True).stdout.splitlines()
        out[kind] = [ln.split()[3] for ln in lines if f"pid={pid}," in ln]
    return out


async def _offer(url: str, client_addr: str, pid: int) -> dict[str, Any]:
    """Post an aiortc offer to the page's ``/api/offer``; return the answer's candidates."""
    from rtstream.viewer.rtc import gather_on

    parts = urllib.parse.urlsplit(url)
    token = urllib.parse.parse_qs(parts.query)["token"][0]
    base = f"{parts.scheme}://{parts.netloc}"
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video", direction="recvonly")
        pc.createDataChannel("overlay")
        offer = await pc.createOffer()
        await gather_on(pc, [client_addr])
        await pc.setLocalDescription(offer)
        sdp = pc.localDescription.sdp
        sdp = re.sub(r"(a=candidate:[^\r\n]*\r\n)", lambda m: m.group(1) + MDNS_CANDIDATE,
                     sdp, count=1)
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as s:
            for _ in range(300):
                async with s.post(base + "/api/offer", headers=headers,
                                  json={"sdp": sdp, "type": "offer"}) as r:
                    if r.status == 404:  # no stream yet
                        await asyncio.sleep(0.1)
                        continue
                    assert r.status == 200, await r.text()
                    answer = await r.json()
                    break
            else:
                raise AssertionError("the server never had a stream")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        for _ in range(50):
            if pc.iceConnectionState in ("completed", "failed"):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # let the server resolve (or not) the mDNS candidate
        return {"sockets": _sockets(pid), "ice": pc.iceConnectionState,
                "candidates": [ln for ln in answer["sdp"].splitlines()
                               if ln.startswith("a=candidate:")]}
    finally:
        await pc.close()


async def _body(args: list[str], client_addr: str) -> dict[str, Any]:
    _veth()
    with tempfile.TemporaryDirectory(prefix="rts-expose-") as tmp:
        cmd = [sys.executable, "-m", "rtstream", *args]
        cmd = [c.replace("{tmp}", tmp) for c in cmd]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=tmp, env={**os.environ, "HOME": tmp})
        seen: list[str] = []
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 90
            url = None
            while url is None and time.monotonic() < deadline:
                line = await asyncio.to_thread(proc.stdout.readline)
                if not line:
                    break
                seen.append(line)
                m = re.search(r"open (http://\S+)", line)
                if m:
                    url = m.group(1)
            assert url, "".join(seen)
            res = await _offer(url, client_addr, proc.pid)
            return {**res, "output": "".join(seen)}
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _addresses(res: dict[str, Any]) -> set[str]:
    return {a.rsplit(":", 1)[0].strip("[]") for kind in ("udp", "tcp")
            for a in res["sockets"][kind]}


def _check(res: dict[str, Any], allowed: set[str], *, udp_only: set[str] | None = None) -> None:
    socks = res["sockets"]
    assert res["ice"] == "completed", res  # the restricted viewer still connects
    assert socks["tcp"] and socks["udp"], res
    bad = _addresses(res) - allowed
    assert not bad, f"sockets bound beyond {allowed}: {socks}"
    assert not any(a.endswith(":5353") for a in socks["udp"]), f"an mDNS socket: {socks}"
    if udp_only is not None:
        ice = {a.rsplit(":", 1)[0] for a in socks["udp"]}
        assert ice <= udp_only, socks
    for cand in res["candidates"]:
        assert cand.split()[4] in allowed, res["candidates"]


VIEW = ["view", "--test-pattern", "--size", "160x120", "--fps", "10", "--token",
        "exposure-test-token"]


@pytest.fixture(autouse=True)
def _programs() -> None:
    require_program("ss")


def test_view_listens_on_loopback_only() -> None:
    res = run_in_netns("tests.test_exposure:_body",
                       {"args": [*VIEW, "--http", "127.0.0.1:0"], "client_addr": "127.0.0.1"})
    _check(res, {"127.0.0.1", "::1"})


def test_view_ice_on_the_named_interface() -> None:
    res = run_in_netns("tests.test_exposure:_body",
                       {"args": [*VIEW, "--http", "127.0.0.1:0", "--ice-interface", "rtsx0"],
                        "client_addr": VETH_ADDR})
    _check(res, {"127.0.0.1", VETH_ADDR}, udp_only={VETH_ADDR})
    assert all(c.split()[4] == VETH_ADDR for c in res["candidates"]), res["candidates"]


def test_view_served_on_an_interface_gathers_there() -> None:
    res = run_in_netns("tests.test_exposure:_body",
                       {"args": [*VIEW, "--http", f"{VETH_ADDR}:0"], "client_addr": VETH_ADDR})
    _check(res, {VETH_ADDR})


def test_demo_listens_on_loopback_only() -> None:
    res = run_in_netns(
        "tests.test_exposure:_body",
        {"args": ["demo", "--video", "320x240@10", "--http", "127.0.0.1:0",
                  "--archive-dir", "{tmp}/archive", "--outbox", "{tmp}/outbox",
                  "--duration", "60"],
         "client_addr": "127.0.0.1"},
        timeout=150,
    )
    _check(res, {"127.0.0.1", "::1"})


def test_unknown_ice_interface_lists_the_hosts() -> None:
    from rtstream.errors import ConfigError
    from rtstream.viewer.rtc import ice_addresses

    with pytest.raises(ConfigError, match=r"--ice-interface.*nosuch0.*lo \(127\.0\.0\.1"):
        ice_addresses("127.0.0.1", ["nosuch0"])
    assert ice_addresses("127.0.0.1") == ["127.0.0.1"]
    assert ice_addresses("0.0.0.0") is None
    assert ice_addresses("127.0.0.1", ["lo"])[0] == "127.0.0.1"


def test_mdns_candidates_are_dropped_from_offers() -> None:
    from rtstream.viewer.rtc import drop_mdns_candidates

    host = "a=candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host\r\n"
    assert drop_mdns_candidates("v=0\r\n" + MDNS_CANDIDATE + host) == "v=0\r\n" + host
    assert json.dumps(drop_mdns_candidates(host)) == json.dumps(host)


async def test_whip_offer_gathers_on_the_named_interface() -> None:
    from aiohttp import web

    from rtstream.errors import RemoteProtocolError
    from rtstream.viewer.encoder import EncoderConfig, EncoderRegistry
    from rtstream.viewer.whip import WhipPublisher

    offers: list[str] = []

    async def whip(request: web.Request) -> web.Response:
        offers.append(await request.text())
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/whip", whip)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    reg = EncoderRegistry(EncoderConfig(bitrate=1_000_000, fps=30))
    try:
        pub = WhipPublisher(f"http://127.0.0.1:{port}/whip", stream_id="s", encoders=reg,
                            ice_interfaces=["lo"])
        with pytest.raises(RemoteProtocolError):
            await pub.start()
    finally:
        await reg.close()
        await runner.cleanup()
    cands = [ln.split()[4] for ln in offers[0].splitlines() if ln.startswith("a=candidate:")]
    assert cands and set(cands) <= {"127.0.0.1", "::1"}, cands
