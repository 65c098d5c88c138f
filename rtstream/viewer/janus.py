"""Hand a stream's shared encode to a Janus Streaming-plugin mountpoint, which fans it out.

Theory of operation
-------------------
Serving every browser from rtstream costs one DTLS/SRTP peer connection per viewer on
rtstream's machine. Janus Gateway's Streaming plugin does that part instead: it reads
plain RTP from a UDP port (an *RTP mountpoint*) and relays it to any number of WebRTC
viewers, each of which attaches to the mountpoint through Janus's own HTTP API. rtstream
then sends **one** RTP flow per stream, whatever the audience.

1. **Where to send** (:class:`JanusApi`, :func:`resolve_mountpoint`). Through Janus's
   HTTP API (a session, a handle on ``janus.plugin.streaming``, then plugin messages):
   either the Streaming plugin's ``info`` request with the mountpoint's ``secret`` --
   only then does Janus include the ``port``/``rtcpport`` of each media and ``host`` --
   or, with the plugin's ``admin_key``, a ``create`` of an RTP mountpoint with one video
   media (H.264, ``packetization-mode=1``, keyframe buffering) and one data media, port
   0 letting Janus choose; its answer lists the ports. A mountpoint made here is
   destroyed on exit. (Request and answer shapes checked against Janus 1.1.2.)
2. **Video** (:class:`H264Packetizer`, sans-I/O). Each access unit from the shared
   encoder is split at its Annex B start codes (ITU-T H.264 Annex B) and sent as RFC
   6184 packets: a NAL unit that fits the MTU alone (§5.6), a larger one as FU-A
   fragments (§5.8); the marker bit closes the access unit and every packet of it carries
   its RTP timestamp (§5.1), the source's 90 kHz timestamp. Janus 1.1.2 needs SPS and PPS
   in-band before every IDR (a viewer joining later starts there): libx264 repeats them,
   and the packetizer inserts the last ones seen if an IDR arrives without. The encoder's
   GOP (``keyframe_interval_s``) bounds how long a joining viewer waits.
3. **Key frames on request.** An RTCP sender report (RFC 3550 §6.4.1) goes to the
   mountpoint's ``rtcpport`` every second from the socket rtstream reads: Janus answers
   RTCP from the address it heard, and forwards a viewer's PLI (RFC 4585 §6.3.1) or FIR
   (RFC 5104 §4.3.1) there, which :func:`keyframe_requests` finds and the shared
   encoder honours.
4. **Overlay.** Before the packets of each frame, one JSON datagram goes to the data
   port -- ``{"t": "frame", "rtp", "origin_ns", "overlay", "key"}``, the same message
   the direct viewer sends on its data channel, with the same display fields -- and
   Janus relays it on the viewer's data channel. Janus rewrites each viewer's RTP
   timestamps (its own base per viewer), so the page learns the constant difference by
   pairing frames with the messages that arrived with them (``static/viewer.js``).
5. **Janus going away.** UDP to a dead port costs nothing (refusals are counted). A
   watchdog asks for the mountpoint every ``check_interval_s``; when Janus answers
   again after a failure (a restart), the mountpoint is resolved or created again and
   the flow follows its ports, starting at a key frame. rtstream never stops for Janus.

The page learns what to attach to (Janus URL, mountpoint id and its ``pin``) from
rtstream's token-protected ``/api/streams``; the pin is never given to anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import random
import secrets
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from rtstream.errors import ConfigError, RemoteProtocolError
from rtstream.net.udp import UdpSender, resolve
from rtstream.proto.rtp import RtpPacket, seq_add
from rtstream.viewer.encoder import Codec, EncodedFrame, EncoderRegistry, PacketTrack

log = logging.getLogger(__name__)

PLUGIN = "janus.plugin.streaming"
H264_FMTP = "profile-level-id=42e01f;packetization-mode=1"
PAYLOAD_TYPE = 96

NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
NAL_FU_A = 28


# -- RFC 6184 packetizer (sans-I/O) ---------------------------------------------------------


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (ITU-T H.264 B.1), start codes removed.

    Trailing zero bytes before a start code (``trailing_zero_8bits``) are dropped; empty
    units are skipped.
    """
    nals: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    if i < 0:
        return [data] if data else []
    while i >= 0:
        start = i + 3
        nxt = data.find(b"\x00\x00\x01", start)
        end = len(data) if nxt < 0 else nxt
        nal = data[start:end].rstrip(b"\x00") if nxt >= 0 else data[start:end]
        if nal:
            nals.append(nal)
        i = nxt
    return nals


