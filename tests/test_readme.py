"""README.md as a user guide: the two commands first, generated reference current, commands real."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
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
    for heading in ("## The three uses, step by step", "### 1. An ultrasound or OCT feed",
                    "### 2. A surgery-room broadcast over multicast",
                    "### 3. Recording into an archive", "## Configuration reference",
                    "## PS3.22 conformance", "## Threat model"):
        assert heading in text
    for needle in ("localmac", "TP=2110TPW", "BT.601", "10 ms", "fragmentation",
                   "protected network", "401", "127.0.0.1", "TLS", "INFO"):
        assert needle in text, needle
    for doc in ("docs/performance.md", "docs/mqtt.md", "docs/viewer.md",
                "docs/config-reference.md"):
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
