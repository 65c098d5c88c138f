"""rtstream's public Python surface: everything a program embedding rtstream needs.

``import rtstream`` stays light; the names below load on first use
(``rtstream.Receiver``, ``rtstream.ArraySource`` ...), or import them from here. Anything
not listed is private by name and may change. The guide with runnable examples is
``docs/python.md``.

Receiving
    :class:`Receiver` (``async with Receiver(cfg) as rx: async for item in rx``),
    :class:`ReceiverConfig`, :class:`ReceivedItem` (``item.array(layout)``, its DICOM
    context ``item.static``/``item.metadata``/``item.origin`` and ``item.complete``),
    :class:`ItemKind`, :class:`SnapshotResult`, :class:`StoredInstance`.
Live analysis
    ``Receiver.analyze(fn)`` -> :class:`Analyzer`; ``fn(frame, context)`` gets an
    :class:`AnalysisContext` and returns findings (mappings or :class:`Finding`),
    delivered as :class:`FindingSet`; :class:`AnalysisStats`, :class:`StoreFindings`,
    :func:`parse_finding`, :class:`FindingError`.
Findings as DICOM
    :func:`build_presentation_state` (Color Softcopy Presentation State),
    :func:`build_findings_sr` (TID 1500 Measurement Report).
Sending
    :class:`Sender`, :class:`SenderConfig`, :class:`VideoConfig`, :class:`NetworkConfig`;
    your own frames: :class:`ArraySource` + :func:`register_source`.
Errors
    :class:`ConfigError` (a bad value, naming it), :class:`LocalProtocolError` (misuse),
    :class:`RemoteProtocolError` (bad input from the network).
"""

from __future__ import annotations

from rtstream.dicom.findings import (
    Finding,
    FindingError,
    FindingSet,
    build_findings_sr,
    build_presentation_state,
    parse_finding,
)
from rtstream.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from rtstream.media.arrays import ArraySource, register_source, unregister_source
from rtstream.receiver import (
    ItemKind,
    ReceivedItem,
    Receiver,
    ReceiverConfig,
    SnapshotResult,
    StoredInstance,
)
from rtstream.receiver.analysis import (
    AnalysisContext,
    AnalysisStats,
    Analyzer,
    StoreFindings,
)
from rtstream.sender import NetworkConfig, Sender, SenderConfig, VideoConfig

__all__ = [
    "AnalysisContext",
    "AnalysisStats",
    "Analyzer",
    "ArraySource",
    "ConfigError",
    "Finding",
    "FindingError",
    "FindingSet",
    "ItemKind",
    "LocalProtocolError",
    "NetworkConfig",
    "ReceivedItem",
    "Receiver",
    "ReceiverConfig",
    "RemoteProtocolError",
    "Sender",
    "SenderConfig",
    "SnapshotResult",
    "StoreFindings",
    "StoredInstance",
    "VideoConfig",
    "build_findings_sr",
    "build_presentation_state",
    "parse_finding",
    "register_source",
    "unregister_source",
]
