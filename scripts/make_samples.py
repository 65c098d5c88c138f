#!/usr/bin/env python3
"""Write the generated files of ``samples/``: a short clip, a DICOM cine and example SDPs.

Everything is synthetic (numpy pictures, made-up patient), so the files are free of any
licence or privacy question. Run from the repository root::

    .venv/bin/python scripts/make_samples.py            # all of them, into samples/
    .venv/bin/python scripts/make_samples.py --out /tmp/s --no-sdp

* ``clip.mp4``: 3 s of 320x240 at 25 fps, H.264 (PyAV/libx264), an ultrasound-like sector
  with moving speckle and a frame counter bar; for ``--source file:samples/clip.mp4``.
* ``us-cine.dcm``: an Ultrasound Multi-frame Image (PS3.3 A.7), 20 frames of 160x120
  MONOCHROME2 at 25 fps (Frame Time 40 ms, Cine Module C.7.6.5); for
  ``--source dicom:samples/us-cine.dcm``.
* ``oct-cine.dcm`` (only with ``--oct``; not committed): a Multi-frame Grayscale Byte
  Secondary Capture (PS3.3 A.8.3) with Modality OPT, 10 synthetic OCT B-scans, for the
  stored-object tests of a modality that is neither ES nor XC.
* ``<config>.sdp`` for every ``samples/*.toml``: what ``rtstream sdp --config`` prints.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
SEED = 20260322


def sector_frames(width: int, height: int, count: int, seed: int = SEED) -> list[np.ndarray]:
    """Gray ultrasound-like pictures: a fan of speckle over a moving bright structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    apex_x, apex_y = width / 2, -height * 0.05
    r = np.hypot(xx - apex_x, yy - apex_y) / height
    theta = np.arctan2(xx - apex_x, yy - apex_y)
    fan = (np.abs(theta) < 0.62) & (r > 0.08) & (r < 1.0)
    speckle = rng.rayleigh(0.35, size=(height, width)).astype(np.float32)
    frames = []
    for i in range(count):
        phase = 2 * np.pi * i / count
        # a "vessel" wall that breathes and a blob that drifts across the fan
        wall = np.exp(-((r - 0.55 - 0.05 * np.sin(phase)) ** 2) / 0.0008)
        blob = np.exp(-((theta - 0.35 * np.sin(phase)) ** 2 / 0.01 + (r - 0.35) ** 2 / 0.004))
        drift = np.roll(speckle, i * 2, axis=0)
        img = (0.45 * drift + 0.9 * wall + 0.8 * blob) * (1.15 - r)
        img = np.where(fan, img, 0.0)
        frames.append(np.clip(img * 200, 0, 255).astype(np.uint8))
    return frames


