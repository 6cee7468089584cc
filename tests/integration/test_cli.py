#!/usr/bin/env python3
"""test_cli: the gatehouse command line (version, help, validate, quick-mode
--print-config, unknown commands). No server is started."""

import glob
import json
import os
import re
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

EXAMPLES = os.path.join(h.SOURCE_DIR, "conf", "examples")


def write(name, text):
    path = os.path.join(h.subdir("files"), name)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_version():
    r = h.gatehouse_cmd("version")
    h.eq(r.returncode, 0, "exit status of `gatehouse version`")
    h.check(re.match(r"^gatehouse \d+\.\d+\.\d+\s*$", r.stdout),
            "version output %r is not 'gatehouse X.Y.Z'" % r.stdout)


def test_help():
    r = h.gatehouse_cmd("help")
    h.eq(r.returncode, 0, "exit status of `gatehouse help`")
    for word in ("usage", "run", "validate", "proxy", "version"):
        h.contains(r.stdout, word, "help text")


def test_no_command_exits_2():
    r = h.gatehouse_cmd()
    h.eq(r.returncode, 2, "exit status of bare `gatehouse`")
    h.contains(r.stderr.lower(), "usage", "stderr of bare `gatehouse`")


def test_unknown_command_exits_2():
    r = h.gatehouse_cmd("frobnicate")
    h.eq(r.returncode, 2, "exit status of `gatehouse frobnicate`")
    h.contains(r.stderr, "frobnicate", "stderr names the unknown command")
    h.eq(r.stdout, "", "stdout of an unknown command")


def test_validate_examples():
    # README: conf/examples/ holds these files, and the tests validate them.
    for want in ("minimal.json", "static.json", "on-demand.json", "full.json"):
        h.check(os.path.exists(os.path.join(EXAMPLES, want)),
                "conf/examples/%s is missing (README lists it)" % want)
    files = sorted(glob.glob(os.path.join(EXAMPLES, "*.json")))
    for path in files:
        # Run from the source tree, as a user following the README would.
        r = h.gatehouse_cmd("validate", "-c", path, cwd=h.SOURCE_DIR)
        h.check(r.returncode == 0, "validate %s: exit %d, stderr:\n%s" % (
            os.path.basename(path), r.returncode, r.stderr))
        h.eq(r.stdout.strip(), "OK", "validate %s stdout" % os.path.basename(path))


def test_validate_print_round_trips():
    # `validate --print` prints the effective config; feeding it back must
    # validate and print the same document again.
    path = os.path.join(EXAMPLES, "full.json")
    r1 = h.gatehouse_cmd("validate", "-c", path, "--print", cwd=h.SOURCE_DIR)
    h.check(r1.returncode == 0, "validate --print full.json: exit %d: %s" % (r1.returncode, r1.stderr))
    doc1 = json.loads(r1.stdout)
    again = write("printed.json", r1.stdout)
    r2 = h.gatehouse_cmd("validate", "-c", again, "--print", cwd=h.SOURCE_DIR)
    h.check(r2.returncode == 0, "validate of the printed config: exit %d: %s" % (r2.returncode, r2.stderr))
    h.eq(json.loads(r2.stdout), doc1, "effective config after a round trip")
    # Defaults are filled in.
    h.check("timeouts" in doc1 and "limits" in doc1, "printed config lacks timeouts/limits: %r"
            % sorted(doc1))


def test_validate_bad_file_names_every_error():
    path = write("bad.json", json.dumps({
        "listen": {"https": ["127.0.0.1:8443"], "http": ["127.0.0.1:8080"]},
        "sites": [{"hosts": ["a.test"], "upstreams": ["127.0.0.1:9000", "localhost"]}],
        "timeouts": {"idle": "soon"},
        "tiemouts": {},
    }, indent=2))
    r = h.gatehouse_cmd("validate", "-c", path)
    h.eq(r.returncode, 2, "exit status of validate on a bad file")
    h.not_contains(r.stdout, "OK", "stdout of a failed validate")
    err = r.stderr
    lines = [ln for ln in err.splitlines() if ln.strip()]
    h.check(len(lines) >= 3, "expected one line per error (3), got:\n%s" % err)
    for ln in lines:
        h.contains(ln, "bad.json", "every error line names the file")
    h.contains(err, "sites[0].upstreams[1]", "error names the JSON path of the bad upstream")
    h.contains(err, "localhost", "error quotes the bad upstream value")
    h.contains(err, "timeouts.idle", "error names the bad duration's path")
    h.contains(err, "soon", "error quotes the bad duration")
    h.contains(err, "tiemouts", "error names the unknown key")
    h.check(re.search(r"tiemouts.*timeouts|timeouts.*tiemouts", err),
            "unknown key error does not suggest the closest key 'timeouts':\n%s" % err)


def test_validate_syntax_error_has_line_and_column():
    path = write("syntax.json", '{\n  "workers": 2,\n  "sites": [\n    {"hosts": ["a.test"],,}\n  ]\n}\n')
    r = h.gatehouse_cmd("validate", "-c", path)
    h.eq(r.returncode, 2, "exit status of validate on a JSON syntax error")
    h.check(re.search(r"syntax\.json:4:\d+", r.stderr),
            "syntax error does not say syntax.json:LINE:COL with line 4:\n%s" % r.stderr)


