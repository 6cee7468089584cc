/* uph2.c: HTTP/2 toward upstreams (issue 14): "protocol": "h2" (over TLS,
 * chosen by ALPN) or "h2c" (cleartext, prior knowledge).
 *
 * One connection carries many exchanges, one stream each. A worker keeps
 * the connections to an endpoint in its pool (px_pool_t.h2) and puts a
 * request on the first one with room under the upstream's
 * SETTINGS_MAX_CONCURRENT_STREAMS (nghttp2 itself holds back streams over
 * it); a new connection is dialled when none has room, and requests may
 * be submitted to it while it connects: nghttp2 sends them after the
 * preface once it is ready.
 *
 * Ownership: the connection (px_upconn_t, with |h2| set) belongs to the
 * pool, or to itself while it is not pooled (another generation's, or
 * going away); it never owns an exchange. An exchange is attached while
 * it is in |streams| (ex->up == u, ex->up_h2); detaching resets the
 * stream if it is still open. nghttp2's stream user data is the exchange
 * while attached, NULL after.
 *
 * Events: nghttp2's callbacks hand the exchange its events
 * (px_ex__h2_*), which only queue bytes toward the client; the exchanges
 * touched are listed in |dirty| and settled once nghttp2 has returned
 * (settling may free an exchange, or submit on this very session).
 *
 * Flow control is the back-pressure: the window is given back
 * (nghttp2_session_consume) for bytes the client has taken, so a slow
 * client slows its own stream only; a request body goes out as the
 * upstream's window allows, and the client is read again when it has. */
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "proxy/h2.h"
#include "proxy/upstream.h"

enum {
  STREAM_WINDOW = 256 * 1024,
  CONN_WINDOW = 1024 * 1024,
  MAX_HEADER_LIST = 64 * 1024,
  ASSUMED_STREAMS = 100, /* until the upstream's SETTINGS say */
};

struct px_uph2 {
  nghttp2_session *session;
  px_upconn_t *u;    /* the connection this is the HTTP/2 of */
  gh_link_t link;    /* in pool->h2 while pooled */
  int pooled;
  gh_link_t streams; /* px_exchange_t.up_link */
  size_t num_streams;
  gh_link_t dirty;   /* px_exchange_t.dirty_link */
  int dead;          /* GOAWAY or a failure: no new streams */
  int in_recv;       /* inside nghttp2_session_mem_recv */
  int in_send;       /* inside flush's nghttp2_session_mem_send */
  gh_link_t sched;   /* in w->uph2_dirty: to be written this loop iteration */
  px_buf_t out;      /* frames gathered for one write */
  px_buf_t names;    /* lower-cased field names for one submit */
};

static const conf_t *conf_of(px_upconn_t *u) { return u->gen->conf; }
static size_t limit_of(px_upconn_t *u) { return conf_of(u)->limits.write_queue_bytes; }

static px_exchange_t *ex_of(nghttp2_session *s, int32_t id) {
  return nghttp2_session_get_stream_user_data(s, id);
}

static void mark(px_upconn_t *u, px_exchange_t *ex) {
  if (ex->dirty_link.next != NULL && ex->dirty_link.next != &ex->dirty_link) return;
  gh_list_insert(&u->h2->dirty, &ex->dirty_link);
}

/* ---- writing ---- */

/* flush writes what nghttp2 has to send, while the socket keeps up (the
 * rest goes when it drains: px_uph2_on_drained). Never inside mem_recv,
 * and never inside itself: mem_send calls back (a RST_STREAM nghttp2
 * sent for a malformed response closes the stream, and on_stream_close
 * fails and detaches its exchange, which flushes). A nested mem_send
 * reset the frame the outer one had just returned and wrote the next
 * frame over its bytes: with two malformed heads in one read the
 * upstream got the second RST_STREAM twice and never the first. The
 * loop here sends whatever the callbacks queued. */
static void flush(px_upconn_t *u) {
  px_uph2_t *h = u->h2;
  if (h->in_recv || h->in_send || !u->connected || uv_is_closing((uv_handle_t *)&u->tcp)) return;
  h->in_send = 1;
  /* Frames are gathered and written together: one write (one TLS record
   * run) for all that is queued, not one per frame. */
  while (px_upconn_write_queue(u) <= limit_of(u) && !uv_is_closing((uv_handle_t *)&u->tcp)) {
    const uint8_t *data;
    ssize_t n = nghttp2_session_mem_send(h->session, &data);
    if (n > 0) px_buf_append(&h->out, data, (size_t)n);
    if (h->out.len > 0 && (n <= 0 || h->out.len >= 64 * 1024)) {
      px_upconn_write(u, h->out.p, h->out.len);
      h->out.len = 0;
    }
    if (n <= 0) break;
  }
  h->in_send = 0;
}

