"""test_dns_update.py: dns-01 through RFC 2136 dynamic updates signed with
TSIG (acme.dns.rfc2136, acme/dnsupdate.c) against a real authoritative
server, Knot (knot.py), which is also the DNS server Pebble validates
with. The ACME engine is driven by gh_obtain, as in test_acme_engine.py."""

import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import knot     # noqa: E402
import pebble   # noqa: E402
from test_acme_engine import OBTAIN_BIN, obtain, storage_dir, verify_chain  # noqa: E402,F401

CAA_BIN = harness._find_bin("GH_CAA_BIN", os.path.join("tests", "acme", "gh_caa"))
ZONE = "dnsupdate.test"
OTHER = "refused.test"

_knot = None
_pebble = None
_pebble_valid = None


def kn():
    global _knot
    if _knot is None:
        _knot = knot.start(ZONE, extra_zones=[OTHER])
    return _knot


def pb():
    global _pebble
    if _pebble is None:
        k = kn()
        _pebble = pebble.start(validity_seconds=3600, dns_server="%s:%d" % (k.addr, k.port))
    return _pebble


def config(p, k, zone=ZONE, secret=None, extra=None):
    acme = {
        "directory": p.directory_url,
        "email": "ops@example.com",
        "ca_roots": [p.ca_file],
        "challenges": ["dns-01"],
        "dns_resolvers": ["%s:%d" % (k.addr, k.port)],
        "dns_propagation_timeout": "10s",
        "dns": {"rfc2136": {
            "server": "%s:%d" % (k.addr, k.port),
            "zone": zone,
            "key_name": k.tsig["name"],
            "key_algorithm": k.tsig["algorithm"],
            "key_secret": secret or k.tsig["secret"],
        }},
    }
    acme.update(extra or {})
    cfg = {
        "listen": {"https": ["127.0.0.1:%d" % p.tls_port], "http": ["127.0.0.1:%d" % p.http_port]},
        "sites": [{"hosts": ["placeholder.test"], "upstreams": ["127.0.0.1:9"]}],
        "acme": acme,
        "storage": storage_dir(),
        "log": {"level": "debug"},
    }
    path = os.path.join(harness.tmpdir(), "dnsupdate-%d.json" % harness.free_port())
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path, cfg["storage"]


def test_obtain_with_rfc2136():
    k, p = kn(), pb()
    name = "www." + ZONE
    fqdn = "_acme-challenge.%s." % name
    path, st = config(p, k)
    rc, out, err = obtain(path, name)
    harness.eq(rc, 0, "gh_obtain exit (%s; %s)" % (out, err[-3000:]))
    harness.eq(out["sans"], [name], "SANs")
    verify_chain(p, st, name)
    server = "%s:%d" % (k.addr, k.port)
    harness.contains(err, "dns-01: %s TXT added at %s (zone %s)" % (fqdn[:-1], server, ZONE),
                     "the update's log line")
    # The zone's authoritative server, found from its SOA and NS records
    # (ns1.dnsupdate.test, port 53), was asked directly and had the record.
    harness.check(re.search(r"dns-01: %s visible at every authoritative server of %s \(%s\) "
                            r"after \d+ ms" % (re.escape(fqdn[:-1]), ZONE, re.escape(server)), err),
                  "the propagation check saw the record at knotd:\n%s" % err[-3000:])
    harness.contains(err, "dns-01: %s TXT removed" % fqdn[:-1], "the cleanup's log line")
    # gh_obtain exits once the cleanup's update has been answered: the
    # record is gone from the zone.
    harness.eq(k.query(fqdn, "TXT"), [], "TXT records left at %s" % fqdn)
    harness.contains(open(k.proc.log_path).read(), "DDNS", "knotd's log of the updates")


