/* challenges.c: the table of pending challenge answers (TLS-ALPN-01
 * certificates by name, HTTP-01 key authorizations by token).
 *
 * Two layers. This node's own orders put their answers in the first; in a
 * fleet, the records other nodes published (fed by the store's watch, or
 * read on a miss through the fetch function) go in the second, so a late
 * watch event about another node's record never removes one of ours.
 *
 * Few entries exist at once (one per authorization being validated), so a
 * small array behind a read-write lock is enough: workers look up under the
 * read lock, the control thread changes it under the write lock. Lookups
 * happen only for ClientHellos that offer acme-tls/1 and for requests under
 * /.well-known/acme-challenge/, never on the ordinary hot path. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>

#include "acme/acme.h"
#include "acme/csr.h"
#include "common/common.h"
#include "common/log.h"

typedef struct {
  char *key; /* name (tls-alpn-01) or token (http-01) */
  acme_cert_t *cert;
  char *keyauth;
} entry_t;

typedef struct {
  entry_t *tlsalpn;
  size_t num_tlsalpn;
  entry_t *http01;
  size_t num_http01;
} layer_t;

struct acme_challenges {
  pthread_rwlock_t lock;
  layer_t own, fleet;
  /* Asked on a miss of both layers, one call at a time (under fetch_mu,
   * which also guards replacing it). */
  pthread_mutex_t fetch_mu;
  acme_challenges_fetch_fn fetch;
  atomic_int has_fetch; /* peeked without the mutex, so a miss costs nothing without one */
  void (*fetch_free)(void *arg);
  void *fetch_arg;
};

acme_challenges_t *acme_challenges_new(void) {
  acme_challenges_t *t = gh_calloc(1, sizeof(*t));
  pthread_rwlock_init(&t->lock, NULL);
  pthread_mutex_init(&t->fetch_mu, NULL);
  return t;
}

static void entry_clear(entry_t *e) {
  gh_free(e->key);
  acme_cert_unref(e->cert);
  gh_free(e->keyauth);
  memset(e, 0, sizeof(*e));
}

static void layer_clear(layer_t *l) {
  for (size_t i = 0; i < l->num_tlsalpn; i++) entry_clear(&l->tlsalpn[i]);
  for (size_t i = 0; i < l->num_http01; i++) entry_clear(&l->http01[i]);
  gh_free(l->tlsalpn);
  gh_free(l->http01);
  memset(l, 0, sizeof(*l));
}

void acme_challenges_free(acme_challenges_t *t) {
  if (t == NULL) return;
  acme_challenges_set_fetch(t, NULL, NULL, NULL);
  layer_clear(&t->own);
  layer_clear(&t->fleet);
  pthread_mutex_destroy(&t->fetch_mu);
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
  put(&t->own.tlsalpn, &t->own.num_tlsalpn, name, cert, NULL);
  pthread_rwlock_unlock(&t->lock);
}

void acme_challenges_put_http01(acme_challenges_t *t, const char *token, const char *keyauth) {
  pthread_rwlock_wrlock(&t->lock);
  put(&t->own.http01, &t->own.num_http01, token, NULL, keyauth);
  pthread_rwlock_unlock(&t->lock);
}

/* fleet_tlsalpn_cert makes the TLS-ALPN-01 certificate for a record
 * another node published; NULL (logged) when the record is unusable. */
static acme_cert_t *fleet_tlsalpn_cert(const char *name, const char *keyauth) {
  char *err = NULL;
  acme_cert_t *cert = acme__tlsalpn_cert(&err, name, keyauth);
  if (cert == NULL) GH_WARN("fleet", "challenge record for %s unusable: %s", name, err);
  gh_free(err);
  return cert;
}

void acme_challenges_put_fleet(acme_challenges_t *t, int http01, const char *id,
                               const char *keyauth) {
  acme_cert_t *cert = NULL;
  if (!http01 && keyauth != NULL && (cert = fleet_tlsalpn_cert(id, keyauth)) == NULL) return;
  pthread_rwlock_wrlock(&t->lock);
  if (http01) put(&t->fleet.http01, &t->fleet.num_http01, id, NULL, keyauth);
  else put(&t->fleet.tlsalpn, &t->fleet.num_tlsalpn, id, cert, NULL);
  pthread_rwlock_unlock(&t->lock);
  acme_cert_unref(cert);
}

void acme_challenges_set_fetch(acme_challenges_t *t, acme_challenges_fetch_fn fn,
                               void (*free_fn)(void *arg), void *arg) {
  pthread_mutex_lock(&t->fetch_mu);
  if (t->fetch_free != NULL) t->fetch_free(t->fetch_arg);
  t->fetch = fn;
  atomic_store(&t->has_fetch, fn != NULL);
  t->fetch_free = free_fn;
  t->fetch_arg = arg;
  pthread_mutex_unlock(&t->fetch_mu);
  if (fn == NULL) {
    pthread_rwlock_wrlock(&t->lock);
    layer_clear(&t->fleet);
    pthread_rwlock_unlock(&t->lock);
  }
}

