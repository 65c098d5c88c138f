"""ST 2022-7 in SDP: a=group:DUP legs (RFC 7104 §3 / RFC 5888), a=ssrc-group:DUP refused."""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtstream.errors import ConfigError, RemoteProtocolError
from rtstream.proto.formats import Sampling, VideoFormat
from rtstream.proto.nmos_ext import ExtMap
from rtstream.proto.sdp import MediaKind, SdpMedia, SdpSession, parse_sdp, write_sdp
from rtstream.receiver import ReceiverConfig
from rtstream.receiver.flows import build_flows
from rtstream.sysclock import SystemClock

FMT = VideoFormat(sampling=Sampling.YCBCR_422, depth=10, width=1920, height=1080,
                  exactframerate=Fraction(60000, 1001), tp="2110TPN")

# An ST 2110-10 style sender: two flows (video and its metadata), each on a red and a blue
# multicast network with source-specific filters; the blue video leg comes first in the
# m= order while the group names red first, and the second group's legs are listed
# "blue red": a receiver must follow the groups, not the m= order.
THIRD_PARTY = """v=0
o=- 1443716955 1443716955 IN IP4 192.0.2.10
s=endoscope tower 1 (2022-7)
t=0 0
a=group:DUP VID-R VID-B
a=group:DUP META-B META-R
m=video 5004 RTP/AVP 96
c=IN IP4 239.100.2.1/64
a=source-filter: incl IN IP4 239.100.2.1 198.51.100.10
a=rtpmap:96 raw/90000
a=fmtp:96 sampling=YCbCr-4:2:2; width=1920; height=1080; exactframerate=60000/1001; depth=10; TCS=SDR; colorimetry=BT709; PM=2110GPM; SSN=ST2110-20:2017; TP=2110TPN
a=mediaclk:direct=0
a=mid:VID-B
m=video 5004 RTP/AVP 96
c=IN IP4 239.100.1.1/64
a=source-filter: incl IN IP4 239.100.1.1 192.0.2.10
a=rtpmap:96 raw/90000
a=fmtp:96 sampling=YCbCr-4:2:2; width=1920; height=1080; exactframerate=60000/1001; depth=10; TCS=SDR; colorimetry=BT709; PM=2110GPM; SSN=ST2110-20:2017; TP=2110TPN
a=mediaclk:direct=0
a=mid:VID-R
m=application 5006 RTP/AVP 104
c=IN IP4 239.100.1.2/64
a=source-filter: incl IN IP4 239.100.1.2 192.0.2.10
a=rtpmap:104 dicom/90000
a=extmap:1 urn:x-nmos:rtp-hdrext:sync-timestamp
a=extmap:2 urn:x-nmos:rtp-hdrext:origin-timestamp
a=extmap:3 urn:x-nmos:rtp-hdrext:flow-id
a=extmap:4 urn:x-nmos:rtp-hdrext:source-id
a=mid:META-R
a=x-rtstream-describes:VID-R
m=application 5006 RTP/AVP 104
c=IN IP4 239.100.2.2/64
a=source-filter: incl IN IP4 239.100.2.2 198.51.100.10
a=rtpmap:104 dicom/90000
a=extmap:1 urn:x-nmos:rtp-hdrext:sync-timestamp
a=extmap:2 urn:x-nmos:rtp-hdrext:origin-timestamp
a=extmap:3 urn:x-nmos:rtp-hdrext:flow-id
a=extmap:4 urn:x-nmos:rtp-hdrext:source-id
a=mid:META-B
a=x-rtstream-describes:VID-B
"""


def leg(mid: str, port: int, address: str = "127.0.0.1", *, source: str | None = None,
        kind: MediaKind = MediaKind.VIDEO, describes: str | None = None) -> SdpMedia:
    if kind is MediaKind.VIDEO:
        return SdpMedia(kind=kind, port=port, payload_type=96, address=address, clock_rate=90000,
                        video=FMT, mid=mid, source_filter=source)
    return SdpMedia(kind=kind, port=port, payload_type=104, address=address, clock_rate=90000,
                    extmap=ExtMap.default(), mid=mid, describes=describes, source_filter=source)


