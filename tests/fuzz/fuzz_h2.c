/* fuzz_h2.c: stateful fuzzing of the HTTP/2 front end, frames in,
 * exchange events out. The real worker, its connections (conn.c over
 * socketpairs: the TLS listener's behaviour after ALPN chose "h2", without
 * the SSL), h2.c, exchange.c, upstream.c and uph1.c run against scripted
 * HTTP/2 clients and the scripted upstream of fuzz_script.c, and the
 * input is the script: a program that interleaves the frames each client
 * sends (raw bytes, or frames built from the program's fields, HEADERS
 * with a valid HPACK block from a dictionary of request heads plus
 * fields of the program's), what the upstream answers, closes, resets,
 * either side stopping or starting to read, loop turns and the passing of
 * time.
 *
 * Configuration: FS_CONF (fuzz_script.h), the same as fuzz_exchange's,
 * plus small HTTP/2 limits: 4 concurrent streams, a 1 KiB header list, 2
 * CONTINUATIONs, 8 resets and 20 control frames a second, windows of 64
 * KiB.
 *
 * Clients: slots 0 and 1, each a connection that opens on its first send
 * (again after the client left). Stream slots (S, 0..7): 0 the connection
 * (stream 0), 1..4 streams 1, 3, 5, 7, 5 stream 2 (even: the server's),
 * 6 the client's current stream (the last one slot 7 named; 1 before),
 * 7 a new stream (the client's highest stream id so far + 2).
 *
 * The program: one opcode byte each (low 4 bits the operation, high 4 bits
 * its argument A), some followed by bytes of their own. 2..12 are the
 * operations fuzz_exchange has too (fs_op, fuzz_script.h; so
 * tests/fuzz/h2_seeds.py shares exchange_seeds.py's helpers); for the
 * others, C = A&1 is the client, S = A>>1 a stream slot:
 *   0 A L data     client C sends L raw bytes
 *   1 A            client C sends the connection preface, a SETTINGS frame
 *                  (variant S, see settings_variants) and, but for variant
 *                  7, a SETTINGS ACK
 *   2 A L data     upstream A (0 newest) sends L bytes
 *   3 A K          upstream A sends (K+1) KiB of 'x'
 *   4 A            client (A&3)%2 leaves: A>>2 = 0 close (after reading
 *                  what it was sent), 1 or 3 reset (close leaving it
 *                  unread), 2 shutdown(SHUT_WR) only
 *   5 A            upstream A&7 closes; A&8: resets
 *   6 A            client (A&3)%2 stops (A&4 = 0) or starts reading
 *   7 A            upstream A&7 stops (A&8 = 0) or starts reading
 *   8 A V          time passes: (V+1) units of A&7 (1ms .. 1h), every
 *                  timer whose time has come fires
 *   9 A            A+1 loop turns
 *  10 A            upstream A&7 shuts its write side
 *  11              the worker starts draining
 *  12 0            reload (at most 4 per input; HTTP/2 connections get
 *                  GOAWAY, as on a real reload); 12 A>0: one loop turn
 *  13 A T F L data client C sends a frame of type T, flags F, on stream
 *                  slot S, with L bytes of payload
 *  14 A H F fields client C sends HEADERS on stream slot S: the request head
 *                  H&15 of the dictionary (15: none, e.g. for trailers),
 *                  then H>>4 fields of the program, each a kind byte K
 *                  (K&3: 0 literal, 1 literal with incremental indexing, 2
 *                  never indexed, each with the static table's name K>>2,
 *                  or its own name (K>>2 = 0: L name); 3 the indexed field
 *                  K>>2) and L value. F: END_STREAM 0x1, END_HEADERS 0x4
 *                  (without it the block stays unfinished), PADDED 0x8,
 *                  PRIORITY 0x20, and 0x2 splits the block into HEADERS
 *                  and a CONTINUATION
 *  15 A K          client C sends (K&127)+1 KiB of DATA on stream slot S, in
 *                  frames of 16 KiB at most; K&128: END_STREAM on the last
 * After the program, 8 loop turns, then everything is closed.
 *
 * Invariants: no crash, leak or assertion; what each client receives is a
 * well-formed HTTP/2 frame sequence, as a client session of nghttp2 judges
 * it (see oracle_t), nothing comes on a stream the server closed, status
 * codes are in 100..599 and a 2xx to CONNECT has no Content-Length or
 * Transfer-Encoding (RFC 9110 15 and 9.3.6, which nghttp2 does not
 * check); what each upstream connection
 * receives is well-formed HTTP/1.1 requests (fuzz_script.h); after every
 * operation the ownership
 * rules of exchange.h hold from the upstream side, and an HTTP/2
 * connection has no exchange of its own (its streams own theirs); after
 * the input everything is closed (fw_finish), no request is counted
 * active on any address, and the clock offset is 0.
 *
 * GH_FUZZ_TRACE=1 prints the program as it runs and the frames each client
 * receives; tests/fuzz/h2_seeds.py writes the seed corpus from readable
 * programs. */
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/fuzz/fuzz_script.h"

enum {
  NUM_CLIENTS = 2,
  MAX_OPENS = 16,     /* client connections opened per input */
  MAX_OUTBOX = 4 << 20,
  MAX_OSTREAMS = 128, /* streams the oracle follows per connection */
  MAX_FRAME = 16384,  /* SETTINGS_MAX_FRAME_SIZE of the server (the default) */
};

static const char conf_fmt[] = FS_CONF(
    " \"http2\": {\"max_concurrent_streams\": 4, \"max_header_list_size\": \"1k\","
    "   \"max_continuations\": 2, \"max_resets\": \"8/1s\", \"max_control_frames\": \"20/1s\","
    "   \"stream_window\": 65535, \"connection_window\": 65535},");

