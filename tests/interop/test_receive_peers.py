"""``rtstream receive`` against real senders: rtstream's own, GStreamer, FFmpeg; Orthanc.

Frames are compared byte for byte with what the sender wrote itself (``rtstream send
--dump-frames``) or with the same GStreamer/FFmpeg pipeline writing into a file.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rtstream.proto.sdp import parse_sdp
from rtstream.receiver import ItemKind, ReceivedItem, Receiver, ReceiverConfig
from tests.orthanc import Orthanc
from tests.peers import free_port, require_program, running, stop

RTSTREAM = [sys.executable, "-m", "rtstream", "--log-level", "WARNING"]
SMALL = "320x240@60"
# Peers share this 2-core machine with other test runs: a generous pairing wait keeps a
# descheduled sender from making a grain "late" (the bound is tested in tests/proto).
WAIT = "30"


def sender_sdp(tmp_path: Path, port: int, *extra: str) -> Path:
    """The sender's own SDP, from a one-frame dry run to the same ports."""
    sdp = tmp_path / "tx.sdp"
    subprocess.run([*RTSTREAM, "send", "--dest", f"127.0.0.1:{port}", "--frames", "1",
                    "--sdp-out", str(sdp), *extra], check=True, capture_output=True, timeout=60)
    return sdp


