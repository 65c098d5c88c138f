"""Per-flow readers: a drained socket, a sans-I/O depacketizer, packet accounting -> events.

Theory of operation
-------------------
Every flow of the SDP gets one reader. The receiver registers :meth:`FlowReader.on_readable`
with ``loop.add_reader``; each readiness event drains the socket into one numpy batch
(:meth:`~rtstream.net.udp.UdpReceiver.drain`) and hands it to the flow's core:

* :class:`VideoReader` -> :class:`~rtstream.proto.rfc4175.VideoDepacketizer`; reassembled
  frames go to its :class:`FrameSink`. The video path is tuned (DESIGN.md §3): a batch
  without a marker bit is held in the socket for the next event (up to ``_HOLD_ROWS`` rows
  or ``_HOLD_S``), a socket that trickles single datagrams is not watched until the hold
  timer, and a silence check delivers the frame whose marker packet was lost.
* :class:`AudioReader` -> :class:`~rtstream.proto.st2110_30.AudioDepacketizer`; chunks
  go to its :class:`ChunkSink`.
* :class:`MetadataReader` -> :class:`~rtstream.proto.rtv_metadata.MetadataDepacketizer`
  (one Python object per datagram is fine for grains); grains go to its
  :class:`GrainSink`; the depacketizer also counts the packets never seen
  (:class:`~rtstream.proto.rtp.SequenceTracker`, shared by every depacketizer).

A reader never raises into the event loop: an exception (a bug) is reported to its
:class:`ReaderHost`, which surfaces it to the consumer, and the socket is no longer
watched. After every read the host gets :meth:`ReaderHost.read_done` (to arm the pairing
and audio deadline timer).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol

import numpy as np
from pydicom import Dataset

from rtstream.errors import ConfigError
from rtstream.net.udp import UdpReceiver, is_multicast
from rtstream.proto.clock import Clock
from rtstream.proto.formats import AudioFormat, VideoFormat
from rtstream.proto.pairing import AudioOrderer, MediaClock, Pairer
from rtstream.proto.rfc4175 import VideoDepacketizer, VideoFrameEvent
from rtstream.proto.rtv_metadata import GrainEvent, MetadataDepacketizer
from rtstream.proto.sdp import SdpMedia
from rtstream.proto.st2110_30 import AudioChunkEvent, AudioDepacketizer
from rtstream.receiver.config import ReceiverConfig
from rtstream.receiver.items import ReceivedItem

log = logging.getLogger(__name__)

__all__ = [
    "AudioReader",
    "ChunkSink",
    "FlowReader",
    "FrameSink",
    "GrainSink",
    "MetadataReader",
    "ReaderHost",
    "VideoReader",
    "open_socket",
]

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

#: The pairer of a video flow: frames (items) waiting for grains (events).
VideoPairer = Pairer[ReceivedItem, GrainEvent]


class ReaderHost(Protocol):
    """What a reader reports to besides its data (the receiver)."""

    def read_failed(self, reader: FlowReader, exc: Exception) -> None:
        """A read raised ``exc`` (a bug); the reader no longer watches its socket."""
        ...

    def read_done(self) -> None:
        """A read finished (arm the deadline timer)."""
        ...


class FrameSink(Protocol):
    """Where a :class:`VideoReader` puts reassembled frames."""

    def on_frame(self, reader: VideoReader, ev: VideoFrameEvent, now: int) -> None:
        """One frame, complete or not, read at ``now``."""
        ...


class GrainSink(Protocol):
    """Where a :class:`MetadataReader` puts complete grains."""

    def on_grain(self, reader: MetadataReader, ev: GrainEvent, now: int) -> None:
        """One validated grain read at ``now``."""
        ...


class ChunkSink(Protocol):
    """Where an :class:`AudioReader` puts audio chunks."""

    def on_chunk(self, reader: AudioReader, ev: AudioChunkEvent, now: int) -> None:
        """One chunk of consecutive packets read at ``now``."""
        ...


class FlowReader:
    """The shape shared by every flow: its SDP section, its socket, its packet count.

    Parameters
    ----------
    name : str
        ``a=mid`` of the flow (or ``video0``, ``audio0``, ``metadata0``...).
    media : SdpMedia
        The flow's ``m=`` section.
    clock : Clock
        Stamps each drained batch.
    """

    kind = ""
    #: Rows of one socket batch (a full batch means more may wait: read again).
    batch_rows = 256
    #: Readiness events are limited to this many batches (the other flows get their turn).
    max_batches = 16

    def __init__(self, name: str, media: SdpMedia, clock: Clock) -> None:
        self.name = name
        self.media = media
        self.clock = clock
        self.sock: UdpReceiver | None = None
        self.packets = 0
        self.batch = self.batch_rows
        self.paused = False  # by pause_flow (a control command): its socket is not read
        self._loop: asyncio.AbstractEventLoop | None = None
        self._host: ReaderHost | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, sock: UdpReceiver, host: ReaderHost) -> None:
        """Watch ``sock`` on ``loop``; report failures and finished reads to ``host``."""
        self._loop = loop
        self._host = host
        self.sock = sock
        self.batch = self.batch_rows
        loop.add_reader(sock.fileno(), self.on_readable)

    def close(self) -> None:
        """Stop watching the socket and close it."""
        sock, loop = self.sock, self._loop
        if sock is None:
            return
        if loop is not None:
            try:
                loop.remove_reader(sock.fileno())
            except Exception:  # noqa: BLE001 - the loop may be closing already
                log.debug("%s: remove_reader failed", self.name)
        sock.close()
        self.sock = None

    def pause(self) -> None:
        """Stop reading the socket (the kernel drops what overflows its buffer)."""
        self.paused = True
        if self.sock is not None and self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())

    def resume(self) -> None:
        """Discard what queued up in the socket while paused; read it again."""
        self.paused = False
        sock, loop = self.sock, self._loop
        if sock is None or loop is None:
            return
        for _ in range(10_000):  # stale datagrams: old news
            _, lengths = sock.drain()
            if len(lengths) == 0:
                break
        loop.remove_reader(sock.fileno())
        loop.add_reader(sock.fileno(), self.on_readable)

    # -- reading ----------------------------------------------------------------------

    def on_readable(self, flush: bool = False) -> None:
        """The readiness callback: read, and never let an exception reach the loop."""
        host = self._host
        try:
            self.read(flush)
        except Exception as exc:  # a bug: surface it to the consumer, do not spin
            log.exception("receiver: error while reading %s", self.name)
            if self._loop is not None and self.sock is not None:
                self._loop.remove_reader(self.sock.fileno())
            if host is not None:
                host.read_failed(self, exc)
        if host is not None:
            host.read_done()

    def read(self, flush: bool = False) -> None:
        """Drain up to :attr:`max_batches` batches into :meth:`feed` (video overrides
        this with its hold-and-pace read)."""
        for _ in range(self.max_batches):
            got = self._drain()
            if got is None:
                return
            batch, lengths, now = got
            self.feed(batch, lengths, now)
            if len(lengths) < self.batch:
                return

    def feed(self, batch: np.ndarray, lengths: np.ndarray, now: int) -> None:
        """Hand one drained batch to the flow's depacketizer (per kind)."""
        raise NotImplementedError

    def _drain(self) -> tuple[np.ndarray, np.ndarray, int] | None:
        sock = self.sock
        if sock is None:
            return None
        batch, lengths = sock.drain()
        if len(lengths) == 0:
            return None
        self.packets += sock.new_rows
        return batch, lengths, self.clock.now_ns()


