#!/usr/bin/env python3
"""test_admin: the admin API and /metrics.

Without a CA: /health, the Host check (DNS-rebinding defence), the bearer
token, static certificates in /certs, POST /reload with a broken file, and
/metrics parsed by a strict Prometheus text parser with counters that move
by exactly the traffic made. With a real Pebble: /certs against `gatehouse
cert list --json`, renew, revoke (Pebble says Revoked), and DELETE of an
on-demand certificate, which comes back from storage at the next handshake.
Quick mode's --admin last."""

import http.client
import json
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import pebble  # noqa: E402

_s = {}


def echo():
    if "echo" not in _s:
        _s["echo"] = h.start_echo()
    return _s["echo"]


# A TCP admin address needs a token (issue 13): the servers here get this one.
TOKEN = "adm-test-token"
AUTH = {"Authorization": "Bearer " + TOKEN}


def admin(port, method, path, host=None, headers=None, body=None, token=TOKEN):
    """One admin request on a new connection: (status, body bytes, headers).
    |token| None sends no Authorization header."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=h.IO_TIMEOUT * 6)
    hdrs = {"Host": host or "127.0.0.1:%d" % port}
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    hdrs.update(headers or {})
    try:
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        c.close()


def admin_json(port, method, path, expect=200, **kw):
    status, body, _ = admin(port, method, path, **kw)
    h.eq(status, expect, "%s %s status (%r)" % (method, path, body[:300]))
    return json.loads(body)


def start(sites, **extra):
    port = h.free_port()
    extra.setdefault("admin", {})["listen"] = "127.0.0.1:%d" % port
    extra["admin"].setdefault("token", TOKEN)
    g = h.start_gatehouse(sites, **extra)
    h.wait_until(lambda: h.port_accepts(port), 10, "the admin port accepts")
    g.admin_port = port
    return g


# --- a strict Prometheus text-format parser -------------------------------------------

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*$")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def _labels(text, lineno):
    """Parses 'a="x",b="y"' (the inside of the braces); returns a dict."""
    out, i = {}, 0
    while i < len(text):
        eq = text.find("=", i)
        h.check(eq > i, "line %d: label name expected in {%s}" % (lineno, text))
        name = text[i:eq]
        h.check(LABEL.match(name) and not name.startswith("__"),
                "line %d: bad label name %r" % (lineno, name))
        h.check(text[eq + 1:eq + 2] == '"', "line %d: label value must be quoted" % lineno)
        j, val = eq + 2, []
        while True:
            h.check(j < len(text), "line %d: unterminated label value" % lineno)
            ch = text[j]
            if ch == "\\":
                nxt = text[j + 1:j + 2]
                h.check(nxt in ('\\', '"', 'n'), "line %d: bad escape \\%s" % (lineno, nxt))
                val.append("\n" if nxt == "n" else nxt)
                j += 2
            elif ch == '"':
                j += 1
                break
            elif ch == "\n":
                raise h.Fail("line %d: raw newline in a label value" % lineno)
            else:
                val.append(ch)
                j += 1
        h.check(name not in out, "line %d: label %s twice" % (lineno, name))
        out[name] = "".join(val)
        if j < len(text):
            h.check(text[j] == ",", "line %d: ',' expected after a label" % lineno)
            j += 1
        i = j
    return out


def _value(s, lineno):
    if s in ("+Inf", "-Inf", "NaN"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    h.check(re.match(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$", s),
            "line %d: bad value %r" % (lineno, s))
    return float(s)


def parse_metrics(text):
    """Returns {family: {"type", "help", "samples": {frozenset(labels): value}}}
    and fails on anything the text format (0.0.4) does not allow."""
    h.check(text.endswith("\n"), "the exposition ends with a newline")
    fams, current, seen_done = {}, None, set()
    for lineno, line in enumerate(text[:-1].split("\n"), 1):
        h.check(line.strip() != "" or line == "", "line %d: whitespace-only line" % lineno)
        if line == "":
            continue
        if line.startswith("#"):
            m = re.match(r"^# (HELP|TYPE) (\S+) ?(.*)$", line)
            if not m:
                continue  # a plain comment
            kind, name, rest = m.groups()
            h.check(NAME.match(name), "line %d: bad metric name %r" % (lineno, name))
            h.check(name not in seen_done, "line %d: family %s split in two" % (lineno, name))
            if current is not None and current != name:
                seen_done.add(current)
            current = name
            f = fams.setdefault(name, {"type": None, "help": None, "samples": {}})
            h.check(not f["samples"], "line %d: %s after samples of %s" % (lineno, kind, name))
            if kind == "HELP":
                h.check(f["help"] is None, "line %d: second HELP for %s" % (lineno, name))
                f["help"] = rest
            else:
                h.check(f["type"] is None, "line %d: second TYPE for %s" % (lineno, name))
                h.check(rest in TYPES, "line %d: bad type %r" % (lineno, rest))
                f["type"] = rest
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$", line)
        h.check(m, "line %d: not a sample: %r" % (lineno, line))
        name, _, labels, value, _ts = m.groups()
        family = name
        for suffix in ("_sum", "_count", "_bucket"):
            if name.endswith(suffix) and name[:-len(suffix)] in fams and \
                    fams[name[:-len(suffix)]]["type"] in ("histogram", "summary"):
                family = name[:-len(suffix)]
        h.check(family == current, "line %d: sample %s outside its family (%s)"
                % (lineno, name, current))
        f = fams[family]
        h.check(f["type"] is not None, "line %d: %s has no TYPE" % (lineno, family))
        lab = _labels(labels or "", lineno)
        key = (name, frozenset(lab.items()))
        h.check(key not in f["samples"], "line %d: duplicate series %r" % (lineno, line))
        v = _value(value, lineno)
        if f["type"] == "counter":
            h.check(name.endswith("_total"), "line %d: counter %s without _total" % (lineno, name))
            h.check(v >= 0 and not math.isnan(v), "line %d: counter below zero" % lineno)
        f["samples"][key] = v
    for name, f in fams.items():
        h.check(f["type"] is not None and f["help"] is not None,
                "family %s has HELP and TYPE" % name)
    return fams


def scrape(port, **kw):
    status, body, hdrs = admin(port, "GET", "/metrics", **kw)
    h.eq(status, 200, "GET /metrics status")
    h.contains(hdrs.get("Content-Type", ""), "text/plain; version=0.0.4", "content type")
    return parse_metrics(body.decode("utf-8"))


def sample(fams, metric, **labels):
    """The sum of |metric|'s series whose labels include |labels|."""
    fam = fams.get(metric)
    h.check(fam is not None, "metric %s is exposed" % metric)
    want = frozenset(labels.items())
    total = None
    for (n, lab), v in fam["samples"].items():
        if n == metric and want <= lab:
            total = (total or 0) + v
    return 0 if total is None else total


