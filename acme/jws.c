/* jws.c: keys, JWK, JWS, external account binding and key authorizations
 * for the ACME client (RFC 8555 section 6.2, RFC 7515, RFC 7517, RFC 7518,
 * RFC 7638).
 *
 * JSON is built with cJSON, which keeps members in insertion order and
 * prints without whitespace, so the canonical JWK of RFC 7638 is simply its
 * required members added in lexicographic order. Strings that come from the
 * CA (nonce, URLs, account URL) only ever travel inside JSON strings, which
 * cJSON escapes.
 *
 * The classic mistake this file exists to avoid: BoringSSL's ECDSA
 * signatures are DER ECDSA-Sig-Value, but JWS wants the fixed-width r || s
 * of RFC 7518 section 3.4. Every failing BoringSSL call is followed by
 * ERR_clear_error(), because the control thread also runs TLS and a stale
 * error would mislead the next SSL_get_error(). */
#include "acme/jws.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/buf.h>
#include <openssl/bytestring.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "common/b64.h"
#include "common/common.h"

/* Smallest RSA modulus accepted: what CAs accept (CA/B Baseline
 * Requirements 6.1.5) and what conf offers. */
#define MIN_RSA_BITS 2048

/* A key authorization token longer than this is not a CA's token (Let's
 * Encrypt and Pebble send 43 characters). */
#define MAX_TOKEN_LEN 256

/* How a supported key signs. */
typedef struct {
  const char *alg;          /* JWS "alg" */
  const char *crv;          /* JWK "crv"; NULL for RSA */
  const EVP_MD *(*md)(void);
  size_t coord_len; /* EC: bytes per coordinate and per signature half */
} key_info_t;

static const key_info_t info_p256 = {"ES256", "P-256", EVP_sha256, 32};
static const key_info_t info_p384 = {"ES384", "P-384", EVP_sha384, 48};
static const key_info_t info_rsa = {"RS256", NULL, EVP_sha256, 0};

/* key_info returns how |key| signs, or NULL if it is not supported. */
static const key_info_t *key_info(const EVP_PKEY *key) {
  if (key == NULL) return NULL;
  switch (EVP_PKEY_id(key)) {
    case EVP_PKEY_EC: {
      const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(key);
      if (ec == NULL || EC_KEY_get0_public_key(ec) == NULL) return NULL;
      switch (EC_GROUP_get_curve_name(EC_KEY_get0_group(ec))) {
        case NID_X9_62_prime256v1:
          return &info_p256;
        case NID_secp384r1:
          return &info_p384;
        default:
          return NULL;
      }
    }
    case EVP_PKEY_RSA: {
      const RSA *rsa = EVP_PKEY_get0_RSA(key);
      return rsa != NULL && RSA_bits(rsa) >= MIN_RSA_BITS ? &info_rsa : NULL;
    }
    default:
      return NULL;
  }
}

/* ---- keys ---- */

static EVP_PKEY *ec_key_new(int nid) {
  EC_KEY *ec = EC_KEY_new_by_curve_name(nid);
  EVP_PKEY *key = EVP_PKEY_new();
  if (ec == NULL || key == NULL || !EC_KEY_generate_key(ec) || !EVP_PKEY_assign_EC_KEY(key, ec)) {
    ERR_clear_error();
    EC_KEY_free(ec);
    EVP_PKEY_free(key);
    return NULL;
  }
  return key;
}

static EVP_PKEY *rsa_key_new(unsigned bits) {
  RSA *rsa = RSA_new();
  BIGNUM *e = BN_new();
  EVP_PKEY *key = EVP_PKEY_new();
  int ok = rsa != NULL && e != NULL && key != NULL && BN_set_word(e, RSA_F4) &&
           RSA_generate_key_ex(rsa, (int)bits, e, NULL) && EVP_PKEY_assign_RSA(key, rsa);
  BN_free(e);
  if (!ok) {
    ERR_clear_error();
    RSA_free(rsa);
    EVP_PKEY_free(key);
    return NULL;
  }
  return key;
}

