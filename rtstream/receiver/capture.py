"""Snapshots and clips: which frame, the stored instance, and handing it to the archive.

Theory of operation
-------------------
This is the one place that turns received frames into stored DICOM instances, whoever
asks (``--snapshot-every``, ``--record``, the viewer's button, an MQTT command):

1. **Which frame.** :meth:`Capture.pick_frame` takes the latest complete frame of a video
   flow, or the recent frame of an exact RTP timestamp (the one a viewer clicked), from
   the flow's ring of recently delivered frames.
2. **Build.** The frame (or the clip's frames) are copied on the event loop and the
   instance is built in a worker thread (pydicom; PyAV for clips) with its provenance:
   the RTV SOP Instance it was captured from, its capture instant, and the session's
   series: one for stills and one for clips per receiving session, each with its own
   Series Number (:func:`session_series_numbers`) and Instance Numbers counting up.
3. **Store.** :class:`~rtstream.pacs.store.StoreClient` makes it durable in the outbox,
   then sends it (C-STORE) or saves it (``store_dir``). Every instance queued is shown to
   the ``on_stored`` observers (the control plane publishes its events from there) with
   its flow, RTP timestamp and the future of the archive's answer.

**Identity.** A flow with a DICOM-RTV metadata flow is stored under the patient and
study of its static part. A flow without one (a third-party ST 2110 SDP) is stored only
under the identity the site gave (``ReceiverConfig.context``: ``--patient-id``,
``--patient-name``, ...), whose static part is built once per session, so every instance
of the session shares one patient, one study and its series; without an identity a
snapshot or clip of such a flow is refused (:class:`LocalProtocolError`), never stored
under a made-up patient.

**Idempotent snapshots.** A request for a frame already stored in this session (same
flow, RTP timestamp and RTV instance) answers with that instance instead of storing a
copy; a bounded map of recent frames holds the answers (and the builds in progress).

Recording a clip watches delivered frames (:meth:`Capture.on_video`) of the first video
flow, complete frames only, up to a frame limit; a recording started for a number of
seconds stores itself when full.

**Audio.** While a clip records, the chunks of the first audio flow are kept too
(:meth:`Capture.on_audio`); when the clip is stored its audio follows as a General Audio
Waveform instance that references the clip and the RTV audio instance
(:mod:`rtstream.dicom.waveform` says why audio is not put into the clip). On a stream
without video, :meth:`Capture.record_audio_start` (``--record-audio SECONDS``) records the
audio alone into such an instance. A clip's audio starts at its first frame's capture
instant and covers the frames recorded; audio alone is kept from the first chunk
delivered after the start, up to the recording's length in samples.

**Stereo.** :meth:`Capture.stereo_snapshot` stores a pair of a stereo rendition (the
left and right views' frames of one RTP timestamp, paired by the synchronizer) as one
two-frame instance with Stereo Pairs Present YES (:mod:`rtstream.dicom.stereo`), in the
stills series. ``snapshot_stereo`` (``--stereo``) makes the periodic snapshots stereo
ones and is the default of the MQTT ``snapshot`` command; a pair already stored is
answered with its instance, as for single frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from pydicom import Dataset
from pydicom.uid import generate_uid

from rtstream.dicom.context import StreamContext
from rtstream.dicom.video import choose_video_syntax
from rtstream.errors import ConfigError, LocalProtocolError
from rtstream.pacs.store import StoreClient, StoreConfig, StoreEvent, StoreResult
from rtstream.proto.clock import Clock, PtpTimestamp
from rtstream.receiver.config import ReceiverConfig, default_outbox, identity_context
from rtstream.receiver.items import ReceivedItem, RecordingState, SnapshotResult, StoredInstance
from rtstream.receiver.readers import AudioReader, VideoReader
from rtstream.receiver.sync import StereoPair

log = logging.getLogger(__name__)

__all__ = [
    "IDENTITY_FLAGS", "Capture", "StoreEventCallback", "StoredCallback", "session_series_numbers",
]

#: How the site gives an identity to a stream without metadata (named in refusals).
IDENTITY_FLAGS = "--patient-id and --patient-name (ReceiverConfig.context)"

#: Snapshots remembered per session for idempotent requests (frames recent enough to ask for).
RECENT_SNAPSHOTS = 256

#: ``callback(instance)`` for every instance handed to the store client.
StoredCallback = Callable[[StoredInstance], None]
#: ``callback(event, detail)`` when the archive goes away or comes back.
StoreEventCallback = Callable[[StoreEvent, str], None]


@dataclass
class _Recording:
    flow: VideoReader
    limit: int
    frames: list[np.ndarray] = field(default_factory=list)
    first: ReceivedItem | None = None
    static: Dataset | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _AudioRecording:
    """Audio kept for a clip (``clip=True``) or for an audio-only recording."""

    flow: AudioReader
    limit: int  # samples
    clip: bool
    chunks: list[np.ndarray] = field(default_factory=list)
    samples: int = 0
    first: ReceivedItem | None = None
    static: Dataset | None = None
    start_ns: int | None = None  # a clip's: capture instant of its first frame
    first_origin: PtpTimestamp | None = None  # capture instant of the first sample kept
    done: asyncio.Event = field(default_factory=asyncio.Event)


#: How long a stored clip waits for the audio of its last frames to arrive (seconds).
AUDIO_TAIL_WAIT = 1.0


@dataclass
class _Series:
    """One series of the session: its UID, its number and the last instance number used."""

    uid: str
    number: int
    instances: int = 0


@dataclass(frozen=True)
class _Provenance:
    rtv_sop_instance_uid: str
    origin: PtpTimestamp
    series_instance_uid: str
    series_number: int
    instance_number: int


_SERIES_BASE = 10_000
_series_lock = threading.Lock()
_last_series = 0


def store_config(cfg: ReceiverConfig) -> StoreConfig:
    """The store client settings of a receiver that stores (``--store`` or ``--store-dir``)."""
    outbox = cfg.outbox or default_outbox()
    if cfg.store_dir is not None:
        return StoreConfig(outbox=outbox, save_dir=cfg.store_dir, calling_aet=cfg.calling_aet)
    assert cfg.store is not None
    return StoreConfig.from_target(
        cfg.store, outbox=outbox, calling_aet=cfg.calling_aet, tls=cfg.store_tls,
    )


async def close_store(store: StoreClient, flush_timeout: float) -> int:
    """Give ``store`` at most ``flush_timeout`` s to drain, close it; the instances left.

    One bound for the whole drain (``--flush-timeout``); what is left stays durable in
    the outbox and is sent at the next start.
    """
    try:
        async with asyncio.timeout(flush_timeout):
            await store.flush()
    except TimeoutError:
        pass
    await store.aclose()
    queued = await asyncio.to_thread(store.queued)
    if queued:
        log.warning("store: %d instance(s) stay queued in %s for the next run",
                    queued, store.cfg.outbox)
    return queued


def session_series_numbers(now_ns: int) -> tuple[int, int]:
    """Series Numbers of one receiving session: ``(stills, clips)``.

    Series Number (IS, PS3.3 C.7.3.1) only has to tell series of one study apart, but a
    study is shared by everyone storing from one stream: the source's own series (the
    real-time series is usually 1), and every receiver on that stream, in any session.
    A counter would need coordination between receivers (two hosts, or two state
    folders, would both count 1, 2, ...), so the number comes from the session's start
    instant instead: ``10000 + 2 * (milliseconds mod 10**9)`` for stills and the next
    number for clips. Two sessions collide only if they start in the same millisecond
    modulo about 11.6 days; the sessions of one process always get increasing numbers;
    the values stay above the small numbers sources use and below IS's 2**31 - 1.

    Parameters
    ----------
    now_ns : int
        The session's start, in nanoseconds of any steady scale (the receiver's clock).
    """
    global _last_series
    stills = _SERIES_BASE + 2 * ((now_ns // 1_000_000) % 1_000_000_000)
    with _series_lock:
        if stills <= _last_series < stills + 2 * 1000:
            stills = _last_series + 2  # same millisecond (or just after) in this process
        _last_series = stills
    return stills, stills + 1


class Capture:
    """Snapshots, clip recording and the store client of one receiver.

    Parameters
    ----------
    cfg : ReceiverConfig
        ``store``, ``store_dir``, ``outbox``, ``calling_aet``, ``store_tls``,
        ``record_max_frames``.
    clock : Clock
        The capture instant of frames that carry none.
    video : list of VideoReader
        The receiver's video flows (in SDP order).
    """

    def __init__(self, cfg: ReceiverConfig, clock: Clock, video: list[VideoReader],
                 audio: list[AudioReader] | None = None, *,
                 store: StoreClient | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.video = video
        self.audio: list[AudioReader] = audio if audio is not None else []
        self._audio_rec: _AudioRecording | None = None
        self.audio_series: _Series | None = None  # made at the first audio instance
        #: the synchronizer's recent stereo pairs (the receiver hands its deque over)
        self.stereo_pairs: deque[StereoPair] = deque()
        self.store_client: StoreClient | None = None
        self._shared_store = store  # open, owned (flushed and closed) by the caller
        # One series per kind per receiving session: stills in one, clips in the other.
        stills, clips = session_series_numbers(clock.now_ns())
        self.stills = _Series(generate_uid(), stills)
        self.clips = _Series(generate_uid(), clips)
        self.series_instance_uid: str = self.stills.uid
        self.snapshots: list[SnapshotResult] = []
        self.store_counters: dict[str, int] | None = None  # of the closed store client
        # The site's identity for flows without metadata: one study for the session.
        self._identity: StreamContext | None = (
            identity_context(cfg.context) if cfg.context is not None else None)
        self._identity_static: dict[str, Dataset] = {}  # per video flow, built once
        self._recent: OrderedDict[tuple[str, int, str], asyncio.Future[StoredInstance]] = (
            OrderedDict())
        self.queued_at_close = 0  # instances left in the outbox by aclose
        self._recording: _Recording | None = None
        self._work = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtstream-rx-build")
        self._store_futures: set[asyncio.Future[StoreResult]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stored_observers: list[StoredCallback] = []
        self._event_observers: list[StoreEventCallback] = []

    # -- lifecycle --------------------------------------------------------------------

    async def open_store(self) -> None:
        """Open the store client (outbox, archive association or folder)."""
        if self._shared_store is not None:
            self.store_client = self._shared_store
            return
        client = StoreClient(store_config(self.cfg), on_event=self._store_event)
        self.store_client = await client.__aenter__()

    def spawn(self, coro: Coroutine[None, None, None], name: str) -> None:
        """Run ``coro`` as a task cancelled by :meth:`aclose`."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop the periodic tasks, store a clip being recorded, flush the outbox."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        rec = self._recording
        if rec is not None and rec.frames and self.store_client is not None:
            try:
                await self.record_stop()
            except Exception as exc:  # noqa: BLE001 - closing: say so and go on
                log.warning("clip not stored at close: %s", exc)
        audio = self._audio_rec
        if audio is not None and not audio.clip and audio.samples and self.store_client is not None:
            try:
                await self.record_audio_stop()
            except Exception as exc:  # noqa: BLE001 - closing: say so and go on
                log.warning("audio not stored at close: %s", exc)
        store = self.store_client
        if store is not None and store is self._shared_store:
            self.store_counters = store.counters  # live: its owner flushes and closes it
            self.store_client = None
        elif store is not None:
            self.queued_at_close = await close_store(store, self.cfg.flush_timeout)
            self.store_counters = dict(store.counters)
            self.store_client = None
        await asyncio.get_running_loop().run_in_executor(None, self._work.shutdown)

    # -- observers --------------------------------------------------------------------

    def on_stored(self, callback: StoredCallback) -> Callable[[], None]:
        """Call ``callback`` for every instance queued from now on; returns the remover."""
        self._stored_observers.append(callback)
        return lambda: self._stored_observers.remove(callback)

    def on_store_event(self, callback: StoreEventCallback) -> Callable[[], None]:
        """Call ``callback(event, detail)`` on archive outage and recovery; returns the remover."""
        self._event_observers.append(callback)
        return lambda: self._event_observers.remove(callback)

    def _store_event(self, event: StoreEvent, detail: str) -> None:
        for cb in list(self._event_observers):
            cb(event, detail)

    # -- identity ---------------------------------------------------------------------

    def check_identity(self) -> None:
        """Refuse at start periodic snapshots or a recording nobody could store.

        Raises
        ------
        ConfigError
            With ``snapshot_every`` or ``record`` when a video flow they may capture has
            no DICOM-RTV metadata flow and no identity was given.
        """
        cfg = self.cfg
        if cfg.record_audio is not None and self.audio and self.audio[0].meta is None \
                and self._identity is None and not self.video:
            raise ConfigError(
                "--record-audio", cfg.record_audio,
                f"a stream with DICOM-RTV metadata, or an identity for it: audio flow "
                f"{self.audio[0].name} carries no metadata; give {IDENTITY_FLAGS}")
        if cfg.snapshot_every is None and cfg.record is None:
            return
        flows = self.video if cfg.snapshot_every is not None else self.video[:1]
        bare = [vf.name for vf in flows if vf.meta is None]
        if bare and self._identity is None:
            flag = "--snapshot-every" if cfg.snapshot_every is not None else "--record"
            raise ConfigError(
                flag, cfg.snapshot_every if cfg.snapshot_every is not None else cfg.record,
                f"a stream with DICOM-RTV metadata, or an identity for it: flow(s) "
                f"{', '.join(bare)} carry no metadata; give {IDENTITY_FLAGS}",
            )

    # -- which frame ------------------------------------------------------------------

    def video_flow(self, name: str | None) -> VideoReader:
        """Video flow ``name`` (None: the first)."""
        if not self.video:
            raise LocalProtocolError("snapshot: the SDP has no video flow")
        if name is None:
            return self.video[0]
        for vf in self.video:
            if vf.name == name:
                return vf
        raise LocalProtocolError(
            f"no video flow {name!r} here (video flows: {', '.join(v.name for v in self.video)})")

    def pick_frame(
        self, *, flow: str | None = None, rtp_timestamp: int | None = None
    ) -> tuple[VideoReader, ReceivedItem]:
        """The recent frame to capture: of ``rtp_timestamp``, else the latest complete one.

        Without ``flow`` every video flow is searched, in SDP order.

        Raises
        ------
        LocalProtocolError
            When no such frame is among the recent ones (or none came yet).
        """
        flows = self.video if flow is None else [self.video_flow(flow)]
        for vf in flows:
            if rtp_timestamp is None:
                cands = [i for i in vf.recent if i.complete]
                if cands:
                    return vf, cands[-1]
            else:
                for i in vf.recent:
                    if i.rtp_timestamp == rtp_timestamp:
                        return vf, i
        if rtp_timestamp is None:
            if flow is not None:
                raise LocalProtocolError(f"no complete frame received on {flow} yet")
            raise LocalProtocolError("snapshot: no complete video frame received yet")
        raise LocalProtocolError(
            f"snapshot: frame with RTP timestamp {rtp_timestamp} is not among the recent ones"
        )

    # -- snapshots --------------------------------------------------------------------

    async def snapshot_dataset(
        self, rtp_timestamp: int | None = None, *, flow: str | None = None
    ) -> Dataset:
        """Build (in a worker thread) the stored single-frame instance of a recent frame."""
        vf, item = self.pick_frame(flow=flow, rtp_timestamp=rtp_timestamp)
        return await self._build_snapshot(vf, item)

    async def _build_snapshot(self, vf: VideoReader, item: ReceivedItem) -> Dataset:
        from rtstream.dicom.stored import build_snapshot

        assert item.frame is not None
        return await self._build(build_snapshot, item.frame.copy(), vf, item, self.stills)

    async def queue_snapshot(
        self, *, flow: str | None = None, rtp_timestamp: int | None = None
    ) -> StoredInstance:
        """Build the snapshot of a recent frame and make it durable in the outbox.

        Returns once it is queued; its ``future`` is done when the archive answered. A
        frame already stored in this session (same flow, RTP timestamp and RTV instance)
        is not stored again: the answer is that instance.
        """
        inst, _ = await self._queue_snapshot(flow, rtp_timestamp)
        return inst

    async def _queue_snapshot(
        self, flow: str | None, rtp_timestamp: int | None
    ) -> tuple[StoredInstance, bool]:
        """The stored instance of a recent frame, and whether it is new (not a repeat)."""
        if self.store_client is None:
            raise LocalProtocolError("snapshot: configure store or store_dir first")
        vf, item = self.pick_frame(flow=flow, rtp_timestamp=rtp_timestamp)

        async def store() -> StoredInstance:
            ds = await self._build_snapshot(vf, item)
            return await self._enqueue(ds, vf.name, item.rtp_timestamp, clip=False, frames=1)

        return await self._once((vf.name, item.rtp_timestamp, self._rtv_uid(vf, item)), store)

    async def _once(self, key: tuple[str, int, str],
                    store: Callable[[], Awaitable[StoredInstance]]) -> tuple[StoredInstance, bool]:
        """``store()`` the instance of ``key`` (flow, RTP timestamp, RTV instance) unless
        this session stored it already: then that instance. Returns it and whether it is
        new. Concurrent asks for one key wait for the first; a failed or cancelled store is
        forgotten, so that a later ask tries again."""
        known = self._recent.get(key)
        if known is not None and not known.cancelled():
            self._recent.move_to_end(key)
            log.debug("snapshot of %s at %d: already stored", key[0], key[1])
            return await asyncio.shield(known), False
        fut: asyncio.Future[StoredInstance] = asyncio.get_running_loop().create_future()
        self._recent[key] = fut
        while len(self._recent) > RECENT_SNAPSHOTS:
            self._recent.popitem(last=False)
        try:
            inst = await store()
        except asyncio.CancelledError:
            self._forget(key, fut)
            fut.cancel()
            raise
        except Exception as exc:
            self._forget(key, fut)  # a later request may try again
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters (if any) get it, nobody else must
            raise
        fut.set_result(inst)
        return inst, True

    def _forget(self, key: tuple[str, int, str], fut: asyncio.Future[StoredInstance]) -> None:
        if self._recent.get(key) is fut:
            del self._recent[key]

    async def snapshot(
        self, rtp_timestamp: int | None = None, *, flow: str | None = None
    ) -> SnapshotResult:
        """Store the latest complete frame (or the recent frame of ``rtp_timestamp``).

        The instance is built in a worker thread, made durable in the outbox and sent
        (C-STORE) or saved (``store_dir``); the result names its SOP Instance UID. Asking
        again for a frame already stored answers with the same instance (not a copy).
        """
        return await self._answer(*await self._queue_snapshot(flow, rtp_timestamp))

    async def _answer(self, inst: StoredInstance, new: bool) -> SnapshotResult:
        """Wait for the archive's answer about ``inst``; a new one joins :attr:`snapshots`."""
        res = await asyncio.shield(inst.future)
        result = SnapshotResult(inst.sop_instance_uid, bool(res.ok), res, inst.dataset)
        if new:
            self.snapshots.append(result)
        return result

    async def snapshot_every(self, period: float, *, stereo: bool = False) -> None:
        """Queue a snapshot every ``period`` seconds (the task of ``--snapshot-every``);
        with ``stereo`` (``--stereo``) the latest stereo pair's two-frame instance."""
        # Queue each snapshot durably and go on: awaiting the archive's answer here would
        # stop periodic snapshots for as long as the archive is down (the outbox is there
        # to hold them); the store client's queue bounds what piles up. A full or failing
        # outbox disk costs that snapshot (logged), not the ones after it.
        while True:
            await asyncio.sleep(period)
            try:
                if stereo:
                    inst, new = await self._queue_stereo(None)
                else:
                    inst, new = await self._queue_snapshot(None, None)
            except LocalProtocolError as exc:
                log.info("snapshot skipped: %s", exc)
                continue
            except OSError as exc:  # pydicom wraps ENOSPC: its last line says what failed
                reason = exc.strerror or (str(exc).strip().splitlines() or ["?"])[-1]
                log.error("snapshot not queued: the outbox cannot be written (%s)", reason)
                continue
            if not new:
                log.info("snapshot skipped: no new frame since %s", inst.sop_instance_uid)
                continue
            uid = inst.sop_instance_uid

            def done(f: asyncio.Future[StoreResult], uid: str = uid) -> None:
                if f.cancelled():
                    return
                res = f.result()
                self.snapshots.append(SnapshotResult(uid, bool(res.ok), res, None))
                log.info("snapshot %s stored ok=%s", uid, res.ok)

            inst.future.add_done_callback(done)

    # -- stereo -----------------------------------------------------------------------

    def pick_stereo(self, rtp_timestamp: int | None = None) -> StereoPair:
        """The latest complete stereo pair, or the recent pair of ``rtp_timestamp``.

        Raises
        ------
        LocalProtocolError
            When no stereo rendition paired frames yet, or the pair is not recent.
        """
        for pair in reversed(self.stereo_pairs):
            if rtp_timestamp is None:
                if pair.left.complete and pair.right.complete:
                    return pair
            elif pair.rtp_timestamp == rtp_timestamp:
                return pair
        if rtp_timestamp is None:
            raise LocalProtocolError(
                "stereo snapshot: no stereo pair received yet (a stereo rendition flow names "
                "the left and right views)")
        raise LocalProtocolError(
            f"stereo snapshot: pair with RTP timestamp {rtp_timestamp} is not among the recent ones")

    def check_stereo(self, rendition_flows: int) -> None:
        """Refuse at start stereo snapshots of a stream that cannot be stereo.

        Raises
        ------
        ConfigError
            With ``snapshot_stereo`` when the SDP has fewer than two video flows or no
            rendition flow (``a=x-rtstream-rendition``) to name the left and right views.
        """
        if not self.cfg.snapshot_stereo:
            return
        if len(self.video) < 2 or rendition_flows < 1:
            raise ConfigError(
                "--stereo", True,
                f"a stereo stream (two video flows and a rendition flow naming them left "
                f"and right): the SDP has {len(self.video)} video flow(s) and "
                f"{rendition_flows} rendition flow(s); leave out --stereo for single-frame "
                f"snapshots")

    async def queue_stereo_snapshot(self, rtp_timestamp: int | None = None) -> StoredInstance:
        """Build the stereo instance of a recent pair and make it durable in the outbox.

        Returns once it is queued; its ``future`` is done when the archive answered. A
        pair already stored in this session is not stored again: the answer is that
        instance.
        """
        inst, _ = await self._queue_stereo(rtp_timestamp)
        return inst

    async def _queue_stereo(self, rtp_timestamp: int | None) -> tuple[StoredInstance, bool]:
        """The stored stereo instance of a recent pair, and whether it is new."""
        from rtstream.dicom.stereo import build_stereo_snapshot

        if self.store_client is None:
            raise LocalProtocolError("stereo snapshot: configure store or store_dir first")
        pair = self.pick_stereo(rtp_timestamp)
        lf, rf = self.video_flow(pair.left.flow), self.video_flow(pair.right.flow)

        async def store() -> StoredInstance:
            assert pair.left.frame is not None and pair.right.frame is not None
            left_static = self._static_for(lf, pair.left)
            right_static = self._static_for(rf, pair.right)
            right_uid = self._rtv_uid(rf, pair.right)
            left, right, fmt = pair.left.frame.copy(), pair.right.frame.copy(), lf.fmt
            p = self._provenance(lf, pair.left, self.stills)

            def build() -> Dataset:
                return build_stereo_snapshot(
                    left, right, fmt, left_static, right_static,
                    left_rtv_uid=p.rtv_sop_instance_uid, right_rtv_uid=right_uid,
                    origin=p.origin, series_instance_uid=p.series_instance_uid,
                    series_number=p.series_number, instance_number=p.instance_number)

            ds = await asyncio.get_running_loop().run_in_executor(self._work, build)
            return await self._enqueue(ds, lf.name, pair.rtp_timestamp, clip=False, frames=2)

        key = (f"{lf.name}+{rf.name}", pair.rtp_timestamp, self._rtv_uid(lf, pair.left))
        return await self._once(key, store)

    async def stereo_snapshot(self, rtp_timestamp: int | None = None) -> SnapshotResult:
        """Store a stereo pair (left, right) as one instance, Stereo Pairs Present YES,
        and wait for the archive's answer (a pair stored before: that instance)."""
        return await self._answer(*await self._queue_stereo(rtp_timestamp))

    # -- clips ------------------------------------------------------------------------

    @property
    def recording(self) -> RecordingState | None:
        """The clip being recorded (until :meth:`record_stop`), or None."""
        rec = self._recording
        if rec is None:
            return None
        return RecordingState(flow=rec.flow.name, frames=len(rec.frames), limit=rec.limit)

    def record_start(self, *, seconds: float | None = None, frames: int | None = None) -> None:
        """Start recording a clip of the first video flow (complete frames only)."""
        if not self.video:
            raise LocalProtocolError("record: the SDP has no video flow")
        if self._recording is not None and not self._recording.done.is_set():
            raise LocalProtocolError("record: a recording is already running")
        vf = self.video[0]
        if vf.meta is None and self._identity is None:
            raise LocalProtocolError(_no_identity("record", vf))
        # a picture or rate no clip syntax carries is refused now, not after recording
        choose_video_syntax(vf.fmt, Fraction(vf.fmt.exactframerate))
        limit = self.cfg.record_max_frames
        if seconds is not None:
            limit = min(limit, max(1, round(float(vf.fmt.exactframerate) * seconds)))
        if frames is not None:
            limit = min(limit, frames)
        self._recording = _Recording(flow=vf, limit=limit)
        if self.audio:
            if self._audio_rec is not None and not self._audio_rec.done.is_set():
                log.info("record: audio is being recorded on its own; the clip goes without it")
            else:
                self._start_audio(limit / float(vf.fmt.exactframerate), clip=True)
        if seconds is not None and self.store_client is not None:
            self.spawn(self._record_until_done(), "rtstream-rx-record")
        log.info("recording a clip of up to %d frames", limit)

    def on_video(self, reader: VideoReader, item: ReceivedItem) -> None:
        """A delivered video item: add it to the clip being recorded, if any."""
        rec = self._recording
        if rec is None or rec.flow is not reader or not item.complete or rec.done.is_set():
            return
        if rec.first is None:
            rec.first = item
            audio = self._audio_rec
            if audio is not None and audio.clip and item.origin is not None:
                audio.start_ns = item.origin.to_ns()
        if rec.static is None:
            rec.static = item.static
        rec.frames.append(item.frame if item.frame is not None else np.zeros(0, np.uint8))
        if len(rec.frames) >= rec.limit:
            rec.done.set()

    async def _record_until_done(self) -> None:
        rec = self._recording
        assert rec is not None
        await rec.done.wait()
        try:
            result = await self.record_stop()
        except LocalProtocolError as exc:  # nothing recorded, or a clip that cannot be built
            log.error("clip not stored: %s", exc)
            return
        log.info("clip stored: %s ok=%s", result.sop_instance_uid, result.ok)

    async def record_stop(self) -> SnapshotResult:
        """Stop recording; build the clip (worker thread) and store it."""
        rec = self._recording
        if rec is None:
            raise LocalProtocolError("record: no recording was started")
        rec.done.set()
        self._recording = None
        first = rec.first
        if not rec.frames or first is None:
            raise LocalProtocolError("record: no complete frame was recorded")
        audio = self._audio_rec if self._audio_rec is not None and self._audio_rec.clip else None
        if audio is not None:
            # the audio of the frames recorded: the clip's span, from its first frame on
            fps = float(rec.flow.fmt.exactframerate)
            audio.limit = min(audio.limit, max(1, round(
                len(rec.frames) / fps * audio.flow.fmt.sample_rate)))
            if audio.samples >= audio.limit:
                audio.done.set()
        ds = await self._build_clip(rec, first)
        if audio is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(AUDIO_TAIL_WAIT):
                    await audio.done.wait()
            audio.done.set()
            if self._audio_rec is audio:
                self._audio_rec = None
        if self.store_client is None:
            return SnapshotResult(str(ds.SOPInstanceUID), True, None, ds)
        inst = await self._enqueue(ds, rec.flow.name, first.rtp_timestamp, clip=True,
                                   frames=len(rec.frames))
        if audio is not None:
            await self._store_audio(audio, ds)
        res = await inst.future
        return SnapshotResult(inst.sop_instance_uid, bool(res.ok), res, ds)

    # -- audio ------------------------------------------------------------------------

    @property
    def audio_recording(self) -> RecordingState | None:
        """The audio being recorded (samples so far and the limit), or None."""
        rec = self._audio_rec
        if rec is None:
            return None
        return RecordingState(flow=rec.flow.name, frames=rec.samples, limit=rec.limit)

    def _start_audio(self, seconds: float, *, clip: bool) -> _AudioRecording:
        af = self.audio[0]
        limit = max(1, round(af.fmt.sample_rate * seconds))
        rec = self._audio_rec = _AudioRecording(flow=af, limit=limit, clip=clip)
        return rec

    def record_audio_start(self, seconds: float) -> None:
        """Record ``seconds`` of the first audio flow into a General Audio Waveform
        instance, stored when full (``--record-audio``; a stream's audio alone).

        Raises
        ------
        LocalProtocolError
            Without an audio flow, or while audio is already being recorded.
        """
        if not self.audio:
            raise LocalProtocolError("record-audio: the SDP has no audio flow")
        if not seconds > 0:
            raise LocalProtocolError(f"record-audio: {seconds} is not a positive number of seconds")
        if self._audio_rec is not None and not self._audio_rec.done.is_set():
            raise LocalProtocolError("record-audio: audio is already being recorded")
        rec = self._start_audio(seconds, clip=False)
        if self.store_client is not None:
            self.spawn(self._record_audio_until_done(rec), "rtstream-rx-record-audio")
        log.info("recording %d audio samples of %s", rec.limit, rec.flow.name)

    def on_audio(self, reader: AudioReader, item: ReceivedItem) -> None:
        """A delivered audio chunk: keep it for the audio being recorded, if any."""
        rec = self._audio_rec
        if rec is None or rec.flow is not reader or rec.done.is_set() or item.audio is None:
            return
        samples = item.audio
        if rec.clip:
            # a clip's audio starts at its first frame's capture instant (same media
            # clock, ST 2110-10): skip what came before, trim the chunk that spans it
            if rec.start_ns is None or item.origin is None:
                return
            if rec.first is None:
                lead = (rec.start_ns - item.origin.to_ns()) * reader.fmt.sample_rate // 1_000_000_000
                if lead >= len(samples):
                    return
                samples = samples[max(0, lead):]
        if rec.first is None:
            rec.first = item
            if rec.clip and rec.start_ns is not None and item.origin is not None:
                # the first sample kept: the clip's start, or the chunk's if it came later
                rec.first_origin = PtpTimestamp.from_ns(max(rec.start_ns, item.origin.to_ns()))
        if rec.static is None:
            rec.static = item.static
        take = min(len(samples), rec.limit - rec.samples)
        rec.chunks.append(samples[:take].copy())
        rec.samples += take
        if rec.samples >= rec.limit:
            rec.done.set()

    async def _record_audio_until_done(self, rec: _AudioRecording) -> None:
        await rec.done.wait()
        if self._audio_rec is rec:
            self._audio_rec = None
        try:
            inst = await self._store_audio(rec, None)
        except LocalProtocolError as exc:
            log.error("audio not stored: %s", exc)
            return
        res = await inst.future
        log.info("audio stored: %s ok=%s", inst.sop_instance_uid, res.ok)

    async def record_audio_stop(self) -> StoredInstance:
        """Stop recording audio alone and store what was recorded."""
        rec = self._audio_rec
        if rec is None or rec.clip:
            raise LocalProtocolError("record-audio: no audio recording was started")
        rec.done.set()
        self._audio_rec = None
        return await self._store_audio(rec, None)

    async def _store_audio(self, rec: _AudioRecording, clip: Dataset | None) -> StoredInstance:
        """Build (worker thread) and queue the General Audio Waveform of ``rec``."""
        from rtstream.dicom.waveform import build_audio_waveform, concatenate

        first = rec.first
        if first is None or not rec.samples:
            raise LocalProtocolError(f"record: no audio was received on {rec.flow.name}")
        af = rec.flow
        static, rtv_uid = self._audio_static(af, rec)
        if self.audio_series is None:
            # a number of its own: clips + 1 is what the next session (or the findings'
            # series, started right after this session's) gets
            self.audio_series = _Series(generate_uid(),
                                        session_series_numbers(self.clock.now_ns())[0])
        series = self.audio_series
        series.instances += 1
        samples = concatenate(rec.chunks, af.fmt.channels)
        origin = rec.first_origin or first.origin or PtpTimestamp.from_ns(self.clock.now_ns())
        number = series.instances

        def build() -> Dataset:
            return build_audio_waveform(
                samples, af.fmt, static, rtv_sop_instance_uid=rtv_uid, origin=origin,
                series_instance_uid=series.uid, series_number=series.number,
                instance_number=number, clip=clip)

        ds = await asyncio.get_running_loop().run_in_executor(self._work, build)
        if self.store_client is None:
            raise LocalProtocolError("record-audio: configure store or store_dir first")
        return await self._enqueue(ds, af.name, first.rtp_timestamp, clip=True, frames=0)

    def _audio_static(self, af: AudioReader, rec: _AudioRecording) -> tuple[Dataset, str]:
        """The static part and RTV instance to store audio under: the audio metadata
        flow's, else (audio sent without metadata) the first video flow's."""
        if rec.static is not None and af.meta is not None and af.meta.static_uid:
            return rec.static, af.meta.static_uid
        if af.meta is not None and af.meta.static is not None and af.meta.static_uid:
            return af.meta.static, af.meta.static_uid
        for vf in self.video:
            if vf.last is not None:
                static = self._static_for(vf, vf.last)
                return static, self._rtv_uid(vf, vf.last)
        if af.meta is None and self._identity is not None:
            built = self._identity_static.get(af.name)
            if built is None:
                built = self._identity_static[af.name] = _identity_audio_static(af, self._identity)
            return built, str(built.SOPInstanceUID)
        raise LocalProtocolError(
            f"record: no static part (patient, study) received for audio flow {af.name}")

    async def _build_clip(self, rec: _Recording, first: ReceivedItem) -> Dataset:
        from rtstream.dicom.stored import build_clip

        return await self._build(build_clip, rec.frames, rec.flow, first, self.clips, rec.static)

    async def _build(
        self, builder: Callable[..., Dataset], pixels: object, vf: VideoReader,
        item: ReceivedItem, series: _Series, static: Dataset | None = None,
    ) -> Dataset:
        """Build a stored instance in the worker thread with its provenance: ``builder``
        is :func:`~rtstream.dicom.stored.build_snapshot` or ``build_clip``."""
        static = static if static is not None else self._static_for(vf, item)  # may refuse
        p = self._provenance(vf, item, series)
        fmt = vf.fmt

        def build() -> Dataset:
            return builder(
                pixels, fmt, static, rtv_sop_instance_uid=p.rtv_sop_instance_uid,
                origin=p.origin, series_instance_uid=p.series_instance_uid,
                series_number=p.series_number, instance_number=p.instance_number,
            )

        return await asyncio.get_running_loop().run_in_executor(self._work, build)

    # -- storing ----------------------------------------------------------------------

    async def _enqueue(
        self, ds: Dataset, flow: str, rtp_timestamp: int, *, clip: bool, frames: int
    ) -> StoredInstance:
        store = self.store_client
        assert store is not None
        fut = await store.enqueue(ds)  # durable in the outbox when this returns
        self._store_futures.add(fut)
        fut.add_done_callback(self._store_futures.discard)
        inst = StoredInstance(dataset=ds, flow=flow, rtp_timestamp=rtp_timestamp,
                              clip=clip, frames=frames, future=fut)
        for cb in list(self._stored_observers):
            cb(inst)
        return inst

    def _rtv_uid(self, vf: VideoReader, item: ReceivedItem) -> str:
        """The RTV SOP Instance a frame belongs to (the session's own for a bare flow)."""
        uid = item.rtv_sop_instance_uid or (vf.meta.static_uid if vf.meta else None)
        if uid:
            return uid
        return str(self._static_for(vf, item).SOPInstanceUID)

    def _provenance(self, vf: VideoReader, item: ReceivedItem, series: _Series) -> _Provenance:
        """Provenance of a stored instance: RTV instance, capture time, its series."""
        rtv_uid = self._rtv_uid(vf, item)
        series.instances += 1
        return _Provenance(
            rtv_sop_instance_uid=rtv_uid,
            origin=item.origin or PtpTimestamp.from_ns(self.clock.now_ns()),
            series_instance_uid=series.uid,
            series_number=series.number,
            instance_number=series.instances,
        )

    def _static_for(self, vf: VideoReader, item: ReceivedItem) -> Dataset:
        """The latest static part; for a flow without metadata, the site's identity.

        Raises
        ------
        LocalProtocolError
            When the flow's metadata has not brought a static part yet, or the flow has
            no metadata flow and no identity was given.
        """
        if item.static is not None:
            return item.static
        if vf.meta is not None:
            if vf.meta.static is not None:
                return vf.meta.static
            raise LocalProtocolError(
                f"snapshot: no static part (patient, study) received on {vf.meta.name} yet")
        static = self._identity_static.get(vf.name)
        if static is None:
            if self._identity is None:
                raise LocalProtocolError(_no_identity("snapshot", vf))
            static = self._identity_static[vf.name] = _identity_static(vf, self._identity)
        return static


