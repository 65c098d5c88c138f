"""Modality Worklist C-FIND against Orthanc's ModalityWorklists plugin and a pynetdicom SCP."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt

from rtstream.dicom.context import StreamContext
from rtstream.errors import ConfigError, RemoteProtocolError
from rtstream.pacs.worklist import (
    MODALITY_WORKLIST_FIND,
    WorklistConfig,
    WorklistItem,
    WorklistQuery,
    apply_to_context,
    context_fields,
    find_worklist,
    find_worklist_async,
    parse_item,
)
from tests.orthanc import Orthanc
from tests.pacs.conftest import TODAY
from tests.peers import free_port


def worklist_entry(
    *,
    name: str,
    pid: str,
    accession: str,
    station: str,
    modality: str,
    date: str = TODAY,
    study_uid: str | None = None,
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = name
    ds.PatientID = pid
    ds.PatientBirthDate = "19700102"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.AccessionNumber = accession
    ds.RequestedProcedureDescription = "Colonoscopy"
    ds.RequestedProcedureID = "RP" + accession
    ds.ReferringPhysicianName = "Ref^Doctor"
    step = Dataset()
    step.ScheduledStationAETitle = station
    step.ScheduledProcedureStepStartDate = date
    step.ScheduledProcedureStepStartTime = "093000"
    step.Modality = modality
    step.ScheduledProcedureStepID = "SPS" + accession
    step.ScheduledProcedureStepDescription = "Screening"
    step.ScheduledPerformingPhysicianName = "Perf^Doctor"
    ds.ScheduledProcedureStepSequence = DicomSequence([step])
    return ds


def write_wl(ds: Dataset, path: Path) -> None:
    """A worklist file as Orthanc's plugin reads them (PS3.10 file, like dump2dcm writes)."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(MODALITY_WORKLIST_FIND)
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def worklist_orthanc(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Orthanc, dict[str, Dataset]]]:
    work = tmp_path_factory.mktemp("orthanc-wl")
    wl_dir = work / "worklists"
    wl_dir.mkdir()
    entries = {
        "mine": worklist_entry(
            name="Doe^Jane", pid="P001", accession="ACC001", station="ENDO1", modality="ES"
        ),
        "other_station": worklist_entry(
            name="Roe^Rick", pid="P002", accession="ACC002", station="ENDO2", modality="ES"
        ),
        "tomorrow": worklist_entry(
            name="Poe^Pat",
            pid="P003",
            accession="ACC003",
            station="ENDO1",
            modality="ES",
            date="29991231",
        ),
        "other_modality": worklist_entry(
            name="Moe^Max", pid="P004", accession="ACC004", station="ENDO1", modality="XC"
        ),
    }
    for key, ds in entries.items():
        write_wl(ds, wl_dir / f"{key}.wl")
    o = Orthanc(work, worklists=wl_dir, aet="WLORTHANC")
    o.start()
    try:
        yield o, entries
    finally:
        o.stop()


def test_orthanc_worklist_by_station_today_and_modality(
    worklist_orthanc: tuple[Orthanc, dict[str, Dataset]],
) -> None:
    o, entries = worklist_orthanc
    cfg = WorklistConfig.from_target(o.target)
    items = find_worklist(cfg, WorklistQuery.for_station("ENDO1", modality="ES"))
    assert len(items) == 1
    item = items[0]
    want = entries["mine"]
    assert item.patient_name == "Doe^Jane" and item.patient_id == "P001"
    assert item.birth_date == "19700102" and item.sex == "F"
    assert item.study_instance_uid == want.StudyInstanceUID
    assert item.accession_number == "ACC001"
    assert item.requested_procedure_description == "Colonoscopy"
    assert item.requested_procedure_id == "RPACC001"
    assert item.referring_physician == "Ref^Doctor"
    assert item.step is not None
    assert (item.step.station_aet, item.step.start_date, item.step.modality) == (
        "ENDO1",
        TODAY,
        "ES",
    )
    assert item.step.step_id == "SPSACC001"
    both = find_worklist(cfg, WorklistQuery.for_station("ENDO1"))
    assert {i.accession_number for i in both} == {"ACC001", "ACC004"}


async def test_orthanc_worklist_by_accession(
    worklist_orthanc: tuple[Orthanc, dict[str, Dataset]],
) -> None:
    o, entries = worklist_orthanc
    cfg = WorklistConfig.from_target(o.target)
    items = await find_worklist_async(cfg, WorklistQuery.by_accession("ACC003"))
    assert [i.patient_id for i in items] == ["P003"]
    assert items[0].step is not None and items[0].step.start_date == "29991231"
    assert await find_worklist_async(cfg, WorklistQuery.by_accession("NOPE")) == []


def test_context_mapping() -> None:
    item = WorklistItem(
        patient_name="Doe^Jane",
        patient_id="P1",
        birth_date="19700102",
        sex="F",
        study_instance_uid="1.2.3",
        accession_number="A1",
        requested_procedure_description="Colonoscopy",
        referring_physician="Ref^Doc",
    )
    fields = context_fields(item)
    assert fields == {
        "patient_name": "Doe^Jane",
        "patient_id": "P1",
        "birth_date": "19700102",
        "sex": "F",
        "study_instance_uid": "1.2.3",
        "study_description": "Colonoscopy",
        "accession_number": "A1",
        "referring_physician": "Ref^Doc",
    }
    assert "study_instance_uid" not in context_fields(WorklistItem(patient_id="P2"))
    ctx = apply_to_context(item)
    assert isinstance(ctx, StreamContext)
    for key, value in fields.items():
        assert getattr(ctx, key) == value
    kept = apply_to_context(WorklistItem(patient_id="P2"), StreamContext(institution="Here"))
    assert kept.institution == "Here" and kept.patient_id == "P2"
    with pytest.raises(RemoteProtocolError) as exc:
        apply_to_context(WorklistItem(patient_name="A^B^C^D^E^F^G"))
    assert "patient_name" in exc.value.field


