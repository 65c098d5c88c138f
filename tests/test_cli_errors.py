"""Errors a person can act on: typos get a suggestion, a taken port one line that says what to do.

Every command runs as a real process (``python -m rtstream``), on loopback, with the port
it needs taken first by a plain socket of this test.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.peers import free_port

ROOT = Path(__file__).resolve().parent.parent


def rtstream(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtstream", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or ROOT)


def last_error_line(res: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines, res
    return lines[-1]


# -- typos --------------------------------------------------------------------------------


def test_command_typo_suggests_the_command() -> None:
    res = rtstream("sned")
    assert res.returncode == 2
    assert "did you mean 'send'?" in last_error_line(res)


@pytest.mark.parametrize(("typed", "meant"), [("--vidoe", "--video"), ("--frams", "--frames")])
def test_flag_typo_suggests_the_flag(typed: str, meant: str) -> None:
    res = rtstream("send", typed, "3")
    assert res.returncode == 2
    line = last_error_line(res)
    assert typed in line and f"did you mean {meant}?" in line, line


def test_abbreviated_flags_are_refused(tmp_path: Path) -> None:
    # argparse's default took --vide as --video and --frame as --frames: the sender ran
    port = free_port(count=4, step=2)
    res = rtstream("send", "--dest", f"127.0.0.1:{port}", "--vide", "64x48@10", "--frame", "1",
                   "--sdp-out", str(tmp_path / "s.sdp"))
    assert res.returncode == 2, res
    line = last_error_line(res)
    assert "--vide" in line and "--video" in line and "never abbreviated" in line, line
    assert not (tmp_path / "s.sdp").exists()


def test_typo_of_a_required_flag_is_named() -> None:
    # argparse says "one of --sdp --test-pattern is required" before it looks at the typo
    res = rtstream("view", "--test-pattrn")
    assert res.returncode == 2
    assert "did you mean --test-pattern?" in last_error_line(res)


def test_choice_typo_suggests_the_choice() -> None:
    res = rtstream("view", "--test-pattern", "--codec", "h256")
    assert res.returncode == 2
    assert "did you mean 'h264'?" in last_error_line(res)


def test_every_parser_refuses_abbreviations() -> None:
    import argparse

    from rtstream.cli import build_parser

    parser = build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert not parser.allow_abbrev
    for name, sub in subs[0].choices.items():
        assert not sub.allow_abbrev, name


# -- a port already in use ------------------------------------------------------------------


@contextmanager
def taken(kind: int) -> Iterator[int]:
    """A loopback port held by a plain socket (no SO_REUSEADDR) for the block."""
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            s.listen()
        yield s.getsockname()[1]
    finally:
        s.close()


def assert_one_line(res: subprocess.CompletedProcess[str], address: str, flag: str) -> None:
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    line = lines[0]
    assert address in line and flag in line, line
    assert "in use by another program" in line and "stop" in line, line


def test_view_http_port_in_use() -> None:
    with taken(socket.SOCK_STREAM) as port:
        res = rtstream("--log-level", "ERROR", "view", "--test-pattern", "--http",
                       f"127.0.0.1:{port}")
    assert_one_line(res, f"127.0.0.1:{port}", "--http")


def test_send_http_port_in_use(tmp_path: Path) -> None:
    dest = free_port(count=4, step=2)
    with taken(socket.SOCK_STREAM) as port:
        res = rtstream("--log-level", "ERROR", "send", "--dest", f"127.0.0.1:{dest}",
                       "--video", "64x48@10", "--frames", "5", "--http", f"127.0.0.1:{port}")
    assert_one_line(res, f"127.0.0.1:{port}", "--http")


def test_archive_port_in_use(tmp_path: Path) -> None:
    with taken(socket.SOCK_STREAM) as port:
        res = rtstream("--log-level", "ERROR", "archive", "--dir", str(tmp_path / "a"),
                       "--port", str(port))
    assert_one_line(res, f"127.0.0.1:{port}", "--port")


@pytest.mark.parametrize("flag", ["--http", "--archive-port"])
def test_demo_port_in_use(tmp_path: Path, flag: str) -> None:
    with taken(socket.SOCK_STREAM) as port:
        value = f"127.0.0.1:{port}" if flag == "--http" else str(port)
        res = rtstream("--log-level", "ERROR", "demo", flag, value, "--duration", "5",
                       "--video", "64x48@10", "--archive-dir", str(tmp_path / "a"),
                       "--outbox", str(tmp_path / "o"), cwd=tmp_path)
    assert_one_line(res, f"127.0.0.1:{port}", flag)


@pytest.mark.parametrize("command", ["receive", "view"])
def test_receiving_port_in_use(tmp_path: Path, command: str) -> None:
    with taken(socket.SOCK_DGRAM) as port:
        sdp = tmp_path / "s.sdp"
        sent = rtstream("--log-level", "ERROR", "sdp", "--dest", f"127.0.0.1:{port}",
                        "--video", "64x48@10")
        assert sent.returncode == 0, sent
        sdp.write_text(sent.stdout)
        extra = ["--http", "127.0.0.1:0"] if command == "view" else ["--duration", "2"]
        res = rtstream("--log-level", "ERROR", command, "--sdp", str(sdp), *extra)
    assert_one_line(res, str(port), "--sdp")


# -- multicast needs an interface -----------------------------------------------------------


def isolated(*args: str) -> subprocess.CompletedProcess[str]:
    """``rtstream ARGS`` in a fresh network namespace: nothing it sends can leave."""
    from tests.peers import require_program, require_root

    require_root("a network namespace")
    return subprocess.run([require_program("unshare"), "--net", "--", sys.executable, "-m",
                           "rtstream", "--log-level", "ERROR", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_sending_to_a_group_needs_an_interface(tmp_path: Path) -> None:
    res = isolated("send", "--dest", "239.255.0.9:5004", "--video", "64x48@10", "--frames", "2")
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "--interface" in lines[0] and "network.interface" in lines[0], lines[0]
    assert "239.255.0.9" in lines[0] and "lo" in lines[0], lines[0]


def test_joining_a_group_needs_an_interface(tmp_path: Path) -> None:
    sdp = tmp_path / "m.sdp"
    made = rtstream("sdp", "--dest", "239.255.0.9:5004", "--video", "64x48@10")
    assert made.returncode == 0, made
    sdp.write_text(made.stdout)
    res = isolated("receive", "--sdp", str(sdp), "--duration", "1")
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "--interface" in lines[0] and "239.255.0.9" in lines[0] and "lo" in lines[0], lines[0]


@pytest.mark.parametrize("skew", ["-1", "900"])
def test_dup_skew_out_of_range_names_the_flag(skew: str, tmp_path: Path) -> None:
    sdp = tmp_path / "s.sdp"
    sdp.write_text("v=0\r\n")  # never read: the flag is checked first
    res = rtstream("receive", "--sdp", str(sdp), "--dup-skew", skew)
    assert res.returncode == 2
    line = last_error_line(res)
    assert "--dup-skew" in line and "0..500 ms" in line, line
