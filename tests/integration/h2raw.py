"""h2raw.py: a raw HTTP/2 client for the integration tests (not a test file).

The tests that use it (test_h2_hostile.py, test_h2_conformance.py) must put
exact, often invalid, frames on the wire, which an HTTP/2 library refuses
to send. So frames are built by hand here (9-byte header + payload) and
header blocks are HPACK literals without indexing, written byte by byte:
the client keeps no HPACK dynamic table, and a test can put any byte
(upper case, CR, LF, NUL) in a name or a value. What the server sends is
parsed frame by frame and its header blocks decoded with the hpack module
(Debian's python3-hpack), so a test can look at every frame it got.

Connections are TLS with ALPN "h2" to 127.0.0.1 (harness.tls_connect);
every read has a deadline.
"""

import os
import socket
import ssl
import struct
import time

import harness as h

try:
    import hpack
except ImportError:  # pragma: no cover - the tests say which python to use
    raise SystemExit("h2raw needs the hpack module: run the tests with /usr/bin/python3 "
                     "(Debian's python3-hpack)")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
TYPE_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
              "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"]

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes (RFC 9113 7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, \
    STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, \
    CONNECT_ERROR, ENHANCE_YOUR_CALM, INADEQUATE_SECURITY, HTTP_1_1_REQUIRED = range(14)
ERROR_NAMES = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
               "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM",
               "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
               "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"]

# Receive windows are given back in steps of this much (under 65535).
WINDOW_STEP = 16384

# SETTINGS parameters (RFC 9113 6.5.2).
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, \
    MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = range(1, 7)


def err_name(code):
    if code is None:
        return "none"
    return ERROR_NAMES[code] if 0 <= code < len(ERROR_NAMES) else "0x%x" % code


def type_name(t):
    return TYPE_NAMES[t] if 0 <= t < len(TYPE_NAMES) else "type 0x%x" % t


# --- building frames ------------------------------------------------------------

def frame(ftype, flags, sid, payload=b"", length=None):
    """One frame; |length| overrides the length field (for lying frames)."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def settings(params=(), ack=False):
    """A SETTINGS frame of (id, value) pairs."""
    body = b"".join(struct.pack(">HI", k, v) for k, v in params)
    return frame(SETTINGS, ACK if ack else 0, 0, body)


def ping(data=b"12345678", ack=False, sid=0):
    return frame(PING, ACK if ack else 0, sid, data)


def rst(sid, code=CANCEL):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def window_update(sid, inc):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", inc))


def priority(sid, dep=0, weight=16, exclusive=False):
    return frame(PRIORITY, 0, sid, struct.pack(">IB", dep | (0x80000000 if exclusive else 0),
                                               weight))


def goaway(last_sid=0, code=NO_ERROR, sid=0):
    return frame(GOAWAY, 0, sid, struct.pack(">II", last_sid, code))


def data(sid, payload=b"", end=False, flags=0):
    return frame(DATA, flags | (END_STREAM if end else 0), sid, payload)


# --- HPACK, by hand --------------------------------------------------------------

def hp_int(value, prefix_bits, first=0):
    """RFC 7541 5.1: |value| with an N-bit prefix; |first| holds the
    representation's leading bits."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([first | value])
    out = [first | top]
    value -= top
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _b(s):
    return s if isinstance(s, bytes) else s.encode("latin-1")


def hp_str(s):
    """A string literal, not Huffman-coded (RFC 7541 5.2)."""
    s = _b(s)
    return hp_int(len(s), 7) + s


def hp_literal(name, value):
    """Literal Header Field without Indexing, new name (RFC 7541 6.2.2):
    it leaves both dynamic tables alone."""
    return b"\x00" + hp_str(name) + hp_str(value)


def block(fields):
    """A header block of literals for [(name, value)] (str or bytes)."""
    return b"".join(hp_literal(n, v) for n, v in fields)


def req_fields(authority, path="/", method="GET", extra=(), scheme="https"):
    return [(":method", method), (":scheme", scheme), (":authority", authority),
            (":path", path)] + list(extra)


# --- the connection -----------------------------------------------------------------

# Every connection made, for tracing (GH_H2_TRACE=1 in the test files).
opened = []
TRACE = os.environ.get("GH_H2_TRACE") == "1"


