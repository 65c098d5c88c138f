"""Frames meet their grains, audio is put in order: the items the consumer gets.

Theory of operation
-------------------
The readers hand over events; this turns them into :class:`ReceivedItem`:

* a video frame goes into its flow's :class:`~rtstream.proto.pairing.Pairer` and comes
  out with the grain of exactly its RTP timestamp (PS3.17 PPPP.7), or without one once
  the wait is over; a flow without metadata delivers at once;
* a grain updates its flow's static part (a new RTV SOP Instance UID is a sender restart:
  the old static part is forgotten) and goes to the pairer, or, for an audio flow, waits
  for its chunk by timestamp;
* audio chunks go through an :class:`~rtstream.proto.pairing.AudioOrderer`.

A grain of a Rendition Selection Document flow (PS3.22 SOP class 1.2.840.10008.10.4)
is read into a :class:`~rtstream.dicom.realtime.Rendition` (kept per rendition flow in
``renditions``): it names the metadata flows that belong together by their RTV SOP
instances, which this maps to the receiver's video and audio flows (``groups``). For a
stereo rendition the left and right views' frames of one RTP timestamp (both views are
stamped by one media clock, ST 2110-10) are paired into a :class:`StereoPair`, kept in
``stereo_pairs`` (the most recent :data:`STEREO_PAIRS_KEPT`; every pair made is counted
in ``stereo_pairs_made``) and shown to the stereo observer; a frame whose partner never
comes is dropped from pairing (counted in ``stereo_unpaired``) once a newer pair completes
or the wait holds more than :data:`_STEREO_PENDING` timestamps. The frames themselves are
delivered as always. Every distinct rendition document (by its SOP Instance UID) is
counted once in ``renditions_seen``; a grain whose document cannot be read is counted in
``renditions_invalid`` and ignored (:meth:`Synchronizer.rendition_counters`).

An interlaced flow whose SDP says ``a=x-rtstream-field-order:bff`` had its first field
(F=0, RFC 4175 §4.3) taken from the source's odd lines; the depacketizer weaves F=0 onto
the even ones, as every receiver does, so each frame's line pairs are swapped back here
(one copy per frame of such a flow only) before anything sees it.

Every delivered item gets its capture instant (``origin``): the grain's Frame Origin
Timestamp, else its RTP timestamp on the common media clock (ST 2110-10). Incomplete
frames are dropped or delivered flagged per :class:`IncompletePolicy`. Delivered video
frames are kept in the flow's ``recent`` ring and shown to the frame observer (the clip
recorder) before they are queued.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rtstream.dicom.realtime import Rendition, RenditionRole, StaticTracker, parse_rendition
from rtstream.errors import RemoteProtocolError
from rtstream.proto.clock import PtpTimestamp
from rtstream.proto.pairing import PairedFrame
from rtstream.proto.rfc4175 import VideoFrameEvent
from rtstream.proto.rtv_metadata import RTV_RENDITION_SELECTION, GrainEvent
from rtstream.proto.st2110_30 import AudioChunkEvent
from rtstream.receiver.config import IncompletePolicy, ReceiverConfig
from rtstream.receiver.delivery import ItemQueue
from rtstream.receiver.dumps import DumpWriter
from rtstream.receiver.items import ItemKind, ReceivedItem
from rtstream.receiver.readers import AudioReader, MetadataReader, VideoReader

log = logging.getLogger(__name__)

__all__ = ["AudioObserver", "FrameObserver", "RenditionGroup", "StereoObserver", "StereoPair",
           "Synchronizer"]

#: Grains of an audio flow's metadata kept while waiting for their chunk.
_AUDIO_GRAINS = 512

#: Stereo pairs kept for the consumer (``Synchronizer.stereo_pairs``).
STEREO_PAIRS_KEPT = 64

#: RTP timestamps waiting for the other view of their stereo pair.
_STEREO_PENDING = 16


@dataclass(frozen=True)
class StereoPair:
    """The left and right views of one instant of a stereo rendition.

    Attributes
    ----------
    rtp_timestamp : int
        Both frames' RTP timestamp.
    left, right : ReceivedItem
        The two delivered frames (flows named by the rendition's LEFT and RIGHT members).
    rendition : str
        SOP Instance UID of the Rendition Selection Document that paired them.
    """

    rtp_timestamp: int
    left: ReceivedItem
    right: ReceivedItem
    rendition: str


class StereoObserver(Protocol):
    """Sees every stereo pair completed."""

    def on_stereo(self, pair: StereoPair) -> None:
        """``pair`` was completed."""
        ...


@dataclass
class RenditionGroup:
    """A rendition resolved against this receiver's flows (None: not received here)."""

    rendition: Rendition
    video: list[VideoReader]
    audio: list[AudioReader]
    left: VideoReader | None
    right: VideoReader | None


class FrameObserver(Protocol):
    """Sees every video item delivered (before it is queued): the clip recorder."""

    def on_video(self, reader: VideoReader, item: ReceivedItem) -> None:
        """``item`` of ``reader``'s flow is being delivered."""
        ...


class AudioObserver(Protocol):
    """Sees every audio item delivered (before it is queued): the audio recorder."""

    def on_audio(self, reader: AudioReader, item: ReceivedItem) -> None:
        """``item`` of ``reader``'s flow is being delivered."""
        ...


class Synchronizer:
    """The frame, grain and chunk sink of every reader.

    Parameters
    ----------
    cfg : ReceiverConfig
        ``incomplete``, ``dump_frames``, ``dump_metadata``.
    queue : ItemQueue
        Where items go.
    dumps : DumpWriter
        Writes the dump files.
    """

    def __init__(self, cfg: ReceiverConfig, queue: ItemQueue, dumps: DumpWriter) -> None:
        self.cfg = cfg
        self.queue = queue
        self.dumps = dumps
        self.video: list[VideoReader] = []
        self.audio: list[AudioReader] = []
        self.observer: FrameObserver | None = None
        self.audio_observer: AudioObserver | None = None
        self.stereo_observer: StereoObserver | None = None
        self.renditions: dict[str, Rendition] = {}  # rendition flow name -> latest
        self.stereo_pairs: deque[StereoPair] = deque(maxlen=STEREO_PAIRS_KEPT)
        self.stereo_unpaired = 0
        self.stereo_pairs_made = 0
        self.renditions_invalid = 0
        self._renditions_seen: set[str] = set()
        self._stereo_wait: OrderedDict[int, tuple[ReceivedItem | None, ReceivedItem | None]] = (
            OrderedDict())
        self._statics = StaticTracker()
        self._drop_incomplete = cfg.incomplete is IncompletePolicy.DROP
        # --frames N with --dump-frames: N files, not the frames reassembled past the limit
        self._dumps_left = cfg.frames if cfg.frames is not None else -1

    # -- video ------------------------------------------------------------------------

    def on_frame(self, reader: VideoReader, ev: VideoFrameEvent, now: int) -> None:
        """A reassembled frame: to its pairer (or straight out without metadata)."""
        data, missing = ev.data, None if ev.complete else ev.missing_rows
        if reader.media.bottom_field_first and reader.fmt.interlaced:
            data = _swap_line_pairs(data, reader.fmt.rows)
            if missing is not None:
                missing = _swap_line_pairs(missing, reader.fmt.rows)
        item = ReceivedItem(
            kind=ItemKind.VIDEO,
            rtp_timestamp=ev.rtp_timestamp,
            ssrc=ev.ssrc,
            frame=data,
            fmt=reader.fmt,
            complete=ev.complete,
            missing_rows=missing,
            received_ns=now,
            flow=reader.name,
        )
        if ev.complete and self.cfg.dump_frames is not None and self._dumps_left:
            self._dumps_left -= 1
            self.dumps.write(self.cfg.dump_frames, ev.rtp_timestamp, ".raw", data)
        if reader.meta is None:
            self._deliver_video(reader, item, None, now)
            return
        for paired in reader.pairer.add_frame(
            ssrc=ev.ssrc, rtp_timestamp=ev.rtp_timestamp, frame=item, now=now
        ):
            self._deliver_paired(reader, paired, now)

    def _deliver_paired(
        self, reader: VideoReader, paired: PairedFrame[ReceivedItem, GrainEvent], now: int
    ) -> None:
        self._deliver_video(reader, paired.frame, paired.grain, now)

    def _deliver_video(
        self, reader: VideoReader, item: ReceivedItem, grain_ev: GrainEvent | None, now: int
    ) -> None:
        if grain_ev is not None:
            grain = grain_ev.grain
            item.metadata = grain.dataset
            item.grain_raw = grain.raw
            item.rtv_sop_instance_uid = grain.meta.sop_instance_uid
            origin = None
            with contextlib.suppress(RemoteProtocolError):
                origin = grain.origin
            if origin is None:
                origin = getattr(grain_ev.extension, "origin_timestamp", None)
            item.origin = origin
        if reader.meta is not None:
            item.static = reader.meta.static
        if item.origin is None:
            item.origin = PtpTimestamp.from_ns(reader.media_clock.to_ns(item.rtp_timestamp, now))
        if not item.complete and self._drop_incomplete:
            reader.dropped_incomplete += 1
            return
        reader.last = item
        reader.recent.append(item)
        if self.observer is not None:
            self.observer.on_video(reader, item)
        if self.renditions:
            self._pair_stereo(reader, item)
        self.queue.push(item)

    # -- metadata ---------------------------------------------------------------------

    def on_grain(self, reader: MetadataReader, ev: GrainEvent, now: int) -> None:
        """A grain: track the static part, pair it with its frame or keep it for audio."""
        grain = ev.grain
        if self.cfg.dump_metadata is not None:
            self.dumps.write(self.cfg.dump_metadata, ev.rtp_timestamp, ".dcm", grain.raw)
        uid = grain.meta.sop_instance_uid
        if reader.static_uid is not None and uid != reader.static_uid:
            log.info("metadata flow %s: new RTV SOP Instance (sender restart)", reader.name)
            reader.static = None
        reader.static_uid = uid
        if grain.meta.sop_class_uid == RTV_RENDITION_SELECTION:
            self._on_rendition(reader, ev)
            return
        if grain.has_static:
            reader.static = self._statics.observe(grain, now)
        target = reader.target
        if isinstance(target, VideoReader):
            for paired in target.pairer.add_grain(
                rtp_timestamp=ev.rtp_timestamp, grain=ev, now=now, generation=(ev.ssrc, uid)
            ):
                self._deliver_paired(target, paired, now)
        elif isinstance(target, AudioReader):
            reader.recent[ev.rtp_timestamp] = ev
            while len(reader.recent) > _AUDIO_GRAINS:
                del reader.recent[next(iter(reader.recent))]

    # -- renditions -------------------------------------------------------------------

    def _on_rendition(self, reader: MetadataReader, ev: GrainEvent) -> None:
        """A rendition grain: its document replaces the flow's previous one."""
        try:
            rendition = parse_rendition(ev.grain.dataset)
        except RemoteProtocolError as exc:
            self.renditions_invalid += 1
            log.debug("rendition flow %s: grain at %d ignored: %s", reader.name,
                      ev.rtp_timestamp, exc)
            return
        known = self.renditions.get(reader.name)
        if known is None or known != rendition:
            log.info("rendition %s on %s: %s, %d flow(s)", rendition.sop_instance_uid,
                     reader.name, rendition.title.value[1], len(rendition.members))
        self.renditions[reader.name] = rendition
        self._renditions_seen.add(rendition.sop_instance_uid)

    @property
    def renditions_seen(self) -> int:
        """Distinct rendition documents (SOP Instance UIDs) read since the start."""
        return len(self._renditions_seen)

    def rendition_counters(self) -> dict[str, int]:
        """``renditions_seen``, ``stereo_pairs``, ``stereo_unpaired``, ``renditions_invalid``
        (all cumulative since the start) as in ``Receiver.stats``."""
        return {"renditions_seen": self.renditions_seen,
                "stereo_pairs": self.stereo_pairs_made,
                "stereo_unpaired": self.stereo_unpaired,
                "renditions_invalid": self.renditions_invalid}

    def groups(self) -> list[RenditionGroup]:
        """Every rendition received, resolved to this receiver's flows by the RTV SOP
        instance each member's metadata flow carries."""
        out = []
        for rendition in self.renditions.values():
            video: list[VideoReader] = []
            audio: list[AudioReader] = []
            left = right = None
            for m in rendition.members:
                for vf in self.video:
                    if vf.meta is not None and vf.meta.static_uid == m.sop_instance_uid:
                        video.append(vf)
                        if m.role is RenditionRole.LEFT:
                            left = vf
                        elif m.role is RenditionRole.RIGHT:
                            right = vf
                for af in self.audio:
                    if af.meta is not None and af.meta.static_uid == m.sop_instance_uid:
                        audio.append(af)
            out.append(RenditionGroup(rendition, video, audio, left, right))
        return out

    def stereo_flows(self) -> tuple[VideoReader, VideoReader, str] | None:
        """(left, right, rendition UID) of the first stereo rendition whose two views
        are both received here, else None."""
        for group in self.groups():
            if group.left is not None and group.right is not None:
                return group.left, group.right, group.rendition.sop_instance_uid
        return None

    def _pair_stereo(self, reader: VideoReader, item: ReceivedItem) -> None:
        """Pair the frames of the two views of a stereo rendition by RTP timestamp."""
        flows = self.stereo_flows()
        if flows is None or reader not in flows[:2]:
            return
        left, _right, uid = flows
        ts = item.rtp_timestamp
        got_left, got_right = self._stereo_wait.pop(ts, (None, None))
        if reader is left:
            got_left = item
        else:
            got_right = item
        if got_left is None or got_right is None:
            self._stereo_wait[ts] = (got_left, got_right)
            while len(self._stereo_wait) > _STEREO_PENDING:
                self._stereo_wait.popitem(last=False)
                self.stereo_unpaired += 1
            return
        # a completed pair: what waits from before it will not be completed any more
        for old in [t for t in self._stereo_wait if ((ts - t) & 0xFFFFFFFF) < 0x80000000]:
            del self._stereo_wait[old]
            self.stereo_unpaired += 1
        pair = StereoPair(ts, got_left, got_right, uid)
        self.stereo_pairs.append(pair)
        self.stereo_pairs_made += 1
        if self.stereo_observer is not None:
            self.stereo_observer.on_stereo(pair)

    # -- audio ------------------------------------------------------------------------

    def on_chunk(self, reader: AudioReader, ev: AudioChunkEvent, now: int) -> None:
        """An audio chunk: put in timestamp order, delivered when its turn comes."""
        item = ReceivedItem(
            kind=ItemKind.AUDIO,
            rtp_timestamp=ev.rtp_timestamp,
            ssrc=ev.ssrc,
            audio=ev.samples,
            audio_fmt=reader.fmt,
            received_ns=now,
            flow=reader.name,
        )
        for out in reader.orderer.add(
            ssrc=ev.ssrc, rtp_timestamp=ev.rtp_timestamp, item=item, now=now
        ):
            self._deliver_audio(reader, out, now)

    def _deliver_audio(self, reader: AudioReader, item: ReceivedItem, now: int) -> None:
        meta = reader.meta
        if meta is not None:
            ev = meta.recent.pop(item.rtp_timestamp, None)
            _forget_packet_grains(meta, item, reader.fmt.samples_per_packet)
            if ev is not None:
                item.metadata = ev.grain.dataset
                item.grain_raw = ev.grain.raw
                item.rtv_sop_instance_uid = ev.grain.meta.sop_instance_uid
                with contextlib.suppress(RemoteProtocolError):
                    item.origin = ev.grain.origin
            item.static = meta.static
        if item.origin is None:
            item.origin = PtpTimestamp.from_ns(reader.media_clock.to_ns(item.rtp_timestamp, now))
        if self.audio_observer is not None:
            self.audio_observer.on_audio(reader, item)
        self.queue.push(item)

    # -- deadlines --------------------------------------------------------------------

    def pairing_deadline(self) -> int | None:
        """The earliest deadline of a frame or grain waiting to be paired (clock ns)."""
        deadlines = [d for f in self.video if f.meta is not None
                     and (d := f.pairer.next_deadline())]
        return min(deadlines) if deadlines else None

    def next_deadline(self) -> int | None:
        """The earliest pairing or audio-ordering deadline (clock ns), None for none."""
        pairing = self.pairing_deadline()
        deadlines = [] if pairing is None else [pairing]
        for af in self.audio:
            if af.orderer.pending:
                deadlines.append(af.orderer.next_deadline() or 0)
        return min(deadlines) if deadlines else None

    def poll(self, now: int) -> None:
        """Release what waited past its deadline at ``now``."""
        for vf in self.video:
            for paired in vf.pairer.poll(now):
                self._deliver_paired(vf, paired, now)
        for af in self.audio:
            for item in af.orderer.poll(now):
                self._deliver_audio(af, item, now)


def _swap_line_pairs(data: np.ndarray, rows: int) -> np.ndarray:
    """Lines 0,1 / 2,3 / ... exchanged (a bottom-field-first frame woven top first); a
    new array of ``data``'s shape."""
    src = data.reshape(rows, -1)
    out = np.empty_like(src)
    out[0::2] = src[1::2]
    out[1::2] = src[0::2]
    return out.reshape(data.shape)


def _forget_packet_grains(meta: MetadataReader, item: ReceivedItem, samples_per_packet: int) -> None:
    """Drop the grains of a chunk's later packets: the sender sends one grain per audio
    packet (:func:`~rtstream.proto.rtv_metadata.audio_packet_grains`), the chunk keeps the
    first packet's grain, and the others would only wait in ``recent`` until evicted."""
    if item.audio is None or samples_per_packet < 1:
        return
    for i in range(1, len(item.audio) // samples_per_packet):
        meta.recent.pop((item.rtp_timestamp + i * samples_per_packet) & 0xFFFFFFFF, None)
