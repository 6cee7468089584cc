/* test_endpoints.c: how a DNS answer maps onto a name's endpoint slots
 * (proxy/endpoints.c): an address keeps its slot (and health) across
 * answers, new ones take free slots, gone ones stop being live, hostile
 * answers (duplicates, 0 or 64+ addresses) stay bounded. */
#include <arpa/inet.h>
#include <netdb.h>

#include "proxy/upstream.h"
#include "tests/unit/test.h"

static struct sockaddr_storage v4(const char *ip, unsigned port) {
  struct sockaddr_storage ss = {0};
  struct sockaddr_in *s = (struct sockaddr_in *)&ss;
  s->sin_family = AF_INET;
  s->sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, ip, &s->sin_addr);
  return ss;
}

static struct sockaddr_storage v6(const char *ip, unsigned port) {
  struct sockaddr_storage ss = {0};
  struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
  s->sin6_family = AF_INET6;
  s->sin6_port = htons((uint16_t)port);
  inet_pton(AF_INET6, ip, &s->sin6_addr);
  return ss;
}

static void test_assign(void) {
  struct sockaddr_storage cur[3] = {v4("10.0.0.1", 80), v4("10.0.0.2", 80), v6("::1", 80)};
  int slot[8];
  /* The same set in another order keeps every slot. */
  struct sockaddr_storage same[3] = {v6("::1", 80), v4("10.0.0.2", 80), v4("10.0.0.1", 80)};
  ASSERT_UEQ(px_ep_assign(cur, 3, 32, same, 3, slot), 3);
  ASSERT_EQ(slot[0], 2);
  ASSERT_EQ(slot[1], 1);
  ASSERT_EQ(slot[2], 0);
  /* A new address takes a never-used slot; duplicates share one. */
  struct sockaddr_storage more[3] = {v4("10.0.0.9", 80), v4("10.0.0.1", 80), v4("10.0.0.9", 80)};
  ASSERT_UEQ(px_ep_assign(cur, 3, 32, more, 3, slot), 4);
  ASSERT_EQ(slot[0], 3);
  ASSERT_EQ(slot[1], 0);
  ASSERT_EQ(slot[2], 3);
  /* A port is part of the address. */
  struct sockaddr_storage port[1] = {v4("10.0.0.1", 81)};
  ASSERT_UEQ(px_ep_assign(cur, 3, 32, port, 1, slot), 4);
  ASSERT_EQ(slot[0], 3);
  /* No free slot left: a slot whose address left is reused. */
  struct sockaddr_storage full[2] = {v4("10.0.0.7", 80), v4("10.0.0.2", 80)};
  ASSERT_UEQ(px_ep_assign(cur, 3, 3, full, 2, slot), 3);
  ASSERT_EQ(slot[0], 0);
  ASSERT_EQ(slot[1], 1);
  /* An empty answer changes nothing. */
  ASSERT_UEQ(px_ep_assign(cur, 3, 32, NULL, 0, slot), 3);
}

static void test_cap(void) {
  struct sockaddr_storage next[70];
  int slot[70];
  for (int i = 0; i < 70; i++) {
    char ip[32];
    snprintf(ip, sizeof(ip), "10.1.0.%d", i + 1);
    next[i] = v4(ip, 443);
  }
  ASSERT_UEQ(px_ep_assign(NULL, 0, PX_MAX_ENDPOINTS, next, 70, slot), PX_MAX_ENDPOINTS);
  for (int i = 0; i < 70; i++) ASSERT_EQ(slot[i], i < PX_MAX_ENDPOINTS ? i : -1);
  /* A cap beyond PX_MAX_ENDPOINTS is held to it. */
  ASSERT_UEQ(px_ep_assign(NULL, 0, 1000, next, 70, slot), PX_MAX_ENDPOINTS);
}

/* A target with |n| slots, as gen.c builds one for a name. */
typedef struct {
  conf_addr_t conf;
  conf_upstream_group_t gconf;
  px_group_t group;
  px_target_t t;
  px_addr_t eps[PX_MAX_ENDPOINTS];
} fixture_t;

static void fixture_init(fixture_t *f) {
  memset(f, 0, sizeof(*f));
  f->conf.text = (char *)"backend.test:80";
  f->group.conf = &f->gconf;
  f->t.conf = &f->conf;
  f->t.group = &f->group;
  f->t.is_name = 1;
  pthread_mutex_init(&f->t.sa_lock, NULL);
  f->t.eps = f->eps;
  f->t.num_eps = PX_MAX_ENDPOINTS;
  for (size_t i = 0; i < PX_MAX_ENDPOINTS; i++) {
    f->eps[i].target = &f->t;
    f->eps[i].conf = &f->conf;
    f->eps[i].group = &f->group;
    f->eps[i].index = i;
  }
}

