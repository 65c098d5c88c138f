"""One video encode per stream, shared by every viewer of that stream.

Theory of operation
-------------------
aiortc's :class:`~aiortc.RTCRtpSender` encodes each frame a track returns, once per peer
connection, with its own H.264/VP8 encoder whose bitrate and frame rate are capped by
module constants (``aiortc.codecs.h264.MAX_BITRATE`` = 3 Mbit/s, ``MAX_FRAME_RATE`` = 30).
But when a track returns an :class:`av.Packet` instead of a frame, the sender only
*packetizes* it (``Encoder.pack``: RFC 6184 STAP-A/FU-A for H.264, RFC 7741 for VP8) and
never touches the encoder or its ceilings.

So :class:`SharedEncoder` owns one PyAV encoder per (stream, codec) -- libx264 in the
constrained baseline profile with ``tune=zerolatency`` (one packet per frame, no
B-frames, no look-ahead) or libvpx in real-time mode -- configured with our own bitrate
and frame rate. Encoding runs in a worker thread. Every encoded frame is handed to each
subscribed :class:`PacketTrack`, one per peer connection, whose ``recv`` returns a fresh
:class:`av.Packet` carrying the same bytes. A new subscriber first waits for a key frame
and asks the encoder for one, so it never starts on a P-frame; a subscriber that falls
behind drops its backlog and waits for the next key frame the same way.

The packet ``pts`` (90 kHz) is the source frame's RTP timestamp, so what the browser sees
as the frame's RTP timestamp is the source timestamp plus one constant per-sender offset
(aiortc's random ``timestamp_origin``), which the server tells the page (see
:mod:`rtstream.viewer.server`).
"""

from __future__ import annotations

import asyncio
import enum
import fractions
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rtstream.errors import ConfigError

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)


class Codec(enum.Enum):
    """Video codecs the viewer can send (the encoding names of RFC 6184 and RFC 7741)."""

    H264 = "h264"
    VP8 = "vp8"

    @property
    def mime_type(self) -> str:
        """The RTP MIME type aiortc names the codec by."""
        return "video/H264" if self is Codec.H264 else "video/VP8"


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """How a stream is encoded for the browser.

    Parameters
    ----------
    codec : Codec
        H.264 (constrained baseline, decodable by every WebRTC browser) or VP8.
    bitrate : int
        Target bits per second (also the VBV maximum rate). 100 kbit/s .. 100 Mbit/s.
    fps : int
        The frame rate the rate control plans for (the source decides the real rate).
    keyframe_interval_s : float
        Seconds between periodic key frames (recovery from loss without a request).
    """

    codec: Codec = Codec.H264
    bitrate: int = 8_000_000
    fps: int = 60
    keyframe_interval_s: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.codec, Codec):
            raise ConfigError("codec", self.codec, "one of " + ", ".join(c.value for c in Codec))
        if not 100_000 <= self.bitrate <= 100_000_000:
            raise ConfigError("bitrate", self.bitrate, "an integer in 100000..100000000 bit/s")
        if not 1 <= self.fps <= 240:
            raise ConfigError("fps", self.fps, "an integer in 1..240")
        if not 0.1 <= self.keyframe_interval_s <= 60:
            raise ConfigError("keyframe_interval_s", self.keyframe_interval_s, "0.1..60 seconds")


@dataclass(frozen=True, kw_only=True)
class EncodedFrame:
    """One encoded picture and the source facts the page needs about it."""

    data: bytes
    rtp_timestamp: int
    keyframe: bool
    origin_ns: int | None
    overlay: Mapping[str, str]


