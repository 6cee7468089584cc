/* test_dnsupdate.c: acme/dnsupdate.c — the RFC 2136 UPDATE on the wire,
 * its TSIG record (checked against an HMAC computed here from RFC 8945's
 * definition), responses signed and tampered with, the error messages,
 * and one update against a UDP server in the test's own loop. */
#include <stdio.h>
#include <string.h>

#include <openssl/hmac.h>
#include <uv.h>

#include "acme/dnsupdate.h"
#include "common/common.h"
#include "test.h"

#define ZONE "a.test"
#define NAME "_acme-challenge.www.a.test."
#define VALUE "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
#define NOW 1700000000u

static const uint8_t secret[] = "0123456789abcdef0123456789abcdef";
static const acme_tsig_key_t key = {"gh-key", CONF_TSIG_HMAC_SHA256, secret, 32};

static const uint8_t *find(const uint8_t *hay, size_t n, const void *needle, size_t m) {
  for (size_t i = 0; i + m <= n; i++) {
    if (memcmp(hay + i, needle, m) == 0) return hay + i;
  }
  return NULL;
}

static void test_build_add(void) {
  uint8_t msg[1024], mac[ACME_TSIG_MAC_MAX];
  size_t len, mac_len;
  ASSERT_EQ(acme__dnsupdate_build(msg, sizeof(msg), &len, mac, &mac_len, 0x1234, &key, NOW, ZONE,
                                  1, NAME, VALUE),
            0);
  ASSERT_UEQ(mac_len, 32);
  /* Header: id, opcode UPDATE, ZO 1, PR 0, UP 1, AD 1 (the TSIG). */
  static const uint8_t header[] = {0x12, 0x34, 0x28, 0, 0, 1, 0, 0, 0, 1, 0, 1};
  ASSERT_EQ(memcmp(msg, header, 12), 0);
  /* Zone: a.test SOA IN. */
  static const uint8_t zone[] = "\x01" "a\x04" "test\x00\x00\x06\x00\x01";
  ASSERT_EQ(memcmp(msg + 12, zone, sizeof(zone) - 1), 0);
  /* Update: the name, TXT IN, TTL 60, one character-string. */
  static const uint8_t rr[] = "\x0f_acme-challenge\x03www\x01" "a\x04" "test\x00"
                              "\x00\x10\x00\x01\x00\x00\x00\x3c\x00\x2c\x2b";
  const uint8_t *at = msg + 12 + sizeof(zone) - 1;
  ASSERT_EQ(memcmp(at, rr, sizeof(rr) - 1), 0);
  ASSERT_EQ(memcmp(at + sizeof(rr) - 1, VALUE, 43), 0);
  /* The TSIG record: key name, TSIG ANY TTL 0, hmac-sha256., time, fudge. */
  const uint8_t *tsig = at + sizeof(rr) - 1 + 43;
  size_t unsigned_len = (size_t)(tsig - msg);
  static const uint8_t tsig_head[] = "\x06gh-key\x00\x00\xfa\x00\xff\x00\x00\x00\x00";
  ASSERT_EQ(memcmp(tsig, tsig_head, sizeof(tsig_head) - 1), 0);
  ASSERT_NOT_NULL(find(tsig, len - unsigned_len, "\x0bhmac-sha256\x00", 13));
  /* The MAC, computed here from RFC 8945 4.3.3: the message as it was
   * without the record (ARCOUNT 0), then the variables. */
  uint8_t copy[1024];
  memcpy(copy, msg, unsigned_len);
  copy[11] = 0;
  static const uint8_t vars[] = "\x06gh-key\x00\x00\xff\x00\x00\x00\x00\x0bhmac-sha256\x00"
                                "\x00\x00\x65\x53\xf1\x00\x01\x2c\x00\x00\x00\x00";
  uint8_t want[32];
  unsigned want_len;
  HMAC_CTX ctx;
  HMAC_CTX_init(&ctx);
  ASSERT_TRUE(HMAC_Init_ex(&ctx, secret, 32, EVP_sha256(), NULL));
  ASSERT_TRUE(HMAC_Update(&ctx, copy, unsigned_len));
  ASSERT_TRUE(HMAC_Update(&ctx, vars, sizeof(vars) - 1));
  ASSERT_TRUE(HMAC_Final(&ctx, want, &want_len));
  HMAC_CTX_cleanup(&ctx);
  ASSERT_EQ(memcmp(mac, want, 32), 0);
  ASSERT_NOT_NULL(find(msg, len, want, 32));
  /* The MAC is followed by the original id, error 0, no other data. */
  const uint8_t *m = find(msg, len, want, 32);
  ASSERT_UEQ((size_t)(m + 32 + 6 - msg), len);
  ASSERT_EQ(memcmp(m + 32, "\x12\x34\x00\x00\x00\x00", 6), 0);
}

