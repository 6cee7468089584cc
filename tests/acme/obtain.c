/* obtain.c (gh_obtain): drives the ACME engine against a real CA for the
 * integration tests.
 *
 *   gh_obtain CONFIG NAME...                    obtain one certificate
 *   gh_obtain CONFIG --revoke NAME --reason N [--cert-key]
 *                                               revoke the stored one, signed
 *                                               by the account key or by the
 *                                               certificate's own key
 *   gh_obtain CONFIG --rollover                 new key for the stored account
 *   gh_obtain CONFIG --deactivate               deactivate the stored account
 *
 * CONFIG is a normal Gatehouse configuration (conf_load). So that the CA
 * can validate, the driver serves the challenge table itself, as the proxy
 * does: HTTP-01 on the first listen.http address (a small libuv server)
 * and TLS-ALPN-01 on the first listen.https address (a blocking BoringSSL
 * server in a thread: the table is read-locked, as workers read it).
 *
 * On success it prints {"subject","issuer","not_after","sans"} as JSON
 * ({"revoked"|"rolled_over"|"deactivated": true} for the other commands)
 * and exits 0; on failure it prints {"error": MESSAGE} and exits 1. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "acme/acme.h"
#include "acme/storage.h"
#include "common/common.h"
#include "common/log.h"
#include "conf/conf.h"

#define CHALLENGE_PREFIX "/.well-known/acme-challenge/"

static acme_challenges_t *g_table;
static int g_status = 1;
static acme_engine_t *g_engine;

/* ---- HTTP-01 ---- */

typedef struct {
  uv_tcp_t tcp;
  char buf[4096];
  size_t len;
  int answered;
} http_conn_t;

static void on_conn_close(uv_handle_t *h) { gh_free(h->data); }

static void on_write(uv_write_t *w, int status) {
  http_conn_t *c = w->data;
  gh_free(w);
  uv_close((uv_handle_t *)&c->tcp, on_conn_close);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  http_conn_t *c = h->data;
  buf->base = c->buf + c->len;
  buf->len = sizeof(c->buf) - 1 - c->len;
}

static void http_answer(http_conn_t *c) {
  c->answered = 1;
  c->buf[c->len] = '\0';
  char *keyauth = NULL;
  size_t plen = sizeof(CHALLENGE_PREFIX) - 1;
  if (strncmp(c->buf, "GET ", 4) == 0 && strncmp(c->buf + 4, CHALLENGE_PREFIX, plen) == 0) {
    const char *tok = c->buf + 4 + plen;
    size_t tlen = strcspn(tok, " \r\n");
    keyauth = acme_challenges_get_http01(g_table, tok, tlen);
  }
  char *resp;
  if (keyauth != NULL) {
    resp = gh_asprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                       "Connection: close\r\n\r\n%s", strlen(keyauth), keyauth);
  } else {
    resp = gh_strdup("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  }
  gh_free(keyauth);
  /* The response fits the connection's buffer once the request is read. */
  size_t n = strlen(resp);
  if (n >= sizeof(c->buf)) n = sizeof(c->buf) - 1;
  memcpy(c->buf, resp, n);
  gh_free(resp);
  uv_write_t *w = gh_malloc(sizeof(*w));
  w->data = c;
  uv_buf_t b = uv_buf_init(c->buf, (unsigned)n);
  if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    gh_free(w);
    uv_close((uv_handle_t *)&c->tcp, on_conn_close);
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  http_conn_t *c = s->data;
  if (c->answered) return;
  if (nread < 0) {
    uv_close((uv_handle_t *)s, on_conn_close);
    return;
  }
  c->len += (size_t)nread;
  c->buf[c->len] = '\0';
  if (strstr(c->buf, "\r\n\r\n") != NULL || c->len >= sizeof(c->buf) - 1) {
    uv_read_stop(s);
    http_answer(c);
  }
}

static void on_http_conn(uv_stream_t *server, int status) {
  if (status != 0) return;
  http_conn_t *c = gh_calloc(1, sizeof(*c));
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, on_conn_close);
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
}

/* ---- TLS-ALPN-01 ---- */

static atomic_int g_tls_stop;
static int g_tls_fd = -1;

