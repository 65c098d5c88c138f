"""Suite-wide fixtures. Peer helpers live in :mod:`tests.peers`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs every hypothesis test with more examples than a developer's quick run.
settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI", "").lower() == "true" else "dev")


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests leave screenshots and logs for a human to look at."""
    d = Path(__file__).resolve().parent.parent / "artifacts"
    d.mkdir(exist_ok=True)
    return d
