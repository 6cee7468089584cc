"""dnsupdate_seeds.py: writes tests/fuzz/corpus/dnsupdate/, responses to
an UPDATE as fuzz_dnsupdate.c reads them: signed with its fixed key over
its fixed request MAC (HMAC-SHA256 for even lengths, SHA512 for odd), with
each rcode and TSIG error, unsigned, truncated, with records before the
TSIG record and with a compressed key name."""

import hashlib
import hmac
import os
import struct

SECRET = b"0123456789abcdef0123456789abcde\0"
REQ_MAC = b"fedcba9876543210fedcba987654321\0"
NOW = 1700000000
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "dnsupdate")


def name(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.strip(".").split(".")) + b"\0"


def signed(body, arcount, rcode=0, error=0, when=NOW, alg="hmac-sha256", key_owner=None):
    md = hashlib.sha256 if alg == "hmac-sha256" else hashlib.sha512
    hdr = struct.pack(">HHHHHH", 0x4242, 0xA800 | rcode, 1, 0, 0, arcount)
    msg = hdr + body
    tvars = (name("gh-key") + struct.pack(">HI", 255, 0) + name(alg) +
             struct.pack(">HIHHH", when >> 32, when & 0xffffffff, 300, error, 0))
    mac = hmac.new(SECRET, struct.pack(">H", len(REQ_MAC)) + REQ_MAC + msg + tvars, md).digest()
    rdata = name(alg) + struct.pack(">HIHH", when >> 32, when & 0xffffffff, 300, len(mac)) + mac + \
        struct.pack(">HHH", 0x4242, error, 0)
    rr = (key_owner or name("gh-key")) + struct.pack(">HHIH", 250, 255, 0, len(rdata)) + rdata
    out = bytearray(msg + rr)
    out[10:12] = struct.pack(">H", arcount + 1)
    return bytes(out)


def pick(body, arcount=0, **kw):
    m = signed(body, arcount, **kw)
    if len(m) % 2:
        m = signed(body, arcount, alg="hmac-sha512", **kw)
    return m


ZONE = name("a.test") + struct.pack(">HH", 6, 1)
seeds = {
    "noerror": pick(ZONE),
    "notauth-badsig": pick(ZONE, rcode=9, error=16),
    "notauth-badkey": pick(ZONE, rcode=9, error=17),
    "badtime": pick(ZONE, rcode=9, error=18, when=NOW + 1000),
    "refused": pick(ZONE, rcode=5),
    "notzone": pick(ZONE, rcode=10),
    "opt-then-tsig": pick(ZONE + b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0), arcount=1),
    "compressed-owner": pick(ZONE, key_owner=b"\xc0\x0c"),
    "unsigned": struct.pack(">HHHHHH", 0x4242, 0xA800, 1, 0, 0, 0) + ZONE,
    "truncated": struct.pack(">HHHHHH", 0x4242, 0xAA00, 1, 0, 0, 0) + ZONE,
}
os.makedirs(OUT, exist_ok=True)
for k, v in seeds.items():
    with open(os.path.join(OUT, k), "wb") as f:
        f.write(v)
