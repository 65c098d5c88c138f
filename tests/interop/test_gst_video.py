"""RFC 4175 interop with GStreamer 1.22 (rtpvrawpay / rtpvrawdepay), 1080p 4:2:2.

Both directions compare bytes: what GStreamer's raw pipeline writes to a file against
what rtstream reassembles from GStreamer's RTP, and what rtstream sends against what
GStreamer's depayloader writes. GStreamer's UYVY (8-bit) and UYVP (10-bit) buffers at
1920 pixels have no row padding, so they are exactly the wire pgroups.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np
import pytest

from rtstream.proto.formats import Sampling, VideoFormat
from rtstream.proto.rfc4175 import VideoDepacketizer, VideoFrameEvent, VideoPacketizer
from tests.peers import free_port, require_program, running

FRAMES = 4
SO_RCVBUFFORCE = 33
GST_FORMAT = {8: "UYVY", 10: "UYVP"}


def fmt_1080(depth: int) -> VideoFormat:
    return VideoFormat(
        sampling=Sampling.YCBCR_422,
        depth=depth,
        width=1920,
        height=1080,
        exactframerate=Fraction(30),
    )


class UdpCapture:
    """Receive datagrams on 127.0.0.1 into the rows of one numpy array (a test shell).

    A thread drains the socket (big receive buffer) until closed; :meth:`result` gives
    ``(batch, lengths)`` of everything received, in arrival order.
    """

    def __init__(self, port: int = 0, *, max_packets: int = 40_000, stride: int = 2048) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, 64 << 20)
                break
            except OSError:
                continue
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.buf = np.zeros((max_packets, stride), np.uint8)
        self.lengths = np.zeros(max_packets, np.int64)
        self.count = 0
        self.last_ns = time.monotonic_ns()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> UdpCapture:
        self._thread.start()
        return self

    def __exit__(
        self,
        t: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self) -> None:
        flat = memoryview(self.buf.reshape(-1))
        stride = self.buf.shape[1]
        while not self._stop.is_set() and self.count < len(self.buf):
            try:
                at = self.count * stride
                n = self.sock.recv_into(flat[at : at + stride])
            except TimeoutError:
                continue
            except OSError:
                return
            self.lengths[self.count] = n
            self.count += 1
            self.last_ns = time.monotonic_ns()

    def wait_idle(self, idle_s: float = 0.5, timeout_s: float = 15) -> None:
        """Return once nothing arrived for ``idle_s`` (after at least one datagram)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.count and time.monotonic_ns() - self.last_ns > idle_s * 1e9:
                return
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.sock.close()

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.buf[: self.count], self.lengths[: self.count]


def depacketize_all(
    fmt: VideoFormat, batch: np.ndarray, lengths: np.ndarray
) -> tuple[list[VideoFrameEvent], VideoDepacketizer]:
    """Feed a capture to a depacketizer in receive-sized chunks."""
    dp = VideoDepacketizer(fmt)
    events: list[VideoFrameEvent] = []
    for s in range(0, len(batch), 1024):
        events += dp.feed(batch[s : s + 1024], lengths[s : s + 1024], now=0)
    events += dp.flush()
    return events, dp


def port_bound(port: int) -> bool:
    """Whether some UDP socket is bound to ``port`` (from /proc/net/udp)."""
    want = f":{port:04X}"
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(len(f := line.split()) > 1 and f[1].endswith(want) for line in lines):
            return True
    return False


