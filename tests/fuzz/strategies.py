"""Structure-aware input generators and mutators shared by the fuzz tests and scripts/fuzz.py.

Theory of operation
-------------------
Random bytes die in the first length check of a parser, so every generator here starts
from *valid* wire data made by rtstream's own packetizers and writers (RTP packets, NMOS
extension bodies, SDP texts, ST 2110-30 and RFC 4175 batches, PS3.22 grains and their
datagrams, MQTT commands) and then mutates it:

* byte-level operations (:data:`OPS`): bit flips, interesting byte values, truncation,
  insertion, deletion, duplication, splicing with another valid input, and *length-field
  lies* -- a 16/32-bit word (either byte order) overwritten with an interesting value, a
  small delta of its current value, or the number of bytes that really remain +- a few;
* structure-level operations: DICOM element headers located by a walk of the valid grain
  get a new VR, length or tag; SDP texts lose, repeat, swap or gain lines and tokens;
  datagram sequences are dropped, duplicated, reordered, interleaved and re-stamped.

Every generator is a plain function of a :class:`random.Random`, so the same code drives
hypothesis (which draws the seed and, for single inputs, the mutation operations
themselves, so failures shrink) and the long run of ``scripts/fuzz.py`` (deterministic
seed, millions of inputs).

The number of inputs per parser is ``RTSTREAM_FUZZ_INPUTS`` when set, else 20,000 under
``CI=true`` and 500 otherwise (:data:`FUZZ_INPUTS`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import random
import resource
import struct
import uuid
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from typing import Any, Literal

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from rtstream.proto.clock import PtpTimestamp, RefClock
from rtstream.proto.formats import AudioEncoding, AudioFormat, Sampling, VideoFormat
from rtstream.proto.nmos_ext import (
    PROFILE_ONE_BYTE,
    ExtMap,
    NmosExtension,
    NmosItem,
    encode_elements,
)
from rtstream.proto.rtp import RtpPacket

CI = os.environ.get("CI", "").lower() == "true"
FUZZ_INPUTS = int(os.environ.get("RTSTREAM_FUZZ_INPUTS", "20000" if CI else "500"))
"""Inputs each parser gets in the test suite."""


def fuzz_settings(per_example: int = 1) -> settings:
    """Hypothesis settings that give a parser :data:`FUZZ_INPUTS` inputs.

    Parameters
    ----------
    per_example : int
        Inputs one example feeds the parser (batched tests check many per example).
    """
    return settings(
        max_examples=max(1, math.ceil(FUZZ_INPUTS / per_example)),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )


@contextlib.contextmanager
def address_space_cap(extra: int = 1 << 30) -> Iterator[None]:
    """Cap this process's address space to its current size + ``extra`` bytes.

    A parser that allocates what a length field claims (a memory bomb) then fails with
    MemoryError instead of taking the shared machine down. The soft limit is restored.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    size = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                size = int(line.split()[1]) * 1024
    cap = size + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ------------------------------------------------------------------------ byte mutation

_I8 = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x20, 0x40, 0x10)
_I16 = (0, 1, 2, 3, 4, 0x7F, 0x80, 0xFF, 0x100, 0x3FF, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)
_I32 = (0, 1, 2, 4, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)

OPS = (
    "flip",
    "set",
    "add",
    "truncate",
    "drop_head",
    "insert",
    "delete",
    "dup",
    "u16be",
    "u16le",
    "u32be",
    "u32le",
    "splice",
    "append",
)
"""Byte-level mutation operations understood by :func:`apply_op`."""

MAX_INPUT = 1 << 16


def apply_op(data: bytearray, op: str, a: int, b: int, c: int, other: bytes = b"") -> bytearray:
    """Apply one mutation; ``a``, ``b``, ``c`` are non-negative choice numbers.

    Every operation is a pure function of its arguments (insertions draw their bytes
    from ``random.Random(b)``), so a failing input can be rebuilt from the op list.
    """
    n = len(data)
    if op == "flip":
        if n:
            data[a % n] ^= 1 << (b % 8)
    elif op == "set":
        if n:
            data[a % n] = _I8[b % len(_I8)] if c % 2 else b & 0xFF
    elif op == "add":
        if n:
            i = a % n
            data[i] = (data[i] + (b % 71) - 35) & 0xFF
    elif op == "truncate":
        del data[a % (n + 1) :]
    elif op == "drop_head":
        del data[: a % min(n + 1, 64)]
    elif op == "insert":
        pos = a % (n + 1)
        data[pos:pos] = random.Random(b).randbytes(1 + c % 16)
    elif op == "delete":
        i = a % (n + 1)
        del data[i : i + 1 + b % 32]
    elif op == "dup":
        i = a % (n + 1)
        chunk = data[i : i + 1 + b % 64]
        j = c % (n + 1)
        data[j:j] = chunk
    elif op in ("u16be", "u16le", "u32be", "u32le"):
        w = 2 if op.startswith("u16") else 4
        order: Literal["big", "little"] = "big" if op.endswith("be") else "little"
        if n >= w:
            pos = a % (n - w + 1)
            mask = (1 << (8 * w)) - 1
            cur = int.from_bytes(data[pos : pos + w], order)
            mode = c % 3
            if mode == 0:
                table = _I16 if w == 2 else _I32
                v = table[b % len(table)]
            elif mode == 1:
                v = cur + (b % 33) - 16
            else:  # a length that is a little wrong about what remains
                v = n - pos - w + (b % 9) - 4
            data[pos : pos + w] = (v & mask).to_bytes(w, order)
    elif op == "splice":
        if other:
            i = a % (n + 1)
            j = b % (len(other) + 1)
            data = data[:i] + bytearray(other[j:])
    elif op == "append":
        data += random.Random(b).randbytes(1 + c % 64)
    else:  # pragma: no cover - programming error
        raise ValueError(op)
    if len(data) > MAX_INPUT:
        del data[MAX_INPUT:]
    return data


