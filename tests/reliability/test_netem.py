"""The full ``rtstream send`` -> ``rtstream receive`` path over an impaired link.

Three namespaces (tests/reliability/netns.py): the sender in one, the receivers in
another, and between them a wire applying netem's model (this kernel has no ``sch_netem``,
see netns.py; the sender runs with ``--no-gso`` because an ``AF_PACKET`` bridge would get
GSO super-frames larger than the MTU) -- 1% loss, 5% reordering, 1%
duplication, 5 ms +- 5 ms delay -- then a 2 s outage, then a clean link. The wire counts
exactly what it did per UDP port and phase; the receiver's counters must equal it.

Two receivers join the same multicast group in the receiver namespace, so both see the
very same impaired packets:

* ``rtstream receive --stats-json --dump-frames --dump-metadata`` (the CLI), whose dumps
  and counters are checked against the sender's own dumps (``rtstream send
  --dump-frames``) and the wire's counts;
* a probe (this module's ``__main__``) that builds its :class:`ReceiverConfig` from the
  same command line with the CLI's own parser and records, for every delivered frame, a
  digest of its bytes and the grain it was paired with. The CLI's dump files are named by
  RTP timestamp and written before pairing, so they cannot show a mispairing; the probe
  can. A pairing is right when the frame's bytes are the sender's frame of that
  timestamp and the grain's Frame Acquisition Number and Frame Origin Timestamp are the
  ones the sender gave that frame.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.peers import require_program, require_root, stop
from tests.reliability import ROOT, RTSTREAM, rtstream_env
from tests.reliability.netns import PREFIX, NetnsPair, namespaces, remove_stale

pytestmark = [pytest.mark.netns]

TICKS = 3000  # 90 kHz ticks per frame at 30 fps
GROUP = "239.22.1.1"
VIDEO = ["--video", "320x240@30", "--depth", "8"]


def frame_number(ds: Any) -> int:
    """Frame Acquisition Number of a grain's dynamic part (0006,0001) item."""
    item = ds[0x00060001].value[0]
    return int(item[0x00209111].value[0][0x00209156].value)


def origin_ticks(ds: Any) -> int | None:
    """The Frame Origin Timestamp of a grain as a 90 kHz RTP timestamp."""
    from rtstream.proto.clock import rtp_timestamp
    from rtstream.proto.rtv_metadata import frame_origin

    origin = frame_origin(ds)
    return None if origin is None else rtp_timestamp(origin.to_ns(), 90000)


def _digest(data: Any) -> str:
    return hashlib.sha256(memoryview(data).cast("B")).hexdigest()


async def _probe(argv: list[str], out: Path) -> None:
    from rtstream.commands import receive
    from rtstream.receiver import ItemKind, Receiver

    parser = argparse.ArgumentParser()
    receive.configure(parser)
    cfg = receive.build_config(parser.parse_args(argv))
    records = []
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with Receiver(cfg) as rx:
        out.with_suffix(".ready").write_text("listening\n")  # sockets open, groups joined
        try:
            async for item in rx:
                if item.kind is ItemKind.VIDEO and item.frame is not None:
                    records.append(_record(item))
        except asyncio.CancelledError:  # SIGTERM: a clean stop, like the CLI's
            pass
        stats = rx.stats
    out.write_text(json.dumps({"items": records, "stats": stats}))


def _record(item: Any) -> dict[str, Any]:
    """What the probe keeps of one delivered frame: digest and the grain it came with."""
    rec: dict[str, Any] = {"ts": item.rtp_timestamp, "ssrc": item.ssrc,
                           "complete": item.complete, "sha": _digest(item.frame)}
    if item.metadata is not None:
        rec.update(fn=frame_number(item.metadata), origin=origin_ticks(item.metadata),
                   uid=item.rtv_sop_instance_uid)
        if "PatientID" in item.metadata:  # a grain with the static part
            rec["pid"] = str(item.metadata.PatientID)
    return rec


