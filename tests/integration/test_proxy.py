#!/usr/bin/env python3
"""test_proxy: the HTTP/1.1 reverse proxy: forwarded headers, hop-by-hop
headers, keep-alive on both sides, large bodies both ways (chunked and
Content-Length), WebSocket, HEAD/204/304, pipelining, 100-continue,
routing, balancing, and upstream failures (502, 504, passive health)."""

import base64
import hashlib
import json
import os
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

BIG = 50 * 1024 * 1024
LEAK_WORDS = ("127.0.0.1", "refused", "errno", "econn", "uv_", "timed out", "etimedout",
              "upstream 127", "connect(")

_s = {}


def setup():
    """Main instance A (2 workers, default timeouts); instance B (1 worker,
    upstream_response 1s) for 504 and passive health; instance C (1 worker)
    for least_conn. Built once, on first use."""
    if _s:
        return _s
    e = {n: h.start_echo() for n in ("app", "api", "v2", "ka", "r1", "r2", "slow", "p1",
                                      "l1", "l2", "stale")}
    _s["e"] = e
    _s["dead"] = dead = h.free_port()      # nobody listens here
    _s["dead2"] = dead2 = h.free_port()
    _s["A"] = h.start_gatehouse([
        h.site(["app.test"], [e["app"]], routes=[
            {"path": "/api/", "upstreams": [e["api"]]},
            {"path": "/api/v2/", "upstreams": [e["v2"]]},
        ]),
        h.site(["ka.test"], [e["ka"]]),
        h.site(["rr.test"], [e["r1"], e["r2"]], balance="round_robin"),
        h.site(["down.test"], ["127.0.0.1:%d" % dead]),
        h.site(["hsts.test"], [e["app"]], hsts={"max_age": "365d", "include_subdomains": True}),
        h.site(["hsts2.test"], [e["app"]], hsts="max-age=63072000; includeSubDomains; preload"),
        h.site(["stale.test"], [e["stale"]]),
    ], workers=2)
    _s["B"] = h.start_gatehouse([
        h.site(["slow.test"], [e["slow"]]),
        h.site(["ph.test"], ["127.0.0.1:%d" % dead2, e["p1"]], balance="round_robin",
               fail_backoff="30s"),
    ], workers=1, timeouts={"upstream_response": "1s"})
    _s["C"] = h.start_gatehouse([
        h.site(["lc.test"], [e["l1"], e["l2"]], balance="least_conn"),
    ], workers=1)
    return _s


def big_file(name, size):
    path = os.path.join(h.subdir("big"), name)
    sha = hashlib.sha256()
    with open(path, "wb") as f:
        chunk = os.urandom(1 << 20)
        left = size
        i = 0
        while left:
            # Vary each MiB so a proxy that repeats a buffer is caught.
            piece = (i.to_bytes(8, "big") + chunk[8:])[:min(left, len(chunk))]
            f.write(piece)
            sha.update(piece)
            left -= len(piece)
            i += 1
    return path, sha.hexdigest()


def no_leak(body, what, port=None):
    text = body.decode("latin-1").lower()
    h.check(len(body) <= 1024, "%s: body is %d bytes, expected a short page" % (what, len(body)))
    for w in LEAK_WORDS + ((str(port),) if port else ()):
        h.check(w not in text, "%s: body leaks %r: %r" % (what, w, body[:300]))


def test_forwarded_headers():
    A = setup()["A"]
    r = A.get("app.test", "/xf")
    h.eq(r.status, 200, "status")
    d = r.json()
    h.eq(h.echo_headers(d, "Host"), ["app.test"], "Host at the backend")
    h.eq(h.echo_headers(d, "X-Forwarded-For"), ["127.0.0.1"], "X-Forwarded-For")
    h.eq(h.echo_headers(d, "X-Forwarded-Proto"), ["https"], "X-Forwarded-Proto")
    h.eq(h.echo_headers(d, "X-Forwarded-Host"), ["app.test"], "X-Forwarded-Host")
    # Client-supplied values: the proxy's own facts must win; an earlier
    # X-Forwarded-For chain may be kept, but the last hop is the client.
    r = A.get("app.test", "/xf2", headers=[("X-Forwarded-For", "203.0.113.7"),
                                           ("X-Forwarded-Proto", "http"),
                                           ("X-Forwarded-Host", "evil.test")])
    d = r.json()
    xff = h.echo_headers(d, "X-Forwarded-For")
    h.eq(len(xff), 1, "number of X-Forwarded-For headers at the backend (%r)" % xff)
    h.eq(xff[0].split(",")[-1].strip(), "127.0.0.1", "last X-Forwarded-For hop")
    h.eq(h.echo_headers(d, "X-Forwarded-Proto"), ["https"], "X-Forwarded-Proto with a spoofed one")
    h.eq(h.echo_headers(d, "X-Forwarded-Host"), ["app.test"], "X-Forwarded-Host with a spoofed one")
    h.eq(d["method"], "GET", "method")
    h.eq(d["path"], "/xf2", "path")


