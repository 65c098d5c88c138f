"""UdpSender / UdpReceiver on 127.0.0.1: GSO vs per-datagram, GRO splitting, multicast."""

from __future__ import annotations

import logging
import socket
import time

import numpy as np
import pytest

from rtstream.errors import ConfigError
from rtstream.net import udp
from rtstream.net.udp import UdpReceiver, UdpSender
from rtstream.proto.rfc4175 import PacketBatch
from tests.peers import peer_missing

GROUP = "239.255.77.1"


def make_batch(n: int, seg: int, last: int | None = None, stride: int | None = None,
               seed: int = 1) -> PacketBatch:
    rng = np.random.default_rng(seed)
    stride = stride or seg
    buf = rng.integers(0, 256, (n, stride), dtype=np.uint8)
    sizes = np.full(n, seg, np.int64)
    if last is not None:
        sizes[-1] = last
    return PacketBatch(buf, sizes)


def expected(batch: PacketBatch) -> list[bytes]:
    return [batch.datagram(i) for i in range(len(batch.sizes))]


def collect(rx: UdpReceiver, want: int, timeout: float = 3.0) -> list[bytes]:
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        b, lengths = rx.drain()
        out.extend(b[i, : int(lengths[i])].tobytes() for i in range(len(lengths)))
        if len(out) < want:
            time.sleep(0.005)
    return out


