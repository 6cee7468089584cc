"""test_acme_engine.py: the ACME engine (acme/engine.c, acme/order.c)
against a real Pebble, through the gh_obtain driver (tests/acme/obtain.c,
from GH_OBTAIN_BIN, else the newest build/*/tests/acme/gh_obtain).

gh_obtain serves the challenge table itself (HTTP-01 on listen.http,
TLS-ALPN-01 on listen.https), so Pebble validates for real; dns-01 goes
through acme_dns_hook.sh and pebble-challtestsrv."""

import glob
import http.server
import json
import os
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import pebble   # noqa: E402

OBTAIN_BIN = harness._find_bin("GH_OBTAIN_BIN", os.path.join("tests", "acme", "gh_obtain"))
HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "acme_dns_hook.sh")

_pebble = None


def pb():
    global _pebble
    if _pebble is None:
        _pebble = pebble.start(validity_seconds=3600)
    return _pebble


def config(p, storage, challenges, email="ops@example.com", eab=None, directory=None,
           ca_roots=None, extra=None):
    acme = {
        "directory": directory or p.directory_url,
        "email": email,
        "ca_roots": ca_roots or [p.ca_file],
        "challenges": challenges,
        "dns_hook": HOOK,
    }
    if eab:
        acme["eab"] = eab
    acme.update(extra or {})
    cfg = {
        "listen": {"https": ["127.0.0.1:%d" % p.tls_port], "http": ["127.0.0.1:%d" % p.http_port]},
        "sites": [{"hosts": ["placeholder.test"], "upstreams": ["127.0.0.1:9"]}],
        "acme": acme,
        "storage": storage,
        "log": {"level": "debug"},
    }
    path = os.path.join(harness.tmpdir(), "obtain-%d.json" % harness.free_port())
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def obtain(cfg, *args, p=None, env=None, timeout=120):
    """Runs gh_obtain; returns (exit code, parsed JSON line, stderr)."""
    e = dict(os.environ)
    if p is not None:
        e["CHALLTESTSRV_URL"] = "http://127.0.0.1:%d" % p.challtestsrv_port
    e.update(env or {})
    r = subprocess.run([OBTAIN_BIN, cfg] + list(args), env=e, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    err = r.stderr.decode(errors="replace")
    for m in harness.SANITIZER_MARKERS:
        harness.not_contains(err, m, "gh_obtain stderr")
    out = r.stdout.decode().strip().splitlines()
    harness.check(out, "gh_obtain printed nothing (exit %d); stderr:\n%s" % (r.returncode, err))
    # One line a callback: it came once.
    harness.eq(len(out), 1, "lines gh_obtain printed (%r)" % out)
    return r.returncode, json.loads(out[-1]), err


def storage_dir():
    return os.path.join(harness.tmpdir(), "storage-%d" % harness.free_port())


def cert_pem_path(storage, name):
    return os.path.join(storage, "certs", name.replace("*.", "_wildcard."), "cert.pem")


def verify_chain(p, storage, name):
    d = harness.subdir("verify-%d" % harness.free_port())
    root = os.path.join(d, "root.pem")
    with open(root, "w") as f:
        f.write(p.root_pem(0))
    inter = os.path.join(d, "inter.pem")
    with open(inter, "w") as f:
        f.write(p.intermediate_pem(0))
    chain = cert_pem_path(storage, name)
    r = subprocess.run(["openssl", "verify", "-CAfile", root, "-untrusted", chain, chain],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    harness.eq(r.returncode, 0, "openssl verify of %s (%s%s)" % (chain, r.stdout.decode(),
                                                                r.stderr.decode()))
    r2 = subprocess.run(["openssl", "verify", "-CAfile", root, "-untrusted", inter, chain],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    harness.eq(r2.returncode, 0, "openssl verify with the management API's intermediate")
    with open(os.path.join(os.path.dirname(chain), "meta.json")) as f:
        meta = json.load(f)
    harness.check(name in meta["names"], "meta.json names %r" % meta)
    for k in ("issuer", "not_before", "not_after", "order_url", "ca"):
        harness.check(meta.get(k), "meta.json has %s: %r" % (k, meta))


def account_count(p):
    return len(re.findall(r"There are now \d+ accounts", p.proc.stdout()))


_http_storage = None


def test_http01():
    global _http_storage
    p = pb()
    _http_storage = storage_dir()
    cfg = config(p, _http_storage, ["http-01"])
    rc, out, err = obtain(cfg, "h1.example.com", "h2.example.com", p=p)
    harness.eq(rc, 0, "gh_obtain exit (%s; %s)" % (out, err[-3000:]))
    harness.eq(sorted(out["sans"]), ["h1.example.com", "h2.example.com"], "SANs")
    harness.eq(out["subject"], "h1.example.com", "subject")
    harness.check(out["chain"] >= 2, "chain has the intermediate")
    verify_chain(p, _http_storage, "h1.example.com")
    harness.contains(err, "order for h1.example.com (2 names) finished in", "log line")
    harness.eq(account_count(p), 1, "accounts created at Pebble")


def test_authorizations_validated_in_parallel():
    """A many-name order answers every authorization's challenge before it
    polls any (the CA validates them at once), then polls each; each
    challenge is removed once its authorization is valid. 20 names over
    HTTP-01, 8 over TLS-ALPN-01."""
    p = pb()
    for challenge, n in (("http-01", 20), ("tls-alpn-01", 8)):
        names = ["par%d-%s.example.com" % (i, challenge.split("-")[0]) for i in range(n)]
        st = storage_dir()
        rc, out, err = obtain(config(p, st, [challenge]), *names, p=p)
        harness.eq(rc, 0, "%s: gh_obtain exit (%s; %s)" % (challenge, out, err[-3000:]))
        harness.eq(sorted(out["sans"]), sorted(names), "%s: SANs" % challenge)
        # The log shows every challenge chosen before the first authorization
        # is polled again: all answered, then all polled.
        chosen = [m.start() for m in re.finditer(r": %s for par\d+" % challenge, err)]
        harness.eq(len(chosen), n, "%s: challenges answered" % challenge)
        valid = [m.start() for m in re.finditer(r"authorization for par\d+\S* is valid", err)]
        harness.eq(len(valid), n, "%s: authorizations polled to valid" % challenge)
        harness.check(max(chosen) < min(valid), "%s: every challenge answered before the "
                      "first authorization was polled to valid" % challenge)
        verify_chain(p, st, names[0])


def test_account_reused():
    p = pb()
    before = account_count(p)
    cfg = config(p, _http_storage, ["http-01"])
    rc, out, err = obtain(cfg, "h3.example.com", p=p)
    harness.eq(rc, 0, "gh_obtain exit (%s; %s)" % (out, err[-3000:]))
    harness.eq(account_count(p), before, "accounts created at Pebble by the second run")
    harness.not_contains(err, "account ops@example.com at", "second run created no account")


def test_tlsalpn01():
    p = pb()
    st = storage_dir()
    rc, out, err = obtain(config(p, st, ["tls-alpn-01"]), "alpn.example.com", p=p)
    harness.eq(rc, 0, "gh_obtain exit (%s; %s)" % (out, err[-3000:]))
    harness.eq(out["sans"], ["alpn.example.com"], "SANs")
    verify_chain(p, st, "alpn.example.com")


def test_dns01_wildcard():
    p = pb()
    st = storage_dir()
    log = os.path.join(harness.tmpdir(), "hook.log")
    resolver = "127.0.0.1:%d" % p.dns_port  # challtestsrv: the DNS that Pebble asks
    rc, out, err = obtain(config(p, st, ["tls-alpn-01", "dns-01"],
                                 extra={"dns_resolvers": [resolver]}),
                          "*.wild.example.com", p=p, env={"CHALLTESTSRV_LOG": log})
    harness.eq(rc, 0, "gh_obtain exit (%s; %s)" % (out, err[-3000:]))
    harness.eq(out["sans"], ["*.wild.example.com"], "SANs")
    verify_chain(p, st, "*.wild.example.com")
    with open(log) as f:
        hook = f.read()
    harness.contains(hook, "present _acme-challenge.wild.example.com.", "hook present")
    harness.contains(hook, "cleanup _acme-challenge.wild.example.com.", "hook cleanup")
    # challtestsrv answers SOA queries with NOTIMP: no authoritative server
    # is found, and the check falls back to the resolver, saying so.
    harness.check(re.search(r"dns-01: no authoritative server found for "
                            r"_acme-challenge\.wild\.example\.com \(.*NOTIMP\): asking the "
                            r"resolvers instead", err), "fallback log line in:\n%s" % err[-3000:])
    # The propagation check saw the record before the challenge was answered.
    harness.check(re.search(r"dns-01: _acme-challenge\.wild\.example\.com visible at %s after "
                            r"\d+ ms" % re.escape(resolver), err),
                  "propagation log line in:\n%s" % err[-3000:])


def test_dns01_record_never_visible():
    # The hook exits 0 but publishes nothing: the order fails at the
    # propagation timeout, before the CA is asked, and cleanup still runs.
    p = pb()
    log = os.path.join(harness.tmpdir(), "hook-novis.log")
    resolver = "127.0.0.1:%d" % p.dns_port
    cfg = config(p, storage_dir(), ["dns-01"],
                 extra={"dns_resolvers": [resolver], "dns_propagation_timeout": "2s"})
    start = len(p.proc.stdout())
    rc, out, err = obtain(cfg, "*.novis.example.com", p=p,
                          env={"CHALLTESTSRV_LOG": log, "ACME_DNS_HOOK_NO_TXT": "1"})
    harness.eq(rc, 1, "exit (%s; %s)" % (out, err[-3000:]))
    for want in ("_acme-challenge.novis.example.com is not visible after 2 s",
                 "acme.dns_propagation_timeout", resolver):
        harness.contains(out["error"], want, "error")
    with open(log) as f:
        hook = f.read()
    harness.contains(hook, "present _acme-challenge.novis.example.com.", "hook present")
    harness.contains(hook, "cleanup _acme-challenge.novis.example.com.", "hook cleanup")
    harness.not_contains(p.proc.stdout()[start:], "POST /chalZ/",
                         "Pebble's log: the challenge was never answered")


def test_wildcard_without_dns01_fails_clearly():
    p = pb()
    rc, out, _ = obtain(config(p, storage_dir(), ["http-01"]), "*.nodns.example.com", p=p)
    harness.eq(rc, 1, "exit")
    harness.contains(out["error"], "wildcard needs dns-01", "error")


def test_dns_hook_failure():
    p = pb()
    rc, out, _ = obtain(config(p, storage_dir(), ["dns-01"], extra={"dns_hook": "/bin/false"}),
                        "*.hookfail.example.com", p=p)
    harness.eq(rc, 1, "exit")
    harness.contains(out["error"], "dns hook /bin/false present _acme-challenge.hookfail."
                     "example.com. failed (exit status 1", "error")


def test_revoke():
    p = pb()
    cfg = config(p, _http_storage, ["http-01"])
    chain = cert_pem_path(_http_storage, "h3.example.com")
    r = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", chain],
                       stdout=subprocess.PIPE, check=True, timeout=30)
    serial = r.stdout.decode().strip()
    harness.eq(p.cert_status(serial)["Status"], "Valid", "status before")
    rc, out, err = obtain(cfg, "--revoke", "h3.example.com", "--reason", "1", p=p)
    harness.eq(rc, 0, "revoke exit (%s; %s)" % (out, err[-3000:]))
    harness.eq(out, {"revoked": True}, "output")
    harness.eq(p.cert_status(serial)["Status"], "Revoked", "status after")
    rc, out, _ = obtain(cfg, "--revoke", "h3.example.com", "--reason", "1", p=p)
    harness.eq(rc, 1, "second revocation fails")
    harness.contains(out["error"], "alreadyRevoked", "error names the problem")


def account_file(storage, account_id="ops@example.com"):
    """The stored account JSON (path, parsed)."""
    files = glob.glob(os.path.join(storage, "accounts", "*", account_id + ".json"))
    harness.eq(len(files), 1, "stored account files for %s in %s" % (account_id, storage))
    with open(files[0]) as f:
        return files[0], json.load(f)


def test_rollover():
    p = pb()
    st = storage_dir()
    cfg = config(p, st, ["http-01"])
    rc, out, err = obtain(cfg, "--rollover", p=p)
    harness.eq(rc, 1, "rollover without a stored account")
    harness.contains(out["error"], "there is no account ops@example.com", "error")
    rc, out, err = obtain(cfg, "roll1.example.com", p=p)
    harness.eq(rc, 0, "gh_obtain exit (%s; %s)" % (out, err[-3000:]))
    path, before = account_file(st)
    accounts = account_count(p)
    rc, out, err = obtain(cfg, "--rollover", p=p)
    harness.eq(rc, 0, "rollover exit (%s; %s)" % (out, err[-3000:]))
    harness.eq(out, {"rolled_over": True}, "output")
    _, after = account_file(st)
    harness.eq(after["url"], before["url"], "the account URL survives the rollover")
    harness.check(after["key"] != before["key"], "the stored key changed")
    harness.check("next_key" not in after, "no rollover left pending: %r" % list(after))
    harness.eq(oct(os.stat(path).st_mode & 0o777), "0o600", "account file mode")
    # The stored (new) key works for a new order on the same account.
    rc, out, err = obtain(cfg, "roll2.example.com", p=p)
    harness.eq(rc, 0, "order after the rollover (%s; %s)" % (out, err[-3000:]))
    verify_chain(p, st, "roll2.example.com")
    harness.not_contains(err, "account ops@example.com at", "no account created")
    harness.eq(account_count(p), accounts, "accounts created at Pebble")
    # The old key no longer speaks for the account.
    old = storage_dir()
    os.makedirs(os.path.dirname(os.path.join(old, os.path.relpath(path, st))), mode=0o700)
    with open(os.path.join(old, os.path.relpath(path, st)), "w") as f:
        json.dump(before, f)
    os.chmod(os.path.join(old, os.path.relpath(path, st)), 0o600)
    rc, out, _ = obtain(config(p, old, ["http-01"]), "roll3.example.com", p=p)
    harness.eq(rc, 1, "order signed by the old key fails")
    harness.contains(out["error"], "urn:ietf:params:acme:error:", "error has the type")


def test_rollover_interrupted():
    # A rollover that died after storing "next_key" (before the CA answered,
    # or after it but before the key was stored): the next run asks the CA
    # which key the account has, keeps that one, and makes no new account.
    p = pb()
    st = storage_dir()
    cfg = config(p, st, ["http-01"])
    rc, out, err = obtain(cfg, "ri1.example.com", p=p)
    harness.eq(rc, 0, "gh_obtain exit (%s; %s)" % (out, err[-3000:]))
    path, old = account_file(st)
    accounts = account_count(p)
    r = subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256"], stdout=subprocess.PIPE, check=True, timeout=30)
    for case, next_key in (("the CA never saw it", r.stdout.decode()), ("the CA took it", None)):
        if next_key is None:
            rc, out, err = obtain(cfg, "--rollover", p=p)
            harness.eq(rc, 0, "rollover exit (%s; %s)" % (out, err[-3000:]))
            next_key = account_file(st)[1]["key"]
        with open(path, "w") as f:
            json.dump(dict(old, next_key=next_key), f)
        rc, out, err = obtain(cfg, "ri-%d.example.com" % len(case), p=p)
        harness.eq(rc, 0, "order after an interrupted rollover, %s (%s; %s)"
                   % (case, out, err[-3000:]))
        harness.contains(err, "a key rollover was interrupted", "log line")
        _, now = account_file(st)
        want = old["key"] if case == "the CA never saw it" else next_key
        harness.eq(now["key"], want, "the stored key when %s" % case)
        harness.check("next_key" not in now, "next_key resolved when %s" % case)
        harness.eq(now["url"], old["url"], "the account URL")
    harness.eq(account_count(p), accounts, "accounts created at Pebble")


def test_deactivate():
    p = pb()
    st = storage_dir()
    cfg = config(p, st, ["http-01"])
    rc, out, err = obtain(cfg, "deact1.example.com", p=p)
    harness.eq(rc, 0, "gh_obtain exit (%s; %s)" % (out, err[-3000:]))
    _, before = account_file(st)
    accounts = account_count(p)
    rc, out, err = obtain(cfg, "--deactivate", p=p)
    harness.eq(rc, 0, "deactivate exit (%s; %s)" % (out, err[-3000:]))
    harness.eq(out, {"deactivated": True}, "output")
    _, after = account_file(st)
    harness.eq(after.get("deactivated"), before["url"], "stored account marked deactivated")
    harness.check("key" not in after, "the deactivated account's key is dropped")
    rc, out, _ = obtain(cfg, "--deactivate", p=p)
    harness.eq(rc, 1, "deactivating again")
    harness.contains(out["error"], "there is no account", "error")
    # A fresh engine on the same storage creates a new account.
    rc, out, err = obtain(cfg, "deact2.example.com", p=p)
    harness.eq(rc, 0, "order after deactivation (%s; %s)" % (out, err[-3000:]))
    verify_chain(p, st, "deact2.example.com")
    harness.eq(account_count(p), accounts + 1, "accounts created at Pebble")
    _, new = account_file(st)
    harness.check(new.get("url") and new["url"] != before["url"], "a new account URL: %r" % new)
    harness.check(new.get("key") and new["key"] != before["key"], "a new account key")


def test_revoke_by_cert_key():
    p = pb()
    st = storage_dir()
    rc, out, err = obtain(config(p, st, ["http-01"]), "rk.example.com", p=p)
    harness.eq(rc, 0, "gh_obtain exit (%s; %s)" % (out, err[-3000:]))
    chain = cert_pem_path(st, "rk.example.com")
    r = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", chain],
                       stdout=subprocess.PIPE, check=True, timeout=30)
    serial = r.stdout.decode().strip()
    harness.eq(p.cert_status(serial)["Status"], "Valid", "status before")
    # Only the certificate, no account: the certificate's key is enough.
    bare = storage_dir()
    os.makedirs(os.path.join(bare, "certs"), mode=0o700)
    os.chmod(bare, 0o700)
    shutil.copytree(os.path.join(st, "certs", "rk.example.com"),
                    os.path.join(bare, "certs", "rk.example.com"), symlinks=True)
    accounts = account_count(p)
    cfg = config(p, bare, ["http-01"])
    rc, out, err = obtain(cfg, "--revoke", "rk.example.com", "--reason", "4", "--cert-key", p=p)
    harness.eq(rc, 0, "revoke exit (%s; %s)" % (out, err[-3000:]))
    harness.eq(out, {"revoked": True}, "output")
    harness.contains(err, "signed by the certificate's key", "log line")
    harness.eq(p.cert_status(serial)["Status"], "Revoked", "status after")
    harness.eq(account_count(p), accounts, "accounts created at Pebble")
    harness.eq(glob.glob(os.path.join(bare, "accounts", "*", "*.json")), [], "no account stored")
    rc, out, _ = obtain(cfg, "--revoke", "rk.example.com", "--reason", "4", "--cert-key", p=p)
    harness.eq(rc, 1, "second revocation fails")
    harness.contains(out["error"], "alreadyRevoked", "error names the problem")


# Where in an order test_kill9_during_issuance kills gh_obtain: the Pebble
# log line of a request every order makes (then up to 20 ms more). The
# first kill, on a fresh storage, is always just after newAccount.
KILL_POINTS = (r"POST /order-plz", r"POST /finalize-order/", r"Issued certificate serial",
               r"POST /certZ/")


def _kill_during_order(p, cfg, name, point, extra_s):
    """Starts gh_obtain for |name| and SIGKILLs it |extra_s| seconds after
    Pebble's log shows |point| (counted from the start), unless it ended on
    its own first. Returns whether it was killed."""
    start = len(p.proc.stdout())
    rx = re.compile(point)
    proc = subprocess.Popen([OBTAIN_BIN, cfg, name], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        harness.wait_until(lambda: proc.poll() is not None or
                           rx.search(p.proc.stdout()[start:]), 60,
                           "Pebble's log to show %r" % point, interval=0.001)
        time.sleep(extra_s)
        if proc.poll() is not None:
            return False
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _check_storage_readable(storage):
    """Every JSON file parses, and no temporary is left behind."""
    for root, _, files in os.walk(storage):
        for f in files:
            path = os.path.join(root, f)
            harness.check(not f.startswith(".tmp-"), "temporary left behind: %s" % path)
            if f.endswith(".json"):
                with open(path) as fh:
                    json.load(fh)


def test_kill9_during_issuance():
    # SIGKILL at random points of an order, then the same storage again:
    # nothing torn, and the next run finishes and stores a valid chain.
    seed = int.from_bytes(os.urandom(4), "big")
    print("# kill -9 seed %d" % seed)
    rnd = random.Random(seed)
    p = pb()
    st = storage_dir()
    cfg = config(p, st, ["http-01"])
    points = [r"POST /sign-me-up"] + [rnd.choice(KILL_POINTS) for _ in range(3)]
    kills = 0
    accounts = account_count(p)
    for point in points:
        extra = rnd.choice((0, 0.002, 0.01, 0.02))
        killed = _kill_during_order(p, cfg, "kill.example.com", point, extra)
        print("# kill -9 at %r + %g s: %s" % (point, extra, "killed" if killed else "had ended"))
        kills += killed
        rc, out, err = obtain(cfg, "kill.example.com", p=p)
        harness.eq(rc, 0, "run after kill -9 at %r + %g s (killed: %s; %s; %s)"
                   % (point, extra, killed, out, err[-3000:]))
        _check_storage_readable(st)
        verify_chain(p, st, "kill.example.com")
        _, acct = account_file(st)
        harness.check(acct.get("url") and acct.get("key"), "stored account %r" % acct)
    harness.check(kills > 0, "at least one run was killed before it ended")
    # The key is stored before newAccount: a run killed after it finds the
    # account again (onlyReturnExisting) instead of making another.
    harness.eq(account_count(p), accounts + 1, "accounts created at Pebble")
    harness.contains(err, "order for kill.example.com (1 names) finished", "log line")


def test_bad_nonces():
    p = pebble.start(nonce_reject=50)
    try:
        st = storage_dir()
        for name in ("n1.example.com", "n2.example.com"):
            rc, out, err = obtain(config(p, st, ["http-01"]), name, p=p)
            harness.eq(rc, 0, "gh_obtain exit with 50%% badNonce (%s; %s)" % (out, err[-3000:]))
            verify_chain(p, st, name)
    finally:
        p.stop()


def test_eab():
    hmac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
    p = pebble.start(eab_keys={"kid-1": hmac})
    try:
        rc, out, _ = obtain(config(p, storage_dir(), ["http-01"]), "noeab.example.com", p=p)
        harness.eq(rc, 1, "exit without EAB")
        harness.contains(out["error"], "externalAccountRequired", "error without EAB")
        bad = hmac[:-4] + "AAAA"
        rc, out, _ = obtain(config(p, storage_dir(), ["http-01"], eab={"key_id": "kid-1",
                                                                      "hmac_key": bad}),
                            "badeab.example.com", p=p)
        harness.eq(rc, 1, "exit with a wrong EAB key")
        harness.contains(out["error"], "newAccount", "error names the URL") \
            if "newAccount" in out["error"] else harness.contains(out["error"], "POST https://",
                                                                 "error names the URL")
        harness.contains(out["error"], "urn:ietf:params:acme:error:", "error has the type")
        st = storage_dir()
        rc, out, err = obtain(config(p, st, ["http-01"], eab={"key_id": "kid-1",
                                                             "hmac_key": hmac}),
                              "eab.example.com", p=p)
        harness.eq(rc, 0, "exit with the right EAB key (%s; %s)" % (out, err[-3000:]))
        verify_chain(p, st, "eab.example.com")
    finally:
        p.stop()


class _Garbage(http.server.BaseHTTPRequestHandler):
    body = b'{"newNonce": "https://localhost/nonce", "newAccount": '

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        try:
            self.wfile.write(self.body)
        except OSError:
            pass  # the client gave up on a body over its limit, as it should

    def log_message(self, *a):
        pass


def _garbage_ca(body):
    handler = type("H", (_Garbage,), {"body": body})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    crt, key = harness.ca().leaf(["localhost"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_garbage_ca():
    # Each case: the directory's body, and the whole error it must give
    # ({url}: the directory's URL, {peer}: the address the answer came from).
    p = pb()
    cases = [
        (b'{"newNonce": "https://localhost/nonce", "newAccount": ',
         "acme: GET {url}: status 200: the directory is not a JSON object"),
        (b'{"newNonce": 5, "newAccount": "x", "newOrder": "y", "revokeCert": "z"}',
         'acme: GET {url}: the CA\'s response has no string field "newNonce"'),
        (b'{"newNonce": "https://localhost/n", "newOrder": "y", "revokeCert": "z"}',
         'acme: GET {url}: the CA\'s response has no string field "newAccount"'),
        (b"x" * (300 * 1024),
         "acme: GET {url}: response body from {peer} is 307200 bytes, over the limit of 262144"),
    ]
    for body, want in cases:
        srv = _garbage_ca(body)
        try:
            url = "https://localhost:%d/dir" % srv.server_address[1]
            peer = "127.0.0.1:%d" % srv.server_address[1]
            cfg = config(p, storage_dir(), ["http-01"], directory=url,
                         ca_roots=[harness.ca().cert])
            rc, out, _ = obtain(cfg, "garbage.example.com", p=p, timeout=60)
            harness.eq(rc, 1, "exit for %r" % body[:40])
            harness.eq(out["error"], want.format(url=url, peer=peer), "error for %r" % body[:40])
        finally:
            srv.shutdown()
            srv.server_close()


def test_cancel_in_flight():
    # The engine is freed at various points of an order: the callback must
    # come once (obtain checks the one line), with UV_ECANCELED's message,
    # and nothing may leak (ASan). A 0 ms timer fires before any answer from
    # the CA can arrive, so at least that run is cancelled; later ones may
    # finish first.
    p = pb()
    st = storage_dir()
    cancelled = 0
    for i, ms in enumerate((0, 3, 10, 25, 60, 120)):
        name = "cancel%d.example.com" % i
        rc, out, err = obtain(config(p, st, ["http-01"]), name, p=p,
                              env={"GH_OBTAIN_CANCEL_MS": str(ms)})
        print("# cancel after %d ms: %s" % (ms, "finished" if rc == 0 else "cancelled"))
        if rc == 0:
            harness.eq(out["sans"], [name], "SANs of an order that finished first")
            continue
        harness.eq(rc, 1, "exit")
        harness.eq(out["error"], "acme: the engine was stopped", "error after %d ms" % ms)
        cancelled += 1
    harness.check(cancelled > 0, "at least one order was cancelled before it finished")


class _FakeCA(http.server.BaseHTTPRequestHandler):
    """A scripted ACME CA that checks nothing: |script| maps "METHOD path"
    to a list of (status, headers, body) answered in turn (the last one
    repeats); answers to HEAD and POST below 500 carry a fresh Replay-Nonce,
    so the first signed request needs a HEAD newNonce."""
    script = {}
    seen = None
    base = ""

    def _answer(self):
        key = "%s %s" % (self.command, self.path)
        self.seen.append(key)
        n = self.seen.count(key)
        answers = self.script.get(key, [(404, {}, "")])
        answer = answers[min(n, len(answers)) - 1]
        # A callable answers from the bodies posted so far (a finalize's CSR).
        status, headers, body = answer(self.bodies) if callable(answer) else answer
        body = body.replace("BASE", self.base).encode()
        self.send_response(status)
        if self.command != "GET" and status < 500:
            self.send_header("Replay-Nonce", "nonce%d" % len(self.seen))
        for k, v in headers.items():
            self.send_header(k, v.replace("BASE", self.base))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        self._answer()

    def do_HEAD(self):
        self._answer()

    def do_POST(self):
        self.bodies[self.path] = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer()

    def log_message(self, *a):
        pass


def _fake_ca(script):
    seen = []
    handler = type("F", (_FakeCA,), {"script": script, "seen": seen, "bodies": {}})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.base = "https://localhost:%d" % srv.server_address[1]
    crt, key = harness.ca().leaf(["localhost"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, seen


FAKE_DIR = json.dumps({"newNonce": "BASE/nonce", "newAccount": "BASE/acct",
                       "newOrder": "BASE/order", "revokeCert": "BASE/revoke"})
PROBLEM = {"Content-Type": "application/problem+json"}


def _run_fake(script, name):
    srv, seen = _fake_ca(script)
    try:
        url = "https://localhost:%d/dir" % srv.server_address[1]
        cfg = config(pb(), storage_dir(), ["http-01"], directory=url,
                     ca_roots=[harness.ca().cert])
        rc, out, err = obtain(cfg, name, timeout=60)
        return rc, out, err, seen
    finally:
        srv.shutdown()
        srv.server_close()


def test_retries_and_rate_limits():
    rate = json.dumps({"type": "urn:ietf:params:acme:error:rateLimited",
                       "detail": "too many new accounts"})
    internal = json.dumps({"type": "urn:ietf:params:acme:error:serverInternal", "detail": "oops"})
    # serverInternal / 5xx are retried with back-off; a long rateLimited fails
    # at once, saying when to come back.
    rc, out, err, seen = _run_fake({
        "GET /dir": [(503, {}, "busy"), (200, {}, FAKE_DIR)],
        "HEAD /nonce": [(500, PROBLEM, internal), (500, PROBLEM, internal), (200, {}, "")],
        "POST /acct": [(429, dict(PROBLEM, **{"Retry-After": "86400"}), rate)],
    }, "rate.example.com")
    harness.eq(rc, 1, "exit")
    harness.eq(seen.count("GET /dir"), 2, "directory retried after a 503")
    harness.eq(seen.count("HEAD /nonce"), 3, "newNonce retried after serverInternal")
    harness.eq(seen.count("POST /acct"), 1, "a day-long rate limit is not waited for")
    harness.contains(out["error"], "/acct: status 429: urn:ietf:params:acme:error:rateLimited: "
                     "too many new accounts (retry after 86400 s)", "error")

    # A short rateLimited is waited for; an order refused with subproblems
    # fails with all of them in the message.
    order_problem = json.dumps({
        "type": "urn:ietf:params:acme:error:rejectedIdentifier", "detail": "refused",
        "subproblems": [{"type": "urn:ietf:params:acme:error:rejectedIdentifier",
                         "detail": "blocked name",
                         "identifier": {"type": "dns", "value": "sub.example.com"}}]})
    rc, out, err, seen = _run_fake({
        "GET /dir": [(200, {}, FAKE_DIR)],
        "HEAD /nonce": [(200, {}, "")],
        "POST /acct": [(429, dict(PROBLEM, **{"Retry-After": "1"}), rate),
                       (201, {"Location": "BASE/acct/1"}, "{}")],
        "POST /order": [(400, PROBLEM, order_problem)],
    }, "sub.example.com")
    harness.eq(rc, 1, "exit")
    harness.eq(seen.count("POST /acct"), 2, "a 1 s rate limit is waited for")
    harness.contains(out["error"], "POST https://localhost:", "error names the URL")
    harness.contains(out["error"], "urn:ietf:params:acme:error:rejectedIdentifier: refused; "
                     "subproblems: [sub.example.com: urn:ietf:params:acme:error:"
                     "rejectedIdentifier: blocked name]", "error has the subproblems")

    # Hostile resources: a field of the wrong type is named.
    rc, out, err, seen = _run_fake({
        "GET /dir": [(200, {}, FAKE_DIR)],
        "HEAD /nonce": [(200, {}, "")],
        "POST /acct": [(201, {"Location": "BASE/acct/1"}, "{}")],
        "POST /order": [(201, {"Location": "BASE/order/1"},
                         json.dumps({"status": "pending", "finalize": "BASE/fin",
                                     "authorizations": ["BASE/authz/1"]}))],
        "POST /authz/1": [(200, {}, json.dumps({"status": "pending",
                                                "identifier": {"type": "dns", "value": 7},
                                                "challenges": []}))],
    }, "hostile.example.com")
    harness.eq(rc, 1, "exit")
    harness.contains(out["error"], '/authz/1: the CA\'s response has no string field "value"',
                     "error names the field")



# --- a CA whose answers are not to be trusted (issue 16) ----------------------

def _csr_key(body):
    """The public key of the CSR in a finalize request (a flattened JWS)."""
    import base64
    from cryptography import x509

    def b64(s):
        return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    payload = json.loads(b64(json.loads(body)["payload"]))
    return x509.load_der_x509_csr(b64(payload["csr"])).public_key()


def _mint(body, names, key=None, days=(-1, 30), chain_ca=None):
    """A chain for the CSR in |body| (or for |key|) naming |names|, valid
    from |days[0]| to |days[1]| days from now, issued by a CA made here and
    followed by that CA (or by |chain_ca|, another one)."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def ca(cn):
        k = ec.generate_private_key(ec.SECP256R1())
        n = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        now = datetime.datetime.utcnow()
        c = (x509.CertificateBuilder().subject_name(n).issuer_name(n).public_key(k.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=90))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .sign(k, hashes.SHA256()))
        return c, k
    issuer, issuer_key = ca("Hostile Test CA")
    pub = key.public_key() if key is not None else _csr_key(body)
    now = datetime.datetime.utcnow()
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(issuer.subject).public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=days[0]))
            .not_valid_after(now + datetime.timedelta(days=days[1]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(issuer_key, hashes.SHA256()))
    second = chain_ca if chain_ca is not None else issuer
    pem = serialization.Encoding.PEM
    return (leaf.public_bytes(pem) + second.public_bytes(pem)).decode()


def _order_script(name, cert_answer, order=None, authz=None):
    """A whole order at the fake CA: account, order (one authorization,
    already valid), finalize, then |cert_answer| for the certificate."""
    order = order or {"status": "pending", "finalize": "BASE/fin",
                      "authorizations": ["BASE/authz/1"]}
    authz = authz or {"status": "valid", "identifier": {"type": "dns", "value": name}}
    ready = dict(order, status="ready")
    done = dict(order, status="valid", certificate="BASE/cert/1")
    return {
        "GET /dir": [(200, {}, FAKE_DIR)],
        "HEAD /nonce": [(200, {}, "")],
        "POST /acct": [(201, {"Location": "BASE/acct/1"}, "{}")],
        "POST /order": [(201, {"Location": "BASE/order/1"}, json.dumps(order))],
        "POST /authz/1": [(200, {}, json.dumps(authz))],
        "POST /order/1": [(200, {}, json.dumps(ready))],
        "POST /fin": [(200, {"Location": "BASE/order/1"}, json.dumps(done))],
        "POST /cert/1": [cert_answer],
    }


def test_hostile_ca_answers_refused():
    """A CA's answers are checked before anything is followed, stored or
    served: each hostile answer fails the order with its reason, and a
    good answer from the same fake CA is stored (so the checks can pass)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    name = "hostile-ca.example.com"
    pem = {"Content-Type": "application/pem-certificate-chain"}
    other_ca = _mint(None, ["x.example.com"], key=ec.generate_private_key(ec.SECP256R1()))
    from cryptography import x509
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", other_ca, re.S)
    other_issuer = x509.load_pem_x509_certificate(blocks[1].encode())
    cases = [
        ("a good chain", lambda b: (200, pem, _mint(b["/fin"], [name])), None),
        ("a certificate for another key",
         lambda b: (200, pem, _mint(b["/fin"], [name], key=ec.generate_private_key(ec.SECP256R1()))),
         "its key is not the one of this order's CSR"),
        ("a certificate for other names",
         lambda b: (200, pem, _mint(b["/fin"], [name, "other.example.com"])),
         "it names other.example.com, which this order did not ask for"),
        ("a certificate missing the name",
         lambda b: (200, pem, _mint(b["/fin"], ["other.example.com"])),
         "it names other.example.com, which this order did not ask for"),
        ("an expired certificate",
         lambda b: (200, pem, _mint(b["/fin"], [name], days=(-30, -1))), "it has expired"),
        ("a certificate not valid yet",
         lambda b: (200, pem, _mint(b["/fin"], [name], days=(2, 30))), "it is not valid yet"),
        ("a chain whose issuer did not issue the leaf",
         lambda b: (200, pem, _mint(b["/fin"], [name], chain_ca=other_issuer)),
         "certificate 0 of the chain is not issued by the next one"),
    ]
    for what, answer, why in cases:
        rc, out, err, seen = _run_fake(_order_script(name, answer), name)
        if why is None:
            harness.eq(rc, 0, "%s: exit (%s)" % (what, out))
            continue
        harness.eq(rc, 1, "%s: exit" % what)
        harness.contains(out["error"], "the certificate for %s is refused: %s" % (name, why),
                         what)
        harness.check("POST /cert/1" in seen, "%s: the certificate was downloaded" % what)

    # URLs that are not https, and authorizations the order did not ask for.
    good = lambda b: (200, pem, _mint(b["/fin"], [name]))  # noqa: E731
    http_authz = {"status": "pending", "finalize": "BASE/fin",
                  "authorizations": ["BASE/authz/1".replace("BASE", "http://localhost:1")]}
    rc, out, err, seen = _run_fake(_order_script(name, good, order=http_authz), name)
    harness.eq(rc, 1, "http:// authorization: exit")
    harness.contains(out["error"], "an authorization URL is refused: it is not an https:// URL",
                     "http:// authorization")
    http_fin = {"status": "pending", "finalize": "http://localhost:1/fin",
                "authorizations": ["BASE/authz/1"]}
    rc, out, err, seen = _run_fake(_order_script(name, good, order=http_fin), name)
    harness.eq(rc, 1, "http:// finalize: exit")
    harness.contains(out["error"], 'field "finalize" of the CA\'s response is refused: it is not '
                     'an https:// URL', "http:// finalize")
    userinfo = {"status": "pending", "finalize": "https://user@localhost:1/fin",
                "authorizations": ["BASE/authz/1"]}
    rc, out, err, seen = _run_fake(_order_script(name, good, order=userinfo), name)
    harness.contains(out["error"], "it carries a user name", "a URL with a user name")
    foreign = {"status": "valid", "identifier": {"type": "dns", "value": "foreign.example.com"}}
    rc, out, err, seen = _run_fake(_order_script(name, good, authz=foreign), name)
    harness.eq(rc, 1, "foreign identifier: exit")
    harness.contains(out["error"], "the authorization is for the name foreign.example.com, which "
                     "this order did not ask for", "foreign identifier")
    harness.check("POST /fin" not in seen, "nothing finalized for a foreign identifier")
    two = {"status": "pending", "finalize": "BASE/fin",
           "authorizations": ["BASE/authz/1", "BASE/authz/2"]}
    rc, out, err, seen = _run_fake(_order_script(name, good, order=two), name)
    harness.contains(out["error"], "2 authorizations for an order of 1 name(s)",
                     "more authorizations than names")
    bad_dir = json.dumps({"newNonce": "http://localhost:1/nonce", "newAccount": "BASE/acct",
                          "newOrder": "BASE/order", "revokeCert": "BASE/revoke"})
    script = _order_script(name, good)
    script["GET /dir"] = [(200, {}, bad_dir)]
    rc, out, err, seen = _run_fake(script, name)
    harness.contains(out["error"], 'field "newNonce" of the CA\'s response is refused',
                     "an http:// directory entry")


def _payload(body):
    """The JSON payload of a flattened JWS request body."""
    import base64
    p = json.loads(body)["payload"]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


def test_profiles():
    """ACME profiles (draft-aaron-acme-profiles): the directory's
    meta.profiles is read, the configured profile is sent in newOrder and
    kept in the certificate's meta (a renewal asks for it again); a profile
    the CA does not offer fails the order before it is placed, saying which
    ones it offers. Pebble 2.4 has no profiles: the scripted CA plays one."""
    name = "profile.example.com"
    pem = {"Content-Type": "application/pem-certificate-chain"}
    directory = json.dumps({"newNonce": "BASE/nonce", "newAccount": "BASE/acct",
                            "newOrder": "BASE/order", "revokeCert": "BASE/revoke",
                            "meta": {"profiles": {"classic": "90 days",
                                                  "shortlived": "6 days"}}})

    def run(profile, directory=directory, st=None):
        srv, seen = _fake_ca(_order_script(name, lambda b: (200, pem, _mint(b["/fin"], [name],
                                                                           days=(0, 6)))))
        srv.RequestHandlerClass.script["GET /dir"] = [(200, {}, directory)]
        try:
            url = "https://localhost:%d/dir" % srv.server_address[1]
            st = st or storage_dir()
            cfg = config(pb(), st, ["http-01"], directory=url, ca_roots=[harness.ca().cert],
                         extra={"profile": profile} if profile else None)
            rc, out, err = obtain(cfg, name, timeout=60)
            return rc, out, err, seen, srv.RequestHandlerClass.bodies, st
        finally:
            srv.shutdown()
            srv.server_close()

    rc, out, err, seen, bodies, st = run("shortlived")
    harness.eq(rc, 0, "exit with an offered profile (%s)" % out)
    harness.eq(_payload(bodies["/order"]).get("profile"), "shortlived", "newOrder's profile")
    with open(os.path.join(st, "certs", name, "meta.json")) as f:
        harness.eq(json.load(f).get("profile"), "shortlived", "the profile kept in meta.json")
    # The next order for the name (a renewal) asks for it again, though the
    # configuration no longer names one.
    rc, out, err, seen, bodies, st = run(None, st=st)
    harness.eq(rc, 0, "exit of the next order (%s)" % out)
    harness.eq(_payload(bodies["/order"]).get("profile"), "shortlived", "the profile kept")
    rc, out, err, seen, bodies, st = run("tlsserver")
    harness.eq(rc, 1, "exit with a profile the CA does not offer")
    harness.contains(out["error"], 'does not offer profile "tlsserver"; it offers: classic, '
                     'shortlived', "error")
    harness.check("POST /order" not in seen, "no order placed for it")
    harness.contains(err, 'acme.profile: the CA at', "logged when the directory is read")
    rc, out, err, seen, bodies, st = run("shortlived", directory=FAKE_DIR)
    harness.contains(out["error"], "offers no profiles (its directory has no meta.profiles)",
                     "a CA without profiles")
    rc, out, err, seen, bodies, st = run(None)
    harness.eq(rc, 0, "exit without a profile (%s)" % out)
    harness.check("profile" not in _payload(bodies["/order"]), "no profile asked for")


def test_paused_account_said_clearly():
    """Let's Encrypt pauses an account for a name after too many failed
    validations; every order for it fails until someone visits the unpause
    URL in the error. It is logged as such, with the URL."""
    name = "paused.example.com"
    url = "https://portal.letsencrypt.org/sfe/v1/unpause?jwt=eyJhbGciOi.abc-def_1"
    paused = json.dumps({
        "type": "urn:ietf:params:acme:error:unauthorized",
        "detail": "Your account is temporarily prevented from requesting certificates for %s "
                  "and possibly others. Please visit: %s" % (name, url)})
    script = _order_script(name, lambda b: (500, {}, ""))
    script["POST /order"] = [(403, PROBLEM, paused)]
    rc, out, err, seen = _run_fake(script, name)
    harness.eq(rc, 1, "exit")
    harness.contains(out["error"], "temporarily prevented", "the CA's words in the error")
    logged = re.findall(r"the CA has PAUSED account \S+ at \S+: orders fail until it is unpaused "
                        r"at (\S+) ", err)
    harness.eq(logged, [url], "logged once, with the unpause URL")

def test_ip_address_certificate():
    """RFC 8738: an "ip" identifier, validated by HTTP-01 (to the address)
    and by TLS-ALPN-01 (SNI the reverse-mapping name); the certificate
    names the address as an iPAddress."""
    p = pb()
    for chall in ("http-01", "tls-alpn-01"):
        st = storage_dir()
        rc, out, err = obtain(config(p, st, [chall]), "127.0.0.1", p=p)
        harness.eq(rc, 0, "%s: exit (%s; %s)" % (chall, out, err[-3000:]))
        verify_chain(p, st, "127.0.0.1")
        r = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-subject",
                            "-in", cert_pem_path(st, "127.0.0.1")],
                           stdout=subprocess.PIPE, check=True, timeout=30)
        text = r.stdout.decode()
        harness.contains(text, "IP Address:127.0.0.1", "%s: the SAN" % chall)
        harness.not_contains(text, "DNS:", "%s: no DNS name" % chall)
    harness.contains(p.proc.stdout(), 'Type:"ip", Value:"127.0.0.1"', "Pebble validated an ip identifier")
    # dns-01 alone cannot prove an address (RFC 8738 7): said, not tried.
    rc, out, err = obtain(config(p, storage_dir(), ["dns-01"]), "127.0.0.2", p=p)
    harness.eq(rc, 1, "exit with only dns-01")
    harness.contains(out["error"], "no offered challenge for 127.0.0.2", "error")


def issuers_config(p, st, issuers, challenges=("http-01",), extra=None):
    """config() with acme.issuers (each entry's ca_roots defaulting to
    Pebble's and the fake CAs') instead of one directory."""
    path = config(p, st, list(challenges), extra=extra)
    with open(path) as f:
        cfg = json.load(f)
    acme = cfg["acme"]
    del acme["directory"]
    acme["ca_roots"] = [p.ca_file, harness.ca().cert]
    acme["issuers"] = issuers
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def ca_state(st, directory):
    """The CA's stored back-off (accounts/<ca-host>/ca-state.json), or None."""
    host = re.match(r"https://([^/]+)/", directory).group(1).replace(":", "_")
    path = os.path.join(st, "accounts", host, "ca-state.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def test_fallback_when_first_ca_is_down():
    """acme.issuers: an order the first CA cannot take (nothing listens)
    goes to the next; the first one's back-off is stored, so the next
    process skips it at once; a revocation goes to the CA that issued."""
    p = pb()
    st = storage_dir()
    down = "https://localhost:%d/dir" % harness.free_port()
    cfg = issuers_config(p, st, [{"name": "down", "directory": down},
                                 {"name": "pebble", "directory": p.directory_url}])
    rc, out, err = obtain(cfg, "fallback1.example.com", p=p)
    harness.eq(rc, 0, "exit (%s; %s)" % (out, err[-3000:]))
    harness.contains(err, "order for fallback1.example.com: CA down failed (", "log")
    harness.contains(err, "; trying CA pebble", "log")
    harness.contains(err, "CA down: backing off for 60 s (failure 1 in a row)", "log")
    verify_chain(p, st, "fallback1.example.com")
    with open(os.path.join(st, "certs", "fallback1.example.com", "meta.json")) as f:
        harness.eq(json.load(f)["ca"], p.directory_url, "meta.json names the CA that issued")
    state = ca_state(st, down)
    harness.check(state and state["backoff_until"] > time.time() + 30, "stored back-off %r" % state)
    harness.eq(ca_state(st, p.directory_url), None, "no back-off for the CA that worked")
    # A new process reads the back-off and goes straight to Pebble.
    rc, out, err = obtain(cfg, "fallback2.example.com", p=p)
    harness.eq(rc, 0, "second exit (%s; %s)" % (out, err[-3000:]))
    harness.contains(err, "CA down is backing off for", "the stored back-off is read")
    harness.not_contains(err, "trying CA pebble", "no new attempt at the CA that is down")
    harness.eq(err.count(down), 1, "the CA that is down named once, in its stored back-off; "
               "no request to it")
    # The revocation is asked of the issuer, not of the first CA.
    rc, out, err = obtain(cfg, "--revoke", "fallback1.example.com", "--reason", "4", p=p)
    harness.eq(rc, 0, "revoke exit (%s; %s)" % (out, err[-3000:]))


def test_fallback_on_the_cas_own_failures():
    """A rate limit (its Retry-After becomes the back-off), a paused account
    and a CA answering 503 each move the order on to the next CA; a failure
    of ours (the dns hook) does not, and once every CA is backing off an
    order fails at once, saying so."""
    p = pb()
    rate = json.dumps({"type": "urn:ietf:params:acme:error:rateLimited",
                       "detail": "too many certificates for this name"})
    paused = json.dumps({"type": "urn:ietf:params:acme:error:unauthorized",
                         "detail": "Your account is temporarily prevented from requesting "
                                   "certificates. Please visit: https://unpause.test/x?jwt=1"})
    pem = {"Content-Type": "application/pem-certificate-chain"}
    cases = [
        ("rate limited", "POST /order", [(429, dict(PROBLEM, **{"Retry-After": "7200"}), rate)],
         "backing off for 7200 s"),
        ("paused", "POST /order", [(403, PROBLEM, paused)], "the CA has PAUSED account"),
        ("503", "GET /dir", [(503, {}, "busy")], "status 503"),
    ]
    for what, key, answers, logged in cases:
        name = "fb-%s.example.com" % what.replace(" ", "-")
        script = _order_script(name, lambda b: (500, {}, ""))
        script[key] = answers
        srv, seen = _fake_ca(script)
        try:
            url = "https://localhost:%d/dir" % srv.server_address[1]
            st = storage_dir()
            cfg = issuers_config(p, st, [{"name": "fake", "directory": url},
                                         {"name": "pebble", "directory": p.directory_url}])
            rc, out, err = obtain(cfg, name, p=p)
            harness.eq(rc, 0, "%s: exit (%s; %s)" % (what, out, err[-3000:]))
            harness.contains(err, "trying CA pebble", what)
            harness.contains(err, logged, what)
            harness.check(ca_state(st, url)["backoff_until"] > time.time() + 30,
                          "%s: the back-off is stored" % what)
            if what == "rate limited":
                harness.check(ca_state(st, url)["backoff_until"] > time.time() + 7000,
                              "the CA's Retry-After is the back-off")
            before = len(seen)
            rc, out, err = obtain(cfg, name.replace("fb-", "fb2-"), p=p)
            harness.eq(rc, 0, "%s: second exit (%s)" % (what, out))
            harness.eq(len(seen), before, "%s: the CA backing off is not asked again" % what)
        finally:
            srv.shutdown()
            srv.server_close()

    # Our own failure: the second CA is never asked.
    srv, seen = _fake_ca(_order_script("x", lambda b: (200, pem, "")))
    try:
        url = "https://localhost:%d/dir" % srv.server_address[1]
        st = storage_dir()
        cfg = issuers_config(p, st, [{"name": "pebble", "directory": p.directory_url},
                                     {"name": "fake", "directory": url}],
                             challenges=["dns-01"], extra={"dns_hook": "/bin/false"})
        rc, out, err = obtain(cfg, "ourfault.example.com", p=p)
        harness.eq(rc, 1, "exit when the dns hook fails")
        harness.contains(out["error"], "dns hook /bin/false present", "error")
        harness.eq(seen, [], "the next CA is not asked for a failure of ours")
        harness.eq(ca_state(st, p.directory_url), None, "no back-off for a failure of ours")
    finally:
        srv.shutdown()
        srv.server_close()

    # Every CA backing off: the order fails at once, naming each.
    script = _order_script("x", lambda b: (500, {}, ""))
    script["POST /order"] = [(429, dict(PROBLEM, **{"Retry-After": "7200"}), rate)]
    srv, seen = _fake_ca(script)
    try:
        url = "https://localhost:%d/dir" % srv.server_address[1]
        down = "https://localhost:%d/dir" % harness.free_port()
        st = storage_dir()
        cfg = issuers_config(p, st, [{"name": "fake", "directory": url},
                                     {"name": "down", "directory": down}])
        rc, out, err = obtain(cfg, "nowhere.example.com", p=p)
        harness.eq(rc, 1, "exit when both CAs fail")
        harness.contains(out["error"], "(before: CA fake: ", "the first CA's failure is said")
        harness.contains(out["error"], "rateLimited", "the first CA's failure is said")
        before = len(seen)
        rc, out, err = obtain(cfg, "nowhere2.example.com", p=p)
        harness.eq(rc, 1, "exit while both back off")
        harness.contains(out["error"], "every CA is backing off after failures of its own: CA "
                         "fake for ", "error")
        harness.contains(out["error"], "; CA down for ", "error")
        harness.eq(len(seen), before, "no request while every CA backs off")
    finally:
        srv.shutdown()
        srv.server_close()


def test_preferred_chain():
    p = pebble.start(env={"PEBBLE_ALTERNATE_ROOTS": "1"})
    try:
        def cn(pem):
            r = subprocess.run(["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253"],
                               input=pem.encode(), stdout=subprocess.PIPE, check=True, timeout=30)
            return r.stdout.decode().strip().split("CN=", 1)[1].split(",")[0]
        alt_root = cn(p.root_pem(1))
        harness.check(alt_root != cn(p.root_pem(0)), "two different roots")
        st = storage_dir()
        rc, out, err = obtain(config(p, st, ["http-01"], extra={"preferred_chain": alt_root}),
                              "chain.example.com", p=p)
        harness.eq(rc, 0, "exit (%s; %s)" % (out, err[-3000:]))
        with open(cert_pem_path(st, "chain.example.com")) as f:
            pems = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                              f.read(), re.S)
        r = subprocess.run(["openssl", "x509", "-noout", "-issuer", "-nameopt", "RFC2253"],
                           input=pems[-1].encode(), stdout=subprocess.PIPE, check=True,
                           timeout=30)
        harness.contains(r.stdout.decode(), "CN=" + alt_root, "top of the stored chain")
    finally:
        p.stop()


def test_lock_held():
    p = pb()
    st = storage_dir()
    os.makedirs(os.path.join(st, "locks"), mode=0o700, exist_ok=True)
    os.chmod(st, 0o700)
    lock = os.path.join(st, "locks", "locked.example.com")
    import fcntl
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        rc, out, _ = obtain(config(p, st, ["http-01"]), "locked.example.com", p=p)
        harness.eq(rc, 1, "exit")
        harness.contains(out["error"], "locked by another process", "error")
    finally:
        os.close(fd)


if __name__ == "__main__":  # test_dns_update.py imports obtain() and friends
    harness.main()
