"""Prometheus metrics in the text exposition format 0.0.4, written by hand.

Theory of operation
-------------------
A :class:`Registry` holds metric families (:class:`Counter`, :class:`Gauge`,
:class:`Histogram`), each with fixed label names and one child per label-value tuple
(``flow="video0"``). Instrumented code keeps a reference to the child it updates (once
per frame or per batch, never per packet) and the scrape renders everything:
:meth:`Registry.render` first runs the ``on_collect`` callbacks (the place to copy the
cumulative counters of the sans-I/O depacketizers, the outbox depth, the MQTT counters),
then writes each family as::

    # HELP rtstream_packets_total RTP packets received.
    # TYPE rtstream_packets_total counter
    rtstream_packets_total{flow="video0"} 123456

Histograms write cumulative ``_bucket{le="..."}`` lines ending with ``le="+Inf"``, then
``_sum`` and ``_count``. Escaping follows the format: in label values ``\\``, ``"`` and
newline become ``\\\\``, ``\\"`` and ``\\n``; in HELP text ``\\`` and newline
(Prometheus "Exposition formats", text format 0.0.4).

:func:`metrics_handler` turns a registry into an aiohttp handler for ``GET /metrics``
that any of our HTTP servers (viewer, SDP server, archive) can mount.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from aiohttp import web

from rtstream.errors import LocalProtocolError

if TYPE_CHECKING:
    from rtstream.control.mqtt import ControlPlane

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_LATENCY_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "Registry",
    "StreamMetrics",
    "metrics_handler",
    "watch_control_plane",
]

log = logging.getLogger(__name__)

#: Content type of the text exposition format 0.0.4.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: Latency buckets in seconds: 1 ms .. 5 s (glass-to-glass on a LAN sits in 10-200 ms).
DEFAULT_LATENCY_BUCKETS: Final = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)

_METRIC_NAME: Final = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_LE_INF: Final = 'le="+Inf"'


def format_value(value: float) -> str:
    """A sample value as the format writes it (``+Inf``, ``-Inf``, ``NaN``, ints bare)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def escape_label_value(value: str) -> str:
    """Escape ``\\``, ``"`` and newline in a label value."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Escape ``\\`` and newline in HELP text."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class CounterChild:
    """One labelled counter: only goes up (``set_total`` mirrors an external counter)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: float = 0

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (>= 0)."""
        if amount < 0:
            raise LocalProtocolError(f"counter increment must be >= 0, got {amount}")
        with self._lock:
            self._value += amount

    def set_total(self, total: float) -> None:
        """Copy a cumulative count kept elsewhere (e.g. a depacketizer's ``stats``).

        A smaller value than before means the source restarted; Prometheus treats such a
        drop as a counter reset, which is what it is.
        """
        with self._lock:
            self._value = total

    @property
    def value(self) -> float:
        return self._value

    def _samples(self, name: str, labels: str) -> Iterable[str]:
        yield f"{name}{labels} {format_value(self._value)}"


class GaugeChild:
    """One labelled gauge."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: float = 0

    def set(self, value: float) -> None:
        with self._lock:
            self._value = value

    def inc(self, amount: float = 1) -> None:
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1) -> None:
        with self._lock:
            self._value -= amount

    @property
    def value(self) -> float:
        return self._value

    def _samples(self, name: str, labels: str) -> Iterable[str]:
        yield f"{name}{labels} {format_value(self._value)}"