def _identity_audio_static(af: AudioReader, identity: StreamContext) -> Dataset:
    """A Real-Time Audio Waveform static part for an audio flow without DICOM-RTV metadata
    (a third-party ST 2110-30 SDP), from the site's identity, as for video flows."""
    import uuid

    from rtstream.dicom.realtime import BulkFlowRef, RtvSop, static_part

    key = f"rtstream:{af.media.address}:{af.media.port}"
    ref = BulkFlowRef(
        source_id=uuid.uuid5(uuid.NAMESPACE_URL, key + ":source"),
        flow_id=uuid.uuid5(uuid.NAMESPACE_URL, key),
        transfer_syntax_uid=af.fmt.transfer_syntax_uid,
        sampling_rate=af.media.clock_rate,
    )
    ds: Dataset = static_part(RtvSop.AUDIO, identity, sop_instance_uid=generate_uid(),
                              bulk_flows=(ref,))
    return ds


def _no_identity(what: str, vf: VideoReader) -> str:
    return (f"{what}: flow {vf.name} carries no DICOM-RTV metadata (no patient or study), "
            f"so nothing is stored without an identity from the site: start the receiver "
            f"with {IDENTITY_FLAGS}")


def _identity_static(vf: VideoReader, identity: StreamContext) -> Dataset:
    """A static part for a stream without DICOM-RTV metadata (a third-party ST 2110 SDP).

    Built once per flow and session from the site's identity (one StreamContext, so
    one Study Instance UID per session); the bulk flow is the video flow itself,
    identified by a UUID derived from its SDP port.
    """
    import uuid

    from rtstream.dicom.realtime import BulkFlowRef, RtvSop, static_part

    key = f"rtstream:{vf.media.address}:{vf.media.port}"
    ref = BulkFlowRef(
        source_id=uuid.uuid5(uuid.NAMESPACE_URL, key + ":source"),
        flow_id=uuid.uuid5(uuid.NAMESPACE_URL, key),
        transfer_syntax_uid=vf.fmt.transfer_syntax_uid,
        sampling_rate=vf.media.clock_rate,
    )
    ds: Dataset = static_part(
        RtvSop.PHOTOGRAPHIC,
        identity,
        sop_instance_uid=generate_uid(),
        bulk_flows=(ref,),
        video=vf.fmt,
    )
    return ds
