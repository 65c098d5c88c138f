"""MQTT events of the live analysis: one ``findings`` event per finding set.

Theory of operation
-------------------
:func:`publish_findings_events` subscribes to an analysis's ``on_findings`` hook
(:class:`rtstream.receiver.analysis.Analyzer`) and queues one event on ``…/events`` per
finding set that holds at least one finding (an empty set is news only in the stats,
``analysis.analysed``). The event carries the frame's flow and RTP timestamp, the
analysis latency and the findings themselves (label, geometry, score, text: no patient
data, since events leave the node). :meth:`ControlPlane.publish_event` only queues, so the
event loop never waits for the broker; a set arriving faster than ``min_interval``
seconds after the last event of its flow is not published (counted in ``suppressed``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from rtstream.control.mqtt import EventKind

__all__ = ["FindingsEvents", "publish_findings_events"]


class _Plane(Protocol):
    def publish_event(self, kind: EventKind | str, /, **fields: Any) -> None: ...


class _Analysis(Protocol):
    def on_findings(self, callback: Any) -> Callable[[], None]: ...


class FindingsEvents:
    """The subscription :func:`publish_findings_events` makes: counters and ``close()``."""

    def __init__(self, plane: _Plane, analysis: _Analysis, min_interval: float) -> None:
        self.plane = plane
        self.min_interval = min_interval
        self.published = 0
        self.suppressed = 0
        self._last: dict[str, float] = {}
        self.close: Callable[[], None] = analysis.on_findings(self._on_findings)

    def _on_findings(self, fs: Any) -> None:
        if not fs.findings:
            return
        now = time.monotonic()
        last = self._last.get(fs.flow)
        if last is not None and now - last < self.min_interval:
            self.suppressed += 1
            return
        self._last[fs.flow] = now
        doc = fs.as_dict()
        self.plane.publish_event(
            EventKind.FINDINGS, flow=doc["flow"], rtp_timestamp=doc["rtp_timestamp"],
            width=doc["width"], height=doc["height"], latency_us=doc["latency_us"],
            findings=doc["findings"],
        )
        self.published += 1


def publish_findings_events(
    plane: _Plane, analysis: _Analysis, *, min_interval: float = 0.0
) -> FindingsEvents:
    """Publish a ``findings`` event per non-empty finding set of ``analysis`` on ``plane``.

    Parameters
    ----------
    plane : ControlPlane
        The node's plane (``node.plane`` of :func:`rtstream.control.wiring.control_for_receiver`).
    analysis : Analyzer
        What :meth:`rtstream.receiver.Receiver.analyze` returned.
    min_interval : float
        Seconds between two events of one flow at most (0: every set).
    """
    return FindingsEvents(plane, analysis, min_interval)
