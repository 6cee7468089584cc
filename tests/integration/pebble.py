"""pebble.py: Pebble, the ACME test CA, as an integration-test fixture.

    import harness, pebble
    p = pebble.start(http_port=gatehouse_http, tls_port=gatehouse_https)
    p.directory_url      # https://localhost:P/dir
    p.ca_file            # the CA to trust for that URL (Pebble's HTTPS cert)
    p.write_roots()      # Pebble's issuing root(s), to verify issued certs

What start() does (Pebble 2.4 as packaged in Debian 12):

  * Makes Pebble's HTTPS certificate with harness.CA: a private CA and a
    leaf for "localhost". Every URL Pebble hands out names the host the
    client used, so clients use https://localhost:P/... and trust ca_file.
  * Starts pebble-challtestsrv as Pebble's DNS server only (its HTTP-01,
    HTTPS and TLS-ALPN-01 responders off): every A query is answered with
    127.0.0.1 (AAAA with nothing) unless a test adds records; TXT records
    for DNS-01 are set through its management API. With dns_server="IP:port"
    (a real authoritative server, such as knot.py's), Pebble asks that
    server instead; challtestsrv still runs, but Pebble does not ask it.
  * Writes a Pebble config on free loopback ports and starts
    `pebble -config FILE -dnsserver 127.0.0.1:D` with PEBBLE_VA_NOSLEEP=1
    and PEBBLE_WFE_NONCEREJECT=0 (tests that exercise badNonce ask for a
    rate). Pebble validates HTTP-01 on |http_port| and TLS-ALPN-01 on
    |tls_port| of the address the name resolves to: pass Gatehouse's
    listener ports there.
  * Ready when the directory answers over HTTPS with the generated CA
    (polled with a deadline, no fixed sleep). Both processes are
    harness.Proc objects: stopped with TERM then KILL by stop() or by
    harness.main()'s teardown.

Pebble's own knobs (environment): PEBBLE_VA_NOSLEEP, PEBBLE_VA_ALWAYS_VALID,
PEBBLE_WFE_NONCEREJECT (percent), PEBBLE_AUTHZREUSE (percent, default 50),
PEBBLE_CHAIN_LENGTH, PEBBLE_ALTERNATE_ROOTS, PEBBLE_WFE_ORDERS_PER_PAGE.
Pebble 2.4 reads "certificateValidityPeriod" (seconds) and
"domainBlocklist" from the config but not "retryAfter"; unknown keys are
ignored.
"""

import json
import os
import re
import socket
import ssl
import struct
import threading
import urllib.error
import urllib.request

import harness

PEBBLE_BIN = os.environ.get("PEBBLE_BIN", "pebble")
CHALLTESTSRV_BIN = os.environ.get("PEBBLE_CHALLTESTSRV_BIN", "pebble-challtestsrv")


def _fqdn(name):
    return name if name.endswith(".") else name + "."


