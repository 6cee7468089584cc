/* storage_etcd.c: the fleet's store (issue 15): accounts, certificates and
 * order locks under an etcd key prefix, shared by every node, with the
 * node's storage directory as a copy written through on every change and
 * read when etcd cannot be reached.
 *
 * Keys (names checked as the directory backend checks them, so a key never
 * holds "/" or ".." from a name):
 *
 *   <prefix>accounts/<ca>/<account-id>   the account JSON
 *   <prefix>certs/<name>                 {"chain": PEM, "key": PEM, "meta": {...}}
 *   <prefix>locks/<name>                 the holder's node name, bound to its lease
 *
 * A certificate version is one value: a reader gets the chain, key and
 * meta of one write, never a new chain with an old key.
 *
 * Locks and fences. A node has one lease (fleet.lease_ttl), granted on its
 * first lock and kept alive by every call (acme_storage_keepalive on the
 * control thread's timer, and the calls themselves); a lock is the key
 * created only if absent and bound to that lease, so it vanishes when the
 * node dies. Its create_revision is the fencing token: while a node holds
 * the lock on a name, its writes of that name's certificate are
 * transactions that succeed only if the lock key still has that
 * create_revision. A node that stalled past its lease (the lock expired
 * and another node took it) has its late write refused (-ESTALE), and the
 * name still ends with one certificate.
 *
 * Calls are synchronous (etcd.h), on the control thread. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/aead.h>
#include <openssl/mem.h>
#include <openssl/rand.h>

#include "acme/etcd.h"
#include "common/b64.h"
#include "acme/storage_internal.h"
#include "common/log.h"

typedef struct {
  char *name;
  int64_t revision; /* the lock key's create_revision: the fence */
  int64_t lease;    /* the lease it is bound to */
} held_t;

typedef struct {
  acme_storage_t base;   /* must be first: ops and the local copy's root */
  acme_etcd_conf_t econf; /* for the watcher's own client (one per thread) */
  char **endpoints;       /* econf's, owned */
  acme_storage_t *local; /* the directory backend */
  acme_etcd_t *etcd;
  char *prefix;
  char *node;
  int64_t lease;         /* 0 until granted */
  uint64_t lease_ttl_s;
  uint64_t renewed_ms;   /* last successful grant or keepalive */
  held_t *held;
  size_t num_held;
  int down; /* the last call to etcd failed (logged once until it works) */
  int local_mode; /* fleet.issue_when_store_down is "local" */
  char **pending; /* names stored only locally while etcd was down ("local") */
  size_t num_pending;
  int sealed;             /* storage.etcd.encryption_key: private keys sealed in etcd */
  uint8_t seal_key[32];
} etcd_store_t;

typedef struct {
  acme_storage_lock_t base;
  etcd_store_t *st;
  char *name;
} etcd_lock_t;

static etcd_store_t *store_of(acme_storage_t *st) { return (etcd_store_t *)(void *)st; }

static gh_str_t str(const char *s) { return (gh_str_t){s, strlen(s)}; }

/* key returns "<prefix><kind><rest>" (caller frees). */
static char *key(etcd_store_t *s, const char *kind, const char *rest) {
  return gh_asprintf("%s%s%s", s->prefix, kind, rest);
}

/* The process's fleet counters (acme_storage_fleet_stats). */
static struct {
  atomic_int enabled, down;
  atomic_uint_fast64_t outages, watch_events, challenge_reads, fence_refusals;
} g_stats;

void acme_storage_fleet_stats(acme_fleet_stats_t *out) {
  out->enabled = atomic_load(&g_stats.enabled);
  out->up = out->enabled && !atomic_load(&g_stats.down);
  out->outages = atomic_load(&g_stats.outages);
  out->watch_events = atomic_load(&g_stats.watch_events);
  out->challenge_reads = atomic_load(&g_stats.challenge_reads);
  out->fence_refusals = atomic_load(&g_stats.fence_refusals);
}

/* ---- private keys sealed at rest (storage.etcd.encryption_key) ----
 *
 * A sealed value is "gh-aead-v1:" base64url(nonce (12) | AES-256-GCM
 * ciphertext | tag (16)), its associated data the key's name under the
 * prefix ("certs/NAME", "accounts/CA/ID"), so a sealed value moved to
 * another name does not open. Certificate entries seal their "key";
 * accounts (which hold the account key) are sealed whole. Values written
 * before a key was configured are still read. */

#define SEAL_PREFIX "gh-aead-v1:"
#define SEAL_NONCE 12

static char *seal(const etcd_store_t *s, const char *ad, const char *plain, size_t len) {
  EVP_AEAD_CTX ctx;
  if (!EVP_AEAD_CTX_init(&ctx, EVP_aead_aes_256_gcm(), s->seal_key, 32,
                         EVP_AEAD_DEFAULT_TAG_LENGTH, NULL))
    return NULL;
  size_t cap = SEAL_NONCE + len + EVP_AEAD_max_overhead(EVP_aead_aes_256_gcm()), out_len = 0;
  uint8_t *buf = gh_malloc(cap);
  RAND_bytes(buf, SEAL_NONCE);
  char *text = NULL;
  if (EVP_AEAD_CTX_seal(&ctx, buf + SEAL_NONCE, &out_len, cap - SEAL_NONCE, buf, SEAL_NONCE,
                        (const uint8_t *)plain, len, (const uint8_t *)ad, strlen(ad))) {
    char *b64 = gh_b64url_encode(buf, SEAL_NONCE + out_len);
    text = gh_asprintf("%s%s", SEAL_PREFIX, b64);
    gh_free(b64);
  }
  EVP_AEAD_CTX_cleanup(&ctx);
  gh_free(buf);
  return text;
}

/* unseal returns the plaintext of |text| (|len| bytes) as a new string: a
 * sealed value opened with the store's key, or a value that was never
 * sealed as it is; NULL with |*out_err| when it cannot be opened. */
static char *unseal(const etcd_store_t *s, const char *ad, const char *text, size_t len,
                    char **out_err) {
  size_t plen = sizeof(SEAL_PREFIX) - 1;
  if (len < plen || memcmp(text, SEAL_PREFIX, plen) != 0) return gh_strndup(text, len);
  if (!s->sealed) {
    *out_err = gh_asprintf("%s is sealed, and storage.etcd.encryption_key is not set", ad);
    return NULL;
  }
  uint8_t *raw = NULL;
  size_t raw_len = 0;
  char *plain = NULL;
  if (gh_b64url_decode(&raw, &raw_len, text + plen, len - plen) == 0 && raw_len > SEAL_NONCE) {
    EVP_AEAD_CTX ctx;
    if (EVP_AEAD_CTX_init(&ctx, EVP_aead_aes_256_gcm(), s->seal_key, 32,
                          EVP_AEAD_DEFAULT_TAG_LENGTH, NULL)) {
      size_t out_len = 0;
      plain = gh_malloc(raw_len + 1);
      if (EVP_AEAD_CTX_open(&ctx, (uint8_t *)plain, &out_len, raw_len, raw, SEAL_NONCE,
                            raw + SEAL_NONCE, raw_len - SEAL_NONCE, (const uint8_t *)ad,
                            strlen(ad))) {
        plain[out_len] = '\0';
      } else {
        gh_free(plain);
        plain = NULL;
      }
      EVP_AEAD_CTX_cleanup(&ctx);
    }
  }
  gh_free(raw);
  if (plain == NULL)
    *out_err = gh_asprintf("%s: cannot open the sealed value (another encryption_key, or "
                           "altered)", ad);
  return plain;
}

/* load_seal_key reads storage.etcd.encryption_key: 32 bytes, raw, as 64
 * hex digits, or base64 (openssl rand -base64 32). */
