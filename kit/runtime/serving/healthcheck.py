"""Docker HEALTHCHECK probe for the model server (stdlib only, no numpy, no TF).

    python3 -m kit.runtime.serving.healthcheck [--port N] [--host H] [--timeout S]
    python3 -m kit.runtime.serving.main --probe      (the same probe)

Exits 0 when GET /v2/health/ready answers 200 (model loaded and warmed up
at every built batch size), 1 otherwise. Port and host default to KIT_PORT
and KIT_HOST (a wildcard host such as 0.0.0.0 is probed on 127.0.0.1).
"""

import argparse
import http.client as http_client
import os
import sys

DEFAULT_PORT = 8501


def probe(host, port, timeout=3.0, path="/v2/health/ready"):
    """True when the server answers `path` with 200."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    try:
        conn = http_client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status == 200
        finally:
            conn.close()
    except (OSError, http_client.HTTPException, ValueError):
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m kit.runtime.serving.healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("KIT_PORT") or DEFAULT_PORT))
    parser.add_argument("--host", default=os.environ.get("KIT_HOST") or "127.0.0.1")
    parser.add_argument("--timeout", type=float, default=3.0)
    args, _ = parser.parse_known_args(argv)
    ok = probe(args.host, args.port, args.timeout)
    if not ok:
        sys.stderr.write("kit healthcheck: %s:%d/v2/health/ready is not ready\n" % (args.host, args.port))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
