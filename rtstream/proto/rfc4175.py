"""ST 2110-20 / RFC 4175 uncompressed video over RTP: packetizer and depacketizer.

Theory of operation
-------------------
Wire layout (RFC 4175 §4.1-4.3, ST 2110-20 general packing mode, ``spec/ps322.md`` §6.1)::

    0       12          14            16                18              20 (+6k)
    | RTP   | ext seq   | SRD Length  | F | SRD Row No. | C | SRD Offset | pixel data ...
            | (hi 16)   | (octets)    | 1 | 15 bits     | 1 | 15 bits    |

A packet carries one or more *sample row data* (SRD) segments; while C=1 another SRD
header follows. The pixel data of the segments follow the last header in header order.
Segments hold whole pgroups only. The Row Number is the scan line (for 4:2:0, whose
pgroups span two lines, the first of the two lines, hence even); the Offset counts pixels
from the left of the line. ``F`` selects the second field of an interlaced frame, whose
lines then interleave with the first field's.

**Packetizer.** The layout of a frame is fixed by the format, so it is computed once:
every SRD row is cut into ``n`` segments, the first ``n - 1`` of ``chunk`` bytes and the
last of ``last`` bytes (all equal when ``chunk`` divides the row). ``chunk`` is the largest
whole-pgroup divisor of the row that fits ``max_payload - 20``, so that every datagram of
a frame has the same size and the sender can hand the whole frame to UDP segmentation
offload. When the best divisor would waste more than about a quarter of the packets (rows
whose pgroup count has no useful divisor), a general layout with a shorter last segment
per row is used instead. One preallocated ``(packets, stride)`` buffer holds the frame:
RTP headers are written by :func:`rtstream.proto.rtp.write_rtp_headers`, the SRD headers
once at construction, and the payload by one or two reshaped slice assignments. There is
no Python loop per packet.

**Depacketizer.** :meth:`VideoDepacketizer.feed` takes a batch of received datagrams as
a ``(n, stride)`` array and their lengths. All headers are decoded with vectorized
gathers; SRD headers are read one *depth* at a time (the loop runs once per SRD header
position, not per packet). Malformed packets are counted (by field) and dropped. Sequence
numbers are extended, and loss, reordering and duplicates counted, by one
:class:`~rtstream.proto.rtp.SequenceTracker` (RFC 3550 A.1) a batch at a time; the
extended-sequence high bits only seed its first number, so peers that leave them zero
still unwrap correctly, and its duplicate window is one whole wrap (65536). Payload
segments are scattered into the frame buffer by fancy indexing, one assignment per
distinct segment length. A batch is taken in sequence order (sorted when the path
reordered it). A frame is emitted when its marker packet arrives or when a packet of a
later timestamp (or, for interlaced video, of a later frame) arrives; rows not fully
covered are reported in ``missing_rows``. Each frame gets its own buffer, so an
event owns its data.

**Split reads.** Once an in-order batch has shown this sender's payload size and that
size tiles every row, :meth:`VideoDepacketizer.plan_split` says where the next packets'
payloads belong: one after the other from the furthest byte the frame being built has
recorded (or from byte 0 of a spare buffer for the next frame). A socket that splits its
reads by that plan puts each datagram's first 20 bytes into a header row and its payload
there (``rtstream.net.udp``). :meth:`VideoDepacketizer.feed_split` verifies all headers
at once against the plan; the longest verified prefix is accounted as :meth:`feed` would,
without touching the payloads, and every later datagram is put back together from its
header row and wherever its payload landed and goes through :meth:`feed`. Since only
unrecorded bytes are planned, a payload in the wrong place overwrites nothing received:
it is moved before anything else writes there, and unrecorded bytes are zeroed at emit.
A plan is good only until the next batch or emitted frame (``SplitPlan.generation``).
"""

from __future__ import annotations

import collections
import logging
import sys
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from rtstream.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from rtstream.proto.formats import SUPPORTED_VIDEO, VIDEO_CLOCK_RATE, Sampling, VideoFormat
from rtstream.proto.rtp import RTP_HEADER_SIZE, SequenceTracker, seq_add, write_rtp_headers

log = logging.getLogger(__name__)

EXT_SEQ_SIZE = 2
SRD_HEADER_SIZE = 6
#: RTP fixed header + extended sequence number + one SRD header.
SINGLE_SRD_HEADER_BYTES = RTP_HEADER_SIZE + EXT_SEQ_SIZE + SRD_HEADER_SIZE
DEFAULT_MAX_PAYLOAD = 1460
#: How long a silent SSRC keeps its lock before another SSRC may take over (ns).
SSRC_TIMEOUT_NS = 1_000_000_000
_MAX_SRD_PER_PACKET = 64
_RECENT_FRAMES = 16
_SEQ_WINDOW = 65536
# The fixed 20 bytes of a plain single-SRD datagram (RTP header without CSRC or
# extension, extended sequence number, one SRD header), as one record per datagram.
_PLAIN_HEADER = np.dtype({
    "names": ["b0", "b1", "seq", "ts", "ssrc", "ext", "len", "row", "off"],
    "formats": ["u1", "u1", ">u2", ">u4", ">u4", ">u2", ">u2", ">u2", ">u2"],
    "offsets": [0, 1, 2, 4, 8, 12, 14, 16, 18],
    "itemsize": 20,
})


# --------------------------------------------------------------------------- object form


@dataclass(frozen=True, slots=True, kw_only=True)
class SrdHeader:
    """One sample row data header (RFC 4175 §4.2).

    Parameters
    ----------
    length : int
        SRD Length: octets of pixel data in this segment (16 bits).
    row : int
        SRD Row Number: scan line of the segment (15 bits; within the field when
        interlaced).
    offset : int
        SRD Offset: pixel position of the segment's first pixel in the line (15 bits).
    field : bool
        F bit: the segment belongs to the second field of an interlaced frame.
    """

    length: int
    row: int
    offset: int
    field: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.length <= 0xFFFF:
            raise LocalProtocolError(f"SRD Length: {self.length} is outside 0..65535")
        if not 0 <= self.row <= 0x7FFF:
            raise LocalProtocolError(f"SRD Row Number: {self.row} is outside 0..32767")
        if not 0 <= self.offset <= 0x7FFF:
            raise LocalProtocolError(f"SRD Offset: {self.offset} is outside 0..32767")

    def to_bytes(self, continuation: bool) -> bytes:
        """The 6-byte header; ``continuation`` sets the C bit (another header follows)."""
        row = self.row | (0x8000 if self.field else 0)
        off = self.offset | (0x8000 if continuation else 0)
        return self.length.to_bytes(2, "big") + row.to_bytes(2, "big") + off.to_bytes(2, "big")


@dataclass(frozen=True, slots=True, kw_only=True)
class PayloadHeader:
    """The RFC 4175 payload header: extended sequence number and the SRD headers.

    Parameters
    ----------
    extended_sequence : int
        High 16 bits of the 32-bit sequence number (RFC 4175 §4.1).
    srds : tuple of SrdHeader
        At least one; the C bit is derived from the position (set on all but the last).
    """

    extended_sequence: int
    srds: tuple[SrdHeader, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.extended_sequence <= 0xFFFF:
            raise LocalProtocolError(
                f"Extended Sequence Number: {self.extended_sequence} is outside 0..65535"
            )
        if not self.srds:
            raise LocalProtocolError("srds: a payload header needs at least one SRD header")

    @property
    def size(self) -> int:
        """Octets of the header: 2 + 6 per SRD header."""
        return EXT_SEQ_SIZE + SRD_HEADER_SIZE * len(self.srds)

    @property
    def data_length(self) -> int:
        """Octets of pixel data the SRD headers announce."""
        return sum(s.length for s in self.srds)

    def to_bytes(self) -> bytes:
        """Serialize the header (pixel data not included)."""
        last = len(self.srds) - 1
        parts = [self.extended_sequence.to_bytes(2, "big")]
        parts.extend(s.to_bytes(i < last) for i, s in enumerate(self.srds))
        return b"".join(parts)

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview) -> PayloadHeader:
        """Parse the header at the start of an RTP payload (RFC 4175 §4.2).

        Pixel data bytes after the announced segments are ignored.

        Raises
        ------
        RemoteProtocolError
            Naming ``Extended Sequence Number``, ``SRD header`` (truncated or more than 64
            headers) or ``SRD Length`` (segments longer than the payload).
        """
        buf = bytes(payload)
        n = len(buf)
        if n < EXT_SEQ_SIZE:
            raise RemoteProtocolError("Extended Sequence Number", f"payload of {n} bytes")
        ext = int.from_bytes(buf[0:2], "big")
        pos = EXT_SEQ_SIZE
        srds: list[SrdHeader] = []
        while True:
            if len(srds) >= _MAX_SRD_PER_PACKET:
                raise RemoteProtocolError("SRD header", f"more than {_MAX_SRD_PER_PACKET}")
            if pos + SRD_HEADER_SIZE > n:
                raise RemoteProtocolError(
                    "SRD header", f"header {len(srds)} truncated at byte {n} of the payload"
                )
            length = int.from_bytes(buf[pos : pos + 2], "big")
            row = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            off = int.from_bytes(buf[pos + 4 : pos + 6], "big")
            srds.append(
                SrdHeader(length=length, row=row & 0x7FFF, offset=off & 0x7FFF, field=bool(row >> 15))
            )
            pos += SRD_HEADER_SIZE
            if not off & 0x8000:
                break
        total = sum(s.length for s in srds)
        if pos + total > n:
            raise RemoteProtocolError(
                "SRD Length", f"segments of {total} bytes exceed the {n - pos} bytes of data"
            )
        return cls(extended_sequence=ext, srds=tuple(srds))


