"""Everything in one process: sender, receiver, browser viewer and archive (``make demo``).

Theory of operation
-------------------
:func:`run_demo` builds, on 127.0.0.1 only:

1. the embedded archive (:class:`~rtstream.pacs.archive.Archive`, a Storage SCP writing
   ``./archive/<study>/<series>/<sop>.dcm``) on a free TCP port -- or, with ``pacs``, a
   real archive's ``AET@HOST:PORT`` instead;
2. the SDP of the sender (written to a temporary file), from which
3. a :class:`~rtstream.receiver.Receiver` listens on the four UDP ports, storing
   snapshots and clips through its persistent outbox to the archive;
4. the WebRTC viewer (:class:`~rtstream.viewer.server.ViewerServer`) fed from the receiver
   by :func:`~rtstream.viewer.server.feed_from_receiver` (the receiver's items as
   yuv420p, pixfmt's cheap display path), its snapshot button storing
   through the receiver; it listens on 127.0.0.1:8080 (a free port when 8080 is taken)
   and needs the token printed with its URL; its ``GET /metrics`` (same token) exports
   the receiver's, the sender's and the MQTT client's counters;
5. the sender (:class:`~rtstream.control.wiring.SenderNode` around
   :class:`~rtstream.sender.Sender`) streaming the test source (or ``source``) to the
   receiver;
6. with ``mqtt``, one control-plane node (``demo`` by default) answering every command:
   snapshots and recordings go to the receiver, stream_stop/stream_start to the sender.

It stops after ``duration`` seconds, when the source ends, or on SIGINT/SIGTERM; leaving
cancels the sender, closes the viewer's peers, flushes the receiver's outbox into the
archive (bounded wait) and stops the archive last, in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

from rtstream.commands._shutdown import queued_line
from rtstream.commands._status import Sample, running_status
from rtstream.control.mqtt import MqttConfig
from rtstream.control.observe import observe_plane, observe_sender
from rtstream.control.schema import Action
from rtstream.control.wiring import (
    ReceiverNode,
    SenderNode,
    WiringConfig,
    combine_handlers,
    open_plane,
)
from rtstream.endpoints import check_port, parse_dicom_peer
from rtstream.errors import ConfigError
from rtstream.proto.formats import Sampling

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_HTTP_PORT", "DemoConfig", "DemoResult", "run_demo"]

#: The viewer's port when it is free (the demo falls back to any free port otherwise).
DEFAULT_HTTP_PORT = 8080


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """What ``rtstream demo`` runs.

    Attributes
    ----------
    source : str
        Video source spec for the sender (``testsrc``, ``file:PATH``, ``dicom:PATH``...).
    width, height : int or None
        Frame size (None: the source's own, 1280x720 for the test source).
    fps : Fraction or None
        Frame rate (None: the source's own, 30 for the test source).
    sampling : Sampling
        Wire sampling (default YCbCr 4:2:2).
    depth : int
        Bits per component, 8 or 10 (default 8: modest enough for any machine).
    port : int or None
        Base UDP port of the flows (PORT .. PORT+12: with audio comes a rendition flow
        at PORT+12); None picks free ones.
    http_host : str
        Address of the viewer (127.0.0.1 unless told otherwise).
    http_port : int or None
        Viewer port; None means 8080, or any free port when 8080 is taken.
    token : str or None
        Viewer access token (None: generated and printed with the URL).
    archive_dir : Path
        Where the embedded archive writes (``./archive``).
    archive_port : int
        TCP port of the embedded archive (0: any free port).
    pacs : str or None
        ``AET@HOST:PORT`` of a real archive to use instead of the embedded one.
    outbox : Path
        Persistent outbox of instances not yet stored (``./outbox``).
    duration : float or None
        Stop after this many seconds (None: until Ctrl-C or the end of the source).
    flush_timeout : float
        At exit, the most seconds the outbox gets to drain (what is left stays queued).
    status_interval : float
        Seconds between status lines on stderr (0: none).
    snapshot_every : float or None
        Store a snapshot every S seconds.
    audio : bool
        Add the ST 2110-30 audio flow (a 1 kHz tone with the test source).
    loop : bool
        Repeat ``file:``/``dicom:``/``raw:`` sources.
    context : dict
        Patient/study values for the sender (StreamContext field names).
    analyze : callable or None
        ``fn(frame, context) -> findings`` run on the received stream
        (:meth:`rtstream.receiver.Receiver.analyze`), drawn on the viewer, published on
        MQTT and stored with snapshots.
    analyze_layout : str
        The frame layout ``analyze`` gets (``rgb24`` by default).
    store_findings : str
        ``ps``, ``sr``, ``both`` or ``none``: what a snapshot's findings become.
    """

    source: str = "testsrc"
    width: int | None = None
    height: int | None = None
    fps: Fraction | None = None
    sampling: Sampling = Sampling.YCBCR_422
    depth: int = 8
    port: int | None = None
    http_host: str = "127.0.0.1"
    http_port: int | None = None
    token: str | None = None
    archive_dir: Path = Path("archive")
    archive_port: int = 0
    pacs: str | None = None
    outbox: Path = Path("outbox")
    duration: float | None = None
    flush_timeout: float = 5.0
    status_interval: float = 0.0
    snapshot_every: float | None = None
    audio: bool = False
    loop: bool = True
    context: dict[str, str] = field(default_factory=lambda: {
        "patient_name": "Demo^Patient", "patient_id": "RTS-DEMO",
        "study_description": "rtstream demo", "station_name": "DEMO",
    })
    analyze: Callable[..., Any] | None = None
    analyze_layout: str = "rgb24"
    store_findings: str = "both"

    def __post_init__(self) -> None:
        if self.duration is not None and not self.duration > 0:
            raise ConfigError("--duration", self.duration, "a positive number of seconds")
        if self.snapshot_every is not None and not self.snapshot_every > 0:
            raise ConfigError("--snapshot-every", self.snapshot_every, "seconds > 0")
        if self.port is not None and not 1024 <= self.port <= 65523:
            raise ConfigError("--port", self.port, "1024..65523 (PORT..PORT+12 are used)")
        if self.http_port is not None:
            check_port(self.http_port, "--http", allow_zero=True, what="TCP port")
        check_port(self.archive_port, "--archive-port", allow_zero=True, what="TCP port")
        if self.depth not in (8, 10, 12, 16):
            raise ConfigError("--depth", self.depth, "8, 10, 12 or 16")
        if self.pacs is not None:
            parse_dicom_peer(self.pacs, key="--pacs")


@dataclass
class DemoResult:
    """What happened (printed at the end, checked by tests)."""

    url: str = ""
    sdp: str = ""
    archive: str = ""
    frames_sent: int = 0
    frames_received: int = 0
    packets_lost: int = 0
    snapshots: int = 0
    stored: int = 0
    archive_received: int = 0
    analysis: dict[str, int] | None = None


def free_udp_base(count: int = 4, step: int = 2, host: str = "127.0.0.1") -> int:
    """A base port such that ``base + i*step`` for ``i < count`` are free UDP ports."""
    rnd = random.Random()
    for _ in range(200):
        base = rnd.randrange(20000, 60000, 2)
        socks: list[socket.socket] = []
        try:
            for i in range(count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((host, base + i * step))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise ConfigError("--port", "auto", "a free range of UDP ports (give --port)")


def sender_config(cfg: DemoConfig, port: int) -> Any:
    """The :class:`~rtstream.sender.SenderConfig` of the demo's sender."""
    from rtstream.sender import load_sender_config

    video: dict[str, Any] = {"sampling": cfg.sampling, "depth": cfg.depth}
    if cfg.width is not None and cfg.height is not None:
        video.update(width=cfg.width, height=cfg.height)
    if cfg.fps is not None:
        video["fps"] = cfg.fps
    return load_sender_config(None, {
        "source": cfg.source,
        "loop": cfg.loop,
        "session_name": "rtstream demo",
        "video": video,
        "audio": {"enabled": cfg.audio},
        "network": {"dest": "127.0.0.1", "port": port},
        "context": dict(cfg.context),
    })


async def _start_viewer(cfg: DemoConfig, rx: Any) -> Any:
    """Start the viewer on the configured port (8080, else any free one)."""
    from rtstream.viewer.encoder import EncoderConfig
    from rtstream.viewer.server import (
        ViewerConfig,
        ViewerServer,
        feed_from_receiver,
        snapshot_from_receiver,
    )

    fps = 30
    if rx.video and rx.video[0].fmt is not None:
        fps = max(1, round(float(rx.video[0].fmt.exactframerate)))
    ports = [cfg.http_port] if cfg.http_port is not None else [DEFAULT_HTTP_PORT, 0]
    last: ConfigError | None = None
    for port in ports:
        vcfg = ViewerConfig(host=cfg.http_host, port=port, token=cfg.token,
                            encoder=EncoderConfig(bitrate=4_000_000, fps=fps))
        feed = feed_from_receiver(rx)
        server = ViewerServer(vcfg, feed, snapshot_from_receiver(rx, feed))
        try:
            await server.start()
            return server
        except ConfigError as exc:  # the port is taken
            last = exc
            await server.close()
            log.info("viewer port %d is taken, trying another", port)
    if last is not None:  # the last port tried says why, in one line
        raise last
    raise ConfigError("--http", f"{cfg.http_host}:{ports[-1]}", "a free TCP port")


async def run_demo(
    cfg: DemoConfig,
    *,
    mqtt: MqttConfig | None = None,
    out: TextIO | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[DemoResult], None] | None = None,
) -> DemoResult:
    """Run the whole chain until ``duration``, the end of the source or ``stop``.

    Parameters
    ----------
    cfg : DemoConfig
    mqtt : MqttConfig or None
        Control plane (one node for the whole demo).
    out : text stream or None
        Where the banner (viewer URL with token) is printed; None prints nothing.
    stop : asyncio.Event or None
        Set it to stop (the CLI sets it on SIGINT/SIGTERM).
    on_ready : callable or None
        Called once everything listens, with the :class:`DemoResult` so far.
    """
    from rtstream.receiver import Receiver, ReceiverConfig
    from rtstream.sender import Sender

    result = DemoResult()
    stop = stop or asyncio.Event()

    def say(text: str) -> None:
        if out is not None:
            print(f"rtstream demo: {text}", file=out, flush=True)

    port = cfg.port or free_udp_base(count=7)  # PORT..PORT+12: with audio, REND at +12
    scfg = sender_config(cfg, port)
    probe = Sender(scfg)  # the SDP the receiver needs, before anything is sent
    try:
        sdp_text = probe.sdp_text()
        fmt = probe.fmt
    finally:
        probe.source.close()

    with tempfile.TemporaryDirectory(prefix="rtstream-demo-") as tmp:
        sdp_path = Path(tmp) / "demo.sdp"
        sdp_path.write_text(sdp_text)
        result.sdp = str(sdp_path)
        async with contextlib.AsyncExitStack() as stack:
            archive: Any = None
            if cfg.pacs is not None:
                target = cfg.pacs
            else:
                from rtstream.pacs.archive import Archive

                archive = Archive(cfg.archive_dir, cfg.archive_port, "RTSTREAM-ARCH",
                                  port_key="--archive-port")
                await stack.enter_async_context(archive)
                target = archive.target
            result.archive = target
            rx = Receiver(ReceiverConfig(
                sdp=str(sdp_path), store=target, outbox=cfg.outbox,
                snapshot_every=cfg.snapshot_every, pairing_wait_frames=10,
                flush_timeout=cfg.flush_timeout,
            ))
            if cfg.analyze is not None:
                rx.analyze(cfg.analyze, layout=cfg.analyze_layout,
                           store_findings=cfg.store_findings)
            rx = await stack.enter_async_context(rx)
            if archive is None:  # a real PACS: say at once when it does not answer
                echo = asyncio.ensure_future(_echo(rx, say))
                stack.callback(echo.cancel)
            viewer = await _start_viewer(cfg, rx)
            stack.push_async_callback(viewer.close)
            if rx.analyzer is not None:
                from rtstream.viewer.server import findings_to_viewer

                rx.analyzer.on_findings(findings_to_viewer(viewer))
            result.url = viewer.url

            refs: dict[str, Any] = {}

            def stats() -> Mapping[str, Any]:
                if len(refs) < 2:
                    return {"role": "demo"}
                return {"role": "demo", "receiver": refs["rx"].stats(),
                        "sender": refs["tx"].stats()}

            plane = open_plane(mqtt, stats=stats)
            await stack.enter_async_context(plane)
            if rx.analyzer is not None:
                from rtstream.control.findings import publish_findings_events

                publish_findings_events(plane, rx.analyzer)
            rnode = await stack.enter_async_context(ReceiverNode(
                rx, plane, role="demo", viewer=viewer, config=WiringConfig()))
            snode = SenderNode(scfg, plane, make_sender=Sender, role="demo")
            refs.update(rx=rnode, tx=snode)
            # GET /metrics on the viewer (token required): the receiver's counters are
            # there already; add the sender's and the MQTT client's.
            observe_sender(viewer.metrics, lambda: snode.sender)
            observe_plane(viewer.metrics, plane)
            plane.set_handler(combine_handlers({
                Action.SNAPSHOT: rnode.handle,
                Action.RECORD_START: rnode.handle,
                Action.RECORD_STOP: rnode.handle,
                Action.STREAM_START: snode.handle,
                Action.STREAM_STOP: snode.handle,
            }))

            where = "the embedded archive" if archive is not None else "the PACS"
            say(f"sender {cfg.source} {fmt.width}x{fmt.height}@{float(fmt.exactframerate):g} "
                f"{fmt.sampling.value} {fmt.depth}-bit -> 127.0.0.1:{port} (SDP {sdp_path})")
            say(f"snapshots and clips go to {where} {target}"
                + (f", files in {cfg.archive_dir.resolve()}" if archive is not None else ""))
            if mqtt is not None:
                say(f"MQTT node {mqtt.node} on {mqtt.display()} (topics rtstream/{mqtt.node}/...)")
            say(f"open {viewer.url}")
            say("press Ctrl-C to stop" if cfg.duration is None
                else f"stopping after {cfg.duration:g} s")
            if on_ready is not None:
                on_ready(result)

            send_task = asyncio.get_running_loop().create_task(snode.run(), name="demo-sender")
            waiters = [asyncio.ensure_future(stop.wait()), send_task,
                       asyncio.ensure_future(viewer.wait())]
            if cfg.duration is not None:
                waiters.append(asyncio.ensure_future(asyncio.sleep(cfg.duration)))
            try:
                async with running_status(lambda: _sample(rx, snode, viewer),
                                          cfg.status_interval):
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
                say("stopping: sender, viewer, receiver (flushing the outbox), archive")
            if send_task.done() and not send_task.cancelled():
                failure = send_task.exception()
                if failure is not None:
                    raise failure
            if snode.sender is not None:
                result.frames_sent = snode.sender.stats.frames
            st = rx.stats
            result.frames_received = int(st.get("frames_delivered", 0))
            result.packets_lost = int(st.get("packets_lost", 0))
            result.snapshots = int(st.get("snapshots", 0))
            result.analysis = st.get("analysis")
            # leaving the stack: plane, node, viewer, receiver (outbox flush), archive
        if rx.stats.get("store"):
            result.stored = int(rx.stats["store"].get("stored", 0))
        if archive is not None:
            result.archive_received = int(archive.counters["received"])
    if out is not None:  # what stays queued, before the summary line (the last one)
        print(queued_line("demo", cfg.outbox), file=out, flush=True)
    say(f"sent {result.frames_sent} frames, received {result.frames_received} "
        f"(lost packets {result.packets_lost}), stored {result.stored} instance(s)"
        + (f"; archive holds {len(list(cfg.archive_dir.glob('*/*/*.dcm')))} file(s)"
           if cfg.pacs is None else ""))
    if result.analysis is not None:
        say(analysis_line(result.analysis))
    return result


def analysis_line(counts: dict[str, int]) -> str:
    """What ``--analyze`` did, for the closing lines of ``demo`` and ``receive``."""
    return (f"analysis: {counts['analysed']} frame(s) analysed, {counts['skipped']} skipped "
            f"(the callable was busy), {counts['findings']} finding(s), "
            f"{counts['malformed']} malformed, {counts['exceptions']} exception(s)")


def _sample(rx: Any, snode: Any, viewer: Any) -> Sample:
    """Sender, receiver and viewer counters for the status line."""
    st = rx.stats
    store = rx.store_client
    tx = snode.sender
    return Sample(
        frames=int(st["frames_delivered"]), bytes=tx.stats.bytes if tx is not None else None,
        lost=int(st["packets_lost"]), late=tx.stats.late_frames if tx is not None else None,
        queued=store.depth if store is not None else None, viewers=len(viewer.peers),
    )


async def _echo(rx: Any, say: Callable[[str], None]) -> None:
    """C-ECHO the archive once at start; one line when it does not answer."""
    client = rx.store_client
    if client is None:
        return
    error = await client.echo()
    if error is not None:
        c = client.cfg
        say(f"PACS {c.called_aet} at {c.host}:{c.port} does not answer C-ECHO ({error}); "
            f"instances stay queued in {c.outbox} until it does")

