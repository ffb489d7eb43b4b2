"""Start-first updates without a reset connection: steer a shared port's new connections to the
server that just became ready.

Two servers share a port with SO_REUSEPORT (KIT_REUSE_PORT=1). Left alone, the kernel hashes each
new connection to one of them, so until the old server closes its listening socket connections keep
queueing in its backlog, and those that arrive between its last accept() and close() are reset.
Linux 5.14's net.ipv4.tcp_migrate_req would move them; a Jetson's L4T R32 runs kernel 4.9 and kit
changes no host sysctl. SO_ATTACH_REUSEPORT_CBPF (Linux 4.5+) does the job there: a classic BPF
program attached through any listening member of the group returns the index of the socket that
gets each new connection (net/core/sock_reuseport.c). Sockets are indexed in the order they started
listening; closing one moves the last into its place; an index out of range falls back to the
kernel's own choice. The new server, once ready and listening, attaches `ret #1`: beside the old
one (index 0) it is index 1 and gets every new connection, so the old server's backlog stops
growing and it closes on SIGTERM with nothing queued. Alone (first start, or after the old one
closed and it moved to index 0) the index is out of range and nothing changes.

The program must be attached after listen(): on an unhashed socket the kernel makes it a group of
its own instead (Linux 4.9 to 4.19 then keep it out of the shared one)."""

import ctypes
import logging
import socket

log = logging.getLogger("kit.serve")

SO_ATTACH_REUSEPORT_CBPF = 51  # SOL_SOCKET option, <asm-generic/socket.h>, Linux 4.5+
BPF_RET_K = 0x06  # BPF_RET | BPF_K: return the constant k
NEWEST = 1  # the index of the second socket of the group: a server started beside the old one


class SockFilter(ctypes.Structure):
    """struct sock_filter, <linux/filter.h>: one classic BPF instruction."""
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    """struct sock_fprog: the program's length and a pointer to its instructions."""
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def steer_to(sock, index=NEWEST):
    """Attach `ret #index` to the SO_REUSEPORT group of the listening `sock`. Returns True when the
    kernel took it; False (logged) where it cannot (not Linux, a kernel before 4.5)."""
    program = (SockFilter * 1)(SockFilter(BPF_RET_K, 0, 0, index))
    fprog = SockFprog(1, ctypes.cast(program, ctypes.POINTER(SockFilter)))
    # setsockopt copies the struct; `program`, which it points to, lives until this call returns.
    raw = ctypes.string_at(ctypes.addressof(fprog), ctypes.sizeof(fprog))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, raw)
    except OSError as e:
        log.warning("cannot steer the shared port's new connections to this server (SO_ATTACH_REUSEPORT_CBPF): "
                    "%s; an update beside an old server may see connections reset as it closes", e)
        return False
    return True
