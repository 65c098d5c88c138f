"""Network endpoints given by the user: ``HOST:PORT``, ``AET@HOST:PORT``, host names.

Every CLI flag and TOML key naming a place on the network is parsed here, so that one
set of rules holds everywhere:

* ``HOST:PORT`` -- an IPv4 address (``192.0.2.1:5004``), a host name (``pacs.local:104``)
  or an IPv6 address in brackets (``[::1]:8080``, RFC 3986 §3.2.2); a bare IPv6 address
  is refused with a hint to bracket it.
* The port is a decimal number 1..65535; 0 only where the caller says it means "any free
  port" (a listening socket), never for a destination.
* ``AET@HOST:PORT`` -- a DICOM peer: an AE title (PS3.5 §6.2, VR AE: 1 to 16 characters,
  not all spaces, no backslash or control characters), ``@``, then ``HOST:PORT`` as above.

Mistakes raise :class:`~rtstream.errors.ConfigError` naming the key or flag, the value and
the expected form. Only the standard library is used, so every layer may import this.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from rtstream.errors import ConfigError

__all__ = [
    "DicomPeer",
    "Endpoint",
    "check_aet",
    "check_port",
    "parse_dicom_peer",
    "parse_endpoint",
]

_FORM = "HOST:PORT, e.g. 127.0.0.1:5004, host.example:5004 or [::1]:5004"
_PEER_FORM = "AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242"
# Host names (RFC 1123 labels, leniently: '_' occurs in the wild) and IPv4 literals.
_HOST_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?")
_AET_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")


class Endpoint(NamedTuple):
    """A host and a port (compares equal to the plain ``(host, port)`` tuple).

    ``host`` holds an IPv6 address without its brackets.
    """

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class DicomPeer(NamedTuple):
    """A DICOM application entity on the network, from ``AET@HOST:PORT``.

    ``called_aet`` is the peer's AE title, the one we call when associating.
    """

    called_aet: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.called_aet}@{Endpoint(self.host, self.port)}"


def check_port(value: object, key: str, *, allow_zero: bool = False, what: str = "port") -> int:
    """Validate a port number given as an integer (a TOML value or a typed flag).

    Parameters
    ----------
    value : object
        The value to check.
    key : str
        Configuration key or flag named in the error.
    allow_zero : bool
        Accept 0, meaning "any free port" (listening sockets only).
    what : str
        The kind of port in the message, e.g. ``"UDP port"``.

    Raises
    ------
    ConfigError
        When ``value`` is not an integer in 1..65535 (0..65535 with ``allow_zero``).
    """
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 65535:
        hint = " (0 picks a free one)" if allow_zero else ""
        raise ConfigError(key, value, f"a {what} number {low}..65535{hint}")
    return value


def _check_host(host: str, text: str, key: str, *, allow_ipv6: bool) -> str:
    if ":" in host:  # only an IPv6 literal may hold a colon
        try:
            addr = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            raise ConfigError(key, text, f"{_FORM} (the host {host!r} is not an IPv6 address)") from None
        if addr.version != 6:
            raise ConfigError(key, text, _FORM)
        if not allow_ipv6:
            raise ConfigError(key, text, "an IPv4 address or host name: IPv6 is not supported here")
        return host
    if not _HOST_RE.fullmatch(host):
        raise ConfigError(key, text, f"{_FORM} (the host {host!r} is not a host name or IPv4 address)")
    return host


def parse_endpoint(
    text: str,
    *,
    key: str,
    default_host: str | None = None,
    allow_port_zero: bool = False,
    allow_ipv6: bool = True,
) -> Endpoint:
    """Parse ``HOST:PORT`` (``[IPv6]:PORT``) into an :class:`Endpoint`.

    Parameters
    ----------
    text : str
        What the user wrote.
    key : str
        The flag or configuration key, named in errors (``"--dest"``, ``"http"``).
    default_host : str or None
        When given, a bare ``PORT`` or ``:PORT`` means this host; otherwise the host is
        required.
    allow_port_zero : bool
        Accept port 0 ("any free port"): only for addresses we listen on.
    allow_ipv6 : bool
        Accept ``[IPv6]:PORT`` (False for the IPv4-only media sockets).

    Raises
    ------
    ConfigError
        Naming ``key``, the value and the expected form.

    Examples
    --------
    >>> parse_endpoint("[::1]:8080", key="--http")
    Endpoint(host='::1', port=8080)
    """
    if not isinstance(text, str) or not text:
        raise ConfigError(key, text, _FORM)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(key, text, f"{_FORM} (an IPv6 address in brackets is followed by :PORT)")
        if not host:
            raise ConfigError(key, text, f"{_FORM} (the host is missing)")
        port_text = rest[1:]
        if ":" not in host:
            raise ConfigError(key, text, f"{_FORM} (brackets hold an IPv6 address only)")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            if default_host is None:
                raise ConfigError(key, text, f"{_FORM} (the port is missing)")
            host, port_text = default_host, text
        elif not host:
            if default_host is None:
                raise ConfigError(key, text, f"{_FORM} (the host is missing)")
            host = default_host
        elif ":" in host:
            raise ConfigError(key, text, f"{_FORM} (write an IPv6 address in brackets: [{host}]:{port_text})")
    host = _check_host(host, text, key, allow_ipv6=allow_ipv6)
    if not port_text.isascii() or not port_text.isdigit():
        raise ConfigError(key, text, f"{_FORM} (the port must be a number)")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        hint = " (0 picks a free one)" if allow_port_zero else ""
        raise ConfigError(key, text, f"a port number {low}..65535 after the colon{hint}")
    return Endpoint(host, port)


def check_aet(value: str, key: str) -> str:
    """Validate an AE title (PS3.5 §6.2, VR AE: 1-16 characters, no backslash/control).

    Raises
    ------
    ConfigError
        Naming ``key`` when the title is empty, too long or has forbidden characters.
    """
    if not isinstance(value, str) or not value.strip() or len(value) > 16:
        raise ConfigError(key, value, "an AE title of 1 to 16 characters, not all spaces")
    if _AET_FORBIDDEN.search(value):
        raise ConfigError(key, value, "an AE title without backslash or control characters")
    return value


def parse_dicom_peer(text: str, *, key: str) -> DicomPeer:
    """Parse ``AET@HOST:PORT`` (``AET@[::1]:PORT`` for IPv6) into a :class:`DicomPeer`.

    Raises
    ------
    ConfigError
        Naming ``key`` and the expected form when ``text`` does not parse, the AE title
        breaks the AE rules (:func:`check_aet`) or the port is outside 1..65535.
    """
    if not isinstance(text, str) or text.count("@") != 1:
        raise ConfigError(key, text, _PEER_FORM)
    aet, _, hostport = text.partition("@")
    check_aet(aet, key)
    try:
        host, port = parse_endpoint(hostport, key=key)
    except ConfigError as exc:
        raise ConfigError(key, text, f"{_PEER_FORM}; after '@': {exc.allowed}") from None
    return DicomPeer(aet, host, port)
