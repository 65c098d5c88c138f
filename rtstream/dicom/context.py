"""Patient, study and equipment context of a stream (the static part's identity).

A :class:`StreamContext` is configuration: a frozen keyword-only dataclass whose values
are checked against their DICOM value representations (PS3.5 §6.2) when it is made, so
that a bad name or date fails at start-up with :class:`~rtstream.errors.ConfigError`
instead of producing an invalid instance later.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

from pydicom.uid import generate_uid

from rtstream.errors import ConfigError
from rtstream.proto.rtv_metadata import is_valid_uid

_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


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
            ("device_serial", 64), ("series_description", 64),
        ):  # fmt: skip
            check_text(f"context.{key}", getattr(self, key), max_len)
        if self.body_part and not re.fullmatch(r"[A-Z0-9 _]{1,16}", self.body_part):
            raise ConfigError("context.body_part", self.body_part, "a CS value like ABDOMEN")
        if self.study_instance_uid is None:
            object.__setattr__(self, "study_instance_uid", generate_uid())
        elif not is_valid_uid(self.study_instance_uid):
            raise ConfigError(
                "context.study_instance_uid",
                self.study_instance_uid,
                "a UID (digits and dots, <= 64)",
            )

    @property
    def study_uid(self) -> str:
        """The Study Instance UID (given or generated)."""
        assert self.study_instance_uid is not None
        return self.study_instance_uid
