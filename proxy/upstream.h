/* upstream.h: upstream connections, per-worker pools of idle ones,
 * choosing an address, name re-resolution and health (passive back-off
 * shared by all workers, plus an optional active check run by worker 0),
 * and the upstream HTTP/1.1 codec (uph1.c). */
#ifndef GH_PROXY_UPSTREAM_H
#define GH_PROXY_UPSTREAM_H

#include "proxy/chunked.h"
#include "proxy/exchange.h"
#include "proxy/worker.h"

/* The response codec's phase on one upstream connection. */
typedef enum {
  PX_UPH1_HEAD = 0, /* reading a response head (llhttp) */
  PX_UPH1_BODY,     /* reading its body, framed by |framing| */
  PX_UPH1_DONE,     /* the response ended; nothing more is expected */
} px_uph1_phase_t;

typedef struct px_uph2 px_uph2_t;

struct px_upconn {
  uv_tcp_t tcp;
  px_uph2_t *h2;      /* an HTTP/2 connection (uph2.c): many exchanges, |ex| unused */
  uv_connect_t connect_req;
  uv_shutdown_t shutdown_req; /* a tunnel's client finished sending (px_ex_tunnel_end) */
  uv_timer_t timer;
  px_lazy_t tl;
  int handles_open;
  px_worker_t *w;
  px_gen_t *gen;
  px_addr_t *addr;   /* the endpoint */
  unsigned addr_seq; /* addr->seq when dialled: the slot held this address */
  gh_link_t link;     /* pool idle list while idle */
  gh_link_t all;      /* worker->upconns */
  px_exchange_t *ex;  /* the exchange using it, NULL while idle */
  uint64_t dial_ms;   /* when the connect started (loop time) */
  int connected;
  int idle;
  int reused;
  int got_bytes;      /* a response byte arrived for the current exchange */
  /* TLS (uptls.c): NULL for a plain upstream. */
  SSL *ssl;
  int tls_done;       /* the handshake is over */
  int tls_resumed;    /* it resumed a session */
  const char *in_p;   /* ciphertext being fed to SSL */
  size_t in_len;
  px_buf_t tls_out;   /* ciphertext produced by the last SSL call */
  /* send_proxy_protocol: the client whose PROXY header opened this
   * connection; it is reused only for requests of the same client. */
  char pp_client[INET6_ADDRSTRLEN];
  /* HTTP/1.1 response codec (uph1.c). */
  llhttp_t parser; /* response heads only */
  px_uph1_phase_t phase;
  px_framing_t framing;
  uint64_t left; /* LENGTH: body bytes still owed */
  px_chunked_t ck;
  int bad_reason_len;
};

/* px_upstream_pick chooses an endpoint of |g| by its balancing policy,
 * across every endpoint of every configured address: a usable one
 * (live, not backed off, not failing its health check) other than
 * |avoid|; if none is usable, the one that failed longest ago, so that
 * recovery is noticed. NULL only when no name has resolved yet. */
px_addr_t *px_upstream_pick(px_group_t *g, px_addr_t *avoid);
/* px_addr_sockaddr copies where endpoint |a| is to be reached into |out|
 * (and the slot's seq into |*out_seq| if not NULL); returns 0, or -1 when
 * the slot holds no address in the current answer. */
int px_addr_sockaddr(px_addr_t *a, struct sockaddr_storage *out, unsigned *out_seq);
/* px_addr_text writes endpoint |a|'s "ip:port" into |buf|. */
void px_addr_text(px_addr_t *a, char *buf, size_t len);
/* px_addr_refresh looks a DNS name up again on |w|'s loop (libuv's thread
 * pool) when the last answer is older than PX_RESOLVE_EVERY_MS, or, with
 * |failed|, after a connection to it failed or was given up while still
 * connecting after a second (at most once a second): a backend container
 * that is recreated comes back on a new address. The connection in
 * progress keeps the old address. No-op for IP literals. */
