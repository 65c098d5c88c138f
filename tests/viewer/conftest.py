"""Fixtures of the viewer tests: a synthetic feed and the Chromium command line."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rtstream.viewer.encoder import SharedEncoder
from rtstream.viewer.server import TestPattern

CHROMIUM = "/usr/bin/chromium"

# DESIGN.md §6; Playwright adds a fresh --user-data-dir and its own --headless.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

OVERLAY = {
    "patient_name": "Doe^Jane",
    "patient_id": "RTS-0042",
    "study_description": "Colonoscopy",
    "modality": "ES",
    "sop_class": "Video Endoscopic Image Real-Time Communication",
}


def make_pattern(**kw: object) -> TestPattern:
    """The synthetic feed every viewer test uses (the test source's sector picture, patient Doe^Jane)."""
    args: dict[str, object] = {"width": 320, "height": 240, "fps": 30, "overlay": OVERLAY}
    args.update(kw)
    return TestPattern(**args)  # type: ignore[arg-type]


@pytest.fixture
def encoder_count() -> Iterator[int]:
    """``SharedEncoder.created`` before the test, so tests can count what they made."""
    yield SharedEncoder.created
