"""caa_seeds.py: writes tests/fuzz/corpus/caa/, answers to the CAA query
for "a.test" as fuzz_caa.c reads them (id 0x4242): issue and issuewild
records with RFC 8657 parameters, a critical unknown tag, a CNAME to
another owner, NXDOMAIN, SERVFAIL, truncated."""

import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "caa")


def name(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.strip(".").split(".")) + b"\0"


def caa(flags, tag, value, owner=b"\xc0\x0c"):
    rdata = bytes([flags, len(tag)]) + tag.encode() + value.encode()
    return owner + struct.pack(">HHIH", 257, 1, 60, len(rdata)) + rdata


def answer(rrs, rcode=0, tc=False):
    flags = 0x8180 | rcode | (0x0200 if tc else 0)
    return struct.pack(">HHHHHH", 0x4242, flags, 1, len(rrs), 0, 0) + name("a.test") + \
        struct.pack(">HH", 257, 1) + b"".join(rrs)


cname_target = name("b.test")
seeds = {
    "issue": answer([caa(0, "issue", "ca.example")]),
    "params": answer([caa(0, "issue", "ca.example; accounturi=https://ca.example/acct/1; "
                                      "validationmethods=http-01,dns-01")]),
    "wild": answer([caa(0, "issue", ";"), caa(0, "issuewild", "letsencrypt.org")]),
    "critical": answer([caa(128, "tbs", "x"), caa(0, "iodef", "mailto:a@b.c")]),
    "cname": answer([b"\xc0\x0c" + struct.pack(">HHIH", 5, 1, 60, len(cname_target)) + cname_target,
                     caa(0, "issue", "other.example", owner=name("b.test"))]),
    "nxdomain": answer([], rcode=3),
    "servfail": answer([], rcode=2),
    "truncated": answer([], tc=True),
}
os.makedirs(OUT, exist_ok=True)
for k, v in seeds.items():
    with open(os.path.join(OUT, k), "wb") as f:
        f.write(v)
