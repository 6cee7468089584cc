/* etcd_conn.c: the etcd client's blocking transport: endpoints, TLS,
 * one keep-alive HTTP/1.1 connection, and acme__etcd_call with the token,
 * the endpoint rotation and the repeats that etcd.h describes.
 *
 * Sockets are non-blocking and every wait is a poll(2) bounded by the
 * request's deadline, so a silent peer costs at most timeout_ms. Requests
 * are built by httpc_wire.c (acme__httpc_prepare) and responses parsed by
 * its llhttp callbacks, run on a connection/request pair whose libuv
 * handles are never used. TLS writes can raise SIGPIPE on a peer that
 * closed: the process ignores it (proxy/server.c; the test driver too). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "acme/etcd_internal.h"

/* ---- the client ---- */

static int endpoint_parse(acme__etcd_endpoint_t *ep, const char *url) {
  size_t len = strlen(url);
  while (len > 0 && url[len - 1] == '/') len--;
  char *base = gh_strndup(url, len);
  httpc_req_t probe;
  memset(&probe, 0, sizeof(probe));
  probe.method = (char *)"GET";
  acme_httpc_req_t r = {.method = "GET", .url = base};
  int err = acme__httpc_prepare(&probe, &r);
  /* Only scheme://host[:port]: the API paths are appended to it. */
  if (err == 0 && strcspn(base + (probe.tls ? 8 : 7), "/?#") != strlen(base + (probe.tls ? 8 : 7)))
    err = -EINVAL;
  if (err == 0) {
    ep->url = base;
    ep->host = probe.host;
    probe.host = NULL;
    memcpy(ep->port, probe.port_str, sizeof(ep->port));
    ep->tls = probe.tls;
    ep->host_is_ip = probe.host_is_ip;
  } else {
    gh_free(base);
  }
  gh_free(probe.host);
  gh_free(probe.key);
  gh_free(probe.wire);
  return err == 0 ? 0 : -1;
}

static SSL_CTX *tls_context(char **out_err, const acme_etcd_conf_t *conf) {
  SSL_CTX *ctx = acme__httpc_client_ctx();
  if (ctx == NULL) {
    *out_err = gh_strdup("etcd: cannot create a TLS context");
    return NULL;
  }
  char *e = NULL;
  if (acme_httpc_load_roots(&e, ctx, conf->ca) != 0) goto fail;
  if (conf->cert != NULL) {
    ERR_clear_error();
    if (!SSL_CTX_use_certificate_chain_file(ctx, conf->cert) ||
        !SSL_CTX_use_PrivateKey_file(ctx, conf->key, SSL_FILETYPE_PEM) ||
        !SSL_CTX_check_private_key(ctx)) {
      char *why = acme__httpc_ssl_error();
      e = gh_asprintf("cannot load the client certificate %s and key %s: %s", conf->cert,
                      conf->key, why);
      gh_free(why);
      goto fail;
    }
  }
  return ctx;
fail:
  *out_err = gh_asprintf("etcd: %s", e);
  gh_free(e);
  SSL_CTX_free(ctx);
  return NULL;
}

