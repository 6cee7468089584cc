/* fuzz_worker.c: see fuzz_worker.h. */
#include "tests/fuzz/fuzz_worker.h"

#include <fcntl.h>
#include <stdlib.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "tests/unit/testcert.h"

/* Small limits, so the fuzzer reaches them; the route and the wildcard
 * host give routing something to choose. */
static const char conf_template[] =
    "{\"listen\": {\"https\": \"127.0.0.1:8443\"},"
    " \"workers\": 1,"
    " \"sites\": [{\"hosts\": [\"a.test\", \"*.b.test\"], \"upstreams\": [\"%s\"],"
    "   \"routes\": [{\"path\": \"/r/\", \"upstreams\": [\"%s\"]}],"
    "   \"tls\": {\"cert\": \"%s\", \"key\": \"%s\"},"
    "   \"hsts\": {\"max_age\": \"1d\"}, \"default\": true}],"
    " \"limits\": {\"max_header_bytes\": 1024, \"max_headers\": 16, \"max_uri_bytes\": 256,"
    "   \"write_queue_bytes\": 4096},"
    " \"log\": {\"level\": \"error\", \"access\": \"off\"}}";

enum { MAX_PEERS = 64 };

static px_worker_t *g_w;
static acme_challenges_t *g_challenges; /* one HTTP-01 answer: token "tok" */
static tc_dir_t g_dir;
static int g_peers[MAX_PEERS]; /* the far ends of the socketpairs; -1 once closed */
static uint8_t g_peer_paused[MAX_PEERS]; /* not drained: the client is not reading */
static size_t g_num_peers;
static char *g_json; /* the configuration, for fw_reload */
static void (*g_sink)(int peer, const char *p, size_t len);

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void worker_teardown(void) {
  px_worker_t *w = g_w;
  fw_finish(w);
  uv_walk(&w->loop, close_walk, NULL);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&w->loop) != 0) {
    fprintf(stderr, "fuzz worker: loop not empty at exit\n");
    abort();
  }
  px_ex_cache_free(w);
  px_h2_worker_free(w);
  px_worker_pools_free(w);
  px_gen_unref(w->gen);
  acme_challenges_free(g_challenges);
  gh_free(g_json);
  gh_free(w->obuf);
  px_buf_free(&w->pout);
  BIO_meth_free(w->bio_method);
  px_uptls_worker_free(w);
  gh_free(w);
  g_w = NULL;
  tc_dir_cleanup(&g_dir);
}

px_worker_t *fw_worker(const char *upstream) {
  if (g_w) return g_w;
  /* The certificate's names go in where the configuration has them. */
  char *fmt = gh_asprintf(conf_template, upstream, upstream, "%1$s", "%2$s");
  px_worker_t *w = fw_worker_conf(fmt);
  gh_free(fmt);
  return w;
}

px_worker_t *fw_worker_conf(const char *conf_fmt) {
  if (g_w) return g_w;
  signal(SIGPIPE, SIG_IGN);
  gh_log_setup(GH_LOG_ERROR, GH_LOG_TEXT);
  const char *cert, *key;
  tc_dir_init(&g_dir);
  tc_issue(&g_dir, "site", "a.test", "a.test,*.b.test", 0, &cert, &key);
  char *json = gh_asprintf(conf_fmt, cert, key);
  char *err = NULL;
  conf_t *conf = conf_parse(&err, "fuzz.json", json, strlen(json));
  g_json = json;
  g_challenges = acme_challenges_new();
  acme_challenges_put_http01(g_challenges, "tok", "tok.fuzz-thumbprint");
  px_gen_t *gen = conf ? px_gen_new(&err, conf, g_challenges) : NULL;
  if (gen == NULL) {
    fprintf(stderr, "fuzz worker: %s\n", err);
    abort();
  }
  /* As server.c's worker_new, less the threads, async and timers. */
  px_worker_t *w = gh_calloc(1, sizeof(*w));
  if (uv_loop_init(&w->loop) != 0) abort();
  w->loop.data = w;
  gh_list_init(&w->conns);
  gh_list_init(&w->upconns);
  w->gen = gen;
  px_worker_pools_new(w, gen);
  px_h1_init_settings(w);
  px_uph1_init_settings(w);
  px_worker_bio_init(w);
  px_uptls_worker_init(w);
  uv_timer_init(&w->loop, &w->health_timer); /* px_worker_adopt_gen stops it */
  g_w = w;
  atexit(worker_teardown);
  return w;
}

