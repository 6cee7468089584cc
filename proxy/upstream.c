/* upstream.c: choosing an upstream, dialing it, keeping idle connections
 * per worker, and health (passive back-off shared by all workers, plus an
 * optional active check run by worker 0). */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "proxy/conn.h"
#include "proxy/proxyproto.h"
#include "proxy/upstream.h"

static uint64_t now_ms(void) { return gh_now_ms(); }

static int usable(px_addr_t *a, uint64_t now) {
  return atomic_load(&a->live) && atomic_load(&a->down_until_ms) <= now &&
         !atomic_load(&a->unhealthy);
}

/* ep_at returns the |i|th endpoint slot of |g| in order (targets, then
 * their used slots), or NULL past the end. */
static px_addr_t *ep_at(px_group_t *g, size_t i) {
  for (size_t k = 0; k < g->num_targets; k++) {
    px_target_t *t = g->targets[k];
    size_t n = atomic_load(&t->num_used);
    if (i < n) return &t->eps[i];
    i -= n;
  }
  return NULL;
}

px_addr_t *px_upstream_pick(px_group_t *g, px_addr_t *avoid) {
  uint64_t now = now_ms();
  size_t total = 0;
  for (size_t k = 0; k < g->num_targets; k++) total += atomic_load(&g->targets[k]->num_used);
  if (total == 0) return NULL;
  unsigned start = atomic_fetch_add(&g->rr, 1);
  px_addr_t *best = NULL;
  for (size_t k = 0; k < total; k++) {
    px_addr_t *a = ep_at(g, (start + k) % total);
    if (a == NULL || a == avoid || !usable(a, now)) continue;
    if (g->conf->balance == CONF_BALANCE_ROUND_ROBIN) return a;
    if (best == NULL || atomic_load(&a->active) < atomic_load(&best->active)) best = a;
  }
  if (best) return best;
  /* Everything is marked down: try the one that failed longest ago rather
   * than refusing outright, so recovery is noticed. */
  size_t live = 0;
  for (size_t k = 0; k < total; k++) {
    px_addr_t *a = ep_at(g, k);
    if (a != NULL && atomic_load(&a->live)) live++;
  }
  for (size_t k = 0; k < total; k++) {
    px_addr_t *a = ep_at(g, k);
    if (a == NULL || !atomic_load(&a->live)) continue;
    if (a == avoid && live > 1) continue;
    if (best == NULL || atomic_load(&a->down_until_ms) < atomic_load(&best->down_until_ms)) best = a;
  }
  return best;
}

void px_addr_note_failure(px_addr_t *a, const char *why) {
  pthread_mutex_lock(&a->target->sa_lock);
  a->last_fail_ms = gh_wall_ms();
  snprintf(a->last_fail, sizeof(a->last_fail), "%s", why);
  pthread_mutex_unlock(&a->target->sa_lock);
}

void px_upstream_mark_failed(px_addr_t *a, const char *why) {
  atomic_store(&a->down_until_ms, now_ms() + a->group->conf->fail_backoff_ms);
  if (why != NULL) px_addr_note_failure(a, why);
}

/* ---- names looked up again ---- */

struct px_lookup {
  uv_getaddrinfo_t req;
  px_target_t *target;
  px_gen_t *gen;      /* keeps |target| alive */
  px_exchange_t *ex;  /* waiting for the answer; NULL once forgotten */
  unsigned answers;   /* target->answers when it started */
};

int px_upstream_usable(px_group_t *g, px_addr_t *avoid) {
  uint64_t now = now_ms();
  for (size_t k = 0; k < g->num_targets; k++) {
    px_target_t *t = g->targets[k];
    size_t n = atomic_load(&t->num_used);
    for (size_t e = 0; e < n; e++) {
      if (&t->eps[e] != avoid && usable(&t->eps[e], now)) return 1;
    }
  }
  return 0;
}

void px_lookup_forget(px_lookup_t *l) {
  if (l) l->ex = NULL;
}

