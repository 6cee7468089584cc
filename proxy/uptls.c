/* uptls.c: TLS toward upstreams ("https://" upstreams, issue 14).
 *
 * One SSL_CTX per configured upstream address, built with its generation:
 * TLS 1.2+, the peer verified against the system roots or only the
 * address's "ca" files, with the name from "server_name" or the address's
 * host (an IP literal is checked against the certificate's IP SANs and
 * sends no SNI, RFC 6066 3), an optional client certificate, and ALPN
 * "h2" or "http/1.1" by the upstream's protocol.
 *
 * A connection's ciphertext goes through a custom BIO: reads come straight
 * out of the worker's read buffer, writes are appended to the
 * connection's |tls_out| and written to the socket after each SSL call.
 * The exchange above sees plaintext only (px_ex__up_connected once the
 * handshake is done, px_ex__up_read for every decrypted run).
 *
 * Sessions are resumed per endpoint and worker: the newest session the
 * upstream gave (TLS 1.3 tickets arrive after the handshake, so they are
 * taken from the new-session callback) is kept in the worker's pool for
 * that endpoint and offered by the next connection. */
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#include "acme/httpc.h"
#include "common/log.h"
#include "proxy/conn.h"
#include "proxy/upstream.h"

/* ---- the context ---- */

static char *ssl_error_text(void) {
  char msg[256];
  uint32_t e = ERR_peek_last_error();
  if (e == 0) return gh_strdup("unknown error");
  ERR_error_string_n(e, msg, sizeof(msg));
  return gh_strdup(msg);
}

static int new_session(SSL *ssl, SSL_SESSION *sess) {
  px_upconn_t *u = SSL_get_app_data(ssl);
  if (u == NULL || u->gen != u->w->gen) return 0; /* the pools are another generation's */
  px_pool_t *pool = &u->w->pools[u->addr->index];
  SSL_SESSION_free(pool->session);
  pool->session = sess;
  return 1; /* we keep the reference */
}

SSL_CTX *px_uptls_ctx_new(char **out_err, const conf_addr_t *a) {
  static const uint8_t alpn_h1[] = "\x08http/1.1";
  static const uint8_t alpn_h2[] = "\x02h2";
  *out_err = NULL;
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  int h2 = a->protocol == CONF_UP_H2;
  if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
      SSL_CTX_set_alpn_protos(ctx, h2 ? alpn_h2 : alpn_h1,
                              h2 ? sizeof(alpn_h2) - 1 : sizeof(alpn_h1) - 1) != 0) {
    SSL_CTX_free(ctx);
    *out_err = gh_asprintf("upstream %s: cannot create its TLS context", a->text);
    return NULL;
  }
  if (a->insecure_skip_verify) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    char *err = NULL;
    if (a->num_tls_ca == 0) {
      if (acme_httpc_load_roots(&err, ctx, NULL) != 0) goto fail_err;
    }
    for (size_t i = 0; i < a->num_tls_ca; i++) {
      if (acme_httpc_load_roots(&err, ctx, a->tls_ca[i]) != 0) goto fail_err;
    }
    goto roots_done;
  fail_err:
    *out_err = gh_asprintf("upstream %s: %s", a->text, err);
    gh_free(err);
    SSL_CTX_free(ctx);
    return NULL;
  }
roots_done:
  if (a->tls_cert != NULL) {
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, a->tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, a->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      char *e = ssl_error_text();
      *out_err = gh_asprintf("upstream %s: cannot use client_cert %s with client_key %s: %s",
                             a->text, a->tls_cert, a->tls_key, e);
      gh_free(e);
      SSL_CTX_free(ctx);
      return NULL;
    }
  }
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
  SSL_CTX_sess_set_new_cb(ctx, new_session);
  if (a->insecure_skip_verify) {
    GH_WARN("proxy", "upstream %s: insecure_skip_verify is on: its certificate is NOT checked, so "
                     "anyone on the network path can read and change this traffic",
            a->text);
  }
  return ctx;
}

/* ---- the BIO ---- */

static int bio_read(BIO *b, char *out, int len) {
  px_upconn_t *u = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (u->in_len == 0) {
    BIO_set_retry_read(b);
    return -1;
  }
  size_t n = (size_t)len < u->in_len ? (size_t)len : u->in_len;
  memcpy(out, u->in_p, n);
  u->in_p += n;
  u->in_len -= n;
  return (int)n;
}

static int bio_write(BIO *b, const char *data, int len) {
  px_upconn_t *u = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  px_buf_append(&u->tls_out, data, (size_t)len);
  return len;
}

void px_uptls_worker_init(px_worker_t *w) {
  w->up_bio_method = px_bio_method_new("gatehouse-up", bio_read, bio_write);
}

void px_uptls_worker_free(px_worker_t *w) {
  BIO_meth_free(w->up_bio_method);
  w->up_bio_method = NULL;
}

/* ---- a connection ---- */

/* flush writes the ciphertext the last SSL call produced. */
static void flush(px_upconn_t *u) {
  if (u->tls_out.len == 0) return;
  uv_buf_t b = uv_buf_init(u->tls_out.p, (unsigned)u->tls_out.len);
  px_upconn_raw_writev(u, &b, 1);
  u->tls_out.len = 0;
}

/* verify_name is the name the certificate must carry: "server_name", else
 * the configured host. */
static const char *verify_name(const conf_addr_t *a) {
  return a->server_name ? a->server_name : a->host;
}

