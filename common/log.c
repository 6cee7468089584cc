/* log.c: levels, formats and the formatting of gatehouse's own lines.
 * Where a finished line goes (the writer thread's rings, or straight to
 * the destination before it runs) is log_writer.c's business. */
#include "common/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "common/log_internal.h"

static _Atomic int g_level = GH_LOG_INFO;
static _Atomic int g_format = GH_LOG_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void gh_log_setup(gh_log_level_t level, gh_log_format_t format) {
  atomic_store_explicit(&g_level, (int)level, memory_order_relaxed);
  atomic_store_explicit(&g_format, (int)format, memory_order_relaxed);
}

int gh_log_enabled(gh_log_level_t level) {
  return (int)level >= atomic_load_explicit(&g_level, memory_order_relaxed);
}

int gh_log_level_parse(const char *name, gh_log_level_t *out_level) {
  for (unsigned i = 0; i < 4; i++) {
    if (strcmp(name, level_names[i]) == 0) {
      *out_level = (gh_log_level_t)i;
      return 0;
    }
  }
  return -1;
}

/* json_escape appends |s| to |buf| as the inside of a JSON string. */
static size_t json_escape(char *buf, size_t pos, size_t cap, const char *s) {
  for (; *s && pos + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      buf[pos++] = '\\';
      buf[pos++] = (char)c;
    } else if (c < 0x20) {
      pos += (size_t)snprintf(buf + pos, cap - pos, "\\u%04x", c);
    } else {
      buf[pos++] = (char)c;
    }
  }
  return pos;
}

size_t gh__log_format(char *line, size_t cap, gh_log_level_t level, const char *component,
                      const char *msg) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[40];
  size_t tl = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + tl, sizeof(ts) - tl, ".%03dZ", (int)(tv.tv_usec / 1000) % 1000);

  size_t n;
  if (atomic_load_explicit(&g_format, memory_order_relaxed) == GH_LOG_JSON) {
    n = (size_t)snprintf(line, cap, "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":\"", ts,
                         level_names[level]);
    n = json_escape(line, n, cap, component);
    n += (size_t)snprintf(line + n, cap - n, "\",\"msg\":\"");
    n = json_escape(line, n, cap, msg);
    if (n + 3 > cap) n = cap - 3;
    line[n++] = '"';
    line[n++] = '}';
    line[n++] = '\n';
  } else {
    n = (size_t)snprintf(line, cap, "%s %-5s %s: %s\n", ts, level_names[level], component, msg);
    if (n >= cap) {
      n = cap - 1;
      line[n - 1] = '\n';
    }
  }
  return n;
}

void gh_log(gh_log_level_t level, const char *component, const char *fmt, ...) {
  if (!gh_log_enabled(level)) return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  char line[4096];
  size_t n = gh__log_format(line, sizeof(line), level, component, msg);
  gh__log_emit(GH__LOG_OWN, line, n);
}

void gh_log_access(const char *line, size_t len) { gh__log_emit(GH__LOG_ACCESS, line, len); }