@dataclass
class PacketizerStats:
    """Counters of one :class:`H264Packetizer`."""

    access_units: int = 0
    packets: int = 0
    octets: int = 0
    fragments: int = 0
    parameter_sets_inserted: int = 0


class H264Packetizer:
    """RTP packets (RFC 6184, packetization-mode 1) of H.264 access units.

    Parameters
    ----------
    ssrc : int
        The flow's synchronization source (random when None).
    payload_type : int
        The dynamic payload type the mountpoint expects (96).
    mtu : int
        Largest RTP packet (header included); larger NAL units become FU-A fragments.
    first_sequence : int
        Sequence number of the first packet (random when None, RFC 3550 §5.1).
    """

    def __init__(
        self, *, ssrc: int | None = None, payload_type: int = PAYLOAD_TYPE, mtu: int = 1200,
        first_sequence: int | None = None,
    ) -> None:
        if not 200 <= mtu <= 9000:
            raise ConfigError("mtu", mtu, "200..9000 bytes")
        self.ssrc = random.getrandbits(32) if ssrc is None else ssrc
        self.payload_type = payload_type
        self.mtu = mtu
        self.sequence = random.getrandbits(16) if first_sequence is None else first_sequence
        self.stats = PacketizerStats()
        self._sps: bytes | None = None
        self._pps: bytes | None = None

    def _with_parameter_sets(self, nals: list[bytes]) -> list[bytes]:
        """``nals`` with the last SPS/PPS put before an IDR that arrives without them."""
        types = [n[0] & 0x1F for n in nals]
        for nal, t in zip(nals, types, strict=True):
            if t == NAL_SPS:
                self._sps = nal
            elif t == NAL_PPS:
                self._pps = nal
        if NAL_IDR in types and (NAL_SPS not in types or NAL_PPS not in types):
            if self._sps is not None and self._pps is not None:
                self.stats.parameter_sets_inserted += 1
                first = types.index(NAL_IDR)
                return nals[:first] + [self._sps, self._pps] + nals[first:]
        return nals

    def packetize(self, access_unit: bytes, rtp_timestamp: int) -> list[bytes]:
        """The datagrams of one access unit (Annex B), all with ``rtp_timestamp``.

        The marker bit is set on the last packet of the access unit (RFC 6184 §5.1).
        """
        nals = self._with_parameter_sets(split_annexb(access_unit))
        room = self.mtu - 12
        payloads: list[bytes] = []
        for nal in nals:
            if len(nal) <= room:
                payloads.append(nal)  # single NAL unit packet, RFC 6184 §5.6
                continue
            # FU-A, RFC 6184 §5.8: indicator keeps F and NRI, type 28; header S/E + type.
            indicator = bytes([(nal[0] & 0xE0) | NAL_FU_A])
            kind = nal[0] & 0x1F
            body = nal[1:]
            step = room - 2
            for off in range(0, len(body), step):
                start = 0x80 if off == 0 else 0
                end = 0x40 if off + step >= len(body) else 0
                payloads.append(indicator + bytes([start | end | kind]) + body[off:off + step])
                self.stats.fragments += 1
        out = []
        ts = rtp_timestamp & 0xFFFFFFFF
        for i, payload in enumerate(payloads):
            pkt = RtpPacket(
                payload_type=self.payload_type, sequence=self.sequence, timestamp=ts,
                ssrc=self.ssrc, marker=i == len(payloads) - 1, payload=payload,
            )
            out.append(pkt.to_bytes())
            self.sequence = seq_add(self.sequence, 1)
            self.stats.octets += len(payload)
        self.stats.packets += len(out)
        self.stats.access_units += 1
        return out


# -- RTCP: our sender report, Janus's key-frame requests (sans-I/O) --------------------------

_NTP_EPOCH_OFFSET_S = 2_208_988_800  # 1900-01-01 to 1970-01-01 (RFC 5905 §6)