def unwrap(ts: int, first: int) -> int:
    """Frames after ``first`` (RTP timestamps wrap at 2**32)."""
    return round(((ts - first) % (1 << 32)) / TICKS)


def check_pairing(items: list[dict[str, Any]], sent: dict[int, str], first_ts: int) -> int:
    """Assert that no delivered frame carries another frame's grain; return matched count."""
    matched = 0
    for it in items:
        ts = it["ts"]
        assert ts in sent, f"frame {ts} was never sent"
        if it["complete"]:
            assert it["sha"] == sent[ts], f"frame {ts}: bytes differ from what was sent"
        if "fn" in it:
            assert it["origin"] == ts, f"frame {ts} paired with the grain of {it['origin']}"
            assert it["fn"] == unwrap(ts, first_ts) + 1, f"frame {ts}: grain of frame {it['fn']}"
            matched += 1
    return matched


def sender_frames(directory: Path) -> dict[int, str]:
    """RTP timestamp -> digest of every frame the sender dumped."""
    return {int(p.stem): _digest(p.read_bytes()) for p in directory.glob("*.raw")}


def run_impaired(tmp: Path, *, impair_s: float, outage_s: float, clean_s: float,
                 lead_s: float) -> dict[str, Any]:
    """Run sender, CLI receiver and probe through the wire; return everything measured."""
    env = rtstream_env()
    total = lead_s + impair_s + outage_s + clean_s
    with NetnsPair(subnet=22) as net:
        created = (net.tx_ns, net.wire_ns, net.rx_ns)
        assert set(created) <= set(namespaces())
        assert net.interfaces(net.tx_ns) == ["lo", net.tx_dev]
        assert net.interfaces(net.rx_ns) == ["lo", net.rx_dev]
        net.start_wire(tmp / "wire.json", phases=["clean", "impair", "outage", "clean"],
                       loss=0.01, duplicate=0.01, reorder=0.05, delay_ms=5, jitter_ms=5,
                       seed=2110)
        sdp = tmp / "rtv.sdp"
        with open(sdp, "w") as sdp_file:
            subprocess.run([*net.exec_prefix(net.tx_ns), *RTSTREAM, "sdp", "--dest",
                            f"{GROUP}:5004", *VIDEO, "--interface", net.tx_dev],
                           env=env, stdout=sdp_file, check=True, timeout=60)
        # stopped by SIGTERM once the sender is done; the duration is only a backstop
        rx_args = ["--sdp", str(sdp), "--duration", f"{total + 60:.1f}", "--interface", net.rx_dev]
        cli = [*net.exec_prefix(net.rx_ns), *RTSTREAM, "receive", *rx_args,
               "--stats-json", str(tmp / "rx.json"), "--dump-frames", str(tmp / "rf"),
               "--dump-metadata", str(tmp / "rm")]
        probe = [*net.exec_prefix(net.rx_ns), sys.executable, "-m",
                 "tests.reliability.test_netem", str(tmp / "probe.json"), *rx_args]
        send = [*net.exec_prefix(net.tx_ns), *RTSTREAM, "send", "--dest", f"{GROUP}:5004",
                *VIDEO, "--interface", net.tx_dev, "--duration", f"{total:.1f}",
                "--no-gso", "--stats-json", str(tmp / "tx.json"), "--dump-frames",
                str(tmp / "tf")]
        logs = {k: open(tmp / f"{k}.log", "wb") for k in ("rx", "probe", "tx")}  # noqa: SIM115
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for key, cmd in (("rx", cli), ("probe", probe)):
                procs[key] = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=logs[key],
                                              stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 60  # both joined and listening before the first packet
            while not ((tmp / "probe.ready").exists()
                       and b"receiving from" in (tmp / "rx.log").read_bytes()):
                assert time.monotonic() < deadline, "receivers did not start"
                assert all(p.poll() is None for p in procs.values()), "a receiver exited"
                time.sleep(0.05)
            procs["tx"] = subprocess.Popen(send, env=env, cwd=ROOT, stdout=logs["tx"],
                                           stderr=subprocess.STDOUT, start_new_session=True)
            time.sleep(lead_s)
            for pause in (impair_s, outage_s):
                net.next_phase()
                time.sleep(pause)
            net.next_phase()
            rcs = {"tx": procs["tx"].wait(total + 60)}
            time.sleep(1.0)  # the last packets through the wire
            for key in ("rx", "probe"):
                procs[key].send_signal(signal.SIGTERM)  # ip netns exec passes it on (exec)
                rcs[key] = procs[key].wait(60)
            udp = net.udp_counters(net.rx_ns)
            wire = net.stop_wire()
        finally:
            for p in procs.values():
                stop(p)
            for f in logs.values():
                f.close()
    assert not {net.tx_ns, net.wire_ns, net.rx_ns} & set(namespaces()), "namespaces left"
    out = {k: (tmp / f"{k}.log").read_text(errors="replace") for k in ("rx", "probe", "tx")}
    assert rcs == {"rx": 0, "probe": 0, "tx": 0}, (rcs, {k: v[-3000:] for k, v in out.items()})
    return {"wire": wire, "udp": udp, "logs": out,
            "rx": json.loads((tmp / "rx.json").read_text()),
            "tx": json.loads((tmp / "tx.json").read_text()),
            "probe": json.loads((tmp / "probe.json").read_text())}


