"""Getting stored instances to an archive without losing one: outbox + C-STORE SCU.

Theory of operation
-------------------
Every instance handed to :meth:`StoreClient.submit` is first made durable in the
:class:`Outbox`, a plain directory: the instance is written as a DICOM file (PS3.10) under a
temporary name, ``fsync``-ed, then hard-linked to ``<SOP Instance UID>.dcm`` (``link`` fails
instead of replacing an existing name, so a queued instance is never overwritten) and the
directory is ``fsync``-ed. Only then is the instance queued for sending. A file leaves the
outbox only after the archive answered a success or warning status (PS3.4 B.2.3), or it is
moved to ``outbox/failed/`` after a permanent failure: nothing is ever deleted unsent. On
start every file still in the outbox is replayed, oldest first (arrival order is kept in the
files' modification times, made strictly increasing on write).

Delivery is therefore *at least once*: a process killed after the archive stored an
instance but before the outbox file was removed sends it again on restart. Archives key
instances by SOP Instance UID, so the resend does not create a second instance; a 0x0111
*Duplicate SOP Instance* answer counts as stored.

One asyncio task takes the queued instances in order and runs every pynetdicom call in one
dedicated worker thread, so the event loop never blocks and one association is reused for
consecutive instances; it is released after ``idle_timeout`` seconds without work. Each
association proposes, for every SOP class seen so far, the instance's own transfer syntax
plus Explicit and Implicit VR Little Endian, each in a separate presentation context so the
SCP can accept the encoded form as it is (PS3.8 §9.3.2.2).

Failures are told apart as follows (PS3.4 Annex B.2.3, PS3.7 Annex C):

========================================  =========================================
answer                                    action
========================================  =========================================
0x0000 success, 0xB000/0xB006/0xB007 and   stored: remove from the outbox
other warnings, 0x0111 duplicate instance
0xA7xx out of resources, 0x0213 resource   retry with exponential back-off; after
limitation, 0x0110 processing failure,     ``max_retries`` retries the instance is
0xFE00 cancel, association aborted while   moved to ``failed/``
the instance was in flight
no association at all (connection          an *outage*: retried with back-off for as
refused, association rejected or aborted   long as it lasts and not counted against
during negotiation)                        ``max_retries``; ``"outage"`` and
                                           ``"recovered"`` events are reported
0xA9xx data set does not match SOP class,  permanent: moved to ``failed/`` at once
0xCxxx cannot understand, 0x0122 SOP
class not supported, 0x0124 not
authorised, any other failure code, no
presentation context accepted, unreadable
outbox file
========================================  =========================================
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import itertools
import logging
import os
import re
import shutil
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from rtstream.endpoints import DicomPeer, check_aet, check_port, parse_dicom_peer
from rtstream.errors import ConfigError, LocalProtocolError, RemoteProtocolError

log = logging.getLogger(__name__)

T = TypeVar("T")

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_TMP_PREFIX = ".tmp-"
_UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
_MAX_CONTEXTS = 128  # PS3.8 §9.3.2.2: presentation context IDs are odd numbers 1..255


# ---------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------


def check_uid(uid: object, field_name: str) -> str:
    """Return ``uid`` if it is a syntactically valid UID (PS3.5 §9.1), else raise.

    The UID becomes a file name, so this also keeps path separators and ``..`` out.

    Raises
    ------
    RemoteProtocolError
        Naming ``field_name`` when the value is not a UID of at most 64 characters.
    """
    text = str(uid) if uid is not None else ""
    if not text or len(text) > 64 or not _UID_RE.match(text):
        raise RemoteProtocolError(field_name, f"not a valid UID: {text[:80]!r}")
    return text


def check_peer(
    what: str, *, host: str, port: int, called_aet: str, calling_aet: str, timeout: float
) -> None:
    """Validate the address, AE titles and timeout of a DICOM peer (archive, worklist...).

    Raises
    ------
    ConfigError
        Naming ``"<what> <field>"``, e.g. ``worklist port``.
    """
    if not host:
        raise ConfigError(f"{what} host", host, "a host name or address")
    check_port(port, f"{what} port", what="TCP port")
    check_aet(called_aet, f"{what} called_aet")
    check_aet(calling_aet, f"{what} calling_aet")
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"{what} timeout", timeout, "a positive number of seconds")


def parse_store_target(text: str, *, key: str = "--store") -> DicomPeer:
    """Parse ``AET@HOST:PORT`` (``AET@[::1]:PORT`` for IPv6): the archive of ``--store``.

    The rules are :func:`rtstream.endpoints.parse_dicom_peer`'s; ``key`` is named in errors.

    Raises
    ------
    ConfigError
        Naming ``key`` and the expected form when ``text`` does not parse.
    """
    return parse_dicom_peer(text, key=key)


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TlsSettings:
    """TLS for the DICOM association (PS3.15 Annex B.1, *Basic TLS Secure Transport*).

    Parameters
    ----------
    ca_file : Path
        CA bundle (PEM) the archive's certificate must chain to.
    cert_file, key_file : Path or None
        Our client certificate and key (PEM), when the archive requires one.
    server_hostname : str or None
        Name to check the certificate against; None uses the configured host.
    check_hostname : bool
        Verify the certificate's name (the chain is always verified).
    """

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    server_hostname: str | None = None
    check_hostname: bool = True

    def __post_init__(self) -> None:
        if not Path(self.ca_file).is_file():
            raise ConfigError("tls.ca_file", str(self.ca_file), "an existing PEM file")
        if self.key_file is not None and self.cert_file is None:
            raise ConfigError("tls.key_file", str(self.key_file), "only together with cert_file")
        for key, value in (("tls.cert_file", self.cert_file), ("tls.key_file", self.key_file)):
            if value is not None and not Path(value).is_file():
                raise ConfigError(key, str(value), "an existing PEM file")

    def context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` for the client side of the association."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        ctx.check_hostname = self.check_hostname
        if self.cert_file is not None:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return ctx


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """Where and how :class:`StoreClient` stores instances.

    Parameters
    ----------
    outbox : Path
        Persistent outbox directory (created when missing).
    host, port, called_aet : str, int, str
        The archive (Storage SCP). Required unless ``save_dir`` is given.
    calling_aet : str
        Our AE title.
    save_dir : Path or None
        Instead of C-STORE, copy each instance into this folder as ``<SOP UID>.dcm``
        (an existing file is never overwritten).
    tls : TlsSettings or None
        Use DICOM over TLS.
    idle_timeout : float
        Seconds without work after which the association is released.
    max_retries : int
        Retries after retryable failures (not counting outages) before an instance is
        moved to ``failed/``.
    backoff_base, backoff_max : float
        Back-off is ``min(backoff_max, backoff_base * 2**n)`` seconds before retry n+1.
    connect_timeout, dimse_timeout : float
        TCP connect / ACSE timeout, and the wait for each C-STORE response.
    queue_size : int
        Instances submitted but not yet resolved before ``submit`` waits (back-pressure).
    """

    outbox: Path
    host: str = ""
    port: int = 0
    called_aet: str = ""
    calling_aet: str = "RTSTREAM"
    save_dir: Path | None = None
    tls: TlsSettings | None = None
    idle_timeout: float = 10.0
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    connect_timeout: float = 10.0
    dimse_timeout: float = 60.0
    queue_size: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(self, "outbox", Path(self.outbox))
        if self.save_dir is not None:
            object.__setattr__(self, "save_dir", Path(self.save_dir))
            if Path(self.save_dir).resolve() == Path(self.outbox).resolve():
                raise ConfigError("save_dir", str(self.save_dir), "a folder other than the outbox")
        else:
            if not self.host:
                raise ConfigError("host", self.host, "the archive's host name or address")
            check_port(self.port, "port", what="TCP port")
            check_aet(self.called_aet, "called_aet")
        check_aet(self.calling_aet, "calling_aet")
        for key in (
            "idle_timeout",
            "backoff_base",
            "backoff_max",
            "connect_timeout",
            "dimse_timeout",
        ):
            value = getattr(self, key)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(key, value, "a positive number of seconds")
        if self.backoff_max < self.backoff_base:
            raise ConfigError("backoff_max", self.backoff_max, "at least backoff_base")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError("max_retries", self.max_retries, "an integer >= 0")
        if not isinstance(self.queue_size, int) or self.queue_size < 1:
            raise ConfigError("queue_size", self.queue_size, "an integer >= 1")

    @classmethod
    def from_target(cls, target: str, *, outbox: Path, **kwargs: Any) -> StoreConfig:
        """Build a config from ``AET@HOST:PORT`` (see :func:`parse_store_target`)."""
        t = parse_store_target(target)
        return cls(host=t.host, port=t.port, called_aet=t.called_aet, outbox=outbox, **kwargs)


# ---------------------------------------------------------------------------------------
# durable files
# ---------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_no_replace(src: Path, dst: Path) -> bool:
    """Give ``src`` the name ``dst`` unless ``dst`` exists; True when it was linked."""
    try:
        os.link(src, dst)
    except FileExistsError:
        return False
    except OSError:
        # File systems without hard links: the existence check narrows, but cannot close,
        # the window; the outbox itself is only written by one process.
        if dst.exists():
            return False
        os.rename(src, dst)
        return True
    return True


def _file_dataset(ds: Dataset) -> Dataset:
    """A shallow copy of ``ds`` with complete file meta (PS3.10 §7.1) for ``dcmwrite``."""
    out = copy.copy(ds)
    meta = FileMetaDataset()
    if getattr(ds, "file_meta", None) is not None:
        for elem in ds.file_meta:
            meta.add(copy.copy(elem))
    if "TransferSyntaxUID" not in meta:
        # A freshly built native data set: Explicit VR Little Endian is always allowed
        # (PS3.5 §10.1); encapsulated pixel data must say what it is.
        pixel = ds.get("PixelData")
        if pixel is not None and getattr(pixel, "is_undefined_length", False):
            raise LocalProtocolError(
                "file_meta.TransferSyntaxUID is required for encapsulated Pixel Data"
            )
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out.file_meta = meta
    return out


def write_new_file(ds: Dataset, directory: Path, name: str, *, mtime_ns: int | None = None) -> bool:
    """Write ``ds`` as ``directory/name`` durably, never replacing an existing file.

    The data set goes to a temporary file that is flushed and ``fsync``-ed, then linked to
    its final name and the directory ``fsync``-ed, so a crash leaves either nothing or the
    complete file under ``name`` (plus a temporary file that :class:`Outbox` removes).

    Returns
    -------
    bool
        True when the file was written, False when ``name`` already existed (kept as is).
    """
    final = directory / name
    if final.exists():
        return False
    tmp = directory / f"{_TMP_PREFIX}{name}.{os.getpid()}.{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # PHI: owner only
    try:
        with os.fdopen(fd, "wb") as fp:
            pydicom.dcmwrite(fp, _file_dataset(ds), enforce_file_format=True)
            fp.flush()
            if mtime_ns is not None:
                os.utime(fp.fileno(), ns=(mtime_ns, mtime_ns))
            os.fsync(fp.fileno())
        linked = _link_no_replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(directory)
    return linked


def copy_new_file(src: Path, directory: Path, name: str) -> bool:
    """Copy ``src`` to ``directory/name`` durably unless that name exists (True if copied)."""
    final = directory / name
    if final.exists():
        return False
    tmp = directory / f"{_TMP_PREFIX}{name}.{os.getpid()}.{threading.get_ident()}"
    try:
        with open(src, "rb") as fin, open(tmp, "xb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        linked = _link_no_replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(directory)
    return linked


class Outbox:
    """A persistent queue of DICOM files, one ``<SOP Instance UID>.dcm`` per instance.

    Parameters
    ----------
    root : Path
        The outbox directory; ``root/failed`` holds permanently failed instances.
        Created when missing; left-over temporary files of a crashed writer are removed.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.failed_dir = self.root / "failed"
        self.failed_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        for tmp in self.root.glob(_TMP_PREFIX + "*"):
            log.info("outbox: removing incomplete write %s", tmp.name)
            tmp.unlink(missing_ok=True)
        self._last_ns = max((p.stat().st_mtime_ns for p in self.root.glob("*.dcm")), default=0)

    def path(self, uid: str) -> Path:
        """Path of the queued instance ``uid`` (it need not exist)."""
        return self.root / f"{check_uid(uid, 'SOP Instance UID')}.dcm"

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, str) and self.path(uid).exists()

    def _stamp(self) -> int:
        with self._lock:
            self._last_ns = max(time.time_ns(), self._last_ns + 1000)
            return self._last_ns

    def add(self, ds: Dataset) -> tuple[Path, bool]:
        """Queue ``ds`` durably; returns its path and False if that UID was already queued.

        Raises
        ------
        LocalProtocolError
            When ``ds`` has no valid SOP Class or SOP Instance UID.
        """
        try:
            uid = check_uid(ds.get("SOPInstanceUID"), "SOP Instance UID")
            check_uid(ds.get("SOPClassUID"), "SOP Class UID")
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"cannot queue the data set: {exc}") from None
        name = f"{uid}.dcm"
        new = write_new_file(ds, self.root, name, mtime_ns=self._stamp())
        if not new:
            log.info("outbox: instance %s is already queued; keeping the queued copy", uid)
        return self.root / name, new

    def pending(self) -> list[str]:
        """SOP Instance UIDs waiting in the outbox, oldest first."""
        entries = []
        for p in self.root.glob("*.dcm"):
            try:
                entries.append((p.stat().st_mtime_ns, p.name))
            except FileNotFoundError:
                continue
        entries.sort()
        return [name[: -len(".dcm")] for _, name in entries]

    def done(self, uid: str) -> None:
        """Forget ``uid``: call only after the archive answered success (or warning)."""
        self.path(uid).unlink(missing_ok=True)
        _fsync_dir(self.root)

    remove = done

    def fail(self, uid: str, reason: str) -> Path:
        """Move ``uid`` to ``failed/`` (never overwriting) with a ``.txt`` note of ``reason``."""
        src = self.path(uid)
        for n in itertools.count():
            stem = uid if n == 0 else f"{uid}.{n}"
            dst = self.failed_dir / f"{stem}.dcm"
            if _link_no_replace(src, dst):
                break
        note = dst.with_suffix(".txt")
        note.write_text(reason + "\n", encoding="utf-8")
        src.unlink(missing_ok=True)
        _fsync_dir(self.failed_dir)
        _fsync_dir(self.root)
        return dst

    def failed(self) -> list[Path]:
        """Files of permanently failed instances."""
        return sorted(self.failed_dir.glob("*.dcm"))


