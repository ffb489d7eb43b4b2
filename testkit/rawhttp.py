"""HTTP/1.1 on raw sockets, and a process's resources from /proc: what hostile-traffic tests and benchmarks use.

http.client refuses to send the malformed requests these tests are about and
hides how the server closed the connection, so these speak bytes:

- connect, exchange, read_all, post_head: send exactly these bytes, read
  until the server closes (or a timeout);
- parse_reply: status, headers and body of the first response in a reply;
- RawClient: a minimal keep-alive client, one sendall per request, far
  cheaper per request than http.client (benchmark clients share the
  server's cores);
- proc_status, cpu_seconds: a server's RSS, threads and CPU time.
"""

import json
import os
import socket


def connect(port, timeout=10, host="127.0.0.1"):
    return socket.create_connection((host, port), timeout=timeout)


def read_all(sock):
    """Everything the server sends until it closes the connection (or the socket's timeout passes)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(port, data, timeout=10):
    """Send `data` on a new connection; return all the server answered before closing it."""
    with connect(port, timeout) as s:
        s.sendall(data)
        return read_all(s)


def post_head(path, length, extra=b""):
    """The head of a JSON POST announcing `length` body bytes (`extra`: more header lines, CRLF-terminated)."""
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n"
            % (path.encode(), extra, length))


def parse_reply(reply):
    """(status, {lower-case name: value}, body) of the first response in `reply`; the body by Content-Length."""
    head, _, rest = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(rest)))
    return status, headers, rest[:length]


def json_error(reply):
    """(status, the JSON body's "error", headers) of a reply that must be a kit error response."""
    status, headers, body = parse_reply(reply)
    assert headers.get("content-type") == "application/json", reply[:300]
    return status, json.loads(body.decode("utf-8"))["error"], headers


class RawClient(object):
    """A keep-alive client on one socket: one sendall per request, the response read by Content-Length."""

    def __init__(self, port, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""

    def post(self, path, body, headers):
        head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n%s\r\n" % (
            path, len(body), "".join("%s: %s\r\n" % kv for kv in headers.items()))
        self.sock.sendall(head.encode("latin-1") + body)
        data = self.pending
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = self.sock.recv(max(65536, length - len(rest)))
            if not chunk:
                raise ConnectionError("server closed the connection")
            rest += chunk
        self.pending = rest[length:]
        if status != 200:
            raise RuntimeError("HTTP %d: %s" % (status, rest[:300]))
        return rest[:length]

    def close(self):
        self.sock.close()


def proc_status(pid):
    """{"rss": bytes, "threads": count} of a live process, from /proc/PID/status."""
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return {"rss": int(fields["VmRSS"].split()[0]) * 1024, "threads": int(fields["Threads"])}


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / float(os.sysconf("SC_CLK_TCK"))
