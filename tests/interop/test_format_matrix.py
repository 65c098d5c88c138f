"""The format x peer x direction interop matrix; writes ``docs/formats.md``.

For each of the 16 sampling x depth pairs and each direction, the peer is *asked* what it
carries, never told from a hand list:

* GStreamer -> rtstream: ``gst-inspect-1.0 rtpvrawpay`` lists the raw formats the
  payloader takes; each that names one of our pairs (GStreamer's format names have fixed
  meanings, :data:`GST_RAW`) is sent by ``rtpvrawpay`` and must reassemble byte-exact
  against the same frames written raw by GStreamer.
* rtstream -> GStreamer: rtstream sends every pair with ``rtpvrawdepay`` behind caps
  naming it; GStreamer either refuses (not-negotiated), or prints the raw format it
  decided on (``-v``). Where that format is the pair sent, its output must equal what we
  sent; where it is another one the peer *misreads* the flow, which the matrix records
  (the depayloader looks at ``sampling`` and only at ``depth`` for 4:2:2).
* FFmpeg -> rtstream: for every pair FFmpeg's RFC 4175 muxer is tried with the pair's
  lossless pixel format (``rawvideo``, and the ``bitpacked`` encoder); what it accepts,
  with the ``sampling``/``depth`` it writes to its SDP, is sent and must be byte-exact
  against FFmpeg's own encoding of the same input.
* rtstream -> FFmpeg: FFmpeg reads rtstream's SDP for every pair and says which codec
  it found (``Video: none`` when it does not carry the pair); what it carries is sent and
  its decoded output must equal what we sent, sample for sample.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from rtstream.proto.formats import SUPPORTED_VIDEO, Sampling, VideoFormat
from rtstream.proto.pixfmt import PLANAR_PIX_FMTS, planes_to_wire, to_wire, wire_to_planes
from rtstream.proto.rfc4175 import VideoPacketizer
from rtstream.proto.sdp import MediaKind, SdpMedia, SdpSession, parse_sdp, write_sdp
from tests.interop.test_gst_video import UdpCapture, depacketize_all, send_paced, wait_port_bound
from tests.peers import free_port, require_program, running

W, H = 640, 480
FRAMES = 3
FORMATS = sorted(SUPPORTED_VIDEO, key=lambda sd: (sd[0].value, sd[1]))
DOC = Path(__file__).resolve().parents[2] / "docs" / "formats.md"

EXACT = "byte-exact"
ROWS_REJECTED = "rejected: the peer's SRD Row Numbers (one per line)"
MISREAD_ROWS = "misread (the peer's own row layout)"
ONE_TIMESTAMP = "byte-exact with field_offset=0"

# What GStreamer's raw video format names mean (GstVideoFormat documentation), for the
# names that are one of our pairs, and how such a raw buffer becomes wire pgroups.
# Widths of 640 give rows without padding in every one of them.
GST_RAW: dict[str, tuple[Sampling, int]] = {
    "RGB": (Sampling.RGB, 8),          # packed R G B: the wire bytes
    "AYUV": (Sampling.YCBCR_444, 8),   # packed A Y U V per pixel
    "UYVY": (Sampling.YCBCR_422, 8),   # packed U Y V Y: the wire bytes
    "UYVP": (Sampling.YCBCR_422, 10),  # packed 10-bit U Y V Y: the wire bytes
    "I420": (Sampling.YCBCR_420, 8),   # planar Y, U, V (yuv420p)
}


def fmt_of(sd: tuple[Sampling, int], interlaced: bool = False) -> VideoFormat:
    return VideoFormat(sampling=sd[0], depth=sd[1], width=W, height=H,
                       exactframerate=Fraction(30), interlaced=interlaced)


def name(sd: tuple[Sampling, int], interlaced: bool = False) -> str:
    return f"{sd[0].value} {sd[1]}-bit" + (" interlaced" if interlaced else "")


def gst_raw_to_wire(gst_format: str, raw: np.ndarray, fmt: VideoFormat) -> np.ndarray:
    if gst_format in ("RGB", "UYVY", "UYVP"):
        return raw
    if gst_format == "AYUV":
        return np.ascontiguousarray(raw.reshape(H, W, 4)[..., [2, 1, 3]]).reshape(-1)
    return to_wire(raw.reshape(H * 3 // 2, W), "yuv420p", fmt)


def gst_raw_size(gst_format: str, fmt: VideoFormat) -> int:
    return {"AYUV": W * H * 4, "I420": W * H * 3 // 2}.get(gst_format, fmt.frame_bytes)


def random_frames(fmt: VideoFormat, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, fmt.frame_bytes, dtype=np.uint8) for _ in range(FRAMES + 2)]


def send_frames(port: int, fmt: VideoFormat, frames: list[np.ndarray], gap_s: float = 0.03,
                field_offset: int | None = None) -> None:
    pk = VideoPacketizer(fmt, ssrc=0x5EED, sequence=0xFFFFFF80, field_offset=field_offset)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for i, f in enumerate(frames):
            b = pk.packetize(f, 3000 * i)
            send_paced(tx, ("127.0.0.1", port), [b.datagram(j) for j in range(len(b))])
            time.sleep(gap_s)


def sdp_file(path: Path, port: int, fmt: VideoFormat) -> Path:
    media = SdpMedia(kind=MediaKind.VIDEO, port=port, payload_type=96, address="127.0.0.1",
                     clock_rate=90000, video=fmt)
    path.write_text(write_sdp(SdpSession(origin_address="127.0.0.1", session_name="matrix",
                                         session_id=1, media=(media,))))
    return path


def check_reassembly(fmt: VideoFormat, batch: np.ndarray, lengths: np.ndarray,
                     expected: list[np.ndarray]) -> str:
    events, dp = depacketize_all(fmt, batch, lengths)
    by_field = dp.stats.malformed_by_field
    if list(by_field) == ["SRD Row Number"]:
        # the peer numbers rows its own way (odd rows for 4:2:0, whose pgroups pair
        # lines, RFC 4175 §4.4; frame lines for interlaced video, where rtstream counts
        # lines within the field): a peer layout, not a loss
        return ROWS_REJECTED
    if dp.stats.malformed or dp.stats.lost or len(events) != len(expected):
        return f"FAILED: {len(events)} frames of {len(expected)}, {dp.stats.as_dict()}"
    for i, ev in enumerate(events):
        if not ev.complete or not np.array_equal(ev.data, expected[i]):
            return f"FAILED: frame {i} differs"
    return EXACT


# --------------------------------------------------------------------------- GStreamer


def gst_payloader_formats() -> set[str]:
    out = subprocess.run([require_program("gst-inspect-1.0"), "rtpvrawpay"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    sink = out[out.index("SINK template"):out.index("SRC template")]
    m = re.search(r"format: \{([^}]*)\}", sink)
    assert m, "rtpvrawpay lists no sink formats"
    return {f.strip().removeprefix("(string)") for f in m.group(1).split(",")}


def gst_to_rtstream(tmp: Path, sd: tuple[Sampling, int], offered: set[str],
                    interlaced: bool = False) -> str:
    names = [g for g, v in GST_RAW.items() if v == sd and g in offered]
    if not names:
        return "—"
    gst = require_program("gst-launch-1.0")
    g = names[0]
    fmt = fmt_of(sd, interlaced)
    mode = ",interlace-mode=interleaved" if interlaced else ""
    src = (f"videotestsrc num-buffers={FRAMES} pattern=ball ! "
           f"video/x-raw,format={g},width={W},height={H},framerate=30/1{mode}")
    ref = tmp / f"gst-ref-{g}.raw"
    with running([gst, "-q", *f"{src} ! filesink location={ref}".split()]) as p:
        assert p.wait(30) == 0
    raw = np.fromfile(ref, np.uint8).reshape(-1, gst_raw_size(g, fmt))
    expected = [gst_raw_to_wire(g, r, fmt) for r in raw]
    with UdpCapture() as cap:
        pipeline = f"{src} ! rtpvrawpay ! udpsink host=127.0.0.1 port={cap.port} sync=true"
        with running([gst, "-q", *pipeline.split()], log=tmp / f"gst-pay-{g}.log") as p:
            assert p.wait(30) == 0
        cap.wait_idle(0.3)
        batch, lengths = cap.result()
    return check_reassembly(fmt, batch, lengths, expected)


def rtstream_to_gst(tmp: Path, sd: tuple[Sampling, int], interlaced: bool = False) -> str:
    gst = require_program("gst-launch-1.0")
    fmt = fmt_of(sd, interlaced)
    frames = random_frames(fmt, sd[1])[:FRAMES]
    port = free_port()
    out = tmp / f"gst-depay-{sd[0].name}{sd[1]}.raw"
    log = tmp / f"gst-depay-{sd[0].name}{sd[1]}.log"
    caps = ("application/x-rtp,media=(string)video,clock-rate=(int)90000,"
            f"encoding-name=(string)RAW,sampling=(string){sd[0].value},"
            f"depth=(string){sd[1]},width=(string){W},height=(string){H},payload=(int)96")
    args = [gst, "-v", "-e", "udpsrc", "address=127.0.0.1", f"port={port}",
            "buffer-size=67108864", f"caps={caps}", "!", "rtpvrawdepay", "name=d", "!",
            "filesink", "buffer-mode=unbuffered", f"location={out}"]
    with running(args, log=log, stop_signal=signal.SIGINT) as p:
        wait_port_bound(port)
        time.sleep(0.2)
        send_frames(port, fmt, frames)
        # wait until the output stops growing (a misread flow never reaches our size)
        deadline = time.monotonic() + 5
        last = -1
        while time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.3)
            size = out.stat().st_size if out.exists() else 0
            if size == last:
                break
            last = size
    text = log.read_text(errors="replace")
    if "not-negotiated" in text:
        return "refused (not-negotiated)"
    m = re.search(r"d\.GstPad:src: caps = video/x-raw, format=\(string\)(\w+)", text)
    assert m, f"rtpvrawdepay neither refused nor negotiated: {text[-1500:]}"
    g = m.group(1)
    if GST_RAW.get(g) != sd:
        return f"misread as {g}"
    caps_line = text[m.start() : text.find("\n", m.start())]
    if interlaced and "interlace-mode=(string)interleaved" not in caps_line:
        return f"misread as progressive {g}"
    got = np.fromfile(out, np.uint8) if out.exists() else np.zeros(0, np.uint8)
    size = gst_raw_size(g, fmt)
    if got.size != FRAMES * size:
        return f"FAILED: {got.size} bytes for {FRAMES} frames of {size}"
    for i, raw in enumerate(got.reshape(FRAMES, size)):
        if not np.array_equal(gst_raw_to_wire(g, raw, fmt), frames[i]):
            return f"FAILED: frame {i} differs"
    return EXACT


# --------------------------------------------------------------------------- FFmpeg


def ffmpeg_pix_fmt(sd: tuple[Sampling, int]) -> str:
    """The lossless FFmpeg pixel format of a pair (packed where the wire bytes are one)."""
    if sd == (Sampling.YCBCR_422, 8):
        return "uyvy422"
    if sd == (Sampling.RGB, 8):
        return "rgb24"
    if sd == (Sampling.YCBCR_422, 10):
        return "yuv422p10le"
    if sd == (Sampling.YCBCR_420, 8):
        return "yuv420p"
    return next(k for k, v in PLANAR_PIX_FMTS.items() if v == sd)


def ffmpeg_raw_to_wire(pix: str, codec: str, raw: np.ndarray, fmt: VideoFormat) -> np.ndarray:
    """FFmpeg's raw frame (packed bytes, or planes one after another) as wire pgroups."""
    if codec == "bitpacked" or pix in ("uyvy422", "rgb24"):
        return raw
    sx = 1 if fmt.sampling in (Sampling.RGB, Sampling.YCBCR_444) else 2
    sy = 2 if fmt.sampling is Sampling.YCBCR_420 else 1
    n0, n1 = W * H, (W // sx) * (H // sy)
    p0 = raw[:n0].reshape(H, W)
    p1 = raw[n0 : n0 + n1].reshape(H // sy, W // sx)
    p2 = raw[n0 + n1 :].reshape(H // sy, W // sx)
    planes = (p2, p0, p1) if fmt.sampling is Sampling.RGB else (p0, p1, p2)  # gbrp: G B R
    return planes_to_wire(planes, fmt)


def ffmpeg_to_rtstream(tmp: Path, sd: tuple[Sampling, int], interlaced: bool = False) -> str:
    ffmpeg = require_program("ffmpeg")
    fmt = fmt_of(sd, interlaced)
    pix = ffmpeg_pix_fmt(sd)
    src = ["-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate=30", "-frames:v", str(FRAMES)]
    if interlaced:  # frames flagged top field first: FFmpeg's muxer sends two fields
        src += ["-vf", "setfield=tff", "-field_order", "tt"]
    chosen = None
    for codec in ("bitpacked", "rawvideo"):  # bitpacked: FFmpeg's 4:2:2 10-bit pgroups
        sdp = tmp / f"ff-probe-{sd[0].name}{sd[1]}-{codec}.sdp"
        port = free_port()
        r = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", *src[:4],
                            "-frames:v", "1", *src[6:], "-c:v", codec, "-pix_fmt", pix, "-f", "rtp",
                            "-sdp_file", str(sdp), f"rtp://127.0.0.1:{port}"],
                           capture_output=True, timeout=30)
        if r.returncode != 0 or not sdp.exists():
            continue
        video = parse_sdp(sdp.read_text()).video()[0].video
        if video is not None and (video.sampling, video.depth, video.interlaced) == (
                *sd, interlaced):
            chosen = codec
            break
    if chosen is None:
        return "—"
    enc = ["-c:v", chosen, "-pix_fmt", pix]
    ref = tmp / "ff-ref.raw"
    with running([ffmpeg, "-hide_banner", "-nostdin", "-y", *src, *enc, "-f", "rawvideo",
                  str(ref)]) as p:
        assert p.wait(30) == 0
    per = fmt.frame_bytes if (chosen == "bitpacked" or pix in ("uyvy422", "rgb24")) else None
    data = np.fromfile(ref, np.uint8)
    if per is None:
        data = data.view("<u2") if fmt.depth > 8 else data
        per = data.size // FRAMES
    expected = [ffmpeg_raw_to_wire(pix, chosen, r, fmt) for r in data.reshape(FRAMES, per)]
    sdp = tmp / "ff-send.sdp"
    with UdpCapture() as cap:
        with running([ffmpeg, "-hide_banner", "-nostdin", "-re", *src, *enc, "-f", "rtp",
                      "-sdp_file", str(sdp), f"rtp://127.0.0.1:{cap.port}"],
                     log=tmp / "ff-send.log") as p:
            assert p.wait(30) == 0
        cap.wait_idle(0.3)
        batch, lengths = cap.result()
    return check_reassembly(fmt, batch, lengths, expected)


def ffmpeg_codecs(tmp: Path) -> dict[tuple[Sampling, int], str]:
    """The codec FFmpeg's SDP demuxer finds in rtstream's SDP of each pair ("none" when
    it does not carry it). Without packets FFmpeg answers only after its read timeout
    (about 10 s), so all pairs are asked at once."""
    ffmpeg = require_program("ffmpeg")
    procs = {}
    for sd in FORMATS:
        sdp = sdp_file(tmp / f"ff-probe-{sd[0].name}{sd[1]}.sdp", free_port(), fmt_of(sd))
        procs[sd] = subprocess.Popen(
            [ffmpeg, "-hide_banner", "-nostdin", "-protocol_whitelist", "file,udp,rtp",
             "-analyzeduration", "1", "-probesize", "32", "-i", str(sdp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
    codecs = {}
    for sd, p in procs.items():
        _, err = p.communicate(timeout=60)
        m = re.search(r"Stream #0:0: Video: (\w+)", err)
        assert m, err[-1500:]
        codecs[sd] = m.group(1)
    return codecs


def rtstream_to_ffmpeg(tmp: Path, sd: tuple[Sampling, int], codec: str,
                       interlaced: bool = False) -> str:
    first = rtstream_to_ffmpeg_once(tmp, sd, codec, interlaced)
    if interlaced and first.startswith("FAILED: f"):
        # FFmpeg sends both fields on one timestamp and expects them so
        again = tmp / "one-timestamp"
        again.mkdir()
        if rtstream_to_ffmpeg_once(again, sd, codec, True, field_offset=0) == EXACT:
            return ONE_TIMESTAMP
    return first


def rtstream_to_ffmpeg_once(tmp: Path, sd: tuple[Sampling, int], codec: str,
                            interlaced: bool = False, field_offset: int | None = None) -> str:
    if codec == "none":
        return "—"
    ffmpeg = require_program("ffmpeg")
    fmt = fmt_of(sd, interlaced)
    port = free_port()
    sdp = sdp_file(tmp / f"ff-{sd[0].name}{sd[1]}.sdp", port, fmt)
    pix = ffmpeg_pix_fmt(sd)
    frames = random_frames(fmt, 7 + sd[1])
    out = tmp / "ff-out.raw"
    log = tmp / "ff-recv.log"
    args = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning", "-y",
            "-protocol_whitelist", "file,udp,rtp", "-buffer_size", "67108864", "-threads", "1",
            "-analyzeduration", "1", "-probesize", "32", "-i", str(sdp),
            "-fps_mode", "passthrough", "-frames:v", str(FRAMES), "-f", "rawvideo",
            "-pix_fmt", pix, str(out)]
    with running(args, log=log) as p:
        wait_port_bound(port)
        time.sleep(0.3)
        send_frames(port, fmt, frames, field_offset=field_offset)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            return f"FAILED: ffmpeg did not finish ({codec})"
    data = np.fromfile(out, np.uint8) if out.exists() else np.zeros(0, np.uint8)
    if data.size == 0 or data.size % FRAMES:
        return f"FAILED: {data.size} bytes decoded ({codec})"
    got = data.reshape(FRAMES, -1)

    def same(dec: np.ndarray, sent: np.ndarray) -> bool:
        if pix in ("uyvy422", "rgb24"):
            return bool(np.array_equal(dec, sent))
        planes = wire_to_planes(sent, fmt)
        flat = dec.view("<u2") if fmt.depth > 8 else dec
        n0, n1 = planes[0].size, planes[1].size
        if fmt.sampling is Sampling.RGB:  # FFmpeg's gbrp planes: G, B, R
            order = (planes[1], planes[2], planes[0])
        else:
            order = planes
        parts = (flat[:n0], flat[n0 : n0 + n1], flat[n0 + n1 :])
        return all(np.array_equal(a.reshape(-1), b) for a, b in zip(order, parts, strict=True))

    # FFmpeg's SDP demuxer may keep the first frame for probing: match the start
    first = next((k for k in (0, 1, 2) if same(got[0], frames[k])), None)
    if first is None:
        return f"FAILED: first decoded frame is none of those sent ({codec})"
    for i in range(FRAMES):
        if not same(got[i], frames[first + i]):
            return f"FAILED: frame {i} differs ({codec})"
    return EXACT


# --------------------------------------------------------------------------- the matrix


COLUMNS: list[tuple[str, Callable[..., str]]] = [
    ("GStreamer → rtstream", gst_to_rtstream),
    ("rtstream → GStreamer", rtstream_to_gst),
    ("FFmpeg → rtstream", ffmpeg_to_rtstream),
    ("rtstream → FFmpeg", rtstream_to_ffmpeg),
]


def write_doc(rows: dict[tuple[Sampling, int, bool], list[str]], gst_offered: set[str]) -> None:
    lines = [
        "# Video formats: what rtstream carries, and who else does",
        "",
        "rtstream sends and receives all 16 sampling x depth pairs PS3.22 allows",
        "(ST 2110-20 `sampling` YCbCr-4:2:2, YCbCr-4:4:4, YCbCr-4:2:0, RGB at 8, 10, 12",
        "and 16 bits; PS3.5 §8.2.13), progressive, and interlaced for every sampling",
        "but 4:2:0. Each pair round-trips byte-exact sender -> receiver in the suite",
        "(`tests/proto/test_rfc4175_formats.py`, `tests/net/test_receiver*.py`,",
        "`tests/net/test_sender_formats.py`); pairs no peer carries are pinned by golden",
        "vectors (`tests/vectors/format_vectors.py`).",
        "",
        "Interlaced video goes field by field, the field first in time first, with F=0",
        "(\"F=0 identifies the first field\", RFC 4175 §4.3): for a top-field-first",
        "source the even lines, then the odd ones with F=1. A bottom-field-first source",
        "(PyAV/FFmpeg decode says so, e.g. lavfi `setfield=bff`) sends its odd lines as",
        "F=0 and its SDP says `a=x-rtstream-field-order:bff`, as ST 2110-20's SDP has no",
        "field-order parameter: rtstream's receiver weaves such frames back as the source",
        "had them (snapshots too); a receiver that does not know the attribute (FFmpeg)",
        "weaves F=0 onto the even lines and sees that source's line pairs swapped. Row",
        "Numbers count lines within the field and the marker ends each field; a received",
        "frame carries its first field's timestamp, the one its metadata grain has.",
        "",
        "The second field's RTP timestamp is `--field-timestamps` (TOML",
        "`video.field_timestamps`): `half` (default) stamps it half a frame later, each",
        "field at its own sampling instant, as GStreamer's rtpvrawpay does; `same` puts",
        "both fields on the frame's timestamp, as FFmpeg's RFC 4175 muxer sends them.",
        "Use `same` towards FFmpeg: in the matrix below, whose frames go out in bursts,",
        "FFmpeg 5.1 decodes interlaced video only that way; through the real, paced",
        "sender it decoded both byte-exact",
        "(`test_sender_interlaced_to_ffmpeg_with_field_timestamps`).",
        "",
        "The table below is **written by `tests/interop/test_format_matrix.py`**, which",
        "asks each peer what it carries (gst-inspect, negotiated caps, FFmpeg's SDP and",
        "codec probe) and checks every cell it fills. Interlaced rows are tried for every",
        "pair some peer carries progressive. Do not edit it by hand.",
        "",
        "- `byte-exact`: every frame equal, byte for byte (or sample for sample",
        "  where the peer writes planar raw video).",
        "- `—`: the peer does not carry the pair in that direction.",
        "- `refused (not-negotiated)`: GStreamer's depayloader rejects the caps.",
        "- `misread as X`: the peer accepts the flow but decodes it as raw format X",
        "  (rtpvrawdepay ignores `depth` except for 4:2:2, and has no interlace caps);",
        "  not usable.",
        f"- `{ROWS_REJECTED}`: the peer's SRD Row Numbers are not RFC 4175's:",
        "  FFmpeg 5.1 sends 4:2:0 as one row per line with odd Row Numbers, where",
        "  RFC 4175 §4.4 pairs the lines of a 4:2:0 pgroup (Row Number = the first,",
        "  even, line); GStreamer 1.22 numbers interlaced rows by frame line, where",
        "  FFmpeg, Intel MTL and rtstream count lines within the field.",
        f"- `{MISREAD_ROWS}`: the same peer decodes rtstream's RFC layout with its own.",
        f"- `{ONE_TIMESTAMP}`: FFmpeg decodes these bursts of interlaced frames",
        "  byte-exact only with both fields on the frame's timestamp (as it sends",
        "  them): rtstream's default second-field stamp fails, the packetizer's",
        "  `field_offset=0` (the sender's `--field-timestamps same`) is byte-exact.",
        "",
        f"GStreamer rtpvrawpay sink formats seen: {', '.join(sorted(gst_offered))}.",
        "",
        "| format | " + " | ".join(c for c, _ in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for key, cells in rows.items():
        lines.append(f"| {name(key[:2], key[2])} | " + " | ".join(cells) + " |")
    lines.append("")
    DOC.write_text("\n".join(lines))


def run_row(tmp: Path, sd: tuple[Sampling, int], interlaced: bool, offered: set[str],
            codec: str) -> list[str]:
    cells = []
    for i, (_, check) in enumerate(COLUMNS):
        work = tmp / f"{sd[0].name}{sd[1]}{'i' if interlaced else 'p'}-{i}"
        work.mkdir()
        if check is gst_to_rtstream:
            cells.append(gst_to_rtstream(work, sd, offered, interlaced))
        elif check is rtstream_to_ffmpeg:
            cells.append(rtstream_to_ffmpeg(work, sd, codec, interlaced))
        else:
            cells.append(check(work, sd, interlaced))
    # A peer that numbers rows its own way reads ours its own way too: the frames it
    # decodes from rtstream differ, for the same reason.
    if cells[2] == ROWS_REJECTED and cells[3].startswith("FAILED: f"):
        cells[3] = MISREAD_ROWS
    return cells


@pytest.mark.peer("gstreamer")
@pytest.mark.peer("ffmpeg")
def test_interop_matrix(tmp_path: Path) -> None:
    offered = gst_payloader_formats()
    codecs = ffmpeg_codecs(tmp_path)
    rows: dict[tuple[Sampling, int, bool], list[str]] = {}
    for sd in FORMATS:
        rows[(*sd, False)] = run_row(tmp_path, sd, False, offered, codecs[sd])
    for sd in FORMATS:
        if sd[0] is not Sampling.YCBCR_420 and EXACT in rows[(*sd, False)]:
            rows[(*sd, True)] = run_row(tmp_path, sd, True, offered, codecs[sd])
    write_doc(rows, offered)
    failed = {name(k[:2], k[2]): c for k, c in rows.items()
              if any(x.startswith("FAILED") for x in c)}
    assert not failed, failed
    # every peer carries some pairs both ways, so the matrix is not vacuous
    for col in range(len(COLUMNS)):
        assert any(rows[(*sd, False)][col] == EXACT for sd in FORMATS), COLUMNS[col][0]


@pytest.mark.peer("ffmpeg")
@pytest.mark.parametrize("stamps", ["same", "half"])
async def test_sender_interlaced_to_ffmpeg_with_field_timestamps(tmp_path: Path,
                                                                 stamps: str) -> None:
    """The real sender with ``video.field_timestamps = "same"`` (``--field-timestamps
    same``) into FFmpeg's RFC 4175 demuxer: every interlaced frame FFmpeg decodes is the
    source's frame, byte for byte, in order. Paced like this (a frame period between
    frames, the fields spread over it), FFmpeg 5.1 reads the default ``half`` stamps too;
    the matrix above, whose frames go out in bursts, finds it needs ``same``."""
    import asyncio
    import contextlib

    from rtstream.sender import FieldTimestamps, NetworkConfig, Sender, SenderConfig, VideoConfig
    from tests.net.test_sender_formats import source_frames

    w, h, count = 160, 120, 12
    graph = f"testsrc=size={w}x{h}:rate=30,setfield=tff"
    fmt = VideoFormat(sampling=Sampling.YCBCR_422, depth=8, width=w, height=h,
                      exactframerate=Fraction(30), interlaced=True, tp="2110TPW")
    want = source_frames(graph, fmt, 90)
    ffmpeg = require_program("ffmpeg")
    base = free_port(count=4, step=2)
    cfg = SenderConfig(
        source=f"lavfi:{graph}",
        video=VideoConfig(width=w, height=h, fps=Fraction(30), sampling=Sampling.YCBCR_422,
                          depth=8, interlaced=True, field_timestamps=FieldTimestamps(stamps)),
        network=NetworkConfig(dest="127.0.0.1", port=base),
        duration=3.0,
    )
    out = tmp_path / "ff-out.raw"
    async with Sender(cfg) as sender:
        video = sender.session().video()[0]
        sdp = tmp_path / "video-only.sdp"
        sdp.write_text(write_sdp(SdpSession(origin_address="127.0.0.1", session_name="ff",
                                            session_id=1, media=(video,))))
        args = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning", "-y",
                "-protocol_whitelist", "file,udp,rtp", "-buffer_size", "67108864",
                "-threads", "1", "-analyzeduration", "1", "-probesize", "32", "-i", str(sdp),
                "-fps_mode", "passthrough", "-frames:v", str(count), "-f", "rawvideo",
                "-pix_fmt", "uyvy422", str(out)]
        with running(args, log=tmp_path / "ff.log") as p:
            await asyncio.to_thread(wait_port_bound, base)
            await asyncio.sleep(0.3)
            task = asyncio.create_task(sender.run())
            try:
                for _ in range(100):
                    if p.poll() is not None:
                        break
                    await asyncio.sleep(0.05)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    data = np.fromfile(out, np.uint8) if out.exists() else np.zeros(0, np.uint8)
    got = data.reshape(-1, fmt.frame_bytes) if data.size % fmt.frame_bytes == 0 else data[:0]
    matched = [next((k for k, f in enumerate(want) if np.array_equal(g, f)), None) for g in got]
    assert len(got) == count, f"{data.size} bytes from FFmpeg ({stamps})"
    assert None not in matched, matched
    first = matched[0]
    assert first is not None and matched == list(range(first, first + count))
