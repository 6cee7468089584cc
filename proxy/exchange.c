/* exchange.c: the protocol-independent core of a request (see exchange.h):
 * pick an upstream, get a connection (an idle one first), send the
 * request, relay the response to the stream with back-pressure both ways,
 * then give the connection back to the pool or close it.
 *
 * Failure handling lives here in one place: a refused or timed-out connect
 * tries the next upstream endpoint (each failure marks that endpoint down
 * for the group's back-off); when a DNS name's endpoint fails and no other
 * endpoint is usable, the name is looked up again and, if its addresses
 * changed, the request is dialled once more at the new ones (issue 14:
 * a backend that moved costs no 502); a pooled connection that the upstream had already
 * closed is retried once on a fresh one when no body byte has been sent;
 * anything else answers 502 (or 504 for upstream silence) if no response
 * head has gone to the client yet, and otherwise aborts the stream, the
 * only honest signal left. Only the upstream's own failures count against
 * its health; what a client does (stalling, leaving, not reading) never
 * does. */
#include <stdio.h>

#include "common/log.h"
#include "proxy/exchange.h"
#include "proxy/upstream.h"

#ifdef GH_DEBUG_ASSERTS
#include <assert.h>
#define EX_ASSERT(x) assert(x)
#else
#define EX_ASSERT(x) ((void)0)
#endif

static const conf_t *conf_of(const px_exchange_t *ex) { return ex->gen->conf; }
static size_t limit_of(const px_exchange_t *ex) { return conf_of(ex)->limits.write_queue_bytes; }

static void connect_next(px_exchange_t *ex, px_addr_t *avoid);

/* set_state moves |ex| on; the transitions allowed are the lifecycle of
 * exchange.h, checked in sanitizer and debug builds. */
static void set_state(px_exchange_t *ex, px_ex_state_t s) {
#ifdef GH_DEBUG_ASSERTS
  switch (s) {
    case PX_EX_CONNECT: EX_ASSERT(ex->state == PX_EX_HEAD || ex->state == PX_EX_CONNECT ||
                                  ex->state == PX_EX_WAIT); break;
    case PX_EX_WAIT: EX_ASSERT(ex->state <= PX_EX_WAIT); break;
    case PX_EX_BODY: EX_ASSERT(ex->state == PX_EX_WAIT); break;
    case PX_EX_TUNNEL: EX_ASSERT(ex->state == PX_EX_WAIT); break;
    case PX_EX_DONE: EX_ASSERT(ex->state != PX_EX_ABORTED); break;
    default: break;
  }
#endif
  ex->state = s;
}

static int finished(const px_exchange_t *ex) {
  return ex->state == PX_EX_DONE || ex->state == PX_EX_ABORTED;
}

/* settle hands |ex| to its stream at the end of an event, after checking
 * (in sanitizer and debug builds) what every state promises. */
static void settle(px_exchange_t *ex) {
#ifdef GH_DEBUG_ASSERTS
  EX_ASSERT(ex->up == NULL || ex->up->ex == ex || (ex->up_h2 && ex->up->h2 != NULL));
  EX_ASSERT((ex->addr == NULL) == (ex->up == NULL));
  switch (ex->state) {
    case PX_EX_CONNECT:
      EX_ASSERT((ex->up != NULL && !ex->up->connected) || (ex->up == NULL && ex->lookup != NULL));
      break;
    case PX_EX_WAIT:
    case PX_EX_BODY:
    case PX_EX_TUNNEL: EX_ASSERT(ex->up != NULL && ex->up->connected); break;
    case PX_EX_DONE:
    case PX_EX_ABORTED: EX_ASSERT(ex->up == NULL); break;
    case PX_EX_HEAD: EX_ASSERT(0); break; /* no upstream event before the head */
  }
  EX_ASSERT(!ex->client_gone || finished(ex));
#endif
  ex->ops->settle(ex);
}

/* ---- the upstream connection ---- */

/* detach ends |ex|'s use of its upstream connection: back to the pool if
 * |reusable|, else closed. */