/* ---- settling ---- */

/* settle_dirty hands every exchange touched by the last events to its
 * stream. One at a time off the list: settling one may detach (and so
 * unlist) another. */
static void settle_dirty(px_upconn_t *u) {
  px_uph2_t *h = u->h2;
  while (!gh_list_empty(&h->dirty)) {
    gh_link_t *l = h->dirty.next;
    gh_list_remove(l);
    px_exchange_t *ex = GH_CONTAINER_OF(l, px_exchange_t, dirty_link);
    if (ex->up_want_body) {
      ex->up_want_body = 0;
      px_ex__h2_want_body(ex);
    }
    px_ex__settle(ex);
  }
}

static void maybe_close(px_upconn_t *u);

/* on_check writes every HTTP/2 upstream connection that stream-side calls
 * (a submit, more body, a consume, a detach) touched, once per loop
 * iteration after all its I/O: the requests of every client that spoke in
 * one poll leave in one write. It also settles what nghttp2's callbacks
 * marked during such a flush (on_stream_close of a stream whose
 * RST_STREAM went out late): the stream's own call could not. */
static void on_check(uv_check_t *chk) {
  px_worker_t *w = chk->data;
  while (!gh_list_empty(&w->uph2_dirty)) {
    px_uph2_t *h = GH_CONTAINER_OF(w->uph2_dirty.next, px_uph2_t, sched);
    gh_list_remove(&h->sched);
    px_upconn_t *u = h->u;
    if (uv_is_closing((uv_handle_t *)&u->tcp)) continue;
    flush(u);
    settle_dirty(u);
    px_uph2_watch(u);
  }
}

/* schedule asks for |u| to be written at the end of this loop iteration.
 * Never sends, settles or closes: stream-side calls use it. */
static void schedule(px_upconn_t *u) {
  px_worker_t *w = u->w;
  if (!w->uph2_check_on) {
    w->uph2_check_on = 1;
    gh_list_init(&w->uph2_dirty);
    uv_check_init(&w->loop, &w->uph2_check);
    w->uph2_check.data = w;
    uv_check_start(&w->uph2_check, on_check);
    uv_unref((uv_handle_t *)&w->uph2_check);
  }
  px_uph2_t *h = u->h2;
  if (h->sched.next != NULL && h->sched.next != &h->sched) return;
  gh_list_insert(&w->uph2_dirty, &h->sched);
}

/* ---- the request ---- */

static char lower(char ch) { return ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch; }

static nghttp2_nv nv(const char *name, size_t name_len, const char *value, size_t value_len) {
  return (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, name_len, value_len, NGHTTP2_NV_FLAG_NONE};
}

/* connection_field: fields HTTP/2 forbids (RFC 9113 8.2.2), and Host,
 * which becomes :authority. */
static int connection_field(gh_str_t n) {
  static const char *const names[] = {"host", "connection", "keep-alive", "proxy-connection",
                                      "transfer-encoding", "upgrade", "te"};
  for (size_t i = 0; i < GH_ARRAY_LEN(names); i++) {
    if (gh_str_ieq(n, (gh_str_t){names[i], strlen(names[i])})) return 1;
  }
  return 0;
}

/* wants_trailers: the client's TE names "trailers" (gRPC needs it passed). */
static int wants_trailers(const px_hdrs_t *hs) {
  for (size_t i = 0; i < hs->num; i++) {
    if (!gh_str_ieq(px_hdr_name(hs, i), GH_STR("te"))) continue;
    gh_str_t v = px_hdr_value(hs, i);
    for (size_t k = 0; k + 8 <= v.len; k++) {
      if (gh_str_ieq((gh_str_t){v.ptr + k, 8}, GH_STR("trailers"))) return 1;
    }
  }
  return 0;
}

