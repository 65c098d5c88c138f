"""Every sampling x depth pair against a bit-stream reference of RFC 4175 §4.3-4.4.

The reference reads a wire row as one big integer and takes ``depth`` bits at a time:
the samples of a row are one continuous big-endian bit stream in which pgroups are only
an alignment unit (RFC 4175 §4.3; ``spec/ps322.md`` §6.1), in the sample order of
RFC 4175 §4.3/4.4: 4:2:2 ``Cb Y0 Cr Y1`` per pixel pair, 4:4:4 ``Cb Y Cr`` and RGB
``R G B`` per pixel, 4:2:0 ``Y00 Y01 Y10 Y11 Cb Cr`` per 2x2 block (a row covers two
lines). It is slow and obvious, and shares no code with :mod:`rtstream.proto.pixfmt`.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtstream.proto.formats import PHOTOMETRIC, SUPPORTED_VIDEO, Sampling, VideoFormat, sample_bits
from rtstream.proto.pixfmt import (
    PLANAR_PIX_FMTS,
    dicom_to_wire,
    from_wire,
    native_pix_fmt,
    to_wire,
    wire_to_dicom,
)

FORMATS = sorted(SUPPORTED_VIDEO, key=lambda sd: (sd[0].value, sd[1]))
ALL_SIXTEEN = [(s, d) for s in Sampling for d in (8, 10, 12, 16)]


def make_fmt(sampling: Sampling, depth: int, w: int, h: int) -> VideoFormat:
    return VideoFormat(sampling=sampling, depth=depth, width=w, height=h,
                       exactframerate=Fraction(25))


def ref_row_samples(row: bytes, depth: int) -> list[int]:
    n = len(row) * 8 // depth
    v = int.from_bytes(row, "big")
    total = len(row) * 8
    return [(v >> (total - depth * (i + 1))) & ((1 << depth) - 1) for i in range(n)]


def ref_planes(wire: np.ndarray, fmt: VideoFormat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Y, Cb, Cr) or (R, G, B) planes, chroma at the wire's subsampling."""
    w, h = fmt.width, fmt.height
    rows = wire.reshape(fmt.rows, fmt.row_bytes)
    s = fmt.sampling
    if s is Sampling.YCBCR_420:
        a, b, c = np.zeros((h, w), int), np.zeros((h // 2, w // 2), int), np.zeros((h // 2, w // 2), int)
    elif s is Sampling.YCBCR_422:
        a, b, c = np.zeros((h, w), int), np.zeros((h, w // 2), int), np.zeros((h, w // 2), int)
    else:
        a, b, c = np.zeros((h, w), int), np.zeros((h, w), int), np.zeros((h, w), int)
    for r in range(fmt.rows):
        smp = ref_row_samples(rows[r].tobytes(), fmt.depth)
        if s is Sampling.YCBCR_422:
            for x in range(w // 2):
                b[r, x], a[r, 2 * x], c[r, x], a[r, 2 * x + 1] = smp[4 * x : 4 * x + 4]
        elif s is Sampling.YCBCR_420:
            for x in range(w // 2):
                y00, y01, y10, y11, cb, cr = smp[6 * x : 6 * x + 6]
                a[2 * r, 2 * x], a[2 * r, 2 * x + 1] = y00, y01
                a[2 * r + 1, 2 * x], a[2 * r + 1, 2 * x + 1] = y10, y11
                b[r, x], c[r, x] = cb, cr
        elif s is Sampling.YCBCR_444:
            for x in range(w):
                b[r, x], a[r, x], c[r, x] = smp[3 * x : 3 * x + 3]
        else:
            for x in range(w):
                a[r, x], b[r, x], c[r, x] = smp[3 * x : 3 * x + 3]
    return a, b, c


@st.composite
def frames(draw: st.DrawFn) -> tuple[VideoFormat, np.ndarray]:
    sampling, depth = draw(st.sampled_from(FORMATS))
    probe = make_fmt(sampling, depth, 8, 2)
    unit = max(2, probe.pgroup_pixels_per_line)
    w = unit * draw(st.integers(1, 4))
    h = 2 * draw(st.integers(1, 3))
    fmt = make_fmt(sampling, depth, w, h)
    seed = draw(st.integers(0, 2**32 - 1))
    wire = np.random.default_rng(seed).integers(0, 256, fmt.frame_bytes, dtype=np.uint8)
    return fmt, wire


def test_all_sixteen_pairs_are_supported() -> None:
    assert set(ALL_SIXTEEN) == SUPPORTED_VIDEO
    for s, d in ALL_SIXTEEN:
        assert native_pix_fmt(make_fmt(s, d, 8, 2))


def _planar_planes(img: np.ndarray, fmt: VideoFormat) -> tuple[np.ndarray, ...]:
    """Planes of a planar (FFmpeg rawvideo layout) image, as (Y, Cb, Cr) / (R, G, B)."""
    w, h = fmt.width, fmt.height
    sx, sy = {Sampling.YCBCR_422: (2, 1), Sampling.YCBCR_420: (2, 2)}.get(fmt.sampling, (1, 1))
    n, q = w * h, (w // sx) * (h // sy)
    p0 = img[:n].reshape(h, w)
    p1 = img[n : n + q].reshape(h // sy, w // sx)
    p2 = img[n + q :].reshape(h // sy, w // sx)
    if fmt.sampling is Sampling.RGB:
        return p2, p0, p1  # FFmpeg gbrp: G, B, R
    return p0, p1, p2


@settings(max_examples=120, deadline=None)
@given(frames())
def test_native_pix_fmt_unpacks_the_bit_stream_and_packs_it_back(
    case: tuple[VideoFormat, np.ndarray],
) -> None:
    fmt, wire = case
    ref = ref_planes(wire, fmt)
    pix = native_pix_fmt(fmt)
    img = from_wire(wire, fmt, pix)
    if pix in PLANAR_PIX_FMTS:
        got = _planar_planes(img.reshape(-1), fmt)
    elif pix == "yuv422p10le":
        got = (img[0], img[1][:, 0::2], img[2][:, 0::2])
    elif pix == "uyvy422":
        got = (img[:, 1::2], img[:, 0::4], img[:, 2::4])
    elif pix == "yuv420p":
        q = fmt.width * fmt.height // 4
        flat = img.reshape(-1)[fmt.width * fmt.height :]
        got = (img[: fmt.height], flat[:q].reshape(fmt.height // 2, -1),
               flat[q:].reshape(fmt.height // 2, -1))
    else:  # rgb24
        got = (img[..., 0], img[..., 1], img[..., 2])
    for k in range(3):
        assert np.array_equal(got[k], ref[k]), f"plane {k} of {fmt.sampling.value} {fmt.depth}"
    assert to_wire(img, pix, fmt).tobytes() == wire.tobytes()


@settings(max_examples=80, deadline=None)
@given(frames())
def test_display_paths_take_the_top_bits(case: tuple[VideoFormat, np.ndarray]) -> None:
    # yuv420p (the viewer's path) from YCbCr: luma's top 8 bits; yuv422p10le: top 10.
    fmt, wire = case
    if fmt.sampling is Sampling.RGB:
        # RGB to rgb24: exact round(v * 255 / max)
        r, g, b = ref_planes(wire, fmt)
        top = (1 << fmt.depth) - 1
        want = np.stack([(p * 2 * 255 + top) // (2 * top) for p in (r, g, b)], -1)
        assert np.array_equal(from_wire(wire, fmt, "rgb24"), want)
        return
    y = ref_planes(wire, fmt)[0]
    out = from_wire(wire, fmt, "yuv420p")
    assert np.array_equal(out[: fmt.height], y >> (fmt.depth - 8))
    p10 = from_wire(wire, fmt, "yuv422p10le")
    shift = fmt.depth - 10
    assert np.array_equal(p10[0], y >> shift if shift >= 0 else y << -shift)


@settings(max_examples=80, deadline=None)
@given(frames())
def test_dicom_native_pixel_data_round_trip(case: tuple[VideoFormat, np.ndarray]) -> None:
    # PS3.5 A.8 / PS3.3 C.7.6.3.1: interleaved samples (Planar Configuration 0), RGB and
    # YBR_FULL per pixel, YBR_FULL_422 as Y0 Y1 Cb Cr per pair; 16-bit words little
    # endian (Explicit VR Little Endian) above 8 bits.
    fmt, wire = case
    pixels, attrs = wire_to_dicom(wire, fmt)
    alloc, stored, high = sample_bits(fmt.depth)
    assert (attrs["BitsAllocated"], attrs["BitsStored"], attrs["HighBit"]) == (alloc, stored, high)
    assert attrs["SamplesPerPixel"] == 3 and attrs["PlanarConfiguration"] == 0
    assert pixels.dtype == (np.uint8 if alloc == 8 else np.dtype("<u2"))
    a, b, c = ref_planes(wire, fmt)
    w, h = fmt.width, fmt.height
    if fmt.sampling is Sampling.RGB:
        assert attrs["PhotometricInterpretation"] == "RGB"
        assert np.array_equal(pixels.reshape(h, w, 3), np.stack([a, b, c], -1))
    elif fmt.sampling is Sampling.YCBCR_444:
        assert attrs["PhotometricInterpretation"] == "YBR_FULL"
        assert np.array_equal(pixels.reshape(h, w, 3), np.stack([a, b, c], -1))
    else:
        # 4:2:0 has no native DICOM form (YBR_PARTIAL_420 is for compressed pixel data):
        # stored as YBR_FULL_422 with each chroma line repeated, which loses nothing.
        assert attrs["PhotometricInterpretation"] == "YBR_FULL_422"
        if fmt.sampling is Sampling.YCBCR_420:
            b, c = np.repeat(b, 2, axis=0), np.repeat(c, 2, axis=0)
        want = np.stack([a[:, 0::2], a[:, 1::2], b, c], -1)
        assert np.array_equal(pixels.reshape(h, w // 2, 4), want)
    assert dicom_to_wire(pixels, fmt).tobytes() == wire.tobytes()
    assert dicom_to_wire(pixels.tobytes(), fmt).tobytes() == wire.tobytes()
    # every sampling as three full samples per pixel (chroma repeated), also lossless
    full, fattrs = wire_to_dicom(wire, fmt, full_chroma=True)
    want_pi = "RGB" if fmt.sampling is Sampling.RGB else "YBR_FULL"
    assert fattrs["PhotometricInterpretation"] == want_pi
    sy = 2 if fmt.sampling is Sampling.YCBCR_420 else 1
    sx = 1 if fmt.sampling in (Sampling.RGB, Sampling.YCBCR_444) else 2
    b0, c0 = ref_planes(wire, fmt)[1:]
    assert np.array_equal(full.reshape(h, w, 3)[..., 0], a)
    assert np.array_equal(full.reshape(h, w, 3)[..., 1], np.repeat(np.repeat(b0, sy, 0), sx, 1))
    assert np.array_equal(full.reshape(h, w, 3)[..., 2], np.repeat(np.repeat(c0, sy, 0), sx, 1))
    assert dicom_to_wire(full, fmt, full_chroma=True).tobytes() == wire.tobytes()


def test_photometric_table_is_ps35_a8() -> None:
    # spec/ps322.md §3.3 (PS3.5 A.8): the RTV description of each sampling.
    assert PHOTOMETRIC == {
        Sampling.RGB: "RGB",
        Sampling.YCBCR_444: "YBR_FULL",
        Sampling.YCBCR_422: "YBR_FULL_422",
        Sampling.YCBCR_420: "YBR_PARTIAL_420",
    }
    assert [sample_bits(d) for d in (8, 10, 12, 16)] == [
        (8, 8, 7), (16, 10, 9), (16, 12, 11), (16, 16, 15)
    ]


@pytest.mark.parametrize(("sampling", "depth"), FORMATS)
def test_colour_conversions_reach_every_format(sampling: Sampling, depth: int) -> None:
    # rgb24 in, wire out, rgb24 back: BT.601 within a few codes (12/16-bit RGB exact).
    fmt = make_fmt(sampling, depth, 16, 4)
    rng = np.random.default_rng(depth)
    # smooth picture: 4:2:x chroma subsampling then costs nothing
    rgb = np.repeat(np.repeat(rng.integers(0, 256, (2, 2, 3), dtype=np.uint8), 2, 0), 8, 1)
    back = from_wire(to_wire(rgb, "rgb24", fmt), fmt, "rgb24")
    tol = 0 if sampling is Sampling.RGB else 3
    assert np.abs(back.astype(int) - rgb).max() <= tol
    with pytest.raises(Exception, match="dicom"):
        dicom_to_wire(np.zeros(3, np.uint8), fmt)
