#!/usr/bin/env python3
"""test_tls: TLS termination: certificate choice by SNI (exact, wildcard,
default, unknown), ALPN, protocol versions, session resumption across
workers, and quick mode's --no-resumption."""

import os
import re
import ssl
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

_state = {}


def echo():
    if "echo" not in _state:
        _state["echo"] = h.start_echo()
    return _state["echo"]


def gh_nodefault():
    """Sites a.test, b.test, *.example.test with their own certificates; no
    default site; 2 workers."""
    if "nodef" not in _state:
        e = echo()
        _state["nodef"] = h.start_gatehouse([
            h.site(["a.test"], [e]),
            h.site(["b.test"], [e]),
            h.site(["*.example.test"], [e]),
        ], workers=2)
    return _state["nodef"]


def gh_default():
    if "def" not in _state:
        e = echo()
        _state["def"] = h.start_gatehouse([
            h.site(["a.test"], [e]),
            h.site(["fallback.test"], [e], default=True),
        ], workers=2)
    return _state["def"]


def handshake_error(port, sni, **ctx_kw):
    """Connects and returns the SSLError text, or None if the handshake
    succeeded."""
    ctx = h.client_context(verify=False, **ctx_kw)
    try:
        s = h.tls_connect(port, sni, ctx=ctx)
    except ssl.SSLError as e:
        return str(e)
    except (ConnectionResetError, BrokenPipeError) as e:
        return "connection reset: %s" % e
    s.close()
    return None


def test_sni_selects_certificate():
    g = gh_nodefault()
    for name in ("a.test", "b.test"):
        info, out = h.s_client_cert(g.https_port, name)
        h.check(info is not None, "no certificate for SNI %s; s_client said:\n%s" % (name, out[-1500:]))
        h.eq(info["sans"], [name], "SANs served for SNI %s" % name)
        h.contains(info["subject"], "CN=%s" % name, "subject served for SNI %s" % name)
    # And a verifying client (CA + hostname check) accepts both.
    for name in ("a.test", "b.test"):
        r = g.get(name, "/sni")
        h.eq(r.status, 200, "GET via verified TLS to %s" % name)
        h.eq(r.json()["path"], "/sni", "path seen by the backend")


def test_wildcard_site():
    g = gh_nodefault()
    info, out = h.s_client_cert(g.https_port, "a.example.test")
    h.check(info is not None, "no certificate for a.example.test:\n%s" % out[-1500:])
    h.eq(info["sans"], ["*.example.test"], "SANs served for a.example.test")
    r = g.get("a.example.test", "/wild")
    h.eq(r.status, 200, "GET https://a.example.test/wild")
    # A wildcard covers exactly one label.
    err = handshake_error(g.https_port, "x.a.example.test")
    h.check(err is not None, "x.a.example.test (two labels under the wildcard) was served")
    err = handshake_error(g.https_port, "example.test")
    h.check(err is not None, "example.test (the wildcard's parent) was served")


def test_unknown_name_without_default_fails_handshake():
    g = gh_nodefault()
    err = handshake_error(g.https_port, "unknown.test")
    h.check(err is not None, "handshake for unknown.test succeeded without a default site")
    h.check("UNRECOGNIZED_NAME" in err.upper() or "UNRECOGNIZED NAME" in err.upper(),
            "expected an unrecognized_name alert, got: %s" % err)
    rc, out = h.s_client(g.https_port, "unknown.test")
    h.check("unrecognized name" in out.lower() or "alert number 112" in out.lower(),
            "openssl s_client shows no unrecognized_name alert:\n%s" % out[-1500:])
    # The server is still fine.
    h.eq(g.get("a.test", "/after").status, 200, "request after a refused handshake")


def test_default_site_serves_unknown_names():
    g = gh_default()
    for sni in ("unknown.test", "zzz.other.test", None):
        info, out = h.s_client_cert(g.https_port, sni)
        h.check(info is not None, "no certificate for SNI %r with a default site:\n%s" % (sni, out[-1500:]))
        h.eq(info["sans"], ["fallback.test"], "default certificate for SNI %r" % sni)
    # An exact name still gets its own certificate.
    info, _ = h.s_client_cert(g.https_port, "a.test")
    h.eq(info and info["sans"], ["a.test"], "SANs served for a.test with a default site")
    # Unknown Host header on the default site's certificate is served too.
    ctx = h.client_context(verify=False)
    c = h.Conn(h.tls_connect(g.https_port, "unknown.test", ctx=ctx))
    try:
        r = c.request("GET", "/dflt", "unknown.test")
    finally:
        c.close()
    h.eq(r.status, 200, "request for an unknown name on the default site")
    h.eq(r.json()["path"], "/dflt", "path at the backend")