class VideoReader(FlowReader):
    """A video flow (RFC 4175 / ST 2110-20) and what the receiver keeps of it.

    Attributes
    ----------
    fmt : VideoFormat
    depkt : VideoDepacketizer
    pairer : Pairer
        Frames waiting for their metadata grain (PS3.17 PPPP.7).
    meta : MetadataReader or None
        The metadata flow describing this one.
    media_clock : MediaClock
        RTP timestamps on the common clock (ST 2110-10).
    recent : deque of ReceivedItem
        The last delivered frames (snapshots pick from these).
    dropped_incomplete : int
        Frames that lost packets and were dropped (``IncompletePolicy.DROP``).
    """

    kind = "video"
    # about one 1080p frame per drain: the per-batch cost of the vectorized parser is
    # paid ~once per frame (GRO reads land without a copy)
    batch_rows = 4096

    def __init__(
        self, name: str, media: SdpMedia, clock: Clock, *, cfg: ReceiverConfig, sink: FrameSink
    ) -> None:
        super().__init__(name, media, clock)
        fmt = media.video
        if fmt is None:
            raise ConfigError("sdp", name, "a video m= section with its format")
        self.fmt: VideoFormat = fmt
        self.depkt = VideoDepacketizer(fmt, payload_type=media.payload_type)
        wait = int(fmt.frame_duration_ns * cfg.pairing_wait_frames)
        self.pairer: VideoPairer = Pairer(wait_ns=wait, max_pending=64)
        self.media_clock = MediaClock(clock_rate=media.clock_rate, offset=media.mediaclk_offset or 0)
        self.meta: MetadataReader | None = None
        self.last: ReceivedItem | None = None
        self.recent: deque[ReceivedItem] = deque(maxlen=8)
        self.dropped_incomplete = 0
        self.hold_timer: asyncio.TimerHandle | None = None
        self.reader_off = False  # not watched until the hold timer (datagrams trickling in)
        self.last_rx_ns = 0  # when the last datagram was read
        self.sink = sink
        # Frame buffers for what is held at once (the recent frames, the consumer's
        # queue, the pairing wait), faulted in now rather than during the first
        # second of the stream; at most ~64 MB.
        self.depkt.prepare(max(4, min(12, (64 << 20) // fmt.frame_bytes)))

    def start(self, loop: asyncio.AbstractEventLoop, sock: UdpReceiver, host: ReaderHost) -> None:
        """Watch the socket and start the silence check."""
        super().start(loop, sock, host)
        loop.call_later(_SILENCE_S, self._check_silence)

    def close(self) -> None:
        """Cancel the hold timer, stop watching the socket and close it."""
        if self.hold_timer is not None:
            self.hold_timer.cancel()
            self.hold_timer = None
        super().close()

    def read(self, flush: bool = False) -> None:
        """Read up to 4 batches; hold a batch without a marker bit (see module doc)."""
        # Up to 4 full batches (about one 1080p frame) per readiness event, then the other
        # flows, the timers and the consumer get their turn; epoll reports the socket
        # readable again on the next loop iteration if data is left.
        #
        # A sender paces a frame out in bursts, so each event brings a few hundred
        # datagrams. Decoding costs per batch as much as per datagram, so the rows of an
        # event without a marker bit are kept in the socket's buffer and decoded with the
        # next ones, up to _HOLD_ROWS rows or _HOLD_S seconds: a frame ends with its
        # marker packet, which is decoded at once, so no frame waits.
        sink = self.sink
        for _ in range(4):
            got = self._drain()
            if got is None:
                return
            batch, lengths, now = got
            sock = self.sock
            assert sock is not None
            self.last_rx_ns = now
            n = len(lengths)
            new = sock.new_rows
            if (
                not flush
                and n < _HOLD_ROWS
                and batch.shape[1] > 1
                and not (batch[n - new :, 1] & 0x80).any()
                and sock.hold()
            ):
                if self.hold_timer is None and self._loop is not None:
                    self.hold_timer = self._loop.call_later(_HOLD_S, self._flush_held)
                    if new < _PACE_ROWS and not sock.gro:
                        # One datagram per wake-up (a sender without GSO on a path that
                        # does not coalesce): let them queue in the socket until the timer.
                        self._loop.remove_reader(sock.fileno())
                        self.reader_off = True
                return
            if self.hold_timer is not None:
                self.hold_timer.cancel()
                self.hold_timer = None
            for ev in self.depkt.feed(batch, lengths, now):
                sink.on_frame(self, ev, now)
            if n < self.batch:
                return

    def _check_silence(self) -> None:
        loop = self._loop
        if self.sock is None or loop is None:
            return
        silence = max(_SILENCE_S, 2 * float(self.fmt.frame_duration_ns) / 1e9)
        # A busy loop may not have read the socket for a while: what waits there is not
        # silence. Read it first.
        if not self.paused and not self.reader_off:
            self.on_readable(flush=True)
        now = self.clock.now_ns()
        if now - self.last_rx_ns >= silence * 1e9 and not self.paused:
            for ev in self.depkt.flush():
                self.sink.on_frame(self, ev, now)
            if self._host is not None:
                self._host.read_done()
        loop.call_later(silence / 2, self._check_silence)

    def _flush_held(self) -> None:
        self.hold_timer = None
        loop = self._loop
        if self.sock is None or loop is None:
            return
        if self.reader_off:
            self.reader_off = False
            if self.paused:
                return
            loop.add_reader(self.sock.fileno(), self.on_readable)
        self.on_readable(flush=True)


class AudioReader(FlowReader):
    """An audio flow (ST 2110-30) and what the receiver keeps of it.

    Attributes
    ----------
    fmt : AudioFormat
    depkt : AudioDepacketizer
    orderer : AudioOrderer
        Chunks put back in timestamp order within ``audio_wait_ms``.
    meta : MetadataReader or None
    media_clock : MediaClock
    lost, chunks : int
        Packets missing before the chunks, and chunks read.
    """

    kind = "audio"

    def __init__(
        self, name: str, media: SdpMedia, clock: Clock, *, cfg: ReceiverConfig, sink: ChunkSink
    ) -> None:
        super().__init__(name, media, clock)
        fmt = media.audio
        if fmt is None:
            raise ConfigError("sdp", name, "an audio m= section with its format")
        self.fmt: AudioFormat = fmt
        self.depkt = AudioDepacketizer(fmt, payload_type=media.payload_type)
        self.orderer: AudioOrderer[ReceivedItem] = AudioOrderer(
            wait_ns=int(cfg.audio_wait_ms * 1e6))
        self.media_clock = MediaClock(clock_rate=media.clock_rate, offset=media.mediaclk_offset or 0)
        self.meta: MetadataReader | None = None
        self.lost = 0
        self.chunks = 0
        self.sink = sink

    def feed(self, batch: np.ndarray, lengths: np.ndarray, now: int) -> None:
        """Depacketize one batch; count loss and chunks."""
        for ev in self.depkt.feed(batch, lengths, now):
            self.lost += ev.lost_before
            self.chunks += 1
            self.sink.on_chunk(self, ev, now)


class MetadataReader(FlowReader):
    """A PS3.22 metadata flow and the state of the media flow it describes.

    Attributes
    ----------
    depkt : MetadataDepacketizer
    target : VideoReader, AudioReader or None
        The flow it describes.
    static : Dataset or None
        The latest static part received.
    static_uid : str or None
        RTV SOP Instance UID of the grains (a new one means a sender restart).
    grains_complete, grains_dropped : int
    recent : dict
        For an audio target: RTP timestamp -> grain, waiting for its chunk.
    """

    kind = "metadata"

    def __init__(self, name: str, media: SdpMedia, clock: Clock, *, sink: GrainSink) -> None:
        super().__init__(name, media, clock)
        if media.extmap is None:
            raise ConfigError("sdp", name, "a metadata m= section with its a=extmap lines")
        self.depkt = MetadataDepacketizer(extmap=media.extmap)
        self.target: VideoReader | AudioReader | None = None
        self.static: Dataset | None = None
        self.static_uid: str | None = None
        self.grains_complete = 0
        self.grains_dropped = 0
        self.recent: dict[int, GrainEvent] = {}
        self.sink = sink

    def feed(self, batch: np.ndarray, lengths: np.ndarray, now: int) -> None:
        """One datagram at a time into the depacketizer (grains are few and small)."""
        sink = self.sink
        for i in range(len(lengths)):
            datagram = batch[i, : int(lengths[i])].tobytes()
            for ev in self.depkt.feed(datagram, now):
                if isinstance(ev, GrainEvent):
                    self.grains_complete += 1
                    sink.on_grain(self, ev, now)
                else:
                    self.grains_dropped += 1
                    log.debug("grain dropped at ts %d: %s", ev.rtp_timestamp, ev.reason)


def open_socket(reader: FlowReader, cfg: ReceiverConfig) -> UdpReceiver:
    """The socket of ``reader``'s flow: its SDP address (or ``cfg.bind_address``) and port.

    A unicast ``c=`` address that is not ours (the sender's) falls back to 0.0.0.0.
    """
    m = reader.media
    address = m.address
    if not is_multicast(address) and cfg.bind_address is not None:
        address = cfg.bind_address
    if isinstance(reader, VideoReader):
        width = max(2048, (reader.fmt.maxudp or 1460) + 256)
    else:
        width = 9000
    source = m.source_filter if is_multicast(address) else None
    try:
        sock = UdpReceiver(address, m.port, source=source, interface=cfg.interface,
                           rcvbuf=cfg.rcvbuf, max_datagram=width, batch=reader.batch_rows)
    except ConfigError:
        if is_multicast(address):
            raise
        # a unicast c= address that is not ours (a sender's address): any local one
        log.info("cannot bind %s:%d, receiving on 0.0.0.0:%d", address, m.port, m.port)
        sock = UdpReceiver("0.0.0.0", m.port, source=None, interface=cfg.interface,
                           rcvbuf=cfg.rcvbuf, max_datagram=width, batch=reader.batch_rows)
    log.debug("%s: listening on %s:%d", reader.name, address, m.port)
    return sock
