"""Seamless protection (SMPTE ST 2022-7): merge the two legs of a duplicated RTP flow.

Theory of operation
-------------------
An ST 2022-7 sender emits every RTP packet of a flow twice, byte-identical, over two
network paths (*legs*); the receiver keeps whichever copy arrives first, so a packet is
lost only when both paths lose it. Which packets are copies of each other is told by the
RTP header alone: same SSRC and sequence number (RFC 3550 §5.1; ST 2022-7 requires the
legs to carry identical headers and payloads). :class:`DupMerger` does that merge on the
drained batches of the legs' sockets, before the flow's depacketizer, with a few numpy
calls per batch and no Python object per packet:

1. The 16-bit sequence numbers of a batch (and its SSRC bytes) are read as arrays.
   Datagrams too short for an RTP header, or of another version, are counted
   (``malformed``) and dropped; datagrams of an SSRC other than the locked one are
   counted (``foreign``) and dropped until the locked SSRC has been silent for
   ``ssrc_timeout_ns``, when the new one takes over (as the depacketizers do).
2. One :class:`~rtstream.proto.rtp.SequenceTracker` extends the numbers and records the
   batch (``extend`` + ``record``: one ring lookup, the bitmap of numbers seen). A copy
   whose number was seen already -- from either leg -- is *redundant* and dropped; the
   first copy *wins*. A batch whose numbers all lie far below what was seen (a sender
   that restarted its numbering) restarts the tracker, as a single-path receiver's
   tracker does (RFC 3550 A.1), except that "far" is a quarter of the duplicate window
   rather than ``MAX_MISORDER`` (100): the slower leg legitimately runs behind by its
   path delay (10 ms of a 1080p60 flow is ~2,400 packets). A sender that restarts with
   the same SSRC and lands within that distance below is taken as a lagging leg; the
   SSRC change that comes with a restart (RFC 3550 §8) resets the merge anyway.
3. A byte ring with one bit per leg per number remembers which legs delivered each
   number, so every leg has its own ``unique`` count: what that leg alone would have
   delivered. Against the merged stream, a leg's ``lost`` is what the merged stream
   expected minus that leg's unique packets, and ``recovered`` is the part of it the
   other leg delivered. Copies dropped before they reached the merge (the kernel filter
   of :mod:`rtstream.net.dupfilter`) are counted in by :meth:`DupMerger.filtered`.
4. **Skew.** The two paths have different delays: when the leading leg loses a packet,
   its copy on the other leg comes up to the path delay difference later. Winners that
   continue the merged stream in order without a gap are handed on at once (the steady
   state: no added latency, the batch shape unchanged, a view where possible); the next
   numbers out of order (a path that reorders) are held and sorted. Winners after a
   gap are *held* (copied aside, each with its arrival time) until the gap fills or the
   oldest held datagram has waited ``skew_ns``; then the gap is given up (it is real
   loss, which the depacketizer counts) and the held datagrams are handed on in
   sequence order. So the skew tolerance costs latency only behind a packet missing on
   the leading leg, and at most ``skew_ns``. A copy arriving after its gap was given up
   is handed on too (the depacketizer counts it late, as on a single path).
5. **Legs going silent.** :meth:`DupMerger.poll_legs` reports a :class:`LegEvent` when
   a leg has delivered nothing for ``silence_ns`` (``SILENT``, or ``MISSING`` for a leg
   never heard since the start) and when it delivers again (``UP``).

Time is an argument (``now``, nanoseconds); nothing here reads a clock or a socket.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from rtstream.errors import LocalProtocolError
from rtstream.proto.rtp import RTP_HEADER_SIZE, RTP_VERSION, SequenceTracker, seq_diff

__all__ = ["DupMerger", "LegCounters", "LegEvent", "LegState", "MergeBatch"]

#: One batch handed on: ``(rows, lengths)``, rows one datagram each (``(n, stride)`` uint8).
MergeBatch = tuple[np.ndarray, np.ndarray]


def _header_dtype(itemsize: int) -> np.dtype:
    """The fixed RTP header's fields (RFC 3550 §5.1) in a record of ``itemsize`` bytes."""
    return np.dtype({"names": ["b0", "seq", "ssrc"], "formats": ["u1", ">u2", ">u4"],
                     "offsets": [0, 2, 8], "itemsize": itemsize})


