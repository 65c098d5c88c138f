"""Prometheus text exposition 0.0.4 (rtstream.control.metrics), parsed line by line."""

from __future__ import annotations

import math
import re
import socket
import threading
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from rtstream.control.metrics import (
    CONTENT_TYPE,
    DEFAULT_LATENCY_BUCKETS,
    Registry,
    StreamMetrics,
    metrics_handler,
    watch_control_plane,
)
from rtstream.control.mqtt import ControlPlane, EventKind, MqttConfig
from rtstream.errors import LocalProtocolError
from tests.peers import free_port

# A sample line: name, optional {labels}, value (format 0.0.4; we never write timestamps).
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse_exposition(text: str) -> dict[str, dict[str, Any]]:
    """A strict reader of what we write: families with HELP, TYPE and samples.

    Returns {family: {"help": str, "type": str, "samples": {(name, labels...): float}}}.
    """
    assert text.endswith("\n")
    families: dict[str, dict[str, Any]] = {}
    current: str | None = None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, f"family {name} written twice"
            families[name] = {"help": _unescape(help_text), "samples": {}}
            current = name
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name == current and kind in ("counter", "gauge", "histogram")
            families[name]["type"] = kind
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, _, labels_text, value = m.groups()
            assert current is not None
            kind = families[current]["type"]
            allowed = {current} if kind != "histogram" else {
                current + s for s in ("_bucket", "_sum", "_count")}
            assert name in allowed, f"{name} under family {current}"
            labels: list[tuple[str, str]] = []
            rest = labels_text or ""
            while rest:
                lm = LABEL.match(rest)
                assert lm, f"bad labels in {line!r}"
                labels.append((lm.group(1), _unescape(lm.group(2))))
                rest = rest[lm.end():]
            v = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(value)
            samples = families[current]["samples"]
            assert isinstance(samples, dict)
            samples[(name, *labels)] = float(value) if v is None else v
    return families


def test_counters_gauges_histograms_render_and_parse() -> None:
    reg = Registry()
    m = StreamMetrics.register(reg)
    m.packets.labels("video0").inc(1000)
    m.packets.labels(flow="audio0").inc(480)
    m.lost.labels("video0").inc(3)
    m.update_flow("video1", {"packets": 77, "lost": 2, "frames_complete": 5,
                             "frames_incomplete": 1, "duplicates": 9})
    m.frames.labels("video0", "true").inc(59)
    m.outbox_depth.set(4)
    m.store_failures.inc()
    lat = m.latency.labels("video0")
    for v in (0.0005, 0.001, 0.003, 0.03, 0.03, 7.0):
        lat.observe(v)
    fam = parse_exposition(reg.render())
    assert fam["rtstream_packets_total"]["type"] == "counter"
    s = fam["rtstream_packets_total"]["samples"]
    assert s == {("rtstream_packets_total", ("flow", "video0")): 1000,
                 ("rtstream_packets_total", ("flow", "audio0")): 480,
                 ("rtstream_packets_total", ("flow", "video1")): 77}
    frames = fam["rtstream_frames_total"]["samples"]
    assert frames[("rtstream_frames_total", ("flow", "video1"), ("complete", "false"))] == 1
    assert fam["rtstream_outbox_depth"]["samples"] == {("rtstream_outbox_depth",): 4}
    assert fam["rtstream_store_failures_total"]["samples"] == {
        ("rtstream_store_failures_total",): 1}
    h = fam["rtstream_latency_seconds"]
    assert h["type"] == "histogram"
    hs = h["samples"]
    assert isinstance(hs, dict)
    buckets = [(dict(k[1:])["le"], v) for k, v in hs.items() if k[0].endswith("_bucket")]
    les = [b[0] for b in buckets]
    assert les[-1] == "+Inf" and len(les) == len(DEFAULT_LATENCY_BUCKETS) + 1
    assert [float(x) for x in les[:-1]] == list(DEFAULT_LATENCY_BUCKETS)
    counts = dict(buckets)
    assert counts["0.001"] == 2  # "le" includes the bound itself
    assert counts["0.005"] == 3 and counts["0.05"] == 5 and counts["5.0"] == 5
    assert counts["+Inf"] == 6
    cum = [v for _, v in buckets]
    assert cum == sorted(cum)
    assert hs[("rtstream_latency_seconds_count", ("flow", "video0"))] == 6
    assert hs[("rtstream_latency_seconds_sum", ("flow", "video0"))] == pytest.approx(7.0645)


def test_escaping() -> None:
    reg = Registry()
    c = reg.counter("x_total", 'help with \\ and\nnewline and "quotes"', ["flow"])
    nasty = 'a"b\\c\nd'
    c.labels(nasty).inc(2)
    text = reg.render()
    assert "\\n" in text and text.count("\n") == 3  # 3 lines, no raw newline inside
    fam = parse_exposition(text)
    assert fam["x_total"]["help"] == 'help with \\ and\nnewline and "quotes"'
    assert fam["x_total"]["samples"] == {("x_total", ("flow", nasty)): 2}