def _sum(wire: dict[str, Any], port: int, key: str, phase: str | None = None) -> int:
    return sum(int(by.get(str(port), {}).get(key, 0)) for name, by in wire["phases"].items()
               if phase is None or name.endswith(":" + phase))


def test_impaired_link_counters_pairing_and_recovery(tmp_path: Path) -> None:
    require_root("network namespaces")
    require_program("ip")
    r = run_impaired(tmp_path, lead_s=3.0, impair_s=6.0, outage_s=2.0, clean_s=3.0)
    wire, rx, tx, probe = r["wire"], r["rx"], r["tx"], r["probe"]
    assert r["udp"]["RcvbufErrors"] == 0 and r["udp"]["InErrors"] == 0  # losses are the wire's
    assert tx["dropped"] == 0 and tx["icmp_errors"] == 0
    # -- counters: the CLI receiver and the probe both count exactly what the wire did --------
    for stats in (rx, probe["stats"]):
        for port, flow in ((5004, "VID"), (5006, "VMETA")):
            f = stats["flows"][flow]
            assert f["packets"] == _sum(wire, port, "forwarded"), flow
            assert f["packets_lost"] == _sum(wire, port, "dropped"), flow
            assert f["duplicates"] == _sum(wire, port, "duplicated"), flow
            assert f["packets_malformed"] == 0
        assert stats["flows"]["VID"]["reordered"] > 0
    assert _sum(wire, 5004, "received") == tx["packets"]
    assert rx["flows"]["VMETA"]["grains_complete"] + rx["grains_dropped"] <= tx["metadata_grains"]
    # the impairment itself is what was asked for (binomial bands around 1% / 5%)
    n = _sum(wire, 5004, "received", "impair")
    for key, p in (("dropped", 0.01), ("duplicated", 0.01), ("early", 0.05)):
        got = _sum(wire, 5004, key, "impair") / n
        assert 0.6 * p < got < 1.4 * p, (key, got)
    assert _sum(wire, 5004, "dropped", "outage") == _sum(wire, 5004, "received", "outage") > 0
    # every frame is accounted for: complete, incomplete, or never seen (all packets lost)
    frames_seen = rx["frames_complete"] + rx["frames_incomplete"]
    outage_frames = round(_sum(wire, 5004, "received", "outage") / (tx["packets"] / tx["frames"]))
    assert tx["frames"] - outage_frames - 2 <= frames_seen <= tx["frames"]
    assert rx["frames_delivered"] == rx["frames_complete"]  # --incomplete drop (default)
    # -- pairing: 0 frames with another frame's metadata -----------------------------------
    sent = sender_frames(tmp_path / "tf")
    assert len(sent) == tx["frames"]
    first = tx["first_rtp_timestamp"]
    items = probe["items"]
    matched = check_pairing(items, sent, first)
    assert matched <= probe["stats"]["metadata_matched"]  # which also counts dropped ones
    assert matched >= 0.9 * len(items) > 0
    # the CLI's dumps: complete frames byte-exact, grains describing their own timestamp
    from pydicom import dcmread  # noqa: F401  (pydicom's dictionary for decode_grain)

    from rtstream.proto.rtv_metadata import decode_grain

    dumped = sorted((tmp_path / "rf").glob("*.raw"))
    assert len(dumped) == rx["frames_complete"]
    for path in dumped:
        assert _digest(path.read_bytes()) == sent[int(path.stem)]
    grains = sorted((tmp_path / "rm").glob("*.dcm"))
    assert len(grains) == rx["grains_complete"]
    for path in grains:
        ds = decode_grain(path.read_bytes()).dataset
        ts = int(path.stem.split("-")[0])
        assert origin_ticks(ds) == ts and frame_number(ds) == unwrap(ts, first) + 1
    # -- recovery: the first frame sent after the outage ended is complete and paired -------
    from rtstream.proto.clock import rtp_timestamp

    (phase, t_end), = [s for s in wire["switches"] if s[0] == 3]
    end_ts = rtp_timestamp(t_end, 90000)
    after = sorted((t for t in sent if 0 < (t - end_ts) % (1 << 32) < 1 << 31),
                   key=lambda t: unwrap(t, first))
    assert after, "no frame was sent after the outage"
    by_ts = {it["ts"]: it for it in items}
    first_after = after[0]
    assert (tmp_path / "rf" / f"{first_after}.raw").exists(), "first frame after outage lost"
    assert by_ts[first_after]["complete"] and "fn" in by_ts[first_after]
    # and everything after it arrived whole
    assert all((tmp_path / "rf" / f"{t}.raw").exists() for t in after)
    print(json.dumps({  # figures for the report (pytest -s)
        "sent_packets": tx["packets"],
        "wire": {ph: {port: {k: v for k, v in c.items() if k != "dropped_seq"}
                      for port, c in by.items()} for ph, by in wire["phases"].items()},
        "rx": {k: rx[k] for k in ("packets", "packets_lost", "duplicates", "reordered", "late",
                                  "frames_complete", "frames_incomplete", "metadata_matched",
                                  "metadata_unmatched", "latency_p99_us")},
        "probe_matched": matched, "probe_items": len(items)}, default=str)[:4000])


def test_namespaces_deleted_on_failure_and_stale_ones_removed() -> None:
    require_root("network namespaces")
    require_program("ip")
    made: tuple[str, ...] = ()
    with pytest.raises(RuntimeError, match="body failed"), NetnsPair(subnet=23) as net:
        made = (net.tx_ns, net.wire_ns, net.rx_ns)
        assert set(made) <= set(namespaces())
        assert net.interfaces(net.wire_ns) == ["lo", net.wire_in, net.wire_out]
        raise RuntimeError("body failed")
    assert made and not set(made) & set(namespaces())
    # a namespace left behind by a killed run (its pid is gone) goes at the next start
    stale = f"{PREFIX}{2**22 + 12345}-0-tx"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        assert stale in remove_stale()
    finally:
        subprocess.run(["ip", "netns", "del", stale], check=False, capture_output=True)
    assert stale not in namespaces()


if __name__ == "__main__":
    asyncio.run(_probe(sys.argv[2:], Path(sys.argv[1])))