_HEADER = _header_dtype(RTP_HEADER_SIZE)
_ROW_HEADERS: dict[int, np.dtype] = {}  # by row width: the header read in place


def _headers(rows: np.ndarray) -> np.ndarray:
    """The RTP header fields of every row as a record array: a view (no copy) of
    C-contiguous rows, a copy of the first 12 bytes of each otherwise."""
    width = rows.shape[1]
    if rows.flags.c_contiguous and width >= RTP_HEADER_SIZE:
        dt = _ROW_HEADERS.get(width)
        if dt is None:
            dt = _ROW_HEADERS[width] = _header_dtype(width)
        return rows.view(dt)[:, 0]
    return np.ascontiguousarray(rows[:, :RTP_HEADER_SIZE]).view(_HEADER)[:, 0]


def _consecutive(seq: np.ndarray) -> bool:
    """True when 16-bit sequence numbers go up by one from each to the next (wrapping)."""
    n = len(seq)
    if n < 2:
        return True
    if (int(seq[-1]) - int(seq[0])) & 0xFFFF != n - 1:
        return False
    return bool((np.diff(seq.astype(np.uint16)) == 1).all())


DEFAULT_SKEW_NS = 10_000_000
DEFAULT_SILENCE_NS = 100_000_000
DEFAULT_SSRC_TIMEOUT_NS = 1_000_000_000


class LegState(enum.Enum):
    """What a leg is doing, as :meth:`DupMerger.poll_legs` reports it."""

    STARTING = "starting"
    """Not heard yet, and the silence time since the start has not passed."""
    UP = "up"
    """Delivering packets."""
    SILENT = "silent"
    """Delivered before, nothing for ``silence_ns``."""
    MISSING = "missing"
    """Nothing at all since the start for ``silence_ns`` (a network down at start)."""


@dataclass(frozen=True, slots=True)
class LegEvent:
    """A leg changed state: ``leg`` (0-based) is now ``state``; its last packet came at
    ``last_rx_ns`` (None: never)."""

    leg: int
    state: LegState
    now_ns: int
    last_rx_ns: int | None


@dataclass
class LegCounters:
    """Counters of one leg.

    Attributes
    ----------
    packets : int
        RTP datagrams read on the leg (of the locked SSRC).
    first : int
        Its copies that won (arrived before the other leg's).
    redundant : int
        Its copies dropped because the number was seen already.
    unique : int
        Distinct sequence numbers the leg delivered (what it alone would have given).
    malformed, foreign : int
        Datagrams dropped: not RTP-shaped; of another SSRC.
    last_rx_ns : int or None
        When the leg last delivered a datagram.
    state : LegState
    silences : int
        Times the leg went ``SILENT`` or was found ``MISSING`` (a short outage between
        two looks at the counters still shows here).
    filtered, filtered_buffers : int
        Copies dropped before they reached the merge (the kernel filter of
        :mod:`rtstream.net.dupfilter`), and the receive buffers they came in; the copies
        are in ``packets``, ``redundant`` and ``unique`` too.
    """

    packets: int = 0
    first: int = 0
    redundant: int = 0
    unique: int = 0
    malformed: int = 0
    foreign: int = 0
    last_rx_ns: int | None = None
    state: LegState = LegState.STARTING
    silences: int = 0
    filtered: int = 0
    filtered_buffers: int = 0


