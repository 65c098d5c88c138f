"""Findings of a live analysis, and the DICOM objects that archive them beside an image.

Theory of operation
-------------------
An analysis callable returns, for one frame, a list of findings: plain mappings (or
:class:`Finding`) with a ``label``, exactly one geometry (``box`` ``[x, y, width,
height]``, ``polygon`` ``[[x, y], ...]`` or ``point`` ``[x, y]``), and optionally a
``score`` and a ``text``. :func:`parse_finding` checks one and returns a :class:`Finding`,
or raises :class:`FindingError` naming the field at fault; the receiver logs and skips
such a finding, the others of the set go on.

Coordinates are continuous image coordinates in pixels, x to the right, y down, with
``(0, 0)`` the top left corner of the top left pixel and ``(width, height)`` the bottom
right corner of the last one: the centre of pixel ``(column c, row r)`` is ``(c + 0.5, r +
0.5)``. That is exactly the convention of DICOM graphic data in PIXEL units (PS3.3
C.10.5.1.2, Graphic Annotation Units) and of 2D spatial coordinates (PS3.3 C.18.6.1.2),
so a finding's numbers go into the stored objects unchanged, as (column, row) pairs.

Stored objects (built with ``highdicom``, never by hand):

* :func:`build_presentation_state`: a Color Softcopy Presentation State (PS3.3 A.34.2;
  our stored snapshots are RGB, :mod:`rtstream.dicom.stored`) referencing the image by its
  SOP Instance UID, in the image's patient and study, in a series of its own, with one
  graphic layer: each box or polygon a closed POLYLINE, each point a POINT, each label
  (with score and text) a text object anchored at the geometry (PS3.3 C.10.5 Graphic
  Annotation). This is what most viewers draw.
* :func:`build_findings_sr`: a Comprehensive 3D SR (PS3.3 A.35.13) holding a TID 1500
  Measurement Report (PS3.16): one TID 1410 planar region per finding, its region a 2D
  SCOORD (POLYLINE or POINT) on the image, its label a Finding (DCM 121071) coded in
  rtstream's private scheme ``99RTSTREAM`` (PS3.16 §8.2: "99" designators are local), its
  score a measurement with unit ``1`` (UCUM). This is what reporting and AI pipelines read.

Both reference the image by its SOP Class and Instance UIDs; both are pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydicom import Dataset

from rtstream.dicom.context import IMPLEMENTATION_CLASS_UID, RTSTREAM_VERSION, new_uid
from rtstream.errors import LocalProtocolError

__all__ = [
    "FINDINGS_CODING_SCHEME",
    "Finding",
    "FindingError",
    "FindingSet",
    "Geometry",
    "build_findings_sr",
    "build_presentation_state",
    "parse_finding",
    "parse_findings",
]

#: The private coding scheme designator of finding labels (PS3.16 §8.2: "99" is local).
FINDINGS_CODING_SCHEME = "99RTSTREAM"

#: Series Description of the presentation states and reports rtstream stores.
PS_SERIES_DESCRIPTION = "rtstream live analysis findings (presentation state)"
SR_SERIES_DESCRIPTION = "rtstream live analysis findings (report)"

Geometry = Literal["box", "polygon", "point"]

_GEOMETRIES: tuple[Geometry, ...] = ("box", "polygon", "point")
_LABEL_MAX = 64  # LO (PS3.5 §6.2)
_TEXT_MAX = 1024  # ST holds 1024 characters (PS3.5 §6.2)


class FindingError(LocalProtocolError):
    """A finding the analysis callable returned is malformed; the message names the field."""


@dataclass(frozen=True)
class Finding:
    """One finding on one frame.

    Attributes
    ----------
    label : str
        What was found (at most 64 characters, stored as a code meaning and text).
    geometry : {"box", "polygon", "point"}
    points : numpy.ndarray
        ``(n, 2)`` float64 (x, y) in image coordinates: a box as its 4 corners (clockwise
        from the top left), a polygon as given (not closed), a point as one row.
    score : float or None
    text : str or None
    box : tuple of 4 floats or None
        ``(x, y, width, height)`` when the geometry is a box.
    """

    label: str
    geometry: Geometry
    points: np.ndarray = field(compare=False)
    score: float | None = None
    text: str | None = None
    box: tuple[float, float, float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The finding as the plain mapping it was given as (JSON-ready)."""
        out: dict[str, Any] = {"label": self.label}
        if self.geometry == "box":
            assert self.box is not None
            out["box"] = list(self.box)
        elif self.geometry == "polygon":
            out["polygon"] = self.points.tolist()
        else:
            out["point"] = self.points[0].tolist()
        if self.score is not None:
            out["score"] = self.score
        if self.text is not None:
            out["text"] = self.text
        return out

    def closed(self) -> np.ndarray:
        """The outline as a closed polyline (first point repeated); a point as itself."""
        if self.geometry == "point":
            return self.points
        return np.vstack([self.points, self.points[:1]])

    def caption(self) -> str:
        """Label, score and text as one line (what the overlay and the PS show)."""
        parts = [self.label]
        if self.score is not None:
            parts.append(f"{self.score:.2f}")
        if self.text:
            parts.append(self.text)
        return " ".join(parts)