def test_alpn_prefers_h2():
    g = gh_nodefault()
    # The server's preference (h2, then http/1.1), whatever the client's order.
    for offer, want in ((["h2", "http/1.1"], "h2"), (["http/1.1", "h2"], "h2"),
                        (["h2"], "h2"), (["http/1.1"], "http/1.1")):
        ctx = h.client_context(alpn=offer)
        s = h.tls_connect(g.https_port, "a.test", ctx=ctx)
        try:
            h.eq(s.selected_alpn_protocol(), want, "ALPN with offer %r" % offer)
        finally:
            s.close()
    # Offering only protocols we do not speak gets no_application_protocol.
    ctx = h.client_context(alpn=["spdy/3", "h2c"])
    try:
        s = h.tls_connect(g.https_port, "a.test", ctx=ctx)
    except ssl.SSLError:
        return
    s.close()
    raise h.Fail("a handshake offering only spdy/3 and h2c succeeded")


def test_tls_versions():
    g = gh_nodefault()
    # TLS 1.1: the client must really offer it (lower the client's own
    # security level so that OpenSSL 3 is willing to).
    err = handshake_error(g.https_port, "a.test", min_version=ssl.TLSVersion.TLSv1,
                          max_version=ssl.TLSVersion.TLSv1_1, ciphers="DEFAULT:@SECLEVEL=0")
    h.check(err is not None, "a TLS 1.1 handshake succeeded")
    h.check("NO_PROTOCOLS_AVAILABLE" not in err and "no protocols available" not in err,
            "the client did not offer TLS 1.1 (test setup problem): %s" % err)
    for ver, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        ctx = h.client_context(min_version=ver, max_version=ver)
        c = h.Conn(h.tls_connect(g.https_port, "a.test", ctx=ctx))
        try:
            h.eq(c.sock.version(), name, "negotiated version")
            r = c.request("GET", "/v", "a.test")
            h.eq(r.status, 200, "request over %s" % name)
        finally:
            c.close()


def _resume_chain(port, sni, version, n):
    """n connections, each offering the newest session from the previous
    one; returns (list of session_reused, first session)."""
    ctx = h.client_context(min_version=version, max_version=version)
    session = None
    first = None
    reused = []
    for i in range(n):
        c = h.Conn(h.tls_connect(port, sni, ctx=ctx, session=session))
        try:
            # A full request/response so TLS 1.3 tickets have arrived.
            r = c.request("GET", "/resume/%d" % i, sni)
            h.eq(r.status, 200, "request %d" % i)
            reused.append(c.sock.session_reused)
            s = c.sock.session
            if first is None:
                first = s
            if s is not None:
                session = s
        finally:
            c.close()
    return reused, first


def test_session_resumption_across_workers():
    g = gh_nodefault()
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        reused, first = _resume_chain(g.https_port, "a.test", version, 12)
        h.check(first is not None and first.has_ticket,
                "%s: no session ticket was issued" % version.name)
        h.eq(reused[0], False, "%s: first connection resumed" % version.name)
        # 11 connections from different source ports land on both workers
        # (SO_REUSEPORT); all must resume: the ticket keys are shared.
        h.eq(reused[1:], [True] * 11, "%s: session_reused of connections 2..12" % version.name)


def test_session_ticket_visible_to_s_client():
    g = gh_nodefault()
    path = os.path.join(h.subdir("sess"), "with.pem")
    rc, out = h.s_client(g.https_port, "a.test", ["-tls1_2", "-sess_out", path])
    h.check(os.path.exists(path), "s_client wrote no session:\n%s" % out[-1500:])
    h.check(re.search(r"TLS session ticket", out),
            "s_client shows no session ticket with resumption on:\n%s" % out[-2000:])


def test_quick_mode_no_resumption():
    e = echo()
    g = h.start_quick([e], ["quick.test"], ["--workers", "2", "--no-resumption"])
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        reused, first = _resume_chain(g.https_port, "quick.test", version, 4)
        h.eq(reused, [False] * 4, "%s: session_reused with --no-resumption" % version.name)
        h.check(first is None or not first.has_ticket,
                "%s: a session ticket was issued with --no-resumption" % version.name)
    path = os.path.join(h.subdir("sess"), "without.pem")
    rc, out = h.s_client(g.https_port, "quick.test", ["-tls1_2", "-sess_out", path])
    h.check("Verify return code" in out or "Cipher" in out,
            "s_client did not complete a handshake:\n%s" % out[-1500:])
    h.check(not re.search(r"TLS session ticket", out),
            "s_client shows a session ticket with --no-resumption:\n%s" % out[-2000:])
    # Reusing that session (if any) must not resume either.
    if os.path.exists(path):
        rc, out = h.s_client(g.https_port, "quick.test", ["-tls1_2", "-sess_in", path])
        h.check("Reused," not in out, "s_client resumed a session with --no-resumption:\n%s"
                % out[-1500:])


if __name__ == "__main__":
    h.main()
