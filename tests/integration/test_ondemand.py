#!/usr/bin/env python3
"""test_ondemand: certificates obtained during the first handshake for a
name, against a real Pebble: the paused handshake completes with a
certificate for exactly that name; concurrent first handshakes become one
order; the allow list, the ask endpoint and the rate limits refuse without
an order; a client that hangs up while waiting costs nothing; with the CA
down, waiting handshakes fail within the wait budget.

One Pebble validates (TLS-ALPN-01) on Gatehouse's https port, so the
instances here run one after the other on one pair of ports."""

import http.server
import os
import re
import socket
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
WAIT = 30

_s = {}


def pb():
    if "pebble" not in _s:
        _s["pebble"] = pebble.start(http_port=HTTP_PORT, tls_port=HTTPS_PORT)
    return _s["pebble"]


def echo():
    if "echo" not in _s:
        _s["echo"] = h.start_echo()
    return _s["echo"]


class AskServer:
    """The `ask` endpoint: allows names in |allowed|, records queries."""

    def __init__(self, allowed):
        outer = self
        self.allowed = set(allowed)
        self.queries = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                dom = q.get("domain", [""])[0]
                outer.queries.append((dom, q.get("client_ip", [""])[0]))
                code = 200 if dom in outer.allowed else 403
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.url = "http://127.0.0.1:%d/check" % self.port
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def start(storage, **on_demand):
    """Starts gatehouse on the shared ports, stopping the previous test's
    instance first if a failure left it running."""
    prev = _s.pop("gatehouse", None)
    if prev is not None and prev.alive():
        prev.stop()
    p = pb()
    od = {"allow": ["*.od.test"], "wait_budget": "20s",
          "rate_limits": {"global": "1000/1h", "per_domain": "1000/1h",
                          "per_client_ip": "1000/1h"}}
    od.update(on_demand)
    conf = h.make_config(
        [h.site(["*"], [echo()], cert=None, default=True)], HTTPS_PORT, HTTP_PORT, workers=2,
        acme={"directory": p.directory_url, "email": "ops@example.com",
              "ca_roots": [p.ca_file], "challenges": ["tls-alpn-01"]},
        on_demand=od, storage=storage)
    g = h.run_config(conf, HTTPS_PORT, HTTP_PORT)
    _s["gatehouse"] = g
    return g


def get(name, timeout=WAIT):
    """One HTTPS request with SNI |name|, verified against Pebble's roots.
    Returns (peer certificate dict, response)."""
    c = h.Conn.tls(HTTPS_PORT, name, ctx=pb().client_context(), timeout=timeout)
    try:
        peer = c.sock.getpeercert()
        return peer, c.request("GET", "/od", name)
    finally:
        c.close()


def refused(name, timeout=10):
    """Asserts that a handshake for |name| fails; returns its duration."""
    t0 = time.monotonic()
    try:
        h.Conn.tls(HTTPS_PORT, name, ctx=h.client_context(verify=False), timeout=timeout).close()
    except (ssl.SSLError, OSError):
        return time.monotonic() - t0
    raise h.Fail("a handshake for %s succeeded" % name)


def sans(peer):
    return sorted(v for k, v in peer.get("subjectAltName", ()) if k == "DNS")


def orders(g, name, want=None):
    """How many orders for |name| the log shows; with |want|, first waits
    (the log is written by a thread of its own, a little later) until it
    shows that many."""
    def n():
        return len(re.findall(r"order for %s \(\d+ names\) started" % re.escape(name), g.log()))
    if want:
        h.wait_until(lambda: n() >= want, 5, "%d order(s) for %s in the log" % (want, name))
    return n()


