"""Configuration of a :class:`~rtstream.receiver.Receiver`: what to receive and where it goes."""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rtstream.dicom.context import StreamContext
from rtstream.errors import ConfigError
from rtstream.pacs.store import TlsSettings

__all__ = ["IncompletePolicy", "ReceiverConfig", "default_outbox", "identity_context"]


class IncompletePolicy(enum.Enum):
    """What to do with a frame that lost packets."""

    DROP = "drop"
    DELIVER = "deliver"


def default_outbox() -> Path:
    """``$XDG_STATE_HOME/rtstream/outbox``: where stored instances wait for the archive."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "rtstream" / "outbox"


def identity_context(context: Mapping[str, str], *, key: str = "context") -> StreamContext:
    """The :class:`~rtstream.dicom.context.StreamContext` of a site's identity mapping.

    The keys are StreamContext's fields; ``patient_id`` is required (an archive files by
    it) and a missing ``patient_name`` is empty, never the test source's placeholder.
    Each call makes a new Study Instance UID unless the mapping gives one.

    Raises
    ------
    ConfigError
        For an unknown key, a non-text value, no ``patient_id``, or a value that is not
        valid for its DICOM VR (the message names ``context.<key>``).
    """
    names = {f.name for f in dataclasses.fields(StreamContext)}
    for k, v in context.items():
        if k not in names:
            raise ConfigError(f"{key}.{k}", v, f"one of {', '.join(sorted(names))}")
        if not isinstance(v, str):
            raise ConfigError(f"{key}.{k}", v, "text")
    if not context.get("patient_id"):
        raise ConfigError(f"{key}.patient_id", context.get("patient_id"),
                          "a Patient ID (--patient-id) when the site gives an identity")
    values = {"patient_name": "", **context}
    return StreamContext(**values)


@dataclass(frozen=True, kw_only=True)
class ReceiverConfig:
    """Configuration of a :class:`Receiver`.

    Parameters
    ----------
    sdp : str
        Path of an SDP file, or an ``http://``/``https://`` URL to GET it from.
    frames : int or None
        Stop after this many video items were delivered.
    duration : float or None
        Stop after this many seconds.
    incomplete : IncompletePolicy
        Drop frames that lost packets, or deliver them flagged (``complete=False`` and
        ``missing_rows``).
    pairing_wait_frames : float
        How long a frame waits for its metadata grain (and a grain for its frame), in
        frame periods of the video flow.
    audio_wait_ms : float
        How long audio chunks may be held to put late ones back in order.
    rcvbuf : int or None
        Requested ``SO_RCVBUF`` per socket in bytes; None (default): 32 MiB, or for a
        video flow room for 8 of its frames when that is more (1080p 10-bit: 41 MB,
        2160p 10-bit: 166 MB), so a reader late by a hundred ms loses nothing. Above
        ``net.core.rmem_max`` it needs root (``SO_RCVBUFFORCE``), else a warning names
        that limit.
    interface : str or None
        Interface (name or IPv4 address) for multicast joins.
    bind_address : str or None
        Receive unicast flows on this local address instead of the SDP's.
    dump_frames, dump_metadata : Path or None
        Write each complete frame (wire pgroup order) as ``<rtp-timestamp>.raw`` and each
        grain as received as ``<rtp-timestamp>.dcm``; existing files are never replaced.
    snapshot_every : float or None
        Take a snapshot every this many seconds.
    snapshot_stereo : bool
        Snapshots (``snapshot_every``, the terminal's 's' key, the MQTT ``snapshot``
        command unless it says otherwise) store the latest stereo pair of a stereo
        rendition as one two-frame instance (``--stereo``, docs/renditions.md) instead
        of one view's frame. Refused at start for an SDP without two video flows and a
        rendition flow.
    record : float or None
        Record a clip of this many seconds from the first frame on, then store it.
    record_audio : float or None
        Record this many seconds of the first audio flow into a General Audio Waveform
        instance, then store it (``--record-audio``).
    record_max_frames : int
        Bound on the frames one clip may hold in memory.
    flush_timeout : float
        At close, the most seconds the outbox gets to drain; what is left stays queued
        on disk and is sent at the next start (``--flush-timeout``).
    store : str or None
        ``AET@HOST:PORT`` of the archive for C-STORE.
    store_dir : Path or None
        Save stored instances into this folder instead of sending them.
    outbox : Path or None
        The persistent outbox (default ``$XDG_STATE_HOME/rtstream/outbox``).
    calling_aet : str
        Our AE title for C-STORE.
    store_tls : TlsSettings or None
        DICOM TLS for the C-STORE association (PS3.15 Annex B.1); None for plain TCP.
    queue_size : int
        Items buffered for a slow consumer; beyond it the oldest are dropped (counted).
    context : dict or None
        The identity the site gives a stream without DICOM-RTV metadata (a third-party
        ST 2110 SDP): keys of :class:`~rtstream.dicom.context.StreamContext`
        (``patient_id`` required, ``patient_name``, ``accession_number``,
        ``study_description``, ``study_instance_uid``, ...), from ``--patient-id``,
        ``--patient-name``, ``--accession-number``, ``--study-description``. Snapshots and
        clips of such a stream are refused without it; flows with metadata keep their
        own identity. One study per receiving session unless it names one.
    interface2 : str or None
        ST 2022-7: interface for the multicast joins of the second legs (``--interface2``);
        default ``interface``.
    dup_skew_ms : float
        ST 2022-7: path delay difference between the legs tolerated without loss; a
        packet missing on the leading leg waits at most this long for the other's copy
        (the latency this costs, only behind such a packet: docs/performance.md).
    dup_kernel_filter : bool
        ST 2022-7: drop the second copies of video packets in the kernel, before they are
        read (an eBPF socket filter; needs CAP_BPF, else the merge drops them, as with
        ``false``; ``--no-dup-kernel-filter``). The copies are counted either way.
    """

    sdp: str
    frames: int | None = None
    duration: float | None = None
    incomplete: IncompletePolicy = IncompletePolicy.DROP
    pairing_wait_frames: float = 2.0
    audio_wait_ms: float = 2.0
    rcvbuf: int | None = None
    interface: str | None = None
    bind_address: str | None = None
    dump_frames: Path | None = None
    dump_metadata: Path | None = None
    snapshot_every: float | None = None
    snapshot_stereo: bool = False
    record: float | None = None
    record_max_frames: int = 1800
    record_audio: float | None = None
    store: str | None = None
    store_dir: Path | None = None
    outbox: Path | None = None
    calling_aet: str = "RTSTREAM"
    store_tls: TlsSettings | None = None
    queue_size: int = 256
    context: dict[str, str] | None = None
    flush_timeout: float = 5.0
    interface2: str | None = None
    dup_skew_ms: float = 10.0
    dup_kernel_filter: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.sdp, str) or not self.sdp:
            raise ConfigError("sdp", self.sdp, "an SDP file path or an http:// URL")
        if self.frames is not None and self.frames < 1:
            raise ConfigError("frames", self.frames, "a positive number of frames")
        if self.duration is not None and not self.duration > 0:
            raise ConfigError("duration", self.duration, "a positive number of seconds")
        if not isinstance(self.incomplete, IncompletePolicy):
            try:
                object.__setattr__(self, "incomplete", IncompletePolicy(self.incomplete))
            except ValueError:
                raise ConfigError("incomplete", self.incomplete, "'drop' or 'deliver'") from None
        if not 0 <= self.pairing_wait_frames <= 1000:
            raise ConfigError("pairing_wait_frames", self.pairing_wait_frames, "0..1000 frames")
        if not 0 <= self.audio_wait_ms <= 1000:
            raise ConfigError("audio_wait_ms", self.audio_wait_ms, "0..1000 ms")
        if not 0 <= self.dup_skew_ms <= 500:
            raise ConfigError("dup_skew_ms", self.dup_skew_ms, "0..500 ms (ST 2022-7 leg skew)")
        if not isinstance(self.dup_kernel_filter, bool):
            raise ConfigError("dup_kernel_filter", self.dup_kernel_filter, "true or false")
        if self.rcvbuf is not None and self.rcvbuf < 4096:
            raise ConfigError("rcvbuf", self.rcvbuf, "at least 4096 bytes")
        for key in ("snapshot_every", "record", "record_audio"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ConfigError(key, value, "a positive number of seconds")
        if not isinstance(self.snapshot_stereo, bool):
            raise ConfigError("snapshot_stereo", self.snapshot_stereo, "true or false")
        if self.record_max_frames < 1:
            raise ConfigError("record_max_frames", self.record_max_frames, "at least 1")
        if self.queue_size < 1:
            raise ConfigError("queue_size", self.queue_size, "at least 1")
        if not 0 <= self.flush_timeout <= 3600:
            raise ConfigError("flush_timeout", self.flush_timeout, "0..3600 seconds")
        for key in ("dump_frames", "dump_metadata", "store_dir", "outbox"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, Path(value))
        if self.store is not None and self.store_dir is not None:
            raise ConfigError("store", self.store, "either --store or --store-dir, not both")
        if self.store is not None:
            from rtstream.pacs.store import parse_store_target

            parse_store_target(self.store)
        if self.context is not None:
            if not isinstance(self.context, Mapping):
                raise ConfigError("context", self.context, "a table of patient/study keys")
            object.__setattr__(self, "context", dict(self.context))
            identity_context(self.context)  # validate now; the session makes its own

    @property
    def stores(self) -> bool:
        """True when stored instances have somewhere to go."""
        return self.store is not None or self.store_dir is not None