static void test_build_delete_and_bad_input(void) {
  uint8_t msg[1024], mac[ACME_TSIG_MAC_MAX];
  size_t len, mac_len;
  ASSERT_EQ(acme__dnsupdate_build(msg, sizeof(msg), &len, mac, &mac_len, 7, &key, NOW, ZONE ".",
                                  0, NAME, VALUE),
            0);
  /* Class NONE, TTL 0: delete exactly this record (RFC 2136 2.5.4). */
  ASSERT_NOT_NULL(find(msg, len, "\x00\x10\x00\xfe\x00\x00\x00\x00\x00\x2c\x2b", 11));
  /* The name must be in the zone; names must be names; room must do. */
  ASSERT_EQ(acme__dnsupdate_build(msg, sizeof(msg), &len, mac, &mac_len, 7, &key, NOW, "b.test",
                                  1, NAME, VALUE),
            UV_EINVAL);
  ASSERT_EQ(acme__dnsupdate_build(msg, sizeof(msg), &len, mac, &mac_len, 7, &key, NOW,
                                  "test.a.test", 1, "_acme-challenge.xa.test.", VALUE),
            UV_EINVAL);
  ASSERT_EQ(acme__dnsupdate_build(msg, sizeof(msg), &len, mac, &mac_len, 7, &key, NOW, "a..test",
                                  1, NAME, VALUE),
            UV_EINVAL);
  ASSERT_EQ(acme__dnsupdate_build(msg, 100, &len, mac, &mac_len, 7, &key, NOW, ZONE, 1, NAME,
                                  VALUE),
            UV_EINVAL);
  ASSERT_EQ(acme__dnsupdate_build(msg, sizeof(msg), &len, mac, &mac_len, 7, &key, NOW, ZONE, 1,
                                  NAME, ""),
            UV_EINVAL);
  /* The zone itself may be the name; a 300-byte value takes two strings. */
  char big[301];
  memset(big, 'x', 300);
  big[300] = '\0';
  ASSERT_EQ(acme__dnsupdate_build(msg, sizeof(msg), &len, mac, &mac_len, 7, &key, NOW, ZONE, 1,
                                  ZONE, big),
            0);
  ASSERT_NOT_NULL(find(msg, len, "\x01\x2e\xff", 3));
  /* SHA-512 keys give 64-byte MACs. */
  acme_tsig_key_t k512 = key;
  k512.alg = CONF_TSIG_HMAC_SHA512;
  ASSERT_EQ(acme__dnsupdate_build(msg, sizeof(msg), &len, mac, &mac_len, 7, &k512, NOW, ZONE, 1,
                                  NAME, VALUE),
            0);
  ASSERT_UEQ(mac_len, 64);
  ASSERT_NOT_NULL(find(msg, len, "\x0bhmac-sha512\x00", 13));
}

/* respond turns the request |req| into its response with |rcode|, signed
 * with |k| over the request's MAC, as a server would. */
static size_t respond(uint8_t *out, const uint8_t *req, size_t req_len, int rcode,
                      const acme_tsig_key_t *k, const uint8_t *req_mac, size_t req_mac_len,
                      uint64_t when, uint16_t error) {
  /* The header and the zone section, without the update and the TSIG. */
  size_t n = 12 + 12; /* "\x01a\x04test\x00" + type + class */
  memcpy(out, req, n);
  out[2] = 0xa8; /* QR, opcode 5 */
  out[3] = (uint8_t)rcode;
  memset(out + 6, 0, 6);
  (void)req_len;
  uint8_t mac[ACME_TSIG_MAC_MAX];
  size_t mac_len;
  if (k != NULL) {
    if (acme__tsig_sign(out, 1024, &n, mac, &mac_len, k, when, req_mac, req_mac_len, error) != 0) {
      return 0;
    }
  }
  return n;
}

