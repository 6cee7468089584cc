#!/usr/bin/env python3
"""test_dashboard: the admin API's dashboard in a real browser (issue 17).

Headless Chromium (Debian's, driven through chromedriver's WebDriver API)
against a real Gatehouse whose certificates come from a real Pebble:

- the page loads without a token but shows nothing until one is given; a
  wrong token is refused with the API's 401;
- the certificates table shows what Pebble issued, with the not-after the
  stored certificate has;
- a renewal started from the page changes the serial the page shows; a
  revocation asks first (cancel does nothing; confirm revokes at Pebble);
- a name refused for on-demand issuance appears with the refusal's reason;
- names and issuers carrying HTML (a static certificate with a
  "<script>" SAN and an "<img onerror>" issuer) show as text: no element
  is created from them, nothing runs, and the console has no error and
  no CSP violation;
- the upstream the requests went to shows as up, with its 2xx count;
- with the server gone the page says the API is unreachable instead of
  showing old numbers as current.

Screenshots of each step are kept in $GH_ARTEFACTS (default: artefacts/ in
the test's working directory, build/*/tests/artefacts/dashboard)."""

import os
import re
import socket
import ssl
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import pebble  # noqa: E402
import webdriver  # noqa: E402
from test_admin import admin_json  # noqa: E402

TOKEN = "dash-token-0123456789"
HTTPS_PORT = h.free_port()
HTTP_PORT = h.free_port()
MANAGED = "dash.example.com"
ON_DEMAND = "one.od.test"
STATIC = "static.example.com"
HOSTILE_SAN = "<script>window.__pwned=1;alert(1)</script>.example.com"
HOSTILE_ISSUER = "<img src=x onerror=window.__pwned=2>"
ARTEFACTS = os.path.join(os.environ.get("GH_ARTEFACTS", os.path.join(os.getcwd(), "artefacts")),
                         "dashboard")

_s = {}


def shot(b, name):
    path = b.screenshot(os.path.join(ARTEFACTS, name + ".png"))
    print("# screenshot %s" % path)


def refuse_handshake(name):
    """A handshake for |name|, which on-demand must refuse: it fails."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", HTTPS_PORT), timeout=h.IO_TIMEOUT) as s:
            with ctx.wrap_socket(s, server_hostname=name):
                pass
    except (OSError, ssl.SSLError, ValueError, UnicodeError):
        return
    raise h.Fail("a handshake for %s succeeded" % name)


def stored_cert(storage, name):
    pem = os.path.join(storage, "certs", name, "cert.pem")
    out = subprocess.run(["openssl", "x509", "-in", pem, "-noout", "-serial", "-enddate"],
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    serial = re.search(r"serial=([0-9A-Fa-f]+)", out).group(1).lower().lstrip("0") or "0"
    end = re.search(r"notAfter=(.*)", out).group(1).strip()
    iso = subprocess.run(["date", "-u", "-d", end, "+%Y-%m-%dT%H:%M:%SZ"],
                         stdout=subprocess.PIPE, check=True).stdout.decode().strip()
    return serial, iso


def row(b, table, name):
    """The dataset and cell texts of |table|'s row for |name|, or None."""
    return b.js("""
        const t = document.querySelector(arguments[0]);
        if (!t) return null;
        for (const r of t.querySelectorAll('tr[data-name]')) {
          if (r.dataset.name !== arguments[1]) continue;
          const cells = {};
          for (const td of r.querySelectorAll('td')) cells[td.className.split(' ')[0]] = td.textContent;
          return {data: Object.assign({}, r.dataset), cls: r.className, cells: cells};
        }
        return null;""", table, name)


def check_console(b):
    """No script error and no CSP report since the last look. Chromium logs
    every non-2xx answer as a "network" error too: the 401s the token form
    gets are expected; any other is not."""
    bad = [e for e in b.console()
           if (e.get("level") == "SEVERE" or "Content Security Policy" in e.get("message", ""))
           and not (e.get("source") == "network" and "status of 401" in e.get("message", ""))]
    h.eq(bad, [], "browser console errors and CSP reports")


