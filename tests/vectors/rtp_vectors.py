"""Byte-exact RTP datagrams (RFC 3550 §5.1, §5.3.1) with one comment per field.

Each entry of :data:`RTP_VECTORS` is ``(name, wire bytes, RtpPacket)``; the same table
drives the parser and the serializer tests. L16/L24 payload vectors (RFC 3551 §4.5.11,
RFC 3190 §4) are in :data:`AUDIO_VECTORS`.
"""

from __future__ import annotations

import numpy as np

from rtstream.proto.formats import AudioEncoding, AudioFormat
from rtstream.proto.nmos_ext import PROFILE_ONE_BYTE
from rtstream.proto.rtp import RtpPacket
from tests.vectors.nmos_vectors import ALL_ITEMS_BODY, FOUR_ITEMS_BODY

MINIMAL = (
    b"\x80"  # V=2 P=0 X=0 CC=0
    b"\x60"  # M=0 PT=96
    b"\x12\x34"  # sequence number 0x1234
    b"\xde\xad\xbe\xef"  # timestamp 0xDEADBEEF
    b"\x01\x02\x03\x04"  # SSRC 0x01020304
    b"\xaa\xbb"  # payload (2 bytes)
)

CSRC_PADDING = (
    b"\xa2"  # V=2 P=1 X=0 CC=2
    b"\xe1"  # M=1 PT=97
    b"\xff\xff"  # sequence number 65535 (last before the wrap)
    b"\x00\x00\x00\x00"  # timestamp 0
    b"\xff\xff\xff\xff"  # SSRC 0xFFFFFFFF
    b"\x11\x11\x11\x11"  # CSRC 1
    b"\x22\x22\x22\x22"  # CSRC 2
    b"\x01\x02\x03"  # payload (3 bytes)
    b"\x00\x00\x00"  # padding octets
    b"\x04"  # padding count 4 (includes itself)
)

NMOS_60 = (
    b"\x90"  # V=2 P=0 X=1 CC=0
    b"\x68"  # M=0 PT=104 (metadata, first packet of a grain)
    b"\x00\x01"  # sequence number 1
    b"\x65\x53\xf1\x00"  # timestamp 0x6553F100
    b"\xca\xfe\xba\xbe"  # SSRC 0xCAFEBABE
    b"\xbe\xde"  # extension profile 0xBEDE (RFC 8285 one-byte elements)
    b"\x00\x0e"  # extension length 14 words = 56 bytes of elements
    + FOUR_ITEMS_BODY  # sync, origin, flow-id, source-id (see nmos_vectors)
    + b"\x02\x00\x00\x00"  # payload: start of a grain (placeholder bytes)
)

NMOS_ALL = (
    b"\x90"  # V=2 P=0 X=1 CC=0
    b"\xe8"  # M=1 PT=104
    b"\x00\x02"  # sequence number 2
    b"\x65\x53\xf1\x00"  # timestamp 0x6553F100
    b"\xca\xfe\xba\xbe"  # SSRC 0xCAFEBABE
    b"\xbe\xde"  # extension profile 0xBEDE
    b"\x00\x11"  # extension length 17 words = 67 bytes of elements + 1 padding
    + ALL_ITEMS_BODY  # all six NMOS items (see nmos_vectors)
    # no payload
)

