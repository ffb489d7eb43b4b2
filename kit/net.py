"""Host-side networking: the model port, free local ports, a small JSON-over-HTTP client.

Used by `kit build`'s smoke test and `kit rollout`'s smoke prediction; the
tests and benchmarks take free ports from here too. (kit/runtime has its own
copies: it runs in the images, on Python 3.6, without the rest of kit.)"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from kit.errors import KitError

# The port a runtime image serves on unless the manifest or the device says otherwise
# (TF Serving's REST port; kit/runtime/serving/main.py has the same default).
DEFAULT_PORT = 8501


def device_address(host: str) -> str:
    """Where a device's ports are reached from here, given its Docker endpoint: 127.0.0.1 for
    a local unix socket, else the endpoint's host name (tcp://HOST:2375, ssh://user@HOST)."""
    if host.startswith("unix://") or host.startswith("npipe://"):
        return "127.0.0.1"
    parsed = urllib.parse.urlparse(host)
    return parsed.hostname or "127.0.0.1"


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class JsonReply:
    status: int  # the HTTP status, errors included
    body: object  # the decoded JSON, or (up to 500 characters of) the text when it is not JSON
    seconds: float  # request to full reply
    headers: dict | None = None  # the reply's headers

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and isinstance(self.body, dict)


def http_json(url: str, payload: dict | None = None, timeout: float = 60.0, error=KitError) -> JsonReply:
    """GET `url` (payload None) or POST `payload` as JSON; the reply whatever its status.

    Raises `error` (a KitError class) when the server cannot be reached or does not answer in time."""
    data = json.dumps(payload).encode() if payload is not None else None
    method = "GET" if data is None else "POST"
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method=method)
    start = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status, headers = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as e:
        raw, status, headers = e.read(), e.code, dict(e.headers or {})
    except (urllib.error.URLError, OSError) as e:
        raise error(f"{method} {url} failed: {getattr(e, 'reason', e)}") from e
    seconds = time.monotonic() - start
    text = raw.decode("utf-8", "replace")
    try:
        return JsonReply(status, json.loads(text), seconds, headers)
    except ValueError:
        return JsonReply(status, text[:500], seconds, headers)
