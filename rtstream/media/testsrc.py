"""The built-in test source: an ultrasound-like sector with moving speckle.

Theory of operation
-------------------
A picture that looks like what users stream, at 1080p60, must cost almost nothing per
frame. At start the generator renders a short cycle of luma frames once: a fan-shaped
sector (apex at the top, depth-dependent gain, dark outside) filled with a speckle texture
that drifts a few lines per frame, plus a pulsing bright structure. Each cycle frame is
converted once to the output representation. Per frame, only a small rectangle is redrawn:
the burned-in frame counter and capture time, in a built-in 3x5 bitmap font scaled up with
numpy. The cycle plays forward then backward so the motion has no jump.

Output representation: frames are produced directly in ST 2110-20 pgroup order
(``pix_fmt == "wire"``) for every sampling and depth, so the sender needs no conversion:
the gray picture is drawn as planes (narrow-range BT.601 luma with neutral chroma for
YCbCr, full-range R = G = B for RGB; BT.601-7 §2.5.3) and packed once per cycle frame by
:func:`rtstream.proto.pixfmt.planes_to_wire` (RFC 4175 §4.3-4.4, ``spec/ps322.md``
§6.1); the overlay rectangle is packed the same way, aligned to whole pgroups.
"""

from __future__ import annotations

import math
import time

import numpy as np

from rtstream.proto.formats import Sampling, VideoFormat
from rtstream.proto.pixfmt import planes_to_wire

# 3x5 bitmaps of the characters the overlay needs (rows top to bottom, 3 bits each).
_FONT: dict[str, tuple[int, ...]] = {
    "0": (7, 5, 5, 5, 7),
    "1": (2, 6, 2, 2, 7),
    "2": (7, 1, 7, 4, 7),
    "3": (7, 1, 7, 1, 7),
    "4": (5, 5, 7, 1, 1),
    "5": (7, 4, 7, 1, 7),
    "6": (7, 4, 7, 5, 7),
    "7": (7, 1, 2, 2, 2),
    "8": (7, 5, 7, 5, 7),
    "9": (7, 5, 7, 1, 7),
    ":": (0, 2, 0, 2, 0),
    ".": (0, 0, 0, 0, 2),
    " ": (0, 0, 0, 0, 0),
    "-": (0, 0, 7, 0, 0),
    "F": (7, 4, 6, 4, 4),
}
_GLYPHS = {
    ch: np.array([[(row >> (2 - b)) & 1 for b in range(3)] for row in rows], np.uint8)
    for ch, rows in _FONT.items()
}


def render_text(text: str, scale: int) -> np.ndarray:
    """Render ``text`` as a 0/1 uint8 bitmap, each font pixel ``scale`` x ``scale``."""
    cells = [np.pad(_GLYPHS.get(ch, _GLYPHS[" "]), ((0, 0), (0, 1))) for ch in text]
    bitmap = np.concatenate(cells, axis=1)
    return np.kron(bitmap, np.ones((scale, scale), np.uint8))


def _luma_lut(depth: int) -> np.ndarray:
    """Full-range 8-bit gray to narrow-range Y' of ``depth`` bits (BT.601 levels:
    16..235 at 8 bits, times ``2 ** (depth - 8)``)."""
    y = np.arange(256, dtype=np.float64)
    s = 1 << (depth - 8)
    return np.round((16 + y * 219 / 255) * s).astype(np.uint16)


