"""Observability: Prometheus registries fed from a receiver, a sender or a store client,
the small HTTP server of ``rtstream receive --http``, and JSON log lines.

Theory of operation
-------------------
Nothing here touches the media path. Every function below registers metric families in
a :class:`~rtstream.control.metrics.Registry` plus one ``on_collect`` callback; the
callback runs only when somebody scrapes ``GET /metrics`` and copies the cumulative
counters the pipeline keeps anyway (``Receiver.stats``, ``Sender.stats``,
``StoreClient.counters``) into the families with ``set_total``/``set``. Between scrapes
the cost is zero; a scrape costs one ``rx.stats`` call (a dict walk plus two percentiles
over at most 65,536 latencies, about a millisecond).

The receiver's *frame-ready latency* -- from the moment a video frame is complete
(its last packet read, ``ReceivedItem.received_ns``) to the moment the consumer takes it
(``async for item in rx``), i.e. pairing with its metadata grain plus queueing -- is
kept by the receiver in a ring of the last 65,536 values. At each scrape the values
added since the previous scrape are binned with numpy into the histogram
``rtstream_frame_ready_latency_seconds`` (exact as long as fewer than 65,536 frames
pass between two scrapes: 18 minutes at 60 frames/s). The receiver's own percentiles
over the ring are exported too, as the gauge
``rtstream_frame_ready_latency_recent_seconds{quantile="0.5"|"0.99"|"1"}``.

Metric names are listed in ``docs/observability.md``. Per-flow families carry the label
``flow`` = the SDP ``a=mid`` (``VID``, ``VMETA``, ``AUD``, ``AMETA`` for rtstream's own
senders).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from aiohttp import web

from rtstream.control.metrics import (
    Counter,
    Gauge,
    Registry,
    metrics_handler,
    watch_control_plane,
)
from rtstream.endpoints import Endpoint, parse_endpoint
from rtstream.errors import ConfigError
from rtstream.net.http import start_site

if TYPE_CHECKING:
    from rtstream.receiver import ReceiverLike

__all__ = [
    "FRAME_READY_BUCKETS",
    "JsonLogFormatter",
    "ObservabilityServer",
    "ReceiverHealth",
    "configure_logging",
    "observe_plane",
    "observe_receiver",
    "observe_sender",
    "observe_store",
    "observe_viewer",
    "parse_listen",
    "receiver_registry",
    "sender_registry",
    "serve_receiver",
]

log = logging.getLogger(__name__)

#: Buckets of the frame-ready latency, seconds: 100 us .. 1 s (pairing waits a frame or two).
FRAME_READY_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)

# Receiver.stats["flows"][name] key -> (family name, help, extra label values).
_FLOW_COUNTERS: Final[dict[str, tuple[str, str]]] = {
    "packets": ("rtstream_packets_total", "RTP packets received."),
    "packets_lost": ("rtstream_packets_lost_total", "RTP packets missing (sequence gaps)."),
    "packets_malformed": ("rtstream_packets_malformed_total",
                          "RTP packets dropped as malformed (bad header or payload)."),
    "reordered": ("rtstream_packets_reordered_total", "RTP packets that arrived out of order."),
    "duplicates": ("rtstream_packets_duplicate_total", "RTP packets received twice."),
    "late": ("rtstream_packets_late_total",
             "RTP packets that arrived after their frame or chunk was emitted."),
    "frames_dropped_incomplete": ("rtstream_frames_dropped_incomplete_total",
                                  "Incomplete video frames not delivered (--incomplete drop)."),
    "metadata_matched": ("rtstream_metadata_matched_total",
                         "Video frames delivered with the metadata grain of their RTP timestamp."),
    "metadata_unmatched": ("rtstream_metadata_unmatched_total",
                           "Video frames delivered without a metadata grain."),
    "grains_unmatched": ("rtstream_grains_unmatched_total",
                         "Metadata grains that found no frame of their RTP timestamp."),
    "restarts": ("rtstream_stream_restarts_total",
                 "New RTV SOP Instance seen on the metadata flow (sender restarted)."),
    "grains_complete": ("rtstream_grains_total", "PS3.22 metadata grains reassembled and decoded."),
    "grains_dropped": ("rtstream_grains_dropped_total",
                       "PS3.22 metadata grains dropped (lost packets or undecodable)."),
    "audio_chunks": ("rtstream_audio_chunks_total", "Audio chunks depacketized."),
}

# Receiver.stats["flows"][name]["legs"][i] key -> (family name, help): ST 2022-7 legs.
_LEG_COUNTERS: Final[dict[str, tuple[str, str]]] = {
    "packets": ("rtstream_leg_packets_total", "RTP packets received on this ST 2022-7 leg."),
    "lost": ("rtstream_leg_packets_lost_total",
             "Packets this leg alone would have lost (against the merged stream)."),
    "recovered": ("rtstream_leg_packets_recovered_total",
                  "Packets this leg lost that the other leg delivered."),
    "redundant": ("rtstream_leg_packets_redundant_total",
                  "Copies from this leg dropped because the other leg's came first."),
    "filtered": ("rtstream_leg_packets_filtered_total",
                 "Copies from this leg the kernel's eBPF filter dropped before they were read "
                 "(counted in redundant too)."),
    "silences": ("rtstream_leg_silences_total",
                 "Times this leg went silent for 100 ms (or was missing from the start)."),
}

# Receiver.stats top-level key -> (family name, help).
_TOTAL_COUNTERS: Final[dict[str, tuple[str, str]]] = {
    "frames_delivered": ("rtstream_frames_delivered_total",
                         "Video frames handed to the consumer (viewer, recorder, dumps)."),
    "audio_delivered": ("rtstream_audio_chunks_delivered_total",
                        "Audio chunks handed to the consumer."),
    "consumer_drops": ("rtstream_consumer_drops_total",
                       "Items dropped because the consumer fell behind."),
    "dump_errors": ("rtstream_dump_errors_total", "Failed --dump-frames/--dump-metadata writes."),
    "snapshots": ("rtstream_snapshots_total", "Snapshots and clips requested."),
    "renditions_seen": ("rtstream_renditions_seen_total",
                        "Distinct Rendition Selection Documents read (PS3.22 SOP class 10.4)."),
    "stereo_pairs": ("rtstream_stereo_pairs_total",
                     "Left/right frame pairs of a stereo rendition made by RTP timestamp."),
    "stereo_unpaired": ("rtstream_stereo_unpaired_total",
                        "Frames of a stereo view whose other view never came."),
    "renditions_invalid": ("rtstream_renditions_invalid_total",
                           "Rendition grains whose document could not be read (ignored)."),
}


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


# -- store ----------------------------------------------------------------------------------


class _StoreFamilies:
    def __init__(self, registry: Registry) -> None:
        self.depth = registry.gauge("rtstream_outbox_depth",
                                    "DICOM instances in the outbox waiting for C-STORE.")
        self.stored = registry.counter("rtstream_stored_total", "Instances stored successfully.")
        self.failed = registry.counter("rtstream_store_failures_total",
                                       "C-STORE attempts that failed.")
        self.retries = registry.counter("rtstream_store_retries_total",
                                        "C-STORE attempts retried after a failure.")
        self.outage = registry.gauge("rtstream_store_outage",
                                     "1 while the archive is unreachable, else 0.")

    def update(self, counters: Mapping[str, Any] | None, outage: bool | None) -> None:
        if counters:
            for key, fam in (("stored", self.stored), ("failed", self.failed),
                             ("retries", self.retries)):
                v = _int(counters.get(key))
                if v is not None:
                    fam.labels().set_total(v)
            depth = _int(counters.get("depth"))
            if depth is not None:
                self.depth.set(depth)
        if outage is not None:
            self.outage.set(1 if outage else 0)


def observe_store(registry: Registry, client: Any | Callable[[], Any]) -> None:
    """Export a :class:`~rtstream.pacs.store.StoreClient`'s counters.

    ``rtstream_outbox_depth``, ``rtstream_stored_total``, ``rtstream_store_failures_total``,
    ``rtstream_store_retries_total`` and ``rtstream_store_outage``, read from
    ``client.counters`` and ``client.in_outage`` at every scrape.

    Parameters
    ----------
    client : StoreClient or callable
        The client, or a function returning the current one (or None).
    """
    fams = _StoreFamilies(registry)
    get = client if callable(client) and not hasattr(client, "counters") else (lambda: client)

    def collect() -> None:
        sc = get()
        if sc is not None:
            fams.update(getattr(sc, "counters", None), getattr(sc, "in_outage", None))

    registry.on_collect(collect)


# -- receiver -------------------------------------------------------------------------------


class _LatencyFeed:
    """Bins the receiver's new frame-ready latencies at each scrape (numpy, no loop)."""

    def __init__(self) -> None:
        self.seen = 0

    def new_seconds(self, rx: ReceiverLike) -> np.ndarray:
        ns, self.seen = rx.latencies_since(self.seen)
        return np.asarray(ns, dtype=np.float64) / 1e9


