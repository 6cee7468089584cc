/* h2.c: HTTP/2 toward clients (see h2.h).
 *
 * Requests become exchanges forwarded to HTTP/1.1 upstreams exactly as
 * h1.c's are (same routing, head building, X-Forwarded-*). What RFC 9113
 * section 8 forbids is refused with a stream error and never forwarded:
 * nghttp2's HTTP messaging checks (pseudo-headers, connection-specific
 * fields, te, content-length against DATA, field syntax) plus ours below
 * (invalid fields, :authority against host, the target's characters).
 *
 * Protection (all from conf->http2): SETTINGS_MAX_CONCURRENT_STREAMS, a
 * header list bound (431) and nghttp2's CONTINUATION bound, HPACK tables
 * bounded both ways, and two token buckets: client RST_STREAMs (rapid
 * reset, CVE-2023-44487) and control frames that carry no request
 * (SETTINGS, PING, PRIORITY, empty DATA, tiny WINDOW_UPDATEs, invalid
 * frames). Either bucket running dry ends the connection with GOAWAY
 * ENHANCE_YOUR_CALM. Timeouts: idle (no stream), header_read (a header
 * block left unfinished), client_body per stream, client_send (the client
 * not taking bytes: a stream kept at a zero window is reset, a connection
 * kept at zero window or not reading is closed), tunnel_idle. */
#include <nghttp2/nghttp2.h>
#include <openssl/rand.h>
#include <stdio.h>

#include "common/b64.h"
#include "common/log.h"
#include "proxy/conn.h"
#include "proxy/h2.h"
#include "proxy/upstream.h"

/* Streams' timeouts are checked by a sweep at most this often. */
#define SWEEP_MS 1000
/* One event produces at most this much output before it is written. */
#define FLUSH_BYTES (256 * 1024)

typedef struct px_h2_stream px_h2_stream_t;

typedef struct {
  double tokens;
  uint64_t last_ms;
} bucket_t;

struct px_h2 {
  nghttp2_session *session;
  px_conn_t *c;
  gh_link_t streams; /* px_h2_stream_t.link */
  size_t num_streams;
  size_t buffered;      /* response bytes in the streams' buffers */
  uint64_t idle_mark;   /* since when no stream is open */
  uint64_t send_mark;   /* since when the write queue has not drained; 0: empty */
  uint64_t sweep_due;   /* next per-stream timeout check; 0: none */
  bucket_t resets, glitches;
  px_buf_t names;       /* lower-cased response field names, while submitting */
  gh_link_t dirty;      /* in w->h2_dirty while |queued| */
  uint8_t queued;
  uint8_t goaway;       /* GOAWAY sent: finish once no stream is left */
  uint8_t fatal;        /* close once what is queued is written */
  uint8_t finishing;    /* px_conn_finish called */
  /* Client stream ids (RFC 9113 5.1.1): the highest opened, and the last
   * few ranges of ids the client skipped, which it can never open now. */
  int32_t max_id;
  uint8_t num_skipped;
  struct {
    int32_t lo, hi;
  } skipped[8];
};

struct px_h2_stream {
  gh_link_t link;
  px_h2_t *h2;
  int32_t id;
  px_exchange_t *ex;
  /* The request head while it arrives. */
  char method[24];
  char authority[264];
  char protocol[16];
  uint8_t method_len, protocol_len;
  uint16_t authority_len;
  uint8_t has_authority, has_protocol;
  px_buf_t cookie; /* cookie crumbs joined with "; " (RFC 9113 8.2.3) */
  size_t list_bytes; /* RFC 9113 6.5.2 size of the header list so far */
  int reject_status; /* answer this once the head is complete */
  const char *reject_why;
  uint8_t head_done, req_end, tunnel, paused, provider, out_eof, deferred, reset, logged;
  uint32_t held; /* DATA bytes taken but not yet acknowledged to the client */
  uint64_t body_bytes;
  uint64_t read_mark; /* last request byte (tunnel: last byte either way) */
  uint64_t data_mark; /* since when response bytes wait for the client; 0: none */
  px_buf_t out;       /* response bytes for DATA frames, from |out_off| */
  size_t out_off;
};

static const px_stream_ops_t h2_ops;

/* ---- memory: nghttp2's and the streams' small blocks ----
 *
 * A request costs nghttp2 a handful of small allocations (its stream,
 * outbound items, header copies, HPACK buffers) and us one stream. They
 * come from per-worker free lists by size class, so the steady state does
 * not go through malloc's bins (glibc's tcache holds only 7 blocks a size,
 * far fewer than the streams in flight). Every session and stream lives
 * and dies on its worker, so the lists need no lock. What the lists keep
 * is bounded (MEM_KEEP_BYTES per worker); larger blocks go to malloc. */
enum { MEM_STEP = 16, MEM_CLASSES = 48 };
/* Sanitizer and fuzz builds keep nothing, so that ASan sees every block's
 * use after free. */
#if defined(GH_DEBUG_ASSERTS) || defined(__SANITIZE_ADDRESS__)
#define MEM_KEEP_BYTES 0
#else
#define MEM_KEEP_BYTES (4u << 20)
#endif

typedef struct mem_block {
  struct mem_block *next;
} mem_block_t;

typedef struct px_h2_mem {
  mem_block_t *free[MEM_CLASSES];
  size_t kept; /* bytes on the lists */
} px_h2_mem_t;

/* Each block has a 16-byte header (keeping malloc's alignment): its size
 * class, or MEM_CLASSES and its size for a large block. */
typedef struct {
  uint32_t cls;
  uint32_t pad;
  size_t size;
} mem_hdr_t;

static px_h2_mem_t *mem_of(px_worker_t *w) {
  if (w->h2_mem == NULL) w->h2_mem = gh_calloc(1, sizeof(px_h2_mem_t));
  return w->h2_mem;
}

static void *mem_alloc(size_t n, void *user_data) {
  px_h2_mem_t *m = mem_of(user_data);
  size_t cls = n ? (n - 1) / MEM_STEP : 0;
  mem_hdr_t *hd;
  if (cls < MEM_CLASSES) {
    mem_block_t *b = m->free[cls];
    if (b) {
      m->free[cls] = b->next;
      m->kept -= (cls + 1) * MEM_STEP;
      hd = (mem_hdr_t *)b - 1;
      return hd + 1;
    }
    hd = gh_malloc(sizeof(*hd) + (cls + 1) * MEM_STEP);
  } else {
    cls = MEM_CLASSES;
    hd = gh_malloc(sizeof(*hd) + n);
  }
  hd->cls = (uint32_t)cls;
  hd->size = n;
  return hd + 1;
}

