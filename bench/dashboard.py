#!/usr/bin/env python3
"""dashboard.py: what watching the dashboard costs the traffic, Gatehouse
against HAProxy and its stats page.

Run through bench/dashboard, which builds the binaries and passes their
paths. Each proxy gets one worker thread, pinned with its whole process to
CPU 0; the load (wrk, HTTPS keep-alive through the proxy to gh_echo), the
backend and this script (the watcher) share CPU 1. For each round, each
target, in alternating order:

  quiet     wrk alone for S seconds: requests/s
  watched   wrk again while a watcher refreshes the status page in a loop,
            as fast as it can (no 5 s pause: the worst a page can do):
            Gatehouse's dashboard refresh is its five API requests
            (/health, /certs, /acme, /ondemand, /upstreams) with the bearer
            token; HAProxy's is its stats page (stats uri, HTML) - each on
            one keep-alive connection

Reported, as medians over the rounds: requests/s quiet and watched and
their ratio (how much of the traffic a busy watcher costs), refreshes/s,
the median time of one refresh, and the proxy's CPU per refresh (its CPU
in the watched run beyond what that run's requests cost at the quiet
run's rate, per refresh) beside its CPU per proxied request. The
ratios are what to compare; a real dashboard refreshes every 5 s.

Writes raw figures to bench/results/dashboard-<timestamp>.json. Standard
library only; 127.0.0.1 only; every run is bounded in time."""
import argparse
import datetime
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import harness as h  # noqa: E402

TOKEN = "bench-dashboard-token"
TARGETS = ("gatehouse", "haproxy")


def pin(pid, cpu):
    subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)], check=True,
                   stdout=subprocess.DEVNULL)


def cpu_s(pid):
    """utime + stime of process |pid|, all its threads, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port, seconds, conns):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds,
                          "https://127.0.0.1:%d/" % port], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=seconds + 60).stdout.decode()
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError("wrk: no Requests/sec in:\n" + out)


class Watcher(threading.Thread):
    """Refreshes a status page in a loop until stopped: each refresh is
    |paths| requested in turn on one keep-alive connection."""

    def __init__(self, port, paths, headers):
        super().__init__(daemon=True)
        self.port, self.paths, self.headers = port, paths, headers
        self.stop = threading.Event()
        self.times = []
        self.bytes = 0
        self.error = None

    def run(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                for p in self.paths:
                    c.request("GET", p, headers=self.headers)
                    r = c.getresponse()
                    body = r.read()
                    if r.status != 200:
                        raise RuntimeError("GET %s: %d" % (p, r.status))
                    self.bytes += len(body)
                self.times.append(time.perf_counter() - t0)
        except Exception as e:  # reported by the caller
            self.error = e
        finally:
            c.close()


def start_gatehouse(echo, cert, workers):
    admin = h.free_port()
    site = h.site(["bench.test"], [echo], cert=cert, default=True)
    g = h.start_gatehouse([site], workers=workers,
                          admin={"listen": "127.0.0.1:%d" % admin, "token": TOKEN},
                          log={"level": "warn"})
    watch = (admin, ["/health", "/certs", "/acme", "/ondemand", "/upstreams"],
             {"Host": "127.0.0.1:%d" % admin, "Authorization": "Bearer " + TOKEN})
    return g, g.https_port, watch


def start_haproxy(echo, cert, workers):
    d = h.subdir("haproxy-%d" % h.free_port())
    combined = os.path.join(d, "combined.pem")
    with open(combined, "w") as f:
        f.write(open(cert[0]).read() + open(cert[1]).read())
    port, stats = h.free_port(), h.free_port()
    conf = f"""
global
  nbthread {workers}
  maxconn 9000
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  timeout http-request 300s
frontend fe
  bind 127.0.0.1:{port} ssl crt {combined} alpn http/1.1
  default_backend be
backend be
  http-reuse always
  server echo {echo.addr}
listen stats
  bind 127.0.0.1:{stats}
  stats enable
  stats uri /
  stats refresh 5s
