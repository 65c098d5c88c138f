"""What a receiver hands out: synchronized items, and the outcome of a stored capture."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

import numpy as np
from pydicom import Dataset

from rtstream.errors import LocalProtocolError
from rtstream.pacs.store import StoreResult
from rtstream.proto.clock import PtpTimestamp
from rtstream.proto.formats import AudioFormat, VideoFormat

__all__ = ["ItemKind", "ReceivedItem", "RecordingState", "SnapshotResult", "StoredInstance"]


class ItemKind(enum.Enum):
    """What a :class:`ReceivedItem` carries."""

    VIDEO = "video"
    AUDIO = "audio"


@dataclass
class ReceivedItem:
    """One synchronized item: a video frame with its metadata, or an audio chunk.

    Attributes
    ----------
    kind : ItemKind
    rtp_timestamp, ssrc : int
    frame : numpy.ndarray or None
        Active video in wire pgroup order (``fmt.frame_bytes`` uint8).
    fmt : VideoFormat or None
    complete : bool
        False when the frame lost packets (then ``missing_rows`` says which SRD rows).
    missing_rows : numpy.ndarray or None
    metadata : Dataset or None
        The grain's data set (dynamic part, and the static part when the grain had one).
    static : Dataset or None
        The latest static part received on the metadata flow.
    origin : PtpTimestamp or None
        Capture instant: the grain's Frame Origin Timestamp, else the RTP timestamp on
        the common media clock.
    received_ns : int
        When the last packet of the frame (or chunk) was read from the socket.
    audio : numpy.ndarray or None
        ``(samples, channels)`` int32 for audio items.
    audio_fmt : AudioFormat or None
    grain_raw : bytes or None
        The metadata grain as received (RTV meta information + data set).
    rtv_sop_instance_uid : str or None
        The RTV Communication SOP Instance UID of the paired grain.
    flow : str
        ``a=mid`` of the flow (or ``video0``, ``audio0``...).
    """

    kind: ItemKind
    rtp_timestamp: int
    ssrc: int
    frame: np.ndarray | None = None
    fmt: VideoFormat | None = None
    complete: bool = True
    missing_rows: np.ndarray | None = None
    metadata: Dataset | None = None
    static: Dataset | None = None
    origin: PtpTimestamp | None = None
    received_ns: int = 0
    audio: np.ndarray | None = None
    audio_fmt: AudioFormat | None = None
    grain_raw: bytes | None = None
    rtv_sop_instance_uid: str | None = None
    flow: str = ""
    delivered_ns: int = 0

    def rgb(self) -> np.ndarray:
        """The frame as an ``(height, width, 3)`` uint8 RGB array (BT.601 conversion)."""
        if self.frame is None or self.fmt is None:
            raise LocalProtocolError("rgb(): this item carries no video frame")
        from rtstream.proto.pixfmt import from_wire

        return from_wire(self.frame, self.fmt, "rgb24")

    def array(self, layout: str = "rgb24") -> np.ndarray:
        """The frame in ``layout``: ``"rgb24"`` ``(H, W, 3)`` uint8; YCbCr planes
        ``"yuv420p"``/``"nv12"`` ``(H * 3 / 2, W)`` uint8 or ``"yuv422p10le"`` ``(3, H, W)``
        uint16; ``"uyvy422"``; or ``"wire"``, the ST 2110-20 pgroups as received (a
        read-only view, no copy). Conversions: :func:`rtstream.proto.pixfmt.from_wire`.
        """
        if self.frame is None or self.fmt is None:
            raise LocalProtocolError("array(): this item carries no video frame")
        if layout == "wire":
            view = self.frame.view()
            view.flags.writeable = False
            return view
        from rtstream.proto.pixfmt import from_wire

        return from_wire(self.frame, self.fmt, layout)


@dataclass(frozen=True)
class SnapshotResult:
    """The outcome of a snapshot or clip: the stored instance and where it went.

    Attributes
    ----------
    sop_instance_uid : str
    ok : bool
        The archive (or the folder) took it.
    store : StoreResult or None
        The store client's answer; None when nothing was configured to store it.
    dataset : Dataset or None
        The stored instance (None for periodic snapshots, which do not keep it).
    """

    sop_instance_uid: str
    ok: bool
    store: StoreResult | None = None
    dataset: Dataset | None = None


@dataclass(frozen=True, kw_only=True)
class StoredInstance:
    """An instance the receiver handed to its store client (what ``on_stored`` observers get).

    Attributes
    ----------
    dataset : Dataset
        The stored instance (snapshot or clip).
    flow : str
        The video flow its frames came from.
    rtp_timestamp : int
        RTP timestamp of its (first) frame.
    clip : bool
        A multi-frame clip rather than a single-frame snapshot.
    frames : int
        Frames it holds.
    future : asyncio.Future of StoreResult
        Done when the archive answered (the instance is durable in the outbox already).
    """

    dataset: Dataset
    flow: str
    rtp_timestamp: int
    clip: bool
    frames: int
    future: asyncio.Future[StoreResult]

    @property
    def sop_instance_uid(self) -> str:
        """The instance's SOP Instance UID."""
        return str(self.dataset.SOPInstanceUID)


@dataclass(frozen=True, kw_only=True)
class RecordingState:
    """A clip recording in progress: its video flow and the frames it holds so far."""

    flow: str
    frames: int
    limit: int
