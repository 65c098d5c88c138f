"""Audio end to end: one metadata grain per audio packet, and audio into the archive.

The real :class:`~rtstream.sender.Sender` sends on 127.0.0.1; the receiver records a clip
with its audio (a General Audio Waveform instance referencing the clip), or audio alone
from an audio-only SDP (``--record-audio``). Stored instances are checked with dciodvfy
and sent to a real Orthanc.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from rtstream.dicom.waveform import GENERAL_AUDIO_WAVEFORM_STORAGE, to_int16
from rtstream.net.udp import UdpReceiver
from rtstream.proto.formats import AudioEncoding
from rtstream.proto.rtp import parse_rtp
from rtstream.proto.sdp import SdpSession, write_sdp
from rtstream.receiver import ItemKind, ReceivedItem, Receiver, ReceiverConfig
from rtstream.sender import Sender, load_sender_config
from tests.net.test_sender import RTV_AUDIO, drain_all, grains, send
from tests.orthanc import Orthanc
from tests.pacs.conftest import orthanc  # noqa: F401 - the module's Orthanc fixture
from tests.peers import free_port, require_program

BASIC_VOICE_AUDIO = "1.2.840.10008.5.1.4.1.1.9.4.1"


def dciodvfy_errors(path: Path) -> list[str]:
    prog = require_program("dciodvfy")
    out = subprocess.run([prog, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def check_waveform_with_dciodvfy(ds: pydicom.Dataset, tmp_path: Path) -> None:
    """dicom3tools 1.00 has no General Audio Waveform definition ("Information Object
    Not found" is its only complaint); its modules are those of Basic Voice Audio
    (Patient, Study, Series, Equipment, Waveform Identification, Waveform, Acquisition
    Context, SOP Common), which it does know: the same data set under that class must
    give no Error line at all."""
    path = tmp_path / "gaw.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == ["Error - Information Object Not found"]
    relabelled = pydicom.dcmread(path)
    relabelled.SOPClassUID = BASIC_VOICE_AUDIO
    relabelled.file_meta.MediaStorageSOPClassUID = BASIC_VOICE_AUDIO
    other = tmp_path / "as-bva.dcm"
    relabelled.save_as(other, enforce_file_format=True)
    assert dciodvfy_errors(other) == []


def sender_config(port: int, **extra: Any) -> Any:
    return load_sender_config(None, {
        "source": "testsrc",
        "video": {"width": 160, "height": 120, "fps": 30, "depth": 8},
        "audio": {"enabled": True},
        "network": {"dest": "127.0.0.1", "port": port},
        "context": {"patient_name": "Audio^Test", "patient_id": "RTS-AUD"},
        **extra,
    })


def test_one_metadata_grain_per_audio_packet(tmp_path: Path) -> None:
    port = free_port(count=4, step=2)
    rxs = [UdpReceiver("127.0.0.1", port + k, rcvbuf=64 << 20) for k in (4, 6)]
    try:
        assert send("--dest", f"127.0.0.1:{port}", "--video", "160x120@30", "--depth", "8",
                    "--frames", "30", "--audio", "--sdp-out", str(tmp_path / "s.sdp")) == 0
        audio, ameta = (drain_all(r) for r in rxs)
    finally:
        for r in rxs:
            r.close()
    packet_ts = [parse_rtp(d).timestamp for d in audio]
    events = grains(ameta)
    assert len(packet_ts) >= 900  # ~1 s of 1 ms packets
    # every packet but possibly the last few (the run stops between grains and packets)
    grain_ts = [e.rtp_timestamp for e in events]
    assert len(set(grain_ts)) == len(grain_ts)
    assert set(grain_ts) == set(packet_ts)
    for e in events:
        assert e.grain.meta.sop_class_uid == RTV_AUDIO
        assert e.extension.grain_duration == Fraction(1, 1000)  # one ptime
    assert any(e.grain.has_static for e in events)


async def _record(tmp_path: Path, rx_cfg: dict[str, Any], sdp_filter: Any = None,
                  wait_for: int = 2) -> tuple[list[pydicom.Dataset], list[ReceivedItem]]:
    """Run a Sender and a Receiver storing into a folder; the stored instances and the
    audio items the receiver delivered."""
    port = free_port(count=4, step=2)
    store = tmp_path / "store"
    async with Sender(sender_config(port, duration=8.0)) as tx:
        session = tx.sdp if sdp_filter is None else sdp_filter(tx.sdp)
        sdp = tmp_path / "rx.sdp"
        sdp.write_text(write_sdp(session))
        cfg = ReceiverConfig(sdp=str(sdp), store_dir=store, outbox=tmp_path / "outbox", **rx_cfg)
        audio: list[ReceivedItem] = []
        run = asyncio.create_task(tx.run())
        try:
            async with Receiver(cfg) as rx:
                async with asyncio.timeout(20):
                    async for item in rx:
                        if item.kind is ItemKind.AUDIO:
                            audio.append(item)
                        if len(list(store.glob("*.dcm"))) >= wait_for:
                            break
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
    return [pydicom.dcmread(p) for p in sorted(store.glob("*.dcm"))], audio


def _contained(stored: np.ndarray, audio: list[ReceivedItem]) -> bool:
    """Whether ``stored`` is a contiguous run of the delivered audio, rounded to 16 bits."""
    whole, _ = to_int16(np.concatenate([i.audio for i in audio if i.audio is not None]),
                        AudioEncoding.L24)
    n = len(stored)
    for start in range(len(whole) - n + 1):
        if np.array_equal(whole[start : start + n], stored):
            return True
    return False


def _samples(ds: pydicom.Dataset) -> np.ndarray:
    group = ds.WaveformSequence[0]
    data = np.frombuffer(group.WaveformData, "<i2")
    return data.reshape(-1, int(group.NumberOfWaveformChannels))


async def test_clip_with_audio_stores_a_waveform_referencing_the_clip(tmp_path: Path) -> None:
    stored, audio = await _record(tmp_path, {"record": 1.0})
    by_class = {str(ds.SOPClassUID): ds for ds in stored}
    wave = by_class.pop(GENERAL_AUDIO_WAVEFORM_STORAGE)
    (clip,) = by_class.values()
    assert int(clip.NumberOfFrames) == 30
    assert wave.Modality == "AU"
    assert wave.PatientID == clip.PatientID == "RTS-AUD"
    assert wave.StudyInstanceUID == clip.StudyInstanceUID
    assert wave.SeriesInstanceUID != clip.SeriesInstanceUID
    refs = {str(r.ReferencedSOPInstanceUID): str(r.ReferencedSOPClassUID)
            for r in wave.ReferencedInstanceSequence}
    assert refs[str(clip.SOPInstanceUID)] == str(clip.SOPClassUID)
    assert RTV_AUDIO in refs.values()
    group = wave.WaveformSequence[0]
    assert int(group.SamplingFrequency) == 48000 and int(group.NumberOfWaveformChannels) == 2
    samples = _samples(wave)
    assert len(samples) == int(group.NumberOfWaveformSamples) == 48000  # the clip's 1 s
    assert np.abs(samples).max() > 1000  # the tone, not silence
    assert _contained(samples, audio)
    check_waveform_with_dciodvfy(wave, tmp_path)


def audio_only(session: SdpSession) -> SdpSession:
    return SdpSession(origin_address=session.origin_address, session_name=session.session_name,
                      session_id=session.session_id,
                      media=tuple(m for m in session.media if m.mid in ("AUD", "AMETA")))


async def test_record_audio_on_an_audio_only_stream(tmp_path: Path) -> None:
    stored, audio = await _record(tmp_path, {"record_audio": 0.5}, audio_only, wait_for=1)
    (wave,) = stored
    assert str(wave.SOPClassUID) == GENERAL_AUDIO_WAVEFORM_STORAGE
    assert wave.PatientName == "Audio^Test"
    samples = _samples(wave)
    assert len(samples) == 24000
    assert _contained(samples, audio)
    (ref,) = wave.ReferencedInstanceSequence
    assert ref.ReferencedSOPClassUID == RTV_AUDIO
    check_waveform_with_dciodvfy(wave, tmp_path)


@pytest.mark.peer("Orthanc")
async def test_waveform_into_orthanc(orthanc: Orthanc, tmp_path: Path) -> None:  # noqa: F811
    stored, _ = await _record(tmp_path, {"record_audio": 0.25}, audio_only, wait_for=1)
    (wave,) = stored
    from rtstream.pacs.store import StoreClient
    from tests.pacs.test_store import fast

    async with StoreClient(fast(tmp_path / "outbox2", orthanc.target)) as sc:
        result = await sc.submit(wave)
        assert result.ok and result.status == 0, result
    back = pydicom.dcmread(io.BytesIO(orthanc.file(wave.SOPInstanceUID)))
    assert back.SOPClassUID == GENERAL_AUDIO_WAVEFORM_STORAGE
    assert back.WaveformSequence[0].WaveformData == wave.WaveformSequence[0].WaveformData


@pytest.mark.parametrize(("args", "says"), [
    (("receive", "--sdp", "x.sdp", "--record-audio", "2"), "--record-audio"),
    (("receive", "--sdp", "x.sdp", "--record-audio", "0", "--store-dir", "d"), "--record-audio"),
    (("send", "--source", "testsrc", "--source", "testsrc", "--source", "testsrc", "--frames", "1"),
     "--source"),
])
def test_flag_errors_name_the_flag(args: tuple[str, ...], says: str, tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "rtstream", *args], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert res.returncode != 0
    last = [ln for ln in res.stderr.splitlines() if ln.strip()][-1]
    assert says in last, res.stderr


def test_record_audio_without_an_audio_flow_is_refused(tmp_path: Path) -> None:
    from rtstream.errors import LocalProtocolError
    from rtstream.receiver.capture import Capture
    from rtstream.sysclock import SystemClock

    cap = Capture(ReceiverConfig(sdp="x.sdp"), SystemClock(), [], [])
    with pytest.raises(LocalProtocolError, match="no audio flow"):
        cap.record_audio_start(1.0)


@pytest.mark.peer("gst-launch-1.0")
async def test_record_audio_from_gstreamer_without_metadata_is_sample_exact(tmp_path: Path) -> None:
    """A third-party ST 2110-30 sender (GStreamer rtpL16pay, no DICOM-RTV metadata): with
    the site's identity the receiver stores the audio, sample for sample what
    audiotestsrc made."""
    from rtstream.proto.formats import AudioFormat
    from rtstream.proto.sdp import MediaKind, SdpMedia
    from tests.interop.test_gst_audio import _raw_to_samples

    gst = require_program("gst-launch-1.0")
    src = ["audiotestsrc", "num-buffers=20", "samplesperbuffer=480", "wave=sine", "freq=997",
           "volume=0.9", "!", "audio/x-raw,format=S16BE,rate=48000,channels=2"]
    ref = tmp_path / "ref.raw"
    subprocess.run([gst, "-q", *src, "!", "filesink", f"location={ref}"], check=True, timeout=60)
    want = _raw_to_samples(ref.read_bytes(), AudioEncoding.L16, 2)
    port = free_port(count=1, step=2)
    afmt = AudioFormat(encoding=AudioEncoding.L16, sample_rate=48_000, channels=2)
    session = SdpSession(origin_address="127.0.0.1", session_name="gst", session_id=1, media=(
        SdpMedia(kind=MediaKind.AUDIO, port=port, payload_type=96, address="127.0.0.1",
                 clock_rate=48_000, audio=afmt, mid="AUD"),))
    sdp = tmp_path / "gst.sdp"
    sdp.write_text(write_sdp(session))
    store = tmp_path / "store"
    cfg = ReceiverConfig(sdp=str(sdp), store_dir=store, outbox=tmp_path / "outbox",
                         record_audio=len(want) / 48_000,
                         context={"patient_id": "SITE-1", "patient_name": "Site^Given"})
    async with Receiver(cfg) as rx:
        await asyncio.to_thread(subprocess.run, [
            gst, "-q", *src, "!", "rtpL16pay", "!", "udpsink", "host=127.0.0.1",
            f"port={port}", "sync=true"], check=True, timeout=60)
        async with asyncio.timeout(10):
            while not list(store.glob("*.dcm")):
                await asyncio.sleep(0.05)
        assert rx.audio[0].lost == 0
    (path,) = store.glob("*.dcm")
    wave = pydicom.dcmread(path)
    assert wave.PatientID == "SITE-1" and str(wave.PatientName) == "Site^Given"
    assert np.array_equal(_samples(wave), want)
    check_waveform_with_dciodvfy(wave, tmp_path)


def test_record_audio_without_metadata_or_identity_is_refused(tmp_path: Path) -> None:
    from rtstream.proto.formats import AudioFormat
    from rtstream.proto.sdp import MediaKind, SdpMedia

    afmt = AudioFormat(encoding=AudioEncoding.L16, sample_rate=48_000, channels=2)
    session = SdpSession(origin_address="127.0.0.1", session_name="bare", session_id=1, media=(
        SdpMedia(kind=MediaKind.AUDIO, port=free_port(), payload_type=96, address="127.0.0.1",
                 clock_rate=48_000, audio=afmt, mid="AUD"),))
    sdp = tmp_path / "bare.sdp"
    sdp.write_text(write_sdp(session))

    async def start() -> None:
        async with Receiver(ReceiverConfig(sdp=str(sdp), store_dir=tmp_path / "s",
                                           outbox=tmp_path / "o", record_audio=1.0)):
            pass

    from rtstream.errors import ConfigError

    with pytest.raises(ConfigError, match="--record-audio"):
        asyncio.run(start())


def test_cli_receive_record_audio(tmp_path: Path) -> None:
    """``rtstream send --audio`` and ``rtstream receive --record-audio`` as processes."""

    port = free_port(count=7, step=2)
    sdp = tmp_path / "s.sdp"
    rtstream = [sys.executable, "-m", "rtstream", "--log-level", "WARNING"]
    tx = subprocess.Popen([*rtstream, "send", "--video", "160x120@30", "--depth", "8", "--audio",
                           "--dest", f"127.0.0.1:{port}", "--duration", "6", "--sdp-out", str(sdp),
                           "--patient-id", "CLI-AUD"], stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        while not sdp.exists():
            assert time.monotonic() - t0 < 20, "no SDP from the sender"
            time.sleep(0.05)
        rx = subprocess.run([*rtstream, "receive", "--sdp", str(sdp), "--record-audio", "0.5",
                             "--store-dir", str(tmp_path / "store"), "--outbox",
                             str(tmp_path / "outbox"), "--duration", "2.5"],
                            capture_output=True, text=True, timeout=60)
        assert rx.returncode == 0, rx.stderr
    finally:
        tx.terminate()
        tx.wait(timeout=20)
    (path,) = (tmp_path / "store").glob("*.dcm")
    wave = pydicom.dcmread(path)
    assert str(wave.SOPClassUID) == GENERAL_AUDIO_WAVEFORM_STORAGE and wave.PatientID == "CLI-AUD"
    assert int(wave.WaveformSequence[0].NumberOfWaveformSamples) == 24000
