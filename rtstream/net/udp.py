"""UDP sockets for media-rate RTP: segmentation offload out, drained batches in.

Theory of operation
-------------------
*Sending.* A packetizer lays a frame's datagrams out as the rows of one ``numpy`` buffer,
all of one size except possibly the last (:class:`PacketBatch`). :meth:`UdpSender.send_batch`
hands the kernel up to ~45 of those rows in **one** ``sendmsg`` with the ancillary item
``(SOL_UDP, UDP_SEGMENT, segment size)`` (Linux UDP GSO, ``udp(7)``); the kernel cuts the
buffer into ordinary datagrams, the last of which may be shorter. When the kernel refuses
GSO (``EIO``, ``EINVAL``, ``ENOPROTOOPT``, ``EOPNOTSUPP``) the sender remembers it and sends
one datagram per call from then on. The socket is non-blocking and the plain methods never
wait: when its buffer is full (``EAGAIN``) :meth:`UdpSender.send_batch` stops and returns how
many rows it got through, :meth:`UdpSender.send` returns False. The ``*_async`` methods wait
for writability through the event loop (``loop.add_writer``) for a
bounded time (``max_wait``) and count the datagrams they had to drop when that time runs
out; nothing here sleeps or polls on the event loop's thread. Unicast sockets are connected, so an ICMP
port-unreachable from a vanished receiver comes back as ``ECONNREFUSED`` on a later send:
it is counted and the send retried, never raised.

*Receiving.* :meth:`UdpReceiver.drain` reads a non-blocking socket until ``EAGAIN`` (or until
the preallocated batch is full) straight into the rows of a ``(batch, max_datagram)`` array.
With ``UDP_GRO`` (Linux >= 5.0) one read may return several equal-size datagrams back to back,
with the segment size in a control message; those are split into rows with one numpy copy.

*Split reads.* :meth:`UdpReceiver.drain_split` lets the kernel's one copy put each
datagram where it belongs: every ``recvmsg`` (through ctypes, as ``recvmmsg``) gets an
iovec array that alternates a ``head``-byte slot in a header array with a
``payload``-byte slot in a caller's buffer (the place an in-order video packet's payload
belongs in its frame), then spare rows past the caller's slots. A GRO read of ``k``
equal segments fills ``k`` such pairs in one system call (``readv`` semantics: the
kernel fills each iovec in turn, ``recvmsg(2)``). The iovec array is built vectorized,
one ``(address, length)`` pair per slot, for the whole batch at once. A read whose
segment size is not ``head + payload`` is put back together as it arrived and handed to
the next :meth:`UdpReceiver.drain` as if read there (the caller verifies the headers and
moves what did not land where it was expected).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rtstream.endpoints import check_port
from rtstream.errors import ConfigError

log = logging.getLogger(__name__)

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
IP_ADD_SOURCE_MEMBERSHIP = 39
IP_DROP_SOURCE_MEMBERSHIP = 40
MAX_GSO_SEGMENTS = 45
_MAX_UDP_PAYLOAD = 65507
_GSO_REFUSED = {errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP}
# Outcomes of one send system call.
_SENT, _BLOCKED, _DROPPED = 1, 0, -1


class DatagramBatch(Protocol):
    """What :meth:`UdpSender.send_batch` needs of a batch (``rfc4175.PacketBatch`` fits)."""

    @property
    def buf(self) -> np.ndarray: ...

    @property
    def sizes(self) -> np.ndarray: ...


@dataclass
class UdpSendCounters:
    """Counters of one :class:`UdpSender` (the socket's view, not the pipeline's).

    Attributes
    ----------
    datagrams, bytes : int
        What the kernel took.
    syscalls, gso_calls : int
        ``send``/``sendmsg`` calls, and those of them carrying a GSO batch.
    icmp_errors : int
        ICMP errors reported on the socket (port/host/network unreachable).
    blocked : int
        Times a send found the socket buffer full (``EAGAIN``).
    dropped : int
        Datagrams given up: not taken within ``max_wait``, or refused by the network.
    """

    datagrams: int = 0
    bytes: int = 0
    syscalls: int = 0
    gso_calls: int = 0
    icmp_errors: int = 0
    blocked: int = 0
    dropped: int = 0


def resolve(host: str, *, key: str) -> str:
    """The IPv4 address of ``host`` (an address is returned as it is).

    This may ask DNS: call it while setting up, not on the event loop's hot path.

    Raises
    ------
    ConfigError
        Naming ``key`` when the name does not resolve to an IPv4 address.
    """
    if not host:  # gethostbyname("") would answer 0.0.0.0
        raise ConfigError(key, host, "an IPv4 address or a resolvable host name")
    try:
        return socket.gethostbyname(host)
    except (OSError, UnicodeError):
        raise ConfigError(key, host, "an IPv4 address or a resolvable host name") from None


def is_multicast(address: str) -> bool:
    """True for an IPv4 multicast group address (224.0.0.0/4)."""
    try:
        first = socket.inet_aton(address)[0]
    except OSError:
        return False
    return 224 <= first <= 239


def host_interfaces() -> str:
    """The host's interfaces, for error messages (``lo, eth0``)."""
    return ", ".join(name for _, name in socket.if_nameindex())


def require_multicast_interface(group: str, interface: str | None, key: str) -> None:
    """Refuse a multicast ``group`` without an interface.

    Without one the kernel sends by (and joins on) the default route's interface: a
    stream meant for the room or the machine leaves by whatever network that is.

    Raises
    ------
    ConfigError
        Naming ``key`` and listing the host's interfaces.
    """
    if interface is None:
        raise ConfigError(
            key, group,
            f"a multicast group needs the interface it goes out of or is joined on, or it "
            f"follows the default route: set it (this host has {host_interfaces()}; "
            f"lo keeps it on this machine)")


