"""A UDP impairment relay for tests: loss, reordering, duplication and outages on 127.0.0.1.

The relay sits between a sender and a receiver, one route per flow (listen port ->
destination port). Every decision comes from a ``random.Random`` seeded from the seed and
the route, drawn once per datagram in arrival order, so the same sender output gives the
same impairments on every run; the relay also records exactly what it did (RTP sequence
numbers of the datagrams it dropped, duplicated or reordered), so a test can compare the
receiver's counters with what was injected.

* loss: the datagram is not forwarded.
* duplicate: the datagram is forwarded twice, back to back.
* reorder: the datagram is held and forwarded after the next ``reorder_depth`` datagrams
  of the same route (or when the route goes quiet for ``hold_s``), so it arrives late
  but within the receiver's reorder window.
* outage: from the datagram number ``outage_after`` of the route given by
  ``outage_trigger`` on, every route drops everything for ``outage_s`` seconds (a cut
  cable). Datagrams dropped that way are recorded separately.

A child process forwards (``python relay.py``, stdlib only, the listen sockets inherited),
so the test's own event loop and GIL never hold a datagram back: a thread here once put one
leg of a 2022-7 pair more than the merge's skew behind the other under load. Routes are
served in turns of a few datagrams each, so a burst on one route does not hold the others
back either. Nothing here is meant to be fast (small test streams only).
"""

from __future__ import annotations

import dataclasses
import json
import random
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Impairment:
    """Probabilities per datagram of one route, and the reorder depth."""

    loss: float = 0.0
    reorder: float = 0.0
    duplicate: float = 0.0
    reorder_depth: int = 2
    protect_first: int = 0  # the first N datagrams pass untouched (stream start-up)
    active_until: int | None = None  # datagrams after the N-th pass untouched (clean tail)


@dataclass
class RouteReport:
    """What the relay did on one route (RTP sequence numbers, 16-bit)."""

    received: int = 0
    forwarded: int = 0
    dropped: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)
    reordered: list[int] = field(default_factory=list)
    reordered_ts: set[int] = field(default_factory=set)  # RTP timestamps of reordered ones
    # forwarded after a datagram with a higher sequence number (what a receiver can see as
    # reordering: a held datagram whose followers were all lost arrives in order after all)
    out_of_order: int = 0
    highest: int | None = None  # extended sequence number of the highest forwarded
    outage_dropped: list[int] = field(default_factory=list)
    timestamps_hit: set[int] = field(default_factory=set)  # RTP timestamps of lost datagrams
    first_after_outage: int | None = None  # RTP timestamp of the first datagram after it
    outage_ts: set[int] = field(default_factory=set)  # RTP timestamps hit by the outage
    # RTP timestamps whose marker datagram (the last of a video frame) was lost: a receiver
    # can close such a frame only when a datagram of a newer timestamp arrives
    markers_dropped_ts: set[int] = field(default_factory=set)
    markers_sent_ts: set[int] = field(default_factory=set)  # marker datagram forwarded
    # RTP timestamps with a datagram forwarded after that timestamp's marker datagram (a
    # reordered packet behind the marker: a receiver closes the frame at the marker)
    after_marker_ts: set[int] = field(default_factory=set)


def _report_to_json(rep: RouteReport) -> dict[str, object]:
    return {k: sorted(v) if isinstance(v, set) else v for k, v in dataclasses.asdict(rep).items()}


def _report_from_json(d: dict[str, object]) -> RouteReport:
    rep = RouteReport(**d)  # type: ignore[arg-type]
    for f in dataclasses.fields(RouteReport):
        if isinstance(getattr(RouteReport(), f.name), set):
            setattr(rep, f.name, set(getattr(rep, f.name)))
    return rep


@dataclass(eq=False)  # hashed by identity: the forwarder keeps a list of busy routes
class _Route:
    listen: socket.socket
    dest: tuple[str, int]
    impairment: Impairment
    rng: random.Random
    report: RouteReport
    held: list[tuple[bytes, int]] = field(default_factory=list)  # (datagram, release after)
    last_rx: float = 0.0


def _seq_ts(datagram: bytes) -> tuple[int, int]:
    if len(datagram) < 12:
        return -1, -1
    seq, ts = struct.unpack_from("!HI", datagram, 2)
    return int(seq), int(ts)


