"""Live analysis: a user's callable sees frames off the event loop and returns findings.

Theory of operation
-------------------
:class:`Analyzer` is a frame observer (:class:`~rtstream.receiver.sync.FrameObserver`):
the synchronizer shows it every delivered video item, on the event loop. It never waits
and never copies there: it keeps a reference to the newest item in a slot of one
(frame buffers are never written again once handed out, :mod:`rtstream.proto.rfc4175`),
replacing an item the worker has not taken yet (that one is counted ``skipped``).

One worker thread takes the slot, converts the frame to the layout asked for
(:func:`rtstream.proto.pixfmt.from_wire`: ``rgb24`` by default, YCbCr planes, or
``"wire"`` for the ST 2110-20 pgroups as received), calls ``fn(frame, context)`` and
checks what comes back with :func:`rtstream.dicom.findings.parse_findings`: a malformed
finding is logged (debug) and skipped, an exception is counted and logged, neither stops
the worker. The set is handed back to the event loop (``call_soon_threadsafe``), kept in
a small ring per flow and shown to the ``on_findings`` observers (viewer, MQTT).

So when the callable is slower than the stream it sees the latest frame and skips the
rest; the sockets are drained by the event loop whatever it does. A callable that holds
the GIL for long stretches (pure-Python loops) still competes with the readers for the
interpreter; numpy, onnxruntime and most native code release it.

:class:`FindingsArchiver` stores findings as DICOM: it watches the capture's
``on_stored`` hook, and for every snapshot whose frame has findings (the frame's own, or
the latest set of the same flow made at most ``window`` seconds of media time earlier)
builds a Color Softcopy Presentation State and/or a TID 1500 SR
(:mod:`rtstream.dicom.findings`) in a worker thread and queues it in the same store
client, in series of its own.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import enum
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import Dataset

from rtstream.dicom.findings import (
    FindingSet,
    build_findings_sr,
    build_presentation_state,
    parse_findings,
)
from rtstream.errors import ConfigError
from rtstream.proto.clock import NS_PER_S, Clock, tai_to_utc_ns
from rtstream.proto.pixfmt import PIX_FMTS
from rtstream.receiver.items import ReceivedItem, StoredInstance
from rtstream.receiver.readers import VideoReader

log = logging.getLogger(__name__)

__all__ = [
    "LAYOUTS",
    "AnalysisContext",
    "AnalysisFn",
    "AnalysisStats",
    "Analyzer",
    "FindingsArchiver",
    "FrameFanout",
    "StoreFindings",
]

#: Frame layouts a callable can ask for: pixfmt's layouts, or the wire pgroups.
LAYOUTS = (*PIX_FMTS, "wire")

#: Analysis latencies kept for the percentiles.
_LATENCY_RING = 4096
#: Finding sets kept per flow (for the stored objects and late viewers).
_RECENT_SETS = 64


@dataclass(frozen=True)
class AnalysisContext:
    """What the callable knows about its frame.

    Attributes
    ----------
    flow : str
        The video flow (``a=mid``).
    rtp_timestamp : int
        The frame's RTP timestamp (findings are matched to the frame by it).
    width, height : int
    complete : bool
        False when the frame lost packets (``missing_rows`` says which SRD rows).
    missing_rows : numpy.ndarray or None
    capture_time : datetime.datetime or None
        The capture instant in UTC (the grain's Frame Origin Timestamp, else the RTP
        timestamp on the media clock).
    patient_id, patient_name, study_instance_uid : str or None
        From the stream's static part (None for a stream without DICOM-RTV metadata).
    metadata : pydicom.Dataset or None
        The frame's grain (dynamic part).
    static : pydicom.Dataset or None
        The stream's latest static part.
    """

    flow: str
    rtp_timestamp: int
    width: int
    height: int
    complete: bool
    missing_rows: np.ndarray | None
    capture_time: dt.datetime | None
    patient_id: str | None
    patient_name: str | None
    study_instance_uid: str | None
    metadata: Dataset | None
    static: Dataset | None

    @classmethod
    def of(cls, item: ReceivedItem) -> AnalysisContext:
        """The context of a received video item."""
        assert item.fmt is not None
        static = item.static
        when = None
        if item.origin is not None:
            utc = tai_to_utc_ns(item.origin.to_ns())
            when = dt.datetime.fromtimestamp(utc / NS_PER_S, dt.UTC)

        def text(key: str) -> str | None:
            if static is None or key not in static:
                return None
            return str(static.get(key))

        return cls(
            flow=item.flow, rtp_timestamp=item.rtp_timestamp,
            width=item.fmt.width, height=item.fmt.height,
            complete=item.complete, missing_rows=item.missing_rows, capture_time=when,
            patient_id=text("PatientID"), patient_name=text("PatientName"),
            study_instance_uid=text("StudyInstanceUID"),
            metadata=item.metadata, static=static,
        )


#: ``fn(frame, context) -> findings`` (mappings or :class:`Finding`; None is no finding).
AnalysisFn = Callable[[np.ndarray, AnalysisContext], "Sequence[Any] | None"]


#: Sees every finding set, on the event loop.
FindingsObserver = Callable[[FindingSet], None]


@dataclass(frozen=True)
class AnalysisStats:
    """Counters of the analysis hook.

    Attributes
    ----------
    offered : int
        Video frames shown to the hook.
    analysed : int
        Frames the callable returned from (with or without findings; not those it raised on).
    skipped : int
        Frames replaced by a newer one before the worker took them.
    exceptions : int
        Calls that raised.
    malformed : int
        Findings rejected by validation.
    findings : int
        Findings accepted.
    latency_p50_us, latency_p99_us, latency_max_us : int
        From the frame's last packet read to the callable's return, over the last 4096
        analysed frames (0 before the first).
    """

    offered: int
    analysed: int
    skipped: int
    exceptions: int
    malformed: int
    findings: int
    latency_p50_us: int
    latency_p99_us: int
    latency_max_us: int

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (``Receiver.stats["analysis"]``)."""
        return dict(self.__dict__)


