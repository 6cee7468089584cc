#!/usr/bin/env python3
"""test_client_auth: TLS client certificates per site, sites[].client_auth
(issue 14). A private client CA, a second CA that nobody trusts, and
client certificates (good, expired, from the other CA) are made with the
openssl CLI; the sites have static certificates from the harness CA.

  auth.test   client_auth required, the default field names, its CA file
              named relative to the config file
  opt.test    client_auth optional, its own field names
  plain.test  no client_auth

curl (HTTP/1.1 and HTTP/2) and openssl s_client are the clients; the echo
backend shows what reached it: the subject and the SHA-256 of the DER
certificate (computed here from the PEM) for a verified certificate,
nothing for a missing one, and never a field a client sent itself. A
request whose Host is a client_auth site other than the one its handshake
was for gets 421 (HTTP/1.1 and HTTP/2). Configuration errors are clear,
and a reload to a bad CA file is refused while the old one keeps
serving."""

import base64
import hashlib
import json
import os
import re
import shutil
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

AUTH, OPT, PLAIN = "auth.test", "opt.test", "plain.test"
OPT_SUBJECT, OPT_FP = "X-Opt-Subject", "X-Opt-Cert-Fingerprint"

_s = {}


def client_cert(ca, subj, days="2", eku="clientAuth"):
    """(cert, key) of an ECDSA client certificate for |subj| from |ca|
    (a harness CA); |days| "-1" gives one that expired (notAfter a day
    before notBefore, which is now)."""
    stem = os.path.join(ca.dir, "client-%d" % h.free_port())
    key, csr, crt, ext = stem + ".key", stem + ".csr", stem + ".pem", stem + ".ext"
    h._run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", key])
    h._run(["openssl", "req", "-new", "-key", key, "-subj", subj, "-out", csr])
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=%s\n" % eku)
    h._run(["openssl", "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key,
            "-set_serial", "0x" + os.urandom(8).hex(), "-days", days, "-sha256",
            "-extfile", ext, "-out", crt])
    return crt, key


def der_sha256(pem_path):
    with open(pem_path) as f:
        pem = f.read()
    b64 = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", pem, re.S)
    return hashlib.sha256(base64.b64decode("".join(b64.group(1).split()))).hexdigest()


def config(ca_name="clients-ca.pem", ports=None):
    e = _s["echo"]
    https, http = ports or (_s["https"], _s["http"])
    return h.make_config([
        h.site([AUTH], [e], client_auth={"ca": [ca_name]}),
        h.site([OPT], [e], client_auth={"ca": [_s["client_ca"].cert], "mode": "optional",
                                        "subject_header": OPT_SUBJECT,
                                        "fingerprint_header": OPT_FP}),
        h.site([PLAIN], [e]),
    ], https, http, workers=1, storage=os.path.join(_s["dir"], "storage"))


def setup():
    if _s:
        return _s
    _s["echo"] = h.start_echo()
    _s["client_ca"] = h.CA("Gatehouse Test Client CA")
    _s["other_ca"] = h.CA("Someone Else's CA")
    _s["alice"] = client_cert(_s["client_ca"], "/O=Example/CN=alice")
    _s["expired"] = client_cert(_s["client_ca"], "/O=Example/CN=old", days="-1")
    _s["mallory"] = client_cert(_s["other_ca"], "/O=Example/CN=alice")
    name, d = h.gatehouse_dir()
    _s["dir"] = d
    shutil.copy(_s["client_ca"].cert, os.path.join(d, "clients-ca.pem"))
    _s["https"], _s["http"] = h.free_port(), h.free_port()
    _s["g"] = h.run_config(config(), _s["https"], _s["http"], where=(name, d))
    return _s


def curl(host, *args, cert=None, proto="--http1.1", sni=None):
    """curl to |host| (SNI |sni| or |host|; then Host: |host|), with the
    client certificate |cert| (cert, key) or none."""
    s = setup()
    extra = [proto]
    if cert:
        extra += ["--cert", cert[0], "--key", cert[1]]
    if sni:
        extra += ["-H", "Host: " + host]
        return h.curl(s["https"], sni, "/", *(extra + list(args)))
    return h.curl(s["https"], host, "/", *(extra + list(args)))


def echoed(r, what):
    h.eq(r.status, 200, "%s: status (%r)" % (what, r))
    return r.json()


# --- the required site ---------------------------------------------------------------

