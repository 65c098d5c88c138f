"""MQTT control plane: status, stats, events, commands and replies for one node.

Theory of operation
-------------------
One :class:`ControlPlane` per process ("node") owns one MQTT session (``aiomqtt``) and
the topics below ``<prefix>/<node>/`` (``prefix`` is ``rtstream``; docs/mqtt.md):

``status``
    Retained JSON ``{"state": "online", ...}`` published on every (re)connect; the MQTT
    last will (retained) replaces it with ``{"state": "offline"}`` when the connection dies
    without a DISCONNECT, and a clean shutdown publishes the same before disconnecting.
``stats``
    Periodic JSON from the application's stats provider plus the control plane's own
    counters.
``events``
    :meth:`ControlPlane.publish_event` -- one JSON object per :class:`EventKind`.
``cmd``
    Commands (:mod:`rtstream.control.schema`); each is validated, handed to the
    application's async handler, and answered on ``reply/<request-id>``.

The media path must never wait for the broker. Everything the application publishes
goes into an in-memory :class:`Outbox` with a cap per message class, and a separate task
(the *writer*) moves it to the broker whenever a session is up. Publishing is a plain
synchronous call that appends to a deque: it cannot block and never raises because the
broker is down. When a cap is reached the oldest message of that class is dropped and
counted (stats are capped low, since only the latest matters; events and replies higher).
A message whose publish was interrupted by a disconnection goes back to the front and is
sent again after reconnection (at-least-once). The session task reconnects with
exponential back-off and jitter. The status slot holds only the latest status.

The client socket gets ``TCP_NODELAY``: with Nagle on, mixing QoS 0 and QoS 1 on one
connection falls to ~45 messages/s against mosquitto (DESIGN.md §6).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import enum
import itertools
import json
import logging
import random
import re
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from types import TracebackType
from typing import Any, Final, Self

import aiomqtt

import rtstream
from rtstream.control.schema import Command, InvalidCommand, parse_command
from rtstream.errors import ConfigError, LocalProtocolError, RtstreamError

__all__ = [
    "PASSWORD_ENV",
    "CommandFailed",
    "CommandHandler",
    "ControlCounters",
    "ControlPlane",
    "EventKind",
    "MessageClass",
    "MqttConfig",
    "NullControlPlane",
    "Outbox",
    "StatsProvider",
    "default_node",
]

log = logging.getLogger(__name__)

#: A node name is one MQTT topic level: no ``/``, ``+``, ``#``, no leading ``$``.
NODE_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PREFIX_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9._-]{1,64})*$")
_URL_FORM: Final = "mqtt://[user[:password]@]host[:port] or mqtts://... (TLS)"
#: Environment variable holding the MQTT password when the URL names only the user.
PASSWORD_ENV: Final = "RTSTREAM_MQTT_PASSWORD"
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})

CommandHandler = Callable[[Command], Awaitable[Mapping[str, Any] | None]]
"""``async def handler(cmd: Command) -> Mapping | None``: the members to add to an ok reply.