@dataclass(frozen=True)
class FindingSet:
    """The findings of one analysed frame, with the frame they were made on.

    Attributes
    ----------
    flow : str
        The video flow's name.
    rtp_timestamp : int
        The frame's RTP timestamp (what the viewer matches findings on).
    width, height : int
        The frame's size (coordinates are within it).
    findings : tuple of Finding
    latency_ns : int
        From the frame's last packet read to the callable's return.
    origin_ns : int or None
        The frame's capture instant (TAI ns), when known.
    ssrc : int
        The video flow's RTP SSRC (the viewer names streams by it).
    """

    flow: str
    rtp_timestamp: int
    width: int
    height: int
    findings: tuple[Finding, ...]
    latency_ns: int = 0
    origin_ns: int | None = None
    ssrc: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: what the viewer and MQTT carry."""
        return {
            "flow": self.flow,
            "ssrc": self.ssrc,
            "rtp_timestamp": self.rtp_timestamp,
            "width": self.width,
            "height": self.height,
            "latency_us": self.latency_ns // 1000,
            "findings": [f.as_dict() for f in self.findings],
        }


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise FindingError(f"finding {name}: a number expected, got {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x):
        raise FindingError(f"finding {name}: a finite number expected, got {x}")
    return x


def _pairs(name: str, value: object) -> np.ndarray:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise FindingError(f"finding {name}: a list of [x, y] pairs expected")
    out = []
    for i, p in enumerate(value):
        if isinstance(p, np.ndarray):
            p = p.tolist()
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise FindingError(f"finding {name}[{i}]: an [x, y] pair expected")
        out.append((_number(f"{name}[{i}].x", p[0]), _number(f"{name}[{i}].y", p[1])))
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def parse_finding(obj: object, *, width: int | None = None, height: int | None = None) -> Finding:
    """Check one finding (a :class:`Finding` or a mapping) and return it as a :class:`Finding`.

    Parameters
    ----------
    obj : Finding or Mapping
        ``label`` (non-empty str, at most 64 characters), exactly one of ``box`` ``[x, y,
        w, h]`` (w, h > 0), ``polygon`` ``[[x, y], ...]`` (at least 3 points) or ``point``
        ``[x, y]``; optional ``score`` (a finite number) and ``text`` (str).
    width, height : int or None
        The frame's size: when given, every coordinate must lie within ``[0, width] x [0,
        height]``.

    Raises
    ------
    FindingError
        Naming the field at fault.
    """
    if isinstance(obj, Finding):
        obj = obj.as_dict()
    if not isinstance(obj, Mapping):
        raise FindingError(f"finding: a mapping expected, got {type(obj).__name__}")
    unknown = set(obj) - {"label", "score", "text", *_GEOMETRIES}
    if unknown:
        raise FindingError(f"finding: unknown key(s) {sorted(map(str, unknown))}")
    label = obj.get("label")
    if not isinstance(label, str) or not label.strip():
        raise FindingError("finding label: a non-empty string expected")
    if len(label) > _LABEL_MAX or "\\" in label or any(ord(c) < 32 for c in label):
        raise FindingError(
            f"finding label: at most {_LABEL_MAX} characters, no backslash or control "
            f"characters (DICOM LO)")
    given = [g for g in _GEOMETRIES if g in obj]
    if len(given) != 1:
        raise FindingError(
            f"finding geometry: exactly one of box, polygon, point expected, got {given or 'none'}")
    geometry = given[0]
    value = obj[geometry]
    box: tuple[float, float, float, float] | None = None
    if geometry == "box":
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, (list, tuple)) or len(value) != 4:
            raise FindingError("finding box: [x, y, width, height] expected")
        x, y, w, h = (_number(f"box[{i}]", v) for i, v in enumerate(value))
        if w <= 0 or h <= 0:
            raise FindingError(f"finding box: width and height must be > 0, got {w}, {h}")
        box = (x, y, w, h)
        points = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float64)
    elif geometry == "polygon":
        points = _pairs("polygon", value)
        if len(points) < 3:
            raise FindingError(f"finding polygon: at least 3 points expected, got {len(points)}")
    else:
        points = _pairs("point", [value])
    if width is not None and height is not None:
        inside = ((points[:, 0] >= 0) & (points[:, 0] <= width)
                  & (points[:, 1] >= 0) & (points[:, 1] <= height))
        if not inside.all():
            raise FindingError(
                f"finding {geometry}: coordinates outside the {width}x{height} frame")
    score = obj.get("score")
    score_f = None if score is None else _number("score", score)
    text = obj.get("text")
    if text is not None and (not isinstance(text, str) or len(text) > _TEXT_MAX):
        raise FindingError(f"finding text: a string of at most {_TEXT_MAX} characters expected")
    return Finding(label=label.strip(), geometry=geometry, points=points, score=score_f,
                   text=text or None, box=box)


def parse_findings(
    objs: Iterable[object], *, width: int | None = None, height: int | None = None
) -> tuple[list[Finding], list[FindingError]]:
    """Check every finding of a set: the good ones, and the errors of the bad ones."""
    good: list[Finding] = []
    bad: list[FindingError] = []
    for obj in objs:
        try:
            good.append(parse_finding(obj, width=width, height=height))
        except FindingError as exc:
            bad.append(exc)
    return good, bad


# -- stored objects ---------------------------------------------------------------------


def _check_image(image: Dataset) -> tuple[int, int]:
    for key in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "Rows", "Columns"):
        if key not in image:
            raise LocalProtocolError(f"findings: the referenced image has no {key}")
    return int(image.Columns), int(image.Rows)


def _check_inside(findings: Sequence[Finding], width: int, height: int) -> None:
    if not findings:
        raise LocalProtocolError("findings: nothing to store (no findings)")
    for f in findings:
        pts = f.points
        if (pts[:, 0].min() < 0 or pts[:, 1].min() < 0
                or pts[:, 0].max() > width or pts[:, 1].max() > height):
            raise FindingError(
                f"finding {f.label!r}: coordinates outside the {width}x{height} image")


def _device() -> dict[str, Any]:
    return {
        "manufacturer": "rtstream",
        "manufacturer_model_name": "rtstream live analysis",
        "software_versions": RTSTREAM_VERSION,
        "device_serial_number": IMPLEMENTATION_CLASS_UID[-16:],
    }


def build_presentation_state(
    image: Dataset,
    findings: Sequence[Finding],
    *,
    series_instance_uid: str,
    series_number: int = 1,
    instance_number: int = 1,
    sop_instance_uid: str | None = None,
    uid_root: str = "",
    content_label: str = "FINDINGS",
    description: str = "live analysis findings",
) -> Dataset:
    """A Color Softcopy Presentation State (PS3.3 A.34.2) drawing ``findings`` on ``image``.

    Parameters
    ----------
    image : pydicom.Dataset
        The stored RGB image (a snapshot): its patient, study and SOP Instance UID are
        referenced.
    findings : sequence of Finding
        Coordinates within the image (:func:`parse_finding`).
    series_instance_uid, series_number, instance_number : the presentation state's own.
    content_label : str
        Content Label (CS, PS3.3 C.10.9): upper case, at most 16 characters.
    description : str
        Content Description (LO).

    Returns
    -------
    pydicom.Dataset
        With its file meta (Explicit VR Little Endian).
    """
    import highdicom as hd

    width, height = _check_image(image)
    _check_inside(findings, width, height)
    layer = hd.pr.GraphicLayer(layer_name="FINDINGS", order=1,
                               description="findings of the live analysis")
    graphics = []
    texts = []
    for f in findings:
        if f.geometry == "point":
            graphics.append(hd.pr.GraphicObject(
                graphic_type=hd.pr.GraphicTypeValues.POINT, graphic_data=f.points,
                units=hd.pr.AnnotationUnitsValues.PIXEL))
        else:
            graphics.append(hd.pr.GraphicObject(
                graphic_type=hd.pr.GraphicTypeValues.POLYLINE, graphic_data=f.closed(),
                units=hd.pr.AnnotationUnitsValues.PIXEL))
        x, y = f.points[0]
        texts.append(hd.pr.TextObject(
            text_value=f.caption()[:_LABEL_MAX],
            units=hd.pr.AnnotationUnitsValues.PIXEL,
            anchor_point=(float(x), float(y)), anchor_point_visible=False))
    annotation = hd.pr.GraphicAnnotation(
        referenced_images=[image], graphic_layer=layer,
        graphic_objects=graphics, text_objects=texts)
    icc = _input_profile(image.get("ICCProfile"))
    ps = hd.pr.ColorSoftcopyPresentationState(
        referenced_images=[image],
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or new_uid(uid_root),
        instance_number=instance_number,
        content_label=content_label,
        content_description=description[:64],
        graphic_annotations=[annotation],
        graphic_layers=[layer],
        icc_profile=icc,
        **_device(),
    )
    ps.SeriesDescription = PS_SERIES_DESCRIPTION
    # General Series Laterality (PS3.3 C.7.3.1, type 2C): the image's side, or empty
    # (unknown), never guessed.
    ps.Laterality = image.get("Laterality") or image.get("ImageLaterality") or ""
    _implementation(ps)
    return ps


def build_findings_sr(
    image: Dataset,
    findings: Sequence[Finding],
    *,
    series_instance_uid: str,
    series_number: int = 1,
    instance_number: int = 1,
    sop_instance_uid: str | None = None,
    uid_root: str = "",
    observer: str = "rtstream live analysis",
) -> Dataset:
    """A Comprehensive 3D SR (PS3.3 A.35.13) with a TID 1500 Measurement Report.

    One TID 1410 "Planar ROI measurements and qualitative evaluations" group per finding:
    tracking identifier and UID, the region as an SCOORD on ``image`` (a closed POLYLINE
    for boxes and polygons, a POINT for points; TID 1410 row 7 / TID 1411), the label as a
    Finding (DCM 121071) coded in :data:`FINDINGS_CODING_SCHEME`, the score as a
    measurement (``1``, UCUM) and the text as a qualitative evaluation's text meaning.

    Parameters are those of :func:`build_presentation_state`; ``observer`` names the
    device observer (TID 1004) that made the findings.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    width, height = _check_image(image)
    _check_inside(findings, width, height)
    source = hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=str(image.SOPClassUID),
        referenced_sop_instance_uid=str(image.SOPInstanceUID))
    groups = []
    for i, f in enumerate(findings, start=1):
        if f.geometry == "point":
            region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POINT,
                                       graphic_data=f.points, source_image=source)
        else:
            region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                                       graphic_data=f.closed(), source_image=source)
        measurements = []
        if f.score is not None:
            measurements.append(hd.sr.Measurement(
                name=hd.sr.CodedConcept("RTS0002", FINDINGS_CODING_SCHEME, "Score"),
                value=f.score,
                unit=hd.sr.CodedConcept("1", "UCUM", "no units")))
        evaluations = []
        if f.text:
            evaluations.append(hd.sr.QualitativeEvaluation(
                name=hd.sr.CodedConcept("RTS0003", FINDINGS_CODING_SCHEME, "Comment"),
                value=hd.sr.CodedConcept("RTS0004", FINDINGS_CODING_SCHEME, f.text[:_LABEL_MAX])))
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=new_uid(uid_root), identifier=f"finding {i}"),
            referenced_region=region,
            finding_type=hd.sr.CodedConcept(
                _label_code(f.label), FINDINGS_CODING_SCHEME, f.label),
            measurements=measurements or None,
            qualitative_evaluations=evaluations or None,
        ))
    observation = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=IMPLEMENTATION_CLASS_UID, name=observer[:64],
                manufacturer_name="rtstream")))
    report = hd.sr.MeasurementReport(
        observation_context=observation,
        procedure_reported=hd.sr.CodedConcept("RTS0001", FINDINGS_CODING_SCHEME,
                                              "Live video analysis"),
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[image],
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or new_uid(uid_root),
        instance_number=instance_number,
        manufacturer="rtstream",
        is_complete=True,
    )
    sr.SeriesDescription = SR_SERIES_DESCRIPTION
    _implementation(sr)
    return sr


