#!/usr/bin/env python3
"""exchange_seeds.py: writes the seed programs of fuzz_exchange
(tests/fuzz/corpus/exchange/) from the readable scripts below. The encoding
is described at the top of fuzz_exchange.c. Reproducers the fuzzer found
live in the same directory under names starting with "crash-"/"bug-" and
are not written here.

    python3 tests/fuzz/exchange_seeds.py      # rewrites the seeds
"""
import os
import sys

UNITS = {"ms": 0, "10ms": 1, "100ms": 2, "s": 3, "10s": 4, "min": 5, "10min": 6, "h": 7}


def _send(kind, target, data):
    """opcode |kind| with |target|, then data in pieces of at most 255 bytes."""
    data = data.encode() if isinstance(data, str) else data
    out = b""
    for k in range(0, len(data), 255):
        piece = data[k:k + 255]
        out += bytes([kind | (target << 4), len(piece)]) + piece
    return out


def client(i, data):
    """client i sends data."""
    return _send(0, i, data)


def client_fill(i, kib):
    return bytes([1 | (i << 4), kib - 1])


def up(sel, data):
    """upstream sel (0 newest, n the n-th accepted) sends data."""
    return _send(2, sel, data)


def up_fill(sel, kib):
    return bytes([3 | (sel << 4), kib - 1])


def client_close(i, mode="close"):
    m = {"close": 0, "reset": 1, "shutdown": 2}[mode]
    return bytes([4 | ((i | (m << 2)) << 4)])


def up_close(sel, reset=False):
    return bytes([5 | ((sel | (8 if reset else 0)) << 4)])


def client_reading(i, on):
    return bytes([6 | ((i | (4 if on else 0)) << 4)])


def up_reading(sel, on):
    return bytes([7 | ((sel | (8 if on else 0)) << 4)])


def advance(n, unit):
    return bytes([8 | (UNITS[unit] << 4), n - 1])


def spin(n=16):
    out = b""
    while n > 0:
        k = min(n, 16)
        out += bytes([9 | ((k - 1) << 4)])
        n -= k
    return out


def up_shutdown(sel):
    return bytes([10 | (sel << 4)])


def drain():
    return bytes([11])


def reload():
    return bytes([12])


GET = "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"
OK = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

