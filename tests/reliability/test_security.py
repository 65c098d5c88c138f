"""Access control and information leaks (issue 9 part 5; threat model in docs/security.md).

Covered elsewhere, on purpose not repeated here (the last test checks they still exist):
MQTT user/password and TLS (tests/control/test_mqtt.py::test_credentials, ::test_tls,
::test_config_errors_hide_the_password), DICOM TLS for C-STORE
(tests/pacs/test_store.py::test_tls_association), every viewer route wanting the token
(tests/viewer/test_server.py::test_every_route_wants_the_token).
"""

from __future__ import annotations

import hmac
import inspect
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pydicom
import pytest

from tests.peers import free_port, require_program, require_root, running, wait_for_tcp
from tests.reliability import ROOT, RTSTREAM, rtstream_env

PATIENT = "Zyxwv^Patient"
PATIENT_ID = "ZXQ-990417"


# -- listening sockets from /proc (no psutil, no ss) ------------------------------------------


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that process ``pid`` holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    found = []
    for table, v6 in (("tcp", False), ("tcp6", True)):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A = TCP_LISTEN
                continue
            hexaddr, hexport = cols[1].split(":")
            found.append((_decode_addr(hexaddr, v6), int(hexport, 16)))
    return found


def _decode_addr(hexaddr: str, v6: bool) -> str:
    raw = bytes.fromhex(hexaddr)
    if not v6:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def wait_listening(proc: subprocess.Popen[bytes], timeout: float = 30) -> list[tuple[str, int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process exited with {proc.returncode}"
        found = listening_addresses(proc.pid)
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("nothing listening")


# -- viewer token -------------------------------------------------------------------------


async def test_viewer_token_constant_time_and_every_wrong_length_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rtstream.viewer import server as viewer_server
    from rtstream.viewer.server import TestPattern, ViewerConfig, ViewerServer

    # the code path: the comparison is hmac.compare_digest, never == on the token
    src = inspect.getsource(ViewerServer._authorized)
    assert "hmac.compare_digest" in src
    assert not re.search(r"==\s*(self\.)?token|token\s*==", src)
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    assert viewer_server.__dict__["hmac"] is hmac  # the module the server compares with
    monkeypatch.setattr(hmac, "compare_digest", spy)
    token = "Tk-" + "9" * 29  # 32 characters
    feed = TestPattern(width=64, height=48, fps=5, overlay={})
    async with ViewerServer(ViewerConfig(port=0, token=token), feed) as srv:
        base = f"http://127.0.0.1:{srv.port}/api/stats"
        wrong = [token[:n] for n in range(len(token))]  # every shorter prefix, "" included
        wrong += [token + "x" * k for k in range(1, 9)]  # longer
        wrong += ["x" * n for n in range(1, 2 * len(token) + 1)]  # every length up to 64
        wrong += [token[:-1] + "8", token.upper(), " " + token]
        async with aiohttp.ClientSession() as s:
            for bad in wrong:
                tries: list[dict[str, Any]] = [{"params": {"token": bad}}]
                if bad.strip() != token:  # surrounding blanks are no part of a Bearer token
                    tries.append({"headers": {"Authorization": "Bearer " + bad}})
                for kwargs in tries:
                    async with s.get(base, **kwargs) as r:
                        assert r.status == 401, (len(bad), kwargs)
            async with s.get(base, params={"token": token}) as r:
                assert r.status == 200
    assert calls, "hmac.compare_digest was not called"
    assert all(b == token.encode() for _, b in calls)


# -- bind addresses ----------------------------------------------------------------------


def _in_private_netns(args: list[str]) -> list[str]:
    """Run in a fresh network namespace (loopback only): default ports cannot collide."""
    unshare = require_program("unshare")
    inner = "ip link set lo up && exec " + " ".join(f"'{a}'" for a in args)
    return [unshare, "--net", "--", "sh", "-c", inner]


def test_http_servers_and_archive_bind_loopback_by_default(tmp_path: Path) -> None:
    require_root("a network namespace")
    env = rtstream_env()
    # viewer with every default (port 8080 inside its own namespace)
    view = _in_private_netns([*RTSTREAM, "view", "--test-pattern", "--size", "64x48",
                              "--fps", "5"])
    with running(view, log=tmp_path / "view.log", env=env, cwd=ROOT) as proc:
        found = wait_listening(proc, timeout=60)  # sh execs rtstream: the pid stays
        assert found == [("127.0.0.1", 8080)], found
    # archive SCP: only --dir and --port are required
    with running([*RTSTREAM, "archive", "--dir", str(tmp_path / "arch"), "--port", "0"],
                 log=tmp_path / "arch.log", env=env, cwd=ROOT) as proc:
        found = wait_listening(proc)
        assert {a for a, _ in found} == {"127.0.0.1"}, found
    # the sender's SDP server has no default address: HOST must be named
    for bad in ("8080", ":8080"):
        r = subprocess.run([*RTSTREAM, "send", "--http", bad, "--frames", "1"], env=env,
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "http" in r.stderr, r.stderr
    port = free_port(socket.SOCK_STREAM)
    base = free_port(count=4, step=2)
    cmd = [*RTSTREAM, "send", "--dest", f"127.0.0.1:{base}", "--video", "64x48@10",
           "--http", f"127.0.0.1:{port}", "--duration", "30"]
    with running(cmd, log=tmp_path / "send.log", env=env, cwd=ROOT) as proc:
        wait_for_tcp(port)
        assert {a for a, _ in listening_addresses(proc.pid)} == {"127.0.0.1"}


# -- multicast TTL ------------------------------------------------------------------------


async def test_multicast_ttl_is_1_by_default(tmp_path: Path) -> None:
    from rtstream.sender import NetworkConfig, Sender, SenderConfig

    cfg = SenderConfig(network=NetworkConfig(dest="239.255.77.1", port=free_port(count=4, step=2),
                                             interface="lo"),
                       video=dataclass_video(), frames=1)
    assert cfg.network.ttl == 1
    async with Sender(cfg) as tx:
        text = tx.sdp_text()
        ttls = set()
        for flow in tx._flows:  # the UdpSenders of every flow
            with socket.socket(fileno=os.dup(flow.fileno())) as s:
                ttls.add(s.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL))
    assert ttls == {1}
    assert re.findall(r"^c=IN IP4 (\S+?)\r?$", text, re.M) == ["239.255.77.1/1"] * 2


def dataclass_video() -> Any:
    from rtstream.sender import VideoConfig

    return VideoConfig(width=64, height=48)


# -- no patient data in logs ----------------------------------------------------------------


def test_no_patient_data_in_logs_at_info(tmp_path: Path) -> None:
    env = rtstream_env()
    base = free_port(count=4, step=2)
    aport = free_port(socket.SOCK_STREAM)
    sdp = tmp_path / "rtv.sdp"
    logs = {k: tmp_path / f"{k}.log" for k in ("archive", "send", "receive")}
    archive = [*RTSTREAM, "--log-level", "INFO", "archive", "--dir", str(tmp_path / "arch"),
               "--port", str(aport), "--aet", "ARCH"]
    send = [*RTSTREAM, "--log-level", "INFO", "send", "--dest", f"127.0.0.1:{base}",
            "--video", "160x120@30", "--duration", "6", "--sdp-out", str(sdp),
            "--patient-name", PATIENT, "--patient-id", PATIENT_ID,
            "--study-description", "Zyxwv study", "--accession-number", "ZXACC77"]
    receive = [*RTSTREAM, "--log-level", "INFO", "receive", "--sdp", str(sdp),
               "--duration", "4", "--snapshot-every", "0.5", "--record", "1",
               "--store", f"ARCH@127.0.0.1:{aport}", "--outbox", str(tmp_path / "outbox"),
               "--dump-metadata", str(tmp_path / "meta")]
    with running(archive, log=logs["archive"], env=env, cwd=ROOT):
        wait_for_tcp(aport)
        with running(send, log=logs["send"], env=env, cwd=ROOT) as tx:
            for _ in range(300):
                if sdp.exists() and sdp.stat().st_size:
                    break
                time.sleep(0.05)
            with open(logs["receive"], "wb") as out:
                rx = subprocess.run(receive, env=env, cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, timeout=120)
            tx.wait(60)
        time.sleep(0.5)
    assert rx.returncode == 0, logs["receive"].read_text()[-3000:]
    stored = [pydicom.dcmread(p) for p in (tmp_path / "arch").rglob("*.dcm")]
    assert len(stored) >= 2, "the run stored no snapshot and clip"
    # the name really flowed end to end: it is in the stored instances
    assert all(str(ds.PatientName) == PATIENT and ds.PatientID == PATIENT_ID for ds in stored)
    assert any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in stored)  # the clip
    text = "\n".join(p.read_text(errors="replace") for p in logs.values())
    assert "INFO" in text  # INFO logging was on
    for secret in ("Zyxwv", "zyxwv", "ZYXWV", PATIENT_ID, "ZXACC77"):
        assert secret not in text, f"{secret!r} appears in the logs"


# -- references kept alive ------------------------------------------------------------------


def test_referenced_security_tests_exist() -> None:
    wanted = {
        "tests/control/test_mqtt.py": ["test_credentials", "test_tls",
                                       "test_config_errors_hide_the_password"],
        "tests/pacs/test_store.py": ["test_tls_association"],
        "tests/viewer/test_server.py": ["test_every_route_wants_the_token",
                                        "test_generated_token_and_loopback_default"],
    }
    for path, names in wanted.items():
        text = (ROOT / path).read_text()
        for name in names:
            assert re.search(rf"^(async )?def {name}\(", text, re.M), f"{path}::{name} is gone"

