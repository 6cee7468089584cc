/* nonce.c: the anti-replay nonce pool (RFC 8555 section 7.2). Every
 * response's Replay-Nonce is kept, so that only the first request, and one
 * after a run of failures, costs a HEAD newNonce round trip. */
#include <string.h>

#include "acme/engine_internal.h"
#include "common/common.h"

void acme__nonce_push(acme_nonce_pool_t *pool, const char *value) {
  size_t len = value != NULL ? strlen(value) : 0;
  if (len == 0 || len > 256) return;
  for (size_t i = 0; i < len; i++) {
    char c = value[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '-' || c == '_'))
      return; /* RFC 8555 6.5.1: base64url; anything else would be refused anyway */
  }
  if (pool->num_nonces == ACME_NONCE_POOL_MAX) {
    gh_free(pool->nonces[0]);
    memmove(pool->nonces, pool->nonces + 1, (ACME_NONCE_POOL_MAX - 1) * sizeof(char *));
    pool->num_nonces--;
  }
  pool->nonces[pool->num_nonces++] = gh_strdup(value);
}

char *acme__nonce_pop(acme_nonce_pool_t *pool) {
  if (pool->num_nonces == 0) return NULL;
  char *n = pool->nonces[--pool->num_nonces];
  pool->nonces[pool->num_nonces] = NULL;
  return n;
}

void acme__nonce_cleanup(acme_nonce_pool_t *pool) {
  for (size_t i = 0; i < pool->num_nonces; i++) gh_free(pool->nonces[i]);
  pool->num_nonces = 0;
}