static void test_parse_responses(void) {
  uint8_t req[1024], resp[1024], mac[ACME_TSIG_MAC_MAX];
  size_t len, mac_len;
  ASSERT_EQ(acme__dnsupdate_build(req, sizeof(req), &len, mac, &mac_len, 0x4242, &key, NOW, ZONE,
                                  1, NAME, VALUE),
            0);
  acme_dnsupdate_reply_t r;
  /* A signed NOERROR: done. */
  size_t n = respond(resp, req, len, 0, &key, mac, mac_len, NOW + 2, 0);
  ASSERT_EQ(acme__dnsupdate_parse(&r, resp, n, 0x4242, &key, mac, mac_len, NOW), ACME_DNS_ANSWER);
  ASSERT_TRUE(r.has_tsig && r.verified && r.time_ok);
  ASSERT_EQ(r.rcode, 0);
  ASSERT_NULL(acme__dnsupdate_why(&r, "127.0.0.1:53", ZONE, "gh-key", NAME));
  /* Any flipped bit breaks the MAC (or the parse); the case of the names
   * in the TSIG record does not count (they are canonicalised). */
  for (size_t i = 2; i < n; i++) {
    resp[i] ^= 0x01;
    acme_dns_result_t res = acme__dnsupdate_parse(&r, resp, n, 0x4242, &key, mac, mac_len, NOW);
    if (res == ACME_DNS_ANSWER && r.verified && r.rcode == 0) fprintf(stderr, "byte %zu\n", i);
    ASSERT_TRUE(res != ACME_DNS_ANSWER || !r.verified || r.rcode != 0);
    resp[i] ^= 0x01;
  }
  /* Signed over another request's MAC: not verified. */
  uint8_t other[ACME_TSIG_MAC_MAX];
  memcpy(other, mac, mac_len);
  other[0] ^= 1;
  ASSERT_EQ(acme__dnsupdate_parse(&r, resp, n, 0x4242, &key, other, mac_len, NOW), ACME_DNS_ANSWER);
  ASSERT_FALSE(r.verified);
  char *why = acme__dnsupdate_why(&r, "127.0.0.1:53", ZONE, "gh-key", NAME);
  ASSERT_CONTAINS(why, "not signed with the key");
  gh_free(why);
  /* Signed with another secret. */
  static const uint8_t wrong[] = "fedcba9876543210fedcba9876543210";
  acme_tsig_key_t k2 = {"gh-key", CONF_TSIG_HMAC_SHA256, wrong, 32};
  n = respond(resp, req, len, 0, &k2, mac, mac_len, NOW, 0);
  ASSERT_EQ(acme__dnsupdate_parse(&r, resp, n, 0x4242, &key, mac, mac_len, NOW), ACME_DNS_ANSWER);
  ASSERT_FALSE(r.verified);
  /* Too far from our clock. */
  n = respond(resp, req, len, 0, &key, mac, mac_len, NOW + 301, 0);
  ASSERT_EQ(acme__dnsupdate_parse(&r, resp, n, 0x4242, &key, mac, mac_len, NOW), ACME_DNS_ANSWER);
  ASSERT_TRUE(r.verified);
  ASSERT_FALSE(r.time_ok);
  why = acme__dnsupdate_why(&r, "127.0.0.1:53", ZONE, "gh-key", NAME);
  ASSERT_CONTAINS(why, "BADTIME");
  gh_free(why);
  /* Unsigned NOERROR: not trusted. */
  n = respond(resp, req, len, 0, NULL, NULL, 0, NOW, 0);
  ASSERT_EQ(acme__dnsupdate_parse(&r, resp, n, 0x4242, &key, mac, mac_len, NOW), ACME_DNS_ANSWER);
  ASSERT_FALSE(r.has_tsig);
  why = acme__dnsupdate_why(&r, "127.0.0.1:53", ZONE, "gh-key", NAME);
  ASSERT_STR_EQ(why, "updating " NAME " at 127.0.0.1:53 (zone a.test, key gh-key): the answer is "
                     "not signed with the key, so it cannot be trusted");
  gh_free(why);
  /* Errors, signed or not, are named with their cause. */
  static const struct {
    int rcode;
    uint16_t tsig_error;
    const char *want;
  } errs[] = {
      {9, 16, "(zone a.test, key gh-key): NOTAUTH, BADSIG (the server rejected the signature: "
              "is key_secret (or key_algorithm) right?)"},
      {9, 17, ": NOTAUTH, BADKEY (the server does not know this key with this algorithm, or does "
              "not take it for this zone)"},
      {0, 18, ": BADTIME"},
      {5, 0, ": REFUSED (the server refused it: does its ACL let the key update the zone?)"},
      {9, 0, ": NOTAUTH (the server is not authoritative for the zone, or the key may not update "
             "it)"},
      {10, 0, ": NOTZONE (the name is not in the zone)"},
      {2, 0, ": SERVFAIL"},
      {4, 0, ": NOTIMP (the server does not do dynamic updates)"},
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(errs); i++) {
    n = respond(resp, req, len, errs[i].rcode, &key, mac, mac_len, NOW, errs[i].tsig_error);
    ASSERT_EQ(acme__dnsupdate_parse(&r, resp, n, 0x4242, &key, mac, mac_len, NOW), ACME_DNS_ANSWER);
    ASSERT_EQ(r.rcode, errs[i].rcode);
    ASSERT_EQ(r.tsig_error, errs[i].tsig_error);
    why = acme__dnsupdate_why(&r, "127.0.0.1:53", ZONE, "gh-key", NAME);
    ASSERT_CONTAINS(why, errs[i].want);
    ASSERT_CONTAINS(why, "updating " NAME " at 127.0.0.1:53");
    gh_free(why);
  }
  /* Not ours, truncated, malformed. */
  n = respond(resp, req, len, 0, &key, mac, mac_len, NOW, 0);
  ASSERT_EQ(acme__dnsupdate_parse(&r, resp, n, 0x4243, &key, mac, mac_len, NOW), ACME_DNS_MISMATCH);
  ASSERT_EQ(acme__dnsupdate_parse(&r, req, len, 0x4242, &key, mac, mac_len, NOW), ACME_DNS_MISMATCH);
  resp[2] |= 0x02;
  ASSERT_EQ(acme__dnsupdate_parse(&r, resp, n, 0x4242, &key, mac, mac_len, NOW), ACME_DNS_TRUNCATED);
  resp[2] &= (uint8_t)~0x02;
  for (size_t cut = 0; cut < n; cut++) {
    acme_dns_result_t res = acme__dnsupdate_parse(&r, resp, cut, 0x4242, &key, mac, mac_len, NOW);
    ASSERT_TRUE(res == ACME_DNS_MALFORMED || (res == ACME_DNS_ANSWER && !r.verified));
  }
  /* Trailing bytes after the TSIG record. */
  resp[n] = 0;
  ASSERT_EQ(acme__dnsupdate_parse(&r, resp, n + 1, 0x4242, &key, mac, mac_len, NOW),
            ACME_DNS_MALFORMED);
}