/* head_nv turns the HTTP/1.1 head px_uph1_build_head wrote (every rule on
 * what is forwarded lives there once) into HTTP/2 fields: the request line
 * and Host become pseudo-header fields, names are lower-cased, connection
 * fields dropped, "te: trailers" kept. Returns the count, or 0 if the head
 * is not one we wrote. */
static size_t head_nv(px_upconn_t *u, px_exchange_t *ex, nghttp2_nv *v, size_t cap) {
  const char *p = ex->up_head.p, *end = p + ex->up_head.len;
  const char *sp1 = memchr(p, ' ', (size_t)(end - p));
  const char *eol = sp1 ? memchr(sp1, '\r', (size_t)(end - sp1)) : NULL;
  if (sp1 == NULL || eol == NULL || eol - sp1 < 10) return 0;
  const char *target = sp1 + 1;
  size_t target_len = (size_t)(eol - 9 - target); /* " HTTP/1.1" */
  px_uph2_t *h = u->h2;
  size_t k = 0;
  v[k++] = nv(":method", 7, p, (size_t)(sp1 - p));
  v[k++] = u->ssl ? nv(":scheme", 7, "https", 5) : nv(":scheme", 7, "http", 4);
  size_t authority = k++;
  v[authority] = nv(":authority", 10, "", 0);
  v[k++] = nv(":path", 5, target, target_len);
  /* Names are copied lower-case into |names|, which must not move while
   * |v| points into it: size it first. */
  px_buf_t *nb = &h->names;
  size_t need = (size_t)(end - p);
  if (nb->cap < need) {
    px_buf_append(nb, p, need);
  }
  nb->len = 0;
  for (const char *l = eol + 2; l < end && !(l[0] == '\r'); ) {
    const char *le = memchr(l, '\r', (size_t)(end - l));
    const char *colon = le ? memchr(l, ':', (size_t)(le - l)) : NULL;
    if (le == NULL || colon == NULL) return 0;
    gh_str_t name = {l, (size_t)(colon - l)};
    const char *val = colon + 1;
    while (val < le && *val == ' ') val++;
    if (gh_str_ieq(name, GH_STR("host"))) {
      v[authority] = nv(":authority", 10, val, (size_t)(le - val));
    } else if (!connection_field(name) && k < cap - 1) {
      char *low = nb->p + nb->len;
      for (size_t i = 0; i < name.len; i++) low[i] = lower(name.ptr[i]);
      nb->len += name.len;
      v[k++] = nv(low, name.len, val, (size_t)(le - val));
    }
    l = le + 2;
  }
  if (wants_trailers(&ex->req) && k < cap) v[k++] = nv("te", 2, "trailers", 8);
  return k;
}

/* read_body feeds the request body to DATA frames; at its end, END_STREAM
 * or the trailers. */
static ssize_t read_body(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *user_data) {
  (void)source;
  px_upconn_t *u = user_data;
  px_exchange_t *ex = ex_of(session, id);
  if (ex == NULL) return NGHTTP2_ERR_DEFERRED; /* being reset */
  size_t n = ex->up_out.len < length ? ex->up_out.len : length;
  if (n > 0) {
    memcpy(buf, ex->up_out.p, n);
    px_buf_consume(&ex->up_out, n);
    ex->req_body_sent_any = 1;
    px_ex__h2_body_sent(ex);
  }
  if (ex->up_body_blocked && ex->up_out.len <= limit_of(u)) {
    ex->up_body_blocked = 0;
    ex->up_want_body = 1;
    mark(u, ex);
  }
  if (ex->up_out.len == 0 && ex->req_done) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    const px_hdrs_t *tr = &ex->req_tr;
    if (tr->num > 0) {
      nghttp2_nv stack[32], *v = tr->num <= 32 ? stack : gh_calloc(tr->num, sizeof(*v));
      px_uph2_t *h = u->h2;
      h->names.len = 0;
      for (size_t i = 0; i < tr->num; i++) px_buf_append(&h->names, px_hdr_name(tr, i).ptr, px_hdr_name(tr, i).len);
      size_t k = 0, off = 0;
      for (size_t i = 0; i < tr->num; i++) {
        gh_str_t name = px_hdr_name(tr, i), value = px_hdr_value(tr, i);
        char *low = h->names.p + off;
        off += name.len;
        if (px_hop_by_hop(tr, name) || connection_field(name)) continue;
        for (size_t j = 0; j < name.len; j++) low[j] = lower(low[j]);
        v[k++] = nv(low, name.len, value.ptr, value.len);
      }
      if (k > 0 && nghttp2_submit_trailer(session, id, v, k) == 0) {
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      }
      if (v != stack) gh_free(v);
    }
  } else if (n == 0) {
    return NGHTTP2_ERR_DEFERRED; /* px_uph2_body resumes it */
  }
  return (ssize_t)n;
}

