/* conn.c: a downstream connection: accept, TLS through a custom BIO, reads,
 * writes, timers and close.
 *
 * libuv does the socket I/O; the SSL object never touches the socket. Its
 * BIO reads ciphertext straight out of the worker's read buffer (no copy)
 * and writes records into the worker's output buffer, which is flushed
 * with uv_try_write once per event; only what the kernel does not take at
 * once is copied into a uv_write request. An idle connection therefore
 * holds no I/O buffers at all. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>

#include "common/log.h"
#include "proxy/conn.h"
#include "proxy/ondemand.h"
#include "proxy/proxyproto.h"
#include "proxy/tls.h"

typedef struct {
  uv_write_t req;
  px_conn_t *conn;
  size_t len;
  char data[];
} px_write_t;

static void shut_down(px_conn_t *c);

/* ---- the BIO ---- */

static int bio_read(BIO *b, char *out, int len) {
  px_conn_t *c = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (c->in_len == 0) {
    BIO_set_retry_read(b);
    return -1;
  }
  size_t n = (size_t)len < c->in_len ? (size_t)len : c->in_len;
  memcpy(out, c->in_ptr, n);
  c->in_ptr += n;
  c->in_len -= n;
  return (int)n;
}

static void obuf_append(px_conn_t *c, const void *data, size_t len) {
  px_worker_t *w = c->w;
  if (w->obuf_owner != c && w->obuf_len > 0) px_conn_flush(w->obuf_owner);
  w->obuf_owner = c;
  if (w->obuf_len + len > w->obuf_cap) {
    size_t cap = w->obuf_cap ? w->obuf_cap : 64 * 1024;
    while (cap < w->obuf_len + len) cap *= 2;
    w->obuf = gh_realloc(w->obuf, cap);
    w->obuf_cap = cap;
  }
  memcpy(w->obuf + w->obuf_len, data, len);
  w->obuf_len += len;
}

static int bio_write(BIO *b, const char *data, int len) {
  px_conn_t *c = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  obuf_append(c, data, (size_t)len);
  return len;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)b, (void)num, (void)ptr;
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

BIO_METHOD *px_bio_method_new(const char *name, int (*rd)(BIO *, char *, int),
                              int (*wr)(BIO *, const char *, int)) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, name);
  BIO_meth_set_write(m, wr);
  BIO_meth_set_read(m, rd);
  BIO_meth_set_ctrl(m, bio_ctrl);
  BIO_meth_set_create(m, bio_create);
  return m;
}

void px_worker_bio_init(px_worker_t *w) {
  w->bio_method = px_bio_method_new("gatehouse", bio_read, bio_write);
}

/* ---- lifetime ---- */

static void handle_closed(uv_handle_t *h) {
  px_conn_t *c = h->data;
  if (--c->handles_open > 0) return;
  px_worker_t *w = c->w;
  if (w->obuf_owner == c) {
    w->obuf_owner = NULL;
    w->obuf_len = 0;
  }
  gh_list_remove(&c->link);
  w->num_conns--;
  if (c->listener) PX_STAT_ADD(c->listener->stats.closed, 1);
  SSL_free(c->ssl);
  c->ssl = NULL;
  px_h1_freed(c);
  px_h2_freed(c);
  px_ccert_peer_cleanup(&c->peer);
  px_buf_free(&c->held);
  gh_free(c);
  px_worker_conn_gone(w);
}

void px_conn_close(px_conn_t *c) {
  if (c->state == PX_CONN_CLOSING) return;
  c->state = PX_CONN_CLOSING;
  px_ondemand_conn_gone(c);
  if (c->h2) px_h2_closing(c);
  else px_h1_closing(c);
  if (c->w->obuf_owner == c) {
    c->w->obuf_owner = NULL;
    c->w->obuf_len = 0;
  }
  if (c->w->pout_owner == c) {
    c->w->pout_owner = NULL;
    c->w->pout.len = 0;
  }
  uv_close((uv_handle_t *)&c->timer, handle_closed);
  uv_close((uv_handle_t *)&c->tcp, handle_closed);
}

