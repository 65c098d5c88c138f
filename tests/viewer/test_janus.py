"""Feeding Janus: the RFC 6184 packetizer, the RTCP pieces, the configuration, and the
feeder against a real Janus 1.1.2 (on 127.0.0.1; no browser here, see
test_janus_browser.py) and a real FFmpeg decoding what the packetizer sends."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtstream.errors import ConfigError, RemoteProtocolError
from rtstream.proto.rtp import parse_rtp
from rtstream.viewer.encoder import EncoderConfig, EncoderRegistry, _Codec
from rtstream.viewer.janus import (
    FeedState,
    H264Packetizer,
    JanusConfig,
    JanusFeeder,
    keyframe_requests,
    sender_report,
    split_annexb,
)
from tests.peers import free_port, require_program, running
from tests.viewer.conftest import make_pattern

STATIC_JS = Path(__file__).resolve().parents[2] / "rtstream" / "viewer" / "static" / "viewer.js"


def _encode(n: int, width: int = 320, height: int = 240, key_every: int = 10) -> list[tuple[bytes, bool]]:
    """``n`` real libx264 access units (the shared encoder's settings) of a moving picture."""
    codec = _Codec(EncoderConfig(fps=30, keyframe_interval_s=key_every / 30), width, height)
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        img = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        out += codec.encode(img, "rgb24", 1000 + i * 3000, False)
    return out


def _depacketize(datagrams: list[bytes]) -> list[bytes]:
    """NAL units back from single-NAL and FU-A packets (RFC 6184 §5.6, §5.8), test-side."""
    nals: list[bytes] = []
    frag = bytearray()
    for d in datagrams:
        p = parse_rtp(d).payload
        kind = p[0] & 0x1F
        if kind == 28:
            if p[1] & 0x80:
                frag = bytearray([(p[0] & 0xE0) | (p[1] & 0x1F)])
            frag += p[2:]
            if p[1] & 0x40:
                nals.append(bytes(frag))
        else:
            nals.append(bytes(p))
    return nals


# -- Annex B and RFC 6184 -----------------------------------------------------------------------


@pytest.mark.parametrize(("stream", "nals"), [
    (b"\x00\x00\x00\x01\x67AB\x00\x00\x01\x68C", [b"\x67AB", b"\x68C"]),
    (b"\x00\x00\x01\x65xyz\x00\x00\x00\x00\x01\x41q", [b"\x65xyz", b"\x41q"]),  # trailing zeros
    (b"\x65raw", [b"\x65raw"]),                                               # no start code
    (b"", []),
    (b"\x00\x00\x01\x00\x00\x01\x41q", [b"\x41q"]),                            # empty unit
])
def test_split_annexb(stream: bytes, nals: list[bytes]) -> None:
    assert split_annexb(stream) == nals


def test_packets_carry_every_nal_unit_within_the_mtu() -> None:
    units = _encode(12)
    pk = H264Packetizer(ssrc=0x1234, mtu=1000, first_sequence=65530)
    expected_seq = 65530
    for i, (au, _key) in enumerate(units):
        ts = 1000 + i * 3000
        datagrams = pk.packetize(au, ts)
        pkts = [parse_rtp(d) for d in datagrams]
        assert all(len(d) <= 1000 for d in datagrams)
        assert [p.marker for p in pkts] == [False] * (len(pkts) - 1) + [True]
        assert {(p.timestamp, p.ssrc, p.payload_type) for p in pkts} == {(ts, 0x1234, 96)}
        for p in pkts:  # sequence numbers run on across the 16-bit wrap
            assert p.sequence == expected_seq
            expected_seq = (expected_seq + 1) & 0xFFFF
        assert _depacketize(datagrams) == split_annexb(au)
    assert pk.stats.fragments > 0 and pk.stats.access_units == len(units)


def test_an_idr_without_parameter_sets_gets_the_last_ones() -> None:
    units = _encode(12, key_every=10)
    keys = [au for au, key in units if key]
    assert len(keys) >= 2
    pk = H264Packetizer(ssrc=1, first_sequence=0)
    first = split_annexb(keys[0])
    pk.packetize(keys[0], 0)
    bare = b"".join(b"\x00\x00\x00\x01" + n for n in split_annexb(keys[1]) if n[0] & 0x1F not in (7, 8))
    nals = _depacketize(pk.packetize(bare, 3000))
    types = [n[0] & 0x1F for n in nals]
    assert types[:2] == [7, 8] and 5 in types
    assert nals[0] == next(n for n in first if n[0] & 0x1F == 7)
    assert pk.stats.parameter_sets_inserted == 1


def test_ffmpeg_decodes_what_the_packetizer_sends(tmp_path: Path) -> None:
    """A real decoder: FFmpeg reads our RTP by an SDP and decodes every frame."""
    ffmpeg = require_program("ffmpeg")
    width, height, frames = 320, 240, 20
    port = free_port(count=1, step=2)
    sdp = tmp_path / "h264.sdp"
    sdp.write_text(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=rtstream\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=video {port} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        "a=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\n")
    out = tmp_path / "out.yuv"
    units = _encode(frames * 3, width, height, key_every=10)
    pk = H264Packetizer(mtu=1200)
    cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-protocol_whitelist", "file,udp,rtp",
           "-i", str(sdp), "-frames:v", str(frames), "-f", "rawvideo", "-pix_fmt", "yuv420p",
           "-y", str(out)]
    with running(cmd, log=tmp_path / "ffmpeg.log") as proc, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        time.sleep(1.0)  # let FFmpeg open its socket
        for i, (au, _key) in enumerate(units):
            if proc.poll() is not None:
                break
            for d in pk.packetize(au, 1000 + i * 3000):
                tx.sendto(d, ("127.0.0.1", port))
            time.sleep(1 / 30)
        proc.wait(20)
    assert out.stat().st_size == frames * width * height * 3 // 2, (tmp_path / "ffmpeg.log").read_text()


