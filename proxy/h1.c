/* h1.c: HTTP/1.1 toward clients (see h1.h).
 *
 * Accepted requests: origin-form and absolute-form targets (and "*" for
 * OPTIONS), HTTP/1.0 and 1.1, one Host (required in 1.1), Content-Length or
 * a final chunked Transfer-Encoding (never both; chunked only in 1.1). */
#include <stdio.h>

#include "common/log.h"
#include "proxy/conn.h"
#include "proxy/upstream.h"

enum { SC_START, SC_START_CR, SC_LINE, SC_CR, SC_LF, SC_LFCR, SC_DONE };

/* After an answer, what the client still sends is dropped up to this much
 * while it keeps sending (a pause of LINGER_IDLE_MS ends it) for at most
 * LINGER_MAX_MS, as nginx's lingering close, then the connection closes. */
#define LINGER_BYTES (64ull << 20)
#define LINGER_IDLE_MS 5000
#define LINGER_MAX_MS 30000

static const px_stream_ops_t h1_ops;

static const conf_t *conf_of(px_conn_t *c) { return c->w->gen->conf; }
static uint64_t now_of(px_conn_t *c) { return px_now(&c->w->loop); }
static px_conn_t *conn_of_ex(px_exchange_t *ex) { return ex->stream; }

static void run(px_conn_t *c, const char *data, size_t len);
static void end_exchange(px_conn_t *c);
static void arm_timer(px_conn_t *c);

static px_exchange_t *new_exchange(px_conn_t *c) {
  px_exchange_t *ex = px_ex_new(c->w, &h1_ops, c);
  ex->conn = c;
  ex->client_ip = c->client_ip;
  ex->trusted_proxy = px_conn_trusted_proxy(c);
  ex->peer = &c->peer;
  ex->is_tls = c->is_tls;
  ex->http_major = 1;
  return ex;
}

/* ---- local responses ---- */

/* respond sends a complete response generated here (errors, redirects,
 * HTTP-01 answers). |extra| holds whole header lines or is NULL. Without
 * |keep|, the response says Connection: close. */
static void respond(px_conn_t *c, int status, gh_str_t extra, const char *body, int keep) {
  px_buf_t b = {0};
  size_t body_len = body ? strlen(body) : 0;
  px_buf_appendf(&b, "HTTP/1.1 %d %s\r\n", status, px_reason(status));
  px_buf_append(&b, extra.ptr, extra.len);
  px_buf_appendf(&b, "Content-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n", body_len,
                 keep ? "" : "Connection: close\r\n");
  px_exchange_t *ex = c->ex;
  if (body_len && !(ex && ex->method_known && ex->method == HTTP_HEAD))
    px_buf_append(&b, body, body_len);
  px_conn_send(c, b.p, b.len);
  px_buf_free(&b);
  if (!keep) c->h1.close_after = 1;
  if (ex) {
    ex->status = status;
    ex->resp_bytes = body_len;
    ex->resp_head_sent = 1;
  }
}

/* reject answers |status| to a request that cannot go on, ends its
 * exchange and closes the connection (lingering: the rest of the request
 * may still be on its way). May close. */
static void reject(px_conn_t *c, int status, const char *why) {
  if (c->state == PX_CONN_CLOSING) return;
  GH_DEBUG("http", "%s: %d: %s", c->client_ip, status, why);
  if (c->ex == NULL) c->ex = new_exchange(c);
  px_exchange_t *ex = c->ex;
  if (ex->resp_head_sent) { /* too late for an answer: reset */
    px_conn_close(c);
    return;
  }
  char body[64];
  snprintf(body, sizeof(body), "%d %s\n", status, px_reason(status));
  respond(c, status, (gh_str_t){NULL, 0}, body, 0);
  px_ex_local(ex, status);
  end_exchange(c);
}

/* ---- head scanner ---- */

/* scan_head checks the raw bytes of a request head; returns the number of
 * bytes that belong to the head (all of |len| while it is incomplete), or
 * -1 with the rejection recorded. */
