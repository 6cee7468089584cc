/* test_policy.c: the on-demand policy — name hygiene, registered domains,
 * token buckets with a fake clock, the bounded maps, and acme_policy_decide
 * against a real local ask endpoint.
 *
 * The ask endpoint is a plain-HTTP server on its own threads with blocking
 * sockets (one thread per connection), so the policy's loop is the only
 * loop in the test and each case ends with uv_loop_close() returning 0. It
 * answers by the "domain" parameter: "deny..." gets 403, "boom..." 503,
 * anything else 200; it counts requests and keeps the last request line. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "acme/policy.h"
#include "acme/policy_internal.h"
#include "common/common.h"
#include "test.h"

/* ---- the ask endpoint ---- */

#define MAX_SRV_CONNS 32

typedef struct {
  int lfd;
  uint16_t port;
  pthread_t accept_thread;
  pthread_mutex_t mu;
  pthread_t threads[MAX_SRV_CONNS];
  int fds[MAX_SRV_CONNS];
  int num_threads;
  char last[512]; /* the last request line, under |mu| */
  atomic_int requests, stop;
} srv_t;

typedef struct {
  srv_t *srv;
  int fd;
} srv_conn_t;

static void *srv_conn_main(void *arg) {
  srv_conn_t *c = arg;
  char buf[4096];
  size_t len = 0;
  for (;;) {
    char *end = len > 0 ? strstr(buf, "\r\n\r\n") : NULL;
    if (end == NULL) {
      if (len + 1 >= sizeof(buf)) break;
      ssize_t n = recv(c->fd, buf + len, sizeof(buf) - 1 - len, 0);
      if (n <= 0) break;
      len += (size_t)n;
      buf[len] = '\0';
      continue;
    }
    size_t head_len = (size_t)(end + 4 - buf);
    size_t line_len = strcspn(buf, "\r");
    pthread_mutex_lock(&c->srv->mu);
    snprintf(c->srv->last, sizeof(c->srv->last), "%.*s", (int)line_len, buf);
    pthread_mutex_unlock(&c->srv->mu);
    atomic_fetch_add(&c->srv->requests, 1);
    const char *dom = strstr(buf, "domain=");
    const char *status = "200 OK";
    if (dom != NULL && dom < end && strncmp(dom + 7, "deny", 4) == 0) status = "403 Forbidden";
    if (dom != NULL && dom < end && strncmp(dom + 7, "boom", 4) == 0) status = "503 Unavailable";
    char out[128];
    int n = snprintf(out, sizeof(out), "HTTP/1.1 %s\r\nContent-Length: 2\r\n\r\nok", status);
    if (send(c->fd, out, (size_t)n, MSG_NOSIGNAL) != n) break;
    memmove(buf, buf + head_len, len - head_len + 1);
    len -= head_len;
  }
  shutdown(c->fd, SHUT_RDWR);
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

static int srv_start(srv_t *s) {
  memset(s, 0, sizeof(*s));
  pthread_mutex_init(&s->mu, NULL);
  s->lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof(a);
  if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
      listen(s->lfd, 16) != 0 || getsockname(s->lfd, (struct sockaddr *)&a, &alen) != 0) {
    return -1;
  }
  s->port = ntohs(a.sin_port);
  return pthread_create(&s->accept_thread, NULL, srv_accept_main, s) == 0 ? 0 : -1;
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
  pthread_mutex_destroy(&s->mu);
}

static void srv_last(srv_t *s, char *out, size_t out_len) {
  pthread_mutex_lock(&s->mu);
  snprintf(out, out_len, "%s", s->last);
  pthread_mutex_unlock(&s->mu);
}

/* closed_port returns a loopback port nobody listens on. */
static uint16_t closed_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof(a);
  bind(fd, (struct sockaddr *)&a, sizeof(a));
  getsockname(fd, (struct sockaddr *)&a, &alen);
  close(fd);
  return ntohs(a.sin_port);
}

/* ---- helpers ---- */

static uint64_t fake_now = 1000000;
static uint64_t fake_clock(void) { return fake_now; }

static conf_on_demand_t od_base(void) {
  conf_on_demand_t od;
  memset(&od, 0, sizeof(od));
  od.enabled = 1;
  od.ask_timeout_ms = 2000;
  od.ask_cache_ttl_ms = 3600000;
  od.ask_negative_ttl_ms = 300000;
  od.max_labels = 10;
  od.negative_ttl_ms = 300000;
  return od; /* rates all 0: unlimited */
}

static char *ALLOW_STAR[] = {"*"};

typedef struct {
  int done;
  int allowed;
  char reason[256];
} res_t;

static void on_res(void *arg, int allowed, const char *reason) {
  res_t *r = arg;
  r->done++;
  r->allowed = allowed;
  snprintf(r->reason, sizeof(r->reason), "%s", reason ? reason : "");
}

/* decide runs one decision to its end; returns the rc of decide, or 1 if
 * the callback ran synchronously. */
static int decide(uv_loop_t *loop, acme_policy_t *p, res_t *r, const char *name, const char *ip,
                  int stored, int needs_order) {
  memset(r, 0, sizeof(*r));
  int rc = acme_policy_decide(p, name, ip, stored, needs_order, on_res, r);
  if (rc != 0) return rc;
  if (r->done) return 1;
  while (!r->done) uv_run(loop, UV_RUN_ONCE);
  return 0;
}