/* ---- one update against a server in this loop ---- */

typedef struct {
  uv_udp_t udp;
  int rcode;     /* what to answer */
  int sign;      /* sign the answer with |key| */
  int silent;    /* answer nothing */
  int truncate;  /* answer with TC set */
  int queries;
  int status;
  char why[512];
  int called;
} server_t;

static void srv_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  static char buf[4096];
  (void)h;
  (void)s;
  *b = uv_buf_init(buf, sizeof(buf));
}

static void srv_recv(uv_udp_t *udp, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
                     unsigned flags) {
  server_t *s = udp->data;
  (void)flags;
  if (nread <= 0 || from == NULL) return;
  s->queries++;
  if (s->silent) return;
  const uint8_t *req = (const uint8_t *)buf->base;
  /* The request's MAC: the last 32 bytes before id, error, other len. */
  const uint8_t *req_mac = req + nread - 6 - 32;
  static uint8_t resp[1024];
  size_t n = respond(resp, req, (size_t)nread, s->rcode, s->sign ? &key : NULL, req_mac, 32,
                     (uint64_t)time(NULL), 0);
  if (s->truncate) resp[2] |= 0x02;
  uv_buf_t b = uv_buf_init((char *)resp, (unsigned)n);
  uv_udp_try_send(udp, &b, 1, from);
}

