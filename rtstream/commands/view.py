"""``rtstream view``: watch live streams in a browser (WebRTC, one encode per stream)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any

from rtstream.commands._analysis_args import (
    AnalysisSpec,
    add_analysis_arguments,
    analysis_from_args,
    on_control_plane,
    on_viewer,
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
from rtstream.commands._status import Sample, add_status_argument, running_status, status_interval
from rtstream.commands._tls_args import add_tls_arguments, tls_from_args
from rtstream.endpoints import Endpoint, parse_endpoint
from rtstream.errors import ConfigError

HELP = "serve live streams to browsers over WebRTC (overlay, latency, snapshot button)"
DESCRIPTION = """\
Receive the flows an SDP describes and show them in a browser: live video over WebRTC
(one H.264 or VP8 encode per stream, shared by all viewers), a toggleable DICOM metadata
overlay, latency readout and a snapshot button that stores the frame on screen.

The page needs the access token printed with the URL (or given with --token). The server
binds 127.0.0.1 unless --http names another address. No STUN server is used unless
--ice-server is given.

examples:
  rtstream view --sdp stream.sdp --http 127.0.0.1:8080 --store ORTHANC@127.0.0.1:4242
  rtstream view --test-pattern --http 127.0.0.1:8080 --bitrate 8M --fps 60
  rtstream view --test-pattern --whip https://sfu.example/whip/room1 --whip-token T
  rtstream view --sdp stream.sdp --janus http://127.0.0.1:8088/janus --janus-mountpoint 7 \
      --janus-secret S --gop 1

Many viewers: with --janus the stream's one encode goes to a Janus Streaming-plugin RTP
mountpoint (found with its secret, or created with --janus-admin-key) and the page
watches through Janus; overlay, latency and the snapshot button work as before.
"""


def parse_bitrate(text: str) -> int:
    """``8M``, ``2500k`` or ``8000000`` -> bits per second."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*(?:bit/s|bps)?\s*", text)
    if not m:
        raise ConfigError("--bitrate", text, "a number with optional k/M/G suffix, e.g. 8M")
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def parse_hostport(text: str) -> Endpoint:
    """``--http HOST:PORT`` (``[v6]:PORT`` for IPv6; port 0 picks a free one)."""
    return parse_endpoint(text, key="--http", allow_port_zero=True)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``view`` options."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--sdp", metavar="FILE|URL", help="SDP of the flows to receive")
    src.add_argument(
        "--test-pattern", action="store_true", help="show a synthetic moving pattern instead"
    )
    parser.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT",
                        help="where the page is served (default 127.0.0.1:8080)")
    parser.add_argument("--token", help="access token (default: generated and printed)")
    parser.add_argument("--bitrate", default="8M", help="video bitrate, e.g. 8M (default 8M)")
    parser.add_argument("--fps", type=int, default=60, help="encoder frame rate (default 60)")
    parser.add_argument("--codec", choices=["h264", "vp8"], default="h264",
                        help="preferred codec; the other is used if the browser lacks it")
    parser.add_argument("--keyframe-interval", "--gop", dest="keyframe_interval", type=float,
                        default=2.0, metavar="SECONDS",
                        help="seconds between key frames (default 2; Janus viewers start at one)")
    parser.add_argument("--ice-server", action="append", default=[], metavar="URL",
                        help="STUN/TURN URL (repeatable; none by default)")
    parser.add_argument("--ice-interface", action="append", default=[], metavar="NAME|ADDR",
                        help="gather ICE candidates on this interface only (repeatable; "
                             "default: the interface of the --http address)")
    parser.add_argument("--interface", help="interface to join a multicast SDP's groups on (name or IPv4)")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--store", metavar="AET@HOST:PORT", help="archive snapshots by C-STORE")
    store.add_argument("--store-dir", metavar="DIR", type=Path,
                       help="write snapshots as DICOM files into DIR")
    parser.add_argument("--outbox", metavar="DIR", type=Path,
                        help="persistent outbox of snapshots not yet stored "
                             "(default $XDG_STATE_HOME/rtstream/outbox)")
    parser.add_argument("--size", default="1280x720", metavar="WxH",
                        help="test pattern size (default 1280x720)")
    parser.add_argument("--whip", metavar="URL",
                        help="also publish the stream's shared encode to this WHIP endpoint "
                             "(RFC 9725), e.g. a media server for large audiences")
    parser.add_argument("--whip-token", metavar="TOKEN",
                        help="bearer token for the WHIP endpoint")
    parser.add_argument("--whip-stream", metavar="ID",
                        help="stream to publish by WHIP (default: the first one seen)")
    janus = parser.add_argument_group("many viewers through Janus")
    janus.add_argument("--janus", metavar="URL",
                       help="feed the stream to Janus's Streaming plugin, whose HTTP API is at "
                            "URL (e.g. http://127.0.0.1:8088/janus); pages watch through Janus")
    janus.add_argument("--janus-mountpoint", type=int, metavar="ID",
                       help="the RTP mountpoint to feed (created with this id given "
                            "--janus-admin-key)")
    janus.add_argument("--janus-secret", metavar="SECRET",
                       default=os.environ.get("RTSTREAM_JANUS_SECRET"),
                       help="the mountpoint's secret (or $RTSTREAM_JANUS_SECRET)")
    janus.add_argument("--janus-admin-key", metavar="KEY",
                       default=os.environ.get("RTSTREAM_JANUS_ADMIN_KEY"),
                       help="the Streaming plugin's admin_key: create the mountpoint and "
                            "destroy it on exit (or $RTSTREAM_JANUS_ADMIN_KEY)")
    janus.add_argument("--janus-pin", metavar="PIN",
                       help="viewers' pin of a mountpoint rtstream creates (default: random)")
    janus.add_argument("--janus-page-url", metavar="URL",
                       help="Janus's HTTP API as browsers reach it (default: --janus)")
    janus.add_argument("--janus-stream", metavar="ID",
                       help="stream to feed to Janus (default: the first one seen)")
    add_identity_arguments(parser)
    add_analysis_arguments(parser)
    add_tls_arguments(parser)
    add_cli_arguments(parser)
    add_flush_argument(parser)
    add_status_argument(parser)


