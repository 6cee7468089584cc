"""harness.py: the integration-test harness (python3 standard library only).

Each tests/integration/test_*.py is one ctest test. It imports this module,
defines test_* functions (run in the order they are defined) and ends with
`harness.main()`, which prints "ok NAME" or "FAIL NAME" for each, prints the
captured logs of every process on a failure, stops everything it started
(TERM, then KILL after a deadline) and exits non-zero if anything failed.

What it provides (after h2o t/Util.pm spawn_server and Redis start_server):

  * free_port(): bind 127.0.0.1:0, close, hand the port out (never twice).
  * tmpdir(): one temporary directory per test file, removed at the end
    (kept when GH_KEEP_TMP=1).
  * CA: a private CA made with the `openssl` CLI at run time; CA.leaf(sans)
    issues ECDSA P-256 leaf certificates for a SAN list (wildcards too).
  * start_echo(), start_gatehouse(), start_quick(): spawn the echo backend
    and gatehouse (`run -c FILE` with a generated JSON config, or quick
    mode `proxy ...`) with stderr captured to a file; ready when the ports
    accept connections (polled with a deadline, never a fixed sleep).
  * Clients: Conn (a TLS or plain socket sending exact bytes and parsing
    HTTP/1.1 responses: Content-Length, chunked with trailers, HEAD,
    1xx/204/304, read-until-close), tls_connect() (ssl.SSLContext trusting
    the CA, server_hostname = SNI), curl() (--resolve NAME:PORT:127.0.0.1
    --cacert ca.pem) and s_client_cert() (`openssl s_client -servername`,
    returning the served certificate's subject and SANs).
  * each(cases, fn): fn(case) for every case, their failures in one.
  * Sanitizer builds: a process whose stderr contains "AddressSanitizer",
    "LeakSanitizer" or "runtime error:", or that died of a signal we did not
    send, fails the test that was running (or the teardown).

Only loopback addresses are used, and every wait has a deadline.
"""

import atexit
import ctypes
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

# --- locations ------------------------------------------------------------

SOURCE_DIR = os.environ.get("GH_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def _find_bin(env_name, name):
    """The binary named by |env_name|, else the newest build/*/|name|."""
    path = os.environ.get(env_name)
    if path:
        return path
    cands = []
    build = os.path.join(SOURCE_DIR, "build")
    if os.path.isdir(build):
        for d in os.listdir(build):
            p = os.path.join(build, d, name)
            if os.access(p, os.X_OK):
                cands.append(p)
    if not cands:
        return name  # let the spawn fail with a clear error
    return max(cands, key=os.path.getmtime)


GATEHOUSE_BIN = _find_bin("GATEHOUSE_BIN", "gatehouse")
ECHO_BIN = _find_bin("GH_ECHO_BIN", "gh_echo")

# Deadlines (seconds).
READY_TIMEOUT = 15.0      # a spawned process must accept connections by then
STOP_TIMEOUT = 10.0       # TERM, then KILL after this long
TEST_TIMEOUT = 90.0       # one test function, hard cap
IO_TIMEOUT = 10.0         # default socket timeout for clients

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                     "ThreadSanitizer", "MemorySanitizer")


class Fail(AssertionError):
    pass


# --- assertions -------------------------------------------------------------

def check(cond, msg):
    if not cond:
        raise Fail(msg)


def eq(actual, expected, what):
    if actual != expected:
        raise Fail("%s: expected %r, got %r" % (what, expected, _short(actual)))


def contains(haystack, needle, what):
    if needle not in haystack:
        raise Fail("%s: %r not found in %r" % (what, needle, _short(haystack)))


def not_contains(haystack, needle, what):
    if needle in haystack:
        raise Fail("%s: %r unexpectedly found in %r" % (what, needle, _short(haystack)))


def _short(v, n=600):
    """|v| cut to about |n| characters for a message."""
    if isinstance(v, bytes):
        return v if len(v) <= n else v[:n] + b"..."
    if isinstance(v, str):
        return v if len(v) <= n else v[:n] + "..."
    r = repr(v)
    return v if len(r) <= n else r[:n] + "..."


