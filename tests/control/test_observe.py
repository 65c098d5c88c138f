"""Observability end to end: /metrics of send, receive, view and the demo scraped during a
short loopback stream and parsed line by line; /healthz; JSON log lines.

The parser below accepts only what the text exposition format 0.0.4 allows (HELP, TYPE,
samples with a valid name, labels and value), so a malformed line fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from rtstream.control.metrics import CONTENT_TYPE, Registry, metrics_handler
from rtstream.control.observe import (
    FRAME_READY_BUCKETS,
    JsonLogFormatter,
    ReceiverHealth,
    observe_receiver,
    parse_listen,
    sender_registry,
    serve_receiver,
)
from rtstream.errors import ConfigError, LocalProtocolError
from rtstream.net.sdp_http import SdpHttpServer
from rtstream.receiver import ItemKind, Receiver, ReceiverConfig
from rtstream.sender import Sender, load_sender_config
from tests.peers import free_port, stop, wait_for_tcp

ROOT = Path(__file__).resolve().parents[2]
RTSTREAM = [sys.executable, "-m", "rtstream"]
TOKEN = "observe-token-123"

# -- a strict parser of the exposition ----------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)')
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}

Key = tuple[str, frozenset[tuple[str, str]]]


@dataclass
class Exposition:
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    samples: dict[Key, float] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def by_label(self, name: str, label: str, **fixed: str) -> dict[str, float]:
        """{label value: sample} of family ``name`` with the other labels ``fixed``."""
        out: dict[str, float] = {}
        for (n, labels), v in self.samples.items():
            d = dict(labels)
            if n == name and label in d and all(d.get(k) == x for k, x in fixed.items()):
                out[d[label]] = v
        return out


def parse(text: str) -> Exposition:
    assert text.endswith("\n")
    exp = Exposition()
    family = ""
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name), line
            exp.helps[name] = help_text
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name) and kind in _TYPES, line
            assert name not in exp.types, f"TYPE twice for {name}"
            family = name
            exp.types[name] = kind
            continue
        assert not line.startswith("#"), line
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, _, body, raw = m.groups()
        base = re.sub(r"_(bucket|sum|count)$", "", name) if exp.types.get(family) == "histogram" \
            else name
        assert base == family, f"{name} outside its family block {family}"
        labels: list[tuple[str, str]] = []
        rest = body or ""
        while rest:
            lm = _LABEL.match(rest)
            assert lm, f"bad labels in {line!r}"
            labels.append((lm.group(1), lm.group(2)))
            rest = rest[lm.end():]
        value = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(raw)
        key = (name, frozenset(labels))
        assert key not in exp.samples, f"duplicate sample {line!r}"
        exp.samples[key] = float(raw) if value is None else value
    return exp


def check_histogram(exp: Exposition, name: str) -> tuple[list[float], float, float]:
    """Cumulative bucket counts (ending at +Inf), sum and count, checked for consistency."""
    assert exp.types[name] == "histogram"
    buckets = exp.by_label(f"{name}_bucket", "le")
    les = sorted(buckets, key=lambda x: math.inf if x == "+Inf" else float(x))
    assert les[-1] == "+Inf"
    assert [float(x) for x in les[:-1]] == list(FRAME_READY_BUCKETS)
    cum = [buckets[x] for x in les]
    assert cum == sorted(cum)
    count = exp.value(f"{name}_count")
    assert cum[-1] == count
    return cum, exp.value(f"{name}_sum"), count


# -- helpers --------------------------------------------------------------------------------


def small_sender(port: int, **extra: Any) -> Any:
    return load_sender_config(None, {
        "source": "testsrc",
        "video": {"width": 160, "height": 120, "fps": 30, "depth": 8},
        "audio": {"enabled": True},
        "network": {"dest": "127.0.0.1", "port": port},
        "context": {"patient_name": "Observe^Test", "patient_id": "RTS-OBS"},
        **extra,
    })


async def scrape(url: str, **headers: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.text()


async def until(pred: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)


async def settled(rx: Receiver) -> None:
    """Wait until no packet has arrived for a while (the sender has finished)."""
    last, quiet = -1, 0
    async with asyncio.timeout(20):
        while quiet < 5:
            now = rx.stats["packets"]
            quiet = quiet + 1 if now == last else 0
            last = now
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def consuming(rx: Receiver) -> AsyncIterator[list[int]]:
    seen = [0]

    async def run() -> None:
        async for item in rx:
            if item.kind is ItemKind.VIDEO:
                seen[0] += 1

    task = asyncio.create_task(run())
    try:
        yield seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- the receiver and the sender, in process -------------------------------------------------


async def test_receiver_and_sender_metrics_match_their_stats(tmp_path: Path) -> None:
    port = free_port(count=7, step=2)
    async with Sender(small_sender(port, frames=45)) as tx:
        sdp = tmp_path / "tx.sdp"
        sdp.write_text(tx.sdp_text())
        tx_http = SdpHttpServer(tx.sdp, "127.0.0.1", 0, metrics=metrics_handler(sender_registry(tx)))
        await tx_http.start()
        try:
            async with Receiver(ReceiverConfig(sdp=str(sdp))) as rx, \
                    serve_receiver(("127.0.0.1", 0), rx) as srv, consuming(rx) as seen:
                assert srv is not None
                status, ctype, text = await scrape(srv.url + "/healthz")
                assert status == 200 and json.loads(text)["state"] == "starting"
                run = asyncio.create_task(tx.run())
                await until(lambda: seen[0] >= 8)
                status, ctype, text = await scrape(srv.url + "/metrics")
                assert status == 200 and ctype == CONTENT_TYPE
                first = parse(text)
                health = json.loads((await scrape(srv.url + "/healthz"))[2])
                assert health["state"] == "receiving" and health["packets"] > 0
                await until(lambda: seen[0] >= 25)
                second = parse((await scrape(srv.url + "/metrics"))[2])
                tx_mid = parse((await scrape(f"http://127.0.0.1:{tx_http.port}/metrics"))[2])
                await run
                await settled(rx)
                final = parse((await scrape(srv.url + "/metrics"))[2])
                stats = rx.stats
                tx_final = parse((await scrape(f"http://127.0.0.1:{tx_http.port}/metrics"))[2])
        finally:
            await tx_http.stop()

    # names and types
    for name in ("rtstream_packets_total", "rtstream_packets_lost_total",
                 "rtstream_packets_malformed_total", "rtstream_frames_total",
                 "rtstream_grains_total", "rtstream_grains_dropped_total",
                 "rtstream_metadata_matched_total", "rtstream_metadata_unmatched_total",
                 "rtstream_frames_delivered_total"):
        assert final.types[name] == "counter", name
    assert final.types["rtstream_outbox_depth"] == "gauge"
    assert final.types["rtstream_store_failures_total"] == "counter"
    # one label per flow of the SDP, counters increasing while the stream runs
    flows = {"VID", "VMETA", "AUD", "AMETA", "REND"}  # REND: the rendition flow (audio + video)
    assert set(final.by_label("rtstream_packets_total", "flow")) == flows
    assert set(first.by_label("rtstream_packets_total", "flow")) == flows
    for f in flows:
        a, b, c = (e.value("rtstream_packets_total", flow=f) for e in (first, second, final))
        assert 0 < a < b <= c, (f, a, b, c)
    assert first.value("rtstream_frames_total", flow="VID", complete="true") < \
        second.value("rtstream_frames_total", flow="VID", complete="true")
    # after the stream: exactly the receiver's own counters
    per_flow = stats["flows"]
    for f in flows:
        s = per_flow[f]
        assert final.value("rtstream_packets_total", flow=f) == s["packets"]
        assert final.value("rtstream_packets_lost_total", flow=f) == s["packets_lost"]
        assert final.value("rtstream_packets_malformed_total", flow=f) == s["packets_malformed"]
    vid = per_flow["VID"]
    assert final.value("rtstream_frames_total", flow="VID", complete="true") \
        == vid["frames_complete"] == 45
    assert final.value("rtstream_frames_total", flow="VID", complete="false") \
        == vid["frames_incomplete"]
    assert final.value("rtstream_metadata_matched_total", flow="VID") == vid["metadata_matched"]
    assert final.value("rtstream_metadata_unmatched_total", flow="VID") \
        == vid["metadata_unmatched"]
    for f in ("VMETA", "AMETA", "REND"):
        assert final.value("rtstream_grains_total", flow=f) == per_flow[f]["grains_complete"] > 0
        assert final.value("rtstream_grains_dropped_total", flow=f) == per_flow[f]["grains_dropped"]
    assert final.value("rtstream_frames_delivered_total") == stats["frames_delivered"] == 45
    # the latency histogram: one observation per delivered frame, none lost between scrapes
    cum1, _, n1 = check_histogram(first, "rtstream_frame_ready_latency_seconds")
    cum, total, n = check_histogram(final, "rtstream_frame_ready_latency_seconds")
    assert 0 < n1 < n == stats["frames_delivered"]
    assert all(a <= b for a, b in zip(cum1, cum, strict=True))
    assert 0 < total < n * 1.0
    p99 = final.value("rtstream_frame_ready_latency_recent_seconds", quantile="0.99")
    assert p99 == pytest.approx(stats["latency_p99_us"] / 1e6)
    # a p50 lies in the bucket where the cumulative count crosses half the frames
    p50 = final.value("rtstream_frame_ready_latency_recent_seconds", quantile="0.5")
    i = next(k for k, c in enumerate(cum) if c >= n / 2)
    assert p50 <= (FRAME_READY_BUCKETS[i] if i < len(FRAME_READY_BUCKETS) else math.inf)
    # the sender: per flow, equal to its stats, and what the receiver got (loopback)
    assert tx_final.value("rtstream_sender_frames_total", flow="VID") == tx.stats.frames == 45
    assert tx_final.value("rtstream_sender_packets_total", flow="VID") == tx.stats.packets
    assert tx_final.value("rtstream_sender_bytes_total", flow="VID") == tx.stats.bytes
    assert tx_final.value("rtstream_sender_late_frames_total", flow="VID") == tx.stats.late_frames
    assert tx_final.value("rtstream_sender_grains_total", flow="VMETA") == 45
    assert set(tx_final.by_label("rtstream_sender_packets_total", "flow")) == flows
    for f in flows:
        assert tx_final.value("rtstream_sender_packets_total", flow=f) == \
            final.value("rtstream_packets_total", flow=f)
    assert 0 < tx_mid.value("rtstream_sender_frames_total", flow="VID") < 45
    assert tx_mid.value("rtstream_sender_streaming") == 1
    assert tx_final.value("rtstream_sender_streaming") == 0


def test_receiver_health_states_with_a_fake_clock() -> None:
    class Rx:
        stats: dict[str, Any] = {"packets": 0, "packets_lost": 0, "frames_delivered": 0}

    rx, now = Rx(), [100.0]
    health = ReceiverHealth(rx, silence=2.0, clock=lambda: now[0])
    assert health()["state"] == "starting"
    rx.stats = {**rx.stats, "packets": 50}
    doc = health()
    assert doc["state"] == "receiving" and doc["packets"] == 50
    now[0] += 1.5
    assert health()["state"] == "receiving"  # within the silence
    now[0] += 1.0
    doc = health()
    assert doc["state"] == "stalled" and doc["seconds_since_packet"] == 2.5
    rx.stats = {**rx.stats, "packets": 51}
    assert health()["state"] == "receiving"


def test_latency_ring_is_binned_incrementally_and_wraps() -> None:
    from rtstream.receiver.delivery import ItemQueue

    class Rx:  # the receiver's latency ring, shrunk to 8, read by its own method
        latencies_since = ItemQueue.latencies_since

        def __init__(self) -> None:
            self._latency = np.zeros(8, np.int64)
            self._latency_n = 0
            self.stats: dict[str, Any] = {"flows": {}}
            self.store_client = None

        def add(self, *ns: int) -> None:
            for v in ns:
                self._latency[self._latency_n % 8] = v
                self._latency_n += 1

    rx = Rx()
    reg = Registry()
    observe_receiver(reg, rx)
    rx.add(50_000, 300_000, 2_000_000)  # 50 us, 300 us, 2 ms
    exp = parse(reg.render())
    cum, total, n = check_histogram(exp, "rtstream_frame_ready_latency_seconds")
    assert n == 3 and total == pytest.approx(0.00235)
    assert exp.value("rtstream_frame_ready_latency_seconds_bucket", le="0.0001") == 1
    assert exp.value("rtstream_frame_ready_latency_seconds_bucket", le="0.0005") == 2
    assert exp.value("rtstream_frame_ready_latency_seconds_bucket", le="0.0025") == 3
    # 12 more: the ring (8) holds only the last 8 of them; those are what gets counted
    rx.add(*([1_000_000] * 4 + [2_000_000_000] * 8))
    exp = parse(reg.render())
    _, _, n = check_histogram(exp, "rtstream_frame_ready_latency_seconds")
    assert n == 3 + 8
    assert exp.value("rtstream_frame_ready_latency_seconds_bucket", le="1.0") == 3
    # nothing new: nothing added
    assert parse(reg.render()).value("rtstream_frame_ready_latency_seconds_count") == 11


def test_histogram_observe_counts_validates() -> None:
    h = Registry().histogram("x_seconds", "x", buckets=(1.0, 2.0))
    child = h.labels()
    child.observe_counts([1, 0, 2], 7.5)
    assert (child.count, child.sum) == (3, 7.5)
    with pytest.raises(LocalProtocolError, match="3 bucket counts"):
        child.observe_counts([1, 2], 1.0)
    with pytest.raises(LocalProtocolError, match=">= 0"):
        child.observe_counts([1, -1, 0], 1.0)


@pytest.mark.parametrize("text", ["9100", ":9100", "host:", "host:99999", "[::1]9100", ""])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="--http"):
        parse_listen(text)


def test_parse_listen_accepts() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:9100") == ("::1", 9100)


async def test_sdp_server_without_session_and_without_registry() -> None:
    srv = SdpHttpServer(None, "127.0.0.1", 0)
    await srv.start()
    try:
        base = f"http://127.0.0.1:{srv.port}"
        assert (await scrape(base + "/sdp"))[0] == 503
        assert (await scrape(base + "/sdp/VID"))[0] == 503
        assert (await scrape(base + "/metrics"))[0] == 404
    finally:
        await srv.stop()


# -- the viewer --------------------------------------------------------------------------


async def test_viewer_metrics_need_the_token_and_carry_the_receiver(tmp_path: Path) -> None:
    from rtstream.viewer.server import ViewerConfig, ViewerServer, feed_from_receiver

    port = free_port(count=7, step=2)
    async with Sender(small_sender(port, frames=20)) as tx:
        sdp = tmp_path / "tx.sdp"
        sdp.write_text(tx.sdp_text())
        async with Receiver(ReceiverConfig(sdp=str(sdp))) as rx, \
                ViewerServer(ViewerConfig(port=0, token=TOKEN), feed_from_receiver(rx)) as v:
            await tx.run()
            await settled(rx)
            await until(lambda: rx.stats["frames_delivered"] == 20)
            url = f"http://127.0.0.1:{v.port}/metrics"
            assert (await scrape(url))[0] == 401
            assert (await scrape(url, Authorization="Bearer wrong-token-xx"))[0] == 401
            status, ctype, text = await scrape(url, Authorization=f"Bearer {TOKEN}")
            stats = rx.stats
    assert status == 200 and ctype == CONTENT_TYPE
    exp = parse(text)
    assert exp.value("rtstream_viewer_streams") == 1
    assert exp.value("rtstream_viewer_peers") == 0
    for f in ("VID", "VMETA", "AUD", "AMETA"):
        assert exp.value("rtstream_packets_total", flow=f) == stats["flows"][f]["packets"] > 0
    assert exp.value("rtstream_frames_total", flow="VID", complete="true") == 20
    assert exp.value("rtstream_metadata_matched_total", flow="VID") == \
        stats["flows"]["VID"]["metadata_matched"]
    assert check_histogram(exp, "rtstream_frame_ready_latency_seconds")[2] == 20


async def test_demo_viewer_serves_receiver_and_sender_metrics(tmp_path: Path) -> None:
    from fractions import Fraction

    from rtstream.demo import DemoConfig, DemoResult, run_demo

    ready: asyncio.Future[DemoResult] = asyncio.get_running_loop().create_future()
    stop_demo = asyncio.Event()
    cfg = DemoConfig(width=160, height=120, fps=Fraction(30), http_port=0, token=TOKEN,
                     archive_dir=tmp_path / "archive", outbox=tmp_path / "outbox")
    demo = asyncio.create_task(run_demo(cfg, stop=stop_demo, on_ready=ready.set_result))
    try:
        result = await asyncio.wait_for(asyncio.shield(ready), 60)
        url = result.url.split("?", 1)[0] + "metrics"
        assert (await scrape(url))[0] == 401
        exp = Exposition()
        async with asyncio.timeout(30):
            while True:
                status, _, text = await scrape(url, Authorization=f"Bearer {TOKEN}")
                assert status == 200
                exp = parse(text)
                frames = exp.by_label("rtstream_frames_total", "flow", complete="true")
                sent = exp.by_label("rtstream_sender_frames_total", "flow")
                if frames.get("VID", 0) >= 10 and sent.get("VID", 0) >= 10:
                    break
                await asyncio.sleep(0.1)
        later = parse((await scrape(url, Authorization=f"Bearer {TOKEN}"))[2])
    finally:
        stop_demo.set()
        await asyncio.wait_for(demo, 60)
    assert exp.value("rtstream_sender_streaming") == 1
    assert exp.value("rtstream_sender_packets_total", flow="VID") >= \
        exp.value("rtstream_packets_total", flow="VID") > 0
    assert later.value("rtstream_sender_frames_total", flow="VID") >= \
        exp.value("rtstream_sender_frames_total", flow="VID")
    assert exp.types["rtstream_outbox_depth"] == "gauge"
    assert "rtstream_stored_total" in exp.types


# -- the command line ---------------------------------------------------------------------


def http_get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status), r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), "", exc.read().decode()


def test_cli_send_and_receive_serve_metrics_and_health(tmp_path: Path) -> None:
    port = free_port(count=7, step=2)
    tx_http = free_port(socket.SOCK_STREAM)
    rx_http = free_port(socket.SOCK_STREAM)
    send = subprocess.Popen(
        [*RTSTREAM, "--log-level", "WARNING", "send", "--dest", f"127.0.0.1:{port}",
         "--video", "160x120@30", "--depth", "8", "--audio", "--http", f"127.0.0.1:{tx_http}",
         "--duration", "60"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    recv: subprocess.Popen[bytes] | None = None
    try:
        wait_for_tcp(tx_http)
        recv = subprocess.Popen(
            [*RTSTREAM, "--log-level", "WARNING", "receive", "--sdp",
             f"http://127.0.0.1:{tx_http}/sdp", "--http", f"127.0.0.1:{rx_http}",
             "--stats-json", str(tmp_path / "rx.json")],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        wait_for_tcp(rx_http)
        base = f"http://127.0.0.1:{rx_http}"
        scrapes: list[Exposition] = []
        deadline = time.monotonic() + 30
        while len(scrapes) < 2 or scrapes[-1].value("rtstream_frames_total", flow="VID",
                                                    complete="true") < 15:
            assert time.monotonic() < deadline, "receiver got no frames"
            status, ctype, text = http_get(base + "/metrics")
            assert status == 200 and ctype == CONTENT_TYPE
            exp = parse(text)
            if exp.by_label("rtstream_frames_total", "flow", complete="true").get("VID"):
                scrapes.append(exp)
            time.sleep(0.2)
        status, ctype, text = http_get(base + "/healthz")
        assert status == 200 and ctype.startswith("application/json")
        assert json.loads(text)["state"] == "receiving"
        status, ctype, text = http_get(f"http://127.0.0.1:{tx_http}/metrics")
        assert status == 200 and ctype == CONTENT_TYPE
        sent = parse(text)
        assert http_get(f"http://127.0.0.1:{tx_http}/sdp")[0] == 200
        assert http_get(base + "/sdp")[0] == 404
    finally:
        for proc in (recv, send):
            if proc is not None:
                stop(proc, signal.SIGINT, timeout=20)
    assert recv is not None and recv.returncode == 0, recv.stderr.read() if recv.stderr else ""
    assert send.returncode == 0
    first, last = scrapes[0], scrapes[-1]
    flows = {"VID", "VMETA", "AUD", "AMETA", "REND"}  # REND: the rendition flow (audio + video)
    assert set(last.by_label("rtstream_packets_total", "flow")) == flows
    for f in flows - {"REND"}:  # REND sends a document every 500 ms: maybe none in between
        assert first.value("rtstream_packets_total", flow=f) < \
            last.value("rtstream_packets_total", flow=f)
    assert last.value("rtstream_packets_total", flow="REND") > 0
    assert last.value("rtstream_metadata_matched_total", flow="VID") > 0
    # counters only grow: the totals at exit are at least what was scraped
    final = json.loads((tmp_path / "rx.json").read_text())
    assert final["flows"]["VID"]["packets"] >= last.value("rtstream_packets_total", flow="VID")
    assert set(sent.by_label("rtstream_sender_frames_total", "flow")) == {"VID"}
    assert set(sent.by_label("rtstream_sender_packets_total", "flow")) == flows
    assert sent.value("rtstream_sender_frames_total", flow="VID") > 0
    assert sent.types["rtstream_sender_late_frames_total"] == "counter"


# -- logs ---------------------------------------------------------------------------------


def test_cli_log_format_json_every_stderr_line_is_an_object(tmp_path: Path) -> None:
    port = free_port(count=7, step=2)
    json_logs = [*RTSTREAM, "--log-format", "json", "--log-level", "DEBUG"]
    res = subprocess.run(
        [*json_logs, "send", "--dest", f"127.0.0.1:{port}", "--video", "64x48@30", "--depth",
         "8", "--frames", "5", "--patient-name", "Secret^Patient",
         "--sdp-out", str(tmp_path / "x.sdp"), "--http", f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    rcv = subprocess.run(
        [*json_logs, "receive", "--sdp", str(tmp_path / "x.sdp"), "--duration", "0.5",
         "--http", "127.0.0.1:0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert rcv.returncode == 0, rcv.stderr
    lines = res.stderr.splitlines() + rcv.stderr.splitlines()
    assert lines
    docs = [json.loads(line) for line in lines]
    assert all(isinstance(d, dict) for d in docs)
    records = [d for d in docs if "level" in d]
    assert records, res.stderr
    for d in records:
        assert {"ts", "level", "logger", "msg"} <= set(d)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", d["ts"])
        assert d["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    loggers = {d["logger"] for d in records if d["level"] == "INFO"}
    assert {"rtstream.net.sdp_http", "rtstream.receiver", "rtstream.control.observe"} <= loggers
    for d in records:  # no patient data at INFO and above
        if d["level"] != "DEBUG":
            assert "Secret" not in json.dumps(d), d
    # a command that fails says why as a JSON record too
    bad = subprocess.run(
        [*RTSTREAM, "--log-format", "json", "send", "--dest", "127.0.0.1:5004",
         "--video", "big", "--frames", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    errors = [json.loads(line) for line in bad.stderr.splitlines()]
    assert errors[-1]["level"] == "ERROR" and "--video" in errors[-1]["msg"]
    assert errors[-1]["exit_status"] == 2 and errors[-1]["command"] == "send"


def test_log_format_from_environment_and_rejected_value() -> None:
    env = {"RTSTREAM_LOG_FORMAT": "xml", "PATH": "/usr/bin:/bin"}
    res = subprocess.run([*RTSTREAM, "send", "--frames", "1"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--log-format" in res.stderr


def test_json_formatter_extra_fields_and_exceptions() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger("rtstream.test_observe")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("flow %s lost %d", "VID", 3, extra={"flow": "VID", "lost": 3,
                                                         "path": Path("/tmp/x"), "ts": "no"})
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "flow VID lost 3" and first["level"] == "WARNING"
    assert first["logger"] == "rtstream.test_observe"
    assert first["flow"] == "VID" and first["lost"] == 3 and first["path"] == "/tmp/x"
    assert first["ts"] != "no"  # an extra field never replaces a standard one
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]