static int load_seal_key(uint8_t out[32], char **out_err, const char *file) {
  size_t len = 0;
  char *text = NULL;
  FILE *f = fopen(file, "rb");
  if (f != NULL) {
    text = gh_malloc(256);
    len = fread(text, 1, 255, f);
    fclose(f);
  }
  int ok = 0;
  if (text != NULL && len == 32) {
    memcpy(out, text, 32);
    ok = 1;
  } else if (text != NULL) {
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
      len--;
    text[len] = '\0';
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    if (len == 64 && strspn(text, "0123456789abcdefABCDEF") == 64) {
      for (int i = 0; i < 32; i++) {
        unsigned v;
        sscanf(text + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
      }
      ok = 1;
    } else if ((gh_b64_decode(&raw, &raw_len, text, len) == 0 ||
                gh_b64url_decode(&raw, &raw_len, text, len) == 0) && raw_len == 32) {
      memcpy(out, raw, 32);
      ok = 1;
    }
    if (raw != NULL) OPENSSL_cleanse(raw, raw_len);
    gh_free(raw);
  }
  if (text != NULL) OPENSSL_cleanse(text, 256);
  gh_free(text);
  if (!ok) {
    *out_err = gh_asprintf("storage.etcd.encryption_key %s: %s", file,
                           f == NULL ? strerror(errno)
                                     : "expected 32 bytes: raw, 64 hex digits or base64 "
                                       "(openssl rand -base64 32)");
    return -EINVAL;
  }
  return 0;
}

/* reachable records whether etcd answered, logging only the changes, so an
 * outage is one line, not one per call (and one count in the metrics). */
static void reachable(etcd_store_t *s, int ok, const char *err) {
  if (ok && s->down) GH_INFO("fleet", "etcd reachable again at %s", acme_etcd_endpoint(s->etcd));
  if (!ok && !s->down) {
    GH_WARN("fleet", "etcd unreachable (%s); serving the local copy", err ? err : "?");
    atomic_fetch_add(&g_stats.outages, 1);
  }
  s->down = !ok;
  atomic_store(&g_stats.down, !ok);
}

/* ---- the node's lease ---- */

static int ensure_lease(etcd_store_t *s, char **out_err) {
  uint64_t now = gh_now_ms();
  if (s->lease != 0 && now - s->renewed_ms < s->lease_ttl_s * 1000 / 3) return 0;
  if (s->lease != 0) {
    int64_t ttl = 0;
    int ret = acme_etcd_lease_keepalive(s->etcd, out_err, &ttl, s->lease);
    if (ret != 0) return ret;
    if (ttl > 0) {
      s->renewed_ms = now;
      return 0;
    }
    /* Expired: every lock bound to it is gone, and so are our fences. */
    GH_WARN("fleet", "node %s: lease %lld expired; its locks are lost", s->node,
            (long long)s->lease);
    s->lease = 0;
  }
  int64_t id = 0, ttl = 0;
  int ret = acme_etcd_lease_grant(s->etcd, out_err, &id, &ttl, (int64_t)s->lease_ttl_s);
  if (ret != 0) return ret;
  s->lease = id;
  s->renewed_ms = now;
  /* The node's presence, for operators (etcdctl get --prefix .../nodes/):
   * it goes with the lease. */
  char *nk = gh_asprintf("%snodes/%s", s->prefix, s->node);
  char *err = NULL;
  if (acme_etcd_put(s->etcd, &err, NULL, str(nk), str(s->node), id) != 0) gh_free(err);
  gh_free(nk);
  return 0;
}

static const acme_storage_ops_t etcd_ops;

int acme_storage_shared(const acme_storage_t *st) { return st->ops == &etcd_ops; }

int acme_storage_down(const acme_storage_t *st) {
  return st->ops == &etcd_ops && ((const etcd_store_t *)(const void *)st)->down;
}

static void push_pending(etcd_store_t *s);
static int etcd_cert_load(acme_storage_t *st, acme_cert_t **out_cert, char **out_meta,
                          char **out_err, const char *name);

int acme_storage_keepalive(acme_storage_t *st) {
  if (st->ops != &etcd_ops) return 0; /* the directory needs none */
  etcd_store_t *s = store_of(st);
  char *err = NULL;
  int ret = ensure_lease(s, &err);
  reachable(s, ret == 0, err);
  gh_free(err);
  if (ret == 0 && s->num_pending > 0) push_pending(s);
  return ret;
}

static int pending_has(etcd_store_t *s, const char *name) {
  for (size_t i = 0; i < s->num_pending; i++)
    if (strcmp(s->pending[i], name) == 0) return 1;
  return 0;
}

static held_t *held_find(etcd_store_t *s, const char *name) {
  for (size_t i = 0; i < s->num_held; i++) {
    if (strcmp(s->held[i].name, name) == 0) return &s->held[i];
  }
  return NULL;
}

/* ---- accounts ---- */

static int account_key(char **out_key, char **out_err, etcd_store_t *s, const char *ca_url,
                       const char *account_id) {
  char ca[NAME_MAX + 1];
  int ret = acme__storage_ca_dir(ca, sizeof(ca), out_err, ca_url);
  if (ret == 0) ret = acme__storage_account_id_check(out_err, account_id);
  if (ret != 0) return ret;
  char *rest = gh_asprintf("%s/%s", ca, account_id);
  *out_key = key(s, "accounts/", rest);
  gh_free(rest);
  return 0;
}

static int etcd_account_save(acme_storage_t *st, char **out_err, const char *ca_url,
                             const char *account_id, gh_str_t json) {
  etcd_store_t *s = store_of(st);
  /* The local copy first: it checks the JSON, and it is what a node
   * serves from when etcd is away. */
  int ret = acme_storage_account_save(s->local, out_err, ca_url, account_id, json);
  if (ret != 0) return ret;
  char *k = NULL, *sealed = NULL;
  ret = account_key(&k, out_err, s, ca_url, account_id);
  if (ret == 0 && s->sealed &&
      (sealed = seal(s, k + strlen(s->prefix), json.ptr, json.len)) == NULL) {
    *out_err = gh_asprintf("account %s: cannot seal it", account_id);
    ret = -EIO;
  }
  if (ret == 0) ret = acme_etcd_put(s->etcd, out_err, NULL, str(k), sealed ? str(sealed) : json, 0);
  gh_free(sealed);
  reachable(s, ret == 0 || ret == -EINVAL || ret == -EIO, out_err ? *out_err : NULL);
  if (ret != 0 && ret != -EINVAL && s->local_mode) {
    GH_WARN("fleet", "account %s: etcd unreachable (%s): kept locally only", account_id,
            *out_err ? *out_err : "?");
    gh_free(*out_err);
    *out_err = NULL;
    ret = 0;
  }
  gh_free(k);
  return ret;
}

static int etcd_account_load(acme_storage_t *st, char **out_json, char **out_err,
                             const char *ca_url, const char *account_id) {
  etcd_store_t *s = store_of(st);
  *out_json = NULL;
  char *k = NULL;
  int ret = account_key(&k, out_err, s, ca_url, account_id);
  if (ret != 0) return ret;
  acme_etcd_kv_t kv;
  int found = 0;
  ret = acme_etcd_get(s->etcd, out_err, &kv, &found, NULL, str(k));
  gh_free(k);
  reachable(s, ret == 0, out_err ? *out_err : NULL);
  if (ret != 0) {
    gh_free(*out_err);
    *out_err = NULL;
    return acme_storage_account_load(s->local, out_json, out_err, ca_url, account_id);
  }
  if (!found) {
    *out_err = gh_asprintf("etcd: no account %s for %s", account_id, ca_url);
    return -ENOENT;
  }
  *out_json = unseal(s, (const char *)kv.key + strlen(s->prefix), (const char *)kv.value,
                     kv.value_len, out_err);
  acme_etcd_kv_cleanup(&kv);
  return *out_json != NULL ? 0 : -EBADMSG;
}

/* ---- certificates ---- */

static int cert_key(char **out_key, char **out_err, etcd_store_t *s, const char *name) {
  char enc[NAME_MAX + 1];
  int ret = acme__storage_name_encode(enc, sizeof(enc), out_err, name);
  if (ret != 0) return ret;
  *out_key = key(s, "certs/", name);
  return 0;
}

/* entry_text checks |bundle| for |name| (key |k|) and returns the value to
 * store, {"chain", "key" (sealed with an encryption key), "meta"}: 0 with
 * |*out_text| (caller frees), or -EINVAL/-EIO with |*out_err|. */
static int entry_text(etcd_store_t *s, char **out_text, char **out_err, const char *name,
                      const char *k, const acme_storage_bundle_t *bundle) {
  /* Checked before anything is written: a key that matches the leaf, and
   * meta that is a JSON object (as the directory backend checks). */
  char *err = NULL;
  acme_cert_t *cert = acme_cert_from_pem(&err, bundle->chain_pem.ptr, bundle->chain_pem.len,
                                         bundle->key_pem.ptr, bundle->key_pem.len);
  cJSON *meta = cJSON_ParseWithLength(bundle->meta_json.ptr, bundle->meta_json.len);
  if (cert == NULL || !cJSON_IsObject(meta)) {
    *out_err = gh_asprintf("certificate %s: refusing to store: %s", name,
                           cert == NULL ? err : "the meta is not a JSON object");
    acme_cert_unref(cert);
    cJSON_Delete(meta);
    gh_free(err);
    return -EINVAL;
  }
  acme_cert_unref(cert);
  cJSON *doc = cJSON_CreateObject();
  char *chain = gh_strndup(bundle->chain_pem.ptr, bundle->chain_pem.len);
  char *keypem = NULL;
  if (s->sealed) {
    keypem = seal(s, k + strlen(s->prefix), bundle->key_pem.ptr, bundle->key_pem.len);
  } else {
    keypem = gh_strndup(bundle->key_pem.ptr, bundle->key_pem.len);
  }
  if (keypem == NULL) {
    *out_err = gh_asprintf("certificate %s: cannot seal its key", name);
    cJSON_Delete(doc);
    cJSON_Delete(meta);
    gh_free(chain);
    return -EIO;
  }
  cJSON_AddStringToObject(doc, "chain", chain);
  cJSON_AddStringToObject(doc, "key", keypem);
  OPENSSL_cleanse(keypem, strlen(keypem));
  cJSON_AddItemToObject(doc, "meta", meta);
  gh_free(chain);
  gh_free(keypem);
  *out_text = cJSON_PrintUnformatted(doc);
  cJSON_Delete(doc);
  return 0;
}

static int etcd_cert_save(acme_storage_t *st, char **out_err, const char *name,
                          const acme_storage_bundle_t *bundle) {
  etcd_store_t *s = store_of(st);
  char *k = NULL, *text = NULL;
  int ret = cert_key(&k, out_err, s, name);
  if (ret == 0) ret = entry_text(s, &text, out_err, name, k, bundle);
  if (ret != 0) {
    gh_free(k);
    return ret;
  }
  held_t *h = held_find(s, name);
  if (h != NULL) {
    /* Fenced: only while our lock on the name is the one we took. */
    char *lk = key(s, "locks/", name);
    int done = 0;
    ret = acme_etcd_put_if(s->etcd, out_err, &done, NULL, str(k), str(text), 0, str(lk),
                           h->revision);
    gh_free(lk);
    if (ret == 0 && !done) {
      *out_err = gh_asprintf("certificate %s: not stored: this node's lock on it (revision "
                             "%lld) is gone, another node may hold it now",
                             name, (long long)h->revision);
      ret = -ESTALE;
      atomic_fetch_add(&g_stats.fence_refusals, 1);
    }
  } else {
    ret = acme_etcd_put(s->etcd, out_err, NULL, str(k), str(text), 0);
  }
  reachable(s, ret == 0 || ret == -ESTALE, out_err ? *out_err : NULL);
  gh_free(text);
  gh_free(k);
  if (ret != 0 && ret != -ESTALE && h == NULL && s->local_mode) {
    /* fleet.issue_when_store_down "local": kept here, and given to the
     * fleet once etcd answers again (push_pending). */
    GH_WARN("fleet", "certificate %s: etcd unreachable (%s): stored locally only, for now",
            name, out_err && *out_err ? *out_err : "?");
    gh_free(*out_err);
    *out_err = NULL;
    if (!pending_has(s, name)) {
      s->pending = gh_realloc(s->pending, (s->num_pending + 1) * sizeof(char *));
      s->pending[s->num_pending++] = gh_strdup(name);
    }
    ret = 0;
  }
  /* Written through only once the fleet has it: a refused write must not
   * leave this node serving a certificate the others never see. */
  if (ret == 0) ret = acme_storage_cert_save(s->local, out_err, name, bundle);
  return ret;
}

static acme_cert_t *parse_entry(const etcd_store_t *s, const acme_etcd_kv_t *kv,
                                char **out_meta, char **out_err, char **out_key_pem);

/* etcd_cert_save_over stores |bundle| only if the entry is still the
 * version whose leaf is |expected| (a transaction on the revision it was
 * read at): a node updating a certificate's meta (its renewal state) never
 * puts back the certificate another node has just replaced. */
static int etcd_cert_save_over(acme_storage_t *st, char **out_err, const char *name,
                               const acme_storage_bundle_t *bundle, const acme_cert_t *expected) {
  etcd_store_t *s = store_of(st);
  char *k = NULL, *text = NULL;
  int ret = cert_key(&k, out_err, s, name);
  if (ret == 0) ret = entry_text(s, &text, out_err, name, k, bundle);
  acme_etcd_kv_t kv;
  int found = 0;
  if (ret == 0) {
    ret = acme_etcd_get(s->etcd, out_err, &kv, &found, NULL, str(k));
    reachable(s, ret == 0, out_err ? *out_err : NULL);
  }
  if (ret == 0 && !found) {
    *out_err = gh_asprintf("certificate %s: gone from etcd", name);
    ret = -ENOENT;
  } else if (ret == 0) {
    char *meta = NULL, *err = NULL;
    acme_cert_t *have = parse_entry(s, &kv, &meta, &err, NULL);
    int same = acme_cert_same(have, expected);
    acme_cert_unref(have);
    gh_free(meta);
    gh_free(err);
    int ok = 0;
    if (same) {
      acme_etcd_cmp_t cmp = {.key = str(k), .target = ACME_ETCD_CMP_MOD,
                             .revision = kv.mod_revision};
      acme_etcd_op_t put = {.type = ACME_ETCD_OP_PUT, .key = str(k), .value = str(text)};
      acme_etcd_txn_t txn = {.cmps = &cmp, .num_cmps = 1, .success = &put, .num_success = 1,
                             .retry_safe = 1};
      ret = acme_etcd_txn(s->etcd, out_err, &ok, NULL, NULL, NULL, &txn);
      reachable(s, ret == 0, out_err ? *out_err : NULL);
    }
    if (ret == 0 && !ok) {
      *out_err = gh_asprintf("certificate %s: replaced meanwhile (by another node)", name);
      ret = -ESTALE;
    }
    acme_etcd_kv_cleanup(&kv);
  }
  if (text != NULL) OPENSSL_cleanse(text, strlen(text));
  gh_free(text);
  gh_free(k);
  if (ret == 0) ret = acme_storage_cert_save(s->local, out_err, name, bundle);
  return ret;
}

/* push_pending gives the fleet the certificates stored only locally while
 * etcd was down, each unless the fleet has one valid for longer by now. */
static void push_pending(etcd_store_t *s) {
  while (s->num_pending > 0 && !s->down) {
    char *name = s->pending[s->num_pending - 1];
    acme_cert_t *mine = NULL, *theirs = NULL;
    char *meta = NULL, *err = NULL;
    int ret = acme_storage_cert_load(s->local, &mine, &meta, &err, name);
    const char *outcome = NULL; /* NULL: try again later */
    if (ret != 0) {
      GH_WARN("fleet", "certificate %s: not given to the fleet: %s", name, err);
      outcome = "";
    } else {
      gh_free(err);
      err = NULL;
      ret = etcd_cert_load(&s->base, &theirs, NULL, &err, name);
      if (s->down) {
        /* read from the local copy: etcd is away again */
      } else if (ret == 0 && theirs->not_after >= mine->not_after) {
        outcome = "the fleet has one valid as long or longer";
      } else if (ret == 0 || ret == -ENOENT) {
        char *chain = NULL, *keypem = NULL;
        if (acme_cert_to_pem(mine, &chain, &keypem) == 0) {
          acme_storage_bundle_t b = {str(chain), str(keypem), str(meta)};
          gh_free(err);
          err = NULL;
          ret = etcd_cert_save(&s->base, &err, name, &b);
          if (!s->down) outcome = ret == 0 ? "now shared" : err;
        } else {
          outcome = "cannot write it as PEM";
        }
        gh_free(chain);
        if (keypem) OPENSSL_cleanse(keypem, strlen(keypem));
        gh_free(keypem);
      } else {
        outcome = err ? err : "unreadable in etcd";
      }
      if (outcome != NULL && outcome[0] != '\0')
        GH_INFO("fleet", "certificate %s, stored while etcd was down: %s", name, outcome);
    }
    acme_cert_unref(mine);
    acme_cert_unref(theirs);
    gh_free(meta);
    gh_free(err);
    if (outcome == NULL) break; /* etcd is away again: at the next keepalive */
    gh_free(name);
    s->num_pending--;
  }
}

/* parse_entry reads a stored certificate entry, {"chain", "key", "meta"}:
 * the certificate (key checked against the leaf) and the meta's text in
 * |*out_meta| (caller frees), or NULL with |*out_err| saying what is wrong.
 * What is stored is untrusted: another node, or anyone with write access
 * to the prefix, wrote it. */
static acme_cert_t *parse_entry(const etcd_store_t *s, const acme_etcd_kv_t *kv,
                                char **out_meta, char **out_err, char **out_key_pem) {
  *out_meta = NULL;
  *out_err = NULL;
  if (out_key_pem) *out_key_pem = NULL;
  cJSON *doc = cJSON_ParseWithLength((const char *)kv->value, kv->value_len);
  const cJSON *chain = cJSON_GetObjectItemCaseSensitive(doc, "chain");
  const cJSON *keyp = cJSON_GetObjectItemCaseSensitive(doc, "key");
  const cJSON *meta = cJSON_GetObjectItemCaseSensitive(doc, "meta");
  acme_cert_t *cert = NULL;
  if (cJSON_IsString(chain) && cJSON_IsString(keyp) && cJSON_IsObject(meta)) {
    char *keypem = unseal(s, (const char *)kv->key + strlen(s->prefix), keyp->valuestring,
                          strlen(keyp->valuestring), out_err);
    if (keypem != NULL) {
      cert = acme_cert_from_pem(out_err, chain->valuestring, strlen(chain->valuestring), keypem,
                                strlen(keypem));
      if (cert != NULL && out_key_pem != NULL) {
        *out_key_pem = keypem;
        keypem = NULL;
      }
      if (keypem != NULL) OPENSSL_cleanse(keypem, strlen(keypem));
      gh_free(keypem);
    }
  } else {
    *out_err = gh_strdup("expected {\"chain\", \"key\", \"meta\"}");
  }
  if (cert != NULL) *out_meta = cJSON_PrintUnformatted(meta);
  cJSON_Delete(doc);
  return cert;
}

static int etcd_cert_load(acme_storage_t *st, acme_cert_t **out_cert, char **out_meta,
                          char **out_err, const char *name) {
  etcd_store_t *s = store_of(st);
  *out_cert = NULL;
  if (out_meta) *out_meta = NULL;
  char *k = NULL;
  int ret = cert_key(&k, out_err, s, name);
  if (ret != 0) return ret;
  acme_etcd_kv_t kv;
  int found = 0;
  ret = acme_etcd_get(s->etcd, out_err, &kv, &found, NULL, str(k));
  reachable(s, ret == 0, out_err ? *out_err : NULL);
  if (ret != 0) {
    gh_free(k);
    gh_free(*out_err);
    *out_err = NULL;
    return acme_storage_cert_load(s->local, out_cert, out_meta, out_err, name);
  }
  if (!found) {
    *out_err = gh_asprintf("etcd %s: no certificate stored for %s", k, name);
    gh_free(k);
    return -ENOENT;
  }
  char *meta = NULL, *err = NULL;
  acme_cert_t *cert = parse_entry(s, &kv, &meta, &err, NULL);
  if (cert == NULL) {
    *out_err = gh_asprintf("etcd %s: corrupt certificate entry: %s", k, err);
    ret = -EBADMSG;
  } else {
    *out_cert = cert;
    if (out_meta) *out_meta = meta;
    else gh_free(meta);
  }
  gh_free(err);
  acme_etcd_kv_cleanup(&kv);
  gh_free(k);
  return ret;
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int etcd_cert_list(acme_storage_t *st, char ***out_names, size_t *out_num_names,
                          char **out_err) {
  etcd_store_t *s = store_of(st);
  *out_names = NULL;
  *out_num_names = 0;
  char *pfx = key(s, "certs/", "");
  acme_etcd_kv_t *kvs = NULL;
  size_t num = 0;
  int ret = acme_etcd_list(s->etcd, out_err, &kvs, &num, NULL, str(pfx));
  reachable(s, ret == 0, out_err ? *out_err : NULL);
  if (ret != 0) {
    gh_free(pfx);
    gh_free(*out_err);
    *out_err = NULL;
    return acme_storage_cert_list(s->local, out_names, out_num_names, out_err);
  }
  size_t plen = strlen(pfx);
  char **names = gh_calloc(num ? num : 1, sizeof(char *));
  size_t n = 0;
  for (size_t i = 0; i < num; i++) {
    const char *name = (const char *)kvs[i].key + plen;
    char enc[NAME_MAX + 1], *why = NULL;
    /* What is not a valid name is not ours to list. */
    if (acme__storage_name_encode(enc, sizeof(enc), &why, name) == 0) names[n++] = gh_strdup(name);
    gh_free(why);
  }
  qsort(names, n, sizeof(char *), compare_names);
  acme_etcd_kvs_free(kvs, num);
  gh_free(pfx);
  *out_names = names;
  *out_num_names = n;
  return 0;
}

static int etcd_cert_delete(acme_storage_t *st, char **out_err, const char *name) {
  etcd_store_t *s = store_of(st);
  char *k = NULL;
  int ret = cert_key(&k, out_err, s, name);
  if (ret != 0) return ret;
  int64_t deleted = 0;
  ret = acme_etcd_delete(s->etcd, out_err, &deleted, NULL, str(k), 0);
  reachable(s, ret == 0, out_err ? *out_err : NULL);
  gh_free(k);
  if (ret != 0) return ret;
  char *err = NULL;
  int local = acme_storage_cert_delete(s->local, &err, name);
  gh_free(err);
  if (deleted == 0 && local == -ENOENT) {
    *out_err = gh_asprintf("etcd: no certificate stored for %s", name);
    return -ENOENT;
  }
  return 0;
}

/* ---- locks ---- */

static void etcd_unlock(acme_storage_lock_t *l) {
  etcd_lock_t *lock = (etcd_lock_t *)l;
  etcd_store_t *s = lock->st;
  held_t *h = held_find(s, lock->name);
  if (h != NULL) {
    /* Delete the lock only if it is still ours (same create_revision). */
    char *lk = key(s, "locks/", lock->name);
    acme_etcd_cmp_t cmp = {.key = str(lk), .target = ACME_ETCD_CMP_CREATE, .revision = h->revision};
    acme_etcd_op_t del = {.type = ACME_ETCD_OP_DELETE, .key = str(lk)};
    acme_etcd_txn_t txn = {.cmps = &cmp, .num_cmps = 1, .success = &del, .num_success = 1,
                           .retry_safe = 1};
    char *err = NULL;
    int ok = 0;
    if (acme_etcd_txn(s->etcd, &err, &ok, NULL, NULL, NULL, &txn) != 0) {
      /* It goes with the lease, at the latest. */
      GH_WARN("fleet", "lock %s: cannot release: %s", lock->name, err);
    }
    gh_free(err);
    gh_free(lk);
    gh_free(h->name);
    *h = s->held[--s->num_held];
  }
  gh_free(lock->name);
  gh_free(lock);
}

static int etcd_lock_fresh(const acme_storage_lock_t *l, char **out_why) {
  const etcd_lock_t *lock = (const etcd_lock_t *)l;
  etcd_store_t *s = lock->st;
  held_t *h = held_find(s, lock->name);
  if (h == NULL || h->lease != s->lease) {
    *out_why = gh_asprintf("this node's lease expired: its lock on %s is lost", lock->name);
    return 0;
  }
  uint64_t age = gh_now_ms() - s->renewed_ms, limit = s->lease_ttl_s * 1000 * 2 / 3;
  if (age > limit) {
    *out_why = gh_asprintf("this node's lease was last renewed %llu ms ago (lease_ttl %llu s): "
                           "stopping before its lock on %s can lapse",
                           (unsigned long long)age, (unsigned long long)s->lease_ttl_s,
                           lock->name);
    return 0;
  }
  return 1;
}

static int etcd_lock(acme_storage_t *st, acme_storage_lock_t **out_lock, char **out_err,
                     const char *name, unsigned ttl_s) {
  etcd_store_t *s = store_of(st);
  *out_lock = NULL;
  char enc[NAME_MAX + 1];
  int ret = acme__storage_name_encode(enc, sizeof(enc), out_err, name);
  if (ret != 0) return ret;
  if (held_find(s, name) != NULL) {
    *out_err = gh_asprintf("lock %s: already held by this node", name);
    return ACME_STORAGE_LOCK_HELD;
  }
  ret = ensure_lease(s, out_err);
  char *lk = key(s, "locks/", name);
  int created = 0;
  int64_t rev = 0;
  if (ret == 0) {
    ret = acme_etcd_create_if_absent(s->etcd, out_err, &created, &rev, str(lk), str(s->node),
                                     s->lease);
  }
  reachable(s, ret == 0, out_err ? *out_err : NULL);
  if (ret != 0 && s->local_mode) {
    /* fleet.issue_when_store_down "local": this node orders alone, under
     * its directory's lock. */
    GH_WARN("fleet", "lock %s: etcd unreachable (%s): ordering alone (issue_when_store_down "
            "is \"local\")", name, *out_err ? *out_err : "?");
    gh_free(*out_err);
    *out_err = NULL;
    gh_free(lk);
    return acme__storage_lock(s->local, out_lock, out_err, name, ttl_s);
  }
  if (ret == 0 && !created) {
    acme_etcd_kv_t kv;
    int found = 0;
    char *err = NULL;
    const char *holder = "another node";
    if (acme_etcd_get(s->etcd, &err, &kv, &found, NULL, str(lk)) == 0 && found)
      holder = (const char *)kv.value;
    *out_err = gh_asprintf("lock %s: held by %s (etcd %s)", name, holder, lk);
    if (found) acme_etcd_kv_cleanup(&kv);
    gh_free(err);
    ret = ACME_STORAGE_LOCK_HELD;
  } else if (ret == 0) {
    s->held = gh_realloc(s->held, (s->num_held + 1) * sizeof(held_t));
    s->held[s->num_held++] = (held_t){gh_strdup(name), rev, s->lease};
    etcd_lock_t *lock = gh_calloc(1, sizeof(*lock));
    lock->base.release = etcd_unlock;
    lock->base.fresh = etcd_lock_fresh;
    lock->st = s;
    lock->name = gh_strdup(name);
    *out_lock = &lock->base;
    ret = ACME_STORAGE_LOCK_ACQUIRED;
  }
  gh_free(lk);
  return ret;
}

/* ---- challenge records ---- */

static const char *const challenge_dirs[] = {"challenges/http-01/", "challenges/tls-alpn-01/"};

/* challenge_key checks |id| (a base64url token, or a certificate name)
 * and returns its key (caller frees), or NULL with |*out_err|. */
static char *challenge_key(etcd_store_t *s, char **out_err, acme_storage_challenge_t kind,
                           const char *id) {
  if (kind == ACME_STORAGE_HTTP01) {
    size_t n = strlen(id);
    int ok = n > 0 && n <= 256;
    for (size_t i = 0; ok && i < n; i++) {
      char ch = id[i];
      ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_';
    }
    if (!ok) {
      char *p = acme__storage_printable(id);
      *out_err = gh_asprintf("challenge token %s: expected 1-256 base64url characters", p);
      gh_free(p);
      return NULL;
    }
  } else {
    char enc[NAME_MAX + 1];
    if (acme__storage_name_encode(enc, sizeof(enc), out_err, id) != 0) return NULL;
  }
  return key(s, challenge_dirs[kind == ACME_STORAGE_HTTP01 ? 0 : 1], id);
}

/* fence_of returns the fencing revision of |lock| when it is one of this
 * store's etcd locks still held (0: unfenced, such as a directory lock
 * taken while etcd was down in "local" mode), and the lock key in |*out_lk|
 * (caller frees). */
static int64_t fence_of(etcd_store_t *s, const acme_storage_lock_t *lock, char **out_lk) {
  *out_lk = NULL;
  if (lock == NULL || lock->release != etcd_unlock) return 0;
  const etcd_lock_t *l = (const etcd_lock_t *)lock;
  held_t *h = held_find(s, l->name);
  *out_lk = key(s, "locks/", l->name);
  return h != NULL ? h->revision : -1; /* -1: released, nothing matches */
}

/* challenge_write puts |key_auth| at |k| (bound to the lease), or deletes
 * |k| when it is NULL, fenced by |lock| when it has one. */
static int challenge_write(etcd_store_t *s, char **out_err, const char *k, const char *key_auth,
                           const acme_storage_lock_t *lock) {
  char *lk = NULL;
  int64_t fence = fence_of(s, lock, &lk);
  int ret = 0, ok = 1;
  if (lk == NULL && key_auth != NULL) {
    ret = acme_etcd_put(s->etcd, out_err, NULL, str(k), str(key_auth), s->lease);
  } else if (lk == NULL) {
    ret = acme_etcd_delete(s->etcd, out_err, NULL, NULL, str(k), 0);
  } else {
    acme_etcd_cmp_t cmp = {.key = str(lk), .target = ACME_ETCD_CMP_CREATE, .revision = fence};
    acme_etcd_op_t op = {.type = key_auth ? ACME_ETCD_OP_PUT : ACME_ETCD_OP_DELETE,
                         .key = str(k), .value = key_auth ? str(key_auth) : (gh_str_t){0},
                         .lease = key_auth ? s->lease : 0};
    acme_etcd_txn_t txn = {.cmps = &cmp, .num_cmps = 1, .success = &op, .num_success = 1,
                           .retry_safe = 1};
    ret = acme_etcd_txn(s->etcd, out_err, &ok, NULL, NULL, NULL, &txn);
  }
  reachable(s, ret == 0, out_err ? *out_err : NULL);
  if (ret == 0 && !ok) {
    *out_err = gh_asprintf("challenge record %s: not written: this node's lock is gone, "
                           "another node may hold it now", k);
    ret = -ESTALE;
    atomic_fetch_add(&g_stats.fence_refusals, 1);
  }
  gh_free(lk);
  return ret;
}

static int etcd_challenge_put(acme_storage_t *st, char **out_err, acme_storage_challenge_t kind,
                              const char *id, const char *key_auth,
                              const acme_storage_lock_t *lock) {
  etcd_store_t *s = store_of(st);
  char *k = challenge_key(s, out_err, kind, id);
  if (k == NULL) return -EINVAL;
  /* Bound to the node's lease: a node that dies takes its records along. */
  int ret = ensure_lease(s, out_err);
  if (ret == 0) ret = challenge_write(s, out_err, k, key_auth, lock);
  else reachable(s, 0, out_err ? *out_err : NULL);
  gh_free(k);
  return ret;
}

static int etcd_challenge_delete(acme_storage_t *st, char **out_err,
                                 acme_storage_challenge_t kind, const char *id,
                                 const acme_storage_lock_t *lock) {
  etcd_store_t *s = store_of(st);
  char *k = challenge_key(s, out_err, kind, id);
  if (k == NULL) return -EINVAL;
  int ret = challenge_write(s, out_err, k, NULL, lock);
  gh_free(k);
  return ret;
}

static int etcd_challenge_get(acme_storage_t *st, char **out_key_auth, char **out_err,
                              acme_storage_challenge_t kind, const char *id) {
  etcd_store_t *s = store_of(st);
  char *k = challenge_key(s, out_err, kind, id);
  if (k == NULL) return -EINVAL;
  acme_etcd_kv_t kv;
  int found = 0;
  int ret = acme_etcd_get(s->etcd, out_err, &kv, &found, NULL, str(k));
  reachable(s, ret == 0, out_err ? *out_err : NULL);
  if (ret == 0 && !found) {
    *out_err = gh_asprintf("etcd %s: no such challenge record", k);
    ret = -ENOENT;
  } else if (ret == 0) {
    *out_key_auth = (char *)kv.value;
    kv.value = NULL;
    acme_etcd_kv_cleanup(&kv);
  }
  gh_free(k);
  return ret;
}

/* ---- shared on-demand limits and refusals ---- */

/* parse_refusal reads a refusal record: 0 with |*out_why| (caller frees)
 * and |*out_until_ms| (may be NULL) while it holds, -ENOENT once it has
 * expired or if it is not one. */
static int parse_refusal(const char *v, size_t len, char **out_why, uint64_t *out_until_ms) {
  cJSON *doc = cJSON_ParseWithLength(v, len);
  const char *why = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(doc, "why"));
  const cJSON *until = cJSON_GetObjectItemCaseSensitive(doc, "until");
  int ret = -ENOENT;
  /* Bounded before any conversion: a double past 2^64 is no uint64_t. */
  if (why != NULL && cJSON_IsNumber(until) && until->valuedouble > (double)gh_wall_ms() &&
      until->valuedouble < 1e15) {
    char *p = acme__storage_printable(why);
    *out_why = p;
    if (out_until_ms) *out_until_ms = (uint64_t)until->valuedouble;
    ret = 0;
  }
  cJSON_Delete(doc);
  return ret;
}

/* A fleet-wide limit is a fixed window, "<prefix>limits/<key>" =
 * {"start": ms since the epoch, "count": n}, changed only by a
 * transaction on the revision it was read at, so two nodes never both
 * take the last order of a window. */
int acme_storage_limit_take(acme_storage_t *st, char **out_err, const char *limit_key,
                            uint32_t count, uint64_t per_ms) {
  if (st->ops != &etcd_ops) {
    *out_err = gh_strdup("limits: a directory store shares none");
    return -ENOTSUP;
  }
  etcd_store_t *s = store_of(st);
  if (count == 0) return 0; /* unlimited */
  char *k = key(s, "limits/", limit_key);
  int ret = -EAGAIN;
  for (int attempt = 0; attempt < 8 && ret == -EAGAIN; attempt++) {
    acme_etcd_kv_t kv;
    int found = 0;
    ret = acme_etcd_get(s->etcd, out_err, &kv, &found, NULL, str(k));
    reachable(s, ret == 0, out_err ? *out_err : NULL);
    if (ret != 0) break;
    uint64_t now = (uint64_t)gh_wall_ms(), start = now, used = 0;
    int64_t mod = 0;
    if (found) {
      cJSON *doc = cJSON_ParseWithLength((const char *)kv.value, kv.value_len);
      const cJSON *st_ = cJSON_GetObjectItemCaseSensitive(doc, "start");
      const cJSON *n = cJSON_GetObjectItemCaseSensitive(doc, "count");
      if (cJSON_IsNumber(st_) && cJSON_IsNumber(n) && st_->valuedouble >= 0 &&
          st_->valuedouble < 1e15 && n->valuedouble >= 0 && n->valuedouble < 1e15 &&
          now >= (uint64_t)st_->valuedouble && now - (uint64_t)st_->valuedouble < per_ms) {
        start = (uint64_t)st_->valuedouble;
        used = (uint64_t)n->valuedouble;
      }
      cJSON_Delete(doc);
      mod = kv.mod_revision;
      acme_etcd_kv_cleanup(&kv);
    }
    if (used >= count) {
      *out_err = gh_asprintf("%llu of %u used across the fleet; the window ends in %llu s",
                             (unsigned long long)used, count,
                             (unsigned long long)((start + per_ms - now) / 1000 + 1));
      ret = -EDQUOT;
      break;
    }
    char *val = gh_asprintf("{\"start\":%llu,\"count\":%llu}", (unsigned long long)start,
                            (unsigned long long)used + 1);
    acme_etcd_cmp_t cmp = {.key = str(k), .target = found ? ACME_ETCD_CMP_MOD : ACME_ETCD_CMP_CREATE,
                           .revision = mod};
    acme_etcd_op_t put = {.type = ACME_ETCD_OP_PUT, .key = str(k), .value = str(val)};
    acme_etcd_txn_t txn = {.cmps = &cmp, .num_cmps = 1, .success = &put, .num_success = 1};
    int ok = 0;
    ret = acme_etcd_txn(s->etcd, out_err, &ok, NULL, NULL, NULL, &txn);
    reachable(s, ret == 0, out_err ? *out_err : NULL);
    gh_free(val);
    if (ret == 0 && !ok) ret = -EAGAIN; /* another node took one meanwhile: again */
  }
  if (ret == -EAGAIN) *out_err = gh_asprintf("limit %s: too much contention", limit_key);
  gh_free(k);
  return ret;
}

int acme_storage_refusal_put(acme_storage_t *st, char **out_err, const char *name,
                             const char *why, uint64_t ttl_ms) {
  if (st->ops != &etcd_ops) return 0;
  etcd_store_t *s = store_of(st);
  char *k = NULL;
  int ret = cert_key(&k, out_err, s, name); /* checks the name */
  if (ret != 0) return ret;
  gh_free(k);
  k = key(s, "refused/", name);
  cJSON *doc = cJSON_CreateObject();
  cJSON_AddStringToObject(doc, "why", why);
  cJSON_AddNumberToObject(doc, "until", (double)((uint64_t)gh_wall_ms() + ttl_ms));
  char *val = cJSON_PrintUnformatted(doc);
  cJSON_Delete(doc);
  /* A lease of its own, so the record goes by itself. */
  int64_t lease = 0, ttl = 0;
  ret = acme_etcd_lease_grant(s->etcd, out_err, &lease, &ttl, (int64_t)(ttl_ms / 1000 + 1));
  if (ret == 0) ret = acme_etcd_put(s->etcd, out_err, NULL, str(k), str(val), lease);
  reachable(s, ret == 0, out_err ? *out_err : NULL);
  free(val);
  gh_free(k);
  return ret;
}

int acme_storage_refusal_get(acme_storage_t *st, char **out_why, const char *name) {
  *out_why = NULL;
  if (st->ops != &etcd_ops) return -ENOENT;
  etcd_store_t *s = store_of(st);
  char *k = key(s, "refused/", name), *err = NULL;
  acme_etcd_kv_t kv;
  int found = 0;
  int ret = acme_etcd_get(s->etcd, &err, &kv, &found, NULL, str(k));
  reachable(s, ret == 0, err);
  gh_free(err);
  gh_free(k);
  if (ret != 0) return ret;
  if (!found) return -ENOENT;
  ret = parse_refusal((const char *)kv.value, kv.value_len, out_why, NULL);
  acme_etcd_kv_cleanup(&kv);
  return ret;
}

/* ---- the store ---- */

static void etcd_free(acme_storage_t *st) {
  etcd_store_t *s = store_of(st);
  if (s->lease != 0) {
    /* Our locks go now rather than at the end of the TTL. */
    char *err = NULL;
    acme_etcd_lease_revoke(s->etcd, &err, s->lease);
    gh_free(err);
  }
  for (size_t i = 0; i < s->num_held; i++) gh_free(s->held[i].name);
  gh_free(s->held);
  for (size_t i = 0; i < s->num_pending; i++) gh_free(s->pending[i]);
  gh_free(s->pending);
  acme_etcd_free(s->etcd);
  for (size_t i = 0; i < s->econf.num_endpoints; i++) gh_free(s->endpoints[i]);
  gh_free(s->endpoints);
  gh_free((char *)s->econf.ca);
  gh_free((char *)s->econf.cert);
  gh_free((char *)s->econf.key);
  gh_free((char *)s->econf.username);
  gh_free((char *)s->econf.password);
  acme_storage_free(s->local);
  gh_free(s->prefix);
  gh_free(s->node);
  OPENSSL_cleanse(s->seal_key, sizeof(s->seal_key));
  gh_free(s);
}

static const acme_storage_ops_t etcd_ops = {
    .kind = "etcd",
    .free = etcd_free,
    .account_save = etcd_account_save,
    .account_load = etcd_account_load,
    .cert_save = etcd_cert_save,
    .cert_save_over = etcd_cert_save_over,
    .cert_load = etcd_cert_load,
    .cert_list = etcd_cert_list,
    .cert_delete = etcd_cert_delete,
    .lock = etcd_lock,
    .challenge_put = etcd_challenge_put,
    .challenge_delete = etcd_challenge_delete,
    .challenge_get = etcd_challenge_get,
};

static char *dup_or_null(const char *v) { return v ? gh_strdup(v) : NULL; }

acme_storage_t *acme_storage_open_conf(char **out_err, const conf_t *conf) {
  acme_storage_t *local = acme_storage_open(out_err, conf->storage);
  if (local == NULL || !conf->etcd.enabled) return local;
  const conf_etcd_t *e = &conf->etcd;
  const char **endpoints = gh_calloc(e->num_endpoints, sizeof(char *));
  for (size_t i = 0; i < e->num_endpoints; i++) endpoints[i] = e->endpoints[i].text;
  acme_etcd_conf_t ec = {
      .endpoints = endpoints, .num_endpoints = e->num_endpoints, .ca = e->ca, .cert = e->cert,
      .key = e->key, .username = e->username, .password = e->password,
      .timeout_ms = e->timeout_ms,
  };
  acme_etcd_t *etcd = acme_etcd_new(out_err, &ec);
  if (etcd == NULL) {
    gh_free(endpoints);
    acme_storage_free(local);
    return NULL;
  }
  etcd_store_t *s = gh_calloc(1, sizeof(*s));
  /* Copies: the watcher's thread makes its client from them, and the
   * configuration may go before the store does. */
  for (size_t i = 0; i < e->num_endpoints; i++) endpoints[i] = gh_strdup(endpoints[i]);
  s->endpoints = (char **)endpoints;
  s->econf = ec;
  s->econf.endpoints = (const char *const *)s->endpoints;
  s->econf.ca = dup_or_null(e->ca);
  s->econf.cert = dup_or_null(e->cert);
  s->econf.key = dup_or_null(e->key);
  s->econf.username = dup_or_null(e->username);
  s->econf.password = dup_or_null(e->password);
  s->base.ops = &etcd_ops;
  s->base.root = local->root;
  s->local = local;
  s->etcd = etcd;
  s->prefix = gh_strdup(e->prefix);
  if (conf->fleet.node != NULL) {
    s->node = gh_strdup(conf->fleet.node);
  } else {
    char host[256] = "node";
    gethostname(host, sizeof(host) - 1);
    s->node = gh_strdup(host);
  }
  s->lease_ttl_s = conf->fleet.lease_ttl_ms / 1000 ? conf->fleet.lease_ttl_ms / 1000 : 1;
  s->local_mode = conf->fleet.issue_when_store_down == CONF_STORE_DOWN_LOCAL;
  if (e->encryption_key != NULL) {
    if (load_seal_key(s->seal_key, out_err, e->encryption_key) != 0) {
      etcd_free(&s->base);
      return NULL;
    }
    s->sealed = 1;
  }
  atomic_store(&g_stats.enabled, 1);
  return &s->base;
}

/* ---- propagation: the watcher thread ---- */

struct acme_storage_watcher {
  etcd_store_t *st;
  acme_storage_watch_cbs_t cbs;
  void *arg;
  pthread_t thread;
  atomic_int stop;
  acme_storage_t *local; /* the thread's own handle on the local copy, or NULL */
};

/* copy_local writes what the fleet stored for |name| (|cert|, |meta|, the
 * entry |kv|) through to the node's local copy unless it is there already,
 * so a node that restarts while etcd is down serves every name the fleet
 * had. */
static void copy_local(acme_storage_watcher_t *w, const char *name, const acme_cert_t *cert,
                       const char *meta, const char *key_pem, const acme_etcd_kv_t *kv) {
  if (w->local == NULL) return;
  acme_cert_t *have = NULL;
  char *have_meta = NULL, *err = NULL;
  int same = acme_storage_cert_load(w->local, &have, &have_meta, &err, name) == 0 &&
             acme_cert_same(have, cert) && strcmp(have_meta, meta) == 0;
  acme_cert_unref(have);
  gh_free(have_meta);
  gh_free(err);
  err = NULL;
  if (same) return;
  cJSON *doc = cJSON_ParseWithLength((const char *)kv->value, kv->value_len);
  const char *chain = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(doc, "chain"));
  if (chain != NULL && key_pem != NULL) { /* the key as opened, never sealed on disk */
    acme_storage_bundle_t b = {str(chain), str(key_pem), str(meta)};
    if (acme_storage_cert_save(w->local, &err, name, &b) != 0)
      GH_WARN("fleet", "watch: %s: cannot keep the local copy: %s", name, err);
  }
  gh_free(err);
  cJSON_Delete(doc);
}