# -- RTCP ---------------------------------------------------------------------------------------

_PLI = struct.pack("!BBHII", 0x81, 206, 2, 1, 2)
_FIR = struct.pack("!BBHIIII", 0x84, 206, 4, 1, 0, 2, 0x05000000)
_RR = struct.pack("!BBHI", 0x80, 201, 1, 9)


@pytest.mark.parametrize(("datagram", "n"), [
    (_PLI, 1), (_FIR, 1), (_RR + _PLI, 1), (_RR + _PLI + _FIR, 2), (_RR, 0),
    (sender_report(5, 0, 0, 0, 0), 0),
])
def test_keyframe_requests_counts_pli_and_fir(datagram: bytes, n: int) -> None:
    assert keyframe_requests(datagram) == n


@pytest.mark.parametrize("cut", range(1, len(_RR + _PLI)))
def test_keyframe_requests_refuses_every_truncation(cut: int) -> None:
    data = (_RR + _PLI)[:cut]
    if cut == len(_RR):
        assert keyframe_requests(data) == 0  # a whole RR alone is fine
        return
    with pytest.raises(RemoteProtocolError):
        keyframe_requests(data)


@pytest.mark.parametrize("bad", [_PLI + b"\x01", b"\x40" + _PLI[1:], b"junk-junk"])
def test_keyframe_requests_refuses_garbage(bad: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        keyframe_requests(bad)


def test_sender_report_layout() -> None:
    sr = sender_report(0xABCDEF01, 1_700_000_000_500_000_000, 0x1_0000_0005, 10, 2000)
    b0, pt, words, ssrc, hi, lo, ts, packets, octets = struct.unpack("!BBHIIIIII", sr)
    assert (b0, pt, words, ssrc) == (0x80, 200, 6, 0xABCDEF01)
    assert hi == 1_700_000_000 + 2_208_988_800 and lo == 1 << 31  # half a second
    assert (ts, packets, octets) == (5, 10, 2000)


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "flag"), [
    ({"url": "ftp://x/janus", "mountpoint": 1, "secret": "s"}, "--janus"),
    ({"url": "http://127.0.0.1:8088/janus", "secret": "s"}, "--janus-mountpoint"),
    ({"url": "http://127.0.0.1:8088/janus", "mountpoint": 1}, "--janus-secret"),
    ({"url": "http://127.0.0.1:8088/janus", "mountpoint": 0, "secret": "s"}, "--janus-mountpoint"),
    ({"url": "http://127.0.0.1:8088/janus", "admin_key": "k", "page_url": "nope"},
     "--janus-page-url"),
])
def test_config_errors_name_the_flag(kwargs: dict[str, Any], flag: str) -> None:
    with pytest.raises(ConfigError) as info:
        JanusConfig(**kwargs)
    assert flag in str(info.value)