acme_etcd_t *acme_etcd_new(char **out_err, const acme_etcd_conf_t *conf) {
  *out_err = NULL;
  if (conf == NULL || conf->num_endpoints == 0) {
    *out_err = gh_strdup("etcd: no endpoints");
    return NULL;
  }
  if ((conf->cert == NULL) != (conf->key == NULL)) {
    *out_err = gh_strdup("etcd: a client certificate needs its key, and a key its certificate");
    return NULL;
  }
  if (conf->password != NULL && conf->username == NULL) {
    *out_err = gh_strdup("etcd: a password without a username");
    return NULL;
  }
  acme_etcd_t *c = gh_calloc(1, sizeof(*c));
  acme__etcd_conn_init(&c->conn);
  c->eps = gh_calloc(conf->num_endpoints, sizeof(*c->eps));
  int tls = 0;
  for (size_t i = 0; i < conf->num_endpoints; i++) {
    if (conf->endpoints[i] == NULL || endpoint_parse(&c->eps[i], conf->endpoints[i]) != 0) {
      *out_err = gh_asprintf("etcd: endpoint %zu %s%s%s is not http(s)://host:port", i,
                             conf->endpoints[i] ? "\"" : "",
                             conf->endpoints[i] ? conf->endpoints[i] : "(null)",
                             conf->endpoints[i] ? "\"" : "");
      acme_etcd_free(c);
      return NULL;
    }
    c->num_eps++;
    tls |= c->eps[i].tls;
  }
  if (tls && (c->ssl_ctx = tls_context(out_err, conf)) == NULL) {
    acme_etcd_free(c);
    return NULL;
  }
  c->timeout_ms = conf->timeout_ms ? conf->timeout_ms : ACME_ETCD_DEFAULT_TIMEOUT_MS;
  if (conf->username != NULL) {
    c->username = gh_strdup(conf->username);
    c->password = gh_strdup(conf->password ? conf->password : "");
  }
  return c;
}

void acme_etcd_free(acme_etcd_t *c) {
  if (c == NULL) return;
  acme__etcd_conn_close(&c->conn);
  for (size_t i = 0; i < c->num_eps; i++) {
    gh_free(c->eps[i].url);
    gh_free(c->eps[i].host);
  }
  gh_free(c->eps);
  SSL_CTX_free(c->ssl_ctx);
  gh_free(c->username);
  if (c->password != NULL) OPENSSL_cleanse(c->password, strlen(c->password));
  gh_free(c->password);
  gh_free(c->token);
  gh_free(c);
}

const char *acme_etcd_endpoint(const acme_etcd_t *c) { return c->eps[c->cur].url; }

/* ---- one connection ---- */

void acme__etcd_conn_init(acme__etcd_conn_t *conn) {
  memset(conn, 0, sizeof(*conn));
  conn->fd = -1;
}

static void conn_reset_parser(acme__etcd_conn_t *conn, size_t max_body) {
  acme__httpc_reset_response(&conn->hr);
  conn->hc.req = &conn->hr;
  conn->hr.conn = &conn->hc;
  conn->hr.max_body = max_body;
  llhttp_init(&conn->hc.parser, HTTP_RESPONSE, &acme__httpc_parser_settings);
  conn->hc.parser.data = &conn->hc;
}

void acme__etcd_conn_close(acme__etcd_conn_t *conn) {
  if (conn->ssl != NULL) SSL_free(conn->ssl);
  conn->ssl = NULL;
  if (conn->fd >= 0) close(conn->fd);
  conn->fd = -1;
  conn->reused = 0;
  acme__httpc_reset_response(&conn->hr);
  gh_free(conn->hr.headers);
  conn->hr.headers = NULL;
  conn->hr.cap_headers = 0;
}

/* wait_fd polls |fd| for |events| until |deadline|. */
static int wait_fd(int fd, short events, uint64_t deadline) {
  for (;;) {
    uint64_t now = gh_now_ms();
    if (now >= deadline) return -ETIMEDOUT;
    struct pollfd p = {.fd = fd, .events = events};
    uint64_t left = deadline - now;
    int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
    if (r > 0) return 0;
    if (r < 0 && errno != EINTR) return -errno;
  }
}

/* tls_wait turns a BoringSSL want into a wait; anything else is -EPROTO. */
static int tls_wait(acme__etcd_conn_t *conn, int ret, uint64_t deadline) {
  switch (SSL_get_error(conn->ssl, ret)) {
  case SSL_ERROR_WANT_READ: return wait_fd(conn->fd, POLLIN, deadline);
  case SSL_ERROR_WANT_WRITE: return wait_fd(conn->fd, POLLOUT, deadline);
  case SSL_ERROR_ZERO_RETURN: return -ECONNRESET;
  case SSL_ERROR_SYSCALL: return errno ? -errno : -ECONNRESET;
  default: return ACME_ETCD_ETLS;
  }
}