EVP_PKEY *acme__key_new(conf_key_type_t type) {
  switch (type) {
    case CONF_KEY_P256:
      return ec_key_new(NID_X9_62_prime256v1);
    case CONF_KEY_P384:
      return ec_key_new(NID_secp384r1);
    case CONF_KEY_RSA2048:
      return rsa_key_new(2048);
  }
  return NULL;
}

char *acme__key_to_pem(const EVP_PKEY *key) {
  if (key_info(key) == NULL) return NULL;
  CBB cbb;
  uint8_t *der = NULL;
  size_t der_len = 0;
  if (!CBB_init(&cbb, 0) || !EVP_marshal_private_key(&cbb, key) ||
      !CBB_finish(&cbb, &der, &der_len)) {
    CBB_cleanup(&cbb);
    ERR_clear_error();
    return NULL;
  }
  BIO *bio = BIO_new(BIO_s_mem());
  char *pem = NULL;
  BUF_MEM *mem = NULL;
  if (bio != NULL && PEM_write_bio(bio, "PRIVATE KEY", "", der, (long)der_len) > 0 &&
      BIO_get_mem_ptr(bio, &mem) && mem != NULL) {
    pem = gh_strndup(mem->data, mem->length);
    /* The key must not linger in freed memory. */
    OPENSSL_cleanse(mem->data, mem->length);
  }
  ERR_clear_error();
  BIO_free(bio);
  OPENSSL_cleanse(der, der_len);
  OPENSSL_free(der);
  return pem;
}

EVP_PKEY *acme__key_from_pem(char **out_err, const char *pem, size_t pem_len) {
  if (pem_len > (1u << 20)) {
    *out_err = gh_strdup("key PEM: too large");
    return NULL;
  }
  BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
  if (bio == NULL) abort();
  uint8_t *der = NULL;
  long der_len = 0;
  /* Only "PRIVATE KEY" blocks match: storage writes PKCS#8, and reading one
   * format keeps this parser small. Other blocks are skipped. */
  int found = PEM_bytes_read_bio(&der, &der_len, NULL, PEM_STRING_PKCS8INF, bio, NULL, NULL);
  BIO_free(bio);
  if (!found) {
    ERR_clear_error();
    *out_err = gh_strdup("key PEM: no unencrypted PKCS#8 \"PRIVATE KEY\" block found");
    return NULL;
  }
  CBS cbs;
  CBS_init(&cbs, der, (size_t)der_len);
  EVP_PKEY *key = EVP_parse_private_key(&cbs);
  int trailing = CBS_len(&cbs) != 0;
  OPENSSL_cleanse(der, (size_t)der_len);
  OPENSSL_free(der);
  ERR_clear_error();
  if (key == NULL || trailing) {
    EVP_PKEY_free(key);
    *out_err = gh_strdup("key PEM: malformed PKCS#8 private key");
    return NULL;
  }
  if (key_info(key) == NULL) {
    EVP_PKEY_free(key);
    *out_err = gh_asprintf("key PEM: unsupported key (expected ECDSA P-256, P-384 or RSA of at "
                           "least %d bits)", MIN_RSA_BITS);
    return NULL;
  }
  return key;
}

/* ---- JSON helpers ---- */

/* Out of memory inside cJSON is handled like ours: abort. */
static void add_str(cJSON *obj, const char *name, const char *value) {
  if (cJSON_AddStringToObject(obj, name, value) == NULL) abort();
}

static cJSON *new_object(void) {
  cJSON *obj = cJSON_CreateObject();
  if (obj == NULL) abort();
  return obj;
}

/* print_json returns |obj| printed without whitespace (caller frees with
 * gh_free: cJSON allocates with malloc). */
static char *print_json(const cJSON *obj) {
  char *s = cJSON_PrintUnformatted(obj);
  if (s == NULL) abort();
  return s;
}

