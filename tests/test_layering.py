"""Imports only point down: every module of the package against the layer table.

The table (:data:`LAYERS`) is the target layout of issue #14 and DESIGN.md §2: a module
may import rtstream modules of its own layer and the layers below, never above, and each
layer has third-party packages it must not import (I/O, codecs, network stacks). The scan
is static (AST of every ``.py`` file, every ``import``/``from ... import`` anywhere,
including inside functions and ``if TYPE_CHECKING:`` blocks: a type-only import is still
a dependency of the design). ``argparse`` belongs to the command line only.

Two layers are also checked dynamically: each ``proto/`` and ``dicom/`` module is imported
in a fresh interpreter, which must not load forbidden packages beyond what numpy and
pydicom load by themselves (pydicom's optional pixel plugins pull in ``socket`` through
PIL/urllib; that is pydicom's business, not a path for our code to do I/O).

Every violation prints as ``module -> imported (layer X -> layer Y)``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import rtstream

PACKAGE_DIR = Path(rtstream.__file__).parent

# (layer, name, rtstream modules/packages in it, third-party it must not import)
_IO = ("asyncio", "socket", "av", "pynetdicom", "aiortc", "aiohttp", "aiomqtt")
LAYERS: tuple[tuple[int, str, tuple[str, ...], tuple[str, ...]], ...] = (
    (0, "base",
     ("rtstream.errors", "rtstream.config", "rtstream.endpoints", "rtstream.gcpause"),
     _IO),
    (1, "wire", ("rtstream.proto",), (*_IO, "select")),
    (2, "DICOM builders", ("rtstream.dicom",),
     ("asyncio", "socket", "pynetdicom", "aiortc", "aiohttp", "aiomqtt")),  # av: clips
    (3, "media", ("rtstream.media",), ("socket", "pynetdicom", "aiortc", "aiohttp", "aiomqtt")),
    # sysclock reads the host's clock (clock_gettime, adjtimex): I/O like the sockets.
    (4, "I/O services", ("rtstream.net", "rtstream.pacs", "rtstream.sysclock"),
     ("aiortc", "aiomqtt")),
    (5, "pipelines", ("rtstream.sender", "rtstream.receiver"), ()),
    (6, "apps",
     ("rtstream.viewer", "rtstream.control", "rtstream.commands", "rtstream.cli",
      "rtstream.demo", "rtstream.bench", "rtstream.__main__", "rtstream", "rtstream.api"),
     ()),
)  # fmt: skip

# argparse is the command line's: the commands, the CLI and the one `python -m` worker.
ARGPARSE_ALLOWED = ("rtstream.commands", "rtstream.cli", "rtstream.bench.worker")



def layer_of(module: str) -> int | None:
    """The layer of ``module`` (longest matching table entry), or None if unplaced."""
    best: tuple[int, int] | None = None  # (length of the match, layer)
    for layer, _, names, _ in LAYERS:
        for name in names:
            # "rtstream" itself stands for the package's __init__ only, not "everything".
            hit = module == name or (name != "rtstream" and module.startswith(name + "."))
            if hit and (best is None or len(name) > best[0]):
                best = (len(name), layer)
    return None if best is None else best[1]


def _forbidden_third_party(layer: int) -> tuple[str, ...]:
    return next(forbidden for n, _, _, forbidden in LAYERS if n == layer)


def package_modules() -> dict[str, Path]:
    """Every module of the package (``rtstream.x.y`` -> its file), from the file tree."""
    modules: dict[str, Path] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = package_modules()


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: Path) -> set[str]:
    """Absolute names ``module`` imports; ``from p import m`` counts as ``p.m`` if a module."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                source = _resolve_relative(module, path.name == "__init__.py", node.level,
                                           node.module)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in MODULES else source)
    return found


@dataclass(frozen=True)
class Violation:
    module: str
    imported: str
    src_layer: int
    dst: str  # "layer N", or why a third-party import is refused

    def __str__(self) -> str:
        return f"{self.module} -> {self.imported} (layer {self.src_layer} -> {self.dst})"


