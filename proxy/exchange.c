/* exchange.c: the upstream half of a request: pick an upstream, get a
 * connection (idle one first), send the request, parse the response with
 * llhttp and relay it to the client with back-pressure, then return the
 * connection to the pool or close it.
 *
 * Failure handling lives here in one place: a refused or timed-out connect
 * tries the next upstream (each failure marks that upstream down for the
 * group's back-off); a pooled connection that the upstream had already
 * closed is retried once on a fresh one when no body byte has been sent;
 * anything else answers 502 (or 504 for timeouts) if no response byte has
 * reached the client yet, and otherwise aborts the client connection, the
 * only honest signal left. */
#include <stdio.h>

#include "common/log.h"
#include "proxy/internal.h"

static const conf_t *conf_of(px_exchange_t *ex) { return ex->gen->conf; }

static void connect_next(px_exchange_t *ex, px_addr_t *avoid);
static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* ---- failure ---- */

static void detach(px_exchange_t *ex, int reusable) {
  px_upconn_t *u = ex->up;
  if (ex->addr) {
    atomic_fetch_sub(&ex->addr->active, 1);
    ex->addr = NULL;
  }
  if (u == NULL) return;
  ex->up = NULL;
  u->ex = NULL;
  px_upconn_release(u, reusable);
}

static void ex_fail(px_exchange_t *ex, int status, const char *why) {
  px_conn_t *c = ex->conn;
  GH_DEBUG("proxy", "%s: upstream %s: %s", c ? c->client_ip : "-",
           ex->up && ex->up->addr ? ex->up->addr->conf->text : "-", why);
  detach(ex, 0);
  if (c == NULL) return;
  if (ex->resp_head_sent) {
    px_conn_close(c);
  } else {
    GH_WARN("proxy", "%s: answering %d: %s", ex->host ? ex->host : "-", status, why);
    px_http_error(c, status, why);
  }
}

/* ---- sending ---- */

static void send_head(px_exchange_t *ex) {
  px_upconn_t *u = ex->up;
  px_upconn_write(u, ex->up_head.p, ex->up_head.len);
  if (ex->up_out.len) {
    px_upconn_write(u, ex->up_out.p, ex->up_out.len);
    ex->req_body_sent_any = 1;
    px_buf_free(&ex->up_out);
  }
}

void px_ex_send_body(px_exchange_t *ex, const char *p, size_t len) {
  if (ex->up && ex->up->connected) {
    px_upconn_write(ex->up, p, len);
    ex->req_body_sent_any = 1;
  } else {
    px_buf_append(&ex->up_out, p, len);
  }
}

void px_ex_tunnel_client_data(px_exchange_t *ex, const char *p, size_t len) {
  if (ex->up) px_upconn_write(ex->up, p, len);
}

/* ---- timers ---- */

/* unreachable: a connection to |a| could not be made. Back off from the
 * address, and look its name up again: it may have moved. */
static void unreachable(px_worker_t *w, px_gen_t *gen, px_addr_t *a) {
  px_upstream_mark_failed(a);
  px_addr_refresh(w, gen, a, 1);
}

void px_upconn_on_timer(uv_timer_t *t) {
  px_upconn_t *u = t->data;
  if (!px_lazy_expired(t, &u->tl, px_upconn_on_timer)) return;
  px_exchange_t *ex = u->ex;
  if (ex == NULL) { /* idle in the pool too long */
    px_upconn_close(u);
    return;
  }
  if (!u->connected) {
    GH_WARN("proxy", "upstream %s: connect timeout", u->addr->conf->text);
    unreachable(u->w, ex->gen, u->addr);
    px_addr_t *a = u->addr;
    detach(ex, 0);
    connect_next(ex, a);
    return;
  }
  px_upstream_mark_failed(u->addr);
  if (ex->conn && ex->conn->state == PX_CONN_TUNNEL) {
    px_conn_close(ex->conn);
    return;
  }
  ex_fail(ex, 504, "response timeout");
}

static void arm_response_timer(px_upconn_t *u) {
  px_lazy_set(&u->timer, &u->tl, px_upconn_on_timer, conf_of(u->ex)->timeouts.upstream_response_ms);
}

/* ---- connecting ---- */

static void attach(px_exchange_t *ex, px_upconn_t *u) {
  ex->up = u;
  u->ex = ex;
  llhttp_init(&u->parser, HTTP_RESPONSE, &u->w->resp_settings);
  u->parser.data = u;
}

