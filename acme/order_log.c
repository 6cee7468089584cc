/* order_log.c: the last orders the engine finished, for the admin API's
 * /acme (what an operator looks at first when certificates are not
 * coming: which CA, which challenge, what it said). A ring of
 * ACME_ORDER_LOG entries, written on the control thread and copied out by
 * the main thread, under the engine's log_mu; each entry owns its
 * strings. */
#include <string.h>

#include "acme/engine_internal.h"
#include "common/common.h"

static void event_clear(acme_order_event_t *ev) {
  for (size_t i = 0; i < ev->num_names; i++) gh_free(ev->names[i]);
  gh_free(ev->names);
  gh_free(ev->ca);
  gh_free(ev->error);
  memset(ev, 0, sizeof(*ev));
}

static void event_copy(acme_order_event_t *dst, const acme_order_event_t *src) {
  *dst = *src;
  dst->names = gh_calloc(src->num_names ? src->num_names : 1, sizeof(char *));
  for (size_t i = 0; i < src->num_names; i++) dst->names[i] = gh_strdup(src->names[i]);
  dst->ca = src->ca ? gh_strdup(src->ca) : NULL;
  dst->error = src->error ? gh_strdup(src->error) : NULL;
}

void acme__order_log_add(acme_engine_t *e, const acme_job_t *job, int status, const char *err) {
  acme_order_event_t ev = {
      .at = time(NULL),
      .names = job->names,
      .num_names = job->num_names,
      .ca = job->ca ? job->ca->name : NULL,
      .renewal = job->renewal,
      .challenge = acme__job_stats_chall(job),
      .ok = status == 0,
      .error = status == 0 ? NULL : (char *)(err ? err : "unknown error"),
      .duration_ms = gh_now_ms() - job->started_ms,
  };
  acme_order_event_t copy;
  event_copy(&copy, &ev); /* outside the lock */
  pthread_mutex_lock(&e->log_mu);
  acme_order_event_t *slot = &e->log[e->log_next];
  acme_order_event_t old = *slot;
  *slot = copy;
  e->log_next = (e->log_next + 1) % ACME_ORDER_LOG;
  if (e->log_num < ACME_ORDER_LOG) e->log_num++;
  pthread_mutex_unlock(&e->log_mu);
  event_clear(&old);
}

size_t acme_engine_recent_orders(acme_engine_t *engine, acme_order_event_t *out, size_t max) {
  if (engine == NULL) return 0;
  pthread_mutex_lock(&engine->log_mu);
  size_t n = engine->log_num < max ? engine->log_num : max;
  for (size_t i = 0; i < n; i++) {
    size_t k = (engine->log_next + ACME_ORDER_LOG - 1 - i) % ACME_ORDER_LOG;
    event_copy(&out[i], &engine->log[k]);
  }
  pthread_mutex_unlock(&engine->log_mu);
  return n;
}

void acme_order_events_free(acme_order_event_t *events, size_t num) {
  for (size_t i = 0; i < num; i++) event_clear(&events[i]);
}

void acme__order_log_free(acme_engine_t *e) {
  for (size_t i = 0; i < ACME_ORDER_LOG; i++) event_clear(&e->log[i]);
  pthread_mutex_destroy(&e->log_mu);
}
