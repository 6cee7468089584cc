/* fuzz_certs.c: acme_cert_from_pem on arbitrary bytes.
 *
 * The input is split into the chain and the key at its first NUL byte, or
 * halfway when it has none (so a seed can be "CHAIN PEM\0KEY PEM").
 * Invariants: no crash, no leak; a failure names a reason; a success has a
 * leaf and a key, and its facts can be read. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acme/certs.h"
#include "common/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *nul = memchr(data, 0, size);
  size_t chain_len = nul ? (size_t)(nul - data) : size / 2;
  size_t key_off = nul ? chain_len + 1 : chain_len;
  /* Separate exact-size copies: a read past either part is caught. */
  char *chain = gh_malloc(chain_len ? chain_len : 1);
  char *key = gh_malloc(size - key_off ? size - key_off : 1);
  memcpy(chain, data, chain_len);
  memcpy(key, data + key_off, size - key_off);
  char *err = NULL;
  acme_cert_t *cert = acme_cert_from_pem(&err, chain, chain_len, key, size - key_off);
  if (cert == NULL) {
    if (err == NULL || err[0] == '\0') {
      fprintf(stderr, "acme_cert_from_pem failed without saying why\n");
      abort();
    }
    gh_free(err);
  } else {
    if (cert->num_chain == 0 || cert->key == NULL) abort();
    size_t total = 0;
    for (size_t i = 0; i < cert->num_sans; i++) total += strlen(cert->sans[i]);
    if (cert->subject_cn) total += strlen(cert->subject_cn);
    if (cert->issuer_cn) total += strlen(cert->issuer_cn);
    (void)total;
    /* The table takes its own reference. */
    acme_cert_table_t *table = acme_cert_table_new();
    for (size_t i = 0; i < cert->num_sans; i++) acme_cert_table_put(table, cert->sans[i], cert);
    for (size_t i = 0; i < cert->num_sans; i++) {
      acme_cert_unref(acme_cert_table_get(table, cert->sans[i], strlen(cert->sans[i])));
    }
    acme_cert_unref(cert);
    acme_cert_table_free(table);
  }
  gh_free(chain);
  gh_free(key);
  return 0;
}
