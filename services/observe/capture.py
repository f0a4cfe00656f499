"""Frames an instance sends into its port, from a raw AF_PACKET socket with a kernel filter.

On a hypervisor host an instance's port (its tap or veth end) carries both
directions: what the instance sends (PACKET_HOST, _BROADCAST, _MULTICAST,
_OTHERHOST as the host sees it) and what the host sends to the instance
(PACKET_OUTGOING). Only the first is the instance speaking, so the filter drops
outgoing frames in the kernel, and `receive` checks again.

The classic BPF filter also keeps everything but ARP and IPv4 protocol 112
(VRRP) out of the socket's queue, so a busy port costs no Python per frame.
Needs CAP_NET_RAW, and CAP_SYS_ADMIN only to enter another network namespace.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading

ETH_P_ALL = 0x0003
_SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>; the socket module does not export it
_CLONE_NEWNET = 0x40000000
_RECEIVE_BUFFER = 1 << 20  # a thousand or so small frames queued; the kernel caps it at net.core.rmem_max
_NETNS_DIR = "/run/netns"  # where `ip netns add` pins named namespaces

# Classic BPF (<linux/filter.h>, <linux/bpf_common.h>).
_BPF_LD, _BPF_JMP, _BPF_RET = 0x00, 0x05, 0x06
_BPF_W, _BPF_H, _BPF_B = 0x00, 0x08, 0x10  # load sizes: 32, 16, 8 bits
_BPF_ABS = 0x20  # load from an absolute offset in the frame
_BPF_JEQ = 0x10
_BPF_K = 0x00  # the operand is the instruction's constant k
_SKF_AD_OFF = 0xFFFFF000  # -0x1000 as u32: offsets from here are "ancillary" data, not frame bytes
_SKF_AD_PKTTYPE = 4  # ... the skb's pkttype, the PACKET_* direction class

_LOAD_WORD = _BPF_LD | _BPF_W | _BPF_ABS
_LOAD_HALF = _BPF_LD | _BPF_H | _BPF_ABS
_LOAD_BYTE = _BPF_LD | _BPF_B | _BPF_ABS
_JUMP_IF_EQUAL = _BPF_JMP | _BPF_JEQ | _BPF_K
_RETURN = _BPF_RET | _BPF_K

SNAPLEN = 2048  # bytes kept of an accepted frame: adverts and ARPs are far smaller
_ETHERTYPE_VLAN, _ETHERTYPE_IPV4, _ETHERTYPE_ARP = 0x8100, 0x0800, 0x0806
_IPPROTO_VRRP = 112

# (code, jt, jf, k): jt/jf count the instructions skipped after this one when the test holds / fails.
# A load past the end of a short frame ends the program with 0 (drop), so no length checks are needed.
FILTER: list[tuple[int, int, int, int]] = [
    (_LOAD_WORD, 0, 0, _SKF_AD_OFF + _SKF_AD_PKTTYPE),  # 0: A = pkttype
    (_JUMP_IF_EQUAL, 12, 0, socket.PACKET_OUTGOING),  # 1: the host sending to the instance -> 14 drop
    (_LOAD_HALF, 0, 0, 12),  # 2: A = ethertype
    (_JUMP_IF_EQUAL, 4, 0, _ETHERTYPE_VLAN),  # 3: one 802.1Q tag (if the kernel left it in) -> 8
    (_JUMP_IF_EQUAL, 8, 0, _ETHERTYPE_ARP),  # 4: ARP -> 13 accept
    (_JUMP_IF_EQUAL, 0, 8, _ETHERTYPE_IPV4),  # 5: neither ARP nor IPv4 -> 14 drop
    (_LOAD_BYTE, 0, 0, 14 + 9),  # 6: A = IPv4 protocol
    (_JUMP_IF_EQUAL, 5, 6, _IPPROTO_VRRP),  # 7: VRRP -> 13 accept, else -> 14 drop
    (_LOAD_HALF, 0, 0, 16),  # 8: A = ethertype behind the tag
    (_JUMP_IF_EQUAL, 3, 0, _ETHERTYPE_ARP),  # 9: ARP -> 13 accept
    (_JUMP_IF_EQUAL, 0, 3, _ETHERTYPE_IPV4),  # 10: neither -> 14 drop
    (_LOAD_BYTE, 0, 0, 18 + 9),  # 11: A = IPv4 protocol behind the tag
    (_JUMP_IF_EQUAL, 0, 1, _IPPROTO_VRRP),  # 12: VRRP -> 13 accept, else -> 14 drop
    (_RETURN, 0, 0, SNAPLEN),  # 13: accept, keeping up to SNAPLEN bytes
    (_RETURN, 0, 0, 0),  # 14: drop
]


class PortUnavailable(OSError):
    """The port (an interface) or the network namespace it should be in cannot be reached."""


class _SockFilter(ctypes.Structure):  # struct sock_filter
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):  # struct sock_fprog: the length, then a pointer (padding between on 64-bit)
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _attach_filter(sock: socket.socket) -> None:
    instructions = (_SockFilter * len(FILTER))(*(_SockFilter(*insn) for insn in FILTER))
    program = _SockFprog(len(FILTER), instructions)
    # setsockopt copies `program`, whose pointer leads to `instructions`: both are locals, alive until it returns.
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(program))


def _where(port_name: str, netns: str | None) -> str:
    return f"port {port_name!r}" + (f" in network namespace {netns!r}" if netns else "")


def _open_here(port_name: str, netns: str | None) -> socket.socket:
    # Protocol 0: the socket is hooked to no traffic until bind, so nothing unfiltered is ever queued.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        _attach_filter(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        sock.setblocking(False)
        try:
            # The name is resolved to an index in the socket's own namespace.
            sock.bind((port_name, ETH_P_ALL))
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENXIO):
                raise PortUnavailable(exc.errno, f"no {_where(port_name, netns)}") from exc
            raise
    except BaseException:
        sock.close()
        raise
    return sock


def _enter_namespace(netns: str) -> None:
    """Move the calling thread (only) into the named network namespace."""
    if not netns or "/" in netns or netns in (".", ".."):
        raise PortUnavailable(errno.EINVAL, f"not a network namespace name: {netns!r}")
    try:
        fd = os.open(os.path.join(_NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise PortUnavailable(exc.errno, f"cannot open network namespace {netns!r}: {exc.strerror}") from exc
    try:
        # Python 3.11 has no os.setns (3.12 does). setns(2) changes the calling thread's namespace only.
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise PortUnavailable(code, f"cannot enter network namespace {netns!r}: {os.strerror(code)}")
    finally:
        os.close(fd)


def open_port(port_name: str, netns: str | None = None) -> socket.socket:
    """A non-blocking, filtered raw socket on `port_name`, made in network namespace `netns` if given.

    PortUnavailable when the interface or the namespace does not exist or cannot be entered.
    """
    if netns is None:
        return _open_here(port_name, None)
    # A socket stays in the namespace it was created in. A short-lived thread enters the namespace, makes
    # the socket and ends, taking its namespace with it: the caller's threads never leave theirs.
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def make() -> None:
        try:
            _enter_namespace(netns)
            made.append(_open_here(port_name, netns))
        except BaseException as exc:  # handed to the caller's thread below
            failed.append(exc)

    thread = threading.Thread(target=make, name=f"open-port-{port_name}", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


def receive(sock: socket.socket, limit: int = 256) -> list[bytes]:
    """Up to `limit` frames already waiting, oldest first, without blocking; [] when none is.

    OSError other than "nothing waiting" propagates: ENETDOWN, ENXIO when the port went down or away.
    """
    frames: list[bytes] = []
    for _ in range(limit):
        try:
            frame, address = sock.recvfrom(SNAPLEN)
        except BlockingIOError:
            break
        # address: (interface, protocol, pkttype, hatype, MAC). The filter already drops outgoing frames;
        # checking again means a mistake in it can never turn the host's own frames into claims.
        if address[2] == socket.PACKET_OUTGOING:
            continue
        frames.append(frame)
    return frames