def wait_until(fn, timeout, what, interval=0.02):
    """Polls fn() until it returns a true value (returned) or fails after
    |timeout| seconds."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Fail:
            raise
        except Exception as e:  # keep polling through transient errors
            last_exc = e
        if time.monotonic() >= deadline:
            raise Fail("timed out after %.1fs waiting for %s%s" % (
                timeout, what, " (last error: %r)" % last_exc if last_exc else ""))
        time.sleep(interval)


def each(cases, fn):
    """fn(case) for every case; the failures of all of them in one."""
    errs = []
    for case in cases:
        try:
            fn(case)
        except Fail as e:
            errs.append(str(e).strip())
    if errs:
        raise Fail("\n".join(errs))


# --- temporary directory and ports -------------------------------------------

_tmp = None


def tmpdir():
    global _tmp
    if _tmp is None:
        base = os.path.splitext(os.path.basename(sys.argv[0] or "gh"))[0]
        _tmp = tempfile.mkdtemp(prefix="gh-%s-" % base)
    return _tmp


def subdir(name):
    p = os.path.join(tmpdir(), name)
    os.makedirs(p, exist_ok=True)
    return p


_ports_given = set()


def free_port():
    """A loopback TCP port that was free a moment ago (bind 0, close)."""
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise Fail("no free port")


def port_accepts(port, host="127.0.0.1"):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


# --- certificates -------------------------------------------------------------

def _run(argv, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, **kw)
    if r.returncode != 0:
        raise Fail("%s failed (%d): %s" % (" ".join(argv), r.returncode,
                                          r.stderr.decode(errors="replace")))
    return r


class CA:
    """A private CA (ECDSA P-256) made with the openssl CLI."""

    def __init__(self, name="Gatehouse Test CA"):
        self.dir = subdir("ca-%d" % free_port())
        self.key = os.path.join(self.dir, "ca.key")
        self.cert = os.path.join(self.dir, "ca.pem")
        _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-out", self.key])
        _run(["openssl", "req", "-x509", "-new", "-key", self.key, "-sha256", "-days", "3",
              "-subj", "/CN=%s" % name,
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign",
              "-addext", "subjectKeyIdentifier=hash",
              "-out", self.cert])
        self._leaves = {}

    def leaf(self, sans, cn=None, ips=(), days=3, client=False):
        """Returns (cert_path, key_path) of an ECDSA P-256 leaf for the DNS
        names |sans| (e.g. ["a.test", "*.example.test"]) and IP addresses
        |ips|, valid for |days| from now (a negative number: expired that
        long ago), for a server or, with |client|, a TLS client."""
        sans = list(sans)
        key = (tuple(sans), cn, tuple(ips), days, client)
        if key in self._leaves:
            return self._leaves[key]
        n = len(self._leaves)
        first = sans[0] if sans else (cn or ips[0])
        stem = os.path.join(self.dir, "leaf%d-%s" % (n, re.sub(r"[^a-z0-9.-]", "_", first)))
        keyf, csr, crt, ext = stem + ".key", stem + ".csr", stem + ".pem", stem + ".ext"
        _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-out", keyf])
        _run(["openssl", "req", "-new", "-key", keyf, "-subj", "/CN=%s" % (cn or first),
              "-out", csr])
        alt = ["DNS:" + s for s in sans] + ["IP:" + ip for ip in ips]
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=%s\n"
                    "subjectKeyIdentifier=hash\n"
                    "authorityKeyIdentifier=keyid,issuer\n" % ("clientAuth" if client else "serverAuth"))
            if alt:
                f.write("subjectAltName=%s\n" % ",".join(alt))
        serial = "0x" + os.urandom(12).hex()
        # A negative -days puts notAfter that far before notBefore (now):
        # an expired certificate.
        _run(["openssl", "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
              "-set_serial", serial, "-days", str(days), "-sha256", "-extfile", ext, "-out", crt])
        self._leaves[key] = (crt, keyf)
        return crt, keyf


_ca = None


def ca():
    """The test file's CA (made on first use)."""
    global _ca
    if _ca is None:
        _ca = CA()
    return _ca