# ---------------------------------------------------------------------------------------
# status classes
# ---------------------------------------------------------------------------------------


class StatusClass(enum.Enum):
    """What a C-STORE response status means for the outbox (PS3.4 B.2.3, PS3.7 C)."""

    SUCCESS = "success"
    WARNING = "warning"  # stored, with coercion or discarded elements
    DUPLICATE = "duplicate"  # 0x0111: the archive already holds this SOP Instance UID
    RETRY = "retry"  # transient: out of resources, processing failure, cancel
    PERMANENT = "permanent"


_RETRYABLE = {0x0110, 0x0213, 0xFE00}
_WARNINGS = {0x0107, 0x0116}


def classify_status(status: int) -> StatusClass:
    """Classify a C-STORE response Status (0000,0900); see the module table."""
    if status == 0x0000:
        return StatusClass.SUCCESS
    if status & 0xF000 == 0xB000 or status in _WARNINGS:
        return StatusClass.WARNING
    if status == 0x0111:
        return StatusClass.DUPLICATE
    if status & 0xFF00 == 0xA700 or status in _RETRYABLE:
        return StatusClass.RETRY
    return StatusClass.PERMANENT


@dataclass(frozen=True, kw_only=True)
class StoreResult:
    """How one instance ended.

    Parameters
    ----------
    sop_instance_uid : str
    ok : bool
        True when the archive holds the instance (success, warning or duplicate).
    status : int or None
        The last C-STORE response status, None when none was received.
    attempts : int
        C-STORE attempts made (association attempts during an outage included).
    error : str
        Why it failed (empty when ok).
    path : Path or None
        Where the instance now is: ``failed/`` file on failure, ``save_dir`` file in
        save-dir mode, otherwise None.
    """

    sop_instance_uid: str
    ok: bool
    status: int | None
    attempts: int
    error: str = ""
    path: Path | None = None


