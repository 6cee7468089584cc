/* test_certs.c: acme/certs.c — PEM parsing, key checks, facts read from the
 * leaf, reference counts, and the certificate table. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include <openssl/pool.h>

#include "acme/certs.h"
#include "common/common.h"
#include "test.h"
#include "testcert.h"

static int refs(acme_cert_t *cert) { return atomic_load(&cert->refs_); }

/* A leaf signed by an intermediate, and the PEM texts for them. */
typedef struct {
  EVP_PKEY *ca_key, *leaf_key;
  X509 *ca, *leaf;
  char *chain_pem; /* leaf, intermediate */
  char *key_pem;
} chain_t;

static void chain_init(chain_t *c, const char *cn, const char *sans) {
  c->ca_key = tc_key_ec();
  c->leaf_key = tc_key_ec();
  c->ca = tc_cert(c->ca_key, "Test Intermediate", NULL, NULL, NULL, 365);
  c->leaf = tc_cert(c->leaf_key, cn, sans, c->ca, c->ca_key, 30);
  X509 *certs[2] = {c->leaf, c->ca};
  c->chain_pem = tc_pem_certs(certs, 2);
  c->key_pem = tc_pem_key(c->leaf_key);
}

static void chain_cleanup(chain_t *c) {
  EVP_PKEY_free(c->ca_key);
  EVP_PKEY_free(c->leaf_key);
  X509_free(c->ca);
  X509_free(c->leaf);
  free(c->chain_pem);
  free(c->key_pem);
}

static acme_cert_t *parse(char **err, const char *chain, const char *key) {
  return acme_cert_from_pem(err, chain, strlen(chain), key, strlen(key));
}

static acme_cert_t *make_cert(const char *cn) {
  chain_t c;
  chain_init(&c, cn, cn);
  char *err = NULL;
  acme_cert_t *cert = parse(&err, c.chain_pem, c.key_pem);
  chain_cleanup(&c);
  if (cert == NULL) {
    fprintf(stderr, "make_cert: %s\n", err);
    abort();
  }
  return cert;
}

static void test_from_pem_facts(void) {
  chain_t c;
  chain_init(&c, "www.example.com", "WWW.Example.COM,example.com");
  char *err = NULL;
  time_t now = time(NULL);
  acme_cert_t *cert = parse(&err, c.chain_pem, c.key_pem);
  chain_cleanup(&c);
  ASSERT_NULL(err);
  ASSERT_NOT_NULL(cert);
  ASSERT_EQ(cert->num_chain, 2);
  ASSERT_NOT_NULL(cert->key);
  ASSERT_STR_EQ(cert->subject_cn, "www.example.com");
  ASSERT_STR_EQ(cert->issuer_cn, "Test Intermediate");
  ASSERT_EQ(cert->num_sans, 2);
  ASSERT_STR_EQ(cert->sans[0], "www.example.com");
  ASSERT_STR_EQ(cert->sans[1], "example.com");
  ASSERT_TRUE(cert->not_before >= now - 5 && cert->not_before <= now + 5);
  ASSERT_TRUE(cert->not_after >= now + 30 * 86400 - 5 && cert->not_after <= now + 30 * 86400 + 5);
  ASSERT_EQ(refs(cert), 1);
  acme_cert_unref(cert);
}

static void test_no_sans(void) {
  EVP_PKEY *key = tc_key_ec();
  X509 *x = tc_cert(key, "no-sans", NULL, NULL, NULL, 1);
  char *chain = tc_pem_certs(&x, 1), *key_pem = tc_pem_key(key);
  char *err = NULL;
  acme_cert_t *cert = parse(&err, chain, key_pem);
  free(chain);
  free(key_pem);
  X509_free(x);
  EVP_PKEY_free(key);
  ASSERT_NOT_NULL(cert);
  ASSERT_EQ(cert->num_sans, 0);
  ASSERT_STR_EQ(cert->subject_cn, "no-sans");
  ASSERT_STR_EQ(cert->issuer_cn, "no-sans");
  acme_cert_unref(cert);
}

