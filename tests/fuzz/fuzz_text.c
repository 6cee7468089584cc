/* fuzz_text.c: gh_text_clean, which every string from a peer (a CA's
 * error, an upstream's status line, a client's SNI, a certificate's
 * names) goes through before the admin API hands it to a browser.
 *
 * Invariants: no crash, no read past the string; the length is kept;
 * what comes out is valid UTF-8 (checked here by decoding to code points,
 * not by the same table) with no control character; text that was already
 * clean is unchanged, and cleaning twice is cleaning once. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

/* decode returns the code point at |p| and its length in |*n|, or -1 if
 * the bytes there are not a valid, shortest-form UTF-8 scalar value. */
static long decode(const unsigned char *p, size_t *n) {
  static const unsigned char lead_bits[] = {0, 0x7f, 0x1f, 0x0f, 0x07};
  static const long min[] = {0, 0, 0x80, 0x800, 0x10000};
  size_t len = p[0] < 0x80 ? 1 : (p[0] & 0xe0) == 0xc0 ? 2 : (p[0] & 0xf0) == 0xe0 ? 3
             : (p[0] & 0xf8) == 0xf0 ? 4 : 0;
  if (len == 0) return -1;
  long cp = p[0] & lead_bits[len];
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80) return -1;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return -1;
  *n = len;
  return cp;
}

/* clean reports whether |s| is valid UTF-8 without control characters. */
static int clean(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    size_t n = 0;
    long cp = decode(p, &n);
    if (cp < 0x20 || cp == 0x7f) return 0;
    p += n;
  }
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096) return 0;
  char *s = gh_malloc(size + 1); /* exact size: a read past the NUL is caught */
  memcpy(s, data, size);
  s[size] = '\0';
  size_t len = strlen(s);
  int was_clean = clean(s);
  char *before = gh_strdup(s);
  gh_text_clean(s);
  if (strlen(s) != len) {
    fprintf(stderr, "length changed: %zu -> %zu\n", len, strlen(s));
    abort();
  }
  if (!clean(s)) {
    fprintf(stderr, "not clean after gh_text_clean\n");
    abort();
  }
  if (was_clean && strcmp(s, before) != 0) {
    fprintf(stderr, "clean text was changed\n");
    abort();
  }
  char *again = gh_strdup(s);
  gh_text_clean(again);
  if (strcmp(again, s) != 0) {
    fprintf(stderr, "cleaning twice differs from once\n");
    abort();
  }
  gh_free(again);
  gh_free(before);
  gh_free(s);
  return 0;
}
