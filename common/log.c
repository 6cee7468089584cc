#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile int g_level = GH_LOG_INFO;
static volatile int g_format = GH_LOG_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void gh_log_setup(gh_log_level_t level, gh_log_format_t format) {
  g_level = (int)level;
  g_format = (int)format;
}

int gh_log_enabled(gh_log_level_t level) { return (int)level >= g_level; }

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

void gh_log(gh_log_level_t level, const char *component, const char *fmt, ...) {
  if (!gh_log_enabled(level)) return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);

  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[40];
  size_t tl = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + tl, sizeof(ts) - tl, ".%03dZ", (int)(tv.tv_usec / 1000) % 1000);

  char line[4096];
  size_t n;
  if (g_format == GH_LOG_JSON) {
    n = (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":\"",
                         ts, level_names[level]);
    n = json_escape(line, n, sizeof(line), component);
    n += (size_t)snprintf(line + n, sizeof(line) - n, "\",\"msg\":\"");
    n = json_escape(line, n, sizeof(line), msg);
    if (n + 3 > sizeof(line)) n = sizeof(line) - 3;
    line[n++] = '"';
    line[n++] = '}';
    line[n++] = '\n';
  } else {
    n = (size_t)snprintf(line, sizeof(line), "%s %-5s %s: %s\n", ts, level_names[level],
                         component, msg);
    if (n >= sizeof(line)) {
      n = sizeof(line) - 1;
      line[n - 1] = '\n';
    }
  }
  gh_log_raw(line, (unsigned)n);
}

void gh_log_raw(const char *line, unsigned len) {
  while (len > 0) {
    ssize_t w = write(STDERR_FILENO, line, len);
    if (w <= 0) return;
    line += w;
    len -= (unsigned)w;
  }
}
