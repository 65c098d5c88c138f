"""Snapshots of the synthetic test pattern as real stored DICOM instances.

The snapshot button of ``rtstream view --test-pattern`` goes through the same path as a
received stream's: the kept RGB frame with the clicked RTP timestamp is put into wire
order (ST 2110-20 RGB 8-bit, ``rtstream.proto.pixfmt.to_wire``, lossless), turned into a
stored still image by :func:`rtstream.dicom.stored.build_snapshot` against a PS3.22
static part (:func:`rtstream.dicom.realtime.static_part`; VL Endoscopic Image Storage for
the endoscopic RTV class, PS3.3 A.32.4), made durable in the outbox and sent by C-STORE
(or copied to a folder) by :class:`rtstream.pacs.store.StoreClient`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from rtstream.dicom.context import StreamContext
from rtstream.dicom.realtime import BulkFlowRef, RtvSop, static_part
from rtstream.dicom.stored import build_snapshot
from rtstream.proto.clock import PtpTimestamp
from rtstream.proto.formats import Sampling, VideoFormat
from rtstream.proto.pixfmt import to_wire
from rtstream.viewer.server import SnapshotReply, TestPattern

if TYPE_CHECKING:
    from rtstream.pacs.store import StoreClient

log = logging.getLogger(__name__)


def pattern_context(pattern: TestPattern) -> StreamContext:
    """A :class:`StreamContext` from the pattern's overlay (patient, study description)."""
    ov = pattern.base_overlay
    return StreamContext(
        patient_name=ov.get("patient_name") or "Test^Pattern",
        patient_id=ov.get("patient_id") or "RTS-TEST",
        study_description=ov.get("study_description", "")[:64],
    )


class PatternSnapshots:
    """A :data:`~rtstream.viewer.server.SnapshotFn` storing test-pattern frames.

    Parameters
    ----------
    pattern : TestPattern
        The feed whose kept frames are stored (``frame_at``/``origin_at``).
    store : StoreClient
        Entered (``async with``) by the caller; every snapshot is ``submit``-ted to it.
    context : StreamContext or None
        Patient/study of the static part; default from the pattern's overlay.
    sop : RtvSop
        The real-time class the stream stands for (decides the stored class).

    Attributes
    ----------
    fmt : VideoFormat
        The wire format the frames are converted to (RGB 8-bit, pattern size and rate).
    static : pydicom.Dataset
        The static part every snapshot copies its patient/study/equipment from.
    datasets : list of pydicom.Dataset
        Every instance built so far (for tests and logs).
    """

    def __init__(
        self,
        pattern: TestPattern,
        store: StoreClient,
        *,
        context: StreamContext | None = None,
        sop: RtvSop = RtvSop.ENDOSCOPIC,
    ) -> None:
        self.pattern = pattern
        self.store = store
        self.fmt = VideoFormat(
            sampling=Sampling.RGB,
            depth=8,
            width=pattern.width,
            height=pattern.height,
            exactframerate=Fraction(pattern.fps),
        )
        bulk = BulkFlowRef(
            source_id=uuid.uuid4(),
            flow_id=uuid.uuid4(),
            transfer_syntax_uid=self.fmt.transfer_syntax_uid,
            sampling_rate=90_000,
        )
        self.rtv_sop_instance_uid = generate_uid()
        self.series_instance_uid = generate_uid()
        self.static = static_part(
            sop,
            context or pattern_context(pattern),
            sop_instance_uid=self.rtv_sop_instance_uid,
            bulk_flows=(bulk,),
            video=self.fmt,
        )
        self.datasets: list[Dataset] = []
        self._number = 0

    def build(self, image: np.ndarray, origin_ns: int) -> Dataset:
        """The stored instance of one RGB frame ``(H, W, 3)`` captured at ``origin_ns``."""
        self._number += 1
        wire = to_wire(image, "rgb24", self.fmt)
        ds: Dataset = build_snapshot(
            wire,
            self.fmt,
            self.static,
            rtv_sop_instance_uid=self.rtv_sop_instance_uid,
            origin=PtpTimestamp.from_ns(origin_ns),
            series_instance_uid=self.series_instance_uid,
            instance_number=self._number,
        )
        return ds

    async def __call__(self, stream_id: str, rtp_timestamp: int) -> SnapshotReply:
        """Build (in a worker thread) and store the frame; the result names its UID."""
        if stream_id != self.pattern.stream_id:
            return SnapshotReply(ok=False, error=f"no stream {stream_id!r}")
        # Take the frame now, before the pattern forgets it; build off the event loop.
        image = self.pattern.frame_at(rtp_timestamp)
        origin_ns = self.pattern.origin_at(rtp_timestamp)
        if image is None or origin_ns is None:
            return SnapshotReply(
                ok=False, error=f"frame {rtp_timestamp} is no longer kept (too old or unknown)"
            )
        ds = await asyncio.to_thread(self.build, image, origin_ns)
        self.datasets.append(ds)
        result = await self.store.submit(ds)
        uid = str(ds.SOPInstanceUID)
        if result.ok:
            log.info("snapshot of frame %d stored as %s", rtp_timestamp, uid)
            return SnapshotReply(ok=True, sop_instance_uid=uid)
        status = "none" if result.status is None else f"0x{result.status:04X}"
        return SnapshotReply(
            ok=False, sop_instance_uid=uid,
            error=f"store failed (status {status}): {result.error}",
        )
