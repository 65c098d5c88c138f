"""The only place rtstream reaches into aiortc's (and aioice's) private attributes.

Checked against aiortc 1.16.0 and aioice 0.13.0 (:data:`CHECKED_AGAINST`);
``tests/viewer/test_aiortc_private.py`` builds real objects offline and fails when any
attribute below is gone or changed shape, so an aiortc upgrade breaks one test with a
clear message instead of the viewer silently losing a feature.

Why each reach is needed (no public API does it in aiortc 1.16):

``RTCIceGatherer._connection`` and aioice ``Connection._local_candidates``
    aioice never gathers 127.0.0.1 (DESIGN.md §6). :func:`add_host_candidates` binds an
    extra host candidate with aioice's public ``Connection.get_component_candidates`` and
    appends it to the connection's own list, so aiortc writes it into the description and
    answers the checks arriving on it. Reading the candidates uses the public
    ``RTCIceGatherer.getLocalCandidates()``; only the append needs the private list
    (``Connection.local_candidates`` returns a copy).
``aioice.Connection._local_candidates_start`` / ``_local_candidates_end``
    aioice gathers host candidates on every interface of the machine
    (``get_host_addresses``), with no parameter to name them. :func:`gather_only_on`
    gathers on the given addresses with the public ``get_component_candidates`` (which
    also asks the configured STUN/TURN servers, and nothing else), appends them as
    gathering does and marks gathering started and ended, so aiortc's own
    ``gather_candidates`` call finds nothing left to do and binds nothing more.
``RTCRtpSender._send_keyframe``
    aiortc turns a remote PLI/FIR (RFC 4585 §6.3.1, RFC 5104 §4.3.1) into this method,
    which only flags the sender's own encoder -- unused, since our tracks hand it
    pre-encoded packets. :func:`on_keyframe_request` wraps it on one sender instance.
``RTCRtpSender.__rtp_timestamp`` (name-mangled ``_RTCRtpSender__rtp_timestamp``)
    The RTP timestamp of the last packet sent. aiortc adds a random, constant
    ``timestamp_origin`` (RFC 3550 §5.1) to the track's timestamps and exposes it nowhere
    (``getStats`` has no timestamp); the viewer page needs that offset to match frames to
    their overlay, so :func:`last_sent_rtp_timestamp` reads it.

Every function degrades instead of raising when the internals are missing: it logs a
warning and reports that it did nothing (``None``/``False``/0).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiortc import RTCIceTransport, RTCRtpSender

log = logging.getLogger(__name__)

#: The package versions these reaches were read from and tested against.
CHECKED_AGAINST = {"aiortc": "1.16.0", "aioice": "0.13.0"}

#: ``(owner, attribute)`` of every private reach, for the test and for error messages.
REACHES = (
    ("aiortc.RTCIceGatherer", "_connection"),
    ("aioice.Connection", "_local_candidates"),
    ("aioice.Connection", "_local_candidates_start"),
    ("aioice.Connection", "_local_candidates_end"),
    ("aiortc.RTCRtpSender", "_send_keyframe"),
    ("aiortc.RTCRtpSender", "_RTCRtpSender__rtp_timestamp"),
)

_RTP_TIMESTAMP = "_RTCRtpSender__rtp_timestamp"


def _ice_connection(ice: RTCIceTransport) -> Any:
    """aioice's ``Connection`` behind ``ice`` (``RTCIceGatherer._connection``), or None."""
    return getattr(ice.iceGatherer, "_connection", None)


async def add_host_candidates(ice: RTCIceTransport, address: str) -> int:
    """Bind an ICE host candidate on ``address`` for ``ice`` unless it already has one.

    Call before aiortc gathers (before ``setLocalDescription``): gathering appends to the
    same list, and aiortc writes every local candidate into the description.

    Returns
    -------
    int
        How many candidates were added (0 when one existed or the internals changed).
    """
    if any(c.ip == address for c in ice.iceGatherer.getLocalCandidates()):
        return 0
    conn = _ice_connection(ice)
    local = getattr(conn, "_local_candidates", None)
    if conn is None or not isinstance(local, list):
        log.warning("cannot add an ICE candidate on %s: aioice internals changed", address)
        return 0
    cands = await conn.get_component_candidates(component=1, addresses=[address])
    local.extend(cands)
    return len(cands)


async def gather_only_on(ice: RTCIceTransport, addresses: list[str]) -> int:
    """Gather ``ice``'s candidates on ``addresses`` only, instead of every interface.

    Call before aiortc gathers (before ``setLocalDescription``). Host candidates are
    bound on each address (port chosen by the kernel); server-reflexive and relayed ones
    come only from the STUN/TURN servers the peer connection was configured with.

    Returns
    -------
    int
        How many candidates were gathered; 0 (and a warning, aiortc then gathers on
        every interface) when the aioice internals changed.
    """
    conn = _ice_connection(ice)
    local = getattr(conn, "_local_candidates", None)
    if (conn is None or not isinstance(local, list)
            or not isinstance(getattr(conn, "_local_candidates_start", None), bool)
            or not isinstance(getattr(conn, "_local_candidates_end", None), bool)):
        log.warning("cannot limit ICE gathering to %s: aioice internals changed",
                    ", ".join(addresses))
        return 0
    if conn._local_candidates_start:
        return 0
    conn._local_candidates_start = True
    cands = await conn.get_component_candidates(component=1, addresses=list(addresses))
    local.extend(cands)
    conn._local_candidates_end = True
    return len(cands)


def on_keyframe_request(sender: RTCRtpSender, request: Callable[[], None]) -> bool:
    """Also call ``request`` whenever the remote peer asks ``sender`` for a key frame.

    Returns
    -------
    bool
        False (and a warning) when aiortc's ``_send_keyframe`` is gone.
    """
    original = getattr(sender, "_send_keyframe", None)
    if not callable(original):
        log.warning("cannot forward key frame requests: aiortc internals changed")
        return False

    def send_keyframe() -> None:
        original()
        request()

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]
    return True


def last_sent_rtp_timestamp(sender: RTCRtpSender) -> int | None:
    """The RTP timestamp of the last packet ``sender`` sent (0 before the first).

    None when aiortc no longer keeps it under that name.
    """
    sent = getattr(sender, _RTP_TIMESTAMP, None)
    return sent if isinstance(sent, int) else None