static void on_timer(uv_timer_t *t) {
  px_conn_t *c = t->data;
  if (!px_lazy_expired(t, &c->tl, on_timer)) return;
  if (c->state == PX_CONN_PROXY) {
    GH_DEBUG("proxy", "%s: no PROXY header in time", c->client_ip);
    PX_STAT_ADD(c->w->stats.pp_refused[PX_PP_TIMEOUT], 1);
    px_conn_close(c);
    return;
  }
  if (c->state == PX_CONN_HANDSHAKE) {
    GH_DEBUG("tls", "%s: handshake timeout", c->client_ip);
    PX_STAT_ADD(c->w->stats.handshakes[PX_HS_TIMEOUT], 1);
    px_conn_close(c);
    return;
  }
  if (c->h2) px_h2_on_timeout(c);
  else px_h1_on_timeout(c);
}

void px_conn_set_timer(px_conn_t *c, uint64_t ms) {
  px_lazy_set(&c->timer, &c->tl, on_timer, ms);
}

/* ---- writes ---- */

size_t px_conn_write_queue(px_conn_t *c) {
  return uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
}

static void on_write(uv_write_t *req, int status) {
  px_write_t *wr = (px_write_t *)req;
  px_conn_t *c = wr->conn;
  gh_free(wr);
  if (c->state == PX_CONN_CLOSING) return;
  if (status < 0) {
    GH_DEBUG("proxy", "%s: write: %s", c->client_ip, uv_strerror(status));
    px_conn_close(c);
    return;
  }
  if (px_conn_write_queue(c) == 0) {
    if (c->close_when_flushed) {
      px_conn_close(c);
      return;
    }
    if (c->shutdown_when_flushed) {
      shut_down(c);
      return;
    }
  }
  if (c->state != PX_CONN_OPEN) return;
  if (c->h2) px_h2_on_written(c);
  else px_h1_on_written(c);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  px_conn_t *c = req->data;
  if (status < 0 && status != UV_ECANCELED && c->state != PX_CONN_CLOSING) px_conn_close(c);
}

/* shut_down sends FIN once everything is written; reading goes on (the
 * caller drops it) until the client closes or the linger timer fires. */
static void shut_down(px_conn_t *c) {
  if (c->shut_down || c->state == PX_CONN_CLOSING) return;
  c->shut_down = 1;
  c->shutdown_req.data = c;
  if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) px_conn_close(c);
}

/* encrypt hands |len| plaintext bytes to SSL_write; the records land in
 * the output buffer. The BIO never refuses a write, so SSL_write takes
 * everything. */
static void encrypt(px_conn_t *c, const void *data, size_t len) {
  ERR_clear_error();
  if (SSL_write(c->ssl, data, (int)len) <= 0) {
    GH_DEBUG("tls", "%s: SSL_write failed", c->client_ip);
    px_conn_close(c);
  }
}

/* encrypt_staged turns the plaintext staged for |c| into records. */
static void encrypt_staged(px_conn_t *c) {
  px_worker_t *w = c->w;
  if (w->pout_owner != c) return;
  w->pout_owner = NULL;
  if (w->pout.len == 0) return;
  size_t len = w->pout.len;
  w->pout.len = 0;
  if (c->state != PX_CONN_CLOSING) encrypt(c, w->pout.p, len);
}

/* px_conn_send queues |len| bytes for the client. Small pieces (a response
 * head is many) are staged and encrypted together at the next flush, so
 * one response becomes one TLS record rather than dozens. */
void px_conn_send(px_conn_t *c, const void *data, size_t len) {
  if (c->state == PX_CONN_CLOSING || len == 0) return;
  if (c->ssl == NULL) {
    obuf_append(c, data, len);
    return;
  }
  px_worker_t *w = c->w;
  if (w->pout_owner != c && w->pout_owner != NULL) px_conn_flush(w->pout_owner);
  if (len >= 8192) {
    encrypt_staged(c);
    encrypt(c, data, len);
    return;
  }
  w->pout_owner = c;
  px_buf_append(&w->pout, data, len);
}