Raise :class:`CommandFailed` to answer ``ok: false`` with its message as ``error``; any
other exception is logged and answered ``ok: false`` with ``error: "internal error: ..."``.
"""

StatsProvider = Callable[[], Mapping[str, Any]]
"""Called on the event loop every ``stats_interval``; must be cheap and JSON-able."""


class EventKind(enum.Enum):
    """The ``kind`` of a message on ``…/events`` (fields per kind in docs/mqtt.md)."""

    STREAM_STARTED = "stream_started"
    STREAM_STOPPED = "stream_stopped"
    SNAPSHOT_STORED = "snapshot_stored"
    RECORDING_STARTED = "recording_started"
    RECORDING_STOPPED = "recording_stopped"
    CLIP_STORED = "clip_stored"
    STORE_FAILED = "store_failed"
    LOSS_ALARM = "loss_alarm"
    LOSS_CLEARED = "loss_cleared"
    ARCHIVE_OUTAGE = "archive_outage"
    ARCHIVE_RECOVERED = "archive_recovered"
    LEG_SILENT = "leg_silent"
    LEG_BACK = "leg_back"
    FINDINGS = "findings"


class MessageClass(enum.Enum):
    """Outbox classes, in the order the writer sends them."""

    STATUS = "status"
    REPLY = "reply"
    EVENT = "event"
    STATS = "stats"


class CommandFailed(RtstreamError):
    """Raised by a command handler: the command was understood but could not be done.

    The message becomes the reply's ``error`` member; it must not contain patient data.
    """


def _qos(key: str, value: int) -> None:
    if value not in (0, 1, 2):
        raise ConfigError(key, value, "an MQTT QoS: 0, 1 or 2")


@dataclass(frozen=True, kw_only=True)
class MqttConfig:
    """Where the broker is and how this node talks to it.

    Attributes
    ----------
    host, port : str, int
        The broker. Port defaults to 1883 (8883 with TLS) when built by :meth:`from_url`.
    node : str
        The node name: one topic level, ``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``.
    tls : bool
        Connect with TLS (``mqtts://``), verifying the broker against ``ca_file`` (or the
        system store) unless ``tls_insecure``.
    ca_file, cert_file, key_file : Path or None
        Trust anchors; client certificate and key for mutual TLS.
    tls_insecure : bool
        Do not verify the broker certificate nor its name (testing only).
    username, password : str or None
        MQTT credentials (mosquitto ``password_file``).
    prefix : str
        First topic levels; the node's topics are ``<prefix>/<node>/...``.
    qos_status, qos_events, qos_stats, qos_replies, qos_commands : int
        QoS per topic (``qos_commands`` is the subscription's maximum).
    stats_interval : float
        Seconds between ``stats`` messages; 0 disables them.
    keepalive : int
        MQTT keep-alive seconds: how soon the broker notices a silent death.
    connect_timeout : float
        Seconds allowed for CONNECT/CONNACK and for a QoS>0 publish to be acknowledged.
    reconnect_min, reconnect_max : float
        Exponential back-off bounds (seconds) between connection attempts.
    max_events, max_stats, max_replies : int
        Outbox caps per class while the broker is away (oldest dropped first).
    max_concurrent_commands : int
        Commands running at once; more are refused with ``busy``.
    command_timeout : float
        Seconds a handler may take before the reply says it timed out.
    shutdown_timeout : float
        Seconds the clean shutdown waits to flush the outbox and say ``offline``.
    """

    host: str
    port: int = 1883
    node: str
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    prefix: str = "rtstream"
    qos_status: int = 1
    qos_events: int = 1
    qos_stats: int = 0
    qos_replies: int = 1
    qos_commands: int = 1
    stats_interval: float = 5.0
    keepalive: int = 30
    connect_timeout: float = 10.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    max_events: int = 1000
    max_stats: int = 10
    max_replies: int = 100
    max_concurrent_commands: int = 8
    command_timeout: float = 60.0
    shutdown_timeout: float = 2.0

    def __post_init__(self) -> None:
        if not self.host or any(c in self.host for c in "/ @?#"):
            raise ConfigError("mqtt host", self.host, "a host name or IP address")
        if not 1 <= self.port <= 65535:
            raise ConfigError("mqtt port", self.port, "an integer 1..65535")
        if not NODE_PATTERN.match(self.node):
            raise ConfigError(
                "node", self.node, "1-64 of A-Z a-z 0-9 . _ - (one MQTT topic level)"
            )
        if not _PREFIX_PATTERN.match(self.prefix):
            raise ConfigError("mqtt prefix", self.prefix, "topic levels of A-Z a-z 0-9 . _ -")
        for key in ("qos_status", "qos_events", "qos_stats", "qos_replies", "qos_commands"):
            _qos(key, getattr(self, key))
        if self.password is not None and self.username is None:
            raise ConfigError("mqtt password", "***", "a password needs a user name")
        if not self.tls:
            for key in ("ca_file", "cert_file", "key_file"):
                if getattr(self, key) is not None:
                    raise ConfigError(key, getattr(self, key), "only with TLS (mqtts://)")
            if self.tls_insecure:
                raise ConfigError("tls_insecure", True, "only with TLS (mqtts://)")
        if self.key_file is not None and self.cert_file is None:
            raise ConfigError("key_file", self.key_file, "a client key needs cert_file")
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, key)
            if path is not None and not Path(path).is_file():
                raise ConfigError(key, str(path), "an existing PEM file")
        if self.stats_interval < 0:
            raise ConfigError("stats_interval", self.stats_interval, "seconds >= 0 (0: off)")
        if not 5 <= self.keepalive <= 65535:
            raise ConfigError("keepalive", self.keepalive, "seconds 5..65535")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ConfigError(
                "reconnect_min/reconnect_max",
                (self.reconnect_min, self.reconnect_max),
                "0 < reconnect_min <= reconnect_max",
            )
        for key in ("max_events", "max_stats", "max_replies", "max_concurrent_commands"):
            if getattr(self, key) < 1:
                raise ConfigError(key, getattr(self, key), "an integer >= 1")
        for key in ("connect_timeout", "command_timeout", "shutdown_timeout"):
            if not getattr(self, key) > 0:
                raise ConfigError(key, getattr(self, key), "seconds > 0")

    @classmethod
    def from_url(cls, url: str, *, node: str, **options: Any) -> MqttConfig:
        """Build a config from ``--mqtt URL`` and ``--node NAME``.

        Parameters
        ----------
        url : str
            ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...`` (TLS). User and
            password are percent-decoded. TLS files may be given in the query:
            ``?ca=/path/ca.pem&cert=/path/c.pem&key=/path/k.pem&insecure=1``.
        node : str
            The node name.
        **options
            Any other :class:`MqttConfig` field (they override the URL's).

        Raises
        ------
        ConfigError
            Naming ``mqtt url`` (password masked) and what is allowed.
        """
        shown = redact_url(url)
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError("mqtt url", shown, f"{_URL_FORM} ({exc})") from None
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ConfigError("mqtt url", shown, f"scheme mqtt or mqtts: {_URL_FORM}")
        if not parts.hostname:
            raise ConfigError("mqtt url", shown, f"a host: {_URL_FORM}")
        if parts.path not in ("", "/") or parts.fragment:
            raise ConfigError("mqtt url", shown, f"no path or fragment: {_URL_FORM}")
        tls = parts.scheme == "mqtts"
        kwargs: dict[str, Any] = {
            "host": parts.hostname,
            "port": port if port is not None else (8883 if tls else 1883),
            "node": node,
            "tls": tls,
        }
        if parts.username:
            kwargs["username"] = urllib.parse.unquote(parts.username)
        if parts.password is not None:
            kwargs["password"] = urllib.parse.unquote(parts.password)
        names = {"ca": "ca_file", "cert": "cert_file", "key": "key_file"}
        for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            if name in names:
                kwargs[names[name]] = Path(value)
            elif name == "insecure":
                if value.lower() not in _TRUE | _FALSE:
                    raise ConfigError("mqtt url insecure", value, "1/0, true/false, yes/no")
                kwargs["tls_insecure"] = value.lower() in _TRUE
            else:
                raise ConfigError("mqtt url", shown, "query members: ca, cert, key, insecure")
        kwargs.update(options)
        return cls(**kwargs)

    @property
    def base_topic(self) -> str:
        """``<prefix>/<node>``."""
        return f"{self.prefix}/{self.node}"

    def topic(self, leaf: str) -> str:
        """``<prefix>/<node>/<leaf>``."""
        return f"{self.base_topic}/{leaf}"

    def display(self) -> str:
        """The broker as a URL without its password, for logs and banners."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


@dataclass(slots=True)
class _Outgoing:
    cls: MessageClass
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass
class ControlCounters:
    """What the control plane did; published in ``stats`` under ``mqtt``."""

    published: int = 0
    dropped_status: int = 0
    dropped_events: int = 0
    dropped_stats: int = 0
    dropped_replies: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    commands: int = 0
    invalid_commands: int = 0
    failed_commands: int = 0
    stats_errors: int = 0


class Outbox:
    """Bounded, thread-safe queue of messages waiting for the broker.

    ``put`` never blocks: at a class's cap the oldest message of that class is dropped
    and counted. Status is a single slot (only the latest status matters). ``pop`` gives
    status first, then replies, events and stats.
    """

    def __init__(self, *, max_events: int, max_stats: int, max_replies: int) -> None:
        self._lock = threading.Lock()
        self._status: _Outgoing | None = None
        self._queues: dict[MessageClass, collections.deque[_Outgoing]] = {
            MessageClass.REPLY: collections.deque(),
            MessageClass.EVENT: collections.deque(),
            MessageClass.STATS: collections.deque(),
        }
        self._caps = {
            MessageClass.REPLY: max_replies,
            MessageClass.EVENT: max_events,
            MessageClass.STATS: max_stats,
        }
        self.dropped: dict[MessageClass, int] = dict.fromkeys(MessageClass, 0)

    def put(self, msg: _Outgoing) -> None:
        """Queue ``msg``; drop the oldest of its class when the class is full."""
        with self._lock:
            if msg.cls is MessageClass.STATUS:
                if self._status is not None:
                    self.dropped[MessageClass.STATUS] += 1
                self._status = msg
                return
            q = self._queues[msg.cls]
            if len(q) >= self._caps[msg.cls]:
                q.popleft()
                self.dropped[msg.cls] += 1
            q.append(msg)

    def pop(self) -> _Outgoing | None:
        """The next message to send, or ``None`` when empty."""
        with self._lock:
            if self._status is not None:
                msg, self._status = self._status, None
                return msg
            for cls in (MessageClass.REPLY, MessageClass.EVENT, MessageClass.STATS):
                q = self._queues[cls]
                if q:
                    return q.popleft()
            return None

    def requeue(self, msg: _Outgoing) -> None:
        """Put back a message whose publish did not complete (it goes first again)."""
        with self._lock:
            if msg.cls is MessageClass.STATUS:
                if self._status is None:  # a newer status wins
                    self._status = msg
                return
            q = self._queues[msg.cls]
            if len(q) >= self._caps[msg.cls]:
                self.dropped[msg.cls] += 1  # the requeued one is the oldest: drop it
                return
            q.appendleft(msg)

    def depth(self, cls: MessageClass | None = None) -> int:
        """Messages waiting (of one class, or all)."""
        with self._lock:
            if cls is MessageClass.STATUS:
                return int(self._status is not None)
            if cls is not None:
                return len(self._queues[cls])
            return int(self._status is not None) + sum(len(q) for q in self._queues.values())


def _json_default(obj: object) -> Any:
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, uuid.UUID | PurePath):
        return str(obj)
    if isinstance(obj, datetime.datetime | datetime.date):
        return obj.isoformat()
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    if isinstance(obj, Mapping):
        return dict(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    item = getattr(obj, "item", None)  # numpy scalars
    if callable(item):
        return item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), default=_json_default, allow_nan=False).encode()


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")