/* copy_account keeps the account "<ca>/<id>" (|rest|) that a node stored
 * in the local copy too, so a node whose etcd is away (and whose
 * issue_when_store_down is "local") orders with the fleet's account
 * rather than making one of its own. */
static void copy_account(acme_storage_watcher_t *w, const char *rest, const acme_etcd_kv_t *kv) {
  const char *slash = strchr(rest, '/');
  if (w->local == NULL || slash == NULL || slash == rest || (size_t)(slash - rest) > 255) return;
  /* The CA directory name is "host" or "host_port": back to a URL that
   * maps to it again, or nothing. */
  char ca[256], url[300], check[NAME_MAX + 1];
  memcpy(ca, rest, (size_t)(slash - rest));
  ca[slash - rest] = '\0';
  char *us = strrchr(ca, '_');
  if (us != NULL) *us = ':';
  snprintf(url, sizeof(url), "https://%s/", ca);
  if (us != NULL) *us = '_';
  char *err = NULL;
  if (acme__storage_ca_dir(check, sizeof(check), &err, url) != 0 || strcmp(check, ca) != 0) {
    gh_free(err);
    return;
  }
  char *json = unseal(w->st, rest - strlen("accounts/"), (const char *)kv->value, kv->value_len,
                      &err);
  if (json == NULL) {
    GH_WARN("fleet", "watch: account %s: %s", rest, err);
    gh_free(err);
    return;
  }
  char *have = NULL;
  int same = acme_storage_account_load(w->local, &have, &err, url, slash + 1) == 0 &&
             strcmp(have, json) == 0;
  gh_free(have);
  gh_free(err);
  err = NULL;
  if (!same && acme_storage_account_save(w->local, &err, url, slash + 1, str(json)) != 0)
    GH_DEBUG("fleet", "watch: account %s not copied: %s", rest, err);
  gh_free(err);
  OPENSSL_cleanse(json, strlen(json));
  gh_free(json);
}

