"""kit.net against a real local HTTP server: free ports, the JSON client, the default port."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from kit.errors import KitError, RolloutError
from kit.net import DEFAULT_PORT, free_port, http_json


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _reply(self, status, body: bytes):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/text":
            return self._reply(200, b"plain words")
        self._reply(404, json.dumps({"error": "no such thing"}).encode())

    def do_POST(self):
        data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._reply(200, json.dumps({"echo": data, "type": self.headers["Content-Type"]}).encode())


@pytest.fixture
def server():
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_post_sends_json_and_decodes_the_reply(server):
    reply = http_json(server + "/x", {"a": [1, 2]})
    assert reply.status == 200 and reply.ok and reply.body == {"echo": {"a": [1, 2]}, "type": "application/json"}
    assert reply.seconds >= 0


def test_error_statuses_are_replies_not_exceptions(server):
    reply = http_json(server + "/missing")
    assert reply.status == 404 and not reply.ok and reply.body == {"error": "no such thing"}


def test_a_body_that_is_not_json_comes_back_as_text(server):
    reply = http_json(server + "/text")
    assert reply.status == 200 and reply.body == "plain words" and not reply.ok


def test_unreachable_raises_the_callers_error_class():
    url = f"http://127.0.0.1:{free_port()}/v1/models/m"
    with pytest.raises(RolloutError, match=r"^GET http://127\.0\.0\.1:\d+/v1/models/m failed"):
        http_json(url, timeout=5, error=RolloutError)
    with pytest.raises(KitError, match="POST"):
        http_json(url, {}, timeout=5)


def test_the_schema_default_port_is_kits():
    from kit.manifest.schema import load_schema

    serve = load_schema("Model")["properties"]["serve"]["properties"]
    assert serve["port"]["default"] == DEFAULT_PORT
