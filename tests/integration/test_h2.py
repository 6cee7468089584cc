#!/usr/bin/env python3
"""test_h2: HTTP/2 toward clients (issue 12), through the real binary.

ALPN (server preference, a listener with "http2": false, TLS 1.2); curl
--http2 (GET, POST with and without a length, 50 MB both ways, response
trailers); the translation to HTTP/1.1 upstreams seen frame by frame with
python3-h2 (X-Forwarded-*, cookies, request trailers, lower-case response
names without hop-by-hop ones, HEAD/204/304 without DATA, 100-continue);
many streams (nghttp, h2load); flow control both ways with bounded memory;
WebSocket over RFC 8441; GOAWAY on SIGTERM and SIGHUP; the access log and
/metrics; local answers (421, 413).

python3-h2 is Debian's (/usr/bin/python3). It closes its state machine on
any GOAWAY; H2Client reopens it after a graceful one (NO_ERROR) so that the
streams the server still finishes can be read, as RFC 9113 6.8 intends."""

import collections
import hashlib
import http.client
import http.server
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.settings  # noqa: E402

BIG = 50 * 1024 * 1024
HOST = "h2.test"
SMALL = "small.test"   # max_body 1000
HOP = "hop.test"       # a backend that sends hop-by-hop fields
MAX_BODY = 1000

_s = {}


# --- a backend that answers with hop-by-hop fields ------------------------------------

class _HopBackend:
    """A stdlib HTTP/1.1 server whose every answer carries Connection,
    Keep-Alive, a field named in Connection, Proxy-Connection and a
    chunked Transfer-Encoding: none of them may reach an h2 client."""

    def __init__(self):
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self.send_response(200)
                self.send_header("Connection", "keep-alive, X-Hop")
                self.send_header("Keep-Alive", "timeout=5, max=100")
                self.send_header("X-Hop", "secret")
                self.send_header("Proxy-Connection", "keep-alive")
                self.send_header("X-End-To-End", "kept")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"5\r\nhello\r\n0\r\n\r\n")

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.addr = "127.0.0.1:%d" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()


# --- the HTTP/2 client --------------------------------------------------------------------

class Stream:
    def __init__(self, keep=True):
        self.keep = keep          # keep the body bytes (else only count and hash)
        self.status = None
        self.headers = []         # final response head, [(bytes, bytes)] as received
        self.interim = []         # 1xx heads, in order
        self.data = bytearray()
        self.nbytes = 0
        self.sha = hashlib.sha256()
        self.data_frames = 0
        self.trailers = None
        self.ended = False
        self.reset = None         # RST_STREAM error code

    def header(self, name):
        n = name.encode()
        for k, v in self.headers:
            if k == n:
                return v.decode("latin-1")
        return None

    def json(self):
        try:
            return json.loads(bytes(self.data).decode())
        except ValueError:
            raise h.Fail("stream body is not JSON (status %r): %r" % (self.status, self.data[:300]))

    def __repr__(self):
        return "<Stream status=%r ended=%r reset=%r bytes=%d headers=%r>" % (
            self.status, self.ended, self.reset, self.nbytes, self.headers)