static void test_pem_errors(void) {
  chain_t c;
  chain_init(&c, "a.test", "a.test");
  static const char junk_b64[] =
      "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  static const char bad_b64[] = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
  struct {
    const char *chain, *key, *want;
  } cases[] = {
      {"", c.key_pem, "certificate PEM: no certificate found"},
      {"hello\n", c.key_pem, "certificate PEM: no certificate found"},
      {c.key_pem, c.key_pem, "certificate PEM: no certificate found"},
      {bad_b64, c.key_pem, "certificate PEM: malformed PEM after 0 certificate(s)"},
      {junk_b64, c.key_pem, "certificate PEM: certificate 1 is not a valid X.509 certificate"},
      {c.chain_pem, "", "key PEM: no private key found"},
      {c.chain_pem, c.chain_pem, "key PEM: no private key found"},
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(cases); i++) {
    char *err = NULL;
    acme_cert_t *cert = parse(&err, cases[i].chain, cases[i].key);
    if (cert != NULL) acme_cert_unref(cert);
    ASSERT_NULL(cert);
    ASSERT_CONTAINS(err, cases[i].want);
    free(err);
  }
  chain_cleanup(&c);
}

static void test_key_mismatch(void) {
  chain_t c;
  chain_init(&c, "a.test", "a.test");
  EVP_PKEY *other = tc_key_ec();
  char *other_pem = tc_pem_key(other);
  char *err = NULL;
  acme_cert_t *cert = parse(&err, c.chain_pem, other_pem);
  ASSERT_NULL(cert);
  ASSERT_CONTAINS(err, "key PEM: key does not match certificate");
  free(err);
  err = NULL;
  /* The intermediate's key matches a chain certificate, but not the leaf. */
  char *ca_pem = tc_pem_key(c.ca_key);
  cert = parse(&err, c.chain_pem, ca_pem);
  ASSERT_NULL(cert);
  ASSERT_CONTAINS(err, "key does not match certificate");
  free(err);
  free(ca_pem);
  free(other_pem);
  EVP_PKEY_free(other);
  chain_cleanup(&c);
}

static void test_load_names_files(void) {
  tc_dir_t d;
  tc_dir_init(&d);
  chain_t c;
  chain_init(&c, "a.test", "a.test");
  const char *crt = tc_dir_write(&d, "cert.pem", c.chain_pem);
  const char *key = tc_dir_write(&d, "key.pem", c.key_pem);
  EVP_PKEY *other = tc_key_ec();
  char *other_pem = tc_pem_key(other);
  const char *wrong = tc_dir_write(&d, "wrong.pem", other_pem);
  const char *empty = tc_dir_write(&d, "empty.pem", "");
  size_t both_len = strlen(c.chain_pem) + strlen(c.key_pem) + 1;
  char *both = malloc(both_len);
  snprintf(both, both_len, "%s%s", c.chain_pem, c.key_pem);
  const char *combined = tc_dir_write(&d, "combined.pem", both);

  char *err = NULL;
  acme_cert_t *cert = acme_cert_load(&err, crt, key);
  ASSERT_NOT_NULL(cert);
  acme_cert_unref(cert);

  /* One file holding the chain and the key serves as both. */
  cert = acme_cert_load(&err, combined, combined);
  ASSERT_NOT_NULL(cert);
  ASSERT_EQ(cert->num_chain, 2);
  acme_cert_unref(cert);

  cert = acme_cert_load(&err, "/nonexistent/cert.pem", key);
  ASSERT_NULL(cert);
  ASSERT_CONTAINS(err, "/nonexistent/cert.pem: cannot open: No such file or directory");
  free(err);
  cert = acme_cert_load(&err, crt, "/nonexistent/key.pem");
  ASSERT_NULL(cert);
  ASSERT_CONTAINS(err, "/nonexistent/key.pem: cannot open");
  free(err);

  char want[256];
  cert = acme_cert_load(&err, empty, key);
  ASSERT_NULL(cert);
  snprintf(want, sizeof(want), "%s: no certificate found", empty);
  ASSERT_STR_EQ(err, want);
  free(err);

  cert = acme_cert_load(&err, crt, wrong);
  ASSERT_NULL(cert);
  snprintf(want, sizeof(want), "%s: key does not match certificate (%s)", wrong, crt);
  ASSERT_STR_EQ(err, want);
  free(err);

  free(both);
  free(other_pem);
  EVP_PKEY_free(other);
  chain_cleanup(&c);
  tc_dir_cleanup(&d);
}

