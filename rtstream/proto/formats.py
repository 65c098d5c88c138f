"""Media format descriptions shared by the packetizers, the SDP codec and the DICOM side.

These are plain, validated values (frozen keyword-only dataclasses); they say what a
flow carries, not how it is sent. The pgroup table is from RFC 4175 §4 as implemented in
public ST 2110 code (see ``spec/ps322.md`` §6.1); the DICOM limits from PS3.5 §8.2.13 and
A.8/A.10.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from fractions import Fraction

from rtstream.errors import ConfigError

TS_ST2110_20_PROGRESSIVE = "1.2.840.10008.1.2.7.1"
TS_ST2110_20_INTERLACED = "1.2.840.10008.1.2.7.2"
TS_ST2110_30 = "1.2.840.10008.1.2.7.3"

VIDEO_CLOCK_RATE = 90_000


class Sampling(enum.Enum):
    """ST 2110-20 ``sampling`` values rtstream carries (the four DICOM permits)."""

    YCBCR_422 = "YCbCr-4:2:2"
    YCBCR_444 = "YCbCr-4:4:4"
    YCBCR_420 = "YCbCr-4:2:0"
    RGB = "RGB"


# (octets per pgroup, pixels per pgroup), RFC 4175 §4.3-4.4 / ST 2110-20 §6.2.
_PGROUP: dict[tuple[Sampling, int], tuple[int, int]] = {
    (Sampling.YCBCR_422, 8): (4, 2),
    (Sampling.YCBCR_422, 10): (5, 2),
    (Sampling.YCBCR_422, 12): (6, 2),
    (Sampling.YCBCR_422, 16): (8, 2),
    (Sampling.YCBCR_420, 8): (6, 4),
    (Sampling.YCBCR_420, 10): (15, 8),
    (Sampling.YCBCR_420, 12): (9, 4),
    (Sampling.YCBCR_420, 16): (12, 4),
    (Sampling.YCBCR_444, 8): (3, 1),
    (Sampling.YCBCR_444, 10): (15, 4),
    (Sampling.YCBCR_444, 12): (9, 2),
    (Sampling.YCBCR_444, 16): (6, 1),
    (Sampling.RGB, 8): (3, 1),
    (Sampling.RGB, 10): (15, 4),
    (Sampling.RGB, 12): (9, 2),
    (Sampling.RGB, 16): (6, 1),
}

# What rtstream's pixel code implements: every sampling x depth pair of the table above,
# which is every pair PS3.5 §8.2.13 permits for RTV video (issue 16).
SUPPORTED_VIDEO: frozenset[tuple[Sampling, int]] = frozenset(_PGROUP)


def sample_bits(depth: int) -> tuple[int, int, int]:
    """(Bits Allocated, Bits Stored, High Bit) of native DICOM pixel data at ``depth``.

    PS3.5 §8.2.13 / A.8 (``spec/ps322.md`` §3.3): 8 bits in 8; 10, 12 and 16 bits in 16.
    """
    if depth not in (8, 10, 12, 16):
        raise ConfigError("video.depth", depth, "one of 8, 10, 12, 16")
    return (8 if depth == 8 else 16), depth, depth - 1


#: Photometric Interpretation (0028,0004) of each sampling, PS3.5 A.8 (``spec/ps322.md``
#: §3.3; BT601 colorimetry).
PHOTOMETRIC: dict[Sampling, str] = {
    Sampling.RGB: "RGB",
    Sampling.YCBCR_444: "YBR_FULL",
    Sampling.YCBCR_422: "YBR_FULL_422",
    Sampling.YCBCR_420: "YBR_PARTIAL_420",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoFormat:
    """An ST 2110-20 video flow's format (the SDP ``fmtp`` parameters).

    Parameters
    ----------
    sampling : Sampling
    depth : int
        Bits per component: 8, 10, 12 or 16.
    width, height : int
        Active pixels per line and active lines per frame (frame height even when
        interlaced).
    exactframerate : Fraction
        Frames per second, e.g. ``Fraction(60000, 1001)``.
    colorimetry : str
        ``BT601`` is the only value PS3.5 §8.2.13 permits for RTV; others are accepted
        from third-party SDPs.
    interlaced : bool
        Two fields per frame (F bit in the SRD header).
    segmented : bool
        Progressive segmented frame (PsF, SDP flag ``segmented``); requires
        ``interlaced`` as ST 2110-20 signals PsF with both flags.
    maxudp : int or None
        Largest UDP payload the sender uses when above the standard 1460-byte limit
        (SDP ``MAXUDP``); None means the standard limit.
    """

    sampling: Sampling
    depth: int
    width: int
    height: int
    exactframerate: Fraction
    colorimetry: str = "BT601"
    interlaced: bool = False
    segmented: bool = False
    tcs: str = "SDR"
    range: str = "NARROW"
    pm: str = "2110GPM"
    ssn: str = "ST2110-20:2017"
    tp: str = "2110TPW"
    par: str = "1:1"
    maxudp: int | None = None

    def __post_init__(self) -> None:
        if (self.sampling, self.depth) not in _PGROUP:
            raise ConfigError("video.depth", self.depth, "one of 8, 10, 12, 16")
        if not 0 < self.width <= 32767:
            raise ConfigError("video.width", self.width, "1..32767 pixels")
        if not 0 < self.height <= 32767:
            raise ConfigError("video.height", self.height, "1..32767 lines")
        if self.width % self.pgroup_pixels_per_line:
            raise ConfigError(
                "video.width",
                self.width,
                f"a multiple of {self.pgroup_pixels_per_line} for {self.sampling.value} {self.depth}-bit",
            )
        if self.sampling is Sampling.YCBCR_420 and self.height % 2:
            raise ConfigError("video.height", self.height, "an even number for 4:2:0")
        if self.interlaced and self.height % 2:
            raise ConfigError("video.height", self.height, "an even number when interlaced")
        if self.segmented and not self.interlaced:
            raise ConfigError("video.segmented", self.segmented, "False unless interlaced is True")
        if not isinstance(self.exactframerate, Fraction) or self.exactframerate <= 0:
            raise ConfigError("video.exactframerate", self.exactframerate, "a positive Fraction")
        if self.maxudp is not None and not 256 <= self.maxudp <= 65507:
            raise ConfigError("video.maxudp", self.maxudp, "256..65507 bytes")

    @property
    def pgroup_bytes(self) -> int:
        """Octets per pgroup."""
        return _PGROUP[(self.sampling, self.depth)][0]

    @property
    def pgroup_pixels(self) -> int:
        """Pixels per pgroup (for 4:2:0, over a pair of lines)."""
        return _PGROUP[(self.sampling, self.depth)][1]

    @property
    def pgroup_pixels_per_line(self) -> int:
        """Horizontal pixels one pgroup spans (4:2:0 pgroups span two lines)."""
        if self.sampling is Sampling.YCBCR_420:
            return self.pgroup_pixels // 2
        return self.pgroup_pixels

    @property
    def lines_per_row(self) -> int:
        """Scan lines one SRD row carries: 2 for 4:2:0 (RFC 4175 §4.4), else 1."""
        return 2 if self.sampling is Sampling.YCBCR_420 else 1

    @property
    def rows(self) -> int:
        """SRD rows per frame."""
        return self.height // self.lines_per_row

    @property
    def row_bytes(self) -> int:
        """Octets of pgroups per SRD row."""
        return self.width // self.pgroup_pixels_per_line * self.pgroup_bytes

    @property
    def frame_bytes(self) -> int:
        """Octets of active video per frame in wire pgroup order."""
        return self.row_bytes * self.rows

    @property
    def transfer_syntax_uid(self) -> str:
        """The PS3.5 §10.15/10.16 transfer syntax naming this flow."""
        return TS_ST2110_20_INTERLACED if self.interlaced else TS_ST2110_20_PROGRESSIVE

    @property
    def frame_duration_ns(self) -> Fraction:
        """Nominal frame period in nanoseconds."""
        return Fraction(1_000_000_000) / self.exactframerate


class AudioEncoding(enum.Enum):
    """ST 2110-30 linear PCM encodings (RFC 3551 L16, RFC 3190 L24)."""

    L16 = "L16"
    L24 = "L24"

    @property
    def sample_bytes(self) -> int:
        """Octets per sample per channel."""
        return 2 if self is AudioEncoding.L16 else 3


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioFormat:
    """An ST 2110-30 audio flow's format.

    Parameters
    ----------
    encoding : AudioEncoding
    sample_rate : int
        44100, 48000 (recommended, PS3.5 A.10) or 96000 Hz; also the RTP clock rate.
    channels : int
        1..8.
    ptime_us : int
        Packet time in microseconds: 1000 (ST 2110-30 level A) or 125.
    channel_order : str or None
        ``channel-order`` fmtp value, e.g. ``SMPTE2110.(ST)``.
    """

    encoding: AudioEncoding = AudioEncoding.L24
    sample_rate: int = 48_000
    channels: int = 2
    ptime_us: int = 1000
    channel_order: str | None = None

    def __post_init__(self) -> None:
        if self.sample_rate not in (44_100, 48_000, 96_000):
            raise ConfigError("audio.sample_rate", self.sample_rate, "44100, 48000 or 96000")
        if not 1 <= self.channels <= 8:
            raise ConfigError("audio.channels", self.channels, "1..8")
        if self.ptime_us not in (1000, 125):
            raise ConfigError("audio.ptime_us", self.ptime_us, "1000 (1 ms) or 125 (125 us)")

    @property
    def samples_per_packet(self) -> int:
        """Samples per channel in one packet (48 at 48 kHz / 1 ms; 44.1 kHz rounds up)."""
        return -(-self.sample_rate * self.ptime_us // 1_000_000)

    @property
    def packet_payload_bytes(self) -> int:
        """Octets of payload in one full packet."""
        return self.samples_per_packet * self.channels * self.encoding.sample_bytes

    @property
    def transfer_syntax_uid(self) -> str:
        """PS3.5 §10.17: SMPTE ST 2110-30 PCM Digital Audio."""
        return TS_ST2110_30
