"""``rtstream receive``: receive a DICOM-RTV / ST 2110 rendition described by an SDP."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from pydicom.uid import generate_uid

from rtstream.commands._analysis_args import (
    AnalysisSpec,
    add_analysis_arguments,
    analysis_from_args,
    on_control_plane,
)
from rtstream.commands._identity_args import add_identity_arguments, context_from_args
from rtstream.commands._mqtt_args import add_cli_arguments, config_from_args
from rtstream.commands._shutdown import (
    Stopper,
    add_flush_argument,
    echo_archive,
    exit_promptly,
    queued_line,
)
from rtstream.commands._status import (
    Sample,
    add_status_argument,
    running_status,
    status_interval,
)
from rtstream.commands._tls_args import add_tls_arguments, tls_from_args
from rtstream.control.mqtt import MqttConfig
from rtstream.control.observe import parse_listen, serve_receiver
from rtstream.control.wiring import control_for_receiver
from rtstream.dicom.realtime import civil_zone
from rtstream.errors import ConfigError, LocalProtocolError
from rtstream.pacs.store import StoreClient
from rtstream.receiver import IncompletePolicy, Receiver, ReceiverConfig
from rtstream.receiver.capture import close_store, store_config
from rtstream.receiver.config import default_outbox

log = logging.getLogger(__name__)

HELP = "receive video/audio with their PS3.22 metadata from an SDP; dump, snapshot, record"
DESCRIPTION = """\
Receive the flows an SDP describes (rtstream's own, or a third party's plain ST 2110-20/-30
SDP without a DICOM metadata flow) and pair each video frame with the metadata grain of
exactly its RTP timestamp.

