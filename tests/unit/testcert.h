/* testcert.h: keys, certificates and PEM files made at test time with
 * BoringSSL, so tests carry no fixtures that expire. Included by the unit
 * tests that need certificates (test_certs.c, test_tls.c). Every helper
 * aborts on failure: a broken fixture is not a test result. */
#ifndef GH_TESTCERT_H
#define GH_TESTCERT_H

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TC_CHECK(c)                                                   \
  do {                                                                \
    if (!(c)) {                                                       \
      fprintf(stderr, "%s:%d: fixture failed: %s\n", __FILE__, __LINE__, #c); \
      abort();                                                        \
    }                                                                 \
  } while (0)

/* tc_key_ec returns a new P-256 key. */
static inline EVP_PKEY *tc_key_ec(void) {
  EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
  EVP_PKEY *key = EVP_PKEY_new();
  TC_CHECK(ec && key && EC_KEY_generate_key(ec) && EVP_PKEY_assign_EC_KEY(key, ec));
  return key;
}

/* tc_key_rsa returns a new RSA-2048 key. */
static inline EVP_PKEY *tc_key_rsa(void) {
  RSA *rsa = RSA_new();
  BIGNUM *e = BN_new();
  EVP_PKEY *key = EVP_PKEY_new();
  TC_CHECK(rsa && e && key && BN_set_word(e, RSA_F4) && RSA_generate_key_ex(rsa, 2048, e, NULL) &&
           EVP_PKEY_assign_RSA(key, rsa));
  BN_free(e);
  return key;
}

/* tc_cert returns a new certificate for |key| with subject CN |cn|, the
 * DNS names in the comma-separated |sans| (NULL for none), valid from now
 * for |days|, signed by |issuer_key| in the name of |issuer| (both NULL:
 * self-signed). */
static inline X509 *tc_cert(EVP_PKEY *key, const char *cn, const char *sans, X509 *issuer,
                            EVP_PKEY *issuer_key, long days) {
  static long serial = 1;
  X509 *x = X509_new();
  TC_CHECK(x && X509_set_version(x, X509_VERSION_3) &&
           ASN1_INTEGER_set(X509_get_serialNumber(x), serial++) &&
           X509_gmtime_adj(X509_getm_notBefore(x), 0) &&
           X509_gmtime_adj(X509_getm_notAfter(x), days * 86400) && X509_set_pubkey(x, key));
  X509_NAME *name = X509_get_subject_name(x);
  TC_CHECK(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const uint8_t *)cn, -1, -1, 0));
  TC_CHECK(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name));
  if (sans != NULL) {
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    const char *p = sans;
    while (*p) {
      size_t len = strcspn(p, ",");
      ASN1_IA5STRING *s = ASN1_IA5STRING_new();
      GENERAL_NAME *gn = GENERAL_NAME_new();
      TC_CHECK(s && gn && ASN1_STRING_set(s, p, (int)len));
      GENERAL_NAME_set0_value(gn, GEN_DNS, s);
      TC_CHECK(sk_GENERAL_NAME_push(gens, gn));
      p += len + (p[len] == ',');
    }
    TC_CHECK(X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, 0));
    GENERAL_NAMES_free(gens);
  }
  TC_CHECK(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()));
  return x;
}

static inline char *tc_bio_string(BIO *bio) {
  const uint8_t *data;
  size_t len;
  TC_CHECK(BIO_mem_contents(bio, &data, &len));
  char *s = malloc(len + 1);
  TC_CHECK(s);
  memcpy(s, data, len);
  s[len] = '\0';
  BIO_free(bio);
  return s;
}

/* tc_pem_certs returns the PEM of |certs| in order (caller frees). */
static inline char *tc_pem_certs(X509 *const *certs, size_t num_certs) {
  BIO *bio = BIO_new(BIO_s_mem());
  for (size_t i = 0; i < num_certs; i++) TC_CHECK(PEM_write_bio_X509(bio, certs[i]));
  return tc_bio_string(bio);
}

/* tc_pem_key returns the PEM (PKCS#8) of |key| (caller frees). */
static inline char *tc_pem_key(EVP_PKEY *key) {
  BIO *bio = BIO_new(BIO_s_mem());
  TC_CHECK(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL));
  return tc_bio_string(bio);
}

/* tc_dir_t is a temporary directory whose files tc_dir_cleanup removes. */
typedef struct {
  char path[64];
  char *files[64];
  size_t num_files;
} tc_dir_t;

static inline void tc_dir_init(tc_dir_t *d) {
  memset(d, 0, sizeof(*d));
  snprintf(d->path, sizeof(d->path), "/tmp/gh-test-XXXXXX");
  TC_CHECK(mkdtemp(d->path) != NULL);
}

/* tc_dir_write writes |text| to the file |name| in |d| and returns its path
 * (owned by |d|). */
static inline const char *tc_dir_write(tc_dir_t *d, const char *name, const char *text) {
  TC_CHECK(d->num_files < sizeof(d->files) / sizeof(d->files[0]));
  size_t len = strlen(d->path) + strlen(name) + 2;
  char *path = malloc(len);
  TC_CHECK(path);
  snprintf(path, len, "%s/%s", d->path, name);
  FILE *f = fopen(path, "w");
  TC_CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0);
  d->files[d->num_files++] = path;
  return path;
}

static inline void tc_dir_cleanup(tc_dir_t *d) {
  for (size_t i = 0; i < d->num_files; i++) {
    unlink(d->files[i]);
    free(d->files[i]);
  }
  rmdir(d->path);
  memset(d, 0, sizeof(*d));
}

/* tc_issue writes a self-signed certificate for |cn| (and the SANs |sans|)
 * and its key as "|stem|.crt" and "|stem|.key" in |d|, setting the paths.
 * |rsa| picks an RSA key instead of P-256. */
static inline void tc_issue(tc_dir_t *d, const char *stem, const char *cn, const char *sans,
                            int rsa, const char **out_cert, const char **out_key) {
  EVP_PKEY *key = rsa ? tc_key_rsa() : tc_key_ec();
  X509 *x = tc_cert(key, cn, sans, NULL, NULL, 90);
  char *cert_pem = tc_pem_certs(&x, 1);
  char *key_pem = tc_pem_key(key);
  char name[128];
  snprintf(name, sizeof(name), "%s.crt", stem);
  *out_cert = tc_dir_write(d, name, cert_pem);
  snprintf(name, sizeof(name), "%s.key", stem);
  *out_key = tc_dir_write(d, name, key_pem);
  free(cert_pem);
  free(key_pem);
  X509_free(x);
  EVP_PKEY_free(key);
}

#endif
