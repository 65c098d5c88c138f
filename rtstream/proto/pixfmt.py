"""Conversions between common in-memory frame layouts and ST 2110-20 pgroup wire order.

Theory of operation
-------------------
Every conversion works on *planes*: three 2-D integer arrays, either YCbCr (Y at full
resolution, Cb/Cr subsampled by ``(sx, sy)``) or RGB, at 8, 10, 12 or 16 bits. Both the
wire and the in-memory layouts are described as *views* onto such planes, so most of the
work is numpy slicing:

* A wire frame is seen as a ``(rows, pgroups, pgroup_bytes)`` grid. Each sample position
  of a pgroup (``Cb Y0 Cr Y1`` for 4:2:2, RFC 4175 §4.3; ``Y00 Y01 Y10 Y11 Cb Cr`` per
  2x2 block for 4:2:0, §4.4, two blocks side by side in a 10-bit pgroup) maps to a
  strided view of one plane; 8-bit samples are copied between the two with one
  assignment each.
* Deeper samples are one big-endian bit stream per row (RFC 4175 §4.3, PS3.5 A.8):
  sample ``j`` of a ``d``-bit pgroup starts at bit ``j * d``, so it is the big-endian
  16-bit word at octet ``j * d // 8`` shifted right by ``16 - d - j * d % 8`` and masked
  to ``d`` bits -- one unaligned ``>u2`` view, a shift and a mask per sample position.
  Packing is the reverse: 16-bit samples are plain ``>u2`` stores, 12-bit pairs one
  octet and one word, 10-bit quads two words and one octet.
* Planar pix_fmts in FFmpeg's rawvideo layout (:data:`PLANAR_PIX_FMTS`, e.g.
  ``yuv422p12le``, ``gbrp16le``) carry exactly one wire format each; converting to and
  from them only packs and unpacks samples, so it is lossless
  (:func:`native_pix_fmt` names the lossless pix_fmt of every format).
* Native DICOM Pixel Data (:func:`wire_to_dicom`, :func:`dicom_to_wire`) is the same
  samples interleaved per pixel at Bits Allocated 8 or 16 (PS3.5 §8.2.13, A.8).
* Pure reorders -- 4:2:2 8-bit <-> ``uyvy422``, 4:2:2 -> ``yuv420p``/``nv12`` (chroma of
  the even lines), 4:2:0 8-bit <-> ``yuv420p``/``nv12``, RGB 8-bit <-> ``rgb24`` -- do no
  arithmetic at all.

Colour conversion uses the BT.601 matrix (the only colorimetry PS3.5 §8.2.13 permits for
RTV) with narrow-range ("video range") YCbCr: Y in 16..235 and Cb/Cr in 16..240 at 8 bits,
times ``2 ** (d - 8)`` at ``d`` bits (ITU-R BT.601-7 §2.5.3); RGB is full range. The
kernels compute at up to 12 bits (int32 range); 16-bit results are scaled from 12. It is integer fixed point:
coefficients scaled by 2**16, int32 multiply-adds and a rounding right shift, computed in
bands of rows so the int32 temporaries stay in the CPU cache. Results are the exactly
rounded real-valued matrix product except where a value lies within about 0.01 of a
rounding boundary.

Depth changes: narrow-range YCbCr 10 -> 8 bits drops the two least significant bits
(8-bit code = top eight bits of the 10-bit code; nominal levels 64/940/960 map exactly to
16/235/240) and 8 -> 10 appends two zero bits; full-range RGB maps
``round(v * 1023 / 255)`` and ``round(v * 255 / 1023)`` (exact integer forms), so black
and white map exactly and 8 -> 10 -> 8 is lossless.

Chroma resampling: horizontally, pairs are averaged (rounded); vertically (4:2:2 to
4:2:0) the even line is taken, which is what makes 4:2:2 -> ``yuv420p`` a pure reorder;
upsampling repeats samples (broadcast inside the colour kernels, so without copies).

Results never share memory with the input (the receiver and sender reuse their frame
buffers); pass ``out=`` to fill a preallocated array instead of a new one.

Array shapes follow PyAV 18's ``VideoFrame.to_ndarray``/``from_ndarray``:

=============== ============================================================
``rgb24``       ``(H, W, 3)`` uint8
``yuv420p``     ``(H * 3 // 2, W)`` uint8: Y plane, then U, then V planes
``nv12``        ``(H * 3 // 2, W)`` uint8: Y plane, then interleaved UV rows
``yuv422p10le`` ``(3, H, W)`` uint16: Y, U, V with chroma repeated to full width
``uyvy422``     ``(H, W * 2)`` uint8: ``U Y0 V Y1`` (PyAV cannot make it; FFmpeg can)
planar          ``(n,)`` uint8/uint16: the planes one after another (FFmpeg rawvideo)
=============== ============================================================
"""

from __future__ import annotations

import numpy as np

from rtstream.errors import ConfigError, LocalProtocolError
from rtstream.proto.formats import PHOTOMETRIC, SUPPORTED_VIDEO, Sampling, VideoFormat, sample_bits

#: Planar formats in FFmpeg's rawvideo layout (the planes one after another, no padding,
#: little-endian 16-bit words above 8 bits; ``gbrp*`` planes in FFmpeg's G, B, R order),
#: each carrying exactly one wire sampling and depth, so conversions are lossless.
PLANAR_PIX_FMTS: dict[str, tuple[Sampling, int]] = {
    "yuv422p": (Sampling.YCBCR_422, 8),
    "yuv422p12le": (Sampling.YCBCR_422, 12),
    "yuv422p16le": (Sampling.YCBCR_422, 16),
    "yuv444p": (Sampling.YCBCR_444, 8),
    "yuv444p10le": (Sampling.YCBCR_444, 10),
    "yuv444p12le": (Sampling.YCBCR_444, 12),
    "yuv444p16le": (Sampling.YCBCR_444, 16),
    "yuv420p10le": (Sampling.YCBCR_420, 10),
    "yuv420p12le": (Sampling.YCBCR_420, 12),
    "yuv420p16le": (Sampling.YCBCR_420, 16),
    "gbrp": (Sampling.RGB, 8),
    "gbrp10le": (Sampling.RGB, 10),
    "gbrp12le": (Sampling.RGB, 12),
    "gbrp16le": (Sampling.RGB, 16),
}