#define PX_RESOLVE_EVERY_MS 5000
void px_addr_refresh(px_worker_t *w, px_gen_t *gen, px_target_t *t, int failed);
/* px_addr_refresh_for looks |t| up again after a failed connect, as
 * px_addr_refresh(failed), for |ex|: when the lookup ends it calls
 * px_ex__resolved(ex, changed) on |w|'s loop, unless px_lookup_forget ran
 * first. Returns the lookup, or NULL when none started (an IP literal, or
 * a lookup already in flight or tried within the last second); then
 * nothing is called. */
typedef struct px_lookup px_lookup_t;
px_lookup_t *px_addr_refresh_for(px_worker_t *w, px_gen_t *gen, px_target_t *t, px_exchange_t *ex);
/* px_lookup_forget detaches |l| from its exchange: its end calls nothing. */
void px_lookup_forget(px_lookup_t *l);
/* px_upstream_usable: |g| has a usable endpoint other than |avoid|. */
int px_upstream_usable(px_group_t *g, px_addr_t *avoid);

/* ---- endpoints.c ---- */
/* px_sa_equal: same family, address, port (and IPv6 scope). */
int px_sa_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
/* px_sa_text writes "ip:port" or "[v6]:port" into |buf|. */
void px_sa_text(const struct sockaddr_storage *sa, char *buf, size_t len);
/* px_ep_assign plans a new answer |next| (|num_next| addresses, in
 * resolver order) onto slots whose first |num_cur| hold |cur|, with |cap|
 * slots in all (at most PX_MAX_ENDPOINTS). It writes out_slot[i] for each
 * next[i]: the slot already holding that address; else a never-used slot;
 * else a slot whose address is not in the answer; duplicates share a
 * slot; -1 when there is no room. Returns the number of slots used after
 * it (>= num_cur). Pure. */
size_t px_ep_assign(const struct sockaddr_storage *cur, size_t num_cur, size_t cap,
                    const struct sockaddr_storage *next, size_t num_next, int *out_slot);
/* px_target_install makes |next| the endpoints of |t| (px_ep_assign),
 * under t->sa_lock: slots not in it stop being live. Returns 1 if the set
 * of live addresses changed, else 0. */
int px_target_install(px_target_t *t, const struct sockaddr_storage *next, size_t num_next);
/* px_target_from_addrinfo installs a getaddrinfo answer into |t| (and,
 * unless |quiet|, logs a change); returns the number of usable addresses in it. An answer
 * without any leaves the endpoints as they were. */
struct addrinfo;
size_t px_target_from_addrinfo(px_target_t *t, const struct addrinfo *res, int quiet);

/* px_upstream_mark_failed backs off from |a|: only for the upstream's own
 * failures (refused or failed connect, silence, reset, malformed answer),
 * never for anything a client does. |why| (NULL: already recorded) is
 * kept as its last failure. */
void px_upstream_mark_failed(px_addr_t *a, const char *why);
/* px_addr_note_failure records |why| as |a|'s last failure, now. */
void px_addr_note_failure(px_addr_t *a, const char *why);
/* px_upconn_get_idle takes an idle connection to |a| from |w|'s pool for
 * a request of |client| (only a connection opened with a PROXY header
 * for that client when the upstream sends one), or NULL. */
px_upconn_t *px_upconn_get_idle(px_worker_t *w, px_addr_t *a, const char *client);
/* px_upconn_dial starts a connection to endpoint |a| for the exchange
 * that attaches to it next: TCP, then the PROXY header and the TLS
 * handshake when the upstream wants them, then px_ex__up_connected.
 * NULL when the connect cannot even start. */
px_upconn_t *px_upconn_dial(px_worker_t *w, px_addr_t *a);
/* px_upconn_read_start / _stop: whether |u| is read (back-pressure). */
void px_upconn_read_start(px_upconn_t *u);
void px_upconn_read_stop(px_upconn_t *u);
/* px_upconn_shutdown: nothing more will be written (a tunnel's client
 * finished): close_notify for TLS, then the write side is shut. */
void px_upconn_shutdown(px_upconn_t *u);
/* px_worker_pools_new makes |w|'s pools for |gen|; px_worker_pools_free
 * releases them (after px_worker_pools_close). */