static void mem_free(void *p, void *user_data) {
  if (p == NULL) return;
  px_h2_mem_t *m = mem_of(user_data);
  mem_hdr_t *hd = (mem_hdr_t *)p - 1;
  size_t bytes = (hd->cls + 1) * MEM_STEP;
  if (hd->cls < MEM_CLASSES && m->kept + bytes <= MEM_KEEP_BYTES) {
    mem_block_t *b = p;
    b->next = m->free[hd->cls];
    m->free[hd->cls] = b;
    m->kept += bytes;
    return;
  }
  gh_free(hd);
}

static void *mem_calloc(size_t num, size_t size, void *user_data) {
  size_t n = num * size;
  void *p = mem_alloc(n, user_data);
  memset(p, 0, n);
  return p;
}

static void *mem_realloc(void *p, size_t n, void *user_data) {
  if (p == NULL) return mem_alloc(n, user_data);
  mem_hdr_t *hd = (mem_hdr_t *)p - 1;
  size_t have = hd->cls < MEM_CLASSES ? (hd->cls + 1) * MEM_STEP : hd->size;
  if (n <= have && hd->cls < MEM_CLASSES) return p;
  void *q = mem_alloc(n, user_data);
  memcpy(q, p, have < n ? have : n);
  mem_free(p, user_data);
  return q;
}

nghttp2_mem px_h2_worker_mem(px_worker_t *w) {
  return (nghttp2_mem){w, mem_alloc, mem_free, mem_calloc, mem_realloc};
}

void px_h2_worker_free(px_worker_t *w) {
  px_h2_mem_t *m = w->h2_mem;
  if (m == NULL) return;
  for (size_t i = 0; i < MEM_CLASSES; i++) {
    while (m->free[i]) {
      mem_block_t *b = m->free[i];
      m->free[i] = b->next;
      gh_free((mem_hdr_t *)b - 1);
    }
  }
  gh_free(m);
  w->h2_mem = NULL;
}

static const conf_t *conf_of(const px_h2_t *h2) { return h2->c->w->gen->conf; }
static uint64_t now_of(const px_h2_t *h2) { return px_now(&h2->c->w->loop); }
static size_t pending(const px_h2_stream_t *s) { return s->out.len - s->out_off; }
static int finished(const px_exchange_t *ex) {
  return ex->state == PX_EX_DONE || ex->state == PX_EX_ABORTED;
}

static void flush(px_h2_t *h2);
static void schedule(px_h2_t *h2);
static void arm_timer(px_h2_t *h2);
static void reset(px_h2_stream_t *s, uint32_t code);

int px_h2_alpn_is_h2(const SSL *ssl) {
  const uint8_t *p;
  unsigned len;
  SSL_get0_alpn_selected(ssl, &p, &len);
  return len == 2 && p[0] == 'h' && p[1] == '2';
}

/* take removes one token from |b| (|r| per period); 0 when none is left. */
static int take(bucket_t *b, conf_rate_t r, uint64_t now) {
  if (r.count == 0 || r.per_ms == 0) return 1;
  if (b->last_ms == 0) b->tokens = r.count;
  else b->tokens += (double)(now - b->last_ms) * r.count / (double)r.per_ms;
  if (b->tokens > r.count) b->tokens = r.count;
  b->last_ms = now;
  if (b->tokens < 1) return 0;
  b->tokens -= 1;
  return 1;
}

/* calm ends the connection: GOAWAY ENHANCE_YOUR_CALM, then close once
 * written. Only queues, so nghttp2 callbacks may call it. */
static void calm(px_h2_t *h2, const char *why) {
  if (h2->fatal) return;
  GH_WARN("http2", "%s: %s: GOAWAY ENHANCE_YOUR_CALM", h2->c->client_ip, why);
  PX_STAT_ADD(h2->c->w->stats.h2_calm, 1);
  nghttp2_session_terminate_session(h2->session, NGHTTP2_ENHANCE_YOUR_CALM);
  h2->fatal = 1;
}

static void glitch(px_h2_t *h2, const char *what) {
  if (!take(&h2->glitches, conf_of(h2)->http2.max_control_frames, now_of(h2))) calm(h2, what);
}

/* ---- responses ---- */

static char lower(char ch) { return ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch; }
static int str_eq(gh_str_t a, gh_str_t b) { return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0; }

static nghttp2_nv nv(const char *name, size_t name_len, const char *value, size_t value_len) {
  return (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, name_len, value_len, NGHTTP2_NV_FLAG_NONE};
}
#define NV_LIT(n, v, vlen) nv(n, sizeof(n) - 1, v, vlen)

/* fields_nv fills |v| with the fields of |hs| an HTTP/2 client may get:
 * hop-by-hop ones dropped (with |tunnel|, Sec-WebSocket-Accept too: the
 * 101's handshake fields mean nothing to an RFC 8441 client), names
 * lower-cased into h2->names, values pointing into |hs|. They stay valid
 * until the next call. Returns how many it wrote. */
static size_t fields_nv(px_h2_t *h2, const px_hdrs_t *hs, int tunnel, nghttp2_nv *v) {
  h2->names.len = 0;
  for (size_t i = 0; i < hs->num; i++) {
    gh_str_t name = px_hdr_name(hs, i);
    px_buf_append(&h2->names, name.ptr, name.len);
  }
  for (size_t j = 0; j < h2->names.len; j++) h2->names.p[j] = lower(h2->names.p[j]);
  size_t k = 0, off = 0;
  for (size_t i = 0; i < hs->num; i++) {
    gh_str_t name = px_hdr_name(hs, i), value = px_hdr_value(hs, i);
    const char *low = h2->names.p + off;
    off += name.len;
    if (px_hop_by_hop(hs, name)) continue;
    if (tunnel && gh_str_ieq(name, GH_STR("sec-websocket-accept"))) continue;
    v[k++] = nv(low, name.len, value.ptr, value.len);
  }
  return k;
}

/* read_body feeds the stream's buffered response bytes to DATA frames;
 * at the end it sends END_STREAM, or the trailers. */
