#!/usr/bin/env python3
"""test_lifecycle: reload on SIGHUP (broken and good configs), the plain
HTTP listener (redirects and ACME challenge path), garbage on the TLS port,
and graceful drain on SIGTERM."""

import json
import os
import signal
import socket
import ssl
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

_s = {}
DRAIN_S = 5.0


def setup():
    if not _s:
        _s["e1"] = h.start_echo()
        _s["e2"] = h.start_echo()
        _s["gh"] = h.start_gatehouse([h.site(["app.test"], [_s["e1"]])], workers=2,
                                     timeouts={"drain": "%ds" % DRAIN_S, "handshake": "3s"})
        _s["good"] = json.loads(json.dumps(_s["gh"].config))
    return _s["gh"], _s["e1"], _s["e2"]


def handshake_ok(port, sni):
    try:
        s = h.tls_connect(port, sni, timeout=3)
    except (ssl.SSLError, OSError):
        return False
    s.close()
    return True


def test_sighup_broken_config_keeps_serving():
    g, e1, _ = setup()
    k = g.connect("app.test")
    try:
        h.eq(k.request("GET", "/before", "app.test").status, 200, "keep-alive request before reload")
        for text, rx in (('{ "listen": broken', r"gatehouse\.json:\d+:\d+"),
                             (json.dumps(dict(g.config, sites=[
                                 dict(g.config["sites"][0], upstreams=["localhost"])])),
                              r"gatehouse\.json.*sites\[0\]\.upstreams\[0\]")):
            off = g.log_size()
            g.write_config_text(text)
            g.reload()
            g.wait_log(rx, timeout=5, since=off)
            h.check(g.alive(), "gatehouse exited after SIGHUP with a broken config:\n%s" % g.tail())
            r = g.get("app.test", "/after-bad-reload")
            h.eq(r.status, 200, "new connection after a failed reload")
            h.eq(r.json()["path"], "/after-bad-reload", "path")
            h.eq(k.request("GET", "/kept", "app.test").status, 200,
                 "keep-alive connection after a failed reload")
    finally:
        k.close()
        g.write_config(_s["good"])


def test_sighup_good_config_applies():
    g, e1, e2 = setup()
    h.check(not handshake_ok(g.https_port, "new.test"), "new.test served before the reload")
    k = g.connect("app.test")
    try:
        h.eq(k.request("GET", "/before", "app.test").status, 200, "keep-alive request before reload")
        new = json.loads(json.dumps(_s["good"]))
        new["sites"][0]["routes"] = [{"path": "/new/", "upstreams": [e2.addr]}]
        new["sites"].append(h.site(["new.test"], [e2]))
        g.write_config(new)
        g.reload()
        h.wait_until(lambda: handshake_ok(g.https_port, "new.test"), 5,
                     "new.test (a site added by the reload) to be served")
        c1, c2 = h.Counter(e1), h.Counter(e2)
        r = g.get("app.test", "/new/x")
        h.eq(r.status, 200, "request on the new route")
        r = g.get("new.test", "/y")
        h.eq(r.status, 200, "request to the new site")
        r = g.get("app.test", "/old")
        h.eq(r.status, 200, "request on the old default route")
        h.eq((c1.requests(), c2.requests()), (1, 2), "requests at (old upstream, new upstream)")
        # The connection opened before the reload was not dropped.
        r = k.request("GET", "/kept", "app.test")
        h.eq(r.status, 200, "keep-alive connection across a good reload")
        h.check(g.alive(), "gatehouse died during the reload")
    finally:
        k.close()


def test_quick_mode_ignores_sighup():
    _, e1, _ = setup()
    q = h.start_quick([e1], ["quick.test"], ["--workers", "1"])
    h.eq(q.get("quick.test", "/q0").status, 200, "request before SIGHUP in quick mode")
    q.signal(signal.SIGHUP)
    # SIGHUP is ignored in quick mode: it keeps serving (and does not die
    # of the default action).
    h.eq(q.get("quick.test", "/q").status, 200, "request after SIGHUP in quick mode")
    h.check(q.alive(), "quick mode died of SIGHUP")


def test_second_instance_on_same_ports_refused():
    """SO_REUSEPORT would let a second gatehouse share the ports and split
    the connections silently; it must refuse to start instead, and the
    first one must keep serving."""
    gh, _, _ = setup()
    r = h.gatehouse_cmd("run", "-c", gh.config_path, timeout=20)
    h.eq(r.returncode, 1, "exit status of a second instance on the same ports")
    h.contains(r.stderr, "another server running there",
               "the refusal names the cause")
    h.eq(gh.get("app.test", "/still").status, 200, "the first instance still serves")


