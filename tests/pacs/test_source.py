"""``pacs:`` source: C-GET a stored cine from a real Orthanc and replay it like ``dicom:``."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG4HP41, UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from rtstream.errors import ConfigError
from rtstream.media.sources import VideoFrame
from rtstream.pacs.retrieve import (
    ArchiveUnreachable,
    InstanceLocation,
    InstanceNotFound,
    RetrieveConfig,
    RetrieveRefused,
    locate_instance,
    parse_pacs_spec,
    retrieve_instance,
)
from rtstream.pacs.source import PacsSource, open_video_source
from rtstream.proto.clock import FakeClock
from rtstream.proto.formats import Sampling, VideoFormat
from rtstream.proto.pixfmt import from_wire, to_wire
from tests.orthanc import Orthanc
from tests.peers import free_port

SC_MF_TRUE_COLOR = "1.2.840.10008.5.1.4.1.1.7.4"
VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
RGB = VideoFormat(sampling=Sampling.RGB, depth=8, width=64, height=48,
                  exactframerate=Fraction(25))


def _base(sop_class: str, ts: str, frames: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(ts)
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Cine^Pacs"
    ds.PatientID = "PACS-1"
    ds.PatientBirthDate = "19800203"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDescription = "Replay test"
    ds.AccessionNumber = "ACC-PACS"
    ds.StudyID = "1"
    ds.SeriesNumber = "1"
    ds.InstanceNumber = "1"
    ds.Modality = "ES" if sop_class == VIDEO_ENDOSCOPIC else "OT"
    ds.Rows, ds.Columns = 48, 64
    ds.NumberOfFrames = frames
    ds.FrameTime = "40"
    ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    return ds


def rgb_cine(path: Path) -> tuple[Dataset, np.ndarray]:
    """An 8-frame 64x48 RGB Multi-frame True Color SC, native (every frame different)."""
    rng = np.random.default_rng(14)
    pixels = rng.integers(0, 256, (8, 48, 64, 3), dtype=np.uint8)
    ds = _base(SC_MF_TRUE_COLOR, ExplicitVRLittleEndian, 8)
    ds.PhotometricInterpretation = "RGB"
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds, pixels


def h264_video(path: Path, tmp: Path) -> Dataset:
    """A 6-frame Video Endoscopic instance in MPEG-4 AVC/H.264 High Profile (PyAV)."""
    import av

    raw = tmp / "x.h264"
    with av.open(str(raw), "w", format="h264") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        for k in range(6):
            img = np.zeros((48, 64, 3), np.uint8)
            img[:, : 8 * (k + 1)] = (200, 40 * k, 90)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    ds = _base(VIDEO_ENDOSCOPIC, MPEG4HP41, 6)
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PixelData = encapsulate([raw.read_bytes()])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return ds


def c_store(o: Orthanc, path: Path) -> None:
    ds = pydicom.dcmread(path)
    ae = AE(ae_title="LOADER")
    ae.add_requested_context(ds.SOPClassUID, [str(ds.file_meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", o.dicom_port, ae_title=o.aet)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
        assert int(status.Status) == 0x0000
    finally:
        assoc.release()
        ae.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, dict[str, Path]]]:
    work = tmp_path_factory.mktemp("orthanc-pacs")
    o = Orthanc(
        work,
        extra={
            # C-GET only for AE titles the archive knows (as a real PACS is set up);
            # anyone may C-FIND (tests/orthanc.py), so NOGET gets as far as the C-GET.
            "DicomAlwaysAllowGet": False,
            "DicomModalities": {
                name.lower(): {"AET": name, "Host": "127.0.0.1", "Port": 1, "AllowGet": True}
                for name in ("RTSTREAM", "H14TEST")
            },
        },
    )
    files = {"rgb": work / "rgb.dcm", "h264": work / "h264.dcm"}
    rgb_cine(files["rgb"])
    h264_video(files["h264"], work)
    o.start()
    try:
        for p in files.values():
            c_store(o, p)
        yield o, files
    finally:
        o.stop()


async def take(src: PacsSource | object, f: VideoFormat, n: int = 100) -> list[VideoFrame]:
    from rtstream.media.sources import VideoSource

    assert isinstance(src, VideoSource)
    clock = FakeClock(10**18)  # frame 0 at t=0 of a far later clock: nothing waits
    conv = lambda im, pf: im if pf == "wire" else to_wire(im, pf, f)  # noqa: E731
    out: list[VideoFrame] = []
    async for frame in src.frames(f, clock, start_ns=0, convert=conv):
        out.append(frame)
        if len(out) == n:
            break
    return out


async def test_pacs_native_cine_frames_byte_exact_and_context(
    archive: tuple[Orthanc, dict[str, Path]],
) -> None:
    o, files = archive
    original = pydicom.dcmread(files["rgb"])
    pixels = original.pixel_array
    src = open_video_source(f"pacs:{o.target}/{original.SOPInstanceUID}")
    assert isinstance(src, PacsSource)
    assert src.native_size == (64, 48) and src.native_rate == Fraction(25)
    assert src.frames_in_file == 8
    assert src.context["patient_name"] == "Cine^Pacs"
    assert src.context["patient_id"] == "PACS-1"
    assert src.context["study_instance_uid"] == original.StudyInstanceUID
    assert src.context["accession_number"] == "ACC-PACS"
    # The retrieved file holds exactly the data set the archive stores.
    fetched = pydicom.dcmread(src.path)
    assert fetched.SOPInstanceUID == original.SOPInstanceUID
    assert fetched.PixelData == original.PixelData
    frames = await take(src, RGB)
    assert len(frames) == 8
    for i, fr in enumerate(frames):
        assert fr.index == i and fr.capture_ns == int(i * RGB.frame_duration_ns)
        assert np.array_equal(from_wire(fr.image, RGB, "rgb24").reshape(48, 64, 3), pixels[i])
    tmpdir = src.path.parent
    src.cleanup()
    assert not tmpdir.exists()


async def test_pacs_h264_video_endoscopic_replays_like_dicom(
    archive: tuple[Orthanc, dict[str, Path]], tmp_path: Path
) -> None:
    o, files = archive
    original = pydicom.dcmread(files["h264"])
    src = open_video_source(f"pacs:{o.target}/{original.SOPInstanceUID}", loop=True)
    assert isinstance(src, PacsSource)
    assert src.ts == MPEG4HP41 and src.context["patient_id"] == "PACS-1"
    got = await take(src, RGB, 9)  # looping: 6 frames then the first 3 again
    want = await take(open_video_source(f"dicom:{files['h264']}"), RGB)
    assert len(want) == 6 and len(got) == 9
    for i, fr in enumerate(got):
        assert np.array_equal(fr.image, want[i % 6].image), i
    src.cleanup()


def test_locate_and_retrieve_directly(
    archive: tuple[Orthanc, dict[str, Path]], tmp_path: Path
) -> None:
    o, files = archive
    original = pydicom.dcmread(files["rgb"])
    cfg = RetrieveConfig.from_target(o.target, calling_aet="H14TEST")
    loc = locate_instance(cfg, original.SOPInstanceUID)
    assert loc is not None
    assert loc.study_instance_uid == original.StudyInstanceUID
    assert loc.series_instance_uid == original.SeriesInstanceUID
    assert locate_instance(cfg, "1.2.3.4.5.6.7") is None
    path = retrieve_instance(cfg, original.SOPInstanceUID, tmp_path)
    assert path == tmp_path / f"{original.SOPInstanceUID}.dcm"
    again = pydicom.dcmread(path)
    assert again.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert again.PixelData == original.PixelData
    with pytest.raises(InstanceNotFound, match="1.2.3.4.5.6.7"):
        retrieve_instance(cfg, "1.2.3.4.5.6.7", tmp_path)
    # Without a C-FIND (an archive that only allows retrieval): the UID alone and the
    # fixed list of cine storage classes, here for the H.264 Video Endoscopic instance.
    video = pydicom.dcmread(files["h264"])
    blind = InstanceLocation(sop_instance_uid=video.SOPInstanceUID)
    (tmp_path / "blind").mkdir()
    got = retrieve_instance(cfg, video.SOPInstanceUID, tmp_path / "blind", location=blind)
    assert got.read_bytes()[132:] and pydicom.dcmread(got).PixelData == video.PixelData
    assert pydicom.dcmread(got).file_meta.TransferSyntaxUID == MPEG4HP41


def test_unknown_uid_refused_and_unreachable(archive: tuple[Orthanc, dict[str, Path]]) -> None:
    o, files = archive
    with pytest.raises(ConfigError) as err:
        open_video_source(f"pacs:{o.target}/1.2.826.0.1.999")
    assert err.value.key == "--source" and "1.2.826.0.1.999" in str(err.value)
    assert "no instance" in str(err.value)

    uid = pydicom.dcmread(files["rgb"]).SOPInstanceUID
    with pytest.raises(RetrieveRefused):
        retrieve_instance(
            RetrieveConfig.from_target(o.target, calling_aet="NOGET"), uid, files["rgb"].parent
        )
    with pytest.raises(ConfigError) as err:
        PacsSource(f"pacs:{o.target}/{uid}", calling_aet="NOGET")
    assert "retrieve" in str(err.value) and o.target in str(err.value)
    assert "C-GET from our AE title 'NOGET'" in str(err.value)

    dead = free_port(kind=socket.SOCK_STREAM)
    spec = f"pacs:NOBODY@127.0.0.1:{dead}/{uid}"
    with pytest.raises(ConfigError) as err:
        open_video_source(spec)
    assert spec in str(err.value) and "not reachable" in str(err.value)
    with pytest.raises(ArchiveUnreachable):
        retrieve_instance(RetrieveConfig(host="127.0.0.1", port=dead, called_aet="X",
                                         timeout=2), uid, files["rgb"].parent)


@pytest.mark.parametrize(
    "spec",
    [
        "pacs:ORTHANC@127.0.0.1:4242",
        "pacs:ORTHANC@127.0.0.1:4242/",
        "pacs:ORTHANC@127.0.0.1:4242/1.2.x",
        "pacs:ORTHANC@127.0.0.1:4242/01.2",
        "pacs:127.0.0.1:4242/1.2.3",
        "pacs:ORTHANC@127.0.0.1:0/1.2.3",
        "pacs:ORTHANC@127.0.0.1/1.2.3",
        "pacs:WAYTOOLONGAETITLE@127.0.0.1:4242/1.2.3",
        "pacs:ORTHANC@127.0.0.1:4242/" + "1." * 40 + "1",
    ],
)
def test_bad_pacs_specs(spec: str) -> None:
    with pytest.raises(ConfigError) as err:
        open_video_source(spec)
    assert err.value.key == "--source" and "pacs:AET@HOST:PORT/" in str(err.value)


def test_parse_pacs_spec() -> None:
    cfg, uid = parse_pacs_spec("pacs:ARCH@[::1]:11112/1.2.840.10008.1", calling_aet="ME")
    assert (cfg.called_aet, cfg.host, cfg.port, cfg.calling_aet, uid) == (
        "ARCH", "::1", 11112, "ME", "1.2.840.10008.1"
    )
    assert cfg.where == "ARCH@::1:11112"

