"""MetadataDepacketizer's sequence accounting (SequenceTracker, RFC 3550 A.1): the
counters the receiver used to keep beside it (rtstream/receiver.py ``_SeqAccount``)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from rtstream.proto.rtp import RtpPacket, parse_rtp
from rtstream.proto.rtv_metadata import GrainEvent, MetadataDepacketizer
from tests.dicom.test_rtv_metadata import EXTMAP, ORIGIN, SYNC, dyn_grain, packetizer
from tests.proto.test_rtp import ReferenceAccount


def wire(grains: int = 12, max_payload: int = 200) -> list[bytes]:
    pz = packetizer(max_payload)  # starts at 65530: the numbers wrap
    return [d for g in range(grains)
            for d in pz.packetize(dyn_grain(g), 3000 * g, sync=SYNC, origin=ORIGIN)]  # fmt: skip


def test_loss_reorder_and_duplicates_are_counted() -> None:
    pkts = wire()
    n = len(pkts)
    assert n > 24
    got = pkts[:3] + pkts[4:6] + [pkts[7], pkts[6], pkts[7]] + pkts[8:]  # 3 lost, 6 late, 7 twice
    dep = MetadataDepacketizer(extmap=EXTMAP)
    events = [e for p in got for e in dep.feed(p, 0)]
    s = dep.stats
    assert (s.lost, s.reordered, s.duplicates, s.packets) == (1, 1, 1, n)
    assert sum(isinstance(e, GrainEvent) for e in events) >= 10


def test_a_copy_of_a_closed_grains_packet_is_a_duplicate_and_late() -> None:
    pkts = wire(2, 1460)
    dep = MetadataDepacketizer(extmap=EXTMAP)
    for p in pkts:
        dep.feed(p, 0)
    dep.feed(pkts[0], 0)
    assert (dep.stats.duplicates, dep.stats.late, dep.stats.reordered) == (1, 1, 0)


def test_ssrc_change_keeps_the_loss() -> None:
    dep = MetadataDepacketizer(extmap=EXTMAP)
    for seq in (1, 2, 5):
        dep.feed(RtpPacket(payload_type=104, sequence=seq, timestamp=seq, ssrc=1).to_bytes(), 0)
    assert dep.stats.lost == 2
    for seq in (100, 102):
        dep.feed(RtpPacket(payload_type=104, sequence=seq, timestamp=seq, ssrc=2).to_bytes(), 0)
    assert dep.stats.lost == 3


def test_short_and_foreign_version_datagrams_are_not_accounted() -> None:
    dep = MetadataDepacketizer(extmap=EXTMAP)
    dep.feed(b"\x80" * 8, 0)
    dep.feed(b"\x40" + bytes(20), 0)
    assert (dep.stats.lost, dep.stats.reordered, dep.stats.duplicates) == (0, 0, 0)
    assert dep.stats.malformed == 2 and dep.stats.packets == 2


@given(st.integers(0, 2**32 - 1))
def test_counters_equal_the_receivers_former_accounting(seed: int) -> None:
    """Loss, reordering and duplication as the test relay makes them (tests/net/relay.py)."""
    rng = random.Random(seed)
    sent = wire(8)
    arrived: list[bytes] = []
    held: list[tuple[bytes, int]] = []
    for i, d in enumerate(sent):
        ready = [h for h, k in held if k <= i]
        held = [(h, k) for h, k in held if k > i]
        r = rng.random()
        if r < 0.05:
            pass
        elif r < 0.1:
            held.append((d, i + rng.choice((1, 2, 5))))
        else:
            arrived.append(d)
            if rng.random() < 0.05:
                arrived.append(d)
        arrived += ready
    arrived += [h for h, _ in held]
    dep, ref = MetadataDepacketizer(extmap=EXTMAP), ReferenceAccount()
    for d in arrived:
        dep.feed(d, 0)
        p = parse_rtp(d)
        ref.add(p.ssrc, p.sequence)
        assert (dep.stats.lost, dep.stats.reordered, dep.stats.duplicates) == (
            ref.lost, ref.reordered, ref.duplicates)  # fmt: skip
