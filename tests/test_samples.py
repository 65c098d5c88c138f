"""samples/: the configurations load, the SDPs parse, the media files play as sources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from rtstream.proto.sdp import parse_sdp
from rtstream.sender import Sender, load_sender_config
from tests.peers import free_port

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
CONFIGS = sorted(SAMPLES.glob("*.toml"))
USES = ("ultrasound-remote-view", "surgery-multicast", "archive-recording")
RTSTREAM = [sys.executable, "-m", "rtstream", "--log-level", "WARNING"]


def test_the_three_uses_have_a_config_and_an_sdp() -> None:
    for use in USES:
        assert (SAMPLES / f"{use}.toml").is_file()
        assert (SAMPLES / f"{use}.sdp").is_file()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # sources are named relative to the repository root
    cfg = load_sender_config(path)
    tx = Sender(cfg)  # opens the source: the file it names exists and is readable
    try:
        assert tx.fmt.width > 0 and tx.fmt.height > 0
    finally:
        tx.source.close()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_sdp_parses_and_matches_its_config(path: Path) -> None:
    sdp = parse_sdp((SAMPLES / f"{path.stem}.sdp").read_text())
    cfg = load_sender_config(path)
    video, meta = sdp.video(), sdp.metadata()
    assert len(video) == 1 and meta
    assert video[0].port == cfg.network.ports()[0]
    assert video[0].address == cfg.network.dest
    assert video[0].video is not None and video[0].video.sampling is cfg.video.sampling
    assert video[0].video.depth == cfg.video.depth
    assert bool(sdp.audio()) == cfg.audio.enabled
    assert sdp.session_name == cfg.session_name


def test_generated_media_are_small_and_what_they_claim() -> None:
    clip, cine = SAMPLES / "clip.mp4", SAMPLES / "us-cine.dcm"
    assert clip.stat().st_size < 300_000
    assert cine.stat().st_size < 500_000
    ds = pydicom.dcmread(cine)
    assert ds.SOPClassUID.name == "Ultrasound Multi-frame Image Storage"
    assert int(ds.NumberOfFrames) > 1 and float(ds.FrameTime) > 0
    assert ds.pixel_array.shape == (int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    assert ds.pixel_array.std() > 0
    import av

    with av.open(str(clip)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in c.decode(video=0)) >= 50


def test_make_samples_script_writes_the_media(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_samples.py"),
                          "--out", str(tmp_path), "--no-sdp"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    a, b = pydicom.dcmread(tmp_path / "us-cine.dcm"), pydicom.dcmread(SAMPLES / "us-cine.dcm")
    assert a.PixelData == b.PixelData  # deterministic: regenerating changes nothing
    assert a.SOPInstanceUID == b.SOPInstanceUID
    assert (tmp_path / "clip.mp4").stat().st_size < 300_000


@pytest.mark.parametrize("source", ["dicom:samples/us-cine.dcm", "file:samples/clip.mp4"])
def test_send_replays_the_sample(source: str, tmp_path: Path) -> None:
    port = free_port(count=4, step=2)
    dump = tmp_path / "frames"
    res = subprocess.run(
        [*RTSTREAM, "send", "--source", source, "--dest", f"127.0.0.1:{port}", "--frames", "5",
         "--depth", "8", "--pacing", "none", "--dump-frames", str(dump),
         "--sdp-out", str(tmp_path / "s.sdp")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    frames = sorted(dump.glob("*.raw"))
    assert len(frames) == 5
    sdp = parse_sdp((tmp_path / "s.sdp").read_text())
    fmt = sdp.video()[0].video
    assert fmt is not None
    assert all(f.stat().st_size == fmt.frame_bytes for f in frames)
    # successive frames differ: the sample moves
    assert frames[0].read_bytes() != frames[-1].read_bytes()