static void test_pool_shares_intermediates(void) {
  EVP_PKEY *ca_key = tc_key_ec(), *k1 = tc_key_ec(), *k2 = tc_key_ec();
  X509 *ca = tc_cert(ca_key, "CA", NULL, NULL, NULL, 365);
  X509 *l1[2] = {tc_cert(k1, "one", "one.test", ca, ca_key, 30), ca};
  X509 *l2[2] = {tc_cert(k2, "two", "two.test", ca, ca_key, 30), ca};
  char *p1 = tc_pem_certs(l1, 2), *p2 = tc_pem_certs(l2, 2);
  char *kp1 = tc_pem_key(k1), *kp2 = tc_pem_key(k2);
  char *err = NULL;
  acme_cert_t *c1 = parse(&err, p1, kp1);
  acme_cert_t *c2 = parse(&err, p2, kp2);
  ASSERT_NOT_NULL(c1);
  ASSERT_NOT_NULL(c2);
  ASSERT_TRUE(c1->chain[1] == c2->chain[1]);
  ASSERT_TRUE(c1->chain[0] != c2->chain[0]);
  acme_cert_unref(c1);
  acme_cert_unref(c2);
  free(p1), free(p2), free(kp1), free(kp2);
  X509_free(l1[0]), X509_free(l2[0]), X509_free(ca);
  EVP_PKEY_free(ca_key), EVP_PKEY_free(k1), EVP_PKEY_free(k2);
}

static void test_refcount(void) {
  acme_cert_t *cert = make_cert("r.test");
  ASSERT_TRUE(acme_cert_ref(cert) == cert);
  ASSERT_EQ(refs(cert), 2);
  acme_cert_unref(cert);
  ASSERT_EQ(refs(cert), 1);
  acme_cert_unref(NULL);
  acme_cert_unref(cert); /* freed: ASan reports any later use */
}

/* Each use gets a later number than every use before it, in any thread. */
static void test_touch_orders_uses(void) {
  acme_cert_t *a = make_cert("a.test"), *b = make_cert("b.test");
  acme_cert_touch(a);
  acme_cert_touch(b);
  uint64_t first = atomic_load(&a->last_used_), second = atomic_load(&b->last_used_);
  ASSERT_TRUE(first != 0 && second > first);
  acme_cert_touch(a);
  ASSERT_TRUE(atomic_load(&a->last_used_) > second);
  acme_cert_unref(a);
  acme_cert_unref(b);
}

static void test_table_exact_wildcard(void) {
  acme_cert_table_t *t = acme_cert_table_new();
  acme_cert_t *exact = make_cert("a.example.com");
  acme_cert_t *wild = make_cert("*.example.com");
  acme_cert_table_put(t, "a.example.com", exact);
  acme_cert_table_put(t, "*.EXAMPLE.com", wild); /* stored lower-case */
  ASSERT_EQ(acme_cert_table_size(t), 2);
  ASSERT_EQ(refs(exact), 2);

  acme_cert_t *got = acme_cert_table_get(t, "a.example.com", 13);
  ASSERT_TRUE(got == exact);
  ASSERT_EQ(refs(exact), 3);
  acme_cert_unref(got);
  got = acme_cert_table_get(t, "b.example.com", 13);
  ASSERT_TRUE(got == wild);
  acme_cert_unref(got);
  /* The name need not be NUL-terminated. */
  got = acme_cert_table_get(t, "c.example.comXYZ", 13);
  ASSERT_TRUE(got == wild);
  acme_cert_unref(got);
  /* One label only in place of the '*'. */
  ASSERT_NULL(acme_cert_table_get(t, "a.b.example.com", 15));
  ASSERT_NULL(acme_cert_table_get(t, "example.com", 11));
  ASSERT_NULL(acme_cert_table_get(t, "com", 3));
  ASSERT_NULL(acme_cert_table_get(t, "example.com.", 12));
  ASSERT_NULL(acme_cert_table_get(t, "", 0));
  char longname[300];
  memset(longname, 'a', sizeof(longname));
  ASSERT_NULL(acme_cert_table_get(t, longname, sizeof(longname)));

  /* Removing the exact entry exposes the wildcard. */
  acme_cert_table_put(t, "a.example.com", NULL);
  ASSERT_EQ(acme_cert_table_size(t), 1);
  ASSERT_EQ(refs(exact), 1);
  got = acme_cert_table_get(t, "a.example.com", 13);
  ASSERT_TRUE(got == wild);
  acme_cert_unref(got);
  acme_cert_table_put(t, "missing.example.com", NULL);
  ASSERT_EQ(acme_cert_table_size(t), 1);

  acme_cert_table_free(t);
  ASSERT_EQ(refs(wild), 1);
  acme_cert_unref(exact);
  acme_cert_unref(wild);
  acme_cert_table_free(NULL);
}

