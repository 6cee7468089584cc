/* test_dnscheck.c: acme/dnscheck.c — the query on the wire, the parser of
 * answers against crafted (and hostile) packets, the resolver list from
 * the config and from a resolv.conf, and the asynchronous check against a
 * UDP DNS server in the test's own loop. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <uv.h>

#include "acme/dnscheck.h"
#include "common/common.h"
#include "test.h"

#define NAME "_acme-challenge.a.test."
#define VALUE "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"

/* ---- a packet builder ---- */

typedef struct {
  uint8_t b[8192];
  size_t n;
} pkt_t;

static void put8(pkt_t *p, unsigned v) { p->b[p->n++] = (uint8_t)v; }
static void put16(pkt_t *p, unsigned v) {
  put8(p, v >> 8);
  put8(p, v & 0xff);
}
static void put32(pkt_t *p, uint32_t v) {
  put16(p, v >> 16);
  put16(p, v & 0xffff);
}
static void put_bytes(pkt_t *p, const void *d, size_t n) {
  memcpy(p->b + p->n, d, n);
  p->n += n;
}
/* put_name writes a dotted name uncompressed. */
static void put_name(pkt_t *p, const char *name) {
  while (*name) {
    const char *dot = strchr(name, '.');
    size_t len = dot ? (size_t)(dot - name) : strlen(name);
    put8(p, (unsigned)len);
    put_bytes(p, name, len);
    name += len + (dot != NULL);
  }
  put8(p, 0);
}
static void header(pkt_t *p, uint16_t id, unsigned flags, unsigned qd, unsigned an) {
  p->n = 0;
  put16(p, id);
  put16(p, flags);
  put16(p, qd);
  put16(p, an);
  put16(p, 0);
  put16(p, 0);
}
static void question(pkt_t *p, const char *name) {
  put_name(p, name);
  put16(p, 16);
  put16(p, 1);
}
/* rr_head writes TYPE, CLASS IN, TTL and RDLENGTH after an owner name. */
static void rr_head(pkt_t *p, unsigned type, unsigned rdlen) {
  put16(p, type);
  put16(p, 1);
  put32(p, 60);
  put16(p, rdlen);
}
/* txt_rr writes a TXT record owned by the question (pointer 0xc00c). */
static void txt_rr(pkt_t *p, const char *s) {
  put16(p, 0xc00c);
  size_t len = strlen(s);
  rr_head(p, 16, (unsigned)(len + 1));
  put8(p, (unsigned)len);
  put_bytes(p, s, len);
}

static acme_dns_result_t parse(acme_dns_answer_t *ans, const pkt_t *p, uint16_t id) {
  return acme__dns_parse_txt(ans, p->b, p->n, id, NAME);
}

/* ---- the query ---- */

static void test_query(void) {
  uint8_t q[512];
  size_t n = 0;
  ASSERT_EQ(acme__dns_query(q, sizeof(q), &n, 0x1234, "_acme-challenge.A.test."), 0);
  static const uint8_t want[] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
                                 15, '_', 'a', 'c', 'm', 'e', '-', 'c', 'h', 'a', 'l', 'l', 'e',
                                 'n', 'g', 'e', 1, 'a', 4, 't', 'e', 's', 't', 0, 0, 16, 0, 1};
  ASSERT_EQ(n, sizeof(want));
  ASSERT_EQ(memcmp(q, want, n), 0);
  /* Without the root dot: the same question. */
  uint8_t q2[512];
  size_t n2 = 0;
  ASSERT_EQ(acme__dns_query(q2, sizeof(q2), &n2, 0x1234, "_acme-challenge.a.test"), 0);
  ASSERT_EQ(n2, n);
  ASSERT_EQ(memcmp(q2, want, n), 0);
  /* Not names, or no room. */
  char long_label[80];
  memset(long_label, 'a', 64);
  strcpy(long_label + 64, ".test");
  char long_name[300];
  for (int i = 0; i < 150; i++) memcpy(long_name + 2 * i, "a.", 2);
  long_name[299] = '\0';
  long_name[298] = 'a';
  const char *bad[] = {"", ".", "a..test", ".a.test", long_label, long_name};
  for (size_t i = 0; i < GH_ARRAY_LEN(bad); i++) {
    ASSERT_EQ(acme__dns_query(q, sizeof(q), &n, 1, bad[i]), UV_EINVAL);
  }
  ASSERT_EQ(acme__dns_query(q, 20, &n, 1, NAME), UV_EINVAL);
}

/* ---- answers ---- */

static void test_good_answer(void) {
  pkt_t p;
  header(&p, 0xbeef, 0x8180, 1, 3);
  question(&p, NAME);
  txt_rr(&p, "stale-value");
  /* One record of two character-strings: they are concatenated. */
  put16(&p, 0xc00c);
  rr_head(&p, 16, 1 + 20 + 1 + 23);
  put8(&p, 20);
  put_bytes(&p, VALUE, 20);
  put8(&p, 23);
  put_bytes(&p, &VALUE[20], 23);
  /* An A record for the name is skipped. */
  put16(&p, 0xc00c);
  rr_head(&p, 1, 4);
  put32(&p, 0x7f000001);
  acme_dns_answer_t ans;
  ASSERT_EQ(parse(&ans, &p, 0xbeef), ACME_DNS_ANSWER);
  ASSERT_EQ(ans.num_txts, 2);
  ASSERT_EQ(ans.txts[0].len, 11);
  ASSERT_STR_EQ(ans.txts[0].data, "stale-value");
  ASSERT_EQ(ans.txts[1].len, strlen(VALUE));
  ASSERT_STR_EQ(ans.txts[1].data, VALUE);
  acme__dns_answer_cleanup(&ans);
  ASSERT_EQ(ans.num_txts, 0);
}

static void test_empty_answer_and_case(void) {
  /* The resolver may echo the question in another case (0x20). */
  pkt_t p;
  header(&p, 7, 0x8180, 1, 0);
  question(&p, "_ACME-Challenge.A.TEST");
  acme_dns_answer_t ans;
  ASSERT_EQ(parse(&ans, &p, 7), ACME_DNS_ANSWER);
  ASSERT_EQ(ans.num_txts, 0);
  acme__dns_answer_cleanup(&ans);
  /* An uncompressed owner in another case is ours too; an empty TXT
   * rdata is an empty record. */
  header(&p, 7, 0x8180, 1, 2);
  question(&p, NAME);
  put_name(&p, "_acme-challenge.A.Test.");
  rr_head(&p, 16, 4);
  put8(&p, 3);
  put_bytes(&p, "abc", 3);
  put16(&p, 0xc00c);
  rr_head(&p, 16, 0);
  ASSERT_EQ(parse(&ans, &p, 7), ACME_DNS_ANSWER);
  ASSERT_EQ(ans.num_txts, 2);
  ASSERT_STR_EQ(ans.txts[0].data, "abc");
  ASSERT_EQ(ans.txts[1].len, 0);
  acme__dns_answer_cleanup(&ans);
}

