/* exchange.h: one request/response pair, independent of the wire protocol
 * of the client (HTTP/1.1 today, HTTP/2 next) and of the upstream.
 *
 * Ownership. A stream of a client connection creates its exchange and is
 * its only owner; it alone frees it (px_ex_free). The exchange owns its
 * upstream connection while attached (ex->up <-> up->ex, both cleared
 * together by detach). Nothing else keeps a pointer to an exchange.
 *
 * Lifecycle: the state below says what the exchange waits for; every
 * event (client bytes, client writable, client gone, upstream connected,
 * bytes, writable, closed, each timeout) is handled by one function per
 * event that switches on the state. Two rules keep lifetimes simple:
 *
 *  - Functions the stream calls (px_ex_*) never free or close the stream
 *    or the exchange; they return, and the stream looks at ex->state.
 *  - The exchange's own event handlers (upstream I/O and timers) end with
 *    one call, ops->settle(ex), after which they touch nothing: the stream
 *    may end and free the exchange there (when it is DONE or ABORTED).
 *
 * Calls into the stream's ops (interim, head, body, end, tunnel, error,
 * want_body) only queue bytes; none may free or close anything. */
#ifndef GH_PROXY_EXCHANGE_H
#define GH_PROXY_EXCHANGE_H

#include "proxy/chunked.h"
#include "proxy/gen.h"
#include "proxy/hdrs.h"
#include "proxy/worker.h"

typedef enum {
  PX_EX_HEAD = 0, /* the stream is receiving the request head */
  PX_EX_CONNECT,  /* waiting for an upstream connection */
  PX_EX_WAIT,     /* request head sent; no response head yet */
  PX_EX_BODY,     /* response head passed to the stream; its body streams */
  PX_EX_TUNNEL,   /* after 101: bytes both ways */
  PX_EX_DONE,     /* response complete (relayed or answered here) */
  PX_EX_ABORTED,  /* failed after the response head went out: reset the stream */
} px_ex_state_t;

/* How a message body is framed on the wire. */
typedef enum {
  PX_BODY_NONE = 0, /* no body */
  PX_BODY_LENGTH,   /* exactly |len| bytes */
  PX_BODY_CHUNKED,  /* chunked, length unknown in advance */
  PX_BODY_CLOSE,    /* response only: until the upstream closes */
} px_framing_t;

typedef struct px_stream_ops {
  void (*interim)(px_exchange_t *ex); /* a 1xx (not 101) head is in ex->resp */
  void (*head)(px_exchange_t *ex);    /* the final head is in ex->resp */
  void (*body)(px_exchange_t *ex, const char *p, size_t len);
  void (*end)(px_exchange_t *ex); /* response complete; trailers in ex->resp_tr */
  /* 101 accepted: the head is in ex->resp; |p| are the upstream's first
   * bytes of the new protocol. */
  void (*tunnel)(px_exchange_t *ex, const char *p, size_t len);
  void (*tunnel_data)(px_exchange_t *ex, const char *p, size_t len);
  /* Answer |status| here; only before any head went out. */
  void (*error)(px_exchange_t *ex, int status, const char *why);
  void (*want_body)(px_exchange_t *ex); /* the upstream took the body: read more */
  size_t (*queued)(px_exchange_t *ex);  /* response bytes the client has not taken */
  /* The last call of every exchange event handler: flush, and end the
   * exchange if it is DONE or ABORTED. May free |ex|. */
  void (*settle)(px_exchange_t *ex);
} px_stream_ops_t;

