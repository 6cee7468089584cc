/* internal.h: data-plane types shared by the files of proxy/.
 *
 * Threads: one main thread (signals, reload) and N workers. A worker owns
 * its loop, its listening sockets and every connection it accepts, from
 * accept to close. What workers share is read-mostly and lives in a
 * px_gen_t (one configuration generation): the parsed config, the SSL_CTX
 * with its certificate table, and the upstream addresses with their health
 * state (atomics). A reload builds a new generation and hands it to each
 * worker; connections keep working on whatever they hold references to. */
#ifndef GH_PROXY_INTERNAL_H
#define GH_PROXY_INTERNAL_H

#include <llhttp.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <uv.h>

#include "acme/acme.h"
#include "common/common.h"
#include "common/list.h"
#include "conf/conf.h"
#include "proxy/metrics.h"

typedef struct px_worker px_worker_t;
typedef struct px_conn px_conn_t;
typedef struct px_upconn px_upconn_t;
typedef struct px_exchange px_exchange_t;

/* ---- growable byte buffer ---- */
typedef struct {
  char *p;
  size_t len, cap;
} px_buf_t;

/* ---- lazily re-armed timers ----
 * Moving a deadline later costs no timer-heap work: the timer fires at the
 * earlier due time and re-arms itself for the rest. Connections move their
 * deadlines on every request, so this keeps the heap out of the hot path. */
typedef struct {
  uint64_t deadline; /* UINT64_MAX: none */
  uint64_t due;      /* when the uv timer will fire, while active */
} px_lazy_t;

static inline void px_lazy_set(uv_timer_t *t, px_lazy_t *l, uv_timer_cb cb, uint64_t ms) {
  if (ms == 0) {
    l->deadline = UINT64_MAX;
    return;
  }
  l->deadline = uv_now(t->loop) + ms;
  if (!uv_is_active((uv_handle_t *)t) || l->due > l->deadline) {
    uv_timer_start(t, cb, ms, 0);
    l->due = l->deadline;
  }
}

/* px_lazy_expired is called first thing in the timer callback: it returns
 * 1 when the deadline has really passed, else re-arms and returns 0. */
static inline int px_lazy_expired(uv_timer_t *t, px_lazy_t *l, uv_timer_cb cb) {
  if (l->deadline == UINT64_MAX) return 0;
  uint64_t now = uv_now(t->loop);
  if (now < l->deadline) {
    uv_timer_start(t, cb, l->deadline - now, 0);
    l->due = l->deadline;
    return 0;
  }
  return 1;
}

/* ---- upstreams (shared by workers through the generation) ---- */
typedef struct px_group px_group_t;

typedef struct {
  const conf_addr_t *conf;
  px_group_t *group; /* the one group this address belongs to */
  /* Where to connect. An IP literal is fixed at build; a DNS name is
   * resolved again in the background (px_addr_refresh), so |sa| and
   * |sa_len| (0 = not resolved yet) are read and written under |sa_lock|. */
  struct sockaddr_storage sa;
  socklen_t sa_len;
  int is_name;
  pthread_mutex_t sa_lock;
  atomic_uint_fast64_t resolved_ms; /* last successful resolution */
  atomic_uint_fast64_t tried_ms;    /* last attempt */
  atomic_int resolving;             /* a lookup is in flight */
  atomic_uint_fast64_t down_until_ms; /* passive health: skipped until then */
  atomic_int unhealthy;               /* active health check result */
  atomic_int active;                  /* requests in flight, all workers */
  size_t index;                       /* into gen->addrs */
  atomic_uint stat_slot;              /* px_metrics_upstream_slot, 0 until known */
} px_addr_t;

struct px_group {
  const conf_upstream_group_t *conf;
  px_addr_t **addrs;
  size_t num_addrs;
  atomic_uint rr;
  uint64_t next_check_ms; /* active health check; worker 0 only */
};

typedef struct {
  const char *prefix;
  size_t prefix_len;
  px_group_t *group;
} px_route_t;

typedef struct {
  const conf_site_t *conf;
  px_group_t *group;
  px_route_t *routes; /* sorted longest prefix first */
  size_t num_routes;
  char *hsts_header; /* full header line or NULL */
} px_site_t;