/* ---- the client's request heads ---- */

/* Name/value pairs, NULL-terminated. Fields found whole in the static
 * table go as indexed fields, the rest as literals without indexing. */
static const char *const heads[15][17] = {
    {":method", "GET", ":scheme", "https", ":path", "/", ":authority", "a.test"},
    {":method", "GET", ":scheme", "https", ":path", "/r/x", ":authority", "x.b.test"},
    {":method", "POST", ":scheme", "https", ":path", "/up", ":authority", "a.test",
     "content-length", "5"},
    {":method", "POST", ":scheme", "https", ":path", "/r/up", ":authority", "a.test",
     "content-type", "text/plain"},
    {":method", "HEAD", ":scheme", "https", ":path", "/", ":authority", "a.test"},
    {":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/ws",
     ":authority", "a.test", "sec-websocket-version", "13"},
    {":method", "GET", ":scheme", "https", ":path", "/", ":authority", "m.test"},
    {":method", "POST", ":scheme", "https", ":path", "/", ":authority", "m.test",
     "content-length", "100"},
    {":method", "GET", ":scheme", "https", ":path", "/h", "host", "a.test"},
    {":method", "GET", ":scheme", "https", ":path", "/", ":authority", "a.test", "host", "x.b.test"},
    {":method", "PUT", ":scheme", "https", ":path", "/r/p", ":authority", "a.test",
     "expect", "100-continue", "content-length", "10"},
    {":method", "GET", ":scheme", "https", ":path", "/c", ":authority", "a.test",
     "cookie", "a=1", "cookie", "b=2", "te", "trailers"},
    {":method", "CONNECT", ":authority", "a.test:443"},
    {":method", "GET", ":scheme", "https", ":path", "/.well-known/acme-challenge/tok",
     ":authority", "a.test"},
    {":method", "OPTIONS", ":scheme", "https", ":path", "*", ":authority", "z.test"},
};

/* The few static-table entries (RFC 7541 appendix A) the heads use whole. */
static const struct {
  const char *name, *value;
  uint8_t index;
} statics[] = {
    {":method", "GET", 2}, {":method", "POST", 3}, {":path", "/", 4}, {":scheme", "https", 7},
};

static const nghttp2_settings_entry settings_variants[8][3] = {
    {{0, 0}},
    {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0}},
    {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 16}},
    {{NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 0}},
    {{NGHTTP2_SETTINGS_MAX_FRAME_SIZE, 16384}, {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
     {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}},
    {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0x7fffffff}},
    {{NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 256}, {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1024}},
    {{0, 0}},
};

/* ---- the oracle ----
 *
 * What a client receives is fed to an nghttp2 client session, which
 * checks framing, HPACK, stream states, flow control and HTTP messaging
 * (pseudo-headers, connection-specific fields, content-length against
 * DATA, HEAD, 1xx). That session sends nothing: for it to judge the
 * server's frames, what the client sent is mirrored into it as it is
 * sent. A splitter cuts the client's bytes into frames, and a frame that
 * changes what the server may send is replayed on the session: a new
 * stream is submitted as a request under the same id from the first bytes
 * of its HEADERS frame (with its :method when that frame holds it, decoded
 * by an HPACK inflater that follows the client's encoder), END_STREAM ends
 * it, RST_STREAM resets it, SETTINGS and WINDOW_UPDATE are submitted as
 * they are (the session applies its SETTINGS at the server's ACK, as the
 * server applies the client's before it). The server's stream limit is
 * lifted for the session (see oracle_got). What is mirrored takes
 * effect when the client queues it, so never later than at the server:
 * the oracle may let pass a violation around that moment, never blame a
 * correct frame.
 *
 * Any frame the mirror cannot replay exactly (a malformed frame, one the
 * server must answer with a connection error, a header block HPACK
 * refuses, more streams than MAX_OSTREAMS) is garbage: the server may end
 * the connection, and the oracle stops judging it. Otherwise any error
 * the session reports about the server is a failure. */
typedef struct {
  int32_t id;      /* 0: free */
  uint8_t ended;   /* the client sent END_STREAM */
  uint8_t head_end; /* ... with the request head, so the server knew it from the start */
  uint8_t unsure;  /* :method not known when the stream opened: messaging not judged */
  uint8_t connect;  /* a CONNECT (RFC 8441's extended one included) */
  uint8_t success;  /* ... and the head being received is a 2xx */
  /* Closed as the server sees it: it sent RST_STREAM, or END_STREAM with
   * head_end. The session forgets a closed stream and ignores what comes
   * on it; RFC 9113 5.1 allows the server nothing more there. */
  uint8_t closed;
} ostream_t;

typedef struct {
  nghttp2_session *session;
  nghttp2_hd_inflater *inflater;
  int garbage;        /* stop judging */
  const char *why;    /* why it became garbage, for the trace */
  /* The splitter. */
  size_t preface;     /* bytes of the preface seen, up to 24 */
  int settings_seen;  /* the first frame was SETTINGS */
  uint8_t hd[9];
  size_t hd_len;
  px_buf_t payload;
  size_t need;        /* payload bytes the current frame has; hd_len == 9 */
  int32_t cont_id;    /* a header block waits for CONTINUATION on this stream */
  uint8_t cont_end;   /* ... and its HEADERS had END_STREAM */
  int32_t max_id;     /* highest stream the client opened */
  char method[16];    /* :method of the block being decoded */
  size_t method_len;
  ostream_t streams[MAX_OSTREAMS];
  /* Frame boundaries in what the server sends (see oracle_got). */
  uint8_t srv_hd[9];
  size_t srv_hd_len, srv_left;
  px_buf_t got;       /* the first bytes received, for the report */
} oracle_t;