def _level_for(width: int, height: int, fps: int) -> str:
    """Smallest H.264 level whose MaxFS and MaxMBPS hold the picture (ITU-T H.264 Table A-1)."""
    mbs = ((width + 15) // 16) * ((height + 15) // 16)
    for level, max_fs, max_mbps in (
        ("3.1", 3600, 108_000),
        ("4.0", 8192, 245_760),
        ("4.2", 8704, 522_240),
        ("5.1", 36_864, 983_040),
        ("5.2", 36_864, 2_073_600),
    ):
        if mbs <= max_fs and mbs * fps <= max_mbps:
            return level
    return "6.2"


class _Codec:
    """A PyAV encoder context (used from the worker thread only)."""

    def __init__(self, cfg: EncoderConfig, width: int, height: int) -> None:
        self.width = width
        self.height = height
        gop = max(1, round(cfg.keyframe_interval_s * cfg.fps))
        if cfg.codec is Codec.H264:
            ctx: Any = av.CodecContext.create("libx264", "w")
            ctx.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "profile": "baseline",
                "level": _level_for(width, height, cfg.fps),
                "maxrate": str(cfg.bitrate),
                # One frame's worth of VBV buffer keeps every frame near the mean size.
                "bufsize": str(max(cfg.bitrate // cfg.fps * 2, 100_000)),
                "forced-idr": "1",
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
            }
        else:
            ctx = av.CodecContext.create("libvpx", "w")
            ctx.gop_size = gop
            ctx.qmin = 4
            ctx.qmax = 56
            ctx.options = {
                "deadline": "realtime",
                "cpu-used": "8",
                "lag-in-frames": "0",
                "error-resilient": "1",
                "maxrate": str(cfg.bitrate),
                "bufsize": str(cfg.bitrate),
            }
            ctx.thread_count = 2
        ctx.width = width
        ctx.height = height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = _TIME_BASE
        ctx.framerate = fractions.Fraction(cfg.fps, 1)
        ctx.bit_rate = cfg.bitrate
        self.ctx = ctx
        self._last_pts: int | None = None
        self._pts_base = 0

    def encode(
        self, image: np.ndarray, pix_fmt: str, rtp_timestamp: int, keyframe: bool
    ) -> list[tuple[bytes, bool]]:
        frame = av.VideoFrame.from_ndarray(image, format=pix_fmt)
        if pix_fmt != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        # The encoder needs increasing pts: unwrap the 32-bit RTP timestamp.
        if self._last_pts is not None:
            delta = (rtp_timestamp - self._last_pts) & 0xFFFFFFFF
            if delta == 0 or delta >= 1 << 31:
                delta = 1
            pts = self._last_pts + delta
        else:
            pts = rtp_timestamp
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = _TIME_BASE
        frame.pict_type = (
            av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        )
        return [(bytes(p), bool(p.is_keyframe)) for p in self.ctx.encode(frame)]


@dataclass
class EncoderStats:
    """Counters of one shared encoder."""

    frames_in: int = 0
    frames_encoded: int = 0
    frames_dropped: int = 0
    keyframes: int = 0
    bytes_out: int = 0
    keyframe_requests: int = 0


class SharedEncoder:
    """Encode one stream once and fan the packets out to every subscribed track.

    Parameters
    ----------
    stream_id : str
        The stream this encoder serves (for logs and stats).
    cfg : EncoderConfig
        Codec, bitrate and frame rate.

    Notes
    -----
    ``SharedEncoder.created`` counts every instance ever made in the process; the tests
    read it to show that N viewers of one stream cost one encoder.
    """

    created = 0
    _ids = itertools.count(1)

    def __init__(self, stream_id: str, cfg: EncoderConfig) -> None:
        SharedEncoder.created += 1
        self.id = next(SharedEncoder._ids)
        self.stream_id = stream_id
        self.cfg = cfg
        self.stats = EncoderStats()
        self._codec: _Codec | None = None
        self._subscribers: set[PacketTrack] = set()
        self._want_keyframe = True
        self._pending: deque[tuple[np.ndarray, str, int, int | None, Mapping[str, str]]] = deque(
            maxlen=1
        )
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"encode-{stream_id}")
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def subscribers(self) -> int:
        """How many tracks receive this encoder's packets."""
        return len(self._subscribers)

    def start(self) -> None:
        """Start the encode loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"encode-{self.stream_id}-{self.cfg.codec.value}"
            )

    async def close(self) -> None:
        """Stop encoding, end every track and release the worker thread."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for track in list(self._subscribers):
            track.stop()
        self._executor.shutdown(wait=True)

    def request_keyframe(self) -> None:
        """Make the next encoded frame a key frame (IDR for H.264)."""
        if not self._want_keyframe:
            self.stats.keyframe_requests += 1
            self._want_keyframe = True

    def subscribe(self) -> PacketTrack:
        """A new track for one peer connection; it starts at a key frame.

        The key frame is requested when the track's sender first asks for a packet
        (after ICE and DTLS), not now, so a viewer that never connects costs nothing.
        """
        track = PacketTrack(self)
        self._subscribers.add(track)
        return track

    def _unsubscribe(self, track: PacketTrack) -> None:
        self._subscribers.discard(track)

    def submit(
        self,
        image: np.ndarray,
        pix_fmt: str,
        rtp_timestamp: int,
        origin_ns: int | None,
        overlay: Mapping[str, str],
    ) -> None:
        """Offer a source frame; a frame still waiting when the next arrives is dropped.

        Nothing is encoded while no track is subscribed.
        """
        self.stats.frames_in += 1
        if not self._subscribers:
            return
        if self._pending:
            self.stats.frames_dropped += 1
        self._pending.append((image, pix_fmt, rtp_timestamp, origin_ns, overlay))
        self._wake.set()

    def _encode_sync(
        self, image: np.ndarray, pix_fmt: str, rtp_timestamp: int, keyframe: bool
    ) -> list[tuple[bytes, bool]]:
        with self._lock:
            height, width = image.shape[0], image.shape[1]
            if pix_fmt == "yuv420p":
                height = height * 2 // 3
            if self._codec is None or (self._codec.width, self._codec.height) != (width, height):
                log.info(
                    "stream %s: %s encoder %dx%d at %d bit/s, %d fps",
                    self.stream_id,
                    self.cfg.codec.value,
                    width,
                    height,
                    self.cfg.bitrate,
                    self.cfg.fps,
                )
                self._codec = _Codec(self.cfg, width, height)
                keyframe = True
            return self._codec.encode(image, pix_fmt, rtp_timestamp, keyframe)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                image, pix_fmt, rtp, origin_ns, overlay = self._pending.popleft()
                keyframe = self._want_keyframe
                self._want_keyframe = False
                try:
                    packets = await loop.run_in_executor(
                        self._executor, self._encode_sync, image, pix_fmt, rtp, keyframe
                    )
                except (av.FFmpegError, ValueError) as exc:
                    log.warning("stream %s: encode failed: %s", self.stream_id, exc)
                    continue
                for data, is_key in packets:
                    self.stats.frames_encoded += 1
                    self.stats.bytes_out += len(data)
                    self.stats.keyframes += is_key
                    enc = EncodedFrame(
                        data=data,
                        rtp_timestamp=rtp,
                        keyframe=is_key,
                        origin_ns=origin_ns,
                        overlay=overlay,
                    )
                    for track in list(self._subscribers):
                        track._offer(enc)


FrameListener = Callable[[EncodedFrame], None]


class PacketTrack(MediaStreamTrack):
    """A video track for one peer connection that returns pre-encoded packets.

    aiortc's sender calls :meth:`recv`; because the result is an :class:`av.Packet` the
    sender only packetizes it. ``on_frame`` listeners run just before a frame is handed
    to the sender (the server uses this to send the frame's overlay on the data channel).
    """

    kind = "video"
    _QUEUE = 8

    def __init__(self, encoder: SharedEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self._queue: asyncio.Queue[EncodedFrame] = asyncio.Queue(self._QUEUE)
        self._synced = False
        self.frame_listeners: list[FrameListener] = []
        self.frames_sent = 0
        self.frames_skipped = 0
        self._arrived = asyncio.Event()

    def _offer(self, enc: EncodedFrame) -> None:
        if not self._synced:
            if not enc.keyframe:
                self.frames_skipped += 1
                return
            self._synced = True
        if self._queue.full():
            # Too far behind: drop the backlog and restart at a key frame.
            self.frames_skipped += self._queue.qsize() + 1
            while not self._queue.empty():
                self._queue.get_nowait()
            self._synced = False
            return
        self._queue.put_nowait(enc)
        self._arrived.set()

    async def recv(self) -> Any:
        """The next encoded frame as a packet with 90 kHz ``pts`` = source RTP timestamp."""
        enc = await self.next_frame()
        packet = av.Packet(enc.data)
        packet.pts = enc.rtp_timestamp
        packet.time_base = _TIME_BASE
        return packet

    async def next_frame(self) -> EncodedFrame:
        """The next encoded frame itself (for senders that packetize on their own, such as
        :mod:`rtstream.viewer.janus`); the first one is a key frame."""
        if self.readyState != "live":
            raise MediaStreamError
        while not self._synced and self._queue.empty():
            # The sender is waiting for us: ask for a key frame now, and again every half
            # second until one arrives (a request is a flag, so repeats cost nothing).
            self.encoder.request_keyframe()
            try:
                async with asyncio.timeout(0.5):  # not wait_for: 3.11's can swallow a cancel
                    await self._wait_queued()
            except TimeoutError:
                continue
        enc = await self._queue.get()
        for listener in self.frame_listeners:
            listener(enc)
        self.frames_sent += 1
        return enc

    async def _wait_queued(self) -> None:
        while self._queue.empty():
            self._arrived.clear()
            await self._arrived.wait()

    def stop(self) -> None:
        """End the track and leave the encoder."""
        self.encoder._unsubscribe(self)
        super().stop()


@dataclass
class EncoderRegistry:
    """Shared encoders by (stream, codec): created on the first viewer, kept after."""

    cfg: EncoderConfig
    encoders: dict[tuple[str, Codec], SharedEncoder] = field(default_factory=dict)

    def get(self, stream_id: str, codec: Codec) -> SharedEncoder:
        """The one encoder of ``stream_id`` in ``codec``, made and started on first use."""
        key = (stream_id, codec)
        enc = self.encoders.get(key)
        if enc is None:
            cfg = EncoderConfig(
                codec=codec,
                bitrate=self.cfg.bitrate,
                fps=self.cfg.fps,
                keyframe_interval_s=self.cfg.keyframe_interval_s,
            )
            enc = self.encoders[key] = SharedEncoder(stream_id, cfg)
            enc.start()
        return enc

    def for_stream(self, stream_id: str) -> list[SharedEncoder]:
        """Every encoder of one stream."""
        return [e for (s, _), e in self.encoders.items() if s == stream_id]

    async def close(self) -> None:
        """Close every encoder."""
        for enc in self.encoders.values():
            await enc.close()
        self.encoders.clear()