typedef struct px_gen {
  atomic_int refs;
  conf_t *conf;
  SSL_CTX *ssl_ctx;
  px_site_t *sites;
  size_t num_sites;
  px_site_t *default_site;
  px_group_t *groups; /* one per site and per route */
  size_t num_groups;
  px_addr_t *addrs; /* every upstream address of every group */
  size_t num_addrs;
  char *https_port_suffix; /* ":8443" for redirects, "" for 443 */
  acme_challenges_t *challenges; /* the server's; outlives every generation */
} px_gen_t;

px_gen_t *px_gen_new(char **out_err, conf_t *conf, acme_challenges_t *challenges);
px_gen_t *px_gen_ref(px_gen_t *gen);
void px_gen_unref(px_gen_t *gen);
/* px_gen_site finds the site for a Host header value (port stripped,
 * any case): exact, wildcard, "*", then default. NULL if none. */
px_site_t *px_gen_site(px_gen_t *gen, const char *host, size_t host_len);
px_group_t *px_site_route(px_site_t *site, const char *path, size_t path_len);

/* ---- per-worker upstream pools ---- */
typedef struct {
  gh_link_t idle; /* px_upconn_t.link */
  size_t num_idle;
} px_pool_t;

/* ---- worker ---- */
typedef struct {
  uv_tcp_t tcp;
  px_worker_t *w;
  int is_tls;
  char label[80];            /* "https:ADDR", for metrics */
  px_listener_stats_t stats; /* this worker's connections on it */
} px_listener_t;

#define PX_BEAT_MS 1000
#define PX_STALL_MS 5000

struct px_worker {
  unsigned id;
  uv_loop_t loop;
  uv_thread_t thread;
  uv_async_t async; /* reload / stop from the main thread */
  uv_timer_t drain_timer;
  uv_timer_t health_timer;
  /* Liveness: the loop stamps |beat_ms| every PX_BEAT_MS; the admin API's
   * /health calls a worker stalled when the stamp is PX_STALL_MS old (a
   * blocked write to a full log pipe, a bug that spins). */
  uv_timer_t beat_timer;
  atomic_uint_fast64_t beat_ms;
  pthread_mutex_t mu;
  px_gen_t *next_gen; /* under mu */
  int stop_requested; /* under mu */
  px_gen_t *gen;
  px_pool_t *pools; /* gen->num_addrs entries */
  px_listener_t *listeners;
  size_t num_listeners;
  gh_link_t conns; /* px_conn_t.link */
  size_t num_conns;
  gh_link_t upconns; /* every px_upconn_t, for shutdown */
  int draining;
  int start_err;
  uv_sem_t *started;
  llhttp_settings_t req_settings;
  llhttp_settings_t resp_settings;
  char rbuf[64 * 1024];  /* socket reads (ciphertext or plaintext) */
  char pbuf[32 * 1024];  /* decrypted plaintext */
  char *obuf;            /* output being assembled (see conn.c) */
  px_conn_t *obuf_owner;
  px_buf_t pout;         /* plaintext staged for one TLS write */
  px_conn_t *pout_owner;
  size_t obuf_len, obuf_cap;
  BIO_METHOD *bio_method;
  px_exchange_t *ex_cache; /* freed exchanges, buffers kept (see exchange.c) */
  size_t num_ex_cache;
  struct px_ondemand *ondemand; /* NULL without on_demand */
  gh_link_t paused;             /* px_conn_t.paused_link: handshakes waiting for a name */
  struct px_wake *wakes;        /* under mu: names finished by the control thread */
  px_worker_stats_t stats;      /* written by this worker only (metrics.h) */
};

/* px_chunk_head writes "<hex len>\r\n" into |out| (at least 20 bytes) and
 * returns its length: the chunked-encoding prefix, without printf. */
static inline size_t px_chunk_head(char *out, size_t len) {
  static const char hex[] = "0123456789abcdef";
  char tmp[16];
  size_t n = 0;
  do {
    tmp[n++] = hex[len & 15];
    len >>= 4;
  } while (len);
  for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  out[n] = '\r';
  out[n + 1] = '\n';
  return n + 2;
}

/* ---- header store: names/values as offsets into one buffer ---- */
typedef struct {
  uint32_t name_off, name_len, val_off, val_len;
} px_hdr_t;

typedef struct {
  char *buf;
  size_t len, cap;
  px_hdr_t *h;
  size_t num, cap_h;
  int in_value; /* last callback was a value */
} px_hdrs_t;