def observe_receiver(registry: Registry, rx: ReceiverLike) -> None:
    """Export a :class:`~rtstream.receiver.Receiver`'s counters, refreshed at each scrape.

    Per flow (label ``flow``): ``rtstream_packets_total``, ``rtstream_packets_lost_total``,
    ``rtstream_packets_malformed_total``, ``..._reordered_total``, ``..._duplicate_total``,
    ``..._late_total``, ``rtstream_frames_total{complete="true"|"false"}``,
    ``rtstream_frames_dropped_incomplete_total``, ``rtstream_metadata_matched_total``,
    ``rtstream_metadata_unmatched_total``, ``rtstream_grains_total``,
    ``rtstream_grains_dropped_total``, ``rtstream_grains_unmatched_total``,
    ``rtstream_stream_restarts_total``, ``rtstream_audio_chunks_total``. Per ST 2022-7
    leg (labels ``flow`` and ``leg``): ``rtstream_leg_packets_total``,
    ``rtstream_leg_packets_lost_total``, ``rtstream_leg_packets_recovered_total``,
    ``rtstream_leg_packets_redundant_total``, ``rtstream_leg_silences_total`` and the gauge
    ``rtstream_leg_up``. Receiver-wide:
    the histogram ``rtstream_frame_ready_latency_seconds``, the gauge
    ``rtstream_frame_ready_latency_recent_seconds{quantile}``, delivered/dropped totals,
    the rendition counters (``rtstream_renditions_seen_total``,
    ``rtstream_stereo_pairs_total``, ``rtstream_stereo_unpaired_total``,
    ``rtstream_renditions_invalid_total``) and the store families of :func:`observe_store`.
    """
    per_flow: dict[str, Counter] = {
        key: registry.counter(name, text, ["flow"]) for key, (name, text) in _FLOW_COUNTERS.items()
    }
    frames = registry.counter("rtstream_frames_total",
                              "Video frames reassembled, by completeness.", ["flow", "complete"])
    totals: dict[str, Counter] = {
        key: registry.counter(name, text) for key, (name, text) in _TOTAL_COUNTERS.items()
    }
    hist = registry.histogram(
        "rtstream_frame_ready_latency_seconds",
        "Frame complete (last packet read) to handed to the consumer, seconds.",
        buckets=FRAME_READY_BUCKETS,
    )
    recent = registry.gauge(
        "rtstream_frame_ready_latency_recent_seconds",
        "Frame-ready latency percentiles over the receiver's last 65536 frames "
        "(quantile 1 = maximum).", ["quantile"],
    )
    per_leg: dict[str, Counter] = {
        key: registry.counter(name, text, ["flow", "leg"])
        for key, (name, text) in _LEG_COUNTERS.items()
    }
    leg_up = registry.gauge("rtstream_leg_up",
                            "1 while this ST 2022-7 leg delivers packets, else 0.", ["flow", "leg"])
    store = _StoreFamilies(registry)
    feed = _LatencyFeed()
    child = hist.labels()
    bounds = np.asarray(child.bounds)

    def collect() -> None:
        stats = rx.stats
        for name, flow in dict(stats.get("flows") or {}).items():
            for key, fam in per_flow.items():
                v = _int(flow.get(key))
                if v is not None:
                    fam.labels(str(name)).set_total(v)
            for key, complete in (("frames_complete", "true"), ("frames_incomplete", "false")):
                v = _int(flow.get(key))
                if v is not None:
                    frames.labels(str(name), complete).set_total(v)
            for leg in flow.get("legs") or ():
                number = str(leg.get("leg"))
                for key, fam in per_leg.items():
                    v = _int(leg.get(key))
                    if v is not None:
                        fam.labels(str(name), number).set_total(v)
                leg_up.labels(str(name), number).set(1 if leg.get("state") == "up" else 0)
        for key, fam in totals.items():
            v = _int(stats.get(key))
            if v is not None:
                fam.labels().set_total(v)
        for q, key in (("0.5", "latency_p50_us"), ("0.99", "latency_p99_us"),
                       ("1", "latency_max_us")):
            us = stats.get(key)
            if isinstance(us, int | float):
                recent.labels(q).set(float(us) / 1e6)
        fresh = feed.new_seconds(rx)
        if fresh.size:
            counts = np.bincount(np.searchsorted(bounds, fresh, side="left"),
                                 minlength=len(bounds) + 1)
            child.observe_counts([int(c) for c in counts], float(fresh.sum()))
        sc = getattr(rx, "store_client", None)
        store.update(stats.get("store"), getattr(sc, "in_outage", None) if sc else None)

    registry.on_collect(collect)