def test_validate_missing_file_exits_2():
    r = h.gatehouse_cmd("validate", "-c", os.path.join(h.tmpdir(), "does-not-exist.json"))
    h.eq(r.returncode, 2, "exit status of validate on a missing file")
    h.contains(r.stderr, "does-not-exist.json", "error names the missing file")


def test_run_bad_config_exits_2_without_serving():
    path = write("run-bad.json", '{"sites": "nope"}')
    r = h.gatehouse_cmd("run", "-c", path, timeout=20)
    h.eq(r.returncode, 2, "exit status of run with a bad config")
    h.contains(r.stderr, "run-bad.json", "run names the bad file")


def test_proxy_print_config_validates():
    crt, key = h.ca().leaf(["quick.test"])
    p1, p2 = h.free_port(), h.free_port()
    r = h.gatehouse_cmd("proxy", "--to", "127.0.0.1:9", "--to", "127.0.0.1:10",
                        "--from", "quick.test", "--https", "127.0.0.1:%d" % p1,
                        "--http", "127.0.0.1:%d" % p2, "--cert", crt, "--key", key,
                        "--workers", "2", "--no-resumption", "--print-config")
    h.check(r.returncode == 0, "proxy --print-config: exit %d: %s" % (r.returncode, r.stderr))
    doc = json.loads(r.stdout)
    text = json.dumps(doc)
    for want in ("127.0.0.1:9", "127.0.0.1:10", "quick.test", "127.0.0.1:%d" % p1,
                 "127.0.0.1:%d" % p2, crt, key):
        h.contains(text, want, "printed quick-mode config")
    h.eq(doc.get("tls", {}).get("resumption"), False, "tls.resumption with --no-resumption")
    h.eq(doc.get("workers"), 2, "workers with --workers 2")
    path = write("quick.json", r.stdout)
    v = h.gatehouse_cmd("validate", "-c", path)
    h.check(v.returncode == 0, "validate of the printed quick config: exit %d: %s" % (
        v.returncode, v.stderr))
    h.eq(v.stdout.strip(), "OK", "validate stdout")
    # Nothing may have been started: the ports are still free.
    h.check(not h.port_accepts(p1) and not h.port_accepts(p2),
            "--print-config started listening")


def test_proxy_bad_flag_exits_2():
    r = h.gatehouse_cmd("proxy", "--to", "127.0.0.1:9", "--bogus-flag")
    h.eq(r.returncode, 2, "exit status of proxy with an unknown flag")
    h.contains(r.stderr, "--bogus-flag", "error names the bad flag")
    r = h.gatehouse_cmd("proxy", "--https", "127.0.0.1:1", "--print-config")
    h.eq(r.returncode, 2, "exit status of proxy without --to")


def test_storage_is_relative_to_the_config_file():
    """"storage": "data" is beside the config file, whoever's working
    directory the command runs in (issue 13): validate --print shows it
    resolved, and `cert list` opens (and so creates) it there. Quick mode,
    without a file, resolves against the working directory."""
    confdir, elsewhere = h.subdir("storage-conf"), h.subdir("storage-cwd")
    crt, key = h.ca().leaf(["s.test"])
    path = os.path.join(confdir, "gatehouse.json")
    with open(path, "w") as f:
        json.dump({"sites": [{"hosts": ["s.test"], "upstreams": ["127.0.0.1:9"],
                              "tls": {"cert": crt, "key": key}}],
                   "acme": {"directory": "https://127.0.0.1:9/dir"},
                   "storage": "./data"}, f)
    r = h.gatehouse_cmd("validate", "-c", path, "--print", cwd=elsewhere)
    h.eq(r.returncode, 0, "validate: %s" % r.stderr)
    h.eq(json.loads(r.stdout)["storage"], os.path.join(confdir, "data"), "the printed storage")
    r = h.gatehouse_cmd("cert", "list", "-c", os.path.relpath(path, elsewhere), cwd=elsewhere)
    h.eq(r.returncode, 0, "cert list: %s" % r.stderr)
    h.check(os.path.isdir(os.path.join(confdir, "data")), "storage made beside the file")
    h.check(not os.path.exists(os.path.join(elsewhere, "data")), "nothing in the working directory")
    r = h.gatehouse_cmd("proxy", "--to", "127.0.0.1:9", "--from", "s.test", "--cert", crt,
                        "--key", key, "--storage", "quick-data", "--print-config", cwd=elsewhere)
    h.eq(r.returncode, 0, "quick mode: %s" % r.stderr)
    h.eq(json.loads(r.stdout)["storage"], os.path.join(elsewhere, "quick-data"),
         "quick mode's storage")


def test_help_names_the_new_commands_signals_and_reference():
    r = h.gatehouse_cmd("help")
    for part in ("reload [SERVER]", "cert renew NAME", "unix:PATH", "SIGHUP", "SIGTERM",
                 "SIGINT", "SIGUSR1", 'section "Configuration"'):
        h.contains(r.stdout, part, "help text")
    with open(os.path.join(h.SOURCE_DIR, "README.md")) as f:
        h.contains(f.read(), "\n## Configuration\n", "the section help points at")


if __name__ == "__main__":
    h.main()