/* deliver parses one certificate entry and hands it to the callback; a
 * corrupt one is logged and skipped (it is not ours to serve). */
static void deliver(acme_storage_watcher_t *w, const char *name, const acme_etcd_kv_t *kv) {
  char *meta = NULL, *err = NULL, *key_pem = NULL;
  acme_cert_t *cert = parse_entry(w->st, kv, &meta, &err, &key_pem);
  if (cert == NULL) {
    GH_WARN("fleet", "watch: %s: corrupt certificate entry skipped: %s", name, err);
  } else {
    copy_local(w, name, cert, meta, key_pem, kv);
    OPENSSL_cleanse(key_pem, strlen(key_pem));
    gh_free(key_pem);
    w->cbs.cert(w->arg, name, cert, meta);
    acme_cert_unref(cert);
  }
  gh_free(meta);
  gh_free(err);
}

/* name_of returns the certificate name of key |k| under |pfx|, or NULL
 * for a key that is not a valid name. */
static const char *name_of(const uint8_t *k, size_t plen) {
  const char *name = (const char *)k + plen;
  char enc[NAME_MAX + 1], *why = NULL;
  int ok = acme__storage_name_encode(enc, sizeof(enc), &why, name) == 0;
  gh_free(why);
  return ok ? name : NULL;
}

