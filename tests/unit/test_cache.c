/* test_cache.c: acme/cache.c — installing into the current table, putting
 * everything into a new table under the patterns its configuration still
 * manages, on-demand eviction of the least recently used, and owners. */
#include <stdatomic.h>

#include "acme/cache.h"
#include "common/common.h"
#include "test.h"
#include "testcert.h"

static acme_cert_t *make_cert(const char *name) {
  EVP_PKEY *key = tc_key_ec();
  X509 *x = tc_cert(key, name, name, NULL, NULL, 30);
  char *chain = tc_pem_certs(&x, 1), *pem = tc_pem_key(key), *err = NULL;
  acme_cert_t *cert = acme_cert_from_pem(&err, chain, strlen(chain), pem, strlen(pem));
  if (cert == NULL) {
    fprintf(stderr, "make_cert: %s\n", err);
    abort();
  }
  free(chain);
  free(pem);
  X509_free(x);
  EVP_PKEY_free(key);
  return cert;
}

/* get reports which certificate |table| serves for |name| (no reference
 * kept), or NULL. */
static acme_cert_t *get(acme_cert_table_t *table, const char *name) {
  acme_cert_t *cert = acme_cert_table_get(table, name, strlen(name));
  acme_cert_unref(cert);
  return cert;
}

/* An owner that counts its releases. */
typedef struct {
  int released;
} owner_t;

static void release(void *owner) { ((owner_t *)owner)->released++; }

static char *site_a_hosts[] = {"a.test", "www.a.test"};
static char *site_b_hosts[] = {"b.test"};

/* conf_init describes two ACME sites, a.test (the default) and b.test. */
static void conf_init(conf_t *conf, conf_site_t sites[2]) {
  memset(conf, 0, sizeof(*conf));
  memset(sites, 0, 2 * sizeof(*sites));
  sites[0].hosts = site_a_hosts;
  sites[0].num_hosts = 2;
  sites[0].is_default = 1;
  sites[1].hosts = site_b_hosts;
  sites[1].num_hosts = 1;
  conf->sites = sites;
  conf->num_sites = 2;
  conf->on_demand.enabled = 1;
}

static void test_install_site_and_new_table(void) {
  conf_t conf, conf2;
  conf_site_t sites[2], sites2[2];
  conf_init(&conf, sites);
  conf_init(&conf2, sites2);
  sites2[1].cert_file = "b.pem"; /* a reload gave b.test static files */
  owner_t o1 = {0}, o2 = {0};
  acme_cert_table_t *t1 = acme_cert_table_new(), *t2 = acme_cert_table_new();
  acme_cache_t *c = acme_cache_new(release);
  acme_cache_set_table(c, t1, &conf, &o1);
  acme_cert_t *a = make_cert("a.test"), *b = make_cert("b.test"), *a2 = make_cert("a.test");
  acme_cache_install_site(c, &sites[0], a);
  acme_cache_install_site(c, &sites[1], b);
  ASSERT_TRUE(get(t1, "a.test") == a);
  ASSERT_TRUE(get(t1, "www.a.test") == a);
  ASSERT_TRUE(get(t1, "*") == a); /* the default site's */
  ASSERT_TRUE(get(t1, "b.test") == b);
  /* The same site again replaces its certificate. */
  acme_cache_install_site(c, &sites[0], a2);
  ASSERT_TRUE(get(t1, "a.test") == a2);

  acme_cache_set_table(c, t2, &conf2, &o2);
  ASSERT_EQ(o1.released, 1);
  ASSERT_EQ(o2.released, 0);
  ASSERT_TRUE(get(t2, "a.test") == a2);
  ASSERT_TRUE(get(t2, "www.a.test") == a2);
  ASSERT_TRUE(get(t2, "*") == a2);
  ASSERT_NULL(get(t2, "b.test"));
  /* A managed site's certificate is not evicted by name. */
  ASSERT_EQ(acme_cache_evict_name(c, "a.test"), 0);
  ASSERT_TRUE(get(t2, "a.test") == a2);

  acme_cache_free(c);
  ASSERT_EQ(o1.released, 1);
  ASSERT_EQ(o2.released, 1);
  acme_cert_unref(a);
  acme_cert_unref(b);
  acme_cert_unref(a2);
  acme_cert_table_free(t1);
  acme_cert_table_free(t2);
}

