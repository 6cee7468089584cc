#!/usr/bin/env python3
"""A misbehaving HTTP/2 (h2c, prior knowledge) upstream for
test_upstream_h2_hostile.py, on Debian's python3-h2: the library keeps the
connection's state and flow control; the hostile frames are written raw
with h2raw.py's helpers (literal HPACK fields without indexing, which
leave both dynamic tables alone), so that nothing validates them on the
way out.

Usage: h2_hostile_peer.py MODE:PORT[:N] ...

One listener per argument, one thread per connection. MODE says what a
connection does; with N, only the first N connections of that listener
misbehave and later ones are well-behaved ("paths"):

  paths     answers by :path (see PATHS below)
  garbage   writes an HTTP/1.1 answer instead of the preface and SETTINGS
  goaway    answers the first request with GOAWAY(last_stream_id=0) and
            keeps the connection open
  push      answers the first request with a PUSH_PROMISE (we were told
            SETTINGS_ENABLE_PUSH=0)
  maxconc   SETTINGS_MAX_CONCURRENT_STREAMS=1; each answer takes 50 ms
  nowindow  never gives back flow-control window: a request body stalls

Prints "ready" once every port listens, then "conn MODE:PORT K" for the
K-th connection accepted on a listener (flushed)."""
import os
import socket
import struct
import sys
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from h2raw import block, frame  # noqa: E402

PATHS = """
  /ok              200, "ok PATH"
  /hdr/upper       a field name in upper case
  /hdr/connection  connection: close
  /hdr/nostatus    no :status
  /hdr/badstatus   :status abc
  /hdr/huge        about 80 KiB of fields (more than our 64 KiB limit)
  /rst/head        RST_STREAM INTERNAL_ERROR before any HEADERS
  /rst/body        content-length 100000, 10000 bytes, RST_STREAM
  /close/body      content-length 100000, 10000 bytes, the TCP connection closes
  /excess          content-length 10, then 100 bytes of DATA
  /big/N           N bytes of body, as flow control allows
  /upload          reads the request body, answers its length
  /trailers/pseudo 200, a body, trailers with :status in them
  /early-hints     103 with a link field, then 200 "final"
  /pair            held until a second /pair arrives on the connection; then
                   both get a head without :status in one write (prints
                   "pair SID" for each, and "reset SID" for each RST_STREAM)
"""

HEADERS, PUSH_PROMISE, CONTINUATION = 0x1, 0x5, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4
lock = threading.Lock()


