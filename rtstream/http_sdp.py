"""Serve a sender's SDP over HTTP: ``GET /sdp`` and ``GET /sdp/<mid>``.

PS3.22 §9 asks a sender's conformance statement to say how receivers obtain the SDP
objects; the informative example in PS3.2 Annex L uses an HTTP URL on the device
(``http://<device-ip>/SDP``). ``/sdp`` (and ``/SDP``) returns the whole session;
``/sdp/<mid>`` returns a session with only that flow (``VID``, ``VMETA``, ``AUD``,
``AMETA``), for receivers that subscribe to one flow at a time.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from aiohttp import web

from rtstream.errors import ConfigError
from rtstream.proto.sdp import SdpSession, write_sdp

log = logging.getLogger(__name__)

SDP_CONTENT_TYPE = "application/sdp"


class SdpHttpServer:
    """A tiny aiohttp server publishing one :class:`SdpSession`.

    Parameters
    ----------
    session : SdpSession
    host, port : str, int
        Where to listen (port 0 picks a free one; see :attr:`port` after start).
    """

    def __init__(self, session: SdpSession, host: str, port: int) -> None:
        self.session = session
        self.host = host
        self.port = port
        self._texts: dict[str, str] = {"": write_sdp(session)}
        for m in session.media:
            if m.mid:
                one = dataclasses.replace(session, media=(m,))
                self._texts[m.mid] = write_sdp(one)
        self._runner: web.AppRunner | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/sdp", self._whole)
        app.router.add_get("/SDP", self._whole)
        app.router.add_get("/sdp/{mid}", self._one)
        return app

    async def _whole(self, request: web.Request) -> web.Response:
        return web.Response(text=self._texts[""], content_type=SDP_CONTENT_TYPE)

    async def _one(self, request: web.Request) -> web.Response:
        mid = request.match_info["mid"]
        text = self._texts.get(mid)
        if text is None:
            known = ", ".join(k for k in self._texts if k)
            raise web.HTTPNotFound(text=f"no flow with mid {mid!r}; known: {known}\n")
        return web.Response(text=text, content_type=SDP_CONTENT_TYPE)

    async def start(self) -> None:
        """Start listening."""
        runner = web.AppRunner(self._app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError("http", f"{self.host}:{self.port}", f"a free address to listen on ({exc})") from None
        self._runner = runner
        server: Any = site._server
        if self.port == 0 and server is not None and getattr(server, "sockets", None):
            self.port = int(server.sockets[0].getsockname()[1])
        log.info("SDP served at http://%s:%d/sdp", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
