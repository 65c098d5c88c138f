"""``--patient-id/--patient-name/--accession-number/--study-description``: the identity a
site gives a stream without DICOM-RTV metadata, shared by ``receive`` and ``view``.

The names are those of ``rtstream send``'s context flags; the values become
``ReceiverConfig.context`` (checked there against their DICOM VRs).
"""

from __future__ import annotations

import argparse

#: flag destination -> StreamContext key
_KEYS = {
    "patient_id": "patient_id",
    "patient_name": "patient_name",
    "accession_number": "accession_number",
    "study_description": "study_description",
}


def add_identity_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the identity flags (used only for video flows without a metadata flow)."""
    group = parser.add_argument_group(
        "identity for a stream without DICOM-RTV metadata (a third-party ST 2110 SDP); "
        "without it, snapshots and clips of such a stream are refused")
    group.add_argument("--patient-id", metavar="ID", help="Patient ID (required for an identity)")
    group.add_argument("--patient-name", metavar="PN", help="Patient's Name, e.g. Doe^Jane")
    group.add_argument("--accession-number", "--accession", dest="accession_number",
                       metavar="NUMBER", help="Accession Number of the order")
    group.add_argument("--study-description", metavar="TEXT", help="Study Description")


def context_from_args(args: argparse.Namespace) -> dict[str, str] | None:
    """The ``ReceiverConfig.context`` of the identity flags, None when none was given."""
    context = {key: getattr(args, dest) for dest, key in _KEYS.items()
               if getattr(args, dest, None) is not None}
    return context or None
