"""Glue between the MQTT control plane and a sender, a receiver or a viewer.

Theory of operation
-------------------
:mod:`rtstream.control.mqtt` knows topics, QoS and reconnection; the pipelines know
sockets and frames. This module joins them without either waiting for the other:

* **Commands** (docs/mqtt.md) are mapped to the application. On a receiving node
  (``receive``, ``view``, ``demo``): ``snapshot`` builds the stored instance of a recent
  frame and makes it durable in the outbox, then answers with its SOP Instance UID
  (``stored`` tells whether the archive already confirmed it); ``record_start`` /
  ``record_stop`` drive the receiver's clip recorder; ``stream_stop`` / ``stream_start``
  stop and resume reading the flows' sockets (whatever arrives meanwhile is discarded).
  On a sending node ``stream_stop`` ends the running :class:`~rtstream.sender.Sender`
  (sockets closed) and ``stream_start`` starts a fresh one from the same configuration:
  new SSRCs and a new RTV SOP Instance UID, which receivers follow as a sender restart
  (PS3.22 §6.2); the SDP keeps its ports and formats.
* **Events**: ``stream_started`` / ``stream_stopped`` (commands, end of stream, and on a
  receiver also packets starting or ceasing to arrive), ``snapshot_stored`` /
  ``clip_stored`` / ``store_failed`` for every instance the receiver hands to its store
  client, whoever asked for it (the viewer's button, ``--snapshot-every``, a command),
  ``loss_alarm`` / ``loss_cleared`` from the per-flow ``packets_lost`` deltas of
  ``rx.stats``, ``archive_outage`` / ``archive_recovered`` from the store client.
* **Stats**: the provider called by the control plane's own timer returns ``rx.stats``
  (or the sender's totals) plus the node's role and whether it is streaming.

Everything published goes through :meth:`ControlPlane.publish_event`, an in-memory
append: the media path never waits for the broker, and a broker that is down only fills
(capped) queues. The monitor that computes loss and activity runs once per
``WiringConfig.monitor_interval`` on the event loop and reads counters only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from rtstream.control.mqtt import (
    CommandFailed,
    CommandHandler,
    ControlPlane,
    EventKind,
    MqttConfig,
    NullControlPlane,
)
from rtstream.control.schema import Action, Command
from rtstream.errors import ConfigError, LocalProtocolError, RtstreamError

if TYPE_CHECKING:
    from rtstream.pacs.store import StoreEvent, StoreResult
    from rtstream.receiver import ReceiverLike, StoredInstance
    from rtstream.sender import Sender, SenderConfig, SenderStats

log = logging.getLogger(__name__)

__all__ = [
    "ActivityMonitor",
    "LegMonitor",
    "LossMonitor",
    "Plane",
    "ReceiverNode",
    "SenderNode",
    "WiringConfig",
    "combine_handlers",
    "control_for_receiver",
    "control_for_viewer",
    "open_plane",
    "run_sender_node",
]

class Plane(Protocol):
    """What the wiring needs of a control plane (:class:`ControlPlane` or the null one)."""

    def publish_event(self, kind: EventKind | str, /, **fields: Any) -> None: ...

    def update_status(self, **fields: Any) -> None: ...


class _ViewerConfig(Protocol):
    @property
    def host(self) -> str: ...


class ViewerLike(Protocol):
    """What the wiring reads of a viewer (:class:`~rtstream.viewer.server.ViewerServer`)."""

    @property
    def cfg(self) -> _ViewerConfig: ...

    @property
    def port(self) -> int: ...

    @property
    def streams(self) -> Collection[str]: ...

    @property
    def peers(self) -> Collection[str]: ...


@dataclass(frozen=True, kw_only=True)
class WiringConfig:
    """Thresholds of the events derived from counters.

    Attributes
    ----------
    monitor_interval : float
        Seconds between two looks at the counters (the loss window).
    loss_ratio : float
        ``loss_alarm`` when a flow lost at least this fraction of its packets in one
        window (and at least one packet).
    clear_after : int
        ``loss_cleared`` after this many consecutive windows without loss.
    silence : float
        A receiving node says ``stream_stopped`` (reason ``no packets``) after this many
        seconds without a packet, and ``stream_started`` when packets come back.
    snapshot_wait : float
        Seconds a ``snapshot`` command waits for the archive's confirmation before
        answering with ``stored: false`` (the instance is safe in the outbox already).
    """

    monitor_interval: float = 1.0
    loss_ratio: float = 0.0
    clear_after: int = 3
    silence: float = 2.0
    snapshot_wait: float = 10.0

    def __post_init__(self) -> None:
        if not self.monitor_interval > 0:
            raise ConfigError("monitor_interval", self.monitor_interval, "seconds > 0")
        if not 0 <= self.loss_ratio < 1:
            raise ConfigError("loss_ratio", self.loss_ratio, "a fraction 0 <= r < 1")
        if self.clear_after < 1:
            raise ConfigError("clear_after", self.clear_after, "an integer >= 1")
        if not self.silence > 0:
            raise ConfigError("silence", self.silence, "seconds > 0")
        if not self.snapshot_wait >= 0:
            raise ConfigError("snapshot_wait", self.snapshot_wait, "seconds >= 0")


# -- counters -> events (no I/O: fed by the monitor task, tested directly) ---------------


class LossMonitor:
    """Turns cumulative per-flow ``packets`` / ``packets_lost`` counters into alarms.

    Parameters
    ----------
    ratio : float
        Alarm threshold: lost / (received + lost) within one window.
    clear_after : int
        Windows without loss before the alarm is cleared.
    """

    def __init__(self, *, ratio: float = 0.0, clear_after: int = 3) -> None:
        self.ratio = ratio
        self.clear_after = clear_after
        self._last: dict[str, tuple[int, int]] = {}
        self._alarmed: dict[str, int] = {}  # flow -> clean windows seen since the alarm

    def update(
        self, flows: Mapping[str, Mapping[str, Any]], window_s: float
    ) -> list[tuple[EventKind, dict[str, Any]]]:
        """Compare with the previous call; return the events to publish."""
        events: list[tuple[EventKind, dict[str, Any]]] = []
        for name, counters in flows.items():
            packets = int(counters.get("packets", 0) or 0)
            lost = int(counters.get("packets_lost", 0) or 0)
            prev = self._last.get(name)
            self._last[name] = (packets, lost)
            if prev is None:
                d_packets, d_lost = packets, lost
            else:
                d_packets, d_lost = max(0, packets - prev[0]), max(0, lost - prev[1])
            ratio = d_lost / (d_packets + d_lost) if d_lost else 0.0
            if d_lost > 0 and ratio >= self.ratio:
                if name not in self._alarmed:
                    events.append((EventKind.LOSS_ALARM, {
                        "flow": name, "lost": d_lost, "ratio": round(ratio, 6),
                        "window_s": round(window_s, 3),
                    }))
                self._alarmed[name] = 0
            elif name in self._alarmed and d_lost == 0:
                self._alarmed[name] += 1
                if self._alarmed[name] >= self.clear_after:
                    del self._alarmed[name]
                    events.append((EventKind.LOSS_CLEARED, {"flow": name}))
        return events

    @property
    def alarmed(self) -> frozenset[str]:
        """Flows in alarm now."""
        return frozenset(self._alarmed)


class LegMonitor:
    """Turns the per-leg ``state`` and ``silences`` counters of ST 2022-7 flows into
    ``leg_silent`` / ``leg_back`` events.

    A leg's ``silences`` counts every time it went silent for 100 ms (or was found
    missing at the start), so an outage shorter than the monitor interval is still
    reported: ``leg_silent`` then ``leg_back`` in the same look.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, int], tuple[int, str, int]] = {}

    def update(self, flows: Mapping[str, Mapping[str, Any]]) -> list[tuple[EventKind, dict[str, Any]]]:
        """Compare with the previous call; return the events to publish. ``missing`` in
        ``leg_silent`` says the leg had delivered nothing before (a network down at start)."""
        events: list[tuple[EventKind, dict[str, Any]]] = []
        for name, counters in flows.items():
            for leg in counters.get("legs") or ():
                number = int(leg.get("leg", 0))
                silences = int(leg.get("silences", 0) or 0)
                state = str(leg.get("state", ""))
                packets = int(leg.get("packets", 0) or 0)
                prev_silences, prev_state, prev_packets = self._last.get(
                    (name, number), (0, "starting", 0))
                self._last[(name, number)] = (silences, state, packets)
                base = {"flow": name, "leg": number, "mid": str(leg.get("mid", ""))}
                went = silences > prev_silences
                if went:
                    events.append((EventKind.LEG_SILENT, {
                        **base, "missing": prev_packets == 0,
                        "lost": int(leg.get("lost", 0) or 0)}))
                if state == "up" and (went or prev_state in ("silent", "missing")):
                    events.append((EventKind.LEG_BACK, {
                        **base, "recovered": int(leg.get("recovered", 0) or 0)}))
        return events


