"""test_acme_run.py: `gatehouse run` and quick mode with ACME-managed names,
against a real Pebble, and `gatehouse cert list|revoke|obtain`.

One Pebble validates on one pair of ports (http_port for HTTP-01,
tls_port for TLS-ALPN-01): every gatehouse here listens on that pair, so
they run one after the other, each stopped before the next starts."""

import json
import os
import re
import ssl
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import pebble   # noqa: E402

HTTPS_PORT = harness.free_port()
HTTP_PORT = harness.free_port()
ORDER_TIMEOUT = 60

_pebble = None
_echo = None


def pb():
    global _pebble
    if _pebble is None:
        _pebble = pebble.start(http_port=HTTP_PORT, tls_port=HTTPS_PORT, validity_seconds=3600)
    return _pebble


def echo():
    global _echo
    if _echo is None:
        _echo = harness.start_echo()
    return _echo


def acme_config(p, storage, names, challenges):
    return harness.make_config(
        [harness.site(names, [echo()], cert=None)], HTTPS_PORT, HTTP_PORT, workers=2,
        acme={"directory": p.directory_url, "email": "ops@example.com",
              "ca_roots": [p.ca_file], "challenges": challenges},
        storage=storage)


def start_run(conf):
    return harness.run_config(conf, HTTPS_PORT, HTTP_PORT)


def served_cert(p, name):
    """Waits until a handshake with SNI |name| verifies against Pebble's
    root and a request through it reaches the echo backend; returns the
    peer certificate (dict)."""
    ctx = harness.client_context(cafile=p.write_roots())

    def attempt():
        try:
            c = harness.Conn.tls(HTTPS_PORT, name, ctx=ctx)
        except (ssl.SSLError, OSError):
            return None
        try:
            peer = c.sock.getpeercert()
            r = c.request("GET", "/hello", name)
            harness.eq(r.status, 200, "status through the managed name")
            return peer
        finally:
            c.close()
    return harness.wait_until(attempt, ORDER_TIMEOUT, "a verified handshake for %s" % name,
                              interval=0.2)


def dns_sans(peer):
    return sorted(v for k, v in peer.get("subjectAltName", ()) if k == "DNS")


def current_version(storage, name):
    return os.readlink(os.path.join(storage, "certs", name, "current"))


_run_storage = None
_run_conf = None


def test_run_http01():
    global _run_storage, _run_conf
    p = pb()
    _run_storage = os.path.join(harness.tmpdir(), "storage-run")
    _run_conf = acme_config(p, _run_storage, ["run1.example.com"], ["http-01"])
    g = start_run(_run_conf)
    peer = served_cert(p, "run1.example.com")
    harness.eq(dns_sans(peer), ["run1.example.com"], "SANs of the served certificate")
    g.wait_log(r"run1\.example\.com: certificate from .* installed", timeout=5)
    # A name the server does not manage still fails cleanly meanwhile.
    try:
        harness.Conn.tls(HTTPS_PORT, "other.example.com",
                         ctx=harness.client_context(verify=False)).close()
        raise harness.Fail("a handshake for an unknown name succeeded")
    except (ssl.SSLError, OSError):
        pass
    # A reload keeps serving the managed certificate (re-installed into the
    # new generation's table).
    size = g.log_size()
    g.reload()
    g.wait_log(r"configuration reloaded", since=size)
    peer = served_cert(p, "run1.example.com")
    harness.eq(dns_sans(peer), ["run1.example.com"], "SANs after a reload")
    harness.eq(g.stop(), 0, "exit status after SIGTERM")


def test_restart_uses_storage():
    p = pb()
    before = current_version(_run_storage, "run1.example.com")
    g = start_run(_run_conf)
    peer = served_cert(p, "run1.example.com")
    harness.eq(dns_sans(peer), ["run1.example.com"], "SANs after restart")
    g.wait_log(r"run1\.example\.com: stored certificate installed", timeout=5)
    harness.not_contains(g.log(), "order for run1.example.com", "no new order at restart")
    harness.eq(current_version(_run_storage, "run1.example.com"), before, "stored version")
    harness.eq(g.stop(), 0, "exit status after SIGTERM")


