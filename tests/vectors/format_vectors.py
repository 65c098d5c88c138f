"""Golden RFC 4175 datagrams for the sampling x depth pairs no peer here carries.

GStreamer 1.22 and FFmpeg 5.1 carry only RGB 8-bit, YCbCr-4:4:4 8-bit, YCbCr-4:2:2 8- and
10-bit and YCbCr-4:2:0 8-bit (``docs/formats.md``, written by
``tests/interop/test_format_matrix.py``). For the other eleven pairs these vectors pin
the bytes to the standard's packing rules, written out field by field:

* RTP fixed header (RFC 3550 §5.1), then the RFC 4175 payload header: Extended Sequence
  Number and one SRD header (RFC 4175 §4.2; ``spec/ps322.md`` §6.1).
* Pixel data: the samples of a row are one big-endian bit stream of ``depth``-bit
  samples in RFC 4175's order (§4.3-4.4): 4:2:2 ``Cb Y0 Cr Y1``, 4:4:4 ``Cb Y Cr`` and
  RGB ``R G B`` per pixel, 4:2:0 ``Y00 Y01 Y10 Y11 Cb Cr`` per 2x2 block; a pgroup
  (``spec/ps322.md`` §6.1 table) is the shortest whole number of octets holding whole
  pixels (``[n]`` numbers the pixels or 2x2 blocks within one pgroup).

Each vector is datagram 0 of a frame two lines high and one pgroup (two pixels for
1-pixel pgroups) wide, sent with sequence number 0x1234, timestamp 1500, SSRC 0x2110 and
payload type 96: row 0 (for 4:2:0 the only row, both lines) with the listed samples.
The bit streams were written out from the rules above by a big-integer packer, not by
rtstream's code. ``tests/proto/test_format_vectors.py`` packs the samples and
packetizes them (must equal the vector) and depacketizes the vector (must give them
back).
"""

from __future__ import annotations

from dataclasses import dataclass

from rtstream.proto.formats import Sampling


@dataclass(frozen=True)
class FormatVector:
    sampling: Sampling
    depth: int
    width: int
    height: int
    row0_samples: list[int]  # the row's samples in wire order
    datagram0: str  # hex with one comment per field (tests.vectors.rfc4175_vectors.hex_bytes)


