"""Your own numpy frames as a source: sent by the Sender, received bit-exact (RGB 8-bit
on the wire), with the context you gave; wrong frames and unknown names are clear errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

import rtstream
from rtstream.errors import ConfigError, RtstreamError
from rtstream.proto.formats import Sampling
from tests.peers import free_port

W, H = 64, 48


def picture(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def config(source: rtstream.ArraySource, tmp_path: Path, port: int) -> rtstream.SenderConfig:
    return rtstream.SenderConfig(
        source=rtstream.register_source(source),
        video=rtstream.VideoConfig(width=W, height=H, depth=8, sampling=Sampling.RGB),
        network=rtstream.NetworkConfig(dest="127.0.0.1", port=port),
        sdp_out=tmp_path / "s.sdp",
    )


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_own_frames_arrive_bit_exact_with_their_context(kind: str, tmp_path: Path) -> None:
    async def agen() -> AsyncIterator[np.ndarray]:
        for i in range(40):
            yield picture(i)
            await asyncio.sleep(0)

    frames = agen() if kind == "async" else (picture(i) for i in range(40))
    src = rtstream.ArraySource(frames, width=W, height=H, fps=30,
                               context={"patient_id": "ARR-1", "patient_name": "Array^Source"})
    port = free_port(count=4, step=2)
    got: list[np.ndarray] = []
    async with rtstream.Sender(config(src, tmp_path, port)) as tx:
        sending = asyncio.create_task(tx.run())
        async with rtstream.Receiver(rtstream.ReceiverConfig(sdp=str(tmp_path / "s.sdp"),
                                                             frames=20)) as rx:
            async for item in rx:
                got.append(item.array("rgb24"))
                static = item.static
        stats = await sending
    assert len(got) == 20 and stats.frames == 40
    sent = [picture(i).tobytes() for i in range(40)]
    indices = [sent.index(g.tobytes()) for g in got]  # every frame is one of ours, exact
    assert indices == sorted(indices) and len(set(indices)) == 20
    assert static is not None and static.PatientID == "ARR-1"
    rtstream.unregister_source(src)


async def test_wrong_frame_is_a_clear_error(tmp_path: Path) -> None:
    src = rtstream.ArraySource(iter([np.zeros((H, W), np.uint8)]), width=W, height=H, fps=30)
    async with rtstream.Sender(config(src, tmp_path, free_port(count=4, step=2))) as tx:
        with pytest.raises(RtstreamError, match=r"ArraySource frame 0.*rgb24 frames of \(48, 64, 3\)"):
            await tx.run()


def test_bad_parameters_and_unknown_name() -> None:
    with pytest.raises(ConfigError, match="pix_fmt"):
        rtstream.ArraySource(iter([]), width=W, height=H, fps=30, pix_fmt="bgr")
    with pytest.raises(ConfigError, match="fps"):
        rtstream.ArraySource(iter([]), width=W, height=H, fps=0)
    with pytest.raises(ConfigError, match="numpy: source registered"):
        rtstream.Sender(rtstream.SenderConfig(source="numpy:nobody"))