def test_required_good_cert_reaches_backend_with_subject_and_fingerprint():
    s = setup()
    fp = der_sha256(s["alice"][0])
    for proto in ("--http1.1", "--http2"):
        d = echoed(curl(AUTH, cert=s["alice"], proto=proto), "good cert " + proto)
        h.eq(h.echo_headers(d, "X-Client-Subject"), ["CN=alice,O=Example"], "subject " + proto)
        h.eq(h.echo_headers(d, "X-Client-Cert-SHA256"), [fp], "fingerprint " + proto)


def test_required_refuses_missing_other_ca_and_expired():
    s = setup()
    c = h.Counter(s["echo"])
    cases = [("no certificate", None), ("other CA", s["mallory"]), ("expired", s["expired"])]

    def one(case):
        what, cert = case
        for proto in ("--http1.1", "--http2"):
            r = curl(AUTH, cert=cert, proto=proto)
            h.check(r.rc != 0 and r.status == 0,
                    "%s %s: the handshake must fail: %r" % (what, proto, r))
    h.each(cases, one)
    h.eq(c.requests(), 0, "requests that reached the backend")


def test_s_client_sees_ca_names_and_alerts():
    """The CertificateRequest names the client CA (and only for the
    client_auth site); without a certificate the TLS 1.3 handshake ends
    with certificate_required, in TLS 1.2 with handshake_failure."""
    s = setup()
    rc, out = h.s_client(s["https"], AUTH, ["-tls1_3", "-CAfile", h.ca().cert])
    h.contains(out, "Acceptable client certificate CA names", "s_client output (auth.test)")
    h.contains(out, "CN = Gatehouse Test Client CA", "the CA name sent")
    h.not_contains(out, "Someone Else", "the untrusted CA is not named")
    rc, out = h.s_client(s["https"], AUTH, ["-tls1_3", "-ign_eof"])
    h.check(re.search(r"alert (certificate required|number 116)", out),
            "TLS 1.3 without a certificate: certificate_required alert: %s" % out[-800:])
    rc, out = h.s_client(s["https"], AUTH, ["-tls1_2"])
    h.check(rc != 0 and "handshake failure" in out,
            "TLS 1.2 without a certificate: handshake_failure: %s" % out[-800:])
    rc, out = h.s_client(s["https"], AUTH, ["-tls1_3", "-cert", s["alice"][0],
                                            "-key", s["alice"][1]])
    h.check(rc == 0 and "alert" not in out, "TLS 1.3 with a good certificate: %s" % out[-800:])


def test_plain_site_is_not_asked_for_a_certificate():
    s = setup()
    for version in ("-tls1_3", "-tls1_2"):
        rc, out = h.s_client(s["https"], PLAIN, [version])
        h.contains(out, "Verify return code", "s_client finished (%s)" % version)
        h.not_contains(out, "Acceptable client certificate CA names", "plain.test %s" % version)
        h.not_contains(out, "Client Certificate Types", "plain.test %s" % version)
    d = echoed(curl(PLAIN, cert=s["alice"]), "plain.test with a certificate offered")
    h.eq(h.echo_headers(d, "X-Client-Subject"), [], "no subject on plain.test")


# --- the optional site -----------------------------------------------------------------

def test_optional_site():
    s = setup()
    fp = der_sha256(s["alice"][0])
    for proto in ("--http1.1", "--http2"):
        d = echoed(curl(OPT, proto=proto), "optional, no certificate " + proto)
        h.eq(h.echo_headers(d, OPT_SUBJECT) + h.echo_headers(d, OPT_FP), [],
             "no certificate fields " + proto)
        d = echoed(curl(OPT, cert=s["alice"], proto=proto), "optional, good certificate " + proto)
        h.eq(h.echo_headers(d, OPT_SUBJECT), ["CN=alice,O=Example"], "subject " + proto)
        h.eq(h.echo_headers(d, OPT_FP), [fp], "fingerprint " + proto)
        h.eq(h.echo_headers(d, "X-Client-Subject"), [], "the default name is not used " + proto)
        for what, cert in (("other CA", s["mallory"]), ("expired", s["expired"])):
            r = curl(OPT, cert=cert, proto=proto)
            h.check(r.rc != 0 and r.status == 0,
                    "optional, %s %s: refused, not let through: %r" % (what, proto, r))


# --- forged fields -----------------------------------------------------------------