static int alpn_select(SSL *ssl, const uint8_t **out, uint8_t *out_len, const uint8_t *in,
                       unsigned in_len, void *arg) {
  static const uint8_t want[] = "\x0a" "acme-tls/1";
  for (unsigned i = 0; i < in_len; i += 1u + in[i]) {
    if (in[i] == 10 && i + 11 <= in_len && memcmp(in + i, want, 11) == 0) {
      *out = in + i + 1;
      *out_len = 10;
      return SSL_TLSEXT_ERR_OK;
    }
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int cert_cb(SSL *ssl, void *arg) {
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == NULL) return 0;
  acme_cert_t *cert = acme_challenges_get_tlsalpn(g_table, name, strlen(name));
  if (cert == NULL) return 0;
  int ok = SSL_set_chain_and_key(ssl, cert->chain, cert->num_chain, cert->key, NULL);
  acme_cert_unref(cert);
  return ok;
}

static void *tls_thread(void *arg) {
  SSL_CTX *ctx = arg;
  while (!atomic_load(&g_tls_stop)) {
    struct pollfd pfd = {g_tls_fd, POLLIN, 0};
    if (poll(&pfd, 1, 100) <= 0) continue;
    int fd = accept(g_tls_fd, NULL, NULL);
    if (fd < 0) continue;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) SSL_shutdown(ssl);
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
  }
  return NULL;
}

static int listen_fd(const conf_addr_t *a) {
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof(sin));
  sin.sin_family = AF_INET;
  sin.sin_port = htons(a->port);
  if (inet_pton(AF_INET, a->host[0] ? a->host : "127.0.0.1", &sin.sin_addr) != 1) return -1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(fd, 64) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* ---- the engine ---- */

static void print_error(const char *err) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "error", err ? err : "unknown error");
  char *s = cJSON_PrintUnformatted(o);
  printf("%s\n", s);
  fflush(stdout);
  free(s);
  cJSON_Delete(o);
}

static uv_tcp_t g_http;
static int g_http_open;

static void stop_all(void) {
  acme_engine_free(g_engine);
  g_engine = NULL;
  if (g_http_open) uv_close((uv_handle_t *)&g_http, NULL);
  g_http_open = 0;
}

static void on_obtained(void *arg, int status, const char *err, acme_cert_t *cert) {
  if (status != 0) {
    print_error(err);
  } else {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "subject", cert->subject_cn ? cert->subject_cn : "");
    cJSON_AddStringToObject(o, "issuer", cert->issuer_cn ? cert->issuer_cn : "");
    cJSON_AddNumberToObject(o, "not_after", (double)cert->not_after);
    cJSON_AddNumberToObject(o, "chain", (double)cert->num_chain);
    cJSON *sans = cJSON_AddArrayToObject(o, "sans");
    for (size_t i = 0; i < cert->num_sans; i++)
      cJSON_AddItemToArray(sans, cJSON_CreateString(cert->sans[i]));
    char *s = cJSON_PrintUnformatted(o);
    printf("%s\n", s);
    fflush(stdout);
    free(s);
    cJSON_Delete(o);
    g_status = 0;
  }
  stop_all();
}

/* on_done reports a command without a certificate: |arg| names the member
 * printed as true on success. */
static void on_done(void *arg, int status, const char *err) {
  if (status != 0) {
    print_error(err);
  } else {
    printf("{\"%s\":true}\n", (const char *)arg);
    fflush(stdout);
    g_status = 0;
  }
  stop_all();
}

/* start_revoke revokes the certificate stored under argv[3]. */
static int start_revoke(const conf_t *conf, int argc, char **argv) {
  int reason = 0, by_cert_key = 0;
  char *err = NULL;
  for (int i = 4; i < argc; i++) {
    if (strcmp(argv[i], "--reason") == 0 && i + 1 < argc) reason = atoi(argv[++i]);
    else if (strcmp(argv[i], "--cert-key") == 0) by_cert_key = 1;
  }
  acme_storage_t *st = argc >= 4 ? acme_storage_open(&err, conf->storage) : NULL;
  acme_cert_t *cert = NULL;
  int rc;
  if (st == NULL || acme_storage_cert_load(st, &cert, NULL, &err, argv[3]) != 0) {
    print_error(err ? err : "usage: --revoke NAME --reason N [--cert-key]");
    gh_free(err);
    rc = -1;
  } else {
    rc = by_cert_key ? acme_engine_revoke_by_cert_key(g_engine, cert, reason, on_done, "revoked")
                     : acme_engine_revoke(g_engine, cert, reason, on_done, "revoked");
    if (rc != 0) print_error(uv_strerror(rc));
  }
  acme_cert_unref(cert);
  acme_storage_free(st);
  return rc;
}