def _input_profile(icc: bytes | None) -> bytes:
    """The image's ICC profile (sRGB when it has none) as a colour space profile.

    PS3.3 C.11.15.1.1 wants an Input ('scnr') or ColorSpace ('spac') device class in a
    presentation state, and highdicom checks it; LittleCMS's sRGB (what our snapshots carry)
    says Display ('mntr'). The colour data are the same, so the header's device class
    (bytes 12-15, ICC.1:2010 §7.2.5) is set to 'spac' and the profile ID (bytes 84-99,
    §7.2.18), which would no longer match, to zero ("not computed").
    """
    if icc is None:
        from rtstream.dicom.realtime import srgb_icc_profile

        icc = srgb_icc_profile()
    data = bytearray(icc)
    if len(data) < 128:
        raise LocalProtocolError("findings: the image's ICC profile is shorter than its header")
    if bytes(data[12:16]) not in (b"scnr", b"spac"):
        data[12:16] = b"spac"
        data[84:100] = bytes(16)
    return bytes(data)


def _label_code(label: str) -> str:
    """A stable code value (SH, 16 characters) for a free-text label."""
    import hashlib

    return "L" + hashlib.sha1(label.encode()).hexdigest()[:15].upper()


def _implementation(ds: Dataset) -> None:
    from pydicom.uid import UID

    from rtstream.dicom.context import IMPLEMENTATION_VERSION_NAME

    ds.file_meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