static void on_connect(uv_connect_t *req, int status) {
  px_upconn_t *u = req->data;
  px_exchange_t *ex = u->ex;
  if (status == UV_ECANCELED) return;
  if (ex == NULL) { /* the client left while we were connecting */
    px_upconn_close(u);
    return;
  }
  if (status < 0) {
    GH_WARN("proxy", "upstream %s: connect: %s", u->addr->conf->text, uv_strerror(status));
    unreachable(u->w, ex->gen, u->addr);
    px_addr_t *a = u->addr;
    detach(ex, 0);
    connect_next(ex, a);
    return;
  }
  u->connected = 1;
  uv_tcp_nodelay(&u->tcp, 1);
  uv_read_start((uv_stream_t *)&u->tcp, on_alloc, on_up_read);
  send_head(ex);
  arm_response_timer(u);
}

static void connect_next(px_exchange_t *ex, px_addr_t *avoid) {
  px_group_t *g = ex->group;
  if (g->num_addrs == 0) {
    ex_fail(ex, 502, "no upstream configured");
    return;
  }
  if (ex->tries >= g->num_addrs) {
    ex_fail(ex, 502, "every upstream failed");
    return;
  }
  ex->tries++;
  px_addr_t *a = px_upstream_pick(g, avoid);
  ex->addr = a;
  ex->upstream_name = a->conf->text;
  unsigned slot = atomic_load_explicit(&a->stat_slot, memory_order_relaxed);
  if (slot == 0) {
    slot = px_metrics_upstream_slot(a->conf->text);
    atomic_store_explicit(&a->stat_slot, slot, memory_order_relaxed);
  }
  ex->up_slot = (uint8_t)slot;
  atomic_fetch_add(&a->active, 1);
  px_worker_t *w = ex->conn->w;
  px_upconn_t *u = ex->gen == w->gen ? px_upconn_get_idle(w, a) : NULL;
  if (u) {
    attach(ex, u);
    send_head(ex);
    arm_response_timer(u);
    return;
  }
  px_addr_refresh(w, ex->gen, a, 0);
  u = px_upconn_dial(w, a, on_connect);
  if (u == NULL) {
    unreachable(w, ex->gen, a);
    atomic_fetch_sub(&a->active, 1);
    ex->addr = NULL;
    connect_next(ex, a);
    return;
  }
  u->gen = px_gen_ref(ex->gen);
  attach(ex, u);
  px_lazy_set(&u->timer, &u->tl, px_upconn_on_timer, conf_of(ex)->timeouts.upstream_connect_ms);
}

void px_ex_start(px_exchange_t *ex) { connect_next(ex, NULL); }

/* ---- the response ---- */

static px_exchange_t *ex_of(llhttp_t *p) { return ((px_upconn_t *)p->data)->ex; }

static int r_message_begin(llhttp_t *p) {
  px_exchange_t *ex = ex_of(p);
  px_hdrs_reset(&ex->resp);
  px_hdrs_reset(&ex->resp_tr);
  ex->status_len = 0;
  ex->in_resp_trailers = 0;
  return 0;
}

static int r_status(llhttp_t *p, const char *at, size_t len) {
  px_exchange_t *ex = ex_of(p);
  if (ex->status_len + len > 256) return -1;
  px_hdrs_raw(&ex->resp, at, len);
  ex->status_len += len;
  return 0;
}

static int r_header_field(llhttp_t *p, const char *at, size_t len) {
  px_exchange_t *ex = ex_of(p);
  px_hdrs_t *hs = ex->in_resp_trailers ? &ex->resp_tr : &ex->resp;
  if (hs->len + len > 64 * 1024 || hs->num > 256) return -1;
  px_hdrs_name(hs, at, len);
  return 0;
}

static int r_header_field_complete(llhttp_t *p) {
  px_exchange_t *ex = ex_of(p);
  (ex->in_resp_trailers ? &ex->resp_tr : &ex->resp)->in_value = 1;
  return 0;
}

static int r_header_value(llhttp_t *p, const char *at, size_t len) {
  px_exchange_t *ex = ex_of(p);
  px_hdrs_t *hs = ex->in_resp_trailers ? &ex->resp_tr : &ex->resp;
  if (hs->len + len > 64 * 1024) return -1;
  px_hdrs_value(hs, at, len);
  return 0;
}