/* route hands one put (|kv| with a value) or delete of a key under the
 * prefix (|plen| bytes) to its callback: certificates and challenge
 * records; accounts and locks concern no one else. */
static void route(acme_storage_watcher_t *w, const acme_etcd_kv_t *kv, int put, size_t plen) {
  const char *rest = (const char *)kv->key + plen;
  if (strncmp(rest, "certs/", 6) == 0) {
    const char *name = name_of(kv->key, plen + 6);
    if (name == NULL) return;
    if (put) {
      deliver(w, name, kv);
    } else {
      char *err = NULL;
      if (w->local != NULL) acme_storage_cert_delete(w->local, &err, name);
      gh_free(err);
      w->cbs.cert(w->arg, name, NULL, NULL);
    }
    return;
  }
  if (strncmp(rest, "accounts/", 9) == 0) {
    if (put) copy_account(w, rest + 9, kv);
    return;
  }
  if (strncmp(rest, "refused/", 8) == 0) {
    const char *name = name_of(kv->key, plen + 8);
    char *why = NULL;
    uint64_t until = 0;
    if (name != NULL && put && w->cbs.refused != NULL &&
        parse_refusal((const char *)kv->value, kv->value_len, &why, &until) == 0)
      w->cbs.refused(w->arg, name, why, until);
    gh_free(why);
    return;
  }
  if (strncmp(rest, "locks/", 6) == 0) {
    const char *name = name_of(kv->key, plen + 6);
    if (name != NULL && !put && w->cbs.unlocked != NULL) w->cbs.unlocked(w->arg, name);
    return;
  }
  for (int kind = 0; kind < 2 && w->cbs.challenge; kind++) {
    size_t n = strlen(challenge_dirs[kind]);
    if (strncmp(rest, challenge_dirs[kind], n) != 0) continue;
    acme_storage_challenge_t k = kind == 0 ? ACME_STORAGE_HTTP01 : ACME_STORAGE_TLSALPN01;
    w->cbs.challenge(w->arg, k, rest + n, put ? (const char *)kv->value : NULL);
  }
}

