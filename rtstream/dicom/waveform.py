"""Stored audio: the General Audio Waveform instance of a received ST 2110-30 flow.

Theory of operation
-------------------
PS3.17 PPPP.8.1 leaves it to the application whether a stream's audio goes into the
video instance or into an instance of its own. We store it as its own **General Audio
Waveform** instance (SOP class 1.2.840.10008.5.1.4.1.1.9.4.2, PS3.3 Annex A "General
Audio Waveform IOD"), never inside the clip:

- the clip is Video Endoscopic/Photographic Image or Multi-frame True Color SC with an
  H.264 transfer syntax (PS3.5 §8.2.8), whose IODs describe pixel data only (no module
  carries audio, and PS3.3's real-time video IODs say outright that video instances do
  not include audio, A.32.9); whether an MPEG-4 stream may carry an audio track is left
  to the transfer syntax, and an archive that transcodes or renders the frames would
  silently lose it; a separate instance keeps the audio visible, validated and
  retrievable on its own;
- Basic Voice Audio (A.34.2) needs 8 kHz and so cannot hold a 48 kHz ST 2110-30 flow
  (spec/ps322.md §5).

What comes from where (PS3.17 PPPP.8.1):

- Patient, General Study, General Series minus identity, General Equipment and
  Acquisition Context: copied by keyword from the audio metadata flow's static part (the
  Real-Time Audio Waveform IOD, A.34.11), as a stored image copies its video's;
- Waveform Identification (C.10.8): Instance Number, Content Date/Time and Acquisition
  DateTime from the first sample's capture instant; Referenced Instance Sequence names
  the RTV audio instance it was recorded from, as (121320, DCM, "Uncompressed
  predecessor") like a stored clip names its RTV video instance, and, with a clip, the
  clip recorded at the same time as (122400, DCM, "Simultaneously Acquired"). PS3.16's
  CID 7004 (waveform purposes) only has "Simultaneous <kind of waveform>" codes for an
  image pointing at a waveform, none for a waveform pointing at video;
- Waveform (C.10.9): one multiplex group; its channels as the flow sent them, samples
  interleaved, 16-bit signed (Waveform Sample Interpretation SS); L24 samples are
  rounded to 16 bits (the General Audio Waveform constraints allow 8 and 16 bits only;
  the loss is said in the Multiplex Group Label);
- Synchronization (C.7.4.2): the static part's frame of reference and trigger, so the
  waveform lines up with the video stored from the same stream.

Group 0006 is real-time only (PS3.3 C.7.6.27 note) and is never copied. Builders are
pure; :func:`rtstream.dicom.stored.save_new` writes a result without replacing a file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from rtstream.dicom.realtime import (
    code_item,
    dicom_dt,
)
from rtstream.dicom.stored import (
    _contributing_equipment,
    _copy_static,
    _new_dataset,
    _stamp_times,
)
from rtstream.errors import LocalProtocolError
from rtstream.proto.clock import PtpTimestamp
from rtstream.proto.formats import AudioEncoding, AudioFormat
from rtstream.proto.rtv_metadata import RTV_AUDIO_WAVEFORM

GENERAL_AUDIO_WAVEFORM_STORAGE = "1.2.840.10008.5.1.4.1.1.9.4.2"
"""General Audio Waveform Storage (PS3.4 Table B.5-1)."""

AMBIENT_ROOM = ("109112", "DCM", "Ambient room environment")
"""CID 3000 Audio Channel Source of a room microphone (the only honest default)."""

SOURCE_PURPOSE = ("121320", "DCM", "Uncompressed predecessor")
"""Purpose naming the real-time instance the samples were recorded from (CID 7202)."""

CLIP_PURPOSE = ("122400", "DCM", "Simultaneously Acquired")
"""Purpose naming the clip recorded at the same time."""

AUDIO_SERIES_DESCRIPTION = "rtstream audio"

#: Channel labels by channel count (ST 2110-30 channel-order ST = left, right).
_LABELS = {1: ("M",), 2: ("L", "R")}


def to_int16(samples: np.ndarray, encoding: AudioEncoding) -> tuple[np.ndarray, bool]:
    """Samples as int16 for Waveform Data, and whether precision was lost.

    L16 passes through; L24 is rounded to its top 16 bits (clipped at full scale).
    """
    a = np.asarray(samples)
    if encoding is AudioEncoding.L16:
        return a.astype("<i2"), False
    rounded = np.right_shift(a.astype(np.int64) + 128, 8)
    return np.clip(rounded, -32768, 32767).astype("<i2"), True


def build_audio_waveform(
    samples: np.ndarray,
    fmt: AudioFormat,
    static: Dataset,
    *,
    rtv_sop_instance_uid: str,
    origin: PtpTimestamp,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
    sop_instance_uid: str | None = None,
    clip: Dataset | None = None,
    channel_source: tuple[str, str, str] = AMBIENT_ROOM,
) -> Dataset:
    """A General Audio Waveform instance of recorded ST 2110-30 samples.

    Parameters
    ----------
    samples : numpy.ndarray
        ``(n, channels)`` integers as received (L16 or L24 range), in time order.
    fmt : AudioFormat
        The flow's format (rate, channels, encoding).
    static : pydicom.Dataset
        The audio metadata flow's latest static part (Real-Time Audio Waveform IOD), or
        a video flow's when the audio came without metadata.
    rtv_sop_instance_uid : str
        The RTV instance the samples were received on.
    origin : PtpTimestamp
        Capture instant of the first sample.
    clip : pydicom.Dataset or None
        The clip stored from the same recording; referenced when given.

    Raises
    ------
    LocalProtocolError
        For no samples, a shape that does not match ``fmt``, or more channels than the
        IOD allows (1 or 2).
    """
    a = np.asarray(samples)
    if a.ndim != 2 or a.shape[1] != fmt.channels:
        raise LocalProtocolError(f"samples: shape {a.shape}, expected (n, {fmt.channels})")
    if not len(a):
        raise LocalProtocolError("samples: no audio was recorded")
    if fmt.channels not in _LABELS:
        raise LocalProtocolError(
            f"audio: {fmt.channels} channels; a General Audio Waveform holds 1 or 2")
    if len(a) > 0xFFFFFFFF:
        raise LocalProtocolError("audio: more samples than Number of Waveform Samples holds")
    from pydicom.uid import generate_uid

    uid = sop_instance_uid or generate_uid()
    ds = _new_dataset(GENERAL_AUDIO_WAVEFORM_STORAGE, uid, ExplicitVRLittleEndian)
    _copy_static(static, ds, "AU")
    for keyword in ("ICCProfile", "ColorSpace"):  # image-only modules
        if keyword in ds:
            del ds[keyword]
    # General Series (C.7.3.1)
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = AUDIO_SERIES_DESCRIPTION
    captured, created = _stamp_times(ds, static, origin)
    # Synchronization (C.7.4.2): the stream's own frame of reference
    ds.SynchronizationFrameOfReferenceUID = str(
        static.get("SynchronizationFrameOfReferenceUID") or generate_uid())
    ds.SynchronizationTrigger = str(static.get("SynchronizationTrigger") or "NO TRIGGER")
    ds.AcquisitionTimeSynchronized = str(static.get("AcquisitionTimeSynchronized") or "N")
    if static.get("TimeSource"):
        ds.TimeSource = static.TimeSource
    if static.get("TimeDistributionProtocol"):
        ds.TimeDistributionProtocol = static.TimeDistributionProtocol
    # Waveform Identification (C.10.8)
    ds.InstanceNumber = instance_number
    ds.ContentDate = captured.strftime("%Y%m%d")
    ds.ContentTime = captured.strftime("%H%M%S.%f")
    ds.AcquisitionDateTime = dicom_dt(captured)
    ds.ReferencedInstanceSequence = _references(static, rtv_sop_instance_uid, clip)
    # Waveform (C.10.9)
    data, lossy = to_int16(a, fmt.encoding)
    group = Dataset()
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = fmt.channels
    group.NumberOfWaveformSamples = len(a)
    group.SamplingFrequency = fmt.sample_rate
    label = f"{fmt.encoding.value} {fmt.sample_rate // 1000}KHZ"  # SH: 16 characters
    group.MultiplexGroupLabel = (label + " AS 16") if lossy else label
    channels = []
    for i, name in enumerate(_LABELS[fmt.channels]):
        ch = Dataset()
        ch.WaveformChannelNumber = i + 1
        ch.ChannelLabel = name
        ch.ChannelSourceSequence = [code_item(*channel_source)]
        ch.ChannelSampleSkew = "0"  # channels sampled together (C.10.9.1.4.2)
        ch.WaveformBitsStored = 16
        channels.append(ch)
    group.ChannelDefinitionSequence = channels
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.WaveformData = np.ascontiguousarray(data).tobytes()
    ds.WaveformSequence = [group]
    _contributing_equipment(
        ds, created, f"DICOM-RTV audio flow (ST 2110-30 {fmt.encoding.value}, "
        f"{fmt.sample_rate} Hz, {fmt.channels} ch) stored as General Audio Waveform")
    return ds


def _references(static: Dataset, rtv_uid: str, clip: Dataset | None) -> list[Dataset]:
    """Referenced Instance Sequence (C.10.8): the RTV instance, and the clip if any."""
    rtv_class = str(static.get("SOPClassUID") or RTV_AUDIO_WAVEFORM)
    refs: list[tuple[str, str, tuple[str, str, str]]] = [(rtv_class, rtv_uid, SOURCE_PURPOSE)]
    if clip is not None:
        refs.append((str(clip.SOPClassUID), str(clip.SOPInstanceUID), CLIP_PURPOSE))
    out = []
    for cls, inst, purpose in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = cls
        item.ReferencedSOPInstanceUID = inst
        item.PurposeOfReferenceCodeSequence = [code_item(*purpose)]
        out.append(item)
    return out


def concatenate(chunks: Sequence[np.ndarray], channels: int) -> np.ndarray:
    """Received chunks as one ``(n, channels)`` array (empty when there are none)."""
    if not chunks:
        return np.zeros((0, channels), np.int32)
    return np.concatenate([np.asarray(c).reshape(-1, channels) for c in chunks])


__all__ = [
    "AMBIENT_ROOM",
    "GENERAL_AUDIO_WAVEFORM_STORAGE",
    "build_audio_waveform",
    "concatenate",
    "to_int16",
]
