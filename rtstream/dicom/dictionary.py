"""pydicom dictionary additions rtstream needs (registered once, on import).

pydicom 3.0.2 (DICOM 2024c) lacks (0006,0001) Current Frame Functional Groups Sequence
(PS3.3 C.7.6.27). The registration lives in :mod:`rtstream.proto.rtv_metadata`, which
the wire layer needs on its own; this module re-exports it for the DICOM side.
"""

from __future__ import annotations

from rtstream.proto.rtv_metadata import (
    CURRENT_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
    register_dictionary,
)

__all__ = ["CURRENT_FRAME_FUNCTIONAL_GROUPS_SEQUENCE", "register_dictionary"]

register_dictionary()
