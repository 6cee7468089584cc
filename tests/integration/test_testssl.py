#!/usr/bin/env python3
"""test_testssl: the TLS listener grades clean under testssl.sh (Debian's
`testssl`): no HIGH or CRITICAL finding and no TLS-level LOW finding.

The certificate is made to look like a real one (a trusted private CA passed
with --add-ca, an IP SAN for the address scanned, long validity, a CRL URI
and no OCSP URI, as Let's Encrypt issues them since it ended OCSP), so that
what is left to grade is the listener itself. Findings
about DNS (CAA records) are out of scope for a TLS listener; HSTS is turned
on for the site, as a production config would."""

import json
import os
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

NOT_TLS = {"DNS_CAArecord"}


def production_like_leaf(ca):
    d = h.subdir("leaf-testssl")
    key, csr, crt, ext = (os.path.join(d, n) for n in ("k.pem", "c.csr", "c.pem", "c.ext"))
    h._run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", key])
    h._run(["openssl", "req", "-new", "-key", key, "-subj", "/CN=127.0.0.1", "-out", csr])
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid,issuer\n"
                "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "crlDistributionPoints=URI:http://crl.gatehouse.invalid/ca.crl\n")
    h._run(["openssl", "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key,
            "-set_serial", "0x" + os.urandom(12).hex(), "-days", "200", "-sha256",
            "-extfile", ext, "-out", crt])
    return crt, key


def test_testssl_grades_clean():
    testssl = shutil.which("testssl") or shutil.which("testssl.sh")
    h.check(testssl is not None, "testssl is not installed (scripts/deps installs testssl.sh)")
    e = h.start_echo()
    ca = h.ca()
    crt, key = production_like_leaf(ca)
    g = h.start_gatehouse([h.site(["localhost"], [e], cert=(crt, key), default=True,
                                  hsts={"max_age": "365d"})], workers=2)
    out = os.path.join(h.tmpdir(), "testssl.json")
    r = subprocess.run([testssl, "--quiet", "--color", "0", "--warnings", "off",
                        "--add-ca", ca.cert, "--jsonfile", out,
                        "127.0.0.1:%d" % g.https_port],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=480)
    h.check(os.path.exists(out), "testssl wrote no results (exit %d):\n%s"
            % (r.returncode, r.stdout.decode(errors="replace")[-2000:]))
    with open(out) as f:
        findings = json.load(f)
    bad = []
    for f in findings:
        sev, fid = f.get("severity"), f.get("id", "")
        if fid in NOT_TLS:
            continue
        if sev in ("HIGH", "CRITICAL", "LOW") or (sev == "WARN" and "scanProblem" in fid):
            bad.append("%s %s: %s" % (sev, fid, f.get("finding", "")))
    h.check(not bad, "testssl findings:\n  " + "\n  ".join(bad))
    h.check(g.alive(), "gatehouse died under the scan")


if __name__ == "__main__":
    h.TEST_TIMEOUT = 540
    h.main()