static void on_lookup(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  px_lookup_t *l = req->data;
  px_target_t *t = l->target;
  if (status == 0 && res != NULL && px_target_from_addrinfo(t, res, 0) > 0) {
    atomic_store(&t->resolved_ms, now_ms());
  } else if (status != UV_ECANCELED) {
    GH_WARN("proxy", "upstream %s: cannot resolve: %s", t->conf->text,
            status ? uv_strerror(status) : "no address");
  }
  uv_freeaddrinfo(res);
  atomic_store(&t->resolving, 0);
  px_exchange_t *ex = l->ex;
  int changed = atomic_load(&t->answers) != l->answers;
  px_gen_unref(l->gen);
  gh_free(l);
  if (ex != NULL && status != UV_ECANCELED) {
    ex->lookup = NULL;
    px_ex__resolved(ex, changed);
  }
}

static px_lookup_t *refresh(px_worker_t *w, px_gen_t *gen, px_target_t *t, int failed,
                            px_exchange_t *ex) {
  if (!t->is_name) return NULL;
  uint64_t now = now_ms();
  if (now - atomic_load(&t->tried_ms) < 1000) return NULL; /* at most once a second */
  if (!failed && now - atomic_load(&t->resolved_ms) < PX_RESOLVE_EVERY_MS) return NULL;
  int idle = 0;
  if (!atomic_compare_exchange_strong(&t->resolving, &idle, 1)) return NULL;
  atomic_store(&t->tried_ms, now);
  px_lookup_t *l = gh_calloc(1, sizeof(*l));
  l->target = t;
  l->gen = px_gen_ref(gen);
  l->ex = ex;
  l->answers = atomic_load(&t->answers);
  l->req.data = l;
  struct addrinfo hints = {0};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  char port[8];
  snprintf(port, sizeof(port), "%u", t->conf->port);
  int rc = uv_getaddrinfo(&w->loop, &l->req, on_lookup, t->conf->host, port, &hints);
  if (rc != 0) {
    GH_WARN("proxy", "upstream %s: cannot resolve: %s", t->conf->text, uv_strerror(rc));
    atomic_store(&t->resolving, 0);
    px_gen_unref(l->gen);
    gh_free(l);
    return NULL;
  }
  return l;
}

void px_addr_refresh(px_worker_t *w, px_gen_t *gen, px_target_t *t, int failed) {
  refresh(w, gen, t, failed, NULL);
}

px_lookup_t *px_addr_refresh_for(px_worker_t *w, px_gen_t *gen, px_target_t *t, px_exchange_t *ex) {
  return refresh(w, gen, t, 1, ex);
}

/* ---- connections ---- */

static void up_closed(uv_handle_t *h) {
  px_upconn_t *u = h->data;
  if (--u->handles_open > 0) return;
  gh_list_remove(&u->all);
  px_uph2_free(u);
  SSL_free(u->ssl);
  px_buf_free(&u->tls_out);
  px_gen_unref(u->gen);
  gh_free(u);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  px_upconn_t *u = h->data;
  buf->base = u->w->rbuf;
  buf->len = sizeof(u->w->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  px_upconn_t *u = s->data;
  if (nread == 0) return;
  if (u->ssl != NULL) px_uptls_read(u, nread, buf->base);
  else px_ex__up_read(u, nread, buf->base);
}

void px_upconn_read_start(px_upconn_t *u) {
  if (!uv_is_closing((uv_handle_t *)&u->tcp)) uv_read_start((uv_stream_t *)&u->tcp, on_alloc, on_read);
}

void px_upconn_read_stop(px_upconn_t *u) { uv_read_stop((uv_stream_t *)&u->tcp); }

static void on_up_shutdown(uv_shutdown_t *req, int status) {
  (void)req, (void)status; /* a failure shows on the read side */
}

void px_upconn_shutdown(px_upconn_t *u) {
  if (u->shutdown_req.type == UV_SHUTDOWN || uv_is_closing((uv_handle_t *)&u->tcp)) return;
  px_uptls_shutdown(u);
  uv_shutdown(&u->shutdown_req, (uv_stream_t *)&u->tcp, on_up_shutdown);
}

/* send_proxy_header opens |u| with a PROXY v2 header naming its
 * exchange's client (issue 14: send_proxy_protocol), and remembers the
 * client: the connection then serves that client only. */
static void send_proxy_header(px_upconn_t *u) {
  px_conn_t *c = u->ex->conn;
  px_proxyproto_t h;
  memset(&h, 0, sizeof(h));
  h.local = c == NULL || c->client_family == 0;
  if (!h.local) {
    h.family = c->client_family;
    size_t n = h.family == AF_INET ? 4 : 16;
    memcpy(h.src, c->client_addr, n);
    h.src_port = c->client_port;
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
      if (ss.ss_family == AF_INET && h.family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        memcpy(h.dst, &in->sin_addr, 4);
        h.dst_port = ntohs(in->sin_port);
      } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        h.dst_port = ntohs(in6->sin6_port);
        if (h.family == AF_INET6) memcpy(h.dst, &in6->sin6_addr, 16);
        else if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) memcpy(h.dst, in6->sin6_addr.s6_addr + 12, 4);
      }
    }
  }
  uint8_t hdr[PX_PROXYPROTO_V2_OUT];
  uv_buf_t b = uv_buf_init((char *)hdr, (unsigned)px_proxyproto_v2(hdr, &h));
  px_upconn_raw_writev(u, &b, 1);
  snprintf(u->pp_client, sizeof(u->pp_client), "%s", u->ex->client_ip ? u->ex->client_ip : "");
}