static char *b64url_str(const char *s) { return gh_b64url_encode((const uint8_t *)s, strlen(s)); }

/* add_bn adds |bn| as a base64url member: left-padded to |len| bytes, or
 * minimal (RFC 7518 section 2 "Base64urlUInt") when |len| is 0. */
static int add_bn(cJSON *obj, const char *name, const BIGNUM *bn, size_t len) {
  if (len == 0) len = BN_num_bytes(bn) ? BN_num_bytes(bn) : 1;
  uint8_t *buf = gh_malloc(len);
  int ok = BN_bn2bin_padded(buf, len, bn);
  if (ok) {
    char *b64 = gh_b64url_encode(buf, len);
    add_str(obj, name, b64);
    gh_free(b64);
  }
  gh_free(buf);
  return ok ? 0 : -1;
}

/* jwk_object returns the canonical public JWK of |key| as a new cJSON
 * object, or NULL if |key| is unsupported. */
static cJSON *jwk_object(const EVP_PKEY *key) {
  const key_info_t *info = key_info(key);
  if (info == NULL) return NULL;
  cJSON *jwk = new_object();
  int ret = -1;
  if (info->crv != NULL) {
    const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(key);
    BIGNUM *x = BN_new(), *y = BN_new();
    if (x != NULL && y != NULL &&
        EC_POINT_get_affine_coordinates_GFp(EC_KEY_get0_group(ec), EC_KEY_get0_public_key(ec), x,
                                            y, NULL)) {
      add_str(jwk, "crv", info->crv);
      add_str(jwk, "kty", "EC");
      ret = add_bn(jwk, "x", x, info->coord_len) == 0 && add_bn(jwk, "y", y, info->coord_len) == 0
                ? 0
                : -1;
    }
    BN_free(x);
    BN_free(y);
  } else {
    const BIGNUM *n, *e;
    RSA_get0_key(EVP_PKEY_get0_RSA(key), &n, &e, NULL);
    ret = add_bn(jwk, "e", e, 0);
    add_str(jwk, "kty", "RSA");
    if (ret == 0) ret = add_bn(jwk, "n", n, 0);
  }
  if (ret != 0) {
    ERR_clear_error();
    cJSON_Delete(jwk);
    return NULL;
  }
  return jwk;
}

char *acme__jwk_json(const EVP_PKEY *key) {
  cJSON *jwk = jwk_object(key);
  if (jwk == NULL) return NULL;
  char *s = print_json(jwk);
  cJSON_Delete(jwk);
  return s;
}

/* sha256_b64url returns base64url(SHA-256(|s|)). */
static char *sha256_b64url(const char *s) {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256((const uint8_t *)s, strlen(s), digest);
  return gh_b64url_encode(digest, sizeof(digest));
}

char *acme__jwk_thumbprint(const EVP_PKEY *key) {
  char *jwk = acme__jwk_json(key);
  if (jwk == NULL) return NULL;
  char *tp = sha256_b64url(jwk);
  gh_free(jwk);
  return tp;
}

/* ---- JWS ---- */

/* signing_input returns "|prot|.|payload|" (RFC 7515 section 5.1 step 5). */
static char *signing_input(const char *prot, const char *payload) {
  return gh_asprintf("%s.%s", prot, payload);
}

/* sign returns the JWS signature of |in| by |key| as a new base64url
 * string, or NULL. ECDSA's DER is rewritten as fixed-width r || s. */