def mutate(data: bytes, rng: random.Random, pool: Sequence[bytes] = (), max_ops: int = 4) -> bytes:
    """``data`` after 1..``max_ops`` random operations (splicing draws from ``pool``)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, max_ops)):
        op = rng.choice(OPS)
        other = rng.choice(pool) if pool and op == "splice" else b""
        buf = apply_op(
            buf, op, rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(32), other
        )
    return bytes(buf)


_OP_LIST = st.tuples(
    st.sampled_from(OPS),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 255),
)


@st.composite
def mutated(draw: Any, base: st.SearchStrategy[bytes], pool: Sequence[bytes] = ()) -> bytes:
    """Hypothesis strategy: a value of ``base`` after 0..6 drawn operations (shrinkable)."""
    data = bytearray(draw(base))
    for op, a, b, c, k in draw(st.lists(_OP_LIST, max_size=6)):
        other = pool[k % len(pool)] if pool else b""
        data = apply_op(data, op, a, b, c, other)
    return bytes(data)


def seeded(gen: Callable[[random.Random], Any]) -> st.SearchStrategy[Any]:
    """Hypothesis strategy running generator ``gen`` on a drawn seed."""
    return st.integers(0, 2**64 - 1).map(lambda s: gen(random.Random(s)))


# ------------------------------------------------------------------------------- RTP


def gen_nmos_body(rng: random.Random, extmap: ExtMap | None = None) -> bytes:
    """A valid RFC 8285 one-byte extension body, usually with NMOS items."""
    extmap = extmap or ExtMap.default()
    if rng.random() < 0.2:
        elements = [
            (rng.randint(1, 14), rng.randbytes(rng.randint(1, 16)))
            for _ in range(rng.randint(0, 5))
        ]
        return encode_elements(elements)
    has = extmap.ids.__contains__
    flags = has(NmosItem.GRAIN_FLAGS)
    ext = NmosExtension(
        sync_timestamp=_ptp(rng) if has(NmosItem.SYNC_TIMESTAMP) and rng.random() < 0.7 else None,
        origin_timestamp=(
            _ptp(rng) if has(NmosItem.ORIGIN_TIMESTAMP) and rng.random() < 0.7 else None
        ),
        flow_id=(
            uuid.UUID(int=rng.getrandbits(128))
            if has(NmosItem.FLOW_ID) and rng.random() < 0.6
            else None
        ),
        source_id=(
            uuid.UUID(int=rng.getrandbits(128))
            if has(NmosItem.SOURCE_ID) and rng.random() < 0.6
            else None
        ),
        grain_start=flags and rng.random() < 0.5,
        grain_end=flags and rng.random() < 0.5,
        grain_duration=(
            Fraction(rng.randint(0, 1000), rng.randint(1, 60000))
            if has(NmosItem.GRAIN_DURATION) and rng.random() < 0.4
            else None
        ),
    )
    return ext.encode(extmap)


def _ptp(rng: random.Random) -> PtpTimestamp:
    return PtpTimestamp(rng.randint(0, (1 << 48) - 1), rng.randint(0, 999_999_999))


def random_extmap(rng: random.Random, *, full: bool = False) -> ExtMap:
    """A valid ExtMap with a random subset (``full``: all) of items on random distinct ids."""
    items = [i for i in NmosItem if full or rng.random() < 0.8] or [NmosItem.GRAIN_FLAGS]
    ids = rng.sample(range(1, 15), len(items))
    return ExtMap(dict(zip(items, ids, strict=True)))


def gen_rtp(rng: random.Random) -> bytes:
    """A valid RTP datagram: random CSRCs, extension (NMOS or not), padding, payload."""
    profile: int | None = None
    ext = b""
    if rng.random() < 0.6:
        if rng.random() < 0.8:
            profile = PROFILE_ONE_BYTE
            ext = gen_nmos_body(rng)
        else:
            profile = rng.getrandbits(16)
            ext = rng.randbytes(4 * rng.randint(0, 4))
    return RtpPacket(
        payload_type=rng.randint(0, 127),
        sequence=rng.getrandbits(16),
        timestamp=rng.getrandbits(32),
        ssrc=rng.getrandbits(32),
        marker=rng.random() < 0.3,
        csrcs=tuple(rng.getrandbits(32) for _ in range(rng.choice((0, 0, 0, 1, 2, 15)))),
        extension_profile=profile,
        extension=ext,
        payload=rng.randbytes(rng.choice((0, 1, 4, 20, 100))),
        padding=rng.choice((0, 0, 0, 1, 4, 255)),
    ).to_bytes()


# ------------------------------------------------------------------------------- SDP

_TOKENS = (
    "", "0", "1", "-1", "+5", "65536", "4294967296", "99999999999999999999999", "1/0", "0/0",
    "1/1001", "0.5", "1.", ".5", "1e3", "0x10", "٣", "²", "abc", "::1", "::", "256.1.1.1",
    "224.0.0.1", "ff02::1", "192.0.2.1/300", "239.1.1.1/1/0", "IN", "IP4", "IP6", "RTP/AVP",
    "TCP", "96", "127", "128", "raw", "L16", "L24", "dicom", "RAW/90000", "L24/48000/99",
    "\t", " ", ";", "=", ":", "/", "x" * 300, "urn:x-nmos:rtp-hdrext:flow-id", "incl", "excl",
    "localmac=00-11-22-33-44-55", "ptp=IEEE1588-2008:traceable", "direct=", "YCbCr-4:2:0",
    "sampling=RGB", "interlace", "segmented", "depth=12", "width=0", "\u00e9", "\ufeff",
)  # fmt: skip

_SDP_LINES = (
    "a=rtpmap:{pt} raw/90000", "a=rtpmap:{pt} L16/{n}/{n}", "a=rtpmap:{pt} dicom/{n}",
    "a=rtpmap:{pt} {t}", "a=fmtp:{pt} {t}", "a=fmtp:{pt} sampling=YCbCr-4:2:2; width={n}; "
    "height={n}; depth={n}; exactframerate={t}", "a=fmtp:{pt} channel-order={t}",
    "a=ptime:{t}", "a=framerate:{t}", "a=extmap:{n} {t}", "a=extmap:{n}/sendonly "
    "urn:x-nmos:rtp-hdrext:grain-flags", "a=mid:{t}", "a=x-rtstream-describes:{t}",
    "a=source-filter: incl IN IP4 {t} {t}", "a=source-filter:{t}", "a=ts-refclk:{t}",
    "a=ts-refclk:ptp=IEEE1588-2008:{t}:{n}", "a=mediaclk:{t}", "a=mediaclk:direct={n}",
    "c=IN IP4 {t}", "c=IN IP6 {t}", "c={t}", "m=video {n} RTP/AVP {pt}",
    "m=audio {n} RTP/AVP {pt}", "m=application {n} RTP/AVP {pt}", "m={t} {n} {t} {t}",
    "o=- {n} {n} IN IP4 {t}", "o={t}", "s={t}", "v={t}", "t=0 0", "b=AS:{n}", "a={t}",
    "a=recvonly", "x={t}", "{t}",
)  # fmt: skip


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        pt=rng.choice(("96", "97", "104", "10", "11", str(rng.randint(0, 300)))),
        n=rng.choice(("0", "1", "2", "14", "15", "48000", "90000", str(rng.getrandbits(33)))),
        t=rng.choice(_TOKENS),
    )


_VIDEO_FORMATS = (
    VideoFormat(sampling=Sampling.YCBCR_422, depth=10, width=64, height=8,
                exactframerate=Fraction(30)),
    VideoFormat(sampling=Sampling.YCBCR_420, depth=8, width=32, height=8,
                exactframerate=Fraction(60000, 1001), maxudp=8000),
    VideoFormat(sampling=Sampling.RGB, depth=8, width=16, height=4,
                exactframerate=Fraction(25), interlaced=True, segmented=True),
    VideoFormat(sampling=Sampling.YCBCR_444, depth=12, width=1920, height=1080,
                exactframerate=Fraction(50), colorimetry="BT709", tcs="PQ", range="FULL"),
)  # fmt: skip
_AUDIO_FORMATS = (
    AudioFormat(),
    AudioFormat(encoding=AudioEncoding.L16, sample_rate=44_100, channels=1),
    AudioFormat(encoding=AudioEncoding.L24, sample_rate=96_000, channels=8, ptime_us=125,
                channel_order="SMPTE2110.(SGRP,SGRP)"),
)  # fmt: skip


def gen_sdp_session(rng: random.Random) -> str:
    """SDP text written by :func:`write_sdp` for a random valid session."""
    from rtstream.proto.sdp import MediaKind, SdpMedia, SdpSession, write_sdp

    media = []
    mids: list[str] = []
    for i in range(rng.randint(0, 4)):
        kind = rng.choice(list(MediaKind))
        v6 = rng.random() < 0.2
        address = rng.choice(("ff15::1", "2001:db8::5")) if v6 else rng.choice(
            ("239.1.2.3", "192.0.2.9", "127.0.0.1")
        )
        ttl = None if v6 or rng.random() < 0.5 else rng.randint(0, 255)
        source = None
        if rng.random() < 0.3:
            source = "2001:db8::1" if v6 else "192.0.2.1"
        mid = f"m{i}" if rng.random() < 0.7 else None
        refclk = None
        if rng.random() < 0.5:
            refclk = (
                RefClock(ptp_grandmaster="08-00-11-FF-FE-21-E1-B0", ptp_domain=rng.randint(0, 127))
                if rng.random() < 0.5
                else RefClock(local_mac="02-00-00-00-00-01")
            )
        kw: dict[str, Any] = {}
        if kind is MediaKind.VIDEO:
            kw["video"] = rng.choice(_VIDEO_FORMATS)
            rate = 90_000
        elif kind is MediaKind.AUDIO:
            kw["audio"] = rng.choice(_AUDIO_FORMATS)
            rate = kw["audio"].sample_rate
        else:
            rate = rng.choice((90_000, 48_000))
            if mids and rng.random() < 0.7:
                kw["describes"] = rng.choice(mids)
        if kind is MediaKind.METADATA or rng.random() < 0.2:
            kw["extmap"] = random_extmap(rng) if rng.random() < 0.5 else ExtMap.default()
        media.append(
            SdpMedia(
                kind=kind, port=rng.randint(0, 65535), payload_type=rng.randint(96, 127),
                address=address, ttl=ttl, source_filter=source, clock_rate=rate, refclk=refclk,
                mediaclk_offset=rng.choice((0, None, rng.getrandbits(32))), mid=mid, **kw,
            )  # fmt: skip
        )
        if mid:
            mids.append(mid)
    session = SdpSession(
        origin_address=rng.choice(("192.0.2.10", "2001:db8::10")),
        session_name=rng.choice(("rtstream", "DICOM-RTV endoscope 1", "x")),
        session_id=rng.getrandbits(64),
        media=tuple(media),
    )
    return write_sdp(session)


@functools.lru_cache(maxsize=1)
def sdp_samples() -> tuple[str, ...]:
    """The hand-written and third-party SDPs of ``tests/vectors/sdp_samples.py``."""
    from tests.vectors import sdp_samples as s

    return tuple(
        v for k, v in sorted(vars(s).items()) if k.endswith("_SDP") and isinstance(v, str)
    )


def gen_sdp(rng: random.Random) -> str:
    """A valid SDP: a stored sample or a random rtstream session."""
    if rng.random() < 0.4:
        return rng.choice(sdp_samples())
    return gen_sdp_session(rng)


def mutate_sdp(text: str, rng: random.Random, max_ops: int = 4) -> str:
    """Line- and token-level mutations of SDP text, sometimes byte-level ones."""
    lines = text.replace("\r\n", "\n").split("\n")
    for _ in range(rng.randint(1, max_ops)):
        op = rng.randrange(9)
        i = rng.randrange(len(lines)) if lines else 0
        if op == 0 and lines:
            del lines[i]
        elif op == 1 and lines:
            lines.insert(rng.randrange(len(lines) + 1), lines[i])
        elif op == 2 and len(lines) > 1:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3:
            lines.insert(rng.randrange(len(lines) + 1), _fill(rng.choice(_SDP_LINES), rng))
        elif op in (4, 5) and lines:
            parts = _split_tokens(lines[i])
            if parts:
                k = rng.randrange(len(parts))
                parts[k] = rng.choice(_TOKENS) if op == 4 else parts[k].upper()
                lines[i] = "".join(parts)
        elif op == 6 and lines:
            raw = mutate(lines[i].encode("utf-8"), rng, max_ops=2)
            lines[i] = raw.decode("utf-8", "replace")
        elif op == 7 and lines:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        else:
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(lines) if lines else "v=0")
    sep = rng.choice(("\r\n", "\n", "\r\n", "\r"))
    return sep.join(lines)


def _split_tokens(line: str) -> list[str]:
    out: list[str] = []
    cur = ""
    for ch in line:
        if ch in " =:/;":
            if cur:
                out.append(cur)
            out.append(ch)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


# ----------------------------------------------------------------------- batches (numpy)


def to_batch(
    rows: Sequence[bytes], rng: random.Random | None = None, min_stride: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Lay datagrams out as a ``(n, stride)`` uint8 batch and their lengths.

    With ``rng``, sometimes add slack to the stride and sometimes lie in ``lengths``
    (0, past the data, past the stride, negative): receivers get their lengths from the
    kernel, but a parser must still not trust them blindly.
    """
    stride = max([len(r) for r in rows] + [min_stride, 1])
    if rng is not None and rng.random() < 0.3:
        stride += rng.randint(1, 64)
    buf = np.zeros((len(rows), stride), np.uint8)
    lengths = np.zeros(len(rows), np.int64)
    for i, r in enumerate(rows):
        buf[i, : len(r)] = np.frombuffer(r, np.uint8)
        lengths[i] = len(r)
    if rng is not None and len(rows) and rng.random() < 0.1:
        i = rng.randrange(len(rows))
        lengths[i] = rng.choice((0, -1, stride, stride + 1, 1 << 40, int(lengths[i]) + 3))
    return buf, lengths


