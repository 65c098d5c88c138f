"""SDP (RFC 4566) for ST 2110-20 video, ST 2110-30 audio and PS3.22 metadata flows.

Theory of operation
-------------------
:func:`write_sdp` renders an :class:`SdpSession` as the SDP text a receiver needs;
:func:`parse_sdp` reads it back (``parse_sdp(write_sdp(s)) == s``) and also reads what
third parties write (GStreamer, FFmpeg, other ST 2110 devices), filling defaults for
what they leave out. Every error is a :class:`~rtstream.errors.RemoteProtocolError`
whose field names the SDP line (number and text).

One ``m=`` section per flow:

* video: ``m=video <port> RTP/AVP 96``, ``a=rtpmap:96 raw/90000`` and an ``a=fmtp`` with
  the ST 2110-20 parameters (``spec/ps322.md`` §4.2);
* audio: ``m=audio <port> RTP/AVP 97``, ``a=rtpmap:97 L24/48000/2``, ``a=fmtp:97
  channel-order=...`` and ``a=ptime:1`` or ``a=ptime:0.125`` (§4.3);
* metadata: ``m=application <port> RTP/AVP 104``, ``a=rtpmap:104 dicom/<rate>`` where the
  rate is the clock rate of the flow described (PS3.22 §6.2.1), and the NMOS ``a=extmap``
  lines of its mandatory header extension.

Every media gets its own ``c=`` line (``c=IN IP4 239.x.y.z/<ttl>`` for multicast),
optionally ``a=source-filter: incl IN IP4 <group> <source>`` (RFC 4570),
``a=ts-refclk`` (RFC 7273), ``a=mediaclk:direct=<offset>`` and ``a=mid`` (RFC 5888).

Linking a metadata flow to the flow it describes
------------------------------------------------
PS3.22 defines no SDP grouping (the link is by NMOS identifiers inside the streams).
rtstream's convention: each media carries ``a=mid:<token>`` and a metadata media adds
``a=x-rtstream-describes:<mid>``, naming the ``a=mid`` of the video or audio media it
describes. Receivers that do not know the attribute ignore it (RFC 4566 §5.13).

An interlaced video media whose first field in time is the bottom one (odd frame lines,
counting from 0) carries ``a=x-rtstream-field-order:bff``: RFC 4175 §4.3 puts the first
field in F=0, and ST 2110-20's SDP has no parameter that says which lines that field
holds, so a receiver that knows the attribute weaves F=0 onto the odd lines; one that
does not sees the two fields' lines swapped (docs/formats.md).

A Rendition Selection Document flow (PS3.22 SOP class 1.2.840.10008.10.4) describes no
single flow but a group: its metadata media carries the flag ``a=x-rtstream-rendition``
instead, so a receiver neither pairs it with a video or audio flow nor waits for its
grains to learn what it is; which flows it groups is in its document.

Seamless protection (SMPTE ST 2022-7)
-------------------------------------
A flow sent twice over two networks has one ``m=`` section per *leg*, each with its own
``a=mid`` and its own ``c=`` (and ``a=source-filter``), and a session-level
``a=group:DUP <mid> <mid>`` naming the legs (RFC 7104 §3 on RFC 5888 grouping, as
ST 2110-10 uses it; ``spec/ps322.md`` §6 quirks). Both legs carry identical RTP
packets (same SSRC, sequence numbers, timestamps and payload), so a receiver keeps the
first copy of each. The parser keeps the groups in :attr:`SdpSession.dup_groups` and
checks them: every mid names a media of this SDP, the legs of a group are of one kind
and format, a media is in at most one group, and two legs never share both
destination (address and port) and source filter -- they would be one path, not two.
RFC 7104 §4's other form, ``a=ssrc-group:DUP`` (both copies in one ``m=`` section,
told apart by SSRC), is recognised and refused with an error that says so.

Leniency when parsing
---------------------
* ``c=``, ``a=ts-refclk``, ``a=mediaclk`` and ``a=source-filter`` at session level apply
  to every media that does not have its own.
* Missing video ``fmtp`` parameters get defaults: depth 8, colorimetry ``BT601``,
  exactframerate from ``a=framerate`` or else 30, PM ``2110GPM``, SSN
  ``ST2110-20:2017``, TP ``2110TPW``, TCS ``SDR``, RANGE ``NARROW``, PAR ``1:1``.
  ``sampling``, ``width`` and ``height`` are required. Parameter names are matched
  without regard to case; ``;`` with or without a following space separates them.
* Audio without ``a=ptime`` is taken as 1 ms; static payload types 10 and 11
  (RFC 3551 L16/44100/2 and /1) need no ``a=rtpmap`` (FFmpeg omits it).
* Unknown attributes, ``b=``, ``i=``, ``k=`` and similar lines, extmaps with URNs other
  than the NMOS items, and ``a=ts-refclk`` forms other than ``ptp=`` and ``localmac=``
  are ignored.
* A media with a format rtstream cannot carry (``m=video`` with H.264, ``m=text`` ...)
  is an error naming its ``m=`` line.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import re
from dataclasses import dataclass, field
from fractions import Fraction

from rtstream.errors import ConfigError, RemoteProtocolError, RtstreamError
from rtstream.proto.clock import RefClock
from rtstream.proto.formats import (
    VIDEO_CLOCK_RATE,
    AudioEncoding,
    AudioFormat,
    Sampling,
    VideoFormat,
)
from rtstream.proto.nmos_ext import ExtMap, NmosItem, item_for_urn

log = logging.getLogger(__name__)

FIELD_ORDER_ATTRIBUTE = "x-rtstream-field-order"
"""rtstream's attribute of an interlaced video media sent bottom field first (``bff``)."""

