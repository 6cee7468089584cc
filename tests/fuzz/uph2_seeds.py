#!/usr/bin/env python3
"""uph2_seeds.py: writes the seeds of fuzz_uph2 (tests/fuzz/corpus/uph2/):
real HTTP/2 server frame sequences made with python3-h2 (a client and a
server connection talk in memory; the server's bytes are the seed), after
fuzz_uph2.c's two control bytes. Reproducers the fuzzer found live in the
same directory under names starting with "bug-".

    python3 tests/fuzz/uph2_seeds.py      # rewrites the seeds
"""
import os

import h2.config
import h2.connection
import h2.errors

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "uph2")
GET, HEAD, CHUNKED_POST, POST_CL, PIPELINED, GRPC, EARLY_POST, ROUTE = range(8)
CLOSE, JSON, TWO_WRITES = 8, 16, 64


def pair():
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    s = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                             header_encoding="utf-8"))
    c.initiate_connection()
    s.initiate_connection()
    return c, s


def open_stream(c, s, sid, method="GET", end=True):
    c.send_headers(sid, [(":method", method), (":scheme", "http"), (":authority", "a.test"),
                         (":path", "/")], end_stream=end)
    if not end:
        c.send_data(sid, b"hello", end_stream=True)
    s.receive_data(c.data_to_send())


def seed(name, flags, build, cut=0x80):
    c, s = pair()
    out = build(c, s)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([flags, cut]) + out)


def ok(c, s):
    open_stream(c, s, 1)
    s.send_headers(1, [(":status", "200"), ("content-length", "5"), ("x-a", "b")])
    s.send_data(1, b"hello", end_stream=True)
    return s.data_to_send()


def no_length(c, s):
    open_stream(c, s, 1)
    s.send_headers(1, [(":status", "200")])
    s.send_data(1, b"hel")
    s.send_data(1, b"lo", end_stream=True)
    return s.data_to_send()


def trailers(c, s):
    open_stream(c, s, 1, "POST", end=False)
    s.send_headers(1, [(":status", "200"), ("content-type", "application/grpc")])
    s.send_data(1, b"\0\0\0\0\1y")
    s.send_headers(1, [("grpc-status", "0"), ("grpc-message", "ok")], end_stream=True)
    return s.data_to_send()


def trailers_only(c, s):
    open_stream(c, s, 1, "POST", end=False)
    s.send_headers(1, [(":status", "200"), ("content-type", "application/grpc"),
                       ("grpc-status", "5"), ("grpc-message", "no")], end_stream=True)
    return s.data_to_send()


def early_hints(c, s):
    open_stream(c, s, 1)
    s.send_headers(1, [(":status", "103"), ("link", "</a.css>; rel=preload")])
    s.send_headers(1, [(":status", "200"), ("content-length", "2")])
    s.send_data(1, b"ok", end_stream=True)
    return s.data_to_send()


def reset_mid_body(c, s):
    open_stream(c, s, 1)
    s.send_headers(1, [(":status", "200"), ("content-length", "10")])
    s.send_data(1, b"half")
    s.reset_stream(1, h2.errors.ErrorCodes.INTERNAL_ERROR)
    return s.data_to_send()


def reset_before_head(c, s):
    open_stream(c, s, 1)
    s.reset_stream(1, h2.errors.ErrorCodes.REFUSED_STREAM)
    return s.data_to_send()


def goaway(c, s):
    open_stream(c, s, 1)
    s.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR, last_stream_id=0)
    return s.data_to_send()


def no_content(c, s):
    open_stream(c, s, 1)
    s.send_headers(1, [(":status", "204")], end_stream=True)
    return s.data_to_send()


def two_streams(c, s):
    open_stream(c, s, 1)
    open_stream(c, s, 3)
    s.send_headers(1, [(":status", "200"), ("content-length", "1")])
    s.send_data(1, b"1", end_stream=True)
    s.send_headers(3, [(":status", "200"), ("content-length", "1")])
    s.send_data(3, b"2", end_stream=True)
    return s.data_to_send()


def window_and_ping(c, s):
    open_stream(c, s, 1, "POST", end=False)
    s.ping(b"12345678")
    s.increment_flow_control_window(100000)
    s.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    s.send_headers(1, [(":status", "200"), ("content-length", "0")], end_stream=True)
    return s.data_to_send()


def main():
    os.makedirs(OUT, exist_ok=True)
    seed("ok-get", GET | JSON, ok)
    seed("ok-head", HEAD, ok)
    seed("ok-two-writes", GET | TWO_WRITES, ok, cut=0x40)
    seed("no-length", GET, no_length)
    seed("no-length-close", GET | CLOSE, no_length)
    seed("chunked-post-trailers", CHUNKED_POST, trailers)
    seed("grpc-trailers", GRPC, trailers)
    seed("grpc-trailers-only", GRPC, trailers_only)
    seed("early-hints", GET, early_hints)
    seed("reset-mid-body", GET, reset_mid_body)
    seed("reset-before-head", POST_CL, reset_before_head)
    seed("goaway-refused", GET, goaway)
    seed("no-content", ROUTE, no_content)
    seed("pipelined", PIPELINED | TWO_WRITES, two_streams, cut=0x60)
    seed("early-post", EARLY_POST, ok)
    seed("window-ping-settings", POST_CL, window_and_ping)
    seed("client-leaves", GET | TWO_WRITES | 128, no_length, cut=0x70)


if __name__ == "__main__":
    import h2.settings  # noqa: F401  (used above)
    main()