@pytest.mark.parametrize("gro", [False, True])
@pytest.mark.parametrize("gso", [False, True])
def test_gso_and_fallback_send_identical_datagrams(gso: bool, gro: bool) -> None:
    batch = make_batch(500, 1220, last=333)
    with UdpReceiver("127.0.0.1", 0, gro=gro, batch=2048) as rx, \
            UdpSender(("127.0.0.1", rx.port), gso=gso) as tx:
        assert tx.send_batch(batch) == 500
        got = collect(rx, 500)
        if gso:
            assert tx.stats.gso_calls == -(-500 // udp.MAX_GSO_SEGMENTS)
            assert tx.stats.syscalls == tx.stats.gso_calls
        else:
            assert tx.stats.syscalls == 500
        if gro and gso:
            assert rx.stats.gro_reads > 0
    assert got == expected(batch)


def test_partial_ranges_and_strided_rows() -> None:
    # Rows wider than the datagrams (stride > segment) and sub-ranges of a batch.
    batch = make_batch(100, 700, stride=900)
    with UdpReceiver("127.0.0.1", 0, gro=False) as rx, UdpSender(("127.0.0.1", rx.port)) as tx:
        assert tx.send_batch(batch, 0, 40) == 40
        assert tx.send_batch(batch, 40, 100) == 60
        assert tx.send_batch(batch, 100, 120) == 0
        got = collect(rx, 100)
    assert got == expected(batch)


def test_kernel_refusing_gso_falls_back_and_remembers(monkeypatch: pytest.MonkeyPatch) -> None:
    batch = make_batch(90, 1000, last=10)
    with UdpReceiver("127.0.0.1", 0, gro=False) as rx, UdpSender(("127.0.0.1", rx.port)) as tx:
        calls = {"n": 0}

        class Refusing:
            def __init__(self, real: socket.socket) -> None:
                self.real = real

            def sendmsg(self, *a: object) -> int:
                calls["n"] += 1
                raise OSError(5, "Input/output error")  # EIO: device cannot segment

            def __getattr__(self, name: str) -> object:
                return getattr(self.real, name)

        monkeypatch.setattr(tx, "_sock", Refusing(tx._sock))
        assert tx.send_batch(batch) == 90
        assert tx.send_batch(batch) == 90
        assert calls["n"] == 1 and tx.gso is False
        got = collect(rx, 180)
    assert got == expected(batch) * 2


def test_icmp_port_unreachable_is_counted_not_raised() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    batch = make_batch(50, 200)
    with UdpSender(("127.0.0.1", port)) as tx:
        for _ in range(20):
            tx.send_batch(batch)
            tx.send(b"x" * 30)
            time.sleep(0.001)
        assert tx.stats.icmp_errors > 0
        assert tx.stats.datagrams > 0


def test_burst_drained_without_loss_with_a_big_buffer() -> None:
    # ~24 MB in one burst: the receive buffer (SO_RCVBUFFORCE as root) holds it all.
    n = 20000
    batch = make_batch(n, 1200, seed=7)
    with UdpReceiver("127.0.0.1", 0, gro=False, rcvbuf=64 << 20, batch=4096) as rx, \
            UdpSender(("127.0.0.1", rx.port)) as tx:
        assert tx.send_batch(batch) == n
        got = collect(rx, n)
    assert len(got) == n
    assert got == expected(batch)


def test_gro_leftover_carries_over_when_the_batch_is_full() -> None:
    batch = make_batch(45, 100)
    with UdpReceiver("127.0.0.1", 0, gro=True, batch=16) as rx, UdpSender(("127.0.0.1", rx.port)) as tx:
        tx.send_batch(batch)
        time.sleep(0.02)
        b, lengths = rx.drain()
        assert len(lengths) == 16
        first = [b[i, : int(lengths[i])].tobytes() for i in range(16)]
        rest = collect(rx, 29)
    assert first + rest == expected(batch)


def test_rcvbuf_cap_warns_naming_rmem_max(monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(udp.os, "geteuid", lambda: 1000)  # take the unprivileged path
    with open("/proc/sys/net/core/rmem_max") as f:
        rmem_max = int(f.read())
    with caplog.at_level(logging.WARNING, logger="rtstream.net.udp"):
        UdpReceiver("127.0.0.1", 0, rcvbuf=rmem_max * 4).close()
    assert "net.core.rmem_max" in caplog.text


def test_socket_options(monkeypatch: pytest.MonkeyPatch) -> None:
    with UdpSender((GROUP, 5004), ttl=3, dscp=46, interface="127.0.0.1") as tx:
        s = tx._sock
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 46 << 2
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 3
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 1
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 4 << 20
    with UdpSender((GROUP, 5004), interface="lo") as tx:
        assert tx.dest == (GROUP, 5004)


@pytest.mark.parametrize("bad", [{"dscp": 64}, {"ttl": 256}, {"interface": "no-such-if0"}])
def test_bad_sender_options_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        UdpSender((GROUP, 5004), **bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("gro", [False, True])
@pytest.mark.parametrize("source", [None, "127.0.0.1"])
def test_multicast_on_loopback(gro: bool, source: str | None) -> None:
    batch = make_batch(60, 500, last=77)
    with UdpReceiver(GROUP, 0, interface="127.0.0.1", source=source, gro=gro) as rx, \
            UdpSender((GROUP, rx.port), interface="127.0.0.1", bind=("127.0.0.1", 0)) as tx:
        tx.send_batch(batch)
        got = collect(rx, 60)
    assert got == expected(batch)


def test_source_specific_join_filters_other_sources() -> None:
    batch = make_batch(10, 100)
    with UdpReceiver(GROUP, 0, interface="127.0.0.1", source="127.0.0.2") as rx, \
            UdpSender((GROUP, rx.port), interface="127.0.0.1", bind=("127.0.0.1", 0)) as tx:
        tx.send_batch(batch)
        time.sleep(0.05)
        _, lengths = rx.drain()
    assert len(lengths) == 0


def wait_readable(rx: UdpReceiver, timeout: float = 3.0) -> None:
    import select

    assert select.select([rx.fileno()], [], [], timeout)[0], "nothing arrived"
    time.sleep(0.02)  # the rest of a GSO send


@pytest.mark.parametrize("gro", [False, True])
def test_hold_keeps_rows_and_the_next_drain_appends(gro: bool) -> None:
    first, second = make_batch(120, 1220, last=500, seed=3), make_batch(70, 1220, seed=4)
    with UdpReceiver("127.0.0.1", 0, gro=gro, batch=1024) as rx, \
            UdpSender(("127.0.0.1", rx.port)) as tx:
        assert not rx.hold()  # nothing drained yet
        tx.send_batch(first)
        wait_readable(rx)
        b, lengths = rx.drain()
        assert len(lengths) == rx.new_rows == 120
        assert rx.hold()
        tx.send_batch(second)
        wait_readable(rx)
        b, lengths = rx.drain()
        assert (len(lengths), rx.new_rows) == (190, 70)
        got = [b[i, : int(lengths[i])].tobytes() for i in range(len(lengths))]
        assert rx.stats.datagrams == 190  # kept rows are not counted twice
        # not held: the next drain starts a new batch
        b, lengths = rx.drain()
        assert len(lengths) == rx.new_rows == 0
        assert not rx.hold()
    assert got == expected(first) + expected(second)


def test_hold_is_refused_when_a_read_was_carried_over() -> None:
    batch = make_batch(45, 100)
    with UdpReceiver("127.0.0.1", 0, gro=True, batch=16) as rx, UdpSender(("127.0.0.1", rx.port)) as tx:
        tx.send_batch(batch)
        wait_readable(rx)
        b, lengths = rx.drain()
        assert len(lengths) == 16
        assert not rx.hold()  # the batch is full and the rest of the read waits
        first = [b[i, : int(lengths[i])].tobytes() for i in range(16)]
        rest = collect(rx, 29)
    assert first + rest == expected(batch)


def test_recvmmsg_reads_many_datagrams_per_call_and_counts_truncation() -> None:
    batch = make_batch(300, 900, last=100, seed=5)
    big = make_batch(1, 3000, seed=6)  # longer than a row: truncated and counted
    with UdpReceiver("127.0.0.1", 0, gro=False, max_datagram=2048, batch=1024) as rx, \
            UdpSender(("127.0.0.1", rx.port), gso=False) as tx:
        tx.send_batch(batch)
        tx.send_batch(big)
        wait_readable(rx)
        b, lengths = rx.drain()
        got = [b[i, : int(lengths[i])].tobytes() for i in range(len(lengths))]
        assert rx.stats.reads < 10  # not one system call per datagram
        assert rx.stats.truncated == 1
    assert got == expected(batch) + [expected(big)[0][:2048]]


def test_gro_that_never_coalesces_is_switched_to_recvmmsg() -> None:
    # A sender without GSO on loopback: every GRO read is one datagram. After a few such
    # batches the receiver stops asking for GRO and reads many datagrams per call.
    batches = [make_batch(200, 1220, seed=i) for i in range(udp._GRO_STRIKES + 3)]
    got: list[bytes] = []
    with UdpReceiver("127.0.0.1", 0, gro=True, batch=1024) as rx, \
            UdpSender(("127.0.0.1", rx.port), gso=False) as tx:
        for batch in batches:
            tx.send_batch(batch)
            got += collect(rx, 200)
        assert not rx.gro
        assert rx.stats.gro_reads == 0
    assert got == [d for batch in batches for d in expected(batch)]


def _full_socket(tx: UdpSender) -> socket.socket:
    """Give ``tx`` a datagram socket whose peer never reads, filled until EAGAIN.

    A UDP socket on loopback almost never reports a full buffer (the receiver's queue
    takes or drops each datagram at once); a Unix datagram socket pair with a tiny
    ``SO_SNDBUF`` blocks deterministically until its peer reads. Returns the peer.
    """
    mine, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    mine.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    mine.setblocking(False)
    peer.setblocking(False)
    tx._sock.close()
    tx._sock = mine
    with pytest.raises(BlockingIOError):
        for _ in range(100_000):
            mine.send(b"f" * 200)
    return peer


def _drain(peer: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(peer.recv(65536))
        except BlockingIOError:
            return out


def test_full_socket_buffer_does_not_block_the_event_loop() -> None:
    import asyncio

    batch = make_batch(40, 200, seed=9)
    with UdpSender(("127.0.0.1", 9), gso=False, max_wait=10.0) as tx:
        peer = _full_socket(tx)

        async def main() -> tuple[int, int, list[bytes]]:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)

            tick = asyncio.create_task(ticker())
            assert tx.send_batch(batch) == 0  # the plain method never waits
            assert not tx.send(b"m" * 30)
            send = asyncio.create_task(tx.send_batch_async(batch))
            meta = asyncio.create_task(tx.send_async(b"m" * 30))
            await asyncio.sleep(0.1)
            assert not send.done() and not meta.done()  # waiting for room ...
            ticks_while_waiting = ticks  # ... while the loop keeps running
            got: list[bytes] = []
            while not (send.done() and meta.done()):
                got += _drain(peer)
                await asyncio.sleep(0.001)
            got += _drain(peer)
            tick.cancel()
            return ticks_while_waiting, send.result(), got

        ticks, handled, got = asyncio.run(main())
        peer.close()
        assert ticks >= 20
        assert handled == 40
        assert [d for d in got if d not in (b"f" * 200, b"m" * 30)] == expected(batch)
        assert got.count(b"m" * 30) == 1
        assert tx.stats.blocked >= 2 and tx.stats.dropped == 0
        assert tx.stats.datagrams == 41


def test_buffer_full_beyond_max_wait_drops_and_counts() -> None:
    import asyncio

    batch = make_batch(10, 200)
    with UdpSender(("127.0.0.1", 9), gso=True, max_wait=0.05) as tx:
        peer = _full_socket(tx)

        async def main() -> int:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)

            tick = asyncio.create_task(ticker())
            assert await tx.send_batch_async(batch) == 10
            await tx.send_async(b"m" * 30)
            tick.cancel()
            return ticks

        assert asyncio.run(main()) >= 10
        peer.close()
        assert tx.stats.dropped == 11 and tx.stats.datagrams == 0


# ------------------------------------------------------------------ split reads


def _split_view(rx: UdpReceiver, dest: np.ndarray, start: int, payload: int, slots: int,
                want: int, timeout: float = 3.0) -> tuple[list[bytes], int]:
    """Drain with drain_split until ``want`` datagrams came; each datagram put back
    together from its header row and its payload slot (or spare row)."""
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        assert rx.can_split
        heads, lengths, spare = rx.drain_split(dest, start, payload, slots)
        for i in range(len(lengths)):
            k = int(lengths[i])
            body = (dest[start + i * payload : start + (i + 1) * payload] if i < slots
                    else spare[i - slots])
            out.append((heads[i].tobytes() + body.tobytes())[:k])
        if len(out) < want:
            time.sleep(0.005)
    return out, len(out)


def test_split_read_puts_payloads_in_the_slots_with_one_call_per_gro_read() -> None:
    # 100 datagrams of 20 + 1200 bytes sent with GSO: on a GRO socket each coalesced read
    # fills 20-byte header rows and 1200-byte slots of the destination in turn; datagrams
    # past the slots go to the spare rows.
    batch = make_batch(100, 1220, seed=7)
    dest = np.zeros(80 * 1200 + 37, np.uint8)
    with UdpReceiver("127.0.0.1", 0, gro=True, batch=1024) as rx, \
            UdpSender(("127.0.0.1", rx.port)) as tx:
        tx.send_batch(batch)
        wait_readable(rx)
        got, n = _split_view(rx, dest, 37, 1200, 80, 100)
        if rx.stats.gro_reads == 0:
            peer_missing("this kernel does not coalesce loopback GSO into GRO reads")
        assert rx.stats.reads < 100  # several datagrams per system call
        assert rx.stats.datagrams == 100
    assert got == expected(batch)
    want = np.concatenate([batch.buf[i, 20:1220] for i in range(80)])
    assert np.array_equal(dest[37:], want)  # straight into place, in order
    assert not dest[:37].any()  # nothing before ``start`` was written


def test_split_read_hands_another_segment_size_to_the_next_drain() -> None:
    # A read of 300-byte datagrams does not fit 20 + 1200 slots: the split drain stops
    # there, and the ordinary drain gets that read whole, then the rest.
    good = make_batch(10, 1220, seed=8)
    other = make_batch(30, 300, seed=9)
    after = make_batch(5, 1220, seed=10)
    dest = np.zeros(64 * 1200, np.uint8)
    with UdpReceiver("127.0.0.1", 0, gro=True, batch=1024) as rx, \
            UdpSender(("127.0.0.1", rx.port)) as tx:
        for b in (good, other, after):
            tx.send_batch(b)
        wait_readable(rx)
        time.sleep(0.05)
        heads, lengths, _ = rx.drain_split(dest, 0, 1200, 64)
        first = [(heads[i].tobytes() + dest[i * 1200 : (i + 1) * 1200].tobytes())[
            : int(lengths[i])] for i in range(len(lengths))]
        assert not rx.can_split  # a read waits for the ordinary drain
        rest = collect(rx, len(expected(other)) + 5 + 10 - len(first))
    assert first + rest == expected(good) + expected(other) + expected(after)


def test_split_read_hold_appends_after_the_kept_rows() -> None:
    first, second = make_batch(50, 1220, seed=11), make_batch(20, 1220, last=700, seed=12)
    dest = np.zeros(100 * 1200, np.uint8)
    with UdpReceiver("127.0.0.1", 0, gro=True, batch=1024) as rx, \
            UdpSender(("127.0.0.1", rx.port)) as tx:
        tx.send_batch(first)
        wait_readable(rx)
        _, lengths, _ = rx.drain_split(dest, 0, 1200, 100)
        assert len(lengths) == rx.new_rows == 50
        assert rx.hold()
        tx.send_batch(second)
        wait_readable(rx)
        heads, lengths, _ = rx.drain_split(dest, 0, 1200, 100)
        assert (len(lengths), rx.new_rows) == (70, 20)
        got = [(heads[i].tobytes() + dest[i * 1200 : (i + 1) * 1200].tobytes())[
            : int(lengths[i])] for i in range(70)]
        assert rx.stats.datagrams == 70
    assert got == expected(first) + expected(second)
