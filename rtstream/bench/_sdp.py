"""The SDP an rtstream benchmark sender will publish, written before it starts."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any


def rtstream_sdp(path: Path, raw: Path, cfg: Any, depth: int, port: int) -> Path:
    """Write the SDP of a ``python -m rtstream.bench.worker send`` with these settings.

    The receiver needs the ports and formats of the video and metadata flows, which
    depend only on the configuration, so it can be started before the sender.
    """
    from rtstream.proto.formats import Sampling
    from rtstream.sender import NetworkConfig, Sender, SenderConfig, VideoConfig

    scfg = SenderConfig(
        source=f"raw:{raw}",
        loop=True,
        video=VideoConfig(width=cfg.width, height=cfg.height, fps=Fraction(cfg.fps),
                          depth=depth, sampling=Sampling.YCBCR_422),
        network=NetworkConfig(dest="127.0.0.1", port=port),
    )
    tx = Sender(scfg)
    try:
        path.write_text(tx.sdp_text())
    finally:
        tx.source.close()
    return path
