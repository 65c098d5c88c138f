"""A stored stereo snapshot: both views of one instant of a stereo rendition.

Theory of operation
-------------------
A stereo rendition (PS3.16 DCM 130372/130373) pairs two real-time video flows, the left
and the right view, frame by frame on their common RTP timestamp. A snapshot of such a
pair is stored as one two-frame instance, built exactly as a clip is
(:func:`rtstream.dicom.stored.build_clip`: the same classes by imaged modality, H.264 in
MP4, the same provenance), with:

- frame 1 the left view and frame 2 the right view, and Stereo Pairs Present (0022,0028)
  YES: PS3.3 C.7.6.6 (Multi-frame Module) says the multi-frame pixel data then consists
  of left and right stereoscopic pairs, left first;
- both RTV instances referenced: Source Image Sequence (C.7.6.1, CID 7202 "Uncompressed
  predecessor") names the left view's and the right view's RTV SOP instance, and the
  Common Instance Reference module (C.12.2) lists each under its own real-time series.

The Cine module keeps the stream's frame period; with Stereo Pairs Present YES a viewer
takes the two frames as one stereo pair rather than as two instants.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from rtstream.dicom.realtime import code_item
from rtstream.dicom.stored import UNCOMPRESSED_PREDECESSOR, build_clip
from rtstream.errors import LocalProtocolError
from rtstream.proto.clock import PtpTimestamp
from rtstream.proto.formats import VideoFormat

STEREO_SERIES_DESCRIPTION = "rtstream stereo snapshots"


def build_stereo_snapshot(
    left: np.ndarray,
    right: np.ndarray,
    fmt: VideoFormat,
    left_static: Dataset,
    right_static: Dataset,
    *,
    left_rtv_uid: str,
    right_rtv_uid: str,
    origin: PtpTimestamp,
    series_instance_uid: str,
    series_number: int = 1,
    instance_number: int = 1,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """The two-frame instance of a stereo pair (left, right), Stereo Pairs Present YES.

    Parameters
    ----------
    left, right : numpy.ndarray
        The two views' frames, wire order, of one RTP timestamp (same ``fmt``).
    left_static, right_static : pydicom.Dataset
        The static parts of the two views' metadata flows (patient and study must agree).
    left_rtv_uid, right_rtv_uid : str
        The two views' RTV SOP Instance UIDs.
    origin : PtpTimestamp
        Capture instant of the pair.

    Raises
    ------
    LocalProtocolError
        When the views disagree on patient or study, or are the same RTV instance.
    """
    for keyword in ("PatientID", "StudyInstanceUID"):
        if left_static.get(keyword) != right_static.get(keyword):
            raise LocalProtocolError(
                f"stereo: the views' {keyword} differ; a pair is stored only under one study")
    if left_rtv_uid == right_rtv_uid:
        raise LocalProtocolError("stereo: left and right are the same RTV instance")
    ds = build_clip(
        [left, right], fmt, left_static, rtv_sop_instance_uid=left_rtv_uid, origin=origin,
        series_instance_uid=series_instance_uid, series_number=series_number,
        instance_number=instance_number, sop_instance_uid=sop_instance_uid,
        series_description=STEREO_SERIES_DESCRIPTION)
    # Multi-frame (C.7.6.6): left and right stereoscopic pairs
    ds.StereoPairsPresent = "YES"
    right_class = str(right_static.get("SOPClassUID", ""))
    src = Dataset()
    src.ReferencedSOPClassUID = right_class
    src.ReferencedSOPInstanceUID = right_rtv_uid
    src.PurposeOfReferenceCodeSequence = [code_item(*UNCOMPRESSED_PREDECESSOR)]
    sources = list(ds.SourceImageSequence)
    sources.insert(1, src)  # right after the left view's
    ds.SourceImageSequence = sources
    if "SeriesInstanceUID" in right_static:
        ref = Dataset()
        ref.ReferencedSOPClassUID = right_class
        ref.ReferencedSOPInstanceUID = right_rtv_uid
        series = Dataset()
        series.SeriesInstanceUID = right_static.SeriesInstanceUID
        series.ReferencedInstanceSequence = [ref]
        ds.ReferencedSeriesSequence = [*ds.get("ReferencedSeriesSequence", []), series]
    desc = str(ds.get("DerivationDescription", ""))
    ds.DerivationDescription = ("Stereo pair (left, right) of a DICOM-RTV stereo rendition; "
                                + desc)[:1024]
    return ds


__all__ = ["STEREO_SERIES_DESCRIPTION", "build_stereo_snapshot"]