RTP_VECTORS: list[tuple[str, bytes, RtpPacket]] = [
    (
        "minimal",
        MINIMAL,
        RtpPacket(
            payload_type=96,
            sequence=0x1234,
            timestamp=0xDEADBEEF,
            ssrc=0x01020304,
            payload=b"\xaa\xbb",
        ),
    ),
    (
        "csrc-padding-marker",
        CSRC_PADDING,
        RtpPacket(
            payload_type=97,
            sequence=0xFFFF,
            timestamp=0,
            ssrc=0xFFFFFFFF,
            marker=True,
            csrcs=(0x11111111, 0x22222222),
            payload=b"\x01\x02\x03",
            padding=4,
        ),
    ),
    (
        "nmos-four-items-60",
        NMOS_60,
        RtpPacket(
            payload_type=104,
            sequence=1,
            timestamp=0x6553F100,
            ssrc=0xCAFEBABE,
            extension_profile=PROFILE_ONE_BYTE,
            extension=FOUR_ITEMS_BODY,
            payload=b"\x02\x00\x00\x00",
        ),
    ),
    (
        "nmos-all-items",
        NMOS_ALL,
        RtpPacket(
            payload_type=104,
            sequence=2,
            timestamp=0x6553F100,
            ssrc=0xCAFEBABE,
            marker=True,
            extension_profile=PROFILE_ONE_BYTE,
            extension=ALL_ITEMS_BODY,
        ),
    ),
]

# --- ST 2110-30 payloads ------------------------------------------------------------

L24_STEREO_2 = (
    b"\x7f\xff\xff"  # frame 0, left: +8388607 (L24 maximum)
    b"\x80\x00\x00"  # frame 0, right: -8388608 (L24 minimum)
    b"\x00\x00\x01"  # frame 1, left: +1
    b"\xff\xff\xff"  # frame 1, right: -1
)

L16_STEREO_2 = (
    b"\x7f\xff"  # frame 0, left: +32767 (L16 maximum)
    b"\x80\x00"  # frame 0, right: -32768 (L16 minimum)
    b"\x00\x01"  # frame 1, left: +1
    b"\xff\xff"  # frame 1, right: -1
)

L24_MONO_3 = (
    b"\x12\x34\x56"  # frame 0: 0x123456
    b"\xed\xcb\xaa"  # frame 1: -0x123456
    b"\x00\x00\x00"  # frame 2: 0
)

AUDIO_VECTORS: list[tuple[str, AudioEncoding, bytes, np.ndarray]] = [
    (
        "L24-stereo",
        AudioEncoding.L24,
        L24_STEREO_2,
        np.array([[8388607, -8388608], [1, -1]], np.int32),
    ),
    (
        "L16-stereo",
        AudioEncoding.L16,
        L16_STEREO_2,
        np.array([[32767, -32768], [1, -1]], np.int32),
    ),
    (
        "L24-mono",
        AudioEncoding.L24,
        L24_MONO_3,
        np.array([[0x123456], [-0x123456], [0]], np.int32),
    ),
]

# One whole packet as rtstream's AudioPacketizer writes it: L16 mono at 48 kHz with
# 125 µs packets (6 samples), SSRC 0x00000007, PT 97, sequence 0x0010, timestamp 48000.
L16_MONO_125US_FORMAT = AudioFormat(
    encoding=AudioEncoding.L16, sample_rate=48_000, channels=1, ptime_us=125
)
L16_MONO_125US_SAMPLES = np.array([[0], [1], [-1], [256], [-256], [32767]], np.int32)
L16_MONO_125US_PACKET = (
    b"\x80"  # V=2 P=0 X=0 CC=0
    b"\x61"  # M=0 PT=97 (ST 2110-30 sets no marker)
    b"\x00\x10"  # sequence number 16
    b"\x00\x00\xbb\x80"  # timestamp 48000 (1 s at 48 kHz)
    b"\x00\x00\x00\x07"  # SSRC 7
    b"\x00\x00"  # sample 0: 0
    b"\x00\x01"  # sample 1: +1
    b"\xff\xff"  # sample 2: -1
    b"\x01\x00"  # sample 3: +256
    b"\xff\x00"  # sample 4: -256
    b"\x7f\xff"  # sample 5: +32767
)
# ... and the packet after it: sequence 17, timestamp 48006.
L16_MONO_125US_NEXT_HEADER = (
    b"\x80"  # V=2 P=0 X=0 CC=0
    b"\x61"  # M=0 PT=97
    b"\x00\x11"  # sequence number 17
    b"\x00\x00\xbb\x86"  # timestamp 48006 = 48000 + 6 samples
    b"\x00\x00\x00\x07"  # SSRC 7
)
