/* test_csr.c: acme/csr.c and acme/tlsalpn.c — CSRs read back by the
 * openssl CLI and by BoringSSL (subject, SAN list, signature), the
 * TLS-ALPN-01 certificate (RFC 8737 section 3: the only SAN, the critical
 * id-pe-acmeIdentifier extension and its exact bytes, validity, serial,
 * usable with SSL_set_chain_and_key), and hostile names. */
#include <sys/wait.h>
#include <time.h>

#include <openssl/mem.h>
#include <openssl/obj.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "acme/acme.h"
#include "acme/csr.h"
#include "acme/jws.h"
#include "common/common.h"
#include "test.h"
#include "testcert.h"

/* openssl_text runs `openssl |args| -in FILE` on |der| written to a file
 * and returns its combined output (caller frees), or NULL if it failed. */
static char *openssl_text(const char *args, const uint8_t *der, size_t der_len) {
  tc_dir_t d;
  tc_dir_init(&d);
  const char *path = tc_dir_write(&d, "in.der", "");
  FILE *f = fopen(path, "wb");
  TC_CHECK(f && fwrite(der, 1, der_len, f) == der_len && fclose(f) == 0);
  char *cmd = gh_asprintf("openssl %s -in %s 2>&1", args, path);
  FILE *p = popen(cmd, "r");
  TC_CHECK(p != NULL);
  char *out = gh_calloc(1, 65536);
  size_t len = fread(out, 1, 65535, p);
  out[len] = '\0';
  int status = pclose(p);
  gh_free(cmd);
  tc_dir_cleanup(&d);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "openssl %s failed:\n%s\n", args, out);
    gh_free(out);
    return NULL;
  }
  return out;
}

static char *csr_text(const uint8_t *der, size_t der_len) {
  return openssl_text("req -inform DER -noout -text -verify", der, der_len);
}

/* req_sans returns the SAN dNSNames of |req| joined by ',' (caller frees). */
static char *req_sans(X509_REQ *req) {
  STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
  TC_CHECK(exts != NULL && sk_X509_EXTENSION_num(exts) == 1);
  GENERAL_NAMES *gens = X509V3_EXT_d2i(sk_X509_EXTENSION_value(exts, 0));
  TC_CHECK(gens != NULL);
  char *out = gh_strdup("");
  for (size_t i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
    const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);
    TC_CHECK(gn->type == GEN_DNS);
    char *next = gh_asprintf("%s%s%.*s", out, i ? "," : "", ASN1_STRING_length(gn->d.dNSName),
                             (const char *)ASN1_STRING_get0_data(gn->d.dNSName));
    gh_free(out);
    out = next;
  }
  GENERAL_NAMES_free(gens);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  return out;
}

static void check_csr(conf_key_type_t type, const char *sig_alg) {
  EVP_PKEY *key = acme__key_new(type);
  const char *names[] = {"a.example.com", "b.example.com", "*.c.example.com"};
  char *err = NULL;
  uint8_t *der = NULL;
  size_t der_len = 0;
  ASSERT_EQ(acme__csr_der(&err, &der, &der_len, key, names, 3), 0);
  ASSERT_NULL(err);
  ASSERT_NOT_NULL(der);

  char *text = csr_text(der, der_len);
  ASSERT_NOT_NULL(text);
  ASSERT_CONTAINS(text, "verify OK");
  ASSERT_CONTAINS(text, "Subject: CN = a.example.com\n");
  ASSERT_CONTAINS(text, "DNS:a.example.com, DNS:b.example.com, DNS:*.c.example.com\n");
  ASSERT_CONTAINS(text, sig_alg);
  gh_free(text);

  const uint8_t *p = der;
  X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)der_len);
  ASSERT_NOT_NULL(req);
  ASSERT_TRUE(p == der + der_len);
  ASSERT_EQ(X509_REQ_verify(req, key), 1);
  char *sans = req_sans(req);
  ASSERT_STR_EQ(sans, "a.example.com,b.example.com,*.c.example.com");
  gh_free(sans);
  X509_REQ_free(req);

  /* Signed by another key, it does not verify. */
  EVP_PKEY *other = acme__key_new(type);
  p = der;
  req = d2i_X509_REQ(NULL, &p, (long)der_len);
  ASSERT_EQ(X509_REQ_verify(req, other), 0);
  ERR_clear_error();
  X509_REQ_free(req);
  EVP_PKEY_free(other);
  OPENSSL_free(der);
  EVP_PKEY_free(key);
}

