"""RTP fixed header (RFC 3550 §5.1), sequence-number arithmetic and vectorized header stores.

Theory of operation
-------------------
Control-rate packets (metadata grains, audio in tests, RTCP-like helpers) use the
object form: :func:`parse_rtp` turns one datagram into an :class:`RtpPacket` and
:meth:`RtpPacket.to_bytes` turns it back. Media-rate packets never become Python
objects: :func:`write_rtp_headers` stamps the 12-byte headers of a whole frame's worth of
datagrams laid out as rows of one ``numpy`` buffer, and :func:`read_rtp_headers` reads
the same fields back from a batch as arrays.

Sequence numbers are 16 bits on the wire (RFC 3550 §5.1). :func:`seq_diff` gives the
signed distance between two of them across the wrap and :class:`SequenceUnwrapper`
extends them to an unbounded counter, as RFC 3550 Appendix A.1 does for loss accounting.
"""

from __future__ import annotations

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


class SequenceUnwrapper:
    """Extend 16-bit (or 32-bit) sequence numbers to an unbounded counter.

    The first value seen is taken as is; each later value is placed at the signed
    distance from the highest value seen so far (RFC 3550 Appendix A.1), so reordered
    packets map below it and never cause a false wrap.

    Parameters
    ----------
    bits : int
        Width of the wire field: 16 for RTP, 32 for the RFC 4175 extended number.
    """

    __slots__ = ("_bits", "_mask", "_half", "highest")

    def __init__(self, bits: int = 16) -> None:
        self._bits = bits
        self._mask = (1 << bits) - 1
        self._half = 1 << (bits - 1)
        self.highest: int | None = None

    def unwrap(self, value: int) -> int:
        """Return the extended counter for ``value`` and advance the highest seen."""
        if self.highest is None:
            self.highest = value
            return value
        delta = ((value - self.highest + self._half) & self._mask) - self._half
        ext = self.highest + delta
        if ext > self.highest:
            self.highest = ext
        return ext


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