static int is_ip(const char *s) {
  struct in6_addr ip;
  return inet_pton(AF_INET, s, &ip) == 1 || inet_pton(AF_INET6, s, &ip) == 1;
}

int px_uptls_begin(px_upconn_t *u, SSL_CTX *ctx) {
  const conf_addr_t *a = u->addr->conf;
  SSL *ssl = SSL_new(ctx);
  if (ssl == NULL) return -1;
  BIO *bio = BIO_new(u->w->up_bio_method);
  if (bio == NULL) {
    SSL_free(ssl);
    return -1;
  }
  BIO_set_data(bio, u);
  SSL_set_bio(ssl, bio, bio);
  SSL_set_app_data(ssl, u);
  SSL_set_connect_state(ssl);
  u->ssl = ssl;
  const char *name = verify_name(a);
  X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (is_ip(name)) {
    if (!a->insecure_skip_verify && !X509_VERIFY_PARAM_set1_ip_asc(param, name)) return -1;
  } else {
    if (!SSL_set_tlsext_host_name(ssl, name)) return -1;
    if (!a->insecure_skip_verify && !SSL_set1_host(ssl, name)) return -1;
  }
  px_pool_t *pool = u->gen == u->w->gen ? &u->w->pools[u->addr->index] : NULL;
  if (pool && pool->session) SSL_set_session(ssl, pool->session);
  return px_uptls_handshake(u);
}

/* handshake_error says why the handshake on |u| failed. */
static void handshake_error(px_upconn_t *u, char *out, size_t len) {
  long v = SSL_get_verify_result(u->ssl);
  uint32_t last = ERR_peek_last_error();
  if (v != X509_V_OK && ERR_GET_LIB(last) == ERR_LIB_SSL &&
      ERR_GET_REASON(last) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
    snprintf(out, len, "TLS: certificate verify failed: %s (verified as %s)",
             X509_verify_cert_error_string(v), verify_name(u->addr->conf));
    return;
  }
  uint32_t e = ERR_peek_last_error();
  char msg[200];
  if (e == 0) snprintf(msg, sizeof(msg), "closed during the handshake");
  else ERR_error_string_n(e, msg, sizeof(msg));
  snprintf(out, len, "TLS handshake: %s", msg);
}

int px_uptls_handshake(px_upconn_t *u) {
  ERR_clear_error();
  int r = SSL_do_handshake(u->ssl);
  flush(u);
  if (r == 1) {
    u->tls_done = 1;
    if (SSL_session_reused(u->ssl)) u->tls_resumed = 1;
    return 1;
  }
  int err = SSL_get_error(u->ssl, r);
  if (err == SSL_ERROR_WANT_READ) return 0;
  return -1;
}

/* connected reports the end of the handshake to the exchange: |r| as
 * px_uptls_handshake returned it. */
static void handshake_end(px_upconn_t *u, int r) {
  if (r > 0) {
    px_ex__up_connected(u, 0, NULL);
    return;
  }
  char why[320];
  handshake_error(u, why, sizeof(why));
  px_ex__up_connected(u, UV_EPROTO, why);
}

void px_uptls_read(px_upconn_t *u, ssize_t nread, const char *p) {
  if (nread < 0) {
    if (!u->tls_done) {
      handshake_end(u, -1);
      return;
    }
    px_ex__up_read(u, nread, NULL);
    return;
  }
  u->in_p = p;
  u->in_len = (size_t)nread;
  if (!u->tls_done) {
    int r = px_uptls_handshake(u);
    if (r == 0) return;
    handshake_end(u, r);
    if (r < 0 || uv_is_closing((uv_handle_t *)&u->tcp)) return;
  }
  /* Decrypt everything that arrived, a buffer at a time; what a run hands
   * the exchange may end its response (the connection goes back to the
   * pool: further plaintext then closes it) or close the connection. */
  char *out = u->w->upbuf;
  size_t cap = sizeof(u->w->upbuf);
  for (;;) {
    size_t got = 0;
    int end = 0; /* 1: close_notify, -1: error */
    while (got < cap) {
      ERR_clear_error();
      int n = SSL_read(u->ssl, out + got, (int)(cap - got));
      if (n > 0) {
        got += (size_t)n;
        continue;
      }
      int err = SSL_get_error(u->ssl, n);
      if (err == SSL_ERROR_WANT_READ) break;
      end = err == SSL_ERROR_ZERO_RETURN ? 1 : -1;
      break;
    }
    flush(u);
    if (got > 0) {
      px_ex__up_read(u, (ssize_t)got, out);
      if (uv_is_closing((uv_handle_t *)&u->tcp)) return;
    }
    if (end != 0) {
      px_ex__up_read(u, end > 0 ? UV_EOF : UV_EPROTO, NULL);
      return;
    }
    if (got < cap) return;
  }
}

void px_uptls_writev(px_upconn_t *u, const uv_buf_t *bufs, unsigned num) {
  for (unsigned i = 0; i < num; i++) {
    if (bufs[i].len == 0) continue;
    if (SSL_write(u->ssl, bufs[i].base, (int)bufs[i].len) <= 0) {
      /* The BIO takes every byte, so only a dead session fails: the read
       * side reports the connection's end. */
      GH_DEBUG("proxy", "upstream %s: SSL_write failed", u->addr->conf->text);
      break;
    }
  }
  flush(u);
}

void px_uptls_shutdown(px_upconn_t *u) {
  if (u->ssl && u->tls_done) {
    SSL_shutdown(u->ssl);
    flush(u);
  }
}
