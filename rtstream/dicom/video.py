"""Clip encoding for stored video instances: codec, level, container, transfer syntax.

Theory of operation
-------------------
A clip is a run of wire-order frames converted to 8-bit RGB (BT.601, as for snapshots)
and encoded once by PyAV. :func:`choose_video_syntax` picks, from the geometry and the
frame rate alone, the first row of this table whose limits hold:

=================  =========  ==========================================  =============
codec / profile    level      PS3.5 transfer syntax                        when
=================  =========  ==========================================  =============
H.264 High         4.1        1.2.840.10008.1.2.4.102 (§8.2.7)            MBPS fits 4.1
H.264 High         4.2        1.2.840.10008.1.2.4.104 (§8.2.8, 2D)        <= 60 frame/s
HEVC Main          <= 5.1     1.2.840.10008.1.2.4.107 (§8.2.10)           <= 60 frame/s
=================  =========  ==========================================  =============

The H.264 rows hold while the frame fits MaxFS = 8,192 macroblocks and the macroblock
rate fits MaxMBPS (245,760 /s at Level 4.1, 522,240 /s at Level 4.2; ITU-T H.264
Table A-1): 1080p (8,160 macroblocks) up to 30 frames/s and 720p up to 60 are Level
4.1, 1080p50/60 Level 4.2. A frame of more than 8,192 macroblocks (3840x2160 is 32,400)
goes to HEVC Main, labelled with the lowest level whose MaxLumaPs and MaxLumaSr hold
(ITU-T H.265 Table A.8: Level 5.1 allows 8,912,896 luma samples per picture and
534,773,760 per second, i.e. 2160p60). Nothing above 60 frames/s, and nothing over HEVC
Level 5.1, has a transfer syntax here: :class:`~rtstream.errors.LocalProtocolError` says
so, with the alternatives (scale down or lower the rate). The clips are always 8-bit
4:2:0, so HEVC Main (not Main 10, .108) suffices for every depth on the wire.

Container (PS3.5 §8.2.7/§8.2.8/§8.2.10): the bit stream shall be in an MPEG-2 Transport
Stream or an MP4 (ISO/IEC 14496-12/-14) container, and the container's PTS/DTS drive
decoding; both are allowed for all three syntaxes. We write **MP4** (PyAV ``mp4`` muxer,
``+faststart`` so the ``moov`` box precedes the media data): browsers, DICOMweb rendered
video (``video/mp4``) and PACS web viewers play it as is, where MPEG-TS needs a
transmuxer; its sample table gives the exact frame count; decode and presentation times
travel in ``stts``/``ctts`` (DTS and composition offsets). HEVC is tagged ``hvc1``
(parameter sets in the sample entry), as players expect.

Encapsulation (PS3.5 A.4 and the Pixel Data notes of §8.2.7-8.2.10): .102/.104/.107 are
the non-fragmentable syntaxes every current toolkit knows (dcmtk 3.6.7, Orthanc 1.10,
pydicom); the "Fragmentable" .102.1/.104.1 added later are not used. So the whole
container is **one fragment** after an **empty Basic Offset Table** (``encapsulate(...,
has_bot=False)``); an item length is 32 bits, even, and FFFFFFFFH means undefined, so
one fragment holds at most 0xFFFFFFFE bytes and a larger clip is refused (split it into
several instances, as PS3.5's note suggests). An odd-sized MP4 gets a 9-byte ``free``
box appended (ISO/IEC 14496-12: its contents are ignored) instead of a stray pad byte
after the last box.

Colour: frames are converted RGB -> Y'CbCr with the BT.601 matrix into narrow ("tv")
range, as Photometric Interpretation YBR_PARTIAL_420 says, and the RGB they come from is
what the instance's ICC profile (sRGB, ``ColorSpace`` SRGB) describes. The VUI colour
description says exactly that: colour_primaries 1 (BT.709, the sRGB primaries),
transfer_characteristics 13 (IEC 61966-2-1, sRGB), matrix_coefficients 6 (SMPTE 170M,
BT.601), video_full_range_flag 0; and sample aspect ratio 1:1 (aspect_ratio_idc 1, as
PS3.5 asks when it is present). The MP4 ``colr`` box carries the same values.

Audio (PS3.5 §8.2.12) is not written: the clip builder has no audio to give. ``audio``
is accepted only as ``None`` so callers see the seam.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.encaps import encapsulate
from pydicom.uid import HEVCMP51, MPEG4HP41, MPEG4HP422D

from rtstream.errors import LocalProtocolError
from rtstream.proto.formats import VideoFormat
from rtstream.proto.pixfmt import from_wire

MAX_FRAME_RATE = Fraction(60)
"""Highest frame rate of any transfer syntax chosen here (PS3.5 §8.2.8, §8.2.10)."""

H264_MAX_FS = 8192
"""MaxFS, macroblocks per frame, of H.264 Levels 4.1 (and the bound used for 4.2)."""

MAX_FRAGMENT = 0xFFFFFFFE
"""Largest even item length of one fragment (PS3.5 A.4: 32-bit length, FFFFFFFFH excluded)."""

# ITU-T H.264 Table A-1: level -> MaxMBPS (macroblocks per second).
_H264_MAX_MBPS = {"4.1": 245_760, "4.2": 522_240}

# ITU-T H.265 Table A.8 (general tier and level limits) and the MaxLumaSr of the same
# table: level -> (MaxLumaPs samples, MaxLumaSr samples/s), Main tier, up to Level 5.1.
_HEVC_LEVELS: tuple[tuple[str, int, int], ...] = (
    ("1", 36_864, 552_960),
    ("2", 122_880, 3_686_400),
    ("2.1", 245_760, 7_372_800),
    ("3", 552_960, 16_588_800),
    ("3.1", 983_040, 33_177_600),
    ("4", 2_228_224, 66_846_720),
    ("4.1", 2_228_224, 133_693_440),
    ("5", 8_912_896, 267_386_880),
    ("5.1", 8_912_896, 534_773_760),
)

# VUI colour description (H.264/H.265 Table E-3/E-4/E-5 names as x264/x265 spell them).
_VUI = "colorprim=bt709:transfer=iec61966-2-1:colormatrix=smpte170m"


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoSyntax:
    """Codec, profile, level and transfer syntax chosen for a clip."""

    codec: str
    """PyAV encoder name: ``libx264`` or ``libx265``."""
    profile: str
    level: str
    transfer_syntax: str
    lossy_method: str
    """Lossy Image Compression Method (PS3.3 C.7.6.1.1.5.1)."""
    description: str
    """Human-readable codec description for Derivation Description."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class EncodedClip:
    """An encoded clip: the container bytes and what the instance must say about them."""

    data: bytes
    """The MP4 container, even length, ready to be one fragment."""
    syntax: VideoSyntax
    container: str
    """FFmpeg muxer name (``mp4``)."""
    number_of_frames: int
    rows: int
    columns: int
    frame_rate: Fraction
    photometric_interpretation: str = "YBR_PARTIAL_420"
    bits: int = 8

    @property
    def transfer_syntax(self) -> str:
        return self.syntax.transfer_syntax

    def pixel_data(self) -> bytes:
        """Encapsulated Pixel Data: empty Basic Offset Table, one fragment (PS3.5 A.4)."""
        return encapsulate([self.data], has_bot=False)


