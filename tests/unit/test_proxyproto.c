/* test_proxyproto.c: the PROXY protocol header parser (proxy/proxyproto.c). */
#include <arpa/inet.h>
#include <sys/socket.h>

#include "proxy/proxyproto.h"
#include "test.h"

static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

/* v2 builds a v2 header: command, family/protocol byte, then |body|. */
static size_t v2(uint8_t *out, int cmd, uint8_t fam, const uint8_t *body, size_t body_len) {
  memcpy(out, sig, 12);
  out[12] = (uint8_t)(0x20 | cmd);
  out[13] = fam;
  out[14] = (uint8_t)(body_len >> 8);
  out[15] = (uint8_t)body_len;
  if (body_len) memcpy(out + 16, body, body_len);
  return 16 + body_len;
}

/* every_prefix checks that each proper prefix of |p| is "need more". */
static int every_prefix_needs_more(const uint8_t *p, size_t len) {
  px_proxyproto_t pp;
  for (size_t i = 0; i < len; i++) {
    if (px_proxyproto_parse(p, i, &pp) != 0) return (int)i + 1;
  }
  return 0;
}

static void test_v1_tcp4(void) {
  const char *s = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
  px_proxyproto_t pp;
  int n = px_proxyproto_parse((const uint8_t *)s, strlen(s), &pp);
  ASSERT_EQ(n, 45);
  ASSERT_EQ(pp.version, 1);
  ASSERT_EQ(pp.local, 0);
  ASSERT_EQ(pp.family, AF_INET);
  char text[INET6_ADDRSTRLEN];
  ASSERT_STR_EQ(inet_ntop(AF_INET, pp.src, text, sizeof(text)), "192.0.2.7");
  ASSERT_STR_EQ(inet_ntop(AF_INET, pp.dst, text, sizeof(text)), "198.51.100.1");
  ASSERT_EQ(pp.src_port, 56324);
  ASSERT_EQ(pp.dst_port, 443);
  ASSERT_EQ(every_prefix_needs_more((const uint8_t *)s, 45), 0);
}

static void test_v1_tcp6(void) {
  const char *s = "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
  px_proxyproto_t pp;
  ASSERT_EQ(px_proxyproto_parse((const uint8_t *)s, strlen(s), &pp), (int)strlen(s));
  ASSERT_EQ(pp.family, AF_INET6);
  char text[INET6_ADDRSTRLEN];
  ASSERT_STR_EQ(inet_ntop(AF_INET6, pp.src, text, sizeof(text)), "2001:db8::1");
  ASSERT_EQ(pp.src_port, 65535);
  ASSERT_EQ(pp.dst_port, 0);
}

static void test_v1_unknown(void) {
  px_proxyproto_t pp;
  const char *a = "PROXY UNKNOWN\r\n";
  ASSERT_EQ(px_proxyproto_parse((const uint8_t *)a, strlen(a), &pp), (int)strlen(a));
  ASSERT_EQ(pp.local, 1);
  const char *b = "PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 65535 65535\r\nX";
  ASSERT_EQ(px_proxyproto_parse((const uint8_t *)b, strlen(b), &pp), (int)strlen(b) - 1);
  ASSERT_EQ(pp.local, 1);
}

static void test_v1_bad(void) {
  static const char *const bad[] = {
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",    /* five fields */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",        /* three */
      "PROXY TCP4 ::1 ::1 1 2\r\n",              /* family mismatch */
      "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",      /* family mismatch */
      "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",  /* port range */
      "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",     /* not a number */
      "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",     /* empty field */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",     /* trailing space */
      "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY UNKNOWNX\r\n",
      "PROXY \r\n",
      "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
      "GET / HTTP/1.1\r\n",
      "\x16\x03\x01\x02\x00",                   /* a TLS ClientHello */
  };
  px_proxyproto_t pp;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int n = px_proxyproto_parse((const uint8_t *)bad[i], strlen(bad[i]), &pp);
    if (n != -1) TEST_FAIL_("case %zu: %d, not -1", i, n);
    ASSERT_NOT_NULL(pp.reason);
  }
}

static void test_v1_too_long(void) {
  uint8_t line[200];
  memcpy(line, "PROXY UNKNOWN ", 14);
  memset(line + 14, 'a', sizeof(line) - 14);
  px_proxyproto_t pp;
  ASSERT_EQ(px_proxyproto_parse(line, 106, &pp), 0);
  ASSERT_EQ(px_proxyproto_parse(line, 107, &pp), -1);
  ASSERT_EQ(px_proxyproto_parse(line, sizeof(line), &pp), -1);
  /* Exactly 107 bytes with the CRLF is fine. */
  line[105] = '\r';
  line[106] = '\n';
  ASSERT_EQ(px_proxyproto_parse(line, sizeof(line), &pp), 107);
  line[105] = 'a';
  line[106] = '\r';
  line[107] = '\n';
  ASSERT_EQ(px_proxyproto_parse(line, sizeof(line), &pp), -1);
}

