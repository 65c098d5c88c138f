"""aiortc helpers shared by the viewer's answering peers and the WHIP publisher.

Three things aiortc 1.16 does not do the way the viewer needs (DESIGN.md §6):

* aioice never gathers 127.0.0.1, so a peer in a namespace holding only ``lo`` (or a
  viewer on the same machine that only offers loopback) has no candidate pair at all;
  :func:`add_loopback_candidates` binds one ICE socket on 127.0.0.1 per ICE transport.
* a browser's PLI/FIR (RFC 4585 §6.3.1, RFC 5104 §4.3.1) only flags the sender's own,
  unused encoder; :func:`forward_keyframe_requests` passes it to the shared encoder.
* codec preferences must name exactly the codec the shared encoder produces, since the
  track hands aiortc pre-encoded packets (:func:`prefer_codec`).

The two that need aiortc/aioice internals go through
:mod:`rtstream.viewer._aiortc_private`, the one module allowed to touch them (it says
why, and its test fails when aiortc changes); the browser and WHIP tests exercise them.
"""

from __future__ import annotations

from collections.abc import Callable

from aiortc import RTCIceTransport, RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver

from rtstream.viewer._aiortc_private import add_host_candidates, on_keyframe_request
from rtstream.viewer.encoder import Codec

LOOPBACK = "127.0.0.1"


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
    transports: dict[int, RTCIceTransport] = {}
    for t in pc.getTransceivers():
        ice = t.receiver.transport.transport
        transports[id(ice)] = ice
    if pc.sctp is not None:
        ice = pc.sctp.transport.transport
        transports[id(ice)] = ice
    added = 0
    for ice in transports.values():
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
