"""Byte-exact vectors of DICOM-RTV metadata grains (PS3.22 Table 7.1-1), one comment per
field, plus small factories shared by the tests in tests/dicom/.

Explicit VR Little Endian element headers (PS3.5 §7.1.2): tag group and element as two
little-endian uint16, the VR as two ASCII letters, then a 2-byte length (UI, UL, DT, US,
FD...) or two zero bytes and a 4-byte length (OB, SQ). Items are (FFFE,E000) + 4-byte
length. UIDs are padded with one NUL to even length, DT values with one space.
"""

from __future__ import annotations

import uuid
from fractions import Fraction

from rtstream.proto.clock import PtpTimestamp
from rtstream.proto.formats import Sampling, VideoFormat
from rtstream.proto.rtv_metadata import RtvMetaInfo

SOURCE_ID = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
FLOW_ID = uuid.UUID("ffeeddcc-bbaa-9988-7766-554433221100")

META = RtvMetaInfo(
    transfer_syntax_uid="1.2.840.10008.1.2.7.1",
    sop_class_uid="1.2.840.10008.10.1",
    sop_instance_uid="1.2.3.4",
    source_id=SOURCE_ID,
    flow_id=FLOW_ID,
    sampling_rate=90000,
)

META_HEX: list[tuple[str, str]] = [
    ("00" * 128, "Header Preamble: 128 zero bytes"),
    ("4449434d", "DICOM prefix 'DICM'"),
    ("0200 0000 554c 0400", "(0002,0000) UL, length 4"),
    ("9a000000", "  File Meta Information Group Length = 154 bytes of group 0002 follow"),
    ("0200 1000 5549 1600", "(0002,0010) UI, length 22"),
    ("312e322e3834302e31303030382e312e322e372e3100",
     "  '1.2.840.10008.1.2.7.1' + NUL: the BULK flow's syntax (ST 2110-20 progressive)"),
    ("0200 3100 4f42 0000 02000000", "(0002,0031) OB, reserved 0000, length 2"),
    ("0001", "  RTV Meta Information Version 00 01"),
    ("0200 3200 5549 1200", "(0002,0032) UI, length 18"),
    ("312e322e3834302e31303030382e31302e31",
     "  '1.2.840.10008.10.1' Video Endoscopic Image Real-Time Communication"),
    ("0200 3300 5549 0800", "(0002,0033) UI, length 8"),
    ("312e322e332e3400", "  '1.2.3.4' + NUL: RTV Communication SOP Instance UID"),
    ("0200 3500 4f42 0000 10000000", "(0002,0035) OB, length 16"),
    ("00112233445566778899aabbccddeeff", "  RTV Source Identifier (UUID bytes)"),
    ("0200 3600 4f42 0000 10000000", "(0002,0036) OB, length 16"),
    ("ffeeddccbbaa99887766554433221100", "  RTV Flow Identifier (UUID bytes)"),
    ("0200 3700 554c 0400", "(0002,0037) UL, length 4"),
    ("905f0100", "  RTV Flow RTP Sampling Rate = 90000"),
]  # fmt: skip

ORIGIN = PtpTimestamp(1_700_000_000, 5)
FRAME_NUMBER = 7
ACQ_DT = "20231114221320.000000+0000"

DYNAMIC_HEX: list[tuple[str, str]] = [
    ("0600 0100 5351 0000 94000000", "(0006,0001) Current Frame Functional Groups Seq, 148 B"),
    ("feff 00e0 8c000000", "  Item, 140 bytes (exactly one item)"),
    ("2000 1191 5351 0000 56000000", "    (0020,9111) Frame Content Sequence, 86 bytes"),
    ("feff 00e0 4e000000", "      Item, 78 bytes"),
    ("1800 7490 4454 1a00", "        (0018,9074) DT Frame Acquisition DateTime, 26"),
    ("32303233313131343232313332302e3030303030302b30303030", "          " + ACQ_DT),
    ("1800 5191 4454 1a00", "        (0018,9151) DT Frame Reference DateTime, 26"),
    ("32303233313131343232313332302e3030303030302b30303030", "          " + ACQ_DT),
    ("2000 5691 5553 0200", "        (0020,9156) US Frame Acquisition Number, 2"),
    ("0700", "          7"),
    ("3400 0d00 5351 0000 1e000000", "    (0034,000D) Time of Frame Group Sequence, 30 bytes"),
    ("feff 00e0 16000000", "      Item, 22 bytes"),
    ("3400 0700 4f42 0000 0a000000", "        (0034,0007) OB Frame Origin Timestamp, 10"),
    ("00006553f100", "          seconds 1700000000, 48-bit big-endian (IEEE 1588)"),
    ("00000005", "          nanoseconds 5, 32-bit big-endian"),
]


def hex_bytes(vector: list[tuple[str, str]]) -> bytes:
    """Join a vector's hex fields (spaces ignored)."""
    return bytes.fromhex("".join(h.replace(" ", "") for h, _ in vector))


VIDEO_FMT = VideoFormat(
    sampling=Sampling.YCBCR_422,
    depth=10,
    width=64,
    height=48,
    exactframerate=Fraction(30),
)
VIDEO_FMT_8 = VideoFormat(
    sampling=Sampling.YCBCR_422,
    depth=8,
    width=64,
    height=48,
    exactframerate=Fraction(30),
)
