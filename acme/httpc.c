/* httpc.c: the outbound HTTP/1.1 client: requests, connections, the idle
 * pool and TLS.
 *
 * Lifetimes (STYLE.md 4). A request owns one timer (its deadline) and, while
 * resolving, one uv_getaddrinfo_t; it is freed when the timer has closed and
 * no lookup is pending. A connection owns a TCP handle and a timer (its idle
 * deadline) and frees itself when both have closed. Each counts towards the
 * client's |num_live|, and a freed client releases its SSL_CTX when that
 * count reaches zero. A request and its connection point at each other
 * while attached; whoever ends the pairing clears both pointers, and a
 * connection whose request failed is closed, never reused.
 *
 * TLS runs over two memory BIOs: ciphertext read from the socket goes into
 * |rbio|, and whatever BoringSSL writes to |wbio| is flushed with uv_write.
 *
 * A response completed while a read is being processed is delivered at the
 * end of that read callback (|done_req|), once the connection has been
 * parked or closed: the user's callback may then start a request that
 * takes that very connection from the pool, or free the client. */
#include "acme/httpc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "acme/httpc_internal.h"

#define SYSTEM_ROOTS "/etc/ssl/certs/ca-certificates.crt"
#define MAX_IDLE 8
#define IDLE_TIMEOUT_MS 30000

typedef struct {
  uv_write_t req;
  char data[];
} write_t;

static void req_connect(httpc_req_t *req);
static void req_fail(httpc_req_t *req, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int conn_send(httpc_conn_t *conn);
static int req_resolve(httpc_req_t *req);
static void conn_deliver(httpc_conn_t *conn);

/* ---- the client ---- */

static void client_unref(acme_httpc_t *client) {
  if (--client->num_live == 0 && client->freed) {
    SSL_CTX_free(client->ssl_ctx);
    gh_free(client);
  }
}

char *acme__httpc_ssl_error(void) {
  char msg[256];
  uint32_t e = ERR_peek_last_error();
  if (e == 0) return gh_strdup("unknown error");
  ERR_error_string_n(e, msg, sizeof(msg));
  return gh_strdup(msg);
}

int acme_httpc_load_roots(char **out_err, SSL_CTX *ctx, const char *path) {
  if (path == NULL) {
    if (access(SYSTEM_ROOTS, R_OK) != 0) {
      *out_err = gh_asprintf("cannot read the system's CA roots %s: %s (install ca-certificates, "
                             "or give the CA files to trust)", SYSTEM_ROOTS, strerror(errno));
      return -1;
    }
    path = SYSTEM_ROOTS;
  }
  if (access(path, R_OK) != 0) {
    *out_err = gh_asprintf("cannot read CA roots %s: %s", path, strerror(errno));
    return -1;
  }
  ERR_clear_error();
  if (!SSL_CTX_load_verify_locations(ctx, path, NULL)) {
    char *e = acme__httpc_ssl_error();
    *out_err = gh_asprintf("cannot load CA roots from %s (PEM certificates expected): %s", path, e);
    gh_free(e);
    return -1;
  }
  return 0;
}

SSL_CTX *acme__httpc_client_ctx(void) {
  static const uint8_t alpn[] = "\x08http/1.1";
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
      SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  return ctx;
}

acme_httpc_t *acme_httpc_new(char **out_err, uv_loop_t *loop, const char *const *extra_roots,
                             size_t num_roots) {
  *out_err = NULL;
  SSL_CTX *ctx = acme__httpc_client_ctx();
  if (ctx == NULL) {
    *out_err = gh_strdup("cannot create the HTTPS client's TLS context");
    return NULL;
  }
  /* No system roots is not an error: the extra roots may be all we need. */
  if (access(SYSTEM_ROOTS, R_OK) == 0 && acme_httpc_load_roots(out_err, ctx, SYSTEM_ROOTS) != 0) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  for (size_t i = 0; i < num_roots; i++) {
    if (acme_httpc_load_roots(out_err, ctx, extra_roots[i]) != 0) {
      SSL_CTX_free(ctx);
      return NULL;
    }
  }
  acme_httpc_t *client = gh_calloc(1, sizeof(*client));
  client->loop = loop;
  client->ssl_ctx = ctx;
  gh_list_init(&client->idle);
  gh_list_init(&client->reqs);
  return client;
}

/* ---- connections ---- */

static void conn_on_close(uv_handle_t *h) {
  httpc_conn_t *conn = h->data;
  if (--conn->open_handles > 0) return;
  acme_httpc_t *client = conn->client;
  SSL_free(conn->ssl);
  gh_free(conn->key);
  gh_free(conn);
  client_unref(client);
}

/* conn_close detaches |conn| from its request (if any) and closes it. */
static void conn_close(httpc_conn_t *conn) {
  if (conn->closing) return;
  conn->closing = 1;
  if (conn->idle) {
    gh_list_remove(&conn->link);
    conn->client->num_idle--;
    conn->idle = 0;
  }
  if (conn->req != NULL) {
    conn->req->conn = NULL;
    conn->req = NULL;
  }
  uv_close((uv_handle_t *)&conn->tcp, conn_on_close);
  uv_close((uv_handle_t *)&conn->timer, conn_on_close);
}

static httpc_conn_t *conn_new(acme_httpc_t *client, const char *key, const struct sockaddr *addr) {
  httpc_conn_t *conn = gh_calloc(1, sizeof(*conn));
  conn->client = client;
  conn->key = gh_strdup(key);
  gh_list_init(&conn->link);
  /* Neither can fail on Unix: the socket is made by uv_tcp_connect. */
  if (uv_tcp_init(client->loop, &conn->tcp) != 0 || uv_timer_init(client->loop, &conn->timer) != 0)
    abort();
  conn->tcp.data = conn;
  conn->timer.data = conn;
  conn->open_handles = 2;
  client->num_live++;
  char ip[INET6_ADDRSTRLEN] = "?";
  if (addr->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)addr;
    uv_ip6_name(a6, ip, sizeof(ip));
    snprintf(conn->peer, sizeof(conn->peer), "[%s]:%u", ip, ntohs(a6->sin6_port));
  } else {
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)addr;
    uv_ip4_name(a4, ip, sizeof(ip));
    snprintf(conn->peer, sizeof(conn->peer), "%s:%u", ip, ntohs(a4->sin_port));
  }
  return conn;
}

