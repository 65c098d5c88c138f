"""A 60 s soak: ``rtstream send`` -> ``rtstream view --sdp`` (receiver + shared encoder) ->
one WebRTC viewer (aiortc in this process), with file descriptor and memory checks.

Open fds and RSS of the sender and the viewer process are read from ``/proc`` after a
warm-up and at the end: fds must not grow, RSS may grow by less than 20 % (allocator and
encoder settling). The long run at 1080p30 with a plot is ``scripts/soak.py``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.peers import free_port, running, wait_for_tcp
from tests.reliability import ROOT, RTSTREAM, ProcSample, rtstream_env, sample_process

SOAK_S = 60.0
WARMUP_S = 10.0
TOKEN = "soak-token-0123456789"


async def _watch(port: int, seconds: float) -> dict[str, Any]:
    """Be a WebRTC viewer for ``seconds``; return frames decoded and the server's stats."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from rtstream.viewer.rtc import add_loopback_candidates

    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    frames = 0
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tasks: list[asyncio.Task[None]] = []

    async def consume(track: Any) -> None:
        nonlocal frames
        while True:
            await track.recv()
            frames += 1

    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
    pc.addTransceiver("video", direction="recvonly")
    async with aiohttp.ClientSession(headers=headers) as http:
        stream = None
        for _ in range(300):
            async with http.get(base + "/api/streams") as r:
                listed = await r.json()
            names = [s["id"] if isinstance(s, dict) else s for s in
                     (listed.get("streams", listed) if isinstance(listed, dict) else listed)]
            if names:
                stream = names[0]
                break
            await asyncio.sleep(0.1)
        assert stream is not None, "the viewer never saw the stream"
        await add_loopback_candidates(pc)
        await pc.setLocalDescription(await pc.createOffer())
        body = {"stream": stream, "sdp": pc.localDescription.sdp, "type": "offer"}
        async with http.post(base + "/api/offer", json=body) as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await asyncio.sleep(seconds)
        async with http.get(base + "/api/stats") as r:
            stats = await r.json()
    for t in tasks:
        t.cancel()
    await pc.close()
    return {"frames": frames, "stats": stats}


def test_soak_60s_send_view_webrtc_fds_and_memory(tmp_path: Path) -> None:
    env = rtstream_env()
    base = free_port(count=4, step=2)
    http = free_port(socket.SOCK_STREAM)
    sdp = tmp_path / "rtv.sdp"
    send = [*RTSTREAM, "send", "--dest", f"127.0.0.1:{base}", "--video", "320x240@30",
            "--duration", f"{SOAK_S + 10:.0f}", "--sdp-out", str(sdp),
            "--stats-json", str(tmp_path / "tx.json")]
    view = [*RTSTREAM, "view", "--sdp", str(sdp), "--http", f"127.0.0.1:{http}",
            "--token", TOKEN, "--fps", "30", "--bitrate", "1M"]
    samples: dict[str, list[ProcSample]] = {"send": [], "view": []}
    with running(send, log=tmp_path / "send.log", env=env, cwd=ROOT) as tx:
        for _ in range(400):
            if sdp.exists() and sdp.stat().st_size:
                break
            time.sleep(0.05)
        with running(view, log=tmp_path / "view.log", env=env, cwd=ROOT) as vw:
            wait_for_tcp(http)

            async def body() -> dict[str, Any]:
                watcher = asyncio.ensure_future(_watch(http, SOAK_S - 2))
                await asyncio.sleep(WARMUP_S)
                samples["send"].append(sample_process(tx.pid))
                samples["view"].append(sample_process(vw.pid))
                result = await watcher
                samples["send"].append(sample_process(tx.pid))
                samples["view"].append(sample_process(vw.pid))
                return result

            result = asyncio.run(body())
            assert vw.poll() is None and tx.poll() is None, "a process died during the soak"
    report = {k: [vars(s) for s in v] for k, v in samples.items()}
    stats = result["stats"]
    print(json.dumps({"samples": report, "frames_decoded": result["frames"],
                      "viewer_stats": stats}, default=str)[:3000])
    for name, (first, last) in samples.items():
        assert last.fds <= first.fds + 1, (name, first, last)  # +1: an idle keep-alive socket
        assert last.rss_kib < first.rss_kib * 1.2, (name, first, last)
    # the WebRTC viewer got the stream most of the time (30 fps for ~58 s, slack for ICE/DTLS)
    assert result["frames"] >= 30 * (SOAK_S - 2) * 0.5, result["frames"]


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-s"])
