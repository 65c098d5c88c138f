"""SDP files that FFmpeg really writes (``-f rtp -sdp_file``) parse into what was asked.

FFmpeg's RFC 4175 SDP lacks most ST 2110-20 parameters (no exactframerate, colorimetry,
PM, SSN, TP) and puts ``c=`` at session level; the parser fills the documented defaults.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from rtstream.proto.formats import AudioEncoding, AudioFormat, Sampling, VideoFormat
from rtstream.proto.sdp import MediaKind, parse_sdp, write_sdp
from tests.peers import free_port, require_program

pytestmark = pytest.mark.peer("ffmpeg")


def _ffmpeg_sdp(tmp_path: Path, inputs: list[str], codec: list[str]) -> tuple[str, int]:
    ffmpeg = require_program("ffmpeg")
    port = free_port()
    sdp = tmp_path / "x.sdp"
    subprocess.run(
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            *inputs,
            *codec,
            "-f",
            "rtp",
            "-sdp_file",
            str(sdp),
            f"rtp://127.0.0.1:{port}",
        ],
        check=True,
        timeout=60,
    )
    return sdp.read_text(), port


@pytest.mark.parametrize(
    ("pix_fmt", "sampling"), [("uyvy422", Sampling.YCBCR_422), ("rgb24", Sampling.RGB)]
)
def test_ffmpeg_rawvideo_sdp(tmp_path: Path, pix_fmt: str, sampling: Sampling) -> None:
    text, port = _ffmpeg_sdp(
        tmp_path,
        ["-f", "lavfi", "-i", "testsrc=size=64x48"],
        ["-frames:v", "1", "-c:v", "rawvideo", "-pix_fmt", pix_fmt],
    )
    s = parse_sdp(text)
    (v,) = s.media
    assert v.kind is MediaKind.VIDEO
    assert (v.port, v.address, v.ttl, v.clock_rate) == (port, "127.0.0.1", None, 90_000)
    assert 96 <= v.payload_type <= 127
    assert v.video == VideoFormat(
        sampling=sampling, depth=8, width=64, height=48, exactframerate=Fraction(30)
    )
    assert parse_sdp(write_sdp(s)) == s


@pytest.mark.parametrize(
    ("codec", "rate", "channels", "encoding"),
    [
        ("pcm_s24be", 48_000, 2, AudioEncoding.L24),
        ("pcm_s16be", 48_000, 2, AudioEncoding.L16),
        ("pcm_s24be", 96_000, 1, AudioEncoding.L24),
        ("pcm_s16be", 44_100, 2, AudioEncoding.L16),  # RFC 3551 static payload type 10
    ],
)
def test_ffmpeg_pcm_sdp(
    tmp_path: Path, codec: str, rate: int, channels: int, encoding: AudioEncoding
) -> None:
    text, port = _ffmpeg_sdp(
        tmp_path,
        ["-f", "lavfi", "-i", f"sine=frequency=1000:sample_rate={rate}", "-t", "0.01"],
        ["-ac", str(channels), "-ar", str(rate), "-c:a", codec],
    )
    s = parse_sdp(text)
    (a,) = s.media
    assert a.kind is MediaKind.AUDIO
    assert (a.port, a.address, a.clock_rate) == (port, "127.0.0.1", rate)
    assert a.audio == AudioFormat(encoding=encoding, sample_rate=rate, channels=channels)
    if rate == 44_100:
        assert a.payload_type == 10 and "rtpmap" not in text
    assert parse_sdp(write_sdp(s)) == s