class H2Client:
    """One HTTP/2 connection over TLS, on python-h2, with exact frames.
    |ack|: give flow-control credit back as DATA arrives (else the caller
    does, with ack_stream)."""

    def __init__(self, port, sni=HOST, alpn=("h2", "http/1.1"), settings=None, ack=True,
                 max_version=None, validate=True, timeout=h.IO_TIMEOUT):
        ctx = h.client_context(alpn=alpn, max_version=max_version)
        self.sock = h.tls_connect(port, sni, ctx=ctx, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        h.eq(self.sock.selected_alpn_protocol(), "h2", "ALPN protocol chosen for %r" % (alpn,))
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                        validate_inbound_headers=False,
                                        validate_outbound_headers=validate,
                                        normalize_inbound_headers=False)
        self.conn = h2.connection.H2Connection(cfg)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.ack = ack
        self.streams = collections.defaultdict(Stream)
        self.remote_settings = {}
        self.goaway = None
        self.closed = False
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def pump(self, timeout):
        """Reads once (waiting up to |timeout|) and handles the events.
        Returns False at EOF."""
        if self.closed:
            return False
        self.sock.settimeout(max(0.001, timeout))
        try:
            data = self.sock.recv(256 * 1024)
        except socket.timeout:
            return True
        except ssl.SSLWantReadError:
            return True
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            data = b""
        if not data:
            self.closed = True
            return False
        for ev in self.conn.receive_data(data):
            self.on_event(ev)
        self.flush()
        return True

    def on_event(self, ev):
        E = h2.events
        s = self.streams[ev.stream_id] if getattr(ev, "stream_id", None) else None
        if isinstance(ev, E.ResponseReceived):
            s.headers = list(ev.headers)
            s.status = int(s.header(":status"))
        elif isinstance(ev, E.InformationalResponseReceived):
            s.interim.append(list(ev.headers))
        elif isinstance(ev, E.DataReceived):
            s.data_frames += 1
            s.nbytes += len(ev.data)
            s.sha.update(ev.data)
            if s.keep:
                s.data += ev.data
            if self.ack:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, E.TrailersReceived):
            s.trailers = list(ev.headers)
        elif isinstance(ev, E.StreamEnded):
            s.ended = True
        elif isinstance(ev, E.StreamReset):
            s.reset = ev.error_code
        elif isinstance(ev, E.RemoteSettingsChanged):
            for k, v in ev.changed_settings.items():
                self.remote_settings[int(k)] = v.new_value
        elif isinstance(ev, E.ConnectionTerminated):
            self.goaway = ev
            if ev.error_code == 0:
                # python-h2 closes on any GOAWAY; streams up to
                # last_stream_id still complete (RFC 9113 6.8).
                self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN

    def wait(self, cond, timeout, what):
        deadline = time.monotonic() + timeout
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                raise h.Fail("timed out after %.1fs waiting for %s" % (timeout, what))
            if not self.pump(min(left, 0.5)) and not cond():
                raise h.Fail("connection closed while waiting for %s" % what)

    def headers_for(self, method, path, authority=HOST, extra=()):
        return [(":method", method), (":scheme", "https"), (":path", path),
                (":authority", authority)] + list(extra)

    def request(self, method, path, authority=HOST, headers=(), body=None, end=True, keep=True):
        """Opens a stream; |body| (bytes) is sent as windows allow; the
        request ends unless |end| is False. Returns the stream id."""
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = Stream(keep)
        self.conn.send_headers(sid, self.headers_for(method, path, authority, headers),
                               end_stream=end and body is None)
        self.flush()
        if body is not None:
            self.send_body(sid, body, end)
        return sid

    def send_body(self, sid, body, end=True, timeout=60):
        """Sends |body| in DATA frames as fast as the peer's windows allow."""
        view = memoryview(body)
        deadline = time.monotonic() + timeout
        while len(view):
            n = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size,
                    len(view))
            if n <= 0:
                if time.monotonic() > deadline:
                    raise h.Fail("the server's window stayed closed (%d bytes unsent)" % len(view))
                if not self.pump(0.5):
                    raise h.Fail("connection closed with %d body bytes unsent" % len(view))
                if self.streams[sid].ended or self.streams[sid].reset is not None:
                    return
                continue
            self.conn.send_data(sid, view[:n].tobytes())
            view = view[n:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def send_trailers(self, sid, trailers):
        self.conn.send_headers(sid, list(trailers), end_stream=True)
        self.flush()

    def response(self, sid, timeout=h.IO_TIMEOUT):
        """Waits for the stream to end (or be reset); returns its Stream."""
        s = self.streams[sid]
        self.wait(lambda: s.ended or s.reset is not None, timeout, "stream %d to end" % sid)
        return s

    def get(self, path, authority=HOST, headers=(), method="GET", timeout=h.IO_TIMEOUT):
        return self.response(self.request(method, path, authority, headers), timeout)

    def ack_stream(self, sid, n):
        self.conn.acknowledge_received_data(n, sid)
        self.flush()


# --- setup --------------------------------------------------------------------------------

def setup():
    """Instance A: h2.test (and localhost, for nghttp and h2load) and
    small.test (max_body 1000, HSTS) on separate echo backends, hop.test on the
    hop-by-hop backend; a second https listener with "http2": false; admin
    on. Built once, on first use."""
    if _s:
        return _s
    e = {n: h.start_echo() for n in ("app", "small")}
    hop = _HopBackend()
    ports = {n: h.free_port() for n in ("https", "noh2", "http", "admin")}
    g = h.start_gatehouse([
        h.site([HOST, "localhost"], [e["app"]]),
        h.site([SMALL], [e["small"]], max_body=MAX_BODY,
               hsts={"max_age": "365d", "include_subdomains": True}),
        h.site([HOP], [hop.addr]),
    ], workers=2, wait=False,
        listen={"https": ["127.0.0.1:%d" % ports["https"],
                          {"address": "127.0.0.1:%d" % ports["noh2"], "http2": False}],
                "http": ["127.0.0.1:%d" % ports["http"]]},
        admin={"listen": "127.0.0.1:%d" % ports["admin"], "token": "h2-admin-token"})
    g.https_port, g.http_port = ports["https"], ports["http"]
    h.check_ready(g, [ports["https"], ports["noh2"], ports["http"], ports["admin"]])
    _s.update(e=e, A=g, noh2=ports["noh2"], admin=ports["admin"])
    return _s


def alpn_of(port, alpn, sni=HOST, **kw):
    ctx = h.client_context(alpn=alpn, **kw)
    s = h.tls_connect(port, sni, ctx=ctx)
    return s.selected_alpn_protocol(), s


def h11_over(sock, path, host=HOST):
    """One HTTP/1.1 request on an already connected TLS socket."""
    c = h.Conn(sock)
    try:
        return c.request("GET", path, host)
    finally:
        c.close()


# --- 1. ALPN ----------------------------------------------------------------------------

def test_alpn_server_preference():
    A = setup()["A"]
    for offer in (["h2", "http/1.1"], ["http/1.1", "h2"]):
        proto, s = alpn_of(A.https_port, offer)
        s.close()
        h.eq(proto, "h2", "ALPN chosen for the offer %r" % offer)
    proto, s = alpn_of(A.https_port, ["http/1.1"])
    h.eq(proto, "http/1.1", "ALPN chosen for an http/1.1-only offer")
    r = h11_over(s, "/alpn-h11")
    h.eq((r.version, r.status), ("HTTP/1.1", 200), "HTTP/1.1 after ALPN http/1.1")
    proto, s = alpn_of(A.https_port, None)
    h.eq(proto, None, "ALPN without an offer")
    r = h11_over(s, "/alpn-none")
    h.eq((r.version, r.status), ("HTTP/1.1", 200), "HTTP/1.1 without ALPN")
    # And h2 really is spoken after "h2".
    with H2Client(A.https_port) as c:
        s = c.get("/alpn-h2")
        h.eq(s.status, 200, "status over h2")
        h.eq(s.json()["path"], "/alpn-h2", "path at the backend")


def test_alpn_listener_without_http2():
    s = setup()
    port = s["noh2"]
    for offer in (["h2", "http/1.1"], ["http/1.1", "h2"]):
        proto, sock = alpn_of(port, offer)
        h.eq(proto, "http/1.1", "ALPN on the http2:false listener for %r" % offer)
        if offer[0] == "h2":
            r = h11_over(sock, "/noh2")
            h.eq((r.version, r.status), ("HTTP/1.1", 200), "HTTP/1.1 on the http2:false listener")
        else:
            sock.close()
    # h2 alone: no protocol in common (no_application_protocol), never h2.
    try:
        proto, sock = alpn_of(port, ["h2"])
        sock.close()
    except ssl.SSLError as ex:
        h.contains(str(ex).upper().replace("_", " "), "NO APPLICATION PROTOCOL",
                   "handshake error for an h2-only offer")
        proto = "refused"
    h.eq(proto, "refused", "ALPN on the http2:false listener for an h2-only offer")
    proto, sock = alpn_of(port, None)
    h.eq(proto, None, "ALPN without an offer on the http2:false listener")
    sock.close()


def test_tls12_with_h2():
    A = setup()["A"]
    with H2Client(A.https_port, alpn=["h2"], max_version=ssl.TLSVersion.TLSv1_2) as c:
        name, version, _ = c.sock.cipher()
        h.eq(version, "TLSv1.2", "TLS version")
        h.check(name.startswith("ECDHE-") and ("-GCM-" in name or "CHACHA20-POLY1305" in name),
                "TLS 1.2 suite for h2 is not an ECDHE AEAD one: %s" % name)
        s = c.get("/tls12")
        h.eq(s.status, 200, "status over h2 on TLS 1.2")
    rc, out = h.s_client(A.https_port, HOST, ["-tls1_2", "-alpn", "h2"])
    h.contains(out, "ALPN protocol: h2", "openssl s_client -tls1_2 -alpn h2")
    m = re.search(r"Cipher is (\S+)", out)
    h.check(m and m.group(1).startswith("ECDHE-") and
            ("-GCM-" in m.group(1) or "CHACHA20-POLY1305" in m.group(1)),
            "s_client's TLS 1.2 suite: %r" % (m.group(1) if m else out[-500:]))


# --- 2. curl --http2 --------------------------------------------------------------------

def curl2(path, *args, **kw):
    return setup()["A"].curl(HOST, path, "--http2", *args, **kw)


def curl_json(r, what):
    h.eq(r.rc, 0, "%s: curl exit status (%s)" % (what, r.stderr[-500:]))
    h.check(r.headers_text.startswith("HTTP/2 "), "%s: not HTTP/2: %r" % (what, r.headers_text[:200]))
    h.eq(r.status, 200, "%s: status" % what)
    return r.json()


def test_curl_get_and_post():
    d = curl_json(curl2("/c/get?x=1"), "GET")
    h.eq((d["method"], d["path"], d["body_bytes"]), ("GET", "/c/get?x=1", 0), "GET at the backend")
    body = os.urandom(3000)
    path = os.path.join(h.subdir("curl"), "post.bin")
    with open(path, "wb") as f:
        f.write(body)
    d = curl_json(curl2("/c/post", "--data-binary", "@" + path), "POST with a length")
    h.eq((d["method"], d["body_bytes"], d["body_sha256"]),
         ("POST", 3000, hashlib.sha256(body).hexdigest()), "POST with a length at the backend")
    h.eq(h.echo_headers(d, "Content-Length"), ["3000"], "Content-Length at the backend")
    h.eq(h.echo_headers(d, "Transfer-Encoding"), [], "Transfer-Encoding at the backend")
    # No length: curl sends DATA without content-length; the upstream gets
    # it chunked.
    d = curl_json(curl2("/c/chunked", "--data-binary", "@" + path, "-H", "Transfer-Encoding: chunked"),
                  "POST without a length")
    h.eq((d["method"], d["body_bytes"], d["body_sha256"]),
         ("POST", 3000, hashlib.sha256(body).hexdigest()), "POST without a length at the backend")
    h.eq(h.echo_headers(d, "Transfer-Encoding"), ["chunked"], "Transfer-Encoding at the backend")
    h.eq(h.echo_headers(d, "Content-Length"), [], "Content-Length at the backend")


def test_curl_50mb_download_and_upload():
    out = os.path.join(h.subdir("big"), "down.bin")
    r = curl2("/size/%d" % BIG, output=out, timeout=50)
    h.eq(r.rc, 0, "curl exit status (%s)" % r.stderr[-500:])
    h.check(r.headers_text.startswith("HTTP/2 200"), "download head: %r" % r.headers_text[:200])
    h.contains(r.headers_text, "content-length: %d" % BIG, "download head")
    h.eq(os.path.getsize(out), BIG, "downloaded bytes")
    h.eq(h.sha256_file(out), hashlib.sha256(h.pattern_bytes(BIG)).hexdigest(), "downloaded SHA-256")
    os.unlink(out)
    data = os.urandom(BIG)
    path = os.path.join(h.subdir("big"), "up.bin")
    with open(path, "wb") as f:
        f.write(data)
    d = curl_json(curl2("/upload", "--data-binary", "@" + path, timeout=50), "50 MB upload")
    h.eq((d["body_bytes"], d["body_sha256"]), (BIG, hashlib.sha256(data).hexdigest()),
         "50 MB upload at the backend")
    os.unlink(path)


def test_response_trailers():
    r = curl2("/chunked/100000", "-v")
    h.eq(r.rc, 0, "curl exit status (%s)" % r.stderr[-500:])
    h.eq(r.body, h.pattern_bytes(100000), "chunked body through h2")
    # curl -D writes trailers after the head; only HTTP/2 trailers get there.
    h.contains(r.headers_text.lower(), "x-trailer: done", "trailer in curl's -D")
    A = setup()["A"]
    with H2Client(A.https_port) as c:
        s = c.get("/chunked/1000", headers=[("te", "trailers")])
        h.eq(s.status, 200, "status")
        h.eq(bytes(s.data), h.pattern_bytes(1000), "body")
        h.eq(s.header("transfer-encoding"), None, "transfer-encoding in the h2 head")
        h.eq(s.trailers, [(b"x-trailer", b"done")], "HTTP/2 trailers (HEADERS after DATA)")


# --- 3. translation ---------------------------------------------------------------------

FORWARD_NAMES = ("Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host")


def test_forwarded_headers_as_http11():
    A = setup()["A"]
    with H2Client(A.https_port) as c:
        for authority, extra in ((HOST, []),
                                 ("%s:%d" % (HOST, A.https_port), []),
                                 (HOST, [("x-forwarded-for", "203.0.113.7"),
                                         ("x-forwarded-proto", "http"),
                                         ("x-forwarded-host", "evil.test")])):
            s = c.get("/xf", authority=authority, headers=extra)
            h.eq(s.status, 200, "status for :authority %s" % authority)
            d2 = s.json()
            r = A.request(authority, "GET", "/xf", headers=[(k.title(), v) for k, v in extra],
                          sni=HOST)
            d1 = r.json()
            for name in FORWARD_NAMES:
                h.eq(h.echo_headers(d2, name), h.echo_headers(d1, name),
                     "%s at the backend, h2 vs HTTP/1.1 (:authority %s, extra %r)"
                     % (name, authority, extra))
            h.eq(d2["version"], "HTTP/1.1", "the upstream request's version")
        # The facts themselves (not only the same as HTTP/1.1).
        d = c.get("/xf").json()
        h.eq([h.echo_headers(d, n) for n in FORWARD_NAMES],
             [[HOST], ["127.0.0.1"], ["https"], [HOST]], "Host and X-Forwarded-* at the backend")


def test_hsts_over_h2():
    # The site's HSTS goes out as one field of its own, value only.
    with H2Client(setup()["A"].https_port) as c:
        st = c.get("/hsts", authority=SMALL)
        h.eq(st.status, 200, "status")
        h.eq([v for k, v in st.headers if k == b"strict-transport-security"],
             [b"max-age=31536000; includeSubDomains"], "strict-transport-security over h2")


def test_cookies_joined():
    A = setup()["A"]
    with H2Client(A.https_port) as c:
        # python-h2 would split one cookie itself; three fields go anyway.
        sid = c.request("GET", "/cookie", headers=[("cookie", "a=1"), ("x-mid", "m"),
                                                   ("cookie", "b=2"), ("cookie", "c=3")])
        d = c.response(sid).json()
    h.eq(h.echo_headers(d, "cookie"), ["a=1; b=2; c=3"], "cookie fields at the backend")
    h.eq(h.echo_headers(d, "x-mid"), ["m"], "the field between the cookies")


def test_request_trailers():
    A = setup()["A"]
    with H2Client(A.https_port) as c:
        sid = c.request("POST", "/req-trailers", body=b"hello", end=False)
        c.send_body(sid, b" world", end=False)
        c.send_trailers(sid, [("x-checksum", "abc123"), ("x-more", "yes")])
        s = c.response(sid)
    h.eq(s.status, 200, "status")
    d = s.json()
    h.eq(h.echo_headers(d, "Transfer-Encoding"), ["chunked"], "framing at the backend")
    h.eq((d["body_bytes"], d["body_sha256"]), (11, hashlib.sha256(b"hello world").hexdigest()),
         "body at the backend")
    h.eq(d.get("trailers"), [["x-checksum", "abc123"], ["x-more", "yes"]],
         "trailers at the backend")


def test_response_head_lower_case_without_hop_by_hop():
    A = setup()["A"]
    with H2Client(A.https_port) as c:
        for authority, path in ((HOST, "/plain"), (HOST, "/close"), (HOST, "/chunked/10"),
                                (HOP, "/hop")):
            s = c.get(path, authority=authority)
            h.eq(s.status, 200, "status of %s%s" % (authority, path))
            names = [k for k, _ in s.headers]
            for k in names:
                h.eq(k, k.lower(), "response field name of %s%s" % (authority, path))
            for hop in (b"connection", b"keep-alive", b"transfer-encoding", b"proxy-connection",
                        b"upgrade", b"x-hop"):
                h.check(hop not in names, "%r in the h2 response of %s%s: %r"
                        % (hop, authority, path, s.headers))
            if authority == HOST:
                h.check(b"x-echo-conn" in names, "x-echo-conn missing: %r" % names)
            else:
                h.eq(s.header("x-end-to-end"), "kept", "an end-to-end field")
                h.eq(bytes(s.data), b"hello", "the de-chunked body")


def test_head_204_304_without_data():
    A = setup()["A"]
    with H2Client(A.https_port) as c:
        for method, path, status in (("HEAD", "/size/1000", 200), ("HEAD", "/chunked/1000", 200),
                                     ("GET", "/status/204", 204), ("GET", "/status/304", 304)):
            s = c.get(path, method=method)
            h.eq((s.status, s.ended, s.reset), (status, True, None), "%s %s" % (method, path))
            h.eq(s.data_frames, 0, "DATA frames for %s %s" % (method, path))
        s = c.get("/after")
        h.eq(s.json()["path"], "/after", "request after HEAD/204/304")


def test_expect_100_continue():
    A = setup()["A"]
    with H2Client(A.https_port) as c:
        sid = c.request("POST", "/expect", headers=[("expect", "100-continue"),
                                                    ("content-length", "10")], end=False)
        s = c.streams[sid]
        c.wait(lambda: s.interim or s.status, 5, "a response head before the body")
        h.eq([dict(i).get(b":status") for i in s.interim], [b"100"],
             "interim heads before the body was sent")
        h.eq(s.status, None, "a final status before the body was sent")
        c.send_body(sid, b"0123456789")
        c.response(sid)
    h.eq(s.status, 200, "final status")
    d = s.json()
    h.eq((d["body_bytes"], d["body_sha256"]), (10, hashlib.sha256(b"0123456789").hexdigest()),
         "body at the backend")


# --- 4. many streams --------------------------------------------------------------------

def test_nghttp_100_concurrent_streams():
    A = setup()["A"]
    cnt = h.Counter(setup()["e"]["app"])
    conns = metrics()[("gatehouse_http2_connections_total", None, None)]
    url = "https://localhost:%d/ng" % A.https_port
    r = subprocess.run(["nghttp", "-n", "-s", "-m", "100", "-t", "30", url],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    out = r.stdout.decode(errors="replace")
    h.eq(r.returncode, 0, "nghttp exit status (%s)" % out[-800:])
    # -s: "id responseEnd requestStart process code size path", a line a stream.
    rows = re.findall(r"^\s*(\d+)\s+\+\S+\s+\+\S+\s+\S+\s+(\d{3})\s+\d+\s+/ng$", out, re.M)
    h.eq(len(set(i for i, _ in rows)), 100, "streams in nghttp -s (%s)" % out[-800:])
    h.eq(set(code for _, code in rows), {"200"}, "statuses")
    h.eq(cnt.requests(), 100, "requests at the backend")
    h.eq(metrics()[("gatehouse_http2_connections_total", None, None)] - conns, 1,
         "HTTP/2 connections nghttp made")


def test_h2load():
    A = setup()["A"]
    url = "https://localhost:%d/load" % A.https_port
    r = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "50", "-T", "30", url],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=90)
    out = r.stdout.decode(errors="replace")
    h.eq(r.returncode, 0, "h2load exit status (%s)" % out[-800:])
    h.contains(out, "Application protocol: h2", "h2load")
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed,"
                  r" (\d+) errored", out)
    h.check(m, "no requests line in h2load's output: %s" % out[-800:])
    h.eq(m.groups(), ("2000", "2000", "2000", "2000", "0", "0"), "h2load requests")
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    h.eq(m.groups() if m else out[-800:], ("2000", "0", "0", "0"), "h2load status codes")


