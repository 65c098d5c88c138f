"""Clips (H.264 and HEVC in MP4) through C-STORE into Orthanc and dcmtk storescp.

The archives keep the container bytes as sent: the first Pixel Data fragment Orthanc
serves, and the file storescp writes, are the MP4 that ffprobe reads with every frame.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import generate_fragments
from pydicom.uid import HEVCMP51, MPEG4HP41

from rtstream.pacs.store import StoreClient
from tests.dicom.test_clip_container import FMT_2160, clip, ffprobe, sized
from tests.orthanc import Orthanc
from tests.pacs.conftest import StoreScp
from tests.pacs.test_store import fast
from tests.vectors.rtv_vectors import VIDEO_FMT


@pytest.mark.peer("Orthanc")
async def test_clips_into_orthanc(orthanc: Orthanc, tmp_path: Path) -> None:
    clips = [clip(VIDEO_FMT, 6), clip(sized(FMT_2160, 60), 2)]
    async with StoreClient(fast(tmp_path / "outbox", orthanc.target)) as sc:
        for ds in clips:
            result = await sc.submit(ds)
            assert result.ok and result.status == 0, result
    for ds, ts in zip(clips, (MPEG4HP41, HEVCMP51), strict=True):
        back = pydicom.dcmread(io.BytesIO(orthanc.file(ds.SOPInstanceUID)))
        assert back.file_meta.TransferSyntaxUID == ts
        (instance,) = [
            i for i in orthanc.instances() if orthanc.tags(i)["SOPInstanceUID"] == ds.SOPInstanceUID
        ]
        # Orthanc serves the first (only) fragment as is: the MP4 container.
        fragment = orthanc.get_bytes(f"/instances/{instance}/frames/0/raw")
        assert fragment == b"".join(generate_fragments(ds.PixelData))
        probe = ffprobe(fragment)
        assert probe["format"]["format_name"].startswith("mov,mp4")  # type: ignore[index]
        (stream,) = probe["streams"]  # type: ignore[misc]
        assert int(stream["nb_read_frames"]) == ds.NumberOfFrames


@pytest.mark.peer("storescp")
async def test_clips_into_storescp(storescp: StoreScp, tmp_path: Path) -> None:
    clips = [clip(VIDEO_FMT, 6), clip(sized(FMT_2160, 60), 2)]
    async with StoreClient(fast(tmp_path / "outbox", storescp.target)) as sc:
        for ds in clips:
            assert (await sc.submit(ds)).ok
    for ds in clips:
        back = pydicom.dcmread(storescp.file_for(ds.SOPInstanceUID))
        assert back.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        assert back.PixelData == ds.PixelData
