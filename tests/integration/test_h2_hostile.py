#!/usr/bin/env python3
"""test_h2_hostile: issue 12, hostile clients over HTTP/2.

The real gatehouse, gh_echo behind it, and a client that writes raw frames
(h2raw.py) over TLS with ALPN h2. For every refusal: the stream (or the
connection, where RFC 9113 says so) is refused as the RFC says, the process
survives and serves the next request on a new connection, and the refused
request never reaches the upstream (gh_echo's /stats counts complete
requests). Sections:

   1  connection-specific fields (RFC 9113 8.2.2), te
   2  field syntax: upper case, CR/LF/NUL, surrounding whitespace (8.2.1)
   3  pseudo-header fields (8.3)
   4  :authority against host (8.3.1)
   5  content-length against the DATA received (8.1.1)
   6  http2.max_header_list_size: 431, the connection goes on
   7  http2.max_concurrent_streams (5.1.2)
   8  rapid reset (CVE-2023-44487): http2.max_resets
   9  CONTINUATION flood (CVE-2024-27316), an unfinished header block
  10  control-frame floods: http2.max_control_frames
  11  a client holding windows at zero: timeouts.client_send
  12  timeouts.idle
  13  timeouts.client_body
  14  garbage: preface, DATA on stream 0, oversized frames, even stream ids,
      HPACK errors
  15  a client that never reads: memory stays bounded
  16  a random mix of all of it (fixed seed)

What the code of issue 12 did (257633b), where it fell short:

  test_continuation_flood: closed without GOAWAY and not counted in
      gatehouse_http2_calm_total (nghttp2's TOO_MANY_CONTINUATIONS is a
      fatal error that queues nothing); fixed in 74e46d8.
  answered_whole (431/421/400 to a request ended in its HEADERS): the
      answer was followed by RST_STREAM NO_ERROR on the closed stream;
      fixed in e788111.
  test_max_concurrent_streams: once the client has ACKed our SETTINGS,
      nghttp2 makes a stream beyond the limit a connection error (GOAWAY
      PROTOCOL_ERROR, last stream = the last one within the limit), which
      RFC 9113 5.4.1 allows; the streams in flight are lost. Before the
      ACK the extra streams get REFUSED_STREAM and the others complete.
  test_content_length_excess_after_the_declared_body: a body forwarded as
      it comes can reach the upstream whole before the excess shows the
      request malformed; the excess itself never does.

Gatehouse instances, one worker each: "default" (every http2 and timeout
default), "tight" (small http2 limits and 2 s timeouts), "streams"
(max_concurrent_streams 4) and "mix" (for 16).
"""

import http.client
import json
import os
import random
import re
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import h2raw as r  # noqa: E402

HOST = "h2hostile.test"

_inst = {}


class Inst:
    def __init__(self, g, echo, admin_port):
        self.g, self.echo, self.admin_port = g, echo, admin_port

    def connect(self, **kw):
        return r.H2(self.g.https_port, HOST, **kw)

    def calm_total(self):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=h.IO_TIMEOUT)
        try:
            c.request("GET", "/metrics", headers={"Host": "127.0.0.1:%d" % self.admin_port,
                                                  "Authorization": "Bearer hostile-admin"})
            resp = c.getresponse()
            body = resp.read().decode()
        finally:
            c.close()
        h.eq(resp.status, 200, "GET /metrics status")
        m = re.search(r"^gatehouse_http2_calm_total (\d+)$", body, re.M)
        h.check(m, "gatehouse_http2_calm_total in /metrics")
        return int(m.group(1))

    def rss_kb(self):
        with open("/proc/%d/status" % self.g.pid) as f:
            return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))


def instance(name, **extra):
    if name not in _inst:
        e = h.start_echo()
        port = h.free_port()
        extra["admin"] = {"listen": "127.0.0.1:%d" % port, "token": "hostile-admin"}
        g = h.start_gatehouse([h.site([HOST], [e])], workers=1, **extra)
        h.wait_until(lambda: h.port_accepts(port), 10, "the admin port accepts")
        _inst[name] = Inst(g, e, port)
    return _inst[name]


def default():
    return instance("default")


def tight():
    return instance("tight",
                    http2={"max_header_list_size": "4k", "max_resets": "20/1s",
                           "max_control_frames": "100/1s"},
                    timeouts={"header_read": "2s", "client_send": "2s", "idle": "2s",
                              "client_body": "2s"})


def streams4():
    return instance("streams", http2={"max_concurrent_streams": 4})


each = h.each


def still_serving(inst, what):
    """The process is alive and serves a request on a new connection."""
    h.check(inst.g.alive(), "gatehouse died (%s): exit %s" % (what, inst.g.p.returncode))
    c = inst.connect()
    try:
        s = c.response(c.get(HOST, "/fresh"))
    finally:
        c.close()
    h.eq(s.status, 200, "a request on a new connection after %s" % what)


