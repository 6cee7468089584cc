#!/usr/bin/env python3
"""test_renewal: certificates are renewed in the background, before they
expire, with no client traffic, against a real Pebble issuing 60-second
certificates: a managed site's and an on-demand name's. The renewed
certificate is served before the first one's notAfter, and a keep-alive
connection opened before the swap keeps working after it. A failed
renewal's back-off is stored with the certificate and survives a restart,
and a certificate that expires unrenewed is logged as EXPIRED.
ACME Renewal Information (RFC 9773): with a directory that offers
renewalInfo (a small local responder in front of Pebble, which lacks it),
a one-hour certificate is renewed inside the window the CA suggests.
A stored certificate marked revoked is never served after a restart: a
new one is ordered at once. A newer valid certificate that another process
stored is installed when the renewal falls due, instead of an order.

One Pebble validates (TLS-ALPN-01) on Gatehouse's https port, so the
instances here run one after the other on one pair of ports."""

import base64
import calendar
import http.server
import json
import os
import re
import ssl
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from test_admin import admin_json  # noqa: E402
import pebble  # noqa: E402

HTTPS_PORT = h.free_port()
HTTP_PORT = h.free_port()
VALIDITY = 60
WAIT = 30

_s = {}


def pb(validity=VALIDITY):
    """The Pebble issuing |validity|-second certificates (restarted on the
    same ports when the previous test wanted another validity)."""
    if "pebble" in _s and _s.get("validity") != validity:
        _s.pop("pebble").stop()
    if "pebble" not in _s:
        _s["pebble"] = pebble.start(http_port=HTTP_PORT, tls_port=HTTPS_PORT,
                                    validity_seconds=validity)
        _s["validity"] = validity
    return _s["pebble"]


def echo():
    if "echo" not in _s:
        _s["echo"] = h.start_echo()
    return _s["echo"]


def start(storage, directory=None, ca_roots=None, validity=VALIDITY, **extra):
    prev = _s.pop("gatehouse", None)
    if prev is not None and prev.alive():
        prev.stop()
    p = pb(validity)
    conf = h.make_config(
        [h.site(["renew.test"], [echo()], cert=None),
         h.site(["*"], [echo()], cert=None, default=True)], HTTPS_PORT, HTTP_PORT, workers=2,
        acme={"directory": directory or p.directory_url, "email": "ops@example.com",
              "ca_roots": ca_roots or [p.ca_file], "challenges": ["tls-alpn-01"]},
        on_demand={"allow": ["*.od.test"], "wait_budget": "20s"},
        timeouts={"idle": "300s"}, storage=storage, **extra)
    g = h.run_config(conf, HTTPS_PORT, HTTP_PORT)
    _s["gatehouse"] = g
    return g


def ctx():
    return _s["pebble"].client_context()  # the Pebble the running gatehouse uses


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


def utc(stamp):
    """Seconds since the epoch of an RFC 3339 UTC time as Gatehouse writes
    it, in the log's timestamps (with milliseconds) and its messages."""
    whole, _, frac = stamp.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + (frac or "0"))


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
    g.wait_log(r"renew\.test: renewal scheduled at", timeout=5)
    g.wait_log(r"idle\.od\.test: renewal scheduled at", timeout=5)  # on-demand
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
    expiry = not_after(served("renew.test"))
    h.eq(g.stop(), 0, "exit status")
    # The CA's directory is gone: the renewal (due once half of the 60 s
    # lifetime is left) fails.
    dead = "https://localhost:%d/dir" % h.free_port()
    g = start(storage, directory=dead)
    g.wait_log(r"renew\.test: renewal failed \(1 in a row\)", timeout=VALIDITY)
    h.eq(g.stop(), 0, "exit status")
    meta = json.load(open(os.path.join(storage, "certs", "renew.test", "meta.json")))
    h.eq(meta.get("renewal", {}).get("failures"), 1, "failures in meta.json")
    # A restart resumes the back-off: the scheduler says it will wait for
    # the stored next attempt (before the expiry: the back-off stops short
    # of it), the first order comes no earlier, and it fails as the second
    # in a row.
    g = start(storage, directory=dead)
    m = g.wait_log(r"renew\.test: 1 renewal\(s\) failed .*; next attempt at (\S+)", timeout=10)
    h.eq(m.group(1), meta["renewal"]["next_retry"], "the next attempt is the stored one")
    next_retry = utc(m.group(1))
    h.check(next_retry < expiry, "the next attempt, %s, comes before the expiry" % m.group(1))
    m = g.wait_log(r"(?m)^(\S+) .*acme: order for renew\.test \(\d+ names\) started",
                   timeout=max(1.0, next_retry - time.time() + 10))
    h.check(utc(m.group(1)) >= next_retry, "the first order after the restart, at %s, came "
            "before the stored next attempt, %s" % (m.group(1), meta["renewal"]["next_retry"]))
    g.wait_log(r"renew\.test: renewal failed \(2 in a row\)", timeout=WAIT)
    # Expired without a successful renewal: said loudly (once an hour).
    g.wait_log(r"EXPIRED: renew\.test since \S+, not renewed \(\d+ failure",
               timeout=max(1.0, expiry - time.time() + 10))
    # The timer is armed again right after; a repeat that came at once
    # (say, the EXPIRED time not kept) would be logged before the stop,
    # which the same loop handles later.
    status = g.stop()
    h.eq(len(re.findall(r"EXPIRED: renew\.test", g.log())), 1, "EXPIRED errors")
    h.eq(status, 0, "exit status")


