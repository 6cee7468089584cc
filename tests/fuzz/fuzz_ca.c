/* fuzz_ca.c: what a CA answers, checked before anything is followed,
 * stored or served (issue 16; acme/engine.c, acme/order.c), on arbitrary
 * bytes.
 *
 * Byte 0 steers: 0-127 the rest is a URL the CA gave (acme__url_problem);
 * 128-255 it is a certificate chain the CA returned for an order of
 * "a.example.com" and "b.example.com" whose CSR has a fixed key
 * (acme__cert_problem).
 *
 * Invariants: no crash or leak, no read past the input; a URL passed is
 * https://, has more than the scheme, only printable ASCII and at most
 * 2048 bytes. The seeds include a chain that passes (minted for the
 * order's fixed key) and one for each refusal. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>

#include "acme/engine_internal.h"
#include "common/common.h"

/* The order's key: the seeds' good chain was minted for it (a fixed P-256
 * key, so a chain in the corpus can match it). */
static EVP_PKEY *order_key(void) {
  static EVP_PKEY *key;
  if (key == NULL) {
    static const uint8_t priv[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                     17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    BIGNUM *d = BN_bin2bn(priv, sizeof(priv), NULL);
    EC_POINT *pub = EC_POINT_new(EC_KEY_get0_group(ec));
    EC_POINT_mul(EC_KEY_get0_group(ec), pub, d, NULL, NULL, NULL);
    EC_KEY_set_private_key(ec, d);
    EC_KEY_set_public_key(ec, pub);
    key = EVP_PKEY_new();
    EVP_PKEY_assign_EC_KEY(key, ec);
    EC_POINT_free(pub);
    BN_free(d);
  }
  return key;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int cert = data[0] >= 128;
  char *text = gh_strndup((const char *)data + 1, size - 1); /* stops at a NUL, as C strings do */
  if (!cert) {
    const char *why = acme__url_problem(text);
    size_t n = strlen(text);
    if (why == NULL) {
      if (n > 2048 || strncasecmp(text, "https://", 8) != 0 || n <= 8) abort();
      for (size_t i = 0; i < n; i++)
        if ((unsigned char)text[i] <= 0x20 || (unsigned char)text[i] >= 0x7f) abort();
    }
  } else {
    static const char *const names[] = {"a.example.com", "b.example.com"};
    char *why = acme__cert_problem((const char *)data + 1, size - 1, names, 2, order_key());
    gh_free(why);
  }
  gh_free(text);
  return 0;
}