def refused(inst, what, fields=None, raw=None, codes=(r.PROTOCOL_ERROR,), after=None,
            end_stream=True):
    """A request refused with a stream error: RST_STREAM |codes|, nothing
    forwarded, the connection and the process serve the next request.
    |after|(c, sid) sends more frames of the request."""
    cnt = h.Counter(inst.echo)
    c = inst.connect().handshake()
    try:
        sid = c.headers(fields, raw=raw, end_stream=end_stream)
        if after:
            after(c, sid)
        r.expect_stream_error(c, sid, codes, what)
        r.expect_alive(c, HOST, what)
    finally:
        c.close()
    still_serving(inst, what)
    h.eq(cnt.requests(), 2, "%s: requests the upstream completed (the next stream and the"
         " new connection's only)" % what)


def accepted(inst, what, fields, body=None):
    """A request that must be served (200 from the upstream)."""
    cnt = h.Counter(inst.echo)
    c = inst.connect().handshake()
    try:
        sid = c.headers(fields, end_stream=body is None)
        if body is not None:
            c.send(r.data(sid, body, end=True))
        s = c.response(sid)
    finally:
        c.close()
    h.eq(s.status, 200, "%s: status (%r)" % (what, s))
    h.eq(cnt.requests(), 1, "%s: requests the upstream completed" % what)
    return s


def req(path="/", method="GET", extra=(), authority=HOST):
    return r.req_fields(authority, path, method, extra)


def answered_whole(c, s, what):
    """A response to a request that had ended (END_STREAM on its HEADERS):
    no RST_STREAM may follow the response's END_STREAM, the stream being
    closed both ways (RFC 9113 5.1: nothing but PRIORITY on a closed
    stream; RST_STREAM NO_ERROR is for a request still coming, 8.1)."""
    c.ping_roundtrip()
    h.check(s.rst is None, "%s: RST_STREAM %s after a whole response to a whole request; %s"
            % (what, r.err_name(s.rst), c.summary()))


def calm_goaway(c, what, timeout=10):
    """A flood ends the connection: GOAWAY ENHANCE_YOUR_CALM, then the
    close, within |timeout|."""
    dt = c.wait_closed(timeout)
    h.check(dt is not None, "%s: the connection was still open %ds after the flood; %s"
            % (what, timeout, c.summary()))
    h.check(c.goaway is not None and c.goaway[1] == r.ENHANCE_YOUR_CALM,
            "%s: expected GOAWAY ENHANCE_YOUR_CALM; %s" % (what, c.summary()))


# --- 1. connection-specific fields (RFC 9113 8.2.2) ----------------------------

def test_connection_specific_fields():
    inst = default()
    each([("connection", "keep-alive"), ("keep-alive", "timeout=5"),
          ("proxy-connection", "keep-alive"), ("transfer-encoding", "chunked"),
          ("upgrade", "websocket"), ("te", "gzip"), ("te", "trailers, gzip")],
         lambda f: refused(inst, "%s: %s" % f, req("/cs", extra=[f])))


def test_refused_heads_are_logged():
    # A head nghttp2 refuses as malformed still leaves an access-log line
    # (400, proto HTTP/2.0), as a malformed HTTP/1.1 request does.
    inst = default()
    off = inst.g.log_size()
    refused(inst, "connection: close, logged", req("/logged-refusal", extra=[("connection", "close")]))
    rec = json.loads(inst.g.wait_log(r'(?m)^\{.*"path":"/logged-refusal".*\}$', since=off).group(0))
    h.eq((rec["status"], rec["proto"]), (400, "HTTP/2.0"), "the refused request's log line")


def test_te_trailers_accepted():
    accepted(default(), "te: trailers", req("/te", extra=[("te", "trailers")]))


# --- 2. field syntax (RFC 9113 8.2.1) ----------------------------------------------

def test_field_syntax():
    inst = default()
    each([(b"X-Upper", b"v"), (b"x-foO", b"v"), (b"x-a", b"a\rb"), (b"x-a", b"a\nb"),
          (b"x-a", b"a\x00b"), (b"x-a", b"\r\nGET /smuggled HTTP/1.1"), (b"x-a", b" lead"),
          (b"x-a", b"trail "), (b"x-a", b"\ttab"), (b"x-a", b"tab\t"), (b"x a", b"v"),
          (b"x:a", b"v"), (b"", b"v")],
         lambda f: refused(inst, "field %r" % (f,), req("/syntax", extra=[f])))


def test_field_syntax_inner_whitespace_accepted():
    s = accepted(default(), "inner space and tab", req("/ok", extra=[("x-a", "a b\tc")]))
    h.contains(s.data.decode(), '"a b\\u0009c"', "the field at the upstream")


# --- 3. pseudo-header fields (RFC 9113 8.3) ----------------------------------------

def test_pseudo_headers():
    inst = default()
    m, s, a, p = (":method", "GET"), (":scheme", "https"), (":authority", HOST), (":path", "/ps")
    cases = {
        "no :method": [s, a, p],
        "no :path": [m, s, a],
        "no :scheme": [m, a, p],
        "two :path": [m, s, a, p, (":path", "/other")],
        "two :method": [m, m, s, a, p],
        "two :scheme": [m, s, s, a, p],
        "unknown :foo": [m, s, a, p, (":foo", "bar")],
        ":status in a request": [m, s, a, p, (":status", "200")],
        "pseudo after regular": [m, s, a, ("x-a", "b"), p],
        "empty :path": [m, s, a, (":path", "")],
        ":path without /": [m, s, a, (":path", "ps")],
        ":path * with GET": [m, s, a, (":path", "*")],
        ":path absolute form": [m, s, a, (":path", "https://%s/ps" % HOST)],
        ":protocol without CONNECT": [m, s, a, p, (":protocol", "websocket")],
    }
    each(sorted(cases.items()), lambda kv: refused(inst, kv[0], kv[1]))


