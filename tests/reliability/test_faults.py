"""Faults on the full CLI path: sender restart, SSRC collision, archive outage with SIGKILL,
broker outage, outbox disk full.

What exists and is not repeated: the in-process sender restart with colliding timestamps
(tests/net/test_receiver.py::test_sender_restart_followed), the store client's outage and
SIGKILL tests (tests/pacs/test_store.py), the control plane's broker outage
(tests/control/test_mqtt.py::test_broker_outage_never_blocks_and_recovers). Here the real
``rtstream send`` / ``rtstream receive`` / ``rtstream archive`` processes are used, and the
pairing of every delivered frame is checked by the probe of tests/reliability/test_netem.py
(the receive CLI's own configuration, a record of each frame's digest and grain).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom

from tests.peers import free_port, require_root, stop, wait_for_tcp
from tests.reliability import ROOT, RTSTREAM, rtstream_env
from tests.reliability.test_netem import sender_frames

SMALL = ["--video", "160x120@30", "--depth", "8"]

#: ``rtstream`` whose sender draws fixed SSRCs (and SDP session id): two of these collide.
#: Only ``random.SystemRandom()`` objects made after the patch are affected -- the sender's;
#: ``secrets`` (pydicom's UIDs) keeps its own, so RTV instance UIDs still differ.
FIXED_SSRC = [
    sys.executable, "-c",
    "import random, secrets, sys\n"
    "class Fixed(random.SystemRandom):\n"
    "    def getrandbits(self, k): return 0x5EED5EED & ((1 << k) - 1)\n"
    "random.SystemRandom = Fixed\n"
    "from rtstream.cli import main; sys.exit(main(sys.argv[1:]))",
]


@contextmanager
def procs() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Processes started in the block, stopped by PID at its end whatever happened."""
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        yield started
    finally:
        for p in started.values():
            stop(p)


