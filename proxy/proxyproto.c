/* proxyproto.c: the PROXY protocol header, versions 1 and 2 (HAProxy's
 * doc/proxy-protocol.txt).
 *
 * Accepted: v1 "PROXY TCP4 SRC DST SPORT DPORT\r\n", the same with TCP6,
 * and "PROXY UNKNOWN...\r\n", 107 bytes at most; v2's 12-byte signature,
 * version 2, the LOCAL and PROXY commands, AF_INET and AF_INET6 over
 * STREAM (other valid combinations fall back to the socket's peer, as
 * section 2.2 asks), TLVs skipped, PX_PROXYPROTO_MAX bytes at most.
 * Whatever else arrives first is refused. */
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy/proxyproto.h"

static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                   0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

static int refuse(px_proxyproto_t *out, const char *why) {
  out->reason = why;
  return -1;
}

/* ---- version 1 ---- */

/* next_field returns the length of the field at |*p| (up to a space or
 * |end|) and moves |*p| past it and one space; -1 when the field is empty
 * or, unless |last|, not followed by a space. */
static int next_field(const uint8_t **p, const uint8_t *end, int last, const uint8_t **out_f) {
  const uint8_t *f = *p, *q = f;
  while (q < end && *q != ' ') q++;
  if (q == f) return -1;
  if (last ? q != end : q == end) return -1;
  *out_f = f;
  *p = last ? q : q + 1;
  return (int)(q - f);
}

static int v1_addr(const uint8_t *f, int n, int family, uint8_t *out) {
  char text[INET6_ADDRSTRLEN];
  if (n <= 0 || (size_t)n >= sizeof(text)) return -1;
  memcpy(text, f, (size_t)n);
  text[n] = '\0';
  return inet_pton(family, text, out) == 1 ? 0 : -1;
}

static int v1_port(const uint8_t *f, int n, uint16_t *out) {
  if (n <= 0 || n > 5) return -1;
  unsigned v = 0;
  for (int i = 0; i < n; i++) {
    if (f[i] < '0' || f[i] > '9') return -1;
    v = v * 10 + (unsigned)(f[i] - '0');
  }
  if (v > 65535) return -1;
  *out = (uint16_t)v;
  return 0;
}

static int parse_v1(const uint8_t *p, size_t len, px_proxyproto_t *out) {
  static const char prefix[] = "PROXY ";
  size_t n = len < 6 ? len : 6;
  if (memcmp(p, prefix, n) != 0) return refuse(out, "not a PROXY header");
  size_t scan = len < PX_PROXYPROTO_V1_MAX ? len : PX_PROXYPROTO_V1_MAX;
  size_t eol = 0;
  while (eol + 1 < scan && !(p[eol] == '\r' && p[eol + 1] == '\n')) eol++;
  if (eol + 1 >= scan) {
    if (len >= PX_PROXYPROTO_V1_MAX) return refuse(out, "v1 line longer than 107 bytes");
    return 0;
  }
  if (eol < 6) return refuse(out, "v1 line cut short");
  out->version = 1;
  const uint8_t *q = p + 6, *end = p + eol;
  if ((size_t)(end - q) >= 7 && memcmp(q, "UNKNOWN", 7) == 0 &&
      (end - q == 7 || q[7] == ' ')) {
    out->local = 1; /* the rest of the line is to be ignored (section 2.1) */
    return (int)eol + 2;
  }
  int family;
  if ((size_t)(end - q) >= 5 && memcmp(q, "TCP4 ", 5) == 0) family = AF_INET;
  else if ((size_t)(end - q) >= 5 && memcmp(q, "TCP6 ", 5) == 0) family = AF_INET6;
  else return refuse(out, "v1 protocol is not TCP4, TCP6 or UNKNOWN");
  q += 5;
  const uint8_t *f[4];
  int fl[4];
  for (int i = 0; i < 4; i++) {
    fl[i] = next_field(&q, end, i == 3, &f[i]);
    if (fl[i] < 0) return refuse(out, "v1 line does not have four fields");
  }
  if (v1_addr(f[0], fl[0], family, out->src) != 0 || v1_addr(f[1], fl[1], family, out->dst) != 0)
    return refuse(out, "v1 address does not match its protocol");
  if (v1_port(f[2], fl[2], &out->src_port) != 0 || v1_port(f[3], fl[3], &out->dst_port) != 0)
    return refuse(out, "v1 port is not a number in 0..65535");
  out->family = family;
  return (int)eol + 2;
}

