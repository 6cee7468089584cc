"""webdriver: a real headless Chromium for the dashboard's tests, driven
through ChromeDriver's W3C WebDriver HTTP API with nothing but urllib (no
selenium: PyPI is not reachable, and the protocol is a dozen JSON calls).

    b = webdriver.start()          # chromedriver + a headless chromium session
    b.get("http://127.0.0.1:2019/")
    b.js("return document.body.dataset.state")
    b.click("#token-submit"); b.type("#token", "secret")
    b.screenshot("/path/shot.png")
    b.console()                    # the browser's console: errors, CSP reports

Both come from Debian (chromium, chromium-driver), installed by
scripts/deps. The driver is a harness.Proc, so it is stopped with the
rest at the end of the file."""

import atexit
import base64
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request

import harness as h

CHROMIUM = os.environ.get("GH_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GH_CHROMEDRIVER", "/usr/bin/chromedriver")
# The first start of a browser on a busy two-core machine can take a while.
START_TIMEOUT = 60


def available():
    return all(os.access(p, os.X_OK) for p in (CHROMIUM, CHROMEDRIVER))


class WebDriverError(Exception):
    def __init__(self, status, error, message):
        super().__init__("%s %s: %s" % (status, error, message))
        self.status, self.error = status, error


class Browser:
    def __init__(self, driver, port, session, profile):
        self.driver, self.port, self.session, self.profile = driver, port, session, profile

    # --- the protocol ----------------------------------------------------------------

    def _call(self, method, path, body=None, timeout=60):
        url = "http://127.0.0.1:%d/session/%s%s" % (self.port, self.session, path)
        return _request(method, url, body, timeout)

    def get(self, url):
        self._call("POST", "/url", {"url": url})

    def js(self, script, *args):
        """Runs |script| (a function body: use return) in the page."""
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css):
        """The element |css| selects, or raises WebDriverError (no such element)."""
        v = self._call("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(v.values()))

    def click(self, css):
        self._call("POST", "/element/%s/click" % self.find(css), {})

    def type(self, css, text):
        el = self.find(css)
        self._call("POST", "/element/%s/clear" % el, {})
        self._call("POST", "/element/%s/value" % el, {"text": text})

    def alert_text(self):
        """The text of an open alert/confirm dialog, or None."""
        try:
            return self._call("GET", "/alert/text")
        except WebDriverError as e:
            if e.error == "no such alert":
                return None
            raise

    def screenshot(self, path):
        png = base64.b64decode(self._call("GET", "/screenshot"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(png)
        return path

    def console(self):
        """The browser console's entries since the last call: dicts with
        level and message (JS errors and CSP violations land here)."""
        try:
            return self._call("POST", "/se/log", {"type": "browser"})
        except WebDriverError:
            return []

    def wait_js(self, script, timeout, what, *args):
        """Polls |script| until it returns something truthy; returns it."""
        return h.wait_until(lambda: self.js(script, *args), timeout, what, interval=0.1)

    def quit(self):
        """Ends the session: chromedriver closes the browser. Once only;
        also run at exit, so a test that fails half-way leaves no browser
        behind (stopping chromedriver alone would orphan it)."""
        if self.session is None:
            return
        try:
            self._call("DELETE", "", timeout=20)
        except Exception:
            pass
        self.session = None
        shutil.rmtree(self.profile, ignore_errors=True)


def _request(method, url, body, timeout):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            doc = json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        doc = json.loads(e.read() or b"{}")
        v = doc.get("value") or {}
        raise WebDriverError(e.code, v.get("error"), (v.get("message") or "")[:500])
    return doc.get("value")


def start(width=1400, height=1800):
    """Starts chromedriver and a headless Chromium session."""
    port = h.free_port()
    driver = h.Proc("chromedriver", [CHROMEDRIVER, "--port=%d" % port])
    h.wait_until(lambda: h.port_accepts(port), START_TIMEOUT, "chromedriver listens")
    profile = tempfile.mkdtemp(prefix="gh-chromium-", dir=h.tmpdir())
    caps = {"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:loggingPrefs": {"browser": "ALL"},
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                     "--disable-extensions", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--user-data-dir=" + profile, "--window-size=%d,%d" % (width, height)],
        }}}}
    try:
        v = _request("POST", "http://127.0.0.1:%d/session" % port, caps, START_TIMEOUT)
    except (WebDriverError, OSError) as e:
        raise h.Fail("cannot start a Chromium session: %s\n%s" % (e, driver.tail()))
    b = Browser(driver, port, v["sessionId"], profile)
    # Registered after harness's own cleanup, so it runs before the
    # driver is stopped.
    atexit.register(b.quit)
    return b