def write_clip(path: Path, *, width: int = 320, height: int = 240, fps: int = 25,
               seconds: int = 3) -> None:
    """H.264 mp4 of the sector pictures with a moving counter bar (PyAV, libx264)."""
    import av

    frames = sector_frames(width, height, fps * seconds)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "30", "preset": "slow", "tune": "grain"}
        for i, gray in enumerate(frames):
            rgb = np.repeat(gray[:, :, None], 3, axis=2)
            bar = int((i + 1) * width / len(frames))
            rgb[height - 6:, :bar] = (40, 200, 120)  # progress bar: frames are distinguishable
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_cine(path: Path, *, width: int = 160, height: int = 120, count: int = 20,
               frame_time_ms: float = 40.0) -> None:
    """An Ultrasound Multi-frame Image with a Cine Module, native little endian."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        UID,
        ExplicitVRLittleEndian,
        UltrasoundMultiFrameImageStorage,
        generate_uid,
    )

    def uid(name: str) -> UID:
        return generate_uid(entropy_srcs=["rtstream sample", name])

    frames = sector_frames(width, height, count, seed=SEED + 1)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = uid("instance")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.PatientName = "Sample^Ultrasound"
    ds.PatientID = "RTS-SAMPLE-US"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = "SAMPLE-1"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.StudyDescription = "rtstream sample cine (synthetic)"
    ds.Modality = "US"
    ds.Laterality = ""
    ds.PatientOrientation = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "rtstream"
    ds.ManufacturerModelName = "scripts/make_samples.py"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = height, width
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = count
    ds.FrameIncrementPointer = (0x0018, 0x1063)  # Frame Time
    ds.FrameTime = f"{frame_time_ms:g}"
    ds.CineRate = round(1000 / frame_time_ms)
    ds.RecommendedDisplayFrameRate = round(1000 / frame_time_ms)
    ds.PixelData = np.stack(frames).tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_oct_cine(path: Path, *, width: int = 160, height: int = 96, count: int = 10,
                   frame_time_ms: float = 100.0) -> None:
    """A synthetic OCT cine: Multi-frame Grayscale Byte SC Image, Modality OPT (SC
    Equipment C.8.6.1, Conversion Type WSD), layered retina-like B-scans."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        generate_uid,
    )

    def uid(name: str) -> str:
        return str(generate_uid(entropy_srcs=["rtstream sample oct", name]))

    rng = np.random.default_rng(SEED + 2)
    y = np.arange(height)[:, None]
    x = np.arange(width)[None, :]
    frames = []
    for i in range(count):
        surface = height * 0.3 + 6 * np.sin(x / 17 + i / 3)
        layers = sum(np.exp(-((y - surface - d) ** 2) / 8) * a for d, a in ((0, 220), (12, 150), (30, 190)))
        noise = rng.normal(0, 12, (height, width))
        frames.append(np.clip(layers + noise + 10, 0, 255).astype(np.uint8))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MultiFrameGrayscaleByteSecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid("instance")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MultiFrameGrayscaleByteSecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.PatientName, ds.PatientID = "Sample^Retina", "RTS-SAMPLE-OCT"
    ds.PatientBirthDate = ds.PatientSex = ""
    ds.StudyDate = ds.ContentDate = "20260102"
    ds.StudyTime = ds.ContentTime = "093000"
    ds.TimezoneOffsetFromUTC = "+0100"
    ds.AccessionNumber, ds.StudyID = "SAMPLE-2", "OCT1"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "rtstream sample OCT (synthetic)"
    ds.Modality, ds.ConversionType = "OPT", "WSD"
    ds.Laterality = "R"
    ds.BodyPartExamined = "EYE"
    ds.PatientOrientation = ""
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "NO"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = height, width
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PresentationLUTShape = "IDENTITY"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.NumberOfFrames = count
    ds.FrameIncrementPointer = (0x0018, 0x1063)  # Frame Time
    ds.FrameTime = f"{frame_time_ms:g}"
    ds.PixelData = np.stack(frames).tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_sdps(out: Path) -> list[Path]:
    """``rtstream sdp --config X.toml > X.sdp`` for every sample configuration."""
    written = []
    for toml in sorted(SAMPLES.glob("*.toml")):
        res = subprocess.run(
            [sys.executable, "-m", "rtstream", "--log-level", "WARNING", "sdp", "--config",
             str(toml.relative_to(ROOT))],
            cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
        )
        path = out / f"{toml.stem}.sdp"
        path.write_text(res.stdout)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SAMPLES, help="output directory")
    parser.add_argument("--no-sdp", action="store_true", help="skip the SDP files")
    parser.add_argument("--oct", action="store_true", help="also write oct-cine.dcm (Modality OPT)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    write_clip(args.out / "clip.mp4")
    write_cine(args.out / "us-cine.dcm")
    paths = [args.out / "clip.mp4", args.out / "us-cine.dcm"]
    if args.oct:
        write_oct_cine(args.out / "oct-cine.dcm")
        paths.append(args.out / "oct-cine.dcm")
    if not args.no_sdp:
        paths += write_sdps(args.out)
    for p in paths:
        print(f"{p}  {p.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())


