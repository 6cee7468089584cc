/* test_jws.c: acme/jws.c — keys and PEM, canonical JWK and RFC 7638
 * thumbprints, JWS signing (checked by acme__jws_verify and, independently,
 * by the openssl CLI), external account binding (HMAC checked against the
 * openssl CLI), key authorizations and dns-01 values. EC thumbprints are
 * recomputed by a python3 stdlib script from the openssl CLI's view of the
 * public key. */
#include <sys/wait.h>

#include <openssl/ecdsa.h>
#include <openssl/mem.h>

#include "acme/jws.h"
#include "common/b64.h"
#include "common/common.h"
#include "test.h"
#include "testcert.h"

/* run returns the standard output of the shell command |cmd| (caller
 * frees; |*out_len| bytes plus a NUL), or NULL if it did not exit 0. */
static char *run(const char *cmd, size_t *out_len) {
  FILE *p = popen(cmd, "r");
  TC_CHECK(p != NULL);
  size_t len = 0, cap = 4096;
  char *buf = gh_malloc(cap);
  size_t n;
  while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
    len += n;
    if (cap - len - 1 == 0) buf = gh_realloc(buf, cap *= 2);
  }
  buf[len] = '\0';
  int status = pclose(p);
  if (out_len != NULL) *out_len = len;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "command failed: %s\n%s\n", cmd, buf);
    gh_free(buf);
    return NULL;
  }
  return buf;
}

/* write_bin writes |len| bytes to |name| in |d| and returns its path. */
static const char *write_bin(tc_dir_t *d, const char *name, const void *data, size_t len) {
  const char *path = tc_dir_write(d, name, "");
  FILE *f = fopen(path, "wb");
  TC_CHECK(f && fwrite(data, 1, len, f) == len && fclose(f) == 0);
  return path;
}

static char *pem_pubkey(EVP_PKEY *key) {
  BIO *bio = BIO_new(BIO_s_mem());
  TC_CHECK(bio && PEM_write_bio_PUBKEY(bio, key));
  return tc_bio_string(bio);
}

static uint8_t *b64d(const char *s, size_t *out_len) {
  uint8_t *out;
  TC_CHECK(gh_b64url_decode(&out, out_len, s, strlen(s)) == 0);
  return out;
}

/* jws_parts splits a flattened JWS into its three strings (caller frees). */
typedef struct {
  cJSON *root;
  const char *prot, *payload, *sig;
} parts_t;

static void parts_init(parts_t *p, const char *jws) {
  p->root = cJSON_Parse(jws);
  TC_CHECK(cJSON_IsObject(p->root));
  p->prot = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p->root, "protected"));
  p->payload = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p->root, "payload"));
  p->sig = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p->root, "signature"));
  TC_CHECK(p->prot && p->payload && p->sig);
}

/* ---- keys ---- */

static void test_key_new_and_pem(void) {
  static const struct {
    conf_key_type_t type;
    const char *prefix;
  } cases[] = {
      {CONF_KEY_P256, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\""},
      {CONF_KEY_P384, "{\"crv\":\"P-384\",\"kty\":\"EC\",\"x\":\""},
      {CONF_KEY_RSA2048, "{\"e\":\"AQAB\",\"kty\":\"RSA\",\"n\":\""},
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(cases); i++) {
    EVP_PKEY *key = acme__key_new(cases[i].type);
    ASSERT_NOT_NULL(key);
    char *jwk = acme__jwk_json(key);
    ASSERT_NOT_NULL(jwk);
    ASSERT_EQ(strncmp(jwk, cases[i].prefix, strlen(cases[i].prefix)), 0);
    char *pem = acme__key_to_pem(key);
    ASSERT_NOT_NULL(pem);
    ASSERT_EQ(strncmp(pem, "-----BEGIN PRIVATE KEY-----\n", 28), 0);
    char *err = NULL;
    EVP_PKEY *back = acme__key_from_pem(&err, pem, strlen(pem));
    ASSERT_NULL(err);
    ASSERT_NOT_NULL(back);
    ASSERT_EQ(EVP_PKEY_cmp(key, back), 1);
    char *jwk2 = acme__jwk_json(back);
    ASSERT_STR_EQ(jwk2, jwk);
    gh_free(jwk);
    gh_free(jwk2);
    gh_free(pem);
    EVP_PKEY_free(key);
    EVP_PKEY_free(back);
  }
  ASSERT_NULL(acme__key_new((conf_key_type_t)42));
}