class ActivityMonitor:
    """Says when packets start and stop arriving (``stream_started`` / ``stream_stopped``).

    Parameters
    ----------
    silence : float
        Seconds without a new packet before the stream counts as stopped.
    """

    def __init__(self, *, silence: float = 2.0) -> None:
        self.silence = silence
        self.active = False
        self._packets: int | None = None
        self._last_change = 0.0

    def update(self, packets: int, now: float) -> str | None:
        """``"started"``, ``"stopped"`` or None, given the total packet count at ``now``."""
        moved = self._packets is not None and packets > self._packets
        if self._packets is None and packets > 0:
            moved = True
        self._packets = packets
        if moved:
            self._last_change = now
            if not self.active:
                self.active = True
                return "started"
            return None
        if self.active and now - self._last_change >= self.silence:
            self.active = False
            return "stopped"
        return None

    def reset(self, packets: int, now: float) -> None:
        """Forget the history (after the node itself stopped or resumed the stream)."""
        self._packets = packets
        self._last_change = now
        self.active = False


def combine_handlers(routes: Mapping[Action, CommandHandler]) -> CommandHandler:
    """One command handler dispatching each action to its own handler.

    Actions without a route are answered ``ok: false`` saying so.
    """

    async def handler(cmd: Command) -> Mapping[str, Any] | None:
        target = routes.get(cmd.action)
        if target is None:
            raise CommandFailed(f"{cmd.action.value} is not supported by this node")
        return await target(cmd)

    return handler


