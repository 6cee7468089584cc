#!/usr/bin/env python3
"""test_container: the container deployment (docker/), checked without a
Docker engine, which this machine does not have.

  * docker/Dockerfile: the build stage installs scripts/deps' build
    packages; the runtime stage's packages (with what Debian's slim image
    already holds) cover every shared library the built binary needs, by
    the packages' own file lists; it runs as a non-root user with the
    capability, a /data volume, a health check and SIGTERM.
  * The binary with the Dockerfile's exact setcap, run as an unprivileged
    user with only the environment for configuration: it binds a port
    below 1024, holds cap_net_bind_service and nothing else, answers
    `gatehouse health` and drains on SIGTERM. Without the capability it
    refuses with a clear message; with the capability dropped from the
    bounding set (--cap-drop) it still starts.
  * Variables and flags are one to one, and an environment-only
    configuration equals the equivalent file (`validate --print`).
  * docker/compose.yaml parses and agrees with the Dockerfile and itself,
    and its wiring (docker/pebble-entrypoint.sh, challtestsrv's arguments,
    Gatehouse's variables) obtains a certificate on demand when replayed
    on loopback.
  * docker/compose.fleet.yaml (issue 15) parses; its nodes run
    docker/fleet/gatehouse.json, which `gatehouse validate` accepts and
    which names the file's etcd members; HAProxy's config (haproxy -c)
    balances over the nodes, and challtestsrv sends every name to it.
"""

import json
import os
import re
import shlex
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

try:
    import yaml
except ImportError:  # scripts/deps installs python3-yaml
    yaml = None

DOCKER = os.path.join(h.SOURCE_DIR, "docker")
DOCKERFILE = os.path.join(DOCKER, "Dockerfile")
COMPOSE = os.path.join(DOCKER, "compose.yaml")
NOBODY = 65534
CAP_NET_BIND_SERVICE = 1 << 10


# --- reading the Dockerfile --------------------------------------------------------


