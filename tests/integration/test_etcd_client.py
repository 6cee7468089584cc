"""test_etcd_client.py: acme/etcd.h (the etcd v3 JSON-gateway client) against
real etcd 3.4 members started here, through the test_etcd driver
(tests/acme/etcd_driver.c: one JSON command a line in, one JSON answer out).

Covers KV with binary values and prefix bounds, the order lock
(create_if_absent) and fenced writes (put_if), leases (keepalive, expiry,
revoke deleting bound keys), watch (order of events, compaction), endpoint
rotation past a dead port and past a silent one (timeout), TLS with a
private CA and client certificates, and username/password auth."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, eq, contains, wait_until, Fail  # noqa: E402

DRIVER = harness._find_bin("TEST_ETCD_BIN", os.path.join("tests", "acme", "test_etcd"))


def h(b):
    return (b.encode() if isinstance(b, str) else b).hex()


Etcd = harness.Etcd


class Client(harness.LineDriver):
    """The driver: do(op, **args) sends one command and returns the answer."""

    def __init__(self, endpoints, *opts):
        super().__init__("test_etcd", [DRIVER, "--endpoints", ",".join(endpoints)] + list(opts))


_etcd = None


def etcd():
    global _etcd
    if _etcd is None:
        _etcd = Etcd()
    return _etcd


def client(*opts, endpoints=None):
    return Client(endpoints or [etcd().url], *opts)


def test_kv_binary_and_prefix():
    c = client()
    val = bytes(range(256))
    c.ok("put", k=h("a/x"), v=val.hex())
    c.ok("put", k=h(b"a/\xff\x00"), v="")
    c.ok("put", k=h("a0"), v=h("sibling"))
    c.ok("put", k=h("a."), v=h("before"))
    g = c.ok("get", k=h("a/x"))
    check(g["found"], "a/x found")
    eq(g["v"], val.hex(), "binary value")
    check(int(g["mod"]) >= int(g["create"]) > 0, "revisions %r" % g)
    eq(c.ok("get", k=h("a/none"))["found"], False, "absent key")
    lst = c.ok("list", k=h("a/"))
    eq(sorted(kv["k"] for kv in lst["kvs"]), sorted([h("a/x"), h(b"a/\xff\x00")]),
       "a/ lists its keys, not a0 or a.")
    check(int(lst["rev"]) >= int(g["mod"]), "list revision")
    # A prefix ending in 0xff: range_end increments the byte before it.
    eq([kv["k"] for kv in c.ok("list", k=h(b"a/\xff"))["kvs"]], [h(b"a/\xff\x00")], "0xff prefix")
    d = c.ok("delete", k=h("a/"), prefix=True)
    eq(d["deleted"], "2", "deleted under a/")
    eq(c.ok("get", k=h("a0"))["v"], h("sibling"), "a0 survives")
    eq(c.ok("delete", k=h("a0"))["deleted"], "1", "single delete")
    c.close()


def test_lock_and_fenced_write():
    c = client()
    lease = c.ok("grant", ttl=30)["id"]
    first = c.ok("create", k=h("lock/n1"), v=h("node-a"), lease=lease)
    check(first["created"], "first create_if_absent creates")
    rev = first["rev"]
    # A repeat by the same holder (same lease and value) counts as ours.
    eq(c.ok("create", k=h("lock/n1"), v=h("node-a"), lease=lease)["created"], True, "own repeat")
    second = c.ok("create", k=h("lock/n1"), v=h("node-b"))
    eq(second["created"], False, "second create refused")
    eq(second["rev"], rev, "the refusal names the holder's revision")
    eq(c.ok("put_if", k=h("cert/n1"), v=h("v1"), guard=h("lock/n1"), guard_rev=rev)["done"], True,
       "put_if with the current guard")
    eq(c.ok("get", k=h("cert/n1"))["v"], h("v1"), "fenced write landed")
    eq(c.ok("put_if", k=h("cert/n1"), v=h("stale"), guard=h("lock/n1"),
            guard_rev=str(int(rev) - 1))["done"], False, "stale guard refused")
    # Revoking the lease deletes the lock; the old token fences the write.
    c.ok("revoke", id=lease)
    eq(c.ok("get", k=h("lock/n1"))["found"], False, "lock gone with its lease")
    eq(c.ok("put_if", k=h("cert/n1"), v=h("late"), guard=h("lock/n1"), guard_rev=rev)["done"],
       False, "write after the lock ended refused")
    eq(c.ok("get", k=h("cert/n1"))["v"], h("v1"), "value unchanged by refused writes")
    c.ok("revoke", id=lease)  # already gone: still fine
    c.close()


def test_lease_keepalive_and_expiry():
    c = client()
    g = c.ok("grant", ttl=2)
    lease = g["id"]
    eq(g["ttl"], "2", "granted TTL")
    c.ok("put", k=h("presence/a"), v=h("up"), lease=lease)
    end = time.monotonic() + 4
    while time.monotonic() < end:  # twice the TTL, kept alive
        ttl = int(c.ok("keepalive", id=lease)["ttl"])
        check(ttl > 0, "keepalive TTL %d" % ttl)
        time.sleep(0.5)
    eq(c.ok("get", k=h("presence/a"))["found"], True, "key alive while kept alive")
    # Stop: the lease expires and takes the key with it.
    wait_until(lambda: not c.ok("get", k=h("presence/a"))["found"], 10, "lease expiry",
               interval=0.2)
    eq(c.ok("keepalive", id=lease)["ttl"], "0", "keepalive of an expired lease")
    c.close()


def test_watch_order():
    c = client()
    base = int(c.ok("put", k=h("w/seed"), v=h("0"))["rev"])
    c.ok("watch", k=h("w/"), rev=str(base + 1))
    eq(c.ok("next", timeout=200)["result"], "timeout", "nothing yet")
    w = client()
    w.ok("put", k=h("w/a"), v=h("1"))
    w.ok("put", k=h("wx"), v=h("outside"))
    w.ok("put", k=h("w/b"), v="00ff")
    w.ok("delete", k=h("w/a"))
    w.close()
    got = []
    deadline = time.monotonic() + 10
    while len(got) < 3 and time.monotonic() < deadline:
        r = c.ok("next", timeout=1000)
        check(r["result"] in ("events", "timeout"), "next: %r" % r)
        got += r["events"]
    eq([(e["type"], e["k"], e["v"]) for e in got],
       [("PUT", h("w/a"), h("1")), ("PUT", h("w/b"), "00ff"), ("DELETE", h("w/a"), "")],
       "events in order, wx not included")
    mods = [int(e["mod"]) for e in got]
    eq(mods, sorted(mods), "mod revisions increase")
    eq(int(r["resume"]), mods[-1] + 1, "resume revision")
    c.ok("unwatch")
    c.close()


def test_watch_compacted():
    c = client()
    r1 = int(c.ok("put", k=h("cw/a"), v=h("1"))["rev"])
    r2 = int(c.ok("put", k=h("cw/a"), v=h("2"))["rev"])
    r = etcd().ctl("compact", str(r2))
    eq(r.returncode, 0, "etcdctl compact: %s" % r.stderr)
    c.ok("watch", k=h("cw/"), rev=str(r1))
    n = c.ok("next", timeout=2000)
    eq(n["result"], "compacted", "watch from a compacted revision")
    eq(n["rev"], str(r2), "compact revision")
    eq(c.ok("next", timeout=10)["result"], "compacted", "stays compacted")
    c.close()


def test_rotation_past_dead_endpoint():
    dead = harness.free_port()
    c = client(endpoints=["http://127.0.0.1:%d" % dead, etcd().url])
    c.ok("put", k=h("rot/a"), v=h("x"))  # never sent to the dead one: rotated
    eq(c.ok("get", k=h("rot/a"))["v"], h("x"), "read after rotation")
    eq(c.ok("endpoint")["endpoint"], etcd().url, "the live endpoint stays current")
    c.close()
    # Only dead endpoints: a clear error naming each.
    c = client(endpoints=["http://127.0.0.1:%d" % dead])
    r = c.do("get", k=h("rot/a"))
    check(not r["ok"], "get from a dead endpoint fails")
    contains(r["err"], "127.0.0.1:%d" % dead, "error names the endpoint")
    contains(r["err"], "connect", "error says what failed")
    c.close()


def test_timeout_rotates():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    port = lsock.getsockname()[1]
    held = []

    def silent():
        while True:
            try:
                s, _ = lsock.accept()
            except OSError:
                return
            held.append(s)  # reads nothing back, answers nothing

    threading.Thread(target=silent, daemon=True).start()
    try:
        c = client("--timeout", "500", endpoints=["http://127.0.0.1:%d" % port, etcd().url])
        r = c.ok("get", k=h("to/a"))
        check(500 <= int(r["ms"]) < 500 + 1500, "silent endpoint cost %s ms" % r["ms"])
        eq(c.ok("endpoint")["endpoint"], etcd().url, "rotated to the live endpoint")
        c.close()
        c = client("--timeout", "400", endpoints=["http://127.0.0.1:%d" % port])
        r = c.do("get", k=h("to/a"))
        check(not r["ok"], "a silent endpoint alone fails")
        check(int(r["ms"]) < 400 + 1000, "failed within the timeout: %s ms" % r["ms"])
        contains(r["err"], "timed out", "timeout error")
        contains(r["err"], "127.0.0.1:%d" % port, "names the endpoint")
        c.close()
    finally:
        lsock.close()
        for s in held:
            s.close()


def server_and_client_leaf(ca):
    """A leaf for 127.0.0.1 with both serverAuth and clientAuth: etcd 3.4's
    gateway dials its own gRPC server with --cert-file as the client
    certificate, so with --client-cert-auth the server's certificate must
    also be good for clients (else the gateway answers 503)."""
    d = ca.dir
    key, csr, crt, ext = (os.path.join(d, "etcd-srv" + x) for x in (".key", ".csr", ".pem", ".ext"))
    harness._run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                  "ec_paramgen_curve:P-256", "-out", key])
    harness._run(["openssl", "req", "-new", "-key", key, "-subj", "/CN=etcd", "-out", csr])
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1\n")
    harness._run(["openssl", "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key,
                  "-set_serial", "0x" + os.urandom(12).hex(), "-days", "3", "-sha256",
                  "-extfile", ext, "-out", crt])
    return crt, key


def test_tls_mtls():
    ca = harness.ca()
    cert, key = server_and_client_leaf(ca)
    ccert, ckey = ca.leaf(["client"], client=True)
    e = Etcd(tls=(cert, key, ca.cert, ccert, ckey))
    c = Client([e.url], "--ca", ca.cert, "--cert", ccert, "--key", ckey)
    c.ok("put", k=h("tls/a"), v=h("secure"))
    eq(c.ok("get", k=h("tls/a"))["v"], h("secure"), "read over mTLS")
    c.ok("watch", k=h("tls/"), rev="1")
    eq(c.ok("next", timeout=2000)["events"][0]["v"], h("secure"), "watch over mTLS")
    c.close()
    other = harness.CA("Other CA")
    c = Client([e.url], "--ca", other.cert, "--cert", ccert, "--key", ckey)
    r = c.do("get", k=h("tls/a"))
    check(not r["ok"], "a wrong CA fails")
    contains(r["err"], "certificate", "says the certificate was rejected")
    contains(r["err"], e.url, "names the endpoint")
    c.close()
    c = Client([e.url], "--ca", ca.cert)  # no client certificate
    check(not c.do("get", k=h("tls/a"))["ok"], "no client certificate fails")
    c.close()
    e.stop()


def test_auth():
    e = Etcd()
    for args in (["user", "add", "root:pw"], ["auth", "enable"]):
        r = e.ctl(*args)
        eq(r.returncode, 0, "etcdctl %s: %s" % (" ".join(args), r.stderr))
    c = Client([e.url], "--user", "root", "--password", "pw")
    c.ok("put", k=h("auth/a"), v=h("1"))
    eq(c.ok("get", k=h("auth/a"))["v"], h("1"), "read with a token")
    c.ok("watch", k=h("auth/"), rev="1")
    eq(len(c.ok("next", timeout=2000)["events"]), 1, "watch with a token")
    c.close()
    c = Client([e.url], "--user", "root", "--password", "wrong")
    r = c.do("get", k=h("auth/a"))
    check(not r["ok"], "a wrong password fails")
    contains(r["err"], "authentication failed", "etcd's reason")
    contains(r["err"], e.url, "names the endpoint")
    c.close()
    c = Client([e.url])
    r = c.do("get", k=h("auth/a"))
    check(not r["ok"], "no credentials fail")
    contains(r["err"], "user name", "etcd's reason")
    c.close()
    e.stop()


if __name__ == "__main__":
    harness.main()