class DupMerger:
    """Merge the legs of one ST 2022-7 flow, first copy wins (sans-I/O).

    Parameters
    ----------
    legs : int
        Number of legs (2 for ST 2022-7's two paths).
    window : int
        Duplicate window of the sequence tracker (a power of two): 65536 for video
        (one whole wrap), 1024 for metadata and audio.
    skew_ns : int
        Path delay difference tolerated without loss: how long winners after a gap
        wait for the other leg's copy.
    silence_ns : int
        A leg silent this long is reported (:meth:`poll_legs`).
    max_held : int
        Most datagrams held behind gaps; more give the oldest gap up at once.
    ssrc_timeout_ns : int
        How long a silent SSRC keeps its lock.
    """

    def __init__(
        self,
        legs: int = 2,
        *,
        window: int = 65536,
        skew_ns: int = DEFAULT_SKEW_NS,
        silence_ns: int = DEFAULT_SILENCE_NS,
        max_held: int = 16384,
        ssrc_timeout_ns: int = DEFAULT_SSRC_TIMEOUT_NS,
    ) -> None:
        if not 2 <= legs <= 8:
            raise LocalProtocolError(f"legs: {legs} is outside 2..8")
        if skew_ns < 0 or silence_ns <= 0 or max_held < 1:
            raise LocalProtocolError("skew_ns >= 0, silence_ns > 0 and max_held >= 1 needed")
        self.skew_ns = skew_ns
        self.silence_ns = silence_ns
        self.max_held = max_held
        self.ssrc_timeout_ns = ssrc_timeout_ns
        self.legs = [LegCounters() for _ in range(legs)]
        self._tracker = SequenceTracker(window=window)
        self._mask = window - 1
        # A leg that lags behind the other by its path delay is not a restart: only a
        # batch more than a quarter of the window behind is (see the module notes).
        self._far_behind = window // 4
        self._owner = np.zeros(window, np.uint8)  # bit per leg that delivered the number
        self._seen = np.full(window, -1, np.int64)  # the number each slot's owner bits are of
        self._window = window
        self._ssrc: bytes | None = None
        self._ssrc_seen_ns = 0
        self._frontier: int | None = None  # every number <= it was handed on or given up
        self._held: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._held_count = 0
        self._started_ns: int | None = None
        self.winners = 0  # datagrams handed on (merged stream's unique packets)
        self.given_up = 0  # numbers the merge stopped waiting for (merged loss)
        self.held_total = 0  # datagrams that waited behind a gap
        self.restarts = 0

    # -- counters ----------------------------------------------------------------------

    @property
    def ssrc(self) -> int | None:
        """The locked SSRC (None before the first packet)."""
        return None if self._ssrc is None else int.from_bytes(self._ssrc, "big")

    @property
    def expected(self) -> int:
        """Packets the merged stream should have had (RFC 3550 A.3, over restarts)."""
        return self.winners + self._tracker.lost

    @property
    def lost(self) -> int:
        """Packets neither leg delivered (the merged stream's loss)."""
        return self._tracker.lost

    def leg_lost(self, leg: int) -> int:
        """Packets leg ``leg`` alone would have lost."""
        return max(0, self.expected - self.legs[leg].unique)

    def leg_recovered(self, leg: int) -> int:
        """Packets leg ``leg`` lost that another leg delivered."""
        return max(0, self.winners - self.legs[leg].unique)

    @property
    def held(self) -> int:
        """Datagrams waiting behind a gap now."""
        return self._held_count

    @property
    def deadline(self) -> int | None:
        """When the oldest held datagram stops waiting (ns), None when none is held."""
        if not self._held:
            return None
        return min(int(t.min()) for _, _, _, t in self._held) + self.skew_ns

    # -- the merge ---------------------------------------------------------------------

    def push(self, leg: int, batch: np.ndarray, lengths: np.ndarray, now: int) -> list[MergeBatch]:
        """Merge one drained batch of leg ``leg``; return the batches to hand on, in order.

        Parameters
        ----------
        leg : int
            0-based leg index.
        batch : numpy.ndarray
            ``(n, stride)`` uint8, one datagram per row (a view of a reused socket buffer:
            what is held is copied, what is returned is valid until the next drain).
        lengths : numpy.ndarray
            ``(n,)`` bytes in each row.
        now : int
            Arrival time in ns.
        """
        if not 0 <= leg < len(self.legs):
            raise LocalProtocolError(f"leg: {leg} is outside 0..{len(self.legs) - 1}")
        if batch.ndim != 2 or batch.dtype != np.uint8:
            raise LocalProtocolError("batch: need a 2-D uint8 array")
        n = min(batch.shape[0], len(lengths))
        if self._started_ns is None:
            self._started_ns = now
        if n == 0:
            return []
        counters = self.legs[leg]
        batch = batch[:n]
        lengths = np.asarray(lengths)[:n]
        if batch.shape[1] < RTP_HEADER_SIZE:
            counters.malformed += n
            return []
        hdr = _headers(batch)
        b0 = hdr["b0"]
        if int(lengths.min()) >= RTP_HEADER_SIZE and int(b0.min()) >> 6 == int(b0.max()) >> 6 \
                == RTP_VERSION:
            ok = None
        else:
            ok = (lengths >= RTP_HEADER_SIZE) & ((b0 >> 6) == RTP_VERSION)
        if ok is not None:
            counters.malformed += int(n - np.count_nonzero(ok))
            batch, lengths, hdr = batch[ok], lengths[ok], hdr[ok]
            n = len(lengths)
            if n == 0:
                return []
        counters.last_rx_ns = now
        out: list[MergeBatch] = []
        ssrc = hdr["ssrc"]
        if self._ssrc is None or now - self._ssrc_seen_ns > self.ssrc_timeout_ns:
            first_ssrc = int(ssrc[0]).to_bytes(4, "big")
            if first_ssrc != self._ssrc:
                out += self._restart(first_ssrc)
        locked = int.from_bytes(self._ssrc or b"\0\0\0\0", "big")
        if int(ssrc.min()) != locked or int(ssrc.max()) != locked:
            mine = ssrc == locked
            counters.foreign += int(n - np.count_nonzero(mine))
            batch, lengths, hdr = batch[mine], lengths[mine], hdr[mine]
            n = len(lengths)
            if n == 0:
                return out
        self._ssrc_seen_ns = now
        counters.packets += n
        seq = hdr["seq"].astype(np.int64)
        fast = self._fast(leg, batch, lengths, seq)
        if fast is not None:
            return out + fast
        tracker = self._tracker
        ext = tracker.extend(seq)
        if tracker.restarted(ext, max_misorder=self._far_behind):
            out += self._restart(self._ssrc)
            ext = tracker.extend(seq)
        dup = tracker.record(ext).duplicate
        bit = np.uint8(1 << leg)
        slots = ext & self._mask
        owner = self._owner
        if dup.any():
            win = ~dup
            n_win = int(np.count_nonzero(win))
            owner[slots[win]] = bit
            self._seen[slots[win]] = ext[win]
            dslots = slots[dup]
            own = (owner[dslots] & bit) != 0
            owner[dslots] |= bit
            cross = int(own.size - np.count_nonzero(own))
            counters.redundant += n - n_win
            if n_win == 0:
                counters.unique += cross
                return out
            batch, lengths, ext = batch[win], lengths[win], ext[win]
        else:
            n_win, cross = n, 0
            owner[slots] = bit
            self._seen[slots] = ext
        counters.first += n_win
        counters.unique += n_win + cross
        self.winners += n_win
        out += self._order(batch, lengths, ext, now)
        return out

    def _fast(self, leg: int, batch: np.ndarray, lengths: np.ndarray, seq: np.ndarray
              ) -> list[MergeBatch] | None:
        """The two steady-state batches in a few numpy calls, or None (use the general
        path): consecutive numbers that continue the merged stream exactly (the leading
        leg: all win, handed on as they are), or consecutive numbers all seen already
        (the other leg's copies: all redundant). Same counters as the general path."""
        h = self._tracker.highest
        n = len(seq)
        if h is None or self._held or self._frontier != h or n >= 0x8000:
            return None
        if not _consecutive(seq):
            return None
        first = h + seq_diff(int(seq[0]), h)
        if first == h + 1:
            self._advance(leg, n)
            return [(batch, lengths)]
        if first + n - 1 <= h and first > h - self._window:
            slots = self._slots(first, n)
            if not bool((self._seen[slots] == np.arange(first, first + n)).all()):
                return None
            prior = self._owner[slots]
            bit = np.uint8(1 << leg)
            own = int(np.count_nonzero(prior & bit))
            self._owner[slots] = prior | bit
            counters = self.legs[leg]
            counters.redundant += n
            counters.unique += n - own
            return []
        return None

    def _slots(self, first: int, n: int) -> slice | np.ndarray:
        """Where numbers ``first .. first + n - 1`` live in the rings (a slice unless
        they wrap around the window's end)."""
        lo = first & self._mask
        if lo + n <= self._window:
            return slice(lo, lo + n)
        return np.arange(first, first + n, dtype=np.int64) & self._mask

    def _advance(self, leg: int, n: int) -> None:
        """The next ``n`` numbers of the merged stream came first on ``leg``, no gap."""
        h = self._tracker.highest
        assert h is not None
        slots = self._slots(h + 1, n)
        self._tracker.advance(n)
        self._owner[slots] = np.uint8(1 << leg)
        self._seen[slots] = np.arange(h + 1, h + 1 + n, dtype=np.int64)
        counters = self.legs[leg]
        counters.first += n
        counters.unique += n
        self.winners += n
        self._frontier = h + n

    def leads(self, leg: int) -> bool:
        """True when ``leg`` delivered the newest number and nothing waits behind a gap:
        its next datagrams are likely the next numbers of the merged stream (a reader may
        then let the kernel put their payloads in place, see :meth:`take_next`)."""
        h = self._tracker.highest
        if h is None or self._held or self._frontier != h:
            return False
        slot = h & self._mask
        return bool(self._seen[slot] == h and self._owner[slot] & (1 << leg))

    def take_next(self, leg: int, headers: np.ndarray, lengths: np.ndarray, now: int) -> bool:
        """Accept a batch of ``leg`` known by its headers only, if it is exactly the next
        numbers of the merged stream (the leading leg's steady state).

        ``headers`` is ``(n, >= 12)`` uint8, the first bytes of each datagram. When every
        datagram is RTP of the locked SSRC and their numbers continue the merged stream
        one by one, they are counted as :meth:`push` counts winners and True is returned:
        the caller hands them on itself. Otherwise nothing changes and False is returned:
        push the whole datagrams instead.
        """
        n = min(headers.shape[0], len(lengths))
        h = self._tracker.highest
        if (n == 0 or n >= 0x8000 or h is None or self._held or self._frontier != h
                or self._ssrc is None or headers.shape[1] < RTP_HEADER_SIZE
                or now - self._ssrc_seen_ns > self.ssrc_timeout_ns):
            return False
        hdr = _headers(headers[:n])
        seq = hdr["seq"]
        locked = int.from_bytes(self._ssrc, "big")
        b0, ssrc = hdr["b0"], hdr["ssrc"]
        if not (
            int(seq[0]) == (h + 1) & 0xFFFF
            and int(np.asarray(lengths)[:n].min()) >= RTP_HEADER_SIZE
            and int(b0.min()) >> 6 == int(b0.max()) >> 6 == RTP_VERSION
            and int(ssrc.min()) == locked == int(ssrc.max())
            and _consecutive(seq)
        ):
            return False
        counters = self.legs[leg]
        counters.last_rx_ns = now
        counters.packets += n
        self._ssrc_seen_ns = now
        self._advance(leg, n)
        return True

    def filtered(self, leg: int, packets: int, buffers: int, now: int) -> None:
        """``packets`` more copies of leg ``leg`` (in ``buffers`` receive buffers) were dropped
        before the merge, each a number another leg delivered first: counted as the merge
        counts a copy it drops, and as a sign of life of the leg."""
        if packets <= 0:
            return
        c = self.legs[leg]
        c.packets += packets
        c.redundant += packets
        c.unique += packets
        c.filtered += packets
        c.filtered_buffers += buffers
        c.last_rx_ns = now

    def release(self, now: int) -> list[MergeBatch]:
        """Give up the gaps whose wait is over at ``now``; the batches that frees."""
        out: list[MergeBatch] = []
        while self._held:
            deadline = self.deadline
            if deadline is None or deadline > now:
                break
            out += self._give_up(now)
        return out

    def flush(self) -> list[MergeBatch]:
        """Hand on everything held, giving every gap up (end of stream, pause)."""
        out: list[MergeBatch] = []
        while self._held:
            out += self._give_up(None)
        return out

    def poll_legs(self, now: int) -> list[LegEvent]:
        """The legs whose state changed (see :class:`LegState`) by ``now``."""
        if self._started_ns is None:
            self._started_ns = now
        events: list[LegEvent] = []
        for i, c in enumerate(self.legs):
            last = c.last_rx_ns
            if last is None:
                state = (LegState.MISSING if now - self._started_ns >= self.silence_ns
                         else LegState.STARTING)
            elif now - last >= self.silence_ns:
                state = LegState.SILENT
            else:
                state = LegState.UP
            if state is not c.state:
                quiet_start = c.state is LegState.STARTING and state is LegState.UP
                c.state = state
                if state in (LegState.SILENT, LegState.MISSING):
                    c.silences += 1
                if not quiet_start:
                    events.append(LegEvent(i, state, now, last))
        return events

    # -- internals ---------------------------------------------------------------------

    def _restart(self, ssrc: bytes | None) -> list[MergeBatch]:
        """A new stream (new SSRC, or numbering restarted): hand on what was held."""
        out = self.flush()
        if self._ssrc is not None:
            self.restarts += 1
        self._ssrc = ssrc
        self._tracker.restart(None if ssrc is None else int.from_bytes(ssrc, "big"))
        self._owner.fill(0)
        self._seen.fill(-1)
        self._frontier = None
        return out

    def _order(self, batch: np.ndarray, lengths: np.ndarray, ext: np.ndarray, now: int) -> list[MergeBatch]:
        """Winners: hand on what continues the stream, hold what is behind a gap."""
        f = self._frontier
        lo, hi, n = int(ext.min()), int(ext.max()), len(ext)
        if f is None:
            f = self._frontier = lo - 1
        if (not self._held and lo == f + 1 and hi - lo + 1 == n
                and (n == 1 or bool((ext[1:] > ext[:-1]).all()))):
            self._frontier = hi  # the steady state: no gap, nothing held, in order
            return [(batch, lengths)]
        out: list[MergeBatch] = []
        late = ext <= f
        if late.any():  # a copy after its gap was given up, or older: as a single path
            out.append((batch[late], lengths[late]))
            keep = ~late
            batch, lengths, ext = batch[keep], lengths[keep], ext[keep]
            if len(ext) == 0:
                return out
        self._held.append((batch.copy(), lengths.copy(), ext.copy(), np.full(len(ext), now, np.int64)))
        self._held_count += len(ext)
        self.held_total += len(ext)
        out += self._take_run()
        while self._held_count > self.max_held:
            out += self._give_up(None)
        return out

    def _gather(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every held datagram in one set of arrays, in sequence order."""
        if len(self._held) == 1:
            rows, lens, ext, t = self._held[0]
        else:
            width = max(r.shape[1] for r, _, _, _ in self._held)
            total = sum(len(e) for _, _, e, _ in self._held)
            rows = np.zeros((total, width), np.uint8)
            i = 0
            for r, _, e, _ in self._held:
                rows[i : i + len(e), : r.shape[1]] = r
                i += len(e)
            lens = np.concatenate([x for _, x, _, _ in self._held])
            ext = np.concatenate([x for _, _, x, _ in self._held])
            t = np.concatenate([x for _, _, _, x in self._held])
        if len(ext) > 1 and not bool((ext[1:] > ext[:-1]).all()):
            order = np.argsort(ext, kind="stable")
            rows, lens, ext, t = rows[order], lens[order], ext[order], t[order]
        return rows, lens, ext, t

    def _take_run(self) -> list[MergeBatch]:
        """Hand on the held datagrams that continue the stream from the frontier."""
        if not self._held:
            return []
        rows, lens, ext, t = self._gather()
        f = self._frontier
        assert f is not None
        # held numbers are distinct and sorted: the run is where ext == f + 1 + index
        run = int(np.count_nonzero(ext == f + 1 + np.arange(len(ext))))
        if run and int(ext[run - 1]) != f + run:
            run = 0
        if run == 0:
            self._held = [(rows, lens, ext, t)]
            return []
        self._frontier = int(ext[run - 1])
        if run == len(ext):
            self._held = []
            self._held_count = 0
        else:
            self._held = [(rows[run:], lens[run:], ext[run:], t[run:])]
            self._held_count = len(ext) - run
        return [(rows[:run], lens[:run])]

    def _give_up(self, now: int | None) -> list[MergeBatch]:
        """Stop waiting for the first gap: skip it, hand on the run after it."""
        rows, lens, ext, t = self._gather()
        self._held = [(rows, lens, ext, t)]
        f = self._frontier
        assert f is not None
        self.given_up += max(0, int(ext[0]) - f - 1)
        self._frontier = int(ext[0]) - 1
        return self._take_run()
