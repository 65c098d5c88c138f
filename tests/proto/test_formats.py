"""Media format values: pgroups (RFC 4175 §4), audio packet sizes (ST 2110-30)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from rtstream.errors import ConfigError
from rtstream.proto.formats import (
    SUPPORTED_VIDEO,
    TS_ST2110_20_INTERLACED,
    TS_ST2110_20_PROGRESSIVE,
    TS_ST2110_30,
    AudioEncoding,
    AudioFormat,
    Sampling,
    VideoFormat,
)


def video(**kw: object) -> VideoFormat:
    base: dict[str, object] = {
        "sampling": Sampling.YCBCR_422,
        "depth": 10,
        "width": 1920,
        "height": 1080,
        "exactframerate": Fraction(60000, 1001),
    }
    base.update(kw)
    return VideoFormat(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sampling", "depth", "pg_bytes", "pg_pixels", "row_bytes_1920"),
    [
        (Sampling.YCBCR_422, 8, 4, 2, 3840),
        (Sampling.YCBCR_422, 10, 5, 2, 4800),
        (Sampling.YCBCR_444, 8, 3, 1, 5760),
        (Sampling.RGB, 10, 15, 4, 7200),
        (Sampling.YCBCR_420, 8, 6, 4, 5760),  # a row is two lines
        (Sampling.YCBCR_420, 10, 15, 8, 7200),
    ],
)
def test_pgroups(
    sampling: Sampling, depth: int, pg_bytes: int, pg_pixels: int, row_bytes_1920: int
) -> None:
    f = video(sampling=sampling, depth=depth)
    assert (f.pgroup_bytes, f.pgroup_pixels) == (pg_bytes, pg_pixels)
    assert f.row_bytes == row_bytes_1920
    assert f.rows == (540 if sampling is Sampling.YCBCR_420 else 1080)
    assert f.frame_bytes == f.row_bytes * f.rows


def test_1080p_422_10bit_frame() -> None:
    f = video()
    assert f.frame_bytes == 1920 // 2 * 5 * 1080 == 5_184_000
    assert f.transfer_syntax_uid == TS_ST2110_20_PROGRESSIVE
    assert f.frame_duration_ns == Fraction(1001 * 10**9, 60000)
    assert video(interlaced=True).transfer_syntax_uid == TS_ST2110_20_INTERLACED
    assert (Sampling.YCBCR_422, 10) in SUPPORTED_VIDEO


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"depth": 9}, "video.depth"),
        ({"width": 0}, "video.width"),
        ({"width": 1921}, "video.width"),  # not a whole number of 4:2:2 pgroups
        ({"sampling": Sampling.RGB, "width": 1922}, "video.width"),  # 10-bit RGB: 4 px
        ({"height": 40000}, "video.height"),
        ({"sampling": Sampling.YCBCR_420, "depth": 8, "height": 1081}, "video.height"),
        ({"interlaced": True, "height": 1081}, "video.height"),
        ({"exactframerate": 60}, "video.exactframerate"),
        ({"exactframerate": Fraction(0)}, "video.exactframerate"),
        ({"maxudp": 100}, "video.maxudp"),
        ({"segmented": True}, "video.segmented"),
    ],
)
def test_video_config_errors(kw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        video(**kw)
    assert exc.value.key == key


def test_psf_is_interlaced_and_segmented() -> None:
    f = video(interlaced=True, segmented=True)
    assert f.segmented and f.interlaced


@pytest.mark.parametrize(
    ("enc", "rate", "ch", "ptime", "spp", "payload"),
    [
        (AudioEncoding.L24, 48_000, 2, 1000, 48, 288),
        (AudioEncoding.L16, 48_000, 2, 1000, 48, 192),
        (AudioEncoding.L24, 48_000, 8, 125, 6, 144),
        (AudioEncoding.L24, 96_000, 2, 1000, 96, 576),
        (AudioEncoding.L16, 44_100, 1, 1000, 45, 90),  # 44.1 rounds up
        (AudioEncoding.L24, 44_100, 2, 125, 6, 36),
    ],
)
def test_audio_packet_sizes(
    enc: AudioEncoding, rate: int, ch: int, ptime: int, spp: int, payload: int
) -> None:
    f = AudioFormat(encoding=enc, sample_rate=rate, channels=ch, ptime_us=ptime)
    assert f.samples_per_packet == spp
    assert f.packet_payload_bytes == payload
    assert f.transfer_syntax_uid == TS_ST2110_30


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"sample_rate": 32_000}, "audio.sample_rate"),
        ({"channels": 0}, "audio.channels"),
        ({"channels": 9}, "audio.channels"),
        ({"ptime_us": 250}, "audio.ptime_us"),
    ],
)
def test_audio_config_errors(kw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        AudioFormat(**kw)  # type: ignore[arg-type]
    assert exc.value.key == key
    assert key in str(exc.value)


def test_sample_bytes() -> None:
    assert AudioEncoding.L16.sample_bytes == 2
    assert AudioEncoding.L24.sample_bytes == 3