def _refuse(fmt: VideoFormat, rate: Fraction, why: str) -> LocalProtocolError:
    return LocalProtocolError(
        f"fmt/rate: {fmt.width}x{fmt.height} at {float(rate):g} frames/s {why}; "
        "no DICOM video transfer syntax carries it (H.264 High Level 4.1/4.2 up to "
        "8,192 macroblocks per frame, HEVC Main up to Level 5.1 = 3840x2160 at 60 "
        "frames/s): scale the clip down or lower its frame rate"
    )


def choose_video_syntax(fmt: VideoFormat, rate: Fraction) -> VideoSyntax:
    """Codec, level and transfer syntax for ``fmt`` at ``rate`` (see module table).

    Raises
    ------
    LocalProtocolError
        When the rate is not positive or above 60 frames/s, or the picture exceeds
        HEVC Main Level 5.1 (ITU-T H.265 Table A.8).
    """
    if rate <= 0:
        raise LocalProtocolError(f"rate: {rate} frames/s is not positive")
    if rate > MAX_FRAME_RATE:
        raise _refuse(fmt, rate, "exceeds 60 frames/s")
    mb_w = math.ceil(fmt.width / 16)
    mb_h = math.ceil(fmt.height / 16)
    mbs = mb_w * mb_h
    # H.264 A.3.1: PicWidthInMbs and FrameHeightInMbs each <= sqrt(8 * MaxFS).
    max_side = math.isqrt(8 * H264_MAX_FS)
    if mbs <= H264_MAX_FS and mb_w <= max_side and mb_h <= max_side:
        for level, ts in (("4.1", MPEG4HP41), ("4.2", MPEG4HP422D)):
            if mbs * rate <= _H264_MAX_MBPS[level]:
                return VideoSyntax(
                    codec="libx264",
                    profile="high",
                    level=level,
                    transfer_syntax=ts,
                    lossy_method="ISO_14496_10",
                    description=f"H.264 High Profile Level {level} 4:2:0 8-bit in MP4",
                )
    luma = fmt.width * fmt.height
    for level, max_ps, max_sr in _HEVC_LEVELS:
        side = math.isqrt(8 * max_ps)  # H.265 A.4.1: width, height <= sqrt(8 * MaxLumaPs)
        if luma <= max_ps and fmt.width <= side and fmt.height <= side and luma * rate <= max_sr:
            return VideoSyntax(
                codec="libx265",
                profile="main",
                level=level,
                transfer_syntax=HEVCMP51,
                lossy_method="ISO_23008_2",
                description=f"HEVC Main Profile Level {level} 4:2:0 8-bit in MP4",
            )
    raise _refuse(
        fmt, rate, f"needs {luma * float(rate):,.0f} luma samples/s over {luma:,} per picture"
    )