def test_forged_fields_are_stripped_everywhere():
    s = setup()
    forged = []
    for name in ("X-Client-Subject", "x-client-cert-sha256", OPT_SUBJECT, OPT_FP):
        forged += ["-H", "%s: CN=admin" % name]
    for proto in ("--http1.1", "--http2"):
        for host, cert in ((AUTH, s["alice"]), (OPT, None), (PLAIN, None)):
            d = echoed(curl(host, *forged, cert=cert, proto=proto), "forged to %s %s" % (host, proto))
            sent = [v for k, v in d["headers"] if k.lower() in (
                "x-client-subject", "x-client-cert-sha256", OPT_SUBJECT.lower(), OPT_FP.lower())]
            h.check("CN=admin" not in sent, "%s %s: forged value reached the backend: %r" %
                    (host, proto, d["headers"]))
            if host == AUTH:
                h.eq(h.echo_headers(d, "X-Client-Subject"), ["CN=alice,O=Example"],
                     "the verified subject alone (%s)" % proto)


# --- Host versus the handshake's site -----------------------------------------------------

def test_misdirected_requests_get_421():
    s = setup()
    c = h.Counter(s["echo"])
    for proto in ("--http1.1", "--http2"):
        # SNI plain.test, Host auth.test: no certificate was ever asked for.
        r = curl(AUTH, sni=PLAIN, proto=proto)
        h.eq(r.status, 421, "Host auth.test over a plain.test handshake %s (%r)" % (proto, r))
        # SNI auth.test (verified), Host opt.test: another client_auth site.
        r = curl(OPT, sni=AUTH, cert=s["alice"], proto=proto)
        h.eq(r.status, 421, "Host opt.test over an auth.test handshake %s (%r)" % (proto, r))
    h.eq(c.requests(), 0, "misdirected requests that reached the backend")
    # A site without client_auth may be reached over any handshake, and
    # gets no certificate fields.
    d = echoed(curl(PLAIN, sni=AUTH, cert=s["alice"], proto="--http2"), "Host plain.test via auth")
    h.eq(h.echo_headers(d, "X-Client-Subject"), [], "no subject for plain.test")


def test_h2_connection_reuse_across_sites():
    """One HTTP/2 connection (python3-h2 over TLS, SNI plain.test): a
    request for plain.test is served, one for auth.test on the same
    connection gets 421."""
    import h2.config
    import h2.connection
    import h2.events
    s = setup()
    ctx = h.client_context(alpn=["h2"])
    sock = h.tls_connect(s["https"], PLAIN, ctx=ctx)
    try:
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        sid1, sid2 = 1, 3
        for sid, host in ((sid1, PLAIN), (sid2, AUTH)):
            conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                                    (":authority", host), (":path", "/")], end_stream=True)
        sock.sendall(conn.data_to_send())
        status = {}
        ended = set()

        def pump():
            data = sock.recv(65536)
            if not data:
                raise h.Fail("connection closed")
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status[ev.stream_id] = dict(ev.headers)[b":status"]
                elif isinstance(ev, h2.events.StreamEnded):
                    ended.add(ev.stream_id)
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            sock.sendall(conn.data_to_send())
            return {sid1, sid2} <= ended
        h.wait_until(pump, 10, "both responses", interval=0)
        h.eq(status, {sid1: b"200", sid2: b"421"}, "statuses on one connection")
    finally:
        sock.close()


# --- session resumption ---------------------------------------------------------------

def get_over(sock, host):
    """One GET / for |host| on the TLS socket |sock|; the echo's JSON."""
    c = h.Conn(sock)
    r = c.request("GET", "/", host)
    h.eq(r.status, 200, "GET %s" % host)
    return r.json()


