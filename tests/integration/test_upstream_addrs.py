#!/usr/bin/env python3
"""Every address of an upstream name (issue 14).

An upstream named by DNS name expands to every address it resolves to;
each is an endpoint with its own health, balanced across; a failed
endpoint (or a whole address family) costs no 502 and no timeout; a
backend that moved is re-dialled at its new address.

How names are made: the tests run as root on Linux, so each Gatehouse runs
in its own mount namespace (`unshare --mount`) with a private hosts file
bind-mounted over /etc/hosts; glibc reads /etc/hosts on every lookup
(nsswitch "files dns", host.conf "multi on" returns every line of a name).
The test rewrites that file in place (the bind mount follows the inode).
No LD_PRELOAD, no resolver of our own, nothing outside the namespace
changes. Backends are gh_echo on 127.0.0.2.. and ::1, all on one port."""
import http.client
import json
import os
import time

import harness as h


def hosts_file(lines):
    path = os.path.join(h.subdir(h._next_name("hosts")), "hosts")
    write_hosts(path, lines)
    return path


def write_hosts(path, lines):
    with open(path, "w") as f:  # in place: the bind mount follows the inode
        f.write("127.0.0.1 localhost\n" + "".join("%s\n" % l for l in lines))


def gatehouse_in_ns(hosts, site, **extra):
    name = h._next_name("gatehouse-addrs")
    cwd = h.subdir(name)
    https_port, http_port = h.free_port(), h.free_port()
    conf = h.make_config([site], https_port, http_port, **extra)
    path = os.path.join(cwd, "gatehouse.json")
    with open(path, "w") as f:
        json.dump(conf, f)
    argv = ["unshare", "--mount", "sh", "-c",
            'mount --bind "$0" /etc/hosts && exec "$1" run -c "$2"', hosts, h.GATEHOUSE_BIN, path]
    return h.Gatehouse(argv, name, cwd, https_port, http_port, config_path=path, config=conf)


def echo_at(ip, port):
    """gh_echo on |ip|:|port| (an IPv6 literal without brackets)."""
    listen = "[%s]:%d" % (ip, port) if ":" in ip else "%s:%d" % (ip, port)
    p = h.Proc(h._next_name("echo"), [h.ECHO_BIN, "--listen", listen])
    h.check_ready(p, [port], host=ip)
    return p


def requests_at(ip, port):
    c = h.Conn.plain(port, host=ip)
    try:
        host = "[%s]:%d" % (ip, port) if ":" in ip else "%s:%d" % (ip, port)
        return c.request("GET", "/stats", host).json()["requests"]
    finally:
        c.close()


TOKEN = "addrs-admin-token"


def metrics(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=h.IO_TIMEOUT)
    try:
        c.request("GET", "/metrics", headers={"Host": "127.0.0.1:%d" % port,
                                              "Authorization": "Bearer " + TOKEN})
        r = c.getresponse()
        h.eq(r.status, 200, "GET /metrics")
        return r.read().decode("utf-8")
    finally:
        c.close()


def endpoint_line(port, ip, up):
    return 'gatehouse_upstream_endpoint_healthy{upstream="backend.test:%d",address="%s:%d"} %d' % (
        port, ip, port, up)


def site(name, port, **kw):
    s = h.site([name], ["%s:%d" % ("backend.test", port)], **kw)
    s["fail_backoff"] = "1s"
    return s