static void conn_attach(httpc_conn_t *conn, httpc_req_t *req) {
  conn->req = req;
  req->conn = conn;
  llhttp_init(&conn->parser, HTTP_RESPONSE, &acme__httpc_parser_settings);
  conn->parser.data = conn;
}

static void on_idle_timeout(uv_timer_t *t) { conn_close(t->data); }

/* conn_park puts a connection whose response is complete into the pool. */
static void conn_park(httpc_conn_t *conn) {
  acme_httpc_t *client = conn->client;
  if (client->num_idle >= MAX_IDLE) {
    conn_close(GH_CONTAINER_OF(client->idle.prev, httpc_conn_t, link)); /* the oldest */
  }
  conn->idle = 1;
  conn->reused = 1;
  gh_list_insert(&client->idle, &conn->link);
  client->num_idle++;
  uv_timer_start(&conn->timer, on_idle_timeout, IDLE_TIMEOUT_MS, 0);
}

static httpc_conn_t *pool_take(acme_httpc_t *client, const char *key) {
  for (gh_link_t *l = client->idle.next; l != &client->idle; l = l->next) {
    httpc_conn_t *conn = GH_CONTAINER_OF(l, httpc_conn_t, link);
    if (strcmp(conn->key, key) == 0) {
      gh_list_remove(l);
      client->num_idle--;
      conn->idle = 0;
      uv_timer_stop(&conn->timer);
      return conn;
    }
  }
  return NULL;
}

/* conn_complete ends the exchange on |conn| after a complete response;
 * |reusable| says whether the connection may serve another request. */
static void conn_complete(httpc_conn_t *conn, int reusable) {
  httpc_req_t *req = conn->req;
  conn->req = NULL;
  req->conn = NULL;
  conn->done_req = req;
  if (reusable && !conn->client->freed && llhttp_should_keep_alive(&conn->parser)) {
    conn_park(conn);
  } else {
    conn_close(conn);
  }
}

/* conn_io_error handles EOF (|err| UV_EOF) or a read or write error on
 * |conn|: the end of a close-delimited body, a stale pooled connection to
 * retry, or the request's failure. */
