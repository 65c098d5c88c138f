"""Receive a DICOM-RTV rendition: video, audio and metadata flows, synchronized.

Theory of operation
-------------------
The SDP (a file or an ``http://`` URL) lists the flows. :class:`Receiver` is a thin
orchestrator of small parts, each with one job:

* :mod:`.flows` turns the SDP into one reader per flow and joins each metadata flow to
  the video or audio flow it describes.
* :mod:`.readers`: every flow gets a :class:`~rtstream.net.udp.UdpReceiver`
  (non-blocking, big ``SO_RCVBUF``, UDP GRO when the kernel offers it, multicast joins
  including source-specific ones from ``a=source-filter``) registered with
  ``loop.add_reader``; each readiness event drains the socket into one numpy batch and
  hands it to the flow's sans-I/O core:

  - video -> :class:`~rtstream.proto.rfc4175.VideoDepacketizer` (reorder window,
    duplicates, late packets, loss by extended sequence number, frame completion on the
    marker or a new timestamp, a mask of missing rows);
  - metadata -> :class:`~rtstream.proto.rtv_metadata.MetadataDepacketizer` (PS3.22
    grains);
  - audio -> :class:`~rtstream.proto.st2110_30.AudioDepacketizer`.

* :mod:`.sync`: frames and grains meet in a :class:`~rtstream.proto.pairing.Pairer` per
  video flow: a frame gets the grain of exactly its RTP timestamp (PS3.17 PPPP.7) within
  a bounded wait, else it goes on without metadata. Audio chunks are put in timestamp
  order and placed on the common clock (ST 2110-10 media clock). One
  :class:`~.timers.DeadlineTimer` wakes the pairers and orderers when a wait is over.
* :mod:`.delivery`: what comes out is a stream of :class:`ReceivedItem` read with
  ``async for item in rx``, from a bounded queue that drops the oldest items for a
  consumer that falls behind (the sockets are always read).
* :mod:`.capture`: actions (snapshot, clip recording) copy frames, build stored DICOM
  instances in a worker thread (PyAV, pydicom) and hand them to
  :class:`~rtstream.pacs.store.StoreClient`, whose persistent outbox sends them by
  C-STORE or writes them to a folder.
* :mod:`.dumps`: dump files are written by a worker thread: the event loop only drains
  sockets and moves arrays.
* :mod:`.stats`: the counters as typed data, and the ``stats`` dict.

Applications use the typed surface of :mod:`.api` (:class:`~.api.ReceiverLike`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.uid import generate_uid

import rtstream.gcpause as gcpause
from rtstream.errors import ConfigError, LocalProtocolError
from rtstream.pacs.store import StoreClient
from rtstream.proto.clock import Clock, PtpTimestamp
from rtstream.proto.sdp import SdpSession
from rtstream.receiver.analysis import (
    AnalysisFn,
    Analyzer,
    FindingsArchiver,
    FrameFanout,
    StoreFindings,
)
from rtstream.receiver.capture import Capture
from rtstream.receiver.config import ReceiverConfig
from rtstream.receiver.delivery import ItemQueue
from rtstream.receiver.dumps import DumpWriter
from rtstream.receiver.flows import FlowSet, build_flows
from rtstream.receiver.items import ReceivedItem, SnapshotResult
from rtstream.receiver.readers import (
    AudioReader,
    FlowReader,
    MetadataReader,
    VideoReader,
    open_socket,
)
from rtstream.receiver.stats import ReceiverStats, collect
from rtstream.receiver.sync import RenditionGroup, StereoPair, Synchronizer
from rtstream.receiver.timers import DeadlineTimer
from rtstream.sysclock import SystemClock

# The package's name, as before the split: operators filter and alert on "rtstream.receiver"
# (the parts log as its children, rtstream.receiver.readers and so on).
log = logging.getLogger("rtstream.receiver")

__all__ = ["Receiver"]


class Receiver:
    """Receive a PS3.22 / ST 2110 rendition described by an SDP.

    Parameters
    ----------
    cfg : ReceiverConfig
    clock : Clock or None
        TAI time for stamps and deadlines (the system clock by default).
    store : StoreClient or None
        An open store client to queue snapshots and clips into, shared with other
        receivers of one process (one outbox, one association); its owner flushes and
        closes it after the receivers. None (default): the receiver opens its own from
        ``cfg`` when ``cfg`` stores.

    Examples
    --------
    >>> async with Receiver(ReceiverConfig(sdp="stream.sdp", frames=10)) as rx:  # doctest: +SKIP
    ...     async for item in rx:
    ...         print(item.rtp_timestamp, item.metadata is not None)
    ...     print(rx.stats["metadata_matched"])
    """

    def __init__(self, cfg: ReceiverConfig, *, clock: Clock | None = None,
                 store: StoreClient | None = None) -> None:
        self._cfg = cfg
        self.clock: Clock = clock or SystemClock()
        self.session: SdpSession | None = None
        self.flows = FlowSet(video=[], audio=[], metadata=[])
        self._queue = ItemQueue(queue_size=cfg.queue_size, frames=cfg.frames, clock=self.clock)
        self._dumps = DumpWriter()
        self._sync = Synchronizer(cfg, self._queue, self._dumps)
        self._capture = Capture(cfg, self.clock, self.flows.video, self.flows.audio,
                                store=store)
        self._sync.observer = self._capture
        self._sync.audio_observer = self._capture
        self._capture.stereo_pairs = self._sync.stereo_pairs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: DeadlineTimer | None = None
        self._closed = False
        self._gc_held = False  # gcpause.hold() since __aenter__
        self._analyzer: Analyzer | None = None  # of analyze()
        self._archiver: FindingsArchiver | None = None  # stores its findings with snapshots

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Receiver:
        loop = self._loop = asyncio.get_running_loop()
        cfg = self._cfg
        try:
            text = await self._load_sdp()
            from rtstream.proto.sdp import parse_sdp

            self.session = parse_sdp(text)
            flows = build_flows(self.session, cfg, self.clock, self._sync, self._sync, self._sync)
            # the capture part and the synchronizer hold these very lists
            self.flows.video[:] = flows.video
            self.flows.audio[:] = flows.audio
            self.flows.metadata[:] = flows.metadata
            self._sync.video = self.flows.video
            self._sync.audio = self.flows.audio
            for d in (cfg.dump_frames, cfg.dump_metadata):
                if d is not None:
                    d.mkdir(parents=True, exist_ok=True)
            self._capture.check_identity()  # --snapshot-every/--record on a bare stream
            self._capture.check_stereo(sum(1 for m in self.flows.metadata if m.media.rendition))
            if cfg.stores:
                await self._capture.open_store()
            if self.metadata:
                _warm_up_grain_decoder()
            self._timer = DeadlineTimer(loop, self.clock, self._on_timer)
            if self._analyzer is not None:
                self._analyzer.start(loop, self.clock)
            for f in self.flows.all():
                f.start(loop, open_socket(f, cfg), self)
            log.info(
                "receiving from %s: %d video, %d audio, %d metadata flow(s)",
                cfg.sdp, len(self.video), len(self.audio), len(self.metadata),
            )
        except BaseException:
            await self.aclose()
            raise
        if cfg.duration is not None:
            self._queue.deadline = time.monotonic() + cfg.duration
            loop.call_later(cfg.duration, self._queue.wake)
        if cfg.snapshot_every is not None:
            self._capture.spawn(self._capture.snapshot_every(cfg.snapshot_every,
                                                             stereo=cfg.snapshot_stereo),
                                "rtstream-rx-snapshots")
        if cfg.record is not None and self.video:
            self._capture.record_start(seconds=cfg.record)
        if cfg.record_audio is not None:
            self._capture.record_audio_start(cfg.record_audio)
        gcpause.hold()  # no collector pause sweeping set-up objects while receiving
        self._gc_held = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def stop(self) -> None:
        """Stop media now (the first Ctrl-C): close the flows and end ``async for``.

        Safe from a signal handler on the loop. :meth:`aclose` still stores a clip being
        recorded and gives the outbox ``cfg.flush_timeout`` seconds to drain.
        """
        self._queue.close()
        for f in self.flows.all():
            f.close()
        if self._timer is not None:
            self._timer.cancel()

    async def aclose(self) -> None:
        """Stop receiving, finish pending stores and dump writes, close everything."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        if self._gc_held:
            self._gc_held = False
            gcpause.release()
        if self._analyzer is not None and self._archiver is not None:
            await self._analyzer.aclose()  # the worker, then the findings still being stored
            await self._archiver.aclose()
        await self._capture.aclose()
        await asyncio.get_running_loop().run_in_executor(None, self._dumps.drain)
        self._dumps.shutdown()

    def __aiter__(self) -> Receiver:
        return self

    async def __anext__(self) -> ReceivedItem:
        return await self._queue.get()

    # -- reader host ----------------------------------------------------------------------

    def read_failed(self, reader: FlowReader, exc: Exception) -> None:
        """A reader hit a bug: the consumer gets the exception at its next item."""
        self._queue.fail(exc)

    def read_done(self) -> None:
        """After every read: one timer at the earliest pairing / audio deadline."""
        if self._timer is not None and not self._closed:
            self._timer.arm(self._sync.next_deadline())

    def _on_timer(self) -> None:
        due = self._sync.pairing_deadline()
        if due is not None and due < self.clock.now_ns():
            # a pairing wait is over: what the sockets hold is read before a frame or
            # grain is called unmatched (the loop may have run late, a video read may be
            # deferred); audio waits (every chunk's) are not worth the early reads
            for f in self.flows.all():
                f.catch_up()
        self._sync.poll(self.clock.now_ns())
        self.read_done()

    async def _load_sdp(self) -> str:
        src = self.cfg.sdp
        if src.startswith(("http://", "https://")):
            import aiohttp

            try:
                timeout = aiohttp.ClientTimeout(total=10)
                async with aiohttp.ClientSession(timeout=timeout) as http:
                    async with http.get(src) as resp:
                        if resp.status != 200:
                            raise ConfigError("sdp", src, f"a URL answering 200 (got {resp.status})")
                        return await resp.text()
            except aiohttp.ClientError as exc:
                raise ConfigError("sdp", src, f"a reachable URL ({exc})") from None
        try:
            return await asyncio.to_thread(Path(src).read_text)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("sdp", src, f"a readable SDP file ({exc})") from None

    # -- flows ----------------------------------------------------------------------------

    @property
    def cfg(self) -> ReceiverConfig:
        """The configuration."""
        return self._cfg

    @property
    def video(self) -> list[VideoReader]:
        """The video flows (readers), in SDP order."""
        return self.flows.video

    @property
    def audio(self) -> list[AudioReader]:
        """The audio flows (readers), in SDP order."""
        return self.flows.audio

    @property
    def metadata(self) -> list[MetadataReader]:
        """The metadata flows (readers), in SDP order."""
        return self.flows.metadata

    @property
    def flow_names(self) -> list[str]:
        """Every flow's name (``a=mid``): video, audio, then metadata."""
        return [f.name for f in self.flows.all()]

    @property
    def video_flow_names(self) -> list[str]:
        """The video flows' names, in SDP order."""
        return [f.name for f in self.flows.video]

    def metadata_flow_of(self, name: str) -> str | None:
        """The metadata flow describing flow ``name``, or None."""
        f = self._flow_named(name)
        meta = f.meta if isinstance(f, (VideoReader, AudioReader)) else None
        return meta.name if meta is not None else None

    def _flow_named(self, name: str) -> FlowReader:
        f = self.flows.named(name)
        if f is None:
            raise LocalProtocolError(
                f"no flow {name!r} here (flows: {', '.join(self.flow_names)})")
        return f

    def pause_flow(self, name: str) -> None:
        """Stop reading flow ``name`` (the kernel drops what overflows its buffer).

        Raises
        ------
        LocalProtocolError
            For a flow name the SDP does not have.
        """
        self._flow_named(name).pause()

    def resume_flow(self, name: str) -> None:
        """Discard what queued up in flow ``name``'s socket while paused, read it again."""
        self._flow_named(name).resume()

    # -- delivery and stats ---------------------------------------------------------------

    @property
    def delivered_video(self) -> int:
        """Video items handed to the consumer so far (a cheap live counter)."""
        return self._queue.delivered_video

    def take_queued(self) -> list[ReceivedItem]:
        """Items queued for the consumer now, removed without waiting (end of a test run)."""
        return self._queue.take_queued()

    def latencies_since(self, seen: int) -> tuple[np.ndarray, int]:
        """Frame-ready latencies (ns) of the video items delivered after the first
        ``seen``, as far as the ring of the last 65,536 still holds them, and the new
        total to pass next time."""
        return self._queue.latencies_since(seen)

    def counters(self) -> ReceiverStats:
        """The counters now, as typed data (see :attr:`stats` for the dict)."""
        cap = self._capture
        store = cap.store_client
        return collect(
            video=self.video, audio=self.audio, metadata=self.metadata,
            frames_delivered=self._queue.delivered_video,
            audio_delivered=self._queue.delivered_audio,
            consumer_drops=self._queue.consumer_drops,
            dump_errors=self._dumps.errors,
            latencies_ns=self._queue.latencies(),
            store=dict(store.counters) if store is not None else cap.store_counters,
            snapshots=len(cap.snapshots),
            renditions=self._sync.rendition_counters(),
        )

    @property
    def stats(self) -> dict[str, Any]:
        """Counters of the whole receiver (sums over flows) and per flow.

        Keys: ``packets``, ``packets_lost``, ``packets_malformed``, ``reordered``,
        ``duplicates``, ``late``, ``frames_complete``, ``frames_incomplete``,
        ``frames_dropped_incomplete``, ``grains_complete``, ``grains_dropped``,
        ``grains_unmatched``, ``metadata_matched``, ``metadata_unmatched``,
        ``frames_delivered``, ``audio_chunks``, ``consumer_drops``, ``restarts``,
        ``latency_p50_us``, ``latency_p99_us``, ``latency_max_us``, the rendition counters
        ``renditions_seen`` (distinct Rendition Selection Documents read),
        ``stereo_pairs`` (left/right frame pairs made), ``stereo_unpaired`` (frames whose
        other view never came) and ``renditions_invalid`` (rendition grains that could not
        be read), and ``flows`` (a dict per flow name).
        """
        out = self.counters().as_dict()
        if self._analyzer is not None:
            out["analysis"] = self._analyzer.stats().as_dict()
        return out

    # -- analysis -------------------------------------------------------------------------

    def analyze(
        self, fn: AnalysisFn, *, layout: str = "rgb24", flow: str | None = None,
        store_findings: StoreFindings | str = StoreFindings.BOTH, window: float = 1.0,
    ) -> Analyzer:
        """Run ``fn(frame, context)`` on the latest frame in a worker thread (before entering).

        See :mod:`rtstream.receiver.analysis`: frames in ``layout`` (``rgb24``: H x W x 3
        uint8), findings back as :class:`~rtstream.dicom.findings.FindingSet` to the
        ``on_findings`` observers of the returned :class:`Analyzer`; a snapshot of a frame
        with findings also stores them (``store_findings``: ``"ps"``, ``"sr"``, ``"both"``
        or ``"none"``) when the receiver stores. One analysis per receiver.
        """
        if self._analyzer is not None:
            raise LocalProtocolError("analyze(): this receiver runs an analysis already")
        if self._loop is not None:
            raise LocalProtocolError("analyze(): call it before 'async with Receiver(...)'")
        try:
            what = StoreFindings(store_findings)
        except ValueError:
            raise ConfigError("store_findings", store_findings,
                              "one of " + ", ".join(w.value for w in StoreFindings)) from None
        analyzer = Analyzer(fn, layout=layout, flow=flow)
        self._sync.observer = FrameFanout([self._capture, analyzer])
        self._analyzer = analyzer
        self._archiver = FindingsArchiver(analyzer, self._capture, what=what, window=window)
        return analyzer

    @property
    def analyzer(self) -> Analyzer | None:
        """The analysis of :meth:`analyze`, None without one."""
        return self._analyzer

    @property
    def findings_archiver(self) -> FindingsArchiver | None:
        """What stores snapshots' findings as DICOM (its ``results``), None without analysis."""
        return self._archiver

    # -- renditions -----------------------------------------------------------------------

    @property
    def renditions(self) -> list[RenditionGroup]:
        """The renditions received (Rendition Selection Document flows), each resolved to
        this receiver's flows."""
        return self._sync.groups()

    @property
    def renditions_invalid(self) -> int:
        """Rendition grains whose document could not be read (counted, then ignored)."""
        return self._sync.renditions_invalid

    @property
    def stereo_pairs(self) -> deque[StereoPair]:
        """The latest left/right frame pairs of a stereo rendition (oldest first)."""
        return self._sync.stereo_pairs

    # -- capture --------------------------------------------------------------------------

    @property
    def capture(self) -> Capture:
        """Snapshots, clips and the store client (one place for the CLI, viewer and MQTT)."""
        return self._capture

    @property
    def store_client(self) -> StoreClient | None:
        """The open store client, None when nothing stores (or after close)."""
        return self._capture.store_client

    @property
    def series_instance_uid(self) -> str:
        """The series every snapshot of this session is stored in (clips: ``capture.clips``)."""
        return self._capture.series_instance_uid

    async def snapshot_dataset(self, rtp_timestamp: int | None = None) -> Dataset:
        """Build (in a worker thread) the stored single-frame instance of a recent frame."""
        return await self._capture.snapshot_dataset(rtp_timestamp)

    async def snapshot(
        self, rtp_timestamp: int | None = None, *, flow: str | None = None
    ) -> SnapshotResult:
        """Store the latest complete frame (or the recent frame of ``rtp_timestamp``)."""
        return await self._capture.snapshot(rtp_timestamp, flow=flow)

    def record_start(self, *, seconds: float | None = None, frames: int | None = None) -> None:
        """Start recording a clip of the first video flow (complete frames only)."""
        self._capture.record_start(seconds=seconds, frames=frames)

    async def stereo_snapshot(self, rtp_timestamp: int | None = None) -> SnapshotResult:
        """Store the latest stereo pair (or that of ``rtp_timestamp``) as one instance."""
        return await self._capture.stereo_snapshot(rtp_timestamp)

    async def record_stop(self) -> SnapshotResult:
        """Stop recording; build the clip (worker thread) and store it."""
        return await self._capture.record_stop()


def _warm_up_grain_decoder() -> None:
    """Decode one made-up grain so pydicom's lazy imports do not delay the first real one."""
    import uuid

    from rtstream.proto.formats import TS_ST2110_20_PROGRESSIVE
    from rtstream.proto.rtv_metadata import (
        RTV_VIDEO_PHOTOGRAPHIC,
        RtvMetaInfo,
        decode_grain,
        dynamic_part,
        encode_grain,
    )

    meta = RtvMetaInfo(
        transfer_syntax_uid=TS_ST2110_20_PROGRESSIVE,
        sop_class_uid=RTV_VIDEO_PHOTOGRAPHIC,
        sop_instance_uid=generate_uid(),
        source_id=uuid.UUID(int=1),
        flow_id=uuid.UUID(int=2),
        sampling_rate=90000,
    )
    ds = dynamic_part(origin=PtpTimestamp(1, 0), frame_number=1)
    ds.PatientName = "Warm^Up"
    ds.Modality = "XC"
    with contextlib.suppress(Exception):
        decode_grain(encode_grain(meta, ds)).dataset.get("PatientName")


