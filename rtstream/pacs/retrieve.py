"""Query/Retrieve C-GET SCU: fetch one stored instance (a cine or video) from an archive.

Theory of operation
-------------------
:func:`retrieve_instance` fetches the instance with a given SOP Instance UID into a local
folder, in two associations with the archive (PS3.4 Annex C):

1. **Locate** -- a C-FIND of the *Study Root Query/Retrieve Information Model - FIND*
   (Patient Root when the archive refuses Study Root) at ``QueryRetrieveLevel = IMAGE``
   with the SOP Instance UID as the matching key and Study/Series Instance UID, Patient ID
   and SOP Class UID as return keys. A hierarchical C-GET at IMAGE level needs the unique
   keys of every level above (PS3.4 C.4.3.2.1), and knowing the SOP Class lets step 2
   propose exactly the storage contexts it needs. No answer means the UID is not there.
2. **Get** -- a C-GET at IMAGE level with those unique keys. The archive sends the
   instance back as a C-STORE sub-operation *on the same association* (PS3.4 C.4.3.3), so
   we propose the instance's storage SOP class in the SCP role (SCP/SCU Role Selection,
   PS3.7 D.3.3.4), one presentation context per transfer syntax -- an archive cannot
   transcode H.264 or JPEG, so it must find the stored transfer syntax accepted as it is.
   The sub-operation's data set bytes are written unchanged behind a PS3.10 preamble and
   File Meta Information, so the file is byte-for-byte what the archive holds.

When the archive refuses the C-FIND (some allow only retrieval) step 2 runs with the SOP
Instance UID alone and a fixed list of cine-capable storage classes (video endoscopic /
photographic / microscopic, multi-frame ultrasound, secondary capture, XA/RF, ...) with
the common transfer syntaxes, within the 128 presentation contexts an association allows.

Failures raise :class:`RetrieveError` subclasses: :class:`ArchiveUnreachable` (no
association), :class:`InstanceNotFound` and :class:`RetrieveRefused` (a failure status, or
no instance arrived). Everything here blocks; run it in a worker thread from asyncio.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import uid as tsuid
from pydicom.dataset import Dataset

from rtstream.endpoints import parse_dicom_peer
from rtstream.errors import ConfigError, RemoteProtocolError, RtstreamError
from rtstream.pacs.store import check_peer, check_uid

log = logging.getLogger(__name__)

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # PS3.4 C.6.2.1
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"  # PS3.4 C.6.2.3
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"  # PS3.4 C.6.1.1
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"  # PS3.4 C.6.1.3

#: Storage SOP classes whose instances are cines or videos (PS3.4 B.5), proposed when the
#: archive did not tell us the instance's SOP Class UID.
CINE_STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.77.1.1.1",  # Video Endoscopic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.2.1",  # Video Microscopic Image Storage
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
    "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume Storage
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
    "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image Storage
    "1.2.840.10008.5.1.4.1.1.12.2",  # X-Ray Radiofluoroscopic Image Storage
    "1.2.840.10008.5.1.4.1.1.14.1",  # IVOCT Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.77.1.5.1",  # Ophthalmic Photography 8 Bit Image Storage
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
)

#: Every transfer syntax a replayed instance may be stored in (PS3.5 §10, Annex A).
ALL_TRANSFER_SYNTAXES = (
    tsuid.ExplicitVRLittleEndian,
    tsuid.ImplicitVRLittleEndian,
    tsuid.DeflatedExplicitVRLittleEndian,
    tsuid.ExplicitVRBigEndian,
    tsuid.JPEGBaseline8Bit,
    tsuid.JPEGExtended12Bit,
    tsuid.JPEGLossless,
    tsuid.JPEGLosslessSV1,
    tsuid.JPEGLSLossless,
    tsuid.JPEGLSNearLossless,
    tsuid.JPEG2000Lossless,
    tsuid.JPEG2000,
    tsuid.RLELossless,
    tsuid.MPEG2MPML,
    tsuid.MPEG2MPHL,
    tsuid.MPEG4HP41,
    tsuid.MPEG4HP41BD,
    tsuid.MPEG4HP422D,
    tsuid.MPEG4HP423D,
    tsuid.MPEG4HP42STEREO,
    tsuid.HEVCMP51,
    tsuid.HEVCM10P51,
)

#: The common subset proposed for each class of :data:`CINE_STORAGE_CLASSES` (8 x 14 +
#: 2 Q/R contexts stays below the 128 presentation contexts of one association).
COMMON_TRANSFER_SYNTAXES = (
    tsuid.ExplicitVRLittleEndian,
    tsuid.ImplicitVRLittleEndian,
    tsuid.JPEGBaseline8Bit,
    tsuid.JPEGLosslessSV1,
    tsuid.RLELossless,
    tsuid.MPEG2MPML,
    tsuid.MPEG4HP41,
    tsuid.MPEG4HP41BD,
)

_FAILURE_TEXT = {
    0xA701: "out of resources: unable to calculate the number of matches",
    0xA702: "out of resources: unable to perform the sub-operations",
    0xA900: "identifier does not match the SOP class",
    0xB000: "sub-operations completed with failures",
    0xFE00: "cancelled",
}


class RetrieveError(RtstreamError):
    """Retrieving an instance from an archive failed."""


class ArchiveUnreachable(RetrieveError):
    """No association with the archive (down, wrong port, or it rejected our AE title)."""


class InstanceNotFound(RetrieveError):
    """The archive holds no instance with the requested SOP Instance UID."""


class RetrieveRefused(RetrieveError):
    """The archive answered the query or retrieval with a failure, or sent nothing."""


@dataclass(frozen=True, kw_only=True)
class RetrieveConfig:
    """The archive to retrieve from.

    Parameters
    ----------
    host, port, called_aet : str, int, str
        The Query/Retrieve SCP, usually given as ``AET@HOST:PORT``.
    calling_aet : str
        Our AE title; archives commonly allow C-GET only to AE titles they know.
    timeout : float
        Connect, ACSE and DIMSE timeout in seconds.
    """

    host: str
    port: int
    called_aet: str
    calling_aet: str = "RTSTREAM"
    timeout: float = 30.0

    def __post_init__(self) -> None:
        check_peer("archive", host=self.host, port=self.port, called_aet=self.called_aet,
                   calling_aet=self.calling_aet, timeout=self.timeout)

    @classmethod
    def from_target(cls, target: str, *, key: str = "archive", **kwargs: Any) -> RetrieveConfig:
        """Parse ``AET@HOST:PORT``."""
        t = parse_dicom_peer(target, key=key)
        return cls(host=t.host, port=t.port, called_aet=t.called_aet, **kwargs)

    @property
    def where(self) -> str:
        """``AET@HOST:PORT`` for messages."""
        return f"{self.called_aet}@{self.host}:{self.port}"


_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def parse_pacs_spec(spec: str, *, key: str = "--source", **kwargs: Any) -> tuple[RetrieveConfig, str]:
    """Split ``pacs:AET@HOST:PORT/<SOP Instance UID>`` (the ``pacs:`` prefix optional).

    Raises
    ------
    ConfigError
        Naming ``key`` and the expected form.
    """
    form = "pacs:AET@HOST:PORT/<SOP Instance UID>, e.g. pacs:ORTHANC@127.0.0.1:4242/1.2.3.4"
    body = spec[len("pacs:") :] if spec.startswith("pacs:") else spec
    target, sep, uid = body.rpartition("/")
    if not sep or not target:
        raise ConfigError(key, spec, form)
    if not uid or len(uid) > 64 or not _UID_RE.match(uid):
        raise ConfigError(key, spec, form + " (the part after '/' must be a UID of <= 64 chars)")
    try:
        cfg = RetrieveConfig.from_target(target, key=key, **kwargs)
    except ConfigError as exc:
        raise ConfigError(key, spec, f"{form} ({exc.allowed})") from None
    return cfg, uid


@dataclass(frozen=True, kw_only=True)
class InstanceLocation:
    """Where an instance sits in the archive's hierarchy (from the locating C-FIND)."""

    sop_instance_uid: str
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    patient_id: str = ""
    sop_class_uid: str = ""


