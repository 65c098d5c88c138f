"""Patient, study and equipment context of a stream (the static part's identity).

A :class:`StreamContext` is configuration: a frozen keyword-only dataclass whose values
are checked against their DICOM value representations (PS3.5 §6.2) when it is made, so
that a bad name or date fails at start-up with :class:`~rtstream.errors.ConfigError`
instead of producing an invalid instance later.

It also holds what the real-time IODs cannot say in their own attributes but a stored
object must (issue #19): the *imaged* modality (PS3.22's real-time IODs are only ES and
XC), the source's lossy-compression history, the SOP instance a replayed cine came from,
its image type, burned-in annotation and anatomic region. :mod:`rtstream.dicom.realtime`
carries them in the static part; :mod:`rtstream.dicom.stored` reads them back.

UIDs are made under :data:`DEFAULT_UID_ROOT` (``2.25``, UUID-derived, PS3.5 §B.2: no
registration needed) unless a site configures its own organisation root (``uid_root``).
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import cast

from pydicom.uid import generate_uid

from rtstream.errors import ConfigError
from rtstream.proto.rtv_metadata import is_valid_uid

_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")

DEFAULT_UID_ROOT = "2.25"
"""UUID-derived UIDs (PS3.5 §B.2, ``2.25.<128-bit integer>``): rtstream's default root;
it needs no registered organisation root. A site sets its own with ``uid_root``."""

IMPLEMENTATION_CLASS_UID = "2.25.162411748421048724904004577347982264869"
"""rtstream's Implementation Class UID (PS3.7 D.3.3.2, PS3.10 §7.1): the UUID
``7a2f5d6e-0c1b-4f3e-9a8d-2b6c4e1f0a25`` as a ``2.25`` UID, fixed for the software."""

def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rtstream")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0"


RTSTREAM_VERSION = _version()
"""rtstream's version (package metadata), for Software Versions of Contributing Equipment."""

IMPLEMENTATION_VERSION_NAME = f"RTSTREAM_{RTSTREAM_VERSION}"[:16]
"""Implementation Version Name (SH, at most 16 characters)."""

# PS3.3 C.7.3.1.1.1 Modality defined terms that name an acquisition (CID 29), i.e. what
# a video can show; meanings from PS3.16 Annex D (via pydicom's CID 29 table).
IMAGED_MODALITIES: dict[str, str] = {
    "AR": "Autorefraction", "BDUS": "Ultrasound Bone Densitometry", "BI": "Biomagnetic Imaging",
    "BMD": "Bone Mineral Densitometry", "CFM": "Confocal Microscopy", "CR": "Computed Radiography",
    "CT": "Computed Tomography", "DG": "Diaphanography", "DMS": "Dermoscopy",
    "DX": "Digital Radiography", "ES": "Endoscopy", "GM": "General Microscopy",
    "IO": "Intra-oral Radiography", "IVOCT": "Intravascular Optical Coherence Tomography",
    "IVUS": "Intravascular Ultrasound", "LS": "Laser Scan", "MG": "Mammography",
    "MR": "Magnetic Resonance", "NM": "Nuclear Medicine", "OCT": "Optical Coherence Tomography",
    "OP": "Ophthalmic Photography", "OPM": "Ophthalmic Mapping", "OPT": "Ophthalmic Tomography",
    "OPTENF": "Ophthalmic Tomography En Face", "OSS": "Optical Surface Scanner",
    "PA": "Photoacoustic", "PT": "Positron emission tomography", "PX": "Panoramic X-Ray",
    "RF": "Radiofluoroscopy", "RG": "Radiographic imaging", "RTIMAGE": "RT Image",
    "SM": "Slide Microscopy", "TG": "Thermography", "US": "Ultrasound",
    "XA": "X-Ray Angiography", "XC": "External-camera Photography",
}  # fmt: skip

LOSSY_METHODS = frozenset({
    "ISO_10918_1", "ISO_14495_1", "ISO_15444_1", "ISO_15444_15", "ISO_13818_2",
    "ISO_14496_10", "ISO_23008_2", "ISO_18181_1",
})  # fmt: skip
"""Lossy Image Compression Method defined terms (PS3.3 C.7.6.1.1.5.1)."""

_CS_MULTI = re.compile(r"[A-Z0-9_ ]{1,16}(\\[A-Z0-9_ ]{1,16})*")
_DS_MULTI = re.compile(r"[0-9.+\-eE]{1,16}(\\[0-9.+\-eE]{1,16})*")