def session(media: tuple[SdpMedia, ...], groups: tuple[tuple[str, ...], ...]) -> SdpSession:
    return SdpSession(origin_address="127.0.0.1", session_name="dup", session_id=3, media=media,
                      dup_groups=groups)


def test_write_and_parse_back() -> None:
    s = session((leg("VID", 5004), leg("VMETA", 5006, kind=MediaKind.METADATA, describes="VID"),
                 leg("VID2", 5104), leg("VMETA2", 5106, kind=MediaKind.METADATA,
                                        describes="VID2")),
                (("VID", "VID2"), ("VMETA", "VMETA2")))
    text = write_sdp(s)
    lines = text.split("\r\n")
    assert lines[4:6] == ["a=group:DUP VID VID2", "a=group:DUP VMETA VMETA2"]
    assert lines.index("a=group:DUP VID VID2") < lines.index("m=video 5004 RTP/AVP 96")
    back = parse_sdp(text)
    assert back == s
    vid, vmeta, vid2, vmeta2 = back.media
    assert back.legs(vid2) == (vid, vid2) and back.legs(vmeta) == (vmeta, vmeta2)
    assert not back.is_secondary_leg(vid) and back.is_secondary_leg(vid2)
    assert back.legs(leg("other", 1)) == (leg("other", 1),)


def test_third_party_two_groups_either_order() -> None:
    s = parse_sdp(THIRD_PARTY)
    assert s.dup_groups == (("VID-R", "VID-B"), ("META-B", "META-R"))
    vid_b, vid_r, meta_r, meta_b = s.media
    assert s.legs(vid_b) == (vid_r, vid_b)  # group order, not m= order
    assert s.is_secondary_leg(vid_b) and not s.is_secondary_leg(vid_r)
    assert s.legs(meta_r) == (meta_b, meta_r)
    assert (vid_r.address, vid_r.source_filter) == ("239.100.1.1", "192.0.2.10")
    assert (vid_b.address, vid_b.source_filter) == ("239.100.2.1", "198.51.100.10")
    assert vid_r.video == vid_b.video == dataclasses.replace(FMT, colorimetry="BT709")


def test_receiver_reads_a_group_as_one_flow() -> None:
    """build_flows: one reader per flow, named after the group's first leg, holding both
    legs; the metadata flow (whose first leg describes the *secondary* video leg VID-B)
    is joined to the video flow."""
    s = parse_sdp(THIRD_PARTY)
    cfg = ReceiverConfig(sdp="x.sdp", dup_skew_ms=4)
    sink = object()
    flows = build_flows(s, cfg, SystemClock(), sink, sink, sink)  # type: ignore[arg-type]
    (video,) = flows.video
    (meta,) = flows.metadata
    assert video.name == "VID-R" and [m.mid for m in video.legs_media] == ["VID-R", "VID-B"]
    assert meta.name == "META-B" and [m.mid for m in meta.legs_media] == ["META-B", "META-R"]
    assert meta.target is video and video.meta is meta
    assert video.merge is not None and video.merge.skew_ns == 4_000_000
    assert meta.merge is not None


def test_ssrc_group_dup_is_refused_clearly() -> None:
    text = THIRD_PARTY.replace("a=mid:VID-B\n", "a=mid:VID-B\na=ssrc-group:DUP 1111 2222\n")
    with pytest.raises(RemoteProtocolError) as e:
        parse_sdp(text)
    assert re.fullmatch(r"SDP line \d+ 'a=ssrc-group:DUP 1111 2222'", e.value.field)
    assert "not supported" in str(e.value) and "a=group:DUP <mid> <mid>" in str(e.value)


