#!/usr/bin/env python3
"""test_reload: a reload (SIGHUP) applies every setting of the certificate
plane, against a real Pebble: handshakes paused for on-demand names while
the reload happens complete with their certificates; a reload that turns
on-demand off fails the paused ones at once and orders nothing; a narrowed
allow list refuses at once; a site added by a reload is ordered at once
and a removed one stops being managed; a changed challenge list is used by
the next order. And the on-demand defaults: with an approving `ask`, a
burst of 50 names under one registered domain gets 50 certificates;
without `ask`, the per-client-IP default (20/1h) limits it, and the admin
API lists the refused names with why.

One Pebble validates on Gatehouse's ports, so the instances here run one
after the other on one pair of ports."""

import http.client
import http.server
import json
import os
import re
import ssl
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import pebble  # noqa: E402

HTTPS_PORT = h.free_port()
HTTP_PORT = h.free_port()
ADMIN_PORT = h.free_port()
TOKEN = "reload-test-token"
WAIT = 60

_s = {}


def pb():
    if "pebble" not in _s:
        _s["pebble"] = pebble.start(http_port=HTTP_PORT, tls_port=HTTPS_PORT)
    return _s["pebble"]


def echo():
    if "echo" not in _s:
        _s["echo"] = h.start_echo()
    return _s["echo"]


class GatedAsk:
    """An `ask` endpoint that answers only once the gate is open (so
    handshakes stay paused as long as the test wants), allowing names that
    match |allow| (a regex)."""

    def __init__(self, allow=r".*"):
        outer = self
        self.allow = re.compile(allow)
        self.gate = threading.Event()
        self.queries = []
        self.lock = threading.Lock()

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                dom = q.get("domain", [""])[0]
                with outer.lock:
                    outer.queries.append(dom)
                outer.gate.wait(WAIT)
                code = 200 if outer.allow.fullmatch(dom) else 403
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the asker was stopped meanwhile

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.url = "http://127.0.0.1:%d/check" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.gate.set()
        self.srv.shutdown()
        self.srv.server_close()


def base_config(storage, sites=None, on_demand=None, challenges=("tls-alpn-01",)):
    p = pb()
    extra = {"acme": {"directory": p.directory_url, "email": "ops@example.com",
                      "ca_roots": [p.ca_file], "challenges": list(challenges)},
             "storage": storage,
             "admin": {"listen": "127.0.0.1:%d" % ADMIN_PORT, "token": TOKEN},
             "log": {"level": "debug"}}
    if on_demand is not None:
        extra["on_demand"] = on_demand
    if sites is None:
        sites = [h.site(["*"], [echo()], cert=None, default=True)]
    return h.make_config(sites, HTTPS_PORT, HTTP_PORT, workers=2, **extra)


def start(conf):
    prev = _s.pop("gatehouse", None)
    if prev is not None and prev.alive():
        prev.stop()
    g = h.run_config(conf, HTTPS_PORT, HTTP_PORT)
    _s["gatehouse"] = g
    h.wait_until(lambda: h.port_accepts(ADMIN_PORT), 10, "the admin port accepts")
    return g


def reload(g, conf):
    """Writes |conf| and sends SIGHUP; waits until it is applied."""
    off = g.log_size()
    g.write_config(conf)
    g.reload()
    g.wait_log(r"configuration reloaded", timeout=10, since=off)
    return off


def admin_get(path):
    c = http.client.HTTPConnection("127.0.0.1", ADMIN_PORT, timeout=10)
    try:
        c.request("GET", path, headers={"Host": "127.0.0.1:%d" % ADMIN_PORT,
                                         "Authorization": "Bearer " + TOKEN})
        r = c.getresponse()
        body = r.read()
        h.eq(r.status, 200, "GET %s (%r)" % (path, body[:200]))
        return json.loads(body)
    finally:
        c.close()


def get(name, timeout=WAIT):
    """One HTTPS request with SNI |name|, verified against Pebble's roots:
    (SANs of the certificate served, status)."""
    c = h.Conn.tls(HTTPS_PORT, name, ctx=pb().client_context(), timeout=timeout)
    try:
        peer = c.sock.getpeercert()
        r = c.request("GET", "/r", name)
        return sorted(v for k, v in peer.get("subjectAltName", ()) if k == "DNS"), r.status
    finally:
        c.close()