def test_options_asterisk_accepted():
    s = accepted(default(), "OPTIONS *", req("*", "OPTIONS"))
    h.contains(s.data.decode(), '"path":"*"', "OPTIONS * at the upstream")


# --- 4. :authority against host (RFC 9113 8.3.1) ---------------------------------

def test_authority_host_disagree():
    refused(default(), ":authority and host differ", req("/ah", extra=[("host", "other.test")]))


def test_authority_host_same_accepted():
    accepted(default(), "host in another case", req("/ah", extra=[("host", HOST.upper())]))


def test_authority_invalid_or_missing():
    # No site can be chosen: a 400 (421 for a name we do not serve), or
    # (nghttp2 checks :authority and requires it or host) a stream error;
    # nothing forwarded.
    inst = default()
    m, s, p = (":method", "GET"), (":scheme", "https"), (":path", "/na")

    def case(kv):
        what, fields = kv
        cnt = h.Counter(inst.echo)
        c = inst.connect().handshake()
        try:
            st = c.response(c.headers(fields))
            h.check(st.status in (400, 421) or st.rst == r.PROTOCOL_ERROR, "%s: expected a"
                    " 400, a 421 or RST_STREAM PROTOCOL_ERROR; %s" % (what, c.summary()))
            if st.status:
                answered_whole(c, st, what)
            r.expect_alive(c, HOST, what)
        finally:
            c.close()
        h.eq(cnt.requests(), 1, "%s: requests the upstream completed (the next stream's)" % what)
    each([("no :authority, no host", [m, s, p]),
          (":authority with a space", [m, s, (":authority", "a b.test"), p]),
          (":authority with a slash", [m, s, (":authority", "%s/x" % HOST), p]),
          (":authority naming no site", [m, s, (":authority", "other.test"), p])], case)


def test_path_controls_refused():
    inst = default()
    each([" ", "\t", "\x7f", "\x01"],
         lambda ch: refused(inst, ":path with %r" % ch, req("/a%sb" % ch)))


# --- 5. content-length against DATA (RFC 9113 8.1.1) -----------------------------

def post(cl, path="/cl"):
    return req(path, "POST", extra=[("content-length", str(cl))])


def test_content_length_more_data():
    inst = default()
    # One DATA frame carries more than content-length: nothing of it is a
    # complete request upstream.
    refused(inst, "content-length 10, 20 bytes in one DATA frame", post(10), end_stream=False,
            after=lambda c, sid: c.send(r.data(sid, b"x" * 20, end=True)))


def test_content_length_fewer_data():
    inst = default()
    refused(inst, "content-length 100, 10 bytes then END_STREAM", post(100), end_stream=False,
            after=lambda c, sid: c.send(r.data(sid, b"x" * 10, end=True)))
    refused(inst, "content-length 100, END_STREAM on an empty DATA", post(100),
            end_stream=False, after=lambda c, sid: c.send(r.data(sid, b"", end=True)))
    refused(inst, "content-length 5 on HEADERS with END_STREAM", post(5))


def test_content_length_excess_after_the_declared_body():
    # Streaming: once the DATA received reaches content-length, the body
    # may have gone upstream before the next byte shows the request
    # malformed (the upstream then saw a well-formed request of exactly
    # content-length bytes: a known limit of forwarding bodies as they
    # come). What must hold: the excess never reaches the upstream (no
    # second request made of it), the stream is reset with PROTOCOL_ERROR,
    # and the upstream connection is not reused mid-request.
    inst = default()
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

    def case(kv):
        what, cl, first = kv
        cnt = h.Counter(inst.echo)
        c = inst.connect().handshake()
        try:
            sid = c.headers(post(cl, "/later"), end_stream=False)
            c.send(r.data(sid, first) + r.data(sid, smuggled, end=True))
            r.expect_stream_error(c, sid, r.PROTOCOL_ERROR, what)
            r.expect_alive(c, HOST, what)
        finally:
            c.close()
        still_serving(inst, what)
        n = cnt.requests()
        h.check(n in (2, 3), "%s: the upstream completed %d requests (expected the two valid"
                " ones, plus at most the declared body's)" % (what, n))
    each([("content-length 10: 10 bytes, then more in a second DATA frame", 10, b"0123456789"),
          ("content-length 0, no END_STREAM on HEADERS, then DATA", 0, b"")], case)


# --- 6. http2.max_header_list_size --------------------------------------------------

def big_list(total):
    """Fields of 1000-byte values adding up to about |total| bytes (RFC
    9113 6.5.2 counting)."""
    n = total // 1040 + 1
    return [("x-big-%d" % i, "v" * 1000) for i in range(n)]


