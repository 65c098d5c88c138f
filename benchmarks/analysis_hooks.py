"""Analysis callables of benchmarks/analysis_bench.py (loaded with ``--analyze FILE:NAME``)."""

from __future__ import annotations

import time
from typing import Any


def noop(frame: Any, context: Any) -> list[Any]:
    """Nothing at all: what is left is the hook's own cost."""
    return []


def slow50(frame: Any, context: Any) -> list[Any]:
    """50 ms a frame (sleeping, so the GIL is free), slower than any stream rate here."""
    time.sleep(0.05)
    return [{"label": "slow", "point": [1, 1]}]