class Stream:
    def __init__(self, sid):
        self.sid = sid
        self.headers = None   # the final response head: [(name, value)] (str)
        self.interim = []     # 1xx heads
        self.trailers = None
        self.data = bytearray()
        self.data_frames = 0
        self.ended = False    # END_STREAM received
        self.rst = None       # RST_STREAM error code received
        self.rst_count = 0
        self.unacked = 0      # DATA bytes not yet given back

    @property
    def status(self):
        if self.headers is None:
            return None
        for k, v in self.headers:
            if k == ":status":
                return int(v)
        return None

    def header(self, name):
        for k, v in self.headers or ():
            if k == name:
                return v
        return None

    @property
    def done(self):
        return self.ended or self.rst is not None

    def __repr__(self):
        return "<stream %d status=%s data=%d ended=%s rst=%s>" % (
            self.sid, self.status, len(self.data), self.ended, err_name(self.rst))


class H2:
    """A client connection speaking raw frames.

    preface: send the preface and |client_settings| at once.
    auto_ack: answer the server's SETTINGS with an ACK.
    auto_window: give back every DATA byte received (WINDOW_UPDATE on the
        stream and the connection), so responses of any size arrive.
    """

    def __init__(self, port, sni, preface=True, client_settings=(), auto_ack=True,
                 auto_window=True, timeout=h.IO_TIMEOUT):
        ctx = h.client_context(alpn=["h2"])
        self.sock = h.tls_connect(port, sni, ctx=ctx, timeout=timeout)
        h.eq(self.sock.selected_alpn_protocol(), "h2", "ALPN protocol for an h2-only offer")
        self.io = h.Conn(self.sock)  # reads into self.io.buf
        self.frames = []          # every frame received: (type, flags, sid, payload)
        self.streams = {}
        self.dec = hpack.Decoder()
        self.dec.max_header_list_size = 1 << 24
        self.block_sid = None     # a header block in progress from the server
        self.block_frag = b""
        self.block_type = None
        self.server_settings = {}
        self.settings_acks = 0
        self.pings = []           # payloads of PING ACKs received
        self.goaway = None        # (last stream id, error code, debug data)
        self.closed = False
        self.auto_ack = auto_ack
        self.auto_window = auto_window
        self.next_sid = 1
        self.sent_bytes = 0
        self.unacked = 0          # DATA bytes not yet given back (connection)
        if preface:
            self.send(PREFACE + settings(client_settings))
        opened.append(self)

    # sending

    def send(self, b):
        """Sends |b|; False if the connection is gone (a test about a
        refusal must not fail merely because the server closed first)."""
        try:
            self.sock.sendall(b)
            self.sent_bytes += len(b)
            return True
        except (OSError, ssl.SSLError):
            return False

    def new_sid(self):
        sid = self.next_sid
        self.next_sid += 2
        return sid

    def headers(self, fields, sid=None, end_stream=True, end_headers=True, raw=None, flags=0,
                send=True):
        """HEADERS on |sid| (default: the next odd id) with |fields| (or the
        block |raw|); returns the stream id (or the frame when not |send|)."""
        if sid is None:
            sid = self.new_sid()
        elif sid >= self.next_sid and sid % 2 == 1:
            self.next_sid = sid + 2
        f = flags | (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        fr = frame(HEADERS, f, sid, block(fields) if raw is None else raw)
        self.streams.setdefault(sid, Stream(sid))
        if not send:
            return fr
        self.send(fr)
        return sid

    def get(self, authority, path="/", extra=(), method="GET", end_stream=True):
        return self.headers(req_fields(authority, path, method, extra), end_stream=end_stream)

    # receiving

    @property
    def buf(self):
        """Received, not yet parsed into frames."""
        return self.io.buf

    def _fill(self, deadline):
        """Reads more into self.buf; False at the close, socket.timeout at
        the deadline (harness.Conn does the reading)."""
        if self.closed:
            return False
        try:
            self.io._fill(deadline)
        except socket.timeout:
            raise
        except (h.Closed, OSError, ssl.SSLError):  # a reset or a broken record: gone
            self.closed = True
            return False
        return True

    def _parse(self):
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[0:3], "big")
            if len(self.buf) < 9 + n:
                return
            ftype, flags = self.buf[3], self.buf[4]
            sid = int.from_bytes(self.buf[5:9], "big") & 0x7fffffff
            payload = bytes(self.buf[9:9 + n])
            del self.buf[:9 + n]
            self.frames.append((ftype, flags, sid, payload))
            self._on_frame(ftype, flags, sid, payload)

    def _stream(self, sid):
        return self.streams.setdefault(sid, Stream(sid))

    def _on_frame(self, ftype, flags, sid, payload):
        if ftype == SETTINGS:
            if flags & ACK:
                self.settings_acks += 1
            else:
                for i in range(0, len(payload) - 5, 6):
                    k, v = struct.unpack(">HI", payload[i:i + 6])
                    self.server_settings[k] = v
                if self.auto_ack:
                    self.send(settings(ack=True))
        elif ftype == PING:
            if flags & ACK:
                self.pings.append(payload)
            else:
                self.send(ping(payload, ack=True))
        elif ftype == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaway = (last & 0x7fffffff, code, payload[8:])
        elif ftype == RST_STREAM:
            s = self._stream(sid)
            s.rst = struct.unpack(">I", payload[:4])[0]
            s.rst_count += 1
        elif ftype == DATA:
            s = self._stream(sid)
            body = payload
            if flags & PADDED:
                body = payload[1:len(payload) - payload[0]]
            s.data += body
            s.data_frames += 1
            if flags & END_STREAM:
                s.ended = True
            if self.auto_window and payload:
                self._give_back(s, len(payload))
        elif ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS:
                frag = payload
                if flags & PADDED:
                    frag = frag[1:len(frag) - frag[0]]
                if flags & PRIORITY_FLAG:
                    frag = frag[5:]
                self.block_sid, self.block_frag, self.block_flags = sid, frag, flags
            else:
                self.block_frag += payload
            if flags & END_HEADERS:
                fields = [(_s(k), _s(v)) for k, v in self.dec.decode(self.block_frag, raw=True)]
                s = self._stream(self.block_sid)
                status = [v for k, v in fields if k == ":status"]
                if status and status[0].startswith("1"):
                    s.interim.append(fields)
                elif s.headers is None:
                    s.headers = fields
                else:
                    s.trailers = fields
                if self.block_flags & END_STREAM:
                    s.ended = True
                self.block_sid = None

    def _give_back(self, s, n):
        # WINDOW_UPDATEs in steps of at least 16 KiB: the proxy counts tiny
        # ones as a flood.
        self.unacked += n
        s.unacked += n
        out = b""
        if self.unacked >= WINDOW_STEP:
            out += window_update(0, self.unacked)
            self.unacked = 0
        if s.unacked >= WINDOW_STEP and not s.done:
            out += window_update(s.sid, s.unacked)
            s.unacked = 0
        if out:
            self.send(out)

    def pump(self, timeout):
        """Reads what arrives within |timeout| seconds (at least one read);
        False once the connection is closed."""
        deadline = time.monotonic() + timeout
        try:
            ok = self._fill(deadline)
        except socket.timeout:
            return True
        self._parse()
        return ok

    def wait(self, pred, timeout=h.IO_TIMEOUT, what="a frame"):
        """Reads until pred() is true; fails at the deadline, or when the
        connection closes first (with what was received)."""
        deadline = time.monotonic() + timeout
        while not pred():
            if self.closed:
                raise h.Fail("connection closed while waiting for %s; %s" % (what, self.summary()))
            try:
                self._fill(deadline)
            except socket.timeout:
                raise h.Fail("no %s within %.1fs; %s" % (what, timeout, self.summary()))
            self._parse()
        return True

    def wait_closed(self, timeout):
        """Reads (and keeps) everything until the server closes; returns
        the seconds it took, or None if still open after |timeout|."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while not self.closed:
            try:
                self._fill(deadline)
            except socket.timeout:
                return None
            except OSError:
                self.closed = True
            self._parse()
        return time.monotonic() - t0

    def handshake(self, timeout=h.IO_TIMEOUT):
        """Waits for the server's SETTINGS and its ACK of ours."""
        self.wait(lambda: self.settings_acks >= 1 and self.server_settings is not None and
                  any(f[0] == SETTINGS and not f[1] & ACK for f in self.frames),
                  timeout, "the server's SETTINGS and SETTINGS ACK")
        return self

    def response(self, sid, timeout=h.IO_TIMEOUT):
        """Waits for stream |sid| to end (END_STREAM or RST_STREAM)."""
        s = self._stream(sid)
        self.wait(lambda: s.done, timeout, "the end of stream %d" % sid)
        return s

    def ping_roundtrip(self, timeout=h.IO_TIMEOUT):
        """A PING answered: everything sent before it was processed."""
        token = struct.pack(">d", time.monotonic())
        n = len(self.pings)
        self.send(ping(token))
        self.wait(lambda: token in self.pings[n:], timeout, "the PING ACK")

    def summary(self):
        kinds = {}
        for f in self.frames:
            kinds[type_name(f[0])] = kinds.get(type_name(f[0]), 0) + 1
        ga = ("GOAWAY(last=%d, %s, %r)" % (self.goaway[0], err_name(self.goaway[1]),
                                             self.goaway[2][:80])) if self.goaway else "no GOAWAY"
        ss = [repr(s) for s in self.streams.values() if s.headers or s.rst is not None or s.data]
        return "received %s; %s; %s; streams: %s" % (
            kinds, ga, "closed" if self.closed else "open", ", ".join(ss) or "none")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _s(b):
    return b.decode("latin-1") if isinstance(b, bytes) else b