# --- without a CA ---------------------------------------------------------------------

def test_health_stays_ok_with_a_full_log_pipe():
    """A log collector that stopped reading used to stall the worker in
    write(2), and /health said 503 "stalled". Since issue 13 the worker only
    queues its lines (the writer thread blocks, the lines that do not fit
    are dropped): requests keep being answered and /health, and `gatehouse
    health`, stay ok. (test_logging covers the drops.)"""
    g = h.PipedGatehouse("stall", "stall.admin.test", echo(), pipe_size=4096,  # one page
                         token=TOKEN)
    port, https_port = g.admin_port, g.https_port
    try:
        h.eq(admin_json(port, "GET", "/health"), {"status": "ok"}, "/health before")
        for i in range(200):  # far more access lines than one page holds
            c = h.Conn.tls(https_port, "stall.admin.test", timeout=5)
            try:
                r = c.request("GET", "/fill-the-log-" + "x" * 200, "stall.admin.test")
            finally:
                c.close()
            h.eq(r.status, 200, "request %d with the log pipe full" % i)
        # Longer than PX_STALL_MS with the pipe still full: the worker beats.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            h.eq(admin_json(port, "GET", "/health"), {"status": "ok"}, "/health, pipe full")
            time.sleep(0.5)
        r = h.gatehouse_cmd("health", "--admin", "127.0.0.1:%d" % port,
                            env=dict(os.environ, GATEHOUSE_ADMIN_TOKEN=TOKEN))
        h.eq(r.returncode, 0, "gatehouse health with the log pipe full")
    finally:
        g.stop()


def test_health_and_host_check():
    g = start([h.site(["static.admin.test"], [echo()])])
    _s["plain"] = g
    port = g.admin_port
    h.eq(admin_json(port, "GET", "/health"), {"status": "ok"}, "/health")
    for host in ("localhost:%d" % port, "[::1]:%d" % port, "LOCALHOST:%d" % port):
        h.eq(admin(port, "GET", "/health", host=host)[0], 200, "Host %s" % host)
    for host in ("evil.example:%d" % port, "127.0.0.1:%d" % (port + 1), "127.0.0.1",
                 "evil.example", "127.0.0.1:%d.evil" % port):
        h.eq(admin(port, "GET", "/health", host=host)[0], 421, "Host %s refused" % host)
    # What a browser does after DNS rebinding: the attacker's name, our address.
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--noproxy", "*",
                        "--resolve", "evil.example:%d:127.0.0.1" % port,
                        "http://evil.example:%d/certs" % port], stdout=subprocess.PIPE, timeout=30)
    h.eq(r.stdout.decode(), "421", "curl --resolve evil.example")
    # No Host at all (HTTP/1.0) is refused too.
    c = h.Conn.plain(port)
    c.send("GET /health HTTP/1.0\r\n\r\n")
    h.eq(c.read_response().status, 421, "no Host header")
    c.close()
    h.eq(admin(port, "GET", "/nope")[0], 404, "unknown path")
    h.eq(admin(port, "POST", "/health")[0], 405, "wrong method")
    h.eq(admin(port, "GET", "/certs/..%2f..%2fetc")[0], 404, "a path that is not a name")
    # Keep-alive: several requests on one connection, answered in order.
    c = h.Conn.plain(port)
    c.send(("GET /health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n\r\n"
            % (port, TOKEN)) * 3)
    for _ in range(3):
        h.eq(c.read_response().status, 200, "pipelined /health")
    c.close()
    # A static certificate is listed as such.
    certs = admin_json(port, "GET", "/certs")
    h.eq([(c["name"], c["source"]) for c in certs], [("static.admin.test", "static")], "/certs")
    one = admin_json(port, "GET", "/certs/static.admin.test")
    h.eq(one["sans"], ["static.admin.test"], "sans")
    for k in ("issuer", "serial", "not_before", "not_after", "renewal_time", "last_error"):
        h.check(k in one, "/certs/NAME has %s: %r" % (k, one))
    h.eq((one["ca"], one["profile"]), (None, None), "a static certificate has no CA or profile")
    h.check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", one["not_after"]), "RFC 3339 time")
    h.check(re.match(r"^[0-9a-f]+$", one["serial"]), "hex serial")
    h.eq(admin(port, "GET", "/certs/missing.admin.test")[0], 404, "unknown name")
    h.eq(admin(port, "DELETE", "/certs/static.admin.test")[0], 409, "static cannot be evicted")
    h.eq(admin(port, "POST", "/certs/static.admin.test/renew")[0], 409, "no ACME: no renew")


def test_token():
    g = start([h.site(["tok.admin.test"], [echo()])], admin={"token": "s3cret-token"})
    port = g.admin_port
    h.eq(admin(port, "GET", "/health", token=None)[0], 401, "no token")
    h.eq(admin(port, "GET", "/health", headers={"Authorization": "Bearer wrong"})[0], 401,
         "wrong token")
    h.eq(admin(port, "GET", "/health", headers={"Authorization": "Bearer s3cret-token"})[0],
         200, "right token")
    h.eq(admin(port, "GET", "/metrics", headers={"Authorization": "Basic czNjcmV0LXRva2Vu"})[0],
         401, "not a bearer token")
    # The Host check comes first: a rebinding page learns nothing about the token.
    h.eq(admin(port, "GET", "/health", host="evil.example:%d" % port,
               headers={"Authorization": "Bearer s3cret-token"})[0], 421, "wrong Host, right token")
    h.eq(g.stop(), 0, "exit status")


