/* ari.c: ACME Renewal Information (RFC 9773) — the certificate identifier
 * (section 4.1), the renewalInfo response (section 4.2) and the choice of
 * a renewal time inside the CA's suggested window (section 4.3.3). The
 * request itself is a job state of the engine (engine.c). */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/bytestring.h>
#include <openssl/mem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "acme/engine_internal.h"
#include "common/b64.h"
#include "common/common.h"

int acme__time_parse(const char *s, time_t *out) {
  int y, mo, d, h, mi, sec, n = 0;
  if (s == NULL ||
      sscanf(s, "%4d-%2d-%2d%*1[Tt]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19)
    return -1;
  const char *p = s + n;
  if (*p == '.') {
    p++;
    if (!isdigit((unsigned char)*p)) return -1;
    while (isdigit((unsigned char)*p)) p++;
  }
  long off = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int oh, om, m = 0;
    if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &m) != 2 || m != 5 || oh > 23 || om > 59) return -1;
    off = (oh * 3600L + om * 60L) * (*p == '+' ? 1 : -1);
    p += 6;
  } else {
    return -1;
  }
  if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
    return -1;
  struct tm tm = {0};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  *out = timegm(&tm) - off;
  return 0;
}

char *acme__ari_cert_id(const acme_cert_t *cert) {
  if (cert == NULL || cert->num_chain == 0) return NULL;
  X509 *x = X509_parse_from_buffer(cert->chain[0]);
  if (x == NULL) return NULL;
  char *out = NULL;
  const ASN1_OCTET_STRING *aki = X509_get0_authority_key_id(x);
  uint8_t *der = NULL;
  int der_len = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &der);
  CBS cbs, serial;
  if (aki != NULL && ASN1_STRING_length(aki) > 0 && der_len > 0) {
    CBS_init(&cbs, der, (size_t)der_len);
    if (CBS_get_asn1(&cbs, &serial, CBS_ASN1_INTEGER) && CBS_len(&serial) > 0) {
      char *a = gh_b64url_encode(ASN1_STRING_get0_data(aki), (size_t)ASN1_STRING_length(aki));
      char *s = gh_b64url_encode(CBS_data(&serial), CBS_len(&serial));
      out = gh_asprintf("%s.%s", a, s);
      gh_free(a);
      gh_free(s);
    }
  }
  OPENSSL_free(der);
  X509_free(x);
  return out;
}

int acme__ari_parse(time_t *out_start, time_t *out_end, char **out_explanation, const char *body,
                    size_t body_len) {
  *out_explanation = NULL;
  cJSON *root = cJSON_ParseWithLength(body, body_len);
  const cJSON *w = cJSON_GetObjectItemCaseSensitive(root, "suggestedWindow");
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(w, "start");
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(w, "end");
  int rc = -1;
  if (cJSON_IsObject(w) && cJSON_IsString(s) && cJSON_IsString(e) &&
      acme__time_parse(s->valuestring, out_start) == 0 &&
      acme__time_parse(e->valuestring, out_end) == 0 && *out_end > *out_start) {
    rc = 0;
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, "explanationURL");
    if (cJSON_IsString(x) && strlen(x->valuestring) < 2048)
      *out_explanation = gh_strdup(x->valuestring);
  }
  cJSON_Delete(root);
  return rc;
}

time_t acme__ari_pick(time_t start, time_t end, time_t now) {
  if (end <= now) return now; /* the window has passed: renew now */
  if (start < now) start = now;
  uint64_t span = (uint64_t)(end - start), r = 0;
  RAND_bytes((uint8_t *)&r, sizeof(r));
  return start + (time_t)(span ? r % (span + 1) : 0);
}