static void detach(px_exchange_t *ex, int reusable) {
  px_upconn_t *u = ex->up;
  px_lookup_forget(ex->lookup);
  ex->lookup = NULL;
  if (ex->addr) {
    atomic_fetch_sub(&ex->addr->active, 1);
    ex->addr = NULL;
  }
  if (u == NULL) return;
  ex->up = NULL;
  if (ex->up_h2) {
    ex->up_h2 = 0;
    ex->up_paused = 0;
    ex->up_deadline = 0;
    px_uph2_detach(u, ex);
    return;
  }
  u->ex = NULL;
  if (ex->up_paused && reusable) {
    /* An idle connection is read, so that bytes or a close while idle are
     * seen (and the connection dropped) before anyone reuses it. */
    px_upconn_read_start(u);
  }
  ex->up_paused = 0;
  px_upconn_release(u, reusable);
}

/* up_timer arms the upstream's timer for what it owes now: the connect,
 * or bytes while the request is sent (or the upstream is not taking it)
 * and we are not holding it back. Nothing while the upstream is only
 * waiting for the client's body, or for the client to read. */
static uint64_t read_ms(const px_exchange_t *ex) {
  uint64_t ms = conf_of(ex)->timeouts.upstream_read_ms;
  /* A gRPC deadline longer than ours is the client's to enforce: a
   * long-running call is not cut short by a proxy timeout. */
  return ex->grpc_timeout_ms > ms ? ex->grpc_timeout_ms : ms;
}

static void up_timer(px_exchange_t *ex) {
  px_upconn_t *u = ex->up;
  if (u == NULL || !u->connected) return;
  uint64_t ms = 0;
  if (ex->up_h2) {
    /* One connection, many streams: each keeps its own deadline. The
     * upstream owes the answer once the request is all sent and the
     * client keeps up (flow control holds the upstream back otherwise),
     * and owes window while body bytes wait for it: an upstream that
     * never sent WINDOW_UPDATE held the request (and the client, paused
     * by the full buffer) forever. px_ex__h2_body_sent restarts it. */
    if ((ex->state == PX_EX_WAIT || ex->state == PX_EX_BODY) && ex->up_unconsumed == 0 &&
        (ex->req_done || ex->up_out.len > 0))
      ms = read_ms(ex);
    ex->up_deadline = ms ? px_now(&ex->w->loop) + ms : 0;
    px_uph2_watch(u);
    return;
  }
  if (ex->state == PX_EX_WAIT) {
    if (ex->req_done || px_upconn_write_queue(u) > 0) ms = read_ms(ex);
  } else if (ex->state == PX_EX_BODY) {
    if (!ex->up_paused) ms = read_ms(ex);
  }
  px_lazy_set(&u->timer, &u->tl, px_upconn_on_timer, ms);
}

/* fail ends |ex| after an error: an answer with |status| when nothing has
 * gone to the client yet, else ABORTED (the stream resets). |up_fault|
 * says whether the upstream itself failed (counted against its health). */
static void fail(px_exchange_t *ex, int status, const char *why, int up_fault) {
  const char *name = ex->up && ex->up->addr ? ex->up->addr->conf->text : "-";
  GH_DEBUG("proxy", "%s: upstream %s: %s", ex->client_ip, name, why);
  if (up_fault && ex->up) px_upstream_mark_failed(ex->up->addr, why);
  detach(ex, 0);
  if (finished(ex)) return;
  if (ex->client_gone) {
    set_state(ex, PX_EX_ABORTED);
  } else if (ex->resp_head_sent) {
    GH_WARN("proxy", "%s: upstream %s failed mid-response: %s", ex->host ? ex->host : "-", name, why);
    set_state(ex, PX_EX_ABORTED);
  } else {
    GH_WARN("proxy", "%s: answering %d: %s", ex->host ? ex->host : "-", status, why);
    ex->ops->error(ex, status, why);
    set_state(ex, PX_EX_DONE);
  }
}

static void send_head(px_exchange_t *ex) {
  px_upconn_t *u = ex->up;
  px_upconn_write(u, ex->up_head.p, ex->up_head.len);
  if (ex->up_out.len) {
    px_upconn_write(u, ex->up_out.p, ex->up_out.len);
    ex->req_body_sent_any = 1;
    ex->up_out.len = 0;
  }
}