static void test_key_from_pem_rejects(void) {
  char *err = NULL;
  ASSERT_NULL(acme__key_from_pem(&err, "garbage", 7));
  ASSERT_CONTAINS(err, "no unencrypted PKCS#8");
  gh_free(err);
  err = NULL;

  /* A traditional "EC PRIVATE KEY" block is not PKCS#8. */
  EVP_PKEY *key = tc_key_ec();
  BIO *bio = BIO_new(BIO_s_mem());
  TC_CHECK(PEM_write_bio_ECPrivateKey(bio, EVP_PKEY_get0_EC_KEY(key), NULL, NULL, 0, NULL, NULL));
  char *trad = tc_bio_string(bio);
  ASSERT_NULL(acme__key_from_pem(&err, trad, strlen(trad)));
  ASSERT_CONTAINS(err, "PRIVATE KEY");
  gh_free(err);
  err = NULL;
  free(trad);

  /* Other blocks before the key are skipped. */
  X509 *x = tc_cert(key, "a.example", NULL, NULL, NULL, 1);
  char *cert = tc_pem_certs(&x, 1);
  char *pem = acme__key_to_pem(key);
  char *both = gh_asprintf("%s%s", cert, pem);
  EVP_PKEY *back = acme__key_from_pem(&err, both, strlen(both));
  ASSERT_NULL(err);
  ASSERT_EQ(EVP_PKEY_cmp(key, back), 1);
  EVP_PKEY_free(back);
  gh_free(both);
  gh_free(pem);
  free(cert);
  X509_free(x);
  EVP_PKEY_free(key);

  /* A truncated block is malformed. */
  key = acme__key_new(CONF_KEY_P256);
  pem = acme__key_to_pem(key);
  char *cut = strstr(pem, "\n") + 1;
  memmove(cut, cut + 8, strlen(cut + 8) + 1);
  ASSERT_NULL(acme__key_from_pem(&err, pem, strlen(pem)));
  ASSERT_NOT_NULL(err);
  gh_free(err);
  err = NULL;
  gh_free(pem);
  EVP_PKEY_free(key);

  /* Curves and sizes we do not sign with are refused, by every function. */
  EC_KEY *ec = EC_KEY_new_by_curve_name(NID_secp521r1);
  key = EVP_PKEY_new();
  TC_CHECK(ec && key && EC_KEY_generate_key(ec) && EVP_PKEY_assign_EC_KEY(key, ec));
  pem = tc_pem_key(key);
  ASSERT_NULL(acme__key_from_pem(&err, pem, strlen(pem)));
  ASSERT_CONTAINS(err, "unsupported key");
  gh_free(err);
  err = NULL;
  free(pem);
  ASSERT_NULL(acme__jwk_json(key));
  ASSERT_NULL(acme__jwk_thumbprint(key));
  ASSERT_NULL(acme__key_to_pem(key));
  ASSERT_NULL(acme__jws_sign(&err, key, NULL, "n", "https://ca/x", "{}"));
  ASSERT_CONTAINS(err, "unsupported");
  gh_free(err);
  err = NULL;
  EVP_PKEY_free(key);

  RSA *rsa = RSA_new();
  BIGNUM *e = BN_new();
  key = EVP_PKEY_new();
  TC_CHECK(rsa && e && key && BN_set_word(e, RSA_F4) && RSA_generate_key_ex(rsa, 1024, e, NULL) &&
           EVP_PKEY_assign_RSA(key, rsa));
  BN_free(e);
  pem = tc_pem_key(key);
  ASSERT_NULL(acme__key_from_pem(&err, pem, strlen(pem)));
  ASSERT_CONTAINS(err, "2048");
  gh_free(err);
  free(pem);
  EVP_PKEY_free(key);
}

/* ---- JWK and thumbprints ---- */

/* RFC 7638 section 3.1. */
static const char rfc7638_n[] =
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPeb"
    "WKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQ"
    "MicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2Nc"
    "Rwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

