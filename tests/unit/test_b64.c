/* test_b64.c: common/b64.c — RFC 4648 section 10 vectors in both
 * alphabets, the URL-safe characters, strict decoding, and round trips of
 * every length. */
#include "common/b64.h"
#include "common/common.h"
#include "test.h"

static const struct {
  const char *in, *url, *std;
} vectors[] = {
    {"", "", ""},
    {"f", "Zg", "Zg=="},
    {"fo", "Zm8", "Zm8="},
    {"foo", "Zm9v", "Zm9v"},
    {"foob", "Zm9vYg", "Zm9vYg=="},
    {"fooba", "Zm9vYmE", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
    /* The two characters that differ between the alphabets. */
    {"\xfb\xef\xbe", "----", "++++"},
    {"\xff\xff\xff", "____", "////"},
    {"\xfb\xff", "-_8", "+/8="},
};

static void test_rfc4648_vectors(void) {
  for (size_t i = 0; i < GH_ARRAY_LEN(vectors); i++) {
    const uint8_t *in = (const uint8_t *)vectors[i].in;
    size_t len = strlen(vectors[i].in);
    char *url = gh_b64url_encode(in, len);
    char *std = gh_b64_encode(in, len);
    ASSERT_STR_EQ(url, vectors[i].url);
    ASSERT_STR_EQ(std, vectors[i].std);
    uint8_t *out;
    size_t out_len;
    ASSERT_EQ(gh_b64url_decode(&out, &out_len, url, strlen(url)), 0);
    ASSERT_EQ(out_len, len);
    ASSERT_EQ(memcmp(out, in, len), 0);
    ASSERT_EQ(out[out_len], '\0');
    gh_free(out);
    ASSERT_EQ(gh_b64_decode(&out, &out_len, std, strlen(std)), 0);
    ASSERT_EQ(out_len, len);
    ASSERT_EQ(memcmp(out, in, len), 0);
    gh_free(out);
    gh_free(url);
    gh_free(std);
  }
}

static int decodes(const char *s, size_t len) {
  uint8_t *out = (uint8_t *)"x";
  size_t out_len = 7;
  int ret = gh_b64url_decode(&out, &out_len, s, len);
  if (ret != 0) {
    /* Failure leaves clean outputs. */
    if (out != NULL || out_len != 0) return 2;
    return 0;
  }
  gh_free(out);
  return 1;
}

#define DECODES(s) decodes((s), sizeof(s) - 1)

static void test_decode_strict(void) {
  ASSERT_EQ(DECODES("Zm9v"), 1);
  ASSERT_EQ(DECODES("Zg"), 1);
  ASSERT_EQ(DECODES(""), 1);
  /* Padding, in any amount. */
  ASSERT_EQ(DECODES("Zg=="), 0);
  ASSERT_EQ(DECODES("Zg="), 0);
  ASSERT_EQ(DECODES("Zm8="), 0);
  ASSERT_EQ(DECODES("="), 0);
  /* The standard alphabet. */
  ASSERT_EQ(DECODES("+/8"), 0);
  ASSERT_EQ(DECODES("ab+c"), 0);
  ASSERT_EQ(DECODES("ab/c"), 0);
  /* Whitespace anywhere. */
  ASSERT_EQ(DECODES("Zm9v\n"), 0);
  ASSERT_EQ(DECODES(" Zm9v"), 0);
  ASSERT_EQ(DECODES("Zm 9v"), 0);
  ASSERT_EQ(DECODES("Zm9v\r\nZm9v"), 0);
  /* An embedded NUL and bytes outside ASCII. */
  ASSERT_EQ(DECODES("Zm\0v"), 0);
  ASSERT_EQ(DECODES("Zm\xc3\xa9"), 0);
  /* Impossible lengths: 4n+1 characters. */
  ASSERT_EQ(DECODES("Z"), 0);
  ASSERT_EQ(DECODES("Zm9vY"), 0);
  /* Non-canonical: unused low bits set ("Zh" and "Zg" would both be "f"). */
  ASSERT_EQ(DECODES("Zh"), 0);
  ASSERT_EQ(DECODES("Z_"), 0);
  ASSERT_EQ(DECODES("Zm9"), 0);
  ASSERT_EQ(DECODES("Zm-"), 0);
  ASSERT_EQ(DECODES("Zm8"), 1);
}

static int std_decodes(const char *s, size_t len) {
  uint8_t *out = (uint8_t *)"x";
  size_t out_len = 7;
  if (gh_b64_decode(&out, &out_len, s, len) != 0) return out != NULL || out_len != 0 ? 2 : 0;
  gh_free(out);
  return 1;
}

#define STD_DECODES(s) std_decodes((s), sizeof(s) - 1)

/* Standard base64 as etcd's JSON gateway writes it: padded, '+' and '/'. */
static void test_std_decode_strict(void) {
  ASSERT_EQ(STD_DECODES("Zm9v"), 1);
  ASSERT_EQ(STD_DECODES("Zg=="), 1);
  ASSERT_EQ(STD_DECODES("Zm8="), 1);
  ASSERT_EQ(STD_DECODES("+/8="), 1);
  ASSERT_EQ(STD_DECODES(""), 1);
  ASSERT_EQ(STD_DECODES("Zg"), 0);   /* unpadded */
  ASSERT_EQ(STD_DECODES("Zg="), 0);  /* not whole quanta */
  ASSERT_EQ(STD_DECODES("Z==="), 0); /* too much padding */
  ASSERT_EQ(STD_DECODES("===="), 0);
  ASSERT_EQ(STD_DECODES("Zm=v"), 0); /* padding inside */
  ASSERT_EQ(STD_DECODES("-_8="), 0); /* the URL alphabet */
  ASSERT_EQ(STD_DECODES("Zh=="), 0); /* unused bits set */
  ASSERT_EQ(STD_DECODES("Zm9v\n"), 0);
}

static void test_round_trip_lengths(void) {
  uint8_t buf[300];
  for (size_t i = 0; i < sizeof(buf); i++) buf[i] = (uint8_t)(i * 167 + 13);
  for (size_t len = 0; len <= sizeof(buf); len++) {
    char *url = gh_b64url_encode(buf, len);
    char *std = gh_b64_encode(buf, len);
    ASSERT_EQ(strlen(url), (len * 4 + 2) / 3);
    ASSERT_EQ(strlen(std), (len + 2) / 3 * 4);
    uint8_t *out;
    size_t out_len;
    ASSERT_EQ(gh_b64url_decode(&out, &out_len, url, strlen(url)), 0);
    ASSERT_EQ(out_len, len);
    ASSERT_EQ(memcmp(out, buf, len), 0);
    gh_free(out);
    gh_free(url);
    gh_free(std);
  }
}

int main(void) {
  RUN(test_rfc4648_vectors);
  RUN(test_decode_strict);
  RUN(test_std_decode_strict);
  RUN(test_round_trip_lengths);
  TEST_EXIT();
}
