"""SMPTE ST 2022-7 end to end: ``rtstream send --dest2`` -> ``rtstream receive`` over two paths.

Two namespaces joined by two independent impairing wires (:mod:`tests.reliability.netns_dup`;
netem's model in user space, this kernel has no ``sch_netem``; the sender runs with
``--no-gso`` because an ``AF_PACKET`` bridge would get GSO super-frames). Every wire
counts exactly what it dropped, per UDP port and per 16-bit sequence number, so the
receiver's per-leg and merged counters are compared with the truth, not with estimates:

(a) each leg loses 10% at random, independently: the merged stream loses exactly the
    packets both wires dropped (about 1%), each leg's ``lost`` is what its wire dropped;
(b) leg 1 down 2 s, later leg 2 down 2 s: no frame and no grain lost, frames byte-exact
    against the sender's ``--dump-frames``, the silent/back events in the log; once with
    unicast, once with a source-specific multicast group per network joined on its own
    interface (``--interface2``);
(c) 5 ms delay on leg 1, reordering on leg 2: nothing lost;
(d) only leg 1 present (leg 2's wire drops everything from the start): the receiver runs
    on leg 1 and says leg 2 is missing;
(e) the sender's second interface is down when it starts: it sends on the first network
    and adds the second leg by itself when the interface comes up.

Pairing: the flows are unicast, so one receiver (the CLI) reads them; its grain dumps
must each describe their own RTP timestamp, and in (b), (c) and (d) every delivered frame
carries its grain (``metadata_matched`` equals the frames sent).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.peers import require_program, require_root, stop
from tests.reliability import ROOT, RTSTREAM, rtstream_env
from tests.reliability.netns import namespaces
from tests.reliability.netns_dup import TwoPathNetns
from tests.reliability.test_netem import _digest, frame_number, origin_ticks, sender_frames, unwrap

pytestmark = [pytest.mark.netns]

VIDEO = ["--video", "320x240@30", "--depth", "8"]
GROUPS = ("239.22.7.1", "239.22.7.2")
VPORT, MPORT = 5004, 5006


@dataclass(frozen=True)
class Plan:
    """What each wire does: its phases, impairment, and the seconds between phase
    switches (applied to both wires at once)."""

    phases: tuple[tuple[str, ...], tuple[str, ...]]
    params: tuple[dict[str, float], dict[str, float]]
    steps: tuple[float, ...]
    tail: float = 1.0
    multicast: bool = False
    #: the sender's second interface is down at start and comes up after this step
    tx_leg2_up_after: int | None = None


def run_two_paths(tmp: Path, plan: Plan) -> dict[str, Any]:
    """Sender, CLI receiver and pairing probe over the two wires; everything measured."""
    env = rtstream_env()
    total = sum(plan.steps) + plan.tail
    with TwoPathNetns(subnet=40) as net:
        for p in (0, 1):
            net.start_wire(p, tmp / f"wire{p + 1}.json", phases=plan.phases[p],
                           seed=2110 + 7 * p, **plan.params[p])
        if plan.multicast:  # source-specific groups, one per network, each on its interface
            dests = ["--dest", f"{GROUPS[0]}:{VPORT}", "--interface", net.tx_dev[0],
                     "--source-address", net.tx_addr[0], "--dest2", f"{GROUPS[1]}:{VPORT}",
                     "--interface2", net.tx_dev[1], "--source-address2", net.tx_addr[1]]
            joins = ["--interface", net.rx_dev[0], "--interface2", net.rx_dev[1]]
        else:
            dests = ["--dest", f"{net.rx_addr[0]}:{VPORT}", "--source-address", net.tx_addr[0],
                     "--dest2", f"{net.rx_addr[1]}:{VPORT}", "--source-address2", net.tx_addr[1]]
            joins = []
        sdp = tmp / "rtv.sdp"
        with open(sdp, "w") as sdp_file:
            subprocess.run([*net.exec_prefix(net.tx_ns), *RTSTREAM, "sdp", *dests, *VIDEO],
                           env=env, stdout=sdp_file, check=True, timeout=60)
        rx_args = ["--sdp", str(sdp), "--duration", f"{total + 60:.1f}", *joins]
        cli = [*net.exec_prefix(net.rx_ns), *RTSTREAM, "receive", *rx_args,
               "--stats-json", str(tmp / "rx.json"), "--dump-frames", str(tmp / "rf"),
               "--dump-metadata", str(tmp / "rm")]
        send = [*net.exec_prefix(net.tx_ns), *RTSTREAM, "send", *dests, *VIDEO,
                "--duration", f"{total:.1f}", "--no-gso", "--stats-json", str(tmp / "tx.json"),
                "--dump-frames", str(tmp / "tf")]
        logs = {k: open(tmp / f"{k}.log", "wb") for k in ("rx", "tx")}  # noqa: SIM115
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            procs["rx"] = subprocess.Popen(cli, env=env, cwd=ROOT, stdout=logs["rx"],
                                           stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 60
            while b"receiving from" not in (tmp / "rx.log").read_bytes():
                assert time.monotonic() < deadline, "receiver did not start"
                assert procs["rx"].poll() is None, (tmp / "rx.log").read_text()
                time.sleep(0.05)
            if plan.tx_leg2_up_after is not None:
                net.run(net.tx_ns, "ip", "link", "set", net.tx_dev[1], "down")
            procs["tx"] = subprocess.Popen(send, env=env, cwd=ROOT, stdout=logs["tx"],
                                           stderr=subprocess.STDOUT, start_new_session=True)
            for i, pause in enumerate(plan.steps):
                time.sleep(pause)
                for p in (0, 1):
                    net.next_phase(p)
                if i == plan.tx_leg2_up_after:
                    net.run(net.tx_ns, "ip", "link", "set", net.tx_dev[1], "up")
            rcs = {"tx": procs["tx"].wait(total + 60)}
            time.sleep(1.0)  # the last packets through the wires
            procs["rx"].send_signal(signal.SIGTERM)
            rcs["rx"] = procs["rx"].wait(60)
            udp = net.udp_counters(net.rx_ns)
            wires = [net.stop_wire(p) for p in (0, 1)]
        finally:
            for proc in procs.values():
                stop(proc)
            for f in logs.values():
                f.close()
    assert not {net.tx_ns, net.rx_ns, *net.wire_ns} & set(namespaces()), "namespaces left"
    out = {k: (tmp / f"{k}.log").read_text(errors="replace") for k in ("rx", "tx")}
    assert rcs == {"rx": 0, "tx": 0}, (rcs, {k: v[-3000:] for k, v in out.items()})
    return {"wires": wires, "udp": udp, "logs": out,
            "rx": json.loads((tmp / "rx.json").read_text()),
            "tx": json.loads((tmp / "tx.json").read_text())}


def wire_sum(wire: dict[str, Any], port: int, key: str) -> int:
    return sum(int(by.get(str(port), {}).get(key, 0)) for by in wire["phases"].values())


def dropped_seqs(wire: dict[str, Any], port: int) -> set[int]:
    return {s for by in wire["phases"].values() for s in by.get(str(port), {}).get("dropped_seq", [])}


def check_frames(tmp: Path, r: dict[str, Any], *, all_frames: bool) -> None:
    """Dumped frames byte-exact with the sender's; grains describe their own timestamp."""
    rx, tx = r["rx"], r["tx"]
    sent = sender_frames(tmp / "tf")
    assert len(sent) == tx["frames"]
    dumped = sorted((tmp / "rf").glob("*.raw"))
    assert len(dumped) == rx["frames_complete"]
    for path in dumped:
        assert _digest(path.read_bytes()) == sent[int(path.stem)]
    from rtstream.proto.rtv_metadata import decode_grain

    first = tx["first_rtp_timestamp"]
    grains = sorted((tmp / "rm").glob("*.dcm"))
    assert len(grains) == rx["flows"]["VMETA"]["grains_complete"]
    for path in grains:
        ds = decode_grain(path.read_bytes()).dataset
        ts = int(path.stem.split("-")[0])
        assert origin_ticks(ds) == ts and frame_number(ds) == unwrap(ts, first) + 1
    if all_frames:
        flows = {k: {n: v for n, v in f.items() if n != "legs"} for k, f in rx["flows"].items()}
        assert rx["frames_complete"] == tx["frames"] and rx["frames_incomplete"] == 0, flows
        assert rx["frames_delivered"] == tx["frames"], flows
        # 100% pairing: every delivered frame carried the grain of its timestamp
        assert rx["metadata_matched"] == tx["frames"] and rx["metadata_unmatched"] == 0, flows
        assert rx["flows"]["VMETA"]["grains_complete"] == tx["metadata_grains"], flows


