"""WHIP (RFC 9725) publishing of the shared encode, against a WHIP endpoint in the suite.

The end-to-end body runs in a namespace holding only loopback (ICE stays on ``lo``): a
viewer on the synthetic feed, one browser-less viewer (an aiortc client using the page's
``/api/offer``) and a :class:`WhipPublisher` to :class:`tests.viewer.whip_server.WhipServer`,
which decodes what it receives. Then ``rtstream view --test-pattern --whip`` does the same
from the command line and must DELETE its session when stopped.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rtstream.errors import ConfigError, RemoteProtocolError
from rtstream.viewer.encoder import EncoderConfig, EncoderRegistry
from rtstream.viewer.whip import WhipPublisher
from tests.viewer.conftest import make_pattern
from tests.viewer.netns import ROOT, run_in_netns

W, H = 320, 240
WHIP_TOKEN = "whip-secret-token"
VIEW_TOKEN = "viewer-secret-token"


async def _wait(cond: Any, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)
    del what


async def _aiortc_viewer(base: str, sizes: list[tuple[int, int]]) -> Any:
    """A browser-less viewer: offers recvonly video + the overlay channel, like the page."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    from rtstream.viewer.rtc import add_loopback_candidates

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("overlay")

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def consume() -> None:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                sizes.append((frame.width, frame.height))

        asyncio.ensure_future(consume())

    offer = await pc.createOffer()
    await add_loopback_candidates(pc)  # before setLocalDescription, which gathers
    await pc.setLocalDescription(offer)
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer " + VIEW_TOKEN}) as s:
        body = {"stream": "test", "type": "offer", "sdp": pc.localDescription.sdp}
        async with s.post(base + "/api/offer", json=body) as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    return pc


async def _body() -> dict[str, Any]:
    """Runs inside the namespace; returns what the test asserts on."""
    from rtstream.viewer.encoder import SharedEncoder
    from rtstream.viewer.server import ViewerConfig, ViewerServer
    from tests.peers import free_port
    from tests.viewer.whip_server import WhipServer

    out: dict[str, Any] = {}
    before = SharedEncoder.created
    cfg = ViewerConfig(port=0, token=VIEW_TOKEN,
                       encoder=EncoderConfig(bitrate=1_000_000, fps=30))
    async with WhipServer(WHIP_TOKEN) as whip_srv, \
            ViewerServer(cfg, make_pattern(width=W, height=H, fps=30)) as viewer:
        await viewer.wait_stream("test", timeout=10)
        viewer_sizes: list[tuple[int, int]] = []
        pc = await _aiortc_viewer(f"http://127.0.0.1:{viewer.port}", viewer_sizes)
        whip = WhipPublisher(whip_srv.endpoint(), stream_id="test", encoders=viewer.registry,
                             bearer_token=WHIP_TOKEN)
        await whip.start()
        await whip.wait_connected(timeout=20)
        (session,) = whip_srv.sessions.values()
        await _wait(lambda: len(session.sizes) >= 30 and len(viewer_sizes) >= 30, 20, "frames")
        out["encoders_made"] = SharedEncoder.created - before
        out["subscribers"] = [e.subscribers for e in viewer.registry.encoders.values()]
        out["whip_sizes"] = sorted(set(session.sizes))
        out["viewer_sizes"] = sorted(set(viewer_sizes))
        out["whip_frames"] = len(session.sizes)
        out["offer_has_loopback"] = "127.0.0.1" in session.offer
        out["offer_sendonly"] = "a=sendonly" in session.offer
        out["codecs"] = session.codecs
        out["resource"] = str(whip.resource_url)
        out["session_path"] = f"/whip/session/{session.id}"
        out["links"] = whip.ice_server_links
        out["stats"] = whip.stats()
        await whip.stop()
        out["deleted"] = session.deleted
        out["subscribers_after_stop"] = [e.subscribers for e in viewer.registry.encoders.values()]

        # A refused publisher (wrong token) leaves nothing subscribed.
        bad = WhipPublisher(whip_srv.endpoint(), stream_id="test", encoders=viewer.registry,
                            bearer_token="wrong-token")
        try:
            await bad.start()
            out["bad"] = "started"
        except RemoteProtocolError as exc:
            out["bad"] = [exc.field, str(exc)]
        out["subscribers_after_bad"] = [e.subscribers for e in viewer.registry.encoders.values()]
        await pc.close()
        out["encoders_made_total"] = SharedEncoder.created - before

        # The command line: rtstream view --test-pattern --whip URL --whip-token T.
        http = free_port(kind=__import__("socket").SOCK_STREAM)
        known = set(whip_srv.sessions)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rtstream", "view", "--test-pattern", "--http",
            f"127.0.0.1:{http}", "--token", VIEW_TOKEN, "--size", f"{W}x{H}", "--fps", "30",
            "--bitrate", "1M", "--whip", whip_srv.endpoint("cli"), "--whip-token", WHIP_TOKEN,
            cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await _wait(lambda: set(whip_srv.sessions) - known, 30, "CLI session")
            (cli_id,) = set(whip_srv.sessions) - known
            cli = whip_srv.sessions[cli_id]
            await _wait(lambda: len(cli.sizes) >= 20, 30, "CLI frames")
            out["cli_sizes"] = sorted(set(cli.sizes))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            assert proc.stdout is not None
            out["cli_output"] = (await proc.stdout.read()).decode(errors="replace")[-3000:]
        out["cli_rc"] = proc.returncode
        out["cli_deleted"] = cli.deleted
        out["requests"] = whip_srv.requests
    return out


