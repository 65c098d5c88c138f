"""rtstream.endpoints: the one parser of HOST:PORT, AET@HOST:PORT and host names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtstream.endpoints import (
    DicomPeer,
    Endpoint,
    check_aet,
    check_port,
    parse_dicom_peer,
    parse_endpoint,
)
from rtstream.errors import ConfigError
from rtstream.net.udp import resolve  # the one host-name lookup lives with the sockets

# (text, keyword arguments, expected (host, port))
VALID = [
    ("127.0.0.1:5004", {}, ("127.0.0.1", 5004)),
    ("0.0.0.0:8080", {}, ("0.0.0.0", 8080)),
    ("239.1.1.1:65535", {}, ("239.1.1.1", 65535)),
    ("host.example:1", {}, ("host.example", 1)),
    ("pacs-1:104", {}, ("pacs-1", 104)),
    ("localhost:9100", {}, ("localhost", 9100)),
    ("[::1]:9100", {}, ("::1", 9100)),
    ("[fe80::1%lo]:80", {}, ("fe80::1%lo", 80)),
    ("[2001:db8::7]:5004", {}, ("2001:db8::7", 5004)),
    ("127.0.0.1:0", {"allow_port_zero": True}, ("127.0.0.1", 0)),
    ("[::]:0", {"allow_port_zero": True}, ("::", 0)),
    ("8080", {"default_host": "127.0.0.1"}, ("127.0.0.1", 8080)),
    (":8080", {"default_host": "0.0.0.0"}, ("0.0.0.0", 8080)),
]

# (text, keyword arguments, a fragment of the message)
INVALID = [
    ("", {}, "HOST:PORT"),
    ("9100", {}, "the port is missing"),
    (":9100", {}, "the host is missing"),
    ("host:", {}, "the port must be a number"),
    ("host:x", {}, "the port must be a number"),
    ("host:+5", {}, "the port must be a number"),
    ("host:５", {}, "the port must be a number"),  # non-ASCII digit
    ("host:0", {}, "1..65535"),
    ("[::1]:0", {}, "1..65535"),
    ("host:65536", {}, "1..65535"),
    ("host:99999", {"allow_port_zero": True}, "0..65535"),
    ("[::1]9100", {}, "followed by :PORT"),
    ("[::1]", {}, "followed by :PORT"),
    ("[]:1", {}, "the host is missing"),
    ("[host]:1", {}, "IPv6 address only"),
    ("[1.2.3.4]:1", {}, "IPv6 address only"),
    ("[::g]:1", {}, "not an IPv6 address"),
    ("::1:104", {}, "in brackets"),
    ("a b:1", {}, "not a host name"),
    ("a/b:1", {}, "not a host name"),
    ("-x:1", {}, "not a host name"),
    ("[::1]:5004", {"allow_ipv6": False}, "IPv6 is not supported"),
]


@pytest.mark.parametrize(("text", "kwargs", "expected"), VALID)
def test_parse_endpoint_valid(text: str, kwargs: dict[str, object], expected: tuple[str, int]) -> None:
    ep = parse_endpoint(text, key="--x", **kwargs)  # type: ignore[arg-type]
    assert ep == expected
    assert (ep.host, ep.port) == expected
    assert isinstance(ep, Endpoint)


@pytest.mark.parametrize(("text", "kwargs", "fragment"), INVALID)
def test_parse_endpoint_invalid(text: str, kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_endpoint(text, key="--flag", **kwargs)  # type: ignore[arg-type]
    assert exc.value.key == "--flag"
    assert "--flag" in str(exc.value) and fragment in str(exc.value)


@pytest.mark.parametrize("ep", [Endpoint("127.0.0.1", 5004), Endpoint("::1", 80),
                                Endpoint("host.example", 1)])
def test_endpoint_text_round_trips(ep: Endpoint) -> None:
    assert parse_endpoint(str(ep), key="k") == ep


@given(st.text(max_size=30), st.booleans())
def test_parse_endpoint_never_crashes(text: str, zero: bool) -> None:
    try:
        ep = parse_endpoint(text, key="k", allow_port_zero=zero)
    except ConfigError:
        return
    assert ep.host and (0 if zero else 1) <= ep.port <= 65535


@pytest.mark.parametrize(
    ("value", "allow_zero", "ok"),
    [(1, False, True), (65535, False, True), (0, False, False), (0, True, True),
     (65536, True, False), (-1, True, False), (True, False, False), ("80", False, False),
     (80.0, False, False)],
)
def test_check_port(value: object, allow_zero: bool, ok: bool) -> None:
    if ok:
        assert check_port(value, "network.port", allow_zero=allow_zero) == value
    else:
        with pytest.raises(ConfigError, match=r"network\.port"):
            check_port(value, "network.port", allow_zero=allow_zero)


# (text, expected peer or None for a ConfigError)
PEERS = [
    ("ORTHANC@127.0.0.1:4242", DicomPeer("ORTHANC", "127.0.0.1", 4242)),
    ("PACS@[::1]:104", DicomPeer("PACS", "::1", 104)),
    ("A B@host.example:11112", DicomPeer("A B", "host.example", 11112)),
    ("SIXTEENCHARSAETX@h:1", DicomPeer("SIXTEENCHARSAETX", "h", 1)),
    ("", None),
    ("ORTHANC", None),
    ("@h:1", None),
    ("   @h:1", None),  # all spaces
    ("A\\B@h:1", None),  # backslash
    ("A\tB@h:1", None),  # control character
    ("SEVENTEENCHARSAET@h:1", None),
    ("AET@:1", None),
    ("AET@h", None),
    ("AET@h:x", None),
    ("AET@h:0", None),
    ("AET@h:70000", None),
    ("A@B@h:1", None),
    ("AET@[::1]104", None),
    ("AET@::1:104", None),
]


@pytest.mark.parametrize(("text", "expected"), PEERS)
def test_parse_dicom_peer(text: str, expected: DicomPeer | None) -> None:
    if expected is not None:
        peer = parse_dicom_peer(text, key="--store")
        assert peer == expected
        assert parse_dicom_peer(str(peer), key="--store") == peer
        return
    with pytest.raises(ConfigError) as exc:
        parse_dicom_peer(text, key="--store")
    assert exc.value.key == "--store" and "--store" in str(exc.value)


@pytest.mark.parametrize("aet", ["A", "ORTHANC", " PADDED ", "x" * 16])
def test_check_aet_accepts(aet: str) -> None:
    assert check_aet(aet, "aet") == aet


@pytest.mark.parametrize("aet", ["", "   ", "x" * 17, "A\\B", "A\nB", "A\x7fB"])
def test_check_aet_refuses(aet: str) -> None:
    with pytest.raises(ConfigError, match="aet"):
        check_aet(aet, "aet")


def test_resolve() -> None:
    assert resolve("127.0.0.1", key="network.dest") == "127.0.0.1"
    assert resolve("localhost", key="network.dest").startswith("127.")
    for bad in ("no-such-host.invalid", "::1", ""):
        with pytest.raises(ConfigError, match=r"network\.dest"):
            resolve(bad, key="network.dest")
