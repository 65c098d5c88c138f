"""The SDP an rtstream benchmark sender will publish, written before it starts."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any


def rtstream_sdp(path: Path, raw: Path, cfg: Any, depth: int, port: int,
                 port2: int | None = None) -> Path:
    """Write the SDP of a ``python -m rtstream.bench.worker send`` with these settings.

    The receiver needs the ports and formats of the video and metadata flows, which
    depend only on the configuration, so it can be started before the sender. With
    ``port2`` the sender is an ST 2022-7 one (``worker send --port2``): every flow also
    goes to ``port2`` on 127.0.0.1, grouped ``a=group:DUP``.
    """
    from rtstream.proto.formats import Sampling
    from rtstream.sender import NetworkConfig, RedundantConfig, Sender, SenderConfig, VideoConfig

    scfg = SenderConfig(
        source=f"raw:{raw}",
        loop=True,
        video=VideoConfig(width=cfg.width, height=cfg.height, fps=Fraction(cfg.fps),
                          depth=depth, sampling=Sampling.YCBCR_422),
        network=NetworkConfig(dest="127.0.0.1", port=port, redundant=None if port2 is None
                              else RedundantConfig(dest="127.0.0.1", port=port2)),
    )
    tx = Sender(scfg)
    try:
        path.write_text(tx.sdp_text())
    finally:
        tx.source.close()
    return path