/* on_tcp_connect: the TCP connection is made (or failed). Plain
 * upstreams are ready; TLS ones start their handshake first. */
static void on_tcp_connect(uv_connect_t *req, int status) {
  px_upconn_t *u = req->data;
  if (status == UV_ECANCELED) return;
  if (status < 0 || (u->ex == NULL && u->h2 == NULL)) {
    px_ex__up_connected(u, status, NULL);
    return;
  }
  uv_tcp_nodelay(&u->tcp, 1);
  if (u->addr->conf->send_proxy && u->ex != NULL) send_proxy_header(u);
  SSL_CTX *ctx = u->addr->target->tls_ctx;
  if (ctx == NULL) {
    px_ex__up_connected(u, 0, NULL);
    return;
  }
  px_upconn_read_start(u);
  int r = px_uptls_begin(u, ctx);
  if (r < 0) px_ex__up_connected(u, UV_EPROTO, "cannot start the TLS handshake");
  else if (r > 0) px_ex__up_connected(u, 0, NULL);
}

void px_upconn_close(px_upconn_t *u) {
  if (uv_is_closing((uv_handle_t *)&u->tcp)) return;
  if (u->idle) {
    gh_list_remove(&u->link);
    u->w->pools[u->addr->index].num_idle--;
    u->idle = 0;
  }
  u->ex = NULL;
  px_uph2_closing(u);
  uv_close((uv_handle_t *)&u->timer, up_closed);
  uv_close((uv_handle_t *)&u->tcp, up_closed);
}

px_upconn_t *px_upconn_dial(px_worker_t *w, px_addr_t *a) {
  px_upconn_t *u = gh_calloc(1, sizeof(*u));
  u->w = w;
  u->addr = a;
  uv_tcp_init(&w->loop, &u->tcp);
  uv_timer_init(&w->loop, &u->timer);
  u->tcp.data = u->timer.data = u->connect_req.data = u;
  u->handles_open = 2;
  gh_list_insert(&w->upconns, &u->all);
  u->dial_ms = px_now(&w->loop);
  struct sockaddr_storage sa;
  int rc = px_addr_sockaddr(a, &sa, &u->addr_seq) == 0
               ? uv_tcp_connect(&u->connect_req, &u->tcp, (const struct sockaddr *)&sa, on_tcp_connect)
               : UV_EAI_NONAME;
  if (rc != 0) {
    GH_WARN("proxy", "upstream %s: connect: %s", a->conf->text, uv_strerror(rc));
    px_upconn_close(u);
    return NULL;
  }
  return u;
}