# --- expectations -------------------------------------------------------------------

def expect_stream_error(c, sid, codes, what, timeout=h.IO_TIMEOUT, or_connection=False):
    """Stream |sid| is reset with one of |codes| and the connection stays up
    (no GOAWAY). |or_connection| also takes a connection error of one of
    |codes| (GOAWAY, then the close): RFC 9113 5.4.1 lets an endpoint treat
    a stream error as a connection error, and h2spec takes either. Returns
    the stream."""
    codes = codes if isinstance(codes, (tuple, list)) else (codes,)
    names = "/".join(err_name(x) for x in codes)
    s = c._stream(sid)
    ended = s.ended  # a stream that had ended already must get RST_STREAM
    try:
        c.wait(lambda: s.rst is not None or s.ended > ended or c.goaway is not None, timeout,
               "RST_STREAM on stream %d" % sid)
    except h.Fail as e:
        raise h.Fail("%s: %s" % (what, e))
    if c.goaway is not None and s.rst is None:
        if or_connection and c.goaway[1] in codes:
            h.check(c.wait_closed(timeout) is not None, "%s: GOAWAY %s but the connection still"
                    " open after %.0fs" % (what, err_name(c.goaway[1]), timeout))
            return s
        raise h.Fail("%s: expected a stream error (RST_STREAM %s on stream %d), got a connection"
                     " error: %s" % (what, names, sid, c.summary()))
    h.check(s.rst in codes, "%s: expected RST_STREAM %s on stream %d; %s" % (
        what, names, sid, c.summary()))
    return s


def expect_connection_error(c, codes, what, timeout=h.IO_TIMEOUT):
    """A GOAWAY with one of |codes|, then the close (RFC 9113 5.4.1)."""
    codes = codes if isinstance(codes, (tuple, list)) else (codes,)
    dt = c.wait_closed(timeout)
    h.check(c.goaway is not None, "%s: expected GOAWAY %s, got none (%s)" % (
        what, "/".join(err_name(x) for x in codes),
        "still open after %.0fs" % timeout if dt is None else "then closed") + "; " + c.summary())
    h.check(c.goaway[1] in codes, "%s: expected GOAWAY %s; %s" % (
        what, "/".join(err_name(x) for x in codes), c.summary()))
    h.check(dt is not None, "%s: GOAWAY %s sent but the connection still open after %.0fs" % (
        what, err_name(c.goaway[1]), timeout))
    return c.goaway


def expect_alive(c, authority, what, path="/alive"):
    """The connection still serves a request (a stream error must not
    have cost the connection)."""
    sid = c.get(authority, path)
    s = c.response(sid)
    h.eq(s.status, 200, "%s: status of the next stream on the same connection" % what)
    h.check(c.goaway is None, "%s: GOAWAY after the next stream: %s" % (what, c.summary()))
    return s
