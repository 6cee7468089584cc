/* store_driver.c (test_store): the storage interface (acme/storage.h) of a
 * configuration, driven by a script, for tests/integration/test_fleet_store.py.
 *
 *   test_store CONFIG
 *
 * Opens the store CONFIG names (acme_storage_open_conf: its directory, or
 * with storage.etcd the fleet's store), then reads one JSON command a line
 * on stdin and answers each with one JSON line on stdout (flushed), so a
 * test can interleave other nodes, etcdctl and signals with it. Every
 * answer has "ok"; a failure has "code" and "err".
 *
 *   {"op":"save","name":N,"cert":FILE,"key":FILE,"meta":TEXT}
 *   {"op":"save_over", ... as save, "expected":FILE, "expected_key":FILE}
 *                                   only over that certificate
 *   {"op":"load","name":N}          -> sha256 (of the leaf, hex), meta
 *   {"op":"list"}                   -> names
 *   {"op":"delete","name":N}
 *   {"op":"lock","name":N}          -> result: "acquired" or "held" (err says by whom)
 *   {"op":"unlock","name":N}
 *   {"op":"keepalive"}
 *   {"op":"account_save","ca":URL,"id":ID,"json":TEXT}
 *   {"op":"account_load","ca":URL,"id":ID} -> json
 *   {"op":"challenge_put","kind":"http-01"|"tls-alpn-01","id":ID,"key_auth":KA[,"lock":N]}
 *                                   ("lock": fenced by this driver's lock on N)
 *   {"op":"challenge_delete","kind":K,"id":ID}
 *   {"op":"challenge_get","kind":K,"id":ID}  -> key_auth
 *   {"op":"watch"}                  starts following the store (a fleet's)
 *   {"op":"events"}                 -> events: [{name, sha256 or deleted, meta}
 *                                      or {challenge, id, key_auth or deleted}]
 *                                      seen since the last "events" */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/sha.h>
#include <openssl/pool.h>

#include "acme/storage.h"
#include "common/common.h"

enum { MAX_LOCKS = 16 };

static struct {
  char *name;
  acme_storage_lock_t *lock;
} g_locks[MAX_LOCKS];

static char *read_file(const char *path, size_t *out_len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  char *buf = gh_malloc(1 << 20);
  size_t n = fread(buf, 1, (1 << 20) - 1, f);
  fclose(f);
  buf[n] = '\0';
  *out_len = n;
  return buf;
}

static const char *field(const cJSON *cmd, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(cmd, name);
  return cJSON_IsString(v) ? v->valuestring : "";
}

static void leaf_sha256(cJSON *out, acme_cert_t *cert) {
  if (cert->num_chain == 0) return;
  uint8_t md[SHA256_DIGEST_LENGTH];
  SHA256(CRYPTO_BUFFER_data(cert->chain[0]), CRYPTO_BUFFER_len(cert->chain[0]), md);
  char hex[2 * SHA256_DIGEST_LENGTH + 1];
  for (size_t i = 0; i < sizeof(md); i++) sprintf(hex + 2 * i, "%02x", md[i]);
  cJSON_AddStringToObject(out, "sha256", hex);
}

/* The watcher's thread adds here; "events" takes them. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static cJSON *g_events;
static acme_storage_watcher_t *g_watcher;

static void on_event(void *arg, const char *name, acme_cert_t *cert, const char *meta) {
  (void)arg;
  cJSON *e = cJSON_CreateObject();
  cJSON_AddStringToObject(e, "name", name);
  if (cert != NULL) {
    leaf_sha256(e, cert);
    cJSON_AddStringToObject(e, "meta", meta);
  } else {
    cJSON_AddBoolToObject(e, "deleted", 1);
  }
  pthread_mutex_lock(&g_mu);
  if (g_events == NULL) g_events = cJSON_CreateArray();
  cJSON_AddItemToArray(g_events, e);
  pthread_mutex_unlock(&g_mu);
}

static void on_challenge(void *arg, acme_storage_challenge_t kind, const char *id,
                         const char *key_auth) {
  (void)arg;
  cJSON *e = cJSON_CreateObject();
  cJSON_AddStringToObject(e, "challenge", kind == ACME_STORAGE_HTTP01 ? "http-01" : "tls-alpn-01");
  cJSON_AddStringToObject(e, "id", id);
  if (key_auth) cJSON_AddStringToObject(e, "key_auth", key_auth);
  else cJSON_AddBoolToObject(e, "deleted", 1);
  pthread_mutex_lock(&g_mu);
  if (g_events == NULL) g_events = cJSON_CreateArray();
  cJSON_AddItemToArray(g_events, e);
  pthread_mutex_unlock(&g_mu);
}

static void on_unlocked(void *arg, const char *name) {
  (void)arg;
  cJSON *e = cJSON_CreateObject();
  cJSON_AddStringToObject(e, "unlocked", name);
  pthread_mutex_lock(&g_mu);
  if (g_events == NULL) g_events = cJSON_CreateArray();
  cJSON_AddItemToArray(g_events, e);
  pthread_mutex_unlock(&g_mu);
}

/* lock_of returns the lock this driver holds on the command's "lock" name
 * (a fenced challenge write), or NULL. */