/* current: |u| still goes where its endpoint slot points (the name did
 * not drop or replace that address since it was dialled). */
int px_upconn_current(px_upconn_t *u) {
  return atomic_load(&u->addr->live) && atomic_load(&u->addr->seq) == u->addr_seq;
}

px_upconn_t *px_upconn_get_idle(px_worker_t *w, px_addr_t *a, const char *client) {
  px_pool_t *pool = &w->pools[a->index];
  int per_client = a->conf->send_proxy;
  gh_link_t *l = pool->idle.next;
  while (l != &pool->idle) {
    px_upconn_t *u = GH_CONTAINER_OF(l, px_upconn_t, link);
    l = l->next;
    if (!px_upconn_current(u)) { /* the name moved away from this address */
      px_upconn_close(u);
      continue;
    }
    if (per_client && strcmp(u->pp_client, client ? client : "") != 0) continue;
    gh_list_remove(&u->link);
    pool->num_idle--;
    u->idle = 0;
    u->reused = 1;
    return u;
  }
  return NULL;
}

void px_upconn_release(px_upconn_t *u, int reusable) {
  px_worker_t *w = u->w;
  u->ex = NULL;
  px_lazy_set(&u->timer, &u->tl, px_upconn_on_timer, 0);
  const conf_upstream_group_t *g = u->addr->group->conf;
  if (!u->connected && u->gen != NULL && px_now(&w->loop) - u->dial_ms >= 1000) {
    /* The client gave up on a connect that had not finished within a
     * second: as telling as a timeout, which would otherwise never come
     * if every client gives up first. */
    px_addr_refresh(w, u->gen, u->addr->target, 1);
  }
  if (!reusable || u->gen != w->gen || w->draining || !u->connected || !px_upconn_current(u) ||
      w->pools[u->addr->index].num_idle >= g->max_idle) {
    px_upconn_close(u);
    return;
  }
  px_pool_t *pool = &w->pools[u->addr->index];
  gh_list_insert(&pool->idle, &u->link);
  pool->num_idle++;
  u->idle = 1;
  px_lazy_set(&u->timer, &u->tl, px_upconn_on_timer, g->idle_timeout_ms);
}

typedef struct {
  uv_write_t req;
  px_upconn_t *u;
  char data[];
} up_write_t;

static void on_up_write(uv_write_t *req, int status) {
  up_write_t *wr = (up_write_t *)req;
  px_upconn_t *u = wr->u;
  gh_free(wr);
  if (status == UV_ECANCELED || uv_is_closing((uv_handle_t *)&u->tcp)) return;
  px_exchange_t *ex = u->ex;
  if (status < 0) {
    /* The read side sees the reset too and reports it. */
    GH_DEBUG("proxy", "upstream %s: write: %s", u->addr->conf->text, uv_strerror(status));
    return;
  }
  if (u->h2) px_uph2_on_drained(u);
  else if (ex && px_upconn_write_queue(u) < ex->gen->conf->limits.write_queue_bytes) px_ex__up_drained(ex);
}

size_t px_upconn_write_queue(px_upconn_t *u) {
  return uv_stream_get_write_queue_size((uv_stream_t *)&u->tcp);
}

void px_upconn_writev(px_upconn_t *u, const uv_buf_t *bufs, unsigned num) {
  if (u->ssl != NULL) {
    if (!uv_is_closing((uv_handle_t *)&u->tcp)) px_uptls_writev(u, bufs, num);
    return;
  }
  px_upconn_raw_writev(u, bufs, num);
}