/* ---- version 2 ---- */

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static int parse_v2(const uint8_t *p, size_t len, px_proxyproto_t *out) {
  size_t n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
  if (memcmp(p, v2_sig, n) != 0) return refuse(out, "not a PROXY header");
  if (len > 12) {
    if ((p[12] >> 4) != 2) return refuse(out, "v2 version is not 2");
    if ((p[12] & 0x0f) > 1) return refuse(out, "v2 command is not LOCAL or PROXY");
  }
  if (len > 13 && ((p[13] >> 4) > 3 || (p[13] & 0x0f) > 2))
    return refuse(out, "v2 address family or protocol unknown");
  if (len < 16) return 0;
  size_t total = 16 + (size_t)get16(p + 14);
  if (total > PX_PROXYPROTO_MAX) return refuse(out, "v2 header longer than allowed");
  if (len < total) return 0;
  out->version = 2;
  size_t alen = total - 16;
  const uint8_t *a = p + 16;
  int cmd = p[12] & 0x0f, fam = p[13] >> 4, proto = p[13] & 0x0f;
  if (cmd == 0 || proto != 1 || (fam != 1 && fam != 2)) {
    /* LOCAL (health checks from the balancer itself), or a combination
     * we do not use: the socket's peer stands (section 2.2). */
    out->local = 1;
    return (int)total;
  }
  size_t asz = fam == 1 ? 4 : 16;
  if (alen < 2 * asz + 4) return refuse(out, "v2 address block too short for its family");
  out->family = fam == 1 ? AF_INET : AF_INET6;
  memcpy(out->src, a, asz);
  memcpy(out->dst, a + asz, asz);
  out->src_port = get16(a + 2 * asz);
  out->dst_port = get16(a + 2 * asz + 2);
  return (int)total; /* TLVs, if any, are skipped */
}

int px_proxyproto_parse(const uint8_t *p, size_t len, px_proxyproto_t *out) {
  memset(out, 0, sizeof(*out));
  if (len == 0) return 0;
  if (p[0] == 'P') return parse_v1(p, len, out);
  if (p[0] == v2_sig[0]) return parse_v2(p, len, out);
  return refuse(out, "not a PROXY header");
}

size_t px_proxyproto_v2(uint8_t *out, const px_proxyproto_t *h) {
  memcpy(out, v2_sig, sizeof(v2_sig));
  size_t alen = h->local ? 0 : h->family == AF_INET ? 12 : 36;
  out[12] = h->local ? 0x20 : 0x21;                   /* version 2; LOCAL or PROXY */
  out[13] = h->local ? 0x00 : h->family == AF_INET ? 0x11 : 0x21; /* TCP over IPv4 / IPv6 */
  out[14] = (uint8_t)(alen >> 8);
  out[15] = (uint8_t)alen;
  if (alen == 0) return 16;
  size_t n = h->family == AF_INET ? 4 : 16;
  uint8_t *p = out + 16;
  memcpy(p, h->src, n);
  memcpy(p + n, h->dst, n);
  p += 2 * n;
  *p++ = (uint8_t)(h->src_port >> 8);
  *p++ = (uint8_t)h->src_port;
  *p++ = (uint8_t)(h->dst_port >> 8);
  *p++ = (uint8_t)h->dst_port;
  return 16 + alen;
}