def check_legs(r: dict[str, Any]) -> None:
    """Per-leg counters equal what each wire did; the merged loss what both dropped."""
    rx, wires = r["rx"], r["wires"]
    # no datagram lost to a full socket; the only receive "errors" are the copies the
    # receiver's kernel filter dropped (the kernel counts a filter's drop as one)
    filtered = sum(leg["filtered_buffers"] for f in rx["flows"].values() for leg in f["legs"])
    assert r["udp"]["RcvbufErrors"] == 0 and r["udp"]["InErrors"] == filtered
    for flow, port in (("VID", VPORT), ("VMETA", MPORT)):
        f = rx["flows"][flow]
        legs = f["legs"]
        assert [leg["mid"] for leg in legs] == [flow, f"{flow}2"]
        for leg, wire in zip(legs, wires, strict=True):
            assert leg["packets"] == wire_sum(wire, port, "forwarded"), (flow, leg)
        both = dropped_seqs(wires[0], port) & dropped_seqs(wires[1], port)
        assert f["packets_lost"] == len(both), flow
        for leg, wire in zip(legs, wires, strict=True):
            # what this leg alone would have lost: its wire's drops (a drop at the very
            # start or end of the stream on both legs lies outside the merged span)
            dropped = wire_sum(wire, port, "dropped")
            assert dropped - 2 <= leg["lost"] <= dropped, (flow, leg, dropped)
            assert leg["recovered"] == leg["lost"] - f["packets_lost"], (flow, leg)