char *acme__etcd_msg(const acme_etcd_t *c, const char *fmt, ...) {
  char detail[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof(detail), fmt, ap);
  va_end(ap);
  return gh_asprintf("etcd %s: %s", c->eps[c->cur].url, detail);
}

static int tcp_connect(const acme__etcd_endpoint_t *ep, char **out_err, uint64_t deadline) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV | (ep->host_is_ip ? AI_NUMERICHOST : 0)};
  struct addrinfo *res = NULL;
  int r = getaddrinfo(ep->host, ep->port, &hints, &res);
  if (r != 0) {
    *out_err = gh_asprintf("cannot resolve %s: %s", ep->host, gai_strerror(r));
    return -EHOSTUNREACH;
  }
  int err = -EHOSTUNREACH;
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      err = -errno;
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      err = errno == EINPROGRESS ? wait_fd(fd, POLLOUT, deadline) : -errno;
      if (err == 0) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        err = -soerr;
      }
      if (err != 0) {
        close(fd);
        if (err == -ETIMEDOUT) break;
        continue;
      }
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    freeaddrinfo(res);
    return fd;
  }
  freeaddrinfo(res);
  *out_err = gh_asprintf("connect failed: %s", strerror(-err));
  return err;
}

static int conn_open(acme_etcd_t *c, acme__etcd_conn_t *conn, char **out_err,
                     uint64_t deadline) {
  const acme__etcd_endpoint_t *ep = &c->eps[c->cur];
  char *why = NULL;
  int fd = tcp_connect(ep, &why, deadline);
  if (fd < 0) {
    *out_err = acme__etcd_msg(c, "%s", why);
    gh_free(why);
    return fd;
  }
  conn->fd = fd;
  conn->ep = c->cur;
  conn->reused = 0;
  snprintf(conn->hc.peer, sizeof(conn->hc.peer), "%s:%s", ep->host, ep->port);
  if (!ep->tls) return 0;
  conn->ssl = SSL_new(c->ssl_ctx);
  if (conn->ssl == NULL || !SSL_set_fd(conn->ssl, fd) ||
      acme__httpc_tls_peer(conn->ssl, ep->host, ep->host_is_ip) != 0) {
    acme__etcd_conn_close(conn);
    *out_err = acme__etcd_msg(c, "cannot set up TLS");
    return ACME_ETCD_ETLS;
  }
  SSL_set_connect_state(conn->ssl);
  for (;;) {
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(conn->ssl);
    if (r == 1) return 0;
    int w = tls_wait(conn, r, deadline);
    if (w == 0) continue;
    long vr = SSL_get_verify_result(conn->ssl);
    if (w == ACME_ETCD_ETLS && vr != X509_V_OK) {
      *out_err = acme__etcd_msg(c, "TLS certificate rejected: %s", X509_verify_cert_error_string(vr));
    } else if (w == ACME_ETCD_ETLS) {
      char *e = acme__httpc_ssl_error();
      *out_err = acme__etcd_msg(c, "TLS handshake failed: %s", e);
      gh_free(e);
    } else {
      *out_err = acme__etcd_msg(c, "TLS handshake failed: %s", w == -ETIMEDOUT
                                                              ? "timed out"
                                                              : strerror(-w));
    }
    acme__etcd_conn_close(conn);
    return w;
  }
}

