#!/usr/bin/env python3
"""The fleet's etcd store (issue 15, acme/storage_etcd.c) through the
storage interface, as two nodes would use it: each node is a test_store
driver (tests/acme/store_driver.c) on a configuration of its own (its own
local directory, the same etcd prefix), against a real etcd member started
here. Certificates come from the test CA.

What it checks: what one node stores the other reads (certificates with
their meta, accounts, the list); one order lock per name across nodes,
released by unlock, by the holder's exit (lease revoked) and by its death
(kill -9: the lease runs out); the fence (a holder whose lease expired has
its late write refused, and the name keeps the new holder's certificate);
and etcd down: the node reads its local copy."""
import json
import os
import signal
import subprocess
import time

import harness as h

DRIVER = h._find_bin("TEST_STORE_BIN", os.path.join("tests", "acme", "test_store"))
PREFIX = "/gatehouse/test-%d/"

_s = {}


class Node(h.LineDriver):
    """A test_store driver on a configuration with |etcd_urls|."""

    def __init__(self, name, etcd_urls, prefix, lease_ttl="2s", encryption_key=None):
        d = h.subdir(h._next_name(name))
        crt, key = h.ca().leaf(["site.fleet.test"])
        conf = {"sites": [{"hosts": ["site.fleet.test"], "upstreams": ["127.0.0.1:9"],
                           "tls": {"cert": crt, "key": key}}],
                "storage": {"directory": os.path.join(d, "local"),
                            "etcd": dict({"endpoints": list(etcd_urls), "prefix": prefix,
                                          "timeout": "1s"},
                                         **({"encryption_key": encryption_key}
                                            if encryption_key else {}))},
                "fleet": {"node": name, "lease_ttl": lease_ttl}}
        path = os.path.join(d, "gatehouse.json")
        with open(path, "w") as f:
            json.dump(conf, f)
        super().__init__(name, [DRIVER, path])


def setup():
    if not _s:
        _s["etcd"] = h.Etcd()
    return _s


def nodes(n=2, ttl="2s"):
    s = setup()
    prefix = PREFIX % h.free_port()
    return [Node("node%d" % i, [s["etcd"].url], prefix, ttl) for i in range(n)], prefix


def leaf(name):
    crt, key = h.ca().leaf([name])
    return crt, key


def sha256_of(crt):
    out = subprocess.run(["openssl", "x509", "-in", crt, "-outform", "DER"],
                         stdout=subprocess.PIPE, check=True).stdout
    import hashlib
    return hashlib.sha256(out).hexdigest()


def test_shared_certificates_and_accounts():
    """A certificate and an account stored by one node are read by the
    other, with the meta; the list has the name; a bad bundle (key of
    another certificate) is refused before anything is written; delete
    removes it for both."""
    (a, b), _ = nodes()
    crt, key = leaf("one.fleet.test")
    a.ok("save", name="one.fleet.test", cert=crt, key=key, meta='{"renew_at": 1}')
    r = b.ok("load", name="one.fleet.test")
    h.eq(r["sha256"], sha256_of(crt), "node1 reads node0's certificate")
    h.eq(json.loads(r["meta"]), {"renew_at": 1}, "and its meta")
    h.eq(b.ok("list")["names"], ["one.fleet.test"], "the list")
    _, other_key = leaf("two.fleet.test")
    r = a.do("save", name="bad.fleet.test", cert=crt, key=other_key, meta="{}")
    h.check(not r["ok"] and "refusing to store" in r["err"], "mismatched key refused: %r" % r)
    h.eq(b.ok("list")["names"], ["one.fleet.test"], "nothing written for the bad one")
    a.ok("account_save", ca="https://ca.test/dir", id="acct1", json='{"url": "u"}')
    h.eq(json.loads(b.ok("account_load", ca="https://ca.test/dir", id="acct1")["json"]),
         {"url": "u"}, "node1 reads node0's account")
    b.ok("delete", name="one.fleet.test")
    r = a.do("load", name="one.fleet.test")
    h.eq((r["ok"], r.get("code")), (False, -2), "gone for node0 too (-ENOENT)")
    a.close()
    b.close()