static int scan_head(px_conn_t *c, const char *p, size_t len) {
  px_h1_t *h = &c->h1;
  size_t max = conf_of(c)->limits.max_header_bytes;
  for (size_t i = 0; i < len; i++) {
    char ch = p[i];
    switch (h->scan_state) {
      case SC_START:
        if (ch == '\r') { h->scan_state = SC_START_CR; continue; }
        if (ch == '\n') goto bare_lf;
        h->scan_state = SC_LINE;
        break;
      case SC_START_CR:
        if (ch != '\n') goto bare_cr;
        h->scan_state = SC_START;
        continue;
      case SC_LINE:
        if (ch == '\r') h->scan_state = SC_CR;
        else if (ch == '\n') goto bare_lf;
        break;
      case SC_CR:
        if (ch != '\n') goto bare_cr;
        h->scan_state = SC_LF;
        break;
      case SC_LF:
        if (ch == '\r') h->scan_state = SC_LFCR;
        else if (ch == ' ' || ch == '\t') {
          h->reject_status = 400, h->reject_why = "obsolete line folding in header";
          return -1;
        } else if (ch == '\n') goto bare_lf;
        else h->scan_state = SC_LINE;
        break;
      case SC_LFCR:
        if (ch != '\n') goto bare_cr;
        h->scan_state = SC_DONE;
        h->head_bytes++;
        return (int)(i + 1);
      default:
        return (int)i;
    }
    if (++h->head_bytes > max) {
      h->reject_status = 431, h->reject_why = "request head too large";
      return -1;
    }
  }
  return (int)len;
bare_lf:
  h->reject_status = 400, h->reject_why = "bare LF in request head";
  return -1;
bare_cr:
  h->reject_status = 400, h->reject_why = "bare CR in request head";
  return -1;
}

/* ---- llhttp callbacks (request heads) ---- */

static px_conn_t *conn_of(llhttp_t *p) { return p->data; }

/* fail records a rejection found inside a parser callback; head_step
 * answers it once llhttp_execute has returned. */
static int fail(px_conn_t *c, int status, const char *why) {
  c->h1.reject_status = status;
  c->h1.reject_why = why;
  return -1;
}

static int on_message_begin(llhttp_t *p) {
  px_conn_t *c = conn_of(p);
  if (c->ex == NULL) c->ex = new_exchange(c);
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  px_conn_t *c = conn_of(p);
  px_exchange_t *ex = c->ex;
  if (ex->url_len + len > conf_of(c)->limits.max_uri_bytes)
    return fail(c, 414, "request target too long");
  /* llhttp (outside its strict mode) lets TAB and FF through in a target;
   * RFC 9112 3.2 allows no whitespace or control character there, and the
   * target goes upstream and into redirects as it is. */
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)at[i];
    if (ch < 0x20 || ch == 0x7f) return fail(c, 400, "control character in request target");
  }
  px_hdrs_raw(&ex->req, at, len);
  ex->url_len += len;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  px_conn_t *c = conn_of(p);
  px_hdrs_t *hs = &c->ex->req;
  size_t before = hs->num;
  px_hdrs_name(hs, at, len);
  if (hs->num != before && hs->num > conf_of(c)->limits.max_headers)
    return fail(c, 431, "too many header fields");
  return 0;
}

static int on_header_field_complete(llhttp_t *p) {
  conn_of(p)->ex->req.in_value = 1;
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  px_hdrs_value(&conn_of(p)->ex->req, at, len);
  return 0;
}

static int valid_token(gh_str_t s) {
  if (s.len == 0) return 0;
  for (size_t i = 0; i < s.len; i++) {
    if (!px_is_tchar((unsigned char)s.ptr[i])) return 0;
  }
  return 1;
}

