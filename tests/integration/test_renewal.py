#!/usr/bin/env python3
"""test_renewal: certificates are renewed in the background, before they
expire, with no client traffic, against a real Pebble issuing 60-second
certificates: a managed site's and an on-demand name's. The renewed
certificate is served before the first one's notAfter, and a keep-alive
connection opened before the swap keeps working after it. A failed
renewal's back-off is stored with the certificate and survives a restart.

One Pebble validates (TLS-ALPN-01) on Gatehouse's https port, so the
instances here run one after the other on one pair of ports."""

import json
import os
import re
import ssl
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import pebble  # noqa: E402

HTTPS_PORT = h.free_port()
HTTP_PORT = h.free_port()
VALIDITY = 60
WAIT = 30

_s = {}


def pb():
    if "pebble" not in _s:
        _s["pebble"] = pebble.start(http_port=HTTP_PORT, tls_port=HTTPS_PORT,
                                    validity_seconds=VALIDITY)
    return _s["pebble"]


def echo():
    if "echo" not in _s:
        _s["echo"] = h.start_echo()
    return _s["echo"]


def start(storage, directory=None, ca_roots=None):
    prev = _s.pop("gatehouse", None)
    if prev is not None and prev.alive():
        prev.stop()
    p = pb()
    conf = h.make_config(
        [h.site(["renew.test"], [echo()], cert=None),
         h.site(["*"], [echo()], cert=None, default=True)], HTTPS_PORT, HTTP_PORT, workers=2,
        acme={"directory": directory or p.directory_url, "email": "ops@example.com",
              "ca_roots": ca_roots or [p.ca_file], "challenges": ["tls-alpn-01"]},
        on_demand={"allow": ["*.od.test"], "wait_budget": "20s"},
        timeouts={"idle": "300s"}, storage=storage)
    name = h._next_name("gatehouse")
    cwd = h.subdir(name)
    path = os.path.join(cwd, "gatehouse.json")
    with open(path, "w") as f:
        json.dump(conf, f, indent=2)
    g = h.Gatehouse([h.GATEHOUSE_BIN, "run", "-c", path], name, cwd, HTTPS_PORT, HTTP_PORT,
                    config_path=path, config=conf)
    _s["gatehouse"] = g
    return g


def ctx():
    if _s.get("ctx_for") is not pb():
        _s["ctx"] = h.client_context(cafile=pb().write_roots())
        _s["ctx_for"] = pb()
    return _s["ctx"]


def served(name, timeout=WAIT):
    """Waits for a verified handshake with SNI |name| whose request reaches
    the backend; returns the peer certificate (dict)."""
    def attempt():
        try:
            c = h.Conn.tls(HTTPS_PORT, name, ctx=ctx(), timeout=10)
        except (ssl.SSLError, OSError):
            return None
        try:
            peer = c.sock.getpeercert()
            h.eq(c.request("GET", "/r", name).status, 200, "status for %s" % name)
            return peer
        finally:
            c.close()
    return h.wait_until(attempt, timeout, "a verified handshake for %s" % name, interval=0.2)


def not_after(peer):
    return ssl.cert_time_to_seconds(peer["notAfter"])


def test_background_renewal_before_expiry_without_traffic():
    storage = os.path.join(h.tmpdir(), "st-renew")
    g = start(storage)
    first = {n: served(n) for n in ("renew.test", "idle.od.test")}
    for n, peer in first.items():
        h.check(not_after(peer) - time.time() <= VALIDITY + 5, "%s: a short certificate" % n)
    # A keep-alive connection made before the renewal.
    kept = h.Conn.tls(HTTPS_PORT, "renew.test", ctx=ctx(), timeout=10)
    h.eq(kept.request("GET", "/before", "renew.test").status, 200, "kept connection, before")
    old_serial = kept.sock.getpeercert()["serialNumber"]
    h.eq(old_serial, first["renew.test"]["serialNumber"], "kept connection's certificate")
    h.check(re.search(r"renew\.test: renewal scheduled at", g.log()), "renewal scheduled")
    h.check(re.search(r"idle\.od\.test: renewal scheduled at", g.log()),
            "on-demand renewal scheduled")
    deadline = min(not_after(p) for p in first.values())
    # No client traffic: only the log is watched.
    for n in first:
        g.wait_log(r"%s: renewed: certificate" % re.escape(n),
                   timeout=max(1.0, deadline - time.time()))
    for n, peer in first.items():
        def changed(n=n, peer=peer):
            now = served(n)
            return now if now["serialNumber"] != peer["serialNumber"] else None
        new = h.wait_until(changed, max(1.0, deadline - time.time()),
                           "a new certificate served for %s" % n, interval=0.2)
        h.check(time.time() < not_after(peer), "%s: renewed before the old one expired" % n)
        h.check(not_after(new) > not_after(peer), "%s: the new one lasts longer" % n)
    # The connection made before the swap still works.
    h.eq(kept.request("GET", "/after", "renew.test").status, 200, "kept connection, after")
    kept.close()
    h.not_contains(g.log(), "EXPIRED", "log")
    h.eq(g.stop(), 0, "exit status")


def test_backoff_survives_a_restart():
    storage = os.path.join(h.tmpdir(), "st-backoff")
    g = start(storage)
    served("renew.test")
    h.eq(g.stop(), 0, "exit status")
    # The CA's directory is gone: the renewal (due once half of the 60 s
    # lifetime is left) fails.
    dead = "https://localhost:%d/dir" % h.free_port()
    g = start(storage, directory=dead)
    g.wait_log(r"renew\.test: renewal failed \(1 in a row\)", timeout=VALIDITY)
    h.eq(g.stop(), 0, "exit status")
    meta = json.load(open(os.path.join(storage, "certs", "renew.test", "meta.json")))
    h.eq(meta.get("renewal", {}).get("failures"), 1, "failures in meta.json")
    # A restart resumes the back-off: no order before next_retry.
    g = start(storage, directory=dead)
    g.wait_log(r"renew\.test: 1 renewal\(s\) failed .*; next attempt at", timeout=10)
    time.sleep(2)
    h.not_contains(g.log(), "renew.test: renewing", "log after the restart")
    h.eq(g.stop(), 0, "exit status")


if __name__ == "__main__":
    h.main()