def header_list_431(inst, size, what):
    cnt = h.Counter(inst.echo)
    c = inst.connect().handshake()
    try:
        fields = req("/big", extra=big_list(size))
        blk = r.block(fields)
        # HEADERS + CONTINUATIONs of at most 16384 bytes (the default
        # SETTINGS_MAX_FRAME_SIZE).
        pieces = [blk[i:i + 16000] for i in range(0, len(blk), 16000)]
        sid = c.new_sid()
        out = r.frame(r.HEADERS, r.END_STREAM | (r.END_HEADERS if len(pieces) == 1 else 0), sid,
                      pieces[0])
        for i, p in enumerate(pieces[1:], 1):
            out += r.frame(r.CONTINUATION, r.END_HEADERS if i == len(pieces) - 1 else 0, sid, p)
        c.send(out)
        s = c.response(sid)
        h.check(c.goaway is None, "%s: GOAWAY: %s" % (what, c.summary()))
        h.eq(s.status, 431, "%s: status" % what)
        answered_whole(c, s, what)
        r.expect_alive(c, HOST, what)
    finally:
        c.close()
    still_serving(inst, what)
    h.eq(cnt.requests(), 2, "%s: requests the upstream completed" % what)


def test_header_list_4k():
    inst = tight()
    h.eq(r.H2(inst.g.https_port, HOST).handshake().server_settings.get(r.MAX_HEADER_LIST_SIZE),
         4096, "SETTINGS_MAX_HEADER_LIST_SIZE announced")
    header_list_431(inst, 5000, "a 5000-byte header list (max 4k)")
    # Just under the limit is served.
    accepted(inst, "a 3000-byte header list (max 4k)", req("/ok", extra=big_list(2000)))


def test_header_list_default_64k():
    header_list_431(default(), 70000, "a 70000-byte header list (default 64k)")


def test_too_many_fields_or_long_path():
    # limits.max_headers (100) and limits.max_uri_bytes (8k) hold for h2.
    inst = default()

    def case(kv):
        what, fields, status = kv
        cnt = h.Counter(inst.echo)
        c = inst.connect().handshake()
        try:
            s = c.response(c.headers(fields))
            h.eq(s.status, status, "%s: status (%s)" % (what, c.summary()))
            answered_whole(c, s, what)
            r.expect_alive(c, HOST, what)
        finally:
            c.close()
        h.eq(cnt.requests(), 1, "%s: requests the upstream completed (the next stream's)" % what)
    each([("150 fields", req("/many", extra=[("x-f%d" % i, "v") for i in range(150)]), 431),
          ("a 9000-byte :path", req("/" + "p" * 9000), 414)], case)


def test_trailers_too_large():
    # Trailers beyond max_header_list_size (4k): the request is refused
    # (431, or a reset once an answer has begun) and the upstream never
    # sees it complete.
    inst = tight()
    cnt = h.Counter(inst.echo)
    c = inst.connect().handshake()
    try:
        sid = c.headers(req("/trailers", "POST"), end_stream=False)
        c.send(r.data(sid, b"body") + r.frame(r.HEADERS, r.END_STREAM | r.END_HEADERS, sid,
                                              r.block(big_list(6000))))
        s = c.response(sid)
        h.check(s.status == 431 or s.rst is not None, "trailers too large: expected a 431 or"
                " RST_STREAM; %s" % c.summary())
        r.expect_alive(c, HOST, "trailers too large")
    finally:
        c.close()
    still_serving(inst, "trailers too large")
    h.eq(cnt.requests(), 2, "requests the upstream completed (the next stream and the new"
         " connection's)")


# --- 7. http2.max_concurrent_streams (RFC 9113 5.1.2) ---------------------------------

def beyond_the_limit(inst, ack_first):
    """Four streams held open (/delay), then two more: (the client's view
    of the limit, whether it ACKed our SETTINGS before opening them)."""
    cnt = h.Counter(inst.echo)
    c = inst.connect(auto_ack=ack_first)
    try:
        if ack_first:
            c.handshake()
            h.eq(c.server_settings.get(r.MAX_CONCURRENT_STREAMS), 4,
                 "SETTINGS_MAX_CONCURRENT_STREAMS")
        first = [c.get(HOST, "/delay/1000?n=%d" % i) for i in range(4)]
        extra = [c.get(HOST, "/delay/1000?x=%d" % i) for i in range(2)]
        c.wait(lambda: all(c._stream(x).done for x in first + extra) or c.closed, 15,
               "every stream to end")
        if ack_first and c.goaway is not None:
            # nghttp2 makes a connection error of it, as RFC 9113 5.4.1
            # allows: the first four are lost, but GOAWAY must say that
            # none beyond them was processed, and those never went upstream.
            h.eq((c.goaway[0], r.err_name(c.goaway[1])), (first[-1], "PROTOCOL_ERROR"),
                 "GOAWAY (last stream, error) for streams beyond the limit")
            h.check(c.wait_closed(5) is not None, "GOAWAY, but the connection stays open")
            print("# streams beyond SETTINGS_MAX_CONCURRENT_STREAMS after its ACK: GOAWAY"
                  " PROTOCOL_ERROR (the four streams in flight are lost)")
            upstream = None  # the first four may or may not have reached it
        else:
            h.check(c.goaway is None, "streams beyond SETTINGS_MAX_CONCURRENT_STREAMS (4) cost the"
                    " connection: %s" % c.summary())
            for x in extra:
                h.check(c._stream(x).rst in (r.REFUSED_STREAM, r.PROTOCOL_ERROR),
                        "stream %d beyond the limit: expected RST_STREAM REFUSED_STREAM or"
                        " PROTOCOL_ERROR; %s" % (x, c.summary()))
            for x in first:
                h.eq(c._stream(x).status, 200, "stream %d of the first 4" % x)
            r.expect_alive(c, HOST, "streams beyond the limit")
            upstream = 5
    finally:
        c.close()
    still_serving(inst, "streams beyond the limit")
    n = cnt.requests()
    if upstream is None:
        h.check(n <= 5, "the upstream completed %d requests: more than the first four and the"
                " new connection's" % n)
    else:
        h.eq(n, upstream + 1, "requests the upstream completed (none beyond the limit)")


