"""Orthanc accepts a snapshot's findings: the presentation state and the TID 1500 SR arrive
by C-STORE beside the image, in its study, each in its own series, referencing it."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from rtstream.receiver import Receiver, ReceiverConfig
from rtstream.receiver.analysis import AnalysisContext
from tests.net.test_analysis import consuming, rtstream_send, until
from tests.orthanc import Orthanc
from tests.peers import require_program


def detect(frame: np.ndarray, ctx: AnalysisContext) -> list[dict[str, Any]]:
    return [{"label": "band", "box": [10, 20, 60, 30], "score": 0.8},
            {"label": "tip", "point": [160, 120], "text": "needle tip"}]


@pytest.mark.peer("Orthanc")
async def test_orthanc_accepts_presentation_state_and_report(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    require_program("Orthanc")
    with rtstream_send(tmp_path, "320x240@30") as sdp:
        rx = Receiver(ReceiverConfig(sdp=str(sdp), store=orthanc.target,
                                     outbox=tmp_path / "outbox"))
        analyzer = rx.analyze(detect)
        async with consuming(rx):
            await until(lambda: analyzer.findings >= 2, "findings")
            await until(lambda: all(m.static is not None for m in rx.metadata), "static part")
            res = await rx.snapshot()
            assert res.ok, res
            arch = rx.findings_archiver
            assert arch is not None
            await until(lambda: len(arch.results) == 2, "findings queued")
            results = await asyncio.gather(*(f for _, f in arch.results))
    assert all(r.ok for r in results), results
    uids = await asyncio.to_thread(orthanc.sop_instance_uids)
    ps_uid, sr_uid = (uid for uid, _ in arch.results)
    assert sorted(uids) == sorted([res.sop_instance_uid, ps_uid, sr_uid])
    image = pydicom.dcmread(io.BytesIO(await asyncio.to_thread(orthanc.file, res.sop_instance_uid)))
    ps = pydicom.dcmread(io.BytesIO(await asyncio.to_thread(orthanc.file, ps_uid)))
    sr = pydicom.dcmread(io.BytesIO(await asyncio.to_thread(orthanc.file, sr_uid)))
    # listed with the image: one patient, one study holding three series
    studies = await asyncio.to_thread(orthanc.get, "/studies")
    assert len(studies) == 1
    series = await asyncio.to_thread(orthanc.get, f"/studies/{studies[0]}/series")
    assert sorted(s["MainDicomTags"].get("Modality") for s in series) == ["ES", "PR", "SR"]
    ref = ps.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == image.SOPInstanceUID
    ev = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert ev.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID
    assert ps.StudyInstanceUID == sr.StudyInstanceUID == image.StudyInstanceUID
