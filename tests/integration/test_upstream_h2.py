#!/usr/bin/env python3
"""HTTP/2 to upstreams and gRPC end to end (issue 14).

Real peers: nghttpd (Debian's nghttp2-server) as an h2c backend and as an
h2-over-TLS backend with a certificate from the test CA; a gRPC server
(Debian's python3-grpcio, tests/integration/grpc_peer.py) in cleartext
(h2c) and over TLS (h2); gRPC clients are grpcio too (HTTP/2) and raw
HTTP/1.1 connections (a gRPC frame in a POST, trailers read from the
chunked response). Counting the upstream connections uses `ss`."""
import os
import queue
import shutil
import struct
import subprocess
import sys

import harness as h

NGHTTPD = shutil.which("nghttpd") or "/usr/bin/nghttpd"
H2LOAD = shutil.which("h2load") or "/usr/bin/h2load"
PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grpc_peer.py")

_s = {}


def start_grpc(port, tls=None):
    argv = [sys.executable, PEER, str(port)] + (list(tls) if tls else [])
    p = h.Proc(h._next_name("grpc"), argv)
    h.wait_until(lambda: "ready" in p.stdout(), 15, "the gRPC server to start")
    return p


def setup():
    if _s:
        return _s
    ca = h.ca()
    backend = ca.leaf(["backend.test"])
    www = h.subdir("www")
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("hello from nghttpd\n")
    big = os.urandom(3 * 1024 * 1024)
    with open(os.path.join(www, "big.bin"), "wb") as f:
        f.write(big)
    ports = {k: h.free_port() for k in ("h2c", "h2", "grpc", "grpcs", "dead", "noalpn")}
    n1 = h.Proc("nghttpd-h2c", [NGHTTPD, "--no-tls", "-d", www, str(ports["h2c"])])
    n2 = h.Proc("nghttpd-h2", [NGHTTPD, "-d", www, str(ports["h2"]), backend[1], backend[0]])
    h.check_ready(n1, [ports["h2c"]])
    h.check_ready(n2, [ports["h2"]])
    n3 = h.Proc("s_server", ["openssl", "s_server", "-accept", "127.0.0.1:%d" % ports["noalpn"],
                             "-cert", backend[0], "-key", backend[1], "-alpn", "http/1.1",
                             "-www", "-quiet"])
    h.check_ready(n3, [ports["noalpn"]])
    start_grpc(ports["grpc"])
    start_grpc(ports["grpcs"], backend)

    def h2c(port):
        return {"address": "127.0.0.1:%d" % port, "protocol": "h2c"}

    def h2tls(port):
        return {"address": "https://127.0.0.1:%d" % port, "protocol": "h2", "ca": [ca.cert],
                "server_name": "backend.test"}

    sites = [
        h.site(["h2c.test"], [h2c(ports["h2c"])]),
        h.site(["h2.test"], [h2tls(ports["h2"])]),
        h.site(["grpc.test"], [h2c(ports["grpc"])]),
        h.site(["grpcs.test"], [h2tls(ports["grpcs"])]),
        h.site(["dead.test"], [h2c(ports["dead"])]),
        h.site(["noalpn.test"], [h2tls(ports["noalpn"])]),
    ]
    g = h.start_gatehouse(sites, workers=1, timeouts={"upstream_read": "700ms"})
    _s.update(g=g, ports=ports, big=big, ca=ca)
    return _s


def test_h1_and_h2_clients_to_h2_upstreams():
    """HTTP/1.1 and HTTP/2 clients reach an h2c and an h2 (TLS, ALPN)
    backend; a request body goes up, a 3 MB body comes down whole to a
    client that reads slowly (flow control is the back-pressure)."""
    s = setup()
    g = s["g"]
    for host in ("h2c.test", "h2.test"):
        for proto in ("--http1.1", "--http2"):
            r = g.curl(host, "/index.html", proto)
            h.eq((r.status, r.body), (200, b"hello from nghttpd\n"), "%s %s" % (host, proto))
        r = g.curl(host, "/index.html", "--http2", "--data-binary", "x" * 100000)
        h.eq(r.status, 200, "%s: a POST with a 100 kB body" % host)
        r = g.curl(host, "/big.bin", "--http2", "--limit-rate", "6M")
        h.eq(r.status, 200, "%s big" % host)
        h.check(r.body == s["big"], "%s: the 3 MB body arrives whole (%d bytes)" % (host, len(r.body)))