int px_conn_flush(px_conn_t *c) {
  px_worker_t *w = c->w;
  encrypt_staged(c);
  if (w->obuf_owner != c || w->obuf_len == 0) return c->state == PX_CONN_CLOSING ? -1 : 0;
  size_t len = w->obuf_len, off = 0;
  w->obuf_len = 0;
  w->obuf_owner = NULL;
  if (c->state == PX_CONN_CLOSING) return -1;
  PX_STAT_ADD(w->stats.bytes_out, len);
  if (px_conn_write_queue(c) == 0) {
    uv_buf_t b = uv_buf_init(w->obuf, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n > 0) off = (size_t)n;
    else if (n < 0 && n != UV_EAGAIN) {
      GH_DEBUG("proxy", "%s: write: %s", c->client_ip, uv_strerror(n));
      px_conn_close(c);
      return -1;
    }
  }
  if (off == len) {
    if (px_conn_write_queue(c) == 0) {
      if (c->close_when_flushed) {
        px_conn_close(c);
        return -1;
      }
      if (c->shutdown_when_flushed) shut_down(c);
    }
    return c->state == PX_CONN_CLOSING ? -1 : 0;
  }
  px_write_t *wr = gh_malloc(sizeof(*wr) + (len - off));
  wr->conn = c;
  wr->len = len - off;
  memcpy(wr->data, w->obuf + off, len - off);
  uv_buf_t b = uv_buf_init(wr->data, (unsigned)wr->len);
  int rc = uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
  if (rc != 0) {
    gh_free(wr);
    px_conn_close(c);
    return -1;
  }
  return 0;
}

void px_conn_finish(px_conn_t *c, int linger) {
  if (px_conn_flush(c) != 0) return; /* staged plaintext goes before close_notify */
  if (c->ssl) SSL_shutdown(c->ssl);
  if (linger) {
    c->shutdown_when_flushed = 1;
    px_conn_read_start(c);
  } else {
    c->close_when_flushed = 1;
  }
  if (px_conn_flush(c) != 0) return;
  if (px_conn_write_queue(c) == 0) {
    if (!linger) px_conn_close(c);
    else shut_down(c);
  }
}

/* ---- reads ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  px_conn_t *c = h->data;
  buf->base = c->w->rbuf;
  buf->len = sizeof(c->w->rbuf);
}

/* handshake_failure sorts a failed handshake for the metrics, from the
 * error queue's first error. */
static px_hs_result_t handshake_failure(const px_conn_t *c) {
  uint32_t e = ERR_peek_error();
  if (c->ondemand_failed) return PX_HS_UNKNOWN_NAME;
  if (ERR_GET_LIB(e) == ERR_LIB_SSL) {
    int reason = ERR_GET_REASON(e);
    if (reason >= SSL_AD_REASON_OFFSET) return PX_HS_ALERT;
    if (reason == SSL_R_CONNECTION_REJECTED) return PX_HS_UNKNOWN_NAME;
  }
  return PX_HS_PROTOCOL;
}

static int handshake(px_conn_t *c) {
  ERR_clear_error();
  int r = SSL_do_handshake(c->ssl);
  if (r == 1) {
    if (px_tls_is_challenge(c->ssl)) {
      /* RFC 8737 3: a TLS-ALPN-01 validation ends with the handshake. */
      const char *sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
      GH_INFO("acme", "%s: served the tls-alpn-01 challenge for %s", c->client_ip,
              sni ? sni : "-");
      SSL_shutdown(c->ssl);
      c->close_when_flushed = 1;
      px_conn_flush(c);
      if (c->state != PX_CONN_CLOSING && px_conn_write_queue(c) == 0) px_conn_close(c);
      return -1;
    }
    PX_STAT_ADD(c->w->stats.handshakes[PX_HS_OK], 1);
    c->state = PX_CONN_OPEN;
    px_ccert_peer_init(&c->peer, c->ssl);
    if (c->listener && c->listener->http2 && px_h2_alpn_is_h2(c->ssl)) px_h2_start(c);
    else px_h1_start(c);
    return c->state == PX_CONN_CLOSING ? -1 : 0;
  }
  int err = SSL_get_error(c->ssl, r);
  if (err == SSL_ERROR_WANT_READ) return 0;
  if (err == SSL_ERROR_PENDING_CERTIFICATE) {
    /* Paused by ondemand.c until the name's certificate is ready. The
     * bytes after the ClientHello still sit in the worker's read buffer:
     * keep them for the resumption. */
    if (c->in_len) px_buf_append(&c->held, c->in_ptr, c->in_len);
    c->in_len = 0;
    px_conn_flush(c);
    return -1;
  }
  PX_STAT_ADD(c->w->stats.handshakes[handshake_failure(c)], 1);
  if (gh_log_enabled(GH_LOG_DEBUG)) {
    char msg[160];
    ERR_error_string_n(ERR_peek_error(), msg, sizeof(msg));
    GH_DEBUG("tls", "%s: handshake failed: %s", c->client_ip, msg);
  }
  px_conn_flush(c); /* the alert, if any */
  px_conn_close(c);
  return -1;
}

