"""``rtstream send``: stream a source as DICOM-RTV (PS3.22) flows."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from rtstream.commands._identity_args import add_identity_arguments, context_from_args
from rtstream.commands._mqtt_args import add_cli_arguments, config_from_args
from rtstream.commands._shutdown import Stopper
from rtstream.commands._status import Sample, add_status_argument, running_status, status_interval
from rtstream.config import parse_size_rate
from rtstream.control.metrics import metrics_handler
from rtstream.control.mqtt import MqttConfig
from rtstream.control.observe import sender_registry
from rtstream.control.wiring import run_sender_node
from rtstream.endpoints import parse_endpoint
from rtstream.errors import ConfigError
from rtstream.media.sources import AUDIO_SPEC_HELP, SPEC_HELP
from rtstream.net.sdp_http import SdpHttpServer
from rtstream.pacs.context import context_with_worklist
from rtstream.proto.formats import Sampling
from rtstream.sender import (
    VIDEO_SOPS,
    Sender,
    SenderConfig,
    SenderStats,
    load_sender_config,
)

HELP = "send a live source as ST 2110 video/audio with PS3.22 DICOM metadata flows"
DESCRIPTION = f"""\
Send video (ST 2110-20), optional audio (ST 2110-30) and one PS3.22 DICOM-RTV metadata
flow per media flow, all stamped by one media clock: every metadata grain carries exactly
its frame's RTP timestamp, the static part (patient, study, device) goes out at start and
at least once a second.

Ports: video PORT, video metadata PORT+2, audio PORT+4, audio metadata PORT+6.
The SDP is written to --sdp-out and served at http://HOST:PORT/sdp (and /sdp/<mid>,
mid = VID, VMETA, AUD, AMETA) with --http, beside Prometheus metrics at /metrics
(frames, packets, bytes, late frames per flow; docs/observability.md).

sources (--source):   {SPEC_HELP}
audio (--audio-source): {AUDIO_SPEC_HELP}

With --mqtt URL the sender is a node on an MQTT broker (docs/mqtt.md): retained status,
periodic stats, events (stream started/stopped) and the commands stream_stop/stream_start;
the media path never waits for the broker.

A TOML --config file may hold every option (tables [video], [audio], [network],
[pacing], [context]); flags override it. See samples/sender.toml.

examples:
  rtstream send --dest 127.0.0.1:5004 --video 1920x1080@60 --sdp-out /tmp/rtv.sdp
  rtstream send --source dicom:cine.dcm --loop --dest 239.1.1.1:5004 --interface eth0 --ttl 2 --http 0.0.0.0:8080
  rtstream send --source file:clip.mp4 --dest 127.0.0.1:5004 --sampling RGB --depth 8 --audio
"""

def parse_video(text: str) -> dict[str, Any]:
    """``--video WxH@FPS`` (either part optional) -> ``[video]`` overrides; the one spelling
    the TOML's ``video = "..."`` takes too (:func:`rtstream.config.parse_size_rate`)."""
    return parse_size_rate(text, "--video")


