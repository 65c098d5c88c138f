"""Counters of a receiver as typed data, and the dict that ``Receiver.stats`` has always been.

:func:`collect` reads the readers' and depacketizers' cumulative counters (cheap: no
per-packet work is added for stats) into a :class:`ReceiverStats`; :meth:`ReceiverStats.as_dict`
gives the stable dict that the CLI, the MQTT stats messages and the metrics exporter read
(keys in docs/mqtt.md; the totals are sums over the flows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtstream.receiver.readers import AudioReader, FlowReader, MetadataReader, VideoReader

__all__ = ["STAT_KEYS", "FlowStats", "LegStats", "ReceiverStats", "collect"]

#: Counters summed over flows into the receiver's totals.
STAT_KEYS = (
    "packets",
    "packets_lost",
    "packets_malformed",
    "reordered",
    "duplicates",
    "late",
    "frames_complete",
    "frames_incomplete",
    "grains_complete",
    "grains_dropped",
    "metadata_matched",
    "metadata_unmatched",
)

#: Totals that only some flows have (summed too, zero when no flow has them).
_EXTRA_TOTALS = ("frames_dropped_incomplete", "grains_unmatched", "audio_chunks", "restarts")


@dataclass(frozen=True, kw_only=True)
class LegStats:
    """Counters of one leg of an ST 2022-7 flow (:class:`~rtstream.proto.dup.DupMerger`).

    ``packets`` read on the leg; ``lost``: what this leg alone would have lost;
    ``recovered``: the part of that the other leg delivered; ``redundant``: its copies
    dropped because the other leg's came first; ``state``: ``up``, ``silent``,
    ``missing`` (nothing since the start) or ``starting``; ``silences``: times it went
    silent (or was found missing); ``filtered``: the part of ``redundant`` the kernel
    dropped before it was read (:mod:`rtstream.net.dupfilter`), in ``filtered_buffers``
    receive buffers (the kernel counts those as socket drops too).
    """

    leg: int
    mid: str
    packets: int
    lost: int
    recovered: int
    redundant: int
    state: str
    silences: int = 0
    filtered: int = 0
    filtered_buffers: int = 0

    def as_dict(self) -> dict[str, Any]:
        """``{"leg": 1, "mid": ..., "packets": ..., ...}``."""
        return {"leg": self.leg, "mid": self.mid, "packets": self.packets, "lost": self.lost,
                "recovered": self.recovered, "redundant": self.redundant, "state": self.state,
                "silences": self.silences, "filtered": self.filtered,
                "filtered_buffers": self.filtered_buffers}


def _legs(reader: FlowReader) -> tuple[LegStats, ...]:
    merge = reader.merge
    if merge is None:
        return ()
    reader.sync_legs()
    return tuple(
        LegStats(leg=i + 1, mid=reader.legs_media[i].mid or f"{reader.name}#{i + 1}",
                 packets=c.packets, lost=merge.leg_lost(i), recovered=merge.leg_recovered(i),
                 redundant=c.redundant, state=c.state.value, silences=c.silences,
                 filtered=c.filtered, filtered_buffers=c.filtered_buffers)
        for i, c in enumerate(merge.legs))


@dataclass(frozen=True, kw_only=True)
class FlowStats:
    """Counters of one flow. ``extra`` holds the counters of its kind, in order:

    video: ``frames_complete``, ``frames_incomplete``, ``frames_dropped_incomplete`` and,
    with a metadata flow, ``metadata_matched``, ``metadata_unmatched``,
    ``grains_unmatched``, ``restarts``; audio: ``audio_chunks``; metadata:
    ``grains_complete``, ``grains_dropped``.

    ``packets`` counts the datagrams read: of an ST 2022-7 flow those of both legs, less
    the copies the kernel dropped before they were read (each leg's ``filtered``).
    """

    kind: str
    packets: int
    packets_lost: int
    packets_malformed: int
    reordered: int
    duplicates: int
    late: int
    extra: dict[str, int] = field(default_factory=dict)
    legs: tuple[LegStats, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """``{"kind": ..., "packets": ..., ...}`` as in ``stats["flows"][name]``; an
        ST 2022-7 flow adds ``"legs": [{...}, {...}]`` (its ``packets_lost`` is the
        merged stream's)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "packets": self.packets,
            "packets_lost": self.packets_lost,
            "packets_malformed": self.packets_malformed,
            "reordered": self.reordered,
            "duplicates": self.duplicates,
            "late": self.late,
            **self.extra,
        }
        if self.legs:
            out["legs"] = [leg.as_dict() for leg in self.legs]
        return out


@dataclass(frozen=True, kw_only=True)
class ReceiverStats:
    """Counters of a whole receiver: its flows and what it delivered and stored."""

    flows: dict[str, FlowStats]
    frames_delivered: int
    audio_delivered: int
    consumer_drops: int
    dump_errors: int
    latency_p50_us: float | None
    latency_p99_us: float | None
    latency_max_us: float | None
    store: dict[str, int] | None
    snapshots: int
    renditions: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The dict of ``Receiver.stats``: totals over flows, then the receiver's own."""
        flows = {name: f.as_dict() for name, f in self.flows.items()}
        total: dict[str, Any] = dict.fromkeys(STAT_KEYS, 0)
        total.update(dict.fromkeys(_EXTRA_TOTALS, 0))
        for d in flows.values():
            for k, v in d.items():
                if k in total and isinstance(v, int):
                    total[k] += v
        total["frames_delivered"] = self.frames_delivered
        total["audio_delivered"] = self.audio_delivered
        total["consumer_drops"] = self.consumer_drops
        total["dump_errors"] = self.dump_errors
        total["latency_p50_us"] = self.latency_p50_us
        total["latency_p99_us"] = self.latency_p99_us
        total["latency_max_us"] = self.latency_max_us
        if self.store is not None:
            total["store"] = dict(self.store)
        total["snapshots"] = self.snapshots
        total.update(self.renditions)
        total["flows"] = flows
        return total


def _video(vf: VideoReader) -> FlowStats:
    s = vf.depkt.stats
    extra = {
        "frames_complete": s.frames_complete,
        "frames_incomplete": s.frames_incomplete,
        "frames_dropped_incomplete": vf.dropped_incomplete,
    }
    if vf.meta is not None:
        ps = vf.pairer.stats
        extra.update(
            metadata_matched=ps.metadata_matched,
            metadata_unmatched=ps.metadata_unmatched,
            grains_unmatched=ps.grains_unmatched,
            restarts=ps.restarts,
        )
    return FlowStats(kind="video", packets=vf.packets, packets_lost=s.lost,
                     packets_malformed=s.malformed, reordered=s.reordered,
                     duplicates=s.duplicates, late=s.late, extra=extra, legs=_legs(vf))


def _audio(af: AudioReader) -> FlowStats:
    s = af.depkt.stats
    return FlowStats(kind="audio", packets=af.packets, packets_lost=s.lost,
                     packets_malformed=s.malformed, reordered=s.reordered,
                     duplicates=s.duplicates, late=s.late + af.orderer.late,
                     extra={"audio_chunks": af.chunks}, legs=_legs(af))


def _metadata(mf: MetadataReader) -> FlowStats:
    s = mf.depkt.stats
    return FlowStats(kind="metadata", packets=mf.packets, packets_lost=s.lost,
                     packets_malformed=s.malformed, reordered=s.reordered,
                     duplicates=s.duplicates, late=s.late,
                     extra={"grains_complete": mf.grains_complete,
                            "grains_dropped": mf.grains_dropped}, legs=_legs(mf))


def collect(
    *,
    video: list[VideoReader],
    audio: list[AudioReader],
    metadata: list[MetadataReader],
    frames_delivered: int,
    audio_delivered: int,
    consumer_drops: int,
    dump_errors: int,
    latencies_ns: np.ndarray,
    store: dict[str, int] | None,
    snapshots: int,
    renditions: dict[str, int] | None = None,
) -> ReceiverStats:
    """The counters now (percentiles over the latency ring: two ``np.percentile`` calls).

    ``renditions``: the rendition counters (``renditions_seen``, ``stereo_pairs``,
    ``stereo_unpaired``, ``renditions_invalid``), top-level keys of the dict.
    """
    flows: dict[str, FlowStats] = {}
    for vf in video:
        flows[vf.name] = _video(vf)
    for af in audio:
        flows[af.name] = _audio(af)
    for mf in metadata:
        flows[mf.name] = _metadata(mf)
    p50 = p99 = peak = None
    if len(latencies_ns):
        lat = latencies_ns / 1000.0
        p50 = float(np.percentile(lat, 50))
        p99 = float(np.percentile(lat, 99))
        peak = float(lat.max())
    return ReceiverStats(
        flows=flows, frames_delivered=frames_delivered, audio_delivered=audio_delivered,
        consumer_drops=consumer_drops, dump_errors=dump_errors, latency_p50_us=p50,
        latency_p99_us=p99, latency_max_us=peak, store=store, snapshots=snapshots,
        renditions=dict(renditions or {}),
    )
