"""The real sender (test source) -> the real receiver for deep and interlaced formats.

The test picture is drawn straight into pgroups for every format; what arrives must be
exactly what :class:`~rtstream.media.testsrc.SectorGenerator` draws for that frame number
(below the burned-in counter and clock, which carry the capture time), each frame paired
with its own metadata grain (interlaced: stamped with the first field's timestamp).
"""

from __future__ import annotations

import asyncio
import contextlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from rtstream.media.testsrc import SectorGenerator
from rtstream.proto.formats import Sampling, VideoFormat
from rtstream.proto.sdp import write_sdp
from rtstream.receiver import ItemKind, Receiver, ReceiverConfig
from rtstream.sender import NetworkConfig, Sender, SenderConfig, VideoConfig
from tests.net.test_receiver import frame_number_of
from tests.peers import free_port

W, H = 160, 120


@pytest.mark.parametrize(
    ("sampling", "depth", "interlaced"),
    [
        (Sampling.YCBCR_422, 12, False),
        (Sampling.YCBCR_420, 10, False),
        (Sampling.RGB, 16, False),
        (Sampling.YCBCR_444, 10, True),
        (Sampling.YCBCR_422, 16, True),
    ],
)
async def test_sender_to_receiver(tmp_path: Path, sampling: Sampling, depth: int,
                                  interlaced: bool) -> None:
    base = free_port(count=4, step=2)
    cfg = SenderConfig(
        source="testsrc",
        video=VideoConfig(width=W, height=H, fps=Fraction(30), sampling=sampling, depth=depth,
                          interlaced=interlaced),
        network=NetworkConfig(dest="127.0.0.1", port=base),
    )
    fmt = VideoFormat(sampling=sampling, depth=depth, width=W, height=H,
                      exactframerate=Fraction(30), interlaced=interlaced, tp="2110TPW")
    gen = SectorGenerator(fmt)
    top = gen._text_origin[0] + 5 * gen._scale + 2  # below the counter and clock
    lpr = fmt.lines_per_row
    top += -top % lpr
    sdp = tmp_path / "rtv.sdp"
    sender = Sender(cfg)
    async with sender:
        video = sender.session().video()[0].video
        assert video is not None and (video.sampling, video.depth, video.interlaced) == (
            sampling, depth, interlaced)
        sdp.write_text(write_sdp(sender.session()))
        task = asyncio.create_task(sender.run())
        try:
            items = []
            rcfg = ReceiverConfig(sdp=str(sdp), frames=8, duration=20, pairing_wait_frames=12)
            async with Receiver(rcfg) as rx:
                async for item in rx:
                    if item.kind is ItemKind.VIDEO:
                        items.append(item)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert len(items) == 8
    paired = [it for it in items if it.metadata is not None]
    assert len(paired) >= 6  # the first frames may precede the receiver's first grain
    for it in paired:
        assert it.complete and it.frame is not None and it.fmt == video
        index = frame_number_of(it.metadata) - 1  # Frame Acquisition Numbers count from 1
        want = np.ascontiguousarray(gen.frame(index, 0)).reshape(fmt.rows, fmt.row_bytes)
        got = it.frame.reshape(fmt.rows, fmt.row_bytes)
        assert np.array_equal(got[top // lpr :], want[top // lpr :]), f"frame {index}"


def source_frames(graph: str, fmt: VideoFormat, count: int) -> list[np.ndarray]:
    """The first ``count`` frames of a lavfi graph as the sender converts them (PyAV's
    decode, its scaler into the wire's pixel format, our packing), woven as decoded."""
    import av

    from rtstream.media.sources import av_frame_to_array, preferred_pix_fmt
    from rtstream.proto.pixfmt import to_wire

    pix = preferred_pix_fmt(fmt)
    out = []
    with av.open(graph, format="lavfi") as c:
        for frame in c.decode(video=0):
            assert frame.interlaced_frame
            img = av_frame_to_array(frame.reformat(width=fmt.width, height=fmt.height,
                                                   format=pix), pix)
            out.append(np.ascontiguousarray(to_wire(img, pix, fmt)).reshape(-1))
            if len(out) == count:
                return out
    raise AssertionError("the graph ended early")


@pytest.mark.parametrize("order", ["bff", "tff"])
async def test_field_order_from_the_source_round_trips(tmp_path: Path, order: str) -> None:
    """A bottom-field-first source (FFmpeg's setfield=bff) goes out bottom field first
    (F=0 = its odd lines, SDP a=x-rtstream-field-order:bff) and every received frame, and
    its stored snapshot, is the source's woven frame byte for byte; a top-field-first one
    goes out as before, without the attribute."""
    from rtstream.dicom.stored import build_snapshot

    graph = f"testsrc=size={W}x{H}:rate=30,setfield={order}"
    base = free_port(count=4, step=2)
    cfg = SenderConfig(
        source=f"lavfi:{graph}",
        video=VideoConfig(width=W, height=H, fps=Fraction(30), sampling=Sampling.YCBCR_422,
                          depth=8, interlaced=True),
        network=NetworkConfig(dest="127.0.0.1", port=base),
        context={"patient_id": "RTS-BFF"},
    )
    fmt = VideoFormat(sampling=Sampling.YCBCR_422, depth=8, width=W, height=H,
                      exactframerate=Fraction(30), interlaced=True, tp="2110TPW")
    want = source_frames(graph, fmt, 40)
    sdp = tmp_path / "rtv.sdp"
    items = []
    async with Sender(cfg) as sender:
        assert sender.source.interlaced and sender.source.bottom_field_first == (order == "bff")
        text = write_sdp(sender.session())
        assert ("a=x-rtstream-field-order:bff" in text) == (order == "bff")
        sdp.write_text(text)
        task = asyncio.create_task(sender.run())
        try:
            rcfg = ReceiverConfig(sdp=str(sdp), frames=10, duration=20, pairing_wait_frames=12)
            async with Receiver(rcfg) as rx:
                async for item in rx:
                    if item.kind is ItemKind.VIDEO and item.metadata is not None:
                        items.append(item)
                        if len(items) == 3:
                            snap = await rx.snapshot_dataset(item.rtp_timestamp)
                            snapped = item
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert len(items) >= 6
    for it in items:
        index = frame_number_of(it.metadata) - 1
        assert it.complete and it.frame is not None
        assert np.array_equal(it.frame.reshape(-1), want[index]), f"frame {index}"
    # the fields of these frames differ: a weave the wrong way round would not pass
    src = want[0].reshape(fmt.rows, fmt.row_bytes)
    assert not np.array_equal(src[0::2], src[1::2])
    # the stored snapshot holds the source's frame, both fields where they belong
    index = frame_number_of(snapped.metadata) - 1
    assert snapped.static is not None and snapped.origin is not None
    expected = build_snapshot(want[index], fmt, snapped.static,
                              rtv_sop_instance_uid=snap.SOPInstanceUID,
                              origin=snapped.origin, series_instance_uid="1.2.3")
    assert snap.PixelData == expected.PixelData


@pytest.mark.parametrize("stamps", ["same", "half"])
def test_cli_field_timestamps_and_source_field_order_on_the_wire(tmp_path: Path,
                                                                 stamps: str) -> None:
    """``rtstream send --interlaced --field-timestamps X`` from a bottom-field-first
    source, read off the wire: each frame's first field (F=0) carries the source's odd
    lines, and the second field (F=1) is on the frame's timestamp (``same``) or half a
    frame period (1500 ticks at 30 fps) later (``half``)."""
    from rtstream.net.udp import UdpReceiver
    from rtstream.proto.rfc4175 import PayloadHeader
    from rtstream.proto.rtp import parse_rtp
    from tests.net.test_sender import drain_all, send

    graph = f"testsrc=size={W}x{H}:rate=30,setfield=bff"
    fmt = VideoFormat(sampling=Sampling.YCBCR_422, depth=8, width=W, height=H,
                      exactframerate=Fraction(30), interlaced=True, tp="2110TPW")
    want = source_frames(graph, fmt, 60)
    port = free_port(count=4, step=2)
    rx = UdpReceiver("127.0.0.1", port, rcvbuf=64 << 20)
    try:
        assert send("--source", f"lavfi:{graph}", "--video", f"{W}x{H}@30", "--depth", "8",
                    "--interlaced", "--field-timestamps", stamps, "--duration", "0.5",
                    "--dest", f"127.0.0.1:{port}", "--sdp-out", str(tmp_path / "s.sdp"),
                    "--patient-id", "RTS-CLI-I") == 0
        pkts = [parse_rtp(d) for d in drain_all(rx)]
    finally:
        rx.close()
    assert "a=x-rtstream-field-order:bff" in (tmp_path / "s.sdp").read_text()
    assert len(pkts) > 100
    firsts = {}  # F=0 packets by timestamp: the frame's first field
    seconds = {}
    for p in pkts:
        hdr = PayloadHeader.parse(p.payload)
        for srd in hdr.srds:
            (seconds if srd.field else firsts).setdefault(p.timestamp, []).append((srd, p))
    offset = 0 if stamps == "same" else 1500
    complete = [ts for ts in firsts if (ts + offset) & 0xFFFFFFFF in seconds]
    assert len(complete) >= 5
    if stamps == "half":
        assert not set(firsts) & set(seconds)  # the fields are on their own timestamps
    for ts in complete:
        rows = {srd.row for srd, _ in firsts[ts]}
        assert rows == set(range(H // 2))
        # the first field is the odd lines of one of the source's frames
        srd, p = next((s, q) for s, q in firsts[ts] if s.row == 10 and s.offset == 0)
        hdr = PayloadHeader.parse(p.payload)
        line = p.payload[hdr.size : hdr.size + srd.length]
        matches = [k for k, f in enumerate(want)
                   if f[21 * fmt.row_bytes : 21 * fmt.row_bytes + srd.length].tobytes() == line]
        assert matches, f"line 21 of the frame at {ts} is no source frame's"
        # and not the even line next to it (they differ in this picture)
        k = matches[0]
        assert want[k][20 * fmt.row_bytes : 20 * fmt.row_bytes + srd.length].tobytes() != line