SEEDS = {
    # A plain round trip, then a second request on the pooled connection.
    "get-keepalive-reuse": client(0, GET) + spin() + up(0, OK) + spin()
    + client(0, "GET /2 HTTP/1.1\r\nHost: a.test\r\n\r\n") + spin() + up(0, OK) + spin(),
    # Issue 11 case 1 (the old SIGSEGV): a 1 MB POST; the upstream answers at
    # once with a large response without reading the body; the client does
    # not read it; more body bytes follow.
    "early-large-response-client-not-reading":
        client(0, "POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1000000\r\n\r\n")
        + client_reading(0, False) + spin() + up_reading(0, False) + client_fill(0, 16) + spin()
        + up(0, "HTTP/1.1 200 OK\r\nContent-Length: 500000\r\n\r\n") + up_fill(0, 64) + spin()
        + client_fill(0, 64) + spin() + up_fill(0, 64) + spin() + client_fill(0, 128) + spin()
        + advance(3, "s") + spin(),
    # Case 2: a list in Connection naming Content-Length (smuggling attempt).
    "smuggle-connection-content-length":
        client(0, "POST / HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, Content-Length\r\n"
                  "Content-Length: 5\r\n\r\nhelloGET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
        + spin() + up(0, OK) + spin() + up(0, OK) + spin(),
    # Case 3: the upstream's Connection names Content-Length.
    "upstream-connection-content-length":
        client(0, GET) + spin()
        + up(0, "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello")
        + spin() + client(0, GET) + spin() + up(0, OK) + spin(),
    # Case 4: chunk size 2^64-1, from the client and from the upstream.
    "chunk-size-max-u64":
        client(0, "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "ffffffffffffffff\r\nabc") + spin()
        + client(1, GET) + spin()
        + up(0, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc")
        + spin(),
    # Case 5: BWS before a chunk extension, both ways.
    "chunk-ext-bws":
        client(0, "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "5 ;ext\r\nhello\r\n0\r\n\r\n") + spin()
        + up(0, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 ;ext=1\r\nhello\r\n0\r\n\r\n")
        + spin(),
    # Case 6: 101 upgrade, bytes both ways, then the client closes, then the
    # upstream closes.
    "upgrade-client-close-then-upstream-close":
        client(0, "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        + spin() + up(0, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nhi")
        + spin() + client(0, "ping") + spin() + client_close(0) + up(0, "late") + up_close(0) + spin(),
    # Case 7: an early response while the body is arriving.
    "early-response-body-arriving":
        client(0, "POST /p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100000\r\n\r\n") + client_fill(0, 4)
        + spin() + up(0, "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno") + spin()
        + client_fill(0, 32) + spin() + advance(6, "s") + spin(),
    # Case 8: stray bytes after a response on a pooled connection, then a
    # second client.
    "upstream-stray-bytes-pooled":
        client(0, GET) + spin() + up(0, OK) + spin() + up(0, "HTTP/1.1 200 OK\r\n\r\nstray")
        + spin() + client(1, GET) + spin() + up(0, OK) + spin(),
    # Case 9: a long Host and target on the plain listener.
    "plain-long-host-target":
        client(2, "GET /" + "t" * 250 + " HTTP/1.1\r\nHost: " + "h" * 250 + ".test:8080\r\n\r\n")
        + spin() + client(2, "GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: a.test\r\n\r\n")
        + spin(),
    # max_body: 413 by Content-Length and by chunks.
    "max-body-413":
        client(0, "POST / HTTP/1.1\r\nHost: m.test\r\nContent-Length: 65\r\n\r\n") + spin()
        + client(1, "POST / HTTP/1.1\r\nHost: m.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "20\r\n" + "x" * 32 + "\r\n30\r\n") + spin(),
    # The dead upstream (127.0.0.1:1) is tried second: retry and back-off.
    "retry-dead-upstream":
        client(0, GET) + spin() + up(0, OK) + spin() + client(0, GET) + spin() + up(0, OK) + spin()
        + client(0, GET) + spin() + up(0, OK) + spin(),
    # Route /r/ with two live upstreams, least_conn; two clients at once.
    "route-two-upstreams":
        client(0, "GET /r/1 HTTP/1.1\r\nHost: x.b.test\r\n\r\n") + client(1, "GET /r/2 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        + spin() + up(1, OK) + up(2, "HTTP/1.1 204 No Content\r\n\r\n") + spin(),
    # Timeouts: connect (before the loop turns), upstream read, client send,
    # idle pool, header read.
    "timeouts":
        client(0, GET) + spin(1) + advance(2, "s") + spin() + advance(3, "s") + spin()
        + client(1, "GET / HTTP/1.1\r\nHo") + spin() + advance(1, "h") + spin(),
    "pool-idle-timeout":
        client(0, GET) + spin() + up(0, OK) + spin() + advance(5, "s") + spin()
        + client(1, GET) + spin() + up(0, OK) + spin(),
    # The client stops reading a large response: client_send timeout.
    "client-send-timeout":
        client(0, GET) + client_reading(0, False) + spin()
        + up(0, "HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n") + up_fill(0, 100) + spin()
        + advance(3, "s") + spin(),
    # The upstream stops reading a chunked upload, then resets.
    "upstream-not-reading-then-reset":
        client(0, "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n") + spin()
        + up_reading(0, False) + client(0, "8000\r\n") + client_fill(0, 32) + spin()
        + advance(3, "s") + up_close(0, reset=True) + spin(),
    # Close-delimited response ended by the upstream's FIN.
    "close-delimited-shutdown":
        client(0, GET) + spin() + up(0, "HTTP/1.1 200 OK\r\n\r\nbody") + up_shutdown(0) + spin(),
    # Client resets mid-response; pipelined requests; draining.
    "client-reset-mid-response":
        client(0, GET + GET) + client_reading(0, False) + spin()
        + up(0, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n") + up_fill(0, 20) + spin()
        + client_close(0, "reset") + spin(),
    "drain-busy":
        client(0, GET) + client(1, "GET /r/ HTTP/1.1\r\nHost: a.test\r\n\r\n") + spin() + drain()
        + up(1, OK) + spin() + up(2, OK) + spin(),
    # A reload while a request is in flight and a connection is pooled.
    "reload-in-flight":
        client(0, GET) + spin() + up(0, OK) + spin() + client(1, "GET /r/x HTTP/1.1\r\nHost: a.test\r\n\r\n")
        + spin() + reload() + up(0, OK) + spin() + client(0, GET) + spin() + up(0, OK) + spin(),
    # Found by the response oracle: a 101 without Upgrade was relayed and
    # the tunnel's bytes followed, which a client reads as the next response.
    "bug-101-without-upgrade":
        client(0, "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        + spin() + up(0, "HTTP/1.1 101 Switching Protocols\r\n\r\nhi") + spin(),
    # 100-continue, then the final answer while the body is still coming.
    "expect-continue":
        client(0, "PUT /r/u HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n")
        + spin() + up(0, "HTTP/1.1 100 Continue\r\n\r\n") + spin() + client(0, "01234") + spin()
        + up(0, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        + spin() + client(0, "56789") + spin(),
    # max_body exceeded by a chunk after the response head went out: reset.
    "max-body-after-response-head":
        client(1, "POST / HTTP/1.1\r\nHost: m.test\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n")
        + spin() + up(0, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n") + spin()
        + client(1, "40\r\n" + "y" * 64 + "\r\n") + spin(),
    # HTTP/1.0 keep-alive, absolute-form, X-Forwarded-For, pipelined.
    "http10-keepalive-absolute-form":
        client(0, "GET http://x.b.test/r/a HTTP/1.0\r\nConnection: keep-alive\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"
                  "GET / HTTP/1.0\r\nHost: a.test\r\n\r\n")
        + spin() + up(0, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n") + spin()
        + up(0, "HTTP/1.0 200 OK\r\n\r\nbye") + up_close(0) + spin(),
    # A tunnel under back-pressure both ways, then it goes quiet.
    "tunnel-backpressure-idle":
        client(0, "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        + spin() + up(0, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        + spin() + client_reading(0, False) + up_reading(0, False) + client_fill(0, 64) + up_fill(0, 64) + spin()
        + client_reading(0, True) + up_reading(0, True) + spin() + advance(6, "s") + spin(),
    # Every upstream of the route times out connecting (the timers fire
    # before any loop turn), then a 502.
    "connect-timeouts-all":
        client(0, "GET /r/x HTTP/1.1\r\nHost: a.test\r\n\r\n") + spin(1) + advance(2, "s") + advance(2, "s") + spin(),
    # Found by the response oracle: control characters in the upstream's
    # reason phrase went to the client as they were.
    "bug-reason-phrase-control-chars":
        client(0, GET) + spin() + up(0, b"HTTP/1.1 200 O\x00K\x16\r\nContent-Length: 2\r\n\r\nok") + spin(),
    # Found by the response oracle: llhttp lets TAB and FF through in a
    # request target; the plain listener put them in its Location, the TLS
    # listener's path sent them upstream.
    "bug-target-form-feed-plain-redirect":
        client(2, "GET /a\x0cb HTTP/1.1\r\nHost: a.test\r\n\r\n") + spin(),
    "bug-target-tab-upstream":
        client(0, "GET /r/a\tb HTTP/1.1\r\nHost: a.test\r\n\r\n") + spin() + up(0, OK) + spin(),
    "client-half-close":
        client(0, "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\n\r\nab") + client_close(0, "shutdown")
        + spin() + up(0, OK) + spin(),
}


def write_corpus(target, seeds):
    """writes |seeds| (name: program) into corpus/<target>/, leaving other
    files there alone."""
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", target)
    os.makedirs(out, exist_ok=True)
    total = 0
    for name, prog in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(prog)
        total += len(prog)
    print(f"{len(seeds)} seeds, {total} bytes, in {out}", file=sys.stderr)


def main():
    write_corpus("exchange", SEEDS)


if __name__ == "__main__":
    main()
