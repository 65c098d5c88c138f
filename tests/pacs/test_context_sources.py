"""resolve_context: the stream's identity from Orthanc's ModalityWorklists plugin."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset

from rtstream.dicom.context import StreamContext
from rtstream.errors import ConfigError, RtstreamError
from rtstream.pacs.context import (
    choose_item,
    context_with_worklist,
    resolve_context,
    worklist_overrides,
)
from rtstream.pacs.worklist import ScheduledStep, WorklistItem
from tests.orthanc import Orthanc
from tests.pacs.conftest import TODAY
from tests.pacs.test_worklist import WorklistScp, worklist_entry, write_wl
from tests.peers import free_port

BASE = StreamContext(institution="Test Hospital", station_name="OR-3", patient_name="Stale^Name")


@pytest.fixture(scope="module")
def wl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Dataset]]]:
    work = tmp_path_factory.mktemp("orthanc-ctx")
    folder = work / "worklists"
    folder.mkdir()
    e = worklist_entry
    entries = {
        "ACC101": e(name="Doe^Jane", pid="P101", accession="ACC101", station="ENDO1",
                    modality="ES"),
        "ACC102": e(name="Lee^Ann", pid="P102", accession="ACC102", station="ENDO1",
                    modality="XC"),
        "ACC103": e(name="Poe^Pat", pid="P103", accession="ACC103", station="ENDO1",
                    modality="ES", date="29991231"),
        "ACC201": e(name="Roe^Rick", pid="P201", accession="ACC201", station="ENDO2",
                    modality="ES"),
        "ACC202": e(name="Moe^Max", pid="P202", accession="ACC202", station="ENDO2",
                    modality="ES"),
    }
    for acc, ds in entries.items():
        write_wl(ds, folder / f"{acc}.wl")
    o = Orthanc(work, worklists=folder, aet="CTXWL")
    o.start()
    try:
        yield o.target, entries
    finally:
        o.stop()


def test_single_order_for_this_station_today(wl: tuple[str, dict[str, Dataset]]) -> None:
    target, entries = wl
    ctx = resolve_context(BASE, worklist=target, station_aet="ENDO1", accession=None,
                          modality="ES")
    want = entries["ACC101"]
    assert (ctx.patient_name, ctx.patient_id, ctx.birth_date, ctx.sex) == (
        "Doe^Jane", "P101", "19700102", "F")
    assert ctx.study_instance_uid == want.StudyInstanceUID
    assert ctx.accession_number == "ACC101"
    assert ctx.study_description == "Colonoscopy"
    assert ctx.referring_physician == "Ref^Doctor"
    # device and site values of the base are kept
    assert (ctx.institution, ctx.station_name) == ("Test Hospital", "OR-3")
    # the modality picks the photographic order of the same station
    xc = resolve_context(BASE, worklist=target, station_aet="ENDO1", accession=None,
                         modality="XC")
    assert (xc.accession_number, xc.patient_id) == ("ACC102", "P102")


def test_by_accession_any_date(wl: tuple[str, dict[str, Dataset]]) -> None:
    target, entries = wl
    ctx = resolve_context(BASE, worklist=target, station_aet=None, accession="ACC103",
                          modality="ES")
    assert (ctx.patient_id, ctx.accession_number) == ("P103", "ACC103")
    assert ctx.study_instance_uid == entries["ACC103"].StudyInstanceUID
    with pytest.raises(ConfigError) as err:
        resolve_context(BASE, worklist=target, station_aet=None, accession="NOPE",
                        modality="ES")
    assert err.value.key == "--accession" and "none found" in str(err.value)


def test_ambiguous_and_empty_station_errors_list_accessions_only(
    wl: tuple[str, dict[str, Dataset]],
) -> None:
    target, _ = wl
    with pytest.raises(ConfigError) as err:
        resolve_context(BASE, worklist=target, station_aet="ENDO2", accession=None,
                        modality="ES")
    text = str(err.value)
    assert err.value.key == "--worklist" and "2 found" in text
    assert "'ACC201'" in text and "'ACC202'" in text and "--accession" in text
    for phi in ("Roe", "Moe", "P201", "P202", "19700102"):
        assert phi not in text
    with pytest.raises(ConfigError) as err:
        resolve_context(BASE, worklist=target, station_aet="ENDO9", accession=None,
                        modality="ES")
    assert "none found" in str(err.value) and "'ENDO9'" in str(err.value)
    # today only: ENDO1's order for 2999 is not offered, the ES one of today is
    ctx = resolve_context(BASE, worklist=target, station_aet="ENDO1", accession=None,
                          modality="ES", date=TODAY)
    assert ctx.accession_number == "ACC101"


def test_context_table_for_the_sender(wl: tuple[str, dict[str, Dataset]]) -> None:
    target, _ = wl
    table = {"patient_name": "Stale^Name", "institution": "Here", "device_serial": "SN1"}
    out = context_with_worklist(table, worklist=target, station_aet="ENDO1",
                                sop="photographic")
    assert out["patient_name"] == "Lee^Ann" and out["accession_number"] == "ACC102"
    assert out["institution"] == "Here" and out["device_serial"] == "SN1"
    StreamContext(**out)  # a valid context
    assert context_with_worklist(table, worklist=None) == table
    with pytest.raises(ConfigError):
        context_with_worklist(table, worklist=target, sop="cardiac")


def test_no_worklist_and_misuse() -> None:
    assert resolve_context(BASE, worklist=None, station_aet=None, accession=None,
                           modality="ES") is BASE
    with pytest.raises(ConfigError, match="only together with --worklist"):
        resolve_context(BASE, worklist=None, station_aet="ENDO1", accession=None,
                        modality="ES")
    with pytest.raises(ConfigError) as err:
        resolve_context(BASE, worklist="nonsense", station_aet=None, accession=None,
                        modality="ES")
    assert err.value.key == "--worklist"
    with pytest.raises(ConfigError) as err:
        resolve_context(BASE, worklist="WL@127.0.0.1:1", station_aet=None,
                        accession="X" * 17, modality="ES")
    assert err.value.key == "--accession"


def test_unreachable_worklist_is_a_clear_error() -> None:
    port = free_port(kind=socket.SOCK_STREAM)
    with pytest.raises(ConfigError) as err:
        resolve_context(BASE, worklist=f"WL@127.0.0.1:{port}", station_aet="ENDO1",
                        accession=None, modality="ES", timeout=2)
    assert err.value.key == "--worklist" and "reachable" in str(err.value)


def test_failure_status_and_bad_items_from_a_worklist_scp() -> None:
    scp = WorklistScp([], final=0xC001)
    try:
        with pytest.raises(RtstreamError, match="C-FIND status"):
            resolve_context(BASE, worklist=f"MINIWL@127.0.0.1:{scp.cfg.port}",
                            station_aet="ENDO1", accession=None, modality="ES")
    finally:
        scp.close()
    bad = worklist_entry(name="A^B^C^D^E^F", pid="P", accession="A1", station="ENDO1",
                         modality="ES")
    scp = WorklistScp([bad])
    try:
        with pytest.raises(RtstreamError, match="patient_name") as err:
            resolve_context(BASE, worklist=f"MINIWL@127.0.0.1:{scp.cfg.port}",
                            station_aet="ENDO1", accession=None, modality="ES")
        assert not isinstance(err.value, ConfigError)
    finally:
        scp.close()


def _item(acc: str, pid: str, station: str = "ENDO1", step_id: str = "S1") -> WorklistItem:
    return WorklistItem(patient_id=pid, accession_number=acc,
                        steps=(ScheduledStep(station_aet=station, modality="ES",
                                             step_id=step_id),))


def test_choose_item_rules() -> None:
    kw = {"station_aet": "ENDO1", "modality": "ES", "date": TODAY, "worklist": "WL@h:1"}
    # one order with two scheduled steps comes back twice: still one order
    one = choose_item([_item("A1", "P1", step_id="S1"), _item("A1", "P1", step_id="S2")],
                      accession=None, **kw)
    assert one.accession_number == "A1"
    # an SCP ignoring the accession key: we filter ourselves
    got = choose_item([_item("A1", "P1"), _item("A2", "P2")], accession="A2", **kw)
    assert got.patient_id == "P2"
    # the same accession on orders of two stations: this station's wins
    got = choose_item([_item("A1", "P1", "ENDO2"), _item("A1", "P9", "ENDO1")],
                      accession="A1", **kw)
    assert got.patient_id == "P9"
    with pytest.raises(ConfigError, match="2 orders match"):
        choose_item([_item("A1", "P1", "X"), _item("A1", "P2", "Y")], accession="A1", **kw)
    many = [_item(f"A{i}", f"P{i}") for i in range(14)]
    with pytest.raises(ConfigError) as err:
        choose_item(many, accession=None, **kw)
    assert "14 found" in str(err.value) and "and 4 more" in str(err.value)


def test_worklist_overrides_only_changed_fields() -> None:
    base = StreamContext(institution="I")
    resolved = StreamContext(institution="I", patient_id="P7",
                             study_instance_uid=base.study_instance_uid)
    assert worklist_overrides(base, resolved) == {"patient_id": "P7"}


def test_send_cli_takes_identity_from_the_worklist(wl: tuple[str, dict[str, Dataset]]) -> None:
    """`rtstream send --worklist` puts the chosen order into the sender's static part."""
    from rtstream.cli import build_parser
    from rtstream.commands.send import build_config

    target, entries = wl
    args = build_parser().parse_args(
        ["send", "--source", "testsrc", "--dest", "127.0.0.1:5004", "--patient-name",
         "Stale^Name", "--worklist", target, "--station-aet", "ENDO1"]
    )
    cfg = build_config(args)
    assert cfg.context["patient_name"] == "Doe^Jane"
    assert cfg.context["accession_number"] == "ACC101"
    assert cfg.context["study_instance_uid"] == entries["ACC101"].StudyInstanceUID
    args = build_parser().parse_args(
        ["send", "--source", "testsrc", "--dest", "127.0.0.1:5004", "--worklist", target,
         "--accession-number", "ACC202"]
    )
    assert build_config(args).context["patient_id"] == "P202"