static void test_v2_ipv4(void) {
  uint8_t body[12 + 9] = {192, 0, 2, 7, 198, 51, 100, 1, 0xdc, 0x04, 0x01, 0xbb,
                          /* a TLV (PP2_TYPE_AUTHORITY "a.test") */ 0x02, 0x00, 0x06,
                          'a', '.', 't', 'e', 's', 't'};
  uint8_t h[64];
  size_t n = v2(h, 1, 0x11, body, sizeof(body));
  memcpy(h + n, "\x16\x03", 2); /* the client's first bytes stay */
  px_proxyproto_t pp;
  ASSERT_EQ(px_proxyproto_parse(h, n + 2, &pp), (int)n);
  ASSERT_EQ(pp.version, 2);
  ASSERT_EQ(pp.local, 0);
  ASSERT_EQ(pp.family, AF_INET);
  ASSERT_EQ(memcmp(pp.src, body, 4), 0);
  ASSERT_EQ(memcmp(pp.dst, body + 4, 4), 0);
  ASSERT_EQ(pp.src_port, 0xdc04);
  ASSERT_EQ(pp.dst_port, 443);
  ASSERT_EQ(every_prefix_needs_more(h, n), 0);
}

static void test_v2_ipv6(void) {
  uint8_t body[36] = {0x20, 0x01, 0x0d, 0xb8};
  body[15] = 1;
  body[31] = 1;
  body[32] = 0x30;
  body[33] = 0x39;
  uint8_t h[64];
  size_t n = v2(h, 1, 0x21, body, sizeof(body));
  px_proxyproto_t pp;
  ASSERT_EQ(px_proxyproto_parse(h, n, &pp), (int)n);
  ASSERT_EQ(pp.family, AF_INET6);
  char text[INET6_ADDRSTRLEN];
  ASSERT_STR_EQ(inet_ntop(AF_INET6, pp.src, text, sizeof(text)), "2001:db8::1");
  ASSERT_STR_EQ(inet_ntop(AF_INET6, pp.dst, text, sizeof(text)), "::1");
  ASSERT_EQ(pp.src_port, 12345);
  ASSERT_EQ(every_prefix_needs_more(h, n), 0);
}

static void test_v2_local_and_fallbacks(void) {
  uint8_t h[64], body[12] = {1, 2, 3, 4};
  px_proxyproto_t pp;
  size_t n = v2(h, 0, 0x00, NULL, 0); /* LOCAL, no addresses */
  ASSERT_EQ(px_proxyproto_parse(h, n, &pp), 16);
  ASSERT_EQ(pp.local, 1);
  n = v2(h, 0, 0x11, body, sizeof(body)); /* LOCAL ignores what follows */
  ASSERT_EQ(px_proxyproto_parse(h, n, &pp), 28);
  ASSERT_EQ(pp.local, 1);
  n = v2(h, 1, 0x00, NULL, 0); /* PROXY UNSPEC */
  ASSERT_EQ(px_proxyproto_parse(h, n, &pp), 16);
  ASSERT_EQ(pp.local, 1);
  n = v2(h, 1, 0x12, body, sizeof(body)); /* DGRAM */
  ASSERT_EQ(px_proxyproto_parse(h, n, &pp), 28);
  ASSERT_EQ(pp.local, 1);
}

static void test_v2_bad(void) {
  uint8_t h[64], body[36] = {0};
  px_proxyproto_t pp;
  size_t n = v2(h, 1, 0x11, body, 11); /* address block too short */
  ASSERT_EQ(px_proxyproto_parse(h, n, &pp), -1);
  n = v2(h, 1, 0x21, body, 35);
  ASSERT_EQ(px_proxyproto_parse(h, n, &pp), -1);
  n = v2(h, 2, 0x11, body, 12); /* command 2 */
  ASSERT_EQ(px_proxyproto_parse(h, 13, &pp), -1);
  ASSERT_EQ(px_proxyproto_parse(h, n, &pp), -1);
  n = v2(h, 1, 0x41, body, 12); /* family 4 */
  ASSERT_EQ(px_proxyproto_parse(h, 14, &pp), -1);
  n = v2(h, 1, 0x13, body, 12); /* protocol 3 */
  ASSERT_EQ(px_proxyproto_parse(h, n, &pp), -1);
  n = v2(h, 1, 0x11, body, 12);
  h[12] = 0x11; /* version 1 in binary */
  ASSERT_EQ(px_proxyproto_parse(h, n, &pp), -1);
  n = v2(h, 1, 0x11, body, 12);
  h[7] = 'q'; /* signature */
  ASSERT_EQ(px_proxyproto_parse(h, 8, &pp), -1);
  ASSERT_NOT_NULL(pp.reason);
}

static void test_v2_huge(void) {
  uint8_t h[16];
  memcpy(h, sig, 12);
  h[12] = 0x21;
  h[13] = 0x11;
  h[14] = 0xff;
  h[15] = 0xff;
  px_proxyproto_t pp;
  ASSERT_EQ(px_proxyproto_parse(h, 15, &pp), 0);
  ASSERT_EQ(px_proxyproto_parse(h, 16, &pp), -1); /* refused before 64 KiB arrive */
  h[14] = (PX_PROXYPROTO_MAX - 16) >> 8;
  h[15] = (PX_PROXYPROTO_MAX - 16) & 0xff;
  ASSERT_EQ(px_proxyproto_parse(h, 16, &pp), 0); /* the largest allowed: wait for it */
}

static void test_empty(void) {
  px_proxyproto_t pp;
  ASSERT_EQ(px_proxyproto_parse((const uint8_t *)"", 0, &pp), 0);
}

int main(void) {
  RUN(test_v1_tcp4);
  RUN(test_v1_tcp6);
  RUN(test_v1_unknown);
  RUN(test_v1_bad);
  RUN(test_v1_too_long);
  RUN(test_v2_ipv4);
  RUN(test_v2_ipv6);
  RUN(test_v2_local_and_fallbacks);
  RUN(test_v2_bad);
  RUN(test_v2_huge);
  RUN(test_empty);
  TEST_EXIT();
}