class AriDirectory:
    """An HTTPS front for Pebble's directory that adds "renewalInfo" and
    answers it: the first certificate asked about gets a window from
    |start_in| to |end_in| seconds after that first question, later ones a
    window an hour away. Records (time, certID) of every question."""

    def __init__(self, p, start_in, end_in):
        outer = self
        self.queries = []
        self.windows = {}
        ca = h.CA("ARI Test CA")
        self.ca_file = ca.cert
        crt, key = ca.leaf(["localhost"])

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/dir":
                    d = p.directory()
                    d["renewalInfo"] = outer.url + "/ari"
                    self.reply(200, d)
                elif self.path.startswith("/ari/"):
                    cid = self.path[len("/ari/"):]
                    now = time.time()
                    outer.queries.append((now, cid))
                    if cid not in outer.windows:
                        near = not outer.windows
                        a, b = (start_in, end_in) if near else (3600, 3700)
                        outer.windows[cid] = (now + a, now + b)
                    s, e = outer.windows[cid]
                    fmt = "%Y-%m-%dT%H:%M:%SZ"
                    self.reply(200, {"suggestedWindow": {
                        "start": time.strftime(fmt, time.gmtime(s)),
                        "end": time.strftime(fmt, time.gmtime(e))},
                        "explanationURL": "https://ca.test/why"}, [("Retry-After", "3600")])
                else:
                    self.reply(404, {})

            def reply(self, code, doc, headers=()):
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(crt, key)
        self.srv.socket = sctx.wrap_socket(self.srv.socket, server_side=True)
        self.url = "https://localhost:%d" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def ari_serial(peer):
    """The serial part of an ARI certID for |peer| (RFC 9773 4.1)."""
    n = int(peer["serialNumber"], 16)
    b = n.to_bytes((n.bit_length() + 8) // 8, "big")  # room for a sign bit
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def test_ari_window_moves_the_renewal():
    old = _s.pop("gatehouse", None)
    if old is not None and old.alive():
        old.stop()
    p = pb(3600)
    ari = AriDirectory(p, 5, 10)
    try:
        admin_port = h.free_port()
        g = start(os.path.join(h.tmpdir(), "st-ari"), directory=ari.url + "/dir",
                  ca_roots=[p.ca_file, ari.ca_file], validity=3600,
                  admin={"listen": "127.0.0.1:%d" % admin_port, "token": "t0ken-ari"})
        first = served("renew.test")
        h.check(not_after(first) - time.time() > 3000, "a one-hour certificate")
        m = g.wait_log(r"renew\.test: ARI suggests renewal between (\S+) and (\S+): "
                       r"renewal at (\S+) \(in", timeout=WAIT)
        t0, cid = ari.queries[0]
        h.eq(cid.split(".")[1], ari_serial(first), "the certID's serial part")
        h.check(len(cid.split(".")[0]) > 0, "the certID's key identifier part")
        start_s, end_s = ari.windows[cid]
        when = calendar.timegm(time.strptime(m.group(3), "%Y-%m-%dT%H:%M:%SZ"))
        h.check(int(start_s) <= when <= int(end_s) + 1,
                "renewal time %s in the window %s..%s" % (m.group(3), m.group(1), m.group(2)))
        # The admin API (and the dashboard) say when and why.
        doc = admin_json(admin_port, "GET", "/certs/renew.test", token="t0ken-ari")
        h.eq((doc["renewal_source"], doc["renewal_time"], doc["ari_window"]),
             ("ari", m.group(3), {"start": m.group(1), "end": m.group(2)}), "/certs says ARI")
        g.wait_log(r"renew\.test: renewed: certificate", timeout=end_s - time.time() + 20)
        h.check(time.time() < t0 + 60, "renewed within a minute, not at 2/3 of an hour")
        new = h.wait_until(lambda: (lambda c: c if c["serialNumber"] != first["serialNumber"]
                                    else None)(served("renew.test")), WAIT,
                           "the renewed certificate served", interval=0.2)
        h.check(new is not None, "renewed certificate")
        # The new certificate is asked about too, and its window is far away.
        h.wait_until(lambda: len(set(c for _, c in ari.queries)) >= 2, WAIT,
                     "an ARI question about the new certificate")
        h.eq(g.stop(), 0, "exit status")
    finally:
        ari.close()


def test_revoked_stored_certificate_is_not_served_at_start():
    storage = os.path.join(h.tmpdir(), "st-revoked")
    g = start(storage)
    first = served("renew.test")
    h.eq(g.stop(), 0, "exit status")
    path = os.path.realpath(os.path.join(storage, "certs", "renew.test", "meta.json"))
    meta = json.load(open(path))
    meta["renewal"] = {"failures": 0, "next_retry": "1970-01-01T00:00:00Z", "last_error": "",
                       "revoked": True}
    os.chmod(path, 0o644)
    with open(path, "w") as f:
        json.dump(meta, f)
    g = start(storage)
    g.wait_log(r"renew\.test: the stored certificate has expired or was revoked: renewing",
               timeout=WAIT)
    now = served("renew.test")
    h.check(now["serialNumber"] != first["serialNumber"], "the revoked certificate was served")
    g.wait_log(r"renew\.test: renewed: certificate", timeout=WAIT)
    h.eq(g.stop(), 0, "exit status")


def served_der(name):
    """The DER of the certificate served for SNI |name| (unverified)."""
    c = h.Conn.tls(HTTPS_PORT, name, ctx=h.client_context(verify=False), timeout=10)
    try:
        return c.sock.getpeercert(binary_form=True)
    finally:
        c.close()


def store_version(storage, name, crt, key):
    """Publishes (crt, key) as a new version of |name| the way the storage
    does: a complete version directory, then `current` renamed over."""
    d = os.path.join(storage, "certs", name)
    v = "v-%s-%s" % (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), os.urandom(4).hex())
    os.mkdir(os.path.join(d, v), 0o700)
    for src, dst, mode in ((crt, "cert.pem", 0o644), (key, "key.pem", 0o600)):
        with open(src, "rb") as f:
            data = f.read()
        fd = os.open(os.path.join(d, v, dst), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.write(fd, data)
        os.close(fd)
    with open(os.path.join(d, v, "meta.json"), "w") as f:
        json.dump({"names": [name]}, f)
    tmp = os.path.join(d, ".tmp-%d-link" % os.getpid())
    os.symlink(v, tmp)
    os.replace(tmp, os.path.join(d, "current"))


def test_newer_stored_certificate_is_installed_instead_of_ordering():
    storage = os.path.join(h.tmpdir(), "st-newer")
    g = start(storage)
    first = served("renew.test")
    h.eq(g.stop(), 0, "exit status")
    # No CA now: only the storage can bring a newer certificate.
    g = start(storage, directory="https://localhost:%d/dir" % h.free_port())
    h.wait_until(lambda: served_der("renew.test"), WAIT, "the stored certificate served")
    other = h.CA("Another Writer CA")
    crt, key = other.leaf(["renew.test"])
    store_version(storage, "renew.test", crt, key)
    with open(crt) as f:
        want = ssl.PEM_cert_to_DER_cert(f.read())
    g.wait_log(r"renew\.test: a newer stored certificate installed",
               timeout=max(1.0, not_after(first) - time.time()))
    h.eq(served_der("renew.test") == want, True, "the newer stored certificate is served")
    h.not_contains(g.log(), "renew.test: renewing", "log")
    h.eq(g.stop(), 0, "exit status")


if __name__ == "__main__":
    h.main()
