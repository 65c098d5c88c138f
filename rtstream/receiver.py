"""Receive a DICOM-RTV rendition: video, audio and metadata flows, synchronized.

Theory of operation
-------------------
The SDP (a file or an ``http://`` URL) lists the flows. Every flow gets a
:class:`~rtstream.net.udp.UdpReceiver` (non-blocking, big ``SO_RCVBUF``, UDP GRO when
the kernel offers it, multicast joins including source-specific ones from
``a=source-filter``) registered with ``loop.add_reader``: each readiness event drains the
socket into one numpy batch and hands it to the flow's sans-I/O core:

* video -> :class:`~rtstream.proto.rfc4175.VideoDepacketizer` (reorder window,
  duplicates, late packets, loss by extended sequence number, frame completion on the
  marker or a new timestamp, a mask of missing rows);
* metadata -> :class:`~rtstream.proto.rtv_metadata.MetadataDepacketizer` (PS3.22 grains);
* audio -> :class:`~rtstream.proto.st2110_30.AudioDepacketizer`.

Frames and grains meet in a :class:`~rtstream.proto.pairing.Pairer` per video flow: a
frame gets the grain of exactly its RTP timestamp (PS3.17 PPPP.7) within a bounded wait,
else it goes on without metadata. Audio chunks are put in timestamp order and placed on
the common clock (ST 2110-10 media clock). What comes out is a stream of
:class:`ReceivedItem` read with ``async for item in rx``.

Actions (snapshot, clip recording) copy frames, build stored DICOM instances in a worker
thread (PyAV, pydicom) and hand them to :class:`~rtstream.pacs.store.StoreClient`, whose
persistent outbox sends them by C-STORE or writes them to a folder. Dump files are
written by a worker thread too: the event loop only drains sockets and moves arrays.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.uid import generate_uid

from rtstream.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from rtstream.pacs.store import TlsSettings
from rtstream.proto.clock import PtpTimestamp
from rtstream.proto.formats import AudioFormat, VideoFormat
from rtstream.proto.pairing import AudioOrderer, MediaClock, PairedFrame, Pairer
from rtstream.sysclock import SystemClock

log = logging.getLogger(__name__)

#: A video batch without a marker bit is kept for the next readiness event up to this
#: many rows (about a quarter of a 1080p frame) ...
_HOLD_ROWS = 1024
#: ... or this long (a sender that never sets the marker still gets its frames).
_HOLD_S = 0.001
#: A held batch that grew by fewer rows than this in a read of a socket without GRO
#: stops the socket's readiness events until the hold timer reads it.
_PACE_ROWS = 64
#: A frame still being assembled when its flow has been silent this long (at least two
#: frame periods) is delivered as it is: its marker packet was lost and no next frame
#: came (the sender stopped).
_SILENCE_S = 0.1

__all__ = [
    "IncompletePolicy",
    "ItemKind",
    "ReceivedItem",
    "Receiver",
    "ReceiverConfig",
    "SnapshotResult",
]

STAT_KEYS = (
    "packets",
    "packets_lost",
    "packets_malformed",
    "reordered",
    "duplicates",
    "late",
    "frames_complete",
    "frames_incomplete",
    "grains_complete",
    "grains_dropped",
    "metadata_matched",
    "metadata_unmatched",
)


class ItemKind(enum.Enum):
    """What a :class:`ReceivedItem` carries."""

    VIDEO = "video"
    AUDIO = "audio"


class IncompletePolicy(enum.Enum):
    """What to do with a frame that lost packets."""

    DROP = "drop"
    DELIVER = "deliver"


def _default_outbox() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "rtstream" / "outbox"


@dataclass(frozen=True, kw_only=True)
class ReceiverConfig:
    """Configuration of a :class:`Receiver`.

    Parameters
    ----------
    sdp : str
        Path of an SDP file, or an ``http://``/``https://`` URL to GET it from.
    frames : int or None
        Stop after this many video items were delivered.
    duration : float or None
        Stop after this many seconds.
    incomplete : IncompletePolicy
        Drop frames that lost packets, or deliver them flagged (``complete=False`` and
        ``missing_rows``).
    pairing_wait_frames : float
        How long a frame waits for its metadata grain (and a grain for its frame), in
        frame periods of the video flow.
    audio_wait_ms : float
        How long audio chunks may be held to put late ones back in order.
    rcvbuf : int
        Requested ``SO_RCVBUF`` per socket in bytes.
    interface : str or None
        Interface (name or IPv4 address) for multicast joins.
    bind_address : str or None
        Receive unicast flows on this local address instead of the SDP's.
    dump_frames, dump_metadata : Path or None
        Write each complete frame (wire pgroup order) as ``<rtp-timestamp>.raw`` and each
        grain as received as ``<rtp-timestamp>.dcm``; existing files are never replaced.
    snapshot_every : float or None
        Take a snapshot every this many seconds.
    record : float or None
        Record a clip of this many seconds from the first frame on, then store it.
    record_max_frames : int
        Bound on the frames one clip may hold in memory.
    store : str or None
        ``AET@HOST:PORT`` of the archive for C-STORE.
    store_dir : Path or None
        Save stored instances into this folder instead of sending them.
    outbox : Path or None
        The persistent outbox (default ``$XDG_STATE_HOME/rtstream/outbox``).
    calling_aet : str
        Our AE title for C-STORE.
    store_tls : TlsSettings or None
        DICOM TLS for the C-STORE association (PS3.15 Annex B.1); None for plain TCP.
    queue_size : int
        Items buffered for a slow consumer; beyond it the oldest are dropped (counted).
    """

    sdp: str
    frames: int | None = None
    duration: float | None = None
    incomplete: IncompletePolicy = IncompletePolicy.DROP
    pairing_wait_frames: float = 2.0
    audio_wait_ms: float = 2.0
    rcvbuf: int = 32 << 20
    interface: str | None = None
    bind_address: str | None = None
    dump_frames: Path | None = None
    dump_metadata: Path | None = None
    snapshot_every: float | None = None
    record: float | None = None
    record_max_frames: int = 1800
    store: str | None = None
    store_dir: Path | None = None
    outbox: Path | None = None
    calling_aet: str = "RTSTREAM"
    store_tls: TlsSettings | None = None
    queue_size: int = 256

    def __post_init__(self) -> None:
        if not isinstance(self.sdp, str) or not self.sdp:
            raise ConfigError("sdp", self.sdp, "an SDP file path or an http:// URL")
        if self.frames is not None and self.frames < 1:
            raise ConfigError("frames", self.frames, "a positive number of frames")
        if self.duration is not None and not self.duration > 0:
            raise ConfigError("duration", self.duration, "a positive number of seconds")
        if not isinstance(self.incomplete, IncompletePolicy):
            try:
                object.__setattr__(self, "incomplete", IncompletePolicy(self.incomplete))
            except ValueError:
                raise ConfigError("incomplete", self.incomplete, "'drop' or 'deliver'") from None
        if not 0 <= self.pairing_wait_frames <= 1000:
            raise ConfigError("pairing_wait_frames", self.pairing_wait_frames, "0..1000 frames")
        if not 0 <= self.audio_wait_ms <= 1000:
            raise ConfigError("audio_wait_ms", self.audio_wait_ms, "0..1000 ms")
        if self.rcvbuf < 4096:
            raise ConfigError("rcvbuf", self.rcvbuf, "at least 4096 bytes")
        for key in ("snapshot_every", "record"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ConfigError(key, value, "a positive number of seconds")
        if self.record_max_frames < 1:
            raise ConfigError("record_max_frames", self.record_max_frames, "at least 1")
        if self.queue_size < 1:
            raise ConfigError("queue_size", self.queue_size, "at least 1")
        for key in ("dump_frames", "dump_metadata", "store_dir", "outbox"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, Path(value))
        if self.store is not None and self.store_dir is not None:
            raise ConfigError("store", self.store, "either --store or --store-dir, not both")
        if self.store is not None:
            from rtstream.pacs.store import parse_store_target

            parse_store_target(self.store)

    @property
    def stores(self) -> bool:
        """True when stored instances have somewhere to go."""
        return self.store is not None or self.store_dir is not None


@dataclass
class ReceivedItem:
    """One synchronized item: a video frame with its metadata, or an audio chunk.

    Attributes
    ----------
    kind : ItemKind
    rtp_timestamp, ssrc : int
    frame : numpy.ndarray or None
        Active video in wire pgroup order (``fmt.frame_bytes`` uint8).
    fmt : VideoFormat or None
    complete : bool
        False when the frame lost packets (then ``missing_rows`` says which SRD rows).
    missing_rows : numpy.ndarray or None
    metadata : Dataset or None
        The grain's data set (dynamic part, and the static part when the grain had one).
    static : Dataset or None
        The latest static part received on the metadata flow.
    origin : PtpTimestamp or None
        Capture instant: the grain's Frame Origin Timestamp, else the RTP timestamp on
        the common media clock.
    received_ns : int
        When the last packet of the frame (or chunk) was read from the socket.
    audio : numpy.ndarray or None
        ``(samples, channels)`` int32 for audio items.
    audio_fmt : AudioFormat or None
    grain_raw : bytes or None
        The metadata grain as received (RTV meta information + data set).
    rtv_sop_instance_uid : str or None
        The RTV Communication SOP Instance UID of the paired grain.
    flow : str
        ``a=mid`` of the flow (or ``video0``, ``audio0``...).
    """

    kind: ItemKind
    rtp_timestamp: int
    ssrc: int
    frame: np.ndarray | None = None
    fmt: VideoFormat | None = None
    complete: bool = True
    missing_rows: np.ndarray | None = None
    metadata: Dataset | None = None
    static: Dataset | None = None
    origin: PtpTimestamp | None = None
    received_ns: int = 0
    audio: np.ndarray | None = None
    audio_fmt: AudioFormat | None = None
    grain_raw: bytes | None = None
    rtv_sop_instance_uid: str | None = None
    flow: str = ""
    delivered_ns: int = 0

    def rgb(self) -> np.ndarray:
        """The frame as an ``(height, width, 3)`` uint8 RGB array (BT.601 conversion)."""
        if self.frame is None or self.fmt is None:
            raise LocalProtocolError("rgb(): this item carries no video frame")
        from rtstream.proto.pixfmt import from_wire

        return from_wire(self.frame, self.fmt, "rgb24")


@dataclass(frozen=True)
class SnapshotResult:
    """The outcome of a snapshot or clip: the stored instance and where it went."""

    sop_instance_uid: str
    ok: bool
    store: Any = None  # rtstream.pacs.store.StoreResult when it was stored
    dataset: Dataset | None = None


# --------------------------------------------------------------------------------------
# per-flow state
# --------------------------------------------------------------------------------------


@dataclass
class _Flow:
    name: str
    media: Any  # SdpMedia
    sock: Any = None  # UdpReceiver
    packets: int = 0
    batch: int = 256  # rows of the socket's batch
    paused: bool = False  # by pause_flow (a control command): its socket is not read


class _SeqAccount:
    """Loss, duplicates and reordering by RTP sequence number (RFC 3550 A.1), per SSRC.

    Used for the metadata flows, whose depacketizer reassembles grains but does not
    account for packets it never saw.
    """

    def __init__(self) -> None:
        self.ssrc: int | None = None
        self.first = 0
        self.highest = 0
        self.unique = 0
        self.duplicates = 0
        self.reordered = 0
        self.lost_before = 0  # of previous SSRCs
        self._seen: deque[int] = deque(maxlen=1024)
        self._seen_set: set[int] = set()

    @property
    def lost(self) -> int:
        if self.ssrc is None:
            return self.lost_before
        return self.lost_before + max(0, self.highest - self.first + 1 - self.unique)

    def add(self, ssrc: int, seq: int) -> None:
        if ssrc != self.ssrc:
            self.lost_before = self.lost
            self.ssrc = ssrc
            self.first = self.highest = seq
            self.unique = 1
            self._seen.clear()
            self._seen_set = {seq}
            self._seen.append(seq)
            return
        delta = ((seq - self.highest + 0x8000) & 0xFFFF) - 0x8000
        ext = self.highest + delta
        if ext in self._seen_set:
            self.duplicates += 1
            return
        if ext < self.highest:
            self.reordered += 1
        else:
            self.highest = ext
        if ext < self.first:
            self.first = ext
        self.unique += 1
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(ext)
        self._seen_set.add(ext)


@dataclass
class _MetaFlow(_Flow):
    seq: _SeqAccount = field(default_factory=_SeqAccount)
    depkt: Any = None
    target: _Flow | None = None
    static: Dataset | None = None
    static_uid: str | None = None
    grains_complete: int = 0
    grains_dropped: int = 0
    recent: dict[int, Any] = field(default_factory=dict)  # audio: ts -> GrainEvent


@dataclass
class _VideoFlow(_Flow):
    fmt: VideoFormat | None = None
    depkt: Any = None
    pairer: Pairer[Any, Any] | None = None
    meta: _MetaFlow | None = None
    clock: MediaClock | None = None
    last: ReceivedItem | None = None
    recent: deque[ReceivedItem] = field(default_factory=lambda: deque(maxlen=8))
    dropped_incomplete: int = 0
    hold_timer: asyncio.TimerHandle | None = None
    reader_off: bool = False  # not watched until the hold timer (datagrams trickling in)
    last_rx_ns: int = 0  # when the last datagram was read


@dataclass
class _AudioFlow(_Flow):
    fmt: AudioFormat | None = None
    depkt: Any = None
    orderer: AudioOrderer[ReceivedItem] | None = None
    meta: _MetaFlow | None = None
    clock: MediaClock | None = None
    lost: int = 0
    chunks: int = 0


@dataclass
class _Recording:
    flow: _VideoFlow
    frames: list[np.ndarray] = field(default_factory=list)
    first: ReceivedItem | None = None
    static: Dataset | None = None
    limit: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


# --------------------------------------------------------------------------------------
# the receiver
# --------------------------------------------------------------------------------------


class Receiver:
    """Receive a PS3.22 / ST 2110 rendition described by an SDP.

    Examples
    --------
    >>> async with Receiver(ReceiverConfig(sdp="stream.sdp", frames=10)) as rx:  # doctest: +SKIP
    ...     async for item in rx:
    ...         print(item.rtp_timestamp, item.metadata is not None)
    ...     print(rx.stats["metadata_matched"])
    """

    def __init__(self, cfg: ReceiverConfig, *, clock: Any = None) -> None:
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self.session: Any = None  # SdpSession
        self.video: list[_VideoFlow] = []
        self.audio: list[_AudioFlow] = []
        self.metadata: list[_MetaFlow] = []
        self.store_client: Any = None
        # One series per receiving session: every snapshot and clip it stores goes there.
        self.series_instance_uid: str = generate_uid()
        self._instance_number = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._items: deque[ReceivedItem] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtstream-rx-io")
        self._work = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtstream-rx-build")
        self._io_pending: set[Future[Any]] = set()
        self._io_errors = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._latency = np.zeros(1 << 16, np.int64)
        self._latency_n = 0
        self._delivered_video = 0
        self._delivered_audio = 0
        self._consumer_drops = 0
        self._started = 0.0
        self._deadline: float | None = None
        self._recording: _Recording | None = None
        self._snapshots: list[SnapshotResult] = []
        self._store_futures: set[asyncio.Future[Any]] = set()
        self._errors: list[BaseException] = []
        self._store_counters: dict[str, int] | None = None
        from rtstream.dicom.realtime import StaticTracker

        self._statics = StaticTracker()

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Receiver:
        self._loop = asyncio.get_running_loop()
        try:
            text = await self._load_sdp()
            from rtstream.proto.sdp import parse_sdp

            self.session = parse_sdp(text)
            self._build_flows()
            for d in (self.cfg.dump_frames, self.cfg.dump_metadata):
                if d is not None:
                    d.mkdir(parents=True, exist_ok=True)
            if self.cfg.stores:
                await self._open_store()
            if self.metadata:
                _warm_up_grain_decoder()
            self._open_sockets()
            log.info(
                "receiving from %s: %d video, %d audio, %d metadata flow(s)",
                self.cfg.sdp, len(self.video), len(self.audio), len(self.metadata),
            )
        except BaseException:
            await self.aclose()
            raise
        self._started = time.monotonic()
        if self.cfg.duration is not None:
            self._deadline = self._started + self.cfg.duration
            self._loop.call_later(self.cfg.duration, self._wake.set)
        if self.cfg.snapshot_every is not None:
            self._spawn(self._snapshot_every(self.cfg.snapshot_every), "rtstream-rx-snapshots")
        if self.cfg.record is not None and self.video:
            self.record_start(seconds=self.cfg.record)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop receiving, finish pending stores and dump writes, close everything."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        loop = self._loop
        for f in (*self.video, *self.audio, *self.metadata):
            if isinstance(f, _VideoFlow) and f.hold_timer is not None:
                f.hold_timer.cancel()
            if f.sock is not None:
                if loop is not None:
                    with contextlib.suppress(Exception):
                        loop.remove_reader(f.sock.fileno())
                f.sock.close()
                f.sock = None
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        rec = self._recording
        if rec is not None and rec.frames and self.store_client is not None:
            with contextlib.suppress(Exception):
                await self.record_stop()
        if self._store_futures:
            await asyncio.wait(list(self._store_futures), timeout=30)
        if self.store_client is not None:
            try:
                await asyncio.wait_for(self.store_client.flush(), timeout=30)
            except (TimeoutError, Exception):
                log.warning("store: instances still queued stay in the outbox for the next run")
            self._store_counters = dict(self.store_client.counters)
            await self.store_client.aclose()
            self.store_client = None
        await asyncio.get_running_loop().run_in_executor(None, self._drain_io)
        self._io.shutdown(wait=True)
        self._work.shutdown(wait=True)

    def _drain_io(self) -> None:
        for fut in list(self._io_pending):
            with contextlib.suppress(Exception):
                fut.result(timeout=60)

    def __aiter__(self) -> Receiver:
        return self

    async def __anext__(self) -> ReceivedItem:
        while True:
            if self._limit_reached():
                raise StopAsyncIteration
            if self._errors:
                raise self._errors.pop(0)
            if self._items:
                item = self._items.popleft()
                now = self.clock.now_ns()
                item.delivered_ns = now
                if item.kind is ItemKind.VIDEO:
                    self._delivered_video += 1
                    self._latency[self._latency_n % len(self._latency)] = now - item.received_ns
                    self._latency_n += 1
                else:
                    self._delivered_audio += 1
                return item
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            timeout = None
            if self._deadline is not None:
                timeout = max(0.0, self._deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _limit_reached(self) -> bool:
        if self.cfg.frames is not None and self._delivered_video >= self.cfg.frames:
            return True
        return self._deadline is not None and time.monotonic() >= self._deadline

    # -- setup --------------------------------------------------------------------------

    async def _load_sdp(self) -> str:
        src = self.cfg.sdp
        if src.startswith(("http://", "https://")):
            import aiohttp

            try:
                timeout = aiohttp.ClientTimeout(total=10)
                async with aiohttp.ClientSession(timeout=timeout) as http:
                    async with http.get(src) as resp:
                        if resp.status != 200:
                            raise ConfigError("sdp", src, f"a URL answering 200 (got {resp.status})")
                        return await resp.text()
            except aiohttp.ClientError as exc:
                raise ConfigError("sdp", src, f"a reachable URL ({exc})") from None
        try:
            return await asyncio.to_thread(Path(src).read_text)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("sdp", src, f"a readable SDP file ({exc})") from None

    def _build_flows(self) -> None:
        from rtstream.proto.rfc4175 import VideoDepacketizer

        sess = self.session
        for i, m in enumerate(sess.video()):
            fmt = m.video
            wait = int(fmt.frame_duration_ns * self.cfg.pairing_wait_frames)
            self.video.append(
                _VideoFlow(
                    name=m.mid or f"video{i}",
                    media=m,
                    fmt=fmt,
                    depkt=VideoDepacketizer(fmt, payload_type=m.payload_type),
                    pairer=Pairer(wait_ns=wait, max_pending=64),
                    clock=MediaClock(clock_rate=m.clock_rate, offset=m.mediaclk_offset or 0),
                )
            )
            # Frame buffers for what is held at once (the recent frames, the consumer's
            # queue, the pairing wait), faulted in now rather than during the first
            # second of the stream; at most ~64 MB.
            self.video[-1].depkt.prepare(max(4, min(12, (64 << 20) // fmt.frame_bytes)))
        for i, m in enumerate(sess.audio()):
            from rtstream.proto.st2110_30 import AudioDepacketizer

            self.audio.append(
                _AudioFlow(
                    name=m.mid or f"audio{i}",
                    media=m,
                    fmt=m.audio,
                    depkt=AudioDepacketizer(m.audio, payload_type=m.payload_type),
                    orderer=AudioOrderer(wait_ns=int(self.cfg.audio_wait_ms * 1e6)),
                    clock=MediaClock(clock_rate=m.clock_rate, offset=m.mediaclk_offset or 0),
                )
            )
        metas = list(sess.metadata())
        if metas:
            from rtstream.proto.rtv_metadata import MetadataDepacketizer
        by_mid: dict[str, _Flow] = {f.name: f for f in (*self.video, *self.audio)}
        unclaimed_video = list(self.video)
        unclaimed_audio = list(self.audio)
        for i, m in enumerate(metas):
            mf = _MetaFlow(
                name=m.mid or f"metadata{i}",
                media=m,
                depkt=MetadataDepacketizer(extmap=m.extmap),
            )
            target: _Flow | None = None
            if m.describes is not None:
                target = by_mid.get(m.describes)
                if target is None:
                    log.warning("metadata flow %s describes unknown mid %r", mf.name, m.describes)
            if target is None:
                # no a=x-rtstream-describes: the first unclaimed flow of the same clock
                for cand in (*unclaimed_video, *unclaimed_audio):
                    if cand.media.clock_rate == m.clock_rate:
                        target = cand
                        break
            if isinstance(target, _VideoFlow) and target.meta is None:
                target.meta = mf
                unclaimed_video.remove(target)
            elif isinstance(target, _AudioFlow) and target.meta is None:
                target.meta = mf
                unclaimed_audio.remove(target)
            else:
                target = None
                log.warning("metadata flow %s describes no video or audio flow here", mf.name)
            mf.target = target
            self.metadata.append(mf)
        if not self.video and not self.audio:
            raise ConfigError("sdp", self.cfg.sdp, "an SDP with at least one video or audio flow")
        if not metas:
            log.info(
                "SDP has no DICOM-RTV metadata flow: receiving video/audio only "
                "(no patient/study identity, no per-frame metadata)"
            )
        for vf in self.video:
            if vf.meta is None and metas:
                log.info("video flow %s has no metadata flow: frames come without metadata", vf.name)

    def _open_sockets(self) -> None:
        from rtstream.net.udp import UdpReceiver, is_multicast

        assert self._loop is not None
        for f in (*self.video, *self.audio, *self.metadata):
            m = f.media
            address = m.address
            if not is_multicast(address) and self.cfg.bind_address is not None:
                address = self.cfg.bind_address
            if isinstance(f, _VideoFlow):
                assert f.fmt is not None
                width = max(2048, (f.fmt.maxudp or 1460) + 256)
                # about one 1080p frame per drain: the per-batch cost of the vectorized
                # parser is paid ~once per frame (GRO reads land without a copy)
                batch = 4096
            else:
                width, batch = 9000, 256
            kwargs: dict[str, Any] = dict(
                source=m.source_filter if is_multicast(address) else None,
                interface=self.cfg.interface,
                rcvbuf=self.cfg.rcvbuf,
                max_datagram=width,
                batch=batch,
            )
            try:
                sock = UdpReceiver(address, m.port, **kwargs)
            except ConfigError:
                if is_multicast(address):
                    raise
                # a unicast c= address that is not ours (a sender's address): any local one
                log.info("cannot bind %s:%d, receiving on 0.0.0.0:%d", address, m.port, m.port)
                sock = UdpReceiver("0.0.0.0", m.port, **kwargs)
            f.sock = sock
            f.batch = batch
            self._loop.add_reader(sock.fileno(), self._on_readable, f)
            if isinstance(f, _VideoFlow):
                self._loop.call_later(_SILENCE_S, self._check_silence, f)
            log.debug("%s: listening on %s:%d", f.name, address, m.port)

    async def _open_store(self) -> None:
        from rtstream.pacs.store import StoreClient, StoreConfig

        outbox = self.cfg.outbox or _default_outbox()
        if self.cfg.store_dir is not None:
            scfg = StoreConfig(
                outbox=outbox, save_dir=self.cfg.store_dir, calling_aet=self.cfg.calling_aet
            )
        else:
            assert self.cfg.store is not None
            scfg = StoreConfig.from_target(
                self.cfg.store, outbox=outbox, calling_aet=self.cfg.calling_aet,
                tls=self.cfg.store_tls,
            )
        client = StoreClient(scfg)
        self.store_client = await client.__aenter__()

    # -- data path ----------------------------------------------------------------------

    def _on_readable(self, flow: _Flow, flush: bool = False) -> None:
        try:
            if isinstance(flow, _VideoFlow):
                self._read_video(flow, flush)
            elif isinstance(flow, _MetaFlow):
                self._read_metadata(flow)
            elif isinstance(flow, _AudioFlow):
                self._read_audio(flow)
        except Exception as exc:  # a bug: surface it to the consumer, do not spin
            log.exception("receiver: error while reading %s", flow.name)
            self._errors.append(exc)
            if self._loop is not None and flow.sock is not None:
                self._loop.remove_reader(flow.sock.fileno())
            self._wake.set()
        self._schedule_poll()

    def _drain(self, flow: _Flow) -> tuple[np.ndarray, np.ndarray, int] | None:
        sock = flow.sock
        if sock is None:
            return None
        batch, lengths = sock.drain()
        if len(lengths) == 0:
            return None
        flow.packets += sock.new_rows
        return batch, lengths, self.clock.now_ns()

    def _read_video(self, flow: _VideoFlow, flush: bool = False) -> None:
        # Up to 4 full batches (about one 1080p frame) per readiness event, then the other
        # flows, the timers and the consumer get their turn; epoll reports the socket
        # readable again on the next loop iteration if data is left.
        #
        # A sender paces a frame out in bursts, so each event brings a few hundred
        # datagrams. Decoding costs per batch as much as per datagram, so the rows of an
        # event without a marker bit are kept in the socket's buffer and decoded with the
        # next ones, up to _HOLD_ROWS rows or _HOLD_S seconds: a frame ends with its
        # marker packet, which is decoded at once, so no frame waits.
        for _ in range(4):
            got = self._drain(flow)
            if got is None:
                return
            batch, lengths, now = got
            flow.last_rx_ns = now
            n = len(lengths)
            new = flow.sock.new_rows
            if (
                not flush
                and n < _HOLD_ROWS
                and batch.shape[1] > 1
                and not (batch[n - new :, 1] & 0x80).any()
                and flow.sock.hold()
            ):
                if flow.hold_timer is None and self._loop is not None:
                    flow.hold_timer = self._loop.call_later(_HOLD_S, self._flush_held, flow)
                    if new < _PACE_ROWS and not flow.sock.gro:
                        # One datagram per wake-up (a sender without GSO on a path that
                        # does not coalesce): let them queue in the socket until the timer.
                        self._loop.remove_reader(flow.sock.fileno())
                        flow.reader_off = True
                return
            if flow.hold_timer is not None:
                flow.hold_timer.cancel()
                flow.hold_timer = None
            for ev in flow.depkt.feed(batch, lengths, now):
                self._on_frame(flow, ev, now)
            if n < flow.batch:
                return

    def _check_silence(self, flow: _VideoFlow) -> None:
        if self._closed or flow.sock is None or self._loop is None:
            return
        assert flow.fmt is not None
        silence = max(_SILENCE_S, 2 * float(flow.fmt.frame_duration_ns) / 1e9)
        # A busy loop may not have read the socket for a while: what waits there is not
        # silence. Read it first.
        if not flow.paused and not flow.reader_off:
            self._on_readable(flow, flush=True)
        now = self.clock.now_ns()
        if now - flow.last_rx_ns >= silence * 1e9 and not flow.paused:
            for ev in flow.depkt.flush():
                self._on_frame(flow, ev, now)
            self._schedule_poll()
        self._loop.call_later(silence / 2, self._check_silence, flow)

    def _flush_held(self, flow: _VideoFlow) -> None:
        flow.hold_timer = None
        if flow.sock is None or self._closed or self._loop is None:
            return
        if flow.reader_off:
            flow.reader_off = False
            if flow.paused:
                return
            self._loop.add_reader(flow.sock.fileno(), self._on_readable, flow)
        self._on_readable(flow, flush=True)

    def _on_frame(self, flow: _VideoFlow, ev: Any, now: int) -> None:
        item = ReceivedItem(
            kind=ItemKind.VIDEO,
            rtp_timestamp=ev.rtp_timestamp,
            ssrc=ev.ssrc,
            frame=ev.data,
            fmt=flow.fmt,
            complete=ev.complete,
            missing_rows=None if ev.complete else ev.missing_rows,
            received_ns=now,
            flow=flow.name,
        )
        if ev.complete and self.cfg.dump_frames is not None:
            self._write(self.cfg.dump_frames, ev.rtp_timestamp, ".raw", ev.data)
        if flow.meta is None or flow.pairer is None:
            self._deliver_video(flow, item, None, now)
            return
        for paired in flow.pairer.add_frame(
            ssrc=ev.ssrc, rtp_timestamp=ev.rtp_timestamp, frame=item, now=now
        ):
            self._deliver_paired(flow, paired, now)

    def _deliver_paired(self, flow: _VideoFlow, paired: PairedFrame[Any, Any], now: int) -> None:
        self._deliver_video(flow, paired.frame, paired.grain, now)

    def _deliver_video(
        self, flow: _VideoFlow, item: ReceivedItem, grain_ev: Any, now: int
    ) -> None:
        if grain_ev is not None:
            grain = grain_ev.grain
            item.metadata = grain.dataset
            item.grain_raw = grain.raw
            item.rtv_sop_instance_uid = grain.meta.sop_instance_uid
            origin = None
            with contextlib.suppress(RemoteProtocolError):
                origin = grain.origin
            if origin is None:
                origin = getattr(grain_ev.extension, "origin_timestamp", None)
            item.origin = origin
        if flow.meta is not None:
            item.static = flow.meta.static
        if item.origin is None and flow.clock is not None:
            item.origin = PtpTimestamp.from_ns(flow.clock.to_ns(item.rtp_timestamp, now))
        if not item.complete and self.cfg.incomplete is IncompletePolicy.DROP:
            flow.dropped_incomplete += 1
            return
        flow.last = item
        flow.recent.append(item)
        rec = self._recording
        if rec is not None and rec.flow is flow and item.complete and not rec.done.is_set():
            if rec.first is None:
                rec.first = item
            if rec.static is None:
                rec.static = item.static
            rec.frames.append(item.frame if item.frame is not None else np.zeros(0, np.uint8))
            if len(rec.frames) >= rec.limit:
                rec.done.set()
        self._push(item)

    def _read_metadata(self, flow: _MetaFlow) -> None:
        from rtstream.proto.rtv_metadata import GrainEvent

        for _ in range(16):
            got = self._drain(flow)
            if got is None:
                return
            batch, lengths, now = got
            for i in range(len(lengths)):
                datagram = batch[i, : int(lengths[i])].tobytes()
                if len(datagram) >= 12 and datagram[0] >> 6 == 2:
                    flow.seq.add(
                        int.from_bytes(datagram[8:12], "big"), int.from_bytes(datagram[2:4], "big")
                    )
                for ev in flow.depkt.feed(datagram, now):
                    if isinstance(ev, GrainEvent):
                        flow.grains_complete += 1
                        self._on_grain(flow, ev, now)
                    else:
                        flow.grains_dropped += 1
                        log.debug("grain dropped at ts %d: %s", ev.rtp_timestamp, ev.reason)
            if len(lengths) < flow.batch:
                return

    def _on_grain(self, flow: _MetaFlow, ev: Any, now: int) -> None:
        grain = ev.grain
        if self.cfg.dump_metadata is not None:
            self._write(self.cfg.dump_metadata, ev.rtp_timestamp, ".dcm", grain.raw)
        uid = grain.meta.sop_instance_uid
        if flow.static_uid is not None and uid != flow.static_uid:
            log.info("metadata flow %s: new RTV SOP Instance (sender restart)", flow.name)
            flow.static = None
        flow.static_uid = uid
        if grain.has_static:
            flow.static = self._statics.observe(grain, now)
        target = flow.target
        if isinstance(target, _VideoFlow) and target.pairer is not None:
            for paired in target.pairer.add_grain(
                rtp_timestamp=ev.rtp_timestamp, grain=ev, now=now, generation=(ev.ssrc, uid)
            ):
                self._deliver_paired(target, paired, now)
        elif isinstance(target, _AudioFlow):
            flow.recent[ev.rtp_timestamp] = ev
            while len(flow.recent) > 512:
                del flow.recent[next(iter(flow.recent))]

    def _read_audio(self, flow: _AudioFlow) -> None:
        for _ in range(16):
            got = self._drain(flow)
            if got is None:
                return
            batch, lengths, now = got
            assert flow.orderer is not None
            for ev in flow.depkt.feed(batch, lengths, now):
                flow.lost += int(getattr(ev, "lost_before", 0))
                flow.chunks += 1
                item = ReceivedItem(
                    kind=ItemKind.AUDIO,
                    rtp_timestamp=ev.rtp_timestamp,
                    ssrc=ev.ssrc,
                    audio=ev.samples,
                    audio_fmt=flow.fmt,
                    received_ns=now,
                    flow=flow.name,
                )
                for out in flow.orderer.add(
                    ssrc=ev.ssrc, rtp_timestamp=ev.rtp_timestamp, item=item, now=now
                ):
                    self._deliver_audio(flow, out, now)
            if len(lengths) < flow.batch:
                return

    def _deliver_audio(self, flow: _AudioFlow, item: ReceivedItem, now: int) -> None:
        meta = flow.meta
        if meta is not None:
            ev = meta.recent.pop(item.rtp_timestamp, None)
            if ev is not None:
                item.metadata = ev.grain.dataset
                item.grain_raw = ev.grain.raw
                item.rtv_sop_instance_uid = ev.grain.meta.sop_instance_uid
                with contextlib.suppress(RemoteProtocolError):
                    item.origin = ev.grain.origin
            item.static = meta.static
        if item.origin is None and flow.clock is not None:
            item.origin = PtpTimestamp.from_ns(flow.clock.to_ns(item.rtp_timestamp, now))
        self._push(item)

    def _push(self, item: ReceivedItem) -> None:
        self._items.append(item)
        while len(self._items) > self.cfg.queue_size:
            self._items.popleft()
            self._consumer_drops += 1
        self._wake.set()

    def _schedule_poll(self) -> None:
        """Arm one timer at the earliest pairing / audio deadline."""
        if self._loop is None or self._closed:
            return
        deadlines = [d for f in self.video if f.pairer and (d := f.pairer.next_deadline())]
        for af in self.audio:
            if af.orderer is not None and af.orderer.pending:
                deadlines.append(af.orderer.next_deadline() or 0)
        if not deadlines:
            return
        at = min(deadlines) + 1
        if self._timer is not None and self._timer_at is not None and self._timer_at <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, (at - self.clock.now_ns()) / 1e9)
        self._timer_at = at
        self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.clock.now_ns()
        for vf in self.video:
            if vf.pairer is not None:
                for paired in vf.pairer.poll(now):
                    self._deliver_paired(vf, paired, now)
        for af in self.audio:
            if af.orderer is not None:
                for item in af.orderer.poll(now):
                    self._deliver_audio(af, item, now)
        self._schedule_poll()

    # -- dumps ----------------------------------------------------------------------------

    def _write(self, directory: Path, ts: int, suffix: str, data: Any) -> None:
        fut = self._io.submit(_write_new, directory, str(ts), suffix, data)
        self._io_pending.add(fut)
        fut.add_done_callback(self._io_done)

    def _io_done(self, fut: Future[Any]) -> None:
        self._io_pending.discard(fut)
        exc = fut.exception()
        if exc is not None:
            self._io_errors += 1
            log.warning("dump write failed: %s", exc)

    # -- flow control (the MQTT pause/resume commands) -----------------------------------

    def _flow_named(self, name: str) -> _Flow:
        for f in (*self.video, *self.audio, *self.metadata):
            if f.name == name:
                return f
        raise ConfigError("flow", name, ", ".join(
            f.name for f in (*self.video, *self.audio, *self.metadata)))

    def pause_flow(self, name: str) -> None:
        """Stop reading flow ``name`` (the kernel drops what overflows its buffer)."""
        f = self._flow_named(name)
        f.paused = True
        if f.sock is not None and self._loop is not None:
            self._loop.remove_reader(f.sock.fileno())

    def resume_flow(self, name: str) -> None:
        """Discard what queued up in flow ``name``'s socket while paused, read it again."""
        f = self._flow_named(name)
        f.paused = False
        if f.sock is None or self._loop is None:
            return
        for _ in range(10_000):  # stale datagrams: old news
            _, lengths = f.sock.drain()
            if len(lengths) == 0:
                break
        self._loop.remove_reader(f.sock.fileno())
        self._loop.add_reader(f.sock.fileno(), self._on_readable, f)

    # -- stats ----------------------------------------------------------------------------

    @property
    def delivered_video(self) -> int:
        """Video items handed to the consumer so far (a cheap live counter)."""
        return self._delivered_video

    def latencies_since(self, seen: int) -> tuple[np.ndarray, int]:
        """Frame-ready latencies (ns) of the video items delivered after the first
        ``seen``, as far as the ring of the last 65,536 still holds them, and the new
        total to pass next time."""
        total = self._latency_n
        fresh = min(total - seen, len(self._latency)) if seen <= total else min(
            total, len(self._latency))
        if fresh <= 0:
            return np.zeros(0, np.int64), total
        idx = np.arange(total - fresh, total) % len(self._latency)
        return self._latency[idx], total

    @property
    def stats(self) -> dict[str, Any]:
        """Counters of the whole receiver (sums over flows) and per flow.

        Keys: ``packets``, ``packets_lost``, ``packets_malformed``, ``reordered``,
        ``duplicates``, ``late``, ``frames_complete``, ``frames_incomplete``,
        ``frames_dropped_incomplete``, ``grains_complete``, ``grains_dropped``,
        ``grains_unmatched``, ``metadata_matched``, ``metadata_unmatched``,
        ``frames_delivered``, ``audio_chunks``, ``consumer_drops``, ``restarts``,
        ``latency_p50_us``, ``latency_p99_us``, ``latency_max_us``, and ``flows`` (a dict
        per flow name).
        """
        flows: dict[str, dict[str, Any]] = {}
        total: dict[str, Any] = dict.fromkeys(STAT_KEYS, 0)
        total.update(
            frames_dropped_incomplete=0,
            grains_unmatched=0,
            audio_chunks=0,
            restarts=0,
        )
        for vf in self.video:
            s = vf.depkt.stats
            d = {
                "kind": "video",
                "packets": vf.packets,
                "packets_lost": s.lost,
                "packets_malformed": s.malformed,
                "reordered": s.reordered,
                "duplicates": s.duplicates,
                "late": s.late,
                "frames_complete": s.frames_complete,
                "frames_incomplete": s.frames_incomplete,
                "frames_dropped_incomplete": vf.dropped_incomplete,
            }
            if vf.pairer is not None and vf.meta is not None:
                ps = vf.pairer.stats
                d.update(
                    metadata_matched=ps.metadata_matched,
                    metadata_unmatched=ps.metadata_unmatched,
                    grains_unmatched=ps.grains_unmatched,
                    restarts=ps.restarts,
                )
            flows[vf.name] = d
        for af in self.audio:
            s = af.depkt.stats if hasattr(af.depkt, "stats") else None
            d = {
                "kind": "audio",
                "packets": af.packets,
                "packets_lost": _stat(s, "lost", af.lost),
                "packets_malformed": _stat(s, "malformed", 0),
                "reordered": _stat(s, "reordered", 0),
                "duplicates": _stat(s, "duplicates", 0),
                "late": _stat(s, "late", 0) + (af.orderer.late if af.orderer else 0),
                "audio_chunks": af.chunks,
            }
            flows[af.name] = d
        for mf in self.metadata:
            s = mf.depkt.stats
            d = {
                "kind": "metadata",
                "packets": mf.packets,
                "packets_lost": mf.seq.lost,
                "packets_malformed": _stat(s, "malformed", 0),
                "reordered": mf.seq.reordered,
                "duplicates": mf.seq.duplicates,
                "late": _stat(s, "late", 0),
                "grains_complete": mf.grains_complete,
                "grains_dropped": mf.grains_dropped,
            }
            flows[mf.name] = d
        for d in flows.values():
            for k, v in d.items():
                if k in total and isinstance(v, int):
                    total[k] += v
        total["frames_delivered"] = self._delivered_video
        total["audio_delivered"] = self._delivered_audio
        total["consumer_drops"] = self._consumer_drops
        total["dump_errors"] = self._io_errors
        n = min(self._latency_n, len(self._latency))
        if n:
            lat = self._latency[:n] / 1000.0
            total["latency_p50_us"] = float(np.percentile(lat, 50))
            total["latency_p99_us"] = float(np.percentile(lat, 99))
            total["latency_max_us"] = float(lat.max())
        else:
            total["latency_p50_us"] = total["latency_p99_us"] = total["latency_max_us"] = None
        if self.store_client is not None:
            total["store"] = dict(self.store_client.counters)
        elif self._store_counters is not None:
            total["store"] = dict(self._store_counters)
        total["snapshots"] = len(self._snapshots)
        total["flows"] = flows
        return total

    # -- actions ----------------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _pick_frame(self, rtp_timestamp: int | None) -> tuple[_VideoFlow, ReceivedItem]:
        for vf in self.video:
            if rtp_timestamp is None:
                cands = [i for i in vf.recent if i.complete]
                if cands:
                    return vf, cands[-1]
            else:
                for i in vf.recent:
                    if i.rtp_timestamp == rtp_timestamp:
                        return vf, i
        if rtp_timestamp is None:
            raise LocalProtocolError("snapshot: no complete video frame received yet")
        raise LocalProtocolError(
            f"snapshot: frame with RTP timestamp {rtp_timestamp} is not among the recent ones"
        )

    async def snapshot_dataset(self, rtp_timestamp: int | None = None) -> Dataset:
        """Build (in a worker thread) the stored single-frame instance of a recent frame."""
        vf, item = self._pick_frame(rtp_timestamp)
        assert vf.fmt is not None and item.frame is not None
        frame = item.frame.copy()
        static = self._static_for(vf, item)
        fmt = vf.fmt
        kwargs = self._stored_kwargs(vf, item)
        from rtstream.dicom.stored import build_snapshot

        def build() -> Dataset:
            ds: Dataset = build_snapshot(frame, fmt, static, **kwargs)
            return ds

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._work, build)

    async def snapshot(self, rtp_timestamp: int | None = None) -> SnapshotResult:
        """Store the latest complete frame (or the recent frame of ``rtp_timestamp``).

        The instance is built in a worker thread, made durable in the outbox and sent
        (C-STORE) or saved (``store_dir``); the result names its SOP Instance UID.
        """
        if self.store_client is None:
            raise LocalProtocolError("snapshot: configure store or store_dir first")
        ds = await self.snapshot_dataset(rtp_timestamp)
        result = await self._store(ds)
        self._snapshots.append(result)
        return result

    def record_start(self, *, seconds: float | None = None, frames: int | None = None) -> None:
        """Start recording a clip of the first video flow (complete frames only)."""
        if not self.video:
            raise LocalProtocolError("record: the SDP has no video flow")
        if self._recording is not None and not self._recording.done.is_set():
            raise LocalProtocolError("record: a recording is already running")
        vf = self.video[0]
        assert vf.fmt is not None
        limit = self.cfg.record_max_frames
        if seconds is not None:
            limit = min(limit, max(1, round(float(vf.fmt.exactframerate) * seconds)))
        if frames is not None:
            limit = min(limit, frames)
        self._recording = _Recording(flow=vf, limit=limit)
        if seconds is not None and self.store_client is not None:
            self._spawn(self._record_until_done(), "rtstream-rx-record")
        log.info("recording a clip of up to %d frames", limit)

    async def _record_until_done(self) -> None:
        rec = self._recording
        assert rec is not None
        await rec.done.wait()
        result = await self.record_stop()
        log.info("clip stored: %s ok=%s", result.sop_instance_uid, result.ok)

    async def record_stop(self) -> SnapshotResult:
        """Stop recording; build the clip (worker thread) and store it."""
        rec = self._recording
        if rec is None:
            raise LocalProtocolError("record: no recording was started")
        rec.done.set()
        self._recording = None
        if not rec.frames or rec.first is None:
            raise LocalProtocolError("record: no complete frame was recorded")
        vf = rec.flow
        assert vf.fmt is not None
        ds = await self._build_clip(vf, rec)
        if self.store_client is None:
            return SnapshotResult(str(ds.SOPInstanceUID), True, None, ds)
        return await self._store(ds)

    async def _build_clip(self, vf: _VideoFlow, rec: _Recording) -> Dataset:
        from rtstream.dicom.stored import build_clip

        first = rec.first
        assert first is not None and vf.fmt is not None
        static = rec.static if rec.static is not None else self._static_for(vf, first)
        frames = rec.frames
        fmt = vf.fmt
        kwargs = self._stored_kwargs(vf, first)

        def build() -> Dataset:
            ds: Dataset = build_clip(frames, fmt, static, **kwargs)
            return ds

        return await asyncio.get_running_loop().run_in_executor(self._work, build)

    def _stored_kwargs(self, vf: _VideoFlow, item: ReceivedItem) -> dict[str, Any]:
        """Provenance of a stored instance: RTV instance, capture time, session's series."""
        rtv_uid = item.rtv_sop_instance_uid or (vf.meta.static_uid if vf.meta else None)
        self._instance_number += 1
        return {
            "rtv_sop_instance_uid": rtv_uid or generate_uid(),
            "origin": item.origin or PtpTimestamp.from_ns(self.clock.now_ns()),
            "series_instance_uid": self.series_instance_uid,
            "instance_number": self._instance_number,
        }

    def _static_for(self, vf: _VideoFlow, item: ReceivedItem) -> Dataset:
        """The latest static part; for a flow without metadata, a made-up one."""
        if item.static is not None:
            return item.static
        if vf.meta is not None and vf.meta.static is not None:
            return vf.meta.static
        return _fallback_static(vf)

    async def _store(self, ds: Dataset) -> SnapshotResult:
        assert self.store_client is not None
        fut = await self.store_client.enqueue(ds)
        self._store_futures.add(fut)
        fut.add_done_callback(self._store_futures.discard)
        res = await fut
        return SnapshotResult(str(ds.SOPInstanceUID), bool(res.ok), res, ds)

    async def _snapshot_every(self, period: float) -> None:
        # Queue each snapshot durably and go on: awaiting the archive's answer here would
        # stop periodic snapshots for as long as the archive is down (the outbox is there
        # to hold them); the store client's queue bounds what piles up. A full or failing
        # outbox disk costs that snapshot (logged), not the ones after it.
        while True:
            await asyncio.sleep(period)
            try:
                ds = await self.snapshot_dataset()
                assert self.store_client is not None
                fut = await self.store_client.enqueue(ds)
            except LocalProtocolError as exc:
                log.info("snapshot skipped: %s", exc)
                continue
            except OSError as exc:  # pydicom wraps ENOSPC: its last line says what failed
                reason = exc.strerror or (str(exc).strip().splitlines() or ["?"])[-1]
                log.error("snapshot not queued: the outbox cannot be written (%s)", reason)
                continue
            uid = str(ds.SOPInstanceUID)
            self._store_futures.add(fut)
            fut.add_done_callback(self._store_futures.discard)

            def done(f: asyncio.Future[Any], uid: str = uid) -> None:
                if f.cancelled():
                    return
                res = f.result()
                self._snapshots.append(SnapshotResult(uid, bool(res.ok), res, None))
                log.info("snapshot %s stored ok=%s", uid, res.ok)

            fut.add_done_callback(done)


