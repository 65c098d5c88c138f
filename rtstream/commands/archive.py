"""``rtstream archive``: run the embedded Storage SCP until interrupted."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from rtstream.errors import ConfigError
from rtstream.pacs.archive import Archive
from rtstream.pacs.store import check_aet

HELP = "run a small DICOM archive (Storage SCP) that writes DIR/<study>/<series>/<sop>.dcm"
DESCRIPTION = """\
Accept C-STORE of every storage SOP class (video/H.264, VL, secondary capture, ...) and
write each instance under DIR/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm.
An instance that is already stored is never overwritten (the first copy wins; the sender
still gets success). Binds 127.0.0.1 unless --host says otherwise.

example:
  rtstream archive --dir /srv/archive --port 11112 --aet ARCHIVE
"""


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: a number 0..65535")
    return int(text)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``archive`` options."""
    parser.add_argument("--dir", required=True, type=Path, help="archive root directory")
    parser.add_argument("--port", required=True, type=_port, help="TCP port (0: any free)")
    parser.add_argument("--aet", default="RTSTREAM-ARCH", help="our AE title")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns 0."""
    check_aet(args.aet, "--aet")
    if args.dir.exists() and not args.dir.is_dir():
        raise ConfigError("--dir", str(args.dir), "a directory")
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    old = signal.signal(signal.SIGTERM, _stop)
    try:
        with Archive(args.dir, args.port, args.aet, host=args.host) as archive:
            print(
                f"archive {archive.aet} listening on {archive.host}:{archive.port}, "
                f"writing to {archive.directory}",
                flush=True,
            )
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
            c = archive.counters
            print(
                f"stored {c['received']}, duplicates {c['duplicates']}, failed {c['failed']}",
                flush=True,
            )
    finally:
        signal.signal(signal.SIGTERM, old)
    return 0
