"""From an SDP to flows: one reader per flow, metadata flows joined to theirs.

A flow is one ``m=`` section, or the legs of an ST 2022-7 ``a=group:DUP`` (one reader
named after the first leg's mid, both legs merged by a :class:`~rtstream.proto.dup.DupMerger`;
a metadata leg that describes any leg of a group describes the group's flow).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from rtstream.errors import ConfigError
from rtstream.proto.clock import Clock
from rtstream.proto.dup import DEFAULT_SILENCE_NS, DupMerger
from rtstream.proto.sdp import SdpMedia, SdpSession
from rtstream.receiver.config import ReceiverConfig
from rtstream.receiver.readers import (
    AudioReader,
    ChunkSink,
    FlowReader,
    FrameSink,
    GrainSink,
    MetadataReader,
    VideoReader,
    open_socket,
)

log = logging.getLogger(__name__)

__all__ = ["FlowSet", "build_flows"]


@dataclass
class FlowSet:
    """The readers of one SDP: video, audio and metadata flows, in SDP order."""

    video: list[VideoReader]
    audio: list[AudioReader]
    metadata: list[MetadataReader]

    def all(self) -> tuple[FlowReader, ...]:
        """Every reader: video, audio, then metadata."""
        return (*self.video, *self.audio, *self.metadata)

    def named(self, name: str) -> FlowReader | None:
        """The reader of flow ``name``, or None."""
        for f in self.all():
            if f.name == name:
                return f
        return None


def build_flows(
    session: SdpSession,
    cfg: ReceiverConfig,
    clock: Clock,
    sink: FrameSink,
    grain_sink: GrainSink,
    chunk_sink: ChunkSink,
) -> FlowSet:
    """The readers of ``session``.

    A metadata flow describes the flow named by its ``a=x-rtstream-describes``, else the
    first unclaimed video or audio flow of the same clock rate (PS3.22 §6.2.1).

    Raises
    ------
    ConfigError
        When the SDP has neither a video nor an audio flow.
    """
    def primary(ms: list[SdpMedia]) -> list[SdpMedia]:
        return [m for m in ms if not session.is_secondary_leg(m)]

    video = [VideoReader(m.mid or f"video{i}", m, clock, cfg=cfg, sink=sink)
             for i, m in enumerate(primary(session.video()))]
    audio = [AudioReader(m.mid or f"audio{i}", m, clock, cfg=cfg, sink=chunk_sink)
             for i, m in enumerate(primary(session.audio()))]
    metas = primary(session.metadata())
    media: list[VideoReader | AudioReader] = [*video, *audio]
    by_mid: dict[str, VideoReader | AudioReader] = {}
    for f in media:
        for leg in session.legs(f.media):
            by_mid[leg.mid or f.name] = f
    unclaimed_video = list(video)
    unclaimed_audio = list(audio)
    metadata: list[MetadataReader] = []
    for i, m in enumerate(metas):
        mf = MetadataReader(m.mid or f"metadata{i}", m, clock, sink=grain_sink)
        if m.rendition:
            # A Rendition Selection Document (``a=x-rtstream-rendition``) describes a group,
            # no one flow: read like any metadata flow, joined to none; its document says
            # which flows belong together (:mod:`rtstream.receiver.sync`).
            log.info("metadata flow %s carries a rendition (Rendition Selection Document)",
                     mf.name)
            metadata.append(mf)
            continue
        target: VideoReader | AudioReader | None = None
        if m.describes is not None:
            target = by_mid.get(m.describes)
            if target is None:
                log.warning("metadata flow %s describes unknown mid %r", mf.name, m.describes)
        if target is None:
            # no a=x-rtstream-describes: the first unclaimed flow of the same clock
            unclaimed: list[VideoReader | AudioReader] = [*unclaimed_video, *unclaimed_audio]
            for cand in unclaimed:
                if cand.media.clock_rate == m.clock_rate:
                    target = cand
                    break
        if isinstance(target, VideoReader) and target.meta is None:
            target.meta = mf
            unclaimed_video.remove(target)
        elif isinstance(target, AudioReader) and target.meta is None:
            target.meta = mf
            unclaimed_audio.remove(target)
        else:
            target = None
            log.warning("metadata flow %s describes no video or audio flow here", mf.name)
        mf.target = target
        metadata.append(mf)
    for reader in (*video, *audio, *metadata):
        _dup_legs(session, reader, cfg)
    if not video and not audio:
        raise ConfigError("sdp", cfg.sdp, "an SDP with at least one video or audio flow")
    if not metas:
        log.info(
            "SDP has no DICOM-RTV metadata flow: receiving video/audio only "
            "(no patient/study identity, no per-frame metadata)"
        )
    for vf in video:
        if vf.meta is None and metas:
            log.info("video flow %s has no metadata flow: frames come without metadata", vf.name)
    return FlowSet(video=video, audio=audio, metadata=metadata)


#: When a leg of a rendition flow counts as silent (ns): two 1 Hz documents missed.
RENDITION_SILENCE_NS = 2_500_000_000


def _dup_legs(session: SdpSession, reader: FlowReader, cfg: ReceiverConfig) -> None:
    """Give the reader of an ST 2022-7 flow its second leg and its merge."""
    legs = session.legs(reader.media)
    if len(legs) < 2:
        return
    if len(legs) > 2:
        log.warning("flow %s has %d DUP legs: receiving the first two", reader.name, len(legs))
        legs = legs[:2]
    window = 65536 if isinstance(reader, VideoReader) else 1024
    # A rendition document comes at >= 1 Hz (PS3.22 §2.7 of the digest), not per frame: its
    # legs are silent only when two documents in a row are missing.
    silence_ns = RENDITION_SILENCE_NS if reader.media.rendition else DEFAULT_SILENCE_NS
    merge = DupMerger(2, window=window, skew_ns=int(cfg.dup_skew_ms * 1e6), silence_ns=silence_ns)
    # Video copies cost the receiver as much as the first leg to read; audio and metadata
    # copies are too few to be worth a filter.
    reader.set_legs(legs, merge, partial(open_socket, reader, cfg),
                    kernel_filter=cfg.dup_kernel_filter and isinstance(reader, VideoReader))
    log.info("flow %s: ST 2022-7 legs %s (%s:%d) and %s (%s:%d), merged", reader.name,
             legs[0].mid, legs[0].address, legs[0].port, legs[1].mid, legs[1].address, legs[1].port)