void acme__storage_etcd_route(const char *prefix, const char *local_root, const uint8_t *key,
                              size_t key_len, const uint8_t *value, size_t value_len, int put,
                              const acme_storage_watch_cbs_t *cbs, void *arg) {
  /* A store that seals, with a fixed key: sealed values are tried too. */
  etcd_store_t view = {.prefix = (char *)prefix, .sealed = 1};
  acme_storage_watcher_t w = {.st = &view, .cbs = *cbs, .arg = arg};
  char *err = NULL;
  if (local_root != NULL && (w.local = acme_storage_open(&err, local_root)) == NULL) gh_free(err);
  size_t plen = strlen(prefix);
  acme_etcd_kv_t kv = {0};
  uint8_t *k = gh_malloc(plen + key_len + 1), *v = gh_malloc(value_len + 1);
  memcpy(k, prefix, plen);
  memcpy(k + plen, key, key_len);
  k[plen + key_len] = '\0';
  memcpy(v, value, value_len);
  v[value_len] = '\0';
  kv.key = k;
  kv.key_len = plen + key_len;
  kv.value = v;
  kv.value_len = value_len;
  route(&w, &kv, put, plen);
  gh_free(k);
  gh_free(v);
  acme_storage_free(w.local);
}

/* pause waits |ms| in slices, returning early when asked to stop. */
static void pause_ms(acme_storage_watcher_t *w, uint64_t ms) {
  for (uint64_t t = 0; t < ms && !atomic_load(&w->stop); t += 50) usleep(50 * 1000);
}

