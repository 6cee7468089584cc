/* worker.h: a worker thread: its loop, listeners, connections, upstream
 * pools and the buffers every connection of the worker shares.
 *
 * Threads: one main thread (signals, reload) and N workers. A worker owns
 * its loop, its listening sockets and every connection it accepts, from
 * accept to close; nothing about a connection crosses threads. */
#ifndef GH_PROXY_WORKER_H
#define GH_PROXY_WORKER_H

#include <llhttp.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

#include "common/list.h"
#include "proxy/gen.h"
#include "proxy/hdrs.h"
#include "proxy/metrics.h"

typedef struct px_worker px_worker_t;
typedef struct px_conn px_conn_t;
typedef struct px_upconn px_upconn_t;
typedef struct px_exchange px_exchange_t;

/* px_now is the data plane's clock: the loop's time, plus an offset that
 * only tests set (the stateful fuzzer fires timeouts by moving it; see
 * px_worker_t.clock_offset_ms). The loop's data points at its worker. */
uint64_t px_now(const uv_loop_t *loop);

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
  l->deadline = px_now(t->loop) + ms;
  if (!uv_is_active((uv_handle_t *)t) || l->due > l->deadline) {
    uv_timer_start(t, cb, ms, 0);
    l->due = l->deadline;
  }
}

/* px_lazy_expired is called first thing in the timer callback: it returns
 * 1 when the deadline has really passed, else re-arms and returns 0. */
static inline int px_lazy_expired(uv_timer_t *t, px_lazy_t *l, uv_timer_cb cb) {
  if (l->deadline == UINT64_MAX) return 0;
  uint64_t now = px_now(t->loop);
  if (now < l->deadline) {
    uv_timer_start(t, cb, l->deadline - now, 0);
    l->due = l->deadline;
    return 0;
  }
  return 1;
}

/* ---- per-worker upstream pools ---- */
typedef struct {
  gh_link_t idle; /* px_upconn_t.link */
  size_t num_idle;
  SSL_SESSION *session; /* TLS upstreams: the newest session, offered for resumption */
  gh_link_t h2;          /* HTTP/2 upstream connections (uph2.c), busy or not */
} px_pool_t;

typedef struct {
  uv_tcp_t tcp;
  px_worker_t *w;
  int is_tls;
  int http2; /* offer "h2" by ALPN (listen.https[].http2) */
  int proxy_protocol; /* a PROXY header comes first (listen.*[].proxy_protocol) */
  conf_cidr_t *proxy_trusted; /* a copy (texts NULL): who may connect and send it */
  size_t num_proxy_trusted;
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
   * bug that spins or blocks; not a full log pipe since issue 13). */
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
  llhttp_settings_t req_settings;  /* request heads (h1.c) */
  llhttp_settings_t resp_settings; /* response heads (uph1.c) */
  char rbuf[64 * 1024];  /* socket reads (ciphertext or plaintext) */
  char pbuf[32 * 1024];  /* decrypted plaintext */
  char *obuf;            /* output being assembled (see conn.c) */
  px_conn_t *obuf_owner;
  px_buf_t pout;         /* plaintext staged for one TLS write */
  px_conn_t *pout_owner;
  size_t obuf_len, obuf_cap;
  BIO_METHOD *bio_method;
  BIO_METHOD *up_bio_method; /* TLS upstreams (uptls.c) */
  char upbuf[32 * 1024];     /* plaintext decrypted from a TLS upstream */
  px_exchange_t *ex_cache; /* freed exchanges, buffers kept (see exchange.c) */
  size_t num_ex_cache;
  struct px_ondemand *ondemand; /* NULL in px_obtain's mode (on-demand may be off) */
  gh_link_t paused;             /* px_conn_t.paused_link: handshakes waiting for a name */
  struct px_wake *wakes;        /* under mu: names finished by the control thread */
  px_worker_stats_t stats;      /* written by this worker only (metrics.h) */
  /* HTTP/2 connections with frames to send, written once per loop
   * iteration (h2.c), so the responses of many upstreams that arrive in
   * one poll leave in one TLS write. Set up on first use. */
  gh_link_t h2_dirty;
  uv_check_t h2_check;
  int h2_check_on;
  struct px_h2_mem *h2_mem; /* HTTP/2 small blocks (h2.c); NULL until used */
  /* HTTP/2 upstream connections to write at the end of this iteration
   * (uph2.c), likewise batched. */
  gh_link_t uph2_dirty;
  uv_check_t uph2_check;
  int uph2_check_on;
  uint64_t clock_offset_ms;     /* added to the loop's time; 0 but in tests */
};

/* px_worker_conn_gone is called by conn.c when a connection's memory is
 * released (server.c: a draining worker stops when none is left). */
void px_worker_conn_gone(px_worker_t *w);

/* px_worker_adopt_gen makes |gen| (a reference handed over) the worker's
 * generation, as a reload does: idle upstream connections of the old one
 * are closed; whatever holds the old one keeps it until done. */
void px_worker_adopt_gen(px_worker_t *w, px_gen_t *gen);

#endif
