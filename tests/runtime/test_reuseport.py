"""kit.runtime.serving.reuseport on the image's Python (3.6 on the twin): steer_port finds this
process's listening sockets on a port through /proc, as it must for grpcio's socket, and the
program it attaches sends every new connection to the second socket of the group."""

import socket

import pytest

from kit.runtime.serving import reuseport


@pytest.fixture
def shared():
    """Makes SO_REUSEPORT sockets on 127.0.0.1 (port 0: a free one), closed after the test."""
    made = []

    def make(port=0, listen=True):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        if listen:
            sock.listen(64)
        made.append(sock)
        return sock

    yield make
    for sock in made:
        sock.close()


def accepted_by(old, new, n=40):
    """Open n connections to the shared port; how many each listening socket accepted."""
    clients = [socket.create_connection(old.getsockname()) for _ in range(n)]
    counts = {}
    for name, sock in (("old", old), ("new", new)):
        sock.setblocking(False)
        counts[name] = 0
        while True:
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            conn.close()
            counts[name] += 1
    for client in clients:
        client.close()
    return counts


def test_listening_sockets_finds_only_this_ports_listeners(shared):
    a = shared()
    port = a.getsockname()[1]
    bound_only = shared(port, listen=False)  # bound, not listening: not a listener yet
    found = reuseport.listening_sockets(port)
    assert len(found) == 1 and found[0].getsockname() == a.getsockname()
    for sock in found:
        sock.close()
    assert a.fileno() >= 0  # the dup was closed, not the socket
    bound_only.listen(64)
    found = reuseport.listening_sockets(port)
    assert len(found) == 2
    for sock in found:
        sock.close()


def test_steer_port_sends_every_new_connection_to_the_newest_listener(shared):
    old = shared()
    port = old.getsockname()[1]
    new = shared(port)
    before = accepted_by(old, new)
    assert before["old"] > 0 and before["new"] > 0  # the kernel's hash spreads them
    assert reuseport.steer_port(port)
    assert accepted_by(old, new) == {"old": 0, "new": 40}


def test_steer_port_on_a_port_nobody_here_listens_on_says_no(shared):
    probe = shared()
    port = probe.getsockname()[1]
    probe.close()
    assert reuseport.steer_port(port) is False