/* connect_failed: the connection to endpoint |a| could not be made (the
 * exchange is detached from it). Back off from the endpoint and try
 * another one; when none is usable and |a| came from a DNS name, look the
 * name up again first and wait for the answer (once per request): the
 * backend may have moved. */
static void connect_failed(px_exchange_t *ex, px_addr_t *a, const char *why) {
  px_worker_t *w = ex->w;
  px_upstream_mark_failed(a, why);
  px_target_t *t = a->target;
  if (t->is_name && !ex->re_resolved && !px_upstream_usable(ex->group, a)) {
    ex->re_resolved = 1;
    ex->lookup = px_addr_refresh_for(w, ex->gen, t, ex);
    if (ex->lookup != NULL) return; /* px_ex__resolved goes on */
  }
  px_addr_refresh(w, ex->gen, t, 1);
  connect_next(ex, a);
}

void px_ex__resolved(px_exchange_t *ex, int changed) {
  EX_ASSERT(ex->state == PX_EX_CONNECT && ex->up == NULL);
  /* New addresses earn the request one more try, at them. */
  if (changed && ex->tries > 0) ex->tries--;
  connect_next(ex, NULL);
  settle(ex);
}

static void attach(px_exchange_t *ex, px_upconn_t *u) {
  ex->up = u;
  u->ex = ex;
  u->got_bytes = 0;
  px_uph1_begin(u);
}

void px_ex__up_connected(px_upconn_t *u, int status, const char *why) {
  if (u->h2) {
    px_uph2_connected(u, status, why);
    return;
  }
  px_exchange_t *ex = u->ex;
  if (ex == NULL) { /* the client left while we were connecting */
    px_upconn_close(u);
    return;
  }
  EX_ASSERT(ex->state == PX_EX_CONNECT);
  if (status < 0) {
    char ep[INET6_ADDRSTRLEN + 8];
    px_addr_text(u->addr, ep, sizeof(ep));
    if (why == NULL) why = uv_strerror(status);
    GH_WARN("proxy", "upstream %s (%s): connect: %s", u->addr->conf->text, ep, why);
    px_addr_t *a = u->addr;
    char what[128];
    snprintf(what, sizeof(what), "connect: %s", why);
    detach(ex, 0);
    connect_failed(ex, a, what);
    settle(ex);
    return;
  }
  u->connected = 1;
  px_upconn_read_start(u);
  set_state(ex, PX_EX_WAIT);
  send_head(ex);
  up_timer(ex);
  /* The body the client sent while we connected is on its way now. */
  if (!ex->req_done && px_upconn_write_queue(u) <= limit_of(ex)) ex->ops->want_body(ex);
  settle(ex);
}

/* max_tries: one try per configured address, and one more when a name
 * may have several endpoints (issue 14: a failed connect is retried once
 * on another endpoint). */
static unsigned max_tries(const px_group_t *g) {
  return (unsigned)g->num_targets + (g->any_name ? 1u : 0u);
}

/* dial_failed: a connection to |a| could not even start; |ex| no longer
 * counts on |a| and goes on as after a failed connect. */
static void dial_failed(px_exchange_t *ex, px_addr_t *a) {
  atomic_fetch_sub(&a->active, 1);
  ex->addr = NULL;
  set_state(ex, PX_EX_CONNECT);
  connect_failed(ex, a, "connect: cannot start");
}

/* connect_h2 puts |ex| on an HTTP/2 connection to |a| as a new stream. A
 * name is looked up again when its answer is old, as for HTTP/1.1. */
static void connect_h2(px_exchange_t *ex, px_addr_t *a) {
  px_addr_refresh(ex->w, ex->gen, a->target, 0);
  px_upconn_t *u = px_uph2_get(ex->w, a, ex->gen);
  if (u == NULL) {
    dial_failed(ex, a);
    return;
  }
  ex->up = u;
  ex->up_h2 = 1;
  set_state(ex, u->connected ? PX_EX_WAIT : PX_EX_CONNECT);
  if (px_uph2_attach(u, ex) != 0) {
    fail(ex, 502, "cannot send the request to the upstream", 0);
    return;
  }
  up_timer(ex);
}