int px_uph2_attach(px_upconn_t *u, px_exchange_t *ex) {
  px_uph2_t *h = u->h2;
  /* The client's fields, and ours: 4 pseudo-headers, X-Forwarded-*, the
   * client certificate's, te, framing. */
  nghttp2_nv stack[64], *v = stack;
  size_t cap = ex->req.num + 16;
  if (cap > 64) v = gh_calloc(cap, sizeof(*v));
  else cap = 64;
  size_t k = head_nv(u, ex, v, cap);
  int32_t id = -1;
  if (k > 0) {
    nghttp2_data_provider prd = {.source.ptr = NULL, .read_callback = read_body};
    int body = !(ex->req_done && ex->up_out.len == 0 && ex->req_framing == PX_BODY_NONE);
    id = nghttp2_submit_request(h->session, NULL, v, k, body ? &prd : NULL, ex);
  }
  if (v != stack) gh_free(v);
  if (id < 0) {
    GH_WARN("proxy", "upstream %s: cannot submit an HTTP/2 request: %s", u->addr->conf->text,
            k == 0 ? "bad head" : nghttp2_strerror(id));
    return -1;
  }
  ex->up_sid = id;
  ex->up_closed = 0;
  gh_list_insert(&h->streams, &ex->up_link);
  h->num_streams++;
  schedule(u);
  return 0;
}

void px_uph2_body(px_upconn_t *u, px_exchange_t *ex) {
  if (ex->up_sid > 0 && !ex->up_closed) nghttp2_session_resume_data(u->h2->session, ex->up_sid);
  schedule(u);
}

void px_uph2_consume(px_upconn_t *u, px_exchange_t *ex) {
  if (ex->up_unconsumed > 0 && ex->up_sid > 0 && !ex->up_closed) {
    nghttp2_session_consume(u->h2->session, ex->up_sid, ex->up_unconsumed);
  }
  ex->up_unconsumed = 0;
  ex->up_paused = 0;
  schedule(u);
}

void px_uph2_detach(px_upconn_t *u, px_exchange_t *ex) {
  px_uph2_t *h = u->h2;
  gh_list_remove(&ex->dirty_link);
  if (ex->up_link.next != NULL && ex->up_link.next != &ex->up_link) {
    gh_list_remove(&ex->up_link);
    h->num_streams--;
  }
  if (ex->up_sid > 0) {
    nghttp2_session_set_stream_user_data(h->session, ex->up_sid, NULL);
    /* A stream closed both ways (the usual end) needs no reset; resetting
     * every stream would look like a rapid-reset attack to the upstream. */
    if (!ex->up_closed) {
      /* Window we held back for the client is the connection's too. */
      if (ex->up_unconsumed) nghttp2_session_consume_connection(h->session, ex->up_unconsumed);
      nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, ex->up_sid, NGHTTP2_CANCEL);
    }
  }
  ex->up_sid = 0;
  ex->up_unconsumed = 0;
  schedule(u);
  maybe_close(u);
}

/* ---- the connection ---- */

static void unpool(px_upconn_t *u) {
  px_uph2_t *h = u->h2;
  if (h->pooled) {
    gh_list_remove(&h->link);
    h->pooled = 0;
  }
}

/* maybe_close closes a connection that no stream uses when it is going
 * away or not pooled; a pooled idle one waits for the idle timeout. */
static void maybe_close(px_upconn_t *u) {
  px_uph2_t *h = u->h2;
  if (h->num_streams > 0 || h->in_recv || uv_is_closing((uv_handle_t *)&u->tcp)) return;
  if (!gh_list_empty(&h->dirty)) return; /* on_check settles them, then comes back here */
  if (h->dead || !h->pooled) {
    px_upconn_close(u);
    return;
  }
  px_lazy_set(&u->timer, &u->tl, px_upconn_on_timer, u->addr->group->conf->idle_timeout_ms);
}

/* retire takes |u| out of service: no new streams, out of the pool. */
static void retire(px_upconn_t *u) {
  u->h2->dead = 1;
  unpool(u);
}

