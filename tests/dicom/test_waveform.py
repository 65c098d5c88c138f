"""The General Audio Waveform builder: samples exact (L16) or rounded (L24), identity and
references from the static part, refusals named, dciodvfy clean."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

from rtstream.dicom.context import StreamContext
from rtstream.dicom.realtime import BulkFlowRef, RtvSop, static_part
from rtstream.dicom.waveform import (
    GENERAL_AUDIO_WAVEFORM_STORAGE,
    build_audio_waveform,
    to_int16,
)
from rtstream.errors import LocalProtocolError
from rtstream.proto.clock import PtpTimestamp
from rtstream.proto.formats import AudioEncoding, AudioFormat
from tests.net.test_audio_archive import check_waveform_with_dciodvfy

ORIGIN = PtpTimestamp(1_700_000_000, 5)


def fmt(encoding: AudioEncoding, channels: int) -> AudioFormat:
    return AudioFormat(encoding=encoding, sample_rate=48_000, channels=channels, ptime_us=1000,
                       channel_order="SMPTE2110.(ST)" if channels == 2 else "SMPTE2110.(M)")


def audio_static(f: AudioFormat) -> object:
    bulk = BulkFlowRef(source_id=uuid.uuid4(), flow_id=uuid.uuid4(),
                       transfer_syntax_uid=f.transfer_syntax_uid, sampling_rate=f.sample_rate)
    return static_part(RtvSop.AUDIO, StreamContext(patient_name="Doe^Jane", patient_id="P-1"),
                       sop_instance_uid=generate_uid(), bulk_flows=[bulk])


def build(samples: np.ndarray, f: AudioFormat, **kw: object) -> object:
    static = audio_static(f)
    return build_audio_waveform(samples, f, static, rtv_sop_instance_uid=static.SOPInstanceUID,  # type: ignore[attr-defined]
                                origin=ORIGIN, series_instance_uid="1.2.3.4", series_number=7,
                                instance_number=2, **kw)  # type: ignore[arg-type]


def test_l16_mono_is_bit_exact(tmp_path: Path) -> None:
    f = fmt(AudioEncoding.L16, 1)
    samples = np.array([[-32768], [-1], [0], [1], [32767]] * 96, np.int32)
    ds = build(samples, f)
    assert ds.SOPClassUID == GENERAL_AUDIO_WAVEFORM_STORAGE and ds.Modality == "AU"  # type: ignore[attr-defined]
    group = ds.WaveformSequence[0]  # type: ignore[attr-defined]
    assert group.NumberOfWaveformChannels == 1 and group.NumberOfWaveformSamples == 480
    assert group.MultiplexGroupLabel == "L16 48KHZ"
    assert [c.ChannelLabel for c in group.ChannelDefinitionSequence] == ["M"]
    data = np.frombuffer(group.WaveformData, "<i2").reshape(-1, 1)
    assert np.array_equal(data, samples)
    assert ds.PatientID == "P-1" and ds.SeriesNumber == 7 and ds.InstanceNumber == 2  # type: ignore[attr-defined]
    assert "ICCProfile" not in ds and not any(t.group == 0x0006 for t in ds.keys())  # type: ignore[attr-defined]
    check_waveform_with_dciodvfy(ds, tmp_path)  # type: ignore[arg-type]


def test_l24_is_rounded_to_16_bits_and_says_so() -> None:
    f = fmt(AudioEncoding.L24, 2)
    samples = np.array([[0x7FFFFF, -0x800000], [0x80, -0x81], [0x17F, 0x180]], np.int32)
    out, lossy = to_int16(samples, AudioEncoding.L24)
    assert lossy
    assert out.tolist() == [[32767, -32768], [1, -1], [1, 2]]
    ds = build(samples, f)
    group = ds.WaveformSequence[0]  # type: ignore[attr-defined]
    assert group.MultiplexGroupLabel == "L24 48KHZ AS 16"
    assert [c.ChannelLabel for c in group.ChannelDefinitionSequence] == ["L", "R"]
    assert np.frombuffer(group.WaveformData, "<i2").tolist() == out.reshape(-1).tolist()


def test_references_and_refusals() -> None:
    f = fmt(AudioEncoding.L16, 2)
    clip = build(np.zeros((48, 2), np.int32), f)  # any instance stands in for a clip
    ds = build(np.zeros((48, 2), np.int32), f, clip=clip)
    refs = [(r.ReferencedSOPInstanceUID, r.PurposeOfReferenceCodeSequence[0].CodeValue)
            for r in ds.ReferencedInstanceSequence]  # type: ignore[attr-defined]
    assert refs[1] == (clip.SOPInstanceUID, "122400")  # type: ignore[attr-defined]
    assert refs[0][1] == "121320"
    with pytest.raises(LocalProtocolError, match="no audio"):
        build(np.zeros((0, 2), np.int32), f)
    with pytest.raises(LocalProtocolError, match="shape"):
        build(np.zeros((48, 1), np.int32), f)
    three = AudioFormat(encoding=AudioEncoding.L16, sample_rate=48_000, channels=3, ptime_us=1000)
    with pytest.raises(LocalProtocolError, match="1 or 2"):
        build(np.zeros((48, 3), np.int32), three)