def test_http_listener_redirects_to_https():
    g, _, _ = setup()
    for method, target, host, want_path in (
            ("GET", "/path?q=1", "app.test", "/path?q=1"),
            ("POST", "/form", "app.test:80", "/form"),
            ("GET", "/", "other.test", "/")):
        c = h.Conn.plain(g.http_port)
        try:
            r = c.request(method, target, host, body=b"x=1" if method == "POST" else None)
        finally:
            c.close()
        h.eq(r.status, 308, "%s http://%s%s status" % (method, host, target))
        name = host.split(":")[0]
        loc = r.header("Location")
        h.check(loc in ("https://%s%s" % (name, want_path),
                        "https://%s:%d%s" % (name, g.https_port, want_path)),
                "Location %r for %s http://%s%s" % (loc, method, host, target))
        h.check(len(r.body) < 1024, "redirect body is %d bytes" % len(r.body))


def test_http_listener_acme_challenge_404():
    g, e1, _ = setup()
    cnt = h.Counter(e1)
    c = h.Conn.plain(g.http_port)
    try:
        r = c.request("GET", "/.well-known/acme-challenge/x", "app.test")
        h.eq(r.status, 404, "unknown ACME challenge token")
        h.eq(r.header("Location"), None, "Location on the challenge 404")
    finally:
        c.close()
    # Missing Host on HTTP/1.1 is a bad request.
    c = h.Conn.plain(g.http_port)
    try:
        c.send(b"GET /x HTTP/1.1\r\n\r\n")
        r = c.read_response("GET", timeout=5)
        h.eq(r.status, 400, "HTTP/1.1 request without Host on the http listener")
    finally:
        c.close()
    h.eq(cnt.requests(), 0, "requests from the http listener that reached the backend")


def test_garbage_on_tls_port():
    g, _, _ = setup()
    for what, data in (("plain HTTP", b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"),
                       ("random bytes", os.urandom(4096)),
                       ("a huge TLS record header", b"\x16\x03\x01\xff\xff" + os.urandom(300)),
                       ("a truncated ClientHello", b"\x16\x03\x01\x00\x40\x01\x00\x00\x3c\x03\x03")):
        s = socket.create_connection(("127.0.0.1", g.https_port), timeout=10)
        try:
            try:
                s.sendall(data)
            except OSError:
                pass
            c = h.Conn(s)
            dt = c.wait_closed(6 if "truncated" in what else 3)
            h.check(dt is not None, "%s: connection left open" % what)
            h.check(not c.buf.startswith(b"HTTP/"), "%s: answered in plain HTTP: %r" % (what, c.buf[:100]))
        finally:
            s.close()
    h.check(g.alive(), "gatehouse died of garbage")
    h.eq(g.get("app.test", "/after-garbage").status, 200, "request after the garbage")


def test_sigterm_drains_inflight_request():
    g, e1, _ = setup()
    cnt = h.Counter(e1)
    idle = g.connect("app.test")
    slow = g.connect("app.test")
    try:
        h.eq(idle.request("GET", "/idle", "app.test").status, 200, "idle connection's request")
        cnt.reset()
        slow.send(h.build_request("GET", "/delay/1500", "app.test"))
        h.wait_until(lambda: cnt.requests() >= 1, 3, "the slow request to reach the backend")
        t0 = time.monotonic()
        g.signalled = True
        g.signal(signal.SIGTERM)
        # New connections are no longer accepted while draining.
        h.wait_until(lambda: not h.port_accepts(g.https_port), 1.2,
                     "the https listener to close after SIGTERM")
        r = slow.read_response("GET", timeout=DRAIN_S + 2)
        h.eq(r.status, 200, "in-flight request during drain")
        h.eq(r.json()["path"], "/delay/1500", "in-flight request path")
        rc = g.wait_exit(DRAIN_S + 3)
        dt = time.monotonic() - t0
        h.check(rc is not None, "gatehouse still running %.1fs after SIGTERM (drain %ds)" % (dt, DRAIN_S))
        h.eq(rc, 0, "exit status after SIGTERM")
        h.check(dt <= DRAIN_S + 1.0, "exit took %.1fs after SIGTERM (drain %ds)" % (dt, DRAIN_S))
        # An idle keep-alive connection must not hold the drain open.
        h.check(dt < 4.0, "exit took %.1fs: idle keep-alive connections held up the drain" % dt)
        h.check(idle.wait_closed(1) is not None, "idle connection still open after exit")
    finally:
        idle.close()
        slow.close()


if __name__ == "__main__":
    h.main()