def test_first_request_gets_a_certificate_for_exactly_that_name():
    g = start(os.path.join(h.tmpdir(), "st-first"))
    t0 = time.monotonic()
    peer, r = get("new1.od.test")
    h.eq(r.status, 200, "status of the first request")
    h.eq(sans(peer), ["new1.od.test"], "SANs")
    h.check(time.monotonic() - t0 < WAIT, "first request took too long")
    h.eq(orders(g, "new1.od.test", 1), 1, "orders")
    # Later handshakes never wait and make no order.
    for _ in range(3):
        h.eq(get("new1.od.test")[1].status, 200, "later request")
    h.eq(orders(g, "new1.od.test", 1), 1, "orders after later requests")
    h.eq(g.stop(), 0, "exit status")


def test_ip_address_without_sni_gets_an_ip_certificate():
    """RFC 8738 with on_demand.allow_ip: a client connecting to the address
    sends no SNI; it gets a certificate for the address it connected to,
    obtained then (TLS-ALPN-01, SNI the reverse-mapping name) and verified
    by the client against the address."""
    g = start(os.path.join(h.tmpdir(), "st-ip"), allow=["*.od.test", "127.0.0.1"],
              allow_ip=True)
    for attempt in range(2):
        c = h.Conn.tls(HTTPS_PORT, "127.0.0.1", ctx=pb().client_context(), timeout=WAIT)
        try:
            peer = c.sock.getpeercert()
            r = c.request("GET", "/od", "127.0.0.1")
        finally:
            c.close()
        h.eq(r.status, 200, "status (%d)" % attempt)
        h.eq([v for k, v in peer.get("subjectAltName", ())], ["127.0.0.1"], "the SAN")
        h.eq([k for k, v in peer.get("subjectAltName", ())], ["IP Address"], "its type")
    h.eq(orders(g, "127.0.0.1", 1), 1, "one order")
    # Another name still gets its own.
    peer, r = get("new-ip.od.test")
    h.eq(sans(peer), ["new-ip.od.test"], "an SNI name is unaffected")
    h.eq(g.stop(), 0, "exit status")


def test_concurrent_first_handshakes_make_one_order():
    g = start(os.path.join(h.tmpdir(), "st-conc"))
    results = []

    def client():
        try:
            results.append(get("crowd.od.test")[1].status)
        except Exception as e:  # noqa: BLE001
            results.append(repr(e))
    threads = [threading.Thread(target=client) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT + 10)
    h.eq(results.count(200), 50, "successful clients (results: %r)" % results[:5])
    h.eq(orders(g, "crowd.od.test", 1), 1, "orders for 50 concurrent first handshakes")
    h.eq(g.stop(), 0, "exit status")


def test_fifty_new_names_at_once():
    g = start(os.path.join(h.tmpdir(), "st-fifty"))
    results = {}

    def client(i):
        name = "n%d.od.test" % i
        try:
            peer, r = get(name)
            results[name] = (r.status, sans(peer))
        except Exception as e:  # noqa: BLE001
            results[name] = repr(e)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT + 10)
    bad = {n: v for n, v in results.items() if v != (200, [n])}
    h.check(len(results) == 50 and not bad, "failed names: %r" % dict(list(bad.items())[:5]))
    h.eq(g.stop(), 0, "exit status")