void fw_reload(px_worker_t *w) {
  char *err = NULL;
  conf_t *conf = conf_parse(&err, "fuzz.json", g_json, strlen(g_json));
  px_gen_t *gen = conf ? px_gen_new(&err, conf, g_challenges) : NULL;
  if (gen == NULL) {
    fprintf(stderr, "fuzz worker: reload: %s\n", err);
    abort();
  }
  px_worker_adopt_gen(w, gen);
  /* As server.c's worker_async: HTTP/2 connections of the old generation
   * are asked to move on (GOAWAY). */
  for (gh_link_t *l = w->conns.next; l != &w->conns;) {
    px_conn_t *c = GH_CONTAINER_OF(l, px_conn_t, link);
    l = l->next;
    if (c->h2) px_conn_drain(c);
  }
}

px_conn_t *fw_conn_new(px_worker_t *w, int proxy) {
  px_conn_t *c = fw_conn_open(w, proxy, 0, NULL);
  if (c == NULL) abort();
  return c;
}

px_conn_t *fw_conn_open(px_worker_t *w, int proxy, int sockbuf, int *peer) {
  int sv[2];
  size_t slot = 0;
  while (slot < g_num_peers && g_peers[slot] >= 0) slot++;
  if (slot == MAX_PEERS) return NULL;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
  fcntl(sv[1], F_SETFL, O_NONBLOCK);
  if (sockbuf > 0) {
    for (int i = 0; i < 2; i++) {
      setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &sockbuf, sizeof(sockbuf));
      setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &sockbuf, sizeof(sockbuf));
    }
  }
  g_peers[slot] = sv[1];
  g_peer_paused[slot] = 0;
  if (slot == g_num_peers) g_num_peers++;
  if (peer) *peer = sv[1];
  px_conn_t *c = gh_calloc(1, sizeof(*c));
  c->w = w;
  uv_tcp_init(&w->loop, &c->tcp);
  /* libuv's stream code does not care that the socket is AF_UNIX. */
  if (uv_tcp_open(&c->tcp, sv[0]) != 0) abort();
  c->tcp.data = c;
  uv_timer_init(&w->loop, &c->timer);
  c->timer.data = c;
  c->handles_open = 2;
  gh_list_insert(&w->conns, &c->link);
  w->num_conns++;
  snprintf(c->client_ip, sizeof(c->client_ip), "192.0.2.1");
  /* The TLS listener's connection after its handshake, minus the SSL. */
  c->is_tls = proxy != 0;
  c->state = PX_CONN_OPEN;
  if (proxy == 2) px_h2_start(c); /* as if ALPN had chosen "h2" */
  else px_h1_start(c);
  px_conn_read_start(c);
  return c;
}

static size_t peer_slot(int peer) {
  for (size_t i = 0; i < g_num_peers; i++) {
    if (g_peers[i] == peer) return i;
  }
  abort(); /* not a peer of this input */
}

void fw_peer_sink(void (*fn)(int peer, const char *p, size_t len)) { g_sink = fn; }

void fw_peer_reading(int peer, int on) { g_peer_paused[peer_slot(peer)] = !on; }

void fw_peer_close(int peer) {
  g_peers[peer_slot(peer)] = -1;
  close(peer);
}

int fw_alive(px_worker_t *w, px_conn_t *c) {
  for (gh_link_t *l = w->conns.next; l != &w->conns; l = l->next) {
    if (l == &c->link) return c->state != PX_CONN_CLOSING;
  }
  return 0;
}

