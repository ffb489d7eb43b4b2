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
its own instead (Linux 4.9 to 4.19 then keep it out of the shared one).

gRPC's port is grpcio's socket, not a Python one: steer_port finds this process's listening sockets
on a port through /proc (their inodes in /proc/self/net/tcp{,6}, the descriptors that point at them
in /proc/self/fd) and attaches the same program through a duplicate of each descriptor (a dup is
the same socket, so the program lands on the same group)."""

import ctypes
import logging
import os
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


TCP_LISTEN = "0A"  # the state column of /proc/net/tcp for LISTEN (include/net/tcp_states.h)


def _listening_inodes(port):
    """Inodes of the sockets listening on `port` in this process's network namespace."""
    inodes = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                next(f)  # the header line
                for line in f:
                    fields = line.split()
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    if local_port == port and fields[3] == TCP_LISTEN:
                        inodes.add(fields[9])
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return inodes


def listening_sockets(port):
    """Duplicates of this process's own sockets listening on `port` (the caller closes them)."""
    inodes = _listening_inodes(port)
    found = []
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return found
    matching = []
    for name in fds:  # every readlink before any dup: a dup may take the number listdir's own fd had
        try:
            target = os.readlink("/proc/self/fd/" + name)
        except OSError:
            continue  # closed meanwhile (listdir's own descriptor among them)
        if target.startswith("socket:[") and target[8:-1] in inodes:
            matching.append(int(name))
    for fd in matching:
        try:
            found.append(socket.socket(fileno=os.dup(fd)))  # family and type read from the socket
        except OSError:
            continue
    return found


def steer_port(port, index=NEWEST):
    """steer_to for every socket this process listens on at `port` (gRPC's, owned by grpcio).
    True when there was at least one and the kernel took the program on each."""
    sockets = listening_sockets(port)
    if not sockets:
        log.warning("cannot steer port %d's new connections to this server: no listening socket of this "
                    "process found in /proc", port)
        return False
    try:
        return all([steer_to(sock, index) for sock in sockets])
    finally:
        for sock in sockets:
            sock.close()
