"""Annotated RFC 4175 payload-header vectors (RFC 4175 §4.2, ST 2110-20 GPM).

Each entry is ``(name, hex text of the header, expected PayloadHeader)``. The hex text
has one comment per field; :func:`hex_bytes` strips the comments. One table drives both
parsing and serializing in ``tests/proto/test_rfc4175.py``.
"""

from __future__ import annotations

from rtstream.proto.rfc4175 import PayloadHeader, SrdHeader


def hex_bytes(text: str) -> bytes:
    """Bytes of a hex vector; ``#`` starts a comment running to the end of the line."""
    return bytes.fromhex("".join(line.split("#", 1)[0] for line in text.splitlines()))


VECTORS: list[tuple[str, str, PayloadHeader]] = [
    (
        "single SRD, 1080p 4:2:2 10-bit, row 0, first quarter",
        """
        00 00   # Extended Sequence Number = 0
        04 b0   # SRD Length = 1200 octets (240 pgroups)
        00 00   # F = 0, SRD Row Number = 0
        00 00   # C = 0 (last header), SRD Offset = 0 pixels
        """,
        PayloadHeader(extended_sequence=0, srds=(SrdHeader(length=1200, row=0, offset=0),)),
    ),
    (
        "single SRD, last quarter of line 1079, extended sequence 0xffff",
        """
        ff ff   # Extended Sequence Number = 65535 (high half of the 32-bit number)
        04 b0   # SRD Length = 1200
        04 37   # F = 0, SRD Row Number = 1079
        05 a0   # C = 0, SRD Offset = 1440 pixels
        """,
        PayloadHeader(
            extended_sequence=0xFFFF,
            srds=(SrdHeader(length=1200, row=1079, offset=1440),),
        ),
    ),
    (
        "two SRDs: a packet spanning the end of line 5 and the start of line 6",
        """
        00 01   # Extended Sequence Number = 1
        02 80   # SRD Length = 640
        00 05   # F = 0, SRD Row Number = 5
        86 40   # C = 1 (another header follows), SRD Offset = 1600 pixels
        02 d0   # SRD Length = 720
        00 06   # F = 0, SRD Row Number = 6
        00 00   # C = 0, SRD Offset = 0
        """,
        PayloadHeader(
            extended_sequence=1,
            srds=(
                SrdHeader(length=640, row=5, offset=1600),
                SrdHeader(length=720, row=6, offset=0),
            ),
        ),
    ),
    (
        "interlaced second field, maximum row and offset",
        """
        12 34   # Extended Sequence Number = 0x1234
        00 05   # SRD Length = 5 (one 4:2:2 10-bit pgroup)
        ff ff   # F = 1 (second field), SRD Row Number = 32767
        7f ff   # C = 0, SRD Offset = 32767
        """,
        PayloadHeader(
            extended_sequence=0x1234,
            srds=(SrdHeader(length=5, row=0x7FFF, offset=0x7FFF, field=True),),
        ),
    ),
    (
        "three SRDs, the middle one of the second field",
        """
        00 00   # Extended Sequence Number = 0
        00 04   # SRD Length = 4
        00 0a   # F = 0, SRD Row Number = 10
        80 02   # C = 1, SRD Offset = 2
        00 08   # SRD Length = 8
        80 0a   # F = 1, SRD Row Number = 10
        80 00   # C = 1, SRD Offset = 0
        00 0c   # SRD Length = 12
        00 0b   # F = 0, SRD Row Number = 11
        00 04   # C = 0, SRD Offset = 4
        """,
        PayloadHeader(
            extended_sequence=0,
            srds=(
                SrdHeader(length=4, row=10, offset=2),
                SrdHeader(length=8, row=10, offset=0, field=True),
                SrdHeader(length=12, row=11, offset=4),
            ),
        ),
    ),
]
