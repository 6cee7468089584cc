#!/usr/bin/env python3
"""test_upstream_h2_hostile: issue 14, hostile HTTP/2 upstreams.

Every path an upstream can drive, against a misbehaving h2c upstream
(h2_hostile_peer.py, Debian's python3-h2, in a subprocess). For each: what
the client sees (502/504 before the response head; after it, a reset
HTTP/2 stream or an HTTP/1.1 connection closed short of its body), that
Gatehouse survives and serves the next good request on the same site, and,
where it applies, the log line that says why.

One Gatehouse (one worker, upstream_read 1s, client_body 2s) with a site
per listener of the peer:

  paths.test     answers by :path: invalid fields, oversized fields,
                 RST_STREAM before the head and mid-body, the connection
                 closed mid-body, DATA past content-length, a large body,
                 a request body read in full, bad trailers, 103
  garbage.test   its first connection answers in HTTP/1.1
  goaway.test    its first connection answers GOAWAY(last_stream_id=0)
  push.test      its first connection sends a PUSH_PROMISE
  maxconc.test   SETTINGS_MAX_CONCURRENT_STREAMS=1
  nowindow.test  never gives back flow-control window
"""
import os
import re
import subprocess
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "h2_hostile_peer.py")
MODES = ("paths", "garbage", "goaway", "push", "maxconc", "nowindow")
ONCE = ("garbage", "goaway", "push")  # only their first connection misbehaves

_s = {}


def setup():
    if _s:
        return _s
    ports = {m: h.free_port() for m in MODES}
    specs = ["%s:%d%s" % (m, ports[m], ":1" if m in ONCE else "") for m in MODES]
    peer = h.Proc("h2peer", [sys.executable, PEER] + specs)
    h.wait_until(lambda: "ready" in peer.stdout(), 15, "the hostile HTTP/2 upstream to start")
    sites = [h.site(["%s.test" % m], [{"address": "127.0.0.1:%d" % ports[m], "protocol": "h2c"}])
             for m in MODES]
    g = h.start_gatehouse(sites, workers=1,
                          timeouts={"upstream_read": "1s", "client_body": "2s"})
    _s.update(g=g, ports=ports, peer=peer)
    return _s


def up(mode):
    """The upstream's name in the log."""
    return re.escape("127.0.0.1:%d" % _s["ports"][mode])


def alive(host="paths.test", what=""):
    """Gatehouse still serves a good request on |host|, over both protocols."""
    g = _s["g"]
    for proto in ("--http1.1", "--http2"):
        r = g.curl(host, "/ok", proto, timeout=10)
        h.eq((r.status, r.body), (200, b"ok /ok"), "%s: the next good request (%s)" % (what, proto))
    h.check(g.alive(), "gatehouse is running")


def conns(mode):
    """Connections the peer accepted on |mode|'s listener."""
    found = re.findall(r"^conn %s:\d+ (\d+)$" % mode, _s["peer"].stdout(), re.M)
    return int(found[-1]) if found else 0


def test_not_http2():
    """An upstream that answers the preface in HTTP/1.1: 502, the log says
    it is not HTTP/2; its next connection is served."""
    s = setup()
    g = s["g"]
    since = g.log_size()
    r = g.curl("garbage.test", "/x", "--http2")
    h.eq(r.status, 502, "garbage instead of SETTINGS")
    g.wait_log(r"upstream %s: HTTP/2 error" % up("garbage"), since=since)
    alive("garbage.test", "after garbage")


def test_invalid_response_fields():
    """A response head with a field name in upper case, a
    connection-specific field, no :status, or :status "abc" is malformed
    (RFC 9113 8.2.1, 8.2.2, 8.3.2): 502 to HTTP/1.1 and HTTP/2 clients."""
    s = setup()
    g = s["g"]

    def one(case):
        for proto in ("--http1.1", "--http2"):
            since = g.log_size()
            r = g.curl("paths.test", "/hdr/" + case, proto)
            h.eq(r.status, 502, "%s (%s)" % (case, proto))
            g.wait_log(r"answering 502", since=since)
    h.each(("upper", "connection", "nostatus", "badstatus"), one)
    alive(what="after malformed heads")


