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
  timer, and a silence check delivers the frame whose marker packet was lost. Once the
  depacketizer can say where the next in-order payloads belong
  (:meth:`~rtstream.proto.rfc4175.VideoDepacketizer.plan_split`), a GRO socket reads
  with *split reads* (:meth:`~rtstream.net.udp.UdpReceiver.drain_split`): headers to a
  header array, payloads straight into the frame; the depacketizer then verifies the
  headers and moves only what landed elsewhere. A held split batch keeps its plan, and
  is given up if the plan went stale meanwhile (never read into a frame handed out).
  Of an ST 2022-7 flow the leg leading the merge reads split (see below); the other
  leg, and every read when :attr:`VideoReader.split` is False, take the copying path.
* :class:`AudioReader` -> :class:`~rtstream.proto.st2110_30.AudioDepacketizer`; chunks
  go to its :class:`ChunkSink`.
* :class:`MetadataReader` -> :class:`~rtstream.proto.rtv_metadata.MetadataDepacketizer`
  (one Python object per datagram is fine for grains); grains go to its
  :class:`GrainSink`; the depacketizer also counts the packets never seen
  (:class:`~rtstream.proto.rtp.SequenceTracker`, shared by every depacketizer).

**ST 2022-7.** A flow whose SDP gives it two legs (``a=group:DUP``) has a second socket
(:attr:`FlowReader.sock2`), watched like the first; every drained batch of either leg
goes through the flow's :class:`~rtstream.proto.dup.DupMerger` first, which hands on
the first copy of each packet as the same ``(rows, lengths)`` batch shape, so the
depacketizers and the tuned video path are unchanged. A video leg that delivered the
merged stream's newest packet (:meth:`~rtstream.proto.dup.DupMerger.leads`) reads split:
when its batch's headers are exactly the merged stream's next numbers
(:meth:`~rtstream.proto.dup.DupMerger.take_next`; taken before the other leg's next
batch is merged even while held, so that leg's copies are dropped as copies) the
payloads stay where they landed, else the datagrams are put back together and merged
whole. Winners of the other leg are depacketized only after a held split batch. When
the leading leg defers its read through most of a paced frame, the other leg waits too
(:meth:`VideoReader._hold`); it is read shortly after the leading one, its copies dropped.
Winners held behind a gap (the other leg's copy may still come, ``dup_skew_ms``) are
released by a timer at their deadline; every 50 ms the legs are polled and a leg silent
for 100 ms, or back, is logged at INFO and kept in :attr:`FlowReader.leg_events` for the
control plane. A second leg whose socket cannot be opened (its network down at start)
is logged and the flow runs on the first.

A reader never raises into the event loop: an exception (a bug) is reported to its
:class:`ReaderHost`, which surfaces it to the consumer, and the socket is no longer
watched. After every read the host gets :meth:`ReaderHost.read_done` (to arm the pairing
and audio deadline timer).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np
from pydicom import Dataset

from rtstream.errors import ConfigError
from rtstream.net.dupfilter import KernelDupFilter
from rtstream.net.udp import UdpReceiver, is_multicast
from rtstream.proto.clock import Clock
from rtstream.proto.dup import DupMerger, LegEvent, LegState
from rtstream.proto.formats import AudioFormat, VideoFormat
from rtstream.proto.pairing import AudioOrderer, MediaClock, Pairer
from rtstream.proto.rfc4175 import SplitPlan, VideoDepacketizer, VideoFrameEvent, split_rows
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
#: A held split batch early in a paced frame stops the socket's readiness events until
#: this long before the frame's last packet is due (from the last frame's first read to
#: its marker); the reads in between are saved, the last packets are read as they come.
#: Measured at 1080p60 10-bit (issue 18): 2 ms left the frame's last read too big (p99
#: frame-ready latency 2.6-2.9 ms), 3 ms kept it at 0.41-0.48 ms, 4-5 ms saved less CPU.
_DEFER_MARGIN_S = 0.003
#: A deferral also ends before more than this many bytes of the frame have come (its
#: read must end within the margin): at 2160p60 10-bit one deferral up to the margin left
#: ~17 MB to read at once, ~4 ms, and the frame's last packets were read late (p99
#: frame-ready 2.1 ms); a 1080p 10-bit frame is 5.2 MB.
_DEFER_BYTES = 4_500_000
#: A frame still being assembled when its flow has been silent this long (at least two
#: frame periods) is delivered as it is: its marker packet was lost and no next frame
#: came (the sender stopped).
_SILENCE_S = 0.1

#: How often the legs of an ST 2022-7 flow are polled for silence (s).
_LEG_POLL_S = 0.05

#: The pairer of a video flow: frames (items) waiting for grains (events).
VideoPairer = Pairer[ReceivedItem, GrainEvent]


def _frame_end(rows: np.ndarray) -> tuple[int, int]:
    """Of datagrams starting with an RTP header, one per row: how many rows follow the
    last one with the marker bit (a frame's last packet), and that row's RTP timestamp;
    (-1, 0) when none has it."""
    if rows.shape[1] < 8:
        return -1, 0
    hits = np.flatnonzero(rows[:, 1] & 0x80)
    if not len(hits):
        return -1, 0
    last = int(hits[-1])
    return len(rows) - 1 - last, int.from_bytes(rows[last, 4:8].tobytes(), "big")


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
        # ST 2022-7 (set by build_flows for a flow with two legs)
        self.legs_media: tuple[SdpMedia, ...] = (media,)
        self.open_leg: Callable[[int], UdpReceiver] | None = None
        self.merge: DupMerger | None = None
        self.sock2: UdpReceiver | None = None
        self.kernel_filter = False  # drop the legs' copies in the kernel when it can
        self._filter: KernelDupFilter | None = None
        self._filtered = [(0, 0), (0, 0)]  # its counts already given to the merge, per leg
        self._first = [0, 0]  # the merge's first-copy counts per leg at the last leg poll
        self.leg_events: deque[LegEvent] = deque(maxlen=64)
        self._release_timer: asyncio.TimerHandle | None = None
        self._leg_timer: asyncio.TimerHandle | None = None

    def socket_of(self, leg: int) -> UdpReceiver | None:
        """The socket of leg ``leg`` (0: the first, 1: the ST 2022-7 second leg)."""
        return self.sock if leg == 0 else self.sock2

    def set_legs(self, legs: tuple[SdpMedia, ...], merge: DupMerger,
                 open_leg: Callable[[int], UdpReceiver], *, kernel_filter: bool = False) -> None:
        """Make this an ST 2022-7 flow of ``legs`` (the first is :attr:`media`); with
        ``kernel_filter`` its legs' copies are dropped in the kernel where it can
        (:mod:`rtstream.net.dupfilter`), else all in the merge."""
        self.legs_media = legs
        self.merge = merge
        self.open_leg = open_leg
        self.kernel_filter = kernel_filter

    # -- lifecycle --------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, sock: UdpReceiver, host: ReaderHost) -> None:
        """Watch ``sock`` on ``loop``; report failures and finished reads to ``host``."""
        self._loop = loop
        self._host = host
        self.sock = sock
        self.batch = self.batch_rows
        loop.add_reader(sock.fileno(), self.on_readable)
        if self.merge is not None and self.open_leg is not None:
            leg2 = self.legs_media[1]
            try:
                self.sock2 = self.open_leg(1)
            except Exception as exc:  # noqa: BLE001 - a network down at start: run on one leg
                log.warning("%s: second leg %s:%d cannot be opened (%s): receiving on the first "
                            "leg only", self.name, leg2.address, leg2.port, exc)
            else:
                loop.add_reader(self.sock2.fileno(), self.on_readable, False, 1)
                if self.kernel_filter:
                    self._attach_filter(self.sock, self.sock2)
            self._leg_timer = loop.call_later(_LEG_POLL_S, self._poll_legs)

    def _attach_filter(self, *socks: UdpReceiver) -> None:
        """Drop the legs' copies in the kernel (logged at INFO: whether it could)."""
        kf = KernelDupFilter.open(len(socks))
        if kf is None:
            return
        try:
            for leg, sock in enumerate(socks):
                kf.attach(sock.fileno(), leg)
        except OSError as exc:
            log.info("%s: ST 2022-7 copies are dropped in user space (the kernel filter cannot "
                     "be attached: %s)", self.name, exc.strerror or exc)
            kf.close()
            return
        self._filter = kf
        log.info("%s: ST 2022-7 copies are dropped in the kernel (eBPF socket filter)",
                 self.name)

    def sync_legs(self) -> None:
        """Give the merge what the kernel filter dropped since the last look."""
        kf, merge = self._filter, self.merge
        if kf is None or merge is None:
            return
        now = self.clock.now_ns()
        for leg, (seen_p, seen_b) in enumerate(self._filtered):
            packets, buffers = kf.counts(leg)
            if packets != seen_p:
                merge.filtered(leg, packets - seen_p, buffers - seen_b, now)
                self._filtered[leg] = (packets, buffers)

    def _pick_primary(self) -> None:
        """The leg whose packets come first keeps them all (the filter drops the other's
        copies): when the secondary leg won clearly more packets since the last poll, it
        is the faster path now."""
        kf, merge = self._filter, self.merge
        if kf is None or merge is None:
            return
        first = [c.first for c in merge.legs]
        won = [f - before for f, before in zip(first, self._first, strict=True)]
        self._first = first
        p = kf.primary
        if won[1 - p] > 2 * won[p] + 64:
            kf.set_primary(1 - p)
            log.debug("%s: leg %d is the faster path now: its socket keeps every packet",
                      self.name, 2 - p)

    def close(self) -> None:
        """Stop watching the socket and close it."""
        for timer in (self._release_timer, self._leg_timer):
            if timer is not None:
                timer.cancel()
        self._release_timer = self._leg_timer = None
        if self._filter is not None:
            self.sync_legs()
            self._filter.close()
            self._filter = None
        loop = self._loop
        for sock in (self.sock, self.sock2):
            if sock is None:
                continue
            if loop is not None:
                try:
                    loop.remove_reader(sock.fileno())
                except Exception:  # noqa: BLE001 - the loop may be closing already
                    log.debug("%s: remove_reader failed", self.name)
            sock.close()
        self.sock = self.sock2 = None

    def pause(self) -> None:
        """Stop reading the socket (the kernel drops what overflows its buffer)."""
        self.paused = True
        if self._loop is not None:
            for sock in (self.sock, self.sock2):
                if sock is not None:
                    self._loop.remove_reader(sock.fileno())

    def resume(self) -> None:
        """Discard what queued up in the socket while paused; read it again."""
        self.paused = False
        loop = self._loop
        if loop is None:
            return
        for leg, sock in enumerate((self.sock, self.sock2)):
            if sock is None:
                continue
            for _ in range(10_000):  # stale datagrams: old news
                _, lengths = sock.drain()
                if len(lengths) == 0:
                    break
            loop.remove_reader(sock.fileno())
            loop.add_reader(sock.fileno(), self.on_readable, False, leg)

    # -- reading ----------------------------------------------------------------------

    def on_readable(self, flush: bool = False, leg: int = 0) -> None:
        """The readiness callback of leg ``leg``'s socket: read, and never let an
        exception reach the loop."""
        host = self._host
        try:
            self.read(flush, leg)
        except Exception as exc:  # a bug: surface it to the consumer, do not spin
            log.exception("receiver: error while reading %s", self.name)
            if self._loop is not None:
                for sock in (self.sock, self.sock2):
                    if sock is not None:
                        self._loop.remove_reader(sock.fileno())
            if host is not None:
                host.read_failed(self, exc)
        if host is not None:
            host.read_done()

    def read(self, flush: bool = False, leg: int = 0) -> None:
        """Drain up to :attr:`max_batches` batches of leg ``leg`` into :meth:`feed`
        (through the merge for an ST 2022-7 flow; video overrides this with its
        hold-and-pace read)."""
        for _ in range(self.max_batches):
            got = self._drain(leg)
            if got is None:
                return
            batch, lengths, now = got
            self._deliver(leg, batch, lengths, now)
            if len(lengths) < self.batch:
                return

    def _deliver(self, leg: int, batch: np.ndarray, lengths: np.ndarray, now: int) -> None:
        """Hand a drained batch to :meth:`feed`, merging the legs of an ST 2022-7 flow."""
        merge = self.merge
        if merge is None:
            self.feed(batch, lengths, now)
            return
        self._before_merge(leg, now)
        for rows, lens in merge.push(leg, batch, lengths, now):
            self.feed(rows, lens, now)
        self._arm_release(now)

    def _before_merge(self, leg: int | None, now: int) -> None:
        """Called before the merge is given anything from leg ``leg`` (None: a timer's
        release or a flush); video settles a split batch held on the other leg here."""

    def _arm_release(self, now: int) -> None:
        """Wake up when the oldest datagram held behind a gap stops waiting."""
        merge, loop = self.merge, self._loop
        if merge is None or loop is None or self._release_timer is not None:
            return
        deadline = merge.deadline
        if deadline is not None:
            self._release_timer = loop.call_later(max(0.0, (deadline - now) / 1e9), self._release)

    def _release(self) -> None:
        self._release_timer = None
        merge = self.merge
        if merge is None or self.sock is None:
            return
        try:
            # the legs may hold what the gap waits for (one left unwatched by a hold, or
            # not read yet by a loop that ran late): read them first
            self.catch_up()
            now = self.clock.now_ns()
            self._before_merge(None, now)
            for rows, lens in merge.release(now):
                self.feed(rows, lens, now)
        except Exception as exc:  # a bug: surface it, as on_readable does
            log.exception("receiver: error while releasing held datagrams of %s", self.name)
            if self._host is not None:
                self._host.read_failed(self, exc)
            return
        self._arm_release(now)
        if self._host is not None:
            self._host.read_done()

    def flush_merge(self, now: int) -> None:
        """Hand on what the merge holds (the flow went silent)."""
        if self.merge is not None and self.merge.held:
            self._before_merge(None, now)
            for rows, lens in self.merge.flush():
                self.feed(rows, lens, now)

    def _poll_legs(self) -> None:
        loop, merge = self._loop, self.merge
        if loop is None or merge is None or self.sock is None:
            return
        self.sync_legs()
        self._pick_primary()
        for ev in merge.poll_legs(self.clock.now_ns()):
            self.leg_events.append(ev)
            log.info("%s: %s", self.name, self._leg_text(ev.leg, merge))
        self._leg_timer = loop.call_later(_LEG_POLL_S, self._poll_legs)

    def _leg_text(self, leg: int, merge: DupMerger) -> str:
        """What a change of leg ``leg`` means for the flow, for the log (no patient data)."""

        def where(i: int) -> str:
            m = self.legs_media[i] if i < len(self.legs_media) else self.media
            return f"leg {i + 1} ({m.address}:{m.port})"

        def why(i: int) -> str:
            if merge.legs[i].state is LegState.MISSING:
                return "has delivered nothing since the start"
            return f"silent for {merge.silence_ns // 1_000_000} ms"

        other = 1 - leg
        up = merge.legs[leg].state is LegState.UP
        other_up = merge.legs[other].state is LegState.UP
        if up and other_up:
            return f"{where(leg)} is back"
        if up:
            return (f"{where(leg)} is delivering; {where(other)} {why(other)}: running on "
                    f"leg {leg + 1}")
        if other_up:
            return f"{where(leg)} {why(leg)}: running on leg {other + 1}"
        return f"{where(leg)} {why(leg)} too: no leg is delivering"

    def feed(self, batch: np.ndarray, lengths: np.ndarray, now: int) -> None:
        """Hand one drained batch to the flow's depacketizer (per kind)."""
        raise NotImplementedError

    def catch_up(self) -> None:
        """Read now what waits in the flow's sockets, those a hold left unwatched first:
        called before a wait is called over, a pairing deadline's or an ST 2022-7 gap's (a
        loop that ran late, or a deferred video read, may not have read what it waits
        for)."""
        if self.paused:
            return
        self._read_unwatched()
        for leg in (0, 1):
            if self.socket_of(leg) is not None:
                self.on_readable(True, leg)

    def _read_unwatched(self) -> None:
        """Read the sockets a hold left unwatched (only video holds them)."""

    def _drain(self, leg: int = 0) -> tuple[np.ndarray, np.ndarray, int] | None:
        sock = self.sock if leg == 0 else self.sock2
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
        # per leg (an ST 2022-7 flow's two sockets hold and pace on their own)
        self.hold_timers: list[asyncio.TimerHandle | None] = [None, None]
        self.reader_off = [False, False]  # not watched until the hold timer (trickling in)
        self.last_rx_ns = 0  # when the last datagram was read
        # Pacing of the frames as read: when the frame being received was first read
        # (0: between frames), and the last frame's first read -> marker read (ns).
        self._frame_t0 = 0
        self._span_ns = 0
        self._frame_ts = -1  # the RTP timestamp of the frame that ended last
        self._catch_up: int | None = None  # the leg read after the frame's end (_wake_legs)
        self.deferrals = 0  # holds that left the socket unwatched until late in the frame
        self._late_rows = 0  # packets that arrive in _DEFER_MARGIN_S (once split reads begin)
        self.sink = sink
        #: Read with split reads (module doc) when the socket can; False keeps every
        #: read on the copying path (the differential benchmarks compare the two).
        self.split = True
        self._split_plan: SplitPlan | None = None  # the plan of a held split batch
        self._split_leg = 0  # the leg holding it
        # Of an ST 2022-7 flow: the held batch's header rows, lengths and spare rows
        # (views valid while it is held), and how many of them the merge took already.
        self._split_rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._split_taken = 0
        # Frame buffers for what is held at once (the 8 recent frames, the consumer's
        # queue, the pairing wait: 11 at 2160p60 in a benchmark run), faulted in now,
        # not while the stream runs (at 2160p, 20.7 MB each: with 4 prepared, the loop
        # stalled 25-224 ms and 20-110 k datagrams were lost per 10 s run).
        self.depkt.prepare(12)

    def start(self, loop: asyncio.AbstractEventLoop, sock: UdpReceiver, host: ReaderHost) -> None:
        """Watch the socket and start the silence check."""
        super().start(loop, sock, host)
        loop.call_later(_SILENCE_S, self._check_silence)

    def close(self) -> None:
        """Read what a deferral left in the sockets (the leading leg first, so that the
        counters, each leg's too, include what arrived), cancel the hold timers, stop
        watching the sockets and close them."""
        if self._loop is not None and not self.paused:
            self._read_unwatched()
        for leg, timer in enumerate(self.hold_timers):
            if timer is not None:
                timer.cancel()
                self.hold_timers[leg] = None
        super().close()

    def read(self, flush: bool = False, leg: int = 0) -> None:
        """Read up to 4 batches of leg ``leg``; hold a batch without a marker bit (see
        module doc)."""
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
        merge = self.merge
        for _ in range(4):
            plan = self._split_plan_for(leg)
            if plan is not None:
                if self._read_split(leg, flush, plan):
                    continue
                return
            got = self._drain(leg)
            if got is None:
                return
            batch, lengths, now = got
            sock = self.socket_of(leg)
            assert sock is not None
            self.last_rx_ns = now
            n = len(lengths)
            new = sock.new_rows
            after, ts = _frame_end(batch[n - new :])
            marker = after >= 0
            if merge is None and new and batch.shape[1] > 1:
                self._paced(after, ts, now)
            if not flush and n < _HOLD_ROWS and batch.shape[1] > 1 and not marker and sock.hold():
                # One datagram per wake-up (a sender without GSO on a path that does not
                # coalesce): let them queue in the socket until the timer.
                self._hold(leg, sock, now, new < _PACE_ROWS and not sock.gro, defer=False)
                return
            self._cancel_hold(leg)
            if merge is None:
                for ev in self.depkt.feed(batch, lengths, now):
                    sink.on_frame(self, ev, now)
            else:
                won = merge.winners
                self._deliver(leg, batch, lengths, now)
                # of an ST 2022-7 flow, the pacing of the merged stream: reads that
                # delivered some of its packets first (copies come at any time)
                if merge.winners > won:
                    self._paced(after, ts, now)
                other = 1 - leg
                if merge.held and self.reader_off[other]:
                    # Winners wait behind a gap, and the other leg, which may hold the
                    # gap's packets, is not watched (a deferral, which may last longer
                    # than the merge waits: the gap was given up and its packets came
                    # late, with the second leg's copies dropped in the kernel). It is
                    # read now.
                    self._cancel_hold(other)
                    self._flush_held(other)
            if n < self.batch:
                return

    def _split_plan_for(self, leg: int) -> SplitPlan | None:
        """The plan of the next split read of leg ``leg``, or None for an ordinary drain.

        Of an ST 2022-7 flow only the leg that leads the merge reads split (the other's
        datagrams are mostly copies, which would only be moved out again), and never
        while the other leg holds a split batch."""
        plan = self._split_plan
        if plan is not None and self._split_leg != leg:
            return None
        sock = self.socket_of(leg)
        self._split_plan = None
        self._split_rows = None
        if sock is None:
            return None
        if plan is not None:
            if self.depkt.plan_is_current(plan):
                return plan
            # Something was fed or a frame emitted since the rows were held (a paused
            # flow's silence flush): the plan may point into a frame handed out. Give up
            # the held rows (their packets count as lost) and plan again.
            sock.unhold()
            self._split_taken = 0
        if not (self.split and sock.can_split):
            return None
        if self.merge is not None and not self.merge.leads(leg):
            return None
        return self.depkt.plan_split()

    def _read_split(self, leg: int, flush: bool, plan: SplitPlan) -> bool:
        """One split drain of leg ``leg`` (module doc): payloads land in the frame, the
        depacketizer verifies the headers. Returns True when the batch was full (read
        again).

        Of an ST 2022-7 flow the merge takes the batch's datagrams when they are its
        next numbers (:meth:`~rtstream.proto.dup.DupMerger.take_next`): when the batch
        is depacketized, or earlier, while it is held, when the other leg's batch is
        about to be merged (:meth:`_before_merge`). What it does not take is put back
        together and merged whole.
        """
        sock = self.socket_of(leg)
        assert sock is not None
        fmt = self.fmt
        self._late_rows = int(fmt.frame_bytes * _DEFER_MARGIN_S * 1e9
                              / (plan.payload * fmt.frame_duration_ns))
        heads, lengths, spare = sock.drain_split(plan.data, plan.start, plan.payload,
                                                 plan.slots, head=plan.header)
        n = len(lengths)
        if n == 0:
            return False
        new = sock.new_rows
        self.packets += new
        now = self.clock.now_ns()
        self.last_rx_ns = now
        after, ts = _frame_end(heads[n - new :])
        marker = after >= 0
        if new:
            self._paced(after, ts, now)
        if not flush and n < _HOLD_ROWS and new and not marker and sock.hold():
            self._split_plan, self._split_leg = plan, leg
            if self.merge is not None:
                self._split_rows = (heads, lengths, spare)
            self._hold(leg, sock, now, False, defer=True)
            return False
        self._cancel_hold(leg)
        taken, self._split_taken = self._split_taken, 0
        self._split_batch(leg, plan, heads, lengths, spare, taken, now)
        return sock.split_full

    def _paced(self, after: int, ts: int, now: int) -> None:
        """Note a read's place in the frame pacing (``after``: it read the last packet
        of the frame of RTP timestamp ``ts`` and this many after it; -1: no frame's last
        packet). A frame first read more than two frame periods ago is stale (its marker
        was lost, or not noted): this read starts a new one. The last packet of the frame
        that ended last again (a copy, on the other leg of an ST 2022-7 flow) ends
        nothing: it had set the span to 0, and the next frame was not deferred."""
        if after >= 0 and ts == self._frame_ts:
            after = -1
        t0 = self._frame_t0
        if not t0 or now - t0 > 2 * self.fmt.frame_duration_ns:
            self._frame_t0 = t0 = now
        if after >= 0:
            if after > self._late_rows:
                # The next frame's first packets, more than arrive in a deferral's margin,
                # came in this read too: the socket is read late (a deferral woke after
                # the frame's end, or the process waited for a core). This frame's span
                # is unknown and the next one's start was missed; a deferral timed from
                # them would wake late again, and so on every frame, the frames ever
                # later than their grains (1-4 frames behind, a tenth paired with no
                # grain, on a busy machine). The next frame is read as it comes.
                self._span_ns, self._frame_t0 = 0, now
            else:
                self._span_ns, self._frame_t0 = now - t0, 0
            self._frame_ts = ts
            other = self._catch_up
            if other is not None and self.reader_off[other]:
                # the frame is in: the other leg's copies after its grain (_wake_legs)
                self._catch_up = None
                self._read_later(other, _HOLD_S)

    def _hold(self, leg: int, sock: UdpReceiver, now: int, reader_off: bool, *,
              defer: bool) -> None:
        """Arm leg ``leg``'s hold timer for a batch kept for the next read.

        Normally the timer reads what came within _HOLD_S, and readiness events read
        sooner. With ``defer`` (a split batch: its payloads are in place already), early
        in a paced frame the socket is not watched until _DEFER_MARGIN_S before the
        frame's last packet is due: the datagrams wait in the socket's buffer, one
        wake-up reads them all instead of one per burst of the sender, and the frame's
        last packets are read as they arrive. (The copying path would then copy most of
        a frame in one go just before its end: frame-ready p99 2.1-2.8 ms in two runs, so
        it does not defer.) Of an ST 2022-7 flow both legs wait, and the leading leg
        ``leg`` is read first when they wake."""
        loop = self._loop
        if self.hold_timers[leg] is not None or loop is None:
            return
        wait = _HOLD_S
        then: Callable[[int], None] = self._flush_held
        t0, span = self._frame_t0, self._span_ns
        other = 1 - leg
        if defer and span and t0:
            socks = [s for s in (self.sock, self.sock2) if s is not None]
            until = min(
                (t0 + span - now) / 1e9 - _DEFER_MARGIN_S,
                self.fmt.frame_duration_ns / 1e9,
                _DEFER_BYTES / self.fmt.frame_bytes * span / 1e9,
                # what arrives meanwhile fills at most a quarter of a socket's buffer
                # (datagrams take up to twice their size there)
                min(s.rcvbuf for s in socks) / 4 * span / 1e9 / self.fmt.frame_bytes,
            )
            if until > 2 * _HOLD_S:
                wait, reader_off = until, True
                self.deferrals += 1
                if self.merge is not None:
                    # Both legs wait: the other leg's datagrams are mostly copies of
                    # what this leg holds; read after it, they drop as copies. Its own
                    # timer waits too: read meanwhile, it could deliver what this leg has
                    # not read yet and lead. (A deferral waited for that timer instead:
                    # with both legs holding in turn, none began, some runs.)
                    self._cancel_hold(other)
                    self._unwatch(other)
                    then = self._wake_legs
        self.hold_timers[leg] = loop.call_later(wait, then, leg)
        if reader_off:
            self._unwatch(leg)

    def _watch(self, leg: int) -> None:
        """Undo :meth:`_unwatch` (the readiness events come back once a paused flow
        resumes)."""
        sock = self.socket_of(leg)
        if sock is not None and self._loop is not None and self.reader_off[leg]:
            self.reader_off[leg] = False
            if not self.paused:
                self._loop.add_reader(sock.fileno(), self.on_readable, False, leg)

    def _unwatch(self, leg: int) -> None:
        """Stop leg ``leg``'s readiness events until :meth:`_flush_held`."""
        sock = self.socket_of(leg)
        if sock is not None and self._loop is not None and not self.reader_off[leg]:
            self._loop.remove_reader(sock.fileno())
            self.reader_off[leg] = True

    def _wake_legs(self, leg: int) -> None:
        """The end of a deferral of both legs: the leading leg ``leg`` is read now. The
        other's datagrams are mostly copies: they are read _HOLD_S after the frame's last
        packet (:meth:`_paced`), so after the frame and its grain (read before, they held
        frames back: frame-ready p50 1.8 ms), at the latest a frame period from now, and
        at once when a gap waits for them in the merge."""
        other = 1 - leg
        self._catch_up = other  # (the lead's read may be the one with the frame's end)
        self._flush_held(leg)
        if self._catch_up is None or not self.reader_off[other]:
            return  # read already, or read at the end of the frame
        if self.merge is not None and self.merge.held:
            self._catch_up = None
            self._cancel_hold(other)
            self._flush_held(other)
        else:
            self._read_later(other, self.fmt.frame_duration_ns / 1e9)

    def _read_later(self, leg: int, delay: float) -> None:
        """Read leg ``leg`` in ``delay`` seconds (instead of when its timer said)."""
        self._cancel_hold(leg)
        if self._loop is not None:
            self.hold_timers[leg] = self._loop.call_later(delay, self._flush_held, leg)

    def _cancel_hold(self, leg: int) -> None:
        timer = self.hold_timers[leg]
        if timer is not None:
            timer.cancel()
            self.hold_timers[leg] = None

    def _end_hold(self, leg: int) -> None:
        """The batch held on leg ``leg`` was taken another way: cancel its timer, and
        watch again the sockets its hold left unwatched (both legs after a deferral of
        an ST 2022-7 flow), else nothing would read them until the silence check."""
        self._cancel_hold(leg)
        for i in (leg, 1 - leg):
            if self.hold_timers[i] is None:
                self._watch(i)

    def _split_batch(self, leg: int, plan: SplitPlan, heads: np.ndarray, lengths: np.ndarray,
                     spare: np.ndarray, taken: int, now: int) -> None:
        """Depacketize a split batch whose first ``taken`` datagrams the merge took."""
        n = len(lengths)
        merge = self.merge
        if merge is None or (taken < n and merge.take_next(leg, heads[taken:], lengths[taken:],
                                                           now)):
            taken = n
        # Put back together what the merge did not take before anything else writes in
        # the frame (where those payloads landed is no recorded segment's).
        rest = split_rows(plan, heads, lengths, spare, taken) if taken < n else None
        if taken:
            for ev in self.depkt.feed_split(plan, heads[:taken], lengths[:taken], spare, now):
                self.sink.on_frame(self, ev, now)
        if rest is not None:
            self._deliver(leg, rest, lengths[taken:], now)

    def _before_merge(self, leg: int | None, now: int) -> None:
        """A split batch held on another leg arrived first: the merge takes its datagrams
        now (it stays held), or, when they are not the merge's next numbers, it is
        depacketized now."""
        if self._split_plan is None or self._split_leg == leg:
            return
        rows = self._split_rows
        merge = self.merge
        if rows is not None and merge is not None:
            heads, lengths, _ = rows
            n, taken = len(lengths), self._split_taken
            if taken == n or merge.take_next(self._split_leg, heads[taken:], lengths[taken:],
                                             now):
                self._split_taken = n
                return
        self._settle_split(now)

    def _settle_split(self, now: int) -> None:
        """Depacketize the held split batch as it is (read nothing more: what arrived
        since is newer than what the caller is about to hand on)."""
        plan, rows, leg = self._split_plan, self._split_rows, self._split_leg
        self._split_plan = self._split_rows = None
        taken, self._split_taken = self._split_taken, 0
        sock = self.socket_of(leg)
        if plan is None or rows is None or sock is None:
            return
        sock.unhold()
        self._end_hold(leg)
        heads, lengths, spare = rows
        self._split_batch(leg, plan, heads, lengths, spare, taken, now)

    def feed(self, batch: np.ndarray, lengths: np.ndarray, now: int) -> None:
        """Depacketize one batch of merged winners (an ST 2022-7 flow); a split batch
        held meanwhile (already taken by the merge, so earlier) goes first."""
        if self._split_plan is not None:
            self._settle_split(now)
        for ev in self.depkt.feed(batch, lengths, now):
            self.sink.on_frame(self, ev, now)

    def _check_silence(self) -> None:
        loop = self._loop
        if self.sock is None or loop is None:
            return
        silence = max(_SILENCE_S, 2 * float(self.fmt.frame_duration_ns) / 1e9)
        if not self.paused:
            # A busy loop may not have read the socket for a while: what waits there is
            # not silence. Read it first, a socket left unwatched by a hold too (else its
            # held rows would be given up once the silence flush emitted the frame they
            # belong to), but that one only when the flow looks silent (a deferral's
            # timer reads it soon, and reading it early costs the reads it saves).
            for leg in (0, 1):
                if self.socket_of(leg) is not None and not self.reader_off[leg]:
                    self.on_readable(True, leg)
            if self.clock.now_ns() - self.last_rx_ns >= silence * 1e9:
                self._read_unwatched()
            now = self.clock.now_ns()
            if now - self.last_rx_ns >= silence * 1e9:
                self.flush_merge(now)
                for ev in self.depkt.flush():
                    self.sink.on_frame(self, ev, now)
                if self._host is not None:
                    self._host.read_done()
        loop.call_later(silence / 2, self._check_silence)

    def _read_unwatched(self) -> None:
        """Read the sockets a hold left unwatched now, the leading leg first."""
        lead = self._split_leg if self._split_plan is not None else 0
        for leg in (lead, 1 - lead):
            if self.reader_off[leg] and self.socket_of(leg) is not None:
                self._cancel_hold(leg)
                self._flush_held(leg)  # watches the socket again and reads it

    def _flush_held(self, leg: int = 0) -> None:
        self.hold_timers[leg] = None
        if self.socket_of(leg) is None or self._loop is None:
            return
        was_off = self.reader_off[leg]
        self._watch(leg)
        if not (was_off and self.paused):
            self.on_readable(True, leg)


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


#: Receive buffer of a socket when ReceiverConfig.rcvbuf is None, and how many frames of a
#: video flow it holds at least. 32 MiB is 1.5 frames of a 2160p60 10-bit stream (25 ms
#: at 10 Gbit/s), and that receiver was read up to 38 ms late in 10 s runs on this 2-CPU
#: machine (18-38 ms, seven runs); 8 frames (166 MB) leave room for a stall several times
#: that. (The kernel charges the memory only while datagrams wait.)
DEFAULT_RCVBUF = 32 << 20
RCVBUF_FRAMES = 8


def receive_buffer(reader: FlowReader, cfg: ReceiverConfig) -> int:
    """``SO_RCVBUF`` to ask for ``reader``'s sockets: ``cfg.rcvbuf``, else
    :data:`DEFAULT_RCVBUF` or, for a video flow, room for :data:`RCVBUF_FRAMES` of its
    frames when that is more."""
    if cfg.rcvbuf is not None:
        return cfg.rcvbuf
    if isinstance(reader, VideoReader):
        return max(DEFAULT_RCVBUF, RCVBUF_FRAMES * reader.fmt.frame_bytes)
    return DEFAULT_RCVBUF


def open_socket(reader: FlowReader, cfg: ReceiverConfig, leg: int = 0) -> UdpReceiver:
    """The socket of ``reader``'s flow: its SDP address (or ``cfg.bind_address``) and port;
    ``leg`` 1 opens the second leg of an ST 2022-7 flow (its own ``c=``, joined on
    ``cfg.interface2``).

    A unicast ``c=`` address that is not ours (the sender's) falls back to 0.0.0.0.
    """
    m = reader.legs_media[leg]
    address = m.address
    if not is_multicast(address) and cfg.bind_address is not None and leg == 0:
        address = cfg.bind_address
    interface = cfg.interface2 if leg == 1 and cfg.interface2 is not None else cfg.interface
    if isinstance(reader, VideoReader):
        width = max(2048, (reader.fmt.maxudp or 1460) + 256)
    else:
        width = 9000
    rcvbuf = receive_buffer(reader, cfg)
    source = m.source_filter if is_multicast(address) else None
    try:
        sock = UdpReceiver(address, m.port, source=source, interface=interface,
                           rcvbuf=rcvbuf, max_datagram=width, batch=reader.batch_rows)
    except ConfigError:
        if is_multicast(address):
            raise
        # a unicast c= address that is not ours (a sender's address): any local one
        log.info("cannot bind %s:%d, receiving on 0.0.0.0:%d", address, m.port, m.port)
        sock = UdpReceiver("0.0.0.0", m.port, source=None, interface=interface,
                           rcvbuf=rcvbuf, max_datagram=width, batch=reader.batch_rows)
    log.debug("%s: leg %d listening on %s:%d", reader.name, leg + 1, address, m.port)
    return sock
