"""The kernel copy filter of ST 2022-7 legs (``rtstream.net.dupfilter``), on real loopback
sockets: datagrams sent with UDP GSO arrive as GRO buffers, as a 1080p flow's do."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from rtstream.net.dupfilter import KernelDupFilter
from rtstream.net.udp import UDP_GRO, UDP_SEGMENT
from tests.peers import require_root

SOL_UDP = 17
SIZE = 1200


@pytest.fixture
def legs() -> Iterator[tuple[KernelDupFilter, list[socket.socket], socket.socket]]:
    require_root("an eBPF socket filter (CAP_BPF)")
    kf = KernelDupFilter.open()
    assert kf is not None, "the kernel refused the filter (see the log)"
    socks = []
    for leg in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setsockopt(SOL_UDP, UDP_GRO, 1)
        s.setblocking(False)
        kf.attach(s.fileno(), leg)
        socks.append(s)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        yield kf, socks, tx
    finally:
        kf.close()
        for s in (*socks, tx):
            s.close()


def rtp(seq: int, ts: int = 1000, ssrc: int = 0xABCDEF, size: int = SIZE) -> bytes:
    return struct.pack(">BBHII", 0x80, 96, seq & 0xFFFF, ts, ssrc) + bytes(size - 12)


def send(tx: socket.socket, to: socket.socket, seqs: list[int] | range, ts: int = 1000) -> None:
    """One GSO send of the datagrams ``seqs`` (one buffer at the receiver)."""
    data = b"".join(rtp(s, ts) for s in seqs)
    cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", SIZE))] if len(seqs) > 1 else []
    tx.sendmsg([data], cmsg, 0, to.getsockname())


def drain(sock: socket.socket) -> list[int]:
    """The sequence numbers queued on ``sock`` (-1 for a datagram too short to have one)."""
    time.sleep(0.02)
    out: list[int] = []
    while True:
        try:
            data, anc, _, _ = sock.recvmsg(1 << 16, 256)
        except BlockingIOError:
            return out
        seg = next((struct.unpack("=H", d[:2])[0] for lvl, typ, d in anc
                    if lvl == SOL_UDP and typ == UDP_GRO), len(data))
        out += [struct.unpack(">H", data[o + 2:o + 4])[0] if o + 4 <= len(data) else -1
                for o in range(0, len(data), seg)]


def test_copies_on_the_secondary_leg_are_dropped_whole(legs: tuple) -> None:
    kf, (a, b), tx = legs
    send(tx, a, range(40))
    send(tx, b, range(40))  # a copy of every one: dropped, counted
    assert drain(a) == list(range(40)) and drain(b) == []
    assert kf.counts(0) == (0, 0) and kf.counts(1) == (40, 1)
    send(tx, b, range(40, 80))  # the secondary leg first: new, kept
    send(tx, a, range(40, 80))  # the primary leg keeps its copies
    assert drain(b) == list(range(40, 80)) and drain(a) == list(range(40, 80))
    for s in range(80, 90):  # one datagram per buffer (no GSO)
        send(tx, a, [s])
        send(tx, b, [s])
    assert drain(a) == list(range(80, 90)) and drain(b) == []
    assert kf.counts(1) == (50, 11)


def test_a_buffer_with_one_packet_the_primary_lost_passes_whole(legs: tuple) -> None:
    kf, (a, b), tx = legs
    send(tx, a, [s for s in range(50) if s != 30])
    send(tx, b, range(50))  # 49 copies and the lost one: the merge needs it
    assert drain(b) == list(range(50))
    assert kf.counts(1) == (0, 0)


def test_a_wrapped_number_with_a_new_timestamp_is_new(legs: tuple) -> None:
    kf, (a, b), tx = legs
    send(tx, a, range(10), ts=1000)
    send(tx, b, range(10), ts=1000)
    send(tx, b, range(10), ts=2000)  # the same numbers 65,536 packets on
    assert drain(b) == list(range(10))
    tx.sendto(b"\x80\x60\x00", b.getsockname())  # too short for an RTP header: passes
    assert drain(b) == [-1]
    assert kf.counts(1) == (10, 1)
    # timestamp 0 and SSRC 0 match a slot never written: still new
    tx.sendto(rtp(500, ts=0, ssrc=0), b.getsockname())
    assert drain(b) == [500]


def test_the_primary_leg_can_change(legs: tuple) -> None:
    kf, (a, b), tx = legs
    kf.set_primary(1)
    send(tx, b, range(20))
    send(tx, a, range(20))
    assert drain(b) == list(range(20)) and drain(a) == []
    assert kf.counts(0) == (20, 1) and kf.counts(1) == (0, 0)
