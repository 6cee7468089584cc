/* challenges.c: the table of pending challenge answers (TLS-ALPN-01
 * certificates by name, HTTP-01 key authorizations by token).
 *
 * Few entries exist at once (one per authorization being validated), so a
 * small array behind a read-write lock is enough: workers look up under the
 * read lock, the control thread changes it under the write lock. Lookups
 * happen only for ClientHellos that offer acme-tls/1 and for requests under
 * /.well-known/acme-challenge/, never on the ordinary hot path. */
#include <pthread.h>

#include "acme/acme.h"
#include "common/common.h"

typedef struct {
  char *key; /* name (tls-alpn-01) or token (http-01) */
  acme_cert_t *cert;
  char *keyauth;
} entry_t;

struct acme_challenges {
  pthread_rwlock_t lock;
  entry_t *tlsalpn;
  size_t num_tlsalpn;
  entry_t *http01;
  size_t num_http01;
};

acme_challenges_t *acme_challenges_new(void) {
  acme_challenges_t *t = gh_calloc(1, sizeof(*t));
  pthread_rwlock_init(&t->lock, NULL);
  return t;
}

static void entry_clear(entry_t *e) {
  gh_free(e->key);
  acme_cert_unref(e->cert);
  gh_free(e->keyauth);
  memset(e, 0, sizeof(*e));
}

void acme_challenges_free(acme_challenges_t *t) {
  if (t == NULL) return;
  for (size_t i = 0; i < t->num_tlsalpn; i++) entry_clear(&t->tlsalpn[i]);
  for (size_t i = 0; i < t->num_http01; i++) entry_clear(&t->http01[i]);
  gh_free(t->tlsalpn);
  gh_free(t->http01);
  pthread_rwlock_destroy(&t->lock);
  gh_free(t);
}

static entry_t *find(entry_t *v, size_t n, const char *key, size_t key_len) {
  for (size_t i = 0; i < n; i++) {
    if (strlen(v[i].key) == key_len && memcmp(v[i].key, key, key_len) == 0) return &v[i];
  }
  return NULL;
}

/* put replaces, adds or (with |cert| and |keyauth| both NULL) removes the
 * entry for |key| in the vector |*v|. Called with the write lock held. */
static void put(entry_t **v, size_t *n, const char *key, acme_cert_t *cert, const char *keyauth) {
  entry_t *e = find(*v, *n, key, strlen(key));
  if (cert == NULL && keyauth == NULL) {
    if (e) {
      entry_clear(e);
      *e = (*v)[--*n];
    }
    return;
  }
  if (e == NULL) {
    *v = gh_realloc(*v, (*n + 1) * sizeof(entry_t));
    e = &(*v)[(*n)++];
    memset(e, 0, sizeof(*e));
    e->key = gh_strdup(key);
  }
  acme_cert_unref(e->cert);
  gh_free(e->keyauth);
  e->cert = cert ? acme_cert_ref(cert) : NULL;
  e->keyauth = keyauth ? gh_strdup(keyauth) : NULL;
}

void acme_challenges_put_tlsalpn(acme_challenges_t *t, const char *name, acme_cert_t *cert) {
  pthread_rwlock_wrlock(&t->lock);
  put(&t->tlsalpn, &t->num_tlsalpn, name, cert, NULL);
  pthread_rwlock_unlock(&t->lock);
}

void acme_challenges_put_http01(acme_challenges_t *t, const char *token, const char *keyauth) {
  pthread_rwlock_wrlock(&t->lock);
  put(&t->http01, &t->num_http01, token, NULL, keyauth);
  pthread_rwlock_unlock(&t->lock);
}

acme_cert_t *acme_challenges_get_tlsalpn(acme_challenges_t *t, const char *name,
                                         size_t name_len) {
  pthread_rwlock_rdlock(&t->lock);
  entry_t *e = find(t->tlsalpn, t->num_tlsalpn, name, name_len);
  acme_cert_t *cert = e ? acme_cert_ref(e->cert) : NULL;
  pthread_rwlock_unlock(&t->lock);
  return cert;
}

char *acme_challenges_get_http01(acme_challenges_t *t, const char *token, size_t token_len) {
  pthread_rwlock_rdlock(&t->lock);
  entry_t *e = find(t->http01, t->num_http01, token, token_len);
  char *keyauth = e ? gh_strdup(e->keyauth) : NULL;
  pthread_rwlock_unlock(&t->lock);
  return keyauth;
}
