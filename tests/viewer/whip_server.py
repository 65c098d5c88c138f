"""A small WHIP endpoint (RFC 9725) for the tests: aiohttp signalling + an aiortc receiver.

``POST /whip/<room>`` with ``Content-Type: application/sdp`` and the right bearer token
creates a session: an aiortc answerer that decodes the incoming video track and records
every frame's size. The answer comes back as ``201 Created`` with a *relative*
``Location`` (``../session/<id>``, to check the publisher resolves it) and an ETag.
``DELETE /whip/session/<id>`` ends the session. 127.0.0.1 only; a 127.0.0.1 ICE candidate
is added to every answer (aioice leaves it out), as the viewer does.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from rtstream.viewer.rtc import add_loopback_candidates


@dataclass
class WhipSession:
    id: str
    pc: RTCPeerConnection
    offer: str
    sizes: list[tuple[int, int]] = field(default_factory=list)
    codecs: list[str] = field(default_factory=list)
    deleted: bool = False
    task: asyncio.Task[None] | None = None


class WhipServer:
    """The test's WHIP endpoint; ``sessions`` keeps every session ever made."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.sessions: dict[str, WhipSession] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.port = 0
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_post("/whip/{room}", self._post)
        app.router.add_delete("/whip/session/{id}", self._delete)
        self.app = app

    def endpoint(self, room: str = "room1") -> str:
        return f"http://127.0.0.1:{self.port}/whip/{room}"

    async def __aenter__(self) -> WhipServer:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for s in self.sessions.values():
            if s.task is not None:
                s.task.cancel()
            await s.pc.close()
        assert self._runner is not None
        await self._runner.cleanup()

    def _reply(self, request: web.Request, status: int, **kw: Any) -> web.Response:
        self.requests.append((request.method, request.path, status))
        return web.Response(status=status, **kw)

    async def _post(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._reply(request, 401, text="bad token")
        if request.content_type != "application/sdp":
            return self._reply(request, 415, text="application/sdp wanted")
        offer = await request.text()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        session = WhipSession(id=secrets.token_hex(6), pc=pc, offer=offer)

        @pc.on("track")
        def on_track(track: Any) -> None:
            async def consume() -> None:
                while True:
                    try:
                        frame = await track.recv()
                    except MediaStreamError:
                        return
                    session.sizes.append((frame.width, frame.height))

            session.task = asyncio.ensure_future(consume())

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        answer = await pc.createAnswer()
        await add_loopback_candidates(pc)
        await pc.setLocalDescription(answer)
        for t in pc.getTransceivers():
            session.codecs += [c.mimeType for c in t._codecs]  # negotiated codecs
        self.sessions[session.id] = session
        return self._reply(
            request, 201, body=pc.localDescription.sdp.encode(),
            headers={"Location": f"session/{session.id}", "ETag": f'"{session.id}"',
                     "Content-Type": "application/sdp",
                     "Link": '<stun:stun.invalid:3478>; rel="ice-server"'},
        )

    async def _delete(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._reply(request, 401, text="bad token")
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return self._reply(request, 404)
        session.deleted = True
        await session.pc.close()
        return self._reply(request, 200)
