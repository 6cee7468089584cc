#!/usr/bin/env python3
"""h2_seeds.py: writes the seed programs of fuzz_h2 (tests/fuzz/corpus/h2/)
from the readable scripts below. The encoding is described at the top of
fuzz_h2.c; the upstream's operations, time, loop turns, drain and reload
are numbered as in fuzz_exchange, and their helpers come from
exchange_seeds.py. Reproducers the fuzzer found live in the same directory
under names starting with "bug-" and are not written here unless they are
scripts below.

    python3 tests/fuzz/h2_seeds.py      # rewrites the seeds
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exchange_seeds import (  # noqa: E402  (the shared operations)
    _send, advance, client_close, client_reading, drain, reload, spin, up, up_close, up_fill,
    up_reading, up_shutdown, write_corpus)

# Stream slots: the connection, streams 1, 3, 5, 7, stream 2, the current
# stream, a new one.
CONN, S1, S3, S5, S7, S2, CUR, NEW = range(8)

# Request heads of fuzz_h2.c's dictionary.
GET, ROUTE, POST_CL5, POST_CHUNKED, HEAD, WS_CONNECT, GET_M, POST_M_CL100, HOST_ONLY, \
    HOST_DIFFERS, PUT_EXPECT, COOKIES_TE, CONNECT, ACME, OPTIONS_UNKNOWN_SITE = range(15)
NO_HEAD = 15

# HEADERS flags of operation 14.
END_STREAM, SPLIT, END_HEADERS, PADDED, PRIORITY = 0x1, 0x2, 0x4, 0x8, 0x20
# Frame types.
DATA, HEADERS, PRIO, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
NO_ERROR, PROTOCOL_ERROR, CANCEL = 0, 1, 8


def raw(i, data):
    """client i sends raw bytes."""
    return _send(0, i, data)


def preface(i, variant=0):
    """preface, SETTINGS variant (0 empty, 1 window 0, 2 window 16, 3 table 0,
    4 frame size/push/streams, 5 window 2^31-1, 6 table 256 + window 1024,
    7 empty and no ACK), SETTINGS ACK."""
    return bytes([1 | ((i | variant << 1) << 4)])


def frame(i, slot, ftype, flags, payload=b""):
    payload = payload.encode() if isinstance(payload, str) else payload
    assert len(payload) < 256
    return bytes([13 | ((i | slot << 1) << 4), ftype, flags, len(payload)]) + payload


def field(name, value, kind=0):
    """a literal field: kind 0 without indexing, 1 incremental indexing,
    2 never indexed; name a string or a static-table index."""
    value = value.encode() if isinstance(value, str) else value
    if isinstance(name, int):
        return bytes([kind | name << 2, len(value)]) + value
    name = name.encode()
    return bytes([kind, len(name)]) + name + bytes([len(value)]) + value


def indexed(index):
    return bytes([3 | index << 2])


def headers(i, slot, head, flags=END_HEADERS, fields=()):
    assert len(fields) < 16
    return bytes([14 | ((i | slot << 1) << 4), head | len(fields) << 4, flags]) + b"".join(fields)


def data(i, slot, payload, end=False):
    return frame(i, slot, DATA, 1 if end else 0, payload)


def data_kib(i, slot, kib, end=False):
    return bytes([15 | ((i | slot << 1) << 4), (kib - 1) | (128 if end else 0)])


def u32(v):
    return v.to_bytes(4, "big")


def rst(i, slot, code=CANCEL):
    return frame(i, slot, RST_STREAM, 0, u32(code))


def window_update(i, slot, inc):
    return frame(i, slot, WINDOW_UPDATE, 0, u32(inc))


OK = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
GET1 = preface(0) + headers(0, S1, GET, END_HEADERS | END_STREAM)

SEEDS = {
    # GET, a response with a body, then a second request on the pooled
    # upstream connection.
    "get-response": GET1 + spin() + up(0, OK) + spin()
    + headers(0, S3, GET, END_HEADERS | END_STREAM) + spin() + up(0, OK) + spin(),
    # POST with a body and trailers, chunked toward the upstream; a chunked
    # response with trailers.
    "post-body-trailers": preface(0) + headers(0, S1, POST_CHUNKED) + data(0, S1, "hello")
    + headers(0, S1, NO_HEAD, END_HEADERS | END_STREAM, [field("x-checksum", "abc")]) + spin()
    + up(0, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-t\r\n\r\n"
            "5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n") + spin(),
    # POST with content-length, the body in two DATA frames.
    "post-content-length": preface(0) + headers(0, S1, POST_CL5) + data(0, S1, "hel")
    + data(0, S1, "lo", end=True) + spin() + up(0, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    + spin(),
    # Rapid reset (CVE-2023-44487): streams opened and reset at once until
    # GOAWAY ENHANCE_YOUR_CALM.
    "rapid-reset": preface(0) + b"".join(
        headers(0, NEW, GET, END_HEADERS | END_STREAM) + rst(0, CUR) for _ in range(12)) + spin(),
    # The client's window is 0: the response waits; time passes
    # (client_send) and a WINDOW_UPDATE comes too late.
    "window-stall-time": preface(0, 1) + headers(0, S1, GET, END_HEADERS | END_STREAM) + spin()
    + up(0, "HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n") + up_fill(0, 10) + spin()
    + advance(3, "s") + spin() + window_update(0, S1, 65535) + spin(),
    # A small window reopened bit by bit, the connection's window too.
    "window-small-updates": preface(0, 2) + headers(0, S1, GET, END_HEADERS | END_STREAM) + spin()
    + up(0, "HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n") + up_fill(0, 3) + spin()
    + window_update(0, S1, 1024) + spin() + window_update(0, S1, 2000) + window_update(0, CONN, 4096)
    + spin(),
    # Extended CONNECT (RFC 8441) bridged to an HTTP/1.1 WebSocket upgrade:
    # bytes both ways, then the tunnel goes idle.
    "extended-connect-101": preface(0) + headers(0, S1, WS_CONNECT) + spin()
    + up(0, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            "Sec-WebSocket-Accept: x\r\n\r\nhi") + spin() + data(0, S1, "ping") + spin()
    + up(0, "pong") + spin() + advance(6, "s") + spin(),
    # The upstream refuses the upgrade.
    "extended-connect-refused": preface(0) + headers(0, S1, WS_CONNECT) + spin()
    + up(0, "HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nno\n") + spin(),
    # A reload while a stream is in flight: GOAWAY, the stream finishes, a
    # new stream after it is not served.
    "reload-mid-stream": GET1 + spin() + reload() + spin() + up(0, OK) + spin()
    + headers(0, S3, GET, END_HEADERS | END_STREAM) + spin(),
    "drain-busy": GET1 + preface(1) + headers(1, S1, ROUTE, END_HEADERS | END_STREAM) + spin()
    + drain() + up(1, OK) + spin() + up(2, OK) + spin(),
    # Timeouts: idle, header_read (a block left without END_HEADERS),
    # client_body.
    "timeout-idle": preface(0) + spin() + advance(4, "s") + spin(),
    "timeout-header-read": preface(0) + headers(0, S1, GET, 0) + spin() + advance(3, "s") + spin(),
    "timeout-client-body": preface(0) + headers(0, S1, POST_CL5) + data(0, S1, "he") + spin()
    + advance(3, "s") + spin() + up(0, OK) + spin(),
    # HEADERS + CONTINUATION, padding and priority; PING, PRIORITY,
    # SETTINGS and GOAWAY from the client.
    "continuation-padding-priority": preface(0)
    + headers(0, S1, GET, SPLIT | END_HEADERS | END_STREAM | PADDED | PRIORITY,
              [field("x-a", "1", kind=1), field(58, "agent"), indexed(62)]) + spin()
    + up(0, OK) + spin(),
    "control-frames": preface(0) + frame(0, CONN, PING, 0, b"12345678")
    + frame(0, S3, PRIO, 0, u32(1) + b"\x10") + frame(0, CONN, SETTINGS, 0, b"\x00\x04\x00\x01\x00\x00")
    + headers(0, S1, GET, END_HEADERS | END_STREAM) + spin()
    + frame(0, CONN, GOAWAY, 0, u32(0) + u32(NO_ERROR)) + spin() + up(0, OK) + spin(),
    # HEAD, and a 204: no body either way.
    "head-and-204": preface(0) + headers(0, S1, HEAD, END_HEADERS | END_STREAM)
    + headers(0, S3, ROUTE, END_HEADERS | END_STREAM) + spin()
    + up(1, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n") + up(2, "HTTP/1.1 204 No Content\r\n\r\n")
    + spin(),
    # Answers of the proxy's own: 413, 400 (host differs), 405 (plain
    # CONNECT), an invalid field name (a stream error); OPTIONS * for
    # another host goes to the default site.
    "local-answers": preface(0) + headers(0, S1, POST_M_CL100)
    + headers(0, S3, OPTIONS_UNKNOWN_SITE, END_HEADERS | END_STREAM)
    + headers(0, S5, HOST_DIFFERS, END_HEADERS | END_STREAM)
    + headers(0, S7, CONNECT, END_HEADERS | END_STREAM) + spin()
    + headers(0, NEW, GET, END_HEADERS | END_STREAM, [field("X-Upper", "1")]) + spin()
    + headers(0, NEW, HOST_ONLY, END_HEADERS | END_STREAM) + spin() + up(0, OK) + spin(),
    # More streams than SETTINGS_MAX_CONCURRENT_STREAMS: a connection error.
    "too-many-streams": preface(0) + b"".join(
        headers(0, NEW, GET, END_HEADERS | END_STREAM) for _ in range(6)) + spin()
    + up(0, OK) + spin(),
    # The upstream resets in the middle of a body: RST_STREAM.
    "upstream-reset-mid-body": GET1 + spin()
    + up(0, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc") + spin() + up_close(0, reset=True)
    + spin(),
    # A close-delimited response ended by the upstream's FIN.
    "close-delimited": GET1 + spin() + up(0, "HTTP/1.1 200 OK\r\n\r\nbody") + up_shutdown(0) + spin(),
    # The client stops reading a large response: the connection is closed
    # after client_send.
    "client-not-reading": GET1 + client_reading(0, False) + spin()
    + up(0, "HTTP/1.1 200 OK\r\nContent-Length: 60000\r\n\r\n") + up_fill(0, 58) + spin()
    + advance(3, "s") + spin(),
    # An upload the upstream does not read: back-pressure holds the window.
    "upload-backpressure": preface(0) + headers(0, S1, POST_CHUNKED) + spin() + up_reading(0, False)
    + data_kib(0, S1, 60) + spin() + advance(1, "s") + spin() + up_reading(0, True) + spin()
    + data(0, S1, "end", end=True) + spin() + up(0, OK) + spin(),
    # 100-continue, an interim 103, the final answer.
    "expect-continue": preface(0) + headers(0, S1, PUT_EXPECT) + spin()
    + up(0, "HTTP/1.1 100 Continue\r\n\r\n") + spin() + data(0, S1, "0123456789", end=True) + spin()
    + up(0, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    + spin(),
    # The client resets a stream in flight, then closes.
    "client-reset-stream": GET1 + spin() + rst(0, S1) + spin() + up(0, OK) + spin() + client_close(0)
    + spin(),
    # Found by the oracle: a request refused here (405) whose HEADERS had
    # END_STREAM got RST_STREAM NO_ERROR after its answer, on a closed stream.
    "bug-rst-after-refused-complete-request": preface(0) + headers(0, S1, CONNECT, END_HEADERS | END_STREAM)
    + spin(),
    # Found by the oracle: a field name with a space from the upstream
    # (llhttp's lenient token) was relayed, a malformed field in HTTP/2.
    "bug-space-in-response-field-name": GET1 + spin()
    + up(0, "HTTP/1.1 103 Early Hints\r\nFoo Bar: x\r\n\r\n") + spin()
    + headers(0, S3, GET, END_HEADERS | END_STREAM) + spin()
    + up(0, "HTTP/1.1 200 OK\r\nFoo Bar: x\r\nContent-Length: 2\r\n\r\nok") + spin(),
    # Found by UBSan: an empty close-delimited body left read_body to copy 0
    # bytes from a NULL buffer.
    "bug-empty-close-delimited-body": GET1 + spin() + up(0, "HTTP/1.1 200 OK\r\n\r\n") + up_shutdown(0)
    + spin(),
    # Found by the oracle: llhttp leaves a value's trailing whitespace, which
    # an HTTP/2 field value must not have; in a 200 and in a 101.
    "bug-trailing-space-in-response-value": GET1 + spin()
    + up(0, "HTTP/1.1 200 OK\r\nX-A: b \r\nX-B:\t\r\nContent-Length: 2\r\n\r\nok") + spin()
    + headers(0, S3, WS_CONNECT) + spin()
    + up(0, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            "X-C: d\t \r\n\r\n") + spin(),
    # Found by the oracle: an empty field name (llhttp's lenient mode) was
    # relayed; so was a status code outside 100..599.
    "bug-empty-response-field-name": GET1 + spin()
    + up(0, "HTTP/1.1 200 OK\r\nA: 1\r\n: x\r\nContent-Length: 2\r\n\r\nok") + spin(),
    "bug-status-out-of-range": GET1 + spin() + up(0, "HTTP/1.1 050 Low\r\nContent-Length: 2\r\n\r\nok")
    + spin() + headers(0, S3, GET, END_HEADERS | END_STREAM) + spin()
    + up(0, "HTTP/1.1 999 High\r\nContent-Length: 2\r\n\r\nok") + spin(),
    # Not HTTP/2 at all.
    "garbage-no-preface": raw(0, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n") + spin(),
}


def main():
    write_corpus("h2", SEEDS)


if __name__ == "__main__":
    main()
