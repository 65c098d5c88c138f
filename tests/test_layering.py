"""The wire layer stays sans-I/O: no proto module imports I/O or codec packages.

Two checks per module: its own source imports nothing forbidden (AST scan), and importing
it in a fresh interpreter loads nothing forbidden beyond what numpy and pydicom load by
themselves (pydicom's optional pixel plugins pull in ``socket`` through PIL/urllib; that
is pydicom's business, not a path for our code to do I/O).
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import rtstream.proto

FORBIDDEN = ("asyncio", "socket", "av", "pynetdicom", "aiortc", "aiohttp", "aiomqtt", "select")
MODULES = sorted(m.name for m in pkgutil.iter_modules(rtstream.proto.__path__))
PROTO_DIR = Path(rtstream.proto.__file__).parent


def test_there_are_proto_modules() -> None:
    assert "rtp" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_proto_source_imports_nothing_forbidden(name: str) -> None:
    tree = ast.parse((PROTO_DIR / f"{name}.py").read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & set(FORBIDDEN), f"{name} imports {imported & set(FORBIDDEN)}"
    # within rtstream, proto may only use itself and the error types
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rtstream"):
            assert node.module.startswith(("rtstream.proto", "rtstream.errors")), node.module


def _loaded_after(code: str) -> set[str]:
    probe = code + f"\nimport sys\nprint(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return {m for m in out.stdout.strip().split(",") if m}


@pytest.mark.parametrize("name", MODULES)
def test_proto_import_loads_nothing_forbidden(name: str) -> None:
    baseline = _loaded_after("import numpy, pydicom")
    loaded = _loaded_after(f"import rtstream.proto.{name}")
    assert loaded <= baseline, f"rtstream.proto.{name} loaded {sorted(loaded - baseline)}"
    assert not loaded & {"asyncio", "av", "pynetdicom", "aiortc", "aiohttp", "aiomqtt"}