def _store_config(args: argparse.Namespace) -> Any:
    """The :class:`~rtstream.pacs.store.StoreConfig` of ``--store``/``--store-dir``."""
    from rtstream.pacs.store import StoreConfig

    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    outbox = args.outbox or Path(state) / "rtstream" / "outbox"
    if args.store:
        return StoreConfig.from_target(args.store, outbox=outbox, tls=tls_from_args(args))
    return StoreConfig(outbox=outbox, save_dir=args.store_dir)


async def _start_whip(stack: contextlib.AsyncExitStack, viewer: Any, args: argparse.Namespace) -> None:
    """Publish a stream of ``viewer`` by WHIP once it has appeared (stopped with ``stack``)."""
    from rtstream.viewer.whip import WhipPublisher

    stream = await viewer.wait_stream(args.whip_stream, timeout=None)
    whip = WhipPublisher(
        args.whip, stream_id=stream, encoders=viewer.registry, bearer_token=args.whip_token,
        ice_servers=tuple(args.ice_server), ice_interfaces=tuple(args.ice_interface),
    )
    await stack.enter_async_context(whip)
    print(f"rtstream view: publishing stream {stream} by WHIP, session {whip.resource_url}",
          flush=True)


def _janus_config(args: argparse.Namespace) -> Any:
    """The :class:`~rtstream.viewer.janus.JanusConfig` of ``--janus*``, or None."""
    from rtstream.viewer.janus import JanusConfig

    if not args.janus:
        for flag in ("janus_mountpoint", "janus_pin", "janus_page_url", "janus_stream"):
            if getattr(args, flag) is not None:
                raise ConfigError("--" + flag.replace("_", "-"), getattr(args, flag),
                                  "only with --janus URL")
        return None
    return JanusConfig(
        url=args.janus, mountpoint=args.janus_mountpoint, secret=args.janus_secret,
        admin_key=args.janus_admin_key, pin=args.janus_pin, page_url=args.janus_page_url,
        stream=args.janus_stream,
    )


async def _start_janus(stack: contextlib.AsyncExitStack, viewer: Any, cfg: Any) -> None:
    """Feed a stream of ``viewer`` to Janus once it has appeared (stopped with ``stack``)."""
    from rtstream.viewer.janus import JanusFeeder

    stream = await viewer.wait_stream(cfg.stream, timeout=None)
    feeder = await stack.enter_async_context(JanusFeeder(cfg, viewer.registry, stream))
    viewer.add_janus(feeder)
    stack.callback(viewer.remove_janus, stream)
    mp = feeder.mountpoint
    assert mp is not None  # known once the feeder has started
    print(f"rtstream view: stream {stream} goes to Janus mountpoint {mp.id} "
          f"({'created' if mp.created else 'existing'}); pages watch through {cfg.url}",
          flush=True)


async def _serve(args: argparse.Namespace) -> int:
    from rtstream.viewer.encoder import Codec, EncoderConfig
    from rtstream.viewer.server import ViewerConfig

    host, port = parse_hostport(args.http)
    cfg = ViewerConfig(
        host=host,
        port=port,
        token=args.token,
        ice_servers=tuple(args.ice_server),
        ice_interfaces=tuple(args.ice_interface),
        encoder=EncoderConfig(
            codec=Codec(args.codec),
            bitrate=parse_bitrate(args.bitrate),
            fps=args.fps,
            keyframe_interval_s=args.keyframe_interval,
        ),
    )
    args.janus_cfg = _janus_config(args)
    stop = asyncio.Event()
    # First signal: stop serving and close the receiver (outbox gets --flush-timeout s);
    # a second one ends the process at once (status 130) saying what stays queued.
    stores = bool(args.store or args.store_dir)
    with Stopper("view", stop.set, _store_config(args).outbox if stores else None):
        rc = await _serve_until(args, cfg, stop)
    if stores:
        print(queued_line("view", _store_config(args).outbox), file=sys.stderr)
    return rc


