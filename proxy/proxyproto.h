/* proxyproto.h: the PROXY protocol header (HAProxy's proxy-protocol.txt,
 * versions 1 and 2) that a load balancer in front of a listener sends
 * before anything else, naming the client it accepted the connection from.
 *
 * Pure code: bytes in, an address out; no I/O, no allocation, so that it
 * can be fuzzed and unit-tested on its own. conn.c feeds it what a trusted
 * peer sent first. */
#ifndef GH_PROXY_PROXYPROTO_H
#define GH_PROXY_PROXYPROTO_H

#include <stddef.h>
#include <stdint.h>

/* The longest header accepted: a v1 line is at most 107 bytes (CRLF
 * included); a v2 header's own length field allows 16 + 65535 bytes, but
 * its addresses need at most 216 and the rest is TLVs, which we skip, so
 * anything longer than this is refused rather than buffered. */
#define PX_PROXYPROTO_V1_MAX 107
#define PX_PROXYPROTO_MAX 4096

typedef struct {
  int version; /* 1 or 2 */
  /* 1 when the header names no client (v1 UNKNOWN, v2 LOCAL or an address
   * family we do not use): the connection keeps its socket's peer. */
  int local;
  int family; /* AF_INET or AF_INET6 when !local, else 0 */
  uint8_t src[16], dst[16]; /* network order; 4 bytes used for AF_INET */
  uint16_t src_port, dst_port;
  const char *reason; /* why the header was refused (-1); static text */
} px_proxyproto_t;

/* px_proxyproto_parse parses the PROXY header at the start of |p| (|len|
 * bytes, all that has arrived so far). Returns the header's length in
 * bytes (what follows is the client's TLS or HTTP) with |*out| filled; 0
 * when the bytes so far are a valid beginning but the header is not
 * complete; -1 when they are not a PROXY header (or one we refuse), with
 * |out->reason| saying why. A -1 for some bytes is -1 for any longer
 * input that starts with them, so the caller may decide as bytes arrive. */
int px_proxyproto_parse(const uint8_t *p, size_t len, px_proxyproto_t *out);

/* px_proxyproto_v2 writes a v2 PROXY header (command PROXY over TCP) for
 * |h| (family, src, dst and ports; |h->local| writes a LOCAL header) into
 * |out|, which has room for PX_PROXYPROTO_V2_OUT bytes. Returns its
 * length. */
#define PX_PROXYPROTO_V2_OUT 52
size_t px_proxyproto_v2(uint8_t *out, const px_proxyproto_t *h);

#endif