static void send_headers(px_conn_t *c, const px_hdrs_t *hs, int skip_hop) {
  for (size_t i = 0; i < hs->num; i++) {
    gh_str_t n = px_hdr_name(hs, i), v = px_hdr_value(hs, i);
    if (skip_hop && px_http_hop_by_hop(hs, n)) continue;
    px_conn_send(c, n.ptr, n.len);
    px_conn_send(c, ": ", 2);
    px_conn_send(c, v.ptr, v.len);
    px_conn_send(c, "\r\n", 2);
  }
}

static int has_header(const px_hdrs_t *hs, gh_str_t name) {
  for (size_t i = 0; i < hs->num; i++) {
    if (gh_str_ieq(px_hdr_name(hs, i), name)) return 1;
  }
  return 0;
}

static int r_headers_complete(llhttp_t *p) {
  px_exchange_t *ex = ex_of(p);
  px_conn_t *c = ex->conn;
  if (c == NULL) return -1;
  int status = p->status_code;
  /* "HTTP/1.1 NNN reason\r\n"; llhttp guarantees a 3-digit status and
   * r_status caps the reason at 256 bytes. */
  char line[320];
  memcpy(line, "HTTP/1.1 ", 9);
  line[9] = (char)('0' + status / 100 % 10);
  line[10] = (char)('0' + status / 10 % 10);
  line[11] = (char)('0' + status % 10);
  line[12] = ' ';
  size_t n = 13;
  if (ex->status_len) memcpy(line + n, ex->resp.buf, ex->status_len);
  n += ex->status_len;
  line[n++] = '\r';
  line[n++] = '\n';
  if (status >= 100 && status < 200 && status != 101) {
    /* Interim responses (100 Continue, 103 Early Hints) go through as is
     * to HTTP/1.1 clients. */
    if (ex->http_minor >= 1) {
      px_conn_send(c, line, n);
      send_headers(c, &ex->resp, 1);
      px_conn_send(c, "\r\n", 2);
    }
    return 0;
  }
  ex->status = status;
  ex->in_resp_trailers = 1;
  if (status == 101) {
    if (!ex->upgrade) return -1;
    px_conn_send(c, line, n);
    send_headers(c, &ex->resp, 1);
    for (size_t i = 0; i < ex->resp.num; i++) {
      if (gh_str_ieq(px_hdr_name(&ex->resp, i), GH_STR("upgrade"))) {
        gh_str_t v = px_hdr_value(&ex->resp, i);
        px_conn_send(c, "Connection: upgrade\r\nUpgrade: ", 30);
        px_conn_send(c, v.ptr, v.len);
        px_conn_send(c, "\r\n", 2);
      }
    }
    px_conn_send(c, "\r\n", 2);
    ex->resp_head_sent = 1;
    return 2;
  }
  int no_body = ex->method == HTTP_HEAD || status == 204 || status == 304;
  int chunked = (p->flags & F_CHUNKED) != 0;
  int has_length = (p->flags & F_CONTENT_LENGTH) != 0;
  int keep = ex->client_keepalive && !c->close_after && !c->w->draining;
  if (!ex->req_done) keep = 0; /* an early response: the rest of the body is unread */
  px_conn_send(c, line, n);
  send_headers(c, &ex->resp, 1);
  if (!no_body) {
    if (chunked || !has_length) {
      if (ex->http_minor >= 1) {
        ex->resp_chunked_out = 1;
        px_conn_send(c, "Transfer-Encoding: chunked\r\n", 28);
      } else {
        keep = 0; /* HTTP/1.0: the body ends when the connection does */
      }
    }
  }
  if (ex->site && ex->site->hsts_header && !has_header(&ex->resp, GH_STR("strict-transport-security")))
    px_conn_send(c, ex->site->hsts_header, strlen(ex->site->hsts_header));
  if (!keep) {
    ex->client_keepalive = 0;
    px_conn_send(c, "Connection: close\r\n", 19);
  } else if (ex->http_minor == 0) {
    px_conn_send(c, "Connection: keep-alive\r\n", 24);
  }
  px_conn_send(c, "\r\n", 2);
  ex->resp_head_sent = 1;
  return ex->method == HTTP_HEAD ? 1 : 0;
}

static int r_body(llhttp_t *p, const char *at, size_t len) {
  px_exchange_t *ex = ex_of(p);
  px_conn_t *c = ex->conn;
  if (c == NULL) return -1;
  if (ex->resp_chunked_out) {
    char size[24];
    size_t n = px_chunk_head(size, len);
    px_conn_send(c, size, n);
    px_conn_send(c, at, len);
    px_conn_send(c, "\r\n", 2);
  } else {
    px_conn_send(c, at, len);
  }
  ex->resp_bytes += len;
  return 0;
}

