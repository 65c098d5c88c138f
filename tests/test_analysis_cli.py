"""``--analyze`` on the command line: a bad spec is a clear error naming the flag; the
examples run against ``rtstream send`` (real processes), store their findings with
snapshots (MQTT events: tests/control/test_findings_events.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from tests.dicom.test_stored_trust import dcentvfy
from tests.net.test_analysis import rtstream_send

ROOT = Path(__file__).resolve().parent.parent
RTSTREAM = [sys.executable, "-m", "rtstream"]


def rtstream(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RTSTREAM, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize(("spec", "says"), [
    ("nocolon", "MODULE:CALLABLE"),
    ("no_such_module_xyz:fn", "an importable module (ModuleNotFoundError"),
    ("examples/missing.py:detect", "an existing Python file"),
    ("examples/bright_band.py:nope", "has no 'nope'"),
    ("examples/bright_band.py:BAND", "a callable (BAND is a float)"),
])
@pytest.mark.parametrize("command", ["receive", "view"])
def test_bad_analyze_spec_names_the_flag(command: str, spec: str, says: str) -> None:
    res = rtstream(command, "--sdp", "/nonexistent.sdp", "--analyze", spec)
    assert res.returncode == 2, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert "--analyze" in line and says in line, line


def test_view_refuses_analyze_on_the_test_pattern() -> None:
    res = rtstream("view", "--test-pattern", "--analyze", "examples/bright_band.py:detect")
    assert res.returncode == 2
    assert "--analyze" in res.stderr and "--sdp" in res.stderr


def test_receive_runs_the_onnx_example(tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    with rtstream_send(tmp_path, "640x360@30") as sdp:
        res = rtstream("receive", "--sdp", str(sdp), "--frames", "60", "--analyze",
                       "examples/onnx_detector.py:detect", "--stats-json", str(stats))
    assert res.returncode == 0, res.stderr
    st = json.loads(stats.read_text())
    a = st["analysis"]
    assert a["analysed"] > 0 and a["findings"] > 0 and a["exceptions"] == 0, a
    assert a["analysed"] + a["skipped"] == a["offered"] == 60
    assert st["packets_lost"] == 0, res.stderr[-3000:]


def test_receive_stores_findings_with_periodic_snapshots(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    with rtstream_send(tmp_path, "320x240@30") as sdp:
        res = rtstream("receive", "--sdp", str(sdp), "--duration", "4", "--snapshot-every",
                       "1.5", "--store-dir", str(archive), "--outbox", str(tmp_path / "ob"),
                       "--analyze", "examples/bright_band.py:detect", "--store-findings", "ps")
    assert res.returncode == 0, res.stderr
    by_kind: dict[str, list[pydicom.Dataset]] = {}
    for p in archive.iterdir():
        ds = pydicom.dcmread(p)
        by_kind.setdefault(str(ds.Modality), []).append(ds)
    images = {ds.SOPInstanceUID for ds in by_kind["ES"]}
    assert len(images) >= 2 and "SR" not in by_kind  # --store-findings ps: no report
    refs = {ps.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID
            for ps in by_kind["PR"]}
    assert refs == images



def test_a_session_with_everything_is_one_study_an_archive_trusts(tmp_path: Path) -> None:
    """Snapshots, their presentation states and reports, a clip and its audio, stored by
    one receiving session: one patient, one study, every series its own Series Number,
    and dcentvfy finds no Error across the files (a PACS administrator's view)."""
    archive = tmp_path / "archive"
    with rtstream_send(tmp_path, "320x240@30", "--audio") as sdp:
        res = rtstream("receive", "--sdp", str(sdp), "--duration", "5", "--snapshot-every",
                       "1.5", "--record", "2", "--store-dir", str(archive), "--outbox",
                       str(tmp_path / "ob"), "--analyze", "examples/bright_band.py:detect")
    assert res.returncode == 0, res.stderr
    files = sorted(archive.iterdir())
    sets = [pydicom.dcmread(p) for p in files]
    assert {str(ds.Modality) for ds in sets} == {"ES", "PR", "SR", "AU"}
    assert len({ds.StudyInstanceUID for ds in sets}) == 1
    assert {str(ds.PatientID) for ds in sets} == {"RTS-AN-1"}
    numbers = {ds.SeriesInstanceUID: int(ds.SeriesNumber) for ds in sets}
    assert len(set(numbers.values())) == len(numbers) == 5, numbers  # stills, clip, AU, PR, SR
    errors = [line for line in dcentvfy(files) if line.startswith("Error")]
    assert errors == []

def test_demo_runs_the_numpy_example(tmp_path: Path) -> None:
    """``make demo``'s stream with the example: snapshots land in the embedded archive with
    their findings beside them."""
    res = subprocess.run(
        [*RTSTREAM, "demo", "--duration", "6", "--video", "640x360@30", "--http",
         "127.0.0.1:0", "--snapshot-every", "2", "--archive-dir", str(tmp_path / "archive"),
         "--outbox", str(tmp_path / "outbox"), "--analyze", str(ROOT / "examples" /
                                                               "bright_band.py") + ":detect"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    kinds: dict[str, list[pydicom.Dataset]] = {}
    for p in (tmp_path / "archive").rglob("*"):
        if p.is_file():
            ds = pydicom.dcmread(p)
            kinds.setdefault(str(ds.Modality), []).append(ds)
    images = {ds.SOPInstanceUID for ds in kinds["ES"]}
    assert images and len(kinds["PR"]) == len(kinds["SR"]) == len(images), kinds.keys()
    for ds in kinds["SR"]:
        ev = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        assert ev.ReferencedSOPSequence[0].ReferencedSOPInstanceUID in images
    # the closing lines say what the callable did, with the same counts as the receiver's
    line = next(x for x in res.stdout.splitlines() + res.stderr.splitlines()
                if "analysis:" in x)
    m = re.search(r"analysis: (\d+) frame\(s\) analysed, (\d+) skipped .*?(\d+) finding\(s\), "
                  r"(\d+) malformed, (\d+) exception\(s\)", line)
    assert m is not None, line
    analysed, _, findings, malformed, exceptions = map(int, m.groups())
    assert analysed > 0 and findings > 0 and malformed == exceptions == 0