def test_truncated_answers_go_tcp():
    # Stale TXT records left at the name make every answer over UDP (no
    # EDNS: 512 bytes) truncated: the authoritative check asks again over
    # TCP, and only our record is removed afterwards. Pebble's validator
    # does not fall back to TCP itself, so a Pebble that takes every
    # challenge as valid stands in for it here.
    k = kn()
    global _pebble_valid
    if _pebble_valid is None:
        _pebble_valid = pebble.start(always_valid=True, dns_server="%s:%d" % (k.addr, k.port))
    p = _pebble_valid
    name = "stale." + ZONE
    fqdn = "_acme-challenge.%s." % name
    stale = ['"stale-%02d-%s"' % (i, "x" * 90) for i in range(12)]
    for v in stale:
        k.add(fqdn, "TXT", v)
    path, _ = config(p, k)
    rc, out, err = obtain(path, name)
    harness.eq(rc, 0, "gh_obtain exit (%s; %s)" % (out, err[-3000:]))
    harness.contains(err, "dns-01: %s visible at every authoritative server of %s"
                     % (fqdn[:-1], ZONE), "the authoritative check's log line")
    harness.eq(sorted(k.query(fqdn, "TXT")), sorted(stale), "the stale records, untouched")
    harness.contains(err, "dns: %s:%d: a truncated answer, asking again over TCP"
                     % (k.addr, k.port), "the TCP fallback's log line")


def test_wrong_secret_fails_with_badsig():
    k, p = kn(), pb()
    name = "badsig." + ZONE
    path, _ = config(p, k, secret="d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldCB3cm9uZyE=")
    start = len(p.proc.stdout())
    rc, out, err = obtain(path, name, timeout=60)
    harness.eq(rc, 1, "exit (%s; %s)" % (out, err[-3000:]))
    for want in ("_acme-challenge.%s." % name, "%s:%d" % (k.addr, k.port), "zone %s" % ZONE,
                 "key %s" % k.tsig["name"], "BADSIG", "key_secret"):
        harness.contains(out["error"], want, "error")
    harness.not_contains(p.proc.stdout()[start:], "POST /chalZ/",
                         "Pebble's log: the challenge was never answered")
    harness.eq(k.query("_acme-challenge.%s." % name, "TXT"), [], "TXT records")


def test_zone_the_key_may_not_update():
    # The server is authoritative for refused.test, but its ACL gives the
    # key no update right there (Knot says NOTAUTH with TSIG error BADKEY).
    k, p = kn(), pb()
    name = "www." + OTHER
    path, _ = config(p, k, zone=OTHER)
    rc, out, err = obtain(path, name, timeout=60)
    harness.eq(rc, 1, "exit (%s; %s)" % (out, err[-3000:]))
    for want in ("_acme-challenge.%s." % name, "%s:%d" % (k.addr, k.port), "zone %s" % OTHER,
                 "key %s" % k.tsig["name"]):
        harness.contains(out["error"], want, "error")
    harness.check(re.search(r": (NOTAUTH|REFUSED)[ ,]", out["error"]),
                  "the error names NOTAUTH or REFUSED: %s" % out["error"])


def test_name_outside_the_zone():
    k, p = kn(), pb()
    path, _ = config(p, k)
    rc, out, _ = obtain(path, "www.elsewhere.test", timeout=60)
    harness.eq(rc, 1, "exit (%s)" % (out,))
    harness.contains(out["error"], "is the name in the zone?", "error")
    harness.contains(out["error"], "zone %s" % ZONE, "error")