"""
    path = os.path.join(d, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(conf)
    p = h.Proc("haproxy", ["haproxy", "-db", "-f", path])
    h.check_ready(p, [port, stats])
    watch = (stats, ["/"], {"Host": "127.0.0.1:%d" % stats})
    return p, port, watch


def measure(name, echo, cert, seconds, conns):
    start = start_gatehouse if name == "gatehouse" else start_haproxy
    proc, port, (wport, paths, headers) = start(echo, cert, 1)
    try:
        pin(proc.pid, 0)
        wrk(port, 1, conns)  # warm-up: sessions, pools
        c0 = cpu_s(proc.pid)
        quiet = wrk(port, seconds, conns)
        c1 = cpu_s(proc.pid)
        w = Watcher(wport, paths, headers)
        w.start()
        t0 = time.monotonic()
        watched = wrk(port, seconds, conns)
        w.stop.set()
        w.join(30)
        span = time.monotonic() - t0
        c2 = cpu_s(proc.pid)
        # The proxy's CPU beyond what the watched run's requests cost at
        # the quiet run's rate: what the refreshes took.
        per_req = (c1 - c0) / (quiet * seconds)
        extra = (c2 - c1) - per_req * watched * seconds
        if w.error is not None:
            raise RuntimeError("%s watcher: %s" % (name, w.error))
        return {"quiet_rps": quiet, "watched_rps": watched, "ratio": watched / quiet,
                "refreshes_per_s": len(w.times) / span,
                "refresh_ms_median": statistics.median(w.times) * 1000 if w.times else None,
                "refresh_bytes": w.bytes / max(len(w.times), 1),
                # The proxy is saturated in both runs: what a refresh takes
                # from it, in requests it could have served instead.
                "requests_lost_per_refresh": (quiet - watched) / (len(w.times) / span)
                if w.times else None,
                "proxy_cpu_us_per_refresh": extra / len(w.times) * 1e6 if w.times else None,
                "proxy_cpu_us_per_request": per_req * 1e6}
    finally:
        proc.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gatehouse", required=True)
    ap.add_argument("--echo", required=True)
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", "6")))
    ap.add_argument("--conns", type=int, default=32)
    a = ap.parse_args()
    os.environ["GATEHOUSE_BIN"] = a.gatehouse
    os.environ["GH_ECHO_BIN"] = a.echo
    h.GATEHOUSE_BIN, h.ECHO_BIN = a.gatehouse, a.echo
    os.sched_setaffinity(0, {1})
    echo = h.start_echo()
    pin(echo.pid, 1)
    cert = h.ca().leaf(["bench.test"])
    rounds = []
    for r in range(a.rounds):
        order = TARGETS if r % 2 == 0 else tuple(reversed(TARGETS))
        res = {}
        for name in order:
            res[name] = measure(name, echo, cert, a.seconds, a.conns)
            print("round %d %s: %s" % (r + 1, name, json.dumps(res[name])), file=sys.stderr)
        rounds.append(res)
    med = {t: {k: statistics.median(x[t][k] for x in rounds) for k in rounds[0][t]}
           for t in TARGETS}
    print("| target | quiet req/s | watched req/s | watched/quiet | refreshes/s | one refresh (median) | bytes per refresh | proxy CPU per refresh | per request |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t in TARGETS:
        m = med[t]
        print("| %s | %.0f | %.0f | %.3f | %.0f | %.2f ms | %.0f | %.0f us | %.1f us |" % (
            t, m["quiet_rps"], m["watched_rps"], m["ratio"], m["refreshes_per_s"],
            m["refresh_ms_median"], m["refresh_bytes"], m["proxy_cpu_us_per_refresh"],
            m["proxy_cpu_us_per_request"]))
    g, hp = med["gatehouse"], med["haproxy"]
    print("\nGatehouse/HAProxy: quiet req/s %.2f, watched req/s %.2f, refreshes/s %.2f"
          % (g["quiet_rps"] / hp["quiet_rps"], g["watched_rps"] / hp["watched_rps"],
             g["refreshes_per_s"] / hp["refreshes_per_s"]))
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    stamp = datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")
    with open(os.path.join(HERE, "results", "dashboard-%s.json" % stamp), "w") as f:
        json.dump({"rounds": rounds, "medians": med, "seconds": a.seconds, "conns": a.conns,
                   "machine": platform.platform(), "cpus": os.cpu_count()}, f, indent=1)


if __name__ == "__main__":
    main()
