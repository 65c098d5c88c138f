"""C-STORE SCU with a persistent outbox, against real Orthanc, dcmtk storescp and our SCP."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pynetdicom import AE, AllStoragePresentationContexts, evt

from rtstream.errors import ConfigError, LocalProtocolError
from rtstream.pacs.archive import Archive
from rtstream.pacs.store import (
    Outbox,
    StatusClass,
    StoreClient,
    StoreConfig,
    StoreEvent,
    classify_status,
    parse_store_target,
)
from tests.orthanc import Orthanc
from tests.pacs.conftest import StoreScp, dataset_body, secondary_capture

ROOT = Path(__file__).resolve().parents[2]


def fast(outbox: Path, target: str, **kw: Any) -> StoreConfig:
    kw.setdefault("backoff_base", 0.02)
    kw.setdefault("backoff_max", 0.2)
    return StoreConfig.from_target(target, outbox=outbox, **kw)


# -- configuration ------------------------------------------------------------------------


def test_parse_store_target() -> None:
    assert parse_store_target("ORTHANC@127.0.0.1:4242") == ("ORTHANC", "127.0.0.1", 4242)
    assert parse_store_target("PACS@[::1]:104") == ("PACS", "::1", 104)
    assert parse_store_target("A B@host.example:11112").host == "host.example"
    for bad in [
        "",
        "ORTHANC",
        "@h:1",
        "AET@:1",
        "AET@h",
        "AET@h:x",
        "AET@h:0",
        "AET@h:70000",
        "A@B@h:1",
        "TOOLONGAETITLE1234@h:1",
        "AET@[::1]104",
        "AET@::1:104",
    ]:
        with pytest.raises(ConfigError) as exc:
            parse_store_target(bad)
        assert "--store" in str(exc.value)


@given(st.text(max_size=40))
def test_parse_store_target_never_crashes(text: str) -> None:
    try:
        t = parse_store_target(text)
    except ConfigError:
        return
    assert 1 <= t.port <= 65535 and t.host and 1 <= len(t.called_aet) <= 16


def test_config_validation(tmp_path: Path) -> None:
    ok = StoreConfig(host="h", port=1, called_aet="A", outbox=tmp_path)
    assert ok.calling_aet == "RTSTREAM"
    StoreConfig(outbox=tmp_path / "o", save_dir=tmp_path / "s")
    cases: list[tuple[str, dict[str, Any]]] = [
        ("host", {"host": ""}),
        ("port", {"port": 0}),
        ("called_aet", {"called_aet": ""}),
        ("calling_aet", {"calling_aet": "X" * 17}),
        ("idle_timeout", {"idle_timeout": 0}),
        ("max_retries", {"max_retries": -1}),
        ("backoff_max", {"backoff_base": 2.0, "backoff_max": 1.0}),
        ("queue_size", {"queue_size": 0}),
    ]
    for key, change in cases:
        args: dict[str, Any] = {"host": "h", "port": 1, "called_aet": "A", "outbox": tmp_path}
        args.update(change)
        with pytest.raises(ConfigError) as exc:
            StoreConfig(**args)
        assert exc.value.key == key


def test_classify_status() -> None:
    table = {
        0x0000: StatusClass.SUCCESS,
        0xB000: StatusClass.WARNING,
        0xB006: StatusClass.WARNING,
        0xB007: StatusClass.WARNING,
        0x0111: StatusClass.DUPLICATE,
        0xA700: StatusClass.RETRY,
        0xA7FF: StatusClass.RETRY,
        0x0213: StatusClass.RETRY,
        0x0110: StatusClass.RETRY,
        0xA900: StatusClass.PERMANENT,
        0xC000: StatusClass.PERMANENT,
        0xCFFF: StatusClass.PERMANENT,
        0x0122: StatusClass.PERMANENT,
        0x0124: StatusClass.PERMANENT,
        0x0117: StatusClass.PERMANENT,
    }
    for code, cls in table.items():
        assert classify_status(code) is cls, hex(code)


# -- outbox -------------------------------------------------------------------------------


def test_outbox_durable_ordered_never_overwrites(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox")
    first = [secondary_capture(rows=8, cols=8, seed=i) for i in range(5)]
    for ds in first:
        box.add(ds)
    assert box.pending() == [ds.SOPInstanceUID for ds in first]
    path = box.path(first[2].SOPInstanceUID)
    before = path.read_bytes()
    again = secondary_capture(rows=8, cols=8, seed=99, sop_instance_uid=first[2].SOPInstanceUID)
    path2, new = box.add(again)
    assert path2 == path and not new
    assert path.read_bytes() == before  # the queued copy is kept
    assert len(box.pending()) == 5
    # a complete PS3.10 file with file meta
    back = pydicom.dcmread(path)
    assert back.file_meta.MediaStorageSOPInstanceUID == first[2].SOPInstanceUID
    assert back.PixelData == first[2].PixelData
    # a crashed writer's temporary file is removed on reopen; order survives reopening
    (box.root / ".tmp-junk.dcm.1.2").write_bytes(b"partial")
    box2 = Outbox(box.root)
    assert not list(box.root.glob(".tmp-*"))
    assert box2.pending() == [ds.SOPInstanceUID for ds in first]
    later = secondary_capture(rows=8, cols=8, seed=50)
    box2.add(later)
    assert box2.pending()[-1] == later.SOPInstanceUID
    box2.done(first[0].SOPInstanceUID)
    assert first[0].SOPInstanceUID not in box2.pending()
    # failing twice never overwrites the first failed copy
    uid = first[1].SOPInstanceUID
    dst1 = box2.fail(uid, "first")
    box2.add(first[1])
    dst2 = box2.fail(uid, "second")
    assert dst1 != dst2 and dst1.exists() and dst2.exists()
    assert dst1.with_suffix(".txt").read_text().strip() == "first"
    assert uid not in box2.pending()


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_outbox_refuses_bad_uids(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    ds = secondary_capture(sop_instance_uid="1.2.3")
    ds.SOPInstanceUID = "../../etc/passwd"
    with pytest.raises(LocalProtocolError):
        box.add(ds)
    del ds.SOPInstanceUID
    with pytest.raises(LocalProtocolError):
        box.add(ds)
    assert box.pending() == []


# -- real peers ---------------------------------------------------------------------------


async def test_store_into_orthanc_bytes_match(orthanc: Orthanc, tmp_path: Path) -> None:
    ds = secondary_capture(rows=120, cols=160, seed=7)
    events: list[StoreEvent] = []
    async with StoreClient(
        fast(tmp_path / "outbox", orthanc.target), on_event=lambda e, d: events.append(e)
    ) as sc:
        result = await sc.submit(ds)
        assert result.ok and result.status == 0 and result.attempts == 1
        assert sc.counters["stored"] == 1 and sc.counters["depth"] == 0
    assert Outbox(tmp_path / "outbox").pending() == [] and events == []
    received = orthanc.file(ds.SOPInstanceUID)
    back = pydicom.dcmread(io.BytesIO(received))
    assert back.PixelData == ds.PixelData
    expected = np.frombuffer(ds.PixelData, np.uint8).reshape(120, 160, 3)
    assert np.array_equal(back.pixel_array, expected)
    for kw in ("SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientName"):
        assert back[kw].value == ds[kw].value
    tags = orthanc.tags(orthanc.instances()[0])
    assert tags["SOPInstanceUID"] in orthanc.sop_instance_uids()


async def test_store_into_storescp_bit_exact(storescp: StoreScp, tmp_path: Path) -> None:
    sent = [secondary_capture(rows=32, cols=40, seed=i) for i in range(3)]
    expected = {}
    for ds in sent:
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        expected[ds.SOPInstanceUID] = dataset_body(buf.getvalue())
    async with StoreClient(fast(tmp_path / "outbox", storescp.target)) as sc:
        results = await asyncio.gather(*[sc.submit(ds) for ds in sent])
    assert all(r.ok for r in results)
    for ds in sent:
        got = storescp.file_for(ds.SOPInstanceUID).read_bytes()
        assert dataset_body(got) == expected[ds.SOPInstanceUID]


async def test_outage_then_recovery_exactly_once(orthanc: Orthanc, tmp_path: Path) -> None:
    events: list[tuple[StoreEvent, str]] = []
    outage = asyncio.Event()

    def on_event(e: StoreEvent, detail: str) -> None:
        events.append((e, detail))
        if e is StoreEvent.OUTAGE:
            outage.set()

    sent = [secondary_capture(rows=16, cols=16, seed=100 + i) for i in range(20)]
    orthanc.stop()
    try:
        cfg = fast(tmp_path / "outbox", orthanc.target, max_retries=1)
        async with StoreClient(cfg, on_event=on_event) as sc:
            futures = [await sc.enqueue(ds) for ds in sent]
            await asyncio.wait_for(outage.wait(), 30)
            assert sc.counters["depth"] == 20
            assert len(Outbox(cfg.outbox).pending()) == 20  # all durable during the outage
            await asyncio.sleep(0.3)  # several refused attempts: none counts against retries
            orthanc.start()  # from the main thread: see tests.orthanc.die_with_parent
            results = await asyncio.wait_for(asyncio.gather(*futures), 60)
    finally:
        orthanc.start()
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert [e for e, _ in events] == [StoreEvent.OUTAGE, StoreEvent.RECOVERED]
    assert Outbox(cfg.outbox).pending() == [] and Outbox(cfg.outbox).failed() == []
    uids = orthanc.sop_instance_uids()
    for ds in sent:
        assert uids.count(ds.SOPInstanceUID) == 1


def test_sigkill_mid_queue_nothing_lost_nothing_duplicated(tmp_path: Path) -> None:
    slow = threading.Event()

    def on_stored(path: Path, duplicate: bool) -> None:
        if not slow.is_set():
            time.sleep(0.03)  # keep the queue long enough to kill the sender mid-way

    outbox = tmp_path / "outbox"
    count = 30
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests.pacs.store_crash_child", str(outbox)]
    with Archive(tmp_path / "archive", 0, "CRASHARCH", on_stored=on_stored) as arch:
        child = subprocess.Popen(
            [*cmd, arch.target, str(count), "1"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        queued = []
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("queued "):
                queued.append(line.split()[1])
            if line.strip() == "all-queued":
                break
        assert len(queued) == count
        assert arch.wait_for(3, 30)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        left = Outbox(outbox).pending()
        assert 0 < len(left) < count, "the kill must land mid-queue"
        slow.set()
        rerun = subprocess.run(
            [*cmd, arch.target, "0", "2"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert rerun.returncode == 0, rerun.stderr
        assert "failed=0" in rerun.stdout
        stored = {p.stem for p in arch.files()}
        assert stored == set(queued)  # nothing lost
        assert len(arch.files()) == count  # one file per instance
        # at-least-once: at most the one instance in flight at the kill was sent twice
        assert arch.counters["received"] == count and arch.counters["duplicates"] <= 1
    assert Outbox(outbox).pending() == [] and Outbox(outbox).failed() == []


async def test_permanent_failure_goes_to_failed(orthanc: Orthanc, tmp_path: Path) -> None:
    # Orthanc does not accept unknown storage SOP classes (UnknownSopClassAccepted false).
    ds = secondary_capture(sop_class_uid="1.2.826.0.1.3680043.8.498.1.999")
    cfg = fast(tmp_path / "outbox", orthanc.target)
    async with StoreClient(cfg) as sc:
        result = await sc.submit(ds)
        ok = await sc.submit(secondary_capture(seed=3))
        assert sc.counters["failed"] == 1 and sc.counters["stored"] == 1
    assert not result.ok and result.status is None
    assert "no presentation context" in result.error
    assert ok.ok
    box = Outbox(cfg.outbox)
    assert box.pending() == []
    assert result.path is not None and result.path.parent == box.failed_dir
    assert pydicom.dcmread(result.path).PixelData == ds.PixelData  # kept, never deleted
    assert ds.SOPInstanceUID not in orthanc.sop_instance_uids()


class ScriptedScp:
    """A pynetdicom Storage SCP answering statuses from a script per SOP Instance UID."""

    def __init__(self, script: dict[str, list[int]]) -> None:
        self.script = script
        self.calls: dict[str, int] = {}
        self.associations = 0
        self.ae = AE(ae_title="SCRIPTED")
        for cx in AllStoragePresentationContexts:
            assert cx.abstract_syntax is not None
            self.ae.add_supported_context(cx.abstract_syntax)
        server = self.ae.start_server(
            ("127.0.0.1", 0),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self.on_store), (evt.EVT_ACCEPTED, self.on_accept)],
        )
        assert server is not None
        self.server = server
        self.target = f"SCRIPTED@127.0.0.1:{self.server.server_address[1]}"

    def on_accept(self, event: Any) -> None:
        self.associations += 1

    def on_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        n = self.calls.get(uid, 0)
        self.calls[uid] = n + 1
        answers = self.script.get(uid, [0])
        return answers[min(n, len(answers) - 1)]

    def close(self) -> None:
        self.server.shutdown()
        self.ae.shutdown()


async def test_retry_and_permanent_statuses(tmp_path: Path) -> None:
    items = {
        name: secondary_capture(rows=8, cols=8, seed=i)
        for i, name in enumerate(["retry", "mismatch", "warn", "dup", "never", "plain"])
    }
    uid = {k: v.SOPInstanceUID for k, v in items.items()}
    scp = ScriptedScp(
        {
            uid["retry"]: [0xA700, 0xA701, 0x0000],
            uid["mismatch"]: [0xA900],
            uid["warn"]: [0xB000],
            uid["dup"]: [0x0111],
            uid["never"]: [0xA700],
        }
    )
    try:
        cfg = fast(tmp_path / "outbox", scp.target, max_retries=2)
        async with StoreClient(cfg) as sc:
            res = {k: await sc.submit(ds) for k, ds in items.items()}
            counters = dict(sc.counters)
    finally:
        scp.close()
    assert res["retry"].ok and res["retry"].attempts == 3 and scp.calls[uid["retry"]] == 3
    assert not res["mismatch"].ok and res["mismatch"].status == 0xA900
    assert scp.calls[uid["mismatch"]] == 1  # permanent: no retry
    assert res["warn"].ok and res["warn"].status == 0xB000
    assert res["dup"].ok and res["dup"].status == 0x0111
    assert not res["never"].ok and scp.calls[uid["never"]] == 3  # 1 + max_retries
    assert res["plain"].ok
    assert counters["stored"] == 4 and counters["failed"] == 2 and counters["retries"] == 4
    failed = {p.stem for p in Outbox(cfg.outbox).failed()}
    assert failed == {uid["mismatch"], uid["never"]}
    assert scp.associations == 1  # one association reused for every instance


async def test_idle_release_and_duplicate_submit(tmp_path: Path) -> None:
    scp = ScriptedScp({})
    try:
        cfg = fast(tmp_path / "outbox", scp.target, idle_timeout=0.1)
        ds = secondary_capture(rows=8, cols=8, seed=1)
        async with StoreClient(cfg) as sc:
            a = await sc.enqueue(ds)
            b = await sc.enqueue(ds)  # same UID while queued: one file, one C-STORE
            assert (await a).ok and (await b).ok
            await asyncio.sleep(0.4)  # idle: association released
            assert (await sc.submit(secondary_capture(rows=8, cols=8, seed=2))).ok
    finally:
        scp.close()
    assert scp.calls[ds.SOPInstanceUID] == 1
    assert scp.associations == 2


async def test_save_dir_mode_never_overwrites(tmp_path: Path) -> None:
    cfg = StoreConfig(outbox=tmp_path / "outbox", save_dir=tmp_path / "saved")
    ds = secondary_capture(rows=8, cols=8, seed=1)
    async with StoreClient(cfg) as sc:
        r1 = await sc.submit(ds)
        first = (tmp_path / "saved" / f"{ds.SOPInstanceUID}.dcm").read_bytes()
        other = secondary_capture(rows=8, cols=8, seed=2, sop_instance_uid=ds.SOPInstanceUID)
        r2 = await sc.submit(other)
    assert r1.ok and r2.ok and r1.path == r2.path
    assert r1.path is not None and r1.path.read_bytes() == first
    assert pydicom.dcmread(r1.path).PixelData == ds.PixelData


async def test_flush_sends_what_a_cancelled_enqueue_was_still_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A snapshot task cancelled at shutdown while its file is being made durable: the
    writing thread goes on, and the flush that follows waits for it and sends the file
    (it used to look at the outbox too early and leave the instance queued)."""
    writing, release = threading.Event(), threading.Event()
    add = Outbox.add

    def slow_add(self: Outbox, ds: Any) -> Any:
        writing.set()
        release.wait(5)
        return add(self, ds)

    monkeypatch.setattr(Outbox, "add", slow_add)
    cfg = StoreConfig(outbox=tmp_path / "outbox", save_dir=tmp_path / "saved")
    ds = secondary_capture(rows=8, cols=8, seed=1)
    async with StoreClient(cfg) as sc:
        task = asyncio.create_task(sc.enqueue(ds))
        await asyncio.to_thread(writing.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        flush = asyncio.create_task(sc.flush())
        await asyncio.sleep(0.1)
        assert not flush.done()  # waits for the thread still writing
        release.set()
        await asyncio.wait_for(flush, 5)
        assert sc.queued() == 0
    assert (tmp_path / "saved" / f"{ds.SOPInstanceUID}.dcm").is_file()


async def test_replay_on_start(tmp_path: Path, archive: Archive) -> None:
    box = Outbox(tmp_path / "outbox")
    queued = [secondary_capture(rows=8, cols=8, seed=i) for i in range(4)]
    for ds in queued:
        box.add(ds)
    async with StoreClient(fast(box.root, archive.target)) as sc:
        assert sc.counters["depth"] == 4
        await sc.flush()
        assert sc.counters["stored"] == 4
    assert {p.stem for p in archive.files()} == {ds.SOPInstanceUID for ds in queued}
    assert box.pending() == []


async def test_tls_association(tmp_path: Path) -> None:
    import ssl

    from rtstream.pacs.store import TlsSettings
    from tests.peers import require_program

    openssl = require_program("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(cert), str(key))
    received: list[bytes] = []

    def on_store(event: Any) -> int:
        received.append(event.encoded_dataset(include_meta=False))
        return 0x0000

    ae = AE(ae_title="TLSSCP")
    ae.add_supported_context(secondary_capture().SOPClassUID)
    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        ssl_context=server_ctx,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert server is not None
    try:
        tls = TlsSettings(ca_file=cert, server_hostname="localhost")
        cfg = StoreConfig(
            host="127.0.0.1",
            port=server.server_address[1],
            called_aet="TLSSCP",
            outbox=tmp_path / "outbox",
            tls=tls,
        )
        ds = secondary_capture(rows=8, cols=8, seed=4)
        async with StoreClient(cfg) as sc:
            assert (await sc.submit(ds)).ok
    finally:
        server.shutdown()
        ae.shutdown()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    assert received == [dataset_body(buf.getvalue())]
    with pytest.raises(ConfigError):
        TlsSettings(ca_file=tmp_path / "missing.pem")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "done"]), st.integers(0, 4)), max_size=12))
def test_outbox_model(ops: list[tuple[str, int]]) -> None:
    """pending() is the arrival order of queued UIDs; a queued file is never replaced."""
    import tempfile

    uids = [f"1.2.826.0.1.3680043.8.498.77.{i}" for i in range(5)]
    with tempfile.TemporaryDirectory() as d:
        box = Outbox(Path(d))
        model: list[str] = []
        content: dict[str, bytes] = {}
        for n, (op, i) in enumerate(ops):
            uid = uids[i]
            if op == "put":
                _, new = box.add(secondary_capture(rows=2, cols=2, seed=n, sop_instance_uid=uid))
                assert new == (uid not in model)
                if new:
                    model.append(uid)
                    content[uid] = box.path(uid).read_bytes()
            else:
                box.done(uid)
                if uid in model:
                    model.remove(uid)
            assert box.pending() == model
            for u in model:
                assert box.path(u).read_bytes() == content[u]
        assert Outbox(Path(d)).pending() == model