def test_view_refuses_janus_flags_without_janus() -> None:
    from rtstream.cli import build_parser
    from rtstream.commands.view import _janus_config

    args = build_parser().parse_args(["view", "--test-pattern", "--janus-mountpoint", "3"])
    with pytest.raises(ConfigError, match="--janus-mountpoint"):
        _janus_config(args)
    args = build_parser().parse_args(["view", "--test-pattern", "--janus", "http://h:1/janus",
                                      "--janus-admin-key", "k", "--gop", "0.5"])
    cfg = _janus_config(args)
    assert cfg.admin_key == "k" and args.keyframe_interval == 0.5


# -- against a real Janus -----------------------------------------------------------------------


async def _feed(janus: Any, cfg: JanusConfig, until: Any) -> tuple[JanusFeeder, Any]:
    """Run a test pattern into a feeder until ``until(feeder)`` holds; the feeder afterwards."""
    pattern = make_pattern(fps=30)
    registry = EncoderRegistry(EncoderConfig(bitrate=1_000_000, fps=30, keyframe_interval_s=1.0))

    async def pump() -> None:
        async for frame in pattern:
            for enc in registry.for_stream(frame.stream_id):
                enc.submit(frame.image, frame.pix_fmt, frame.rtp_timestamp, frame.origin_ns,
                           frame.overlay)

    task = asyncio.get_running_loop().create_task(pump())
    seen = None
    try:
        async with JanusFeeder(cfg, registry, "test") as feeder:
            async with asyncio.timeout(20):
                while (seen := await until(feeder)) is None:
                    await asyncio.sleep(0.2)
    finally:
        task.cancel()
        await registry.close()
    return feeder, seen


@pytest.fixture
def janus(tmp_path: Path) -> Any:
    from tests.viewer.janus_peer import Janus

    peer = Janus(tmp_path / "janus")
    peer.start()
    yield peer
    peer.stop()


@pytest.mark.peer("janus")
@pytest.mark.timeout(60)
def test_feeder_finds_the_mountpoint_by_its_secret(janus: Any) -> None:
    from tests.viewer.janus_peer import MOUNTPOINT, PIN, SECRET

    cfg = JanusConfig(url=janus.url, mountpoint=MOUNTPOINT, secret=SECRET)

    async def media_arrives(feeder: JanusFeeder) -> Any:
        info = await asyncio.to_thread(janus.streaming, {"request": "info", "id": MOUNTPOINT,
                                                         "secret": SECRET})
        media = info["info"]["media"]
        fresh = all(m.get("age_ms", 1e9) < 1000 for m in media)
        # age_ms counts from the mountpoint's creation until a packet arrives: wait 1.5 s
        return media if fresh and feeder.stats.frames > 45 else None

    feeder, media = asyncio.run(_feed(janus, cfg, media_arrives))
    assert {m["type"] for m in media} == {"video", "data"}
    assert feeder.mountpoint is not None and not feeder.mountpoint.created
    assert feeder.mountpoint.video_port == janus.video_port
    assert feeder.mountpoint.data_port == janus.data_port
    assert feeder.page_info() == {"url": janus.url, "mountpoint": MOUNTPOINT, "pin": PIN,
                                  "state": "closed"}
    # rtstream does not destroy a mountpoint it did not make
    assert "error" not in janus.streaming({"request": "info", "id": MOUNTPOINT})