def test_corrupt_stored_certificate_is_reobtained():
    """An unreadable stored certificate is logged and ordered again; the
    process never crashes on it and serves the new one."""
    p = pb()
    version = current_version(_run_storage, "run1.example.com")
    cert_path = os.path.join(_run_storage, "certs", "run1.example.com", version, "cert.pem")
    os.chmod(cert_path, 0o644)
    with open(cert_path, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\ntruncated garbage\n")
    g = start_run(_run_conf)
    peer = served_cert(p, "run1.example.com")
    harness.eq(dns_sans(peer), ["run1.example.com"], "SANs of the re-obtained certificate")
    g.wait_log(r"run1\.example\.com: .*cert\.pem.*: ordering a new certificate", timeout=5)
    harness.check(current_version(_run_storage, "run1.example.com") != version,
                  "a new version was stored")
    harness.eq(g.stop(), 0, "exit status after SIGTERM")


def test_kill9_during_issuance_then_restart_completes():
    """kill -9 at several moments of an order: the storage stays readable
    (`cert list` works) and the next start completes the job."""
    import signal
    import time
    p = pb()
    storage = os.path.join(harness.tmpdir(), "storage-kill")
    for i, delay in enumerate((0.0, 0.03, 0.1, 0.2, 0.4)):
        name = "kill%d.example.com" % i
        conf = acme_config(p, storage, [name], ["http-01"])
        g = start_run(conf)
        g.wait_log(r"order for %s" % re.escape(name), timeout=10)
        time.sleep(delay)  # where in the order the kill lands, not readiness
        g.signal(signal.SIGKILL)
        harness.eq(g.wait_exit(10), -signal.SIGKILL, "exit of the killed gatehouse")
        harness._procs.remove(g)  # this death is the point of the test
        path = os.path.join(harness.tmpdir(), "kill-%d.json" % i)
        with open(path, "w") as f:
            json.dump(conf, f)
        r = harness.gatehouse_cmd("cert", "list", "-c", path)
        harness.eq(r.returncode, 0, "cert list after kill -9 (%s): %s" % (name, r.stderr))
        g = start_run(conf)
        peer = served_cert(p, name)
        harness.eq(dns_sans(peer), [name], "SANs after kill -9 and restart")
        harness.eq(g.stop(), 0, "exit status after SIGTERM")
        r = harness.gatehouse_cmd("cert", "list", "-c", path)
        harness.contains(r.stdout, name, "cert list names the certificate")


def test_run_tlsalpn01():
    p = pb()
    storage = os.path.join(harness.tmpdir(), "storage-alpn")
    g = start_run(acme_config(p, storage, ["alpn1.example.com"], ["tls-alpn-01"]))
    peer = served_cert(p, "alpn1.example.com")
    harness.eq(dns_sans(peer), ["alpn1.example.com"], "SANs of the served certificate")
    g.wait_log(r"order for alpn1\.example\.com \(1 names\) finished", timeout=5)
    harness.eq(g.stop(), 0, "exit status after SIGTERM")


def test_quick_mode():
    p = pb()
    name = harness._next_name("gatehouse-quick")
    cwd = harness.subdir(name)
    storage = os.path.join(cwd, "storage")
    argv = [harness.GATEHOUSE_BIN, "proxy", "--from", "quick1.example.com", "--to", echo().addr,
            "--acme-directory", p.directory_url, "--acme-ca-root", p.ca_file,
            "--email", "ops@example.com", "--storage", storage, "--challenge", "http-01",
            "--https", "127.0.0.1:%d" % HTTPS_PORT, "--http", "127.0.0.1:%d" % HTTP_PORT,
            "--log-level", "debug"]
    g = harness.Gatehouse(argv, name, cwd, HTTPS_PORT, HTTP_PORT)
    peer = served_cert(p, "quick1.example.com")
    harness.eq(dns_sans(peer), ["quick1.example.com"], "SANs in quick mode")
    harness.eq(g.stop(), 0, "exit status after SIGTERM")
    # Without --from there is nothing to order for.
    r = harness.gatehouse_cmd("proxy", "--to", echo().addr, "--acme-directory",
                              p.directory_url, "--print-config")
    harness.eq(r.returncode, 2, "exit without --from")
    harness.contains(r.stderr, "name the hosts to obtain certificates for with --from", "message")


def _run_conf_path():
    path = os.path.join(harness.tmpdir(), "cli-%d.json" % harness.free_port())
    with open(path, "w") as f:
        json.dump(_run_conf, f)
    return path


def test_cert_list():
    path = _run_conf_path()
    r = harness.gatehouse_cmd("cert", "list", "-c", path)
    harness.eq(r.returncode, 0, "cert list exit (%s)" % r.stderr)
    line = [l for l in r.stdout.splitlines() if l.startswith("run1.example.com")]
    harness.eq(len(line), 1, "one line for run1.example.com in %r" % r.stdout)
    harness.contains(line[0], "valid", "status")
    r = harness.gatehouse_cmd("cert", "list", "-c", path, "--json")
    harness.eq(r.returncode, 0, "cert list --json exit")
    doc = json.loads(r.stdout)
    harness.eq([d["name"] for d in doc], ["run1.example.com"], "names")
    harness.eq(doc[0]["status"], "valid", "status")
    harness.eq(doc[0]["sans"], ["run1.example.com"], "sans")
    harness.check(doc[0]["issuer"], "issuer is named: %r" % doc[0])


def test_cert_revoke():
    p = pb()
    path = _run_conf_path()
    pem = os.path.join(_run_storage, "certs", "run1.example.com", "cert.pem")
    serial = subprocess.run(["openssl", "x509", "-in", pem, "-noout", "-serial"],
                            stdout=subprocess.PIPE, check=True).stdout.decode().strip()
    st = p.cert_status(serial)
    harness.check(st is not None, "Pebble knows serial %s" % serial)
    harness.eq(st["Status"], "Valid", "status before revocation")
    r = harness.gatehouse_cmd("cert", "revoke", "run1.example.com", "-c", path, "--reason",
                              "superseded", timeout=60)
    harness.eq(r.returncode, 0, "cert revoke exit (%s)" % r.stderr[-2000:])
    harness.eq(p.cert_status(serial)["Status"], "Revoked", "status after revocation")
    # A second revocation is refused by the CA, and the problem is printed.
    r = harness.gatehouse_cmd("cert", "revoke", "run1.example.com", "-c", path, timeout=60)
    harness.eq(r.returncode, 1, "second revoke exit")
    harness.check(re.search(r"alreadyRevoked|already", r.stderr),
                  "CA problem printed: %r" % r.stderr[-2000:])
    r = harness.gatehouse_cmd("cert", "revoke", "run1.example.com", "-c", path, "--reason", "7")
    harness.eq(r.returncode, 2, "reason 7 is refused")



def test_cert_obtain():
    p = pb()
    path = _run_conf_path()
    # A running gatehouse holds the listeners: obtain says so.
    g = start_run(harness.make_config([harness.site(["busy.example.com"], [echo()])],
                                      HTTPS_PORT, HTTP_PORT, workers=1))
    r = harness.gatehouse_cmd("cert", "obtain", "cli1.example.com", "-c", path)
    harness.eq(r.returncode, 2, "cert obtain exit while the ports are taken (%s)" % r.stderr)
    harness.contains(r.stderr, "start `gatehouse run`", "message")
    harness.eq(g.stop(), 0, "exit status after SIGTERM")
    # Free listeners: it serves the challenges itself until the order ends.
    r = harness.gatehouse_cmd("cert", "obtain", "cli1.example.com", "cli2.example.com", "-c",
                              path, timeout=ORDER_TIMEOUT)
    harness.eq(r.returncode, 0, "cert obtain exit (%s)" % r.stderr[-3000:])
    harness.contains(r.stdout, "obtained cli1.example.com", "output")
    r = harness.gatehouse_cmd("cert", "list", "-c", path, "--json")
    doc = {d["name"]: d for d in json.loads(r.stdout)}
    harness.eq(doc["cli1.example.com"]["sans"], ["cli1.example.com", "cli2.example.com"], "sans")
    harness.eq(doc["cli1.example.com"]["status"], "valid", "status")
    # An invalid name is refused before anything is bound or ordered.
    r = harness.gatehouse_cmd("cert", "obtain", "bad_name.example.com", "-c", path)
    harness.eq(r.returncode, 2, "an invalid name is refused before any order")


def test_ca_down_static_sites_serve_and_stop_cancels():
    """A CA that accepts connections and never answers: the managed name's
    order stays in flight, the static site serves meanwhile, and SIGTERM
    cancels the order and exits cleanly. Then a CA that refuses: the
    failure is logged and retried with a backoff."""
    import socket
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)
    try:
        hanging = "https://localhost:%d/dir" % hang.getsockname()[1]
        refusing = "https://localhost:%d/dir" % harness.free_port()
        for url in (hanging, refusing):
            conf = harness.make_config(
                [harness.site(["static.example.com"], [echo()]),
                 harness.site(["down1.example.com"], [echo()], cert=None)],
                HTTPS_PORT, HTTP_PORT, workers=1,
                acme={"directory": url, "ca_roots": [pb().ca_file]},
                storage=os.path.join(harness.tmpdir(), "storage-down-%d" % harness.free_port()))
            g = start_run(conf)
            r = g.get("static.example.com", "/static")
            harness.eq(r.status, 200, "static site while the CA is down")
            if url == refusing:
                g.wait_log(r"down1\.example\.com: next attempt in 60s", timeout=30)
            else:
                g.wait_log(r"order for down1\.example\.com \(1 names\) started", timeout=10)
            harness.eq(g.stop(), 0, "exit status after SIGTERM")
            harness.not_contains(g.log(), "loop not empty", "the control loop closed cleanly")
    finally:
        hang.close()


harness.main()