static int on_headers_complete(llhttp_t *p) {
  px_conn_t *c = conn_of(p);
  px_exchange_t *ex = c->ex;
  px_hdrs_t *hs = &ex->req;
  ex->method = p->method;
  ex->method_known = 1;
  ex->http_minor = p->http_minor;
  c->h1.scan_state = SC_DONE;
  if (p->http_major != 1 || p->http_minor > 1) return fail(c, 505, "unsupported HTTP version");
  gh_str_t host = {NULL, 0};
  int num_host = 0, has_te = 0;
  for (size_t i = 0; i < hs->num; i++) {
    gh_str_t name = px_hdr_name(hs, i);
    if (!valid_token(name)) return fail(c, 400, "invalid header name");
    if (gh_str_ieq(name, GH_STR("host"))) {
      host = px_hdr_value(hs, i);
      num_host++;
    } else if (gh_str_ieq(name, GH_STR("transfer-encoding"))) {
      has_te = 1;
    }
  }
  /* RFC 9112 6.3: a request whose Transfer-Encoding does not end in
   * chunked has no reliable length; neither does one sent by HTTP/1.0. */
  if (has_te && (!(p->flags & F_CHUNKED) || p->http_minor == 0))
    return fail(c, 400, "Transfer-Encoding without final chunked");
  if (num_host > 1) return fail(c, 400, "more than one Host header");
  if (num_host == 0 && p->http_minor == 1) return fail(c, 400, "missing Host header");
  if (num_host && !px_valid_host(host)) return fail(c, 400, "invalid Host header");
  if (p->method == HTTP_CONNECT) return fail(c, 405, "CONNECT is not supported");
  gh_str_t target = {hs->buf, ex->url_len};
  /* Absolute-form (RFC 9112 3.2.2): the authority in the target wins. */
  if (target.len > 8 && (gh_str_ieq((gh_str_t){target.ptr, 7}, GH_STR("http://")) ||
                         gh_str_ieq((gh_str_t){target.ptr, 8}, GH_STR("https://")))) {
    const char *auth = (const char *)memchr(target.ptr, '/', target.len) + 2;
    const char *end = target.ptr + target.len;
    const char *slash = memchr(auth, '/', (size_t)(end - auth));
    host = (gh_str_t){auth, (size_t)((slash ? slash : end) - auth)};
    if (!px_valid_host(host)) return fail(c, 400, "invalid authority in request target");
    target = slash ? (gh_str_t){slash, (size_t)(end - slash)} : GH_STR("/");
  } else if (!(target.len && (target.ptr[0] == '/' || (target.len == 1 && target.ptr[0] == '*' &&
                                                       p->method == HTTP_OPTIONS)))) {
    return fail(c, 400, "invalid request target");
  }
  /* Framing, from the parser's state (it refuses Content-Length with
   * Transfer-Encoding, and duplicate or bad lengths). */
  if (p->flags & F_CHUNKED) {
    ex->req_framing = PX_BODY_CHUNKED;
  } else if (p->flags & F_CONTENT_LENGTH) {
    ex->req_framing = PX_BODY_LENGTH;
    ex->req_len = p->content_length;
  } else {
    ex->req_framing = PX_BODY_NONE;
  }
  ex->upgrade = p->upgrade;
  ex->client_keepalive = llhttp_should_keep_alive(p);
  /* Where host and target are, for head_done: offsets stay valid, as
   * nothing is appended to req.buf after the head. */
  px_h1_t *h = &c->h1;
  h->host_off = host.ptr ? (size_t)(host.ptr - hs->buf) : 0;
  h->host_len = host.len;
  h->target_off = target.ptr >= hs->buf && target.ptr < hs->buf + hs->len
                      ? (size_t)(target.ptr - hs->buf)
                      : SIZE_MAX;
  h->target_len = target.len;
  return HPE_PAUSED; /* the body is ours */
}

void px_h1_init_settings(px_worker_t *w) {
  llhttp_settings_t *s = &w->req_settings;
  llhttp_settings_init(s);
  s->on_message_begin = on_message_begin;
  s->on_url = on_url;
  s->on_header_field = on_header_field;
  s->on_header_field_complete = on_header_field_complete;
  s->on_header_value = on_header_value;
  s->on_headers_complete = on_headers_complete;
}

/* ---- the response, as the exchange hands it over (h1_ops) ---- */

static void send_status_line(px_conn_t *c, px_exchange_t *ex) {
  /* "HTTP/1.1 NNN reason\r\n"; llhttp guarantees a 3-digit status and
   * uph1.c caps the reason. */
  char line[16];
  int status = ex->resp_status;
  memcpy(line, "HTTP/1.1 ", 9);
  line[9] = (char)('0' + status / 100 % 10);
  line[10] = (char)('0' + status / 10 % 10);
  line[11] = (char)('0' + status % 10);
  line[12] = ' ';
  px_conn_send(c, line, 13);
  px_conn_send(c, ex->resp.buf, ex->status_len);
  px_conn_send(c, "\r\n", 2);
}

static void send_fields(px_conn_t *c, const px_hdrs_t *hs, int skip_hop) {
  for (size_t i = 0; i < hs->num; i++) {
    gh_str_t n = px_hdr_name(hs, i), v = px_hdr_value(hs, i);
    if (skip_hop && px_hop_by_hop(hs, n)) continue;
    px_conn_send(c, n.ptr, n.len);
    px_conn_send(c, ": ", 2);
    px_conn_send(c, v.ptr, v.len);
    px_conn_send(c, "\r\n", 2);
  }
}

static void h1_interim(px_exchange_t *ex) {
  px_conn_t *c = conn_of_ex(ex);
  /* 100 Continue and 103 Early Hints go through as is to 1.1 clients. */
  if (ex->http_minor < 1) return;
  send_status_line(c, ex);
  send_fields(c, &ex->resp, 1);
  px_conn_send(c, "\r\n", 2);
}

