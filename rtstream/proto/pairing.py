"""Pair each video frame with the metadata grain of the same RTP timestamp (PS3.22 sync).

Theory of operation
-------------------
PS3.17 Annex PPPP.7 fixes the synchronization rule of DICOM-RTV: the metadata grain that
describes a video frame carries *exactly* the RTP timestamp of that frame (both flows run
on the same media clock, PS3.22 §6.2.1). Frames and grains travel in separate RTP
sessions, so either may arrive first, late, twice or never. :class:`Pairer` is the
sans-I/O core that matches them:

* A frame waits at most ``wait_ns`` (measured from its arrival, ``now`` passed by the
  caller) for its grain. Frames are released in arrival order: a frame whose grain came
  is released as soon as every older frame has been released; a frame whose deadline
  passed is released without metadata (``metadata_unmatched``).
* A grain waits at most ``wait_ns`` for its frame, then it is dropped
  (``grains_unmatched``). A grain whose frame was already released (it came too late) is
  dropped at once. A second grain with the same timestamp is a duplicate and dropped.
* Waits end only in :meth:`poll`, never in :meth:`add_frame` or :meth:`add_grain`: a
  caller whose loop ran late reads a frame and its grain late, and the one read first
  must not be called missing by the other's arrival. The caller reads what has come
  before it polls (the receiver reads its sockets when a deadline is due).
* A frame is only ever paired with a grain of identical timestamp; the timestamp is the
  key of a dictionary, so no other grain can be chosen.
* Memory is bounded: at most ``max_pending`` frames and grains wait; the oldest is
  evicted (frame released unmatched, grain dropped) when more arrive.
* Sender restart: a new video SSRC, or a new metadata SSRC / RTV SOP Instance UID
  ("generation"), ends the old stream. Frames of an older video SSRC are released
  unmatched at once; grains of an older metadata generation are dropped. When the video
  restarts while the metadata generation has been current for longer than the wait, the
  waiting grains belong to the old stream and are dropped too, and grains of that
  generation arriving within one more wait (the old stream's tail) are refused, so a
  timestamp collision between an old grain and a new frame cannot pair them. (A
  metadata flow that really goes on unchanged is accepted again after that window.)

:class:`MediaClock` maps an RTP timestamp back to TAI nanoseconds on the common clock
(ST 2110-10 ``a=mediaclk:direct=<offset>``: ``rtp = floor(t * rate / 1e9) + offset mod
2**32``), resolving the 32-bit wrap against the arrival time, so audio and video of one
rendition can be laid on one time line. :class:`AudioOrderer` releases audio chunks in
timestamp order behind a small bounded window.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from rtstream.errors import ConfigError
from rtstream.proto.rtp import ts_diff

__all__ = [
    "AudioOrderer",
    "MediaClock",
    "PairedFrame",
    "Pairer",
    "PairingStats",
]

F = TypeVar("F")
G = TypeVar("G")
A = TypeVar("A")

NS_PER_S = 1_000_000_000
_TS_MOD = 1 << 32


@dataclass(slots=True)
class PairingStats:
    """Counters of one :class:`Pairer`.

    Attributes
    ----------
    frames : int
        Frames fed in.
    grains : int
        Grains fed in.
    metadata_matched : int
        Frames released together with their grain.
    metadata_unmatched : int
        Frames released without a grain (none came within the wait).
    grains_unmatched : int
        Grains dropped without a frame: timed out, too late, evicted or of a finished
        generation.
    grains_duplicate : int
        Second grains for a timestamp already waiting or already paired.
    evicted_frames, evicted_grains : int
        Releases forced by the ``max_pending`` bound.
    restarts : int
        Video SSRC changes and metadata generation changes seen.
    """

    frames: int = 0
    grains: int = 0
    metadata_matched: int = 0
    metadata_unmatched: int = 0
    grains_unmatched: int = 0
    grains_duplicate: int = 0
    evicted_frames: int = 0
    evicted_grains: int = 0
    restarts: int = 0


@dataclass(slots=True)
class PairedFrame(Generic[F, G]):
    """A frame released by :class:`Pairer`, with its grain when one matched.

    Attributes
    ----------
    frame : F
        The caller's frame object, untouched.
    grain : G or None
        The grain with exactly the frame's RTP timestamp, or None.
    rtp_timestamp : int
        The frame's RTP timestamp.
    ssrc : int
        The video SSRC.
    arrived_ns : int
        ``now`` given when the frame was fed in.
    waited_ns : int
        How long the frame was held (release ``now`` minus ``arrived_ns``).
    """

    frame: F
    grain: G | None
    rtp_timestamp: int
    ssrc: int
    arrived_ns: int
    waited_ns: int = 0


@dataclass(slots=True)
class _PendingFrame(Generic[F, G]):
    frame: F
    rtp_timestamp: int
    ssrc: int
    arrived_ns: int
    grain: G | None = None
    matched: bool = False


@dataclass(slots=True)
class _PendingGrain(Generic[G]):
    grain: G
    arrived_ns: int
    generation: Hashable


@dataclass(slots=True)
class _Released:
    """Timestamps of recently released frames of the current video SSRC (bounded)."""

    order: deque[int] = field(default_factory=deque)
    members: set[int] = field(default_factory=set)
    limit: int = 256

    def add(self, ts: int) -> None:
        if ts in self.members:
            return
        self.order.append(ts)
        self.members.add(ts)
        if len(self.order) > self.limit:
            self.members.discard(self.order.popleft())

    def clear(self) -> None:
        self.order.clear()
        self.members.clear()


class Pairer(Generic[F, G]):
    """Match frames and grains of one video flow and its metadata flow by RTP timestamp.

    Parameters
    ----------
    wait_ns : int
        How long a frame waits for its grain and a grain for its frame (e.g. two frame
        periods). Must be >= 0.
    max_pending : int
        Bound on waiting frames and, separately, waiting grains.

    Notes
    -----
    Every method takes ``now`` (TAI nanoseconds, from the caller's clock) and returns the
    frames released by that call, oldest first. Call :meth:`poll` at
    :meth:`next_deadline`: only it ends waits (releases frames whose wait expired, drops
    such grains).
    Synchronization rule: PS3.17 Annex PPPP.7; common clock: PS3.22 §6.2.1.
    """

    def __init__(self, *, wait_ns: int, max_pending: int = 64) -> None:
        if wait_ns < 0:
            raise ConfigError("pairing.wait_ns", wait_ns, "an integer >= 0 nanoseconds")
        if max_pending < 1:
            raise ConfigError("pairing.max_pending", max_pending, "an integer >= 1")
        self.wait_ns = wait_ns
        self.max_pending = max_pending
        self.stats = PairingStats()
        self._frames: deque[_PendingFrame[F, G]] = deque()
        self._frames_by_ts: dict[int, _PendingFrame[F, G]] = {}
        self._grains: OrderedDict[int, _PendingGrain[G]] = OrderedDict()
        self._released = _Released()
        self._video_ssrc: int | None = None
        self._generation: Hashable | None = None
        self._generation_since: int = 0
        self._stale: dict[Hashable, int] = {}

    # -- inputs -----------------------------------------------------------------------

    def add_frame(self, *, ssrc: int, rtp_timestamp: int, frame: F, now: int) -> list[
        PairedFrame[F, G]
    ]:
        """Feed one video frame; return the frames released by it (oldest first)."""
        out: list[PairedFrame[F, G]] = []
        self.stats.frames += 1
        if self._video_ssrc is None:
            self._video_ssrc = ssrc
        elif ssrc != self._video_ssrc:
            self._video_restart(ssrc, now, out)
        if rtp_timestamp in self._frames_by_ts:
            # a second frame for one instant (a duplicate emitted upstream): no grain for it
            pending: _PendingFrame[F, G] = _PendingFrame(frame, rtp_timestamp, ssrc, now)
            pending.matched = True  # released in order, without a grain
            self._frames.append(pending)
        else:
            pending = _PendingFrame(frame, rtp_timestamp, ssrc, now)
            grain = self._grains.pop(rtp_timestamp, None)
            if grain is not None:
                pending.grain = grain.grain
                pending.matched = True
            self._frames.append(pending)
            self._frames_by_ts[rtp_timestamp] = pending
        while len(self._frames) > self.max_pending:
            self.stats.evicted_frames += 1
            self._release_head(now, out)
        self._release_ready(now, out)
        return out

    def add_grain(
        self,
        *,
        rtp_timestamp: int,
        grain: G,
        now: int,
        generation: Hashable = None,
    ) -> list[PairedFrame[F, G]]:
        """Feed one metadata grain; return the frames released by it.

        Parameters
        ----------
        generation : hashable
            What identifies the metadata stream: e.g. ``(ssrc, rtv_sop_instance_uid)``.
            A new value means the sender restarted the metadata flow.
        """
        out: list[PairedFrame[F, G]] = []
        self.stats.grains += 1
        stale_until = self._stale.get(generation)
        if stale_until is not None:
            if now <= stale_until:
                self.stats.grains_unmatched += 1
                return out
            del self._stale[generation]  # it went on after the restart: it is live
        if self._generation is None:
            self._generation = generation
            self._generation_since = now
        elif generation != self._generation:
            self.stats.restarts += 1
            self._drop_grains()
            # timestamps of the old stream's frames say nothing about the new grains
            self._released.clear()
            self._generation = generation
            self._generation_since = now
        waiting = self._frames_by_ts.get(rtp_timestamp)
        if waiting is not None:
            if waiting.matched:
                self.stats.grains_duplicate += 1
            else:
                waiting.grain = grain
                waiting.matched = True
        elif rtp_timestamp in self._released.members:
            # its frame is gone: paired already (duplicate) or released without it (late)
            self.stats.grains_unmatched += 1
        elif rtp_timestamp in self._grains:
            self.stats.grains_duplicate += 1
        else:
            self._grains[rtp_timestamp] = _PendingGrain(grain, now, generation)
            while len(self._grains) > self.max_pending:
                self._grains.popitem(last=False)
                self.stats.evicted_grains += 1
                self.stats.grains_unmatched += 1
        self._release_ready(now, out)
        return out

    def poll(self, now: int) -> list[PairedFrame[F, G]]:
        """Release frames (and drop grains) whose wait has expired at ``now``."""
        out: list[PairedFrame[F, G]] = []
        limit = now - self.wait_ns
        while self._grains:
            ts, first = next(iter(self._grains.items()))
            if first.arrived_ns >= limit:
                break
            del self._grains[ts]
            self.stats.grains_unmatched += 1
        while self._frames and self._frames[0].arrived_ns < limit:
            self._release_head(now, out)
        self._release_ready(now, out)
        return out

    def flush(self, now: int) -> list[PairedFrame[F, G]]:
        """Release every waiting frame now (end of stream) and drop waiting grains."""
        out: list[PairedFrame[F, G]] = []
        while self._frames:
            self._release_head(now, out)
        self._drop_grains()
        return out

    # -- introspection ----------------------------------------------------------------

    def next_deadline(self) -> int | None:
        """The earliest ``now`` at which :meth:`poll` would release or drop something."""
        candidates: list[int] = []
        if self._frames:
            candidates.append(self._frames[0].arrived_ns + self.wait_ns)
        if self._grains:
            first = next(iter(self._grains.values()))
            candidates.append(first.arrived_ns + self.wait_ns)
        return min(candidates) if candidates else None

    @property
    def pending_frames(self) -> int:
        """Frames waiting now."""
        return len(self._frames)

    @property
    def pending_grains(self) -> int:
        """Grains waiting now."""
        return len(self._grains)

    # -- internals --------------------------------------------------------------------

    def _video_restart(self, ssrc: int, now: int, out: list[PairedFrame[F, G]]) -> None:
        self.stats.restarts += 1
        while self._frames:
            self._release_head(now, out)
        self._released.clear()
        if self._generation is not None and now - self._generation_since > self.wait_ns:
            # the metadata stream did not restart with the video (yet): whatever it still
            # sends describes the old video, never the new one
            self._stale[self._generation] = now + self.wait_ns
            if len(self._stale) > 16:
                del self._stale[next(iter(self._stale))]
            self._drop_grains()
            self._generation = None
        self._video_ssrc = ssrc

    def _drop_grains(self) -> None:
        self.stats.grains_unmatched += len(self._grains)
        self._grains.clear()

    def _release_ready(self, now: int, out: list[PairedFrame[F, G]]) -> None:
        while self._frames and self._frames[0].matched:
            self._release_head(now, out)

    def _release_head(self, now: int, out: list[PairedFrame[F, G]]) -> None:
        head = self._frames.popleft()
        if self._frames_by_ts.get(head.rtp_timestamp) is head:
            del self._frames_by_ts[head.rtp_timestamp]
        if head.grain is not None:
            self.stats.metadata_matched += 1
        else:
            self.stats.metadata_unmatched += 1
        self._released.add(head.rtp_timestamp)
        out.append(
            PairedFrame(
                frame=head.frame,
                grain=head.grain,
                rtp_timestamp=head.rtp_timestamp,
                ssrc=head.ssrc,
                arrived_ns=head.arrived_ns,
                waited_ns=now - head.arrived_ns,
            )
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaClock:
    """The RTP media clock of one flow on the common TAI time line (ST 2110-10).

    Parameters
    ----------
    clock_rate : int
        RTP clock rate in Hz (90000 for video, the sample rate for audio).
    offset : int
        ``a=mediaclk:direct=<offset>`` from the SDP (0 for rtstream and most ST 2110
        senders).
    """

    clock_rate: int
    offset: int = 0

    def __post_init__(self) -> None:
        if self.clock_rate <= 0:
            raise ConfigError("clock_rate", self.clock_rate, "a positive integer in Hz")

    def to_ns(self, rtp_timestamp: int, near_ns: int) -> int:
        """TAI nanoseconds of the sampling instant of ``rtp_timestamp``.

        The 32-bit timestamp is unwrapped to the instant nearest ``near_ns`` (usually
        the arrival time), so the result is exact across wraps as long as transit plus
        skew stay below half the wrap period (13 h at 90 kHz, 6 h at 96 kHz).
        Returns the first nanosecond whose ``floor(t * rate / 1e9)`` equals the tick,
        the exact inverse of :func:`rtstream.proto.clock.rtp_timestamp`.
        """
        near_ticks = near_ns * self.clock_rate // NS_PER_S
        ticks_mod = (rtp_timestamp - self.offset) % _TS_MOD
        delta = ts_diff(ticks_mod, near_ticks % _TS_MOD)
        ticks = near_ticks + delta
        return -(-ticks * NS_PER_S // self.clock_rate)


@dataclass(slots=True)
class _AudioPending(Generic[A]):
    rtp_timestamp: int
    item: A
    arrived_ns: int


class AudioOrderer(Generic[A]):
    """Release audio chunks in RTP timestamp order after at most ``wait_ns``.

    Chunks that arrive after a later chunk was already released are dropped
    (``late``), so what comes out is strictly increasing on the media clock.

    Parameters
    ----------
    wait_ns : int
        How long a chunk may be held for an earlier one to arrive (0: release at once).
    max_pending : int
        Bound on held chunks.
    """

    def __init__(self, *, wait_ns: int = 0, max_pending: int = 256) -> None:
        if wait_ns < 0:
            raise ConfigError("audio.wait_ns", wait_ns, "an integer >= 0 nanoseconds")
        self.wait_ns = wait_ns
        self.max_pending = max_pending
        self.late = 0
        self._pending: list[_AudioPending[A]] = []
        self._last: int | None = None
        self._ssrc: int | None = None

    def add(self, *, ssrc: int, rtp_timestamp: int, item: A, now: int) -> list[A]:
        """Feed one chunk; return the chunks released, in timestamp order."""
        if self._ssrc is not None and ssrc != self._ssrc:
            out = self.flush()
            self._last = None
        else:
            out = []
        self._ssrc = ssrc
        if self._last is not None and ts_diff(rtp_timestamp, self._last) <= 0:
            self.late += 1
            return out + self.poll(now)
        self._pending.append(_AudioPending(rtp_timestamp, item, now))
        ref = self._pending[0].rtp_timestamp
        self._pending.sort(key=lambda p: ts_diff(p.rtp_timestamp, ref))
        out.extend(self.poll(now))
        while len(self._pending) > self.max_pending:
            out.append(self._pop())
        return out

    def poll(self, now: int) -> list[A]:
        """Release chunks whose wait expired (all of them when ``wait_ns`` is 0)."""
        out: list[A] = []
        limit = now - self.wait_ns
        while self._pending and min(p.arrived_ns for p in self._pending) <= limit:
            out.append(self._pop())
        return out

    @property
    def pending(self) -> int:
        """Chunks held now."""
        return len(self._pending)

    def next_deadline(self) -> int | None:
        """The earliest ``now`` at which :meth:`poll` releases something."""
        if not self._pending:
            return None
        return min(p.arrived_ns for p in self._pending) + self.wait_ns

    def flush(self) -> list[A]:
        """Release everything held."""
        out: list[A] = []
        while self._pending:
            out.append(self._pop())
        return out

    def _pop(self) -> A:
        first = self._pending.pop(0)
        self._last = first.rtp_timestamp
        return first.item