static ssize_t read_body(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *user_data) {
  (void)user_data;
  px_h2_stream_t *s = source->ptr;
  px_h2_t *h2 = s->h2;
  size_t n = pending(s);
  if (n == 0 && !s->out_eof) {
    s->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  if (n > length) n = length;
  if (n > 0) memcpy(buf, s->out.p + s->out_off, n); /* an empty body may have no buffer */
  s->out_off += n;
  h2->buffered -= n;
  uint64_t now = now_of(h2);
  s->data_mark = pending(s) ? now : 0;
  if (pending(s) == 0) {
    s->out.len = s->out_off = 0;
    if (s->out.cap > 64 * 1024) px_buf_free(&s->out);
  }
  px_exchange_t *ex = s->ex;
  size_t limit = conf_of(h2)->limits.write_queue_bytes;
  /* The client took bytes: the upstream may send more. Never frees. */
  if (ex && ex->up_paused && pending(s) < limit && px_conn_write_queue(h2->c) < limit)
    px_ex_client_drained(ex);
  if (pending(s) == 0 && s->out_eof) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (ex && ex->resp_tr.num > 0) {
      /* Trailers: HEADERS with END_STREAM after the last DATA. */
      const px_hdrs_t *tr = &ex->resp_tr;
      nghttp2_nv stack[32], *v = tr->num <= 32 ? stack : gh_calloc(tr->num, sizeof(*v));
      size_t k = fields_nv(h2, tr, 0, v);
      if (k > 0 && nghttp2_submit_trailer(session, id, v, k) == 0) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      if (v != stack) gh_free(v);
    }
  }
  return (ssize_t)n;
}

/* queue_out appends response bytes for DATA frames and wakes the data
 * provider if it was waiting. */
static void queue_out(px_h2_stream_t *s, const char *p, size_t len) {
  if (len == 0) return;
  if (pending(s) == 0) s->data_mark = now_of(s->h2);
  px_buf_append(&s->out, p, len);
  s->h2->buffered += len;
  if (s->deferred) {
    s->deferred = 0;
    nghttp2_session_resume_data(s->h2->session, s->id);
  }
}

static void end_out(px_h2_stream_t *s) {
  s->out_eof = 1;
  if (s->deferred) {
    s->deferred = 0;
    nghttp2_session_resume_data(s->h2->session, s->id);
  }
}

/* submit_head submits |status| with |hs|'s fields (hop-by-hop dropped,
 * names lower-cased) plus |extra|, and a data provider when |body|. */
static void submit_head(px_h2_stream_t *s, int status, const px_hdrs_t *hs, const nghttp2_nv *extra,
                        size_t num_extra, int body, int interim) {
  px_h2_t *h2 = s->h2;
  size_t num = (hs ? hs->num : 0) + num_extra + 1;
  nghttp2_nv stack[48], *v = num <= 48 ? stack : gh_calloc(num, sizeof(*v));
  char code[4] = {(char)('0' + status / 100 % 10), (char)('0' + status / 10 % 10),
                  (char)('0' + status % 10), 0};
  size_t k = 0;
  v[k++] = NV_LIT(":status", code, 3);
  if (hs) k += fields_nv(h2, hs, s->tunnel, v + k);
  for (size_t i = 0; i < num_extra; i++) v[k++] = extra[i];
  int rc;
  if (interim) {
    rc = nghttp2_submit_headers(h2->session, NGHTTP2_FLAG_NONE, s->id, NULL, v, k, NULL);
  } else {
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = read_body};
    s->provider = body;
    rc = nghttp2_submit_response(h2->session, s->id, v, k, body ? &prd : NULL);
  }
  if (v != stack) gh_free(v);
  if (rc != 0) {
    GH_DEBUG("http2", "%s: stream %d: submit: %s", h2->c->client_ip, s->id, nghttp2_strerror(rc));
    nghttp2_submit_rst_stream(h2->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
  }
}

/* answer sends a response generated here: |status| with a short text body. */
static void answer(px_h2_stream_t *s, int status) {
  px_exchange_t *ex = s->ex;
  char body[64], len[24];
  int n = snprintf(body, sizeof(body), "%d %s\n", status, px_reason(status));
  int head = ex->method_known && ex->method == HTTP_HEAD;
  nghttp2_nv extra[] = {
      NV_LIT("content-type", "text/plain", 10),
      NV_LIT("content-length", len, px_u64_text(len, (uint64_t)n)),
  };
  submit_head(s, status, NULL, extra, 2, !head, 0);
  if (!head) queue_out(s, body, (size_t)n);
  end_out(s);
  ex->status = status;
  ex->resp_bytes = head ? 0 : (uint64_t)n;
  ex->resp_head_sent = 1;
}

/* refuse answers |status| to a request that cannot go on and ends its
 * exchange. */
static void refuse(px_h2_stream_t *s, int status, const char *why) {
  GH_DEBUG("http2", "%s: stream %d: %d: %s", s->h2->c->client_ip, s->id, status, why);
  px_exchange_t *ex = s->ex;
  if (ex->resp_head_sent) {
    reset(s, NGHTTP2_CANCEL);
    px_ex_client_gone(ex);
    return;
  }
  answer(s, status);
  px_ex_local(ex, status);
}

/* reset ends the stream with RST_STREAM |code| (once). */
static void reset(px_h2_stream_t *s, uint32_t code) {
  if (s->reset) return;
  s->reset = 1;
  nghttp2_submit_rst_stream(s->h2->session, NGHTTP2_FLAG_NONE, s->id, code);
}

/* malformed ends a request RFC 9113 8.1.1 calls malformed: a stream error
 * of type PROTOCOL_ERROR, nothing forwarded. */
static void malformed(px_h2_stream_t *s, const char *why) {
  GH_DEBUG("http2", "%s: stream %d: malformed: %s", s->h2->c->client_ip, s->id, why);
  reset(s, NGHTTP2_PROTOCOL_ERROR);
  px_ex_local(s->ex, 400);
}

/* ---- the exchange's ops: they only queue ---- */

static px_h2_stream_t *stream_of(px_exchange_t *ex) { return ex->stream; }

static void h2_interim(px_exchange_t *ex) {
  px_h2_stream_t *s = stream_of(ex);
  submit_head(s, ex->resp_status, &ex->resp, NULL, 0, 0, 1);
}

static void h2_head(px_exchange_t *ex) {
  px_h2_stream_t *s = stream_of(ex);
  nghttp2_nv extra[2];
  size_t n = 0;
  char len[24];
  if (ex->resp_framing == PX_BODY_LENGTH)
    extra[n++] = NV_LIT("content-length", len, px_u64_text(len, ex->resp_len));
  if (ex->site && ex->site->hsts_header &&
      !px_hdrs_has(&ex->resp, GH_STR("strict-transport-security"))) {
    gh_str_t val = ex->site->hsts_value;
    extra[n++] = NV_LIT("strict-transport-security", val.ptr, val.len);
  }
  /* HEAD, 204 and 304 have no body; neither has a zero length. */
  int body = ex->resp_framing != PX_BODY_NONE && ex->method != HTTP_HEAD &&
             ex->resp_status != 204 && ex->resp_status != 304 &&
             !(ex->resp_framing == PX_BODY_LENGTH && ex->resp_len == 0);
  submit_head(s, ex->resp_status, &ex->resp, extra, n, body, 0);
  if (!body) s->out_eof = 1;
}

static void h2_body(px_exchange_t *ex, const char *p, size_t len) {
  px_h2_stream_t *s = stream_of(ex);
  if (s->provider) queue_out(s, p, len);
}