def _make_ae(cfg: RetrieveConfig) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=cfg.calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = cfg.timeout
    ae.connection_timeout = cfg.timeout
    return ae


def _associate(ae: Any, cfg: RetrieveConfig, **kwargs: Any) -> Any:
    assoc = ae.associate(cfg.host, cfg.port, ae_title=cfg.called_aet, **kwargs)
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        why = (
            f"association rejected (is {cfg.called_aet!r} its AE title, and does it "
            f"accept calls from {cfg.calling_aet!r}?)"
        )
    else:  # pynetdicom reports a refused or timed-out connection as an abort, too
        why = "not reachable, or it aborted the association (connection refused or timed out?)"
    ae.shutdown()
    raise ArchiveUnreachable(f"archive {cfg.where}: {why}")


def _accepted(assoc: Any, abstract_syntax: str) -> bool:
    return any(cx.abstract_syntax == abstract_syntax for cx in assoc.accepted_contexts)


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception as exc:  # a value that does not decode
        raise RemoteProtocolError(keyword, f"cannot decode: {exc}") from None
    return "" if value is None else str(value).strip()


def locate_instance(cfg: RetrieveConfig, sop_instance_uid: str) -> InstanceLocation | None:
    """Find the study, series and SOP class of ``sop_instance_uid`` with C-FIND.

    Returns
    -------
    InstanceLocation or None
        None when the archive has no such instance.

    Raises
    ------
    ArchiveUnreachable
        No association.
    RetrieveRefused
        The archive accepts neither Study nor Patient Root FIND, or answered a failure.
    RemoteProtocolError
        An answer with a malformed UID.
    """
    ae = _make_ae(cfg)
    ae.add_requested_context(STUDY_ROOT_FIND)
    ae.add_requested_context(PATIENT_ROOT_FIND)
    assoc = _associate(ae, cfg)
    try:
        model = next(
            (m for m in (STUDY_ROOT_FIND, PATIENT_ROOT_FIND) if _accepted(assoc, m)), None
        )
        if model is None:
            raise RetrieveRefused(f"archive {cfg.where}: accepts no Query/Retrieve C-FIND")
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.PatientID = ""
        query.StudyInstanceUID = ""
        query.SeriesInstanceUID = ""
        query.SOPInstanceUID = sop_instance_uid
        query.SOPClassUID = ""
        found: list[InstanceLocation] = []
        final: int | None = None
        for status, ident in assoc.send_c_find(query, model):
            if "Status" not in status:
                raise RetrieveRefused(f"archive {cfg.where}: association lost during C-FIND")
            code = int(status.Status)
            if code in (0xFF00, 0xFF01):
                if ident is None:
                    raise RemoteProtocolError("C-FIND identifier", "pending answer without one")
                loc = InstanceLocation(
                    sop_instance_uid=_text(ident, "SOPInstanceUID") or sop_instance_uid,
                    study_instance_uid=_text(ident, "StudyInstanceUID"),
                    series_instance_uid=_text(ident, "SeriesInstanceUID"),
                    patient_id=_text(ident, "PatientID"),
                    sop_class_uid=_text(ident, "SOPClassUID"),
                )
                for name, value in (
                    ("Study Instance UID", loc.study_instance_uid),
                    ("Series Instance UID", loc.series_instance_uid),
                    ("SOP Class UID", loc.sop_class_uid),
                ):
                    if value:
                        check_uid(value, name)
                if loc.sop_instance_uid == sop_instance_uid:
                    found.append(loc)
                continue
            final = code
        if final is None or final not in (0x0000,):
            what = "no final status" if final is None else f"status 0x{final:04X}"
            raise RetrieveRefused(f"archive {cfg.where}: C-FIND failed ({what})")
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
    return found[0] if found else None