# --------------------------------------------------------------------------- packetizer


@dataclass(frozen=True, slots=True)
class PacketBatch:
    """A run of datagrams laid out as the rows of one buffer.

    Attributes
    ----------
    buf : numpy.ndarray
        ``(n, stride)`` uint8; row ``i`` is datagram ``i``, RTP header first.
    sizes : numpy.ndarray
        ``(n,)`` int: bytes used in each row.
    """

    buf: np.ndarray
    sizes: np.ndarray

    @property
    def segment_size(self) -> int:
        """Size of every datagram but possibly the last (the size of the first)."""
        return int(self.sizes[0]) if len(self.sizes) else 0

    @property
    def uniform(self) -> bool:
        """True when every datagram but possibly the last is ``segment_size`` bytes and
        equals the row stride, so ``buf`` is one contiguous run for segmentation offload.
        The general (fallback) layout is not uniform."""
        n = len(self.sizes)
        if n <= 1:
            return True
        return bool(np.all(self.sizes[:-1] == self.buf.shape[1]))

    def __len__(self) -> int:
        return len(self.sizes)

    def datagram(self, i: int) -> bytes:
        """Datagram ``i`` as bytes (a copy; for tests and per-packet fallbacks)."""
        return self.buf[i, : int(self.sizes[i])].tobytes()


