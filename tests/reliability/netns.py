"""Two network namespaces joined by a veth pair, with ``tc netem`` on the sending side.

Theory of operation
-------------------
:class:`NetnsPair` creates a *sender* and a *receiver* namespace named with a unique prefix
(``rtsrel-<pid>-<n>-tx`` / ``-rx``) and a veth pair made directly inside them
(``ip -n TX link add ... peer ... netns RX``), so no interface ever appears in the root
namespace. Both ends get addresses of a private /30 (10.222.N.1 and .2) that exist only
inside the namespaces, a multicast route (224.0.0.0/4) over the veth, and IPv6 switched
off so that no neighbour discovery or MLD packet shares the impaired link with the media.
Nothing has a default route: traffic cannot leave the pair.

Impairment is a ``netem`` root qdisc on the sender's end of the veth (egress towards the
receiver): :meth:`NetnsPair.netem` adds or changes it, :meth:`NetnsPair.qdisc_stats` reads
its own counters (``tc -s qdisc show``: packets sent, packets dropped), which are the
ground truth a receiver's loss counters are compared with.

Teardown deletes both namespaces by name (their veth ends go with them), also when the
body failed; :func:`remove_stale` deletes namespaces left by a killed earlier run (the
pid in their name is gone).
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

PREFIX = "rtsrel-"
_counter = itertools.count()


@dataclass(frozen=True)
class QdiscStats:
    """Counters of one qdisc as ``tc -s qdisc show`` prints them.

    ``sent_packets`` counts what left the qdisc (netem duplicates included),
    ``dropped`` what netem discarded (its ``loss``, or a full queue).
    """

    kind: str
    sent_bytes: int
    sent_packets: int
    dropped: int
    overlimits: int
    requeues: int


_SENT = re.compile(
    r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+) requeues (\d+)\)"
)


def parse_qdisc_stats(text: str) -> QdiscStats:
    """Parse the first qdisc of ``tc -s qdisc show dev DEV``."""
    kind = text.split()[1] if text.startswith("qdisc ") else "?"
    m = _SENT.search(text)
    if m is None:
        raise ValueError(f"no counters in tc output: {text!r}")
    a, b, c, d, e = (int(g) for g in m.groups())
    return QdiscStats(kind, a, b, c, d, e)


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
        if m is None:
            continue
        if os.path.exists(f"/proc/{m.group(1)}"):
            continue
        _run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    return removed


class NetnsPair:
    """A sender namespace and a receiver namespace joined by one veth pair.

    Parameters
    ----------
    subnet : int
        Third octet of the private /30 (10.222.subnet.0) used inside the namespaces.

    Attributes
    ----------
    tx_ns, rx_ns : str
        Namespace names.
    tx_dev, rx_dev : str
        The veth ends (in ``tx_ns`` and ``rx_ns``).
    tx_addr, rx_addr : str
        Their IPv4 addresses.
    """

    def __init__(self, *, subnet: int = 1) -> None:
        n = next(_counter)
        pid = os.getpid()
        self.name = f"{PREFIX}{pid}-{n}"
        self.tx_ns = f"{self.name}-tx"
        self.rx_ns = f"{self.name}-rx"
        tag = f"{pid % 100000}{n % 100}"
        self.tx_dev = f"rt{tag}a"[:15]
        self.rx_dev = f"rt{tag}b"[:15]
        self.tx_addr = f"10.222.{subnet}.1"
        self.rx_addr = f"10.222.{subnet}.2"
        self._created: list[str] = []

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
        for ns in (self.tx_ns, self.rx_ns):
            _run(["ip", "netns", "add", ns])
            self._created.append(ns)
            # IPv6 off before any interface exists: no ND/MLD on the impaired link
            self.run(ns, "sh", "-c",
                     "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; "
                     "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
            self.run(ns, "ip", "link", "set", "lo", "up")
        _run(["ip", "-n", self.tx_ns, "link", "add", self.tx_dev, "type", "veth",
              "peer", "name", self.rx_dev, "netns", self.rx_ns])
        for ns, dev, addr in ((self.tx_ns, self.tx_dev, self.tx_addr),
                              (self.rx_ns, self.rx_dev, self.rx_addr)):
            _run(["ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
            _run(["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])

    def close(self) -> None:
        """Delete both namespaces (and so the veth pair); safe to call twice."""
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

    # -- impairment ----------------------------------------------------------------------

    def netem(self, spec: str, *, change: bool = False) -> None:
        """Add (or change) the netem root qdisc on the sender's veth end.

        ``spec`` is netem's own syntax, e.g. ``"loss 1% duplicate 1% reorder 5% delay 5ms
        5ms"`` (netem reorders only packets it would otherwise delay).
        """
        verb = "change" if change else "replace"
        _run(["tc", "-n", self.tx_ns, "qdisc", verb, "dev", self.tx_dev, "root", "netem",
              *spec.split()])

    def qdisc_stats(self) -> QdiscStats:
        """Counters of the sender-side root qdisc (netem's own sent/dropped counts)."""
        out = _run(["tc", "-n", self.tx_ns, "-s", "qdisc", "show", "dev", self.tx_dev]).stdout
        return parse_qdisc_stats(out)

    def link_stats(self, ns: str, dev: str) -> dict[str, int]:
        """``rx_packets``, ``tx_packets``, ``rx_dropped``... of ``dev`` from sysfs."""
        names = ("rx_packets", "tx_packets", "rx_dropped", "tx_dropped", "rx_errors")
        script = "; ".join(f"cat /sys/class/net/{dev}/statistics/{k}" for k in names)
        out = self.run(ns, "sh", "-c", script).stdout.split()
        return {k: int(v) for k, v in zip(names, out, strict=True)}

    def udp_counters(self, ns: str) -> dict[str, int]:
        """The ``Udp:`` line of ``/proc/net/snmp`` inside ``ns`` (RcvbufErrors etc.)."""
        lines = [ln for ln in self.run(ns, "cat", "/proc/net/snmp").stdout.splitlines()
                 if ln.startswith("Udp:")]
        keys, values = lines[0].split()[1:], lines[1].split()[1:]
        return {k: int(v) for k, v in zip(keys, values, strict=True)}


__all__ = ["PREFIX", "NetnsPair", "QdiscStats", "namespaces", "parse_qdisc_stats", "remove_stale"]