static void conn_io_error(httpc_conn_t *conn, int err, const char *what) {
  httpc_req_t *req = conn->req;
  if (req == NULL) {
    conn_close(conn); /* an idle connection the server closed */
    return;
  }
  if (err == UV_EOF && req->headers_done && llhttp_message_needs_eof(&conn->parser)) {
    llhttp_finish(&conn->parser);
    if (req->msg_done) {
      conn_complete(conn, 0);
      return;
    }
  }
  if (conn->reused && !req->got_byte && !req->retried &&
      (err == UV_EOF || err == UV_ECONNRESET || err == UV_EPIPE)) {
    /* The server closed a pooled connection as we reused it: nothing of
     * this request was processed, so one fresh attempt is safe. */
    conn_close(conn);
    req->retried = 1;
    acme__httpc_reset_response(req);
    if (req->addrs != NULL) {
      req->next_addr = req->addrs;
      req_connect(req);
    } else if ((err = req_resolve(req)) != 0) {
      req_fail(req, err, "cannot resolve %s: %s", req->host, uv_strerror(err));
    }
    return;
  }
  if (err == UV_EOF) {
    req_fail(req, UV_EOF, "connection closed by %s %s", conn->peer,
             !conn->handshake_done && conn->ssl ? "during the TLS handshake"
             : !req->got_byte                   ? "before any response"
             : req->headers_done                ? "before the end of the response body"
                                                : "in the middle of the response head");
  } else {
    req_fail(req, err, "%s %s failed: %s", what, conn->peer, uv_strerror(err));
  }
}

static void on_write(uv_write_t *w, int status) {
  write_t *wr = GH_CONTAINER_OF(w, write_t, req);
  httpc_conn_t *conn = w->handle->data;
  gh_free(wr);
  if (status == 0 || status == UV_ECANCELED || conn->closing) return;
  conn_io_error(conn, status, "write to");
  conn_deliver(conn);
}

static int conn_write(httpc_conn_t *conn, const void *data, size_t len) {
  write_t *wr = gh_malloc(sizeof(*wr) + len);
  memcpy(wr->data, data, len);
  uv_buf_t buf = uv_buf_init(wr->data, (unsigned)len);
  int r = uv_write(&wr->req, (uv_stream_t *)&conn->tcp, &buf, 1, on_write);
  if (r != 0) gh_free(wr);
  return r;
}

/* conn_flush sends what BoringSSL has written to |wbio|. */
static int conn_flush(httpc_conn_t *conn) {
  const uint8_t *data;
  size_t len;
  if (!BIO_mem_contents(conn->wbio, &data, &len) || len == 0) return 0;
  int r = conn_write(conn, data, len);
  BIO_reset(conn->wbio);
  return r;
}

static void conn_tls_error(httpc_conn_t *conn) {
  httpc_req_t *req = conn->req;
  if (req == NULL) {
    conn_close(conn);
    return;
  }
  long vr = SSL_get_verify_result(conn->ssl);
  if (!conn->handshake_done && vr != X509_V_OK) {
    req_fail(req, ACME_HTTPC_ETLS, "TLS certificate of %s (%s) rejected: %s", req->host,
             conn->peer, X509_verify_cert_error_string(vr));
  } else {
    char *e = acme__httpc_ssl_error();
    req_fail(req, ACME_HTTPC_ETLS, "TLS %s with %s failed: %s",
             conn->handshake_done ? "read" : "handshake", conn->peer, e);
    gh_free(e);
  }
}

static void conn_feed(httpc_conn_t *conn, const char *data, size_t len) {
  httpc_req_t *req = conn->req;
  if (req == NULL) {
    conn_close(conn); /* bytes nobody asked for: the connection is unusable */
    return;
  }
  req->got_byte = 1;
  if (req->phase == HTTPC_PHASE_WAIT) req->phase = HTTPC_PHASE_READ;
  llhttp_errno_t e = llhttp_execute(&conn->parser, data, len);
  if (e == HPE_OK) return;
  if (e == HPE_PAUSED && req->msg_done) {
    size_t used = (size_t)(llhttp_get_error_pos(&conn->parser) - data);
    conn_complete(conn, used == len);
  } else if (req->parse_err != 0) {
    req_fail(req, req->parse_err, "%s", req->parse_msg);
  } else {
    req_fail(req, UV_EPROTO, "malformed response from %s: %s", conn->peer,
             e == HPE_PAUSED_UPGRADE ? "unexpected protocol upgrade"
                                     : llhttp_get_error_reason(&conn->parser));
  }
}

/* conn_drive advances the TLS connection after new ciphertext arrived:
 * the handshake, then the request, then decrypted response bytes. */