static void connect_next(px_exchange_t *ex, px_addr_t *avoid) {
  px_group_t *g = ex->group;
  px_worker_t *w = ex->w;
  if (g->num_targets == 0) {
    fail(ex, 502, "no upstream configured", 0);
    return;
  }
  if (g->h2 && ex->upgrade) {
    fail(ex, 502, "an upgrade (WebSocket) cannot go to an HTTP/2 upstream", 0);
    return;
  }
  if (ex->tries >= max_tries(g)) {
    fail(ex, 502, "every upstream failed", 0);
    return;
  }
  px_addr_t *a = px_upstream_pick(g, avoid);
  if (a == NULL) { /* no name of the group has resolved yet */
    for (size_t k = 0; k < g->num_targets; k++) px_addr_refresh(w, ex->gen, g->targets[k], 1);
    fail(ex, 502, "upstream not resolved", 0);
    return;
  }
  ex->tries++;
  ex->addr = a;
  ex->upstream_name = a->conf->text;
  unsigned slot = atomic_load_explicit(&a->stat_slot, memory_order_relaxed);
  if (slot == 0) {
    slot = px_metrics_upstream_slot(a->conf->text);
    atomic_store_explicit(&a->stat_slot, slot, memory_order_relaxed);
  }
  ex->up_slot = (uint8_t)slot;
  atomic_fetch_add(&a->active, 1);
  if (g->h2) {
    connect_h2(ex, a);
    return;
  }
  px_upconn_t *u = ex->gen == w->gen ? px_upconn_get_idle(w, a, ex->client_ip) : NULL;
  if (u) {
    attach(ex, u);
    set_state(ex, PX_EX_WAIT);
    send_head(ex);
    up_timer(ex);
    return;
  }
  px_addr_refresh(w, ex->gen, a->target, 0);
  u = px_upconn_dial(w, a);
  if (u == NULL) {
    dial_failed(ex, a);
    return;
  }
  u->gen = px_gen_ref(ex->gen);
  attach(ex, u);
  set_state(ex, PX_EX_CONNECT);
  px_lazy_set(&u->timer, &u->tl, px_upconn_on_timer, conf_of(ex)->timeouts.upstream_connect_ms);
}

/* ---- calls from the stream (never free, never close the stream) ---- */

/* grpc_timeout parses a grpc-timeout value ("TimeoutValue TimeoutUnit":
 * 1 to 8 digits, then H, M, S, m, u or n) into milliseconds, rounded up;
 * 0 when it is not one. */
static uint64_t grpc_timeout(gh_str_t v) {
  if (v.len < 2 || v.len > 9) return 0;
  uint64_t n = 0;
  for (size_t i = 0; i + 1 < v.len; i++) {
    if (v.ptr[i] < '0' || v.ptr[i] > '9') return 0;
    n = n * 10 + (uint64_t)(v.ptr[i] - '0');
  }
  switch (v.ptr[v.len - 1]) {
    case 'H': return n * 3600000;
    case 'M': return n * 60000;
    case 'S': return n * 1000;
    case 'm': return n;
    case 'u': return (n + 999) / 1000;
    case 'n': return (n + 999999) / 1000000;
    default: return 0;
  }
}

void px_ex_start(px_exchange_t *ex) {
  EX_ASSERT(ex->state == PX_EX_HEAD);
  gh_str_t ct = px_hdrs_get(&ex->req, GH_STR("content-type"));
  ex->grpc = ct.len >= 16 && gh_str_ieq((gh_str_t){ct.ptr, 16}, GH_STR("application/grpc"));
  if (ex->grpc) ex->grpc_timeout_ms = grpc_timeout(px_hdrs_get(&ex->req, GH_STR("grpc-timeout")));
  connect_next(ex, NULL);
}

int px_grpc_status(int status) {
  switch (status) {
    case 400: return 13; /* INTERNAL */
    case 401: return 16; /* UNAUTHENTICATED */
    case 403: return 7;  /* PERMISSION_DENIED */
    case 404: return 12; /* UNIMPLEMENTED */
    case 413: return 8;  /* RESOURCE_EXHAUSTED */
    case 429:
    case 502:
    case 503:
    case 504: return 14; /* UNAVAILABLE */
    default: return 2;   /* UNKNOWN */
  }
}

