"""test_pebble_fixture.py: the Pebble fixture works, and acme/httpc talks to
Pebble for real.

The HTTPS client is C, so the test drives it through the unit-test binary's
one-request mode (GH_HTTPC_URL / GH_HTTPC_CA / GH_HTTPC_METHOD; the binary
comes from TEST_HTTPC_BIN, else the newest build/*/tests/test_httpc)."""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import pebble   # noqa: E402

TEST_HTTPC_BIN = harness._find_bin("TEST_HTTPC_BIN", os.path.join("tests", "test_httpc"))
ACME_RESOURCES = ("newNonce", "newAccount", "newOrder", "revokeCert", "keyChange")

_pebble = None


def pb():
    global _pebble
    if _pebble is None:
        _pebble = pebble.start(validity_seconds=3600)
    return _pebble


def httpc(url, method="GET", ca=None):
    """Runs one acme/httpc request; returns (exit code, status, headers
    {lower-case name: [values]}, body, stderr)."""
    env = dict(os.environ, GH_HTTPC_URL=url, GH_HTTPC_METHOD=method)
    env.pop("GH_HTTPC_CA", None)
    if ca:
        env["GH_HTTPC_CA"] = ca
    r = subprocess.run([TEST_HTTPC_BIN], env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    err = r.stderr.decode(errors="replace")
    for m in harness.SANITIZER_MARKERS:
        harness.not_contains(err, m, "test_httpc stderr")
    if r.returncode != 0:
        return r.returncode, 0, {}, b"", err
    head, _, body = r.stdout.partition(b"\n\n")
    lines = head.decode().split("\n")
    harness.check(lines[0].startswith("status "), "test_httpc printed %r" % lines[0])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(": ")
        headers.setdefault(k.lower(), []).append(v)
    return 0, int(lines[0].split()[1]), headers, body, err


def test_directory_with_curl():
    p = pb()
    r = harness.curl(p.port, "localhost", "/dir", cafile=p.ca_file)
    harness.eq(r.rc, 0, "curl exit (%s)" % r.stderr)
    harness.eq(r.status, 200, "directory status")
    d = r.json()
    for k in ACME_RESOURCES:
        harness.check(d.get(k, "").startswith(p.base_url + "/"), "directory %s: %r" % (k, d))
    harness.eq(d["meta"]["externalAccountRequired"], False, "externalAccountRequired")
    # The certificate is only trusted through the fixture's CA.
    r = harness.curl(p.port, "localhost", "/dir", cafile="/etc/ssl/certs/ca-certificates.crt")
    harness.check(r.rc != 0, "curl trusted Pebble without its CA")


def test_management_roots():
    p = pb()
    root, inter = p.root_pem(0), p.intermediate_pem(0)
    harness.contains(harness.cert_info_pem(root)["subject"], "Pebble Root CA", "root subject")
    harness.contains(harness.cert_info_pem(inter)["subject"], "Pebble Intermediate CA",
                     "intermediate subject")
    inter_path = os.path.join(p.dir, "inter.pem")
    with open(inter_path, "w") as f:
        f.write(inter)
    harness._run(["openssl", "verify", "-CAfile", p.write_roots(), inter_path])
    harness.eq(p.cert_status("0123abcd"), None, "status of a serial Pebble never issued")


def test_config_ports_and_options():
    p = pb()
    cfg = p.config["pebble"]
    harness.eq((cfg["httpPort"], cfg["tlsPort"]), (p.http_port, p.tls_port), "validation ports")
    harness.check(p.http_port != p.tls_port, "distinct validation ports")
    p.wait_log(r"Using certificate validity period of 3600 seconds")
    p.wait_log(r"Using custom DNS resolver for ACME challenges: 127\.0\.0\.1:%d" % p.dns_port)
    p.wait_log(r"Disabling random VA sleeps")
    p.wait_log(r"Configured to reject 0% of good nonces")


def test_challtestsrv_dns():
    p = pb()
    # Every name resolves to 127.0.0.1 (and has no AAAA) unless told otherwise.
    harness.eq(p.dns_query("anything.example.test"), ["127.0.0.1"], "default A")
    harness.eq(p.dns_query("anything.example.test", "AAAA"), [], "default AAAA")
    p.add_a("moved.example.test", ["127.0.0.2"])
    harness.eq(p.dns_query("moved.example.test"), ["127.0.0.2"], "added A")
    p.clear_a("moved.example.test")
    harness.eq(p.dns_query("moved.example.test"), ["127.0.0.1"], "cleared A")
    p.set_txt("_acme-challenge.dns.example.test", "digest-value")
    harness.eq(p.dns_query("_acme-challenge.dns.example.test", "TXT"), ["digest-value"], "TXT")
    p.clear_txt("_acme-challenge.dns.example.test")
    harness.eq(p.dns_query("_acme-challenge.dns.example.test", "TXT"), [], "cleared TXT")
    harness.check(len(p.dns_history("moved.example.test")) >= 2, "DNS history recorded")


def test_httpc_gets_directory():
    p = pb()
    rc, status, headers, body, err = httpc(p.directory_url, ca=p.ca_file)
    harness.eq(rc, 0, "test_httpc exit (stderr: %s)" % err)
    harness.eq(status, 200, "directory status")
    harness.contains(headers.get("content-type", [""])[0], "application/json", "content type")
    d = json.loads(body)
    for k in ACME_RESOURCES[:3]:
        harness.check(d.get(k, "").startswith(p.base_url + "/"), "directory %s: %r" % (k, d))


def test_httpc_head_new_nonce():
    p = pb()
    url = p.directory()["newNonce"]
    rc, status, headers, body, err = httpc(url, method="HEAD", ca=p.ca_file)
    harness.eq(rc, 0, "test_httpc exit (stderr: %s)" % err)
    harness.eq(status, 200, "HEAD newNonce status")
    nonce = headers.get("replay-nonce", [""])[0]
    harness.check(len(nonce) >= 16, "Replay-Nonce %r in %r" % (nonce, headers))
    harness.contains(headers.get("link", [""])[0], 'rel="index"', "Link header")
    harness.eq(body, b"", "HEAD body")


def test_httpc_rejects_pebble_without_its_ca():
    p = pb()
    rc, _, _, _, err = httpc(p.directory_url)
    harness.eq(rc, 1, "test_httpc exit without the CA")
    harness.contains(err, "GET %s: TLS certificate of localhost" % p.directory_url, "error")
    harness.contains(err, "rejected: unable to get local issuer certificate", "error")


def test_eab_and_fixed_validation_ports():
    http_port, tls_port = harness.free_port(), harness.free_port()
    p = pebble.start(http_port=http_port, tls_port=tls_port, nonce_reject=50,
                     eab_keys={"kid-1": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"})
    try:
        harness.eq(p.directory()["meta"]["externalAccountRequired"], True, "EAB required")
        harness.eq((p.http_port, p.tls_port), (http_port, tls_port), "chosen ports")
        p.wait_log(r"Configured to reject 50% of good nonces")
    finally:
        p.stop()
    harness.check(not p.proc.alive() and not p.challtestsrv.alive(), "stopped")
    harness.check(not harness.port_accepts(p.port), "Pebble port closed after stop")


if __name__ == "__main__":
    harness.main()