void px_upconn_raw_writev(px_upconn_t *u, const uv_buf_t *bufs, unsigned num) {
  if (uv_is_closing((uv_handle_t *)&u->tcp)) return;
  size_t len = 0, off = 0;
  for (unsigned i = 0; i < num; i++) len += bufs[i].len;
  if (len == 0) return;
  if (px_upconn_write_queue(u) == 0) {
    int n = uv_try_write((uv_stream_t *)&u->tcp, bufs, num);
    if (n > 0) off = (size_t)n;
  }
  if (off == len) return;
  /* What the kernel did not take is copied into one write request. */
  up_write_t *wr = gh_malloc(sizeof(*wr) + (len - off));
  wr->u = u;
  size_t at = 0, skip = off;
  for (unsigned i = 0; i < num; i++) {
    size_t bl = bufs[i].len;
    if (skip >= bl) {
      skip -= bl;
      continue;
    }
    memcpy(wr->data + at, bufs[i].base + skip, bl - skip);
    at += bl - skip;
    skip = 0;
  }
  uv_buf_t b = uv_buf_init(wr->data, (unsigned)(len - off));
  if (uv_write(&wr->req, (uv_stream_t *)&u->tcp, &b, 1, on_up_write) != 0) gh_free(wr);
}

void px_upconn_write(px_upconn_t *u, const void *p, size_t len) {
  uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
  px_upconn_writev(u, &b, 1);
}

void px_worker_pools_new(px_worker_t *w, px_gen_t *gen) {
  w->pools = gh_calloc(gen->num_addrs ? gen->num_addrs : 1, sizeof(px_pool_t));
  for (size_t i = 0; i < gen->num_addrs; i++) {
    gh_list_init(&w->pools[i].idle);
    gh_list_init(&w->pools[i].h2);
  }
}

void px_worker_pools_free(px_worker_t *w) {
  if (w->pools == NULL) return;
  for (size_t i = 0; w->gen != NULL && i < w->gen->num_addrs; i++) {
    SSL_SESSION_free(w->pools[i].session);
  }
  gh_free(w->pools);
  w->pools = NULL;
}

void px_worker_pools_close(px_worker_t *w) {
  if (w->gen == NULL || w->pools == NULL) return;
  for (size_t i = 0; i < w->gen->num_addrs; i++) {
    px_pool_t *pool = &w->pools[i];
    while (!gh_list_empty(&pool->idle)) {
      px_upconn_close(GH_CONTAINER_OF(pool->idle.next, px_upconn_t, link));
    }
    /* HTTP/2 connections leave the pool; busy ones close after their
     * last stream (uph2.c). */
    while (!gh_list_empty(&pool->h2)) px_uph2_leave(pool->h2.next);
  }
}

/* ---- active health checks (worker 0) ---- */

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_timer_t timer;
  uv_write_t wreq;
  int handles_open;
  px_addr_t *addr;
  px_gen_t *gen;
  char *req;
  char resp[16];
  size_t resp_len;
  int done;
  char text[INET6_ADDRSTRLEN + 8]; /* the endpoint, for the log */
  /* An upstream spoken to over TLS or HTTP/2 is checked by a TCP connect:
   * the plain HTTP/1.1 GET would fail against it and mark a healthy
   * backend down. */
  int connect_only;
} px_check_t;

static void check_closed(uv_handle_t *h) {
  px_check_t *k = h->data;
  if (--k->handles_open > 0) return;
  px_gen_unref(k->gen);
  gh_free(k->req);
  gh_free(k);
}

static void check_done(px_check_t *k, int healthy, const char *why) {
  if (k->done) return;
  k->done = 1;
  int was = !atomic_load(&k->addr->unhealthy);
  atomic_store(&k->addr->unhealthy, healthy ? 0 : 1);
  if (!healthy) {
    char what[128];
    snprintf(what, sizeof(what), "health check: %s", why);
    px_addr_note_failure(k->addr, what);
  }
  if (was != healthy) {
    if (healthy) GH_INFO("health", "upstream %s (%s) is healthy again", k->addr->conf->text, k->text);
    else GH_WARN("health", "upstream %s (%s) is unhealthy: %s", k->addr->conf->text, k->text, why);
  }
  uv_close((uv_handle_t *)&k->tcp, check_closed);
  uv_close((uv_handle_t *)&k->timer, check_closed);
}

static void check_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  (void)s;
  px_check_t *k = h->data;
  b->base = k->resp + k->resp_len;
  b->len = sizeof(k->resp) - k->resp_len;
}