class HistogramChild:
    """One labelled histogram with fixed upper bounds."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self._lock = threading.Lock()
        self._bounds = tuple(buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # last: above every bound
        self._sum: float = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        """Count one observation (e.g. a latency in seconds)."""
        i = _bisect_left(self._bounds, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value
            self._count += 1

    def observe_many(self, values: Iterable[float]) -> None:
        """Count several observations (a batch of per-frame latencies)."""
        for v in values:
            self.observe(float(v))

    def observe_counts(self, counts: Sequence[int], total: float) -> None:
        """Add pre-binned observations in one step (binned with numpy elsewhere).

        Parameters
        ----------
        counts : sequence of int
            One count per bucket, *not* cumulative: ``counts[i]`` observations fell in
            ``(bounds[i-1], bounds[i]]``; the last entry counts those above every bound
            (``len(bounds) + 1`` entries in all).
        total : float
            The sum of those observations (for ``_sum``).
        """
        if len(counts) != len(self._bounds) + 1:
            raise LocalProtocolError(
                f"observe_counts needs {len(self._bounds) + 1} bucket counts, got {len(counts)}"
            )
        if any(c < 0 for c in counts):
            raise LocalProtocolError(f"bucket counts must be >= 0, got {list(counts)}")
        with self._lock:
            for i, c in enumerate(counts):
                self._counts[i] += int(c)
            self._count += int(sum(counts))
            self._sum += float(total)

    @property
    def bounds(self) -> tuple[float, ...]:
        """The finite upper bounds (``le``) of the buckets."""
        return self._bounds

    @property
    def count(self) -> int:
        return self._count

    @property
    def sum(self) -> float:
        return self._sum

    def _samples(self, name: str, names: Sequence[str], values: Sequence[str]) -> Iterable[str]:
        with self._lock:
            counts, total, n = list(self._counts), self._sum, self._count
        cumulative = 0
        for bound, c in zip(self._bounds, counts, strict=False):
            cumulative += c
            le = f'le="{format_value(float(bound))}"'
            yield f"{name}_bucket{_labels_text(names, values, le)} {cumulative}"
        yield f"{name}_bucket{_labels_text(names, values, _LE_INF)} {n}"
        labels = _labels_text(names, values)
        yield f"{name}_sum{labels} {format_value(total)}"
        yield f"{name}_count{labels} {n}"


def _bisect_left(bounds: Sequence[float], value: float) -> int:
    # Bucket i counts value <= bounds[i] (the "le" semantics).
    lo, hi = 0, len(bounds)
    while lo < hi:
        mid = (lo + hi) // 2
        if bounds[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


ChildT = TypeVar("ChildT", CounterChild, GaugeChild, HistogramChild)


class _Family(Generic[ChildT]):
    type_name: str = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        if not _METRIC_NAME.match(name):
            raise LocalProtocolError(f"metric name {name!r} must match {_METRIC_NAME.pattern}")
        for ln in labelnames:
            if not _LABEL_NAME.match(ln) or ln.startswith("__") or ln == "le":
                raise LocalProtocolError(f"label name {ln!r} of {name} is not allowed")
        if len(set(labelnames)) != len(labelnames):
            raise LocalProtocolError(f"duplicate label names for {name}: {labelnames}")
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], ChildT] = {}

    def _new_child(self) -> ChildT:
        raise NotImplementedError

    def labels(self, *values: str, **named: str) -> ChildT:
        """The child for these label values (created on first use).

        Give values positionally in ``labelnames`` order or all by name.
        """
        if values and named:
            raise LocalProtocolError(f"{self.name}: give label values by position or by name")
        if named:
            if set(named) != set(self.labelnames):
                raise LocalProtocolError(
                    f"{self.name}: labels {sorted(named)} != {sorted(self.labelnames)}"
                )
            values = tuple(named[n] for n in self.labelnames)
        if len(values) != len(self.labelnames):
            raise LocalProtocolError(
                f"{self.name}: {len(values)} label values for {len(self.labelnames)} names"
            )
        key = tuple(str(v) for v in values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._new_child()
            return child

    def remove(self, *values: str) -> None:
        """Forget one child (a flow that ended)."""
        with self._lock:
            self._children.pop(tuple(str(v) for v in values), None)

    def _unlabelled(self) -> ChildT:
        if self.labelnames:
            raise LocalProtocolError(f"{self.name} has labels {self.labelnames}: use .labels()")
        return self.labels()

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.type_name}"
        with self._lock:
            children = list(self._children.items())
        for values, child in children:
            if isinstance(child, HistogramChild):
                yield from child._samples(self.name, self.labelnames, values)
            else:
                yield from child._samples(self.name, _labels_text(self.labelnames, values))


class Counter(_Family[CounterChild]):
    """A counter family; names end in ``_total``."""

    type_name = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        if not name.endswith("_total"):
            raise LocalProtocolError(f"counter name {name!r} must end in _total")
        super().__init__(name, help, labelnames)

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1) -> None:
        """Increment the unlabelled counter."""
        self._unlabelled().inc(amount)


class Gauge(_Family[GaugeChild]):
    """A gauge family."""

    type_name = "gauge"

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def set(self, value: float) -> None:
        """Set the unlabelled gauge."""
        self._unlabelled().set(value)


class Histogram(_Family[HistogramChild]):
    """A histogram family with one bucket layout for all its children."""

    type_name = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS,
    ) -> None:
        bounds = [float(b) for b in buckets if not math.isinf(b)]
        if not bounds or any(b >= c for b, c in zip(bounds, bounds[1:], strict=False)):
            raise LocalProtocolError(f"{name}: buckets must be increasing, got {buckets}")
        super().__init__(name, help, labelnames)
        self.buckets = tuple(bounds)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.buckets)

    def observe(self, value: float) -> None:
        """Observe on the unlabelled histogram."""
        self._unlabelled().observe(value)


class Registry:
    """The metric families of one process, rendered for a scrape."""

    def __init__(self) -> None:
        self._families: dict[str, _Family[CounterChild] | _Family[GaugeChild]
                             | _Family[HistogramChild]] = {}
        self._collectors: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def _add(self, family: _Family[ChildT]) -> _Family[ChildT]:
        with self._lock:
            names = {family.name}
            if isinstance(family, Histogram):
                names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
            taken = names & self._taken()
            if taken:
                raise LocalProtocolError(f"metric {sorted(taken)[0]} is already registered")
            self._families[family.name] = family
        return family

    def _taken(self) -> set[str]:
        out: set[str] = set()
        for f in self._families.values():
            out.add(f.name)
            if isinstance(f, Histogram):
                out |= {f.name + s for s in ("_bucket", "_sum", "_count")}
        return out

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        """Register and return a counter family."""
        c = Counter(name, help, labelnames)
        self._add(c)
        return c

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        """Register and return a gauge family."""
        g = Gauge(name, help, labelnames)
        self._add(g)
        return g

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS,
    ) -> Histogram:
        """Register and return a histogram family."""
        h = Histogram(name, help, labelnames, buckets)
        self._add(h)
        return h

    def on_collect(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` before every render (copy external counters into metrics)."""
        self._collectors.append(callback)

    def render(self) -> str:
        """The whole exposition, ending with a newline."""
        for cb in list(self._collectors):
            try:
                cb()
            except Exception:
                log.exception("metrics collector %r failed", cb)
        with self._lock:
            families = list(self._families.values())
        lines: list[str] = []
        for f in families:
            lines.extend(f.render())
        return "\n".join(lines) + "\n"