static void test_thumbprint_rfc7638(void) {
  size_t n_len, e_len;
  uint8_t *n = b64d(rfc7638_n, &n_len);
  uint8_t *e = b64d("AQAB", &e_len);
  RSA *rsa = RSA_new();
  EVP_PKEY *key = EVP_PKEY_new();
  TC_CHECK(rsa && key &&
           RSA_set0_key(rsa, BN_bin2bn(n, n_len, NULL), BN_bin2bn(e, e_len, NULL), NULL) &&
           EVP_PKEY_assign_RSA(key, rsa));
  gh_free(n);
  gh_free(e);
  char *jwk = acme__jwk_json(key);
  char *want = gh_asprintf("{\"e\":\"AQAB\",\"kty\":\"RSA\",\"n\":\"%s\"}", rfc7638_n);
  ASSERT_STR_EQ(jwk, want);
  char *tp = acme__jwk_thumbprint(key);
  ASSERT_STR_EQ(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
  gh_free(jwk);
  gh_free(want);
  gh_free(tp);
  EVP_PKEY_free(key);
}

/* An independent thumbprint: the openssl CLI extracts the public point
 * from the key file, python3 builds the JWK with json.dumps(sort_keys) and
 * hashes it. Written to a file to avoid shell quoting. */
static const char thumbprint_py[] =
    "import base64, hashlib, json, subprocess, sys\n"
    "der = subprocess.run(['openssl', 'pkey', '-in', sys.argv[1], '-pubout', '-outform', 'DER'],\n"
    "                     check=True, capture_output=True).stdout\n"
    "crv = sys.argv[2]\n"
    "n = {'P-256': 32, 'P-384': 48}[crv]\n"
    "pt = der[-(2 * n + 1):]\n"
    "assert pt[0] == 4\n"
    "b = lambda v: base64.urlsafe_b64encode(v).rstrip(b'=').decode()\n"
    "jwk = {'kty': 'EC', 'crv': crv, 'x': b(pt[1:1 + n]), 'y': b(pt[1 + n:])}\n"
    "text = json.dumps(jwk, sort_keys=True, separators=(',', ':'))\n"
    "print(b(hashlib.sha256(text.encode()).digest()))\n";

static char *python_thumbprint(EVP_PKEY *key, const char *crv) {
  tc_dir_t d;
  tc_dir_init(&d);
  const char *py = tc_dir_write(&d, "tp.py", thumbprint_py);
  char *pem = tc_pem_key(key);
  const char *key_path = tc_dir_write(&d, "key.pem", pem);
  free(pem);
  char *cmd = gh_asprintf("python3 %s %s %s", py, key_path, crv);
  char *out = run(cmd, NULL);
  gh_free(cmd);
  tc_dir_cleanup(&d);
  if (out != NULL) out[strcspn(out, "\n")] = '\0';
  return out;
}

/* x_first_byte returns the first byte of |key|'s big-endian x coordinate. */
static uint8_t x_first_byte(EVP_PKEY *key) {
  const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(key);
  uint8_t pt[1 + 2 * 48];
  size_t len = EC_POINT_point2oct(EC_KEY_get0_group(ec), EC_KEY_get0_public_key(ec),
                                  POINT_CONVERSION_UNCOMPRESSED, pt, sizeof(pt), NULL);
  TC_CHECK(len > 1);
  return pt[1];
}

static void test_thumbprint_ec_independent(void) {
  /* A P-256 key whose x coordinate begins with a zero byte (1 in 256)
   * proves the left padding; BN_bn2bin alone would drop it. */
  EVP_PKEY *key = NULL;
  for (int i = 0; i < 10000; i++) {
    key = acme__key_new(CONF_KEY_P256);
    if (x_first_byte(key) == 0) break;
    EVP_PKEY_free(key);
    key = NULL;
  }
  ASSERT_NOT_NULL(key);
  char *jwk = acme__jwk_json(key);
  cJSON *obj = cJSON_Parse(jwk);
  ASSERT_EQ(cJSON_GetArraySize(obj), 4);
  size_t x_len, y_len;
  uint8_t *x = b64d(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(obj, "x")), &x_len);
  uint8_t *y = b64d(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(obj, "y")), &y_len);
  ASSERT_EQ(x_len, 32);
  ASSERT_EQ(y_len, 32);
  ASSERT_EQ(x[0], 0);
  gh_free(x);
  gh_free(y);
  cJSON_Delete(obj);
  gh_free(jwk);

  char *tp = acme__jwk_thumbprint(key);
  char *want = python_thumbprint(key, "P-256");
  ASSERT_NOT_NULL(want);
  ASSERT_STR_EQ(tp, want);
  gh_free(tp);
  gh_free(want);
  EVP_PKEY_free(key);

  key = acme__key_new(CONF_KEY_P384);
  tp = acme__jwk_thumbprint(key);
  want = python_thumbprint(key, "P-384");
  ASSERT_NOT_NULL(want);
  ASSERT_STR_EQ(tp, want);
  ASSERT_EQ(strlen(tp), 43);
  gh_free(tp);
  gh_free(want);
  EVP_PKEY_free(key);
}