typedef struct {
  uv_loop_t loop;
  acme_policy_t *p;
  srv_t srv;
  int have_srv;
  char url[128];
} fixture_t;

/* The limits the next fx_setup hands its policy (NULL: its own). */
static acme_policy_limits_t *fx_limits;

/* fx_setup starts a policy for |od|; with |ask_path| set, od.ask is the
 * test server at that path (or a closed port when |closed|). */
static int fx_setup(fixture_t *fx, conf_on_demand_t *od, const char *ask_path, int closed) {
  memset(fx, 0, sizeof(*fx));
  uv_loop_init(&fx->loop);
  if (ask_path != NULL) {
    uint16_t port;
    if (closed) {
      port = closed_port();
    } else {
      if (srv_start(&fx->srv) != 0) return -1;
      fx->have_srv = 1;
      port = fx->srv.port;
    }
    snprintf(fx->url, sizeof(fx->url), "http://127.0.0.1:%u%s", port, ask_path);
    od->ask = fx->url;
  }
  char *err = NULL;
  fx->p = acme_policy_new(&err, &fx->loop, od, NULL, 0, fx_limits);
  if (fx->p == NULL) {
    fprintf(stderr, "acme_policy_new: %s\n", err);
    free(err);
    return -1;
  }
  acme__policy_set_clock(fx->p, fake_clock);
  return 0;
}

static int fx_teardown(fixture_t *fx) {
  acme_policy_free(fx->p);
  uv_run(&fx->loop, UV_RUN_DEFAULT);
  if (fx->have_srv) srv_stop(&fx->srv);
  return uv_loop_close(&fx->loop);
}

/* ---- precheck ---- */

typedef struct {
  const char *name;
  const char *want; /* NULL: may proceed */
} pre_case_t;

static void test_precheck_table(void) {
  conf_on_demand_t od = od_base();
  char *allow[] = {"example.com", "*.apps.example.net", "exact.test", "1.2.3.4"};
  od.allow = allow;
  od.num_allow = 4;
  static const pre_case_t cases[] = {
      {"example.com", NULL},
      {"a.apps.example.net", NULL},
      {"exact.test", NULL},
      {"www.example.com", "not in on_demand.allow"},
      {"apps.example.net", "not in on_demand.allow"},
      {"a.b.apps.example.net", "not in on_demand.allow"},
      {"example.co", "not in on_demand.allow"},
      {"xexample.com", "not in on_demand.allow"},
      {"", "invalid name"},
      {"a..b", "empty label"},
      {".example.com", "empty label"},
      {"example.com.", "empty label"},
      {"-a.b", "label starts or ends with '-'"},
      {"a-.b", "label starts or ends with '-'"},
      {"Example.com", "upper-case name"},
      {"EXAMPLE.COM", "upper-case name"},
      {"*.x", "invalid name"},
      {"*", "invalid name"},
      {"a_b.example.com", "invalid name"},
      {"a b.example.com", "invalid name"},
      {"a\xc3\xa9.example.com", "invalid name"},
      {"a/b", "invalid name"},
      {"1.2.3.4", "IP literal"},
      {"::1", "IP literal"},
      {"[::1]", "IP literal"},
      {"fe80::1%eth0", "IP literal"},
      {"1.2.3.999", "all-numeric top-level label"},
      {"1.2.3", "all-numeric top-level label"},
      {"a.b.c.d.e.f.g.h.i.j", "not in on_demand.allow"},
      {"a.b.c.d.e.f.g.h.i.j.k", "too many labels"},
      {"xn--bcher-kva.example.com", "not in on_demand.allow"},
      {"3com.example.com", "not in on_demand.allow"},
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(cases); i++) {
    const char *got = acme_policy_precheck(&od, cases[i].name, strlen(cases[i].name));
    if (cases[i].want == NULL && got != NULL) TEST_FAIL_("%s: got \"%s\"", cases[i].name, got);
    if (cases[i].want != NULL && (got == NULL || strcmp(got, cases[i].want) != 0)) {
      TEST_FAIL_("%s: want \"%s\", got \"%s\"", cases[i].name, cases[i].want, got ? got : "NULL");
    }
  }

  /* Lengths: a 63-byte label passes, 64 does not; 253 bytes pass, 254 do
   * not (and the length is checked before anything else). */
  od.allow = ALLOW_STAR;
  od.num_allow = 1;
  char buf[300];
  memset(buf, 'a', 63);
  memcpy(buf + 63, ".com", 5);
  ASSERT_NULL(acme_policy_precheck(&od, buf, strlen(buf)));
  memset(buf, 'a', 64);
  memcpy(buf + 64, ".com", 5);
  ASSERT_STR_EQ(acme_policy_precheck(&od, buf, strlen(buf)), "label too long");
  /* 4 labels of 63 + 3 dots = 255; trim to 253 and 254. */
  for (int i = 0; i < 4; i++) {
    memset(buf + i * 64, 'a', 63);
    buf[i * 64 + 63] = '.';
  }
  buf[253] = '\0';
  buf[251] = 'b';
  buf[252] = 'c'; /* last label 61 bytes */
  ASSERT_EQ(strlen(buf), 253);
  ASSERT_NULL(acme_policy_precheck(&od, buf, 253));
  buf[253] = 'd';
  buf[254] = '\0';
  ASSERT_STR_EQ(acme_policy_precheck(&od, buf, 254), "name too long");
  /* Only |name_len| bytes count: a view into a larger buffer. */
  ASSERT_NULL(acme_policy_precheck(&od, "example.com-trailing", 11));
  ASSERT_STR_EQ(acme_policy_precheck(&od, NULL, 0), "invalid name");

  /* max_labels. */
  od.max_labels = 3;
  ASSERT_NULL(acme_policy_precheck(&od, "a.b.c", 5));
  ASSERT_STR_EQ(acme_policy_precheck(&od, "a.b.c.d", 7), "too many labels");
  od.max_labels = 0; /* default 10 */
  ASSERT_NULL(acme_policy_precheck(&od, "a.b.c.d.e.f.g.h.i.j", 19));

  /* "*" still refuses IP literals; allow_ip admits valid ones only. */
  ASSERT_STR_EQ(acme_policy_precheck(&od, "10.0.0.1", 8), "IP literal");
  od.allow_ip = 1;
  ASSERT_NULL(acme_policy_precheck(&od, "10.0.0.1", 8));
  ASSERT_NULL(acme_policy_precheck(&od, "2001:db8::1", 11));
  ASSERT_STR_EQ(acme_policy_precheck(&od, "2001:DB8::1", 11), "upper-case name");
  ASSERT_STR_EQ(acme_policy_precheck(&od, "[::1]", 5), "invalid name");
  ASSERT_STR_EQ(acme_policy_precheck(&od, "1:2:3", 5), "invalid name");
  od.allow = allow; /* the exact IP pattern */
  od.num_allow = 4;
  ASSERT_NULL(acme_policy_precheck(&od, "1.2.3.4", 7));
  ASSERT_STR_EQ(acme_policy_precheck(&od, "1.2.3.5", 7), "not in on_demand.allow");
  od.allow_ip = 0;

  /* No allow patterns: hygiene only with ask, nothing without. */
  od.num_allow = 0;
  od.allow = NULL;
  ASSERT_STR_EQ(acme_policy_precheck(&od, "example.com", 11), "not in on_demand.allow");
  od.ask = "http://127.0.0.1:1/ask";
  ASSERT_NULL(acme_policy_precheck(&od, "anything.example", 16));
  ASSERT_STR_EQ(acme_policy_precheck(&od, "a..b", 4), "empty label");
  od.enabled = 0;
  ASSERT_STR_EQ(acme_policy_precheck(&od, "example.com", 11), "on_demand is not enabled");
}