size_t px_grpc_message(char *out, size_t cap, int status, const char *why) {
  /* Percent-encoded as gRPC wants (PROTOCOL-HTTP2.md: grpc-message). */
  char text[256];
  snprintf(text, sizeof(text), "%d %s: %s", status, px_reason(status), why ? why : "");
  static const char hex[] = "0123456789ABCDEF";
  size_t k = 0;
  for (const unsigned char *p = (const unsigned char *)text; *p && k + 4 < cap; p++) {
    if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
      out[k++] = (char)*p;
    } else {
      out[k++] = '%';
      out[k++] = hex[*p >> 4];
      out[k++] = hex[*p & 15];
    }
  }
  out[k] = '\0';
  return k;
}

/* h2_body queues body bytes for an HTTP/2 upstream's data provider. */
static int h2_body(px_exchange_t *ex, const char *p, size_t len) {
  px_buf_append(&ex->up_out, p, len);
  if (ex->up) {
    px_uph2_body(ex->up, ex);
    up_timer(ex);
  }
  int full = ex->up_out.len > limit_of(ex);
  ex->up_body_blocked = (uint8_t)full;
  return full;
}

int px_ex_req_body(px_exchange_t *ex, const char *p, size_t len) {
  switch (ex->state) {
    case PX_EX_CONNECT:
      if (ex->up_h2) return h2_body(ex, p, len);
      px_buf_append(&ex->up_out, p, len);
      return ex->up_out.len > limit_of(ex);
    case PX_EX_WAIT:
    case PX_EX_BODY:
      if (ex->up == NULL) return 0;
      if (ex->up_h2) return h2_body(ex, p, len);
      px_upconn_write(ex->up, p, len);
      ex->req_body_sent_any = 1;
      up_timer(ex);
      return px_upconn_write_queue(ex->up) > limit_of(ex);
    default:
      /* Answered, failed or gone: the body has nowhere to go. */
      return 0;
  }
}

int px_ex_req_end(px_exchange_t *ex) {
  ex->req_done = 1;
  if (ex->up_h2 && ex->up) px_uph2_body(ex->up, ex);
  up_timer(ex);
  return 0;
}

int px_ex_req_chunk(px_exchange_t *ex, const char *p, size_t len) {
  if (ex->group != NULL && ex->group->h2) return px_ex_req_body(ex, p, len);
  char size[24];
  int full = px_ex_req_body(ex, size, px_chunk_head(size, len));
  full |= px_ex_req_body(ex, p, len);
  full |= px_ex_req_body(ex, "\r\n", 2);
  return full;
}

int px_ex_req_last_chunk(px_exchange_t *ex) {
  /* HTTP/2 ends the body with END_STREAM (or the trailers) instead. */
  if (ex->group != NULL && ex->group->h2) return 0;
  return px_uph1_last_chunk(ex);
}

int px_ex_tunnel_up(px_exchange_t *ex, const char *p, size_t len) {
  if (ex->state != PX_EX_TUNNEL || ex->up == NULL) return 0;
  px_upconn_write(ex->up, p, len);
  return px_upconn_write_queue(ex->up) > limit_of(ex);
}

void px_ex_tunnel_end(px_exchange_t *ex) {
  if (ex->state != PX_EX_TUNNEL || ex->up == NULL) return;
  px_upconn_shutdown(ex->up);
}

void px_ex_client_drained(px_exchange_t *ex) {
  if (!ex->up_paused || ex->up == NULL) return;
  if (ex->up_h2) {
    px_uph2_consume(ex->up, ex);
    up_timer(ex);
    return;
  }
  ex->up_paused = 0;
  px_upconn_read_start(ex->up);
  up_timer(ex);
}

void px_ex_client_gone(px_exchange_t *ex) {
  ex->client_gone = 1;
  detach(ex, 0);
  if (!finished(ex)) set_state(ex, PX_EX_ABORTED);
}

void px_ex_local(px_exchange_t *ex, int status) {
  detach(ex, 0);
  ex->status = status;
  if (!finished(ex)) set_state(ex, PX_EX_DONE);
}

/* ---- the exchange's own events: each ends with ops->settle ---- */

