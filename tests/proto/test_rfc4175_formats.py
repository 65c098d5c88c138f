"""Packetizer -> depacketizer byte-exact for all 16 formats, progressive and interlaced."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtstream.errors import ConfigError, RemoteProtocolError
from rtstream.proto.formats import SUPPORTED_VIDEO, Sampling, VideoFormat
from rtstream.proto.rfc4175 import PayloadHeader, VideoDepacketizer, VideoPacketizer
from rtstream.proto.rtp import parse_rtp
from tests.proto.test_rfc4175 import datagrams, random_frame, to_batch

FORMATS = sorted(SUPPORTED_VIDEO, key=lambda sd: (sd[0].value, sd[1]))
INTERLACEABLE = [sd for sd in FORMATS if sd[0] is not Sampling.YCBCR_420]


def fmt_of(sampling: Sampling, depth: int, w: int = 1920, h: int = 1080,
           interlaced: bool = False) -> VideoFormat:
    return VideoFormat(sampling=sampling, depth=depth, width=w, height=h,
                       exactframerate=Fraction(30000, 1001), interlaced=interlaced)


@pytest.mark.parametrize(("sampling", "depth"), FORMATS)
def test_1080p_every_format_round_trips_byte_exact(sampling: Sampling, depth: int) -> None:
    fmt = fmt_of(sampling, depth)
    pk = VideoPacketizer(fmt, ssrc=0x2110, sequence=0xFFFFFF00)  # wraps mid-frame
    frames = [random_frame(fmt, k) for k in range(2)]
    dp = VideoDepacketizer(fmt, payload_type=96)
    events = []
    for i, f in enumerate(frames):
        b = pk.packetize(f, 1501 * i)
        assert b.uniform and b.buf.shape[1] <= 1460  # equal datagrams for GSO
        events += dp.feed(b.buf.copy(), b.sizes, now=0)
    assert len(events) == 2
    for ev, f in zip(events, frames, strict=True):
        assert ev.complete and np.array_equal(ev.data, f)
    assert dp.stats.malformed == 0 and dp.stats.lost == 0


@pytest.mark.parametrize(("sampling", "depth"), INTERLACEABLE)
def test_interlaced_fields_marker_and_timestamps(sampling: Sampling, depth: int) -> None:
    fmt = fmt_of(sampling, depth, 64 if depth != 10 else 64, 8, interlaced=True)
    pk = VideoPacketizer(fmt, ssrc=9, max_payload=200)
    assert pk.field_offset == round(Fraction(90000 * 1001, 30000) / 2)  # 1502 ticks
    frame = random_frame(fmt, 3)
    b = pk.packetize(frame, 10_000)
    pkts = [parse_rtp(d) for d in datagrams(b)]
    half = len(pkts) // 2
    # field 1 = F 0, the even frame lines; field 2 = F 1, the odd ones; rows per field
    for k, p in enumerate(pkts):
        hdr = PayloadHeader.parse(p.payload)
        (srd,) = hdr.srds
        assert srd.field == (k >= half)
        assert 0 <= srd.row < fmt.height // 2
        line = 2 * srd.row + int(srd.field)
        start = line * fmt.row_bytes + srd.offset // fmt.pgroup_pixels_per_line * fmt.pgroup_bytes
        assert p.payload[hdr.size:] == frame[start : start + srd.length].tobytes()
        assert p.timestamp == (10_000 if k < half else 10_000 + pk.field_offset)
    assert [k for k, p in enumerate(pkts) if p.marker] == [half - 1, len(pkts) - 1]
    dp = VideoDepacketizer(fmt)
    assert dp.feed(b.buf[:half].copy(), b.sizes[:half], now=0) == []  # first field only
    (ev,) = dp.feed(b.buf[half:].copy(), b.sizes[half:], now=0)
    assert ev.complete and np.array_equal(ev.data, frame)  # woven again
    assert ev.rtp_timestamp == 10_000  # the frame's (first field's) timestamp, as its grain


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(INTERLACEABLE), st.integers(1, 3), st.sampled_from([80, 300, 1460]),
       st.data())
def test_interlaced_streams_survive_reordering_within_a_field(
    sd: tuple[Sampling, int], frames_n: int, max_payload: int, data: st.DataObject
) -> None:
    sampling, depth = sd
    fmt = fmt_of(sampling, depth, 16 if depth != 10 else 16, 6, interlaced=True)
    pk = VideoPacketizer(fmt, ssrc=5, max_payload=max_payload, sequence=65530)
    frames = [random_frame(fmt, k) for k in range(frames_n)]
    wire: list[bytes] = []
    for i, f in enumerate(frames):
        dgs = datagrams(pk.packetize(f, 3003 * i))
        half = len(dgs) // 2
        first, second = dgs[:half], dgs[half:]
        # packets of one field may arrive in any order before its marker
        wire += data.draw(st.permutations(first[:-1])) + first[-1:]
        wire += data.draw(st.permutations(second[:-1])) + second[-1:]
    dp = VideoDepacketizer(fmt)
    events = []
    for k in range(0, len(wire), 7):
        b, n = to_batch(wire[k : k + 7])
        events += dp.feed(b, n, now=0)
    events += dp.flush()
    assert [bool(e.complete and np.array_equal(e.data, f))
            for e, f in zip(events, frames, strict=True)] == [True] * frames_n


def test_interlaced_420_is_refused_clearly() -> None:
    fmt = fmt_of(Sampling.YCBCR_420, 8, 64, 8, interlaced=True)
    with pytest.raises(ConfigError, match="video.interlaced"):
        VideoPacketizer(fmt, ssrc=1)
    with pytest.raises(ConfigError, match="video.interlaced"):
        VideoDepacketizer(fmt)


@pytest.mark.parametrize(("sampling", "depth"), FORMATS)
def test_sdp_fmtp_round_trips_every_format(sampling: Sampling, depth: int) -> None:
    from rtstream.proto.sdp import MediaKind, SdpMedia, SdpSession, parse_sdp, write_sdp

    variants = [dict(interlaced=False)]
    if sampling is not Sampling.YCBCR_420:
        variants += [dict(interlaced=True), dict(interlaced=True, segmented=True)]
    for kw in variants:
        fmt = VideoFormat(sampling=sampling, depth=depth, width=1920, height=1080,
                          exactframerate=Fraction(30000, 1001), **kw)  # type: ignore[arg-type]
        media = SdpMedia(kind=MediaKind.VIDEO, port=5004, payload_type=96, address="127.0.0.1",
                         clock_rate=90000, video=fmt)
        text = write_sdp(SdpSession(origin_address="127.0.0.1", session_name="f", session_id=1,
                                    media=(media,)))
        fmtp = next(line for line in text.splitlines() if line.startswith("a=fmtp:96"))
        assert f"sampling={sampling.value}" in fmtp and f"depth={depth}" in fmtp
        # ST 2110-20 flags: present only when set (PsF is signalled with both)
        assert ("; interlace" in fmtp) == fmt.interlaced
        assert ("; segmented" in fmtp) == fmt.segmented
        back = parse_sdp(text).video()[0].video
        assert back == fmt
        if fmt.interlaced:
            assert fmt.transfer_syntax_uid == "1.2.840.10008.1.2.7.2"  # PS3.5 §10.16
            pk = VideoPacketizer(fmt, ssrc=1)
            assert pk.packets_per_frame % 2 == 0


def test_both_fields_on_one_timestamp_as_ffmpeg_sends_them() -> None:
    fmt = fmt_of(Sampling.YCBCR_422, 10, 64, 8, interlaced=True)
    pk = VideoPacketizer(fmt, ssrc=3, max_payload=200, field_offset=0)
    frame = random_frame(fmt, 4)
    b = pk.packetize(frame, 7777)
    pkts = [parse_rtp(d) for d in datagrams(b)]
    assert {p.timestamp for p in pkts} == {7777}
    assert sum(p.marker for p in pkts) == 2  # still one marker per field
    (ev,) = VideoDepacketizer(fmt).feed(b.buf.copy(), b.sizes, now=0)
    assert ev.complete and ev.rtp_timestamp == 7777 and np.array_equal(ev.data, frame)
    with pytest.raises(ConfigError, match="field_offset"):
        VideoPacketizer(fmt, ssrc=3, field_offset=-1)


@pytest.mark.parametrize(("sampling", "depth"), INTERLACEABLE)
def test_bottom_field_first_sends_the_odd_lines_as_the_first_field(sampling: Sampling,
                                                                   depth: int) -> None:
    """RFC 4175 §4.3: F=0 is the first field. A bottom-field-first frame's first field in
    time is its odd lines: they go first, F=0, on the frame's timestamp, Row Numbers within
    the field; the even lines follow with F=1. A receiver weaving F=0 onto the even lines
    (ours, FFmpeg's) sees the line pairs swapped, which the SDP's field order undoes."""
    fmt = fmt_of(sampling, depth, 64, 8, interlaced=True)
    pk = VideoPacketizer(fmt, ssrc=9, max_payload=200, bottom_field_first=True)
    frame = random_frame(fmt, 5)
    b = pk.packetize(frame, 20_000)
    pkts = [parse_rtp(d) for d in datagrams(b)]
    half = len(pkts) // 2
    lines_seen = []
    for k, p in enumerate(pkts):
        hdr = PayloadHeader.parse(p.payload)
        (srd,) = hdr.srds
        assert srd.field == (k >= half)
        assert 0 <= srd.row < fmt.height // 2
        line = 2 * srd.row + (0 if srd.field else 1)  # F=0: odd lines, F=1: even lines
        lines_seen.append(line)
        start = line * fmt.row_bytes + srd.offset // fmt.pgroup_pixels_per_line * fmt.pgroup_bytes
        assert p.payload[hdr.size:] == frame[start : start + srd.length].tobytes()
        assert p.timestamp == (20_000 if k < half else 20_000 + pk.field_offset)
    assert lines_seen[0] == 1 and lines_seen[half] == 0
    assert [k for k, p in enumerate(pkts) if p.marker] == [half - 1, len(pkts) - 1]
    (ev,) = VideoDepacketizer(fmt).feed(b.buf.copy(), b.sizes, now=0)
    woven = ev.data.reshape(fmt.rows, fmt.row_bytes)
    src = frame.reshape(fmt.rows, fmt.row_bytes)
    assert ev.complete and ev.rtp_timestamp == 20_000
    assert np.array_equal(woven[0::2], src[1::2]) and np.array_equal(woven[1::2], src[0::2])
    with pytest.raises(ConfigError, match="bottom_field_first"):
        VideoPacketizer(fmt_of(sampling, depth, 64, 8), ssrc=9, bottom_field_first=True)


def test_sdp_field_order_attribute_round_trips() -> None:
    from rtstream.proto.sdp import MediaKind, SdpMedia, SdpSession, parse_sdp, write_sdp

    fmt = fmt_of(Sampling.YCBCR_422, 8, 64, 8, interlaced=True)

    def media(bff: bool, f: VideoFormat = fmt) -> SdpMedia:
        return SdpMedia(kind=MediaKind.VIDEO, port=5004, payload_type=96, address="127.0.0.1",
                        clock_rate=90000, video=f, mid="VID", bottom_field_first=bff)

    def text(m: SdpMedia) -> str:
        return write_sdp(SdpSession(origin_address="127.0.0.1", session_name="f", session_id=1,
                                    media=(m,)))

    bff = text(media(True))
    assert "a=x-rtstream-field-order:bff\r\n" in bff
    assert parse_sdp(bff).media[0].bottom_field_first
    top = text(media(False))
    assert "field-order" not in top and not parse_sdp(top).media[0].bottom_field_first
    assert not parse_sdp(bff.replace(":bff", ":tff")).media[0].bottom_field_first
    with pytest.raises(RemoteProtocolError, match="x-rtstream-field-order"):
        parse_sdp(bff.replace(":bff", ":sideways"))
    with pytest.raises(ConfigError, match="sdp.bottom_field_first"):
        media(True, fmt_of(Sampling.YCBCR_422, 8, 64, 8))
