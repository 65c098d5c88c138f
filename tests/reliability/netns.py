"""Network namespaces for impairment tests: sender -- wire -- receiver, joined by veth pairs.

Theory of operation
-------------------
:class:`NetnsPair` creates three namespaces named with a unique prefix
(``rtsrel-<pid>-<n>-tx``, ``-wire``, ``-rx``) and two veth pairs made directly inside them
(``ip -n A link add ... peer ... netns B``), so no interface ever appears in the root
namespace::

    tx ns: tx_dev 10.222.S.1/24 ==veth== wire ns (impairer) ==veth== rx ns: rx_dev 10.222.S.2/24

The two end addresses share one private /24 that exists only inside the namespaces; both
ends have a multicast route (224.0.0.0/4) over their veth and IPv6 switched off (no
neighbour discovery or MLD on the impaired link). Nothing has a default route: traffic
cannot leave the three namespaces.

**Why a user-space wire.** ``tc qdisc ... netem`` is the tool of choice, but the kernel of
these machines is built without ``sch_netem`` (``CONFIG_NET_SCH_NETEM`` unset, no modules:
``tc qdisc add ... netem`` answers "Specified qdisc kind is unknown"). :func:`kernel_has_netem`
probes for it. The wire namespace therefore runs :func:`impair_main`, a two-port L2 bridge
on ``AF_PACKET`` sockets that applies netem's model to the IPv4/UDP frames going from the
sender to the receiver (everything else, and the whole reverse direction, passes clean):

* ``loss P``: the frame is dropped with probability P;
* ``duplicate P``: a second copy is scheduled with probability P;
* ``reorder P`` with ``delay D J``: with probability P the frame goes out at once, the
  others are held ``D ± J`` (uniform) -- as in netem, frames leave in order of their
  send time, so the jitter alone reorders too;
* an *outage* phase drops every UDP frame (a cut cable).

Phases are given on the command line (``clean,impair,outage,clean``); SIGUSR1 moves to the
next one. SIGTERM writes the exact counters, per phase and per UDP destination port, as
JSON (what was received, dropped, duplicated, sent early, forwarded) and exits: these are
the ground truth a receiver's counters are compared with. The UDP checksum of forwarded
frames is set to 0 (IPv4 "no checksum"): the sender's stack leaves it to offload, which an
``AF_PACKET`` copy never gets.

Teardown deletes the namespaces by name (their veth ends go with them), also when the body
failed; :func:`remove_stale` deletes namespaces left by a killed earlier run (the pid in
their name is gone).
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

PREFIX = "rtsrel-"
_counter = itertools.count()

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def _run(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


def namespaces() -> list[str]:
    """Names of the existing network namespaces."""
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def remove_stale() -> list[str]:
    """Delete ``rtsrel-<pid>-...`` namespaces whose creating process no longer exists."""
    removed = []
    for name in namespaces():
        m = re.match(re.escape(PREFIX) + r"(\d+)-", name)
        if m is None or os.path.exists(f"/proc/{m.group(1)}"):
            continue
        _run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    return removed


def kernel_has_netem() -> bool:
    """True when ``tc qdisc add ... netem`` works in a scratch namespace."""
    ns = f"{PREFIX}{os.getpid()}-probe{next(_counter)}"
    try:
        _run(["ip", "netns", "add", ns])
        _run(["ip", "-n", ns, "link", "add", "p0", "type", "dummy"], check=False)
        r = _run(["tc", "-n", ns, "qdisc", "add", "dev", "p0", "root", "netem", "delay", "1ms"],
                 check=False)
        return r.returncode == 0
    finally:
        _run(["ip", "netns", "del", ns], check=False)


class NetnsPair:
    """Sender and receiver namespaces joined through an impairing wire namespace.

    Parameters
    ----------
    subnet : int
        Third octet of the private /24 (10.222.subnet.0) used inside the namespaces.

    Attributes
    ----------
    tx_ns, wire_ns, rx_ns : str
        Namespace names.
    tx_dev, rx_dev : str
        The veth ends in ``tx_ns`` and ``rx_ns``.
    tx_addr, rx_addr : str
        Their IPv4 addresses.
    """

    def __init__(self, *, subnet: int = 1) -> None:
        n = next(_counter)
        pid = os.getpid()
        self.name = f"{PREFIX}{pid}-{n}"
        self.tx_ns = f"{self.name}-tx"
        self.wire_ns = f"{self.name}-wire"
        self.rx_ns = f"{self.name}-rx"
        tag = f"{pid % 100000}{n % 100}"
        self.tx_dev, self.wire_in = f"rt{tag}a", f"rt{tag}b"
        self.wire_out, self.rx_dev = f"rt{tag}c", f"rt{tag}d"
        self.tx_addr = f"10.222.{subnet}.1"
        self.rx_addr = f"10.222.{subnet}.2"
        self._created: list[str] = []
        self._wire: subprocess.Popen[bytes] | None = None
        self._wire_stats: Path | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> NetnsPair:
        remove_stale()
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _create(self) -> None:
        for ns in (self.tx_ns, self.wire_ns, self.rx_ns):
            _run(["ip", "netns", "add", ns])
            self._created.append(ns)
            # IPv6 off before any interface exists: no ND/MLD on the impaired link
            self.run(ns, "sh", "-c",
                     "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; "
                     "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", self.tx_ns, "link", "add", self.tx_dev, "type", "veth",
              "peer", "name", self.wire_in, "netns", self.wire_ns])
        _run(["ip", "-n", self.rx_ns, "link", "add", self.rx_dev, "type", "veth",
              "peer", "name", self.wire_out, "netns", self.wire_ns])
        for dev in (self.wire_in, self.wire_out):
            _run(["ip", "-n", self.wire_ns, "link", "set", dev, "up"])
        for ns, dev, addr in ((self.tx_ns, self.tx_dev, self.tx_addr),
                              (self.rx_ns, self.rx_dev, self.rx_addr)):
            _run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
            _run(["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])

    def close(self) -> None:
        """Stop the wire and delete every namespace (and so the veths); safe twice."""
        if self._wire is not None and self._wire.poll() is None:
            self._wire.kill()
            self._wire.wait(10)
        for ns in reversed(self._created):
            _run(["ip", "netns", "del", ns], check=False)
        self._created.clear()

    # -- running things inside ------------------------------------------------------------

    def exec_prefix(self, ns: str) -> list[str]:
        """The command prefix that runs a program inside ``ns``."""
        return ["ip", "netns", "exec", ns]

    def run(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a short command inside ``ns`` and return its completed process."""
        return _run([*self.exec_prefix(ns), *args], check=check)

    def interfaces(self, ns: str) -> list[str]:
        """Interface names inside ``ns``."""
        out = _run(["ip", "-n", ns, "-o", "link", "show"]).stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def udp_counters(self, ns: str) -> dict[str, int]:
        """The ``Udp:`` counters of ``/proc/net/snmp`` inside ``ns`` (RcvbufErrors...)."""
        lines = [ln for ln in self.run(ns, "cat", "/proc/net/snmp").stdout.splitlines()
                 if ln.startswith("Udp:")]
        keys, values = lines[0].split()[1:], lines[1].split()[1:]
        return {k: int(v) for k, v in zip(keys, values, strict=True)}

    # -- impairment ----------------------------------------------------------------------

    def start_wire(self, stats: Path, *, phases: Sequence[str], loss: float = 0.0,
                   duplicate: float = 0.0, reorder: float = 0.0, delay_ms: float = 0.0,
                   jitter_ms: float = 0.0, seed: int = 1) -> None:
        """Start the impairing bridge in the wire namespace (see the module docstring)."""
        self._wire_stats = stats
        cmd = [*self.exec_prefix(self.wire_ns), sys.executable, "-m", "tests.reliability.netns",
               "impair", self.wire_in, self.wire_out, str(stats), ",".join(phases),
               json.dumps({"loss": loss, "duplicate": duplicate, "reorder": reorder,
                           "delay_ms": delay_ms, "jitter_ms": jitter_ms, "seed": seed})]
        ready = stats.with_suffix(".ready")
        ready.unlink(missing_ok=True)
        self._wire = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[2],
                                      stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not ready.exists():
            if self._wire.poll() is not None or time.monotonic() > deadline:
                err = self._wire.stderr.read().decode() if self._wire.stderr else ""
                raise RuntimeError(f"impairing wire did not start: {err}")
            time.sleep(0.02)

    def next_phase(self) -> None:
        """Move the wire to its next phase (SIGUSR1)."""
        assert self._wire is not None
        self._wire.send_signal(signal.SIGUSR1)

    def stop_wire(self) -> dict[str, Any]:
        """Stop the wire; return ``{"phases": {"<i>:<name>": {"<udp port>": counts}},
        "switches": [[phase index, TAI ns], ...]}`` (see :func:`impair_main`)."""
        assert self._wire is not None and self._wire_stats is not None
        self._wire.send_signal(signal.SIGTERM)
        self._wire.wait(20)
        result: dict[str, Any] = json.loads(self._wire_stats.read_text())
        return result