# --- 5. flow control --------------------------------------------------------------------

def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024


def test_download_small_window_bounded_memory():
    """The client advertises a 65535-byte stream window and gives the
    download no credit for a while: the proxy stops reading the upstream
    instead of buffering the 50 MB, and other streams of the connection
    (whose window is opened) are answered meanwhile. Then the client gives
    credit back in small steps; the download completes byte-exact."""
    A = setup()["A"]
    with H2Client(A.https_port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535},
                  ack=False, timeout=60) as c:
        before = rss(A.pid)
        sid = c.request("GET", "/size/%d" % BIG, keep=False)
        s = c.streams[sid]
        c.wait(lambda: s.nbytes >= 65535, 10, "the first window of the download")
        c.conn.increment_flow_control_window(1 << 20)  # the connection's, not the stream's
        c.flush()
        peak = before
        t_end = time.monotonic() + 1.5
        beside = 0
        while time.monotonic() < t_end:
            st = c.get("/beside/%d" % beside, timeout=5)
            h.eq(st.status, 200, "a stream beside the held download")
            beside += 1
            c.pump(0.1)
            peak = max(peak, rss(A.pid))
        h.eq(s.nbytes, 65535, "bytes received at a zero window")
        # Well under the 50 MB: buffering the download would show.
        h.check(peak - before <= 24 << 20, "gatehouse RSS grew by %.1f MiB while the client held a"
                " zero window" % ((peak - before) / 1048576.0))
        # Credit in 16 KiB steps (python-h2 sends WINDOW_UPDATEs of about
        # half the window).
        acked = 0
        deadline = time.monotonic() + 60
        while not s.ended:
            h.check(time.monotonic() < deadline and s.reset is None and not c.closed,
                    "download stalled at %d bytes (%r)" % (s.nbytes, s))
            while acked + 16384 <= s.nbytes or (acked < s.nbytes and s.nbytes == BIG):
                step = min(16384, s.nbytes - acked)
                c.conn.acknowledge_received_data(step, sid)
                acked += step
            c.flush()
            c.pump(1.0)
    h.eq((s.status, s.nbytes), (200, BIG), "status and bytes of the download")
    h.eq(s.sha.hexdigest(), hashlib.sha256(h.pattern_bytes(BIG)).hexdigest(), "download SHA-256")