def test_a_independent_random_loss(tmp_path: Path) -> None:
    require_root("network namespaces")
    require_program("ip")
    loss = {"loss": 0.10}
    r = run_two_paths(tmp_path, Plan(phases=(("impair",), ("impair",)), params=(loss, loss),
                                     steps=(5.0,)))
    check_legs(r)
    rx, wires = r["rx"], r["wires"]
    sent = r["tx"]["packets"]
    for wire in wires:  # each wire did what was asked: 10% +- 5 sd
        got = wire_sum(wire, VPORT, "dropped")
        assert abs(got - 0.1 * sent) < 5 * (sent * 0.1 * 0.9) ** 0.5, got
    merged = rx["flows"]["VID"]["packets_lost"]
    assert abs(merged - 0.01 * sent) < 5 * (sent * 0.01 * 0.99) ** 0.5, (merged, sent)
    check_frames(tmp_path, r, all_frames=False)
    # every delivered frame with a grain has its own (no mispairing); frames without one
    # lost their grain's packets on both legs
    assert rx["metadata_matched"] >= rx["frames_delivered"] - rx["flows"]["VMETA"]["packets_lost"]


def test_b_disjoint_outages_lose_nothing(tmp_path: Path) -> None:
    require_root("network namespaces")
    require_program("ip")
    clean: dict[str, float] = {}
    # A clean second between the outages: the two wires change phase on two signals, so
    # back-to-back outages could overlap by a few packets, which both networks then lose
    # (seen once: 5 packets). "Leg 1 down 2 s, later leg 2 down 2 s" (issue 15).
    r = run_two_paths(tmp_path, Plan(
        phases=(("clean", "outage", "clean", "clean", "clean"),
                ("clean", "clean", "clean", "outage", "clean")),
        params=(clean, clean), steps=(1.5, 2.0, 1.0, 2.0, 1.5)))
    check_legs(r)
    check_frames(tmp_path, r, all_frames=True)
    rx, wires = r["rx"], r["wires"]
    assert rx["packets_lost"] == 0
    for p, wire in enumerate(wires):
        assert wire_sum(wire, VPORT, "dropped") > 0
        assert rx["flows"]["VID"]["legs"][p]["recovered"] == wire_sum(wire, VPORT, "dropped")
    log = r["logs"]["rx"]
    assert "VID: leg 1 (10.222.40.2:5004) silent for 100 ms: running on leg 2" in log
    assert "VID: leg 2 (10.222.41.2:5004) silent for 100 ms: running on leg 1" in log
    assert "VID: leg 1 (10.222.40.2:5004) is back" in log
    assert "VID: leg 2 (10.222.41.2:5004) is back" in log