def _write_part10(path: Path, file_meta: Dataset, encoded: bytes) -> None:
    """Preamble, ``DICM``, File Meta Information, then the data set bytes as received."""
    from pydicom.filewriter import write_file_meta_info

    with open(path, "wb") as fp:
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, file_meta, enforce_standard=True)  # type: ignore[arg-type]
        fp.write(encoded)


def retrieve_instance(
    cfg: RetrieveConfig,
    sop_instance_uid: str,
    dest_dir: Path,
    *,
    location: InstanceLocation | None = None,
) -> Path:
    """Fetch one instance by C-GET into ``dest_dir/<uid>.dcm`` and return that path.

    Parameters
    ----------
    cfg : RetrieveConfig
        The archive.
    sop_instance_uid : str
        The instance to fetch.
    dest_dir : Path
        An existing folder (e.g. a temporary one).
    location : InstanceLocation or None
        From :func:`locate_instance`; looked up here when None.

    Raises
    ------
    ArchiveUnreachable, InstanceNotFound, RetrieveRefused
        See the module description.
    """
    from pynetdicom import build_role, evt

    check_uid(sop_instance_uid, "SOP Instance UID")
    if location is None:
        try:
            location = locate_instance(cfg, sop_instance_uid)
        except RetrieveRefused as exc:
            log.info("archive %s: no C-FIND (%s); retrieving by UID alone", cfg.where, exc)
            location = InstanceLocation(sop_instance_uid=sop_instance_uid)
        else:
            if location is None:
                raise InstanceNotFound(
                    f"archive {cfg.where}: no instance with SOP Instance UID {sop_instance_uid}"
                )
    ae = _make_ae(cfg)
    ae.add_requested_context(STUDY_ROOT_GET)
    ae.add_requested_context(PATIENT_ROOT_GET)
    if location.sop_class_uid:
        classes: tuple[str, ...] = (location.sop_class_uid,)
        syntaxes: tuple[str, ...] = ALL_TRANSFER_SYNTAXES
    else:
        classes, syntaxes = CINE_STORAGE_CLASSES, COMMON_TRANSFER_SYNTAXES
    for sop_class in classes:
        for ts in syntaxes:
            ae.add_requested_context(sop_class, [ts])
    roles = [build_role(c, scp_role=True) for c in classes]

    target = dest_dir / f"{sop_instance_uid}.dcm"
    received: list[str] = []

    def on_store(event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid != sop_instance_uid:
            log.debug("archive %s sent an instance we did not ask for; ignored", cfg.where)
            return 0x0000
        try:
            _write_part10(target, event.file_meta, event.request.DataSet.getvalue())
        except OSError as exc:
            log.warning("cannot write the retrieved instance to %s: %s", target, exc)
            return 0xA700  # Refused: out of resources
        received.append(uid)
        return 0x0000

    assoc = _associate(ae, cfg, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        model = next((m for m in (STUDY_ROOT_GET, PATIENT_ROOT_GET) if _accepted(assoc, m)), None)
        if model is None:
            raise RetrieveRefused(f"archive {cfg.where}: does not accept C-GET")
        if not any(
            cx.abstract_syntax in classes and cx.as_scp for cx in assoc.accepted_contexts
        ):
            raise RetrieveRefused(
                f"archive {cfg.where}: accepted no storage context in the SCP role for "
                f"{', '.join(classes[:3])}{'...' if len(classes) > 3 else ''}"
            )
        ident = Dataset()
        ident.QueryRetrieveLevel = "IMAGE"
        if model == PATIENT_ROOT_GET and location.patient_id:
            ident.PatientID = location.patient_id
        if location.study_instance_uid:
            ident.StudyInstanceUID = location.study_instance_uid
        if location.series_instance_uid:
            ident.SeriesInstanceUID = location.series_instance_uid
        ident.SOPInstanceUID = sop_instance_uid
        final: int | None = None
        failed = 0
        for status, _ident in assoc.send_c_get(ident, model):
            if "Status" not in status:
                raise RetrieveRefused(
                    f"archive {cfg.where}: association lost during C-GET (does it allow "
                    f"C-GET from our AE title {cfg.calling_aet!r}?)"
                )
            code = int(status.Status)
            if code == 0xFF00:
                continue
            final = code
            failed = int(status.get("NumberOfFailedSubOperations", 0) or 0)
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
    if final is None:
        raise RetrieveRefused(f"archive {cfg.where}: C-GET ended without a final status")
    if not received:
        if final == 0x0000 and not location.sop_class_uid and not location.study_instance_uid:
            raise InstanceNotFound(
                f"archive {cfg.where}: no instance with SOP Instance UID {sop_instance_uid}"
            )
        why = _FAILURE_TEXT.get(final, "failure" if final >= 0xA000 else "no instance sent")
        if failed:
            why += (
                f"; {failed} sub-operation(s) failed (no accepted transfer syntax for "
                "the stored instance?)"
            )
        raise RetrieveRefused(f"archive {cfg.where}: C-GET status 0x{final:04X}: {why}")
    log.info("retrieved %s from %s (%d bytes)", target.name, cfg.where, target.stat().st_size)
    return target


__all__ = [
    "ALL_TRANSFER_SYNTAXES",
    "CINE_STORAGE_CLASSES",
    "COMMON_TRANSFER_SYNTAXES",
    "ArchiveUnreachable",
    "InstanceLocation",
    "InstanceNotFound",
    "RetrieveConfig",
    "RetrieveError",
    "RetrieveRefused",
    "locate_instance",
    "parse_pacs_spec",
    "retrieve_instance",
]