/* ---- registered domains ---- */

static void test_registered_domain(void) {
  static const struct {
    const char *name, *want;
  } cases[] = {
      {"example.com", "example.com"},
      {"www.example.com", "example.com"},
      {"a.b.c.example.com", "example.com"},
      {"a.b.example.co.uk", "example.co.uk"},
      {"example.co.uk", "example.co.uk"},
      {"co.uk", "co.uk"},
      {"com", "com"},
      {"alice.github.io", "alice.github.io"},
      {"www.alice.github.io", "alice.github.io"},
      {"github.io", "github.io"},
      {"shop.foo.com.au", "foo.com.au"},
      {"x.y.workers.dev", "y.workers.dev"},
      {"app.herokuapp.com", "app.herokuapp.com"},
      {"uk", "uk"},
      {"notco.uk", "notco.uk"},
      {"a.xco.uk", "xco.uk"},
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(cases); i++) {
    const char *start;
    size_t len = acme__registered_domain(cases[i].name, strlen(cases[i].name), NULL, 0, &start);
    if (len != strlen(cases[i].want) || memcmp(start, cases[i].want, len) != 0) {
      TEST_FAIL_("%s: want %s, got %.*s", cases[i].name, cases[i].want, (int)len, start);
    }
    ASSERT_TRUE(start + len == cases[i].name + strlen(cases[i].name));
  }
  const char *const extra[] = {"hosting.example", "users.corp.test"};
  const char *start;
  size_t len = acme__registered_domain("a.b.hosting.example", 19, extra, 2, &start);
  ASSERT_EQ(len, 17);
  ASSERT_EQ(memcmp(start, "b.hosting.example", 17), 0);
  len = acme__registered_domain("x.bob.users.corp.test", 21, extra, 2, &start);
  ASSERT_EQ(memcmp(start, "bob.users.corp.test", len), 0);
  ASSERT_EQ(len, 19);
  len = acme__registered_domain("a.b.hosting.example", 19, NULL, 0, &start);
  ASSERT_EQ(memcmp(start, "hosting.example", len), 0);
  ASSERT_EQ(len, 15);
  len = acme__registered_domain("", 0, NULL, 0, &start);
  ASSERT_EQ(len, 0);
}

/* ---- buckets and maps ---- */