def test_max_concurrent_streams_before_the_settings_ack():
    # Streams opened before the client acknowledged our SETTINGS: the
    # extra ones are refused (REFUSED_STREAM), the rest are served.
    beyond_the_limit(streams4(), ack_first=False)


def test_max_concurrent_streams():
    beyond_the_limit(streams4(), ack_first=True)


# --- 8. rapid reset (CVE-2023-44487) --------------------------------------------------

def test_rapid_reset():
    inst = tight()
    calm0 = inst.calm_total()
    c = inst.connect().handshake()
    try:
        burst = b""
        for _ in range(200):
            burst += c.headers(req("/rr"), send=False) + r.rst(c.next_sid - 2)
        c.send(burst)
        calm_goaway(c, "200 streams opened and reset at once (max_resets 20/1s)")
        h.check(c.goaway[0] < 199, "rapid reset: GOAWAY says stream %d was processed (of 199)"
                % c.goaway[0])
    finally:
        c.close()
    still_serving(inst, "rapid reset")
    h.check(inst.calm_total() > calm0, "gatehouse_http2_calm_total did not increase")


def test_resets_under_the_rate_allowed():
    inst = tight()
    c = inst.connect().handshake()
    try:
        for _ in range(10):
            sid = c.get(HOST, "/delay/100")
            c.send(r.rst(sid))
        r.expect_alive(c, HOST, "10 resets (max_resets 20/1s)")
    finally:
        c.close()


# --- 9. CONTINUATION flood (CVE-2024-27316) ------------------------------------------

def test_continuation_flood():
    inst = tight()
    rss0 = inst.rss_kb()
    calm0 = inst.calm_total()
    c = inst.connect().handshake()
    try:
        sid = c.new_sid()
        first = r.block(req("/cont"))
        c.send(r.frame(r.HEADERS, r.END_STREAM, sid, first))
        # 64 MiB of CONTINUATION frames of 16 KiB, each a valid piece of the
        # block (a literal field), never ending it; sent until refused.
        piece = r.hp_literal("x-c", "c" * 16000)
        one = r.frame(r.CONTINUATION, 0, sid, piece)
        sent = 0
        t0 = time.monotonic()
        while sent < 4096 and time.monotonic() - t0 < 10:
            if not c.send(one * 16):
                break
            sent += 16
        dt = c.wait_closed(10)
        h.check(dt is not None, "CONTINUATION flood: connection still open after %d frames"
                % sent)
        h.check(sent < 4096, "CONTINUATION flood: all %d frames were taken" % sent)
        h.check(c.goaway is not None, "CONTINUATION flood: closed without GOAWAY (RFC 9113 5.4.1:"
                " a connection error SHOULD send GOAWAY); %s" % c.summary())
        h.check(c._stream(sid).headers is None, "CONTINUATION flood: the stream got a response")
    finally:
        c.close()
    h.check(inst.calm_total() > calm0, "CONTINUATION flood: gatehouse_http2_calm_total did not"
            " increase")
    grew = (inst.rss_kb() - rss0) // 1024
    h.check(grew < 64, "CONTINUATION flood: RSS grew by %d MiB" % grew)
    still_serving(inst, "a CONTINUATION flood")


def test_continuations_within_the_limit():
    # max_continuations 8: a block in 1 HEADERS + 8 CONTINUATIONs is fine.
    inst = tight()
    c = inst.connect().handshake()
    try:
        blk = r.block(req("/c8", extra=[("x-a", "a" * 100)]))
        step = len(blk) // 9 + 1
        pieces = [blk[i:i + step] for i in range(0, len(blk), step)]
        h.eq(len(pieces), 9, "pieces")
        sid = c.new_sid()
        out = r.frame(r.HEADERS, r.END_STREAM, sid, pieces[0])
        for i, p in enumerate(pieces[1:], 1):
            out += r.frame(r.CONTINUATION, r.END_HEADERS if i == 8 else 0, sid, p)
        c.send(out)
        h.eq(c.response(sid).status, 200, "a block in 1 HEADERS + 8 CONTINUATIONs")
    finally:
        c.close()


def test_unfinished_header_block():
    inst = tight()
    c = inst.connect().handshake()
    try:
        sid = c.new_sid()
        c.send(r.frame(r.HEADERS, r.END_STREAM, sid, r.block(req("/unfinished"))))
        t0 = time.monotonic()
        dt = c.wait_closed(8)
        h.check(dt is not None, "a header block left unfinished: still open after 8s"
                " (header_read 2s); %s" % c.summary())
        dt = time.monotonic() - t0
        h.check(1.5 <= dt <= 5, "closed after %.2fs, expected about 2s (header_read)" % dt)
        h.check(c.goaway is not None, "unfinished block: closed without GOAWAY; %s" % c.summary())
    finally:
        c.close()
    still_serving(inst, "an unfinished header block")


