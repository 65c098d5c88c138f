"""The control plane wired to a real sender and receiver, against a real mosquitto.

An in-process :class:`~rtstream.sender.Sender` (small frames, loopback) feeds an
in-process :class:`~rtstream.receiver.Receiver` that stores into a folder; a test client
(aiomqtt) plays the operator: it sends commands on ``rtstream/<node>/cmd`` and reads
``reply/<id>`` and ``events``. The CLI test runs ``rtstream send`` and ``rtstream receive``
with ``--mqtt`` as a user would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pydicom
import pytest

from rtstream.control.mqtt import EventKind, MqttConfig
from rtstream.control.wiring import (
    ActivityMonitor,
    LossMonitor,
    SenderNode,
    WiringConfig,
    control_for_receiver,
    open_plane,
)
from rtstream.receiver import ItemKind, Receiver, ReceiverConfig
from rtstream.sender import Sender, load_sender_config
from tests.control.conftest import Broker
from tests.peers import free_port

RTSTREAM = [sys.executable, "-m", "rtstream", "--log-level", "WARNING"]


# -- counters -> events ---------------------------------------------------------------------


def test_loss_monitor_alarms_once_and_clears_after_clean_windows() -> None:
    mon = LossMonitor(ratio=0.01, clear_after=2)
    assert mon.update({"VID": {"packets": 1000, "packets_lost": 0}}, 1.0) == []
    # 5 lost of 105 in the window: above 1 %
    ev = mon.update({"VID": {"packets": 1100, "packets_lost": 5}}, 1.0)
    assert ev == [(EventKind.LOSS_ALARM,
                   {"flow": "VID", "lost": 5, "ratio": round(5 / 105, 6), "window_s": 1.0})]
    assert mon.alarmed == {"VID"}
    # still losing: no second alarm
    assert mon.update({"VID": {"packets": 1200, "packets_lost": 9}}, 1.0) == []
    assert mon.update({"VID": {"packets": 1300, "packets_lost": 9}}, 1.0) == []
    assert mon.update({"VID": {"packets": 1400, "packets_lost": 9}}, 1.0) == [
        (EventKind.LOSS_CLEARED, {"flow": "VID"})]
    # below the ratio: no alarm
    assert mon.update({"VID": {"packets": 101400, "packets_lost": 10}}, 1.0) == []


def test_activity_monitor_started_and_stopped_by_silence() -> None:
    act = ActivityMonitor(silence=2.0)
    assert act.update(0, 0.0) is None
    assert act.update(10, 1.0) == "started"
    assert act.update(20, 2.0) is None
    assert act.update(20, 3.0) is None
    assert act.update(20, 4.0) == "stopped"
    assert act.update(20, 9.0) is None
    assert act.update(21, 10.0) == "started"


# -- helpers ------------------------------------------------------------------------------


class Operator:
    """A test MQTT client subscribed to one node's events and replies."""

    def __init__(self, client: aiomqtt.Client, node: str) -> None:
        self.client = client
        self.node = node
        self.events: list[dict[str, Any]] = []
        self.replies: dict[str, dict[str, Any]] = {}
        self.status: dict[str, Any] = {}
        self._changed = asyncio.Event()

    async def read(self) -> None:
        async for msg in self.client.messages:
            assert isinstance(msg.payload, bytes | bytearray)
            doc = json.loads(msg.payload)
            topic = str(msg.topic)
            if topic.endswith("/events"):
                self.events.append(doc)
            elif "/reply/" in topic:
                self.replies[topic.rsplit("/", 1)[1]] = doc
            elif topic.endswith("/status"):
                self.status = doc
            self._changed.set()

    async def until(self, pred: Callable[[], Any], timeout: float = 15.0) -> Any:
        async with asyncio.timeout(timeout):
            while not (value := pred()):
                self._changed.clear()
                await self._changed.wait()
            return value

    async def command(self, rid: str, action: str, **args: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"id": rid, "action": action}
        if args:
            body["args"] = args
        await self.client.publish(f"rtstream/{self.node}/cmd", json.dumps(body), qos=1)
        reply: dict[str, Any] = await self.until(lambda: self.replies.get(rid), timeout=30)
        return reply

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events]