static void conn_drive(httpc_conn_t *conn) {
  if (!conn->handshake_done) {
    ERR_clear_error();
    int r = SSL_do_handshake(conn->ssl);
    if (r != 1) {
      if (SSL_get_error(conn->ssl, r) == SSL_ERROR_WANT_READ) {
        if ((r = conn_flush(conn)) != 0) conn_io_error(conn, r, "write to");
      } else {
        conn_tls_error(conn);
      }
      return;
    }
    conn->handshake_done = 1;
    int err = conn_send(conn);
    if (err != 0) {
      conn_io_error(conn, err, "write to");
      return;
    }
  }
  while (!conn->closing) {
    ERR_clear_error();
    int n = SSL_read(conn->ssl, conn->client->buf, sizeof(conn->client->buf));
    if (n > 0) {
      conn_feed(conn, conn->client->buf, (size_t)n);
      continue;
    }
    int e = SSL_get_error(conn->ssl, n);
    if (e == SSL_ERROR_WANT_READ) break;
    if (e == SSL_ERROR_ZERO_RETURN) {
      conn_io_error(conn, UV_EOF, "read from");
    } else {
      conn_tls_error(conn);
    }
    return;
  }
  /* BoringSSL may have answered something (a key update, an alert). */
  if (!conn->closing) {
    int r = conn_flush(conn);
    if (r != 0) conn_io_error(conn, r, "write to");
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  httpc_conn_t *conn = h->data;
  *buf = uv_buf_init(conn->client->buf, sizeof(conn->client->buf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  httpc_conn_t *conn = s->data;
  if (nread == 0 || conn->closing) return;
  if (nread < 0) {
    conn_io_error(conn, (int)nread, "read from");
  } else if (conn->ssl != NULL) {
    BIO_write(conn->rbio, buf->base, (int)nread);
    conn_drive(conn);
  } else {
    conn_feed(conn, buf->base, (size_t)nread);
  }
  conn_deliver(conn);
}

static int conn_start_tls(httpc_conn_t *conn, httpc_req_t *req) {
  conn->ssl = SSL_new(conn->client->ssl_ctx);
  if (conn->ssl == NULL) return -1;
  conn->rbio = BIO_new(BIO_s_mem());
  conn->wbio = BIO_new(BIO_s_mem());
  if (conn->rbio == NULL || conn->wbio == NULL) {
    BIO_free(conn->rbio);
    BIO_free(conn->wbio);
    return -1;
  }
  BIO_set_mem_eof_return(conn->rbio, -1); /* empty means "wait", not EOF */
  SSL_set_bio(conn->ssl, conn->rbio, conn->wbio);
  SSL_set_connect_state(conn->ssl);
  return acme__httpc_tls_peer(conn->ssl, req->host, req->host_is_ip);
}

int acme__httpc_tls_peer(SSL *ssl, const char *host, int host_is_ip) {
  X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (host_is_ip) {
    /* RFC 6066 3: no SNI for an address; its IP SAN is checked instead. */
    if (!X509_VERIFY_PARAM_set1_ip_asc(param, host)) return -1;
  } else if (!SSL_set_tlsext_host_name(ssl, host) || !SSL_set1_host(ssl, host)) {
    return -1;
  }
  return 0;
}

static void on_connect(uv_connect_t *c, int status) {
  httpc_conn_t *conn = c->handle->data;
  if (status == UV_ECANCELED || conn->closing) return;
  httpc_req_t *req = conn->req;
  if (status < 0) {
    if (req->connect_errs.len) httpc_buf_add(&req->connect_errs, "; ", 2);
    char *m = gh_asprintf("connect to %s failed: %s", conn->peer, uv_strerror(status));
    httpc_buf_add(&req->connect_errs, m, strlen(m));
    gh_free(m);
    req->last_connect_err = status;
    conn_close(conn);
    req_connect(req);
    return;
  }
  uv_tcp_nodelay(&conn->tcp, 1);
  int r = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
  if (r != 0) {
    conn_io_error(conn, r, "read from");
    return;
  }
  if (!req->tls) {
    if ((r = conn_send(conn)) != 0) conn_io_error(conn, r, "write to");
    return;
  }
  req->phase = HTTPC_PHASE_HANDSHAKE;
  if (conn_start_tls(conn, req) != 0) {
    char *e = acme__httpc_ssl_error();
    req_fail(req, ACME_HTTPC_ETLS, "cannot set up TLS for %s: %s", req->host, e);
    gh_free(e);
    return;
  }
  conn_drive(conn);
}

/* conn_send writes the attached request's bytes. Returns 0 or a libuv
 * error; the response is awaited from then on. */
static int conn_send(httpc_conn_t *conn) {
  httpc_req_t *req = conn->req;
  req->phase = HTTPC_PHASE_WAIT;
  if (conn->ssl == NULL) return conn_write(conn, req->wire, req->wire_len);
  ERR_clear_error();
  /* A memory BIO takes everything: SSL_write either writes it all or fails. */
  if (SSL_write(conn->ssl, req->wire, (int)req->wire_len) != (int)req->wire_len) return UV_EPROTO;
  return conn_flush(conn);
}

/* ---- requests ---- */

static void req_maybe_free(httpc_req_t *req) {
  if (!req->timer_closed || req->gai_pending) return;
  acme_httpc_t *client = req->client;
  acme__httpc_reset_response(req);
  gh_free(req->headers);
  if (req->addrs != NULL) uv_freeaddrinfo(req->addrs);
  httpc_buf_clear(&req->connect_errs);
  gh_free(req->method);
  gh_free(req->url);
  gh_free(req->host);
  gh_free(req->key);
  gh_free(req->wire);
  gh_free(req);
  client_unref(client);
}

static void req_on_timer_close(uv_handle_t *h) {
  httpc_req_t *req = h->data;
  req->timer_closed = 1;
  req_maybe_free(req);
}

/* req_finish runs the callback once, with the response (|err| 0) or the
 * error |msg|, then releases the request. */
static void req_finish(httpc_req_t *req, int err, const char *msg) {
  if (req->done) return;
  req->done = 1;
  gh_list_remove(&req->link);
  uv_timer_stop(&req->timer);
  if (req->conn != NULL) conn_close(req->conn); /* a failed exchange */
  if (req->gai_pending) uv_cancel((uv_req_t *)&req->gai);
  acme_httpc_resp_t resp = {.url = req->url, .body = ""};
  if (err != 0) {
    resp.error = err;
    resp.error_msg = msg;
  } else {
    resp.status = req->status;
    resp.headers = req->headers;
    resp.num_headers = req->num_headers;
    if (req->body.ptr != NULL) resp.body = req->body.ptr;
    resp.body_len = req->body.len;
  }
  req->cb(&resp, req->arg);
  uv_close((uv_handle_t *)&req->timer, req_on_timer_close);
}

static void req_fail(httpc_req_t *req, int err, const char *fmt, ...) {
  char detail[1024]; /* names, addresses and a reason: a longer one is cut */
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof(detail), fmt, ap);
  va_end(ap);
  char *msg = gh_asprintf("%s %s: %s", req->method, req->url, detail);
  req_finish(req, err, msg);
  gh_free(msg);
}

static void conn_deliver(httpc_conn_t *conn) {
  httpc_req_t *req = conn->done_req;
  if (req == NULL) return;
  conn->done_req = NULL;
  req_finish(req, 0, NULL);
}

/* req_connect dials the next resolved address (or fails when none is
 * left). */
static void req_connect(httpc_req_t *req) {
  while (req->next_addr != NULL) {
    struct addrinfo *ai = req->next_addr;
    req->next_addr = ai->ai_next;
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    httpc_conn_t *conn = conn_new(req->client, req->key, ai->ai_addr);
    conn_attach(conn, req);
    req->phase = HTTPC_PHASE_CONNECT;
    int r = uv_tcp_connect(&conn->connect_req, &conn->tcp, ai->ai_addr, on_connect);
    if (r == 0) return;
    req->last_connect_err = r;
    char *m = gh_asprintf("%sconnect to %s failed: %s", req->connect_errs.len ? "; " : "",
                          conn->peer, uv_strerror(r));
    httpc_buf_add(&req->connect_errs, m, strlen(m));
    gh_free(m);
    conn_close(conn);
  }
  req_fail(req, req->last_connect_err ? req->last_connect_err : UV_EAI_NONAME, "%s",
           req->connect_errs.len ? req->connect_errs.ptr : "no usable address");
}

static void on_resolved(uv_getaddrinfo_t *gai, int status, struct addrinfo *res) {
  httpc_req_t *req = gai->data;
  req->gai_pending = 0;
  if (req->done || req->cancelled) {
    if (res != NULL) uv_freeaddrinfo(res);
    req_maybe_free(req);
    return;
  }
  if (status < 0) {
    req_fail(req, status, "cannot resolve %s: %s", req->host, uv_strerror(status));
    return;
  }
  req->addrs = res;
  req->next_addr = res;
  req_connect(req);
}

static int req_resolve(httpc_req_t *req) {
  /* No AI_ADDRCONFIG: on a loopback-only host it hides "localhost". */
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  if (req->host_is_ip) hints.ai_flags = AI_NUMERICHOST;
  req->gai.data = req;
  req->phase = HTTPC_PHASE_RESOLVE;
  int r = uv_getaddrinfo(req->client->loop, &req->gai, on_resolved, req->host, req->port_str,
                         &hints);
  if (r == 0) req->gai_pending = 1;
  return r;
}

static void on_timeout(uv_timer_t *t) {
  static const char *const doing[] = {
      [HTTPC_PHASE_RESOLVE] = "resolving",
      [HTTPC_PHASE_CONNECT] = "connecting to",
      [HTTPC_PHASE_HANDSHAKE] = "in the TLS handshake with",
      [HTTPC_PHASE_WAIT] = "waiting for the response from",
      [HTTPC_PHASE_READ] = "reading the response from",
  };
  httpc_req_t *req = t->data;
  char so_far[96] = "";
  if (req->phase == HTTPC_PHASE_READ) {
    snprintf(so_far, sizeof(so_far), " (%zu head and %zu body bytes so far)", req->head_bytes,
             req->body.len);
  }
  req_fail(req, UV_ETIMEDOUT, "timed out after %llu ms %s %s%s",
           (unsigned long long)req->timeout_ms, doing[req->phase],
           req->conn != NULL ? req->conn->peer : req->host, so_far);
}

static void on_cancel(uv_timer_t *t) {
  req_fail(t->data, UV_ECANCELED, "cancelled: the HTTP client was freed");
}

void acme_httpc_free(acme_httpc_t *client) {
  if (client == NULL || client->freed) return;
  client->freed = 1;
  while (client->idle.next != &client->idle) {
    conn_close(GH_CONTAINER_OF(client->idle.next, httpc_conn_t, link));
  }
  for (gh_link_t *l = client->reqs.next; l != &client->reqs; l = l->next) {
    httpc_req_t *req = GH_CONTAINER_OF(l, httpc_req_t, link);
    if (req->cancelled) continue;
    req->cancelled = 1;
    if (req->conn != NULL) conn_close(req->conn);
    if (req->gai_pending) uv_cancel((uv_req_t *)&req->gai);
    /* Like libuv's own cancellations, the callback runs from the loop. */
    uv_timer_start(&req->timer, on_cancel, 0, 0);
  }
  client->num_live++;
  client_unref(client);
}

static void req_free_unstarted(httpc_req_t *req) {
  req->timer_closed = 1;
  req->client->num_live++;
  req_maybe_free(req);
}

int acme_httpc_request(acme_httpc_t *client, const acme_httpc_req_t *r, acme_httpc_cb cb,
                       void *arg) {
  if (client == NULL || r == NULL || cb == NULL || r->method == NULL || r->url == NULL ||
      (r->body_len > 0 && r->body == NULL))
    return UV_EINVAL;
  if (client->freed) return UV_ECANCELED;
  httpc_req_t *req = gh_calloc(1, sizeof(*req));
  req->client = client;
  gh_list_init(&req->link);
  req->cb = cb;
  req->arg = arg;
  req->method = gh_strdup(r->method);
  req->url = gh_strdup(r->url);
  req->head_only = strcmp(r->method, "HEAD") == 0;
  req->timeout_ms = r->timeout_ms ? r->timeout_ms : ACME_HTTPC_DEFAULT_TIMEOUT_MS;
  req->max_body = r->max_body ? r->max_body : ACME_HTTPC_DEFAULT_MAX_BODY;
  int err = acme__httpc_prepare(req, r);
  if (err != 0) {
    req_free_unstarted(req);
    return err;
  }
  httpc_conn_t *conn = pool_take(client, req->key);
  if (conn != NULL) {
    conn_attach(conn, req);
    if (conn_send(conn) != 0) conn_close(conn); /* stale: dial afresh */
  }
  if (req->conn == NULL && (err = req_resolve(req)) != 0) {
    req_free_unstarted(req);
    return err;
  }
  uv_timer_init(client->loop, &req->timer);
  req->timer.data = req;
  uv_timer_start(&req->timer, on_timeout, req->timeout_ms, 0);
  gh_list_insert(&client->reqs, &req->link);
  client->num_live++;
  return 0;
}