def open_plane(
    config: MqttConfig | None,
    *,
    handler: CommandHandler | None = None,
    stats: Callable[[], Mapping[str, Any]] | None = None,
    status: Mapping[str, Any] | None = None,
) -> ControlPlane | NullControlPlane:
    """A :class:`ControlPlane` for ``config``, or a :class:`NullControlPlane` when None."""
    if config is None:
        return NullControlPlane()
    return ControlPlane(config, handler=handler, stats=stats, status=status)


# -- receiving nodes ---------------------------------------------------------------------


def _destination(rx: ReceiverLike) -> str:
    cfg = rx.cfg
    if cfg.store:
        return str(cfg.store)
    return f"dir:{cfg.store_dir}" if cfg.store_dir is not None else "none"


class ReceiverNode:
    """Control of one :class:`~rtstream.receiver.Receiver` (and optionally its viewer).

    Use as an async context manager around the receiver's lifetime; it observes the
    instances the receiver stores and its archive's outages, starts the counter monitor
    and unsubscribes everything on exit. Only the receiver's public, typed surface
    (:class:`~rtstream.receiver.ReceiverLike`) is used.

    Parameters
    ----------
    rx : Receiver
        An entered receiver.
    plane : ControlPlane or NullControlPlane
        Where events go.
    role : str
        ``receive``, ``view`` or ``demo`` (published in status and stats).
    viewer : ViewerServer or None
        Adds the viewer's streams and peer count to stats and status.
    config : WiringConfig
        Thresholds.
    """

    def __init__(
        self,
        rx: ReceiverLike,
        plane: Plane,
        *,
        role: str = "receive",
        viewer: ViewerLike | None = None,
        config: WiringConfig | None = None,
    ) -> None:
        self.rx = rx
        self.plane = plane
        self.role = role
        self.viewer = viewer
        self.config = config or WiringConfig()
        self.loss = LossMonitor(ratio=self.config.loss_ratio, clear_after=self.config.clear_after)
        self.legs = LegMonitor()
        self.activity = ActivityMonitor(silence=self.config.silence)
        self.stopped_flows: set[str] = set()
        self._unsubscribe: list[Callable[[], None]] = []
        self._monitor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> ReceiverNode:
        capture = self.rx.capture
        self._unsubscribe = [capture.on_stored(self._on_instance),
                             capture.on_store_event(self._on_store_event)]
        self.plane.update_status(**self.status())
        self._monitor = asyncio.get_running_loop().create_task(
            self._monitor_loop(), name=f"rtstream-{self.role}-monitor"
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
            self._monitor = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.activity.active or self.stopped_flows:
            self.plane.publish_event(
                EventKind.STREAM_STOPPED, flows=self.flow_names(), reason="shutdown"
            )
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []

    # -- information --------------------------------------------------------------------

    def flow_names(self) -> list[str]:
        """The SDP mids of the receiver's flows."""
        return self.rx.flow_names

    def status(self) -> dict[str, Any]:
        """Members for the retained ``online`` status (no token, no patient data)."""
        doc: dict[str, Any] = {
            "role": self.role,
            "sdp": str(self.rx.cfg.sdp),
            "flows": self.flow_names(),
            "streaming": not self.stopped_flows,
            "archive": _destination(self.rx),
        }
        if self.viewer is not None:
            host = self.viewer.cfg.host
            doc["viewer"] = f"http://{host}:{self.viewer.port}/"
        return doc

    def stats(self) -> dict[str, Any]:
        """The stats provider: ``rx.stats`` plus role, streaming state and viewer peers."""
        doc: dict[str, Any] = dict(self.rx.stats)
        doc["role"] = self.role
        doc["streaming"] = self.activity.active and not self.stopped_flows
        doc["stopped_flows"] = sorted(self.stopped_flows)
        doc["loss_alarm"] = sorted(self.loss.alarmed)
        if self.viewer is not None:
            doc["viewer"] = {
                "streams": sorted(self.viewer.streams),
                "peers": len(self.viewer.peers),
            }
        return doc

    # -- commands -----------------------------------------------------------------------

    async def handle(self, cmd: Command) -> Mapping[str, Any] | None:
        """The command handler of a receiving node (docs/mqtt.md)."""
        try:
            if cmd.action is Action.SNAPSHOT:
                return await self._snapshot(cmd)
            if cmd.action is Action.RECORD_START:
                return self._record_start(cmd)
            if cmd.action is Action.RECORD_STOP:
                return await self._record_stop(cmd)
            if cmd.action is Action.STREAM_STOP:
                return self._stream(cmd, run=False)
            if cmd.action is Action.STREAM_START:
                return self._stream(cmd, run=True)
        except LocalProtocolError as exc:
            raise CommandFailed(str(exc)) from None
        raise CommandFailed(f"{cmd.action.value} is not supported by this node")

    def _video_flow(self, cmd: Command) -> str:
        name = cmd.args.get("flow")
        names = self.rx.video_flow_names
        if not names:
            raise CommandFailed("this node receives no video flow")
        if name is None:
            return names[0]
        if name in names:
            return str(name)
        raise CommandFailed(f"no video flow {name!r} here (flows: {', '.join(self.flow_names())})")

    async def _snapshot(self, cmd: Command) -> Mapping[str, Any]:
        rx = self.rx
        if rx.store_client is None:
            raise CommandFailed("no archive configured (start with --store or --store-dir)")
        flow = self._video_flow(cmd)
        if flow in self.stopped_flows:
            raise CommandFailed(f"flow {flow} is stopped")
        rtp = cmd.args.get("rtp_timestamp")
        # "stereo": both views of a stereo rendition in one instance; default: the node's
        # --stereo, unless the command names one flow (then that flow's frame)
        stereo = cmd.args.get("stereo")
        if stereo is None:
            stereo = rx.cfg.snapshot_stereo and "flow" not in cmd.args
        if stereo and "flow" in cmd.args:
            raise CommandFailed("a stereo snapshot stores both views: give no flow")
        stopped = sorted(set(rx.video_flow_names) & self.stopped_flows) if stereo else []
        if stopped:  # its pair would be an old one
            raise CommandFailed(f"flow {stopped[0]} is stopped")
        # durable in the outbox when this returns (no frame or pair yet: LocalProtocolError)
        if stereo:
            inst = await rx.capture.queue_stereo_snapshot(rtp_timestamp=rtp)
        else:
            inst = await rx.capture.queue_snapshot(flow=flow, rtp_timestamp=rtp)
        uid = inst.sop_instance_uid
        reply: dict[str, Any] = {"sop_instance_uid": uid,
                                 "sop_class_uid": str(inst.dataset.SOPClassUID),
                                 "rtp_timestamp": inst.rtp_timestamp, "stereo": bool(stereo)}
        try:
            async with asyncio.timeout(self.config.snapshot_wait):  # keeps a cancel (3.11)
                result = await asyncio.shield(inst.future)
        except TimeoutError:
            reply.update(stored=False, queued=True)
            return reply
        if not result.ok:
            raise CommandFailed(f"snapshot {uid} was not stored: {result.error}")
        reply["stored"] = True
        return reply

    def _record_start(self, cmd: Command) -> Mapping[str, Any]:
        flow = self._video_flow(cmd)
        if flow != self.rx.video_flow_names[0]:
            raise CommandFailed("only the first video flow can be recorded")
        if self.rx.store_client is None:
            raise CommandFailed("no archive configured (start with --store or --store-dir)")
        seconds = cmd.args.get("max_seconds")
        self.rx.capture.record_start(seconds=float(seconds) if seconds is not None else None)
        self.plane.publish_event(EventKind.RECORDING_STARTED, flow=flow, max_seconds=seconds)
        return {"flow": flow}

    async def _record_stop(self, cmd: Command) -> Mapping[str, Any]:
        recording = self.rx.capture.recording
        frames = recording.frames if recording is not None else 0
        flow = recording.flow if recording is not None else None
        result = await self.rx.capture.record_stop()
        self.plane.publish_event(EventKind.RECORDING_STOPPED, flow=flow, frames=frames)
        if not result.ok:
            raise CommandFailed(f"clip {result.sop_instance_uid} was not stored")
        return {"sop_instance_uid": result.sop_instance_uid, "frames": frames}

    def _stream(self, cmd: Command, *, run: bool) -> Mapping[str, Any]:
        name = cmd.args.get("flow")
        flows = [n for n in self.rx.flow_names if name is None or n == name]
        if not flows:
            raise CommandFailed(f"no flow {name!r} here (flows: {', '.join(self.flow_names())})")
        # A media flow takes its metadata flow with it.
        for n in list(flows):
            meta = self.rx.metadata_flow_of(n)
            if meta is not None and meta not in flows:
                flows.append(meta)
        changed = [n for n in flows if (n in self.stopped_flows) == run]
        for n in flows:
            if run:
                self.rx.resume_flow(n)
                self.stopped_flows.discard(n)
            else:
                self.rx.pause_flow(n)
                self.stopped_flows.add(n)
        packets = int(self.rx.stats.get("packets", 0))
        self.activity.reset(packets, time.monotonic())
        if changed:
            kind = EventKind.STREAM_STARTED if run else EventKind.STREAM_STOPPED
            extra = {"sdp": str(self.rx.cfg.sdp)} if run else {"reason": "command"}
            self.plane.publish_event(kind, flows=changed, **extra)
        self.plane.update_status(**self.status())
        return {"flows": flows, "changed": changed}

    # -- store events ---------------------------------------------------------------------

    def _on_instance(self, inst: StoredInstance) -> None:
        """Every instance the receiver queued (a command, the viewer, --snapshot-every)."""
        ds = inst.dataset
        members: dict[str, Any] = {
            "clip": inst.clip,
            "sop_instance_uid": inst.sop_instance_uid,
            "sop_class_uid": str(ds.get("SOPClassUID", "")),
            "frames": inst.frames,
            "flow": inst.flow,
            "rtp_timestamp": None if inst.clip else inst.rtp_timestamp,
            "destination": _destination(self.rx),
        }
        inst.future.add_done_callback(lambda f: self._on_stored(members, f))

    def _on_stored(self, members: dict[str, Any], fut: asyncio.Future[StoreResult]) -> None:
        if fut.cancelled():
            return  # shutting down: the instance stays in the outbox for the next run
        exc = fut.exception()
        result = None if exc is not None else fut.result()
        base = {k: members[k] for k in ("sop_instance_uid", "destination")}
        if result is None or not result.ok:
            error = str(exc) if exc is not None else str(result.error if result else "")
            self.plane.publish_event(EventKind.STORE_FAILED, error=error, **base)
        elif members["clip"]:
            self.plane.publish_event(EventKind.CLIP_STORED, frames=members["frames"], **base)
        else:
            self.plane.publish_event(
                EventKind.SNAPSHOT_STORED, sop_class_uid=members["sop_class_uid"],
                flow=members["flow"], rtp_timestamp=members["rtp_timestamp"], **base,
            )

    def _on_store_event(self, event: StoreEvent, detail: str) -> None:
        kind = event.value
        store = self.rx.store_client
        pending = store.depth if store is not None else 0
        if kind == "outage":
            self.plane.publish_event(EventKind.ARCHIVE_OUTAGE, destination=_destination(self.rx),
                                     pending=pending, error=detail)
        elif kind == "recovered":
            sent = int(store.counters.get("stored", 0)) if store is not None else 0
            self.plane.publish_event(EventKind.ARCHIVE_RECOVERED,
                                     destination=_destination(self.rx), sent=sent)

    # -- monitor --------------------------------------------------------------------------

    def check(self, now: float, window_s: float) -> None:
        """One look at the counters: loss and activity events (the monitor calls this)."""
        stats = self.rx.stats
        flows = {n: f for n, f in stats.get("flows", {}).items() if n not in self.stopped_flows}
        for kind, members in self.loss.update(flows, window_s):
            self.plane.publish_event(kind, **members)
        for kind, members in self.legs.update(flows):
            self.plane.publish_event(kind, **members)
        change = self.activity.update(int(stats.get("packets", 0)), now)
        if change == "started":
            self.plane.publish_event(EventKind.STREAM_STARTED, flows=self.flow_names(),
                                     sdp=str(self.rx.cfg.sdp))
        elif change == "stopped":
            self.plane.publish_event(EventKind.STREAM_STOPPED, flows=self.flow_names(),
                                     reason="no packets")

    async def _monitor_loop(self) -> None:
        interval = self.config.monitor_interval
        last = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            try:
                self.check(now, now - last)
            except Exception:  # the monitor must not die: it only reads counters
                log.exception("control monitor failed")
            last = now


@contextlib.asynccontextmanager
async def control_for_receiver(
    mqtt: MqttConfig | None,
    rx: ReceiverLike,
    *,
    role: str = "receive",
    viewer: ViewerLike | None = None,
    config: WiringConfig | None = None,
) -> AsyncIterator[ReceiverNode]:
    """Put a receiver (and its viewer) on the control plane for the ``async with`` body.

    Parameters
    ----------
    mqtt : MqttConfig or None
        The broker (the commands make it from their flags with
        :func:`rtstream.commands._mqtt_args.config_from_args`); None means no broker: the
        node runs exactly as before.
    rx : Receiver
        An entered receiver.
    role : str
        Node role for status and stats.
    viewer : ViewerServer or None
        The viewer fed from ``rx``, if any.
    """
    cfg = mqtt
    node_ref: list[ReceiverNode] = []

    async def handler(cmd: Command) -> Mapping[str, Any] | None:
        return await node_ref[0].handle(cmd)

    plane = open_plane(cfg, handler=handler, stats=lambda: node_ref[0].stats())
    async with plane:
        node = ReceiverNode(rx, plane, role=role, viewer=viewer, config=config)
        node_ref.append(node)
        async with node:
            yield node


def control_for_viewer(
    mqtt: MqttConfig | None, rx: ReceiverLike, server: ViewerLike
) -> contextlib.AbstractAsyncContextManager[ReceiverNode]:
    """One line for ``rtstream view``: ``async with control_for_viewer(mqtt, rx, viewer):``.

    ``mqtt`` is None when the view command got no ``--mqtt``: nothing connects anywhere.
    """
    return control_for_receiver(mqtt, rx, role="view", viewer=server)


# -- sending nodes -----------------------------------------------------------------------


class SenderNode:
    """Run a :class:`~rtstream.sender.Sender` under control: stop and start it by command.

    Parameters
    ----------
    cfg : SenderConfig
        What to send; every (re)start builds a new ``Sender`` from it.
    plane : ControlPlane or NullControlPlane
        Where events go.
    make_sender : callable
        ``make_sender(cfg) -> Sender`` (the CLI passes one with its status line).
    on_started : callable or None
        Called with each entered sender (the CLI prints the SDP the first time).
    role : str
        Node role for status and stats.
    """

    def __init__(
        self,
        cfg: SenderConfig,
        plane: Plane,
        *,
        make_sender: Callable[[SenderConfig], Sender] | None = None,
        on_started: Callable[[Sender], None] | None = None,
        role: str = "send",
    ) -> None:
        self.cfg = cfg
        self.plane = plane
        self.role = role
        self._make = make_sender or _default_sender
        self._on_started = on_started
        self.sender: Sender | None = None
        self.starts = 0
        self._want = asyncio.Event()
        self._want.set()
        self._run_task: asyncio.Task[SenderStats] | None = None
        self._stopping = False
        self._totals: dict[str, Any] = {}

    @property
    def streaming(self) -> bool:
        """Whether a sender is running now."""
        return self._run_task is not None and not self._run_task.done()

    def flow_names(self) -> list[str]:
        """The SDP mids of the flows sent."""
        tx = self.sender
        if tx is None:
            return []
        return [m.mid for m in tx.sdp.media if m.mid]

    def status(self) -> dict[str, Any]:
        """Members for the retained ``online`` status."""
        n = self.cfg.network
        doc: dict[str, Any] = {"role": self.role, "streaming": self.streaming,
                               "dest": f"{n.dest}:{n.port}", "flows": self.flow_names()}
        if self.cfg.http is not None:
            doc["sdp"] = f"http://{self.cfg.http}/sdp"
        if self.sender is not None and self.sender.sop_instance_uid is not None:
            doc["rtv_sop_instance_uid"] = self.sender.sop_instance_uid
        return doc

    def stats(self) -> dict[str, Any]:
        """The stats provider: the running sender's totals (the last ones when stopped)."""
        doc: dict[str, Any] = dict(self._totals)
        if self.sender is not None:
            doc.update(self.sender.stats.as_dict())
        doc.update(role=self.role, streaming=self.streaming, starts=self.starts)
        return doc

    async def handle(self, cmd: Command) -> Mapping[str, Any] | None:
        """The command handler of a sending node."""
        if cmd.action in (Action.STREAM_START, Action.STREAM_STOP):
            if cmd.args.get("flow") is not None:
                raise CommandFailed("a sender starts and stops all its flows together; "
                                    "omit args.flow")
            if cmd.action is Action.STREAM_STOP:
                was = self.streaming
                self._want.clear()
                task = self._run_task
                if task is not None and not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                return {"changed": was}
            was = self._want.is_set() and self.streaming
            self._want.set()
            for _ in range(200):  # until the new sender runs (its set-up takes a moment)
                if self.streaming or self._stopping:
                    break
                await asyncio.sleep(0.01)
            return {"changed": not was, "rtv_sop_instance_uid":
                    self.sender.sop_instance_uid if self.sender is not None else None}
        raise CommandFailed(f"{cmd.action.value} needs a receiving node "
                            "(rtstream receive/view with --store)")

    async def run(self) -> SenderStats | None:
        """Send until the stream ends by itself (frames, duration, end of source).

        ``stream_stop`` / ``stream_start`` commands stop the sender and start a new one
        meanwhile. Returns the last sender's :class:`~rtstream.sender.SenderStats`.
        Cancelling stops everything (sockets closed, ``stream_stopped`` published).
        """
        stats: SenderStats | None = None
        try:
            while True:
                await self._want.wait()
                tx = self._make(self.cfg)
                async with tx:
                    self.sender = tx
                    self.starts += 1
                    if self._on_started is not None:
                        self._on_started(tx)
                    self._run_task = asyncio.get_running_loop().create_task(
                        tx.run(), name="rtstream-sender-run")
                    self.plane.publish_event(
                        EventKind.STREAM_STARTED, flows=self.flow_names(),
                        rtv_sop_instance_uid=tx.sop_instance_uid,
                        **({"sdp": f"http://{self.cfg.http}/sdp"} if self.cfg.http else {}),
                    )
                    self.plane.update_status(**self.status())
                    try:
                        stats = await self._run_task
                    except asyncio.CancelledError:
                        if self._want.is_set():  # not a stream_stop: we are being cancelled
                            raise
                        stats = tx.stats
                        self.plane.publish_event(EventKind.STREAM_STOPPED,
                                                 flows=self.flow_names(), reason="command")
                        self._totals = tx.stats.as_dict()
                        self.plane.update_status(**self.status())
                        continue
                self.plane.publish_event(EventKind.STREAM_STOPPED, flows=self.flow_names(),
                                         reason="end")
                self.plane.update_status(**self.status())
                return stats
        except asyncio.CancelledError:
            self._stopping = True
            task = self._run_task
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if self.sender is not None and self._want.is_set():
                self.plane.publish_event(EventKind.STREAM_STOPPED, flows=self.flow_names(),
                                         reason="shutdown")
            raise
        except RtstreamError as exc:
            self.plane.publish_event(EventKind.STREAM_STOPPED, flows=self.flow_names(),
                                     reason=f"error: {type(exc).__name__}")
            raise


def _default_sender(cfg: SenderConfig) -> Sender:
    from rtstream.sender import Sender  # the sender's imports only when a node sends

    return Sender(cfg)


async def run_sender_node(
    cfg: SenderConfig,
    mqtt: MqttConfig | None,
    *,
    make_sender: Callable[[SenderConfig], Sender] | None = None,
    on_started: Callable[[Sender], None] | None = None,
    role: str = "send",
) -> SenderStats | None:
    """Run a sender with its control plane (``rtstream send --mqtt``); returns its stats."""
    mcfg = mqtt
    ref: list[SenderNode] = []

    async def handler(cmd: Command) -> Mapping[str, Any] | None:
        return await ref[0].handle(cmd)

    plane = open_plane(mcfg, handler=handler, stats=lambda: ref[0].stats())
    async with plane:
        node = SenderNode(cfg, plane, make_sender=make_sender, on_started=on_started, role=role)
        ref.append(node)
        return await node.run()

