#!/usr/bin/env python3
"""test_h2_conformance: RFC 9113 (HTTP/2) and RFC 7541 (HPACK) on the
server side, section by section, in the spirit of h2spec (not packaged in
Debian, so its list of cases is followed here, written anew on h2raw.py).

One test function per RFC section; each case inside is named
"RFC 9113 6.5.2/1 ...", so a failure names the section and the case. Every
case opens its own connection to a real gatehouse (one worker, gh_echo
behind it) and asserts what the RFC requires:

  connection error  GOAWAY with the error code, then the close (5.4.1);
  stream error      RST_STREAM with the error code, the connection going on;
                    as h2spec does, a connection error with that code is
                    taken too where the RFC lets an endpoint escalate
                    (5.4.1: "MAY choose to treat a stream error as a
                    connection error"), unless the case says "strict";
  ignored           the frame changes nothing: a PING round trip and a
                    request on the same connection still work.

Where nghttp2 (1.52) escalates a stream error the RFC describes to a
connection error (5.1 on closed or half-closed streams, 5.1.2, 5.3.1, 6.3,
6.9), the case passes as it does in h2spec. 5.1.1/2 (a HEADERS frame on a
never-used stream id lower than one already used) is h2.c's: nghttp2 1.52
drops such HEADERS silently, as it cannot tell them from late trailers on
a closed stream; h2.c remembers the ranges of ids a client skipped.

The instance has http2.max_concurrent_streams 8 (for 5.1.2) and every
other setting at its default. Cases of the hostile kind (floods, limits,
timeouts) are in test_h2_hostile.py.
"""

import os
import struct
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import h2raw as r  # noqa: E402

try:
    import hpack.huffman_constants as huffman
except ImportError:  # pragma: no cover
    raise SystemExit("needs python3-hpack: run with /usr/bin/python3")

HOST = "h2conf.test"
MAX_STREAMS = 8
_inst = {}

PE, FSE, FCE, SC, CE = (r.PROTOCOL_ERROR, r.FRAME_SIZE_ERROR, r.FLOW_CONTROL_ERROR,
                        r.STREAM_CLOSED, r.COMPRESSION_ERROR)
ES, EH = r.END_STREAM, r.END_HEADERS


def inst():
    if not _inst:
        e = h.start_echo()
        g = h.start_gatehouse([h.site([HOST], [e])], workers=1,
                              http2={"max_concurrent_streams": MAX_STREAMS})
        _inst.update(g=g, echo=e)
    return _inst["g"]


def connect(**kw):
    return r.H2(inst().https_port, HOST, **kw)


def hs(**kw):
    """A connection past the handshake (SETTINGS both ways, ACKed)."""
    return connect(**kw).handshake()


def req(path="/", method="GET", extra=()):
    return r.block(r.req_fields(HOST, path, method, extra))


def headers(sid, flags=ES | EH, path="/", method="GET", extra=()):
    return r.frame(r.HEADERS, flags, sid, req(path, method, extra))


def section(sec, cases, rfc="RFC 9113"):
    """Runs |cases| [(n, description, fn)], each fn() on its own
    connection; the failures of all of them in one, each named."""
    def run(case):
        n, desc, fn = case
        name = "%s %s/%d %s" % (rfc, sec, n, desc) if rfc else "%s/%d %s" % (sec, n, desc)
        first = len(r.opened)
        try:
            fn(name)
            if r.TRACE:
                print("# %s: %s" % (name, "; ".join(c.summary() for c in r.opened[first:])))
        except h.Fail as e:
            msg = str(e).strip()
            raise h.Fail(msg if msg.startswith(name) else "%s: %s" % (name, msg))
        except (OSError, ValueError) as e:
            raise h.Fail("%s: %r" % (name, e))
    h.each(cases, run)
    g = inst()
    h.check(g.alive(), "gatehouse died in section %s" % sec)


# --- what a case expects --------------------------------------------------------

def conn_error(raw, codes, setup=None, preface=True):
    """|raw| after the handshake (and |setup|(c), which returns the bytes
    to send instead when it returns any): a connection error."""
    def fn(name):
        c = hs() if preface else connect(preface=False)
        try:
            out = raw
            if setup:
                out = setup(c) or raw
            c.send(out)
            r.expect_connection_error(c, codes, name)
        finally:
            c.close()
    return fn


def stream_error(setup, codes, strict=False):
    """setup(c) sends frames and returns the stream id that must get a
    stream error; unless |strict|, a connection error with |codes| too."""
    def fn(name):
        c = hs()
        try:
            sid = setup(c)
            r.expect_stream_error(c, sid, codes, name, or_connection=not strict)
            if c.goaway is None:
                r.expect_alive(c, HOST, name)
        finally:
            c.close()
    return fn


def ignored(raw, setup=None):
    """|raw| is ignored: the connection answers a PING and a request."""
    def fn(name):
        c = hs()
        try:
            if setup:
                setup(c)
            c.send(raw)
            c.ping_roundtrip()
            h.check(c.goaway is None, "%s: GOAWAY: %s" % (name, c.summary()))
            r.expect_alive(c, HOST, name)
        finally:
            c.close()
    return fn


