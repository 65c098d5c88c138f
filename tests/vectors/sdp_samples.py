"""SDP texts for the parser and writer tests, each beside the SdpSession it stands for.

``RTSTREAM_SDP`` is exactly what :func:`write_sdp` must produce for ``RTSTREAM_SESSION``
(video + its metadata, audio + its metadata, multicast with SSM source filters).
The third-party samples are what FFmpeg 5.1 wrote on this machine, a GStreamer-style
fmtp (no spaces, lower-case flags) and the constructed example of ``spec/ps322.md`` §4.4.
"""

from __future__ import annotations

from fractions import Fraction

from rtstream.proto.clock import RefClock
from rtstream.proto.formats import AudioEncoding, AudioFormat, Sampling, VideoFormat
from rtstream.proto.nmos_ext import ExtMap, NmosItem
from rtstream.proto.sdp import MediaKind, SdpMedia, SdpSession

PTP = RefClock(ptp_grandmaster="08-00-11-FF-FE-21-E1-B0", ptp_domain=127)
VIDEO_1080 = VideoFormat(
    sampling=Sampling.YCBCR_422,
    depth=10,
    width=1920,
    height=1080,
    exactframerate=Fraction(60000, 1001),
    colorimetry="BT601",
    tp="2110TPW",
)
AUDIO_STEREO = AudioFormat(
    encoding=AudioEncoding.L24, sample_rate=48_000, channels=2, channel_order="SMPTE2110.(ST)"
)

RTSTREAM_SESSION = SdpSession(
    origin_address="192.0.2.10",
    session_name="DICOM-RTV endoscope 1",
    session_id=1234,
    media=(
        SdpMedia(
            kind=MediaKind.VIDEO,
            port=5004,
            payload_type=96,
            address="239.10.1.1",
            ttl=1,
            source_filter="192.0.2.10",
            clock_rate=90_000,
            video=VIDEO_1080,
            refclk=PTP,
            mid="VID",
        ),
        SdpMedia(
            kind=MediaKind.METADATA,
            port=5006,
            payload_type=104,
            address="239.10.1.2",
            ttl=1,
            source_filter="192.0.2.10",
            clock_rate=90_000,
            extmap=ExtMap.default(),
            refclk=PTP,
            mid="VIDMETA",
            describes="VID",
        ),
        SdpMedia(
            kind=MediaKind.AUDIO,
            port=5008,
            payload_type=97,
            address="239.10.1.3",
            ttl=1,
            source_filter="192.0.2.10",
            clock_rate=48_000,
            audio=AUDIO_STEREO,
            refclk=PTP,
            mid="AUD",
        ),
        SdpMedia(
            kind=MediaKind.METADATA,
            port=5010,
            payload_type=104,
            address="239.10.1.4",
            ttl=1,
            source_filter="192.0.2.10",
            clock_rate=48_000,
            extmap=ExtMap.default(),
            refclk=PTP,
            mid="AUDMETA",
            describes="AUD",
        ),
    ),
)

_EXTMAPS = (
    "a=extmap:1 urn:x-nmos:rtp-hdrext:sync-timestamp\r\n"
    "a=extmap:2 urn:x-nmos:rtp-hdrext:origin-timestamp\r\n"
    "a=extmap:3 urn:x-nmos:rtp-hdrext:flow-id\r\n"
    "a=extmap:4 urn:x-nmos:rtp-hdrext:source-id\r\n"
    "a=extmap:5 urn:x-nmos:rtp-hdrext:grain-flags\r\n"
    "a=extmap:6 urn:x-nmos:rtp-hdrext:grain-duration\r\n"
)
_CLOCK = "a=ts-refclk:ptp=IEEE1588-2008:08-00-11-FF-FE-21-E1-B0:127\r\na=mediaclk:direct=0\r\n"

RTSTREAM_SDP = (
    "v=0\r\n"
    "o=- 1234 1234 IN IP4 192.0.2.10\r\n"
    "s=DICOM-RTV endoscope 1\r\n"
    "t=0 0\r\n"
    "m=video 5004 RTP/AVP 96\r\n"
    "c=IN IP4 239.10.1.1/1\r\n"
    "a=source-filter: incl IN IP4 239.10.1.1 192.0.2.10\r\n"
    "a=rtpmap:96 raw/90000\r\n"
    "a=fmtp:96 sampling=YCbCr-4:2:2; width=1920; height=1080; exactframerate=60000/1001; "
    "depth=10; TCS=SDR; colorimetry=BT601; PM=2110GPM; SSN=ST2110-20:2017; TP=2110TPW; "
    "RANGE=NARROW; PAR=1:1\r\n" + _CLOCK + "a=mid:VID\r\n"
    "m=application 5006 RTP/AVP 104\r\n"
    "c=IN IP4 239.10.1.2/1\r\n"
    "a=source-filter: incl IN IP4 239.10.1.2 192.0.2.10\r\n"
    "a=rtpmap:104 dicom/90000\r\n" + _CLOCK + _EXTMAPS + "a=mid:VIDMETA\r\n"
    "a=x-rtstream-describes:VID\r\n"
    "m=audio 5008 RTP/AVP 97\r\n"
    "c=IN IP4 239.10.1.3/1\r\n"
    "a=source-filter: incl IN IP4 239.10.1.3 192.0.2.10\r\n"
    "a=rtpmap:97 L24/48000/2\r\n"
    "a=fmtp:97 channel-order=SMPTE2110.(ST)\r\n"
    "a=ptime:1\r\n" + _CLOCK + "a=mid:AUD\r\n"
    "m=application 5010 RTP/AVP 104\r\n"
    "c=IN IP4 239.10.1.4/1\r\n"
    "a=source-filter: incl IN IP4 239.10.1.4 192.0.2.10\r\n"
    "a=rtpmap:104 dicom/48000\r\n" + _CLOCK + _EXTMAPS + "a=mid:AUDMETA\r\n"
    "a=x-rtstream-describes:AUD\r\n"
)