class StoreEvent(enum.Enum):
    """Reported through ``on_event`` (used by the control plane)."""

    OUTAGE = "outage"
    RECOVERED = "recovered"


# ---------------------------------------------------------------------------------------
# the SCU worker (runs in one dedicated thread)
# ---------------------------------------------------------------------------------------


class _Unreachable(Exception):
    """No association could be established."""


class _LinkLost(Exception):
    """The association broke while an instance was in flight (outcome unknown)."""


class _Refused(Exception):
    """The instance can never be sent as it is."""


class _Scu:
    """Owns the pynetdicom AE and association; every method runs in the store thread."""

    def __init__(self, cfg: StoreConfig) -> None:
        from pynetdicom import AE

        self.cfg = cfg
        self.ae = AE(ae_title=cfg.calling_aet)
        self.ae.acse_timeout = cfg.connect_timeout
        self.ae.connection_timeout = cfg.connect_timeout
        self.ae.dimse_timeout = cfg.dimse_timeout
        self.ae.network_timeout = max(cfg.dimse_timeout, cfg.idle_timeout * 2)
        self.assoc: Any = None
        self.proposed: list[tuple[str, str]] = []  # (SOP class, transfer syntax)
        self.tls_args: tuple[ssl.SSLContext, str] | None = None
        if cfg.tls is not None:
            self.tls_args = (cfg.tls.context(), cfg.tls.server_hostname or cfg.host)

    def _wanted(self, sop_class: str, ts: str) -> list[tuple[str, str]]:
        out = [(sop_class, ts)]
        for alt in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if (sop_class, alt) not in out:
                out.append((sop_class, alt))
        return out

    def _associate(self, need: list[tuple[str, str]]) -> None:
        from pynetdicom import build_context

        union = list(self.proposed)
        union.extend(x for x in need if x not in union)
        if len(union) > _MAX_CONTEXTS:
            union = need
        self.release()
        contexts = [build_context(sop, [ts]) for sop, ts in union]
        log.debug(
            "associating with %s@%s:%d, %d contexts",
            self.cfg.called_aet,
            self.cfg.host,
            self.cfg.port,
            len(contexts),
        )
        try:
            assoc = self.ae.associate(
                self.cfg.host,
                self.cfg.port,
                contexts=contexts,
                ae_title=self.cfg.called_aet,
                tls_args=self.tls_args,
                max_pdu=0,
            )
        except (OSError, RuntimeError, ValueError) as exc:
            raise _Unreachable(f"association request failed: {exc}") from exc
        if not assoc.is_established:
            if assoc.rejected_contexts and not assoc.accepted_contexts:
                # The archive answered but accepted none of our presentation contexts
                # (pynetdicom then aborts): this SOP class / syntax will never be stored.
                sop_ts = ", ".join(sorted({f"{a} ({t})" for a, t in need}))
                raise _Refused(f"no presentation context accepted for {sop_ts}")
            if assoc.is_rejected:
                why = "association rejected by the archive"
            elif assoc.is_aborted:
                why = "association aborted (connection refused or closed)"
            else:
                why = "no association (timeout)"
            raise _Unreachable(why)
        self.assoc = assoc
        self.proposed = union

    def send(self, path: Path) -> int:
        """C-STORE the file at ``path``; returns the response status."""
        try:
            ds = pydicom.dcmread(path)
            sop_class = str(ds.SOPClassUID)
            ts = str(ds.file_meta.TransferSyntaxUID)
        except Exception as exc:  # any decode problem makes the file unsendable
            raise _Refused(f"cannot read the outbox file: {exc}") from exc
        need = self._wanted(sop_class, ts)
        if (
            self.assoc is None
            or not self.assoc.is_established
            or any(x not in self.proposed for x in need)
        ):
            self._associate(need)
        assoc = self.assoc
        try:
            rsp = assoc.send_c_store(ds)
        except ValueError as exc:
            raise _Refused(
                f"no presentation context accepted for SOP class {sop_class} "
                f"with transfer syntax {ts}"
            ) from exc
        except (OSError, RuntimeError) as exc:
            self.abort()
            raise _LinkLost(f"association lost during C-STORE: {exc}") from exc
        if "Status" not in rsp:
            self.abort()
            raise _LinkLost("association aborted or timed out during C-STORE")
        return int(rsp.Status)

    def release(self) -> None:
        if self.assoc is not None:
            with contextlib.suppress(Exception):
                if self.assoc.is_established:
                    self.assoc.release()
            self.assoc = None

    def abort(self) -> None:
        if self.assoc is not None:
            with contextlib.suppress(Exception):
                self.assoc.abort()
            self.assoc = None

    def shutdown(self) -> None:
        self.release()
        with contextlib.suppress(Exception):
            self.ae.shutdown()