def test_other_groups_are_ignored() -> None:
    text = THIRD_PARTY.replace("a=group:DUP META-B META-R\n",
                               "a=group:DUP META-B META-R\na=group:LS VID-R META-R\n")
    text = text.replace("a=mid:VID-R\n", "a=mid:VID-R\na=ssrc-group:FID 1 2\n")
    assert parse_sdp(text).dup_groups == (("VID-R", "VID-B"), ("META-B", "META-R"))


@pytest.mark.parametrize(("change", "message"), [
    (("a=group:DUP VID-R VID-B", "a=group:DUP VID-R VID-X"), "'VID-X' is none"),
    (("a=group:DUP VID-R VID-B", "a=group:DUP VID-R"), "two or more mid tokens"),
    (("a=group:DUP VID-R VID-B\na=group:DUP META-B META-R", "a=group:DUP VID-R META-R"),
     "differ"),
    (("a=group:DUP META-B META-R", "a=group:DUP VID-B META-R"), "one group only"),
    (("a=mid:VID-R\n", "a=mid:VID-R\na=group:DUP VID-R VID-B\n"), "session level"),
    (("c=IN IP4 239.100.2.1/64\na=source-filter: incl IN IP4 239.100.2.1 198.51.100.10",
      "c=IN IP4 239.100.1.1/64\na=source-filter: incl IN IP4 239.100.1.1 192.0.2.10"),
     "share destination"),
])
def test_bad_groups_name_their_line(change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in THIRD_PARTY
    with pytest.raises(RemoteProtocolError) as e:
        parse_sdp(THIRD_PARTY.replace(old, new, 1))
    assert message in str(e.value)
    assert e.value.field.startswith("SDP line ")


def test_session_checks_its_groups() -> None:
    with pytest.raises(ConfigError, match="share destination 127.0.0.1:5004"):
        session((leg("a", 5004), leg("b", 5004)), (("a", "b"),))
    session((leg("a", 5004), leg("b", 5004, source="127.0.0.2")), (("a", "b"),))  # two sources
    with pytest.raises(ConfigError, match="two or more"):
        session((leg("a", 5004),), (("a",),))


def test_every_truncated_prefix_parses_or_raises_remote_error() -> None:
    for i in range(len(THIRD_PARTY) + 1):
        try:
            parse_sdp(THIRD_PARTY[:i])
        except RemoteProtocolError:
            pass
    for tail in ("a=group:DUP\n", "a=group:\n", "a=ssrc-group:DUP\n", "a=group:DUP a b\n"):
        with pytest.raises(RemoteProtocolError):
            parse_sdp(THIRD_PARTY + tail)


@given(
    flows=st.lists(st.tuples(st.sampled_from([MediaKind.VIDEO, MediaKind.METADATA]),
                             st.integers(1, 3), st.booleans()), min_size=1, max_size=4),
    swap=st.booleans(),
)
def test_roundtrip_of_groups(flows: list[tuple[MediaKind, int, bool]], swap: bool) -> None:
    """Any set of flows, each with one to three legs on their own ports (unicast or SSM
    multicast), groups listed in either order: write_sdp then parse_sdp gives it back."""
    media: list[SdpMedia] = []
    groups: list[tuple[str, ...]] = []
    port = 5000
    for i, (kind, legs, multicast) in enumerate(flows):
        mids = []
        for j in range(legs):
            mid = f"F{i}L{j}"
            address = f"239.1.{i}.{j + 1}" if multicast else "127.0.0.1"
            media.append(leg(mid, port, address, kind=kind,
                             source=f"192.0.2.{j + 1}" if multicast else None))
            mids.append(mid)
            port += 2
        if legs > 1:
            groups.append(tuple(reversed(mids)) if swap else tuple(mids))
    s = session(tuple(media), tuple(groups))
    back = parse_sdp(write_sdp(s))
    assert back == s
    for m in back.media:
        legs_of = back.legs(m)
        assert m in legs_of and len(legs_of) == next(
            (len(g) for g in groups if m.mid in g), 1)