# spec/ps322.md §4.4 (constructed example; only the two dicom lines are DICOM's)
SPEC_EXAMPLE_SDP = """v=0
o=- 1 1 IN IP4 192.0.2.10
s=DICOM-RTV endoscope 1
t=0 0
m=video 5004 RTP/AVP 96
c=IN IP4 239.10.1.1/64
a=source-filter: incl IN IP4 239.10.1.1 192.0.2.10
a=rtpmap:96 raw/90000
a=fmtp:96 sampling=YCbCr-4:2:2; width=1920; height=1080; exactframerate=60000/1001; depth=10; TCS=SDR; colorimetry=BT601; PM=2110GPM; SSN=ST2110-20:2017; TP=2110TPN
a=ts-refclk:ptp=IEEE1588-2008:08-00-11-FF-FE-21-E1-B0:127
a=mediaclk:direct=0
a=mid:VID
m=application 5006 RTP/AVP 104
c=IN IP4 239.10.1.2/64
a=source-filter: incl IN IP4 239.10.1.2 192.0.2.10
a=rtpmap:104 dicom/90000
a=ts-refclk:ptp=IEEE1588-2008:08-00-11-FF-FE-21-E1-B0:127
a=mediaclk:direct=0
a=extmap:1 urn:x-nmos:rtp-hdrext:sync-timestamp
a=extmap:2 urn:x-nmos:rtp-hdrext:origin-timestamp
a=extmap:3 urn:x-nmos:rtp-hdrext:flow-id
a=extmap:4 urn:x-nmos:rtp-hdrext:source-id
a=extmap:5 urn:x-nmos:rtp-hdrext:grain-flags
a=mid:META
"""

# FFmpeg 5.1: -f lavfi -i testsrc=size=64x48 -c:v rawvideo -pix_fmt uyvy422 -f rtp -sdp_file
FFMPEG_VIDEO_SDP = """v=0
o=- 0 0 IN IP4 127.0.0.1
s=No Name
c=IN IP4 127.0.0.1
t=0 0
a=tool:libavformat LIBAVFORMAT_VERSION
m=video 40000 RTP/AVP 96
b=AS:1228
a=rtpmap:96 raw/90000
a=fmtp:96 sampling=YCbCr-4:2:2; width=64; height=48; depth=8
"""

# FFmpeg 5.1: -c:a pcm_s24be -ac 2 -ar 48000
FFMPEG_AUDIO_SDP = """v=0
o=- 0 0 IN IP4 127.0.0.1
s=No Name
c=IN IP4 127.0.0.1
t=0 0
a=tool:libavformat LIBAVFORMAT_VERSION
m=audio 40002 RTP/AVP 97
b=AS:2304
a=rtpmap:97 L24/48000/2
"""

# FFmpeg 5.1: -c:a pcm_s16be -ac 2 -ar 44100 -> static payload type 10, no rtpmap
FFMPEG_STATIC_L16_SDP = """v=0
o=- 0 0 IN IP4 127.0.0.1
s=No Name
c=IN IP4 127.0.0.1
t=0 0
a=tool:libavformat LIBAVFORMAT_VERSION
m=audio 40002 RTP/AVP 10
b=AS:1411
"""

# GStreamer-style caps turned into fmtp: no spaces, lower-case keys, a flag with a value,
# session-level clock attributes, an unknown extmap URN and a second, non-PTP refclk.
GSTREAMER_STYLE_SDP = (
    "v=0\n"
    "o=- 1188340656180883 1 IN IP4 127.0.0.1\n"
    "s=Session streamed with GStreamer\n"
    "i=rtpvrawpay\n"
    "t=0 0\n"
    "a=tool:GStreamer\n"
    "a=type:broadcast\n"
    "a=ts-refclk:localmac=02-00-00-00-00-01\n"
    "a=mediaclk:direct=12345\n"
    "m=video 5000 RTP/AVP 96\n"
    "c=IN IP4 127.0.0.1\n"
    "a=rtpmap:96 RAW/90000\n"
    "a=fmtp:96 sampling=YCbCr-4:2:2;width=320;height=240;depth=10;colorimetry=BT709-2;"
    "exactframerate=50;interlace=1;tp=2110TPN;pm=2110GPM;ssn=ST2110-20:2017\n"
    "a=extmap:9 urn:ietf:params:rtp-hdrext:smpte-tc 3600@90000/25\n"
    "a=extmap:3/sendonly urn:x-nmos:rtp-hdrext:flow-id\n"
)

