/* test_text.c: gh_text_clean — what the admin API does to text from peers
 * before a browser shows it. */
#include "common/common.h"
#include "test.h"

static const struct {
  const char *in, *out;
} vectors[] = {
    {"", ""},
    {"app.example.com", "app.example.com"},
    {"<script>alert(1)</script>", "<script>alert(1)</script>"}, /* markup is the page's job */
    {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x92", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x92"},
    {"a\r\nb\tc\x1b[0m\x7f", "a??b?c?[0m?"},
    {"\xff\xfe", "??"},
    {"\xc0\xaf", "??"},             /* an overlong '/' */
    {"\xe0\x80\xaf", "???"},        /* another */
    {"\xed\xa0\x80", "???"},        /* a surrogate */
    {"\xf4\x90\x80\x80", "????"},   /* past U+10FFFF */
    {"ok\xe2\x82", "ok??"},         /* cut short */
    {"\xe2\x82" "A", "??A"},
};

static void test_vectors(void) {
  for (size_t i = 0; i < GH_ARRAY_LEN(vectors); i++) {
    char *s = gh_strdup(vectors[i].in);
    ASSERT_STR_EQ(gh_text_clean(s), vectors[i].out);
    gh_free(s);
  }
}

int main(void) {
  RUN(test_vectors);
  TEST_EXIT();
}