def start_receive(tmp_path: Path, sdp: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start ``rtstream receive`` and wait until it listens (its log says so)."""
    log = open(tmp_path / "rx.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [*RTSTREAM[:-2], "--log-level", "INFO", "receive", "--sdp", str(sdp),
         "--pairing-wait", WAIT, *args],
        stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while b"receiving from" not in (tmp_path / "rx.log").read_bytes():
        assert proc.poll() is None, (tmp_path / "rx.log").read_text()
        assert time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.05)
    return proc


def same_dumps(sent: Path, received: Path) -> list[str]:
    names = sorted(p.name for p in sent.glob("*.raw"))
    assert names, "the sender dumped nothing"
    for n in names:
        assert (received / n).read_bytes() == (sent / n).read_bytes(), f"frame {n} differs"
    return names


@pytest.mark.parametrize(
    ("sampling", "depth"),
    [
        ("YCbCr-4:2:2", 8),
        ("YCbCr-4:2:2", 10),
        ("YCbCr-4:4:4", 8),
        ("YCbCr-4:4:4", 10),
        ("RGB", 8),
        ("RGB", 10),
        ("YCbCr-4:2:0", 8),
    ],
)
def test_rtstream_send_to_receive_cli_byte_exact(tmp_path: Path, sampling: str, depth: int) -> None:
    n = 10
    port = free_port(count=7, step=2)
    fmt_args = ["--video", SMALL, "--sampling", sampling, "--depth", str(depth)]
    sdp = sender_sdp(tmp_path, port, *fmt_args)
    rx = start_receive(tmp_path, sdp, "--frames", str(n), "--dump-frames", str(tmp_path / "rf"),
                       "--dump-metadata", str(tmp_path / "rm"),
                       "--stats-json", str(tmp_path / "stats.json"))
    try:
        subprocess.run([*RTSTREAM, "send", "--dest", f"127.0.0.1:{port}", "--frames", str(n),
                        "--dump-frames", str(tmp_path / "sf"), *fmt_args],
                       check=True, capture_output=True, timeout=60)
        assert rx.wait(30) == 0, (tmp_path / "rx.log").read_text()[-3000:]
    finally:
        stop(rx)
    names = same_dumps(tmp_path / "sf", tmp_path / "rf")
    assert len(names) == n
    stats = json.loads((tmp_path / "stats.json").read_text())
    for key in ("packets", "packets_lost", "packets_malformed", "frames_complete",
                "frames_incomplete", "grains_complete", "grains_dropped", "metadata_matched",
                "metadata_unmatched"):
        assert key in stats
    assert stats["frames_complete"] == n and stats["packets_lost"] == 0
    assert stats["metadata_matched"] == n and stats["metadata_unmatched"] == 0
    # every grain dumped as received, with the frame's timestamp
    assert {p.stem for p in (tmp_path / "rm").glob("*.dcm")} >= {Path(x).stem for x in names}


def test_rtstream_send_with_audio_to_receiver_api(tmp_path: Path) -> None:
    n = 20
    port = free_port(count=7, step=2)
    sdp = sender_sdp(tmp_path, port, "--video", SMALL, "--audio")
    assert parse_sdp(sdp.read_text()).audio()

    async def go() -> tuple[list[ReceivedItem], dict[str, object]]:
        items: list[ReceivedItem] = []
        cfg = ReceiverConfig(sdp=str(sdp), frames=n, duration=30, pairing_wait_frames=30)
        async with Receiver(cfg) as rx:
            proc = await asyncio.create_subprocess_exec(
                *RTSTREAM, "send", "--dest", f"127.0.0.1:{port}", "--frames", str(n + 5),
                "--video", SMALL, "--audio", "--dump-frames", str(tmp_path / "sf"),
                stderr=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL)
            async for it in rx:
                items.append(it)
            await proc.wait()
            return items, rx.stats

    items, stats = asyncio.run(go())
    video = [i for i in items if i.kind is ItemKind.VIDEO]
    audio = [i for i in items if i.kind is ItemKind.AUDIO]
    assert len(video) == n
    for it in video:
        assert it.frame is not None and it.metadata is not None
        assert it.frame.tobytes() == (tmp_path / "sf" / f"{it.rtp_timestamp}.raw").read_bytes()
    assert audio and all(a.audio is not None and a.audio.shape[1] == 2 for a in audio)
    ts = [a.rtp_timestamp for a in audio]
    assert all(0 < (b - a) % 2**32 < 2**31 for a, b in zip(ts, ts[1:], strict=False))
    assert all(a.static is not None for a in audio[-3:])
    # audio and video share the media clock: their origins are within a frame or two
    assert video[-1].origin is not None and audio[-1].origin is not None
    assert abs(video[-1].origin.to_ns() - audio[-1].origin.to_ns()) < 200_000_000
    assert stats["metadata_matched"] >= n and stats["metadata_unmatched"] == 0
    assert stats["packets_lost"] == 0


# -- third-party senders ----------------------------------------------------------------------

GST_FORMAT = {8: "UYVY", 10: "UYVP"}


@pytest.mark.peer("gstreamer")
@pytest.mark.parametrize("depth", [8, 10])
def test_gstreamer_sender_byte_exact(tmp_path: Path, depth: int) -> None:
    gst = require_program("gst-launch-1.0")
    n = 6
    src = (f"videotestsrc num-buffers={n} pattern=ball ! "
           f"video/x-raw,format={GST_FORMAT[depth]},width=320,height=240,framerate=30/1")
    ref = tmp_path / "ref.raw"
    with running([gst, "-q", *f"{src} ! filesink location={ref}".split()]) as p:
        assert p.wait(20) == 0
    port = free_port()
    sdp = tmp_path / "gst.sdp"
    sdp.write_text(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=GStreamer rtpvrawpay\r\nt=0 0\r\n"
        f"m=video {port} RTP/AVP 96\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:96 raw/90000\r\n"
        f"a=fmtp:96 sampling=YCbCr-4:2:2; width=320; height=240; depth={depth}; "
        "exactframerate=30; colorimetry=BT601; PM=2110GPM; SSN=ST2110-20:2017; TP=2110TPW\r\n"
    )

    async def go() -> list[ReceivedItem]:
        items: list[ReceivedItem] = []
        async with Receiver(ReceiverConfig(sdp=str(sdp), frames=n, duration=30)) as rx:
            pipeline = f"{src} ! rtpvrawpay ! udpsink host=127.0.0.1 port={port} sync=true"
            proc = await asyncio.create_subprocess_exec(
                gst, "-q", *pipeline.split(), stdout=asyncio.subprocess.DEVNULL)
            async for it in rx:
                items.append(it)
            await proc.wait()
        return items

    items = asyncio.run(go())
    expected = np.fromfile(ref, np.uint8).reshape(n, -1)
    assert len(items) == n
    for it, exp in zip(items, expected, strict=True):
        assert it.complete and it.metadata is None and it.frame is not None
        assert np.array_equal(it.frame, exp)


@pytest.mark.peer("ffmpeg")
@pytest.mark.parametrize(("depth", "codec", "pix_fmt"),
                         [(8, "rawvideo", "uyvy422"), (10, "bitpacked", "yuv422p10le")])
def test_ffmpeg_sender_byte_exact(tmp_path: Path, depth: int, codec: str, pix_fmt: str) -> None:
    ffmpeg = require_program("ffmpeg")
    n = 6
    src = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"]
    enc = ["-c:v", codec, "-pix_fmt", pix_fmt]
    ref = tmp_path / "ref.raw"
    with running([ffmpeg, "-hide_banner", "-nostdin", *src, "-frames:v", str(n), *enc,
                  "-f", "rawvideo", str(ref)]) as p:
        assert p.wait(20) == 0
    expected = np.fromfile(ref, np.uint8).reshape(n, -1)
    port = free_port()
    sdp = tmp_path / "ffmpeg.sdp"

    def ffmpeg_rtp(frames: int) -> list[str]:
        return [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", *src,
                "-frames:v", str(frames), *enc, "-f", "rtp", "-sdp_file", str(sdp),
                f"rtp://127.0.0.1:{port}"]

    # FFmpeg writes its SDP as it starts sending: a first short run provides it
    subprocess.run(ffmpeg_rtp(1), check=True, timeout=30, capture_output=True)
    assert parse_sdp(sdp.read_text()).video()[0].port == port

    async def go() -> list[ReceivedItem]:
        items: list[ReceivedItem] = []
        async with Receiver(ReceiverConfig(sdp=str(sdp), frames=n, duration=30)) as rx:
            proc = await asyncio.create_subprocess_exec(
                *ffmpeg_rtp(n), stdout=asyncio.subprocess.DEVNULL)
            async for it in rx:
                items.append(it)
            await proc.wait()
        return items

    items = asyncio.run(go())
    assert len(items) == n
    for it, exp in zip(items, expected, strict=True):
        assert it.complete and it.frame is not None
        assert np.array_equal(it.frame, exp)


# -- actions: snapshot and clip into a real archive -------------------------------------------


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    o = Orthanc(tmp_path_factory.mktemp("orthanc"))
    o.start()
    try:
        yield o
    finally:
        o.stop()


@pytest.mark.peer("orthanc")
def test_snapshot_and_clip_to_orthanc(tmp_path: Path, orthanc: Orthanc) -> None:
    port = free_port(count=7, step=2)
    sdp = sender_sdp(tmp_path, port, "--video", SMALL)
    before = set(orthanc.sop_instance_uids())

    async def go() -> tuple[object, object, str]:
        cfg = ReceiverConfig(sdp=str(sdp), duration=60, store=orthanc.target,
                             outbox=tmp_path / "outbox")
        async with Receiver(cfg) as rx:
            proc = await asyncio.create_subprocess_exec(
                *RTSTREAM, "send", "--dest", f"127.0.0.1:{port}", "--duration", "30",
                "--video", SMALL, "--patient-id", "RX-TEST-1",
                stderr=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL)
            try:
                got = 0
                rx.record_start(frames=12)
                async for it in rx:
                    got += 1
                    if it.static is not None and got >= 15:
                        break
                snap = await rx.snapshot()
                clip = await rx.record_stop()
                return snap, clip, it.static.PatientID if it.static else ""
            finally:
                proc.terminate()
                await proc.wait()

    snap, clip, patient = asyncio.run(go())
    assert patient == "RX-TEST-1"
    assert snap.ok and clip.ok  # type: ignore[attr-defined]
    after = set(orthanc.sop_instance_uids()) - before
    assert {snap.sop_instance_uid, clip.sop_instance_uid} <= after  # type: ignore[attr-defined]
    assert not list((tmp_path / "outbox").rglob("*.dcm")), "outbox not emptied"
    clip_tags = [orthanc.tags(i) for i in orthanc.instances()
                 if orthanc.tags(i)["SOPInstanceUID"] == clip.sop_instance_uid][0]  # type: ignore[attr-defined]
    assert clip_tags["PatientID"] == "RX-TEST-1"
    assert int(clip_tags["NumberOfFrames"]) == 12
    snap_tags = [orthanc.tags(i) for i in orthanc.instances()
                 if orthanc.tags(i)["SOPInstanceUID"] == snap.sop_instance_uid][0]  # type: ignore[attr-defined]
    # one series per kind per receiving session (stills, clips), each numbered from 1
    assert snap_tags["StudyInstanceUID"] == clip_tags["StudyInstanceUID"]
    assert snap_tags["SeriesInstanceUID"] != clip_tags["SeriesInstanceUID"]
    assert snap_tags["SeriesNumber"] != clip_tags["SeriesNumber"]
    assert snap_tags["InstanceNumber"] == clip_tags["InstanceNumber"] == "1"


@pytest.mark.peer("orthanc")
def test_cli_snapshot_every_and_record_to_store_dir(tmp_path: Path) -> None:
    port = free_port(count=7, step=2)
    sdp = sender_sdp(tmp_path, port, "--video", SMALL)
    out = tmp_path / "archive"
    rx = start_receive(tmp_path, sdp, "--duration", "3", "--snapshot-every", "1", "--record",
                       "0.5", "--store-dir", str(out), "--outbox", str(tmp_path / "outbox"),
                       "--stats-json", str(tmp_path / "stats.json"))
    with running([*RTSTREAM, "send", "--dest", f"127.0.0.1:{port}", "--duration", "5",
                  "--video", SMALL]):
        assert rx.wait(60) == 0, (tmp_path / "rx.log").read_text()[-3000:]
    files = sorted(out.glob("*.dcm"))
    import pydicom

    kinds = [pydicom.dcmread(f, stop_before_pixels=True).SOPClassUID.name for f in files]
    assert sum("Video" in k for k in kinds) == 1, kinds  # the 0.5 s clip
    assert sum("Video" not in k for k in kinds) >= 1, kinds  # snapshots
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["snapshots"] >= 1


def test_cli_ctrl_c_stops_cleanly_and_writes_stats(tmp_path: Path) -> None:
    port = free_port(count=7, step=2)
    sdp = sender_sdp(tmp_path, port, "--video", SMALL)
    rx = start_receive(tmp_path, sdp, "--stats-json", str(tmp_path / "stats.json"))
    with running([*RTSTREAM, "send", "--dest", f"127.0.0.1:{port}", "--duration", "10",
                  "--video", SMALL]):
        time.sleep(2.0)  # let frames flow
        rx.send_signal(signal.SIGINT)
        rc = rx.wait(20)
    assert rc == 0, (tmp_path / "rx.log").read_text()[-3000:]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["frames_delivered"] > 0 and stats["packets_lost"] == 0


def test_cli_second_signal_during_flush_keeps_the_outbox(tmp_path: Path) -> None:
    """Archive down: a second SIGTERM while the outbox flushes exits 130, no traceback."""
    port = free_port(count=7, step=2)
    dead = free_port(kind=__import__("socket").SOCK_STREAM)  # nothing listens there
    sdp = sender_sdp(tmp_path, port, "--video", SMALL)
    outbox = tmp_path / "outbox"
    rx = start_receive(tmp_path, sdp, "--snapshot-every", "0.3", "--store",
                       f"ARCH@127.0.0.1:{dead}", "--outbox", str(outbox),
                       "--stats-json", str(tmp_path / "stats.json"))
    with running([*RTSTREAM, "send", "--dest", f"127.0.0.1:{port}", "--duration", "10",
                  "--video", SMALL]):
        deadline = time.monotonic() + 20
        while len(list(outbox.glob("*.dcm"))) < 2:
            assert time.monotonic() < deadline, (tmp_path / "rx.log").read_text()[-3000:]
            time.sleep(0.1)
        rx.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # now waiting on the archive that is down
        rx.send_signal(signal.SIGTERM)
        rc = rx.wait(20)
    log = (tmp_path / "rx.log").read_text()
    assert rc == 130, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert "stay queued in" in log  # the queued line, also on the second signal
    assert len(list(outbox.glob("*.dcm"))) >= 2  # kept for the next run
    assert json.loads((tmp_path / "stats.json").read_text())["frames_delivered"] > 0


def test_cli_snapshots_over_dicom_tls(tmp_path: Path) -> None:
    """`receive --store ... --store-tls-ca` stores snapshots into a TLS-only archive."""
    import ssl

    from pynetdicom import AE, evt
    from pynetdicom.sop_class import VLEndoscopicImageStorage

    openssl = require_program("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(cert), str(key))
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.dataset.SOPInstanceUID)
        return 0x0000

    ae = AE(ae_title="TLSSCP")
    ae.add_supported_context(VLEndoscopicImageStorage)
    server = ae.start_server(("127.0.0.1", 0), block=False, ssl_context=server_ctx,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        port = free_port(count=7, step=2)
        sdp = sender_sdp(tmp_path, port, "--video", SMALL)
        rx = start_receive(
            tmp_path, sdp, "--duration", "3", "--snapshot-every", "1",
            "--store", f"TLSSCP@127.0.0.1:{server.server_address[1]}",
            "--store-tls-ca", str(cert), "--outbox", str(tmp_path / "outbox"),
        )
        with running([*RTSTREAM, "send", "--dest", f"127.0.0.1:{port}", "--duration", "5",
                      "--video", SMALL]):
            assert rx.wait(60) == 0, (tmp_path / "rx.log").read_text()[-3000:]
    finally:
        server.shutdown()
        ae.shutdown()
    assert received, (tmp_path / "rx.log").read_text()[-3000:]
    assert not list((tmp_path / "outbox").glob("*.dcm"))  # all delivered, nothing pending
    assert len(set(received)) == len(received)
