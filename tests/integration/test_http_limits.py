#!/usr/bin/env python3
"""test_http_limits: malformed and oversized requests sent as exact bytes
over TLS (request smuggling shapes, header syntax, size limits, versions)
and the slow-client timeouts (header_read, idle, handshake).

Every rejected request must get its status, the connection must close, and
the backend must never see it."""

import os
import socket
import ssl
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HOST = "lim.test"
_s = {}


def setup():
    if not _s:
        _s["echo"] = h.start_echo()
        _s["gh"] = h.start_gatehouse(
            [h.site([HOST], [_s["echo"]])], workers=2,
            limits={"max_header_bytes": "4k", "max_headers": 20, "max_uri_bytes": "1k"},
            timeouts={"header_read": "2s", "idle": "3s", "handshake": "2s"})
    return _s["gh"], _s["echo"]


def send_raw(data, method="GET", warm=False):
    """Sends |data| on a new TLS connection (after one good request when
    |warm|, so the worker holds an idle upstream connection ready to take a
    forwarded head); returns (response or None, seconds until closed or
    None, the Conn)."""
    g, _ = setup()
    c = g.connect(HOST)
    try:
        if warm:
            r = c.request("GET", "/warm", HOST)
            h.eq(r.status, 200, "warm-up request")
        if _s.get("counter"):
            _s["counter"].reset()
        c.send(data)
        try:
            r = c.read_response(method, timeout=5)
        except h.Fail:
            r = None
        closed = c.wait_closed(3)
        return r, closed, c
    finally:
        c.close()


def rejected(data, status, what):
    """|data| must get |status|, the connection must close, and nothing
    may reach the backend, even with a warm upstream connection."""
    g, e = setup()
    cnt = _s["counter"] = h.Counter(e)
    try:
        r, closed, c = send_raw(data, warm=True)
    finally:
        _s["counter"] = None
    h.check(r is not None, "%s: no response (expected %d); got bytes %r" % (what, status, c.buf[:200]))
    h.eq(r.status, status, "%s: status" % what)
    h.check(closed is not None, "%s: connection left open after a %d" % (what, status))
    h.eq(cnt.requests(), 0, "%s: requests that reached the backend" % what)


def accepted(data, what, method="GET"):
    g, e = setup()
    cnt = h.Counter(e)
    c = g.connect(HOST)
    try:
        c.send(data)
        r = c.read_response(method, timeout=5)
    finally:
        c.close()
    h.eq(r.status, 200, "%s: status" % what)
    h.eq(cnt.requests(), 1, "%s: requests at the backend" % what)
    return r


def req(head_lines, body=b""):
    return ("\r\n".join(head_lines) + "\r\n\r\n").encode("latin-1") + body


def test_control_request_ok():
    r = accepted(req(["GET /ok HTTP/1.1", "Host: " + HOST]), "a plain request")
    h.eq(r.json()["path"], "/ok", "path")
    accepted(req(["GET /ok10 HTTP/1.0", "Host: " + HOST]), "an HTTP/1.0 request")


def test_content_length_and_transfer_encoding():
    smuggled = req(["GET /smuggled HTTP/1.1", "Host: " + HOST])
    rejected(req(["POST /cl-te HTTP/1.1", "Host: " + HOST, "Content-Length: 6",
                  "Transfer-Encoding: chunked"], b"0\r\n\r\n" + smuggled),
             400, "Content-Length + Transfer-Encoding")
    rejected(req(["POST /te-cl HTTP/1.1", "Host: " + HOST, "Transfer-Encoding: chunked",
                  "Content-Length: 40"], b"0\r\n\r\n" + smuggled),
             400, "Transfer-Encoding + Content-Length")


def test_transfer_encoding_not_chunked():
    rejected(req(["POST /te HTTP/1.1", "Host: " + HOST, "Transfer-Encoding: gzip"], b"abc"),
             400, "Transfer-Encoding not ending in chunked")