def test_upload_50mb_as_fast_as_windows_allow():
    A = setup()["A"]
    data = os.urandom(BIG)
    with H2Client(A.https_port, timeout=60) as c:
        sid = c.request("POST", "/h2-upload", body=data)
        s = c.response(sid, timeout=60)
    h.eq(s.status, 200, "status")
    d = s.json()
    h.eq((d["body_bytes"], d["body_sha256"]), (BIG, hashlib.sha256(data).hexdigest()),
         "50 MB upload at the backend")
    h.eq(h.echo_headers(d, "Transfer-Encoding"), ["chunked"], "framing of a body without a length")


# --- 6. WebSocket over RFC 8441 -----------------------------------------------------------

def open_websocket(c):
    """An RFC 8441 extended CONNECT to gh_echo's /ws; returns (sid, stream)
    once it is answered with 200."""
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"),
                              (":scheme", "https"), (":path", "/ws"), (":authority", HOST),
                              ("sec-websocket-version", "13")])
    c.flush()
    s = c.streams[sid]
    c.wait(lambda: s.status or s.reset is not None, 5, "the answer to the extended CONNECT")
    h.eq((s.status, s.reset), (200, None), "extended CONNECT answer (%r)" % s)
    return sid, s


def test_websocket_extended_connect():
    A = setup()["A"]
    with H2Client(A.https_port) as c:
        c.wait(lambda: c.remote_settings, 5, "the server's SETTINGS")
        h.eq(c.remote_settings.get(int(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)), 1,
             "SETTINGS_ENABLE_CONNECT_PROTOCOL (%r)" % c.remote_settings)
        sid, s = open_websocket(c)
        names = [k for k, _ in s.headers]
        for k in (b"upgrade", b"connection", b"sec-websocket-accept"):
            h.check(k not in names, "%r in the 200 of an extended CONNECT" % k)
        sent = b""
        for piece in (b"hello, websocket", os.urandom(1), os.urandom(100000)):
            c.send_body(sid, piece, end=False)
            sent += piece
            c.wait(lambda: s.nbytes >= len(sent), 10, "%d echoed bytes" % len(sent))
        h.eq(bytes(s.data), sent, "bytes echoed through the tunnel")
        h.eq(s.reset, None, "the tunnel stream was reset")
        # The client ends the tunnel with RST_STREAM: the stream is logged
        # (so it cannot count in a later test's metrics) and the
        # connection serves on.
        off = A.log_size()
        c.conn.reset_stream(sid)
        c.flush()
        rec = json.loads(A.wait_log(r'(?m)^\{.*"path":"/ws".*\}$', timeout=5, since=off).group(0))
        h.eq((rec["method"], rec["proto"]), ("GET", "HTTP/2.0"), "access log line of the tunnel")
        h.eq(c.get("/after-ws").status, 200, "a request after the tunnel")