def handshake_fails(name, timeout=WAIT):
    """Whether a verified handshake for |name| fails (or gets another
    name's certificate)."""
    try:
        sans, _ = get(name, timeout)
    except (ssl.SSLError, OSError):
        return True
    return name not in sans


def orders(g, name, since=0, want=None):
    """How many orders for |name| the log shows (from byte |since|); with
    |want|, first waits until it shows that many (the log is written by a
    thread of its own, a little later)."""
    def n():
        return len(re.findall(r"order for %s \(\d+ names\) started" % re.escape(name),
                              g.log()[since:]))
    if want:
        h.wait_until(lambda: n() >= want, 5, "%d order(s) for %s in the log" % (want, name))
    return n()


def in_threads(fn, args):
    """Runs fn(arg) for each arg in its own thread; returns {arg: result or
    the exception's repr}."""
    out = {}

    def run(a):
        try:
            out[a] = fn(a)
        except Exception as e:  # noqa: BLE001
            out[a] = repr(e)
    ts = [threading.Thread(target=run, args=(a,)) for a in args]
    for t in ts:
        t.start()
    return ts, out


def join(ts):
    for t in ts:
        t.join(WAIT + 30)


def paused(fn, names):
    """Starts fn(name) for each name in a thread of its own and waits until
    every one's handshake is paused; returns in_threads' (threads, results)."""
    ts, out = in_threads(fn, names)
    h.wait_until(lambda: admin_get("/ondemand")["paused_handshakes"] == len(names), 20,
                 "%d paused handshakes" % len(names))
    return ts, out


def each_got_its_certificate(out, names, what):
    """Checks that get() answered 200 for every name, with a certificate
    for exactly that name."""
    bad = {n: out.get(n) for n in names if out.get(n) != ([n], 200)}
    h.check(not bad, "%s: %d of %d failed: %r" % (what, len(bad), len(names),
                                                    dict(list(bad.items())[:3])))


# --- reloads -------------------------------------------------------------------------


def test_reload_while_20_handshakes_are_paused():
    """20 first handshakes for 20 names wait on ask; a reload changes the
    on-demand settings (so the control thread restarts); then ask answers.
    Every handshake completes with its own certificate, in the generation
    it started in."""
    ask = GatedAsk()
    try:
        od = {"ask": ask.url, "ask_timeout": "50s", "wait_budget": "50s"}
        conf = base_config(os.path.join(h.tmpdir(), "st-paused"), on_demand=od)
        g = start(conf)
        names = ["p%d.paused.test" % i for i in range(20)]
        ts, out = paused(get, names)
        new = json.loads(json.dumps(conf))
        new["on_demand"]["negative_ttl"] = "1m"
        off = reload(g, new)
        g.wait_log(r"certificate plane restarted", timeout=10, since=off)
        h.eq(admin_get("/ondemand")["paused_handshakes"], 20, "still paused after the reload")
        ask.gate.set()
        join(ts)
        each_got_its_certificate(out, names, "handshakes after the reload")
        for n in names:
            h.eq(orders(g, n, want=1), 1, "orders for %s" % n)
        h.eq(g.stop(), 0, "exit status")
    finally:
        ask.close()


def test_reload_while_orders_are_in_flight():
    """Reloads that restart the certificate plane while 12 on-demand orders
    are under way: the cancelled ones are ordered again by the next
    thread, and every handshake gets its certificate."""
    ask = GatedAsk()
    ask.gate.set()
    try:
        conf = base_config(os.path.join(h.tmpdir(), "st-inflight"),
                           on_demand={"ask": ask.url, "wait_budget": "50s"})
        g = start(conf)
        names = ["f%d.inflight.test" % i for i in range(12)]
        ts, out = in_threads(get, names)
        g.wait_log(r"order for f\d+\.inflight\.test \(1 names\) started", timeout=20)
        for ttl in ("2m", "3m"):
            new = json.loads(json.dumps(conf))
            new["on_demand"]["negative_ttl"] = ttl
            reload(g, new)
        join(ts)
        each_got_its_certificate(out, names, "handshakes")
        h.eq(g.stop(), 0, "exit status")
    finally:
        ask.close()


