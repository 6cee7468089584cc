/* test_chunked.c: the chunked-coding decoder (proxy/chunked.c), fed whole
 * and one byte at a time: what it accepts (RFC 9112 7.1, BWS before a
 * chunk extension included) and what it refuses. */
#include "proxy/chunked.h"
#include "tests/unit/test.h"

typedef struct {
  px_ck_event_t last; /* DONE, BAD, HUGE or NEED (input ran out) */
  char data[256];
  size_t data_len;
  size_t consumed;
  px_hdrs_t tr;
} run_t;

/* decode feeds |in| to a fresh decoder in pieces of |step| bytes (0: all
 * at once) until it ends or the input does. */
static void decode(run_t *r, const char *in, size_t step) {
  px_chunked_t ck;
  px_chunked_init(&ck);
  memset(r, 0, sizeof(*r));
  size_t len = strlen(in), off = 0;
  r->last = PX_CK_NEED;
  while (off < len) {
    size_t n = step && len - off > step ? step : len - off;
    const char *p = in + off;
    size_t left = n;
    while (left > 0) {
      gh_str_t data = {NULL, 0};
      uint64_t announced = 0;
      px_ck_event_t ev = px_chunked_next(&ck, &r->tr, 1024, &p, &left, &data, &announced);
      if (ev == PX_CK_DATA) {
        memcpy(r->data + r->data_len, data.ptr, data.len);
        r->data_len += data.len;
      } else if (ev == PX_CK_DONE || ev == PX_CK_BAD || ev == PX_CK_HUGE) {
        r->last = ev;
        r->consumed = off + (n - left);
        return;
      }
    }
    off += n;
  }
  r->consumed = len;
}

static void check_accepts(const char *in, const char *body) {
  for (size_t step = 0; step <= 3; step++) {
    run_t r;
    decode(&r, in, step);
    ASSERT_EQ(r.last, PX_CK_DONE);
    ASSERT_EQ(r.data_len, strlen(body));
    ASSERT_TRUE(memcmp(r.data, body, r.data_len) == 0);
    ASSERT_EQ(r.consumed, strlen(in));
    px_hdrs_cleanup(&r.tr);
  }
}

static void check_refuses(const char *in, px_ck_event_t want) {
  for (size_t step = 0; step <= 3; step++) {
    run_t r;
    decode(&r, in, step);
    ASSERT_EQ(r.last, want);
    px_hdrs_cleanup(&r.tr);
  }
}

static void test_accepts(void) {
  check_accepts("5\r\nhello\r\n0\r\n\r\n", "hello");
  check_accepts("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world");
  check_accepts("0\r\n\r\n", "");
  /* Leading zeros and upper-case hex. */
  check_accepts("00005\r\nhello\r\n000\r\n\r\n", "hello");
  check_accepts("A\r\n0123456789\r\n0\r\n\r\n", "0123456789");
  /* Extensions, with whitespace before ';' (BWS, RFC 9112 7.1.1). */
  check_accepts("5;ext\r\nhello\r\n0\r\n\r\n", "hello");
  check_accepts("5 ;ext=1\r\nhello\r\n0\r\n\r\n", "hello");
  check_accepts("5\t; a=b ; c=\"d e\"\r\nhello\r\n0;last\r\n\r\n", "hello");
  check_accepts("5  \r\nhello\r\n0\r\n\r\n", "hello");
}

static void test_trailers(void) {
  run_t r;
  decode(&r, "5\r\nhello\r\n0\r\nX-A: 1\r\nX-B:  two words  \r\n\r\n", 1);
  ASSERT_EQ(r.last, PX_CK_DONE);
  ASSERT_EQ(r.tr.num, 2);
  gh_str_t n = px_hdr_name(&r.tr, 0), v = px_hdr_value(&r.tr, 0);
  ASSERT_TRUE(n.len == 3 && memcmp(n.ptr, "X-A", 3) == 0);
  ASSERT_TRUE(v.len == 1 && v.ptr[0] == '1');
  v = px_hdr_value(&r.tr, 1);
  ASSERT_TRUE(v.len == 9 && memcmp(v.ptr, "two words", 9) == 0);
  px_hdrs_cleanup(&r.tr);
  /* A bad field name, a field without a colon, a bare LF in a trailer. */
  check_refuses("0\r\nX A: 1\r\n\r\n", PX_CK_BAD);
  check_refuses("0\r\nX-A\r\n\r\n", PX_CK_BAD);
  check_refuses("0\r\nX-A: 1\n\r\n", PX_CK_BAD);
}

static void test_refuses(void) {
  check_refuses("\r\nhello\r\n0\r\n\r\n", PX_CK_BAD);      /* no size */
  check_refuses("5\nhello\r\n0\r\n\r\n", PX_CK_BAD);        /* bare LF */
  check_refuses("5\r\nhelloX\r\n0\r\n\r\n", PX_CK_BAD);     /* data longer than its size */
  check_refuses("5\r\nhello\n0\r\n\r\n", PX_CK_BAD);        /* bare LF after data */
  check_refuses("-5\r\nhello\r\n0\r\n\r\n", PX_CK_BAD);
  check_refuses("0x5\r\nhello\r\n0\r\n\r\n", PX_CK_BAD);
  check_refuses("5 x\r\nhello\r\n0\r\n\r\n", PX_CK_BAD);    /* junk after BWS */
  check_refuses("5;a\x01\r\nhello\r\n0\r\n\r\n", PX_CK_BAD); /* control in an extension */
  check_refuses("0\r\n\r\r", PX_CK_BAD);
}

static void test_sizes(void) {
  /* 2^64-1 and anything over 2^40 are refused before any data. */
  check_refuses("ffffffffffffffff\r\n", PX_CK_HUGE);
  check_refuses("10000000001\r\n", PX_CK_HUGE);
  check_refuses("fffffffffffffffffffffffff\r\n", PX_CK_HUGE);
  /* 2^40 itself is announced (the body limit is the caller's). */
  px_chunked_t ck;
  px_chunked_init(&ck);
  const char *in = "10000000000\r\nab";
  const char *p = in;
  size_t len = strlen(in);
  gh_str_t data;
  uint64_t announced = 0;
  ASSERT_EQ(px_chunked_next(&ck, NULL, 0, &p, &len, &data, &announced), PX_CK_CHUNK);
  ASSERT_UEQ(announced, PX_CHUNK_MAX);
  ASSERT_EQ(px_chunked_next(&ck, NULL, 0, &p, &len, &data, &announced), PX_CK_DATA);
  ASSERT_EQ(data.len, 2);
  ASSERT_EQ(px_chunked_next(&ck, NULL, 0, &p, &len, &data, &announced), PX_CK_NEED);
}

static void test_extension_bound(void) {
  static char in[8192];
  strcpy(in, "5;");
  memset(in + 2, 'x', 5000);
  strcpy(in + 5002, "\r\nhello\r\n0\r\n\r\n");
  check_refuses(in, PX_CK_BAD);
}

int main(void) {
  RUN(test_accepts);
  RUN(test_trailers);
  RUN(test_refuses);
  RUN(test_sizes);
  RUN(test_extension_bound);
  TEST_EXIT();
}
