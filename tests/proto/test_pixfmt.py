"""pgroup conversions: exact known bytes, lossless paths, BT.601 colour and PyAV shapes."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtstream.errors import ConfigError, LocalProtocolError
from rtstream.proto.formats import SUPPORTED_VIDEO, Sampling, VideoFormat
from rtstream.proto.pixfmt import PIX_FMTS, from_wire, to_wire


def make_fmt(sampling: Sampling, depth: int, w: int = 8, h: int = 4) -> VideoFormat:
    return VideoFormat(sampling=sampling, depth=depth, width=w, height=h,
                       exactframerate=Fraction(25))


def test_422_10bit_pgroup_bit_packing() -> None:
    # PS3.5 A.8: Cb Y0 Cr Y1, 10 bits each, big-endian in 5 octets.
    fmt = make_fmt(Sampling.YCBCR_422, 10, 2, 2)
    img = np.zeros((3, 2, 2), np.uint16)
    img[0] = [[0x3FF, 0x001], [64, 940]]   # Y
    img[1] = [[0x200, 0x200], [64, 64]]    # Cb (repeated to full width, PyAV style)
    img[2] = [[0x155, 0x155], [960, 960]]  # Cr
    wire = to_wire(img, "yuv422p10le", fmt)
    row0 = (0x200 << 30) | (0x3FF << 20) | (0x155 << 10) | 0x001
    row1 = (64 << 30) | (64 << 20) | (960 << 10) | 940
    assert wire.tobytes() == row0.to_bytes(5, "big") + row1.to_bytes(5, "big")
    assert np.array_equal(from_wire(wire, fmt, "yuv422p10le"), img)


def test_422_8bit_is_uyvy_and_420_order() -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 8, 4, 2)
    uyvy = np.arange(16, dtype=np.uint8).reshape(2, 8)
    assert np.array_equal(to_wire(uyvy, "uyvy422", fmt), uyvy.reshape(-1))
    f420 = make_fmt(Sampling.YCBCR_420, 8, 2, 2)
    yuv = np.array([[1, 2], [3, 4], [5, 6]], np.uint8)  # Y 2x2, then U, then V
    # RFC 4175 §4.4: Y00 Y01 Y10 Y11 Cb Cr
    assert to_wire(yuv, "yuv420p", f420).tolist() == [1, 2, 3, 4, 5, 6]
    nv12 = np.array([[1, 2], [3, 4], [5, 6]], np.uint8)  # UV interleaved row
    assert to_wire(nv12, "nv12", f420).tolist() == [1, 2, 3, 4, 5, 6]


def test_bt601_narrow_range_primaries() -> None:
    fmt = make_fmt(Sampling.YCBCR_444, 8, 4, 2)
    rgb = np.zeros((2, 4, 3), np.uint8)
    rgb[0, 0] = (255, 255, 255)  # white
    rgb[0, 1] = (0, 0, 0)        # black
    rgb[0, 2] = (255, 0, 0)      # red
    rgb[0, 3] = (0, 0, 255)      # blue
    px = to_wire(rgb, "rgb24", fmt).reshape(2, 4, 3)  # Cb Y Cr per pixel
    assert px[0, 0].tolist() == [128, 235, 128]
    assert px[0, 1].tolist() == [128, 16, 128]
    assert px[0, 2].tolist() == [90, 81, 240]   # BT.601 red: Y 81, Cb 90, Cr 240
    assert px[0, 3].tolist() == [240, 41, 110]  # BT.601 blue: Y 41, Cb 240, Cr 110
    back = from_wire(to_wire(rgb, "rgb24", fmt), fmt, "rgb24")
    assert np.abs(back.astype(int) - rgb.astype(int)).max() <= 2
    f10 = make_fmt(Sampling.YCBCR_444, 10, 4, 2)
    w10 = to_wire(rgb, "rgb24", f10)
    y10 = from_wire(w10, f10, "yuv422p10le")[0]
    assert y10[0, :2].tolist() == [940, 64]


@st.composite
def sized(draw: st.DrawFn) -> tuple[int, int]:
    return 4 * draw(st.integers(1, 12)), 2 * draw(st.integers(1, 8))


@settings(max_examples=40, deadline=None)
@given(size=sized(), seed=st.integers(0, 2**32 - 1))
def test_lossless_paths_round_trip(size: tuple[int, int], seed: int) -> None:
    w, h = size
    rng = np.random.default_rng(seed)
    uyvy = rng.integers(0, 256, (h, w * 2), dtype=np.uint8)
    f8 = make_fmt(Sampling.YCBCR_422, 8, w, h)
    assert np.array_equal(from_wire(to_wire(uyvy, "uyvy422", f8), f8, "uyvy422"), uyvy)
    p10 = rng.integers(0, 1024, (3, h, w), dtype=np.uint16)
    p10[1:, :, 1::2] = p10[1:, :, 0::2]  # PyAV repeats chroma to full width
    f10 = make_fmt(Sampling.YCBCR_422, 10, w, h)
    assert np.array_equal(from_wire(to_wire(p10, "yuv422p10le", f10), f10, "yuv422p10le"), p10)
    f420 = make_fmt(Sampling.YCBCR_420, 8, w, h)
    i420 = rng.integers(0, 256, (h * 3 // 2, w), dtype=np.uint8)
    assert np.array_equal(from_wire(to_wire(i420, "yuv420p", f420), f420, "yuv420p"), i420)
    assert np.array_equal(from_wire(to_wire(i420, "nv12", f420), f420, "nv12"), i420)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for depth in (8, 10):
        frgb = make_fmt(Sampling.RGB, depth, w, h)
        assert np.array_equal(from_wire(to_wire(rgb, "rgb24", frgb), frgb, "rgb24"), rgb)


@settings(max_examples=30, deadline=None)
@given(size=sized(), seed=st.integers(0, 2**32 - 1), pix_fmt=st.sampled_from(PIX_FMTS))
def test_every_format_pair_has_right_shapes(size: tuple[int, int], seed: int,
                                            pix_fmt: str) -> None:
    w, h = size
    rng = np.random.default_rng(seed)
    for sampling, depth in SUPPORTED_VIDEO:
        fmt = make_fmt(sampling, depth, w, h)
        wire = rng.integers(0, 256, fmt.frame_bytes, dtype=np.uint8)
        img = from_wire(wire, fmt, pix_fmt)
        again = to_wire(img, pix_fmt, fmt)
        assert again.dtype == np.uint8 and again.size == fmt.frame_bytes


def test_pyav_shapes_match() -> None:
    av = pytest.importorskip("av")
    fmt = make_fmt(Sampling.YCBCR_422, 10, 16, 8)
    wire = np.random.default_rng(1).integers(0, 256, fmt.frame_bytes, dtype=np.uint8)
    for pix_fmt in ("rgb24", "yuv420p", "nv12", "yuv422p10le"):
        arr = from_wire(wire, fmt, pix_fmt)
        frame = av.VideoFrame.from_ndarray(arr, format=pix_fmt)
        assert frame.to_ndarray().shape == arr.shape
        assert np.array_equal(frame.to_ndarray(), arr)


def test_errors_name_the_field() -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 8)
    with pytest.raises(ConfigError, match="pix_fmt"):
        to_wire(np.zeros((4, 8, 3), np.uint8), "bgr0", fmt)
    with pytest.raises(LocalProtocolError, match="image"):
        to_wire(np.zeros((4, 8), np.uint8), "rgb24", fmt)
    with pytest.raises(LocalProtocolError, match="wire"):
        from_wire(np.zeros(3, np.uint8), fmt)
    with pytest.raises(ConfigError, match="depth"):
        to_wire(np.zeros((4, 8, 3), np.uint8), "rgb24", make_fmt(Sampling.YCBCR_422, 12))