static void h2_end(px_exchange_t *ex) { end_out(stream_of(ex)); }

static void h2_tunnel(px_exchange_t *ex, const char *p, size_t len) {
  px_h2_stream_t *s = stream_of(ex);
  /* RFC 8441 5: the upstream's 101 is a 200 on the stream. */
  submit_head(s, 200, &ex->resp, NULL, 0, 1, 0);
  queue_out(s, p, len);
  s->read_mark = now_of(s->h2);
}

static void h2_tunnel_data(px_exchange_t *ex, const char *p, size_t len) {
  px_h2_stream_t *s = stream_of(ex);
  queue_out(s, p, len);
  s->read_mark = now_of(s->h2);
}

static void h2_error(px_exchange_t *ex, int status, const char *why) {
  px_h2_stream_t *s = stream_of(ex);
  GH_DEBUG("http2", "%s: stream %d: %d: %s", s->h2->c->client_ip, s->id, status, why);
  if (!ex->grpc) {
    answer(s, status);
    return;
  }
  /* A trailers-only gRPC response: HEADERS with END_STREAM. */
  char code[4], msg[256];
  size_t code_len = (size_t)snprintf(code, sizeof(code), "%d", px_grpc_status(status));
  size_t msg_len = px_grpc_message(msg, sizeof(msg), status, why);
  nghttp2_nv extra[] = {
      NV_LIT("content-type", "application/grpc", 16),
      NV_LIT("grpc-status", code, code_len),
      NV_LIT("grpc-message", msg, msg_len),
  };
  submit_head(s, 200, NULL, extra, 3, 0, 0);
  end_out(s);
  ex->status = status;
  ex->resp_head_sent = 1;
}

/* ack tells the client it may send |s|'s held DATA bytes again. */
static void ack(px_h2_stream_t *s) {
  if (s->held) nghttp2_session_consume(s->h2->session, s->id, s->held);
  s->held = 0;
}

static void h2_want_body(px_exchange_t *ex) {
  px_h2_stream_t *s = stream_of(ex);
  s->paused = 0;
  ack(s);
}

static size_t h2_queued(px_exchange_t *ex) {
  px_h2_stream_t *s = stream_of(ex);
  return pending(s) + px_conn_write_queue(s->h2->c);
}

/* h2_settle is the last call of every exchange event: a failed response
 * resets its stream, a finished tunnel ends it, and the connection is
 * written at the end of this loop iteration (schedule). */
static void h2_settle(px_exchange_t *ex) {
  px_h2_stream_t *s = stream_of(ex);
  px_h2_t *h2 = s->h2;
  if (h2->c->state == PX_CONN_CLOSING) return;
  if (ex->state == PX_EX_ABORTED) reset(s, NGHTTP2_INTERNAL_ERROR);
  else if (ex->state == PX_EX_DONE && s->tunnel) end_out(s);
  schedule(h2);
}

static const px_stream_ops_t h2_ops = {
    .interim = h2_interim,
    .head = h2_head,
    .body = h2_body,
    .end = h2_end,
    .tunnel = h2_tunnel,
    .tunnel_data = h2_tunnel_data,
    .error = h2_error,
    .want_body = h2_want_body,
    .queued = h2_queued,
    .settle = h2_settle,
};

/* ---- streams ---- */

static void count_request(px_worker_t *w, px_exchange_t *ex) {
  unsigned cls = ex->status >= 100 && ex->status < 600 ? (unsigned)ex->status / 100 : 0;
  PX_STAT_ADD(w->stats.requests[ex->up_slot][cls], 1);
  PX_STAT_ADD(w->stats.requests_by_proto[1][cls], 1);
}

/* log_stream writes |s|'s access-log line once, the stream having closed
 * with |code|. A request the client reset before any answer is 499, as
 * in h1.c. */
static void log_stream(px_h2_stream_t *s, uint32_t code) {
  px_exchange_t *ex = s->ex;
  if (s->logged || ex == NULL) return;
  /* A head nghttp2 refused as malformed is logged as a 400; one the
   * client abandoned before its end is not a request. */
  if (!s->head_done && code != NGHTTP2_PROTOCOL_ERROR) return;
  s->logged = 1;
  if (!s->head_done && ex->status == 0) ex->status = 400;
  if (ex->status == 0) ex->status = 499;
  px_access_log(ex);
  count_request(s->h2->c->w, ex);
}

static void stream_free(px_h2_stream_t *s) {
  px_h2_t *h2 = s->h2;
  h2->buffered -= pending(s);
  px_ex_free(s->ex);
  px_buf_free(&s->out);
  px_buf_free(&s->cookie);
  gh_list_remove(&s->link);
  h2->num_streams--;
  if (h2->num_streams == 0) h2->idle_mark = now_of(h2);
  mem_free(s, h2->c->w);
}

/* ---- the request, from nghttp2's callbacks ---- */

static px_h2_t *h2_of(void *user_data) { return user_data; }

static px_h2_stream_t *stream_get(px_h2_t *h2, int32_t id) {
  return nghttp2_session_get_stream_user_data(h2->session, id);
}

/* on_begin_frame: a HEADERS frame that would open a stream with an id the
 * client skipped earlier is a connection error PROTOCOL_ERROR (RFC 9113
 * 5.1.1). nghttp2 1.52 ignores HEADERS on any id below the highest, since
 * it cannot tell a skipped id from a closed stream (where late trailers
 * racing a reset are legitimate); the skipped ranges tell. */
static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *user_data) {
  px_h2_t *h2 = h2_of(user_data);
  if (hd->type != NGHTTP2_HEADERS || hd->stream_id > h2->max_id || !(hd->stream_id & 1) ||
      nghttp2_session_find_stream(session, hd->stream_id) != NULL)
    return 0;
  for (size_t i = 0; i < h2->num_skipped; i++) {
    if (hd->stream_id >= h2->skipped[i].lo && hd->stream_id <= h2->skipped[i].hi) {
      GH_DEBUG("http2", "%s: HEADERS on skipped stream %d", h2->c->client_ip, hd->stream_id);
      nghttp2_session_terminate_session(session, NGHTTP2_PROTOCOL_ERROR);
      h2->fatal = 1;
      break;
    }
  }
  return 0;
}

