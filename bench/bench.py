#!/usr/bin/env python3
"""bench.py: Gatehouse against nginx, HAProxy and Caddy, interleaved.

Run through bench/run, which builds the binaries and passes their paths.
Every target terminates TLS with the same ECDSA P-256 certificate in front
of the same gh_echo backend, each from a config generated in a temp dir on
its own loopback port. For each round, each target (order rotated) gets:

  2 workers, not pinned: idle RSS, RSS with N idle TLS connections,
                         keep-alive req/s (wrk), full handshakes/s (hsload)
  1 worker, proxy on CPU 0, load and backend on CPU 1:
                         keep-alive req/s, full handshakes/s
  HTTP/2 (fresh instances whose listener offers h2 as well):
    2 workers:           idle RSS, RSS with N idle HTTP/2 connections,
                         h2load req/s
    1 worker, pinned:    h2load req/s
  tlsup (HTTPS to the upstream: an nginx TLS 1.3 backend, pinned to CPU 1):
    1 worker, pinned:    keep-alive req/s (wrk)
  h2cup (h2c to the upstream: nghttpd --no-tls, pinned to CPU 1):
    1 worker, pinned:    h2load req/s

(--scenarios picks groups: h1 and h2 by default, tlsup and h2cup on request.)

--access-log slowpipe|file turns Gatehouse's (and the baseline's) JSON
access log on: into a pipe that a reader drains at 256 KiB/s (slower than
the lines come at full load: a log shipper that falls behind), or into a
file. The peers keep theirs off; the figure to read is Gatehouse against
the baseline. --baseline-access-log sets the baseline's alone (default:
the same), e.g. a log-less run of the same commit beside a logging one.

Medians over rounds go to a Markdown table on stdout; every raw figure goes
to bench/results/<timestamp>.json. A target that does not start (or does
not answer through to the backend) is "n/a" for that round.

Only the Python standard library; only 127.0.0.1.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PEERS = ("nginx", "haproxy", "caddy")
SCENARIOS = ("h1", "h2", "tlsup", "h2cup")
ALL_TARGETS = ("gatehouse",) + PEERS
SNI = "bench.local"
BACKEND_NAME = "backend.bench"  # the TLS backend's name, verified by the proxies (tlsup)


def log(msg):
    print("[bench] " + msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- /proc accounting -------------------------------------------------------

def proc_tree(root):
    """Returns root and all its descendants (pids)."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids):
    """utime + stime of every process in pids (each covers all its threads)."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def machine_busy_seconds():
    """CPU time spent by everything on the machine (all CPUs, not idle)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK  # minus idle and iowait


QUIET_BUDGET = [90.0]  # seconds a whole run may spend waiting for quiet


def wait_quiet(env, run, limit=15.0):
    """Waits (at most |limit| s, and within QUIET_BUDGET) until processes
    other than ours use less than 0.2 of a core; returns the seconds waited.
    Other sessions' builds and tests share these two cores."""
    ours = run.pids() + run.backend_pids()
    start = time.time()
    while QUIET_BUDGET[0] > 0 and time.time() - start < limit:
        m0, o0, t0 = machine_busy_seconds(), cpu_seconds(ours), time.time()
        time.sleep(0.5)
        other = (machine_busy_seconds() - m0 - (cpu_seconds(ours) - o0)) / (time.time() - t0)
        if other < 0.2:
            break
        QUIET_BUDGET[0] -= time.time() - t0
    return time.time() - start


class Meter:
    """CPU used around one measurement: by the proxy, by the load generator
    (our waited-for children), and by everything else on the machine
    (other people's builds and tests make a run noisy; this says how much)."""

    def __init__(self, env, run):
        self.waited = wait_quiet(env, run)
        self.env, self.pids = env, run.pids()
        self.t0, self.p0 = time.time(), cpu_seconds(self.pids)
        self.c0, self.m0 = children_cpu(), machine_busy_seconds()
        self.backend = run.backend_pids()
        self.b0 = cpu_seconds(self.backend)

    def stop(self, res):
        wall = time.time() - self.t0
        proxy = cpu_seconds(self.pids) - self.p0
        client = children_cpu() - self.c0
        backend = cpu_seconds(self.backend) - self.b0
        other = machine_busy_seconds() - self.m0 - proxy - client - backend
        res.update({"cpu_s": proxy, "client_cpu_share": client / wall,
                    "backend_cpu_share": backend / wall,
                    "other_cpu_share": max(0.0, other / wall), "wall_s": wall,
                    "waited_for_quiet_s": self.waited})
        return proxy, client