static void test_bucket_math(void) {
  conf_rate_t r = {10, 3600000}; /* 10/1h: one token per 6 minutes */
  acme__bucket_t b;
  acme__bucket_init(&b, &r, 1000);
  for (int i = 0; i < 10; i++) {
    ASSERT_TRUE(acme__bucket_has(&b, &r, 1000));
    acme__bucket_take(&b, &r);
  }
  ASSERT_FALSE(acme__bucket_has(&b, &r, 1000));
  ASSERT_UEQ(acme__bucket_full_at(&b, &r), 1000 + 3600000);
  ASSERT_FALSE(acme__bucket_has(&b, &r, 1000 + 359999));
  ASSERT_TRUE(acme__bucket_has(&b, &r, 1000 + 360000));
  acme__bucket_take(&b, &r);
  ASSERT_FALSE(acme__bucket_has(&b, &r, 1000 + 360000));
  /* A long pause refills to |count| and no further. */
  ASSERT_TRUE(acme__bucket_has(&b, &r, 1000 + 100 * 3600000ull));
  for (int i = 0; i < 10; i++) acme__bucket_take(&b, &r);
  ASSERT_FALSE(acme__bucket_has(&b, &r, 1000 + 100 * 3600000ull));
  /* A clock that goes back changes nothing. */
  ASSERT_FALSE(acme__bucket_has(&b, &r, 5));

  conf_rate_t r3 = {3, 1000}; /* a token each 333.3 ms */
  acme__bucket_init(&b, &r3, 0);
  for (int i = 0; i < 3; i++) acme__bucket_take(&b, &r3);
  ASSERT_FALSE(acme__bucket_has(&b, &r3, 333));
  ASSERT_TRUE(acme__bucket_has(&b, &r3, 334));
  acme__bucket_take(&b, &r3);
  ASSERT_UEQ(acme__bucket_full_at(&b, &r3), 334 + 1000); /* 2 units short of 3 tokens */

  /* Huge values neither overflow nor wrap. */
  conf_rate_t big = {UINT32_MAX, UINT64_MAX / 2};
  acme__bucket_init(&b, &big, 0);
  acme__bucket_take(&b, &big);
  ASSERT_TRUE(acme__bucket_has(&b, &big, UINT64_MAX - 1));

  conf_rate_t none = {0, 0};
  acme__bucket_init(&b, &none, 0);
  ASSERT_TRUE(acme__bucket_has(&b, &none, 0));

  char buf[48];
  acme__format_rate(buf, sizeof(buf), &r);
  ASSERT_STR_EQ(buf, "10/1h");
  acme__format_rate(buf, sizeof(buf), &(conf_rate_t){300, 3 * 3600000});
  ASSERT_STR_EQ(buf, "300/3h");
  acme__format_rate(buf, sizeof(buf), &(conf_rate_t){5, 90000});
  ASSERT_STR_EQ(buf, "5/90s");
  acme__format_rate(buf, sizeof(buf), &(conf_rate_t){1, 86400000});
  ASSERT_STR_EQ(buf, "1/1d");
  acme__format_rate(buf, sizeof(buf), &(conf_rate_t){2, 1500});
  ASSERT_STR_EQ(buf, "2/1500ms");
}

static void test_map_bounds(void) {
  acme__pmap_t m;
  acme__pmap_init(&m, 3);
  acme__pmap_put(&m, "a", 1, 0);
  acme__pmap_put(&m, "b", 1, 0);
  acme__pmap_put(&m, "c", 1, 0);
  ASSERT_NOT_NULL(acme__pmap_get(&m, "a", 1, 0)); /* a is now the most recent */
  acme__pmap_put(&m, "d", 1, 0);                  /* drops b */
  ASSERT_EQ(m.count, 3);
  ASSERT_NULL(acme__pmap_get(&m, "b", 1, 0));
  ASSERT_NOT_NULL(acme__pmap_get(&m, "a", 1, 0));
  ASSERT_NOT_NULL(acme__pmap_get(&m, "c", 1, 0));
  ASSERT_NOT_NULL(acme__pmap_get(&m, "d", 1, 0));
  /* Expiry: met on get, or swept from the cold end on put. */
  acme__pmap_entry_t *e = acme__pmap_get(&m, "a", 1, 0);
  e->expires_ms = 100;
  ASSERT_NOT_NULL(acme__pmap_get(&m, "a", 1, 99));
  ASSERT_NULL(acme__pmap_get(&m, "a", 1, 100));
  ASSERT_EQ(m.count, 2);
  acme__pmap_cleanup(&m);

  /* Growth past the initial slots keeps every key findable. */
  acme__pmap_init(&m, 100000);
  char key[32];
  for (int i = 0; i < 5000; i++) {
    int n = snprintf(key, sizeof(key), "k%d", i);
    acme__pmap_put(&m, key, (size_t)n, 0)->u.verdict.status = i;
  }
  ASSERT_EQ(m.count, 5000);
  for (int i = 0; i < 5000; i++) {
    int n = snprintf(key, sizeof(key), "k%d", i);
    e = acme__pmap_get(&m, key, (size_t)n, 0);
    ASSERT_NOT_NULL(e);
    ASSERT_EQ(e->u.verdict.status, i);
  }
  acme__pmap_cleanup(&m);
}

/* ---- decide without ask ---- */