/* take_streams moves every attached exchange to |out|, so that each can
 * be failed or moved on while the connection's list changes. */
static void take_streams(px_uph2_t *h, gh_link_t *out) {
  gh_list_init(out);
  while (!gh_list_empty(&h->streams)) {
    gh_link_t *l = h->streams.next;
    gh_list_remove(l);
    gh_list_insert(out, l);
  }
}

/* drop_next takes the first exchange off |list| (from take_streams) for
 * good: the connection is dead, so there is no stream to reset. NULL when
 * the list is empty. */
static px_exchange_t *drop_next(px_uph2_t *h, gh_link_t *list) {
  if (gh_list_empty(list)) return NULL;
  gh_link_t *l = list->next;
  gh_list_remove(l);
  h->num_streams--;
  px_exchange_t *ex = GH_CONTAINER_OF(l, px_exchange_t, up_link);
  ex->up_closed = 1;
  return ex;
}

/* fail_all ends every exchange on |u| after the connection failed: those
 * the upstream never saw (|retry|) may go elsewhere. Then closes |u|. */
static void fail_all(px_upconn_t *u, const char *why, int retry) {
  px_uph2_t *h = u->h2;
  retire(u);
  gh_link_t list;
  take_streams(h, &list);
  px_exchange_t *ex;
  while ((ex = drop_next(h, &list)) != NULL) {
    gh_list_remove(&ex->dirty_link);
    px_ex__h2_reset(ex, retry, why);
    px_ex__settle(ex);
  }
  settle_dirty(u);
  if (!uv_is_closing((uv_handle_t *)&u->tcp)) px_upconn_close(u);
}

/* ---- nghttp2's callbacks: events to exchanges, settled later ---- */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *user_data) {
  (void)user_data;
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  px_exchange_t *ex = ex_of(s, f->hd.stream_id);
  if (ex == NULL) return 0;
  ex->up_trailers = ex->resp_head_sent && f->headers.cat == NGHTTP2_HCAT_HEADERS;
  if (ex->up_trailers) {
    px_hdrs_reset(&ex->resp_tr);
  } else {
    px_hdrs_reset(&ex->resp);
    ex->status_len = 0;
    ex->resp_status = 0;
  }
  return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t name_len, const uint8_t *value, size_t value_len, uint8_t flags,
                     void *user_data) {
  (void)flags;
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  px_exchange_t *ex = ex_of(s, f->hd.stream_id);
  if (ex == NULL) return 0;
  px_hdrs_t *hs = ex->up_trailers ? &ex->resp_tr : &ex->resp;
  /* SETTINGS_MAX_HEADER_LIST_SIZE is advisory and nghttp2 does not hold
   * the upstream to ours: without this an upstream grew |hs| without
   * bound (CONTINUATION after CONTINUATION). Size as RFC 9113 6.5.2 counts
   * it; the fields after the limit are dropped with the stream. */
  if (hs->len + name_len + value_len + 32 * (hs->num + 1) > MAX_HEADER_LIST) {
    px_ex__h2_reset(ex, 0, "the upstream's header fields exceed SETTINGS_MAX_HEADER_LIST_SIZE");
    mark(user_data, ex);
    return 0;
  }
  const char *n = (const char *)name, *v = (const char *)value;
  if (name_len > 0 && n[0] == ':') {
    if (!ex->up_trailers && name_len == 7 && memcmp(n, ":status", 7) == 0 && value_len == 3) {
      ex->resp_status = (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
      const char *reason = px_reason(ex->resp_status);
      ex->status_len = px_hdrs_raw(&ex->resp, reason, strlen(reason));
    }
    return 0; /* nghttp2 has checked them */
  }
  px_hdrs_name(hs, n, name_len);
  px_hdrs_value(hs, v, value_len);
  return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *user_data) {
  px_upconn_t *u = user_data;
  if (f->hd.type == NGHTTP2_GOAWAY) {
    /* No new streams here; nghttp2 closes those past last_stream_id with
     * REFUSED_STREAM, which are retried elsewhere. */
    retire(u);
    return 0;
  }
  if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) return 0;
  px_exchange_t *ex = ex_of(s, f->hd.stream_id);
  if (ex == NULL) return 0;
  int end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (f->hd.type == NGHTTP2_HEADERS && !ex->up_trailers) px_ex__h2_head(ex, end);
  if (end && ex->up == u) {
    /* nghttp2 closes the stream after this callback; if our END_STREAM
     * is out too, it is closed both ways and needs no reset. */
    if (nghttp2_session_get_stream_local_close(s, f->hd.stream_id) == 1) ex->up_closed = 1;
    px_ex__h2_end(ex);
  }
  mark(u, ex);
  return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user_data) {
  (void)flags;
  px_upconn_t *u = user_data;
  px_exchange_t *ex = ex_of(s, id);
  if (ex == NULL) {
    nghttp2_session_consume(s, id, len); /* nowhere to go: the window stays open */
    return 0;
  }
  px_ex__h2_data(ex, (const char *)data, len);
  if (ex->up != u) return 0; /* failed: detached, the window is given back */
  /* The window reopens when the client has taken the bytes. */
  if (ex->up_unconsumed == 0 && ex->ops->queued(ex) <= limit_of(u)) {
    nghttp2_session_consume(s, id, len);
  } else {
    ex->up_unconsumed += len;
    ex->up_paused = 1;
  }
  mark(u, ex);
  return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *user_data) {
  px_upconn_t *u = user_data;
  px_exchange_t *ex = ex_of(s, id);
  if (ex == NULL) return 0;
  ex->up_closed = 1;
  if (ex->up == u && ex->state != PX_EX_DONE && ex->state != PX_EX_ABORTED) {
    char why[96];
    snprintf(why, sizeof(why), "the upstream reset the stream (%s)", nghttp2_http2_strerror(code));
    /* REFUSED_STREAM: the upstream did not process it (RFC 9113 8.7). */
    px_ex__h2_reset(ex, code == NGHTTP2_REFUSED_STREAM, why);
    mark(u, ex);
  }
  return 0;
}