def test_dashboard_files():
    """The dashboard's page and files: no token (a browser cannot send one
    when it opens a page; they hold no data), the Host check still, and a
    strict CSP. The API behind them still wants the token."""
    g = start([h.site(["ui.admin.test"], [echo()])], admin={"token": "ui-token"})
    port = g.admin_port
    types = {"/": "text/html", "/ui/app.js": "text/javascript", "/ui/app.css": "text/css",
             "/ui/favicon.svg": "image/svg+xml"}
    for path, ctype in types.items():
        status, body, hdrs = admin(port, "GET", path, token=None)
        h.eq(status, 200, "GET %s without a token" % path)
        h.check(hdrs.get("Content-Type", "").startswith(ctype), "%s type: %r" % (path, hdrs))
        h.check(len(body) > 100, "%s has content" % path)
        csp = hdrs.get("Content-Security-Policy", "")
        for part in ("default-src 'none'", "script-src 'self'", "connect-src 'self'",
                     "frame-ancestors 'none'"):
            h.contains(csp, part, "%s CSP" % path)
        h.not_contains(csp, "unsafe", "%s CSP allows nothing unsafe" % path)
        h.eq(hdrs.get("X-Content-Type-Options"), "nosniff", "%s nosniff" % path)
        h.eq(hdrs.get("X-Frame-Options"), "DENY", "%s not framed" % path)
    # Embedded: nothing is fetched from elsewhere, no inline script or style.
    page = admin(port, "GET", "/", token=None)[1].decode()
    h.not_contains(page, "http://", "absolute URLs in the page")
    h.not_contains(page, "https://", "absolute URLs in the page")
    h.check(re.search(r"<script(?![^>]*\ssrc=)[^>]*>", page) is None, "no inline script")
    h.check(re.search(r"\sstyle=|<style", page) is None, "no inline style")
    js = admin(port, "GET", "/ui/app.js", token=None)[1].decode()
    for bad in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        h.not_contains(js, bad, "app.js uses %s" % bad)
    h.eq(admin(port, "GET", "/", token=None, host="evil.example:%d" % port)[0], 421,
         "the page keeps the Host check")
    h.eq(admin(port, "POST", "/", token=None)[0], 405, "POST /")
    h.eq(admin(port, "GET", "/ui/nothing.js", token=None)[0], 401, "other paths want the token")
    h.eq(admin(port, "GET", "/ui/nothing.js", token="ui-token")[0], 404, "unknown file")
    h.eq(admin(port, "GET", "/certs", token=None)[0], 401, "the API wants the token")
    h.eq(g.stop(), 0, "exit status")


def test_upstreams_and_acme_json():
    """/upstreams: each site's upstream addresses and their endpoints, with
    state, in-flight requests, the requests answered by status class and the
    last failure; /acme with ACME off."""
    dead = "127.0.0.1:%d" % h.free_port()
    g = start([h.site(["up.admin.test"], [echo(), dead],
                      routes=[{"path": "/api/", "upstreams": [echo()]}])],
              admin={"token": TOKEN})
    port = g.admin_port
    ctx = h.client_context(verify=False)
    for i in range(4):  # round robin: the dead address is tried and backed off
        c = h.Conn.tls(g.https_port, "up.admin.test", ctx=ctx)
        try:
            c.request("GET", "/x%d" % i, "up.admin.test")
        finally:
            c.close()
    c = h.Conn.tls(g.https_port, "up.admin.test", ctx=ctx)
    c.request("GET", "/api/y", "up.admin.test")
    c.close()
    # A request is counted when its exchange ends, which may be just after
    # the client has read the answer.
    def counted():
        d = admin_json(port, "GET", "/upstreams")
        n = sum(t["requests"]["2xx"] for t in d["upstreams"][0]["targets"]
                if t["address"] == echo().addr)
        return d if n >= 5 else None
    doc = h.wait_until(counted, 10, "five requests counted")
    ups = doc["upstreams"]
    h.eq([(u["site"], u["route"]) for u in ups], [("up.admin.test", None),
                                                  ("up.admin.test", "/api/")], "groups")
    h.eq(ups[0]["balance"], "round_robin", "balance")
    h.eq(ups[0]["protocol"], "http/1.1", "protocol")
    h.eq(ups[0]["health_check"], None, "no health check")
    by = {t["address"]: t for t in ups[0]["targets"]}
    h.eq(sorted(by), sorted([echo().addr, dead]), "targets")
    live, gone = by[echo().addr], by[dead]
    h.eq(len(live["endpoints"]), 1, "an IP literal is one endpoint")
    h.eq(live["endpoints"][0]["state"], "up", "the echo backend is up")
    h.eq(live["endpoints"][0]["last_failure"], None, "it never failed")
    h.eq(live["in_flight"], 0, "nothing in flight")
    # The echo address serves the route too: requests are counted per address.
    h.eq(live["requests"]["2xx"], 5, "2xx answered by the echo backend: %r" % live["requests"])
    h.eq(gone["requests"]["2xx"], 0, "the dead one answered nothing")
    ep = gone["endpoints"][0]
    h.eq(ep["state"], "backing_off", "the dead address backs off")
    h.check(ep["last_failure"] is not None and "connect" in ep["last_failure"]["reason"],
            "why it failed: %r" % ep)
    h.check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", ep["last_failure"]["at"]),
            "when")
    h.eq(admin_json(port, "GET", "/acme"), {"enabled": False, "cas": [], "recent_orders": []},
         "/acme with ACME off")
    od = admin_json(port, "GET", "/ondemand")
    h.eq(od["ask"], {"requests": 0, "cache_hits": 0, "coalesced": 0, "unreachable": 0,
                     "latency_ms_avg": None}, "ask stats without on-demand")
    h.eq(admin(port, "POST", "/upstreams")[0], 405, "POST /upstreams")
    h.eq(admin(port, "GET", "/acme", token=None)[0], 401, "/acme wants the token")
    h.eq(g.stop(), 0, "exit status")


