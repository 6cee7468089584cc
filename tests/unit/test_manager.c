/* test_manager.c: acme/manager — the on-demand names posted to the
 * certificate plane, seen only through the manager's hooks and its cache
 * (no data plane, and no CA: nothing here needs an order). A stored
 * certificate is installed, a name the policy refuses is answered as
 * such, and a stopped manager answers at once and leaves nothing open. */
#include <ftw.h>
#include <stdio.h>

#include "acme/manager.h"
#include "common/common.h"
#include "test.h"
#include "testcert.h"

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  return remove(path);
}

/* What the hooks saw. */
typedef struct {
  char names[4][64];
  int ok[4];
  char why[4][160]; /* "" when none (ok, or cancelled) */
  size_t num_done;
  size_t num_stats;
  acme_policy_stats_t stats; /* the last published */
} seen_t;

static void on_done(void *arg, const char *name, int ok, const char *why) {
  seen_t *s = arg;
  if (s->num_done < 4) {
    snprintf(s->names[s->num_done], sizeof(s->names[0]), "%s", name);
    s->ok[s->num_done] = ok;
    snprintf(s->why[s->num_done], sizeof(s->why[0]), "%s", why ? why : "");
  }
  s->num_done++;
}

static void on_stats(void *arg, const acme_policy_stats_t *st) {
  seen_t *s = arg;
  s->num_stats++;
  s->stats = *st;
}

/* ok_of returns the outcome seen for |name|, or -1 when there was none. */
static int ok_of(const seen_t *s, const char *name) {
  for (size_t i = 0; i < s->num_done && i < 4; i++)
    if (strcmp(s->names[i], name) == 0) return s->ok[i];
  return -1;
}

static void walk_close(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void test_ondemand_through_hooks(void) {
  char dir[64], store[96], doc[512];
  snprintf(dir, sizeof(dir), "/tmp/gh-manager-XXXXXX");
  TC_CHECK(mkdtemp(dir) != NULL);
  snprintf(store, sizeof(store), "%s/store", dir);
  /* Port 1 refuses connections: a request that reached the CA would fail
   * at once, but none should be needed. */
  snprintf(doc, sizeof(doc),
           "{\"sites\": [{\"hosts\": [\"*\"], \"upstreams\": [\"127.0.0.1:9\"], "
           "\"default\": true}], "
           "\"acme\": {\"directory\": \"https://127.0.0.1:1/directory\"}, "
           "\"on_demand\": {\"allow\": [\"*.test\"]}, \"storage\": \"%s\"}",
           store);
  char *err = NULL;
  conf_t *conf = conf_parse(&err, "m.json", doc, strlen(doc));
  if (conf == NULL) TEST_FAIL_("conf: %s", err);

  /* A valid certificate for stored.test, as an earlier order left it. */
  acme_storage_t *storage = acme_storage_open(&err, conf->storage);
  ASSERT_NOT_NULL(storage);
  EVP_PKEY *key = tc_key_ec();
  X509 *x = tc_cert(key, "stored.test", "stored.test", NULL, NULL, 30);
  char *chain = tc_pem_certs(&x, 1), *key_pem = tc_pem_key(key);
  acme_storage_bundle_t bundle = {{chain, strlen(chain)}, {key_pem, strlen(key_pem)}, {"{}", 2}};
  ASSERT_EQ(acme_storage_cert_save(storage, &err, "stored.test", &bundle), 0);
  free(chain);
  free(key_pem);
  X509_free(x);
  EVP_PKEY_free(key);

  uv_loop_t loop;
  uv_loop_init(&loop);
  acme_challenges_t *challenges = acme_challenges_new();
  acme_engine_t *engine = acme_engine_new(&err, &loop, conf, challenges);
  ASSERT_NOT_NULL(engine);
  acme_cert_table_t *table = acme_cert_table_new();
  acme_cache_t *cache = acme_cache_new(NULL);
  acme_cache_set_table(cache, table, conf, NULL);
  seen_t seen = {0};
  acme_manager_hooks_t hooks = {.ondemand_done = on_done, .policy_stats = on_stats, .arg = &seen};
  acme_manager_t *m = acme_manager_new(&loop, conf, engine, storage, cache, &hooks);

  acme_manager_ondemand(m, "stored.test", "192.0.2.1");
  acme_manager_ondemand(m, "elsewhere.example", "192.0.2.1");
  /* The policy answers from the loop, never from within the call. */
  ASSERT_EQ(seen.num_done, 0);
  for (int i = 0; i < 1000 && seen.num_done < 2; i++) uv_run(&loop, UV_RUN_ONCE);
  ASSERT_EQ(seen.num_done, 2);
  ASSERT_EQ(ok_of(&seen, "stored.test"), 1);
  ASSERT_EQ(ok_of(&seen, "elsewhere.example"), 0);
  /* The refusal says why; the allowed name says nothing. */
  for (size_t i = 0; i < 2; i++) {
    if (strcmp(seen.names[i], "elsewhere.example") == 0)
      ASSERT_STR_EQ(seen.why[i], "not in on_demand.allow");
    else
      ASSERT_STR_EQ(seen.why[i], "");
  }
  acme_cert_t *cert = acme_cert_table_get(table, "stored.test", strlen("stored.test"));
  ASSERT_NOT_NULL(cert);
  acme_cert_unref(cert);
  ASSERT_NULL(acme_cert_table_get(table, "elsewhere.example", strlen("elsewhere.example")));
  ASSERT_EQ(seen.num_stats, 2);
  ASSERT_UEQ(seen.stats.allowed, 1);
  ASSERT_UEQ(seen.stats.refused_precheck, 1);

  /* Stopped: a late name is refused at once, and nothing is left open
   * once the engine is gone too. */
  acme_manager_stop(m);
  acme_engine_free(engine);
  acme_manager_ondemand(m, "late.test", NULL);
  ASSERT_EQ(seen.num_done, 3);
  ASSERT_EQ(ok_of(&seen, "late.test"), 0);
  ASSERT_STR_EQ(seen.why[2], ""); /* cancelled, not refused */
  uv_run(&loop, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&loop);
  if (rc != 0) {
    uv_walk(&loop, walk_close, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
  ASSERT_EQ(rc, 0);

  acme_manager_free(m);
  acme_manager_free(NULL);
  acme_cache_free(cache);
  acme_cert_table_free(table);
  acme_challenges_free(challenges);
  acme_storage_free(storage);
  conf_free(conf);
  nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
  RUN(test_ondemand_through_hooks);
  TEST_EXIT();
}