void px_worker_pools_new(px_worker_t *w, px_gen_t *gen);
void px_worker_pools_free(px_worker_t *w);
/* px_upconn_release gives |u| back: to the pool if |reusable| (its last
 * response ended exactly at a message boundary, nothing unread), else it
 * is closed. */
void px_upconn_release(px_upconn_t *u, int reusable);
void px_upconn_close(px_upconn_t *u);
/* px_upconn_write / _writev send plaintext (encrypted for TLS). */
void px_upconn_write(px_upconn_t *u, const void *p, size_t len);
void px_upconn_writev(px_upconn_t *u, const uv_buf_t *bufs, unsigned num);
/* px_upconn_raw_writev writes bytes to the socket as they are. */
void px_upconn_raw_writev(px_upconn_t *u, const uv_buf_t *bufs, unsigned num);
size_t px_upconn_write_queue(px_upconn_t *u);
void px_worker_pools_close(px_worker_t *w);
void px_health_start(px_worker_t *w);

/* exchange.c: the upstream connection's events, for upstream.c. */
void px_ex__up_drained(px_exchange_t *ex);
/* px_ex__up_connected: |u| is ready for its request (status 0), or could
 * not be made ready (a libuv error; |why| says more, or NULL). */
void px_ex__up_connected(px_upconn_t *u, int status, const char *why);
/* px_ex__up_read: plaintext from |u| (|nread| bytes at |p|), or its end
 * (|nread| < 0: UV_EOF, or an error). */
void px_ex__up_read(px_upconn_t *u, ssize_t nread, const char *p);

/* exchange.c: an HTTP/2 upstream's events for one exchange (uph2.c). None
 * settles; uph2.c calls px_ex__settle for each afterwards. */
void px_ex__h2_ready(px_exchange_t *ex);           /* the connection is ready */
void px_ex__h2_connect_failed(px_exchange_t *ex);  /* it could not be made; settles */
/* px_ex__h2_head: a head is in ex->resp; |end_stream|: and nothing
 * follows it (a gRPC trailers-only answer must reach the client so). */
void px_ex__h2_head(px_exchange_t *ex, int end_stream);
void px_ex__h2_data(px_exchange_t *ex, const char *p, size_t len);
void px_ex__h2_end(px_exchange_t *ex);             /* END_STREAM; trailers in ex->resp_tr */
/* px_ex__h2_reset: the stream ended early; with |retry| the upstream did
 * not process it, and it may go to another connection. */
void px_ex__h2_reset(px_exchange_t *ex, int retry, const char *why);
void px_ex__h2_timeout(px_exchange_t *ex);
void px_ex__h2_want_body(px_exchange_t *ex);       /* the upstream took the buffered body */
/* px_ex__h2_body_sent: body bytes went to the upstream (its window let
 * them): the deadline for what it owes starts again. Does not settle. */
void px_ex__h2_body_sent(px_exchange_t *ex);
void px_ex__settle(px_exchange_t *ex);

/* ---- uph2.c: HTTP/2 toward the upstream ---- */
/* px_uph2_get returns an HTTP/2 connection to |a| with room for a stream
 * (pooled when |gen| is the worker's), dialling one if needed; NULL when a
 * connect cannot start. */
px_upconn_t *px_uph2_get(px_worker_t *w, px_addr_t *a, px_gen_t *gen);
/* px_uph2_attach submits |ex|'s request (head from ex->up_head, body
 * from ex->up_out as it comes) on |u|. 0, or -1 when it cannot. */
