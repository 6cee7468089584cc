"""knot.py: a real authoritative DNS server for the tests (Knot DNS 3.2,
Debian's `knot`, queried with `kdig` from `knot-dnsutils`).

    k = knot.start("example.test", records=["www 60 A 127.0.0.1"],
                   tsig=("gh-key", "hmac-sha256", None), extra_zones=["other.test"])
    k.addr, k.port        # where knotd answers (UDP and TCP)
    k.tsig                # {"name", "algorithm", "secret"} (secret generated if None)
    k.add("_acme-challenge.www", "TXT", '"v"')    # through knotc, committed
    k.remove("_acme-challenge.www", "TXT")        # every TXT record there
    k.query("_acme-challenge.www.example.test.", "TXT")  # -> ['"v"'] (kdig +short)

Each zone gets an SOA, "NS ns1" and "ns1 A <addr>", so the server is the
zone's one authoritative server in its own data. The TSIG key may update
the first zone only (an ACL with action update); the extra zones refuse
updates. By default knotd listens on port 53 of the first free address
127.0.53.N (we run as root), so that NS-based discovery, which always
asks port 53, finds it; give port= for a free port instead."""

import base64
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

KNOTD_BIN = os.environ.get("KNOTD_BIN", "knotd")
KNOTC_BIN = os.environ.get("KNOTC_BIN", "knotc")
KDIG_BIN = os.environ.get("KDIG_BIN", "kdig")


def _port_53_free(addr):
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind((addr, 53))
        except OSError:
            return False
        finally:
            s.close()
    return True


def _pick_addr():
    for n in range(1, 255):
        addr = "127.0.53.%d" % n
        if _port_53_free(addr):
            return addr
    raise harness.Fail("no 127.0.53.N with port 53 free")


class Knot:
    def __init__(self, zone, records=(), tsig=("gh-key", "hmac-sha256", None), extra_zones=(),
                 addr=None, port=None):
        self.zone = zone.rstrip(".")
        self.name = harness._next_name("knot")
        self.dir = harness.subdir(self.name)
        self.addr = addr or ("127.0.0.1" if port else _pick_addr())
        self.port = port or 53
        key_name, alg, secret = tsig
        secret = secret or base64.b64encode(os.urandom(32)).decode()
        self.tsig = {"name": key_name, "algorithm": alg, "secret": secret}
        self.sock = os.path.join(self.dir, "knot.sock")
        os.makedirs(os.path.join(self.dir, "db"), exist_ok=True)  # the journal: commits need it
        zones = [self.zone] + [z.rstrip(".") for z in extra_zones]
        for z in zones:
            with open(os.path.join(self.dir, "%s.zone" % z), "w") as f:
                f.write("$ORIGIN %s.\n$TTL 60\n" % z)
                f.write("@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nns1 A %s\n" % self.addr)
                if z == self.zone:
                    for r in records:
                        f.write(r + "\n")
        conf = [
            "server:",
            "    rundir: \"%s\"" % self.dir,
            "    listen: %s@%d" % (self.addr, self.port),
            "log:",
            "  - target: stderr",
            "    any: info",
            "database:",
            "    storage: \"%s\"" % os.path.join(self.dir, "db"),
            "control:",
            "    listen: \"%s\"" % self.sock,
            "key:",
            "  - id: %s" % key_name,
            "    algorithm: %s" % alg,
            "    secret: %s" % secret,
            "acl:",
            "  - id: updates",
            "    key: %s" % key_name,
            "    action: update",
            "template:",
            "  - id: default",
            "    storage: \"%s\"" % self.dir,
            "    file: \"%s.zone\"",
            "    zonefile-sync: -1",
            "zone:",
            "  - domain: %s" % self.zone,
            "    acl: updates",
        ] + ["  - domain: %s" % z for z in zones[1:]]
        self.conf_path = os.path.join(self.dir, "knot.conf")
        with open(self.conf_path, "w") as f:
            f.write("\n".join(conf) + "\n")
        self.proc = harness.Proc(self.name, [KNOTD_BIN, "-c", self.conf_path], cwd=self.dir)
        harness.check_ready(self.proc, [self.port], host=self.addr)
        # Accepting on TCP is not serving the zone yet: poll for its SOA.
        harness.wait_until(lambda: self.query(self.zone + ".", "SOA"), 10,
                           "%s answering the SOA of %s" % (self.name, self.zone))

    def _kdig(self, *args):
        r = subprocess.run([KDIG_BIN, "@%s" % self.addr, "-p", str(self.port), "+norecurse",
                            "+time=2", "+retry=1"] + list(args),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=15)
        return r.stdout.decode(errors="replace")

    def query(self, name, qtype="A"):
        """The records' data at |name| (kdig +short lines); [] if none."""
        return [l for l in self._kdig(name, qtype, "+short").splitlines() if l.strip()]

    def rcode(self, name, qtype="A"):
        """The answer's status word (NOERROR, NXDOMAIN, REFUSED...)."""
        for line in self._kdig(name, qtype).splitlines():
            if "status:" in line:
                return line.split("status:")[1].split(";")[0].split(",")[0].strip()
        return None

    def knotc(self, *args):
        r = subprocess.run([KNOTC_BIN, "-s", self.sock] + list(args), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=15)
        out = r.stdout.decode(errors="replace")
        harness.check(r.returncode == 0, "knotc %s: %s" % (" ".join(args), out))
        return out

    def _txn(self, op, owner, *rest, zone=None):
        z = zone or self.zone
        self.knotc("zone-begin", z)
        try:
            self.knotc(op, z, owner, *rest)
        except harness.Fail:
            self.knotc("zone-abort", z)
            raise
        self.knotc("zone-commit", z)

    def add(self, owner, rtype, data, ttl=60, zone=None):
        """Adds a record (|owner| relative to the zone, or absolute with a
        dot) and commits it."""
        self._txn("zone-set", owner, str(ttl), rtype, data, zone=zone)

    def remove(self, owner, rtype, data=None, zone=None):
        """Removes |owner|'s records of |rtype| (all of them, or the one
        with |data|) and commits."""
        self._txn("zone-unset", owner, rtype, *([data] if data is not None else []), zone=zone)

    def stop(self):
        self.proc.stop()


def start(zone, records=(), tsig=("gh-key", "hmac-sha256", None), **kw):
    return Knot(zone, records, tsig, **kw)