static void on_tls_read(px_conn_t *c, const char *data, size_t len) {
  if (c->paused_name != NULL) {
    /* The handshake waits for a certificate; keep what the client sends
     * meanwhile (TLS 1.3 clients send ChangeCipherSpec right away). */
    if (c->held.len + len > 64 * 1024) {
      px_conn_close(c);
      return;
    }
    px_buf_append(&c->held, data, len);
    return;
  }
  c->in_ptr = (const uint8_t *)data;
  c->in_len = len;
  if (c->state == PX_CONN_HANDSHAKE && handshake(c) != 0) return;
  while (c->state == PX_CONN_OPEN) {
    ERR_clear_error();
    int n = SSL_read(c->ssl, c->w->pbuf, sizeof(c->w->pbuf));
    if (n > 0) {
      if (c->h2) px_h2_on_bytes(c, c->w->pbuf, (size_t)n);
      else px_h1_on_bytes(c, c->w->pbuf, (size_t)n);
      continue;
    }
    int err = SSL_get_error(c->ssl, n);
    if (err == SSL_ERROR_WANT_READ) break;
    if (err == SSL_ERROR_ZERO_RETURN) {
      GH_DEBUG("tls", "%s: close_notify", c->client_ip);
    } else {
      GH_DEBUG("tls", "%s: read failed (%d)", c->client_ip, err);
    }
    px_conn_flush(c);
    px_conn_close(c);
    return;
  }
  c->in_len = 0;
  if (c->state != PX_CONN_CLOSING) px_conn_flush(c);
}

/* px_conn_resume_handshake continues a handshake that ondemand.c paused,
 * with whatever the client sent meanwhile. */
void px_conn_resume_handshake(px_conn_t *c) {
  if (c->state != PX_CONN_HANDSHAKE) return;
  px_buf_t held = c->held;
  memset(&c->held, 0, sizeof(c->held));
  px_conn_set_timer(c, c->w->gen->conf->timeouts.handshake_ms);
  on_tls_read(c, held.p, held.len);
  px_buf_free(&held);
}

/* feed hands bytes from the client to TLS, or to the plain listener's
 * codec. May close. */
static void feed(px_conn_t *c, const char *data, size_t len) {
  if (c->ssl) {
    on_tls_read(c, data, len);
    return;
  }
  if (c->h2) px_h2_on_bytes(c, data, len);
  else px_h1_on_bytes(c, data, len);
  if (c->state != PX_CONN_CLOSING) px_conn_flush(c);
}

static void start_session(px_conn_t *c);

/* set_client makes |addr| (of |family|) the connection's client address:
 * c->client_ip, which logs, X-Forwarded-For, on-demand and its per-IP
 * limits use. An IPv4-mapped IPv6 address reads as IPv4. */
/* ip_text writes |addr| of |family| as text, an IPv4-mapped IPv6 address
 * as the IPv4 one; returns the family written. */
static int ip_text(char *out, size_t out_size, int family, const uint8_t **addr) {
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (family == AF_INET6 && memcmp(*addr, mapped, 12) == 0) {
    family = AF_INET;
    *addr += 12;
  }
  if (inet_ntop(family, *addr, out, (socklen_t)out_size) == NULL) out[0] = '\0';
  return family;
}

