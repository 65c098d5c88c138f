"""A real mosquitto broker on 127.0.0.1 for the control-plane tests, stopped by PID."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers import require_program, stop, wait_for_tcp


class Broker:
    """One mosquitto process with its own config file; can be stopped and started again.

    Parameters
    ----------
    directory : Path
        Where the config, password file, log and persistence files go.
    max_queued_messages : int
        Per-client queue of QoS 1/2 messages above those in flight (mosquitto.conf(5)).
    users : dict, optional
        ``{user: password}``; when given, anonymous access is off and a password file made
        with ``mosquitto_passwd -b`` is used.
    persistence : bool
        Keep sessions (and their queued messages) across restarts in ``directory``.
    tls : tuple of Path, optional
        ``(cafile, certfile, keyfile)`` to make the listener TLS-only.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_queued_messages: int = 1000,
        max_inflight_messages: int = 20,
        users: dict[str, str] | None = None,
        persistence: bool = False,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        self.program = require_program("mosquitto")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_tcp_port()
        self.log = directory / "mosquitto.log"
        self.conf = directory / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            f"max_queued_messages {max_queued_messages}",
            f"max_inflight_messages {max_inflight_messages}",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if persistence:
            lines += ["persistence true", f"persistence_location {directory}/",
                      "autosave_interval 3600"]
        else:
            lines.append("persistence false")
        if users:
            passwd = require_program("mosquitto_passwd")
            pwfile = directory / "passwd"
            pwfile.touch(mode=0o600)
            for user, password in users.items():
                subprocess.run([passwd, "-b", str(pwfile), user, password], check=True,
                               capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            ca, cert, key = tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen(
            [self.program, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_for_tcp(self.port, timeout=10)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log_text()}") from None

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, signal.SIGTERM)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Factory: ``make_broker(**options)`` starts a mosquitto; all are stopped at the end."""
    brokers: list[Broker] = []

    def factory(**options: Any) -> Broker:
        b = Broker(tmp_path / f"broker{len(brokers)}", **options)
        brokers.append(b)
        b.start()
        return b

    yield factory
    for b in brokers:
        b.stop()


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    """A plain anonymous broker on a free loopback port."""
    return make_broker()
