#!/usr/bin/env python3
"""test_proxy_protocol: PROXY protocol v1 and v2 on listeners, and
trusted_proxies (issue 14). HAProxy (mode tcp, send-proxy and
send-proxy-v2, its outgoing source 127.0.0.2) stands in front of a
listener that trusts only 127.0.0.2: the backend and the access log see the
client HAProxy reported; a direct connection from 127.0.0.1 is refused at
once; headers sent by hand are honoured from a trusted source; garbage,
oversize, unterminated and slow headers close the connection. Clients pick
their own loopback source address (127.0.0.5 and so on) so that each
address in the results says which path it came by."""

import http.client
import os
import re
import shutil
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HOST = "pp.test"
TOKEN = "pp-admin-token"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
SIG = b"\r\n\r\n\x00\r\nQUIT\n"

_s = {}


def setup():
    """One Gatehouse (1 worker, handshake timeout 1s) with a TLS and a plain
    listener that take PROXY headers from 127.0.0.2 only, a TLS listener
    without, trusted_proxies 127.0.0.4 and 203.0.113.0/24; one HAProxy in
    front of the PROXY listeners."""
    if _s:
        return _s
    e = h.start_echo()
    name = h._next_name("gatehouse")
    cwd = h.subdir(name)
    pp_port, plain_pp_port, direct_port, admin_port = (h.free_port() for _ in range(4))
    trusted = ["127.0.0.2/32", "::1/128"]
    conf = h.make_config([h.site([HOST], [e])], pp_port, plain_pp_port, workers=1,
                         storage=os.path.join(cwd, "storage"),
                         timeouts={"handshake": "1s"},
                         trusted_proxies=["127.0.0.4", "203.0.113.0/24"],
                         admin={"listen": "127.0.0.1:%d" % admin_port, "token": TOKEN})
    conf["listen"] = {
        "https": [{"address": "127.0.0.1:%d" % pp_port, "proxy_protocol": True,
                   "proxy_trusted": trusted},
                  "127.0.0.1:%d" % direct_port],
        "http": [{"address": "127.0.0.1:%d" % plain_pp_port, "proxy_protocol": True,
                  "proxy_trusted": trusted}],
    }
    path = os.path.join(cwd, "gatehouse.json")
    with open(path, "w") as f:
        import json
        json.dump(conf, f, indent=2)
    g = h.Gatehouse([h.GATEHOUSE_BIN, "run", "-c", path], name, cwd, pp_port, plain_pp_port,
                    config_path=path, config=conf)
    h.check_ready(g, [direct_port, admin_port])
    ports = {k: h.free_port() for k in ("v2", "v1", "v2http")}
    cfg = """
global
  maxconn 200
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend v2
  bind 127.0.0.1:%(v2)d
  default_backend b_v2
backend b_v2
  server s1 127.0.0.1:%(pp)d send-proxy-v2 source 127.0.0.2
frontend v1
  bind 127.0.0.1:%(v1)d
  default_backend b_v1
backend b_v1
  server s2 127.0.0.1:%(pp)d send-proxy source 127.0.0.2
frontend v2http
  bind 127.0.0.1:%(v2http)d
  default_backend b_v2http
backend b_v2http
  server s3 127.0.0.1:%(plain)d send-proxy-v2 source 127.0.0.2
""" % dict(ports, pp=pp_port, plain=plain_pp_port)
    hcwd = h.subdir("haproxy")
    with open(os.path.join(hcwd, "haproxy.cfg"), "w") as f:
        f.write(cfg)
    ha = h.Proc("haproxy", [HAPROXY, "-db", "-f", os.path.join(hcwd, "haproxy.cfg")], cwd=hcwd)
    h.check_ready(ha, list(ports.values()))
    _s.update(g=g, e=e, ha=ha, hp=ports, pp=pp_port, plain=plain_pp_port, direct=direct_port,
              admin=admin_port)
    return _s