def test_two_malformed_heads_in_one_read():
    """Two streams' malformed heads in one read: nghttp2 resets both, and
    each RST_STREAM reaches the upstream (a stream it never sees reset
    keeps one of its slots forever)."""
    s = setup()
    g = s["g"]
    results = []
    threads = [threading.Thread(target=lambda: results.append(g.curl("paths.test", "/pair").status))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    h.eq(results, [502, 502], "both malformed heads")
    peer = s["peer"]
    sids = re.findall(r"^pair (\d+)$", peer.stdout(), re.M)[-2:]
    h.wait_until(lambda: all(re.search(r"^reset %s$" % i, peer.stdout(), re.M) for i in sids), 5,
                 "the upstream to see streams %s reset (it saw %r)" % (
                     sids, re.findall(r"^reset \d+$", peer.stdout(), re.M)))
    alive(what="after two malformed heads")


def test_header_list_too_large():
    """Response fields past our SETTINGS_MAX_HEADER_LIST_SIZE (64 KiB):
    502, and the connection keeps working."""
    s = setup()
    g = s["g"]
    since = g.log_size()
    for proto in ("--http1.1", "--http2"):
        r = g.curl("paths.test", "/hdr/huge", proto)
        h.eq(r.status, 502, "80 KiB of fields (%s)" % proto)
    g.wait_log(r"answering 502: the upstream.s header fields exceed", since=since)
    alive(what="after oversized fields")


def test_rst_stream_before_head():
    """RST_STREAM(INTERNAL_ERROR) before any HEADERS: 502, logged."""
    s = setup()
    g = s["g"]
    since = g.log_size()
    for proto in ("--http1.1", "--http2"):
        r = g.curl("paths.test", "/rst/head", proto)
        h.eq(r.status, 502, "reset before the head (%s)" % proto)
    g.wait_log(r"answering 502: the upstream reset the stream \(INTERNAL_ERROR\)", since=since)
    alive(what="after a reset before the head")


def short_body(path, why):
    """|path| sends its head (content-length 100000) and 10000 bytes, then
    fails: the HTTP/1.1 client's connection closes short of the body, the
    HTTP/2 client's stream is reset; either way curl fails."""
    g = _s["g"]
    since = g.log_size()
    r = g.curl("paths.test", path, "--http1.1")
    h.eq(r.status, 200, "%s: the head went out (h1)" % path)
    h.check(r.rc != 0 and len(r.body) < 100000,
            "%s (h1): curl rc %d, %d bytes of 100000" % (path, r.rc, len(r.body)))
    c = g.connect("paths.test")
    try:
        c.send(h.build_request("GET", path, "paths.test"))
        head = c.read_head()
        h.eq(head.header("Content-Length"), "100000", "%s: the announced length" % path)
        h.check(c.wait_closed(10) is not None, "%s: the client connection closes" % path)
        h.check(len(c.buf) < 100000, "%s: %d bytes of 100000 before the close" % (path, len(c.buf)))
    finally:
        c.close()
    r = g.curl("paths.test", path, "--http2")
    h.check(r.rc != 0 and len(r.body) < 100000,
            "%s (h2): curl rc %d, %d bytes of 100000" % (path, r.rc, len(r.body)))
    g.wait_log(r"failed mid-response: %s" % why, since=since)


def test_rst_stream_mid_body():
    setup()
    short_body("/rst/body", r"the upstream reset the stream \(INTERNAL_ERROR\)")
    alive(what="after a reset mid-body")


def test_goaway_retries_unprocessed_stream():
    """GOAWAY(last_stream_id=0) to the first connection's first request:
    the upstream did not process it, so it goes again on a new connection
    and succeeds; the peer saw two connections."""
    s = setup()
    g = s["g"]
    r = g.curl("goaway.test", "/first", "--http2")
    h.eq((r.status, r.body), (200, b"ok /first"), "the request refused by GOAWAY, retried")
    h.eq(conns("goaway"), 2, "connections the upstream saw")
    alive("goaway.test", "after GOAWAY")


def test_connection_closed_mid_body():
    setup()
    short_body("/close/body", r"upstream closed the connection early")
    alive(what="after a close mid-body")


def test_data_past_content_length():
    """content-length 10 and 100 bytes of DATA: nghttp2 resets the stream;
    no client gets a body longer than 10 bytes, and curl reports the error."""
    s = setup()
    g = s["g"]
    for proto in ("--http1.1", "--http2"):
        r = g.curl("paths.test", "/excess", proto)
        h.check(len(r.body) <= 10, "%s: body of %d bytes, content-length 10" % (proto, len(r.body)))
        h.check(r.rc != 0, "%s: curl saw no error (rc %d, status %d)" % (proto, r.rc, r.status))
    alive(what="after DATA past content-length")


def test_max_concurrent_streams_one():
    """The upstream allows one stream at a time: 10 concurrent HTTP/1.1
    clients and 10 streams of one HTTP/2 client all get their answer."""
    s = setup()
    g = s["g"]
    results = {}

    def one(i):
        try:
            r = g.request("maxconc.test", "GET", "/c%d" % i)
            results[i] = (r.status, r.body)
        except Exception as e:  # reported below
            results[i] = repr(e)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    h.eq(results, {i: (200, b"ok /c%d" % i) for i in range(10)}, "10 concurrent HTTP/1.1 clients")
    base = "https://maxconc.test:%d" % g.https_port
    argv = ["curl", "-q", "-sS", "--http2", "--parallel", "--parallel-immediate",
            "--parallel-max", "10", "--max-time", "20", "--noproxy", "*",
            "--resolve", "maxconc.test:%d:127.0.0.1" % g.https_port, "--cacert", h.ca().cert,
            "-w", "%{http_code} %{url_effective}\n"]
    for i in range(10):
        argv += ["-o", "/dev/null", "%s/p%d" % (base, i)]
    out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=40)
    codes = sorted(out.stdout.decode().split())
    h.eq(out.returncode, 0, "curl --parallel (stderr %r)" % out.stderr[-300:])
    h.eq(sum(1 for c in codes if c == "200"), 10, "10 streams of one HTTP/2 client: %r" % codes)