def test_resumption_stays_within_the_site():
    """Session tickets are process-wide: a session from a plain.test
    handshake must not resume into auth.test (that would skip the
    certificate), nor one from auth.test into plain.test; an auth.test
    session resumes into auth.test, and its requests still carry the
    certificate's fields. TLS 1.3 and 1.2."""
    import ssl
    s = setup()
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        bare = h.client_context(max_version=version)
        alice = h.client_context(max_version=version)
        alice.load_cert_chain(*s["alice"])

        def session(host, ctx):
            sock = h.tls_connect(s["https"], host, ctx=ctx)
            get_over(sock, host)  # TLS 1.3 tickets come after the handshake
            sess = sock.session
            sock.close()
            return sess
        what = "%s: " % version.name
        plain_sess = session(PLAIN, bare)
        reused = served = False
        try:
            sock = h.tls_connect(s["https"], AUTH, ctx=bare, session=plain_sess)
            reused = sock.session_reused
            get_over(sock, AUTH)
            served = True
        except (ssl.SSLError, OSError, h.Fail):
            pass  # refused: the TLS 1.3 alert comes after the client's Finished
        h.check(not reused and not served,
                what + "a plain.test session into auth.test: reused %s, served %s" % (reused, served))
        auth_sess = session(AUTH, alice)
        sock = h.tls_connect(s["https"], PLAIN, ctx=alice, session=auth_sess)
        h.check(not sock.session_reused, what + "auth.test session resumed into plain.test")
        sock.close()
        sock = h.tls_connect(s["https"], AUTH, ctx=alice, session=auth_sess)
        h.check(sock.session_reused, what + "auth.test session not resumed into auth.test")
        d = get_over(sock, AUTH)
        sock.close()
        h.eq(h.echo_headers(d, "X-Client-Subject"), ["CN=alice,O=Example"],
             what + "subject after resumption")


# --- configuration ---------------------------------------------------------------------

def validate(conf):
    name, d = h.gatehouse_dir()
    path = os.path.join(d, "gatehouse.json")
    with open(path, "w") as f:
        json.dump(conf, f)
    return h.gatehouse_cmd("validate", "-c", path), path


def test_config_errors():
    s = setup()
    cases = [
        ({}, 'sites[0].client_auth: missing required key "ca"'),
        ({"ca": []}, "sites[0].client_auth.ca: expected a list of file names, got an empty list"),
        ({"ca": [s["client_ca"].cert], "mode": "require"},
         'sites[0].client_auth.mode: expected one of "required", "optional", got "require" '
         '(did you mean "required"?)'),
        ({"ca": ["/nonexistent/ca.pem"]},
         'sites[0].client_auth.ca[0]: cannot read "/nonexistent/ca.pem": No such file'),
        ({"ca": [s["client_ca"].cert], "subject_header": "X Client"},
         "sites[0].client_auth.subject_header: expected a header field name"),
    ]

    def one(case):
        ca, want = case
        conf = config()
        conf["sites"][0]["client_auth"] = ca
        r, path = validate(conf)
        h.check(r.returncode != 0, "validate accepted %r" % ca)
        h.contains(r.stderr + r.stdout, path + ": " + want, "validate %r" % ca)
    h.each(cases, one)


def test_bad_ca_file_refused_at_start():
    s = setup()
    name, d = h.gatehouse_dir()
    for text, want in (("", "no PEM certificate in it"),
                       ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                        "certificate 1 is not valid PEM")):
        with open(os.path.join(d, "clients-ca.pem"), "w") as f:
            f.write(text)
        conf = config(ports=(h.free_port(), h.free_port()))
        path = os.path.join(d, "gatehouse.json")
        with open(path, "w") as f:
            json.dump(conf, f)
        r = h.gatehouse_cmd("run", "-c", path, timeout=20)
        h.check(r.returncode != 0, "gatehouse run started with a bad CA file")
        h.contains(r.stderr, '%s: sites[0].client_auth.ca[0]: "%s' % (path, d), "the error")
        h.contains(r.stderr, want, "the error")


def test_reload_to_bad_ca_file_keeps_serving():
    s = setup()
    g = s["g"]
    bad = os.path.join(s["dir"], "empty-ca.pem")
    open(bad, "w").close()
    off = g.log_size()
    g.write_config(config(ca_name="empty-ca.pem"))
    g.reload()
    g.wait_log(r"reload refused, still serving the previous configuration: .*"
               r"sites\[0\]\.client_auth\.ca\[0\]: .*empty-ca\.pem.*no PEM certificate", since=off)
    d = echoed(curl(AUTH, cert=s["alice"]), "after the refused reload")
    h.eq(h.echo_headers(d, "X-Client-Subject"), ["CN=alice,O=Example"], "still verified")
    r = curl(AUTH)
    h.check(r.rc != 0 and r.status == 0, "still required after the refused reload: %r" % r)
    # And back to the good file: applied.
    off = g.log_size()
    g.write_config(config())
    g.reload()
    g.wait_log(r"configuration reloaded", since=off)


if __name__ == "__main__":
    h.main()