/* note_stream_id records a new client stream id and the ids it skips. */
static void note_stream_id(px_h2_t *h2, int32_t id) {
  if (id <= h2->max_id) return;
  int32_t next = h2->max_id ? h2->max_id + 2 : 1;
  if (id > next) {
    size_t n = h2->num_skipped;
    if (n == sizeof(h2->skipped) / sizeof(h2->skipped[0])) {
      memmove(h2->skipped, h2->skipped + 1, (n - 1) * sizeof(h2->skipped[0]));
      n--;
    }
    h2->skipped[n].lo = next;
    h2->skipped[n].hi = id - 2;
    h2->num_skipped = (uint8_t)(n + 1);
  }
  h2->max_id = id;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  px_h2_t *h2 = h2_of(user_data);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  px_conn_t *c = h2->c;
  note_stream_id(h2, frame->hd.stream_id);
  px_h2_stream_t *s = mem_calloc(1, sizeof(*s), c->w);
  s->h2 = h2;
  s->id = frame->hd.stream_id;
  s->read_mark = now_of(h2);
  px_exchange_t *ex = px_ex_new(c->w, &h2_ops, s);
  ex->conn = c;
  ex->client_ip = c->client_ip;
  ex->trusted_proxy = px_conn_trusted_proxy(c);
  ex->peer = &c->peer;
  ex->is_tls = 1;
  ex->http_major = 2;
  ex->http_minor = 0;
  ex->client_keepalive = 1;
  s->ex = ex;
  gh_list_insert(&h2->streams, &s->link);
  h2->num_streams++;
  nghttp2_session_set_stream_user_data(session, s->id, s);
  return 0;
}

/* copy_pseudo keeps a pseudo-header's value in |dst| (|cap| bytes). */
static int copy_pseudo(char *dst, size_t cap, const uint8_t *v, size_t len) {
  if (len >= cap) return -1;
  memcpy(dst, v, len);
  return (int)len;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t name_len, const uint8_t *value, size_t value_len, uint8_t flags,
                     void *user_data) {
  (void)session, (void)flags;
  px_h2_t *h2 = h2_of(user_data);
  px_h2_stream_t *s = stream_get(h2, frame->hd.stream_id);
  if (s == NULL || s->reset) return 0;
  const conf_t *conf = conf_of(h2);
  px_exchange_t *ex = s->ex;
  if (s->head_done && finished(ex)) return 0;
  s->list_bytes += name_len + value_len + 32;
  if (s->list_bytes > conf->http2.max_header_list_bytes) {
    if (s->head_done) refuse(s, 431, "trailers too large");
    else if (!s->reject_status) s->reject_status = 431, s->reject_why = "header list too large";
    return 0;
  }
  if (frame->headers.cat == NGHTTP2_HCAT_HEADERS) { /* trailers */
    if (name_len && name[0] == ':') return 0; /* nghttp2 refuses these already */
    px_hdrs_name(&ex->req_tr, (const char *)name, name_len);
    ex->req_tr.in_value = 1;
    px_hdrs_value(&ex->req_tr, (const char *)value, value_len);
    return 0;
  }
  if (s->reject_status) return 0;
  gh_str_t n = {(const char *)name, name_len};
  if (name_len && name[0] == ':') {
    int len;
    if (str_eq(n, GH_STR(":method"))) {
      if ((len = copy_pseudo(s->method, sizeof(s->method), value, value_len)) < 0) {
        s->reject_status = 400, s->reject_why = "unknown method";
        return 0;
      }
      s->method_len = (uint8_t)len;
    } else if (str_eq(n, GH_STR(":path"))) {
      if (value_len > conf->limits.max_uri_bytes) {
        s->reject_status = 414, s->reject_why = "request target too long";
        return 0;
      }
      /* Pseudo-header fields come first (nghttp2 checks), so the target
       * is the first thing in req.buf, where h1.c puts it too. */
      px_hdrs_raw(&ex->req, (const char *)value, value_len);
      ex->url_len = value_len;
    } else if (str_eq(n, GH_STR(":authority"))) {
      if ((len = copy_pseudo(s->authority, sizeof(s->authority), value, value_len)) < 0) {
        s->reject_status = 400, s->reject_why = "invalid :authority";
        return 0;
      }
      s->authority_len = (uint16_t)len;
      s->has_authority = 1;
    } else if (str_eq(n, GH_STR(":protocol"))) {
      if ((len = copy_pseudo(s->protocol, sizeof(s->protocol), value, value_len)) < 0) len = 0;
      s->protocol_len = (uint8_t)len;
      s->has_protocol = 1;
    }
    return 0; /* :scheme: nghttp2 checks it is there */
  }
  if (str_eq(n, GH_STR("cookie"))) {
    if (s->cookie.len) px_buf_append(&s->cookie, "; ", 2);
    px_buf_append(&s->cookie, value, value_len);
    return 0;
  }
  if (ex->req.num >= conf->limits.max_headers) {
    s->reject_status = 431, s->reject_why = "too many header fields";
    return 0;
  }
  px_hdrs_name(&ex->req, n.ptr, n.len);
  ex->req.in_value = 1;
  px_hdrs_value(&ex->req, (const char *)value, value_len);
  return 0;
}

/* on_invalid_header: nghttp2 would drop a field it finds invalid (CR, LF
 * or NUL in a value, a bad name) and go on; RFC 9113 8.2.1 makes such a
 * request malformed, so it is reset instead. */
static int on_invalid_header(nghttp2_session *session, const nghttp2_frame *frame,
                             const uint8_t *name, size_t name_len, const uint8_t *value,
                             size_t value_len, uint8_t flags, void *user_data) {
  (void)name, (void)name_len, (void)value, (void)value_len, (void)flags;
  px_h2_t *h2 = h2_of(user_data);
  px_h2_stream_t *s = stream_get(h2, frame->hd.stream_id);
  GH_DEBUG("http2", "%s: stream %d: invalid header field", h2->c->client_ip, frame->hd.stream_id);
  if (s && !s->reset && s->ex && !finished(s->ex)) {
    s->reset = 1;
    px_ex_local(s->ex, 400);
  }
  nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_PROTOCOL_ERROR);
  return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static int method_of(const char *m, size_t len) {
  for (int i = 0; i <= HTTP_SOURCE; i++) {
    const char *name = llhttp_method_name((llhttp_method_t)i);
    if (strlen(name) == len && memcmp(name, m, len) == 0) return i;
  }
  return -1;
}

static void add_field(px_hdrs_t *hs, const char *name, const char *value, size_t value_len) {
  px_hdrs_name(hs, name, strlen(name));
  hs->in_value = 1;
  px_hdrs_value(hs, value, value_len);
}

/* head_done acts on a complete request head: refuse it, or route it and
 * start its exchange, as h1.c does. */