def sender_report(ssrc: int, unix_ns: int, rtp_timestamp: int, packets: int, octets: int) -> bytes:
    """An RTCP SR without report blocks (RFC 3550 §6.4.1)."""
    secs, frac_ns = divmod(unix_ns, 1_000_000_000)
    ntp_hi = (secs + _NTP_EPOCH_OFFSET_S) & 0xFFFFFFFF
    ntp_lo = (frac_ns << 32) // 1_000_000_000
    return struct.pack(
        "!BBHIIIIII", 0x80, 200, 6, ssrc, ntp_hi, ntp_lo, rtp_timestamp & 0xFFFFFFFF,
        packets & 0xFFFFFFFF, octets & 0xFFFFFFFF,
    )


def keyframe_requests(datagram: bytes) -> int:
    """How many PLI (RFC 4585 §6.3.1: PT 206, FMT 1) and FIR (RFC 5104 §4.3.1: PT 206,
    FMT 4) a compound RTCP datagram holds.

    Raises
    ------
    RemoteProtocolError
        For a datagram that is not RTCP version 2 or whose lengths do not add up.
    """
    n = 0
    off = 0
    if len(datagram) < 4:
        raise RemoteProtocolError("rtcp", f"{len(datagram)} bytes, shorter than a header")
    while off < len(datagram):
        if len(datagram) - off < 4:
            raise RemoteProtocolError("rtcp", "trailing bytes after the last packet")
        b0, pt, words = struct.unpack_from("!BBH", datagram, off)
        if b0 >> 6 != 2:
            raise RemoteProtocolError("rtcp", f"version {b0 >> 6}, expected 2")
        size = 4 * (words + 1)
        if off + size > len(datagram):
            raise RemoteProtocolError("rtcp", f"length {size} runs past the datagram")
        if pt == 206 and (b0 & 0x1F) in (1, 4):
            n += 1
        off += size
    return n


# -- Janus HTTP API --------------------------------------------------------------------------


class JanusUnavailable(Exception):
    """Janus did not answer (not running, restarting, unreachable)."""


@dataclass(frozen=True, kw_only=True)
class JanusConfig:
    """Where and how rtstream feeds Janus.

    Parameters
    ----------
    url : str
        Janus's HTTP API, e.g. ``http://127.0.0.1:8088/janus`` (``--janus``).
    mountpoint : int or None
        The mountpoint to feed (``--janus-mountpoint``); with ``admin_key`` and None, a
        random id is used for the one created.
    secret : str or None
        The mountpoint's ``secret`` (``--janus-secret``): lets ``info`` return its ports,
        and is the secret of a mountpoint rtstream creates.
    admin_key : str or None
        The Streaming plugin's ``admin_key`` (``--janus-admin-key``): create the
        mountpoint (and destroy it on exit) instead of looking it up.
    pin : str or None
        The pin viewers need to watch a mountpoint rtstream creates (generated when
        None); for an existing mountpoint, what ``info`` reports.
    page_url : str or None
        The Janus URL browsers use when it differs from ``url`` (a public name).
    stream : str or None
        The stream to feed (default: the first one seen).
    check_interval_s : float
        Seconds between the watchdog's looks at Janus.
    mtu : int
        Largest RTP packet sent.
    """

    url: str
    mountpoint: int | None = None
    secret: str | None = None
    admin_key: str | None = None
    pin: str | None = None
    page_url: str | None = None
    stream: str | None = None
    check_interval_s: float = 2.0
    mtu: int = 1200

    def __post_init__(self) -> None:
        for key, value in (("--janus", self.url), ("--janus-page-url", self.page_url)):
            if value is None:
                continue
            u = URL(value)
            if u.scheme not in ("http", "https") or not u.host:
                raise ConfigError(key, value, "an http:// or https:// URL of Janus's HTTP "
                                  "API, e.g. http://127.0.0.1:8088/janus")
        if self.mountpoint is not None and not 1 <= self.mountpoint < 2**53:
            raise ConfigError("--janus-mountpoint", self.mountpoint, "a positive integer id")
        if self.admin_key is None:
            if self.mountpoint is None:
                raise ConfigError("--janus-mountpoint", None, "the id of the mountpoint to feed "
                                  "(or give --janus-admin-key to create one)")
            if not self.secret:
                raise ConfigError("--janus-secret", None, "the mountpoint's secret (Janus "
                                  "tells its ports only with it), or --janus-admin-key")
        if not 0.2 <= self.check_interval_s <= 60:
            raise ConfigError("check_interval_s", self.check_interval_s, "0.2..60 seconds")
        if not 200 <= self.mtu <= 9000:
            raise ConfigError("mtu", self.mtu, "200..9000 bytes")