def new_uid(uid_root: str = "") -> str:
    """A new UID under ``uid_root`` (``2.25``/empty: UUID-derived, PS3.5 §B.2)."""
    root = uid_root.rstrip(".")
    if not root or root == DEFAULT_UID_ROOT:
        return str(generate_uid(prefix=None))
    return str(generate_uid(prefix=root + "."))


def check_uid_root(key: str, value: str) -> None:
    """An organisation root: digits and dots, short enough to leave room for a suffix."""
    root = value.rstrip(".")
    if root and (not re.fullmatch(r"[1-9][0-9]*(\.(0|[1-9][0-9]*))*", root) or len(root) > 40):
        raise ConfigError(key, value, "a UID root (digits and dots, at most 40 characters)")


PAIRED_REGIONS = frozenset({
    "Eye", "Eye region", "Orbital structure", "Breast", "Hand", "Foot", "Finger", "Thumb",
    "Toe", "Knee", "Shoulder", "Hip", "Hip joint", "Elbow joint", "Wrist joint",
    "Ankle joint", "Upper limb", "Lower limb", "Forearm", "Upper arm", "Thigh", "Lower leg",
    "Humerus", "Femur", "Fibula", "Clavicle", "Scapula", "Patella", "Calcaneus",
    "Parotid gland", "Submandibular gland", "Acromioclavicular joint",
    "Sternoclavicular joint", "Sacroiliac joint", "Temporomandibular joint", "Extremity",
    "Bone of upper limb", "Bone of lower limb", "Muscle of upper limb", "Muscle of lower limb",
    "Rib", "Tarsal joint", "Sesamoid bones of foot", "Zygoma", "Ureter",
})  # fmt: skip
"""CID 4031 regions that are paired structures: Laterality (0020,0060) is then type 2C
(General Series, PS3.3 C.7.3.1), written empty when the side is not known."""


def anatomic_region_for(value: str) -> tuple[str, str, str] | None:
    """The CID 4031 (SCT) code named by a code value, a code meaning or a Body Part
    Examined term (e.g. ``818981001``, ``Abdomen``, ``ABDOMEN``); None when not found."""
    want = re.sub(r"[^A-Z0-9]", "", value.upper())
    if not want:
        return None
    from pydicom.sr import _cid_dict, _concepts_dict  # large tables: only when needed

    for keyword in _cid_dict.cid_concepts[4031].get("SCT", []):
        entries = cast(dict[str, tuple[str, list[int]]], _concepts_dict.concepts["SCT"][keyword])
        for code, (meaning, _cids) in entries.items():
            if want in (code, re.sub(r"[^A-Z0-9]", "", meaning.upper())):
                return code, "SCT", meaning
    return None


def check_pn(key: str, value: str) -> None:
    """PS3.5 §6.2 PN: up to 3 ``=``-groups of up to 5 ``^``-components, 64 chars each."""
    if _CONTROL.search(value):
        raise ConfigError(key, value, "a person name without control characters or backslash")
    groups = value.split("=")
    if len(groups) > 3:
        raise ConfigError(key, value, "at most 3 component groups separated by '='")
    for group in groups:
        comps = group.split("^")
        if len(comps) > 5:
            raise ConfigError(
                key, value, "at most 5 components (Family^Given^Middle^Prefix^Suffix)"
            )
        if len(group) > 64:
            raise ConfigError(key, value, "at most 64 characters per component group")


def check_da(key: str, value: str) -> None:
    """PS3.5 §6.2 DA: ``YYYYMMDD`` naming a real date, or empty."""
    if not value:
        return
    if not re.fullmatch(r"\d{8}", value):
        raise ConfigError(key, value, "a date as YYYYMMDD or empty")
    try:
        _dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise ConfigError(key, value, "a date that exists, as YYYYMMDD") from None


def check_text(key: str, value: str, max_len: int) -> None:
    """LO/SH/CS-like text: no control characters or backslash, at most ``max_len``."""
    if _CONTROL.search(value) or len(value) > max_len:
        raise ConfigError(key, value, f"text of at most {max_len} characters, no backslash")


