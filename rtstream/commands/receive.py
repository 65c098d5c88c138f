"""``rtstream receive``: receive a DICOM-RTV / ST 2110 rendition described by an SDP."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, TextIO

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
from rtstream.errors import ConfigError, LocalProtocolError
from rtstream.receiver import IncompletePolicy, Receiver, ReceiverConfig
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
"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``receive`` options."""
    parser.add_argument("--sdp", required=True, metavar="FILE|URL", help="SDP file or http:// URL")
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
    parser.add_argument("--rcvbuf", type=int, default=32 << 20, metavar="BYTES",
                        help="SO_RCVBUF per socket (default 32 MiB)")
    parser.add_argument("--interface", help="multicast interface (name or IPv4 address)")
    parser.add_argument("--interface2", help="ST 2022-7: multicast interface of the second legs "
                        "(the SDP's a=group:DUP flows; default --interface)")
    parser.add_argument("--dup-skew", metavar="MS", type=float, default=10.0,
                        help="ST 2022-7: how long a packet missing on the faster leg waits for "
                        "its copy on the other (default 10 ms; 0..500); it is also the most "
                        "latency the protection adds behind such a packet")
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


def build_config(args: argparse.Namespace) -> ReceiverConfig:
    """Flags -> :class:`ReceiverConfig` (ConfigError names the flag)."""
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
        sdp=args.sdp,
        frames=args.frames,
        duration=args.duration,
        incomplete=IncompletePolicy(args.incomplete),
        pairing_wait_frames=args.pairing_wait,
        rcvbuf=args.rcvbuf,
        interface=args.interface,
        interface2=args.interface2,
        dup_skew_ms=args.dup_skew,
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


def _sample(rx: Receiver) -> Sample:
    """The receiver's counters for the status line."""
    st = rx.stats
    store = rx.store_client
    rec = rx.capture.recording
    return Sample(
        frames=int(st["frames_delivered"]), packets=int(st["packets"]),
        lost=int(st["packets_lost"]), late=int(st["late"]),
        queued=store.depth if store is not None else None,
        recording=f"rec {rec.frames}/{rec.limit}" if rec is not None else None,
        legs=legs_status(st),
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
    cfg: ReceiverConfig, stats_json: Path | None, mqtt: MqttConfig | None = None,
    http: tuple[str, int] | None = None, status_every: float = 0.0,
    analysis: AnalysisSpec | None = None,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    # First signal: media stops now (the item stream ends; before the receiver is up, the
    # start is cancelled); leaving the Receiver drains the outbox for --flush-timeout s.
    # A second signal ends the process at once (status 130) saying what stays queued.
    receiving: list[Receiver] = []

    def stop_media() -> None:
        if receiving:
            receiving[0].stop()
        else:
            main_task.cancel()

    def write_stats() -> None:
        if stats_json is not None and receiving:
            stats_json.write_text(json.dumps(receiving[0].stats, indent=2, sort_keys=True) + "\n")

    stopper = Stopper("receive", stop_media, _outbox(cfg), last_words=write_stats)
    stopper.__enter__()
    tty_in = sys.stdin.isatty() and cfg.stores
    stats: dict[str, Any] = {}
    keys = _Keys(sys.stdin) if tty_in else contextlib.nullcontext()
    snapshot_tasks: set[asyncio.Task[Any]] = set()
    side_tasks: list[asyncio.Task[Any]] = []
    try:
        async with (
            AnalysisSpec.receiver(cfg, analysis) as rx,
            control_for_receiver(mqtt, rx, role="receive") as node,
            serve_receiver(http, rx, plane=node.plane),
        ):
            on_control_plane(node.plane, rx)
            receiving.append(rx)
            side_tasks.append(
                loop.create_task(echo_archive("receive", rx.store_client), name="rx-echo"))
            side_tasks.append(loop.create_task(_watch_silence(rx), name="rx-silence"))

            async def snap() -> None:
                try:
                    res = await (rx.stereo_snapshot() if cfg.snapshot_stereo else rx.snapshot())
                    print(f"\nsnapshot {res.sop_instance_uid} stored={res.ok}", file=sys.stderr)
                except LocalProtocolError as exc:
                    print(f"\nsnapshot: {exc}", file=sys.stderr)

            def on_key() -> None:
                ch = sys.stdin.read(1)
                if ch in ("s", "S"):
                    t = loop.create_task(snap())
                    snapshot_tasks.add(t)
                    t.add_done_callback(snapshot_tasks.discard)

            with keys:
                if tty_in:
                    loop.add_reader(sys.stdin.fileno(), on_key)
                try:
                    async with running_status(lambda: _sample(rx), status_every):
                        async for _item in rx:
                            pass
                    if snapshot_tasks:
                        await asyncio.wait(list(snapshot_tasks), timeout=cfg.flush_timeout)
                except asyncio.CancelledError:
                    log.info("interrupted: stopping, queued instances stay in the outbox")
                finally:
                    if tty_in:
                        loop.remove_reader(sys.stdin.fileno())
                    stats = rx.stats
            # leaving the Receiver flushes the outbox state and the dump writers
        stats = rx.stats
    finally:
        for t in [*snapshot_tasks, *side_tasks]:
            t.cancel()
        stopper.__exit__(None, None, None)
        if stats_json is not None and stats:
            stats_json.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return stats


def run(args: argparse.Namespace) -> int:
    """Receive until the limit, the end of the stream or Ctrl-C; exit 0 on a clean stop."""
    cfg = build_config(args)
    mqtt = config_from_args(args, role="receive")
    analysis = analysis_from_args(args)
    try:
        stats = asyncio.run(_main(
            cfg, args.stats_json, mqtt, getattr(args, "http", None),
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
    summary = {k: stats.get(k) for k in (
        "frames_delivered", "packets", "packets_lost", "frames_incomplete", "metadata_matched",
        "metadata_unmatched", "latency_p50_us", "latency_p99_us",
    )}
    if stats.get("analysis") is not None:  # --analyze: what the callable did
        summary["analysis"] = stats["analysis"]
    print(json.dumps(summary), file=sys.stderr)
    outbox = _outbox(cfg)
    if outbox is not None:
        store = stats.get("store") or {}
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
