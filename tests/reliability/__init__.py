"""Reliability and security tests: impairment, faults, soak, access control (issue 9).

Small shared helpers live here: how to start ``rtstream`` as a subprocess and how to
sample a process's open file descriptors and resident memory from ``/proc``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: The command prefix that runs the ``rtstream`` CLI of this checkout.
RTSTREAM = [sys.executable, "-m", "rtstream"]


def rtstream_env() -> dict[str, str]:
    """Environment for CLI subprocesses: this checkout importable, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass(frozen=True)
class ProcSample:
    """Open file descriptors and resident set size of one process at one instant."""

    fds: int
    rss_kib: int
    threads: int


def sample_process(pid: int) -> ProcSample:
    """Read ``/proc/<pid>/fd`` and ``/proc/<pid>/status`` (VmRSS, Threads)."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return ProcSample(fds=fds, rss_kib=rss, threads=threads)