class WorklistScp:
    """A tiny pynetdicom worklist SCP answering scripted identifiers."""

    def __init__(self, answers: list[Dataset], final: int = 0x0000) -> None:
        self.answers = answers
        self.final = final
        self.queries: list[Dataset] = []
        self.ae = AE(ae_title="MINIWL")
        self.ae.add_supported_context(MODALITY_WORKLIST_FIND)
        server = self.ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, self.on_find)]
        )
        assert server is not None
        self.server = server
        self.cfg = WorklistConfig(
            host="127.0.0.1",
            port=self.server.server_address[1],
            called_aet="MINIWL",
            calling_aet="ENDO1",
        )

    def on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        self.queries.append(event.identifier)
        for ds in self.answers:
            yield 0xFF00, ds
        yield self.final, None

    def close(self) -> None:
        self.server.shutdown()
        self.ae.shutdown()


def test_pynetdicom_worklist_scp_query_and_answers() -> None:
    a = worklist_entry(name="Doe^Jane", pid="P1", accession="A1", station="ENDO1", modality="ES")
    b = worklist_entry(name="Roe^Rick", pid="P2", accession="A2", station="ENDO1", modality="ES")
    scp = WorklistScp([a, b])
    try:
        items = find_worklist(
            scp.cfg, WorklistQuery.for_station("ENDO1", modality="ES", date="20260101-20260131")
        )
    finally:
        scp.close()
    assert [i.patient_id for i in items] == ["P1", "P2"]
    (q,) = scp.queries
    step = q.ScheduledProcedureStepSequence[0]
    assert step.ScheduledStationAETitle == "ENDO1" and step.Modality == "ES"
    assert step.ScheduledProcedureStepStartDate == "20260101-20260131"
    assert q.PatientName == "" and q.AccessionNumber == ""  # return keys, universal


def test_worklist_scp_failure_and_malformed_answers() -> None:
    scp = WorklistScp([], final=0xA700)
    try:
        with pytest.raises(RemoteProtocolError) as exc:
            find_worklist(scp.cfg, WorklistQuery.by_accession("A1"))
        assert exc.value.field == "C-FIND status"
    finally:
        scp.close()
    bad = worklist_entry(name="X", pid="P", accession="A", station="S", modality="ES")
    bad.PatientSex = "Q"
    scp = WorklistScp([bad])
    try:
        with pytest.raises(RemoteProtocolError) as exc:
            find_worklist(scp.cfg, WorklistQuery.by_accession("A"))
        assert exc.value.field == "Patient's Sex"
    finally:
        scp.close()


def test_unreachable_worklist() -> None:
    cfg = WorklistConfig(
        host="127.0.0.1", port=free_port(kind=socket.SOCK_STREAM), called_aet="NOBODY", timeout=2
    )
    with pytest.raises(ConnectionError):
        find_worklist(cfg, WorklistQuery.by_accession("A"))


def test_config_and_query_validation() -> None:
    with pytest.raises(ConfigError) as exc:
        WorklistConfig.from_target("nope")
    assert exc.value.key == "--worklist"
    with pytest.raises(ConfigError):
        WorklistQuery(date="2026-01-01")
    with pytest.raises(ConfigError):
        WorklistQuery(modality="es!")
    with pytest.raises(ConfigError):
        WorklistQuery(station_aet="X" * 17)
    assert WorklistQuery.for_station("ENDO1").date == TODAY


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
@given(
    sex=st.text(max_size=3),
    birth=st.text(max_size=10),
    uid=st.text(max_size=20),
    name=st.text(max_size=20),
)
def test_parse_item_garbage_is_remote_protocol_error(
    sex: str, birth: str, uid: str, name: str
) -> None:
    ds = Dataset()
    ds.PatientName = name
    ds.PatientSex = sex
    ds.PatientBirthDate = birth
    ds.StudyInstanceUID = uid
    step = Dataset()
    step.ScheduledProcedureStepStartDate = birth
    ds.ScheduledProcedureStepSequence = DicomSequence([step])
    try:
        item = parse_item(ds)
    except RemoteProtocolError as exc:
        assert exc.field
        return
    assert item.sex in {"", "M", "F", "O"}
    assert item.birth_date == "" or len(item.birth_date) == 8


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_parse_item_truncated_answers() -> None:
    from pynetdicom.dsutils import decode, encode

    ds = worklist_entry(name="Doe^Jane", pid="P1", accession="A1", station="ENDO1", modality="ES")
    raw = encode(ds, False, True)
    assert raw is not None
    assert parse_item(decode(io.BytesIO(raw), False, True)).patient_id == "P1"
    for n in range(len(raw)):
        for data in (raw[:n], raw[:n] + b"\xff\x13garbage\x00" * 3):
            try:
                decoded = decode(io.BytesIO(data), False, True)
            except Exception:
                continue  # pynetdicom drops the message before it reaches us
            try:
                parse_item(decoded)
            except RemoteProtocolError as exc:
                assert exc.field