def test_allow_list_ask_and_rate_limits_refuse_without_an_order():
    ask = AskServer(["yes.od.test", "stored.od.test"])
    storage = os.path.join(h.tmpdir(), "st-policy")
    try:
        g = start(storage, ask=ask.url,
                  rate_limits={"global": "1000/1h", "per_domain": "2/1h",
                               "per_client_ip": "1000/1h"})
        # Outside allow: fails at once, no ask query, no order.
        dt = refused("x.other.test")
        h.check(dt < 1.0, "refusal outside allow took %.2fs" % dt)
        h.check(all(q[0] != "x.other.test" for q in ask.queries), "asked about x.other.test")
        # The ask endpoint refuses: fails, no order; it saw the client IP.
        dt = refused("no.od.test")
        h.check(dt < 2.0, "refusal by ask took %.2fs" % dt)
        h.check(("no.od.test", "127.0.0.1") in ask.queries, "ask queries %r" % ask.queries)
        h.eq(orders(g, "no.od.test"), 0, "orders for a name ask refused")
        # Refused names are remembered: no second ask query.
        n = len(ask.queries)
        refused("no.od.test")
        h.eq(len(ask.queries), n, "ask queries after a refused name is retried")
        # Allowed by ask: obtained.
        h.eq(get("yes.od.test")[1].status, 200, "name ask allows")
        h.eq(get("stored.od.test")[1].status, 200, "second name ask allows")
        # Rate limit per registered domain (od.test: 2 per hour) is spent.
        ask.allowed.add("third.od.test")
        refused("third.od.test")
        h.eq(orders(g, "third.od.test"), 0, "orders beyond the rate limit")
        g.wait_log(r"rate limit", timeout=5)  # the log says why
        h.eq(g.stop(), 0, "exit status")

        # ask unreachable: stored names keep being served, new names are refused.
        ask.close()
        g = start(storage, ask=ask.url)
        h.eq(get("stored.od.test")[1].status, 200, "stored name with ask down")
        refused("brandnew.od.test")
        h.eq(orders(g, "brandnew.od.test"), 0, "orders with ask down")
        h.eq(g.stop(), 0, "exit status")
    finally:
        try:
            ask.close()
        except Exception:  # noqa: BLE001
            pass


def test_memory_bounded_by_cache_capacity():
    """Beyond on_demand.cache_capacity, the least recently used certificate
    leaves memory and comes back from storage at its next handshake
    (without a new order)."""
    g = start(os.path.join(h.tmpdir(), "st-lru"), cache_capacity=2)
    for name in ("l1.od.test", "l2.od.test"):
        h.eq(get(name)[1].status, 200, name)
    # l1 is used again: l2 is now the least recently used (first in, not
    # first out).
    h.eq(get("l1.od.test")[1].status, 200, "l1 again")
    h.eq(get("l3.od.test")[1].status, 200, "l3")
    g.wait_log(r"l2\.od\.test: evicted from memory", timeout=5)
    h.not_contains(g.log(), "l1.od.test: evicted", "l1 was used recently")
    peer, r = get("l2.od.test")
    h.eq((r.status, sans(peer)), (200, ["l2.od.test"]), "l2 after its eviction")
    g.wait_log(r"l2\.od\.test: certificate loaded from storage", timeout=5)
    h.eq(orders(g, "l2.od.test", 1), 1, "orders for l2")
    h.eq(g.stop(), 0, "exit status")


def test_quick_mode_on_demand():
    """`gatehouse proxy --on-demand PATTERN --ask URL` turns it on from the
    command line."""
    prev = _s.pop("gatehouse", None)
    if prev is not None and prev.alive():
        prev.stop()
    p = pb()
    ask = AskServer(["q1.quick.test"])
    try:
        name = h._next_name("gatehouse-quick")
        cwd = h.subdir(name)
        argv = [h.GATEHOUSE_BIN, "proxy", "--on-demand", "*.quick.test", "--ask", ask.url,
                "--to", echo().addr, "--acme-directory", p.directory_url,
                "--acme-ca-root", p.ca_file, "--storage", os.path.join(cwd, "storage"),
                "--https", "127.0.0.1:%d" % HTTPS_PORT, "--http", "127.0.0.1:%d" % HTTP_PORT,
                "--log-level", "debug"]
        g = h.Gatehouse(argv, name, cwd, HTTPS_PORT, HTTP_PORT)
        _s["gatehouse"] = g
        peer, r = get("q1.quick.test")
        h.eq((r.status, sans(peer)), (200, ["q1.quick.test"]), "quick mode on-demand name")
        refused("q2.quick.test")  # ask says no
        refused("q1.elsewhere.test")  # outside --on-demand
        h.eq(g.stop(), 0, "exit status")
    finally:
        ask.close()


