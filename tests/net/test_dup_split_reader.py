"""ST 2022-7 video through real loopback sockets: the leg that leads reads split.

A sender sends the same RFC 4175 datagrams to two ports with UDP GSO (so the receiving
sockets get coalesced GRO reads, the condition for split reads), each leg losing its own
packets and the two legs taking turns at leading. The flow's :class:`VideoReader`, run by
the event loop as ``rtstream receive`` runs it, must give back every frame byte for byte
(no packet is lost on both legs), and per-leg counters that say exactly what each leg
lost; with split reads off (the copying path) the very same frames and counters.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from rtstream.net.udp import UDP_SEGMENT
from rtstream.proto.formats import Sampling
from rtstream.proto.rfc4175 import VideoFrameEvent, VideoPacketizer
from rtstream.proto.sdp import parse_sdp
from rtstream.receiver import ReceiverConfig
from rtstream.receiver.flows import build_flows
from rtstream.receiver.readers import FlowReader, VideoReader, open_socket
from rtstream.sysclock import SystemClock
from tests.peers import free_port, require_root
from tests.proto.test_rfc4175 import datagrams, make_fmt, random_frame

SOL_UDP = 17
FMT = make_fmt(Sampling.YCBCR_422, 10, 64, 8)  # 160-byte rows, two 80-byte payloads each
FRAMES = 8


@dataclass
class Collect:
    """Sink and host of the reader under test."""

    frames: list[tuple[Any, ...]] = field(default_factory=list)
    failed: list[Exception] = field(default_factory=list)

    def on_frame(self, reader: VideoReader, ev: VideoFrameEvent, now: int) -> None:
        self.frames.append(_copy(ev))

    def on_grain(self, *args: Any) -> None:
        raise AssertionError("no metadata flow here")

    def on_chunk(self, *args: Any) -> None:
        raise AssertionError("no audio flow here")

    def read_failed(self, reader: FlowReader, exc: Exception) -> None:
        self.failed.append(exc)

    def read_done(self) -> None:
        pass


def _copy(ev: VideoFrameEvent) -> tuple[Any, ...]:
    return (ev.rtp_timestamp, ev.data.tobytes(), ev.complete, ev.packets)


def sdp(p1: int, p2: int) -> str:
    fmtp = ("a=fmtp:96 sampling=YCbCr-4:2:2; width=64; height=8; exactframerate=30; "
            "depth=10; TCS=SDR; colorimetry=BT601; PM=2110GPM; SSN=ST2110-20:2017; "
            "TP=2110TPN\r\n")
    legs = "".join(
        f"m=video {p} RTP/AVP 96\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:96 raw/90000\r\n{fmtp}"
        f"a=mediaclk:direct=0\r\na=mid:{mid}\r\n" for p, mid in ((p1, "V1"), (p2, "V2")))
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=dup\r\nt=0 0\r\na=group:DUP V1 V2\r\n"
            + legs)


@dataclass
class Scenario:
    """What each leg loses (indexes into the whole stream's datagrams) and who leads."""

    drop: tuple[set[int], set[int]]
    lead: list[int]  # per chunk: the leg that sends it first
    lag: int = 0  # chunks the second leg sends behind the first
    pause: list[bool] | None = None  # per send: let the reader run after it (else both
    # legs' datagrams wait in their sockets together)


def send_runs(sock: socket.socket, port: int, wire: list[bytes], idx: list[int]) -> None:
    """Send the datagrams ``idx`` (in that order) with GSO, one send per run of
    consecutive indexes of equal size."""
    runs: list[list[int]] = []
    for i in idx:
        if runs and runs[-1][-1] + 1 == i and len(wire[i]) == len(wire[runs[-1][0]]):
            runs[-1].append(i)
        else:
            runs.append([i])
    for run in runs:
        seg = len(wire[run[0]])
        sock.sendmsg([b"".join(wire[i] for i in run)],
                     [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", seg))], 0, ("127.0.0.1", port))


async def run(sc: Scenario, *, split: bool, chunk: int = 12, kernel: bool = True
              ) -> dict[str, Any]:
    frames = [random_frame(FMT, i) for i in range(FRAMES)]
    pk = VideoPacketizer(FMT, ssrc=7, max_payload=80, sequence=0xFFF0)  # wraps at 16
    wire = [d for i, f in enumerate(frames) for d in datagrams(pk.packetize(f, 3000 * i))]
    p1 = free_port()
    p2 = free_port()
    # the legs' skew here is the test's pace (a few ms a chunk on a loaded machine):
    # waiting up to 500 ms for the other leg's copy keeps every frame whole
    cfg = ReceiverConfig(sdp="-", dup_skew_ms=500, dup_kernel_filter=kernel)
    out = Collect()
    flows = build_flows(parse_sdp(sdp(p1, p2)), cfg, SystemClock(), out, out, out)
    (reader,) = flows.video
    reader.split = split
    loop = asyncio.get_running_loop()
    reader.start(loop, open_socket(reader, cfg, 0), out)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        chunks = [list(range(i, min(i + chunk, len(wire)))) for i in range(0, len(wire), chunk)]
        ports = (p1, p2)
        sends = 0
        for k in range(len(chunks) + sc.lag):
            first = sc.lead[min(k, len(sc.lead) - 1)]
            for leg, ck in ((first, k), (1 - first, k - sc.lag)):
                if 0 <= ck < len(chunks):
                    send_runs(tx, ports[leg], wire, [i for i in chunks[ck] if i not in sc.drop[leg]])
                    if sc.pause is None or sc.pause[sends % len(sc.pause)]:
                        await asyncio.sleep(0.002)
                    sends += 1
        await asyncio.sleep(0.3)  # hold timers, the silence check
    finally:
        tx.close()
        reader.close()
    assert not out.failed
    merge = reader.merge
    assert merge is not None
    return {
        "frames": out.frames,
        "want": [(3000 * i, f.tobytes(), True) for i, f in enumerate(frames)],
        "legs": [(c.packets, merge.leg_lost(i), merge.leg_recovered(i))
                 for i, c in enumerate(merge.legs)],
        "filtered": [c.filtered for c in merge.legs],
        "lost": merge.lost + reader.depkt.stats.lost,
        # a datagram handed on after its frame went out (out of order through the merge)
        "late": reader.depkt.stats.late + reader.depkt.stats.reordered,
        "placed": reader.depkt.stats.placed,
        "packets": len(wire),
    }


def check(r: dict[str, Any], sc: Scenario) -> None:
    assert [f[:3] for f in r["frames"]] == r["want"]
    assert r["lost"] == 0
    assert r["late"] == 0
    n = r["packets"]
    for leg in (0, 1):
        dropped = len(sc.drop[leg])
        assert r["legs"][leg] == (n - dropped, dropped, dropped)


def scenarios() -> dict[str, Scenario]:
    rnd = random.Random(2022_7)
    n = FRAMES * 16
    loss_a = set(rnd.sample(range(n), 14))
    loss_b = set(rnd.sample(sorted(set(range(n)) - loss_a), 14))
    return {
        "clean, first leg leads": Scenario((set(), set()), [0]),
        "clean, second leg leads": Scenario((set(), set()), [1]),
        "each leg loses its own, leads by turns": Scenario(
            (loss_a, loss_b), [rnd.randrange(2) for _ in range(n)]),
        "first leg out for two frames": Scenario((set(range(32, 64)), set()), [0]),
        "second leg two chunks behind, both losing": Scenario((loss_a, loss_b), [0], 2),
        "both legs queued together, leads by turns, both losing": Scenario(
            (loss_a, loss_b), [rnd.randrange(2) for _ in range(n)],
            pause=[rnd.random() < 0.4 for _ in range(97)]),
    }


SCENARIOS = scenarios()


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel-filter", "merge-only"])
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_split_and_copying_paths_agree(name: str, kernel: bool) -> None:
    """The same frames and per-leg counters whichever path reads, and whether the kernel
    filter drops the second copies or the merge does."""
    if kernel:
        require_root("an eBPF socket filter (CAP_BPF)")
    sc = SCENARIOS[name]
    split = await run(sc, split=True, kernel=kernel)
    check(split, sc)
    copying = await run(sc, split=False, kernel=kernel)
    check(copying, sc)
    assert split["frames"] == copying["frames"]
    assert split["legs"] == copying["legs"]
    assert copying["placed"] == 0
    if not kernel:
        assert split["filtered"] == copying["filtered"] == [0, 0]


async def test_the_kernel_drops_the_copies_of_the_later_leg() -> None:
    require_root("an eBPF socket filter (CAP_BPF)")
    sc = SCENARIOS["clean, first leg leads"]
    r = await run(sc, split=True)
    check(r, sc)
    # every copy of the second leg came after the first's: none was read
    assert r["filtered"] == [0, r["packets"]]


async def test_the_leading_leg_lands_in_place() -> None:
    sc = SCENARIOS["clean, first leg leads"]
    r = await run(sc, split=True)
    check(r, sc)
    # after the first batches (sequence numbers, payload size), payloads land in place
    assert r["placed"] > r["packets"] // 2
    assert np.all([f[2] for f in r["frames"]])
