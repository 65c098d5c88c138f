"""Long runs are not silent (issue #17 §5): status lines, flow silence, quiet libraries.

``receive`` off a terminal logs a ``status:`` line every ``--status-interval`` seconds with
its counters; when the sender is frozen (SIGSTOP: a real silence on the wire) each flow is
warned about once, naming its address and port, and said to be back once (SIGCONT). At
``--log-level INFO`` pynetdicom's per-association lines stay out of both the receiver's
and the archive's output.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_shutdown import Proc, start_sender


@pytest.fixture
def frozen_sender(tmp_path: Path) -> Iterator[tuple[Proc, Path]]:
    """A running ``rtstream send``; yields the process and its SDP file."""
    tx, sdp = start_sender(tmp_path)
    try:
        yield tx, sdp
    finally:
        if tx.proc.poll() is None:
            tx.proc.send_signal(signal.SIGCONT)
        tx.kill()


def test_status_lines_silence_warning_and_quiet_libraries(
    tmp_path: Path, frozen_sender: tuple[Proc, Path]
) -> None:
    tx, sdp = frozen_sender
    arch = Proc("--log-level", "INFO", "archive", "--dir", str(tmp_path / "arch"), "--port", "0",
                "--aet", "ARCH")
    rx: Proc | None = None
    try:
        port = int(arch.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1))
        rx = Proc("--log-level", "INFO", "receive", "--sdp", str(sdp),
                  "--store", f"ARCH@127.0.0.1:{port}", "--outbox", str(tmp_path / "outbox"),
                  "--snapshot-every", "0.5", "--status-interval", "1")
        rx.wait_for(r"snapshot \S+ stored ok=True")
        status = rx.wait_for(r"status: .*\n").group(0)
        for field in ("fps", "pkt/s", "lost ", "late ", "queued "):
            assert field in status, status
        tx.proc.send_signal(signal.SIGSTOP)  # the sender freezes: nothing on the wire
        rx.wait_for(r"no packet for", timeout=20)
        time.sleep(3.0)  # still silent: no second warning
        tx.proc.send_signal(signal.SIGCONT)
        rx.wait_for(r"packets again", timeout=20)
        time.sleep(1.5)
        rc, _ = rx.exit_within(rx.interrupt(), 10)
        assert rc == 0, rx.output
    finally:
        if rx is not None:
            rx.kill()
        arch.exit_within(arch.interrupt(), 10)
    out = rx.output
    silent = re.findall(r"flow (\S+) \(127\.0\.0\.1 port (\d+)\): no packet for", out)
    back = re.findall(r"flow (\S+) \(127\.0\.0\.1 port (\d+)\): packets again", out)
    assert silent, out
    assert len(silent) == len(set(silent)), out  # once per flow
    assert sorted(back) == sorted(silent), out  # and back once each
    assert len(re.findall(r"status: ", out)) >= 3, out
    assert re.search(r"stored [1-9]\d* instance\(s\) in ARCH@127\.0\.0\.1", out), out
    for noise in ("Requesting Association", "Sending Store Request"):
        assert noise not in out, out
    for noise in ("Accepting Association", "Received Store Request"):
        assert noise not in arch.output, arch.output


def test_format_status_rates_and_fields() -> None:
    from rtstream.commands._status import Sample, format_status, status_interval

    before = Sample(frames=100, bytes=1_000_000, lost=0, late=1, queued=0, viewers=1)
    now = Sample(frames=130, bytes=2_250_000, lost=3, late=2, queued=4, viewers=2,
                 recording="rec 30/150")
    line = format_status(now, before, 1.0, 12.0)
    assert line == ("12s | 30.0 fps | 10.0 Mbit/s | lost 3 | late 2 | queued 4 | viewers 2 "
                    "| rec 30/150")
    rx = format_status(Sample(frames=60, packets=7000, lost=0, late=0), None, 2.0, 2.0)
    assert rx == "2s | 30.0 fps | 3500 pkt/s | lost 0 | late 0"
    # several streams in one receive: each one's rate (a stalled camera shows), not the sum
    two = format_status(Sample(frames=230, frames_each=(120, 110), packets=10),
                        Sample(frames=110, frames_each=(60, 50), packets=0), 1.0, 3.0)
    assert two == "3s | 60.0/60.0 fps | 10 pkt/s"
    stalled = format_status(Sample(frames=180, frames_each=(120, 60)),
                            Sample(frames=120, frames_each=(60, 60)), 1.0, 4.0)
    assert stalled == "4s | 60.0/0.0 fps"

    class Tty:
        def isatty(self) -> bool:
            return True

    class Pipe:
        def isatty(self) -> bool:
            return False

    assert status_interval(None, Tty()) == 1.0  # type: ignore[arg-type]
    assert status_interval(None, Pipe()) == 10.0  # type: ignore[arg-type]
    assert status_interval(0.0, Tty()) == 0.0  # type: ignore[arg-type]