class ControlPlane:
    """The MQTT control plane of one node (async context manager).

    Parameters
    ----------
    config : MqttConfig
        Broker, node name, QoS, caps.
    handler : CommandHandler, optional
        Runs validated commands (may also be set later with :meth:`set_handler`).
    stats : StatsProvider, optional
        Called every ``config.stats_interval`` for the ``stats`` message.
    status : Mapping, optional
        Extra members for the retained ``online`` status (role, viewer URL ...).
    clock : callable, optional
        Wall-clock seconds for message ``time`` members (tests may pass a fake).

    Notes
    -----
    Entering starts the session task and returns at once, connected or not: the node
    must stream even when the broker is away. :meth:`wait_connected` waits for a session.
    Leaving publishes ``offline`` (retained) when connected, flushes what is queued for at
    most ``config.shutdown_timeout`` seconds, and disconnects cleanly.

    Examples
    --------
    >>> async def on_command(cmd: Command) -> Mapping[str, Any]:   # doctest: +SKIP
    ...     if cmd.action is Action.SNAPSHOT:
    ...         result = await rx.snapshot()
    ...         return {"sop_instance_uid": result.sop_instance_uid}
    ...     raise CommandFailed(f"{cmd.action.value} is not supported by this node")
    >>> cfg = MqttConfig.from_url("mqtt://broker:1883", node="or-3")  # doctest: +SKIP
    >>> async with ControlPlane(cfg, handler=on_command, stats=rx.stats_dict) as cp:
    ...     cp.publish_event(EventKind.STREAM_STARTED, flows=["video0"])
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        handler: CommandHandler | None = None,
        stats: StatsProvider | None = None,
        status: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._handler = handler
        self._stats = stats
        self._status_fields: dict[str, Any] = dict(status or {})
        self._clock = clock
        self.counters = ControlCounters()
        self.outbox = Outbox(
            max_events=config.max_events,
            max_stats=config.max_stats,
            max_replies=config.max_replies,
        )
        self._tls_context = self._make_tls_context() if config.tls else None
        self._event_seq = itertools.count(1)  # next() is atomic: threads may publish
        self._started = clock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._closing = False
        self._session_task: asyncio.Task[None] | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self._command_tasks: set[asyncio.Task[None]] = set()
        self._client: aiomqtt.Client | None = None
        self.last_error: str | None = None

    # -- public API -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a broker session is up right now."""
        return self._connected.is_set()

    def set_handler(self, handler: CommandHandler | None) -> None:
        """Register (or remove) the async command handler."""
        self._handler = handler

    def set_stats_provider(self, stats: StatsProvider | None) -> None:
        """Register (or remove) the stats provider."""
        self._stats = stats

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until a session is up (``TimeoutError`` after ``timeout`` seconds)."""
        async with asyncio.timeout(timeout):  # not wait_for: 3.11's can swallow a cancel
            await self._connected.wait()

    def publish_event(self, kind: EventKind | str, /, **fields: Any) -> None:
        """Queue an event for ``…/events``; returns at once, broker or not.

        Parameters
        ----------
        kind : EventKind or str
            What happened (a :class:`EventKind` or its value).
        **fields
            JSON-able members (UUIDs, paths, enums, numpy scalars are converted), e.g.
            ``sop_instance_uid=...`` for :attr:`EventKind.SNAPSHOT_STORED`. No patient
            data: events leave the node.

        Raises
        ------
        LocalProtocolError
            Unknown kind, a reserved member (kind, node, seq, time) or a value that is not
            JSON-able. Broker trouble never raises.
        """
        try:
            kind = EventKind(kind)
        except ValueError:
            known = ", ".join(k.value for k in EventKind)
            raise LocalProtocolError(f"event kind {kind!r} is not one of: {known}") from None
        clash = {"kind", "node", "seq", "time"} & fields.keys()
        if clash:
            raise LocalProtocolError(f"event members {sorted(clash)} are reserved")
        doc = {
            "kind": kind.value,
            "node": self.config.node,
            "seq": next(self._event_seq),
            "time": _iso(self._clock()),
            **fields,
        }
        try:
            payload = _dumps(doc)
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"event {kind.value}: {exc}") from None
        self._enqueue(
            _Outgoing(
                MessageClass.EVENT, self.config.topic("events"), payload,
                self.config.qos_events, False,
            )
        )
        log.debug("event %s queued (outbox %d)", kind.value, self.outbox.depth())

    def publish_stats(self, extra: Mapping[str, Any] | None = None) -> None:
        """Queue a ``stats`` message now (the periodic task calls this too)."""
        doc: dict[str, Any] = {"node": self.config.node, "time": _iso(self._clock())}
        if self._stats is not None:
            try:
                doc.update(self._stats())
            except Exception:
                self.counters.stats_errors += 1
                log.exception("stats provider failed")
        if extra:
            doc.update(extra)
        doc["mqtt"] = self._own_stats()
        try:
            payload = _dumps(doc)
        except (TypeError, ValueError) as exc:
            self.counters.stats_errors += 1
            log.warning("stats not JSON-able, skipped: %s", exc)
            return
        self._enqueue(
            _Outgoing(
                MessageClass.STATS, self.config.topic("stats"), payload,
                self.config.qos_stats, False,
            )
        )

    def update_status(self, **fields: Any) -> None:
        """Merge ``fields`` into the retained ``online`` status and republish it."""
        self._status_fields.update(fields)
        if not self._closing:
            self._enqueue(self._status_message("online"))

    # -- context manager --------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._closing = False
        self._enqueue(self._status_message("online"))
        self._session_task = asyncio.create_task(
            self._session_loop(), name=f"mqtt-session:{self.config.node}"
        )
        if self.config.stats_interval > 0:
            self._stats_task = asyncio.create_task(
                self._stats_loop(), name=f"mqtt-stats:{self.config.node}"
            )
        log.info("control plane for node %s -> %s", self.config.node, self.config.display())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Say ``offline``, flush for at most ``shutdown_timeout`` and disconnect."""
        if self._session_task is None:
            return
        if self._stats_task is not None:
            self._stats_task.cancel()
        for task in list(self._command_tasks):
            task.cancel()
        pending = [*self._command_tasks, *([self._stats_task] if self._stats_task else [])]
        await asyncio.gather(*pending, return_exceptions=True)
        self._closing = True
        self._enqueue(self._status_message("offline", reason="shutdown"))
        task, self._session_task = self._session_task, None
        if self.connected:
            try:
                async with asyncio.timeout(self.config.shutdown_timeout):
                    await asyncio.shield(task)
            except (TimeoutError, Exception):
                log.warning("control plane: %d messages unsent at shutdown", self.outbox.depth())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self._connected.clear()

    # -- internals --------------------------------------------------------------------

    def _own_stats(self) -> dict[str, Any]:
        self._sync_drop_counters()
        d = dataclasses.asdict(self.counters)
        d["outbox"] = self.outbox.depth()
        d["connected"] = self.connected
        return d

    def _status_message(self, state: str, **extra: Any) -> _Outgoing:
        doc: dict[str, Any] = {
            "state": state,
            "node": self.config.node,
            "version": rtstream.__version__,
            "since": _iso(self._started),
            "time": _iso(self._clock()),
        }
        if state == "online":
            doc.update(self._status_fields)
        doc.update(extra)
        return _Outgoing(
            MessageClass.STATUS, self.config.topic("status"), _dumps(doc),
            self.config.qos_status, True,
        )

    def _enqueue(self, msg: _Outgoing) -> None:
        self.outbox.put(msg)
        self._sync_drop_counters()
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    def _sync_drop_counters(self) -> None:
        d = self.outbox.dropped
        self.counters.dropped_status = d[MessageClass.STATUS]
        self.counters.dropped_events = d[MessageClass.EVENT]
        self.counters.dropped_stats = d[MessageClass.STATS]
        self.counters.dropped_replies = d[MessageClass.REPLY]

    def _make_tls_context(self) -> ssl.SSLContext:
        cfg = self.config
        try:
            ctx = ssl.create_default_context(
                cafile=str(cfg.ca_file) if cfg.ca_file is not None else None
            )
            if cfg.cert_file is not None:
                ctx.load_cert_chain(
                    str(cfg.cert_file), str(cfg.key_file) if cfg.key_file is not None else None
                )
        except (ssl.SSLError, OSError) as exc:
            where = str(cfg.cert_file or cfg.ca_file)
            raise ConfigError("mqtt TLS files", where, str(exc)) from None
        if cfg.tls_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _make_client(self) -> aiomqtt.Client:
        cfg = self.config
        will = aiomqtt.Will(
            topic=cfg.topic("status"),
            payload=_dumps({"state": "offline", "node": cfg.node, "reason": "connection lost"}),
            qos=cfg.qos_status,
            retain=True,
        )
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password,
            identifier=f"rtstream-{cfg.node}-{uuid.uuid4().hex[:8]}",
            will=will,
            clean_session=True,
            keepalive=cfg.keepalive,
            timeout=cfg.connect_timeout,
            tls_context=self._tls_context,
            tls_insecure=cfg.tls_insecure if cfg.tls else None,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            logger=logging.getLogger(__name__ + ".paho"),
        )

    async def _session_loop(self) -> None:
        cfg = self.config
        delay = cfg.reconnect_min
        failures_in_row = 0
        while not self._closing:
            client = self._make_client()
            session_up = False
            try:
                async with client:
                    session_up = True
                    self._client = client
                    self.counters.connects += 1
                    self.last_error = None
                    delay = cfg.reconnect_min
                    failures_in_row = 0
                    log.info("MQTT connected to %s as node %s", cfg.display(), cfg.node)
                    await self._session(client)
                    return  # closing, flushed
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 -- the control plane must never die
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                self.last_error = _describe(exc)
                if session_up:
                    self.counters.disconnects += 1
                    log.warning("MQTT session to %s lost: %s", cfg.display(), self.last_error)
                else:
                    self.counters.connect_failures += 1
                    failures_in_row += 1
                    log.log(
                        logging.WARNING if failures_in_row == 1 else logging.DEBUG,
                        "MQTT connect to %s failed: %s (retrying with back-off)",
                        cfg.display(), self.last_error,
                    )
                if not _only_mqtt_errors(exc):
                    log.error("unexpected error in the MQTT session", exc_info=exc)
            finally:
                self._connected.clear()
                self._client = None
            if self._closing:
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, cfg.reconnect_max)

    async def _session(self, client: aiomqtt.Client) -> None:
        cfg = self.config
        await client.subscribe(cfg.topic("cmd"), qos=cfg.qos_commands)
        # A new session always (re)states the node is online (the will may have fired).
        if not self._closing and self.outbox.depth(MessageClass.STATUS) == 0:
            self.outbox.put(self._status_message("online"))
        self._connected.set()
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(self._reader(client), name=f"mqtt-reader:{cfg.node}")
            await self._writer(client)  # returns only when closing and drained
            reader.cancel()

    async def _writer(self, client: aiomqtt.Client) -> None:
        while True:
            msg = self.outbox.pop()
            if msg is None:
                if self._closing:
                    return
                self._wake.clear()
                if self.outbox.depth():
                    continue
                await self._wake.wait()
                continue
            try:
                await client.publish(
                    msg.topic, msg.payload, qos=msg.qos, retain=msg.retain,
                    timeout=self.config.connect_timeout,
                )
            except BaseException:
                self.outbox.requeue(msg)
                self._sync_drop_counters()
                raise
            self.counters.published += 1

    async def _reader(self, client: aiomqtt.Client) -> None:
        cmd_topic = self.config.topic("cmd")
        async for message in client.messages:
            if not message.topic.matches(cmd_topic):
                continue
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = b"" if payload is None else str(payload).encode()
            self.counters.commands += 1
            if len(self._command_tasks) >= self.config.max_concurrent_commands:
                self._refuse_busy(bytes(payload))
                continue
            task = asyncio.create_task(self._run_command(bytes(payload)), name="mqtt-command")
            self._command_tasks.add(task)
            task.add_done_callback(self._command_tasks.discard)

    def _refuse_busy(self, payload: bytes) -> None:
        try:
            cmd = parse_command(payload)
        except InvalidCommand as exc:
            self.counters.invalid_commands += 1
            self._reply(exc.request_id, False, error=exc.reason)
            return
        self.counters.failed_commands += 1
        self._reply(cmd.id, False, action=cmd.action.value, error="busy: too many commands running")

    async def _run_command(self, payload: bytes) -> None:
        try:
            cmd = parse_command(payload)
        except InvalidCommand as exc:
            self.counters.invalid_commands += 1
            log.debug("invalid command: %s", exc.reason)
            self._reply(exc.request_id, False, error=exc.reason)
            return
        action = cmd.action.value
        handler = self._handler
        if handler is None:
            self.counters.failed_commands += 1
            self._reply(cmd.id, False, action=action, error="this node accepts no commands")
            return
        log.info("command %s (%s)", action, cmd.id)
        try:
            async with asyncio.timeout(self.config.command_timeout):  # keeps a cancel (3.11)
                result = await handler(cmd)
        except CommandFailed as exc:
            self.counters.failed_commands += 1
            self._reply(cmd.id, False, action=action, error=str(exc))
            return
        except TimeoutError:
            self.counters.failed_commands += 1
            self._reply(cmd.id, False, action=action,
                        error=f"timed out after {self.config.command_timeout:g} s")
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counters.failed_commands += 1
            log.exception("command %s (%s) failed", action, cmd.id)
            self._reply(cmd.id, False, action=action, error=f"internal error: {type(exc).__name__}")
            return
        extra = {k: v for k, v in (result or {}).items() if k not in ("id", "ok", "action")}
        self._reply(cmd.id, True, action=action, **extra)

    def _reply(self, request_id: str | None, ok: bool, **fields: Any) -> None:
        doc: dict[str, Any] = {"id": request_id, "ok": ok, **fields}
        try:
            payload = _dumps(doc)
        except (TypeError, ValueError) as exc:
            log.error("reply to %s not JSON-able: %s", request_id, exc)
            payload = _dumps({"id": request_id, "ok": False, "error": "internal error: reply"})
        topic = self.config.topic(f"reply/{request_id}" if request_id else "reply")
        self._enqueue(_Outgoing(MessageClass.REPLY, topic, payload, self.config.qos_replies, False))

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.stats_interval)
            self.publish_stats()