async def _serve_until(args: argparse.Namespace, cfg: Any, stop: asyncio.Event) -> int:
    from rtstream.viewer.server import (
        TestPattern,
        ViewerServer,
        feed_from_receiver,
        snapshot_from_receiver,
    )

    analysis = analysis_from_args(args)
    if args.test_pattern:
        if analysis is not None:
            raise ConfigError("--analyze", args.analyze,
                              "a stream from --sdp (the test pattern is not analysed)")
        m = re.fullmatch(r"(\d+)x(\d+)", args.size)
        if not m:
            raise ConfigError("--size", args.size, "WxH, e.g. 1280x720")
        pattern = TestPattern(
            width=int(m.group(1)), height=int(m.group(2)), fps=args.fps,
            overlay={"patient_name": "Test^Pattern", "patient_id": "RTS-TEST",
                     "study_description": "rtstream test pattern", "modality": "OT",
                     "sop_class": "(synthetic)"},
        )
        async with contextlib.AsyncExitStack() as stack:
            snap = None
            if args.store or args.store_dir:
                from rtstream.pacs.store import StoreClient
                from rtstream.viewer.snapshots import PatternSnapshots

                client = await stack.enter_async_context(StoreClient(_store_config(args)))
                snap = PatternSnapshots(pattern, client)
            viewer = await stack.enter_async_context(ViewerServer(cfg, pattern, snap))
            print(f"rtstream view: open {viewer.url}", flush=True)
            await _serve_viewer(stack, viewer, args, stop)
        return 0

    from rtstream.control.wiring import control_for_viewer
    from rtstream.pacs.store import parse_store_target
    from rtstream.receiver import ReceiverConfig

    # Snapshots go through the receiver (rx.snapshot), which owns the outbox and archive.
    rx_kwargs: dict[str, Any] = {"sdp": args.sdp, "interface": args.interface}
    if args.store:
        parse_store_target(args.store)  # validate early; the receiver takes the text
        rx_kwargs["store"] = args.store
        rx_kwargs["store_tls"] = tls_from_args(args)
    if args.store_dir:
        rx_kwargs["store_dir"] = args.store_dir
    if args.outbox:
        rx_kwargs["outbox"] = args.outbox
    rx_kwargs["context"] = context_from_args(args)
    rx_kwargs["flush_timeout"] = args.flush_timeout
    async with AnalysisSpec.receiver(ReceiverConfig(**rx_kwargs), analysis) as rx:
        feed = feed_from_receiver(rx)
        snapshot = snapshot_from_receiver(rx, feed) if (args.store or args.store_dir) else None
        async with contextlib.AsyncExitStack() as stack:
            viewer = await stack.enter_async_context(
                ViewerServer(cfg, feed, snapshot)
            )
            mqtt = config_from_args(args, role="view")
            node = await stack.enter_async_context(control_for_viewer(mqtt, rx, viewer))
            on_viewer(viewer, rx)
            on_control_plane(node.plane, rx)
            print(f"rtstream view: open {viewer.url}", flush=True)
            echo = asyncio.ensure_future(echo_archive("view", rx.store_client))
            stack.callback(echo.cancel)
            async with running_status(lambda: _sample(rx, viewer),
                                      status_interval(args.status_interval)):
                await _serve_viewer(stack, viewer, args, stop)
    return 0


async def _serve_viewer(stack: contextlib.AsyncExitStack, viewer: Any, args: argparse.Namespace,
                        stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set or the feed ends.

    WHIP and Janus start in the meantime, once their stream has shown a frame however late
    that is (the viewer may well start before the sender); ``stop`` interrupts that wait
    too, and an error while starting them (Janus unreachable, a refused WHIP offer) ends
    the command with its message.
    """

    async def publish() -> None:
        if args.whip:
            await _start_whip(stack, viewer, args)
        if args.janus_cfg is not None:
            await _start_janus(stack, viewer, args.janus_cfg)

    pub = asyncio.ensure_future(publish())
    done = asyncio.ensure_future(viewer.wait())
    halt = asyncio.ensure_future(stop.wait())
    waiting = {pub, done, halt}
    try:
        while True:
            finished, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if pub in finished:
                pub.result()  # a publisher that failed to start ends the command
                waiting.discard(pub)
            if finished - {pub}:
                return
    finally:
        for t in (pub, done, halt):
            t.cancel()
        await asyncio.gather(pub, done, halt, return_exceptions=True)


def _sample(rx: Any, viewer: Any) -> Sample:
    """Receiver and viewer counters for the status line."""
    st = rx.stats
    store = rx.store_client
    return Sample(
        frames=int(st["frames_delivered"]), packets=int(st["packets"]),
        lost=int(st["packets_lost"]), late=int(st["late"]),
        queued=store.depth if store is not None else None, viewers=len(viewer.peers),
    )


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted (or until the receiver's streams end)."""
    return exit_promptly(asyncio.run(_serve(args)))
