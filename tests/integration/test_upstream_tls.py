#!/usr/bin/env python3
"""TLS to upstreams, and PROXY v2 sent to them (issue 14).

The backends are real nginx servers (Debian's nginx-light) started by the
test with certificates from a private CA made here: a good one (DNS name
backend.test and IP 127.0.0.1), an expired one, one from a CA Gatehouse
does not trust, one that asks for a client certificate (mTLS), one that
closes after every request (so each request needs a new TLS connection:
session resumption shows in nginx's $ssl_session_reused), and a plain one
that takes a PROXY header. What each nginx answers names what it saw
($ssl_client_s_dn, $connection, $proxy_protocol_addr), so the assertions
read the backend's own view."""
import json
import os
import shutil
import socket
import struct

import harness as h

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TOKEN = "upstream-tls-admin-token"

_s = {}


class Nginx(h.Proc):
    """One nginx (one worker, foreground) with the given server blocks."""

    def __init__(self, servers):
        name = h._next_name("nginx")
        cwd = h.subdir(name)
        self.access = os.path.join(cwd, "access.log")
        conf = os.path.join(cwd, "nginx.conf")
        temp = "".join("%s_temp_path %s;\n" % (k, cwd)
                       for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        with open(conf, "w") as f:
            f.write("daemon off;\nworker_processes 1;\npid %s/nginx.pid;\n"
                    "error_log stderr notice;\nevents {}\n"
                    "http {\n%s"
                    "log_format t '$server_port $request_uri $ssl_session_reused $connection';\n"
                    "access_log %s t;\n%s}\n" % (cwd, temp, self.access, "".join(servers)))
        super().__init__(name, [NGINX, "-c", conf, "-p", cwd], cwd=cwd)

    def lines(self):
        try:
            with open(self.access) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def wait_line(self, port, uri):
        """The access-log line nginx writes for |uri| on |port| (it writes
        it once the response is sent, so wait for it)."""
        def find():
            for line in self.lines():
                f = line.split()
                if f[0] == str(port) and f[1] == uri:
                    return f
            return None
        return h.wait_until(find, 5, "nginx logged %s on port %d" % (uri, port))


def tls_server(port, cert, extra=""):
    return ("server {\n listen 127.0.0.1:%d ssl;\n ssl_certificate %s;\n ssl_certificate_key %s;\n"
            " ssl_protocols TLSv1.2 TLSv1.3;\n%s"
            " location / { return 200 \"tls $ssl_protocol dn=[$ssl_client_s_dn] conn=$connection "
            "reused=$ssl_session_reused\\n\"; }\n}\n" % (port, cert[0], cert[1], extra))


def setup():
    if _s:
        return _s
    ca = h.ca()
    other = h.CA("Some Other CA")
    clients = h.CA("Backend Client CA")
    good = ca.leaf(["backend.test"], ips=["127.0.0.1"])
    expired = ca.leaf(["backend.test"], ips=["127.0.0.1"], days=-1)
    unknown = other.leaf(["backend.test"], ips=["127.0.0.1"])
    client = clients.leaf([], cn="gatehouse-client", client=True)
    ports = {k: h.free_port() for k in ("good", "expired", "unknown", "mtls", "once", "pp", "tls12")}
    n = Nginx([
        tls_server(ports["good"], good),
        tls_server(ports["expired"], expired),
        tls_server(ports["unknown"], unknown),
        tls_server(ports["mtls"], good, " ssl_verify_client on;\n ssl_client_certificate %s;\n"
                   % clients.cert),
        tls_server(ports["once"], good, " keepalive_requests 1;\n"),
        tls_server(ports["tls12"], good, " ssl_protocols TLSv1.2;\n keepalive_requests 1;\n"),
        "server {\n listen 127.0.0.1:%d proxy_protocol;\n location / { return 200 "
        "\"pp=$proxy_protocol_addr:$proxy_protocol_port conn=$connection\\n\"; }\n}\n" % ports["pp"],
    ])
    h.check_ready(n, list(ports.values()))

    def up(port, **kw):
        return dict({"address": "https://127.0.0.1:%d" % port, "ca": [ca.cert]}, **kw)

    sites = [
        h.site(["good.test"], [up(ports["good"], server_name="backend.test")]),
        h.site(["ip.test"], [up(ports["good"])]),  # verified against the IP SAN
        h.site(["system.test"], ["https://127.0.0.1:%d" % ports["good"]]),  # system roots
        h.site(["wrongname.test"], [up(ports["good"], server_name="other.test")]),
        h.site(["expired.test"], [up(ports["expired"], server_name="backend.test")]),
        h.site(["unknown.test"], [up(ports["unknown"], server_name="backend.test")]),
        h.site(["skip.test"], [{"address": "https://127.0.0.1:%d" % ports["unknown"],
                                "insecure_skip_verify": True}]),
        h.site(["mtls.test"], [up(ports["mtls"], server_name="backend.test",
                                  client_cert=client[0], client_key=client[1])]),
        h.site(["nocert.test"], [up(ports["mtls"], server_name="backend.test")]),
        h.site(["once.test"], [up(ports["once"], server_name="backend.test")]),
        h.site(["tls12.test"], [up(ports["tls12"], server_name="backend.test")]),
        h.site(["pp.test"], [{"address": "127.0.0.1:%d" % ports["pp"],
                              "send_proxy_protocol": True}]),
    ]
    admin_port = h.free_port()
    g = h.start_gatehouse(sites, workers=1,
                          admin={"listen": "127.0.0.1:%d" % admin_port, "token": TOKEN})
    _s.update(g=g, nginx=n, ports=ports, ca=ca, client=client)
    return _s


def body(r):
    return r.body.decode(errors="replace")


def test_verified():
    """A backend whose certificate chains to the configured CA and names
    server_name (or, without one, the address's IP) is reached over TLS;
    the same backend through an entry without "ca" (the system roots) is
    not."""
    s = setup()
    g = s["g"]
    r = g.get("good.test", "/good")
    h.eq(r.status, 200, "verified by name")
    h.check(body(r).startswith("tls TLSv1.3"), "spoke TLS 1.3: %r" % body(r))
    r = g.get("ip.test", "/ip")
    h.eq(r.status, 200, "verified by IP SAN")
    r = g.get("system.test", "/system")
    h.eq(r.status, 502, "a private CA is not among the system roots")
    g.wait_log(r"upstream https://127\.0\.0\.1:%d .*certificate verify failed: unable to get "
               r"local issuer certificate" % s["ports"]["good"])


def test_refused():
    """Wrong name, expired, unknown CA: each is a 502 with the reason in the
    log, and no request reaches the backend."""
    s = setup()
    g, n, ports = s["g"], s["nginx"], s["ports"]
    cases = [("wrongname.test", "Hostname mismatch"),
             ("expired.test", "certificate has expired"),
             ("unknown.test", "unable to get local issuer certificate")]
    for host, why in cases:
        r = g.get(host, "/refused-" + host)
        h.eq(r.status, 502, host)
        g.wait_log(r"certificate verify failed: %s" % why)
    uris = [l.split()[1] for l in n.lines()]
    h.check(not any(u.startswith("/refused-") for u in uris),
            "no refused request reached nginx: %r" % uris)


def test_insecure_skip_verify():
    """insecure_skip_verify reaches a backend of an unknown CA, and the log
    says loudly that nothing is checked."""
    s = setup()
    r = s["g"].get("skip.test", "/skip")
    h.eq(r.status, 200, "not verified")
    s["g"].wait_log(r"upstream https://127\.0\.0\.1:%d: insecure_skip_verify is on: its "
                    r"certificate is NOT checked" % s["ports"]["unknown"])


def test_mtls():
    """A backend that requires a client certificate gets Gatehouse's
    client_cert; without one configured it refuses (nginx answers 400)."""
    s = setup()
    r = s["g"].get("mtls.test", "/mtls")
    h.eq(r.status, 200, "with the client certificate")
    h.contains(body(r), "dn=[CN=gatehouse-client]", "the backend saw the client certificate")
    r = s["g"].get("nocert.test", "/nocert")
    h.eq(r.status, 400, "nginx refuses a client without a certificate")


def test_pooling_and_resumption():
    """Requests share a pooled TLS connection; when the backend closes
    after each request, the next connection resumes the session (TLS 1.3
    tickets and TLS 1.2 alike)."""
    s = setup()
    g, n, ports = s["g"], s["nginx"], s["ports"]
    conns = set()
    for i in range(5):
        r = g.get("good.test", "/pool%d" % i)
        h.eq(r.status, 200, "pooled request %d" % i)
        conns.add(n.wait_line(ports["good"], "/pool%d" % i)[3])
    h.eq(len(conns), 1, "five requests on one upstream connection")
    for host, port in (("once.test", ports["once"]), ("tls12.test", ports["tls12"])):
        reused = []
        for i in range(4):
            uri = "/once%d" % i
            h.eq(g.get(host, uri).status, 200, "%s request %d" % (host, i))
            reused.append(n.wait_line(port, uri)[2])
        h.eq(reused[0], ".", "%s: the first connection is a full handshake" % host)
        h.eq(reused[1:], ["r", "r", "r"], "%s: later connections resume" % host)


def sourced_get(g, host, path, source):
    """GET over a TLS connection from loopback address |source|."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.settimeout(h.IO_TIMEOUT)
    raw.bind((source, 0))
    raw.connect(("127.0.0.1", g.https_port))
    c = h.Conn(h.client_context().wrap_socket(raw, server_hostname=host))
    try:
        return c.request("GET", path, host)
    finally:
        c.close()


def test_send_proxy_protocol():
    """send_proxy_protocol opens each upstream connection with a PROXY v2
    header naming the client; a pooled connection is reused only by the
    same client, never carries another's address."""
    s = setup()
    g = s["g"]
    seen = {}
    for src in ("127.0.0.5", "127.0.0.6", "127.0.0.5", "127.0.0.6"):
        r = sourced_get(g, "pp.test", "/pp", src)
        h.eq(r.status, 200, "through a PROXY backend from %s" % src)
        text = body(r)
        h.contains(text, "pp=%s:" % src, "nginx saw the client's address")
        conn = text.split("conn=")[1].strip()
        seen.setdefault(src, set()).add(conn)
    h.check(not (seen["127.0.0.5"] & seen["127.0.0.6"]),
            "two clients never share an upstream connection: %r" % seen)


def test_bad_client_key_refused():
    """A reload whose client_key does not match client_cert is refused
    with a message naming both, and the running configuration keeps
    serving."""
    s = setup()
    g = s["g"]
    conf = json.loads(json.dumps(g.config))
    other_key = h.ca().leaf(["x.test"])[1]
    for site in conf["sites"]:
        if site["hosts"] == ["mtls.test"]:
            site["upstreams"][0]["client_key"] = other_key
    g.write_config(conf)
    g.reload()
    g.wait_log(r"reload refused.*upstream https://127\.0\.0\.1:%d: cannot use client_cert "
               % s["ports"]["mtls"])
    r = g.get("mtls.test", "/after-refused-reload")
    h.eq(r.status, 200, "still serving the old configuration")


class HostileTLS:
    """A TLS server of our own (Python's ssl, a thread per connection) that
    misbehaves as |mode| says, on a free loopback port."""

    def __init__(self, mode, cert):
        import ssl
        import threading
        self.mode = mode
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert[0], cert[1])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        import threading
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(c,), daemon=True).start()

    def handle(self, c):
        import time
        c.settimeout(10)
        try:
            if self.mode == "close_in_handshake":
                c.recv(100)  # the ClientHello, then nothing
                return
            if self.mode == "plaintext":
                c.recv(4096)
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                return
            if self.mode == "stall_handshake":
                c.recv(4096)
                time.sleep(3)
                return
            t = self.ctx.wrap_socket(c, server_side=True)
            t.recv(65536)
            if self.mode == "garbage":
                t.sendall(b"\x00\x01garbage that is not HTTP\r\n\r\n")
            elif self.mode == "truncated":
                t.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                t.unwrap()  # close_notify after 10 of 100 bytes
            elif self.mode == "reset_after_head":
                t.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stop = True
        self.sock.close()