/* start_command starts what argv asks for; returns 0 or a negative error
 * (already printed). */
static int start_command(const conf_t *conf, int argc, char **argv) {
  int rc;
  if (strcmp(argv[2], "--revoke") == 0) return start_revoke(conf, argc, argv);
  if (strcmp(argv[2], "--rollover") == 0) {
    rc = acme_engine_rollover(g_engine, on_done, "rolled_over");
  } else if (strcmp(argv[2], "--deactivate") == 0) {
    rc = acme_engine_deactivate(g_engine, on_done, "deactivated");
  } else {
    rc = acme_engine_obtain(g_engine, (const char *const *)argv + 2, (size_t)(argc - 2),
                            on_obtained, NULL);
  }
  if (rc != 0) print_error(uv_strerror(rc));
  return rc;
}

/* With GH_OBTAIN_CANCEL_MS set, the engine is freed that long after the
 * start, orders in flight: the callback must report UV_ECANCELED. */
static void on_cancel_timer(uv_timer_t *t) {
  uv_close((uv_handle_t *)t, NULL);
  if (g_engine != NULL) stop_all();
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s CONFIG NAME... | CONFIG --revoke NAME --reason N [--cert-key] | "
            "CONFIG --rollover | CONFIG --deactivate\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  char *err = NULL;
  conf_t *conf = conf_load(&err, argv[1]);
  if (conf == NULL) {
    print_error(err);
    gh_free(err);
    return 1;
  }
  gh_log_setup(GH_LOG_DEBUG <= conf->log_level ? (gh_log_level_t)conf->log_level : GH_LOG_INFO,
               GH_LOG_TEXT);
  uv_loop_t loop;
  uv_loop_init(&loop);
  g_table = acme_challenges_new();

  if (conf->num_http > 0) {
    struct sockaddr_in sin;
    uv_ip4_addr(conf->http[0].host[0] ? conf->http[0].host : "127.0.0.1", conf->http[0].port,
                &sin);
    uv_tcp_init(&loop, &g_http);
    g_http_open = 1;
    if (uv_tcp_bind(&g_http, (struct sockaddr *)&sin, 0) != 0 ||
        uv_listen((uv_stream_t *)&g_http, 64, on_http_conn) != 0) {
      fprintf(stderr, "gh_obtain: cannot listen on %s\n", conf->http[0].text);
    }
  }
  SSL_CTX *ctx = NULL;
  pthread_t tls_tid;
  int tls_running = 0;
  if (conf->num_https > 0) {
    g_tls_fd = listen_fd(&conf->https[0]);
    if (g_tls_fd < 0) {
      fprintf(stderr, "gh_obtain: cannot listen on %s\n", conf->https[0].text);
    } else {
      ctx = SSL_CTX_new(TLS_method());
      SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
      SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
      SSL_CTX_set_cert_cb(ctx, cert_cb, NULL);
      pthread_create(&tls_tid, NULL, tls_thread, ctx);
      tls_running = 1;
    }
  }

  g_engine = acme_engine_new(&err, &loop, conf, g_table);
  int rc = 0;
  if (g_engine == NULL) {
    print_error(err);
    gh_free(err);
    rc = -1;
  } else {
    rc = start_command(conf, argc, argv);
  }
  uv_timer_t cancel_timer;
  const char *cancel = getenv("GH_OBTAIN_CANCEL_MS");
  if (rc == 0 && cancel != NULL) {
    uv_timer_init(&loop, &cancel_timer);
    uv_timer_start(&cancel_timer, on_cancel_timer, strtoull(cancel, NULL, 10), 0);
  }
  if (rc != 0) stop_all();
  uv_run(&loop, UV_RUN_DEFAULT);
  if (tls_running) {
    atomic_store(&g_tls_stop, 1);
    pthread_join(tls_tid, NULL);
  }
  if (g_tls_fd >= 0) close(g_tls_fd);
  SSL_CTX_free(ctx);
  int lrc = uv_loop_close(&loop);
  if (lrc != 0) fprintf(stderr, "gh_obtain: uv_loop_close: %s\n", uv_strerror(lrc));
  acme_challenges_free(g_table);
  conf_free(conf);
  return g_status;
}
