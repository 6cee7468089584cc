/* chunked.h: a strict, incremental decoder for the chunked transfer
 * coding (RFC 9112 7.1), used for request bodies from clients and
 * response bodies from upstreams, so that the framing the proxy acts on
 * is its own, never a peer's headers'.
 *
 * Accepted: 1*HEXDIG sizes (leading zeros allowed) up to PX_CHUNK_MAX,
 * optional whitespace before ";" (BWS, RFC 9112 7.1.1), extensions of
 * visible characters, spaces and tabs (they are dropped, never
 * forwarded), trailer fields "token: value", and CRLF line ends only. A
 * bare CR or LF, a missing CRLF after chunk data, a size beyond the bound
 * or a field with a bad name is refused. */
#ifndef GH_PROXY_CHUNKED_H
#define GH_PROXY_CHUNKED_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/hdrs.h"

/* The largest chunk accepted: larger is either an attack on a peer's
 * arithmetic (2^64-1) or no real client's upload. */
#define PX_CHUNK_MAX (1ull << 40)

typedef struct {
  uint8_t state;
  uint8_t digits;      /* significant hex digits of the size so far */
  uint64_t left;       /* data bytes left in the current chunk */
  size_t line_bytes;   /* bytes of the current extension or trailer line */
  size_t trailer_bytes;
} px_chunked_t;

typedef enum {
  PX_CK_NEED = 0,  /* all input consumed; more is needed */
  PX_CK_CHUNK,     /* a chunk of *out_announced bytes begins (0: the last) */
  PX_CK_DATA,      /* *out_data is a run of body bytes */
  PX_CK_DONE,      /* the last chunk and the trailers are consumed */
  PX_CK_BAD,       /* malformed: the message cannot be framed */
  PX_CK_HUGE,      /* a chunk size beyond PX_CHUNK_MAX */
} px_ck_event_t;

/* px_chunked_init readies |ck| for a new body. */
void px_chunked_init(px_chunked_t *ck);

/* px_chunked_next consumes bytes from |*p|/|*len| (advancing both) until
 * something happens, and returns it. Trailer fields go into |trailers|
 * (if not NULL), whose total is bounded by |max_trailer_bytes|. A chunk's
 * announced size can be checked against a body limit as soon as its line
 * is read, before any of its data (PX_CK_CHUNK). */
px_ck_event_t px_chunked_next(px_chunked_t *ck, px_hdrs_t *trailers, size_t max_trailer_bytes,
                              const char **p, size_t *len, gh_str_t *out_data,
                              uint64_t *out_announced);

#endif
