/* test_httpc.c: the ACME HTTPS client against a real local TLS server.
 *
 * The server runs on its own threads with blocking BoringSSL sockets (one
 * thread per connection), so the client's loop is the only loop in the
 * test and each case can end with uv_loop_close() returning 0. The server
 * answers by path: well-formed responses in each framing, and the hostile
 * ones (huge head, oversized body, garbage, truncation, a slow drip, no
 * answer at all).
 *
 * With GH_HTTPC_URL set, the binary instead performs one request (method
 * GH_HTTPC_METHOD, default GET; extra root GH_HTTPC_CA) and prints
 * "status N", the headers and the body: the Pebble integration test drives
 * the client this way. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "acme/httpc.h"
#include "common/common.h"
#include "test.h"
#include "testcert.h"

/* ---- the test server ---- */

#define MAX_SRV_CONNS 32

typedef struct {
  int lfd;
  uint16_t port;
  SSL_CTX *ctx; /* NULL: plain HTTP */
  pthread_t accept_thread;
  pthread_mutex_t mu;
  pthread_t threads[MAX_SRV_CONNS];
  int fds[MAX_SRV_CONNS];
  int num_threads;
  atomic_int conns, requests, stop;
} srv_t;

typedef struct {
  srv_t *srv;
  int fd;
  SSL *ssl;
  int index; /* requests seen on this connection */
} srv_conn_t;

