"""ST 2022-7 receiving on 127.0.0.1: every flow kind merged (video, audio, both metadata
flows), 100% pairing, and a second leg whose socket cannot be opened.

The real :class:`~rtstream.sender.Sender` sends each flow on two legs; a relay
(tests/net/relay.py) drops 5% of each leg at random, independently, on every flow. What
both legs lost is known exactly from the relay's records, and the receiver's merged loss
must equal it; frames and audio chunks arrive, each frame with the grain of its own RTP
timestamp.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from rtstream.proto.sdp import parse_sdp, write_sdp
from rtstream.receiver import ItemKind, Receiver, ReceiverConfig
from rtstream.sender import Sender, load_sender_config
from tests.net.relay import Impairment, UdpRelay
from tests.peers import free_port

FRAMES = 45
MIDS = ("VID", "VMETA", "AUD", "AMETA", "REND")  # REND: audio brings a rendition flow


def _sender(base: int, relay2: int) -> Sender:
    cfg = load_sender_config(None, {
        "source": "testsrc", "frames": FRAMES,
        "video": {"width": 160, "height": 120, "fps": 30, "depth": 8},
        "audio": {"enabled": True},
        "network": {"dest": "127.0.0.1", "port": base + 40,
                    "redundant": {"dest": "127.0.0.1", "port": relay2}}})
    return Sender(cfg)


def test_every_flow_merged_with_independent_loss(tmp_path: Path) -> None:
    base = free_port(count=37, step=2)
    # sender leg 1 -> relay base+40.. -> receiver base..; leg 2 -> relay base+60.. -> base+20..
    offsets = (0, 2, 4, 6, 12)
    routes = {base + 40 + o: base + o for o in offsets} | {base + 60 + o: base + 20 + o
                                                             for o in offsets}
    imp = Impairment(loss=0.05, protect_first=4)
    relay = UdpRelay(routes, impairments=dict.fromkeys(routes, imp), seed=7)

    async def main() -> tuple[dict[str, Any], list[Any], int]:
        tx = _sender(base, base + 60)
        async with tx:
            s = tx.sdp
            # the receiver reads the relay's outputs: rewrite the legs' ports
            moved = routes
            import dataclasses

            s = dataclasses.replace(s, media=tuple(dataclasses.replace(m, port=moved[m.port])
                                                   for m in s.media))
            (tmp_path / "dup.sdp").write_text(write_sdp(s))
            assert parse_sdp(write_sdp(s)).dup_groups == tuple((m, f"{m}2") for m in MIDS)
            frames: list[Any] = []
            chunks = [0]
            async with Receiver(ReceiverConfig(sdp=str(tmp_path / "dup.sdp"))) as rx:

                async def consume() -> None:
                    async for item in rx:
                        if item.kind is ItemKind.VIDEO:
                            frames.append(item)
                        else:
                            chunks[0] += 1

                reader = asyncio.create_task(consume())
                try:
                    async with asyncio.timeout(30):
                        await tx.run()
                    await asyncio.sleep(0.5)  # the last datagrams through the relay
                finally:
                    reader.cancel()
                return rx.stats, frames, chunks[0]

    with relay:
        stats, frames, chunks = asyncio.run(main())
    for o, mid in zip(offsets, MIDS, strict=True):
        flow = stats["flows"][mid]
        d1 = set(relay.report(base + 40 + o).dropped)
        d2 = set(relay.report(base + 60 + o).dropped)
        if mid in ("VID", "AUD"):
            assert d1 and d2, mid
        leg1, leg2 = flow["legs"]
        assert (leg1["mid"], leg2["mid"]) == (mid, f"{mid}2")
        # merged loss: exactly what both legs lost (inside the stream's span)
        both = len(d1 & d2)
        assert both - 1 <= flow["packets_lost"] <= both, (mid, flow["packets_lost"], d1 & d2)
        assert len(d1) - 2 <= leg1["lost"] <= len(d1) and len(d2) - 2 <= leg2["lost"] <= len(d2)
        assert leg1["recovered"] == leg1["lost"] - flow["packets_lost"]
    assert chunks > 0 and stats["audio_delivered"] > 0
    # every delivered frame carries the grain of its own RTP timestamp (no mispairing)
    from rtstream.proto.clock import rtp_timestamp
    from rtstream.proto.rtv_metadata import frame_origin

    paired = [f for f in frames if f.metadata is not None]
    for f in paired:
        origin = frame_origin(f.metadata)
        assert origin is not None and rtp_timestamp(origin.to_ns(), 90000) == f.rtp_timestamp
    lost_grains = stats["flows"]["VMETA"]["packets_lost"]
    assert len(frames) - len(paired) <= lost_grains


def test_second_leg_that_cannot_be_opened(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A leg on an address this host does not have (its network down at start) is logged
    and the flow runs on the first leg."""
    base = free_port(count=4, step=2)
    cfg = load_sender_config(None, {
        "source": "testsrc", "frames": 20, "video": {"width": 160, "height": 120, "fps": 30},
        "network": {"dest": "127.0.0.1", "port": base,
                    "redundant": {"dest": "239.77.0.1", "port": base, "interface": "lo"}}})

    async def main() -> dict[str, Any]:
        async with Sender(cfg) as tx:
            (tmp_path / "dup.sdp").write_text(tx.sdp_text())
            # the second leg's multicast group joined on an interface that does not exist
            rx_cfg = ReceiverConfig(sdp=str(tmp_path / "dup.sdp"), interface="lo",
                                    interface2="192.0.2.123")
            async with Receiver(rx_cfg) as rx:
                run = asyncio.create_task(tx.run())
                n = 0
                async with asyncio.timeout(20):
                    async for item in rx:
                        n += item.kind is ItemKind.VIDEO
                        if n >= 15:
                            break
                await run
                return rx.stats

    with caplog.at_level(logging.INFO):
        stats = asyncio.run(main())
    assert f"VID: second leg 239.77.0.1:{base} cannot be opened" in caplog.text
    vid = stats["flows"]["VID"]
    assert stats["frames_delivered"] >= 15 and vid["packets_lost"] == 0
    assert vid["legs"][1]["packets"] == 0 and vid["legs"][0]["lost"] == 0
