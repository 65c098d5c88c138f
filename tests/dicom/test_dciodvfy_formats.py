"""Stored instances of every sampling x depth pair pass dciodvfy with no Error line.

For each of the 16 pairs (and interlaced video): a VL Endoscopic snapshot (RGB 8-bit),
a Secondary Capture snapshot holding the streamed samples at full depth (PS3.5 A.8 bits,
checked to give the wire frame back exactly) and an H.264 clip.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pydicom
import pytest

from rtstream.dicom.realtime import RtvSop
from rtstream.dicom.stored import build_clip, build_snapshot, save_new
from rtstream.proto.formats import SUPPORTED_VIDEO, Sampling, VideoFormat, sample_bits
from rtstream.proto.pixfmt import dicom_to_wire, to_wire
from tests.dicom.test_dciodvfy import dciodvfy
from tests.dicom.test_stored import ORIGIN, bars_image, make_static

CASES = [
    *[(s, d, False) for s, d in sorted(SUPPORTED_VIDEO, key=lambda x: (x[0].value, x[1]))],
    (Sampling.YCBCR_422, 10, True),
    (Sampling.RGB, 12, True),
]


def no_errors(path: Path) -> None:
    lines = dciodvfy(path)
    errors = [line for line in lines if "Error" in line]
    assert not errors, "\n".join(lines)


@pytest.mark.peer("dciodvfy")
@pytest.mark.parametrize(("sampling", "depth", "interlaced"), CASES)
def test_every_format_stores_clean(tmp_path: Path, sampling: Sampling, depth: int,
                                   interlaced: bool) -> None:
    fmt = VideoFormat(sampling=sampling, depth=depth, width=160, height=120,
                      exactframerate=Fraction(30), interlaced=interlaced)
    static = make_static(RtvSop.ENDOSCOPIC, fmt)
    wire = to_wire(bars_image(fmt), "rgb24", fmt)
    vl = build_snapshot(wire, fmt, static, rtv_sop_instance_uid=static.SOPInstanceUID,
                        origin=ORIGIN, series_instance_uid="1.2.3.99")
    assert vl.BitsAllocated == 8 and vl.PhotometricInterpretation == "RGB"
    no_errors(save_new(vl, tmp_path))

    sc_static = make_static(RtvSop.ENDOSCOPIC, fmt)
    sc_static.SOPClassUID = "1.2.840.10008.10.3"  # not a video class: Secondary Capture
    sc = build_snapshot(wire, fmt, sc_static, rtv_sop_instance_uid="1.2.3", origin=ORIGIN,
                        series_instance_uid="1.2.3.97")
    path = save_new(sc, tmp_path)
    no_errors(path)
    back = pydicom.dcmread(path)
    assert (back.BitsAllocated, back.BitsStored, back.HighBit) == sample_bits(depth)
    assert back.PhotometricInterpretation == ("RGB" if sampling is Sampling.RGB else "YBR_FULL")
    assert dicom_to_wire(bytes(back.PixelData), fmt, full_chroma=True).tobytes() == wire.tobytes()

    frames = [to_wire(bars_image(fmt, i), "rgb24", fmt) for i in range(4)]
    clip = build_clip(frames, fmt, static, rtv_sop_instance_uid=static.SOPInstanceUID,
                      origin=ORIGIN, series_instance_uid="1.2.3.98")
    assert int(clip.NumberOfFrames) == 4
    no_errors(save_new(clip, tmp_path))
    assert np.frombuffer(bytes(back.PixelData), np.uint8).size > 0
