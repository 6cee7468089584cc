/* fuzz_proxyproto.c: px_proxyproto_parse (proxy/proxyproto.c) on arbitrary
 * bytes, as a trusted peer could send them before its client's TLS or HTTP.
 *
 * Invariants: no crash, no read outside the input (an exact-size copy);
 * what is consumed fits in the input and in PX_PROXYPROTO_MAX (107 bytes
 * for v1); a refusal says why; an accepted header is LOCAL or names an
 * AF_INET/AF_INET6 address that prints; and the bytes cut at any point give
 * "need more" or the same answer as the whole (a -1 for a prefix is -1 for
 * the whole), so that conn.c may decide as the bytes trickle in. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/common.h"
#include "proxy/proxyproto.h"

static int same(const px_proxyproto_t *a, const px_proxyproto_t *b) {
  return a->version == b->version && a->local == b->local && a->family == b->family &&
         memcmp(a->src, b->src, 16) == 0 && memcmp(a->dst, b->dst, 16) == 0 &&
         a->src_port == b->src_port && a->dst_port == b->dst_port;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *msg = gh_malloc(size ? size : 1);
  memcpy(msg, data, size);
  px_proxyproto_t whole;
  int n = px_proxyproto_parse(msg, size, &whole);
  if (n < -1 || (n > 0 && (size_t)n > size) || n > PX_PROXYPROTO_MAX) abort();
  if (n == -1 && whole.reason == NULL) abort();
  if (n > 0) {
    if (whole.version == 1 && n > PX_PROXYPROTO_V1_MAX) abort();
    if (whole.local ? whole.family != 0
                    : whole.family != AF_INET && whole.family != AF_INET6)
      abort();
    char text[INET6_ADDRSTRLEN];
    if (!whole.local && inet_ntop(whole.family, whole.src, text, sizeof(text)) == NULL) abort();
  }
  /* Cut points: every one for small inputs, a spread for large ones. */
  size_t step = size > 512 ? size / 256 : 1;
  for (size_t cut = 0; cut < size; cut += step) {
    uint8_t *part = gh_malloc(cut ? cut : 1);
    memcpy(part, msg, cut);
    px_proxyproto_t pp;
    int m = px_proxyproto_parse(part, cut, &pp);
    gh_free(part);
    if (m == 0) continue;
    /* A complete header in the prefix is the same header in the whole. */
    if (m != n) abort();
    if (m > 0 && !same(&pp, &whole)) abort();
  }
  gh_free(msg);
  return 0;
}