VECTORS: list[FormatVector] = [
    FormatVector(
        sampling=Sampling.RGB, depth=10, width=4, height=2,
        row0_samples=[0x111, 0x222, 0x333, 0x44, 0x155, 0x266, 0x377, 0x88, 0x199, 0x2aa, 0x3bb, 0xcc],
        datagram0="""
        80          # V=2, P=0, X=0, CC=0
        60          # M=0 (more packets follow), PT=96
        12 34       # sequence number 0x1234 (low 16 bits)
        00 00 05 dc # timestamp 1500 (90 kHz)
        00 00 21 10 # SSRC 0x2110
        00 00       # Extended Sequence Number 0 (high 16 bits)
        00 0f       # SRD Length 15 octets (1 pgroup of 15)
        00 00       # F=0, SRD Row Number 0
        00 00       # C=0 (no further SRD header), SRD Offset 0 pixels
        44 62 2c cc 44 55 66 6d dc 88 66 6a ae ec cc  # pgroup 0: R[0]=0x111, G[0]=0x222, B[0]=0x333, R[1]=0x044, G[1]=0x155, B[1]=0x266, R[2]=0x377, G[2]=0x088, B[2]=0x199, R[3]=0x2aa, G[3]=0x3bb, B[3]=0x0cc
        """,
    ),
    FormatVector(
        sampling=Sampling.RGB, depth=12, width=2, height=2,
        row0_samples=[0x111, 0x222, 0x333, 0x444, 0x555, 0x666],
        datagram0="""
        80          # V=2, P=0, X=0, CC=0
        60          # M=0 (more packets follow), PT=96
        12 34       # sequence number 0x1234 (low 16 bits)
        00 00 05 dc # timestamp 1500 (90 kHz)
        00 00 21 10 # SSRC 0x2110
        00 00       # Extended Sequence Number 0 (high 16 bits)
        00 09       # SRD Length 9 octets (1 pgroup of 9)
        00 00       # F=0, SRD Row Number 0
        00 00       # C=0 (no further SRD header), SRD Offset 0 pixels
        11 12 22 33 34 44 55 56 66  # pgroup 0: R[0]=0x111, G[0]=0x222, B[0]=0x333, R[1]=0x444, G[1]=0x555, B[1]=0x666
        """,
    ),
    FormatVector(
        sampling=Sampling.RGB, depth=16, width=2, height=2,
        row0_samples=[0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x6666],
        datagram0="""
        80          # V=2, P=0, X=0, CC=0
        60          # M=0 (more packets follow), PT=96
        12 34       # sequence number 0x1234 (low 16 bits)
        00 00 05 dc # timestamp 1500 (90 kHz)
        00 00 21 10 # SSRC 0x2110
        00 00       # Extended Sequence Number 0 (high 16 bits)
        00 0c       # SRD Length 12 octets (2 pgroups of 6)
        00 00       # F=0, SRD Row Number 0
        00 00       # C=0 (no further SRD header), SRD Offset 0 pixels
        11 11 22 22 33 33  # pgroup 0: R[0]=0x1111, G[0]=0x2222, B[0]=0x3333
        44 44 55 55 66 66  # pgroup 1: R[1]=0x4444, G[1]=0x5555, B[1]=0x6666
        """,
    ),
    FormatVector(
        sampling=Sampling.YCBCR_420, depth=10, width=4, height=2,
        row0_samples=[0x111, 0x222, 0x333, 0x44, 0x155, 0x266, 0x377, 0x88, 0x199, 0x2aa, 0x3bb, 0xcc],
        datagram0="""
        80          # V=2, P=0, X=0, CC=0
        e0          # M=1 (last packet of the frame), PT=96
        12 34       # sequence number 0x1234 (low 16 bits)
        00 00 05 dc # timestamp 1500 (90 kHz)
        00 00 21 10 # SSRC 0x2110
        00 00       # Extended Sequence Number 0 (high 16 bits)
        00 0f       # SRD Length 15 octets (1 pgroup of 15)
        00 00       # F=0, SRD Row Number 0
        00 00       # C=0 (no further SRD header), SRD Offset 0 pixels
        44 62 2c cc 44 55 66 6d dc 88 66 6a ae ec cc  # pgroup 0: Y00[0]=0x111, Y01[0]=0x222, Y10[0]=0x333, Y11[0]=0x044, Cb[0]=0x155, Cr[0]=0x266, Y00[1]=0x377, Y01[1]=0x088, Y10[1]=0x199, Y11[1]=0x2aa, Cb[1]=0x3bb, Cr[1]=0x0cc
        """,
    ),
    FormatVector(
        sampling=Sampling.YCBCR_420, depth=12, width=2, height=2,
        row0_samples=[0x111, 0x222, 0x333, 0x444, 0x555, 0x666],
        datagram0="""
        80          # V=2, P=0, X=0, CC=0
        e0          # M=1 (last packet of the frame), PT=96
        12 34       # sequence number 0x1234 (low 16 bits)
        00 00 05 dc # timestamp 1500 (90 kHz)
        00 00 21 10 # SSRC 0x2110
        00 00       # Extended Sequence Number 0 (high 16 bits)
        00 09       # SRD Length 9 octets (1 pgroup of 9)
        00 00       # F=0, SRD Row Number 0
        00 00       # C=0 (no further SRD header), SRD Offset 0 pixels
        11 12 22 33 34 44 55 56 66  # pgroup 0: Y00=0x111, Y01=0x222, Y10=0x333, Y11=0x444, Cb=0x555, Cr=0x666
        """,
    ),
    FormatVector(
        sampling=Sampling.YCBCR_420, depth=16, width=2, height=2,
        row0_samples=[0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x6666],
        datagram0="""
        80          # V=2, P=0, X=0, CC=0
        e0          # M=1 (last packet of the frame), PT=96
        12 34       # sequence number 0x1234 (low 16 bits)
        00 00 05 dc # timestamp 1500 (90 kHz)
        00 00 21 10 # SSRC 0x2110
        00 00       # Extended Sequence Number 0 (high 16 bits)
        00 0c       # SRD Length 12 octets (1 pgroup of 12)
        00 00       # F=0, SRD Row Number 0
        00 00       # C=0 (no further SRD header), SRD Offset 0 pixels
        11 11 22 22 33 33 44 44 55 55 66 66  # pgroup 0: Y00=0x1111, Y01=0x2222, Y10=0x3333, Y11=0x4444, Cb=0x5555, Cr=0x6666
        """,
    ),
    FormatVector(
        sampling=Sampling.YCBCR_422, depth=12, width=2, height=2,
        row0_samples=[0x111, 0x222, 0x333, 0x444],
        datagram0="""
        80          # V=2, P=0, X=0, CC=0
        60          # M=0 (more packets follow), PT=96
        12 34       # sequence number 0x1234 (low 16 bits)
        00 00 05 dc # timestamp 1500 (90 kHz)
        00 00 21 10 # SSRC 0x2110
        00 00       # Extended Sequence Number 0 (high 16 bits)
        00 06       # SRD Length 6 octets (1 pgroup of 6)
        00 00       # F=0, SRD Row Number 0
        00 00       # C=0 (no further SRD header), SRD Offset 0 pixels
        11 12 22 33 34 44  # pgroup 0: Cb=0x111, Y0=0x222, Cr=0x333, Y1=0x444
        """,
    ),
    FormatVector(
        sampling=Sampling.YCBCR_422, depth=16, width=2, height=2,
        row0_samples=[0x1111, 0x2222, 0x3333, 0x4444],
        datagram0="""
        80          # V=2, P=0, X=0, CC=0
        60          # M=0 (more packets follow), PT=96
        12 34       # sequence number 0x1234 (low 16 bits)
        00 00 05 dc # timestamp 1500 (90 kHz)
        00 00 21 10 # SSRC 0x2110
        00 00       # Extended Sequence Number 0 (high 16 bits)
        00 08       # SRD Length 8 octets (1 pgroup of 8)
        00 00       # F=0, SRD Row Number 0
        00 00       # C=0 (no further SRD header), SRD Offset 0 pixels
        11 11 22 22 33 33 44 44  # pgroup 0: Cb=0x1111, Y0=0x2222, Cr=0x3333, Y1=0x4444
        """,
    ),
    FormatVector(
        sampling=Sampling.YCBCR_444, depth=10, width=4, height=2,
        row0_samples=[0x111, 0x222, 0x333, 0x44, 0x155, 0x266, 0x377, 0x88, 0x199, 0x2aa, 0x3bb, 0xcc],
        datagram0="""
        80          # V=2, P=0, X=0, CC=0
        60          # M=0 (more packets follow), PT=96
        12 34       # sequence number 0x1234 (low 16 bits)
        00 00 05 dc # timestamp 1500 (90 kHz)
        00 00 21 10 # SSRC 0x2110
        00 00       # Extended Sequence Number 0 (high 16 bits)
        00 0f       # SRD Length 15 octets (1 pgroup of 15)
        00 00       # F=0, SRD Row Number 0
        00 00       # C=0 (no further SRD header), SRD Offset 0 pixels
        44 62 2c cc 44 55 66 6d dc 88 66 6a ae ec cc  # pgroup 0: Cb[0]=0x111, Y[0]=0x222, Cr[0]=0x333, Cb[1]=0x044, Y[1]=0x155, Cr[1]=0x266, Cb[2]=0x377, Y[2]=0x088, Cr[2]=0x199, Cb[3]=0x2aa, Y[3]=0x3bb, Cr[3]=0x0cc
        """,
    ),
    FormatVector(
        sampling=Sampling.YCBCR_444, depth=12, width=2, height=2,
        row0_samples=[0x111, 0x222, 0x333, 0x444, 0x555, 0x666],
        datagram0="""
        80          # V=2, P=0, X=0, CC=0
        60          # M=0 (more packets follow), PT=96
        12 34       # sequence number 0x1234 (low 16 bits)
        00 00 05 dc # timestamp 1500 (90 kHz)
        00 00 21 10 # SSRC 0x2110
        00 00       # Extended Sequence Number 0 (high 16 bits)
        00 09       # SRD Length 9 octets (1 pgroup of 9)
        00 00       # F=0, SRD Row Number 0
        00 00       # C=0 (no further SRD header), SRD Offset 0 pixels
        11 12 22 33 34 44 55 56 66  # pgroup 0: Cb[0]=0x111, Y[0]=0x222, Cr[0]=0x333, Cb[1]=0x444, Y[1]=0x555, Cr[1]=0x666
        """,
    ),
    FormatVector(
        sampling=Sampling.YCBCR_444, depth=16, width=2, height=2,
        row0_samples=[0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x6666],
        datagram0="""
        80          # V=2, P=0, X=0, CC=0
        60          # M=0 (more packets follow), PT=96
        12 34       # sequence number 0x1234 (low 16 bits)
        00 00 05 dc # timestamp 1500 (90 kHz)
        00 00 21 10 # SSRC 0x2110
        00 00       # Extended Sequence Number 0 (high 16 bits)
        00 0c       # SRD Length 12 octets (2 pgroups of 6)
        00 00       # F=0, SRD Row Number 0
        00 00       # C=0 (no further SRD header), SRD Offset 0 pixels
        11 11 22 22 33 33  # pgroup 0: Cb[0]=0x1111, Y[0]=0x2222, Cr[0]=0x3333
        44 44 55 55 66 66  # pgroup 1: Cb[1]=0x4444, Y[1]=0x5555, Cr[1]=0x6666
        """,
    ),
]