static void test_cname_chain(void) {
  /* _acme-challenge.a.test CNAME x.acme.test (target compressed against
   * the owner of the next record would be forward: use the question). */
  pkt_t p;
  header(&p, 9, 0x8180, 1, 3);
  question(&p, NAME);
  size_t target_at = p.n + 12; /* the target name's offset in the message */
  put16(&p, 0xc00c);
  rr_head(&p, 5, 13);
  put8(&p, 1);
  put8(&p, 'x');
  put8(&p, 4);
  put_bytes(&p, "acme", 4);
  put8(&p, 4);
  put_bytes(&p, "test", 4);
  put8(&p, 0);
  /* A TXT record of an unrelated name is not ours. */
  put_name(&p, "other.test.");
  rr_head(&p, 16, 6);
  put8(&p, 5);
  put_bytes(&p, "wrong", 5);
  /* The TXT record of the alias target, its owner a pointer to it. */
  put16(&p, 0xc000 | (unsigned)target_at);
  rr_head(&p, 16, (unsigned)strlen(VALUE) + 1);
  put8(&p, (unsigned)strlen(VALUE));
  put_bytes(&p, VALUE, strlen(VALUE));
  acme_dns_answer_t ans;
  ASSERT_EQ(parse(&ans, &p, 9), ACME_DNS_ANSWER);
  ASSERT_EQ(ans.num_txts, 1);
  ASSERT_STR_EQ(ans.txts[0].data, VALUE);
  acme__dns_answer_cleanup(&ans);
}

static void test_compression_loops(void) {
  acme_dns_answer_t ans;
  pkt_t p;
  /* An owner that points at itself. */
  header(&p, 1, 0x8180, 1, 1);
  question(&p, NAME);
  put16(&p, 0xc000 | (unsigned)p.n);
  rr_head(&p, 16, 0);
  ASSERT_EQ(parse(&ans, &p, 1), ACME_DNS_MALFORMED);
  /* Forward pointer. */
  header(&p, 1, 0x8180, 1, 1);
  question(&p, NAME);
  put16(&p, 0xc000 | (unsigned)(p.n + 2));
  rr_head(&p, 16, 0);
  ASSERT_EQ(parse(&ans, &p, 1), ACME_DNS_MALFORMED);
  /* Two names pointing at each other: label, then a pointer back to the
   * start of the first (which is before the current label sequence only
   * for the first jump). */
  header(&p, 1, 0x8180, 1, 1);
  question(&p, NAME);
  size_t a = p.n;
  put8(&p, 1);
  put8(&p, 'x');
  put16(&p, 0xc000 | (unsigned)a);
  rr_head(&p, 16, 0);
  ASSERT_EQ(parse(&ans, &p, 1), ACME_DNS_MALFORMED);
  /* A pointer in the question to beyond the message. */
  header(&p, 1, 0x8180, 1, 0);
  put16(&p, 0xffff);
  put16(&p, 16);
  put16(&p, 1);
  ASSERT_EQ(parse(&ans, &p, 1), ACME_DNS_MALFORMED);
  /* A long chain of backward pointers, each one label: the name grows
   * past 255 bytes or the jumps past the bound, never a crash. */
  header(&p, 1, 0x8180, 1, 2);
  question(&p, NAME);
  /* The chain hides in the rdata of a record of another type. */
  put16(&p, 0xc00c);
  rr_head(&p, 99, 200 * 4);
  size_t prev = 12;
  for (int i = 0; i < 200; i++) {
    size_t here = p.n;
    put8(&p, 1);
    put8(&p, 'y');
    put16(&p, 0xc000 | (unsigned)prev);
    prev = here;
  }
  put16(&p, 0xc000 | (unsigned)prev);
  rr_head(&p, 16, 0);
  ASSERT_EQ(parse(&ans, &p, 1), ACME_DNS_MALFORMED);
  /* Obsolete label types 0x40 and 0x80. */
  header(&p, 1, 0x8180, 1, 1);
  question(&p, NAME);
  put8(&p, 0x41);
  rr_head(&p, 16, 0);
  ASSERT_EQ(parse(&ans, &p, 1), ACME_DNS_MALFORMED);
  acme__dns_answer_cleanup(&ans);
}

static void test_truncated(void) {
  acme_dns_answer_t ans;
  pkt_t p;
  /* TC: "not yet", whatever follows. */
  header(&p, 3, 0x8380, 1, 5);
  question(&p, NAME);
  ASSERT_EQ(parse(&ans, &p, 3), ACME_DNS_TRUNCATED);
  /* A message cut anywhere is malformed, never read past its end. */
  header(&p, 3, 0x8180, 1, 1);
  question(&p, NAME);
  txt_rr(&p, VALUE);
  for (size_t cut = 0; cut < p.n; cut++) {
    acme_dns_result_t r = acme__dns_parse_txt(&ans, p.b, cut, 3, NAME);
    ASSERT_TRUE(r == ACME_DNS_MALFORMED);
    ASSERT_EQ(ans.num_txts, 0);
  }
  ASSERT_EQ(acme__dns_parse_txt(&ans, p.b, p.n, 3, NAME), ACME_DNS_ANSWER);
  acme__dns_answer_cleanup(&ans);
  /* A character-string longer than its rdata. */
  header(&p, 3, 0x8180, 1, 1);
  question(&p, NAME);
  put16(&p, 0xc00c);
  rr_head(&p, 16, 3);
  put8(&p, 9);
  put_bytes(&p, "ab", 2);
  ASSERT_EQ(parse(&ans, &p, 3), ACME_DNS_MALFORMED);
}

