"""The remote viewer: live streams in a browser over WebRTC, one encode per stream.

Theory of operation
-------------------
The viewer consumes a :class:`FrameFeed` -- an async iterable of :class:`ViewerFrame`
(decoded pictures with their RTP timestamp, origin time and display strings) -- and
serves an aiohttp application:

``GET /``                  the page (``static/index.html``; no CDN, works offline)
``GET /static/<file>``     its script and style sheet
``GET /api/streams``       the streams seen so far (size, rate, viewers, encoders)
``POST /api/offer``        ``{"stream", "sdp", "type": "offer"}`` -> the answer (non-trickle)
``POST /api/snapshot``     ``{"stream", "rtp_timestamp"}`` -> ``{"ok", "sop_instance_uid"|"error"}``
``GET /api/overlay``       ``?stream=`` the latest frame's overlay (for pages without a data channel)
``GET /api/stats``         encoder, per-viewer sender and Janus feeder statistics
``GET /api/clock``         ``?c=page_ms`` -> ``{"c", "s_ns", "tai_utc_s"}`` (the ping of pages
                           that watch through Janus, whose data channel is one-way)
``GET /metrics``           Prometheus text 0.0.4 (:attr:`ViewerServer.metrics`; the receiver's
                           counters when fed by :func:`feed_from_receiver`; Prometheus sends
                           the token as ``Authorization: Bearer``)

Every route wants the access token (query ``token``, ``Authorization: Bearer``, or the
cookie the page request sets); a missing or wrong one gets 401. Tokens are compared with
:func:`hmac.compare_digest`.

Each stream has one :class:`~rtstream.viewer.encoder.SharedEncoder` per codec, made on
its first viewer; each peer connection gets a :class:`~rtstream.viewer.encoder.PacketTrack`
fed from it (see that module for why aiortc then does not encode again).

Per-frame metadata reaches the page on the ``overlay`` data channel the page opens: just
before a frame's packet goes to aiortc's sender, a JSON message ``{"t": "frame", "rtp",
"origin_ns", "overlay"}`` is sent. The page matches it to the frame on screen by
``requestVideoFrameCallback``'s ``rtpTimestamp`` minus the sender's constant timestamp
offset, which the server reads once from the sender and sends as ``{"t": "offset"}``.
The page also pings (``{"t": "ping", "c": page_ms}`` -> ``{"t": "pong", "c", "s_ns", "tai_utc_s"}``)
to learn the offset between its clock (UTC) and the server's (TAI), so latency = display
time - origin; the readout shows the offset less TAI - UTC.

A stream can also be watched through Janus (:mod:`rtstream.viewer.janus`): a feeder
registered with :meth:`ViewerServer.add_janus` adds ``"janus": {"url", "mountpoint",
"pin"}`` to the stream's entry in ``/api/streams`` -- only pages holding the token ever
see the pin -- and the page then attaches to that mountpoint instead of offering to
rtstream; the overlay arrives on Janus's data channel, pings and snapshots still come here.

ICE: no STUN/TURN unless configured. Candidates are gathered only on the address the
HTTP server binds (127.0.0.1 by default: viewing works on loopback, including inside a
network namespace that holds only ``lo``), or on the interfaces named in
``ice_interfaces``; only a wildcard HTTP address (``0.0.0.0``) lets aioice gather on
every interface, plus an extra 127.0.0.1 socket (aioice never offers loopback) unless
``offer_loopback`` is off. A browser's mDNS (``*.local``) candidates are dropped from its
offer unless ``mdns`` is set, so no multicast DNS socket opens on port 5353. (Chromium, for its part, gathers loopback
candidates only with ``--allow-loopback-in-peer-connection`` *and* when the page may
enumerate networks, i.e. holds camera/microphone permission; elsewhere it offers its
real interfaces, which aioice's own host candidates pair with.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hmac
import json
import logging
import secrets
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
)
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from aiohttp import web
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)

from rtstream.errors import ConfigError
from rtstream.media.testsrc import SectorGenerator
from rtstream.proto.clock import TAI_UTC_OFFSET_S
from rtstream.proto.formats import Sampling, VideoFormat
from rtstream.sysclock import SystemClock
from rtstream.viewer._aiortc_private import last_sent_rtp_timestamp
from rtstream.viewer.encoder import Codec, EncoderConfig, EncoderRegistry, PacketTrack
from rtstream.viewer.rtc import (
    add_loopback_candidates,
    drop_mdns_candidates,
    forward_keyframe_requests,
    gather_on,
    ice_addresses,
    prefer_codec,
)

if TYPE_CHECKING:
    from rtstream.control.metrics import Registry
    from rtstream.receiver import ReceiverLike
    from rtstream.receiver.items import ReceivedItem

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
TOKEN_COOKIE = "rtstream_viewer_token"
OVERLAY_FIELDS = (
    "patient_name",
    "patient_id",
    "study_description",
    "modality",
    "sop_class",
    "frame_number",
    "origin_time",
)
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


@dataclass(frozen=True, kw_only=True)
class ViewerFrame:
    """One decoded picture of a stream, as the viewer takes it.

    Parameters
    ----------
    stream_id : str
        Which stream (a short, URL-safe name).
    image : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB when ``pix_fmt`` is ``"rgb24"``; ``(H*3/2, W)`` uint8
        planes (as PyAV's ``to_ndarray`` gives them) when ``"yuv420p"``.
    rtp_timestamp : int
        The source flow's 90 kHz RTP timestamp (ST 2110-10 media clock).
    origin_ns : int or None
        Frame Origin Timestamp (0034,0007) in ns (PS3.3 C.7.6.27.1.1), if known.
    overlay : Mapping[str, str]
        Display strings, keys from :data:`OVERLAY_FIELDS`.
    pix_fmt : str
        ``"rgb24"`` or ``"yuv420p"``.
    """

    stream_id: str
    image: np.ndarray
    rtp_timestamp: int
    origin_ns: int | None = None
    overlay: Mapping[str, str] = field(default_factory=dict)
    pix_fmt: str = "rgb24"


class FrameFeed(Protocol):
    """What the viewer shows: an async iterable of :class:`ViewerFrame`."""

    def __aiter__(self) -> AsyncIterator[ViewerFrame]:
        """Iterate the frames of every stream, in arrival order."""
        ...


@dataclass(frozen=True, kw_only=True)
class SnapshotReply:
    """What the viewer answers a snapshot request with: the stored instance's UID, or why not.

    (The receiver's :class:`rtstream.receiver.SnapshotResult` is the stored instance
    itself; this is only the browser's answer.)
    """

    ok: bool
    sop_instance_uid: str | None = None
    error: str | None = None


#: Former name of :class:`SnapshotReply`, kept until its last users move.

SnapshotFn = Callable[[str, int], Awaitable[SnapshotReply]]
"""``async def snapshot(stream_id, rtp_timestamp) -> SnapshotReply``."""


@dataclass(frozen=True, kw_only=True)
class ViewerConfig:
    """Configuration of :class:`ViewerServer`.

    Parameters
    ----------
    host, port : str, int
        Where the HTTP server listens (127.0.0.1 unless told otherwise; port 0 = any).
    token : str or None
        The access token; ``None`` generates one (``secrets.token_urlsafe``).
    encoder : EncoderConfig
        Codec, bitrate and frame rate of the shared encodes.
    ice_servers : tuple of str
        STUN/TURN URLs; empty by default (host candidates only).
    ice_interfaces : tuple of str
        Interface names or local addresses ICE gathers on; empty (the default): the
        address ``host`` names, so a loopback viewer has loopback candidates only.
    offer_loopback : bool
        With a wildcard ``host`` and no ``ice_interfaces``: add a 127.0.0.1 ICE
        candidate to every answer (aioice leaves it out).
    mdns : bool
        Resolve a browser's mDNS (``*.local``) candidates (opens UDP port 5353); off by
        default, the candidates are dropped from the offer.
    max_viewers : int
        Peer connections at once; more get 503.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    ice_servers: tuple[str, ...] = ()
    ice_interfaces: tuple[str, ...] = ()
    offer_loopback: bool = True
    mdns: bool = False
    max_viewers: int = 16

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("port", self.port, "0..65535")
        if self.token is not None and len(self.token) < 8:
            raise ConfigError("token", "<hidden>", "at least 8 characters")
        if not 1 <= self.max_viewers <= 1000:
            raise ConfigError("max_viewers", self.max_viewers, "1..1000")
        if isinstance(self.ice_interfaces, str):
            raise ConfigError("ice_interfaces", self.ice_interfaces, "a list of interface names")
        for url in self.ice_servers:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ConfigError("ice_servers", url, "stun:, turn: or turns: URLs")


@dataclass
class StreamInfo:
    """What the server knows about one stream from its frames."""

    stream_id: str
    width: int = 0
    height: int = 0
    frames: int = 0
    fps: float = 0.0
    rtp_timestamp: int | None = None
    origin_ns: int | None = None
    overlay: Mapping[str, str] = field(default_factory=dict)

    def update(self, frame: ViewerFrame) -> None:
        """Take the size, rate (from RTP timestamp steps) and overlay of a new frame."""
        h, w = frame.image.shape[0], frame.image.shape[1]
        if frame.pix_fmt == "yuv420p":
            h = h * 2 // 3
        self.width, self.height = w, h
        if self.rtp_timestamp is not None:
            step = (frame.rtp_timestamp - self.rtp_timestamp) & 0xFFFFFFFF
            if 0 < step < 90_000:
                rate = 90_000 / step
                self.fps = rate if self.fps == 0 else 0.9 * self.fps + 0.1 * rate
        self.frames += 1
        self.rtp_timestamp = frame.rtp_timestamp
        self.origin_ns = frame.origin_ns
        self.overlay = frame.overlay


@dataclass(eq=False)
class _Peer:
    id: str
    stream_id: str
    codec: Codec
    pc: RTCPeerConnection
    track: PacketTrack
    sender: RTCRtpSender
    channel: Any = None
    rtp_offset: int | None = None
    last_rtp: int | None = None
    offset_checks: int = 0
    offset_sent: bool = False


def _origin_time(origin_ns: int | None) -> str:
    """UTC ISO 8601 (ms, ``Z``) of a TAI origin, by the one TAI -> UTC conversion."""
    from rtstream.dicom.realtime import tai_ns_to_datetime

    if origin_ns is None:
        return ""
    t: datetime.datetime = tai_ns_to_datetime(origin_ns)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _offer_codecs(sdp: str) -> set[Codec]:
    """Codecs an SDP offer lists on its video ``a=rtpmap`` lines."""
    found = set()
    for line in sdp.splitlines():
        if line.startswith("a=rtpmap:"):
            name = line.split(" ", 1)[-1].split("/", 1)[0].upper()
            if name == "H264":
                found.add(Codec.H264)
            elif name == "VP8":
                found.add(Codec.VP8)
    return found


class JanusFeed(Protocol):
    """What the server needs of a Janus feeder (:class:`rtstream.viewer.janus.JanusFeeder`)."""

    stream_id: str

    def page_info(self) -> dict[str, Any] | None:
        """``{"url", "mountpoint", "pin", "state"}``, or None while not known."""
        ...

    def stats_json(self) -> dict[str, Any]:
        """The feeder's counters."""
        ...


class ViewerServer:
    """The viewer's HTTP + WebRTC server.

    Parameters
    ----------
    cfg : ViewerConfig
    feed : FrameFeed
        The frames to show; consumed by one task from :meth:`start` on.
    snapshot : SnapshotFn or None
        Stores the frame with a given RTP timestamp; ``None`` means snapshots are off
        (the API answers 501).
    metrics : Registry or None
        Served at ``GET /metrics``; None makes one with the viewer's gauges plus, for a
        :func:`feed_from_receiver` feed, the receiver's counters
        (:mod:`rtstream.control.observe`). Add families to :attr:`metrics` at will.

    Examples
    --------
    >>> async with ViewerServer(cfg, feed, snapshot) as viewer:  # doctest: +SKIP
    ...     print(viewer.url)
    ...     await viewer.wait()
    """

    def __init__(
        self, cfg: ViewerConfig, feed: FrameFeed | AsyncIterable[ViewerFrame],
        snapshot: SnapshotFn | None = None, *, metrics: Registry | None = None,
    ) -> None:
        self.cfg = cfg
        self.token = cfg.token or secrets.token_urlsafe(24)
        self._feed = feed
        self._snapshot = snapshot
        self._ice_addresses = ice_addresses(cfg.host, cfg.ice_interfaces)
        self._clock = SystemClock()
        self.streams: dict[str, StreamInfo] = {}
        self.registry = EncoderRegistry(cfg.encoder)
        self.peers: dict[str, _Peer] = {}
        self.janus: dict[str, JanusFeed] = {}
        self.metrics = metrics if metrics is not None else _default_metrics(self, feed)
        self.app = self._make_app()
        self._runner: web.AppRunner | None = None
        self._feed_task: asyncio.Task[None] | None = None
        self._feed_done = asyncio.Event()
        self._stream_seen = asyncio.Event()
        self.port = cfg.port

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``cfg.host:cfg.port`` and start consuming the feed.

        Raises :class:`~rtstream.errors.ConfigError` (``--http``) when the address is taken.
        """
        from rtstream.net.http import start_site

        self._runner, self.port = await start_site(self.app, self.cfg.host, self.cfg.port, key="--http")
        self._feed_task = asyncio.get_running_loop().create_task(self._pump(), name="viewer-feed")
        log.info("viewer listening on http://%s:%d/", self.cfg.host, self.port)

    @property
    def url(self) -> str:
        """The page's address including the token (print it for the user)."""
        host = self.cfg.host if ":" not in self.cfg.host else f"[{self.cfg.host}]"
        return f"http://{host}:{self.port}/?token={self.token}"

    def add_janus(self, feed: JanusFeed) -> None:
        """Let pages watch ``feed.stream_id`` through Janus (see the module doc)."""
        self.janus[feed.stream_id] = feed

    def remove_janus(self, stream_id: str) -> None:
        """Pages watch ``stream_id`` from rtstream again."""
        self.janus.pop(stream_id, None)

    async def wait(self) -> None:
        """Wait until the feed ends."""
        await self._feed_done.wait()

    async def wait_stream(self, stream_id: str | None = None, *,
                          timeout: float | None = 30.0) -> str:
        """Wait until ``stream_id`` (or, when None, any stream) has shown a frame.

        Returns the stream's id; raises :class:`TimeoutError` after ``timeout`` seconds
        (None: wait as long as it takes).
        """
        async with asyncio.timeout(timeout):
            while True:
                if stream_id is None and self.streams:
                    return next(iter(self.streams))
                if stream_id is not None and stream_id in self.streams:
                    return stream_id
                self._stream_seen.clear()
                await self._stream_seen.wait()

    async def close(self) -> None:
        """Close every peer connection, the encoders, the feed task and the server."""
        if self._feed_task is not None:
            self._feed_task.cancel()
            try:
                await self._feed_task
            except asyncio.CancelledError:
                pass
        for peer in list(self.peers.values()):
            await self._drop_peer(peer)
        await self.registry.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ViewerServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _pump(self) -> None:
        try:
            async for frame in self._feed:
                info = self.streams.get(frame.stream_id)
                if info is None:
                    info = self.streams[frame.stream_id] = StreamInfo(frame.stream_id)
                    log.info("stream %s appeared", frame.stream_id)
                    self._stream_seen.set()
                info.update(frame)
                for enc in self.registry.for_stream(frame.stream_id):
                    enc.submit(
                        frame.image, frame.pix_fmt, frame.rtp_timestamp, frame.origin_ns,
                        frame.overlay,
                    )
        finally:
            self._feed_done.set()
            log.info("viewer feed ended")

    # -- HTTP -------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth], client_max_size=1 << 20)
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/favicon.ico", self._no_icon)
        app.router.add_get("/api/streams", self._api_streams)
        app.router.add_post("/api/offer", self._api_offer)
        app.router.add_post("/api/snapshot", self._api_snapshot)
        app.router.add_get("/api/overlay", self._api_overlay)
        app.router.add_get("/api/stats", self._api_stats)
        app.router.add_get("/api/clock", self._api_clock)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        from rtstream.control.metrics import metrics_handler

        return await metrics_handler(self.metrics)(request)

    def _authorized(self, request: web.Request) -> bool:
        offered = [request.query.get("token"), request.cookies.get(TOKEN_COOKIE)]
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            offered.append(auth[7:].strip())
        want = self.token.encode()
        ok = False
        for cand in offered:
            if cand is not None:
                ok |= hmac.compare_digest(cand.encode(), want)
        return ok

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not self._authorized(request):
            log.info("401 for %s %s from %s", request.method, request.path, request.remote)
            return web.Response(
                status=401,
                text="401: a valid access token is required (open the URL rtstream view printed)\n",
                headers={"WWW-Authenticate": 'Bearer realm="rtstream viewer"'},
            )
        resp = await handler(request)
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    async def _page(self, request: web.Request) -> web.StreamResponse:
        resp = web.FileResponse(STATIC_DIR / "index.html")
        resp.content_type = "text/html"
        resp.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="Strict", path="/")
        return resp

    async def _no_icon(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = STATIC_DIR / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise web.HTTPNotFound()
        resp = web.FileResponse(path)
        resp.content_type = _STATIC_TYPES.get(path.suffix, "application/octet-stream")
        return resp

    def _stream_json(self, info: StreamInfo) -> dict[str, Any]:
        encs = self.registry.for_stream(info.stream_id)
        janus = self.janus.get(info.stream_id)
        return {
            "janus": None if janus is None else janus.page_info(),
            "id": info.stream_id,
            "width": info.width,
            "height": info.height,
            "fps": round(info.fps, 2),
            "frames": info.frames,
            "viewers": sum(1 for p in self.peers.values() if p.stream_id == info.stream_id),
            "encoders": len(encs),
            "codecs": sorted(e.cfg.codec.value for e in encs),
        }

    async def _api_streams(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"streams": [self._stream_json(i) for i in self.streams.values()]})

    async def _api_clock(self, request: web.Request) -> web.StreamResponse:
        # s_ns is TAI like the frames' origins; the page's ping through HTTP.
        try:
            c = float(request.query.get("c", ""))
        except ValueError:
            return web.json_response({"error": "c: the page's clock in ms"}, status=400)
        return web.json_response({"c": c, "s_ns": str(self._clock.now_ns()),
                                  "tai_utc_s": TAI_UTC_OFFSET_S})

    async def _api_overlay(self, request: web.Request) -> web.StreamResponse:
        info = self.streams.get(request.query.get("stream", ""))
        if info is None:
            raise web.HTTPNotFound(text="no such stream")
        return web.json_response(
            {
                "stream": info.stream_id,
                "rtp": info.rtp_timestamp,
                "origin_ns": None if info.origin_ns is None else str(info.origin_ns),
                "overlay": dict(info.overlay),
            }
        )

    async def _api_stats(self, request: web.Request) -> web.StreamResponse:
        encoders = [
            {
                "stream": e.stream_id,
                "codec": e.cfg.codec.value,
                "bitrate": e.cfg.bitrate,
                "fps": e.cfg.fps,
                "subscribers": e.subscribers,
                **vars(e.stats),
            }
            for e in self.registry.encoders.values()
        ]
        peers = []
        for p in self.peers.values():
            entry: dict[str, Any] = {
                "id": p.id,
                "stream": p.stream_id,
                "codec": p.codec.value,
                "state": p.pc.connectionState,
                "frames_sent": p.track.frames_sent,
                "frames_skipped": p.track.frames_skipped,
            }
            try:
                report = await p.sender.getStats()
                for s in report.values():
                    if s.type == "outbound-rtp":
                        entry["packets_sent"] = s.packetsSent
                        entry["bytes_sent"] = s.bytesSent
                    elif s.type == "remote-inbound-rtp":
                        entry["packets_lost"] = s.packetsLost
                        entry["fraction_lost"] = s.fractionLost
                        entry["rtt"] = s.roundTripTime
            except Exception as exc:  # stats are best effort; the connection may be closing
                log.debug("stats of peer %s: %s", p.id, exc)
            peers.append(entry)
        janus = [{"stream": stream, **(feed.page_info() or {}), **feed.stats_json()}
                 for stream, feed in self.janus.items()]
        for entry in janus:
            entry.pop("pin", None)  # stats are for operators' tools, not for watching
        return web.json_response(
            {"encoders": encoders, "encoders_created": len(encoders), "peers": peers,
             "janus": janus}
        )

    async def _api_snapshot(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            stream = str(body["stream"])
            rtp = int(body["rtp_timestamp"])
        except (ValueError, KeyError, TypeError):
            return web.json_response(
                {"ok": False, "error": "body must be {stream, rtp_timestamp}"}, status=400
            )
        if not 0 <= rtp <= 0xFFFFFFFF:
            return web.json_response({"ok": False, "error": "rtp_timestamp: not 32-bit"}, status=400)
        if stream not in self.streams:
            return web.json_response({"ok": False, "error": f"no stream {stream!r}"}, status=404)
        if self._snapshot is None:
            return web.json_response(
                {"ok": False, "error": "snapshots are not configured (no archive)"}, status=501
            )
        try:
            result = await self._snapshot(stream, rtp)
        except Exception as exc:  # report any failure to the user, who clicked the button
            log.warning("snapshot of stream %s at %d failed: %s", stream, rtp, exc)
            result = SnapshotReply(ok=False, error=f"{type(exc).__name__}: {exc}")
        log.info("snapshot stream %s rtp %d: ok=%s", stream, rtp, result.ok)
        return web.json_response(
            {"ok": result.ok, "sop_instance_uid": result.sop_instance_uid, "error": result.error,
             "rtp_timestamp": rtp},
            status=200 if result.ok else 502,
        )

    # -- WebRTC -----------------------------------------------------------------------

    async def _api_offer(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            sdp = str(body["sdp"])
            if body.get("type", "offer") != "offer":
                raise ValueError("type")
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "body must be {stream, sdp, type: offer}"}, status=400)
        stream = body.get("stream") or next(iter(self.streams), None)
        if stream is None or stream not in self.streams:
            return web.json_response({"error": f"no stream {stream!r}"}, status=404)
        if len(self.peers) >= self.cfg.max_viewers:
            return web.json_response({"error": "too many viewers"}, status=503)
        offered = _offer_codecs(sdp)
        want = self.cfg.encoder.codec
        fallback = Codec.VP8 if want is Codec.H264 else Codec.H264
        codec = want if want in offered else fallback if fallback in offered else None
        if codec is None:
            return web.json_response({"error": "the offer has neither H.264 nor VP8"}, status=400)
        try:
            answer_sdp, peer = await self._answer(str(stream), codec, sdp)
        except Exception as exc:  # aiortc raises several types for unusable offers
            log.warning("offer failed: %s", exc)
            return web.json_response({"error": f"offer failed: {exc}"}, status=400)
        log.info("viewer %s watches stream %s (%s)", peer.id, stream, codec.value)
        return web.json_response(
            {"type": "answer", "sdp": answer_sdp, "peer": peer.id, "codec": codec.value}
        )

    async def _answer(self, stream: str, codec: Codec, offer_sdp: str) -> tuple[str, _Peer]:
        ice = [RTCIceServer(urls=u) for u in self.cfg.ice_servers]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
        encoder = self.registry.get(stream, codec)
        track = encoder.subscribe()
        try:
            transceiver = pc.addTransceiver(track, direction="sendonly")
            prefer_codec(transceiver, codec)
            peer = _Peer(
                id=secrets.token_hex(4), stream_id=stream, codec=codec, pc=pc, track=track,
                sender=transceiver.sender,
            )
            self._wire_peer(peer)
            forward_keyframe_requests(transceiver.sender, encoder.request_keyframe)
            if not self.cfg.mdns:
                offer_sdp = drop_mdns_candidates(offer_sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            answer = await pc.createAnswer()
            if self._ice_addresses is not None:
                await gather_on(pc, self._ice_addresses)
            elif self.cfg.offer_loopback:
                await add_loopback_candidates(pc)
            await pc.setLocalDescription(answer)
        except BaseException:
            track.stop()
            await pc.close()
            raise
        self.peers[peer.id] = peer
        return pc.localDescription.sdp, peer

    def _wire_peer(self, peer: _Peer) -> None:
        pc = peer.pc

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            peer.channel = channel

            def on_message(message: str | bytes) -> None:
                try:
                    msg = json.loads(message)
                except (ValueError, TypeError):
                    return
                if isinstance(msg, dict) and msg.get("t") == "ping":
                    # s_ns is TAI like the frames' origins; tai_utc_s lets the page show
                    # its offset from the server in civil time (the browser counts UTC)
                    self._send(peer, {"t": "pong", "c": msg.get("c"),
                                      "s_ns": str(self._clock.now_ns()),
                                      "tai_utc_s": TAI_UTC_OFFSET_S})

            channel.on("message", on_message)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("viewer %s: connection %s", peer.id, pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await self._drop_peer(peer)

        peer.track.frame_listeners.append(lambda enc: self._on_frame_sent(peer, enc))

    def _on_frame_sent(self, peer: _Peer, enc: Any) -> None:
        """Called as a frame goes to aiortc's sender: learn the offset, send the overlay.

        When the sender asks its track for frame N+1 it has finished sending frame N, so
        its last RTP timestamp minus frame N's source timestamp is aiortc's random,
        constant ``timestamp_origin`` (RFC 3550 §5.1) for this sender.
        """
        if peer.last_rtp is not None and peer.offset_checks < 3:
            sent = last_sent_rtp_timestamp(peer.sender)
            if sent is not None:
                offset = (sent - peer.last_rtp) & 0xFFFFFFFF
                if offset != peer.rtp_offset:
                    peer.rtp_offset = offset
                    peer.offset_sent = False
                peer.offset_checks += 1
        if peer.rtp_offset is not None and not peer.offset_sent:
            peer.offset_sent = self._send(peer, {"t": "offset", "rtp_offset": peer.rtp_offset})
        peer.last_rtp = enc.rtp_timestamp
        self._send(
            peer,
            {
                "t": "frame",
                "rtp": enc.rtp_timestamp,
                "origin_ns": None if enc.origin_ns is None else str(enc.origin_ns),
                "overlay": dict(enc.overlay),
                "key": enc.keyframe,
            },
        )

    def publish_findings(self, stream_id: str, findings: Mapping[str, Any]) -> int:
        """Send a finding set to every page watching ``stream_id`` (and to its Janus feeder).

        ``findings`` is :meth:`rtstream.dicom.findings.FindingSet.as_dict`: the page draws
        it over the frame of the same ``rtp_timestamp`` (see ``static/viewer.js``).
        Returns the number of pages (and feeders) it went to.
        """
        msg = {"t": "findings", "rtp": findings["rtp_timestamp"], "w": findings["width"],
               "h": findings["height"], "latency_us": findings.get("latency_us", 0),
               "findings": findings["findings"]}
        sent = sum(self._send(peer, msg) for peer in list(self.peers.values())
                   if peer.stream_id == stream_id)
        janus = self.janus.get(stream_id)
        send_json = getattr(janus, "send_json", None)
        if send_json is not None and send_json(msg):
            sent += 1
        return sent

    def _send(self, peer: _Peer, msg: Mapping[str, Any]) -> bool:
        ch = peer.channel
        if ch is not None and ch.readyState == "open":
            ch.send(json.dumps(msg, separators=(",", ":")))
            return True
        return False

    async def _drop_peer(self, peer: _Peer) -> None:
        if self.peers.pop(peer.id, None) is None:
            return
        peer.track.stop()
        await peer.pc.close()
        log.info("viewer %s left", peer.id)


# -- adapters to the receiver (rtstream/receiver.py, docs/internal-api.md) -----------------


def _find(ds: Any, keyword: str, depth: int = 4) -> Any:
    """The first value of ``keyword`` in ``ds`` or its sequences (breadth first)."""
    if ds is None:
        return None
    if keyword in ds:
        return ds.get(keyword)
    if depth == 0:
        return None
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                found = _find(item, keyword, depth - 1)
                if found is not None:
                    return found
    return None


def overlay_from_datasets(
    static: Any, metadata: Any, origin_ns: int | None, frame_number: int | None = None
) -> dict[str, str]:
    """Display strings from a PS3.22 static part and dynamic part (pydicom Datasets).

    Patient (PS3.3 C.7.1.1), study (C.7.2.1) and SOP class come from the static part;
    the frame number from the dynamic part's Frame Content Sequence (C.7.6.16.2.2);
    the time from the Frame Origin Timestamp (C.7.6.16.2.29).
    """
    out = {k: "" for k in OVERLAY_FIELDS}
    if static is not None:
        out["patient_name"] = str(static.get("PatientName", "") or "")
        out["patient_id"] = str(static.get("PatientID", "") or "")
        out["study_description"] = str(static.get("StudyDescription", "") or "")
        out["modality"] = str(static.get("Modality", "") or "")
        sop = static.get("SOPClassUID")
        if sop:
            out["sop_class"] = getattr(sop, "name", str(sop)) or str(sop)
    if frame_number is None:
        frame_number = _find(metadata, "FrameAcquisitionNumber")
    out["frame_number"] = "" if frame_number is None else str(frame_number)
    out["origin_time"] = _origin_time(origin_ns)
    return out


def _default_metrics(server: ViewerServer, feed: object) -> Registry:
    from rtstream.control.metrics import Registry
    from rtstream.control.observe import observe_receiver, observe_viewer

    registry = Registry()
    observe_viewer(registry, server)
    rx = getattr(feed, "receiver", None)
    if rx is not None:
        observe_receiver(registry, rx)
    return registry


class ReceiverFeed:
    """What :func:`feed_from_receiver` returns: the frames, the :attr:`receiver` they come
    from (so that the viewer can serve its metrics), and which receiver flow each stream
    shows (:attr:`flows`; the side-by-side streams of stereo renditions in :attr:`stereo`),
    so that a snapshot stores what the page shows."""

    def __init__(self, rx: ReceiverLike) -> None:
        self.receiver = rx
        self.flows: dict[str, str] = {}
        self.stereo: set[str] = set()
        self._frames = self._receive()

    def __aiter__(self) -> AsyncIterator[ViewerFrame]:
        return self._frames

    async def __anext__(self) -> ViewerFrame:
        return await self._frames.__anext__()

    async def aclose(self) -> None:
        """Close the underlying generator."""
        await self._frames.aclose()

    async def _receive(self) -> AsyncGenerator[ViewerFrame, None]:
        from rtstream.errors import LocalProtocolError
        from rtstream.proto.pixfmt import from_wire

        counts: dict[int, int] = {}
        refused: set[int] = set()
        latest: dict[str, ViewerFrame] = {}  # flow -> its latest frame (for stereo pairs)
        async for item in self.receiver:
            if item.kind.value != "video" or item.frame is None:
                continue
            fmt = item.fmt
            try:
                if fmt is not None:
                    image, pix_fmt = from_wire(item.frame, fmt, "yuv420p"), "yuv420p"
                else:
                    image, pix_fmt = item.rgb(), "rgb24"
            except (ConfigError, LocalProtocolError) as exc:
                if item.ssrc not in refused:
                    refused.add(item.ssrc)
                    log.warning("viewer: cannot show stream %08x: %s", item.ssrc, exc)
                continue
            origin_ns = item.origin.to_ns() if item.origin is not None else None
            n = counts[item.ssrc] = counts.get(item.ssrc, 0) + 1
            number = _find(item.metadata, "FrameAcquisitionNumber")
            overlay = overlay_from_datasets(item.static, item.metadata, origin_ns, number or n)
            frame = ViewerFrame(stream_id=f"video-{item.ssrc:08x}", image=image,
                                rtp_timestamp=item.rtp_timestamp, origin_ns=origin_ns,
                                overlay=overlay, pix_fmt=pix_fmt)
            self.flows[frame.stream_id] = item.flow
            latest[item.flow] = frame
            yield frame
            both = self._stereo_frame(item, latest)
            if both is not None:
                yield both

    def _stereo_frame(self, item: ReceivedItem,
                      latest: Mapping[str, ViewerFrame]) -> ViewerFrame | None:
        """The left and right views side by side, once ``item`` completed a stereo pair
        (PS3.22 rendition, ``Receiver.stereo_pairs``): stream ``stereo-<left ssrc hex>``
        with the left view's overlay and timing."""
        pairs = self.receiver.stereo_pairs
        if not pairs:
            return None
        pair = pairs[-1]
        if pair.rtp_timestamp != item.rtp_timestamp or item.flow not in (pair.left.flow,
                                                                         pair.right.flow):
            return None
        left, right = latest.get(pair.left.flow), latest.get(pair.right.flow)
        if (left is None or right is None or left.rtp_timestamp != right.rtp_timestamp
                or left.pix_fmt != right.pix_fmt):
            return None
        image = side_by_side(left.image, right.image, left.pix_fmt)
        if image is None:
            return None
        stream_id = f"stereo-{pair.left.ssrc:08x}"
        self.stereo.add(stream_id)
        return dataclasses.replace(left, stream_id=stream_id, image=image)


def side_by_side(left: np.ndarray, right: np.ndarray, pix_fmt: str) -> np.ndarray | None:
    """Two pictures of one size next to each other (left | right), in their own layout
    (``rgb24`` or ``yuv420p`` as :class:`ViewerFrame` holds them); None when their sizes
    differ or a ``yuv420p`` chroma plane would not fill whole rows of the doubled width
    (height not a multiple of 4)."""
    if left.shape != right.shape:
        return None
    if pix_fmt == "rgb24":
        return np.hstack((left, right))
    rows, width = left.shape
    h = rows * 2 // 3
    if h % 4 or width % 2:
        return None
    q = h // 4

    def planes(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (a[:h], a[h:h + q].reshape(h // 2, width // 2),
                a[h + q:].reshape(h // 2, width // 2))

    (yl, ul, vl), (yr, ur, vr) = planes(left), planes(right)
    return np.concatenate((np.hstack((yl, yr)), np.hstack((ul, ur)).reshape(q, 2 * width),
                           np.hstack((vl, vr)).reshape(q, 2 * width)))


def feed_from_receiver(rx: ReceiverLike) -> ReceiverFeed:
    """Map the receiver's items (``async for item in rx``) to :class:`ViewerFrame`.

    Video items with a frame become one frame each of stream ``"video-<ssrc hex>"``;
    audio items are skipped. A stereo rendition's two views are shown side by side too,
    as stream ``"stereo-<left ssrc hex>"``. Written against the ``ReceivedItem`` contract
    in ``docs/internal-api.md`` (``frame``, ``fmt``, ``rgb()``, ``metadata``, ``static``,
    ``origin``, ``rtp_timestamp``, ``ssrc``, ``flow``).

    Frames go to the encoder as ``yuv420p`` made by
    :func:`rtstream.proto.pixfmt.from_wire` -- its cheap display path (a pure reorder for
    8-bit 4:2:2 and 4:2:0, about 1 ms at 1080p; a few ms for 10-bit and 4:4:4) -- since
    the conversion runs on the event loop that also drains the receiver's sockets, and
    the encoder wants 4:2:0 anyway. Items without a ``fmt`` fall back to ``rgb()``. A
    frame whose format pixfmt cannot convert (e.g. 12-bit from a third-party sender) is
    skipped with one warning per stream.
    """
    return ReceiverFeed(rx)


def findings_to_viewer(server: ViewerServer) -> Callable[[Any], None]:
    """An ``on_findings`` observer (:meth:`rtstream.receiver.analysis.Analyzer.on_findings`)
    that sends each finding set to the pages watching its stream (named as
    :func:`feed_from_receiver` names them, ``video-<ssrc hex>``)."""

    def publish(fs: Any) -> None:
        server.publish_findings(f"video-{fs.ssrc:08x}", fs.as_dict())

    return publish


def snapshot_from_receiver(rx: ReceiverLike, feed: ReceiverFeed | None = None) -> SnapshotFn:
    """A snapshot callback that asks the receiver's capture to store the frame.

    Given the ``feed`` the page watches, the snapshot is of the flow the stream shows (a
    stereo pair's right view is not its left one, at the same RTP timestamp), and of both
    views, as one stereo instance, for a side-by-side stream.
    """

    async def snapshot(stream_id: str, rtp_timestamp: int) -> SnapshotReply:
        if feed is not None and stream_id in feed.stereo:
            result = await rx.capture.stereo_snapshot(rtp_timestamp)
        else:
            flow = feed.flows.get(stream_id) if feed is not None else None
            result = await rx.capture.snapshot(rtp_timestamp=rtp_timestamp, flow=flow)
        status = result.store.status if result.store is not None else "?"
        error = None if result.ok else f"store failed: status {status}"
        return SnapshotReply(ok=result.ok, sop_instance_uid=result.sop_instance_uid, error=error)

    return snapshot


class TestPattern:
    """A synthetic :class:`FrameFeed` at a steady rate (``--test-pattern``).

    The picture is the sender's built-in test source
    (:class:`rtstream.media.testsrc.SectorGenerator`: an ultrasound-like sector with
    drifting speckle and a burned-in frame counter and capture time), rendered as RGB.
    Frames are stamped by the system clock (origin) and its 90 kHz RTP timestamp, paced
    on an absolute schedule. The last ``keep`` frames are kept (copies: the generator
    reuses its buffers) so a snapshot callback can find the exact frame a viewer asked
    for (:meth:`frame_at`).
    """

    def __init__(
        self,
        *,
        stream_id: str = "test",
        width: int = 640,
        height: int = 360,
        fps: int = 30,
        overlay: Mapping[str, str] | None = None,
        frames: int | None = None,
        keep: int = 120,
    ) -> None:
        if width % 2 or height % 2 or width < 16 or height < 16:
            raise ConfigError("test pattern size", f"{width}x{height}", "even, >= 16x16")
        if not 1 <= fps <= 240:
            raise ConfigError("test pattern fps", fps, "1..240")
        self.stream_id = stream_id
        self.width, self.height, self.fps = width, height, fps
        self.base_overlay = dict(overlay or {})
        self.frames = frames
        self._keep: dict[int, np.ndarray] = {}
        self._origins: dict[int, int] = {}
        self._order: list[int] = []
        self._keep_n = keep
        self._clock = SystemClock()
        fmt = VideoFormat(sampling=Sampling.RGB, depth=8, width=width, height=height,
                          exactframerate=Fraction(fps))
        self._generator = SectorGenerator(fmt)

    def frame_at(self, rtp_timestamp: int) -> np.ndarray | None:
        """The kept image sent with ``rtp_timestamp``, or ``None`` if too old or unknown."""
        return self._keep.get(rtp_timestamp)

    def kept(self) -> list[int]:
        """RTP timestamps of the kept frames, oldest first."""
        return list(self._order)

    def origin_at(self, rtp_timestamp: int) -> int | None:
        """The capture (origin) time in ns of the kept frame sent with ``rtp_timestamp``."""
        return self._origins.get(rtp_timestamp)

    def _image(self, n: int, origin_ns: int) -> np.ndarray:
        """Frame ``n`` as its own ``(H, W, 3)`` RGB array (the generator reuses buffers)."""
        return self._generator.frame(n, origin_ns).copy()

    async def __aiter__(self) -> AsyncIterator[ViewerFrame]:
        from rtstream.proto.clock import rtp_timestamp

        period = 1.0 / self.fps
        start = time.monotonic()
        n = 0
        while self.frames is None or n < self.frames:
            due = start + n * period
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:  # far behind (machine stalled): restart the schedule
                start, n0 = time.monotonic(), n
                start -= n0 * period
            origin = self._clock.now_ns()
            rtp = rtp_timestamp(origin, 90_000)
            img = self._image(n, origin)
            self._keep[rtp] = img
            self._origins[rtp] = origin
            self._order.append(rtp)
            if len(self._order) > self._keep_n:
                old = self._order.pop(0)
                self._keep.pop(old, None)
                self._origins.pop(old, None)
            overlay = {k: "" for k in OVERLAY_FIELDS}
            overlay.update(self.base_overlay)
            overlay["frame_number"] = str(n + 1)
            overlay["origin_time"] = _origin_time(origin)
            yield ViewerFrame(
                stream_id=self.stream_id, image=img, rtp_timestamp=rtp, origin_ns=origin,
                overlay=overlay,
            )
            n += 1