def open_stream(c, path="/delay/2000"):
    """A stream in half-closed (remote): its request ended, its response
    held back upstream for a while."""
    return c.headers(r.req_fields(HOST, path))


def open_upload(c):
    """A stream in open state: a request whose body has not ended."""
    return c.headers(r.req_fields(HOST, "/upload", "POST"), end_stream=False)


def finished_stream(c):
    """A closed stream: request and response both ended."""
    sid = c.get(HOST, "/done")
    h.eq(c.response(sid).status, 200, "the stream to close")
    return sid


def reset_stream(c):
    """A stream the client reset: closed."""
    sid = open_stream(c)
    c.send(r.rst(sid, r.CANCEL))
    c.ping_roundtrip()
    return sid


# --- 3.4 HTTP/2 Connection Preface ------------------------------------------------

def test_3_4_connection_preface():
    def server_settings_first(name):
        c = connect()
        try:
            c.wait(lambda: c.frames, what="the server's first frame")
            h.eq(r.type_name(c.frames[0][0]), "SETTINGS", "%s: the server's first frame" % name)
            h.eq(c.frames[0][1] & r.ACK, 0, "%s: SETTINGS without ACK" % name)
            h.eq(c.server_settings.get(8), 1, "%s: SETTINGS_ENABLE_CONNECT_PROTOCOL" % name)
        finally:
            c.close()

    def invalid(raw):
        def fn(name):
            c = connect(preface=False)
            try:
                c.send(raw)
                h.check(c.wait_closed(5) is not None, "%s: still open after 5s" % name)
                # "A GOAWAY frame MAY be omitted in this case."
                h.check(c.goaway is None or c.goaway[1] == PE, "%s: %s" % (name, c.summary()))
            finally:
                c.close()
        return fn
    section("3.4", [
        (1, "the server's preface is a SETTINGS frame", server_settings_first),
        (2, "an invalid connection preface", invalid(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r")),
        (3, "the preface not followed by SETTINGS",
         conn_error(r.PREFACE + r.ping(), PE, preface=False)),
    ])


# --- 4.1 Frame Format ----------------------------------------------------------------

def test_4_1_frame_format():
    section("4.1", [
        (1, "a frame of unknown type", ignored(r.frame(0x20, 0, 0, b"unknown"))),
        (2, "undefined flags on PING", ignored(r.frame(r.PING, 0x16, 0, b"12345678"))),
        (3, "the reserved bit of the stream identifier",
         lambda name: reserved_bit(name)),
    ])


def reserved_bit(name):
    c = hs()
    try:
        c.send(r.frame(r.HEADERS, ES | EH, 0x80000001, req("/reserved")))
        h.eq(c.response(1).status, 200, "%s: HEADERS on 0x80000001 answered as stream 1" % name)
    finally:
        c.close()


# --- 4.2 Frame Size --------------------------------------------------------------------

def upload_taken(cl, make):
    """A POST with content-length |cl| whose body goes in make(sid)'s
    frames: answered, the |cl| octets upstream."""
    def fn(name):
        c = hs()
        try:
            sid = c.headers(r.req_fields(HOST, "/up", "POST", [("content-length", str(cl))]),
                            end_stream=False)
            c.send(make(sid))
            s = c.response(sid)
            h.eq(s.status, 200, "%s: status" % name)
            h.contains(s.data.decode(), '"body_bytes":%d,' % cl, "%s: the body upstream" % name)
        finally:
            c.close()
    return fn


def test_4_2_frame_size():
    section("4.2", [
        (1, "DATA of 2^14 octets", upload_taken(16384, lambda sid: r.data(sid, b"d" * 16384,
                                                                          end=True))),
        (2, "DATA larger than SETTINGS_MAX_FRAME_SIZE",
         stream_error(lambda c: send_then(c, open_upload(c), lambda s: r.data(s, b"d" * 16385)),
                      FSE)),
        (3, "HEADERS larger than SETTINGS_MAX_FRAME_SIZE",
         conn_error(headers(1, extra=[("x-big", "b" * 16400)]), FSE)),
    ])


# --- 4.3 Field Section Compression and Decompression -----------------------------

def test_4_3_field_section_compression():
    section("4.3", [
        (1, "an invalid field block fragment",
         conn_error(r.frame(r.HEADERS, ES | EH, 1, b"\x7f\xff\xff\xff\xff\xff\xff\xff"), CE)),
        (2, "PRIORITY while a field block is sent",
         conn_error(r.frame(r.HEADERS, ES, 1, req()) + r.priority(1)
                    + r.frame(r.CONTINUATION, EH, 1, b""), PE)),
        (3, "HEADERS on another stream while a field block is sent",
         conn_error(r.frame(r.HEADERS, ES, 1, req()) + headers(3), PE)),
    ])


# --- 5.1 Stream States ---------------------------------------------------------------

def test_5_1_stream_states():
    cases = [
        (1, "idle: DATA", conn_error(r.data(1, b"x"), PE)),
        (2, "idle: RST_STREAM", conn_error(r.rst(1), PE)),
        (3, "idle: WINDOW_UPDATE", conn_error(r.window_update(1, 100), PE)),
        (4, "idle: CONTINUATION", conn_error(r.frame(r.CONTINUATION, EH, 1, req()), PE)),
    ]
    # DATA and HEADERS on a stream the client can no longer send on:
    # STREAM_CLOSED; a CONTINUATION there follows no open field block.
    for state, opener in (("half-closed (remote)", open_stream),
                          ("closed after RST_STREAM", reset_stream),
                          ("closed after END_STREAM both ways", finished_stream)):
        n = len(cases) + 1
        cases += [
            (n, "%s: DATA" % state, stream_error(
                lambda c, o=opener: send_then(c, o(c), lambda s: r.data(s, b"x")), SC)),
            (n + 1, "%s: HEADERS" % state, stream_error(
                lambda c, o=opener: send_then(c, o(c), headers), SC)),
            (n + 2, "%s: CONTINUATION" % state, conn_error(
                None, (SC, PE), setup=lambda c, o=opener: r.frame(r.CONTINUATION, EH, o(c),
                                                                  req()))),
        ]
    cases.append((len(cases) + 1, "closed: PRIORITY is allowed",
                  ignored(b"", setup=lambda c: c.send(r.priority(finished_stream(c))))))
    section("5.1", cases)


def send_then(c, sid, make):
    c.send(make(sid))
    return sid


def test_5_1_1_stream_identifiers():
    def smaller(name):
        c = hs()
        try:
            h.eq(c.response(c.headers(r.req_fields(HOST, "/five"), sid=5)).status, 200,
                 "stream 5")
            c.send(headers(3))
            dt = c.wait_closed(3)
            h.check(c.goaway is not None and c.goaway[1] == PE and dt is not None,
                    "%s: HEADERS on stream 3 after stream 5 must be a connection error"
                    " PROTOCOL_ERROR; %s%s" % (name, c.summary(), "" if c.goaway else
                    " (nghttp2 1.52 raises it only for a stream it still remembers, and"
                    " drops the HEADERS of a never-used lower id silently: the request is"
                    " never answered)"))
        finally:
            c.close()
    section("5.1.1", [
        (1, "an even stream identifier", conn_error(headers(2), PE)),
        (2, "a stream identifier smaller than a previous one", smaller),
    ])


def test_5_1_2_stream_concurrency():
    def fn(name):
        c = hs()
        try:
            h.eq(c.server_settings.get(r.MAX_CONCURRENT_STREAMS), MAX_STREAMS,
                 "SETTINGS_MAX_CONCURRENT_STREAMS")
            for _ in range(MAX_STREAMS):
                open_stream(c, "/delay/500")
            sid = open_stream(c, "/delay/500")
            r.expect_stream_error(c, sid, (PE, r.REFUSED_STREAM), name, or_connection=True)
        finally:
            c.close()
    section("5.1.2", [(1, "HEADERS beyond SETTINGS_MAX_CONCURRENT_STREAMS", fn)])


# --- 5.3.1 Stream Dependencies ---------------------------------------------------------

def test_5_3_1_stream_dependencies():
    def self_headers(c):
        prio = struct.pack(">IB", 1, 16)
        c.send(r.frame(r.HEADERS, ES | EH | r.PRIORITY_FLAG, 1, prio + req()))
        return 1

    def self_priority(c):
        sid = open_stream(c)
        c.send(r.priority(sid, dep=sid))
        return sid
    section("5.3.1", [
        (1, "HEADERS that depends on itself", stream_error(self_headers, PE)),
        (2, "PRIORITY that depends on itself", stream_error(self_priority, PE)),
    ])


# --- 5.4.1 Connection Error Handling -----------------------------------------------------

def test_5_4_1_connection_error_handling():
    def fn(name):
        c = hs()
        try:
            c.send(r.frame(r.PING, 0, 0, b"123456"))
            r.expect_connection_error(c, FSE, name)
            kinds = [f[0] for f in c.frames]
            h.eq(kinds[-1], r.GOAWAY, "%s: GOAWAY is the last frame before the close" % name)
        finally:
            c.close()
    section("5.4.1", [(1, "an invalid PING: GOAWAY, then the TCP close", fn)])


# --- 5.5 Extending HTTP/2 ----------------------------------------------------------------

def test_5_5_extending_http2():
    section("5.5", [
        (1, "an unknown extension frame", ignored(r.frame(0xfe, 0xff, 0, b"ext"))),
        (2, "an unknown extension frame inside a field block",
         conn_error(r.frame(r.HEADERS, ES, 1, req()) + r.frame(0xfe, 0, 1, b"ext")
                    + r.frame(r.CONTINUATION, EH, 1, b""), PE)),
    ])


# --- 6.1 DATA -------------------------------------------------------------------------------

def padded_data(c):
    sid = open_upload(c)
    # Pad Length 10 in a 5-octet payload.
    return r.frame(r.DATA, r.PADDED, sid, b"\x0aabcd")


def test_6_1_data():
    section("6.1", [
        (1, "DATA on stream 0", conn_error(r.data(0, b"x"), PE)),
        (2, "DATA on a stream neither open nor half-closed (local)",
         stream_error(lambda c: send_then(c, open_stream(c), lambda s: r.data(s, b"x")), SC)),
        (3, "DATA with a Pad Length as long as the payload", conn_error(None, PE,
                                                                      setup=padded_data)),
        (4, "padded DATA is taken", upload_taken(4, lambda sid: r.frame(
            r.DATA, r.PADDED | ES, sid, b"\x05abcd" + b"\x00" * 5))),
    ])


# --- 6.2 HEADERS ----------------------------------------------------------------------------

def test_6_2_headers():
    blk = req()
    section("6.2", [
        (1, "HEADERS without END_HEADERS, then PRIORITY",
         conn_error(r.frame(r.HEADERS, ES, 1, blk) + r.priority(1), PE)),
        (2, "HEADERS without END_HEADERS, then HEADERS on another stream",
         conn_error(r.frame(r.HEADERS, ES, 1, blk) + headers(3), PE)),
        (3, "HEADERS on stream 0", conn_error(headers(0), PE)),
        (4, "HEADERS with a Pad Length beyond the payload",
         conn_error(r.frame(r.HEADERS, ES | EH | r.PADDED, 1, bytes([len(blk) + 1]) + blk), PE)),
        (5, "padded HEADERS with priority are taken", padded_headers_ok),
    ])


def padded_headers_ok(name):
    c = hs()
    try:
        blk = req("/padded")
        c.send(r.frame(r.HEADERS, ES | EH | r.PADDED | r.PRIORITY_FLAG, 1,
                       b"\x03" + struct.pack(">IB", 0, 200) + blk + b"\x00\x00\x00"))
        h.eq(c.response(1).status, 200, "%s: status" % name)
    finally:
        c.close()


# --- 6.3 PRIORITY ------------------------------------------------------------------------------

def test_6_3_priority():
    section("6.3", [
        (1, "PRIORITY on stream 0", conn_error(r.priority(0), PE)),
        (2, "PRIORITY of 4 octets",
         stream_error(lambda c: send_then(c, open_stream(c),
                                          lambda s: r.frame(r.PRIORITY, 0, s, b"\0\0\0\0")), FSE)),
        (3, "PRIORITY on an idle stream is allowed", ignored(r.priority(101))),
    ])


# --- 6.4 RST_STREAM --------------------------------------------------------------------------

def test_6_4_rst_stream():
    section("6.4", [
        (1, "RST_STREAM on stream 0", conn_error(r.rst(0), PE)),
        (2, "RST_STREAM on an idle stream", conn_error(r.rst(1), PE)),
        (3, "RST_STREAM of 3 octets",
         conn_error(None, FSE, setup=lambda c: r.frame(r.RST_STREAM, 0, open_stream(c),
                                                        b"\0\0\0"))),
    ])


# --- 6.5 SETTINGS ------------------------------------------------------------------------------

def test_6_5_settings():
    section("6.5", [
        (1, "SETTINGS with ACK and a payload",
         conn_error(r.frame(r.SETTINGS, r.ACK, 0, b"\0\x03\0\0\0\x10"), FSE)),
        (2, "SETTINGS on stream 1",
         conn_error(r.frame(r.SETTINGS, 0, 1, b"\0\x03\0\0\0\x10"), PE)),
        (3, "SETTINGS of 3 octets", conn_error(r.frame(r.SETTINGS, 0, 0, b"\0\x03\0"), FSE)),
    ])


def test_6_5_2_defined_settings():
    section("6.5.2", [
        (1, "SETTINGS_ENABLE_PUSH 2", conn_error(r.settings([(r.ENABLE_PUSH, 2)]), PE)),
        (2, "SETTINGS_INITIAL_WINDOW_SIZE 2^31",
         conn_error(r.settings([(r.INITIAL_WINDOW_SIZE, 1 << 31)]), FCE)),
        (3, "SETTINGS_MAX_FRAME_SIZE 16383",
         conn_error(r.settings([(r.MAX_FRAME_SIZE, 16383)]), PE)),
        (4, "SETTINGS_MAX_FRAME_SIZE 2^24",
         conn_error(r.settings([(r.MAX_FRAME_SIZE, 1 << 24)]), PE)),
        (5, "an unknown setting", ignored(r.settings([(0xff, 1)]))),
        (6, "SETTINGS_ENABLE_CONNECT_PROTOCOL 2 (RFC 8441 3)",
         conn_error(r.settings([(8, 2)]), PE)),
    ])


def test_6_5_3_settings_synchronization():
    def in_order(name):
        c = hs()
        try:
            c.send(r.settings([(r.INITIAL_WINDOW_SIZE, 100), (r.INITIAL_WINDOW_SIZE, 1)]))
            c.wait(lambda: c.settings_acks >= 2, what="the SETTINGS ACK")
            sid = c.get(HOST, "/size/1000")
            c.wait(lambda: c._stream(sid).data_frames >= 1, what="a DATA frame")
            h.eq(len(c._stream(sid).data), 1, "%s: the first DATA frame's length" % name)
        finally:
            c.close()

    def acked(name):
        c = hs()
        try:
            n = c.settings_acks
            c.send(r.settings([(r.MAX_CONCURRENT_STREAMS, 10)]))
            c.wait(lambda: c.settings_acks > n, what="the SETTINGS ACK")
        finally:
            c.close()
    section("6.5.3", [
        (1, "several values of SETTINGS_INITIAL_WINDOW_SIZE: the last counts", in_order),
        (2, "SETTINGS without ACK is acknowledged", acked),
    ])


# --- 6.7 PING ---------------------------------------------------------------------------------

def test_6_7_ping():
    def echoed(name):
        c = hs()
        try:
            c.send(r.ping(b"h2\x00spec\x01"))
            c.wait(lambda: c.pings, what="the PING ACK")
            h.eq(c.pings[0], b"h2\x00spec\x01", "%s: the PING ACK's payload" % name)
        finally:
            c.close()

    def ack_unanswered(name):
        c = hs()
        try:
            c.send(r.ping(b"ackackac", ack=True) + r.ping(b"realreal"))
            c.wait(lambda: c.pings, what="the PING ACK")
            h.eq(c.pings, [b"realreal"], "%s: PING ACKs received" % name)
        finally:
            c.close()
    section("6.7", [
        (1, "PING is answered with the same payload", echoed),
        (2, "PING with ACK is not answered", ack_unanswered),
        (3, "PING on stream 1", conn_error(r.ping(sid=1), PE)),
        (4, "PING of 6 octets", conn_error(r.frame(r.PING, 0, 0, b"123456"), FSE)),
    ])


# --- 6.8 GOAWAY -------------------------------------------------------------------------------

def test_6_8_goaway():
    def finishes(name):
        c = hs()
        try:
            sid = open_stream(c, "/delay/300")
            c.ping_roundtrip()
            c.send(r.goaway(0))
            h.eq(c.response(sid).status, 200, "%s: the open stream after the client's GOAWAY"
                 % name)
        finally:
            c.close()
    section("6.8", [
        (1, "GOAWAY on stream 1", conn_error(r.goaway(sid=1), PE)),
        (2, "a stream open when the client sends GOAWAY finishes", finishes),
    ])


# --- 6.9 WINDOW_UPDATE ------------------------------------------------------------------------

def test_6_9_window_update():
    section("6.9", [
        (1, "WINDOW_UPDATE of 0 on the connection", conn_error(r.window_update(0, 0), PE)),
        (2, "WINDOW_UPDATE of 0 on a stream",
         stream_error(lambda c: send_then(c, open_stream(c), lambda s: r.window_update(s, 0)),
                      PE)),
        (3, "WINDOW_UPDATE of 3 octets", conn_error(r.frame(r.WINDOW_UPDATE, 0, 0, b"\0\0\1"),
                                                    FSE)),
    ])


def test_6_9_1_flow_control_window():
    def one_byte(name):
        c = hs(client_settings=[(r.INITIAL_WINDOW_SIZE, 1)])
        try:
            sid = c.get(HOST, "/size/1000")
            c.wait(lambda: c._stream(sid).data_frames >= 1, what="a DATA frame")
            h.eq(len(c._stream(sid).data), 1, "%s: DATA within a 1-octet window" % name)
        finally:
            c.close()
    section("6.9.1", [
        (1, "SETTINGS_INITIAL_WINDOW_SIZE 1: DATA of 1 octet", one_byte),
        (2, "the connection window above 2^31-1",
         conn_error(r.window_update(0, (1 << 31) - 1) + r.window_update(0, (1 << 31) - 1), FCE)),
        (3, "a stream window above 2^31-1",
         stream_error(lambda c: send_then(c, open_stream(c), lambda s: r.window_update(
             s, (1 << 31) - 1) + r.window_update(s, (1 << 31) - 1)), FCE)),
    ])


def test_6_9_2_initial_window_size():
    def changed_after(name):
        c = hs(client_settings=[(r.INITIAL_WINDOW_SIZE, 0)])
        try:
            sid = c.get(HOST, "/size/100")
            s = c._stream(sid)
            c.wait(lambda: s.headers is not None, what="the response head")
            c.ping_roundtrip()
            h.eq(len(s.data), 0, "%s: DATA in a zero window" % name)
            c.send(r.settings([(r.INITIAL_WINDOW_SIZE, 100)]))
            c.wait(lambda: len(s.data) == 100, what="100 octets of DATA")
        finally:
            c.close()

    def negative(name):
        c = hs(client_settings=[(r.INITIAL_WINDOW_SIZE, 1)])
        try:
            sid = c.get(HOST, "/size/1000")
            s = c._stream(sid)
            c.wait(lambda: len(s.data) == 1, what="1 octet of DATA")
            # 0 - 1 = -1: nothing may come until the window is positive.
            c.send(r.settings([(r.INITIAL_WINDOW_SIZE, 0)]))
            c.ping_roundtrip()
            c.send(r.window_update(sid, 1))
            c.ping_roundtrip()
            h.eq(len(s.data), 1, "%s: DATA in a window of -1 + 1" % name)
            c.send(r.window_update(sid, 2))
            c.wait(lambda: len(s.data) == 3, what="2 more octets")
            c.ping_roundtrip()
            h.eq(len(s.data), 3, "%s: DATA in a window of 2" % name)
        finally:
            c.close()
    section("6.9.2", [
        (1, "SETTINGS_INITIAL_WINDOW_SIZE changed after HEADERS", changed_after),
        (2, "SETTINGS_INITIAL_WINDOW_SIZE making a window negative", negative),
        (3, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
         conn_error(r.settings([(r.INITIAL_WINDOW_SIZE, 1 << 31)]), FCE)),
    ])


# --- 6.10 CONTINUATION ------------------------------------------------------------------------

def test_6_10_continuation():
    blk = req("/cont")
    a, b = blk[:10], blk[10:]

    def several(name):
        c = hs()
        try:
            c.send(r.frame(r.HEADERS, ES, 1, blk[:5]) + r.frame(r.CONTINUATION, 0, 1, blk[5:15])
                   + r.frame(r.CONTINUATION, EH, 1, blk[15:]))
            h.eq(c.response(1).status, 200, "%s: status" % name)
        finally:
            c.close()
    section("6.10", [
        (1, "HEADERS and several CONTINUATIONs", several),
        (2, "CONTINUATION followed by another frame",
         conn_error(r.frame(r.HEADERS, ES, 1, a) + r.frame(r.CONTINUATION, 0, 1, b) + r.ping(),
                    PE)),
        (3, "CONTINUATION on stream 0",
         conn_error(r.frame(r.HEADERS, ES, 1, a) + r.frame(r.CONTINUATION, EH, 0, b), PE)),
        (4, "CONTINUATION after HEADERS with END_HEADERS",
         conn_error(r.frame(r.HEADERS, ES | EH, 1, blk) + r.frame(r.CONTINUATION, EH, 1, b""),
                    PE)),
        (5, "CONTINUATION after CONTINUATION with END_HEADERS",
         conn_error(r.frame(r.HEADERS, ES, 1, a) + r.frame(r.CONTINUATION, EH, 1, b)
                    + r.frame(r.CONTINUATION, EH, 1, b""), PE)),
        (6, "CONTINUATION after DATA",
         conn_error(None, PE, setup=lambda c: r.data(open_upload(c), b"x")
                    + r.frame(r.CONTINUATION, EH, 1, b""))),
    ])


# --- 7 Error Codes ------------------------------------------------------------------------------

def test_7_error_codes():
    def goaway_unknown(name):
        # Nothing special: the open stream finishes, as after NO_ERROR
        # (6.8/2); the server may close once it has (no streams left).
        c = hs()
        try:
            sid = open_stream(c, "/delay/300")
            c.ping_roundtrip()
            c.send(r.goaway(0, 0xdeadbeef))
            h.eq(c.response(sid).status, 200, "%s: the open stream" % name)
            h.check(c.goaway is None or c.goaway[1] == r.NO_ERROR, "%s: GOAWAY in answer: %s"
                    % (name, c.summary()))
        finally:
            c.close()
    section("7", [
        (1, "GOAWAY with an unknown error code", goaway_unknown),
        (2, "RST_STREAM with an unknown error code",
         ignored(b"", setup=lambda c: c.send(r.rst(open_stream(c), 0xdeadbeef)))),
    ])


# --- 8.1 HTTP Message Framing ----------------------------------------------------------------

def second_headers(c):
    sid = open_upload(c)
    c.send(r.frame(r.HEADERS, EH, sid, r.block([("x-trailer", "no END_STREAM")])))
    return sid


def trailers_ok(name):
    c = hs()
    try:
        sid = c.headers(r.req_fields(HOST, "/tr", "POST"), end_stream=False)
        c.send(r.data(sid, b"hello") +
               r.frame(r.HEADERS, ES | EH, sid, r.block([("x-checksum", "abc")])))
        s = c.response(sid)
        h.eq(s.status, 200, "%s: status" % name)
        h.contains(s.data.decode(), '"trailers":[["x-checksum","abc"]]', "%s: trailers upstream"
                   % name)
    finally:
        c.close()


def test_8_1_http_message_framing():
    section("8.1", [
        (1, "a second HEADERS without END_STREAM", stream_error(second_headers, PE)),
        (2, "trailers (HEADERS with END_STREAM after DATA) are forwarded", trailers_ok),
    ])


def fields_error(fields, codes=PE):
    return stream_error(lambda c: c.headers(fields), codes)


def body_error(cl, pieces):
    def setup(c):
        sid = c.headers(r.req_fields(HOST, "/cl", "POST", [("content-length", str(cl))]),
                        end_stream=False)
        c.send(b"".join(r.data(sid, p, end=i == len(pieces) - 1) for i, p in enumerate(pieces)))
        return sid
    return stream_error(setup, PE)


def test_8_1_1_malformed_messages():
    section("8.1.1", [
        (1, "content-length unlike the DATA frame's length", body_error(10, [b"x" * 5])),
        (2, "content-length unlike the sum of the DATA frames", body_error(10,
                                                                          [b"x" * 4, b"y" * 4])),
    ])


# --- 8.2 HTTP Fields ---------------------------------------------------------------------------

def f(*extra, path="/f"):
    return r.req_fields(HOST, path, extra=list(extra))


def test_8_2_1_field_validity():
    section("8.2.1", [
        (1, "an upper-case field name", fields_error(f(("X-Upper", "v")))),
        (2, "CR in a value", fields_error(f(("x-a", "a\rb")))),
        (3, "LF in a value", fields_error(f(("x-a", "a\nb")))),
        (4, "NUL in a value", fields_error(f(("x-a", "a\0b")))),
        (5, "a value starting with a space", fields_error(f(("x-a", " v")))),
        (6, "a value ending with a tab", fields_error(f(("x-a", "v\t")))),
        (7, "DEL in a name", fields_error(f(("x-\x7f", "v")))),
    ])


def test_8_2_2_connection_specific_fields():
    section("8.2.2", [
        (1, "connection", fields_error(f(("connection", "keep-alive")))),
        (2, "TE other than trailers", fields_error(f(("te", "trailers, deflate")))),
    ])


def test_8_2_3_cookie_crumbs():
    def fn(name):
        c = hs()
        try:
            s = c.response(c.headers(f(("cookie", "a=1"), ("cookie", "b=2"))))
            h.eq(s.status, 200, "%s: status" % name)
            h.contains(s.data.decode(), '["cookie","a=1; b=2"]', "%s: cookie upstream" % name)
        finally:
            c.close()
    section("8.2.3", [(1, "cookie crumbs are joined with \"; \"", fn)])


# --- 8.3 HTTP Control Data ---------------------------------------------------------------------

def test_8_3_pseudo_header_fields():
    m, s, a, p = (":method", "GET"), (":scheme", "https"), (":authority", HOST), (":path", "/p")

    def in_trailers(c):
        sid = open_upload(c)
        c.send(r.frame(r.HEADERS, ES | EH, sid, r.block([(":path", "/t")])))
        return sid
    section("8.3", [
        (1, "an unknown pseudo-header", fields_error([m, s, a, p, (":foo", "x")])),
        (2, "a response pseudo-header in a request",
         fields_error([m, s, a, p, (":status", "200")])),
        (3, "a pseudo-header in trailers", stream_error(in_trailers, PE)),
        (4, "a pseudo-header after a regular field", fields_error([m, s, a, ("x-a", "b"), p])),
    ])


def test_8_3_1_request_pseudo_header_fields():
    m, s, a, p = (":method", "GET"), (":scheme", "https"), (":authority", HOST), (":path", "/p")
    section("8.3.1", [
        (1, "empty :path", fields_error([m, s, a, (":path", "")])),
        (2, "no :method", fields_error([s, a, p])),
        (3, "no :scheme", fields_error([m, a, p])),
        (4, "no :path", fields_error([m, s, a])),
        (5, "two :method", fields_error([m, (":method", "POST"), s, a, p])),
        (6, "two :scheme", fields_error([m, s, s, a, p])),
        (7, "two :path", fields_error([m, s, a, p, p])),
        (8, ":authority unlike host", fields_error([m, s, a, p, ("host", "other.test")])),
    ])


def test_8_5_connect():
    c_, a = (":method", "CONNECT"), (":authority", HOST)
    section("8.5", [
        (1, "CONNECT with :scheme and :path (no :protocol)",
         fields_error([c_, (":scheme", "https"), a, (":path", "/")])),
        (2, "CONNECT without :authority", fields_error([c_])),
    ])


def test_rfc8441_extended_connect():
    ws = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
          (":authority", HOST), (":path", "/ws"), ("sec-websocket-version", "13")]

    def tunnel(name):
        # gh_echo's 101 becomes a 200 whose fields keep their names (less
        # the HTTP/1.1 handshake's), then bytes go both ways.
        c = hs()
        try:
            sid = c.headers(ws, end_stream=False)
            s = c._stream(sid)
            c.wait(lambda: s.headers is not None or s.done, what="the tunnel's answer")
            h.eq(s.status, 200, "%s: status (%s)" % (name, c.summary()))
            names = [k for k, _ in s.headers]
            h.check("x-echo-conn" in names and "x-echo-req" in names and
                    "sec-websocket-accept" not in names and "upgrade" not in names,
                    "%s: the answer's field names: %r" % (name, s.headers))
            c.send(r.data(sid, b"ping over h2"))
            c.wait(lambda: len(s.data) >= 12 or s.done, what="the echo through the tunnel")
            h.eq(bytes(s.data), b"ping over h2", "%s: bytes back" % name)
        finally:
            c.close()
    section("RFC 8441", [
        (1, "extended CONNECT opens a WebSocket tunnel", tunnel),
        (2, ":protocol other than websocket", lambda name: not_websocket(name, ws)),
    ], rfc="")


def not_websocket(name, ws):
    c = hs()
    try:
        sid = c.headers([(k, "chat" if k == ":protocol" else v) for k, v in ws],
                        end_stream=False)
        s = c._stream(sid)
        c.wait(lambda: s.status is not None or s.rst is not None, what="the answer")
        h.check(s.status is not None and s.status >= 400 or s.rst is not None,
                "%s: expected an error; %s" % (name, c.summary()))
    finally:
        c.close()


# --- 8.4 Server Push -----------------------------------------------------------------------------

def test_8_4_server_push():
    def setup(c):
        sid = open_stream(c)
        return r.frame(r.PUSH_PROMISE, EH, sid, struct.pack(">I", 2) + req())
    section("8.4", [(1, "a client's PUSH_PROMISE", conn_error(None, PE, setup=setup))])


# --- RFC 7541 HPACK ----------------------------------------------------------------------------

def huff_bits(text):
    """(bits, number of bits) of |text| Huffman-coded (RFC 7541 B)."""
    v, n = 0, 0
    for ch in text:
        v = (v << huffman.REQUEST_CODES_LENGTH[ch]) | huffman.REQUEST_CODES[ch]
        n += huffman.REQUEST_CODES_LENGTH[ch]
    return v, n


def huff_literal(name, bits, nbits, pad_bit=1, pad_len=None):
    """A literal field (new name, not Huffman) whose value is |bits| padded
    with |pad_len| bits of |pad_bit| (default: to the next octet)."""
    if pad_len is None:
        pad_len = -nbits % 8
    v = (bits << pad_len) | (((1 << pad_len) - 1) if pad_bit else 0)
    total = nbits + pad_len
    h.check(total % 8 == 0, "whole octets")
    raw = v.to_bytes(total // 8, "big")
    return b"\x00" + r.hp_str(name) + r.hp_int(len(raw), 7, 0x80) + raw


def hpack_error(blk):
    return conn_error(r.frame(r.HEADERS, ES | EH, 1, blk), CE)


def table_size_zero(name):
    # Our decoder's table may hold nothing: the server's next block starts
    # with a size update to 0 (RFC 7541 4.2, 6.3) and indexes nothing.
    c = hs(client_settings=[(r.HEADER_TABLE_SIZE, 0)])
    try:
        for i in range(2):
            h.eq(c.response(c.get(HOST, "/t0/%d" % i)).status, 200, "%s: status" % name)
            h.eq(c.dec.header_table.maxsize, 0, "%s: the table size the server set" % name)
            h.eq(len(c.dec.header_table.dynamic_entries), 0, "%s: entries indexed" % name)
    finally:
        c.close()


def test_rfc7541_hpack():
    base = req("/hp")
    bits, n = huff_bits(b"/huffman")
    good = (b"\x82\x87" + b"\x00" + r.hp_str(":authority") + r.hp_str(HOST) +
            huff_literal(":path", bits, n))

    def huffman_ok(name):
        c = hs()
        try:
            s = c.response(c.headers(None, raw=good))
            h.eq(s.status, 200, "%s: status" % name)
            h.contains(s.data.decode(), '"path":"/huffman"', "%s: the path upstream" % name)
        finally:
            c.close()

    def dynamic_table_ok(name):
        # A field added to the dynamic table by one request, referred to by
        # index 62 in the next.
        c = hs()
        try:
            add = base + b"\x40" + r.hp_str("x-dyn") + r.hp_str("tabled")
            h.eq(c.response(c.headers(None, raw=add)).status, 200, "%s: first" % name)
            s = c.response(c.headers(None, raw=base + b"\xbe"))
            h.eq(s.status, 200, "%s: second" % name)
            h.contains(s.data.decode(), '["x-dyn","tabled"]', "%s: the indexed field" % name)
        finally:
            c.close()
    a_bits, a_n = huff_bits(b"a")
    section("HPACK", [
        (1, "2.3.3: an indexed field beyond the tables", hpack_error(base + r.hp_int(70, 7, 0x80))),
        (2, "2.3.3: a literal whose name index is beyond the tables",
         hpack_error(base + r.hp_int(70, 4, 0x00) + r.hp_str("v"))),
        (3, "4.2: a dynamic table size update at the end of a block", hpack_error(base + b"\x20")),
        (4, "5.1: an integer overflowing 32 bits",
         hpack_error(base + b"\xff" + b"\xff" * 8 + b"\x0f")),
        (5, "5.2: Huffman padding longer than 7 bits",
         hpack_error(base + huff_literal("x-h", a_bits, a_n, pad_len=11))),
        (6, "5.2: Huffman padding of zeros", hpack_error(base + huff_literal("x-h", a_bits, a_n,
                                                                             pad_bit=0))),
        (7, "5.2: a Huffman string containing EOS",
         hpack_error(base + huff_literal("x-h", (1 << 30) - 1, 30))),
        (8, "6.1: index 0", hpack_error(base + b"\x80")),
        (9, "6.3: a table size update above SETTINGS_HEADER_TABLE_SIZE",
         hpack_error(r.hp_int(8192, 5, 0x20) + base)),
        (10, "5.2: a Huffman-coded value is decoded", huffman_ok),
        (11, "2.3.2: the dynamic table carries over between blocks", dynamic_table_ok),
        (12, "4.2: SETTINGS_HEADER_TABLE_SIZE 0: the server's encoder goes to 0",
         table_size_zero),
    ], rfc="RFC 7541")


if __name__ == "__main__":
    h.main()
