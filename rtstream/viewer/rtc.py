"""aiortc helpers shared by the viewer's answering peers and the WHIP publisher.

Three things aiortc 1.16 does not do the way the viewer needs (DESIGN.md §6):

* aioice never gathers 127.0.0.1, so a peer in a namespace holding only ``lo`` (or a
  viewer on the same machine that only offers loopback) has no candidate pair at all;
  :func:`add_loopback_candidates` binds one ICE socket on 127.0.0.1 per ICE transport.
* aioice gathers host candidates on every interface of the machine and, for a
  browser's mDNS (``*.local``) candidates, opens a multicast DNS socket on port 5353:
  :func:`ice_addresses` says which addresses a viewer may use (those of the interface its
  HTTP server binds, or the interfaces it was told), :func:`gather_on` gathers there
  only, and :func:`drop_mdns_candidates` removes ``*.local`` candidates from an offer
  unless mDNS was asked for (the browser's checks still arrive from its real address,
  which ICE learns as a peer-reflexive candidate, RFC 8445 §7.3.1.3).
* a browser's PLI/FIR (RFC 4585 §6.3.1, RFC 5104 §4.3.1) only flags the sender's own,
  unused encoder; :func:`forward_keyframe_requests` passes it to the shared encoder.
* codec preferences must name exactly the codec the shared encoder produces, since the
  track hands aiortc pre-encoded packets (:func:`prefer_codec`).

The two that need aiortc/aioice internals go through
:mod:`rtstream.viewer._aiortc_private`, the one module allowed to touch them (it says
why, and its test fails when aiortc changes); the browser and WHIP tests exercise them.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence

import ifaddr
from aiortc import RTCIceTransport, RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver

from rtstream.errors import ConfigError
from rtstream.viewer._aiortc_private import (
    add_host_candidates,
    gather_only_on,
    on_keyframe_request,
)
from rtstream.viewer.encoder import Codec

LOOPBACK = "127.0.0.1"

_WILDCARDS = ("", "0.0.0.0", "::")


def _interfaces() -> dict[str, list[str]]:
    """Interface name -> its addresses (IPv6 link-local left out: not reachable by name)."""
    out: dict[str, list[str]] = {}
    for adapter in ifaddr.get_adapters():
        addrs = out.setdefault(str(adapter.nice_name), [])
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                addrs.append(ip.ip)
            elif ip.ip[2] == 0:  # (address, flowinfo, scope_id): scoped ones are link-local
                addrs.append(ip.ip[0])
    return out


def ice_addresses(http_host: str, interfaces: Sequence[str] = (),
                  *, key: str = "--ice-interface") -> list[str] | None:
    """The local addresses ICE may bind for a viewer serving HTTP on ``http_host``.

    Parameters
    ----------
    http_host : str
        The address the viewer's HTTP server binds; by default ICE uses it alone (or,
        for a name such as ``localhost``, what it resolves to).
    interfaces : sequence of str
        Interface names (``lo``, ``eth0``) or local addresses, overriding ``http_host``.
    key : str
        The flag or key named in errors.

    Returns
    -------
    list of str or None
        None when ``http_host`` is a wildcard (``0.0.0.0``, ``::``) and no interface was
        named: every interface, as the HTTP server itself.

    Raises
    ------
    ConfigError
        For an interface the host does not have (the message lists those it has).
    """
    known = _interfaces()
    if interfaces:
        out: list[str] = []
        for name in interfaces:
            if name in known:
                out += [a for a in known[name] if a not in out]
                continue
            try:
                ipaddress.ip_address(name)
            except ValueError:
                pass
            else:
                if any(name in addrs for addrs in known.values()):
                    if name not in out:
                        out.append(name)
                    continue
            have = ", ".join(f"{n} ({' '.join(a) or 'no address'})" for n, a in known.items())
            raise ConfigError(key, name, f"an interface of this host: {have}")
        if not out:
            raise ConfigError(key, ",".join(interfaces), "interfaces holding an address")
        return out
    if http_host in _WILDCARDS:
        return None
    try:
        return [str(ipaddress.ip_address(http_host))]
    except ValueError:
        infos = socket.getaddrinfo(http_host, None, type=socket.SOCK_DGRAM)
        return sorted({str(info[4][0]) for info in infos})


def _ice_transports(pc: RTCPeerConnection) -> list[RTCIceTransport]:
    transports: dict[int, RTCIceTransport] = {}
    for t in pc.getTransceivers():
        ice = t.receiver.transport.transport
        transports[id(ice)] = ice
    if pc.sctp is not None:
        ice = pc.sctp.transport.transport
        transports[id(ice)] = ice
    return list(transports.values())


async def gather_on(pc: RTCPeerConnection, addresses: Sequence[str]) -> int:
    """Gather every ICE transport's candidates of ``pc`` on ``addresses`` only.

    Call where :func:`add_loopback_candidates` is called (before ``setLocalDescription``).
    STUN/TURN candidates come only from the servers ``pc`` was configured with.

    Returns
    -------
    int
        How many candidates were gathered.
    """
    n = 0
    for ice in _ice_transports(pc):
        n += await gather_only_on(ice, list(addresses))
    return n


_MDNS_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ \S+\.local \d+ .*\r?\n", re.M)


def drop_mdns_candidates(sdp: str) -> str:
    """``sdp`` without its mDNS (``*.local``) ICE candidates.

    aioice resolves those by multicast DNS, opening a socket on port 5353 on every
    interface; the browser's connectivity checks still reach the viewer's candidates from
    its real address, which ICE pairs as peer-reflexive (RFC 8445 §7.3.1.3).
    """
    return _MDNS_CANDIDATE.sub("", sdp)


async def add_loopback_candidates(pc: RTCPeerConnection) -> int:
    """Bind an ICE socket on 127.0.0.1 for each ICE transport of ``pc``.

    Call it after ``addTransceiver``/``createDataChannel`` (offerer) or after
    ``createAnswer`` (answerer), and before ``setLocalDescription``, which gathers: the
    candidate joins aioice's local candidates (gathering appends to them), so aiortc
    writes it into the description and answers the connectivity checks arriving on it.

    Returns
    -------
    int
        How many candidates were added (0 when every transport already had one).
    """
    added = 0
    for ice in _ice_transports(pc):
        added += await add_host_candidates(ice, LOOPBACK)
    return added


def forward_keyframe_requests(sender: RTCRtpSender, request: Callable[[], None]) -> None:
    """Pass the remote peer's PLI/FIR (RFC 4585 §6.3.1, RFC 5104 §4.3.1) to ``request``.

    aiortc hands them to the sender's own encoder, unused since our tracks return
    packets; :func:`~rtstream.viewer._aiortc_private.on_keyframe_request` forwards them
    to the shared encoder instead.
    """
    on_keyframe_request(sender, request)


def prefer_codec(transceiver: RTCRtpTransceiver, codec: Codec) -> None:
    """Limit ``transceiver`` to ``codec`` (plus RTX, RFC 4588) before the offer/answer.

    For H.264 the constrained baseline entry (``profile-level-id=42e01f``, what the
    shared encoder produces) is listed first.
    """
    caps = RTCRtpSender.getCapabilities("video")
    prefs = [c for c in caps.codecs if c.mimeType == codec.mime_type]
    if codec is Codec.H264:
        prefs.sort(key=lambda c: (c.parameters or {}).get("profile-level-id") != "42e01f")
    prefs += [c for c in caps.codecs if c.mimeType == "video/rtx"]
    transceiver.setCodecPreferences(prefs)