def cert_info_pem(pem):
    """{"subject": str, "sans": [names]} of a PEM certificate."""
    r = subprocess.run(["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253",
                        "-ext", "subjectAltName"], input=pem.encode() if isinstance(pem, str) else pem,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if r.returncode != 0:
        raise Fail("openssl x509 failed: %s" % r.stderr.decode(errors="replace"))
    out = r.stdout.decode()
    subject = ""
    sans = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("subject="):
            subject = line[len("subject="):].strip()
        elif "DNS:" in line:
            sans += [p.strip()[4:] for p in line.split(",") if p.strip().startswith("DNS:")]
    return {"subject": subject, "sans": sans}


def cert_info_der(der):
    return cert_info_pem(ssl.DER_cert_to_PEM_cert(der))


# --- processes -------------------------------------------------------------------

_procs = []
_libc = None


def _pdeathsig():
    # Runs in the child before exec: die with the test runner, so a killed
    # ctest never leaves servers behind. (Spawn only from the main thread:
    # the signal follows the death of the spawning thread.)
    try:
        global _libc
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Proc:
    """A spawned process with stdout/stderr captured to files."""

    def __init__(self, name, argv, cwd=None, env=None):
        self.name = name
        self.argv = argv
        self.cwd = cwd or subdir(name)
        self.log_path = os.path.join(self.cwd, "%s.stderr" % name)
        self.out_path = os.path.join(self.cwd, "%s.stdout" % name)
        self.signalled = False     # we sent TERM/KILL (an exit is expected)
        self.needed_kill = False
        self.reported = False      # sanitizer/crash problems already reported
        self.returncode = None
        self.env = dict(os.environ)
        if env:
            self.env.update(env)
        self._spawn("wb")
        _procs.append(self)

    def _spawn(self, mode):
        with open(self.log_path, mode) as err, open(self.out_path, mode) as out:
            self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                      cwd=self.cwd, env=self.env, preexec_fn=_pdeathsig)
        self.pid = self.p.pid

    def restart(self):
        """Starts the same command again (same directory and environment)
        after it exited; its output is appended to the same files, so log
        offsets taken earlier stay valid."""
        check(not self.alive(), "%s: restart while still running" % self.name)
        self.signalled = self.needed_kill = self.reported = False
        self.returncode = None
        self._spawn("ab")

    def alive(self):
        return self.p.poll() is None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def stdout(self):
        try:
            with open(self.out_path, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_since(self, offset):
        return self.log()[offset:] if offset else self.log()

    def wait_log(self, pattern, timeout=5.0, since=0):
        """Waits until the captured stderr (from byte |since|) matches the
        regular expression |pattern|; returns the match."""
        rx = re.compile(pattern)

        def f():
            with open(self.log_path, "rb") as fh:
                fh.seek(since)
                return rx.search(fh.read().decode("utf-8", errors="replace"))
        return wait_until(f, timeout, "%s log to match %r" % (self.name, pattern))

    def signal(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def wait_exit(self, timeout):
        """Waits for the process to exit; returns its exit code or None."""
        try:
            self.returncode = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, timeout=STOP_TIMEOUT):
        """TERM, then KILL after |timeout| seconds. Returns the exit code."""
        if self.p.poll() is None:
            self.signalled = True
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.needed_kill = True
                self.p.kill()
                self.p.wait(timeout=10)
        self.returncode = self.p.returncode
        return self.returncode

    def problems(self):
        """Sanitizer reports and unexpected deaths, as a list of strings."""
        out = []
        text = self.log()
        for m in SANITIZER_MARKERS:
            if m in text:
                out.append("%s: stderr contains %r" % (self.name, m))
        rc = self.p.poll()
        if rc is not None and rc < 0 and -rc not in (signal.SIGTERM, signal.SIGKILL):
            out.append("%s: died of signal %d" % (self.name, -rc))
        elif rc is not None and not self.signalled and rc != 0:
            out.append("%s: exited unexpectedly with status %d" % (self.name, rc))
        return out

    def tail(self, lines=80):
        text = self.log().splitlines()
        return "\n".join(text[-lines:])


def check_ready(proc, ports, timeout=READY_TIMEOUT, host="127.0.0.1"):
    """Waits until every port in |ports| accepts connections, failing early
    (with the log) if |proc| exits."""
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        if not proc.alive():
            raise Fail("%s exited with status %s before it was ready; stderr:\n%s" % (
                proc.name, proc.p.returncode, proc.tail()))
        if port_accepts(pending[0], host):
            pending.pop(0)
            continue
        if time.monotonic() >= deadline:
            raise Fail("%s did not accept on port %d within %.0fs; stderr:\n%s" % (
                proc.name, pending[0], timeout, proc.tail()))
        time.sleep(0.02)


_counter = [0]


def _next_name(prefix):
    _counter[0] += 1
    return "%s-%d" % (prefix, _counter[0])


# --- the echo backend ------------------------------------------------------------

class Echo(Proc):
    """gh_echo on 127.0.0.1:port."""

    def __init__(self, extra=(), port=None):
        self.port = port or free_port()
        name = _next_name("echo")
        cwd = subdir(name)
        self.ready_file = os.path.join(cwd, "ready")
        argv = [ECHO_BIN, "--listen", "127.0.0.1:%d" % self.port,
                "--ready-file", self.ready_file] + list(extra)
        super().__init__(name, argv, cwd=cwd)
        check_ready(self, [self.port])

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def request(self, method, path, headers=(), body=None):
        """A plain-HTTP request straight to the backend (not via the proxy)."""
        c = Conn.plain(self.port)
        try:
            return c.request(method, path, "127.0.0.1:%d" % self.port, headers=headers, body=body)
        finally:
            c.close()

    def stats(self):
        """{"connections_accepted": N, "requests": N}; this request counts
        itself in "requests" and in "connections_accepted"."""
        r = self.request("GET", "/stats")
        eq(r.status, 200, "%s /stats status" % self.name)
        return r.json()


def start_echo(extra=(), port=None):
    """gh_echo on a fresh port (or on |port|, e.g. to restart a backend)."""
    return Echo(extra, port=port)


class Counter:
    """Counts the requests (and connections) a backend received from others
    since reset(), excluding our own /stats requests (each of which counts
    itself and its own connection)."""

    def __init__(self, echo):
        self.echo = echo
        self.reset()

    def reset(self):
        s = self.echo.stats()
        self.base_req = s["requests"]
        self.base_conn = s["connections_accepted"]
        self.calls = 0

    def both(self):
        s = self.echo.stats()
        self.calls += 1
        return (s["requests"] - self.base_req - self.calls,
                s["connections_accepted"] - self.base_conn - self.calls)

    def requests(self):
        return self.both()[0]

    def connections(self):
        return self.both()[1]


# --- gatehouse ----------------------------------------------------------------------

def site(hosts, upstreams, cert=True, **kw):
    """A site object. cert=True issues a leaf for |hosts| from the test CA;
    cert=(crt, key) uses those files; cert=None leaves TLS out."""
    s = {"hosts": list(hosts)}
    if upstreams is not None:
        s["upstreams"] = [u.addr if isinstance(u, Echo) else u for u in upstreams]
    if cert is True:
        crt, key = ca().leaf(hosts)
        s["tls"] = {"cert": crt, "key": key}
    elif cert:
        s["tls"] = {"cert": cert[0], "key": cert[1]}
    for k, v in kw.items():
        if k == "routes":
            v = [dict(r, upstreams=[u.addr if isinstance(u, Echo) else u for u in r["upstreams"]])
                 for r in v]
        s[k] = v
    return s



class LineDriver:
    """A test driver program that takes one JSON command a line on stdin and
    answers each with one JSON line (tests/acme/*_driver.c): do(op, **args)
    sends a command and returns the answer, ok() also requires "ok"; its
    stderr goes to a file, checked for sanitizer reports by close()."""

    def __init__(self, name, argv):
        self.name = name
        self.err_path = os.path.join(subdir(_next_name(name)), "stderr")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=open(self.err_path, "w"), text=True)

    def stderr(self):
        with open(self.err_path) as f:
            return f.read()

    def do(self, op, **kw):
        kw["op"] = op
        self.p.stdin.write(json.dumps(kw) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise Fail("%s exited (%s): %s" % (self.name, self.p.wait(), self.stderr()))
        return json.loads(line)

    def ok(self, op, **kw):
        r = self.do(op, **kw)
        check(r["ok"], "%s: %s %r failed: %s" % (self.name, op, kw, r.get("err")))
        return r

    def close(self):
        self.p.stdin.close()
        rc = self.p.wait(timeout=30)
        err = self.stderr()
        for m in SANITIZER_MARKERS:
            check(m not in err, "%s stderr: %s" % (self.name, err))
        eq(rc, 0, "%s exit status" % self.name)

    def kill(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(timeout=10)


# --- etcd (issue 15) -------------------------------------------------------------

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


class Etcd(Proc):
    """One etcd member (Debian's etcd-server) on free loopback ports; |tls| = (cert, key, ca) for
    an https client URL with client certificates required."""

    def __init__(self, tls=None):
        self.port, peer = free_port(), free_port()
        name = _next_name("etcd")
        d = subdir(name)
        scheme = "https" if tls else "http"
        self.url = "%s://127.0.0.1:%d" % (scheme, self.port)
        argv = [ETCD, "--name", "n1", "--data-dir", os.path.join(d, "data"),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", "http://127.0.0.1:%d" % peer,
                "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer,
                "--initial-cluster", "n1=http://127.0.0.1:%d" % peer]
        self.ctl_tls = []
        if tls:
            cert, key, ca, ccert, ckey = tls
            argv += ["--cert-file", cert, "--key-file", key, "--client-cert-auth",
                     "--trusted-ca-file", ca]
            self.ctl_tls = ["--cacert", ca, "--cert", ccert, "--key", ckey]
        super().__init__(name, argv, cwd=d)
        self._wait_healthy()

    def _wait_healthy(self):
        check_ready(self, [self.port])
        wait_until(lambda: self.ctl("endpoint", "health").returncode == 0, 15,
                   "etcd %s healthy" % self.url, interval=0.1)

    def start_again(self):
        """After stop(): the same member on the same ports and data
        directory (its keys and revisions kept), ready when healthy."""
        self.restart()
        self._wait_healthy()

    def ctl(self, *args, user=None):
        argv = [ETCDCTL, "--endpoints", self.url] + self.ctl_tls
        if user:
            argv += ["--user", user]
        return subprocess.run(argv + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=30,
                              env=dict(os.environ, ETCDCTL_API="3"))


class EtcdCluster:
    """|n| etcd members (n1, n2, ...) forming one cluster on free loopback
    ports (plain http): urls lists their client URLs; stop(i) stops member i
    (TERM) and start(i) brings it back on the same ports and data
    directory. Ready when `etcdctl endpoint health` passes on every member
    (polled); ctl() asks all members."""

    def __init__(self, n=3):
        self.name = _next_name("etcd-cluster")
        d = subdir(self.name)
        ports = [(free_port(), free_port()) for _ in range(n)]
        self.urls = ["http://127.0.0.1:%d" % c for c, _ in ports]
        initial = ",".join("n%d=http://127.0.0.1:%d" % (i + 1, p) for i, (_, p) in enumerate(ports))
        token = "%s-%d" % (self.name, os.getpid())
        self.members = []
        for i, (client, peer) in enumerate(ports):
            mname = "n%d" % (i + 1)
            argv = [ETCD, "--name", mname, "--data-dir", os.path.join(d, mname),
                    "--listen-client-urls", self.urls[i], "--advertise-client-urls", self.urls[i],
                    "--listen-peer-urls", "http://127.0.0.1:%d" % peer,
                    "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer,
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", token]
            m = Proc("%s-%s" % (self.name, mname), argv, cwd=d)
            m.port = client
            self.members.append(m)
        for m in self.members:
            check_ready(m, [m.port])
        self.wait_healthy(range(n))

    def wait_healthy(self, which, timeout=30):
        for i in which:
            wait_until(lambda: self.ctl("endpoint", "health", endpoints=[self.urls[i]])
                       .returncode == 0, timeout, "etcd member %s healthy" % self.urls[i],
                       interval=0.1)

    def stop(self, i):
        return self.members[i].stop()

    def start(self, i):
        self.members[i].restart()
        check_ready(self.members[i], [self.members[i].port])
        self.wait_healthy([i])

    def ctl(self, *args, endpoints=None):
        argv = [ETCDCTL, "--endpoints", ",".join(endpoints or self.urls)]
        return subprocess.run(argv + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=30,
                              env=dict(os.environ, ETCDCTL_API="3"))


HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


class HAProxy(Proc):
    """HAProxy in TCP mode: |frontends| maps a bind address ("127.0.0.1:P")
    to a list of server addresses, balanced round robin (no health checks:
    a dead server's connections fail over with `option redispatch`). An
    admin socket lets a test put a server in maintenance: set_state(bind,
    i, "maint" | "ready"); sessions(bind) returns each server's total
    sessions. Ready when every bind address accepts."""

    def __init__(self, frontends):
        name = _next_name("haproxy")
        d = subdir(name)
        self.sock_path = os.path.join(d, "admin.sock")
        self.backends = {}
        lines = ["global", "  maxconn 4000", "  stats socket %s level admin" % self.sock_path,
                 "defaults", "  mode tcp", "  timeout connect 2s", "  timeout client 60s",
                 "  timeout server 60s", "  retries 3", "  option redispatch"]
        for k, (bind, servers) in enumerate(sorted(frontends.items())):
            be = "be%d" % k
            self.backends[bind] = be
            lines += ["frontend fe%d" % k, "  bind %s" % bind, "  default_backend %s" % be,
                      "backend %s" % be, "  balance roundrobin"]
            lines += ["  server s%d %s" % (i, addr) for i, addr in enumerate(servers)]
        self.config_path = os.path.join(d, "haproxy.cfg")
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        super().__init__(name, [HAPROXY, "-db", "-f", self.config_path], cwd=d)
        for bind in frontends:
            host, port = bind.rsplit(":", 1)
            check_ready(self, [int(port)], host=host)
        wait_until(lambda: os.path.exists(self.sock_path), READY_TIMEOUT, "haproxy admin socket")

    def command(self, line):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(IO_TIMEOUT)
        try:
            s.connect(self.sock_path)
            s.sendall(line.encode() + b"\n")
            out = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
        finally:
            s.close()
        return out.decode(errors="replace")

    def set_state(self, bind, i, state):
        out = self.command("set server %s/s%d state %s" % (self.backends[bind], i, state))
        check(out.strip() == "", "haproxy set server: %r" % out)

    def sessions(self, bind):
        """[total sessions of server 0, of server 1, ...] behind |bind|."""
        out = self.command("show stat")
        hdr = out.splitlines()[0].lstrip("# ").split(",")
        px, sv, stot = hdr.index("pxname"), hdr.index("svname"), hdr.index("stot")
        got = {}
        for line in out.splitlines()[1:]:
            f = line.split(",")
            if len(f) > stot and f[px] == self.backends[bind] and f[sv].startswith("s") \
                    and f[sv][1:].isdigit():
                got[int(f[sv][1:])] = int(f[stot] or 0)
        return [got[i] for i in sorted(got)]


class Gatehouse(Proc):
    """gatehouse run -c FILE (or quick mode) on loopback ports."""

    def __init__(self, argv, name, cwd, https_port, http_port, config_path=None, config=None,
                 wait=True, host="127.0.0.1", env=None):
        self.https_port = https_port
        self.http_port = http_port
        self.host = host
        self.config_path = config_path
        self.config = config
        super().__init__(name, argv, cwd=cwd, env=env)
        if wait:
            check_ready(self, [p for p in (https_port, http_port) if p], host=host)

    def write_config(self, config):
        """Replaces the config file atomically (rename)."""
        self.config = config
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            json.dump(config, f, indent=2)
        os.replace(tmp, self.config_path)

    def write_config_text(self, text):
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)

    def reload(self):
        self.signal(signal.SIGHUP)

    # Clients bound to this instance.
    def connect(self, sni, **kw):
        kw.setdefault("host", self.host)
        return Conn.tls(self.https_port, sni, **kw)

    def request(self, host, method, path, headers=(), body=None, sni=None, **kw):
        """One request on a new TLS connection (SNI = |sni| or |host|)."""
        c = self.connect(sni or host, **kw)
        try:
            return c.request(method, path, host, headers=headers, body=body)
        finally:
            c.close()

    def get(self, host, path, **kw):
        return self.request(host, "GET", path, **kw)

    def curl(self, host, path, *args, **kw):
        return curl(self.https_port, host, path, *args, **kw)


def make_config(sites, https_port, http_port, workers=2, **extra):
    conf = {
        "listen": {"https": ["127.0.0.1:%d" % https_port], "http": ["127.0.0.1:%d" % http_port]},
        "workers": workers,
        "sites": sites,
        "log": {"level": "debug", "access": "json"},
    }
    conf.update(extra)
    return conf


def gatehouse_dir():
    """A fresh directory for one gatehouse instance: (name, path)."""
    name = _next_name("gatehouse")
    return name, subdir(name)


def run_config(conf, https_port, http_port, where=None, wait=True, host="127.0.0.1", env=None):
    """Writes |conf| as gatehouse.json in |where| ((name, dir) from
    gatehouse_dir(); a fresh one if None) and runs `gatehouse run -c` on it
    (with |env| added to its environment), ready when |host| accepts on
    the ports."""
    name, cwd = where or gatehouse_dir()
    path = os.path.join(cwd, "gatehouse.json")
    with open(path, "w") as f:
        json.dump(conf, f, indent=2)
    return Gatehouse([GATEHOUSE_BIN, "run", "-c", path], name, cwd, https_port, http_port,
                     config_path=path, config=conf, wait=wait, host=host, env=env)


def start_gatehouse(sites, workers=2, wait=True, **extra):
    """Writes a config for |sites| (plus top-level keys in |extra|, e.g.
    timeouts={...}) on fresh loopback ports and runs `gatehouse run -c`."""
    where = gatehouse_dir()
    https_port, http_port = free_port(), free_port()
    extra.setdefault("storage", os.path.join(where[1], "storage"))
    conf = make_config(sites, https_port, http_port, workers=workers, **extra)
    return run_config(conf, https_port, http_port, where, wait=wait)


class PipedGatehouse:
    """gatehouse run -c FILE with its stderr on a pipe that nobody reads (a
    log collector that stopped): one loopback site |host| forwarding to
    |upstream|, one worker, json access log, the admin API on
    |admin_port| with bearer |token|. The read end stays open until stop();
    |pipe_size| sets the pipe's buffer (F_SETPIPE_SZ) when given."""

    def __init__(self, name, host, upstream, pipe_size=None, token="piped-admin-token"):
        self.admin_port, self.https_port = free_port(), free_port()
        self.token = token
        cwd = subdir(name)
        crt, key = ca().leaf([host])
        conf = make_config([{"hosts": [host], "upstreams": [upstream.addr],
                             "tls": {"cert": crt, "key": key}}], self.https_port, free_port(),
                           workers=1,
                           admin={"listen": "127.0.0.1:%d" % self.admin_port, "token": token},
                           storage=os.path.join(cwd, "storage"))
        conf["log"] = {"level": "info", "access": "json"}
        path = os.path.join(cwd, "gatehouse.json")
        with open(path, "w") as f:
            json.dump(conf, f)
        self.rfd, wfd = os.pipe()
        if pipe_size:
            fcntl.fcntl(wfd, 1031, pipe_size)  # F_SETPIPE_SZ
        self.p = subprocess.Popen([GATEHOUSE_BIN, "run", "-c", path], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=wfd, cwd=cwd,
                                  preexec_fn=_pdeathsig)
        os.close(wfd)
        wait_until(lambda: port_accepts(self.admin_port) and port_accepts(self.https_port), 15,
                   "gatehouse with a log pipe nobody reads")

    def stop(self, timeout=STOP_TIMEOUT):
        """TERM (KILL after |timeout|), then closes the pipe; returns the
        exit status, or None if it had to be killed."""
        self.p.terminate()
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            rc = None
        os.close(self.rfd)
        return rc


def start_quick(to, names, args=(), wait=True):
    """Quick mode: gatehouse proxy --to ... --from ... with a CA leaf for
    |names| on fresh loopback ports."""
    name = _next_name("gatehouse-quick")
    cwd = subdir(name)
    https_port, http_port = free_port(), free_port()
    crt, key = ca().leaf(names)
    argv = [GATEHOUSE_BIN, "proxy"]
    for t in to:
        argv += ["--to", t.addr if isinstance(t, Echo) else t]
    for n in names:
        argv += ["--from", n]
    argv += ["--https", "127.0.0.1:%d" % https_port, "--http", "127.0.0.1:%d" % http_port,
             "--cert", crt, "--key", key, "--log-level", "debug"] + list(args)
    return Gatehouse(argv, name, cwd, https_port, http_port, wait=wait)


def gatehouse_cmd(*args, timeout=30, cwd=None, env=None):
    """Runs `gatehouse ARGS...` to completion (with the environment |env|
    instead of ours when given); returns CompletedProcess with text
    stdout/stderr."""
    r = subprocess.run([GATEHOUSE_BIN] + list(args), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       cwd=cwd or tmpdir(), env=env)
    r.stdout = r.stdout.decode("utf-8", errors="replace")
    r.stderr = r.stderr.decode("utf-8", errors="replace")
    for m in SANITIZER_MARKERS:
        if m in r.stderr:
            raise Fail("gatehouse %s: sanitizer report: %s" % (" ".join(args), r.stderr))
    if r.returncode < 0:
        raise Fail("gatehouse %s died of signal %d: %s" % (" ".join(args), -r.returncode, r.stderr))
    return r


# --- clients --------------------------------------------------------------------------

def client_context(verify=True, alpn=None, min_version=None, max_version=None, cafile=None,
                   ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(cafile or ca().cert)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if ciphers:
        ctx.set_ciphers(ciphers)
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def tls_connect(port, sni, ctx=None, session=None, timeout=IO_TIMEOUT, host="127.0.0.1"):
    """A TLS socket to host:port with SNI |sni| (None: no SNI), verified
    against the test CA unless |ctx| says otherwise."""
    if ctx is None:
        ctx = client_context(verify=sni is not None)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    raw = socket.socket(fam, socket.SOCK_STREAM)
    raw.settimeout(timeout)
    try:
        raw.connect((host, port))
        s = ctx.wrap_socket(raw, server_hostname=sni, session=session)
    except BaseException:
        raw.close()
        raise
    return s


class Response:
    def __init__(self):
        self.version = ""
        self.status = 0
        self.reason = ""
        self.headers = []     # [(name, value)] in order
        self.trailers = []
        self.body = b""
        self.interim = []     # 1xx responses before this one
        self.chunked = False
        self.head_bytes = b""

    def header(self, name):
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return None

    def header_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def trailer(self, name):
        n = name.lower()
        for k, v in self.trailers:
            if k.lower() == n:
                return v
        return None

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError:
            raise Fail("response body is not JSON (status %d): %r" % (self.status,
                                                                      self.body[:300]))

    def __repr__(self):
        return "<Response %d %s headers=%r body=%r>" % (self.status, self.reason, self.headers,
                                                        self.body[:200])


def echo_headers(doc, name):
    """Values of request header |name| (any case) in the echo's JSON."""
    n = name.lower()
    return [v for k, v in doc["headers"] if k.lower() == n]


class Closed(Exception):
    pass


class Conn:
    """A client connection (TLS or plain) that sends exact bytes and reads
    HTTP/1.1 responses."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()  # received, not yet consumed
        self.eof = False

    @classmethod
    def tls(cls, port, sni, timeout=IO_TIMEOUT, **kw):
        return cls(tls_connect(port, sni, timeout=timeout, **kw))

    @classmethod
    def plain(cls, port, host="127.0.0.1", timeout=IO_TIMEOUT):
        s = socket.create_connection((host, port), timeout=timeout)
        return cls(s)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def _fill(self, deadline):
        """Reads more bytes into self.buf; raises Closed at EOF and
        socket.timeout at the deadline."""
        if self.eof:
            raise Closed()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(256 * 1024)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
            data = b""
        except ssl.SSLError as e:
            if "alert" in str(e).lower() or "eof" in str(e).lower():
                data = b""
            else:
                raise
        if not data:
            self.eof = True
            raise Closed()
        self.buf += data

    def _read_line(self, deadline, limit=1 << 20):
        while b"\r\n" not in self.buf:
            if len(self.buf) > limit:
                raise Fail("line longer than %d bytes" % limit)
            self._fill(deadline)
        i = self.buf.index(b"\r\n")
        line = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return line

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_head(self, timeout=IO_TIMEOUT):
        """Reads one response head; returns a Response without a body."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > (1 << 20):
                raise Fail("response head too large: %r" % self.buf[:200])
            try:
                self._fill(deadline)
            except Closed:
                raise Fail("connection closed before a complete response head (got %r)"
                           % self.buf[:300])
        i = self.buf.index(b"\r\n\r\n")
        head = bytes(self.buf[:i])
        del self.buf[:i + 4]
        r = Response()
        r.head_bytes = head
        lines = head.split(b"\r\n")
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise Fail("bad status line %r" % lines[0])
        r.version = m.group(1).decode()
        r.status = int(m.group(2))
        r.reason = (m.group(3) or b"").decode("latin-1")
        for line in lines[1:]:
            if b":" not in line or line[:1] in (b" ", b"\t"):
                raise Fail("bad response header line %r" % line)
            k, v = line.split(b":", 1)
            r.headers.append((k.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
        return r

    def read_response(self, method="GET", timeout=IO_TIMEOUT, interim=False):
        """Reads one response (skipping 1xx ones into .interim unless
        |interim| asks for the first 1xx itself). A 101 is returned as is."""
        deadline = time.monotonic() + timeout
        interims = []
        while True:
            r = self.read_head(max(0.0, deadline - time.monotonic()))
            if 100 <= r.status < 200 and r.status != 101:
                if interim:
                    return r
                interims.append(r)
                continue
            break
        r.interim = interims
        if method == "HEAD" or r.status in (101, 204, 304) or 100 <= r.status < 200:
            return r
        te = (r.header("Transfer-Encoding") or "").lower()
        cl = r.header("Content-Length")
        if te:
            check(te.replace(" ", "").split(",")[-1] == "chunked",
                  "response Transfer-Encoding %r does not end in chunked" % te)
            r.chunked = True
            body = []
            while True:
                line = self._read_line(deadline)
                size_s = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError:
                    raise Fail("bad chunk size line %r" % line)
                if size == 0:
                    break
                body.append(self._read_exact(size, deadline))
                crlf = self._read_exact(2, deadline)
                check(crlf == b"\r\n", "chunk not followed by CRLF: %r" % crlf)
            while True:
                line = self._read_line(deadline)
                if line == b"":
                    break
                k, v = line.split(b":", 1)
                r.trailers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
            r.body = b"".join(body)
        elif cl is not None:
            check(len(set(r.header_all("Content-Length"))) == 1, "several Content-Length values")
            r.body = self._read_exact(int(cl), deadline)
        else:
            # Delimited by close.
            try:
                while True:
                    self._fill(deadline)
            except Closed:
                pass
            r.body = bytes(self.buf)
            self.buf = bytearray()
        return r

    def request(self, method, path, host, headers=(), body=None, timeout=IO_TIMEOUT):
        self.send(build_request(method, path, host, headers, body))
        return self.read_response(method, timeout=timeout)

    def read_until_close(self, timeout=IO_TIMEOUT):
        """Everything until the peer closes; fails if it stays open."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
        except Closed:
            out = bytes(self.buf)
            self.buf = bytearray()
            return out
        except socket.timeout:
            raise Fail("connection still open after %.1fs (got %r)" % (timeout, self.buf[:200]))

    def wait_closed(self, timeout):
        """Polls until the peer closes the connection; returns the seconds
        it took, or None if it was still open after |timeout|. Bytes that
        arrive meanwhile are kept in self.buf."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        try:
            while True:
                self._fill(deadline)
        except Closed:
            return time.monotonic() - t0
        except socket.timeout:
            return None
        except OSError:
            return time.monotonic() - t0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def build_request(method, path, host, headers=(), body=None):
    lines = ["%s %s HTTP/1.1" % (method, path)]
    if host is not None:
        lines.append("Host: %s" % host)
    names = set()
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
        names.add(k.lower())
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body is not None:
        data += body if isinstance(body, bytes) else body.encode()
    return data


def pattern_bytes(n):
    """The echo backend's body pattern (byte i = ALPHABET[i % 64])."""
    alpha = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    return (alpha * (n // 64 + 1))[:n]


class CurlResult:
    def __init__(self, rc, status, headers_text, body, stderr, elapsed):
        self.rc = rc
        self.status = status
        self.headers_text = headers_text
        self.body = body
        self.stderr = stderr
        self.elapsed = elapsed

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError:
            raise Fail("curl body is not JSON (status %d): %r" % (self.status, self.body[:300]))

    def __repr__(self):
        return "<curl rc=%d status=%d stderr=%r>" % (self.rc, self.status, self.stderr[-300:])


def curl(port, host, path, *args, timeout=60, output=None, scheme="https", cafile=None):
    """curl https://host:port/path with --resolve to 127.0.0.1 and the test
    CA. Extra curl arguments go in |args|. The body goes to |output| (a
    file path, body then b"") or is returned."""
    d = subdir("curl")
    n = _next_name("c")
    hdr = os.path.join(d, n + ".headers")
    out = output or os.path.join(d, n + ".body")
    argv = ["curl", "-q", "-sS", "--http1.1", "--noproxy", "*", "--max-time", str(timeout),
            "--resolve", "%s:%d:127.0.0.1" % (host, port), "-D", hdr, "-o", out,
            "-w", "%{http_code}"]
    if scheme == "https":
        argv += ["--cacert", cafile or ca().cert]
    argv += list(args) + ["%s://%s:%d%s" % (scheme, host, port, path)]
    t0 = time.monotonic()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout + 15)
    elapsed = time.monotonic() - t0
    try:
        status = int(r.stdout.decode().strip()[-3:])
    except ValueError:
        status = 0
    try:
        with open(hdr, "rb") as f:
            headers_text = f.read().decode("latin-1")
    except OSError:
        headers_text = ""
    body = b""
    if output is None:
        try:
            with open(out, "rb") as f:
                body = f.read()
        except OSError:
            pass
    return CurlResult(r.returncode, status, headers_text, body,
                      r.stderr.decode("utf-8", errors="replace"), elapsed)


def s_client(port, servername, extra=(), timeout=15):
    """Runs `openssl s_client` against 127.0.0.1:port (servername None: no
    SNI) with no input; returns (exit code, stdout + stderr)."""
    argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-showcerts"]
    if servername is None:
        argv.append("-noservername")
    else:
        argv += ["-servername", servername]
    argv += list(extra)
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    return r.returncode, r.stdout.decode("utf-8", errors="replace")


def s_client_cert(port, servername, extra=()):
    """The certificate served for |servername| as {"subject", "sans"}, or
    None if no certificate was received (with the s_client output as
    second element)."""
    rc, out = s_client(port, servername, extra)
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    if not m:
        return None, out
    return cert_info_pem(m.group(0)), out


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# --- the runner --------------------------------------------------------------------------

class _TestTimeout(BaseException):
    pass


def _on_alarm(signum, frame):
    raise _TestTimeout()


def _problems():
    out = []
    for p in _procs:
        if p.reported:
            continue
        pr = p.problems()
        if pr:
            p.reported = True
            out += pr
    return out


def _print_logs(since):
    for p in _procs:
        off = since.get(p, 0)
        text = p.log()[off:]
        lines = text.splitlines()
        if len(lines) > 120:
            lines = ["... (%d earlier lines in %s)" % (len(lines) - 120, p.log_path)] + lines[-120:]
        sys.stdout.write("---- stderr of %s (pid %d, %s) ----\n" % (
            p.name, p.pid, "running" if p.alive() else "exit %s" % p.p.returncode))
        sys.stdout.write("\n".join(lines) + "\n")
        out = p.stdout()
        if out.strip():
            sys.stdout.write("---- stdout of %s ----\n%s\n" % (p.name, out[-4000:]))
    sys.stdout.flush()


def stop_all():
    for p in reversed(_procs):
        try:
            p.stop()
        except Exception:
            pass


def _cleanup():
    stop_all()
    if _tmp and os.environ.get("GH_KEEP_TMP") != "1":
        shutil.rmtree(_tmp, ignore_errors=True)


atexit.register(_cleanup)


def main():
    """Runs the calling module's test_* functions in definition order (or
    only those named on the command line) and exits."""
    mod = sys.modules["__main__"]
    tests = [(n, f) for n, f in vars(mod).items() if n.startswith("test_") and callable(f)]
    if len(sys.argv) > 1:
        tests = [(n, f) for n, f in tests if n in sys.argv[1:]]
    signal.signal(signal.SIGALRM, _on_alarm)
    # ctest (or a person) stopping us must still tear the servers down.
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(1))
    failed = []
    print("# gatehouse=%s echo=%s tmp=%s" % (GATEHOUSE_BIN, ECHO_BIN, tmpdir()))
    sys.stdout.flush()
    for name, fn in tests:
        since = {p: len(p.log()) for p in _procs}
        t0 = time.monotonic()
        err = None
        signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT)
        try:
            fn()
        except _TestTimeout:
            err = "test took longer than %.0fs" % TEST_TIMEOUT
        except Fail as e:
            err = "%s\n%s" % (e, "".join(traceback.format_tb(e.__traceback__)[-3:]))
        except Exception:
            err = traceback.format_exc()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        pr = _problems()
        if pr:
            err = (err + "\n" if err else "") + "\n".join(pr)
        dt = time.monotonic() - t0
        if err:
            failed.append(name)
            print("FAIL %s (%.1fs)\n  %s" % (name, dt, err.rstrip().replace("\n", "\n  ")))
            _print_logs(since)
        else:
            print("ok %s (%.1fs)" % (name, dt))
        sys.stdout.flush()
    # Teardown: graceful stop of everything; late sanitizer reports (leaks
    # are printed at exit) and bad exits fail the file.
    since = {p: len(p.log()) for p in _procs}
    stop_all()
    pr = _problems()
    for p in _procs:
        if p.name.startswith("gatehouse") and p.signalled:
            if p.needed_kill:
                pr.append("%s: did not exit within %.0fs of SIGTERM (killed)" % (p.name, STOP_TIMEOUT))
            elif p.returncode not in (0, None):
                pr.append("%s: exit status %s after SIGTERM (expected 0)" % (p.name, p.returncode))
    if pr:
        failed.append("teardown")
        print("FAIL teardown\n  %s" % "\n  ".join(pr))
        _print_logs(since)
    else:
        print("ok teardown")
    print("# %d/%d passed%s" % (len(tests) - len([f for f in failed if f != "teardown"]),
                                len(tests), "; failed: " + ", ".join(failed) if failed else ""))
    sys.stdout.flush()
    sys.exit(1 if failed else 0)
