#!/usr/bin/env python3
"""test_fleet: three Gatehouse nodes sharing certificates, challenge records
and order locks through etcd (issue 15), end to end with real processes.

The fleet: nodes n1, n2, n3 on 127.0.0.2, .3 and .4 (each binds only its
own address, all on the same two ports), HAProxy in TCP mode on 127.0.0.1
at those ports balancing round robin over them, Pebble validating on the
same ports at 127.0.0.1 (pebble-challtestsrv answers 127.0.0.1 for every
name), so the CA's validator reaches whichever node HAProxy picks. The
nodes share one etcd member (a prefix of their own per test) or, in the
partition test, a 3-member cluster. Clients verify against Pebble's roots
and go through HAProxy, or straight to one node when the test needs it.

What it checks:
  * a burst of 200 new on-demand names, each asked by 3 clients at once
    through HAProxy: every handshake gets a certificate for exactly its
    name, and each name is ordered exactly once across the fleet (the
    nodes' "order ... started" lines and Pebble's issued certificates);
  * HTTP-01 and TLS-ALPN-01 challenges of an order placed by n1 are
    answered by n2 and n3 (HAProxy has n1 in maintenance, so the
    validator cannot reach the node that ordered);
  * a certificate one node obtains is installed on the other two through
    the watch (propagation p50/p99 from the logs, p99 under 1 s), and a
    renewal on one node replaces the serial on all three;
  * kill -9 of the node holding the lock mid-order (its DNS-01 hook held
    still): a node whose client waits takes over within the lease TTL
    plus one order; etcd ends with one whole certificate for the name;
  * SIGSTOP of the lock holder past its lease, then SIGCONT: another node
    completes, the late node's work is refused (lease expired, fence),
    and every node serves the one certificate the other node stored;
  * etcd stopped: stored names are served (1,000 handshakes, all good), a
    new name is refused at once without an order; etcd restarted: the
    fleet recovers without restarts (recovery time printed);
  * one member of a 3-member etcd cluster stopped (the leader): new names
    are still obtained and served by every node.

Figures (orders per name, burst time, propagation, recovery) are printed
on stdout as "# figure: ..." lines."""

import base64
import collections
import concurrent.futures
import datetime
import json
import math
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import pebble  # noqa: E402

h.TEST_TIMEOUT = 150.0  # the burst and the etcd outage take longer than most

ADDRS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def fleet_port():
    """A port free on 127.0.0.1 (HAProxy) and on every node's address."""
    import socket
    for _ in range(50):
        port = h.free_port()
        try:
            for a in ADDRS:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.bind((a, port))
                finally:
                    s.close()
            return port
        except OSError:
            continue
    raise h.Fail("no port free on every fleet address")


P_TLS = fleet_port()
P_HTTP = fleet_port()
NODES = ["n1", "n2", "n3"]
TOKEN = "fleet-admin-token"
WAIT = 30           # on_demand.wait_budget, seconds
LEASE_TTL = 5       # fleet.lease_ttl, seconds
HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fleet_dns_hook.sh")

ORDER_RX = re.compile(r"acme: order for (\S+) \(\d+ names?\) started")
OBTAINED_RX = re.compile(r"ondemand: (\S+): certificate obtained in")
INSTALLED_RX = re.compile(r"fleet: (\S+): certificate installed from the fleet")

_s = {}


def label():
    """A fresh DNS label: names and etcd prefixes of one test never meet
    another's."""
    return "t%d" % h.free_port()


# --- the shared fixtures: Pebble, HAProxy, the echo backend, etcd -----------

def pb():
    if "pebble" not in _s:
        _s["pebble"] = pebble.start(http_port=P_HTTP, tls_port=P_TLS)
    return _s["pebble"]


def lb():
    """HAProxy: 127.0.0.1:P_TLS and :P_HTTP -> the three nodes."""
    if "haproxy" not in _s:
        _s["haproxy"] = h.HAProxy({
            "127.0.0.1:%d" % P_TLS: ["%s:%d" % (a, P_TLS) for a in ADDRS],
            "127.0.0.1:%d" % P_HTTP: ["%s:%d" % (a, P_HTTP) for a in ADDRS]})
    return _s["haproxy"]


def echo():
    if "echo" not in _s:
        _s["echo"] = h.start_echo()
    return _s["echo"]


def etcd():
    if "etcd" not in _s:
        _s["etcd"] = h.Etcd()
    return _s["etcd"]


# --- the fleet ---------------------------------------------------------------