static void *watch_main(void *p) {
  acme_storage_watcher_t *w = p;
  etcd_store_t *s = w->st;
  char *err = NULL;
  acme_etcd_t *c = acme_etcd_new(&err, &s->econf);
  if (c == NULL) {
    GH_ERROR("fleet", "watch: %s", err);
    gh_free(err);
    return NULL;
  }
  char *pfx = gh_strdup(s->prefix);
  size_t plen = strlen(pfx);
  w->local = acme_storage_open(&err, s->base.root);
  if (w->local == NULL) {
    GH_WARN("fleet", "watch: no local copy kept: %s", err);
    gh_free(err);
    err = NULL;
  }
  acme_etcd_watch_t *watch = NULL;
  uint64_t backoff = 100;
  while (!atomic_load(&w->stop)) {
    if (watch == NULL) {
      /* (Re)start: everything there is now, then what changes after it. */
      acme_etcd_kv_t *kvs = NULL;
      size_t num = 0;
      int64_t rev = 0;
      int ret = acme_etcd_list(c, &err, &kvs, &num, &rev, str(pfx));
      if (ret == 0) {
        for (size_t i = 0; i < num && !atomic_load(&w->stop); i++) route(w, &kvs[i], 1, plen);
        acme_etcd_kvs_free(kvs, num);
        watch = acme_etcd_watch_open(c, &err, str(pfx), rev + 1);
      }
      if (watch == NULL) {
        GH_DEBUG("fleet", "watch: %s; again in %llu ms", err, (unsigned long long)backoff);
        gh_free(err);
        err = NULL;
        pause_ms(w, backoff);
        backoff = backoff < 5000 ? backoff * 2 : 5000;
        continue;
      }
      backoff = 100;
    }
    acme_etcd_event_t *ev = NULL;
    size_t num = 0;
    int64_t rev = 0;
    int r = acme_etcd_watch_next(watch, &err, &ev, &num, &rev, 500);
    if (r == ACME_ETCD_WATCH_TIMEOUT) continue;
    if (r == ACME_ETCD_WATCH_EVENTS) {
      atomic_fetch_add(&g_stats.watch_events, num);
      for (size_t i = 0; i < num; i++) route(w, &ev[i].kv, ev[i].type == ACME_ETCD_EVENT_PUT, plen);
      acme_etcd_events_free(ev, num);
      continue;
    }
    /* Compacted past us, or the stream broke: list again. */
    GH_DEBUG("fleet", "watch: %s", r == ACME_ETCD_WATCH_COMPACTED ? "compacted" : err);
    gh_free(err);
    err = NULL;
    acme_etcd_watch_free(watch);
    watch = NULL;
  }
  acme_etcd_watch_free(watch);
  acme_etcd_free(c);
  acme_storage_free(w->local);
  gh_free(pfx);
  return NULL;
}