def test_reload_turning_on_demand_off():
    """Paused handshakes fail at once (not after the wait budget), new names
    are refused at once, and nothing is ordered."""
    ask = GatedAsk()
    try:
        od = {"ask": ask.url, "ask_timeout": "50s", "wait_budget": "50s"}
        conf = base_config(os.path.join(h.tmpdir(), "st-off"), on_demand=od)
        g = start(conf)
        names = ["o%d.off.test" % i for i in range(3)]
        ts, out = paused(handshake_fails, names)
        new = json.loads(json.dumps(conf))
        del new["on_demand"]
        # "*" needs on_demand or a certificate of its own.
        new["sites"] = [h.site(["*"], [echo()], default=True)]
        t0 = time.monotonic()
        reload(g, new)
        join(ts)
        h.check(time.monotonic() - t0 < 20, "paused handshakes took %.1fs to fail"
                % (time.monotonic() - t0))
        h.eq(out, {n: True for n in names}, "paused handshakes after on-demand was turned off")
        h.check(handshake_fails("new.off.test", timeout=10), "a new name after the reload")
        h.eq(admin_get("/ondemand")["enabled"], False, "GET /ondemand enabled")
        ask.gate.set()
        for n in names + ["new.off.test"]:
            h.eq(orders(g, n), 0, "orders for %s" % n)
        h.eq(g.stop(), 0, "exit status")
    finally:
        ask.close()


def test_reload_narrowing_allow():
    conf = base_config(os.path.join(h.tmpdir(), "st-narrow"),
                       on_demand={"allow": ["*.a.narrow.test", "*.b.narrow.test"]})
    g = start(conf)
    h.eq(get("x.b.narrow.test"), (["x.b.narrow.test"], 200), "x.b before narrowing")
    new = json.loads(json.dumps(conf))
    new["on_demand"]["allow"] = ["*.a.narrow.test"]
    off = reload(g, new)
    h.check(handshake_fails("y.b.narrow.test", timeout=10), "y.b after narrowing")
    h.eq(orders(g, "y.b.narrow.test"), 0, "orders for y.b.narrow.test")
    h.eq(get("y.a.narrow.test"), (["y.a.narrow.test"], 200), "y.a after narrowing")
    refusals = admin_get("/ondemand")["recent_refusals"]
    h.check(any(r["name"] == "y.b.narrow.test" and "allow" in r["reason"] for r in refusals),
            "y.b.narrow.test among the refusals: %r" % refusals)
    # Widened again: the refusal is not remembered against it.
    reload(g, conf)
    h.eq(get("y.b.narrow.test"), (["y.b.narrow.test"], 200), "y.b after widening")
    del off
    h.eq(g.stop(), 0, "exit status")


def test_sites_added_and_removed_by_reload():
    """A managed site added by a reload is ordered at once; a removed one
    is no longer managed; a changed challenge list is used by the next
    order."""
    storage = os.path.join(h.tmpdir(), "st-sites")
    s1 = h.site(["one.sites.test"], [echo()], cert=None)
    conf = base_config(storage, sites=[s1])
    g = start(conf)
    h.wait_until(lambda: not handshake_fails("one.sites.test", timeout=5), WAIT,
                 "one.sites.test's certificate")
    h.check(handshake_fails("two.sites.test", timeout=5), "two.sites.test before the reload")
    new = json.loads(json.dumps(conf))
    new["sites"].append(h.site(["two.sites.test"], [echo()], cert=None))
    new["acme"]["challenges"] = ["http-01"]
    off = reload(g, new)
    h.wait_until(lambda: not handshake_fails("two.sites.test", timeout=5), WAIT,
                 "two.sites.test's certificate after the reload")
    h.eq(get("two.sites.test"), (["two.sites.test"], 200), "two.sites.test")
    g.wait_log(r"control thread: 2 managed site\(s\)", timeout=5, since=off)
    g.wait_log(r": http-01 for ", timeout=5, since=off)  # the order after the reload
    h.eq(orders(g, "one.sites.test", since=off), 0, "one.sites.test is not ordered again")
    # Removed: the next control thread manages only the site left.
    new2 = json.loads(json.dumps(new))
    new2["sites"] = [new2["sites"][1]]
    off = reload(g, new2)
    g.wait_log(r"control thread: 1 managed site\(s\)", timeout=10, since=off)
    h.eq(get("two.sites.test"), (["two.sites.test"], 200), "two.sites.test still served")
    h.check(handshake_fails("one.sites.test", timeout=5), "one.sites.test after its removal")
    h.eq(g.stop(), 0, "exit status")