def metrics_handler(registry: Registry) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler serving ``registry`` (mount as ``GET /metrics``).

    Examples
    --------
    >>> app.router.add_get("/metrics", metrics_handler(registry))  # doctest: +SKIP
    """

    async def handle(request: web.Request) -> web.Response:
        body = registry.render().encode("utf-8")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return handle


@dataclass(frozen=True)
class StreamMetrics:
    """The standard rtstream families (label ``flow`` = the SDP ``a=mid``).

    Attributes
    ----------
    packets, lost : Counter
        ``rtstream_packets_total{flow}``, ``rtstream_packets_lost_total{flow}``.
    frames : Counter
        ``rtstream_frames_total{flow,complete}`` with ``complete`` ``"true"``/``"false"``.
    latency : Histogram
        ``rtstream_latency_seconds{flow}``: origin timestamp to arrival.
    outbox_depth : Gauge
        ``rtstream_outbox_depth``: instances waiting to be stored.
    stored, store_failures : Counter
        ``rtstream_stored_total``, ``rtstream_store_failures_total``.
    """

    packets: Counter
    lost: Counter
    frames: Counter
    latency: Histogram
    outbox_depth: Gauge
    stored: Counter
    store_failures: Counter

    @classmethod
    def register(cls, registry: Registry) -> StreamMetrics:
        """Create the families in ``registry``."""
        return cls(
            packets=registry.counter("rtstream_packets_total", "RTP packets received or sent.",
                                     ["flow"]),
            lost=registry.counter("rtstream_packets_lost_total",
                                  "RTP packets missing (sequence gaps).", ["flow"]),
            frames=registry.counter("rtstream_frames_total",
                                    "Video frames or audio chunks handled.", ["flow", "complete"]),
            latency=registry.histogram("rtstream_latency_seconds",
                                       "Origin timestamp to arrival, seconds.", ["flow"]),
            outbox_depth=registry.gauge("rtstream_outbox_depth",
                                        "DICOM instances in the outbox waiting for C-STORE."),
            stored=registry.counter("rtstream_stored_total", "Instances stored successfully."),
            store_failures=registry.counter("rtstream_store_failures_total",
                                            "C-STORE attempts that failed."),
        )

    def update_flow(self, flow: str, stats: Mapping[str, int]) -> None:
        """Copy a depacketizer's cumulative ``stats`` (packets, lost, frames_complete,
        frames_incomplete) into the flow's counters; missing keys are skipped."""
        if "packets" in stats:
            self.packets.labels(flow).set_total(stats["packets"])
        if "lost" in stats:
            self.lost.labels(flow).set_total(stats["lost"])
        if "frames_complete" in stats:
            self.frames.labels(flow, "true").set_total(stats["frames_complete"])
        if "frames_incomplete" in stats:
            self.frames.labels(flow, "false").set_total(stats["frames_incomplete"])


def watch_control_plane(registry: Registry, plane: ControlPlane) -> None:
    """Expose a :class:`~rtstream.control.mqtt.ControlPlane`'s state as metrics.

    ``rtstream_mqtt_connected``, ``rtstream_mqtt_outbox_depth`` and
    ``rtstream_mqtt_dropped_messages_total{class}``, refreshed at every scrape.
    """

    connected = registry.gauge("rtstream_mqtt_connected", "1 while the MQTT session is up.")
    depth = registry.gauge("rtstream_mqtt_outbox_depth", "MQTT messages waiting for the broker.")
    dropped = registry.counter("rtstream_mqtt_dropped_messages_total",
                               "MQTT messages dropped at the outbox cap.", ["class"])

    def collect() -> None:
        connected.set(1 if plane.connected else 0)
        depth.set(plane.outbox.depth())
        for cls, n in plane.outbox.dropped.items():
            dropped.labels(cls.value).set_total(n)

    registry.on_collect(collect)
