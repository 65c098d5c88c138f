"""The sending pipeline: a source to PS3.22 video, audio and metadata flows.

Theory of operation
-------------------
One media clock (:class:`~rtstream.sysclock.SystemClock`, injected) stamps every frame and
audio chunk with its capture instant in TAI nanoseconds. From that instant come the RTP
timestamp of the video frame (``rtp_timestamp(capture, 90000)``, ST 2110-10), the RTP
timestamp of its metadata grain (the *same* value, PS3.17 PPPP.7) and the grain's Frame
Origin Timestamp (the capture instant itself, PS3.3 C.7.6.27.1.1). Audio chunks are
stamped the same way at the audio rate.

Per video frame the event loop only: packetizes (one numpy copy into a reused buffer),
builds the metadata grain (the static part only when due, at least every 500 ms, so
>= 1 Hz as PS3.22 §6.2.2 asks), sends the grain's packets, then the frame's packets via UDP
segmentation offload. Conversion to the wire pixel format runs in the source's worker
thread. With ``pacing = "linear"`` the frame's packets go out in ``bursts`` equal bursts
spread over 90% of the frame period (an ST 2110-21 *wide* sender, ``TP=2110TPW``); with
``"none"`` they go out at once.

A frame is *late* when its last packet left after its deadline (capture + one frame
period + the pacing window slack), i.e. the sender did not keep up with real time.

Ports: video PORT, video metadata PORT+2, audio PORT+4, audio metadata PORT+6 unless
configured otherwise.

Renditions: with a second video source (``stereo_source``, the right view of a stereo
pair; ``source`` is the left) and/or audio, the sender also sends a Rendition Selection
Document flow (PS3.22 SOP class 1.2.840.10008.10.4, :func:`rendition_document`) naming
every metadata flow of the rendition by its RTV SOP instance and its Source and Flow
Identifiers, at least once a second (PS3.22 §6.2.2), with the NMOS header extension like
every metadata flow. The right view is a second video flow of the same format and
clock: both sources are stamped from one start instant, so the frames of a pair carry
the same RTP timestamp (which is how a receiver pairs them). Ports: right video PORT+8,
its metadata PORT+10, the rendition flow PORT+12 (``[rendition]``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
import random
import time
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

import rtstream.gcpause as gcpause
from rtstream.config import expand_text_forms, from_mapping, load_toml, merge, parse_size_rate
from rtstream.dicom.context import StreamContext
from rtstream.dicom.realtime import (
    BulkFlowRef,
    GrainBuilder,
    RenditionGrainBuilder,
    RenditionMember,
    RenditionRole,
    RenditionTitle,
    RtvSop,
    rendition_document,
    static_part,
)
from rtstream.endpoints import check_port, parse_endpoint
from rtstream.errors import ConfigError, LocalProtocolError
from rtstream.media.sources import (
    AudioSource,
    VideoFrame,
    VideoSource,
    context_fields,
    open_audio_source,
)
from rtstream.net.udp import DupSender, UdpSender, is_multicast, resolve
from rtstream.pacs.source import open_video_source
from rtstream.proto.clock import NS_PER_S, Clock, PtpTimestamp, RefClock, rtp_timestamp
from rtstream.proto.formats import (
    VIDEO_CLOCK_RATE,
    AudioEncoding,
    AudioFormat,
    Sampling,
    VideoFormat,
)
from rtstream.proto.nmos_ext import ExtMap
from rtstream.proto.rfc4175 import VideoPacketizer
from rtstream.proto.rtv_metadata import (
    RTV_RENDITION_SELECTION,
    MetadataPacketizer,
    RtvMetaInfo,
    audio_packet_grains,
)
from rtstream.proto.sdp import MediaKind, SdpMedia, SdpSession, write_sdp
from rtstream.proto.st2110_30 import AudioPacketizer
from rtstream.sysclock import SystemClock

log = logging.getLogger(__name__)

DEFAULT_SIZE = (1280, 720)
DEFAULT_RATE = Fraction(30)


class Pacing(enum.Enum):
    """How a frame's packets are spread in time."""

    LINEAR = "linear"
    NONE = "none"


#: The ``sop`` values of the configuration (``--sop``) and the RTV video SOP class each
#: names (PS3.22 Table 7.2-1).
VIDEO_SOPS: dict[str, RtvSop] = {"endoscopic": RtvSop.ENDOSCOPIC, "photographic": RtvSop.PHOTOGRAPHIC}


class FieldTimestamps(enum.Enum):
    """RTP timestamp of an interlaced frame's second field (``video.field_timestamps``).

    ``HALF``: half a frame period after the first field's, as GStreamer's rtpvrawpay
    stamps it (each field at its own sampling instant). ``SAME``: both fields on the
    frame's timestamp, as FFmpeg sends them; FFmpeg 5.1's RFC 4175 demuxer cuts a frame
    where the timestamp changes, so it reads interlaced video only this way
    (docs/formats.md).
    """

    HALF = "half"
    SAME = "same"


@dataclass(frozen=True, kw_only=True)
class VideoConfig:
    """``[video]``: the video flow. Size and rate default to the source's.

    ``field_timestamps`` (interlaced only): :class:`FieldTimestamps`. The field order
    is the source's: a bottom-field-first input is sent bottom field first (F=0).
    """

    width: int | None = None
    height: int | None = None
    fps: Fraction | None = None
    sampling: Sampling = Sampling.YCBCR_422
    depth: int = 10
    payload_type: int = 96
    max_payload: int = 1460
    interlaced: bool = False
    field_timestamps: FieldTimestamps = FieldTimestamps.HALF

    def __post_init__(self) -> None:
        if self.depth not in (8, 10, 12, 16):
            raise ConfigError("video.depth", self.depth, "8, 10, 12 or 16")
        if self.interlaced and self.sampling is Sampling.YCBCR_420:
            raise ConfigError("video.interlaced", True, "false for YCbCr-4:2:0 (progressive only)")
        for key, v in (("video.width", self.width), ("video.height", self.height)):
            if v is not None and not 16 <= v <= 7680:
                raise ConfigError(key, v, "16..7680 pixels")
        if self.fps is not None and not 0 < self.fps <= 240:
            raise ConfigError("video.fps", self.fps, "a rate in (0, 240], e.g. 60 or 60000/1001")
        if not 96 <= self.payload_type <= 127:
            raise ConfigError("video.payload_type", self.payload_type, "96..127")
        if not 256 <= self.max_payload <= 8972:
            raise ConfigError("video.max_payload", self.max_payload, "256..8972 bytes")


