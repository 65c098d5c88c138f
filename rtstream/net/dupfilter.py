"""Drop an ST 2022-7 leg's copies in the kernel, before they are queued to the socket.

Theory of operation
-------------------
Of the two legs of a merged flow (:mod:`rtstream.proto.dup`), the later copy of every packet
is read only to be dropped: at 1080p60 that is ~260,000 datagrams a second copied from the
kernel and looked at, which costs the receiver about as much again as the first leg
(measured with ``perf``: the kernel's copy to user space alone is ~0.7 ms a frame). The copies
can be recognised before they are queued: :class:`KernelDupFilter` attaches one small eBPF
socket filter (``SO_ATTACH_BPF``, ``socket(7)``; program type ``BPF_PROG_TYPE_SOCKET_FILTER``,
``bpf(2)``) to each leg's socket. Both programs share one array map of 65,536 slots, one per
RTP sequence number, holding the RTP timestamp and SSRC of the packet last seen with that
number and a bit per leg that delivered it. For every datagram of an arriving buffer (one, or
up to 64 coalesced by UDP GRO, read at ``8 + k * gso_size``):

- a slot holding another timestamp or SSRC means a packet not seen yet: the slot is
  rewritten for it, owned by this leg;
- a slot holding this timestamp and SSRC, owned by the other leg only, means a copy: this
  leg's bit is added;
- a slot already owned by this leg means the leg delivered the number twice (a duplicate on
  one path), which the filter leaves to the merge.

A buffer is dropped only when **every** datagram in it is a copy of the other leg's, and only
on the *secondary* leg; then its datagrams and the buffer are added to that leg's counters (a
second array map, read by :meth:`KernelDupFilter.counts`). Anything else is queued whole and
the merge in user space sees it as before: the filter never decides what the merged stream
contains, it only saves reading what the merge would drop. The *primary* leg's socket keeps
everything: were copies dropped on both legs, two paths of about equal delay would split the
stream between the two sockets packet by packet, and the merge would put every frame back
together from two queues read at different moments (tried: packets handed on after their
frame had ended). The reader makes the leg whose packets come first the primary one
(:meth:`KernelDupFilter.set_primary`), so the secondary leg's socket holds only what the
primary lost or delivered late. Two copies racing on two CPUs both pass and the merge
drops one; the number alone (16 bits) would repeat every 65,536 packets (a quarter second
of a 1080p60 10-bit flow), so the timestamp and SSRC tell the packets of one wrap from the
next (one frame would need more than 65,536 datagrams to confuse them: 2160p60 has ~15,000).
Too short a datagram, or more than 64 in a buffer, passes untouched.

What it costs: a filter drop is counted by the kernel as a socket drop (``/proc/net/udp``)
and as a UDP receive error (``/proc/net/snmp`` ``InErrors``), so the counters here say how
many of those are copies. A packet accepted on one leg and then lost to a full socket buffer
is marked seen, so its copy on the other leg is dropped too: the filter protects against
loss on the paths, not against a receiver too slow to read its sockets.

Needs ``CAP_BPF`` (or ``CAP_SYS_ADMIN``) unless ``kernel.unprivileged_bpf_disabled`` is 0;
:meth:`KernelDupFilter.open` returns None (and says why) where it cannot load, and the
merge alone does the work.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import socket
import struct

log = logging.getLogger(__name__)

__all__ = ["KernelDupFilter", "filter_program"]

# bpf(2) commands and constants (include/uapi/linux/bpf.h).
_MAP_CREATE, _MAP_LOOKUP_ELEM, _MAP_UPDATE_ELEM, _PROG_LOAD = 0, 1, 2, 5
_MAP_TYPE_ARRAY = 2
_PROG_TYPE_SOCKET_FILTER = 1
_PSEUDO_MAP_FD = 1
_FUNC_MAP_LOOKUP_ELEM = 1
SO_ATTACH_BPF = 50  # socket(7)
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280}

# __sk_buff fields read by the program (offsets in include/uapi/linux/bpf.h).
_SKB_LEN, _SKB_GSO_SIZE = 0, 176

MAX_SEGMENTS = 64  # UDP GRO coalesces at most 64 datagrams (UDP_GRO_CNT_MAX)
_SLOT = struct.Struct("=III4x")  # RTP timestamp, SSRC, owner bits per leg (host order)
_COUNTS = struct.Struct("=QQ")  # datagrams, buffers dropped as copies


# -- a tiny eBPF assembler (instruction encoding: Documentation/bpf/standardization) ---------

def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


_ALU64, _JMP, _LD, _LDX, _ST, _STX = 0x07, 0x05, 0x00, 0x01, 0x02, 0x03
_W, _H, _DW = 0x00, 0x08, 0x18
_K, _X = 0x00, 0x08
_MEM, _IND, _IMM, _ATOMIC = 0x60, 0x40, 0x00, 0xC0
_ADD, _SUB, _MUL, _DIV, _OR, _MOV = 0x00, 0x10, 0x20, 0x30, 0x40, 0xB0
_JA, _JEQ, _JGT, _JNE, _JSET, _CALL, _EXIT, _JLT = 0x00, 0x10, 0x20, 0x50, 0x40, 0x80, 0x90, 0xA0
_R0, _R1, _R2, _R6, _R7, _R8, _R9, _FP = 0, 1, 2, 6, 7, 8, 9, 10


def _mov(dst: int, src: int) -> bytes:
    return _insn(_ALU64 | _MOV | _X, dst, src)


def _movi(dst: int, imm: int) -> bytes:
    return _insn(_ALU64 | _MOV | _K, dst, imm=imm)


def _alui(op: int, dst: int, imm: int) -> bytes:
    return _insn(_ALU64 | op | _K, dst, imm=imm)


def _alu(op: int, dst: int, src: int) -> bytes:
    return _insn(_ALU64 | op | _X, dst, src)


def _ldx(size: int, dst: int, src: int, off: int) -> bytes:
    return _insn(_LDX | _MEM | size, dst, src, off)


def _stx(size: int, dst: int, off: int, src: int) -> bytes:
    return _insn(_STX | _MEM | size, dst, src, off)


def _sti(size: int, dst: int, off: int, imm: int) -> bytes:
    return _insn(_ST | _MEM | size, dst, off=off, imm=imm)


def _ld_map(dst: int, fd: int) -> bytes:
    return _insn(_LD | _DW | _IMM, dst, _PSEUDO_MAP_FD, imm=fd) + _insn(0)


def _lookup_fp16(fd: int) -> bytes:
    """``r0 = map_lookup_elem(map fd, &key at fp-16)`` (NULL when the key is out of range)."""
    return (_ld_map(_R1, fd) + _mov(_R2, _FP) + _alui(_ADD, _R2, -16)
            + _insn(_JMP | _CALL, imm=_FUNC_MAP_LOOKUP_ELEM))


def _ld_ind(size: int, src: int, imm: int) -> bytes:
    """``r0 = ntoh(packet[src + imm])`` (the classic packet load; ctx in r6)."""
    return _insn(_LD | _IND | size, 0, src, imm=imm)


class _Asm:
    """Instructions with symbolic jump targets, resolved by :meth:`code`."""

    def __init__(self) -> None:
        self._out: list[bytes | tuple[int, int, int, int, str]] = []
        self._labels: dict[str, int] = {}

    def __call__(self, *insns: bytes) -> None:
        for b in insns:
            self._out.extend(b[i:i + 8] for i in range(0, len(b), 8))

    def jmp(self, op: int, dst: int, label: str, *, imm: int = 0, src: int | None = None) -> None:
        code = _JMP | op | (_X if src is not None else _K)
        self._out.append((code, dst, src or 0, imm, label))

    def label(self, name: str) -> None:
        self._labels[name] = len(self._out)

    def code(self) -> bytes:
        out = []
        for i, x in enumerate(self._out):
            if isinstance(x, tuple):
                code, dst, src, imm, label = x
                out.append(_insn(code, dst, src, self._labels[label] - i - 1, imm))
            else:
                out.append(x)
        return b"".join(out)


def filter_program(seen_fd: int, counts_fd: int, leg: int, legs: int = 2) -> bytes:
    """The socket filter of leg ``leg`` (0-based) of ``legs``, as eBPF instructions (see the
    module notes). ``counts_fd``'s entry ``legs`` holds the primary leg.

    Registers: r6 the ``__sk_buff``, r7 the offset of the datagram looked at (its UDP header,
    so the RTP header starts 8 bytes on), r8 the datagram stride, r9 datagrams left. Stack:
    fp-8 "keep the buffer" flag, fp-16 the map key (sequence number), fp-24 RTP timestamp,
    fp-28 SSRC, fp-40 the buffer's datagram count.
    """
    bit = 1 << leg
    a = _Asm()
    a(_mov(_R6, _R1),
      _ldx(_W, _R7, _R6, _SKB_LEN),
      _ldx(_W, _R8, _R6, _SKB_GSO_SIZE),
      _movi(_R9, 1))
    a.jmp(_JEQ, _R8, "single", imm=0)
    # datagrams in the buffer: ceil((len - 8) / gso_size), from the length (gso_segs is not
    # set on every path a coalesced buffer takes)
    a(_mov(_R9, _R7), _alui(_SUB, _R9, 8 + 1), _alu(_ADD, _R9, _R8), _alu(_DIV, _R9, _R8))
    a.jmp(_JA, 0, "counted")
    a.label("single")
    a(_mov(_R8, _R7), _alui(_SUB, _R8, 8))  # one datagram: stride = its size
    a.label("counted")
    a.jmp(_JEQ, _R9, "accept", imm=0)
    a.jmp(_JGT, _R9, "accept", imm=MAX_SEGMENTS)
    a.jmp(_JLT, _R8, "accept", imm=12)  # datagrams too short for an RTP header
    # the last datagram must hold an RTP header: 8 + (n - 1) * stride + 12 <= len
    a(_mov(_R0, _R9), _alui(_SUB, _R0, 1), _alu(_MUL, _R0, _R8), _alui(_ADD, _R0, 20))
    a.jmp(_JGT, _R0, "accept", src=_R7)
    a(_sti(_DW, _FP, -8, 0), _stx(_DW, _FP, -40, _R9), _movi(_R7, 8))
    a.label("loop")
    a(_ld_ind(_H, _R7, 2), _stx(_W, _FP, -16, _R0),
      _ld_ind(_W, _R7, 4), _stx(_W, _FP, -24, _R0),
      _ld_ind(_W, _R7, 8), _stx(_W, _FP, -28, _R0),
      _lookup_fp16(seen_fd))
    a.jmp(_JEQ, _R0, "accept", imm=0)
    a(_ldx(_W, _R1, _R0, 0), _ldx(_W, _R2, _FP, -24))
    a.jmp(_JNE, _R1, "fresh", src=_R2)
    a(_ldx(_W, _R1, _R0, 4), _ldx(_W, _R2, _FP, -28))
    a.jmp(_JNE, _R1, "fresh", src=_R2)
    a(_ldx(_W, _R1, _R0, 8))
    a.jmp(_JEQ, _R1, "fresh", imm=0)  # a slot never written (timestamp and SSRC 0)
    a.jmp(_JSET, _R1, "own", imm=bit)
    a(_alui(_OR, _R1, bit), _stx(_W, _R0, 8, _R1))  # a copy of the other leg's
    a.jmp(_JA, 0, "next")
    a.label("fresh")
    a(_ldx(_W, _R1, _FP, -24), _stx(_W, _R0, 0, _R1),
      _ldx(_W, _R1, _FP, -28), _stx(_W, _R0, 4, _R1),
      _sti(_W, _R0, 8, bit))
    a.label("own")
    a(_sti(_DW, _FP, -8, 1))
    a.label("next")
    a(_alu(_ADD, _R7, _R8), _alui(_SUB, _R9, 1))
    a.jmp(_JNE, _R9, "loop", imm=0)
    a(_ldx(_DW, _R1, _FP, -8))
    a.jmp(_JNE, _R1, "accept", imm=0)
    # every datagram a copy: kept all the same on the primary leg
    a(_sti(_W, _FP, -16, legs), _lookup_fp16(counts_fd))
    a.jmp(_JEQ, _R0, "accept", imm=0)
    a(_ldx(_DW, _R1, _R0, 0))
    a.jmp(_JEQ, _R1, "accept", imm=leg)
    # else count them and drop the buffer
    a(_sti(_W, _FP, -16, leg), _lookup_fp16(counts_fd))
    a.jmp(_JEQ, _R0, "drop", imm=0)
    a(_ldx(_DW, _R1, _FP, -40), _insn(_STX | _ATOMIC | _DW, _R0, _R1, 0, _ADD),
      _movi(_R1, 1), _insn(_STX | _ATOMIC | _DW, _R0, _R1, 8, _ADD))
    a.label("drop")
    a(_movi(_R0, 0), _insn(_JMP | _EXIT))
    a.label("accept")
    a(_insn(0x04 | _MOV | _K, _R0, imm=-1), _insn(_JMP | _EXIT))  # keep it all (u32 max)
    return a.code()


# -- bpf(2) through ctypes ---------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd: int, attr: bytes) -> int:
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        raise OSError(f"bpf(2): no system call number known for {platform.machine()}")
    buf = ctypes.create_string_buffer(attr, max(len(attr), 128))
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), buf, ctypes.c_uint(len(buf)))
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return int(ret)


def _map_create(value_size: int, entries: int) -> int:
    return _bpf(_MAP_CREATE, struct.pack("=IIII", _MAP_TYPE_ARRAY, 4, value_size, entries))


def _prog_load(insns: bytes) -> int:
    """Load a socket filter; when the kernel refuses it, load it again with the verifier's
    log on, for the reason."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"Apache-2.0")
    logbuf = ctypes.create_string_buffer(1 << 20)

    def load(level: int) -> int:
        return _bpf(_PROG_LOAD, struct.pack(
            "=IIQQIIQ", _PROG_TYPE_SOCKET_FILTER, len(insns) // 8, ctypes.addressof(code),
            ctypes.addressof(lic), level, len(logbuf) if level else 0,
            ctypes.addressof(logbuf) if level else 0))

    try:
        return load(0)
    except OSError as exc:
        if exc.errno == errno.EPERM:
            raise
        first = exc
    try:
        fd = load(1)
    except OSError:
        text = logbuf.value.decode(errors="replace").strip().splitlines()
        raise OSError(first.errno, f"{first.strerror}: {' / '.join(text[-3:])}") from None
    return fd


