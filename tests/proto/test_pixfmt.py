"""pgroup conversions: exact known bytes, lossless paths, BT.601 colour and PyAV shapes."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtstream.errors import ConfigError, LocalProtocolError
from rtstream.proto.formats import SUPPORTED_VIDEO, Sampling, VideoFormat
from rtstream.proto.pixfmt import PIX_FMTS, PLANAR_PIX_FMTS, from_wire, to_wire

# The pix_fmts every wire format converts to and from (planar ones carry one format).
DISPLAY_PIX_FMTS = tuple(p for p in PIX_FMTS if p not in PLANAR_PIX_FMTS)


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
@given(size=sized(), seed=st.integers(0, 2**32 - 1), pix_fmt=st.sampled_from(DISPLAY_PIX_FMTS))
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
    import av

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
    # a planar pix_fmt carries one wire format; the error names the right one
    with pytest.raises(ConfigError, match="pix_fmt.*yuv422p12le"):
        to_wire(np.zeros(64, np.uint8), "yuv422p", make_fmt(Sampling.YCBCR_422, 12))


# ---------------------------------------------------------------- fast paths (issue: pixfmt speed)
#
# The references below are written from the RFC 4175 §4.3-4.4 / BT.601 text with Python
# integers and float64 arithmetic on small frames: slow and obvious, to pin the vectorized
# integer code.


def ref_unpack10(data: bytes) -> list[int]:
    """Big-endian 10-bit bit stream (RFC 4175 §4.3) to samples, one big integer."""
    n = len(data) * 8 // 10
    v = int.from_bytes(data, "big")
    return [(v >> (10 * (n - 1 - i))) & 0x3FF for i in range(n)]


def ref_pack10(samples: list[int]) -> bytes:
    v = 0
    for s in samples:
        v = (v << 10) | (s & 0x3FF)
    return v.to_bytes(len(samples) * 10 // 8, "big")


def ref_rgb_to_ycc(rgb: np.ndarray, depth: int) -> np.ndarray:
    """BT.601-7 §2.5: full-range RGB (8-bit) to narrow-range Y, Cb, Cr (float64)."""
    x = rgb.astype(np.float64) / 255
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    s = 1 << (depth - 8)
    return np.stack([(16 + 219 * y) * s, (128 + 224 * (b - y) / 1.772) * s,
                     (128 + 224 * (r - y) / 1.402) * s], axis=-1)


@settings(max_examples=25, deadline=None)
@given(size=sized(), seed=st.integers(0, 2**32 - 1))
def test_10bit_unpack_and_pack_match_the_bit_stream(size: tuple[int, int], seed: int) -> None:
    w, h = size
    rng = np.random.default_rng(seed)
    f422 = make_fmt(Sampling.YCBCR_422, 10, w, h)
    wire = rng.integers(0, 256, f422.frame_bytes, dtype=np.uint8)
    s = np.array(ref_unpack10(wire.tobytes())).reshape(h, w // 2, 4)  # Cb Y0 Cr Y1
    p10 = from_wire(wire, f422, "yuv422p10le")
    assert np.array_equal(p10[0, :, 0::2], s[..., 1]) and np.array_equal(p10[0, :, 1::2], s[..., 3])
    assert np.array_equal(p10[1, :, 0::2], s[..., 0]) and np.array_equal(p10[1, :, 1::2], s[..., 0])
    assert np.array_equal(p10[2, :, 0::2], s[..., 2])
    assert to_wire(p10, "yuv422p10le", f422).tobytes() == wire.tobytes()
    for sampling in (Sampling.YCBCR_444, Sampling.RGB):  # 15-octet pgroups of 4 pixels
        f = make_fmt(sampling, 10, w, h)
        wire = rng.integers(0, 256, f.frame_bytes, dtype=np.uint8)
        s = np.array(ref_unpack10(wire.tobytes())).reshape(h, w, 3)
        if sampling is Sampling.RGB:
            rgb = from_wire(wire, f, "rgb24")
            assert np.array_equal(rgb, (s * 255 + 511) // 1023)  # round(v * 255 / 1023)
            again = to_wire(rgb, "rgb24", f)
            want = ref_pack10(((rgb.astype(int) * 1023 + 127) // 255).reshape(-1).tolist())
            assert again.tobytes() == want
        else:
            y = from_wire(wire, f, "yuv422p10le")[0]
            assert np.array_equal(y, s[..., 1])  # Cb Y Cr


@settings(max_examples=25, deadline=None)
@given(size=sized(), seed=st.integers(0, 2**32 - 1))
def test_yuv420p_display_path_for_every_wire_format(size: tuple[int, int], seed: int) -> None:
    # The viewer's path: Y as is (10-bit: top 8 bits), chroma of the even lines, 4:4:4
    # chroma pairs averaged (rounded), RGB through BT.601.
    w, h = size
    rng = np.random.default_rng(seed)
    q = (h // 2) * (w // 2)
    for sampling, depth in SUPPORTED_VIDEO:
        if depth not in (8, 10) or (sampling is Sampling.YCBCR_420 and depth != 8):
            continue  # every depth against a bit-stream reference: test_pixfmt_depths.py
        fmt = make_fmt(sampling, depth, w, h)
        wire = rng.integers(0, 256, fmt.frame_bytes, dtype=np.uint8)
        out = from_wire(wire, fmt, "yuv420p")
        y, u, v = out[:h], out[h:].reshape(-1)[:q], out[h:].reshape(-1)[q:]
        if sampling is Sampling.RGB:
            rgb = from_wire(wire, fmt, "rgb24")
            ref = ref_rgb_to_ycc(rgb, 8)
            assert np.abs(y.astype(int) - np.rint(ref[..., 0])).max() <= 1
            pairs = (ref[0::2, 0::2, 1:] + ref[0::2, 1::2, 1:]) / 2
            assert np.abs(u.reshape(h // 2, w // 2) - np.rint(pairs[..., 0])).max() <= 1
            assert np.abs(v.reshape(h // 2, w // 2) - np.rint(pairs[..., 1])).max() <= 1
            continue
        if sampling is Sampling.YCBCR_420:
            g = wire.reshape(h // 2, w // 2, 6)
            ry = np.empty((h, w), np.uint8)
            ry[0::2, 0::2], ry[0::2, 1::2] = g[..., 0], g[..., 1]
            ry[1::2, 0::2], ry[1::2, 1::2] = g[..., 2], g[..., 3]
            assert np.array_equal(y, ry)
            assert np.array_equal(u, g[..., 4].reshape(-1))
            assert np.array_equal(v, g[..., 5].reshape(-1))
            continue
        if depth == 8:
            s = wire.astype(int)
        else:
            s = np.array(ref_unpack10(wire.tobytes()))
        if sampling is Sampling.YCBCR_422:
            s = s.reshape(h, w // 2, 4)
            ry, cb, cr = np.stack([s[..., 1], s[..., 3]], -1).reshape(h, w), s[..., 0], s[..., 2]
        else:
            s = s.reshape(h, w, 3)
            ry = s[..., 1]
            cb = (s[:, 0::2, 0] + s[:, 1::2, 0] + 1) // 2
            cr = (s[:, 0::2, 2] + s[:, 1::2, 2] + 1) // 2
        shift = depth - 8
        assert np.array_equal(y, ry >> shift)
        assert np.array_equal(u, (cb[0::2] >> shift).reshape(-1))
        assert np.array_equal(v, (cr[0::2] >> shift).reshape(-1))


def test_422_8bit_to_yuv420p_is_a_pure_reorder() -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 8, 4, 4)
    wire = np.arange(fmt.frame_bytes, dtype=np.uint8)  # row r: Cb Y0 Cr Y1 ... from 8r
    out = from_wire(wire, fmt, "yuv420p")
    px = wire.reshape(4, 2, 4)
    assert np.array_equal(out[:4].reshape(4, 2, 2), px[:, :, 1::2])
    assert out[4:].reshape(-1).tolist() == [0, 4, 16, 20, 2, 6, 18, 22]
    nv12 = from_wire(wire, fmt, "nv12")
    assert nv12[4:].reshape(-1).tolist() == [0, 2, 4, 6, 16, 18, 20, 22]


@settings(max_examples=20, deadline=None)
@given(size=sized(), seed=st.integers(0, 2**32 - 1))
def test_integer_bt601_matches_the_real_valued_matrix(size: tuple[int, int], seed: int) -> None:
    # Fixed point (2**16) against float64 BT.601: within one code value, and equal except
    # where the real value lies within 0.01 of a rounding edge (measured: 0.1 % of random
    # samples differ, all within 0.0033 of the edge; a count bound was a matter of luck
    # on small pictures).
    w, h = size
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for depth in (8, 10):
        fmt = make_fmt(Sampling.YCBCR_444, depth, w, h)
        wire = to_wire(rgb, "rgb24", fmt)
        got = (np.array(ref_unpack10(wire.tobytes())) if depth == 10
               else wire.astype(int)).reshape(h, w, 3)[..., [1, 0, 2]]
        exact = ref_rgb_to_ycc(rgb, depth)
        ref = np.rint(exact)
        assert np.abs(got - ref).max() <= 1
        by_edge = np.abs(exact - np.floor(exact) - 0.5) < 0.01
        assert not (got != ref)[~by_edge].any()
        # and back: YCbCr -> RGB against the inverse matrix
        back = from_wire(wire, fmt, "rgb24").astype(int)
        s = 1 << (depth - 8)
        yn = (got[..., 0] / s - 16) / 219
        cb, cr = (got[..., 1] / s - 128) / 224, (got[..., 2] / s - 128) / 224
        r, b = yn + 1.402 * cr, yn + 1.772 * cb
        g = (yn - 0.299 * r - 0.114 * b) / 0.587
        want = np.clip(np.rint(np.stack([r, g, b], -1) * 255), 0, 255)
        assert np.abs(back - want).max() <= 1


def test_rgb_depth_changes_are_exact_for_every_code() -> None:
    f10 = make_fmt(Sampling.RGB, 10, 256, 2)
    rgb = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2).repeat(2, axis=0)
    s = np.array(ref_unpack10(to_wire(rgb, "rgb24", f10).tobytes())).reshape(2, 256, 3)
    v = np.arange(256)
    assert np.array_equal(s[0, :, 0], (v * 1023 + 127) // 255)  # round(v * 1023 / 255)
    f10w = make_fmt(Sampling.RGB, 10, 1024, 2)
    codes = np.repeat(np.arange(1024)[:, None], 3, axis=1).reshape(-1).tolist() * 2
    wire = np.frombuffer(ref_pack10(codes), np.uint8)
    got = from_wire(wire, f10w, "rgb24")
    assert np.array_equal(got[0, :, 1], (np.arange(1024) * 255 + 511) // 1023)


def test_out_parameter_and_no_aliasing() -> None:
    fmt = make_fmt(Sampling.YCBCR_422, 8, 8, 4)
    wire = np.random.default_rng(5).integers(0, 256, fmt.frame_bytes, dtype=np.uint8)
    for pix_fmt in (*DISPLAY_PIX_FMTS, "yuv422p"):
        fresh = from_wire(wire, fmt, pix_fmt)
        assert not np.shares_memory(fresh, wire)
        buf = np.zeros_like(fresh)
        assert from_wire(wire, fmt, pix_fmt, out=buf) is buf
        assert np.array_equal(buf, fresh)
        wbuf = np.zeros(fmt.frame_bytes, np.uint8)
        assert to_wire(fresh, pix_fmt, fmt, out=wbuf) is wbuf
        assert np.array_equal(wbuf, to_wire(fresh, pix_fmt, fmt))
        assert not np.shares_memory(to_wire(fresh, pix_fmt, fmt), fresh)
    with pytest.raises(LocalProtocolError, match="out"):
        from_wire(wire, fmt, "rgb24", out=np.zeros((4, 8, 4), np.uint8))
    with pytest.raises(LocalProtocolError, match="out"):
        to_wire(np.zeros((4, 16), np.uint8), "uyvy422", fmt, out=np.zeros(3, np.uint8))
