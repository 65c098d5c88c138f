"""Receiver end to end on 127.0.0.1 for the formats of issue 16.

``tests/net/test_receiver.py`` covers the seven formats rtstream carried before; this
file covers the other nine sampling x depth pairs and interlaced video (every sampling
but 4:2:0, at every depth), with the same deterministic sender: every frame arrives
byte-exact and paired with its own grain (stamped with the first field's timestamp).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from rtstream.proto.formats import SUPPORTED_VIDEO, Sampling, VideoFormat
from rtstream.receiver import Receiver, ReceiverConfig
from tests.net.test_receiver import RtvTestSender, check_pairs, collect, make_sdp
from tests.peers import free_port

EARLIER = {
    (Sampling.YCBCR_422, 8), (Sampling.YCBCR_422, 10), (Sampling.YCBCR_444, 8),
    (Sampling.YCBCR_444, 10), (Sampling.RGB, 8), (Sampling.RGB, 10), (Sampling.YCBCR_420, 8),
}
CASES = [
    *[(s, d, False) for s, d in sorted(SUPPORTED_VIDEO - EARLIER, key=lambda x: (x[0].value, x[1]))],
    *[(s, d, True) for s, d in sorted(SUPPORTED_VIDEO, key=lambda x: (x[0].value, x[1]))
      if s is not Sampling.YCBCR_420],
]


@pytest.mark.parametrize(("sampling", "depth", "interlaced"), CASES)
async def test_format_byte_exact_and_paired(
    tmp_path: Path, sampling: Sampling, depth: int, interlaced: bool
) -> None:
    fmt = VideoFormat(sampling=sampling, depth=depth, width=320, height=240,
                      exactframerate=Fraction(60), interlaced=interlaced)
    base = free_port(count=4, step=2)
    sdp = make_sdp(tmp_path / "s.sdp", base, fmt)
    n = 8
    cfg = ReceiverConfig(sdp=str(sdp), frames=n, duration=20, pairing_wait_frames=12)
    async with Receiver(cfg) as rx:
        tx = RtvTestSender(fmt, base, frames=n, seed=depth).start()
        items = await collect(rx)
        stats = rx.stats
    tx.join()
    assert len(items) == n
    for it in items:
        assert it.complete and it.fmt == fmt and it.frame is not None
        assert it.frame.tobytes() == tx.log.frames[it.rtp_timestamp]
        assert it.rgb().shape == (240, 320, 3)
    assert check_pairs(items, tx.log) == n
    assert stats["packets_lost"] == 0 and stats["packets_malformed"] == 0
    assert stats["frames_complete"] == n