void px_upconn_on_timer(uv_timer_t *t) {
  px_upconn_t *u = t->data;
  if (!px_lazy_expired(t, &u->tl, px_upconn_on_timer)) return;
  if (u->h2) {
    px_uph2_on_timer(u);
    return;
  }
  px_exchange_t *ex = u->ex;
  if (ex == NULL) { /* idle in the pool too long */
    px_upconn_close(u);
    return;
  }
  if (!u->connected) {
    char ep[INET6_ADDRSTRLEN + 8];
    px_addr_text(u->addr, ep, sizeof(ep));
    GH_WARN("proxy", "upstream %s (%s): connect timeout", u->addr->conf->text, ep);
    px_addr_t *a = u->addr;
    detach(ex, 0);
    connect_failed(ex, a, "connect timeout");
  } else {
    /* Armed only while the upstream owed bytes (up_timer): its silence. */
    fail(ex, 504, "upstream read timeout", 1);
  }
  settle(ex);
}

void px_ex__up_drained(px_exchange_t *ex) {
  if (ex->state == PX_EX_CONNECT || finished(ex)) return;
  up_timer(ex);
  if (!ex->req_done || ex->state == PX_EX_TUNNEL) ex->ops->want_body(ex);
  settle(ex);
}

/* backpressure stops reading the upstream while the client is behind. */
static void backpressure(px_exchange_t *ex) {
  if (ex->up == NULL || ex->up_paused) return;
  if (ex->ops->queued(ex) > limit_of(ex)) {
    px_upconn_read_stop(ex->up);
    ex->up_paused = 1;
  }
}

/* response_end: the whole response went to the stream. The connection is
 * pooled only if the response ended exactly at the end of what was read,
 * the upstream did not ask to close, and the whole request was sent. */
static void response_end(px_exchange_t *ex, size_t rest) {
  px_upconn_t *u = ex->up;
  int reusable = rest == 0 && u != NULL && u->framing != PX_BODY_CLOSE &&
                 llhttp_should_keep_alive(&u->parser) && ex->req_done && ex->up_out.len == 0 &&
                 px_upconn_write_queue(u) == 0;
  if (u) px_lazy_set(&u->timer, &u->tl, px_upconn_on_timer, 0);
  detach(ex, reusable);
  set_state(ex, PX_EX_DONE);
}

/* relay feeds response bytes through the upstream codec to the stream. */
static void relay(px_exchange_t *ex, px_upconn_t *u, const char *p, size_t len) {
  while (len > 0 || u->phase == PX_UPH1_BODY) {
    gh_str_t data = {NULL, 0};
    px_up_event_t ev = px_uph1_next(u, ex, &p, &len, &data);
    switch (ev) {
      case PX_UP_NEED:
        return;
      case PX_UP_INTERIM:
        ex->ops->interim(ex);
        break;
      case PX_UP_HEAD:
        ex->status = ex->resp_status;
        ex->resp_head_sent = 1;
        set_state(ex, PX_EX_BODY);
        ex->ops->head(ex);
        break;
      case PX_UP_DATA:
        ex->resp_bytes += data.len;
        ex->ops->body(ex, data.ptr, data.len);
        break;
      case PX_UP_END:
        ex->ops->end(ex);
        response_end(ex, len);
        return;
      case PX_UP_UPGRADE:
        if (!ex->upgrade) {
          fail(ex, 502, "101 to a request that asked for no upgrade", 1);
          return;
        }
        ex->status = 101;
        ex->resp_head_sent = 1;
        set_state(ex, PX_EX_TUNNEL);
        px_lazy_set(&u->timer, &u->tl, px_upconn_on_timer, 0);
        ex->ops->tunnel(ex, p, len);
        return;
      case PX_UP_BAD:
        fail(ex, 502, "invalid response from upstream", 1);
        return;
    }
    /* An op may have closed the client (a failed write): stop here. */
    if (ex->client_gone || ex->up != u) return;
  }
}