static void test_not_ours(void) {
  acme_dns_answer_t ans;
  pkt_t p;
  header(&p, 0x1111, 0x8180, 1, 1);
  question(&p, NAME);
  txt_rr(&p, VALUE);
  ASSERT_EQ(parse(&ans, &p, 0x2222), ACME_DNS_MISMATCH); /* wrong id */
  header(&p, 0x1111, 0x0100, 1, 1); /* a query, not a response */
  question(&p, NAME);
  txt_rr(&p, VALUE);
  ASSERT_EQ(parse(&ans, &p, 0x1111), ACME_DNS_MISMATCH);
  header(&p, 0x1111, 0x8180, 1, 1); /* another question */
  question(&p, "_acme-challenge.b.test.");
  txt_rr(&p, VALUE);
  ASSERT_EQ(parse(&ans, &p, 0x1111), ACME_DNS_MISMATCH);
  header(&p, 0x1111, 0x8180, 1, 0); /* another type */
  put_name(&p, NAME);
  put16(&p, 1);
  put16(&p, 1);
  ASSERT_EQ(parse(&ans, &p, 0x1111), ACME_DNS_MISMATCH);
  header(&p, 0x1111, 0x8180, 2, 0); /* two questions */
  question(&p, NAME);
  question(&p, NAME);
  ASSERT_EQ(parse(&ans, &p, 0x1111), ACME_DNS_MISMATCH);
  ASSERT_EQ(acme__dns_parse_txt(&ans, p.b, 5, 0x1111, NAME), ACME_DNS_MALFORMED);
  acme__dns_answer_cleanup(&ans);
}

static void test_rcodes(void) {
  acme_dns_answer_t ans;
  pkt_t p;
  header(&p, 5, 0x8183, 1, 0);
  question(&p, NAME);
  ASSERT_EQ(parse(&ans, &p, 5), ACME_DNS_NXDOMAIN);
  ASSERT_EQ(ans.rcode, 3);
  header(&p, 5, 0x8182, 1, 0);
  question(&p, NAME);
  ASSERT_EQ(parse(&ans, &p, 5), ACME_DNS_RCODE);
  ASSERT_EQ(ans.rcode, 2);
  header(&p, 5, 0x8181, 0, 0); /* FORMERR without the question */
  ASSERT_EQ(parse(&ans, &p, 5), ACME_DNS_RCODE);
  ASSERT_EQ(ans.rcode, 1);
  acme__dns_answer_cleanup(&ans);
}

static void test_huge_counts(void) {
  acme_dns_answer_t ans;
  pkt_t p;
  /* 65535 answers announced, one present. */
  header(&p, 2, 0x8180, 1, 0xffff);
  question(&p, NAME);
  txt_rr(&p, VALUE);
  ASSERT_EQ(parse(&ans, &p, 2), ACME_DNS_MALFORMED);
  ASSERT_EQ(ans.num_txts, 0);
  header(&p, 2, 0x8180, 0xffff, 0);
  question(&p, NAME);
  ASSERT_EQ(parse(&ans, &p, 2), ACME_DNS_MISMATCH);
  /* More TXT records than are kept: the first ones are. */
  header(&p, 2, 0x8180, 1, 100);
  question(&p, NAME);
  for (int i = 0; i < 100; i++) txt_rr(&p, i == 99 ? VALUE : "x");
  ASSERT_EQ(parse(&ans, &p, 2), ACME_DNS_ANSWER);
  ASSERT_EQ(ans.num_txts, ACME_DNS_MAX_TXTS);
  acme__dns_answer_cleanup(&ans);
  /* Long records: 255-byte strings, many of them in one rdata. */
  header(&p, 2, 0x8180, 1, 1);
  question(&p, NAME);
  put16(&p, 0xc00c);
  rr_head(&p, 16, 20 * 256);
  for (int i = 0; i < 20; i++) {
    put8(&p, 255);
    memset(p.b + p.n, 'z', 255);
    p.n += 255;
  }
  ASSERT_EQ(parse(&ans, &p, 2), ACME_DNS_ANSWER);
  ASSERT_EQ(ans.num_txts, 1);
  ASSERT_EQ(ans.txts[0].len, 20 * 255);
  acme__dns_answer_cleanup(&ans);
}

/* ---- the resolvers ---- */