def _warm_up_grain_decoder() -> None:
    """Decode one made-up grain so pydicom's lazy imports do not delay the first real one."""
    import uuid

    from rtstream.proto.formats import TS_ST2110_20_PROGRESSIVE
    from rtstream.proto.rtv_metadata import (
        RTV_VIDEO_PHOTOGRAPHIC,
        RtvMetaInfo,
        decode_grain,
        dynamic_part,
        encode_grain,
    )

    meta = RtvMetaInfo(
        transfer_syntax_uid=TS_ST2110_20_PROGRESSIVE,
        sop_class_uid=RTV_VIDEO_PHOTOGRAPHIC,
        sop_instance_uid=generate_uid(),
        source_id=uuid.UUID(int=1),
        flow_id=uuid.UUID(int=2),
        sampling_rate=90000,
    )
    ds = dynamic_part(origin=PtpTimestamp(1, 0), frame_number=1)
    ds.PatientName = "Warm^Up"
    ds.Modality = "XC"
    with contextlib.suppress(Exception):
        decode_grain(encode_grain(meta, ds)).dataset.get("PatientName")


def _stat(stats: Any, name: str, default: int) -> int:
    if stats is None:
        return default
    if isinstance(stats, dict):
        return int(stats.get(name, default))
    return int(getattr(stats, name, default))


