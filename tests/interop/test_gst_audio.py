"""ST 2110-30 audio against GStreamer's rtpL16/rtpL24 payloaders, both directions.

Sample-exact: what GStreamer sends over RTP must come out of AudioDepacketizer as the
very samples the same audiotestsrc writes to a file, and what AudioPacketizer sends must
come out of GStreamer's depayloader as the samples we sent.
"""

from __future__ import annotations

import select
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from rtstream.proto.formats import AudioEncoding, AudioFormat
from rtstream.proto.st2110_30 import AudioDepacketizer, AudioPacketizer, encode_pcm
from tests.peers import free_port, require_program, running

pytestmark = pytest.mark.peer("gst-launch-1.0")

CASES = [
    (AudioEncoding.L24, "S24BE", "rtpL24pay", "rtpL24depay", 2),
    (AudioEncoding.L16, "S16BE", "rtpL16pay", "rtpL16depay", 2),
    (AudioEncoding.L24, "S24BE", "rtpL24pay", "rtpL24depay", 1),
]
IDS = [f"{c[0].value}-{c[4]}ch" for c in CASES]
BUFFERS = 20  # x 480 samples = 200 ms at 48 kHz


def _raw_to_samples(raw: bytes, enc: AudioEncoding, channels: int) -> np.ndarray:
    b = np.frombuffer(raw, np.uint8)
    if enc is AudioEncoding.L16:
        return b.view(">i2").astype(np.int32).reshape(-1, channels)
    t = b.reshape(-1, 3).astype(np.int32)
    v = (t[:, 0] << 16) | (t[:, 1] << 8) | t[:, 2]
    return ((v ^ 0x800000) - 0x800000).reshape(-1, channels)


def _drain(sock: socket.socket, quiet: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rows: list[bytes] = []
    while select.select([sock], [], [], quiet)[0]:
        rows.append(sock.recv(9000))
    stride = max((len(r) for r in rows), default=12)
    buf = np.zeros((len(rows), stride), np.uint8)
    for i, r in enumerate(rows):
        buf[i, : len(r)] = np.frombuffer(r, np.uint8)
    return buf, np.array([len(r) for r in rows], np.int64)


@pytest.mark.parametrize(("enc", "gst_fmt", "pay", "depay", "channels"), CASES, ids=IDS)
def test_gstreamer_sends_rtstream_receives(
    tmp_path: Path, enc: AudioEncoding, gst_fmt: str, pay: str, depay: str, channels: int
) -> None:
    gst = require_program("gst-launch-1.0")
    src = [
        "audiotestsrc",
        f"num-buffers={BUFFERS}",
        "samplesperbuffer=480",
        "wave=sine",
        "freq=997",
        "volume=0.9",
        "!",
        f"audio/x-raw,format={gst_fmt},rate=48000,channels={channels}",
    ]
    ref = tmp_path / "ref.raw"
    subprocess.run([gst, "-q", *src, "!", "filesink", f"location={ref}"], check=True, timeout=60)
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(("127.0.0.1", port))
        subprocess.run(
            [
                gst,
                "-q",
                *src,
                "!",
                pay,
                "!",
                "udpsink",
                "host=127.0.0.1",
                f"port={port}",
                "sync=false",
            ],
            check=True,
            timeout=60,
        )
        buf, lengths = _drain(sock)
    fmt = AudioFormat(encoding=enc, sample_rate=48_000, channels=channels)
    d = AudioDepacketizer(fmt, payload_type=96)
    events = d.feed(buf, lengths, now=0)
    got = np.concatenate([e.samples for e in events])
    want = _raw_to_samples(ref.read_bytes(), enc, channels)
    assert len(want) == BUFFERS * 480
    assert d.stats.lost == 0 and d.stats.malformed == 0 and len(events) == 1
    assert np.array_equal(got, want)
    assert np.abs(want).max() > 1000  # a real signal, not silence


def _udp_bound(port: int) -> bool:
    needle = f"0100007F:{port:04X}"
    return any(
        needle in line.split()[1] for line in Path("/proc/net/udp").read_text().splitlines()[1:]
    )


@pytest.mark.parametrize(("enc", "gst_fmt", "pay", "depay", "channels"), CASES, ids=IDS)
@pytest.mark.parametrize("ptime_us", [1000, 125])
def test_rtstream_sends_gstreamer_receives(
    tmp_path: Path,
    enc: AudioEncoding,
    gst_fmt: str,
    pay: str,
    depay: str,
    channels: int,
    ptime_us: int,
) -> None:
    gst = require_program("gst-launch-1.0")
    fmt = AudioFormat(encoding=enc, sample_rate=48_000, channels=channels, ptime_us=ptime_us)
    lo, hi = (
        (-(1 << 15), (1 << 15) - 1) if enc is AudioEncoding.L16 else (-(1 << 23), (1 << 23) - 1)
    )
    n = 9600  # 200 ms
    samples = (
        np.random.default_rng(7).integers(lo, hi, (n, channels), endpoint=True).astype(np.int32)
    )
    samples[0] = lo
    samples[1] = hi
    batch = AudioPacketizer(fmt, ssrc=0x51AB, payload_type=97, sequence=65500).packetize(
        samples, 0xFFFFFF00
    )
    out = tmp_path / "out.raw"
    caps = (
        f"application/x-rtp,media=(string)audio,clock-rate=(int)48000,"
        f"encoding-name=(string){enc.value},channels=(int){channels},payload=(int)97"
    )
    port = free_port()
    args = [
        gst,
        "-q",
        "udpsrc",
        "address=127.0.0.1",
        f"port={port}",
        "buffer-size=4194304",
        f"caps={caps}",
        "!",
        depay,
        "!",
        "filesink",
        f"location={out}",
        "buffer-mode=unbuffered",
        "sync=false",
    ]
    want = encode_pcm(samples, enc).tobytes()
    with running(args, log=tmp_path / "gst.log") as proc:
        deadline = time.monotonic() + 20
        while not _udp_bound(port):
            assert proc.poll() is None, (tmp_path / "gst.log").read_text()
            assert time.monotonic() < deadline, "udpsrc never bound its port"
            time.sleep(0.05)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for i in range(len(batch.sizes)):  # test code: one sendto per datagram is fine
                tx.sendto(batch.buf[i, : batch.sizes[i]].tobytes(), ("127.0.0.1", port))
        while (out.stat().st_size if out.exists() else 0) < len(want):
            assert time.monotonic() < deadline, (
                f"GStreamer wrote {out.stat().st_size} of {len(want)} bytes"
            )
            time.sleep(0.05)
    assert out.read_bytes() == want
