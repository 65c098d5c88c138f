"""The MQTT control plane against a real mosquitto on 127.0.0.1 (tests/control/conftest.py)."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt
import pytest

from rtstream.control.mqtt import (
    CommandFailed,
    ControlPlane,
    EventKind,
    MessageClass,
    MqttConfig,
    Outbox,
    _Outgoing,
)
from rtstream.control.schema import Action, Command
from rtstream.errors import ConfigError, LocalProtocolError
from tests.control.conftest import Broker
from tests.peers import require_program

ROOT = Path(__file__).resolve().parents[2]
GUARD = 15.0  # seconds: a hang guard for waits, never a measured assertion

FAST = {"reconnect_min": 0.05, "reconnect_max": 0.3, "stats_interval": 0}


class Watcher:
    """A plain aiomqtt subscriber that records (topic, retain, JSON payload)."""

    def __init__(self, port: int, *topics: str, qos: int = 1, **client: Any) -> None:
        self.port = port
        self.qos = qos
        self.topics = topics or ("rtstream/#",)
        self.client_kw = client
        self.messages: list[tuple[str, bool, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self.client: aiomqtt.Client | None = None

    async def __aenter__(self) -> Watcher:
        self.client = aiomqtt.Client("127.0.0.1", self.port, **self.client_kw)
        await self.client.__aenter__()
        for t in self.topics:
            await self.client.subscribe(t, qos=self.qos)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.client is not None
        async for m in self.client.messages:
            raw = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = raw
            self.messages.append((str(m.topic), m.retain, doc))

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None and self.client is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.client.__aexit__(et, e, tb)
        except aiomqtt.MqttError:
            pass

    def on(self, topic: str) -> list[Any]:
        return [doc for t, _, doc in self.messages if t == topic]

    async def wait(self, topic: str, pred: Callable[[Any], bool] = lambda d: True,
                   count: int = 1) -> list[Any]:
        async def poll() -> list[Any]:
            while True:
                hits = [d for d in self.on(topic) if pred(d)]
                if len(hits) >= count:
                    return hits
                await asyncio.sleep(0.01)

        return await asyncio.wait_for(poll(), GUARD)


async def until(cond: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), GUARD)


def cfg_for(broker: Broker, node: str = "n1", **kw: Any) -> MqttConfig:
    return MqttConfig.from_url(broker.url, node=node, **{**FAST, **kw})


# -- configuration -------------------------------------------------------------------------


def test_config_from_url() -> None:
    c = MqttConfig.from_url("mqtt://broker.example:1884", node="or-3")
    assert (c.host, c.port, c.tls, c.username, c.password) == ("broker.example", 1884, False,
                                                                None, None)
    assert c.topic("cmd") == "rtstream/or-3/cmd"
    c = MqttConfig.from_url("mqtt://u%40x:p%3Aw%2Fd@10.0.0.1", node="n")
    assert (c.port, c.username, c.password) == (1883, "u@x", "p:w/d")
    assert "p:w/d" not in repr(c) and "p:w/d" not in c.display()
    c = MqttConfig.from_url("mqtts://h/", node="n", qos_stats=1)
    assert (c.port, c.tls, c.qos_stats) == (8883, True, 1)
    c = MqttConfig.from_url("mqtts://h:1?insecure=yes", node="n")
    assert c.tls_insecure


@pytest.mark.parametrize(
    ("url", "node", "key"),
    [
        ("http://h:1883", "n", "mqtt url"),
        ("mqtt://", "n", "mqtt url"),
        ("mqtt://h:99999", "n", "mqtt url"),
        ("mqtt://h:port", "n", "mqtt url"),
        ("mqtt://h:0", "n", "mqtt port"),
        ("mqtt://h/topic", "n", "mqtt url"),
        ("mqtt://h?foo=1", "n", "mqtt url"),
        ("mqtt://h?ca=/etc/hosts", "n", "ca_file"),
        ("mqtts://h?ca=/nonexistent.pem", "n", "ca_file"),
        ("mqtts://h?insecure=maybe", "n", "mqtt url insecure"),
        ("mqtt://:secret@h", "n", "mqtt password"),
        ("mqtt://h", "a/b", "node"),
        ("mqtt://h", "#", "node"),
        ("mqtt://h", "", "node"),
    ],
)
def test_config_errors_name_the_key(url: str, node: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        MqttConfig.from_url(url, node=node)
    assert info.value.key == key


def test_config_errors_hide_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        MqttConfig.from_url("http://user:hunter2@h", node="n")
    assert "hunter2" not in str(info.value)


def test_config_field_validation() -> None:
    cases: list[tuple[dict[str, Any], str]] = [({"qos_events": 3}, "qos_events"), ({"keepalive": 1}, "keepalive"),
                    ({"max_events": 0}, "max_events"), ({"stats_interval": -1}, "stats_interval"),
                    ({"reconnect_min": 2, "reconnect_max": 1}, "reconnect_min/reconnect_max")]
    for kw, key in cases:
        with pytest.raises(ConfigError) as info:
            MqttConfig(host="h", node="n", **kw)
        assert info.value.key == key


# -- the outbox (no broker) --------------------------------------------------------------


def _msg(cls: MessageClass, n: int) -> _Outgoing:
    return _Outgoing(cls, "t", str(n).encode(), 0, False)


def test_outbox_caps_priority_and_requeue() -> None:
    box = Outbox(max_events=3, max_stats=2, max_replies=2)
    for i in range(5):
        box.put(_msg(MessageClass.STATS, i))
        box.put(_msg(MessageClass.EVENT, i))
    box.put(_msg(MessageClass.REPLY, 0))
    box.put(_msg(MessageClass.STATUS, 0))
    box.put(_msg(MessageClass.STATUS, 1))
    assert box.depth() == 1 + 1 + 3 + 2
    assert box.dropped == {MessageClass.STATUS: 1, MessageClass.REPLY: 0,
                           MessageClass.EVENT: 2, MessageClass.STATS: 3}
    order = []
    while (m := box.pop()) is not None:
        order.append((m.cls, int(m.payload)))
    assert order == [(MessageClass.STATUS, 1), (MessageClass.REPLY, 0),
                     (MessageClass.EVENT, 2), (MessageClass.EVENT, 3), (MessageClass.EVENT, 4),
                     (MessageClass.STATS, 3), (MessageClass.STATS, 4)]
    box.put(_msg(MessageClass.EVENT, 9))
    first = box.pop()
    assert first is not None
    box.put(_msg(MessageClass.EVENT, 10))
    box.requeue(first)  # an interrupted publish goes first again
    assert [int(m.payload) for m in (box.pop(), box.pop()) if m] == [9, 10]


async def test_publish_event_refuses_caller_mistakes(broker: Broker) -> None:
    cp = ControlPlane(cfg_for(broker))
    with pytest.raises(LocalProtocolError):
        cp.publish_event("no_such_kind")
    with pytest.raises(LocalProtocolError):
        cp.publish_event(EventKind.LOSS_ALARM, seq=3)
    with pytest.raises(LocalProtocolError):
        cp.publish_event(EventKind.LOSS_ALARM, flow=object())
    assert cp.outbox.depth(MessageClass.EVENT) == 0
    assert not inspect.iscoroutinefunction(cp.publish_event)
    assert not inspect.iscoroutinefunction(cp.publish_stats)
    assert not inspect.iscoroutinefunction(cp.update_status)


# -- against mosquitto ------------------------------------------------------------------


async def test_status_events_stats(broker: Broker) -> None:
    calls = 0

    def stats() -> Mapping[str, Any]:
        nonlocal calls
        calls += 1
        return {"flows": {"video0": {"packets": 10 * calls, "lost": 0}}}

    cfg = cfg_for(broker, stats_interval=0.05)
    async with ControlPlane(cfg, stats=stats, status={"role": "receiver"}) as cp:
        await cp.wait_connected(GUARD)
        # A subscriber arriving later still learns the node is online (retained).
        async with Watcher(broker.port) as w:
            (status,) = await w.wait("rtstream/n1/status")
            assert status["state"] == "online" and status["role"] == "receiver"
            assert status["node"] == "n1"
            assert w.messages[0][1] is True  # delivered as a retained message
            cp.publish_event(EventKind.SNAPSHOT_STORED, sop_instance_uid="1.2.826.0.1.3680043.9",
                             flow="video0")
            cp.publish_event("loss_alarm", flow="video0", lost=12, ratio=0.012)
            events = await w.wait("rtstream/n1/events", count=2)
            assert [e["kind"] for e in events] == ["snapshot_stored", "loss_alarm"]
            assert events[0]["sop_instance_uid"] == "1.2.826.0.1.3680043.9"
            assert events[1]["seq"] == events[0]["seq"] + 1
            stats_msgs = await w.wait("rtstream/n1/stats", count=3)
            packets = [s["flows"]["video0"]["packets"] for s in stats_msgs]
            assert packets == sorted(packets) and len(set(packets)) == len(packets)
            assert stats_msgs[-1]["mqtt"]["connected"] is True
            cp.update_status(viewer="http://127.0.0.1:8080/")
            await w.wait("rtstream/n1/status", lambda d: d.get("viewer") is not None)
        # TCP_NODELAY is on the client socket (DESIGN.md §6).
        sock = cp._client._client.socket() if cp._client else None  # noqa: SLF001
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    # A clean shutdown replaces the retained status with offline.
    async with Watcher(broker.port) as w:
        (status,) = await w.wait("rtstream/n1/status")
        assert status["state"] == "offline" and status["reason"] == "shutdown"


async def test_commands_and_replies(broker: Broker) -> None:
    seen: list[Command] = []

    async def handler(cmd: Command) -> Mapping[str, Any] | None:
        seen.append(cmd)
        if cmd.action is Action.SNAPSHOT:
            await asyncio.sleep(0)  # a real one awaits the store
            return {"sop_instance_uid": "1.2.3.4.5", "id": "spoof", "ok": False}
        if cmd.action is Action.RECORD_START:
            raise CommandFailed("no recorder on this node")
        if cmd.action is Action.STREAM_STOP:
            raise RuntimeError("patient Doe^John crashed it")
        return None

    async with ControlPlane(cfg_for(broker), handler=handler) as cp, \
            Watcher(broker.port, "rtstream/n1/reply/#", "rtstream/n1/reply") as w:
        await cp.wait_connected(GUARD)
        assert w.client is not None
        send = w.client.publish
        await send("rtstream/n1/cmd", json.dumps({"id": "r-1", "action": "snapshot",
                                                   "args": {"flow": "video0"}}), qos=1)
        await send("rtstream/n1/cmd", json.dumps({"id": "r-2", "action": "record_start"}), qos=1)
        await send("rtstream/n1/cmd", json.dumps({"id": "r-3", "action": "stream_stop"}), qos=1)
        await send("rtstream/n1/cmd", json.dumps({"id": "r-4", "action": "stream_start"}), qos=0)
        await send("rtstream/n1/cmd", json.dumps({"id": "r-5", "action": "reboot"}), qos=1)
        await send("rtstream/n1/cmd", b"\x00garbage", qos=1)
        await send("rtstream/n1/cmd", json.dumps({"id": "a/b", "action": "snapshot"}), qos=1)
        r1 = (await w.wait("rtstream/n1/reply/r-1"))[0]
        assert r1 == {"id": "r-1", "ok": True, "action": "snapshot",
                      "sop_instance_uid": "1.2.3.4.5"}
        r2 = (await w.wait("rtstream/n1/reply/r-2"))[0]
        assert r2 == {"id": "r-2", "ok": False, "action": "record_start",
                      "error": "no recorder on this node"}
        r3 = (await w.wait("rtstream/n1/reply/r-3"))[0]
        assert r3["ok"] is False and r3["error"] == "internal error: RuntimeError"
        assert "Doe" not in json.dumps(r3)
        r4 = (await w.wait("rtstream/n1/reply/r-4"))[0]
        assert r4 == {"id": "r-4", "ok": True, "action": "stream_start"}
        r5 = (await w.wait("rtstream/n1/reply/r-5"))[0]
        assert r5["ok"] is False and r5["error"].startswith("cmd.action: ")
        anon = await w.wait("rtstream/n1/reply", count=2)
        assert all(r["id"] is None and r["ok"] is False for r in anon)
        assert sorted(r["error"].split(":")[0] for r in anon) == ["cmd", "cmd.id"]
        assert [c.id for c in seen] == ["r-1", "r-2", "r-3", "r-4"]
        assert cp.counters.invalid_commands == 3 and cp.counters.failed_commands == 2
        # Without a handler a node answers, it does not ignore.
        cp.set_handler(None)
        await send("rtstream/n1/cmd", json.dumps({"id": "r-6", "action": "snapshot"}), qos=1)
        r6 = (await w.wait("rtstream/n1/reply/r-6"))[0]
        assert r6["ok"] is False and "no commands" in r6["error"]


async def test_events_from_another_thread(broker: Broker) -> None:
    async with ControlPlane(cfg_for(broker)) as cp, Watcher(broker.port) as w:
        await cp.wait_connected(GUARD)

        def worker() -> None:  # e.g. the store thread reporting a stored instance
            for i in range(20):
                cp.publish_event(EventKind.CLIP_STORED, sop_instance_uid=f"1.2.{i}")

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        events = await w.wait("rtstream/n1/events", count=20)
        assert [e["sop_instance_uid"] for e in events] == [f"1.2.{i}" for i in range(20)]


CHILD = """
import asyncio, sys
from rtstream.control.mqtt import ControlPlane, MqttConfig
async def main():
    cfg = MqttConfig.from_url(sys.argv[1], node=sys.argv[2], stats_interval=0)
    async with ControlPlane(cfg) as cp:
        await cp.wait_connected(15)
        print("ready", flush=True)
        await asyncio.sleep(3600)