def caa(k, name, ca, method="http-01", account=None):
    r = subprocess.run([CAA_BIN, "%s:%d" % (k.addr, k.port), name, ca, method] +
                       ([account] if account else []), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    err = r.stderr.decode(errors="replace")
    for m in harness.SANITIZER_MARKERS:
        harness.not_contains(err, m, "gh_caa stderr")
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def test_caa_lookup():
    # The knot fixture serves CAA records as a resolver would pass them on:
    # the relevant RRset is found at the closest name that has one.
    k = kn()
    k.add("@", "CAA", '0 issue "ca.example; accounturi=https://ca.example/acct/1"')
    k.add("@", "CAA", '0 issuewild ";"')
    k.add("sub", "CAA", '0 issue "other.example"')
    k.add("crit", "CAA", '128 tbs "x"')
    out = caa(k, "www.deep.%s" % ZONE, "ca.example", account="https://ca.example/acct/1")
    harness.eq((out["status"], out["found_at"], out["permitted"]), (0, ZONE, True), repr(out))
    harness.eq(sorted(r["tag"] for r in out["records"]), ["issue", "issuewild"], "tags")
    out = caa(k, "www.deep.%s" % ZONE, "ca.example", account="https://ca.example/acct/2")
    harness.eq(out["permitted"], False, repr(out))
    harness.contains(out["why"], "accounturi=https://ca.example/acct/1", "why")
    out = caa(k, "*.%s" % ZONE, "ca.example", "dns-01", "https://ca.example/acct/1")
    harness.eq(out["permitted"], False, "issuewild \";\" forbids a wildcard: %r" % out)
    out = caa(k, "x.sub.%s" % ZONE, "ca.example")
    harness.eq((out["found_at"], out["permitted"]), ("sub." + ZONE, False), repr(out))
    out = caa(k, "crit.%s" % ZONE, "ca.example")
    harness.eq(out["permitted"], False, repr(out))
    harness.contains(out["why"], "critical \"tbs\"", "why")
    # Knot is no recursive resolver: above its zone it refuses, which is an
    # error, never "no CAA".
    out = caa(k, "www.nozone.test", "ca.example")
    harness.eq(out["status_name"], "EIO", repr(out))
    harness.contains(out["why"], "REFUSED", "why")


def test_caa_precheck_refuses_before_ordering():
    """acme.caa_check (on by default): CAA records that forbid this CA (by
    its issuer domains, RFC 8659), this account or these challenge types
    (RFC 8657) refuse the name before newOrder, so no authorization is
    spent; records that allow it let the order through. Pebble names no
    caaIdentities and checks no CAA itself: caa_identities names it here,
    and with the check off the forbidden name is issued."""
    k, p = kn(), pb()
    ids = {"caa_identities": ["pebble.test"]}
    cases = [
        ("caa-other", '0 issue "other-ca.example"', "forbid CA localhost"),
        ("caa-acct", '0 issue "pebble.test; accounturi=https://localhost/my-account/none"',
         "accounturi"),
        ("caa-method", '0 issue "pebble.test; validationmethods=http-01"', "validationmethods"),
        ("caa-crit", '128 tbs "unknown"', "critical"),
    ]
    for label, record, why in cases:
        k.add(label, "CAA", record)
        name = "%s.%s" % (label, ZONE)
        path, st = config(p, k, extra=ids)
        rc, out, err = obtain(path, name)
        harness.eq(rc, 1, "%s: exit" % label)
        harness.check(re.search(r"%s: not ordered: the CAA records at %s\.? forbid CA " % (
            re.escape(name), re.escape(name)), out["error"]), "%s: error %r" % (label, out))
        harness.contains(out["error"], why, "%s: the reason" % label)
        harness.not_contains(err, "_acme-challenge." + name, "%s: no challenge published" % label)
    k.add("caa-ok", "CAA", '0 issue "pebble.test; validationmethods=dns-01"')
    path, st = config(p, k, extra=ids)
    rc, out, err = obtain(path, "caa-ok." + ZONE)
    harness.eq(rc, 0, "allowed by CAA: exit (%s; %s)" % (out, err[-3000:]))
    path, st = config(p, k, extra=dict(ids, caa_check=False))
    rc, out, err = obtain(path, "caa-other." + ZONE)
    harness.eq(rc, 0, "with caa_check off the CA decides (Pebble checks none): %s" % out)

    # With acme.issuers, a CA the records forbid is passed over before its
    # newOrder, without a back-off (it did nothing wrong).
    import test_acme_engine as eng
    srv, seen = eng._fake_ca(eng._order_script("x", lambda b: (500, {}, "")))
    try:
        url = "https://localhost:%d/dir" % srv.server_address[1]
        path, st = config(p, k)
        with open(path) as f:
            cfg = json.load(f)
        acme = cfg["acme"]
        del acme["directory"]
        acme["ca_roots"] = [p.ca_file, harness.ca().cert]
        acme["issuers"] = [{"name": "other", "directory": url, "caa_identities": ["other.test"]},
                           {"name": "pebble", "directory": p.directory_url,
                            "caa_identities": ["pebble.test"]}]
        with open(path, "w") as f:
            json.dump(cfg, f)
        rc, out, err = obtain(path, "caa-ok." + ZONE)
        harness.eq(rc, 0, "issued by the CA the records allow (%s; %s)" % (out, err[-3000:]))
        harness.contains(err, "forbid CA other", "the forbidden CA is said")
        harness.contains(err, "trying CA pebble", "the next CA is tried")
        harness.check("POST /acct" in seen and "POST /order" not in seen,
                      "no newOrder at the CA the records forbid: %r" % seen)
        harness.eq(eng.ca_state(st, url), None, "no back-off for it")
    finally:
        srv.shutdown()
        srv.server_close()


if __name__ == "__main__":
    harness.main()