def test_one_lock_per_name():
    """Only one node holds a name's order lock; the refusal names the
    holder; unlock, and the holder's exit (its lease revoked), release it."""
    (a, b), _ = nodes()
    h.eq(a.ok("lock", name="l.fleet.test")["result"], "acquired", "node0 locks")
    r = b.ok("lock", name="l.fleet.test")
    h.eq(r["result"], "held", "node1 is refused")
    h.contains(r["holder"], "node0", "the refusal names the holder")
    a.ok("unlock", name="l.fleet.test")
    h.eq(b.ok("lock", name="l.fleet.test")["result"], "acquired", "free after unlock")
    h.eq(a.ok("lock", name="m.fleet.test")["result"], "acquired", "node0 locks another name")
    a.close()  # exits holding it: the lease is revoked at exit
    h.eq(b.ok("lock", name="m.fleet.test")["result"], "acquired", "free once its holder exited")
    b.close()


def test_dead_holder_and_fence():
    """A holder killed with -9 keeps the lock only until its lease runs
    out (2 s here). A holder that stalls past its lease (no keepalive) has
    its late certificate write refused (-ESTALE) once another node took
    the lock, and the name keeps the new holder's certificate."""
    (a, b, c), _ = nodes(3)
    h.eq(a.ok("lock", name="k.fleet.test")["result"], "acquired", "node0 locks")
    a.kill()
    t0 = time.monotonic()
    h.wait_until(lambda: b.ok("lock", name="k.fleet.test")["result"] == "acquired", 10,
                 "the dead holder's lock to expire", interval=0.2)
    h.check(time.monotonic() - t0 < 6, "freed within the lease TTL and a little")
    # The fence: node1 holds "k" and stalls (no calls) past its lease.
    h.wait_until(lambda: c.ok("lock", name="k.fleet.test")["result"] == "acquired", 10,
                 "node1's lease to run out while it stalls", interval=0.2)
    crt_c, key_c = leaf("k.fleet.test")
    c.ok("save", name="k.fleet.test", cert=crt_c, key=key_c, meta='{"by": "node2"}')
    crt_b, key_b = h.ca().leaf(["k.fleet.test", "late.fleet.test"])
    r = b.do("save", name="k.fleet.test", cert=crt_b, key=key_b, meta='{"by": "node1"}')
    h.eq((r["ok"], r.get("code")), (False, -116), "the stale holder's write is refused (-ESTALE)")
    h.contains(r["err"], "lock on it", "and says why")
    r = c.ok("load", name="k.fleet.test")
    h.eq(json.loads(r["meta"]), {"by": "node2"}, "the name keeps the new holder's certificate")
    # Challenge records are fenced the same way: the stale holder can
    # neither overwrite nor remove the new holder's TLS-ALPN-01 record.
    c.ok("challenge_put", kind="tls-alpn-01", id="k.fleet.test", key_auth="new.holder",
         lock="k.fleet.test")
    r = b.do("challenge_put", kind="tls-alpn-01", id="k.fleet.test", key_auth="stale",
             lock="k.fleet.test")
    h.eq((r["ok"], r.get("code")), (False, -116), "the stale holder's challenge put")
    r = b.do("challenge_delete", kind="tls-alpn-01", id="k.fleet.test", lock="k.fleet.test")
    h.eq((r["ok"], r.get("code")), (False, -116), "the stale holder's challenge delete")
    h.eq(c.ok("challenge_get", kind="tls-alpn-01", id="k.fleet.test")["key_auth"], "new.holder",
         "the new holder's record stays")
    b.close()
    c.close()


def test_watch_propagates():
    """A node that follows the store sees what is already there, then each
    certificate another node stores, replaces or deletes, in order, each
    with its own leaf."""
    (a, b), _ = nodes()
    crt0, key0 = leaf("w0.fleet.test")
    b.ok("save", name="w0.fleet.test", cert=crt0, key=key0, meta='{"n": 0}')
    a.ok("watch")
    seen = []

    def until(pred, what):
        def f():
            seen.extend(a.ok("events")["events"])
            return pred()
        h.wait_until(f, 10, what, interval=0.05)

    until(lambda: any(e["name"] == "w0.fleet.test" for e in seen), "the existing certificate")
    h.eq(seen[-1]["sha256"], sha256_of(crt0), "listed with its leaf")
    crt1, key1 = leaf("w1.fleet.test")
    crt1b, key1b = h.ca().leaf(["w1.fleet.test", "www.w1.fleet.test"])
    b.ok("save", name="w1.fleet.test", cert=crt1, key=key1, meta='{"n": 1}')
    b.ok("save", name="w1.fleet.test", cert=crt1b, key=key1b, meta='{"n": 2}')
    b.ok("delete", name="w0.fleet.test")
    until(lambda: any(e.get("deleted") for e in seen), "the deletion")
    w1 = [e for e in seen if e["name"] == "w1.fleet.test"]
    h.eq([e["sha256"] for e in w1], [sha256_of(crt1), sha256_of(crt1b)],
         "both versions, in order (a renewal replaces the leaf)")
    h.eq(json.loads(w1[-1]["meta"]), {"n": 2}, "with their meta")
    h.eq(seen[-1], {"name": "w0.fleet.test", "deleted": True}, "the deletion last")
    a.close()
    b.close()