# --- 10. control-frame floods -------------------------------------------------------

def flood(inst, what, frames, read=False, setup=None, answered=None):
    """|frames| sent in a burst (in slices with reads between them when
    |read|): GOAWAY ENHANCE_YOUR_CALM once about max_control_frames (100)
    were taken; |answered|(c) counts the replies, which must stop there."""
    calm0 = inst.calm_total()
    c = inst.connect().handshake()
    try:
        if setup:
            setup(c)
        if read:
            for i in range(0, len(frames), 20):
                if not c.send(b"".join(frames[i:i + 20])):
                    break
                c.pump(0.001)
        else:
            c.send(b"".join(frames))
        calm_goaway(c, what)
        if answered:
            n = answered(c)
            h.check(n <= 120, "%s: %d of the %d frames were answered (max_control_frames"
                    " 100/1s)" % (what, n, len(frames)))
    finally:
        c.close()
    still_serving(inst, what)
    h.check(inst.calm_total() > calm0, "%s: gatehouse_http2_calm_total did not increase" % what)


def test_flood_settings():
    flood(tight(), "300 SETTINGS, replies unread", [r.settings()] * 300,
          answered=lambda c: c.settings_acks)


def test_flood_ping_unread():
    flood(tight(), "300 PINGs, replies unread", [r.ping(b"%08d" % i) for i in range(300)],
          answered=lambda c: len(c.pings))


def test_flood_ping_read():
    flood(tight(), "300 PINGs, replies read", [r.ping(b"%08d" % i) for i in range(300)],
          read=True, answered=lambda c: len(c.pings))


def test_flood_empty_data():
    def open_stream(c):
        c.headers(req("/upload", "POST"), sid=1, end_stream=False)
    flood(tight(), "300 empty DATA frames", [r.data(1, b"")] * 300, setup=open_stream)


def test_flood_priority():
    flood(tight(), "300 PRIORITY frames",
          [r.priority(2 * i + 101, dep=0) for i in range(300)])


def test_flood_window_update():
    flood(tight(), "300 WINDOW_UPDATEs of 1 byte", [r.window_update(0, 1)] * 300)


def test_control_frames_under_the_rate_allowed():
    inst = tight()
    c = inst.connect().handshake()
    try:
        c.send(b"".join([r.ping(b"%08d" % i) for i in range(40)] + [r.settings()] * 20))
        r.expect_alive(c, HOST, "60 control frames (max_control_frames 100/1s)")
    finally:
        c.close()


# --- 11. a client holding windows at zero ---------------------------------------------

def echo_backlog(inst):
    """Bytes gh_echo has written that its peers (our proxy) have not read,
    summed over its connections (/proc/net/tcp tx_queue): a response the
    proxy holds back without closing stays here."""
    total = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            if int(p[1].split(":")[1], 16) == inst.echo.port and p[3] == "01":
                total += int(p[4].split(":")[0], 16)
    return total


def upstream_released(inst, what):
    h.wait_until(lambda: echo_backlog(inst) == 0, 5,
                 "%s: the upstream connection to be released (gh_echo's unread bytes: %d)"
                 % (what, echo_backlog(inst)))


def stalled(inst, what, **kw):
    c = inst.connect(**kw).handshake()
    try:
        t0 = time.monotonic()
        sid = c.get(HOST, "/size/10000000")
        s = c._stream(sid)
        # The proxy holds the upstream back meanwhile.
        h.wait_until(lambda: echo_backlog(inst) > 0, 5, "%s: gh_echo blocked on the proxy" % what)
        c.wait(lambda: s.rst is not None or c.closed, 10,
               "the stalled stream to be reset or the connection closed")
        dt = time.monotonic() - t0
        h.check(1.5 <= dt <= 5, "%s: ended after %.2fs, expected about 2s (client_send)"
                % (what, dt))
        h.check(len(s.data) <= 65535, "%s: %d bytes sent beyond the window" % (what, len(s.data)))
        # Released while the client connection may still be open.
        upstream_released(inst, what)
    finally:
        c.close()
    t0 = time.monotonic()
    still_serving(inst, what)
    h.check(time.monotonic() - t0 < 2, "%s: the next request took %.2fs"
            % (what, time.monotonic() - t0))
    return c


def test_zero_stream_window():
    c = stalled(tight(), "SETTINGS_INITIAL_WINDOW_SIZE 0",
            client_settings=[(r.INITIAL_WINDOW_SIZE, 0)])
    # The connection window is open: only the stream is reset.
    h.check(not c.closed and c.goaway is None, "a stream held at zero cost the connection; %s"
            % c.summary())


def test_zero_connection_window():
    # The stream window is large, the connection's stays at 65535 and is
    # never given back.
    stalled(tight(), "no connection WINDOW_UPDATE",
            client_settings=[(r.INITIAL_WINDOW_SIZE, 1 << 30)], auto_window=False)