class Pebble:
    """A running Pebble and its pebble-challtestsrv (see the module doc)."""

    def __init__(self, http_port=None, tls_port=None, nonce_reject=0, always_valid=False,
                 eab_keys=None, validity_seconds=None, domain_blocklist=(), authz_reuse=None,
                 chain_length=None, env=None, dns_server=None):
        self.name = harness._next_name("pebble")
        self.dir = harness.subdir(self.name)
        self.port = harness.free_port()
        self.mgmt_port = harness.free_port()
        self.dns_port = harness.free_port()
        self.challtestsrv_port = harness.free_port()
        self.http_port = http_port or harness.free_port()
        self.tls_port = tls_port or harness.free_port()

        self.https_ca = harness.CA("Pebble HTTPS Test CA")
        cert, key = self.https_ca.leaf(["localhost"])
        self.ca_file = self.https_ca.cert
        # Loopback only: never through a proxy from the environment.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=self.ca_file)))

        cfg = {
            "listenAddress": "127.0.0.1:%d" % self.port,
            "managementListenAddress": "127.0.0.1:%d" % self.mgmt_port,
            "certificate": cert,
            "privateKey": key,
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": bool(eab_keys),
            "domainBlocklist": list(domain_blocklist),
        }
        if eab_keys:
            cfg["externalAccountMACKeys"] = dict(eab_keys)
        if validity_seconds is not None:
            cfg["certificateValidityPeriod"] = int(validity_seconds)
        self.config = {"pebble": cfg}
        self.config_path = os.path.join(self.dir, "pebble-config.json")
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)

        self.challtestsrv = harness.Proc(self.name + "-challtestsrv", [
            CHALLTESTSRV_BIN,
            "-dns01", "127.0.0.1:%d" % self.dns_port,
            "-http01", "", "-https01", "", "-tlsalpn01", "",
            "-management", "127.0.0.1:%d" % self.challtestsrv_port,
            "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
        ], cwd=self.dir)
        harness.check_ready(self.challtestsrv, [self.challtestsrv_port, self.dns_port])

        pebble_env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": str(int(nonce_reject))}
        if always_valid:
            pebble_env["PEBBLE_VA_ALWAYS_VALID"] = "1"
        if authz_reuse is not None:
            pebble_env["PEBBLE_AUTHZREUSE"] = str(int(authz_reuse))
        if chain_length is not None:
            pebble_env["PEBBLE_CHAIN_LENGTH"] = str(int(chain_length))
        pebble_env.update(env or {})
        self.proc = harness.Proc(self.name, [
            PEBBLE_BIN, "-config", self.config_path,
            "-dnsserver", dns_server or "127.0.0.1:%d" % self.dns_port,
        ], cwd=self.dir, env=pebble_env)
        self._ctx_lock = threading.Lock()
        self._wait_ready()

    # --- lifecycle ---

    def _wait_ready(self):
        self._ctx = None  # a Pebble started again has new roots
        def ready():
            if not self.proc.alive():
                raise harness.Fail("pebble exited with status %s before it was ready; stderr:\n%s"
                                   % (self.proc.p.returncode, self.proc.tail()))
            return self.directory()
        harness.wait_until(ready, harness.READY_TIMEOUT, "the Pebble directory at %s"
                           % self.directory_url, interval=0.05)

    def wait_log(self, pattern, timeout=5.0):
        """Waits until Pebble's log (it writes to stdout) matches the regular
        expression |pattern|; returns the match."""
        rx = re.compile(pattern)
        return harness.wait_until(lambda: rx.search(self.proc.stdout()), timeout,
                                  "%s log to match %r" % (self.name, pattern))

    def stop(self):
        """TERM then KILL, Pebble first."""
        self.proc.stop()
        self.challtestsrv.stop()

    # --- the ACME side ---

    @property
    def base_url(self):
        return "https://localhost:%d" % self.port

    @property
    def directory_url(self):
        return self.base_url + "/dir"

    @property
    def mgmt_url(self):
        return "https://localhost:%d" % self.mgmt_port

    def https(self, method, url, body=None, headers=None, timeout=harness.IO_TIMEOUT):
        """One HTTPS request trusting ca_file; returns (status, headers as a
        list of (name, value), body bytes). HTTP errors are returned, not
        raised."""
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with self._opener.open(req, timeout=timeout) as r:
                return r.status, list(r.headers.items()), r.read()
        except urllib.error.HTTPError as e:
            return e.code, list(e.headers.items()), e.read()

    def directory(self):
        status, _, body = self.https("GET", self.directory_url)
        harness.eq(status, 200, "GET %s status" % self.directory_url)
        return json.loads(body)

    # --- the management interface (Pebble's, over HTTPS) ---

    def _mgmt_get(self, path):
        status, _, body = self.https("GET", self.mgmt_url + path)
        harness.eq(status, 200, "GET %s%s status" % (self.mgmt_url, path))
        return body.decode()

    def root_pem(self, i=0):
        """The PEM of issuing root |i| (regenerated at every Pebble start)."""
        return self._mgmt_get("/roots/%d" % i)

    def intermediate_pem(self, i=0):
        return self._mgmt_get("/intermediates/%d" % i)

    def write_roots(self, name="pebble-roots.pem"):
        """Writes root 0 to a file in the fixture's directory; returns its
        path (to verify certificates Pebble issued)."""
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(self.root_pem(0))
        return path

    def client_context(self):
        """A verifying client context trusting this Pebble's root, made once
        per start and shared (client threads may ask at the same time)."""
        with self._ctx_lock:
            if self._ctx is None:
                self._ctx = harness.client_context(cafile=self.write_roots())
            return self._ctx

    def cert_status(self, serial):
        """{"Certificate", "Status", "Serial", ...} for a hex serial (as
        `openssl x509 -serial` prints it), or None if Pebble has no such
        certificate."""
        serial = serial.lower().replace(":", "")
        if serial.startswith("serial="):
            serial = serial[len("serial="):]
        status, _, body = self.https("GET", "%s/cert-status-by-serial/%s" % (self.mgmt_url, serial))
        if status == 404:
            return None
        harness.eq(status, 200, "cert-status-by-serial/%s status" % serial)
        return json.loads(body)

    # --- pebble-challtestsrv (plain HTTP management, DNS answers) ---

    def _cts(self, path, obj):
        url = "http://127.0.0.1:%d%s" % (self.challtestsrv_port, path)
        req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST")
        with self._opener.open(req, timeout=harness.IO_TIMEOUT) as r:
            harness.eq(r.status, 200, "challtestsrv %s status" % path)
            return r.read()

    def add_a(self, host, addresses):
        """Answers A queries for |host| with |addresses| instead of the
        default 127.0.0.1."""
        self._cts("/add-a", {"host": _fqdn(host), "addresses": list(addresses)})

    def clear_a(self, host):
        self._cts("/clear-a", {"host": _fqdn(host)})

    def set_default_ipv4(self, ip):
        self._cts("/set-default-ipv4", {"ip": ip})

    def set_txt(self, host, value):
        """DNS-01: host is "_acme-challenge.<name>", value the digest."""
        self._cts("/set-txt", {"host": _fqdn(host), "value": value})

    def clear_txt(self, host):
        self._cts("/clear-txt", {"host": _fqdn(host)})

    def dns_history(self, host):
        """The DNS questions challtestsrv received for |host|."""
        # Unlike the record calls, the history is keyed without the root dot.
        body = self._cts("/dns-request-history", {"host": host.rstrip(".")})
        return json.loads(body or b"[]")

    def dns_query(self, name, qtype="A", timeout=2.0):
        """Asks challtestsrv's DNS server as Pebble would; returns the
        answers as strings (A: dotted quads, TXT: the text)."""
        codes = {"A": 1, "TXT": 16, "AAAA": 28}
        qid = int.from_bytes(os.urandom(2), "big")
        q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
        for label in _fqdn(name).split(".")[:-1]:
            q += bytes([len(label)]) + label.encode()
        q += b"\x00" + struct.pack(">HH", codes[qtype], 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(timeout)
        try:
            s.sendto(q, ("127.0.0.1", self.dns_port))
            resp = s.recv(4096)
        finally:
            s.close()
        (rid, _, _, ancount, _, _) = struct.unpack(">HHHHHH", resp[:12])
        harness.eq(rid, qid, "DNS response id")
        off = len(q)  # the question is echoed back
        out = []
        for _ in range(ancount):
            off = _skip_name(resp, off)
            rtype, _, _, rdlen = struct.unpack(">HHIH", resp[off:off + 10])
            rdata = resp[off + 10:off + 10 + rdlen]
            off += 10 + rdlen
            if rtype == 1:
                out.append(socket.inet_ntop(socket.AF_INET, rdata))
            elif rtype == 28:
                out.append(socket.inet_ntop(socket.AF_INET6, rdata))
            elif rtype == 16:
                txt, i = b"", 0
                while i < len(rdata):
                    txt += rdata[i + 1:i + 1 + rdata[i]]
                    i += 1 + rdata[i]
                out.append(txt.decode())
        return out


def _skip_name(msg, off):
    while True:
        n = msg[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:  # compression pointer
            return off + 2
        off += 1 + n


def start(**kw):
    """A ready Pebble (see Pebble.__init__ for the options)."""
    return Pebble(**kw)