--dump-frames writes each complete frame's active video in wire pgroup order as
DIR/<rtp-timestamp>.raw; --dump-metadata writes each grain as received (RTV meta
information + data set) as DIR/<rtp-timestamp>.dcm; existing files are never replaced.
--stats-json writes the counters at exit. Snapshots (--snapshot-every, or the 's' key on
a terminal) and clips (--record) become stored DICOM instances, sent by C-STORE (--store)
or saved into a folder (--store-dir) through a persistent outbox. A stream without a
DICOM metadata flow has no patient or study: it is stored only under the identity given
with --patient-id (and --patient-name, --accession-number, --study-description), one
study per session; without one, snapshots and clips of it are refused. With --stereo, a
snapshot of a stereo rendition (a stereo endoscope's left and right views) stores both
views as one two-frame instance (docs/renditions.md).

With --mqtt URL the receiver is a node on an MQTT broker (docs/mqtt.md): retained status,
periodic stats, events (stream started/stopped, snapshot/clip stored with its SOP Instance
UID, loss alarm, archive outage/recovery) and the commands snapshot, record_start,
record_stop, stream_stop and stream_start; the media path never waits for the broker.

Several streams (--sdp given once per stream, e.g. the cameras of one operating room)
are received in this one process; the limits and the dump and store options apply to each
stream, --dump-frames/--dump-metadata DIR write stream n (in --sdp order, from 1) into
DIR/n, snapshots ('s' key, --snapshot-every) are taken of every stream, all of them go
through one outbox and one archive association, and a stream without metadata is stored
under --patient-id in one study shared by all streams of the session. --stats-json
writes {"streams": [...]} (each stream's counters and its "sdp"). --mqtt, --http and
--analyze take one stream: run one receive per stream for those.

With --http HOST:PORT (off by default) it serves Prometheus metrics at /metrics and
{"state": "starting"|"receiving"|"stalled", ...} at /healthz (docs/observability.md).

examples:
  rtstream receive --sdp /tmp/rtv.sdp --frames 300 --dump-frames /tmp/frames
  rtstream receive --sdp http://192.0.2.10:8080/sdp --snapshot-every 10 --store ORTHANC@127.0.0.1:4242
  rtstream receive --sdp cam.sdp --record 5 --store-dir /tmp/archive --stats-json stats.json
  rtstream receive --sdp stereo.sdp --snapshot-every 30 --stereo --store ORTHANC@127.0.0.1:4242
  rtstream receive --sdp third-party.sdp --snapshot-every 10 --store-dir /tmp/archive \
      --patient-id MRN123 --patient-name Doe^Jane --accession-number A42
  rtstream receive --sdp http://192.0.2.10:8080/sdp --http 127.0.0.1:9100
  rtstream receive --sdp or1-room.sdp --sdp or1-endoscope.sdp --snapshot-every 60 \
      --store ORTHANC@127.0.0.1:4242
"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``receive`` options."""
    parser.add_argument("--sdp", required=True, action="append", metavar="FILE|URL",
                        help="SDP file or http:// URL; give it once per stream to receive "
                             "several streams in this one process (one event loop: cheaper "
                             "than a process per stream; see 'several streams' above)")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--frames", type=int, metavar="N", help="stop after N video frames")
    stop.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument("--dump-frames", type=Path, metavar="DIR",
                        help="write complete frames as DIR/<rtp-timestamp>.raw")
    parser.add_argument("--dump-metadata", type=Path, metavar="DIR",
                        help="write grains as received as DIR/<rtp-timestamp>.dcm")
    parser.add_argument("--stats-json", type=Path, metavar="FILE",
                        help="write the counters here at exit")
    parser.add_argument("--snapshot-every", type=float, metavar="S",
                        help="store a snapshot every S seconds")
    parser.add_argument("--stereo", action="store_true",
                        help="snapshots (--snapshot-every, the 's' key, MQTT snapshot) of a "
                             "stereo rendition store the left and right views together as one "
                             "two-frame instance (Stereo Pairs Present YES, H.264) instead of "
                             "one lossless frame of the first view")
    parser.add_argument("--record", type=float, metavar="S",
                        help="record a clip of S seconds from the first frame and store it "
                             "(with the first audio flow's audio as a General Audio Waveform)")
    parser.add_argument("--record-audio", type=float, metavar="SECONDS",
                        help="record SECONDS of the first audio flow and store them as a "
                             "General Audio Waveform instance (an audio-only stream too)")
    parser.add_argument("--store", metavar="AET@HOST:PORT", help="C-STORE to this archive")
    parser.add_argument("--store-dir", type=Path, metavar="DIR",
                        help="save stored instances into DIR instead of sending them")
    parser.add_argument("--outbox", type=Path, metavar="DIR",
                        help="persistent outbox (default $XDG_STATE_HOME/rtstream/outbox)")
    parser.add_argument("--calling-aet", default="RTSTREAM", help="our AE title (default RTSTREAM)")
    parser.add_argument("--incomplete", choices=[p.value for p in IncompletePolicy],
                        default="drop", help="frames that lost packets: drop (default) or deliver")
    parser.add_argument("--pairing-wait", type=float, default=2.0, metavar="FRAMES",
                        help="how long a frame waits for its metadata grain (default 2 frames)")
    parser.add_argument("--rcvbuf", type=int, default=None, metavar="BYTES",
                        help="SO_RCVBUF per socket (default 32 MiB, or room for 8 frames of "
                        "a video flow when that is more: 166 MB at 2160p 10-bit)")
    parser.add_argument("--interface", help="multicast interface (name or IPv4 address)")
    parser.add_argument("--interface2", help="ST 2022-7: multicast interface of the second legs "
                        "(the SDP's a=group:DUP flows; default --interface)")
    parser.add_argument("--dup-skew", metavar="MS", type=float, default=10.0,
                        help="ST 2022-7: how long a packet missing on the faster leg waits for "
                        "its copy on the other (default 10 ms; 0..500); it is also the most "
                        "latency the protection adds behind such a packet")
    parser.add_argument("--no-dup-kernel-filter", dest="dup_kernel_filter", action="store_false",
                        help="ST 2022-7: read every copy and drop it in rtstream, not in the "
                        "kernel (by default an eBPF socket filter drops a video packet's second "
                        "copy before it is read, where the process may load one: CAP_BPF)")
    parser.add_argument("--bind", metavar="ADDRESS",
                        help="receive unicast flows on this local address")
    parser.add_argument("--http", metavar="HOST:PORT", type=_listen,
                        help="serve /metrics (Prometheus) and /healthz here, e.g. 127.0.0.1:9100")
    add_identity_arguments(parser)
    add_analysis_arguments(parser)
    add_tls_arguments(parser)
    add_cli_arguments(parser)
    add_flush_argument(parser)
    add_status_argument(parser)


def _listen(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text, "--http")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _sdps(args: argparse.Namespace) -> list[str]:
    sdp = args.sdp
    return [sdp] if isinstance(sdp, str) else list(sdp)


def build_configs(args: argparse.Namespace) -> list[ReceiverConfig]:
    """Flags -> one :class:`ReceiverConfig` per ``--sdp`` (ConfigError names the flag)."""
    base = build_config(args)
    sdps = _sdps(args)
    if len(sdps) == 1:
        return [base]
    for i, sdp in enumerate(sdps):
        if sdp in sdps[:i]:
            raise ConfigError("--sdp", sdp, "each stream's SDP once")
    http = getattr(args, "http", None)
    for flag, value in (("--mqtt", getattr(args, "mqtt", None)),
                        ("--http", f"{http[0]}:{http[1]}" if http else None),
                        ("--analyze", getattr(args, "analyze", None))):
        if value:
            raise ConfigError(flag, value, f"one --sdp (this receive has {len(sdps)}); "
                                           "run one receive per stream for it")
    context = base.context
    if context is not None and not context.get("study_instance_uid"):
        # a bare stream's identity: one study (UID, date and time) for every stream of the
        # session, in the zone the instances write their times in
        now = datetime.datetime.now(datetime.UTC)
        now = now.astimezone(civil_zone(now, context.get("timezone_offset", "")))
        context = {**context, "study_instance_uid": generate_uid(),
                   "study_date": now.strftime("%Y%m%d"), "study_time": now.strftime("%H%M%S.%f")}

    def sub(d: Path | None, n: int) -> Path | None:
        return d / str(n) if d is not None else None

    return [dataclasses.replace(base, sdp=sdp, context=context,
                                dump_frames=sub(base.dump_frames, n),
                                dump_metadata=sub(base.dump_metadata, n))
            for n, sdp in enumerate(sdps, start=1)]


def build_config(args: argparse.Namespace) -> ReceiverConfig:
    """Flags -> the :class:`ReceiverConfig` of the first ``--sdp`` (ConfigError names the flag)."""
    if args.frames is not None and args.frames < 1:
        raise ConfigError("--frames", args.frames, "a positive number of frames")
    if args.duration is not None and not args.duration > 0:
        raise ConfigError("--duration", args.duration, "a positive number of seconds")
    if (args.snapshot_every or args.record) and not (args.store or args.store_dir):
        raise ConfigError(
            "--snapshot-every/--record", args.snapshot_every or args.record,
            "together with --store AET@HOST:PORT or --store-dir DIR",
        )
    if args.record_audio is not None and not args.record_audio > 0:
        raise ConfigError("--record-audio", args.record_audio, "a positive number of seconds")
    if args.record_audio is not None and not (args.store or args.store_dir):
        raise ConfigError("--record-audio", args.record_audio,
                          "together with --store AET@HOST:PORT or --store-dir DIR")
    if not 0 <= args.dup_skew <= 500:
        raise ConfigError("--dup-skew", args.dup_skew, "0..500 ms")
    return ReceiverConfig(
        sdp=_sdps(args)[0],
        frames=args.frames,
        duration=args.duration,
        incomplete=IncompletePolicy(args.incomplete),
        pairing_wait_frames=args.pairing_wait,
        rcvbuf=args.rcvbuf,
        interface=args.interface,
        interface2=args.interface2,
        dup_skew_ms=args.dup_skew,
        dup_kernel_filter=args.dup_kernel_filter,
        bind_address=args.bind,
        dump_frames=args.dump_frames,
        dump_metadata=args.dump_metadata,
        snapshot_every=args.snapshot_every,
        snapshot_stereo=bool(args.stereo),
        record=args.record,
        record_audio=args.record_audio,
        store=args.store,
        store_dir=args.store_dir,
        outbox=args.outbox,
        calling_aet=args.calling_aet,
        store_tls=tls_from_args(args),
        context=context_from_args(args),
        flush_timeout=args.flush_timeout,
    )


def _sample(rxs: list[Receiver]) -> Sample:
    """The receivers' counters for the status line (summed over several streams, but
    each stream's frame rate on its own)."""
    stats = [rx.stats for rx in rxs]
    store = rxs[0].store_client  # one store client for all of them
    recs = [r for r in (rx.capture.recording for rx in rxs) if r is not None]
    legs = [s for s in map(legs_status, stats) if s is not None]
    return Sample(
        frames=sum(int(st["frames_delivered"]) for st in stats),
        frames_each=tuple(int(st["frames_delivered"]) for st in stats),
        packets=sum(int(st["packets"]) for st in stats),
        lost=sum(int(st["packets_lost"]) for st in stats),
        late=sum(int(st["late"]) for st in stats),
        queued=store.depth if store is not None else None,
        recording=", ".join(f"rec {r.frames}/{r.limit}" for r in recs) or None,
        legs=", ".join(legs) or None,
    )


def legs_status(stats: dict[str, Any]) -> str | None:
    """ST 2022-7 on the status line: ``legs 1+2`` while both legs deliver, else which
    leg is down (``leg 2 DOWN``, in any flow); None without DUP flows."""
    states: dict[int, set[str]] = {}
    for flow in dict(stats.get("flows") or {}).values():
        for leg in flow.get("legs") or ():
            states.setdefault(int(leg["leg"]), set()).add(str(leg["state"]))
    if not states:
        return None
    down = [n for n, s in sorted(states.items()) if s & {"silent", "missing"}]
    if not down:
        return "legs " + "+".join(str(n) for n in sorted(states))
    return " ".join(f"leg {n} DOWN" for n in down)


#: Seconds without a packet after which a flow is said to be silent (issue #17 §5).
SILENCE_S = 2.0


async def _watch_silence(rx: Receiver, period: float = 0.25) -> None:
    """Warn once when a flow got no packet for SILENCE_S seconds, and once when it resumes."""
    last: dict[str, tuple[int, float]] = {}
    silent: set[str] = set()
    while True:
        now = time.monotonic()
        for f in rx.flows.all():
            seen = last.get(f.name)
            if seen is None or f.packets != seen[0]:
                last[f.name] = (f.packets, now)
                if f.name in silent:
                    silent.discard(f.name)
                    log.info("flow %s (%s port %d): packets again", f.name,
                             f.media.address, f.media.port)
            elif f.name not in silent and now - seen[1] >= SILENCE_S and not f.paused:
                silent.add(f.name)
                log.warning("flow %s (%s port %d): no packet for %.0f s", f.name,
                            f.media.address, f.media.port, now - seen[1])
        await asyncio.sleep(period)


class _Keys:
    """Single-key commands on a terminal ('s' = snapshot), terminal restored on exit."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._saved: Any = None

    def __enter__(self) -> _Keys:
        import termios
        import tty

        fd = self.stream.fileno()
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        return self

    def __exit__(self, *exc: object) -> None:
        import termios

        if self._saved is not None:
            termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._saved)


async def _main(
    cfgs: list[ReceiverConfig], stats_json: Path | None, mqtt: MqttConfig | None = None,
    http: tuple[str, int] | None = None, status_every: float = 0.0,
    analysis: AnalysisSpec | None = None,
) -> list[dict[str, Any]]:
    """Receive the streams of ``cfgs`` on this loop; their stats, in ``cfgs`` order."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    # First signal: media stops now (the item streams end; before every receiver is up,
    # the start is cancelled); leaving the receivers drains the outbox for --flush-timeout
    # s. A second signal ends the process at once (status 130) saying what stays queued.
    receiving: list[Receiver] = []

    def stop_media() -> None:
        if len(receiving) == len(cfgs):
            for rx in receiving:
                rx.stop()
        else:
            main_task.cancel()

    def write_stats(stats: list[dict[str, Any]]) -> None:
        if stats_json is not None and stats:
            doc: Any = stats[0] if len(cfgs) == 1 else {"streams": [
                {"sdp": cfg.sdp, **st} for cfg, st in zip(cfgs, stats, strict=True)]}
            stats_json.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")

    first = cfgs[0]
    stopper = Stopper("receive", stop_media, _outbox(first),
                      last_words=lambda: write_stats([rx.stats for rx in receiving]))
    stopper.__enter__()
    tty_in = sys.stdin.isatty() and first.stores
    stats: list[dict[str, Any]] = []
    keys = _Keys(sys.stdin) if tty_in else contextlib.nullcontext()
    snapshot_tasks: set[asyncio.Task[Any]] = set()
    side_tasks: list[asyncio.Task[Any]] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            shared: StoreClient | None = None
            if len(cfgs) > 1 and first.stores:
                # several streams: one outbox and one association, closed after them all
                shared = await stack.enter_async_context(StoreClient(store_config(first)))
                stack.push_async_callback(close_store, shared, first.flush_timeout)
            for cfg in cfgs:
                rx = Receiver(cfg, store=shared)
                receiving.append(await stack.enter_async_context(
                    analysis.attach(rx) if analysis is not None else rx))
            rx = receiving[0]
            node = await stack.enter_async_context(
                control_for_receiver(mqtt, rx, role="receive"))
            await stack.enter_async_context(serve_receiver(http, rx, plane=node.plane))
            on_control_plane(node.plane, rx)
            side_tasks.append(
                loop.create_task(echo_archive("receive", rx.store_client), name="rx-echo"))
            watchers = [loop.create_task(_watch_silence(r), name="rx-silence")
                        for r in receiving]
            side_tasks += watchers

            async def snap(r: Receiver, n: int) -> None:
                which = f"stream {n}: " if len(cfgs) > 1 else ""
                try:
                    res = await (r.stereo_snapshot() if first.snapshot_stereo else r.snapshot())
                    print(f"\n{which}snapshot {res.sop_instance_uid} stored={res.ok}",
                          file=sys.stderr)
                except LocalProtocolError as exc:
                    print(f"\n{which}snapshot: {exc}", file=sys.stderr)

            def on_key() -> None:
                ch = sys.stdin.read(1)
                if ch in ("s", "S"):
                    for n, r in enumerate(receiving, start=1):
                        t = loop.create_task(snap(r, n))
                        snapshot_tasks.add(t)
                        t.add_done_callback(snapshot_tasks.discard)

            with keys:
                if tty_in:
                    loop.add_reader(sys.stdin.fileno(), on_key)
                try:
                    async with running_status(lambda: _sample(receiving), status_every):
                        await _drain(receiving)
                    if snapshot_tasks:
                        await asyncio.wait(list(snapshot_tasks), timeout=first.flush_timeout)
                except asyncio.CancelledError:
                    log.info("interrupted: stopping, queued instances stay in the outbox")
                finally:
                    for t in watchers:  # media stopped: silence from here on is ours
                        t.cancel()
                    if tty_in:
                        loop.remove_reader(sys.stdin.fileno())
                    stats = [r.stats for r in receiving]
            # leaving the receivers flushes the outbox state and the dump writers
        stats = [r.stats for r in receiving]
    finally:
        for t in [*snapshot_tasks, *side_tasks]:
            t.cancel()
        stopper.__exit__(None, None, None)
        write_stats(stats)
    return stats


async def _drain(receivers: list[Receiver]) -> None:
    """Take every item of every receiver until their streams end."""

    async def drain(rx: Receiver) -> None:
        async for _item in rx:
            pass

    if len(receivers) == 1:
        await drain(receivers[0])
        return
    async with asyncio.TaskGroup() as tg:
        for n, rx in enumerate(receivers, start=1):
            tg.create_task(drain(rx), name=f"rx-stream-{n}")


def run(args: argparse.Namespace) -> int:
    """Receive until the limit, the end of the streams or Ctrl-C; exit 0 on a clean stop."""
    cfgs = build_configs(args)
    cfg = cfgs[0]
    mqtt = config_from_args(args, role="receive")
    analysis = analysis_from_args(args)
    try:
        stats = asyncio.run(_main(
            cfgs, args.stats_json, mqtt, getattr(args, "http", None),
            status_every=status_interval(getattr(args, "status_interval", None)),
            analysis=analysis,
        ))
    except (KeyboardInterrupt, asyncio.CancelledError) as exc:
        # Stopped before the receiver was up (0), or a signal after the flush (130):
        # nothing is lost, whatever was not stored yet waits in the outbox.
        outbox = _outbox(cfg)
        if outbox is not None:
            print(queued_line("receive", outbox), file=sys.stderr)
        return exit_promptly(130 if isinstance(exc, KeyboardInterrupt) else 0)
    for each, st in zip(cfgs, stats, strict=True):
        summary = {k: st.get(k) for k in (
            "frames_delivered", "packets", "packets_lost", "frames_incomplete",
            "metadata_matched", "metadata_unmatched", "latency_p50_us", "latency_p99_us",
        )}
        if st.get("analysis") is not None:  # --analyze: what the callable did
            summary["analysis"] = st["analysis"]
        if len(cfgs) > 1:
            summary = {"sdp": each.sdp, **summary}
        print(json.dumps(summary), file=sys.stderr)
    outbox = _outbox(cfg)
    if outbox is not None:
        store = stats[0].get("store") or {}  # several streams share one store client
        where = cfg.store if cfg.store is not None else f"folder {cfg.store_dir}"
        print(f"rtstream receive: stored {store.get('stored', 0)} instance(s) in {where}, "
              f"failed {store.get('failed', 0)}", file=sys.stderr)
        print(queued_line("receive", outbox), file=sys.stderr)
    return exit_promptly(0)


def _outbox(cfg: ReceiverConfig) -> Path | None:
    """The outbox of a receiver that stores instances, else None."""
    if not cfg.stores:
        return None
    return cfg.outbox or default_outbox()
