/* csr.c: the PKCS#10 certificate signing request for finalizing an ACME
 * order (RFC 8555 section 7.4, RFC 2986, RFC 2985 extensionRequest), and
 * the name checks and X.509 pieces it shares with tlsalpn.c. */
#include "acme/csr.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/common.h"
#include "conf/conf.h"

/* ub-common-name (RFC 5280 appendix A.1). A longer first name is still
 * requested, in the SAN only; CAs take names from the SAN anyway. */
#define MAX_CN_LEN 64

/* Longest name printed in an error message. */
#define MAX_SHOWN 64

/* shown returns a printable copy of at most MAX_SHOWN bytes of |name| for
 * an error message: a hostile name must not inject control characters into
 * a log line. */
static char *shown(const char *name) {
  size_t len = strnlen(name, MAX_SHOWN + 1);
  int cut = len > MAX_SHOWN;
  if (cut) len = MAX_SHOWN;
  char *s = gh_malloc(len + 4);
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)name[i];
    s[i] = (c >= 0x20 && c < 0x7f && c != '"') ? (char)c : '?';
  }
  strcpy(s + len, cut ? "..." : "");
  return s;
}

int acme__name_check(char **out_err, const char *what, const char *name, int allow_wildcard) {
  if (name == NULL) {
    *out_err = gh_asprintf("%s: missing name", what);
    return -1;
  }
  if (conf_ip_literal(name, NULL, NULL)) return 0;
  int wildcard = name[0] == '*' && name[1] == '.';
  if (conf_host_pattern_valid(name) && (allow_wildcard || !wildcard)) return 0;
  const char *why = "not a DNS name (labels of a-z, 0-9 and \"-\", 1-63 bytes each)";
  size_t len = strnlen(name, 254);
  if (len == 0) {
    why = "empty name";
  } else if (len > 253) {
    why = "longer than 253 bytes";
  } else if (wildcard && !allow_wildcard) {
    why = "a wildcard is not allowed here";
  } else {
    for (size_t i = 0; i < len; i++) {
      if (name[i] >= 'A' && name[i] <= 'Z') {
        why = "not lower case";
        break;
      }
    }
  }
  char *s = shown(name);
  *out_err = gh_asprintf("%s: invalid name \"%s\": %s", what, s, why);
  gh_free(s);
  return -1;
}

X509_NAME *acme__subject_name(const char *name) {
  X509_NAME *subject = X509_NAME_new();
  if (subject == NULL) return NULL;
  if (strlen(name) <= MAX_CN_LEN && !conf_ip_literal(name, NULL, NULL) &&
      !X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_UTF8, (const uint8_t *)name,
                                  -1, -1, 0)) {
    X509_NAME_free(subject);
    return NULL;
  }
  return subject;
}

X509_EXTENSION *acme__san_ext(const char *const *names, size_t num_names) {
  GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
  X509_EXTENSION *ext = NULL;
  if (gens == NULL) return NULL;
  for (size_t i = 0; i < num_names; i++) {
    uint8_t ip[16];
    size_t ip_len = 0;
    int is_ip = conf_ip_literal(names[i], ip, &ip_len);
    ASN1_STRING *s = is_ip ? ASN1_OCTET_STRING_new() : ASN1_IA5STRING_new();
    GENERAL_NAME *gn = GENERAL_NAME_new();
    if (s == NULL || gn == NULL ||
        !(is_ip ? ASN1_STRING_set(s, ip, (int)ip_len) : ASN1_STRING_set(s, names[i], -1))) {
      ASN1_STRING_free(s);
      GENERAL_NAME_free(gn);
      goto out;
    }
    GENERAL_NAME_set0_value(gn, is_ip ? GEN_IPADD : GEN_DNS, s);
    if (!sk_GENERAL_NAME_push(gens, gn)) {
      GENERAL_NAME_free(gn);
      goto out;
    }
  }
  ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, gens);
out:
  GENERAL_NAMES_free(gens);
  return ext;
}

int acme__csr_der(char **out_err, uint8_t **out_der, size_t *out_len, EVP_PKEY *key,
                  const char *const *names, size_t num_names) {
  *out_der = NULL;
  *out_len = 0;
  if (num_names == 0) {
    *out_err = gh_strdup("CSR: no names");
    return -1;
  }
  for (size_t i = 0; i < num_names; i++) {
    if (acme__name_check(out_err, "CSR", names[i], 1) != 0) return -1;
  }
  X509_REQ *req = X509_REQ_new();
  X509_NAME *subject = acme__subject_name(names[0]);
  X509_EXTENSION *san = acme__san_ext(names, num_names);
  STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
  uint8_t *der = NULL;
  int der_len = -1;
  if (req != NULL && subject != NULL && san != NULL && exts != NULL &&
      sk_X509_EXTENSION_push(exts, san)) {
    san = NULL; /* now owned by |exts| */
    if (X509_REQ_set_version(req, X509_REQ_VERSION_1) && X509_REQ_set_subject_name(req, subject) &&
        X509_REQ_set_pubkey(req, key) && X509_REQ_add_extensions(req, exts) &&
        X509_REQ_sign(req, key, EVP_sha256()) > 0) {
      der_len = i2d_X509_REQ(req, &der);
    }
  }
  X509_EXTENSION_free(san);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  X509_NAME_free(subject);
  X509_REQ_free(req);
  if (der_len <= 0) {
    ERR_clear_error();
    *out_err = gh_strdup("CSR: building or signing the request failed (unsupported key?)");
    return -1;
  }
  *out_der = der;
  *out_len = (size_t)der_len;
  return 0;
}