static int r_message_complete(llhttp_t *p) {
  px_exchange_t *ex = ex_of(p);
  px_conn_t *c = ex->conn;
  if (c == NULL) return -1;
  int status = p->status_code;
  if (status >= 100 && status < 200 && status != 101) return 0;
  if (ex->resp_chunked_out) {
    px_conn_send(c, "0\r\n", 3);
    send_headers(c, &ex->resp_tr, 0);
    px_conn_send(c, "\r\n", 2);
  }
  ex->resp_done = 1;
  return HPE_PAUSED;
}

void px_exchange_init_settings(px_worker_t *w) {
  llhttp_settings_t *s = &w->resp_settings;
  llhttp_settings_init(s);
  s->on_message_begin = r_message_begin;
  s->on_status = r_status;
  s->on_header_field = r_header_field;
  s->on_header_field_complete = r_header_field_complete;
  s->on_header_value = r_header_value;
  s->on_headers_complete = r_headers_complete;
  s->on_body = r_body;
  s->on_message_complete = r_message_complete;
}

/* ---- reading the upstream ---- */

static void client_backpressure(px_exchange_t *ex) {
  px_conn_t *c = ex->conn;
  if (c == NULL || ex->up == NULL) return;
  if (px_conn_write_queue(c) > conf_of(ex)->limits.write_queue_bytes) {
    uv_read_stop((uv_stream_t *)&ex->up->tcp);
  }
}

void px_ex_resume_upstream(px_exchange_t *ex) {
  if (ex->up && ex->up->connected) uv_read_start((uv_stream_t *)&ex->up->tcp, on_alloc, on_up_read);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  px_upconn_t *u = h->data;
  buf->base = u->w->rbuf;
  buf->len = sizeof(u->w->rbuf);
}

static void up_eof(px_upconn_t *u, ssize_t err) {
  px_exchange_t *ex = u->ex;
  if (ex == NULL) {
    px_upconn_close(u);
    return;
  }
  px_conn_t *c = ex->conn;
  if (c && c->state == PX_CONN_TUNNEL) {
    px_conn_flush(c);
    c->close_when_flushed = 1;
    detach(ex, 0);
    if (px_conn_write_queue(c) == 0) px_conn_close(c);
    return;
  }
  if (!ex->resp_started && u->reused && !ex->req_body_sent_any && !ex->retried_stale) {
    /* The upstream closed an idle connection as we reused it: retry once. */
    ex->retried_stale = 1;
    detach(ex, 0);
    ex->tries = 0;
    connect_next(ex, NULL);
    return;
  }
  if (ex->resp_head_sent && !ex->resp_done && err == UV_EOF) {
    /* A close-delimited body ends here. */
    u->in_parser = 1;
    llhttp_errno_t e = llhttp_finish(&u->parser);
    u->in_parser = 0;
    if (ex->orphan) {
      px_ex_free(ex);
      return;
    }
    if ((e == HPE_OK || e == HPE_PAUSED) && ex->resp_done) {
      detach(ex, 0);
      if (c) {
        px_conn_flush(c);
        px_http_exchange_done(c);
      }
      return;
    }
  }
  ex_fail(ex, 502, err == UV_EOF ? "upstream closed the connection early" : uv_strerror((int)err));
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  px_upconn_t *u = s->data;
  if (nread == 0) return;
  if (nread < 0) {
    up_eof(u, nread);
    return;
  }
  px_exchange_t *ex = u->ex;
  if (ex == NULL) { /* unexpected bytes on an idle connection */
    px_upconn_close(u);
    return;
  }
  px_conn_t *c = ex->conn;
  ex->resp_started = 1;
  if (c == NULL) return;
  if (c->state == PX_CONN_TUNNEL) {
    arm_response_timer(u);
    px_conn_send(c, buf->base, (size_t)nread);
    px_conn_flush(c);
    client_backpressure(ex);
    return;
  }
  arm_response_timer(u);
  u->in_parser = 1;
  llhttp_errno_t e = llhttp_execute(&u->parser, buf->base, (size_t)nread);
  u->in_parser = 0;
  if (ex->orphan) {
    px_ex_free(ex);
    return;
  }
  if (c->state == PX_CONN_CLOSING) return;
  if (e == HPE_OK) {
    px_conn_flush(c);
    client_backpressure(ex);
    return;
  }
  if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
    const char *pos = llhttp_get_error_pos(&u->parser);
    size_t rest = (size_t)(buf->base + nread - pos);
    if (ex->status == 101) {
      px_lazy_set(&u->timer, &u->tl, px_upconn_on_timer, 0);
      if (rest) px_conn_send(c, pos, rest);
      px_conn_flush(c);
      px_http_tunnel(c);
      return;
    }
    ex->up_reusable = llhttp_should_keep_alive(&u->parser) && rest == 0 && ex->req_done;
    px_lazy_set(&u->timer, &u->tl, px_upconn_on_timer, 0);
    detach(ex, ex->up_reusable);
    px_conn_flush(c);
    px_http_exchange_done(c);
    return;
  }
  ex_fail(ex, 502, "invalid response from upstream");
}