static void check_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  px_check_t *k = s->data;
  if (n < 0) {
    check_done(k, 0, "closed before answering");
    return;
  }
  k->resp_len += (size_t)n;
  if (k->resp_len >= 12) {
    /* "HTTP/1.x NNN" */
    int ok = memcmp(k->resp, "HTTP/1.", 7) == 0 && (k->resp[9] == '2' || k->resp[9] == '3');
    char why[32];
    snprintf(why, sizeof(why), "status %.3s", k->resp + 9);
    check_done(k, ok, why);
  }
}

static void check_write(uv_write_t *w, int status) {
  px_check_t *k = w->data;
  if (status < 0) check_done(k, 0, uv_strerror(status));
}

static void check_connect(uv_connect_t *r, int status) {
  px_check_t *k = r->data;
  if (status < 0) {
    if (status != UV_ECANCELED) check_done(k, 0, uv_strerror(status));
    return;
  }
  if (k->connect_only) { /* TLS or HTTP/2: reachable is what is checked */
    check_done(k, 1, NULL);
    return;
  }
  uv_buf_t b = uv_buf_init(k->req, (unsigned)strlen(k->req));
  k->wreq.data = k;
  uv_write(&k->wreq, (uv_stream_t *)&k->tcp, &b, 1, check_write);
  uv_read_start((uv_stream_t *)&k->tcp, check_alloc, check_read);
}

static void check_timeout(uv_timer_t *t) { check_done(t->data, 0, "timeout"); }

static void check_start(px_worker_t *w, px_gen_t *gen, px_group_t *g, px_addr_t *a) {
  px_check_t *k = gh_calloc(1, sizeof(*k));
  k->addr = a;
  k->gen = px_gen_ref(gen);
  k->req = gh_asprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: gatehouse-health\r\n"
                       "Connection: close\r\n\r\n", g->conf->health.path, a->conf->text);
  px_addr_text(a, k->text, sizeof(k->text));
  k->connect_only = a->conf->tls || a->conf->protocol != CONF_UP_HTTP1 || a->conf->send_proxy;
  uv_tcp_init(&w->loop, &k->tcp);
  uv_timer_init(&w->loop, &k->timer);
  k->tcp.data = k->timer.data = k->creq.data = k;
  k->handles_open = 2;
  uv_timer_start(&k->timer, check_timeout, g->conf->health.timeout_ms, 0);
  struct sockaddr_storage sa;
  if (px_addr_sockaddr(a, &sa, NULL) != 0) {
    check_done(k, 0, "not resolved");
  } else if (uv_tcp_connect(&k->creq, &k->tcp, (const struct sockaddr *)&sa, check_connect) != 0) {
    check_done(k, 0, "connect failed");
  }
}

static void health_tick(uv_timer_t *t) {
  px_worker_t *w = t->data;
  px_gen_t *gen = w->gen;
  uint64_t now = uv_now(&w->loop);
  for (size_t i = 0; i < gen->num_groups; i++) {
    px_group_t *g = &gen->groups[i];
    if (g->conf->health.path == NULL) continue;
    if (now < g->next_check_ms) continue;
    g->next_check_ms = now + (g->conf->health.interval_ms ? g->conf->health.interval_ms : 10000);
    for (size_t k = 0; k < g->num_targets; k++) {
      px_target_t *tg = g->targets[k];
      /* Each check looks the name up again when its answer is old, so
       * the next round checks the endpoints as they are then. */
      px_addr_refresh(w, gen, tg, atomic_load(&tg->num_used) == 0);
      size_t n = atomic_load(&tg->num_used);
      for (size_t e = 0; e < n; e++) {
        if (atomic_load(&tg->eps[e].live)) check_start(w, gen, g, &tg->eps[e]);
      }
    }
  }
}

void px_health_start(px_worker_t *w) {
  int any = 0;
  for (size_t i = 0; i < w->gen->num_groups; i++) {
    if (w->gen->groups[i].conf->health.path) any = 1;
  }
  uv_timer_stop(&w->health_timer);
  if (any && !w->draining) uv_timer_start(&w->health_timer, health_tick, 0, 1000);
}