@pytest.mark.netns
@pytest.mark.timeout(90)
def test_whip_publishes_the_shared_encode() -> None:
    res = run_in_netns("tests.viewer.test_whip:_body", {}, timeout=80)
    print({k: v for k, v in res.items() if k not in ("cli_output", "requests")})

    # The WHIP endpoint decodes frames of the stream's size, as does the aiortc viewer.
    assert res["whip_sizes"] == [[W, H]] and res["whip_frames"] >= 30
    assert res["viewer_sizes"] == [[W, H]]
    # One shared encode serves the viewer and the WHIP publisher.
    assert res["encoders_made"] == 1 and res["subscribers"] == [2]
    assert res["encoders_made_total"] == 1
    assert res["codecs"][0] == "video/H264"
    assert res["offer_has_loopback"] and res["offer_sendonly"]
    # The relative Location was resolved against the endpoint; DELETE ended the session.
    assert res["resource"].endswith(res["session_path"])
    assert res["links"] and "ice-server" in res["links"][0]
    assert res["deleted"] is True and res["subscribers_after_stop"] == [1]
    assert res["bad"][0] == "WHIP POST status" and "401" in res["bad"][1]
    assert res["subscribers_after_bad"] == [1]
    # The command line publishes too, and DELETEs its session on SIGTERM.
    assert res["cli_sizes"] == [[W, H]], res["cli_output"]
    assert res["cli_rc"] == 0 and res["cli_deleted"] is True, res["cli_output"]
    methods = [(m, s) for m, _, s in res["requests"]]
    assert methods.count(("POST", 201)) == 2 and methods.count(("DELETE", 200)) == 2
    assert ("POST", 401) in methods


# -- signalling errors (no media; runs outside a namespace, nothing leaves 127.0.0.1) ----


async def test_whip_answers_other_than_201_are_errors() -> None:
    async def no_location(request: web.Request) -> web.Response:
        return web.Response(status=201, body=b"v=0\r\n", content_type="application/sdp")

    async def text_plain(request: web.Request) -> web.Response:
        return web.Response(status=201, text="v=0\r\n", headers={"Location": "/x"})

    async def not_sdp(request: web.Request) -> web.Response:
        return web.Response(status=201, body=b"<html>", content_type="application/sdp",
                            headers={"Location": "/x"})

    async def busy(request: web.Request) -> web.Response:
        ok = request.content_type == "application/sdp" and "Authorization" not in request.headers
        return web.Response(status=503 if ok else 400, text="busy")

    app = web.Application()
    for path, handler in (("/a", no_location), ("/b", text_plain), ("/c", not_sdp),
                          ("/d", busy)):
        app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    reg = EncoderRegistry(EncoderConfig(bitrate=1_000_000, fps=30))
    try:
        for path, field in (("/a", "WHIP Location"), ("/b", "WHIP Content-Type"),
                            ("/c", "WHIP answer"), ("/d", "WHIP POST status")):
            pub = WhipPublisher(f"http://127.0.0.1:{port}{path}", stream_id="s", encoders=reg,
                                offer_loopback=False)
            with pytest.raises(RemoteProtocolError) as err:
                await pub.start()
            assert err.value.field == field, path
            if path == "/d":
                assert "503" in str(err.value)
            assert pub.state == "closed"
        pub = WhipPublisher(f"http://127.0.0.1:{free_tcp_port()}/none", stream_id="s",
                            encoders=reg, offer_loopback=False)
        with pytest.raises(RemoteProtocolError) as err:
            await pub.start()
        assert err.value.field == "WHIP endpoint"
        assert [e.subscribers for e in reg.encoders.values()] == [0]
    finally:
        await reg.close()
        await runner.cleanup()


def free_tcp_port() -> int:
    import socket

    from tests.peers import free_port

    return free_port(kind=socket.SOCK_STREAM)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"endpoint_url": "ftp://x/whip"}, "whip.endpoint_url"),
        ({"endpoint_url": "whip"}, "whip.endpoint_url"),
        ({"bearer_token": "a b"}, "whip.bearer_token"),
        ({"ice_servers": ("stun.example:3478",)}, "whip.ice_servers"),
        ({"timeout": 0}, "whip.timeout"),
    ],
)
def test_whip_config_errors(kwargs: dict[str, Any], key: str) -> None:
    args: dict[str, Any] = {"endpoint_url": "https://sfu.example/whip"}
    args.update(kwargs)
    with pytest.raises(ConfigError) as err:
        WhipPublisher(args.pop("endpoint_url"), stream_id="s",
                      encoders=EncoderRegistry(EncoderConfig()), **args)
    assert err.value.key == key
