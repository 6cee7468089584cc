/* test_problem.c: acme/problem.c (problem documents, Retry-After, Link
 * headers) and acme/nonce.c, all fed hostile input. */
#include <string.h>
#include <time.h>

#include "acme/engine_internal.h"
#include "common/common.h"
#include "test.h"

static int parse(acme_problem_t *p, const char *s) { return acme__problem_parse(p, s, strlen(s)); }

static void test_problem_basic(void) {
  acme_problem_t p;
  ASSERT_EQ(parse(&p, "{\"type\":\"urn:ietf:params:acme:error:badNonce\",\"detail\":\"JWS has "
                      "an invalid anti-replay nonce\",\"status\":400}"), 0);
  ASSERT_STR_EQ(p.type, "urn:ietf:params:acme:error:badNonce");
  ASSERT_STR_EQ(p.detail, "JWS has an invalid anti-replay nonce");
  ASSERT_TRUE(acme__problem_is(&p, "badNonce"));
  ASSERT_FALSE(acme__problem_is(&p, "badNonc"));
  ASSERT_FALSE(acme__problem_is(&p, "rateLimited"));
  ASSERT_STR_EQ(p.message,
                "urn:ietf:params:acme:error:badNonce: JWS has an invalid anti-replay nonce");
  acme__problem_cleanup(&p);
  acme__problem_cleanup(&p); /* idempotent */
}

static void test_problem_subproblems(void) {
  acme_problem_t p;
  ASSERT_EQ(parse(&p, "{\"type\":\"urn:ietf:params:acme:error:malformed\",\"detail\":\"Some "
                      "of the identifiers requested were rejected\",\"subproblems\":["
                      "{\"type\":\"urn:ietf:params:acme:error:malformed\",\"detail\":\"Invalid "
                      "underscore in DNS name\",\"identifier\":{\"type\":\"dns\",\"value\":"
                      "\"_example.org\"}},"
                      "{\"type\":\"urn:ietf:params:acme:error:rejectedIdentifier\",\"detail\":"
                      "\"This CA will not issue for example.net\",\"identifier\":{\"type\":"
                      "\"dns\",\"value\":\"example.net\"}}, 7, {\"identifier\":3}]}"), 0);
  ASSERT_CONTAINS(p.message, "; subproblems:");
  ASSERT_CONTAINS(p.message, "[_example.org: urn:ietf:params:acme:error:malformed: Invalid "
                             "underscore in DNS name]");
  ASSERT_CONTAINS(p.message, "[example.net: urn:ietf:params:acme:error:rejectedIdentifier");
  ASSERT_CONTAINS(p.message, "(not an object)");
  ASSERT_CONTAINS(p.message, "[(no type): (no detail)]");
  acme__problem_cleanup(&p);
}

static void test_problem_wrong_types(void) {
  acme_problem_t p;
  /* A detail alone is still a problem; a type of the wrong type reads as absent. */
  ASSERT_EQ(parse(&p, "{\"type\":5,\"detail\":\"oops\"}"), 0);
  ASSERT_STR_EQ(p.type, "");
  ASSERT_STR_EQ(p.message, "(no type): oops");
  ASSERT_FALSE(acme__problem_is(&p, "badNonce"));
  acme__problem_cleanup(&p);
  ASSERT_EQ(parse(&p, "{\"type\":\"urn:ietf:params:acme:error:x\",\"detail\":[1],"
                      "\"subproblems\":\"no\"}"), 0);
  ASSERT_STR_EQ(p.message, "urn:ietf:params:acme:error:x: (no detail)");
  acme__problem_cleanup(&p);
  ASSERT_EQ(parse(&p, "{\"type\":null,\"detail\":{}}"), -1);
  ASSERT_NULL(p.message);
  ASSERT_EQ(parse(&p, "[\"type\"]"), -1);
  ASSERT_EQ(parse(&p, "\"type\""), -1);
}

static void test_problem_garbage(void) {
  acme_problem_t p;
  ASSERT_EQ(parse(&p, ""), -1);
  ASSERT_EQ(parse(&p, "{\"type\":\"urn:ietf:params:acme:error:badNonce\""), -1);
  ASSERT_EQ(parse(&p, "<html>502 Bad Gateway</html>"), -1);
  ASSERT_EQ(acme__problem_parse(&p, "{\"detail\":\"x\"}garbage", 14), 0); /* length-bounded */
  acme__problem_cleanup(&p);
  /* A huge detail is truncated, not copied whole. */
  size_t n = 100000;
  char *big = gh_malloc(n + 64);
  strcpy(big, "{\"detail\":\"");
  memset(big + 11, 'a', n);
  strcpy(big + 11 + n, "\"}");
  ASSERT_EQ(parse(&p, big), 0);
  ASSERT_TRUE(strlen(p.detail) <= 1024);
  acme__problem_cleanup(&p);
  /* Many subproblems are summarized. */
  char *many = gh_strdup("{\"type\":\"t\",\"subproblems\":[");
  for (int i = 0; i < 50; i++) {
    char *next = gh_asprintf("%s%s{\"type\":\"s\",\"detail\":\"d\"}", many, i ? "," : "");
    gh_free(many);
    many = next;
  }
  char *doc = gh_asprintf("%s]}", many);
  ASSERT_EQ(parse(&p, doc), 0);
  ASSERT_CONTAINS(p.message, " ...");
  acme__problem_cleanup(&p);
  gh_free(doc);
  gh_free(many);
  gh_free(big);
}

