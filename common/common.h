/* common.h: allocation and string helpers shared by every module.
 *
 * Allocation failure aborts (h2o's h2o_mem_alloc): a proxy that has run out
 * of memory cannot serve anyone, and code that pretends to recover is code
 * that is never tested. */
#ifndef GH_COMMON_H
#define GH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GH_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define GH_CONTAINER_OF(ptr, type, member) \
  ((type *)((char *)(ptr) - offsetof(type, member)))

/* gh_malloc, gh_calloc, gh_realloc, gh_strdup, gh_strndup: as libc, but
 * never return NULL (they abort with a message instead). gh_free(NULL) does
 * nothing. */
void *gh_malloc(size_t len);
void *gh_calloc(size_t num, size_t len);
void *gh_realloc(void *ptr, size_t len);
char *gh_strdup(const char *s);
char *gh_strndup(const char *s, size_t len);
#define gh_free free

/* gh_asprintf returns a newly allocated formatted string (never NULL). */
char *gh_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* gh_str_t is a view of bytes that are not NUL-terminated: wire data is
 * handled through views, never through C-string functions. */
typedef struct {
  const char *ptr;
  size_t len;
} gh_str_t;

#define GH_STR(lit) ((gh_str_t){(lit), sizeof(lit) - 1})

/* gh_str_ieq reports whether |a| and |b| are equal ignoring ASCII case. */
int gh_str_ieq(gh_str_t a, gh_str_t b);

/* gh_now_ms returns a monotonic clock in milliseconds. */
uint64_t gh_now_ms(void);

/* gh_wall_ms returns the wall clock in milliseconds since the epoch: for
 * times shared with other hosts, never for intervals. */
uint64_t gh_wall_ms(void);

/* gh_format_time writes |t| as RFC 3339 UTC ("2026-11-28T16:46:15Z") into
 * |buf| (21 bytes suffice) and returns |buf|. */
const char *gh_format_time(char *buf, size_t size, time_t t);

/* gh_text_clean makes the NUL-terminated |s| safe to show: every byte
 * that is not part of valid UTF-8, and every control character (below
 * 0x20, and 0x7f), becomes '?', in place; the length does not change.
 * For text from peers (a CA's error, an upstream's answer, a client's SNI)
 * that the admin API hands to JSON and a browser. Returns |s|. */
char *gh_text_clean(char *s);

#endif