static char *sign(EVP_PKEY *key, const key_info_t *info, const char *in) {
  size_t max = (size_t)EVP_PKEY_size(key);
  uint8_t *sig = gh_malloc(max);
  size_t sig_len = max;
  char *out = NULL;
  EVP_MD_CTX ctx;
  EVP_MD_CTX_init(&ctx);
  if (!EVP_DigestSignInit(&ctx, NULL, info->md(), NULL, key) ||
      !EVP_DigestSign(&ctx, sig, &sig_len, (const uint8_t *)in, strlen(in))) {
    goto out;
  }
  if (info->crv != NULL) {
    ECDSA_SIG *es = ECDSA_SIG_from_bytes(sig, sig_len);
    if (es == NULL) goto out;
    const BIGNUM *r, *s;
    ECDSA_SIG_get0(es, &r, &s);
    uint8_t raw[2 * 66];
    size_t n = info->coord_len;
    int ok = BN_bn2bin_padded(raw, n, r) && BN_bn2bin_padded(raw + n, n, s);
    ECDSA_SIG_free(es);
    if (ok) out = gh_b64url_encode(raw, 2 * n);
  } else {
    out = gh_b64url_encode(sig, sig_len);
  }
out:
  if (out == NULL) ERR_clear_error();
  EVP_MD_CTX_cleanup(&ctx);
  gh_free(sig);
  return out;
}

/* flattened returns {"protected","payload","signature"} as a new object. */
static cJSON *flattened(const char *prot, const char *payload, const char *sig) {
  cJSON *jws = new_object();
  add_str(jws, "protected", prot);
  add_str(jws, "payload", payload);
  add_str(jws, "signature", sig);
  return jws;
}

/* sign_header signs |payload| under the protected |header| (which it
 * deletes) and returns the flattened JWS as a new string, or NULL with
 * |*out_err| set. */
static char *sign_header(char **out_err, EVP_PKEY *key, const key_info_t *info, cJSON *header,
                         const char *payload) {
  char *header_json = print_json(header);
  cJSON_Delete(header);
  char *prot = b64url_str(header_json);
  gh_free(header_json);
  /* POST-as-GET (RFC 8555 section 6.3): the payload member is "". */
  char *body = b64url_str(payload);
  char *in = signing_input(prot, body);
  char *sig = sign(key, info, in);
  char *out = NULL;
  if (sig == NULL) {
    *out_err = gh_asprintf("JWS: signing with %s failed", info->alg);
  } else {
    cJSON *jws = flattened(prot, body, sig);
    out = print_json(jws);
    cJSON_Delete(jws);
  }
  gh_free(prot);
  gh_free(body);
  gh_free(in);
  gh_free(sig);
  return out;
}

/* add_jwk adds |key|'s public JWK to |header| as "jwk". */
static void add_jwk(cJSON *header, const EVP_PKEY *key) {
  cJSON *jwk = jwk_object(key);
  if (jwk == NULL || !cJSON_AddItemToObject(header, "jwk", jwk)) abort();
}

char *acme__jws_sign(char **out_err, EVP_PKEY *key, const char *kid, const char *nonce,
                     const char *url, const char *payload) {
  const key_info_t *info = key_info(key);
  if (info == NULL) {
    *out_err = gh_strdup("JWS: unsupported account key");
    return NULL;
  }
  if (nonce == NULL || nonce[0] == '\0' || url == NULL || url[0] == '\0' || payload == NULL ||
      (kid != NULL && kid[0] == '\0')) {
    *out_err = gh_strdup("JWS: missing nonce, URL, kid or payload");
    return NULL;
  }
  cJSON *header = new_object();
  add_str(header, "alg", info->alg);
  if (kid != NULL) {
    add_str(header, "kid", kid);
  } else {
    add_jwk(header, key);
  }
  add_str(header, "nonce", nonce);
  add_str(header, "url", url);
  return sign_header(out_err, key, info, header, payload);
}