# --------------------------------------------------------------------------------------
# the impairing wire (runs inside the wire namespace)
# --------------------------------------------------------------------------------------


@dataclass
class _Counts:
    received: int = 0
    dropped: int = 0
    duplicated: int = 0
    early: int = 0
    forwarded: int = 0
    dropped_seq: list[int] = field(default_factory=list)


def _udp_info(frame: bytes) -> tuple[int, int, int] | None:
    """(IP header offset, IP header length, UDP dst port) of an Ethernet IPv4/UDP frame."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    if frame[23] != 17 or len(frame) < 14 + ihl + 8:
        return None
    return 14, ihl, struct.unpack_from("!H", frame, 14 + ihl + 2)[0]


def impair_main(in_dev: str, out_dev: str, stats_path: str, phases_arg: str,
                params_json: str) -> int:
    """Bridge ``in_dev`` <-> ``out_dev``, impairing UDP from ``in_dev`` (module docstring)."""
    params = json.loads(params_json)
    rng = random.Random(params["seed"])
    phases = phases_arg.split(",")
    phase = [0]
    counts: dict[str, dict[int, _Counts]] = {}
    socks = {}
    for dev in (in_dev, out_dev):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        s.bind((dev, 0))
        s.setblocking(False)
        socks[dev] = s
    a, b = socks[in_dev], socks[out_dev]
    heap: list[tuple[float, int, bytes]] = []
    order = itertools.count()
    done = [False]

    from rtstream.sysclock import SystemClock

    clock = SystemClock()  # the media clock the sender stamps with (TAI)
    switches: list[tuple[int, int]] = []

    def on_usr1(_sig: int, _frm: FrameType | None) -> None:
        phase[0] = min(phase[0] + 1, len(phases) - 1)
        switches.append((phase[0], clock.now_ns()))

    def on_term(_sig: int, _frm: FrameType | None) -> None:
        done[0] = True

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, on_term)
    Path(stats_path).with_suffix(".ready").write_text("ready\n")

    def counter(port: int) -> _Counts:
        key = f"{phase[0]}:{phases[phase[0]]}"
        return counts.setdefault(key, {}).setdefault(port, _Counts())

    def send(frame: bytes) -> None:
        try:
            b.send(frame)
        except BlockingIOError:
            select.select([], [b], [], 0.01)
            b.send(frame)

    loss, dup, reorder = params["loss"], params["duplicate"], params["reorder"]
    delay, jitter = params["delay_ms"] / 1000, params["jitter_ms"] / 1000
    while not done[0]:
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            send(heapq.heappop(heap)[2])
        timeout = max(0.0, heap[0][0] - now) if heap else 0.05
        try:
            readable, _, _ = select.select([a, b], [], [], min(timeout, 0.05))
        except InterruptedError:
            continue
        if b in readable:  # the reverse direction passes clean (IGMP, ARP)
            for _ in range(256):
                try:
                    data, addr = b.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] != PACKET_OUTGOING:
                    a.send(data)
        if a not in readable:
            continue
        for _ in range(1024):
            try:
                data, addr = a.recvfrom(65535)
            except BlockingIOError:
                break
            if addr[2] == PACKET_OUTGOING:
                continue
            info = _udp_info(data)
            if info is None:
                send(data)
                continue
            ip, ihl, port = info
            frame = bytearray(data)
            frame[ip + ihl + 6: ip + ihl + 8] = b"\x00\x00"  # UDP checksum: none (IPv4)
            c = counter(port)
            c.received += 1
            mode = phases[phase[0]]
            now = time.monotonic()
            seq = struct.unpack_from("!H", frame, ip + ihl + 8 + 2)[0] if len(frame) > ip + ihl + 20 else -1
            if mode == "outage" or (mode == "impair" and rng.random() < loss):
                c.dropped += 1
                c.dropped_seq.append(seq)
                continue
            copies = 1
            if mode == "impair" and rng.random() < dup:
                copies = 2
                c.duplicated += 1
            for _ in range(copies):
                if mode != "impair" or delay == 0:
                    at = now
                elif rng.random() < reorder:
                    at = now
                    c.early += 1
                else:
                    at = now + max(0.0, delay + rng.uniform(-jitter, jitter))
                heapq.heappush(heap, (at, next(order), bytes(frame)))
                c.forwarded += 1
    end = time.monotonic() + 1.0
    while heap and time.monotonic() < end:
        at, _, frame_b = heapq.heappop(heap)
        time.sleep(max(0.0, at - time.monotonic()))
        send(frame_b)
    out = {ph: {str(port): vars(c) for port, c in by.items()} for ph, by in counts.items()}
    Path(stats_path).write_text(json.dumps({"phases": out, "switches": switches}))
    return 0


__all__ = ["PREFIX", "NetnsPair", "impair_main", "kernel_has_netem", "namespaces", "remove_stale"]


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "impair":
        sys.exit(impair_main(*sys.argv[2:7]))
    sys.exit(f"usage: {sys.argv[0]} impair IN_DEV OUT_DEV STATS PHASES PARAMS_JSON")
