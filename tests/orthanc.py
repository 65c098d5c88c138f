"""A real Orthanc (Debian package) for tests: start on free ports, query its REST API, stop.

Orthanc binds 0.0.0.0 for both servers; tests only ever connect to 127.0.0.1. Remote HTTP
access is off and a registered user is required, so nothing else on the host can use it.

Examples
--------
>>> with Orthanc(tmp_path) as o:                      # doctest: +SKIP
...     o.sop_instance_uids()
"""

from __future__ import annotations

import base64
import ctypes
import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.peers import free_port, require_program, stop, wait_for_tcp

WORKLIST_PLUGIN_CANDIDATES = (
    Path("/usr/share/orthanc/plugins/libModalityWorklists.so"),
    Path("/usr/lib/orthanc/libModalityWorklists.so"),
)


def die_with_parent() -> None:
    """``preexec_fn``: the peer gets SIGTERM when the thread that started it dies.

    Keeps a peer from outliving a test run that was killed before its fixtures could stop
    it (Linux ``PR_SET_PDEATHSIG``). Start peers from a long-lived thread (the main one).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def worklist_plugin() -> Path:
    """Path of the ModalityWorklists plugin shipped by Debian's orthanc package."""
    for cand in WORKLIST_PLUGIN_CANDIDATES:
        if cand.exists():
            return cand
    for d in (Path("/usr/lib/orthanc"), Path("/usr/share/orthanc/plugins")):
        for cand in sorted(d.glob("libModalityWorklists.so*")):
            return cand
    raise FileNotFoundError("Orthanc ModalityWorklists plugin not found")


class Orthanc:
    """One Orthanc process with its own storage, index and (optional) worklist folder.

    Parameters
    ----------
    workdir : Path
        Holds config.json, the storage/index folders and orthanc.log.
    aet : str
        Orthanc's DICOM AE title.
    worklists : Path or None
        Enable the ModalityWorklists plugin serving the ``*.wl`` files of this folder.
    extra : dict
        Further configuration keys.
    """

    user = "rtstream"
    password = "test-only-password"

    def __init__(
        self,
        workdir: Path,
        *,
        aet: str = "ORTHANC",
        worklists: Path | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.program = require_program("Orthanc")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.dicom_port = free_port(kind=socket.SOCK_STREAM)
        self.http_port = free_port(kind=socket.SOCK_STREAM)
        while self.http_port == self.dicom_port:
            self.http_port = free_port(kind=socket.SOCK_STREAM)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "orthanc.log"
        config: dict[str, Any] = {
            "Name": "rtstream-test",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "DicomAet": aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowFindWorklist": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "DicomScpTimeout": 30,
            "HttpThreadsCount": 4,
            "DicomThreadsCount": 2,
            "ConcurrentJobs": 1,
            "SaveJobs": False,
            "StableAge": 1,
            "Plugins": [],
        }
        if worklists is not None:
            worklists.mkdir(parents=True, exist_ok=True)
            config["Plugins"] = [str(worklist_plugin())]
            config["Worklists"] = {"Enable": True, "Database": str(worklists)}
        config.update(extra or {})
        self.config_path = self.workdir / "config.json"
        self.config_path.write_text(json.dumps(config, indent=2))

    # -- process ----------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        """Start Orthanc and wait until DICOM and REST both answer."""
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [self.program, str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()
        try:
            wait_for_tcp(self.http_port, timeout=timeout)
            wait_for_tcp(self.dicom_port, timeout=timeout)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    self.get("/system")
                    return
                except (OSError, urllib.error.URLError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise RuntimeError(f"Orthanc did not start; see {self.log_path}") from None

    def stop(self) -> None:
        """Stop Orthanc by PID (TERM, then KILL) and wait until its DICOM port is closed."""
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def __enter__(self) -> Orthanc:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def target(self) -> str:
        """``AET@127.0.0.1:PORT`` for :func:`rtstream.pacs.store.parse_store_target`."""
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    # -- REST -----------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method
        )
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=30) as rsp:
            data: bytes = rsp.read()
            return data

    def get(self, path: str) -> Any:
        """GET ``path`` and decode the JSON answer."""
        return json.loads(self._request("GET", path))

    def get_bytes(self, path: str) -> bytes:
        """GET ``path`` as raw bytes (e.g. ``/instances/<id>/file``)."""
        return self._request("GET", path)

    def delete(self, path: str) -> None:
        """DELETE ``path``."""
        self._request("DELETE", path)

    def instances(self) -> list[str]:
        """Orthanc identifiers of every stored instance."""
        ids: list[str] = self.get("/instances")
        return ids

    def tags(self, instance_id: str) -> dict[str, Any]:
        """``/instances/<id>/simplified-tags``."""
        tags: dict[str, Any] = self.get(f"/instances/{instance_id}/simplified-tags")
        return tags

    def sop_instance_uids(self) -> list[str]:
        """SOP Instance UID of every stored instance (one entry per Orthanc instance)."""
        return [self.tags(i)["SOPInstanceUID"] for i in self.instances()]

    def file(self, sop_instance_uid: str) -> bytes:
        """The stored DICOM file of the instance with ``sop_instance_uid``."""
        for i in self.instances():
            if self.tags(i)["SOPInstanceUID"] == sop_instance_uid:
                return self.get_bytes(f"/instances/{i}/file")
        raise KeyError(sop_instance_uid)

    def clear(self) -> None:
        """Delete every stored patient (and so every instance)."""
        for p in self.get("/patients"):
            self.delete(f"/patients/{p}")