int fw_feed(px_worker_t *w, px_conn_t *c, const char *data, size_t len) {
  if (!fw_alive(w, c)) return -1;
  /* What conn.c's on_read does with plaintext. */
  if (c->h2) px_h2_on_bytes(c, data, len);
  else px_h1_on_bytes(c, data, len);
  if (c->state != PX_CONN_CLOSING) px_conn_flush(c);
  return fw_alive(w, c) ? 0 : -1;
}

/* drain reads what the client of peer |i| was sent; GH_FUZZ_ECHO=1 in the
 * environment copies it to stderr, for checking what a seed does. */
static void drain(size_t i) {
  static int echo = -1;
  if (echo < 0) echo = getenv("GH_FUZZ_ECHO") != NULL;
  char buf[4096];
  ssize_t n;
  while ((n = read(g_peers[i], buf, sizeof(buf))) > 0) {
    if (echo && write(2, buf, (size_t)n) < 0) echo = 0;
    if (g_sink) g_sink(g_peers[i], buf, (size_t)n);
  }
}

static void drain_peers(void) {
  for (size_t i = 0; i < g_num_peers; i++) {
    if (g_peers[i] >= 0 && !g_peer_paused[i]) drain(i);
  }
}

void fw_peer_drain(int peer) { drain(peer_slot(peer)); }

void fw_spin(px_worker_t *w, int rounds) {
  for (int i = 0; i < rounds; i++) {
    drain_peers();
    uv_run(&w->loop, UV_RUN_NOWAIT);
  }
}

void fw_finish(px_worker_t *w) {
  for (gh_link_t *l = w->conns.next; l != &w->conns;) {
    px_conn_t *c = GH_CONTAINER_OF(l, px_conn_t, link);
    l = l->next;
    px_conn_close(c);
  }
  px_worker_pools_close(w);
  /* Close callbacks, cancelled writes and connects: a few rounds at most.
   * Anything still holding the loop after many is a leaked handle. */
  for (int i = 0; i < 1000 && uv_loop_alive(&w->loop); i++) fw_spin(w, 1);
  if (uv_loop_alive(&w->loop) || w->num_conns != 0 || !gh_list_empty(&w->upconns)) {
    fprintf(stderr, "fuzz worker: %zu connection(s) or upstream connections left open\n",
            w->num_conns);
    abort();
  }
  for (size_t i = 0; i < g_num_peers; i++) {
    if (g_peers[i] >= 0) close(g_peers[i]);
  }
  g_num_peers = 0;
  w->clock_offset_ms = 0;
  w->draining = 0;
  /* The next input starts from the same state: no upstream marked down,
   * round robin at its start. */
  for (size_t i = 0; i < w->gen->num_addrs; i++) atomic_store(&w->gen->addrs[i].down_until_ms, 0);
  for (size_t i = 0; i < w->gen->num_groups; i++) atomic_store(&w->gen->groups[i].rr, 0);
}

size_t fw_split(size_t len, unsigned slices, uint8_t f1, uint8_t f2, size_t off[4]) {
  size_t n = 0;
  off[n++] = 0;
  if (slices >= 2) off[n++] = len * f1 / 256;
  if (slices >= 3) off[n] = off[n - 1] + (len - off[n - 1]) * f2 / 256, n++;
  off[n] = len;
  return n;
}

void fw_set_access_log(px_worker_t *w, unsigned bits) {
  static const conf_access_log_t modes[] = {CONF_ACCESS_OFF, CONF_ACCESS_JSON,
                                            CONF_ACCESS_COMBINED, CONF_ACCESS_OFF};
  w->gen->conf->access_log = modes[bits & 3];
}

/* ---- a scripted upstream: a listener in the worker's loop ---- */

enum { MAX_UP = 8 };

static uv_tcp_t g_up[MAX_UP]; /* the upstream's side of accepted connections */
static size_t g_num_up;
static char g_rbuf[4096];