static void on_done(void *arg, int status, const char *why) {
  server_t *s = arg;
  s->called++;
  s->status = status;
  snprintf(s->why, sizeof(s->why), "%s", why ? why : "");
}

static void run_update(server_t *s, int port_offset) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_udp_init(&loop, &s->udp);
  s->udp.data = s;
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  ASSERT_EQ(uv_udp_bind(&s->udp, (const struct sockaddr *)&sa, 0), 0);
  int sl = sizeof(sa);
  uv_udp_getsockname(&s->udp, (struct sockaddr *)&sa, &sl);
  uv_udp_recv_start(&s->udp, srv_alloc, srv_recv);
  conf_rfc2136_t c = {1, "127.0.0.1", "127.0.0.1", 0, ZONE, "gh-key", CONF_TSIG_HMAC_SHA256,
                      "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="};
  c.port = (uint16_t)(ntohs(sa.sin_port) + port_offset);
  acme_dnsupdate_t *u = NULL;
  char *err = NULL;
  ASSERT_EQ(acme__dnsupdate_start(&u, &err, &loop, &c, 1, NAME, VALUE, on_done, s), 0);
  ASSERT_EQ(s->called, 0);
  while (s->called == 0) uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&s->udp, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(&loop), 0);
  ASSERT_EQ(s->called, 1);
}

static void test_update_ok(void) {
  server_t s = {.sign = 1};
  run_update(&s, 0);
  ASSERT_EQ(s.status, 0);
  ASSERT_EQ(s.queries, 1);
}

static void test_update_refused(void) {
  server_t s = {.sign = 1, .rcode = 5};
  run_update(&s, 0);
  ASSERT_EQ(s.status, UV_EPROTO);
  ASSERT_CONTAINS(s.why, "REFUSED");
  ASSERT_CONTAINS(s.why, "zone a.test, key gh-key");
}

static void test_update_unsigned(void) {
  server_t s = {.sign = 0};
  run_update(&s, 0);
  ASSERT_EQ(s.status, UV_EPROTO);
  ASSERT_CONTAINS(s.why, "not signed");
}

static void test_update_silent(void) {
  /* Two UDP attempts of 3 s, then TCP to a port nobody listens on. */
  server_t s = {.silent = 1};
  uint64_t t0 = gh_now_ms();
  run_update(&s, 0);
  ASSERT_EQ(s.queries, 2);
  ASSERT_TRUE(gh_now_ms() - t0 < 8000);
  ASSERT_CONTAINS(s.why, "over TCP");
}

static void test_update_truncated_goes_tcp(void) {
  server_t s = {.sign = 1, .truncate = 1};
  run_update(&s, 0);
  ASSERT_EQ(s.queries, 1);
  ASSERT_CONTAINS(s.why, "connecting over TCP: connection refused");
}

static void test_update_cancel(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  conf_rfc2136_t c = {1, "127.0.0.1", "127.0.0.1", 9, ZONE, "gh-key", CONF_TSIG_HMAC_SHA256,
                      "c2VjcmV0"};
  server_t s = {0};
  acme_dnsupdate_t *u = NULL;
  char *err = NULL;
  ASSERT_EQ(acme__dnsupdate_start(&u, &err, &loop, &c, 0, NAME, VALUE, on_done, &s), 0);
  acme__dnsupdate_cancel(u);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(&loop), 0);
  ASSERT_EQ(s.called, 0);
  acme__dnsupdate_cancel(NULL);
}

int main(void) {
  RUN(test_build_add);
  RUN(test_build_delete_and_bad_input);
  RUN(test_parse_responses);
  RUN(test_update_ok);
  RUN(test_update_refused);
  RUN(test_update_unsigned);
  RUN(test_update_silent);
  RUN(test_update_truncated_goes_tcp);
  RUN(test_update_cancel);
  TEST_EXIT();
}