PIX_FMTS = ("rgb24", "yuv420p", "nv12", "yuv422p10le", "uyvy422", *PLANAR_PIX_FMTS)

# The lossless pix_fmt of each wire format (PyAV-shaped ones where they exist).
_NATIVE: dict[tuple[Sampling, int], str] = {
    (Sampling.YCBCR_422, 8): "uyvy422",
    (Sampling.YCBCR_422, 10): "yuv422p10le",
    (Sampling.YCBCR_420, 8): "yuv420p",
    (Sampling.RGB, 8): "rgb24",
    **{v: k for k, v in PLANAR_PIX_FMTS.items()
       if v not in ((Sampling.YCBCR_422, 8), (Sampling.RGB, 8))},
}


def native_pix_fmt(fmt: VideoFormat) -> str:
    """The pix_fmt that carries ``fmt``'s sampling and depth without loss.

    ``to_wire(from_wire(w, fmt, p), p, fmt) == w`` for every wire frame ``w`` (and the
    reverse for every in-range image), with ``p = native_pix_fmt(fmt)``.
    """
    return _NATIVE[(fmt.sampling, fmt.depth)]

_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB

_SUBSAMPLING = {
    Sampling.YCBCR_444: (1, 1),
    Sampling.YCBCR_422: (2, 1),
    Sampling.YCBCR_420: (2, 2),
}

_U8, _U16, _I32 = np.uint8, np.uint16, np.int32
_FIX = 16  # fractional bits of the colour-matrix coefficients
_BAND_PIXELS = 1 << 16  # pixels per band in the colour kernels (int32 temporaries in L2)


class _Planes:
    """Three planes: ``kind`` "ycc" (Y, Cb, Cr; chroma subsampled by sx, sy) or "rgb"."""

    __slots__ = ("p", "kind", "depth", "sx", "sy")

    def __init__(
        self,
        p: tuple[np.ndarray, np.ndarray, np.ndarray],
        kind: str,
        depth: int,
        sx: int = 1,
        sy: int = 1,
    ) -> None:
        self.p, self.kind, self.depth, self.sx, self.sy = p, kind, depth, sx, sy


# --------------------------------------------------------------------------- checks


def _check_fmt(fmt: VideoFormat) -> None:
    if (fmt.sampling, fmt.depth) not in SUPPORTED_VIDEO:
        raise ConfigError("video.depth", fmt.depth, f"a supported depth for {fmt.sampling.value}")
    if fmt.width % 2 or fmt.height % 2:
        raise ConfigError("video.width/height", (fmt.width, fmt.height), "even dimensions")


def _check_pix_fmt(pix_fmt: str) -> None:
    if pix_fmt not in PIX_FMTS:
        raise ConfigError("pix_fmt", pix_fmt, "one of " + ", ".join(PIX_FMTS))


def _planar_size(pix_fmt: str, w: int, h: int) -> tuple[int, int, int, int]:
    """(luma samples, chroma width, chroma height, depth) of a planar pix_fmt."""
    samp, depth = PLANAR_PIX_FMTS[pix_fmt]
    sx, sy = _SUBSAMPLING.get(samp, (1, 1))
    return h * w, w // sx, h // sy, depth


