"""RTP fixed header (RFC 3550 §5.1), sequence-number arithmetic and vectorized header stores.

Theory of operation
-------------------
Control-rate packets (metadata grains, audio in tests, RTCP-like helpers) use the
object form: :func:`parse_rtp` turns one datagram into an :class:`RtpPacket` and
:meth:`RtpPacket.to_bytes` turns it back. Media-rate packets never become Python
objects: :func:`write_rtp_headers` stamps the 12-byte headers of a whole frame's worth of
datagrams laid out as rows of one ``numpy`` buffer, and :func:`read_rtp_headers` reads
the same fields back from a batch as arrays.

Sequence numbers are 16 bits on the wire (RFC 3550 §5.1). :func:`seq_diff`,
:func:`seq_add` and :func:`seq_diff_array` are the only places that do the modular
arithmetic; every depacketizer accounts its packets with one :class:`SequenceTracker`
(extended numbers, loss, reordering, duplicates and restarts, RFC 3550 Appendix A.1):
control-rate flows one packet at a time with :meth:`SequenceTracker.add`, media flows a
whole batch at a time with :meth:`SequenceTracker.extend` and
:meth:`SequenceTracker.record`, which give the same verdicts and counters as feeding the
batch's packets to ``add`` one by one.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

import numpy as np

from rtstream.errors import LocalProtocolError, RemoteProtocolError

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
_FIXED = struct.Struct("!BBHII")


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpPacket:
    """One RTP datagram (RFC 3550 §5.1, header extension per §5.3.1).

    Parameters
    ----------
    payload_type : int
        7-bit payload type; dynamic types are 96-127.
    sequence : int
        16-bit sequence number.
    timestamp : int
        32-bit media timestamp.
    ssrc : int
        32-bit synchronization source.
    marker : bool
        The M bit (end of a video frame or of a metadata grain).
    csrcs : tuple of int
        Contributing sources, at most 15.
    extension_profile : int or None
        16-bit "defined by profile" word of the header extension (0xBEDE for RFC 8285
        one-byte elements), or None when the X bit is clear.
    extension : bytes
        The extension body (a multiple of 4 bytes, without its 4-byte header).
    payload : bytes
        The payload, without padding.
    padding : int
        Number of padding octets to add (RFC 3550 P bit), 0 for none.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension: bytes = b""
    payload: bytes = field(default=b"", repr=False)
    padding: int = 0

    def __post_init__(self) -> None:
        _check_range("payload_type", self.payload_type, 0x7F)
        _check_range("sequence", self.sequence, 0xFFFF)
        _check_range("timestamp", self.timestamp, 0xFFFFFFFF)
        _check_range("ssrc", self.ssrc, 0xFFFFFFFF)
        if len(self.csrcs) > 15:
            raise LocalProtocolError("csrcs: at most 15 contributing sources fit the CC field")
        for c in self.csrcs:
            _check_range("csrcs", c, 0xFFFFFFFF)
        if self.extension_profile is None:
            if self.extension:
                raise LocalProtocolError("extension: body given without extension_profile")
        else:
            _check_range("extension_profile", self.extension_profile, 0xFFFF)
            if len(self.extension) % 4 or len(self.extension) > 4 * 0xFFFF:
                raise LocalProtocolError(
                    "extension: body must be a multiple of 4 bytes and at most 262140 bytes"
                )
        _check_range("padding", self.padding, 255)

    @property
    def header_size(self) -> int:
        """Bytes before the payload: fixed header, CSRCs and extension."""
        ext = 0 if self.extension_profile is None else 4 + len(self.extension)
        return RTP_HEADER_SIZE + 4 * len(self.csrcs) + ext

    def to_bytes(self) -> bytes:
        """Serialize to one datagram."""
        b0 = (RTP_VERSION << 6) | (0x20 if self.padding else 0) | len(self.csrcs)
        if self.extension_profile is not None:
            b0 |= 0x10
        b1 = (0x80 if self.marker else 0) | self.payload_type
        parts = [_FIXED.pack(b0, b1, self.sequence, self.timestamp, self.ssrc)]
        parts.extend(struct.pack("!I", c) for c in self.csrcs)
        if self.extension_profile is not None:
            parts.append(struct.pack("!HH", self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def _check_range(name: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise LocalProtocolError(f"{name}: {value} is outside 0..{maximum}")


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpPacket:
    """Parse one RTP datagram.

    Raises
    ------
    RemoteProtocolError
        When the datagram is shorter than its header says, has a version other than 2,
        or has inconsistent padding.
    """
    buf = bytes(data)
    n = len(buf)
    if n < RTP_HEADER_SIZE:
        raise RemoteProtocolError("RTP header", f"datagram of {n} bytes is shorter than 12")
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(buf, 0)
    if b0 >> 6 != RTP_VERSION:
        raise RemoteProtocolError("RTP version", f"{b0 >> 6}, expected 2")
    cc = b0 & 0x0F
    pos = RTP_HEADER_SIZE + 4 * cc
    if n < pos:
        raise RemoteProtocolError("RTP CSRC list", f"{cc} CSRCs do not fit in {n} bytes")
    csrcs = struct.unpack_from(f"!{cc}I", buf, RTP_HEADER_SIZE) if cc else ()
    profile: int | None = None
    ext = b""
    if b0 & 0x10:
        if n < pos + 4:
            raise RemoteProtocolError("RTP header extension", "extension header truncated")
        profile, words = struct.unpack_from("!HH", buf, pos)
        pos += 4
        if n < pos + 4 * words:
            raise RemoteProtocolError(
                "RTP header extension length", f"{words} words do not fit in {n - pos} bytes"
            )
        ext = buf[pos : pos + 4 * words]
        pos += 4 * words
    end = n
    pad = 0
    if b0 & 0x20:
        if n == pos:
            raise RemoteProtocolError("RTP padding", "P bit set but no padding octet")
        pad = buf[-1]
        if pad == 0 or pos + pad > n:
            raise RemoteProtocolError("RTP padding", f"count {pad} does not fit the packet")
        end = n - pad
    return RtpPacket(
        payload_type=b1 & 0x7F,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        marker=bool(b1 & 0x80),
        csrcs=tuple(csrcs),
        extension_profile=profile,
        extension=ext,
        payload=buf[pos:end],
        padding=pad,
    )


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between two 16-bit sequence numbers, in -32768..32767."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def ts_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between two 32-bit RTP timestamps."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def seq_add(a: int, delta: int) -> int:
    """The 16-bit sequence number ``delta`` after ``a`` (RFC 3550 §5.1, modulo 2**16)."""
    return (a + delta) & 0xFFFF


def seq_diff_array(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """:func:`seq_diff` of every element: signed ``a - b`` modulo 2**16, as int64.

    ``a`` and ``b`` may be any integer values (extended numbers too); only their low 16
    bits matter.
    """
    d: np.ndarray = ((np.asarray(a, np.int64) - b + 0x8000) & 0xFFFF) - 0x8000
    return d


class Arrival(enum.IntEnum):
    """What :meth:`SequenceTracker.add` made of a packet (RFC 3550 A.1 terms)."""

    IN_ORDER = 0
    """At or above the highest extended number seen: it advances the stream."""
    REORDERED = 1
    """Below the highest seen and not seen before: late, but new."""
    DUPLICATE = 2
    """An extended number already seen within the window."""


@dataclass(frozen=True, slots=True)
class BatchArrival:
    """The verdicts of :meth:`SequenceTracker.record` on a batch, in arrival order.

    A packet is at most one of the two; a packet in neither is in order.
    """

    duplicate: np.ndarray
    reordered: np.ndarray


_NO_SEQ = np.iinfo(np.int64).min
_MAX_EXTEND_PASSES = 8


class SequenceTracker:
    """Sequence accounting of one RTP stream (RFC 3550 §6.4.1 and Appendix A.1).

    Theory of operation
    -------------------
    Each 16-bit sequence number is *extended* to an unbounded integer by placing it at
    the signed distance (:func:`seq_diff`) from the highest extended number seen so far,
    so a packet from before a wrap maps below it and never makes a false wrap. The first
    packet of a stream is taken as is (or at a caller's seed, e.g. RFC 4175's 32-bit
    extended number). Then, per packet in arrival order:

    * **duplicate** when its extended number was already seen and lies within the last
      ``window`` numbers below the highest (older ones cannot be told apart and count
      as new): dropped from the accounting;
    * **reordered** when it is new but below the highest seen;
    * otherwise **in order**, and it raises the highest.

    ``lost`` is the expected count minus the unique packets received, RFC 3550 A.3:
    ``highest - lowest + 1 - unique`` (never below 0), plus what earlier streams lost.
    A new SSRC (:meth:`add` notices it; batch users call :meth:`restart`) keeps the
    counters, adds the old stream's loss to ``lost`` and starts again from its first
    packet. :meth:`restarted` tells a sender that restarted its numbering far behind
    (RFC 3550 A.1's ``MAX_MISORDER``) from reordering.

    Seen numbers are kept in a ring of ``window`` slots indexed by the extended number
    modulo ``window``, each holding the largest number of its residue: exact
    membership for the window below the highest, at a fixed size and with vectorized
    reads and writes. The batch methods (:meth:`extend`, :meth:`record`,
    :meth:`advance`) give the same extended numbers, verdicts and counters as
    :meth:`add` on the batch's packets one by one, with a few numpy calls per batch.

    Parameters
    ----------
    window : int
        How far below the highest a duplicate is recognized; a power of two. 1024 for
        control-rate flows; a video flow keeps 65536 (one whole wrap).
    """

    __slots__ = ("_dup", "_first", "_highest", "_lost_before", "_mask", "_reord", "_ring",
                 "_ssrc", "_unique", "_window")  # fmt: skip

    def __init__(self, *, window: int = 1024) -> None:
        if window < 1 or window & (window - 1):
            raise LocalProtocolError(f"window: {window} is not a power of two")
        self._window = window
        self._mask = window - 1
        self._ring = np.full(window, _NO_SEQ, np.int64)
        self._ssrc: int | None = None
        self._highest: int | None = None
        self._first = 0
        self._unique = 0
        self._dup = 0
        self._reord = 0
        self._lost_before = 0

    # -- counters ----------------------------------------------------------------------

    @property
    def window(self) -> int:
        """Numbers below the highest within which a duplicate is recognized (the ring's
        fixed size: the tracker's only per-stream memory)."""
        return self._window

    @property
    def ssrc(self) -> int | None:
        """The SSRC of the current stream (None before the first packet)."""
        return self._ssrc

    @property
    def highest(self) -> int | None:
        """Highest extended sequence number of the current stream, None before its first."""
        return self._highest

    @property
    def received(self) -> int:
        """Unique packets of the current stream (duplicates not counted)."""
        return self._unique

    @property
    def lost(self) -> int:
        """Packets never received, over every stream so far (RFC 3550 A.3)."""
        if self._highest is None:
            return self._lost_before
        return self._lost_before + max(0, self._highest - self._first + 1 - self._unique)

    @property
    def reordered(self) -> int:
        """New packets that arrived below the highest seen."""
        return self._reord

    @property
    def duplicates(self) -> int:
        """Packets whose extended number was already seen (within the window)."""
        return self._dup

    # -- state -------------------------------------------------------------------------

    def restart(self, ssrc: int | None = None) -> None:
        """Start a new stream (new SSRC, or a sender that restarted its numbering).

        The counters go on; the loss of the stream so far is kept in ``lost``.
        """
        self._lost_before = self.lost
        self._ssrc = ssrc
        self._highest = None
        self._first = 0
        self._unique = 0
        self._ring.fill(_NO_SEQ)

    def add(self, ssrc: int, seq: int) -> Arrival:
        """Account one packet (RFC 3550 A.1 ``update_seq``, without probation).

        Parameters
        ----------
        ssrc : int
            Its SSRC; another SSRC than the last one :meth:`restart` s the stream.
        seq : int
            Its 16-bit sequence number.
        """
        if ssrc != self._ssrc:
            self.restart(ssrc)
        h = self._highest
        ring = self._ring
        if h is None:
            self._highest = self._first = seq
            self._unique = 1
            ring[seq & self._mask] = seq
            return Arrival.IN_ORDER
        ext = h + seq_diff(seq, h)
        slot = ext & self._mask
        held = int(ring[slot])
        if held == ext and ext > h - self._window:
            self._dup += 1
            return Arrival.DUPLICATE
        if held < ext:
            ring[slot] = ext
        self._unique += 1
        if ext < h:
            self._reord += 1
            if ext < self._first:
                self._first = ext
            return Arrival.REORDERED
        self._highest = ext
        return Arrival.IN_ORDER

    # -- batches -----------------------------------------------------------------------

    def extend(self, seq: np.ndarray, *, first: int | None = None) -> np.ndarray:
        """Extended numbers of a batch of 16-bit sequence numbers, in arrival order.

        Each is placed relative to the highest extended number before it (the
        tracker's, then the batch's own), exactly as :meth:`add` would; the tracker is
        not changed (:meth:`record` accounts the result).

        Parameters
        ----------
        seq : numpy.ndarray
            ``(n,)`` integers, 0..65535.
        first : int or None
            Extended number of ``seq[0]`` when the stream has no packet yet (its low 16
            bits must equal ``seq[0]``); ``seq[0]`` itself by default.

        Returns
        -------
        numpy.ndarray
            ``(n,)`` int64.
        """
        seq = np.asarray(seq, np.int64)
        if seq.size == 0:
            return seq
        h0 = self._highest
        if h0 is None:
            h0 = int(seq[0]) if first is None else first
            if h0 & 0xFFFF != int(seq[0]):
                raise LocalProtocolError(f"first: {h0} does not end in seq[0]={int(seq[0])}")
        ext = h0 + seq_diff_array(seq, h0)
        if int(ext.min()) >= max(h0, int(ext.max())) - 0x8000:
            return ext  # every packet within half the space of every anchor: done
        # A packet more than half the space above the tracker's highest is placed
        # relative to the batch's own highest before it; each pass settles at least the
        # next packet whose anchor moved (usually one pass).
        for _ in range(_MAX_EXTEND_PASSES):
            anchor = np.maximum.accumulate(np.concatenate(([h0], ext[:-1])))
            again = anchor + seq_diff_array(seq, anchor)
            if np.array_equal(again, ext):
                return ext
            ext = again
        high = h0
        out = np.empty_like(seq)
        for i, s in enumerate(seq.tolist()):
            e = high + seq_diff(s, high)
            out[i] = e
            high = max(high, e)
        return out

    def record(self, ext: np.ndarray) -> BatchArrival:
        """Account a batch of extended numbers (from :meth:`extend`), in arrival order.

        Returns
        -------
        BatchArrival
            Which packets were duplicates and which were reordered; the counters have
            been advanced by them.
        """
        n = int(ext.size)
        if n == 0:
            none = np.zeros(0, bool)
            return BatchArrival(none, none)
        h0 = self._highest
        first = self._first
        if h0 is None:
            h0 = first = int(ext[0])
        run = np.maximum.accumulate(ext)
        anchor = np.empty_like(ext)  # the highest before each packet
        anchor[0] = h0
        np.maximum(run[:-1], h0, out=anchor[1:])
        ring = self._ring
        slots = ext & self._mask
        seen = ring[slots] == ext
        increasing = n == 1 or bool((ext[1:] > ext[:-1]).all())
        if not increasing:  # a repeat within the batch is seen too
            order = np.argsort(ext, kind="stable")
            ordered = ext[order]
            repeat = np.empty(n, bool)
            repeat[order] = np.concatenate(([False], ordered[1:] == ordered[:-1]))
            seen |= repeat
        dup = seen & (ext > anchor - self._window)
        new = ~dup
        reordered = new & (ext < anchor)
        n_dup = int(np.count_nonzero(dup))
        self._dup += n_dup
        self._reord += int(np.count_nonzero(reordered))
        self._unique += n - n_dup
        # remember the new ones, each slot keeping the largest number of its residue
        kept = ext[new] if n_dup else ext
        if not increasing:
            kept = np.sort(kept)  # the last of equal slots written wins: the largest
        kslots = kept & self._mask
        ring[kslots] = np.maximum(ring[kslots], kept)
        self._highest = max(h0, int(run[-1]))
        self._first = min(first, int(ext.min()))
        return BatchArrival(dup, reordered)

    def advance(self, n: int) -> None:
        """Account ``n`` packets numbered exactly ``highest + 1 .. highest + n``.

        The in-order fast path of a media depacketizer: the same as :meth:`record` on
        those numbers, with no verdict to compute.
        """
        h = self._highest
        if h is None:
            raise LocalProtocolError("advance: the stream has no packet yet")
        if n <= 0:
            return
        w = self._window
        lo = h + 1 + max(0, n - w)  # only the last ``window`` numbers stay in the ring
        m = h + n + 1 - lo
        slot = lo & self._mask
        head = min(m, w - slot)
        ring = self._ring
        ring[slot : slot + head] = np.arange(lo, lo + head, dtype=np.int64)
        if m > head:
            ring[: m - head] = np.arange(lo + head, lo + m, dtype=np.int64)
        self._highest = h + n
        self._unique += n

    def restarted(self, ext: np.ndarray, *, max_misorder: int = 100) -> bool:
        """Whether a batch says the sender restarted its numbering far behind.

        True when it holds at least two packets and all of them lie more than
        ``max_misorder`` below the highest (RFC 3550 A.1 resynchronizes after two
        sequential packets past ``MAX_MISORDER``); the caller then :meth:`restart` s and
        extends the batch again.
        """
        h = self._highest
        return h is not None and ext.size >= 2 and int(ext.max()) < h - max_misorder


def write_rtp_headers(
    out: np.ndarray,
    *,
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    marker_last: bool = True,
    extension: bool = False,
) -> None:
    """Stamp RTP fixed headers into every row of ``out`` with vectorized stores.

    Parameters
    ----------
    out : numpy.ndarray
        ``uint8`` array of shape ``(n, stride)`` with ``stride >= 12``; row ``i`` is
        datagram ``i``. Only bytes 0-11 of each row are written.
    sequence : int
        Extended sequence number of row 0; row ``i`` gets ``(sequence + i) & 0xFFFF``.
    marker_last : bool
        Set the M bit on the last row only (end of frame, RFC 4175 §4.1).
    extension : bool
        Set the X bit on every row.
    """
    if out.dtype != np.uint8 or out.ndim != 2 or out.shape[1] < RTP_HEADER_SIZE:
        raise LocalProtocolError("out: need a 2-D uint8 array with rows of at least 12 bytes")
    n = out.shape[0]
    if n == 0:
        return
    _check_range("payload_type", payload_type, 0x7F)
    out[:, 0] = (RTP_VERSION << 6) | (0x10 if extension else 0)
    out[:, 1] = payload_type
    if marker_last:
        out[-1, 1] = 0x80 | payload_type
    seqs = (np.arange(sequence, sequence + n, dtype=np.uint64) & 0xFFFF).astype(">u2")
    out[:, 2:4] = seqs.view(np.uint8).reshape(n, 2)
    out[:, 4:8] = np.frombuffer(struct.pack("!I", timestamp & 0xFFFFFFFF), np.uint8)
    out[:, 8:12] = np.frombuffer(struct.pack("!I", ssrc & 0xFFFFFFFF), np.uint8)


@dataclass(frozen=True, slots=True)
class RtpHeaderArrays:
    """Fixed-header fields of a batch of datagrams, one array element per datagram."""

    version: np.ndarray
    extension: np.ndarray
    csrc_count: np.ndarray
    padding: np.ndarray
    marker: np.ndarray
    payload_type: np.ndarray
    sequence: np.ndarray
    timestamp: np.ndarray
    ssrc: np.ndarray


def read_rtp_headers(batch: np.ndarray) -> RtpHeaderArrays:
    """Read the fixed header of every row of a ``(n, stride)`` uint8 batch at once.

    Rows shorter than 12 bytes must be filtered out by the caller (it knows each
    datagram's length); this function only decodes bits.
    """
    if batch.dtype != np.uint8 or batch.ndim != 2 or batch.shape[1] < RTP_HEADER_SIZE:
        raise LocalProtocolError("batch: need a 2-D uint8 array with rows of at least 12 bytes")
    b0 = batch[:, 0]
    b1 = batch[:, 1]
    hdr = np.ascontiguousarray(batch[:, :12])
    return RtpHeaderArrays(
        version=b0 >> 6,
        extension=(b0 & 0x10) != 0,
        csrc_count=b0 & 0x0F,
        padding=(b0 & 0x20) != 0,
        marker=(b1 & 0x80) != 0,
        payload_type=b1 & 0x7F,
        sequence=hdr[:, 2:4].copy().view(">u2").reshape(-1).astype(np.int64),
        timestamp=hdr[:, 4:8].copy().view(">u4").reshape(-1).astype(np.int64),
        ssrc=hdr[:, 8:12].copy().view(">u4").reshape(-1).astype(np.int64),
    )
