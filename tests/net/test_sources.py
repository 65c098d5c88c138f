"""Media sources: each kind yields frames of the requested format; bad specs are clear errors."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from rtstream.errors import ConfigError
from rtstream.media.sources import (
    DicomSource,
    VideoFrame,
    open_audio_source,
    open_video_source,
)
from rtstream.media.testsrc import SectorGenerator, render_text
from rtstream.proto.clock import FakeClock
from rtstream.proto.formats import AudioFormat, Sampling, VideoFormat
from rtstream.proto.pixfmt import from_wire, to_wire
from tests.peers import require_program

FMT = VideoFormat(sampling=Sampling.YCBCR_422, depth=10, width=320, height=240,
                  exactframerate=Fraction(30))


def fmt(sampling: Sampling = Sampling.YCBCR_422, depth: int = 10, w: int = 320, h: int = 240,
        fps: int = 30) -> VideoFormat:
    return VideoFormat(sampling=sampling, depth=depth, width=w, height=h,
                       exactframerate=Fraction(fps))


async def take(spec: str, f: VideoFormat, n: int, *, loop: bool = False) -> list[VideoFrame]:
    src = open_video_source(spec, loop=loop)
    out: list[VideoFrame] = []
    # Frame 0 captured at t=0 of a clock far later: nothing waits, stamps stay nominal.
    clock = FakeClock(10**18)
    conv = lambda im, pf: im if pf == "wire" else to_wire(im, pf, f)  # noqa: E731
    async for frame in src.frames(f, clock, start_ns=0, convert=conv):
        out.append(frame)
        if len(out) == n:
            break
    src.close()
    return out


def check_frames(frames: list[VideoFrame], f: VideoFormat) -> None:
    for i, fr in enumerate(frames):
        assert fr.index == i and fr.pix_fmt == "wire"
        assert fr.image.dtype == np.uint8 and fr.image.size == f.frame_bytes
        assert fr.capture_ns == int(i * f.frame_duration_ns)


@pytest.mark.parametrize(
    ("sampling", "depth"),
    [(Sampling.YCBCR_422, 10), (Sampling.YCBCR_422, 8), (Sampling.RGB, 8), (Sampling.YCBCR_420, 8),
     (Sampling.YCBCR_444, 10)],
)
async def test_testsrc_every_sampling(sampling: Sampling, depth: int) -> None:
    f = fmt(sampling, depth)
    frames = await take("testsrc", f, 3)
    check_frames(frames, f)
    # Each frame differs (moving speckle + counter); the picture is not blank.
    assert not np.array_equal(frames[0].image, frames[1].image)
    rgb = from_wire(frames[0].image, f, "rgb24")
    assert rgb.max() > 150 and rgb.min() < 40


def test_testsrc_direct_wire_packing_matches_pixfmt() -> None:
    # The generator writes 4:2:2 pgroups itself; they must survive the reference codec.
    for depth, pix in ((10, "yuv422p10le"), (8, "rgb24")):
        f = fmt(Sampling.YCBCR_422, depth)
        gen = SectorGenerator(f, cycle=2)
        wire = gen.frame(5, 123_456_789_000).reshape(-1).copy()
        planar = from_wire(wire, f, pix)
        if depth == 10:
            assert np.array_equal(to_wire(planar, pix, f), wire)
            assert set(np.unique(planar[1])) == {512} and set(np.unique(planar[2])) == {512}
        else:
            gray = planar[:, :, 0].astype(int)
            assert np.abs(gray - planar[:, :, 1]).max() <= 2  # neutral chroma: R = G = B


def test_testsrc_counter_is_burned_in() -> None:
    f = fmt(Sampling.RGB, 8)
    gen = SectorGenerator(f, cycle=2)
    a = gen.frame(0, 0).copy()
    b = gen.frame(2, 0).copy()  # same cycle slot (0,1,0,1...): only the counter differs
    diff = np.argwhere((a != b).any(axis=2))
    assert len(diff) > 0
    top, left = gen._text_origin
    assert diff[:, 0].min() >= top and diff[:, 1].min() >= left
    assert render_text("0", 1).tolist() == [[1, 1, 1, 0], [1, 0, 1, 0], [1, 0, 1, 0],
                                           [1, 0, 1, 0], [1, 1, 1, 0]]


async def test_raw_source_and_loop(tmp_path: Path) -> None:
    f = fmt(Sampling.YCBCR_422, 8, 64, 16)
    data = np.random.default_rng(3).integers(0, 256, 3 * f.frame_bytes, dtype=np.uint8)
    p = tmp_path / "x.raw"
    data.tofile(p)
    frames = await take(f"raw:{p}", f, 7, loop=True)
    check_frames(frames, f)
    for i, fr in enumerate(frames):
        j = i % 3
        assert np.array_equal(fr.image, data[j * f.frame_bytes : (j + 1) * f.frame_bytes])
    # Without --loop the source ends after the file.
    assert len(await take(f"raw:{p}", f, 10)) == 3


async def test_raw_source_of_the_wrong_size(tmp_path: Path) -> None:
    p = tmp_path / "bad.raw"
    p.write_bytes(b"\0" * 1001)
    with pytest.raises(ConfigError, match="whole 64x16"):
        await take(f"raw:{p}", fmt(Sampling.YCBCR_422, 8, 64, 16), 1)


async def test_file_source_via_pyav(tmp_path: Path) -> None:
    ffmpeg = require_program("ffmpeg")
    clip = tmp_path / "clip.mkv"
    subprocess.run([ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=size=160x120:rate=25", "-frames:v", "5", "-c:v", "ffv1", str(clip)],
                   check=True, timeout=60)
    src = open_video_source(f"file:{clip}")
    assert src.native_size == (160, 120) and src.native_rate == Fraction(25)
    src.close()
    f = fmt(Sampling.YCBCR_422, 10, 160, 120, 25)
    frames = await take(f"file:{clip}", f, 20)
    assert len(frames) == 5
    check_frames(frames, f)
    looped = await take(f"file:{clip}", f, 12, loop=True)
    assert len(looped) == 12
    assert np.array_equal(looped[0].image, looped[5].image)


async def test_device_path_with_lavfi() -> None:
    # Device capture goes through the same PyAV demux/decode path; lavfi needs no hardware.
    src = open_video_source("lavfi:testsrc=size=640x480:rate=30")
    assert src.native_size == (640, 480) and src.native_rate == Fraction(30)
    src.close()
    f = fmt(Sampling.RGB, 8, 320, 240)
    frames = await take("lavfi:testsrc=size=640x480:rate=30", f, 4)
    check_frames(frames, f)


def test_absent_devices_are_clear_errors() -> None:
    with pytest.raises(ConfigError) as err:
        open_video_source("v4l2:/dev/video97")
    assert "/dev/video97 is absent" in str(err.value)
    with pytest.raises(ConfigError) as err:
        open_audio_source("alsa:hw:97")
    assert err.value.key == "--audio-source"


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ("bogus:thing", "one of testsrc"),
        ("file:/no/such/file.mp4", "not found"),
        ("dicom:/no/such.dcm", "not found"),
        ("raw:/no/such.raw", "not found"),
        ("file:", "an argument after 'file:'"),
        ("pacs:ARCH@127.0.0.1:104", "rtstream.pacs.source"),  # retrieval lives above media/
        ("alsa:hw:0", "use --audio-source"),
        ("lavfi:nosuchfilter=1", "PyAV"),
    ],
)
def test_bad_specs(spec: str, text: str) -> None:
    with pytest.raises(ConfigError) as err:
        open_video_source(spec)
    assert err.value.key == "--source" and text in str(err.value)


def test_not_dicom(tmp_path: Path) -> None:
    p = tmp_path / "x.dcm"
    p.write_bytes(b"hello")
    with pytest.raises(ConfigError, match="readable DICOM"):
        open_video_source(f"dicom:{p}")


def _cine() -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("color3d_jpeg_baseline.dcm", download=False)
    assert path is not None
    return Path(path)


async def test_dicom_jpeg_cine_from_pydicom_data() -> None:
    p = _cine()
    src = open_video_source(f"dicom:{p}")
    assert isinstance(src, DicomSource)
    assert src.native_size == (640, 480) and src.native_rate == Fraction(30)
    assert src.frames_in_file == 120
    assert src.context["patient_name"]  # taken from the file
    src.close()
    f = fmt(Sampling.RGB, 8, 640, 480)
    frames = await take(f"dicom:{p}", f, 3)
    check_frames(frames, f)
    import pydicom

    first = pydicom.dcmread(p).pixel_array[0]
    rgb = from_wire(frames[0].image, f, "rgb24").astype(int)
    assert np.abs(rgb - first.astype(int)).mean() < 3


async def test_dicom_native_and_h264(tmp_path: Path) -> None:
    import av
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import MPEG4HP41, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(5)
    gray = rng.integers(0, 256, (6, 48, 64), dtype=np.uint8)

    def base(ts: str) -> Dataset:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientName = "Cine^Test"
        ds.PatientID = "CINE-1"
        ds.Rows, ds.Columns = 48, 64
        ds.NumberOfFrames = 6
        ds.FrameTime = "40"
        ds.BitsAllocated = 8
        ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        return ds

    native = base(ExplicitVRLittleEndian)
    native.SamplesPerPixel = 1
    native.PhotometricInterpretation = "MONOCHROME2"
    native.PixelData = gray.tobytes()
    p1 = tmp_path / "native.dcm"
    native.save_as(p1, enforce_file_format=True)

    out = tmp_path / "x.h264"
    with av.open(str(out), "w", format="h264") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        for k in range(6):
            frame = av.VideoFrame.from_ndarray(np.repeat(gray[k][:, :, None], 3, 2), format="rgb24")
            for pkt in st.encode(frame):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    h264 = base(MPEG4HP41)
    h264.SamplesPerPixel = 3
    h264.PhotometricInterpretation = "YBR_PARTIAL_420"
    h264.PlanarConfiguration = 0
    h264.PixelData = encapsulate([out.read_bytes()])
    h264["PixelData"].VR = "OB"
    p2 = tmp_path / "h264.dcm"
    h264.save_as(p2, enforce_file_format=True)

    f = fmt(Sampling.RGB, 8, 64, 48, 25)
    for p, tol in ((p1, 1.0), (p2, 12.0)):
        src = open_video_source(f"dicom:{p}")
        assert src.native_rate == Fraction(25)
        assert src.context["patient_name"] == "Cine^Test" and src.context["patient_id"] == "CINE-1"
        src.close()
        frames = await take(f"dicom:{p}", f, 10)
        assert len(frames) == 6
        check_frames(frames, f)
        rgb = from_wire(frames[2].image, f, "rgb24").astype(int)
        assert np.abs(rgb[:, :, 1] - gray[2].astype(int)).mean() < tol, p
    assert pydicom.dcmread(p2).file_meta.TransferSyntaxUID == MPEG4HP41


async def test_audio_sources() -> None:
    a = AudioFormat(sample_rate=48_000, channels=2)
    clock = FakeClock(10**18)
    tone = open_audio_source("tone")
    chunks = []
    async for c in tone.chunks(a, clock, start_ns=0):
        chunks.append(c)
        if len(chunks) == 3:
            break
    assert [c.capture_ns for c in chunks] == [0, 10_000_000, 20_000_000]
    s = np.concatenate([c.samples for c in chunks])
    assert s.shape == (1440, 2) and s.dtype == np.int32
    spectrum = np.abs(np.fft.rfft(s[:, 0]))
    assert np.argmax(spectrum) * 48_000 / 1440 == pytest.approx(1000, abs=40)
    lav = open_audio_source("lavfi:sine=frequency=1000:sample_rate=48000")
    got = []
    async for c in lav.chunks(a, clock, start_ns=0):
        got.append(c)
        if len(got) == 2:
            break
    lav.close()
    assert got[0].samples.shape == (480, 2) and np.abs(got[0].samples).max() > 1000
    with pytest.raises(ConfigError):
        open_audio_source("speaker:1")
