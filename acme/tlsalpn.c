/* tlsalpn.c: the TLS-ALPN-01 challenge certificate (RFC 8737 section 3).
 *
 * The CA's validator connects with ALPN "acme-tls/1" and SNI |name|, and
 * accepts the self-signed certificate it gets if its only SAN is |name| and
 * it carries a critical id-pe-acmeIdentifier extension whose value is the
 * SHA-256 of the key authorization. The certificate is returned as an
 * acme_cert_t, so the challenge table holds the same refcounted type as the
 * certificate table and the TLS layer serves both the same way. */
#include "acme/csr.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/obj.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "acme/jws.h"
#include "common/common.h"

/* id-pe-acmeIdentifier (RFC 8737 section 6.1). */
#define OID_ACME_IDENTIFIER "1.3.6.1.5.5.7.1.31"

/* The validator only needs the certificate for minutes; a day of backdating
 * absorbs clock skew between us and the CA. */
#define NOT_BEFORE_S (-86400L)
#define NOT_AFTER_S (7L * 86400L)

/* acme_id_ext returns the critical id-pe-acmeIdentifier extension for
 * |keyauth|: extnValue is the DER of Authorization ::= OCTET STRING (SIZE
 * (32)), that is 04 20 || SHA-256(keyauth). NULL if BoringSSL fails. */
static X509_EXTENSION *acme_id_ext(const char *keyauth) {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256((const uint8_t *)keyauth, strlen(keyauth), digest);
  CBB cbb, child;
  uint8_t *der = NULL;
  size_t der_len = 0;
  X509_EXTENSION *ext = NULL;
  ASN1_OBJECT *oid = OBJ_txt2obj(OID_ACME_IDENTIFIER, 1);
  ASN1_OCTET_STRING *value = ASN1_OCTET_STRING_new();
  if (CBB_init(&cbb, 2 + sizeof(digest)) && CBB_add_asn1(&cbb, &child, CBS_ASN1_OCTETSTRING) &&
      CBB_add_bytes(&child, digest, sizeof(digest)) && CBB_finish(&cbb, &der, &der_len) &&
      oid != NULL && value != NULL && ASN1_OCTET_STRING_set(value, der, (int)der_len)) {
    ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, value);
  }
  CBB_cleanup(&cbb);
  OPENSSL_free(der);
  ASN1_OBJECT_free(oid);
  ASN1_OCTET_STRING_free(value);
  return ext;
}

/* random_serial sets a positive random 127-bit serial (RFC 5280 section
 * 4.1.2.2: positive, at most 20 bytes). Returns 1 or 0, like BoringSSL. */
static int random_serial(X509 *x) {
  uint8_t buf[16];
  RAND_bytes(buf, sizeof(buf));
  buf[0] = (buf[0] & 0x7f) | 0x01; /* positive and never zero */
  BIGNUM *bn = BN_bin2bn(buf, sizeof(buf), NULL);
  ASN1_INTEGER *serial = bn != NULL ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
  int ok = serial != NULL && X509_set_serialNumber(x, serial);
  ASN1_INTEGER_free(serial);
  BN_free(bn);
  return ok;
}

/* pem_cert returns |x| as PEM (caller frees), or NULL. */
static char *pem_cert(X509 *x) {
  BIO *bio = BIO_new(BIO_s_mem());
  const uint8_t *data;
  size_t len;
  char *pem = NULL;
  if (bio != NULL && PEM_write_bio_X509(bio, x) && BIO_mem_contents(bio, &data, &len)) {
    pem = gh_strndup((const char *)data, len);
  }
  BIO_free(bio);
  return pem;
}

acme_cert_t *acme__tlsalpn_cert(char **out_err, const char *name, const char *keyauth) {
  const char *what = "TLS-ALPN-01 certificate";
  if (acme__name_check(out_err, what, name, 0) != 0) return NULL;
  if (keyauth == NULL || keyauth[0] == '\0') {
    *out_err = gh_asprintf("%s: empty key authorization", what);
    return NULL;
  }
  EVP_PKEY *key = acme__key_new(CONF_KEY_P256);
  X509 *x = X509_new();
  X509_NAME *subject = acme__subject_name(name);
  X509_EXTENSION *san = acme__san_ext(&name, 1);
  X509_EXTENSION *acme_id = acme_id_ext(keyauth);
  char *cert_pem = NULL, *key_pem = NULL;
  acme_cert_t *cert = NULL;
  if (key != NULL && x != NULL && subject != NULL && san != NULL && acme_id != NULL &&
      X509_set_version(x, X509_VERSION_3) && random_serial(x) &&
      X509_gmtime_adj(X509_getm_notBefore(x), NOT_BEFORE_S) &&
      X509_gmtime_adj(X509_getm_notAfter(x), NOT_AFTER_S) &&
      X509_set_subject_name(x, subject) && X509_set_issuer_name(x, subject) &&
      X509_set_pubkey(x, key) && X509_add_ext(x, san, -1) && X509_add_ext(x, acme_id, -1) &&
      X509_sign(x, key, EVP_sha256()) > 0) {
    cert_pem = pem_cert(x);
    key_pem = acme__key_to_pem(key);
  }
  ERR_clear_error();
  if (cert_pem != NULL && key_pem != NULL) {
    cert = acme_cert_from_pem(out_err, cert_pem, strlen(cert_pem), key_pem, strlen(key_pem));
  } else {
    *out_err = gh_asprintf("%s: building the certificate for %s failed", what, name);
  }
  if (key_pem != NULL) OPENSSL_cleanse(key_pem, strlen(key_pem));
  gh_free(key_pem);
  gh_free(cert_pem);
  X509_EXTENSION_free(acme_id);
  X509_EXTENSION_free(san);
  X509_NAME_free(subject);
  X509_free(x);
  EVP_PKEY_free(key);
  return cert;
}