def _map_elem(cmd: int, fd: int, key: int, value: bytes) -> bytes:
    """Look up (``value`` zeros of its size) or update the element ``key`` of an array map;
    the value read or written."""
    k = ctypes.c_uint32(key)
    v = ctypes.create_string_buffer(value, len(value))
    _bpf(cmd, struct.pack("=IIQQQ", fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0))
    return v.raw


class KernelDupFilter:
    """The eBPF copy filter of one ST 2022-7 flow's legs (see the module notes).

    Build with :meth:`open`; :meth:`attach` each leg's socket; :meth:`counts` says what a leg
    had dropped as copies; :meth:`close` frees the maps and programs (a socket keeps its
    program until it is closed).
    """

    def __init__(self, seen_fd: int, counts_fd: int, prog_fds: tuple[int, ...]) -> None:
        self._seen_fd = seen_fd
        self._counts_fd = counts_fd
        self._progs = prog_fds
        self.primary = 0

    def set_primary(self, leg: int) -> None:
        """Make ``leg`` the leg whose socket gets every datagram it receives."""
        if self._counts_fd >= 0:
            _map_elem(_MAP_UPDATE_ELEM, self._counts_fd, len(self._progs), _COUNTS.pack(leg, 0))
        self.primary = leg

    @classmethod
    def open(cls, legs: int = 2) -> KernelDupFilter | None:
        """Load the maps and one program per leg (leg 0 primary); None (logged at INFO, with
        the reason) when this kernel or process cannot."""
        fds: list[int] = []
        try:
            seen = _map_create(_SLOT.size, 65536)
            fds.append(seen)
            counts = _map_create(_COUNTS.size, legs + 1)  # + the primary leg
            fds.append(counts)
            progs = []
            for leg in range(legs):
                progs.append(_prog_load(filter_program(seen, counts, leg, legs)))
                fds.append(progs[-1])
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            log.info("ST 2022-7: copies are dropped in user space (the kernel filter cannot be "
                     "loaded: %s; it needs CAP_BPF)", exc.strerror or exc)
            return None
        return cls(seen, counts, tuple(progs))

    def attach(self, sock: socket.socket | int, leg: int) -> None:
        """Filter leg ``leg``'s socket (an ``OSError`` when the kernel refuses)."""
        fd = sock if isinstance(sock, int) else sock.fileno()
        s = socket.socket(fileno=os.dup(fd))
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, self._progs[leg])
        finally:
            s.close()

    def counts(self, leg: int) -> tuple[int, int]:
        """``(datagrams, buffers)`` leg ``leg`` has dropped as copies so far."""
        if self._counts_fd < 0:
            return (0, 0)
        d, b = _COUNTS.unpack(_map_elem(_MAP_LOOKUP_ELEM, self._counts_fd, leg, bytes(_COUNTS.size)))
        return d, b

    def close(self) -> None:
        """Free the maps and programs (idempotent)."""
        for fd in (self._seen_fd, self._counts_fd, *self._progs):
            if fd >= 0:
                os.close(fd)
        self._seen_fd = self._counts_fd = -1
        self._progs = ()