def _gray_lut(depth: int) -> np.ndarray:
    """Full-range 8-bit gray to full-range RGB of ``depth`` bits, round(v * max / 255)."""
    v = np.arange(256, dtype=np.int64)
    top = (1 << depth) - 1
    return ((v * 2 * top + 255) // 510).astype(np.uint16)


class SectorGenerator:
    """Frames of the ultrasound-like test picture for one video format.

    Parameters
    ----------
    fmt : VideoFormat
        Size and sampling of the output.
    cycle : int or None
        Distinct frames rendered at start (played forward then backward); None picks
        up to 16 within a 400 MB budget.
    seed : int
        Seed of the speckle texture (frames are reproducible).
    """

    def __init__(self, fmt: VideoFormat, *, cycle: int | None = None, seed: int = 2110) -> None:
        self.fmt = fmt
        w, h = fmt.width, fmt.height
        self.wire = True
        self.pix_fmt = "wire"
        per_frame = fmt.frame_bytes
        if cycle is None:
            cycle = max(2, min(16, (400 << 20) // max(per_frame, 1)))
        self.cycle = cycle
        rgb = fmt.sampling is Sampling.RGB
        self._lut = _gray_lut(fmt.depth) if rgb else _luma_lut(fmt.depth)
        if fmt.depth == 8:
            self._lut = self._lut.astype(np.uint8)
        self._neutral = 0 if rgb else 128 << (fmt.depth - 8)
        # the overlay is redrawn in whole pgroups: columns in pgroup units, lines in
        # pairs for 4:2:0 (one SRD row spans two lines)
        self._xunit = fmt.pgroup_pixels_per_line
        self._yunit = fmt.lines_per_row
        rng = np.random.default_rng(seed)
        # Geometry of the sector, in pixel coordinates.
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        apex_x, apex_y = w / 2.0, -0.05 * h
        r = np.hypot(xx - apex_x, yy - apex_y) / h
        theta = np.arctan2(xx - apex_x, yy - apex_y)
        inside = (np.abs(theta) < math.radians(38)) & (r > 0.12) & (r < 1.0)
        edge = np.clip((math.radians(38) - np.abs(theta)) * 40, 0, 1)
        gain = np.where(inside, (0.95 - 0.55 * r) * edge, 0.0).astype(np.float32)
        # Speckle: Rayleigh-distributed blobs on a coarse grid, taller than the frame so
        # it can drift.
        drift = 3
        th = h + drift * cycle + 8
        coarse = rng.rayleigh(0.45, size=(th // 2 + 2, w // 2 + 2)).astype(np.float32)
        tex = np.kron(coarse, np.ones((2, 2), np.float32))[:th, :w]
        tex = (tex + np.roll(tex, 1, 0) + np.roll(tex, 1, 1)) / 3.0
        frames = []
        for k in range(cycle):
            window = tex[drift * k : drift * k + h]
            pulse = 0.5 + 0.5 * math.sin(2 * math.pi * k / cycle)
            vessel = np.exp(-(((r - 0.55 - 0.02 * pulse) / 0.03) ** 2)) * 0.8
            img = np.clip((window * 0.9 + vessel * inside) * gain * 255, 0, 255).astype(np.uint8)
            wire = self._convert(img)
            if fmt.sampling is Sampling.RGB and fmt.depth == 8:
                wire = wire.reshape(h, w, 3)  # the same bytes, shaped as rgb24
            frames.append(wire)
        self._frames = frames
        self._scale = max(1, h // 90)
        self._text_origin = (max(2, h // 40), max(2, w // 40))

    def _convert(self, luma: np.ndarray) -> np.ndarray:
        """Luma (h, w) uint8 to wire pgroups for a block of whole pgroups."""
        h, w = luma.shape
        f = self.fmt
        sub = VideoFormat(sampling=f.sampling, depth=f.depth, width=w, height=h,
                          exactframerate=f.exactframerate)
        y = self._lut[luma]
        if f.sampling is Sampling.RGB:
            planes = (y, y, y)
        else:
            sx = 1 if f.sampling is Sampling.YCBCR_444 else 2
            sy = 2 if f.sampling is Sampling.YCBCR_420 else 1
            c = np.full((h // sy, w // sx), self._neutral, y.dtype)
            planes = (y, c, c)
        return planes_to_wire(planes, sub).reshape(h // sub.lines_per_row, sub.row_bytes)

    def frame(self, index: int, capture_ns: int) -> np.ndarray:
        """Frame ``index`` with its counter and capture time burned in.

        The returned array is one of the cycle's buffers, valid until the same cycle
        slot comes round again (at least ``cycle`` frames later).
        """
        period = 2 * self.cycle - 2 if self.cycle > 1 else 1
        k = index % period
        if k >= self.cycle:
            k = period - k
        img = self._frames[k]
        secs, ns = divmod(capture_ns, 1_000_000_000)
        clock = time.strftime("%H:%M:%S", time.gmtime(secs)) + f".{ns // 1_000_000:03d}"
        text = render_text(f"F{index:07d} {clock}", self._scale)
        top, left = self._text_origin
        xu, yu = max(2, self._xunit), max(2, self._yunit)
        top -= top % yu
        left -= left % xu
        th = min(text.shape[0], self.fmt.height - top)
        tw = min(text.shape[1], self.fmt.width - left)
        th -= th % yu
        tw -= tw % xu
        if th <= 0 or tw <= 0:
            return img
        block = np.where(text[:th, :tw] > 0, 255, 0).astype(np.uint8)
        fmt = self.fmt
        lpr = fmt.lines_per_row
        c0 = left // fmt.pgroup_pixels_per_line * fmt.pgroup_bytes
        wire = self._convert(block)
        grid = img.reshape(fmt.rows, fmt.row_bytes)
        grid[top // lpr : top // lpr + wire.shape[0], c0 : c0 + wire.shape[1]] = wire
        return img


def tone(sample_rate: int, channels: int, start: int, count: int, *, bits: int = 24,
         frequency: float = 1000.0, level_db: float = -20.0) -> np.ndarray:
    """``count`` samples of a sine from absolute sample ``start``, as (count, channels) int32.

    Values are in the signed ``bits``-bit range (L16 or L24).
    """
    n = np.arange(start, start + count, dtype=np.float64)
    amp = (2 ** (bits - 1) - 1) * 10 ** (level_db / 20)
    s = np.round(amp * np.sin(2 * np.pi * frequency * n / sample_rate)).astype(np.int32)
    return np.repeat(s[:, None], channels, axis=1)
