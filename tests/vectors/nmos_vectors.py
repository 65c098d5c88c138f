"""RFC 8285 one-byte extension bodies carrying the NMOS identity/timing items.

Element header byte: identifier in the high nibble, (data length - 1) in the low nibble.
Identifiers follow :meth:`ExtMap.default`: sync=1, origin=2, flow=3, source=4, flags=5,
duration=6. Each entry of :data:`NMOS_VECTORS` is ``(name, body, NmosExtension)``.
"""

from __future__ import annotations

import uuid
from fractions import Fraction

from rtstream.proto.clock import PtpTimestamp
from rtstream.proto.nmos_ext import NmosExtension

SYNC = PtpTimestamp(1_700_000_000, 500_000_000)
ORIGIN = PtpTimestamp(1_700_000_000, 100_000_000)
FLOW = uuid.UUID("12345678-9abc-4def-8123-456789abcdef")
SOURCE = uuid.UUID("0f0e0d0c-0b0a-4908-8706-050403020100")

# spec §2.3: the four items PS3.22 requires, 56 bytes, length field 14, no padding
FOUR_ITEMS_BODY = (
    b"\x19"  # id 1 (sync-timestamp), len-1 = 9
    b"\x00\x00\x65\x53\xf1\x00"  # 48-bit seconds 1700000000
    b"\x1d\xcd\x65\x00"  # 32-bit nanoseconds 500000000
    b"\x29"  # id 2 (origin-timestamp), len-1 = 9
    b"\x00\x00\x65\x53\xf1\x00"  # 48-bit seconds 1700000000
    b"\x05\xf5\xe1\x00"  # 32-bit nanoseconds 100000000
    b"\x3f"  # id 3 (flow-id), len-1 = 15
    b"\x12\x34\x56\x78\x9a\xbc\x4d\xef\x81\x23\x45\x67\x89\xab\xcd\xef"  # flow UUID
    b"\x4f"  # id 4 (source-id), len-1 = 15
    b"\x0f\x0e\x0d\x0c\x0b\x0a\x49\x08\x87\x06\x05\x04\x03\x02\x01\x00"  # source UUID
)
FOUR_ITEMS = NmosExtension(
    sync_timestamp=SYNC, origin_timestamp=ORIGIN, flow_id=FLOW, source_id=SOURCE
)

ALL_ITEMS_BODY = (
    FOUR_ITEMS_BODY  # 56 bytes as above
    + b"\x50"  # id 5 (grain-flags), len-1 = 0
    + b"\xc0"  # S=1 (bit 7) E=1 (bit 6): a one-packet grain
    + b"\x67"  # id 6 (grain-duration), len-1 = 7
    + b"\x00\x00\x03\xe9"  # numerator 1001
    + b"\x00\x00\xea\x60"  # denominator 60000
    + b"\x00"  # padding to 68 bytes (17 words)
)
ALL_ITEMS = NmosExtension(
    sync_timestamp=SYNC,
    origin_timestamp=ORIGIN,
    flow_id=FLOW,
    source_id=SOURCE,
    grain_start=True,
    grain_end=True,
    grain_duration=Fraction(1001, 60000),
)

LAST_PACKET_BODY = (
    b"\x50"  # id 5 (grain-flags), len-1 = 0
    b"\x40"  # S=0 E=1: last packet of a grain
    b"\x00\x00"  # padding to 4 bytes
)
LAST_PACKET = NmosExtension(grain_end=True)

FIRST_FLAGS_BODY = (
    b"\x50"  # id 5 (grain-flags), len-1 = 0
    b"\x80"  # S=1 E=0: first packet of a multi-packet grain
    b"\x00\x00"  # padding to 4 bytes
)
FIRST_FLAGS = NmosExtension(grain_start=True)

NMOS_VECTORS: list[tuple[str, bytes, NmosExtension]] = [
    ("four-items-56", FOUR_ITEMS_BODY, FOUR_ITEMS),
    ("all-items-68", ALL_ITEMS_BODY, ALL_ITEMS),
    ("last-packet-flags", LAST_PACKET_BODY, LAST_PACKET),
    ("first-packet-flags", FIRST_FLAGS_BODY, FIRST_FLAGS),
    ("empty", b"", NmosExtension()),
]

# Decoded leniently, not produced by the encoder: padding between elements, an id the
# extmap does not know (7, ignored), and the reserved id 15 that ends processing.
LENIENT_BODY = (
    b"\x00\x00"  # padding bytes before the first element
    b"\x50"  # id 5 (grain-flags), len-1 = 0
    b"\x80"  # S=1
    b"\x00"  # padding byte between elements
    b"\x71"  # id 7 (not mapped), len-1 = 1
    b"\xaa\xbb"  # its 2 data bytes
    b"\xf3"  # id 15: reserved, stop here
    b"\x3f\x00\x00\x00"  # never read (would be a truncated flow-id)
)
LENIENT = NmosExtension(grain_start=True)

# Items whose data length is wrong for the NMOS mapping: (name, body, item short name).
BAD_LENGTH_VECTORS: list[tuple[str, bytes, str]] = [
    ("sync 8 bytes", b"\x17" + bytes(8) + b"\x00\x00\x00", "sync-timestamp"),
    ("origin 11 bytes", b"\x2a" + bytes(11), "origin-timestamp"),
    ("flow 15 bytes", b"\x3e" + bytes(15), "flow-id"),
    ("source 1 byte", b"\x40\x00\x00\x00", "source-id"),
    ("flags 2 bytes", b"\x51\x80\x00\x00", "grain-flags"),
    ("duration 4 bytes", b"\x63\x00\x00\x00\x01\x00\x00\x00", "grain-duration"),
]