def test_every_address_used_and_failover():
    port = h.free_port()
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    echoes = {ip: echo_at(ip, port) for ip in ips}
    hosts = hosts_file(["%s backend.test" % ip for ip in ips])
    admin_port = h.free_port()
    g = gatehouse_in_ns(hosts, site("multi.test", port),
                        admin={"listen": "127.0.0.1:%d" % admin_port, "token": TOKEN})
    text = metrics(admin_port)
    for ip in ips:
        h.contains(text, endpoint_line(port, ip, 1), "endpoint metric")
    before = {ip: requests_at(ip, port) for ip in ips}
    for i in range(30):
        h.eq(g.get("multi.test", "/b%d" % i).status, 200, "request %d" % i)
    # Our /stats requests count themselves: one before, one now.
    got = {ip: requests_at(ip, port) - before[ip] - 1 for ip in ips}
    h.eq(sum(got.values()), 30, "requests over the three endpoints")
    for ip in ips:
        h.check(got[ip] >= 5, "every endpoint gets requests: %r" % got)
    # One backend stops: every request still succeeds (the failed connect
    # is retried on another endpoint, the endpoint is backed off).
    echoes["127.0.0.3"].stop()
    for i in range(20):
        h.eq(g.get("multi.test", "/down%d" % i).status, 200, "request %d with one down" % i)

    def seen_down():  # the back-off is 1s: look right after requests
        for i in range(3):
            h.eq(g.get("multi.test", "/m%d" % i).status, 200, "request while scraping")
        text = metrics(admin_port)
        return endpoint_line(port, "127.0.0.3", 0) in text and endpoint_line(
            port, "127.0.0.2", 1) in text
    h.wait_until(seen_down, 15, "the stopped endpoint to show as down in /metrics", interval=0.1)
    # It comes back, and is used again once its back-off (1s) is over.
    echo_at("127.0.0.3", port)
    base = requests_at("127.0.0.3", port)

    def used_again():
        h.eq(g.get("multi.test", "/back").status, 200, "request while it comes back")
        return requests_at("127.0.0.3", port) > base + 1
    h.wait_until(used_again, 15, "the restarted endpoint to get requests again", interval=0.1)


def test_failed_family_costs_no_timeout():
    port = h.free_port()
    echo_at("::1", port)  # IPv6 up; the IPv4 address has no backend
    hosts = hosts_file(["127.0.0.5 backend.test", "::1 backend.test"])
    g = gatehouse_in_ns(hosts, site("dual.test", port),
                        timeouts={"upstream_connect": "10s"})
    for i in range(20):
        t0 = time.monotonic()
        r = g.get("dual.test", "/d%d" % i)
        dt = time.monotonic() - t0
        h.eq(r.status, 200, "request %d" % i)
        h.check(dt < 2.0, "request %d took %.2fs (a connect timeout?)" % (i, dt))


def test_backend_moved():
    port = h.free_port()
    first = echo_at("127.0.0.6", port)
    hosts = hosts_file(["127.0.0.6 backend.test"])
    g = gatehouse_in_ns(hosts, site("moved.test", port), workers=1)
    h.eq(g.get("moved.test", "/one").status, 200, "at the first address")
    echo_at("127.0.0.7", port)
    first.stop()
    write_hosts(hosts, ["127.0.0.7 backend.test"])
    # Lookups after a failure are at most once a second per name: let the
    # last one (at start) age past that, as it would between real moves.
    time.sleep(1.2)
    before = requests_at("127.0.0.7", port)
    r = g.get("moved.test", "/moved")
    h.eq(r.status, 200, "the first request after the move")
    h.eq(requests_at("127.0.0.7", port) - before - 1, 1, "served at the new address")
    g.wait_log(r"upstream backend\.test:%d: now at 127\.0\.0\.7:%d" % (port, port))


def test_hostile_names():
    """A name that resolves to nothing answers 502 at once; one with 64
    addresses uses the first 32 endpoints (PX_MAX_ENDPOINTS) and works."""
    port = h.free_port()
    hosts = hosts_file(["127.0.1.%d backend.test" % i for i in range(1, 65)])
    echo_at("127.0.1.1", port)
    g = gatehouse_in_ns(hosts, site("many.test", port))
    ok = 0
    for i in range(40):
        ok += g.get("many.test", "/m%d" % i).status == 200
    h.check(ok >= 1, "some requests reach the one live endpoint")
    g.wait_log(r"backend\.test:%d: 32 more addresses than the 32 endpoints used" % port)
    nothing = hosts_file([])
    g2 = gatehouse_in_ns(nothing, site("none.test", port))
    g2.wait_log(r"upstream backend\.test:%d: cannot resolve" % port)
    t0 = time.monotonic()
    h.eq(g2.get("none.test", "/x").status, 502, "a name without addresses")
    h.check(time.monotonic() - t0 < 5, "answered without waiting")


if __name__ == "__main__":
    h.main()
