"""Docker HEALTHCHECK probe for the model server (stdlib only, no numpy, no TF).

    python3 -m kit.runtime.serving.healthcheck [--port N] [--host H] [--timeout S] [--slot SLOT]
    python3 -m kit.runtime.serving.main --probe      (the same probe)

Exits 0 when GET /v2/health/ready answers 200 (model loaded and warmed up
at every built batch size), 1 otherwise, with the reason on stderr. Port,
host and slot default to KIT_PORT, KIT_HOST and KIT_SLOT (a wildcard host
such as 0.0.0.0 is probed on 127.0.0.1).

With a slot (KIT_SLOT, which the server also sends back as its Kit-Slot
header), only this server's own answer counts. A start-first update runs the
new server beside the old one on one port (SO_REUSEPORT), and the kernel
hands each new connection to either of them: the old one's 200 must not make
the new container healthy. So the probe opens up to 8 new connections and
judges the first reply whose Kit-Slot is its slot (200: exit 0, else 1). If
all 8 came from other slots it exits 1 naming them; a connection error exits
1 at once. (8 connections all miss a listening server 1 time in 256 when two
share the port; Docker probes again one interval later.)
"""

import argparse
import http.client as http_client
import os
import sys
import time

DEFAULT_PORT = 8501
READY_PATH = "/v2/health/ready"
SLOT_TRIES = 8  # new connections per probe when a slot is given
NO_SLOT = "(no Kit-Slot header)"


def _ask(host, port, timeout, path):
    """(status, Kit-Slot header or None) of one GET on a new connection."""
    conn = http_client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Kit-Slot")
    finally:
        conn.close()


def check(host, port, timeout=3.0, slot=None, path=READY_PATH, tries=SLOT_TRIES):
    """None when the server (with `slot`: the server of that slot) answers `path` with
    200; otherwise why not, as one line."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    where = "%s:%s%s" % (host, port, path)
    others = []
    # `timeout` bounds the whole probe, every try included: Docker kills a probe that overruns
    # its own timeout and counts it as a failure without our reason.
    deadline = time.monotonic() + timeout
    out_of_time = "%s is not ready for slot %s: no reply from it within %gs (answered: %%s)" % (where, slot, timeout)
    for _ in range(tries if slot else 1):
        left = deadline - time.monotonic()
        if left <= 0:
            return out_of_time % ", ".join(others)
        try:
            status, answered = _ask(host, port, left, path)
        except (OSError, http_client.HTTPException, ValueError) as e:
            if others and time.monotonic() >= deadline - 0.05:  # the probe's time ran out mid-try
                return out_of_time % ", ".join(others)
            return "%s is not ready: %s" % (where, str(e) or type(e).__name__)
        if not slot:
            return None if status == 200 else "%s is not ready: HTTP %d" % (where, status)
        if answered == slot:
            return None if status == 200 else "%s is not ready: slot %s answered HTTP %d" % (where, slot, status)
        if (answered or NO_SLOT) not in others:
            others.append(answered or NO_SLOT)
    return "%s is not ready for slot %s: %d replies, all from another server: %s" % (
        where, slot, tries, ", ".join(others))


def probe(host, port, timeout=3.0, path=READY_PATH, slot=None):
    """True when the server (with `slot`: that slot's server) answers `path` with 200."""
    return check(host, port, timeout, slot=slot, path=path) is None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m kit.runtime.serving.healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("KIT_PORT") or DEFAULT_PORT))
    parser.add_argument("--host", default=os.environ.get("KIT_HOST") or "127.0.0.1")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--slot", default=os.environ.get("KIT_SLOT") or "",
                        help="count only replies whose Kit-Slot header is this (default: KIT_SLOT)")
    args, _ = parser.parse_known_args(argv)
    reason = check(args.host, args.port, args.timeout, slot=args.slot or None)
    if reason:
        sys.stderr.write("kit healthcheck: %s\n" % reason)
    return 1 if reason else 0


if __name__ == "__main__":
    sys.exit(main())