typedef struct {
  int open;
  int peer;
  px_buf_t out; /* bytes the client has yet to write, from |off| */
  size_t off;
  int32_t cur;  /* the current stream (slot 6) */
  oracle_t o;
} client_t;

static px_worker_t *g_w;
static client_t g_clients[NUM_CLIENTS];
static unsigned g_opens;
static nghttp2_session_callbacks *g_cbs;

#define CHECK FS_CHECK
#define TRACE FS_TRACE

static const char *const frame_names[] = {"DATA", "HEADERS", "PRIORITY", "RST_STREAM",
                                          "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY",
                                          "WINDOW_UPDATE", "CONTINUATION"};
static const char *frame_name(uint8_t type) { return type < 10 ? frame_names[type] : "unknown"; }

static void oracle_fail(client_t *cl, const char *what, const char *detail) {
  fprintf(stderr, "fuzz_h2: client %d received a broken HTTP/2 stream: %s%s%s\n",
          (int)(cl - g_clients), what, detail ? ": " : "", detail ? detail : "");
  fprintf(stderr, "--- first bytes received (%zu), hex ---\n", cl->o.got.len);
  for (size_t i = 0; i < cl->o.got.len && i < 4096; i++)
    fprintf(stderr, "%02x%s", (unsigned char)cl->o.got.p[i], i % 32 == 31 ? "\n" : "");
  fprintf(stderr, "\n--- end ---\n");
  abort();
}

static void garbage(client_t *cl, const char *why) {
  if (cl->o.garbage) return;
  cl->o.garbage = 1;
  cl->o.why = why;
  TRACE("  [client %d: garbage (%s): the oracle stops judging]\n", (int)(cl - g_clients), why);
}

static ostream_t *ostream_find(oracle_t *o, int32_t id) {
  for (size_t i = 0; i < MAX_OSTREAMS; i++) {
    if (o->streams[i].id == id && id != 0) return &o->streams[i];
  }
  return NULL;
}

/* pump runs what the session queued (its output goes nowhere). */
static void pump(client_t *cl) {
  const uint8_t *data;
  ssize_t n;
  while ((n = nghttp2_session_mem_send(cl->o.session, &data)) > 0) {
  }
  if (n < 0) oracle_fail(cl, "the oracle's session failed to send", nghttp2_strerror((int)n));
}

static ssize_t oracle_body(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                           uint32_t *flags, nghttp2_data_source *source, void *user_data) {
  (void)session, (void)id, (void)buf, (void)length, (void)user_data;
  ostream_t *st = source->ptr;
  if (!st->ended) return NGHTTP2_ERR_DEFERRED;
  *flags |= NGHTTP2_DATA_FLAG_EOF;
  return 0;
}

/* mirror_open: the client opened stream |id| with |method| (NULL: not
 * known yet); |end|: END_STREAM already. */
static void mirror_open(client_t *cl, int32_t id, const char *method, size_t method_len, int end) {
  oracle_t *o = &cl->o;
  ostream_t *st = NULL;
  for (size_t i = 0; i < MAX_OSTREAMS && st == NULL; i++) {
    if (o->streams[i].id == 0) st = &o->streams[i];
  }
  for (size_t i = 0; i < MAX_OSTREAMS && st == NULL; i++) {
    if (o->streams[i].closed) st = &o->streams[i]; /* no longer watched */
  }
  if (st == NULL) {
    garbage(cl, "too many streams to follow");
    return;
  }
  if (nghttp2_session_set_next_stream_id(o->session, id) != 0) {
    garbage(cl, "stream id not new");
    return;
  }
  *st = (ostream_t){.id = id, .ended = (uint8_t)end, .head_end = (uint8_t)end, .unsure = method == NULL,
                    .connect = method && method_len == 7 && memcmp(method, "CONNECT", 7) == 0};
  nghttp2_nv nv = {(uint8_t *)":method", (uint8_t *)(method ? method : "GET"), 7,
                   method ? method_len : 3, NGHTTP2_NV_FLAG_NONE};
  nghttp2_data_provider prd = {.source.ptr = st, .read_callback = oracle_body};
  int32_t got = nghttp2_submit_request(o->session, NULL, &nv, 1, end ? NULL : &prd, st);
  if (got != id) {
    st->id = 0;
    garbage(cl, "the oracle could not open the stream");
    return;
  }
  pump(cl);
}

static void mirror_end(client_t *cl, int32_t id) {
  ostream_t *st = ostream_find(&cl->o, id);
  if (st == NULL || st->ended) return;
  st->ended = 1;
  nghttp2_session_resume_data(cl->o.session, id);
  pump(cl);
}

/* inflate decodes a piece of a header block with the client's HPACK
 * state, noting :method. Returns -1 if HPACK refuses it. */
