"""Finding sets reach an MQTT broker (mosquitto) as ``findings`` events: ``rtstream
receive --analyze ... --mqtt`` against ``rtstream send``, both real processes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.control.conftest import Broker
from tests.control.test_wiring import operator
from tests.net.test_analysis import rtstream_send
from tests.peers import require_program

ROOT = Path(__file__).resolve().parents[2]
RTSTREAM = [sys.executable, "-m", "rtstream"]


@pytest.mark.peer("mosquitto")
async def test_findings_events_on_mqtt(broker: Broker, tmp_path: Path) -> None:
    require_program("mosquitto")
    with rtstream_send(tmp_path, "320x240@30") as sdp:
        async with operator(broker, "an-rx") as op:
            proc = await asyncio.create_subprocess_exec(
                *RTSTREAM, "receive", "--sdp", str(sdp), "--frames", "90", "--mqtt",
                broker.url, "--node", "an-rx", "--analyze", "examples/bright_band.py:detect",
                cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            try:
                await op.until(lambda: sum(e["kind"] == "findings" for e in op.events) >= 5,
                               timeout=60)
            finally:
                _, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
    events = [e for e in op.events if e["kind"] == "findings"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    e = events[0]
    assert e["flow"] == "VID" and (e["width"], e["height"]) == (320, 240)
    assert e["findings"][0]["label"] == "bright band" and len(e["findings"][0]["box"]) == 4
    assert isinstance(e["rtp_timestamp"], int) and e["latency_us"] >= 0
    assert "Analysis" not in json.dumps(events)  # no patient data in events