int px_uph2_attach(px_upconn_t *u, px_exchange_t *ex);
/* px_uph2_detach ends |ex|'s stream (reset if still open). */
void px_uph2_detach(px_upconn_t *u, px_exchange_t *ex);
void px_uph2_body(px_upconn_t *u, px_exchange_t *ex);    /* more body, or its end */
void px_uph2_consume(px_upconn_t *u, px_exchange_t *ex); /* the client caught up */
/* px_uph2_watch arms |u|'s timer for its streams' deadlines or idleness. */
void px_uph2_watch(px_upconn_t *u);
void px_uph2_connected(px_upconn_t *u, int status, const char *why);
void px_uph2_read(px_upconn_t *u, ssize_t nread, const char *p);
void px_uph2_on_drained(px_upconn_t *u);
void px_uph2_on_timer(px_upconn_t *u);
void px_uph2_closing(px_upconn_t *u); /* px_upconn_close: leave the pool */
/* px_uph2_leave takes the connection at |pool_link| (pool->h2) out of its
 * pool for good: it closes now if idle, else after its last stream. */
void px_uph2_leave(gh_link_t *pool_link);
void px_uph2_free(px_upconn_t *u);    /* the handles have closed */
/* px_upconn_current: |u| still goes where its endpoint slot points. */
int px_upconn_current(px_upconn_t *u);

/* ---- uptls.c: TLS toward the upstream ---- */
/* px_uptls_ctx_new builds the TLS client context for upstream |a|, or
 * returns NULL with |*out_err| set (caller frees). */
SSL_CTX *px_uptls_ctx_new(char **out_err, const conf_addr_t *a);
void px_uptls_worker_init(px_worker_t *w);
void px_uptls_worker_free(px_worker_t *w);
/* px_uptls_begin starts the handshake on connected |u|: 1 done (never on
 * a first flight), 0 waiting for the upstream, -1 failed. */
int px_uptls_begin(px_upconn_t *u, SSL_CTX *ctx);
int px_uptls_handshake(px_upconn_t *u);
/* px_uptls_read takes ciphertext (or the socket's end) from |u|. */
void px_uptls_read(px_upconn_t *u, ssize_t nread, const char *p);
void px_uptls_writev(px_upconn_t *u, const uv_buf_t *bufs, unsigned num);
void px_uptls_shutdown(px_upconn_t *u);
/* px_ex__resolved: the lookup px_addr_refresh_for started for |ex| ended;
 * |changed| says whether it changed the endpoints. Ends with settle. */
void px_ex__resolved(px_exchange_t *ex, int changed);

/* ---- uph1.c: HTTP/1.1 toward the upstream ---- */
void px_uph1_init_settings(px_worker_t *w);
/* px_uph1_build_head serializes ex's request head for the upstream into
 * ex->up_head: |host| and |target| as routed; hop-by-hop fields dropped;
 * X-Forwarded-*; framing (Content-Length / Transfer-Encoding) written from
 * ex->req_framing, never copied from the client. */
void px_uph1_build_head(px_exchange_t *ex, gh_str_t host, gh_str_t target);
/* px_uph1_last_chunk forwards the end of a chunked request body: the last
 * chunk and ex->req_tr as trailers (hop-by-hop fields dropped). Returns
 * px_ex_req_body's answer. */
int px_uph1_last_chunk(px_exchange_t *ex);
/* px_uph1_begin readies |u|'s codec for the response to a new request. */
void px_uph1_begin(px_upconn_t *u);

typedef enum {
  PX_UP_NEED = 0, /* all input consumed */
  PX_UP_INTERIM,  /* a 1xx head (not 101) is in ex->resp */
  PX_UP_HEAD,     /* the final head is in ex->resp, framing in ex->resp_framing */
  PX_UP_DATA,     /* *out_data: body bytes */
  PX_UP_END,      /* the response is complete (trailers in ex->resp_tr) */
  PX_UP_UPGRADE,  /* 101: what follows is the new protocol */
  PX_UP_BAD,      /* malformed response */
} px_up_event_t;

/* px_uph1_next consumes response bytes from |*p|/|*len| until something
 * happens and returns it. */
px_up_event_t px_uph1_next(px_upconn_t *u, px_exchange_t *ex, const char **p, size_t *len,
                           gh_str_t *out_data);
/* px_uph1_eof reports whether the upstream closing now ends the response
 * cleanly (a body delimited by the close). */
int px_uph1_eof_ends(const px_upconn_t *u);

#endif