char *acme__jws_key_change(char **out_err, EVP_PKEY *new_key, const EVP_PKEY *old_key,
                           const char *account_url, const char *url) {
  const key_info_t *info = key_info(new_key);
  if (info == NULL || key_info(old_key) == NULL) {
    *out_err = gh_strdup("key change: unsupported account key");
    return NULL;
  }
  if (account_url == NULL || account_url[0] == '\0' || url == NULL || url[0] == '\0') {
    *out_err = gh_strdup("key change: missing account URL or keyChange URL");
    return NULL;
  }
  cJSON *header = new_object();
  add_str(header, "alg", info->alg);
  add_jwk(header, new_key);
  add_str(header, "url", url);
  cJSON *payload = new_object();
  add_str(payload, "account", account_url);
  cJSON *old_jwk = jwk_object(old_key);
  if (old_jwk == NULL || !cJSON_AddItemToObject(payload, "oldKey", old_jwk)) abort();
  char *payload_json = print_json(payload);
  cJSON_Delete(payload);
  char *out = sign_header(out_err, new_key, info, header, payload_json);
  gh_free(payload_json);
  return out;
}

cJSON *acme__jws_eab(char **out_err, const char *key_id, const char *hmac_key_b64url,
                     const EVP_PKEY *account_key, const char *url) {
  if (key_id == NULL || key_id[0] == '\0' || url == NULL || url[0] == '\0' ||
      hmac_key_b64url == NULL) {
    *out_err = gh_strdup("external account binding: missing key id, MAC key or URL");
    return NULL;
  }
  size_t key_len = strlen(hmac_key_b64url);
  for (int i = 0; i < 2 && key_len > 0 && hmac_key_b64url[key_len - 1] == '='; i++) key_len--;
  uint8_t *mac_key;
  size_t mac_key_len;
  if (gh_b64url_decode(&mac_key, &mac_key_len, hmac_key_b64url, key_len) != 0 ||
      mac_key_len == 0) {
    gh_free(mac_key);
    *out_err = gh_strdup("external account binding: the MAC key is not base64url");
    return NULL;
  }
  char *jwk = acme__jwk_json(account_key);
  if (jwk == NULL) {
    OPENSSL_cleanse(mac_key, mac_key_len);
    gh_free(mac_key);
    *out_err = gh_strdup("external account binding: unsupported account key");
    return NULL;
  }
  cJSON *header = new_object();
  add_str(header, "alg", "HS256");
  add_str(header, "kid", key_id);
  add_str(header, "url", url);
  char *header_json = print_json(header);
  cJSON_Delete(header);
  char *prot = b64url_str(header_json);
  char *body = b64url_str(jwk);
  char *in = signing_input(prot, body);
  uint8_t mac[SHA256_DIGEST_LENGTH];
  unsigned mac_len = 0;
  cJSON *eab = NULL;
  if (HMAC(EVP_sha256(), mac_key, mac_key_len, (const uint8_t *)in, strlen(in), mac, &mac_len) ==
      NULL) {
    ERR_clear_error();
    *out_err = gh_strdup("external account binding: HMAC failed");
  } else {
    char *sig = gh_b64url_encode(mac, mac_len);
    eab = flattened(prot, body, sig);
    gh_free(sig);
  }
  OPENSSL_cleanse(mac_key, mac_key_len);
  gh_free(mac_key);
  gh_free(header_json);
  gh_free(jwk);
  gh_free(prot);
  gh_free(body);
  gh_free(in);
  return eab;
}

/* get_str returns the string member |name| of |obj|, or NULL. */
static const char *get_str(const cJSON *obj, const char *name) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
  return cJSON_IsString(item) && item->valuestring != NULL ? item->valuestring : NULL;
}

/* b64url_member decodes the base64url string |s| into a new buffer. */
static int b64url_member(uint8_t **out, size_t *out_len, const char *s) {
  return gh_b64url_decode(out, out_len, s, strlen(s));
}