@dataclass(frozen=True, kw_only=True)
class AudioConfig:
    """``[audio]``: the optional ST 2110-30 flow."""

    enabled: bool = False
    source: str = "tone"
    encoding: AudioEncoding = AudioEncoding.L24
    sample_rate: int = 48_000
    channels: int = 2
    ptime_us: int = 1000
    payload_type: int = 97

    def __post_init__(self) -> None:
        self.format()  # validates rate, channels, ptime
        if not 96 <= self.payload_type <= 127:
            raise ConfigError("audio.payload_type", self.payload_type, "96..127")

    def format(self) -> AudioFormat:
        """The :class:`AudioFormat` of the flow."""
        order = "SMPTE2110.(ST)" if self.channels == 2 else "SMPTE2110.(M)" if self.channels == 1 else None
        return AudioFormat(
            encoding=self.encoding,
            sample_rate=self.sample_rate,
            channels=self.channels,
            ptime_us=self.ptime_us,
            channel_order=order,
        )


@dataclass(frozen=True, kw_only=True)
class RedundantConfig:
    """``[network.redundant]``: the second path of SMPTE ST 2022-7 seamless protection.

    Every flow is sent a second time, byte-identical, to ``dest`` (``--dest2``); the SDP
    groups each pair of legs with ``a=group:DUP`` (see :mod:`rtstream.proto.sdp`).
    ``port`` is the second leg's base port (default: the first leg's ports);
    ``interface`` and ``source_address`` (``--interface2``, ``--source-address2``) are
    the second network's, as ``network.interface`` and ``network.source_address`` are
    the first's.
    """

    dest: str = ""
    port: int | None = None
    interface: str | None = None
    source_address: str | None = None

    def __post_init__(self) -> None:
        if not self.dest:
            raise ConfigError("network.redundant.dest", self.dest,
                              "the second network's host name or IPv4 address (--dest2 HOST:PORT)")
        if self.port is not None:
            check_port(self.port, "network.redundant.port", what="UDP port")
            if self.port + 6 > 65535:
                raise ConfigError("network.redundant.port", self.port, "1..65529 (PORT+6 is used too)")


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    """``[network]``: destination, ports and IP options."""

    dest: str = "127.0.0.1"
    port: int = 5004
    video_port: int | None = None
    video_metadata_port: int | None = None
    audio_port: int | None = None
    audio_metadata_port: int | None = None
    ttl: int = 1
    interface: str | None = None
    source_address: str | None = None
    dscp: int | None = None
    sndbuf: int = 8 << 20
    gso: bool = True
    metadata_payload_type: int = 104
    redundant: RedundantConfig | None = None

    def __post_init__(self) -> None:
        for key, v in (
            ("network.port", self.port),
            ("network.video_port", self.video_port),
            ("network.video_metadata_port", self.video_metadata_port),
            ("network.audio_port", self.audio_port),
            ("network.audio_metadata_port", self.audio_metadata_port),
        ):
            if v is not None:
                check_port(v, key, what="UDP port")
        if self.port + 6 > 65535:
            raise ConfigError("network.port", self.port, "1..65529 (PORT+6 is used too)")
        if not 0 <= self.ttl <= 255:
            raise ConfigError("network.ttl", self.ttl, "0..255")
        if self.dscp is not None and not 0 <= self.dscp <= 63:
            raise ConfigError("network.dscp", self.dscp, "0..63 (e.g. 34 = AF41 for video)")
        if not self.dest:
            raise ConfigError("network.dest", self.dest, "a host name or IPv4 address")
        r = self.redundant
        if r is not None and r.dest == self.dest and self.ports2() == self.ports() and (
                r.source_address == self.source_address):
            raise ConfigError(
                "network.redundant.dest", f"{r.dest}:{self.ports2()[0]}",
                "a second path: another destination address or port than --dest, or another "
                "--source-address2 (ST 2022-7 legs never share both source and destination)")

    def ports2(self) -> tuple[int, int, int, int]:
        """(video, video metadata, audio, audio metadata) ports of the second leg."""
        r = self.redundant
        if r is None or r.port is None:
            return self.ports()
        p = r.port
        return (p, p + 2, p + 4, p + 6)

    def ports(self) -> tuple[int, int, int, int]:
        """(video, video metadata, audio, audio metadata) ports."""
        p = self.port
        return (
            self.video_port or p,
            self.video_metadata_port or p + 2,
            self.audio_port or p + 4,
            self.audio_metadata_port or p + 6,
        )


@dataclass(frozen=True, kw_only=True)
class PacingConfig:
    """``[pacing]``: ST 2110-21-style spreading of a frame's packets."""

    mode: Pacing = Pacing.LINEAR
    bursts: int = 16
    window: float = 0.8

    def __post_init__(self) -> None:
        if not 1 <= self.bursts <= 1000:
            raise ConfigError("pacing.bursts", self.bursts, "1..1000 bursts per frame")
        if not 0.1 <= self.window <= 1.0:
            raise ConfigError("pacing.window", self.window, "0.1..1.0 of the frame period")


@dataclass(frozen=True, kw_only=True)
class RenditionConfig:
    """``[rendition]``: the Rendition Selection Document flow and the right view's ports.

    Parameters
    ----------
    enabled : bool or None
        Send a Rendition Selection Document flow (PS3.22 SOP class 10.4); unset: whenever
        audio or a stereo right view joins the video.
    port : int or None
        The rendition flow's port (default PORT+12).
    right_video_port, right_metadata_port : int or None
        The stereo right view's video and metadata ports (default PORT+8, PORT+10).
    interval_ms : int
        Time between two rendition grains (<= 1000: PS3.22 asks >= 1 Hz).
    """

    enabled: bool | None = None
    port: int | None = None
    right_video_port: int | None = None
    right_metadata_port: int | None = None
    interval_ms: int = 500

    def __post_init__(self) -> None:
        for key, v in (("rendition.port", self.port),
                       ("rendition.right_video_port", self.right_video_port),
                       ("rendition.right_metadata_port", self.right_metadata_port)):
            if v is not None:
                check_port(v, key, what="UDP port")
        if not 10 <= self.interval_ms <= 1000:
            raise ConfigError("rendition.interval_ms", self.interval_ms, "10..1000 (PS3.22: >= 1 Hz)")

    def ports(self, base: int) -> tuple[int, int, int]:
        """(right video, right metadata, rendition) ports for base port ``base``."""
        ports = (self.right_video_port or base + 8, self.right_metadata_port or base + 10,
                 self.port or base + 12)
        for key, p in zip(("rendition.right_video_port", "rendition.right_metadata_port",
                           "rendition.port"), ports, strict=True):
            if p > 65535:
                raise ConfigError(key, p, "a port <= 65535: set it, or a lower network.port")
        return ports