def _pix_shape(pix_fmt: str, w: int, h: int) -> tuple[tuple[int, ...], type]:
    if pix_fmt in PLANAR_PIX_FMTS:
        n, cw, ch, depth = _planar_size(pix_fmt, w, h)
        return (n + 2 * cw * ch,), (_U8 if depth == 8 else _U16)
    if pix_fmt == "rgb24":
        return (h, w, 3), _U8
    if pix_fmt in ("yuv420p", "nv12"):
        return (h * 3 // 2, w), _U8
    if pix_fmt == "yuv422p10le":
        return (3, h, w), _U16
    return (h, w * 2), _U8


def _out(out: np.ndarray | None, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise LocalProtocolError(
            f"out: need a C-contiguous {shape} {np.dtype(dtype)} array, "
            f"got {out.shape} {out.dtype}"
        )
    return out


# --------------------------------------------------------------------------- pix_fmt planes


def _pix_planes(image: np.ndarray, pix_fmt: str, w: int, h: int) -> _Planes:
    """Views of the planes of an in-memory frame (PyAV layouts, module docstring).

    For ``yuv422p10le`` the chroma views are the even columns (PyAV repeats each chroma
    sample); a writer must fill the odd columns afterwards (:func:`_fill_422p10`).
    """
    if pix_fmt in PLANAR_PIX_FMTS:
        samp, depth = PLANAR_PIX_FMTS[pix_fmt]
        n, cw, ch, _ = _planar_size(pix_fmt, w, h)
        flat = image.reshape(-1)
        a = flat[:n].reshape(h, w)
        b = flat[n : n + cw * ch].reshape(ch, cw)
        c = flat[n + cw * ch :].reshape(ch, cw)
        if samp is Sampling.RGB:
            return _Planes((c, a, b), "rgb", depth)  # FFmpeg's planes are G, B, R
        sx, sy = _SUBSAMPLING[samp]
        return _Planes((a, b, c), "ycc", depth, sx, sy)
    if pix_fmt == "rgb24":
        return _Planes((image[..., 0], image[..., 1], image[..., 2]), "rgb", 8)
    if pix_fmt == "yuv420p":
        flat = image.reshape(-1)
        q = (h // 2) * (w // 2)
        y = flat[: h * w].reshape(h, w)
        u = flat[h * w : h * w + q].reshape(h // 2, w // 2)
        v = flat[h * w + q : h * w + 2 * q].reshape(h // 2, w // 2)
        return _Planes((y, u, v), "ycc", 8, 2, 2)
    if pix_fmt == "nv12":
        uv = image[h:]
        return _Planes((image[:h], uv[:, 0::2], uv[:, 1::2]), "ycc", 8, 2, 2)
    if pix_fmt == "yuv422p10le":
        return _Planes((image[0], image[1][:, 0::2], image[2][:, 0::2]), "ycc", 10, 2, 1)
    return _Planes((image[:, 1::2], image[:, 0::4], image[:, 2::4]), "ycc", 8, 2, 1)


def _fill_422p10(image: np.ndarray) -> None:
    """Repeat the chroma of a ``yuv422p10le`` array into its odd columns (PyAV layout)."""
    image[1:, :, 1::2] = image[1:, :, 0::2]


# --------------------------------------------------------------------------- wire samples


def _grid(buf: np.ndarray, fmt: VideoFormat) -> np.ndarray:
    """A wire frame as ``(rows, pgroups per row, pgroup octets)`` (RFC 4175 §4.3-4.4)."""
    return buf.reshape(fmt.rows, fmt.row_bytes // fmt.pgroup_bytes, fmt.pgroup_bytes)


def _be16(grid: np.ndarray, offset: int) -> np.ndarray:
    """Big-endian 16-bit view at octet ``offset`` of every pgroup (unaligned, strided)."""
    return np.ndarray(
        grid.shape[:2], dtype=">u2", buffer=grid, offset=offset, strides=grid.strides[:2]
    )


def _sample_views(fmt: VideoFormat, pl: _Planes) -> list[np.ndarray]:
    """Per sample position of a pgroup, the ``(rows, pgroups)`` view of its plane.

    The planes must have the wire's subsampling: 4:2:2 ``Cb Y0 Cr Y1``; 4:4:4 ``Cb Y Cr``
    and RGB ``R G B`` per pixel (four pixels per pgroup at 10 bits); 4:2:0
    ``Y00 Y01 Y10 Y11 Cb Cr`` per 2x2 block (RFC 4175 §4.3-4.4, PS3.5 A.8).
    """
    a, b, c = pl.p
    if fmt.sampling is Sampling.YCBCR_422:
        return [b, a[:, 0::2], c, a[:, 1::2]]
    if fmt.sampling is Sampling.YCBCR_420:
        # k 2x2 blocks side by side per pgroup (k = 2 at 10 bits: 15 octets, 8 pixels)
        k = fmt.pgroup_pixels // 4
        out: list[np.ndarray] = []
        for m in range(k):
            out += [a[0::2, 2 * m :: 2 * k], a[0::2, 2 * m + 1 :: 2 * k],
                    a[1::2, 2 * m :: 2 * k], a[1::2, 2 * m + 1 :: 2 * k],
                    b[:, m::k], c[:, m::k]]
        return out
    comps = (b, a, c) if fmt.sampling is Sampling.YCBCR_444 else (a, b, c)
    n = fmt.pgroup_pixels
    return [comps[j % 3][:, j // 3 :: n] for j in range(3 * n)]


def _read(
    grid: np.ndarray, fmt: VideoFormat, j: int, dest: np.ndarray, bits: int,
    rows: slice = slice(None),
) -> None:
    """Sample position ``j`` of the pgroups (SRD ``rows``) into ``dest`` at ``bits`` bits.

    Samples of ``d`` = 10, 12 or 16 bits are one big-endian bit stream per pgroup (RFC
    4175 §4.3, ST 2110-20 §6.2): sample ``j`` starts at bit ``j * d``, so it is the
    big-endian 16-bit word at octet ``j * d // 8`` shifted right by ``16 - d - j * d % 8``
    (the word never crosses the pgroup's end). A depth change is a shift (narrow-range
    YCbCr codes scale by powers of two, BT.601-7 §2.5.3).
    """
    d = fmt.depth
    if d == 8:
        src = grid[rows, :, j]
        if bits == 8:
            np.copyto(dest, src)
        else:
            np.left_shift(src, bits - 8, out=dest, dtype=_U16, casting="unsafe")
        return
    bit = j * d
    word = _be16(grid, bit // 8)[rows]
    sh = 16 - d - bit % 8
    if bits >= d:
        np.right_shift(word, sh, out=dest, dtype=_U16, casting="unsafe")
        if bit % 8:
            np.bitwise_and(dest, (1 << d) - 1, out=dest)
        if bits > d:
            np.left_shift(dest, bits - d, out=dest)
        return
    # fewer bits: the top ``bits`` of the sample; a uint8 store drops the preceding
    # sample's bits by itself
    np.right_shift(word, sh + d - bits, out=dest, dtype=_U16, casting="unsafe")
    if bit % 8 and dest.dtype != _U8:
        np.bitwise_and(dest, (1 << bits) - 1, out=dest)


def _read_planes(grid: np.ndarray, fmt: VideoFormat, dests: _Planes, bits: int) -> None:
    for j, dest in enumerate(_sample_views(fmt, dests)):
        _read(grid, fmt, j, dest, bits)


def _at_depth(s: np.ndarray, depth: int, to: int) -> np.ndarray:
    """Samples ``s`` of ``depth`` bits rescaled to ``to`` bits by a shift (YCbCr codes,
    BT.601-7 §2.5.3; RGB callers rescale exactly beforehand, so depths agree)."""
    if depth == to:
        return s
    out: np.ndarray
    if depth < to:
        out = np.left_shift(s, to - depth, dtype=_U16)
    else:
        out = np.right_shift(s, depth - to, dtype=_U16)
    return out


def _write(grid: np.ndarray, fmt: VideoFormat, srcs: list[np.ndarray], depth: int) -> None:
    """Serialize sample arrays (at ``depth`` bits; see :func:`_sample_views`) into pgroups.

    The bit stream of :func:`_read`: 16-bit samples are big-endian words; 12-bit pairs
    are one octet and one word (``s0[11:4]``, then ``s0[3:0] s1[11:0]``); 10-bit quads
    two words and one octet.
    """
    d = fmt.depth
    if d == 8:
        for j, s in enumerate(srcs):
            if depth == 8:
                np.copyto(grid[:, :, j], s)
            else:
                np.right_shift(s, depth - 8, out=grid[:, :, j], casting="unsafe")
        return
    srcs = [_at_depth(s, depth, d) for s in srcs]
    if d == 16:
        for j, s in enumerate(srcs):
            np.copyto(_be16(grid, 2 * j), s, casting="unsafe")
        return
    shape = grid.shape[:2]
    t = np.empty(shape, _U16)
    u = np.empty(shape, _U16)
    if d == 12:
        for g in range(len(srcs) // 2):
            s0, s1 = srcs[2 * g : 2 * g + 2]
            np.right_shift(s0, 4, out=grid[:, :, 3 * g], casting="unsafe")
            np.left_shift(s0, 12, out=t, dtype=_U16, casting="unsafe")
            np.bitwise_and(s1, 0xFFF, out=u, dtype=_U16, casting="unsafe")
            t |= u
            np.copyto(_be16(grid, 3 * g + 1), t)
        return
    for g in range(len(srcs) // 4):
        s0, s1, s2, s3 = srcs[4 * g : 4 * g + 4]
        # octets 0-1: s0 (10 bits) then the top 6 bits of s1
        np.left_shift(s0, 6, out=t, dtype=_U16, casting="unsafe")
        np.right_shift(s1, 4, out=u, dtype=_U16, casting="unsafe")
        u &= 0x3F
        t |= u
        np.copyto(_be16(grid, 5 * g), t)
        # octets 2-3: the low 4 bits of s1, s2, the top 2 bits of s3
        np.left_shift(s1, 12, out=t, dtype=_U16, casting="unsafe")
        np.left_shift(s2, 2, out=u, dtype=_U16, casting="unsafe")
        u &= 0xFFC
        t |= u
        np.right_shift(s3, 8, out=u, dtype=_U16, casting="unsafe")
        u &= 0x3
        t |= u
        np.copyto(_be16(grid, 5 * g + 2), t)
        # octet 4: the low 8 bits of s3
        np.copyto(grid[:, :, 5 * g + 4], s3, casting="unsafe")


def _wire_planes(grid: np.ndarray, fmt: VideoFormat, bits: int | None = None) -> _Planes:
    """The wire frame's planes at its own sampling and at ``bits`` bits (default: the
    wire's depth); views when 8-bit and not 4:2:0."""
    h, w, d = fmt.height, fmt.width, fmt.depth
    bits = d if bits is None else bits
    kind = "rgb" if fmt.sampling is Sampling.RGB else "ycc"
    sx, sy = _SUBSAMPLING.get(fmt.sampling, (1, 1))
    if d == 8 and bits == 8 and fmt.sampling is Sampling.YCBCR_422:
        flat = grid.reshape(h, 2 * w)
        return _Planes((flat[:, 1::2], flat[:, 0::4], flat[:, 2::4]), kind, 8, 2, 1)
    if d == 8 and bits == 8 and fmt.sampling is Sampling.YCBCR_444:
        return _Planes((grid[..., 1], grid[..., 0], grid[..., 2]), kind, 8)
    if d == 8 and bits == 8 and fmt.sampling is Sampling.RGB:
        return _Planes((grid[..., 0], grid[..., 1], grid[..., 2]), kind, 8)
    dt = _U8 if bits == 8 else _U16
    pl = _Planes(
        (np.empty((h, w), dt), np.empty((h // sy, w // sx), dt),
         np.empty((h // sy, w // sx), dt)),
        kind, bits, sx, sy,
    )
    _read_planes(grid, fmt, pl, bits)
    return pl


# --------------------------------------------------------------------------- colour kernels


def _band_rows(w: int, sy: int) -> int:
    """Rows per band of about :data:`_BAND_PIXELS` pixels (even with vertical subsampling)."""
    rows = max(2, _BAND_PIXELS // w)
    return rows - rows % 2 if sy == 2 else rows


def _fix(x: float) -> int:
    return int(round(x * (1 << _FIX)))


def _rgb_to_ycc(src: _Planes, dest: _Planes) -> None:
    """BT.601 full-range RGB to narrow-range YCbCr (BT.601-7 §2.5.1-2.5.3), any chroma.

    Chroma is computed from the sum of each horizontal pair of RGB pixels (the division
    by two folded into the final shift) on the even lines when ``dest.sy`` is 2.
    """
    r, g, b = src.p
    yd, cbd, crd = dest.p
    mr = (1 << src.depth) - 1
    s = 1 << (dest.depth - 8)
    sx, sy = dest.sx, dest.sy
    ky = 219 * s / mr
    cy = (_fix(_KR * ky), _fix(_KG * ky), _fix(_KB * ky))
    offy = (16 * s << _FIX) + (1 << (_FIX - 1))
    sh = _FIX + (sx - 1)  # pair sums carry one extra bit
    kc = 224 * s / mr
    ccb = (_fix(-_KR / (2 - 2 * _KB) * kc), _fix(-_KG / (2 - 2 * _KB) * kc), _fix(0.5 * kc))
    ccr = (_fix(0.5 * kc), _fix(-_KG / (2 - 2 * _KR) * kc), _fix(-_KB / (2 - 2 * _KR) * kc))
    offc = (128 * s << sh) + (1 << (sh - 1))
    h, w = yd.shape
    step = _band_rows(w, sy)
    acc = np.empty((step, w), _I32)
    tmp = np.empty((step, w), _I32)
    cw = w // sx
    cstep = -(-step // sy)
    csum = [np.empty((cstep, cw), _I32) for _ in range(3)]
    cacc = np.empty((cstep, cw), _I32)
    ctmp = np.empty((cstep, cw), _I32)
    for a in range(0, h, step):
        e = min(h, a + step)
        n = e - a
        planes = (r[a:e], g[a:e], b[a:e])
        ac, tm = acc[:n], tmp[:n]
        np.multiply(planes[0], cy[0], out=ac, dtype=_I32)
        for p, c in zip(planes[1:], cy[1:], strict=True):
            np.multiply(p, c, out=tm, dtype=_I32)
            ac += tm
        ac += offy
        ac >>= _FIX
        np.copyto(yd[a:e], ac, casting="unsafe")
        ca, ce = a // sy, -(-e // sy)
        cn = ce - ca
        chroma: list[np.ndarray] = []
        for p, cs in zip(planes, csum, strict=True):
            rows = p[::sy]
            if sx == 2:
                np.add(rows[:, 0::2], rows[:, 1::2], out=cs[:cn], dtype=_I32)
                chroma.append(cs[:cn])
            else:
                chroma.append(rows)
        for coef, dst in ((ccb, cbd), (ccr, crd)):
            cac, ctm = cacc[:cn], ctmp[:cn]
            np.multiply(chroma[0], coef[0], out=cac, dtype=_I32)
            for p, c in zip(chroma[1:], coef[1:], strict=True):
                np.multiply(p, c, out=ctm, dtype=_I32)
                cac += ctm
            cac += offc
            cac >>= sh
            np.copyto(dst[ca:ce], cac, casting="unsafe")


def _ycc_to_rgb(src: _Planes, dest: _Planes) -> None:
    """Narrow-range BT.601 YCbCr (any subsampling, 8/10 bits) to full-range RGB.

    Chroma terms are computed at chroma resolution and broadcast over the luma they
    cover (upsampling by repetition without copies); results are clipped to range.
    """
    yp, cbp, crp = src.p
    s = 1 << (src.depth - 8)
    top = (1 << dest.depth) - 1
    sx, sy = src.sx, src.sy
    ky = top / (219 * s)
    kc = top / (224 * s)
    cy = _fix(ky)
    offy = -16 * s * cy + (1 << (_FIX - 1))
    c_rv = _fix(2 * (1 - _KR) * kc)
    c_bu = _fix(2 * (1 - _KB) * kc)
    c_gu = _fix(-2 * (1 - _KB) * _KB / _KG * kc)
    c_gv = _fix(-2 * (1 - _KR) * _KR / _KG * kc)
    h, w = yp.shape
    cw = w // sx
    step = _band_rows(w, sy)
    cstep = step // sy
    yacc = np.empty((step, w), _I32)
    obuf = np.empty((step, w), _I32)
    cb32 = np.empty((cstep, cw), _I32)
    cr32 = np.empty((cstep, cw), _I32)
    terms = [np.empty((cstep, cw), _I32) for _ in range(3)]
    for a in range(0, h, step):
        e = min(h, a + step)
        n = e - a
        ca, ce = a // sy, e // sy
        cn = ce - ca
        ya = yacc[:n]
        np.multiply(yp[a:e], cy, out=ya, dtype=_I32)
        ya += offy
        cb, cr = cb32[:cn], cr32[:cn]
        np.subtract(cbp[ca:ce], 128 * s, out=cb, dtype=_I32)
        np.subtract(crp[ca:ce], 128 * s, out=cr, dtype=_I32)
        rt, gt, bt = (t[:cn] for t in terms)
        np.multiply(cr, c_rv, out=rt)
        np.multiply(cb, c_bu, out=bt)
        np.multiply(cb, c_gu, out=gt)
        np.multiply(cr, c_gv, out=cb)  # cb is no longer needed
        gt += cb
        ob = obuf[:n]
        y4 = ya.reshape(cn, sy, cw, sx)
        o4 = ob.reshape(cn, sy, cw, sx)
        for term, dst in zip((rt, gt, bt), dest.p, strict=True):
            np.add(y4, term.reshape(cn, 1, cw, 1), out=o4)
            ob >>= _FIX
            np.clip(ob, 0, top, out=ob)
            np.copyto(dst[a:e], ob, casting="unsafe")


def _rgb_depth(src: np.ndarray, dest: np.ndarray, sdepth: int, ddepth: int = -1) -> None:
    """Full-range RGB depth change, exact ``round(v * dmax / smax)``.

    Both arrays C-contiguous and the same shape; done in bands (scratch in cache).
    8 <-> 10 bits use int32 forms checked against the rational ones for every input
    value; other pairs the rational form itself in int64.
    """
    if ddepth < 0:
        ddepth = 10 if sdepth == 8 else 8
    s, d = src.reshape(-1), dest.reshape(-1)
    if sdepth == ddepth:
        np.copyto(d, s, casting="unsafe")
        return
    band = 3 * _BAND_PIXELS
    if (sdepth, ddepth) in ((8, 10), (10, 8)):
        # 8 -> 10: (v * 1023 + 127) // 255; 10 -> 8: (v * 255 + 511) // 1023
        mul, add, shift = (1027, 129, 8) if sdepth == 8 else (16336, 1 << 15, 16)
        t = np.empty(band, _I32)
        for a in range(0, s.size, band):
            e = min(s.size, a + band)
            tb = t[: e - a]
            np.multiply(s[a:e], mul, out=tb, dtype=_I32)
            tb += add
            np.right_shift(tb, shift, out=d[a:e], casting="unsafe")
        return
    smax, dmax = (1 << sdepth) - 1, (1 << ddepth) - 1
    t64 = np.empty(band, np.int64)
    for a in range(0, s.size, band):
        e = min(s.size, a + band)
        wide = t64[: e - a]
        np.multiply(s[a:e], 2 * dmax, out=wide, dtype=np.int64)
        wide += smax
        wide //= 2 * smax
        np.copyto(d[a:e], wide, casting="unsafe")


def _ycc_resample_to(src: _Planes, sx: int, sy: int) -> tuple[np.ndarray, np.ndarray]:
    """Chroma planes of ``src`` at subsampling (sx, sy): repeat up, even lines down.

    Only used with ``src.sx == 2`` (every YCbCr pix_fmt is at least 4:2:2), so no
    horizontal averaging is needed here.
    """
    out = []
    for c in src.p[1:]:
        if src.sy == 2 and sy == 1:
            c = np.repeat(c, 2, axis=0)
        elif src.sy == 1 and sy == 2:
            c = c[0::2]
        if src.sx == 2 and sx == 1:
            c = np.repeat(c, 2, axis=1)
        out.append(c)
    return out[0], out[1]


# --------------------------------------------------------------------------- public API


def _planar_match(pix_fmt: str, fmt: VideoFormat) -> None:
    if PLANAR_PIX_FMTS[pix_fmt] != (fmt.sampling, fmt.depth):
        raise ConfigError(
            "pix_fmt", pix_fmt,
            f"{native_pix_fmt(fmt)} for {fmt.sampling.value} {fmt.depth}-bit (a planar "
            "pix_fmt carries only its own sampling and depth)",
        )


def _rgb_planes(h: int, w: int, depth: int) -> tuple[np.ndarray, _Planes]:
    """An ``(h, w, 3)`` RGB array and its planes."""
    arr = np.empty((h, w, 3), _U8 if depth == 8 else _U16)
    return arr, _Planes((arr[..., 0], arr[..., 1], arr[..., 2]), "rgb", depth)


def _ycc_planes(h: int, w: int, sx: int, sy: int, depth: int) -> _Planes:
    dt = _U8 if depth == 8 else _U16
    return _Planes(
        (np.empty((h, w), dt), np.empty((h // sy, w // sx), dt),
         np.empty((h // sy, w // sx), dt)),
        "ycc", depth, sx, sy,
    )


def to_wire(
    image: np.ndarray, pix_fmt: str, fmt: VideoFormat, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Convert a frame to ST 2110-20 pgroup order.

    Parameters
    ----------
    image : numpy.ndarray
        In the layout of ``pix_fmt`` (see the module docstring).
    pix_fmt : str
        One of :data:`PIX_FMTS`; a planar one (:data:`PLANAR_PIX_FMTS`) only for the
        wire format it carries.
    fmt : VideoFormat
        The wire format (any sampling and depth; even width and height).
    out : numpy.ndarray, optional
        A C-contiguous ``(fmt.frame_bytes,)`` uint8 array to fill and return.

    Returns
    -------
    numpy.ndarray
        ``fmt.frame_bytes`` uint8, rows top to bottom (RFC 4175 §4.3).

    Notes
    -----
    Colour conversions to 12- and 16-bit wire samples are computed at 12 bits (the
    fixed-point kernels' range) and scaled: YCbCr by a shift, RGB exactly.
    """
    _check_fmt(fmt)
    _check_pix_fmt(pix_fmt)
    w, h, d = fmt.width, fmt.height, fmt.depth
    shape, dtype = _pix_shape(pix_fmt, w, h)
    if image.shape != shape or image.dtype != dtype:
        raise LocalProtocolError(
            f"image: {pix_fmt} needs shape {shape} {np.dtype(dtype)}, "
            f"got {image.shape} {image.dtype}"
        )
    wire = _out(out, (fmt.frame_bytes,), _U8)
    grid = _grid(wire, fmt)
    if (pix_fmt, fmt.sampling, d) in (("uyvy422", Sampling.YCBCR_422, 8),
                                      ("rgb24", Sampling.RGB, 8)):
        np.copyto(wire, image.reshape(-1))  # the same bytes (pure reorder)
        return wire
    src = _pix_planes(image, pix_fmt, w, h)
    if pix_fmt in PLANAR_PIX_FMTS:
        _planar_match(pix_fmt, fmt)
        _write(grid, fmt, _sample_views(fmt, src), d)
        return wire
    kd = min(d, 12)  # colour kernels work at up to 12 bits
    if fmt.sampling is Sampling.RGB:
        if src.kind == "rgb":  # rgb24 -> RGB at more bits: exact rescale
            rgbd, wpl = _rgb_planes(h, w, d)
            _rgb_depth(np.ascontiguousarray(image), rgbd, 8, d)
        elif d == 8:
            _ycc_to_rgb(src, _Planes((grid[..., 0], grid[..., 1], grid[..., 2]), "rgb", 8))
            return wire
        else:
            rgbk, wpl = _rgb_planes(h, w, kd)
            _ycc_to_rgb(src, wpl)
            if kd != d:
                rgbd, wpl = _rgb_planes(h, w, d)
                _rgb_depth(rgbk, rgbd, kd, d)
        _write(grid, fmt, _sample_views(fmt, wpl), d)
        return wire
    sx, sy = _SUBSAMPLING[fmt.sampling]
    if src.kind == "rgb":
        direct = _direct_ycc_dest(grid, fmt) if d == 8 else None
        if direct is not None:
            _rgb_to_ycc(src, direct)
            return wire
        wpl = _ycc_planes(h, w, sx, sy, kd)
        _rgb_to_ycc(src, wpl)
        _write(grid, fmt, _sample_views(fmt, wpl), kd)
        return wire
    cb, cr = _ycc_resample_to(src, sx, sy)
    wpl = _Planes((src.p[0], cb, cr), "ycc", src.depth, sx, sy)
    _write(grid, fmt, _sample_views(fmt, wpl), src.depth)
    return wire


def _direct_ycc_dest(grid: np.ndarray, fmt: VideoFormat) -> _Planes | None:
    """8-bit wire planes as views when every plane is one strided view (not 4:2:0)."""
    if fmt.sampling is Sampling.YCBCR_420:
        return None
    return _wire_planes(grid, fmt)


def from_wire(
    wire: np.ndarray, fmt: VideoFormat, pix_fmt: str = "rgb24", *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Convert ST 2110-20 pgroups to a frame in ``pix_fmt`` (inverse of :func:`to_wire`).

    ``pix_fmt="yuv420p"`` is the cheap display path for every sampling and depth: 4:2:2
    and 4:2:0 8-bit are pure reorders, deeper samples are reduced to their top 8 bits
    while unpacking, 4:4:4 chroma is averaged in pairs on the even lines, RGB is
    converted (BT.601). A planar pix_fmt (:data:`PLANAR_PIX_FMTS`) unpacks its own wire
    format without loss.

    Parameters
    ----------
    wire : numpy.ndarray
        ``fmt.frame_bytes`` uint8 in wire order.
    fmt : VideoFormat
    pix_fmt : str
        One of :data:`PIX_FMTS`.
    out : numpy.ndarray, optional
        A C-contiguous array of the ``pix_fmt`` shape and dtype to fill and return.

    Returns
    -------
    numpy.ndarray
        A new array (or ``out``) in the ``pix_fmt`` layout of the module docstring.
    """
    _check_fmt(fmt)
    if wire.dtype != np.uint8 or wire.size != fmt.frame_bytes:
        raise LocalProtocolError(
            f"wire: need {fmt.frame_bytes} uint8 bytes, got {wire.size} {wire.dtype}"
        )
    _check_pix_fmt(pix_fmt)
    if pix_fmt in PLANAR_PIX_FMTS:
        _planar_match(pix_fmt, fmt)
    w, h, d = fmt.width, fmt.height, fmt.depth
    shape, dtype = _pix_shape(pix_fmt, w, h)
    img = _out(out, shape, dtype)
    grid = _grid(np.ascontiguousarray(wire).reshape(-1), fmt)
    if (pix_fmt, fmt.sampling, d) in (("uyvy422", Sampling.YCBCR_422, 8),
                                      ("rgb24", Sampling.RGB, 8)):
        np.copyto(img.reshape(-1), grid.reshape(-1))  # the same bytes (pure reorder)
        return img
    dest = _pix_planes(img, pix_fmt, w, h)
    if pix_fmt in PLANAR_PIX_FMTS:
        _read_planes(grid, fmt, dest, d)
        return img
    if pix_fmt == "rgb24":
        if fmt.sampling is Sampling.RGB:  # deeper than 8 bits: exact rescale
            rgbd, wpl = _rgb_planes(h, w, d)
            _read_planes(grid, fmt, wpl, d)
            _rgb_depth(rgbd, img, d, 8)
        else:
            _ycc_to_rgb(_wire_planes(grid, fmt, min(d, 10)), dest)
        return img
    if fmt.sampling is Sampling.RGB:
        _rgb_to_ycc(_wire_planes(grid, fmt, min(d, 10)), dest)
    else:
        _ycc_from_wire(grid, fmt, dest)
    if pix_fmt == "yuv422p10le":
        _fill_422p10(img)
    return img


def _ycc_from_wire(grid: np.ndarray, fmt: VideoFormat, dest: _Planes) -> None:
    """YCbCr wire samples straight into 4:2:x destination planes (reorder + depth)."""
    bits = dest.depth
    wsx, wsy = _SUBSAMPLING[fmt.sampling]
    y, cbd, crd = dest.p
    if fmt.sampling is Sampling.YCBCR_444:
        views = _sample_views(fmt, _Planes((y, y, y), "ycc", bits))
        for j, view in enumerate(views):
            if _is_luma(fmt, j):
                _read(grid, fmt, j, view, bits)
        _chroma_444_down(grid, fmt, dest)
        return
    rows = slice(None)
    if wsy == 1 and dest.sy == 2:  # 4:2:2 -> 4:2:0: the even lines' chroma
        rows = slice(0, None, 2)
    elif wsy == 2 and dest.sy == 1:  # 4:2:0 -> 4:2:2: each chroma line twice
        cbd, crd = cbd[0::2], crd[0::2]
    views = _sample_views(fmt, _Planes((y, cbd, crd), "ycc", bits, wsx, wsy))
    for j, view in enumerate(views):
        _read(grid, fmt, j, view, bits, slice(None) if _is_luma(fmt, j) else rows)
    if wsy == 2 and dest.sy == 1:
        dest.p[1][1::2] = dest.p[1][0::2]
        dest.p[2][1::2] = dest.p[2][0::2]


def _is_luma(fmt: VideoFormat, j: int) -> bool:
    if fmt.sampling is Sampling.YCBCR_422:
        return j % 4 in (1, 3)
    if fmt.sampling is Sampling.YCBCR_420:
        return j % 6 < 4
    return j % 3 == 1


def _chroma_444_down(grid: np.ndarray, fmt: VideoFormat, dest: _Planes) -> None:
    """4:4:4 wire chroma to 4:2:x: average horizontal pairs (rounded), even lines for 4:2:0."""
    h, w = fmt.height, fmt.width
    rows = slice(0, None, dest.sy)
    ch = h // dest.sy
    full = _Planes(
        (np.empty((0, 0), _U16), np.empty((ch, w), _U16), np.empty((ch, w), _U16)),
        "ycc", fmt.depth,
    )
    views = _sample_views(fmt, full)
    for j, v in enumerate(views):
        if j % 3 != 1:
            _read(grid, fmt, j, v, fmt.depth, rows)
    for c, dst in zip(full.p[1:], dest.p[1:], strict=True):
        # pair sums need depth + 1 bits: uint32 only for 16-bit samples
        t = np.add(c[:, 0::2], c[:, 1::2], dtype=np.uint32 if fmt.depth == 16 else _U16)
        t += 1
        t >>= 1  # the rounded pair average, then the depth change
        if fmt.depth > dest.depth:
            t >>= fmt.depth - dest.depth
        elif fmt.depth < dest.depth:
            t <<= dest.depth - fmt.depth
        np.copyto(dst, t, casting="unsafe")


# --------------------------------------------------------------------------- planes


def planes_to_wire(
    planes: tuple[np.ndarray, np.ndarray, np.ndarray], fmt: VideoFormat, *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Pack three sample planes at the wire's own sampling and depth into pgroups.

    Parameters
    ----------
    planes : tuple of numpy.ndarray
        ``(Y, Cb, Cr)`` with chroma ``(H / sy, W / sx)`` for the sampling's subsampling,
        or ``(R, G, B)``, each ``(H, W)``; integer samples of ``fmt.depth`` bits.
    fmt : VideoFormat
    out : numpy.ndarray, optional
        A C-contiguous ``(fmt.frame_bytes,)`` uint8 array to fill and return.
    """
    _check_fmt(fmt)
    sx, sy = _SUBSAMPLING.get(fmt.sampling, (1, 1))
    h, w = fmt.height, fmt.width
    want = [(h, w), (h // sy, w // sx), (h // sy, w // sx)]
    if [tuple(p.shape) for p in planes] != want:
        raise LocalProtocolError(
            f"planes: need shapes {want} for {fmt.sampling.value}, "
            f"got {[tuple(p.shape) for p in planes]}"
        )
    wire = _out(out, (fmt.frame_bytes,), _U8)
    kind = "rgb" if fmt.sampling is Sampling.RGB else "ycc"
    pl = _Planes(planes, kind, fmt.depth, sx, sy)
    _write(_grid(wire, fmt), fmt, _sample_views(fmt, pl), fmt.depth)
    return wire


def wire_to_planes(wire: np.ndarray, fmt: VideoFormat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inverse of :func:`planes_to_wire`: new uint8 (8-bit) or uint16 planes."""
    _check_fmt(fmt)
    if wire.dtype != np.uint8 or wire.size != fmt.frame_bytes:
        raise LocalProtocolError(
            f"wire: need {fmt.frame_bytes} uint8 bytes, got {wire.size} {wire.dtype}"
        )
    sx, sy = _SUBSAMPLING.get(fmt.sampling, (1, 1))
    kind = "rgb" if fmt.sampling is Sampling.RGB else "ycc"
    h, w = fmt.height, fmt.width
    dt = _U8 if fmt.depth == 8 else _U16
    pl = _Planes((np.empty((h, w), dt), np.empty((h // sy, w // sx), dt),
                  np.empty((h // sy, w // sx), dt)), kind, fmt.depth, sx, sy)
    _read_planes(_grid(np.ascontiguousarray(wire).reshape(-1), fmt), fmt, pl, fmt.depth)
    return pl.p


# --------------------------------------------------------------------------- DICOM native


def dicom_photometric(fmt: VideoFormat, *, full_chroma: bool = False) -> str:
    """Photometric Interpretation of :func:`wire_to_dicom`'s native Pixel Data.

    PS3.5 A.8's table (:data:`rtstream.proto.formats.PHOTOMETRIC`) except 4:2:0: its
    YBR_PARTIAL_420 describes compressed pixel data only (PS3.3 C.7.6.3.1.2), so native
    4:2:0 is YBR_FULL_422 with each chroma line repeated; the wire's chroma is the even
    lines', so nothing is lost. With ``full_chroma`` subsampled chroma is repeated to
    every pixel instead (YBR_FULL; for IODs and validators that take no YBR_FULL_422,
    e.g. Secondary Capture in dicom3tools), again without loss.
    """
    if full_chroma and fmt.sampling in (Sampling.YCBCR_422, Sampling.YCBCR_420):
        return "YBR_FULL"
    if fmt.sampling is Sampling.YCBCR_420:
        return "YBR_FULL_422"
    return PHOTOMETRIC[fmt.sampling]


def dicom_pixel_attributes(fmt: VideoFormat, *, full_chroma: bool = False) -> dict[str, int | str]:
    """Image Pixel module attributes (PS3.3 C.7.6.3) of :func:`wire_to_dicom`'s data.

    Bits Allocated/Stored/High Bit per PS3.5 §8.2.13 / A.8 (8 in 8; 10, 12, 16 in 16),
    three samples interleaved per pixel (Planar Configuration 0), unsigned.
    """
    alloc, stored, high = sample_bits(fmt.depth)
    return {
        "SamplesPerPixel": 3,
        "PhotometricInterpretation": dicom_photometric(fmt, full_chroma=full_chroma),
        "PlanarConfiguration": 0,
        "Rows": fmt.height,
        "Columns": fmt.width,
        "BitsAllocated": alloc,
        "BitsStored": stored,
        "HighBit": high,
        "PixelRepresentation": 0,
    }


def _dicom_shape(fmt: VideoFormat, full_chroma: bool) -> tuple[tuple[int, ...], np.dtype]:
    dt = np.dtype(_U8) if fmt.depth == 8 else np.dtype("<u2")
    if fmt.sampling in (Sampling.YCBCR_422, Sampling.YCBCR_420) and not full_chroma:
        return (fmt.height, fmt.width // 2, 4), dt
    return (fmt.height, fmt.width, 3), dt


def wire_to_dicom(
    wire: np.ndarray, fmt: VideoFormat, *, full_chroma: bool = False
) -> tuple[np.ndarray, dict[str, int | str]]:
    """One wire frame as native DICOM Pixel Data, at the wire's full depth.

    Layouts (PS3.3 C.7.6.3.1.2-3, Planar Configuration 0): RGB ``R G B`` and YBR_FULL
    ``Y Cb Cr`` per pixel; YBR_FULL_422 ``Y0 Y1 Cb Cr`` per pixel pair (PS3.5 A.8 shows
    the same 4:2:2 samples on the wire as ``Cb Y0 Cr Y1``). Samples above 8 bits are
    little-endian 16-bit words (Explicit VR Little Endian).

    Returns
    -------
    (numpy.ndarray, dict)
        The Pixel Data as a flat uint8 or ``<u2`` array, and
        :func:`dicom_pixel_attributes`.
    """
    _check_fmt(fmt)
    if wire.dtype != np.uint8 or wire.size != fmt.frame_bytes:
        raise LocalProtocolError(
            f"wire: need {fmt.frame_bytes} uint8 bytes, got {wire.size} {wire.dtype}"
        )
    grid = _grid(np.ascontiguousarray(wire).reshape(-1), fmt)
    shape, dt = _dicom_shape(fmt, full_chroma)
    out = np.empty(shape, dt)
    pl = _wire_planes(grid, fmt)
    a, b, c = pl.p
    if shape[2] == 3:
        if pl.sx > 1 or pl.sy > 1:  # full_chroma: each chroma sample over its pixels
            b = np.repeat(np.repeat(b, pl.sy, axis=0), pl.sx, axis=1)
            c = np.repeat(np.repeat(c, pl.sy, axis=0), pl.sx, axis=1)
        out[..., 0], out[..., 1], out[..., 2] = a, b, c
    else:
        out[..., 0], out[..., 1] = a[:, 0::2], a[:, 1::2]
        out[..., 2] = np.repeat(b, pl.sy, axis=0) if pl.sy > 1 else b
        out[..., 3] = np.repeat(c, pl.sy, axis=0) if pl.sy > 1 else c
    return out.reshape(-1), dicom_pixel_attributes(fmt, full_chroma=full_chroma)


def dicom_to_wire(
    pixels: np.ndarray | bytes, fmt: VideoFormat, *, full_chroma: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Native DICOM Pixel Data in :func:`wire_to_dicom`'s layout back to wire pgroups.

    Repeated chroma (4:2:0 lines, ``full_chroma`` columns) is read from its first copy.
    """
    _check_fmt(fmt)
    shape, dt = _dicom_shape(fmt, full_chroma)
    n = int(np.prod(shape))
    arr = np.frombuffer(pixels, dt) if isinstance(pixels, bytes) else np.asarray(pixels)
    if arr.dtype != dt or arr.size != n:
        raise LocalProtocolError(
            f"dicom pixels: need {n} samples of {dt} for {fmt.sampling.value} "
            f"{fmt.depth}-bit {fmt.width}x{fmt.height}, got {arr.size} of {arr.dtype}"
        )
    arr = arr.reshape(shape)
    wire = _out(out, (fmt.frame_bytes,), _U8)
    grid = _grid(wire, fmt)
    h, w = fmt.height, fmt.width
    if shape[2] == 3:
        kind = "rgb" if fmt.sampling is Sampling.RGB else "ycc"
        sx, sy = _SUBSAMPLING.get(fmt.sampling, (1, 1))
        pl = _Planes((arr[..., 0], arr[::sy, ::sx, 1], arr[::sy, ::sx, 2]), kind, fmt.depth,
                     sx, sy)
    else:
        y = np.empty((h, w), dt)
        y[:, 0::2], y[:, 1::2] = arr[..., 0], arr[..., 1]
        sy = 2 if fmt.sampling is Sampling.YCBCR_420 else 1
        pl = _Planes((y, arr[::sy, :, 2], arr[::sy, :, 3]), "ycc", fmt.depth, 2, sy)
    _write(grid, fmt, _sample_views(fmt, pl), fmt.depth)
    return wire


__all__ = [
    "PIX_FMTS",
    "PLANAR_PIX_FMTS",
    "dicom_photometric",
    "dicom_pixel_attributes",
    "dicom_to_wire",
    "from_wire",
    "native_pix_fmt",
    "planes_to_wire",
    "to_wire",
    "wire_to_dicom",
    "wire_to_planes",
]
