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
