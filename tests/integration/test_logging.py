#!/usr/bin/env python3
"""test_logging: logging that never blocks a worker (issue 13, part 3).

A log pipe nobody reads costs dropped lines (counted in /metrics), never a
stalled request; log.file and log.access_file get their lines and are
reopened on SIGUSR1 after a rename (logrotate); a reload applies a new
access_file and refuses a log.file whose directory does not exist, as
`gatehouse validate` does; the combined access log is Apache's combined
format to the byte, with request bytes escaped so that no header can
forge a field or a line."""

import json
import os
import re
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

_s = {}

# Apache's combined format, %h %l %u %t "%r" %>s %b "%{Referer}i"
# "%{User-agent}i": quoted fields hold no bare quote, no backslash but an
# escape, and nothing outside printable ASCII.
QUOTED = r'"((?:[\x20-\x21\x23-\x5b\x5d-\x7e]|\\["\\bnrtv]|\\x[0-9a-f]{2})*)"'
COMBINED = re.compile(r'(\S+) (\S+) (\S+) \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} '
                      r'[+-]\d{4})\] ' + QUOTED + r' (\d{3}) (\d+|-) ' + QUOTED + ' ' + QUOTED)


def echo():
    if "echo" not in _s:
        _s["echo"] = h.start_echo()
    return _s["echo"]


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("latin-1")
    except OSError:
        return ""


def metric(port, name, token="piped-admin-token"):
    c = h.Conn.plain(port)
    try:
        r = c.request("GET", "/metrics", "127.0.0.1:%d" % port,
                      headers=[("Authorization", "Bearer " + token)])
    finally:
        c.close()
    h.eq(r.status, 200, "GET /metrics")
    m = re.search(r"^%s (\d+)$" % re.escape(name), r.body.decode(), re.M)
    h.check(m is not None, "%s in /metrics" % name)
    return int(m.group(1))


def test_a_log_pipe_nobody_reads_does_not_stall_requests():
    """stderr is a pipe whose reader never reads: its 64 KiB fill after a
    few hundred access lines. Before the rings, the worker then blocked in
    write(2) for good; now every request completes and the lines that did
    not fit are counted as dropped."""
    g = h.PipedGatehouse("pipe", "pipe.log.test", echo())
    rc = "not stopped"
    try:
        t0 = time.monotonic()
        done = 0
        target = "/fill-the-log-" + "x" * 200
        for _ in range(10):  # 10 keep-alive connections of 300 requests
            c = h.Conn.tls(g.https_port, "pipe.log.test")
            try:
                for _ in range(300):
                    r = c.request("GET", target, "pipe.log.test")
                    h.eq(r.status, 200, "request %d" % done)
                    done += 1
            finally:
                c.close()
            h.check(time.monotonic() - t0 < 90, "3000 requests within 90s (%d done)" % done)
        h.eq(done, 3000, "requests answered")
        # ~300 bytes a line: far more than the pipe holds.
        dropped = metric(g.admin_port, "gatehouse_log_dropped_total")
        h.check(dropped > 0, "gatehouse_log_dropped_total > 0 (got %d)" % dropped)
        h.check(g.p.poll() is None, "gatehouse still running")
    finally:
        rc = g.stop(timeout=15)  # the drain at exit is bounded
    h.eq(rc, 0, "gatehouse's exit status after TERM, its log pipe still full")