static void test_retry_after(void) {
  uint64_t ms = 1;
  ASSERT_EQ(acme__retry_after_parse("120", 0, &ms), 0);
  ASSERT_UEQ(ms, 120000);
  ASSERT_EQ(acme__retry_after_parse(" 0 ", 0, &ms), 0);
  ASSERT_UEQ(ms, 0);
  time_t now = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */
  ASSERT_EQ(acme__retry_after_parse("Sun, 06 Nov 1994 08:50:07 GMT", now, &ms), 0);
  ASSERT_UEQ(ms, 30000);
  ASSERT_EQ(acme__retry_after_parse("Sun, 06 Nov 1994 08:00:00 GMT", now, &ms), 0);
  ASSERT_UEQ(ms, 0); /* in the past: now */
  ASSERT_EQ(acme__retry_after_parse("", now, &ms), -1);
  ASSERT_EQ(acme__retry_after_parse("-5", now, &ms), -1);
  ASSERT_EQ(acme__retry_after_parse("12abc", now, &ms), -1);
  ASSERT_EQ(acme__retry_after_parse("99999999999999999999", now, &ms), -1);
  ASSERT_EQ(acme__retry_after_parse("Sun, 06 Nov 1994 08:50:07 PST", now, &ms), -1);
  ASSERT_EQ(acme__retry_after_parse("tomorrow", now, &ms), -1);
}

static void test_links(void) {
  char **urls;
  const char *one[] = {"<https://ca/cert/1/1>;rel=\"alternate\""};
  ASSERT_EQ(acme__links(&urls, one, 1, "alternate"), 1);
  ASSERT_STR_EQ(urls[0], "https://ca/cert/1/1");
  acme__links_free(urls, 1);
  ASSERT_EQ(acme__links(&urls, one, 1, "up"), 0);
  ASSERT_NULL(urls);

  /* Several links in one value, unquoted rel, other params, odd spacing,
   * relation lists, and several header values. */
  const char *many[] = {
      "<https://ca/dir>;rel=\"index\", <https://ca/cert/1/1>; rel=alternate ; title=\"a, b; c\"",
      " <https://ca/cert/1/2> ; title=\"x\\\"y\" ; rel=\"up alternate\",<https://ca/issuer>;rel=up",
  };
  size_t n = acme__links(&urls, many, 2, "alternate");
  ASSERT_EQ(n, 2);
  ASSERT_STR_EQ(urls[0], "https://ca/cert/1/1");
  ASSERT_STR_EQ(urls[1], "https://ca/cert/1/2");
  acme__links_free(urls, n);
  n = acme__links(&urls, many, 2, "up");
  ASSERT_EQ(n, 2);
  ASSERT_STR_EQ(urls[0], "https://ca/cert/1/2");
  ASSERT_STR_EQ(urls[1], "https://ca/issuer");
  acme__links_free(urls, n);

  /* Garbage: no crash, nothing (or what came before the garbage). */
  const char *bad[] = {"https://ca/x;rel=alternate", "<https://ca/y;rel=alternate", "",
                       "<>;rel=alternate", "<https://ca/z>;rel", "<https://ca/w>;rel=\"alternate"};
  n = acme__links(&urls, bad, GH_ARRAY_LEN(bad), "alternate");
  ASSERT_EQ(n, 1);
  ASSERT_STR_EQ(urls[0], "https://ca/w"); /* unterminated quote: value runs to the end */
  acme__links_free(urls, n);
}

static void test_nonce_pool(void) {
  acme_nonce_pool_t pool;
  memset(&pool, 0, sizeof(pool));
  ASSERT_NULL(acme__nonce_pop(&pool));
  acme__nonce_push(&pool, "");
  acme__nonce_push(&pool, "bad nonce");
  acme__nonce_push(&pool, NULL);
  ASSERT_EQ(pool.num_nonces, 0);
  for (int i = 0; i < 20; i++) {
    char v[16];
    snprintf(v, sizeof(v), "n%d", i);
    acme__nonce_push(&pool, v);
  }
  ASSERT_EQ(pool.num_nonces, ACME_NONCE_POOL_MAX);
  char *n = acme__nonce_pop(&pool);
  ASSERT_STR_EQ(n, "n19");
  gh_free(n);
  acme__nonce_cleanup(&pool);
  ASSERT_EQ(pool.num_nonces, 0);
}

int main(void) {
  RUN(test_problem_basic);
  RUN(test_problem_subproblems);
  RUN(test_problem_wrong_types);
  RUN(test_problem_garbage);
  RUN(test_retry_after);
  RUN(test_links);
  RUN(test_nonce_pool);
  TEST_EXIT();
}
