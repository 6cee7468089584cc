/* buf.c: the growable byte buffer and the header store. */
#include <stdarg.h>
#include <stdio.h>

#include "proxy/hdrs.h"

void px_buf_append(px_buf_t *b, const void *p, size_t len) {
  if (len == 0) return;
  if (b->len + len > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 256;
    while (cap < b->len + len) cap *= 2;
    b->p = gh_realloc(b->p, cap);
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, len);
  b->len += len;
}

void px_buf_appendf(px_buf_t *b, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n < sizeof(tmp)) {
    px_buf_append(b, tmp, (size_t)n);
    return;
  }
  char *big = gh_malloc((size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  va_end(ap);
  px_buf_append(b, big, (size_t)n);
  gh_free(big);
}

void px_buf_consume(px_buf_t *b, size_t len) {
  if (len >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->p, b->p + len, b->len - len);
  b->len -= len;
}

void px_buf_free(px_buf_t *b) {
  gh_free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

void px_hdrs_reset(px_hdrs_t *hs) {
  hs->len = 0;
  hs->num = 0;
  hs->in_value = 0;
}

void px_hdrs_cleanup(px_hdrs_t *hs) {
  gh_free(hs->buf);
  gh_free(hs->h);
  memset(hs, 0, sizeof(*hs));
}

static void store(px_hdrs_t *hs, const char *p, size_t len) {
  if (hs->len + len > hs->cap) {
    size_t cap = hs->cap ? hs->cap * 2 : 1024;
    while (cap < hs->len + len) cap *= 2;
    hs->buf = gh_realloc(hs->buf, cap);
    hs->cap = cap;
  }
  memcpy(hs->buf + hs->len, p, len);
  hs->len += len;
}

size_t px_hdrs_name(px_hdrs_t *hs, const char *p, size_t len) {
  if (hs->num == 0 || hs->in_value) {
    if (hs->num == hs->cap_h) {
      hs->cap_h = hs->cap_h ? hs->cap_h * 2 : 16;
      hs->h = gh_realloc(hs->h, hs->cap_h * sizeof(px_hdr_t));
    }
    px_hdr_t *h = &hs->h[hs->num++];
    h->name_off = (uint32_t)hs->len;
    h->name_len = 0;
    h->val_off = (uint32_t)hs->len;
    h->val_len = 0;
    hs->in_value = 0;
  }
  store(hs, p, len);
  hs->h[hs->num - 1].name_len += (uint32_t)len;
  hs->h[hs->num - 1].val_off = (uint32_t)hs->len;
  return hs->len;
}

size_t px_hdrs_value(px_hdrs_t *hs, const char *p, size_t len) {
  if (hs->num == 0) return hs->len;
  if (!hs->in_value) {
    hs->in_value = 1;
    hs->h[hs->num - 1].val_off = (uint32_t)hs->len;
  }
  store(hs, p, len);
  hs->h[hs->num - 1].val_len += (uint32_t)len;
  return hs->len;
}

void px_hdrs_trim_value(px_hdrs_t *hs) {
  if (hs->num == 0) return;
  px_hdr_t *h = &hs->h[hs->num - 1];
  while (h->val_len && (hs->buf[h->val_off + h->val_len - 1] == ' ' ||
                        hs->buf[h->val_off + h->val_len - 1] == '\t'))
    h->val_len--;
}

size_t px_hdrs_raw(px_hdrs_t *hs, const char *p, size_t len) {
  store(hs, p, len);
  return hs->len;
}

gh_str_t px_hdrs_get(const px_hdrs_t *hs, gh_str_t name) {
  for (size_t i = 0; i < hs->num; i++) {
    if (gh_str_ieq(px_hdr_name(hs, i), name)) return px_hdr_value(hs, i);
  }
  return (gh_str_t){NULL, 0};
}

int px_hdrs_has(const px_hdrs_t *hs, gh_str_t name) { return px_hdrs_get(hs, name).ptr != NULL; }

/* in_list reports whether |name| appears in the comma-separated |list|. */
static int in_list(gh_str_t list, gh_str_t name) {
  size_t i = 0;
  while (i < list.len) {
    while (i < list.len && (list.ptr[i] == ' ' || list.ptr[i] == '\t' || list.ptr[i] == ','))
      i++;
    size_t start = i;
    while (i < list.len && list.ptr[i] != ',') i++;
    size_t end = i;
    while (end > start && (list.ptr[end - 1] == ' ' || list.ptr[end - 1] == '\t')) end--;
    if (gh_str_ieq((gh_str_t){list.ptr + start, end - start}, name)) return 1;
  }
  return 0;
}

int px_hop_by_hop(const px_hdrs_t *hs, gh_str_t name) {
  static const gh_str_t hop[] = {GH_STR("connection"), GH_STR("keep-alive"),
                                 GH_STR("proxy-connection"), GH_STR("te"),
                                 GH_STR("transfer-encoding"), GH_STR("upgrade"),
                                 GH_STR("content-length")};
  for (size_t i = 0; i < GH_ARRAY_LEN(hop); i++) {
    if (gh_str_ieq(name, hop[i])) return 1;
  }
  /* Connection may name only end-to-end fields; never the framing or Host. */
  if (gh_str_ieq(name, GH_STR("host"))) return 0;
  for (size_t i = 0; i < hs->num; i++) {
    if (gh_str_ieq(px_hdr_name(hs, i), GH_STR("connection")) &&
        in_list(px_hdr_value(hs, i), name))
      return 1;
  }
  return 0;
}

size_t px_u64_text(char *out, uint64_t v) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  return n;
}

char *px_host_text(gh_str_t host) {
  gh_str_t h = px_host_no_port(host);
  char *out = gh_strndup(h.ptr ? h.ptr : "", h.len);
  for (char *p = out; *p; p++) {
    if (*p >= 'A' && *p <= 'Z') *p = (char)(*p + 32);
  }
  return out;
}

/* px_valid_host checks a Host value (RFC 9112 3.2): a reg-name or an IPv4
 * address, or an IPv6 literal in brackets, then an optional ":" and port
 * digits (at most 65535). */
int px_valid_host(gh_str_t s) {
  if (s.len == 0 || s.len > 260) return 0;
  size_t i = 0;
  if (s.ptr[0] == '[') {
    for (i = 1; i < s.len && s.ptr[i] != ']'; i++) {
      unsigned char ch = (unsigned char)s.ptr[i];
      if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F') ||
            ch == ':' || ch == '.'))
        return 0;
    }
    if (i == s.len || i == 1) return 0;
    i++;
  } else {
    for (; i < s.len && s.ptr[i] != ':'; i++) {
      unsigned char ch = (unsigned char)s.ptr[i];
      if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
            ch == '-' || ch == '.' || ch == '_'))
        return 0;
    }
    if (i == 0) return 0;
  }
  if (i == s.len) return 1;
  if (s.ptr[i] != ':') return 0;
  unsigned long port = 0;
  size_t digits = 0;
  for (i++; i < s.len; i++, digits++) {
    if (s.ptr[i] < '0' || s.ptr[i] > '9' || digits >= 5) return 0;
    port = port * 10 + (unsigned long)(s.ptr[i] - '0');
  }
  return port <= 65535;
}

/* px_host_no_port is |host| without its port. */
gh_str_t px_host_no_port(gh_str_t host) {
  if (host.len == 0) return host;
  if (host.ptr[0] == '[') {
    const char *end = memchr(host.ptr, ']', host.len);
    if (end) host.len = (size_t)(end - host.ptr) + 1;
  } else {
    const char *colon = memchr(host.ptr, ':', host.len);
    if (colon) host.len = (size_t)(colon - host.ptr);
  }
  return host;
}

const char *px_reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 421: return "Misdirected Request";
    case 431: return "Request Header Fields Too Large";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
  }
}