static int conn_write(acme__etcd_conn_t *conn, const char *data, size_t len, uint64_t deadline) {
  while (len > 0) {
    ssize_t n;
    if (conn->ssl != NULL) {
      ERR_clear_error();
      errno = 0;
      int r = SSL_write(conn->ssl, data, len > (1u << 30) ? 1 << 30 : (int)len);
      if (r <= 0) {
        int w = tls_wait(conn, r, deadline);
        if (w != 0) return w;
        continue;
      }
      n = r;
    } else {
      n = send(conn->fd, data, len, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return -errno;
        int w = wait_fd(conn->fd, POLLOUT, deadline);
        if (w != 0) return w;
        continue;
      }
    }
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

/* conn_read returns bytes read (> 0), 0 at EOF, or a negative code. */
static ssize_t conn_read(acme__etcd_conn_t *conn, char *buf, size_t cap, uint64_t deadline) {
  for (;;) {
    if (conn->ssl != NULL) {
      ERR_clear_error();
      errno = 0;
      int r = SSL_read(conn->ssl, buf, (int)cap);
      if (r > 0) return r;
      if (SSL_get_error(conn->ssl, r) == SSL_ERROR_ZERO_RETURN) return 0;
      int w = tls_wait(conn, r, deadline);
      if (w == -ECONNRESET && r == 0) return 0;
      if (w != 0) return w;
    } else {
      ssize_t n = recv(conn->fd, buf, cap, 0);
      if (n >= 0) return n;
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return -errno;
      int w = wait_fd(conn->fd, POLLIN, deadline);
      if (w != 0) return w;
    }
  }
}

int acme__etcd_send(acme_etcd_t *c, acme__etcd_conn_t *conn, char **out_err, int *out_sent,
                    const char *path, const char *body, size_t body_len, uint64_t deadline,
                    size_t max_body) {
  *out_sent = 0;
  if (conn->fd >= 0 && conn->ep != c->cur) acme__etcd_conn_close(conn);
  if (conn->fd < 0) {
    int r = conn_open(c, conn, out_err, deadline);
    if (r != 0) return r;
  }
  conn_reset_parser(conn, max_body);
  acme_httpc_header_t headers[2] = {{"Content-Type", "application/json"}};
  size_t num_headers = 1;
  if (c->token != NULL) headers[num_headers++] = (acme_httpc_header_t){"Authorization", c->token};
  char *url = gh_asprintf("%s%s", c->eps[c->cur].url, path);
  acme_httpc_req_t r = {.method = "POST", .url = url, .headers = headers,
                        .num_headers = num_headers, .body = body, .body_len = body_len};
  httpc_req_t wire;
  memset(&wire, 0, sizeof(wire));
  wire.method = (char *)"POST";
  int err = acme__httpc_prepare(&wire, &r);
  gh_free(url);
  if (err == 0) {
    /* From the first byte on, etcd may act on the request. */
    *out_sent = 1;
    err = conn_write(conn, wire.wire, wire.wire_len, deadline);
    if (err != 0) {
      *out_err = acme__etcd_msg(c, "POST %s: write failed: %s", path,
                          err == -ETIMEDOUT ? "timed out" : strerror(-err));
      if (conn->reused > 0 && (err == -EPIPE || err == -ECONNRESET)) err = ACME__ETCD_STALE;
    }
  } else {
    *out_err = acme__etcd_msg(c, "POST %s: cannot build the request (bad token or path)", path);
    err = -EINVAL;
  }
  gh_free(wire.host);
  gh_free(wire.key);
  gh_free(wire.wire);
  if (err != 0) acme__etcd_conn_close(conn);
  return err;
}

int acme__etcd_read_more(acme_etcd_t *c, acme__etcd_conn_t *conn, char **out_err,
                         uint64_t deadline) {
  char buf[16384];
  httpc_req_t *req = &conn->hr;
  ssize_t n = conn_read(conn, buf, sizeof(buf), deadline);
  if (n == -ETIMEDOUT) return -ETIMEDOUT;
  if (n < 0) {
    *out_err = acme__etcd_msg(c, "read failed: %s", strerror((int)-n));
    return (int)n;
  }
  if (n == 0) {
    if (req->headers_done && llhttp_message_needs_eof(&conn->hc.parser)) {
      llhttp_finish(&conn->hc.parser);
      if (req->msg_done) return 0;
    }
    *out_err = acme__etcd_msg(c, "connection closed %s",
                        !req->got_byte ? "before any response"
                        : req->headers_done ? "before the end of the response"
                                            : "in the middle of the response head");
    return -ECONNRESET;
  }
  req->got_byte = 1;
  llhttp_errno_t e = llhttp_execute(&conn->hc.parser, buf, (size_t)n);
  if (e == HPE_OK) return 0;
  if (e == HPE_PAUSED && req->msg_done) {
    /* Bytes after the response: the connection cannot be reused. */
    if ((size_t)(llhttp_get_error_pos(&conn->hc.parser) - buf) != (size_t)n) conn->reused = -1;
    return 0;
  }
  if (req->parse_err != 0) {
    *out_err = acme__etcd_msg(c, "%s", req->parse_msg);
    return req->parse_err == UV_EMSGSIZE ? -EMSGSIZE : -EPROTO;
  }
  *out_err = acme__etcd_msg(c, "malformed response: %s", llhttp_get_error_reason(&conn->hc.parser));
  return -EPROTO;
}

int acme__etcd_recv(acme_etcd_t *c, acme__etcd_conn_t *conn, char **out_err, int until_head,
                    uint64_t deadline) {
  httpc_req_t *req = &conn->hr;
  while (!(until_head ? req->headers_done && req->status / 100 != 1 : req->msg_done)) {
    int r = acme__etcd_read_more(c, conn, out_err, deadline);
    if (r == 0) continue;
    if (r == -ETIMEDOUT) {
      *out_err = acme__etcd_msg(c, "timed out after %llu ms %s", (unsigned long long)c->timeout_ms,
                          req->got_byte ? "reading the response" : "waiting for the response");
    } else if (conn->reused > 0 && !req->got_byte && (r == -ECONNRESET || r == -EPIPE)) {
      r = ACME__ETCD_STALE;
    }
    acme__etcd_conn_close(conn);
    return r;
  }
  return 0;
}

/* ---- calls ---- */

void acme__etcd_rotate(acme_etcd_t *c) {
  acme__etcd_conn_close(&c->conn);
  c->cur = (c->cur + 1) % c->num_eps;
  gh_free(c->token);
  c->token = NULL;
}

/* try_once runs one exchange on the current endpoint. Returns 0 with
 * |*out_status| and |*out_body| (caller frees), or a negative code with
 * |*out_err| and |*out_sent|. A stale keep-alive connection is replaced
 * once. */
static int try_once(acme_etcd_t *c, char **out_err, int *out_sent, int *out_status,
                    char **out_body, size_t *out_len, const char *path, const char *body) {
  uint64_t deadline = gh_now_ms() + c->timeout_ms;
  for (int attempt = 0;; attempt++) {
    acme__etcd_conn_t *conn = &c->conn;
    int r = acme__etcd_send(c, conn, out_err, out_sent, path, body, strlen(body), deadline,
                            ACME_ETCD_MAX_RESPONSE);
    if (r == 0) r = acme__etcd_recv(c, conn, out_err, 0, deadline);
    if (r == ACME__ETCD_STALE) {
      /* The server had closed the idle connection: nothing was processed,
       * so a fresh connection may carry it (as acme/httpc.c does). */
      gh_free(*out_err);
      *out_err = NULL;
      *out_sent = 0;
      if (attempt == 0) continue;
      *out_err = acme__etcd_msg(c, "POST %s: connection closed before any response", path);
      r = -ECONNRESET;
    }
    if (r != 0) return r;
    *out_status = conn->hr.status;
    *out_len = conn->hr.body.len;
    *out_body = conn->hr.body.ptr ? conn->hr.body.ptr : gh_strdup("");
    memset(&conn->hr.body, 0, sizeof(conn->hr.body));
    if (conn->reused >= 0 && llhttp_should_keep_alive(&conn->hc.parser)) {
      conn->reused = 1;
    } else {
      acme__etcd_conn_close(conn);
    }
    return 0;
  }
}

int acme__etcd_authenticate(acme_etcd_t *c, char **out_err) {
  cJSON *req = cJSON_CreateObject();
  cJSON_AddStringToObject(req, "name", c->username);
  cJSON_AddStringToObject(req, "password", c->password);
  cJSON *root = NULL;
  int r = acme__etcd_call(c, out_err, &root, "/v3/auth/authenticate", req,
                          ACME__ETCD_RETRY_SAFE | ACME__ETCD_NO_AUTH);
  char *printed = cJSON_PrintUnformatted(req);
  if (printed != NULL) OPENSSL_cleanse(printed, strlen(printed));
  cJSON_free(printed);
  cJSON_Delete(req);
  if (r != 0) return r;
  const cJSON *tok = cJSON_GetObjectItemCaseSensitive(root, "token");
  if (cJSON_IsString(tok) && tok->valuestring != NULL && *tok->valuestring != '\0') {
    gh_free(c->token);
    c->token = gh_strdup(tok->valuestring);
  } else {
    *out_err = acme__etcd_msg(c, "/v3/auth/authenticate answered without a token (is auth enabled?)");
    r = ACME_ETCD_EAUTH;
  }
  cJSON_Delete(root);
  return r;
}

int acme__etcd_is_auth_error(int code, const char *msg) {
  return code == 16 || code == 7 || (msg != NULL && strstr(msg, "etcdserver: user name") != NULL);
}

int acme__etcd_call(acme_etcd_t *c, char **out_err, cJSON **out_root, const char *path,
                    const cJSON *body, int flags) {
  *out_err = NULL;
  *out_root = NULL;
  char *text = cJSON_PrintUnformatted(body);
  if (text == NULL) abort();
  httpc_buf_t errs = {0};
  int r = 0, auth_retried = 0;
  size_t tries = 0;
  while (tries < c->num_eps) {
    char *e = NULL;
    if (c->username != NULL && c->token == NULL && !(flags & ACME__ETCD_NO_AUTH)) {
      r = acme__etcd_authenticate(c, &e);
      if (r != 0) {
        httpc_buf_add(&errs, e, strlen(e));
        gh_free(e);
        break; /* authenticate has rotated already */
      }
    }
    int sent = 0, status = 0;
    char *resp = NULL;
    size_t resp_len = 0;
    r = try_once(c, &e, &sent, &status, &resp, &resp_len, path, text);
    if (r == 0 && status == 200) {
      *out_root = cJSON_ParseWithLength(resp, resp_len);
      if (*out_root == NULL || !cJSON_IsObject(*out_root)) {
        cJSON_Delete(*out_root);
        *out_root = NULL;
        e = acme__etcd_msg(c, "POST %s: the response is not a JSON object", path);
        r = -EPROTO;
      }
      gh_free(resp);
      if (r == 0) break;
      httpc_buf_add(&errs, e, strlen(e));
      gh_free(e);
      break;
    }
    int repeat = !sent || (flags & ACME__ETCD_RETRY_SAFE);
    if (r == 0) {
      int code;
      char *m = acme__etcd_error_message(&code, resp, resp_len);
      gh_free(resp);
      if (m != NULL && strstr(m, "invalid auth token") != NULL && c->username != NULL &&
          !auth_retried && !(flags & ACME__ETCD_NO_AUTH)) {
        /* Expired, or issued by a member that restarted: a new one. */
        auth_retried = 1;
        gh_free(c->token);
        c->token = NULL;
        gh_free(m);
        continue;
      }
      e = acme__etcd_msg(c, "POST %s: HTTP %d: %s", path, status, m ? m : "(no etcd error message)");
      r = acme__etcd_is_auth_error(code, m) ? ACME_ETCD_EAUTH : ACME_ETCD_ESERVER;
      gh_free(m);
      repeat = repeat && status >= 500;
    }
    if (errs.len) httpc_buf_add(&errs, "; ", 2);
    httpc_buf_add(&errs, e, strlen(e));
    gh_free(e);
    tries++;
    if (!repeat || r == ACME_ETCD_EAUTH || r == -EINVAL) break;
    acme__etcd_rotate(c);
  }
  gh_free(text);
  if (r != 0) {
    *out_err = errs.ptr;
  } else {
    httpc_buf_clear(&errs);
  }
  return r;
}