/* ---- JWS ---- */

/* openssl_verify checks |jws| with `openssl dgst -verify`, converting the
 * JWS r || s to DER first for ECDSA. Returns 0 if it printed Verified OK. */
static int openssl_verify(EVP_PKEY *key, const char *jws, const char *digest) {
  parts_t p;
  parts_init(&p, jws);
  size_t sig_len;
  uint8_t *sig = b64d(p.sig, &sig_len);
  uint8_t *der = NULL;
  size_t der_len = sig_len;
  if (EVP_PKEY_id(key) == EVP_PKEY_EC) {
    ECDSA_SIG *es = ECDSA_SIG_new();
    size_t n = sig_len / 2;
    TC_CHECK(es && ECDSA_SIG_set0(es, BN_bin2bn(sig, n, NULL), BN_bin2bn(sig + n, n, NULL)) &&
             ECDSA_SIG_to_bytes(&der, &der_len, es));
    ECDSA_SIG_free(es);
  }
  tc_dir_t d;
  tc_dir_init(&d);
  char *in = gh_asprintf("%s.%s", p.prot, p.payload);
  const char *in_path = tc_dir_write(&d, "in.txt", in);
  const char *sig_path = write_bin(&d, "sig.bin", der ? der : sig, der_len);
  char *pub = pem_pubkey(key);
  const char *pub_path = tc_dir_write(&d, "pub.pem", pub);
  char *cmd = gh_asprintf("openssl dgst -%s -verify %s -signature %s %s 2>&1", digest, pub_path,
                          sig_path, in_path);
  char *out = run(cmd, NULL);
  int ret = out != NULL && strstr(out, "Verified OK") != NULL ? 0 : -1;
  gh_free(out);
  gh_free(cmd);
  free(pub);
  gh_free(in);
  tc_dir_cleanup(&d);
  OPENSSL_free(der);
  gh_free(sig);
  cJSON_Delete(p.root);
  return ret;
}

static void check_sign_verify(conf_key_type_t type, const char *alg, size_t sig_len,
                              const char *digest) {
  EVP_PKEY *key = acme__key_new(type);
  char *err = NULL;
  const char *payload = "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"a.example\"}]}";
  char *jws = acme__jws_sign(&err, key, "https://ca.example/acct/1", "nonce-\"1\"",
                             "https://ca.example/new-order", payload);
  ASSERT_NULL(err);
  ASSERT_NOT_NULL(jws);
  ASSERT_NULL(strchr(jws, ' '));

  cJSON *header = NULL;
  char *body = NULL;
  size_t body_len = 0;
  ASSERT_EQ(acme__jws_verify(&err, &header, &body, &body_len, jws, key), 0);
  ASSERT_NULL(err);
  ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(header, "alg")), alg);
  ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(header, "kid")),
                "https://ca.example/acct/1");
  ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(header, "nonce")),
                "nonce-\"1\"");
  ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(header, "url")),
                "https://ca.example/new-order");
  ASSERT_NULL(cJSON_GetObjectItemCaseSensitive(header, "jwk"));
  ASSERT_EQ(cJSON_GetArraySize(header), 4);
  ASSERT_STR_EQ(body, payload);
  ASSERT_EQ(body_len, strlen(payload));

  parts_t p;
  parts_init(&p, jws);
  size_t raw_len;
  uint8_t *raw = b64d(p.sig, &raw_len);
  ASSERT_EQ(raw_len, sig_len);
  gh_free(raw);
  cJSON_Delete(p.root);

  ASSERT_EQ(openssl_verify(key, jws, digest), 0);
  /* ...and the independent verifier is not vacuous. */
  char *bad = gh_strdup(jws);
  char *at = strstr(bad, "\"payload\":\"") + 11;
  *at = *at == 'e' ? 'f' : 'e';
  ASSERT_EQ(openssl_verify(key, bad, digest), -1);
  gh_free(bad);
  cJSON_Delete(header);
  gh_free(body);
  gh_free(jws);
  EVP_PKEY_free(key);
}

