"""The sender end to end: plain sockets + depacketizers, GStreamer, FFmpeg, multicast, HTTP SDP.

Frames are compared byte for byte with what the sender dumped (``--dump-frames``).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from rtstream.cli import main as cli_main
from rtstream.net.udp import UdpReceiver
from rtstream.proto.clock import rtp_timestamp
from rtstream.proto.nmos_ext import ExtMap
from rtstream.proto.rfc4175 import VideoDepacketizer
from rtstream.proto.rtp import parse_rtp
from rtstream.proto.rtv_metadata import MetadataDepacketizer
from rtstream.proto.sdp import parse_sdp
from rtstream.proto.st2110_30 import AudioDepacketizer
from tests.peers import free_port, require_program, running, stop, wait_for_tcp

ROOT = Path(__file__).resolve().parents[2]
RTV_ENDOSCOPIC = "1.2.840.10008.10.1"
RTV_PHOTOGRAPHIC = "1.2.840.10008.10.2"
RTV_AUDIO = "1.2.840.10008.10.3"


def send(*args: str) -> int:
    return cli_main(["--log-level", "WARNING", "send", *args])


def drain_all(rx: UdpReceiver) -> list[bytes]:
    out: list[bytes] = []
    while True:
        b, lengths = rx.drain()
        if not len(lengths):
            return out
        out.extend(b[i, : int(lengths[i])].tobytes() for i in range(len(lengths)))


def dumps(d: Path) -> dict[int, bytes]:
    return {int(p.stem): p.read_bytes() for p in d.glob("*.raw")}


def video_frames(datagrams: list[bytes], sdp_text: str) -> dict[int, bytes]:
    fmt = parse_sdp(sdp_text).video()[0].video
    assert fmt is not None
    dep = VideoDepacketizer(fmt)
    width = max(len(d) for d in datagrams)
    batch = np.zeros((len(datagrams), width), np.uint8)
    lengths = np.array([len(d) for d in datagrams])
    for i, d in enumerate(datagrams):
        batch[i, : len(d)] = np.frombuffer(d, np.uint8)
    events = dep.feed(batch, lengths, 0) + dep.flush()
    assert all(e.complete for e in events)
    return {e.rtp_timestamp: e.data.tobytes() for e in events}


def grains(datagrams: list[bytes]) -> list:  # type: ignore[type-arg]
    dep = MetadataDepacketizer(extmap=ExtMap.default())
    out = []
    for d in datagrams:
        out.extend(dep.feed(d, 0))
    assert all(type(e).__name__ == "GrainEvent" for e in out), out
    return out


def check_metadata(events: list, timestamps: set[int], clock_rate: int, sop: str) -> None:  # type: ignore[type-arg]
    # PS3.17 PPPP.7: a grain's RTP timestamp is its frame's; its origin is consistent with it.
    assert {e.rtp_timestamp for e in events} == timestamps
    statics = []
    for e in events:
        assert e.grain.meta.sop_class_uid == sop
        origin = e.grain.origin
        assert origin is not None and rtp_timestamp(origin.to_ns(), clock_rate) == e.rtp_timestamp
        assert e.extension.origin_timestamp == origin
        if e.grain.has_static:
            statics.append(origin.to_ns())
    # Static part in the first grain and then at >= 1 Hz (PS3.22 §6.2.2).
    first = min(e.grain.origin.to_ns() for e in events)
    assert statics and statics[0] == first
    assert len(statics) >= 2
    assert max(np.diff(sorted(statics))) <= 1_000_000_000


def test_plain_sockets_byte_exact_with_synchronized_metadata_and_audio(tmp_path: Path) -> None:
    port = free_port(count=4, step=2)
    rxs = [UdpReceiver("127.0.0.1", port + k, gro=k == 0, rcvbuf=64 << 20) for k in (0, 2, 4, 6)]
    try:
        rc = send("--dest", f"127.0.0.1:{port}", "--video", "320x240@30", "--frames", "45",
                  "--audio", "--sdp-out", str(tmp_path / "s.sdp"),
                  "--dump-frames", str(tmp_path / "d"), "--stats-json", str(tmp_path / "st.json"),
                  "--patient-name", "Sync^Test")
        assert rc == 0
        video, vmeta, audio, ameta = (drain_all(r) for r in rxs)
    finally:
        for r in rxs:
            r.close()
    sdp = (tmp_path / "s.sdp").read_text()
    frames = video_frames(video, sdp)
    dumped = dumps(tmp_path / "d")
    assert len(dumped) == 45
    assert frames == dumped
    events = grains(vmeta)
    check_metadata(events, set(frames), 90_000, RTV_ENDOSCOPIC)
    static = next(e for e in events if e.grain.has_static).grain.dataset
    assert str(static.PatientName) == "Sync^Test" and static.Modality == "ES"
    # Audio: ST 2110-30 packets, metadata per chunk on the audio clock.
    session = parse_sdp(sdp)
    afmt = session.audio()[0].audio
    assert afmt is not None
    adep = AudioDepacketizer(afmt)
    width = max(len(d) for d in audio)
    batch = np.zeros((len(audio), width), np.uint8)
    for i, d in enumerate(audio):
        batch[i, : len(d)] = np.frombuffer(d, np.uint8)
    chunks = adep.feed(batch, np.array([len(d) for d in audio]), 0)
    assert sum(len(c.samples) for c in chunks) >= 48 * 1000  # >= 1 s of audio
    packet_ts = {parse_rtp(d).timestamp for d in audio}
    aevents = grains(ameta)
    assert {e.rtp_timestamp for e in aevents} <= packet_ts
    for e in aevents:
        assert rtp_timestamp(e.grain.origin.to_ns(), 48_000) == e.rtp_timestamp
        assert e.grain.meta.sop_class_uid == RTV_AUDIO
    stats = json.loads((tmp_path / "st.json").read_text())
    assert stats["frames"] == 45 and stats["packets"] == len(video)
    assert stats["metadata_grains"] == 45 and stats["static_parts"] >= 2


def test_rgb_photographic_without_pacing(tmp_path: Path) -> None:
    port = free_port(count=4, step=2)
    rxs = [UdpReceiver("127.0.0.1", port + k, gro=False, rcvbuf=64 << 20) for k in (0, 2)]
    try:
        assert send("--dest", f"127.0.0.1:{port}", "--video", "160x120@50", "--frames", "60",
                    "--sampling", "RGB", "--depth", "10", "--pacing", "none",
                    "--sop", "photographic", "--sdp-out", str(tmp_path / "s.sdp"),
                    "--dump-frames", str(tmp_path / "d")) == 0
        video, meta = (drain_all(r) for r in rxs)
    finally:
        for r in rxs:
            r.close()
    frames = video_frames(video, (tmp_path / "s.sdp").read_text())
    assert frames == dumps(tmp_path / "d") and len(frames) == 60
    check_metadata(grains(meta), set(frames), 90_000, RTV_PHOTOGRAPHIC)


def test_multicast_on_loopback(tmp_path: Path) -> None:
    group = "239.255.42.7"
    port = free_port(count=4, step=2)
    rxs = [UdpReceiver(group, port + k, interface="127.0.0.1", source="127.0.0.1",
                       rcvbuf=64 << 20) for k in (0, 2)]
    try:
        assert send("--dest", f"{group}:{port}", "--interface", "127.0.0.1",
                    "--source-address", "127.0.0.1", "--ttl", "1", "--video", "320x240@30",
                    "--frames", "10", "--depth", "8", "--sdp-out", str(tmp_path / "s.sdp"),
                    "--dump-frames", str(tmp_path / "d")) == 0
        video, meta = (drain_all(r) for r in rxs)
    finally:
        for r in rxs:
            r.close()
    sdp = (tmp_path / "s.sdp").read_text()
    assert f"c=IN IP4 {group}/1" in sdp
    assert parse_sdp(sdp).video()[0].source_filter == "127.0.0.1"
    frames = video_frames(video, sdp)
    assert frames == dumps(tmp_path / "d") and len(frames) == 10
    assert {e.rtp_timestamp for e in grains(meta)} == set(frames)


def wait_udp_bound(port: int, timeout: float = 20) -> None:
    """Until some process has bound UDP ``port`` on this host."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing bound UDP port {port}")