static void set_client(px_conn_t *c, int family, const uint8_t *addr, uint16_t port) {
  char text[INET6_ADDRSTRLEN];
  family = ip_text(text, sizeof(text), family, &addr);
  memset(c->client_addr, 0, sizeof(c->client_addr));
  memcpy(c->client_addr, addr, family == AF_INET ? 4 : 16);
  c->client_family = family;
  c->client_port = port;
  memcpy(c->client_ip, text, sizeof(text));
}

int px_conn_trusted_proxy(const px_conn_t *c) {
  const conf_t *conf = c->w->gen->conf;
  return c->client_family != 0 && conf_cidr_match(conf->trusted_proxies, conf->num_trusted_proxies,
                                                  c->client_family, c->client_addr);
}

/* proxy_read takes the PROXY header from the first bytes of a connection
 * to a proxy_protocol listener; what follows it in the same read goes to
 * TLS or HTTP. Bytes are held until the header is whole; the parser
 * refuses anything longer than PX_PROXYPROTO_MAX, which bounds them. */
static void proxy_read(px_conn_t *c, const char *data, size_t len) {
  const uint8_t *p = (const uint8_t *)data;
  size_t n = len;
  if (c->held.len > 0) {
    px_buf_append(&c->held, data, len);
    p = (const uint8_t *)c->held.p;
    n = c->held.len;
  }
  px_proxyproto_t pp;
  int r = px_proxyproto_parse(p, n, &pp);
  if (r < 0) {
    GH_DEBUG("proxy", "%s: PROXY header refused: %s", c->client_ip, pp.reason);
    PX_STAT_ADD(c->w->stats.pp_refused[PX_PP_INVALID], 1);
    px_conn_close(c);
    return;
  }
  if (r == 0) {
    if (c->held.len == 0) px_buf_append(&c->held, data, len);
    return;
  }
  if (!pp.local) {
    set_client(c, pp.family, pp.src, pp.src_port);
    /* The address the client asked for is the balancer's, not ours. */
    const uint8_t *dst = pp.dst;
    ip_text(c->local_ip, sizeof(c->local_ip), pp.family, &dst);
  }
  /* The rest may be fed from the held copy: take it out of c->held,
   * which a paused handshake fills again. */
  px_buf_t held = c->held;
  memset(&c->held, 0, sizeof(c->held));
  start_session(c);
  if (c->state != PX_CONN_CLOSING && n > (size_t)r) feed(c, (const char *)p + r, n - (size_t)r);
  px_buf_free(&held);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  px_conn_t *c = s->data;
  if (nread == 0) return;
  if (nread < 0) {
    if (nread == UV_EOF && c->state == PX_CONN_OPEN && !c->h2 && c->h1.phase == PX_H1_LINGER &&
        px_conn_write_queue(c) > 0) {
      /* Closing anyway: the client's end of the request does not cancel
       * the answer still on its way. */
      px_conn_read_stop(c);
      c->shutdown_when_flushed = 0;
      c->close_when_flushed = 1;
      return;
    }
    if (c->state == PX_CONN_HANDSHAKE) {
      GH_DEBUG("tls", "%s: closed during handshake", c->client_ip);
      PX_STAT_ADD(c->w->stats.handshakes[PX_HS_CLOSED], 1);
    } else if (c->state == PX_CONN_PROXY) {
      GH_DEBUG("proxy", "%s: closed before its PROXY header", c->client_ip);
      PX_STAT_ADD(c->w->stats.pp_refused[PX_PP_CLOSED], 1);
    }
    px_conn_close(c);
    return;
  }
  PX_STAT_ADD(c->w->stats.bytes_in, (uint64_t)nread);
  if (c->state == PX_CONN_PROXY) proxy_read(c, buf->base, (size_t)nread);
  else feed(c, buf->base, (size_t)nread);
}

void px_conn_drain(px_conn_t *c) {
  if (c->state != PX_CONN_OPEN) return;
  if (c->h2) px_h2_drain(c);
  else px_h1_drain(c);
}