acme_storage_watcher_t *acme_storage_watch_start(acme_storage_t *st, char **out_err,
                                                 const acme_storage_watch_cbs_t *cbs, void *arg) {
  if (st->ops != &etcd_ops) {
    *out_err = gh_strdup("watch: only a fleet (etcd) store is watched");
    return NULL;
  }
  acme_storage_watcher_t *w = gh_calloc(1, sizeof(*w));
  w->st = store_of(st);
  w->cbs = *cbs;
  w->arg = arg;
  atomic_init(&w->stop, 0);
  if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
    *out_err = gh_strdup("watch: cannot start its thread");
    gh_free(w);
    return NULL;
  }
  return w;
}

void acme_storage_watch_stop(acme_storage_watcher_t *w) {
  if (w == NULL) return;
  atomic_store(&w->stop, 1);
  pthread_join(w->thread, NULL);
  gh_free(w);
}

/* ---- the data plane's reads on a miss ---- */

#define READER_PER_S 50
#define READER_TIMEOUT_MS 500
#define READER_QUIET_MS 1000

struct acme_storage_reader {
  pthread_mutex_t mu;
  etcd_store_t view; /* prefix only, for challenge_key */
  acme_etcd_t *etcd;
  uint64_t window_ms; /* the current second */
  unsigned reads;     /* in it */
  uint64_t quiet_until_ms;
};

acme_storage_reader_t *acme_storage_reader_new(acme_storage_t *st, char **out_err) {
  if (st->ops != &etcd_ops) {
    *out_err = gh_strdup("challenge reader: only a fleet (etcd) store has records to read");
    return NULL;
  }
  etcd_store_t *s = store_of(st);
  acme_etcd_conf_t ec = s->econf;
  if (ec.timeout_ms == 0 || ec.timeout_ms > READER_TIMEOUT_MS) ec.timeout_ms = READER_TIMEOUT_MS;
  acme_etcd_t *etcd = acme_etcd_new(out_err, &ec);
  if (etcd == NULL) return NULL;
  acme_storage_reader_t *r = gh_calloc(1, sizeof(*r));
  pthread_mutex_init(&r->mu, NULL);
  r->etcd = etcd;
  r->view.prefix = gh_strdup(s->prefix);
  return r;
}

char *acme_storage_reader_challenge(acme_storage_reader_t *r, acme_storage_challenge_t kind,
                                    const char *id, size_t id_len) {
  if (r == NULL || id_len == 0 || id_len > 256 || memchr(id, '\0', id_len) != NULL) return NULL;
  char *idz = gh_strndup(id, id_len), *err = NULL, *answer = NULL;
  char *k = challenge_key(&r->view, &err, kind, idz);
  gh_free(idz);
  gh_free(err);
  if (k == NULL) return NULL;
  pthread_mutex_lock(&r->mu);
  uint64_t now = gh_now_ms();
  if (now - r->window_ms >= 1000) {
    r->window_ms = now;
    r->reads = 0;
  }
  if (now >= r->quiet_until_ms && r->reads < READER_PER_S) {
    r->reads++;
    acme_etcd_kv_t kv;
    int found = 0;
    err = NULL;
    if (acme_etcd_get(r->etcd, &err, &kv, &found, NULL, str(k)) != 0) {
      r->quiet_until_ms = now + READER_QUIET_MS;
      GH_DEBUG("fleet", "challenge read %s: %s", k, err);
    } else if (found) {
      atomic_fetch_add(&g_stats.challenge_reads, 1);
      answer = (char *)kv.value;
      kv.value = NULL;
      acme_etcd_kv_cleanup(&kv);
    }
    gh_free(err);
  }
  pthread_mutex_unlock(&r->mu);
  gh_free(k);
  return answer;
}

void acme_storage_reader_free(acme_storage_reader_t *r) {
  if (r == NULL) return;
  acme_etcd_free(r->etcd);
  gh_free(r->view.prefix);
  pthread_mutex_destroy(&r->mu);
  gh_free(r);
}