def wait_port_bound(port: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_bound(port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing bound UDP port {port}")
        time.sleep(0.05)


def send_paced(
    sock: socket.socket, dest: tuple[str, int], datagrams: list[bytes], burst: int = 64
) -> None:
    """Send datagrams with a short pause every ``burst`` so a peer's socket keeps up."""
    for i, d in enumerate(datagrams):
        sock.sendto(d, dest)
        if i % burst == burst - 1:
            time.sleep(0.0005)


def test_frames(path: Path, fmt: VideoFormat) -> list[np.ndarray]:
    data = np.fromfile(path, np.uint8)
    assert data.size % fmt.frame_bytes == 0, f"{path} is not whole frames"
    return list(data.reshape(-1, fmt.frame_bytes))


test_frames.__test__ = False  # type: ignore[attr-defined]


@pytest.mark.peer("gstreamer")
@pytest.mark.parametrize(
    ("depth", "pattern"), [(8, "ball"), (10, "smpte horizontal-speed=16")]
)
def test_gstreamer_rtpvrawpay_to_rtstream(tmp_path: Path, depth: int, pattern: str) -> None:
    gst = require_program("gst-launch-1.0")
    fmt = fmt_1080(depth)
    src = (
        f"videotestsrc num-buffers={FRAMES} pattern={pattern} ! "
        f"video/x-raw,format={GST_FORMAT[depth]},width=1920,height=1080,framerate=30/1"
    )
    ref = tmp_path / "ref.raw"
    with running([gst, "-q", *f"{src} ! filesink location={ref}".split()]) as p:
        assert p.wait(20) == 0
    expected = test_frames(ref, fmt)
    assert len(expected) == FRAMES
    assert not all((f == expected[0]).all() for f in expected[1:]), "pattern must move"

    with UdpCapture() as cap:
        pipeline = f"{src} ! rtpvrawpay ! udpsink host=127.0.0.1 port={cap.port} sync=true"
        with running([gst, "-q", *pipeline.split()], log=tmp_path / "gst.log") as p:
            assert p.wait(20) == 0, (tmp_path / "gst.log").read_text()
        cap.wait_idle(0.3)
        batch, lengths = cap.result()
    events, dp = depacketize_all(fmt, batch, lengths)
    assert dp.stats.malformed == 0
    assert dp.stats.lost == 0, dp.stats
    assert len(events) == FRAMES, dp.stats
    for i, ev in enumerate(events):
        assert ev.complete, f"frame {i}: rows missing {np.flatnonzero(ev.missing_rows)[:10]}"
        assert np.array_equal(ev.data, expected[i]), f"frame {i} differs from GStreamer's"
    # rtpvrawpay fills packets across row ends with a second SRD header (C bit set):
    # the multi-SRD path was exercised.
    assert ((batch[:, 18] & 0x80) != 0).sum() > 0


@pytest.mark.peer("gstreamer")
@pytest.mark.parametrize("depth", [8, 10])
def test_rtstream_to_gstreamer_rtpvrawdepay(tmp_path: Path, depth: int) -> None:
    gst = require_program("gst-launch-1.0")
    fmt = fmt_1080(depth)
    rng = np.random.default_rng(depth)
    # Random pgroup bytes: any byte pattern is a valid UYVY/UYVP frame.
    frames = [rng.integers(0, 256, fmt.frame_bytes, dtype=np.uint8) for _ in range(FRAMES)]
    port = free_port()
    out = tmp_path / "out.raw"
    caps = (
        "application/x-rtp,media=(string)video,clock-rate=(int)90000,"
        "encoding-name=(string)RAW,sampling=(string)YCbCr-4:2:2,"
        f"depth=(string){depth},width=(string)1920,height=(string)1080,payload=(int)96"
    )
    args = [
        gst, "-q", "-e", "udpsrc", "address=127.0.0.1", f"port={port}",
        "buffer-size=67108864", f"caps={caps}", "!", "rtpvrawdepay", "!",
        "filesink", "buffer-mode=unbuffered", f"location={out}",
    ]
    with running(args, log=tmp_path / "gst.log", stop_signal=signal.SIGINT) as p:
        wait_port_bound(port)
        time.sleep(0.2)  # let the pipeline reach PLAYING after the socket is bound
        pk = VideoPacketizer(fmt, ssrc=0x1234ABCD, sequence=0xFFFFF000)  # wraps mid-stream
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for i, f in enumerate(frames):
                b = pk.packetize(f, 3000 * i)
                send_paced(tx, ("127.0.0.1", port), [b.datagram(j) for j in range(len(b))])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if out.exists() and out.stat().st_size >= FRAMES * fmt.frame_bytes:
                break
            time.sleep(0.1)
        assert p.poll() is None, (tmp_path / "gst.log").read_text()
    got = test_frames(out, fmt)
    assert len(got) == FRAMES
    for i, f in enumerate(got):
        assert np.array_equal(f, frames[i]), f"frame {i} differs after rtpvrawdepay"
