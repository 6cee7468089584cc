#!/usr/bin/env python3
"""ondemand.py: on-demand certificate issuance, Gatehouse against Caddy.

Run through bench/ondemand, which builds the binaries and passes their
paths. Each target gets its own fresh Pebble (PEBBLE_VA_NOSLEEP=1), because
Pebble validates TLS-ALPN-01 on one fixed port: the target's https port.
Targets run one after the other; the order alternates over rounds. For each
round, each target:

  A. Pebble without nonce rejection, a fresh target (empty storage):
     one warm-up name (ACME account registration, not counted), then
     - sequential: N never-seen names, one at a time: time from the
       ClientHello to the complete HTTP response (and a second request for
       the same name, a plain full handshake, for comparison)
     - crowd: C never-seen names at once: wall time until every client got
       its 200 or failed (deadline 180 s), and the failures
     - refused: hsload full-handshake bursts for a name outside the allow
       list and for a name the ask endpoint refuses: handshakes/s and proxy
       CPU per refused handshake (utime+stime of the proxy's processes)
  B. A fresh Pebble with PEBBLE_WFE_NONCEREJECT=50, a fresh target: warm-up
     name, then N sequential never-seen names again (ratio to A).

Both targets: TLS-ALPN-01 only, ECDSA P-256 keys, the same ask endpoint
(a Python http.server thread in this process, HTTP/1.1 keep-alive), the
same gh_echo backend, 2 cores. Clients verify the served chain against
Pebble's issuing root and the name, so a 200 means a certificate really
obtained from that Pebble for that name.

Prints a Markdown table (with Gatehouse/Caddy ratios) and writes raw
figures to bench/results/ondemand-<timestamp>.json. Standard library only;
127.0.0.1 only; every wait has a deadline.
"""
import argparse
import datetime
import http.server
import json
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, HERE)
import bench as B  # noqa: E402  (proc_tree, cpu_seconds, machine_busy_seconds)
import harness as h  # noqa: E402
import pebble  # noqa: E402

TARGETS = ("gatehouse", "caddy")
DOMAIN = "od.test"                 # allowed: *.od.test (Gatehouse allow + ask)
OUTSIDE = "x.outside.test"         # outside the allow list (ask refuses it too)
REFUSED = "refused.od.test"        # inside the allow list, refused by ask
CROWD_DEADLINE = 180.0
NAME_TIMEOUT = 60.0


def log(msg):
    print("[ondemand] " + msg, file=sys.stderr, flush=True)


# --- the ask endpoint ----------------------------------------------------------