def children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def rss_bytes(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


# --- targets -----------------------------------------------------------------

class Env:
    """What every target needs: paths, the backend port, the certificate."""

    def __init__(self, args, tmp, backend_port, backend_pid):
        self.args = args
        self.backend_pid = backend_pid
        self.tmp = tmp
        self.backend = "127.0.0.1:%d" % backend_port
        self.cert = os.path.join(tmp, "cert.pem")
        self.key = os.path.join(tmp, "key.pem")
        self.combined = os.path.join(tmp, "combined.pem")
        # The upstream-protocol scenarios' backends (tlsup, h2cup), when run:
        # name -> Backend; their certificate's CA for the proxies to verify.
        self.backends = {}
        self.ca = os.path.join(tmp, "ca.pem")

    def upstream(self, up):
        """host:port of the backend of upstream kind |up| (None: gh_echo)."""
        return self.backend if up is None else "127.0.0.1:%d" % self.backends[up].port


def nginx_argv(d, workers, http):
    """Writes d/nginx.conf (|workers| workers, in the foreground, its pid,
    logs and temp files in |d|, no access log, the http block's body |http|)
    and returns the command line that runs it."""
    tmpdir = os.path.join(d, "tmp")
    os.makedirs(tmpdir, exist_ok=True)
    os.chmod(tmpdir, 0o777)
    temp_paths = "\n".join("  %s_temp_path %s/%s;" % (k, tmpdir, k)
                           for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = f"""
worker_processes {workers};
worker_rlimit_nofile 20000;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 20000; }}
http {{
  access_log off;
{temp_paths}
{http}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return ["nginx", "-p", d, "-c", path, "-e", os.path.join(d, "error.log")]


def nginx_location(env, up):
    """The proxying of nginx's location /: HTTP/1.1 keep-alive to gh_echo,
    HTTPS verified against the run's CA (tlsup), or gRPC's HTTP/2 (h2c, the
    only HTTP/2-to-upstream path nginx has) to the h2c backend (h2cup)."""
    if up == "h2c":
        return "grpc_pass grpc://backend;"
    if up == "tls":
        # nginx 1.22's default proxy_ssl_protocols stop at TLSv1.2.
        return f"""proxy_pass https://backend;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate {env.ca};
      proxy_ssl_name {BACKEND_NAME};
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
      proxy_ssl_protocols TLSv1.2 TLSv1.3;
      proxy_http_version 1.1;
      proxy_set_header Connection "";"""
    return """proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";"""


def nginx_cmd(env, d, port, workers, h2=False, up=None):
    http = f"""
  keepalive_timeout 300s;
  keepalive_requests 1000000;
  upstream backend {{
    server {env.upstream(up)};
    keepalive 512;
  }}
  server {{
    listen 127.0.0.1:{port} ssl{" http2" if h2 else ""};
    ssl_certificate {env.cert};
    ssl_certificate_key {env.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ecdh_curve X25519:prime256v1;
    ssl_session_tickets off;
    ssl_session_cache off;
    ssl_conf_command NumTickets 0;
    location / {{
      {nginx_location(env, up)}
    }}
  }}"""
    return nginx_argv(d, workers, http), {}


def haproxy_cmd(env, d, port, workers, h2=False, up=None):
    server = "server echo %s" % env.upstream(up)
    if up == "tls":
        server = ("server s1 %s ssl verify required ca-file %s sni str(%s) verifyhost %s" % (
            env.upstream(up), env.ca, BACKEND_NAME, BACKEND_NAME))
    elif up == "h2c":
        server = "server s1 %s proto h2" % env.upstream(up)
    conf = f"""
global
  nbthread {workers}
  maxconn 9000
  tune.ssl.cachesize 0
  ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  timeout http-request 300s

frontend fe
  bind 127.0.0.1:{port} ssl crt {env.combined} no-tls-tickets alpn {"h2,http/1.1" if h2 else "http/1.1"} curves X25519:P-256
  default_backend be

backend be
  http-reuse always
  {server}
"""
    path = os.path.join(d, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(conf)
    # no-tls-tickets alone still lets OpenSSL send (useless, stateful) TLS 1.3
    # tickets; HAProxy 2.6 has no NumTickets knob, OpenSSL's config file does.
    ossl = os.path.join(d, "openssl.cnf")
    with open(ossl, "w") as f:
        f.write("openssl_conf = openssl_init\n[openssl_init]\nssl_conf = ssl_module\n"
                "[ssl_module]\nsystem_default = ssl_defaults\n[ssl_defaults]\nNumTickets = 0\n")
    return ["haproxy", "-db", "-f", path], {"OPENSSL_CONF": ossl}


def caddy_cmd(env, d, port, workers, h2=False, up=None):
    transport = {"protocol": "http", "keep_alive": {"max_idle_conns_per_host": 512}}
    if up == "tls":  # HTTP/1.1 over TLS (Go would offer h2 by ALPN otherwise)
        transport.update({"tls": {"root_ca_pem_files": [env.ca], "server_name": BACKEND_NAME},
                          "versions": ["1.1"]})
    elif up == "h2c":  # what reverse_proxy h2c://… sets
        transport["versions"] = ["h2c", "2"]
    conf = {
        "admin": {"disabled": True, "config": {"persist": False}},
        "logging": {"logs": {"default": {"level": "ERROR"}}},
        "storage": {"module": "file_system", "root": os.path.join(d, "data")},
        "apps": {
            "tls": {
                "certificates": {"load_files": [
                    {"certificate": env.cert, "key": env.key, "tags": ["bench"]}]},
                "session_tickets": {"disabled": True},
            },
            "http": {
                "servers": {
                    "bench": {
                        "listen": ["127.0.0.1:%d" % port],
                        "idle_timeout": "5m",
                        "protocols": ["h1", "h2"] if h2 else ["h1"],
                        "automatic_https": {"disable": True},
                        "tls_connection_policies": [{
                            "certificate_selection": {"any_tag": ["bench"]},
                            "default_sni": SNI,
                            "alpn": ["h2", "http/1.1"] if h2 else ["http/1.1"],
                        }],
                        "routes": [{"handle": [{
                            "handler": "reverse_proxy",
                            "upstreams": [{"dial": env.upstream(up)}],
                            "transport": transport,
                        }]}],
                    }
                }
            },
        },
    }
    path = os.path.join(d, "caddy.json")
    with open(path, "w") as f:
        json.dump(conf, f, indent=1)
    extra = {"GOMAXPROCS": str(workers), "XDG_DATA_HOME": d, "XDG_CONFIG_HOME": d, "HOME": d}
    return ["caddy", "run", "--config", path], extra


def gatehouse_cmd(env, d, port, workers, h2=False, up=None, binary=None, access_log=None):
    # HTTP/2 is on by default on Gatehouse's HTTPS listener (ALPN h2), in the
    # HTTP/1.1 runs too, where the clients offer only http/1.1. A config
    # file rather than quick mode, for the one setting quick mode lacks:
    # 512 idle upstream connections per worker, as the peers keep (nginx
    # keepalive 512, Caddy max_idle_conns_per_host 512, HAProxy unbounded).
    upstream = env.backend
    if up == "tls":
        upstream = {"address": "https://" + env.upstream(up), "ca": [env.ca],
                    "server_name": BACKEND_NAME}
    elif up == "h2c":
        upstream = {"address": env.upstream(up), "protocol": "h2c"}
    conf = {
        "listen": {"https": ["127.0.0.1:%d" % port], "http": ["127.0.0.1:%d" % free_port()]},
        "workers": workers,
        "sites": [{"hosts": ["*"], "upstreams": [upstream],
                   "tls": {"cert": env.cert, "key": env.key},
                   "keepalive": {"max_idle": 512}}],
        "tls": {"resumption": False},
        "storage": os.path.join(d, "data"),
        "log": {"level": "warn",
                "access": "json" if (access_log or env.args.access_log) != "off" else "off"},
    }
    path = os.path.join(d, "gatehouse.json")
    with open(path, "w") as f:
        json.dump(conf, f, indent=1)
    return [binary or env.args.gatehouse, "run", "-c", path], {}


def baseline_cmd(env, d, port, workers, h2=False, up=None):
    """Another Gatehouse build (--baseline), e.g. the commit before a change,
    measured in the same interleaved run so that a regression shows as a
    ratio rather than drowning in the machine's noise."""
    return gatehouse_cmd(env, d, port, workers, h2, up, env.args.baseline,
                         env.args.baseline_access_log or env.args.access_log)


COMMANDS = {"nginx": nginx_cmd, "haproxy": haproxy_cmd, "caddy": caddy_cmd,
            "gatehouse": gatehouse_cmd, "baseline": baseline_cmd}


# The slow log reader: 4 KiB every 1/64 s, 256 KiB/s.
SLOW_READER = ("import os, sys, time\n"
               "while True:\n"
               "    if not os.read(0, 4096): break\n"
               "    time.sleep(1 / 64)\n")


class Running:
    def __init__(self, name, proc, port, d):
        self.name, self.proc, self.port, self.dir = name, proc, port, d
        self.reader = None  # the slow log reader, with --access-log slowpipe
        self.backend_pids = lambda: []  # the pids whose CPU is the backend's

    def pids(self):
        return proc_tree(self.proc.pid)

    def stop(self):
        pids = self.pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Workers of ours that outlived their master (never anything else).
        for pid in pids[1:]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.reader is not None:
            self.reader.kill()
            self.reader.wait()


def probe(env, port, tries_until):
    """A real request through the proxy to the backend; True on 2xx."""
    while True:
        r = subprocess.run([env.args.hsload, "probe", "--connect", "127.0.0.1:%d" % port,
                            "--sni", SNI], capture_output=True, text=True)
        if r.returncode == 0:
            return True
        if time.time() > tries_until:
            return False
        time.sleep(0.2)


def start_target(env, name, workers, pinned, tag, h2=False, up=None):
    """Starts |name|; with |up| ("tls", "h2c") in front of that scenario's
    backend instead of gh_echo, and ready only once a request through it
    has come back with that backend's body."""
    d = os.path.join(env.tmp, "%s-%s" % (name, tag))
    os.makedirs(d, exist_ok=True)
    port = free_port()
    argv, extra = COMMANDS[name](env, d, port, workers, h2, up)
    if pinned:
        argv = ["taskset", "-c", "0"] + argv
    penv = dict(os.environ)
    penv.update(extra)
    logf = open(os.path.join(d, "output.log"), "w")
    reader, errf = None, logf
    mode = env.args.access_log
    if name == "baseline" and env.args.baseline_access_log:
        mode = env.args.baseline_access_log
    if name in ("gatehouse", "baseline") and mode == "slowpipe":
        reader = subprocess.Popen([sys.executable, "-c", SLOW_READER], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, start_new_session=True)
        errf = reader.stdin
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=errf,
                                env=penv, cwd=d, start_new_session=True)
    except OSError as e:
        logf.close()
        if reader is not None:
            reader.kill()
        return None, "cannot start: %s" % e
    logf.close()
    if reader is not None:
        reader.stdin.close()  # the proxy holds the write end
    run = Running(name, proc, port, d)
    run.reader = reader
    if up is None:
        run.backend_pids = lambda: [env.backend_pid]
    else:
        run.backend_pids = env.backends[up].pids
    deadline = time.time() + 15
    while time.time() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    why = None
    if proc.poll() is None:
        why = (probe(env, port, deadline) or "no 2xx") if up is None else \
            probe_backend_body(env.backends[up], port, deadline)
    if why is not True:
        run.stop()
        with open(os.path.join(d, "output.log"), errors="replace") as f:
            tail = f.read()[-600:].strip()
        return None, "did not serve a request through to the backend (%s; exit %s): %s" % (
            why or "not running", proc.poll(), tail)
    time.sleep(0.5)
    return run, None


# --- upstream-protocol backends (tlsup, h2cup) ----------------------------------

# 64-byte bodies, each naming its backend: a probe through a proxy that finds
# this body knows the request went to that backend (not to gh_echo).
TLS_BODY = "gatehouse bench: tlsup backend (nginx, HTTPS, TLS 1.3)".ljust(63, ".") + "\n"
H2C_BODY = "gatehouse bench: h2cup backend (nghttpd --no-tls, h2c)".ljust(63, ".") + "\n"


class Backend(Running):
    """A backend of the upstream-protocol scenarios, pinned to CPU 1 for the
    whole run (those scenarios are all pinned runs: proxy on CPU 0, load
    generator and backend on CPU 1); stopped like a target."""

    def __init__(self, kind, proc, port, body, d):
        super().__init__("backend-" + kind, proc, port, d)
        self.kind, self.body = kind, body


def make_backend_cert(tmp):
    """A private CA made for the run (ca.pem) and the TLS backend's ECDSA
    P-256 certificate for BACKEND_NAME, signed by it."""
    ca, ca_key = os.path.join(tmp, "ca.pem"), os.path.join(tmp, "ca.key")
    cert, key = os.path.join(tmp, "backend.pem"), os.path.join(tmp, "backend.key")
    csr, ext = os.path.join(tmp, "backend.csr"), os.path.join(tmp, "backend.ext")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    subprocess.run(["openssl", "req", "-x509"] + ec + [
        "-keyout", ca_key, "-out", ca, "-days", "7", "-subj", "/CN=gatehouse bench CA",
        "-addext", "basicConstraints=critical,CA:true",
        "-addext", "keyUsage=critical,keyCertSign"], check=True, capture_output=True)
    subprocess.run(["openssl", "req"] + ec + ["-keyout", key, "-out", csr,
                                              "-subj", "/CN=" + BACKEND_NAME],
                   check=True, capture_output=True)
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n" % BACKEND_NAME)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
                    "-CAcreateserial", "-out", cert, "-days", "7", "-extfile", ext],
                   check=True, capture_output=True)
    os.chmod(key, 0o644)
    return cert, key