def _interface_address(interface: str | None) -> tuple[bytes, int]:
    """(IPv4 address bytes, ifindex) for an interface given by name or address."""
    if interface is None:
        return socket.inet_aton("0.0.0.0"), 0
    try:
        return socket.inet_aton(interface), 0
    except OSError:
        pass
    try:
        return socket.inet_aton("0.0.0.0"), socket.if_nametoindex(interface)
    except OSError:
        raise ConfigError(
            "network.interface", interface,
            f"an interface name or an IPv4 address of this host (it has {host_interfaces()})",
        ) from None


class UdpSender:
    """Send RTP datagrams of one flow, with UDP segmentation offload.

    Parameters
    ----------
    dest : tuple of (str, int)
        Destination address (unicast or multicast group) and port.
    bind : tuple of (str, int) or None
        Local address to bind (the source address of the flow); None for any.
    ttl : int
        Multicast TTL (``IP_MULTICAST_TTL``); 1 keeps the flow on the local link.
    interface : str or None
        Outgoing interface for multicast, by name (``eth0``) or IPv4 address; required
        for a multicast ``dest`` (:func:`require_multicast_interface`).
    dscp : int or None
        DiffServ code point 0..63 written into the IP TOS byte.
    sndbuf : int
        Requested ``SO_SNDBUF`` in bytes (``SO_SNDBUFFORCE`` is tried first as root).
    gso : bool
        Use ``UDP_SEGMENT``; False forces one send per datagram.
    max_wait : float
        Seconds :meth:`send_batch_async` / :meth:`send_async` wait for a full socket
        buffer to drain (without progress) before dropping the datagrams left.
    """

    def __init__(
        self,
        dest: tuple[str, int],
        *,
        bind: tuple[str, int] | None = None,
        ttl: int = 1,
        interface: str | None = None,
        dscp: int | None = None,
        sndbuf: int = 8 << 20,
        gso: bool = True,
        max_wait: float = 0.2,
    ) -> None:
        host, port = dest
        check_port(port, "network.port", what="UDP port")
        if not 0 <= ttl <= 255:
            raise ConfigError("network.ttl", ttl, "0..255")
        if dscp is not None and not 0 <= dscp <= 63:
            raise ConfigError("network.dscp", dscp, "0..63")
        addr = resolve(host, key="network.dest")
        if is_multicast(addr):
            require_multicast_interface(addr, interface, "--interface (TOML network.interface)")
        self.dest = (addr, port)
        self.stats = UdpSendCounters()
        self.gso = gso
        self._max_wait = max_wait
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.setblocking(False)
            _set_buffer(self._sock, socket.SO_SNDBUF, SO_SNDBUFFORCE, sndbuf, "net.core.wmem_max")
            if dscp is not None:
                self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)
            if is_multicast(addr):
                self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
                self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
                if interface is not None:
                    ifaddr, ifindex = _interface_address(interface)
                    # struct ip_mreqn {multiaddr, address, ifindex} (ip(7))
                    mreqn = socket.inet_aton("0.0.0.0") + ifaddr + struct.pack("=i", ifindex)
                    self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            if bind is not None:
                self._sock.bind((resolve(bind[0], key="network.source_address"), bind[1]))
            self._sock.connect(self.dest)
        except OSError as exc:
            self._sock.close()
            raise ConfigError("network.dest", f"{host}:{port}", f"a reachable address ({exc})") from None
        self._scratch = np.empty(0, np.uint8)
        self._waiters: list[asyncio.Future[None]] = []  # tasks waiting for buffer room

    def fileno(self) -> int:
        """The socket's file descriptor."""
        return self._sock.fileno()

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound (source) address and port."""
        name: tuple[str, int] = self._sock.getsockname()
        return name

    def send_batch(self, batch: DatagramBatch, start: int = 0, stop: int | None = None) -> int:
        """Send rows ``start:stop`` of ``batch`` without waiting; return the rows handled.

        Rows must all have the batch's segment size except possibly the very last row of
        the batch. A row is *handled* when the kernel took it or the network refused it
        for good (counted in ``stats.dropped``). Fewer rows than asked means the socket
        buffer is full: wait for writability (:meth:`send_batch_async` does) and call
        again from ``start`` plus the returned count.
        """
        buf = batch.buf
        sizes = batch.sizes
        n_total = buf.shape[0]
        stop = n_total if stop is None else min(stop, n_total)
        if start >= stop:
            return 0
        seg = int(sizes[0])
        stride = buf.shape[1]
        last = int(sizes[stop - 1])
        count = stop - start
        if stride == seg and buf.flags.c_contiguous:
            flat = buf.reshape(-1)
            base = start * seg
        else:
            need = count * seg
            if self._scratch.size < need:
                self._scratch = np.empty(need, np.uint8)
            self._scratch[:need].reshape(count, seg)[:] = buf[start:stop, :seg]
            flat = self._scratch
            base = 0
        mv = memoryview(flat)  # type: ignore[arg-type]
        sent = 0
        if self.gso and count > 1:
            per_call = max(1, min(MAX_GSO_SEGMENTS, _MAX_UDP_PAYLOAD // seg))
            cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("H", seg))]
            while sent < count and self.gso:
                k = min(per_call, count - sent)
                ok: int | None
                length = (k - 1) * seg + (last if sent + k == count else seg)
                off = base + sent * seg
                if k == 1:
                    ok = self._send_one(mv[off : off + length])
                else:
                    ok = self._send_gso(mv[off : off + length], cmsg, k)
                if ok is None:  # GSO refused: fall through to per-datagram sends
                    break
                if ok == _SENT:
                    sent += k
                    self.stats.datagrams += k
                    self.stats.bytes += length
                elif ok == _BLOCKED:
                    return sent
                else:
                    self.stats.dropped += count - sent
                    return count
        while sent < count:
            length = last if sent == count - 1 else seg
            off = base + sent * seg
            ok = self._send_one(mv[off : off + length])
            if ok == _SENT:
                sent += 1
                self.stats.datagrams += 1
                self.stats.bytes += length
            elif ok == _BLOCKED:
                return sent
            else:
                self.stats.dropped += count - sent
                return count
        return sent

    async def send_batch_async(self, batch: DatagramBatch, start: int = 0, stop: int | None = None) -> int:
        """:meth:`send_batch`, waiting on the event loop while the socket buffer is full.

        When the buffer stays full for ``max_wait`` seconds without any progress, the
        rows left are counted in ``stats.dropped`` and not retried. Returns the rows
        handled (all of ``start:stop`` unless cancelled).
        """
        stop = batch.buf.shape[0] if stop is None else min(stop, batch.buf.shape[0])
        i = start + self.send_batch(batch, start, stop)
        if i >= stop:
            return max(0, stop - start)
        now = asyncio.get_running_loop().time
        deadline = now() + self._max_wait
        while i < stop:
            remaining = deadline - now()
            if remaining <= 0 or not await self._wait_writable(remaining):
                self.stats.dropped += stop - i
                break
            got = self.send_batch(batch, i, stop)
            if got:
                i += got
                deadline = now() + self._max_wait
        return stop - start

    def send(self, datagram: bytes) -> bool:
        """Send one datagram (metadata, audio) without waiting.

        Returns False when the socket buffer is full and nothing was sent (wait and
        call again, or use :meth:`send_async`); True when the datagram is handled: sent,
        or refused by the network (counted in ``stats.dropped``).
        """
        ok = self._send_one(datagram)
        if ok == _SENT:
            self.stats.datagrams += 1
            self.stats.bytes += len(datagram)
        elif ok == _BLOCKED:
            return False
        else:
            self.stats.dropped += 1
        return True

    async def send_async(self, datagram: bytes) -> None:
        """:meth:`send`, waiting on the event loop (at most ``max_wait``) for buffer room;
        a datagram still not taken then is counted in ``stats.dropped``."""
        if self.send(datagram):
            return
        now = asyncio.get_running_loop().time
        deadline = now() + self._max_wait
        while not self.send(datagram):
            remaining = deadline - now()
            if remaining <= 0 or not await self._wait_writable(remaining):
                self.stats.dropped += 1
                return

    async def _wait_writable(self, timeout: float) -> bool:
        """Wait on the running event loop until the socket can take more data.

        Returns False when ``timeout`` seconds passed first. The loop runs other tasks
        meanwhile (``loop.add_writer``; no ``poll`` or ``sleep`` on its thread). Several
        tasks may wait on one sender: one writer callback wakes them all.
        """
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = self._sock.fileno()
        if not self._waiters:
            loop.add_writer(fd, self._on_writable, loop, fd)
        self._waiters.append(ready)
        try:
            async with asyncio.timeout(timeout):
                await ready
            return True
        except TimeoutError:
            return False
        finally:
            if ready in self._waiters:
                self._waiters.remove(ready)
                if not self._waiters:
                    loop.remove_writer(fd)

    def _on_writable(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        loop.remove_writer(fd)
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _send_gso(self, data: memoryview, cmsg: list[tuple[int, int, bytes]], k: int) -> int | None:
        """One GSO sendmsg: _SENT, _BLOCKED (buffer full), or None (GSO refused)."""
        while True:
            try:
                self._sock.sendmsg([data], cmsg)
                self.stats.syscalls += 1
                self.stats.gso_calls += 1
                return _SENT
            except BlockingIOError:
                self.stats.blocked += 1
                return _BLOCKED
            except ConnectionRefusedError:
                self.stats.icmp_errors += 1
            except OSError as exc:
                if exc.errno in _GSO_REFUSED:
                    log.warning(
                        "kernel refused UDP segmentation offload (%s); sending one datagram "
                        "per call from now on",
                        errno.errorcode.get(exc.errno or 0, exc.errno),
                    )
                    self.gso = False
                    return None
                if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EPERM):
                    self.stats.icmp_errors += 1
                    return _SENT
                raise

    def _send_one(self, data: memoryview | bytes) -> int:
        """One send: _SENT, _BLOCKED (buffer full) or _DROPPED (refused by the network)."""
        refused = 0
        while True:
            try:
                self._sock.send(data)
                self.stats.syscalls += 1
                return _SENT
            except BlockingIOError:
                self.stats.blocked += 1
                return _BLOCKED
            except ConnectionRefusedError:
                # ICMP port unreachable from an earlier datagram: count it, send again.
                self.stats.icmp_errors += 1
                refused += 1
                if refused > 3:
                    return _DROPPED
            except OSError as exc:
                if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EPERM):
                    self.stats.icmp_errors += 1
                    return _DROPPED
                raise

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._sock.close()

    def __enter__(self) -> UdpSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DupSender:
    """One flow sent on two paths (SMPTE ST 2022-7): the same datagrams to both legs.

    The caller packetizes once; every method hands the *same* buffer to the first leg's
    :class:`UdpSender`, then to the second's, so the two copies are byte-identical and
    each leg keeps its GSO path. A leg whose network refuses the datagrams (down, no
    route) counts them in its own ``stats.dropped`` and the other leg goes on. A second
    leg that could not be opened (its network down when the sender started: ``second``
    None) is opened again with ``reopen`` at most every ``retry_s`` seconds, from the
    send calls, until it works.

    Parameters
    ----------
    first : UdpSender
    second : UdpSender or None
    reopen : callable or None
        Opens the second leg (raises :class:`~rtstream.errors.ConfigError` while it
        cannot).
    retry_s : float
    """

    def __init__(self, first: UdpSender, second: UdpSender | None, *,
                 reopen: Callable[[], UdpSender] | None = None, retry_s: float = 1.0) -> None:
        self.first = first
        self.second = second
        self._reopen = reopen
        self._retry_s = retry_s
        self._next_try = time.monotonic() + retry_s

    @property
    def legs(self) -> tuple[UdpSender, ...]:
        """The open legs (the first, and the second once it is open)."""
        return (self.first,) if self.second is None else (self.first, self.second)

    @property
    def stats(self) -> UdpSendCounters:
        """The first leg's counters (each leg's are in ``legs[i].stats``)."""
        return self.first.stats

    def _second_leg(self) -> UdpSender | None:
        if self.second is None and self._reopen is not None and time.monotonic() >= self._next_try:
            try:
                self.second = self._reopen()
            except ConfigError as exc:
                self._next_try = time.monotonic() + self._retry_s
                log.debug("second leg still cannot be opened: %s", exc)
            else:
                log.warning("second network reachable again: sending to %s:%d as well",
                            *self.second.dest)
        return self.second

    async def send_batch_async(self, batch: DatagramBatch, start: int = 0, stop: int | None = None) -> int:
        """:meth:`UdpSender.send_batch_async` on the first leg, then on the second."""
        got = await self.first.send_batch_async(batch, start, stop)
        second = self._second_leg()
        if second is not None:
            await second.send_batch_async(batch, start, stop)
        return got

    async def send_async(self, datagram: bytes) -> None:
        """:meth:`UdpSender.send_async` on both legs."""
        await self.first.send_async(datagram)
        second = self._second_leg()
        if second is not None:
            await second.send_async(datagram)

    def close(self) -> None:
        """Close both legs' sockets."""
        for leg in self.legs:
            leg.close()