def established(port):
    out = subprocess.run(["ss", "-Htn", "state", "established", "( dport = :%d )" % port],
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    return len([l for l in out.splitlines() if l.strip()])


def test_streams_share_a_connection():
    """400 requests from 8 concurrent HTTP/2 clients (20 streams each) to
    the h2c backend all succeed over few upstream connections (one worker:
    one, plus one more only when the upstream's stream limit is reached)."""
    s = setup()
    g = s["g"]
    r = subprocess.run([H2LOAD, "--connect-to=127.0.0.1:%d" % g.https_port, "-n", "400", "-c", "8",
                        "-m", "20", "https://h2c.test:%d/index.html" % g.https_port],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = r.stdout.decode()
    h.contains(out, "400 succeeded", "h2load: every request succeeded")
    conns = established(s["ports"]["h2c"])
    h.check(1 <= conns <= 2, "400 requests used %d upstream connection(s)" % conns)


def test_alpn_refused():
    """An "h2" upstream that does not choose h2 by ALPN (openssl s_server
    offering http/1.1 only) is a failed upstream with a log line saying
    so, and a 502; nothing is sent to it as HTTP/2."""
    s = setup()
    r = s["g"].curl("noalpn.test", "/index.html")
    h.eq(r.status, 502, "no h2 by ALPN")
    # OpenSSL refuses with the no_application_protocol alert; a server that
    # ignored ALPN instead would be refused by Gatehouse itself.
    s["g"].wait_log(r"upstream https://127\.0\.0\.1:%d .*(did not choose HTTP/2 by ALPN|"
                    r"NO_APPLICATION_PROTOCOL)" % s["ports"]["noalpn"])


def grpc_channel(g, host):
    import grpc
    with open(h.ca().cert, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    return grpc.secure_channel("127.0.0.1:%d" % g.https_port, creds,
                               options=[("grpc.ssl_target_name_override", host),
                                        ("grpc.default_authority", host)])


def test_grpc_unary_and_errors():
    """gRPC through Gatehouse (HTTP/2 client, h2c and h2 upstreams): a
    unary call with its trailing metadata, a NOT_FOUND status with its
    message, an unreachable upstream answered as UNAVAILABLE."""
    import grpc
    s = setup()
    for host in ("grpc.test", "grpcs.test"):
        with grpc_channel(s["g"], host) as ch:
            resp, call = ch.unary_unary("/test.Echo/Unary").with_call(b"hi", timeout=10)
            h.eq(resp, b"unary:hi", "%s: the unary answer" % host)
            h.eq(dict(call.trailing_metadata()).get("x-trailer"), "yes", "%s: trailers" % host)
            try:
                ch.unary_unary("/test.Echo/Fail")(b"x", timeout=10)
                raise h.Fail("Fail did not fail")
            except grpc.RpcError as e:
                h.eq(e.code(), grpc.StatusCode.NOT_FOUND, "%s: the status" % host)
                h.eq(e.details(), "no such thing", "%s: the message" % host)
    with grpc_channel(s["g"], "dead.test") as ch:
        try:
            ch.unary_unary("/test.Echo/Unary")(b"x", timeout=10)
            raise h.Fail("an unreachable upstream answered")
        except grpc.RpcError as e:
            h.eq(e.code(), grpc.StatusCode.UNAVAILABLE, "unreachable upstream")
            h.contains(e.details(), "502", "the message says what happened")


def fed_by(q):
    """A request stream that yields what the test puts in |q|, until None:
    the test decides when each message goes."""
    while True:
        m = q.get()
        if m is None:
            return
        yield m


def test_grpc_bidi_streaming():
    """A bidirectional stream: each message's answer arrives before the
    next message is sent, so both directions stream through."""
    import grpc
    s = setup()
    for host in ("grpc.test", "grpcs.test"):
        q = queue.Queue()
        with grpc_channel(s["g"], host) as ch:
            it = ch.stream_stream("/test.Echo/Bidi")(fed_by(q), timeout=20)
            for i in range(5):
                q.put(b"m%d" % i)
                h.eq(next(it), b"echo:m%d" % i, "%s: answer %d before the next message" % (host, i))
            q.put(None)
            h.eq(list(it), [], "%s: the stream ends with the client's" % host)
            h.eq(it.code(), grpc.StatusCode.OK, "%s: status OK" % host)


def test_grpc_stream_survives_reload():
    """A reload while a bidirectional call is open: the call goes on over
    its HTTP/2 upstream connection (the old generation's, which leaves the
    pool and closes after its last stream) and ends normally; a call after
    the reload works too."""
    import grpc
    s = setup()
    g = s["g"]
    q = queue.Queue()
    with grpc_channel(g, "grpc.test") as ch:
        it = ch.stream_stream("/test.Echo/Bidi")(fed_by(q), timeout=20)
        q.put(b"before")
        h.eq(next(it), b"echo:before", "before the reload")
        since = g.log_size()
        g.reload()
        g.wait_log(r"configuration reloaded from", since=since)
        r = ch.unary_unary("/test.Echo/Unary")(b"after", timeout=10)
        h.eq(r, b"unary:after", "a new call after the reload")
        q.put(b"during")
        h.eq(next(it), b"echo:during", "the open call after the reload")
        q.put(None)
        h.eq(list(it), [], "it ends with the client's end")
        h.eq(it.code(), grpc.StatusCode.OK, "status OK")
    # The old generation's connection closed after its last stream; the new
    # one stays pooled.
    h.wait_until(lambda: established(s["ports"]["grpc"]) == 1, 5,
                 "one upstream connection left after the call")


def test_grpc_deadline_outlives_proxy_timeout():
    """upstream_read is 700ms here; a call with a 10 s deadline to a method
    that takes 1.5 s succeeds (the deadline is the client's), and one
    without a deadline is cut by the proxy's timeout as UNAVAILABLE."""
    import grpc
    s = setup()
    with grpc_channel(s["g"], "grpc.test") as ch:
        h.eq(ch.unary_unary("/test.Echo/Slow")(b"", timeout=10), b"slow", "with grpc-timeout")
        try:
            ch.unary_unary("/test.Echo/Slow")(b"")
            raise h.Fail("the proxy timeout did not apply")
        except grpc.RpcError as e:
            h.eq(e.code(), grpc.StatusCode.UNAVAILABLE, "without a deadline: the proxy's 504")
            h.contains(e.details(), "504", "the message")


def grpc_frame(msg):
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def test_grpc_from_http1_client():
    """A gRPC call over HTTP/1.1 (a POST with a gRPC frame and TE:
    trailers) to the h2c gRPC server: the answer's frame in a chunked body,
    grpc-status and the custom trailer in the chunked trailers; a failing
    call's status likewise."""
    s = setup()
    hdrs = [("Content-Type", "application/grpc"), ("TE", "trailers")]
    c = h.Conn.tls(s["g"].https_port, "grpc.test")
    try:
        r = c.request("POST", "/test.Echo/Unary", "grpc.test", headers=hdrs,
                      body=grpc_frame(b"over h1"))
        h.eq(r.status, 200, "status")
        h.eq(r.body, grpc_frame(b"unary:over h1"), "the answer's frame")
        h.eq(r.trailer("grpc-status"), "0", "grpc-status trailer")
        h.eq(r.trailer("x-trailer"), "yes", "custom trailer")
        r = c.request("POST", "/test.Echo/Fail", "grpc.test", headers=hdrs, body=grpc_frame(b"x"))
        h.eq(r.status, 200, "a failed call is still HTTP 200")
        status = r.trailer("grpc-status") or r.header("grpc-status")
        h.eq(status, "5", "NOT_FOUND")
    finally:
        c.close()
    c = h.Conn.tls(s["g"].https_port, "dead.test")
    try:
        r = c.request("POST", "/test.Echo/Unary", "dead.test", headers=hdrs, body=grpc_frame(b"x"))
        h.eq((r.status, r.header("grpc-status")), (200, "14"), "UNAVAILABLE over HTTP/1.1")
    finally:
        c.close()


if __name__ == "__main__":
    h.main()
