"""The aiortc/aioice internals :mod:`rtstream.viewer._aiortc_private` relies on still exist.

Real objects, made offline (no STUN, ICE sockets on 127.0.0.1 only): a failure here means
aiortc or aioice changed; re-read their source, fix the adapter, update CHECKED_AGAINST.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import aioice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket

from rtstream.viewer import _aiortc_private as priv


@pytest.fixture
async def pc() -> AsyncIterator[RTCPeerConnection]:
    peer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        yield peer
    finally:
        await peer.close()


def _sender(pc: RTCPeerConnection) -> RTCRtpSender:
    return pc.addTransceiver("video", direction="sendonly").sender


def test_installed_versions_are_the_checked_ones() -> None:
    for name, checked in priv.CHECKED_AGAINST.items():
        installed = importlib.metadata.version(name)
        assert installed == checked, (
            f"{name} {installed} is installed, the private reaches were checked against "
            f"{checked}: re-check {priv.REACHES} in its source and update CHECKED_AGAINST"
        )


async def test_every_reach_exists_on_real_objects(pc: RTCPeerConnection) -> None:
    sender = _sender(pc)
    ice = sender.transport.transport
    conn = getattr(ice.iceGatherer, "_connection", None)
    assert isinstance(conn, aioice.Connection), "RTCIceGatherer._connection is gone"
    assert isinstance(getattr(conn, "_local_candidates", None), list), (
        "aioice Connection._local_candidates is no longer a list"
    )
    assert callable(getattr(conn, "get_component_candidates", None))
    assert callable(getattr(sender, "_send_keyframe", None)), "RTCRtpSender._send_keyframe"
    assert isinstance(getattr(sender, "_RTCRtpSender__rtp_timestamp", None), int), (
        "RTCRtpSender.__rtp_timestamp is gone"
    )
    # ... and they still mean what the adapter assumes:
    assert "self.__rtp_timestamp = packet.timestamp" in inspect.getsource(RTCRtpSender._run_rtp)
    assert "self._local_candidates += candidates" in inspect.getsource(
        aioice.Connection.gather_candidates
    ), "aioice gathering no longer appends to the list the adapter extends"
    assert priv.last_sent_rtp_timestamp(sender) == 0


async def test_keyframe_request_reaches_the_callback(pc: RTCPeerConnection) -> None:
    sender = _sender(pc)
    calls: list[int] = []
    assert priv.on_keyframe_request(sender, lambda: calls.append(1))
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1234, media_ssrc=sender._ssrc)
    await sender._handle_rtcp_packet(pli)  # what aiortc does with a PLI from the peer
    assert calls == [1]


async def test_host_candidate_is_added_once_and_survives_gathering(
    pc: RTCPeerConnection,
) -> None:
    ice = _sender(pc).transport.transport
    assert await priv.add_host_candidates(ice, "127.0.0.1") == 1
    assert await priv.add_host_candidates(ice, "127.0.0.1") == 0
    await ice.iceGatherer.gather()
    ips = [c.ip for c in ice.iceGatherer.getLocalCandidates()]
    assert ips.count("127.0.0.1") == 1, ips


async def test_missing_internals_degrade_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    class Bare:
        pass

    caplog.set_level(logging.WARNING, logger=priv.__name__)
    bare = cast(Any, Bare())
    assert priv.last_sent_rtp_timestamp(bare) is None
    assert priv.on_keyframe_request(bare, lambda: None) is False
    assert "internals changed" in caplog.text


async def test_gathering_only_on_named_addresses(pc: RTCPeerConnection) -> None:
    ice = _sender(pc).transport.transport
    conn = ice.iceGatherer._connection
    assert conn._local_candidates_start is False and conn._local_candidates_end is False, (
        "aioice Connection._local_candidates_start/_end changed")
    assert "if not self._local_candidates_start:" in inspect.getsource(
        aioice.Connection.gather_candidates), "aioice gathering no longer checks the start flag"
    assert await priv.gather_only_on(ice, ["127.0.0.1"]) == 1
    await ice.iceGatherer.gather()  # what setLocalDescription does: must add nothing
    assert [c.ip for c in ice.iceGatherer.getLocalCandidates()] == ["127.0.0.1"]
    assert await priv.gather_only_on(ice, ["127.0.0.1"]) == 0