@dataclass(frozen=True, kw_only=True)
class Mountpoint:
    """What rtstream learnt of the mountpoint it feeds."""

    id: int
    host: str
    video_port: int
    video_rtcp_port: int | None
    data_port: int | None
    pin: str | None
    secret: str | None
    created: bool


class JanusApi:
    """A small client of Janus's HTTP API (one session, one Streaming-plugin handle).

    Use as ``async with JanusApi(url) as api: await api.message({...})``.
    """

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None
        self._session: int | None = None
        self._handle: int | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._http is not None
        body = {**body, "transaction": secrets.token_hex(6)}
        try:
            async with self._http.post(self.url + path, json=body) as resp:
                if resp.status != 200:
                    raise JanusUnavailable(f"{self.url}{path}: HTTP {resp.status}")
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise JanusUnavailable(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if not isinstance(data, dict):
            raise JanusUnavailable(f"{self.url}: not a JSON object")
        if data.get("janus") == "error":
            err = data.get("error") or {}
            raise JanusUnavailable(f"{self.url}: error {err.get('code')}: {err.get('reason')}")
        return data

    async def __aenter__(self) -> JanusApi:
        self._http = aiohttp.ClientSession(timeout=self._timeout)
        try:
            created = await self._post("", {"janus": "create"})
            self._session = int(created["data"]["id"])
            attached = await self._post(f"/{self._session}", {"janus": "attach", "plugin": PLUGIN})
            self._handle = int(attached["data"]["id"])
        except (KeyError, TypeError, ValueError) as exc:
            await self.__aexit__()
            raise JanusUnavailable(f"{self.url}: unexpected answer ({exc})") from None
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is None:
            return
        if self._session is not None:
            with contextlib.suppress(JanusUnavailable):
                await self._post(f"/{self._session}", {"janus": "destroy"})
        await self._http.close()
        self._http = None
        self._session = self._handle = None

    async def message(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Send a synchronous Streaming-plugin request; its ``plugindata.data``."""
        answer = await self._post(f"/{self._session}/{self._handle}",
                                  {"janus": "message", "body": dict(body)})
        try:
            data = answer["plugindata"]["data"]
        except (KeyError, TypeError):
            raise JanusUnavailable(f"{self.url}: answer without plugindata") from None
        if not isinstance(data, dict):
            raise JanusUnavailable(f"{self.url}: plugindata is not an object")
        return data


def _refused(data: Mapping[str, Any], key: str, hint: str) -> None:
    if data.get("error_code") or data.get("error"):
        raise ConfigError(key, "<hidden>", f"{hint} (Janus: {data.get('error')})")


async def resolve_mountpoint(api: JanusApi, cfg: JanusConfig, *, pin: str | None,
                             mountpoint_id: int | None) -> Mountpoint:
    """Look the mountpoint up (``info`` with its secret) or create it (``admin_key``).

    Raises
    ------
    ConfigError
        When Janus refuses the secret or admin key, or the mountpoint has no H.264 video.
    JanusUnavailable
        When Janus does not answer.
    """
    if cfg.admin_key is None:
        assert cfg.mountpoint is not None
        data = await api.message({"request": "info", "id": cfg.mountpoint, "secret": cfg.secret})
        _refused(data, "--janus-mountpoint", f"an existing mountpoint id ({cfg.mountpoint})")
        info = data.get("info") or {}
        media = info.get("media") or []
        video = next((m for m in media if m.get("type") == "video"), None)
        if video is None:
            raise ConfigError("--janus-mountpoint", cfg.mountpoint, "an RTP mountpoint with video")
        if "port" not in video:
            # Janus leaves the ports out when the secret does not match.
            raise ConfigError("--janus-secret", "<hidden>", f"the secret of mountpoint "
                              f"{cfg.mountpoint} (Janus did not reveal its ports)")
        if str(video.get("codec", "")).lower() != "h264":
            raise ConfigError("--janus-mountpoint", cfg.mountpoint,
                              f"a mountpoint with H.264 video (it has {video.get('codec')})")
        data_media = next((m for m in media if m.get("type") == "data"), None)
        host = str(info.get("host") or "")
        if host in ("", "0.0.0.0"):  # a mountpoint bound to every interface: Janus's host
            host = URL(cfg.url).host or "127.0.0.1"
        return Mountpoint(
            id=cfg.mountpoint, host=host,
            video_port=int(video["port"]), video_rtcp_port=_opt_int(video.get("rtcpport")),
            data_port=None if data_media is None else _opt_int(data_media.get("port")),
            pin=info.get("pin") or None, secret=cfg.secret, created=False,
        )
    mp_id = mountpoint_id if mountpoint_id is not None else random.randrange(1, 2**31)
    host = URL(cfg.url).host or "127.0.0.1"
    secret = cfg.secret or secrets.token_urlsafe(18)
    body = {
        "request": "create", "admin_key": cfg.admin_key, "type": "rtp", "id": mp_id,
        "description": "rtstream", "secret": secret, "pin": pin, "is_private": True,
        "media": [
            {"type": "video", "mid": "v", "label": "video", "port": 0, "rtcpport": 0,
             "pt": PAYLOAD_TYPE, "codec": "h264", "fmtp": H264_FMTP, "bufferkf": True},
            {"type": "data", "mid": "d", "label": "overlay", "port": 0, "datatype": "text"},
        ],
    }
    data = await api.message(body)
    if data.get("error_code") == 457 or "admin_key" in str(data.get("error", "")):
        raise ConfigError("--janus-admin-key", "<hidden>",
                          f"the Streaming plugin's admin_key (Janus: {data.get('error')})")
    _refused(data, "--janus-mountpoint", f"an id not in use ({mp_id})")
    stream = data.get("stream") or {}
    ports = {p.get("type"): p for p in stream.get("ports") or []}
    if "video" not in ports:
        raise JanusUnavailable(f"{cfg.url}: create answered without a video port")
    return Mountpoint(
        id=mp_id, host=str(stream.get("host") or host),
        video_port=int(ports["video"]["port"]),
        video_rtcp_port=_opt_int(ports["video"].get("rtcp_port")),
        data_port=_opt_int((ports.get("data") or {}).get("port")),
        pin=pin, secret=secret, created=True,
    )


def _opt_int(value: Any) -> int | None:
    return None if value in (None, 0) else int(value)


# -- the feeder (asyncio shell) ----------------------------------------------------------------


class FeedState(enum.Enum):
    """Where the feed to Janus stands."""

    STARTING = "starting"
    FEEDING = "feeding"
    JANUS_DOWN = "janus-down"
    CLOSED = "closed"


@dataclass
class FeederStats:
    """Counters of one :class:`JanusFeeder`.

    ``send_refused`` counts datagrams lost to a full socket buffer or refused by the
    network (nothing listening: Janus away); ``janus_losses``/``janus_returns`` count the
    times the watchdog found Janus (or the mountpoint) gone and back.
    """

    frames: int = 0
    packets: int = 0
    octets: int = 0
    data_messages: int = 0
    keyframe_requests: int = 0
    rtcp_bad: int = 0
    send_refused: int = 0
    send_errors: int = 0
    janus_losses: int = 0
    janus_returns: int = 0
    packetizer: PacketizerStats = field(default_factory=PacketizerStats)


class JanusFeeder:
    """Feed one stream's shared H.264 encode to a Janus mountpoint (see the module doc).

    Parameters
    ----------
    cfg : JanusConfig
    encoders : EncoderRegistry
        The viewer's registry; the stream's H.264 encoder is shared with direct viewers.
    stream_id : str
        The stream to feed.
    """

    def __init__(self, cfg: JanusConfig, encoders: EncoderRegistry, stream_id: str) -> None:
        self.cfg = cfg
        self.stream_id = stream_id
        self._encoders = encoders
        self.stats = FeederStats()
        self.state = FeedState.STARTING
        self.mountpoint: Mountpoint | None = None
        self._pin = cfg.pin or (None if cfg.admin_key is None else secrets.token_urlsafe(12))
        self._packetizer = H264Packetizer(mtu=cfg.mtu)
        self.stats.packetizer = self._packetizer.stats
        self._track: PacketTrack | None = None
        self._video: UdpSender | None = None
        self._data: UdpSender | None = None
        self._rtcp: socket.socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_rtp = 0

    # -- what the page needs ---------------------------------------------------------

    def page_info(self) -> dict[str, Any] | None:
        """``{"url", "mountpoint", "pin"}`` for a page that presented rtstream's token."""
        mp = self.mountpoint
        if mp is None:
            return None
        return {"url": self.cfg.page_url or self.cfg.url, "mountpoint": mp.id, "pin": mp.pin,
                "state": self.state.value}

    def stats_json(self) -> dict[str, Any]:
        """The counters, flat, for ``/api/stats``."""
        out: dict[str, Any] = {k: v for k, v in vars(self.stats).items() if k != "packetizer"}
        out.update({f"packetizer_{k}": v for k, v in vars(self.stats.packetizer).items()})
        return out

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> JanusFeeder:
        """Resolve (or create) the mountpoint and start feeding it.

        Raises ConfigError for a refused secret/admin key; a Janus that does not answer
        at all is a ConfigError too at start (naming ``--janus``), never later.
        """
        try:
            await self._connect()
        except JanusUnavailable as exc:
            raise ConfigError("--janus", self.cfg.url, f"a running Janus HTTP API ({exc})") from None
        self._track = self._encoders.get(self.stream_id, Codec.H264).subscribe()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._pump(), name=f"janus-feed-{self.stream_id}"),
            loop.create_task(self._rtcp_loop(), name=f"janus-rtcp-{self.stream_id}"),
            loop.create_task(self._watch(), name=f"janus-watch-{self.stream_id}"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop feeding; destroy a mountpoint rtstream created."""
        if self.state is FeedState.CLOSED:
            return
        self.state = FeedState.CLOSED
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._track is not None:
            self._track.stop()
        mp = self.mountpoint
        if mp is not None and mp.created:
            try:
                async with JanusApi(self.cfg.url) as api:
                    await api.message({"request": "destroy", "id": mp.id, "secret": mp.secret})
                log.info("janus: destroyed mountpoint %d", mp.id)
            except JanusUnavailable as exc:
                log.info("janus: could not destroy mountpoint %d: %s", mp.id, exc)
        self._close_sockets()

    async def _connect(self) -> None:
        keep = self.mountpoint.id if self.mountpoint is not None else self.cfg.mountpoint
        async with JanusApi(self.cfg.url) as api:
            mp = await resolve_mountpoint(api, self.cfg, pin=self._pin, mountpoint_id=keep)
        self._use(mp)
        log.info("janus: feeding mountpoint %d (%s) at %s:%d%s", mp.id,
                 "created" if mp.created else "existing", mp.host, mp.video_port,
                 "" if mp.data_port is None else f", overlay to port {mp.data_port}")

    def _use(self, mp: Mountpoint) -> None:
        """Point the sockets at ``mp``'s ports and restart the flow at a key frame."""
        self._close_sockets()
        self._video = UdpSender((mp.host, mp.video_port), sndbuf=1 << 20, gso=False)
        if mp.data_port is not None:
            self._data = UdpSender((mp.host, mp.data_port), sndbuf=1 << 18, gso=False)
        if mp.video_rtcp_port is not None:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtcp.setblocking(False)
            rtcp.connect((resolve(mp.host, key="--janus"), mp.video_rtcp_port))
            asyncio.get_running_loop().add_reader(rtcp.fileno(), self._on_rtcp)
            self._rtcp = rtcp
        self.mountpoint = mp
        self.state = FeedState.FEEDING
        self._encoders.get(self.stream_id, Codec.H264).request_keyframe()

    def _close_sockets(self) -> None:
        if self._rtcp is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._rtcp.fileno())
            self._rtcp.close()
        for sock in (self._video, self._data):
            if sock is not None:
                sock.close()
        self._video = self._data = self._rtcp = None

    # -- tasks -------------------------------------------------------------------------

    async def _pump(self) -> None:
        assert self._track is not None
        while True:
            enc = await self._track.next_frame()
            try:
                self._send_frame(enc)
            except OSError as exc:  # anything the socket layer did not classify: go on
                self.stats.send_errors += 1
                log.debug("janus: frame %d not sent: %s", enc.rtp_timestamp, exc)

    def send_json(self, msg: Mapping[str, Any]) -> bool:
        """Send one extra message (e.g. a finding set) on the mountpoint's data port."""
        if self._data is None or self.state is not FeedState.FEEDING:
            return False
        try:
            self._data.send(json.dumps(msg, separators=(",", ":")).encode())
        except OSError as exc:
            log.debug("janus: data message not sent: %s", exc)
            return False
        self.stats.data_messages += 1
        return True

    def _send_frame(self, enc: EncodedFrame) -> None:
        video = self._video
        if video is None or self.state is not FeedState.FEEDING:
            return
        if self._data is not None:
            msg = json.dumps({
                "t": "frame", "rtp": enc.rtp_timestamp,
                "origin_ns": None if enc.origin_ns is None else str(enc.origin_ns),
                "overlay": dict(enc.overlay), "key": enc.keyframe,
            }, separators=(",", ":")).encode()
            self._data.send(msg)
            self.stats.data_messages += 1
        self._last_rtp = enc.rtp_timestamp
        dropped = video.stats.dropped
        for datagram in self._packetizer.packetize(enc.data, enc.rtp_timestamp):
            if not video.send(datagram):  # socket buffer full: this datagram is lost
                self.stats.send_refused += 1
        # refused by the network (ICMP: nothing listens, e.g. Janus restarting)
        self.stats.send_refused += video.stats.dropped - dropped
        self.stats.frames += 1
        self.stats.packets = self._packetizer.stats.packets
        self.stats.octets = self._packetizer.stats.octets

    async def _rtcp_loop(self) -> None:
        while True:
            rtcp = self._rtcp
            if rtcp is not None and self.state is FeedState.FEEDING:
                st = self._packetizer.stats
                with contextlib.suppress(OSError):  # a Janus away refuses: the watchdog knows
                    rtcp.send(sender_report(self._packetizer.ssrc, time.time_ns(),
                                            self._last_rtp, st.packets, st.octets))
            await asyncio.sleep(1.0)

    def _on_rtcp(self) -> None:
        rtcp = self._rtcp
        if rtcp is None:
            return
        while True:
            try:
                datagram = rtcp.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP from a Janus that went away: the watchdog handles it
                return
            try:
                n = keyframe_requests(datagram)
            except RemoteProtocolError as exc:
                self.stats.rtcp_bad += 1
                log.debug("janus: bad RTCP from the mountpoint: %s", exc)
                continue
            if n:
                self.stats.keyframe_requests += n
                self._encoders.get(self.stream_id, Codec.H264).request_keyframe()

    async def _watch(self) -> None:
        """Look at Janus every ``check_interval_s`` through one session of its own (each
        request keeps it alive); a failed request drops the session and marks Janus down."""
        api: JanusApi | None = None
        try:
            while True:
                await asyncio.sleep(self.cfg.check_interval_s)
                mp = self.mountpoint
                try:
                    if api is None:
                        api = await JanusApi(self.cfg.url, timeout=2.0).__aenter__()
                    if self.state is FeedState.JANUS_DOWN:
                        await self._reconnect_with(api)
                    elif mp is not None:
                        await self._check(api, mp)
                except JanusUnavailable as exc:
                    if api is not None:
                        await api.__aexit__()
                        api = None
                    if self.state is FeedState.FEEDING:
                        self.state = FeedState.JANUS_DOWN
                        self.stats.janus_losses += 1
                        log.warning("janus: %s; still encoding, will feed it again when it "
                                    "answers", exc)
                except ConfigError as exc:
                    log.warning("janus: the mountpoint came back refused: %s", exc)
        finally:
            if api is not None:
                await api.__aexit__()

    async def _check(self, api: JanusApi, mp: Mountpoint) -> None:
        """Is our mountpoint still there (a fast Janus restart loses a created one)?"""
        data = await api.message({"request": "info", "id": mp.id, "secret": mp.secret})
        if data.get("error_code"):
            self.state = FeedState.JANUS_DOWN
            self.stats.janus_losses += 1
            log.warning("janus: mountpoint %d is gone (%s)", mp.id, data.get("error"))
            await self._reconnect_with(api)

    async def _reconnect_with(self, api: JanusApi) -> None:
        keep = self.mountpoint.id if self.mountpoint is not None else self.cfg.mountpoint
        mp = await resolve_mountpoint(api, self.cfg, pin=self._pin, mountpoint_id=keep)
        self._use(mp)
        self.stats.janus_returns += 1
        log.warning("janus: answering again; feeding mountpoint %d at %s:%d", mp.id, mp.host,
                    mp.video_port)
