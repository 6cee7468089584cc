/* manager_ondemand.c: the on-demand names the data plane posts (see
 * manager.h): a stored certificate or the policy's decision, then a slot
 * among the orders in flight, then the outcome back through the hooks. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "acme/manager_internal.h"
#include "common/common.h"
#include "common/log.h"

/* On-demand orders in flight at once; more wait in a queue. It keeps a
 * burst of new names from flooding the CA: Pebble 2.4 deadlocks when
 * dozens of challenges are answered at the same moment, and a public CA
 * would rather see a steady stream too. Waiting costs little: an order
 * takes about 100 ms against a local CA. */
#define ORDERS_IN_FLIGHT 4

typedef struct acme__od_job {
  acme_manager_t *m;
  acme_cert_t *stored; /* a usable stored certificate, or NULL */
  uint64_t start_ms;
  int ordering;              /* holds one of the ORDERS_IN_FLIGHT slots */
  struct acme__od_job *next; /* in m->od_queue while waiting for a slot */
  char name[];
} od_job_t;

static void od_order_next(acme_manager_t *m);

/* od_done answers |job|: |ok|, or not with |why| (NULL: cancelled). */
static void od_done(od_job_t *job, int ok, const char *why) {
  acme_manager_t *m = job->m;
  m->hooks.ondemand_done(m->hooks.arg, job->name, ok, why);
  acme_cert_unref(job->stored);
  int freed_slot = job->ordering;
  gh_free(job);
  if (freed_slot) {
    m->od_inflight--;
    od_order_next(m);
  }
}

static void od_install(od_job_t *job, acme_cert_t *cert, const char *how) {
  acme_manager_t *m = job->m;
  acme_cache_install_name(m->cache, job->name, cert, m->conf->on_demand.cache_capacity);
  char t[32];
  GH_INFO("ondemand", "%s: certificate %s in %llu ms (valid until %s)", job->name, how,
          (unsigned long long)(uv_now(m->loop) - job->start_ms),
          gh_format_time(t, sizeof(t), cert->not_after));
  acme__manager_track(m, job->name, NULL, cert);
}

static void od_obtained(void *arg, int status, const char *err, acme_cert_t *cert) {
  od_job_t *job = arg;
  if (status != 0) {
    const char *why = err ? err : uv_strerror(status);
    if (status != UV_ECANCELED) GH_WARN("ondemand", "%s: not obtained: %s", job->name, why);
    od_done(job, 0, status != UV_ECANCELED ? why : NULL);
    return;
  }
  od_install(job, cert, "obtained");
  od_done(job, 1, NULL);
}

static void od_decided(void *arg, int allowed, const char *reason) {
  od_job_t *job = arg;
  acme_manager_t *m = job->m;
  if (m->policy != NULL && m->hooks.policy_stats != NULL) {
    acme_policy_stats_t st;
    acme_policy_stats(m->policy, &st);
    m->hooks.policy_stats(m->hooks.arg, &st);
  }
  /* ACME_POLICY_ALLOWED, or ACME_POLICY_STORED_ONLY (ask is down and a
   * stored certificate exists: serve it, order nothing); refused or
   * cancelled (UV_ECANCELED, the policy is shutting down) otherwise. */
  if (allowed != ACME_POLICY_ALLOWED && allowed != ACME_POLICY_STORED_ONLY) {
    if (allowed != UV_ECANCELED)
      GH_INFO("ondemand", "%s: refused: %s", job->name, reason ? reason : "-");
    od_done(job, 0, allowed != UV_ECANCELED ? (reason ? reason : "refused") : NULL);
    return;
  }
  if (job->stored != NULL || allowed == ACME_POLICY_STORED_ONLY) {
    if (job->stored == NULL) { /* cannot happen: STORED_ONLY needs have_stored */
      od_done(job, 0, "no stored certificate");
      return;
    }
    od_install(job, job->stored, "loaded from storage");
    od_done(job, 1, NULL);
    return;
  }
  /* Wait for a slot, in arrival order. */
  job->next = NULL;
  od_job_t **tail = &m->od_queue;
  while (*tail) tail = &(*tail)->next;
  *tail = job;
  od_order_next(m);
}

/* od_order_next starts queued orders while slots are free. */
static void od_order_next(acme_manager_t *m) {
  while (m->od_queue != NULL && m->od_inflight < ORDERS_IN_FLIGHT) {
    od_job_t *job = m->od_queue;
    m->od_queue = job->next;
    const char *names[1] = {job->name};
    int rc = m->stopping ? UV_ECANCELED : acme_engine_obtain(m->engine, names, 1, od_obtained, job);
    if (rc != 0) {
      if (rc != UV_ECANCELED)
        GH_WARN("ondemand", "%s: cannot start an order: %s", job->name, uv_strerror(rc));
      od_done(job, 0, rc != UV_ECANCELED ? "cannot start an order" : NULL);
      continue;
    }
    job->ordering = 1;
    m->od_inflight++;
  }
}

void acme_manager_ondemand(acme_manager_t *m, const char *name, const char *client_ip) {
  if (!m->ondemand) return; /* nobody to answer */
  size_t len = strlen(name);
  od_job_t *job = gh_calloc(1, sizeof(*job) + len + 1);
  memcpy(job->name, name, len + 1);
  job->m = m;
  job->start_ms = uv_now(m->loop);
  if (m->stopping || m->policy == NULL) {
    od_done(job, 0, m->stopping ? NULL : "the on-demand policy could not be built");
    return;
  }
  /* A usable stored certificate is loaded (the policy is still asked
   * first, without spending an order from the rate limits); otherwise the
   * policy decides whether to order one. */
  acme_cert_t *cert = NULL;
  char *err = NULL;
  int rc = acme_storage_cert_load(m->storage, &cert, NULL, &err, name);
  if (rc == 0 && cert->not_after > time(NULL) && !acme__manager_stored_revoked(m, name)) {
    job->stored = cert;
  } else {
    if (rc != 0 && rc != -ENOENT) GH_WARN("ondemand", "%s: %s: ordering a new one", name, err);
    acme_cert_unref(cert);
  }
  gh_free(err);
  rc = acme_policy_decide(m->policy, name, client_ip, job->stored != NULL, job->stored == NULL,
                          od_decided, job);
  if (rc != 0) {
    GH_WARN("ondemand", "%s: policy: %s", name, uv_strerror(rc));
    od_done(job, 0, uv_strerror(rc));
  }
}

void acme__manager_ondemand_stop(acme_manager_t *m) {
  while (m->od_queue != NULL) { /* never started: nothing to cancel */
    od_job_t *job = m->od_queue;
    m->od_queue = job->next;
    od_done(job, 0, NULL);
  }
}
