"""The typed surface that applications (control plane, viewer, metrics) use of a receiver.

:class:`~rtstream.receiver.Receiver` satisfies :class:`ReceiverLike`, and its ``capture``
part :class:`CaptureLike`; code above the receiver (``rtstream/control/``,
``rtstream/viewer/``) is written against these so that it never reaches into the
receiver's flows, and tests can hand it a fake.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from rtstream.pacs.store import StoreClient, StoreEvent
from rtstream.receiver.config import ReceiverConfig
from rtstream.receiver.items import ReceivedItem, RecordingState, SnapshotResult, StoredInstance
from rtstream.receiver.sync import StereoPair

__all__ = ["CaptureLike", "ReceiverLike"]


class CaptureLike(Protocol):
    """Snapshots, clips and the store client of a receiver."""

    @property
    def store_client(self) -> StoreClient | None:
        """The open store client, None when nothing stores (or after close)."""
        ...

    @property
    def recording(self) -> RecordingState | None:
        """The clip being recorded, or None."""
        ...

    def on_stored(self, callback: Callable[[StoredInstance], None]) -> Callable[[], None]:
        """Observe every instance queued for the archive; returns the remover."""
        ...

    def on_store_event(self, callback: Callable[[StoreEvent, str], None]) -> Callable[[], None]:
        """Observe archive outages and recoveries; returns the remover."""
        ...

    async def queue_snapshot(
        self, *, flow: str | None = None, rtp_timestamp: int | None = None
    ) -> StoredInstance:
        """Snapshot a recent frame, durable in the outbox on return."""
        ...

    async def snapshot(
        self, rtp_timestamp: int | None = None, *, flow: str | None = None
    ) -> SnapshotResult:
        """Snapshot a recent frame and wait for the archive's answer."""
        ...

    async def queue_stereo_snapshot(self, rtp_timestamp: int | None = None) -> StoredInstance:
        """Store a recent stereo pair as one instance, durable in the outbox on return."""
        ...

    async def stereo_snapshot(self, rtp_timestamp: int | None = None) -> SnapshotResult:
        """Store a recent stereo pair as one instance and wait for the archive's answer."""
        ...

    def record_start(self, *, seconds: float | None = None, frames: int | None = None) -> None:
        """Start recording a clip of the first video flow."""
        ...

    async def record_stop(self) -> SnapshotResult:
        """Stop recording and store the clip."""
        ...


class ReceiverLike(Protocol):
    """An entered receiver as the applications see it."""

    @property
    def cfg(self) -> ReceiverConfig:
        """Its configuration."""
        ...

    @property
    def capture(self) -> CaptureLike:
        """Its snapshots, clips and store client."""
        ...

    @property
    def store_client(self) -> StoreClient | None:
        """Shorthand for ``capture.store_client``."""
        ...

    @property
    def stats(self) -> Mapping[str, Any]:
        """Counters (``Receiver.stats``; JSON-ready values)."""
        ...

    @property
    def flow_names(self) -> list[str]:
        """Every flow's name (``a=mid``): video, audio, then metadata."""
        ...

    @property
    def video_flow_names(self) -> list[str]:
        """The video flows' names, in SDP order."""
        ...

    def metadata_flow_of(self, name: str) -> str | None:
        """The metadata flow describing flow ``name``, or None."""
        ...

    def pause_flow(self, name: str) -> None:
        """Stop reading flow ``name``."""
        ...

    def resume_flow(self, name: str) -> None:
        """Read flow ``name`` again."""
        ...

    @property
    def delivered_video(self) -> int:
        """Video items handed to the consumer so far."""
        ...

    def latencies_since(self, seen: int) -> tuple[np.ndarray, int]:
        """Frame-ready latencies (ns) after the first ``seen``, and the new total."""
        ...

    @property
    def stereo_pairs(self) -> Sequence[StereoPair]:
        """The latest left/right frame pairs of a stereo rendition (oldest first)."""
        ...

    def __aiter__(self) -> AsyncIterator[ReceivedItem]:
        """The synchronized items."""
        ...

