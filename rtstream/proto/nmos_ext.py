"""RFC 8285 one-byte RTP header extension elements and the NMOS identity/timing items.

Theory of operation
-------------------
An RTP header extension with the "defined by profile" word ``0xBEDE`` carries a list of
one-byte-header elements (RFC 8285 §4.2): each starts with one byte whose high nibble is
a local identifier (1-14) and whose low nibble is the data length minus one, followed by
1-16 data bytes. Zero bytes between elements are padding and are skipped; identifier 15
is reserved and stops processing of the rest of the extension. The body is padded with
zeros to a multiple of four bytes (the RTP extension length counts 32-bit words).

Which identifier carries which item is not fixed on the wire: the SDP maps identifiers
to URNs with ``a=extmap`` lines (:class:`ExtMap`). PS3.22 §6.2.1 requires on every
metadata flow "the RTP Header Extension defined by NMOS", i.e. the items of AMWA
"NMOS Mapping of Identity and Timing Information to RTP":

============== ============================================= ==========================
item           URN                                           data
============== ============================================= ==========================
sync-timestamp ``urn:x-nmos:rtp-hdrext:sync-timestamp``      10 bytes: 48-bit s, 32-bit ns
origin-stamp   ``urn:x-nmos:rtp-hdrext:origin-timestamp``    10 bytes, as above
flow-id        ``urn:x-nmos:rtp-hdrext:flow-id``             16-byte UUID
source-id      ``urn:x-nmos:rtp-hdrext:source-id``           16-byte UUID
grain-flags    ``urn:x-nmos:rtp-hdrext:grain-flags``         1 byte: S = bit 7, E = bit 6
grain-duration ``urn:x-nmos:rtp-hdrext:grain-duration``      8 bytes: 32-bit num, 32-bit den
============== ============================================= ==========================

:class:`NmosExtension` turns those items into typed values and back; identifiers that
the :class:`ExtMap` does not know are ignored when decoding (RFC 8285 §4.1: a receiver
ignores elements it does not understand).
"""

from __future__ import annotations

import enum
import logging
import struct
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType

from rtstream.errors import LocalProtocolError, RemoteProtocolError
from rtstream.proto.clock import PtpTimestamp

log = logging.getLogger(__name__)

PROFILE_ONE_BYTE = 0xBEDE
"""RTP header extension profile word of RFC 8285 one-byte elements."""

MIN_ID = 1
MAX_ID = 14
RESERVED_ID = 15
_MAX_DATA = 16


class NmosItem(enum.Enum):
    """NMOS header-extension items; the value is the ``a=extmap`` URN."""

    SYNC_TIMESTAMP = "urn:x-nmos:rtp-hdrext:sync-timestamp"
    ORIGIN_TIMESTAMP = "urn:x-nmos:rtp-hdrext:origin-timestamp"
    FLOW_ID = "urn:x-nmos:rtp-hdrext:flow-id"
    SOURCE_ID = "urn:x-nmos:rtp-hdrext:source-id"
    GRAIN_FLAGS = "urn:x-nmos:rtp-hdrext:grain-flags"
    GRAIN_DURATION = "urn:x-nmos:rtp-hdrext:grain-duration"

    @property
    def short_name(self) -> str:
        """The item's name as used in error messages, e.g. ``"flow-id"``."""
        return self.value.rsplit(":", 1)[1]

    @property
    def data_length(self) -> int:
        """Octets of element data the NMOS mapping gives this item."""
        return _DATA_LENGTH[self]


_DATA_LENGTH: dict[NmosItem, int] = {
    NmosItem.SYNC_TIMESTAMP: 10,
    NmosItem.ORIGIN_TIMESTAMP: 10,
    NmosItem.FLOW_ID: 16,
    NmosItem.SOURCE_ID: 16,
    NmosItem.GRAIN_FLAGS: 1,
    NmosItem.GRAIN_DURATION: 8,
}

_BY_URN: dict[str, NmosItem] = {item.value: item for item in NmosItem}


def item_for_urn(urn: str) -> NmosItem | None:
    """The NMOS item named by an ``a=extmap`` URN, or None for any other extension."""
    return _BY_URN.get(urn.strip())