class Analyzer:
    """Run ``fn`` on the latest frame in a worker thread, never holding up the stream.

    Parameters
    ----------
    fn : callable
        ``fn(frame, context)`` returning a sequence of findings.
    layout : str
        One of :data:`LAYOUTS` (``"rgb24"``: ``(H, W, 3)`` uint8).
    flow : str or None
        Only this video flow (None: every video flow).
    name : str
        Shown in logs and thread names.
    """

    def __init__(
        self, fn: AnalysisFn, *, layout: str = "rgb24", flow: str | None = None,
        name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigError("analyze", fn, "a callable fn(frame, context)")
        if layout not in LAYOUTS:
            raise ConfigError("analyze layout", layout, f"one of {', '.join(LAYOUTS)}")
        self.fn = fn
        self.layout = layout
        self.flow = flow
        self.name = name or getattr(fn, "__qualname__", repr(fn))
        self.recent: dict[str, collections.deque[FindingSet]] = {}
        self._observers: list[FindingsObserver] = []
        self._cond = threading.Condition()
        self._slot: ReceivedItem | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: Clock | None = None
        self._latencies = collections.deque[int](maxlen=_LATENCY_RING)
        self.offered = self.analysed = self.skipped = self.exceptions = 0
        self.malformed = self.findings = 0
        self._busy = False

    # -- observers ----------------------------------------------------------------------

    def on_findings(self, callback: FindingsObserver) -> Callable[[], None]:
        """Call ``callback(finding_set)`` on the event loop for every set; returns the remover."""
        self._observers.append(callback)
        return lambda: self._observers.remove(callback)

    def findings_for(self, flow: str, rtp_timestamp: int, window: int = 0) -> FindingSet | None:
        """The set made on this frame, else the latest one made at most ``window`` RTP
        ticks before it (with findings), else None."""
        best: FindingSet | None = None
        for fs in reversed(self.recent.get(flow, ())):
            age = (rtp_timestamp - fs.rtp_timestamp) & 0xFFFFFFFF
            if age == 0:
                return fs
            if age <= window and fs.findings and (best is None):
                best = fs
        return best

    # -- the event-loop side ------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
        """Start the worker thread (results come back on ``loop``; latencies on ``clock``,
        the receiver's, which stamped the frames)."""
        if self._thread is not None:
            return
        self._loop = loop
        self._clock = clock
        self._thread = threading.Thread(target=self._work, name="rtstream-analysis", daemon=True)
        self._thread.start()

    def on_video(self, reader: VideoReader, item: ReceivedItem) -> None:
        """A delivered frame: into the slot of one (the older one there is skipped)."""
        if self.flow is not None and item.flow != self.flow:
            return
        with self._cond:
            self.offered += 1
            if self._slot is not None:
                self.skipped += 1
            self._slot = item
            self._cond.notify()

    async def aclose(self) -> None:
        """Stop the worker after the call in progress (if any)."""
        with self._cond:
            self._stopping = True
            if self._slot is not None:
                self.skipped += 1
                self._slot = None
            self._cond.notify()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join)
            self._thread = None

    def stats(self) -> AnalysisStats:
        """The counters now (``offered`` = ``analysed`` + ``exceptions`` + ``skipped``, plus
        the frame in the worker's hands, if any)."""
        with self._cond:
            lat = np.fromiter(self._latencies, np.int64) if self._latencies else None
            counts = (self.offered, self.analysed, self.skipped, self.exceptions,
                      self.malformed, self.findings)

        def pct(q: float) -> int:
            return 0 if lat is None else int(np.percentile(lat, q)) // 1000

        offered, analysed, skipped, exceptions, malformed, findings = counts
        return AnalysisStats(
            offered=offered, analysed=analysed, skipped=skipped,
            exceptions=exceptions, malformed=malformed, findings=findings,
            latency_p50_us=pct(50), latency_p99_us=pct(99),
            latency_max_us=0 if lat is None else int(lat.max()) // 1000,
        )

    def _publish(self, fs: FindingSet) -> None:
        ring = self.recent.get(fs.flow)
        if ring is None:
            ring = self.recent[fs.flow] = collections.deque(maxlen=_RECENT_SETS)
        ring.append(fs)
        for cb in list(self._observers):
            try:
                cb(fs)
            except Exception:  # an observer's bug must not stop the others
                log.exception("findings observer %r failed", cb)

    # -- the worker thread --------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._slot is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                item, self._slot = self._slot, None
            if item is None:
                continue
            fs = self._analyse(item)
            loop = self._loop
            if fs is not None and loop is not None and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(self._publish, fs)
                except RuntimeError:  # the loop closed meanwhile
                    return

    def _frame(self, item: ReceivedItem) -> np.ndarray:
        assert item.frame is not None and item.fmt is not None
        if self.layout == "wire":
            view = item.frame.view()
            view.flags.writeable = False
            return view
        from rtstream.proto.pixfmt import from_wire

        return from_wire(item.frame, item.fmt, self.layout)

    def _analyse(self, item: ReceivedItem) -> FindingSet | None:
        if item.frame is None or item.fmt is None:
            return None
        try:
            frame = self._frame(item)
            ctx = AnalysisContext.of(item)
            out = self.fn(frame, ctx)
        except Exception as exc:  # the user's code: counted, never fatal
            with self._cond:
                self.exceptions += 1
            log.warning("analysis %s raised on frame %d of %s: %s: %s", self.name,
                        item.rtp_timestamp, item.flow, type(exc).__name__, exc)
            log.debug("analysis traceback", exc_info=True)
            return None
        clock = self._clock
        latency = max(0, clock.now_ns() - item.received_ns) if clock is not None else 0
        wrong_type = out is not None and (
            isinstance(out, (str, bytes)) or not isinstance(out, Sequence))
        if wrong_type:
            log.debug("analysis %s returned %s, not a list of findings", self.name,
                      type(out).__name__)
        good, bad = ([], []) if out is None or wrong_type else parse_findings(
            out, width=ctx.width, height=ctx.height)
        for err in bad:
            log.debug("analysis %s: finding skipped: %s", self.name, err)
        with self._cond:  # one consistent update of the counters stats() reads
            self.analysed += 1
            self._latencies.append(latency)
            self.malformed += len(bad) + int(wrong_type)
            self.findings += len(good)
        origin = item.origin.to_ns() if item.origin is not None else None
        return FindingSet(flow=item.flow, rtp_timestamp=item.rtp_timestamp,
                          width=ctx.width, height=ctx.height, findings=tuple(good),
                          latency_ns=latency, origin_ns=origin, ssrc=item.ssrc)