typedef struct {
  uv_write_t req;
  char data[];
} up_write_t;

static void on_written(uv_write_t *req, int status) {
  (void)status;
  gh_free(req);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h, (void)suggested;
  *buf = uv_buf_init(g_rbuf, sizeof(g_rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  if (nread < 0) uv_read_stop(s); /* the request is ignored; EOF is kept */
}

static void on_connection(uv_stream_t *server, int status) {
  if (status != 0 || g_num_up == MAX_UP) return;
  uv_tcp_t *t = &g_up[g_num_up];
  uv_tcp_init(server->loop, t);
  if (uv_accept(server, (uv_stream_t *)t) != 0) {
    uv_close((uv_handle_t *)t, NULL);
    return;
  }
  g_num_up++;
  uv_read_start((uv_stream_t *)t, on_alloc, on_read);
}

void fw_up_write(uv_tcp_t *t, const char *p, size_t len) {
  if (len == 0 || uv_is_closing((uv_handle_t *)t)) return;
  up_write_t *wr = gh_malloc(sizeof(*wr) + len);
  memcpy(wr->data, p, len);
  uv_buf_t b = uv_buf_init(wr->data, (unsigned)len);
  if (uv_write(&wr->req, (uv_stream_t *)t, &b, 1, on_written) != 0) gh_free(wr);
}

static uv_tcp_t g_listener;

px_worker_t *fw_up_worker(const char *conf_fmt) {
  static px_worker_t *w;
  if (w) return w;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof(sa);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 64) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &sl) != 0)
    abort();
  char upstream[32];
  snprintf(upstream, sizeof(upstream), "127.0.0.1:%u", ntohs(sa.sin_port));
  if (conf_fmt == NULL) {
    w = fw_worker(upstream);
  } else {
    /* The upstream goes in twice (site and route), the certificate after. */
    char *fmt = gh_asprintf(conf_fmt, upstream, upstream, "%1$s", "%2$s");
    w = fw_worker_conf(fmt);
    gh_free(fmt);
  }
  uv_tcp_init(&w->loop, &g_listener);
  if (uv_tcp_open(&g_listener, fd) != 0 ||
      uv_listen((uv_stream_t *)&g_listener, 64, on_connection) != 0)
    abort();
  uv_unref((uv_handle_t *)&g_listener); /* fw_finish waits for the rest only */
  return w;
}

uv_tcp_t *fw_up_wait(px_worker_t *w, size_t index) {
  for (int i = 0; i < 50 && g_num_up <= index; i++) fw_spin(w, 1);
  return g_num_up > index ? &g_up[index] : NULL;
}

uv_tcp_t *fw_up_newest(void) { return g_num_up ? &g_up[g_num_up - 1] : NULL; }

void fw_up_close_all(void) {
  for (size_t i = 0; i < g_num_up; i++) {
    if (!uv_is_closing((uv_handle_t *)&g_up[i])) uv_close((uv_handle_t *)&g_up[i], NULL);
  }
  g_num_up = 0;
}

int fw_up_answer(px_worker_t *w, px_conn_t *c, const char *p, size_t len, uint8_t flags,
                 uint8_t cut) {
  uv_tcp_t *up = fw_up_wait(w, 0);
  if (up == NULL) return 0;
  size_t off[4];
  size_t n = fw_split(len, flags & 64 ? 2 : 1, cut, 0, off);
  for (size_t i = 0; i < n; i++) {
    /* A later write goes to the newest connection: after a response
     * that left the first one unusable, the next request dials again. */
    up = fw_up_newest();
    fw_up_write(up, p + off[i], off[i + 1] - off[i]);
    fw_spin(w, 4);
    if (i == 0 && (flags & 128) && fw_alive(w, c)) px_conn_close(c);
  }
  if (flags & 8) uv_close((uv_handle_t *)up, NULL);
  fw_spin(w, 4);
  return 1;
}