static void head_done(px_h2_stream_t *s, int end_stream) {
  px_h2_t *h2 = s->h2;
  px_exchange_t *ex = s->ex;
  s->head_done = 1;
  s->req_end = end_stream;
  s->read_mark = now_of(h2);
  if (s->reset) return;
  int m = method_of(s->method, s->method_len);
  if (m >= 0) {
    ex->method = (uint8_t)m;
    ex->method_known = 1;
  }
  if (s->reject_status) {
    refuse(s, s->reject_status, s->reject_why);
    return;
  }
  if (m < 0) {
    refuse(s, 400, "unknown method");
    return;
  }
  if (m == HTTP_CONNECT) {
    if (!s->has_protocol) {
      refuse(s, 405, "CONNECT is not supported");
      return;
    }
    /* RFC 8441: extended CONNECT, WebSocket only, bridged to an HTTP/1.1
     * Upgrade. The upstream wants a Sec-WebSocket-Key; the h2 client has
     * none to give. */
    if (!gh_str_ieq((gh_str_t){s->protocol, s->protocol_len}, GH_STR("websocket"))) {
      refuse(s, 400, "unsupported :protocol");
      return;
    }
    uint8_t raw[16];
    RAND_bytes(raw, sizeof(raw));
    char *key = gh_b64_encode(raw, sizeof(raw));
    add_field(&ex->req, "upgrade", "websocket", 9);
    add_field(&ex->req, "sec-websocket-key", key, strlen(key));
    gh_free(key);
    ex->method = HTTP_GET;
    ex->upgrade = 1;
    s->tunnel = 1;
  }
  if (s->cookie.len) add_field(&ex->req, "cookie", s->cookie.p, s->cookie.len);
  gh_str_t host_field = px_hdrs_get(&ex->req, GH_STR("host"));
  gh_str_t host = s->has_authority ? (gh_str_t){s->authority, s->authority_len} : host_field;
  /* RFC 9113 8.3.1: a Host that differs from :authority is malformed. */
  if (s->has_authority && host_field.ptr && !gh_str_ieq(host_field, host)) {
    malformed(s, ":authority and host differ");
    return;
  }
  gh_str_t target = {ex->req.buf, ex->url_len};
  for (size_t i = 0; i < target.len; i++) {
    unsigned char ch = (unsigned char)target.ptr[i];
    if (ch <= 0x20 || ch == 0x7f) {
      malformed(s, "invalid character in :path");
      return;
    }
  }
  if (host.len == 0) {
    refuse(s, 400, "no :authority or host");
    return;
  }
  if (!px_valid_host(host)) {
    refuse(s, 400, "invalid :authority");
    return;
  }
  gh_free(ex->host);
  ex->host = px_host_text(host);
  ex->site = px_gen_site(ex->gen, host.ptr, host.len);
  if (ex->site == NULL) {
    refuse(s, 421, "no site for this host");
    return;
  }
  /* A connection is reused for any name its certificate covers (RFC 9113
   * 9.1.1): one whose handshake was for another site never showed a
   * client certificate to this one. */
  if (!px_ccert_allows(ex->peer, ex->site->client_auth)) {
    refuse(s, 421, "client certificate not checked for this host's site");
    return;
  }
  /* Framing toward the upstream: none with END_STREAM, the client's
   * content-length (nghttp2 holds the DATA to it), else chunked. */
  gh_str_t cl = px_hdrs_get(&ex->req, GH_STR("content-length"));
  if (end_stream || s->tunnel) {
    ex->req_framing = PX_BODY_NONE;
    ex->req_done = 1;
  } else if (cl.ptr) {
    uint64_t v = 0;
    for (size_t i = 0; i < cl.len; i++) v = v * 10 + (uint64_t)(cl.ptr[i] - '0');
    ex->req_framing = PX_BODY_LENGTH;
    ex->req_len = v;
  } else {
    ex->req_framing = PX_BODY_CHUNKED;
  }
  uint64_t max_body = ex->site->conf->max_body;
  if (max_body && ex->req_framing == PX_BODY_LENGTH && ex->req_len > max_body) {
    refuse(s, 413, "request body larger than max_body");
    return;
  }
  ex->group = px_site_route(ex->site, target.ptr, target.len);
  px_uph1_build_head(ex, host, target);
  px_ex_start(ex);
}

/* request_end: the client's END_STREAM (after DATA or trailers). */
static void request_end(px_h2_stream_t *s) {
  px_exchange_t *ex = s->ex;
  s->req_end = 1;
  if (!s->head_done || s->reset || ex == NULL || finished(ex)) return;
  if (s->tunnel) { /* RFC 8441 5: END_STREAM closes the client's half */
    px_ex_tunnel_end(ex);
    return;
  }
  if (ex->req_framing == PX_BODY_CHUNKED) {
    if (px_ex_req_last_chunk(ex)) s->paused = 1;
  }
  px_ex_req_end(ex);
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user_data) {
  (void)flags;
  px_h2_t *h2 = h2_of(user_data);
  px_h2_stream_t *s = stream_get(h2, id);
  px_exchange_t *ex = s ? s->ex : NULL;
  if (s == NULL || !s->head_done || s->reset || ex == NULL || finished(ex)) {
    /* Nowhere to go: acknowledged and dropped. */
    nghttp2_session_consume(session, id, len);
    return 0;
  }
  s->read_mark = now_of(h2);
  const char *p = (const char *)data;
  int full;
  if (s->tunnel) {
    full = px_ex_tunnel_up(ex, p, len);
  } else {
    s->body_bytes += len;
    uint64_t max_body = ex->site->conf->max_body;
    if (max_body && s->body_bytes > max_body) {
      nghttp2_session_consume(session, id, len);
      refuse(s, 413, "request body larger than max_body");
      return 0;
    }
    if (ex->req_framing == PX_BODY_CHUNKED) {
      full = px_ex_req_chunk(ex, p, len);
    } else {
      full = px_ex_req_body(ex, p, len);
    }
  }
  /* The window reopens only when the upstream keeps up (h2.h). */
  s->held += (uint32_t)len;
  if (full) s->paused = 1;
  else if (!s->paused) ack(s);
  return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  (void)session;
  px_h2_t *h2 = h2_of(user_data);
  int end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  px_h2_stream_t *s;
  switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
      s = stream_get(h2, frame->hd.stream_id);
      if (s == NULL) return 0;
      if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) head_done(s, end_stream);
      else if (end_stream) request_end(s);
      return 0;
    case NGHTTP2_DATA:
      if (frame->hd.length == 0 && !end_stream) glitch(h2, "empty DATA frames");
      s = stream_get(h2, frame->hd.stream_id);
      if (s && end_stream) request_end(s);
      return 0;
    case NGHTTP2_RST_STREAM:
      if (!take(&h2->resets, conf_of(h2)->http2.max_resets, now_of(h2))) calm(h2, "rapid reset");
      return 0;
    case NGHTTP2_SETTINGS:
    case NGHTTP2_PING:
      if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) glitch(h2, "SETTINGS/PING flood");
      return 0;
    case NGHTTP2_PRIORITY:
      glitch(h2, "PRIORITY flood");
      return 0;
    case NGHTTP2_WINDOW_UPDATE:
      if (frame->window_update.window_size_increment < 1024) glitch(h2, "WINDOW_UPDATE flood");
      return 0;
    default:
      return 0;
  }
}