def test_websocket_end_stream_closes_the_tunnel():
    """RFC 8441 5: the client's END_STREAM is an orderly close of its half:
    the upstream's write side is shut, and when the upstream then closes
    (gh_echo's /ws closes on EOF) the proxy ends the stream, long before
    timeouts.tunnel_idle (1 h)."""
    A = setup()["A"]
    with H2Client(A.https_port) as c:
        sid, s = open_websocket(c)
        c.send_body(sid, b"last words", end=True)
        c.wait(lambda: s.ended or s.reset is not None, 10, "the tunnel's end after END_STREAM")
        h.eq((bytes(s.data), s.reset), (b"last words", None), "tunnel end (%r)" % s)
        h.eq(c.get("/after-ws-end").status, 200, "a request after the tunnel")


def test_plain_connect_405():
    s = setup()
    cnt = h.Counter(s["e"]["app"])
    with H2Client(s["A"].https_port, validate=False) as c:  # python-h2 wants a :path
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", "CONNECT"), (":authority", "%s:443" % HOST)],
                            end_stream=True)
        c.flush()
        st = c.response(sid)
        h.eq(st.status, 405, "status of a CONNECT without :protocol")
        h.eq(c.get("/after-connect").status, 200, "the connection serves on")
    h.eq(cnt.requests(), 1, "requests at the backend (the CONNECT never went there)")