static int inflate(client_t *cl, const uint8_t *in, size_t len, int final) {
  oracle_t *o = &cl->o;
  for (;;) {
    nghttp2_nv nv;
    int fl = 0;
    ssize_t n = nghttp2_hd_inflate_hd2(o->inflater, &nv, &fl, in, len, final);
    if (n < 0) return -1;
    if (n > 0) in += n, len -= (size_t)n; /* |in| may be NULL for an empty block */
    if ((fl & NGHTTP2_HD_INFLATE_EMIT) && nv.namelen == 7 && memcmp(nv.name, ":method", 7) == 0 &&
        o->method_len == 0 && nv.valuelen > 0 && nv.valuelen < sizeof(o->method)) {
      memcpy(o->method, nv.value, nv.valuelen);
      o->method_len = nv.valuelen;
    }
    if (fl & NGHTTP2_HD_INFLATE_FINAL) {
      nghttp2_hd_inflate_end_headers(o->inflater);
      return 0;
    }
    if (!(fl & NGHTTP2_HD_INFLATE_EMIT) && len == 0) return 0;
  }
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* idle: |id| names a stream the client never opened. */
static int idle(const oracle_t *o, int32_t id) { return id % 2 == 0 || id > o->max_id; }

/* strip_padding removes a PADDED frame's padding; -1 if it does not fit. */
static int strip_padding(uint8_t flags, const uint8_t **p, size_t *len) {
  if (!(flags & NGHTTP2_FLAG_PADDED)) return 0;
  if (*len < 1 || (size_t)(*p)[0] + 1 > *len) return -1;
  *len -= (size_t)(*p)[0] + 1;
  (*p)++;
  return 0;
}

/* mirror_frame replays one complete frame the client sent (see oracle_t). */
static void mirror_frame(client_t *cl, uint8_t type, uint8_t flags, int32_t id, const uint8_t *p,
                         size_t len) {
  oracle_t *o = &cl->o;
  if (!o->settings_seen) {
    if (type != NGHTTP2_SETTINGS || (flags & NGHTTP2_FLAG_ACK)) {
      garbage(cl, "first frame not SETTINGS");
      return;
    }
    o->settings_seen = 1;
  }
  if (o->cont_id) {
    if (type != NGHTTP2_CONTINUATION || id != o->cont_id) {
      garbage(cl, "header block interrupted");
      return;
    }
    int end = (flags & NGHTTP2_FLAG_END_HEADERS) != 0;
    if (inflate(cl, p, len, end) != 0) {
      garbage(cl, "HPACK");
      return;
    }
    if (!end) return;
    o->cont_id = 0;
    if (o->cont_end) mirror_end(cl, id);
    return;
  }
  switch (type) {
    case NGHTTP2_DATA:
      if (id == 0 || idle(o, id) || strip_padding(flags, &p, &len) != 0) {
        garbage(cl, "DATA");
        return;
      }
      if (flags & NGHTTP2_FLAG_END_STREAM) mirror_end(cl, id);
      return;
    case NGHTTP2_HEADERS: {
      if (id == 0 || id % 2 == 0 || strip_padding(flags, &p, &len) != 0) {
        garbage(cl, "HEADERS");
        return;
      }
      if (flags & NGHTTP2_FLAG_PRIORITY) {
        if (len < 5 || (int32_t)(be32(p) & 0x7fffffff) == id) {
          garbage(cl, "HEADERS priority");
          return;
        }
        p += 5, len -= 5;
      }
      int end_headers = (flags & NGHTTP2_FLAG_END_HEADERS) != 0;
      int end_stream = (flags & NGHTTP2_FLAG_END_STREAM) != 0;
      o->method_len = 0;
      if (inflate(cl, p, len, end_headers) != 0) {
        garbage(cl, "HPACK");
        return;
      }
      if (id > o->max_id) {
        /* A new stream: open from its first frame on, its :method known
         * if that frame holds it. */
        o->max_id = id;
        mirror_open(cl, id, o->method_len ? o->method : NULL, o->method_len, end_headers && end_stream);
      } else if (end_headers && end_stream) {
        mirror_end(cl, id);
      }
      if (!end_headers) {
        o->cont_id = id;
        o->cont_end = (uint8_t)end_stream;
      }
      return;
    }
    case NGHTTP2_PRIORITY:
      if (id == 0 || len != 5 || (int32_t)(be32(p) & 0x7fffffff) == id) garbage(cl, "PRIORITY");
      return;
    case NGHTTP2_RST_STREAM:
      if (id == 0 || len != 4 || idle(o, id)) {
        garbage(cl, "RST_STREAM");
        return;
      }
      if (ostream_find(o, id)) {
        nghttp2_submit_rst_stream(o->session, NGHTTP2_FLAG_NONE, id, be32(p));
        pump(cl);
      }
      return;
    case NGHTTP2_SETTINGS: {
      if (id != 0 || ((flags & NGHTTP2_FLAG_ACK) ? len != 0 : len % 6 != 0)) {
        garbage(cl, "SETTINGS");
        return;
      }
      if (flags & NGHTTP2_FLAG_ACK) return;
      nghttp2_settings_entry iv[64];
      size_t n = len / 6;
      if (n > 32) { /* the server allows 32 (nghttp2_option_set_max_settings) */
        garbage(cl, "too many settings");
        return;
      }
      for (size_t i = 0; i < n; i++) {
        iv[i].settings_id = (int32_t)((uint32_t)p[6 * i] << 8 | p[6 * i + 1]);
        iv[i].value = be32(p + 6 * i + 2);
      }
      if (nghttp2_submit_settings(o->session, NGHTTP2_FLAG_NONE, iv, n) != 0) {
        garbage(cl, "SETTINGS values");
        return;
      }
      pump(cl);
      return;
    }
    case NGHTTP2_PING:
      if (id != 0 || len != 8) garbage(cl, "PING");
      return;
    case NGHTTP2_GOAWAY:
      if (id != 0 || len < 8) garbage(cl, "GOAWAY");
      return;
    case NGHTTP2_WINDOW_UPDATE: {
      uint32_t inc = len == 4 ? be32(p) & 0x7fffffff : 0;
      if (inc == 0 || (id != 0 && idle(o, id)) ||
          nghttp2_submit_window_update(o->session, NGHTTP2_FLAG_NONE, id, (int32_t)inc) != 0) {
        garbage(cl, "WINDOW_UPDATE");
        return;
      }
      pump(cl);
      return;
    }
    case NGHTTP2_PUSH_PROMISE:
    case NGHTTP2_CONTINUATION:
      garbage(cl, frame_name(type));
      return;
    default:
      return; /* unknown types are ignored */
  }
}

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* mirror cuts what the client sends into frames. */
static void mirror(client_t *cl, const uint8_t *p, size_t len) {
  oracle_t *o = &cl->o;
  while (len > 0 && !o->garbage) {
    if (o->preface < 24) {
      if (*p != (uint8_t)preface[o->preface]) {
        garbage(cl, "preface");
        return;
      }
      o->preface++, p++, len--;
      continue;
    }
    if (o->hd_len < 9) {
      o->hd[o->hd_len++] = *p++;
      len--;
      if (o->hd_len == 9) {
        o->need = (size_t)o->hd[0] << 16 | (size_t)o->hd[1] << 8 | o->hd[2];
        o->payload.len = 0;
        if (o->need > MAX_FRAME) garbage(cl, "frame too large");
      }
    } else {
      size_t n = o->need - o->payload.len < len ? o->need - o->payload.len : len;
      px_buf_append(&o->payload, p, n);
      p += n, len -= n;
    }
    if (o->hd_len == 9 && o->payload.len == o->need && !o->garbage) {
      o->hd_len = 0;
      mirror_frame(cl, o->hd[3], o->hd[4], (int32_t)(be32(o->hd + 5) & 0x7fffffff),
                   (const uint8_t *)o->payload.p, o->payload.len);
    }
  }
  /* The server decodes a HEADERS frame as it arrives and may reset the
   * stream before its end: a new stream opens with the frame's first bytes
   * (its :method unknown). The rest is mirrored when the frame is whole. */
  int32_t id = (int32_t)(be32(o->hd + 5) & 0x7fffffff);
  if (!o->garbage && o->settings_seen && !o->cont_id && o->hd_len == 9 &&
      o->payload.len < o->need && o->hd[3] == NGHTTP2_HEADERS && id % 2 == 1 && id > o->max_id) {
    o->max_id = id;
    mirror_open(cl, id, NULL, 0, 0);
  }
}

/* ---- the oracle's session callbacks ---- */

static client_t *client_of(void *user_data) { return user_data; }

static int on_invalid_frame(nghttp2_session *session, const nghttp2_frame *frame, int error,
                            void *user_data) {
  (void)session;
  client_t *cl = client_of(user_data);
  ostream_t *st = ostream_find(&cl->o, frame->hd.stream_id);
  if (st && st->unsure && (error == NGHTTP2_ERR_HTTP_HEADER || error == NGHTTP2_ERR_HTTP_MESSAGING))
    return 0;
  char what[96];
  snprintf(what, sizeof(what), "%s on stream %d", frame_name(frame->hd.type), frame->hd.stream_id);
  oracle_fail(cl, what, nghttp2_strerror(error));
  return 0;
}

static int on_invalid_header(nghttp2_session *session, const nghttp2_frame *frame,
                             const uint8_t *name, size_t namelen, const uint8_t *value,
                             size_t valuelen, uint8_t flags, void *user_data) {
  (void)session, (void)flags;
  client_t *cl = client_of(user_data);
  char what[600];
  snprintf(what, sizeof(what), "invalid field on stream %d: \"%.*s: %.*s\"", frame->hd.stream_id,
           (int)(namelen > 200 ? 200 : namelen), name, (int)(valuelen > 200 ? 200 : valuelen), value);
  oracle_fail(cl, what, NULL);
  return 0;
}

/* on_header checks what nghttp2 lets pass: a status code in 100..599 (RFC
 * 9110 15), and no Content-Length or Transfer-Encoding in a 2xx to CONNECT
 * (RFC 9110 9.3.6, RFC 8441). */
static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data) {
  (void)session, (void)flags;
  client_t *cl = client_of(user_data);
  if (namelen == 7 && memcmp(name, ":status", 7) == 0 &&
      (valuelen != 3 || value[0] < '1' || value[0] > '5')) {
    char what[64];
    snprintf(what, sizeof(what), ":status %.*s on stream %d", (int)(valuelen > 8 ? 8 : valuelen),
             value, frame->hd.stream_id);
    oracle_fail(cl, what, NULL);
  }
  ostream_t *st = ostream_find(&cl->o, frame->hd.stream_id);
  if (st == NULL || !st->connect) return 0;
  if (namelen == 7 && memcmp(name, ":status", 7) == 0) st->success = valuelen == 3 && value[0] == '2';
  if (st->success && ((namelen == 14 && memcmp(name, "content-length", 14) == 0) ||
                      (namelen == 17 && memcmp(name, "transfer-encoding", 17) == 0))) {
    char what[96];
    snprintf(what, sizeof(what), "%.*s in a 2xx to CONNECT on stream %d", (int)namelen, name,
             frame->hd.stream_id);
    oracle_fail(cl, what, NULL);
  }
  return 0;
}