static int on_invalid_frame(nghttp2_session *session, const nghttp2_frame *frame, int error,
                            void *user_data) {
  (void)session, (void)frame, (void)error;
  glitch(h2_of(user_data), "invalid frames");
  return 0;
}

/* on_frame_send: a response ended while the request was still coming
 * (an early answer): RST_STREAM NO_ERROR asks the client to stop sending
 * (RFC 9113 8.1). */
static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  px_h2_t *h2 = h2_of(user_data);
  if ((frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) ||
      !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
    return 0;
  px_h2_stream_t *s = stream_get(h2, frame->hd.stream_id);
  if (s && !s->req_end && !s->reset) {
    s->reset = 1;
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
  }
  return 0;
}

/* on_stream_close: nghttp2 is done with the stream (answered, reset by
 * either side, or refused). Runs only inside mem_recv / mem_send. */
static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t code, void *user_data) {
  (void)session;
  px_h2_t *h2 = h2_of(user_data);
  px_h2_stream_t *s = stream_get(h2, id);
  if (s == NULL) return 0;
  px_exchange_t *ex = s->ex;
  if (ex && !finished(ex)) {
    GH_DEBUG("http2", "%s: stream %d closed (%s)", h2->c->client_ip, id, nghttp2_http2_strerror(code));
    px_ex_client_gone(ex);
  }
  log_stream(s, code);
  stream_free(s);
  return 0;
}

/* ---- the connection ---- */

/* flush sends what nghttp2 has queued while the client keeps up, and ends
 * the connection when nghttp2 is done with it. May free streams (and
 * their exchanges) and close the connection. */
static void flush(px_h2_t *h2) {
  px_conn_t *c = h2->c;
  size_t limit = conf_of(h2)->limits.write_queue_bytes, produced = 0;
  while (c->state != PX_CONN_CLOSING && px_conn_write_queue(c) <= limit) {
    const uint8_t *data;
    ssize_t n = nghttp2_session_mem_send(h2->session, &data);
    if (n < 0) {
      GH_DEBUG("http2", "%s: send: %s", c->client_ip, nghttp2_strerror((int)n));
      px_conn_close(c);
      return;
    }
    if (n == 0) break;
    px_conn_send(c, data, (size_t)n);
    produced += (size_t)n;
    if (produced >= FLUSH_BYTES) {
      produced = 0;
      if (px_conn_flush(c) != 0) return;
    }
  }
  if (px_conn_flush(c) != 0) return;
  int done = !nghttp2_session_want_read(h2->session) && !nghttp2_session_want_write(h2->session);
  if (h2->fatal || done || (h2->goaway && h2->num_streams == 0)) {
    if (!h2->finishing) {
      h2->finishing = 1;
      px_conn_finish(c, 0);
    }
    return;
  }
  arm_timer(h2);
}

/* on_check writes every HTTP/2 connection that has frames to send, once
 * per loop iteration, after all of the iteration's I/O callbacks. */
static void on_check(uv_check_t *chk) {
  px_worker_t *w = chk->data;
  while (!gh_list_empty(&w->h2_dirty)) {
    px_h2_t *h2 = GH_CONTAINER_OF(w->h2_dirty.next, px_h2_t, dirty);
    gh_list_remove(&h2->dirty);
    h2->queued = 0;
    if (h2->c->state != PX_CONN_CLOSING) flush(h2);
  }
}

/* schedule asks for |h2| to be written at the end of this loop iteration
 * (on_check). Never sends, frees or closes. */
static void schedule(px_h2_t *h2) {
  px_worker_t *w = h2->c->w;
  if (!w->h2_check_on) {
    w->h2_check_on = 1;
    gh_list_init(&w->h2_dirty);
    uv_check_init(&w->loop, &w->h2_check);
    w->h2_check.data = w;
    uv_check_start(&w->h2_check, on_check);
    uv_unref((uv_handle_t *)&w->h2_check);
  }
  if (h2->queued) return;
  h2->queued = 1;
  gh_list_insert(&w->h2_dirty, &h2->dirty);
}

static void arm_timer(px_h2_t *h2) {
  px_conn_t *c = h2->c;
  const conf_timeouts_t *t = &conf_of(h2)->timeouts;
  uint64_t now = now_of(h2), due;
  if (h2->num_streams == 0) {
    due = h2->idle_mark + t->idle_ms;
    h2->sweep_due = 0;
  } else {
    if (h2->sweep_due <= now) h2->sweep_due = now + SWEEP_MS;
    due = h2->sweep_due;
  }
  if (px_conn_write_queue(c) > 0) {
    if (h2->send_mark == 0) h2->send_mark = now;
    uint64_t send_due = h2->send_mark + t->client_send_ms;
    if (send_due < due) due = send_due;
  } else {
    h2->send_mark = 0;
  }
  px_conn_set_timer(c, due > now ? due - now : 1);
}

static nghttp2_session_callbacks *cbs;
static pthread_once_t cbs_once = PTHREAD_ONCE_INIT;