# --- 8. access log and metrics -------------------------------------------------------------

def test_access_log_proto():
    A = setup()["A"]
    off = A.log_size()
    token = os.urandom(4).hex()
    with H2Client(A.https_port) as c:
        h.eq(c.get("/log2?t=%s" % token).status, 200, "h2 status")
    h.eq(A.get(HOST, "/log1?t=%s" % token).status, 200, "HTTP/1.1 status")
    for path, proto in (("/log2", "HTTP/2.0"), ("/log1", "HTTP/1.1")):
        m = A.wait_log(r'(?m)^\{.*"%s\?t=%s".*\}$' % (path, token), timeout=5, since=off)
        rec = json.loads(m.group(0))
        h.eq((rec.get("proto"), rec.get("status"), rec.get("method"), rec.get("host")),
             (proto, 200, "GET", HOST), "access log line of %s" % path)


def metrics():
    s = setup()
    c = http.client.HTTPConnection("127.0.0.1", s["admin"], timeout=h.IO_TIMEOUT)
    try:
        c.request("GET", "/metrics", headers={"Host": "127.0.0.1:%d" % s["admin"],
                                              "Authorization": "Bearer h2-admin-token"})
        r = c.getresponse()
        body = r.read().decode()
        h.eq(r.status, 200, "GET /metrics")
    finally:
        c.close()
    out = collections.Counter()
    for m in re.finditer(r"^(gatehouse_[a-z0-9_]+)(?:\{([^}]*)\})? (\S+)$", body, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels.get("protocol"), labels.get("status_class"))] += float(m.group(3))
    return out


