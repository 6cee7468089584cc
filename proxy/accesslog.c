/* accesslog.c: one line per request, JSON or combined format, handed to
 * the log writer (common/log.h: queued, never blocking the worker). */
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

#include "common/log.h"
#include "proxy/exchange.h"

/* esc copies |s| into |out| escaped for a JSON string (and safe inside a
 * quoted combined-format field); returns the bytes written. */
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

void px_access_log(px_exchange_t *ex) {
  const conf_t *conf = ex->gen->conf;
  if (conf->access_log == CONF_ACCESS_OFF) return;
  char path[1024], host[300], ts[40];
  esc(path, sizeof(path), ex->req.buf ? ex->req.buf : "", ex->url_len);
  esc(host, sizeof(host), ex->host ? ex->host : "", ex->host ? strlen(ex->host) : 0);
  /* A head that failed before its end has no method (and a recycled
   * exchange still holds an old buffer, so the buffer says nothing). */
  const char *method = ex->method_known ? llhttp_method_name((llhttp_method_t)ex->method) : "-";
  uint64_t dur = px_now(&ex->w->loop) - ex->start_ms;
  const char *up = ex->upstream_name ? ex->upstream_name : "-";
  const char *proto = ex->http_major == 2 ? "HTTP/2.0" : ex->http_minor ? "HTTP/1.1" : "HTTP/1.0";
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  char line[2048];
  int n;
  if (conf->access_log == CONF_ACCESS_JSON) {
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    n = snprintf(line, sizeof(line),
                 "{\"ts\":\"%s.%03dZ\",\"level\":\"info\",\"component\":\"access\","
                 "\"client\":\"%s\",\"host\":\"%s\",\"method\":\"%s\",\"path\":\"%s\","
                 "\"proto\":\"%s\",\"status\":%d,\"bytes\":%llu,\"duration_ms\":%llu,"
                 "\"upstream\":\"%s\"}\n",
                 ts, (int)(tv.tv_usec / 1000), ex->client_ip, host, method, path, proto, ex->status,
                 (unsigned long long)ex->resp_bytes, (unsigned long long)dur, up);
  } else {
    localtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%d/%b/%Y:%H:%M:%S %z", &tm);
    n = snprintf(line, sizeof(line), "%s - - [%s] \"%s %s %s\" %d %llu \"%s\" %llums %s\n",
                 ex->client_ip, ts, method, path, proto, ex->status,
                 (unsigned long long)ex->resp_bytes, host, (unsigned long long)dur, up);
  }
  if (n > 0) gh_log_access(line, (size_t)(n < (int)sizeof(line) ? n : (int)sizeof(line) - 1));
}
