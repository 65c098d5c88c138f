"""Real peers for the suite: find them, start them on loopback, stop them by PID.

With ``CI=true`` a missing peer is a test failure, never a silent skip.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

CI = os.environ.get("CI", "").lower() == "true"


def require_program(name: str) -> str:
    """Return the path of program ``name``; fail under CI, skip elsewhere, when absent."""
    path = shutil.which(name)
    if path is None:
        for d in ("/usr/sbin", "/usr/bin", "/sbin"):
            cand = Path(d) / name
            if cand.exists():
                return str(cand)
        peer_missing(f"peer program {name!r} is not installed (make deps installs it)")
    return path


def peer_missing(msg: str) -> NoReturn:
    """A peer is missing: a failure under ``CI=true``, a skip on a developer's machine."""
    if CI:
        pytest.fail(msg)
    else:
        pytest.skip(msg)


def require_root(what: str) -> None:
    """Network-namespace tests need root; under CI that is a failure, not a skip."""
    if os.geteuid() != 0:
        peer_missing(f"{what} needs root")


#: Ports handed out lately in this process: not handed out again soon, so two calls of
#: one test (which bind nothing in between) never get the same or overlapping ports.
_RECENT: deque[int] = deque(maxlen=4096)


def _ephemeral_low() -> int:
    """The lowest port the kernel hands a socket bound to port 0 (ip_local_port_range)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(kind: int = socket.SOCK_DGRAM, count: int = 1, step: int = 1) -> int:
    """A port on 127.0.0.1 such that ``port + i*step`` for ``i < count`` are all free.

    For UDP flows rtstream uses base, base+2, base+4, base+6; ask with count=4, step=2
    (count=7 with audio or a stereo pair: right view +8/+10, rendition flow +12).

    The ports lie below the kernel's ephemeral range: a socket bound to port 0 between
    this check and the test's own bind (a sender's, a peer's) cannot take one of them
    (it did: a Sender's socket took a port of the SDP its receiver was about to bind).
    """
    top = min(_ephemeral_low(), 65000) - step * count - 2
    for _ in range(200):
        base = random.randrange(10_000, top) & ~1
        wanted = {base + i * step + j for i in range(count) for j in (0, 1)}
        if wanted & set(_RECENT):
            continue
        socks = []
        try:
            for i in range(count):
                t = socket.socket(socket.AF_INET, kind)
                socks.append(t)
                t.bind(("127.0.0.1", base + i * step))
                if kind == socket.SOCK_DGRAM:
                    t2 = socket.socket(socket.AF_INET, kind)
                    socks.append(t2)
                    t2.bind(("127.0.0.1", base + i * step + 1))
            _RECENT.extend(wanted)
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no free port range found on 127.0.0.1")


@contextmanager
def running(
    args: Sequence[str],
    *,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stop_signal: int = signal.SIGTERM,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a peer process and stop it by PID when the block ends (TERM, then KILL)."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        list(args), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
    )
    try:
        yield proc
    finally:
        stop(proc, stop_signal)
        if log:
            out.close()  # type: ignore[union-attr]


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Stop ``proc`` (and its process group) by PID: ``sig``, then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


def wait_for_tcp(port: int, host: str = "127.0.0.1", timeout: float = 30) -> None:
    """Block until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)