def test_challenge_records():
    """A challenge record one node writes is seen by a watching node and
    read back by another; a deleted one goes; the records of a node that
    dies go with its lease; a token that is not base64url is refused."""
    (a, b, c), _ = nodes(3)
    b.ok("watch")
    seen = []

    def until(pred, what, timeout=10):
        def f():
            seen.extend(e for e in b.ok("events")["events"] if "challenge" in e)
            return pred()
        h.wait_until(f, timeout, what, interval=0.05)

    a.ok("challenge_put", kind="http-01", id="tok_ABC-123", key_auth="tok_ABC-123.thumb")
    c.ok("challenge_put", kind="tls-alpn-01", id="alpn.fleet.test", key_auth="k.thumb")
    until(lambda: len(seen) >= 2, "both records at the watching node")
    h.eq(sorted((e["challenge"], e["id"], e.get("key_auth")) for e in seen),
         [("http-01", "tok_ABC-123", "tok_ABC-123.thumb"),
          ("tls-alpn-01", "alpn.fleet.test", "k.thumb")], "as written")
    h.eq(c.ok("challenge_get", kind="http-01", id="tok_ABC-123")["key_auth"],
         "tok_ABC-123.thumb", "a read on a miss finds node0's record")
    c.ok("challenge_delete", kind="tls-alpn-01", id="alpn.fleet.test")
    until(lambda: any(e.get("deleted") and e["id"] == "alpn.fleet.test" for e in seen),
          "the deleted record")
    a.kill()  # its lease ends within its TTL, and its record with it
    until(lambda: any(e.get("deleted") and e["id"] == "tok_ABC-123" for e in seen),
          "the dead node's record gone with its lease")
    r = c.do("challenge_get", kind="http-01", id="tok_ABC-123")
    h.eq((r["ok"], r.get("code")), (False, -2), "gone for reads too")
    r = c.do("challenge_put", kind="http-01", id="../x", key_auth="k")
    h.check(not r["ok"] and "base64url" in r["err"], "a bad token refused: %r" % r)
    b.close()
    c.close()


def test_etcd_down_reads_local_copy():
    """With etcd stopped, a node still reads what it wrote through to its
    local copy (and lists it); a write fails clearly; etcd back, it works."""
    (a,), prefix = nodes(1)
    crt, key = leaf("local.fleet.test")
    a.ok("save", name="local.fleet.test", cert=crt, key=key, meta="{}")
    e = _s["etcd"]
    e.p.send_signal(signal.SIGSTOP)
    try:
        r = a.ok("load", name="local.fleet.test")
        h.eq(r["sha256"], sha256_of(crt), "read from the local copy")
        h.eq(a.ok("list")["names"], ["local.fleet.test"], "listed from the local copy")
        r = a.do("save", name="other.fleet.test", cert=crt, key=key, meta="{}")
        h.check(not r["ok"], "a write fails while etcd is away: %r" % r)
    finally:
        e.p.send_signal(signal.SIGCONT)
    h.wait_until(lambda: a.do("list")["ok"] and "local.fleet.test" in a.do("list")["names"], 10,
                 "etcd back")
    a.ok("save", name="other.fleet.test", cert=crt, key=key, meta="{}")
    a.close()
    err = a.stderr()
    h.contains(err, "etcd unreachable", "the outage is logged")
    h.check(err.count("etcd unreachable") == 1, "once, not once per call: %r" % err)



def etcd_value(prefix, key):
    r = setup()["etcd"].ctl("get", prefix + key, "--print-value-only")
    h.eq(r.returncode, 0, "etcdctl get %s" % key)
    return r.stdout