def test_bad_chunk_size():
    # The head may already be on its way upstream, but the backend must
    # never see a complete request.
    rejected(req(["POST /te HTTP/1.1", "Host: " + HOST, "Transfer-Encoding: chunked"],
                 b"zz\r\nhello\r\n0\r\n\r\n"),
             400, "bad chunk size")
    rejected(req(["POST /te HTTP/1.1", "Host: " + HOST, "Transfer-Encoding: chunked"],
                 b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n"),
             400, "overflowing chunk size")


def test_host_header_required_and_single():
    rejected(req(["GET /nohost HTTP/1.1"]), 400, "HTTP/1.1 request without Host")
    rejected(req(["GET /twohosts HTTP/1.1", "Host: " + HOST, "Host: other.test"]), 400,
             "two Host headers")
    # RFC 9112 3.2: an invalid Host field value is a 400 too.
    for host in ("bad host", "user@" + HOST, HOST + ":99x"):
        rejected(req(["GET /badhost HTTP/1.1", "Host: " + host]), 400, "Host %r" % host)


def test_cr_nul_in_header_value():
    # RFC 9110 5.5: reject, or replace with SP; never pass them on.
    g, e = setup()
    for what, value in (("CR", b"a\rb"), ("NUL", b"a\x00b")):
        cnt = h.Counter(e)
        c = g.connect(HOST)
        try:
            c.send(b"GET /crnul HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nX-V: " + value +
                   b"\r\n\r\n")
            r = c.read_response("GET", timeout=5)
        finally:
            c.close()
        if r.status == 200:
            vals = h.echo_headers(r.json(), "X-V")
            h.check(all("\r" not in v and "\x00" not in v for v in vals),
                    "%s in a header value was passed to the backend: %r" % (what, vals))
        else:
            h.eq(r.status, 400, "status for %s in a header value" % what)
            h.eq(cnt.requests(), 0, "%s request reached the backend" % what)


def test_differing_content_lengths():
    rejected(req(["POST /cl HTTP/1.1", "Host: " + HOST, "Content-Length: 5", "Content-Length: 6"],
                 b"hello!"), 400, "two differing Content-Length headers")
    rejected(req(["POST /cl HTTP/1.1", "Host: " + HOST, "Content-Length: 5, 6"], b"hello!"),
             400, "a Content-Length list with differing values")
    rejected(req(["POST /cl HTTP/1.1", "Host: " + HOST, "Content-Length: -1"], b""),
             400, "a negative Content-Length")
    rejected(req(["POST /cl HTTP/1.1", "Host: " + HOST, "Content-Length: +5"], b"hello"),
             400, "a Content-Length with a sign")
    rejected(req(["POST /cl HTTP/1.1", "Host: " + HOST, "Content-Length: 99999999999999999999999"],
                 b"hello"), 400, "an overflowing Content-Length")


def test_obs_fold():
    rejected(req(["GET /fold HTTP/1.1", "Host: " + HOST, "X-A: 1", " folded"]), 400,
             "obs-fold (space)")
    rejected(req(["GET /fold HTTP/1.1", "Host: " + HOST, "X-A: 1", "\tfolded"]), 400,
             "obs-fold (tab)")


def test_invalid_header_names():
    for line in ("X Bad: 1", "X-Bad : 1", "X@Bad: 1", "X(Bad): 1", "X\"Q: 1", ": empty-name",
                 "X\x01Ctl: 1"):
        rejected(req(["GET /name HTTP/1.1", "Host: " + HOST, line]), 400,
                 "header line %r" % line)


def test_bare_lf():
    rejected(b"GET /lf HTTP/1.1\nHost: " + HOST.encode() + b"\n\n", 400, "bare LF line endings")
    rejected(b"GET /lf HTTP/1.1\r\nHost: " + HOST.encode() + b"\nX-A: 1\r\n\r\n", 400,
             "one bare LF among CRLFs")


def test_header_bytes_limit_431():
    accepted(req(["GET /hb HTTP/1.1", "Host: " + HOST, "X-Big: " + "a" * 3000]),
             "a 3000-byte header under max_header_bytes 4k")
    rejected(req(["GET /hb HTTP/1.1", "Host: " + HOST, "X-Big: " + "a" * 5000]), 431,
             "one 5000-byte header over max_header_bytes 4k")
    rejected(req(["GET /hb HTTP/1.1", "Host: " + HOST] +
                 ["X-M%d: %s" % (i, "b" * 500) for i in range(10)]), 431,
             "ten 500-byte headers over max_header_bytes 4k")


def test_header_count_limit_431():
    accepted(req(["GET /hc HTTP/1.1", "Host: " + HOST] + ["X-H%d: v" % i for i in range(14)]),
             "15 headers under max_headers 20")
    rejected(req(["GET /hc HTTP/1.1", "Host: " + HOST] + ["X-H%d: v" % i for i in range(30)]), 431,
             "31 headers over max_headers 20")


def test_uri_limit_414():
    accepted(req(["GET /" + "u" * 800 + " HTTP/1.1", "Host: " + HOST]),
             "an 801-byte target under max_uri_bytes 1k")
    rejected(req(["GET /" + "u" * 1500 + " HTTP/1.1", "Host: " + HOST]), 414,
             "a 1501-byte target over max_uri_bytes 1k")


def test_unsupported_versions_505():
    rejected(req(["GET / HTTP/3.0", "Host: " + HOST]), 505, "HTTP/3.0 request line")
    rejected(req(["GET / HTTP/2.0", "Host: " + HOST]), 505, "HTTP/2.0 request line")
    # HTTP/0.9-style (no version): no 200, connection closed, backend untouched.
    g, e = setup()
    cnt = h.Counter(e)
    r, closed, c = send_raw(b"GET /\r\n\r\n")
    h.check(r is None or r.status >= 400, "HTTP/0.9-style request got %r" % r)
    h.check(closed is not None, "HTTP/0.9-style request: connection left open")
    h.eq(cnt.requests(), 0, "HTTP/0.9-style request reached the backend")


def _trickle_until_closed(c, first, trickle, interval, limit):
    """Sends |first|, then one byte of |trickle| every |interval| s, polling
    the socket between bytes; returns seconds until the server closed (from
    the first send) or None after |limit| s."""
    t0 = time.monotonic()
    c.send(first)
    i = 0
    while time.monotonic() - t0 < limit:
        dt = c.wait_closed(interval)
        if dt is not None:
            return time.monotonic() - t0
        try:
            c.send(trickle[i % len(trickle):i % len(trickle) + 1])
        except (OSError, ssl.SSLError):
            return time.monotonic() - t0
        i += 1
    return None


def test_slowloris_header_read_timeout():
    g, e = setup()
    cnt = h.Counter(e)
    c = g.connect(HOST)
    try:
        closed = _trickle_until_closed(c, ("GET /slow HTTP/1.1\r\nHost: %s\r\n" % HOST).encode(),
                                       b"X-Trickle: abcdefghijklmnopqrstuvwxyz\r\n", 0.3, 10)
        h.check(closed is not None, "a head trickled a byte per 300ms was still open after 10s"
                " (header_read is 2s)")
        h.check(1.5 <= closed <= 6.0, "trickling connection closed after %.2fs, expected about 2s"
                " (timeouts.header_read)" % closed)
        # README: 408 when the head does not arrive within header_read.
        h.check(c.buf.startswith(b"HTTP/1.1 408 "),
                "expected a 408 before the close, got %r" % bytes(c.buf[:200]))
    finally:
        c.close()
    h.eq(cnt.requests(), 0, "the trickled request reached the backend")


def test_idle_keepalive_timeout():
    g, _ = setup()
    c = g.connect(HOST)
    try:
        r = c.request("GET", "/idle", HOST)
        h.eq(r.status, 200, "status")
        dt = c.wait_closed(10)
        h.check(dt is not None, "idle keep-alive connection still open after 10s (idle is 3s)")
        h.check(2.5 <= dt <= 6.5, "idle keep-alive connection closed after %.2fs, expected about"
                " 3s (timeouts.idle)" % dt)
        h.eq(c.buf, b"", "bytes sent on the idle connection")
    finally:
        c.close()


def test_silent_clients_are_closed():
    g, _ = setup()
    # TCP connected, no ClientHello: the handshake timeout (2s) applies.
    s = socket.create_connection(("127.0.0.1", g.https_port), timeout=10)
    try:
        c = h.Conn(s)
        dt = c.wait_closed(10)
        h.check(dt is not None and 1.5 <= dt <= 6.0,
                "silent TCP connection closed after %s, expected about 2s (timeouts.handshake)" % dt)
    finally:
        s.close()
    # TLS done, no request bytes: closed by header_read (2s) or idle (3s).
    c = g.connect(HOST)
    try:
        dt = c.wait_closed(10)
        h.check(dt is not None and 1.5 <= dt <= 6.5,
                "silent TLS connection closed after %s, expected 2-3s" % dt)
    finally:
        c.close()


def test_still_serving():
    r = accepted(req(["GET /end HTTP/1.1", "Host: " + HOST]), "a request after all the bad ones")
    h.eq(r.json()["path"], "/end", "path")


if __name__ == "__main__":
    h.main()