def test_reload_without_certificate_changes_keeps_the_control_thread():
    """A reload that changes only the data plane (a route) does not restart
    the certificate plane (orders in flight would be cancelled)."""
    conf = base_config(os.path.join(h.tmpdir(), "st-keep"),
                       on_demand={"allow": ["*.keep.test"]})
    g = start(conf)
    new = json.loads(json.dumps(conf))
    new["sites"][0]["routes"] = [{"path": "/x/", "upstreams": [echo().addr]}]
    off = reload(g, new)
    h.not_contains(g.log()[off:], "certificate plane restarted", "a data-plane-only reload")
    h.eq(get("k.keep.test"), (["k.keep.test"], 200), "on-demand after the reload")
    h.eq(g.stop(), 0, "exit status")


def test_refusals_list_is_bounded_and_ldh_only():
    """A client spraying names fills the refusal list only up to its bound
    (64, newest first); an SNI name that is not a DNS name (quotes, angle
    brackets) is never looked up, so never listed: the list holds only
    LDH names."""
    conf = base_config(os.path.join(h.tmpdir(), "st-spray"),
                       on_demand={"allow": ["*.spray.test"]})
    g = start(conf)
    ctx = h.client_context(verify=False)
    for i in range(100):
        try:
            h.tls_connect(HTTPS_PORT, "n%d.elsewhere.test" % i, ctx=ctx, timeout=5).close()
        except (ssl.SSLError, OSError):
            pass
    evil = 'x"<script>alert(1)</script>.spray.test'
    h.s_client(HTTPS_PORT, evil)
    doc = admin_get("/ondemand")
    rs = doc["recent_refusals"]
    h.eq(len(rs), 64, "refusals kept")
    h.eq(rs[0]["name"], "n99.elsewhere.test", "the newest refusal")
    h.eq(rs[0]["reason"], "not in on_demand.allow", "its reason")
    h.eq(rs[63]["name"], "n36.elsewhere.test", "the oldest kept")
    h.check(all(re.fullmatch(r"[a-z0-9.-]+", r["name"]) for r in rs), "LDH names only")
    h.check(all(r["count"] == 1 for r in rs), "each refused once")
    h.check(g.alive(), "gatehouse died")
    h.eq(g.stop(), 0, "exit status")


# --- the on-demand defaults ----------------------------------------------------------


def burst(prefix, n=50):
    names = ["%s%d.tenants.test" % (prefix, i) for i in range(n)]
    ts, out = in_threads(get, names)
    join(ts)
    return {name: out.get(name) for name in names}


def test_burst_of_50_with_ask_gets_50_certificates():
    """The default limits with an approving ask: a sign-up wave of 50 names
    under one registered domain, all at once, gets 50 certificates."""
    ask = GatedAsk()
    ask.gate.set()
    try:
        # Default limits; only the wait budget is longer, for a loaded machine
        # (50 orders, 4 at a time).
        g = start(base_config(os.path.join(h.tmpdir(), "st-burst-ask"),
                              on_demand={"ask": ask.url, "wait_budget": "50s"}))
        out = burst("t")
        each_got_its_certificate(out, list(out), "the burst")
        h.eq(admin_get("/ondemand")["recent_refusals"], [], "refusals")
        h.eq(g.stop(), 0, "exit status")
    finally:
        ask.close()


def test_burst_of_50_without_ask_is_limited_as_documented():
    """Without ask the default per-client-IP limit (20/1h) applies: the
    first 20 names get certificates, the other 30 are refused, and the
    admin API says why."""
    g = start(base_config(os.path.join(h.tmpdir(), "st-burst-noask"),
                          on_demand={"allow": ["*.tenants.test"], "wait_budget": "50s"}))
    out = burst("u")
    ok = [n for n, v in out.items() if v == ([n], 200)]
    others = [v for n, v in out.items() if n not in ok]
    h.eq(len(ok), 20, "names that got a certificate (others: %r)" % others[:3])
    refusals = admin_get("/ondemand")["recent_refusals"]
    limited = [r for r in refusals if "rate limit per_client_ip (20/1h) for 127.0.0.1" in r["reason"]]
    h.eq(len(limited), 30, "refusals by the per-client-IP limit (%r)" % refusals[:3])
    h.check(all(r["client_ip"] == "127.0.0.1" for r in limited), "client_ip of the refusals")
    h.eq(g.stop(), 0, "exit status")


if __name__ == "__main__":
    h.main()