def start_backend(env, kind):
    """The TLS backend (kind "tls": nginx, 1 worker, TLS 1.3 only, a fixed
    64-byte body) or the h2c one (kind "h2c": nghttpd --no-tls serving a
    64-byte file), pinned to CPU 1. Returns a Backend; exits if it does not
    answer a direct request with its body within 10 s."""
    d = os.path.join(env.tmp, "backend-" + kind)
    os.makedirs(d, exist_ok=True)
    port = free_port()
    if kind == "tls":
        cert, key = make_backend_cert(env.tmp)
        http = f"""
  keepalive_timeout 300s;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.3;
    location / {{
      default_type text/plain;
      return 200 "{TLS_BODY}";
    }}
    location = /bench-status {{
      stub_status;
    }}
  }}"""
        argv, body = nginx_argv(d, 1, http), TLS_BODY
    else:
        root = os.path.join(d, "htdocs")
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, "index.html"), "w") as f:
            f.write(H2C_BODY)
        argv, body = ["nghttpd", "--no-tls", "-d", root, str(port)], H2C_BODY
    logf = open(os.path.join(d, "output.log"), "w")
    proc = subprocess.Popen(["taskset", "-c", "1"] + argv, stdin=subprocess.DEVNULL,
                            stdout=logf, stderr=logf, cwd=d, start_new_session=True)
    logf.close()
    be = Backend(kind, proc, port, body, d)
    deadline, why = time.time() + 10, "not started"
    while time.time() < deadline and proc.poll() is None:
        try:
            got = backend_direct_get(env, be)
            if got == body.encode():
                return be
            why = "body %r" % got[:80]
        except (OSError, H2Error) as e:
            why = str(e)
        time.sleep(0.1)
    be.stop()
    sys.exit("bench.py: the %s backend (%s) did not answer with its body: %s; see %s" % (
        kind, argv[0], why, d))


def backend_direct_get(env, be, path="/"):
    """GET |path| straight to the backend: HTTPS verified against the run's
    CA as BACKEND_NAME, TLS 1.3 (tls), or GET / by HTTP/2 prior knowledge
    (h2c). Returns the body."""
    raw = socket.create_connection(("127.0.0.1", be.port), timeout=5)
    with raw:
        if be.kind == "tls":
            ctx = ssl.create_default_context(cafile=env.ca)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            with ctx.wrap_socket(raw, server_hostname=BACKEND_NAME) as s:
                return http1_get(s, BACKEND_NAME, path)[1]
        # h2c: the preface, an empty SETTINGS, GET / with :scheme http.
        auth = b"backend"
        raw.sendall(H2_PREFACE + h2_frame(4, 0, 0) +
                    h2_frame(1, 0x5, 1, b"\x82\x86\x84\x01" + bytes([len(auth)]) + auth))
        buf, body = b"", b""
        while True:
            while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                n = int.from_bytes(buf[:3], "big")
                ftype, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big")
                payload, buf = buf[9:9 + n], buf[9 + n:]
                if stream == 1 and ftype in (0, 1) and flags & 1:
                    return body + (payload if ftype == 0 else b"")
                if stream == 1 and ftype == 0:
                    body += payload
                elif ftype in (3, 7):
                    raise H2Error("RST_STREAM or GOAWAY")
            data = raw.recv(16384)
            if not data:
                raise H2Error("closed")
            buf += data


def http1_get(s, host, path="/"):
    """GET |path| with Connection: close on the (TLS) socket s; (status,
    body)."""
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (
        path, host)).encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not m:
        raise OSError("no HTTP/1.1 response: %r" % data[:80])
    if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        out = b""
        while body:
            size, _, rest = body.partition(b"\r\n")
            n = int(size.split(b";")[0], 16)
            if n == 0:
                break
            out, body = out + rest[:n], rest[n + 2:]
        body = out
    return int(m.group(1)), body


def probe_backend_body(be, port, deadline):
    """A request through the proxy on |port| until |deadline|: HTTP/1.1 over
    TLS for the TLS backend's scenario (what wrk sends), HTTP/2 over TLS for
    the h2c backend's (what h2load sends). True once one came back 2xx with
    the backend's own body; else the last reason, as a string."""
    why = "no answer"
    while True:
        try:
            if be.kind == "tls":
                ctx = h2_client_context()
                ctx.set_alpn_protocols(["http/1.1"])
                raw = socket.create_connection(("127.0.0.1", port), timeout=5)
                with ctx.wrap_socket(raw, server_hostname=SNI) as s:
                    status, body = http1_get(s, SNI)
                if not 200 <= status < 300:
                    raise H2Error("status %d" % status)
            else:
                parts = []
                h2_connect(port, h2_client_context(), timeout=5, body=parts).close()
                body = b"".join(parts)
            if body == be.body.encode():
                return True
            why = "2xx, but not the %s backend's body: %r" % (be.kind, body[:80])
        except (OSError, H2Error) as e:
            why = str(e)[:200]
        if time.time() > deadline:
            return why
        time.sleep(0.2)


def backend_counts(env, be):
    """The TLS backend's (nginx stub_status) connections accepted and
    requests served so far, this query's own included; None if unknown (the
    h2c backend has no such page)."""
    if be.kind != "tls":
        return None
    try:
        m = re.search(rb"\n\s*(\d+) \d+ (\d+)", backend_direct_get(env, be, "/bench-status"))
    except (OSError, H2Error):
        return None
    return (int(m.group(1)), int(m.group(2))) if m else None