static int sc_write(srv_conn_t *c, const void *data, size_t len) {
  if (c->ssl != NULL) return SSL_write(c->ssl, data, (int)len) == (int)len ? 0 : -1;
  const char *p = data;
  while (len > 0) {
    ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int sc_puts(srv_conn_t *c, const char *s) { return sc_write(c, s, strlen(s)); }

static ssize_t sc_read(srv_conn_t *c, char *buf, size_t len) {
  if (c->ssl != NULL) return SSL_read(c->ssl, buf, (int)len);
  return recv(c->fd, buf, len, 0);
}

/* sc_read_request reads one request head and its Content-Length body into
 * |buf|; returns the total length or -1 at EOF. */
static ssize_t sc_read_request(srv_conn_t *c, char *buf, size_t cap, size_t *out_head_len) {
  size_t len = 0;
  char *end = NULL;
  while (end == NULL) {
    if (len + 1 >= cap) return -1;
    ssize_t n = sc_read(c, buf + len, cap - 1 - len);
    if (n <= 0) return -1;
    len += (size_t)n;
    buf[len] = '\0';
    end = strstr(buf, "\r\n\r\n");
  }
  *out_head_len = (size_t)(end + 4 - buf);
  const char *cl = strcasestr(buf, "\r\nContent-Length:");
  size_t want = *out_head_len + (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
  while (len < want && len + 1 < cap) {
    ssize_t n = sc_read(c, buf + len, cap - 1 - len);
    if (n <= 0) return -1;
    len += (size_t)n;
  }
  buf[len] = '\0';
  return (ssize_t)len;
}

static const char *const CL_HEAD =
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nReplay-Nonce: nonce-1\r\n"
    "Link: <https://x.test/a>;rel=\"up\"\r\nX-Empty:\r\n"
    "link: <https://x.test/b>;rel=\"index\"  \r\n"
    "\r\n";

/* sc_respond answers one request; returns 0 to keep the connection. */
static int sc_respond(srv_conn_t *c, const char *req, size_t head_len, size_t len) {
  char method[16] = "", path[256] = "";
  sscanf(req, "%15s %255s", method, path);
  path[strcspn(path, "?")] = '\0';
  int head = strcmp(method, "HEAD") == 0;
  char out[512];
  if (strcmp(path, "/cl") == 0 || (strcmp(path, "/drop-reused") == 0 && c->index == 1)) {
    if (sc_puts(c, CL_HEAD) != 0) return -1;
    return head ? 0 : sc_puts(c, "hello");
  }
  if (strcmp(path, "/drop-reused") == 0) return -1; /* read, then hang up */
  if (strcmp(path, "/chunked") == 0) {
    return sc_puts(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "3\r\nhel\r\n3;ext=1\r\nlo \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n");
  }
  if (strcmp(path, "/close") == 0) {
    sc_puts(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the ");
    usleep(20000);
    sc_puts(c, "connection closes");
    return -1;
  }
  if (strcmp(path, "/echo") == 0) {
    const char *ct = strcasestr(req, "\r\nContent-Type: ");
    int ct_len = ct ? (int)strcspn(ct + 16, "\r") : 0;
    const char *ua = strcasestr(req, "\r\nUser-Agent: ");
    int ua_len = ua ? (int)strcspn(ua + 14, "\r") : 0;
    char body[512];
    int n = snprintf(body, sizeof(body), "%s ct=%.*s ua=%.*s body=%.*s", method, ct_len,
                     ct ? ct + 16 : "", ua_len, ua ? ua + 14 : "", (int)(len - head_len),
                     req + head_len);
    snprintf(out, sizeof(out), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", n);
    return sc_puts(c, out) || sc_puts(c, body);
  }
  if (strcmp(path, "/early-hints") == 0) {
    return sc_puts(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
                      "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nLocation: /x\r\n\r\nok");
  }
  if (strcmp(path, "/big") == 0) {
    if (sc_puts(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n") != 0) return -1;
    char fill[1000];
    memset(fill, 'b', sizeof(fill));
    for (int i = 0; i < 100; i++) {
      if (sc_write(c, fill, sizeof(fill)) != 0) return -1;
    }
    return 0;
  }
  if (strcmp(path, "/bigchunked") == 0) {
    if (sc_puts(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") != 0) return -1;
    for (int i = 0; i < 100; i++) {
      if (sc_puts(c, "10\r\n0123456789abcdef\r\n") != 0) return -1;
    }
    return sc_puts(c, "0\r\n\r\n");
  }
  if (strcmp(path, "/hugehead") == 0) {
    if (sc_puts(c, "HTTP/1.1 200 OK\r\n") != 0) return -1;
    for (int i = 0; i < 1000; i++) {
      snprintf(out, sizeof(out), "X-Pad-%d: %0100d\r\n", i, i);
      if (sc_puts(c, out) != 0) return -1;
    }
    return sc_puts(c, "Content-Length: 0\r\n\r\n");
  }
  if (strcmp(path, "/garbage") == 0) {
    sc_puts(c, "SSH-2.0-OpenSSH_9.2\r\n\r\n");
    return -1;
  }
  if (strcmp(path, "/truncated") == 0) {
    sc_puts(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..");
    return -1;
  }
  if (strcmp(path, "/slow") == 0) {
    sc_puts(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    for (int i = 0; i < 1000 && !atomic_load(&c->srv->stop); i++) {
      if (sc_puts(c, "x") != 0) break;
      usleep(50000);
    }
    return -1;
  }
  if (strcmp(path, "/hang") == 0) {
    char b[64];
    while (!atomic_load(&c->srv->stop) && sc_read(c, b, sizeof(b)) > 0) {
    }
    return -1;
  }
  return sc_puts(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n") ? -1 : 0;
}

static void *srv_conn_main(void *arg) {
  srv_conn_t *c = arg;
  char *buf = malloc(1 << 16);
  if (c->srv->ctx != NULL) {
    c->ssl = SSL_new(c->srv->ctx);
    SSL_set_fd(c->ssl, c->fd);
    if (SSL_accept(c->ssl) != 1) goto done; /* e.g. the client rejected our certificate */
  }
  for (;;) {
    size_t head_len;
    ssize_t len = sc_read_request(c, buf, 1 << 16, &head_len);
    if (len < 0) break;
    c->index++;
    atomic_fetch_add(&c->srv->requests, 1);
    if (sc_respond(c, buf, head_len, (size_t)len) != 0) break;
  }
  if (c->ssl != NULL) SSL_shutdown(c->ssl);
done:
  SSL_free(c->ssl);
  shutdown(c->fd, SHUT_RDWR);
  free(buf);
  free(c);
  return NULL;
}

static void *srv_accept_main(void *arg) {
  srv_t *s = arg;
  for (;;) {
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (atomic_load(&s->stop)) {
      close(fd);
      break;
    }
    atomic_fetch_add(&s->conns, 1);
    srv_conn_t *c = calloc(1, sizeof(*c));
    c->srv = s;
    c->fd = fd;
    pthread_mutex_lock(&s->mu);
    if (s->num_threads == MAX_SRV_CONNS) {
      pthread_mutex_unlock(&s->mu);
      close(fd);
      free(c);
      continue;
    }
    s->fds[s->num_threads] = fd;
    pthread_create(&s->threads[s->num_threads++], NULL, srv_conn_main, c);
    pthread_mutex_unlock(&s->mu);
  }
  return NULL;
}

/* srv_start listens on 127.0.0.1 with |cert|/|key| (NULL: plain HTTP). */
static void srv_start(srv_t *s, const char *cert, const char *key) {
  memset(s, 0, sizeof(*s));
  pthread_mutex_init(&s->mu, NULL);
  if (cert != NULL) {
    s->ctx = SSL_CTX_new(TLS_method());
    TC_CHECK(s->ctx && SSL_CTX_use_certificate_chain_file(s->ctx, cert) &&
             SSL_CTX_use_PrivateKey_file(s->ctx, key, SSL_FILETYPE_PEM));
  }
  s->lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof(a);
  TC_CHECK(s->lfd >= 0 && bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
           listen(s->lfd, 16) == 0 && getsockname(s->lfd, (struct sockaddr *)&a, &alen) == 0);
  s->port = ntohs(a.sin_port);
  TC_CHECK(pthread_create(&s->accept_thread, NULL, srv_accept_main, s) == 0);
}

static void srv_stop(srv_t *s) {
  atomic_store(&s->stop, 1);
  shutdown(s->lfd, SHUT_RDWR);
  pthread_join(s->accept_thread, NULL);
  close(s->lfd);
  for (int i = 0; i < s->num_threads; i++) {
    shutdown(s->fds[i], SHUT_RDWR);
    pthread_join(s->threads[i], NULL);
    close(s->fds[i]);
  }
  SSL_CTX_free(s->ctx);
  pthread_mutex_destroy(&s->mu);
}

/* ---- the client side ---- */

typedef struct {
  int done;
  int error;
  char *msg;
  int status;
  char *body;
  size_t body_len;
  char *nonce;
  char *links[4];
  size_t num_links;
  size_t num_headers;
  char *location;
} result_t;

static void result_clear(result_t *r) {
  free(r->msg);
  free(r->body);
  free(r->nonce);
  free(r->location);
  for (size_t i = 0; i < r->num_links; i++) free(r->links[i]);
  memset(r, 0, sizeof(*r));
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void on_result(const acme_httpc_resp_t *resp, void *arg) {
  result_t *r = arg;
  r->done++;
  r->error = resp->error;
  r->msg = dup_or_null(resp->error_msg);
  r->status = resp->status;
  r->body = strndup(resp->body, resp->body_len);
  r->body_len = resp->body_len;
  r->nonce = dup_or_null(acme_httpc_header(resp, "replay-nonce"));
  r->location = dup_or_null(acme_httpc_header(resp, "Location"));
  r->num_headers = resp->num_headers;
  size_t pos = 0;
  const char *v;
  while ((v = acme_httpc_header_next(resp, "Link", &pos)) != NULL && r->num_links < 4) {
    r->links[r->num_links++] = strdup(v);
  }
}

typedef struct {
  uv_loop_t loop;
  tc_dir_t dir;
  const char *cert, *key;
  srv_t srv;
  acme_httpc_t *client;
} fixture_t;

/* fx_setup makes a certificate for |cn| (SAN = |cn|), starts a server with
 * it (|tls|) and a client trusting it (|trusted|). */
static void fx_setup(fixture_t *fx, const char *cn, int tls, int trusted) {
  TC_CHECK(uv_loop_init(&fx->loop) == 0);
  tc_dir_init(&fx->dir);
  tc_issue(&fx->dir, "srv", cn, cn, 0, &fx->cert, &fx->key);
  srv_start(&fx->srv, tls ? fx->cert : NULL, fx->key);
  char *err = NULL;
  fx->client = acme_httpc_new(&err, &fx->loop, trusted ? &fx->cert : NULL, trusted ? 1 : 0);
  if (fx->client == NULL) fprintf(stderr, "acme_httpc_new: %s\n", err);
  TC_CHECK(fx->client != NULL);
}

/* fx_teardown frees the client, runs the loop dry and checks it closes. */
static int fx_teardown(fixture_t *fx) {
  acme_httpc_free(fx->client);
  fx->client = NULL;
  uv_run(&fx->loop, UV_RUN_DEFAULT);
  int r = uv_loop_close(&fx->loop);
  srv_stop(&fx->srv);
  tc_dir_cleanup(&fx->dir);
  return r;
}

static char *fx_url(fixture_t *fx, const char *scheme, const char *path) {
  return gh_asprintf("%s://localhost:%u%s", scheme, fx->srv.port, path);
}

/* fetch performs one request and runs the loop until its callback. */
static int fetch(fixture_t *fx, const char *method, const char *url, uint64_t timeout_ms,
                 size_t max_body, result_t *out) {
  acme_httpc_req_t req = {.method = method, .url = url, .timeout_ms = timeout_ms,
                          .max_body = max_body};
  memset(out, 0, sizeof(*out));
  int r = acme_httpc_request(fx->client, &req, on_result, out);
  if (r != 0) return r;
  while (!out->done) uv_run(&fx->loop, UV_RUN_ONCE);
  return 0;
}

#define FETCH(fx, method, path, timeout, max_body, res)                  \
  do {                                                                   \
    char *url_ = fx_url(fx, "https", path);                              \
    int r_ = fetch(fx, method, url_, timeout, max_body, res);            \
    free(url_);                                                          \
    ASSERT_EQ(r_, 0);                                                    \
  } while (0)

/* EXPECT_ERROR fetches |path| and checks the error code and message. */
#define EXPECT_ERROR(fx, path, timeout, max_body, err, needle)  \
  do {                                                          \
    result_t e_;                                                \
    FETCH(fx, "GET", path, timeout, max_body, &e_);             \
    ASSERT_EQ(e_.error, err);                                   \
    ASSERT_CONTAINS(e_.msg, needle);                            \
    result_clear(&e_);                                          \
  } while (0)

static void test_content_length(void) {
  fixture_t fx;
  result_t r;
  fx_setup(&fx, "localhost", 1, 1);
  FETCH(&fx, "GET", "/cl", 5000, 0, &r);
  ASSERT_EQ(r.error, 0);
  ASSERT_EQ(r.status, 200);
  ASSERT_STR_EQ(r.body, "hello");
  ASSERT_EQ(r.body_len, 5);
  ASSERT_STR_EQ(r.nonce, "nonce-1");
  ASSERT_EQ(r.num_links, 2);
  ASSERT_STR_EQ(r.links[0], "<https://x.test/a>;rel=\"up\"");
  ASSERT_STR_EQ(r.links[1], "<https://x.test/b>;rel=\"index\""); /* trailing space trimmed */
  ASSERT_EQ(r.num_headers, 5);                                      /* X-Empty too */
  result_clear(&r);
  /* HEAD: the Content-Length describes a body that is not sent. */
  FETCH(&fx, "HEAD", "/cl", 5000, 0, &r);
  ASSERT_EQ(r.error, 0);
  ASSERT_EQ(r.status, 200);
  ASSERT_EQ(r.body_len, 0);
  ASSERT_STR_EQ(r.nonce, "nonce-1");
  result_clear(&r);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_chunked(void) {
  fixture_t fx;
  result_t r;
  fx_setup(&fx, "localhost", 1, 1);
  FETCH(&fx, "GET", "/chunked", 5000, 0, &r);
  ASSERT_EQ(r.error, 0);
  ASSERT_EQ(r.status, 200);
  ASSERT_STR_EQ(r.body, "hello world");
  result_clear(&r);
  /* The connection stays usable after the trailer. */
  FETCH(&fx, "GET", "/cl", 5000, 0, &r);
  ASSERT_EQ(r.error, 0);
  ASSERT_STR_EQ(r.body, "hello");
  ASSERT_EQ(atomic_load(&fx.srv.conns), 1);
  result_clear(&r);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_close_delimited(void) {
  fixture_t fx;
  result_t r;
  fx_setup(&fx, "localhost", 1, 1);
  FETCH(&fx, "GET", "/close", 5000, 0, &r);
  ASSERT_EQ(r.error, 0);
  ASSERT_EQ(r.status, 200);
  ASSERT_STR_EQ(r.body, "until the connection closes");
  result_clear(&r);
  FETCH(&fx, "GET", "/cl", 5000, 0, &r); /* needs a new connection */
  ASSERT_EQ(r.error, 0);
  ASSERT_EQ(atomic_load(&fx.srv.conns), 2);
  result_clear(&r);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_plain_http_and_post(void) {
  fixture_t fx;
  result_t r = {0};
  fx_setup(&fx, "localhost", 0, 1);
  char *url = fx_url(&fx, "http", "/echo?x=1#frag");
  acme_httpc_header_t hdrs[] = {{"Content-Type", "application/jose+json"}};
  acme_httpc_req_t req = {.method = "POST", .url = url, .headers = hdrs, .num_headers = 1,
                          .body = "{\"a\":1}", .body_len = 7};
  ASSERT_EQ(acme_httpc_request(fx.client, &req, on_result, &r), 0);
  while (!r.done) uv_run(&fx.loop, UV_RUN_ONCE);
  ASSERT_EQ(r.error, 0);
  ASSERT_EQ(r.status, 200);
  ASSERT_STR_EQ(r.body, "POST ct=application/jose+json ua=gatehouse-acme body={\"a\":1}");
  result_clear(&r);
  free(url);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_early_hints_skipped(void) {
  fixture_t fx;
  result_t r;
  fx_setup(&fx, "localhost", 1, 1);
  FETCH(&fx, "POST", "/early-hints", 5000, 0, &r);
  ASSERT_EQ(r.error, 0);
  ASSERT_EQ(r.status, 201);
  ASSERT_STR_EQ(r.location, "/x");
  ASSERT_EQ(r.num_links, 0); /* the 103's headers are not the response's */
  ASSERT_STR_EQ(r.body, "ok");
  result_clear(&r);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

/* Each callback starts the next request: all three share one connection. */
typedef struct {
  fixture_t *fx;
  int left, ok;
  result_t r;
} chain_t;

static void on_chain(const acme_httpc_resp_t *resp, void *arg) {
  chain_t *ch = arg;
  if (resp->error == 0 && resp->status == 200 && strcmp(resp->body, "hello") == 0) ch->ok++;
  if (--ch->left > 0) {
    char *url = fx_url(ch->fx, "https", "/cl");
    acme_httpc_req_t req = {.method = "GET", .url = url, .timeout_ms = 5000};
    if (acme_httpc_request(ch->fx->client, &req, on_chain, ch) != 0) ch->left = 0;
    free(url);
  }
}

static void test_keepalive_reuse(void) {
  fixture_t fx;
  fx_setup(&fx, "localhost", 1, 1);
  chain_t ch = {.fx = &fx, .left = 3};
  char *url = fx_url(&fx, "https", "/cl");
  acme_httpc_req_t req = {.method = "GET", .url = url, .timeout_ms = 5000};
  ASSERT_EQ(acme_httpc_request(fx.client, &req, on_chain, &ch), 0);
  free(url);
  while (ch.left > 0) uv_run(&fx.loop, UV_RUN_ONCE);
  ASSERT_EQ(ch.ok, 3);
  ASSERT_EQ(atomic_load(&fx.srv.conns), 1);
  ASSERT_EQ(atomic_load(&fx.srv.requests), 3);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_stale_connection_retried(void) {
  fixture_t fx;
  result_t r;
  fx_setup(&fx, "localhost", 1, 1);
  FETCH(&fx, "GET", "/drop-reused", 5000, 0, &r);
  ASSERT_EQ(r.error, 0);
  result_clear(&r);
  /* The server hangs up on the pooled connection once it has read the
   * request: the client retries once on a new connection. */
  FETCH(&fx, "GET", "/drop-reused", 5000, 0, &r);
  ASSERT_EQ(r.error, 0);
  ASSERT_STR_EQ(r.body, "hello");
  ASSERT_EQ(atomic_load(&fx.srv.conns), 2);
  ASSERT_EQ(atomic_load(&fx.srv.requests), 3);
  result_clear(&r);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_untrusted_certificate(void) {
  fixture_t fx;
  fx_setup(&fx, "localhost", 1, 0);
  char *url = fx_url(&fx, "https", "/cl");
  char *want = gh_asprintf("GET %s: TLS certificate of localhost (127.0.0.1:%u) rejected: "
                           "self signed certificate", url, fx.srv.port);
  EXPECT_ERROR(&fx, "/cl", 5000, 0, ACME_HTTPC_ETLS, want);
  free(url);
  free(want);
  ASSERT_EQ(atomic_load(&fx.srv.requests), 0);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_hostname_mismatch(void) {
  fixture_t fx;
  result_t r;
  fx_setup(&fx, "other.example", 1, 1);
  EXPECT_ERROR(&fx, "/cl", 5000, 0, ACME_HTTPC_ETLS, "rejected: Hostname mismatch");
  /* An address is checked against the IP SANs (it has none). */
  char *url = gh_asprintf("https://127.0.0.1:%u/cl", fx.srv.port);
  ASSERT_EQ(fetch(&fx, "GET", url, 5000, 0, &r), 0);
  free(url);
  ASSERT_EQ(r.error, ACME_HTTPC_ETLS);
  ASSERT_CONTAINS(r.msg, "rejected: IP address mismatch");
  result_clear(&r);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_timeouts(void) {
  fixture_t fx;
  fx_setup(&fx, "localhost", 1, 1);
  uint64_t t0 = gh_now_ms();
  EXPECT_ERROR(&fx, "/slow", 300, 0, UV_ETIMEDOUT,
               "timed out after 300 ms reading the response from 127.0.0.1:");
  ASSERT_TRUE(gh_now_ms() - t0 < 3000);
  EXPECT_ERROR(&fx, "/hang", 200, 0, UV_ETIMEDOUT,
               "timed out after 200 ms waiting for the response from 127.0.0.1:");
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_hostile_responses(void) {
  fixture_t fx;
  result_t r;
  fx_setup(&fx, "localhost", 1, 1);
  char port[16];
  snprintf(port, sizeof(port), ":%u", fx.srv.port);
  char *want = gh_asprintf("response body from 127.0.0.1%s is 100000 bytes, over the limit of 1000",
                           port);
  EXPECT_ERROR(&fx, "/big", 5000, 1000, UV_EMSGSIZE, want);
  free(want);
  EXPECT_ERROR(&fx, "/bigchunked", 5000, 1000, UV_EMSGSIZE, "is over the limit of 1000 bytes");
  want = gh_asprintf("response head from 127.0.0.1%s is over 65536 bytes", port);
  EXPECT_ERROR(&fx, "/hugehead", 5000, 0, UV_EMSGSIZE, want);
  free(want);
  EXPECT_ERROR(&fx, "/garbage", 5000, 0, UV_EPROTO, "malformed response from 127.0.0.1:");
  EXPECT_ERROR(&fx, "/truncated", 5000, 0, UV_EOF,
               "connection closed by 127.0.0.1:");
  EXPECT_ERROR(&fx, "/truncated", 5000, 0, UV_EOF, "before the end of the response body");
  /* After all that, a good request still works. */
  FETCH(&fx, "GET", "/cl", 5000, 0, &r);
  ASSERT_EQ(r.error, 0);
  result_clear(&r);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_connect_and_dns_errors(void) {
  fixture_t fx;
  result_t r;
  fx_setup(&fx, "localhost", 1, 1);
  /* A port that was free a moment ago. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof(a);
  TC_CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
           getsockname(fd, (struct sockaddr *)&a, &alen) == 0);
  close(fd);
  char *url = gh_asprintf("https://localhost:%u/x", ntohs(a.sin_port));
  ASSERT_EQ(fetch(&fx, "GET", url, 5000, 0, &r), 0);
  ASSERT_EQ(r.error, UV_ECONNREFUSED);
  ASSERT_CONTAINS(r.msg, url);
  ASSERT_CONTAINS(r.msg, "connect to 127.0.0.1:");
  ASSERT_CONTAINS(r.msg, "connection refused");
  free(url);
  result_clear(&r);
  ASSERT_EQ(fetch(&fx, "GET", "https://no-such-host.invalid/dir", 5000, 0, &r), 0);
  ASSERT_TRUE(r.error < 0);
  ASSERT_CONTAINS(r.msg, "GET https://no-such-host.invalid/dir: ");
  ASSERT_CONTAINS(r.msg, "no-such-host.invalid");
  result_clear(&r);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_bad_requests_rejected(void) {
  fixture_t fx;
  fx_setup(&fx, "localhost", 1, 1);
  result_t r = {0};
  const char *bad_urls[] = {"ftp://x/", "https://", "https://a b/", "https://x:0/",
                            "https://x:65536/", "https://u@x/", "https://x/a b",
                            "https://[zz]/", "https://x/\r\nX: y"};
  for (size_t i = 0; i < GH_ARRAY_LEN(bad_urls); i++) {
    acme_httpc_req_t req = {.method = "GET", .url = bad_urls[i]};
    ASSERT_EQ(acme_httpc_request(fx.client, &req, on_result, &r), UV_EINVAL);
  }
  acme_httpc_header_t bad_hdr[] = {{"X-A", "v\r\nInjected: 1"}};
  acme_httpc_req_t req = {.method = "GET", .url = "https://x/", .headers = bad_hdr,
                          .num_headers = 1};
  ASSERT_EQ(acme_httpc_request(fx.client, &req, on_result, &r), UV_EINVAL);
  req = (acme_httpc_req_t){.method = "GE T", .url = "https://x/"};
  ASSERT_EQ(acme_httpc_request(fx.client, &req, on_result, &r), UV_EINVAL);
  ASSERT_EQ(r.done, 0);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_bad_roots_file(void) {
  tc_dir_t d;
  tc_dir_init(&d);
  const char *junk = tc_dir_write(&d, "junk.pem", "not a certificate\n");
  uv_loop_t loop;
  uv_loop_init(&loop);
  char *err = NULL;
  ASSERT_NULL(acme_httpc_new(&err, &loop, &junk, 1));
  ASSERT_CONTAINS(err, "cannot load CA roots from /tmp/gh-test-");
  free(err);
  const char *missing = "/nonexistent/roots.pem";
  ASSERT_NULL(acme_httpc_new(&err, &loop, &missing, 1));
  ASSERT_CONTAINS(err, "cannot read CA roots /nonexistent/roots.pem: No such file");
  free(err);
  ASSERT_EQ(uv_loop_close(&loop), 0);
  tc_dir_cleanup(&d);
}

/* Freeing the client with requests in flight: each callback runs once,
 * later, with UV_ECANCELED; and freeing it from a callback is safe. */
static void on_free_client(const acme_httpc_resp_t *resp, void *arg) {
  fixture_t *fx = arg;
  acme_httpc_free(fx->client);
}

static void test_free_in_flight(void) {
  fixture_t fx;
  result_t hang = {0}, dns = {0};
  fx_setup(&fx, "localhost", 1, 1);
  char *url = fx_url(&fx, "https", "/hang");
  acme_httpc_req_t req = {.method = "GET", .url = url, .timeout_ms = 5000};
  ASSERT_EQ(acme_httpc_request(fx.client, &req, on_result, &hang), 0);
  req.url = "https://localhost:1/"; /* still resolving when freed */
  ASSERT_EQ(acme_httpc_request(fx.client, &req, on_result, &dns), 0);
  while (atomic_load(&fx.srv.requests) == 0) {
    uv_run(&fx.loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
  acme_httpc_free(fx.client);
  ASSERT_EQ(hang.done, 0); /* not from inside acme_httpc_free */
  fx.client = NULL;
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  ASSERT_EQ(hang.done, 1);
  ASSERT_EQ(hang.error, UV_ECANCELED);
  ASSERT_CONTAINS(hang.msg, url);
  ASSERT_EQ(dns.done, 1);
  result_clear(&hang);
  result_clear(&dns);
  /* A fresh client freed from its own callback. */
  char *err = NULL;
  fx.client = acme_httpc_new(&err, &fx.loop, &fx.cert, 1);
  ASSERT_NOT_NULL(fx.client);
  req.url = url;
  req.url = "https://localhost:1/";
  ASSERT_EQ(acme_httpc_request(fx.client, &req, on_free_client, &fx), 0);
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  fx.client = NULL;
  free(url);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

/* ---- one request from the environment (see the top of the file) ---- */

static void on_print(const acme_httpc_resp_t *resp, void *arg) {
  int *rc = arg;
  if (resp->error != 0) {
    fprintf(stderr, "error %d: %s\n", resp->error, resp->error_msg);
    *rc = 1;
    return;
  }
  printf("status %d\n", resp->status);
  for (size_t i = 0; i < resp->num_headers; i++) {
    printf("%s: %s\n", resp->headers[i].name, resp->headers[i].value);
  }
  printf("\n");
  fwrite(resp->body, 1, resp->body_len, stdout);
  *rc = 0;
}

static int env_request(const char *url) {
  const char *ca = getenv("GH_HTTPC_CA");
  const char *method = getenv("GH_HTTPC_METHOD");
  uv_loop_t loop;
  uv_loop_init(&loop);
  char *err = NULL;
  acme_httpc_t *c = acme_httpc_new(&err, &loop, ca ? &ca : NULL, ca ? 1 : 0);
  if (c == NULL) {
    fprintf(stderr, "%s\n", err);
    free(err);
    return 1;
  }
  int rc = 2;
  acme_httpc_req_t req = {.method = method ? method : "GET", .url = url, .timeout_ms = 10000};
  int r = acme_httpc_request(c, &req, on_print, &rc);
  if (r != 0) {
    fprintf(stderr, "acme_httpc_request: %s\n", uv_strerror(r));
    rc = 1;
  }
  while (rc == 2) uv_run(&loop, UV_RUN_ONCE);
  acme_httpc_free(c);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "uv_loop_close: handles left open\n");
    rc = 1;
  }
  return rc;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  alarm(120); /* a hung case fails the test instead of stalling ctest */
  const char *url = getenv("GH_HTTPC_URL");
  if (url != NULL) return env_request(url);
  RUN(test_content_length);
  RUN(test_chunked);
  RUN(test_close_delimited);
  RUN(test_plain_http_and_post);
  RUN(test_early_hints_skipped);
  RUN(test_keepalive_reuse);
  RUN(test_stale_connection_retried);
  RUN(test_untrusted_certificate);
  RUN(test_hostname_mismatch);
  RUN(test_timeouts);
  RUN(test_hostile_responses);
  RUN(test_connect_and_dns_errors);
  RUN(test_bad_requests_rejected);
  RUN(test_bad_roots_file);
  RUN(test_free_in_flight);
  TEST_EXIT();
}