@dataclass(frozen=True, kw_only=True)
class SenderConfig:
    """Everything ``rtstream send`` needs; load with :func:`load_sender_config`.

    Parameters
    ----------
    source : str
        Video source spec (see :mod:`rtstream.media.sources`).
    loop : bool
        Repeat file, raw and dicom sources.
    frames, duration : int or float or None
        Stop after this many frames / seconds (None: run until cancelled or the
        source ends).
    sop : str
        RTV Video Endoscopic or Photographic (PS3.22 Table 7.2-1): ``endoscopic`` or
        ``photographic``. A source whose imaged modality (``context.modality``, or a
        DICOM cine's Modality) is known and is not ES is sent as ``photographic``.
    static_interval_ms : int
        Most time between two static parts (<= 1000: PS3.22 asks >= 1 Hz).
    context : dict
        Patient/study/device values (:class:`~rtstream.dicom.context.StreamContext`
        field names); a DICOM source's own values fill what is not given.
    stereo_source : str or None
        A second video source: the right view of a stereo pair (``source`` is the left);
        sent as a second video flow with its own metadata, grouped with the first by a
        stereo rendition (``--source`` given twice).
    http : str or None
        ``HOST:PORT`` where ``rtstream send`` serves the SDP and metrics. The command
        starts that server (:class:`~rtstream.net.sdp_http.SdpHttpServer`) and gives it
        each Sender's SDP; a :class:`Sender` itself never starts an HTTP server.
    """

    source: str = "testsrc"
    loop: bool = False
    frames: int | None = None
    duration: float | None = None
    sop: str = "endoscopic"
    video: VideoConfig = field(default_factory=VideoConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    pacing: PacingConfig = field(default_factory=PacingConfig)
    context: dict[str, str] = field(default_factory=dict)
    session_name: str = "rtstream DICOM-RTV"
    ptp_grandmaster: str | None = None
    ptp_domain: int = 127
    static_interval_ms: int = 500
    sdp_out: Path | None = None
    http: str | None = None
    dump_frames: Path | None = None
    stats_json: Path | None = None
    stereo_source: str | None = None
    rendition: RenditionConfig = field(default_factory=RenditionConfig)
    #: ``video = "1280x720@30"`` is the ``--video`` spelling of the ``[video]`` table
    config_text_forms: typing.ClassVar[dict[str, Callable[[str, str], dict[str, Any]]]] = {
        "video": parse_size_rate}

    def __post_init__(self) -> None:
        if self.frames is not None and self.frames < 1:
            raise ConfigError("frames", self.frames, "a positive number of frames")
        if self.duration is not None and not self.duration > 0:
            raise ConfigError("duration", self.duration, "a positive number of seconds")
        if not isinstance(self.sop, str) or self.sop.lower() not in VIDEO_SOPS:
            raise ConfigError("sop", self.sop, " or ".join(repr(k) for k in VIDEO_SOPS))
        object.__setattr__(self, "sop", self.sop.lower())
        if not 10 <= self.static_interval_ms <= 1000:
            raise ConfigError("static_interval_ms", self.static_interval_ms, "10..1000 (PS3.22: >= 1 Hz)")
        if self.http is not None:
            parse_endpoint(self.http, key="http", allow_port_zero=True)
        self.refclk()
        names = {f.name for f in dataclasses.fields(StreamContext)}
        for key in self.context:
            if key not in names:
                raise ConfigError(f"context.{key}", self.context[key], "one of " + ", ".join(sorted(names)))

    @property
    def sends_rendition(self) -> bool:
        """Whether a Rendition Selection Document flow is sent (``[rendition]`` enabled,
        or by default when audio or a stereo pair joins the video)."""
        if self.rendition.enabled is not None:
            return self.rendition.enabled
        return self.audio.enabled or self.stereo_source is not None

    @property
    def rtv_sop(self) -> RtvSop:
        """The RTV SOP class of the video metadata flow that :attr:`sop` names."""
        return VIDEO_SOPS[self.sop]

    def refclk(self, local_mac: str = "00-00-00-00-00-00", *, ptp_disciplined: bool = True) -> RefClock:
        """The ``a=ts-refclk`` to advertise: ``ptp=`` when a PTP grandmaster is configured
        and the media clock is PTP disciplined, else ``localmac`` of the sending interface
        (a free-running host clock, spec/ps322.md §1.4)."""
        if self.ptp_grandmaster is not None and not ptp_disciplined:
            log.warning("ptp_grandmaster %s is configured but the host clock is free-running "
                        "(kernel TAI offset 0): advertising ts-refclk localmac", self.ptp_grandmaster)
        return RefClock(ptp_grandmaster=self.ptp_grandmaster if ptp_disciplined else None,
                        ptp_domain=self.ptp_domain, local_mac=local_mac)


def load_sender_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> SenderConfig:
    """Build a :class:`SenderConfig` from a TOML file with ``overrides`` laid over it."""
    data: dict[str, Any] = load_toml(path) if path is not None else {}
    data = expand_text_forms(SenderConfig, data)  # video = "1280x720@30", as --video
    if overrides:
        data = merge(data, overrides)
    return from_mapping(SenderConfig, data)


@dataclass
class SenderStats:
    """Totals of a run (``--stats-json``)."""

    frames: int = 0
    packets: int = 0
    bytes: int = 0
    late_frames: int = 0
    metadata_grains: int = 0
    static_parts: int = 0
    audio_packets: int = 0
    audio_grains: int = 0
    rendition_grains: int = 0
    icmp_errors: int = 0
    dropped: int = 0
    started_ns: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    fps: float = 0.0
    mbps: float = 0.0
    first_rtp_timestamp: int | None = None
    last_rtp_timestamp: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass
class _OutFlow:
    """One outgoing media flow: its bulk (video/audio) socket, and its PS3.22 metadata
    flow's socket, packetizer and grain builder."""

    sender: UdpSender | DupSender
    meta_sender: UdpSender | DupSender
    meta_packetizer: MetadataPacketizer
    builder: GrainBuilder


class Sender:
    """Send one rendition: video, optional audio, and their PS3.22 metadata flows.

    Use as ``async with Sender(cfg) as tx: await tx.run()``.

    Parameters
    ----------
    cfg : SenderConfig
    clock : Clock or None
        The media clock (default :class:`~rtstream.sysclock.SystemClock`).
    status : callable or None
        Called about once a second with the running :class:`SenderStats` (the CLI
        draws its status line with it).
    """

    def __init__(
        self,
        cfg: SenderConfig,
        *,
        clock: Clock | None = None,
        status: Callable[[SenderStats], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock: Clock = clock or SystemClock()
        self.stats = SenderStats()
        self._status = status
        self.source: VideoSource = open_video_source(cfg.source, loop=cfg.loop)
        self.audio_source: AudioSource | None = (
            open_audio_source(cfg.audio.source) if cfg.audio.enabled else None
        )
        self.right_source: VideoSource | None = (
            open_video_source(cfg.stereo_source, loop=cfg.loop) if cfg.stereo_source else None)
        self.fmt = self._video_format()
        self.audio_fmt = cfg.audio.format() if cfg.audio.enabled else None
        ctx_values = dict(context_fields(self.source.context, StreamContext))
        ctx_values.update(cfg.context)
        if not ctx_values.get("device_serial"):
            ctx_values["device_serial"] = _host_serial()
        self.context: StreamContext = from_mapping(StreamContext, ctx_values, "context.")
        self.rtv_sop: RtvSop = rtv_sop_for(cfg.rtv_sop, self.context.modality)
        rnd = random.SystemRandom()
        self._ssrc = [rnd.getrandbits(32) for _ in range(4)]
        self._ids = {name: uuid.uuid4() for name in ("video_source", "video_flow", "vmeta_source", "vmeta_flow",
                                                   "audio_source", "audio_flow", "ameta_source", "ameta_flow")}
        self.session_id = rnd.getrandbits(31)
        self.sop_instance_uid: str | None = None
        self._flows: list[UdpSender] = []
        self._video: _OutFlow | None = None
        self._audio: _OutFlow | None = None
        self._init_rendition(rnd)
        self.sdp = self.session()

    # ----------------------------------------------------------------- setup

    def _video_format(self) -> VideoFormat:
        v = self.cfg.video
        native = self.source.native_size
        w = v.width or (native[0] if native else DEFAULT_SIZE[0])
        h = v.height or (native[1] if native else DEFAULT_SIZE[1])
        rate = v.fps or self.source.native_rate or DEFAULT_RATE
        probe = VideoFormat(sampling=v.sampling, depth=v.depth, width=48, height=16,
                            exactframerate=rate)
        step = probe.pgroup_pixels_per_line
        if v.width is None:
            w -= w % step
        if v.height is None and (v.sampling is Sampling.YCBCR_420 or v.interlaced):
            h -= h % 2
        # A Python sender cannot meet narrow-sender timing: declare a wide sender
        # (ST 2110-21, spec/ps322.md section 6.2) whether pacing is linear or none.
        tp = "2110TPW"
        return VideoFormat(
            sampling=v.sampling,
            depth=v.depth,
            width=w,
            height=h,
            exactframerate=rate,
            interlaced=v.interlaced,
            tp=tp,
            maxudp=v.max_payload if v.max_payload > 1460 else None,
        )

    def session(self) -> SdpSession:
        """The SDP of every flow this sender emits (PS3.22 §6.2.1, ``spec/ps322.md`` §4)."""
        n = self.cfg.network
        vport, vmport, aport, amport = n.ports()
        addr = self._dest_address()
        multicast = is_multicast(addr)
        ttl = n.ttl if multicast else None
        sfilter = n.source_address if multicast and n.source_address else None
        refclk = self.cfg.refclk(_local_mac(n.source_address or _local_address_for(addr)),
                                 ptp_disciplined=_ptp_disciplined(self.clock))
        extmap = ExtMap.default()
        common: dict[str, Any] = dict(address=addr, ttl=ttl, source_filter=sfilter, refclk=refclk,
                                      mediaclk_offset=0)
        media = [
            SdpMedia(kind=MediaKind.VIDEO, port=vport, payload_type=self.cfg.video.payload_type,
                     clock_rate=VIDEO_CLOCK_RATE, video=self.fmt, mid="VID",
                     bottom_field_first=self._bottom_first(self.source), **common),
            SdpMedia(kind=MediaKind.METADATA, port=vmport, payload_type=n.metadata_payload_type,
                     clock_rate=VIDEO_CLOCK_RATE, extmap=extmap, mid="VMETA", describes="VID", **common),
        ]
        if self.audio_fmt is not None:
            media += [
                SdpMedia(kind=MediaKind.AUDIO, port=aport, payload_type=self.cfg.audio.payload_type,
                         clock_rate=self.audio_fmt.sample_rate, audio=self.audio_fmt, mid="AUD", **common),
                SdpMedia(kind=MediaKind.METADATA, port=amport, payload_type=n.metadata_payload_type,
                         clock_rate=self.audio_fmt.sample_rate, extmap=extmap, mid="AMETA",
                         describes="AUD", **common),
            ]
        media += self._rendition_media(common, extmap)
        origin = n.source_address or ("127.0.0.1" if addr.startswith("127.") else _local_address_for(addr))
        media, groups = self._second_legs(media)
        return SdpSession(origin_address=origin, session_name=self.cfg.session_name,
                          session_id=self.session_id, media=tuple(media), dup_groups=groups)

    def _second_legs(self, media: list[SdpMedia]) -> tuple[list[SdpMedia], tuple[tuple[str, ...], ...]]:
        """ST 2022-7: each media again on the second network, grouped ``a=group:DUP``
        (RFC 7104 §3); a metadata leg describes the media leg of its own network."""
        r = self.cfg.network.redundant
        if r is None:
            return media, ()
        addr2 = resolve(r.dest, key="network.redundant.dest")
        multicast = is_multicast(addr2)
        legs = [dataclasses.replace(
            m, address=addr2, port=self._second_port(m.port), ttl=self.cfg.network.ttl if multicast else None,
            source_filter=r.source_address if multicast and r.source_address else None,
            mid=f"{m.mid}2", describes=None if m.describes is None else f"{m.describes}2")
            for m in media]
        groups = tuple((str(m.mid), str(leg.mid)) for m, leg in zip(media, legs, strict=True))
        return media + legs, groups

    def udp_senders(self) -> dict[str, UdpSender]:
        """The UDP sender of each open flow by its SDP mid (VID, VMETA, AUD, AMETA, and
        VIDR, VMETAR, REND of a rendition; an ST 2022-7 second leg under its own mid, the
        flow's with a 2)."""
        pairs: list[tuple[str, UdpSender | DupSender]] = []
        for flow, media, meta in ((self._video, "VID", "VMETA"), (self._audio, "AUD", "AMETA"),
                                  (self._right, "VIDR", "VMETAR")):
            if flow is not None:
                pairs += [(media, flow.sender), (meta, flow.meta_sender)]
        if self._rendition_sender is not None:
            pairs.append(("REND", self._rendition_sender))
        out: dict[str, UdpSender] = {}
        for mid, s in pairs:
            if isinstance(s, DupSender):
                out[mid] = s.first
                if s.second is not None:
                    out[f"{mid}2"] = s.second
            else:
                out[mid] = s
        return out

    def _second_port(self, port: int) -> int:
        """The port of the flow sent to ``port`` on the ST 2022-7 second network (the same
        offsets from ``network.redundant.port``, or the same ports when it is unset)."""
        n = self.cfg.network
        r = n.redundant
        base2 = r.port if r is not None and r.port is not None else n.port
        first = (*n.ports(), *self.cfg.rendition.ports(n.port))
        second = (*n.ports2(), *self.cfg.rendition.ports(base2))
        return dict(zip(first, second, strict=True))[port]

    def sdp_text(self) -> str:
        """The SDP as text."""
        return write_sdp(self.sdp)

    def _dest_address(self) -> str:
        return resolve(self.cfg.network.dest, key="network.dest")

    def _udp(self, port: int) -> UdpSender | DupSender:
        n = self.cfg.network
        bind = (n.source_address, 0) if n.source_address else None
        s = UdpSender((self._dest_address(), port), bind=bind, ttl=n.ttl, interface=n.interface,
                      dscp=n.dscp, sndbuf=n.sndbuf, gso=n.gso)
        self._flows.append(s)
        r = n.redundant
        if r is None:
            return s
        # ST 2022-7: packetized once, the same buffer sent on the second path too
        port2 = self._second_port(port)
        bind2 = (r.source_address, 0) if r.source_address else None
        dest2 = (resolve(r.dest, key="network.redundant.dest"), port2)

        def open_second() -> UdpSender:
            s2 = UdpSender(dest2, bind=bind2, ttl=n.ttl, interface=r.interface, dscp=n.dscp,
                           sndbuf=n.sndbuf, gso=n.gso)
            self._flows.append(s2)
            return s2

        try:
            second: UdpSender | None = open_second()
        except ConfigError as exc:  # the second network is down now: run on the first
            log.warning("second network: cannot send to %s:%d now (%s); sending on the first "
                        "network only and trying again every second", *dest2, exc)
            second = None
        return DupSender(s, second, reopen=open_second)

    def _metadata_flow(self, *, sop: RtvSop, bulk_ts: str, rate: int, bulk_source: uuid.UUID,
                       bulk_flow: uuid.UUID, meta_source: uuid.UUID, meta_flow: uuid.UUID,
                       ssrc: int, port: int, duration: Fraction | None,
                       bulk_sender: UdpSender | DupSender, video: VideoFormat | None = None) -> _OutFlow:
        sop_uid = _generate_uid(self.context.uid_root)
        meta = RtvMetaInfo(
            transfer_syntax_uid=bulk_ts,
            sop_class_uid=sop.value,
            sop_instance_uid=sop_uid,
            source_id=meta_source,
            flow_id=meta_flow,
            sampling_rate=rate,
        )
        bulk = BulkFlowRef(source_id=bulk_source, flow_id=bulk_flow, transfer_syntax_uid=bulk_ts,
                           sampling_rate=rate)
        ptp = self.cfg.ptp_grandmaster is not None and _ptp_disciplined(self.clock)
        static = static_part(sop, self.context, sop_instance_uid=sop_uid, bulk_flows=[bulk], video=video,
                             created_ns=self.clock.now_ns(), ptp_synchronized=ptp)
        builder = GrainBuilder(sop, self.context, meta, bulk, video=video, static=static,
                               static_interval_ns=self.cfg.static_interval_ms * 1_000_000)
        pkt = MetadataPacketizer(ssrc=ssrc, extmap=ExtMap.default(), source_id=meta_source,
                                 flow_id=meta_flow, payload_type=self.cfg.network.metadata_payload_type,
                                 max_payload=1460, sequence=random.getrandbits(16),
                                 grain_duration=duration)
        return _OutFlow(bulk_sender, self._udp(port), pkt, builder)

    async def __aenter__(self) -> Sender:
        try:
            vport, vmport, aport, amport = self.cfg.network.ports()
            self._video = self._metadata_flow(
                sop=self.rtv_sop, bulk_ts=self.fmt.transfer_syntax_uid, rate=VIDEO_CLOCK_RATE,
                bulk_source=self._ids["video_source"], bulk_flow=self._ids["video_flow"],
                meta_source=self._ids["vmeta_source"], meta_flow=self._ids["vmeta_flow"],
                ssrc=self._ssrc[1], port=vmport, duration=1 / self.fmt.exactframerate,
                bulk_sender=self._udp(vport), video=self.fmt)
            self.sop_instance_uid = self._video.builder.meta.sop_instance_uid
            if self.audio_fmt is not None:
                # one grain per audio packet: each lasts one packet time (ptime)
                chunk = Fraction(self.audio_fmt.samples_per_packet, self.audio_fmt.sample_rate)
                self._audio = self._metadata_flow(
                    sop=RtvSop.AUDIO, bulk_ts=self.audio_fmt.transfer_syntax_uid,
                    rate=self.audio_fmt.sample_rate, bulk_source=self._ids["audio_source"],
                    bulk_flow=self._ids["audio_flow"], meta_source=self._ids["ameta_source"],
                    meta_flow=self._ids["ameta_flow"], ssrc=self._ssrc[3], port=amport,
                    duration=chunk, bulk_sender=self._udp(aport))
            self._open_rendition()
            text = self.sdp_text()
            if self.cfg.sdp_out is not None:
                self.cfg.sdp_out.parent.mkdir(parents=True, exist_ok=True)
                self.cfg.sdp_out.write_text(text)
            if self.cfg.dump_frames is not None:
                self.cfg.dump_frames.mkdir(parents=True, exist_ok=True)
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        self.source.close()
        if self.audio_source is not None:
            self.audio_source.close()
        if self.right_source is not None:
            self.right_source.close()
        for s in self._flows:
            self.stats.icmp_errors += s.stats.icmp_errors
            self.stats.dropped += s.stats.dropped
            s.close()
        self._flows.clear()
        if self.cfg.stats_json is not None and self.stats.started_ns:
            self.cfg.stats_json.parent.mkdir(parents=True, exist_ok=True)
            self.cfg.stats_json.write_text(json.dumps(self.stats.as_dict(), indent=2) + "\n")

    # ------------------------------------------------------------------- run

    async def run(self) -> SenderStats:
        """Send until the frame/duration limit, the end of the source, or cancellation."""
        if self._video is None:
            raise LocalProtocolError("Sender.run() outside its context: use 'async with Sender(cfg) as tx: await tx.run()'")
        await self.source.prepare(self.fmt)  # one-time set-up, not counted as per-frame CPU
        cpu0 = time.process_time()
        start_ns = self.clock.now_ns() + 100_000_000
        self.stats.started_ns = start_ns
        stop = asyncio.Event()
        gcpause.hold()  # no collector pause sweeping set-up objects while sending
        try:
            await self._tasks(start_ns, stop)
        except BaseExceptionGroup as group:
            # One failing flow stops the others; surface its own error (ConfigError,
            # RtstreamError ...) rather than the group.
            first = group.exceptions[0]
            if isinstance(first, Exception) and not isinstance(first, BaseExceptionGroup):
                raise first from None
            raise
        finally:
            gcpause.release()
            self._finish_stats(cpu0)
        return self.stats

    async def _tasks(self, start_ns: int, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            video = tg.create_task(self._video_loop(start_ns, stop), name="video")
            if self._audio is not None and self.audio_source is not None:
                audio = tg.create_task(self._audio_loop(start_ns, stop), name="audio")
                video.add_done_callback(lambda _t: audio.cancel())
            self._rendition_tasks(tg, video, start_ns, stop)
            if self._status is not None:
                status = tg.create_task(self._status_loop(stop), name="status")
                video.add_done_callback(lambda _t: status.cancel())

    def _finish_stats(self, cpu0: float) -> None:
        s = self.stats
        s.cpu_s = time.process_time() - cpu0
        s.elapsed_s = max(1e-9, (self.clock.now_ns() - s.started_ns) / NS_PER_S)
        s.fps = s.frames / s.elapsed_s
        s.mbps = s.bytes * 8 / s.elapsed_s / 1e6

    def _convert(self) -> Callable[[np.ndarray, str], np.ndarray]:
        fmt = self.fmt

        def convert(image: np.ndarray, pix_fmt: str) -> np.ndarray:
            if pix_fmt == "wire":
                return image
            from rtstream.proto.pixfmt import to_wire

            return to_wire(image, pix_fmt, fmt)

        return convert

    def _bottom_first(self, source: VideoSource | None) -> bool:
        """Send ``source`` bottom field first: the flow is interlaced and so is the input,
        its first field in time being the bottom one (RFC 4175 §4.3: F=0 is the first
        field)."""
        return bool(self.fmt.interlaced and source is not None and source.interlaced
                    and source.bottom_field_first)

    async def _video_loop(self, start_ns: int, stop: asyncio.Event, *, right: bool = False) -> None:
        assert self._video is not None
        flow = self._video if not right else self._right
        source = self.source if not right else self.right_source
        assert flow is not None and source is not None
        cfg = self.cfg
        fmt = self.fmt
        clock = self.clock
        period = int(fmt.frame_duration_ns)
        same = cfg.video.field_timestamps is FieldTimestamps.SAME
        packetizer = VideoPacketizer(fmt, ssrc=self._ssrc[0] if not right else self._rend_ssrc[0],
                                     payload_type=cfg.video.payload_type,
                                     max_payload=cfg.video.max_payload,
                                     sequence=random.getrandbits(32),
                                     field_offset=0 if same and fmt.interlaced else None,
                                     bottom_field_first=self._bottom_first(source))
        n = packetizer.packets_per_frame
        linear = cfg.pacing.mode is Pacing.LINEAR
        bursts = max(1, min(cfg.pacing.bursts, n)) if linear else 1
        bounds = [round(i * n / bursts) for i in range(bursts + 1)]
        window = int(period * cfg.pacing.window)
        max_frames = cfg.frames
        end_ns = start_ns + int(cfg.duration * NS_PER_S) if cfg.duration is not None else None
        stats = self.stats if not right else self.right_stats
        loop_sleep = asyncio.sleep
        frames = source.frames(fmt, clock, start_ns=start_ns, convert=self._convert())
        try:
            async for frame in frames:
                if end_ns is not None and frame.capture_ns >= end_ns:
                    break
                ts = rtp_timestamp(frame.capture_ns, VIDEO_CLOCK_RATE)
                wire = frame.image
                origin = PtpTimestamp.from_ns(frame.capture_ns)
                grain = flow.builder.grain(origin=origin, frame_number=frame.index + 1, now=clock.now_ns())
                for d in flow.meta_packetizer.packetize(grain, ts, sync=origin, origin=origin):
                    await flow.meta_sender.send_async(d)
                stats.metadata_grains += 1
                stats.static_parts = flow.builder.static_grains
                batch = packetizer.packetize(wire, ts)
                if cfg.dump_frames is not None and not right:
                    self._dump(frame, wire, ts)
                sender = flow.sender
                if bursts == 1:
                    await sender.send_batch_async(batch)
                else:
                    # Spread over [capture, capture + window]; when behind, over what is left
                    # of it (or at once), so the schedule catches up.
                    t_first = clock.now_ns()
                    span = frame.capture_ns + window - t_first
                    if span <= 0:
                        await sender.send_batch_async(batch)
                    else:
                        for b in range(bursts):
                            due = t_first + span * b // bursts
                            delay = due - clock.now_ns()
                            if delay > 200_000:
                                await loop_sleep(delay / NS_PER_S)
                            await sender.send_batch_async(batch, bounds[b], bounds[b + 1])
                done = clock.now_ns()
                # Late: still sending when the next frame was captured (+2 ms of timer slack).
                if done > frame.capture_ns + period + 2_000_000:
                    stats.late_frames += 1
                stats.frames += 1
                stats.packets += n
                stats.bytes += int(batch.sizes.sum())
                if stats.first_rtp_timestamp is None:
                    stats.first_rtp_timestamp = ts
                stats.last_rtp_timestamp = ts
                if max_frames is not None and stats.frames >= max_frames:
                    break
        finally:
            # Stop the source's worker thread off the event loop, then close the
            # generator. Joining the thread waits for its blocked queue put (up to
            # 0.1 s): done on the loop, as the generator's own clean-up would, that
            # stall made the last frame of another Sender on the same loop late
            # (measured: 109 ms after its capture with two senders in one process).
            await asyncio.to_thread(source.close)
            aclose = getattr(frames, "aclose", None)
            if aclose is not None:
                await aclose()
        if not right:  # the left view (or the only one) ends the run
            stop.set()

    def _dump(self, frame: VideoFrame, wire: np.ndarray, ts: int) -> None:
        assert self.cfg.dump_frames is not None
        path = self.cfg.dump_frames / f"{ts}.raw"
        try:
            with open(path, "xb") as f:
                f.write(np.ascontiguousarray(wire).reshape(-1).data)
        except FileExistsError:
            log.warning("not overwriting %s (RTP timestamp repeated); frame %d not dumped", path, frame.index)

    async def _audio_loop(self, start_ns: int, stop: asyncio.Event) -> None:
        assert self._audio is not None and self.audio_source is not None and self.audio_fmt is not None
        flow = self._audio
        fmt = self.audio_fmt
        packetizer = AudioPacketizer(fmt, ssrc=self._ssrc[2], payload_type=self.cfg.audio.payload_type,
                                     sequence=random.getrandbits(16))
        number = 0
        async for chunk in self.audio_source.chunks(fmt, self.clock, start_ns=start_ns):
            if stop.is_set():
                break
            ts = rtp_timestamp(chunk.capture_ns, fmt.sample_rate)
            await self._audio_grains(flow, ts, chunk.capture_ns, len(chunk.samples), number)
            number += len(chunk.samples) // fmt.samples_per_packet
            batch = packetizer.packetize(chunk.samples, ts)
            await flow.sender.send_batch_async(batch)
            self.stats.audio_packets += len(batch.sizes)

    async def _audio_grains(self, flow: _OutFlow, ts: int, capture_ns: int, samples: int,
                            number: int) -> None:
        """One metadata grain per audio packet of a chunk (PS3.17 PPPP.9 "for every
        sample", read per packet: :func:`~rtstream.proto.rtv_metadata.audio_packet_grains`)."""
        assert self.audio_fmt is not None
        spp = self.audio_fmt.samples_per_packet
        now = self.clock.now_ns()
        for i, (pts, origin) in enumerate(audio_packet_grains(
                ts, capture_ns, packets=samples // spp, samples_per_packet=spp,
                sample_rate=self.audio_fmt.sample_rate)):
            grain = flow.builder.grain(origin=origin, frame_number=number + i + 1, now=now)
            for d in flow.meta_packetizer.packetize(grain, pts, sync=origin, origin=origin):
                await flow.meta_sender.send_async(d)
            self.stats.audio_grains += 1

    # ------------------------------------------------------------- rendition

    def _init_rendition(self, rnd: random.SystemRandom) -> None:
        """Identifiers of the right view and of the rendition flow."""
        self.right_stats = SenderStats()
        self._rend_ssrc = [rnd.getrandbits(32) for _ in range(3)]  # right video, its meta, rendition
        self._rend_ids = {name: uuid.uuid4() for name in (
            "right_source", "right_flow", "rmeta_source", "rmeta_flow", "rend_source", "rend_flow")}
        self._right: _OutFlow | None = None
        self._rendition: RenditionGrainBuilder | None = None
        self._rendition_packetizer: MetadataPacketizer | None = None
        self._rendition_sender: UdpSender | DupSender | None = None

    def _rendition_media(self, common: dict[str, Any], extmap: ExtMap) -> list[SdpMedia]:
        """SDP media of the right view (VIDR, VMETAR) and the rendition flow (REND)."""
        n = self.cfg.network
        rvport, rmport, rendport = self.cfg.rendition.ports(n.port)
        media: list[SdpMedia] = []
        if self.right_source is not None:
            media += [
                SdpMedia(kind=MediaKind.VIDEO, port=rvport, payload_type=self.cfg.video.payload_type,
                         clock_rate=VIDEO_CLOCK_RATE, video=self.fmt, mid="VIDR",
                         bottom_field_first=self._bottom_first(self.right_source), **common),
                SdpMedia(kind=MediaKind.METADATA, port=rmport, payload_type=n.metadata_payload_type,
                         clock_rate=VIDEO_CLOCK_RATE, extmap=extmap, mid="VMETAR", describes="VIDR",
                         **common),
            ]
        if self.cfg.sends_rendition:
            media.append(SdpMedia(kind=MediaKind.METADATA, port=rendport,
                                  payload_type=n.metadata_payload_type, clock_rate=VIDEO_CLOCK_RATE,
                                  extmap=extmap, mid="REND", rendition=True, **common))
        return media

    def _open_rendition(self) -> None:
        """Open the right view's flows and the rendition flow (in ``__aenter__``)."""
        assert self._video is not None
        rvport, rmport, rendport = self.cfg.rendition.ports(self.cfg.network.port)
        ids = self._rend_ids
        if self.right_source is not None:
            self._right = self._metadata_flow(
                sop=self.rtv_sop, bulk_ts=self.fmt.transfer_syntax_uid, rate=VIDEO_CLOCK_RATE,
                bulk_source=ids["right_source"], bulk_flow=ids["right_flow"],
                meta_source=ids["rmeta_source"], meta_flow=ids["rmeta_flow"],
                ssrc=self._rend_ssrc[1], port=rmport, duration=1 / self.fmt.exactframerate,
                bulk_sender=self._udp(rvport), video=self.fmt)
        if not self.cfg.sends_rendition:
            return
        members = [self._member(self._video, RenditionRole.LEFT if self._right else RenditionRole.VIDEO)]
        if self._right is not None:
            members.append(self._member(self._right, RenditionRole.RIGHT))
        if self._audio is not None:
            members.append(self._member(self._audio, RenditionRole.AUDIO))
        title = RenditionTitle.for_members(video=2 if self._right else 1,
                                           audio=1 if self._audio else 0,
                                           stereo=self._right is not None)
        uid = _generate_uid(self.context.uid_root)
        ptp = self.cfg.ptp_grandmaster is not None and _ptp_disciplined(self.clock)
        video_static = self._video.builder.static
        doc = rendition_document(
            self.context, sop_instance_uid=uid, members=members, title=title,
            created_ns=self.clock.now_ns(), ptp_synchronized=ptp,
            synchronization_uid=str(video_static.SynchronizationFrameOfReferenceUID))
        # (0002,0010) names the bulk flow's syntax; a rendition references the video's.
        meta = RtvMetaInfo(transfer_syntax_uid=self.fmt.transfer_syntax_uid,
                           sop_class_uid=RTV_RENDITION_SELECTION, sop_instance_uid=uid,
                           source_id=ids["rend_source"], flow_id=ids["rend_flow"],
                           sampling_rate=None)
        self._rendition = RenditionGrainBuilder(meta, doc)
        self._rendition_packetizer = MetadataPacketizer(
            ssrc=self._rend_ssrc[2], extmap=ExtMap.default(), source_id=ids["rend_source"],
            flow_id=ids["rend_flow"], payload_type=self.cfg.network.metadata_payload_type,
            max_payload=1460, sequence=random.getrandbits(16))
        self._rendition_sender = self._udp(rendport)

    @staticmethod
    def _member(flow: _OutFlow, role: RenditionRole) -> RenditionMember:
        meta = flow.builder.meta
        return RenditionMember(sop_class_uid=meta.sop_class_uid, sop_instance_uid=meta.sop_instance_uid,
                               source_id=meta.source_id, flow_id=meta.flow_id, role=role)

    def _rendition_tasks(self, tg: asyncio.TaskGroup, video: asyncio.Task[None], start_ns: int,
                         stop: asyncio.Event) -> None:
        """The right view's loop and the rendition loop, stopped with the left view."""
        tasks = []
        if self._right is not None:
            tasks.append(tg.create_task(self._video_loop(start_ns, stop, right=True), name="video-right"))
        if self._rendition is not None:
            tasks.append(tg.create_task(self._rendition_loop(stop), name="rendition"))
        for t in tasks:
            video.add_done_callback(lambda _v, t=t: t.cancel())  # type: ignore[misc]

    async def _rendition_loop(self, stop: asyncio.Event) -> None:
        """Send the rendition document every ``interval_ms`` (>= 1 Hz, PS3.22 §6.2.2),
        stamped with the 90 kHz media clock (its rate is ours: spec/ps322.md §2.7)."""
        assert self._rendition is not None and self._rendition_packetizer is not None
        assert self._rendition_sender is not None
        period = self.cfg.rendition.interval_ms / 1000
        while not stop.is_set():
            now = self.clock.now_ns()
            origin = PtpTimestamp.from_ns(now)
            grain = self._rendition.grain()
            for d in self._rendition_packetizer.packetize(
                    grain, rtp_timestamp(now, VIDEO_CLOCK_RATE), sync=origin, origin=origin):
                await self._rendition_sender.send_async(d)
            self.stats.rendition_grains += 1
            await asyncio.sleep(period)

    async def _status_loop(self, stop: asyncio.Event) -> None:
        assert self._status is not None
        last_frames, last_bytes, last_t = 0, 0, time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(1.0)
            now = time.monotonic()
            dt = max(now - last_t, 1e-6)
            live = dataclasses.replace(self.stats)
            live.fps = (self.stats.frames - last_frames) / dt
            live.mbps = (self.stats.bytes - last_bytes) * 8 / dt / 1e6
            last_frames, last_bytes, last_t = self.stats.frames, self.stats.bytes, now
            self._status(live)


def _generate_uid(uid_root: str = "") -> str:
    from rtstream.dicom.context import new_uid

    return new_uid(uid_root)


def rtv_sop_for(configured: RtvSop, modality: str) -> RtvSop:
    """The real-time video class for the imaged ``modality``.

    PS3.22's real-time video IODs are Endoscopic (Modality ES, PS3.3 A.32.9) and
    Photographic (XC, A.32.10): a source known to image anything but ES is sent as
    Photographic, the general visible-light class, with its own modality in the static
    part's Acquisition Context (README "Conformance"). ES or unknown: the configured class.
    """
    if modality and modality != "ES" and configured is not RtvSop.PHOTOGRAPHIC:
        log.info("modality %s: sending the Photographic real-time class (not %s)", modality,
                 configured.name.lower())
        return RtvSop.PHOTOGRAPHIC
    return configured


def _host_serial() -> str:
    """A stable identifier of this installation for Device Serial Number (Enhanced
    General Equipment, type 1): a hash of systemd's machine-id (never the id itself),
    ``UNKNOWN`` where there is none. Set ``context.device_serial`` to override."""
    import hashlib

    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            machine = Path(path).read_text().strip()
        except OSError:
            continue
        if machine:
            return "RTS-" + hashlib.sha256(b"rtstream:" + machine.encode()).hexdigest()[:16].upper()
    return "UNKNOWN"


def _ptp_disciplined(clock: Clock) -> bool:
    """Whether ``clock`` is PTP disciplined (:attr:`SystemClock.ptp_disciplined`); a clock
    that does not say (a test's FakeClock) is taken at the configuration's word."""
    return bool(getattr(clock, "ptp_disciplined", True))


def _local_mac(address: str) -> str:
    """MAC (``XX-XX-...``) of the interface holding ``address``; zeros when unknown."""
    import fcntl
    import socket
    import struct

    zero = "00-00-00-00-00-00"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _, name in socket.if_nameindex():
                try:
                    res = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
                except OSError:
                    continue  # no IPv4 address
                if socket.inet_ntoa(res[20:24]) == address:
                    mac = Path(f"/sys/class/net/{name}/address").read_text().strip()
                    return mac.replace(":", "-").upper() or zero
    except OSError:
        pass
    return zero


def _local_address_for(dest: str) -> str:
    """The local address the kernel would use towards ``dest`` (for the SDP ``o=`` line)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((dest, 9))
            addr: str = s.getsockname()[0]
            return addr
        except OSError:
            return "127.0.0.1"


__all__ = [
    "AudioConfig",
    "NetworkConfig",
    "Pacing",
    "PacingConfig",
    "RedundantConfig",
    "RenditionConfig",
    "Sender",
    "SenderConfig",
    "SenderStats",
    "VIDEO_SOPS",
    "VideoConfig",
    "load_sender_config",
]