static void test_decide_allow_list(void) {
  conf_on_demand_t od = od_base();
  char *allow[] = {"*.example.com"};
  od.allow = allow;
  od.num_allow = 1;
  fixture_t fx;
  ASSERT_EQ(fx_setup(&fx, &od, NULL, 0), 0);
  res_t r;
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "a.example.com", "192.0.2.1", 0, 1), 0);
  ASSERT_EQ(r.done, 1);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  ASSERT_STR_EQ(r.reason, "");
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "a.b.example.com", "192.0.2.1", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_REFUSED);
  ASSERT_STR_EQ(r.reason, "not in on_demand.allow");
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "A.example.com", NULL, 0, 1), 0);
  ASSERT_STR_EQ(r.reason, "upper-case name");
  /* A name longer than any valid one is refused, not copied whole. */
  char longname[600];
  memset(longname, 'a', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, longname, NULL, 0, 1), 0);
  ASSERT_STR_EQ(r.reason, "name too long");
  /* Bad arguments fail at once and never call back. */
  ASSERT_EQ(acme_policy_decide(fx.p, NULL, NULL, 0, 0, on_res, &r), UV_EINVAL);
  ASSERT_EQ(acme_policy_decide(fx.p, "a.example.com", NULL, 0, 0, NULL, &r), UV_EINVAL);
  char ip[80];
  memset(ip, '1', sizeof(ip) - 1);
  ip[sizeof(ip) - 1] = '\0';
  ASSERT_EQ(acme_policy_decide(fx.p, "a.example.com", ip, 0, 0, on_res, &r), UV_EINVAL);
  acme_policy_stats_t st;
  acme_policy_stats(fx.p, &st);
  ASSERT_UEQ(st.allowed, 1);
  ASSERT_UEQ(st.refused_precheck, 3);
  ASSERT_UEQ(st.num_negative, 0); /* precheck refusals are not remembered */
  ASSERT_EQ(fx_teardown(&fx), 0);
}

/* ---- ask ---- */

static void test_ask_allow_and_refuse(void) {
  conf_on_demand_t od = od_base();
  fixture_t fx;
  ASSERT_EQ(fx_setup(&fx, &od, "/ask?token=x%20y", 0), 0);
  res_t r;
  char line[512];
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "a.example.com", "2001:db8::1", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  srv_last(&fx.srv, line, sizeof(line));
  ASSERT_STR_EQ(line, "GET /ask?token=x%20y&domain=a.example.com&client_ip=2001%3Adb8%3A%3A1 HTTP/1.1");
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "deny.example.com", "192.0.2.7", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_REFUSED);
  ASSERT_STR_EQ(r.reason, "ask refused: 403");
  srv_last(&fx.srv, line, sizeof(line));
  ASSERT_STR_EQ(line, "GET /ask?token=x%20y&domain=deny.example.com&client_ip=192.0.2.7 HTTP/1.1");
  ASSERT_EQ(atomic_load(&fx.srv.requests), 2);
  acme_policy_stats_t st;
  acme_policy_stats(fx.p, &st);
  ASSERT_UEQ(st.ask_requests, 2);
  ASSERT_UEQ(st.ask_latency_count, 2);
  ASSERT_UEQ(st.allowed, 1);
  ASSERT_UEQ(st.refused_ask, 1);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_ask_url_without_query(void) {
  conf_on_demand_t od = od_base();
  fixture_t fx;
  ASSERT_EQ(fx_setup(&fx, &od, "/check", 0), 0);
  res_t r;
  char line[512];
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "b.example.com", NULL, 0, 0), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  srv_last(&fx.srv, line, sizeof(line));
  ASSERT_STR_EQ(line, "GET /check?domain=b.example.com&client_ip= HTTP/1.1");
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_ask_cache(void) {
  conf_on_demand_t od = od_base();
  od.negative_ttl_ms = 0; /* to see the ask cache's own refusals */
  fixture_t fx;
  ASSERT_EQ(fx_setup(&fx, &od, "/ask", 0), 0);
  res_t r;
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(decide(&fx.loop, fx.p, &r, "a.example.com", "192.0.2.1", 0, 1), 0);
    ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  }
  ASSERT_EQ(atomic_load(&fx.srv.requests), 1);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(decide(&fx.loop, fx.p, &r, "deny.example.com", "192.0.2.1", 0, 1), 0);
    ASSERT_STR_EQ(r.reason, "ask refused: 403");
  }
  ASSERT_EQ(atomic_load(&fx.srv.requests), 2);
  acme_policy_stats_t st;
  acme_policy_stats(fx.p, &st);
  ASSERT_UEQ(st.ask_cache_hits, 4);
  ASSERT_UEQ(st.num_ask_cached, 2);
  /* The refusal expires after ask_negative_ttl, the answer after
   * ask_cache_ttl. */
  fake_now += od.ask_negative_ttl_ms;
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "deny.example.com", NULL, 0, 1), 0);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "a.example.com", NULL, 0, 1), 0);
  ASSERT_EQ(atomic_load(&fx.srv.requests), 3);
  fake_now += od.ask_cache_ttl_ms;
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "a.example.com", NULL, 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  ASSERT_EQ(atomic_load(&fx.srv.requests), 4);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_ask_coalesced(void) {
  conf_on_demand_t od = od_base();
  fixture_t fx;
  ASSERT_EQ(fx_setup(&fx, &od, "/ask", 0), 0);
  res_t r[3], d[2];
  memset(r, 0, sizeof(r));
  memset(d, 0, sizeof(d));
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(acme_policy_decide(fx.p, "c.example.com", "192.0.2.1", 0, 1, on_res, &r[i]), 0);
  }
  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(acme_policy_decide(fx.p, "deny.example.com", "192.0.2.1", 0, 0, on_res, &d[i]), 0);
  }
  /* Never called back from within acme_policy_decide. */
  ASSERT_EQ(r[0].done + r[1].done + r[2].done + d[0].done + d[1].done, 0);
  /* Not UV_RUN_DEFAULT: the client's idle keep-alive connection would hold
   * the loop until its own timeout. */
  while (r[0].done + r[1].done + r[2].done + d[0].done + d[1].done < 5) {
    uv_run(&fx.loop, UV_RUN_ONCE);
  }
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(r[i].done, 1);
    ASSERT_EQ(r[i].allowed, ACME_POLICY_ALLOWED);
  }
  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(d[i].done, 1);
    ASSERT_STR_EQ(d[i].reason, "ask refused: 403");
  }
  ASSERT_EQ(atomic_load(&fx.srv.requests), 2);
  acme_policy_stats_t st;
  acme_policy_stats(fx.p, &st);
  ASSERT_UEQ(st.ask_coalesced, 3);
  ASSERT_UEQ(st.ask_requests, 2);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_ask_unreachable(void) {
  conf_on_demand_t od = od_base();
  fixture_t fx;
  ASSERT_EQ(fx_setup(&fx, &od, "/ask", 1), 0);
  res_t r;
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "a.example.com", "192.0.2.1", 1, 0), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_STORED_ONLY);
  ASSERT_STR_EQ(r.reason, "ask unreachable; serving the stored certificate");
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "a.example.com", "192.0.2.1", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_REFUSED);
  ASSERT_STR_EQ(r.reason, "ask unreachable");
  /* Neither cached nor remembered as a refusal: asked again each time. */
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "a.example.com", "192.0.2.1", 0, 1), 0);
  ASSERT_STR_EQ(r.reason, "ask unreachable");
  acme_policy_stats_t st;
  acme_policy_stats(fx.p, &st);
  ASSERT_UEQ(st.ask_requests, 3);
  ASSERT_UEQ(st.ask_unreachable, 3);
  ASSERT_UEQ(st.allowed_stored_only, 1);
  ASSERT_UEQ(st.refused_ask_unreachable, 2);
  ASSERT_UEQ(st.num_negative, 0);
  ASSERT_UEQ(st.num_ask_cached, 0);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_ask_5xx_is_unreachable(void) {
  conf_on_demand_t od = od_base();
  fixture_t fx;
  ASSERT_EQ(fx_setup(&fx, &od, "/ask", 0), 0);
  res_t r;
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "boom.example.com", NULL, 1, 0), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_STORED_ONLY);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "boom.example.com", NULL, 0, 0), 0);
  ASSERT_STR_EQ(r.reason, "ask unreachable");
  ASSERT_EQ(atomic_load(&fx.srv.requests), 2);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_negative_cache(void) {
  conf_on_demand_t od = od_base();
  od.ask_negative_ttl_ms = 1000; /* shorter than negative_ttl */
  fixture_t fx;
  ASSERT_EQ(fx_setup(&fx, &od, "/ask", 0), 0);
  res_t r;
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "deny.example.com", NULL, 0, 1), 0);
  ASSERT_STR_EQ(r.reason, "ask refused: 403");
  fake_now += 2000; /* the ask cache forgot; the negative cache did not */
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "deny.example.com", NULL, 1, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_REFUSED);
  ASSERT_STR_EQ(r.reason, "recently refused: ask refused: 403");
  ASSERT_EQ(atomic_load(&fx.srv.requests), 1);
  fake_now += od.negative_ttl_ms;
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "deny.example.com", NULL, 0, 1), 0);
  ASSERT_STR_EQ(r.reason, "ask refused: 403");
  ASSERT_EQ(atomic_load(&fx.srv.requests), 2);
  acme_policy_stats_t st;
  acme_policy_stats(fx.p, &st);
  ASSERT_UEQ(st.refused_negative_cache, 1);
  ASSERT_UEQ(st.refused_ask, 2);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