static void test_jws_es256(void) { check_sign_verify(CONF_KEY_P256, "ES256", 64, "sha256"); }
static void test_jws_es384(void) { check_sign_verify(CONF_KEY_P384, "ES384", 96, "sha384"); }
static void test_jws_rs256(void) { check_sign_verify(CONF_KEY_RSA2048, "RS256", 256, "sha256"); }

static void test_jws_jwk_header_and_post_as_get(void) {
  EVP_PKEY *key = acme__key_new(CONF_KEY_P256);
  char *err = NULL;
  char *jws = acme__jws_sign(&err, key, NULL, "abc", "https://ca.example/new-acct", "");
  ASSERT_NOT_NULL(jws);
  ASSERT_CONTAINS(jws, "\"payload\":\"\"");
  cJSON *header = NULL;
  char *body = NULL;
  size_t body_len = 99;
  ASSERT_EQ(acme__jws_verify(&err, &header, &body, &body_len, jws, key), 0);
  ASSERT_EQ(body_len, 0);
  ASSERT_STR_EQ(body, "");
  ASSERT_NULL(cJSON_GetObjectItemCaseSensitive(header, "kid"));
  char *jwk = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(header, "jwk"));
  char *want = acme__jwk_json(key);
  ASSERT_STR_EQ(jwk, want);
  gh_free(jwk);
  gh_free(want);
  cJSON_Delete(header);
  gh_free(body);
  ASSERT_EQ(openssl_verify(key, jws, "sha256"), 0);
  gh_free(jws);

  /* Missing inputs are errors, not crashes. */
  ASSERT_NULL(acme__jws_sign(&err, key, NULL, NULL, "https://ca/x", ""));
  ASSERT_CONTAINS(err, "missing");
  gh_free(err);
  err = NULL;
  ASSERT_NULL(acme__jws_sign(&err, key, "", "n", "https://ca/x", ""));
  gh_free(err);
  err = NULL;
  ASSERT_NULL(acme__jws_sign(&err, key, NULL, "n", "", ""));
  gh_free(err);
  EVP_PKEY_free(key);
}

/* verify_fails checks that acme__jws_verify rejects |jws| with |key|. */
static int verify_fails(const char *jws, EVP_PKEY *key, const char *why) {
  char *err = NULL;
  cJSON *header = (cJSON *)1;
  int ret = acme__jws_verify(&err, &header, NULL, NULL, jws, key);
  int ok = ret == -1 && header == NULL && err != NULL && strstr(err, why) != NULL;
  if (!ok) fprintf(stderr, "verify_fails(%s): ret %d, err %s\n", why, ret, err ? err : "(null)");
  gh_free(err);
  return ok;
}

static char *replace_member(const char *jws, const char *name, const char *value) {
  cJSON *root = cJSON_Parse(jws);
  TC_CHECK(cJSON_ReplaceItemInObjectCaseSensitive(root, name, cJSON_CreateString(value)));
  char *s = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  return s;
}

/* RFC 8555 section 7.3.5: the inner JWS is signed by the new key, carries
 * its "jwk" and the keyChange URL but no nonce, and names the account and
 * the old key. */
static void test_jws_key_change(void) {
  EVP_PKEY *old_key = acme__key_new(CONF_KEY_P256);
  EVP_PKEY *new_key = acme__key_new(CONF_KEY_P256);
  char *err = NULL;
  char *jws = acme__jws_key_change(&err, new_key, old_key, "https://ca/acct/1",
                                   "https://ca/key-change");
  ASSERT_NOT_NULL(jws);
  cJSON *header = NULL;
  char *body = NULL;
  size_t body_len = 0;
  ASSERT_EQ(acme__jws_verify(&err, &header, &body, &body_len, jws, new_key), 0);
  ASSERT_NULL(cJSON_GetObjectItemCaseSensitive(header, "nonce"));
  ASSERT_NULL(cJSON_GetObjectItemCaseSensitive(header, "kid"));
  ASSERT_STR_EQ(cJSON_GetObjectItemCaseSensitive(header, "url")->valuestring,
                "https://ca/key-change");
  char *jwk = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(header, "jwk"));
  char *want = acme__jwk_json(new_key);
  ASSERT_STR_EQ(jwk, want);
  gh_free(jwk);
  gh_free(want);
  cJSON *payload = cJSON_Parse(body);
  ASSERT_STR_EQ(cJSON_GetObjectItemCaseSensitive(payload, "account")->valuestring,
                "https://ca/acct/1");
  jwk = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(payload, "oldKey"));
  want = acme__jwk_json(old_key);
  ASSERT_STR_EQ(jwk, want);
  gh_free(jwk);
  gh_free(want);
  cJSON_Delete(payload);
  cJSON_Delete(header);
  gh_free(body);
  gh_free(jws);
  ASSERT_NULL(acme__jws_key_change(&err, new_key, old_key, "", "https://ca/key-change"));
  ASSERT_CONTAINS(err, "account URL");
  gh_free(err);
  EVP_PKEY_free(old_key);
  EVP_PKEY_free(new_key);
}