@contextlib.asynccontextmanager
async def operator(broker: Broker, node: str) -> AsyncIterator[Operator]:
    client = aiomqtt.Client(
        "127.0.0.1", broker.port, identifier=f"operator-{node}",
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    async with client:
        await client.subscribe(f"rtstream/{node}/#", qos=1)
        op = Operator(client, node)
        reader = asyncio.create_task(op.read())
        try:
            yield op
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


def small_sender_config(port: int, **extra: Any) -> Any:
    return load_sender_config(None, {
        "source": "testsrc",
        "video": {"width": 160, "height": 120, "fps": 30, "depth": 8},
        "network": {"dest": "127.0.0.1", "port": port},
        "context": {"patient_name": "Wiring^Test", "patient_id": "RTS-WIRE"},
        **extra,
    })


async def consume(rx: Receiver, counter: list[int]) -> None:
    async for item in rx:
        if item.kind is ItemKind.VIDEO:
            counter[0] += 1


def mqtt_config(broker: Broker, node: str, **options: Any) -> MqttConfig:
    options.setdefault("stats_interval", 0.5)
    options.setdefault("reconnect_min", 0.1)
    options.setdefault("reconnect_max", 0.5)
    return MqttConfig.from_url(broker.url, node=node, **options)


# -- receiver node --------------------------------------------------------------------------


async def test_receiver_snapshot_stream_stop_and_start(broker: Broker, tmp_path: Path) -> None:
    port = free_port(count=7, step=2)
    cfg = small_sender_config(port)
    async with Sender(cfg) as tx:
        sdp = tmp_path / "tx.sdp"
        sdp.write_text(tx.sdp_text())
        rcfg = ReceiverConfig(sdp=str(sdp), store_dir=tmp_path / "archive",
                              outbox=tmp_path / "outbox", pairing_wait_frames=30)
        send = asyncio.create_task(tx.run())
        async with operator(broker, "rx1") as op, Receiver(rcfg) as rx:
            frames = [0]
            eat = asyncio.create_task(consume(rx, frames))
            mcfg = mqtt_config(broker, "rx1")
            wcfg = WiringConfig(monitor_interval=0.2)
            async with control_for_receiver(mcfg, rx, role="receive", config=wcfg):
                await op.until(lambda: op.status.get("state") == "online"
                               and op.status.get("role") == "receive")
                await op.until(lambda: frames[0] >= 5)
                # snapshot: reply with the SOP Instance UID, event with the same UID
                reply = await op.command("snap-1", "snapshot")
                assert reply["ok"] is True, reply
                uid = reply["sop_instance_uid"]
                assert reply["stored"] is True
                assert isinstance(reply["rtp_timestamp"], int)
                stored = await op.until(lambda: [e for e in op.events
                                                 if e["kind"] == "snapshot_stored"])
                assert stored[0]["sop_instance_uid"] == uid
                assert stored[0]["flow"] == "VID"
                assert stored[0]["rtp_timestamp"] == reply["rtp_timestamp"]
                assert "Wiring" not in json.dumps(op.events)  # no patient data in events
                ds = pydicom.dcmread(tmp_path / "archive" / f"{uid}.dcm")
                assert ds.SOPInstanceUID == uid and ds.PatientID == "RTS-WIRE"
                # a bad command is refused and names the member
                bad = await op.command("bad-1", "snapshot", flow="NOPE")
                assert bad["ok"] is False and "NOPE" in bad["error"]
                # stream_stop: the receiver stops reading; packets no longer counted
                await op.until(lambda: "stream_started" in op.kinds())
                reply = await op.command("stop-1", "stream_stop")
                assert reply["ok"] is True and "VID" in reply["changed"]
                stopped = await op.until(lambda: [e for e in op.events
                                                  if e["kind"] == "stream_stopped"])
                assert stopped[0]["reason"] == "command"
                p0 = rx.stats["packets"]
                await asyncio.sleep(0.5)
                assert rx.stats["packets"] == p0
                refused = await op.command("snap-2", "snapshot")
                assert refused["ok"] is False and "stopped" in refused["error"]
                # stream_start: packets flow again
                n_started = op.kinds().count("stream_started")
                reply = await op.command("start-1", "stream_start")
                assert reply["ok"] is True
                await op.until(lambda: op.kinds().count("stream_started") > n_started)
                f0 = frames[0]
                await op.until(lambda: frames[0] >= f0 + 5)
                assert rx.stats["packets"] > p0
                stats = await op.until(lambda: op.status.get("streaming") is True)
                assert stats
            eat.cancel()
            await asyncio.gather(eat, return_exceptions=True)
        send.cancel()
        await asyncio.gather(send, return_exceptions=True)


async def test_broker_down_does_not_stall_the_stream(
    make_broker: Callable[..., Broker], tmp_path: Path
) -> None:
    broker = make_broker()
    port = free_port(count=7, step=2)
    async with Sender(small_sender_config(port)) as tx:
        sdp = tmp_path / "tx.sdp"
        sdp.write_text(tx.sdp_text())
        rcfg = ReceiverConfig(sdp=str(sdp), store_dir=tmp_path / "archive",
                              outbox=tmp_path / "outbox", pairing_wait_frames=30)
        send = asyncio.create_task(tx.run())
        async with Receiver(rcfg) as rx:
            frames = [0]
            eat = asyncio.create_task(consume(rx, frames))
            mcfg = mqtt_config(broker, "rx2", connect_timeout=1.0)
            async with control_for_receiver(mcfg, rx) as node:
                plane: Any = node.plane
                await plane.wait_connected(10)
                while frames[0] < 5:
                    await asyncio.sleep(0.05)
                broker.stop()
                # events and stats pile up in the outbox; the media path goes on
                lost0 = rx.stats["packets_lost"]
                f0 = frames[0]
                t0 = time.monotonic()
                result = await rx.snapshot()
                assert result.ok
                for _ in range(50):
                    plane.publish_stats()
                await asyncio.sleep(1.5)
                elapsed = time.monotonic() - t0
                # 30 fps sender: at least half the frames of the period arrived, none lost
                assert frames[0] - f0 >= int(elapsed * 30 * 0.5), (frames[0] - f0, elapsed)
                assert rx.stats["packets_lost"] == lost0
                assert not plane.connected and plane.outbox.depth() > 0
                # the broker comes back: the queued snapshot event is delivered
                broker.start()
                async with operator(broker, "rx2") as op:
                    await plane.wait_connected(15)
                    # the operator subscribed after the event may have gone: ask again
                    reply = await op.command("snap-after", "snapshot")
                    assert reply["ok"] is True
                    await op.until(lambda: any(
                        e["kind"] == "snapshot_stored"
                        and e["sop_instance_uid"] == reply["sop_instance_uid"]
                        for e in op.events))
            eat.cancel()
            await asyncio.gather(eat, return_exceptions=True)
        send.cancel()
        await asyncio.gather(send, return_exceptions=True)


# -- sender node ----------------------------------------------------------------------------


async def test_sender_stream_stop_and_start(broker: Broker) -> None:
    port = free_port(count=7, step=2)
    cfg = small_sender_config(port)
    mcfg = mqtt_config(broker, "tx1")
    ref: list[SenderNode] = []

    async def handler(cmd: Any) -> Any:
        return await ref[0].handle(cmd)

    async with operator(broker, "tx1") as op:
        async with open_plane(mcfg, handler=handler, stats=lambda: ref[0].stats()) as plane:
            node = SenderNode(cfg, plane)
            ref.append(node)
            run = asyncio.create_task(node.run())
            await op.until(lambda: "stream_started" in op.kinds())
            first_uid = node.sender.sop_instance_uid
            await op.until(lambda: node.sender.stats.frames >= 3)
            reply = await op.command("s1", "stream_stop")
            assert reply == {"id": "s1", "ok": True, "action": "stream_stop", "changed": True}
            assert not node.streaming
            await op.until(lambda: "stream_stopped" in op.kinds())
            reply = await op.command("s2", "stream_start")
            assert reply["ok"] is True and reply["changed"] is True
            assert reply["rtv_sop_instance_uid"] != first_uid  # a new sender: new instance
            await op.until(lambda: op.kinds().count("stream_started") == 2)
            await op.until(lambda: node.sender.stats.frames >= 3)
            snap = await op.command("s3", "snapshot")
            assert snap["ok"] is False and "receiving node" in snap["error"]
            stats = await op.until(lambda: [e for e in op.events if e["kind"] == "stream_started"])
            assert stats[1]["rtv_sop_instance_uid"] == reply["rtv_sop_instance_uid"]
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            await op.until(lambda: op.kinds()[-1] == "stream_stopped")
            assert op.events[-1]["reason"] == "shutdown"


# -- the CLI ----------------------------------------------------------------------------------


async def test_cli_send_and_receive_with_mqtt(broker: Broker, tmp_path: Path) -> None:
    port = free_port(count=7, step=2)
    sdp = tmp_path / "tx.sdp"
    archive = tmp_path / "archive"
    async with operator(broker, "cli-rx") as op:
        tx = subprocess.Popen(
            [*RTSTREAM, "send", "--dest", f"127.0.0.1:{port}", "--video", "160x120@30",
             "--depth", "8", "--sdp-out", str(sdp), "--mqtt", broker.url, "--node", "cli-tx",
             "--duration", "60"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        rx: subprocess.Popen[bytes] | None = None
        try:
            deadline = time.monotonic() + 30
            while not sdp.exists():
                assert tx.poll() is None and time.monotonic() < deadline
                await asyncio.sleep(0.05)
            rx = subprocess.Popen(
                [*RTSTREAM, "receive", "--sdp", str(sdp), "--store-dir", str(archive),
                 "--outbox", str(tmp_path / "outbox"), "--pairing-wait", "30",
                 "--mqtt", broker.url, "--node", "cli-rx", "--duration", "60"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
            await op.until(lambda: op.status.get("state") == "online", timeout=30)
            reply: dict[str, Any] = {}
            for attempt in range(40):  # until the first complete frame has arrived
                reply = await op.command(f"cli-snap-{attempt}", "snapshot")
                if reply["ok"]:
                    break
                await asyncio.sleep(0.25)
            assert reply["ok"] is True, reply
            assert (archive / f"{reply['sop_instance_uid']}.dcm").is_file()
            await op.until(lambda: any(e["kind"] == "snapshot_stored" for e in op.events))
        finally:
            for proc in (rx, tx):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(2)
            for proc in (rx, tx):
                if proc is not None:
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
        assert rx is not None and rx.returncode == 0, rx.stderr.read() if rx.stderr else ""
        assert tx.returncode == 0
        await op.until(lambda: op.status.get("state") == "offline")


@pytest.mark.parametrize("argv", [["--node", "x"], ["--mqtt", "http://h"]])
def test_cli_bad_mqtt_flags_exit_2(argv: list[str]) -> None:
    res = subprocess.run([*RTSTREAM, "receive", "--sdp", "/nonexistent.sdp", *argv],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert "mqtt" in res.stderr.lower() or "--node" in res.stderr
