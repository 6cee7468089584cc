/* renewal.c: a certificate's renewal state, kept in its bundle's meta.json
 * under "renewal": {"failures": N, "next_retry": "RFC 3339", "last_error":
 * "...", "revoked": true}. It is written with the bundle (a new immutable
 * version holding the same certificate and key), so a restart reads back
 * the back-off and a restart loop cannot hammer the CA; a renewed bundle
 * has no "renewal" object, which is how a success clears it. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/bio.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "acme/engine_internal.h"
#include "acme/jws.h"
#include "acme/storage.h"
#include "common/common.h"


int acme_renewal_state_load(acme_storage_t *st, acme_renewal_state_t *out, const char *name) {
  memset(out, 0, sizeof(*out));
  acme_cert_t *cert = NULL;
  char *meta = NULL, *err = NULL;
  int rc = acme_storage_cert_load(st, &cert, &meta, &err, name);
  gh_free(err);
  acme_cert_unref(cert);
  if (rc != 0) return rc;
  cJSON *root = cJSON_Parse(meta);
  gh_free(meta);
  const cJSON *r = cJSON_GetObjectItemCaseSensitive(root, "renewal");
  if (cJSON_IsObject(r)) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(r, "failures");
    if (cJSON_IsNumber(f) && f->valuedouble >= 0 && f->valuedouble < 1e6)
      out->failures = (unsigned)f->valuedouble;
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(r, "next_retry");
    time_t t;
    if (cJSON_IsString(n) && acme__time_parse(n->valuestring, &t) == 0) out->next_retry = t;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "last_error");
    if (cJSON_IsString(e)) snprintf(out->last_error, sizeof(out->last_error), "%s", e->valuestring);
    out->revoked = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "revoked"));
  }
  cJSON_Delete(root);
  return 0;
}

/* chain_pem returns |cert|'s chain as PEM (caller frees), or NULL. */
static char *chain_pem(const acme_cert_t *cert) {
  BIO *bio = BIO_new(BIO_s_mem());
  int ok = bio != NULL;
  for (size_t i = 0; ok && i < cert->num_chain; i++) {
    X509 *x = X509_parse_from_buffer(cert->chain[i]);
    ok = x != NULL && PEM_write_bio_X509(bio, x) == 1;
    X509_free(x);
  }
  char *out = NULL;
  const uint8_t *data;
  size_t len;
  if (ok && BIO_mem_contents(bio, &data, &len) == 1) {
    out = gh_malloc(len + 1);
    memcpy(out, data, len);
    out[len] = '\0';
  }
  BIO_free(bio);
  return out;
}

int acme_renewal_state_save(acme_storage_t *st, char **out_err, const char *name,
                            const acme_renewal_state_t *state) {
  acme_cert_t *cert = NULL;
  char *meta = NULL;
  *out_err = NULL;
  int rc = acme_storage_cert_load(st, &cert, &meta, out_err, name);
  if (rc != 0) return rc;
  cJSON *root = cJSON_Parse(meta);
  gh_free(meta);
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    root = cJSON_CreateObject();
  }
  cJSON_DeleteItemFromObjectCaseSensitive(root, "renewal");
  cJSON *r = cJSON_AddObjectToObject(root, "renewal");
  cJSON_AddNumberToObject(r, "failures", state->failures);
  char t[32];
  gh_format_time(t, sizeof(t), state->next_retry);
  cJSON_AddStringToObject(r, "next_retry", t);
  cJSON_AddStringToObject(r, "last_error", state->last_error);
  if (state->revoked) cJSON_AddTrueToObject(r, "revoked");
  char *text = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  char *chain = chain_pem(cert);
  char *key = cert->key ? acme__key_to_pem(cert->key) : NULL;
  if (chain == NULL || key == NULL) {
    *out_err = gh_asprintf("%s: cannot re-encode the stored certificate", name);
    rc = -EINVAL;
  } else {
    acme_storage_bundle_t bundle = {
        .chain_pem = {chain, strlen(chain)},
        .key_pem = {key, strlen(key)},
        .meta_json = {text, strlen(text)},
    };
    /* The same certificate with new meta: never over one another node
     * stored since it was read. */
    rc = acme_storage_cert_save_over(st, out_err, name, &bundle, cert);
  }
  acme_cert_unref(cert);
  if (key != NULL) OPENSSL_cleanse(key, strlen(key));
  gh_free(key);
  gh_free(chain);
  free(text);
  return rc;
}
