/* hdrs.h: the data plane's growable byte buffer and header store.
 *
 * A header store keeps names and values as offsets into one buffer, so
 * a request head costs two allocations however many fields it has, and
 * both are kept across requests by the exchange cache. Values are raw
 * wire bytes (a {ptr,len} view, never a C string). */
#ifndef GH_PROXY_HDRS_H
#define GH_PROXY_HDRS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/common.h"

typedef struct {
  char *p;
  size_t len, cap;
} px_buf_t;

void px_buf_append(px_buf_t *b, const void *p, size_t len);
void px_buf_appendf(px_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void px_buf_consume(px_buf_t *b, size_t len);
void px_buf_free(px_buf_t *b);

typedef struct {
  uint32_t name_off, name_len, val_off, val_len;
} px_hdr_t;

typedef struct {
  char *buf;
  size_t len, cap;
  px_hdr_t *h;
  size_t num, cap_h;
  int in_value; /* last callback was a value */
} px_hdrs_t;

void px_hdrs_reset(px_hdrs_t *hs);
void px_hdrs_cleanup(px_hdrs_t *hs);
/* Appends to the current header name (starting a new header when the last
 * callback was a value) or value. Returns the new total bytes. */
size_t px_hdrs_name(px_hdrs_t *hs, const char *p, size_t len);
size_t px_hdrs_value(px_hdrs_t *hs, const char *p, size_t len);
/* Drops the trailing whitespace (SP, HTAB) of the last field's value:
 * RFC 9110 5.5, it is not part of the value. */
void px_hdrs_trim_value(px_hdrs_t *hs);
/* Appends bytes outside any header (the request target, the reason phrase). */
size_t px_hdrs_raw(px_hdrs_t *hs, const char *p, size_t len);
static inline gh_str_t px_hdr_name(const px_hdrs_t *hs, size_t i) {
  return (gh_str_t){hs->buf + hs->h[i].name_off, hs->h[i].name_len};
}
static inline gh_str_t px_hdr_value(const px_hdrs_t *hs, size_t i) {
  return (gh_str_t){hs->buf + hs->h[i].val_off, hs->h[i].val_len};
}
/* px_is_tchar reports whether |ch| may appear in a token (RFC 9110 5.6.2):
 * field names, methods, chunk extension names. */
static inline int px_is_tchar(unsigned char ch) {
  static const char extra[] = "!#$%&'*+-.^_`|~";
  return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch && memchr(extra, ch, sizeof(extra) - 1) != NULL);
}

/* px_hdrs_get returns the value of the first field named |name| (any
 * case), or {NULL, 0} when there is none; px_hdrs_has says whether there
 * is one. */
gh_str_t px_hdrs_get(const px_hdrs_t *hs, gh_str_t name);
int px_hdrs_has(const px_hdrs_t *hs, gh_str_t name);

/* px_hop_by_hop reports whether field |name| of |hs| must not be
 * forwarded: the RFC 9110 connection-specific fields, framing fields
 * (Content-Length, Transfer-Encoding: the proxy writes its own), and any
 * field named in Connection, except that Connection can never remove
 * Content-Length, Transfer-Encoding or Host (issue 11: a name listed
 * there must not make the framing disappear). */
int px_hop_by_hop(const px_hdrs_t *hs, gh_str_t name);

/* px_chunk_head writes "<hex len>\r\n" into |out| (at least 20 bytes) and
 * returns its length: the chunked-encoding prefix, without printf. */
static inline size_t px_chunk_head(char *out, size_t len) {
  static const char hex[] = "0123456789abcdef";
  char tmp[16];
  size_t n = 0;
  do {
    tmp[n++] = hex[len & 15];
    len >>= 4;
  } while (len);
  for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  out[n] = '\r';
  out[n + 1] = '\n';
  return n + 2;
}

/* px_valid_host checks a Host (or :authority) value (RFC 9112 3.2): a
 * reg-name or IPv4 address, or an IPv6 literal in brackets, then an
 * optional ":" and a port of at most 65535. */
int px_valid_host(gh_str_t s);
/* px_host_no_port is |host| without its port. */
gh_str_t px_host_no_port(gh_str_t host);
/* px_host_text returns |host| without its port, lower-cased, as a new
 * string (for the exchange and the access log). */
char *px_host_text(gh_str_t host);

/* px_reason is the reason phrase of a status Gatehouse answers itself. */
const char *px_reason(int status);

/* px_u64_text writes |v| in decimal into |out| (at least 21 bytes) and
 * returns its length. */
size_t px_u64_text(char *out, uint64_t v);

#endif
