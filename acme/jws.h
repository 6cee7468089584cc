/* jws.h: ACME's cryptographic building blocks (internal to acme/): keys,
 * JWK (RFC 7517) and thumbprints (RFC 7638), flattened JWS (RFC 7515) as
 * RFC 8555 section 6.2 uses it, external account binding (RFC 8555
 * section 7.3.4), and key authorizations (RFC 8555 section 8.1).
 *
 * All of it is pure and synchronous: no I/O, no globals, safe from any
 * thread. Supported keys are ECDSA P-256 (ES256), ECDSA P-384 (ES384) and
 * RSA of at least 2048 bits (RS256); a key of any other kind is refused by
 * every function here. Account keys are always P-256. */
#ifndef GH_ACME_JWS_H
#define GH_ACME_JWS_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <openssl/base.h>

#include "conf/conf.h"

/* acme__key_new returns a freshly generated private key of |type| (caller
 * frees with EVP_PKEY_free), or NULL if |type| is unknown or generation
 * failed. */
EVP_PKEY *acme__key_new(conf_key_type_t type);

/* acme__key_to_pem returns |key| as an unencrypted PKCS#8 PEM ("PRIVATE
 * KEY") string (caller frees with gh_free), or NULL if it cannot be
 * encoded. */
char *acme__key_to_pem(const EVP_PKEY *key);

/* acme__key_from_pem parses the first PKCS#8 "PRIVATE KEY" block of the
 * |pem_len| bytes at |pem|. Returns a new key (caller frees) of a supported
 * kind, or NULL with |*out_err| set (caller frees). */
EVP_PKEY *acme__key_from_pem(char **out_err, const char *pem, size_t pem_len);

/* acme__jwk_json returns the public JWK of |key| in the canonical form of
 * RFC 7638 section 3: required members only, in lexicographic order, no
 * whitespace; EC coordinates left-padded to the field size. The same text
 * serves as the "jwk" protected header and as the thumbprint input. Returns
 * a new string (caller frees), or NULL for an unsupported key. */
char *acme__jwk_json(const EVP_PKEY *key);

/* acme__jwk_thumbprint returns base64url(SHA-256(acme__jwk_json(key))) as
 * a new string (caller frees), or NULL for an unsupported key. */
char *acme__jwk_thumbprint(const EVP_PKEY *key);

/* acme__jws_sign signs |payload| (JSON text; "" for POST-as-GET) for a
 * POST to |url| with anti-replay |nonce|. With |kid| (the account URL) the
 * protected header names the account; with |kid| NULL it carries the "jwk"
 * (newAccount, revocation by certificate key). Returns the flattened JWS
 * JSON serialization {"protected","payload","signature"} as a new string
 * (caller frees), or NULL with |*out_err| set (caller frees). */
char *acme__jws_sign(char **out_err, EVP_PKEY *key, const char *kid, const char *nonce,
                     const char *url, const char *payload);

/* acme__jws_key_change returns the inner JWS of an account key rollover
 * (RFC 8555 section 7.3.5), the payload of the outer request to |url| (the
 * directory's keyChange): signed by |new_key|, protected
 * {"alg","jwk":new key,"url":|url|} without a nonce, over
 * {"account":|account_url|,"oldKey":old key's JWK}. Returns the flattened
 * JWS as a new string (caller frees), or NULL with |*out_err| set (caller
 * frees). */
char *acme__jws_key_change(char **out_err, EVP_PKEY *new_key, const EVP_PKEY *old_key,
                           const char *account_url, const char *url);

/* acme__jws_eab returns the "externalAccountBinding" object of a
 * newAccount payload: a flattened JWS by the CA-issued MAC key, HS256,
 * protected {"alg","kid":|key_id|,"url":|url|} over the public JWK of
 * |account_key|. |hmac_key_b64url| is the MAC key as the CA hands it out
 * (base64url; trailing '=' padding is tolerated, since people paste it).
 * Returns a new cJSON object (caller deletes, or hands it to a parent), or
 * NULL with |*out_err| set (caller frees). */
cJSON *acme__jws_eab(char **out_err, const char *key_id, const char *hmac_key_b64url,
                     const EVP_PKEY *account_key, const char *url);

/* acme__jws_verify checks the flattened JWS |jws_json| against the public
 * half of |key|: the signature, and that "alg" is the one |key| signs
 * with. On success returns 0 and, for each non-NULL output, the decoded
 * protected header (caller deletes) and payload (caller frees; |*out_len|
 * bytes plus a NUL). Returns -1 with |*out_err| set (caller frees) and
 * the outputs NULL otherwise. The ACME client never needs it; tests do. */
int acme__jws_verify(char **out_err, cJSON **out_protected, char **out_payload,
                     size_t *out_payload_len, const char *jws_json, EVP_PKEY *key);

/* acme__key_authorization returns "|token|.|thumbprint|" (RFC 8555 section
 * 8.1) as a new string (caller frees), or NULL if the CA's |token| is empty,
 * longer than 256 bytes or not in the base64url alphabet: it ends up in a
 * URL path and a file name, so a hostile one must not pass. */
char *acme__key_authorization(const char *token, const char *thumbprint);

/* acme__dns01_value returns the TXT record value for dns-01, base64url(
 * SHA-256(|keyauth|)) (RFC 8555 section 8.4), as a new string (caller
 * frees). */
char *acme__dns01_value(const char *keyauth);

#endif