def dockerfile_stages():
    """The Dockerfile as [{"name", "from", "instructions": [(KEYWORD, args)]}],
    continuation lines joined and comments dropped."""
    lines, cur = [], ""
    with open(DOCKERFILE) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not cur and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.lstrip().startswith("#"):
                continue  # a comment inside a continued instruction
            if line.endswith("\\"):
                cur += line[:-1] + " "
                continue
            lines.append(cur + line)
            cur = ""
    stages = []
    for line in lines:
        kw, _, args = line.strip().partition(" ")
        kw = kw.upper()
        if kw == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            stages.append({"from": m.group(1), "name": m.group(2), "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((kw, args.strip()))
    return stages


def stage(name):
    for s in dockerfile_stages():
        if s["name"] == name:
            return s
    raise h.Fail("docker/Dockerfile has no stage %r" % name)


def instructions(st, kw):
    return [a for k, a in st["instructions"] if k == kw]


def apt_packages(st):
    """(installed, purged) package names of a stage's RUN apt-get lines."""
    installed, purged = set(), set()
    for run in instructions(st, "RUN"):
        for cmd in re.split(r"&&|;", run):
            words = shlex.split(cmd)
            words = [w for w in words if "=" not in w or w.startswith("-")]  # VAR=x prefixes
            if len(words) < 3 or words[0] != "apt-get":
                continue
            pkgs = {w for w in words[2:] if not w.startswith("-")}
            if words[1] == "install":
                installed |= pkgs
            elif words[1] in ("purge", "remove"):
                purged |= pkgs
    return installed, purged


def runtime_env():
    """The runtime stage's ENV, as a dict."""
    env = {}
    for args in instructions(stage("runtime"), "ENV"):
        for word in shlex.split(args):
            k, _, v = word.partition("=")
            env[k] = v
    return env


def setcap_spec():
    """The capability text of the runtime stage's setcap, e.g.
    "cap_net_bind_service=+p"."""
    for run in instructions(stage("runtime"), "RUN"):
        m = re.search(r"setcap\s+(\S+)\s+/usr/local/bin/gatehouse", run)
        if m:
            return m.group(1)
    raise h.Fail("the runtime stage does not setcap /usr/local/bin/gatehouse")


# --- the quick mode's table --------------------------------------------------------


def quick_table():
    """[(flag, metavar or None, variable, is_list)] from `gatehouse help proxy`."""
    r = h.gatehouse_cmd("help", "proxy")
    h.eq(r.returncode, 0, "exit status of `gatehouse help proxy`")
    rows = []
    for line in r.stdout.splitlines():
        m = re.match(r"^  (--[a-z0-9-]+)(?: (\S+))?\s+(GATEHOUSE_[A-Z0-9_]+)( \(a list\))?$", line)
        if m:
            rows.append((m.group(1), m.group(2), m.group(3), bool(m.group(4))))
    h.check(len(rows) >= 19, "`gatehouse help proxy` lists %d flags: %r" % (len(rows), r.stdout))
    return rows


def known_variables():
    return {row[2] for row in quick_table()}


def clean_env(extra):
    """The test's environment without GATEHOUSE_* variables, plus |extra|."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env.update(extra)
    return env


def print_config(args, env):
    r = h.gatehouse_cmd("proxy", *args, "--print-config", env=clean_env(env))
    h.eq(r.returncode, 0, "gatehouse proxy %s with %r: %s" % (args, env, r.stderr))
    return json.loads(r.stdout)


# --- 1. the Dockerfile --------------------------------------------------------------


def deps_build_packages():
    with open(os.path.join(h.SOURCE_DIR, "scripts", "deps")) as f:
        text = f.read()
    m = re.search(r"BUILD_PKGS=\(([^)]*)\)", text)
    h.check(m, "scripts/deps has no BUILD_PKGS=(...)")
    return set(m.group(1).split())


def test_build_stage_installs_what_scripts_deps_installs():
    installed, _ = apt_packages(stage("build"))
    h.eq(sorted(installed), sorted(deps_build_packages()),
         "the build stage's packages against scripts/deps BUILD_PKGS")
    runs = " ".join(instructions(stage("build"), "RUN"))
    h.contains(runs, "cmake -S", "the build stage configures with CMake")
    h.contains(runs, "--target gatehouse", "the build stage builds gatehouse")
    h.eq(dockerfile_stages()[-1]["name"], "runtime",
         "the last stage (docker build's default target)")
    for st in dockerfile_stages():
        h.check(st["from"] in ("${DEBIAN}", "debian:12-slim"),
                "stage %s is FROM %s, not Debian 12" % (st["name"], st["from"]))
    with open(DOCKERFILE) as f:
        h.check(re.search(r"^ARG DEBIAN=debian:12-slim$", f.read(), re.M),
                "the base image is not ARG DEBIAN=debian:12-slim")


def test_build_stage_configures_with_its_packages_only():
    """The build stage has scripts/deps' build packages and no python3 (the
    test peers' language): its CMake configure must not ask for it. Runs
    the stage's cmake configure line here and checks what it looked up."""
    run = " ".join(instructions(stage("build"), "RUN"))
    m = re.search(r"cmake -S \. -B /build((?: -D\S+)*)", run)
    h.check(m, "no `cmake -S . -B /build` in the build stage: %s" % run)
    defs = m.group(1).split()
    h.contains(defs, "-DGATEHOUSE_TESTS=OFF", "the build stage's cmake options")
    d = os.path.join(h.subdir("image-build"), "b")
    r = subprocess.run(["cmake", "-S", h.SOURCE_DIR, "-B", d] + defs, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120)
    h.eq(r.returncode, 0, "the build stage's configure: %s" % r.stdout.decode()[-2000:])
    with open(os.path.join(d, "CMakeCache.txt")) as f:
        cache = f.read()
    h.check(not re.search(r"^PYTHON3:", cache, re.M), "configure looked for python3")
    h.check(re.search(r"^CMAKE_BUILD_TYPE:STRING=Release$", cache, re.M), "a Release build")
    r = subprocess.run(["cmake", "--build", d, "--target", "help"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    targets = r.stdout.decode()
    for t in ("gatehouse", "gh_echo"):
        h.check(re.search(r"^\.\.\. %s$" % t, targets, re.M), "no target %s: %s" % (t, targets))


def dpkg_status():
    """{package: {"depends": [[alternatives]], "priority", "essential"}} of
    the installed packages (architecture qualifiers dropped)."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Abbrev}\t${Priority}\t${Essential}"
         "\t${Pre-Depends}\t${Depends}\n"],
        stdout=subprocess.PIPE, check=True).stdout.decode()
    pkgs = {}
    for line in out.splitlines():
        name, status, prio, ess, pre, dep = (line.split("\t") + [""] * 6)[:6]
        if not status.startswith("ii"):
            continue
        alts = []
        for clause in ", ".join(x for x in (pre, dep) if x).split(","):
            clause = clause.strip()
            if clause:
                alts.append([re.split(r"[\s:(]", a.strip())[0] for a in clause.split("|")])
        pkgs[name] = {"depends": alts, "priority": prio, "essential": ess == "yes"}
    return pkgs


def closure(roots, pkgs):
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p in seen or p not in pkgs:
            continue
        seen.add(p)
        for alts in pkgs[p]["depends"]:
            for a in alts:
                if a in pkgs:
                    todo.append(a)
                    break
    return seen


def package_files(names):
    files = set()
    for n in names:
        r = subprocess.run(["dpkg-query", "-L", n], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
        for path in r.stdout.decode().splitlines():
            files.add(os.path.realpath(path))
    return files


def binary_libraries():
    """The resolved shared libraries of the built gatehouse (ldd), without
    the sanitizer runtimes of an ASan build, which the image's Release
    build does not link."""
    out = subprocess.run(["ldd", h.GATEHOUSE_BIN], stdout=subprocess.PIPE, check=True)
    libs = []
    for line in out.stdout.decode().splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line) or re.match(r"\s*(/\S+) \(", line)
        if not m:
            continue
        path = m.group(m.lastindex)
        if path == "not":
            raise h.Fail("ldd: %s is not found" % line.strip())
        if re.search(r"lib(asan|ubsan|lsan)\.so", path):
            continue
        libs.append(os.path.realpath(path))
    h.check(len(libs) >= 5, "ldd found only %r" % libs)
    return libs


def test_runtime_packages_cover_every_shared_library():
    installed, purged = apt_packages(stage("runtime"))
    kept = installed - purged
    for want in ("libuv1", "libcjson1", "libnghttp2-14", "android-libboringssl"):
        h.check(want in kept, "the runtime stage does not install %s" % want)
    h.check("libcap2-bin" not in kept, "setcap's package must not stay in the image")
    for dev in kept:
        h.check(not dev.endswith("-dev") and dev not in ("build-essential", "cmake"),
                "the runtime stage installs build package %s" % dev)
    pkgs = dpkg_status()
    # What debian:12-slim holds already: the Essential and required set.
    base = {p for p, v in pkgs.items() if v["essential"] or v["priority"] == "required"}
    libs = binary_libraries()

    def uncovered(roots):
        files = package_files(closure(roots, pkgs))
        return [lib for lib in libs if lib not in files]

    missing = uncovered(base | kept)
    h.eq(missing, [], "shared libraries of gatehouse no runtime package ships")
    # Each listed library package is needed: without it, something is
    # uncovered (so the check above can fail).
    for lib_pkg in ("libuv1", "libcjson1", "libnghttp2-14", "android-libboringssl"):
        h.check(uncovered(base | (kept - {lib_pkg})),
                "without %s every library is still covered: is it needed?" % lib_pkg)


def test_runtime_stage_user_volume_health_and_signal():
    rt = stage("runtime")
    users = instructions(rt, "USER")
    h.check(users, "the runtime stage sets no USER")
    h.check(users[-1] not in ("root", "0") and not users[-1].startswith("0:"),
            "the image runs as %r" % users[-1])
    runs = " ".join(instructions(rt, "RUN"))
    m = re.search(r"useradd\b[^&]*\b%s\b" % re.escape(users[-1]), runs)
    h.check(m, "the runtime stage does not create user %r" % users[-1])
    uid = re.search(r"--uid\s+(\d+)", m.group(0))
    h.check(uid and int(uid.group(1)) != 0, "the user's uid: %r" % m.group(0))
    h.contains(runs, "-o %s" % users[-1], "/data is owned by the image's user")
    h.check(any("/data" in v for v in instructions(rt, "VOLUME")), "no VOLUME /data")
    env = runtime_env()
    h.eq(env.get("GATEHOUSE_STORAGE"), "/data", "GATEHOUSE_STORAGE in the image")
    known = known_variables()
    for k in env:
        h.check(k in known, "the image sets %s, which is not a gatehouse variable" % k)
    checks = instructions(rt, "HEALTHCHECK")
    h.check(checks and "gatehouse" in checks[0] and "health" in checks[0],
            "HEALTHCHECK does not run `gatehouse health`: %r" % checks)
    # A unix socket in the data volume: no token to hand around (the file
    # is the image user's, 0600), and writable even with --read-only.
    h.check(env.get("GATEHOUSE_ADMIN", "").startswith("unix:/data/"),
            "the health check needs the admin API on a unix socket in /data: "
            "GATEHOUSE_ADMIN=%r" % env.get("GATEHOUSE_ADMIN"))
    h.eq(instructions(rt, "STOPSIGNAL"), ["SIGTERM"], "STOPSIGNAL")
    h.eq(sorted(" ".join(instructions(rt, "EXPOSE")).split()), ["443", "80"], "EXPOSE")
    entry = json.loads(instructions(rt, "ENTRYPOINT")[-1])
    cmd = json.loads(instructions(rt, "CMD")[-1])
    h.eq(entry + cmd, ["/usr/local/bin/gatehouse", "proxy"], "ENTRYPOINT + CMD")
    h.eq(setcap_spec(), "cap_net_bind_service=+p", "the file capability")


# --- 2. non-root, with only the capability ----------------------------------------


def free_low_port():
    for port in range(980, 600, -1):
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise h.Fail("no free port below 1024 on 127.0.0.1")


def world_dir(name):
    """A directory the unprivileged user can enter (the harness's are
    private)."""
    d = tempfile.mkdtemp(prefix="gh-container-%s-" % name)
    os.chmod(d, 0o755)
    _cleanup.append(d)
    return d


_cleanup = []


def image_binary(with_cap):
    """A copy of the built binary in a world-readable place, with the
    Dockerfile's setcap applied when |with_cap|."""
    d = world_dir("bin")
    path = os.path.join(d, "gatehouse")
    shutil.copy(h.GATEHOUSE_BIN, path)
    os.chmod(path, 0o755)
    if with_cap:
        subprocess.run(["setcap", setcap_spec(), path], check=True)
        got = subprocess.run(["getcap", path], stdout=subprocess.PIPE, check=True).stdout
        h.contains(got.decode(), "cap_net_bind_service=p", "getcap of the copy")
    return path


def static_cert():
    d = world_dir("cert")
    crt, key = h.ca().leaf(["app.test"])
    out = []
    for src in (crt, key):
        dst = os.path.join(d, os.path.basename(src))
        shutil.copy(src, dst)
        os.chmod(dst, 0o644)
        out.append(dst)
    return out


def as_nobody(argv, extra=()):
    """|argv| as uid/gid nobody, as a USER line makes it; |extra| are more
    setpriv options (what docker run's --cap-drop or --security-opt
    no-new-privileges do)."""
    # setpriv keeps its own permitted capabilities across the uid change;
    # exec'ing env(1) first drops them, so gatehouse starts as a container's
    # non-root process does: with nothing but what its file grants.
    return ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
            "--inh-caps=-all"] + list(extra) + ["env", "--"] + argv


def proc_status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def container_env(extra):
    """The image's ENV, then what `docker run -e` would add."""
    env = runtime_env()
    env.update(extra)
    return clean_env(env)


def test_non_root_binds_a_low_port_with_only_the_capability():
    binary = image_binary(with_cap=True)
    crt, key = static_cert()
    echo = h.start_echo()
    port = free_low_port()
    storage = world_dir("data")
    os.chown(storage, NOBODY, NOBODY)
    # The image's admin socket, moved from /data to this test's data directory.
    sock = os.path.join(storage, "admin.sock")
    env = container_env({"GATEHOUSE_UPSTREAM": echo.addr, "GATEHOUSE_CERT": crt,
                         "GATEHOUSE_KEY": key, "GATEHOUSE_HTTPS": "127.0.0.1:%d" % port,
                         "GATEHOUSE_HTTP": "127.0.0.1:%d" % h.free_port(),
                         "GATEHOUSE_ADMIN": "unix:" + sock,
                         "GATEHOUSE_STORAGE": storage, "GATEHOUSE_WORKERS": "2"})
    g = h.Proc(h._next_name("gatehouse-nobody"), as_nobody([binary, "proxy"]), env=env)
    h.check_ready(g, [port])
    h.wait_until(lambda: os.path.exists(sock), 10, "the admin socket")
    st = proc_status(g.pid)
    h.check(all(int(u) == NOBODY for u in st["Uid"].split()), "Uid: %s" % st["Uid"])
    h.eq(int(st["CapEff"], 16), CAP_NET_BIND_SERVICE, "effective capabilities")
    h.eq(int(st["CapPrm"], 16), CAP_NET_BIND_SERVICE, "permitted capabilities")
    h.eq(int(st["CapInh"], 16), 0, "inheritable capabilities")
    h.eq(int(st.get("CapAmb", "0"), 16), 0, "ambient capabilities")
    # Every worker thread too: capabilities are per thread.
    for tid in os.listdir("/proc/%d/task" % g.pid):
        with open("/proc/%d/task/%s/status" % (g.pid, tid)) as f:
            eff = re.search(r"CapEff:\t(\w+)", f.read()).group(1)
        h.eq(int(eff, 16), CAP_NET_BIND_SERVICE, "thread %s effective capabilities" % tid)
    r = h.curl(port, "app.test", "/through")
    h.eq(r.status, 200, "a request through the non-root gatehouse: %s" % r.stderr)
    h.contains(r.body.decode(), "/through", "the backend's echo")
    # The HEALTHCHECK's command, as the image's user, with the image's
    # variables.
    health = subprocess.run(as_nobody([binary, "health", "--timeout", "4"]), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    h.eq(health.returncode, 0, "gatehouse health: %s" % health.stderr.decode())
    h.eq(health.stdout.decode().strip(), "ok", "gatehouse health's output")
    # docker stop: SIGTERM, drain, exit 0.
    g.signal(15)
    h.eq(g.wait_exit(20), 0, "exit status after SIGTERM")
    health = subprocess.run(as_nobody([binary, "health", "--timeout", "2"]), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    h.eq(health.returncode, 1, "gatehouse health with gatehouse stopped")
    h.contains(health.stderr.decode(), "connect", "why health failed")
    h.check(not os.path.exists(sock), "the admin socket is removed at exit")


def test_health_with_a_token_from_a_secret_file():
    """GATEHOUSE_ADMIN_TOKEN_FILE (a mounted secret) serves both the proxy's
    admin API and `gatehouse health`, which exits 1 on a wrong token."""
    crt, key = h.ca().leaf(["app.test"])
    secret = os.path.join(h.subdir("secrets"), "admin_token")
    with open(secret, "w") as f:
        f.write("a-long-admin-token\n")
    https, http, admin = h.free_port(), h.free_port(), h.free_port()
    env = container_env({"GATEHOUSE_UPSTREAM": "127.0.0.1:9", "GATEHOUSE_CERT": crt,
                         "GATEHOUSE_KEY": key, "GATEHOUSE_HTTPS": "127.0.0.1:%d" % https,
                         "GATEHOUSE_HTTP": "127.0.0.1:%d" % http,
                         "GATEHOUSE_ADMIN": "127.0.0.1:%d" % admin,
                         "GATEHOUSE_ADMIN_TOKEN_FILE": secret,
                         "GATEHOUSE_STORAGE": os.path.join(h.subdir("secrets"), "data")})
    g = h.Proc(h._next_name("gatehouse-token"), [h.GATEHOUSE_BIN, "proxy"], env=env)
    h.check_ready(g, [https, admin])
    r = h.gatehouse_cmd("health", env=env)
    h.eq((r.returncode, r.stdout.strip()), (0, "ok"), "health with the token file: %s" % r.stderr)
    wrong = dict(env, GATEHOUSE_ADMIN_TOKEN_FILE="", GATEHOUSE_ADMIN_TOKEN="not-the-token")
    r = h.gatehouse_cmd("health", env=wrong)
    h.eq(r.returncode, 1, "health with a wrong token")
    h.contains(r.stderr, "401", "why health failed")
    r = h.gatehouse_cmd("health", "--admin", "127.0.0.1:%d" % admin,
                        env=dict(env, GATEHOUSE_ADMIN_TOKEN_FILE=""))
    h.eq(r.returncode, 1, "health without a token")
    r = h.gatehouse_cmd("health",
                        env=dict(env, GATEHOUSE_ADMIN_TOKEN="a-long-admin-token"))
    h.eq(r.returncode, 1, "health with both the token and the token file")
    h.contains(r.stderr, "both set", "why")
    g.stop()
    # Docker reserves exit status 2: a health check that runs says 1 even
    # when there is nothing to ask; 2 is only for a malformed command line.
    r = h.gatehouse_cmd("health", env=clean_env({}))
    h.eq(r.returncode, 1, "health with no admin address")
    h.contains(r.stderr, "no admin address", "why")
    r = h.gatehouse_cmd("health", "--bogus", env=clean_env({}))
    h.eq(r.returncode, 2, "health with a bad flag")


def test_without_the_capability_the_error_says_why():
    crt, key = static_cert()
    port = free_low_port()
    env = container_env({"GATEHOUSE_UPSTREAM": "127.0.0.1:9", "GATEHOUSE_CERT": crt,
                         "GATEHOUSE_KEY": key, "GATEHOUSE_HTTPS": "127.0.0.1:%d" % port,
                         "GATEHOUSE_HTTP": "127.0.0.1:%d" % h.free_port(),
                         "GATEHOUSE_STORAGE": world_dir("data2"),
                         "GATEHOUSE_ADMIN": ""})
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        h.check(int(f.read()) > port, "this machine lets anyone bind port %d" % port)
    with_cap = image_binary(with_cap=True)
    cases = [("no file capability", image_binary(with_cap=False), []),
             # docker run --cap-drop ALL: the bounding set lacks it. A file
             # marked +ep would not even execute; +p starts and says why.
             ("capability dropped", with_cap, ["--bounding-set=-net_bind_service"]),
             # --security-opt no-new-privileges: file capabilities are
             # ignored.
             ("no new privileges", with_cap, ["--no-new-privs"])]
    for what, binary, bounding in cases:
        r = subprocess.run(as_nobody([binary, "proxy"], bounding), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        err = r.stderr.decode()
        h.check(r.returncode not in (0, 126) and r.returncode > 0,
                "%s: exit status %d: %s" % (what, r.returncode, err))
        h.contains(err, "listen 127.0.0.1:%d: bind: Permission denied" % port, what)
        h.contains(err, "cap_net_bind_service", what)
        h.check(not any(m in err for m in h.SANITIZER_MARKERS), "%s: %s" % (what, err))


# --- 3. variables and files --------------------------------------------------------


SAMPLE = {  # a valid value for each metavar
    "ADDR": "127.0.0.1:8081", "NAME": "app.test", "FILE": None, "N": "3",
    "json|combined|off": "combined", "debug|info|warn|error": "warn", "URL": None,
    "DIR": "/tmp/gh-container-storage", "tls-alpn-01|http-01|dns-01": "http-01",
    "PATTERN": "*.app.test", "TOKEN": "s3cret-token", "text|json": "json", "KID": "kid-1",
    "KEY": "c2VjcmV0LWhtYWMta2V5LTEyMzQ1Njc4OTBhYmNkZWY", "on|off": "off",
}
PAIRS = {"--cert": "--key", "--key": "--cert", "--eab-kid": "--eab-hmac-key",
         "--eab-hmac-key": "--eab-kid"}


def test_every_flag_has_one_variable_with_the_same_effect():
    crt, key = h.ca().leaf(["app.test"])
    rows = quick_table()
    h.eq(len({r[2] for r in rows}), len(rows), "distinct variables")
    h.eq(len({r[0] for r in rows}), len(rows), "distinct flags")
    base = ["--to", "127.0.0.1:9", "--acme-directory", "https://ca.test/dir", "--from", "a.test"]
    reference = print_config(base, {})
    for flag, metavar, var, is_list in rows:
        if flag in ("--print-config",):
            continue
        value = SAMPLE.get(metavar)
        if flag in ("--cert", "--acme-ca-root"):
            value = crt
        elif flag == "--key":
            value = key
        elif flag == "--eab-hmac-key":
            value = SAMPLE["KEY"]
        elif flag == "--acme-directory":
            value = "https://other.test/dir"
        elif flag == "--email":
            value = "ops@app.test"
        elif flag == "--ask":
            value = "http://127.0.0.1:9/ask"
        elif flag in ("--https", "--http"):
            value = "127.0.0.1:%d" % (8443 if flag == "--https" else 8080)
        elif flag == "--admin":  # a TCP address would need a token
            value = "unix:/tmp/gatehouse-admin.sock"
        args = list(base)
        if flag == "--admin-token":  # a token goes with an admin address
            args += ["--admin", "127.0.0.1:2019"]
        # The flag under test replaces the base's value for it.
        if flag in base:
            i = base.index(flag)
            args = base[:i] + base[i + 2:]
        if flag in PAIRS:  # given together: the other half as a flag
            other = PAIRS[flag]
            args += [other, {"--cert": crt, "--key": key}.get(other) or
                     SAMPLE[[r[1] for r in rows if r[0] == other][0]]]
        env_args = list(args)
        if metavar is None:  # a switch
            by_flag = print_config(args + [flag], {})
            by_env = print_config(env_args, {var: "true"})
            by_env_off = print_config(env_args, {var: "0"})
            h.check(by_env_off != by_flag, "%s=0 changes nothing?" % var)
        else:
            by_flag = print_config(args + [flag, value], {})
            by_env = print_config(env_args, {var: value})
        h.eq(by_env, by_flag, "%s against %s" % (var, flag))
        if flag not in PAIRS:
            h.check(by_flag != reference,
                    "%s %s changes nothing in the effective config" % (flag, value))


def test_lists_and_precedence():
    cfg = print_config([], {"GATEHOUSE_UPSTREAM": "127.0.0.1:1, 127.0.0.1:2",
                            "GATEHOUSE_ACME_DIRECTORY": "https://ca.test/dir",
                            "GATEHOUSE_ON_DEMAND_ALLOW": "*.a.test *.b.test"})
    h.eq(cfg["sites"][0]["upstreams"], ["127.0.0.1:1", "127.0.0.1:2"], "a comma list")
    h.eq(cfg["on_demand"]["allow"], ["*.a.test", "*.b.test"], "a space list")
    cfg = print_config(["--to", "127.0.0.1:3"],
                       {"GATEHOUSE_UPSTREAM": "127.0.0.1:1,127.0.0.1:2",
                        "GATEHOUSE_ACME_DIRECTORY": "https://ca.test/dir",
                        "GATEHOUSE_HOSTS": "a.test"})
    h.eq(cfg["sites"][0]["upstreams"], ["127.0.0.1:3"], "the flag overrides the variable")
    r = h.gatehouse_cmd("proxy", "--print-config", env=clean_env({
        "GATEHOUSE_UPSTREAM": "127.0.0.1:1", "GATEHOUSE_ACME_DIRECTORY": "https://ca.test/dir",
        "GATEHOUSE_ON_DEMAND_ALOW": "*.a.test"}))
    h.eq(r.returncode, 2, "a misspelt variable leaves the config incomplete")
    h.contains(r.stderr, "GATEHOUSE_ON_DEMAND_ALOW is not a gatehouse variable (ignored); did "
               "you mean GATEHOUSE_ON_DEMAND_ALLOW?", "the warning")
    r = h.gatehouse_cmd("proxy", env=clean_env({"GATEHOUSE_UPSTREAM": "backend:99999",
                                                "GATEHOUSE_ACME_DIRECTORY": "https://ca.test/dir",
                                                "GATEHOUSE_HOSTS": "a.test"}))
    h.eq(r.returncode, 2, "a bad value from the environment")
    h.contains(r.stderr, "<environment>: sites[0].upstreams[0]", "the error's place")
    h.contains(r.stderr, "backend:99999", "the error quotes the value")


def test_environment_only_equals_the_equivalent_file():
    """README "Deploy with Docker": the three-variable docker run, with the
    image's ENV, against the config file a user would mount instead."""
    crt, _ = h.ca().leaf(["ca.test"])
    env = runtime_env()
    env.update({"GATEHOUSE_UPSTREAM": "app:8080",
                "GATEHOUSE_ON_DEMAND_ALLOW": "*.example.com",
                "GATEHOUSE_ACME_DIRECTORY": "https://acme-staging-v02.api.letsencrypt.org/directory",
                "GATEHOUSE_EMAIL": "ops@example.com",
                "GATEHOUSE_ACME_CA_ROOT": crt})
    by_env = print_config([], env)
    doc = {
        "listen": {"https": [":443"], "http": [":80"]},
        "sites": [{"hosts": ["*"], "upstreams": ["app:8080"], "default": True}],
        "acme": {"directory": "https://acme-staging-v02.api.letsencrypt.org/directory",
                 "email": "ops@example.com", "ca_roots": [crt]},
        "on_demand": {"allow": ["*.example.com"]},
        "storage": "/data",
        "admin": {"listen": env["GATEHOUSE_ADMIN"]},
    }
    path = os.path.join(h.subdir("files"), "equivalent.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    r = h.gatehouse_cmd("validate", "-c", path, "--print")
    h.eq(r.returncode, 0, "validate the equivalent file: %s" % r.stderr)
    h.eq(by_env, json.loads(r.stdout), "environment-only config against the file")


def test_readme_lists_every_variable():
    with open(os.path.join(h.SOURCE_DIR, "README.md")) as f:
        readme = f.read()
    h.contains(readme, "## Deploy with Docker", "README")
    section = readme.split("## Deploy with Docker", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(GATEHOUSE_[A-Z0-9_]+)` \| `(--[a-z0-9-]+)", section, re.M)
    want = [(var, flag) for flag, _, var, _ in quick_table()]
    h.eq(sorted(listed), sorted(want), "README's table of variables and flags")
    blocks = re.findall(r"```json\n(.*?)```", section, re.S)
    h.check(blocks, "no example configuration file in the Docker section")
    for i, text in enumerate(blocks):
        path = os.path.join(h.subdir("files"), "readme-docker-%d.json" % i)
        with open(path, "w") as f:
            f.write(text)
        r = h.gatehouse_cmd("validate", "-c", path, "--print")
        h.eq(r.returncode, 0, "README's Docker example file: %s" % r.stderr)
        doc = json.loads(r.stdout)
        h.eq(doc["storage"], runtime_env()["GATEHOUSE_STORAGE"], "the example's storage")
        h.eq(doc["admin"]["listen"], runtime_env()["GATEHOUSE_ADMIN"], "the example's admin")
    h.contains(section, "docker build -f docker/Dockerfile", "the build command")
    h.contains(section, "docker compose -f docker/compose.yaml up", "the compose command")


# --- 4. docker/compose.yaml ---------------------------------------------------------


def compose():
    h.check(yaml is not None, "python3-yaml is missing (scripts/deps installs it)")
    with open(COMPOSE) as f:
        doc = yaml.safe_load(f)
    h.check(isinstance(doc, dict) and isinstance(doc.get("services"), dict),
            "docker/compose.yaml has no services mapping")
    return doc


def split_addr(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


def test_compose_file_agrees_with_the_dockerfile():
    doc = compose()
    svcs = doc["services"]
    h.eq(sorted(svcs), ["backend", "challtestsrv", "gatehouse", "pebble"], "services")
    stages = {s["name"]: s for s in dockerfile_stages()}
    for name, svc in svcs.items():
        b = svc.get("build")
        h.check(isinstance(b, dict), "%s has no build section" % name)
        ctx = os.path.normpath(os.path.join(DOCKER, b["context"]))
        h.eq(ctx, os.path.normpath(h.SOURCE_DIR), "%s's build context" % name)
        h.eq(os.path.normpath(os.path.join(ctx, b["dockerfile"])), DOCKERFILE,
             "%s's Dockerfile" % name)
        h.check(b.get("target") in stages, "%s builds target %r, not a Dockerfile stage"
                % (name, b.get("target")))
        h.check(svc.get("image", "").endswith(":local"), "%s's image name" % name)
    images = {}
    for name, svc in svcs.items():
        images.setdefault(svc["image"], set()).add(svc["build"]["target"])
    for image, targets in images.items():
        h.eq(len(targets), 1, "image %s is built from one target" % image)
    g = svcs["gatehouse"]
    h.eq(g["build"]["target"], "runtime", "gatehouse's target")
    exposed = set(" ".join(instructions(stage("runtime"), "EXPOSE")).split())
    for p in g["ports"]:
        h.check(str(p).rsplit(":", 1)[-1] in exposed, "port %s is not EXPOSEd" % p)
    known = known_variables()
    for k in g["environment"]:
        h.check(k in known, "compose sets %s, not a gatehouse variable" % k)
    vols = {v.split(":")[1]: v.split(":")[0] for v in g["volumes"]}
    h.check("/data" in vols, "the gatehouse service does not mount /data")
    h.check(str(g.get("stop_grace_period", "10s")).rstrip("s").isdigit() and
            int(str(g["stop_grace_period"]).rstrip("s")) > 30,
            "stop_grace_period must outlast the 30 s drain")
    # The wiring: Pebble validates on Gatehouse's ports at the address
    # challtestsrv gives every name; Gatehouse trusts Pebble's CA from the
    # shared volume and reaches Pebble and the backend by name.
    net = doc["networks"]["demo"]["ipam"]["config"][0]["subnet"]
    ips = {n: s["networks"]["demo"]["ipv4_address"] for n, s in svcs.items()}
    h.eq(len(set(ips.values())), len(ips), "distinct addresses")
    prefix = net.rsplit(".", 1)[0] + "."
    for n, ip in ips.items():
        h.check(ip.startswith(prefix), "%s's address %s is outside %s" % (n, ip, net))
    ct = svcs["challtestsrv"]["entrypoint"]
    h.eq(ct[0], "pebble-challtestsrv", "challtestsrv's program")
    opts = dict(zip(ct[1::2], ct[2::2]))
    h.eq(opts["-defaultIPv4"], ips["gatehouse"], "every name resolves to gatehouse")
    pe = svcs["pebble"]["environment"]
    h.eq(pe["PEBBLE_DEMO_DNS"], "%s:%d" % (ips["challtestsrv"], split_addr(opts["-dns01"])[1]),
         "Pebble's DNS server")
    env = dict(runtime_env())
    env.update(g["environment"])
    for var in ("GATEHOUSE_HTTPS", "GATEHOUSE_HTTP"):
        h.check(var not in env, "%s moves gatehouse off the port Pebble validates" % var)
    h.eq(int(pe["PEBBLE_DEMO_TLS_PORT"]), 443, "TLS-ALPN-01 port")
    h.eq(int(pe["PEBBLE_DEMO_HTTP_PORT"]), 80, "HTTP-01 port")
    u = urllib.parse.urlsplit(env["GATEHOUSE_ACME_DIRECTORY"])
    h.check(u.hostname in svcs and u.hostname == "pebble", "directory host %s" % u.hostname)
    h.eq(u.port, split_addr(pe["PEBBLE_DEMO_LISTEN"])[1], "directory port")
    h.check(u.hostname in pe["PEBBLE_DEMO_NAMES"].split(), "Pebble's cert names its host")
    root_dir = os.path.dirname(env["GATEHOUSE_ACME_CA_ROOT"])
    h.eq(vols.get(root_dir), "pebble-ca", "gatehouse mounts the Pebble CA volume")
    pvols = {v.split(":")[1]: v.split(":")[0] for v in svcs["pebble"]["volumes"]}
    h.eq(pvols.get(pe["PEBBLE_DEMO_CA_DIR"]), "pebble-ca", "Pebble writes its CA there")
    host, port = split_addr(env["GATEHOUSE_UPSTREAM"])
    h.eq(host, "backend", "the upstream")
    h.eq(str(port), " ".join(instructions(stage("echo"), "EXPOSE")), "the backend's port")
    for vol in ("gatehouse-data", "pebble-ca"):
        h.check(vol in doc.get("volumes", {}), "volume %s is not declared" % vol)


def test_compose_wiring_obtains_a_certificate_on_loopback():
    """docker compose up, replayed without containers: the compose file's
    challtestsrv arguments, docker/pebble-entrypoint.sh with the compose
    file's settings and Gatehouse with its variables, addresses moved to
    loopback ports."""
    doc = compose()
    svcs = doc["services"]
    ips = {n: s["networks"]["demo"]["ipv4_address"] for n, s in svcs.items()}
    https_port, http_port = h.free_port(), h.free_port()
    dns_port, ct_mgmt = h.free_port(), h.free_port()
    acme_port, mgmt_port = h.free_port(), h.free_port()

    def local(addr_or_ip):
        return "127.0.0.1" if addr_or_ip in ips.values() or addr_or_ip.startswith("0.0.0.0") \
            else addr_or_ip

    ct = list(svcs["challtestsrv"]["entrypoint"])
    opts = dict(zip(ct[1::2], ct[2::2]))
    moved = {"-dns01": "127.0.0.1:%d" % dns_port, "-management": "127.0.0.1:%d" % ct_mgmt,
             "-defaultIPv4": local(opts["-defaultIPv4"])}
    argv = [ct[0]]
    for k, v in zip(ct[1::2], ct[2::2]):
        argv += [k, moved.get(k, v)]
    challtestsrv = h.Proc("challtestsrv", argv)
    h.check_ready(challtestsrv, [ct_mgmt])

    ca_dir = os.path.join(h.subdir("pebble-ca"), "ca")
    pe = dict(svcs["pebble"]["environment"])
    pe.update({"PEBBLE_DEMO_CA_DIR": ca_dir,
               "PEBBLE_DEMO_LISTEN": "127.0.0.1:%d" % acme_port,
               "PEBBLE_DEMO_MGMT_LISTEN": "127.0.0.1:%d" % mgmt_port,
               "PEBBLE_DEMO_HTTP_PORT": str(http_port),
               "PEBBLE_DEMO_TLS_PORT": str(https_port),
               "PEBBLE_DEMO_DNS": "127.0.0.1:%d" % dns_port})
    pebble = h.Proc("pebble", [os.path.join(DOCKER, "pebble-entrypoint.sh")], env=pe)
    h.check_ready(pebble, [acme_port, mgmt_port])
    for f in ("ca.pem", "pebble.pem", "pebble.key"):
        h.check(os.path.exists(os.path.join(ca_dir, f)), "the entrypoint made %s" % f)
    # Pebble's health check (what gatehouse's depends_on waits for), on
    # the moved address and directory.
    hc = svcs["pebble"]["healthcheck"]["test"]
    h.eq(hc[0], "CMD-SHELL", "Pebble's health check form")
    listen = svcs["pebble"]["environment"]["PEBBLE_DEMO_LISTEN"].replace("0.0.0.0", "127.0.0.1")
    cmd = hc[1].replace(svcs["pebble"]["environment"]["PEBBLE_DEMO_CA_DIR"], ca_dir)
    h.contains(cmd, listen, "the health check's address")
    cmd = cmd.replace(listen, "127.0.0.1:%d" % acme_port)
    r = subprocess.run(["sh", "-c", cmd], stdin=subprocess.DEVNULL, timeout=30)
    h.eq(r.returncode, 0, "Pebble's health check: %s" % cmd)
    mode = stat.S_IMODE(os.stat(os.path.join(ca_dir, "pebble.key")).st_mode)
    h.eq(mode, 0o600, "mode of Pebble's key")

    echo = h.start_echo()
    g = svcs["gatehouse"]
    env = runtime_env()
    env.update({k: str(v) for k, v in g["environment"].items()})
    u = urllib.parse.urlsplit(env["GATEHOUSE_ACME_DIRECTORY"])
    # "pebble" would resolve inside the compose network; here it is
    # "localhost", the other name the entrypoint puts in Pebble's cert.
    h.check("localhost" in pe["PEBBLE_DEMO_NAMES"].split(), "Pebble's cert names localhost")
    env.update({"GATEHOUSE_ACME_DIRECTORY": "https://localhost:%d%s" % (acme_port, u.path),
                "GATEHOUSE_ACME_CA_ROOT": os.path.join(ca_dir, os.path.basename(
                    env["GATEHOUSE_ACME_CA_ROOT"])),
                "GATEHOUSE_UPSTREAM": echo.addr,
                "GATEHOUSE_STORAGE": os.path.join(h.subdir("data"), "store"),
                "GATEHOUSE_ADMIN": "unix:" + os.path.join(h.subdir("data"), "admin.sock"),
                "GATEHOUSE_HTTPS": "127.0.0.1:%d" % https_port,
                "GATEHOUSE_HTTP": "127.0.0.1:%d" % http_port})
    gw = h.Proc("gatehouse-compose", [h.GATEHOUSE_BIN, "proxy"], env=clean_env(env))
    h.check_ready(gw, [https_port, http_port])
    pattern = env["GATEHOUSE_ON_DEMAND_ALLOW"]
    h.check(pattern.startswith("*."), "the compose file allows %r" % pattern)
    name = "hello-%d%s" % (os.getpid(), pattern[1:])
    roots = os.path.join(h.subdir("pebble-ca"), "roots.pem")
    ctx = ssl.create_default_context(cafile=os.path.join(ca_dir, "ca.pem"))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=ctx))
    with opener.open("https://localhost:%d/roots/0" % mgmt_port, timeout=10) as resp:
        with open(roots, "wb") as f:
            f.write(resp.read())
    r = h.curl(https_port, name, "/compose", cafile=roots)
    h.eq(r.status, 200, "first request for %s: %s\n%s" % (name, r.stderr, gw.tail()))
    h.contains(r.body.decode(), "/compose", "the backend's echo")
    info, out = h.s_client_cert(https_port, name)
    h.check(info and name in info["sans"], "the certificate names %s: %r" % (name, info or out))
    r = h.curl(https_port, "outside.example", "/", cafile=roots)
    h.check(r.status == 0, "a name outside %s is refused at the handshake" % pattern)


# --- 5. docker/compose.fleet.yaml (issue 15) ------------------------------------------

COMPOSE_FLEET = os.path.join(DOCKER, "compose.fleet.yaml")


def test_compose_fleet_file_haproxy_and_node_config():
    """docker/compose.fleet.yaml parses; its locally built services build
    Dockerfile stages; the nodes run the mounted docker/fleet config, which
    `gatehouse validate` accepts and which names the compose file's etcd
    members, Pebble and backend; the etcd members form one cluster;
    challtestsrv sends every name to HAProxy, whose config (haproxy -c)
    balances over the nodes' addresses."""
    h.check(yaml is not None, "python3-yaml is missing (scripts/deps installs it)")
    with open(COMPOSE_FLEET) as f:
        doc = yaml.safe_load(f)
    svcs = doc["services"]
    nodes = sorted(n for n in svcs if n.startswith("gh"))
    members = sorted(n for n in svcs if n.startswith("etcd"))
    h.eq(nodes, ["gh1", "gh2", "gh3"], "gatehouse nodes")
    h.eq(members, ["etcd1", "etcd2", "etcd3"], "etcd members")
    for n in ("haproxy", "pebble", "challtestsrv", "backend"):
        h.check(n in svcs, "no %s service" % n)
    stages = {st["name"] for st in dockerfile_stages()}
    for name, svc in svcs.items():
        b = svc.get("build")
        if b is None:
            h.check(svc.get("image"), "%s has neither build nor image" % name)
            continue
        h.eq(os.path.normpath(os.path.join(DOCKER, b["context"])), os.path.normpath(h.SOURCE_DIR),
             "%s's build context" % name)
        h.check(b.get("target") in stages, "%s builds %r, not a Dockerfile stage"
                % (name, b.get("target")))
    net = doc["networks"]["fleet"]["ipam"]["config"][0]["subnet"]
    ips = {n: s["networks"]["fleet"]["ipv4_address"] for n, s in svcs.items()}
    h.eq(len(set(ips.values())), len(ips), "distinct addresses")
    for n, ip in ips.items():
        h.check(ip.startswith(net.rsplit(".", 1)[0] + "."), "%s's address %s" % (n, ip))
    # The nodes: one configuration file, mounted from docker/fleet/.
    conf_path = None
    for n in nodes:
        g = svcs[n]
        h.eq(g["build"]["target"], "runtime", "%s's target" % n)
        h.eq(g.get("hostname"), n, "%s's host name (its fleet node name)" % n)
        mounts = {v.split(":")[1]: v.split(":")[0] for v in g["volumes"]}
        cmd = g["command"]
        h.eq(cmd[:2], ["run", "-c"], "%s's command" % n)
        src = mounts.get(cmd[2])
        h.check(src, "%s's config %s is not mounted" % (n, cmd[2]))
        src = os.path.normpath(os.path.join(DOCKER, src))
        h.check(conf_path in (None, src), "nodes run different configs")
        conf_path = src
        h.check("/data" in mounts, "%s mounts no /data" % n)
        h.check(str(g.get("stop_grace_period", "10s")).rstrip("s").isdigit() and
                int(str(g["stop_grace_period"]).rstrip("s")) > 30, "%s's stop_grace_period" % n)
    with open(conf_path) as f:
        conf = json.load(f)
    h.check("node" not in conf.get("fleet", {}), "the shared config names no node")
    endpoints = conf["storage"]["etcd"]["endpoints"]
    h.eq(sorted(urllib.parse.urlsplit(u).hostname for u in endpoints), members,
         "the nodes' etcd endpoints")
    for u in endpoints:
        h.check(("--advertise-client-urls=%s" % u) in svcs[urllib.parse.urlsplit(u).hostname]
                ["command"], "%s is the member's advertised client URL" % u)
    h.eq(conf["storage"]["directory"], "/data", "the nodes' local copy is in the volume")
    pe = svcs["pebble"]["environment"]
    u = urllib.parse.urlsplit(conf["acme"]["directory"])
    h.eq((u.hostname, u.port), ("pebble", split_addr(pe["PEBBLE_DEMO_LISTEN"])[1]),
         "the ACME directory")
    h.eq(conf["sites"][0]["upstreams"], ["backend:8080"], "the upstream")
    # Validate it as the image would see it: the Pebble CA volume stands in
    # for a file of ours.
    local = dict(conf)
    local["acme"] = dict(conf["acme"], ca_roots=[h.ca().cert])
    d = h.subdir("fleet-conf")
    path = os.path.join(d, "gatehouse.json")
    with open(path, "w") as f:
        json.dump(local, f)
    r = h.gatehouse_cmd("validate", "-c", path)
    h.eq((r.returncode, r.stdout.strip()), (0, "OK"), "validate %s (%s)" % (conf_path, r.stderr))
    # etcd: one cluster of the three members.
    cluster = None
    for m in members:
        opts = dict(a.split("=", 1) for a in svcs[m]["command"][1:])
        h.eq(opts["--name"], m, "%s's member name" % m)
        h.eq(opts["--initial-cluster-state"], "new", "%s's cluster state" % m)
        h.check(cluster in (None, opts["--initial-cluster"]), "one --initial-cluster")
        cluster = opts["--initial-cluster"]
        h.contains(cluster, "%s=%s" % (m, opts["--initial-advertise-peer-urls"]),
                   "the initial cluster")
    # Pebble's validator is sent to HAProxy, which balances over the nodes.
    ct = svcs["challtestsrv"]["entrypoint"]
    opts = dict(zip(ct[1::2], ct[2::2]))
    h.eq(opts["-defaultIPv4"], ips["haproxy"], "every name resolves to HAProxy")
    h.eq(pe["PEBBLE_DEMO_DNS"], "%s:%d" % (ips["challtestsrv"], split_addr(opts["-dns01"])[1]),
         "Pebble's DNS server")
    ha = svcs["haproxy"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in ha["volumes"]}
    cfg = os.path.normpath(os.path.join(DOCKER, mounts["/usr/local/etc/haproxy/haproxy.cfg"]))
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    r = subprocess.run([haproxy, "-c", "-f", cfg], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    h.eq(r.returncode, 0, "haproxy -c %s: %s" % (cfg, r.stdout.decode(errors="replace")))
    with open(cfg) as f:
        text = f.read()
    h.contains(text, "mode tcp", "HAProxy passes TLS through")
    for port in (443, 80):
        servers = re.findall(r"^\s*server \S+ ([\d.]+):%d\b" % port, text, re.M)
        h.eq(sorted(servers), sorted(ips[n] for n in nodes), "HAProxy's servers on %d" % port)
    h.eq(int(pe["PEBBLE_DEMO_TLS_PORT"]), 443, "TLS-ALPN-01 port")
    h.eq(int(pe["PEBBLE_DEMO_HTTP_PORT"]), 80, "HTTP-01 port")
    for vol in [n + "-data" for n in nodes + members] + ["pebble-ca"]:
        h.check(vol in doc.get("volumes", {}), "volume %s is not declared" % vol)


def _remove_dirs():
    for d in _cleanup:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    import atexit
    atexit.register(_remove_dirs)
    h.main()