def test_metrics_by_protocol():
    A = setup()["A"]
    before = metrics()
    for _ in range(2):
        with H2Client(A.https_port) as c:
            for i in range(3):
                h.eq(c.get("/m/%d" % i).status, 200, "h2 status")
            h.eq(c.get("/status/404").status, 404, "h2 status")
    h.eq(A.get(HOST, "/m/h1").status, 200, "HTTP/1.1 status")
    want = {("gatehouse_requests_by_protocol_total", "h2", "2xx"): 6,
            ("gatehouse_requests_by_protocol_total", "h2", "4xx"): 2,
            ("gatehouse_requests_by_protocol_total", "http/1.1", "2xx"): 1,
            ("gatehouse_http2_connections_total", None, None): 2}

    def moved():
        after = metrics()
        return {k: after[k] - before[k] for k in want}
    h.wait_until(lambda: all(v >= want[k] for k, v in moved().items()), 5, "the metrics to move")
    h.eq(moved(), want, "metrics moved by 2 h2 connections (8 requests) and 1 HTTP/1.1 request")


# --- 9. local answers ---------------------------------------------------------------------

def test_local_answers_421_413():
    s = setup()
    A = s["A"]
    app, small = h.Counter(s["e"]["app"]), h.Counter(s["e"]["small"])
    with H2Client(A.https_port) as c:
        st = c.get("/x", authority="unknown.test")
        h.eq(st.status, 421, "status for an :authority no site answers")
        h.eq(st.header("content-length"), str(len(st.data)), "content-length of the 421")
        # Content-Length over max_body: answered from the head alone.
        sid = c.request("POST", "/cl", authority=SMALL,
                        headers=[("content-length", str(MAX_BODY + 1))], end=False)
        st = c.response(sid)
        h.eq(st.status, 413, "status for a content-length over max_body")
        h.eq(st.header("content-length"), str(len(st.data)), "content-length of the 413")
        # A streamed body crossing max_body.
        sid = c.request("POST", "/streamed", authority=SMALL, end=False)
        c.send_body(sid, b"s" * 600, end=False)
        c.send_body(sid, b"s" * 600, end=False)
        st = c.response(sid)
        h.eq(st.status, 413, "status for a streamed body crossing max_body")
        h.eq(st.header("content-length"), str(len(st.data)), "content-length of the 413")
        # The connection serves on, up to max_body.
        st = c.response(c.request("POST", "/under", authority=SMALL, body=b"u" * MAX_BODY))
        h.eq(st.status, 200, "status of a body at max_body")
        h.eq(st.json()["body_bytes"], MAX_BODY, "body bytes at the backend")
    h.eq(app.requests(), 0, "requests at the backend for the 421")
    h.eq(small.requests(), 1, "requests at the small.test backend (only the one at max_body)")