/* ---- end of an exchange ---- */

void px_ex_client_gone(px_exchange_t *ex) {
  ex->conn = NULL;
  if (ex->up && ex->up->in_parser) {
    ex->orphan = 1; /* freed by on_up_read once llhttp returns */
    return;
  }
  px_ex_free(ex);
}

/* Exchanges are recycled per worker with their buffers, so a keep-alive
 * request costs no allocation in the steady state. Buffers that grew large
 * (a big request head) are not kept. */
enum { EX_CACHE_MAX = 64, EX_KEEP_BYTES = 16 * 1024 };

static int small_hdrs(const px_hdrs_t *hs) { return hs->cap <= EX_KEEP_BYTES && hs->cap_h <= 128; }

px_exchange_t *px_ex_new(px_conn_t *c) {
  px_worker_t *w = c->w;
  px_exchange_t *ex = w->ex_cache;
  if (ex) {
    w->ex_cache = ex->next_free;
    w->num_ex_cache--;
    px_hdrs_t req = ex->req, resp = ex->resp, req_tr = ex->req_tr, resp_tr = ex->resp_tr;
    px_buf_t up_out = ex->up_out, up_head = ex->up_head;
    memset(ex, 0, sizeof(*ex));
    ex->req = req, ex->resp = resp, ex->req_tr = req_tr, ex->resp_tr = resp_tr;
    px_hdrs_reset(&ex->req);
    px_hdrs_reset(&ex->resp);
    px_hdrs_reset(&ex->req_tr);
    px_hdrs_reset(&ex->resp_tr);
    ex->up_out = up_out, ex->up_head = up_head;
    ex->up_out.len = ex->up_head.len = 0;
  } else {
    ex = gh_calloc(1, sizeof(*ex));
  }
  ex->w = w;
  ex->conn = c;
  ex->gen = px_gen_ref(w->gen);
  ex->start_ms = uv_now(&w->loop);
  return ex;
}

static void ex_release_buffers(px_exchange_t *ex) {
  px_hdrs_cleanup(&ex->req);
  px_hdrs_cleanup(&ex->resp);
  px_hdrs_cleanup(&ex->req_tr);
  px_hdrs_cleanup(&ex->resp_tr);
  px_buf_free(&ex->up_out);
  px_buf_free(&ex->up_head);
}

void px_ex_free(px_exchange_t *ex) {
  if (ex == NULL) return;
  detach(ex, ex->up_reusable && ex->resp_done && ex->req_done);
  gh_free(ex->host);
  ex->host = NULL;
  gh_free(ex->http01_answer);
  ex->http01_answer = NULL;
  px_gen_unref(ex->gen);
  ex->gen = NULL;
  px_worker_t *w = ex->w;
  if (w->num_ex_cache < EX_CACHE_MAX && small_hdrs(&ex->req) && small_hdrs(&ex->resp) &&
      small_hdrs(&ex->req_tr) && small_hdrs(&ex->resp_tr) && ex->up_out.cap <= EX_KEEP_BYTES &&
      ex->up_head.cap <= EX_KEEP_BYTES) {
    ex->next_free = w->ex_cache;
    w->ex_cache = ex;
    w->num_ex_cache++;
    return;
  }
  ex_release_buffers(ex);
  gh_free(ex);
}

void px_ex_cache_free(px_worker_t *w) {
  while (w->ex_cache) {
    px_exchange_t *ex = w->ex_cache;
    w->ex_cache = ex->next_free;
    ex_release_buffers(ex);
    gh_free(ex);
  }
  w->num_ex_cache = 0;
}
