"""ST 2022-7 on the control plane: per-leg stats, metrics, leg_silent/leg_back events.

A real :class:`~rtstream.sender.Sender` with a second destination and a real
:class:`~rtstream.receiver.Receiver` on 127.0.0.1: leg 1 goes straight to the receiver,
leg 2 through a relay (tests/net/relay.py) that cuts it for 0.6 s mid-stream. The
receiver loses nothing; its per-leg counters say what leg 2 lost; the Prometheus
exposition carries them; the MQTT monitor (:class:`~rtstream.control.wiring.ReceiverNode`)
publishes ``leg_silent`` then ``leg_back`` for leg 2 only; the status line says
``leg 2 DOWN`` while it is cut.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from rtstream.commands.receive import legs_status
from rtstream.control.metrics import Registry
from rtstream.control.mqtt import EventKind
from rtstream.control.observe import observe_receiver
from rtstream.control.wiring import LegMonitor, ReceiverNode
from rtstream.receiver import ItemKind, Receiver, ReceiverConfig
from rtstream.sender import Sender, load_sender_config
from tests.control.test_observe import parse
from tests.net.relay import UdpRelay
from tests.peers import free_port

FRAMES = 60


class Recorder:
    """A control plane that keeps what it is asked to publish."""

    def __init__(self) -> None:
        self.events: list[tuple[EventKind, dict[str, Any]]] = []

    def publish_event(self, kind: EventKind | str, /, **fields: Any) -> None:
        self.events.append((EventKind(kind), fields))

    def __getattr__(self, name: str) -> Any:  # everything else: accepted, ignored
        return lambda *a, **k: None


def test_leg_outage_counters_metrics_events_and_status(tmp_path: Path) -> None:
    base = free_port(count=6, step=2)  # leg 1: base, base+2; leg 2 (receiver side): base+4, +6
    relay_in = base + 8  # the sender's leg 2 goes here, video and metadata (+8, +10)
    cfg = load_sender_config(None, {
        "source": "testsrc", "frames": FRAMES, "video": {"width": 320, "height": 240, "fps": 30,
                                                         "depth": 8},
        "network": {"dest": "127.0.0.1", "port": base,
                    "redundant": {"dest": "127.0.0.1", "port": relay_in}}})
    sdp_text = ""

    async def main() -> tuple[int, dict[str, Any], list[dict[str, Any]], list[str | None]]:
        nonlocal sdp_text
        async with Sender(cfg) as tx:
            # the receiver reads leg 2 on base+4.., where the relay delivers
            sdp_text = tx.sdp_text().replace(f"m=video {relay_in} ", f"m=video {base + 4} ")
            sdp_text = sdp_text.replace(f"m=application {relay_in + 2} ",
                                        f"m=application {base + 6} ")
            (tmp_path / "dup.sdp").write_text(sdp_text)
            rx_cfg = ReceiverConfig(sdp=str(tmp_path / "dup.sdp"))
            async with Receiver(rx_cfg) as rx:
                plane = Recorder()
                node = ReceiverNode(rx, plane)  # type: ignore[arg-type]
                samples: list[dict[str, Any]] = []
                status: list[str | None] = []
                frames = 0

                async def look() -> None:
                    while True:
                        await asyncio.sleep(0.1)
                        node.check(time.monotonic(), 0.1)
                        st = rx.stats
                        samples.append(st)
                        status.append(legs_status(st))

                # both legs are reported silent before the sender starts, so both count
                # that silence (under load the sender could beat the first leg poll)
                async with asyncio.timeout(10):
                    while any(leg["silences"] < 1 for leg in rx.stats["flows"]["VID"]["legs"]):
                        await asyncio.sleep(0.02)
                watcher = asyncio.create_task(look())
                run = asyncio.create_task(tx.run())
                try:
                    async with asyncio.timeout(20):
                        async for item in rx:
                            if item.kind is ItemKind.VIDEO:
                                frames += 1
                                if frames == FRAMES:
                                    break
                    await run
                    await asyncio.sleep(0.3)
                finally:
                    watcher.cancel()
                    run.cancel()
                node.check(time.monotonic(), 0.1)
                return frames, rx.stats, [dict(e[1], kind=e[0].value) for e in plane.events], status

    relay = UdpRelay({relay_in: base + 4, relay_in + 2: base + 6}, outage_s=0.6,
                     outage_trigger=relay_in, outage_after=96 * 20)  # about frame 20 of 60
    with relay:
        frames, stats, events, status = asyncio.run(main())
    cut = relay.report(relay_in).outage_dropped
    assert len(cut) > 0.4 * 30 * 96  # ~0.6 s of a 96-packet-per-frame flow
    assert frames == FRAMES and stats["packets_lost"] == 0
    vid = stats["flows"]["VID"]
    red, blue = vid["legs"]
    assert (red["mid"], blue["mid"]) == ("VID", "VID2")
    assert red["lost"] == 0
    assert blue["lost"] == len(cut) and blue["recovered"] == len(cut)
    # both legs were silent before the sender started and after it stopped; leg 2 once more
    assert blue["silences"] == red["silences"] + 1
    # MQTT events: the cut of leg 2 (not missing: it had delivered), then leg 2 back; the
    # only "silent, not missing" leg events before the end of the stream are leg 2's
    vid_events = [e for e in events if e["kind"].startswith("leg_") and e["flow"] == "VID"]
    cut_events = [e for e in vid_events if e["kind"] == "leg_silent" and not e["missing"]]
    assert cut_events, vid_events
    assert cut_events[0]["leg"] == 2 and cut_events[0]["mid"] == "VID2"
    after = vid_events[vid_events.index(cut_events[0]) + 1:]
    assert {"kind": "leg_back", "leg": 2} in [{"kind": e["kind"], "leg": e["leg"]} for e in after]
    # the status line while it was cut, and before and after
    assert "legs 1+2" in status and "leg 2 DOWN" in status
    assert status.index("legs 1+2") < status.index("leg 2 DOWN")
    # Prometheus: the same counters per flow and leg
    reg = Registry()

    class Frozen:
        def __init__(self, st: dict[str, Any]) -> None:
            self.stats = st

        def latencies_since(self, seen: int) -> tuple[Any, int]:
            import numpy as np

            return np.zeros(0), seen

    observe_receiver(reg, Frozen(stats))  # type: ignore[arg-type]
    exp = parse(reg.render())
    assert exp.value("rtstream_leg_packets_lost_total", flow="VID", leg="2") == len(cut)
    assert exp.value("rtstream_leg_packets_recovered_total", flow="VID", leg="2") == len(cut)
    assert exp.value("rtstream_leg_packets_total", flow="VID", leg="1") == red["packets"]
    assert exp.value("rtstream_leg_silences_total", flow="VID", leg="2") == blue["silences"]


def test_leg_monitor_reports_short_outages_and_missing_legs() -> None:
    mon = LegMonitor()

    def flows(state: str, silences: int, packets: int = 10) -> dict[str, Any]:
        return {"VID": {"legs": [
            {"leg": 1, "mid": "VID", "state": "up", "silences": 0, "packets": 10, "lost": 0,
             "recovered": 0},
            {"leg": 2, "mid": "VID2", "state": state, "silences": silences, "packets": packets,
             "lost": 7, "recovered": 0}]}}

    assert mon.update(flows("up", 0)) == []
    # an outage shorter than the monitor's interval: silent and back in one look
    assert [k for k, _ in mon.update(flows("up", 1))] == [EventKind.LEG_SILENT, EventKind.LEG_BACK]
    assert mon.update(flows("silent", 2))[0][1] == {"flow": "VID", "leg": 2, "mid": "VID2",
                                                     "missing": False, "lost": 7}
    assert mon.update(flows("silent", 2)) == []
    assert [k for k, _ in mon.update(flows("up", 2))] == [EventKind.LEG_BACK]
    fresh = LegMonitor()
    (kind, fields), = fresh.update(flows("missing", 1, packets=0))
    assert kind is EventKind.LEG_SILENT and fields["missing"] is True
