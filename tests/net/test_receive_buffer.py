"""The receive buffer a receiver asks for: room for 8 frames of a video flow (at least
32 MiB) unless ``ReceiverConfig.rcvbuf`` says otherwise."""

from __future__ import annotations

from rtstream.proto.sdp import parse_sdp
from rtstream.receiver import ReceiverConfig
from rtstream.receiver.flows import FlowSet, build_flows
from rtstream.receiver.readers import DEFAULT_RCVBUF, open_socket, receive_buffer
from rtstream.sysclock import SystemClock
from tests.net.test_dup_split_reader import Collect
from tests.peers import free_port, require_root


def session(port: int, width: int, height: int) -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=buf\r\nt=0 0\r\n"
        f"m=video {port} RTP/AVP 96\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:96 raw/90000\r\n"
        f"a=fmtp:96 sampling=YCbCr-4:2:2; width={width}; height={height}; "
        "exactframerate=60; depth=10; TCS=SDR; colorimetry=BT709; PM=2110GPM; "
        "SSN=ST2110-20:2017; TP=2110TPN\r\na=mediaclk:direct=0\r\na=mid:VID\r\n"
        f"m=application {port + 2} RTP/AVP 100\r\nc=IN IP4 127.0.0.1\r\n"
        "a=rtpmap:100 dicom/90000\r\n"
        + "".join(f"a=extmap:{i} urn:x-nmos:rtp-hdrext:{name}\r\n" for i, name in enumerate(
            ("sync-timestamp", "origin-timestamp", "flow-id", "source-id"), start=1))
        + "a=mid:VMETA\r\na=x-rtstream-describes:VID\r\n"
    )


def flows(cfg: ReceiverConfig, port: int, width: int, height: int) -> FlowSet:
    out = Collect()
    return build_flows(parse_sdp(session(port, width, height)), cfg, SystemClock(), out, out, out)


def test_a_video_flow_gets_room_for_eight_frames() -> None:
    cfg = ReceiverConfig(sdp="-")
    uhd = flows(cfg, 5004, 3840, 2160)
    (video,) = uhd.video
    assert video.fmt.frame_bytes == 3840 * 2160 * 5 // 2
    assert receive_buffer(video, cfg) == 8 * video.fmt.frame_bytes  # 166 MB
    (meta,) = uhd.metadata
    assert receive_buffer(meta, cfg) == DEFAULT_RCVBUF
    (small,) = flows(cfg, 5004, 640, 480).video
    assert receive_buffer(small, cfg) == DEFAULT_RCVBUF  # 8 frames are 6 MB
    own = ReceiverConfig(sdp="-", rcvbuf=1 << 20)
    assert receive_buffer(flows(own, 5004, 3840, 2160).video[0], own) == 1 << 20


def test_the_socket_gets_it() -> None:
    require_root("a receive buffer above net.core.rmem_max (SO_RCVBUFFORCE)")
    cfg = ReceiverConfig(sdp="-")
    (video,) = flows(cfg, free_port(count=2, step=2), 3840, 2160).video
    sock = open_socket(video, cfg)
    try:
        assert sock.rcvbuf // 2 >= 8 * video.fmt.frame_bytes  # Linux reports it doubled
    finally:
        sock.close()
