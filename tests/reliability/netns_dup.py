"""Two network paths between a sender and a receiver namespace, each with its own wire.

Theory of operation
-------------------
The ST 2022-7 topology ("red" and "blue" networks) built from the pieces of
:mod:`tests.reliability.netns`: one sender namespace and one receiver namespace, joined
twice, each time through a wire namespace of its own running that module's user-space
impairing bridge (:func:`~tests.reliability.netns.impair_main`; this kernel has no
``sch_netem``)::

    tx ns: tx_dev[0] 10.222.S.1/24   == wire ns 1 (impairer) ==  rx_dev[0] 10.222.S.2/24   :rx ns
           tx_dev[1] 10.222.S+1.1/24 == wire ns 2 (impairer) ==  rx_dev[1] 10.222.S+1.2/24

Each path has its own /24, existing only inside the namespaces; nothing has a default
route. The two wires are independent processes with their own seeds, phases and exact
counters (per phase and UDP port), so each leg's loss is known exactly. Teardown deletes
every namespace by name (stale ones of killed runs are removed by
:func:`~tests.reliability.netns.remove_stale`, which knows the same prefix).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.reliability.netns import PREFIX, _run, remove_stale

_counter = itertools.count()


class TwoPathNetns:
    """Sender and receiver namespaces joined by two impairing wires.

    Parameters
    ----------
    subnet : int
        Third octet of path 1's /24; path 2 uses ``subnet + 1``.
    """

    def __init__(self, *, subnet: int = 40) -> None:
        n = next(_counter)
        pid = os.getpid()
        self.name = f"{PREFIX}{pid}-d{n}"
        self.tx_ns = f"{self.name}-tx"
        self.rx_ns = f"{self.name}-rx"
        self.wire_ns = [f"{self.name}-w1", f"{self.name}-w2"]
        tag = f"{pid % 10000}{n % 10}"
        # per path: tx end, wire in, wire out, rx end
        self.devs = [[f"d{tag}{p}{x}" for x in "abcd"] for p in (1, 2)]
        self.tx_dev = [d[0] for d in self.devs]
        self.rx_dev = [d[3] for d in self.devs]
        self.tx_addr = [f"10.222.{subnet + p}.1" for p in (0, 1)]
        self.rx_addr = [f"10.222.{subnet + p}.2" for p in (0, 1)]
        self._created: list[str] = []
        self._wires: list[subprocess.Popen[bytes] | None] = [None, None]
        self._stats: list[Path | None] = [None, None]

    def __enter__(self) -> TwoPathNetns:
        remove_stale()
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _create(self) -> None:
        for ns in (self.tx_ns, *self.wire_ns, self.rx_ns):
            _run(["ip", "netns", "add", ns])
            self._created.append(ns)
            self.run(ns, "sh", "-c",
                     "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; "
                     "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        for p, (tx_dev, w_in, w_out, rx_dev) in enumerate(self.devs):
            wire = self.wire_ns[p]
            _run(["ip", "-n", self.tx_ns, "link", "add", tx_dev, "type", "veth",
                  "peer", "name", w_in, "netns", wire])
            _run(["ip", "-n", self.rx_ns, "link", "add", rx_dev, "type", "veth",
                  "peer", "name", w_out, "netns", wire])
            for dev in (w_in, w_out):
                _run(["ip", "-n", wire, "link", "set", dev, "up"])
            for ns, dev, addr in ((self.tx_ns, tx_dev, self.tx_addr[p]),
                                  (self.rx_ns, rx_dev, self.rx_addr[p])):
                _run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev])
                _run(["ip", "-n", ns, "link", "set", dev, "up"])

    def close(self) -> None:
        """Stop both wires and delete every namespace; safe twice."""
        for w in self._wires:
            if w is not None and w.poll() is None:
                w.kill()
                w.wait(10)
        for ns in reversed(self._created):
            _run(["ip", "netns", "del", ns], check=False)
        self._created.clear()

    def exec_prefix(self, ns: str) -> list[str]:
        """The command prefix that runs a program inside ``ns``."""
        return ["ip", "netns", "exec", ns]

    def run(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a short command inside ``ns``."""
        return _run([*self.exec_prefix(ns), *args], check=check)

    def udp_counters(self, ns: str) -> dict[str, int]:
        """The ``Udp:`` counters of ``/proc/net/snmp`` inside ``ns``."""
        lines = [ln for ln in self.run(ns, "cat", "/proc/net/snmp").stdout.splitlines()
                 if ln.startswith("Udp:")]
        keys, values = lines[0].split()[1:], lines[1].split()[1:]
        return {k: int(v) for k, v in zip(keys, values, strict=True)}

    def start_wire(self, path: int, stats: Path, *, phases: Sequence[str], loss: float = 0.0,
                   duplicate: float = 0.0, reorder: float = 0.0, delay_ms: float = 0.0,
                   jitter_ms: float = 0.0, seed: int = 1) -> None:
        """Start path ``path``'s (0 or 1) impairing bridge (netns.py's model and phases)."""
        _, w_in, w_out, _ = self.devs[path]
        self._stats[path] = stats
        cmd = [*self.exec_prefix(self.wire_ns[path]), sys.executable, "-m",
               "tests.reliability.netns", "impair", w_in, w_out, str(stats), ",".join(phases),
               json.dumps({"loss": loss, "duplicate": duplicate, "reorder": reorder,
                           "delay_ms": delay_ms, "jitter_ms": jitter_ms, "seed": seed})]
        ready = stats.with_suffix(".ready")
        ready.unlink(missing_ok=True)
        wire = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[2],
                                stderr=subprocess.PIPE)
        self._wires[path] = wire
        deadline = time.monotonic() + 20
        while not ready.exists():
            if wire.poll() is not None or time.monotonic() > deadline:
                err = wire.stderr.read().decode() if wire.stderr else ""
                raise RuntimeError(f"impairing wire {path + 1} did not start: {err}")
            time.sleep(0.02)

    def next_phase(self, path: int) -> None:
        """Move path ``path``'s wire to its next phase."""
        wire = self._wires[path]
        assert wire is not None
        wire.send_signal(signal.SIGUSR1)

    def stop_wire(self, path: int) -> dict[str, Any]:
        """Stop path ``path``'s wire; its exact counters (netns.py's ``stop_wire`` form)."""
        wire, stats = self._wires[path], self._stats[path]
        assert wire is not None and stats is not None
        wire.send_signal(signal.SIGTERM)
        wire.wait(20)
        result: dict[str, Any] = json.loads(stats.read_text())
        return result


__all__ = ["TwoPathNetns"]