static void test_jws_verify_rejects(void) {
  EVP_PKEY *key = acme__key_new(CONF_KEY_P256);
  EVP_PKEY *other = acme__key_new(CONF_KEY_P256);
  EVP_PKEY *p384 = acme__key_new(CONF_KEY_P384);
  char *err = NULL;
  char *jws = acme__jws_sign(&err, key, "k", "n", "https://ca/x", "{\"a\":1}");
  ASSERT_NOT_NULL(jws);
  ASSERT_TRUE(verify_fails(jws, other, "bad signature"));
  ASSERT_TRUE(verify_fails(jws, p384, "\"alg\""));
  ASSERT_TRUE(verify_fails("{", key, "not a flattened JWS"));
  ASSERT_TRUE(verify_fails("[]", key, "not a flattened JWS"));

  char *bad = replace_member(jws, "payload", "eyJhIjoyfQ"); /* {"a":2} */
  ASSERT_TRUE(verify_fails(bad, key, "bad signature"));
  gh_free(bad);
  bad = replace_member(jws, "payload", "eyJhIjoxfQ=="); /* padded */
  ASSERT_TRUE(verify_fails(bad, key, "base64url"));
  gh_free(bad);

  /* The classic bug: a DER ECDSA signature where JWS wants r || s. */
  parts_t p;
  parts_init(&p, jws);
  size_t raw_len;
  uint8_t *raw = b64d(p.sig, &raw_len);
  ASSERT_EQ(raw_len, 64);
  ECDSA_SIG *es = ECDSA_SIG_new();
  uint8_t *der;
  size_t der_len;
  TC_CHECK(es && ECDSA_SIG_set0(es, BN_bin2bn(raw, 32, NULL), BN_bin2bn(raw + 32, 32, NULL)) &&
           ECDSA_SIG_to_bytes(&der, &der_len, es));
  char *der_b64 = gh_b64url_encode(der, der_len);
  bad = replace_member(jws, "signature", der_b64);
  ASSERT_TRUE(verify_fails(bad, key, "bad signature"));
  gh_free(bad);
  gh_free(der_b64);
  OPENSSL_free(der);
  ECDSA_SIG_free(es);
  gh_free(raw);
  cJSON_Delete(p.root);

  gh_free(jws);
  EVP_PKEY_free(key);
  EVP_PKEY_free(other);
  EVP_PKEY_free(p384);
}

/* ---- external account binding ---- */