def _write_new(directory: Path, stem: str, suffix: str, data: Any) -> Path:
    """Write ``data`` to ``directory/stem+suffix``, never replacing a file (``-1``, ``-2``...)."""
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    for n in range(1000):
        name = f"{stem}{suffix}" if n == 0 else f"{stem}-{n}{suffix}"
        path = directory / name
        try:
            with open(path, "xb") as f:
                f.write(buf)
            return path
        except FileExistsError:
            continue
    raise OSError(f"{directory}: too many files named {stem}*{suffix}")


def _fallback_static(vf: _VideoFlow) -> Dataset:
    """A static part for a stream without DICOM-RTV metadata (a third-party ST 2110 SDP).

    Identity is unknown, so the default test context ("Anonymous^Test") is used; the
    bulk flow is the video flow itself, identified by a UUID derived from its SDP port.
    """
    import uuid

    from rtstream.dicom.context import StreamContext
    from rtstream.dicom.realtime import BulkFlowRef, RtvSop, static_part

    assert vf.fmt is not None
    key = f"rtstream:{vf.media.address}:{vf.media.port}"
    ref = BulkFlowRef(
        source_id=uuid.uuid5(uuid.NAMESPACE_URL, key + ":source"),
        flow_id=uuid.uuid5(uuid.NAMESPACE_URL, key),
        transfer_syntax_uid=vf.fmt.transfer_syntax_uid,
        sampling_rate=vf.media.clock_rate,
    )
    ds: Dataset = static_part(
        RtvSop.PHOTOGRAPHIC,
        StreamContext(),
        sop_instance_uid=generate_uid(),
        bulk_flows=(ref,),
        video=vf.fmt,
    )
    return ds


Callback = Callable[[ReceivedItem], None]
