"""Serve a sender's SDP over HTTP: ``GET /sdp`` and ``GET /sdp/<mid>``.

PS3.22 §9 asks a sender's conformance statement to say how receivers obtain the SDP
objects; the informative example in PS3.2 Annex L uses an HTTP URL on the device
(``http://<device-ip>/SDP``). ``/sdp`` (and ``/SDP``) returns the whole session;
``/sdp/<mid>`` returns a session with only that flow (``VID``, ``VMETA``, ``AUD``,
``AMETA``), for receivers that subscribe to one flow at a time.

Given a :class:`~rtstream.control.metrics.Registry` the server also answers
``GET /metrics`` (Prometheus text 0.0.4; ``rtstream send --http`` exports the sender's
counters there, see ``docs/observability.md``). The session can be replaced while the
server runs (:meth:`SdpHttpServer.set_session`), so one server outlives the senders a
``stream_stop``/``stream_start`` command replaces.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from rtstream.errors import ConfigError
from rtstream.proto.sdp import SdpSession, write_sdp

if TYPE_CHECKING:
    from rtstream.control.metrics import Registry

log = logging.getLogger(__name__)

SDP_CONTENT_TYPE = "application/sdp"


class SdpHttpServer:
    """A tiny aiohttp server publishing one :class:`SdpSession`.

    Parameters
    ----------
    session : SdpSession or None
        What to publish; None answers 503 until :meth:`set_session` is called.
    host, port : str, int
        Where to listen (port 0 picks a free one; see :attr:`port` after start).
    registry : Registry or None
        Served at ``GET /metrics`` when given.
    """

    def __init__(
        self, session: SdpSession | None, host: str, port: int, *,
        registry: Registry | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.session: SdpSession | None = None
        self._texts: dict[str, str] = {}
        if session is not None:
            self.set_session(session)
        self._runner: web.AppRunner | None = None

    def set_session(self, session: SdpSession) -> None:
        """Publish ``session`` from now on (a restarted sender's new SDP)."""
        texts = {"": write_sdp(session)}
        for m in session.media:
            if m.mid:
                one = dataclasses.replace(session, media=(m,))
                texts[m.mid] = write_sdp(one)
        self.session = session
        self._texts = texts

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/sdp", self._whole)
        app.router.add_get("/SDP", self._whole)
        app.router.add_get("/sdp/{mid}", self._one)
        if self.registry is not None:
            from rtstream.control.metrics import metrics_handler

            app.router.add_get("/metrics", metrics_handler(self.registry))
        return app

    async def _whole(self, request: web.Request) -> web.Response:
        text = self._texts.get("")
        if text is None:
            raise web.HTTPServiceUnavailable(text="no SDP yet: the sender is starting\n")
        return web.Response(text=text, content_type=SDP_CONTENT_TYPE)

    async def _one(self, request: web.Request) -> web.Response:
        if not self._texts:
            raise web.HTTPServiceUnavailable(text="no SDP yet: the sender is starting\n")
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
        log.info("SDP served at http://%s:%d/sdp%s", self.host, self.port,
                 "" if self.registry is None else ", metrics at /metrics")

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
