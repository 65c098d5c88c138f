"""Modality Worklist C-FIND SCU: who is the patient in front of this camera?

Theory of operation
-------------------
:func:`find_worklist` opens one association to the worklist SCP (the RIS, or e.g. Orthanc's
ModalityWorklists plugin), sends one C-FIND request of the *Modality Worklist Information
Model - FIND* SOP class (1.2.840.10008.5.1.4.31, PS3.4 K.6.1) and collects every pending
(0xFF00/0xFF01) answer until the final status. The identifier asks for the return keys of
PS3.4 Table K.6-1 that fill the stream's patient and study identity, and matches on

* the Scheduled Station AE Title, Scheduled Procedure Step Start Date (today by default)
  and Modality inside the Scheduled Procedure Step Sequence (the usual modality query), or
* the Accession Number (a technician picking one order).

Each answer becomes a typed :class:`WorklistItem`; malformed answers raise
:class:`~rtstream.errors.RemoteProtocolError` naming the attribute. :func:`context_fields`
maps the chosen item onto the fields of :class:`rtstream.dicom.context.StreamContext` and
:func:`apply_to_context` returns the updated context.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import re
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from rtstream.dicom.context import StreamContext
from rtstream.endpoints import parse_dicom_peer
from rtstream.errors import ConfigError, RemoteProtocolError
from rtstream.pacs.store import check_aet, check_peer, check_uid

log = logging.getLogger(__name__)

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"  # PS3.4 K.6.1

_DATE_RE = re.compile(r"^\d{8}$")
_DATE_RANGE_RE = re.compile(r"^(\d{8})?-?(\d{8})?$")
_SEXES = {"", "M", "F", "O"}


@dataclass(frozen=True, kw_only=True)
class WorklistConfig:
    """The worklist SCP to ask.

    Parameters
    ----------
    host, port, called_aet : str, int, str
        The worklist SCP, usually given as ``--worklist AET@HOST:PORT``.
    calling_aet : str
        Our AE title (many RIS filter on it).
    timeout : float
        Connect, ACSE and DIMSE timeout in seconds.
    """

    host: str
    port: int
    called_aet: str
    calling_aet: str = "RTSTREAM"
    timeout: float = 10.0

    def __post_init__(self) -> None:
        check_peer("worklist", host=self.host, port=self.port, called_aet=self.called_aet,
                   calling_aet=self.calling_aet, timeout=self.timeout)

    @classmethod
    def from_target(cls, target: str, **kwargs: Any) -> WorklistConfig:
        """Parse ``AET@HOST:PORT`` (the ``--worklist`` option)."""
        t = parse_dicom_peer(target, key="--worklist")
        return cls(host=t.host, port=t.port, called_aet=t.called_aet, **kwargs)


def today() -> str:
    """Today's date, local time, as ``YYYYMMDD``: the default day of a station's query."""
    return datetime.date.today().strftime("%Y%m%d")


@dataclass(frozen=True, kw_only=True)
class WorklistQuery:
    """Matching keys of a worklist query (PS3.4 K.2.2.1; None means *any*).

    Use :meth:`for_station` (today's steps of a station) or :meth:`by_accession`.
    """

    station_aet: str | None = None
    date: str | None = None  # YYYYMMDD or a range YYYYMMDD-YYYYMMDD (PS3.4 C.2.2.2.5)
    modality: str | None = None
    accession_number: str | None = None
    patient_id: str | None = None

    def __post_init__(self) -> None:
        if self.station_aet is not None:
            check_aet(self.station_aet, "station_aet")
        if self.date is not None and (
            not self.date or not _DATE_RANGE_RE.match(self.date) or self.date == "-"
        ):
            raise ConfigError("date", self.date, "YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
        if self.modality is not None and not re.match(r"^[A-Z0-9_ ]{1,16}$", self.modality):
            raise ConfigError("modality", self.modality, "a modality code such as ES or XC")
        for key in ("accession_number", "patient_id"):
            value = getattr(self, key)
            if value is not None and (len(value) > 64 or "\\" in value):
                raise ConfigError(key, value, "at most 64 characters without backslash")

    @classmethod
    def for_station(
        cls, station_aet: str, *, modality: str | None = None, date: str | None = None
    ) -> WorklistQuery:
        """Steps scheduled for ``station_aet`` on ``date`` (today, local time, by default)."""
        return cls(station_aet=station_aet, modality=modality, date=date or today())

    @classmethod
    def by_accession(cls, accession_number: str) -> WorklistQuery:
        """The order with this Accession Number, whatever its date or station."""
        return cls(accession_number=accession_number)


@dataclass(frozen=True, kw_only=True)
class ScheduledStep:
    """One item of the Scheduled Procedure Step Sequence (PS3.3 C.4.10)."""

    station_aet: str = ""
    start_date: str = ""
    start_time: str = ""
    modality: str = ""
    step_id: str = ""
    description: str = ""
    performing_physician: str = ""


@dataclass(frozen=True, kw_only=True)
class WorklistItem:
    """One worklist answer, with the attributes a stream's identity needs."""

    patient_name: str = ""
    patient_id: str = ""
    birth_date: str = ""
    sex: str = ""
    study_instance_uid: str = ""
    accession_number: str = ""
    requested_procedure_description: str = ""
    requested_procedure_id: str = ""
    referring_physician: str = ""
    steps: tuple[ScheduledStep, ...] = ()

    @property
    def step(self) -> ScheduledStep | None:
        """The first scheduled procedure step, if any."""
        return self.steps[0] if self.steps else None


def build_identifier(query: WorklistQuery) -> Dataset:
    """The C-FIND identifier: matching keys from ``query``, return keys empty (Table K.6-1)."""
    ds = Dataset()
    ds.PatientName = ""
    ds.PatientID = query.patient_id or ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = ""
    ds.AccessionNumber = query.accession_number or ""
    ds.RequestedProcedureDescription = ""
    ds.RequestedProcedureID = ""
    ds.ReferringPhysicianName = ""
    step = Dataset()
    step.ScheduledStationAETitle = query.station_aet or ""
    step.ScheduledProcedureStepStartDate = query.date or ""
    step.ScheduledProcedureStepStartTime = ""
    step.Modality = query.modality or ""
    step.ScheduledProcedureStepID = ""
    step.ScheduledProcedureStepDescription = ""
    step.ScheduledPerformingPhysicianName = ""
    ds.ScheduledProcedureStepSequence = DicomSequence([step])
    return ds


def _text(ds: Dataset, keyword: str, name: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception as exc:  # a value that does not decode
        raise RemoteProtocolError(name, f"cannot decode: {exc}") from None
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        raise RemoteProtocolError(name, "undecodable value")
    text = str(value).strip()
    if "\x00" in text:
        raise RemoteProtocolError(name, "contains NUL")
    return text


def _date(ds: Dataset, keyword: str, name: str) -> str:
    text = _text(ds, keyword, name)
    if text and not _DATE_RE.match(text):
        raise RemoteProtocolError(name, f"not a DA value YYYYMMDD: {text[:20]!r}")
    return text


def parse_item(ds: Dataset) -> WorklistItem:
    """Turn one C-FIND answer identifier into a :class:`WorklistItem`.

    Raises
    ------
    RemoteProtocolError
        Naming the attribute that is malformed.
    """
    if not isinstance(ds, Dataset):
        raise RemoteProtocolError("C-FIND identifier", "missing")
    sex = _text(ds, "PatientSex", "Patient's Sex").upper()
    if sex not in _SEXES:
        raise RemoteProtocolError("Patient's Sex", f"not M, F or O: {sex[:8]!r}")
    study = _text(ds, "StudyInstanceUID", "Study Instance UID")
    if study:
        check_uid(study, "Study Instance UID")
    steps = []
    try:
        seq = ds.get("ScheduledProcedureStepSequence") or []
        items = list(seq)
    except Exception as exc:
        raise RemoteProtocolError("Scheduled Procedure Step Sequence", str(exc)) from None
    for item in items:
        if not isinstance(item, Dataset):
            raise RemoteProtocolError("Scheduled Procedure Step Sequence", "item is not a data set")
        steps.append(
            ScheduledStep(
                station_aet=_text(item, "ScheduledStationAETitle", "Scheduled Station AE Title"),
                start_date=_date(
                    item, "ScheduledProcedureStepStartDate", "Scheduled Procedure Step Start Date"
                ),
                start_time=_text(
                    item, "ScheduledProcedureStepStartTime", "Scheduled Procedure Step Start Time"
                ),
                modality=_text(item, "Modality", "Modality"),
                step_id=_text(item, "ScheduledProcedureStepID", "Scheduled Procedure Step ID"),
                description=_text(
                    item,
                    "ScheduledProcedureStepDescription",
                    "Scheduled Procedure Step Description",
                ),
                performing_physician=_text(
                    item,
                    "ScheduledPerformingPhysicianName",
                    "Scheduled Performing Physician's Name",
                ),
            )
        )
    return WorklistItem(
        patient_name=_text(ds, "PatientName", "Patient's Name"),
        patient_id=_text(ds, "PatientID", "Patient ID"),
        birth_date=_date(ds, "PatientBirthDate", "Patient's Birth Date"),
        sex=sex,
        study_instance_uid=study,
        accession_number=_text(ds, "AccessionNumber", "Accession Number"),
        requested_procedure_description=_text(
            ds, "RequestedProcedureDescription", "Requested Procedure Description"
        ),
        requested_procedure_id=_text(ds, "RequestedProcedureID", "Requested Procedure ID"),
        referring_physician=_text(ds, "ReferringPhysicianName", "Referring Physician's Name"),
        steps=tuple(steps),
    )


def find_worklist(cfg: WorklistConfig, query: WorklistQuery) -> list[WorklistItem]:
    """Ask the worklist SCP; blocking (use :func:`find_worklist_async` from asyncio).

    Raises
    ------
    ConnectionError
        When no association could be established or it broke mid-query.
    RemoteProtocolError
        When the SCP answers a failure status or a malformed identifier.
    """
    from pynetdicom import AE

    ae = AE(ae_title=cfg.calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = cfg.timeout
    ae.connection_timeout = cfg.timeout
    ae.add_requested_context(MODALITY_WORKLIST_FIND)
    where = f"{cfg.called_aet}@{cfg.host}:{cfg.port}"
    assoc = ae.associate(cfg.host, cfg.port, ae_title=cfg.called_aet)
    if not assoc.is_established:
        ae.shutdown()
        raise ConnectionError(f"worklist {where}: no association")
    items: list[WorklistItem] = []
    final: int | None = None
    try:
        for status, identifier in assoc.send_c_find(
            build_identifier(query), MODALITY_WORKLIST_FIND
        ):
            if "Status" not in status:
                raise ConnectionError(f"worklist {where}: association lost during C-FIND")
            code = int(status.Status)
            if code in (0xFF00, 0xFF01):
                if identifier is None:
                    raise RemoteProtocolError("C-FIND identifier", "pending answer without one")
                items.append(parse_item(identifier))
                continue
            final = code
        if final is None:
            raise ConnectionError(f"worklist {where}: no final C-FIND status")
        if final not in (0x0000, 0xB001):
            raise RemoteProtocolError("C-FIND status", f"0x{final:04X} from {where}")
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
    log.info("worklist %s: %d item(s)", where, len(items))
    return items


async def find_worklist_async(cfg: WorklistConfig, query: WorklistQuery) -> list[WorklistItem]:
    """:func:`find_worklist` in a worker thread."""
    return await asyncio.to_thread(find_worklist, cfg, query)


def context_fields(item: WorklistItem) -> dict[str, str]:
    """The :class:`~rtstream.dicom.context.StreamContext` fields this item provides."""
    fields = {
        "patient_name": item.patient_name,
        "patient_id": item.patient_id,
        "birth_date": item.birth_date,
        "sex": item.sex,
        "study_description": item.requested_procedure_description,
        "accession_number": item.accession_number,
        "referring_physician": item.referring_physician,
    }
    if item.study_instance_uid:  # otherwise StreamContext generates one
        fields["study_instance_uid"] = item.study_instance_uid
    return fields


def apply_to_context(item: WorklistItem, ctx: StreamContext | None = None) -> StreamContext:
    """``ctx`` (a default :class:`StreamContext` when None) with the item's identity.

    Raises
    ------
    RemoteProtocolError
        Naming the attribute when the worklist value is not acceptable to
        :class:`StreamContext` (e.g. a malformed Patient's Name).
    """
    fields = context_fields(item)
    base = ctx if ctx is not None else StreamContext()
    known = {f.name for f in dataclasses.fields(base)}
    try:
        return dataclasses.replace(base, **{k: v for k, v in fields.items() if k in known})
    except ConfigError as exc:
        raise RemoteProtocolError(f"worklist {exc.key}", str(exc)) from None


__all__ = [
    "MODALITY_WORKLIST_FIND",
    "ScheduledStep",
    "WorklistConfig",
    "WorklistItem",
    "WorklistQuery",
    "apply_to_context",
    "build_identifier",
    "context_fields",
    "find_worklist",
    "find_worklist_async",
    "parse_item",
]
