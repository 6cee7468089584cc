/* renewal.c: a certificate's renewal state, kept in its bundle's meta.json
 * under "renewal": {"failures": N, "next_retry": "RFC 3339", "last_error":
 * "...", "revoked": true}. It is written with the bundle (a new immutable
 * version holding the same certificate and key), so a restart reads back
 * the back-off and a restart loop cannot hammer the CA; a renewed bundle
 * has no "renewal" object, which is how a success clears it. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/mem.h>

#include "acme/engine_internal.h"
#include "acme/storage.h"
#include "common/common.h"


void acme_renewal_state_parse(acme_renewal_state_t *out, const char *meta) {
  memset(out, 0, sizeof(*out));
  cJSON *root = cJSON_Parse(meta ? meta : "");
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
}

int acme_renewal_state_load(acme_storage_t *st, acme_renewal_state_t *out, const char *name) {
  memset(out, 0, sizeof(*out));
  acme_cert_t *cert = NULL;
  char *meta = NULL, *err = NULL;
  int rc = acme_storage_cert_load(st, &cert, &meta, &err, name);
  gh_free(err);
  acme_cert_unref(cert);
  if (rc == 0) acme_renewal_state_parse(out, meta);
  gh_free(meta);
  return rc;
}

time_t acme_renewal_nominal(time_t not_before, time_t not_after) {
  time_t life = not_after - not_before;
  return life <= 0 ? not_after : not_after - life / 3;
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
  char *chain = NULL, *key = NULL;
  if (acme_cert_to_pem(cert, &chain, &key) != 0) {
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
