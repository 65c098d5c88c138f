"""An embedded Storage SCP: a small archive that never overwrites what it received.

Theory of operation
-------------------
A pynetdicom AE accepts every storage SOP class pynetdicom knows (PS3.4 Annex B, including
the Video Endoscopic/Photographic/Microscopic, VL and Secondary Capture classes) with every
transfer syntax it knows, among them the MPEG-4 AVC/H.264 and HEVC/H.265 syntaxes
1.2.840.10008.1.2.4.102 to .108 (PS3.5 §8.2.7-8.2.8). Each received instance is written,
exactly as its encoded bytes arrived, as a PS3.10 file
``DIR/<Study Instance UID>/<Series Instance UID>/<SOP Instance UID>.dcm``: first to a
temporary name, ``fsync``-ed, then hard-linked to its final name (which fails rather than
replacing). An instance whose SOP Instance UID is already stored keeps the first copy; the
answer is still success (the archive holds the instance) and the duplicate is counted.

Status answers (PS3.4 B.2.3): 0x0000 stored or duplicate; 0xC000 *cannot understand* when
the UIDs needed for the file name are missing or malformed; 0xA700 *out of resources* when
writing fails (disk full, permissions), which tells a careful SCU to retry later.

The server runs in pynetdicom's own threads. :class:`Archive` is usable with ``with`` from
threads and with ``async with`` from asyncio (start and stop run in a worker thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from pydicom.uid import AllTransferSyntaxes as PYDICOM_TRANSFER_SYNTAXES

from rtstream.endpoints import check_aet
from rtstream.errors import ConfigError, RemoteProtocolError
from rtstream.net.http import address_in_use
from rtstream.pacs.store import _fsync_dir, _link_no_replace, check_uid

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000

#: The video transfer syntaxes (PS3.5 §8.2.7, §8.2.8) the archive must accept.
VIDEO_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.4.100",  # MPEG2 MP@ML
    "1.2.840.10008.1.2.4.101",  # MPEG2 MP@HL
    "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264 High Profile / Level 4.1
    "1.2.840.10008.1.2.4.103",  # MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1
    "1.2.840.10008.1.2.4.104",  # MPEG-4 AVC/H.264 High Profile / Level 4.2 for 2D Video
    "1.2.840.10008.1.2.4.105",  # MPEG-4 AVC/H.264 High Profile / Level 4.2 for 3D Video
    "1.2.840.10008.1.2.4.106",  # MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2
    "1.2.840.10008.1.2.4.107",  # HEVC/H.265 Main Profile / Level 5.1
    "1.2.840.10008.1.2.4.108",  # HEVC/H.265 Main 10 Profile / Level 5.1
)


def _transfer_syntaxes() -> list[str]:
    from pynetdicom import ALL_TRANSFER_SYNTAXES

    out = list(dict.fromkeys([*ALL_TRANSFER_SYNTAXES, *VIDEO_TRANSFER_SYNTAXES]))
    out.extend(str(ts) for ts in PYDICOM_TRANSFER_SYNTAXES if str(ts) not in out)
    return out


def storage_sop_classes() -> list[str]:
    """Every storage SOP class UID pynetdicom knows (PS3.4 B.5, incl. video and VL)."""
    from pynetdicom import AllStoragePresentationContexts

    return list(dict.fromkeys(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts))


class Archive:
    """Embedded Storage SCP writing ``DIR/<Study>/<Series>/<SOP>.dcm``, never overwriting.

    Parameters
    ----------
    directory : Path
        Archive root (created when missing).
    port : int
        TCP port; 0 picks a free one (read :attr:`port` after start).
    aet : str
        Our AE title (called AE titles are not checked, as in most archives).
    host : str
        Address to bind; loopback unless asked otherwise.
    on_stored : callable or None
        ``on_stored(path, duplicate)`` after each instance, in the SCP thread.
    port_key : str
        The flag or key named when the port is taken (``--port``; the demo's
        ``--archive-port``).

    Attributes
    ----------
    counters : dict
        ``received`` (new instances written), ``duplicates``, ``failed``.
    """

    def __init__(
        self,
        directory: Path,
        port: int = 0,
        aet: str = "RTSTREAM-ARCH",
        *,
        host: str = "127.0.0.1",
        on_stored: Callable[[Path, bool], None] | None = None,
        port_key: str = "--port",
    ) -> None:
        self.port_key = port_key
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError("port", port, "a TCP port number 0..65535")
        self.directory = Path(directory)
        self.aet = check_aet(aet, "aet")
        self.host = host
        self._port = port
        self.on_stored = on_stored
        self.counters: dict[str, int] = {"received": 0, "duplicates": 0, "failed": 0}
        self._cond = threading.Condition()
        self._server: Any = None
        self._ae: Any = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when 0 was asked for)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def target(self) -> str:
        """``AET@HOST:PORT`` of this archive."""
        return f"{self.aet}@{self.host}:{self.port}"

    def start(self) -> None:
        """Bind and serve in pynetdicom's threads (returns at once)."""
        from pynetdicom import AE, evt

        self.directory.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.aet)
        ae.maximum_pdu_size = 0
        ae.network_timeout = 60
        ae.dimse_timeout = 60
        ae.maximum_associations = 16
        ts = _transfer_syntaxes()
        for sop in storage_sop_classes():
            ae.add_supported_context(sop, ts)
        ae.add_supported_context("1.2.840.10008.1.1")  # Verification (C-ECHO)
        self._ae = ae
        try:
            self._server = ae.start_server(
                (self.host, self._port),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, self._on_c_store)],
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise address_in_use(self.port_key, f"{self.host}:{self._port}") from None
            raise ConfigError(self.port_key, self._port, f"a free TCP port ({exc})") from exc
        log.info(
            "archive %s listening on %s:%d, writing to %s",
            self.aet,
            self.host,
            self.port,
            self.directory,
        )

    def stop(self) -> None:
        """Stop serving and close every association."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._ae is not None:
            self._ae.shutdown()
            self._ae = None

    def __enter__(self) -> Archive:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Archive:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- queries ----------------------------------------------------------------------------

    def files(self) -> list[Path]:
        """Every stored instance file."""
        return sorted(self.directory.glob("*/*/*.dcm"))

    def path_of(self, study: str, series: str, sop_instance: str) -> Path:
        """Where the instance with these UIDs is (or would be) stored."""
        return (
            self.directory
            / check_uid(study, "Study Instance UID")
            / check_uid(series, "Series Instance UID")
            / f"{check_uid(sop_instance, 'SOP Instance UID')}.dcm"
        )

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until ``received`` reaches ``count``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.counters["received"] >= count, timeout)

    async def wait_for_async(self, count: int, timeout: float) -> bool:
        """:meth:`wait_for` for asyncio callers."""
        return await asyncio.to_thread(self.wait_for, count, timeout)

    # -- the C-STORE handler (pynetdicom thread) ----------------------------------------

    def _on_c_store(self, event: Any) -> int:
        try:
            ds = event.dataset
            path = self.path_of(
                ds.get("StudyInstanceUID"),
                ds.get("SeriesInstanceUID"),
                event.request.AffectedSOPInstanceUID,
            )
        except RemoteProtocolError as exc:
            log.warning("archive: refusing an instance: %s", exc)
            self._count("failed")
            return STATUS_CANNOT_UNDERSTAND
        except Exception as exc:  # the data set did not decode
            log.warning("archive: cannot decode an instance: %s", exc)
            self._count("failed")
            return STATUS_CANNOT_UNDERSTAND
        try:
            new = self._write(path, event.encoded_dataset(include_meta=True))
        except OSError as exc:
            log.error("archive: cannot write %s: %s", path.name, exc)
            self._count("failed")
            return STATUS_OUT_OF_RESOURCES
        if new:
            log.debug("archive: stored %s", path.name)
        else:
            log.info("archive: duplicate SOP Instance UID %s, keeping the first copy", path.stem)
        self._count("received" if new else "duplicates")
        if self.on_stored is not None:
            try:
                self.on_stored(path, not new)
            except Exception:
                log.exception("archive: on_stored callback failed")
        return STATUS_SUCCESS

    def _count(self, key: str) -> None:
        with self._cond:
            self.counters[key] += 1
            self._cond.notify_all()

    @staticmethod
    def _write(path: Path, data: bytes) -> bool:
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}.{threading.get_ident()}")
        try:
            with open(tmp, "xb") as fp:
                fp.write(data)
                fp.flush()
                os.fsync(fp.fileno())
            new = _link_no_replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_dir(path.parent)
        return new


__all__ = ["Archive", "VIDEO_TRANSFER_SYNTAXES", "storage_sop_classes"]