static void test_install(void) {
  fixture_t f;
  fixture_init(&f);
  struct sockaddr_storage a[3] = {v4("127.0.0.2", 80), v4("127.0.0.3", 80), v6("::1", 80)};
  ASSERT_EQ(px_target_install(&f.t, a, 3), 1);
  ASSERT_UEQ(atomic_load(&f.t.num_used), 3);
  ASSERT_STR_EQ(f.eps[2].text, "[::1]:80");
  ASSERT_STR_EQ(f.eps[0].text, "127.0.0.2:80");
  /* Health of an address that stays survives; the same answer is no change. */
  atomic_store(&f.eps[1].down_until_ms, 12345);
  unsigned seq1 = atomic_load(&f.eps[1].seq);
  ASSERT_EQ(px_target_install(&f.t, a, 3), 0);
  ASSERT_UEQ(atomic_load(&f.eps[1].down_until_ms), 12345);
  /* One leaves: its slot stops being live, keeps its address. */
  ASSERT_EQ(px_target_install(&f.t, a, 2), 1);
  ASSERT_EQ(atomic_load(&f.eps[2].live), 0);
  ASSERT_EQ(atomic_load(&f.eps[1].live), 1);
  ASSERT_UEQ(atomic_load(&f.eps[1].seq), seq1);
  struct sockaddr_storage out;
  ASSERT_EQ(px_addr_sockaddr(&f.eps[2], &out, NULL), -1);
  ASSERT_EQ(px_addr_sockaddr(&f.eps[0], &out, NULL), 0);
  ASSERT_TRUE(px_sa_equal(&out, &a[0]));
  /* It comes back into its old slot. */
  ASSERT_EQ(px_target_install(&f.t, a, 3), 1);
  ASSERT_EQ(atomic_load(&f.eps[2].live), 1);
  ASSERT_UEQ(atomic_load(&f.t.num_used), 3);
  pthread_mutex_destroy(&f.t.sa_lock);
}

static void test_addrinfo(void) {
  fixture_t f;
  fixture_init(&f);
  /* An answer with no address keeps the endpoints. */
  struct sockaddr_storage a[1] = {v4("127.0.0.2", 80)};
  px_target_install(&f.t, a, 1);
  struct addrinfo unix_only = {0};
  unix_only.ai_family = AF_UNIX;
  ASSERT_UEQ(px_target_from_addrinfo(&f.t, &unix_only, 1), 0);
  ASSERT_UEQ(px_target_from_addrinfo(&f.t, NULL, 1), 0);
  ASSERT_EQ(atomic_load(&f.eps[0].live), 1);
  /* 64+ addresses: the first PX_MAX_ENDPOINTS are used. */
  struct addrinfo ai[80];
  struct sockaddr_in sin[80];
  for (int i = 0; i < 80; i++) {
    memset(&ai[i], 0, sizeof(ai[i]));
    memset(&sin[i], 0, sizeof(sin[i]));
    sin[i].sin_family = AF_INET;
    sin[i].sin_port = htons(80);
    sin[i].sin_addr.s_addr = htonl(0x0a020000u + (unsigned)i);
    ai[i].ai_family = AF_INET;
    ai[i].ai_addr = (struct sockaddr *)&sin[i];
    ai[i].ai_addrlen = sizeof(sin[i]);
    ai[i].ai_next = i + 1 < 80 ? &ai[i + 1] : NULL;
  }
  ASSERT_UEQ(px_target_from_addrinfo(&f.t, ai, 0), 80);
  ASSERT_UEQ(atomic_load(&f.t.num_used), PX_MAX_ENDPOINTS);
  size_t live = 0;
  for (size_t i = 0; i < PX_MAX_ENDPOINTS; i++) live += (size_t)atomic_load(&f.eps[i].live);
  ASSERT_UEQ(live, PX_MAX_ENDPOINTS);
  /* The old address's slot was reused for a new one: its seq moved. */
  ASSERT_TRUE(atomic_load(&f.eps[0].seq) >= 2);
  pthread_mutex_destroy(&f.t.sa_lock);
}

int main(void) {
  RUN(test_assign);
  RUN(test_cap);
  RUN(test_install);
  RUN(test_addrinfo);
  TEST_EXIT();
}