RENDITION_ATTRIBUTE = "x-rtstream-rendition"
"""rtstream's flag on the metadata media of a rendition flow (see the module notes)."""

DESCRIBES_ATTRIBUTE = "x-rtstream-describes"
"""rtstream's attribute linking a metadata media to the ``a=mid`` of the flow it describes."""

METADATA_ENCODING = "dicom"
DEFAULT_FRAMERATE = Fraction(30)

_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")  # RFC 4566 token
_STATIC_AUDIO = {10: (AudioEncoding.L16, 44_100, 2), 11: (AudioEncoding.L16, 44_100, 1)}


class MediaKind(enum.Enum):
    """What an ``m=`` section carries."""

    VIDEO = "video"
    AUDIO = "audio"
    METADATA = "metadata"

    @property
    def sdp_media(self) -> str:
        """The ``m=`` media type: ``video``, ``audio`` or ``application``."""
        return "application" if self is MediaKind.METADATA else self.value


def _check_address(key: str, value: str) -> str:
    """The address in its canonical spelling (what the parser gives back)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigError(key, value, "an IPv4 or IPv6 address") from None


_FMTP_VALUE = re.compile(r"^[^\s;]+$")
_VIDEO_TEXT_PARAMS = ("colorimetry", "tcs", "range", "pm", "ssn", "tp", "par")


def _is_ipv6(address: str) -> bool:
    return ":" in address


@dataclass(frozen=True, kw_only=True)
class SdpMedia:
    """One ``m=`` section: a video, audio or PS3.22 metadata flow.

    Parameters
    ----------
    kind : MediaKind
    port : int
        Destination UDP port of the RTP flow.
    payload_type : int
        RTP payload type (96 video, 97 audio and 104 metadata by rtstream's convention).
    address : str
        Connection address (``c=``): unicast destination or multicast group.
    ttl : int or None
        Multicast TTL written on the ``c=`` line (IPv4 only), None for none.
    source_filter : str or None
        Source address of ``a=source-filter: incl`` (RFC 4570, SSM), None for none.
    clock_rate : int
        RTP clock rate: 90000 for video, the sample rate for audio, the described flow's
        rate for metadata (PS3.22 §6.2.1).
    video : VideoFormat or None
        Required for VIDEO, absent otherwise.
    audio : AudioFormat or None
        Required for AUDIO (its ``sample_rate`` equals ``clock_rate``), absent otherwise.
    extmap : ExtMap or None
        NMOS ``a=extmap`` lines; required for METADATA, optional for the others.
    refclk : RefClock or None
        ``a=ts-refclk`` (RFC 7273).
    mediaclk_offset : int or None
        ``a=mediaclk:direct=<n>`` (RFC 7273 §5); None when absent.
    mid : str or None
        ``a=mid`` (RFC 5888) identification tag.
    describes : str or None
        For METADATA: the ``mid`` of the flow it describes, written as
        ``a=x-rtstream-describes:<mid>`` (rtstream's convention, see the module notes).
    rendition : bool
        For METADATA: the flow carries a Rendition Selection Document, written as
        ``a=x-rtstream-rendition``.
    bottom_field_first : bool
        For interlaced VIDEO: the first field (F=0) holds the odd frame lines, written as
        ``a=x-rtstream-field-order:bff`` (see the module notes).
    """

    kind: MediaKind
    port: int
    payload_type: int
    address: str
    ttl: int | None = None
    source_filter: str | None = None
    clock_rate: int
    video: VideoFormat | None = None
    audio: AudioFormat | None = None
    extmap: ExtMap | None = None
    refclk: RefClock | None = None
    mediaclk_offset: int | None = 0
    mid: str | None = None
    describes: str | None = None
    rendition: bool = False
    bottom_field_first: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.kind, MediaKind):
            raise ConfigError("sdp.kind", self.kind, "a MediaKind")
        if not 0 <= self.port <= 65535:
            raise ConfigError("sdp.port", self.port, "0..65535")
        if not 0 <= self.payload_type <= 127:
            raise ConfigError("sdp.payload_type", self.payload_type, "0..127")
        object.__setattr__(self, "address", _check_address("sdp.address", self.address))
        if self.ttl is not None:
            if not 0 <= self.ttl <= 255:
                raise ConfigError("sdp.ttl", self.ttl, "0..255")
            if _is_ipv6(self.address):
                raise ConfigError("sdp.ttl", self.ttl, "None for an IPv6 address (RFC 4566)")
        if self.source_filter is not None:
            canonical = _check_address("sdp.source_filter", self.source_filter)
            object.__setattr__(self, "source_filter", canonical)
            if _is_ipv6(self.source_filter) != _is_ipv6(self.address):
                raise ConfigError(
                    "sdp.source_filter", self.source_filter, "the address family of sdp.address"
                )
        if not 0 < self.clock_rate <= 0xFFFFFFFF:
            raise ConfigError("sdp.clock_rate", self.clock_rate, "a positive integer")
        if self.mediaclk_offset is not None and not 0 <= self.mediaclk_offset <= 0xFFFFFFFF:
            raise ConfigError("sdp.mediaclk_offset", self.mediaclk_offset, "0..4294967295")
        for key, tag in (("sdp.mid", self.mid), ("sdp.describes", self.describes)):
            if tag is not None and not _TOKEN.fullmatch(tag):
                raise ConfigError(key, tag, "an RFC 4566 token (letters, digits, -._ ...)")
        if (self.video is not None) != (self.kind is MediaKind.VIDEO):
            raise ConfigError("sdp.video", self.video, "a VideoFormat exactly when kind is VIDEO")
        if (self.audio is not None) != (self.kind is MediaKind.AUDIO):
            raise ConfigError("sdp.audio", self.audio, "an AudioFormat exactly when kind is AUDIO")
        if self.audio is not None and self.audio.sample_rate != self.clock_rate:
            raise ConfigError(
                "sdp.clock_rate", self.clock_rate, f"the audio sample rate {self.audio.sample_rate}"
            )
        if self.video is not None:
            for name in _VIDEO_TEXT_PARAMS:
                value = getattr(self.video, name)
                if not _FMTP_VALUE.fullmatch(value):
                    raise ConfigError(f"video.{name}", value, "text without spaces or ';'")
        if self.audio is not None and self.audio.channel_order is not None:
            if not _FMTP_VALUE.fullmatch(self.audio.channel_order):
                raise ConfigError(
                    "audio.channel_order", self.audio.channel_order, "text without spaces or ';'"
                )
        if self.extmap is not None and not self.extmap.ids:
            raise ConfigError("sdp.extmap", self.extmap, "None or an ExtMap with at least one id")
        if self.kind is MediaKind.METADATA and self.extmap is None:
            raise ConfigError("sdp.extmap", None, "an ExtMap for a METADATA media (PS3.22 §6.2.1)")
        if self.describes is not None and self.kind is not MediaKind.METADATA:
            raise ConfigError("sdp.describes", self.describes, "None unless kind is METADATA")
        if self.rendition and (self.kind is not MediaKind.METADATA or self.describes is not None):
            raise ConfigError("sdp.rendition", self.rendition,
                              "False unless kind is METADATA and describes is None")
        if self.bottom_field_first and (self.video is None or not self.video.interlaced):
            raise ConfigError("sdp.bottom_field_first", self.bottom_field_first,
                              "False unless the media is interlaced video")


@dataclass(frozen=True, kw_only=True)
class SdpSession:
    """A whole SDP object: the session lines and one :class:`SdpMedia` per flow.

    Parameters
    ----------
    origin_address : str
        Address on the ``o=`` line (the sender's unicast address).
    session_name : str
        ``s=`` text (no line breaks, no leading or trailing white space).
    session_id : int
        ``o=`` session id (also written as the version), 0..2**64-1.
    media : tuple of SdpMedia
    """

    origin_address: str
    session_name: str
    session_id: int
    media: tuple[SdpMedia, ...] = field(default=())
    dup_groups: tuple[tuple[str, ...], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.origin_address or any(c.isspace() for c in self.origin_address):
            raise ConfigError("sdp.origin_address", self.origin_address, "an address, no spaces")
        name = self.session_name
        if name != name.strip() or any(ord(c) < 0x20 or c == "\x7f" for c in name):
            raise ConfigError(
                "sdp.session_name", name, "text without control characters or outer spaces"
            )
        if not 0 <= self.session_id < 1 << 64:
            raise ConfigError("sdp.session_id", self.session_id, "0..2**64-1")
        object.__setattr__(self, "media", tuple(self.media))
        mids = [m.mid for m in self.media if m.mid is not None]
        if len(set(mids)) != len(mids):
            raise ConfigError("sdp.mid", mids, "distinct values")
        object.__setattr__(self, "dup_groups", tuple(tuple(g) for g in self.dup_groups))
        _check_dup_groups(self)

    def video(self) -> list[SdpMedia]:
        """The video media, in order."""
        return [m for m in self.media if m.kind is MediaKind.VIDEO]

    def audio(self) -> list[SdpMedia]:
        """The audio media, in order."""
        return [m for m in self.media if m.kind is MediaKind.AUDIO]

    def metadata(self) -> list[SdpMedia]:
        """The PS3.22 metadata media, in order."""
        return [m for m in self.media if m.kind is MediaKind.METADATA]

    def by_mid(self, mid: str) -> SdpMedia | None:
        """The media whose ``a=mid`` is ``mid``, or None."""
        return next((m for m in self.media if m.mid == mid), None)

    def described_by(self, metadata: SdpMedia) -> SdpMedia | None:
        """The media a metadata media describes (its ``describes`` mid), or None."""
        return None if metadata.describes is None else self.by_mid(metadata.describes)

    def legs(self, media: SdpMedia) -> tuple[SdpMedia, ...]:
        """The ST 2022-7 legs of the flow ``media`` belongs to, in group order; just
        ``(media,)`` for a media in no ``a=group:DUP``."""
        if media.mid is not None:
            for group in self.dup_groups:
                if media.mid in group:
                    return tuple(m for mid in group if (m := self.by_mid(mid)) is not None)
        return (media,)

    def is_secondary_leg(self, media: SdpMedia) -> bool:
        """True for a leg of a DUP group other than its first (its flow is read through
        the first leg's)."""
        legs = self.legs(media)
        return len(legs) > 1 and legs[0] is not media


# ---------------------------------------------------------------------------------------
# writing


def _ip(address: str) -> str:
    return "IP6" if _is_ipv6(address) else "IP4"


def _framerate_text(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def video_fmtp(fmt: VideoFormat) -> str:
    """The ST 2110-20 ``a=fmtp`` parameter list of ``fmt`` (``spec/ps322.md`` §4.2)."""
    params = [
        f"sampling={fmt.sampling.value}",
        f"width={fmt.width}",
        f"height={fmt.height}",
        f"exactframerate={_framerate_text(fmt.exactframerate)}",
        f"depth={fmt.depth}",
        f"TCS={fmt.tcs}",
        f"colorimetry={fmt.colorimetry}",
        f"PM={fmt.pm}",
        f"SSN={fmt.ssn}",
        f"TP={fmt.tp}",
    ]
    if fmt.interlaced:
        params.append("interlace")
    if fmt.segmented:
        params.append("segmented")
    params.append(f"RANGE={fmt.range}")
    if fmt.maxudp is not None:
        params.append(f"MAXUDP={fmt.maxudp}")
    params.append(f"PAR={fmt.par}")
    return "; ".join(params)


def _ptime_text(ptime_us: int) -> str:
    ms = Fraction(ptime_us, 1000)
    return str(ms.numerator) if ms.denominator == 1 else str(float(ms))


def write_sdp(session: SdpSession) -> str:
    """Render ``session`` as SDP text with CRLF line ends (RFC 4566 §5)."""
    lines = [
        "v=0",
        f"o=- {session.session_id} {session.session_id} IN "
        f"{_ip(session.origin_address)} {session.origin_address}",
        f"s={session.session_name or ' '}",
        "t=0 0",
    ]
    lines.extend(_dup_group_lines(session))
    for m in session.media:
        pt = m.payload_type
        lines.append(f"m={m.kind.sdp_media} {m.port} RTP/AVP {pt}")
        conn = m.address if m.ttl is None else f"{m.address}/{m.ttl}"
        lines.append(f"c=IN {_ip(m.address)} {conn}")
        if m.source_filter is not None:
            lines.append(f"a=source-filter: incl IN {_ip(m.address)} {m.address} {m.source_filter}")
        if m.video is not None:
            lines.append(f"a=rtpmap:{pt} raw/{m.clock_rate}")
            lines.append(f"a=fmtp:{pt} {video_fmtp(m.video)}")
        elif m.audio is not None:
            a = m.audio
            lines.append(f"a=rtpmap:{pt} {a.encoding.value}/{m.clock_rate}/{a.channels}")
            if a.channel_order is not None:
                lines.append(f"a=fmtp:{pt} channel-order={a.channel_order}")
            lines.append(f"a=ptime:{_ptime_text(a.ptime_us)}")
        else:
            lines.append(f"a=rtpmap:{pt} {METADATA_ENCODING}/{m.clock_rate}")
        if m.refclk is not None:
            lines.append(f"a=ts-refclk:{m.refclk.sdp_value()}")
        if m.mediaclk_offset is not None:
            lines.append(f"a=mediaclk:direct={m.mediaclk_offset}")
        if m.extmap is not None:
            lines.extend(f"a=extmap:{ident} {item.value}" for ident, item in m.extmap)
        if m.mid is not None:
            lines.append(f"a=mid:{m.mid}")
        if m.describes is not None:
            lines.append(f"a={DESCRIBES_ATTRIBUTE}:{m.describes}")
        if m.rendition:
            lines.append(f"a={RENDITION_ATTRIBUTE}")
        if m.bottom_field_first:
            lines.append(f"a={FIELD_ORDER_ATTRIBUTE}:bff")
    return "\r\n".join(lines) + "\r\n"


# ---------------------------------------------------------------------------------------
# parsing


class _Line:
    """One SDP line with its number, for error messages."""

    __slots__ = ("number", "text", "kind", "value")

    def __init__(self, number: int, text: str) -> None:
        self.number = number
        self.text = text
        self.kind = text[0]
        self.value = text[2:]

    def error(self, message: str) -> RemoteProtocolError:
        shown = self.text if len(self.text) <= 80 else self.text[:77] + "..."
        return RemoteProtocolError(f"SDP line {self.number} {shown!r}", message)

    def attribute(self) -> tuple[str, str | None]:
        name, sep, val = self.value.partition(":")
        return name.strip(), (val if sep else None)


@dataclass
class _Connection:
    address: str
    ttl: int | None


@dataclass
class _Section:
    """Attributes gathered for the session or one media before they become an SdpMedia."""

    mline: _Line | None = None
    conn: _Connection | None = None
    source_filter: str | None = None
    refclk: RefClock | None = None
    refclk_seen: bool = False
    mediaclk: int | None = None
    mediaclk_seen: bool = False
    rtpmap: dict[int, tuple[_Line, str]] = field(default_factory=dict)
    fmtp: dict[int, tuple[_Line, str]] = field(default_factory=dict)
    ptime: _Line | None = None
    framerate: _Line | None = None
    extmap: dict[NmosItem, int] = field(default_factory=dict)
    extmap_line: _Line | None = None
    mid: str | None = None
    describes: str | None = None
    rendition: bool = False
    field_order: str | None = None
    dup_groups: list[tuple[_Line, tuple[str, ...]]] = field(default_factory=list)


def _int(line: _Line, text: str, what: str, lo: int, hi: int) -> int:
    t = text.strip()
    if not t.isascii() or not t.isdigit():
        raise line.error(f"{what} {t!r} is not a decimal integer")
    v = int(t)
    if not lo <= v <= hi:
        raise line.error(f"{what} {v} is outside {lo}..{hi}")
    return v


def _address(line: _Line, text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise line.error(f"{what} {text!r} is not an IP address") from None


def _parse_connection(line: _Line) -> _Connection:
    parts = line.value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise line.error("expected 'IN IP4 <address>[/ttl]' or 'IN IP6 <address>'")
    addr_part = parts[2].split("/")
    address = _address(line, addr_part[0], "connection address")
    if _is_ipv6(address) != (parts[1] == "IP6"):
        raise line.error(f"address {address} does not match {parts[1]}")
    ttl: int | None = None
    if len(addr_part) > 3:
        raise line.error("too many '/' fields")
    if len(addr_part) >= 2:
        if parts[1] == "IP4":
            ttl = _int(line, addr_part[1], "TTL", 0, 255)
            if len(addr_part) == 3:
                _int(line, addr_part[2], "number of addresses", 1, 255)
        else:
            if len(addr_part) == 3:
                raise line.error("IPv6 connection addresses take no TTL")
            _int(line, addr_part[1], "number of addresses", 1, 65535)
    return _Connection(address, ttl)


def _parse_source_filter(line: _Line, value: str) -> str | None:
    parts = value.split()
    if len(parts) < 5:
        raise line.error("expected 'incl|excl IN IP4|IP6 <dest> <source>...'")
    mode, net, ip, _dest = parts[0], parts[1], parts[2], parts[3]
    if net != "IN" or ip not in ("IP4", "IP6", "*"):
        raise line.error(f"unsupported network/address type {net} {ip}")
    if mode == "excl":
        return None
    if mode != "incl":
        raise line.error(f"filter mode {mode!r} is neither incl nor excl")
    return _address(line, parts[4], "source address")


def _parse_attribute(sec: _Section, line: _Line) -> None:
    name, val = line.attribute()
    lname = name.lower()
    if lname == "rtpmap" or lname == "fmtp":
        if val is None:
            raise line.error(f"a={name} needs a value")
        pt_text, _, rest = val.strip().partition(" ")
        pt = _int(line, pt_text, "payload type", 0, 127)
        (sec.rtpmap if lname == "rtpmap" else sec.fmtp)[pt] = (line, rest.strip())
    elif lname == "ptime":
        sec.ptime = line
    elif lname == "framerate":
        sec.framerate = line
    elif lname == "source-filter":
        if val is None:
            raise line.error("a=source-filter needs a value")
        src = _parse_source_filter(line, val)
        if src is not None:
            sec.source_filter = src
    elif lname == "ts-refclk":
        if val is None:
            raise line.error("a=ts-refclk needs a value")
        if sec.refclk is None:
            try:
                sec.refclk = RefClock.parse(val)
            except RemoteProtocolError as e:
                if e.field != "ts-refclk":
                    raise line.error(str(e)) from None
                log.debug("ignoring unsupported a=ts-refclk:%s", val)
            except ConfigError as e:
                raise line.error(str(e)) from None
        sec.refclk_seen = True
    elif lname == "mediaclk":
        if val is None:
            raise line.error("a=mediaclk needs a value")
        first = val.strip().split()[0] if val.strip() else ""
        if first.startswith("direct="):
            sec.mediaclk = _int(
                line, first[len("direct=") :], "mediaclk direct offset", 0, 0xFFFFFFFF
            )
        else:
            log.debug("ignoring a=mediaclk:%s", val)
        sec.mediaclk_seen = True
    elif lname == "extmap":
        if val is None:
            raise line.error("a=extmap needs a value")
        parts = val.split()
        if len(parts) < 2:
            raise line.error("expected 'a=extmap:<id>[/<direction>] <URI>'")
        ident = _int(line, parts[0].split("/")[0], "extmap id", 1, 255)
        item = item_for_urn(parts[1])
        if item is None:
            return
        if not 1 <= ident <= 14:
            raise line.error(f"extmap id {ident} for {item.short_name} is not a one-byte id 1..14")
        if item in sec.extmap or ident in sec.extmap.values():
            raise line.error(f"duplicate extmap for {item.short_name} or id {ident}")
        sec.extmap[item] = ident
        sec.extmap_line = line
    elif lname == "mid":
        if val is None or not _TOKEN.fullmatch(val.strip()):
            raise line.error("a=mid needs a token value")
        sec.mid = val.strip()
    elif lname in ("group", "ssrc-group"):
        _parse_group(sec, line, lname, val)
    elif lname == DESCRIBES_ATTRIBUTE:
        if val is None or not _TOKEN.fullmatch(val.strip()):
            raise line.error(f"a={DESCRIBES_ATTRIBUTE} needs a token value (a mid)")
        sec.describes = val.strip()
    elif lname == RENDITION_ATTRIBUTE:
        sec.rendition = True
    elif lname == FIELD_ORDER_ATTRIBUTE:
        order = (val or "").strip().lower()
        if order not in ("tff", "bff"):
            raise line.error(f"a={FIELD_ORDER_ATTRIBUTE} needs tff or bff")
        sec.field_order = order


def _fmtp_params(line: _Line, text: str) -> dict[str, tuple[str, str | None]]:
    """``key=value`` pairs separated by ``;``: lower-cased key -> (key as written, value)."""
    out: dict[str, tuple[str, str | None]] = {}
    for raw in text.split(";"):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not key or any(c.isspace() for c in key):
            raise line.error(f"malformed fmtp parameter {item!r}")
        out[key.lower()] = (key, value.strip() if sep else None)
    return out


def _video_format(mline: _Line, sec: _Section, pt: int) -> VideoFormat:
    fl, fmtp_text = sec.fmtp.get(pt, (mline, ""))
    params = _fmtp_params(fl, fmtp_text)

    def get(key: str) -> str | None:
        kv = params.get(key.lower())
        if kv is None:
            return None
        if kv[1] is None or not kv[1]:
            raise fl.error(f"fmtp parameter {kv[0]} needs a value")
        return kv[1]

    def flag(key: str) -> bool:
        kv = params.get(key.lower())
        return kv is not None and (kv[1] or "1").lower() not in ("0", "false", "no")

    sampling_text = get("sampling")
    if sampling_text is None:
        raise fl.error("fmtp parameter sampling is missing")
    try:
        sampling = Sampling(sampling_text)
    except ValueError:
        raise fl.error(
            f"sampling {sampling_text!r} is not one of {[s.value for s in Sampling]}"
        ) from None
    dims: dict[str, int] = {}
    for key in ("width", "height"):
        text = get(key)
        if text is None:
            raise fl.error(f"fmtp parameter {key} is missing")
        dims[key] = _int(fl, text, key, 1, 32767)
    depth_text = get("depth")
    depth = 8 if depth_text is None else _int(fl, depth_text, "depth", 1, 64)
    rate_text = get("exactframerate")
    if rate_text is not None:
        rate = _fraction(fl, rate_text, "exactframerate")
    elif sec.framerate is not None:
        rate = _fraction(sec.framerate, sec.framerate.attribute()[1] or "", "framerate")
    else:
        rate = DEFAULT_FRAMERATE
    maxudp_text = get("MAXUDP")
    try:
        return VideoFormat(
            sampling=sampling,
            depth=depth,
            width=dims["width"],
            height=dims["height"],
            exactframerate=rate,
            colorimetry=get("colorimetry") or "BT601",
            interlaced=flag("interlace"),
            segmented=flag("segmented"),
            tcs=get("TCS") or "SDR",
            range=get("RANGE") or "NARROW",
            pm=get("PM") or "2110GPM",
            ssn=get("SSN") or "ST2110-20:2017",
            tp=get("TP") or "2110TPW",
            par=get("PAR") or "1:1",
            maxudp=None if maxudp_text is None else _int(fl, maxudp_text, "MAXUDP", 1, 65535),
        )
    except ConfigError as e:
        raise fl.error(str(e)) from None


def _fraction(line: _Line, text: str, what: str) -> Fraction:
    t = text.strip()
    m = re.fullmatch(r"([0-9]{1,10})(?:/([0-9]{1,10})|\.([0-9]{1,9}))?", t)
    if m is None:
        raise line.error(f"{what} {t!r} is not an integer, ratio or decimal")
    if m.group(2) is not None:
        num, den = int(m.group(1)), int(m.group(2))
        if den == 0:
            raise line.error(f"{what} {t!r} has a zero denominator")
        value = Fraction(num, den)
    else:
        value = Fraction(t)
    if value <= 0:
        raise line.error(f"{what} {t!r} is not positive")
    return value


def _audio_format(mline: _Line, sec: _Section, pt: int) -> tuple[AudioFormat, int]:
    if pt in sec.rtpmap:
        rl, enc_text = sec.rtpmap[pt]
        parts = enc_text.split("/")
        if len(parts) not in (2, 3):
            raise rl.error("expected 'a=rtpmap:<pt> L16|L24/<rate>[/<channels>]'")
        try:
            encoding = AudioEncoding(parts[0].upper())
        except ValueError:
            raise rl.error(f"audio encoding {parts[0]!r} is not L16 or L24") from None
        rate = _int(rl, parts[1], "clock rate", 1, 0xFFFFFFFF)
        channels = _int(rl, parts[2], "channels", 1, 255) if len(parts) == 3 else 1
        where = rl
    elif pt in _STATIC_AUDIO:
        encoding, rate, channels = _STATIC_AUDIO[pt]
        where = mline
    else:
        raise mline.error(f"no a=rtpmap for audio payload type {pt}")
    channel_order: str | None = None
    if pt in sec.fmtp:
        fl, fmtp_text = sec.fmtp[pt]
        kv = _fmtp_params(fl, fmtp_text).get("channel-order")
        if kv is not None:
            if not kv[1]:
                raise fl.error("fmtp parameter channel-order needs a value")
            channel_order = kv[1]
    ptime_us = 1000
    if sec.ptime is not None:
        ms = _fraction(sec.ptime, sec.ptime.attribute()[1] or "", "ptime")
        us = ms * 1000
        if us.denominator != 1:
            raise sec.ptime.error(f"ptime {float(ms)} ms is not a whole number of microseconds")
        ptime_us = int(us)
        where = sec.ptime
    try:
        fmt = AudioFormat(
            encoding=encoding,
            sample_rate=rate,
            channels=channels,
            ptime_us=ptime_us,
            channel_order=channel_order,
        )
    except ConfigError as e:
        raise where.error(str(e)) from None
    return fmt, rate


def _build_media(sec: _Section, session: _Section) -> SdpMedia:
    mline = sec.mline
    assert mline is not None
    parts = mline.value.split()
    if len(parts) < 4:
        raise mline.error("expected 'm=<media> <port> <proto> <fmt>'")
    media_type, port_text, proto = parts[0], parts[1], parts[2]
    port = _int(mline, port_text.split("/")[0], "port", 0, 65535)
    if not proto.upper().startswith("RTP/"):
        raise mline.error(f"transport {proto!r} is not RTP")
    pt = _int(mline, parts[3], "payload type", 0, 127)
    conn = sec.conn or session.conn
    if conn is None:
        raise mline.error("no c= line for this media or the session")
    refclk = sec.refclk if sec.refclk_seen else session.refclk
    mediaclk = sec.mediaclk if sec.mediaclk_seen else session.mediaclk
    source_filter = sec.source_filter or session.source_filter
    extmap_items = sec.extmap or session.extmap
    extmap: ExtMap | None = ExtMap(extmap_items) if extmap_items else None
    video: VideoFormat | None = None
    audio: AudioFormat | None = None
    encoding = sec.rtpmap[pt][1].split("/") if pt in sec.rtpmap else []
    if media_type == "video":
        if not encoding or encoding[0].lower() != "raw":
            raise mline.error(
                f"video encoding {'/'.join(encoding) or '(no rtpmap)'!r} is not ST 2110-20 raw"
            )
        kind = MediaKind.VIDEO
        rl = sec.rtpmap[pt][0]
        clock_rate = (
            _int(rl, encoding[1], "clock rate", 1, 0xFFFFFFFF)
            if len(encoding) > 1
            else VIDEO_CLOCK_RATE
        )
        video = _video_format(mline, sec, pt)
    elif media_type == "audio":
        kind = MediaKind.AUDIO
        audio, clock_rate = _audio_format(mline, sec, pt)
    elif media_type == "application":
        if not encoding or encoding[0].lower() != METADATA_ENCODING:
            raise mline.error(
                f"application encoding {'/'.join(encoding) or '(no rtpmap)'!r} is not dicom"
            )
        kind = MediaKind.METADATA
        rl = sec.rtpmap[pt][0]
        if len(encoding) < 2:
            raise rl.error("a=rtpmap for dicom needs a clock rate")
        clock_rate = _int(rl, encoding[1], "clock rate", 1, 0xFFFFFFFF)
        if extmap is None:
            raise mline.error("metadata media has no NMOS a=extmap lines (PS3.22 §6.2.1)")
    else:
        raise mline.error(f"media type {media_type!r} is not video, audio or application")
    try:
        return SdpMedia(
            kind=kind,
            port=port,
            payload_type=pt,
            address=conn.address,
            ttl=conn.ttl,
            source_filter=source_filter,
            clock_rate=clock_rate,
            video=video,
            audio=audio,
            extmap=extmap,
            refclk=refclk,
            mediaclk_offset=mediaclk,
            mid=sec.mid,
            describes=sec.describes if kind is MediaKind.METADATA else None,
            rendition=sec.rendition and kind is MediaKind.METADATA and sec.describes is None,
            bottom_field_first=(sec.field_order == "bff" and video is not None
                                and video.interlaced),
        )
    except ConfigError as e:
        raise mline.error(str(e)) from None


def parse_sdp(text: str | bytes) -> SdpSession:
    """Parse SDP text written by rtstream or a third party.

    Raises
    ------
    RemoteProtocolError
        Its field names the SDP line (``"SDP line 7 'a=fmtp:96 ...'"``) or, for a missing
        line, the line type (``"SDP o="``).
    """
    if isinstance(text, bytes | bytearray | memoryview):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise RemoteProtocolError("SDP text", f"not UTF-8: {e}") from None
    try:
        return _parse(text)
    except RtstreamError:
        raise
    except (ValueError, ArithmeticError, IndexError, KeyError) as e:  # defensive: say so
        raise RemoteProtocolError("SDP text", f"unparseable: {e}") from None


def _parse(text: str) -> SdpSession:
    session = _Section()
    sections: list[_Section] = []
    current = session
    version_seen = False
    origin: tuple[int, str] | None = None
    name: str | None = None
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.rstrip("\r")
        if not stripped.strip():
            continue
        if len(stripped) < 2 or stripped[1] != "=" or not stripped[0].isalpha():
            shown = stripped if len(stripped) <= 80 else stripped[:77] + "..."
            raise RemoteProtocolError(f"SDP line {number} {shown!r}", "not '<type>=<value>'")
        if any(ord(c) < 0x20 and c != "\t" for c in stripped) or "\x7f" in stripped:
            raise RemoteProtocolError(f"SDP line {number}", "contains control characters")
        line = _Line(number, stripped)
        if line.kind == "v":
            if line.value.strip() != "0":
                raise line.error("SDP version must be 0")
            version_seen = True
        elif line.kind == "o" and current is session:
            parts = line.value.split()
            if len(parts) != 6 or parts[3] != "IN":
                raise line.error("expected 'o=<user> <id> <version> IN IP4 <address>'")
            sid = _int(line, parts[1], "session id", 0, (1 << 64) - 1)
            origin = (sid, parts[5])
        elif line.kind == "s" and current is session:
            name = line.value.strip()
        elif line.kind == "c":
            if current.conn is not None:
                raise line.error("second c= line in one section")
            current.conn = _parse_connection(line)
        elif line.kind == "m":
            current = _Section(mline=line)
            sections.append(current)
        elif line.kind == "a":
            _parse_attribute(current, line)
        # b=, t=, i=, k=, u=, e=, p=, r=, z= carry nothing rtstream uses
    if not version_seen:
        raise RemoteProtocolError("SDP v=", "missing")
    if origin is None:
        raise RemoteProtocolError("SDP o=", "missing")
    if name is None:
        raise RemoteProtocolError("SDP s=", "missing")
    media = tuple(_build_media(sec, session) for sec in sections)
    try:
        groups = _dup_groups_of(session, media)
        return SdpSession(
            origin_address=origin[1], session_name=name, session_id=origin[0], media=media,
            dup_groups=groups,
        )
    except ConfigError as e:
        raise RemoteProtocolError("SDP session", str(e)) from None


# ---------------------------------------------------------------------------------------
# ST 2022-7 duplicate groups (RFC 7104, RFC 5888)

DUP_SEMANTICS = "DUP"
"""The ``a=group`` semantics of duplicated streams (RFC 7104 §3)."""


def _leg_key(m: SdpMedia) -> tuple[str, int, str | None]:
    return (m.address, m.port, m.source_filter)


def _leg_format(m: SdpMedia) -> tuple[object, ...]:
    return (m.kind, m.payload_type, m.clock_rate, m.video, m.audio, m.extmap)


def _check_dup_groups(session: SdpSession) -> None:
    """Validate :attr:`SdpSession.dup_groups` (see the module notes)."""
    seen: set[str] = set()
    for group in session.dup_groups:
        if len(group) < 2:
            raise ConfigError("sdp.dup_groups", group, "two or more mids per DUP group")
        legs: list[SdpMedia] = []
        for mid in group:
            m = session.by_mid(mid)
            if m is None:
                raise ConfigError("sdp.dup_groups", group, f"mids of this SDP's media ({mid!r} is none)")
            if mid in seen:
                raise ConfigError("sdp.dup_groups", group, f"each mid in one group only ({mid!r} twice)")
            seen.add(mid)
            legs.append(m)
        first = legs[0]
        for leg in legs[1:]:
            if _leg_format(leg) != _leg_format(first):
                raise ConfigError(
                    "sdp.dup_groups", group,
                    f"legs of one kind and format ({first.mid} and {leg.mid} differ; ST 2022-7 "
                    "legs carry identical packets)")
            if _leg_key(leg) == _leg_key(first):
                raise ConfigError(
                    "sdp.dup_groups", group,
                    f"legs on two paths ({first.mid} and {leg.mid} share destination "
                    f"{leg.address}:{leg.port} and source filter {leg.source_filter}; ST 2110-10 "
                    "legs never share both source and destination)")


def _dup_group_lines(session: SdpSession) -> list[str]:
    return [f"a=group:{DUP_SEMANTICS} {' '.join(g)}" for g in session.dup_groups]


def _parse_group(sec: _Section, line: _Line, lname: str, val: str | None) -> None:
    """``a=group`` (RFC 5888 §5) and ``a=ssrc-group`` (RFC 5576 §4.2)."""
    parts = (val or "").split()
    if not parts:
        raise line.error(f"a={lname} needs semantics and members")
    semantics = parts[0].upper()
    if lname == "ssrc-group":
        if semantics == DUP_SEMANTICS:
            raise line.error(
                "a=ssrc-group:DUP (both copies in one m= section with two SSRCs, RFC 7104 §4) "
                "is not supported: describe each ST 2022-7 leg as its own m= section with "
                "a=mid and group them with a session-level a=group:DUP <mid> <mid>")
        log.debug("ignoring a=ssrc-group:%s", parts[0])
        return
    if semantics != DUP_SEMANTICS:
        log.debug("ignoring a=group:%s", parts[0])
        return
    if sec.mline is not None:
        raise line.error("a=group:DUP belongs to the session level, before the first m= line")
    mids = tuple(parts[1:])
    if len(mids) < 2 or not all(_TOKEN.fullmatch(t) for t in mids):
        raise line.error("a=group:DUP needs two or more mid tokens")
    sec.dup_groups.append((line, mids))


def _dup_groups_of(session: _Section, media: tuple[SdpMedia, ...]) -> tuple[tuple[str, ...], ...]:
    """The DUP groups gathered at session level, each checked with its line named."""
    out: list[tuple[str, ...]] = []
    for line, mids in session.dup_groups:
        try:
            SdpSession(origin_address="0.0.0.0", session_name="", session_id=0, media=media,
                       dup_groups=(*out, mids))
        except ConfigError as e:
            raise line.error(str(e)) from None
        out.append(mids)
    return tuple(out)