class UdpRelay:
    """Forward UDP datagrams from listen ports to destination ports with impairments.

    The listen sockets are bound here (so a sender may start as soon as this returns);
    :meth:`start` hands them to a child process that forwards until :meth:`stop`, which
    collects what it did.

    Parameters
    ----------
    routes : mapping of int to int
        Listen port -> destination port, all on 127.0.0.1.
    impairments : mapping of int to Impairment
        Per listen port (routes not listed pass untouched).
    seed : int
        Seed of every route's random decisions.
    outage_s : float
        Length of the outage in seconds (0: none).
    outage_trigger, outage_after : int
        The outage starts when route ``outage_trigger`` (a listen port) has received
        ``outage_after`` datagrams.
    hold_s : float
        A reordered datagram is released at the latest after this quiet time.
    """

    def __init__(
        self,
        routes: Mapping[int, int],
        *,
        impairments: Mapping[int, Impairment] | None = None,
        seed: int = 0,
        outage_s: float = 0.0,
        outage_trigger: int | None = None,
        outage_after: int = 0,
        hold_s: float = 0.005,
    ) -> None:
        impairments = impairments or {}
        self._sockets: dict[int, socket.socket] = {}
        for lport in routes:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            s.bind(("127.0.0.1", lport))
            self._sockets[lport] = s
        self._config = {
            "routes": [{"port": lport, "fd": self._sockets[lport].fileno(), "dest": dport,
                        "impairment": dataclasses.asdict(impairments.get(lport, Impairment()))}
                       for lport, dport in routes.items()],
            "seed": seed, "outage_s": outage_s, "outage_trigger": outage_trigger,
            "outage_after": outage_after, "hold_s": hold_s,
        }
        self._proc: subprocess.Popen[str] | None = None
        self._reports: dict[int, RouteReport] = {}

    def report(self, port: int) -> RouteReport:
        """The record of route ``port`` (read it after :meth:`stop`)."""
        return self._reports[port]

    def start(self) -> UdpRelay:
        """Start forwarding in a child process (returns once it forwards)."""
        self._proc = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            pass_fds=[s.fileno() for s in self._sockets.values()], text=True)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(self._config) + "\n")
        self._proc.stdin.flush()
        if self._proc.stdout.readline().strip() != "ready":
            self._proc.kill()
            raise RuntimeError(f"the relay did not start (exit {self._proc.wait()})")
        return self

    def stop(self) -> None:
        """Release held datagrams, stop the child and collect its records."""
        if self._proc is not None:
            out, _ = self._proc.communicate("stop\n", timeout=10)
            if self._proc.returncode != 0:
                raise RuntimeError(f"the relay failed (exit {self._proc.returncode})")
            self._reports = {int(k): _report_from_json(v) for k, v in json.loads(out).items()}
            self._proc = None
        for s in self._sockets.values():
            s.close()

    def __enter__(self) -> UdpRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None and self._proc is not None:
            self._proc.kill()  # the test failed already: do not wait on the child
            self._proc.wait()
            self._proc = None
        self.stop()