def test_reset_mid_response():
    # Streams reset by the client while their responses flow: each
    # upstream connection is released, the connection goes on.
    inst = default()
    c = inst.connect().handshake()
    try:
        sids = [c.get(HOST, "/size/4000000?mid=%d" % i) for i in range(8)]
        c.wait(lambda: all(len(c._stream(x).data) > 0 for x in sids), what="DATA on every stream")
        h.wait_until(lambda: echo_backlog(inst) > 0, 5, "gh_echo blocked on the proxy")
        c.send(b"".join(r.rst(x) for x in sids))
        upstream_released(inst, "8 streams reset mid-response")
        r.expect_alive(c, HOST, "8 streams reset mid-response")
    finally:
        c.close()
    still_serving(inst, "streams reset mid-response")


# --- 12. timeouts.idle ----------------------------------------------------------------

def test_idle_timeout():
    inst = tight()
    c = inst.connect().handshake()
    try:
        h.eq(c.response(c.get(HOST, "/before-idle")).status, 200, "a request before the idle")
        t0 = time.monotonic()
        # A PING every 0.5 s does not keep a connection without streams.
        next_ping = t0
        while time.monotonic() - t0 < 6 and not c.closed:
            if time.monotonic() >= next_ping:
                c.send(r.ping())
                next_ping += 0.5
            c.pump(max(0.01, next_ping - time.monotonic()))
        dt = time.monotonic() - t0
        h.check(c.closed, "an idle connection was open after 6s (idle 2s)")
        h.check(1.5 <= dt <= 4.5, "idle connection closed after %.2fs, expected about 2s" % dt)
        h.check(c.goaway is not None and c.goaway[1] == r.NO_ERROR,
                "idle close: expected GOAWAY NO_ERROR; %s" % c.summary())
        h.eq(c.goaway[0], 1, "idle GOAWAY last stream id")
    finally:
        c.close()


# --- 13. timeouts.client_body --------------------------------------------------------

def test_request_body_timeout():
    inst = tight()
    cnt = h.Counter(inst.echo)
    c = inst.connect().handshake()
    try:
        t0 = time.monotonic()
        sid = c.headers(post(1000, "/slow-body"), end_stream=False)
        c.send(r.data(sid, b"x" * 10))
        s = c.response(sid, timeout=8)
        dt = time.monotonic() - t0
        h.check(1.5 <= dt <= 5, "the stalled body ended after %.2fs, expected about 2s" % dt)
        h.check(s.status == 408 or s.rst is not None, "stalled body: expected 408 or RST_STREAM;"
                " %s" % c.summary())
        r.expect_alive(c, HOST, "a stalled request body")
    finally:
        c.close()
    h.eq(cnt.requests(), 1, "requests the upstream completed (the next stream only)")


# --- 14. garbage ------------------------------------------------------------------

def test_bad_preface():
    inst = default()

    def case(preface):
        c = inst.connect(preface=False)
        try:
            c.send(preface)
            dt = c.wait_closed(5)
            h.check(dt is not None, "preface %r: still open after 5s" % preface[:30])
            h.check(c.goaway is None or c.goaway[1] == r.PROTOCOL_ERROR,
                    "preface %r: %s" % (preface[:30], c.summary()))
        finally:
            c.close()
        still_serving(inst, "preface %r" % preface[:30])
    each([b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
          b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST.encode(),
          r.settings(), b"\x00" * 100], case)


def test_garbage_frames():
    inst = default()

    def case(kv):
        what, raw, codes = kv
        c = inst.connect().handshake()
        try:
            c.send(raw)
            r.expect_connection_error(c, codes, what)
        finally:
            c.close()
        still_serving(inst, what)
    too_big = r.block(req("/big", extra=[("x-a", "a" * 17000)]))
    each([
        ("DATA on stream 0", r.data(0, b"hello"), r.PROTOCOL_ERROR),
        ("HEADERS larger than SETTINGS_MAX_FRAME_SIZE",
         r.frame(r.HEADERS, r.END_STREAM | r.END_HEADERS, 1, too_big), r.FRAME_SIZE_ERROR),
        ("SETTINGS larger than SETTINGS_MAX_FRAME_SIZE",
         r.frame(r.SETTINGS, 0, 0, b"\x00\x10\x00\x00\x00\x00" * 3000), r.FRAME_SIZE_ERROR),
        ("HEADERS on stream 2", r.frame(r.HEADERS, r.END_STREAM | r.END_HEADERS, 2,
                                         r.block(req("/even"))), r.PROTOCOL_ERROR),
        ("HPACK: index 0", r.frame(r.HEADERS, r.END_STREAM | r.END_HEADERS, 1, b"\x80"),
         r.COMPRESSION_ERROR),
        ("HPACK: index 5000", r.frame(r.HEADERS, r.END_STREAM | r.END_HEADERS, 1,
                                       r.hp_int(5000, 7, 0x80)), r.COMPRESSION_ERROR),
        ("HPACK: string longer than the block",
         r.frame(r.HEADERS, r.END_STREAM | r.END_HEADERS, 1, b"\x00\x7f\x50abc"),
         r.COMPRESSION_ERROR),
    ], case)