def test_dashboard_in_chromium():
    if not webdriver.available():
        raise h.Fail("chromium and chromedriver are needed (scripts/deps installs them)")
    p = pebble.start(http_port=HTTP_PORT, tls_port=HTTPS_PORT)
    echo = h.start_echo()
    port = h.free_port()
    where = h.gatehouse_dir()
    storage = os.path.join(where[1], "storage")
    hostile_ca = h.CA(HOSTILE_ISSUER)
    static = hostile_ca.leaf([STATIC, HOSTILE_SAN])
    conf = h.make_config(
        [h.site([MANAGED], [echo], cert=None),
         h.site([STATIC], [echo], cert=static),
         h.site(["*"], [echo], cert=None, default=True)], HTTPS_PORT, HTTP_PORT, workers=2,
        acme={"directory": p.directory_url, "email": "ops@example.com",
              "ca_roots": [p.ca_file], "challenges": ["tls-alpn-01"]},
        on_demand={"allow": ["*.od.test"], "wait_budget": "30s"},
        storage=storage, admin={"listen": "127.0.0.1:%d" % port, "token": TOKEN})
    g = h.run_config(conf, HTTPS_PORT, HTTP_PORT, where)
    ctx = h.client_context(cafile=p.write_roots())

    def verified(name):
        def attempt():
            try:
                c = h.Conn.tls(HTTPS_PORT, name, ctx=ctx, timeout=60)
            except Exception:
                return None
            try:
                return c.request("GET", "/", name).status == 200
            finally:
                c.close()
        h.wait_until(attempt, 60, "a verified request for %s" % name, interval=0.2)

    verified(MANAGED)
    verified(ON_DEMAND)
    refuse_handshake("x.not-allowed.test")
    refusals = admin_json(port, "GET", "/ondemand", token=TOKEN)["recent_refusals"]
    api_reason = {r["name"]: r["reason"] for r in refusals}
    h.check("x.not-allowed.test" in api_reason, "the API lists the refusal: %r" % refusals)

    b = webdriver.start()
    _s["browser"] = b
    base = "http://127.0.0.1:%d/" % port
    b.get(base)
    b.wait_js("return document.body.dataset.state === 'login'", 20, "the token form")
    h.eq(b.js("return document.querySelectorAll('#certs-table tbody tr').length"), 0,
         "no data before a token")
    shot(b, "01-login")
    # A wrong token: the API's 401, said on the page.
    b.type("#token", "not-the-token")
    b.click("#token-submit")
    b.wait_js("return /401/.test(document.getElementById('login-error').textContent)", 20,
              "the page says the token was refused")
    h.eq(b.js("return document.body.dataset.state"), "login", "still at the token form")
    h.eq(b.js("return sessionStorage.getItem('gatehouse.token')"), None, "a refused token is not kept")
    shot(b, "02-wrong-token")
    b.type("#token", TOKEN)
    b.click("#token-submit")
    b.wait_js("return document.body.dataset.state === 'live'", 20, "the dashboard")
    h.eq(b.js("return sessionStorage.getItem('gatehouse.token')"), TOKEN, "the token is kept")

    # Certificates: Pebble's, with the stored not-after and serial.
    serial, not_after = stored_cert(storage, MANAGED)
    r = b.wait_js("""
        const r = document.querySelector('#certs-table tr[data-name="' + arguments[0] + '"]');
        return r && r.dataset.serial ? true : null;""", 20, "the managed certificate's row", MANAGED)
    r = row(b, "#certs-table", MANAGED)
    h.eq(r["data"]["notAfter"], not_after, "not-after shown (the stored certificate's)")
    h.eq(r["data"]["serial"], serial, "serial shown")
    h.contains(r["cells"]["c-issuer"], "Pebble", "issuer shown")
    h.contains(r["cells"]["c-source"], "managed", "source")
    od = h.wait_until(lambda: row(b, "#certs-table", ON_DEMAND), 20, "the on-demand row")
    h.contains(od["cells"]["c-source"], "on-demand", "on-demand source")

    # Attacker-influenced text stays text.
    st = h.wait_until(lambda: row(b, "#certs-table", STATIC), 20, "the static row")
    h.contains(st["cells"]["c-name"], HOSTILE_SAN, "the <script> SAN as text")
    h.contains(st["cells"]["c-issuer"], HOSTILE_ISSUER, "the <img> issuer as text")
    h.eq(b.js("return document.querySelectorAll('body script').length"), 0,
         "no script element in the body")
    h.eq(b.js("return document.querySelectorAll('main img, main b').length"), 0,
         "no element made from a name")
    h.eq(b.js("return window.__pwned === undefined"), True, "nothing ran")
    h.eq(b.alert_text(), None, "no alert")

    # On-demand: the refused name with the API's reason.
    ref = h.wait_until(lambda: row(b, "#refusals-table", "x.not-allowed.test"), 20,
                       "the refused name on the page")
    h.eq(ref["cells"]["r-reason"], api_reason["x.not-allowed.test"], "its reason")

    # Upstreams: the echo backend, up, with the requests made above.
    ep = b.wait_js("""
        const r = document.querySelector('#upstreams tr[data-address="' + arguments[0] + '"]');
        return r ? r.textContent : null;""", 20, "the echo endpoint", echo.addr)
    h.contains(ep, "up", "the endpoint's state")
    shot(b, "03-dashboard")

    # ACME activity: the two orders, ok, at Pebble.
    acts = b.wait_js("""
        const rows = document.querySelectorAll('#recent-orders tbody tr');
        return rows.length >= 2 ? Array.from(rows).map(r => r.textContent) : null;""",
                     20, "two recent orders")
    h.check(any(MANAGED in t for t in acts) and any(ON_DEMAND in t for t in acts),
            "both orders listed: %r" % acts)
    check_console(b)

    # Renew from the page: the serial the page shows changes.
    b.js("document.querySelector('#certs-table tr[data-name=\"%s\"] .act-renew').click()"
         % MANAGED)
    b.wait_js("return /renewing/.test(document.getElementById('action-result').textContent)",
              20, "the API's answer to the renewal")
    new = b.wait_js("""
        const r = document.querySelector('#certs-table tr[data-name="' + arguments[0] + '"]');
        return r && r.dataset.serial && r.dataset.serial !== arguments[1] ? r.dataset.serial : null;
        """, 90, "a new serial on the page", MANAGED, serial)
    h.eq(new, stored_cert(storage, MANAGED)[0], "the page shows the new stored serial")
    h.eq(admin_json(port, "GET", "/certs/" + MANAGED, token=TOKEN)["serial"], new, "and the API")
    shot(b, "04-renewed")

    # Revoke asks first: cancel leaves it valid; confirm revokes it at Pebble.
    b.js("document.querySelector('#certs-table tr[data-name=\"%s\"] .act-revoke').click()"
         % ON_DEMAND)
    b.wait_js("return document.getElementById('revoke-dialog').open", 10, "the confirmation")
    h.eq(b.js("return document.getElementById('revoke-name').textContent"), ON_DEMAND,
         "the dialog names the certificate")
    shot(b, "05-revoke-confirm")
    b.click("#revoke-cancel")
    b.wait_js("return !document.getElementById('revoke-dialog').open", 10, "the dialog closes")
    od_serial = row(b, "#certs-table", ON_DEMAND)["data"]["serial"]
    h.eq(p.cert_status(od_serial)["Status"], "Valid", "cancel revokes nothing")
    b.js("document.querySelector('#certs-table tr[data-name=\"%s\"] .act-revoke').click()"
         % ON_DEMAND)
    b.wait_js("return document.getElementById('revoke-dialog').open", 10, "the confirmation")
    b.js("document.getElementById('revoke-reason').value = 'superseded'")
    b.click("#revoke-confirm")
    b.wait_js("return /revoked/.test(document.getElementById('action-result').textContent)",
              60, "the API's answer to the revocation")
    h.eq(p.cert_status(od_serial)["Status"], "Revoked", "Pebble revoked it")
    check_console(b)

    # The server goes away: the page says so rather than showing old numbers.
    before = b.js("return Number(document.body.dataset.refreshes)")
    h.check(before > 0, "the page refreshed")
    h.eq(g.stop(), 0, "gatehouse stops cleanly")
    b.wait_js("return document.body.dataset.state === 'stale'", 30, "the page notices")
    h.contains(b.js("return document.getElementById('live-status').textContent"), "unreachable",
               "the status line")
    shot(b, "06-unreachable")
    b.quit()


if __name__ == "__main__":
    h.main()
