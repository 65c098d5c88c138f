"""README.md as a user guide: the two commands first, generated reference current, commands real."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

FIRST_BLOCK = """\
make demo   # set up everything, then stream the test source to a receiver, a browser viewer and an archive
make test   # set up everything, then run the whole test suite against real peers
"""


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_reference", ROOT / "scripts" / "gen_config_reference.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def code_blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", text, flags=re.S | re.M)


def test_starts_with_exactly_the_two_commands() -> None:
    text = README.read_text()
    assert text.startswith("# rtstream\n\n```sh\n")
    lang, first = code_blocks(text)[0]
    assert lang == "sh" and first == FIRST_BLOCK


def test_config_reference_is_current() -> None:
    gen = generator()
    text = README.read_text()
    assert gen.splice_readme(text) == text, "run scripts/gen_config_reference.py"
    assert (ROOT / "docs" / "config-reference.md").read_text() == gen.render_docs(), (
        "run scripts/gen_config_reference.py")
    # the generated tables hold every key of the sample config
    section = text[text.index(gen.BEGIN):text.index(gen.END)]
    for key in ("`static_interval_ms`", "`sampling`", "`ptime_us`", "`dscp`", "`bursts`",
                "`patient_name`"):
        assert key in section


def test_sections_and_links() -> None:
    text = README.read_text()
    for heading in ("## The four uses, step by step", "### 1. An ultrasound or OCT feed",
                    "### 2. A surgery-room broadcast over multicast",
                    "### 3. Recording into an archive",
                    "### 4. An operating room on two networks", "## Configuration reference",
                    "## PS3.22 conformance", "## Threat model"):
        assert heading in text
    for needle in ("localmac", "TP=2110TPW", "BT.601", "one grain per ST 2110-30 packet", "fragmentation",
                   "protected network", "401", "127.0.0.1", "TLS", "INFO"):
        assert needle in text, needle
    for doc in ("docs/performance.md", "docs/mqtt.md", "docs/viewer.md",
                "docs/config-reference.md", "docs/renditions.md"):
        assert f"]({doc})" in text
    for name in re.findall(r"samples/[\w.-]+", text):
        assert (ROOT / name).exists(), name


def _commands() -> list[list[str]]:
    out = []
    for lang, block in code_blocks(README.read_text()):
        if lang != "sh":
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip().rstrip("&").strip()
            if line.startswith("rtstream "):
                out.append(shlex.split(line)[1:])
    return out


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: " ".join(a)[:60])
def test_commands_parse_with_the_real_cli(argv: list[str]) -> None:
    from rtstream.cli import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`rtstream {shlex.join(argv)}` is refused: {err.getvalue()}")
    assert args.command == argv[0]
    config = getattr(args, "config", None)
    if config is not None:
        from rtstream.sender import load_sender_config

        load_sender_config(ROOT / config)


# -- the step-by-step section runs as written ----------------------------------------------
#
# Each use's commands run in a network namespace holding only loopback (the fixed ports of
# the README cannot collide with anything, and multicast stays inside), from a scratch
# directory with `samples` linked in. Commands that serve (send, view, archive) start in
# the background, in the README's order, and are stopped with SIGINT at the end; the others
# run to completion. Shortened, never rewritten: `receive` gets `--duration`, `/tmp/` paths
# point into the scratch directory, the heavy multicast video gets a smaller `--video`.

SERVING = {"send", "view", "archive"}


def _use_commands(n: int) -> list[list[str]]:
    text = README.read_text()
    start = text.index(f"### {n}. ")
    end = min(i for i in (text.find("\n### ", start + 1), text.find("\n## ", start + 1)) if i > 0)
    out = []
    for lang, block in code_blocks(text[start:end]):
        if lang != "sh":
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("rtstream "):
                out.append(shlex.split(line)[1:])
    return out


def _shorten(argv: list[str], tmp: str, use: int) -> list[str]:
    argv = [a.replace("/tmp/", f"{tmp}/") for a in argv]
    if argv[0] == "receive":
        argv += ["--duration", "8"]
    if argv[0] == "send" and use == 2:
        argv += ["--video", "320x240@30"]
    if argv[0] == "send" and "--config" in argv:
        from rtstream.config import load_toml

        sdp_out = load_toml(ROOT / argv[argv.index("--config") + 1]).get("sdp_out")
        if isinstance(sdp_out, str) and sdp_out.startswith("/tmp/"):
            argv += ["--sdp-out", sdp_out.replace("/tmp/", f"{tmp}/")]
    return argv


def _ports(argv: list[str]) -> list[int]:
    """TCP ports a serving command listens on, to wait for (from its flags or config)."""
    from rtstream.config import load_toml

    ports = []
    for flag in ("--http", "--port"):
        if flag in argv:
            ports.append(int(argv[argv.index(flag) + 1].rsplit(":", 1)[-1]))
    if "--config" in argv:
        http = load_toml(ROOT / argv[argv.index("--config") + 1]).get("http")
        if isinstance(http, str):
            ports.append(int(http.rsplit(":", 1)[1]))
    return ports


def _run_use(use: int) -> dict[str, object]:
    import os
    import signal
    import subprocess
    import sys
    import tempfile

    from tests.peers import wait_for_tcp

    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="rts-readme-") as tmp:
        os.symlink(ROOT / "samples", Path(tmp) / "samples")
        env = {**os.environ, "HOME": tmp, "XDG_STATE_HOME": tmp}
        background: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        try:
            for i, argv in enumerate(_use_commands(use)):
                argv = _shorten(argv, tmp, use)
                name = f"{i}: rtstream {shlex.join(argv)}"
                log = Path(tmp) / f"cmd{i}.log"
                cmd = [sys.executable, "-m", "rtstream", *argv]
                if argv[0] in SERVING:
                    with open(log, "wb") as out:
                        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=out,
                                                stderr=subprocess.STDOUT)
                    background.append((name, proc, log))
                    for port in _ports(argv):
                        for _ in range(600):
                            if proc.poll() is not None:
                                break  # it stopped: its exit status and output say why
                            try:
                                wait_for_tcp(port, timeout=0.1)
                                break
                            except TimeoutError:
                                continue
                    if argv[0] == "send":
                        time.sleep(1.0)  # the first frames and the SDP file
                else:
                    res = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True,
                                         timeout=90)
                    results[name] = (res.returncode, (res.stdout + res.stderr)[-2000:])
            for name, proc, log in reversed(background):
                proc.send_signal(signal.SIGINT)
                try:
                    rc = proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    rc = -9
                results[name] = (rc, log.read_text(errors="replace")[-2000:])
            results["files"] = sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*.dcm")
                                      if "samples" not in p.parts)
        finally:
            for _, proc, _ in background:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    return results


@pytest.mark.parametrize("use", [1, 2, 3, 4])
def test_step_by_step_commands_run(use: int) -> None:
    from tests.viewer.netns import run_in_netns

    assert _use_commands(use), f"no commands in use {use}"
    res = run_in_netns("tests.test_readme:_run_use", {"use": use}, timeout=240)
    files = res.pop("files")
    for name, (rc, output) in res.items():
        assert rc == 0, f"`{name}` exited {rc}:\n{output}"
    if use == 3:  # snapshots and the clip reached the archive
        assert any(f.startswith("archive/") for f in files), files