def test_hostile_tls_upstreams():
    """TLS upstreams that misbehave: close during the handshake, answer in
    plaintext, stall the handshake past upstream_connect, send garbage
    after it, end a body early with close_notify, or reset after the head.
    Each gives the client a 502 (or a cut response once the head went
    out), logs why, and the next good request still works."""
    s = setup()
    good = s["ca"].leaf(["backend.test"], ips=["127.0.0.1"])
    servers = {m: HostileTLS(m, good) for m in ("close_in_handshake", "plaintext",
                                                 "stall_handshake", "garbage", "truncated",
                                                 "reset_after_head")}
    sites = [h.site(["%s.test" % m.replace("_", "-")],
                    [{"address": "https://127.0.0.1:%d" % srv.port, "ca": [s["ca"].cert],
                      "server_name": "backend.test"}]) for m, srv in servers.items()]
    sites.append(h.site(["good.test"], [{"address": "https://127.0.0.1:%d" % s["ports"]["good"],
                                         "ca": [s["ca"].cert], "server_name": "backend.test"}]))
    g = h.start_gatehouse(sites, workers=1, timeouts={"upstream_connect": "1s"})
    try:
        for mode, why in (("close_in_handshake", r"TLS handshake"),
                          ("plaintext", r"TLS handshake: .*WRONG_VERSION_NUMBER"),
                          ("stall_handshake", r"connect timeout"),
                          ("garbage", r"invalid response from upstream")):
            host = "%s.test" % mode.replace("_", "-")
            r = g.get(host, "/h")
            h.eq(r.status, 502, mode)
            g.wait_log(why)
            h.eq(g.get("good.test", "/after-%s" % mode).status, 200, "still serving after " + mode)
        for mode in ("truncated", "reset_after_head"):
            host = "%s.test" % mode.replace("_", "-")
            c = h.Conn.tls(g.https_port, host)
            try:
                c.send(h.build_request("GET", "/t", host, (), None))
                head = c.read_head()
                h.eq(head.status, 200, mode + ": the head went out")
                h.eq(head.header("content-length"), "100", mode)
                got = c.read_until_close()  # fails if the connection stays open
                h.check(len(got) < 100, "%s: the client sees the body cut short (%r)" % (mode, got))
            finally:
                c.close()
            h.eq(g.get("good.test", "/after-%s" % mode).status, 200, "still serving after " + mode)
        g.wait_log(r"upstream https://127\.0\.0\.1:%d failed mid-response"
                   % servers["truncated"].port)
    finally:
        for srv in servers.values():
            srv.close()


if __name__ == "__main__":
    h.main()