static acme_storage_lock_t *lock_of(const cJSON *cmd) {
  const cJSON *l = cJSON_GetObjectItemCaseSensitive(cmd, "lock");
  if (!cJSON_IsString(l)) return NULL;
  for (size_t i = 0; i < MAX_LOCKS; i++)
    if (g_locks[i].name != NULL && strcmp(g_locks[i].name, l->valuestring) == 0)
      return g_locks[i].lock;
  return NULL;
}

static acme_storage_challenge_t kind_of(const cJSON *cmd) {
  return strcmp(field(cmd, "kind"), "tls-alpn-01") == 0 ? ACME_STORAGE_TLSALPN01
                                                         : ACME_STORAGE_HTTP01;
}

static int run(acme_storage_t *st, const cJSON *cmd, cJSON *out, char **err) {
  const char *op = field(cmd, "op"), *name = field(cmd, "name");
  if (strcmp(op, "save") == 0 || strcmp(op, "save_over") == 0) {
    size_t cl = 0, kl = 0;
    char *chain = read_file(field(cmd, "cert"), &cl), *key = read_file(field(cmd, "key"), &kl);
    const char *meta = field(cmd, "meta");
    acme_storage_bundle_t b = {{chain ? chain : "", cl}, {key ? key : "", kl}, {meta, strlen(meta)}};
    int ret;
    if (strcmp(op, "save") == 0) {
      ret = acme_storage_cert_save(st, err, name, &b);
    } else {
      size_t el = 0, ekl = 0;
      char *exp = read_file(field(cmd, "expected"), &el), *e2 = NULL;
      char *ekey = read_file(field(cmd, "expected_key"), &ekl);
      acme_cert_t *expected = exp && ekey ? acme_cert_from_pem(&e2, exp, el, ekey, ekl) : NULL;
      gh_free(e2);
      ret = acme_storage_cert_save_over(st, err, name, &b, expected);
      acme_cert_unref(expected);
      gh_free(exp);
      gh_free(ekey);
    }
    gh_free(chain);
    gh_free(key);
    return ret;
  }
  if (strcmp(op, "load") == 0) {
    acme_cert_t *cert = NULL;
    char *meta = NULL;
    int ret = acme_storage_cert_load(st, &cert, &meta, err, name);
    if (ret == 0) {
      leaf_sha256(out, cert);
      cJSON_AddStringToObject(out, "meta", meta);
      acme_cert_unref(cert);
      gh_free(meta);
    }
    return ret;
  }
  if (strcmp(op, "list") == 0) {
    char **names = NULL;
    size_t num = 0;
    int ret = acme_storage_cert_list(st, &names, &num, err);
    cJSON *arr = cJSON_AddArrayToObject(out, "names");
    for (size_t i = 0; i < num; i++) cJSON_AddItemToArray(arr, cJSON_CreateString(names[i]));
    acme_storage_names_free(names, num);
    return ret;
  }
  if (strcmp(op, "delete") == 0) return acme_storage_cert_delete(st, err, name);
  if (strcmp(op, "lock") == 0) {
    size_t slot = 0;
    while (slot < MAX_LOCKS && g_locks[slot].name != NULL) slot++;
    if (slot == MAX_LOCKS) return -ENOSPC;
    acme_storage_lock_t *lock = NULL;
    int ret = acme__storage_lock(st, &lock, err, name, 600);
    if (ret < 0) return ret;
    cJSON_AddStringToObject(out, "result", ret == ACME_STORAGE_LOCK_ACQUIRED ? "acquired" : "held");
    if (ret == ACME_STORAGE_LOCK_HELD) {
      cJSON_AddStringToObject(out, "holder", *err ? *err : "");
      gh_free(*err);
      *err = NULL;
    } else {
      g_locks[slot].name = gh_strdup(name);
      g_locks[slot].lock = lock;
    }
    return 0;
  }
  if (strcmp(op, "unlock") == 0) {
    for (size_t i = 0; i < MAX_LOCKS; i++) {
      if (g_locks[i].name == NULL || strcmp(g_locks[i].name, name) != 0) continue;
      acme__storage_unlock(g_locks[i].lock);
      gh_free(g_locks[i].name);
      g_locks[i].name = NULL;
      return 0;
    }
    *err = gh_asprintf("not locked here: %s", name);
    return -ENOENT;
  }
  if (strcmp(op, "keepalive") == 0) return acme_storage_keepalive(st);
  if (strcmp(op, "fresh") == 0) {
    for (size_t i = 0; i < MAX_LOCKS; i++) {
      if (g_locks[i].name == NULL || strcmp(g_locks[i].name, name) != 0) continue;
      char *why = NULL;
      int fresh = acme__storage_lock_fresh(g_locks[i].lock, &why);
      cJSON_AddBoolToObject(out, "fresh", fresh);
      if (why != NULL) cJSON_AddStringToObject(out, "why", why);
      gh_free(why);
      return 0;
    }
    *err = gh_asprintf("not locked here: %s", name);
    return -ENOENT;
  }
  if (strcmp(op, "account_save") == 0) {
    const char *json = field(cmd, "json");
    return acme_storage_account_save(st, err, field(cmd, "ca"), field(cmd, "id"),
                                     (gh_str_t){json, strlen(json)});
  }
  if (strcmp(op, "account_load") == 0) {
    char *json = NULL;
    int ret = acme_storage_account_load(st, &json, err, field(cmd, "ca"), field(cmd, "id"));
    if (ret == 0) cJSON_AddStringToObject(out, "json", json);
    gh_free(json);
    return ret;
  }
  if (strcmp(op, "watch") == 0) {
    if (g_watcher != NULL) return 0;
    static const acme_storage_watch_cbs_t cbs = {on_event, on_challenge, on_unlocked, NULL};
    g_watcher = acme_storage_watch_start(st, err, &cbs, NULL);
    return g_watcher ? 0 : -EINVAL;
  }
  if (strcmp(op, "events") == 0) {
    pthread_mutex_lock(&g_mu);
    cJSON *ev = g_events ? g_events : cJSON_CreateArray();
    g_events = NULL;
    pthread_mutex_unlock(&g_mu);
    cJSON_AddItemToObject(out, "events", ev);
    return 0;
  }
  if (strcmp(op, "challenge_put") == 0)
    return acme_storage_challenge_put(st, err, kind_of(cmd), field(cmd, "id"), field(cmd, "key_auth"),
                                      lock_of(cmd));
  if (strcmp(op, "challenge_delete") == 0)
    return acme_storage_challenge_delete(st, err, kind_of(cmd), field(cmd, "id"), lock_of(cmd));
  if (strcmp(op, "challenge_get") == 0) {
    char *ka = NULL;
    int ret = acme_storage_challenge_get(st, &ka, err, kind_of(cmd), field(cmd, "id"));
    if (ret == 0) cJSON_AddStringToObject(out, "key_auth", ka);
    gh_free(ka);
    return ret;
  }
  *err = gh_asprintf("unknown op %s", op);
  return -EINVAL;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc != 2) {
    fprintf(stderr, "usage: test_store CONFIG\n");
    return 2;
  }
  char *err = NULL;
  conf_t *conf = conf_load(&err, argv[1]);
  acme_storage_t *st = conf ? acme_storage_open_conf(&err, conf) : NULL;
  if (st == NULL) {
    fprintf(stderr, "test_store: %s\n", err);
    gh_free(err);
    conf_free(conf);
    return 1;
  }
  char line[65536];
  while (fgets(line, sizeof(line), stdin) != NULL) {
    cJSON *cmd = cJSON_Parse(line), *out = cJSON_CreateObject();
    char *e = NULL;
    int ret = cmd ? run(st, cmd, out, &e) : -EINVAL;
    cJSON_AddBoolToObject(out, "ok", ret == 0);
    if (ret != 0) {
      cJSON_AddNumberToObject(out, "code", ret);
      cJSON_AddStringToObject(out, "err", e ? e : "");
    }
    gh_free(e);
    char *text = cJSON_PrintUnformatted(out);
    printf("%s\n", text);
    fflush(stdout);
    cJSON_free(text);
    cJSON_Delete(out);
    cJSON_Delete(cmd);
  }
  acme_storage_watch_stop(g_watcher);
  cJSON_Delete(g_events);
  for (size_t i = 0; i < MAX_LOCKS; i++) {
    if (g_locks[i].name == NULL) continue;
    acme__storage_unlock(g_locks[i].lock);
    gh_free(g_locks[i].name);
  }
  acme_storage_free(st);
  conf_free(conf);
  return 0;
}