def test_b_multicast_disjoint_outages_lose_nothing(tmp_path: Path) -> None:
    """(b) again the way operating rooms run it: a source-specific multicast group per
    network, each sent and joined on its own interface (``--interface2``)."""
    require_root("network namespaces")
    require_program("ip")
    r = run_two_paths(tmp_path, Plan(  # a clean second between the outages, as above
        phases=(("clean", "outage", "clean", "clean", "clean"),
                ("clean", "clean", "clean", "outage", "clean")),
        params=({}, {}), steps=(1.5, 2.0, 1.0, 2.0, 1.5), multicast=True))
    sdp = (tmp_path / "rtv.sdp").read_text()
    assert "a=group:DUP VID VID2" in sdp
    assert f"a=source-filter: incl IN IP4 {GROUPS[1]} 10.222.41.1" in sdp
    check_legs(r)
    check_frames(tmp_path, r, all_frames=True)
    assert r["rx"]["packets_lost"] == 0
    for p, wire in enumerate(r["wires"]):
        assert r["rx"]["flows"]["VID"]["legs"][p]["recovered"] == wire_sum(wire, VPORT, "dropped") > 0


def test_c_delay_on_one_leg_reordering_on_the_other(tmp_path: Path) -> None:
    require_root("network namespaces")
    require_program("ip")
    r = run_two_paths(tmp_path, Plan(
        phases=(("impair",), ("impair",)),
        params=({"delay_ms": 5.0}, {"reorder": 0.05, "delay_ms": 2.0, "jitter_ms": 2.0}),
        steps=(4.0,)))
    check_legs(r)
    check_frames(tmp_path, r, all_frames=True)
    assert r["rx"]["packets_lost"] == 0 and wire_sum(r["wires"][1], VPORT, "early") > 0


def test_d_one_leg_missing(tmp_path: Path) -> None:
    require_root("network namespaces")
    require_program("ip")
    r = run_two_paths(tmp_path, Plan(phases=(("clean",), ("outage",)), params=({}, {}),
                                     steps=(3.0,)))
    check_frames(tmp_path, r, all_frames=True)
    vid = r["rx"]["flows"]["VID"]
    assert vid["legs"][1]["packets"] == 0 and vid["legs"][1]["state"] == "missing"
    assert vid["legs"][1]["lost"] == r["tx"]["packets"] and vid["packets_lost"] == 0
    assert ("leg 2 (10.222.41.2:5004) has delivered nothing since the start: running on "
            "leg 1") in r["logs"]["rx"]


def test_e_sender_second_network_down_at_start(tmp_path: Path) -> None:
    """The sender's second interface is down when it starts: it sends on the first network,
    says so, and adds the second leg by itself once the interface is up."""
    require_root("network namespaces")
    require_program("ip")
    r = run_two_paths(tmp_path, Plan(phases=(("clean",) * 3, ("clean",) * 3),
                                     params=({}, {}), steps=(2.0, 2.5), tx_leg2_up_after=0))
    check_frames(tmp_path, r, all_frames=True)
    tx_log, rx_log = r["logs"]["tx"], r["logs"]["rx"]
    assert "second network: cannot send to 10.222.41.2:5004 now" in tx_log
    assert "second network reachable again: sending to 10.222.41.2:5004 as well" in tx_log
    vid = r["rx"]["flows"]["VID"]
    assert vid["packets_lost"] == 0 and vid["legs"][1]["packets"] > 0
    assert "leg 2 (10.222.41.2:5004) is back" in rx_log