/* ---- rate limits ---- */

static void test_rate_per_domain(void) {
  conf_on_demand_t od = od_base();
  od.allow = ALLOW_STAR;
  od.num_allow = 1;
  od.rate_per_domain = (conf_rate_t){2, 3600000};
  fixture_t fx;
  ASSERT_EQ(fx_setup(&fx, &od, NULL, 0), 0);
  res_t r;
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "a.example.co.uk", "192.0.2.1", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "b.example.co.uk", "192.0.2.2", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "c.example.co.uk", "192.0.2.3", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_REFUSED);
  ASSERT_STR_EQ(r.reason, "rate limit per_domain (2/1h) for example.co.uk");
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "c.example.co.uk", "192.0.2.4", 0, 1), 0);
  ASSERT_STR_EQ(r.reason, "recently refused: rate limit per_domain (2/1h) for example.co.uk");
  /* Other registered domains, and decisions that order nothing, pass. */
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "other.co.uk", "192.0.2.3", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "d.example.co.uk", "192.0.2.3", 1, 0), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  /* After half an hour one token is back. */
  fake_now += 1800000;
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "e.example.co.uk", "192.0.2.3", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "f.example.co.uk", "192.0.2.3", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_REFUSED);
  /* A full bucket is dropped: the map does not keep idle domains. */
  acme_policy_stats_t st;
  acme_policy_stats(fx.p, &st);
  ASSERT_UEQ(st.num_domain_buckets, 2);
  ASSERT_UEQ(st.refused_rate_domain, 2);
  fake_now += 3600000;
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "g.other2.com", NULL, 0, 1), 0);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "h.other3.com", NULL, 0, 1), 0);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "i.other4.com", NULL, 0, 1), 0);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "j.other5.com", NULL, 0, 1), 0);
  acme_policy_stats(fx.p, &st);
  ASSERT_TRUE(st.num_domain_buckets <= 4); /* the refilled ones were swept */
  ASSERT_EQ(fx_teardown(&fx), 0);
}