static void test_csr_p256(void) { check_csr(CONF_KEY_P256, "ecdsa-with-SHA256"); }
static void test_csr_p384(void) { check_csr(CONF_KEY_P384, "ecdsa-with-SHA256"); }
static void test_csr_rsa(void) { check_csr(CONF_KEY_RSA2048, "sha256WithRSAEncryption"); }

static void test_csr_long_first_name(void) {
  /* 70 bytes: a valid DNS name, but longer than a commonName may be. */
  const char *first = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example.com";
  ASSERT_EQ(strlen(first), 70);
  const char *names[] = {first, "short.example.com"};
  EVP_PKEY *key = acme__key_new(CONF_KEY_P256);
  char *err = NULL;
  uint8_t *der;
  size_t der_len;
  ASSERT_EQ(acme__csr_der(&err, &der, &der_len, key, names, 2), 0);
  const uint8_t *p = der;
  X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)der_len);
  ASSERT_NOT_NULL(req);
  ASSERT_EQ(X509_NAME_entry_count(X509_REQ_get_subject_name(req)), 0);
  char *sans = req_sans(req);
  char *want = gh_asprintf("%s,short.example.com", first);
  ASSERT_STR_EQ(sans, want);
  char *text = csr_text(der, der_len);
  ASSERT_CONTAINS(text, "verify OK");
  gh_free(text);
  gh_free(want);
  gh_free(sans);
  X509_REQ_free(req);
  OPENSSL_free(der);
  EVP_PKEY_free(key);
}

/* csr_error returns the error acme__csr_der gives for the one name |name|
 * (caller frees), or NULL if it accepted it. */
static char *csr_error(EVP_PKEY *key, const char *name) {
  char *err = NULL;
  uint8_t *der = (uint8_t *)1;
  size_t der_len = 1;
  const char *names[] = {"ok.example.com", name};
  int ret = acme__csr_der(&err, &der, &der_len, key, names, 2);
  if (ret == 0) {
    OPENSSL_free(der);
    gh_free(err);
    return NULL;
  }
  TC_CHECK(der == NULL && der_len == 0 && err != NULL);
  return err;
}

