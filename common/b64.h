/* b64.h: base64url without padding (RFC 4648 section 5, as JOSE and ACME
 * use it) and standard padded base64 (section 4).
 *
 * Decoding is strict, because its input comes from the network (an ACME
 * CA) or from a configuration file: padding, the standard alphabet's '+'
 * and '/', whitespace, an impossible length (4n+1) and non-zero unused bits
 * in the last character are all rejected. Every byte string therefore has
 * exactly one accepted encoding. */
#ifndef GH_COMMON_B64_H
#define GH_COMMON_B64_H

#include <stddef.h>
#include <stdint.h>

/* gh_b64url_encode returns the unpadded base64url encoding of the |in_len|
 * bytes at |in| as a new NUL-terminated string (never NULL; caller frees). */
char *gh_b64url_encode(const uint8_t *in, size_t in_len);

/* gh_b64url_decode strictly decodes the |in_len| characters at |in| (not
 * NUL-terminated; an embedded NUL is rejected like any other foreign byte).
 * Returns 0 and sets |*out| to a new buffer (caller frees) of |*out_len|
 * bytes, followed by a NUL that |*out_len| does not count, so text may be
 * used as a C string. Returns -1 on malformed input, leaving |*out| NULL
 * and |*out_len| 0. */
int gh_b64url_decode(uint8_t **out, size_t *out_len, const char *in, size_t in_len);

/* gh_b64_encode returns the standard, padded base64 encoding of |in| as a
 * new NUL-terminated string without line breaks (never NULL; caller
 * frees). */
char *gh_b64_encode(const uint8_t *in, size_t in_len);

/* gh_b64_decode strictly decodes standard, padded base64 (what etcd's JSON
 * gateway sends for bytes): the length must be a multiple of 4 with one or
 * two '=' exactly where the last quantum needs them, and nothing but the
 * standard alphabet before them. Returns and owns as gh_b64url_decode. */
int gh_b64_decode(uint8_t **out, size_t *out_len, const char *in, size_t in_len);

#endif