def test_client_hangs_up_while_waiting():
    g = start(os.path.join(h.tmpdir(), "st-hangup"))
    # Send a ClientHello and leave at once, many times, before the order
    # can finish; the process must stay healthy (ASan checks the rest).
    ctx = h.client_context(verify=False)
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", HTTPS_PORT))
        tls = ctx.wrap_socket(s, server_hostname="gone.od.test", do_handshake_on_connect=False)
        tls.setblocking(False)
        try:
            tls.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLError, OSError):
            pass
        tls.close()
    # The name still gets its certificate for a client that waits.
    h.eq(get("gone.od.test")[1].status, 200, "a patient client after 20 that left")
    h.check(g.alive(), "gatehouse died")
    h.eq(g.stop(), 0, "exit status")


def test_ca_down_fails_within_wait_budget_and_stored_names_serve():
    storage = os.path.join(h.tmpdir(), "st-down")
    g = start(storage, wait_budget="3s")
    h.eq(get("kept.od.test")[1].status, 200, "a name obtained while the CA is up")
    h.eq(g.stop(), 0, "exit status")
    p = pb()
    p.proc.stop()  # the CA goes away (DNS stays)
    try:
        g = start(storage, wait_budget="3s", negative_ttl="1s")
        dt = refused("late.od.test", timeout=15)
        h.check(dt < 6.0, "the waiting handshake failed after %.1fs (wait budget 3s)" % dt)
        h.eq(get("kept.od.test")[1].status, 200, "a stored name is served with the CA down")
        h.eq(g.stop(), 0, "exit status")
        # SIGTERM while a handshake waits for a name the CA cannot deliver:
        # the waiter is closed at once, the process does not sit out the
        # wait budget or the drain timeout.
        # A CA that accepts connections and never answers keeps the order
        # (and so the handshake) waiting.
        blackhole = socket.socket()
        blackhole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blackhole.bind(("127.0.0.1", p.port))
        blackhole.listen(64)
        blackhole.settimeout(10)
        reached = None
        try:
            # A storage of its own: with no stored name to ask renewal
            # information about, the order is all that calls the CA.
            g = start(os.path.join(h.tmpdir(), "st-stuck"), wait_budget="60s")
            waiter = threading.Thread(target=lambda: refused("stuck.od.test", timeout=70))
            waiter.start()
            g.wait_log(r"stuck\.od\.test: handshake paused", timeout=10)
            # The order's first request reaches the silent CA: its
            # connection is accepted and its ClientHello arrives.
            try:
                reached, _ = blackhole.accept()
                reached.settimeout(10)
                hello = reached.recv(1)
            except socket.timeout:
                hello = b""
            h.check(hello, "the order's request reached the silent CA within 10 s")
            h.eq(orders(g, "stuck.od.test", 1), 1, "orders for stuck.od.test")
            h.check(waiter.is_alive(), "the handshake should still be waiting")
            t0 = time.monotonic()
            h.eq(g.stop(), 0, "exit status with a paused handshake")
            h.check(time.monotonic() - t0 < 10, "stop took %.1fs" % (time.monotonic() - t0))
            waiter.join(15)
        finally:
            if reached is not None:
                reached.close()
            blackhole.close()
        g = start(storage, wait_budget="3s", negative_ttl="1s")
        # The CA comes back (same address, but a new Pebble: new roots, and
        # it has forgotten our account): a later request succeeds.
        p.proc = h.Proc(p.proc.name + "-again", p.proc.argv, cwd=p.proc.cwd,
                        env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"})
        p._wait_ready()  # and its client context is made again

        def later():
            try:
                peer, r = get("late.od.test", timeout=10)
            except (ssl.SSLError, OSError):
                return None
            return (r.status, sans(peer))
        h.eq(h.wait_until(later, 30, "late.od.test once the CA is back", interval=0.5),
             (200, ["late.od.test"]), "late.od.test after the CA came back")
        h.eq(g.stop(), 0, "exit status")
    finally:
        _s.pop("pebble", None)  # the next test gets a fresh Pebble


if __name__ == "__main__":
    h.main()