def start(started: dict[str, subprocess.Popen[bytes]], key: str, cmd: list[str],
          log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        p = subprocess.Popen(cmd, env=rtstream_env(), cwd=ROOT, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
    started[key] = p
    return p


def write_sdp(path: Path, base: int) -> None:
    with open(path, "w") as f:
        subprocess.run([*RTSTREAM, "sdp", "--dest", f"127.0.0.1:{base}", *SMALL],
                       env=rtstream_env(), cwd=ROOT, stdout=f, check=True, timeout=60)


def probe(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tests.reliability.test_netem", str(out), *args]


def stop_probe(p: subprocess.Popen[bytes]) -> int:
    """Stop the probe once the senders are done (SIGTERM: it writes its record, exits 0)."""
    time.sleep(1.0)  # the last packets and the pairing wait
    p.send_signal(signal.SIGTERM)
    return p.wait(60)


def wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def sender_of(items: list[dict[str, Any]], sent: dict[str, dict[int, str]]) -> None:
    """Assert each frame is one sender's and its grain (if any) that same sender's.

    A frame belongs to the sender that sent its RTP timestamp (the two senders' capture
    instants differ); a complete frame must be byte-identical to that sender's frame; a
    grain must carry the frame's timestamp, and one RTV instance UID (and Patient ID, when
    the grain had the static part) must only ever come with one sender's frames.
    """
    uid_owner: dict[str, str] = {}
    for it in items:
        owners = [name for name, frames in sent.items() if it["ts"] in frames]
        assert owners, f"frame {it['ts']}: sent by neither"
        if len(owners) > 1:
            # Both senders stamped a frame with this timestamp (their capture instants fell
            # in one 90 kHz tick, as in a fresh-clone CI run): it cannot be told whose it
            # is, but a complete frame must still be one of theirs, whole.
            if it["complete"]:
                assert it["sha"] in {sent[o][it["ts"]] for o in owners}
            continue
        owner = owners[0]
        if it["complete"]:
            assert sent[owner][it["ts"]] == it["sha"], f"frame {it['ts']}: not {owner}'s bytes"
        if "fn" in it:
            assert it["origin"] == it["ts"], "frame paired with another timestamp's grain"
            assert uid_owner.setdefault(it["uid"], owner) == owner, "grain of the other sender"
            assert it.get("pid", owner) == owner


# -- sender restart and SSRC collision ---------------------------------------------------------


def test_sender_restart_new_ssrc_and_rtv_instance(tmp_path: Path) -> None:
    base = free_port(count=4, step=2)
    sdp = tmp_path / "s.sdp"
    write_sdp(sdp, base)
    out = tmp_path / "probe.json"
    with procs() as ps:
        rx = start(ps, "rx", probe(out, "--sdp", str(sdp), "--duration", "60"),
                   tmp_path / "rx.log")
        time.sleep(1.5)
        for name in ("A", "B"):
            tx = start(ps, name, [*RTSTREAM, "send", "--dest", f"127.0.0.1:{base}", *SMALL,
                                  "--duration", "3", "--patient-id", f"SENDER-{name}",
                                  "--dump-frames", str(tmp_path / name)], tmp_path / f"{name}.log")
            assert tx.wait(60) == 0
        assert stop_probe(rx) == 0, (tmp_path / "rx.log").read_text()[-3000:]
    res = json.loads(out.read_text())
    items, stats = res["items"], res["stats"]
    sent = {f"SENDER-{n}": sender_frames(tmp_path / n) for n in ("A", "B")}
    sender_of(items, sent)
    ssrcs = [it["ssrc"] for it in items]
    change = [i for i in range(1, len(ssrcs)) if ssrcs[i] != ssrcs[i - 1]]
    assert len(change) == 1, "frames of the two senders interleaved"
    first, second = items[: change[0]], items[change[0]:]
    assert {it["uid"] for it in first if "uid" in it}.isdisjoint(
        {it["uid"] for it in second if "uid" in it})  # a new RTV instance
    assert stats["restarts"] >= 1
    # the new stream is followed within the SSRC timeout (1 s) of the old one going silent
    assert len(second) >= len(sent["SENDER-B"]) - 31
    # metadata follows at once, but for the first few frames: the pairer refuses grains
    # that could be the old stream's tail for one pairing wait (2 frames) after a restart
    unpaired = [k for k, it in enumerate(second) if "fn" not in it]
    assert all(k < 4 for k in unpaired), unpaired
    assert all("fn" in it for it in first[1:])
    assert stats["packets_malformed"] == 0


def test_ssrc_collision_two_senders_one_ssrc(tmp_path: Path) -> None:
    """Two live senders with the same SSRCs (RFC 3550 §8.2) into one receiver.

    The receiver cannot tell them apart by SSRC (it does not look at source addresses).
    What it must do: keep running, never deliver a frame made of both senders' packets,
    never pair one sender's frame with the other's grain, and show the trouble in its
    counters (incomplete frames, restarts of the metadata generation).
    """
    base = free_port(count=4, step=2)
    sdp = tmp_path / "s.sdp"
    write_sdp(sdp, base)
    out = tmp_path / "probe.json"
    with procs() as ps:
        rx = start(ps, "rx", probe(out, "--sdp", str(sdp), "--duration", "60",
                                   "--incomplete", "deliver"), tmp_path / "rx.log")
        time.sleep(1.5)
        txs = [start(ps, name, [*FIXED_SSRC, "send", "--dest", f"127.0.0.1:{base}", *SMALL,
                                "--duration", "4", "--patient-id", f"SENDER-{name}",
                                "--dump-frames", str(tmp_path / name)], tmp_path / f"{name}.log")
               for name in ("A", "B")]
        for tx in txs:
            assert tx.wait(60) == 0
        assert stop_probe(rx) == 0, (tmp_path / "rx.log").read_text()[-3000:]
    res = json.loads(out.read_text())
    items, stats = res["items"], res["stats"]
    assert len({it["ssrc"] for it in items}) == 1 == len({0x5EED5EED} & {it["ssrc"] for it in items})
    sent = {f"SENDER-{n}": sender_frames(tmp_path / n) for n in ("A", "B")}
    sender_of(items, sent)
    owners = {name for it in items if it["complete"]
              for name, frames in sent.items() if frames.get(it["ts"]) == it["sha"]}
    assert owners  # whole frames got through, each one sender's (checked above)
    # counted: the interleaved sequence numbers look like loss and reordering, the two RTV
    # instances take turns as the metadata generation
    assert stats["restarts"] >= 2
    assert stats["packets_lost"] + stats["reordered"] + stats["late"] > 0
    print(json.dumps({k: stats[k] for k in ("frames_complete", "frames_incomplete", "restarts",
                                            "packets_lost", "reordered", "late",
                                            "metadata_matched", "metadata_unmatched",
                                            "grains_unmatched")}))


# -- archive outage and SIGKILL of the receiver ---------------------------------------------------


def archive_cmd(directory: Path, port: int) -> list[str]:
    return [*RTSTREAM, "archive", "--dir", str(directory), "--port", str(port), "--aet", "ARCH"]


def archived(directory: Path) -> dict[str, pydicom.Dataset]:
    """SOP Instance UID -> data set of every file the archive holds (parsed fully)."""
    out: dict[str, pydicom.Dataset] = {}
    for p in directory.rglob("*.dcm"):
        ds = pydicom.dcmread(p)
        uid = str(ds.SOPInstanceUID)
        assert uid not in out, f"{uid} stored twice"
        out[uid] = ds
    return out


def assert_complete(ds: pydicom.Dataset) -> None:
    """A snapshot as built: every pixel byte present."""
    rows, cols, spp = int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return
    want = rows * cols * spp * frames * (int(ds.BitsAllocated) // 8)
    if str(ds.PhotometricInterpretation) == "YBR_FULL_422":
        want = rows * cols * 2 * frames
    assert len(ds.PixelData) >= want


def outbox_files(outbox: Path) -> tuple[set[str], list[str]]:
    """(queued SOP Instance UIDs, names of anything else but failed/)."""
    uids, other = set(), []
    for p in outbox.iterdir():
        if p.name == "failed":
            continue
        if p.suffix == ".dcm" and not p.name.startswith("."):
            uids.add(p.stem)
        else:
            other.append(p.name)
    return uids, other


def test_archive_outage_sigkill_with_full_outbox_then_exactly_once(tmp_path: Path) -> None:
    base = free_port(count=4, step=2)
    aport = free_port(socket.SOCK_STREAM)
    sdp = tmp_path / "s.sdp"
    write_sdp(sdp, base)
    outbox, arch = tmp_path / "outbox", tmp_path / "arch"
    rx_cmd = [*RTSTREAM, "receive", "--sdp", str(sdp), "--snapshot-every", "0.2",
              "--store", f"ARCH@127.0.0.1:{aport}", "--outbox", str(outbox)]
    with procs() as ps:
        start(ps, "tx", [*RTSTREAM, "send", "--dest", f"127.0.0.1:{base}", *SMALL,
                         "--duration", "40"], tmp_path / "tx.log")
        rx1 = start(ps, "rx1", [*rx_cmd, "--duration", "30"], tmp_path / "rx1.log")
        # the archive is down: instances pile up in the outbox
        wait_for(lambda: len(outbox_files(outbox)[0]) >= 6 if outbox.exists() else False, 40,
                 "instances queued in the outbox")
        os.killpg(rx1.pid, signal.SIGKILL)
        rx1.wait(10)
        queued, _ = outbox_files(outbox)
        # queued instances hold patient data: readable by their owner only
        modes = {oct(p.stat().st_mode & 0o777) for p in outbox.glob("*.dcm")}
        assert modes == {"0o600"}, modes
        start(ps, "arch", archive_cmd(arch, aport), tmp_path / "arch.log")
        wait_for_tcp(aport)
        rx2 = start(ps, "rx2", [*rx_cmd, "--duration", "3"], tmp_path / "rx2.log")
        assert rx2.wait(90) == 0, (tmp_path / "rx2.log").read_text()[-3000:]
        stop(ps["arch"])
    log1 = (tmp_path / "rx1.log").read_text(errors="replace")
    log2 = (tmp_path / "rx2.log").read_text(errors="replace")
    assert "archive unreachable" in log1
    assert re.search(r"replaying \d+ queued instance", log2)
    got = archived(arch)
    assert queued <= set(got), f"lost: {queued - set(got)}"
    for ds in got.values():
        assert_complete(ds)
    left, other = outbox_files(outbox)
    assert not left and not other, (left, other)  # delivered, and no partial write left over
    assert not list((outbox / "failed").iterdir())
    summary = (tmp_path / "arch.log").read_text()
    m = re.search(r"stored (\d+), duplicates (\d+), failed (\d+)", summary)
    assert m is not None, summary
    assert int(m.group(1)) == len(got) and m.group(2) == "0" and m.group(3) == "0"


# -- outbox disk full ---------------------------------------------------------------------------


@contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``path``; unmounted at the end, whatever happened."""
    require_root("mounting a tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                   check=True, timeout=30)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


def test_outbox_disk_full_stream_continues_nothing_half_written(tmp_path: Path) -> None:
    base = free_port(count=4, step=2)
    aport = free_port(socket.SOCK_STREAM)
    sdp = tmp_path / "s.sdp"
    write_sdp(sdp, base)
    arch = tmp_path / "arch"
    with small_tmpfs(tmp_path / "outbox", "1m") as outbox, procs() as ps:
        start(ps, "tx", [*RTSTREAM, "send", "--dest", f"127.0.0.1:{base}", *SMALL,
                         "--duration", "30"], tmp_path / "tx.log")
        rx = start(ps, "rx", [*RTSTREAM, "receive", "--sdp", str(sdp), "--duration", "12",
                              "--snapshot-every", "0.2", "--store", f"ARCH@127.0.0.1:{aport}",
                              "--outbox", str(outbox), "--stats-json",
                              str(tmp_path / "rx.json")], tmp_path / "rx.log")
        # archive down: the 1 MiB outbox fills up (a 160x120 snapshot is ~60 kB)
        wait_for(lambda: "No space left" in (tmp_path / "rx.log").read_text(errors="replace"),
                 30, "the outbox to fill up")
        full_at = len(outbox_files(outbox)[0])
        time.sleep(1.0)
        # A snapshot is tried every 0.2 s: its temporary file may exist at the instant we
        # look (it is removed when the write fails). Left behind is what is there twice.
        _, other = outbox_files(outbox)
        time.sleep(0.5)
        left_behind = set(other) & set(outbox_files(outbox)[1])
        assert not left_behind, f"partial files in the outbox: {left_behind}"
        start(ps, "arch", archive_cmd(arch, aport), tmp_path / "arch.log")
        wait_for_tcp(aport)
        assert rx.wait(60) == 0, (tmp_path / "rx.log").read_text()[-3000:]
        left, other = outbox_files(outbox)
        stop(ps["arch"])
    log = (tmp_path / "rx.log").read_text(errors="replace")
    stats = json.loads((tmp_path / "rx.json").read_text())
    got = archived(arch)
    for ds in got.values():
        assert_complete(ds)
    assert not other, f"partial files in the outbox: {other}"
    assert not left, f"never delivered: {left}"
    # a clear error, once per lost snapshot, naming the cause
    assert re.search(r"ERROR rtstream\.receiver[.\w]*: snapshot not queued: the outbox cannot be "
                     r"written \(.*No space left on device\)", log)
    # the stream went on during and after the disk-full period
    # (the receiver starts after the sender: its very first frame may be a partial one)
    assert stats["frames_delivered"] >= 300 and stats["frames_incomplete"] <= 1
    assert stats["packets_lost"] == 0
    # snapshots resumed once the archive drained the outbox
    assert len(got) > full_at, (len(got), full_at, log[-3000:])
    print(json.dumps({"queued_when_full": full_at, "archived": len(got),
                      "snapshots": stats["snapshots"], "store": stats.get("store")}))


# -- broker outage --------------------------------------------------------------------------------


def test_broker_outage_stream_unaffected_nodes_reconnect(tmp_path: Path) -> None:
    from tests.control.conftest import Broker
    from tests.control.test_mqtt import Watcher

    base = free_port(count=4, step=2)
    sdp = tmp_path / "s.sdp"
    write_sdp(sdp, base)
    broker = Broker(tmp_path / "broker")
    broker.start()
    mqtt = ["--mqtt", broker.url, "--stats-interval", "0.5"]
    try:
        with procs() as ps:
            rx = start(ps, "rx", [*RTSTREAM, "receive", "--sdp", str(sdp), "--duration", "9",
                                  "--stats-json", str(tmp_path / "rx.json"), *mqtt,
                                  "--node", "rel-rx"], tmp_path / "rx.log")
            time.sleep(1.0)
            tx = start(ps, "tx", [*RTSTREAM, "send", "--dest", f"127.0.0.1:{base}", *SMALL,
                                  "--duration", "7", "--stats-json", str(tmp_path / "tx.json"),
                                  *mqtt, "--node", "rel-tx"], tmp_path / "tx.log")

            async def watch(seconds: float) -> Watcher:
                async with Watcher(broker.port, "rtstream/#") as w:
                    await asyncio.sleep(seconds)
                return w

            before = asyncio.run(watch(1.5))
            broker.stop()  # 2 s without a broker, mid-stream
            time.sleep(2.0)
            broker.start()
            after = asyncio.run(watch(3.0))
            assert tx.wait(60) == 0 and rx.wait(60) == 0, (tmp_path / "rx.log").read_text()
    finally:
        broker.stop()
    tx_stats = json.loads((tmp_path / "tx.json").read_text())
    rx_stats = json.loads((tmp_path / "rx.json").read_text())
    # streaming unaffected: every frame arrived whole, nothing lost, sender never late
    assert rx_stats["packets_lost"] == 0 and rx_stats["frames_incomplete"] == 0
    assert rx_stats["frames_delivered"] >= tx_stats["frames"] - 2
    assert tx_stats["late_frames"] <= 2
    for w in (before, after):
        for node in ("rel-rx", "rel-tx"):
            status = w.on(f"rtstream/{node}/status")
            assert status and status[-1]["state"] == "online", (node, w.messages[-5:])
        assert w.on("rtstream/rel-rx/stats"), "no receiver stats"
    fresh = [s for s in after.on("rtstream/rel-rx/stats") if s.get("frames_delivered", 0)
             > max(b.get("frames_delivered", 0) for b in before.on("rtstream/rel-rx/stats"))]
    assert fresh, "no stats published after the broker came back"
