"""Findings: validation of what an analysis returns, and the DICOM objects that store them
(Color Softcopy Presentation State, TID 1500 SR) checked by dciodvfy and read back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import ColorSoftcopyPresentationStateStorage

from rtstream.dicom.findings import (
    Finding,
    FindingError,
    build_findings_sr,
    build_presentation_state,
    parse_finding,
    parse_findings,
)
from rtstream.dicom.realtime import RtvSop
from rtstream.dicom.stored import save_new
from tests.dicom.test_dciodvfy import dciodvfy
from tests.dicom.test_stored import snapshot

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
GOOD = [
    {"label": "band", "box": [10, 10, 30, 12], "score": 0.9, "text": "bright"},
    {"label": "tip", "point": [5.5, 7.5]},
    {"label": "outline", "polygon": [[1, 1], [20, 1], [10, 15]], "score": 1},
]


@pytest.mark.parametrize(("bad", "field"), [
    ("box", "mapping"),
    ({"box": [0, 0, 1, 1]}, "label"),
    ({"label": "", "box": [0, 0, 1, 1]}, "label"),
    ({"label": "a\\b", "box": [0, 0, 1, 1]}, "label"),
    ({"label": "x" * 65, "box": [0, 0, 1, 1]}, "label"),
    ({"label": "x"}, "geometry"),
    ({"label": "x", "box": [0, 0, 1, 1], "point": [1, 1]}, "geometry"),
    ({"label": "x", "box": [0, 0, 1]}, "box"),
    ({"label": "x", "box": [0, 0, 0, 1]}, "box"),
    ({"label": "x", "box": [0, 0, "1", 1]}, "box[2]"),
    ({"label": "x", "box": [0, float("nan"), 1, 1]}, "box[1]"),
    ({"label": "x", "polygon": [[0, 0], [1, 1]]}, "polygon"),
    ({"label": "x", "polygon": [[0, 0], [1], [2, 2]]}, "polygon[1]"),
    ({"label": "x", "point": [1, True]}, "point[0].y"),
    ({"label": "x", "point": [70, 1]}, "outside"),
    ({"label": "x", "box": [60, 40, 10, 10]}, "outside"),
    ({"label": "x", "point": [1, 1], "score": "high"}, "score"),
    ({"label": "x", "point": [1, 1], "text": 3}, "text"),
    ({"label": "x", "point": [1, 1], "colour": "red"}, "unknown"),
])
def test_malformed_findings_name_the_field(bad: Any, field: str) -> None:
    with pytest.raises(FindingError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_finding(bad, width=64, height=48)


def test_good_findings_round_trip() -> None:
    good, bad = parse_findings([*GOOD, {"label": "x"}, np.int64(3)], width=64, height=48)
    assert len(good) == 3 and len(bad) == 2
    assert [f.as_dict() for f in good] == [
        {"label": "band", "box": [10.0, 10.0, 30.0, 12.0], "score": 0.9, "text": "bright"},
        {"label": "tip", "point": [5.5, 7.5]},
        {"label": "outline", "polygon": [[1.0, 1.0], [20.0, 1.0], [10.0, 15.0]], "score": 1.0},
    ]
    box = good[0]
    assert box.points.tolist() == [[10, 10], [40, 10], [40, 22], [10, 22]]
    assert box.closed().tolist()[-1] == [10, 10]
    assert box.caption() == "band 0.90 bright"
    # a Finding is accepted as it is, numpy values too
    again = parse_finding(Finding(label="p", geometry="point", points=np.array([[2.0, 3.0]])))
    assert again.as_dict() == {"label": "p", "point": [2.0, 3.0]}
    arr = parse_finding({"label": "b", "box": np.array([1, 2, 3, 4], np.int32)})
    assert arr.box == (1.0, 2.0, 3.0, 4.0)


def _check(ds: pydicom.Dataset, image: pydicom.Dataset, tmp_path: Path) -> pydicom.Dataset:
    path = save_new(ds, tmp_path)
    lines = dciodvfy(path)
    assert not [line for line in lines if "Error" in line], "\n".join(lines)
    back = pydicom.dcmread(path)
    assert back.PatientID == image.PatientID and back.PatientName == image.PatientName
    assert back.StudyInstanceUID == image.StudyInstanceUID
    assert back.SeriesInstanceUID not in (image.SeriesInstanceUID,)
    assert back.SOPInstanceUID != image.SOPInstanceUID
    return back


@pytest.mark.peer("dciodvfy")
@pytest.mark.parametrize("sop", [RtvSop.ENDOSCOPIC, RtvSop.PHOTOGRAPHIC])
def test_presentation_state_references_image_and_passes_dciodvfy(
    sop: RtvSop, tmp_path: Path
) -> None:
    image = snapshot(sop)
    findings, _ = parse_findings(GOOD, width=image.Columns, height=image.Rows)
    ps = build_presentation_state(image, findings, series_instance_uid="1.2.3.44",
                                  series_number=7, instance_number=3)
    back = _check(ps, image, tmp_path)
    assert back.SOPClassUID == ColorSoftcopyPresentationStateStorage
    assert back.Modality == "PR" and back.SeriesNumber == 7 and back.InstanceNumber == 3
    ref = back.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == image.SeriesInstanceUID
    assert ref.ReferencedImageSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID
    assert ref.ReferencedImageSequence[0].ReferencedSOPClassUID == image.SOPClassUID
    ann = back.GraphicAnnotationSequence[0]
    assert ann.ReferencedImageSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID
    graphics = ann.GraphicObjectSequence
    assert [g.GraphicType for g in graphics] == ["POLYLINE", "POINT", "POLYLINE"]
    assert [float(v) for v in graphics[0].GraphicData] == [10, 10, 40, 10, 40, 22, 10, 22, 10, 10]
    assert [float(v) for v in graphics[1].GraphicData] == [5.5, 7.5]
    assert all(g.GraphicAnnotationUnits == "PIXEL" for g in graphics)
    texts = [t.UnformattedTextValue for t in ann.TextObjectSequence]
    assert texts == ["band 0.90 bright", "tip", "outline 1.00"]
    assert bytes(back.ICCProfile[12:16]) == b"spac"


@pytest.mark.peer("dciodvfy")
def test_report_references_image_and_passes_dciodvfy(tmp_path: Path) -> None:
    image = snapshot(RtvSop.ENDOSCOPIC)
    findings, _ = parse_findings(GOOD, width=image.Columns, height=image.Rows)
    sr = build_findings_sr(image, findings, series_instance_uid="1.2.3.45")
    back = _check(sr, image, tmp_path)
    assert back.SOPClassUID == COMPREHENSIVE_3D_SR and back.Modality == "SR"
    evidence = back.CurrentRequestedProcedureEvidenceSequence[0]
    ref = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == image.SOPInstanceUID
    # every SCOORD of the tree selects the image; labels and scores are in the tree
    scoords: list[pydicom.Dataset] = []
    texts: list[str] = []

    def walk(items: Any) -> None:
        for it in items:
            if it.ValueType == "SCOORD":
                scoords.append(it)
            if it.ValueType == "CODE":
                texts.append(it.ConceptCodeSequence[0].CodeMeaning)
            if it.ValueType == "NUM":
                texts.append(str(float(it.MeasuredValueSequence[0].NumericValue)))
            walk(it.get("ContentSequence", []))

    walk(back.ContentSequence)
    assert [s.GraphicType for s in scoords] == ["POLYLINE", "POINT", "POLYLINE"]
    for s in scoords:
        img = s.ContentSequence[0].ReferencedSOPSequence[0]
        assert img.ReferencedSOPInstanceUID == image.SOPInstanceUID
    assert {"band", "tip", "outline", "0.9", "1.0"} <= set(texts)


def test_refuses_empty_and_outside() -> None:
    image = snapshot(RtvSop.ENDOSCOPIC)
    with pytest.raises(Exception, match="no findings"):
        build_presentation_state(image, [], series_instance_uid="1.2.3")
    far = parse_finding({"label": "far", "point": [500, 500]})
    with pytest.raises(FindingError, match="outside"):
        build_findings_sr(image, [far], series_instance_uid="1.2.3")
