"""Serve a sender's SDP over HTTP: ``GET /sdp`` and ``GET /sdp/<mid>``.

PS3.22 §9 asks a sender's conformance statement to say how receivers obtain the SDP
objects; the informative example in PS3.2 Annex L uses an HTTP URL on the device
(``http://<device-ip>/SDP``). ``/sdp`` (and ``/SDP``) returns the whole session;
``/sdp/<mid>`` returns a session with only that flow (``VID``, ``VMETA``, ``AUD``,
``AMETA``), for receivers that subscribe to one flow at a time.

Given a ``metrics`` handler the server also mounts it at ``GET /metrics`` (``rtstream
send --http`` passes :func:`rtstream.control.metrics.metrics_handler` of the sender's
registry: Prometheus text 0.0.4, see ``docs/observability.md``); this I/O module knows
nothing of the registry itself. The session can be replaced while the
server runs (:meth:`SdpHttpServer.set_session`), so one server outlives the senders a
``stream_stop``/``stream_start`` command replaces.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from rtstream.net.http import start_site
from rtstream.proto.sdp import SdpSession, write_sdp

log = logging.getLogger(__name__)

SDP_CONTENT_TYPE = "application/sdp"

#: An aiohttp request handler (what ``GET /metrics`` is served by).
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SdpHttpServer:
    """A tiny aiohttp server publishing one :class:`SdpSession`.

    Parameters
    ----------
    session : SdpSession or None
        What to publish; None answers 503 until :meth:`set_session` is called.
    host, port : str, int
        Where to listen (port 0 picks a free one; see :attr:`port` after start).
    metrics : callable or None
        Handler mounted at ``GET /metrics`` when given (e.g.
        ``rtstream.control.metrics.metrics_handler(registry)``); 404 otherwise.
    """

    def __init__(
        self, session: SdpSession | None, host: str, port: int, *,
        metrics: Handler | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
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
                # one leg of an ST 2022-7 flow alone is an ordinary single-path SDP
                one = dataclasses.replace(session, media=(m,), dup_groups=())
                texts[m.mid] = write_sdp(one)
        self.session = session
        self._texts = texts

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/sdp", self._whole)
        app.router.add_get("/SDP", self._whole)
        app.router.add_get("/sdp/{mid}", self._one)
        if self.metrics is not None:
            app.router.add_get("/metrics", self.metrics)
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
        self._runner, self.port = await start_site(self._app(), self.host, self.port, key="http")
        log.info("SDP served at http://%s:%d/sdp%s", self.host, self.port,
                 "" if self.metrics is None else ", metrics at /metrics")

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