def test_data_frame_too_large():
    # A DATA frame beyond SETTINGS_MAX_FRAME_SIZE: FRAME_SIZE_ERROR, as a
    # stream or a connection error (RFC 9113 4.2).
    inst = default()
    cnt = h.Counter(inst.echo)
    c = inst.connect().handshake()
    try:
        sid = c.headers(post(20000, "/bigdata"), end_stream=False)
        c.send(r.data(sid, b"d" * 20000, end=True))
        s = c._stream(sid)
        c.wait(lambda: s.rst is not None or c.closed, what="a FRAME_SIZE_ERROR")
        code = s.rst if s.rst is not None else (c.goaway[1] if c.goaway else None)
        h.eq(r.err_name(code), "FRAME_SIZE_ERROR", "a 20000-byte DATA frame; %s" % c.summary())
    finally:
        c.close()
    still_serving(inst, "an oversized DATA frame")
    h.eq(cnt.requests(), 1, "requests the upstream completed (the new connection's only)")


# --- 15. a client that never reads -----------------------------------------------------

NR_COUNT, NR_SIZE = 100, 2000000


def test_never_reads_memory_bounded():
    inst = tight()
    rss0 = inst.rss_kb()
    peak = [rss0]
    c = inst.connect(client_settings=[(r.INITIAL_WINDOW_SIZE, (1 << 31) - 1)]).handshake()
    log0 = inst.g.log_size()
    try:
        c.send(r.window_update(0, (1 << 31) - 1 - 65535))
        # 100 requests of 2 MB each (windows wide open), and nothing read
        # from now on.
        c.send(b"".join(c.headers(req("/size/%d?nr=%d" % (NR_SIZE, i)), send=False)
                        for i in range(NR_COUNT)))
        marker = re.compile(r"client not reading")

        def cut_off():
            peak[0] = max(peak[0], inst.rss_kb())
            return marker.search(inst.g.log_since(log0))
        h.wait_until(cut_off, 10, "the proxy to give up on a client that never reads"
                     " (client_send 2s)", interval=0.1)
        # Now read: what was in flight, then the close.
        h.check(c.wait_closed(10) is not None, "a client that never read: the connection was"
                " still open after client_send; %s" % c.summary())
        got = sum(len(s.data) for s in c.streams.values())
        h.check(got < NR_COUNT * NR_SIZE, "the client that never read got every response"
                " (%d bytes)" % got)
    finally:
        c.close()
    grew = (peak[0] - rss0) // 1024
    print("# never-read: RSS %d -> peak %d KiB; %d bytes reached the client"
          % (rss0, peak[0], got))
    h.check(grew < 64, "RSS grew by %d MiB while a client that never read asked for %d MB"
            % (grew, NR_COUNT * NR_SIZE // 1000000))
    upstream_released(inst, "a client that never read")
    still_serving(inst, "a client that never read")


# --- 16. a mix of all of it ----------------------------------------------------

def test_random_mix():
    # 8 s of connections doing random things from the list above, fixed
    # seed (GH_H2_SEED to vary it): streams of every kind, bodies, resets,
    # windows held or opened, header blocks left unfinished, garbage,
    # abrupt closes. The process survives (and, in the sanitizer build,
    # reports nothing) and serves afterwards.
    inst = instance("mix", http2={"max_concurrent_streams": 16, "max_resets": "1000/1s",
                                  "max_control_frames": "2000/1s"},
                    timeouts={"client_body": "1s", "client_send": "1s", "idle": "1s",
                              "header_read": "1s"})
    rnd = random.Random(int(os.environ.get("GH_H2_SEED", "12")))
    paths = ["/size/0", "/size/10", "/size/70000", "/size/2000000", "/delay/50",
             "/chunked/50000", "/status/500"]
    ws = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
          (":authority", HOST), (":path", "/ws")]
    t0, conns = time.monotonic(), 0
    while time.monotonic() - t0 < 8 and inst.g.alive():
        conns += 1
        c = inst.connect(auto_window=rnd.random() < 0.8, client_settings=[
            (r.INITIAL_WINDOW_SIZE, rnd.choice([0, 1, 65535, 1 << 20]))])
        sids = [0]
        for _ in range(rnd.randint(1, 30)):
            a, sid = rnd.random(), rnd.choice(sids)
            if a < 0.3:
                sids.append(c.get(HOST, rnd.choice(paths), end_stream=rnd.random() < 0.8))
            elif a < 0.35:
                sids.append(c.headers(ws, end_stream=False))
            elif a < 0.5:
                c.send(r.data(sid, os.urandom(rnd.randint(0, 16000)), end=rnd.random() < 0.5))
            elif a < 0.6:
                c.send(r.rst(sid))
            elif a < 0.7:
                sids.append(c.new_sid())
                c.send(r.frame(r.HEADERS, r.END_STREAM, sids[-1],
                               r.block(req("/p"))[:rnd.randint(1, 20)]))
            elif a < 0.8:
                c.send(r.window_update(sid, rnd.randint(1, 1 << 20)))
            elif a < 0.85:
                c.send(r.settings([(r.INITIAL_WINDOW_SIZE, rnd.choice([0, 100, 1 << 20]))]))
            elif a < 0.9:
                c.send(os.urandom(rnd.randint(1, 50)))
            c.pump(rnd.choice([0.001, 0.01, 0.05]))
            if c.closed:
                break
        if rnd.random() < 0.5:
            c.wait_closed(rnd.choice([0.05, 0.3]))
        c.close()
    print("# random mix: %d connections" % conns)
    still_serving(inst, "%d connections of random hostile frames" % conns)


if __name__ == "__main__":
    h.main()