def test_special_values_and_empty_families() -> None:
    reg = Registry()
    g = reg.gauge("g", "a gauge", ["k"])
    g.labels("inf").set(math.inf)
    g.labels("nan").set(math.nan)
    g.labels("neg").set(-1.5)
    reg.histogram("h_seconds", "empty histogram", ["flow"])
    fam = parse_exposition(reg.render())
    s = fam["g"]["samples"]
    assert s[("g", ("k", "inf"))] == math.inf
    assert math.isnan(s[("g", ("k", "nan"))])
    assert s[("g", ("k", "neg"))] == -1.5
    assert fam["h_seconds"]["samples"] == {}


def test_misuse_is_refused() -> None:
    reg = Registry()
    reg.counter("a_total", "a")
    for bad in (lambda: reg.counter("a_total", "again"),
                lambda: reg.counter("no_suffix", "x"),
                lambda: reg.gauge("bad-name", "x"),
                lambda: reg.gauge("g", "x", ["le"]),
                lambda: reg.gauge("g2", "x", ["__x"]),
                lambda: reg.histogram("h", "x", buckets=[1, 1]),
                lambda: reg.histogram("h2", "x", buckets=[]),
                lambda: reg.histogram("a_total", "clash with the counter")):
        with pytest.raises(LocalProtocolError):
            bad()
    h = reg.histogram("lat", "x")
    with pytest.raises(LocalProtocolError):
        reg.gauge("lat_bucket", "clash with a histogram series")
    c = reg.counter("b_total", "b", ["flow"])
    with pytest.raises(LocalProtocolError):
        c.inc()  # labelled family needs .labels()
    with pytest.raises(LocalProtocolError):
        c.labels("x").inc(-1)
    with pytest.raises(LocalProtocolError):
        c.labels("x", "y")
    with pytest.raises(LocalProtocolError):
        c.labels(other="x")
    h.observe(0.5)


def test_collect_callbacks_and_threads() -> None:
    reg = Registry()
    c = reg.counter("frames_total", "frames", ["flow"])
    external = {"packets": 0}
    g = reg.gauge("depth", "depth")
    reg.on_collect(lambda: g.set(external["packets"]))

    def broken() -> None:
        raise RuntimeError("collector bug")

    reg.on_collect(broken)  # logged, the scrape goes on
    child = c.labels("v")

    def work() -> None:
        for _ in range(10_000):
            child.inc()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    external["packets"] = 42
    fam = parse_exposition(reg.render())
    assert fam["frames_total"]["samples"] == {("frames_total", ("flow", "v")): 40_000}
    assert fam["depth"]["samples"] == {("depth",): 42}


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_histogram_invariants(values: list[float]) -> None:
    reg = Registry()
    h = reg.histogram("lat_seconds", "x", buckets=[0.01, 0.1, 1, 10])
    for v in values:
        h.observe(v)
    hs = parse_exposition(reg.render())["lat_seconds"]["samples"]
    if not values:
        assert hs == {}
        return
    assert isinstance(hs, dict)
    for le in ("0.01", "0.1", "1.0", "10.0"):
        assert hs[("lat_seconds_bucket", ("le", le))] == sum(v <= float(le) for v in values)
    assert hs[("lat_seconds_bucket", ("le", "+Inf"))] == len(values)
    assert hs[("lat_seconds_count",)] == len(values)
    assert hs[("lat_seconds_sum",)] == pytest.approx(sum(values))


async def test_http_handler_serves_the_registry(aiohttp_free_port: int) -> None:
    reg = Registry()
    StreamMetrics.register(reg).packets.labels("video0").inc(5)
    cp = ControlPlane(MqttConfig(host="127.0.0.1", port=1, node="m"))
    watch_control_plane(reg, cp)
    for _ in range(3):
        cp.publish_event(EventKind.STREAM_STARTED)
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(reg))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", aiohttp_free_port)
    await site.start()
    try:
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{aiohttp_free_port}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == CONTENT_TYPE
            text = await resp.text()
    finally:
        await runner.cleanup()
    fam = parse_exposition(text)
    assert fam["rtstream_packets_total"]["samples"] == {
        ("rtstream_packets_total", ("flow", "video0")): 5}
    assert fam["rtstream_mqtt_connected"]["samples"] == {("rtstream_mqtt_connected",): 0}
    assert fam["rtstream_mqtt_outbox_depth"]["samples"] == {("rtstream_mqtt_outbox_depth",): 3}


@pytest.fixture
def aiohttp_free_port() -> int:
    return free_port(socket.SOCK_STREAM)
