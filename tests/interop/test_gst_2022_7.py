"""ST 2022-7 interop with GStreamer 1.22 (which has no 2022-7 element of its own).

* GStreamer receives *either* leg of ``rtstream send --dest2`` as an ordinary RFC 4175
  stream (``udpsrc ! rtpvrawdepay``): both legs give the sender's frames byte for byte.
* rtstream merges two legs that GStreamer sends with a ``tee`` into two ``udpsink`` s
  (identical packets). A relay (tests/net/relay.py) drops 10% of leg 1 at random and
  records which; the receiver still gets every frame byte-exact, and its per-leg counters
  say exactly what leg 1 lost and leg 2 recovered.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from rtstream.proto.formats import Sampling, VideoFormat
from rtstream.proto.sdp import MediaKind, SdpMedia, SdpSession, write_sdp
from rtstream.receiver import ItemKind, Receiver, ReceiverConfig
from tests.interop.test_gst_video import wait_port_bound
from tests.net.relay import Impairment, UdpRelay
from tests.peers import free_port, require_program, running
from tests.reliability import ROOT, RTSTREAM, rtstream_env

W, H, FRAMES = 640, 360, 12
FMT = VideoFormat(sampling=Sampling.YCBCR_422, depth=8, width=W, height=H,
                  exactframerate=Fraction(30))
CAPS = ("application/x-rtp,media=(string)video,clock-rate=(int)90000,encoding-name=(string)RAW,"
        f"sampling=(string)YCbCr-4:2:2,depth=(string)8,width=(string){W},height=(string){H},"
        "payload=(int)96")


def frames_of(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert len(data) % FMT.frame_bytes == 0, f"{path}: not whole frames"
    return [data[i : i + FMT.frame_bytes] for i in range(0, len(data), FMT.frame_bytes)]


@pytest.mark.peer("gstreamer")
def test_gstreamer_receives_either_leg_byte_exact(tmp_path: Path) -> None:
    gst = require_program("gst-launch-1.0")
    base1 = free_port(count=4, step=2)
    base2 = free_port(count=4, step=2)
    while base2 in range(base1 - 8, base1 + 8):
        base2 = free_port(count=4, step=2)
    outs = [tmp_path / "leg1.raw", tmp_path / "leg2.raw"]
    pipes = [[gst, "-q", "-e", "udpsrc", "address=127.0.0.1", f"port={port}",
              "buffer-size=67108864", f"caps={CAPS}", "!", "rtpvrawdepay", "!", "filesink",
              "buffer-mode=unbuffered", f"location={out}"]
             for port, out in zip((base1, base2), outs, strict=True)]
    send = [*RTSTREAM, "send", "--dest", f"127.0.0.1:{base1}", "--dest2", f"127.0.0.1:{base2}",
            "--video", f"{W}x{H}@30", "--depth", "8", "--frames", str(FRAMES),
            "--dump-frames", str(tmp_path / "tf"), "--stats-json", str(tmp_path / "tx.json")]
    with running(pipes[0], log=tmp_path / "gst1.log", stop_signal=signal.SIGINT) as g1, \
            running(pipes[1], log=tmp_path / "gst2.log", stop_signal=signal.SIGINT) as g2:
        wait_port_bound(base1)
        wait_port_bound(base2)
        time.sleep(0.3)  # both pipelines PLAYING
        subprocess.run(send, env=rtstream_env(), cwd=ROOT, check=True, timeout=60,
                       capture_output=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
                o.exists() and o.stat().st_size >= FRAMES * FMT.frame_bytes for o in outs):
            time.sleep(0.1)
        assert g1.poll() is None and g2.poll() is None
    sent = [p.read_bytes() for p in sorted((tmp_path / "tf").glob("*.raw"),
                                           key=lambda p: int(p.stem))]
    assert len(sent) == FRAMES
    assert len({*sent}) > 1, "the test picture must move"
    for out in outs:
        got = frames_of(out)
        assert got == sent, f"{out.name}: frames differ from what rtstream sent"


def dup_sdp(path: Path, ports: tuple[int, int]) -> Path:
    legs = [SdpMedia(kind=MediaKind.VIDEO, port=p, payload_type=96, address="127.0.0.1",
                     clock_rate=90000, video=FMT, mid=mid)
            for p, mid in zip(ports, ("red", "blue"), strict=True)]
    session = SdpSession(origin_address="127.0.0.1", session_name="gst 2022-7", session_id=7,
                         media=tuple(legs), dup_groups=(("red", "blue"),))
    path.write_text(write_sdp(session))
    return path


@pytest.mark.peer("gstreamer")
def test_rtstream_merges_gstreamer_tee_legs(tmp_path: Path) -> None:
    gst = require_program("gst-launch-1.0")
    src = (f"videotestsrc num-buffers={FRAMES} pattern=ball ! "
           f"video/x-raw,format=UYVY,width={W},height={H},framerate=30/1")
    ref = tmp_path / "ref.raw"
    with running([gst, "-q", *f"{src} ! filesink location={ref}".split()]) as p:
        assert p.wait(20) == 0
    expected = frames_of(ref)
    assert len(expected) == FRAMES
    base = free_port(count=4, step=2)
    relay_in, rx_ports = (base, base + 2), (base + 4, base + 6)
    sdp = dup_sdp(tmp_path / "dup.sdp", rx_ports)
    relay = UdpRelay({relay_in[0]: rx_ports[0], relay_in[1]: rx_ports[1]},
                     impairments={relay_in[0]: Impairment(loss=0.10)}, seed=2022)
    tee = (f"{src} ! rtpvrawpay ! tee name=t "
           f"t. ! queue ! udpsink host=127.0.0.1 port={relay_in[0]} sync=true "
           f"t. ! queue ! udpsink host=127.0.0.1 port={relay_in[1]} sync=true")

    async def receive() -> tuple[list[bytes], dict[str, object]]:
        got: list[bytes] = []
        # the default skew tolerance (10 ms): the relay forwards from its own process
        async with Receiver(ReceiverConfig(sdp=str(sdp))) as rx:
            with running([gst, "-q", *tee.split()], log=tmp_path / "gst.log") as g:
                try:
                    async with asyncio.timeout(20):
                        async for item in rx:
                            if item.kind is ItemKind.VIDEO and item.frame is not None:
                                got.append(np.ascontiguousarray(item.frame).tobytes())
                                if len(got) == FRAMES:
                                    break
                except TimeoutError:
                    pass
                rc = await asyncio.to_thread(g.wait, 20)
                assert rc == 0, (tmp_path / "gst.log").read_text()
            await asyncio.sleep(0.5)  # the sockets are still read: the relay's last datagrams
            return got, rx.stats

    with relay:
        got, stats = asyncio.run(receive())
    dropped = relay.report(relay_in[0]).dropped
    assert len(dropped) > 0.05 * relay.report(relay_in[0]).received
    assert got == expected, f"{len(got)} frames, or bytes differ from GStreamer's"
    flow = stats["flows"]["red"]  # type: ignore[index]
    red, blue = flow["legs"]
    total = relay.report(relay_in[1]).forwarded
    assert flow["packets_lost"] == 0 and flow["frames_complete"] == FRAMES
    assert (red["mid"], blue["mid"]) == ("red", "blue")
    assert red["packets"] == total - len(dropped) and blue["packets"] == total
    assert red["lost"] == red["recovered"] == len(dropped)
    assert blue["lost"] == 0 and red["redundant"] + blue["redundant"] == total - len(dropped)