class FrameFanout:
    """Shows every delivered frame to several observers (capture first, then analysis)."""

    def __init__(self, observers: Sequence[Any]) -> None:
        self.observers = list(observers)

    def on_video(self, reader: VideoReader, item: ReceivedItem) -> None:
        """Each observer in turn."""
        for obs in self.observers:
            obs.on_video(reader, item)


class StoreFindings(enum.Enum):
    """Which DICOM objects carry a snapshot's findings."""

    NONE = "none"
    PRESENTATION_STATE = "ps"
    REPORT = "sr"
    BOTH = "both"


class FindingsArchiver:
    """Store, beside every snapshot, the findings of its frame as DICOM.

    Parameters
    ----------
    analyzer : Analyzer
    capture : rtstream.receiver.capture.Capture
        Its ``on_stored`` hook and store client.
    what : StoreFindings
    window : float
        Seconds of media time a finding set may be older than the snapshot's frame.
    uid_root : str
    """

    def __init__(self, analyzer: Analyzer, capture: Any, *, what: StoreFindings = StoreFindings.BOTH,
                 window: float = 1.0, uid_root: str = "") -> None:
        from pydicom.uid import generate_uid

        from rtstream.receiver.capture import session_series_numbers

        self.analyzer = analyzer
        self.capture = capture
        self.what = what
        self.window = window
        self.uid_root = uid_root
        ps_number, sr_number = session_series_numbers(capture.clock.now_ns())
        self.ps_series = (str(generate_uid()), ps_number)
        self.sr_series = (str(generate_uid()), sr_number)
        self._instances = 0
        self.stored: list[StoredInstance | Dataset] = []
        self.results: list[tuple[str, asyncio.Future[Any]]] = []
        self.errors = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._remove = capture.on_stored(self._on_stored)

    def _on_stored(self, inst: StoredInstance) -> None:
        if inst.clip or self.what is StoreFindings.NONE:
            return
        vf = next((v for v in self.capture.video if v.name == inst.flow), None)
        rate = vf.media.clock_rate if vf is not None else 90000
        fs = self.analyzer.findings_for(inst.flow, inst.rtp_timestamp, int(self.window * rate))
        if fs is None or not fs.findings:
            return
        task = asyncio.get_running_loop().create_task(
            self._store(inst, fs), name="rtstream-findings-store")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _store(self, inst: StoredInstance, fs: FindingSet) -> None:
        store = self.capture.store_client
        if store is None:
            return
        self._instances += 1
        number = self._instances
        image = inst.dataset
        findings = list(fs.findings)
        what = self.what

        def build() -> list[Dataset]:
            out = []
            if what in (StoreFindings.PRESENTATION_STATE, StoreFindings.BOTH):
                out.append(build_presentation_state(
                    image, findings, series_instance_uid=self.ps_series[0],
                    series_number=self.ps_series[1], instance_number=number,
                    uid_root=self.uid_root, description=_made_on(fs, inst)))
            if what in (StoreFindings.REPORT, StoreFindings.BOTH):
                out.append(build_findings_sr(
                    image, findings, series_instance_uid=self.sr_series[0],
                    series_number=self.sr_series[1], instance_number=number,
                    uid_root=self.uid_root))
            return out

        try:
            built = await asyncio.to_thread(build)
            for ds in built:
                fut = await store.enqueue(ds)
                self.results.append((str(ds.SOPInstanceUID), fut))
                self.stored.append(ds)
                log.info("findings of frame %d (%s) queued as %s", fs.rtp_timestamp, fs.flow,
                         ds.SOPInstanceUID)
        except Exception as exc:  # noqa: BLE001 - a failed build must not stop capture
            self.errors += 1
            log.warning("findings not stored with snapshot %s: %s", inst.sop_instance_uid, exc)

    async def aclose(self) -> None:
        """Wait for the builds in progress (before the store client closes)."""
        self._remove()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _made_on(fs: FindingSet, inst: StoredInstance) -> str:
    if fs.rtp_timestamp == inst.rtp_timestamp:
        return "live analysis findings"
    return f"live analysis findings of RTP timestamp {fs.rtp_timestamp}"