static void test_lru_eviction(void) {
  conf_t conf;
  conf_site_t sites[2];
  conf_init(&conf, sites);
  acme_cert_table_t *t = acme_cert_table_new();
  acme_cache_t *c = acme_cache_new(NULL);
  acme_cache_set_table(c, t, &conf, NULL);
  acme_cert_t *site = make_cert("a.test");
  acme_cert_t *x = make_cert("x.test"), *y = make_cert("y.test"), *z = make_cert("z.test");
  acme_cache_install_site(c, &sites[0], site); /* never counts against the cap */
  acme_cache_install_name(c, "x.test", x, 2);
  acme_cache_install_name(c, "y.test", y, 2);
  ASSERT_TRUE(get(t, "x.test") == x);
  ASSERT_TRUE(get(t, "y.test") == y);
  /* A handshake used x.test after y.test was installed: y.test goes. */
  acme_cert_touch(x);
  acme_cache_install_name(c, "z.test", z, 2);
  ASSERT_TRUE(get(t, "x.test") == x);
  ASSERT_NULL(get(t, "y.test"));
  ASSERT_TRUE(get(t, "z.test") == z);
  ASSERT_TRUE(get(t, "a.test") == site);
  /* Installing a name already cached replaces it without evicting. */
  acme_cache_install_name(c, "x.test", x, 2);
  ASSERT_TRUE(get(t, "z.test") == z);
  /* No cap. */
  acme_cache_install_name(c, "y.test", y, 0);
  ASSERT_TRUE(get(t, "x.test") == x && get(t, "y.test") == y && get(t, "z.test") == z);

  acme_cache_free(c);
  acme_cert_unref(site);
  acme_cert_unref(x);
  acme_cert_unref(y);
  acme_cert_unref(z);
  acme_cert_table_free(t);
}

static void test_evict_name(void) {
  conf_t conf, off;
  conf_site_t sites[2], sites2[2];
  conf_init(&conf, sites);
  conf_init(&off, sites2);
  off.on_demand.enabled = 0;
  acme_cert_table_t *t1 = acme_cert_table_new(), *t2 = acme_cert_table_new(),
                    *t3 = acme_cert_table_new();
  acme_cache_t *c = acme_cache_new(NULL);
  acme_cert_t *x = make_cert("x.test"), *y = make_cert("y.test");
  /* Before any table: remembered, then put into the first one. */
  acme_cache_install_name(c, "x.test", x, 0);
  acme_cache_install_name(c, "y.test", y, 0);
  acme_cache_set_table(c, t1, &conf, NULL);
  ASSERT_TRUE(get(t1, "x.test") == x);
  ASSERT_EQ(acme_cache_evict_name(c, "x.test"), 1);
  ASSERT_EQ(acme_cache_evict_name(c, "x.test"), 0);
  ASSERT_NULL(get(t1, "x.test"));
  ASSERT_TRUE(get(t1, "y.test") == y);
  /* A new table does not get it back. */
  acme_cache_set_table(c, t2, &conf, NULL);
  ASSERT_NULL(get(t2, "x.test"));
  ASSERT_TRUE(get(t2, "y.test") == y);
  /* Nor any on-demand certificate once on_demand is off. */
  acme_cache_set_table(c, t3, &off, NULL);
  ASSERT_NULL(get(t3, "y.test"));

  acme_cache_free(c);
  acme_cache_free(NULL);
  acme_cert_unref(x);
  acme_cert_unref(y);
  acme_cert_table_free(t1);
  acme_cert_table_free(t2);
  acme_cert_table_free(t3);
}

int main(void) {
  RUN(test_install_site_and_new_table);
  RUN(test_lru_eviction);
  RUN(test_evict_name);
  TEST_EXIT();
}