/* A reload replaces the policy: the buckets and counters carry over to the
 * next one, except a bucket whose rate changed, which starts full. */
static void test_limits_carry_over(void) {
  conf_on_demand_t od = od_base();
  od.allow = ALLOW_STAR;
  od.num_allow = 1;
  od.rate_per_domain = (conf_rate_t){2, 3600000};
  fx_limits = acme_policy_limits_new();
  fixture_t fx;
  res_t r;
  ASSERT_EQ(fx_setup(&fx, &od, NULL, 0), 0);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "a.carry.test", NULL, 0, 1), 0);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "b.carry.test", NULL, 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  ASSERT_EQ(fx_teardown(&fx), 0);
  /* Same rate: still spent (the negative cache is the old policy's). */
  ASSERT_EQ(fx_setup(&fx, &od, NULL, 0), 0);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "c.carry.test", NULL, 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_REFUSED);
  ASSERT_STR_EQ(r.reason, "rate limit per_domain (2/1h) for carry.test");
  acme_policy_stats_t st;
  acme_policy_stats(fx.p, &st);
  ASSERT_UEQ(st.allowed, 2);
  ASSERT_UEQ(st.refused_rate_domain, 1);
  ASSERT_EQ(fx_teardown(&fx), 0);
  /* A new rate: a fresh bucket at that rate. */
  od.rate_per_domain = (conf_rate_t){3, 3600000};
  ASSERT_EQ(fx_setup(&fx, &od, NULL, 0), 0);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "d.carry.test", NULL, 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  ASSERT_EQ(fx_teardown(&fx), 0);
  acme_policy_limits_free(fx_limits);
  fx_limits = NULL;
}

static void test_rate_per_client_ip(void) {
  conf_on_demand_t od = od_base();
  od.allow = ALLOW_STAR;
  od.num_allow = 1;
  od.rate_per_client_ip = (conf_rate_t){2, 60000};
  fixture_t fx;
  ASSERT_EQ(fx_setup(&fx, &od, NULL, 0), 0);
  res_t r;
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "a.one.test", "192.0.2.1", 0, 1), 0);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "b.two.test", "192.0.2.1", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "c.three.test", "192.0.2.1", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_REFUSED);
  ASSERT_STR_EQ(r.reason, "rate limit per_client_ip (2/1m) for 192.0.2.1");
  /* Not held against the name: another client gets it. v4-mapped is v4. */
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "c.three.test", "192.0.2.2", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "d.four.test", "::ffff:192.0.2.1", 0, 1), 0);
  ASSERT_STR_EQ(r.reason, "rate limit per_client_ip (2/1m) for 192.0.2.1");
  /* IPv6 clients share one bucket per /64. */
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "e.five.test", "2001:db8:1:2::5", 0, 1), 0);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "f.six.test", "2001:db8:1:2:ffff::6", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "g.seven.test", "2001:db8:1:2::7", 0, 1), 0);
  ASSERT_STR_EQ(r.reason, "rate limit per_client_ip (2/1m) for 2001:db8:1:2::/64");
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "g.seven.test", "2001:db8:1:3::7", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  /* No client address: no per-IP limit. */
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "h.eight.test", NULL, 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  fake_now += 30000;
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "i.nine.test", "192.0.2.1", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  acme_policy_stats_t st;
  acme_policy_stats(fx.p, &st);
  ASSERT_UEQ(st.refused_rate_client_ip, 3);
  ASSERT_UEQ(st.num_negative, 0);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

static void test_rate_global(void) {
  conf_on_demand_t od = od_base();
  od.allow = ALLOW_STAR;
  od.num_allow = 1;
  od.rate_global = (conf_rate_t){2, 3 * 3600000};
  od.rate_per_domain = (conf_rate_t){1, 24 * 3600000};
  fixture_t fx;
  ASSERT_EQ(fx_setup(&fx, &od, NULL, 0), 0);
  res_t r;
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "a.one.test", "192.0.2.1", 0, 1), 0);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "a.two.test", "192.0.2.1", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "a.three.test", "192.0.2.1", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_REFUSED);
  ASSERT_STR_EQ(r.reason, "rate limit global (2/3h)");
  /* The global refusal did not charge three.test's own bucket. */
  fake_now += 3 * 3600000 / 2;
  ASSERT_EQ(decide(&fx.loop, fx.p, &r, "b.three.test", "192.0.2.1", 0, 1), 0);
  ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
  acme_policy_stats_t st;
  acme_policy_stats(fx.p, &st);
  ASSERT_UEQ(st.refused_rate_global, 1);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