def out(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def raw_headers(sid, fields, end_stream=False, max_frame=16384):
    """HEADERS (and CONTINUATION frames, for a long block) carrying
    |fields| as they are, unchecked."""
    blk = block(fields)
    chunks = [blk[i:i + max_frame] for i in range(0, len(blk), max_frame)] or [b""]
    frames = []
    for i, c in enumerate(chunks):
        flags = END_HEADERS if i == len(chunks) - 1 else 0
        if i == 0:
            frames.append(frame(HEADERS, flags | (END_STREAM if end_stream else 0), sid, c))
        else:
            frames.append(frame(CONTINUATION, flags, sid, c))
    return b"".join(frames)


class Conn:
    def __init__(self, sock, mode, bad):
        self.sock = sock
        self.mode = mode if bad else "paths"
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                        validate_outbound_headers=False,
                                        validate_inbound_headers=False)
        self.h2 = h2.connection.H2Connection(config=cfg)
        self.pending = {}   # stream id -> bytes still to send (with END_STREAM after)
        self.bodies = {}    # stream id -> request body bytes received
        self.paths = {}     # stream id -> :path
        self.later = []     # (when, stream id, path): answers delayed (maxconc)
        self.closed = False

    def send(self, data=None):
        if data is None:
            data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def run(self):
        if self.mode == "garbage":
            self.sock.recv(65536)
            self.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 7\r\n\r\ngarbage")
            time.sleep(2)
            return
        self.h2.initiate_connection()
        if self.mode == "maxconc":
            self.h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
        self.send()
        self.sock.settimeout(0.02)
        while not self.closed:
            try:
                data = self.sock.recv(65536)
                if not data:
                    return
            except socket.timeout:
                data = b""
            if data:
                for ev in self.h2.receive_data(data):
                    self.event(ev)
                    if self.closed:
                        return
            now = time.monotonic()
            for item in [x for x in self.later if x[0] <= now]:
                self.later.remove(item)
                self.answer(item[1], item[2])
            self.pump()
            self.send()

    def event(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            hd = dict(ev.headers)
            self.paths[ev.stream_id] = hd.get(":path", "")
            self.bodies[ev.stream_id] = b""
            if ev.stream_ended:
                self.request(ev.stream_id)
        elif isinstance(ev, h2.events.DataReceived):
            self.bodies[ev.stream_id] = self.bodies.get(ev.stream_id, b"") + ev.data
            if self.mode != "nowindow":
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if ev.stream_ended:
                self.request(ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            pass
        elif isinstance(ev, h2.events.StreamReset):
            self.pending.pop(ev.stream_id, None)
            out("reset %d" % ev.stream_id)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.closed = True

    def request(self, sid):
        path = self.paths.get(sid, "")
        if self.mode == "goaway":
            self.send()
            self.send(frame(0x7, 0, 0, struct.pack(">II", 0, 0)))
            self.mode = "goaway-sent"  # the rest of this connection: silence
            return
        if self.mode == "goaway-sent":
            return
        if self.mode == "push":
            self.send()
            promise = struct.pack(">I", 2) + block([(":method", "GET"), (":scheme", "http"),
                                                   (":authority", "x"), (":path", "/pushed")])
            self.send(frame(PUSH_PROMISE, END_HEADERS, sid, promise))
            return
        if self.mode == "maxconc":
            self.later.append((time.monotonic() + 0.05, sid, path))
            return
        self.answer(sid, path)

    def respond(self, sid, body, status="200", extra=()):
        self.h2.send_headers(sid, [(":status", status), ("content-length", str(len(body)))] +
                             list(extra))
        self.pending[sid] = body

    def answer(self, sid, path):
        self.send()  # what h2 queued (SETTINGS ACK, WINDOW_UPDATE) goes first
        if path == "/pair":
            out("pair %d" % sid)
            self.pair = getattr(self, "pair", []) + [sid]
            if len(self.pair) == 2:
                self.send(b"".join(raw_headers(i, [("content-type", "x")], end_stream=True)
                                   for i in self.pair))
                self.pair = []
        elif path.startswith("/hdr/"):
            what = path[5:]
            fields = {"upper": [(":status", "200"), ("X-Upper", "1")],
                      "connection": [(":status", "200"), ("connection", "close")],
                      "nostatus": [("content-type", "text/plain")],
                      "badstatus": [(":status", "abc")],
                      "huge": [(":status", "200")] + [("x-big-%d" % i, "v" * 8000) for i in range(10)],
                      }[what]
            self.send(raw_headers(sid, fields, end_stream=True))
        elif path == "/rst/head":
            self.h2.reset_stream(sid, 2)
        elif path in ("/rst/body", "/close/body"):
            self.h2.send_headers(sid, [(":status", "200"), ("content-length", "100000")])
            self.h2.send_data(sid, b"x" * 10000)
            self.send()
            time.sleep(0.2)  # the head and the first bytes are out before the end
            if path == "/rst/body":
                self.h2.reset_stream(sid, 2)
            else:
                self.sock.close()
                self.closed = True
        elif path == "/excess":
            self.h2.send_headers(sid, [(":status", "200"), ("content-length", "10")])
            self.send()
            self.send(frame(0x0, END_STREAM, sid, b"y" * 100))
        elif path.startswith("/big/"):
            self.respond(sid, b"z" * int(path[5:]))
        elif path == "/upload":
            self.respond(sid, b"got %d" % len(self.bodies.get(sid, b"")))
        elif path == "/trailers/pseudo":
            self.h2.send_headers(sid, [(":status", "200")])
            self.h2.send_data(sid, b"body before bad trailers")
            self.send()
            self.send(raw_headers(sid, [(":status", "200"), ("x-t", "1")], end_stream=True))
        elif path == "/early-hints":
            self.send(raw_headers(sid, [(":status", "103"), ("link", "</style.css>; rel=preload")]))
            self.respond(sid, b"final")
        else:
            self.respond(sid, ("ok %s" % path).encode())

    def pump(self):
        """Sends what each pending body's window allows."""
        for sid in list(self.pending):
            body = self.pending[sid]
            try:
                while body:
                    n = min(len(body), self.h2.local_flow_control_window(sid),
                            self.h2.max_outbound_frame_size)
                    if n <= 0:
                        break
                    self.h2.send_data(sid, body[:n])
                    body = body[n:]
                if body:
                    self.pending[sid] = body
                else:
                    self.h2.end_stream(sid)
                    del self.pending[sid]
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.pending.pop(sid, None)


def serve_conn(sock, mode, bad):
    try:
        Conn(sock, mode, bad).run()
    except (OSError, h2.exceptions.ProtocolError):
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass


def listen(spec):
    parts = spec.split(":")
    mode, port = parts[0], int(parts[1])
    limit = int(parts[2]) if len(parts) > 2 else None
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(64)

    def loop():
        k = 0
        while True:
            s, _ = ls.accept()
            k += 1
            out("conn %s:%d %d" % (mode, port, k))
            bad = limit is None or k <= limit
            threading.Thread(target=serve_conn, args=(s, mode, bad), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()


def main():
    for spec in sys.argv[1:]:
        listen(spec)
    out("ready")
    threading.Event().wait()


if __name__ == "__main__":
    main()
