"""ST 2110-30 (AES67) linear PCM audio: L16/L24 packetizer and depacketizer.

Theory of operation
-------------------
The payload of an ST 2110-30 packet is a run of sample frames, each holding one sample
per channel, channels interleaved, every sample a big-endian two's complement integer of
16 (L16, RFC 3551 §4.5.11) or 24 bits (L24, RFC 3190 §4). The RTP clock is the sample
rate and a packet's timestamp is the instant of its first sample frame; a packet holds
``sample_rate x packet time`` frames (48 at 48 kHz and 1 ms, level A; 6 at 125 µs).

:class:`AudioPacketizer` turns a block of many packets' worth of samples into one
:class:`~rtstream.proto.rfc4175.PacketBatch` with numpy stores only: the headers of all
packets at once (timestamps advance by ``samples_per_packet`` per row) and the payload
as one big-endian byte view of the whole block.

:class:`AudioDepacketizer` reads a batch of received datagrams the same way: headers as
arrays, header lengths (CSRCs, extension, padding) computed per row, payload bytes
gathered with one fancy index. It accepts any payload that is a whole number of sample
frames (third-party senders often send more than 1 ms per packet). Sequence numbers are
extended, and duplicates and reordering counted, by one
:class:`~rtstream.proto.rtp.SequenceTracker` (RFC 3550 A.1) a batch at a time; a batch
of two or more packets all far behind the highest (``MAX_MISORDER``) restarts it. Packets
are ordered by their extended sequence number within a batch; runs that are contiguous in
sequence and in timestamp become one :class:`AudioChunkEvent`. ``lost_before`` counts the
packets missing just before a chunk, and ``stats.lost`` adds them up (what the emitted
audio lacks). A packet whose extended sequence number is at or below the highest one
already emitted is too late: it is a duplicate when that very number was seen, else
counted as late, and dropped in both cases.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from rtstream.errors import LocalProtocolError
from rtstream.proto.formats import AudioEncoding, AudioFormat
from rtstream.proto.rfc4175 import PacketBatch
from rtstream.proto.rtp import (
    RTP_HEADER_SIZE,
    SequenceTracker,
    read_rtp_headers,
    write_rtp_headers,
)

log = logging.getLogger(__name__)

_RANGE = {
    AudioEncoding.L16: (-(1 << 15), (1 << 15) - 1),
    AudioEncoding.L24: (-(1 << 23), (1 << 23) - 1),
}
_SEEN_WINDOW = 4096
_MAX_MISORDER = 100


def encode_pcm(samples: np.ndarray, encoding: AudioEncoding) -> np.ndarray:
    """Interleaved big-endian payload bytes of ``(n, channels)`` int32 samples.

    Returns
    -------
    numpy.ndarray
        ``(n, channels * sample_bytes)`` uint8.
    """
    n, ch = samples.shape
    if encoding is AudioEncoding.L16:
        return samples.astype(">i2").view(np.uint8).reshape(n, ch * 2)
    wide = samples.astype(">i4").view(np.uint8).reshape(n, ch, 4)
    return np.ascontiguousarray(wide[:, :, 1:]).reshape(n, ch * 3)


def decode_pcm(payload: np.ndarray, encoding: AudioEncoding, channels: int) -> np.ndarray:
    """``(n, channels)`` int32 samples from interleaved big-endian payload bytes."""
    flat = np.ascontiguousarray(payload).reshape(-1)
    if encoding is AudioEncoding.L16:
        return flat.view(">i2").astype(np.int32).reshape(-1, channels)
    b = flat.reshape(-1, 3).astype(np.int32)
    v = (b[:, 0] << 16) | (b[:, 1] << 8) | b[:, 2]
    return ((v ^ 0x800000) - 0x800000).reshape(-1, channels)


class AudioPacketizer:
    """Packetize blocks of PCM samples into ST 2110-30 RTP datagrams.

    Parameters
    ----------
    fmt : AudioFormat
    ssrc : int
    payload_type : int
        Dynamic payload type, 97 by rtstream's convention.
    sequence : int
        Sequence number of the first packet.
    """

    def __init__(
        self, fmt: AudioFormat, *, ssrc: int, payload_type: int = 97, sequence: int = 0
    ) -> None:
        if not 0 <= ssrc <= 0xFFFFFFFF:
            raise LocalProtocolError(f"ssrc: {ssrc} is outside 0..4294967295")
        if not 0 <= payload_type <= 127:
            raise LocalProtocolError(f"payload_type: {payload_type} is outside 0..127")
        self.fmt = fmt
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.sequence = sequence & 0xFFFF
        self.samples_per_packet = fmt.samples_per_packet
        self.packet_size = RTP_HEADER_SIZE + fmt.packet_payload_bytes
        self._buf = np.zeros((0, self.packet_size), np.uint8)

    def packetize(self, samples: np.ndarray, rtp_timestamp: int) -> PacketBatch:
        """Packetize ``samples`` starting at ``rtp_timestamp``.

        Parameters
        ----------
        samples : numpy.ndarray
            ``(n, channels)`` integers in the L16 or L24 range; ``n`` a multiple of
            ``samples_per_packet``.
        rtp_timestamp : int
            RTP timestamp of the first sample; packet ``i`` gets
            ``rtp_timestamp + i * samples_per_packet`` (mod 2**32).

        Returns
        -------
        PacketBatch
            One row per packet; the buffer is reused by the next call.
        """
        fmt = self.fmt
        if samples.ndim != 2 or samples.shape[1] != fmt.channels:
            raise LocalProtocolError(
                f"samples: shape {samples.shape}, expected (n, {fmt.channels})"
            )
        if not np.issubdtype(samples.dtype, np.integer):
            raise LocalProtocolError(f"samples: dtype {samples.dtype} is not an integer type")
        n = samples.shape[0]
        spp = self.samples_per_packet
        if n % spp:
            raise LocalProtocolError(f"samples: {n} frames is not a multiple of {spp} per packet")
        lo, hi = _RANGE[fmt.encoding]
        if n and (int(samples.min()) < lo or int(samples.max()) > hi):
            raise LocalProtocolError(
                f"samples: values outside {lo}..{hi} cannot be sent as {fmt.encoding.value}"
            )
        k = n // spp
        if self._buf.shape[0] < k:
            self._buf = np.zeros((k, self.packet_size), np.uint8)
        out = self._buf[:k]
        if k:
            write_rtp_headers(
                out,
                payload_type=self.payload_type,
                sequence=self.sequence,
                timestamp=0,
                ssrc=self.ssrc,
                marker_last=False,
            )
            ts = (rtp_timestamp + spp * np.arange(k, dtype=np.int64)) & 0xFFFFFFFF
            out[:, 4:8] = ts.astype(">u4").view(np.uint8).reshape(k, 4)
            out[:, RTP_HEADER_SIZE:] = encode_pcm(samples, fmt.encoding).reshape(k, -1)
        self.sequence = (self.sequence + k) & 0xFFFF
        return PacketBatch(out, np.full(k, self.packet_size, np.int64))


@dataclass
class AudioChunkEvent:
    """Samples of consecutive received packets.

    Attributes
    ----------
    ssrc : int
    rtp_timestamp : int
        RTP timestamp of the first sample frame.
    samples : numpy.ndarray
        ``(n, channels)`` int32.
    lost_before : int
        Packets missing (by sequence number) between the previous chunk and this one.
    packets : int
        Packets this chunk was made of.
    first_seq : int
        Extended sequence number of the first of them.
    """

    ssrc: int
    rtp_timestamp: int
    samples: np.ndarray
    lost_before: int
    packets: int = 0
    first_seq: int = 0


@dataclass
class AudioStats:
    """Counters of an :class:`AudioDepacketizer`."""

    packets: int = 0
    lost: int = 0
    duplicates: int = 0
    reordered: int = 0
    late: int = 0
    malformed: int = 0
    wrong_payload_type: int = 0
    ssrc_changes: int = 0
    resyncs: int = 0
    chunks: int = 0
    samples: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return asdict(self)


class AudioDepacketizer:
    """Turn batches of received ST 2110-30 datagrams into :class:`AudioChunkEvent`.

    Parameters
    ----------
    fmt : AudioFormat
        Encoding and channel count of the flow (from its SDP).
    payload_type : int or None
        Accept only this payload type; None accepts any.
    """

    def __init__(self, fmt: AudioFormat, *, payload_type: int | None = None) -> None:
        self.fmt = fmt
        self.payload_type = payload_type
        self.frame_bytes = fmt.channels * fmt.encoding.sample_bytes
        self.stats = AudioStats()
        self._seq = SequenceTracker(window=_SEEN_WINDOW)
        self._old_repeats = 0  # duplicates too far below the highest for the tracker

    def feed(self, batch: np.ndarray, lengths: np.ndarray, now: int) -> list[AudioChunkEvent]:
        """Consume received datagrams.

        Parameters
        ----------
        batch : numpy.ndarray
            ``(n, stride)`` uint8, one datagram per row.
        lengths : numpy.ndarray
            ``(n,)`` bytes used in each row.
        now : int
            Receive time (TAI ns); unused for now, kept for the common feed signature.

        Returns
        -------
        list of AudioChunkEvent
            In sequence order.
        """
        del now
        n = int(lengths.shape[0])
        if n == 0:
            return []
        if batch.dtype != np.uint8 or batch.ndim != 2 or batch.shape[0] < n:
            raise LocalProtocolError("batch: need a 2-D uint8 array with a row per length")
        batch = batch[:n]
        lengths = lengths.astype(np.int64)
        stride = batch.shape[1]
        if stride < RTP_HEADER_SIZE:
            self.stats.malformed += n
            return []
        h = read_rtp_headers(batch)
        rows = np.arange(n)
        ok = (lengths >= RTP_HEADER_SIZE) & (h.version == 2) & (lengths <= stride)
        hl = RTP_HEADER_SIZE + 4 * h.csrc_count.astype(np.int64)
        ext = h.extension & ok
        ext_len_pos = np.minimum(hl + 2, stride - 2)
        words = (batch[rows, ext_len_pos].astype(np.int64) << 8) | batch[rows, ext_len_pos + 1]
        hl = hl + np.where(ext, 4 + 4 * words, 0)
        ok &= ~ext | (h.csrc_count * 4 + RTP_HEADER_SIZE + 4 <= lengths)
        ok &= hl <= lengths
        pad = np.where(
            h.padding & ok, batch[rows, np.clip(lengths - 1, 0, stride - 1)].astype(np.int64), 0
        )
        ok &= ~h.padding | (pad > 0)
        plen = lengths - hl - pad
        ok &= (plen > 0) & (plen % self.frame_bytes == 0)
        malformed = int(n - ok.sum())
        if self.payload_type is not None:
            wrong = ok & (h.payload_type != self.payload_type)
            self.stats.wrong_payload_type += int(wrong.sum())
            ok &= ~wrong
        if malformed:
            self.stats.malformed += malformed
            log.debug("dropped %d malformed audio datagrams", malformed)
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return []
        events: list[AudioChunkEvent] = []
        ssrc = h.ssrc[idx]
        # split into runs of one SSRC (almost always a single run)
        cuts = np.flatnonzero(ssrc[1:] != ssrc[:-1]) + 1
        for part in np.split(idx, cuts):
            events.extend(
                self._feed_stream(
                    batch,
                    part,
                    h.sequence[part],
                    h.timestamp[part],
                    int(h.ssrc[part[0]]),
                    hl[part],
                    plen[part],
                )
            )
        return events

    def _feed_stream(
        self,
        batch: np.ndarray,
        rows: np.ndarray,
        seq: np.ndarray,
        ts: np.ndarray,
        ssrc: int,
        hl: np.ndarray,
        plen: np.ndarray,
    ) -> list[AudioChunkEvent]:
        tracker = self._seq
        if tracker.ssrc != ssrc:
            if tracker.ssrc is not None:
                self.stats.ssrc_changes += 1
                log.debug("audio SSRC changed from %#x to %#x", tracker.ssrc, ssrc)
            tracker.restart(ssrc)
        ext = tracker.extend(seq)
        if tracker.restarted(ext, max_misorder=_MAX_MISORDER):
            # every packet far behind what was emitted: the sender restarted its
            # sequence (RFC 3550 A.1 resynchronizes after two such packets)
            log.debug("audio sequence restarted at %d (was %s)", int(seq[0]), tracker.highest)
            self.stats.resyncs += 1
            tracker.restart(ssrc)
            ext = tracker.extend(seq)
        prev = tracker.highest  # highest emitted: every packet kept so far is at or below it
        verdict = tracker.record(ext)
        order = np.argsort(ext, kind="stable")
        ext, rows, ts, hl, plen = ext[order], rows[order], ts[order], hl[order], plen[order]
        dup = verdict.duplicate[order]
        # a number repeated within a batch that jumped more than the window above it is
        # new to the tracker (too old to tell) but must not be emitted twice
        again = ~dup & np.concatenate(([False], ext[1:] == ext[:-1]))
        if again.any():
            self._old_repeats += int(again.sum())
            dup |= again
        self.stats.reordered = tracker.reordered
        self.stats.duplicates = tracker.duplicates + self._old_repeats
        late = ~dup & (ext <= (prev if prev is not None else ext.min() - 1))
        self.stats.late += int(late.sum())
        keep = ~dup & ~late
        if not keep.all():
            ext, rows, ts, hl, plen = ext[keep], rows[keep], ts[keep], hl[keep], plen[keep]
        if ext.size == 0:
            return []
        self.stats.packets += int(ext.size)
        frames = plen // self.frame_bytes
        # gather every payload byte with one index
        total = int(plen.sum())
        starts = rows * batch.shape[1] + hl
        offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(plen)[:-1])), plen)
        flat = batch.reshape(-1)[offsets + np.arange(total)]
        samples = decode_pcm(flat, self.fmt.encoding, self.fmt.channels)
        # chunk boundaries: a gap in sequence or a timestamp discontinuity
        gap = np.diff(ext) - 1
        ts_break = ((ts[1:] - ts[:-1]) & 0xFFFFFFFF) != frames[:-1]
        bounds = np.flatnonzero((gap != 0) | ts_break) + 1
        lost_first = 0 if prev is None else int(ext[0] - prev - 1)
        frame_starts = np.concatenate(([0], np.cumsum(frames)))
        pkt_edges = np.concatenate(([0], bounds, [ext.size]))
        events = []
        for a, b in zip(pkt_edges[:-1], pkt_edges[1:], strict=True):
            lost = lost_first if a == 0 else int(gap[a - 1])
            self.stats.lost += lost
            events.append(
                AudioChunkEvent(
                    ssrc=ssrc,
                    rtp_timestamp=int(ts[a]),
                    samples=samples[frame_starts[a] : frame_starts[b]],
                    lost_before=lost,
                    packets=int(b - a),
                    first_seq=int(ext[a]),
                )
            )
        self.stats.chunks += len(events)
        self.stats.samples += int(frames.sum())
        return events