/* verify_sig checks the raw JWS signature |sig| over |in|. Returns 0 or -1. */
static int verify_sig(EVP_PKEY *key, const key_info_t *info, const uint8_t *sig, size_t sig_len,
                      const char *in) {
  uint8_t *der = NULL;
  size_t der_len = sig_len;
  int ret = -1;
  if (info->crv != NULL) {
    size_t n = info->coord_len;
    if (sig_len != 2 * n) return -1;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, n, NULL), *s = BN_bin2bn(sig + n, n, NULL);
    if (es == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s)) {
      BN_free(r);
      BN_free(s);
      ECDSA_SIG_free(es);
      ERR_clear_error();
      return -1;
    }
    int ok = ECDSA_SIG_to_bytes(&der, &der_len, es);
    ECDSA_SIG_free(es);
    if (!ok) {
      ERR_clear_error();
      return -1;
    }
    sig = der;
  }
  EVP_MD_CTX ctx;
  EVP_MD_CTX_init(&ctx);
  if (EVP_DigestVerifyInit(&ctx, NULL, info->md(), NULL, key) &&
      EVP_DigestVerify(&ctx, sig, der_len, (const uint8_t *)in, strlen(in))) {
    ret = 0;
  }
  ERR_clear_error();
  EVP_MD_CTX_cleanup(&ctx);
  OPENSSL_free(der);
  return ret;
}

int acme__jws_verify(char **out_err, cJSON **out_protected, char **out_payload,
                     size_t *out_payload_len, const char *jws_json, EVP_PKEY *key) {
  if (out_protected != NULL) *out_protected = NULL;
  if (out_payload != NULL) *out_payload = NULL;
  if (out_payload_len != NULL) *out_payload_len = 0;
  const key_info_t *info = key_info(key);
  if (info == NULL) {
    *out_err = gh_strdup("JWS: unsupported key");
    return -1;
  }
  cJSON *jws = cJSON_Parse(jws_json);
  cJSON *header = NULL;
  uint8_t *header_json = NULL, *payload = NULL, *sig = NULL;
  size_t header_len = 0, payload_len = 0, sig_len = 0;
  const char *err = NULL;
  const char *prot = get_str(jws, "protected");
  const char *body = get_str(jws, "payload");
  const char *sig_b64 = get_str(jws, "signature");
  if (!cJSON_IsObject(jws) || prot == NULL || body == NULL || sig_b64 == NULL) {
    err = "not a flattened JWS (\"protected\", \"payload\", \"signature\" strings)";
  } else if (b64url_member(&header_json, &header_len, prot) != 0 ||
             b64url_member(&payload, &payload_len, body) != 0 ||
             b64url_member(&sig, &sig_len, sig_b64) != 0) {
    err = "a member is not base64url";
  } else if (!cJSON_IsObject(header = cJSON_ParseWithLength((const char *)header_json,
                                                            header_len))) {
    err = "the protected header is not a JSON object";
  } else if (get_str(header, "alg") == NULL || strcmp(get_str(header, "alg"), info->alg) != 0) {
    err = "\"alg\" does not match the key";
  } else {
    char *in = signing_input(prot, body);
    if (verify_sig(key, info, sig, sig_len, in) != 0) err = "bad signature";
    gh_free(in);
  }
  cJSON_Delete(jws);
  gh_free(header_json);
  gh_free(sig);
  if (err != NULL) {
    *out_err = gh_asprintf("JWS: %s", err);
    cJSON_Delete(header);
    gh_free(payload);
    return -1;
  }
  if (out_protected != NULL) {
    *out_protected = header;
  } else {
    cJSON_Delete(header);
  }
  if (out_payload != NULL) {
    *out_payload = (char *)payload;
    if (out_payload_len != NULL) *out_payload_len = payload_len;
  } else {
    gh_free(payload);
  }
  return 0;
}

/* ---- challenges ---- */

static int is_b64url_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

char *acme__key_authorization(const char *token, const char *thumbprint) {
  if (token == NULL || thumbprint == NULL) return NULL;
  size_t len = strnlen(token, MAX_TOKEN_LEN + 1);
  if (len == 0 || len > MAX_TOKEN_LEN) return NULL;
  for (size_t i = 0; i < len; i++) {
    if (!is_b64url_char(token[i])) return NULL;
  }
  return gh_asprintf("%s.%s", token, thumbprint);
}

char *acme__dns01_value(const char *keyauth) { return sha256_b64url(keyauth); }