@dataclass(frozen=True, kw_only=True)
class StreamContext:
    """Patient, study and device information written into every static part.

    Parameters
    ----------
    patient_name : str
        PN, e.g. ``Doe^Jane``.
    patient_id : str
        LO, at most 64 characters.
    birth_date : str
        DA ``YYYYMMDD`` or empty.
    sex : str
        ``M``, ``F``, ``O`` or empty.
    study_instance_uid : str or None
        UI; a new UID is generated when None (read it back from the instance).
    study_description, accession_number, study_id : str
    study_date : str
        DA; empty means "the day the static part is built".
    referring_physician : str
        PN.
    manufacturer, model_name, software_versions, station_name, institution,
    device_serial : str
        General / Enhanced General Equipment (PS3.3 C.7.5.1, C.7.5.2); the Enhanced
        module's type 1 attributes get ``UNKNOWN`` when left empty.
    series_description, operator_name : str
    body_part : str
        CS Body Part Examined, e.g. ``ABDOMEN``; empty to leave it out.
    modality : str
        The imaged modality (PS3.3 C.7.3.1.1.1 defined term, e.g. ``US``, ``OPT``), carried
        in the static part's Acquisition Context (the real-time IODs' own Modality is ES or
        XC); empty when only the real-time class is known.
    issuer_of_patient_id : str
        LO Issuer of Patient ID (PS3.3 C.7.1.1), kept in every instance.
    study_time : str
        TM of the study (with ``study_date``); copied unchanged from a source study.
    timezone_offset : str
        ``+HHMM``/``-HHMM`` Timezone Offset From UTC (PS3.3 C.12.1.1.8) of a source study's
        dates; empty means the local offset of this machine.
    laterality : str
        ``R``/``L`` Laterality of a paired body part (General Series, PS3.3 C.7.3.1);
        empty when unknown (written empty, type 2C, for a paired region).
    anatomic_region : str
        Anatomic Region (CID 4031): a SNOMED CT code value or meaning, e.g. ``Abdomen``;
        empty: from ``body_part``, else the stored object's default.
    burned_in_annotation : str
        ``YES``/``NO``: the pixels carry burned-in text (the test picture's clock: YES).
    lossy_compression : str
        ``01`` when the source was lossy compressed, ``00`` when it was not, empty if
        unknown (PS3.3 C.7.6.1.1.5); once ``01`` every derived object says ``01``.
    lossy_method, lossy_ratio : str
        Lossy Image Compression Method / Ratio, several values separated by ``\\``.
    image_type : str
        The source's Image Type values 1 and 2 separated by ``\\`` (e.g.
        ``DERIVED\\SECONDARY``); empty for a live source (``ORIGINAL\\PRIMARY``).
    source_sop_class_uid, source_sop_instance_uid, source_series_instance_uid,
    source_study_instance_uid : str
        The stored instance a replayed stream came from (a ``dicom:`` cine), referenced by
        the static part and every stored object.
    uid_root : str
        Organisation root for new UIDs; empty: :data:`DEFAULT_UID_ROOT` (``2.25``).
    """

    patient_name: str = "Anonymous^Test"
    patient_id: str = "RTS-TEST"
    birth_date: str = ""
    sex: str = ""
    study_instance_uid: str | None = None
    study_description: str = ""
    accession_number: str = ""
    study_id: str = "1"
    study_date: str = ""
    referring_physician: str = ""
    manufacturer: str = "rtstream"
    model_name: str = "rtstream"
    software_versions: str = "0.1.0"
    station_name: str = ""
    institution: str = ""
    device_serial: str = ""
    series_description: str = ""
    operator_name: str = ""
    body_part: str = ""
    modality: str = ""
    issuer_of_patient_id: str = ""
    study_time: str = ""
    timezone_offset: str = ""
    anatomic_region: str = ""
    laterality: str = ""
    burned_in_annotation: str = ""
    lossy_compression: str = ""
    lossy_method: str = ""
    lossy_ratio: str = ""
    image_type: str = ""
    source_sop_class_uid: str = ""
    source_sop_instance_uid: str = ""
    source_series_instance_uid: str = ""
    source_study_instance_uid: str = ""
    uid_root: str = ""

    def __post_init__(self) -> None:
        check_pn("context.patient_name", self.patient_name)
        check_pn("context.referring_physician", self.referring_physician)
        check_pn("context.operator_name", self.operator_name)
        check_da("context.birth_date", self.birth_date)
        check_da("context.study_date", self.study_date)
        if self.sex not in ("", "M", "F", "O"):
            raise ConfigError("context.sex", self.sex, "M, F, O or empty")
        for key, max_len in (
            ("patient_id", 64), ("study_description", 64), ("accession_number", 16),
            ("study_id", 16), ("manufacturer", 64), ("model_name", 64),
            ("software_versions", 64), ("station_name", 16), ("institution", 64),
            ("device_serial", 64), ("series_description", 64), ("issuer_of_patient_id", 64),
        ):  # fmt: skip
            check_text(f"context.{key}", getattr(self, key), max_len)
        if self.body_part and not re.fullmatch(r"[A-Z0-9 _]{1,16}", self.body_part):
            raise ConfigError("context.body_part", self.body_part, "a CS value like ABDOMEN")
        self._check_source()
        check_uid_root("context.uid_root", self.uid_root)
        if self.study_instance_uid is None:
            object.__setattr__(self, "study_instance_uid", new_uid(self.uid_root))
        elif not is_valid_uid(self.study_instance_uid):
            raise ConfigError(
                "context.study_instance_uid",
                self.study_instance_uid,
                "a UID (digits and dots, <= 64)",
            )

    def _check_source(self) -> None:
        if self.modality and self.modality not in IMAGED_MODALITIES:
            raise ConfigError(
                "context.modality", self.modality,
                "a Modality defined term (PS3.3 C.7.3.1.1.1) naming an acquisition, one of "
                + ", ".join(sorted(IMAGED_MODALITIES)),
            )  # fmt: skip
        if self.study_time and not re.fullmatch(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?", self.study_time):
            raise ConfigError("context.study_time", self.study_time, "a time as HHMMSS.FFFFFF")
        if self.timezone_offset and not re.fullmatch(r"[+-](0\d|1[0-4])[0-5]\d", self.timezone_offset):
            raise ConfigError("context.timezone_offset", self.timezone_offset, "+HHMM or -HHMM")
        if self.anatomic_region and anatomic_region_for(self.anatomic_region) is None:
            raise ConfigError(
                "context.anatomic_region", self.anatomic_region,
                "a CID 4031 SNOMED CT code value or meaning, e.g. Abdomen",
            )  # fmt: skip
        if self.laterality not in ("", "R", "L"):
            raise ConfigError("context.laterality", self.laterality, "R, L or empty")
        if self.burned_in_annotation not in ("", "YES", "NO"):
            raise ConfigError("context.burned_in_annotation", self.burned_in_annotation, "YES, NO or empty")
        if self.lossy_compression not in ("", "00", "01"):
            raise ConfigError("context.lossy_compression", self.lossy_compression, "00, 01 or empty")
        if self.lossy_method and (
            not _CS_MULTI.fullmatch(self.lossy_method)
            or not set(self.lossy_method.split("\\")) <= LOSSY_METHODS
        ):
            raise ConfigError(
                "context.lossy_method", self.lossy_method,
                "methods of PS3.3 C.7.6.1.1.5.1 separated by a backslash: " + ", ".join(sorted(LOSSY_METHODS)),
            )  # fmt: skip
        if self.lossy_ratio and not _DS_MULTI.fullmatch(self.lossy_ratio):
            raise ConfigError("context.lossy_ratio", self.lossy_ratio, "DS numbers separated by a backslash")
        if self.image_type and not _CS_MULTI.fullmatch(self.image_type):
            raise ConfigError("context.image_type", self.image_type, "CS values separated by a backslash")
        for key in ("source_sop_class_uid", "source_sop_instance_uid",
                    "source_series_instance_uid", "source_study_instance_uid"):  # fmt: skip
            value = getattr(self, key)
            if value and not is_valid_uid(value):
                raise ConfigError(f"context.{key}", value, "a UID (digits and dots, <= 64)")

    @property
    def imaged_modality(self) -> str:
        """The modality that was imaged: :attr:`modality`, else empty (unknown)."""
        return self.modality

    @property
    def anatomic_region_code(self) -> tuple[str, str, str] | None:
        """The Anatomic Region code from ``anatomic_region``, else from ``body_part``."""
        return anatomic_region_for(self.anatomic_region or self.body_part)

    @property
    def study_uid(self) -> str:
        """The Study Instance UID (given or generated)."""
        assert self.study_instance_uid is not None
        return self.study_instance_uid
