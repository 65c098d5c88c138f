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

Every delivered item gets its capture instant (``origin``): the grain's Frame Origin
Timestamp, else its RTP timestamp on the common media clock (ST 2110-10). Incomplete
frames are dropped or delivered flagged per :class:`IncompletePolicy`. Delivered video
frames are kept in the flow's ``recent`` ring and shown to the frame observer (the clip
recorder) before they are queued.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol

from rtstream.dicom.realtime import StaticTracker
from rtstream.errors import RemoteProtocolError
from rtstream.proto.clock import PtpTimestamp
from rtstream.proto.pairing import PairedFrame
from rtstream.proto.rfc4175 import VideoFrameEvent
from rtstream.proto.rtv_metadata import GrainEvent
from rtstream.proto.st2110_30 import AudioChunkEvent
from rtstream.receiver.config import IncompletePolicy, ReceiverConfig
from rtstream.receiver.delivery import ItemQueue
from rtstream.receiver.dumps import DumpWriter
from rtstream.receiver.items import ItemKind, ReceivedItem
from rtstream.receiver.readers import AudioReader, MetadataReader, VideoReader

log = logging.getLogger(__name__)

__all__ = ["AudioObserver", "FrameObserver", "Synchronizer"]

#: Grains of an audio flow's metadata kept while waiting for their chunk.
_AUDIO_GRAINS = 512


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
        self._statics = StaticTracker()
        self._drop_incomplete = cfg.incomplete is IncompletePolicy.DROP

    # -- video ------------------------------------------------------------------------

    def on_frame(self, reader: VideoReader, ev: VideoFrameEvent, now: int) -> None:
        """A reassembled frame: to its pairer (or straight out without metadata)."""
        item = ReceivedItem(
            kind=ItemKind.VIDEO,
            rtp_timestamp=ev.rtp_timestamp,
            ssrc=ev.ssrc,
            frame=ev.data,
            fmt=reader.fmt,
            complete=ev.complete,
            missing_rows=None if ev.complete else ev.missing_rows,
            received_ns=now,
            flow=reader.name,
        )
        if ev.complete and self.cfg.dump_frames is not None:
            self.dumps.write(self.cfg.dump_frames, ev.rtp_timestamp, ".raw", ev.data)
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

    def next_deadline(self) -> int | None:
        """The earliest pairing or audio-ordering deadline (clock ns), None for none."""
        deadlines = [d for f in self.video if f.meta is not None
                     and (d := f.pairer.next_deadline())]
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


def _forget_packet_grains(meta: MetadataReader, item: ReceivedItem, samples_per_packet: int) -> None:
    """Drop the grains of a chunk's later packets: the sender sends one grain per audio
    packet (:func:`~rtstream.proto.rtv_metadata.audio_packet_grains`), the chunk keeps the
    first packet's grain, and the others would only wait in ``recent`` until evicted."""
    if item.audio is None or samples_per_packet < 1:
        return
    for i in range(1, len(item.audio) // samples_per_packet):
        meta.recent.pop((item.rtp_timestamp + i * samples_per_packet) & 0xFFFFFFFF, None)