class Ask:
    """GET /check?domain=D: 200 for *.od.test except refused.od.test, else
    403. Counts queries (the bench reads the count around each phase)."""

    def __init__(self):
        outer = self
        self.queries = 0
        self.lock = threading.Lock()

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive for clients that reuse

            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                dom = q.get("domain", [""])[0]
                with outer.lock:
                    outer.queries += 1
                ok = dom.endswith("." + DOMAIN) and dom != REFUSED
                self.send_response(200 if ok else 403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        class Server(http.server.ThreadingHTTPServer):
            # socketserver's default listen backlog is 5: a burst of ask
            # queries on new connections overflows it, and the dropped SYNs
            # come back only after the 1 s retransmission timeout.
            request_queue_size = 1024
            daemon_threads = True

        self.srv = Server(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/check" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def count(self):
        with self.lock:
            return self.queries

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


# --- targets ---------------------------------------------------------------------

class Target:
    def __init__(self, name, proc, https_port, http_port, d):
        self.name, self.proc, self.https_port, self.http_port, self.dir = (
            name, proc, https_port, http_port, d)

    def pids(self):
        return B.proc_tree(self.proc.pid)

    def stop(self):
        self.proc.stop()


def start_gatehouse(args, d, peb, ask, backend, https_port, http_port):
    conf = {
        "listen": {"https": ["127.0.0.1:%d" % https_port], "http": ["127.0.0.1:%d" % http_port]},
        "workers": 2,
        "sites": [{"hosts": ["*"], "upstreams": [backend], "default": True}],
        "acme": {"directory": peb.directory_url, "email": "ops@example.com",
                 "ca_roots": [peb.ca_file], "challenges": ["tls-alpn-01"], "key_type": "p256"},
        "on_demand": {"allow": ["*." + DOMAIN], "ask": ask.url, "wait_budget": "60s",
                      "rate_limits": {"global": "1000/1h", "per_domain": "1000/1h",
                                      "per_client_ip": "1000/1h"}},
        "storage": os.path.join(d, "storage"),
        "log": {"level": os.environ.get("ONDEMAND_GATEHOUSE_LOG", "warn"), "access": "off"},
    }
    path = os.path.join(d, "gatehouse.json")
    with open(path, "w") as f:
        json.dump(conf, f, indent=1)
    return [args.gatehouse, "run", "-c", path], {}


def start_caddy(args, d, peb, ask, backend, https_port, http_port):
    # Caddy 2.6: on_demand_tls { ask } in the global options, a catch-all
    # https:// site with tls { on_demand }. The one issuer is ACME with
    # acme_ca / acme_ca_root / email; cert_issuer acme only adds
    # disable_http_challenge, so that TLS-ALPN-01 is the only challenge, as
    # for Gatehouse (and there is no ZeroSSL fallback issuer).
    conf = """{
	admin off
	http_port %(http)d
	https_port %(https)d
	default_bind 127.0.0.1
	skip_install_trust
	email ops@example.com
	acme_ca %(dir)s
	acme_ca_root %(ca)s
	key_type p256
	cert_issuer acme {
		disable_http_challenge
	}
	storage file_system {
		root %(d)s/data
	}
	on_demand_tls {
		ask %(ask)s
		interval 1h
		burst 1000
	}
	log {
		level %(level)s
	}
}

https:// {
	tls {
		on_demand
	}
	reverse_proxy %(backend)s
}
""" % {"http": http_port, "https": https_port, "dir": peb.directory_url, "ca": peb.ca_file,
       "d": d, "ask": ask.url, "backend": backend,
       "level": os.environ.get("ONDEMAND_CADDY_LOG", "ERROR")}
    path = os.path.join(d, "Caddyfile")
    with open(path, "w") as f:
        f.write(conf)
    env = {"XDG_DATA_HOME": d, "XDG_CONFIG_HOME": d, "HOME": d}
    return ["caddy", "run", "--adapter", "caddyfile", "--config", path], env


STARTERS = {"gatehouse": start_gatehouse, "caddy": start_caddy}


def start_target(args, name, tag, peb, ask, backend, https_port, http_port):
    d = h.subdir("%s-%s" % (name, tag))
    argv, env = STARTERS[name](args, d, peb, ask, backend, https_port, http_port)
    proc = h.Proc("%s-%s" % (name, tag), argv, cwd=d, env=env)
    # Caddy's catch-all https:// site gets no HTTP redirect listener.
    h.check_ready(proc, [https_port, http_port] if name == "gatehouse" else [https_port])
    return Target(name, proc, https_port, http_port, d)


# --- clients -------------------------------------------------------------------------

def request(port, name, ctx, timeout):
    """TCP connect, then (timed) the TLS handshake with SNI |name| verified
    against |ctx| and one GET through to the backend. Returns (seconds from
    the ClientHello to the end of the response, status)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    # Without this the GET waits behind the unacknowledged client Finished
    # (Nagle) for the server's delayed ACK: 40 ms more on every request.
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        t0 = time.monotonic()
        tls = ctx.wrap_socket(s, server_hostname=name)  # sends the ClientHello
        c = h.Conn(tls)
        r = c.request("GET", "/", name, headers=[("Connection", "close")], timeout=timeout)
        return time.monotonic() - t0, r.status
    finally:
        s.close()


def one_name(port, name, ctx, timeout=NAME_TIMEOUT):
    try:
        dt, status = request(port, name, ctx, timeout)
        return {"name": name, "s": dt, "status": status}
    except Exception as e:  # noqa: BLE001
        return {"name": name, "error": repr(e)[:300]}


def sequential(port, names, ctx):
    out = []
    for n in names:
        r = one_name(port, n, ctx)
        if "error" not in r:
            again = one_name(port, n, ctx)  # the certificate is stored now
            r["again_s"] = again.get("s")
        out.append(r)
    return out


def crowd(port, names, ctx):
    results = [None] * len(names)
    start = threading.Event()
    t0 = [0.0]
    deadline = [0.0]

    def client(i):
        start.wait()
        r = one_name(port, names[i], ctx, timeout=max(1.0, deadline[0] - time.monotonic()))
        r["done_at"] = time.monotonic() - t0[0]
        results[i] = r
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(len(names))]
    for t in threads:
        t.start()
    t0[0] = time.monotonic()
    deadline[0] = t0[0] + CROWD_DEADLINE
    start.set()
    for t in threads:
        t.join(max(0.0, deadline[0] + 5 - time.monotonic()))
    wall = time.monotonic() - t0[0]
    ok = [r for r in results if r and r.get("status") == 200]
    failed = [r if r else {"error": "no answer within %.0f s" % CROWD_DEADLINE}
              for r in results if not (r and r.get("status") == 200)]
    done = [r["done_at"] for r in results if r]
    return {"n": len(names), "wall_s": max(done) if len(done) == len(names) else wall,
            "ok": len(ok), "failures": len(failed),
            "errors": ["%s: %s" % (f.get("name"), f.get("error") or f.get("status"))
                       for f in failed][:10],
            "latencies_s": sorted(r["s"] for r in ok)}


def wait_quiet(pids, limit=10.0):
    """Waits (at most |limit| s) until others use less than 0.2 of a core."""
    start = time.time()
    while time.time() - start < limit:
        m0, o0, t0 = B.machine_busy_seconds(), B.cpu_seconds(pids), time.time()
        time.sleep(0.5)
        other = (B.machine_busy_seconds() - m0 - (B.cpu_seconds(pids) - o0)) / (time.time() - t0)
        if other < 0.2:
            break
    return time.time() - start


def refused_burst(args, tgt, ask, sni):
    """A first refused handshake (Gatehouse caches the refusal), then hsload
    full handshakes for |sni| for args.refused_seconds."""
    hs = [args.hsload, "handshake", "--connect", "127.0.0.1:%d" % tgt.https_port, "--sni", sni,
          "--concurrency", str(args.refused_concurrency)]
    subprocess.run(hs + ["--duration", "0.3"], capture_output=True, timeout=30)
    # How long a refused client waits for its alert (one at a time).
    lat = []
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", tgt.https_port), timeout=10)
        t0 = time.monotonic()
        try:
            ctx.wrap_socket(s, server_hostname=sni).close()
        except (ssl.SSLError, OSError):
            lat.append(time.monotonic() - t0)
        finally:
            s.close()
    pids = tgt.pids()
    waited = wait_quiet(pids + [os.getpid()])
    q0, p0, m0, t0 = ask.count(), B.cpu_seconds(pids), B.machine_busy_seconds(), time.time()
    c0 = B.children_cpu()
    r = subprocess.run(hs + ["--duration", str(args.refused_seconds)], capture_output=True,
                       text=True, timeout=args.refused_seconds + 60)
    wall = time.time() - t0
    proxy = B.cpu_seconds(pids) - p0
    client = B.children_cpu() - c0
    other = B.machine_busy_seconds() - m0 - proxy - client
    try:
        res = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "hsload: " + (r.stdout + r.stderr)[-300:]}
    n = res.get("fail", 0)
    res.update({"refused": n, "succeeded": res.get("ok", 0),
                "refused_per_s": n / res["seconds"] if res.get("seconds") else None,
                "cpu_s": proxy, "cpu_us_per_refused": proxy * 1e6 / n if n else None,
                "ask_queries": ask.count() - q0, "client_cpu_share": client / wall,
                "other_cpu_share": max(0.0, other / wall), "waited_for_quiet_s": waited})
    for k in ("p50_ms", "p99_ms", "rate"):  # of successful handshakes: none here
        res.pop(k, None)
    res["alert_median_ms"] = med(lat) * 1e3 if lat else None
    return res


# --- one round of one target ---------------------------------------------------------

def names_for(prefix, rnd, tname, n):
    return ["%s%d-r%d-%s.%s" % (prefix, i, rnd, tname[0], DOMAIN) for i in range(n)]


def phase(args, tname, rnd, ask, backend, nonce, body):
    """Fresh Pebble (nonce rejection |nonce| %) on fresh ports and a fresh
    target; runs body(target, ctx) -> dict; stops both."""
    https_port, http_port = h.free_port(), h.free_port()
    peb = pebble.start(http_port=http_port, tls_port=https_port, nonce_reject=nonce)
    tgt = None
    try:
        ctx = ssl.create_default_context(cafile=peb.write_roots())
        tag = "r%d-n%d" % (rnd, nonce)
        try:
            tgt = start_target(args, tname, tag, peb, ask, backend, https_port, http_port)
        except h.Fail as e:
            return {"error": "did not start: %s" % str(e)[-400:]}
        out = {}
        t = time.time()
        w = one_name(https_port, "warmup-r%d-%s-n%d.%s" % (rnd, tname[0], nonce, DOMAIN), ctx)
        out["warmup"] = w
        out.update(body(tgt, ctx))
        out["phase_s"] = time.time() - t
        if not tgt.proc.alive():
            out["error"] = "exited during the phase: %s" % tgt.proc.tail(10)[-400:]
        return out
    finally:
        if tgt is not None:
            tgt.stop()
        peb.stop()


def bench_target(args, tname, rnd, ask, backend):
    res = {}

    def main_phase(tgt, ctx):
        out = {}
        log("%s r%d: %d sequential new names" % (tname, rnd + 1, args.names))
        out["sequential"] = sequential(tgt.https_port, names_for("s", rnd, tname, args.names), ctx)
        log("%s r%d: %d new names at once" % (tname, rnd + 1, args.crowd))
        out["crowd"] = crowd(tgt.https_port, names_for("c", rnd, tname, args.crowd), ctx)
        for key, sni in (("refused_outside", OUTSIDE), ("refused_ask", REFUSED)):
            log("%s r%d: refused handshakes for %s, %.0f s" % (tname, rnd + 1, sni,
                                                               args.refused_seconds))
            out[key] = refused_burst(args, tgt, ask, sni)
        return out
    res["base"] = phase(args, tname, rnd, ask, backend, 0, main_phase)

    def nonce_phase(tgt, ctx):
        log("%s r%d: %d sequential new names, PEBBLE_WFE_NONCEREJECT=%d" % (
            tname, rnd + 1, args.nonce_names, args.nonce_reject))
        return {"sequential": sequential(tgt.https_port,
                                         names_for("b", rnd, tname, args.nonce_names), ctx)}
    res["nonce"] = phase(args, tname, rnd, ask, backend, args.nonce_reject, nonce_phase)
    return res


# --- report -----------------------------------------------------------------------------

def pct(vals, p):
    if not vals:
        return None
    v = sorted(vals)
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def med(vals):
    vals = [v for v in vals if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None


def summarize(rounds, targets):
    s = {}
    for t in targets:
        per = [r["results"].get(t, {}) for r in rounds]
        base = [p.get("base", {}) for p in per]
        nonce = [p.get("nonce", {}) for p in per]
        seq = [x for b in base for x in b.get("sequential", [])]
        seq_ok = [x["s"] for x in seq if x.get("status") == 200]
        again = [x["again_s"] for x in seq if x.get("again_s") is not None]
        nseq = [x for b in nonce for x in b.get("sequential", [])]
        nseq_ok = [x["s"] for x in nseq if x.get("status") == 200]
        crowds = [b["crowd"] for b in base if "crowd" in b]
        d = {
            "first_median_s": med(seq_ok), "first_p90_s": pct(seq_ok, 90),
            "first_n": len(seq_ok), "first_failures": len(seq) - len(seq_ok),
            "stored_median_s": med(again),
            "warmup_s": [b.get("warmup", {}).get("s") for b in base],
            "crowd_wall_s": med([c["wall_s"] for c in crowds]),
            "crowd_wall_all_s": [c["wall_s"] for c in crowds],
            "crowd_failures": sum(c["failures"] for c in crowds),
            "crowd_clients": sum(c["n"] for c in crowds),
            "crowd_median_client_s": med([med(c["latencies_s"]) for c in crowds]),
            "crowd_served_per_s": med([c["ok"] / c["wall_s"] for c in crowds if c["wall_s"]]),
            "nonce_median_s": med(nseq_ok), "nonce_p90_s": pct(nseq_ok, 90),
            "nonce_n": len(nseq_ok), "nonce_failures": len(nseq) - len(nseq_ok),
        }
        d["nonce_ratio"] = (d["nonce_median_s"] / d["first_median_s"]
                            if d["nonce_median_s"] and d["first_median_s"] else None)
        for key in ("refused_outside", "refused_ask"):
            runs = [b[key] for b in base if key in b and "error" not in b[key]]
            d[key + "_per_s"] = med([x["refused_per_s"] for x in runs])
            d[key + "_cpu_us"] = med([x["cpu_us_per_refused"] for x in runs])
            d[key + "_ask_per_hs"] = med([x["ask_queries"] / x["refused"] for x in runs
                                          if x["refused"]])
            d[key + "_succeeded"] = sum(x["succeeded"] for x in runs)
            d[key + "_alert_ms"] = med([x.get("alert_median_ms") for x in runs])
        s[t] = d
    return s


def fmt(v, f):
    return "n/a" if v is None else f.format(v)


def ratio(a, b):
    return "%.2fx" % (a / b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b \
        else "n/a"


def report(summary, targets, args, started, n_rounds):
    g = summary.get("gatehouse", {})
    c = summary.get("caddy", {})
    rows = [
        ("new name: ClientHello → response, median s", "first_median_s", "{:.3f}", "≤ 0.20x"),
        ("new name: p90 s", "first_p90_s", "{:.3f}", ""),
        ("stored name (same name again), median s", "stored_median_s", "{:.4f}", ""),
        ("%d new names at once: wall s (median of rounds)" % args.crowd, "crowd_wall_s",
         "{:.2f}", "< 0.10x"),
        ("%d new names at once: failures (all rounds)" % args.crowd, "crowd_failures", "{:d}",
         "0"),
        ("%d new names at once: median client's wait s" % args.crowd, "crowd_median_client_s",
         "{:.2f}", ""),
        ("%d new names at once: names served per s (200s ÷ wall)" % args.crowd,
         "crowd_served_per_s", "{:.1f}", ""),
        ("new name, nonce rejection %d%%: median s" % args.nonce_reject, "nonce_median_s",
         "{:.3f}", ""),
        ("nonce rejection slowdown (÷ no rejection)", "nonce_ratio", "{:.2f}x",
         "Gatehouse ≤ 1.5x"),
        ("refused, outside allow list: handshakes/s", "refused_outside_per_s", "{:,.0f}", ""),
        ("refused, outside allow list: proxy CPU µs each", "refused_outside_cpu_us", "{:.0f}",
         "well under 1,000 µs"),
        ("refused, outside allow list: client waits for the alert, median ms",
         "refused_outside_alert_ms", "{:.2f}", ""),
        ("refused, outside allow list: ask queries each", "refused_outside_ask_per_hs",
         "{:.2f}", ""),
        ("refused by ask: handshakes/s", "refused_ask_per_s", "{:,.0f}", ""),
        ("refused by ask: proxy CPU µs each", "refused_ask_cpu_us", "{:.0f}",
         "well under 1,000 µs"),
        ("refused by ask: client waits for the alert, median ms", "refused_ask_alert_ms",
         "{:.2f}", ""),
        ("refused by ask: ask queries each", "refused_ask_ask_per_hs", "{:.3f}", ""),
    ]
    lines = ["## On-demand issuance: Gatehouse vs Caddy, %s" % started.strftime("%Y-%m-%d %H:%M"),
             "",
             "%d round(s); per round and target: a fresh Pebble (VA no sleep) and a fresh "
             "instance, %d sequential never-seen names (medians/p90 pooled over rounds), "
             "%d names at once, %.0f s hsload bursts (%d connections) of refused handshakes; "
             "then a fresh Pebble with PEBBLE_WFE_NONCEREJECT=%d and %d more names. "
             "Ratio = Gatehouse / Caddy (lower is better except for the per-second rates)." % (
                 n_rounds, args.names, args.crowd, args.refused_seconds,
                 args.refused_concurrency, args.nonce_reject, args.nonce_names), "",
             "| figure | Gatehouse | Caddy | Gatehouse/Caddy | target |",
             "|---|---|---|---|---|"]
    for label, key, f, target in rows:
        gv, cv = g.get(key), c.get(key)
        r = "" if key in ("crowd_failures", "nonce_ratio") or key.endswith("ask_per_hs") \
            else ratio(gv, cv)
        lines.append("| %s | %s | %s | %s | %s |" % (label, fmt(gv, f), fmt(cv, f), r, target))
    lines.append("")
    checks = []
    if g and c:
        def chk(label, ok):
            checks.append("- %s: %s" % (label, "n/a" if ok is None else ("met" if ok else
                                                                         "NOT met")))

        def lt(a, b, k):
            return None if a is None or b is None else a <= k * b
        chk("first response ≤ 1/5 of Caddy's", lt(g["first_median_s"], c["first_median_s"], 0.2))
        chk("%d names < 1/10 of Caddy's time with zero failures" % args.crowd,
            None if g["crowd_wall_s"] is None or c["crowd_wall_s"] is None else
            g["crowd_wall_s"] < 0.1 * c["crowd_wall_s"] and g["crowd_failures"] == 0)
        chk("nonce rejection slowdown ≤ 1.5x",
            None if g["nonce_ratio"] is None else g["nonce_ratio"] <= 1.5)
        chk("refused handshake well under 1 ms of CPU (< 500 µs, both kinds)",
            None if g["refused_outside_cpu_us"] is None or g["refused_ask_cpu_us"] is None
            else max(g["refused_outside_cpu_us"], g["refused_ask_cpu_us"]) < 500)
        lines += ["### Gatehouse against the targets", ""] + checks + [""]
    return lines


def problems(rounds, targets):
    out = []
    for r in rounds:
        for t in targets:
            res = r["results"].get(t, {})
            for ph in ("base", "nonce"):
                p = res.get(ph, {})
                if "error" in p:
                    out.append("- round %d, %s %s: %s" % (r["round"], t, ph, p["error"][:300]))
                w = p.get("warmup", {})
                if w and "error" in w:
                    out.append("- round %d, %s %s warm-up name failed: %s" % (
                        r["round"], t, ph, w["error"]))
                for x in p.get("sequential", []):
                    if x.get("status") != 200:
                        out.append("- round %d, %s %s: %s: %s" % (
                            r["round"], t, ph, x["name"], x.get("error") or x.get("status")))
                cr = p.get("crowd")
                if cr and cr["failures"]:
                    out.append("- round %d, %s crowd: %d of %d failed (%s)" % (
                        r["round"], t, cr["failures"], cr["n"], "; ".join(
                            str(e) for e in cr["errors"][:2])))
                for key in ("refused_outside", "refused_ask"):
                    x = p.get(key)
                    if not x:
                        continue
                    if "error" in x:
                        out.append("- round %d, %s %s: %s" % (r["round"], t, key, x["error"]))
                    elif x.get("succeeded"):
                        out.append("- round %d, %s %s: %d handshakes succeeded" % (
                            r["round"], t, key, x["succeeded"]))
                    if x.get("other_cpu_share", 0) > 0.15:
                        out.append("- round %d, %s %s: other processes used %.2f of a core" % (
                            r["round"], t, key, x["other_cpu_share"]))
    return out


def versions(args):
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None
    return {"caddy": first_line(["caddy", "version"]),
            "gatehouse": first_line([args.gatehouse, "version"]),
            "pebble": first_line(["dpkg-query", "-W", "pebble"]),
            "kernel": platform.release(), "cpus": os.cpu_count()}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gatehouse", required=True)
    ap.add_argument("--echo", required=True)
    ap.add_argument("--hsload", required=True)
    ap.add_argument("--results-dir", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--names", type=int, default=10)
    ap.add_argument("--crowd", type=int, default=50)
    ap.add_argument("--nonce-names", type=int, default=10)
    ap.add_argument("--nonce-reject", type=int, default=50)
    ap.add_argument("--refused-seconds", type=float, default=3.0)
    ap.add_argument("--refused-concurrency", type=int, default=16)
    ap.add_argument("--targets", default=",".join(TARGETS))
    args = ap.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    for t in targets:
        if t not in STARTERS:
            sys.exit("ondemand.py: unknown target %s" % t)
    for k in ("gatehouse", "echo", "hsload"):  # processes run in their own dirs
        if os.sep in getattr(args, k):
            setattr(args, k, os.path.abspath(getattr(args, k)))
    h.GATEHOUSE_BIN = args.gatehouse
    h.ECHO_BIN = args.echo

    started = datetime.datetime.now()
    echo = h.start_echo(["--body-size", "64"])
    ask = Ask()
    log("backend gh_echo on %s, ask endpoint %s, temp dir %s" % (echo.addr, ask.url,
                                                                h.tmpdir()))
    rounds = []
    try:
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            log("round %d/%d: %s" % (rnd + 1, args.rounds, ", ".join(order)))
            results = {}
            for t in order:
                results[t] = bench_target(args, t, rnd, ask, echo.addr)
            rounds.append({"round": rnd + 1, "order": order, "results": results})
    finally:
        ask.close()

    summary = summarize(rounds, targets)
    lines = report(summary, targets, args, started, len(rounds))
    probs = problems(rounds, targets)
    if probs:
        lines += ["### Problems", ""] + probs + [""]
    text = "\n".join(lines)
    print(text)
    os.makedirs(args.results_dir, exist_ok=True)
    path = os.path.join(args.results_dir, "ondemand-%s.json" % started.strftime("%Y%m%d-%H%M%S"))
    with open(path, "w") as f:
        json.dump({"started": started.isoformat(), "versions": versions(args),
                   "settings": vars(args), "rounds": rounds, "summary": summary,
                   "report": text}, f, indent=1)
    log("raw results: %s" % path)


if __name__ == "__main__":
    main()