def add_sender_options(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``send`` and ``sdp``."""
    parser.add_argument("--config", type=Path, metavar="FILE.toml", help="TOML configuration (flags override it)")
    parser.add_argument("--source", metavar="SPEC", action="append",
                        help=f"video source: {SPEC_HELP} (default testsrc); given twice, the "
                        "left and right views of a stereo pair (a stereo rendition)")
    parser.add_argument("--dest", metavar="HOST:PORT", required=False,
                        help="destination address (unicast or multicast group) and base port "
                        "(default: the config's [network], else 127.0.0.1:5004)")
    parser.add_argument("--video", metavar="WxH@FPS", help="frame size and rate, e.g. 1920x1080@60 or 1280x720@60000/1001 "
                        "(default: the source's; testsrc 1280x720@30)")
    parser.add_argument("--sampling", choices=[s.value for s in Sampling], help="wire sampling (default YCbCr-4:2:2)")
    parser.add_argument("--depth", type=int, choices=[8, 10, 12, 16], help="bits per component (default 10)")
    parser.add_argument("--interlaced", action="store_true", default=None,
                        help="send two fields per frame (SDP interlace; not for YCbCr-4:2:0); "
                        "the field first in time goes first, as the source says")
    parser.add_argument("--field-timestamps", choices=["half", "same"],
                        help="RTP timestamp of an interlaced frame's second field: half a frame "
                        "later (default, GStreamer's way) or the frame's own (what FFmpeg's "
                        "RFC 4175 demuxer needs); TOML video.field_timestamps")
    parser.add_argument("--audio", action="store_true", default=None, help="add an ST 2110-30 audio flow")
    parser.add_argument("--audio-source", metavar="SPEC", help=f"audio input: {AUDIO_SPEC_HELP} (default tone)")
    parser.add_argument("--sop", choices=list(VIDEO_SOPS), help="RTV SOP class (default endoscopic)")
    parser.add_argument("--ttl", type=int, help="multicast TTL (default 1)")
    parser.add_argument("--interface", help="multicast interface (name or IPv4 address; required for a group)")
    parser.add_argument("--source-address", help="local source address (also the SDP source-filter)")
    parser.add_argument("--dscp", type=int, help="DSCP 0..63 for all flows (e.g. 34 = AF41)")
    add_redundant_options(parser)
    add_identity_arguments(parser, title="patient and study context (override [context])")
    parser.add_argument("--session-name", help="SDP s= line")


def add_redundant_options(parser: argparse.ArgumentParser) -> None:
    """SMPTE ST 2022-7 seamless protection: every flow a second time on another network."""
    g = parser.add_argument_group("second network (SMPTE ST 2022-7, TOML [network.redundant])")
    g.add_argument("--dest2", metavar="HOST:PORT",
                   help="send every flow a second time, byte-identical, to this address and base "
                   "port on the second network; the SDP groups the legs with a=group:DUP")
    g.add_argument("--interface2", help="the second network's multicast interface")
    g.add_argument("--source-address2", help="local source address on the second network")


def redundant_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``[network.redundant]`` overrides from ``--dest2``, ``--interface2``, ``--source-address2``."""
    red: dict[str, Any] = {"interface": getattr(args, "interface2", None),
                           "source_address": getattr(args, "source_address2", None)}
    dest2 = getattr(args, "dest2", None)
    if dest2:
        host, port = parse_endpoint(dest2, key="--dest2", allow_ipv6=False)
        red.update(dest=host, port=port)
    return red if any(v is not None for v in red.values()) else {}


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Map flags onto the :class:`SenderConfig` tree (None = not given)."""
    o: dict[str, Any] = {"sop": args.sop, "session_name": args.session_name}
    o.update(_sources(args.source))
    video: dict[str, Any] = {"sampling": args.sampling, "depth": args.depth,
                             "interlaced": args.interlaced,
                             "field_timestamps": args.field_timestamps}
    if args.video:
        video.update(parse_video(args.video))
    o["video"] = video
    o["audio"] = {"enabled": args.audio, "source": args.audio_source}
    if args.audio_source and args.audio is None:
        o["audio"]["enabled"] = True
    net: dict[str, Any] = {"ttl": args.ttl, "interface": args.interface,
                           "source_address": args.source_address, "dscp": args.dscp}
    if args.dest:
        host, port = parse_endpoint(args.dest, key="--dest", allow_ipv6=False)
        net.update(dest=host, port=port)
    if red := redundant_overrides(args):
        net["redundant"] = red
    o["network"] = net
    o["context"] = context_from_args(args) or {}
    for key in ("frames", "duration", "loop", "sdp_out", "http", "dump_frames", "stats_json"):
        if hasattr(args, key):
            v = getattr(args, key)
            o[key] = str(v) if isinstance(v, Path) else v
    if getattr(args, "pacing", None):
        o["pacing"] = {"mode": args.pacing}
    if getattr(args, "no_gso", False):
        net["gso"] = False
    return o


def _sources(given: list[str] | str | None) -> dict[str, Any]:
    """``--source`` once (the video) or twice (left, right views of a stereo pair)."""
    if given is None:
        return {}
    if isinstance(given, str):
        return {"source": given}
    if len(given) > 2:
        raise ConfigError("--source", " ".join(given),
                          "at most twice: the left then the right view of a stereo pair")
    out: dict[str, Any] = {"source": given[0]}
    if len(given) == 2:
        out["stereo_source"] = given[1]
    return out


def build_config(args: argparse.Namespace) -> SenderConfig:
    """Config file, then flags, then the identity of the worklist order (``--worklist``)."""
    cfg = load_sender_config(args.config, overrides_from_args(args))
    worklist = getattr(args, "worklist", None)
    if worklist is None:
        return cfg
    context = context_with_worklist(
        cfg.context,
        worklist=worklist,
        station_aet=args.station_aet,
        accession=args.accession_number,
        sop=cfg.sop,
    )
    return dataclasses.replace(cfg, context=context)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``send`` options."""
    add_sender_options(parser)
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--frames", type=int, metavar="N", help="stop after N frames")
    stop.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument("--loop", action="store_true", default=None, help="repeat file:, raw: and dicom: sources")
    parser.add_argument("--pacing", choices=["linear", "none"],
                        help="spread a frame's packets over the frame period (linear, default) or not")
    parser.add_argument("--sdp-out", type=Path, metavar="FILE", help="write the SDP here")
    parser.add_argument("--http", metavar="HOST:PORT",
                        help="serve the SDP at http://HOST:PORT/sdp and metrics at /metrics")
    parser.add_argument("--dump-frames", type=Path, metavar="DIR",
                        help="write each sent frame's wire bytes as DIR/<rtp-timestamp>.raw")
    parser.add_argument("--stats-json", type=Path, metavar="FILE", help="write run totals here at exit")
    parser.add_argument("--no-gso", action="store_true", help="disable UDP segmentation offload")
    wl = parser.add_argument_group("patient context from a Modality Worklist (C-FIND)")
    wl.add_argument("--worklist", metavar="AET@HOST:PORT",
                    help="at start, take patient and study from today's order for this station "
                         "(or the order named by --accession-number) on this worklist SCP")
    wl.add_argument("--station-aet", metavar="AET",
                    help="Scheduled Station AE Title to match, also our calling AE title "
                         "(default RTSTREAM)")
    add_cli_arguments(parser)
    add_status_argument(parser)


def _sample(senders: list[Sender]) -> Sample:
    """The current sender's counters for the status line."""
    st = senders[-1].stats if senders else SenderStats()
    return Sample(frames=st.frames, bytes=st.bytes, late=st.late_frames)


async def _main(
    cfg: SenderConfig, mqtt: MqttConfig | None = None, status_every: float = 0.0
) -> SenderStats:
    task = asyncio.current_task()
    assert task is not None
    stopper = Stopper("send", task.cancel)  # a second signal exits at once (130)
    stopper.__enter__()
    senders: list[Sender] = []
    http: SdpHttpServer | None = None
    if cfg.http is not None:
        # The one SDP/metrics server of the run, started here (a Sender serves nothing):
        # it outlives the Sender that a stream_stop/stream_start command replaces.
        host, port = parse_endpoint(cfg.http, key="http", allow_port_zero=True)
        registry = sender_registry(lambda: senders[-1] if senders else None)
        http = SdpHttpServer(None, host, port, metrics=metrics_handler(registry))
        await http.start()

    def make_sender(c: SenderConfig) -> Sender:
        tx = Sender(c)
        senders.append(tx)
        if http is not None:
            http.set_session(tx.sdp)
        return tx

    def on_started(tx: Sender) -> None:
        if len(senders) == 1 and cfg.sdp_out is None and cfg.http is None:
            print(tx.sdp_text(), end="", flush=True)

    try:
        # A stream_stop/stream_start command (with --mqtt) replaces the Sender; without a
        # broker this is exactly one Sender run to its end.
        async with running_status(lambda: _sample(senders), status_every):
            await run_sender_node(cfg, mqtt, make_sender=make_sender, on_started=on_started)
    except asyncio.CancelledError:
        pass  # Ctrl-C / SIGTERM: sockets are closed by the context manager
    finally:
        if http is not None:
            await http.stop()
        stopper.__exit__(None, None, None)
    return senders[-1].stats if senders else SenderStats()


def run(args: argparse.Namespace) -> int:
    """Send until done or interrupted; exit 0 on a clean stop."""
    cfg = build_config(args)
    mqtt = config_from_args(args, role="send")
    stats = asyncio.run(_main(cfg, mqtt, status_interval(args.status_interval)))
    summary = {k: stats.as_dict()[k] for k in ("frames", "packets", "bytes", "late_frames", "fps", "mbps")}
    print(json.dumps(summary), file=sys.stderr)
    return 0