/* Every map stays within its bound however many keys arrive. */
static void test_maps_bounded(void) {
  conf_on_demand_t od = od_base();
  od.allow = ALLOW_STAR;
  od.num_allow = 1;
  od.rate_per_client_ip = (conf_rate_t){1, 3600000};
  od.rate_per_domain = (conf_rate_t){1, 3600000};
  fixture_t fx;
  ASSERT_EQ(fx_setup(&fx, &od, NULL, 0), 0);
  acme__policy_set_map_cap(fx.p, 3);
  res_t r;
  char name[64], ip[32];
  for (int i = 0; i < 10; i++) {
    snprintf(name, sizeof(name), "www.d%d.test", i);
    snprintf(ip, sizeof(ip), "192.0.2.%d", i);
    ASSERT_EQ(decide(&fx.loop, fx.p, &r, name, ip, 0, 1), 0);
    ASSERT_EQ(r.allowed, ACME_POLICY_ALLOWED);
    /* A second name of the same domain is refused and remembered. */
    snprintf(name, sizeof(name), "api.d%d.test", i);
    snprintf(ip, sizeof(ip), "198.51.100.%d", i);
    ASSERT_EQ(decide(&fx.loop, fx.p, &r, name, ip, 0, 1), 0);
    ASSERT_EQ(r.allowed, ACME_POLICY_REFUSED);
  }
  acme_policy_stats_t st;
  acme_policy_stats(fx.p, &st);
  ASSERT_UEQ(st.num_ip_buckets, 3);
  ASSERT_UEQ(st.num_domain_buckets, 3);
  ASSERT_UEQ(st.num_negative, 3);
  ASSERT_UEQ(st.allowed, 10);
  ASSERT_UEQ(st.refused_rate_domain, 10);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

/* A callback that decides again is answered on a later loop turn. */
typedef struct {
  acme_policy_t *p;
  int depth;
  res_t last;
} chain_t;

static void on_chain(void *arg, int allowed, const char *reason) {
  chain_t *c = arg;
  on_res(&c->last, allowed, reason);
  if (++c->depth < 3) {
    int before = c->last.done;
    acme_policy_decide(c->p, "a.example.com", NULL, 0, 0, on_chain, c);
    if (c->last.done != before) c->depth = 100; /* re-entered */
  }
}

static void test_decide_from_callback(void) {
  conf_on_demand_t od = od_base();
  od.allow = ALLOW_STAR;
  od.num_allow = 1;
  fixture_t fx;
  ASSERT_EQ(fx_setup(&fx, &od, NULL, 0), 0);
  chain_t c = {fx.p, 0, {0}};
  ASSERT_EQ(acme_policy_decide(fx.p, "a.example.com", NULL, 0, 0, on_chain, &c), 0);
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  ASSERT_EQ(c.depth, 3);
  ASSERT_EQ(c.last.done, 3);
  ASSERT_EQ(c.last.allowed, ACME_POLICY_ALLOWED);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

/* ---- teardown ---- */

typedef struct {
  acme_policy_t *p;
  res_t *r;
} free_in_cb_t;

static void on_res_free(void *arg, int allowed, const char *reason) {
  free_in_cb_t *f = arg;
  on_res(f->r, allowed, reason);
  acme_policy_free(f->p);
}

static void test_free_in_flight(void) {
  conf_on_demand_t od = od_base();
  fixture_t fx;
  ASSERT_EQ(fx_setup(&fx, &od, "/ask", 0), 0);
  res_t asked, queued;
  memset(&asked, 0, sizeof(asked));
  memset(&queued, 0, sizeof(queued));
  ASSERT_EQ(acme_policy_decide(fx.p, "a.example.com", NULL, 0, 1, on_res, &asked), 0);
  ASSERT_EQ(acme_policy_decide(fx.p, "-bad", NULL, 0, 1, on_res, &queued), 0);
  acme_policy_free(fx.p);
  fx.p = NULL;
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  ASSERT_EQ(asked.done, 1);
  ASSERT_EQ(asked.allowed, UV_ECANCELED);
  ASSERT_EQ(queued.done, 1);
  ASSERT_EQ(queued.allowed, UV_ECANCELED);
  ASSERT_EQ(fx_teardown(&fx), 0);

  /* Freed from a callback: the decisions after it are cancelled. */
  od = od_base();
  ASSERT_EQ(fx_setup(&fx, &od, "/ask", 0), 0);
  res_t first, later, waiting;
  memset(&later, 0, sizeof(later));
  memset(&waiting, 0, sizeof(waiting));
  free_in_cb_t f = {fx.p, &first};
  memset(&first, 0, sizeof(first));
  ASSERT_EQ(acme_policy_decide(fx.p, "-one", NULL, 0, 1, on_res_free, &f), 0);
  ASSERT_EQ(acme_policy_decide(fx.p, "-two", NULL, 0, 1, on_res, &later), 0);
  ASSERT_EQ(acme_policy_decide(fx.p, "w.example.com", NULL, 0, 1, on_res, &waiting), 0);
  fx.p = NULL;
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  ASSERT_EQ(first.done, 1);
  ASSERT_EQ(first.allowed, ACME_POLICY_REFUSED);
  ASSERT_EQ(later.done, 1);
  ASSERT_EQ(later.allowed, UV_ECANCELED);
  ASSERT_EQ(waiting.done, 1);
  ASSERT_EQ(waiting.allowed, UV_ECANCELED);
  ASSERT_EQ(fx_teardown(&fx), 0);
}

int main(void) {
  RUN(test_precheck_table);
  RUN(test_registered_domain);
  RUN(test_bucket_math);
  RUN(test_map_bounds);
  RUN(test_decide_allow_list);
  RUN(test_ask_allow_and_refuse);
  RUN(test_ask_url_without_query);
  RUN(test_ask_cache);
  RUN(test_ask_coalesced);
  RUN(test_ask_unreachable);
  RUN(test_ask_5xx_is_unreachable);
  RUN(test_negative_cache);
  RUN(test_rate_per_domain);
  RUN(test_rate_per_client_ip);
  RUN(test_limits_carry_over);
  RUN(test_rate_global);
  RUN(test_maps_bounded);
  RUN(test_decide_from_callback);
  RUN(test_free_in_flight);
  TEST_EXIT();
}