struct px_exchange {
  px_ex_state_t state;
  const px_stream_ops_t *ops;
  void *stream; /* the owner: px_conn_t for HTTP/1.1, px_h2_stream_t for HTTP/2 */
  px_worker_t *w;
  px_exchange_t *next_free; /* in the worker's cache */
  px_gen_t *gen;
  px_site_t *site;
  px_group_t *group;
  px_upconn_t *up;
  px_addr_t *addr; /* counted in addr->active while set */
  px_conn_t *conn; /* the client connection (outlives its exchanges) */
  const char *client_ip;
  int is_tls;
  int trusted_proxy; /* the client is in trusted_proxies: its X-Forwarded-* are kept */
  const px_ccert_peer_t *peer; /* the connection's client certificate (owned by it) */
  /* The request, as the stream's codec parsed it. */
  px_hdrs_t req; /* target in req.buf at [0, url_len) */
  size_t url_len;
  px_hdrs_t req_tr; /* request trailers */
  uint8_t method;
  uint8_t method_known; /* |method| is parsed (a head that failed early has none) */
  uint8_t http_major; /* of the client's request: 1, or 2 (h2.c) */
  uint8_t http_minor;
  uint8_t upgrade;
  px_framing_t req_framing; /* NONE, LENGTH or CHUNKED */
  uint64_t req_len;         /* LENGTH: the declared length */
  int req_done;             /* the request has been received in full */
  int client_keepalive;
  int client_gone;
  char *host;          /* lower-case host from Host / the target, no port */
  char *http01_answer; /* plain listener: key authorization being served */
  /* Toward the upstream. */
  px_buf_t up_head; /* serialized head, kept for one retry on a stale pooled connection */
  px_buf_t up_out;  /* body bytes waiting for the upstream connection */
  int req_body_sent_any;
  int retried_stale;
  unsigned tries;
  /* A connect to a name's endpoint failed and no other endpoint is usable:
   * the name is looked up again and the request waits (state CONNECT, no
   * upstream) for the answer, once per request (issue 14). */
  struct px_lookup *lookup;
  int re_resolved;
  int up_paused; /* reading the upstream stopped: the client is behind */
  /* HTTP/2 upstreams (uph2.c): |up| is a connection shared by many
   * exchanges, each a stream of it; |up->ex| is not this exchange. */
  int up_h2;
  int32_t up_sid;             /* the stream's id, 0 until submitted */
  gh_link_t up_link;          /* in the connection's streams */
  gh_link_t dirty_link;       /* events to settle once the connection's input is read */
  uint64_t up_deadline;       /* px_now by which the upstream must send more; 0: none */
  size_t up_unconsumed;       /* DATA bytes relayed but not yet given back as window */
  uint8_t up_body_blocked;    /* px_ex_req_body asked the stream to stop reading */
  uint8_t up_want_body;       /* ... and the upstream has since taken the body */
  uint8_t up_trailers;        /* the HEADERS being received are trailers */
  uint8_t up_closed;          /* the upstream stream is closed */
  int grpc;                   /* a gRPC request (content-type application/grpc*) */
  uint64_t grpc_timeout_ms;   /* its grpc-timeout, 0: none */
  /* The response. */
  px_hdrs_t resp; /* reason phrase in resp.buf at [0, status_len) */
  size_t status_len;
  px_hdrs_t resp_tr;
  int resp_status;        /* of the head in |resp| */
  px_framing_t resp_framing;
  uint64_t resp_len;      /* LENGTH: the declared length */
  int resp_head_sent;
  int status;             /* final status for the log; 0 until known */
  uint64_t resp_bytes;
  /* Accounting. */
  const char *upstream_name; /* last upstream tried, for the access log */
  uint8_t up_slot;           /* metrics slot of the last upstream tried, 0: none */
  uint64_t start_ms;
};

/* px_ex_new returns an exchange owned by |stream| (recycled from the
 * worker's cache when possible). Never NULL. */
px_exchange_t *px_ex_new(px_worker_t *w, const px_stream_ops_t *ops, void *stream);
/* px_ex_free releases |ex| and its upstream connection (returned to the
 * pool only when the exchange ended cleanly). |ex| may be NULL. Only the
 * owning stream calls it, never from inside an exchange callback. */
void px_ex_free(px_exchange_t *ex);
void px_ex_cache_free(px_worker_t *w);

/* px_ex_start routes nothing (the stream did) and starts forwarding: picks
 * an upstream of ex->group and sends ex->up_head. May move the state to
 * DONE (answered with an error through ops->error); never frees. */
void px_ex_start(px_exchange_t *ex);
/* px_ex_req_body forwards request body bytes (already framed for the
 * upstream by the stream's codec); px_ex_req_end marks the request
 * complete. Both return 1 when the stream should stop reading the client
 * for now (ops->want_body says when to start again). */
int px_ex_req_body(px_exchange_t *ex, const char *p, size_t len);
int px_ex_req_end(px_exchange_t *ex);
/* px_ex_req_chunk forwards body bytes of a request whose length is
 * unknown (chunked, or HTTP/2 without content-length): chunked for an
 * HTTP/1.1 upstream, as they are for an HTTP/2 one. px_ex_req_last_chunk
 * ends such a body (with ex->req_tr as trailers). Both return 1 like
 * px_ex_req_body. */
int px_ex_req_chunk(px_exchange_t *ex, const char *p, size_t len);
int px_ex_req_last_chunk(px_exchange_t *ex);
/* px_ex_tunnel_up forwards client bytes after a 101. Returns 1 like
 * px_ex_req_body. */
int px_ex_tunnel_up(px_exchange_t *ex, const char *p, size_t len);
/* px_ex_tunnel_end: the client will send nothing more in the tunnel (an
 * HTTP/2 END_STREAM): the upstream's write side is shut once what is
 * queued is written; its answer still flows until it closes. */
void px_ex_tunnel_end(px_exchange_t *ex);
/* px_ex_client_drained: the client took the queued response bytes. */
void px_ex_client_drained(px_exchange_t *ex);
/* px_ex_client_gone: the client connection is closing. Detaches and
 * closes the upstream (never counted against its health); the exchange
 * stays allocated until its owner frees it. */
void px_ex_client_gone(px_exchange_t *ex);
/* px_ex_local marks an exchange answered by the stream itself. */
void px_ex_local(px_exchange_t *ex, int status);

/* An error answered to a gRPC request (ex->grpc) is a gRPC status, not an
 * HTML page: HTTP 200 with grpc-status and grpc-message and no body.
 * px_grpc_status maps our HTTP status to the gRPC code (gRPC's own
 * HTTP-to-gRPC table: 502, 503, 504 are UNAVAILABLE); px_grpc_message
 * writes the percent-encoded message into |out| (|cap| bytes). */
int px_grpc_status(int status);
size_t px_grpc_message(char *out, size_t cap, int status, const char *why);

/* px_access_log writes |ex|'s access-log line (accesslog.c). */
void px_access_log(px_exchange_t *ex);

/* Upstream side, for the upstream codec (uph1.c) and pools. */
void px_upconn_on_timer(uv_timer_t *t);

#endif
