/* storage_internal.h: what the storage files (storage.c, storage_names.c,
 * storage_lock.c) share. Nothing outside them includes it. */
#ifndef GH_ACME_STORAGE_INTERNAL_H
#define GH_ACME_STORAGE_INTERNAL_H

#include "acme/storage.h"

/* A storage backend: the directory (storage.c, storage_lock.c) or, for a
 * fleet, etcd. acme_storage_* in storage.h dispatch to these; each takes
 * and returns what the public function of the same name documents. */
typedef struct acme_storage_ops {
  const char *kind; /* "directory", "etcd": for messages */
  void (*free)(acme_storage_t *st);
  int (*account_save)(acme_storage_t *st, char **out_err, const char *ca_url,
                      const char *account_id, gh_str_t json);
  int (*account_load)(acme_storage_t *st, char **out_json, char **out_err, const char *ca_url,
                      const char *account_id);
  int (*cert_save)(acme_storage_t *st, char **out_err, const char *name,
                   const acme_storage_bundle_t *bundle);
  /* NULL: cert_save (one process writes the directory at a time per name). */
  int (*cert_save_over)(acme_storage_t *st, char **out_err, const char *name,
                        const acme_storage_bundle_t *bundle, const acme_cert_t *expected);
  int (*cert_load)(acme_storage_t *st, acme_cert_t **out_cert, char **out_meta, char **out_err,
                   const char *name);
  /* cert_load without the private key (acme_storage_cert_peek); NULL:
   * cert_load. */
  int (*cert_peek)(acme_storage_t *st, acme_cert_t **out_cert, char **out_meta, char **out_err,
                   const char *name);
  /* NULL: versions are not told (acme_storage_cert_version). */
  int (*cert_version)(acme_storage_t *st, char **out_version, const char *name);
  int (*cert_list)(acme_storage_t *st, char ***out_names, size_t *out_num_names, char **out_err);
  int (*cert_delete)(acme_storage_t *st, char **out_err, const char *name);
  int (*lock)(acme_storage_t *st, acme_storage_lock_t **out_lock, char **out_err,
              const char *name, unsigned ttl_s);
  /* Shared challenge records; NULL for a store of one node. */
  int (*challenge_put)(acme_storage_t *st, char **out_err, acme_storage_challenge_t kind,
                       const char *id, const char *key_auth, const acme_storage_lock_t *lock);
  int (*challenge_delete)(acme_storage_t *st, char **out_err, acme_storage_challenge_t kind,
                          const char *id, const acme_storage_lock_t *lock);
  int (*challenge_get)(acme_storage_t *st, char **out_key_auth, char **out_err,
                       acme_storage_challenge_t kind, const char *id);
} acme_storage_ops_t;

struct acme_storage {
  const acme_storage_ops_t *ops;
  char *root; /* the directory backend's root, no trailing slash */
};

/* Every backend's lock starts with this: acme__storage_unlock calls
 * |release|; acme__storage_lock_fresh calls |fresh| (NULL: a lock that
 * lasts while its holder lives, as flock does). */
struct acme_storage_lock {
  void (*release)(acme_storage_lock_t *lock);
  int (*fresh)(const acme_storage_lock_t *lock, char **out_why);
};

/* The directory backend's lock (storage_lock.c), for storage.c's table. */
int acme__dir_lock(acme_storage_t *st, acme_storage_lock_t **out_lock, char **out_err,
                   const char *name, unsigned ttl_s);

/* acme__storage_sys_err sets |*out_err| to "|path|: |what|: <errno text>"
 * and returns the negative errno, which the caller must not have disturbed
 * since the failing call. */
int acme__storage_sys_err(char **out_err, const char *path, const char *what);


/* acme__storage_account_id_check accepts 1-200 of [a-z0-9._@+-], starting
 * with a letter or digit: enough for an e-mail address or a key thumbprint,
 * and never ".", "..", a hidden file or a temporary. Returns 0, or -EINVAL
 * with |*out_err|. */
int acme__storage_account_id_check(char **out_err, const char *id);

/* acme__storage_etcd_route hands one watched change (a put of |value|,
 * or a delete) of the key |prefix| + |key| to the watcher's routing, as
 * the watch would, with the local copy at |local_root| (NULL: none): for
 * the fuzz target (tests/fuzz/fuzz_fleet.c). */
void acme__storage_etcd_route(const char *prefix, const char *local_root, const uint8_t *key,
                              size_t key_len, const uint8_t *value, size_t value_len, int put,
                              const acme_storage_watch_cbs_t *cbs, void *arg);

#endif
