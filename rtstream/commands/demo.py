"""``rtstream demo``: sender, receiver, browser viewer and archive in one command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from rtstream.commands._analysis_args import add_analysis_arguments, analysis_from_args
from rtstream.commands._mqtt_args import add_cli_arguments, config_from_args
from rtstream.commands._shutdown import Stopper, add_flush_argument, exit_promptly
from rtstream.commands._status import add_status_argument, status_interval
from rtstream.commands.send import parse_video
from rtstream.control.mqtt import MqttConfig
from rtstream.demo import DemoConfig, run_demo
from rtstream.endpoints import parse_endpoint
from rtstream.media.sources import SPEC_HELP
from rtstream.proto.formats import Sampling

HELP = "try everything at once: test source -> receiver -> browser viewer -> archive"
DESCRIPTION = """\
Run a sender (the built-in test source unless --source says otherwise), a receiver with
the browser viewer fed from it, and an embedded DICOM archive writing into ./archive, all
on 127.0.0.1, in one process. Open the printed URL (it carries the access token) in a
browser; the snapshot button stores the frame on screen into the archive. Ctrl-C stops
everything cleanly.

--pacs AET@HOST:PORT stores into a real archive instead of the embedded one; --mqtt URL
puts the demo on an MQTT broker as one node (docs/mqtt.md).

examples:
  rtstream demo
  rtstream demo --source dicom:samples/us-cine.dcm --snapshot-every 10
  rtstream demo --pacs ORTHANC@127.0.0.1:4242 --mqtt mqtt://127.0.0.1:1883 --node demo
"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options."""
    parser.add_argument("--source", default="testsrc", metavar="SPEC",
                        help=f"video source: {SPEC_HELP} (default testsrc)")
    parser.add_argument("--video", metavar="WxH@FPS",
                        help="frame size and rate (default: the source's; testsrc 1280x720@30)")
    parser.add_argument("--sampling", choices=[s.value for s in Sampling], default="YCbCr-4:2:2",
                        help="wire sampling (default YCbCr-4:2:2)")
    parser.add_argument("--depth", type=int, choices=[8, 10, 12, 16], default=8,
                        help="bits per component (default 8)")
    parser.add_argument("--audio", action="store_true", help="add an ST 2110-30 audio flow")
    parser.add_argument("--port", type=int, metavar="PORT",
                        help="base UDP port of the flows, PORT..PORT+12 (default: free ports)")
    parser.add_argument("--http", metavar="HOST:PORT",
                        help="viewer address (default 127.0.0.1:8080, or a free port if taken)")
    parser.add_argument("--token", help="viewer access token (default: generated, printed)")
    parser.add_argument("--archive-dir", type=Path, default=Path("archive"), metavar="DIR",
                        help="where the embedded archive writes (default ./archive)")
    parser.add_argument("--archive-port", type=int, default=0, metavar="PORT",
                        help="DICOM port of the embedded archive (default: a free one)")
    parser.add_argument("--pacs", metavar="AET@HOST:PORT",
                        help="store into this archive instead of the embedded one")
    parser.add_argument("--outbox", type=Path, default=Path("outbox"), metavar="DIR",
                        help="persistent outbox of instances not yet stored (default ./outbox)")
    parser.add_argument("--snapshot-every", type=float, metavar="S",
                        help="also store a snapshot every S seconds")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    add_analysis_arguments(parser)
    add_cli_arguments(parser)
    add_flush_argument(parser)
    add_status_argument(parser)


def build_config(args: argparse.Namespace) -> DemoConfig:
    """Flags -> :class:`DemoConfig` (ConfigError names the flag)."""
    video = parse_video(args.video) if args.video else {}
    http_host, http_port = "127.0.0.1", None
    if args.http:
        http_host, http_port = parse_endpoint(args.http, key="--http", allow_port_zero=True)
    analysis = analysis_from_args(args)
    return DemoConfig(
        analyze=analysis.fn if analysis is not None else None,
        analyze_layout=args.analyze_layout,
        store_findings=args.store_findings,
        source=args.source,
        width=video.get("width"),
        height=video.get("height"),
        fps=video.get("fps"),
        sampling=Sampling(args.sampling),
        depth=args.depth,
        audio=args.audio,
        port=args.port,
        http_host=http_host,
        http_port=http_port,
        token=args.token,
        archive_dir=args.archive_dir,
        archive_port=args.archive_port,
        pacs=args.pacs,
        outbox=args.outbox,
        snapshot_every=args.snapshot_every,
        duration=args.duration,
        flush_timeout=args.flush_timeout,
        status_interval=status_interval(args.status_interval),
    )


async def _main(cfg: DemoConfig, mqtt: MqttConfig | None) -> int:
    stop = asyncio.Event()
    # First signal: stop (the outbox gets --flush-timeout s); a second one exits at once.
    with Stopper("demo", stop.set, cfg.outbox):
        await run_demo(cfg, mqtt=mqtt, out=sys.stdout, stop=stop)  # ends with what stays queued
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the demo until --duration, the end of the source or Ctrl-C."""
    cfg = build_config(args)
    mqtt = config_from_args(args, role="demo")
    return exit_promptly(asyncio.run(_main(cfg, mqtt)))