def receiver_registry(rx: ReceiverLike, *, plane: Any = None) -> Registry:
    """A new registry exporting ``rx`` (and the MQTT ``plane``, if a real one)."""
    registry = Registry()
    observe_receiver(registry, rx)
    if plane is not None:
        observe_plane(registry, plane)
    return registry


# -- sender ---------------------------------------------------------------------------------


def observe_sender(registry: Registry, sender: Any | Callable[[], Any]) -> None:
    """Export a :class:`~rtstream.sender.Sender`'s counters per flow, at each scrape.

    ``rtstream_sender_frames_total{flow}``, ``rtstream_sender_late_frames_total{flow}``,
    ``rtstream_sender_packets_total{flow}``, ``rtstream_sender_bytes_total{flow}``,
    ``rtstream_sender_grains_total{flow}``, ``rtstream_sender_static_parts_total{flow}``,
    ``rtstream_sender_dropped_total{flow}``, ``rtstream_sender_icmp_errors_total{flow}`` and
    the gauge ``rtstream_sender_streaming``. Frames, late frames and grains come from
    ``Sender.stats``; packets, bytes, drops and ICMP errors from each flow's socket
    counters (datagrams handed to the kernel, counted as they go).

    Parameters
    ----------
    sender : Sender or callable
        The sender, or a function returning the current one (``stream_stop`` /
        ``stream_start`` replace it; its counters then start again from zero, which
        Prometheus reads as a counter reset).
    """
    get = sender if callable(sender) and not hasattr(sender, "stats") else (lambda: sender)

    def c(name: str, text: str) -> Counter:
        return registry.counter(name, text, ["flow"])

    frames = c("rtstream_sender_frames_total", "Video frames sent.")
    late = c("rtstream_sender_late_frames_total",
             "Video frames still being sent when the next one was captured.")
    packets = c("rtstream_sender_packets_total", "RTP packets sent.")
    nbytes = c("rtstream_sender_bytes_total", "RTP bytes sent (headers included).")
    grains = c("rtstream_sender_grains_total", "PS3.22 metadata grains sent.")
    statics = c("rtstream_sender_static_parts_total",
                "Metadata grains that carried the static part (patient, study, device).")
    dropped = c("rtstream_sender_dropped_total",
                "Datagrams the kernel would not take (buffer full), not retried.")
    icmp = c("rtstream_sender_icmp_errors_total",
             "ICMP errors reported on the flow's socket (e.g. port unreachable).")
    streaming: Gauge = registry.gauge("rtstream_sender_streaming", "1 while a sender runs.")

    def collect() -> None:
        tx = get()
        if tx is None:
            streaming.set(0)
            return
        st = tx.stats
        # run() stamps started_ns when it starts and elapsed_s when it ends.
        streaming.set(1 if st.started_ns and not st.elapsed_s else 0)
        frames.labels("VID").set_total(st.frames)
        late.labels("VID").set_total(st.late_frames)
        grains.labels("VMETA").set_total(st.metadata_grains)
        statics.labels("VMETA").set_total(st.static_parts)
        udps = tx.udp_senders()
        for mid, udp in udps.items():
            us = udp.stats
            packets.labels(mid).set_total(us.datagrams)
            nbytes.labels(mid).set_total(us.bytes)
            dropped.labels(mid).set_total(us.dropped)
            icmp.labels(mid).set_total(us.icmp_errors)
        if "VID" not in udps:  # a Sender without per-flow sockets to read: its totals
            packets.labels("VID").set_total(st.packets)
            nbytes.labels("VID").set_total(st.bytes)
            audio = _int(getattr(st, "audio_packets", None))
            if audio:
                packets.labels("AUD").set_total(audio)

    registry.on_collect(collect)


