"""Conversions between common in-memory frame layouts and ST 2110-20 pgroup wire order.

Theory of operation
-------------------
A conversion goes through one of two intermediate forms: *planar YCbCr* (three integer
planes at a bit depth, chroma possibly subsampled) or *RGB* (``(H, W, 3)`` integers at a
bit depth). Sources that already match the wire sampling (``uyvy422`` to 4:2:2 8-bit,
``yuv422p10le`` to 4:2:2 10-bit, ``yuv420p``/``nv12`` to 4:2:0 8-bit) are only reordered,
so those paths are lossless both ways.

Colour conversion uses the BT.601 matrix (the only colorimetry PS3.5 §8.2.13 permits for
RTV) with narrow-range ("video range") YCbCr: Y in 16..235 and Cb/Cr in 16..240 at 8 bits,
times 4 at 10 bits (ITU-R BT.601-7 §2.5.3); RGB is full range. Chroma is subsampled by
averaging neighbours and upsampled by repetition.

pgroup orders (RFC 4175 §4.3-4.4, PS3.5 A.8): 4:2:2 ``Cb Y0 Cr Y1``; 4:4:4 ``Cb Y Cr``;
RGB ``R G B``; 4:2:0 8-bit ``Y00 Y01 Y10 Y11 Cb Cr`` over a 2x2 block. At 10 bits the
samples of a row are one big-endian bit stream, four samples to five octets.

Array shapes follow PyAV 18's ``VideoFrame.to_ndarray``/``from_ndarray``:

=============== ============================================================
``rgb24``       ``(H, W, 3)`` uint8
``yuv420p``     ``(H * 3 // 2, W)`` uint8: Y plane, then U, then V planes
``nv12``        ``(H * 3 // 2, W)`` uint8: Y plane, then interleaved UV rows
``yuv422p10le`` ``(3, H, W)`` uint16: Y, U, V with chroma repeated to full width
``uyvy422``     ``(H, W * 2)`` uint8: ``U Y0 V Y1`` (PyAV cannot make it; FFmpeg can)
=============== ============================================================
"""

from __future__ import annotations

import numpy as np

from rtstream.errors import ConfigError, LocalProtocolError
from rtstream.proto.formats import SUPPORTED_VIDEO, Sampling, VideoFormat

PIX_FMTS = ("rgb24", "yuv420p", "nv12", "yuv422p10le", "uyvy422")

_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB

_SUBSAMPLING = {
    Sampling.YCBCR_444: (1, 1),
    Sampling.YCBCR_422: (2, 1),
    Sampling.YCBCR_420: (2, 2),
}


class _Ycc:
    """Planar YCbCr: integer planes at ``depth`` bits; chroma subsampled by (sx, sy)."""

    __slots__ = ("y", "cb", "cr", "depth", "sx", "sy")

    def __init__(
        self, y: np.ndarray, cb: np.ndarray, cr: np.ndarray, depth: int, sx: int, sy: int
    ) -> None:
        self.y, self.cb, self.cr = y, cb, cr
        self.depth, self.sx, self.sy = depth, sx, sy


class _Rgb:
    """RGB ``(H, W, 3)`` integers at ``depth`` bits, full range."""

    __slots__ = ("rgb", "depth")

    def __init__(self, rgb: np.ndarray, depth: int) -> None:
        self.rgb, self.depth = rgb, depth


# --------------------------------------------------------------------------- helpers


def _check_fmt(fmt: VideoFormat) -> None:
    if (fmt.sampling, fmt.depth) not in SUPPORTED_VIDEO:
        raise ConfigError("video.depth", fmt.depth, f"a supported depth for {fmt.sampling.value}")
    if fmt.width % 2 or fmt.height % 2:
        raise ConfigError("video.width/height", (fmt.width, fmt.height), "even dimensions")


