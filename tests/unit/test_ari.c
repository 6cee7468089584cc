/* test_ari.c: ACME Renewal Information (RFC 9773) — the certificate
 * identifier, RFC 3339 times, the renewalInfo document and the choice of
 * a moment in its window. */
#include <time.h>

#include "acme/engine_internal.h"
#include "test.h"
#include "testcert.h"

/* cert_with makes a self-signed leaf with serial |serial| and, when
 * |aki_hex| is not NULL, that authority key identifier. */
static acme_cert_t *cert_with(uint64_t serial, const char *aki_hex) {
  EVP_PKEY *key = tc_key_ec();
  X509 *x = X509_new();
  TC_CHECK(x && X509_set_version(x, X509_VERSION_3) &&
           ASN1_INTEGER_set_uint64(X509_get_serialNumber(x), serial) &&
           X509_gmtime_adj(X509_getm_notBefore(x), 0) &&
           X509_gmtime_adj(X509_getm_notAfter(x), 86400) && X509_set_pubkey(x, key));
  X509_NAME *name = X509_get_subject_name(x);
  TC_CHECK(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const uint8_t *)"a.test", -1,
                                      -1, 0));
  TC_CHECK(X509_set_issuer_name(x, name));
  if (aki_hex != NULL) {
    uint8_t id[64];
    size_t n = strlen(aki_hex) / 2;
    for (size_t i = 0; i < n; i++) sscanf(aki_hex + 2 * i, "%2hhx", &id[i]);
    AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
    akid->keyid = ASN1_OCTET_STRING_new();
    TC_CHECK(ASN1_OCTET_STRING_set(akid->keyid, id, (int)n));
    TC_CHECK(X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0, 0));
    AUTHORITY_KEYID_free(akid);
  }
  TC_CHECK(X509_sign(x, key, EVP_sha256()));
  char *chain = tc_pem_certs(&x, 1);
  char *kpem = tc_pem_key(key);
  char *err = NULL;
  acme_cert_t *cert = acme_cert_from_pem(&err, chain, strlen(chain), kpem, strlen(kpem));
  TC_CHECK(cert != NULL);
  free(chain);
  free(kpem);
  X509_free(x);
  EVP_PKEY_free(key);
  return cert;
}

static void test_cert_id_rfc9773_example(void) {
  /* RFC 9773 4.1: keyIdentifier 69:88:5B:...:D4, serial 0x87654321 (DER
   * content 00 87 65 43 21: the high bit needs a leading zero). */
  acme_cert_t *cert = cert_with(0x87654321u, "69885B6B87464041E1B37B847BA0AE2CDE01C8D4");
  char *id = acme__ari_cert_id(cert);
  acme_cert_unref(cert);
  ASSERT_STR_EQ(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
  gh_free(id);
}

static void test_cert_id_small_serial_and_no_aki(void) {
  acme_cert_t *cert = cert_with(0x7f, "0102");
  char *id = acme__ari_cert_id(cert);
  acme_cert_unref(cert);
  ASSERT_STR_EQ(id, "AQI.fw");
  gh_free(id);
  cert = cert_with(5, NULL);
  id = acme__ari_cert_id(cert);
  acme_cert_unref(cert);
  ASSERT_NULL(id);
  ASSERT_NULL(acme__ari_cert_id(NULL));
}

static void test_time_parse(void) {
  time_t t;
  ASSERT_EQ(acme__time_parse("2025-01-02T03:04:05Z", &t), 0);
  ASSERT_EQ(t, 1735787045);
  ASSERT_EQ(acme__time_parse("2025-01-02T03:04:05.123456Z", &t), 0);
  ASSERT_EQ(t, 1735787045);
  ASSERT_EQ(acme__time_parse("2025-01-02T05:04:05+02:00", &t), 0);
  ASSERT_EQ(t, 1735787045);
  ASSERT_EQ(acme__time_parse("2025-01-02t01:04:05-02:00", &t), 0);
  ASSERT_EQ(t, 1735787045);
  ASSERT_EQ(acme__time_parse("2025-01-02T03:04:05", &t), -1);  /* no zone */
  ASSERT_EQ(acme__time_parse("2025-13-02T03:04:05Z", &t), -1); /* month */
  ASSERT_EQ(acme__time_parse("2025-01-02T03:04:05Zx", &t), -1);
  ASSERT_EQ(acme__time_parse("2025-01-02 03:04:05Z", &t), -1);
  ASSERT_EQ(acme__time_parse("", &t), -1);
  ASSERT_EQ(acme__time_parse(NULL, &t), -1);
}

static int parse(time_t *s, time_t *e, char **x, const char *body) {
  return acme__ari_parse(s, e, x, body, strlen(body));
}

static void test_window_parse(void) {
  time_t s, e;
  char *x = NULL;
  ASSERT_EQ(parse(&s, &e, &x,
                  "{\"suggestedWindow\":{\"start\":\"2025-01-02T03:04:05Z\","
                  "\"end\":\"2025-01-03T03:04:05Z\"},\"explanationURL\":\"https://ca/why\"}"),
            0);
  ASSERT_EQ(s, 1735787045);
  ASSERT_EQ(e, 1735787045 + 86400);
  ASSERT_STR_EQ(x, "https://ca/why");
  gh_free(x);
  ASSERT_EQ(parse(&s, &e, &x,
                  "{\"suggestedWindow\":{\"start\":\"2025-01-02T03:04:05Z\","
                  "\"end\":\"2025-01-03T03:04:05Z\"}}"),
            0);
  ASSERT_NULL(x);
  /* end before start, missing or mistyped fields, garbage */
  ASSERT_EQ(parse(&s, &e, &x,
                  "{\"suggestedWindow\":{\"start\":\"2025-01-03T03:04:05Z\","
                  "\"end\":\"2025-01-02T03:04:05Z\"}}"),
            -1);
  ASSERT_EQ(parse(&s, &e, &x, "{\"suggestedWindow\":{\"start\":\"2025-01-03T03:04:05Z\"}}"), -1);
  ASSERT_EQ(parse(&s, &e, &x, "{\"suggestedWindow\":{\"start\":1,\"end\":2}}"), -1);
  ASSERT_EQ(parse(&s, &e, &x, "{\"suggestedWindow\":[]}"), -1);
  ASSERT_EQ(parse(&s, &e, &x, "[]"), -1);
  ASSERT_EQ(parse(&s, &e, &x, "not json"), -1);
  ASSERT_NULL(x);
}

static void test_pick(void) {
  /* Inside the window, spread over it. */
  int low = 0, high = 0;
  for (int i = 0; i < 200; i++) {
    time_t t = acme__ari_pick(1000, 2000, 500);
    ASSERT_TRUE(t >= 1000 && t <= 2000);
    low += t < 1500;
    high += t >= 1500;
  }
  ASSERT_TRUE(low > 0 && high > 0);
  /* A window that started: not before now. */
  for (int i = 0; i < 50; i++) {
    time_t t = acme__ari_pick(1000, 2000, 1900);
    ASSERT_TRUE(t >= 1900 && t <= 2000);
  }
  /* A window in the past: now. */
  ASSERT_EQ(acme__ari_pick(1000, 2000, 3000), 3000);
  ASSERT_EQ(acme__ari_pick(1000, 2000, 2000), 2000);
}

int main(void) {
  RUN(test_cert_id_rfc9773_example);
  RUN(test_cert_id_small_serial_and_no_aki);
  RUN(test_time_parse);
  RUN(test_window_parse);
  RUN(test_pick);
  TEST_EXIT();
}
