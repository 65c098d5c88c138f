"""RFC 4175 interop with FFmpeg 5.1 (rtp muxer / SDP demuxer), 1080p 4:2:2 8- and 10-bit.

* rtstream -> FFmpeg: FFmpeg opens an SDP written by :func:`rtstream.proto.sdp.write_sdp`
  and decodes; the decoded frames must equal what rtstream sent (8-bit as ``uyvy422``,
  10-bit as planar ``yuv422p10le`` compared with :func:`rtstream.proto.pixfmt.from_wire`).
* FFmpeg -> rtstream: FFmpeg sends ``testsrc2`` as RFC 4175 (``rawvideo``/``uyvy422``
  for 8-bit, the ``bitpacked`` encoder for 10-bit, which is what FFmpeg's RFC 4175
  muxer accepts for depth 10); rtstream reassembles and must equal FFmpeg's own
  encoding of the same input written to a raw file.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest

from rtstream.proto.formats import Sampling
from rtstream.proto.pixfmt import from_wire
from rtstream.proto.rfc4175 import VideoPacketizer
from rtstream.proto.sdp import MediaKind, SdpMedia, SdpSession, parse_sdp, write_sdp
from tests.interop.test_gst_video import (
    UdpCapture,
    depacketize_all,
    fmt_1080,
    send_paced,
    wait_port_bound,
)
from tests.peers import free_port, require_program, running

FRAMES = 4
ENCODER = {8: ("rawvideo", "uyvy422"), 10: ("bitpacked", "yuv422p10le")}


@pytest.mark.peer("ffmpeg")
@pytest.mark.parametrize("depth", [8, 10])
def test_rtstream_to_ffmpeg(tmp_path: Path, depth: int) -> None:
    ffmpeg = require_program("ffmpeg")
    fmt = fmt_1080(depth)
    rng = np.random.default_rng(100 + depth)
    # Random Y/C samples kept inside the narrow range so every value is a legal sample.
    # FFmpeg's SDP demuxer uses the first frame for probing and may not output it, and
    # may hold the last one back: send two more than it is asked to decode.
    frames = [rng.integers(0, 256, fmt.frame_bytes, dtype=np.uint8) for _ in range(FRAMES + 2)]
    port = free_port()  # also checks port + 1 (RTCP) is free
    session = SdpSession(
        origin_address="127.0.0.1",
        session_name="rtstream interop",
        session_id=1,
        media=(
            SdpMedia(
                kind=MediaKind.VIDEO,
                port=port,
                payload_type=96,
                address="127.0.0.1",
                clock_rate=90000,
                video=fmt,
            ),
        ),
    )
    sdp = tmp_path / "x.sdp"
    sdp.write_text(write_sdp(session))
    out = tmp_path / "out.raw"
    pix_fmt = ENCODER[depth][1]
    args = [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning",
        "-protocol_whitelist", "file,udp,rtp", "-buffer_size", "67108864",
        "-threads", "1",  # no frame-thread delay in the decoder
        "-i", str(sdp), "-fps_mode", "passthrough", "-frames:v", str(FRAMES),
        "-f", "rawvideo", "-pix_fmt", pix_fmt, str(out),
    ]
    log = tmp_path / "ffmpeg.log"
    with running(args, log=log) as p:
        wait_port_bound(port)
        time.sleep(0.3)
        pk = VideoPacketizer(fmt, ssrc=0x0BADCAFE, sequence=65000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for i, f in enumerate(frames):
                b = pk.packetize(f, 3000 * i)
                send_paced(tx, ("127.0.0.1", port), [b.datagram(j) for j in range(len(b))])
                time.sleep(0.02)
        try:
            rc = p.wait(15)
        except Exception:
            pytest.fail(f"ffmpeg did not finish: {log.read_text()[-2000:]}")
        assert rc == 0, log.read_text()[-2000:]
    data = np.fromfile(out, np.uint8)
    w, h = fmt.width, fmt.height
    if depth == 8:
        got = list(data.reshape(-1, fmt.frame_bytes))
    else:
        got = list(data.view("<u2").reshape(-1, 2 * w * h))
    assert len(got) == FRAMES

    def same(decoded: np.ndarray, sent: np.ndarray) -> bool:
        if depth == 8:
            return np.array_equal(decoded, sent)
        ours = from_wire(sent, fmt, "yuv422p10le")  # (3, H, W), chroma repeated
        y = decoded[: w * h].reshape(h, w)
        u = decoded[w * h : w * h + h * w // 2].reshape(h, w // 2)
        v = decoded[w * h + h * w // 2 :].reshape(h, w // 2)
        return bool(
            np.array_equal(y, ours[0])
            and np.array_equal(u, ours[1][:, ::2])
            and np.array_equal(v, ours[2][:, ::2])
        )

    first = next((k for k in (0, 1) if same(got[0], frames[k])), None)
    assert first is not None, "FFmpeg's first frame is neither of the first two sent"
    for i, g in enumerate(got):
        assert same(g, frames[first + i]), f"decoded frame {i} differs from sent {first + i}"


@pytest.mark.peer("ffmpeg")
@pytest.mark.parametrize("depth", [8, 10])
def test_ffmpeg_to_rtstream(tmp_path: Path, depth: int) -> None:
    ffmpeg = require_program("ffmpeg")
    fmt = fmt_1080(depth)
    codec, pix_fmt = ENCODER[depth]
    src = ["-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30", "-frames:v", str(FRAMES)]
    enc = ["-c:v", codec, "-pix_fmt", pix_fmt]
    ref = tmp_path / "ref.raw"
    with running([ffmpeg, "-hide_banner", "-nostdin", *src, *enc, "-f", "rawvideo",
                  str(ref)]) as p:
        assert p.wait(20) == 0
    expected = np.fromfile(ref, np.uint8).reshape(-1, fmt.frame_bytes)
    assert len(expected) == FRAMES

    sdp = tmp_path / "x.sdp"
    log = tmp_path / "ffmpeg.log"
    with UdpCapture() as cap:
        args = [ffmpeg, "-hide_banner", "-nostdin", "-re", *src, *enc, "-f", "rtp",
                "-sdp_file", str(sdp), f"rtp://127.0.0.1:{cap.port}"]
        with running(args, log=log) as p:
            assert p.wait(20) == 0, log.read_text()[-2000:]
        cap.wait_idle(0.3)
        batch, lengths = cap.result()
    # FFmpeg's SDP describes the flow; rtstream's SDP parser must read it.
    media = parse_sdp(sdp.read_text()).video()[0]
    assert media.video is not None
    assert (media.video.sampling, media.video.depth) == (Sampling.YCBCR_422, depth)
    assert (media.video.width, media.video.height) == (1920, 1080)
    events, dp = depacketize_all(fmt, batch, lengths)
    assert dp.stats.malformed == 0 and dp.stats.lost == 0, dp.stats
    assert len(events) == FRAMES, dp.stats
    for i, ev in enumerate(events):
        assert ev.complete, f"frame {i}: rows missing"
        assert np.array_equal(ev.data, expected[i]), f"frame {i} differs from FFmpeg's"