# Bad SDPs: (name, text, line number the error must name or None for a missing line,
# text that must appear in the field).
BAD_SDPS: list[tuple[str, str, str]] = [
    ("no v=", "o=- 1 1 IN IP4 1.2.3.4\ns=x\n", "SDP v="),
    ("no o=", "v=0\ns=x\n", "SDP o="),
    ("no s=", "v=0\no=- 1 1 IN IP4 1.2.3.4\n", "SDP s="),
    ("version 1", "v=1\n", "SDP line 1"),
    ("not type=value", "v=0\nhello\n", "SDP line 2"),
    ("bad o=", "v=0\no=- x 1 IN IP4 1.2.3.4\n", "SDP line 2"),
    (
        "bad c= address",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 239.1.1.300/1\n",
        "SDP line 4",
    ),
    (
        "bad ttl",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 239.1.1.1/256\n",
        "SDP line 4",
    ),
    (
        "no c= at all",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nt=0 0\nm=audio 5000 RTP/AVP 97\na=rtpmap:97 L24/48000/2\n",
        "SDP line 5",
    ),
    (
        "h264 video",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 1.2.3.4\nm=video 5000 RTP/AVP 96\n"
        "a=rtpmap:96 H264/90000\n",
        "SDP line 5",
    ),
    (
        "width missing",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 1.2.3.4\nm=video 5000 RTP/AVP 96\n"
        "a=rtpmap:96 raw/90000\na=fmtp:96 sampling=RGB; height=10\n",
        "SDP line 7",
    ),
    (
        "odd 4:2:2 width",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 1.2.3.4\nm=video 5000 RTP/AVP 96\n"
        "a=rtpmap:96 raw/90000\na=fmtp:96 sampling=YCbCr-4:2:2; width=11; height=10\n",
        "SDP line 7",
    ),
    (
        "bad sampling",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 1.2.3.4\nm=video 5000 RTP/AVP 96\n"
        "a=rtpmap:96 raw/90000\na=fmtp:96 sampling=XYZ; width=16; height=10\n",
        "SDP line 7",
    ),
    (
        "bad exactframerate",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 1.2.3.4\nm=video 5000 RTP/AVP 96\n"
        "a=rtpmap:96 raw/90000\na=fmtp:96 sampling=RGB; width=16; height=10; exactframerate=30/0\n",
        "SDP line 7",
    ),
    (
        "9 audio channels",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 1.2.3.4\nm=audio 5000 RTP/AVP 97\n"
        "a=rtpmap:97 L24/48000/9\n",
        "SDP line 6",
    ),
    (
        "ptime 2",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 1.2.3.4\nm=audio 5000 RTP/AVP 97\n"
        "a=rtpmap:97 L24/48000/2\na=ptime:2\n",
        "SDP line 7",
    ),
    (
        "opus audio",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 1.2.3.4\nm=audio 5000 RTP/AVP 111\n"
        "a=rtpmap:111 opus/48000/2\n",
        "SDP line 6",
    ),
    (
        "metadata without extmap",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 1.2.3.4\nm=application 5000 RTP/AVP 104\n"
        "a=rtpmap:104 dicom/90000\n",
        "SDP line 5",
    ),
    (
        "extmap id 15",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 1.2.3.4\nm=application 5000 RTP/AVP 104\n"
        "a=rtpmap:104 dicom/90000\na=extmap:15 urn:x-nmos:rtp-hdrext:flow-id\n",
        "SDP line 7",
    ),
    (
        "bad ptp domain",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 1.2.3.4\nm=audio 5000 RTP/AVP 97\n"
        "a=rtpmap:97 L24/48000/2\na=ts-refclk:ptp=IEEE1588-2008:08-00-11-FF-FE-21-E1-B0:300\n",
        "SDP line 7",
    ),
    (
        "bad source-filter",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 239.1.1.1/1\n"
        "a=source-filter: incl IN IP4 239.1.1.1 not-an-address\n",
        "SDP line 5",
    ),
    (
        "bad mid",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\na=mid:\n",
        "SDP line 4",
    ),
    (
        "not rtp",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 1.2.3.4\nm=audio 5000 TCP 97\n",
        "SDP line 5",
    ),
]

__all__ = [
    "BAD_SDPS",
    "FFMPEG_AUDIO_SDP",
    "FFMPEG_STATIC_L16_SDP",
    "FFMPEG_VIDEO_SDP",
    "GSTREAMER_STYLE_SDP",
    "NmosItem",
    "RTSTREAM_SDP",
    "RTSTREAM_SESSION",
    "SPEC_EXAMPLE_SDP",
]
