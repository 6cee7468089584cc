/* ca_state.c: a CA's back-off after failures of its own (issue 16).
 *
 * With several CAs (acme.issuers), an order that fails at one for a reason
 * of the CA's — unreachable, 5xx, rate limited, account paused — moves on
 * to the next, and the CA is skipped by later orders until its back-off
 * ends: 1 minute after the first failure, doubling up to 1 hour, or the
 * CA's own Retry-After when that is longer (capped at a day). An order
 * the CA completes clears it.
 *
 * The back-off is kept in the store beside the CA's accounts, as the
 * pseudo-account "ca-state" (accounts/<ca-host>/ca-state.json): an account
 * id derived from an e-mail address holds an '@', so none can be that.
 * A restarted process, or another node of a fleet, then skips a CA that
 * is down instead of finding out again. */
#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>

#include "acme/engine_internal.h"
#include "common/common.h"
#include "common/log.h"

#define STATE_ID "ca-state"
#define BACKOFF_FIRST_S 60
#define BACKOFF_MAX_S 3600
#define RETRY_AFTER_MAX_S 86400

static void save(acme_ca_t *ca, const char *why) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "backoff_until", (double)atomic_load(&ca->backoff_until));
  cJSON_AddNumberToObject(o, "failures", ca->backoff_failures);
  if (why != NULL) cJSON_AddStringToObject(o, "last_error", why);
  char *text = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  char *err = NULL;
  if (acme_storage_account_save(ca->engine->storage, &err, ca->conf.directory, STATE_ID,
                                (gh_str_t){text, strlen(text)}) != 0) {
    GH_WARN("acme", "CA %s: cannot keep its back-off: %s", ca->name, err);
    gh_free(err);
  }
  free(text);
}

void acme__ca_backoff_load(acme_ca_t *ca) {
  if (ca->backoff_loaded) return;
  ca->backoff_loaded = 1;
  char *json = NULL, *err = NULL;
  if (acme_storage_account_load(ca->engine->storage, &json, &err, ca->conf.directory,
                                STATE_ID) != 0) {
    gh_free(err);
    return;
  }
  cJSON *o = cJSON_Parse(json);
  gh_free(json);
  const cJSON *until = cJSON_GetObjectItemCaseSensitive(o, "backoff_until");
  const cJSON *fails = cJSON_GetObjectItemCaseSensitive(o, "failures");
  time_t now = time(NULL);
  /* A stored time more than a day ahead is not ours to believe. */
  if (cJSON_IsNumber(until) && until->valuedouble > (double)now &&
      until->valuedouble <= (double)(now + RETRY_AFTER_MAX_S)) {
    atomic_store(&ca->backoff_until, (int64_t)until->valuedouble);
    if (cJSON_IsNumber(fails) && fails->valuedouble >= 0 && fails->valuedouble < 64)
      ca->backoff_failures = (unsigned)fails->valuedouble;
    const char *why = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "last_error"));
    GH_INFO("acme", "CA %s is backing off for %lld s yet (stored; last error: %s)", ca->name,
            (long long)(until->valuedouble - (double)now), why ? why : "?");
  }
  cJSON_Delete(o);
}

void acme__ca_failed(acme_ca_t *ca, uint64_t retry_after_ms, const char *why) {
  if (ca->engine->num_cas < 2) return; /* nowhere else to go: the callers' back-off rules */
  uint64_t s = (uint64_t)BACKOFF_FIRST_S << (ca->backoff_failures < 6 ? ca->backoff_failures : 6);
  if (s > BACKOFF_MAX_S) s = BACKOFF_MAX_S;
  uint64_t ra = retry_after_ms / 1000;
  if (ra > RETRY_AFTER_MAX_S) ra = RETRY_AFTER_MAX_S;
  if (ra > s) s = ra;
  ca->backoff_failures++;
  time_t until = time(NULL) + (time_t)s;
  if (until > atomic_load(&ca->backoff_until)) atomic_store(&ca->backoff_until, (int64_t)until);
  GH_WARN("acme", "CA %s: backing off for %" PRIu64 " s (failure %u in a row): %s", ca->name, s,
          ca->backoff_failures, why ? why : "?");
  save(ca, why);
}

void acme__ca_ok(acme_ca_t *ca) {
  if (ca->backoff_failures == 0 && atomic_load(&ca->backoff_until) == 0) return;
  ca->backoff_failures = 0;
  atomic_store(&ca->backoff_until, 0);
  if (ca->engine->num_cas > 1) save(ca, NULL);
}
