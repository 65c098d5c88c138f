"""``--patient-id/--patient-name/--accession-number/--study-description/--modality``: the
patient and study context given on the command line, one set of flags for every command.

``rtstream send`` puts them into the stream's static part (``SenderConfig.context``);
``receive`` and ``view`` use them as the identity of a stream without DICOM-RTV metadata
(``ReceiverConfig.context``). Both check the values against their DICOM VRs.
"""

from __future__ import annotations

import argparse

#: flag destination -> StreamContext key
_KEYS = {
    "patient_id": "patient_id",
    "patient_name": "patient_name",
    "accession_number": "accession_number",
    "study_description": "study_description",
    "modality": "modality",
}

_RECEIVER_TITLE = ("identity for a stream without DICOM-RTV metadata (a third-party ST 2110 "
                   "SDP); without it, snapshots and clips of such a stream are refused")


def add_identity_arguments(parser: argparse.ArgumentParser, *, title: str = _RECEIVER_TITLE) -> None:
    """Add the context flags under ``title`` (the receivers' wording by default)."""
    group = parser.add_argument_group(title)
    group.add_argument("--patient-id", metavar="ID", help="Patient ID (receive/view: needed for an identity)")
    group.add_argument("--patient-name", metavar="PN", help="Patient's Name, e.g. Doe^Jane")
    group.add_argument("--accession-number", "--accession", dest="accession_number",
                       metavar="NUMBER", help="Accession Number of the order")
    group.add_argument("--study-description", metavar="TEXT", help="Study Description")
    group.add_argument("--modality", metavar="TERM",
                       help="the imaged modality, a DICOM defined term (US, ES, XC, OPT, ...)")


def context_from_args(args: argparse.Namespace) -> dict[str, str] | None:
    """The context mapping of the flags that were given, None when none was."""
    context = {key: getattr(args, dest) for dest, key in _KEYS.items()
               if getattr(args, dest, None) is not None}
    return context or None