/* on_error logs nghttp2's reason for an error it handles itself (the
 * session or the stream ends without one of our callbacks saying why). */
static int on_error(nghttp2_session *s, int code, const char *msg, size_t len, void *user_data) {
  (void)s, (void)code;
  px_upconn_t *u = user_data;
  GH_WARN("proxy", "upstream %s: HTTP/2 error: %.*s", u->addr->conf->text, (int)len, msg);
  return 0;
}

/* on_frame_send logs a GOAWAY we send for an error, with the reason
 * nghttp2 put in its debug data (for a PUSH_PROMISE refused, say, it
 * calls no error callback). */
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *user_data) {
  (void)s;
  px_upconn_t *u = user_data;
  if (f->hd.type != NGHTTP2_GOAWAY || f->goaway.error_code == NGHTTP2_NO_ERROR) return 0;
  GH_WARN("proxy", "upstream %s: HTTP/2 error: GOAWAY (%s) sent: %.*s", u->addr->conf->text,
          nghttp2_http2_strerror(f->goaway.error_code), (int)f->goaway.opaque_data_len,
          (const char *)f->goaway.opaque_data);
  return 0;
}

static nghttp2_session_callbacks *cbs;
static nghttp2_option *opts;
static pthread_once_t cbs_once = PTHREAD_ONCE_INIT;

static void cbs_init(void) {
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
  nghttp2_option_new(&opts);
  nghttp2_option_set_no_auto_window_update(opts, 1);
  nghttp2_option_set_peer_max_concurrent_streams(opts, ASSUMED_STREAMS);
  nghttp2_option_set_max_send_header_block_length(opts, MAX_HEADER_LIST + 1024);
}

static px_uph2_t *uph2_new(px_upconn_t *u) {
  pthread_once(&cbs_once, cbs_init);
  px_uph2_t *h = gh_calloc(1, sizeof(*h));
  h->u = u;
  gh_list_init(&h->streams);
  gh_list_init(&h->dirty);
  nghttp2_mem mem = px_h2_worker_mem(u->w);
  if (nghttp2_session_client_new3(&h->session, cbs, u, opts, &mem) != 0) {
    gh_free(h);
    return NULL;
  }
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST},
  };
  nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, iv, GH_ARRAY_LEN(iv));
  nghttp2_session_set_local_window_size(h->session, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
  return h;
}