# --- 7. graceful: GOAWAY on SIGHUP, then SIGTERM (last) ----------------------------------

def goaway_instance():
    if "G" not in _s:
        e = h.start_echo()
        _s["G"] = (h.start_gatehouse([h.site([HOST], [e])], workers=1), e)
    return _s["G"]


def goaway_with_stream_in_flight(g, e, send_signal):
    """A /delay/1500 stream is at the backend when |send_signal| runs: the
    server must send GOAWAY (NO_ERROR, last stream 1), finish that stream
    with 200, ignore a stream opened after the GOAWAY, then close."""
    cnt = h.Counter(e)
    token = os.urandom(4).hex()
    with H2Client(g.https_port) as c:
        sid = c.request("GET", "/delay/1500?t=%s" % token)
        h.wait_until(lambda: cnt.requests() >= 1, 5, "the slow request to reach the backend")
        send_signal()
        c.wait(lambda: c.goaway, 5, "GOAWAY")
        h.eq((c.goaway.error_code, c.goaway.last_stream_id), (0, sid), "GOAWAY error and last stream")
        s = c.streams[sid]
        h.check(not s.ended, "the slow stream ended before the GOAWAY (not in flight)")
        late = c.request("GET", "/late?t=%s" % token)
        c.response(sid, timeout=10)
        h.eq((s.status, s.reset), (200, None), "the in-flight stream after GOAWAY")
        h.eq(s.json()["path"], "/delay/1500?t=%s" % token, "its body")
        c.wait(lambda: c.closed, 5, "the server to close the connection")
        lt = c.streams[late]
        h.eq((lt.status, lt.data_frames), (None, 0), "answer to a stream opened after GOAWAY")
    h.eq(cnt.requests(), 1, "requests at the backend (the late stream was not processed)")
    h.not_contains(g.log(), "/late?t=%s" % token, "gatehouse log")


def test_sighup_goaway():
    g, e = goaway_instance()
    with H2Client(g.https_port) as idle:
        idle.wait(lambda: idle.remote_settings, 5, "the server's SETTINGS")
        goaway_with_stream_in_flight(g, e, g.reload)
        # A connection with no stream gets GOAWAY (last stream 0) and is
        # closed.
        idle.wait(lambda: idle.closed, 5, "the idle connection to close after the reload")
        h.check(idle.goaway is not None, "no GOAWAY on the idle connection")
        h.eq((idle.goaway.error_code, idle.goaway.last_stream_id), (0, 0),
             "GOAWAY on the idle connection")
    h.check(g.alive(), "gatehouse exited after SIGHUP")
    with H2Client(g.https_port) as c:
        h.eq(c.get("/after-reload").status, 200, "a new connection after the reload")


def test_sigterm_goaway():
    g, e = goaway_instance()
    goaway_with_stream_in_flight(g, e, lambda: g.signal(signal.SIGTERM))
    rc = g.wait_exit(10)
    h.eq(rc, 0, "gatehouse exit status after SIGTERM and a drained h2 connection")


if __name__ == "__main__":
    h.main()