def test_upstream_failure_text_is_clean():
    """A hostile upstream's bytes reach the last-failure text (the health
    check quotes its status): /upstreams stays valid UTF-8 JSON without
    control characters, for the dashboard that shows it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            try:
                c.settimeout(2)
                c.recv(4096)
                c.sendall(b"HTTP/1.1 \xff\x1b\x7f\r\n\r\n")
            except OSError:
                pass
            finally:
                c.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    bad = "127.0.0.1:%d" % srv.getsockname()[1]
    g = start([h.site(["hostile.admin.test"], [bad],
                      health_check={"path": "/h", "interval": "1s", "timeout": "500ms"})])
    try:
        def failed():
            status, body, _ = admin(g.admin_port, "GET", "/upstreams")
            h.eq(status, 200, "/upstreams")
            doc = json.loads(body.decode("utf-8"))  # strict: invalid UTF-8 raises
            ep = doc["upstreams"][0]["targets"][0]["endpoints"][0]
            return ep if ep["state"] == "check_failed" and ep["last_failure"] else None
        ep = h.wait_until(failed, 15, "the health check fails")
        reason = ep["last_failure"]["reason"]
        h.eq(reason, "health check: status ???", "the reason, cleaned")
    finally:
        stop.set()
        t.join(5)
        srv.close()
    h.eq(g.stop(), 0, "exit status")


def test_metrics_parse_and_move():
    g = _s["plain"]
    port = g.admin_port
    up = echo().addr
    listener = "https:127.0.0.1:%d" % g.https_port
    before = scrape(port)
    for fam in ("gatehouse_connections_open", "gatehouse_connections_total",
                "gatehouse_handshakes_total", "gatehouse_handshakes_paused",
                "gatehouse_requests_total", "gatehouse_upstream_healthy",
                "gatehouse_bytes_in_total", "gatehouse_bytes_out_total",
                "gatehouse_certificate_expiry_timestamp_seconds"):
        h.check(fam in before, "family %s exposed" % fam)
    # 5 requests on one keep-alive connection, then 3 connections of one request.
    c = g.connect("static.admin.test")
    for i in range(5):
        h.eq(c.request("GET", "/m%d" % i, "static.admin.test").status, 200, "request %d" % i)
    c.close()
    for i in range(3):
        h.eq(g.get("static.admin.test", "/n%d" % i).status, 200, "request on a new connection")

    def settled():
        m = scrape(port)
        return m if sample(m, "gatehouse_connections_open", listener=listener) == 0 else None
    after = h.wait_until(settled, 10, "connections closed in the metrics")
    d = lambda name, **lab: sample(after, name, **lab) - sample(before, name, **lab)  # noqa: E731
    h.eq(d("gatehouse_requests_total", status_class="2xx", upstream=up), 8, "requests_total delta")
    h.eq(d("gatehouse_connections_total", listener=listener), 4, "connections_total delta")
    h.eq(d("gatehouse_handshakes_total", result="ok"), 4, "handshakes ok delta")
    h.check(d("gatehouse_bytes_in_total") > 0 and d("gatehouse_bytes_out_total") > 0, "bytes move")
    h.eq(sample(after, "gatehouse_upstream_healthy", upstream=up), 1, "upstream healthy")
    exp = sample(after, "gatehouse_certificate_expiry_timestamp_seconds", name="static.admin.test")
    h.check(exp > 1.7e9, "expiry timestamp %r" % exp)
    # A failed handshake is counted with its reason.
    try:
        h.Conn.tls(g.https_port, "static.admin.test", ctx=h.client_context(
            verify=False, max_version=__import__("ssl").TLSVersion.TLSv1_1)).close()
    except Exception:
        pass
    # The client may give up before sending anything: then the server
    # counts the failure when it sees the connection close.
    after2 = h.wait_until(lambda: (lambda m: m if sample(
        m, "gatehouse_handshakes_total", result="failed") > sample(
        after, "gatehouse_handshakes_total", result="failed") else None)(scrape(port)),
        10, "the failed handshake counted")
    # A plain-HTTP redirect is answered locally.
    c = h.Conn.plain(g.http_port)
    h.eq(c.request("GET", "/x", "static.admin.test").status, 308, "redirect")
    c.close()
    after3 = h.wait_until(lambda: (lambda m: m if sample(
        m, "gatehouse_requests_total", status_class="3xx", upstream="none") >
        sample(after2, "gatehouse_requests_total", status_class="3xx", upstream="none") else None)(
        scrape(port)), 10, "the redirect counted")
    h.check(after3 is not None, "3xx counted")


def test_reload_broken_config():
    g = _s["plain"]
    port = g.admin_port
    good = dict(g.config)
    g.write_config_text('{"listen": {"https": [')
    doc = admin_json(port, "POST", "/reload", expect=422)
    h.eq(doc["status"], "refused", "reload refused")
    h.check(doc["errors"] and all(isinstance(e, str) for e in doc["errors"]), "errors: %r" % doc)
    h.eq(g.get("static.admin.test", "/still").status, 200, "still serving after a refused reload")
    h.eq(admin(port, "GET", "/reload")[0], 405, "GET /reload")
    g.write_config(good)
    h.eq(admin_json(port, "POST", "/reload"), {"status": "reloaded"}, "reload")
    h.eq(g.get("static.admin.test", "/after").status, 200, "serving after a reload")
    h.eq(admin_json(port, "GET", "/health"), {"status": "ok"}, "admin still up after reload")
    h.eq(g.stop(), 0, "exit status")
    h.not_contains(g.log(), "loop not empty", "clean loops")


def unix_get(sock, path, host="localhost", token=None, method="GET"):
    """curl --unix-socket: (status, body text)."""
    argv = ["curl", "-sS", "--noproxy", "*", "--max-time", "10", "--unix-socket", sock,
            "-X", method, "-H", "Host: " + host, "-o", "-", "-w", "\n%{http_code}",
            "http://gatehouse" + path]
    if token is not None:
        argv[1:1] = ["-H", "Authorization: Bearer " + token]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    out = r.stdout.decode()
    body, _, code = out.rpartition("\n")
    return int(code or 0), body.rstrip("\n")


def write_json(path, doc):
    tmp = path + ".new"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
    os.replace(tmp, path)


def test_unix_socket():
    """admin.listen "unix:admin.sock" beside the config file, started from
    another directory: the socket is made there with mode 0600 (a stale
    socket left by a killed server is replaced), takes any Host, needs no
    token until one is configured, serves `gatehouse health` and `gatehouse
    reload`, and is removed at SIGTERM."""
    import stat
    name = h._next_name("gatehouse-unix")
    confdir = h.subdir(name + "-conf")
    rundir = h.subdir(name + "-run")
    sock = os.path.join(confdir, "admin.sock")
    # A stale socket: bound, then its owner gone without removing it.
    import socket as _socket
    stale = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    stale.bind(sock)
    stale.close()
    h.check(stat.S_ISSOCK(os.lstat(sock).st_mode), "the stale socket is there")
    https, http = h.free_port(), h.free_port()
    conf = h.make_config([h.site(["u.admin.test"], [echo()])], https, http,
                         admin={"listen": "unix:admin.sock"}, storage="storage")
    path = os.path.join(confdir, "gatehouse.json")
    write_json(path, conf)
    g = h.Gatehouse([h.GATEHOUSE_BIN, "run", "-c", path], name, rundir, https, http,
                    config_path=path, config=conf)
    try:
        h.wait_until(lambda: unix_get(sock, "/health")[0] == 200, 10, "/health on the socket")
        st = os.stat(sock)
        h.check(stat.S_ISSOCK(st.st_mode), "admin.sock is a socket")
        h.eq(stat.S_IMODE(st.st_mode), 0o600, "the socket's mode")
        h.eq(unix_get(sock, "/health"), (200, '{"status":"ok"}'), "GET /health")
        h.eq(unix_get(sock, "/health", host="evil.example:1")[0], 200, "any Host on a socket")
        certs = json.loads(unix_get(sock, "/certs")[1])
        h.eq([c["name"] for c in certs], ["u.admin.test"], "/certs over the socket")
        g.wait_log(re.escape("admin API on unix:%s (mode 0600)" % sock), timeout=5)
        r = h.gatehouse_cmd("health", "-c", path)
        h.eq((r.returncode, r.stdout.strip()), (0, "ok"), "health -c: %s" % r.stderr)
        r = h.gatehouse_cmd("health", "--admin", "unix:" + sock)
        h.eq((r.returncode, r.stdout.strip()), (0, "ok"), "health --admin unix: %s" % r.stderr)
        # `gatehouse reload -c FILE` with a new site and a token: the new
        # site answers, and the socket now wants the token, which the
        # commands read from the file.
        try:
            g.get("v.admin.test", "/")
            raise h.Fail("v.admin.test answered before the reload")
        except (OSError, Exception) as e:
            if isinstance(e, h.Fail):
                raise
        conf["sites"].append(h.site(["v.admin.test"], [echo()]))
        conf["admin"]["token"] = "unix-token"
        write_json(path, conf)
        size = g.log_size()
        r = h.gatehouse_cmd("reload", "-c", path, cwd=rundir)
        h.eq((r.returncode, r.stdout.strip()), (0, "reloaded"), "reload -c: %s" % r.stderr)
        g.wait_log(r"configuration reloaded", since=size)
        h.eq(g.get("v.admin.test", "/new").status, 200, "the new site answers")
        h.eq(unix_get(sock, "/health")[0], 401, "no token after the reload")
        h.eq(unix_get(sock, "/health", token="unix-token")[0], 200, "the token")
        r = h.gatehouse_cmd("health", "-c", path)
        h.eq(r.returncode, 0, "health -c sends the file's token: %s" % r.stderr)
        r = h.gatehouse_cmd("health", "--admin", "unix:" + sock, "--token", "wrong")
        h.eq(r.returncode, 1, "health with a wrong --token")
        h.contains(r.stderr, "401", "why")
        # A file that does not validate: `reload -c` says why without asking;
        # asked by address, the server refuses it with its own errors.
        good = dict(conf)
        with open(path, "w") as f:
            f.write('{"sites": [{"hosts": ["x.test"], "upstreams": ["nope"]}]}')
        r = h.gatehouse_cmd("reload", "-c", path)
        h.eq(r.returncode, 1, "reload -c of a bad file")
        h.contains(r.stderr, 'sites[0].upstreams[0]: expected an address "host:port"', "why")
        r = h.gatehouse_cmd("reload", "--admin", "unix:" + sock, "--token", "unix-token")
        h.eq(r.returncode, 1, "the server refuses the bad file")
        h.contains(r.stderr, "gatehouse reload: refused (422):", "the server's answer")
        h.contains(r.stderr, 'sites[0].upstreams[0]: expected an address "host:port"',
                   "the server's errors")
        h.eq(g.get("v.admin.test", "/still").status, 200, "still serving")
        write_json(path, good)
        g.signal(15)
        h.eq(g.wait_exit(20), 0, "exit status")
        h.check(not os.path.exists(sock), "the socket is removed at exit")
        # A file that is not a socket is never removed: the server refuses to start.
        with open(sock, "w") as f:
            f.write("not a socket")
        r = h.gatehouse_cmd("run", "-c", path, cwd=rundir)
        h.eq(r.returncode, 1, "run with a regular file where the socket goes")
        h.contains(r.stderr, "admin.listen unix:%s: the file exists and is not a socket" % sock,
                   "why")
        with open(sock) as f:
            h.eq(f.read(), "not a socket", "the file is left alone")
    finally:
        if g.alive():
            g.stop()


def test_tcp_admin_needs_a_token():
    """A TCP admin address, loopback too, needs a token: validate says what
    to do; insecure_no_token is accepted, logged loudly, and serves without
    one."""
    https, http, port = h.free_port(), h.free_port(), h.free_port()
    cwd = h.subdir(h._next_name("notoken"))
    crt, key = h.ca().leaf(["n.admin.test"])
    site = {"hosts": ["n.admin.test"], "upstreams": [echo().addr], "tls": {"cert": crt, "key": key}}
    conf = h.make_config([site], https, http, admin={"listen": "127.0.0.1:%d" % port},
                         storage=os.path.join(cwd, "storage"))
    path = os.path.join(cwd, "gatehouse.json")
    write_json(path, conf)
    r = h.gatehouse_cmd("validate", "-c", path)
    h.eq(r.returncode, 2, "validate without a token")
    for part in ('admin: missing "token", which a TCP "listen" address needs, loopback too',
                 'set "token"', 'listen on a unix socket', 'set "insecure_no_token": true'):
        h.contains(r.stderr, part, "the message")
    r = h.gatehouse_cmd("run", "-c", path)
    h.eq(r.returncode, 2, "run without a token")
    conf["admin"]["insecure_no_token"] = True
    write_json(path, conf)
    r = h.gatehouse_cmd("validate", "-c", path)
    h.eq((r.returncode, r.stdout.strip()), (0, "OK"), "validate with insecure_no_token: %s"
         % r.stderr)
    g = h.Gatehouse([h.GATEHOUSE_BIN, "run", "-c", path], h._next_name("gatehouse"), cwd, https,
                    http, config_path=path, config=conf)
    try:
        h.wait_until(lambda: h.port_accepts(port), 10, "the admin port")
        h.eq(admin(port, "GET", "/health", token=None)[0], 200, "no token needed")
        g.wait_log(r"warn\s+admin: INSECURE: the admin API on 127\.0\.0\.1:%d has no token" % port)
        r = h.gatehouse_cmd("health", "-c", path)
        h.eq(r.returncode, 0, "health: %s" % r.stderr)
    finally:
        g.stop()


def test_reload_moves_the_admin_address():
    """A reload that changes admin.listen binds the new address first and
    closes the old one (a connection already open finishes); one that
    cannot bind it is refused and the old address keeps answering; admin
    can be removed and added back by reloads."""
    a, b, busy = h.free_port(), h.free_port(), h.free_port()
    g = start([h.site(["mv.admin.test"], [echo()])])
    port = g.admin_port
    conf = g.config
    old = h.Conn.plain(port)
    try:
        old.send("GET /health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n\r\n"
                 % (port, TOKEN))
        h.eq(old.read_response().status, 200, "a keep-alive connection to the old address")
        conf["admin"]["listen"] = "127.0.0.1:%d" % b
        g.write_config(conf)
        r = h.gatehouse_cmd("reload", "--admin", "127.0.0.1:%d" % port, "--token", TOKEN)
        h.eq((r.returncode, r.stdout.strip()), (0, "reloaded"), "reload: %s" % r.stderr)
        h.eq(admin_json(b, "GET", "/health"), {"status": "ok"}, "the new address answers")
        h.check(not h.port_accepts(port), "the old address is closed")
        old.send("GET /health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n\r\n"
                 % (port, TOKEN))
        h.eq(old.read_response().status, 200, "the open connection finishes its work")
    finally:
        old.close()
    # Addresses that cannot be bound: refused, and b keeps answering.
    import socket as _socket
    taken = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", busy))
    taken.listen(1)
    try:
        for listen, why in (("unix:/nonexistent-gatehouse-dir/admin.sock", ""),
                            ("127.0.0.1:%d" % busy, "address already in use")):
            conf["admin"]["listen"] = listen
            g.write_config(conf)
            r = h.gatehouse_cmd("reload", "--admin", "127.0.0.1:%d" % b, "--token", TOKEN)
            h.eq(r.returncode, 1, "reload to %s refused" % listen)
            h.contains(r.stderr, "admin.listen %s: %s" % (listen, why), "why")
            h.contains(r.stderr, "; still serving the previous configuration", "what remains")
            h.eq(admin_json(b, "GET", "/health"), {"status": "ok"}, "the old address answers")
    finally:
        taken.close()
    h.check(not os.path.exists("/nonexistent-gatehouse-dir"), "nothing made")
    # Removed by a reload, added back by another (SIGHUP: no admin to ask).
    del conf["admin"]
    g.write_config(conf)
    h.eq(admin_json(b, "POST", "/reload"), {"status": "reloaded"}, "reload without admin")
    h.wait_until(lambda: not h.port_accepts(b), 10, "the admin address to close")
    conf["admin"] = {"listen": "127.0.0.1:%d" % a, "token": TOKEN}
    g.write_config(conf)
    size = g.log_size()
    g.reload()
    g.wait_log(r"configuration reloaded", since=size)
    h.eq(admin_json(a, "GET", "/health"), {"status": "ok"}, "admin added by a reload")
    h.eq(g.stop(), 0, "exit status")
    h.not_contains(g.log(), "loop not empty", "clean loops")


# --- with Pebble -----------------------------------------------------------------------

HTTPS_PORT = h.free_port()
HTTP_PORT = h.free_port()
MANAGED = "adm1.example.com"
ON_DEMAND = "a.od.test"


def pb():
    if "pebble" not in _s:
        _s["pebble"] = pebble.start(http_port=HTTP_PORT, tls_port=HTTPS_PORT)
    return _s["pebble"]


def verified_get(name, path="/", timeout=60):
    ctx = h.client_context(cafile=pb().write_roots())

    def attempt():
        try:
            c = h.Conn.tls(HTTPS_PORT, name, ctx=ctx, timeout=timeout)
        except (OSError, Exception):
            return None
        try:
            r = c.request("GET", path, name)
            return r if r.status == 200 else None
        finally:
            c.close()
    return h.wait_until(attempt, timeout, "a verified request for %s" % name, interval=0.2)


def test_pebble_certs_renew_revoke_delete():
    p = pb()
    port = h.free_port()
    where = h.gatehouse_dir()
    storage = os.path.join(where[1], "storage")
    conf = h.make_config(
        [h.site([MANAGED], [echo()], cert=None),
         h.site(["*"], [echo()], cert=None, default=True)], HTTPS_PORT, HTTP_PORT, workers=2,
        acme={"directory": p.directory_url, "email": "ops@example.com",
              "ca_roots": [p.ca_file], "challenges": ["tls-alpn-01"]},
        on_demand={"allow": ["*.od.test"], "wait_budget": "30s"},
        storage=storage, admin={"listen": "127.0.0.1:%d" % port, "token": TOKEN})
    g = h.run_config(conf, HTTPS_PORT, HTTP_PORT, where)
    path = g.config_path
    try:
        verified_get(MANAGED)
        verified_get(ON_DEMAND)
        # /certs holds what storage holds.
        certs = admin_json(port, "GET", "/certs")
        r = h.gatehouse_cmd("cert", "list", "-c", path, "--json")
        h.eq(r.returncode, 0, "cert list exit (%s)" % r.stderr)
        listed = json.loads(r.stdout)
        h.eq(sorted(c["name"] for c in certs), sorted(c["name"] for c in listed),
             "names in /certs and in cert list")
        by = {c["name"]: c for c in certs}
        for c in listed:
            h.eq(by[c["name"]]["not_after"], c["not_after"], "not_after of %s" % c["name"])
            h.eq(by[c["name"]]["issuer"], c["issuer"], "issuer of %s" % c["name"])
            h.eq(by[c["name"]]["sans"], c["sans"], "sans of %s" % c["name"])
        h.eq(by[MANAGED]["source"], "managed", "source of the managed name")
        h.eq(by[ON_DEMAND]["source"], "on-demand", "source of the on-demand name")
        pem = os.path.join(storage, "certs", MANAGED, "cert.pem")
        serial = subprocess.run(["openssl", "x509", "-in", pem, "-noout", "-serial"],
                                stdout=subprocess.PIPE, check=True).stdout.decode()
        serial = serial.strip().split("=")[1].lower().lstrip("0") or "0"
        h.eq(by[MANAGED]["serial"], serial, "serial")
        h.check(by[MANAGED]["renewal_time"] < by[MANAGED]["not_after"], "renewal before expiry")
        h.eq(by[MANAGED]["last_error"], None, "no renewal error")
        h.eq(by[MANAGED]["ca"], pb().directory_url, "the CA that issued it (its directory)")
        h.eq(by[MANAGED]["profile"], None, "no ACME profile asked for")
        h.eq(by[MANAGED]["renewal_failures"], 0, "no renewal failures")
        # Where the renewal time comes from: Debian's Pebble has no ARI,
        # so a third of the lifetime (test_renewal has an ARI window).
        h.eq((by[MANAGED]["renewal_source"], by[MANAGED]["ari_window"], by[MANAGED]["renewing"]),
             ("lifetime", None, False), "renewal source, window, order running")
        # /acme: the CA, its counters, and the two orders, newest first.
        acme = admin_json(port, "GET", "/acme")
        h.eq(acme["enabled"], True, "ACME on")
        h.eq([ca["directory"] for ca in acme["cas"]], [p.directory_url], "the CA")
        counts = {(o["challenge"], o["result"]): o["count"] for o in acme["cas"][0]["orders"]}
        h.eq(counts[("tls-alpn-01", "ok")], 2, "orders ok over TLS-ALPN-01")
        h.eq(sum(counts.values()), 2, "no other orders")
        h.eq(acme["cas"][0]["backoff_until"], None, "no back-off")
        recent = acme["recent_orders"]
        h.eq([o["names"] for o in recent], [[ON_DEMAND], [MANAGED]], "recent orders, newest first")
        for o in recent:
            h.eq((o["result"], o["kind"], o["challenge"], o["error"], o["ca"]),
                 ("ok", "issue", "tls-alpn-01", None, acme["cas"][0]["name"]), "order %r" % o)
            h.check(o["duration_ms"] >= 0, "duration")
        m = scrape(port)
        h.check(sample(m, "gatehouse_certificate_expiry_timestamp_seconds", name=MANAGED) > 0,
                "expiry of the managed name")
        h.eq(sample(m, "gatehouse_certificate_renewal_failures", name=MANAGED), 0,
             "renewal failures of the managed name")
        h.check(sample(m, "gatehouse_ondemand_decisions_total", result="allowed") >= 1,
                "on-demand decision counted")
        # Two orders so far (the managed name over TLS-ALPN-01, then the
        # on-demand one), both successful; the policy allowed one name.
        h.eq(sample(m, "gatehouse_acme_orders_total", ca=p.directory_url,
                    challenge="tls-alpn-01", result="ok"), 2, "orders by challenge and result")
        h.eq(sample(m, "gatehouse_acme_orders_total", result="failed"), 0, "failed orders")
        h.eq(sample(m, "gatehouse_acme_ca_fallbacks_total", ca=p.directory_url), 0,
             "orders handed on to another CA")
        h.eq(sample(m, "gatehouse_acme_ca_backoff_seconds", ca=p.directory_url), 0,
             "the CA is not backing off")
        h.eq(sample(m, "gatehouse_ondemand_policy_decisions_total", result="allowed",
                    reason="policy"), 1, "policy decisions")
        fam = m.get("gatehouse_ondemand_ask_latency_seconds")
        h.check(fam is not None and fam.get("type") == "summary", "ask latency summary exposed")
        counts = [v for (n, _), v in fam["samples"].items()
                  if n == "gatehouse_ondemand_ask_latency_seconds_count"]
        h.eq(counts, [0], "ask requests (no ask endpoint configured)")
        # A name outside on_demand.allow: refused in the worker, and the
        # handshake fails for want of a certificate.
        try:
            h.Conn.tls(HTTPS_PORT, "x.not-allowed.test", ctx=h.client_context(verify=False)).close()
            raise h.Fail("a handshake for a name outside the allow list succeeded")
        except (OSError, Exception) as e:
            if isinstance(e, h.Fail):
                raise
        m2 = scrape(port)
        h.eq(sample(m2, "gatehouse_ondemand_decisions_total", result="refused", reason="precheck")
             - sample(m, "gatehouse_ondemand_decisions_total", result="refused", reason="precheck"),
             1, "precheck refusal counted")
        h.eq(sample(m2, "gatehouse_handshakes_total", reason="unknown_name")
             - sample(m, "gatehouse_handshakes_total", reason="unknown_name"), 1,
             "unknown_name handshake failure counted")

        # DELETE evicts the on-demand certificate; the next handshake loads it from storage.
        size = g.log_size()
        h.eq(admin_json(port, "DELETE", "/certs/" + ON_DEMAND)["status"], "evicted", "DELETE")
        g.wait_log(r"%s: evicted from memory" % re.escape(ON_DEMAND), since=size)
        h.eq(admin(port, "DELETE", "/certs/" + ON_DEMAND)[0], 404, "second DELETE")
        # A reload must not bring it back into memory: the next handshake
        # loads it from storage.
        h.eq(admin_json(port, "POST", "/reload")["status"], "reloaded", "reload after DELETE")
        verified_get(ON_DEMAND, "/again")
        g.wait_log(r"%s: certificate loaded from storage" % re.escape(ON_DEMAND), since=size)
        h.eq(admin(port, "DELETE", "/certs/" + MANAGED)[0], 409, "managed names stay")

        # Renew: 202 at once, a new certificate from the control thread.
        size = g.log_size()
        doc = admin_json(port, "POST", "/certs/%s/renew" % MANAGED, expect=202)
        h.eq(doc["status"], "renewing", "renew answer")
        g.wait_log(r"%s: renewal done" % re.escape(MANAGED), since=size, timeout=60)
        renewed = admin_json(port, "GET", "/certs/" + MANAGED)
        last = admin_json(port, "GET", "/acme")["recent_orders"][0]
        h.eq((last["names"], last["kind"], last["result"]), ([MANAGED], "renew", "ok"),
             "the renewal in /acme")
        h.check(renewed["serial"] != serial, "a new serial after renew")
        # The same from the command line, which finds the server through
        # the config file and waits for the new certificate.
        r = h.gatehouse_cmd("cert", "renew", MANAGED, "-c", path, "--wait", timeout=120)
        h.eq(r.returncode, 0, "cert renew --wait: %s" % r.stderr)
        again = admin_json(port, "GET", "/certs/" + MANAGED)
        h.check(again["serial"] not in ("", renewed["serial"]), "a new serial after cert renew")
        h.contains(r.stdout, "%s: renewed, serial %s" % (MANAGED, again["serial"]),
                   "cert renew's output")
        renewed = again
        r = h.gatehouse_cmd("cert", "renew", "nothing.example.com", "-c", path)
        h.eq(r.returncode, 1, "cert renew of an unknown name")
        h.contains(r.stderr, "answered 404", "why")

        # Revoke answers when the CA has revoked it.
        st = p.cert_status(renewed["serial"])
        h.check(st is not None, "Pebble knows serial %s" % renewed["serial"])
        h.eq(st["Status"], "Valid", "status before revocation")
        h.eq(admin(port, "POST", "/certs/%s/revoke" % MANAGED, body=b'{"reason": 7}')[0], 400,
             "reason 7 refused")
        doc = admin_json(port, "POST", "/certs/%s/revoke" % MANAGED,
                         body=b'{"reason": "superseded"}')
        h.eq(doc["status"], "revoked", "revoke answer")
        h.eq(p.cert_status(renewed["serial"])["Status"], "Revoked", "Pebble after revoke")
        # The scheduler renews a revoked certificate at once.
        g.wait_log(r"%s: the certificate was revoked: renewing now" % re.escape(MANAGED),
                   since=size, timeout=10)
        fresh = h.wait_until(lambda: (lambda c: c if c["serial"] != renewed["serial"] else None)(
            admin_json(port, "GET", "/certs/" + MANAGED)), 60, "a new certificate after revoke")
        h.eq(p.cert_status(fresh["serial"])["Status"], "Valid", "the new certificate is valid")
        verified_get(MANAGED, "/after-revoke")
        h.eq(admin(port, "POST", "/certs/nothing.example.com/revoke")[0], 404, "unknown name")
        # Stopping with the admin API up is clean.
        h.eq(g.stop(), 0, "exit status")
        h.not_contains(g.log(), "loop not empty", "clean loops")
    finally:
        if g.alive():
            g.stop()


def test_quick_mode_admin():
    port = h.free_port()
    g = h.start_quick([echo()], ["quick.admin.test"],
                      args=["--admin", "127.0.0.1:%d" % port, "--admin-token", TOKEN])
    h.wait_until(lambda: h.port_accepts(port), 10, "the admin port accepts")
    h.eq(admin_json(port, "GET", "/health"), {"status": "ok"}, "/health in quick mode")
    doc = admin_json(port, "POST", "/reload", expect=422)
    h.contains(doc["errors"][0], "quick mode", "quick mode has no file to reload")
    crt, key = h.ca().leaf(["x.test"])
    r = h.gatehouse_cmd("proxy", "--to", "127.0.0.1:1", "--from", "x.test", "--cert", crt,
                        "--key", key, "--admin", "127.0.0.1:9", "--admin-token", TOKEN,
                        "--print-config")
    h.eq(r.returncode, 0, "print-config exit (%s)" % r.stderr)
    h.eq(json.loads(r.stdout)["admin"]["listen"], "127.0.0.1:9", "--admin in the document")
    h.eq(g.stop(), 0, "exit status")


if __name__ == "__main__":
    h.main()