static void cbs_init(void) {
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_invalid_header_callback(cbs, on_invalid_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
}

void px_h2_start(px_conn_t *c) {
  const conf_t *conf = c->w->gen->conf;
  const conf_http2_t *hc = &conf->http2;
  pthread_once(&cbs_once, cbs_init);
  px_h2_t *h2 = gh_calloc(1, sizeof(*h2));
  h2->c = c;
  gh_list_init(&h2->streams);
  h2->idle_mark = px_now(&c->w->loop);
  c->h2 = h2;
  PX_STAT_ADD(c->w->stats.h2_conns, 1);
  nghttp2_option *opt;
  nghttp2_option_new(&opt);
  /* Windows move with back-pressure (h2.h), not when bytes arrive. */
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_max_deflate_dynamic_table_size(opt, hc->hpack_table_bytes);
  nghttp2_option_set_max_continuations(opt, hc->max_continuations);
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  nghttp2_option_set_max_settings(opt, 32);
  /* Our own bucket answers first (ENHANCE_YOUR_CALM); nghttp2's, twice as
   * wide, is a backstop. */
  uint64_t per_s = hc->max_resets.per_ms ? hc->max_resets.count * 1000ull / hc->max_resets.per_ms : 0;
  nghttp2_option_set_stream_reset_rate_limit(opt, 2ull * hc->max_resets.count + 1, 2 * per_s + 1);
  nghttp2_mem mem = px_h2_worker_mem(c->w);
  int rc = nghttp2_session_server_new3(&h2->session, cbs, h2, opt, &mem);
  nghttp2_option_del(opt);
  if (rc != 0) {
    GH_ERROR("http2", "nghttp2_session_server_new3: %s", nghttp2_strerror(rc));
    px_conn_close(c);
    return;
  }
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, hc->max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)hc->stream_window_bytes},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)hc->max_header_list_bytes},
      {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, (uint32_t)hc->hpack_table_bytes},
      {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
  };
  nghttp2_submit_settings(h2->session, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
  nghttp2_session_set_local_window_size(h2->session, NGHTTP2_FLAG_NONE, 0,
                                        (int32_t)hc->connection_window_bytes);
  if (c->w->draining) {
    h2->goaway = 1;
    nghttp2_submit_goaway(h2->session, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
  }
  flush(h2);
}

void px_h2_on_bytes(px_conn_t *c, const char *data, size_t len) {
  px_h2_t *h2 = c->h2;
  if (c->state == PX_CONN_CLOSING || h2->fatal) return;
  ssize_t n = nghttp2_session_mem_recv(h2->session, (const uint8_t *)data, len);
  if (n < 0) {
    GH_DEBUG("http2", "%s: %s", c->client_ip, nghttp2_strerror((int)n));
    if (n == NGHTTP2_ERR_FLOODED) calm(h2, "flood");
    if (n == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS) calm(h2, "CONTINUATION flood");
    h2->fatal = 1;
  }
  schedule(h2);
  /* A client that sends but does not read stops being read. */
  if (c->state != PX_CONN_CLOSING && px_conn_write_queue(c) > 4 * conf_of(h2)->limits.write_queue_bytes)
    px_conn_read_stop(c);
}

void px_h2_on_written(px_conn_t *c) {
  px_h2_t *h2 = c->h2;
  size_t queued = px_conn_write_queue(c);
  h2->send_mark = queued ? now_of(h2) : 0;
  if (queued <= conf_of(h2)->limits.write_queue_bytes) {
    px_conn_read_start(c);
    /* Streams held back by the write queue may read their upstream again. */
    for (gh_link_t *l = h2->streams.next; l != &h2->streams; l = l->next) {
      px_h2_stream_t *s = GH_CONTAINER_OF(l, px_h2_stream_t, link);
      if (s->ex && s->ex->up_paused && pending(s) < conf_of(h2)->limits.write_queue_bytes)
        px_ex_client_drained(s->ex);
    }
  }
  schedule(h2);
}

/* sweep checks each stream's timeouts. */
static void sweep(px_h2_t *h2, uint64_t now) {
  const conf_timeouts_t *t = &conf_of(h2)->timeouts;
  for (gh_link_t *l = h2->streams.next, *next; l != &h2->streams; l = next) {
    next = l->next;
    px_h2_stream_t *s = GH_CONTAINER_OF(l, px_h2_stream_t, link);
    px_exchange_t *ex = s->ex;
    if (!s->head_done) {
      if (now >= s->read_mark + t->header_read_ms) {
        /* A header block never finished blocks the whole connection. */
        GH_DEBUG("http2", "%s: header block not finished in time", h2->c->client_ip);
        nghttp2_session_terminate_session(h2->session, NGHTTP2_PROTOCOL_ERROR);
        h2->fatal = 1;
        return;
      }
      continue;
    }
    if (s->reset || ex == NULL) continue;
    if (s->data_mark && now >= s->data_mark + t->client_send_ms) {
      GH_DEBUG("http2", "%s: stream %d: client not taking the response", h2->c->client_ip, s->id);
      if (nghttp2_session_get_remote_window_size(h2->session) <= 0) {
        /* The whole connection is held at zero. */
        nghttp2_session_terminate_session(h2->session, NGHTTP2_FLOW_CONTROL_ERROR);
        h2->fatal = 1;
        return;
      }
      reset(s, NGHTTP2_CANCEL);
      if (!finished(ex)) px_ex_client_gone(ex);
      continue;
    }
    if (finished(ex)) continue;
    if (s->tunnel) {
      if (now >= s->read_mark + t->tunnel_idle_ms) {
        reset(s, NGHTTP2_CANCEL);
        px_ex_client_gone(ex);
      }
    } else if (!s->req_end && !s->paused && now >= s->read_mark + t->client_body_ms) {
      /* After the 408's END_STREAM, on_frame_send resets the stream. */
      refuse(s, 408, "request body timeout");
    }
  }
}

void px_h2_on_timeout(px_conn_t *c) {
  px_h2_t *h2 = c->h2;
  const conf_timeouts_t *t = &conf_of(h2)->timeouts;
  uint64_t now = now_of(h2);
  if (h2->send_mark && now >= h2->send_mark + t->client_send_ms) {
    GH_DEBUG("http2", "%s: client not reading", c->client_ip);
    px_conn_close(c);
    return;
  }
  if (h2->num_streams == 0) {
    if (now >= h2->idle_mark + t->idle_ms) {
      GH_DEBUG("http2", "%s: idle timeout", c->client_ip);
      h2->goaway = 1;
      nghttp2_submit_goaway(h2->session, NGHTTP2_FLAG_NONE,
                            nghttp2_session_get_last_proc_stream_id(h2->session), NGHTTP2_NO_ERROR,
                            NULL, 0);
    }
  } else if (now >= h2->sweep_due) {
    h2->sweep_due = 0;
    sweep(h2, now);
  }
  flush(h2);
}

void px_h2_closing(px_conn_t *c) {
  px_h2_t *h2 = c->h2;
  for (gh_link_t *l = h2->streams.next; l != &h2->streams; l = l->next) {
    px_h2_stream_t *s = GH_CONTAINER_OF(l, px_h2_stream_t, link);
    if (s->ex == NULL) continue;
    log_stream(s, NGHTTP2_CANCEL);
    px_ex_client_gone(s->ex);
  }
}

void px_h2_freed(px_conn_t *c) {
  px_h2_t *h2 = c->h2;
  if (h2 == NULL) return;
  while (!gh_list_empty(&h2->streams)) {
    px_h2_stream_t *s = GH_CONTAINER_OF(h2->streams.next, px_h2_stream_t, link);
    stream_free(s);
  }
  if (h2->queued) gh_list_remove(&h2->dirty);
  nghttp2_session_del(h2->session);
  px_buf_free(&h2->names);
  gh_free(h2);
  c->h2 = NULL;
}

void px_h2_drain(px_conn_t *c) {
  px_h2_t *h2 = c->h2;
  if (h2->goaway) return;
  h2->goaway = 1;
  nghttp2_submit_goaway(h2->session, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(h2->session), NGHTTP2_NO_ERROR, NULL, 0);
  flush(h2);
}