static void test_csr_rejects_names(void) {
  EVP_PKEY *key = acme__key_new(CONF_KEY_P256);
  /* 63-byte labels and dots, cut to 254 and 253 bytes. */
  char name254[255], name253[254];
  for (size_t i = 0; i < 254; i++) name254[i] = i % 64 == 63 ? '.' : 'a';
  name254[254] = '\0';
  memcpy(name253, name254, 253);
  name253[253] = '\0';
  ASSERT_EQ(strlen(name254), 254);
  char *err;

  ASSERT_NULL(err = csr_error(key, name253)); /* the longest valid name */
  ASSERT_NULL(err = csr_error(key, "*.example.com"));

  static const struct {
    const char *name, *why;
  } bad[] = {
      {"", "empty name"},
      {"WWW.example.com", "not lower case"},
      {"www.Example.com", "not lower case"},
      {"a_b.example.com", "not a DNS name"},
      {"a b.example.com", "not a DNS name"},
      {"a..example.com", "not a DNS name"},
      {"example.com.", "not a DNS name"},
      {".example.com", "not a DNS name"},
      {"-a.example.com", "not a DNS name"},
      {"a-.example.com", "not a DNS name"},
      {"a.*.example.com", "not a DNS name"},
      {"*", "not a DNS name"},
      {"**.example.com", "not a DNS name"},
      {"xn--caf\xc3\xa9.example", "not a DNS name"},
      {"a\nb.example.com", "not a DNS name"},
      {"1.2.3.4:443", "not a DNS name"},
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(bad); i++) {
    err = csr_error(key, bad[i].name);
    if (err == NULL) TEST_FAIL_("accepted \"%s\"", bad[i].name);
    ASSERT_CONTAINS(err, bad[i].why);
    ASSERT_CONTAINS(err, "CSR: invalid name");
    /* A hostile name cannot put control characters in a log line. */
    ASSERT_NULL(strchr(err, '\n'));
    gh_free(err);
  }
  err = csr_error(key, name254);
  ASSERT_CONTAINS(err, "longer than 253 bytes");
  ASSERT_CONTAINS(err, "...\"");
  gh_free(err);
  char label64[66] = "a";
  memset(label64, 'b', 64);
  label64[64] = '\0';
  err = csr_error(key, label64);
  ASSERT_CONTAINS(err, "not a DNS name");
  gh_free(err);
  err = csr_error(key, NULL);
  ASSERT_CONTAINS(err, "missing name");
  gh_free(err);

  err = NULL;
  uint8_t *der;
  size_t der_len;
  ASSERT_EQ(acme__csr_der(&err, &der, &der_len, key, NULL, 0), -1);
  ASSERT_CONTAINS(err, "no names");
  gh_free(err);
  EVP_PKEY_free(key);
}

/* ---- TLS-ALPN-01 ---- */

static void test_tlsalpn_cert(void) {
  const char *keyauth = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA."
                        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
  char *err = NULL;
  time_t now = time(NULL);
  acme_cert_t *cert = acme__tlsalpn_cert(&err, "a.example.com", keyauth);
  ASSERT_NULL(err);
  ASSERT_NOT_NULL(cert);
  ASSERT_EQ(cert->num_chain, 1);
  ASSERT_EQ(cert->num_sans, 1);
  ASSERT_STR_EQ(cert->sans[0], "a.example.com");
  ASSERT_STR_EQ(cert->subject_cn, "a.example.com");
  ASSERT_STR_EQ(cert->issuer_cn, "a.example.com");
  ASSERT_TRUE(cert->not_before >= now - 86400 - 5 && cert->not_before <= now - 86400 + 5);
  ASSERT_TRUE(cert->not_after >= now + 7 * 86400 - 5 && cert->not_after <= now + 7 * 86400 + 5);
  ASSERT_EQ(EVP_PKEY_id(cert->key), EVP_PKEY_EC);

  X509 *x = X509_parse_from_buffer(cert->chain[0]);
  ASSERT_NOT_NULL(x);
  ASSERT_EQ(X509_get_version(x), X509_VERSION_3);
  /* Self-signed by its own key. */
  ASSERT_EQ(X509_verify(x, cert->key), 1);

  /* RFC 8737 section 3: critical, extnValue = DER OCTET STRING of the hash. */
  ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
  int loc = X509_get_ext_by_OBJ(x, oid, -1);
  ASSERT_TRUE(loc >= 0);
  ASSERT_EQ(X509_get_ext_by_OBJ(x, oid, loc), -1); /* exactly one */
  X509_EXTENSION *ext = X509_get_ext(x, loc);
  ASSERT_EQ(X509_EXTENSION_get_critical(ext), 1);
  const ASN1_OCTET_STRING *value = X509_EXTENSION_get_data(ext);
  uint8_t want[2 + SHA256_DIGEST_LENGTH] = {0x04, 0x20};
  SHA256((const uint8_t *)keyauth, strlen(keyauth), want + 2);
  ASSERT_EQ(ASN1_STRING_length(value), sizeof(want));
  ASSERT_EQ(memcmp(ASN1_STRING_get0_data(value), want, sizeof(want)), 0);
  ASN1_OBJECT_free(oid);

  /* Exactly one SAN, non-critical, a dNSName. */
  int crit = -1;
  GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
  ASSERT_NOT_NULL(gens);
  ASSERT_EQ(crit, 0);
  ASSERT_EQ(sk_GENERAL_NAME_num(gens), 1);
  ASSERT_EQ(sk_GENERAL_NAME_value(gens, 0)->type, GEN_DNS);
  GENERAL_NAMES_free(gens);

  /* The openssl CLI reads it the same way. */
  char *text = openssl_text("x509 -inform DER -noout -text",
                            CRYPTO_BUFFER_data(cert->chain[0]), CRYPTO_BUFFER_len(cert->chain[0]));
  ASSERT_NOT_NULL(text);
  ASSERT_CONTAINS(text, "DNS:a.example.com\n");
  ASSERT_CONTAINS(text, "1.3.6.1.5.5.7.1.31: critical");
  ASSERT_CONTAINS(text, "Subject: CN = a.example.com\n");
  ASSERT_CONTAINS(text, "ecdsa-with-SHA256");
  gh_free(text);

  /* The serial is random and positive: a second certificate differs. */
  acme_cert_t *again = acme__tlsalpn_cert(&err, "a.example.com", keyauth);
  ASSERT_NOT_NULL(again);
  X509 *y = X509_parse_from_buffer(again->chain[0]);
  const ASN1_INTEGER *s1 = X509_get0_serialNumber(x), *s2 = X509_get0_serialNumber(y);
  ASSERT_EQ(ASN1_STRING_type(s1), V_ASN1_INTEGER);
  ASSERT_NE(ASN1_INTEGER_cmp(s1, s2), 0);
  ASSERT_EQ(EVP_PKEY_cmp(cert->key, again->key), 0); /* a fresh key each time */
  X509_free(y);
  acme_cert_unref(again);

  /* The TLS layer can serve it. */
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  SSL *ssl = SSL_new(ctx);
  ASSERT_EQ(SSL_set_chain_and_key(ssl, cert->chain, cert->num_chain, cert->key, NULL), 1);
  SSL_free(ssl);
  SSL_CTX_free(ctx);

  X509_free(x);
  acme_cert_unref(cert);
}