def split_frames(data: bytes, size: int) -> list[bytes]:
    assert len(data) % size == 0, (len(data), size)
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.peer("gstreamer")
@pytest.mark.parametrize("depth", [8, 10])
def test_gstreamer_receives_byte_exact(tmp_path: Path, depth: int) -> None:
    gst = require_program("gst-launch-1.0")
    port = free_port(count=4, step=2)
    out = tmp_path / "gst.raw"
    caps = ("application/x-rtp,media=video,clock-rate=90000,encoding-name=RAW,payload=96,"
            f"sampling=YCbCr-4:2:2,depth=(string){depth},width=(string)320,"
            "height=(string)240,colorimetry=BT601-5")
    args = [gst, "-q", "-e", "udpsrc", "address=127.0.0.1", f"port={port}",
            "buffer-size=33554432", f"caps={caps}", "!", "rtpvrawdepay", "!",
            "filesink", f"location={out}"]
    with running(args, log=tmp_path / "gst.log", stop_signal=signal.SIGINT) as proc:
        wait_udp_bound(port)
        assert send("--dest", f"127.0.0.1:{port}", "--video", "320x240@30", "--frames", "20",
                    "--depth", str(depth), "--dump-frames", str(tmp_path / "d"),
                    "--sdp-out", str(tmp_path / "s.sdp")) == 0
        time.sleep(0.5)
        stop(proc, signal.SIGINT)
    dumped = dumps(tmp_path / "d")
    frame_bytes = len(next(iter(dumped.values())))
    got = split_frames(out.read_bytes(), frame_bytes)
    assert got == [dumped[ts] for ts in sorted(dumped)]


