"""``rtstream demo`` run as ``make demo`` runs it: a subprocess in a fresh directory.

The first test uses nothing but defaults (plus ``--duration``, ``--snapshot-every`` and a
free viewer port so parallel runs do not collide): the printed URL answers 200 with its
token and 401 without, and the embedded archive in ``./archive`` receives the snapshots.
The second switches to "real services" -- an archive elsewhere (``--pacs``) and a
mosquitto broker (``--mqtt``) -- takes a snapshot by MQTT command and stops with Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import numpy as np
import pydicom
import pytest

from rtstream.pacs.archive import Archive
from tests.control.conftest import Broker

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "rtstream"
RTSTREAM = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "rtstream"]
URL = re.compile(r"rtstream demo: open (http://\S+)")


class Demo:
    """The demo process with its output collected by a thread."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*RTSTREAM, "--log-level", "WARNING", "demo", *args], cwd=cwd,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def url(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = URL.search(self.output)
            if m:
                return m.group(1)
            assert self.proc.poll() is None, self.output
            time.sleep(0.05)
        raise AssertionError(f"no viewer URL printed:\n{self.output}")

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(5)
        return rc


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[Broker]:
    """A mosquitto on a free loopback port (tests/control/conftest.py), stopped by PID."""
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_make_demo_defaults_serve_the_viewer_and_fill_the_archive(tmp_path: Path) -> None:
    demo = Demo(tmp_path, "--duration", "8", "--snapshot-every", "1",
                "--http", "127.0.0.1:0")
    url = demo.url()
    assert url.startswith("http://127.0.0.1:") and "token=" in url
    assert status_of(url) == 200
    bare = url.split("?", 1)[0]
    assert status_of(bare) == 401
    assert status_of(bare + "?token=not-the-token") == 401
    assert demo.wait(90) == 0, demo.output
    files = sorted((tmp_path / "archive").glob("*/*/*.dcm"))
    assert files, demo.output
    ds = pydicom.dcmread(files[0])
    assert ds.PatientID == "RTS-DEMO"
    assert ds.Rows == 720 and ds.Columns == 1280  # the default 1280x720
    assert np.asarray(ds.pixel_array).std() > 0  # a real picture, not a blank frame
    summary = demo.output.strip().splitlines()[-1]
    m = re.search(r"sent (\d+) frames, received (\d+)", summary)
    assert m and int(m.group(2)) > 0, demo.output
    assert "Traceback" not in demo.output


def test_demo_with_pacs_and_mqtt_snapshot_command_then_ctrl_c(
    tmp_path: Path, mqtt_broker: Broker
) -> None:
    broker = mqtt_broker
    with Archive(tmp_path / "pacs", 0, "PACS") as pacs:
        demo = Demo(tmp_path, "--pacs", pacs.target, "--mqtt", broker.url, "--node", "demo-t",
                    "--http", "127.0.0.1:0", "--video", "320x240@30")
        demo.url()

        async def operate() -> dict[str, object]:
            client = aiomqtt.Client("127.0.0.1", broker.port, identifier="demo-operator",
                                    socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
            async with client:
                await client.subscribe("rtstream/demo-t/#", qos=1)
                messages = client.messages
                reply: dict[str, object] = {}
                async with asyncio.timeout(90):
                    # the node is there once its retained status says online
                    async for msg in messages:
                        assert isinstance(msg.payload, bytes | bytearray)
                        if (str(msg.topic) == "rtstream/demo-t/status"
                                and json.loads(msg.payload)["state"] == "online"):
                            break
                    for n in range(100):  # until a complete frame has arrived
                        await client.publish("rtstream/demo-t/cmd", json.dumps(
                            {"id": f"d{n}", "action": "snapshot"}), qos=1)
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(10):
                                async for msg in messages:
                                    assert isinstance(msg.payload, bytes | bytearray)
                                    if str(msg.topic) == f"rtstream/demo-t/reply/d{n}":
                                        reply = json.loads(msg.payload)
                                        break
                        if reply.get("ok"):
                            return reply
                        await asyncio.sleep(0.2)
                return reply

        reply = asyncio.run(operate())
        assert reply.get("ok") is True, (reply, demo.output)
        uid = str(reply["sop_instance_uid"])
        assert pacs.wait_for(1, 30)
        assert [p.stem for p in pacs.files()] == [uid]
        demo.proc.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0, demo.output
    assert "stopping" in demo.output
    assert not (tmp_path / "archive").exists()  # --pacs: no embedded archive
    assert "Traceback" not in demo.output