def sender_registry(sender: Any | Callable[[], Any]) -> Registry:
    """A new registry exporting ``sender`` (see :func:`observe_sender`)."""
    registry = Registry()
    observe_sender(registry, sender)
    return registry


# -- viewer and control plane ---------------------------------------------------------------


def observe_viewer(registry: Registry, server: Any) -> None:
    """``rtstream_viewer_peers`` and ``rtstream_viewer_streams`` of a ViewerServer."""
    peers = registry.gauge("rtstream_viewer_peers", "Browser peer connections open.")
    streams = registry.gauge("rtstream_viewer_streams", "Streams seen by the viewer.")

    def collect() -> None:
        peers.set(len(getattr(server, "peers", {}) or {}))
        streams.set(len(getattr(server, "streams", {}) or {}))

    registry.on_collect(collect)


def observe_plane(registry: Registry, plane: Any) -> None:
    """MQTT families of :func:`~rtstream.control.metrics.watch_control_plane`, for a real
    :class:`~rtstream.control.mqtt.ControlPlane` (a null plane adds nothing)."""
    if hasattr(plane, "outbox"):
        watch_control_plane(registry, plane)


# -- health ---------------------------------------------------------------------------------


class ReceiverHealth:
    """The ``state`` of ``GET /healthz`` for a receiver.

    ``starting`` until the first packet, ``receiving`` while packets arrived within the
    last ``silence`` seconds (or since the previous check), ``stalled`` after that.
    """

    def __init__(self, rx: ReceiverLike, *, silence: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rx = rx
        self.silence = silence
        self._clock = clock
        self._packets: int | None = None
        self._last_change: float | None = None

    def __call__(self) -> dict[str, Any]:
        stats = self.rx.stats
        packets = int(stats.get("packets", 0))
        now = self._clock()
        if packets > (self._packets or 0):
            self._last_change = now
        self._packets = packets
        if self._last_change is None:
            state = "starting"
            idle = None
        else:
            idle = now - self._last_change
            state = "receiving" if idle <= self.silence else "stalled"
        return {
            "state": state,
            "packets": packets,
            "packets_lost": int(stats.get("packets_lost", 0)),
            "frames_delivered": int(stats.get("frames_delivered", 0)),
            "seconds_since_packet": None if idle is None else round(idle, 3),
        }


# -- HTTP -----------------------------------------------------------------------------------


def parse_listen(text: str, key: str = "--http") -> Endpoint:
    """``HOST:PORT`` (``[v6]:PORT``) to listen on; port 0 picks a free one."""
    return parse_endpoint(text, key=key, allow_port_zero=True)


class ObservabilityServer:
    """``GET /metrics`` (Prometheus text 0.0.4) and ``GET /healthz`` (JSON) over HTTP.

    Parameters
    ----------
    registry : Registry
    host, port : str, int
        Where to listen (port 0 picks a free one; :attr:`port` holds it after start).
    health : callable or None
        Returns the ``/healthz`` document (must hold ``state``); None serves
        ``{"state": "up"}``.

    Examples
    --------
    >>> async with ObservabilityServer(receiver_registry(rx), "127.0.0.1", 9100,
    ...                                health=ReceiverHealth(rx)):  # doctest: +SKIP
    ...     ...
    """

    def __init__(self, registry: Registry, host: str, port: int, *,
                 health: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.health = health
        self._runner: web.AppRunner | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", metrics_handler(self.registry))
        app.router.add_get("/healthz", self._healthz)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        doc = dict(self.health()) if self.health is not None else {"state": "up"}
        return web.json_response(doc, headers={"Cache-Control": "no-store"})

    @property
    def url(self) -> str:
        """Base URL (``http://host:port``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Start listening (ConfigError when the address is taken or invalid)."""
        self._runner, self.port = await start_site(self._app(), self.host, self.port, key="--http")
        log.info("metrics at %s/metrics, health at %s/healthz", self.url, self.url)

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ObservabilityServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@contextlib.asynccontextmanager
async def serve_receiver(
    listen: tuple[str, int] | None, rx: ReceiverLike, *, plane: Any = None
) -> AsyncIterator[ObservabilityServer | None]:
    """``rtstream receive --http``: serve ``rx``'s metrics and health for the ``async with``
    body; ``listen`` None serves nothing (yields None)."""
    if listen is None:
        yield None
        return
    host, port = listen
    server = ObservabilityServer(receiver_registry(rx, plane=plane), host, port,
                                 health=ReceiverHealth(rx))
    async with server:
        yield server


# -- logs -----------------------------------------------------------------------------------

_RECORD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "taskName"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    Keys: ``ts`` (UTC, ISO 8601 with microseconds and ``Z``), ``level``, ``logger``,
    ``msg`` (the %-formatted message), then every field given with ``extra=`` (values
    that JSON cannot hold are written with ``str``), ``exc`` with the traceback of
    ``log.exception``, ``stack`` with ``stack_info``.
    """

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        doc: dict[str, Any] = {
            "ts": ts.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_") and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False, separators=(",", ":"))


#: Values of ``rtstream --log-format``.
LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


#: Third-party loggers kept at WARNING unless the level is DEBUG (issue #17 §5).
QUIET_LIBRARIES = ("pynetdicom", "aioice", "aiortc", "aiohttp.access")


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Set up the root logger on stderr, as text lines or JSON lines.

    Like :func:`logging.basicConfig` it does nothing when the root logger already has
    handlers (a host application or a test harness configured logging first). With
    ``json`` the :mod:`warnings` module is routed through logging too, so that every
    line on stderr stays a JSON object.
    """
    if fmt not in LOG_FORMATS:
        raise ConfigError("--log-format", fmt, " or ".join(LOG_FORMATS))
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLogFormatter())
        logging.captureWarnings(True)
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])
    # Libraries talk a lot at INFO (pynetdicom: a line per association and C-STORE, aiohttp
    # one per request): they stay at WARNING unless --log-level DEBUG asks for everything.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