@pytest.mark.peer("janus")
@pytest.mark.timeout(60)
def test_wrong_secret_or_admin_key_or_no_janus_is_a_clear_error(janus: Any) -> None:
    from tests.viewer.janus_peer import MOUNTPOINT

    registry = EncoderRegistry(EncoderConfig())

    async def start(cfg: JanusConfig) -> None:
        async with JanusFeeder(cfg, registry, "test"):
            pass

    with pytest.raises(ConfigError, match="--janus-secret"):
        asyncio.run(start(JanusConfig(url=janus.url, mountpoint=MOUNTPOINT, secret="wrong-1")))
    with pytest.raises(ConfigError, match="--janus-mountpoint"):
        asyncio.run(start(JanusConfig(url=janus.url, mountpoint=9999, secret="wrong-1")))
    with pytest.raises(ConfigError, match="--janus-admin-key"):
        asyncio.run(start(JanusConfig(url=janus.url, admin_key="not-the-key")))
    dead = f"http://127.0.0.1:{free_port(kind=socket.SOCK_STREAM)}/janus"
    with pytest.raises(ConfigError, match="--janus"):
        asyncio.run(start(JanusConfig(url=dead, admin_key="k")))


@pytest.mark.peer("janus")
@pytest.mark.timeout(60)
def test_admin_key_creates_a_mountpoint_and_destroys_it_on_exit(janus: Any) -> None:
    from tests.viewer.janus_peer import ADMIN_KEY

    cfg = JanusConfig(url=janus.url, admin_key=ADMIN_KEY, mountpoint=4242, pin="pin-4242")

    async def fed(feeder: JanusFeeder) -> Any:
        mp = feeder.mountpoint
        assert mp is not None
        info = await asyncio.to_thread(janus.streaming, {"request": "info", "id": mp.id,
                                                         "secret": mp.secret})
        media = info["info"]["media"]
        ok = feeder.stats.frames > 45 and all(m.get("age_ms", 1e9) < 1000 for m in media)
        return (info["info"], feeder.page_info()) if ok else None

    feeder, (info, page) = asyncio.run(_feed(janus, cfg, fed))
    assert feeder.mountpoint is not None and feeder.mountpoint.created
    assert info["id"] == 4242 and info["pin"] == "pin-4242"
    assert [m["codec"] for m in info["media"] if m["type"] == "video"] == ["h264"]
    assert page == {"url": janus.url, "mountpoint": 4242, "pin": "pin-4242", "state": "feeding"}
    assert feeder.state is FeedState.CLOSED
    gone = janus.streaming({"request": "info", "id": 4242})
    assert gone.get("error_code") == 455, gone  # no such mountpoint any more


@pytest.mark.peer("janus")
@pytest.mark.timeout(90)
def test_created_mountpoint_comes_back_after_removal_and_janus_restart(janus: Any) -> None:
    """Someone destroys the mountpoint, then Janus is killed and started again: each time
    the feeder makes it again (same id and pin) and feeds it; rtstream never stops."""
    from tests.viewer.janus_peer import ADMIN_KEY

    cfg = JanusConfig(url=janus.url, admin_key=ADMIN_KEY, mountpoint=4343, pin="pin-4343",
                      check_interval_s=0.3)
    steps: list[str] = []

    async def info(mp_id: int, secret: str | None) -> dict[str, Any]:
        return await asyncio.to_thread(janus.streaming, {"request": "info", "id": mp_id,
                                                         "secret": secret})

    async def scenario(feeder: JanusFeeder) -> Any:
        mp = feeder.mountpoint
        assert mp is not None
        if not steps and feeder.stats.frames > 10:
            await asyncio.to_thread(janus.streaming, {"request": "destroy", "id": mp.id,
                                                      "secret": mp.secret})
            steps.append("destroyed")
        elif steps == ["destroyed"] and feeder.stats.janus_returns == 1:
            steps.append("recreated")
            await asyncio.to_thread(janus.kill)
            while feeder.state is not FeedState.JANUS_DOWN:
                await asyncio.sleep(0.1)
            frames = feeder.stats.frames
            await asyncio.sleep(1.0)
            assert feeder.stats.frames == frames  # nothing sent while Janus is away ...
            await asyncio.to_thread(janus.start)
            steps.append("restarted")
        elif steps == ["destroyed", "recreated", "restarted"] and feeder.stats.janus_returns == 2:
            steps.append(f"fed-from:{feeder.stats.frames}")
        elif len(steps) == 4 and feeder.stats.frames > int(steps[3].split(":")[1]) + 45:
            fresh = await info(mp.id, mp.secret)
            media = fresh["info"]["media"]
            if all(m.get("age_ms", 1e9) < 1000 for m in media):
                return fresh["info"], feeder.stats.janus_losses
        return None

    feeder, (final, losses) = asyncio.run(_feed(janus, cfg, scenario))
    assert steps[:3] == ["destroyed", "recreated", "restarted"]  # ... and fed again since
    assert final["id"] == 4343 and final["pin"] == "pin-4343"
    assert losses == 2 and feeder.stats.janus_returns == 2


