/* test.h: a tiny unit-test harness with typed asserts (after libuv's
 * test/task.h). Each test file is one executable and one ctest test; it
 * lists its cases in main() with RUN(fn). A failed assert prints the file,
 * line and both values, and the case stops; the process exits 1 if any
 * case failed. */
#ifndef GH_TEST_H
#define GH_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures_;
static int test_case_failed_;

#define TEST_FAIL_(...)                                   \
  do {                                                    \
    fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);       \
    fprintf(stderr, __VA_ARGS__);                         \
    fputc('\n', stderr);                                  \
    test_case_failed_ = 1;                                \
    return;                                               \
  } while (0)

#define ASSERT_TRUE(c) \
  do { if (!(c)) TEST_FAIL_("expected true: %s", #c); } while (0)
#define ASSERT_FALSE(c) \
  do { if (c) TEST_FAIL_("expected false: %s", #c); } while (0)
#define ASSERT_EQ(a, b)                                                        \
  do {                                                                         \
    long long a_ = (long long)(a), b_ = (long long)(b);                        \
    if (a_ != b_) TEST_FAIL_("%s == %s: %lld != %lld", #a, #b, a_, b_);        \
  } while (0)
#define ASSERT_NE(a, b)                                                        \
  do {                                                                         \
    long long a_ = (long long)(a), b_ = (long long)(b);                        \
    if (a_ == b_) TEST_FAIL_("%s != %s: both %lld", #a, #b, a_);               \
  } while (0)
#define ASSERT_UEQ(a, b)                                                         \
  do {                                                                           \
    uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);                             \
    if (a_ != b_) TEST_FAIL_("%s == %s: %" PRIu64 " != %" PRIu64, #a, #b, a_, b_); \
  } while (0)
#define ASSERT_NULL(p) \
  do { if ((p) != NULL) TEST_FAIL_("expected NULL: %s", #p); } while (0)
#define ASSERT_NOT_NULL(p) \
  do { if ((p) == NULL) TEST_FAIL_("expected non-NULL: %s", #p); } while (0)
#define ASSERT_STR_EQ(a, b)                                                    \
  do {                                                                         \
    const char *a_ = (a), *b_ = (b);                                           \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                       \
      TEST_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",     \
                 b_ ? b_ : "(null)");                                          \
  } while (0)
#define ASSERT_CONTAINS(hay, needle)                                           \
  do {                                                                         \
    const char *h_ = (hay), *n_ = (needle);                                    \
    if (h_ == NULL || strstr(h_, n_) == NULL)                                  \
      TEST_FAIL_("%s does not contain \"%s\":\n%s", #hay, n_, h_ ? h_ : "(null)"); \
  } while (0)

#define RUN(fn)                                      \
  do {                                               \
    test_case_failed_ = 0;                           \
    fn();                                            \
    if (test_case_failed_) {                         \
      test_failures_++;                              \
      fprintf(stderr, "FAIL %s\n", #fn);             \
    } else {                                         \
      fprintf(stderr, "ok   %s\n", #fn);             \
    }                                                \
  } while (0)

#define TEST_EXIT() return test_failures_ ? 1 : 0

#endif