void px_conn_read_start(px_conn_t *c) {
  if (c->reading || c->state == PX_CONN_CLOSING) return;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = 1;
}

void px_conn_read_stop(px_conn_t *c) {
  if (!c->reading) return;
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
}

void px_conn_accept(px_listener_t *l) {
  px_worker_t *w = l->w;
  px_conn_t *c = gh_calloc(1, sizeof(*c));
  c->w = w;
  uv_tcp_init(&w->loop, &c->tcp);
  c->tcp.data = c;
  c->handles_open = 1;
  gh_list_insert(&w->conns, &c->link);
  w->num_conns++;
  if (uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&c->tcp) != 0) {
    c->state = PX_CONN_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, handle_closed);
    return;
  }
  uv_timer_init(&w->loop, &c->timer);
  c->timer.data = c;
  c->handles_open = 2;
  c->listener = l;
  PX_STAT_ADD(l->stats.accepted, 1);
  size_t max = w->gen->conf->limits.max_connections;
  if (w->draining || (max && w->num_conns > max)) {
    px_conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  struct sockaddr_storage ss;
  int sl = sizeof(ss);
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET6) {
      set_client(c, AF_INET6, ((const struct sockaddr_in6 *)&ss)->sin6_addr.s6_addr,
                 ntohs(((const struct sockaddr_in6 *)&ss)->sin6_port));
    } else if (ss.ss_family == AF_INET) {
      set_client(c, AF_INET, (const uint8_t *)&((const struct sockaddr_in *)&ss)->sin_addr,
                 ntohs(((const struct sockaddr_in *)&ss)->sin_port));
    }
  }
  if (l->proxy_protocol) {
    /* Only a listed balancer may name the client (issue 14); anyone else
     * is closed before a byte is read. */
    if (c->client_family == 0 || !conf_cidr_match(l->proxy_trusted, l->num_proxy_trusted,
                                                   c->client_family, c->client_addr)) {
      GH_DEBUG("proxy", "%s: refused: not in proxy_trusted of %s", c->client_ip, l->label);
      PX_STAT_ADD(w->stats.pp_refused[PX_PP_UNTRUSTED], 1);
      px_conn_close(c);
      return;
    }
    c->state = PX_CONN_PROXY;
    px_conn_set_timer(c, w->gen->conf->timeouts.handshake_ms);
  } else {
    start_session(c);
  }
  px_conn_read_start(c);
}

/* start_session begins TLS (the handshake) or, on the plain listener,
 * HTTP/1.1, once the connection is accepted and its PROXY header, if any,
 * taken. May close. */
static void start_session(px_conn_t *c) {
  px_worker_t *w = c->w;
  px_listener_t *l = c->listener;
  if (l->is_tls) {
    c->is_tls = 1;
    c->ssl = SSL_new(w->gen->ssl_ctx);
    BIO *bio = BIO_new(w->bio_method);
    BIO_set_data(bio, c);
    SSL_set_bio(c->ssl, bio, bio);
    SSL_set_accept_state(c->ssl);
    if (l->http2) px_tls_allow_h2(c->ssl);
    if (c->local_ip[0] == '\0') {
      struct sockaddr_storage ss;
      int sl = sizeof(ss);
      if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        const uint8_t *a = ss.ss_family == AF_INET6
                               ? ((const struct sockaddr_in6 *)&ss)->sin6_addr.s6_addr
                               : (const uint8_t *)&((const struct sockaddr_in *)&ss)->sin_addr;
        ip_text(c->local_ip, sizeof(c->local_ip), ss.ss_family, &a);
      }
    }
    px_tls_set_local_ip(c->ssl, c->local_ip);
    /* After the handshake, drop what only the handshake needed. */
    SSL_set_shed_handshake_config(c->ssl, 1);
    c->state = PX_CONN_HANDSHAKE;
    px_conn_set_timer(c, w->gen->conf->timeouts.handshake_ms);
  } else {
    c->state = PX_CONN_OPEN;
    px_h1_start(c);
  }
}
