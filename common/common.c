#include "common/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void oom(size_t len) {
  fprintf(stderr, "gatehouse: out of memory allocating %zu bytes\n", len);
  abort();
}

void *gh_malloc(size_t len) {
  void *p = malloc(len ? len : 1);
  if (p == NULL) oom(len);
  return p;
}

void *gh_calloc(size_t num, size_t len) {
  void *p = calloc(num ? num : 1, len ? len : 1);
  if (p == NULL) oom(num * len);
  return p;
}

void *gh_realloc(void *ptr, size_t len) {
  void *p = realloc(ptr, len ? len : 1);
  if (p == NULL) oom(len);
  return p;
}

char *gh_strdup(const char *s) { return gh_strndup(s, strlen(s)); }

char *gh_strndup(const char *s, size_t len) {
  char *p = gh_malloc(len + 1);
  memcpy(p, s, len);
  p[len] = '\0';
  return p;
}

char *gh_asprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  char *p = gh_malloc((size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return p;
}

static int lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

int gh_str_ieq(gh_str_t a, gh_str_t b) {
  if (a.len != b.len) return 0;
  for (size_t i = 0; i < a.len; i++) {
    if (lower((unsigned char)a.ptr[i]) != lower((unsigned char)b.ptr[i])) return 0;
  }
  return 1;
}

uint64_t gh_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t gh_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

const char *gh_format_time(char *buf, size_t size, time_t t) {
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/* utf8_len is the length of the valid UTF-8 sequence at |p| (RFC 3629:
 * shortest form, no surrogates, at most U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *p) {
  unsigned char c = p[0];
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c == 0xe0) n = 3, lo = 0xa0;
  else if (c == 0xed) n = 3, hi = 0x9f;
  else if (c >= 0xe1 && c <= 0xef) n = 3;
  else if (c == 0xf0) n = 4, lo = 0x90;
  else if (c == 0xf4) n = 4, hi = 0x8f;
  else if (c >= 0xf1 && c <= 0xf3) n = 4;
  else return 0;
  if (p[1] < lo || p[1] > hi) return 0; /* a NUL ends here too */
  for (size_t i = 2; i < n; i++)
    if (p[i] < 0x80 || p[i] > 0xbf) return 0;
  return n;
}

char *gh_text_clean(char *s) {
  unsigned char *p = (unsigned char *)s;
  while (*p != '\0') {
    size_t n = utf8_len(p);
    if (n == 0 || (n == 1 && (*p < 0x20 || *p == 0x7f))) {
      *p++ = '?';
    } else {
      p += n;
    }
  }
  return s;
}