static void test_eab(void) {
  EVP_PKEY *account = acme__key_new(CONF_KEY_P256);
  static const uint8_t mac_key[] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99,
                                    0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0xfe, 0xfd, 0xfc, 0xfb,
                                    0xfa, 0xf9, 0xf8, 0xf7, 0xf6, 0xf5, 0xf4, 0xf3, 0xf2, 0xf1,
                                    0xf0, 0x0f};
  char *mac_b64 = gh_b64url_encode(mac_key, sizeof(mac_key));
  char *err = NULL;
  cJSON *eab = acme__jws_eab(&err, "kid-1", mac_b64, account, "https://ca.example/new-acct");
  ASSERT_NULL(err);
  ASSERT_NOT_NULL(eab);
  char *text = cJSON_PrintUnformatted(eab);
  parts_t p;
  parts_init(&p, text);

  size_t len;
  char *prot = (char *)b64d(p.prot, &len);
  ASSERT_STR_EQ(prot, "{\"alg\":\"HS256\",\"kid\":\"kid-1\",\"url\":\"https://ca.example/new-acct\"}");
  char *payload = (char *)b64d(p.payload, &len);
  char *jwk = acme__jwk_json(account);
  ASSERT_STR_EQ(payload, jwk);
  size_t sig_len;
  uint8_t *sig = b64d(p.sig, &sig_len);
  ASSERT_EQ(sig_len, 32);

  /* The same MAC by the openssl CLI. */
  tc_dir_t d;
  tc_dir_init(&d);
  char *in = gh_asprintf("%s.%s", p.prot, p.payload);
  const char *in_path = tc_dir_write(&d, "in.txt", in);
  char hex[2 * sizeof(mac_key) + 1];
  for (size_t i = 0; i < sizeof(mac_key); i++) snprintf(hex + 2 * i, 3, "%02x", mac_key[i]);
  char *cmd = gh_asprintf("openssl dgst -sha256 -mac HMAC -macopt hexkey:%s -binary %s", hex,
                          in_path);
  size_t want_len = 0;
  char *want = run(cmd, &want_len);
  ASSERT_NOT_NULL(want);
  ASSERT_EQ(want_len, 32);
  ASSERT_EQ(memcmp(want, sig, 32), 0);
  tc_dir_cleanup(&d);

  /* A pasted key with padding gives the same binding; garbage is refused. */
  char *padded = gh_asprintf("%s=", mac_b64);
  cJSON *eab2 = acme__jws_eab(&err, "kid-1", padded, account, "https://ca.example/new-acct");
  ASSERT_NOT_NULL(eab2);
  char *text2 = cJSON_PrintUnformatted(eab2);
  ASSERT_STR_EQ(text2, text);
  ASSERT_NULL(acme__jws_eab(&err, "kid-1", "not base64!", account, "https://ca/x"));
  ASSERT_CONTAINS(err, "MAC key");
  gh_free(err);
  err = NULL;
  ASSERT_NULL(acme__jws_eab(&err, "kid-1", "", account, "https://ca/x"));
  gh_free(err);
  err = NULL;
  ASSERT_NULL(acme__jws_eab(&err, "", mac_b64, account, "https://ca/x"));
  gh_free(err);

  gh_free(text2);
  cJSON_Delete(eab2);
  gh_free(padded);
  gh_free(cmd);
  gh_free(in);
  gh_free(want);
  gh_free(sig);
  gh_free(jwk);
  gh_free(payload);
  gh_free(prot);
  cJSON_Delete(p.root);
  gh_free(text);
  cJSON_Delete(eab);
  gh_free(mac_b64);
  EVP_PKEY_free(account);
}

/* ---- challenges ---- */

static void test_key_authorization(void) {
  const char *tp = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
  char *ka = acme__key_authorization("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA", tp);
  ASSERT_STR_EQ(ka, "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA."
                    "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
  gh_free(ka);
  ASSERT_NULL(acme__key_authorization("", tp));
  ASSERT_NULL(acme__key_authorization("../../etc/passwd", tp));
  ASSERT_NULL(acme__key_authorization("abc def", tp));
  ASSERT_NULL(acme__key_authorization("abc=", tp));
  ASSERT_NULL(acme__key_authorization("abc/", tp));
  ASSERT_NULL(acme__key_authorization(NULL, tp));
  char long_token[300];
  memset(long_token, 'a', sizeof(long_token) - 1);
  long_token[sizeof(long_token) - 1] = '\0';
  ASSERT_NULL(acme__key_authorization(long_token, tp));

  /* SHA-256("abc") (FIPS 180-2) in base64url. */
  char *v = acme__dns01_value("abc");
  ASSERT_STR_EQ(v, "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
  gh_free(v);
}

int main(void) {
  RUN(test_key_new_and_pem);
  RUN(test_key_from_pem_rejects);
  RUN(test_thumbprint_rfc7638);
  RUN(test_thumbprint_ec_independent);
  RUN(test_jws_es256);
  RUN(test_jws_es384);
  RUN(test_jws_rs256);
  RUN(test_jws_jwk_header_and_post_as_get);
  RUN(test_jws_key_change);
  RUN(test_jws_verify_rejects);
  RUN(test_eab);
  RUN(test_key_authorization);
  TEST_EXIT();
}
