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