static void test_table_replace_keeps_old_ref(void) {
  acme_cert_table_t *t = acme_cert_table_new();
  acme_cert_t *old = make_cert("old");
  acme_cert_t *fresh = make_cert("new");
  acme_cert_table_put(t, "x.test", old);
  acme_cert_unref(old); /* the table holds the only reference */
  acme_cert_t *held = acme_cert_table_get(t, "x.test", 6);
  ASSERT_TRUE(held == old);
  acme_cert_table_put(t, "x.test", fresh);
  ASSERT_EQ(acme_cert_table_size(t), 1);
  ASSERT_EQ(refs(held), 1);
  ASSERT_STR_EQ(held->subject_cn, "old"); /* still valid */
  acme_cert_t *got = acme_cert_table_get(t, "x.test", 6);
  ASSERT_TRUE(got == fresh);
  acme_cert_unref(got);
  acme_cert_unref(held); /* freed now */
  acme_cert_unref(fresh);
  acme_cert_table_free(t);
}

static void test_table_many(void) {
  acme_cert_table_t *t = acme_cert_table_new();
  acme_cert_t *cert = make_cert("many");
  char name[64];
  for (int i = 0; i < 2000; i++) {
    snprintf(name, sizeof(name), "host%d.example.com", i);
    acme_cert_table_put(t, name, cert);
  }
  ASSERT_EQ(acme_cert_table_size(t), 2000);
  ASSERT_EQ(refs(cert), 2001);
  for (int i = 0; i < 2000; i++) {
    int len = snprintf(name, sizeof(name), "host%d.example.com", i);
    acme_cert_t *got = acme_cert_table_get(t, name, (size_t)len);
    ASSERT_TRUE(got == cert);
    acme_cert_unref(got);
  }
  for (int i = 0; i < 2000; i += 2) {
    snprintf(name, sizeof(name), "host%d.example.com", i);
    acme_cert_table_put(t, name, NULL);
  }
  ASSERT_EQ(acme_cert_table_size(t), 1000);
  ASSERT_NULL(acme_cert_table_get(t, "host0.example.com", 17));
  acme_cert_t *got = acme_cert_table_get(t, "host1.example.com", 17);
  ASSERT_TRUE(got == cert);
  acme_cert_unref(got);
  acme_cert_table_free(t);
  ASSERT_EQ(refs(cert), 1);
  acme_cert_unref(cert);
}

/* Readers take and drop references while a writer swaps certificates: run
 * under ASan, a refcount or lock mistake shows up as a use after free. */
typedef struct {
  acme_cert_table_t *table;
  atomic_int stop;
} race_t;

static void *reader(void *arg) {
  race_t *r = arg;
  while (!atomic_load(&r->stop)) {
    acme_cert_t *c = acme_cert_table_get(r->table, "a.race.test", 11);
    if (c == NULL || c->num_chain != 2 || c->subject_cn == NULL) abort();
    acme_cert_unref(c);
  }
  return NULL;
}

static void test_table_concurrent_swap(void) {
  race_t r = {acme_cert_table_new(), 0};
  acme_cert_t *certs[4];
  for (int i = 0; i < 4; i++) certs[i] = make_cert("race");
  acme_cert_table_put(r.table, "*.race.test", certs[0]);
  pthread_t th[4];
  for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, reader, &r);
  for (int i = 0; i < 20000; i++) {
    acme_cert_table_put(r.table, (i & 1) ? "a.race.test" : "*.race.test", certs[i % 4]);
  }
  atomic_store(&r.stop, 1);
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  acme_cert_table_free(r.table);
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(refs(certs[i]), 1);
    acme_cert_unref(certs[i]);
  }
}

int main(void) {
  RUN(test_from_pem_facts);
  RUN(test_no_sans);
  RUN(test_pem_errors);
  RUN(test_key_mismatch);
  RUN(test_load_names_files);
  RUN(test_pool_shares_intermediates);
  RUN(test_refcount);
  RUN(test_touch_orders_uses);
  RUN(test_table_exact_wildcard);
  RUN(test_table_replace_keeps_old_ref);
  RUN(test_table_many);
  RUN(test_table_concurrent_swap);
  TEST_EXIT();
}