/* fetch asks the fetch function about a miss; the answer (a new string)
 * also goes into the fleet layer, for the validator's next look. */
static char *fetch(acme_challenges_t *t, int http01, const char *id, size_t id_len) {
  if (!atomic_load(&t->has_fetch)) return NULL;
  pthread_mutex_lock(&t->fetch_mu);
  char *keyauth = t->fetch ? t->fetch(t->fetch_arg, http01, id, id_len) : NULL;
  pthread_mutex_unlock(&t->fetch_mu);
  if (keyauth != NULL) {
    char *idz = gh_strndup(id, id_len);
    acme_challenges_put_fleet(t, http01, idz, keyauth);
    gh_free(idz);
  }
  return keyauth;
}

static acme_cert_t *lookup_tlsalpn(acme_challenges_t *t, const char *name, size_t name_len) {
  pthread_rwlock_rdlock(&t->lock);
  entry_t *e = find(t->own.tlsalpn, t->own.num_tlsalpn, name, name_len);
  if (e == NULL) e = find(t->fleet.tlsalpn, t->fleet.num_tlsalpn, name, name_len);
  acme_cert_t *cert = e ? acme_cert_ref(e->cert) : NULL;
  pthread_rwlock_unlock(&t->lock);
  return cert;
}

/* reverse_ip reads a reverse-mapping name ("4.3.2.1.in-addr.arpa", or 32
 * nibbles then ".ip6.arpa") as the address it stands for, in text, into
 * |out|: a TLS-ALPN-01 validator for an IP address sends it as the SNI
 * (RFC 8738 6). Returns its length, or 0 when |name| is not one. */
static size_t reverse_ip(char out[INET6_ADDRSTRLEN], const char *name, size_t len) {
  static const char v4[] = ".in-addr.arpa", v6[] = ".ip6.arpa";
  uint8_t addr[16];
  int family;
  if (len > sizeof(v4) - 1 && strncasecmp(name + len - (sizeof(v4) - 1), v4, sizeof(v4) - 1) == 0) {
    family = AF_INET;
    size_t end = len - (sizeof(v4) - 1), pos = 0;
    for (int i = 3; i >= 0; i--) { /* the first label is the last octet */
      unsigned v = 0;
      size_t digits = 0;
      while (pos < end && name[pos] >= '0' && name[pos] <= '9' && digits < 3)
        v = v * 10 + (unsigned)(name[pos++] - '0'), digits++;
      if (digits == 0 || v > 255 || (digits > 1 && name[pos - digits] == '0')) return 0;
      addr[i] = (uint8_t)v;
      if (i > 0 && (pos >= end || name[pos++] != '.')) return 0;
    }
    if (pos != end) return 0;
  } else if (len == 64 + sizeof(v6) - 1 - 1 &&
             strncasecmp(name + len - (sizeof(v6) - 1), v6, sizeof(v6) - 1) == 0) {
    family = AF_INET6;
    memset(addr, 0, sizeof(addr));
    for (size_t i = 0; i < 32; i++) { /* nibble i from the end of the address */
      char c = name[2 * i];
      int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (v < 0 || (i < 31 && name[2 * i + 1] != '.')) return 0;
      addr[15 - i / 2] |= (uint8_t)(i % 2 ? v << 4 : v);
    }
  } else {
    return 0;
  }
  return inet_ntop(family, addr, out, INET6_ADDRSTRLEN) != NULL ? strlen(out) : 0;
}

acme_cert_t *acme_challenges_get_tlsalpn(acme_challenges_t *t, const char *name,
                                         size_t name_len) {
  char ip[INET6_ADDRSTRLEN];
  size_t ip_len = reverse_ip(ip, name, name_len);
  if (ip_len != 0) {
    name = ip;
    name_len = ip_len;
  }
  acme_cert_t *cert = lookup_tlsalpn(t, name, name_len);
  if (cert == NULL) {
    char *keyauth = fetch(t, 0, name, name_len);
    if (keyauth != NULL) cert = lookup_tlsalpn(t, name, name_len);
    gh_free(keyauth);
  }
  return cert;
}

char *acme_challenges_get_http01(acme_challenges_t *t, const char *token, size_t token_len) {
  pthread_rwlock_rdlock(&t->lock);
  entry_t *e = find(t->own.http01, t->own.num_http01, token, token_len);
  if (e == NULL) e = find(t->fleet.http01, t->fleet.num_http01, token, token_len);
  char *keyauth = e ? gh_strdup(e->keyauth) : NULL;
  pthread_rwlock_unlock(&t->lock);
  if (keyauth == NULL) keyauth = fetch(t, 1, token, token_len);
  return keyauth;
}