def test_hop_by_hop_headers_removed():
    A = setup()["A"]
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    c = A.connect("app.test")
    try:
        r = c.request("POST", "/hop?q=1", "app.test", headers=[
            ("Connection", "keep-alive, X-Foo"),
            ("X-Foo", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("Proxy-Connection", "keep-alive"),
            ("X-Keep", "yes"),
            ("Transfer-Encoding", "chunked"),
        ], body=body)
        h.eq(r.status, 200, "status")
        d = r.json()
        for name in ("Keep-Alive", "TE", "Upgrade", "Proxy-Connection", "X-Foo"):
            h.eq(h.echo_headers(d, name), [], "%s at the backend" % name)
        for v in h.echo_headers(d, "Connection"):
            h.not_contains(v.lower(), "x-foo", "Connection header at the backend")
        h.eq(h.echo_headers(d, "X-Keep"), ["yes"], "an end-to-end header")
        h.eq(d["path"], "/hop?q=1", "path with query")
        h.eq(d["body_bytes"], 11, "body bytes after dechunking")
        h.eq(d["body_sha256"], hashlib.sha256(b"hello world").hexdigest(), "body hash")
        te = h.echo_headers(d, "Transfer-Encoding")
        cl = h.echo_headers(d, "Content-Length")
        h.check(not (te and cl), "backend got both Transfer-Encoding %r and Content-Length %r" % (te, cl))
        h.check(te == ["chunked"] or cl == ["11"], "body framing at the backend: TE %r CL %r" % (te, cl))
        # The client connection survives.
        r = c.request("GET", "/hop2", "app.test")
        h.eq(r.status, 200, "request after the hop-by-hop one")
    finally:
        c.close()


def test_keepalive_reuse_both_sides():
    s = setup()
    A, e = s["A"], s["e"]["ka"]
    cnt = h.Counter(e)
    c = A.connect("ka.test")
    conns = []
    try:
        for i in range(20):
            r = c.request("GET", "/ka/%d" % i, "ka.test")
            h.eq(r.status, 200, "request %d on one client connection" % i)
            h.eq(r.json()["path"], "/ka/%d" % i, "path of request %d" % i)
            conns.append(r.header("X-Echo-Conn"))
    finally:
        c.close()
    h.eq(len(set(conns)), 1, "distinct backend connections (X-Echo-Conn) for 20 sequential requests: %r"
         % conns)
    reqs, nconn = cnt.both()
    h.eq(reqs, 20, "requests at the backend")
    h.eq(nconn, 1, "backend connections for 20 requests on one client connection")
    # New client connections reuse the pooled upstream connections (one
    # worker pool each at most).
    for i in range(6):
        c = A.connect("ka.test")
        try:
            for j in range(2):
                h.eq(c.request("GET", "/ka2/%d/%d" % (i, j), "ka.test").status, 200, "status")
        finally:
            c.close()
    reqs, nconn = cnt.both()
    h.eq(reqs, 32, "requests at the backend")
    h.check(nconn <= 2, "backend connections after 6 more client connections: %d (expected <= 2,"
            " one idle pool per worker)" % nconn)


def test_ipv6_listener():
    # One port on both loopbacks; a client on ::1 is forwarded with its
    # address in X-Forwarded-For.
    e = setup()["e"]["app"]
    port, http_port = h.free_port(), h.free_port()
    g = h.start_gatehouse([h.site(["v6.test"], [e])], workers=1, wait=False,
                          listen={"https": ["127.0.0.1:%d" % port, "[::1]:%d" % port],
                                  "http": ["127.0.0.1:%d" % http_port]})
    g.https_port, g.http_port = port, http_port
    h.check_ready(g, [port, http_port])
    h.check_ready(g, [port], host="::1")
    c = h.Conn(h.tls_connect(port, "v6.test", host="::1"))
    try:
        r = c.request("GET", "/v6", "v6.test")
    finally:
        c.close()
    h.eq(r.status, 200, "status over ::1")
    h.eq(h.echo_headers(r.json(), "X-Forwarded-For"), ["::1"], "X-Forwarded-For of a ::1 client")
    h.eq(g.get("v6.test", "/v4").status, 200, "status over 127.0.0.1")


def test_unknown_host_421():
    # SNI names a site, Host names none (and there is no default site).
    s = setup()
    A = s["A"]
    cnt = h.Counter(s["e"]["app"])
    r = A.request("unknown.test", "GET", "/", sni="app.test")
    h.eq(r.status, 421, "status for a Host no site answers")
    h.eq(cnt.requests(), 0, "requests at the SNI site's backend")


def test_access_log_json():
    A = setup()["A"]
    off = A.log_size()
    path = "/logged/%s" % os.urandom(6).hex()
    h.eq(A.get("app.test", path).status, 200, "status")
    m = A.wait_log(r'(?m)^\{.*"%s".*\}$' % path, timeout=5, since=off)
    rec = json.loads(m.group(0))
    for k, v in (("method", "GET"), ("path", path), ("status", 200), ("host", "app.test"),
                 ("client", "127.0.0.1"), ("upstream", setup()["e"]["app"].addr)):
        h.eq(rec.get(k), v, "access log field %r" % k)


def test_access_log_bad_head_has_no_method():
    # A head that fails before its end has no method: "-", never whatever
    # a recycled exchange last held (method 0 is DELETE in llhttp).
    A = setup()["A"]
    for _ in range(4):  # fill the workers' exchange caches
        h.eq(A.get("app.test", "/warm").status, 200, "status")
    off = A.log_size()
    for _ in range(4):
        c = A.connect("app.test")
        c.send(b"\n\n")
        h.eq(c.read_response().status, 400, "a bare line break")
        c.close()
    A.wait_log(r'"status":400', timeout=5, since=off)
    recs = [json.loads(l) for l in A.log_since(off).splitlines()
            if l.startswith("{") and '"status":400' in l]
    h.check(recs, "no access log line for the 400s")
    for rec in recs:
        h.eq(rec.get("method"), "-", "method of a head that failed early")


def test_backend_restart_stale_pool():
    # The backend restarts: connections pooled by the proxy are now dead.
    # The next requests must still succeed (a stale pooled connection is
    # retried on a fresh one), not fail with 502.
    s = setup()
    A = s["A"]
    c = A.connect("stale.test")
    try:
        for i in range(3):
            h.eq(c.request("GET", "/st/%d" % i, "stale.test").status, 200, "before restart")
        old = s["e"]["stale"]
        old.stop()
        s["e"]["stale"] = h.start_echo(port=old.port)
        for i in range(3):
            r = c.request("GET", "/st2/%d" % i, "stale.test")
            h.eq(r.status, 200, "request %d after the backend restarted" % i)
            h.eq(r.json()["path"], "/st2/%d" % i, "path")
        r = c.request("POST", "/st3", "stale.test", body=b"x" * 1000)
        h.eq(r.status, 200, "POST after the backend restarted")
    finally:
        c.close()


def test_backend_connection_close():
    # The backend closes after answering: the proxy must not hand the
    # client its hop-by-hop "Connection: close", must keep the client
    # connection, and must not reuse the closed upstream connection.
    A = setup()["A"]
    c = A.connect("app.test")
    try:
        r1 = c.request("GET", "/close", "app.test")
        h.eq(r1.status, 200, "status of /close")
        h.eq(r1.json()["path"], "/close", "path")
        h.check("close" not in (r1.header("Connection") or "").lower(),
                "backend's Connection: close was passed to the client: %r" % r1.headers)
        for i in range(3):
            r = c.request("GET", "/after-close/%d" % i, "app.test")
            h.eq(r.status, 200, "request %d after the backend closed its connection" % i)
            h.check(r.header("X-Echo-Conn") != r1.header("X-Echo-Conn"),
                    "request after /close claims the closed backend connection")
    finally:
        c.close()


def test_hsts_header():
    A = setup()["A"]
    r = A.get("hsts.test", "/")
    h.eq(r.status, 200, "status")
    v = (r.header("Strict-Transport-Security") or "").lower().replace(" ", "")
    h.contains(v, "max-age=31536000", "Strict-Transport-Security")
    h.contains(v, "includesubdomains", "Strict-Transport-Security")
    r = A.get("app.test", "/")
    h.eq(r.header("Strict-Transport-Security"), None, "HSTS on a site without hsts")
    # The header's own text as the value (issue 13), preload included.
    r = A.get("hsts2.test", "/")
    h.eq(r.header("Strict-Transport-Security"), "max-age=63072000; includeSubDomains; preload",
         "HSTS from the string form")


def test_hsts_string_form_is_validated():
    crt, key = h.ca().leaf(["v.test"])
    cases = [
        ("max-age=31536000", 0, None),
        ('MAX-AGE="600" ; includesubdomains;', 0, None),
        ("includeSubDomains", 2, "max-age is required"),
        ("max-age=0", 2, "max-age needs a positive whole number of seconds"),
        ("max-age=-5", 2, "max-age needs a positive whole number of seconds"),
        ("max-age=1h", 2, "max-age needs a positive whole number of seconds"),
        ("max-age=60; max-age=70", 2, "max-age is given twice"),
        ("max-age=60; preload=yes", 2, "includeSubDomains and preload take no value"),
        ("max-age=60; includeSubdomain", 2, "unknown directive; known: max-age, "
         "includeSubDomains, preload"),
        ("max-age=60 includeSubDomains", 2, 'directives are separated by ";"'),
    ]
    for i, (value, rc, why) in enumerate(cases):
        path = os.path.join(h.subdir("hsts"), "h%d.json" % i)
        with open(path, "w") as f:
            json.dump({"sites": [{"hosts": ["v.test"], "upstreams": ["127.0.0.1:9"],
                                  "tls": {"cert": crt, "key": key}, "hsts": value}]}, f)
        r = h.gatehouse_cmd("validate", "-c", path, "--print")
        h.eq(r.returncode, rc, "validate %r: %s" % (value, r.stderr))
        if why is None:
            hsts = json.loads(r.stdout)["sites"][0]["hsts"]
            h.check(hsts["max_age"] in ("365d", "10m"), "printed as the object: %r" % hsts)
        else:
            h.contains(r.stderr, "sites[0].hsts: expected a Strict-Transport-Security value", value)
            h.contains(r.stderr, "(%s)" % why, value)


def test_concurrent_clients():
    A = setup()["A"]
    errors = []

    def client(n):
        try:
            c = h.Conn.tls(A.https_port, "app.test")
            try:
                for i in range(10):
                    body = os.urandom(1000 + n * 37 + i)
                    r = c.request("POST", "/cc/%d/%d" % (n, i), "app.test", body=body)
                    d = r.json()
                    if (r.status, d["path"], d["body_sha256"]) != (
                            200, "/cc/%d/%d" % (n, i), hashlib.sha256(body).hexdigest()):
                        errors.append("client %d request %d: %r %r" % (n, i, r.status, d))
            finally:
                c.close()
        except Exception as ex:  # reported below
            errors.append("client %d: %r" % (n, ex))
    threads = [threading.Thread(target=client, args=(n,)) for n in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    h.check(not any(t.is_alive() for t in threads), "concurrent clients still running after 30s")
    h.eq(errors, [], "errors from 24 concurrent keep-alive clients")


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_backpressure_slow_reader():
    # A client that stops reading a 50 MiB download must not make the proxy
    # buffer it (limits.write_queue_bytes): memory stays flat, and the
    # download completes byte-exact once the client reads again.
    A = setup()["A"]
    c = A.connect("app.test")
    try:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        before = rss_bytes(A.pid)
        c.send(h.build_request("GET", "/size/%d" % BIG, "app.test"))
        peak = before
        t_end = time.monotonic() + 1.5
        while time.monotonic() < t_end:
            peak = max(peak, rss_bytes(A.pid))
            if peak - before > 24 * 1024 * 1024:
                break
            time.sleep(0.05)
        h.check(peak - before <= 24 * 1024 * 1024,
                "gatehouse RSS grew by %.1f MiB while the client read nothing"
                % ((peak - before) / 1048576.0))
        r = c.read_response("GET", timeout=40)
        h.eq(r.status, 200, "status")
        h.eq(len(r.body), BIG, "body length")
        h.check(r.body == h.pattern_bytes(BIG), "body differs from the backend's pattern")
    finally:
        c.close()


def test_chunked_upload_50mib():
    A = setup()["A"]
    path, sha = big_file("up.bin", BIG)
    r = A.curl("app.test", "/upload", "-X", "POST", "--data-binary", "@" + path,
               "-H", "Transfer-Encoding: chunked", "-H", "Content-Type: application/octet-stream",
               timeout=50)
    h.eq(r.rc, 0, "curl exit status (%s)" % r.stderr)
    h.eq(r.status, 200, "status")
    d = r.json()
    h.eq(d["method"], "POST", "method at the backend")
    h.eq(d["body_bytes"], BIG, "body bytes at the backend")
    h.eq(d["body_sha256"], sha, "body SHA-256 at the backend")


def test_expect_100_continue():
    A = setup()["A"]
    c = A.connect("app.test")
    try:
        c.send(h.build_request("POST", "/expect", "app.test",
                               [("Expect", "100-continue"), ("Content-Length", "10")]))
        r = c.read_response("POST", timeout=5, interim=True)
        h.eq(r.status, 100, "interim status before the body was sent")
        c.send(b"0123456789")
        r = c.read_response("POST")
        h.eq(r.status, 200, "final status")
        d = r.json()
        h.eq(d["body_bytes"], 10, "body bytes")
        h.eq(d["body_sha256"], hashlib.sha256(b"0123456789").hexdigest(), "body hash")
    finally:
        c.close()
    # curl waits for the 100 (up to --expect100-timeout) before sending.
    path, sha = big_file("expect.bin", 4 * 1024 * 1024)
    r = A.curl("app.test", "/expect2", "-v", "--expect100-timeout", "20",
               "-H", "Expect: 100-continue", "--data-binary", "@" + path, timeout=40)
    h.eq(r.rc, 0, "curl exit status (%s)" % r.stderr[-500:])
    h.eq(r.status, 200, "status")
    h.contains(r.stderr, "< HTTP/1.1 100 Continue", "curl -v output")
    h.check(r.elapsed < 10, "upload with Expect took %.1fs (100 Continue not relayed?)" % r.elapsed)
    h.eq(r.json()["body_sha256"], sha,
         "body hash")


def test_chunked_download_50mib_with_trailer():
    A = setup()["A"]
    out = os.path.join(h.subdir("big"), "chunked.out")
    r = A.curl("app.test", "/chunked/%d" % BIG, output=out, timeout=50)
    h.eq(r.rc, 0, "curl exit status (%s)" % r.stderr)
    h.eq(r.status, 200, "status")
    h.eq(os.path.getsize(out), BIG, "downloaded bytes")
    h.eq(h.sha256_file(out), hashlib.sha256(h.pattern_bytes(BIG)).hexdigest(), "downloaded SHA-256")
    h.contains(r.headers_text.lower(), "transfer-encoding: chunked", "response headers")
    h.contains(r.headers_text, "X-Trailer: done", "trailer seen by curl (-D)")
    # A small one on a raw connection: framing and trailer exact, and the
    # connection stays usable.
    c = A.connect("app.test")
    try:
        r = c.request("GET", "/chunked/1000", "app.test", headers=[("TE", "trailers")])
        h.eq(r.status, 200, "status")
        h.eq(r.body, h.pattern_bytes(1000), "body")
        h.check(r.chunked, "response is not chunked")
        h.eq(r.trailer("X-Trailer"), "done", "trailer")
        r = c.request("GET", "/after", "app.test")
        h.eq(r.json()["path"], "/after", "request after the chunked response")
    finally:
        c.close()


def test_content_length_download_50mib():
    A = setup()["A"]
    out = os.path.join(h.subdir("big"), "size.out")
    r = A.curl("app.test", "/size/%d" % BIG, output=out, timeout=50)
    h.eq(r.rc, 0, "curl exit status (%s)" % r.stderr)
    h.eq(r.status, 200, "status")
    h.contains(r.headers_text, "Content-Length: %d" % BIG, "response headers")
    h.eq(os.path.getsize(out), BIG, "downloaded bytes")
    h.eq(h.sha256_file(out), hashlib.sha256(h.pattern_bytes(BIG)).hexdigest(), "downloaded SHA-256")


def test_websocket_echo():
    A = setup()["A"]
    key = base64.b64encode(os.urandom(16)).decode()
    c = A.connect("app.test")
    try:
        c.send(h.build_request("GET", "/ws", "app.test", [
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]))
        r = c.read_response("GET")
        h.eq(r.status, 101, "upgrade status")
        h.eq((r.header("Upgrade") or "").lower(), "websocket", "Upgrade header in the 101")
        want = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        h.eq(r.header("Sec-WebSocket-Accept"), want, "Sec-WebSocket-Accept")
        deadline = time.monotonic() + 20
        for size in (5, 1, 65536, 300000):
            data = os.urandom(size)
            c.send(data)
            got = c._read_exact(size, deadline)
            h.check(got == data, "%d bytes echoed through the tunnel differ" % size)
        h.eq(c.buf, b"", "extra bytes from the tunnel")
    finally:
        c.close()


def test_head_204_304_have_no_body():
    A = setup()["A"]
    c = A.connect("app.test")
    try:
        r = c.request("HEAD", "/size/1000", "app.test")
        h.eq(r.status, 200, "HEAD status")
        h.check(r.header("Content-Length") in (None, "1000"),
                "HEAD Content-Length %r" % r.header("Content-Length"))
        r = c.request("HEAD", "/chunked/1000", "app.test")
        h.eq(r.status, 200, "HEAD of a chunked resource")
        for code in (204, 304):
            r = c.request("GET", "/status/%d" % code, "app.test")
            h.eq(r.status, code, "status")
            h.eq(r.header("Transfer-Encoding"), None, "Transfer-Encoding on a %d" % code)
        # Any stray body bytes above would break this response's parse.
        r = c.request("GET", "/after", "app.test")
        h.eq(r.status, 200, "request after HEAD/204/304")
        h.eq(r.json()["path"], "/after", "path")
        h.eq(c.buf, b"", "stray bytes after the responses")
    finally:
        c.close()


def test_pipelined_requests():
    A = setup()["A"]
    c = A.connect("app.test")
    try:
        c.send(h.build_request("GET", "/p/1", "app.test") +
               h.build_request("POST", "/p/2", "app.test", body=b"abc") +
               h.build_request("GET", "/p/3", "app.test"))
        paths = []
        for method in ("GET", "POST", "GET"):
            r = c.read_response(method)
            h.eq(r.status, 200, "pipelined status")
            d = r.json()
            paths.append(d["path"])
            if method == "POST":
                h.eq(d["body_bytes"], 3, "pipelined POST body")
        h.eq(paths, ["/p/1", "/p/2", "/p/3"], "pipelined responses in order")
    finally:
        c.close()


def test_path_prefix_routing():
    s = setup()
    A, e = s["A"], s["e"]
    cnt = {n: h.Counter(e[n]) for n in ("app", "api", "v2")}
    for path in ("/api/x", "/api/v2/y", "/apiary", "/", "/api"):
        r = A.get("app.test", path)
        h.eq(r.status, 200, "status of %s" % path)
        h.eq(r.json()["path"], path, "path at the backend")
    got = {n: c.requests() for n, c in cnt.items()}
    # /api/x -> api; /api/v2/y -> v2 (longest prefix); /apiary, /, /api -> site.
    h.eq(got, {"app": 3, "api": 1, "v2": 1}, "requests per upstream")


def test_round_robin():
    s = setup()
    A, e = s["A"], s["e"]
    c1, c2 = h.Counter(e["r1"]), h.Counter(e["r2"])
    c = A.connect("rr.test")
    try:
        for i in range(10):
            h.eq(c.request("GET", "/rr/%d" % i, "rr.test").status, 200, "status")
    finally:
        c.close()
    n1, n2 = c1.requests(), c2.requests()
    h.eq(n1 + n2, 10, "requests at both backends")
    h.check(n1 >= 4 and n2 >= 4, "round robin split 10 requests %d/%d" % (n1, n2))


def test_least_conn():
    s = setup()
    C, e = s["C"], s["e"]
    cnt = {"l1": h.Counter(e["l1"]), "l2": h.Counter(e["l2"])}
    slow = C.connect("lc.test")
    try:
        slow.send(h.build_request("GET", "/delay/2500", "lc.test"))
        t0 = time.monotonic()

        def busy():
            for n, c in cnt.items():
                if c.requests() >= 1:
                    return n
            return None
        busy_name = h.wait_until(busy, 2, "the slow request to reach a backend")
        for c in cnt.values():
            c.reset()
        idle_name = "l2" if busy_name == "l1" else "l1"
        q = C.connect("lc.test")
        try:
            for i in range(4):
                h.eq(q.request("GET", "/quick/%d" % i, "lc.test").status, 200, "quick status")
        finally:
            q.close()
        h.check(time.monotonic() - t0 < 2.3, "quick requests took too long to be meaningful")
        h.eq({busy_name: cnt[busy_name].requests(), idle_name: cnt[idle_name].requests()},
             {busy_name: 0, idle_name: 4},
             "quick requests while %s has one in flight (least_conn)" % busy_name)
        r = slow.read_response("GET", timeout=10)
        h.eq(r.status, 200, "slow request status")
    finally:
        slow.close()


def test_upstream_down_502():
    s = setup()
    A = s["A"]
    t0 = time.monotonic()
    r = A.get("down.test", "/x")
    h.eq(r.status, 502, "status with the upstream down")
    h.check(time.monotonic() - t0 < 5, "502 took %.1fs" % (time.monotonic() - t0))
    no_leak(r.body, "502 body", s["dead"])


def test_upstream_slow_504():
    s = setup()
    B = s["B"]
    t0 = time.monotonic()
    r = B.get("slow.test", "/delay/4000", timeout=10)
    dt = time.monotonic() - t0
    h.eq(r.status, 504, "status when the upstream answers after 4s (upstream_response 1s)")
    h.check(0.8 <= dt <= 3.0, "504 arrived after %.2fs, expected about 1s" % dt)
    no_leak(r.body, "504 body", s["e"]["slow"].port)
    # The instance still serves fast requests.
    h.eq(B.get("slow.test", "/fast").status, 200, "fast request after a 504")


def test_client_gone_before_the_answer_is_logged_499():
    # A client that gives up while the upstream is still working leaves an
    # access log line with 499 (nginx's "client closed request").
    s = setup()
    B = s["B"]
    backend = s["e"]["slow"]
    off = B.log_size()
    token = os.urandom(4).hex()
    path = "/delay/3000?gone=%s" % token
    before = backend.stats()["requests"]
    c = B.connect("slow.test")
    c.send(("GET %s HTTP/1.1\r\nHost: slow.test\r\n\r\n" % path).encode())
    # The request is in flight once the backend has it (its /stats call
    # counts itself too).
    h.wait_until(lambda: backend.stats()["requests"] >= before + 2, 5,
                 "the backend to receive the request")
    c.close()
    m = B.wait_log(r'(?m)^\{.*gone=%s.*\}$' % token, timeout=5, since=off)
    rec = json.loads(m.group(0))
    h.eq((rec["status"], rec["method"], rec["path"]), (499, "GET", path), "the access log line")
    h.eq(B.get("slow.test", "/fast").status, 200, "the instance serves on")


def test_passive_health_skips_dead_upstream():
    s = setup()
    B = s["B"]
    cnt = h.Counter(s["e"]["p1"])
    statuses = []
    for i in range(10):
        statuses.append(B.get("ph.test", "/ph/%d" % i).status)
    bad = [i for i, st in enumerate(statuses) if st != 200]
    h.check(len(bad) <= 1, "with one of two upstreams down, statuses were %r (at most the first"
            " failure may show)" % statuses)
    h.check(all(st in (200, 502) for st in statuses), "unexpected statuses %r" % statuses)
    h.eq(cnt.requests(), statuses.count(200), "requests at the live upstream")



class _FlakyBackend:
    """A stdlib HTTP server that answers /healthz with 503 while |sick| is
    set and every other path with 200 "flaky"; counts the other requests."""

    def __init__(self):
        import http.server
        outer = self
        self.sick = True
        self.served = 0

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                if self.path == "/healthz":
                    code, body = (503, b"sick") if outer.sick else (200, b"ok")
                else:
                    outer.served += 1
                    code, body = 200, b"flaky"
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def test_active_health_check():
    """A running upstream whose health check fails gets no traffic (passive
    health cannot see that); once it passes again, it gets traffic again."""
    e = h.start_echo()
    fb = _FlakyBackend()
    try:
        g = h.start_gatehouse([
            h.site(["hc.test"], [e, "127.0.0.1:%d" % fb.port], balance="round_robin",
                   health_check={"path": "/healthz", "interval": "1s", "timeout": "500ms"}),
        ], workers=1)

        def only_echo():
            fb.served = 0
            for i in range(6):
                if g.get("hc.test", "/hc/%d" % i).status != 200:
                    return False
            return fb.served == 0
        h.wait_until(only_echo, 10, "the failing upstream to be taken out of rotation",
                     interval=0.2)
        fb.sick = False

        def both():
            fb.served = 0
            for i in range(6):
                g.get("hc.test", "/hc/%d" % i)
            return fb.served >= 2
        h.wait_until(both, 10, "the recovered upstream to get traffic again", interval=0.2)
        g.wait_log(r"is unhealthy", timeout=5)
        g.wait_log(r"is healthy again", timeout=5)
    finally:
        fb.close()



def test_upstream_name_resolved_again():
    """An upstream named by DNS name (a backend container) may not resolve
    yet when Gatehouse starts, and may come back on another address: the
    name is looked up again after a failed connection. Gatehouse runs in
    its own mount namespace with a private /etc/hosts the test rewrites."""
    hosts = os.path.join(h.subdir("resolve"), "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost\n")
    port = h.free_port()
    name = h._next_name("gatehouse-resolve")
    cwd = h.subdir(name)
    https_port, http_port = h.free_port(), h.free_port()
    conf = h.make_config([h.site(["name.test"], ["gh-backend.test:%d" % port])],
                         https_port, http_port)
    conf["sites"][0]["fail_backoff"] = "1s"
    path = os.path.join(cwd, "gatehouse.json")
    with open(path, "w") as f:
        json.dump(conf, f)
    argv = ["unshare", "--mount", "sh", "-c",
            'mount --bind "$0" /etc/hosts && exec "$1" run -c "$2"', hosts, h.GATEHOUSE_BIN, path]
    g = h.Gatehouse(argv, name, cwd, https_port, http_port, config_path=path, config=conf)
    g.wait_log(r"upstream gh-backend\.test:%d: cannot resolve" % port)
    h.eq(g.get("name.test", "/early").status, 502, "before the name resolves")

    def rewrite(ip):
        with open(hosts, "w") as f:  # in place: the bind mount follows the inode
            f.write("127.0.0.1 localhost\n%s gh-backend.test\n" % ip)

    def requests_at(ip):
        c = h.Conn.plain(port, host=ip)
        try:
            return c.request("GET", "/stats", "%s:%d" % (ip, port)).json()["requests"]
        finally:
            c.close()

    def served_by(ip, what):
        before = requests_at(ip)

        def ok():
            r = g.get("name.test", "/resolved")
            return r.status == 200 and requests_at(ip) > before + 1
        h.wait_until(ok, 15, what, interval=0.2)

    first = h.start_echo(port=port)
    rewrite("127.0.0.1")
    served_by("127.0.0.1", "the name's first address to serve")
    second = h.Proc(h._next_name("echo"), [h.ECHO_BIN, "--listen", "127.0.0.2:%d" % port])
    h.check_ready(second, [port], host="127.0.0.2")
    first.stop()
    rewrite("127.0.0.2")
    served_by("127.0.0.2", "the name's new address to serve")
    g.wait_log(r"upstream gh-backend\.test:%d: now at 127\.0\.0\.2" % port)


if __name__ == "__main__":
    h.main()