class _Forwarder:
    """The child's side: forward, impair and record until told to stop on stdin."""

    BATCH = 8  # datagrams per route per turn

    def __init__(self, config: dict[str, Any]) -> None:
        self.routes: dict[int, _Route] = {}
        for r in config["routes"]:
            s = socket.socket(fileno=r["fd"])
            s.setblocking(False)
            self.routes[r["port"]] = _Route(
                listen=s,
                dest=("127.0.0.1", r["dest"]),
                impairment=Impairment(**r["impairment"]),
                rng=random.Random(f"{config['seed']}:{r['port']}"),
                report=RouteReport(),
            )
        self._out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        self.outage_s = config["outage_s"]
        self.outage_trigger = config["outage_trigger"]
        self.outage_after = config["outage_after"]
        self.outage_started: float | None = None
        self._outage_over = False
        self._hold_s = config["hold_s"]

    def _in_outage(self, now: float) -> bool:
        if self.outage_started is None or self._outage_over:
            return False
        if now - self.outage_started < self.outage_s:
            return True
        self._outage_over = True
        return False

    def _send(self, route: _Route, datagram: bytes) -> None:
        self._out.sendto(datagram, route.dest)
        rep = route.report
        rep.forwarded += 1
        seq, ts = _seq_ts(datagram)
        if seq < 0:
            return
        if datagram[1] & 0x80:
            rep.markers_sent_ts.add(ts)  # (a duplicated marker does not reopen the frame)
        elif ts in rep.markers_sent_ts:
            rep.after_marker_ts.add(ts)
        if rep.highest is None:
            rep.highest = seq
            return
        ext = rep.highest + ((seq - rep.highest + 0x8000) & 0xFFFF) - 0x8000
        if ext < rep.highest:
            rep.out_of_order += 1
        else:
            rep.highest = ext

    def run(self, control: int) -> None:
        """Forward until ``control`` (the child's stdin) is readable, then flush the held."""
        poller = select.poll()
        by_fd = {}
        for r in self.routes.values():
            poller.register(r.listen.fileno(), select.POLLIN)
            by_fd[r.listen.fileno()] = r
        poller.register(control, select.POLLIN)
        busy: list[_Route] = []
        while True:
            events = poller.poll(0 if busy else 1)
            if any(fd == control for fd, _ in events):
                break
            busy = list(dict.fromkeys(busy + [by_fd[fd] for fd, _ in events]))
            now = time.monotonic()
            # one turn: a few datagrams from each route that has some (a burst on one
            # route does not hold back the others)
            for route in busy[:]:
                for _ in range(self.BATCH):
                    try:
                        datagram = route.listen.recv(65536)
                    except BlockingIOError:
                        busy.remove(route)
                        break
                    self._handle(route, datagram, time.monotonic())
            for route in self.routes.values():
                if route.held and now - route.last_rx > self._hold_s:
                    for d, _ in route.held:
                        self._send(route, d)
                    route.held.clear()
        for route in self.routes.values():
            for d, _ in route.held:
                self._send(route, d)
            route.held.clear()

    def _handle(self, route: _Route, datagram: bytes, now: float) -> None:
        rep = route.report
        rep.received += 1
        route.last_rx = now
        seq, ts = _seq_ts(datagram)
        port = route.listen.getsockname()[1]
        if (
            self.outage_s > 0
            and self.outage_started is None
            and port == self.outage_trigger
            and rep.received > self.outage_after
        ):
            self.outage_started = now
        was_in = self.outage_started is not None and not self._outage_over
        if self._in_outage(now):
            rep.outage_dropped.append(seq)
            rep.timestamps_hit.add(ts)
            rep.outage_ts.add(ts)
            return
        if was_in and rep.first_after_outage is None:
            rep.first_after_outage = ts
        elif self._outage_over and rep.first_after_outage is None:
            rep.first_after_outage = ts
        imp = route.impairment
        # three draws per datagram, always, so decisions do not shift with outcomes
        r_loss, r_dup, r_reo = route.rng.random(), route.rng.random(), route.rng.random()
        protected = rep.received <= imp.protect_first or (
            imp.active_until is not None and rep.received > imp.active_until
        )
        # release datagrams held for reordering whose turn has come
        ready = [d for d, k in route.held if k <= rep.received]
        route.held = [(d, k) for d, k in route.held if k > rep.received]
        if not protected and r_loss < imp.loss:
            rep.dropped.append(seq)
            rep.timestamps_hit.add(ts)
            if seq >= 0 and datagram[1] & 0x80:
                rep.markers_dropped_ts.add(ts)
        elif not protected and r_reo < imp.reorder:
            rep.reordered.append(seq)
            rep.reordered_ts.add(ts)
            route.held.append((datagram, rep.received + imp.reorder_depth))
        else:
            self._send(route, datagram)
            if not protected and r_dup < imp.duplicate:
                rep.duplicated.append(seq)
                self._send(route, datagram)
        for d in ready:
            self._send(route, d)


def _child() -> None:
    fwd = _Forwarder(json.loads(sys.stdin.readline()))
    print("ready", flush=True)
    fwd.run(sys.stdin.fileno())
    json.dump({port: _report_to_json(r.report) for port, r in fwd.routes.items()}, sys.stdout)


if __name__ == "__main__":
    _child()