def _set_buffer(sock: socket.socket, opt: int, force_opt: int, size: int, sysctl: str) -> int:
    """Set a socket buffer, trying the FORCE variant as root; warn when capped."""
    if os.geteuid() == 0:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force_opt, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
    else:
        sock.setsockopt(socket.SOL_SOCKET, opt, size)
    got: int = sock.getsockopt(socket.SOL_SOCKET, opt)
    # Linux reports double the requested value (bookkeeping overhead, socket(7)).
    if got // 2 < size:
        log.warning(
            "socket buffer capped by the kernel: asked %d bytes, got %d; raise %s "
            "(sysctl -w %s=%d) to avoid loss",
            size,
            got // 2,
            sysctl,
            sysctl,
            size,
        )
    return got


@dataclass
class ReceiverStats:
    """Counters of one :class:`UdpReceiver`."""

    datagrams: int = 0
    bytes: int = 0
    reads: int = 0
    gro_reads: int = 0
    truncated: int = 0


class _Recvmmsg:
    """``recvmmsg(2)`` through ctypes: up to ``rows`` datagrams per system call, each into
    its own row of ``buf`` (Python's socket module has no recvmmsg; a sender that does
    not use GSO, or traffic the kernel does not coalesce, is otherwise one system call
    and one Python round per datagram: ~4,300 per 1080p frame).

    The message headers are built once and point at the rows; :meth:`read` fills rows
    ``n..`` and returns how many datagrams came. ``lengths`` and ``flags`` are numpy views
    of the headers' ``msg_len`` and ``msg_flags`` fields.
    """

    def __init__(self, libc: Any, fd: int, buf: np.ndarray) -> None:
        import ctypes

        class IoVec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

        class MsgHdr(ctypes.Structure):
            _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                        ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                        ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                        ("flags", ctypes.c_int)]

        class MMsgHdr(ctypes.Structure):
            _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint)]

        rows, stride = buf.shape
        self._ctypes = ctypes
        self._libc = libc
        self._fd = fd
        self._buf = buf  # keeps the memory the headers point at alive
        self._iov = (IoVec * rows)()
        self._msgs = (MMsgHdr * rows)()
        self._size = ctypes.sizeof(MMsgHdr)
        base = buf.ctypes.data
        iov_base = ctypes.addressof(self._iov)
        for i in range(rows):
            self._iov[i].base = base + i * stride
            self._iov[i].len = stride
            self._msgs[i].hdr.iov = iov_base + i * ctypes.sizeof(IoVec)
            self._msgs[i].hdr.iovlen = 1
        words = np.frombuffer(self._msgs, np.uint32).reshape(rows, self._size // 4)
        self.lengths = words[:, MMsgHdr.len.offset // 4]
        self.flags = words[:, (MsgHdr.flags.offset) // 4]

    def read(self, n: int, limit: int) -> int:
        """Datagrams received into rows ``n..limit-1`` (0 when none is waiting)."""
        got = int(self._libc.recvmmsg(self._fd, self._ctypes.byref(self._msgs, n * self._size),
                                      limit - n, socket.MSG_DONTWAIT, None))
        if got < 0:
            err = self._ctypes.get_errno()
            if err not in (errno.EAGAIN, errno.EINTR):
                log.debug("recvmmsg: %s", os.strerror(err))
            return 0
        return got


def _libc_recvmmsg() -> Any:
    """libc with ``recvmmsg`` typed, or None where it is missing."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.recvmmsg
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return libc


_LIBC = _libc_recvmmsg()
_UIO_MAXIOV = 1024  # iovecs one recvmsg(2) takes (Linux <uapi/linux/uio.h>)


class _SplitReader:
    """``recvmsg(2)`` through ctypes into alternating header and payload iovecs.

    For each destination (buffer address, first payload's byte offset modulo the payload
    size, slot count up to the end) one *table* is built once, vectorized: pair ``g`` is
    (header row ``g``, payload slot ``g`` of the buffer) for every slot of the buffer,
    then (header row, spare row) pairs for a whole batch past its end. A read from batch
    row ``n`` of a plan whose first slot is ``f`` just points ``msg_iov`` at pair
    ``f + n``: nothing is rebuilt per drain (frame buffers come from a small pool, so a
    stream uses a handful of tables). One read may fill up to ``per_read`` rows (a whole
    64 KiB GRO read), so reads stop while fewer rows than that are left.
    """

    _MAX_TABLES = 64

    def __init__(self, libc: Any, fd: int, head: int, payload: int, rows: int,
                 cmsg_space: int) -> None:
        import ctypes

        class MsgHdr(ctypes.Structure):
            _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                        ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                        ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                        ("flags", ctypes.c_int)]

        seg = head + payload
        self.head = head
        self.payload = payload
        # A read's iovecs: two per datagram it may hold (a 64 KiB GRO read), never more
        # than the kernel takes (UIO_MAXIOV, 1024: more fails with EMSGSIZE). 512 pairs
        # cover any read (GRO coalesces at most 64 segments, UDP_GRO_CNT_MAX; a longer
        # read would be counted truncated).
        self.per_read = min(-(-65536 // seg) + 1, _UIO_MAXIOV // 2)
        self.rows = max(rows, 2 * self.per_read)
        self.spare = np.zeros((self.rows, payload), np.uint8)
        # key -> (iov pairs (slots + rows, 2, 2) uint64, header rows (slots + rows, head))
        self._tables: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._ctrl = ctypes.create_string_buffer(cmsg_space)
        # cmsghdr {size_t len; int level; int type;} then the GRO segment size (an int)
        self._cmsg = (ctypes.c_int * (cmsg_space // 4)).from_buffer(self._ctrl)
        self._msg = MsgHdr()
        self._msg.control = ctypes.addressof(self._ctrl)
        self._cmsg_space = cmsg_space
        self._ctypes = ctypes
        self._fd = fd
        self._recvmsg = libc.recvmsg
        self._recvmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        self._recvmsg.restype = ctypes.c_ssize_t
        self._msg_ref = ctypes.byref(self._msg)
        self.truncated = 0
        self.failed = False

    def _table(self, base: int, origin: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """The iovec pairs and header rows for slots ``0..end-1`` of the buffer at
        ``base`` (slot ``g`` at byte ``origin + g * payload``), then spare rows."""
        key = (base, origin, end)
        got = self._tables.get(key)
        if got is not None:
            return got
        if len(self._tables) >= self._MAX_TABLES:
            self._tables.clear()
        total = end + self.rows
        heads = np.zeros((total, self.head), np.uint8)
        iov = np.empty((total, 2, 2), np.uint64)
        g = np.arange(total, dtype=np.uint64)
        iov[:, 0, 0] = np.uint64(heads.ctypes.data) + g * np.uint64(self.head)
        iov[:, 0, 1] = self.head
        iov[:end, 1, 0] = np.uint64(base + origin) + g[:end] * np.uint64(self.payload)
        iov[end:, 1, 0] = np.uint64(self.spare.ctypes.data) + g[: self.rows] * np.uint64(
            self.payload)
        iov[:, 1, 1] = self.payload
        self._tables[key] = (iov, heads)
        return iov, heads

    def read(self, dest: np.ndarray, start: int, slots: int, n: int, lengths: np.ndarray
             ) -> tuple[int, int, int, tuple[np.ndarray, int] | None, np.ndarray]:
        """Read from row ``n`` on; (rows, reads, coalesced reads, carried read or None,
        the header rows of the batch)."""
        pay = self.payload
        first, origin = divmod(start, pay)
        iov, heads_all = self._table(int(dest.ctypes.data), origin, first + slots)
        heads = heads_all[first:]
        iov_base = int(iov.ctypes.data) + first * 32
        msg = self._msg
        recvmsg = self._recvmsg
        ref = self._msg_ref
        fd = self._fd
        seg = self.head + pay
        per_read = self.per_read
        rows = min(self.rows, lengths.shape[0])
        cmsg = self._cmsg
        reads = gro_reads = 0
        carry: tuple[np.ndarray, int] | None = None
        while n + per_read <= rows:
            msg.iov = iov_base + n * 32
            msg.iovlen = 2 * per_read
            msg.controllen = self._cmsg_space
            k = int(recvmsg(fd, ref, socket.MSG_DONTWAIT))
            if k < 0:
                err = self._ctypes.get_errno()
                if err not in (errno.EAGAIN, errno.EINTR):
                    # never again: the socket is drained the ordinary way from now on
                    log.debug("split recvmsg: %s; reading without splitting", os.strerror(err))
                    self.failed = True
                break
            reads += 1
            got = 0
            if msg.controllen >= 20 and cmsg[2] == SOL_UDP and cmsg[3] == UDP_GRO:
                got = cmsg[4]
            if msg.flags & _MSG_TRUNC:
                self.truncated += 1
                continue
            if got and k > got:
                gro_reads += 1
            else:
                got = k
            if got != seg and k > got or got > seg:
                # not this sender's segment size: hand the read on as it arrived
                carry = (self._joined(heads, n, k, dest, start, slots), got)
                break
            count = -(-k // seg) if k else 1
            lengths[n : n + count] = seg
            lengths[n + count - 1] = k - (count - 1) * seg
            n += count
        return n, reads, gro_reads, carry, heads[:n]

    def _joined(self, heads: np.ndarray, n: int, k: int, dest: np.ndarray, start: int,
                slots: int) -> np.ndarray:
        """The ``k`` bytes of a read placed from row ``n``, back in arrival order."""
        head, payload = self.head, self.payload
        count = -(-k // (head + payload))
        out = np.empty((count, head + payload), np.uint8)
        out[:, :head] = heads[n : n + count]
        inside = max(0, min(count, slots - n))
        if inside:
            a = start + n * payload
            out[:inside, head:] = dest[a : a + inside * payload].reshape(inside, payload)
        first_spare = max(0, n - slots) if inside == 0 else 0
        rest = count - inside
        out[inside:, head:] = self.spare[first_spare : first_spare + rest]
        return out.reshape(-1)[:k].copy()


_MSG_TRUNC = int(socket.MSG_TRUNC)
#: A GRO socket whose reads were never coalesced for this many batches in a row (its
#: sender does not use GSO, or the path does not coalesce) is switched to recvmmsg.
_GRO_STRIKES = 8


class UdpReceiver:
    """A drained, non-blocking UDP socket filling preallocated numpy batches.

    Parameters
    ----------
    address : str
        Unicast address to bind, or multicast group to join.
    port : int
        UDP port.
    source : str or None
        Source address for a source-specific join (SDP ``a=source-filter``).
    interface : str or None
        Interface (name or IPv4 address) on which to join a multicast group; required
        for a group (:func:`require_multicast_interface`).
    rcvbuf : int
        Requested ``SO_RCVBUF``; a WARNING names ``net.core.rmem_max`` when capped.
    max_datagram : int
        Row width of the batch; longer datagrams are truncated and counted.
    batch : int
        Rows of the batch (the most datagrams one :meth:`drain` returns).
    gro : bool
        Ask for ``UDP_GRO`` coalescing when the kernel offers it.
    """

    def __init__(
        self,
        address: str,
        port: int,
        *,
        source: str | None = None,
        interface: str | None = None,
        rcvbuf: int = 32 << 20,
        max_datagram: int = 9000,
        batch: int = 1024,
        gro: bool = True,
    ) -> None:
        check_port(port, "network.port", allow_zero=True, what="UDP port")
        addr = resolve(address, key="network.address")
        if is_multicast(addr):
            require_multicast_interface(addr, interface, "--interface (ReceiverConfig.interface)")
        self.stats = ReceiverStats()
        self._buf = np.zeros((batch, max_datagram), np.uint8)
        self._lengths = np.zeros(batch, np.int64)
        self._rows = [memoryview(self._buf[i]) for i in range(batch)]
        self._pending: tuple[np.ndarray, int] | None = None  # GRO leftover (data, seg)
        # GRO reads land here, rows ``stride`` apart (no copy between kernel and caller);
        # room for ``batch`` rows of ``max_datagram`` plus one whole 64 KiB read.
        self._arena = np.zeros(batch * max_datagram + 65536, np.uint8)
        self._arena_mv = memoryview(self._arena)  # type: ignore[arg-type]
        # Touch the buffer the reads land in now: its page faults would otherwise come
        # with the stream's first datagrams, when the socket buffer fills fastest.
        (self._arena if gro else self._buf).fill(0)
        self._carry: tuple[np.ndarray, int] | None = None  # read that did not fit a batch
        self._last: tuple[int, int] | None = None  # (rows, stride) the last drain returned
        self._held: tuple[int, int] | None = None  # ... kept by hold() for the next drain
        self.new_rows = 0
        self._mmsg: _Recvmmsg | None = None
        self._strikes = 0  # batches in a row whose GRO reads were never coalesced
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.setblocking(False)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.rcvbuf = _set_buffer(
                self._sock, socket.SO_RCVBUF, SO_RCVBUFFORCE, rcvbuf, "net.core.rmem_max"
            )
            self.gro = False
            if gro:
                try:
                    self._sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                    self.gro = True
                except OSError:
                    log.debug("UDP_GRO not offered by this kernel")
            multicast = is_multicast(addr)
            self._sock.bind((addr, port))
            if multicast:
                ifaddr, ifindex = _interface_address(interface)
                if source is not None:
                    src = socket.inet_aton(resolve(source, key="network.source"))
                    if ifindex and ifaddr == socket.inet_aton("0.0.0.0"):
                        ifaddr = _first_address_of(ifindex)
                    # struct ip_mreq_source {multiaddr, interface, sourceaddr} (ip(7))
                    mreq = socket.inet_aton(addr) + ifaddr + src
                    self._sock.setsockopt(socket.IPPROTO_IP, IP_ADD_SOURCE_MEMBERSHIP, mreq)
                else:
                    mreqn = socket.inet_aton(addr) + ifaddr + struct.pack("=i", ifindex)
                    self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        except OSError as exc:
            self._sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    "--sdp", f"{address}:{port}",
                    "UDP port already in use by another program (the port is the SDP's m= line): "
                    "stop that program, or have the sender use other ports (--dest HOST:PORT, "
                    "TOML network.port)") from None
            raise ConfigError(
                "network.address", f"{address}:{port}", f"an address this host can receive on ({exc})"
            ) from None
        self._cmsg_space = socket.CMSG_SPACE(4)
        self._split: _SplitReader | None = None
        self._split_held = 0  # rows of the last drain_split kept by hold()
        #: The last drain_split stopped because its rows were full (data may be left).
        self.split_full = False

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        port: int = self._sock.getsockname()[1]
        return port

    def fileno(self) -> int:
        """The socket's file descriptor (for ``loop.add_reader``)."""
        return self._sock.fileno()

    def drain(self) -> tuple[np.ndarray, np.ndarray]:
        """Read until the socket is empty or the batch is full.

        Returns
        -------
        batch, lengths : numpy.ndarray
            A view ``(n, stride)`` of a reused buffer (valid until the next call), one
            datagram per row, and the number of bytes in each row. ``stride`` is
            ``max_datagram``, or with GRO the segment size of the coalesced reads, whose
            datagrams then arrive without any copy. After :meth:`hold` the rows kept come
            first; :attr:`new_rows` tells how many rows this call added.
        """
        held, self._held = self._held, None
        self._last = None
        self._split_held = 0  # (a held split batch is given up: its rows are not here)
        lengths = self._lengths
        if self.gro and self._pending is None:
            n0, stride = held if held is not None else (0, 0)
            n, stride = self._drain_gro(n0, stride)
            self._account(n0, n)
            if self._carry is None and self.gro:  # (GRO may just have been switched off)
                self._last = (n, stride)
            view: np.ndarray = self._arena[: n * stride].reshape(n, stride)
            return view, lengths[:n]
        n0 = n = held[0] if held is not None else 0
        if self._pending is not None:
            n = self._take_segments(*self._pending, n)
        if not self.gro:
            n = self._read_rows(n)
            self._last = (n, 0)
        self._account(n0, n)
        return self._buf[:n], lengths[:n]

    @property
    def can_split(self) -> bool:
        """:meth:`drain_split` may be called: GRO on, nothing carried over or held by
        :meth:`drain`, and ``recvmsg`` reachable through ctypes."""
        return (self.gro and _LIBC is not None and self._carry is None
                and self._pending is None and self._held is None
                and (self._split is None or not self._split.failed))

    def drain_split(self, dest: np.ndarray, start: int, payload: int, slots: int, *,
                    head: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read until the socket is empty or the batch is full, splitting each datagram.

        Datagram ``i`` of the batch puts its first ``head`` bytes into row ``i`` of a
        header array and the next ``payload`` bytes at ``dest[start + i * payload:]``
        while ``i < slots``, into row ``i - slots`` of a spare array after that (see the
        module docstring). Only call when :attr:`can_split`.

        Parameters
        ----------
        dest : numpy.ndarray
            1-D uint8 buffer receiving payloads; ``start + slots * payload`` must fit.

        After :meth:`hold` the rows of the previous call come first (the caller passes
        the same ``dest``, ``start``, ``payload`` and ``slots`` again); :attr:`new_rows`
        tells how many rows this call added.

        Returns
        -------
        headers, lengths, spare : numpy.ndarray
            ``(n, head)`` header rows, ``(n,)`` datagram lengths, and the ``(max(0, n -
            slots), payload)`` spare rows; views of reused buffers valid until the next
            call. A datagram longer than ``head + payload`` (or a GRO read of another
            segment size) ends the batch and goes to the next :meth:`drain`.
        """
        if dest.ndim != 1 or dest.dtype != np.uint8 or not dest.flags.c_contiguous:
            raise ValueError("dest: need a contiguous 1-D uint8 array")
        if start < 0 or slots < 0 or start + slots * payload > dest.size or payload <= 0:
            raise ValueError("dest too small for the slots asked")
        hold, self._split_held = self._split_held, 0
        self._last = None
        sp = self._split
        if sp is None or sp.head != head or sp.payload != payload:
            sp = self._split = _SplitReader(_LIBC, self._sock.fileno(), head, payload,
                                            self._buf.shape[0], self._cmsg_space)
        n, reads, gro_reads, carry, heads = sp.read(dest, start, slots, hold, self._lengths)
        self.split_full = carry is None and n + sp.per_read > min(sp.rows, self._lengths.shape[0])
        self.stats.reads += reads
        self.stats.gro_reads += gro_reads
        self.stats.truncated += sp.truncated
        sp.truncated = 0
        if carry is not None:
            self._carry = carry
        self._note_coalescing(reads, gro_reads)
        self._account(hold, n)
        self._last = (n, -1) if carry is None else None
        return heads, self._lengths[:n], sp.spare[: max(0, n - slots)]

    def _read_rows(self, n: int) -> int:
        """Datagrams into the rows of ``self._buf`` from row ``n`` until the socket is
        empty or the rows are full; returns the row count."""
        cap = self._buf.shape[0]
        lengths = self._lengths
        first = n
        if _LIBC is not None:
            if self._mmsg is None:
                self._mmsg = _Recvmmsg(_LIBC, self._sock.fileno(), self._buf)
            mm = self._mmsg
            while n < cap:
                got = mm.read(n, cap)
                if not got:
                    break
                lengths[n : n + got] = mm.lengths[n : n + got]
                self.stats.truncated += int(
                    np.count_nonzero(mm.flags[n : n + got] & _MSG_TRUNC))
                n += got
                self.stats.reads += 1
            return n
        rows = self._rows
        recv_into = self._sock.recv_into
        while n < cap:
            try:
                k = recv_into(rows[n])
            except BlockingIOError:
                break
            lengths[n] = k
            n += 1
        self.stats.reads += n - first
        return n

    def _note_coalescing(self, reads: int, gro_reads: int) -> None:
        """Switch GRO off when it never coalesces (see _GRO_STRIKES); called with what a
        drain that filled a batch from the socket saw."""
        if gro_reads or reads < 32:
            self._strikes = 0
            return
        self._strikes += 1
        if self._strikes >= _GRO_STRIKES and _LIBC is not None:
            try:
                self._sock.setsockopt(SOL_UDP, UDP_GRO, 0)
            except OSError:
                return
            self.gro = False
            self._buf.fill(0)  # its page faults now, not during the next reads
            log.debug("UDP_GRO never coalesced on port %d: reading with recvmmsg", self.port)

    def hold(self) -> bool:
        """Keep the rows the last :meth:`drain` returned for the next one.

        The next drain appends its datagrams after them and returns old and new rows as
        one batch, so a caller can gather a bigger batch before decoding it. Returns
        False (nothing kept) when the last batch cannot grow: it was empty, or a read was
        carried over or split into it.
        """
        last = self._last
        if last is None or last[0] == 0:
            return False
        if last[1] < 0:  # a split batch: the next drain_split appends
            self._split_held = last[0]
            self._last = None
            return True
        self._held = last
        self._last = None
        return True

    def unhold(self) -> None:
        """Forget the rows :meth:`hold` kept: the next drain starts a new batch."""
        self._held = None
        self._split_held = 0

    def _account(self, n0: int, n: int) -> None:
        self.new_rows = n - n0
        if n > n0:
            self.stats.datagrams += n - n0
            self.stats.bytes += int(self._lengths[n0:n].sum())

    def _drain_gro(self, n: int, stride: int) -> tuple[int, int]:
        """GRO drain straight into the arena, rows ``stride`` bytes apart; (rows, stride).

        A coalesced read of segment size ``s`` lands as ``ceil(k / s)`` consecutive rows
        when the rows are ``s`` bytes apart, so the first coalesced read of a batch fixes
        the stride at its segment size; single datagrams take one row each (stride =
        ``max_datagram`` when the batch starts with one). A read that does not fit the
        stride ends the batch and is carried over to the next call. ``n`` rows ``stride``
        apart are already in the arena (held by :meth:`hold`; 0 and 0 otherwise).
        """
        arena = self._arena
        amv = self._arena_mv
        lengths = self._lengths
        cap = self._lengths.shape[0]
        width = self._buf.shape[1]
        limit = arena.size - 65536  # a whole GRO read (<= 64 KiB) must always fit
        sock = self._sock
        space = self._cmsg_space
        n0 = n
        reads = gro_reads = 0
        # Every row is ``stride`` bytes long but these (row, length) pairs: the short last
        # segment of a coalesced read, and single datagrams. Filled in once at the end.
        short: list[tuple[int, int]] = []
        carry = self._carry
        if carry is not None:
            self._carry = None
            data, seg = carry
            k = data.size
            arena[:k] = data
            if k > seg:
                stride = seg
                n = self._rows_of(0, k, seg, cap, short)
            else:
                stride = width
                short.append((0, min(k, width)))
                n = 1
        while n < cap:
            off = n * stride
            if off > limit:
                break
            try:
                k, anc, flags, _ = sock.recvmsg_into([amv[off:]], space)
            except BlockingIOError:
                break
            reads += 1
            seg = 0
            for level, typ, cdata in anc:
                if level == SOL_UDP and typ == UDP_GRO and len(cdata) >= 2:
                    seg = cdata[0] | cdata[1] << 8
            if seg and k > seg:
                if stride == 0:
                    stride = seg
                if seg != stride:
                    self._carry = (arena[off : off + k].copy(), seg)
                    break
                gro_reads += 1
                nseg = -(-k // seg)
                if n + nseg <= cap:
                    tail = k - (nseg - 1) * seg
                    if tail != seg:
                        short.append((n + nseg - 1, tail))
                    n += nseg
                else:
                    n = self._rows_of(n, k, seg, cap, short)
            else:
                if stride == 0:
                    stride = width
                if flags & socket.MSG_TRUNC or k > stride:
                    if k > stride and not flags & socket.MSG_TRUNC and k <= 65536 and n:
                        self._carry = (arena[off : off + k].copy(), k)
                        break
                    self.stats.truncated += 1
                    k = min(k, stride)
                short.append((n, k))
                n += 1
        self.stats.reads += reads
        self.stats.gro_reads += gro_reads
        self._note_coalescing(reads, gro_reads)
        if n == 0:
            return 0, width
        lengths[n0:n] = stride
        if short:
            rows, values = zip(*short, strict=True)
            lengths[list(rows)] = values
        return n, stride

    def _rows_of(self, n: int, k: int, seg: int, cap: int, short: list[tuple[int, int]]) -> int:
        """Rows of a coalesced read of ``k`` bytes placed at row ``n`` (rows ``seg``
        apart); what exceeds ``cap`` rows is carried over, a short last segment is
        noted in ``short``. Returns the new row count."""
        nseg = -(-k // seg)
        take = min(nseg, cap - n)
        if take == nseg:
            tail = k - (nseg - 1) * seg
            if tail != seg:
                short.append((n + nseg - 1, tail))
        else:
            start = (n + take) * seg
            self._carry = (self._arena[start : n * seg + k].copy(), seg)
        return n + take

    def _take_segments(self, data: np.ndarray, seg: int, n: int) -> int:
        """Split a GRO read into rows from row ``n``; keep what does not fit."""
        cap = self._buf.shape[0]
        width = self._buf.shape[1]
        total = data.size
        nseg = -(-total // seg)
        room = cap - n
        take = min(nseg, room)
        full = min(take, total // seg)
        w = min(seg, width)
        if seg > width:
            self.stats.truncated += take
        if full:
            self._buf[n : n + full, :w] = data[: full * seg].reshape(full, seg)[:, :w]
            self._lengths[n : n + full] = w
        if take > full:  # the shorter tail segment
            tail = data[full * seg :]
            tw = min(tail.size, width)
            self._buf[n + full, :tw] = tail[:tw]
            self._lengths[n + full] = tw
        used = min(take * seg, total)
        self._pending = (data[used:].copy(), seg) if used < total else None
        return n + take

    def close(self) -> None:
        """Close the socket (idempotent); leaving the socket drops its memberships."""
        self._sock.close()

    def __enter__(self) -> UdpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_address_of(ifindex: int) -> bytes:
    """IPv4 address of interface ``ifindex`` (for ip_mreq_source, which has no ifindex)."""
    import fcntl

    name = socket.if_indextoname(ifindex)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        SIOCGIFADDR = 0x8915
        res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
    return res[20:24]