static void test_servers(void) {
  char path[] = "/tmp/gh-resolv-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_TRUE(fd >= 0);
  static const char text[] = "# generated\nsearch example.com\noptions ndots:2\n"
                             "nameserver 10.0.0.53\n  nameserver\t::1\nnameserver bogus\n"
                             "nameserver fe80::1%lo\n";
  ASSERT_EQ(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
  close(fd);
  conf_acme_t acme;
  memset(&acme, 0, sizeof(acme));
  char *err = NULL;
  acme_dns_server_t *s = NULL;
  size_t n = 0;
  ASSERT_EQ(acme__dns_servers(&err, &s, &n, &acme, path), 0);
  ASSERT_NULL(err);
  ASSERT_EQ(n, 3);
  ASSERT_STR_EQ(s[0].text, "10.0.0.53:53");
  ASSERT_EQ(s[0].addr.ss_family, AF_INET);
  ASSERT_STR_EQ(s[1].text, "[::1]:53");
  ASSERT_EQ(s[1].addr.ss_family, AF_INET6);
  ASSERT_STR_EQ(s[2].text, "[fe80::1%lo]:53");
  gh_free(s);
  /* The config's list wins over the file. */
  conf_addr_t addrs[2] = {{.text = "127.0.0.1:5353", .host = "127.0.0.1", .port = 5353},
                          {.text = "[::1]:53", .host = "::1", .port = 53}};
  acme.dns_resolvers = addrs;
  acme.num_dns_resolvers = 2;
  ASSERT_EQ(acme__dns_servers(&err, &s, &n, &acme, "/nonexistent"), 0);
  ASSERT_EQ(n, 2);
  ASSERT_STR_EQ(s[0].text, "127.0.0.1:5353");
  ASSERT_STR_EQ(s[1].text, "[::1]:53");
  gh_free(s);
  /* No nameserver, no file: an error that names the file. */
  acme.num_dns_resolvers = 0;
  fd = open(path, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(fd >= 0);
  ASSERT_EQ(write(fd, "search x\n", 9), 9);
  close(fd);
  ASSERT_EQ(acme__dns_servers(&err, &s, &n, &acme, path), UV_ENOENT);
  ASSERT_CONTAINS(err, path);
  ASSERT_CONTAINS(err, "names no nameserver");
  gh_free(err);
  unlink(path);
  ASSERT_TRUE(acme__dns_servers(&err, &s, &n, &acme, path) < 0);
  ASSERT_CONTAINS(err, path);
  gh_free(err);
}

/* ---- the check, against a DNS server in the loop ---- */

typedef struct {
  uv_loop_t loop;
  uv_udp_t srv;
  struct sockaddr_in addr;
  int queries;
  int rd; /* the RD bit of the last query */
  int visible_after; /* the value appears in answers from this query on; 0 = never */
  int mode;          /* 0: NXDOMAIN until visible; 1: silent; 2: CAA (caa_answer) */
  uint8_t buf[1024];
  /* the outcome */
  int called, status;
  char server[64], why[512];
  uint64_t elapsed;
} fx_t;

static void srv_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  fx_t *fx = h->data;
  *buf = uv_buf_init((char *)fx->buf, sizeof(fx->buf));
}

static void caa_answer(uv_udp_t *u, const uint8_t *q, size_t len, const struct sockaddr *from);
static void auth_answer(uv_udp_t *u, const uint8_t *q, size_t len, const struct sockaddr *from);
static unsigned query_question(char name[256], const uint8_t *q, size_t len);

static void srv_recv(uv_udp_t *u, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
                     unsigned flags) {
  fx_t *fx = u->data;
  if (nread <= 0 || from == NULL) return;
  fx->queries++;
  fx->rd = nread > 2 && (buf->base[2] & 1);
  if (fx->mode == 1) return;
  if (fx->mode == 2) {
    caa_answer(u, (const uint8_t *)buf->base, (size_t)nread, from);
    return;
  }
  if (fx->mode == 3) {
    auth_answer(u, (const uint8_t *)buf->base, (size_t)nread, from);
    return;
  }
  /* The query is 12 + question bytes; answer with the same id and question. */
  static pkt_t p;
  p.n = 0;
  put_bytes(&p, buf->base, (size_t)nread);
  int visible = fx->visible_after && fx->queries >= fx->visible_after;
  p.b[2] = 0x81;
  p.b[3] = visible ? 0x80 : 0x83;
  p.b[7] = visible ? 1 : 0;
  if (visible) {
    /* First a wrong-id copy, which must be ignored. */
    static pkt_t bogus;
    bogus = p;
    bogus.b[0] ^= 0xff;
    txt_rr(&bogus, VALUE);
    uv_buf_t bb = uv_buf_init((char *)bogus.b, (unsigned)bogus.n);
    uv_udp_try_send(u, &bb, 1, from);
    txt_rr(&p, VALUE);
  }
  uv_buf_t b = uv_buf_init((char *)p.b, (unsigned)p.n);
  uv_udp_try_send(u, &b, 1, from);
}

static void fx_init(fx_t *fx, int visible_after, int mode) {
  memset(fx, 0, sizeof(*fx));
  uv_loop_init(&fx->loop);
  uv_udp_init(&fx->loop, &fx->srv);
  fx->srv.data = fx;
  uv_ip4_addr("127.0.0.1", 0, &fx->addr);
  uv_udp_bind(&fx->srv, (const struct sockaddr *)&fx->addr, 0);
  int len = sizeof(fx->addr);
  uv_udp_getsockname(&fx->srv, (struct sockaddr *)&fx->addr, &len);
  uv_udp_recv_start(&fx->srv, srv_alloc, srv_recv);
  fx->visible_after = visible_after;
  fx->mode = mode;
}

static int fx_close(fx_t *fx) {
  uv_close((uv_handle_t *)&fx->srv, NULL);
  uv_run(&fx->loop, UV_RUN_DEFAULT);
  return uv_loop_close(&fx->loop);
}

static void on_checked(void *arg, int status, const acme_dns_server_t *server, uint64_t elapsed_ms,
                       const char *why) {
  fx_t *fx = arg;
  fx->called++;
  fx->status = status;
  fx->elapsed = elapsed_ms;
  snprintf(fx->server, sizeof(fx->server), "%s", server ? server->text : "");
  snprintf(fx->why, sizeof(fx->why), "%s", why ? why : "");
  /* The check is finished: stop the server so that the loop ends. */
  uv_udp_recv_stop(&fx->srv);
}

static void fx_server(fx_t *fx, acme_dns_server_t *s) {
  memset(s, 0, sizeof(*s));
  memcpy(&s->addr, &fx->addr, sizeof(fx->addr));
  snprintf(s->text, sizeof(s->text), "127.0.0.1:%u", (unsigned)ntohs(fx->addr.sin_port));
}

static void test_check_visible(void) {
  fx_t fx;
  fx_init(&fx, 3, 0);
  acme_dns_server_t s[2];
  fx_server(&fx, &s[1]);
  /* A first resolver that refuses (nothing listens on port 1). */
  uv_ip4_addr("127.0.0.1", 1, (struct sockaddr_in *)&s[0].addr);
  snprintf(s[0].text, sizeof(s[0].text), "127.0.0.1:1");
  acme_dnscheck_t *c = NULL;
  ASSERT_EQ(acme__dnscheck_start(&c, &fx.loop, s, 2, NAME, VALUE, 10000, 0, on_checked, &fx), 0);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(fx.called, 0); /* never from within start */
  while (!fx.called) uv_run(&fx.loop, UV_RUN_ONCE);
  ASSERT_EQ(fx.called, 1);
  ASSERT_EQ(fx.status, 0);
  ASSERT_STR_EQ(fx.server, s[1].text);
  ASSERT_EQ(fx.queries, 3);
  /* Two pauses: 100 ms then 200 ms. */
  ASSERT_TRUE(fx.elapsed >= 300);
  ASSERT_TRUE(fx.elapsed < 2000);
  ASSERT_EQ(fx_close(&fx), 0);
  ASSERT_EQ(fx.called, 1);
}

static void test_check_times_out(void) {
  fx_t fx;
  fx_init(&fx, 0, 0);
  acme_dns_server_t s;
  fx_server(&fx, &s);
  acme_dnscheck_t *c = NULL;
  uint64_t t0 = uv_hrtime() / 1000000;
  ASSERT_EQ(acme__dnscheck_start(&c, &fx.loop, &s, 1, NAME, VALUE, 500, 0, on_checked, &fx), 0);
  while (!fx.called) uv_run(&fx.loop, UV_RUN_ONCE);
  uint64_t took = uv_hrtime() / 1000000 - t0;
  ASSERT_EQ(fx.status, UV_ETIMEDOUT);
  ASSERT_STR_EQ(fx.server, "");
  char want[128];
  snprintf(want, sizeof(want), "%s: NXDOMAIN", s.text);
  ASSERT_STR_EQ(fx.why, want);
  ASSERT_TRUE(took >= 500 && took < 1500);
  ASSERT_TRUE(fx.queries >= 3); /* 0, 100, 300 ms: the pauses grow */
  ASSERT_TRUE(fx.queries <= 5);
  ASSERT_EQ(fx_close(&fx), 0);
}

static void test_check_silent_server(void) {
  /* A server that never answers: each query is given up at the deadline. */
  fx_t fx;
  fx_init(&fx, 0, 1);
  acme_dns_server_t s;
  fx_server(&fx, &s);
  acme_dnscheck_t *c = NULL;
  ASSERT_EQ(acme__dnscheck_start(&c, &fx.loop, &s, 1, NAME, VALUE, 300, 0, on_checked, &fx), 0);
  while (!fx.called) uv_run(&fx.loop, UV_RUN_ONCE);
  ASSERT_EQ(fx.status, UV_ETIMEDOUT);
  ASSERT_CONTAINS(fx.why, "no answer within");
  ASSERT_EQ(fx_close(&fx), 0);
}

static void test_check_cancel(void) {
  fx_t fx;
  fx_init(&fx, 0, 1);
  acme_dns_server_t s;
  fx_server(&fx, &s);
  acme_dnscheck_t *c = NULL;
  ASSERT_EQ(acme__dnscheck_start(&c, &fx.loop, &s, 1, NAME, VALUE, 10000, 0, on_checked, &fx), 0);
  uv_run(&fx.loop, UV_RUN_NOWAIT);
  acme__dnscheck_cancel(c);
  acme__dnscheck_cancel(NULL);
  ASSERT_EQ(fx_close(&fx), 0);
  ASSERT_EQ(fx.called, 0);
  /* Bad arguments: no callback, ever. */
  ASSERT_EQ(acme__dnscheck_start(&c, &fx.loop, &s, 0, NAME, VALUE, 100, 0, on_checked, &fx),
            UV_EINVAL);
  ASSERT_EQ(acme__dnscheck_start(&c, &fx.loop, &s, 1, "a..b", VALUE, 100, 0, on_checked, &fx),
            UV_EINVAL);
  ASSERT_NULL(c);
}

static void test_check_all_authoritative(void) {
  /* Every server must have the record; RD is clear; the success lists
   * them. The same server twice stands for two. */
  fx_t fx;
  fx_init(&fx, 2, 0);
  acme_dns_server_t s[2];
  fx_server(&fx, &s[0]);
  s[1] = s[0];
  acme_dnscheck_t *c = NULL;
  ASSERT_EQ(acme__dnscheck_start(&c, &fx.loop, s, 2, NAME, VALUE, 10000,
                                 ACME_DNSCHECK_ALL | ACME_DNSCHECK_NORECURSE, on_checked, &fx),
            0);
  while (!fx.called) uv_run(&fx.loop, UV_RUN_ONCE);
  ASSERT_EQ(fx.status, 0);
  ASSERT_EQ(fx.rd, 0);
  /* Round one: an NXDOMAIN, then the record; round two asks only the
   * server that did not have it yet. */
  ASSERT_EQ(fx.queries, 3);
  char want[160];
  snprintf(want, sizeof(want), "%s, %s", s[0].text, s[1].text);
  ASSERT_STR_EQ(fx.why, want);
  ASSERT_EQ(fx_close(&fx), 0);
  /* One that never has it: a timeout naming what each said. */
  fx_init(&fx, 0, 0);
  fx_server(&fx, &s[0]);
  uv_ip4_addr("127.0.0.1", 1, (struct sockaddr_in *)&s[1].addr);
  snprintf(s[1].text, sizeof(s[1].text), "127.0.0.1:1");
  ASSERT_EQ(acme__dnscheck_start(&c, &fx.loop, s, 2, NAME, VALUE, 400, ACME_DNSCHECK_ALL,
                                 on_checked, &fx),
            0);
  while (!fx.called) uv_run(&fx.loop, UV_RUN_ONCE);
  ASSERT_EQ(fx.status, UV_ETIMEDOUT);
  ASSERT_EQ(fx.rd, 1);
  snprintf(want, sizeof(want), "%s: NXDOMAIN; 127.0.0.1:1: connection refused", s[0].text);
  ASSERT_STR_EQ(fx.why, want);
  ASSERT_EQ(fx_close(&fx), 0);
}

/* The zone auth.test, as a resolver would tell of it: SOA in the
 * authority section of every NXDOMAIN below it, NS ns1 and ns2, ns1 with
 * an A record, ns2 with only an AAAA one. */
static void auth_answer(uv_udp_t *u, const uint8_t *q, size_t len, const struct sockaddr *from) {
  static pkt_t p;
  char name[256];
  unsigned qtype = query_question(name, q, len);
  p.n = 0;
  put_bytes(&p, q, len);
  p.b[2] = 0x81;
  p.b[3] = 0x80;
  if (strcmp(name, "auth.test") == 0 && qtype == 2) {
    p.b[7] = 2;
    put16(&p, 0xc00c);
    rr_head(&p, 2, 6);
    put8(&p, 3);
    put_bytes(&p, "ns1", 3);
    put16(&p, 0xc00c);
    put16(&p, 0xc00c);
    rr_head(&p, 2, 6);
    put8(&p, 3);
    put_bytes(&p, "ns2", 3);
    put16(&p, 0xc00c);
  } else if (strcmp(name, "ns1.auth.test") == 0 && qtype == 1) {
    p.b[7] = 1;
    put16(&p, 0xc00c);
    rr_head(&p, 1, 4);
    put_bytes(&p, "\x7f\x00\x00\x35", 4);
  } else if (strcmp(name, "ns2.auth.test") == 0 && qtype == 28) {
    p.b[7] = 1;
    put16(&p, 0xc00c);
    rr_head(&p, 28, 16);
    put_bytes(&p, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
  } else if (strcmp(name, "auth.test") != 0 && strstr(name, "auth.test") != NULL &&
             strncmp(name, "ns", 2) != 0) {
    p.b[3] = 0x83;
    p.b[9] = 1;
    put_name(&p, "auth.test");
    rr_head(&p, 6, 0);
  }
  uv_buf_t b = uv_buf_init((char *)p.b, (unsigned)p.n);
  uv_udp_try_send(u, &b, 1, from);
}

typedef struct {
  fx_t fx;
  int called, status;
  char servers[256], zone[64], why[512];
} auth_fx_t;

static void on_authns(void *arg, int status, const acme_dns_server_t *servers, size_t num,
                      const char *zone, const char *why) {
  auth_fx_t *a = arg;
  a->called++;
  a->status = status;
  for (size_t i = 0; i < num; i++) {
    size_t used = strlen(a->servers);
    snprintf(a->servers + used, sizeof(a->servers) - used, "%s%s", i ? " " : "", servers[i].text);
  }
  snprintf(a->zone, sizeof(a->zone), "%s", zone ? zone : "");
  snprintf(a->why, sizeof(a->why), "%s", why ? why : "");
  uv_udp_recv_stop(&a->fx.srv);
}

static void authns_run(auth_fx_t *a, const char *name) {
  memset(a, 0, sizeof(*a));
  fx_init(&a->fx, 0, 3);
  acme_dns_server_t s;
  fx_server(&a->fx, &s);
  acme_authns_t *l = NULL;
  ASSERT_EQ(acme__authns_start(&l, &a->fx.loop, &s, 1, name, 10000, on_authns, a), 0);
  while (a->called == 0) uv_run(&a->fx.loop, UV_RUN_ONCE);
  ASSERT_EQ(fx_close(&a->fx), 0);
  ASSERT_EQ(a->called, 1);
}

static void test_authns(void) {
  static auth_fx_t a;
  authns_run(&a, "_acme-challenge.www.auth.test.");
  ASSERT_EQ(a.status, 0);
  ASSERT_STR_EQ(a.zone, "auth.test");
  /* ns1 by its A record; ns2 has none, so by its AAAA record. */
  ASSERT_STR_EQ(a.servers, "127.0.0.53:53 [::1]:53");
  /* SOA, NS, A ns1, A ns2, AAAA ns2. */
  ASSERT_EQ(a.fx.queries, 5);
  /* No SOA anywhere up the name: none, and why. */
  authns_run(&a, "_acme-challenge.www.other.test");
  ASSERT_EQ(a.status, UV_ENOENT);
  ASSERT_CONTAINS(a.why, "no SOA record for _acme-challenge.www.other.test or any parent");
  ASSERT_EQ(a.fx.queries, 4);
}

static void test_soa_owner(void) {
  char zone[ACME_DNS_NAME_MAX + 1];
  pkt_t p;
  /* NXDOMAIN, the zone's SOA in the authority section (nscount 1). */
  header(&p, 1, 0x8183, 1, 0);
  p.b[9] = 1;
  put_name(&p, NAME);
  put16(&p, 6);
  put16(&p, 1);
  put_name(&p, "A.Test");
  rr_head(&p, 6, 4);
  put32(&p, 0);
  ASSERT_EQ(acme__dns_soa_owner(zone, p.b, p.n), 0);
  ASSERT_STR_EQ(zone, "a.test");
  /* In the answer, compressed to the question's name. */
  header(&p, 1, 0x8180, 1, 1);
  put_name(&p, "b.test");
  put16(&p, 6);
  put16(&p, 1);
  put16(&p, 0xc00c);
  rr_head(&p, 6, 0);
  ASSERT_EQ(acme__dns_soa_owner(zone, p.b, p.n), 0);
  ASSERT_STR_EQ(zone, "b.test");
  for (size_t cut = 0; cut < p.n; cut++) ASSERT_EQ(acme__dns_soa_owner(zone, p.b, cut), -1);
  /* None, or an owner that is no host name. */
  header(&p, 1, 0x8180, 1, 0);
  put_name(&p, "b.test");
  put16(&p, 6);
  put16(&p, 1);
  ASSERT_EQ(acme__dns_soa_owner(zone, p.b, p.n), -1);
  header(&p, 1, 0x8180, 1, 1);
  put_name(&p, "b.test");
  put16(&p, 6);
  put16(&p, 1);
  put_name(&p, "a b.test");
  rr_head(&p, 6, 0);
  ASSERT_EQ(acme__dns_soa_owner(zone, p.b, p.n), -1);
}

/* ---- CAA ---- */

/* query_question reads the question of the query |q| (our own, well
 * formed): its name, dotted, into |name|; returns its type. */
static unsigned query_question(char name[256], const uint8_t *q, size_t len) {
  size_t n = 0, i = 12;
  while (i < len && q[i] != 0 && n + q[i] + 1 < 256) {
    if (n) name[n++] = '.';
    memcpy(name + n, q + i + 1, q[i]);
    n += q[i];
    i += 1 + (size_t)q[i];
  }
  name[n] = '\0';
  return i + 2 < len ? (unsigned)(q[i + 1] << 8 | q[i + 2]) : 0;
}

static void caa_rr(pkt_t *p, unsigned flags, const char *tag, const char *value) {
  put16(p, 0xc00c);
  size_t t = strlen(tag), v = strlen(value);
  rr_head(p, 257, (unsigned)(2 + t + v));
  put8(p, flags);
  put8(p, (unsigned)t);
  put_bytes(p, tag, t);
  put_bytes(p, value, v);
}

/* The CAA zone of the server in the loop: "ca.test" holds records,
 * "nxdomain" levels do not exist, "fail.test" answers SERVFAIL, anything
 * else answers NOERROR with no records. */
static void caa_answer(uv_udp_t *u, const uint8_t *q, size_t len, const struct sockaddr *from) {
  static pkt_t p;
  char name[256];
  query_question(name, q, len);
  p.n = 0;
  put_bytes(&p, q, len);
  p.b[2] = 0x81;
  p.b[3] = 0x80;
  if (strcmp(name, "ca.test") == 0) {
    p.b[7] = 3;
    caa_rr(&p, 0, "issue", "other.example");
    caa_rr(&p, 0, "issue", "ca.example; accounturi=https://ca.example/acct/1");
    caa_rr(&p, 0, "iodef", "mailto:x@ca.test");
  } else if (strstr(name, "nxdomain") != NULL) {
    p.b[3] = 0x83;
  } else if (strcmp(name, "fail.test") == 0) {
    p.b[3] = 0x82;
  }
  uv_buf_t b = uv_buf_init((char *)p.b, (unsigned)p.n);
  uv_udp_try_send(u, &b, 1, from);
}

static void test_caa_parse(void) {
  pkt_t p;
  header(&p, 7, 0x8180, 1, 2);
  put_name(&p, "a.test");
  put16(&p, 257);
  put16(&p, 1);
  caa_rr(&p, 128, "issue", "ca.example");
  caa_rr(&p, 0, "tbs", "");
  acme_caa_rr_t *rrs;
  size_t num;
  int rcode;
  ASSERT_EQ(acme__caa_parse(&rrs, &num, &rcode, p.b, p.n, 7, "a.test"), ACME_DNS_ANSWER);
  ASSERT_EQ(num, 2);
  ASSERT_EQ(rrs[0].flags, 128);
  ASSERT_STR_EQ(rrs[0].tag, "issue");
  ASSERT_STR_EQ(rrs[0].value, "ca.example");
  ASSERT_EQ(rrs[1].value_len, 0);
  acme__caa_rrs_free(rrs, num);
  /* A TXT question is not ours; a bad tag is malformed; every cut fails. */
  ASSERT_EQ(acme__caa_parse(&rrs, &num, &rcode, p.b, p.n, 7, "b.test"), ACME_DNS_MISMATCH);
  for (size_t cut = 0; cut < p.n; cut++) {
    ASSERT_NE(acme__caa_parse(&rrs, &num, &rcode, p.b, cut, 7, "a.test"), ACME_DNS_ANSWER);
    ASSERT_NULL(rrs);
  }
  static const struct {
    const char *rdata;
    size_t len;
    int ok;
  } rd[] = {
      {"\x00\x05issueca.example", 16, 1}, {"\x00\x00", 2, 0},        {"\x00\x06issue", 7, 0},
      {"\x00\x05iss-eca", 8, 0},          {"\x80\x03tbs", 5, 1},      {"\x00", 1, 0},
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(rd); i++) {
    acme_caa_rr_t rr;
    CBS c;
    CBS_init(&c, (const uint8_t *)rd[i].rdata, rd[i].len);
    int rc = acme__caa_parse_rdata(&rr, c);
    if (rd[i].ok != (rc == 0)) fprintf(stderr, "rdata case %zu\n", i);
    ASSERT_EQ(rc == 0, rd[i].ok);
    if (rc == 0) {
      gh_free(rr.tag);
      gh_free(rr.value);
    }
  }
}

/* permits runs acme__caa_permits on records given as "flags tag value". */
static int permits(const char *const *recs, size_t n, const char *account, const char *method,
                   int wildcard, char **why) {
  acme_caa_rr_t rrs[16];
  char tags[16][32];
  for (size_t i = 0; i < n; i++) {
    unsigned flags;
    int used = 0;
    sscanf(recs[i], "%u %31s %n", &flags, tags[i], &used);
    rrs[i].flags = (uint8_t)flags;
    rrs[i].tag = tags[i];
    rrs[i].value = (char *)recs[i] + used;
    rrs[i].value_len = strlen(recs[i] + used);
  }
  static const char *const mine[] = {"ca.example", "ca2.example"};
  return acme__caa_permits(why, rrs, n, mine, 2, account, method, wildcard);
}

static void test_caa_permits(void) {
  static const char acct[] = "https://ca.example/acct/1";
  static const struct {
    const char *recs[6];
    size_t n;
    int wildcard;
    const char *method;
    int want; /* 1 permitted */
    const char *why;
  } cases[] = {
      {{0}, 0, 0, "http-01", 1, NULL},
      {{"0 issue ca.example"}, 1, 0, "http-01", 1, NULL},
      {{"0 issue CA.Example"}, 1, 0, "http-01", 1, NULL},
      {{"0 ISSUE ca.example"}, 1, 0, "http-01", 1, NULL},
      {{"0 issue other.example"}, 1, 0, "http-01", 0, "CAA issue records allow only \"other.example\""},
      {{"0 issue other.example", "0 issue ca2.example"}, 2, 0, "dns-01", 1, NULL},
      {{"0 issue ;"}, 1, 0, "http-01", 0, "allow only \";\""},
      {{"0 issue ;", "0 issue ca.example"}, 2, 0, "http-01", 1, NULL},
      {{"0 issue   ca.example  ;  "}, 1, 0, "http-01", 1, NULL},
      {{"0 iodef mailto:a@b.c"}, 1, 0, "http-01", 1, NULL},
      {{"0 tbs anything"}, 1, 0, "http-01", 1, NULL},
      {{"128 tbs anything", "0 issue ca.example"}, 2, 0, "http-01", 0,
       "CAA has a critical \"tbs\" property"},
      {{"128 iodef mailto:a@b.c"}, 1, 0, "http-01", 1, NULL},
      {{"128 issue ca.example"}, 1, 0, "http-01", 1, NULL},
      /* issuewild: only for wildcards, and then it wins over issue. */
      {{"0 issuewild ;"}, 1, 0, "http-01", 1, NULL},
      {{"0 issuewild ;", "0 issue ca.example"}, 2, 0, "http-01", 1, NULL},
      {{"0 issuewild ;", "0 issue ca.example"}, 2, 1, "dns-01", 0, "CAA issuewild records"},
      {{"0 issuewild ca.example", "0 issue ;"}, 2, 1, "dns-01", 1, NULL},
      {{"0 issue ca.example"}, 1, 1, "dns-01", 1, NULL},
      {{"0 issue ;"}, 1, 1, "dns-01", 0, "CAA issue records"},
      /* RFC 8657 parameters. */
      {{"0 issue ca.example; accounturi=https://ca.example/acct/1"}, 1, 0, "http-01", 1, NULL},
      {{"0 issue ca.example; accounturi=https://ca.example/acct/2"}, 1, 0, "http-01", 0,
       "(account https://ca.example/acct/1) by http-01"},
      {{"0 issue ca.example; validationmethods=dns-01,http-01"}, 1, 0, "http-01", 1, NULL},
      {{"0 issue ca.example; validationmethods=dns-01"}, 1, 0, "http-01", 0, NULL},
      {{"0 issue ca.example; validationmethods=dns-01 ; accounturi=https://ca.example/acct/1"}, 1,
       0, "dns-01", 1, NULL},
      {{"0 issue ca.example;validationmethods=tls-alpn-01;accounturi=https://ca.example/acct/1"},
       1, 0, "dns-01", 0, NULL},
      {{"0 issue ca.example; policy=ev"}, 1, 0, "http-01", 1, NULL},
      /* Values that break the grammar name no CA. */
      {{"0 issue ca.example;"}, 1, 0, "http-01", 1, NULL},
      {{"0 issue ca.example; accounturi"}, 1, 0, "http-01", 0, NULL},
      {{"0 issue ca.example; a=b;"}, 1, 0, "http-01", 0, NULL},
      {{"0 issue ca..example"}, 1, 0, "http-01", 0, NULL},
      {{"0 issue -ca.example"}, 1, 0, "http-01", 0, NULL},
      {{"0 issue ca.example extra"}, 1, 0, "http-01", 0, NULL},
      {{"0 issue ca.example.evil"}, 1, 0, "http-01", 0, NULL},
      {{"0 issue ca.exampl"}, 1, 0, "http-01", 0, NULL},
      {{"0 issue ca.example; a=b c"}, 1, 0, "http-01", 0, NULL},
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(cases); i++) {
    char *why = NULL;
    int rc = permits(cases[i].recs, cases[i].n, acct, cases[i].method, cases[i].wildcard, &why);
    if ((rc == 0) != cases[i].want) fprintf(stderr, "permits case %zu: %d %s\n", i, rc, why ? why : "");
    ASSERT_EQ(rc == 0, cases[i].want);
    if (rc == 0) {
      ASSERT_NULL(why);
    } else {
      ASSERT_EQ(rc, UV_EPERM);
      ASSERT_NOT_NULL(why);
      if (cases[i].why != NULL) ASSERT_CONTAINS(why, cases[i].why);
    }
    gh_free(why);
  }
  /* Without an account URL, a record that names one does not match. */
  char *why = NULL;
  const char *rec[] = {"0 issue ca.example; accounturi=https://ca.example/acct/1"};
  ASSERT_EQ(permits(rec, 1, NULL, "http-01", 0, &why), UV_EPERM);
  gh_free(why);
}

typedef struct {
  fx_t fx;
  int called, status;
  size_t num;
  char found_at[64], second[128], why[1024];
} caa_fx_t;

static void on_caa(void *arg, int status, const acme_caa_rr_t *rrs, size_t num,
                   const char *found_at, const char *why) {
  caa_fx_t *c = arg;
  c->called++;
  c->status = status;
  c->num = num;
  snprintf(c->found_at, sizeof(c->found_at), "%s", found_at ? found_at : "");
  snprintf(c->second, sizeof(c->second), "%s", num > 1 ? rrs[1].value : "");
  snprintf(c->why, sizeof(c->why), "%s", why ? why : "");
  uv_udp_recv_stop(&c->fx.srv);
}

/* caa_run looks |name| up at the server in the loop (mode 2, or 1:
 * silent), with |timeout_ms| in all. */
static void caa_run(caa_fx_t *c, const char *name, int mode, uint64_t timeout_ms) {
  memset(c, 0, sizeof(*c));
  fx_init(&c->fx, 0, mode);
  acme_dns_server_t s;
  fx_server(&c->fx, &s);
  acme_caa_lookup_t *l = NULL;
  ASSERT_EQ(acme__caa_lookup_start(&l, &c->fx.loop, &s, 1, name, timeout_ms, on_caa, c), 0);
  ASSERT_EQ(c->called, 0);
  while (c->called == 0) uv_run(&c->fx.loop, UV_RUN_ONCE);
  ASSERT_EQ(fx_close(&c->fx), 0);
  ASSERT_EQ(c->called, 1);
}

static void test_caa_lookup(void) {
  static caa_fx_t c;
  /* Up from a name that does not exist, past an empty level, to ca.test. */
  caa_run(&c, "a.nxdomain.empty.ca.test", 2, 20000);
  ASSERT_EQ(c.status, 0);
  ASSERT_EQ(c.num, 3);
  ASSERT_STR_EQ(c.found_at, "ca.test");
  ASSERT_STR_EQ(c.second, "ca.example; accounturi=https://ca.example/acct/1");
  ASSERT_EQ(c.fx.queries, 4);
  /* A wildcard starts at its base name; the records are at it. */
  caa_run(&c, "*.ca.test.", 2, 20000);
  ASSERT_EQ(c.status, 0);
  ASSERT_STR_EQ(c.found_at, "ca.test");
  ASSERT_EQ(c.fx.queries, 1);
  /* No CAA up to the TLD: anyone may issue. */
  caa_run(&c, "www.free.test", 2, 20000);
  ASSERT_EQ(c.status, 0);
  ASSERT_EQ(c.num, 0);
  ASSERT_STR_EQ(c.found_at, "");
  ASSERT_EQ(c.fx.queries, 3);
  /* SERVFAIL is an error, not "no CAA". */
  caa_run(&c, "www.fail.test", 2, 20000);
  ASSERT_EQ(c.status, UV_EIO);
  ASSERT_CONTAINS(c.why, "no resolver answered the CAA query for fail.test: 127.0.0.1:");
  ASSERT_CONTAINS(c.why, ": SERVFAIL");
  /* Silence: UDP twice, then TCP (refused), within the bound. */
  uint64_t t0 = gh_now_ms();
  caa_run(&c, "www.ca.test", 1, 20000);
  ASSERT_EQ(c.status, UV_ECONNREFUSED);
  ASSERT_CONTAINS(c.why, "connecting over TCP");
  ASSERT_TRUE(gh_now_ms() - t0 < 6000);
  ASSERT_EQ(acme__caa_lookup_start(&(acme_caa_lookup_t *){NULL}, &c.fx.loop, NULL, 0, "a.test",
                                   1000, on_caa, &c),
            UV_EINVAL);
}

static void test_caa_lookup_cancel(void) {
  static caa_fx_t c;
  memset(&c, 0, sizeof(c));
  fx_init(&c.fx, 0, 1);
  acme_dns_server_t s;
  fx_server(&c.fx, &s);
  acme_caa_lookup_t *l = NULL;
  ASSERT_EQ(acme__caa_lookup_start(&l, &c.fx.loop, &s, 1, "a.test", 1000, on_caa, &c), 0);
  uv_run(&c.fx.loop, UV_RUN_NOWAIT);
  acme__caa_lookup_cancel(l);
  acme__caa_lookup_cancel(NULL);
  ASSERT_EQ(fx_close(&c.fx), 0);
  ASSERT_EQ(c.called, 0);
}

int main(void) {
  RUN(test_query);
  RUN(test_good_answer);
  RUN(test_empty_answer_and_case);
  RUN(test_cname_chain);
  RUN(test_compression_loops);
  RUN(test_truncated);
  RUN(test_not_ours);
  RUN(test_rcodes);
  RUN(test_huge_counts);
  RUN(test_servers);
  RUN(test_check_visible);
  RUN(test_check_times_out);
  RUN(test_check_silent_server);
  RUN(test_check_cancel);
  RUN(test_check_all_authoritative);
  RUN(test_soa_owner);
  RUN(test_authns);
  RUN(test_caa_parse);
  RUN(test_caa_permits);
  RUN(test_caa_lookup);
  RUN(test_caa_lookup_cancel);
  TEST_EXIT();
}