static void h1_head(px_exchange_t *ex) {
  px_conn_t *c = conn_of_ex(ex);
  px_h1_t *h = &c->h1;
  /* An answer before the whole request arrived ends the connection: the
   * rest of the body is read and dropped, never parsed as a request. */
  int keep = ex->client_keepalive && !h->close_after && !c->w->draining && ex->req_done;
  send_status_line(c, ex);
  send_fields(c, &ex->resp, 1);
  h->resp_chunked = 0;
  char num[24];
  switch (ex->resp_framing) {
    case PX_BODY_LENGTH:
      px_conn_send(c, "Content-Length: ", 16);
      px_conn_send(c, num, px_u64_text(num, ex->resp_len));
      px_conn_send(c, "\r\n", 2);
      break;
    case PX_BODY_CHUNKED:
    case PX_BODY_CLOSE:
      if (ex->http_minor >= 1) {
        px_conn_send(c, "Transfer-Encoding: chunked\r\n", 28);
        h->resp_chunked = ex->state == PX_EX_BODY && ex->method != HTTP_HEAD &&
                          ex->resp_status != 304;
      } else {
        keep = 0; /* HTTP/1.0: the body ends when the connection does */
      }
      break;
    case PX_BODY_NONE:
      break;
  }
  if (ex->site && ex->site->hsts_header &&
      !px_hdrs_has(&ex->resp, GH_STR("strict-transport-security")))
    px_conn_send(c, ex->site->hsts_header, strlen(ex->site->hsts_header));
  if (!keep) {
    h->close_after = 1;
    px_conn_send(c, "Connection: close\r\n", 19);
  } else if (ex->http_minor == 0) {
    px_conn_send(c, "Connection: keep-alive\r\n", 24);
  }
  px_conn_send(c, "\r\n", 2);
}

static void h1_body(px_exchange_t *ex, const char *p, size_t len) {
  px_conn_t *c = conn_of_ex(ex);
  if (c->h1.resp_chunked) {
    char size[24];
    px_conn_send(c, size, px_chunk_head(size, len));
    px_conn_send(c, p, len);
    px_conn_send(c, "\r\n", 2);
  } else {
    px_conn_send(c, p, len);
  }
}

static void h1_end(px_exchange_t *ex) {
  px_conn_t *c = conn_of_ex(ex);
  if (!c->h1.resp_chunked) return;
  px_conn_send(c, "0\r\n", 3);
  send_fields(c, &ex->resp_tr, 1);
  px_conn_send(c, "\r\n", 2);
}

static void h1_tunnel(px_exchange_t *ex, const char *p, size_t len) {
  px_conn_t *c = conn_of_ex(ex);
  send_status_line(c, ex);
  send_fields(c, &ex->resp, 1);
  gh_str_t v = px_hdrs_get(&ex->resp, GH_STR("upgrade"));
  if (v.ptr) {
    px_conn_send(c, "Connection: upgrade\r\nUpgrade: ", 30);
    px_conn_send(c, v.ptr, v.len);
    px_conn_send(c, "\r\n", 2);
  }
  px_conn_send(c, "\r\n", 2);
  px_conn_send(c, p, len);
  c->h1.phase = PX_H1_TUNNEL;
  c->h1.read_mark = now_of(c);
}

static void h1_tunnel_data(px_exchange_t *ex, const char *p, size_t len) {
  px_conn_t *c = conn_of_ex(ex);
  px_conn_send(c, p, len);
  c->h1.read_mark = now_of(c);
}

