/* httpc_internal.h: what acme/httpc*.c share: the client, request and
 * connection structures, and the message code (httpc_wire.c: URLs, request
 * bytes, response parsing) that the transport (httpc.c) calls. */
#ifndef GH_ACME_HTTPC_INTERNAL_H
#define GH_ACME_HTTPC_INTERNAL_H

#include <llhttp.h>
#include <netdb.h>
#include <openssl/base.h>
#include <string.h>
#include <uv.h>

#include "acme/httpc.h"
#include "common/common.h"
#include "common/list.h"

#define ACME__HTTPC_READ_BUF_LEN (64 * 1024)

typedef struct {
  char *ptr; /* NUL-terminated when not NULL */
  size_t len, cap;
} httpc_buf_t;

static inline void httpc_buf_add(httpc_buf_t *b, const char *data, size_t len) {
  if (b->len + len + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 64;
    while (cap < b->len + len + 1) cap *= 2;
    b->ptr = gh_realloc(b->ptr, cap);
    b->cap = cap;
  }
  memcpy(b->ptr + b->len, data, len);
  b->len += len;
  b->ptr[b->len] = '\0';
}

static inline void httpc_buf_clear(httpc_buf_t *b) {
  gh_free(b->ptr);
  memset(b, 0, sizeof(*b));
}

typedef struct httpc_conn httpc_conn_t;
typedef struct httpc_req httpc_req_t;

struct acme_httpc {
  uv_loop_t *loop;
  SSL_CTX *ssl_ctx;
  gh_link_t idle; /* httpc_conn_t.link, most recently used first */
  size_t num_idle;
  gh_link_t reqs; /* httpc_req_t.link, unfinished requests */
  size_t num_live;
  int freed;
  char buf[ACME__HTTPC_READ_BUF_LEN]; /* one loop thread: one read at a time */
};

typedef enum {
  HTTPC_PHASE_RESOLVE,
  HTTPC_PHASE_CONNECT,
  HTTPC_PHASE_HANDSHAKE,
  HTTPC_PHASE_WAIT,
  HTTPC_PHASE_READ,
} httpc_phase_t;

struct httpc_req {
  acme_httpc_t *client;
  gh_link_t link;
  acme_httpc_cb cb;
  void *arg;
  char *method, *url, *host, *key;
  char port_str[8];
  int tls, host_is_ip, head_only;
  char *wire;
  size_t wire_len;
  uint64_t timeout_ms;
  size_t max_body;
  uv_timer_t timer;
  uv_getaddrinfo_t gai;
  struct addrinfo *addrs, *next_addr;
  httpc_buf_t connect_errs;
  int last_connect_err;
  httpc_conn_t *conn;
  httpc_phase_t phase;
  int gai_pending, timer_closed, done, cancelled, retried;
  /* the response */
  int status;
  acme_httpc_header_t *headers;
  size_t num_headers, cap_headers;
  httpc_buf_t field, value, body;
  size_t head_bytes;
  int headers_done, msg_done, got_byte;
  int parse_err;
  char *parse_msg;
};

struct httpc_conn {
  acme_httpc_t *client;
  gh_link_t link; /* in client->idle while idle */
  char *key;
  char peer[64];
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_connect_t connect_req;
  int open_handles, closing, idle, reused, handshake_done;
  SSL *ssl;
  BIO *rbio, *wbio; /* owned by |ssl| */
  llhttp_t parser;
  httpc_req_t *req;
  httpc_req_t *done_req;
};

/* The llhttp callbacks that fill a request's response fields; the parser's
 * |data| is the connection. They use only the connection's |req| and
 * |peer| and the request's response fields, |max_body| and |head_only|, so
 * a blocking client (acme/etcd_conn.c) runs them on a zeroed pair whose
 * libuv handles are never initialised. */
extern const llhttp_settings_t acme__httpc_parser_settings;

/* acme__httpc_prepare parses |r|'s URL into |req| (scheme, host, port, pool
 * key) and serializes the request into |req->wire|. Returns 0 or UV_EINVAL
 * (bad URL, method or header); what was set is freed with |req|. */
int acme__httpc_prepare(httpc_req_t *req, const acme_httpc_req_t *r);

/* acme__httpc_client_ctx returns a new client SSL_CTX: TLS 1.2 or newer,
 * ALPN http/1.1, peers verified (roots still to be loaded), or NULL. */
SSL_CTX *acme__httpc_client_ctx(void);

/* acme__httpc_ssl_error returns the last BoringSSL error of this thread as
 * a new string (caller frees), "unknown error" when there is none. */
char *acme__httpc_ssl_error(void);

/* acme__httpc_tls_peer makes client connection |ssl| send SNI for |host|
 * (unless it is an IP literal) and verify the peer's certificate against
 * it (an IP literal against the IP SANs). Returns 0 or -1. */
int acme__httpc_tls_peer(SSL *ssl, const char *host, int host_is_ip);

/* acme__httpc_reset_response forgets a (partial) response, for a retry or
 * after an interim 1xx response. */
void acme__httpc_reset_response(httpc_req_t *req);

#endif
