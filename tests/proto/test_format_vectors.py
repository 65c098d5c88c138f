"""The golden datagrams of ``tests/vectors/format_vectors.py``: pack, packetize, parse."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from rtstream.proto.formats import Sampling, VideoFormat
from rtstream.proto.pixfmt import planes_to_wire, wire_to_planes
from rtstream.proto.rfc4175 import VideoDepacketizer, VideoPacketizer
from tests.vectors.format_vectors import VECTORS, FormatVector
from tests.vectors.rfc4175_vectors import hex_bytes


def planes_of(v: FormatVector, fmt: VideoFormat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row 0's samples (wire order, RFC 4175 §4.3-4.4) as planes; row 1 = row 0 + 1."""
    w, h = fmt.width, fmt.height
    dt = np.uint8 if fmt.depth == 8 else np.uint16
    s = v.row0_samples
    if v.sampling is Sampling.YCBCR_420:  # one row: k blocks of Y00 Y01 Y10 Y11 Cb Cr
        y = np.zeros((h, w), dt)
        cb = np.zeros((1, w // 2), dt)
        cr = np.zeros((1, w // 2), dt)
        for b in range(w // 2):
            y00, y01, y10, y11, u, vv = s[6 * b : 6 * b + 6]
            y[0, 2 * b : 2 * b + 2] = (y00, y01)
            y[1, 2 * b : 2 * b + 2] = (y10, y11)
            cb[0, b], cr[0, b] = u, vv
        return y, cb, cr
    if v.sampling is Sampling.YCBCR_422:
        row = np.array(s).reshape(-1, 4)  # Cb Y0 Cr Y1
        y0 = np.stack([row[:, 1], row[:, 3]], -1).reshape(-1)
        planes = (y0, row[:, 0], row[:, 2])
    else:
        px = np.array(s).reshape(-1, 3)
        planes = (px[:, 1], px[:, 0], px[:, 2]) if v.sampling is Sampling.YCBCR_444 else (
            px[:, 0], px[:, 1], px[:, 2])
    top = (1 << fmt.depth) - 1
    return tuple(np.stack([p, (p + 1) & top]).astype(dt) for p in planes)  # type: ignore[return-value]


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: f"{v.sampling.value}-{v.depth}")
def test_golden_datagram(v: FormatVector) -> None:
    fmt = VideoFormat(sampling=v.sampling, depth=v.depth, width=v.width, height=v.height,
                      exactframerate=Fraction(25))
    golden = hex_bytes(v.datagram0)
    planes = planes_of(v, fmt)
    frame = planes_to_wire(planes, fmt)
    pk = VideoPacketizer(fmt, ssrc=0x2110, sequence=0x1234)
    batch = pk.packetize(frame, 1500)
    assert batch.datagram(0) == golden
    # the receiving side: the golden datagram (and the rest of the frame) reassemble to
    # the listed samples
    rest = [batch.datagram(i) for i in range(1, len(batch))]
    stride = max(len(golden), *(len(d) for d in rest)) if rest else len(golden)
    buf = np.zeros((1 + len(rest), stride), np.uint8)
    for i, d in enumerate([golden, *rest]):
        buf[i, : len(d)] = np.frombuffer(d, np.uint8)
    dp = VideoDepacketizer(fmt)
    (ev,) = dp.feed(buf, np.array([len(golden), *(len(d) for d in rest)]), now=0)
    assert ev.complete
    got = wire_to_planes(ev.data, fmt)
    for a, b in zip(got, planes, strict=True):
        assert np.array_equal(a, b)


def test_every_pair_no_peer_carries_has_a_vector() -> None:
    have = {(v.sampling, v.depth) for v in VECTORS}
    assert len(have) == 11
    assert (Sampling.YCBCR_420, 10) in have and (Sampling.YCBCR_422, 16) in have