def test_b_log_files_and_sigusr1_reopen():
    where = h.gatehouse_dir()
    cwd = where[1]
    os.makedirs(os.path.join(cwd, "logs"))
    https_port, http_port = h.free_port(), h.free_port()
    conf = h.make_config([h.site(["files.log.test"], [echo()])], https_port, http_port,
                         storage=os.path.join(cwd, "storage"),
                         log={"level": "info", "access": "json", "file": "gatehouse.log",
                              "access_file": "logs/access.log"})
    g = h.run_config(conf, https_port, http_port, where)
    _s["files"] = g
    own, acc = os.path.join(cwd, "gatehouse.log"), os.path.join(cwd, "logs", "access.log")
    h.wait_until(lambda: "ready" in read(own), 10, "the ready line in log.file")
    h.eq(g.get("files.log.test", "/before-rotation").status, 200, "request")
    h.wait_until(lambda: "/before-rotation" in read(acc), 10, "the access line in access_file")
    h.check("/before-rotation" not in read(own), "access lines stay out of log.file")
    h.check("ready" not in read(acc), "gatehouse's own lines stay out of access_file")
    h.check("ready" not in g.log(), "stderr does not get what log.file does")
    h.eq(os.stat(acc).st_mode & 0o777, 0o640 & ~_umask(), "access_file mode")

    # logrotate: move, then signal; the old files keep what was written.
    os.rename(own, own + ".1")
    os.rename(acc, acc + ".1")
    g.signal(signal.SIGUSR1)
    h.wait_until(lambda: os.path.exists(own) and os.path.exists(acc), 10,
                 "the writer to create new log files")
    h.eq(g.get("files.log.test", "/after-rotation").status, 200, "request")
    h.wait_until(lambda: "/after-rotation" in read(acc), 10, "the access line in the new file")
    h.check("/after-rotation" not in read(acc + ".1"), "nothing more in the moved file")
    h.check("/before-rotation" in read(acc + ".1"), "the moved file keeps its lines")
    h.check(g.alive(), "gatehouse survives SIGUSR1")


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_c_combined_is_apaches_combined_format():
    g = _s["files"]
    cwd = os.path.dirname(g.config_path)
    conf = json.loads(json.dumps(g.config))
    conf["log"]["access"] = "combined"
    conf["log"]["access_file"] = "logs/combined.log"
    g.write_config(conf)
    own = os.path.join(cwd, "gatehouse.log")
    mark = len(read(own))
    g.reload()
    h.wait_until(lambda: "configuration reloaded" in read(own)[mark:], 10, "the reload")
    log = os.path.join(cwd, "logs", "combined.log")
    host = "files.log.test"

    # Workers adopt a reload asynchronously: probe until the new format
    # and file are in use, then look only at what follows.
    def probed():
        h.eq(g.get(host, "/probe").status, 200, "probe")
        return '"GET /probe HTTP/1.1"' in read(log)
    h.wait_until(probed, 10, "the combined log in the new access_file", interval=0.1)
    start = len(read(log))

    c = g.connect(host)
    try:
        r = c.request("GET", '/page?q="quoted"', host,
                      headers=[("Referer", "http://ref.test/from?a=1"),
                               ("User-Agent", 'agent "quoted" \\back')])
        h.eq(r.status, 200, "request with Referer and User-Agent")
        r = c.request("GET", "/status/304", host)
        h.eq(r.status, 304, "a 304 has no body")
        r = c.request("GET", "/status/204", host, headers=[("User-Agent", "")])
        h.eq(r.status, 204, "a 204 has no body")
    finally:
        c.close()
    want = [
        ('GET /page?q=\\"quoted\\" HTTP/1.1', "200", None, "http://ref.test/from?a=1",
         'agent \\"quoted\\" \\\\back'),
        ("GET /status/304 HTTP/1.1", "304", "-", "-", "-"),
        ("GET /status/204 HTTP/1.1", "204", "-", "-", ""),
    ]
    # Lines leave the writer in batches: a probe's line may still come
    # after |start|.
    def ours():
        return [ln for ln in read(log)[start:].splitlines() if '"GET /probe ' not in ln]
    lines = h.wait_until(lambda: len(ours()) >= 3 and ours(), 10, "three combined lines")
    for line, (req, status, size, ref, ua) in zip(lines, want):
        m = COMBINED.fullmatch(line)
        h.check(m is not None, "a combined line: %r" % line)
        h.eq(m.group(1), "127.0.0.1", "%h")
        h.eq((m.group(2), m.group(3)), ("-", "-"), "%l %u")
        time.strptime(m.group(4), "%d/%b/%Y:%H:%M:%S %z")
        h.eq(m.group(5), req, "%r")
        h.eq(m.group(6), status, "%>s")
        if size is None:
            h.check(int(m.group(7)) > 0, "%b of a body")
        else:
            h.eq(m.group(7), size, "%b of no body")
        h.eq(m.group(8), ref, "Referer")
        h.eq(m.group(9), ua, "User-Agent")

    # HTTP/2: the request line says HTTP/2.0.
    r = subprocess.run(["curl", "-q", "-sS", "--http2", "--noproxy", "*", "-o", "/dev/null",
                        "-A", "h2-agent", "--resolve", "%s:%d:127.0.0.1" % (host, g.https_port),
                        "--cacert", h.ca().cert, "https://%s:%d/over-h2" % (host, g.https_port)],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    h.eq(r.returncode, 0, "curl --http2 (%s)" % r.stderr)
    line = h.wait_until(lambda: [l for l in read(log).splitlines() if "/over-h2" in l], 10,
                        "the HTTP/2 line")[0]
    m = COMBINED.fullmatch(line)
    h.check(m is not None, "a combined line: %r" % line)
    h.eq(m.group(5), "GET /over-h2 HTTP/2.0", "%r over HTTP/2")
    h.eq(m.group(9), "h2-agent", "User-Agent over HTTP/2")
    # json's extra fields stay out of combined.
    h.check("files.log.test" not in read(log) and "ms " not in read(log), "no extra fields")


def test_c_hostile_header_bytes_are_escaped():
    """Log injection: quotes, backslashes, tabs and non-ASCII bytes in a
    header must not end a field or the line; control bytes (which the
    HTTP/1.1 parser refuses, after part of the head is stored) neither."""
    g = _s["files"]
    log = os.path.join(os.path.dirname(g.config_path), "logs", "combined.log")
    host = "files.log.test"
    cases = [
        # (Referer, User-Agent, status, the logged User-Agent or None)
        ("http://hostile-1.test/", 'x" 200 1 "-" "forged\t\\ \xe9\xff', 200,
         'x\\" 200 1 \\"-\\" \\"forged\\t\\\\ \\xe9\\xff'),
        ("http://hostile-2.test/", "a\x01b\x1b[31mc\x7f", 400, None),
        ("http://hostile-3.test/", "line\x0bbreak\x0cx", 400, None),
    ]
    for ref, ua, status, logged in cases:
        c = g.connect(host)
        try:
            r = c.request("GET", "/hostile", host, headers=[("Referer", ref), ("User-Agent", ua)])
        finally:
            c.close()
        h.eq(r.status, status, "status for User-Agent %r" % ua)
        lines = h.wait_until(lambda: [l for l in read(log).split("\n") if ref in l], 10,
                             "the line of %s" % ref)
        h.eq(len(lines), 1, "one line for %s" % ref)
        m = COMBINED.fullmatch(lines[0])
        h.check(m is not None, "still a combined line: %r" % lines[0])
        h.eq(m.group(8), ref, "the Referer")
        if logged is not None:
            h.eq(m.group(9), logged, "the User-Agent, escaped as Apache does")
    text = read(log)
    for b in list(range(0x20)) + [0x7f] + list(range(0x80, 0x100)):
        if b != 0x0a:
            h.check(chr(b) not in text, "no raw byte %#x in the access log" % b)


def test_d_bad_log_file_directory_refused():
    g = _s["files"]
    cwd = os.path.dirname(g.config_path)
    good = json.loads(json.dumps(g.config))
    bad = json.loads(json.dumps(good))
    bad["log"]["file"] = "no-such-dir/gatehouse.log"
    bad_path = os.path.join(cwd, "bad.json")
    with open(bad_path, "w") as f:
        json.dump(bad, f)
    r = h.gatehouse_cmd("validate", "-c", bad_path)
    h.eq(r.returncode, 2, "validate's exit status")
    out = r.stdout + r.stderr
    h.contains(out, "log.file: cannot write in the directory", "the error names log.file")
    h.contains(out, "no-such-dir", "and the directory")

    own = os.path.join(cwd, "gatehouse.log")
    mark = len(read(own))
    g.write_config(bad)
    g.reload()
    h.wait_until(lambda: re.search(r"reload refused.*\n.*log\.file: cannot write", read(own)[mark:]),
                 10, "the refusal, naming log.file, in log.file")
    h.eq(g.get("files.log.test", "/still-serving").status, 200, "still serving")
    h.wait_until(lambda: "/still-serving" in read(os.path.join(cwd, "logs", "combined.log")),
                 10, "the old access_file still in use")
    g.write_config(good)


if __name__ == "__main__":
    h.main()