void px_hdrs_reset(px_hdrs_t *hs);
void px_hdrs_cleanup(px_hdrs_t *hs);
/* Appends to the current header name (starting a new header when the last
 * callback was a value) or value. Returns the new total bytes. */
size_t px_hdrs_name(px_hdrs_t *hs, const char *p, size_t len);
size_t px_hdrs_value(px_hdrs_t *hs, const char *p, size_t len);
/* Appends bytes outside any header (the request target, the reason phrase). */
size_t px_hdrs_raw(px_hdrs_t *hs, const char *p, size_t len);
static inline gh_str_t px_hdr_name(const px_hdrs_t *hs, size_t i) {
  return (gh_str_t){hs->buf + hs->h[i].name_off, hs->h[i].name_len};
}
static inline gh_str_t px_hdr_value(const px_hdrs_t *hs, size_t i) {
  return (gh_str_t){hs->buf + hs->h[i].val_off, hs->h[i].val_len};
}

void px_buf_append(px_buf_t *b, const void *p, size_t len);
void px_buf_appendf(px_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void px_buf_consume(px_buf_t *b, size_t len);
void px_buf_free(px_buf_t *b);

/* ---- downstream connection ---- */
typedef enum {
  PX_CONN_HANDSHAKE,
  PX_CONN_HEAD,     /* waiting for / reading a request head */
  PX_CONN_EXCHANGE, /* a request is being proxied */
  PX_CONN_TUNNEL,   /* after 101: bytes both ways */
  PX_CONN_CLOSING,
} px_conn_state_t;

struct px_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  px_lazy_t tl;
  int handles_open;
  px_worker_t *w;
  px_listener_t *listener; /* counts this connection (NULL if never accepted) */
  gh_link_t link;
  SSL *ssl; /* NULL on the plain-HTTP listener */
  px_conn_state_t state;
  int is_tls;
  int reading;
  int close_after; /* no keep-alive after the current response */
  int close_when_flushed; /* close as soon as all output is written */
  int in_parser;      /* inside llhttp_execute: closing and finishing wait */
  int close_deferred;
  int finish_deferred;
  int head_started; /* bytes of the current head have arrived */
  uint8_t scan_state; /* head scanner (see http.c) */
  size_t head_bytes;
  char client_ip[INET6_ADDRSTRLEN];
  llhttp_t parser;
  px_buf_t pending; /* plaintext received but not yet processed */
  const uint8_t *in_ptr; /* ciphertext being fed to SSL (custom BIO) */
  size_t in_len;
  px_exchange_t *ex;
  uint64_t requests;
  char *paused_name;     /* handshake paused for this name (ondemand.c) */
  gh_link_t paused_link; /* in w->paused while paused_name is set */
  int ondemand_failed;
};

/* ---- upstream connection ---- */
struct px_upconn {
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  uv_timer_t timer;
  px_lazy_t tl;
  int handles_open;
  px_worker_t *w;
  px_gen_t *gen;
  px_addr_t *addr;
  gh_link_t link;     /* pool idle list while idle */
  gh_link_t all;      /* worker->upconns */
  px_exchange_t *ex;  /* owner while in use */
  uint64_t dial_ms;   /* when the connect started (loop time) */
  int connected;
  int idle;
  int reused;
  int in_parser;
  llhttp_t parser;
};

/* ---- one request/response exchange ---- */
struct px_exchange {
  px_worker_t *w;
  px_exchange_t *next_free; /* in the worker's cache */
  px_conn_t *conn;
  px_gen_t *gen;
  px_site_t *site;
  px_group_t *group;
  px_upconn_t *up;
  px_hdrs_t req; /* url in req.buf at [0, url_len) */
  size_t url_len;
  px_hdrs_t resp;
  size_t status_len; /* reason phrase in resp.buf at [0, status_len) */
  px_buf_t up_out;   /* request bytes waiting for the upstream connection */
  px_buf_t up_head;  /* serialized head, kept for one retry on a stale pooled connection */
  uint8_t method;
  uint8_t method_known; /* |method| is parsed (a head that failed early has none) */
  uint8_t http_minor;
  int req_chunked;
  int req_done;
  int req_body_sent_any;
  int resp_started; /* first response byte received from upstream */
  int resp_head_sent;
  int resp_chunked_out; /* we re-chunk the body to the client */
  int resp_done;
  int upgrade;
  unsigned tries;
  px_addr_t *addr;   /* counted in addr->active while set */
  const char *upstream_name; /* last upstream tried, for the access log */
  int up_reusable;
  int orphan;        /* the client left while the upstream parser ran */
  int retried_stale;
  int client_keepalive;
  int in_resp_trailers;
  int in_req_trailers;
  px_hdrs_t req_tr;  /* chunked request trailers */
  px_hdrs_t resp_tr; /* chunked response trailers */
  int reject_status; /* set by a parser callback; answered after llhttp returns */
  int local_done;    /* answered here (plain listener); finish after llhttp returns */
  int status;
  uint8_t up_slot; /* metrics slot of the last upstream tried, 0: none */
  uint64_t resp_bytes;
  uint64_t start_ms;
  char *host; /* lower-case host from the Host header */
  char *http01_answer; /* plain listener: key authorization being served */
};