def upstream_conns(run, port):
    """Established TCP connections from the proxy's processes to 127.0.0.1:
    |port| (ss -p, itself on CPU 1)."""
    pids = set(run.pids())
    r = subprocess.run(["taskset", "-c", "1", "ss", "-Htnp", "state", "established",
                        "dst", "127.0.0.1:%d" % port], capture_output=True, text=True,
                       timeout=10)
    return sum(1 for line in r.stdout.splitlines()
               if any(int(pid) in pids for pid in re.findall(r"pid=(\d+)", line)))


def watch_upstream(proc, run, port):
    """While the load |proc| runs, checks (every 0.2 s until it sees one)
    that the proxy holds connections to the backend's port; returns how many
    it saw (0: none all along)."""
    while True:
        n = upstream_conns(run, port)
        if n or proc.poll() is not None:
            return n
        time.sleep(0.2)


# --- measurements -----------------------------------------------------------

def load_prefix(pinned):
    return ["taskset", "-c", "1"] if pinned else []


def parse_wrk(out):
    def num(pattern, default=None):
        m = re.search(pattern, out)
        return m.group(1) if m else default

    def ms(value, unit):
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[unit]

    res = {"requests": int(num(r"(\d+) requests in", "0")),
           "rps": float(num(r"Requests/sec:\s+([\d.]+)", "0"))}
    m = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    res["p99_ms"] = ms(m.group(1), m.group(2)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    res["non_2xx"] = int(num(r"Non-2xx or 3xx responses: (\d+)", "0"))
    return res


def run_keepalive(env, run, pinned, seconds, upstream=None):
    """wrk keep-alive. With |upstream| (a Backend: the tlsup scenario), the
    run is n/a unless the proxy was seen connected to that backend during
    it and every request got a 2xx without a socket error."""
    url = "https://127.0.0.1:%d/" % run.port
    base = load_prefix(pinned) + ["wrk", "-c", str(env.args.connections), "-t", "1", "--latency"]
    subprocess.run(base + ["-d", "1s", url], capture_output=True, timeout=60)  # warm-up
    counts0 = backend_counts(env, upstream) if upstream else None
    meter = Meter(env, run)
    p = subprocess.Popen(base + ["-d", "%ds" % seconds, url], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    conns = watch_upstream(p, run, upstream.port) if upstream else None
    try:
        stdout, stderr = p.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        p.kill()
        stdout, stderr = p.communicate()
    res = parse_wrk(stdout)
    proxy, _ = meter.stop(res)
    ok = res["requests"] - res["non_2xx"]
    res["cpu_us_per_req"] = proxy * 1e6 / ok if ok > 0 else None
    if ok <= 0:
        res["error"] = (stdout + stderr)[-400:]
    if upstream:
        res["upstream_conns"] = conns
        counts1 = backend_counts(env, upstream)
        missing = 0
        if counts0 and counts1:
            # New connections to the backend (each a TLS handshake) and the
            # requests it served, less the second query's own: at least one
            # for each 2xx the clients got.
            res["backend_conns_opened"] = counts1[0] - counts0[0] - 1
            res["backend_requests"] = counts1[1] - counts0[1] - 1
            missing = max(0, ok - res["backend_requests"])
        why = upstream_failure(conns, upstream, {
            "non-2xx": res["non_2xx"], "socket errors": res["socket_errors"],
            "2xx more than the backend served": missing})
        if why and not res.get("error"):
            res["error"] = why
        if res.get("error"):  # never a figure from a run that failed anywhere
            res.update({"rps": None, "p99_ms": None, "cpu_us_per_req": None})
    return res


def upstream_failure(conns, upstream, counts):
    """Why an upstream-protocol run is n/a, or None."""
    bad = ", ".join("%d %s" % (v, k) for k, v in counts.items() if v)
    if not conns:
        return "no connection from the proxy to the %s backend seen during the run%s" % (
            upstream.kind, " (%s)" % bad if bad else "")
    return "not every request succeeded: %s" % bad if bad else None


def run_handshakes(env, run, pinned, seconds):
    cmd = load_prefix(pinned) + [env.args.hsload, "handshake", "--connect",
                                 "127.0.0.1:%d" % run.port, "--sni", SNI, "--duration",
                                 str(seconds), "--concurrency", str(env.args.hs_concurrency)]
    meter = Meter(env, run)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    try:
        res = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "hsload: " + (r.stdout + r.stderr)[-400:]}
    proxy, client = meter.stop(res)
    ok = res["ok"]
    res["cpu_us_per_hs"] = proxy * 1e6 / ok if ok > 0 else None
    res["client_cpu_us_per_hs"] = client * 1e6 / ok if ok > 0 else None
    return res


def run_idle_memory(env, run):
    for _ in range(3):
        probe(env, run.port, 0)
    time.sleep(1.0)
    pids = run.pids()
    idle = rss_bytes(pids)
    cmd = [env.args.hsload, "idle", "--connect", "127.0.0.1:%d" % run.port, "--sni", SNI,
           "--conns", str(env.args.idle_conns), "--concurrency", "64", "--hold", "180"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()
        res = json.loads(first)
        time.sleep(2.0)  # let the proxies settle (and Go's GC run)
        loaded = rss_bytes(run.pids())
        p.stdin.close()
        second = p.stdout.readline()
        res.update(json.loads(second) if second.strip() else {})
        p.wait(timeout=30)
    except (ValueError, subprocess.TimeoutExpired) as e:
        p.kill()
        p.wait()
        return {"error": "hsload idle: %s" % e, "rss_idle": idle}
    res["rss_idle"] = idle
    res["rss_loaded"] = loaded
    held = res["ok"] - res.get("dropped", 0)
    res["bytes_per_conn"] = (loaded - idle) / res["ok"] if res["ok"] > 0 else None
    res["held"] = held
    time.sleep(1.0)  # let the proxy notice the closes before the next phase
    return res


# --- HTTP/2 -------------------------------------------------------------------

def parse_h2load(out):
    def num(pattern, default="0"):
        m = re.search(pattern, out)
        return m.group(1) if m else default

    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    res = dict(zip(keys, (int(x) for x in m.groups()))) if m else {}
    res["rps"] = float(num(r"finished in [\d.]+\w*, ([\d.]+) req/s"))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    res["ok"] = int(m.group(1)) if m else 0
    res["non_2xx"] = sum(int(x) for x in m.groups()[1:]) if m else 0
    res["alpn"] = num(r"Application protocol: (\S+)", None)
    return res


def h2load_failure(res, r):
    """Why an h2load run counts as n/a, in one line."""
    m = re.search(r"^requests: .*$", r.stdout, re.M)
    err = [line for line in r.stderr.splitlines() if line.strip()]
    return "ALPN %s, %d of %d requests 2xx (h2load exit %d; %s%s)" % (
        res.get("alpn") or "none", res["ok"], res.get("total", 0), r.returncode,
        m.group(0) if m else "no summary", "; " + err[-1][:120] if err else "")


def run_h2load(env, run, pinned, upstream=None):
    """h2load over TLS with ALPN h2 only (its default list would fall back to
    http/1.1 silently): a warm-up of a tenth of the requests, then the
    measured run. n/a (an "error") when the connections did not get h2; with
    |upstream| (a Backend: the h2cup scenario) also unless the proxy was seen
    connected to it during the run and every request got a 2xx."""
    n = env.args.h2_requests
    url = "https://127.0.0.1:%d/" % run.port
    base = load_prefix(pinned) + ["h2load", "--npn-list=h2", "-c", str(env.args.connections),
                                  "-m", str(env.args.h2_streams), "-t", "1", "-N", "10"]
    timeout = 60 + n / 1000
    try:
        r = subprocess.run(base + ["-n", str(max(n // 10, env.args.connections)), url],
                           capture_output=True, text=True, timeout=timeout)  # warm-up
        warm = parse_h2load(r.stdout)
        if warm.get("alpn") != "h2" or warm["ok"] == 0:
            return {"error": "no HTTP/2 in the warm-up: " + h2load_failure(warm, r)}
        meter = Meter(env, run)
        p = subprocess.Popen(base + ["-n", str(n), url], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        conns = watch_upstream(p, run, upstream.port) if upstream else None
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise
        r = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    except subprocess.TimeoutExpired:
        return {"error": "h2load did not finish within %d s" % timeout}
    res = parse_h2load(r.stdout)
    proxy, client = meter.stop(res)
    ok = res["ok"]
    if res.get("alpn") != "h2" or ok == 0:
        res["error"] = "no HTTP/2: " + h2load_failure(res, r)
        res["rps"] = None
        return res
    res["cpu_us_per_req"] = proxy * 1e6 / ok
    res["client_cpu_us_per_req"] = client * 1e6 / ok
    if upstream:
        res["upstream_conns"] = conns
        why = upstream_failure(conns, upstream, {
            k: res.get(k, 0) for k in ("failed", "errored", "timeout", "non_2xx")})
        if why:
            res.update({"error": why, "rps": None, "cpu_us_per_req": None})
    return res


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(ftype, flags, stream, payload=b""):
    return (len(payload).to_bytes(3, "big") + bytes([ftype, flags]) +
            stream.to_bytes(4, "big") + payload)


class H2Error(Exception):
    pass


# HPACK's Huffman codes of the ten digits (RFC 7541, appendix B).
HUFFMAN_DIGITS = {(0x0, 5): "0", (0x1, 5): "1", (0x2, 5): "2", (0x19, 6): "3", (0x1a, 6): "4",
                  (0x1b, 6): "5", (0x1c, 6): "6", (0x1d, 6): "7", (0x1e, 6): "8",
                  (0x1f, 6): "9"}
STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}


def hpack_status(block):
    """The :status of a response header block, which HPACK puts first: an
    indexed static entry (8-14), or a literal with the name :status (static
    index 8) and a plain or Huffman-coded value. None if it is none of these
    (the first response on a connection cannot use the dynamic table)."""
    if not block:
        return None
    b = block[0]
    if b & 0x80:
        return STATIC_STATUS.get(b & 0x7f)
    name = b & 0x3f if b & 0x40 else b & 0x0f
    if name not in STATIC_STATUS or len(block) < 2:
        return None
    huffman, n = block[1] & 0x80, block[1] & 0x7f
    raw = block[2:2 + n]
    if not huffman:
        return int(raw) if raw.isdigit() else None
    bits = "".join("{:08b}".format(x) for x in raw)
    out, i = "", 0
    while i + 5 <= len(bits):
        for width in (5, 6):
            digit = i + width <= len(bits) and HUFFMAN_DIGITS.get((int(bits[i:i + width], 2),
                                                                   width))
            if digit:
                out, i = out + digit, i + width
                break
        else:
            break  # the padding (all ones), or not a digit
    return int(out) if len(out) == 3 else None


def h2_connect(port, ctx, timeout=10.0, body=None):
    """One HTTP/2 connection set up and left idle: TLS with ALPN h2, the
    preface and an empty SETTINGS, one GET / (HPACK by hand: static-table
    :method GET, :scheme https, :path /, :authority without indexing), the
    server's SETTINGS acknowledged and ours acknowledged by it, the response
    read to END_STREAM (its DATA appended to the list |body| if given).
    Returns the socket; raises H2Error or OSError."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s = ctx.wrap_socket(raw, server_hostname=SNI)
    except BaseException:
        raw.close()
        raise
    try:
        if s.selected_alpn_protocol() != "h2":
            raise H2Error("ALPN gave %s, not h2" % s.selected_alpn_protocol())
        auth = SNI.encode()
        block = b"\x82\x87\x84\x01" + bytes([len(auth)]) + auth
        s.sendall(H2_PREFACE + h2_frame(4, 0, 0) + h2_frame(1, 0x5, 1, block))
        buf, settings, acked, done, status = b"", False, False, False, None
        deadline = time.time() + timeout
        while not (settings and acked and done):
            while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                length = int.from_bytes(buf[:3], "big")
                ftype, flags = buf[3], buf[4]
                stream = int.from_bytes(buf[5:9], "big") & 0x7fffffff
                payload, buf = buf[9:9 + length], buf[9 + length:]
                if ftype == 4 and flags & 1:
                    acked = True
                elif ftype == 4:
                    settings = True
                    s.sendall(h2_frame(4, 1, 0))
                elif ftype == 6 and not flags & 1:  # PING
                    s.sendall(h2_frame(6, 1, 0, payload))
                elif ftype == 7:
                    raise H2Error("GOAWAY %s" % payload[4:8].hex())
                elif ftype == 3 and stream == 1:
                    raise H2Error("RST_STREAM %s" % payload.hex())
                elif ftype == 1 and stream == 1:
                    pad = payload[0] if flags & 0x8 else 0
                    off = (1 if flags & 0x8 else 0) + (5 if flags & 0x20 else 0)
                    status = hpack_status(payload[off:len(payload) - pad])
                    if status is None or not 200 <= status < 300:
                        raise H2Error("response status %s, not a 2xx" % status)
                    done = done or bool(flags & 1)
                elif ftype == 0 and stream == 1:
                    if body is not None:
                        pad = payload[0] if flags & 0x8 else 0
                        body.append(payload[1 if flags & 0x8 else 0:len(payload) - pad])
                    done = done or bool(flags & 1)
            if settings and acked and done:
                break
            if time.time() > deadline:
                raise H2Error("timed out (settings %s, ack %s, response %s)" % (
                    settings, acked, done))
            data = s.recv(16384)
            if not data:
                raise H2Error("closed by the server")
            buf += data
        return s
    except BaseException:
        s.close()
        raise


def h2_client_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"])
    return ctx


def run_h2_idle_memory(env, run):
    """RSS of the proxy's processes before and after N idle HTTP/2
    connections (h2_connect, one at a time from this process)."""
    ctx = h2_client_context()
    try:
        for _ in range(3):  # warm-up, like the HTTP/1.1 figure's three requests
            h2_connect(run.port, ctx).close()
    except (H2Error, OSError) as e:
        return {"error": "no HTTP/2: %s" % e}
    time.sleep(1.0)
    idle = rss_bytes(run.pids())
    n = env.args.h2_idle_conns
    conns, fail, errors, t0 = [], 0, {}, time.time()
    try:
        for _ in range(n):
            try:
                conns.append(h2_connect(run.port, ctx))
            except (H2Error, OSError) as e:
                fail += 1
                k = str(e)[:80]
                errors[k] = errors.get(k, 0) + 1
                if fail >= 20 and not conns:
                    break
        setup = time.time() - t0
        time.sleep(2.0)  # let the proxies settle (and Go's GC run)
        loaded = rss_bytes(run.pids())
        # Still open? One the proxy closed or is closing reads as EOF or a
        # GOAWAY now; other frames (a late WINDOW_UPDATE, a PING) are fine.
        dropped = 0
        for c in conns:
            c.setblocking(False)
            try:
                data = c.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except OSError:
                data = b""
            closed = not data  # EOF or an error
            while len(data) >= 9 and not closed:
                closed = data[3] == 7
                data = data[9 + int.from_bytes(data[:3], "big"):]
            dropped += closed
    finally:
        for c in conns:
            c.close()
    ok = len(conns)
    res = {"conns": n, "ok": ok, "fail": fail, "dropped": dropped, "held": ok - dropped,
           "setup_s": setup, "rss_idle": idle, "rss_loaded": loaded,
           "bytes_per_conn": (loaded - idle) / ok if ok > 0 else None}
    if errors:
        res["errors"] = errors
    time.sleep(1.0)  # let the proxy notice the closes before the next phase
    return res


def measure(env, name, rnd, out, workers, pinned, phases, h2=False, up=None):
    """Starts |name| with |workers| workers (its listener offering h2 too if
    |h2|; in front of the |up| backend, "tls" or "h2c", instead of gh_echo if
    given), runs each (key, label, fn) of |phases| into out[key], stops it. A
    target that does not start leaves its reason in out["error"] (or
    "error_pinned", "error_h2", "error_h2_pinned", "error_tlsup",
    "error_h2cup")."""
    mode = "%d worker%s%s%s" % (workers, "s" if workers > 1 else "", " pinned" if pinned else "",
                                ", h2 listener" if h2 else "")
    scen = {None: "", "tls": "tlsup", "h2c": "h2cup"}[up]
    if up:
        mode += ", %s upstream" % {"tls": "HTTPS", "h2c": "h2c"}[up]
    run, err = start_target(env, name, workers, pinned, "r%d-w%d%s%s" % (
        rnd, workers, "-h2" if h2 else "", "-" + scen if scen else ""), h2, up)
    if run is None:
        log("%s (%s): n/a: %s" % (name, mode, err))
        if scen:
            out["error_" + scen] = err
        else:
            out["error" + ("_h2" if h2 else "") + ("_pinned" if pinned else "")] = err
        return
    try:
        for key, label, fn in phases:
            log("%s: %s, %s" % (name, label, mode))
            out[key] = fn(env, run)
            if out[key].get("error"):
                log("%s: %s: %s" % (name, label, out[key]["error"][:200]))
    finally:
        run.stop()


def pinned_backend(env, fn):
    """Runs fn() with the backend on CPU 1 (the pinned runs: proxy on CPU 0,
    load generator and backend on CPU 1)."""
    os.sched_setaffinity(env.backend_pid, {1})
    try:
        fn()
    finally:
        os.sched_setaffinity(env.backend_pid, set(range(os.cpu_count() or 1)))


def bench_target(env, name, rnd):
    """All measurements of one target in one round."""
    a = env.args

    def ka(pinned):
        return lambda e, r: run_keepalive(e, r, pinned, a.ka_seconds)

    def hs(pinned):
        return lambda e, r: run_handshakes(e, r, pinned, a.hs_seconds)

    def h2load(pinned):
        return lambda e, r: run_h2load(e, r, pinned)

    out = {}
    if "h1" in a.scenarios:
        measure(env, name, rnd, out, 2, False, [
            ("memory", "RSS with %d idle connections" % a.idle_conns, run_idle_memory),
            ("ka2", "keep-alive", ka(False)), ("hs2", "full handshakes", hs(False))])
        pinned_backend(env, lambda: measure(env, name, rnd, out, 1, True, [
            ("ka1", "keep-alive", ka(True)), ("hs1", "full handshakes", hs(True))]))
    if "h2" in a.scenarios:
        # Fresh instances whose listener offers h2 (and http/1.1), so that the
        # HTTP/1.1 figures above stay those of HTTP/1.1-only configurations.
        measure(env, name, rnd, out, 2, False, [
            ("h2mem", "RSS with %d idle HTTP/2 connections" % a.h2_idle_conns,
             run_h2_idle_memory),
            ("h2load2", "HTTP/2 h2load -n %d" % a.h2_requests, h2load(False))], h2=True)
        pinned_backend(env, lambda: measure(env, name, rnd, out, 1, True, [
            ("h2load1", "HTTP/2 h2load -n %d" % a.h2_requests, h2load(True))], h2=True))
    # The upstream-protocol scenarios: 1 worker pinned to CPU 0, the load
    # generator and the scenario's own backend (pinned for the whole run) on
    # CPU 1.
    if "tlsup" in a.scenarios:
        be = env.backends["tls"]
        measure(env, name, rnd, out, 1, True, [
            ("tlsup1", "keep-alive",
             lambda e, r: run_keepalive(e, r, True, a.ka_seconds, be))], up="tls")
    if "h2cup" in a.scenarios:
        be = env.backends["h2c"]
        measure(env, name, rnd, out, 1, True, [
            ("h2cup1", "HTTP/2 h2load -n %d" % a.h2_requests,
             lambda e, r: run_h2load(e, r, True, be))], h2=True, up="h2c")
    return out


# --- report ------------------------------------------------------------------

# (key, label, higher_is_better, format) of each phase's figures.
KA_METRICS = [("rps", "keep-alive req/s", True, "{:,.0f}"),
              ("p99_ms", "p99 ms", False, "{:.2f}"),
              ("cpu_us_per_req", "CPU µs/req", False, "{:.1f}")]
HS_METRICS = [("rate", "full handshakes/s", True, "{:,.0f}"),
              ("cpu_us_per_hs", "CPU µs/handshake", False, "{:.0f}")]
MEM_METRICS = [("rss_idle", "RSS idle MiB", False, "{:.1f}"),
               ("bytes_per_conn", "bytes/idle TLS conn", False, "{:,.0f}")]
H2_METRICS = [("rps", "h2 req/s", True, "{:,.0f}"),
              ("cpu_us_per_req", "CPU µs/req", False, "{:.1f}")]
H2_PINNED_METRICS = [("rps", "h2 req/s, 1 worker pinned", True, "{:,.0f}"),
                     ("cpu_us_per_req", "CPU µs/req, 1 worker pinned", False, "{:.1f}")]
TLSUP_METRICS = [("rps", "req/s, HTTPS upstream", True, "{:,.0f}"),
                 ("p99_ms", "p99 ms", False, "{:.2f}"),
                 ("cpu_us_per_req", "CPU µs/req", False, "{:.1f}")]
H2CUP_METRICS = [("rps", "h2 req/s, h2c upstream", True, "{:,.0f}"),
                 ("cpu_us_per_req", "CPU µs/req", False, "{:.1f}")]
H2_MEM_METRICS = [("rss_idle", "RSS idle MiB", False, "{:.1f}"),
                  ("bytes_per_conn", "bytes/idle h2 conn", False, "{:,.0f}")]
METRICS = [(phase,) + m for phase, ms in (("ka2", KA_METRICS), ("hs2", HS_METRICS),
                                          ("memory", MEM_METRICS), ("ka1", KA_METRICS),
                                          ("hs1", HS_METRICS), ("h2load2", H2_METRICS),
                                          ("h2load1", H2_PINNED_METRICS),
                                          ("h2mem", H2_MEM_METRICS),
                                          ("tlsup1", TLSUP_METRICS),
                                          ("h2cup1", H2CUP_METRICS)) for m in ms]


def medians(rounds, targets):
    med = {}
    for t in targets:
        med[t] = {}
        for phase, key, _, _, _ in METRICS:
            vals = []
            for r in rounds:
                v = r["results"].get(t, {}).get(phase, {}).get(key)
                if isinstance(v, (int, float)):
                    vals.append(v)
            med[t]["%s.%s" % (phase, key)] = statistics.median(vals) if vals else None
    return med


def best_peer(med, mkey, higher):
    vals = [med[p][mkey] for p in PEERS if p in med and med[p][mkey] is not None]
    if not vals:
        return None
    return max(vals) if higher else min(vals)


def table(med, targets, phases, title):
    cols = [m for m in METRICS if m[0] in phases]
    lines = ["### " + title, ""]
    head = ["target"]
    for _, key, label, higher, _ in cols:
        head.append(label)
        if key != "p99_ms" and key != "rss_idle":
            head.append("vs best peer")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for t in targets:
        row = [t]
        for phase, key, _, higher, fmt in cols:
            mkey = "%s.%s" % (phase, key)
            v = med[t][mkey]
            row.append(fmt.format(v / 2**20 if key == "rss_idle" else v) if v is not None
                       else "n/a")
            if key != "p99_ms" and key != "rss_idle":
                b = best_peer(med, mkey, higher)
                row.append("%.2fx" % (v / b) if v is not None and b else "n/a")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


def goals(med, scenarios):
    g = med.get("gatehouse")
    if not g or not {"h1", "h2"} & set(scenarios):  # none for tlsup, h2cup
        return []
    out = ["### Gatehouse against the issue's targets", ""]

    def line(label, value, ref, limit, refname):
        if value is None or ref is None:
            out.append("- %s: n/a" % label)
            return
        ratio = value / ref
        out.append("- %s: %.2fx %s (target at most %.1fx): %s" % (
            label, ratio, refname, limit, "met" if ratio <= limit else "NOT met"))

    if "h1" in scenarios:
        for phase, mode in (("ka1", "1 worker pinned"), ("ka2", "2 workers")):
            line("CPU per keep-alive request, %s" % mode, g[phase + ".cpu_us_per_req"],
                 best_peer(med, phase + ".cpu_us_per_req", False), 0.8, "of the best peer")
        for phase, mode in (("hs1", "1 worker pinned"), ("hs2", "2 workers")):
            line("CPU per full handshake, %s" % mode, g[phase + ".cpu_us_per_hs"],
                 med.get("nginx", {}).get(phase + ".cpu_us_per_hs"), 0.6, "of nginx")
        line("memory per idle TLS connection", g["memory.bytes_per_conn"],
             med.get("nginx", {}).get("memory.bytes_per_conn"), 0.5, "of nginx")
    if "h2" not in scenarios:
        out.append("")
        return out
    for phase, mode in (("h2load1", "1 worker pinned"), ("h2load2", "2 workers")):
        line("HTTP/2: CPU per request, %s" % mode, g[phase + ".cpu_us_per_req"],
             best_peer(med, phase + ".cpu_us_per_req", False), 0.8, "of the best peer")
        rps, peers = g[phase + ".rps"], [(p, med.get(p, {}).get(phase + ".rps"))
                                         for p in ("nginx", "haproxy")]
        label = "HTTP/2: req/s, %s, above nginx's and HAProxy's" % mode
        if rps is None or any(v is None for _, v in peers):
            out.append("- %s: n/a" % label)
        else:
            out.append("- %s: %s: %s" % (label, ", ".join(
                "%.2fx %s" % (rps / v, p) for p, v in peers),
                "met" if all(rps > v for _, v in peers) else "NOT met"))
    line("HTTP/2: memory per idle connection", g["h2mem.bytes_per_conn"],
         med.get("nginx", {}).get("h2mem.bytes_per_conn"), 0.5, "of nginx")
    out.append("")
    return out


def against_baseline(med):
    """Gatehouse's ratio to each peer, next to the baseline build's: the
    change regressed where its ratio grew (CPU) beyond a few percent."""
    g, b = med.get("gatehouse"), med.get("baseline")
    if not g or not b:
        return []
    out = ["### Gatehouse against the baseline build (same run)", "",
           "| figure | peer | gatehouse / peer | baseline / peer | change |", "|---|---|---|---|---|"]
    for mkey, label in (("ka2.cpu_us_per_req", "CPU per keep-alive request, 2 workers"),
                        ("ka1.cpu_us_per_req", "CPU per keep-alive request, 1 worker pinned"),
                        ("hs2.cpu_us_per_hs", "CPU per full handshake, 2 workers"),
                        ("hs1.cpu_us_per_hs", "CPU per full handshake, 1 worker pinned"),
                        ("h2load2.cpu_us_per_req", "CPU per HTTP/2 request, 2 workers"),
                        ("h2load1.cpu_us_per_req", "CPU per HTTP/2 request, 1 worker pinned"),
                        ("tlsup1.cpu_us_per_req", "CPU per request, HTTPS upstream, pinned"),
                        ("h2cup1.cpu_us_per_req", "CPU per HTTP/2 request, h2c upstream, pinned")):
        for peer in ("nginx", "haproxy"):
            ref = med.get(peer, {}).get(mkey)
            gv, bv = g.get(mkey), b.get(mkey)
            if not ref or gv is None or bv is None:
                continue
            out.append("| %s | %s | %.3f | %.3f | %+.1f%% |" % (
                label, peer, gv / ref, bv / ref, 100.0 * (gv / bv - 1)))
    out.append("")
    return out


def problems(rounds, targets):
    """Failures worth a reader's attention, one line each."""
    out, noisy, saturated, cpu1_full = [], [], [], []
    for r in rounds:
        for t in targets:
            res = r["results"].get(t, {})
            for k in ("error", "error_pinned", "error_h2", "error_h2_pinned", "error_tlsup",
                      "error_h2cup"):
                if k in res:
                    out.append("- round %d, %s%s: n/a (%s)" % (
                        r["round"], t, " " + k[6:] if k != "error" else "", res[k][:200]))
            for phase in ("ka2", "ka1"):
                p = res.get(phase, {})
                if p.get("socket_errors") or p.get("non_2xx") or p.get("error"):
                    out.append("- round %d, %s %s: %s socket errors, %s non-2xx %s" % (
                        r["round"], t, phase, p.get("socket_errors"), p.get("non_2xx"),
                        p.get("error", "")[:200]))
            for phase in ("h2load2", "h2load1"):
                p = res.get(phase, {})
                bad = {k: p[k] for k in ("failed", "errored", "timeout", "non_2xx") if p.get(k)}
                if p.get("error"):
                    out.append("- round %d, %s %s: n/a (%s)" % (r["round"], t, phase,
                                                              p["error"][:200]))
                elif bad:
                    out.append("- round %d, %s %s: %s" % (r["round"], t, phase, bad))
            for phase in ("tlsup1", "h2cup1"):
                p = res.get(phase, {})
                if p.get("error"):
                    out.append("- round %d, %s %s: n/a (%s)" % (r["round"], t, phase,
                                                              p["error"][:300]))
            for phase in ("ka2", "ka1", "hs2", "hs1", "h2load2", "h2load1", "tlsup1", "h2cup1"):
                p = res.get(phase, {})
                if p.get("other_cpu_share", 0) > 0.15:
                    noisy.append("r%d %s %s %.2f" % (r["round"], t, phase, p["other_cpu_share"]))
                if phase.endswith("1") and p.get("client_cpu_share", 0) > 0.9:
                    saturated.append("r%d %s %s" % (r["round"], t, phase))
                elif phase in ("tlsup1", "h2cup1") and (
                        p.get("client_cpu_share", 0) + p.get("backend_cpu_share", 0) > 0.9):
                    cpu1_full.append("r%d %s %s %.2f+%.2f" % (
                        r["round"], t, phase, p["client_cpu_share"], p["backend_cpu_share"]))
            for phase in ("hs2", "hs1", "memory", "h2mem"):
                p = res.get(phase, {})
                bad = {k: p[k] for k in ("fail", "reused", "wrong_params", "tickets",
                                         "bad_status", "dropped", "errors") if p.get(k)}
                if phase == "h2mem" and p.get("error"):
                    out.append("- round %d, %s %s: n/a (%s)" % (r["round"], t, phase,
                                                              p["error"][:200]))
                elif bad or p.get("error"):
                    out.append("- round %d, %s %s: %s %s" % (r["round"], t, phase, bad,
                                                           p.get("error", "")[:200]))
    if noisy:
        out.append("- other processes used more than 0.15 of a core during (round, target, "
                   "run, cores): %s. Rates there are unreliable; CPU per request much less so."
                   % "; ".join(noisy))
    if saturated:
        out.append("- the load generator used a whole core (so the rate is its limit, not the "
                   "proxy's) in: %s" % "; ".join(saturated))
    if cpu1_full:
        out.append("- the load generator and the backend together used CPU 1 fully (so the "
                   "rate is their limit, not the proxy's; CPU per request still holds) in "
                   "(round, target, run, load + backend cores): %s" % "; ".join(cpu1_full))
    return out


def versions(args):
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None
    return {"nginx": first_line(["nginx", "-v"]), "haproxy": first_line(["haproxy", "-v"]),
            "caddy": first_line(["caddy", "version"]),
            "gatehouse": first_line([args.gatehouse, "version"]),
            "wrk": first_line(["wrk", "--version"]),
            "h2load": first_line(["h2load", "--version"]),
            "nghttpd": first_line(["nghttpd", "--version"]), "kernel": platform.release(),
            "cpus": os.cpu_count()}


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "7", "-subj", "/CN=" + SNI,
                    "-addext", "subjectAltName=DNS:%s,IP:127.0.0.1" % SNI],
                   check=True, capture_output=True)
    with open(os.path.join(tmp, "combined.pem"), "w") as f:
        f.write(open(cert).read() + open(key).read())
    os.chmod(key, 0o644)  # nginx and haproxy workers may drop privileges


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gatehouse", required=True)
    ap.add_argument("--echo", required=True)
    ap.add_argument("--hsload", required=True)
    ap.add_argument("--results-dir", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ka-seconds", type=int, default=8)
    ap.add_argument("--hs-seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--hs-concurrency", type=int, default=16)
    ap.add_argument("--idle-conns", type=int, default=5000)
    ap.add_argument("--body-size", type=int, default=64)
    ap.add_argument("--h2-requests", type=int, default=100000)
    ap.add_argument("--h2-streams", type=int, default=10, help="h2load -m")
    ap.add_argument("--h2-idle-conns", type=int, default=1000)
    ap.add_argument("--scenarios", default="h1,h2",
                    help="comma-separated subset of h1 (HTTP/1.1: memory, keep-alive, "
                         "handshakes), h2 (HTTP/2: memory, h2load), tlsup (keep-alive with "
                         "HTTPS to the upstream) and h2cup (h2load with h2c to the upstream)")
    ap.add_argument("--targets", default=",".join(ALL_TARGETS))
    ap.add_argument("--baseline", help="another gatehouse binary, measured as target 'baseline'")
    ap.add_argument("--access-log", default="off", choices=("off", "slowpipe", "file"),
                    help="Gatehouse's JSON access log: off, a slowly read pipe, or a file")
    ap.add_argument("--baseline-access-log", choices=("off", "slowpipe", "file"),
                    help="the baseline's access log (default: --access-log)")
    args = ap.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    args.scenarios = [x for x in args.scenarios.split(",") if x]
    if not args.scenarios or set(args.scenarios) - set(SCENARIOS):
        sys.exit("bench.py: --scenarios takes a comma-separated subset of %s" %
                 ",".join(SCENARIOS))
    if args.baseline and "baseline" not in targets:
        targets.append("baseline")
    for t in targets:
        if t not in COMMANDS:
            sys.exit("bench.py: unknown target %s" % t)

    started = datetime.datetime.now()
    tmp = tempfile.mkdtemp(prefix="gh-bench-")
    os.chmod(tmp, 0o755)
    make_cert(tmp)
    backend_port_file = os.path.join(tmp, "echo.port")
    echo_log = open(os.path.join(tmp, "echo.log"), "w")
    echo = subprocess.Popen([args.echo, "--listen", "127.0.0.1:0", "--body-size",
                             str(args.body_size), "--ready-file", backend_port_file],
                            stdin=subprocess.DEVNULL, stdout=echo_log, stderr=echo_log,
                            start_new_session=True)
    env = None
    try:
        deadline = time.time() + 10
        while not os.path.exists(backend_port_file):
            if time.time() > deadline or echo.poll() is not None:
                sys.exit("bench.py: gh_echo did not start (see %s/echo.log)" % tmp)
            time.sleep(0.05)
        env = Env(args, tmp, int(open(backend_port_file).read()), echo.pid)
        log("backend gh_echo on %s, body %d bytes; temp dir %s" % (env.backend, args.body_size,
                                                                   tmp))
        for scen, kind in (("tlsup", "tls"), ("h2cup", "h2c")):
            if scen in args.scenarios:
                env.backends[kind] = start_backend(env, kind)
                log("%s backend on 127.0.0.1:%d (CPU 1)" % (kind, env.backends[kind].port))
        rounds = []
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            log("round %d/%d: %s" % (rnd + 1, args.rounds, ", ".join(order)))
            results = {}
            for name in order:
                if echo.poll() is not None:
                    sys.exit("bench.py: gh_echo died (see %s/echo.log)" % tmp)
                for be in env.backends.values():
                    if be.proc.poll() is not None:
                        sys.exit("bench.py: the %s backend died (see %s)" % (be.kind, be.dir))
                results[name] = bench_target(env, name, rnd)
            rounds.append({"round": rnd + 1, "order": order, "results": results})
    finally:
        for be in (env.backends.values() if env else ()):
            be.stop()
        echo.send_signal(signal.SIGTERM)
        try:
            echo.wait(timeout=10)
        except subprocess.TimeoutExpired:
            echo.kill()
        echo_log.close()

    med = medians(rounds, targets)
    n = len(rounds)
    report = ["## Gatehouse benchmark, %s" % started.strftime("%Y-%m-%d %H:%M"), "",
              "Medians of %d round(s); TLS 1.3, X25519, ECDSA P-256; backend gh_echo with %d-byte "
              "bodies. \"vs best peer\" divides by the best of nginx, HAProxy and Caddy "
              "(for req/s and handshakes/s higher is better, for CPU and memory lower)." % (
                  n, args.body_size), ""]
    if "h1" in args.scenarios:
        report += table(med, targets, ("ka2", "hs2"),
                        "2 workers each, not pinned (wrk -c %d -t 1, %d s; hsload -c %d, %d s)" % (
                            args.connections, args.ka_seconds, args.hs_concurrency,
                            args.hs_seconds))
        report += table(med, targets, ("memory",),
                        "Memory: VmRSS of all proxy processes, idle and with %d idle TLS "
                        "connections (2 workers)" % args.idle_conns)
        report += table(med, targets, ("ka1", "hs1"),
                        "1 worker each, proxy pinned to CPU 0, load generator and backend on "
                        "CPU 1")
    if "h2" in args.scenarios:
        report += table(med, targets, ("h2load2", "h2load1"),
                        "HTTP/2 (TLS, ALPN h2; h2load -n %d -c %d -m %d): 2 workers, and 1 "
                        "worker pinned to CPU 0 with h2load and the backend on CPU 1" % (
                            args.h2_requests, args.connections, args.h2_streams))
        report += table(med, targets, ("h2mem",),
                        "HTTP/2 memory: VmRSS of all proxy processes, idle and with %d idle "
                        "HTTP/2 connections (2 workers)" % args.h2_idle_conns)
    if "tlsup" in args.scenarios:
        report += table(med, targets, ("tlsup1",),
                        "HTTPS to the upstream (wrk -c %d -t 1, %d s, HTTP/1.1 keep-alive over "
                        "TLS; the proxy to an nginx TLS 1.3 backend, verified against the "
                        "run's CA, keep-alive): 1 worker pinned to CPU 0, wrk and the backend "
                        "on CPU 1" % (args.connections, args.ka_seconds))
    if "h2cup" in args.scenarios:
        report += table(med, targets, ("h2cup1",),
                        "h2c to the upstream (h2load -n %d -c %d -m %d over TLS, ALPN h2; the "
                        "proxy to nghttpd --no-tls by HTTP/2 prior knowledge): 1 worker pinned "
                        "to CPU 0, h2load and the backend on CPU 1" % (
                            args.h2_requests, args.connections, args.h2_streams))
    report += goals(med, args.scenarios) if "gatehouse" in targets else []
    report += against_baseline(med)
    probs = problems(rounds, targets)
    if probs:
        report += ["### Problems", ""] + probs + [""]
    text = "\n".join(report)
    print(text)

    os.makedirs(args.results_dir, exist_ok=True)
    path = os.path.join(args.results_dir, started.strftime("%Y%m%d-%H%M%S") + ".json")
    with open(path, "w") as f:
        json.dump({"started": started.isoformat(), "versions": versions(args),
                   "settings": {k: v for k, v in vars(args).items()},
                   "rounds": rounds, "medians": med, "report": text}, f, indent=1)
    log("raw results: %s" % path)
    if any(line.startswith("- round") for line in probs):  # a failure, not just noise
        log("configs and logs kept in %s" % tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