# -- the page's offset learning (pure; node) ----------------------------------------------------


def _node(expr: str) -> Any:
    exe = require_program("node")
    script = f"const m = require({json.dumps(str(STATIC_JS))}); console.log(JSON.stringify({expr}));"
    out = subprocess.run([exe, "-e", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_page_learns_the_janus_timestamp_offset_from_arrivals() -> None:
    # Source frames every 3000 ticks (30 fps, uniform: only arrival times can disambiguate);
    # Janus's base makes browser rtp = source rtp - 123456789 (mod 2^32); messages arrive
    # 0.5 ms before their frame's last packet, frames 33 ms apart.
    script = """(() => {
      const votes = new Map(), msgs = []; let decided = null, n = 0;
      for (let i = 0; i < 40 && decided === null; i++, n++) {
        const src = 4294960000 + i * 3000, at = 1000 + i * 33.3;
        msgs.push({rtp: src >>> 0, at: at - 0.5});
        const browser = ((src - 123456789) >>> 0);
        decided = m.rtsVoteOffset(votes, m.rtsPairOffset(msgs, browser, at, 8));
      }
      return [decided, n, m.rtsPairOffset([{rtp: 5, at: 0}], 10, 50, 8)];
    })()"""
    decided, frames, none = _node(script)
    assert decided == (-123456789) % 2**32
    assert frames == _node("m.OFFSET_VOTES")
    assert none is None  # nothing arrived near the frame


def test_page_needs_a_clear_majority_to_decide() -> None:
    script = """(() => { const v = new Map(); let d = null;
      for (let i = 0; i < 12; i++) d = m.rtsVoteOffset(v, i % 2 ? 100 : 200); return d; })()"""
    assert _node(script) is None


# -- the command line -----------------------------------------------------------------------------


@pytest.mark.peer("janus")
@pytest.mark.timeout(90)
def test_view_command_feeds_janus_and_cleans_up(janus: Any, tmp_path: Path) -> None:
    """``rtstream view --test-pattern --janus ... --janus-admin-key``: the mountpoint is made
    and fed, the page's stream list names it (pin only with the token), /api/stats counts
    the feed, and SIGINT destroys the mountpoint."""
    import os
    import re
    import signal
    import sys
    import urllib.error
    import urllib.request

    from tests.viewer.janus_peer import ADMIN_KEY

    token = "janus-cli-token-1"
    port = free_port(kind=socket.SOCK_STREAM)
    log = tmp_path / "view.log"
    env = {**os.environ, "RTSTREAM_JANUS_ADMIN_KEY": ADMIN_KEY, "XDG_STATE_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "rtstream", "view", "--test-pattern", "--size", "320x240",
           "--fps", "15", "--bitrate", "500k", "--http", f"127.0.0.1:{port}", "--token", token,
           "--janus", janus.url, "--janus-mountpoint", "777", "--janus-pin", "pin-777",
           "--gop", "1"]

    def get(path: str, auth: bool = True) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if auth else {}
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 40
        while "goes to Janus mountpoint 777 (created)" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        time.sleep(1.5)
        info = janus.streaming({"request": "info", "id": 777, "secret": None})
        assert info["info"]["id"] == 777 and "pin" not in info["info"]  # no secret, no pin
        (stream,) = get("/api/streams")["streams"]
        assert stream["janus"] == {"url": janus.url, "mountpoint": 777, "pin": "pin-777",
                                   "state": "feeding"}
        with pytest.raises(urllib.error.HTTPError) as denied:
            get("/api/streams", auth=False)
        assert denied.value.code == 401
        (feed,) = get("/api/stats")["janus"]
        assert feed["frames"] > 0 and feed["packets"] > feed["frames"] and "pin" not in feed
        assert re.search(r"open http://127\.0\.0\.1:\d+/\?token=", log.read_text())
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    gone = janus.streaming({"request": "info", "id": 777})
    assert gone.get("error_code") == 455, (gone, log.read_text())