class Fleet:
    """Three nodes on a fresh etcd prefix. |challenges| for acme; with
    "dns-01" the nodes run fleet_dns_hook.sh, and only the nodes in
    |released| get past its "present" (the others hold their orders there
    until release(node)). |endpoints|: the etcd client URLs (the shared
    member by default); use_etcd=False gives plain directory stores."""

    def __init__(self, tag, challenges=("tls-alpn-01",), endpoints=None, use_etcd=True,
                 released=NODES, store_down="deny", on_demand=None, encryption_key=None,
                 managed=()):
        stop_fleet()
        _s["fleet"] = self  # stopped by the next test even if a node fails to start
        p, e = pb(), echo()
        lb()
        self.tag = tag
        self.prefix = "/gatehouse/%s/" % tag
        self.hook_dir = h.subdir("hooks-" + tag)
        for n in released:
            self.release(n)
        self.nodes = []
        self.admin_ports = []
        if use_etcd and endpoints is None:
            endpoints = [etcd().url]
        self.endpoints = endpoints
        for n, addr in zip(NODES, ADDRS):
            where = h.gatehouse_dir()
            admin_port = h.free_port()
            acme = {"directory": p.directory_url, "email": "ops@example.com",
                    "ca_roots": [p.ca_file], "challenges": list(challenges)}
            if "dns-01" in challenges:
                acme.update(dns_hook=HOOK, dns_resolvers=["127.0.0.1:%d" % p.dns_port],
                            dns_propagation_timeout="20s")
            storage = {"directory": os.path.join(where[1], "data")}
            if use_etcd:
                storage["etcd"] = {"endpoints": list(endpoints), "prefix": self.prefix,
                                   "timeout": "1s"}
                if encryption_key:
                    storage["etcd"]["encryption_key"] = encryption_key
            conf = {
                "listen": {"https": ["%s:%d" % (addr, P_TLS)], "http": ["%s:%d" % (addr, P_HTTP)]},
                "workers": 1,
                "sites": [h.site([m], [e], cert=None) for m in managed] +
                         [h.site(["*"], [e], cert=None, default=True)],
                "acme": acme,
                "on_demand": dict({"allow": ["*.fleet.test"], "wait_budget": "%ds" % WAIT,
                                   "rate_limits": {"global": "10000/1h",
                                                   "per_domain": "10000/1h",
                                                   "per_client_ip": "10000/1h"}},
                                  **(on_demand or {})),
                "storage": storage,
                "admin": {"listen": "127.0.0.1:%d" % admin_port, "token": TOKEN},
                "log": {"level": "debug", "access": "json"},
            }
            if use_etcd:
                conf["fleet"] = {"node": n, "lease_ttl": "%ds" % LEASE_TTL,
                                 "issue_when_store_down": store_down}
            env = {"CHALLTESTSRV_URL": "http://127.0.0.1:%d" % p.challtestsrv_port,
                   "FLEET_HOOK_DIR": self.hook_dir, "FLEET_NODE": n,
                   "CHALLTESTSRV_LOG": os.path.join(self.hook_dir, "calls-" + n)}
            g = h.run_config(conf, P_TLS, P_HTTP, where, host=addr, env=env)
            g.node = n
            g.admin_port = admin_port
            self.nodes.append(g)
            self.admin_ports.append(admin_port)
        for g in self.nodes:
            h.wait_until(lambda: h.port_accepts(g.admin_port), 10, "%s admin port" % g.node)

    # The hook's gate.
    def release(self, node):
        open(os.path.join(self.hook_dir, "release-" + node), "w").close()

    def wait_present(self, node, name, timeout=20):
        """Waits until |node|'s DNS-01 hook runs "present" for |name| (the
        node is mid-order, holding the lock)."""
        path = os.path.join(self.hook_dir, "present-%s-_acme-challenge.%s." % (node, name))
        h.wait_until(lambda: os.path.exists(path), timeout, "%s mid-order for %s" % (node, name))

    # What the logs say.
    def order_counts(self):
        """{node: Counter(name: number of "order for NAME ... started"
        lines)}, each log read once."""
        return {g.node: collections.Counter(ORDER_RX.findall(g.log())) for g in self.nodes}

    def orders(self, name):
        """{node: number of "order for NAME ... started" lines}."""
        return {n: c[name] for n, c in self.order_counts().items()}

    def owner(self, name):
        """The one node that ordered |name| (fails unless exactly one did)."""
        who = [g for g in self.nodes if self.orders(name)[g.node]]
        h.eq(len(who), 1, "nodes that ordered %s (%r)" % (name, self.orders(name)))
        return who[0]

    def total_orders(self, name):
        return sum(self.orders(name).values())

    def node(self, n):
        return self.nodes[NODES.index(n)]

    def stop(self):
        for g in self.nodes:
            if g.alive():
                g.signal(signal.SIGCONT)
                g.stop()
        _s.pop("fleet", None)

    # etcd, as the nodes see it.
    def ctl(self, *args):
        argv = [h.ETCDCTL, "--endpoints", ",".join(self.endpoints)] + list(args)
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30,
                              env=dict(os.environ, ETCDCTL_API="3"))

    def kvs(self, key, prefix=False):
        """[(key, value bytes)] under self.prefix + |key|."""
        args = ["get", self.prefix + key, "-w", "json"] + (["--prefix"] if prefix else [])
        r = self.ctl(*args)
        h.eq(r.returncode, 0, "etcdctl get %s (%s)" % (key, r.stderr.decode(errors="replace")))
        doc = json.loads(r.stdout)
        return [(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")))
                for kv in doc.get("kvs", [])]


def stop_fleet():
    f = _s.get("fleet")
    if f is not None:
        f.stop()


# --- clients -------------------------------------------------------------------

def sans(peer):
    return sorted(v for k, v in peer.get("subjectAltName", ()) if k == "DNS")


def fetch(name, host="127.0.0.1", timeout=WAIT + 5, request=True):
    """A verified TLS connection with SNI |name| to |host|:P_TLS (HAProxy
    by default), and a GET unless |request| is false. Returns (SANs of the
    served certificate, its serial as lowercase hex, HTTP status or None)."""
    c = h.Conn.tls(P_TLS, name, ctx=pb().client_context(), timeout=timeout, host=host)
    try:
        peer = c.sock.getpeercert()
        status = c.request("GET", "/fleet", name).status if request else None
    finally:
        c.close()
    return sans(peer), peer["serialNumber"].lower().lstrip("0"), status


def fetch_ok(name, host="127.0.0.1", timeout=WAIT + 5):
    """fetch(), requiring a certificate for exactly |name| and a 200."""
    s, serial, status = fetch(name, host, timeout)
    h.eq(s, [name], "SANs served for %s by %s" % (name, host))
    h.eq(status, 200, "status for %s by %s" % (name, host))
    return serial


def refused_at(name, host="127.0.0.1", timeout=10):
    """Asserts that a handshake for |name| at |host| fails; returns how
    long it took."""
    t0 = time.monotonic()
    try:
        h.Conn.tls(P_TLS, name, ctx=h.client_context(verify=False), timeout=timeout,
                   host=host).close()
    except (ssl.SSLError, OSError):
        return time.monotonic() - t0
    raise h.Fail("a handshake for %s at %s succeeded" % (name, host))


def in_parallel(fn, args, threads=16):
    """fn(arg) for every arg on a thread pool; returns {arg: result or the
    exception's repr}."""
    out = {}

    def one(a):
        try:
            return a, fn(a)
        except Exception as e:  # noqa: BLE001
            return a, "error: %r" % e
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        for a, r in ex.map(one, args):
            out[a] = r
    return out


def serial_at(name, host):
    """The serial |host| serves for |name|, or None if the handshake fails."""
    try:
        s, serial, _ = fetch(name, host, timeout=5, request=False)
        return serial if s == [name] else None
    except (ssl.SSLError, OSError):
        return None


# --- logs ----------------------------------------------------------------------------

_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z")


def first_times(g, rx):
    """{name: UTC time (epoch seconds) of the first line of |g|'s log that
    matches |rx|}, the name being the regex's group 1."""
    out = {}
    for line in g.log().splitlines():
        m = rx.search(line)
        if m and m.group(1) not in out:
            t = _TS.match(line)
            h.check(t, "no timestamp on %r" % line)
            out[m.group(1)] = datetime.datetime.strptime(
                t.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(
                    tzinfo=datetime.timezone.utc).timestamp()
    return out


def pebble_issued():
    """How many certificates Pebble says it issued so far."""
    return len(re.findall(r"Issued certificate serial", pb().proc.stdout()))


def percentile(values, p):
    """Nearest rank."""
    v = sorted(values)
    return v[min(len(v), max(1, math.ceil(p / 100.0 * len(v)))) - 1]


def figure(text):
    print("# figure: " + text)
    sys.stdout.flush()


# --- certificates in etcd ---------------------------------------------------------

def openssl(args, data):
    r = subprocess.run(["openssl"] + args, input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    h.eq(r.returncode, 0, "openssl %s (%s)" % (" ".join(args), r.stderr.decode(errors="replace")))
    return r.stdout


def stored_cert(f, name):
    """The certificate etcd holds for |name|: checks that there is exactly
    one key for it under certs/, that its value is {"chain", "key", "meta"},
    that the chain's leaf is for exactly |name| and verifies against
    Pebble's root, and that the key is the leaf's. Returns the leaf's
    serial (lowercase hex)."""
    kvs = [(k, v) for k, v in f.kvs("certs/", prefix=True)
           if k == f.prefix + "certs/" + name or k.startswith(f.prefix + "certs/" + name + "/")]
    h.eq([k for k, _ in kvs], [f.prefix + "certs/" + name], "keys in etcd for %s" % name)
    doc = json.loads(kvs[0][1])
    h.eq(sorted(doc), ["chain", "key", "meta"], "fields of the stored certificate")
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", doc["chain"],
                      re.S)
    h.check(pems, "no certificate in the stored chain")
    h.eq(h.cert_info_pem(pems[0])["sans"], [name], "SANs of the stored leaf")
    roots = pb().write_roots()
    inter = os.path.join(f.hook_dir, "chain-%s.pem" % name)
    with open(inter, "w") as fh:
        fh.write("\n".join(pems[1:]) + "\n")
    openssl(["verify", "-CAfile", roots, "-untrusted", inter], pems[0].encode())
    leaf_pub = openssl(["x509", "-noout", "-pubkey"], pems[0].encode())
    key_pub = openssl(["pkey", "-pubout"], doc["key"].encode())
    h.eq(key_pub, leaf_pub, "the stored key is the stored leaf's")
    serial = openssl(["x509", "-noout", "-serial"], pems[0].encode()).decode()
    return serial.strip().split("=", 1)[1].lower().lstrip("0")


def lock_holder(f, name):
    kvs = f.kvs("locks/" + name)
    return kvs[0][1].decode() if kvs else None


# --- the tests ---------------------------------------------------------------------

def test_burst_of_new_names_one_order_each():
    """200 new names, 3 clients each, all at once through HAProxy. The
    nodes seal private keys in etcd (storage.etcd.encryption_key): what
    they install from the watch they open."""
    tag = label()
    key = os.path.join(h.subdir("sealkey-" + tag), "key")
    with open(key, "w") as fh:
        fh.write("0123456789abcdef" * 4 + "\n")
    f = Fleet(tag, encryption_key=key)
    names = ["n%d-%s.fleet.test" % (i, tag) for i in range(200)]
    issued0 = pebble_issued()
    jobs = [(n, k) for n in names for k in range(3)]  # a name's 3 clients side by side
    t0 = time.monotonic()
    results = in_parallel(lambda j: fetch_ok(j[0]), jobs, threads=30)
    elapsed = time.monotonic() - t0
    bad = {j: r for j, r in results.items() if not isinstance(r, str) or r.startswith("error")}
    h.check(not bad, "%d of %d handshakes failed, e.g. %r" % (
        len(bad), len(jobs), list(bad.items())[:5]))
    # One serial per name: the 3 clients got the same certificate.
    per_name = {}
    for (n, _), serial in results.items():
        per_name.setdefault(n, set()).add(serial)
    multi = {n: s for n, s in per_name.items() if len(s) != 1}
    h.check(not multi, "names served with several certificates: %r" % list(multi.items())[:5])
    # Exactly one order line per name across the three logs.

    def totals():
        per_node = f.order_counts()
        return {n: sum(c[n] for c in per_node.values()) for n in names}, per_node
    h.wait_until(lambda: all(totals()[0].values()), 5, "an order line for every name")
    counts, per_node = totals()
    wrong = {n: c for n, c in counts.items() if c != 1}
    by_node = {node: sum(c[n] for n in names) for node, c in per_node.items()}
    issued = h.wait_until(lambda: pebble_issued() - issued0 >= 200 and pebble_issued() - issued0,
                          10, "Pebble to log 200 issued certificates")
    figure("burst: %d names x 3 clients = %d handshakes in %.1f s; orders per name: "
           "min %d max %d (total %d); orders by node %r; Pebble issued %d" % (
               len(names), len(jobs), elapsed, min(counts.values()), max(counts.values()),
               sum(counts.values()), by_node, issued))
    h.check(not wrong, "names not ordered exactly once: %r" % list(wrong.items())[:10])
    h.eq(issued, 200, "certificates Pebble issued for 200 names")
    for k, v in f.kvs("certs/", prefix=True):
        h.not_contains(v, b"PRIVATE KEY", "the entry %s in etcd" % k)
    f.stop()


def challenge_answered_by_others(challenge):
    """n1 orders (its clients come to it directly) while HAProxy keeps n1 in
    maintenance: the validator reaches only n2 and n3."""
    tag = label()
    f = Fleet(tag, challenges=(challenge,))
    ha = lb()
    bind = "127.0.0.1:%d" % (P_HTTP if challenge == "http-01" else P_TLS)
    ha.set_state(bind, 0, "maint")
    try:
        before = ha.sessions(bind)
        names = ["c%d-%s.fleet.test" % (i, tag) for i in range(3)]
        for n in names:
            fetch_ok(n, host=ADDRS[0])
            h.eq(f.orders(n), {"n1": 1, "n2": 0, "n3": 0}, "orders for %s" % n)
        after = ha.sessions(bind)
    finally:
        ha.set_state(bind, 0, "ready")
    got = [a - b for a, b in zip(after, before)]
    figure("%s: validation connections per node while n1 ordered 3 names: %r" % (challenge, got))
    h.eq(got[0], 0, "validation connections to n1 (in maintenance)")
    h.check(got[1] + got[2] >= 3, "validations reached n2/n3: %r" % got)
    f.stop()


def test_http01_answered_by_nodes_that_did_not_order():
    challenge_answered_by_others("http-01")


def test_tlsalpn01_answered_by_nodes_that_did_not_order():
    challenge_answered_by_others("tls-alpn-01")


def test_propagation_and_renewal():
    """40 names, each asked once through HAProxy (so one node orders it):
    the other two install it from the watch; p99 of (installed on node k) -
    (obtained on the ordering node) under 1 s. Then a renewal through one
    node's admin API replaces the serial on all three."""
    tag = label()
    f = Fleet(tag, challenges=("http-01",))
    names = ["p%d-%s.fleet.test" % (i, tag) for i in range(40)]
    results = in_parallel(fetch_ok, names, threads=8)
    bad = {n: r for n, r in results.items() if r.startswith("error")}
    h.check(not bad, "failed: %r" % list(bad.items())[:5])

    owners = {n: f.owner(n) for n in names}

    def installed_everywhere():
        inst = {g.node: first_times(g, INSTALLED_RX) for g in f.nodes}
        return all(n in inst[g.node] for n in names for g in f.nodes if g is not owners[n])
    h.wait_until(installed_everywhere, 10, "every name installed on the two other nodes",
                 interval=0.2)
    obtained = {g.node: first_times(g, OBTAINED_RX) for g in f.nodes}
    installed = {g.node: first_times(g, INSTALLED_RX) for g in f.nodes}
    delays = []
    for n in names:
        owner = owners[n]
        t_ok = obtained[owner.node].get(n)
        h.check(t_ok is not None, "%s: no 'certificate obtained' line for %s" % (owner.node, n))
        for g in f.nodes:
            if g is not owner:
                delays.append(installed[g.node][n] - t_ok)
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    figure("propagation over %d installs (%d names): p50 %.0f ms, p99 %.0f ms, max %.0f ms" % (
        len(delays), len(names), p50 * 1000, p99 * 1000, max(delays) * 1000))
    h.check(p99 < 1.0, "propagation p99 %.3f s" % p99)
    # Every node serves the same certificate, with no order of its own.
    for n in names[:5]:
        serials = {a: fetch_ok(n, host=a) for a in ADDRS}
        h.eq(len(set(serials.values())), 1, "serials of %s across nodes: %r" % (n, serials))
        h.eq(f.total_orders(n), 1, "orders for %s after asking every node" % n)

    # Renewal through the admin API of the node that ordered the name.
    n = names[0]
    old = fetch_ok(n, host=ADDRS[0])
    owner = owners[n]
    status, body = admin(owner.admin_port, "POST", "/certs/%s/renew" % n)
    h.eq(status, 202, "POST /certs/%s/renew (%r)" % (n, body[:300]))
    t0 = time.monotonic()
    for a in ADDRS:
        h.wait_until(lambda: serial_at(n, a) not in (None, old), 20,
                     "%s to serve the renewed certificate of %s" % (a, n), interval=0.1)
    figure("renewal: all three nodes served the new serial %.2f s after the renew call" % (
        time.monotonic() - t0))
    serials = {a: serial_at(n, a) for a in ADDRS}
    h.eq(len(set(serials.values())), 1, "serials after the renewal: %r" % serials)
    h.eq(f.total_orders(n), 2, "orders for %s (issue + one renewal)" % n)
    h.eq(stored_cert(f, n), serials[ADDRS[0]], "the renewed certificate is the stored one")
    f.stop()


def admin(port, method, path):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=h.IO_TIMEOUT * 3)
    try:
        c.request(method, path, headers={"Authorization": "Bearer " + TOKEN})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def background(fn, *args):
    """Runs fn(*args) on a thread; returns a dict that gets "result" (or
    "error") and "elapsed", and the thread."""
    out = {}

    def run():
        t0 = time.monotonic()
        try:
            out["result"] = fn(*args)
        except Exception as e:  # noqa: BLE001
            out["error"] = repr(e)
        out["elapsed"] = time.monotonic() - t0
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return out, t


def test_kill9_of_the_lock_holder_mid_order():
    tag = label()
    f = Fleet(tag, challenges=("dns-01",), released=["n2", "n3"])
    a, b, c = f.nodes
    name = "k-%s.fleet.test" % tag
    _, ta = background(fetch, name, ADDRS[0])
    f.wait_present("n1", name)
    h.eq(lock_holder(f, name), "n1", "lock holder while n1 is mid-order")
    size_b = b.log_size()
    rb, tb = background(fetch_ok, name, ADDRS[1], WAIT + 10)
    b.wait_log(r"fleet: %s: ordered by another node; waiting for its certificate"
               % re.escape(name), since=size_b, timeout=10)
    t_kill = time.monotonic()
    a.signal(signal.SIGKILL)
    h.eq(a.wait_exit(10), -signal.SIGKILL, "exit of the killed node")
    h._procs.remove(a)  # this death is the point of the test
    tb.join(LEASE_TTL + 25)
    took = time.monotonic() - t_kill
    figure("kill -9: the waiting node served %s %.2f s after the lock holder was killed "
           "(lease TTL %d s)" % (name, took, LEASE_TTL))
    h.check("result" in rb, "the client waiting on n2: %r" % rb)
    h.check(took < LEASE_TTL + 20, "took %.1f s after the kill" % took)
    h.eq(f.orders(name), {"n1": 1, "n2": 1, "n3": 0}, "orders for %s" % name)
    serial = stored_cert(f, name)
    h.eq(rb["result"], serial, "n2 serves the stored certificate")
    h.check(lock_holder(f, name) in (None, "n2"), "lock after: %r" % lock_holder(f, name))
    h.wait_until(lambda: serial_at(name, ADDRS[2]) == serial, 10, "n3 to serve it")
    ta.join(5)
    f.stop()


def test_sigstop_of_the_lock_holder_past_its_lease():
    tag = label()
    f = Fleet(tag, challenges=("dns-01",), released=["n2", "n3"])
    a, b, c = f.nodes
    name = "s-%s.fleet.test" % tag
    _, ta = background(fetch, name, ADDRS[0], WAIT + 30)
    f.wait_present("n1", name)
    h.eq(lock_holder(f, name), "n1", "lock holder while n1 is mid-order")
    a.signal(signal.SIGSTOP)
    t_stop = time.monotonic()
    try:
        rb, tb = background(fetch_ok, name, ADDRS[1], WAIT + 10)
        tb.join(LEASE_TTL + 25)
        took = time.monotonic() - t_stop
        figure("SIGSTOP: n2 served %s %.2f s after the lock holder stopped (lease TTL %d s)"
               % (name, took, LEASE_TTL))
        h.check("result" in rb, "the client waiting on n2: %r" % rb)
        serial = stored_cert(f, name)
        h.eq(rb["result"], serial, "n2 serves the stored certificate")
        h.eq(f.orders(name)["n2"], 1, "n2 ordered %s once" % name)
        h.check(lock_holder(f, name) in (None, "n2"), "lock: %r" % lock_holder(f, name))
    finally:
        size_a = a.log_size()
        f.release("n1")           # n1's order goes on where it stopped ...
        a.signal(signal.SIGCONT)  # ... with its lease gone
    late = a.wait_log(r"(?m)^.*(not stored: this node's lock on it \(revision \d+\) is gone"
                      r"|%s.*lease|lease.*%s).*$" % (re.escape(name), re.escape(name)),
                      since=size_a, timeout=20)
    a.wait_log(r"fleet: node n1: lease \S+ expired; its locks are lost", timeout=10)
    figure("SIGSTOP: n1's late work after SIGCONT: %s" % late.group(0).strip())
    # n1 comes back into the fleet and serves what n2 stored, without an
    # order of its own after the one it was stopped in.
    h.wait_until(lambda: serial_at(name, ADDRS[0]) == serial, 20, "n1 to serve n2's certificate",
                 interval=0.1)
    h.eq(f.orders(name)["n1"], 1, "n1's orders for %s (the one it was stopped in)" % name)
    h.eq(stored_cert(f, name), serial, "the stored certificate is still n2's")
    for addr in ADDRS:
        h.eq(serial_at(name, addr), serial, "serial served by %s" % addr)
    h.not_contains(a.log_since(size_a), "ondemand: %s: certificate obtained" % name,
                   "n1's log after SIGCONT")
    ta.join(5)
    f.stop()


def test_etcd_down_stored_names_served_new_refused_then_recovery():
    tag = label()
    f = Fleet(tag)
    e = etcd()
    names = ["d%d-%s.fleet.test" % (i, tag) for i in range(10)]
    results = in_parallel(fetch_ok, names, threads=10)
    h.check(not [r for r in results.values() if r.startswith("error")], "setup: %r" % results)
    for n in names:
        for g in f.nodes:
            h.wait_until(lambda: f.orders(n)[g.node] or re.search(
                r"fleet: %s: certificate installed from the fleet" % re.escape(n), g.log()),
                10, "%s on %s" % (n, g.node))
    sizes = [g.log_size() for g in f.nodes]
    e.stop()
    try:
        for g, size in zip(f.nodes, sizes):
            g.wait_log(r"fleet: etcd unreachable \(", since=size, timeout=15)
        # 1,000 handshakes over the stored names, through HAProxy.
        t0 = time.monotonic()
        res = in_parallel(lambda i: fetch(names[i % len(names)], request=False)[0],
                          range(1000), threads=16)
        dt = time.monotonic() - t0
        good = sum(1 for i, r in res.items() if r == [names[i % len(names)]])
        figure("etcd down: %d of 1000 handshakes on stored names served (%.1f s)" % (good, dt))
        h.eq(good, 1000, "handshakes served while etcd is down (e.g. %r)" % [
            r for r in res.values() if isinstance(r, str)][:3])
        # A new name: refused at once, no order, by every node.
        for i, (g, addr) in enumerate(zip(f.nodes, ADDRS)):
            new = "new%d-%s.fleet.test" % (i, tag)
            took = refused_at(new, host=addr)
            h.check(took < 2.0, "refusal of %s took %.2f s" % (new, took))
            g.wait_log(r"(?m)^.*%s.*refused:.*etcd.*$" % re.escape(new), timeout=5)
            h.eq(f.total_orders(new), 0, "orders for %s" % new)
    finally:
        e.start_again()
    t_back = time.monotonic()
    # Recovery: a fresh name each try (a refused one may be remembered).
    tries = [0]

    def new_name_served():
        tries[0] += 1
        n = "r%d-%s.fleet.test" % (tries[0], tag)
        try:
            return fetch_ok(n, timeout=WAIT)
        except (ssl.SSLError, OSError, h.Fail):
            return None
    h.wait_until(new_name_served, 30, "a new name served after etcd came back", interval=0.1)
    recovery = time.monotonic() - t_back
    for g, size in zip(f.nodes, sizes):
        g.wait_log(r"fleet: etcd reachable again at ", since=size, timeout=20)
    figure("etcd down/up: first new name served %.2f s after etcd was healthy again "
           "(%d tries)" % (recovery, tries[0]))
    for i, addr in enumerate(ADDRS):
        fetch_ok("after%d-%s.fleet.test" % (i, tag), host=addr)
    for g in f.nodes:
        h.check(g.alive(), "%s still running" % g.node)
    # The outage is counted once per node in its metrics, and over.
    for g in f.nodes:
        status, body = admin(g.admin_port, "GET", "/metrics")
        h.eq(status, 200, "%s /metrics" % g.node)
        text = body.decode()
        m = re.search(r"^gatehouse_fleet_store_outages_total (\d+)$", text, re.M)
        h.check(m and int(m.group(1)) >= 1, "%s counted the outage: %r" % (g.node, m))
        h.contains(text, "\ngatehouse_fleet_store_up 1\n", "%s: etcd up again" % g.node)
    f.stop()


def test_one_member_of_three_stopped():
    if "cluster" not in _s:
        _s["cluster"] = h.EtcdCluster(3)
    cl = _s["cluster"]
    tag = label()
    f = Fleet(tag, endpoints=cl.urls)
    fetch_ok("before-%s.fleet.test" % tag)
    # Stop the leader: the other two elect a new one.
    r = cl.ctl("endpoint", "status", "-w", "json")
    h.eq(r.returncode, 0, "etcdctl endpoint status (%s)" % r.stderr.decode(errors="replace"))
    status = json.loads(r.stdout)
    leader = [s["Endpoint"] for s in status
              if s["Status"]["leader"] == s["Status"]["header"]["member_id"]]
    h.eq(len(leader), 1, "one leader in %r" % status)
    i = cl.urls.index(leader[0])
    cl.stop(i)
    try:
        names = ["m%d-%s.fleet.test" % (k, tag) for k in range(6)]
        t0 = time.monotonic()
        results = in_parallel(fetch_ok, names, threads=6)
        dt = time.monotonic() - t0
        bad = {n: r for n, r in results.items() if r.startswith("error")}
        h.check(not bad, "with member %d stopped: %r" % (i + 1, bad))
        figure("etcd cluster with the leader (member n%d) stopped: %d new names in %.1f s"
               % (i + 1, len(names), dt))
        for n in names:
            h.eq(f.total_orders(n), 1, "orders for %s" % n)
            for addr in ADDRS:
                h.wait_until(lambda: serial_at(n, addr) == results[n], 10,
                             "%s to serve %s" % (addr, n))
    finally:
        cl.start(i)
    fetch_ok("after-%s.fleet.test" % tag)
    f.stop()



def test_store_down_local_orders_alone_then_shares():
    """fleet.issue_when_store_down "local": with etcd down a node orders a
    new name alone (the validator reaches it: HAProxy has the others in
    maintenance) and keeps it locally; once etcd is back it gives it to
    the fleet, and the other nodes serve it without ordering."""
    tag = label()
    f = Fleet(tag, store_down="local")
    ha, e = lb(), etcd()
    fetch_ok("warm-%s.fleet.test" % tag)
    sizes = [g.log_size() for g in f.nodes]
    name = "alone-%s.fleet.test" % tag
    binds = ["127.0.0.1:%d" % P_TLS, "127.0.0.1:%d" % P_HTTP]
    e.stop()
    try:
        for b in binds:
            ha.set_state(b, 1, "maint")
            ha.set_state(b, 2, "maint")
        n1 = f.node("n1")
        serial = fetch_ok(name, host=ADDRS[0])
        n1.wait_log(r"fleet: certificate %s: etcd unreachable .*stored locally only" %
                    re.escape(name), since=sizes[0], timeout=5)
        h.eq(f.orders(name), {"n1": 1, "n2": 0, "n3": 0}, "orders while etcd is down")
    finally:
        for b in binds:
            ha.set_state(b, 1, "ready")
            ha.set_state(b, 2, "ready")
        e.start_again()
    n1.wait_log(r"fleet: certificate %s, stored while etcd was down: now shared" %
                re.escape(name), since=sizes[0], timeout=30)
    for addr in ADDRS[1:]:
        h.wait_until(lambda: serial_at(name, addr) == serial, 15, "%s to serve %s" % (addr, name))
    h.eq(f.total_orders(name), 1, "orders for %s after etcd came back" % name)
    f.stop()


def test_fleet_shares_domain_limit_and_refusals():
    """on_demand.rate_limits.per_domain is a budget for the whole fleet, not
    for each node: 6 names of one registered domain asked 2 per node, with
    per_domain 3/1h, get exactly 3 certificates. A name refused on one
    node is refused on the others too, at once and without an order."""
    tag = label()
    f = Fleet(tag, on_demand={"rate_limits": {"global": "10000/1h", "per_domain": "3/1h",
                                              "per_client_ip": "10000/1h"}})
    names = ["q%d-%s.fleet.test" % (i, tag) for i in range(6)]
    got = {}
    for i, n in enumerate(names):
        try:
            got[n] = fetch_ok(n, host=ADDRS[i % 3], timeout=15)
        except (ssl.SSLError, OSError):
            got[n] = None
    served = [n for n in names if got[n]]
    figure("per_domain 3/1h over 3 nodes: %d of 6 names served" % len(served))
    h.eq(len(served), 3, "names served under a fleet-wide per_domain of 3 (%r)" % got)
    refused = [n for n in names if not got[n]]
    logs = "".join(g.log() for g in f.nodes)
    h.contains(logs, "across the fleet", "a refusal by the fleet-wide limit")
    # The refusal of one node is every node's: no order, at once.
    n = refused[0]
    for g in f.nodes:
        h.wait_until(lambda: n in g.log(), 5, "%s heard of %s" % (g.node, n))
    orders_before = f.total_orders(n)
    for addr in ADDRS:
        took = refused_at(n, host=addr)
        h.check(took < 2.0, "refusal of %s at %s took %.2f s" % (n, addr, took))
    h.eq(f.total_orders(n), orders_before, "no new order for the refused %s" % n)
    f.stop()


def etcd_ranges(e):
    """etcd's count of range (read) requests so far, from its /metrics."""
    import urllib.request
    body = urllib.request.urlopen(e.url + "/metrics", timeout=5).read().decode()
    m = re.search(r"^etcd_debugging_mvcc_range_total (\S+)$", body, re.M)
    h.check(m, "etcd_debugging_mvcc_range_total in etcd's metrics")
    return float(m.group(1))


def test_hostile_challenge_misses_and_junk_records():
    """A client that asks for challenges nobody published (1,000 HTTP-01
    tokens, hostile ones among them, and TLS-ALPN-01 handshakes for
    unknown names) gets 404s and failed handshakes, and the reads they
    cause in etcd stay within the reader's budget (50 a second). Junk that
    someone wrote under the prefix (a certificate entry that is not one, a
    challenge record for a bad name) is logged and skipped; the node keeps
    serving."""
    tag = label()
    f = Fleet(tag)
    e = etcd()
    good = "ok-%s.fleet.test" % tag
    fetch_ok(good)
    g = f.node("n1")
    before = etcd_ranges(e)
    t0 = time.monotonic()
    tokens = ["A" * 43, "../../etc/passwd", "%00", "x" * 300, "a/b", "tok%2F..%2Fx"]
    tokens += ["t%04dabcdefghijklmnopqrstuvwxyz0123456789ABCD" % i for i in range(994)]
    statuses = collections.Counter()
    c = h.Conn.plain(P_HTTP, host=ADDRS[0])
    for tok in tokens:
        r = c.request("GET", "/.well-known/acme-challenge/" + tok, good)
        statuses[r.status] += 1
    c.close()
    for i in range(50):
        ctx = h.client_context(verify=False, alpn=["acme-tls/1"])
        try:
            h.Conn.tls(P_TLS, "nope%d-%s.fleet.test" % (i, tag), ctx=ctx, timeout=5,
                       host=ADDRS[0]).close()
        except (ssl.SSLError, OSError):
            pass
    dt = time.monotonic() - t0
    reads = etcd_ranges(e) - before
    figure("hostile misses: %d requests + 50 acme-tls/1 handshakes in %.1f s caused %d etcd "
           "reads" % (len(tokens), dt, reads))
    h.eq(dict(statuses), {404: len(tokens)}, "answers to unknown challenge tokens")
    h.check(reads <= 50 * (math.ceil(dt) + 1) + 20, "etcd reads %d in %.1f s" % (reads, dt))
    # Junk under the prefix.
    size = g.log_size()
    r = f.ctl("put", f.prefix + "certs/junk-%s.fleet.test" % tag, '{"chain": "nope"}')
    h.eq(r.returncode, 0, "etcdctl put")
    r = f.ctl("put", f.prefix + "challenges/tls-alpn-01/" + "Bad..Name", "x")
    h.eq(r.returncode, 0, "etcdctl put")
    r = f.ctl("put", f.prefix + "challenges/tls-alpn-01/x-%s.fleet.test" % tag, "")
    h.eq(r.returncode, 0, "etcdctl put")
    g.wait_log(r"corrupt certificate entry skipped", since=size, timeout=10)
    fetch_ok(good, host=ADDRS[0])
    for node in f.nodes:
        h.check(node.alive(), "%s still running" % node.node)
    f.stop()


def test_reload_with_a_bad_encryption_key_is_refused():
    """A reload whose storage.etcd.encryption_key file does not hold 32
    bytes is refused, naming the file, and the node keeps serving."""
    tag = label()
    f = Fleet(tag)
    name = "rl-%s.fleet.test" % tag
    fetch_ok(name)
    g = f.node("n1")
    bad = os.path.join(h.subdir("badkey-" + tag), "key")
    with open(bad, "w") as fh:
        fh.write("short\n")
    conf = json.loads(json.dumps(g.config))
    conf["storage"]["etcd"]["encryption_key"] = bad
    size = g.log_size()
    g.write_config(conf)
    g.reload()
    g.wait_log(r"reload refused.*storage.etcd.encryption_key %s: expected 32 bytes" %
               re.escape(bad), since=size, timeout=10)
    fetch_ok(name, host=ADDRS[0])
    fetch_ok("rl2-%s.fleet.test" % tag, host=ADDRS[0])
    f.stop()


def test_managed_site_ordered_once_by_the_fleet():
    """Three nodes given the same managed site at once (a reload on each):
    one orders its certificate, the other two wait for it (no error) and
    install it from the watch; all three serve the same serial."""
    tag = label()
    name = "site-%s.fleet.test" % tag
    f = Fleet(tag)
    # All three up first (the validator must find every node listening),
    # then the site added everywhere at once by a reload.
    sizes = []
    for g in f.nodes:
        conf = json.loads(json.dumps(g.config))
        conf["sites"].insert(0, h.site([name], [echo()], cert=None))
        g.write_config(conf)
        sizes.append(g.log_size())
    for g in f.nodes:
        g.reload()
    for g, size in zip(f.nodes, sizes):
        g.wait_log(r"configuration reloaded", since=size, timeout=10)
    serials = {}
    for addr in ADDRS:
        h.wait_until(lambda: serial_at(name, addr), 30, "%s to serve %s" % (addr, name))
        serials[addr] = serial_at(name, addr)
    h.eq(len(set(serials.values())), 1, "one certificate on every node: %r" % serials)
    h.eq(f.total_orders(name), 1, "orders for the managed site")
    for g in f.nodes:
        bad = re.findall(r"(?m)^\S+ (?:warn|error) .*locked by another.*$", g.log())
        h.eq(bad, [], "warnings or errors about the lock in %s's log" % g.node)
    f.stop()

if __name__ == "__main__":
    h.main()