def _ycc_depth(a: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Narrow-range sample depth change (shift, rounding down-conversion)."""
    a = a.astype(np.int32)
    if dst > src:
        return a << (dst - src)
    if dst < src:
        s = src - dst
        out: np.ndarray = np.minimum((a + (1 << (s - 1))) >> s, (1 << dst) - 1)
        return out
    return a


def _rgb_depth(a: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Full-range depth change: scale so that black and white map exactly."""
    a = a.astype(np.int32)
    if dst == src:
        return a
    smax, dmax = (1 << src) - 1, (1 << dst) - 1
    return (a * dmax + smax // 2) // smax


def _down(c: np.ndarray, sx: int, sy: int) -> np.ndarray:
    """Average ``sx`` x ``sy`` blocks (rounded)."""
    if sx == 1 and sy == 1:
        return c
    h, w = c.shape
    blk = c.reshape(h // sy, sy, w // sx, sx).astype(np.int32).sum(axis=(1, 3))
    n = sx * sy
    avg: np.ndarray = (blk + n // 2) // n
    return avg


def _up(c: np.ndarray, sx: int, sy: int) -> np.ndarray:
    if sx > 1:
        c = np.repeat(c, sx, axis=1)
    if sy > 1:
        c = np.repeat(c, sy, axis=0)
    return c


def _resample(ycc: _Ycc, sx: int, sy: int) -> _Ycc:
    if (ycc.sx, ycc.sy) == (sx, sy):
        return ycc
    cb = _up(ycc.cb, ycc.sx, ycc.sy)
    cr = _up(ycc.cr, ycc.sx, ycc.sy)
    return _Ycc(ycc.y, _down(cb, sx, sy), _down(cr, sx, sy), ycc.depth, sx, sy)


def _rgb_to_ycc(rgb: _Rgb, depth: int) -> _Ycc:
    """BT.601 full-range RGB to narrow-range YCbCr 4:4:4 (BT.601-7 §2.5)."""
    x = rgb.rgb.astype(np.float32) / np.float32((1 << rgb.depth) - 1)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    yn = _KR * r + _KG * g + _KB * b
    cbn = (b - yn) / (2 * (1 - _KB))
    crn = (r - yn) / (2 * (1 - _KR))
    s = np.float32(1 << (depth - 8))
    top = (1 << depth) - 1
    y = np.clip(np.rint((16 + 219 * yn) * s), 0, top).astype(np.int32)
    cb = np.clip(np.rint((128 + 224 * cbn) * s), 0, top).astype(np.int32)
    cr = np.clip(np.rint((128 + 224 * crn) * s), 0, top).astype(np.int32)
    return _Ycc(y, cb, cr, depth, 1, 1)


def _ycc_to_rgb(ycc: _Ycc, depth: int) -> _Rgb:
    """Narrow-range BT.601 YCbCr (any subsampling) to full-range RGB."""
    full = _resample(ycc, 1, 1)
    s = np.float32(1 << (ycc.depth - 8))
    yn = (full.y.astype(np.float32) / s - 16) / 219
    cbn = (full.cb.astype(np.float32) / s - 128) / 224
    crn = (full.cr.astype(np.float32) / s - 128) / 224
    r = yn + 2 * (1 - _KR) * crn
    b = yn + 2 * (1 - _KB) * cbn
    g = (yn - _KR * r - _KB * b) / _KG
    top = (1 << depth) - 1
    out = np.stack([r, g, b], axis=-1) * np.float32(top)
    return _Rgb(np.clip(np.rint(out), 0, top).astype(np.int32), depth)


def _pack10(samples: np.ndarray) -> np.ndarray:
    """Pack 10-bit samples (count a multiple of 4) big-endian, 4 samples in 5 octets."""
    s = samples.reshape(-1, 4).astype(np.uint64) & 0x3FF
    v = (s[:, 0] << 30) | (s[:, 1] << 20) | (s[:, 2] << 10) | s[:, 3]
    out = np.empty((len(v), 5), np.uint8)
    for i, shift in enumerate((32, 24, 16, 8, 0)):
        out[:, i] = (v >> np.uint64(shift)) & 0xFF
    return out.reshape(-1)


def _unpack10(data: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_pack10`: 5 octets to 4 samples (uint16)."""
    b = data.reshape(-1, 5).astype(np.uint64)
    v = (b[:, 0] << 32) | (b[:, 1] << 24) | (b[:, 2] << 16) | (b[:, 3] << 8) | b[:, 4]
    out = np.empty((len(v), 4), np.uint16)
    for i, shift in enumerate((30, 20, 10, 0)):
        out[:, i] = (v >> np.uint64(shift)) & 0x3FF
    return out.reshape(-1)


def _serialize(samples: np.ndarray, depth: int) -> np.ndarray:
    if depth == 8:
        return samples.astype(np.uint8).reshape(-1)
    return _pack10(samples)


def _deserialize(wire: np.ndarray, depth: int, count: int) -> np.ndarray:
    if depth == 8:
        return wire.reshape(-1)[:count].astype(np.int32)
    return _unpack10(wire.reshape(-1)).astype(np.int32)


# --------------------------------------------------------------------------- sources


def _source(image: np.ndarray, pix_fmt: str, w: int, h: int) -> _Ycc | _Rgb:
    def need(shape: tuple[int, ...], dtype: type) -> None:
        if image.shape != shape or image.dtype != dtype:
            raise LocalProtocolError(
                f"image: {pix_fmt} needs shape {shape} {np.dtype(dtype)}, "
                f"got {image.shape} {image.dtype}"
            )

    if pix_fmt == "rgb24":
        need((h, w, 3), np.uint8)
        return _Rgb(image, 8)
    if pix_fmt == "yuv420p":
        need((h * 3 // 2, w), np.uint8)
        flat = image.reshape(-1)
        q = (h // 2) * (w // 2)
        y = flat[: h * w].reshape(h, w)
        u = flat[h * w : h * w + q].reshape(h // 2, w // 2)
        v = flat[h * w + q : h * w + 2 * q].reshape(h // 2, w // 2)
        return _Ycc(y, u, v, 8, 2, 2)
    if pix_fmt == "nv12":
        need((h * 3 // 2, w), np.uint8)
        uv = image[h:]
        return _Ycc(image[:h], uv[:, 0::2], uv[:, 1::2], 8, 2, 2)
    if pix_fmt == "yuv422p10le":
        need((3, h, w), np.uint16)
        return _Ycc(image[0], image[1][:, ::2], image[2][:, ::2], 10, 2, 1)
    if pix_fmt == "uyvy422":
        need((h, w * 2), np.uint8)
        return _Ycc(image[:, 1::2], image[:, 0::4], image[:, 2::4], 8, 2, 1)
    raise ConfigError("pix_fmt", pix_fmt, "one of " + ", ".join(PIX_FMTS))


def to_wire(image: np.ndarray, pix_fmt: str, fmt: VideoFormat) -> np.ndarray:
    """Convert a frame to ST 2110-20 pgroup order.

    Parameters
    ----------
    image : numpy.ndarray
        In the layout of ``pix_fmt`` (see the module docstring).
    pix_fmt : str
        One of :data:`PIX_FMTS`.
    fmt : VideoFormat
        The wire format (a supported sampling/depth; even width and height).

    Returns
    -------
    numpy.ndarray
        ``fmt.frame_bytes`` uint8, rows top to bottom (RFC 4175 §4.3).
    """
    _check_fmt(fmt)
    w, h, d = fmt.width, fmt.height, fmt.depth
    src = _source(image, pix_fmt, w, h)
    if fmt.sampling is Sampling.RGB:
        rgb = src if isinstance(src, _Rgb) else _ycc_to_rgb(src, d)
        px = _rgb_depth(rgb.rgb, rgb.depth, d)
        return _serialize(px, d)
    sx, sy = _SUBSAMPLING[fmt.sampling]
    if isinstance(src, _Rgb):
        ycc = _rgb_to_ycc(src, d)
    else:
        ycc = _Ycc(
            _ycc_depth(src.y, src.depth, d),
            _ycc_depth(src.cb, src.depth, d),
            _ycc_depth(src.cr, src.depth, d),
            d,
            src.sx,
            src.sy,
        )
    ycc = _resample(ycc, sx, sy)
    y, cb, cr = ycc.y, ycc.cb, ycc.cr
    if fmt.sampling is Sampling.YCBCR_422:
        px = np.stack([cb, y[:, 0::2], cr, y[:, 1::2]], axis=-1)
    elif fmt.sampling is Sampling.YCBCR_444:
        px = np.stack([cb, y, cr], axis=-1)
    else:  # 4:2:0: Y00 Y01 Y10 Y11 Cb Cr per 2x2 block
        px = np.stack(
            [y[0::2, 0::2], y[0::2, 1::2], y[1::2, 0::2], y[1::2, 1::2], cb, cr], axis=-1
        )
    return _serialize(px, d)


def from_wire(wire: np.ndarray, fmt: VideoFormat, pix_fmt: str = "rgb24") -> np.ndarray:
    """Convert ST 2110-20 pgroups to a frame in ``pix_fmt`` (inverse of :func:`to_wire`).

    Parameters
    ----------
    wire : numpy.ndarray
        ``fmt.frame_bytes`` uint8 in wire order.
    fmt : VideoFormat
    pix_fmt : str
        One of :data:`PIX_FMTS`.
    """
    _check_fmt(fmt)
    if wire.dtype != np.uint8 or wire.size != fmt.frame_bytes:
        raise LocalProtocolError(
            f"wire: need {fmt.frame_bytes} uint8 bytes, got {wire.size} {wire.dtype}"
        )
    if pix_fmt not in PIX_FMTS:
        raise ConfigError("pix_fmt", pix_fmt, "one of " + ", ".join(PIX_FMTS))
    w, h, d = fmt.width, fmt.height, fmt.depth
    src: _Ycc | _Rgb
    if fmt.sampling is Sampling.RGB:
        src = _Rgb(_deserialize(wire, d, h * w * 3).reshape(h, w, 3), d)
    elif fmt.sampling is Sampling.YCBCR_422:
        s = _deserialize(wire, d, h * w * 2).reshape(h, w // 2, 4)
        y = np.empty((h, w), np.int32)
        y[:, 0::2], y[:, 1::2] = s[..., 1], s[..., 3]
        src = _Ycc(y, s[..., 0], s[..., 2], d, 2, 1)
    elif fmt.sampling is Sampling.YCBCR_444:
        s = _deserialize(wire, d, h * w * 3).reshape(h, w, 3)
        src = _Ycc(s[..., 1], s[..., 0], s[..., 2], d, 1, 1)
    else:
        s = _deserialize(wire, d, h * w * 3 // 2).reshape(h // 2, w // 2, 6)
        y = np.empty((h, w), np.int32)
        y[0::2, 0::2], y[0::2, 1::2] = s[..., 0], s[..., 1]
        y[1::2, 0::2], y[1::2, 1::2] = s[..., 2], s[..., 3]
        src = _Ycc(y, s[..., 4], s[..., 5], d, 2, 2)
    return _emit(src, pix_fmt, w, h)


def _emit(src: _Ycc | _Rgb, pix_fmt: str, w: int, h: int) -> np.ndarray:
    if pix_fmt == "rgb24":
        rgb = src if isinstance(src, _Rgb) else _ycc_to_rgb(src, 8)
        return _rgb_depth(rgb.rgb, rgb.depth, 8).astype(np.uint8)
    depth = 10 if pix_fmt == "yuv422p10le" else 8
    sx, sy = (2, 2) if pix_fmt in ("yuv420p", "nv12") else (2, 1)
    if isinstance(src, _Rgb):
        ycc = _rgb_to_ycc(src, depth)
    else:
        ycc = _Ycc(
            _ycc_depth(src.y, src.depth, depth),
            _ycc_depth(src.cb, src.depth, depth),
            _ycc_depth(src.cr, src.depth, depth),
            depth,
            src.sx,
            src.sy,
        )
    ycc = _resample(ycc, sx, sy)
    if pix_fmt == "yuv420p":
        return np.concatenate(
            [ycc.y.reshape(-1), ycc.cb.reshape(-1), ycc.cr.reshape(-1)]
        ).astype(np.uint8).reshape(h * 3 // 2, w)
    if pix_fmt == "nv12":
        uv = np.stack([ycc.cb, ycc.cr], axis=-1).reshape(h // 2, w)
        return np.concatenate([ycc.y, uv]).astype(np.uint8)
    if pix_fmt == "uyvy422":
        out = np.empty((h, w * 2), np.uint8)
        out[:, 0::4], out[:, 1::2], out[:, 2::4] = ycc.cb, ycc.y, ycc.cr
        return out
    # yuv422p10le, as PyAV's to_ndarray gives it: chroma repeated to full width
    return np.stack(
        [ycc.y, np.repeat(ycc.cb, 2, axis=1), np.repeat(ycc.cr, 2, axis=1)]
    ).astype(np.uint16)


__all__ = ["PIX_FMTS", "from_wire", "to_wire"]