static int on_error(nghttp2_session *session, int code, const char *msg, size_t len, void *user_data) {
  (void)session;
  char what[512];
  snprintf(what, sizeof(what), "%.*s (%s)", (int)(len > 400 ? 400 : len), msg, nghttp2_strerror(code));
  oracle_fail(client_of(user_data), what, NULL);
  return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  (void)session;
  client_t *cl = client_of(user_data);
  TRACE("  [client %d <- %s stream %d flags %#x length %zu]\n", (int)(cl - g_clients),
        frame_name(frame->hd.type), frame->hd.stream_id, frame->hd.flags, frame->hd.length);
  ostream_t *st = ostream_find(&cl->o, frame->hd.stream_id);
  if (st && (frame->hd.type == NGHTTP2_RST_STREAM ||
             (st->head_end && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
              (frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS))))
    st->closed = 1;
  if (frame->hd.type == NGHTTP2_GOAWAY)
    TRACE("  [  GOAWAY %s, last stream %d: %.*s]\n", nghttp2_http2_strerror(frame->goaway.error_code),
          frame->goaway.last_stream_id, (int)frame->goaway.opaque_data_len,
          (const char *)frame->goaway.opaque_data);
  else if (frame->hd.type == NGHTTP2_RST_STREAM)
    TRACE("  [  RST_STREAM %s]\n", nghttp2_http2_strerror(frame->rst_stream.error_code));
  return 0;
}