def key_file(name, text):
    path = os.path.join(h.subdir(h._next_name(name)), "key")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def test_private_keys_sealed_at_rest():
    """With storage.etcd.encryption_key, certificate keys and accounts are
    sealed in etcd (no PEM private key and no account JSON in the values),
    a node with the same key reads them back, a node without it or with
    another is told why and reads nothing, an entry moved to another name
    does not open, and values written before the key was set still read."""
    s = setup()
    prefix = PREFIX % h.free_port()
    k1 = key_file("k1", base64_key(1))
    k2 = key_file("k2", "ab" * 32)  # 64 hex digits
    a = Node("sealer", [s["etcd"].url], prefix, encryption_key=k1)
    b = Node("reader", [s["etcd"].url], prefix, encryption_key=k1)
    plain = Node("plain", [s["etcd"].url], prefix)
    other = Node("other", [s["etcd"].url], prefix, encryption_key=k2)
    crt, key = leaf("sealed.fleet.test")
    a.ok("save", name="sealed.fleet.test", cert=crt, key=key, meta='{"n": 1}')
    a.ok("account_save", ca="https://ca.test/dir", id="ops@example.com",
         json='{"url": "https://ca.test/acct/1", "key": "SECRET-ACCOUNT-KEY"}')
    raw = etcd_value(prefix, "certs/sealed.fleet.test")
    h.not_contains(raw, b"PRIVATE KEY", "the certificate entry in etcd")
    h.contains(raw, b"gh-aead-v1:", "the sealed key")
    acct = etcd_value(prefix, "accounts/ca.test/ops@example.com")
    h.not_contains(acct, b"SECRET-ACCOUNT-KEY", "the account in etcd")
    h.eq(b.ok("load", name="sealed.fleet.test")["sha256"], sha256_of(crt), "read with the key")
    h.contains(b.ok("account_load", ca="https://ca.test/dir", id="ops@example.com")["json"],
               "SECRET-ACCOUNT-KEY", "the account read with the key")
    for n, why in ((plain, "encryption_key is not set"), (other, "cannot open")):
        r = n.do("load", name="sealed.fleet.test")
        h.check(not r["ok"] and why in r["err"], "%s: %r" % (n.name, r))
    # Moved to another name: the associated data no longer matches.
    r = setup()["etcd"].ctl("put", prefix + "certs/moved.fleet.test", raw.decode().rstrip("\n"))
    h.eq(r.returncode, 0, "etcdctl put")
    r = b.do("load", name="moved.fleet.test")
    h.check(not r["ok"] and "cannot open" in r["err"], "a moved entry: %r" % r)
    # Written in the clear before the key was set: still read.
    crt2, key2 = leaf("old.fleet.test")
    plain.ok("save", name="old.fleet.test", cert=crt2, key=key2, meta="{}")
    h.eq(b.ok("load", name="old.fleet.test")["sha256"], sha256_of(crt2), "a clear entry")
    for n in (a, b, plain, other):
        n.close()


def base64_key(seed):
    import base64
    return base64.b64encode(bytes((seed * 7 + i) % 256 for i in range(32))).decode() + "\n"


def test_encryption_key_file_checked():
    """A key file that is not 32 bytes is refused at open, naming it."""
    s = setup()
    bad = key_file("bad", "too short\n")
    n = Node("badkey", [s["etcd"].url], PREFIX % h.free_port(), encryption_key=bad)
    rc = n.p.wait(timeout=10)
    h.eq(rc, 1, "test_store exit status")
    h.contains(n.stderr(), "storage.etcd.encryption_key %s: expected 32 bytes" % bad, "the error")


def test_meta_update_never_over_a_newer_certificate():
    """A node updating a certificate's meta (its renewal state) writes only
    over the version it read: after another node stored a new certificate,
    the update is refused and the new certificate stays."""
    (a, b), prefix = nodes()
    crt, key = leaf("meta.fleet.test")
    crt2, key2 = h.ca().leaf(["meta.fleet.test", "www.meta.fleet.test"])
    a.ok("save", name="meta.fleet.test", cert=crt, key=key, meta="{}")
    b.ok("save", name="meta.fleet.test", cert=crt2, key=key2, meta="{}")  # a renewal elsewhere
    r = a.do("save_over", name="meta.fleet.test", cert=crt, key=key,
             meta='{"renewal": {"failures": 1}}', expected=crt, expected_key=key)
    h.check(not r["ok"] and "replaced meanwhile" in r["err"], "stale meta update: %r" % r)
    h.eq(b.ok("load", name="meta.fleet.test")["sha256"], sha256_of(crt2), "the newer one stays")
    a.ok("save_over", name="meta.fleet.test", cert=crt2, key=key2,
         meta='{"renewal": {"failures": 1}}', expected=crt2, expected_key=key2)
    h.eq(json.loads(b.ok("load", name="meta.fleet.test")["meta"]), {"renewal": {"failures": 1}},
         "an update over the current one is stored")
    a.close()
    b.close()

if __name__ == "__main__":
    h.main()