def wire_to_rgb(frame_wire: np.ndarray, fmt: VideoFormat) -> np.ndarray:
    """RGB 8-bit ``(height, width, 3)`` from a wire-order frame (BT.601, via pixfmt)."""
    rgb = from_wire(np.ascontiguousarray(frame_wire).reshape(-1), fmt, "rgb24")
    return np.ascontiguousarray(rgb, dtype=np.uint8).reshape(fmt.height, fmt.width, 3)


def _even(data: bytes) -> bytes:
    """``data`` with a 9-byte ``free`` box appended when its length is odd."""
    if len(data) % 2 == 0:
        return data
    return data + struct.pack(">I4sB", 9, b"free", 0)


def _mux(
    av: Any,
    path: Path,
    frames: Sequence[np.ndarray],
    fmt: VideoFormat,
    rate: Fraction,
    syntax: VideoSyntax,
    crf: int,
) -> None:
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream(syntax.codec, rate=rate)
        stream.width = fmt.width
        stream.height = fmt.height
        stream.pix_fmt = "yuv420p"
        ctx = stream.codec_context
        ctx.color_primaries = 1  # BT.709 = sRGB primaries
        ctx.color_trc = 13  # IEC 61966-2-1 (sRGB)
        ctx.colorspace = 6  # SMPTE 170M = BT.601 matrix
        ctx.color_range = 1  # MPEG, narrow range
        ctx.sample_aspect_ratio = Fraction(1, 1)
        options = {"preset": "veryfast", "crf": str(crf)}
        if syntax.codec == "libx264":
            options |= {
                "profile": syntax.profile,
                "level": syntax.level,
                "x264-params": f"{_VUI}:range=tv",
            }
        else:
            stream.codec_tag = "hvc1"
            options |= {
                "profile": syntax.profile,
                # bframes=0: FFmpeg's libx265 wrapper intermittently hands out packets
                # with unset or garbage DTS on short clips (the mp4 muxer then fails
                # "pts < dts"); without reordering, decode order is presentation order
                # and the timestamps are restamped below.
                "x265-params": (
                    f"{_VUI}:range=limited:level-idc={syntax.level}:bframes=0:log-level=error"
                ),
            }
        stream.options = options
        restamp = syntax.codec == "libx265"
        out = 0

        def mux(packets: list[Any]) -> None:
            nonlocal out
            for packet in packets:
                if restamp:
                    packet.pts = packet.dts = out
                out += 1
                container.mux(packet)

        for i, wire in enumerate(frames):
            rgb = av.VideoFrame.from_ndarray(wire_to_rgb(wire, fmt), format="rgb24")
            frame = rgb.reformat(format="yuv420p", dst_colorspace="ITU601")
            frame.pts = i
            mux(stream.encode(frame))
        mux(stream.encode(None))


def encode_clip(
    frames: Sequence[np.ndarray],
    fmt: VideoFormat,
    rate: Fraction,
    *,
    crf: int = 20,
    audio: None = None,
) -> EncodedClip:
    """Encode wire-order ``frames`` as H.264 or HEVC in MP4 (PyAV), per the module table.

    Parameters
    ----------
    frames : sequence of numpy.ndarray
        Wire-order frames (each ``fmt.frame_bytes`` uint8), consecutive.
    rate : Fraction
        Frames per second.
    crf : int
        Constant rate factor of libx264/libx265 (lower is better).
    audio : None
        Reserved for PS3.5 §8.2.12 audio; must be None.

    Raises
    ------
    LocalProtocolError
        For an empty clip, odd dimensions (4:2:0), audio, a size/rate no transfer
        syntax carries, or a container too large for one fragment.
    """
    import av  # PyAV only here: clip encoding (DESIGN.md §2)

    if audio is not None:
        raise LocalProtocolError("audio: clips with audio (PS3.5 §8.2.12) are not supported")
    if not frames:
        raise LocalProtocolError("frames: a clip needs at least one frame")
    if fmt.width % 2 or fmt.height % 2:
        raise LocalProtocolError("fmt: 4:2:0 video needs even width and height")
    syntax = choose_video_syntax(fmt, rate)
    # +faststart rewrites the file to move ``moov`` first; FFmpeg reopens the output by
    # name to do that, so the muxer writes to a private temporary file, not to memory.
    with tempfile.TemporaryDirectory(prefix="rtstream-clip-") as tmp:
        path = Path(tmp) / "clip.mp4"
        _mux(av, path, frames, fmt, rate, syntax, crf)
        data = _even(path.read_bytes())
    if len(data) > MAX_FRAGMENT:
        raise LocalProtocolError(
            f"frames: the encoded clip is {len(data):,} bytes, more than one fragment "
            f"holds ({MAX_FRAGMENT:,}); store it as several shorter clips"
        )
    return EncodedClip(
        data=data,
        syntax=syntax,
        container="mp4",
        number_of_frames=len(frames),
        rows=fmt.height,
        columns=fmt.width,
        frame_rate=rate,
    )