/* up_closed: the upstream closed or reset the connection (|err|). */
static void up_closed(px_exchange_t *ex, px_upconn_t *u, ssize_t err) {
  switch (ex->state) {
    case PX_EX_TUNNEL:
      detach(ex, 0);
      set_state(ex, PX_EX_DONE);
      return;
    case PX_EX_WAIT:
      if (!u->got_bytes && u->reused && !ex->req_body_sent_any && !ex->retried_stale) {
        /* The upstream closed an idle connection as we reused it: retry
         * once on a new one. Not a failure of the upstream. */
        ex->retried_stale = 1;
        detach(ex, 0);
        ex->tries = 0;
        connect_next(ex, NULL);
        return;
      }
      break;
    case PX_EX_BODY:
      if (err == UV_EOF && px_uph1_eof_ends(u)) { /* a close-delimited body ends here */
        ex->ops->end(ex);
        response_end(ex, 0);
        return;
      }
      break;
    default:
      break;
  }
  fail(ex, 502, err == UV_EOF ? "upstream closed the connection early" : uv_strerror((int)err), 1);
}

void px_ex__up_read(px_upconn_t *u, ssize_t nread, const char *p) {
  if (u->h2) {
    px_uph2_read(u, nread, p);
    return;
  }
  px_exchange_t *ex = u->ex;
  if (ex == NULL) {
    /* Bytes or a close on an idle connection: it can never be reused
     * (a late or unsolicited answer must not reach another client). */
    px_upconn_close(u);
    return;
  }
  if (nread < 0) {
    up_closed(ex, u, nread);
    settle(ex);
    return;
  }
  u->got_bytes = 1;
  switch (ex->state) {
    case PX_EX_TUNNEL:
      ex->ops->tunnel_data(ex, p, (size_t)nread);
      break;
    case PX_EX_WAIT:
    case PX_EX_BODY:
      relay(ex, u, p, (size_t)nread);
      break;
    default:
      /* Nothing is owed in any other state. */
      fail(ex, 502, "unexpected bytes from upstream", 1);
      break;
  }
  if (!finished(ex) && !ex->client_gone) {
    backpressure(ex);
    up_timer(ex);
  }
  settle(ex);
}

/* ---- an HTTP/2 upstream's events (uph2.c settles after each) ---- */

void px_ex__settle(px_exchange_t *ex) { settle(ex); }

void px_ex__h2_ready(px_exchange_t *ex) {
  if (ex->state != PX_EX_CONNECT) return;
  set_state(ex, PX_EX_WAIT);
  up_timer(ex);
  if (!ex->req_done && ex->up_out.len <= limit_of(ex)) ex->ops->want_body(ex);
}

void px_ex__h2_connect_failed(px_exchange_t *ex) {
  px_addr_t *a = ex->up->addr;
  detach(ex, 0);
  connect_failed(ex, a, NULL); /* uph2.c recorded why */
  settle(ex);
}

void px_ex__h2_head(px_exchange_t *ex, int end_stream) {
  if (ex->state != PX_EX_WAIT) return;
  int status = ex->resp_status;
  if (status == 101) {
    fail(ex, 502, "101 from an HTTP/2 upstream", 1);
    return;
  }
  if (status < 200) {
    ex->ops->interim(ex);
    return;
  }
  /* The body's length is what content-length says (nghttp2 holds the DATA
   * to it), else unknown: chunked toward an HTTP/1.1 client. */
  gh_str_t cl = px_hdrs_get(&ex->resp, GH_STR("content-length"));
  uint64_t v = 0;
  int have_len = cl.len > 0 && cl.len <= 19;
  for (size_t i = 0; have_len && i < cl.len; i++) {
    if (cl.ptr[i] < '0' || cl.ptr[i] > '9') have_len = 0;
    else v = v * 10 + (uint64_t)(cl.ptr[i] - '0');
  }
  if (status == 204) ex->resp_framing = PX_BODY_NONE;
  else if (have_len) ex->resp_framing = PX_BODY_LENGTH, ex->resp_len = v;
  else if (ex->method == HTTP_HEAD || status == 304) ex->resp_framing = PX_BODY_NONE;
  /* A head with END_STREAM has an empty body: said so to an HTTP/1.1
   * client, and a gRPC trailers-only answer stays one HEADERS frame. */
  else if (end_stream) ex->resp_framing = PX_BODY_LENGTH, ex->resp_len = 0;
  else ex->resp_framing = PX_BODY_CHUNKED;
  px_hdrs_reset(&ex->resp_tr);
  ex->status = status;
  ex->resp_head_sent = 1;
  set_state(ex, PX_EX_BODY);
  ex->ops->head(ex);
  up_timer(ex);
}