@pytest.mark.peer("ffmpeg")
def test_ffmpeg_reads_the_sdp_we_wrote(tmp_path: Path) -> None:
    ffmpeg = require_program("ffmpeg")
    port = free_port(count=4, step=2)
    sdp = tmp_path / "s.sdp"
    common = ["--dest", f"127.0.0.1:{port}", "--video", "320x240@25", "--depth", "8"]
    r = subprocess.run([sys.executable, "-m", "rtstream", "sdp", *common], capture_output=True,
                       text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    sdp.write_text(r.stdout)
    out = tmp_path / "ff.raw"
    args = [ffmpeg, "-nostdin", "-loglevel", "warning", "-protocol_whitelist", "file,udp,rtp",
            "-buffer_size", "67108864", "-analyzeduration", "500000", "-i", str(sdp), "-map", "0:v:0", "-fps_mode", "passthrough",
            "-f", "rawvideo", "-pix_fmt", "uyvy422", "-y", str(out)]
    with running(args, log=tmp_path / "ffmpeg.log") as proc:
        wait_udp_bound(port)
        assert send(*common, "--frames", "20", "--dump-frames", str(tmp_path / "d"),
                    "--sdp-out", str(tmp_path / "written.sdp")) == 0
        time.sleep(1.0)
        stop(proc, signal.SIGTERM)
    # The SDP written while sending describes the same flows (only o= differs).
    strip = lambda t: [x for x in t.splitlines() if not x.startswith("o=")]  # noqa: E731
    assert strip((tmp_path / "written.sdp").read_text()) == strip(sdp.read_text())
    dumped = dumps(tmp_path / "d")
    got = split_frames(out.read_bytes(), 320 * 240 * 2)
    assert got == [dumped[ts] for ts in sorted(dumped)], (tmp_path / "ffmpeg.log").read_text()


def test_cli_http_sdp_and_clean_stop_on_sigterm(tmp_path: Path) -> None:
    port = free_port(count=4, step=2)
    http = free_port(socket.SOCK_STREAM)
    args = [sys.executable, "-m", "rtstream", "send", "--dest", f"127.0.0.1:{port}",
            "--video", "160x120@30", "--depth", "8", "--audio", "--http", f"127.0.0.1:{http}",
            "--duration", "60", "--stats-json", str(tmp_path / "st.json")]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_tcp(http)
        whole = urllib.request.urlopen(f"http://127.0.0.1:{http}/sdp", timeout=5)
        assert whole.headers["Content-Type"].startswith("application/sdp")
        session = parse_sdp(whole.read().decode())
        # with audio, a rendition flow groups video and audio (PS3.22 SOP class 10.4)
        assert [m.mid for m in session.media] == ["VID", "VMETA", "AUD", "AMETA", "REND"]
        one = parse_sdp(urllib.request.urlopen(f"http://127.0.0.1:{http}/sdp/VMETA", timeout=5)
                        .read().decode())
        assert len(one.media) == 1 and one.media[0].port == port + 2
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/sdp/NOPE", timeout=5)
        assert err.value.code == 404
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    stats = json.loads((tmp_path / "st.json").read_text())
    assert stats["frames"] > 0
    # The receiver never existed: ICMP port unreachable was counted, never fatal.
    assert stats["icmp_errors"] > 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        assert s.connect_ex(("127.0.0.1", http)) != 0  # HTTP server closed


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--source", "nonsense:1"], "--source"),
        (["--video", "big"], "--video"),
        (["--dest", "nowhere"], "--dest"),
        (["--source", "v4l2:/dev/video98"], "absent"),
        (["--sampling", "RGB", "--depth", "10", "--video", "322x240@30"], "video.width"),
    ],
)
def test_cli_bad_arguments_exit_2(args: list[str], text: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--dest", "127.0.0.1:5004", "--frames", "1", *args]
    assert send(*argv) == 2
    assert text in capsys.readouterr().err
