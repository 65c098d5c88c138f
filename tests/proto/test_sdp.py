"""SDP writer and parser: ST 2110-20/-30 and PS3.22 metadata media (spec §4)."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtstream.errors import ConfigError, RemoteProtocolError
from rtstream.proto.clock import RefClock
from rtstream.proto.formats import _PGROUP, AudioEncoding, AudioFormat, Sampling, VideoFormat
from rtstream.proto.nmos_ext import ExtMap, NmosItem
from rtstream.proto.sdp import MediaKind, SdpMedia, SdpSession, parse_sdp, write_sdp
from tests.vectors.sdp_samples import (
    BAD_SDPS,
    FFMPEG_AUDIO_SDP,
    FFMPEG_STATIC_L16_SDP,
    FFMPEG_VIDEO_SDP,
    GSTREAMER_STYLE_SDP,
    PTP,
    RTSTREAM_SDP,
    RTSTREAM_SESSION,
    SPEC_EXAMPLE_SDP,
)

FIELD = re.compile(r"^SDP (line \d+ (['\"]).*\2|[vos]=|text|session)$", re.S)


def test_write_exact_text() -> None:
    assert write_sdp(RTSTREAM_SESSION) == RTSTREAM_SDP


def test_parse_own_text() -> None:
    s = parse_sdp(RTSTREAM_SDP)
    assert s == RTSTREAM_SESSION
    assert [m.mid for m in s.video()] == ["VID"]
    assert [m.mid for m in s.audio()] == ["AUD"]
    assert [m.mid for m in s.metadata()] == ["VIDMETA", "AUDMETA"]
    vid_meta, aud_meta = s.metadata()
    assert s.described_by(vid_meta) is s.video()[0]
    assert s.described_by(aud_meta) is s.audio()[0]
    assert vid_meta.clock_rate == 90_000 and aud_meta.clock_rate == 48_000
    assert parse_sdp(RTSTREAM_SDP.encode()) == s


def test_spec_example() -> None:
    s = parse_sdp(SPEC_EXAMPLE_SDP)
    (v,) = s.video()
    (m,) = s.metadata()
    assert (s.origin_address, s.session_id, s.session_name) == (
        "192.0.2.10",
        1,
        "DICOM-RTV endoscope 1",
    )
    assert (v.port, v.payload_type, v.address, v.ttl, v.source_filter) == (
        5004,
        96,
        "239.10.1.1",
        64,
        "192.0.2.10",
    )
    assert v.video == VideoFormat(
        sampling=Sampling.YCBCR_422,
        depth=10,
        width=1920,
        height=1080,
        exactframerate=Fraction(60000, 1001),
        tp="2110TPN",
    )
    assert v.refclk == PTP and v.mediaclk_offset == 0 and v.mid == "VID"
    assert (m.port, m.payload_type, m.clock_rate, m.mid, m.describes) == (
        5006,
        104,
        90_000,
        "META",
        None,
    )
    assert m.extmap == ExtMap(
        {
            NmosItem.SYNC_TIMESTAMP: 1,
            NmosItem.ORIGIN_TIMESTAMP: 2,
            NmosItem.FLOW_ID: 3,
            NmosItem.SOURCE_ID: 4,
            NmosItem.GRAIN_FLAGS: 5,
        }
    )
    assert parse_sdp(write_sdp(s)) == s


def test_ffmpeg_video_gets_defaults() -> None:
    s = parse_sdp(FFMPEG_VIDEO_SDP)
    (v,) = s.media
    assert (s.origin_address, s.session_name, s.session_id) == ("127.0.0.1", "No Name", 0)
    assert (v.kind, v.port, v.payload_type, v.address, v.ttl, v.clock_rate) == (
        MediaKind.VIDEO,
        40000,
        96,
        "127.0.0.1",
        None,
        90_000,
    )
    assert v.video == VideoFormat(
        sampling=Sampling.YCBCR_422, depth=8, width=64, height=48, exactframerate=Fraction(30)
    )
    assert v.refclk is None and v.mediaclk_offset is None and v.extmap is None


def test_ffmpeg_audio() -> None:
    (a,) = parse_sdp(FFMPEG_AUDIO_SDP).media
    assert a.audio == AudioFormat(encoding=AudioEncoding.L24, sample_rate=48_000, channels=2)
    assert (a.port, a.payload_type, a.clock_rate) == (40002, 97, 48_000)
    (b,) = parse_sdp(FFMPEG_STATIC_L16_SDP).media
    assert b.audio == AudioFormat(encoding=AudioEncoding.L16, sample_rate=44_100, channels=2)
    assert b.payload_type == 10


def test_gstreamer_style_and_session_level_attributes() -> None:
    (v,) = parse_sdp(GSTREAMER_STYLE_SDP).media
    assert v.video is not None
    assert (v.video.width, v.video.height, v.video.depth) == (320, 240, 10)
    assert v.video.exactframerate == 50 and v.video.interlaced and not v.video.segmented
    assert (v.video.colorimetry, v.video.tp, v.video.pm) == ("BT709-2", "2110TPN", "2110GPM")
    assert v.refclk == RefClock(local_mac="02-00-00-00-00-01")
    assert v.mediaclk_offset == 12345
    assert v.extmap == ExtMap({NmosItem.FLOW_ID: 3})  # smpte-tc URN ignored


def test_framerate_attribute_and_flags() -> None:
    text = (
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=x\nc=IN IP4 10.0.0.2\nm=video 5000 RTP/AVP 96\n"
        "a=rtpmap:96 raw/90000\na=framerate:29.97\n"
        "a=fmtp:96 sampling=RGB;width=16;height=8;interlace;segmented;MAXUDP=8960\n"
    )
    (v,) = parse_sdp(text).media
    assert v.video is not None
    assert v.video.exactframerate == Fraction(2997, 100)
    assert v.video.interlaced and v.video.segmented and v.video.maxudp == 8960
    assert "interlace; segmented" in write_sdp(parse_sdp(text))


def test_ipv6_and_unsupported_refclk_ignored() -> None:
    text = (
        "v=0\no=- 1 1 IN IP6 2001:db8::1\ns=\nt=0 0\nm=audio 5000 RTP/AVP 97\n"
        "c=IN IP6 ff3e::1234\na=source-filter: incl IN IP6 ff3e::1234 2001:db8::1\n"
        "a=rtpmap:97 L16/96000/8\na=ptime:0.125\na=ts-refclk:ntp=pool.example\n"
        "a=ts-refclk:localmac=02-00-00-00-00-09\n"
    )
    s = parse_sdp(text)
    (a,) = s.media
    assert s.session_name == ""
    assert (a.address, a.ttl, a.source_filter) == ("ff3e::1234", None, "2001:db8::1")
    assert a.audio == AudioFormat(
        encoding=AudioEncoding.L16, sample_rate=96_000, channels=8, ptime_us=125
    )
    assert a.refclk == RefClock(local_mac="02-00-00-00-00-09")
    assert parse_sdp(write_sdp(s)) == s


@pytest.mark.parametrize(("name", "text", "where"), BAD_SDPS, ids=[b[0] for b in BAD_SDPS])
def test_errors_name_the_line(name: str, text: str, where: str) -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        parse_sdp(text)
    assert exc.value.field.startswith(where), exc.value.field
    assert FIELD.match(exc.value.field)


@pytest.mark.parametrize(
    "text", [RTSTREAM_SDP, SPEC_EXAMPLE_SDP, GSTREAMER_STYLE_SDP, FFMPEG_VIDEO_SDP]
)
def test_every_truncated_prefix_parses_or_raises_remote_error(text: str) -> None:
    """Text is line-oriented: a prefix cut at a line end can be a valid, smaller SDP."""
    raised = 0
    for k in range(len(text)):
        try:
            parse_sdp(text[:k])
        except RemoteProtocolError as e:
            assert FIELD.match(e.field), e.field
            raised += 1
    assert raised > 0
    # cut before s= is always an error
    cut = text.index("s=")
    for k in range(cut):
        with pytest.raises(RemoteProtocolError):
            parse_sdp(text[:k])


@given(st.text(max_size=300))
def test_garbage_text(text: str) -> None:
    try:
        parse_sdp(text)
    except RemoteProtocolError as e:
        assert FIELD.match(e.field), e.field


@given(st.binary(max_size=200))
def test_garbage_bytes(data: bytes) -> None:
    try:
        parse_sdp(data)
    except RemoteProtocolError as e:
        assert FIELD.match(e.field) or e.field == "SDP text", e.field


@given(st.lists(st.sampled_from(RTSTREAM_SDP.split("\r\n")), max_size=40))
def test_shuffled_real_lines(lines: list[str]) -> None:
    try:
        parse_sdp("\n".join(lines))
    except RemoteProtocolError as e:
        assert FIELD.match(e.field), e.field


# --- hypothesis round trip --------------------------------------------------------------

token = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,9}", fullmatch=True)
value = st.from_regex(r"[A-Za-z0-9:.()/_\-]{1,14}", fullmatch=True)
hexbyte = st.integers(0, 255).map(lambda b: f"{b:02X}")
refclks = (
    st.none()
    | st.builds(RefClock, local_mac=st.lists(hexbyte, min_size=6, max_size=6).map("-".join))
    | st.builds(
        RefClock,
        ptp_grandmaster=st.lists(hexbyte, min_size=8, max_size=8).map("-".join),
        ptp_domain=st.integers(0, 127),
    )
)
extmaps = st.permutations(list(range(1, 15))).flatmap(
    lambda ids: st.integers(1, 6).map(
        lambda n: ExtMap(dict(zip(list(NmosItem)[:n], ids[:n], strict=True)))
    )
)


@st.composite
def video_formats(draw: st.DrawFn) -> VideoFormat:
    sampling, depth = draw(st.sampled_from(sorted(_PGROUP, key=lambda k: (k[0].value, k[1]))))
    probe = VideoFormat(
        sampling=sampling, depth=depth, width=16, height=8, exactframerate=Fraction(1)
    )
    step = probe.pgroup_pixels_per_line
    interlaced = draw(st.booleans())
    return VideoFormat(
        sampling=sampling,
        depth=depth,
        width=step * draw(st.integers(1, 32767 // step)),
        height=2 * draw(st.integers(1, 16383)),
        exactframerate=Fraction(draw(st.integers(1, 10**6)), draw(st.integers(1, 10**4))),
        colorimetry=draw(value),
        interlaced=interlaced,
        segmented=interlaced and draw(st.booleans()),
        tcs=draw(value),
        range=draw(value),
        pm=draw(value),
        ssn=draw(value),
        tp=draw(value),
        par=draw(value),
        maxudp=draw(st.none() | st.integers(256, 65507)),
    )


audio_formats = st.builds(
    AudioFormat,
    encoding=st.sampled_from(AudioEncoding),
    sample_rate=st.sampled_from([44_100, 48_000, 96_000]),
    channels=st.integers(1, 8),
    ptime_us=st.sampled_from([1000, 125]),
    channel_order=st.none() | value,
)


@st.composite
def sessions(draw: st.DrawFn) -> SdpSession:
    media = []
    n = draw(st.integers(0, 4))
    for i in range(n):
        kind = draw(st.sampled_from(MediaKind))
        v6 = draw(st.booleans())
        addr = str(draw(st.ip_addresses(v=6 if v6 else 4)))
        src = draw(st.none() | st.ip_addresses(v=6 if v6 else 4).map(str))
        video = draw(video_formats()) if kind is MediaKind.VIDEO else None
        audio = draw(audio_formats) if kind is MediaKind.AUDIO else None
        if audio is not None:
            rate = audio.sample_rate
        elif video is not None:
            rate = 90_000
        else:
            rate = draw(st.sampled_from([90_000, 48_000, 44_100, 96_000]))
        emap = draw(extmaps) if kind is MediaKind.METADATA else draw(st.none() | extmaps)
        tag = draw(st.none() | token)
        mid = None if tag is None else f"m{i}{tag}"  # distinct per media
        media.append(
            SdpMedia(
                kind=kind,
                port=draw(st.integers(0, 65535)),
                payload_type=draw(st.integers(0, 127)),
                address=addr,
                ttl=None if v6 else draw(st.none() | st.integers(0, 255)),
                source_filter=src,
                clock_rate=rate,
                video=video,
                audio=audio,
                extmap=emap,
                refclk=draw(refclks),
                mediaclk_offset=draw(st.none() | st.integers(0, 0xFFFFFFFF)),
                mid=mid,
                describes=draw(st.none() | token) if kind is MediaKind.METADATA else None,
            )
        )
    name = draw(
        st.text(st.characters(min_codepoint=0x20, blacklist_characters="\x7f"), max_size=30)
    )
    return SdpSession(
        origin_address=str(draw(st.ip_addresses())),
        session_name=name.strip(),
        session_id=draw(st.integers(0, (1 << 64) - 1)),
        media=tuple(media),
    )


@given(sessions())
def test_roundtrip(session: SdpSession) -> None:
    text = write_sdp(session)
    assert parse_sdp(text) == session
    assert parse_sdp(text.replace("\r\n", "\n")) == session


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"port": 70000}, "sdp.port"),
        ({"payload_type": 128}, "sdp.payload_type"),
        ({"address": "not-an-ip"}, "sdp.address"),
        ({"ttl": 300}, "sdp.ttl"),
        ({"address": "ff3e::1", "ttl": 1}, "sdp.ttl"),
        ({"source_filter": "::1"}, "sdp.source_filter"),
        ({"clock_rate": 0}, "sdp.clock_rate"),
        ({"mediaclk_offset": -1}, "sdp.mediaclk_offset"),
        ({"mid": "a b"}, "sdp.mid"),
        ({"extmap": None}, "sdp.extmap"),
        ({"extmap": ExtMap({})}, "sdp.extmap"),
        ({"kind": MediaKind.VIDEO}, "sdp.video"),
        ({"audio": AudioFormat()}, "sdp.audio"),
    ],
)
def test_media_config_errors(kw: dict[str, object], key: str) -> None:
    base: dict[str, object] = {
        "kind": MediaKind.METADATA,
        "port": 5000,
        "payload_type": 104,
        "address": "239.1.1.1",
        "clock_rate": 90_000,
        "extmap": ExtMap.default(),
    }
    base.update(kw)
    with pytest.raises(ConfigError) as exc:
        SdpMedia(**base)  # type: ignore[arg-type]
    assert exc.value.key == key


def test_more_config_errors() -> None:
    with pytest.raises(ConfigError) as exc:
        SdpMedia(
            kind=MediaKind.AUDIO,
            port=1,
            payload_type=97,
            address="1.2.3.4",
            clock_rate=44_100,
            audio=AudioFormat(),
        )
    assert exc.value.key == "sdp.clock_rate"
    with pytest.raises(ConfigError) as exc:
        SdpMedia(
            kind=MediaKind.AUDIO,
            port=1,
            payload_type=97,
            address="1.2.3.4",
            clock_rate=48_000,
            audio=AudioFormat(channel_order="a b"),
        )
    assert exc.value.key == "audio.channel_order"
    with pytest.raises(ConfigError) as exc:
        SdpSession(origin_address="1.2.3.4", session_name=" x", session_id=1)
    assert exc.value.key == "sdp.session_name"
    m = RTSTREAM_SESSION.media[0]
    with pytest.raises(ConfigError) as exc:
        SdpSession(origin_address="1.2.3.4", session_name="x", session_id=1, media=(m, m))
    assert exc.value.key == "sdp.mid"


def test_address_is_canonical() -> None:
    m = SdpMedia(
        kind=MediaKind.METADATA,
        port=1,
        payload_type=104,
        address="FF3E:0::1",
        source_filter="2001:DB8::0:1",
        clock_rate=90_000,
        extmap=ExtMap.default(),
    )
    assert (m.address, m.source_filter) == ("ff3e::1", "2001:db8::1")