def _choose_layout(row_bytes: int, pgroup: int, max_data: int) -> tuple[int, int, int]:
    """(segments per row, chunk bytes, last segment bytes) for one SRD row."""
    if max_data < pgroup:
        raise ConfigError("max_payload", max_data + SINGLE_SRD_HEADER_BYTES,
                          f"at least {pgroup + SINGLE_SRD_HEADER_BYTES} bytes for this format")
    if row_bytes <= max_data:
        return 1, row_bytes, row_bytes
    groups = row_bytes // pgroup
    fit = max_data // pgroup
    minimum = -(-groups // fit)
    best = 0
    for k in range(fit, 0, -1):
        if groups % k == 0:
            best = k
            break
    per_row = groups // best
    if per_row <= minimum + max(1, minimum // 4):
        return per_row, best * pgroup, best * pgroup
    chunk_groups = -(-groups // minimum)
    last = row_bytes - (minimum - 1) * chunk_groups * pgroup
    return minimum, chunk_groups * pgroup, last


class VideoPacketizer:
    """Cut whole frames into RFC 4175 datagrams (general packing mode).

    Interlaced frames (``fmt.interlaced``; not 4:2:0) are given woven, as the
    depacketizer returns them, and sent as two fields, the field that comes first in
    time first and with F=0 ("F=0 identifies the first field and F=1 the second
    field", RFC 4175 §4.3): by default (top field first) the even lines, then the odd
    ones with F=1; with ``bottom_field_first`` the odd lines with F=0, then the even ones
    with F=1. Row Numbers count lines within the field, the marker ends each field's last
    packet (RFC 4175 §4.1-4.2; ``spec/ps322.md`` §6.1). Which lines the first field holds
    is not in ST 2110-20's SDP: the sender says ``a=x-rtstream-field-order:bff``
    (:mod:`rtstream.proto.sdp`). The
    second field's timestamp is half a frame period later, as GStreamer's rtpvrawpay
    stamps it (its buffer time plus half the duration); the digest leaves the ST 2110-20
    rule unverified. GStreamer numbers interlaced rows by frame line; FFmpeg's RFC 4175
    demuxer and Intel MTL by field line, which rtstream follows. PsF (``segmented``)
    is sent the same way. The PS3.22 metadata grain is stamped with the frame's (first
    field's) timestamp.

    Parameters
    ----------
    fmt : VideoFormat
        One of :data:`rtstream.proto.formats.SUPPORTED_VIDEO`.
    ssrc : int
        RTP SSRC.
    payload_type : int
        Dynamic payload type (96-127 usually).
    max_payload : int
        Largest UDP payload (the whole RTP datagram); 1460 is the ST 2110-10 standard
        limit.
    sequence : int
        Extended (32-bit) sequence number of the first packet.
    field_offset : int or None
        Interlaced only: RTP ticks from the first field's timestamp to the second's.
        None (default) is half a frame period (GStreamer's stamping); 0 puts both fields
        on the frame's timestamp, which FFmpeg 5.1's RFC 4175 demuxer needs (it sends
        fields that way and splits frames at a timestamp change; ``docs/formats.md``).
    bottom_field_first : bool
        Interlaced only: the bottom field (odd lines, counting from 0) comes first in
        time, so it is sent first, with F=0.

    Attributes
    ----------
    packets_per_frame : int
    segments_per_row : int
    """

    def __init__(
        self,
        fmt: VideoFormat,
        *,
        ssrc: int,
        payload_type: int = 96,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        sequence: int = 0,
        field_offset: int | None = None,
        bottom_field_first: bool = False,
    ) -> None:
        if (fmt.sampling, fmt.depth) not in SUPPORTED_VIDEO:
            raise ConfigError(
                "video.depth", fmt.depth, f"a supported depth for {fmt.sampling.value}"
            )
        if fmt.interlaced and fmt.lines_per_row != 1:
            raise ConfigError("video.interlaced", True, "progressive only for 4:2:0")
        if not 0 <= ssrc <= 0xFFFFFFFF:
            raise ConfigError("ssrc", ssrc, "0..4294967295")
        if not 0 <= payload_type <= 127:
            raise ConfigError("payload_type", payload_type, "0..127")
        if not SINGLE_SRD_HEADER_BYTES < max_payload <= 65507:
            raise ConfigError("max_payload", max_payload, "21..65507 bytes")
        if not 0 <= sequence <= 0xFFFFFFFF:
            raise ConfigError("sequence", sequence, "0..4294967295")
        if bottom_field_first and not fmt.interlaced:
            raise ConfigError("bottom_field_first", True, "False for progressive video")
        #: The field sent first (F=0) holds the odd lines (interlaced only).
        self.bottom_field_first = bottom_field_first
        self.fmt = fmt
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.max_payload = max_payload
        self._seq = sequence
        rows = fmt.rows
        rb = fmt.row_bytes
        per_row, chunk, last = _choose_layout(
            rb, fmt.pgroup_bytes, max_payload - SINGLE_SRD_HEADER_BYTES
        )
        self.segments_per_row = per_row
        self._chunk = chunk
        self._last = last
        n = rows * per_row
        self.packets_per_frame = n
        stride = SINGLE_SRD_HEADER_BYTES + chunk
        self._buf = np.zeros((n, stride), np.uint8)
        # Per-packet SRD fields (constant for the format): written once. Interlaced
        # frames are sent field by field, the first in time first with F=0: the even
        # lines, then the odd ones (F=1), or the other way round when bottom field
        # first; each line numbered within its field.
        seg = np.tile(np.arange(per_row), rows)
        row = np.repeat(np.arange(rows), per_row) * fmt.lines_per_row
        first = 1 if bottom_field_first else 0
        if fmt.interlaced:
            line = np.concatenate([np.arange(first, rows, 2), np.arange(1 - first, rows, 2)])
            line = np.repeat(line, per_row)
            row = (line >> 1) | (((line & 1) ^ first) << 15)
        byte_off = seg * chunk
        pix_off = byte_off // fmt.pgroup_bytes * fmt.pgroup_pixels_per_line
        length = np.where(seg == per_row - 1, last, chunk)
        srd = np.stack([length, row, pix_off], axis=1).astype(">u2")
        self._buf[:, 14:20] = srd.view(np.uint8).reshape(n, 6)
        self._sizes = (length + SINGLE_SRD_HEADER_BYTES).astype(np.int64)
        self._sizes.setflags(write=False)
        self._ext_base = np.arange(n, dtype=np.int64)
        if field_offset is not None and not 0 <= field_offset < 1 << 31:
            raise ConfigError("field_offset", field_offset, "0..2**31-1 RTP ticks")
        #: RTP ticks between a frame's two fields: by default half the 90 kHz frame
        #: period, rounded, as GStreamer's rtpvrawpay stamps the second field; 0 when
        #: progressive.
        self.field_offset = 0
        if fmt.interlaced:
            self.field_offset = (
                round(Fraction(VIDEO_CLOCK_RATE) / fmt.exactframerate / 2)
                if field_offset is None else field_offset
            )

    @property
    def sequence(self) -> int:
        """Extended sequence number the next packet will carry."""
        return self._seq

    @property
    def stride(self) -> int:
        """Row stride of the packet buffer (the largest datagram)."""
        return int(self._buf.shape[1])

    def packetize(self, frame: np.ndarray, rtp_timestamp: int) -> PacketBatch:
        """Packetize one frame.

        Parameters
        ----------
        frame : numpy.ndarray
            uint8 array of ``fmt.frame_bytes`` elements (any shape, C order), pgroups in
            wire order, rows top to bottom.
        rtp_timestamp : int
            The frame's 90 kHz RTP timestamp (taken modulo 2**32).

        Returns
        -------
        PacketBatch
            Backed by a buffer this packetizer reuses on the next call; copy what you keep.
        """
        fmt = self.fmt
        if frame.dtype != np.uint8 or frame.size != fmt.frame_bytes:
            raise LocalProtocolError(
                f"frame: need {fmt.frame_bytes} uint8 bytes, got {frame.size} {frame.dtype}"
            )
        buf = self._buf
        n = self.packets_per_frame
        seq = self._seq
        if fmt.interlaced:
            # a marker ends each field; the second field is stamped half a frame later
            half = n // 2
            for part, first, ts in (
                (buf[:half], seq, rtp_timestamp),
                (buf[half:], seq + half, rtp_timestamp + self.field_offset),
            ):
                write_rtp_headers(part, payload_type=self.payload_type, sequence=first,
                                  timestamp=ts & 0xFFFFFFFF, ssrc=self.ssrc, marker_last=True)
        else:
            write_rtp_headers(
                buf,
                payload_type=self.payload_type,
                sequence=seq,
                timestamp=rtp_timestamp & 0xFFFFFFFF,
                ssrc=self.ssrc,
                marker_last=True,
            )
        hi = ((self._ext_base + seq) >> 16) & 0xFFFF
        buf[:, 12:14] = hi.astype(">u2").view(np.uint8).reshape(n, 2)
        rows = fmt.rows
        per_row = self.segments_per_row
        chunk = self._chunk
        h = SINGLE_SRD_HEADER_BYTES
        src = np.ascontiguousarray(frame).reshape(rows, fmt.row_bytes)
        if fmt.interlaced:  # the first field in time, then the other
            first = 1 if self.bottom_field_first else 0
            src = np.concatenate([src[first::2], src[1 - first::2]])
        if self._last == chunk:
            buf[:, h:] = src.reshape(n, chunk)
        else:
            b3 = buf.reshape(rows, per_row, buf.shape[1])
            full = (per_row - 1) * chunk
            b3[:, : per_row - 1, h:] = src[:, :full].reshape(rows, per_row - 1, chunk)
            b3[:, per_row - 1, h : h + self._last] = src[:, full:]
        self._seq = (seq + n) & 0xFFFFFFFF
        return PacketBatch(buf, self._sizes)


# --------------------------------------------------------------------------- depacketizer


@dataclass
class VideoFrameEvent:
    """A reassembled frame.

    Attributes
    ----------
    ssrc, rtp_timestamp : int
        For interlaced video, the first field's timestamp (the frame's, which its
        PS3.22 metadata grain carries).
    data : numpy.ndarray
        ``fmt.frame_bytes`` uint8 in wire pgroup order; rows never received are zero.
    complete : bool
        Every row fully received.
    missing_rows : numpy.ndarray
        bool per SRD row of the frame (for interlaced video, per frame line).
    packets : int
        Distinct datagrams that contributed.
    first_seq : int
        Lowest extended (32-bit) sequence number of the frame.
    """

    ssrc: int
    rtp_timestamp: int
    data: np.ndarray
    complete: bool
    missing_rows: np.ndarray
    packets: int
    first_seq: int


@dataclass
class DepacketizerStats:
    """Counters of a :class:`VideoDepacketizer` (all cumulative)."""

    packets: int = 0
    lost: int = 0
    duplicates: int = 0
    reordered: int = 0
    late: int = 0
    malformed: int = 0
    foreign: int = 0
    frames_complete: int = 0
    frames_incomplete: int = 0
    #: packets whose payload a split read put in place (no copy; not in :meth:`as_dict`)
    placed: int = 0
    malformed_by_field: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        """Plain counters (without the per-field breakdown)."""
        return {
            k: int(getattr(self, k))
            for k in (
                "packets", "lost", "duplicates", "reordered", "late", "malformed",
                "foreign", "frames_complete", "frames_incomplete",
            )
        }


# Reason codes of the vectorized parser (index into _FIELDS).
_OK = 0
_FIELDS = (
    "",
    "RTP header",
    "RTP version",
    "RTP CSRC list",
    "RTP header extension",
    "RTP padding",
    "Extended Sequence Number",
    "SRD header",
    "SRD Length",
    "SRD Row Number",
    "SRD Offset",
    "F bit",
    "SRD segments per frame",  # not a parse error: the pending frame's cap was reached
)
_R = {name: i for i, name in enumerate(_FIELDS)}


@dataclass(slots=True)
class _Parsed:
    ok: np.ndarray        # (n,) bool
    reason: np.ndarray    # (n,) int8
    marker: np.ndarray
    payload_type: np.ndarray
    seq: np.ndarray       # 16-bit
    ext_hi: np.ndarray
    ts: np.ndarray
    ssrc: np.ndarray
    seg_pkt: np.ndarray   # per segment: packet index
    seg_src: np.ndarray   # byte offset in the datagram
    seg_dst: np.ndarray   # byte offset in the frame
    seg_len: np.ndarray
    seg_row: np.ndarray   # frame row (coverage index)
    seg_field: np.ndarray


def _gather(batch: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``batch[rows, cols]`` as int64 with columns clipped into the row (callers mask)."""
    c = np.clip(cols, 0, batch.shape[1] - 1)
    out: np.ndarray = batch[rows, c].astype(np.int64)
    return out


def _u16(batch: np.ndarray, rows: np.ndarray | None, cols: np.ndarray) -> np.ndarray:
    """Big-endian 16-bit value at column ``cols[i]`` of row ``rows[i]`` (all rows when
    ``rows`` is None); a plain slice when every column is the same."""
    stride = batch.shape[1]
    if len(cols) and cols.min() == cols.max() and 0 <= int(cols[0]) <= stride - 2:
        c = int(cols[0])
        sub = batch[:, c : c + 2] if rows is None else batch[rows, c : c + 2]
        val: np.ndarray = (sub[:, 0].astype(np.int64) << 8) | sub[:, 1]
        return val
    r = np.arange(batch.shape[0]) if rows is None else rows
    both: np.ndarray = (_gather(batch, r, cols) << 8) | _gather(batch, r, cols + 1)
    return both


def _parse_uniform(batch: np.ndarray, lengths: np.ndarray, fmt: VideoFormat) -> _Parsed | None:
    """The common case in O(1) numpy calls: plain RTP headers and one SRD per packet.

    Applies when every datagram has version 2, no padding, extension or CSRC, a single
    SRD header (C bit clear) whose segment fills the rest of the datagram, and every
    field valid for ``fmt`` (progressive). Returns None when any packet is outside that
    case; :func:`parse_batch` then decodes the batch in general (same result).
    """
    n = batch.shape[0]
    stride = batch.shape[1]
    if fmt.interlaced or stride < SINGLE_SRD_HEADER_BYTES or n == 0:
        return None
    lens = np.asarray(lengths)[:n]
    if not (batch[:, 0] == 0x80).all():
        return None
    if (lens > stride).any() or (lens < SINGLE_SRD_HEADER_BYTES).any():
        return None
    hdr = batch[:, 12:20].astype(np.int64)
    length = (hdr[:, 2] << 8) | hdr[:, 3]
    rowf = (hdr[:, 4] << 8) | hdr[:, 5]
    offc = (hdr[:, 6] << 8) | hdr[:, 7]
    pg = fmt.pgroup_bytes
    ppl = fmt.pgroup_pixels_per_line
    rb = fmt.row_bytes
    lpr = fmt.lines_per_row
    byte_off = offc // ppl * pg  # C bit (0x8000) set makes this fail the checks below
    bad = (
        (length != lens - SINGLE_SRD_HEADER_BYTES)
        | (length == 0)
        | (length % pg != 0)
        | (offc % ppl != 0)
        | (byte_off + length > rb)
        | (rowf >= fmt.height)
        | (rowf % lpr != 0)
    )
    if bad.any():
        return None
    fixed = np.ascontiguousarray(batch[:, :12])
    b1 = fixed[:, 1].astype(np.int64)
    frame_row = rowf // lpr
    idx = np.arange(n)
    return _Parsed(
        ok=np.ones(n, bool),
        reason=np.zeros(n, np.int8),
        marker=(b1 & 0x80) != 0,
        payload_type=b1 & 0x7F,
        seq=fixed[:, 2:4].view(">u2").reshape(-1).astype(np.int64),
        ext_hi=(hdr[:, 0] << 8) | hdr[:, 1],
        ts=fixed[:, 4:8].view(">u4").reshape(-1).astype(np.int64),
        ssrc=fixed[:, 8:12].view(">u4").reshape(-1).astype(np.int64),
        seg_pkt=idx,
        seg_src=np.full(n, SINGLE_SRD_HEADER_BYTES, np.int64),
        seg_dst=frame_row * rb + byte_off,
        seg_len=length,
        seg_row=frame_row,
        seg_field=np.zeros(n, np.int64),
    )


def parse_batch(batch: np.ndarray, lengths: np.ndarray, fmt: VideoFormat) -> _Parsed:
    """Decode and validate the headers of every datagram of a batch at once.

    A packet is malformed when any header is truncated, the RTP version is not 2, padding
    or extension lengths do not fit, an SRD segment is empty, not whole pgroups, outside
    its row or the frame, or the segments exceed the payload (RFC 4175 §4.2-4.3).
    """
    quick = _parse_uniform(batch, lengths, fmt)
    if quick is not None:
        return quick
    n = batch.shape[0]
    stride = batch.shape[1]
    lens = np.minimum(np.asarray(lengths, dtype=np.int64)[:n], stride)
    idx = np.arange(n)
    reason = np.zeros(n, np.int8)

    def fail(mask: np.ndarray, name: str) -> None:
        reason[(reason == _OK) & mask] = _R[name]

    fail(lens < RTP_HEADER_SIZE, "RTP header")
    b0 = batch[:, 0].astype(np.int64) if stride else np.zeros(n, np.int64)
    b1 = batch[:, 1].astype(np.int64)
    fail((b0 >> 6) != 2, "RTP version")
    hdr = RTP_HEADER_SIZE + 4 * (b0 & 0x0F)
    fail(hdr > lens, "RTP CSRC list")
    has_x = (b0 & 0x10) != 0
    fail(has_x & (hdr + 4 > lens), "RTP header extension")
    words = _u16(batch, None, hdr + 2) if has_x.any() else np.zeros(n, np.int64)
    hdr = np.where(has_x, hdr + 4 + 4 * words, hdr)
    fail(hdr > lens, "RTP header extension")
    has_p = (b0 & 0x20) != 0
    pad = np.where(has_p, _gather(batch, idx, lens - 1), 0) if has_p.any() else np.zeros(n, np.int64)
    end = lens - pad
    fail(has_p & ((pad == 0) | (end < hdr)), "RTP padding")
    fail(hdr + EXT_SEQ_SIZE > end, "Extended Sequence Number")
    ext_hi = _u16(batch, None, hdr)

    # SRD headers, one depth at a time.
    pos = hdr + EXT_SEQ_SIZE
    active = reason == _OK
    cum = np.zeros(n, np.int64)
    seg_parts: list[tuple[np.ndarray, ...]] = []
    depth = 0
    while active.any():
        if depth >= _MAX_SRD_PER_PACKET:
            fail(active, "SRD header")
            break
        fail(active & (pos + SRD_HEADER_SIZE > end), "SRD header")
        active &= reason == _OK
        if active.all():
            a = idx
            rsel: np.ndarray | None = None
        else:
            a = np.flatnonzero(active)
            rsel = a
        p = pos[a]
        length = _u16(batch, rsel, p)
        rowf = _u16(batch, rsel, p + 2)
        offc = _u16(batch, rsel, p + 4)
        seg_parts.append((a, cum[a].copy(), length, rowf >> 15, rowf & 0x7FFF, offc & 0x7FFF))
        cum[a] += length
        pos[a] += SRD_HEADER_SIZE
        cont = np.zeros(n, bool)
        cont[a] = (offc & 0x8000) != 0
        active &= cont
        depth += 1
    data_start = pos
    fail(data_start + cum > end, "SRD Length")

    if seg_parts:
        seg_pkt = np.concatenate([s[0] for s in seg_parts])
        seg_rel = np.concatenate([s[1] for s in seg_parts])
        seg_len = np.concatenate([s[2] for s in seg_parts])
        seg_f = np.concatenate([s[3] for s in seg_parts])
        seg_line = np.concatenate([s[4] for s in seg_parts])
        seg_off = np.concatenate([s[5] for s in seg_parts])
    else:
        seg_pkt = seg_rel = seg_len = seg_f = seg_line = seg_off = np.zeros(0, np.int64)

    # Validate the segments against the format; a bad segment condemns its packet.
    pg = fmt.pgroup_bytes
    ppl = fmt.pgroup_pixels_per_line
    rb = fmt.row_bytes
    seg_reason = np.zeros(len(seg_pkt), np.int8)

    def sfail(mask: np.ndarray, name: str) -> None:
        seg_reason[(seg_reason == _OK) & mask] = _R[name]

    sfail((seg_len == 0) | (seg_len % pg != 0), "SRD Length")
    sfail(seg_off % ppl != 0, "SRD Offset")
    byte_off = seg_off // ppl * pg
    sfail(byte_off + seg_len > rb, "SRD Offset")
    lpr = fmt.lines_per_row
    if fmt.interlaced:
        sfail(seg_line >= fmt.height // 2, "SRD Row Number")
        frame_line = seg_line * 2 + seg_f
        frame_row = frame_line // lpr
        sfail(frame_line % lpr != 0, "SRD Row Number")
    else:
        sfail(seg_f != 0, "F bit")
        sfail((seg_line >= fmt.height) | (seg_line % lpr != 0), "SRD Row Number")
        frame_row = seg_line // lpr
    bad = seg_reason != _OK
    if bad.any():
        first_bad = np.zeros(n, np.int8)
        # first_bad[pkt] = some failing reason of that packet (any is fine for counting)
        first_bad[seg_pkt[bad]] = seg_reason[bad]
        reason = np.where(reason == _OK, first_bad, reason).astype(np.int8)
    ok = reason == _OK
    keep = ok[seg_pkt] if len(seg_pkt) else np.zeros(0, bool)
    fixed = np.ascontiguousarray(batch[:, :RTP_HEADER_SIZE])
    ts = fixed[:, 4:8].copy().view(">u4").reshape(-1).astype(np.int64)
    ssrc = fixed[:, 8:12].copy().view(">u4").reshape(-1).astype(np.int64)
    return _Parsed(
        ok=ok,
        reason=reason,
        marker=(b1 & 0x80) != 0,
        payload_type=b1 & 0x7F,
        seq=fixed[:, 2:4].copy().view(">u2").reshape(-1).astype(np.int64),
        ext_hi=ext_hi,
        ts=ts,
        ssrc=ssrc,
        seg_pkt=seg_pkt[keep],
        seg_src=(data_start[seg_pkt] + seg_rel)[keep],
        seg_dst=(frame_row * rb + byte_off)[keep],
        seg_len=seg_len[keep],
        seg_row=frame_row[keep],
        seg_field=seg_f[keep],
    )


def _scatter(
    data: np.ndarray,
    batch: np.ndarray,
    pkt: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    length: np.ndarray,
) -> None:
    """Copy segment ``k`` (``length[k]`` bytes at ``batch[pkt[k], src[k]:]``) to
    ``data[dst[k]:]``: one fancy-index assignment per distinct length."""
    if len(pkt) == 0:
        return
    if len(pkt) > 1:
        # A packet's segments lie back to back in the datagram, and a segment that ends
        # a row continues at the next row's start in the frame: such neighbours are one
        # copy (a packet crossing a row boundary, as GStreamer sends them, is one segment
        # again, so packets of one payload size share one assignment). The parser lists
        # first segments, then second ones: in packet order first.
        if not (pkt[1:] >= pkt[:-1]).all():
            order = np.argsort(pkt, kind="stable")
            pkt, src, dst, length = pkt[order], src[order], dst[order], length[order]
        ends = src[:-1] + length[:-1]
        joins = (pkt[1:] == pkt[:-1]) & (src[1:] == ends) & (dst[1:] == dst[:-1] + length[:-1])
        if joins.any():
            starts = np.flatnonzero(np.concatenate(([True], ~joins)))
            length = np.add.reduceat(length, starts)
            pkt, src, dst = pkt[starts], src[starts], dst[starts]
    stride = batch.shape[1]
    m = len(pkt)
    l0 = int(length[0])
    s0 = int(src[0])
    if (length == l0).all() and (src == s0).all():
        # one segment size at one column (the uniform layout): row slices, and when the
        # packets and their destinations are both consecutive, a single strided copy.
        p0 = int(pkt[0])
        d0 = int(dst[0])
        if int(pkt[-1]) - p0 == m - 1 and int(dst[-1]) - d0 == (m - 1) * l0 and (
            m < 3 or ((np.diff(pkt) == 1).all() and (np.diff(dst) == l0).all())
        ):
            data[d0 : d0 + m * l0].reshape(m, l0)[:] = batch[p0 : p0 + m, s0 : s0 + l0]
            return
    flat_src: np.ndarray | None = None
    for seg_len in np.unique(length).tolist():
        sel = length == seg_len
        p = pkt[sel]
        s = src[sel]
        d = dst[sel]
        # Source rows: a plain slice when every segment starts at the same column.
        if s.min() == s.max():
            s0 = int(s[0])
            if p[-1] - p[0] + 1 == len(p) and np.all(np.diff(p) == 1):
                rows = batch[int(p[0]) : int(p[-1]) + 1, s0 : s0 + seg_len]
            else:
                rows = batch[p, s0 : s0 + seg_len]
        else:
            if flat_src is None:
                flat_src = np.ascontiguousarray(batch).reshape(-1)
            win = np.lib.stride_tricks.sliding_window_view(flat_src, seg_len)
            rows = win[p * stride + s]
        if data.size % seg_len == 0 and not np.any(d % seg_len):
            data.reshape(-1, seg_len)[d // seg_len] = rows
        else:
            dwin = np.lib.stride_tricks.as_strided(
                data, shape=(data.size - seg_len + 1, seg_len), strides=(1, 1), writeable=True
            )
            dwin[d] = rows


class _FramePool:
    """Frame buffers, each handed out again once nothing outside the pool holds it.

    A fresh 5 MB buffer costs its page faults on first write (about as much as the
    depacketizing itself, and several times that in a virtual machine); frames that
    came and went are reused instead. A buffer is free when the pool's list is its only
    holder (a frame event, a consumer's item or any view of it keeps it busy), so no
    frame handed out is ever written again. At most ``keep`` buffers are pooled; beyond
    that (a consumer holding many frames) buffers are plain allocations.
    """

    def __init__(self, nbytes: int, keep: int = 32) -> None:
        self.nbytes = nbytes
        self.keep = keep
        self.buffers: list[np.ndarray] = []

    def take(self) -> np.ndarray:
        for buf in self.buffers:
            if sys.getrefcount(buf) == 3:  # the list, this loop's name, the argument
                return buf
        buf = np.empty(self.nbytes, np.uint8)
        if len(self.buffers) < self.keep:
            self.buffers.append(buf)
        return buf

    def prepare(self, count: int) -> None:
        """Allocate and touch ``count`` buffers now (their page faults before the
        stream starts, not during its first frames)."""
        while len(self.buffers) < min(count, self.keep):
            buf = np.empty(self.nbytes, np.uint8)
            buf.fill(0)
            self.buffers.append(buf)


class _Pending:
    """The frame being assembled."""

    __slots__ = ("ssrc", "ts", "frame_ts", "data", "segs", "nseg", "packets", "first_seq",
                 "fields", "frontier")

    def __init__(self, ssrc: int, ts: int, data: np.ndarray) -> None:
        self.ssrc = ssrc
        self.ts = ts  # the timestamp packets are matched by (the second field's, once seen)
        self.frame_ts = ts  # the frame's: its first field's (PS3.22 grain pairing)
        # Not zeroed here (5 MB per 1080p frame): a complete frame overwrites every byte,
        # and _emit zeroes what an incomplete one never received.
        self.data = data
        # Segments received, one column each: frame row, length, destination offset. One
        # array grown by doubling (not a list entry per batch) up to the cap the
        # depacketizer enforces on nseg, so a frame that never ends stays bounded.
        self.segs = np.empty((3, 64), np.int64)
        self.nseg = 0
        self.packets = 0
        self.first_seq: int | None = None
        self.fields = 0  # bit 0: first field seen, bit 1: second field seen
        # One past the furthest byte any recorded segment wrote: every byte from here on
        # is unrecorded, so a split read may land payloads there (VideoDepacketizer.plan_split).
        self.frontier = 0

    def add_segments(self, rows: np.ndarray, lens: np.ndarray, dsts: np.ndarray, cap: int) -> None:
        """Record segments (the caller keeps ``nseg + len(rows) <= cap``)."""
        end = self.nseg + len(rows)
        if end > self.segs.shape[1]:
            grown = np.empty((3, min(max(end, 2 * self.segs.shape[1]), cap)), np.int64)
            grown[:, : self.nseg] = self.segs[:, : self.nseg]
            self.segs = grown
        self.segs[0, self.nseg : end] = rows
        self.segs[1, self.nseg : end] = lens
        self.segs[2, self.nseg : end] = dsts
        self.nseg = end
        if len(dsts):
            self.frontier = max(self.frontier, int((dsts + lens).max()))


def _zero_uncovered(pend: _Pending, missing: np.ndarray, row_bytes: int) -> None:
    """Zero the bytes of the ``missing`` rows that no received segment wrote.

    Rows no segment touched are zeroed whole; the exact byte coverage is worked out only
    for the few rows that got some of their segments (it costs ``row_bytes`` per row).
    """
    miss = np.flatnonzero(missing)
    view = pend.data.reshape(-1, row_bytes)
    rows, lens, dsts = pend.segs[:, : pend.nseg]
    touched = np.zeros(len(missing), bool)
    touched[rows] = True
    view[miss[~touched[miss]]] = 0
    partial = miss[touched[miss]]
    if not len(partial):
        return
    # Segments of the partial rows plus an empty marker at each such row's start and
    # end, in frame byte order (at one offset: a row's end marker, the next row's start
    # marker, then segments); the bytes between the furthest end so far and the next
    # start in the same row were never written.
    is_partial = np.zeros(len(missing), bool)
    is_partial[partial] = True
    keep = is_partial[rows]
    p_rows = np.concatenate([rows[keep], partial, partial])
    p_start = np.concatenate([dsts[keep], partial * row_bytes, (partial + 1) * row_bytes])
    p_end = np.concatenate([dsts[keep] + lens[keep], partial * row_bytes,
                            (partial + 1) * row_bytes])
    rank = np.concatenate([np.full(int(keep.sum()), 2, np.int8),
                           np.ones(len(partial), np.int8), np.zeros(len(partial), np.int8)])
    order = np.lexsort((rank, p_start))
    p_rows, p_start, p_end = p_rows[order], p_start[order], p_end[order]
    reach = np.maximum.accumulate(p_end)
    gap = np.flatnonzero((p_rows[1:] == p_rows[:-1]) & (p_start[1:] > reach[:-1]))
    flat = pend.data
    for a, b in zip(reach[gap].tolist(), p_start[gap + 1].tolist(), strict=True):
        flat[a:b] = 0


@dataclass(frozen=True, slots=True)
class SplitPlan:
    """Where the payloads of the next in-order datagrams belong in the frame being built.

    Made by :meth:`VideoDepacketizer.plan_split` for a socket that can split each read
    (:meth:`rtstream.net.udp.UdpReceiver.drain_split`): datagram ``i`` of the drain puts
    its first ``header`` bytes into a header row and the rest at
    ``data[start + i * payload:]`` while ``i < slots``, into spare rows after that.

    Attributes
    ----------
    data : numpy.ndarray
        The frame buffer (1-D uint8) the payloads land in.
    start : int
        Byte offset of the next packet's payload: nothing recorded lies at or after it.
    payload : int
        Payload bytes of this sender's packets (all equal, tiling each row).
    slots : int
        Packets that fit between ``start`` and the end of the frame.
    generation : int
        The depacketizer's state the plan was made in: a plan is good only until the
        next batch is fed, or a frame emitted (:meth:`VideoDepacketizer.plan_is_current`).
    header : int
        Header bytes per datagram (RTP + extended sequence number + one SRD header).
    """

    data: np.ndarray
    start: int
    payload: int
    slots: int
    generation: int
    header: int = SINGLE_SRD_HEADER_BYTES


def split_rows(plan: SplitPlan, headers: np.ndarray, lengths: np.ndarray,
               spare_rows: np.ndarray, first: int = 0) -> np.ndarray:
    """The datagrams ``first:`` of a split read put back together (header row, then
    wherever the payload landed: its planned slot or a spare row), one per row."""
    n = min(len(lengths), headers.shape[0])
    hp, pay = plan.header, plan.payload
    rows = np.empty((max(0, n - first), hp + pay), np.uint8)
    rows[:, :hp] = headers[first:n, :hp]
    k = max(0, min(n, plan.slots) - first)
    if k:
        a = plan.start + first * pay
        rows[:k, hp:] = plan.data[a : a + k * pay].reshape(k, pay)
    rows[k:, hp:] = spare_rows[max(0, first - plan.slots) : n - plan.slots]
    return rows


class VideoDepacketizer:
    """Reassemble RFC 4175 frames from batches of datagrams (sans-I/O).

    Parameters
    ----------
    fmt : VideoFormat
        The flow's format (from its SDP). Progressive or interlaced.
    payload_type : int or None
        Accept only this payload type; None accepts any.

    Attributes
    ----------
    stats : DepacketizerStats
    """

    def __init__(self, fmt: VideoFormat, *, payload_type: int | None = None) -> None:
        if fmt.interlaced and fmt.lines_per_row != 1:
            raise ConfigError("video.interlaced", True, "progressive only for 4:2:0")
        if payload_type is not None and not 0 <= payload_type <= 127:
            raise ConfigError("payload_type", payload_type, "0..127 or None")
        self.fmt = fmt
        self.payload_type = payload_type
        self.stats = DepacketizerStats()
        self._ssrc: int | None = None
        self._ssrc_seen_ns = 0
        self._seq = SequenceTracker(window=_SEQ_WINDOW)
        self._pending: _Pending | None = None
        self._recent: collections.deque[int] = collections.deque(maxlen=_RECENT_FRAMES)
        # A frame has at most frame_bytes / pgroup_bytes distinct segments (each is whole,
        # non-empty pgroups, RFC 4175 §4.3); twice that (and at least two packets' worth)
        # bounds the pending frame when the marker and the next timestamp never come.
        self._max_segments = 2 * max(fmt.frame_bytes // fmt.pgroup_bytes, _MAX_SRD_PER_PACKET)
        self._pool = _FramePool(fmt.frame_bytes)
        # (pgroup bytes, pixels per pgroup, row bytes, lines per row, height), read per batch
        self._geometry = (fmt.pgroup_bytes, fmt.pgroup_pixels_per_line, fmt.row_bytes,
                          fmt.lines_per_row, fmt.height)
        # Split reads (plan_split): the payload size this sender's packets had in the
        # last in-order batch when it tiles a row exactly, and a buffer taken from the
        # pool for the next frame's first payloads.
        self._split_payload: int | None = None
        self._spare: np.ndarray | None = None
        self._frame_bytes = fmt.frame_bytes  # (a computed property of the format)
        self._generation = 0  # counts batches fed and frames emitted (SplitPlan.generation)

    # -- public ------------------------------------------------------------------------

    def feed(self, batch: np.ndarray, lengths: np.ndarray, now: int) -> list[VideoFrameEvent]:
        """Consume a batch of datagrams; return the frames it completed.

        Parameters
        ----------
        batch : numpy.ndarray
            ``(n, stride)`` uint8, one received datagram per row.
        lengths : numpy.ndarray
            ``(n,)`` bytes used in each row.
        now : int
            Current time in ns (decides when a silent SSRC may be replaced).

        Notes
        -----
        Bad input never raises: malformed datagrams are counted in ``stats.malformed``
        (per field in ``stats.malformed_by_field``) and dropped. Datagrams that would take
        the frame being assembled past twice the segments a frame can hold (a sender that
        never sets the marker nor changes the timestamp) are dropped and counted there as
        ``"SRD segments per frame"``, so memory stays bounded. A batch is unwrapped
        relative to the highest sequence number seen before each packet (RFC 3550 A.1).
        """
        if batch.ndim != 2 or batch.dtype != np.uint8:
            raise LocalProtocolError("batch: need a 2-D uint8 array")
        self._generation += 1
        n = min(batch.shape[0], len(lengths))
        events: list[VideoFrameEvent] = []
        if n == 0:
            return events
        batch = batch[:n]
        self.stats.packets += n
        if batch.shape[1] < SINGLE_SRD_HEADER_BYTES:
            self._count_malformed(np.full(n, _R["RTP header"], np.int8))
            return events
        fast = self._feed_in_order(batch, np.asarray(lengths)[:n], now)
        if fast is not None:
            return fast
        p = parse_batch(batch, lengths, self.fmt)
        if not p.ok.all():
            self._count_malformed(p.reason[~p.ok])
        ok = p.ok.copy()
        if self.payload_type is not None:
            wrong = ok & (p.payload_type != self.payload_type)
            self.stats.foreign += int(wrong.sum())
            ok &= ~wrong
        ok = self._filter_ssrc(p, ok, now, events)
        if not ok.any():
            return events
        kept = np.flatnonzero(ok)
        ext = self._unwrap(p, kept)
        dup = self._seq.record(ext).duplicate
        self._update_seq_stats()
        if dup.any():
            kept = kept[~dup]
            ext = ext[~dup]
        if len(kept) == 0:
            return events
        if len(ext) > 1 and not bool((ext[1:] > ext[:-1]).all()):
            # reordered on the path: taken in sequence order, so a packet that came
            # behind the next frame's first still joins its own frame
            order = np.argsort(ext, kind="stable")
            kept, ext = kept[order], ext[order]

        # Split into runs of equal timestamp, in sequence order.
        ts = p.ts[kept]
        cuts = np.flatnonzero(ts[1:] != ts[:-1]) + 1
        starts = [0, *cuts.tolist()]
        stops = [*cuts.tolist(), len(kept)]
        run_of = np.full(n, -1, np.int64)
        for r, (a, b) in enumerate(zip(starts, stops, strict=True)):
            run_of[kept[a:b]] = r
        seg_run = run_of[p.seg_pkt] if len(p.seg_pkt) else np.zeros(0, np.int64)
        for r, (a, b) in enumerate(zip(starts, stops, strict=True)):
            t = int(ts[a])
            if t in self._recent and (self._pending is None or self._pending.ts != t):
                self.stats.late += b - a
                continue
            sel = seg_run == r
            fields = p.seg_field[sel]
            run_fields = (1 if (fields == 0).any() else 0) | (2 if (fields == 1).any() else 0)
            pend = self._pending
            if pend is not None and pend.ts != t:
                # interlaced: the second field (its own timestamp) joins the first.
                joins = self.fmt.interlaced and pend.fields == 1 and run_fields == 2
                if joins:
                    self._recent.append(pend.ts)
                    pend.ts = t
                else:
                    events.append(self._emit())
                    pend = None
            if pend is None:
                pend = self._pending = _Pending(int(p.ssrc[kept[a]]), t, self._pool.take())
            if pend.nseg + int(np.count_nonzero(sel)) > self._max_segments:
                b = a + self._cap_segments(p, sel, kept[a:b], pend.nseg)
                if b == a:
                    continue
                sel &= np.isin(p.seg_pkt, kept[a:b])
            pend.fields |= run_fields
            _scatter(pend.data, batch, p.seg_pkt[sel], p.seg_src[sel], p.seg_dst[sel],
                     p.seg_len[sel])
            pend.add_segments(p.seg_row[sel], p.seg_len[sel], p.seg_dst[sel], self._max_segments)
            pend.packets += b - a
            lo = int(ext[a:b].min())
            pend.first_seq = lo if pend.first_seq is None else min(pend.first_seq, lo)
            mk = p.marker[kept[a:b]]
            if mk.any():
                if self.fmt.interlaced:
                    # the marker ends a field; the frame ends with the second field's.
                    mk_pkts = kept[a:b][mk]
                    second = np.isin(p.seg_pkt[sel], mk_pkts) & (p.seg_field[sel] == 1)
                    if second.any():
                        events.append(self._emit())
                else:
                    events.append(self._emit())
        return events

    def prepare(self, frames: int) -> None:
        """Allocate (and fault in) buffers for ``frames`` frames before the stream
        starts: as many as the application keeps at once, plus two."""
        self._pool.prepare(frames)

    def flush(self) -> list[VideoFrameEvent]:
        """Emit the frame being assembled, if any (end of stream)."""
        if self._pending is None:
            return []
        return [self._emit()]

    def plan_split(self) -> SplitPlan | None:
        """Where the next in-order packets' payloads belong, or None when unknown.

        A plan exists once an in-order batch has shown this sender's payload size and
        that size tiles every row (progressive, one line per SRD row): the payload of
        the packet after the highest sequence number then belongs right after the
        furthest byte recorded in the frame being built (or at byte 0 of a spare buffer
        for the next frame), and each later one ``payload`` bytes further. Only bytes no
        recorded segment wrote are ever planned, so a datagram that lands in the wrong
        place spoils nothing: :meth:`feed_split` moves it out before anything else
        writes there, and bytes no segment records are zeroed when the frame is emitted.
        """
        p = self._split_payload
        if p is None or self._seq.highest is None or self._ssrc is None:
            return None
        pend = self._pending
        if pend is None:
            if self._spare is None:
                self._spare = self._pool.take()
            data, start = self._spare, 0
        else:
            data, start = pend.data, pend.frontier
            if start % p or pend.nseg >= self._max_segments // 2:
                return None
        slots = (self._frame_bytes - start) // p
        if slots <= 0:
            return None
        return SplitPlan(data=data, start=start, payload=p, slots=slots,
                         generation=self._generation)

    def plan_is_current(self, plan: SplitPlan) -> bool:
        """True while nothing was fed or emitted since ``plan`` was made: only then may
        a socket still write where it says (a frame emitted since may be held by the
        application)."""
        return plan.generation == self._generation

    def feed_split(self, plan: SplitPlan, headers: np.ndarray, lengths: np.ndarray,
                   spare_rows: np.ndarray, now: int) -> list[VideoFrameEvent]:
        """Consume datagrams a socket split by ``plan``; return the frames completed.

        Parameters
        ----------
        plan : SplitPlan
            The plan of :meth:`plan_split` the socket followed (no other batch fed since).
        headers : numpy.ndarray
            ``(n, plan.header)`` uint8: the first bytes of each datagram.
        lengths : numpy.ndarray
            ``(n,)`` bytes of each datagram.
        spare_rows : numpy.ndarray
            ``(max(0, n - plan.slots), plan.payload)`` uint8: payloads past the frame.

        Notes
        -----
        The headers are verified at once (RFC 4175 §4.2-4.3 fields against the planned
        place, sequence numbers continuing from the highest, locked SSRC and payload
        type, one timestamp, a marker only on the frame's last packet). The longest
        verified prefix is accounted exactly as :meth:`feed` would (its payloads are
        already in place: no copy); every later datagram is put back together from its
        header row and wherever its payload landed, then goes through :meth:`feed`.
        """
        n = min(len(lengths), headers.shape[0])
        if n == 0:
            return []
        lens = np.asarray(lengths)[:n]
        j = self._verify_split(plan, headers, lens, min(n, plan.slots))
        events: list[VideoFrameEvent] = []
        if j:
            events = self._commit_split(plan, headers, j, now)
        if j < n:
            events += self.feed(split_rows(plan, headers, lens, spare_rows, j), lens[j:], now)
        return events

    # -- internals ---------------------------------------------------------------------

    def _verify_split(self, plan: SplitPlan, headers: np.ndarray, lens: np.ndarray,
                      m: int) -> int:
        """How many datagrams at the start of a split batch are the planned packets."""
        high = self._seq.highest
        if m == 0 or high is None or self._ssrc is None or plan.generation != self._generation:
            return 0
        pend = self._pending
        if (pend is None and plan.data is not self._spare) or (
            pend is not None and (plan.data is not pend.data or plan.start != pend.frontier)
        ):
            return 0  # stale plan (the caller fed something else since)
        hdr = headers[:m]
        if not hdr.flags.c_contiguous or hdr.shape[1] != SINGLE_SRD_HEADER_BYTES:
            return 0
        h = hdr.view(_PLAIN_HEADER)[:, 0]
        pg, ppl, rb, _, _ = self._geometry
        pay = plan.payload
        dst = plan.start + np.arange(m, dtype=np.int64) * pay
        ts0 = int(h["ts"][0]) if pend is None else pend.ts
        if pend is None and ts0 in self._recent:
            return 0
        b1 = h["b1"]
        marker = (b1 & 0x80) != 0
        ok = (
            (h["b0"] == 0x80)
            & (h["seq"] == ((high + 1 + np.arange(m)) & 0xFFFF))
            & (h["ssrc"] == self._ssrc)
            & (lens[:m] == SINGLE_SRD_HEADER_BYTES + pay)
            & (h["len"] == pay)
            & (h["row"] == dst // rb)
            & (h["off"] == dst % rb // pg * ppl)
            & (h["ts"] == ts0)
            & (~marker | (dst + pay == self._frame_bytes))
        )
        if self.payload_type is not None:
            ok &= (b1 & 0x7F) == self.payload_type
        if ok.all():
            j = m
            if marker[m - 1] and m < len(lens):
                # The frame's last packet with more after it: :meth:`feed` would add
                # those of the same frame (reordered) before ending it, so it goes there
                # with them.
                j = m - 1
        else:
            j = int(np.argmin(ok))
        if pend is not None and pend.nseg + j > self._max_segments:
            return 0
        return j

    def _commit_split(self, plan: SplitPlan, headers: np.ndarray, j: int,
                      now: int) -> list[VideoFrameEvent]:
        """Account the ``j`` verified packets of a split batch (payloads in place)."""
        high = self._seq.highest
        assert high is not None
        self._generation += 1
        self.stats.packets += j
        self.stats.placed += j
        self._ssrc_seen_ns = now
        self._seq.advance(j)
        self.stats.lost = self._seq.lost
        pend = self._pending
        if pend is None:
            ts = int(headers[0, 4:8].view(">u4")[0])
            pend = self._pending = _Pending(self._ssrc or 0, ts, plan.data)
            self._spare = None
        pay = plan.payload
        rb = self._geometry[2]
        dst = plan.start + np.arange(j, dtype=np.int64) * pay
        pend.fields |= 1
        pend.add_segments(dst // rb, np.full(j, pay, np.int64), dst, self._max_segments)
        pend.packets += j
        lo = high + 1
        pend.first_seq = lo if pend.first_seq is None else min(pend.first_seq, lo)
        if headers[j - 1, 1] & 0x80:
            return [self._emit()]
        return []

    def _feed_in_order(
        self, batch: np.ndarray, lens: np.ndarray, now: int
    ) -> list[VideoFrameEvent] | None:
        """The steady state in a few numpy calls, or None (nothing changed) outside it.

        It applies when every datagram of the batch is a plain, valid single-SRD packet
        (what :func:`_parse_uniform` accepts) of the locked SSRC and payload type, and the
        sequence numbers continue exactly from the highest one seen: then nothing is
        reordered, duplicated or late, the extended sequence numbers are known without
        unwrapping, and each timestamp run goes to its frame as in :meth:`feed`, which
        handles every other batch (same counters, same frames).
        """
        fmt = self.fmt
        high = self._seq.highest
        n = len(lens)
        if high is None or fmt.interlaced or n >= 0x8000 or batch.strides[1] != 1:
            return None
        # one pass over the rows' headers; every later test reads this compact copy
        h = np.ascontiguousarray(batch[:, :SINGLE_SRD_HEADER_BYTES]).view(_PLAIN_HEADER)[:, 0]
        if not (h["b0"] == 0x80).all():
            return None
        seq = h["seq"].astype(np.int64)
        first = high + 1
        if int(seq[0]) != seq_add(high, 1) or (
            n > 1 and not ((np.diff(seq) & 0xFFFF) == 1).all()
        ):
            return None
        if not (h["ssrc"] == self._ssrc).all():
            return None
        if self.payload_type is not None and not (
            (h["b1"] & 0x7F) == self.payload_type
        ).all():
            return None
        length = h["len"].astype(np.int64)
        rowf = h["row"].astype(np.int64)
        offc = h["off"].astype(np.int64)
        pg, ppl, rb, lpr, height = self._geometry
        byte_off = offc // ppl * pg
        if int(lens.max()) > batch.shape[1] or not (
            (length == lens - SINGLE_SRD_HEADER_BYTES)
            & (length != 0)
            & (length % pg == 0)
            & (offc % ppl == 0)
            & (byte_off + length <= rb)
            & (rowf < height)
            & (rowf % lpr == 0)
        ).all():
            return None
        ts = h["ts"]
        if (ts == ts[0]).all():
            bounds = [0, n]
        else:
            bounds = [0, *(np.flatnonzero(ts[1:] != ts[:-1]) + 1).tolist(), n]
        if len(bounds) > _RECENT_FRAMES // 2:
            return None
        run_ts = [int(ts[a]) for a in bounds[:-1]]
        marker = (h["b1"] & 0x80) != 0
        # Dry run of the frame boundaries: a run whose timestamp belongs to a frame
        # already emitted (before or by this batch) is late, which feed counts.
        pend = self._pending
        open_ts = pend.ts if pend is not None else None
        held = pend.nseg if pend is not None else 0
        emitted = set(self._recent)
        for r, t in enumerate(run_ts):
            if open_ts != t:
                if t in emitted:
                    return None
                if open_ts is not None:
                    emitted.add(open_ts)
                open_ts, held = t, 0
            if held + bounds[r + 1] - bounds[r] > self._max_segments:
                return None
            if marker[bounds[r] : bounds[r + 1]].any():
                emitted.add(t)
                open_ts = None

        # Accepted: account the packets, then hand each run to its frame.
        self._ssrc_seen_ns = now
        self._seq.advance(n)
        self.stats.lost = self._seq.lost
        frame_row = rowf // lpr if lpr > 1 else rowf
        dst = frame_row * rb + byte_off
        events: list[VideoFrameEvent] = []
        for r, t in enumerate(run_ts):
            a, b = bounds[r], bounds[r + 1]
            if pend is not None and pend.ts != t:
                events.append(self._emit())
                pend = None
            if pend is None:
                pend = self._pending = _Pending(self._ssrc or 0, t, self._pool.take())
            pend.fields |= 1
            d0 = int(dst[a])
            ln = length[a:b]
            if b - a > 1 and (dst[a + 1 : b] == dst[a : b - 1] + ln[:-1]).all() and (
                ln[: b - a - 1] == ln[0]
            ).all():
                # consecutive packets with equal payloads to consecutive bytes: one copy
                l0 = int(ln[0])
                m = b - a - 1
                self._split_payload = l0 if rb % l0 == 0 and lpr == 1 else None
                pend.data[d0 : d0 + m * l0].reshape(m, l0)[:] = batch[
                    a : b - 1, SINGLE_SRD_HEADER_BYTES : SINGLE_SRD_HEADER_BYTES + l0
                ]
                last = int(ln[-1])
                end = int(dst[b - 1])
                pend.data[end : end + last] = batch[
                    b - 1, SINGLE_SRD_HEADER_BYTES : SINGLE_SRD_HEADER_BYTES + last
                ]
            else:
                _scatter(pend.data, batch, np.arange(a, b), np.full(b - a, SINGLE_SRD_HEADER_BYTES),
                         dst[a:b], ln)
            pend.add_segments(frame_row[a:b], ln, dst[a:b], self._max_segments)
            pend.packets += b - a
            lo = first + a
            pend.first_seq = lo if pend.first_seq is None else min(pend.first_seq, lo)
            if marker[a:b].any():
                events.append(self._emit())
                pend = None
        return events

    def _count_malformed(self, reasons: np.ndarray) -> None:
        self.stats.malformed += len(reasons)
        counts = np.bincount(reasons.astype(np.int64), minlength=len(_FIELDS))
        for code in np.flatnonzero(counts).tolist():
            name = _FIELDS[code]
            self.stats.malformed_by_field[name] = (
                self.stats.malformed_by_field.get(name, 0) + int(counts[code])
            )
        log.debug("dropped %d malformed RFC 4175 datagrams (%s)", len(reasons),
                  _FIELDS[int(reasons[0])])

    def _cap_segments(self, p: _Parsed, sel: np.ndarray, pkts: np.ndarray, have: int) -> int:
        """How many packets at the start of run ``pkts`` fit under the segment cap of a
        pending frame holding ``have`` segments; the rest are counted malformed."""
        per_pkt = np.bincount(p.seg_pkt[sel], minlength=int(pkts[-1]) + 1)[pkts]
        fit = int(np.count_nonzero(np.cumsum(per_pkt) <= self._max_segments - have))
        self._count_malformed(np.full(len(pkts) - fit, _R["SRD segments per frame"], np.int8))
        return fit

    def _filter_ssrc(
        self, p: _Parsed, ok: np.ndarray, now: int, events: list[VideoFrameEvent]
    ) -> np.ndarray:
        if not ok.any():
            return ok
        if self._ssrc is None:
            self._ssrc = int(p.ssrc[np.flatnonzero(ok)[0]])
        mine = ok & (p.ssrc == self._ssrc)
        others = ok & ~mine
        if mine.any():
            self._ssrc_seen_ns = now
        elif others.any() and now - self._ssrc_seen_ns >= SSRC_TIMEOUT_NS:
            new = int(p.ssrc[np.flatnonzero(others)[0]])
            log.info("RFC 4175 stream changed SSRC %08x -> %08x", self._ssrc, new)
            events.extend(self.flush())
            self._ssrc = new
            self._ssrc_seen_ns = now
            self._seq.restart(new)
            self._recent.clear()
            mine = ok & (p.ssrc == new)
            others = ok & ~mine
        self.stats.foreign += int(others.sum())
        result: np.ndarray = mine
        return result

    def _unwrap(self, p: _Parsed, kept: np.ndarray) -> np.ndarray:
        seq = p.seq[kept]
        # offset by 2**32 so that reordered packets before the first never go negative
        first = (1 << 32) + int((p.ext_hi[kept[0]] << 16) | seq[0])
        return self._seq.extend(seq, first=first)

    def _update_seq_stats(self) -> None:
        t = self._seq
        self.stats.lost = t.lost
        self.stats.duplicates = t.duplicates
        self.stats.reordered = t.reordered

    def _emit(self) -> VideoFrameEvent:
        pend = self._pending
        assert pend is not None
        self._pending = None
        self._generation += 1
        self._recent.append(pend.ts)
        rows = self.fmt.rows
        covered: np.ndarray = np.zeros(rows)
        if pend.nseg:
            r, lens, dsts = pend.segs[:, : pend.nseg]
            covered = np.bincount(r, weights=lens, minlength=rows)[:rows]
            # Bytes per row add up only when no two segments overlap: a sender (or a
            # corrupt packet) writing one place twice leaves another unwritten, and the
            # buffer is not zeroed beforehand. Such rows count as missing, so their
            # unwritten bytes are zeroed below.
            if len(dsts) > 1 and not (dsts[1:] >= dsts[:-1] + lens[:-1]).all():
                order = np.argsort(dsts, kind="stable")
                sd, sl, sr = dsts[order], lens[order], r[order]
                twice = np.flatnonzero(sd[1:] < sd[:-1] + sl[:-1])
                covered[sr[twice]] = -1
                covered[sr[twice + 1]] = -1
        missing = covered < self.fmt.row_bytes
        complete = not bool(missing.any())
        if not complete:
            _zero_uncovered(pend, missing, self.fmt.row_bytes)
        if complete:
            self.stats.frames_complete += 1
        else:
            self.stats.frames_incomplete += 1
        return VideoFrameEvent(
            ssrc=pend.ssrc,
            rtp_timestamp=pend.frame_ts,
            data=pend.data,
            complete=complete,
            missing_rows=missing,
            packets=pend.packets,
            first_seq=(pend.first_seq or 0) & 0xFFFFFFFF,
        )


__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "DepacketizerStats",
    "PacketBatch",
    "PayloadHeader",
    "Sampling",
    "SplitPlan",
    "SrdHeader",
    "VideoDepacketizer",
    "VideoFrameEvent",
    "VideoPacketizer",
    "parse_batch",
    "split_rows",
]