static void h1_error(px_exchange_t *ex, int status, const char *why) {
  px_conn_t *c = conn_of_ex(ex);
  GH_DEBUG("http", "%s: %d: %s", c->client_ip, status, why);
  if (ex->grpc) { /* a gRPC status, in the head (a trailers-only response) */
    char msg[256], extra[512];
    px_grpc_message(msg, sizeof(msg), status, why);
    int n = snprintf(extra, sizeof(extra), "Content-Type: application/grpc\r\nGrpc-Status: %d\r\n"
                     "Grpc-Message: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                     px_grpc_status(status), msg);
    px_conn_send(c, "HTTP/1.1 200 OK\r\n", 17);
    px_conn_send(c, extra, (size_t)n);
    c->h1.close_after = 1;
    ex->status = status;
    ex->resp_head_sent = 1;
    return;
  }
  char body[64];
  snprintf(body, sizeof(body), "%d %s\n", status, px_reason(status));
  respond(c, status, (gh_str_t){NULL, 0}, body, 0);
}

static void h1_want_body(px_exchange_t *ex) {
  px_conn_t *c = conn_of_ex(ex);
  c->h1.client_paused = 0;
}

static size_t h1_queued(px_exchange_t *ex) { return px_conn_write_queue(conn_of_ex(ex)); }

/* h1_settle is the last call of every exchange event: write what it
 * queued, end the exchange if it finished, and go on reading the client
 * if it was waiting for the upstream. May close and free. */
static void h1_settle(px_exchange_t *ex) {
  px_conn_t *c = conn_of_ex(ex);
  if (c->state == PX_CONN_CLOSING) return; /* the close callback frees |ex| */
  if (px_conn_flush(c) != 0) return;
  if (ex->state == PX_EX_DONE || ex->state == PX_EX_ABORTED) {
    end_exchange(c);
    return;
  }
  if (!c->h1.client_paused) run(c, NULL, 0);
  else arm_timer(c);
  if (c->state != PX_CONN_CLOSING) px_conn_flush(c);
}

static const px_stream_ops_t h1_ops = {
    .interim = h1_interim,
    .head = h1_head,
    .body = h1_body,
    .end = h1_end,
    .tunnel = h1_tunnel,
    .tunnel_data = h1_tunnel_data,
    .error = h1_error,
    .want_body = h1_want_body,
    .queued = h1_queued,
    .settle = h1_settle,
};

/* ---- driving the connection ---- */

static void start_head(px_conn_t *c, uint64_t timeout_ms) {
  px_h1_t *h = &c->h1;
  h->phase = PX_H1_HEAD;
  h->head_started = 0;
  h->head_bytes = 0;
  h->scan_state = SC_START;
  h->reject_status = 0;
  h->reject_why = NULL;
  h->body_bytes = 0;
  h->send_mark = 0;
  llhttp_reset(&h->parser);
  px_conn_set_timer(c, timeout_ms);
}

void px_h1_start(px_conn_t *c) {
  llhttp_init(&c->h1.parser, HTTP_REQUEST, &c->w->req_settings);
  c->h1.parser.data = c;
  /* The first request must arrive within the header timeout. */
  start_head(c, conf_of(c)->timeouts.header_read_ms);
  c->h1.head_started = 1;
}

/* linger_due: when lingering ends, once the answer is out. */
static uint64_t linger_due(const px_h1_t *h) {
  uint64_t idle = h->read_mark + LINGER_IDLE_MS, max = h->linger_start + LINGER_MAX_MS;
  return idle < max ? idle : max;
}

/* arm_timer sets the connection's deadline for what it waits on now:
 * the request body (client_body, unless we hold the client back), the
 * client taking queued bytes (client_send), or a quiet tunnel. */
static void arm_timer(px_conn_t *c) {
  px_h1_t *h = &c->h1;
  const conf_timeouts_t *t = &conf_of(c)->timeouts;
  if (c->state == PX_CONN_CLOSING || h->phase == PX_H1_HEAD) return;
  uint64_t now = now_of(c), due = UINT64_MAX;
  if (h->phase == PX_H1_TUNNEL) {
    due = h->read_mark + t->tunnel_idle_ms;
  } else {
    if (h->phase == PX_H1_BODY && !h->client_paused) due = h->read_mark + t->client_body_ms;
    if (px_conn_write_queue(c) > 0) {
      if (h->send_mark == 0) h->send_mark = now;
      uint64_t send_due = h->send_mark + t->client_send_ms;
      if (send_due < due) due = send_due;
    } else {
      h->send_mark = 0;
      /* Lingering starts once the answer is out (read_mark: then). */
      if (h->phase == PX_H1_LINGER) due = linger_due(h);
    }
  }
  px_conn_set_timer(c, due == UINT64_MAX ? 0 : due > now ? due - now : 1);
}

/* end_exchange ends the current exchange: log it, free it, and either
 * close the connection or get ready for the next request. Called only at
 * the top of an event (run's caller, or h1_settle). May close. */
static void end_exchange(px_conn_t *c) {
  px_h1_t *h = &c->h1;
  px_exchange_t *ex = c->ex;
  int aborted = ex->state == PX_EX_ABORTED;
  if (ex->status > 0) {
    px_access_log(ex);
    unsigned cls = ex->status >= 100 && ex->status < 600 ? (unsigned)ex->status / 100 : 0;
    PX_STAT_ADD(c->w->stats.requests[ex->up_slot][cls], 1);
    PX_STAT_ADD(c->w->stats.requests_by_proto[0][cls], 1);
  }
  int unread = h->phase == PX_H1_BODY || h->phase == PX_H1_HEAD;
  int keep = !aborted && !unread && ex->client_keepalive && !h->close_after && !c->w->draining &&
             !(ex->upgrade && ex->status != 101) && h->phase == PX_H1_WAIT;
  c->ex = NULL;
  px_ex_free(ex);
  c->requests++;
  if (aborted) { /* the response was cut: the client must see a reset */
    px_conn_close(c);
    return;
  }
  h->client_paused = 0;
  if (!keep) {
    h->phase = PX_H1_LINGER;
    h->linger_bytes = 0;
    h->read_mark = h->linger_start = now_of(c);
    px_conn_finish(c, unread || h->pending.len > 0);
    arm_timer(c);
    return;
  }
  start_head(c, conf_of(c)->timeouts.idle_ms);
  px_conn_read_start(c);
  run(c, NULL, 0);
  if (c->state != PX_CONN_CLOSING) px_conn_flush(c);
}

/* head_done acts on a complete request head: answer it here, or route it
 * and start its exchange. May close. */
static void head_done(px_conn_t *c) {
  px_h1_t *h = &c->h1;
  px_exchange_t *ex = c->ex;
  gh_str_t host = {ex->req.buf + h->host_off, h->host_len};
  gh_str_t target = h->target_off == SIZE_MAX ? GH_STR("/")
                                              : (gh_str_t){ex->req.buf + h->target_off, h->target_len};
  int has_body = ex->req_framing == PX_BODY_CHUNKED ||
                 (ex->req_framing == PX_BODY_LENGTH && ex->req_len > 0);
  h->read_mark = now_of(c);
  px_conn_set_timer(c, 0);
  if (!c->is_tls) {
    /* The plain listener: HTTP-01 answers (RFC 8555 8.3) and a 308 to
     * https for everything else. A body is never wanted here. */
    static const char acme_prefix[] = "/.well-known/acme-challenge/";
    int keep = ex->client_keepalive && !has_body && !c->w->draining;
    h->phase = has_body ? PX_H1_BODY : PX_H1_WAIT;
    if (target.len >= sizeof(acme_prefix) - 1 &&
        memcmp(target.ptr, acme_prefix, sizeof(acme_prefix) - 1) == 0) {
      const char *token = target.ptr + sizeof(acme_prefix) - 1;
      size_t token_len = target.len - (sizeof(acme_prefix) - 1);
      ex->http01_answer = token_len && ex->gen->challenges
                              ? acme_challenges_get_http01(ex->gen->challenges, token, token_len)
                              : NULL;
      if (ex->http01_answer) {
        GH_INFO("acme", "%s: served an http-01 challenge", c->client_ip);
        respond(c, 200, (gh_str_t){NULL, 0}, ex->http01_answer, keep);
      } else {
        respond(c, 404, (gh_str_t){NULL, 0}, "404 Not Found\n", keep);
      }
    } else if (host.len == 0) {
      reject(c, 400, "missing Host");
      return;
    } else {
      gh_str_t name = px_host_no_port(host);
      px_buf_t loc = {0};
      px_buf_append(&loc, "Location: https://", 18);
      px_buf_append(&loc, name.ptr, name.len);
      px_buf_append(&loc, ex->gen->https_port_suffix, strlen(ex->gen->https_port_suffix));
      /* llhttp lets control and non-ASCII bytes through in a target: they
       * are percent-encoded, never copied into a header value. */
      static const char hex[] = "0123456789ABCDEF";
      for (size_t i = 0; i < target.len; i++) {
        unsigned char ch = (unsigned char)target.ptr[i];
        if (ch > 0x20 && ch < 0x7f) {
          px_buf_append(&loc, &target.ptr[i], 1);
        } else {
          char esc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
          px_buf_append(&loc, esc, 3);
        }
      }
      px_buf_append(&loc, "\r\n", 2);
      ex->host = gh_strndup(name.ptr, name.len);
      respond(c, 308, (gh_str_t){loc.p, loc.len}, "", keep);
      px_buf_free(&loc);
    }
    ex->req_done = !has_body;
    px_ex_local(ex, ex->status);
    end_exchange(c);
    return;
  }
  /* Host without port, lower-case, for routing and the access log. */
  ex->site = px_gen_site(ex->gen, host.ptr, host.len);
  gh_free(ex->host);
  ex->host = px_host_text(host);
  if (ex->site == NULL) {
    reject(c, 421, "no site for this host");
    return;
  }
  if (!px_ccert_allows(ex->peer, ex->site->client_auth)) {
    reject(c, 421, "client certificate not checked for this host's site");
    return;
  }
  uint64_t max_body = ex->site->conf->max_body;
  if (max_body && ex->req_framing == PX_BODY_LENGTH && ex->req_len > max_body) {
    reject(c, 413, "request body larger than max_body");
    return;
  }
  ex->group = px_site_route(ex->site, target.ptr, target.len);
  px_uph1_build_head(ex, host, target);
  if (has_body) {
    h->phase = PX_H1_BODY;
    h->body_left = ex->req_len;
    h->body_bytes = 0;
    if (ex->req_framing == PX_BODY_CHUNKED) px_chunked_init(&h->ck);
  } else {
    h->phase = PX_H1_WAIT;
    ex->req_done = 1;
  }
  px_ex_start(ex);
  if (ex->state == PX_EX_DONE || ex->state == PX_EX_ABORTED) end_exchange(c);
}

/* head_step feeds head bytes to the scanner and llhttp. Returns the bytes
 * used. May close. */
static size_t head_step(px_conn_t *c, const char *p, size_t len) {
  px_h1_t *h = &c->h1;
  if (!h->head_started) {
    h->head_started = 1;
    px_conn_set_timer(c, conf_of(c)->timeouts.header_read_ms);
  }
  int n = scan_head(c, p, len);
  if (n < 0) {
    reject(c, h->reject_status, h->reject_why);
    return len;
  }
  llhttp_errno_t e = llhttp_execute(&h->parser, p, (size_t)n);
  if (e == HPE_OK) return (size_t)n;
  if (e == HPE_PAUSED && h->reject_status == 0) {
    size_t used = (size_t)(llhttp_get_error_pos(&h->parser) - p);
    head_done(c);
    return used;
  }
  /* A callback's refusal surfaces as HPE_USER or as HPE_CB_*, by callback. */
  if (h->reject_status) reject(c, h->reject_status, h->reject_why);
  else if (e == HPE_INVALID_VERSION) reject(c, 505, "unsupported HTTP version");
  else reject(c, 400, llhttp_get_error_reason(&h->parser));
  return len;
}

/* body_end: the request's last byte arrived. */
static void body_end(px_conn_t *c) {
  px_exchange_t *ex = c->ex;
  c->h1.phase = PX_H1_WAIT;
  px_ex_req_end(ex);
}

/* body_fail refuses a request whose body broke a rule: an answer if none
 * went out yet, else a reset. The upstream is not at fault. May close. */
static void body_fail(px_conn_t *c, int status, const char *why) {
  px_exchange_t *ex = c->ex;
  if (ex->resp_head_sent) {
    GH_DEBUG("http", "%s: %s", c->client_ip, why);
    px_conn_close(c);
    return;
  }
  reject(c, status, why);
}

/* body_step frames request body bytes and forwards them. Returns the bytes
 * used. May close. */
static size_t body_step(px_conn_t *c, const char *p, size_t len) {
  px_h1_t *h = &c->h1;
  px_exchange_t *ex = c->ex;
  h->read_mark = now_of(c);
  if (ex->req_framing == PX_BODY_LENGTH) {
    size_t n = (uint64_t)len < h->body_left ? len : (size_t)h->body_left;
    h->body_left -= n;
    h->body_bytes += n;
    if (px_ex_req_body(ex, p, n)) h->client_paused = 1;
    if (h->body_left == 0) body_end(c);
    return n;
  }
  const char *q = p;
  size_t rem = len;
  while (rem > 0 && !h->client_paused) {
    gh_str_t data = {NULL, 0};
    uint64_t announced = 0;
    px_ck_event_t ev = px_chunked_next(&h->ck, &ex->req_tr, conf_of(c)->limits.max_header_bytes,
                                       &q, &rem, &data, &announced);
    switch (ev) {
      case PX_CK_NEED:
        break;
      case PX_CK_CHUNK: {
        uint64_t max_body = ex->site ? ex->site->conf->max_body : 0; /* none on :80 */
        if (max_body && h->body_bytes + announced > max_body) {
          body_fail(c, 413, "request body larger than max_body");
          return len;
        }
        break;
      }
      case PX_CK_DATA: {
        h->body_bytes += data.len;
        if (px_ex_req_chunk(ex, data.ptr, data.len)) h->client_paused = 1;
        break;
      }
      case PX_CK_DONE: {
        if (px_ex_req_last_chunk(ex)) h->client_paused = 1;
        body_end(c);
        return len - rem;
      }
      case PX_CK_HUGE:
        body_fail(c, 400, "chunk size too large");
        return len;
      case PX_CK_BAD:
        body_fail(c, 400, "invalid chunked body");
        return len;
    }
  }
  return len - rem;
}

/* step handles what |p| holds in the current phase. Returns the bytes
 * used; 0 means the connection cannot take them now. May close. */
static size_t step(px_conn_t *c, const char *p, size_t len) {
  px_h1_t *h = &c->h1;
  switch (h->phase) {
    case PX_H1_HEAD:
      return head_step(c, p, len);
    case PX_H1_BODY: {
      size_t used = body_step(c, p, len);
      /* An answer that finished while the body was coming (an early
       * response) waits for nothing more of the request. */
      if (c->state != PX_CONN_CLOSING && c->ex &&
          (c->ex->state == PX_EX_DONE || c->ex->state == PX_EX_ABORTED))
        end_exchange(c);
      return used;
    }
    case PX_H1_WAIT:
      return 0; /* pipelined: wait for the current response */
    case PX_H1_TUNNEL:
      h->read_mark = now_of(c);
      if (c->ex && px_ex_tunnel_up(c->ex, p, len)) h->client_paused = 1;
      return len;
    case PX_H1_LINGER:
      h->read_mark = now_of(c);
      h->linger_bytes += len;
      if (h->linger_bytes > LINGER_BYTES) px_conn_close(c);
      return len;
  }
  return len;
}

/* run processes whatever is pending and then |data|, in order, for as long
 * as the connection can take it; the rest is kept in |pending| and the
 * client is not read while that holds more than the back-pressure limit.
 * May close. */
static void run(px_conn_t *c, const char *data, size_t len) {
  px_h1_t *h = &c->h1;
  if (h->pending.len && len) {
    px_buf_append(&h->pending, data, len);
    len = 0;
  }
  for (;;) {
    if (c->state == PX_CONN_CLOSING) return;
    if (h->client_paused) break;
    int from_pending = h->pending.len > 0;
    const char *p = from_pending ? h->pending.p : data;
    size_t n = from_pending ? h->pending.len : len;
    if (n == 0) break;
    size_t used = step(c, p, n);
    if (c->state == PX_CONN_CLOSING) return;
    if (from_pending) {
      px_buf_consume(&h->pending, used);
    } else {
      data += used;
      len -= used;
    }
    if (used == 0) break;
  }
  if (len) px_buf_append(&h->pending, data, len);
  if (h->pending.len == 0 && h->pending.cap > 0) px_buf_free(&h->pending);
  if (h->client_paused || h->pending.len > conf_of(c)->limits.write_queue_bytes)
    px_conn_read_stop(c);
  else
    px_conn_read_start(c);
  arm_timer(c);
}

void px_h1_on_bytes(px_conn_t *c, const char *data, size_t len) {
  if (c->state == PX_CONN_CLOSING) return;
  run(c, data, len);
}

void px_h1_on_written(px_conn_t *c) {
  px_h1_t *h = &c->h1;
  size_t queued = px_conn_write_queue(c);
  h->send_mark = queued ? now_of(c) : 0;
  if (h->phase == PX_H1_LINGER && queued == 0) h->read_mark = h->linger_start = now_of(c);
  if (c->ex && queued < conf_of(c)->limits.write_queue_bytes) px_ex_client_drained(c->ex);
  arm_timer(c);
}

void px_h1_on_timeout(px_conn_t *c) {
  px_h1_t *h = &c->h1;
  const conf_timeouts_t *t = &conf_of(c)->timeouts;
  uint64_t now = now_of(c);
  switch (h->phase) {
    case PX_H1_HEAD:
      if (h->head_started && (h->head_bytes > 0 || h->pending.len > 0)) {
        reject(c, 408, "request head not received in time");
      } else {
        GH_DEBUG("http", "%s: idle timeout", c->client_ip);
        px_conn_close(c);
      }
      return;
    case PX_H1_LINGER:
      /* A client still taking the answer keeps it (client_send). */
      if (px_conn_write_queue(c) > 0 && now < h->send_mark + t->client_send_ms) {
        arm_timer(c);
        return;
      }
      if (px_conn_write_queue(c) == 0 && now < linger_due(h)) {
        arm_timer(c);
        return;
      }
      px_conn_close(c);
      return;
    case PX_H1_TUNNEL:
      GH_DEBUG("http", "%s: tunnel idle", c->client_ip);
      px_conn_close(c);
      return;
    case PX_H1_BODY:
    case PX_H1_WAIT:
      break;
  }
  if (h->send_mark && now >= h->send_mark + t->client_send_ms) {
    GH_DEBUG("http", "%s: client not reading the response", c->client_ip);
    px_conn_close(c);
    return;
  }
  if (h->phase == PX_H1_BODY && !h->client_paused && now >= h->read_mark + t->client_body_ms) {
    GH_DEBUG("http", "%s: request body not received in time", c->client_ip);
    body_fail(c, 408, "request body timeout");
    return;
  }
  arm_timer(c);
}

void px_h1_closing(px_conn_t *c) {
  px_exchange_t *ex = c->ex;
  if (ex == NULL) return;
  if (ex->method_known) {
    /* An exchange cut short is logged too. A whole request the client gave
     * up on before any answer is 499, as nginx logs it, so a client (or
     * health probe) timing out is not invisible; a partly sent answer
     * keeps its own status. */
    if (ex->status == 0) ex->status = 499;
    px_access_log(ex);
    unsigned cls = ex->status >= 100 && ex->status < 600 ? (unsigned)ex->status / 100 : 0;
    PX_STAT_ADD(c->w->stats.requests[ex->up_slot][cls], 1);
    PX_STAT_ADD(c->w->stats.requests_by_proto[0][cls], 1);
  }
  px_ex_client_gone(ex);
}

void px_h1_freed(px_conn_t *c) {
  px_ex_free(c->ex);
  c->ex = NULL;
  px_buf_free(&c->h1.pending);
}

void px_h1_drain(px_conn_t *c) {
  px_h1_t *h = &c->h1;
  if (h->phase == PX_H1_HEAD && !h->head_started && h->pending.len == 0 && c->ex == NULL) {
    px_conn_close(c);
    return;
  }
  h->close_after = 1;
}
