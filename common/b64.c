/* b64.c: base64url and base64 (RFC 4648). Both encoders share one loop
 * that differs only in alphabet and padding, and so do both decoders
 * (standard base64 is read from etcd's JSON gateway, acme/etcd*.c). */
#include "common/b64.h"

#include "common/common.h"

static const char url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char std_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *encode(const char *alphabet, int pad, const uint8_t *in, size_t in_len) {
  /* 4 characters per 3 bytes, rounded up, plus the NUL. */
  char *out = gh_malloc((in_len + 2) / 3 * 4 + 1);
  char *p = out;
  size_t i = 0;
  for (; i + 3 <= in_len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    *p++ = alphabet[v >> 18];
    *p++ = alphabet[(v >> 12) & 63];
    *p++ = alphabet[(v >> 6) & 63];
    *p++ = alphabet[v & 63];
  }
  size_t rest = in_len - i;
  if (rest > 0) {
    uint32_t v = (uint32_t)in[i] << 16 | (rest == 2 ? (uint32_t)in[i + 1] << 8 : 0);
    *p++ = alphabet[v >> 18];
    *p++ = alphabet[(v >> 12) & 63];
    if (rest == 2) *p++ = alphabet[(v >> 6) & 63];
    if (pad) {
      if (rest == 1) *p++ = '=';
      *p++ = '=';
    }
  }
  *p = '\0';
  return out;
}

char *gh_b64url_encode(const uint8_t *in, size_t in_len) {
  return encode(url_alphabet, 0, in, in_len);
}

char *gh_b64_encode(const uint8_t *in, size_t in_len) {
  return encode(std_alphabet, 1, in, in_len);
}

/* char_value returns the 6-bit value of character |c| in the base64url
 * (|std| 0) or the standard (|std| 1) alphabet, or -1. */
static int char_value(unsigned char c, int std) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == (std ? '+' : '-')) return 62;
  if (c == (std ? '/' : '_')) return 63;
  return -1;
}

static int decode(uint8_t **out, size_t *out_len, const char *in, size_t in_len, int std) {
  *out = NULL;
  *out_len = 0;
  /* One leftover character carries only 6 bits: not a whole byte. */
  if (in_len % 4 == 1) return -1;
  uint8_t *buf = gh_malloc(in_len / 4 * 3 + 3);
  size_t n = 0;
  uint32_t acc = 0;
  unsigned bits = 0;
  for (size_t i = 0; i < in_len; i++) {
    int v = char_value((unsigned char)in[i], std);
    if (v < 0) goto err;
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      buf[n++] = (uint8_t)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  /* The last character's unused low bits must be zero; otherwise two
   * encodings would decode to the same bytes. */
  if (acc != 0) goto err;
  buf[n] = '\0';
  *out = buf;
  *out_len = n;
  return 0;
err:
  gh_free(buf);
  return -1;
}

int gh_b64url_decode(uint8_t **out, size_t *out_len, const char *in, size_t in_len) {
  return decode(out, out_len, in, in_len, 0);
}

int gh_b64_decode(uint8_t **out, size_t *out_len, const char *in, size_t in_len) {
  *out = NULL;
  *out_len = 0;
  /* Padded: whole quanta, and exactly the '=' the last one needs. */
  if (in_len % 4 != 0) return -1;
  size_t pad = 0;
  while (pad < 2 && pad < in_len && in[in_len - 1 - pad] == '=') pad++;
  return decode(out, out_len, in, in_len - pad, 1);
}