def raw(port, source, timeout=h.IO_TIMEOUT):
    """A TCP socket to 127.0.0.1:|port| from |source| (a loopback address)."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0))


def tls_over(sock):
    """TLS for pp.test on an already connected socket (after a header)."""
    return h.Conn(h.client_context().wrap_socket(sock, server_hostname=HOST))


def get(conn, path, headers=()):
    try:
        r = conn.request("GET", path, HOST, headers=headers)
    finally:
        conn.close()
    h.eq(r.status, 200, "status of %s" % path)
    return r.json()


def v1(src, dst=None, sport=40000, dport=443):
    fam = "TCP6" if ":" in src else "TCP4"
    dst = dst or ("::1" if ":" in src else "127.0.0.1")
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(src, dst=None, sport=40000, dport=443, tlvs=b""):
    dst = dst or ("::1" if ":" in src else "127.0.0.1")
    if ":" in src:
        body = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) +
                struct.pack("!HH", sport, dport))
        fam = 0x21
    else:
        body = (socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport))
        fam = 0x11
    body += tlvs
    return SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def metrics():
    s = setup()
    c = http.client.HTTPConnection("127.0.0.1", s["admin"], timeout=h.IO_TIMEOUT)
    try:
        c.request("GET", "/metrics", headers={"Authorization": "Bearer " + TOKEN})
        r = c.getresponse()
        text = r.read().decode()
    finally:
        c.close()
    out = {}
    for m in re.finditer(r'^gatehouse_proxy_protocol_refused_total\{reason="(\w+)"\} (\d+)$',
                         text, re.M):
        out[m.group(1)] = int(m.group(2))
    h.check(len(out) == 4, "the four refusal reasons in /metrics: %r" % out)
    return out


def access_client(path):
    """The client of the access line for |path| (polls the log)."""
    g = setup()["g"]
    found = []

    def f():
        m = re.search(r'"client":"([^"]*)","host":"[^"]*","method":"GET","path":"%s"' %
                      re.escape(path), g.log())
        if m:
            found.append(m.group(1))
        return bool(m)
    h.wait_until(f, 10, "the access line for %s" % path)
    return found[0]


def redirected_client(sock, path, header=b""):
    """Sends |header| and a GET for |path| in one write to the plain
    listener; returns the client its access line names."""
    c = h.Conn(sock)
    c.send(header + b"GET " + path.encode() + b" HTTP/1.1\r\nHost: pp.test\r\n\r\n")
    r = c.read_response()
    c.close()
    h.eq(r.status, 308, "the plain listener's redirect for %s" % path)
    return access_client(path)


def expect_closed(sock, what, within=3.0):
    c = h.Conn(sock)
    took = c.wait_closed(within)
    h.check(took is not None, "%s: still open after %.0fs" % (what, within))
    h.eq(bytes(c.buf), b"", "%s: bytes sent back" % what)
    c.close()


# --- through HAProxy -------------------------------------------------------------------

def test_haproxy_v2_and_v1():
    s = setup()
    for kind in ("v2", "v1"):
        sock = raw(s["hp"][kind], "127.0.0.5")
        d = get(tls_over(sock), "/via-haproxy-" + kind)
        h.eq(h.echo_headers(d, "X-Forwarded-For"), ["127.0.0.5"],
             "X-Forwarded-For through HAProxy send-proxy%s" % ("-v2" if kind == "v2" else ""))
        h.eq(access_client("/via-haproxy-" + kind), "127.0.0.5", "access log client (%s)" % kind)


def test_haproxy_v2_plain_listener():
    s = setup()
    h.eq(redirected_client(raw(s["hp"]["v2http"], "127.0.0.6"), "/plain-via-haproxy"),
         "127.0.0.6", "access log client (plain listener through HAProxy)")


# --- refusals --------------------------------------------------------------------------

def test_direct_untrusted_refused():
    s = setup()
    before = metrics()
    for port in (s["pp"], s["plain"]):
        sock = raw(port, "127.0.0.1")
        # Even a well-formed header is not taken from an untrusted peer.
        try:
            sock.sendall(v1("198.51.100.1"))
        except OSError:
            pass
        expect_closed(sock, "a direct connection from 127.0.0.1 to port %d" % port, within=1.0)
    h.wait_until(lambda: metrics()["untrusted"] >= before["untrusted"] + 2, 5,
                 "untrusted refusals counted")


def test_hand_sent_header_trusted_source():
    s = setup()
    for make, src in ((v1, "198.51.100.7"), (v2, "198.51.100.8"), (v2, "2001:db8::9"),
                      (v1, "2001:db8::a")):
        sock = raw(s["pp"], "127.0.0.2")
        sock.sendall(make(src))
        d = get(tls_over(sock), "/spoof")
        h.eq(h.echo_headers(d, "X-Forwarded-For"), [src], "the header's address, by hand")
    # With TLVs, and the ClientHello in the same segment as the header.
    sock = raw(s["pp"], "127.0.0.2")
    tlv = b"\x02\x00\x07" + HOST.encode() + b"\x04\x00\x02ab"
    sock.sendall(v2("198.51.100.11", tlvs=tlv))
    d = get(tls_over(sock), "/tlv")
    h.eq(h.echo_headers(d, "X-Forwarded-For"), ["198.51.100.11"], "v2 with TLVs")
    # LOCAL and UNKNOWN keep the socket's peer.
    for hdr in (SIG + b"\x20\x00\x00\x00", b"PROXY UNKNOWN\r\n"):
        sock = raw(s["pp"], "127.0.0.2")
        sock.sendall(hdr)
        d = get(tls_over(sock), "/local")
        h.eq(h.echo_headers(d, "X-Forwarded-For"), ["127.0.0.2"], "LOCAL/UNKNOWN: the peer")
    # Header and request in one write on the plain listener: nothing lost.
    h.eq(redirected_client(raw(s["plain"], "127.0.0.2"), "/one-write", v1("198.51.100.12")),
         "198.51.100.12", "access log client of a header sent with its request")


def test_garbage_and_hostile_headers():
    s = setup()
    before = metrics()
    cases = [
        ("garbage instead of a header", b"GET / HTTP/1.1\r\nHost: pp.test\r\n\r\n"),
        ("a TLS ClientHello instead of a header", b"\x16\x03\x01\x00\xa0\x01\x00\x00\x9c"),
        ("a v2 header announcing 64 KiB", SIG + b"\x21\x11\xff\xff" + b"\0" * 100),
        ("a v1 line without CRLF past 107 bytes", b"PROXY UNKNOWN " + b"a" * 120),
        ("a v1 line with a bad address", b"PROXY TCP4 1.2.3 4.5.6.7 1 2\r\n"),
        ("a v2 PROXY header too short for IPv4", SIG + b"\x21\x11\x00\x04abcd"),
    ]
    for what, data in cases:
        sock = raw(s["pp"], "127.0.0.2")
        sock.sendall(data)
        expect_closed(sock, what, within=0.8)  # at once, not at the 1s timeout
    h.wait_until(lambda: metrics()["invalid"] >= before["invalid"] + len(cases), 5,
                 "invalid headers counted")
    # Silence, then a half header: both cut by timeouts.handshake (1s).
    for what, data in (("no header", b""), ("half a v2 header", v2("198.51.100.1")[:20])):
        sock = raw(s["pp"], "127.0.0.2")
        if data:
            sock.sendall(data)
        c = h.Conn(sock)
        took = c.wait_closed(5)
        c.close()
        h.check(took is not None and 0.7 <= took <= 3.0,
                "%s: closed after %r s, expected about 1s" % (what, took))
    h.wait_until(lambda: metrics()["timeout"] >= before["timeout"] + 2, 5, "timeouts counted")


def test_slow_loris_header():
    s = setup()
    hdr = v1("198.51.100.1")  # 45 bytes: 4.5s at 1 byte per 100ms
    sock = raw(s["pp"], "127.0.0.2")
    t0 = time.monotonic()
    closed = None
    for b in hdr:
        try:
            sock.sendall(bytes([b]))
        except OSError:
            closed = time.monotonic() - t0
            break
        c = h.Conn(sock)
        if c.wait_closed(0.1) is not None:
            closed = time.monotonic() - t0
            break
    sock.close()
    h.check(closed is not None and closed <= 3.0,
            "a header dribbled 1 byte per 100ms: closed after %r s, expected by the 1s "
            "handshake timeout" % closed)


# --- trusted_proxies -------------------------------------------------------------------

FORGED = [("X-Forwarded-For", "192.0.2.66"), ("X-Forwarded-Proto", "http"),
          ("X-Forwarded-Host", "evil.test"), ("Forwarded", "for=192.0.2.66;proto=http")]


def test_trusted_proxies():
    s = setup()
    # Untrusted (127.0.0.1 on the listener without PROXY): all replaced.
    d = get(h.Conn.tls(s["direct"], HOST), "/untrusted", headers=FORGED)
    h.eq([h.echo_headers(d, n) for n in ("X-Forwarded-For", "X-Forwarded-Proto",
                                         "X-Forwarded-Host", "Forwarded")],
         [["127.0.0.1"], ["https"], [HOST], []], "forged X-Forwarded-* from an untrusted client")
    # Trusted by its socket address (127.0.0.4): extended and kept.
    sock = raw(s["direct"], "127.0.0.4")
    d = get(tls_over(sock), "/trusted", headers=FORGED)
    h.eq([h.echo_headers(d, n) for n in ("X-Forwarded-For", "X-Forwarded-Proto",
                                         "X-Forwarded-Host", "Forwarded")],
         [["192.0.2.66, 127.0.0.4"], ["http"], ["evil.test"], ["for=192.0.2.66;proto=http"]],
         "X-Forwarded-* from a trusted proxy")
    # Trusted by the address a PROXY header names (203.0.113.0/24), and
    # untrusted when it names another, whatever the balancer's own address.
    for src, want in (("203.0.113.9", "192.0.2.66, 203.0.113.9"), ("198.51.100.3", "198.51.100.3")):
        sock = raw(s["pp"], "127.0.0.2")
        sock.sendall(v2(src))
        d = get(tls_over(sock), "/trusted-pp", headers=FORGED[:1])
        h.eq(h.echo_headers(d, "X-Forwarded-For"), [want], "X-Forwarded-For from %s" % src)


if __name__ == "__main__":
    h.main()
