/* accesslog.c: one line per request, JSON or Apache's combined format,
 * handed to the log writer (common/log.h: queued, never blocking the
 * worker). */
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

#include "common/log.h"
#include "proxy/exchange.h"

/* esc copies |s| into |out| escaped for a JSON string; returns the bytes
 * written. */
static size_t esc(char *out, size_t cap, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  for (size_t i = 0; i < len && o + 7 < cap; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '"' || ch == '\\') {
      out[o++] = '\\';
      out[o++] = (char)ch;
    } else if (ch < 0x20 || ch >= 0x7f) {
      memcpy(out + o, "\\u00", 4);
      out[o + 4] = hex[ch >> 4];
      out[o + 5] = hex[ch & 15];
      o += 6;
    } else {
      out[o++] = (char)ch;
    }
  }
  out[o] = '\0';
  return o;
}

/* esc_apache appends |s| to |out| (at |o|, |cap| bytes) escaped as
 * Apache's ap_escape_logitem does for %r and %{...}i: '"' and '\' get a
 * backslash, \b \n \r \t \v their C escapes, any other byte outside
 * printable ASCII \xhh. So no request byte can end a quoted field or a
 * line (log injection). Returns the new length; stops before |cap|. */
static size_t esc_apache(char *out, size_t o, size_t cap, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < len && o + 5 < cap; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
      out[o++] = (char)ch;
      continue;
    }
    out[o++] = '\\';
    switch (ch) {
      case '"': case '\\': out[o++] = (char)ch; break;
      case '\b': out[o++] = 'b'; break;
      case '\n': out[o++] = 'n'; break;
      case '\r': out[o++] = 'r'; break;
      case '\t': out[o++] = 't'; break;
      case '\v': out[o++] = 'v'; break;
      default:
        out[o++] = 'x';
        out[o++] = hex[ch >> 4];
        out[o++] = hex[ch & 15];
    }
  }
  return o;
}

/* quoted_header appends " \"VALUE\"" for request field |name| of |ex|, or
 * " \"-\"" when the request has none. The exchange keeps the request head
 * to its end, so nothing is copied for this at parse time. */
static size_t quoted_header(char *out, size_t o, size_t cap, const px_exchange_t *ex,
                            gh_str_t name, size_t max) {
  gh_str_t v = px_hdrs_get(&ex->req, name);
  if (o + 8 > cap) return o;
  memcpy(out + o, " \"", 2);
  o += 2;
  if (v.ptr == NULL) {
    out[o++] = '-';
  } else {
    size_t end = o + max < cap - 2 ? o + max : cap - 2;
    o = esc_apache(out, o, end, v.ptr, v.len);
  }
  out[o++] = '"';
  return o;
}

/* combined formats Apache's "combined" line,
 * %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i", into |line|. */
static size_t combined(char *line, size_t cap, const px_exchange_t *ex, const char *method,
                       const char *proto, const struct timeval *tv) {
  struct tm tm;
  char ts[40];
  localtime_r(&tv->tv_sec, &tm);
  strftime(ts, sizeof(ts), "%d/%b/%Y:%H:%M:%S %z", &tm);
  size_t o = (size_t)snprintf(line, cap, "%s - - [%s] \"", ex->client_ip, ts);
  if (ex->method_known) {
    o += (size_t)snprintf(line + o, cap - o, "%s ", method);
    o = esc_apache(line, o, cap / 2, ex->req.buf ? ex->req.buf : "", ex->url_len);
    o += (size_t)snprintf(line + o, cap - o, " %s", proto);
  } else {
    line[o++] = '-'; /* no request line was read */
  }
  o += (size_t)snprintf(line + o, cap - o, "\" %d ", ex->status);
  if (ex->resp_bytes == 0) {
    line[o++] = '-';
  } else {
    o += (size_t)snprintf(line + o, cap - o, "%llu", (unsigned long long)ex->resp_bytes);
  }
  o = quoted_header(line, o, cap, ex, GH_STR("referer"), cap / 5);
  o = quoted_header(line, o, cap, ex, GH_STR("user-agent"), cap / 5);
  line[o++] = '\n';
  return o;
}

void px_access_log(px_exchange_t *ex) {
  const conf_t *conf = ex->gen->conf;
  if (conf->access_log == CONF_ACCESS_OFF) return;
  /* A head that failed before its end has no method (and a recycled
   * exchange still holds an old buffer, so the buffer says nothing). */
  const char *method = ex->method_known ? llhttp_method_name((llhttp_method_t)ex->method) : "-";
  const char *proto = ex->http_major == 2 ? "HTTP/2.0" : ex->http_minor ? "HTTP/1.1" : "HTTP/1.0";
  struct timeval tv;
  gettimeofday(&tv, NULL);
  char line[4096];
  size_t n;
  if (conf->access_log == CONF_ACCESS_JSON) {
    char path[1024], host[300], ts[40];
    esc(path, sizeof(path), ex->req.buf ? ex->req.buf : "", ex->url_len);
    esc(host, sizeof(host), ex->host ? ex->host : "", ex->host ? strlen(ex->host) : 0);
    uint64_t dur = px_now(&ex->w->loop) - ex->start_ms;
    const char *up = ex->upstream_name ? ex->upstream_name : "-";
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    int r = snprintf(line, sizeof(line),
                     "{\"ts\":\"%s.%03dZ\",\"level\":\"info\",\"component\":\"access\","
                     "\"client\":\"%s\",\"host\":\"%s\",\"method\":\"%s\",\"path\":\"%s\","
                     "\"proto\":\"%s\",\"status\":%d,\"bytes\":%llu,\"duration_ms\":%llu,"
                     "\"upstream\":\"%s\"}\n",
                     ts, (int)(tv.tv_usec / 1000), ex->client_ip, host, method, path, proto,
                     ex->status, (unsigned long long)ex->resp_bytes, (unsigned long long)dur, up);
    if (r <= 0) return;
    n = (size_t)r < sizeof(line) ? (size_t)r : sizeof(line) - 1;
  } else {
    n = combined(line, sizeof(line), ex, method, proto, &tv);
  }
  gh_log_access(line, n);
}