@dataclass(frozen=True)
class ExtMap:
    """The SDP ``a=extmap`` mapping of local identifiers to NMOS items (RFC 8285 §5).

    Parameters
    ----------
    ids : Mapping[NmosItem, int]
        Local identifier (1-14, distinct) of each item the flow carries. Items left out
        are neither sent nor recognised.
    """

    ids: Mapping[NmosItem, int]

    def __post_init__(self) -> None:
        ids = dict(self.ids)
        for item, ident in ids.items():
            if not isinstance(item, NmosItem):
                raise LocalProtocolError(f"extmap: key {item!r} is not an NmosItem")
            if not isinstance(ident, int) or not MIN_ID <= ident <= MAX_ID:
                raise LocalProtocolError(
                    f"extmap: id {ident!r} for {item.short_name} is outside 1..14 (RFC 8285 §4.2)"
                )
        if len(set(ids.values())) != len(ids):
            raise LocalProtocolError(f"extmap: ids {sorted(ids.values())} are not distinct")
        ordered = dict(sorted(ids.items(), key=lambda kv: kv[1]))
        object.__setattr__(self, "ids", MappingProxyType(ordered))
        object.__setattr__(self, "_by_id", {v: k for k, v in ordered.items()})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExtMap):
            return NotImplemented
        return dict(self.ids) == dict(other.ids)

    def __hash__(self) -> int:
        return hash(frozenset(self.ids.items()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{item.short_name}={ident}" for item, ident in self.ids.items())
        return f"ExtMap({inner})"

    @classmethod
    def default(cls) -> ExtMap:
        """rtstream's mapping: sync=1, origin=2, flow=3, source=4, flags=5, duration=6."""
        return cls(
            {
                NmosItem.SYNC_TIMESTAMP: 1,
                NmosItem.ORIGIN_TIMESTAMP: 2,
                NmosItem.FLOW_ID: 3,
                NmosItem.SOURCE_ID: 4,
                NmosItem.GRAIN_FLAGS: 5,
                NmosItem.GRAIN_DURATION: 6,
            }
        )

    def item(self, ident: int) -> NmosItem | None:
        """The item mapped to local identifier ``ident``, or None."""
        by_id: dict[int, NmosItem] = self._by_id  # type: ignore[attr-defined]
        return by_id.get(ident)

    def __iter__(self) -> Iterator[tuple[int, NmosItem]]:
        """``(id, item)`` pairs in ascending id order (the order SDP lines are written)."""
        return iter((ident, item) for item, ident in self.ids.items())


def encode_elements(elements: Sequence[tuple[int, bytes]]) -> bytes:
    """Serialize one-byte-header elements and zero-pad to a multiple of 4 (RFC 8285 §4.2).

    Parameters
    ----------
    elements : sequence of (int, bytes)
        ``(id, data)`` pairs; id 1-14, data 1-16 bytes.

    Returns
    -------
    bytes
        The extension body, to go after the 4-byte ``0xBEDE``/length header
        (:attr:`RtpPacket.extension <rtstream.proto.rtp.RtpPacket.extension>`).

    Raises
    ------
    LocalProtocolError
        For an identifier outside 1-14 or data of 0 or more than 16 bytes.
    """
    out = bytearray()
    for ident, data in elements:
        if not MIN_ID <= ident <= MAX_ID:
            raise LocalProtocolError(f"extension element id {ident} is outside 1..14")
        if not 1 <= len(data) <= _MAX_DATA:
            raise LocalProtocolError(
                f"extension element {ident}: {len(data)} data bytes, one-byte form allows 1..16"
            )
        out.append((ident << 4) | (len(data) - 1))
        out += data
    out += bytes(-len(out) % 4)
    return bytes(out)


def decode_elements(body: bytes) -> list[tuple[int, bytes]]:
    """Split a one-byte-header extension body into ``(id, data)`` pairs (RFC 8285 §4.2).

    Zero bytes between elements are padding. Identifier 15 is reserved: its length is
    ignored and the rest of the body is not processed (RFC 8285 §4.2).

    Raises
    ------
    RemoteProtocolError
        Field ``"RTP header extension element"``: an element whose data runs past the
        end of the body, or a byte with identifier 0 and a non-zero length nibble
        (identifier 0 is padding only).
    """
    data = bytes(body)
    n = len(data)
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < n:
        b = data[pos]
        if b == 0:
            pos += 1
            continue
        ident = b >> 4
        if ident == RESERVED_ID:
            break
        if ident == 0:
            raise RemoteProtocolError(
                "RTP header extension element",
                f"byte {b:#04x} at offset {pos}: id 0 is only valid as a zero padding byte",
            )
        size = (b & 0x0F) + 1
        if pos + 1 + size > n:
            raise RemoteProtocolError(
                "RTP header extension element",
                f"id {ident} at offset {pos} needs {size} data bytes, {n - pos - 1} remain",
            )
        out.append((ident, data[pos + 1 : pos + 1 + size]))
        pos += 1 + size
    return out


_U32 = struct.Struct("!II")
_MAX_U32 = 0xFFFFFFFF


@dataclass(frozen=True, kw_only=True)
class NmosExtension:
    """The NMOS identity and timing items of one RTP packet.

    Parameters
    ----------
    sync_timestamp, origin_timestamp : PtpTimestamp or None
        PTP sync and origin timestamps of the grain (10-byte IEEE 1588 form).
    flow_id, source_id : uuid.UUID or None
        NMOS flow and source identifiers.
    grain_start, grain_end : bool
        Grain-flags S (bit 7, first packet of a grain) and E (bit 6, last packet). The
        grain-flags item is sent when either is True.
    grain_duration : Fraction or None
        Grain duration in seconds as numerator/denominator (32 bits each).
    """

    sync_timestamp: PtpTimestamp | None = None
    origin_timestamp: PtpTimestamp | None = None
    flow_id: uuid.UUID | None = None
    source_id: uuid.UUID | None = None
    grain_start: bool = False
    grain_end: bool = False
    grain_duration: Fraction | None = None

    def __post_init__(self) -> None:
        d = self.grain_duration
        if d is not None:
            if not isinstance(d, Fraction) or d < 0:
                raise LocalProtocolError(f"grain_duration: {d!r} is not a non-negative Fraction")
            if d.numerator > _MAX_U32 or d.denominator > _MAX_U32:
                raise LocalProtocolError(f"grain_duration: {d} does not fit 32-bit num/den")

    def _items(self) -> list[tuple[NmosItem, bytes]]:
        items: list[tuple[NmosItem, bytes]] = []
        if self.sync_timestamp is not None:
            items.append((NmosItem.SYNC_TIMESTAMP, self.sync_timestamp.to_bytes()))
        if self.origin_timestamp is not None:
            items.append((NmosItem.ORIGIN_TIMESTAMP, self.origin_timestamp.to_bytes()))
        if self.flow_id is not None:
            items.append((NmosItem.FLOW_ID, self.flow_id.bytes))
        if self.source_id is not None:
            items.append((NmosItem.SOURCE_ID, self.source_id.bytes))
        if self.grain_start or self.grain_end:
            flags = (0x80 if self.grain_start else 0) | (0x40 if self.grain_end else 0)
            items.append((NmosItem.GRAIN_FLAGS, bytes([flags])))
        if self.grain_duration is not None:
            d = self.grain_duration
            items.append((NmosItem.GRAIN_DURATION, _U32.pack(d.numerator, d.denominator)))
        return items

    def encode(self, extmap: ExtMap) -> bytes:
        """The extension body (for :attr:`RtpPacket.extension`, profile ``0xBEDE``).

        Raises
        ------
        LocalProtocolError
            When an item is set that ``extmap`` has no identifier for.
        """
        elements: list[tuple[int, bytes]] = []
        for item, data in self._items():
            ident = extmap.ids.get(item)
            if ident is None:
                raise LocalProtocolError(
                    f"extmap has no id for {item.short_name}, which this extension sets"
                )
            elements.append((ident, data))
        return encode_elements(elements)

    @classmethod
    def decode(cls, body: bytes, extmap: ExtMap) -> NmosExtension:
        """Decode the NMOS items of an extension body; unknown identifiers are ignored.

        Raises
        ------
        RemoteProtocolError
            Naming the item (``"NMOS flow-id"`` ...) when its data has the wrong length,
            a timestamp's nanoseconds exceed 10**9-1, a grain duration has a zero
            denominator or an item appears twice; or the element structure is broken
            (see :func:`decode_elements`).
        """
        values: dict[str, object] = {}
        seen: set[NmosItem] = set()
        for ident, data in decode_elements(body):
            item = extmap.item(ident)
            if item is None:
                continue
            name = f"NMOS {item.short_name}"
            if item in seen:
                raise RemoteProtocolError(name, f"appears twice (id {ident})")
            seen.add(item)
            if len(data) != item.data_length:
                raise RemoteProtocolError(
                    name, f"{len(data)} data bytes, expected {item.data_length}"
                )
            if item is NmosItem.SYNC_TIMESTAMP:
                values["sync_timestamp"] = PtpTimestamp.from_bytes(data, name)
            elif item is NmosItem.ORIGIN_TIMESTAMP:
                values["origin_timestamp"] = PtpTimestamp.from_bytes(data, name)
            elif item is NmosItem.FLOW_ID:
                values["flow_id"] = uuid.UUID(bytes=data)
            elif item is NmosItem.SOURCE_ID:
                values["source_id"] = uuid.UUID(bytes=data)
            elif item is NmosItem.GRAIN_FLAGS:
                values["grain_start"] = bool(data[0] & 0x80)
                values["grain_end"] = bool(data[0] & 0x40)
            else:
                num, den = _U32.unpack(data)
                if den == 0:
                    raise RemoteProtocolError(name, f"denominator is 0 (numerator {num})")
                values["grain_duration"] = Fraction(num, den)
        return cls(**values)  # type: ignore[arg-type]