def violations() -> list[Violation]:
    """Every import against the table, in a stable order."""
    out: list[Violation] = []
    for module, path in MODULES.items():
        src = layer_of(module)
        if src is None:
            continue  # reported by test_every_module_is_placed_in_a_layer
        forbidden = _forbidden_third_party(src)
        for imported in sorted(imports_of(module, path)):
            top = imported.split(".")[0]
            if top == "rtstream":
                dst = layer_of(imported)
                if dst is not None and dst > src:
                    out.append(Violation(module, imported, src, f"layer {dst}"))
            elif top == "argparse":
                if not module.startswith(ARGPARSE_ALLOWED):
                    out.append(Violation(module, "argparse", src, "argparse, CLI only"))
            elif top in forbidden:
                why = f"third-party {top}, forbidden in layer {src}"
                out.append(Violation(module, top, src, why))
    return out


def test_every_module_is_placed_in_a_layer() -> None:
    unplaced = sorted(m for m in MODULES if layer_of(m) is None)
    assert not unplaced, "put these modules into a layer of LAYERS: " + ", ".join(unplaced)
    assert "rtstream.proto.rtp" in MODULES and layer_of("rtstream.proto.rtp") == 1


def test_imports_only_point_down() -> None:
    found = [str(v) for v in violations()]
    assert not found, "layering violations:\n  " + "\n  ".join(found)


def test_the_scanner_sees_every_kind_of_import(tmp_path: Path) -> None:
    code = (
        "import os.path\n"
        "from rtstream.proto import rtp\n"
        "from . import sysclock\n"
        "def f():\n"
        "    import asyncio\n"
        "    from ..viewer import server\n"
        "    from .proto.clock import PtpTimestamp\n"
    )
    path = tmp_path / "mod.py"
    path.write_text(code)
    assert imports_of("rtstream.media.mod", path) == {
        "os.path", "rtstream.proto.rtp", "rtstream.media", "asyncio",
        "rtstream.viewer.server", "rtstream.media.proto.clock",
    }  # fmt: skip
    assert layer_of("rtstream.receiver.flows") == 5 and layer_of("rtstream.receiver") == 5
    assert layer_of("rtstream") == 6 and layer_of("rtstream.rogue") is None


# -- fresh interpreters: what importing a module really loads ---------------------------

PROTO = sorted(m for m in MODULES if layer_of(m) == 1)
DICOM = sorted(m for m in MODULES if layer_of(m) == 2)
PROBED = ("asyncio", "socket", "select", "av", "pynetdicom", "aiortc", "aiohttp", "aiomqtt")


def _loaded_after(code: str) -> set[str]:
    probe = code + f"\nimport sys\nprint(','.join(m for m in {PROBED!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return {m for m in out.stdout.strip().split(",") if m}


@pytest.fixture(scope="module")
def baseline() -> set[str]:
    return _loaded_after("import numpy, pydicom")


def test_there_are_proto_and_dicom_modules() -> None:
    assert "rtstream.proto.rtp" in PROTO and "rtstream.dicom.realtime" in DICOM


@pytest.mark.parametrize("name", PROTO)
def test_proto_import_loads_nothing_forbidden(name: str, baseline: set[str]) -> None:
    loaded = _loaded_after(f"import {name}")
    assert loaded <= baseline, f"{name} loaded {sorted(loaded - baseline)}"
    assert not loaded & {"asyncio", "av", "pynetdicom", "aiortc", "aiohttp", "aiomqtt"}


@pytest.mark.parametrize("name", DICOM)
def test_dicom_import_loads_nothing_forbidden(name: str, baseline: set[str]) -> None:
    loaded = _loaded_after(f"import {name}") & {"asyncio", "socket", "pynetdicom"}
    assert loaded <= baseline, f"{name} loaded {sorted(loaded - baseline)}"
    assert "pynetdicom" not in loaded and "asyncio" not in loaded