def test_no_window_update():
    """An upstream that never opens its window while the client POSTs
    1 MB: the request does not hang; the client gets an answer (or its
    connection closes) within the timeouts, and the site still serves."""
    s = setup()
    g = s["g"]
    body = os.path.join(h.tmpdir(), "1mb")
    with open(body, "wb") as f:
        f.write(os.urandom(1 << 20))
    since = g.log_size()
    for proto in ("--http1.1", "--http2"):
        r = g.curl("nowindow.test", "/upload", proto, "--data-binary", "@" + body, timeout=15)
        h.check(r.elapsed < 10, "%s: the stalled upload ended after %.1fs" % (proto, r.elapsed))
        h.check(r.status in (502, 504) or r.rc != 0,
                "%s: an error answer or a failed transfer (status %d, rc %d)" % (proto, r.status, r.rc))
    g.wait_log(r"nowindow\.test: answering 504: upstream read timeout", since=since)
    alive("nowindow.test", "after a stalled upload")


def test_slow_client_large_body():
    """A client reading at 200 kB/s takes a 2 MB body whole: flow control
    holds the upstream back, nothing is dropped or timed out."""
    s = setup()
    g = s["g"]
    n = 2 * 1000 * 1000
    r = g.curl("paths.test", "/big/%d" % n, "--http2", "--limit-rate", "200k", timeout=30)
    h.eq((r.rc, r.status, len(r.body)), (0, 200, n), "the 2 MB body at 200 kB/s")
    h.check(r.body == b"z" * n, "the body arrives intact")


def test_push_promise():
    """A PUSH_PROMISE although we sent SETTINGS_ENABLE_PUSH=0 is a
    connection error: the request fails cleanly, the next one is served."""
    s = setup()
    g = s["g"]
    since = g.log_size()
    r = g.curl("push.test", "/pushing", "--http2")
    h.eq(r.status, 502, "PUSH_PROMISE")
    g.wait_log(r"upstream %s: HTTP/2 error" % up("push"), since=since)
    alive("push.test", "after PUSH_PROMISE")


def test_trailers_with_pseudo_header():
    """Trailers carrying :status are malformed: the response, whose head
    already went out, is cut (curl fails) and :status never reaches the
    client as a trailer."""
    s = setup()
    g = s["g"]
    for proto in ("--http1.1", "--http2"):
        r = g.curl("paths.test", "/trailers/pseudo", proto, "-H", "TE: trailers")
        h.eq(r.status, 200, "%s: the head" % proto)
        h.check(r.rc != 0, "%s: curl saw no error (rc %d)" % (proto, r.rc))
        h.not_contains(r.headers_text, "x-t:", "%s: the bad trailers" % proto)
    alive(what="after bad trailers")


def test_early_hints_then_final():
    """A 103 before the 200: the final response arrives whole (with the
    103 relayed first)."""
    s = setup()
    g = s["g"]
    for proto in ("--http1.1", "--http2"):
        r = g.curl("paths.test", "/early-hints", proto)
        h.eq((r.rc, r.status, r.body), (0, 200, b"final"), "%s: the final response" % proto)
    c = g.connect("paths.test")
    try:
        r = c.request("GET", "/early-hints", "paths.test")
        h.eq((r.status, r.body), (200, b"final"), "h.Conn: the final response")
        h.eq([i.status for i in r.interim], [103], "h.Conn: the 103 before it")
    finally:
        c.close()
    alive(what="after 103")


if __name__ == "__main__":
    h.main()