void px_ex__h2_data(px_exchange_t *ex, const char *p, size_t len) {
  if (ex->state != PX_EX_BODY) return;
  ex->resp_bytes += len;
  ex->ops->body(ex, p, len);
}

void px_ex__h2_end(px_exchange_t *ex) {
  if (ex->state != PX_EX_BODY) {
    if (!finished(ex)) fail(ex, 502, "the upstream ended the stream without a response", 1);
    return;
  }
  ex->ops->end(ex);
  detach(ex, 1);
  set_state(ex, PX_EX_DONE);
}

void px_ex__h2_reset(px_exchange_t *ex, int retry, const char *why) {
  if (finished(ex)) return;
  if (retry && !ex->resp_head_sent && !ex->req_body_sent_any && !ex->retried_stale &&
      !ex->client_gone) {
    /* Not processed by the upstream (RFC 9113 8.7): safe to send again. */
    ex->retried_stale = 1;
    detach(ex, 0);
    ex->tries = 0;
    connect_next(ex, NULL);
    return;
  }
  fail(ex, 502, why, 1);
}

void px_ex__h2_timeout(px_exchange_t *ex) {
  if (!finished(ex)) fail(ex, 504, "upstream read timeout", 1);
}

void px_ex__h2_body_sent(px_exchange_t *ex) {
  if (!finished(ex)) up_timer(ex);
}

void px_ex__h2_want_body(px_exchange_t *ex) {
  if (!finished(ex) && !ex->req_done) ex->ops->want_body(ex);
}

/* ---- allocation ---- */

/* Exchanges are recycled per worker with their buffers, so a request
 * costs no allocation in the steady state. Buffers that grew large (a big
 * request head) are not kept. The cache covers the requests a worker has
 * in flight at once (HTTP/2 clients keep hundreds): a few KiB each. */
enum { EX_CACHE_MAX = 512, EX_KEEP_BYTES = 16 * 1024 };

static int small_hdrs(const px_hdrs_t *hs) { return hs->cap <= EX_KEEP_BYTES && hs->cap_h <= 128; }

px_exchange_t *px_ex_new(px_worker_t *w, const px_stream_ops_t *ops, void *stream) {
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
  ex->state = PX_EX_HEAD;
  ex->w = w;
  ex->ops = ops;
  ex->stream = stream;
  ex->gen = px_gen_ref(w->gen);
  ex->start_ms = px_now(&w->loop);
  return ex;
}

static void release_buffers(px_exchange_t *ex) {
  px_hdrs_cleanup(&ex->req);
  px_hdrs_cleanup(&ex->resp);
  px_hdrs_cleanup(&ex->req_tr);
  px_hdrs_cleanup(&ex->resp_tr);
  px_buf_free(&ex->up_out);
  px_buf_free(&ex->up_head);
}

void px_ex_free(px_exchange_t *ex) {
  if (ex == NULL) return;
  detach(ex, 0);
  /* Marked by an HTTP/2 upstream's callback after it was detached, and
   * not settled yet (uph2.c's on_check): it must not stay listed. */
  gh_list_remove(&ex->dirty_link);
  gh_free(ex->host);
  ex->host = NULL;
  gh_free(ex->http01_answer);
  ex->http01_answer = NULL;
  px_gen_unref(ex->gen);
  ex->gen = NULL;
  ex->stream = NULL;
  px_worker_t *w = ex->w;
  if (w->num_ex_cache < EX_CACHE_MAX && small_hdrs(&ex->req) && small_hdrs(&ex->resp) &&
      small_hdrs(&ex->req_tr) && small_hdrs(&ex->resp_tr) && ex->up_out.cap <= EX_KEEP_BYTES &&
      ex->up_head.cap <= EX_KEEP_BYTES) {
    ex->next_free = w->ex_cache;
    w->ex_cache = ex;
    w->num_ex_cache++;
    return;
  }
  release_buffers(ex);
  gh_free(ex);
}

void px_ex_cache_free(px_worker_t *w) {
  while (w->ex_cache) {
    px_exchange_t *ex = w->ex_cache;
    w->ex_cache = ex->next_free;
    release_buffers(ex);
    gh_free(ex);
  }
  w->num_ex_cache = 0;
}