def _echo(
    cfg: StoreConfig, timeout: float, tls_args: tuple[ssl.SSLContext, str] | None
) -> str | None:
    """One C-ECHO to the archive of ``cfg``; None on success, else the reason."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=cfg.calling_aet)
    ae.acse_timeout = ae.connection_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    try:
        assoc = ae.associate(cfg.host, cfg.port, ae_title=cfg.called_aet, tls_args=tls_args)
    except (OSError, RuntimeError, ValueError) as exc:
        return f"association request failed: {exc}"
    try:
        if not assoc.is_established:
            if assoc.is_rejected:
                return "association rejected"
            return "connection refused or no answer" if assoc.is_aborted else "no association"
        rsp = assoc.send_c_echo()
        status = rsp.get("Status") if rsp else None
        if status is None:
            return "no C-ECHO response"
        if int(status) != 0x0000:
            return f"C-ECHO status 0x{int(status):04X}"
        return None
    finally:
        with contextlib.suppress(Exception):
            if assoc.is_established:
                assoc.release()
        with contextlib.suppress(Exception):
            ae.shutdown()


class _SaveDir:
    """The ``save_dir`` stand-in for :class:`_Scu`: copies files into a folder."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    def send(self, path: Path) -> int:
        uid = path.name[: -len(".dcm")]
        if not copy_new_file(path, self.dir, path.name):
            log.info("save dir: %s already present, keeping the first copy", uid)
        return 0x0000

    def release(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


# ---------------------------------------------------------------------------------------
# the async client
# ---------------------------------------------------------------------------------------


EventCallback = Callable[[StoreEvent, str], None]


@dataclass
class _Entry:
    uid: str
    waiters: list[asyncio.Future[StoreResult]] = field(default_factory=list)
    slot: bool = False  # holds a back-pressure slot


class StoreClient:
    """Durable, retrying C-STORE SCU (or save-dir writer) with an asyncio API.

    Parameters
    ----------
    cfg : StoreConfig
    on_event : callable or None
        ``on_event(StoreEvent, detail)`` when the archive becomes unreachable
        (:attr:`StoreEvent.OUTAGE`) and when an instance gets through again
        (:attr:`StoreEvent.RECOVERED`); called on the event loop.

    Examples
    --------
    >>> async with StoreClient(cfg) as sc:          # doctest: +SKIP
    ...     result = await sc.submit(ds)
    """

    def __init__(self, cfg: StoreConfig, *, on_event: EventCallback | None = None) -> None:
        self.cfg = cfg
        self.on_event = on_event
        self.outbox: Outbox | None = None
        self.counters: dict[str, int] = {
            "stored": 0,
            "failed": 0,
            "retries": 0,
            "depth": 0,
            "duplicates": 0,
        }
        self.in_outage = False
        self._entries: dict[str, _Entry] = {}
        self._order: deque[str] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._slots = asyncio.Semaphore(cfg.queue_size)
        self._executor: ThreadPoolExecutor | None = None
        self._worker: asyncio.Task[None] | None = None
        self._scu: _Scu | _SaveDir | None = None
        # Files being made durable right now, by enqueue calls that may have been cancelled
        # meanwhile (the writing thread goes on): flush waits for them before it looks.
        self._adding = 0
        self._added = asyncio.Event()
        self._added.set()

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> StoreClient:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtstream-store")
        self.outbox = await asyncio.to_thread(Outbox, self.cfg.outbox)
        cfg = self.cfg
        if cfg.save_dir is not None:
            save_dir = cfg.save_dir
            self._scu = await self._call(lambda: _SaveDir(save_dir))
        else:
            self._scu = await self._call(lambda: _Scu(cfg))
        replay = await asyncio.to_thread(self.outbox.pending)
        if replay:
            log.info("outbox: replaying %d queued instance(s)", len(replay))
        for uid in replay:
            self._track(uid, slot=False)
        self._worker = asyncio.create_task(self._run(), name="rtstream-store-worker")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop sending; what is still queued stays in the outbox for the next start."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._scu is not None and self._executor is not None:
            # The store thread may still be inside a C-STORE or an association attempt
            # (up to connect_timeout / dimse_timeout): release behind it, but never wait
            # for it longer than a moment. An instance abandoned mid-send keeps its
            # outbox file and is sent again, once, at the next start.
            scu = self._scu
            release = asyncio.get_running_loop().run_in_executor(self._executor, scu.shutdown)
            _, pending = await asyncio.wait([release], timeout=0.5)
            if pending:
                log.info("store: the association is still busy at close; leaving it behind")
            self._scu = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        for entry in self._entries.values():
            for fut in entry.waiters:
                if not fut.done():
                    fut.cancel()
        self._entries.clear()
        self._order.clear()

    async def _call(self, fn: Callable[[], T]) -> T:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # -- public API -------------------------------------------------------------------------

    async def enqueue(self, ds: Dataset) -> asyncio.Future[StoreResult]:
        """Make ``ds`` durable in the outbox and queue it; returns a future of its result.

        Waits while ``queue_size`` instances are unresolved (back-pressure). A SOP Instance
        UID that is already queued is not written again; the future follows the queued one.
        """
        if self._worker is None or self.outbox is None:
            raise LocalProtocolError("StoreClient used outside 'async with'")
        outbox = self.outbox
        fut: asyncio.Future[StoreResult] = asyncio.get_running_loop().create_future()
        uid = str(ds.get("SOPInstanceUID", ""))
        if uid in self._entries:
            self._entries[uid].waiters.append(fut)
            return fut
        await self._slots.acquire()
        adding = asyncio.ensure_future(asyncio.to_thread(outbox.add, ds))
        self._adding += 1
        self._added.clear()
        adding.add_done_callback(self._add_done)
        try:
            _, new = await asyncio.shield(adding)
        except BaseException:
            self._slots.release()
            raise
        if uid in self._entries:  # queued by a concurrent call meanwhile
            self._slots.release()
            self._entries[uid].waiters.append(fut)
            return fut
        if not new:
            self.counters["duplicates"] += 1
        entry = self._track(uid, slot=True)
        entry.waiters.append(fut)
        return fut

    async def submit(self, ds: Dataset) -> StoreResult:
        """Queue ``ds`` and wait until it is stored or has permanently failed."""
        fut = await self.enqueue(ds)
        return await fut

    async def flush(self) -> None:
        """Wait until every queued instance (replayed ones included) is resolved.

        Files in the outbox that no call is still adding and nothing tracks (an
        :meth:`enqueue` cancelled while its file was being made durable) are queued too.
        """
        if self.outbox is not None and self._worker is not None:
            await self._added.wait()
            for uid in await asyncio.to_thread(self.outbox.pending):
                if uid not in self._entries:
                    self._track(uid, slot=False)
        await self._idle.wait()

    def _add_done(self, adding: asyncio.Future[Any]) -> None:
        if not adding.cancelled():
            adding.exception()  # retrieved: the enqueue that awaited it (if any) raised it
        self._adding -= 1
        if not self._adding:
            self._added.set()

    @property
    def depth(self) -> int:
        """Instances queued or in flight."""
        return len(self._entries)

    def queued(self) -> int:
        """Instances still in the outbox on disk (queued, in flight or replayed)."""
        return len(Outbox(self.cfg.outbox).pending()) if self.cfg.outbox.is_dir() else 0

    @property
    def target(self) -> str:
        """``AET@HOST:PORT`` of the archive, or the save folder."""
        if self.cfg.save_dir is not None:
            return str(self.cfg.save_dir)
        return f"{self.cfg.called_aet}@{self.cfg.host}:{self.cfg.port}"

    async def echo(self, timeout: float = 3.0) -> str | None:
        """C-ECHO the archive (PS3.7 §9.1.5) within ``timeout`` seconds.

        Runs in a daemon thread of its own (never delays the process's exit). Returns
        None when the archive answered success (or there is no archive: ``save_dir``),
        else why not, in a few words.
        """
        if self.cfg.save_dir is not None:
            return None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str | None] = loop.create_future()
        cfg = self.cfg
        tls_args = (cfg.tls.context(), cfg.tls.server_hostname or cfg.host) if cfg.tls else None

        def settle(result: str | None) -> None:
            if not fut.done():
                fut.set_result(result)

        def run() -> None:
            result = _echo(cfg, timeout, tls_args)
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, result)

        threading.Thread(target=run, name="rtstream-echo", daemon=True).start()
        try:
            async with asyncio.timeout(timeout + 1.0):
                return await fut
        except TimeoutError:
            return f"no answer within {timeout:g} s"

    # -- internals --------------------------------------------------------------------------

    def _track(self, uid: str, *, slot: bool) -> _Entry:
        entry = _Entry(uid, slot=slot)
        self._entries[uid] = entry
        self._order.append(uid)
        self.counters["depth"] = len(self._entries)
        self._idle.clear()
        self._wake.set()
        return entry

    def _emit(self, event: StoreEvent, detail: str) -> None:
        if event is StoreEvent.OUTAGE:
            log.warning("archive unreachable: %s", detail)
        else:
            log.info("archive reachable again")
        if self.on_event is not None:
            try:
                self.on_event(event, detail)
            except Exception:
                log.exception("store event callback failed")

    def _backoff(self, n: int) -> float:
        return float(min(self.cfg.backoff_max, self.cfg.backoff_base * (2 ** min(n, 30))))

    async def _run(self) -> None:
        scu = self._scu
        assert scu is not None
        while True:
            if not self._order:
                self._wake.clear()
                try:
                    # not wait_for: on 3.11 it can swallow aclose's cancel (see delivery.py)
                    async with asyncio.timeout(self.cfg.idle_timeout):
                        await self._wake.wait()
                except TimeoutError:
                    await self._call(scu.release)
                    await self._wake.wait()
                continue
            uid = self._order[0]
            try:
                result = await self._deliver(scu, uid)
            except Exception as exc:  # outbox I/O trouble: the file stays queued on disk
                log.exception("instance %s: delivery stopped", uid)
                result = StoreResult(
                    sop_instance_uid=uid,
                    ok=False,
                    status=None,
                    attempts=0,
                    error=f"not delivered, still in the outbox: {exc}",
                )
            self._order.popleft()
            entry = self._entries.pop(uid)
            self.counters["depth"] = len(self._entries)
            if entry.slot:
                self._slots.release()
            for fut in entry.waiters:
                if not fut.done():
                    fut.set_result(result)
            if not self._entries:
                self._idle.set()

    async def _deliver(self, scu: _Scu | _SaveDir, uid: str) -> StoreResult:
        assert self.outbox is not None
        outbox = self.outbox
        path = outbox.path(uid)
        attempts = 0
        failures = 0
        outage_round = 0
        while True:
            attempts += 1
            status: int | None = None
            try:
                status = await self._call(lambda: scu.send(path))
            except _Unreachable as exc:
                if not self.in_outage:
                    self.in_outage = True
                    self._emit(StoreEvent.OUTAGE, str(exc))
                self.counters["retries"] += 1
                await asyncio.sleep(self._backoff(outage_round))
                outage_round += 1
                continue
            except _Refused as exc:
                return await self._give_up(uid, None, attempts, str(exc))
            except _LinkLost as exc:
                failures += 1
                error = str(exc)
                log.warning("instance %s: %s", uid, error)
            except OSError as exc:  # local I/O: save dir or outbox file
                failures += 1
                error = f"local I/O error: {exc}"
                log.warning("instance %s: %s", uid, error)
            except Exception as exc:  # anything pynetdicom raises unexpectedly
                failures += 1
                error = f"C-STORE error: {exc!r}"
                log.warning("instance %s: %s", uid, error, exc_info=True)
            else:
                if self.in_outage:
                    self.in_outage = False
                    self._emit(StoreEvent.RECOVERED, f"{self.cfg.called_aet or 'save dir'}")
                outage_round = 0
                cls = classify_status(status)
                if cls in (StatusClass.SUCCESS, StatusClass.WARNING, StatusClass.DUPLICATE):
                    if cls is not StatusClass.SUCCESS:
                        log.info(
                            "instance %s stored with status 0x%04X (%s)", uid, status, cls.value
                        )
                    await asyncio.to_thread(outbox.done, uid)
                    self.counters["stored"] += 1
                    saved = None
                    if self.cfg.save_dir is not None:
                        saved = self.cfg.save_dir / f"{uid}.dcm"
                    return StoreResult(
                        sop_instance_uid=uid, ok=True, status=status, attempts=attempts, path=saved
                    )
                error = f"C-STORE status 0x{status:04X}"
                if cls is StatusClass.PERMANENT:
                    return await self._give_up(uid, status, attempts, error + " (permanent)")
                failures += 1
                log.warning("instance %s: %s, will retry", uid, error)
            if failures > self.cfg.max_retries:
                return await self._give_up(
                    uid, status, attempts, f"{error}; gave up after {failures} failures"
                )
            self.counters["retries"] += 1
            await asyncio.sleep(self._backoff(failures - 1))

    async def _give_up(
        self, uid: str, status: int | None, attempts: int, error: str
    ) -> StoreResult:
        assert self.outbox is not None
        outbox = self.outbox
        log.error("instance %s failed permanently: %s", uid, error)
        dst = await asyncio.to_thread(outbox.fail, uid, error)
        self.counters["failed"] += 1
        return StoreResult(
            sop_instance_uid=uid, ok=False, status=status, attempts=attempts, error=error, path=dst
        )


__all__ = [
    "Outbox",
    "StatusClass",
    "StoreClient",
    "StoreConfig",
    "StoreEvent",
    "StoreResult",
    "TlsSettings",
    "check_aet",
    "check_uid",
    "classify_status",
    "copy_new_file",
    "parse_store_target",
    "write_new_file",
]
