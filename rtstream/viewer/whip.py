"""Publish a stream's shared encode to a WebRTC media server by WHIP (RFC 9725).

Theory of operation
-------------------
A browser viewer costs the machine one peer connection; a lecture hall of hundreds is
better served by a media server (an SFU) that fans the stream out. WHIP is the HTTP
signalling such servers accept for ingest (RFC 9725 §4):

1. the publisher creates a send-only peer connection whose video track is a
   :class:`~rtstream.viewer.encoder.PacketTrack` of the stream's **shared** encoder --
   the same :class:`~rtstream.viewer.encoder.SharedEncoder` the browser viewers use, so
   publishing adds no encode -- limited to that encoder's codec;
2. it gathers every ICE candidate first (non-trickle; aiortc's ``setLocalDescription``
   returns once gathering is complete) and POSTs the SDP offer to the endpoint URL with
   ``Content-Type: application/sdp`` and, when configured, ``Authorization: Bearer``
   (RFC 9725 §4.2, §4.5; RFC 6750);
3. the server answers ``201 Created`` with the SDP answer as body and the WHIP session
   URL in ``Location`` (relative references are resolved against the endpoint URL);
   anything else is an error naming the status. ICE/DTLS then run as for any WebRTC
   peer; the server's PLI/FIR reach the shared encoder;
4. :meth:`WhipPublisher.stop` sends ``DELETE`` to the session URL (RFC 9725 §4.2) and
   closes the peer connection.

No PATCH is sent (no trickle ICE, no ICE restart). Server-advertised ICE servers
(``Link: rel="ice-server"``, RFC 9725 §4.6) arrive only with the answer, after a
non-trickle offer has been gathered, so they are logged, not used; configure STUN/TURN
with ``ice_servers`` instead. As in the viewer, no STUN server is used unless configured,
and a 127.0.0.1 candidate is added (aioice leaves it out) so that a media server on the
same host, or in a loopback-only namespace, is reachable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from yarl import URL

from rtstream.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from rtstream.viewer.encoder import Codec, EncoderRegistry, PacketTrack
from rtstream.viewer.rtc import (
    add_loopback_candidates,
    forward_keyframe_requests,
    gather_on,
    ice_addresses,
    prefer_codec,
)

log = logging.getLogger(__name__)

SDP_TYPE = "application/sdp"
_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def _check_url(url: str, key: str) -> URL:
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        raise ConfigError(key, url, "an http:// or https:// URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(key, url, "an http:// or https:// URL with a host")
    return parsed


class WhipPublisher:
    """One WHIP session sending a stream's shared encode to a media server.

    Parameters
    ----------
    endpoint_url : str
        The WHIP endpoint (``http://`` or ``https://``; RFC 9725 wants HTTPS beyond a
        trusted network, and a bearer token over plain HTTP to another host is warned about).
    stream_id : str
        The viewer stream to publish.
    encoders : EncoderRegistry
        Where the stream's shared encoder lives (``ViewerServer.registry``): the
        publisher subscribes to the encoder of ``codec``, creating it only if no viewer
        made it yet.
    bearer_token : str or None
        Sent as ``Authorization: Bearer`` on POST and DELETE (RFC 9725 §4.5).
    codec : Codec or None
        Codec to publish; None takes the registry's configured codec.
    ice_servers : sequence of str
        STUN/TURN URLs; none by default.
    offer_loopback : bool
        Add a 127.0.0.1 ICE candidate to the offer (when ``ice_interfaces`` is empty).
    ice_interfaces : sequence of str
        Interface names or local addresses to gather on; empty (the default): every
        interface, since a media server is usually elsewhere.
    timeout : float
        Seconds allowed for each HTTP exchange.

    Examples
    --------
    >>> async with WhipPublisher(url, stream_id="test",               # doctest: +SKIP
    ...                          encoders=viewer.registry) as whip:
    ...     await whip.wait_connected()
    """

    def __init__(
        self,
        endpoint_url: str,
        *,
        stream_id: str,
        encoders: EncoderRegistry,
        bearer_token: str | None = None,
        codec: Codec | None = None,
        ice_servers: Sequence[str] = (),
        offer_loopback: bool = True,
        ice_interfaces: Sequence[str] = (),
        timeout: float = 10.0,
    ) -> None:
        self.endpoint = _check_url(endpoint_url, "whip.endpoint_url")
        if bearer_token is not None and (not bearer_token or any(c.isspace() for c in bearer_token)):
            raise ConfigError("whip.bearer_token", "<hidden>", "a non-empty token without spaces")
        for url in ice_servers:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ConfigError("whip.ice_servers", url, "stun:, turn: or turns: URLs")
        if not 0 < timeout <= 300:
            raise ConfigError("whip.timeout", timeout, "0 < seconds <= 300")
        if (
            bearer_token is not None
            and self.endpoint.scheme == "http"
            and self.endpoint.host not in _LOOPBACK_HOSTS
        ):
            log.warning("WHIP: sending the bearer token over plain HTTP to %s", self.endpoint.host)
        self.stream_id = stream_id
        self.encoders = encoders
        self.codec = codec or encoders.cfg.codec
        self.bearer_token = bearer_token
        self.ice_servers = tuple(ice_servers)
        self.offer_loopback = offer_loopback
        self.ice_addresses = (ice_addresses("0.0.0.0", ice_interfaces, key="whip.ice_interfaces")
                              if ice_interfaces else None)
        self.timeout = timeout
        self.resource_url: URL | None = None
        self.etag: str | None = None
        self.ice_server_links: list[str] = []
        self.pc: RTCPeerConnection | None = None
        self.track: PacketTrack | None = None
        self._session: aiohttp.ClientSession | None = None
        self._connected = asyncio.Event()
        self._failed = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def state(self) -> str:
        """The peer connection's state (``"new"`` before :meth:`start`)."""
        return "new" if self.pc is None else str(self.pc.connectionState)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.bearer_token}"
        return headers

    async def start(self) -> None:
        """Make the offer, POST it, apply the answer (ICE and DTLS then proceed).

        Raises
        ------
        RemoteProtocolError
            When the endpoint answers anything but ``201`` with an SDP answer and a
            ``Location`` (the field names what was wrong), or cannot be reached.
        """
        if self.pc is not None:
            raise LocalProtocolError("WhipPublisher.start called twice")
        ice = [RTCIceServer(urls=u) for u in self.ice_servers]
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
        encoder = self.encoders.get(self.stream_id, self.codec)
        self.track = encoder.subscribe()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout)
        )
        try:
            transceiver = pc.addTransceiver(self.track, direction="sendonly")
            prefer_codec(transceiver, self.codec)
            forward_keyframe_requests(transceiver.sender, encoder.request_keyframe)

            @pc.on("connectionstatechange")
            def on_state() -> None:
                log.info("WHIP %s: connection %s", self.endpoint, pc.connectionState)
                if pc.connectionState == "connected":
                    self._connected.set()
                elif pc.connectionState in ("failed", "closed"):
                    self._failed.set()

            offer = await pc.createOffer()
            if self.ice_addresses is not None:
                await gather_on(pc, self.ice_addresses)
            elif self.offer_loopback:
                await add_loopback_candidates(pc)
            await pc.setLocalDescription(offer)  # gathers every candidate (non-trickle)
            answer = await self._post(pc.localDescription.sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        except BaseException:
            await self._teardown(delete=True)
            raise
        log.info(
            "WHIP: publishing stream %s (%s) to %s, session %s",
            self.stream_id, self.codec.value, self.endpoint, self.resource_url,
        )

    async def _post(self, offer_sdp: str) -> str:
        assert self._session is not None
        try:
            async with self._session.post(
                self.endpoint,
                data=offer_sdp.encode(),
                headers=self._headers({"Content-Type": SDP_TYPE, "Accept": SDP_TYPE}),
            ) as resp:
                body = await resp.text(errors="replace")
                if resp.status != 201:
                    raise RemoteProtocolError(
                        "WHIP POST status",
                        f"{resp.status} {resp.reason or ''} (201 Created expected): "
                        f"{body.strip()[:200]}",
                    )
                location = resp.headers.get("Location")
                if not location:
                    raise RemoteProtocolError("WHIP Location", "missing from the 201 answer")
                try:
                    self.resource_url = resp.url.join(URL(location))
                except ValueError:
                    raise RemoteProtocolError("WHIP Location", f"not a URL: {location!r}") from None
                self.etag = resp.headers.get("ETag")
                self.ice_server_links = [
                    link for link in resp.headers.getall("Link", []) if "ice-server" in link
                ]
                if self.ice_server_links:
                    log.info("WHIP: server offers ICE servers (not used): %s",
                             self.ice_server_links)
                if resp.content_type != SDP_TYPE:
                    raise RemoteProtocolError(
                        "WHIP Content-Type", f"{resp.content_type!r}, {SDP_TYPE} expected"
                    )
                if not body.startswith("v=0"):
                    raise RemoteProtocolError("WHIP answer", "the body is not an SDP (no v=0)")
                return body
        except aiohttp.ClientError as exc:
            raise RemoteProtocolError("WHIP endpoint", f"{type(exc).__name__}: {exc}") from exc
        except TimeoutError:
            raise RemoteProtocolError(
                "WHIP endpoint", f"no answer within {self.timeout} s"
            ) from None

    async def wait_connected(self, timeout: float = 20.0) -> None:
        """Wait until ICE and DTLS are up; raise if the connection fails or times out."""
        done = asyncio.ensure_future(self._connected.wait())
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            await asyncio.wait({done, failed}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            done.cancel()
            failed.cancel()
        if not self._connected.is_set():
            raise RemoteProtocolError(
                "WHIP connection", f"not connected after {timeout} s (state {self.state})"
            )

    async def stop(self) -> None:
        """End the session: DELETE the session URL (RFC 9725 §4.2) and close the peer."""
        await self._teardown(delete=True)

    async def _teardown(self, *, delete: bool) -> None:
        if delete and self.resource_url is not None and self._session is not None:
            url, self.resource_url = self.resource_url, None
            try:
                async with self._session.delete(url, headers=self._headers()) as resp:
                    if resp.status >= 300:
                        log.warning("WHIP: DELETE %s answered %d", url, resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("WHIP: DELETE %s failed: %s", url, exc)
        if self.track is not None:
            self.track.stop()
        if self.pc is not None:
            await self.pc.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> WhipPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def stats(self) -> dict[str, Any]:
        """Frames handed to aiortc and skipped (waiting for a key frame / too slow)."""
        track = self.track
        return {
            "state": self.state,
            "frames_sent": 0 if track is None else track.frames_sent,
            "frames_skipped": 0 if track is None else track.frames_skipped,
            "resource": None if self.resource_url is None else str(self.resource_url),
        }