void px_uph2_free(px_upconn_t *u) {
  px_uph2_t *h = u->h2;
  if (h == NULL) return;
  /* No exchange may keep a link into this list (px_ex_free unlinks). */
  while (!gh_list_empty(&h->dirty)) gh_list_remove(h->dirty.next);
  gh_list_remove(&h->sched);
  px_buf_free(&h->out);
  nghttp2_session_del(h->session);
  px_buf_free(&h->names);
  gh_free(h);
  u->h2 = NULL;
}

void px_uph2_closing(px_upconn_t *u) {
  if (u->h2 == NULL) return;
  gh_list_remove(&u->h2->sched); /* the memory goes before the next check */
  retire(u);
}

void px_uph2_leave(gh_link_t *pool_link) {
  px_uph2_t *h = GH_CONTAINER_OF(pool_link, px_uph2_t, link);
  px_upconn_t *u = h->u;
  retire(u);
  maybe_close(u);
}

/* has_room: |u| may take another stream now. */
static int has_room(px_upconn_t *u) {
  px_uph2_t *h = u->h2;
  uint32_t max = nghttp2_session_get_remote_settings(h->session,
                                                     NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  return !h->dead && h->num_streams < max && nghttp2_session_check_request_allowed(h->session);
}

px_upconn_t *px_uph2_get(px_worker_t *w, px_addr_t *a, px_gen_t *gen) {
  px_pool_t *pool = gen == w->gen ? &w->pools[a->index] : NULL;
  for (gh_link_t *l = pool ? pool->h2.next : NULL; l != NULL && l != &pool->h2; l = l->next) {
    px_uph2_t *h = GH_CONTAINER_OF(l, px_uph2_t, link);
    px_upconn_t *u = h->u;
    if (has_room(u) && px_upconn_current(u)) return u;
  }
  px_upconn_t *u = px_upconn_dial(w, a);
  if (u == NULL) return NULL;
  u->gen = px_gen_ref(gen);
  u->h2 = uph2_new(u);
  if (u->h2 == NULL) {
    px_upconn_close(u);
    return NULL;
  }
  if (pool) {
    gh_list_insert(&pool->h2, &u->h2->link);
    u->h2->pooled = 1;
  }
  px_lazy_set(&u->timer, &u->tl, px_upconn_on_timer, gen->conf->timeouts.upstream_connect_ms);
  return u;
}

/* alpn_h2: the TLS handshake chose "h2". */
static int alpn_h2(px_upconn_t *u) {
  const uint8_t *p;
  unsigned len;
  SSL_get0_alpn_selected(u->ssl, &p, &len);
  return len == 2 && memcmp(p, "h2", 2) == 0;
}

void px_uph2_connected(px_upconn_t *u, int status, const char *why) {
  px_uph2_t *h = u->h2;
  char ep[INET6_ADDRSTRLEN + 8];
  px_addr_text(u->addr, ep, sizeof(ep));
  if (status == 0 && u->ssl && !alpn_h2(u)) {
    status = UV_EPROTO;
    why = "the upstream did not choose HTTP/2 by ALPN (\"protocol\": \"h2\" needs it)";
  }
  if (status < 0 || gh_list_empty(&h->streams)) {
    if (status < 0) {
      if (why == NULL) why = uv_strerror(status);
      GH_WARN("proxy", "upstream %s (%s): connect: %s", u->addr->conf->text, ep, why);
      char what[160];
      snprintf(what, sizeof(what), "connect: %s", why);
      px_upstream_mark_failed(u->addr, what);
    }
    retire(u);
    gh_link_t list;
    take_streams(h, &list);
    px_exchange_t *ex;
    while ((ex = drop_next(h, &list)) != NULL) px_ex__h2_connect_failed(ex);
    px_upconn_close(u);
    return;
  }
  u->connected = 1;
  px_lazy_set(&u->timer, &u->tl, px_upconn_on_timer, 0);
  px_upconn_read_start(u);
  flush(u);
  gh_link_t list;
  take_streams(h, &list);
  /* Each goes back on the connection's list, is told, and is settled
   * with the others once all are told. */
  while (!gh_list_empty(&list)) {
    gh_link_t *l = list.next;
    gh_list_remove(l);
    gh_list_insert(&h->streams, l);
    px_exchange_t *ex = GH_CONTAINER_OF(l, px_exchange_t, up_link);
    px_ex__h2_ready(ex);
    mark(u, ex);
  }
  settle_dirty(u);
  px_uph2_watch(u);
}

/* terminated fails the streams of a session that nghttp2 ended itself.
 * A connection error it handles (bytes that are not HTTP/2, a
 * PUSH_PROMISE after ENABLE_PUSH=0, a bad frame) queues a GOAWAY and
 * returns no error from mem_recv; once the GOAWAY is written the session
 * wants neither to read nor to write, and without this the streams still
 * open waited for upstream_read and answered 504 instead of 502. Returns
 * 1 if it failed them (|u| is closing). */
static int terminated(px_upconn_t *u) {
  px_uph2_t *h = u->h2;
  if (h->num_streams == 0 || nghttp2_session_want_read(h->session) ||
      nghttp2_session_want_write(h->session))
    return 0;
  px_upstream_mark_failed(u->addr, "invalid HTTP/2 (the session ended)");
  fail_all(u, "invalid HTTP/2 from upstream", 0);
  return 1;
}

void px_uph2_read(px_upconn_t *u, ssize_t nread, const char *p) {
  px_uph2_t *h = u->h2;
  if (nread < 0) {
    GH_DEBUG("proxy", "upstream %s: HTTP/2 connection closed: %s", u->addr->conf->text,
             uv_strerror((int)nread));
    if (h->num_streams > 0) {
      GH_WARN("proxy", "upstream %s: closed an HTTP/2 connection with %zu stream(s) open",
              u->addr->conf->text, h->num_streams);
    }
    fail_all(u, nread == UV_EOF ? "upstream closed the connection early" : uv_strerror((int)nread),
             0);
    return;
  }
  h->in_recv = 1;
  ssize_t rv = nghttp2_session_mem_recv(h->session, (const uint8_t *)p, (size_t)nread);
  h->in_recv = 0;
  if (rv < 0) {
    GH_WARN("proxy", "upstream %s: HTTP/2 error: %s", u->addr->conf->text, nghttp2_strerror((int)rv));
    char what[128];
    snprintf(what, sizeof(what), "invalid HTTP/2: %s", nghttp2_strerror((int)rv));
    px_upstream_mark_failed(u->addr, what);
    fail_all(u, "invalid HTTP/2 from upstream", 0);
    return;
  }
  flush(u);
  if (terminated(u)) return;
  settle_dirty(u);
  if (uv_is_closing((uv_handle_t *)&u->tcp)) return;
  if (!nghttp2_session_want_read(h->session) && !nghttp2_session_want_write(h->session)) {
    retire(u);
  }
  maybe_close(u);
  px_uph2_watch(u);
}

void px_uph2_on_drained(px_upconn_t *u) {
  flush(u);
  if (terminated(u)) return;
  settle_dirty(u);
}

void px_uph2_watch(px_upconn_t *u) {
  if (!u->connected || uv_is_closing((uv_handle_t *)&u->tcp)) return;
  if (u->h2->num_streams > 0) px_lazy_set(&u->timer, &u->tl, px_upconn_on_timer, 1000);
  else maybe_close(u);
}

void px_uph2_on_timer(px_upconn_t *u) {
  px_uph2_t *h = u->h2;
  if (!u->connected) { /* the connect (or TLS handshake) took too long */
    px_uph2_connected(u, UV_ETIMEDOUT, "connect timeout");
    return;
  }
  if (h->num_streams == 0) { /* idle too long */
    px_upconn_close(u);
    return;
  }
  uint64_t now = px_now(&u->w->loop);
  gh_link_t due;
  gh_list_init(&due);
  for (gh_link_t *l = h->streams.next; l != &h->streams; l = l->next) {
    px_exchange_t *ex = GH_CONTAINER_OF(l, px_exchange_t, up_link);
    if (ex->up_deadline == 0 || now < ex->up_deadline) continue;
    gh_list_remove(&ex->dirty_link);
    gh_list_insert(&due, &ex->dirty_link);
  }
  /* One at a time off |due|: timing one out detaches it (leaving
   * |streams|), and settling it may free others, which unlists them. */
  while (!gh_list_empty(&due)) {
    gh_link_t *l = due.next;
    gh_list_remove(l);
    px_exchange_t *ex = GH_CONTAINER_OF(l, px_exchange_t, dirty_link);
    px_ex__h2_timeout(ex);
    px_ex__settle(ex);
  }
  flush(u);
  settle_dirty(u);
  if (!uv_is_closing((uv_handle_t *)&u->tcp)) px_uph2_watch(u);
}