def mutate_rows(rows: list[bytes], rng: random.Random, max_ops: int = 6) -> list[bytes]:
    """Drop, duplicate, swap, reverse, splice and byte-mutate datagrams of a sequence."""
    rows = list(rows)
    for _ in range(rng.randint(0, max_ops)):
        op = rng.randrange(8)
        if not rows:
            rows.append(rng.randbytes(rng.randint(0, 64)))
            continue
        i = rng.randrange(len(rows))
        if op == 0:
            del rows[i]
        elif op == 1:
            rows.insert(rng.randrange(len(rows) + 1), rows[i])
        elif op == 2:
            j = rng.randrange(len(rows))
            rows[i], rows[j] = rows[j], rows[i]
        elif op == 3:
            j = rng.randrange(len(rows))
            a, b = min(i, j), max(i, j)
            rows[a:b] = rows[a:b][::-1]
        elif op == 4:
            rows.insert(i, rng.randbytes(rng.randint(0, 80)))
        else:
            rows[i] = mutate(rows[i], rng, pool=rows, max_ops=3)
    return rows


def restamp(row: bytes, *, seq: int | None = None, ts: int | None = None,
            ssrc: int | None = None, marker: bool | None = None) -> bytes:  # fmt: skip
    """Overwrite RTP header fields of a datagram of at least 12 bytes."""
    b = bytearray(row)
    if len(b) < 12:
        return row
    if marker is not None:
        b[1] = (b[1] & 0x7F) | (0x80 if marker else 0)
    if seq is not None:
        b[2:4] = (seq & 0xFFFF).to_bytes(2, "big")
    if ts is not None:
        b[4:8] = (ts & 0xFFFFFFFF).to_bytes(4, "big")
    if ssrc is not None:
        b[8:12] = (ssrc & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(b)


# -------------------------------------------------------------------------- ST 2110-30

AUDIO_FORMATS = _AUDIO_FORMATS


class AudioStream:
    """Valid ST 2110-30 datagrams of one flow, continuing from call to call."""

    def __init__(self, fmt: AudioFormat, rng: random.Random) -> None:
        from rtstream.proto.st2110_30 import AudioPacketizer

        self.fmt = fmt
        self.ssrc = rng.getrandbits(32)
        self.pkt = AudioPacketizer(fmt, ssrc=self.ssrc, sequence=rng.getrandbits(16))
        self.ts = rng.getrandbits(32)
        lo, hi = (-(1 << 15), (1 << 15) - 1) if fmt.encoding is AudioEncoding.L16 else (
            -(1 << 23), (1 << 23) - 1)  # fmt: skip
        self.lo, self.hi = lo, hi

    def packets(self, rng: random.Random, k: int) -> list[bytes]:
        spp = self.fmt.samples_per_packet
        nprng = np.random.default_rng(rng.getrandbits(32))
        samples = nprng.integers(self.lo, self.hi + 1, (k * spp, self.fmt.channels), np.int32)
        batch = self.pkt.packetize(samples, self.ts)
        self.ts = (self.ts + k * spp) & 0xFFFFFFFF
        return [batch.datagram(i) for i in range(len(batch))]


# ----------------------------------------------------------------------------- RFC 4175

VIDEO_FORMATS = (
    VideoFormat(sampling=Sampling.YCBCR_422, depth=10, width=64, height=8,
                exactframerate=Fraction(30)),
    VideoFormat(sampling=Sampling.YCBCR_420, depth=8, width=32, height=8,
                exactframerate=Fraction(30)),
    VideoFormat(sampling=Sampling.RGB, depth=8, width=16, height=6,
                exactframerate=Fraction(30)),
    VideoFormat(sampling=Sampling.YCBCR_422, depth=8, width=16, height=6,
                exactframerate=Fraction(30), interlaced=True),
)  # fmt: skip
"""Small formats (progressive 4:2:2/4:2:0/RGB and interlaced 4:2:2) for the video fuzz."""


def srd_packet(rng: random.Random, fmt: VideoFormat, *, seq: int, ts: int, ssrc: int,
               marker: bool, field: int | None = None) -> bytes:  # fmt: skip
    """A hand-built RFC 4175 datagram with 1..4 SRD segments (any row, F bit, offset)."""
    pg, ppl = fmt.pgroup_bytes, fmt.pgroup_pixels_per_line
    groups = fmt.row_bytes // pg
    srds = []
    data = bytearray()
    for _ in range(rng.randint(1, 4)):
        if fmt.interlaced:
            f = rng.randint(0, 1) if field is None else field
            row = rng.randrange(fmt.height // 2)
        else:
            f = 0
            row = rng.randrange(fmt.rows) * fmt.lines_per_row
        g0 = rng.randrange(groups)
        ng = rng.randint(1, groups - g0)
        srds.append((ng * pg, row | (f << 15), g0 * ppl))
        data += rng.randbytes(ng * pg)
    hdr = bytearray(((seq >> 16) & 0xFFFF).to_bytes(2, "big"))
    for k, (length, row, off) in enumerate(srds):
        cont = 0x8000 if k < len(srds) - 1 else 0
        hdr += struct.pack("!HHH", length, row, off | cont)
    rtp = RtpPacket(payload_type=96, sequence=seq & 0xFFFF, timestamp=ts & 0xFFFFFFFF,
                    ssrc=ssrc, marker=marker).to_bytes()  # fmt: skip
    return rtp + bytes(hdr) + bytes(data)


class VideoStream:
    """Valid RFC 4175 frames of one flow: packetizer output or hand-built multi-SRD packets."""

    def __init__(self, fmt: VideoFormat, rng: random.Random) -> None:

        self.fmt = fmt
        self.ssrc = rng.getrandbits(32)
        self.seq = rng.getrandbits(32)
        self.ts = rng.getrandbits(32)
        self.max_payload = rng.choice((64, 120, 300, 1460))
        self.progressive = not fmt.interlaced

    def frame(self, rng: random.Random) -> list[bytes]:
        """The datagrams of the next frame (marker on the last)."""
        self.ts = (self.ts + 3000) & 0xFFFFFFFF
        if self.progressive and rng.random() < 0.7:
            from rtstream.proto.rfc4175 import VideoPacketizer

            pkt = VideoPacketizer(self.fmt, ssrc=self.ssrc, max_payload=self.max_payload,
                                  sequence=self.seq)  # fmt: skip
            nprng = np.random.default_rng(rng.getrandbits(32))
            frame = nprng.integers(0, 256, self.fmt.frame_bytes, np.uint8)
            batch = pkt.packetize(frame, self.ts)
            self.seq = pkt.sequence
            return [batch.datagram(i) for i in range(len(batch))]
        out = []
        k = rng.randint(1, 12)
        for i in range(k):
            field = None
            if self.fmt.interlaced:
                field = 0 if i < k // 2 else 1
            out.append(srd_packet(rng, self.fmt, seq=self.seq, ts=self.ts, ssrc=self.ssrc,
                                  marker=i == k - 1, field=field))  # fmt: skip
            self.seq = (self.seq + 1) & 0xFFFFFFFF
        return out


# ---------------------------------------------------------------------- PS3.22 grains

_VRS = (
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US", b"OB", b"OD", b"OF", b"OL", b"OV",
    b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV", b"XX", b"\x00\x00",
)  # fmt: skip
_LONG = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def element_offsets(grain: bytes) -> list[tuple[int, bool]]:
    """Offsets of the element headers of a valid grain: ``(offset, long form)``.

    A walk of the Explicit VR Little Endian layout (PS3.5 §7.1.2, items §7.5) written
    for the fuzzer: it lets structure-aware mutations hit VRs, lengths and tags.
    """
    out: list[tuple[int, bool]] = []

    def walk(pos: int, end: int) -> None:
        while pos + 8 <= end:
            g, e = struct.unpack_from("<HH", grain, pos)
            if g == 0xFFFE:
                (ilen,) = struct.unpack_from("<I", grain, pos + 4)
                out.append((pos, True))
                pos += 8
                if e == 0xE000 and ilen != 0xFFFFFFFF:
                    walk(pos, pos + ilen)
                    pos += ilen
                continue
            vr = grain[pos + 4 : pos + 6]
            long = vr in _LONG
            out.append((pos, long))
            if long:
                (vlen,) = struct.unpack_from("<I", grain, pos + 8)
                pos += 12
            else:
                (vlen,) = struct.unpack_from("<H", grain, pos + 6)
                pos += 8
            if vr == b"SQ" and vlen != 0xFFFFFFFF:
                walk(pos, pos + vlen)
            if vlen == 0xFFFFFFFF:
                continue
            pos += vlen

    try:
        walk(132, len(grain))
    except struct.error:  # a mutated grain whose lengths lie: keep what was found
        pass
    return out


def mutate_grain(grain: bytes, rng: random.Random, pool: Sequence[bytes] = (),
                 offsets: Sequence[tuple[int, bool]] | None = None) -> bytes:  # fmt: skip
    """Structure-aware mutation of a valid grain (element VR, length, tag) or byte-level."""
    offsets = element_offsets(grain) if offsets is None else offsets
    buf = bytearray(grain)
    for _ in range(rng.randint(1, 3)):
        if not offsets or rng.random() < 0.4:
            buf = bytearray(mutate(bytes(buf), rng, pool=pool, max_ops=2))
            continue
        pos, long = rng.choice(offsets)
        if pos + 12 > len(buf):
            continue
        op = rng.randrange(5)
        if op == 0:  # a new VR, header size kept
            buf[pos + 4 : pos + 6] = rng.choice(_VRS)
        elif op == 1:  # a length lie
            if long:
                v = rng.choice(_I32 + (len(buf) - pos - 12, len(buf) - pos - 11, rng.getrandbits(32)))
                buf[pos + 8 : pos + 12] = (v & 0xFFFFFFFF).to_bytes(4, "little")
            else:
                v = rng.choice(_I16 + (len(buf) - pos - 8, rng.getrandbits(16)))
                buf[pos + 6 : pos + 8] = (v & 0xFFFF).to_bytes(2, "little")
        elif op == 2:  # another tag (order, group 0002, delimiters)
            g = rng.choice((0x0002, 0x0006, 0x0008, 0x0034, 0xFFFE, rng.getrandbits(16)))
            e = rng.choice((0x0000, 0x0001, 0x0007, 0xE000, 0xE00D, 0xE0DD, rng.getrandbits(16)))
            buf[pos : pos + 4] = struct.pack("<HH", g, e)
        elif op == 3:  # VR and length together: e.g. a 4-byte UL where 10 OB bytes were
            vr = rng.choice((b"UL", b"SL", b"FD", b"FL", b"US", b"SS", b"AT", b"DS", b"IS", b"LO"))
            if not long:
                buf[pos + 4 : pos + 6] = vr
            else:
                # keep the element's span: long header (12) -> short header (8) + 4 pad bytes
                buf[pos + 4 : pos + 12] = vr + (4).to_bytes(2, "little") + rng.randbytes(4)
        else:  # undefined length
            if long:
                buf[pos + 8 : pos + 12] = b"\xff\xff\xff\xff"
    return bytes(buf)


@functools.lru_cache(maxsize=1)
def grain_corpus() -> tuple[bytes, ...]:
    """Valid grains: the spec vector, video/photographic/audio grains with and without the
    static part (made by rtstream's GrainBuilder)."""
    from rtstream.dicom.context import StreamContext
    from rtstream.dicom.realtime import BulkFlowRef, GrainBuilder, RtvSop
    from rtstream.proto.rtv_metadata import RtvMetaInfo
    from tests.vectors.rtv_vectors import DYNAMIC_HEX, META_HEX, VIDEO_FMT, hex_bytes

    out = [hex_bytes(META_HEX) + hex_bytes(DYNAMIC_HEX)]
    for sop, ts, rate in (
        (RtvSop.ENDOSCOPIC, VIDEO_FMT.transfer_syntax_uid, 90000),
        (RtvSop.PHOTOGRAPHIC, VIDEO_FMT.transfer_syntax_uid, 90000),
        (RtvSop.AUDIO, "1.2.840.10008.1.2.7.3", 48000),
    ):
        bulk = BulkFlowRef(source_id=uuid.UUID(int=11), flow_id=uuid.UUID(int=12),
                           transfer_syntax_uid=ts, sampling_rate=rate)  # fmt: skip
        meta = RtvMetaInfo(
            transfer_syntax_uid=ts, sop_class_uid=sop.value, sop_instance_uid="1.2.3.4.5",
            source_id=uuid.UUID(int=21), flow_id=uuid.UUID(int=22), sampling_rate=rate,
            frame_duration_ms=33.3,
        )  # fmt: skip
        b = GrainBuilder(
            sop, StreamContext(patient_name="Fuzz^Test", patient_id="FUZZ"), meta, bulk,
            video=None if sop is RtvSop.AUDIO else VIDEO_FMT, frame_duration_ms=33.3,
        )  # fmt: skip
        out.append(b.grain(origin=PtpTimestamp(1_700_000_000, 1), frame_number=1, now=0))
        out.append(b.grain(origin=PtpTimestamp(1_700_000_000, 2), frame_number=2, now=1))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def grain_offsets() -> tuple[list[tuple[int, bool]], ...]:
    """:func:`element_offsets` of each grain of :func:`grain_corpus`."""
    return tuple(element_offsets(g) for g in grain_corpus())


def gen_grain(rng: random.Random) -> bytes:
    """A mutated valid grain (sometimes unmutated)."""
    corpus = grain_corpus()
    i = rng.randrange(len(corpus))
    if rng.random() < 0.05:
        return corpus[i]
    return mutate_grain(corpus[i], rng, pool=corpus, offsets=grain_offsets()[i])


class GrainStream:
    """Valid metadata datagrams of one flow, grain after grain."""

    def __init__(self, rng: random.Random, extmap: ExtMap) -> None:
        from rtstream.proto.rtv_metadata import MetadataPacketizer

        self.ssrc = rng.getrandbits(32)
        self.pkt = MetadataPacketizer(
            ssrc=self.ssrc, extmap=extmap, source_id=uuid.UUID(int=21), flow_id=uuid.UUID(int=22),
            max_payload=rng.choice((128, 200, 600, 1460)), sequence=rng.getrandbits(16),
            grain_duration=Fraction(1, 30) if rng.random() < 0.5 else None,
        )  # fmt: skip
        self.ts = rng.getrandbits(32)

    def grain(self, rng: random.Random, mutate_p: float = 0.1) -> list[bytes]:
        """The datagrams of the next grain (timestamp advanced; the grain itself mutated
        with probability ``mutate_p``)."""
        self.ts = (self.ts + rng.choice((1, 3000, 3003))) & 0xFFFFFFFF
        g = rng.choice(grain_corpus()[1:])  # the spec vector has other NMOS ids
        if rng.random() < mutate_p:
            # a mutation may cut the grain to nothing, which packetize refuses (caller misuse)
            g = mutate_grain(g, rng) or g[:1]
        return self.pkt.packetize(
            g, self.ts, sync=PtpTimestamp(1_700_000_000, 0), origin=PtpTimestamp(1_700_000_000, 1)
        )


# ------------------------------------------------------------------------- MQTT commands

_ACTIONS = ("snapshot", "record_start", "record_stop", "stream_start", "stream_stop")


def gen_command(rng: random.Random) -> dict[str, Any]:
    """A valid command document (docs/mqtt.md)."""
    doc: dict[str, Any] = {"id": rng.choice(("req-1", "a", "X.y:z-9", "r" * 64)),
                           "action": rng.choice(_ACTIONS)}  # fmt: skip
    if rng.random() < 0.7:
        args: dict[str, Any] = {}
        if rng.random() < 0.5:
            args["flow"] = rng.choice(("video0", "VID", "x" * 64))
        if rng.random() < 0.5:
            args["rtp_timestamp"] = rng.getrandbits(32)
        if rng.random() < 0.5:
            args["max_seconds"] = rng.choice((0.001, 1, 3600, 12.5))
        if rng.random() < 0.5:
            args["description"] = rng.choice(("", "left knee", "x" * 64))
        if rng.random() < 0.3:
            args["stereo"] = rng.random() < 0.5
        doc["args"] = args
    return doc


_JSON_ODD: tuple[Any, ...] = (
    None, True, False, 0, -1, 1.5, 1e308, -0.0, 2**32, 2**64, "", "snapshot", "a/b", "+", "#",
    "\u0000", "\ud800", "x" * 100, [], {}, [1, [2, [3]]], {"id": {"id": "a"}},
)  # fmt: skip


def _odd(rng: random.Random) -> Any:
    import copy

    return copy.deepcopy(rng.choice(_JSON_ODD))


def mutate_command(doc: dict[str, Any], rng: random.Random) -> bytes:
    """A command document with members changed, removed or added, as JSON bytes (which
    may then be byte-mutated, or carry NaN/Infinity/huge numbers)."""
    import json

    d: dict[str, Any] = dict(doc)
    if isinstance(d.get("args"), dict):
        d["args"] = dict(d["args"])
    for _ in range(rng.randint(0, 3)):
        op = rng.randrange(5)
        target = d["args"] if isinstance(d.get("args"), dict) and rng.random() < 0.5 else d
        keys = list(target)
        if op == 0 and keys:
            del target[rng.choice(keys)]
        elif op == 1 and keys:
            target[rng.choice(keys)] = _odd(rng)
        elif op == 2:
            target[rng.choice(("id", "action", "args", "flow", "rtp_timestamp", "max_seconds",
                               "description", "x", ""))] = _odd(rng)  # fmt: skip
        elif op == 3:
            d = {"id": d.get("id"), "action": d.get("action"), "args": _odd(rng)}
        else:
            pass
    text = json.dumps(d, allow_nan=True)
    r = rng.random()
    if r < 0.1:
        text = text.replace("12.5", "NaN").replace("3600", "Infinity").replace("0.001", "-Infinity")
    elif r < 0.15:
        text = text.replace('"rtp_timestamp": ', '"rtp_timestamp": ' + "9" * rng.choice((20, 5000)))
    raw = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.4:
        raw = mutate(raw, rng, max_ops=3)
    return raw


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=12,
)
"""Any JSON value (as json.loads returns them)."""


# ----------------------------------------------------------------------------- checking


def only_protocol_errors(
    fn: Callable[[Any], Any], arg: Any, known: Sequence[Callable[[BaseException], bool]] = ()
) -> Any:
    """``fn(arg)``; None when it raised RemoteProtocolError naming a field.

    Any other exception fails with the input in the message (the reproducer), unless a
    predicate of ``known`` matches it: a bug already handed to its owner and pinned by a
    strict-xfail reproducer test, tolerated here so the fuzz keeps looking for new ones.
    """
    from rtstream.errors import RemoteProtocolError

    try:
        return fn(arg)
    except RemoteProtocolError as exc:
        assert exc.field, f"RemoteProtocolError without a field for {arg!r}"
        return None
    except Exception as exc:
        if any(k(exc) for k in known):
            return None
        name = getattr(fn, "__qualname__", repr(fn))
        raise AssertionError(
            f"{type(exc).__name__} escaped {name}: {exc}\n  input = {arg!r}"
        ) from exc


def raised_in(exc: BaseException, functions: set[str]) -> bool:
    """True when the innermost rtstream frame of ``exc``'s traceback is one of
    ``functions``."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/rtstream/" in f.filename]
    return bool(frames) and frames[-1].name in functions