/* conn.c */
void px_conn_accept(px_listener_t *l);
void px_conn_send(px_conn_t *c, const void *data, size_t len);
void px_conn_flush(px_conn_t *c);
void px_conn_close(px_conn_t *c);
void px_conn_read_start(px_conn_t *c);
void px_conn_read_stop(px_conn_t *c);
size_t px_conn_write_queue(px_conn_t *c);
void px_conn_set_timer(px_conn_t *c, uint64_t ms);
void px_worker_bio_init(px_worker_t *w);

/* http.c */
void px_http_init_settings(px_worker_t *w);
void px_http_conn_ready(px_conn_t *c);              /* after handshake/accept */
void px_http_on_plain(px_conn_t *c, const char *data, size_t len);
void px_http_on_timeout(px_conn_t *c);
void px_http_conn_closed(px_conn_t *c);
void px_http_on_client_drained(px_conn_t *c);      /* write queue fell below limit */
void px_http_error(px_conn_t *c, int status, const char *why);
void px_http_exchange_done(px_conn_t *c);
void px_http_tunnel(px_conn_t *c);
void px_http_upstream_drained(px_conn_t *c);
int px_http_hop_by_hop(const px_hdrs_t *hs, gh_str_t name);
void px_exchange_init_settings(px_worker_t *w);

/* exchange.c: the upstream half of an exchange */
px_exchange_t *px_ex_new(px_conn_t *c);
void px_ex_cache_free(px_worker_t *w);
void px_upconn_on_timer(uv_timer_t *t);
void px_ex_start(px_exchange_t *ex);
void px_ex_send_body(px_exchange_t *ex, const char *p, size_t len);
void px_ex_free(px_exchange_t *ex);
void px_ex_client_gone(px_exchange_t *ex);
void px_ex_tunnel_client_data(px_exchange_t *ex, const char *p, size_t len);
void px_ex_resume_upstream(px_exchange_t *ex);

/* upstream.c */
px_addr_t *px_upstream_pick(px_group_t *g, px_addr_t *avoid);
/* px_addr_sockaddr copies where |a| is to be reached into |out|; returns
 * 0, or -1 while a DNS name has not resolved yet. */
int px_addr_sockaddr(px_addr_t *a, struct sockaddr_storage *out);
/* px_addr_refresh looks a DNS name up again on |w|'s loop (libuv's thread
 * pool) when the last answer is older than PX_RESOLVE_EVERY_MS, or, with
 * |failed|, after a connection to it failed or was given up while still
 * connecting after a second (at most once a second): a backend container
 * that is recreated comes back on a new address. The connection in
 * progress keeps the old address. No-op for IP literals. */
#define PX_RESOLVE_EVERY_MS 5000
void px_addr_refresh(px_worker_t *w, px_gen_t *gen, px_addr_t *a, int failed);
void px_upstream_mark_failed(px_addr_t *a);
px_upconn_t *px_upconn_get_idle(px_worker_t *w, px_addr_t *a);
px_upconn_t *px_upconn_dial(px_worker_t *w, px_addr_t *a, uv_connect_cb cb);
void px_upconn_release(px_upconn_t *u, int reusable);
void px_upconn_close(px_upconn_t *u);
void px_upconn_write(px_upconn_t *u, const void *p, size_t len);
size_t px_upconn_write_queue(px_upconn_t *u);
void px_worker_pools_close(px_worker_t *w);
void px_health_start(px_worker_t *w);

/* accesslog.c */
void px_access_log(px_exchange_t *ex);

#endif