asyncio.run(main())
"""


async def test_last_will_when_the_process_dies(broker: Broker) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, broker.url, "dying", stdout=subprocess.PIPE,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), GUARD)
        assert line == b"ready\n"
        async with Watcher(broker.port, "rtstream/dying/status") as w:
            await w.wait("rtstream/dying/status", lambda d: d["state"] == "online")
            proc.kill()  # SIGKILL: no DISCONNECT is sent, the broker fires the will
            await proc.wait()
            (will,) = await w.wait("rtstream/dying/status", lambda d: d["state"] == "offline")
            assert will == {"state": "offline", "node": "dying", "reason": "connection lost"}
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    async with Watcher(broker.port, "rtstream/dying/status") as late:  # retained
        (status,) = await late.wait("rtstream/dying/status")
        assert status["state"] == "offline"


async def test_broker_outage_never_blocks_and_recovers(make_broker: Callable[..., Broker]) -> None:
    broker = make_broker(persistence=True)
    cfg = cfg_for(broker, max_events=50, max_stats=3)
    async with Watcher(broker.port, "rtstream/n1/events", identifier="ops-console",
                       clean_session=False):
        pass  # a persistent session: the broker keeps its subscription across restarts
    async with ControlPlane(cfg) as cp:
        await cp.wait_connected(GUARD)
        broker.stop()
        await until(lambda: not cp.connected)
        failures = cp.counters.connect_failures
        # The media path publishes as usual: plain calls, no awaits, nothing raised.
        for i in range(2000):
            cp.publish_event(EventKind.LOSS_ALARM, flow="video0", lost=i)
            if i % 100 == 0:
                cp.publish_stats()
        assert cp.outbox.depth(MessageClass.EVENT) == 50
        assert cp.outbox.depth(MessageClass.STATS) == 3
        assert cp.counters.dropped_events == 2000 - 50
        assert cp.counters.dropped_stats == 20 - 3
        # The session task keeps retrying with back-off meanwhile.
        await until(lambda: cp.counters.connect_failures >= failures + 2)
        assert not cp.connected
        broker.start()
        await cp.wait_connected(GUARD)
        await until(lambda: cp.outbox.depth() == 0)
        assert cp.counters.disconnects == 1 and cp.counters.connects == 2
        async with Watcher(broker.port, "rtstream/n1/events", identifier="ops-console",
                           clean_session=False) as w:
            events = await w.wait("rtstream/n1/events", count=50)
            # The newest 50 survived the outage, in order, none twice.
            assert [e["lost"] for e in events] == list(range(1950, 2000))
        async with Watcher(broker.port, "rtstream/n1/status") as s:
            (status,) = await s.wait("rtstream/n1/status")
            assert status["state"] == "online"  # restated after reconnecting


async def test_credentials(make_broker: Callable[..., Broker]) -> None:
    broker = make_broker(users={"node": "s3cret pass"})
    url = f"mqtt://node:s3cret%20pass@127.0.0.1:{broker.port}"
    async with ControlPlane(MqttConfig.from_url(url, node="auth", **FAST)) as cp:
        await cp.wait_connected(GUARD)
        cp.publish_event(EventKind.STREAM_STARTED)
        await until(lambda: cp.outbox.depth() == 0)
    bad = f"mqtt://node:wrong@127.0.0.1:{broker.port}"
    async with ControlPlane(MqttConfig.from_url(bad, node="auth", **FAST)) as cp:
        await until(lambda: cp.counters.connect_failures >= 2)
        assert not cp.connected and cp.last_error is not None
        assert "authori" in cp.last_error.lower()
        cp.publish_event(EventKind.STREAM_STARTED)  # still never raises
    async with ControlPlane(MqttConfig.from_url(broker.url, node="anon", **FAST)) as cp:
        await until(lambda: cp.counters.connect_failures >= 1)
        assert not cp.connected


# -- a slow subscriber and mosquitto's max_queued_messages --------------------------------


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        b = (await reader.readexactly(1))[0]
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return head, await reader.readexactly(length)


def _utf8(s: str) -> bytes:
    return struct.pack("!H", len(s)) + s.encode()


async def _drain_publishes(reader: asyncio.StreamReader, quiet: float) -> list[tuple[int, bytes]]:
    """PUBLISH packets (packet id, payload) until nothing arrives for ``quiet`` seconds.

    ``quiet`` only ends the read: nothing more can come until we acknowledge.
    """
    out: list[tuple[int, bytes]] = []
    while True:
        try:
            head, body = await asyncio.wait_for(_read_packet(reader), quiet)
        except TimeoutError:
            return out
        assert head >> 4 == 3 and (head >> 1) & 3 == 1  # PUBLISH, QoS 1
        tlen = struct.unpack("!H", body[:2])[0]
        pid = struct.unpack("!H", body[2 + tlen:4 + tlen])[0]
        out.append((pid, body[4 + tlen:]))


async def test_slow_subscriber_loses_what_exceeds_max_queued(
    make_broker: Callable[..., Broker],
) -> None:
    """mosquitto keeps ``max_inflight_messages`` unacknowledged QoS 1 messages in flight to a
    subscriber plus ``max_queued_messages`` queued behind them; newer messages for that
    subscriber are dropped (logged "Outgoing messages are being dropped for client ..."),
    while the publisher is unaffected. The limits hold for every QoS 1 subscriber: even a
    healthy one loses the tail of a burst larger than in-flight + queued (seen here with a
    burst of 40 at 5 + 10), so the broker's ``max_queued_messages`` must exceed the largest
    burst (default 1000). A QoS 0 subscriber is written to directly and gets the burst."""
    broker = make_broker(max_queued_messages=10, max_inflight_messages=5)
    topic = "rtstream/n1/events"
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    try:
        # A subscriber that reads but never acknowledges: MQTT 3.1.1 CONNECT, SUBSCRIBE.
        connect = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + _utf8("slowpoke")
        writer.write(bytes([0x10, len(connect)]) + connect)
        subscribe = struct.pack("!H", 1) + _utf8(topic) + bytes([1])
        writer.write(bytes([0x82, len(subscribe)]) + subscribe)
        await writer.drain()
        assert (await _read_packet(reader)) == (0x20, b"\x00\x00")  # CONNACK accepted
        head, body = await _read_packet(reader)
        assert head == 0x90 and body == b"\x00\x01\x01"  # SUBACK QoS 1
        async with Watcher(broker.port, topic, qos=0) as fast, \
                ControlPlane(cfg_for(broker, max_events=100)) as cp:
            await cp.wait_connected(GUARD)
            for i in range(40):
                cp.publish_event(EventKind.LOSS_ALARM, lost=i)
            await fast.wait(topic, count=40)  # the publisher and others are not held back
            first = await _drain_publishes(reader, quiet=0.5)
            assert len(first) == 5  # max_inflight_messages, unacknowledged
            for pid, _ in first:
                writer.write(bytes([0x40, 2]) + struct.pack("!H", pid))  # PUBACK
            await writer.drain()
            rest = await _drain_publishes(reader, quiet=0.5)
            for pid, _ in rest:
                writer.write(bytes([0x40, 2]) + struct.pack("!H", pid))
            await writer.drain()
            rest += await _drain_publishes(reader, quiet=0.5)
            got = [json.loads(p)["lost"] for _, p in first + rest]
            assert got == list(range(15))  # 5 in flight + 10 queued; 25 dropped
        assert "Outgoing messages are being dropped for client slowpoke" in broker.log_text()
    finally:
        writer.close()


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    openssl = require_program("openssl")
    ca_key, ca = tmp_path / "ca.key", tmp_path / "ca.pem"
    key, csr, cert = tmp_path / "srv.key", tmp_path / "srv.csr", tmp_path / "srv.pem"
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=rtstream test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


async def test_tls(make_broker: Callable[..., Broker], tls_files: tuple[Path, Path, Path]) -> None:
    ca, cert, key = tls_files
    broker = make_broker(tls=(ca, cert, key))
    url = f"mqtts://127.0.0.1:{broker.port}?ca={ca}"
    async with ControlPlane(MqttConfig.from_url(url, node="tls", **FAST)) as cp:
        await cp.wait_connected(GUARD)
        cp.publish_event(EventKind.STREAM_STARTED)
        await until(lambda: cp.outbox.depth() == 0)
    # Without our CA the broker is not trusted: no session, no crash.
    untrusted = f"mqtts://127.0.0.1:{broker.port}"
    async with ControlPlane(MqttConfig.from_url(untrusted, node="tls", **FAST)) as cp:
        await until(lambda: cp.counters.connect_failures >= 1)
        assert not cp.connected
        assert cp.last_error is not None and "certificate" in cp.last_error.lower()


# -- CLI helpers for send/receive/view/demo -------------------------------------------------


def test_cli_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from rtstream.commands._mqtt_args import add_cli_arguments, config_from_args
    from rtstream.control.mqtt import (
        PASSWORD_ENV,
        NullControlPlane,
        default_node,
    )

    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    assert config_from_args(parser.parse_args([]), role="send") is None
    with pytest.raises(ConfigError):
        config_from_args(parser.parse_args(["--node", "x"]), role="send")
    cfg = config_from_args(parser.parse_args(["--mqtt", "mqtt://h:1", "--node", "or-1",
                                              "--stats-interval", "0"]), role="send")
    assert cfg is not None and (cfg.node, cfg.port, cfg.stats_interval) == ("or-1", 1, 0)
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    cfg = config_from_args(parser.parse_args(["--mqtt", "mqtt://bob@h"]), role="view")
    assert cfg is not None and cfg.username == "bob" and cfg.password == "from-env"
    assert cfg.node == default_node("view") and cfg.node.endswith("-view")
    with pytest.raises(ConfigError):
        config_from_args(parser.parse_args(["--mqtt", "ftp://h"]), role="send")
    null = NullControlPlane()
    null.publish_event(EventKind.STREAM_STARTED, flow="v")
    with pytest.raises(LocalProtocolError):
        null.publish_event("nope")
