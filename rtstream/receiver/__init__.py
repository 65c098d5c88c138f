"""Receive a DICOM-RTV rendition (see :mod:`rtstream.receiver.receiver`)."""

from rtstream.receiver.api import CaptureLike, ReceiverLike
from rtstream.receiver.config import IncompletePolicy, ReceiverConfig
from rtstream.receiver.items import (
    ItemKind,
    ReceivedItem,
    RecordingState,
    SnapshotResult,
    StoredInstance,
)
from rtstream.receiver.receiver import Receiver

__all__ = [
    "CaptureLike",
    "IncompletePolicy",
    "ItemKind",
    "ReceivedItem",
    "Receiver",
    "ReceiverConfig",
    "ReceiverLike",
    "RecordingState",
    "SnapshotResult",
    "StoredInstance",
]