/* RFC 8738: IP addresses go into the CSR and the TLS-ALPN-01 certificate
 * as iPAddress names (and no CN); the challenge table finds the latter by
 * the reverse-mapping name a validator sends as SNI. */
static void test_ip_identifiers(void) {
  ASSERT_TRUE(conf_ip_literal("127.0.0.1", NULL, NULL));
  ASSERT_TRUE(conf_ip_literal("2001:db8::1", NULL, NULL));
  ASSERT_FALSE(conf_ip_literal("2001:DB8::1", NULL, NULL)); /* not RFC 5952 */
  ASSERT_FALSE(conf_ip_literal("2001:db8:0:0::1", NULL, NULL));
  ASSERT_FALSE(conf_ip_literal("127.0.0.01", NULL, NULL));
  ASSERT_FALSE(conf_ip_literal("a.example.com", NULL, NULL));
  char *err = NULL;
  const char *names[] = {"192.0.2.7", "2001:db8::1", "a.example.com"};
  EVP_PKEY *key = acme__key_new(CONF_KEY_P256);
  uint8_t *der = NULL;
  size_t len = 0;
  ASSERT_EQ(acme__csr_der(&err, &der, &len, key, names, 3), 0);
  const uint8_t *p = der;
  X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)len);
  ASSERT_NOT_NULL(req);
  ASSERT_EQ(X509_NAME_entry_count(X509_REQ_get_subject_name(req)), 0); /* no CN for an IP */
  STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
  GENERAL_NAMES *gens = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
  ASSERT_EQ(sk_GENERAL_NAME_num(gens), 3);
  const GENERAL_NAME *g0 = sk_GENERAL_NAME_value(gens, 0), *g1 = sk_GENERAL_NAME_value(gens, 1);
  ASSERT_EQ(g0->type, GEN_IPADD);
  ASSERT_EQ(ASN1_STRING_length(g0->d.iPAddress), 4);
  ASSERT_EQ(memcmp(ASN1_STRING_get0_data(g0->d.iPAddress), "\xc0\x00\x02\x07", 4), 0);
  ASSERT_EQ(g1->type, GEN_IPADD);
  ASSERT_EQ(ASN1_STRING_length(g1->d.iPAddress), 16);
  ASSERT_EQ(sk_GENERAL_NAME_value(gens, 2)->type, GEN_DNS);
  GENERAL_NAMES_free(gens);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  X509_REQ_free(req);
  OPENSSL_free(der);
  EVP_PKEY_free(key);

  acme_challenges_t *table = acme_challenges_new();
  static const struct {
    const char *ip, *sni;
  } cases[] = {
      {"192.0.2.7", "7.2.0.192.in-addr.arpa"},
      {"2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"},
  };
  for (size_t i = 0; i < 2; i++) {
    acme_cert_t *cert = acme__tlsalpn_cert(&err, cases[i].ip, "t.k");
    ASSERT_NOT_NULL(cert);
    ASSERT_EQ(cert->num_sans, 1);
    ASSERT_STR_EQ(cert->sans[0], cases[i].ip); /* read back from the iPAddress */
    acme_challenges_put_tlsalpn(table, cases[i].ip, cert);
    acme_cert_t *got = acme_challenges_get_tlsalpn(table, cases[i].sni, strlen(cases[i].sni));
    ASSERT_TRUE(got == cert);
    acme_cert_unref(got);
    acme_cert_unref(cert);
  }
  static const char *const not_reverse[] = {
      "07.2.0.192.in-addr.arpa", "7.2.0.256.in-addr.arpa", "2.0.192.in-addr.arpa",
      "1.7.2.0.192.in-addr.arpa", "x.2.0.192.in-addr.arpa", "7.2.0.192.in-addr.arpa.x",
      "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.g.ip6.arpa",
      "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"};
  for (size_t i = 0; i < sizeof(not_reverse) / sizeof(not_reverse[0]); i++)
    ASSERT_NULL(acme_challenges_get_tlsalpn(table, not_reverse[i], strlen(not_reverse[i])));
  acme_challenges_free(table);
}