def _only_mqtt_errors(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_mqtt_errors(e) for e in exc.exceptions)
    return isinstance(exc, aiomqtt.MqttError | OSError | TimeoutError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return str(exc) or type(exc).__name__


class NullControlPlane:
    """Stands in for :class:`ControlPlane` when no ``--mqtt`` was given.

    Same publishing methods (validating the event kind like the real one), no network.
    """

    connected = False

    def publish_event(self, kind: EventKind | str, /, **fields: Any) -> None:
        """Check ``kind`` and forget the event."""
        try:
            EventKind(kind)
        except ValueError:
            raise LocalProtocolError(f"event kind {kind!r} is unknown") from None

    def publish_stats(self, extra: Mapping[str, Any] | None = None) -> None:
        """Do nothing."""

    def update_status(self, **fields: Any) -> None:
        """Do nothing."""

    def set_handler(self, handler: CommandHandler | None) -> None:
        """Do nothing: without a broker no command arrives."""

    def set_stats_provider(self, stats: StatsProvider | None) -> None:
        """Do nothing."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


def default_node(role: str) -> str:
    """``<hostname>-<role>`` reduced to a valid node name (the ``--node`` default)."""
    host = socket.gethostname().split(".")[0]
    name = re.sub(r"[^A-Za-z0-9._-]", "-", f"{host}-{role}").strip("-._")[:64]
    return name if NODE_PATTERN.match(name) else role