static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *user_data) {
  (void)session;
  client_t *cl = client_of(user_data);
  ostream_t *st = ostream_find(&cl->o, hd->stream_id);
  if (st && st->closed && hd->type != NGHTTP2_PRIORITY) {
    char what[96];
    snprintf(what, sizeof(what), "%s on stream %d, which the server had closed",
             frame_name(hd->type), hd->stream_id);
    oracle_fail(cl, what, NULL);
  }
  return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t code, void *user_data) {
  (void)session, (void)code;
  ostream_t *st = ostream_find(&client_of(user_data)->o, id);
  if (st && !st->closed) st->id = 0;
  return 0;
}

static void oracle_start(client_t *cl) {
  oracle_t *o = &cl->o;
  if (g_cbs == NULL) {
    nghttp2_session_callbacks_new(&g_cbs);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(g_cbs, on_invalid_frame);
    nghttp2_session_callbacks_set_on_invalid_header_callback(g_cbs, on_invalid_header);
    nghttp2_session_callbacks_set_on_header_callback(g_cbs, on_header);
    nghttp2_session_callbacks_set_error_callback2(g_cbs, on_error);
    nghttp2_session_callbacks_set_on_frame_recv_callback(g_cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(g_cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_begin_frame_callback(g_cbs, on_begin_frame);
  }
  nghttp2_option *opt;
  nghttp2_option_new(&opt);
  /* The client's WINDOW_UPDATEs are mirrored; the session sends none of
   * its own. */
  nghttp2_option_set_no_auto_window_update(opt, 1);
  if (nghttp2_session_client_new2(&o->session, g_cbs, cl, opt) != 0 ||
      nghttp2_hd_inflate_new(&o->inflater) != 0)
    abort();
  nghttp2_option_del(opt);
  pump(cl);
}

static void oracle_end(client_t *cl) {
  oracle_t *o = &cl->o;
  nghttp2_session_del(o->session);
  nghttp2_hd_inflate_del(o->inflater);
  px_buf_free(&o->payload);
  px_buf_free(&o->got);
  memset(o, 0, sizeof(*o));
}

static void feed(client_t *cl, const uint8_t *p, size_t len) {
  ssize_t n = nghttp2_session_mem_recv(cl->o.session, p, len);
  if (n < 0) oracle_fail(cl, "nghttp2_session_mem_recv", nghttp2_strerror((int)n));
}

/* oracle_got feeds what the client received to the session. After each
 * SETTINGS of the server's comes one of the oracle's own that lifts
 * SETTINGS_MAX_CONCURRENT_STREAMS, so that the session never holds back a
 * mirrored request: it would take a stream it has not sent for an idle
 * one. (The limit is the server's to enforce; the oracle judges only what
 * the server sends.) */
static void oracle_got(int peer, const char *data, size_t len) {
  static const uint8_t unlimited[15] = {0, 0, 6, NGHTTP2_SETTINGS, 0, 0, 0, 0, 0,
                                        0, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 0x7f, 0xff, 0xff, 0xff};
  client_t *cl = NULL;
  for (unsigned k = 0; k < NUM_CLIENTS; k++) {
    if (g_clients[k].open && g_clients[k].peer == peer) cl = &g_clients[k];
  }
  if (cl == NULL || cl->o.garbage) return;
  oracle_t *o = &cl->o;
  if (o->got.len < 64 * 1024) px_buf_append(&o->got, data, len);
  const uint8_t *p = (const uint8_t *)data;
  while (len > 0) {
    size_t n;
    if (o->srv_hd_len < 9) {
      n = 9 - o->srv_hd_len < len ? 9 - o->srv_hd_len : len;
      memcpy(o->srv_hd + o->srv_hd_len, p, n);
      o->srv_hd_len += n;
      if (o->srv_hd_len == 9) o->srv_left = (size_t)o->srv_hd[0] << 16 | (size_t)o->srv_hd[1] << 8 | o->srv_hd[2];
    } else {
      n = o->srv_left < len ? o->srv_left : len;
      o->srv_left -= n;
    }
    feed(cl, p, n);
    p += n, len -= n;
    if (o->srv_hd_len == 9 && o->srv_left == 0) {
      o->srv_hd_len = 0;
      if (o->srv_hd[3] == NGHTTP2_SETTINGS && !(o->srv_hd[4] & NGHTTP2_FLAG_ACK))
        feed(cl, unlimited, sizeof(unlimited));
    }
  }
  pump(cl);
}

/* ---- the scripted clients ---- */

static client_t *client_open(unsigned slot) {
  client_t *cl = &g_clients[slot];
  if (cl->open) return cl;
  if (g_opens == MAX_OPENS) return NULL;
  if (fw_conn_open(g_w, 2, FS_SOCKBUF, &cl->peer) == NULL) return NULL;
  g_opens++;
  cl->open = 1;
  cl->out.len = cl->off = 0;
  oracle_start(cl);
  TRACE("  [client %u connected]\n", slot);
  return cl;
}

static void client_send(unsigned slot, const void *p, size_t len) {
  client_t *cl = client_open(slot);
  if (cl == NULL || len == 0 || cl->out.len - cl->off + len > MAX_OUTBOX) return;
  px_buf_append(&cl->out, p, len);
  mirror(cl, p, len);
}

static void client_flush(client_t *cl) {
  if (cl->open) fs_write(cl->peer, &cl->out, &cl->off);
}

static void client_close(unsigned slot, unsigned mode) {
  client_t *cl = &g_clients[slot];
  if (!cl->open || !fs_leave(cl->peer, &cl->out, &cl->off, mode)) return;
  cl->open = 0;
  cl->cur = 0; /* the next connection starts from stream 1 */
  oracle_end(cl);
}

static void client_reading(unsigned slot, int on) {
  client_t *cl = &g_clients[slot];
  if (cl->open) fw_peer_reading(cl->peer, on);
}

/* stream_id resolves stream slot |s| of client |slot| (see the top). */
static int32_t stream_id(unsigned slot, unsigned s) {
  static const int32_t fixed[6] = {0, 1, 3, 5, 7, 2};
  client_t *cl = &g_clients[slot];
  if (s < 6) return fixed[s];
  if (s == 6) return cl->cur ? cl->cur : 1;
  int32_t max = cl->open ? cl->o.max_id : 0;
  if (cl->cur > max) max = cl->cur;
  /* Past the last id (2^31-1) there is no new stream: the last again. */
  cl->cur = max == 0 ? 1 : max < INT32_MAX - 1 ? max + 2 : INT32_MAX;
  return cl->cur;
}

/* ---- building frames ---- */

static void frame_head(px_buf_t *b, size_t len, uint8_t type, uint8_t flags, int32_t id) {
  uint8_t h[9] = {(uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len, type, flags,
                  (uint8_t)((uint32_t)id >> 24), (uint8_t)(id >> 16), (uint8_t)(id >> 8), (uint8_t)id};
  px_buf_append(b, h, 9);
}

static void send_frame(unsigned slot, uint8_t type, uint8_t flags, int32_t id, const void *p, size_t len) {
  px_buf_t b = {0};
  frame_head(&b, len, type, flags, id);
  px_buf_append(&b, p, len);
  TRACE("client %u sends %s stream %d flags %#x length %zu\n", slot, frame_name(type), id, flags, len);
  client_send(slot, b.p, b.len);
  px_buf_free(&b);
}

/* hp_int appends an HPACK integer with a |bits|-bit prefix. */
static void hp_int(px_buf_t *b, uint8_t first, unsigned bits, uint32_t v) {
  uint32_t max = (1u << bits) - 1;
  uint8_t ch;
  if (v < max) {
    ch = (uint8_t)(first | v);
    px_buf_append(b, &ch, 1);
    return;
  }
  ch = (uint8_t)(first | max);
  px_buf_append(b, &ch, 1);
  for (v -= max; v >= 128; v >>= 7) {
    ch = (uint8_t)(v % 128 + 128);
    px_buf_append(b, &ch, 1);
  }
  ch = (uint8_t)v;
  px_buf_append(b, &ch, 1);
}

static void hp_str(px_buf_t *b, const void *s, size_t len) {
  hp_int(b, 0, 7, (uint32_t)len);
  px_buf_append(b, s, len);
}

static void hp_field(px_buf_t *b, const char *name, const char *value) {
  for (size_t i = 0; i < sizeof(statics) / sizeof(statics[0]); i++) {
    if (strcmp(statics[i].name, name) == 0 && strcmp(statics[i].value, value) == 0) {
      hp_int(b, 0x80, 7, statics[i].index);
      return;
    }
  }
  hp_int(b, 0x00, 4, 0);
  hp_str(b, name, strlen(name));
  hp_str(b, value, strlen(value));
}

/* send_headers: operation 14 (see the top). */
static void send_headers(unsigned slot, int32_t id, const uint8_t **pp, const uint8_t *end) {
  const uint8_t *p = *pp;
  uint8_t h = p < end ? *p++ : 0;
  uint8_t f = p < end ? *p++ : 0;
  px_buf_t block = {0};
  if ((h & 15) < 15) {
    for (const char *const *kv = heads[h & 15]; kv[0]; kv += 2) hp_field(&block, kv[0], kv[1]);
  }
  for (unsigned i = 0; i < (unsigned)(h >> 4) && p < end; i++) {
    uint8_t k = *p++;
    size_t len;
    const uint8_t *s;
    static const uint8_t first[3] = {0x00, 0x40, 0x10}, bits[3] = {4, 6, 4};
    if ((k & 3) == 3) {
      hp_int(&block, 0x80, 7, k >> 2);
      continue;
    }
    hp_int(&block, first[k & 3], bits[k & 3], k >> 2);
    if ((k >> 2) == 0) {
      s = fs_take(&p, end, &len);
      hp_str(&block, s, len);
    }
    s = fs_take(&p, end, &len);
    hp_str(&block, s, len);
  }
  *pp = p;
  /* HEADERS [+ CONTINUATION]. */
  size_t cut = (f & 2) ? block.len / 2 : block.len;
  uint8_t flags = f & (NGHTTP2_FLAG_END_STREAM | NGHTTP2_FLAG_PADDED | NGHTTP2_FLAG_PRIORITY);
  int end_headers = (f & NGHTTP2_FLAG_END_HEADERS) != 0;
  if (end_headers && cut == block.len) flags |= NGHTTP2_FLAG_END_HEADERS;
  px_buf_t payload = {0};
  static const uint8_t pad[6] = {5, 0, 0, 0, 0, 0}, prio[5] = {0, 0, 0, 0, 15};
  if (flags & NGHTTP2_FLAG_PADDED) px_buf_append(&payload, pad, 1);
  if (flags & NGHTTP2_FLAG_PRIORITY) px_buf_append(&payload, prio, 5);
  px_buf_append(&payload, block.p, cut);
  if (flags & NGHTTP2_FLAG_PADDED) px_buf_append(&payload, pad + 1, 5);
  send_frame(slot, NGHTTP2_HEADERS, flags, id, payload.p, payload.len);
  if (cut < block.len)
    send_frame(slot, NGHTTP2_CONTINUATION, end_headers ? NGHTTP2_FLAG_END_HEADERS : 0, id,
               block.p + cut, block.len - cut);
  px_buf_free(&payload);
  px_buf_free(&block);
}

static void send_preface(unsigned slot, unsigned variant) {
  px_buf_t b = {0};
  px_buf_append(&b, preface, 24);
  size_t n = 0;
  uint8_t iv[18];
  for (size_t i = 0; i < 3 && settings_variants[variant][i].settings_id; i++, n++) {
    const nghttp2_settings_entry *e = &settings_variants[variant][i];
    uint8_t *q = iv + 6 * i;
    q[0] = (uint8_t)(e->settings_id >> 8), q[1] = (uint8_t)e->settings_id;
    q[2] = (uint8_t)(e->value >> 24), q[3] = (uint8_t)(e->value >> 16);
    q[4] = (uint8_t)(e->value >> 8), q[5] = (uint8_t)e->value;
  }
  frame_head(&b, 6 * n, NGHTTP2_SETTINGS, 0, 0);
  px_buf_append(&b, iv, 6 * n);
  if (variant != 7) frame_head(&b, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0);
  TRACE("client %u sends the preface, SETTINGS variant %u\n", slot, variant);
  client_send(slot, b.p, b.len);
  px_buf_free(&b);
}

static void send_data(unsigned slot, int32_t id, size_t kib, int end_stream) {
  size_t left = kib * 1024;
  while (left > 0) {
    size_t n = left < MAX_FRAME ? left : MAX_FRAME;
    left -= n;
    send_frame(slot, NGHTTP2_DATA, left == 0 && end_stream ? NGHTTP2_FLAG_END_STREAM : 0, id,
               fs_fill, n);
  }
}

/* ---- the loop, invariants ---- */

static void spin(int rounds) {
  for (int i = 0; i < rounds; i++) {
    for (unsigned k = 0; k < NUM_CLIENTS; k++) client_flush(&g_clients[k]);
    fw_spin(g_w, 1);
    fs_small_sndbufs(g_w);
  }
}

static void check_ownership(void) {
  for (gh_link_t *l = g_w->conns.next; l != &g_w->conns; l = l->next) {
    px_conn_t *c = GH_CONTAINER_OF(l, px_conn_t, link);
    /* Its streams own the exchanges; the connection has none. */
    if (c->h2) CHECK(c->ex == NULL);
  }
  fs_check_upconns(g_w);
}

static void trace_state(void) {
  if (!fs_trace) return;
  for (gh_link_t *l = g_w->conns.next; l != &g_w->conns; l = l->next) {
    px_conn_t *c = GH_CONTAINER_OF(l, px_conn_t, link);
    fprintf(stderr, "  . conn %p%s%s queued %zu\n", (void *)c, c->state == PX_CONN_CLOSING ? " closing" : "",
            c->reading ? "" : " not-reading", px_conn_write_queue(c));
  }
  for (gh_link_t *l = g_w->upconns.next; l != &g_w->upconns; l = l->next) {
    px_upconn_t *u = GH_CONTAINER_OF(l, px_upconn_t, all);
    fprintf(stderr, "  . up %p%s%s\n", (void *)u, u->idle ? " idle" : "", u->ex ? " attached" : "");
  }
}

/* ---- set-up and teardown ---- */

static px_worker_t *start(void) {
  if (g_w == NULL) g_w = fs_start("fuzz_h2", conf_fmt, oracle_got);
  return g_w;
}

static void finish(void) {
  fs_close_ups();
  /* What the clients were sent last is judged too. */
  for (unsigned k = 0; k < NUM_CLIENTS; k++) {
    if (g_clients[k].open) fw_peer_drain(g_clients[k].peer);
  }
  for (unsigned k = 0; k < NUM_CLIENTS; k++) {
    if (g_clients[k].open) oracle_end(&g_clients[k]);
    px_buf_free(&g_clients[k].out);
    memset(&g_clients[k], 0, sizeof(g_clients[k]));
  }
  fw_finish(g_w); /* closes the peers too */
  fs_finished(g_w);
  g_opens = 0;
}

/* ---- the program ---- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  start();
  static const fs_target_t target = {NUM_CLIENTS, spin, client_close, client_reading};
  const uint8_t *p = data, *end = data + size;
  while (p < end) {
    uint8_t op = *p++;
    unsigned a = op >> 4, c = a & 1, s = a >> 1;
    switch (op & 15) {
      case 0: {
        size_t len;
        const uint8_t *at = fs_take(&p, end, &len);
        TRACE("client %u sends %zu raw bytes\n", c, len);
        client_send(c, at, len);
        break;
      }
      case 1:
        send_preface(c, s);
        break;
      case 13: {
        uint8_t type = p < end ? *p++ : 0, flags = p < end ? *p++ : 0;
        size_t len;
        const uint8_t *at = fs_take(&p, end, &len);
        send_frame(c, type, flags, stream_id(c, s), at, len);
        break;
      }
      case 14:
        send_headers(c, stream_id(c, s), &p, end);
        break;
      case 15: {
        uint8_t k = p < end ? *p++ : 0;
        int32_t id = stream_id(c, s);
        TRACE("client %u sends %u KiB of DATA on stream %d%s\n", c, (k & 127) + 1, id,
              k & 128 ? ", END_STREAM" : "");
        send_data(c, id, (size_t)(k & 127) + 1, (k & 128) != 0);
        break;
      }
      default:
        fs_op(g_w, &target, op, &p, end); /* the shared operations */
        break;
    }
    check_ownership();
    trace_state();
  }
  spin(8);
  check_ownership();
  finish();
  return 0;
}