static void test_tlsalpn_rejects(void) {
  static const struct {
    const char *name, *keyauth, *why;
  } bad[] = {
      {"*.example.com", "t.k", "wildcard"},
      {"A.example.com", "t.k",
       "TLS-ALPN-01 certificate: invalid name \"A.example.com\": not lower case"},
      {"", "t.k", "empty name"},
      {NULL, "t.k", "missing name"},
      {"a.example.com", "", "empty key authorization"},
      {"a.example.com", NULL, "empty key authorization"},
  };
  char *err;
  for (size_t i = 0; i < GH_ARRAY_LEN(bad); i++) {
    err = NULL;
    ASSERT_NULL(acme__tlsalpn_cert(&err, bad[i].name, bad[i].keyauth));
    ASSERT_CONTAINS(err, bad[i].why);
    gh_free(err);
  }

  /* A name too long for a commonName still gets its SAN. */
  const char *name = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example.com";
  err = NULL;
  acme_cert_t *cert = acme__tlsalpn_cert(&err, name, "t.k");
  ASSERT_NOT_NULL(cert);
  ASSERT_NULL(cert->subject_cn);
  ASSERT_EQ(cert->num_sans, 1);
  ASSERT_STR_EQ(cert->sans[0], name);
  acme_cert_unref(cert);
}

int main(void) {
  RUN(test_csr_p256);
  RUN(test_csr_p384);
  RUN(test_csr_rsa);
  RUN(test_csr_long_first_name);
  RUN(test_csr_rejects_names);
  RUN(test_tlsalpn_cert);
  RUN(test_tlsalpn_rejects);
  RUN(test_ip_identifiers);
  TEST_EXIT();
}
