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
  struct acme__od_job *next; /* in m->od_queue while waiting for a slot, or in
                                m->od_parked while another node orders it */
  uv_timer_t *deadline;      /* while parked: the end of the wait budget */
  char name[];
} od_job_t;

static void od_order_next(acme_manager_t *m);
static int od_gate(void *arg, const char *const *names, size_t num_names, char **out_why);

static void free_handle(uv_handle_t *h) { gh_free(h); }

/* od_unpark takes |job| off the parked list and stops its deadline. */
static void od_unpark(od_job_t *job) {
  acme_manager_t *m = job->m;
  for (od_job_t **p = &m->od_parked; *p != NULL; p = &(*p)->next) {
    if (*p == job) {
      *p = job->next;
      break;
    }
  }
  job->next = NULL;
  if (job->deadline != NULL) {
    uv_close((uv_handle_t *)job->deadline, free_handle);
    job->deadline = NULL;
  }
}

/* fleet_shares reports whether a refusal for |why| is the name's own, so
 * the fleet's other nodes should not retry it for on_demand.negative_ttl
 * either: the ask endpoint's no, the per-domain and global limits, and
 * orders that failed. Not a refusal because of one client (its per-IP
 * limit), of this node (its store or the ask endpoint unreachable, its
 * capacity), or one that came from the fleet already. */
static int fleet_shares(const char *why) {
  static const char *const prefixes[] = {"ask refused", "rate limit per_domain",
                                         "rate limit global", "acme:"};
  for (size_t i = 0; i < GH_ARRAY_LEN(prefixes); i++)
    if (strncmp(why, prefixes[i], strlen(prefixes[i])) == 0) return 1;
  return 0;
}

/* od_done answers |job|: |ok|, or not with |why| (NULL: cancelled). */
static void od_done(od_job_t *job, int ok, const char *why) {
  acme_manager_t *m = job->m;
  if (job->deadline != NULL) od_unpark(job);
  if (!ok && why != NULL && acme_storage_shared(m->storage) && fleet_shares(why)) {
    char *err = NULL;
    if (acme_storage_refusal_put(m->storage, &err, job->name, why,
                                 m->conf->on_demand.negative_ttl_ms) != 0) {
      GH_DEBUG("fleet", "%s: refusal not shared: %s", job->name, err);
      gh_free(err);
    }
  }
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

static void od_on_deadline(uv_timer_t *t) {
  od_job_t *job = t->data;
  GH_WARN("fleet", "%s: another node is ordering it and did not finish within the wait budget",
          job->name);
  od_done(job, 0, "another node of the fleet is ordering it and did not finish in time");
}

/* od_park makes |job|, whose name another node of the fleet holds the
 * order lock on, wait for that node's certificate (acme__manager_od_wake,
 * from the store's watch) or for the lock to go (acme__manager_od_retry),
 * within the wait budget, and gives its order slot to the next name. */
static void od_park(od_job_t *job) {
  acme_manager_t *m = job->m;
  job->ordering = 0;
  m->od_inflight--;
  /* The certificate may have arrived before this answer did. */
  acme_cert_t *cert = NULL;
  char *err = NULL;
  if (acme_storage_cert_load(m->storage, &cert, NULL, &err, job->name) == 0 &&
      cert->not_after > time(NULL) && !acme__manager_stored_revoked(m, job->name)) {
    od_install(job, cert, "stored by another node");
    acme_cert_unref(cert);
    gh_free(err);
    od_done(job, 1, NULL);
    od_order_next(m);
    return;
  }
  acme_cert_unref(cert);
  gh_free(err);
  uint64_t waited = uv_now(m->loop) - job->start_ms, budget = m->conf->on_demand.wait_budget_ms;
  GH_INFO("fleet", "%s: ordered by another node; waiting for its certificate", job->name);
  job->next = m->od_parked;
  m->od_parked = job;
  job->deadline = gh_malloc(sizeof(*job->deadline));
  uv_timer_init(m->loop, job->deadline);
  job->deadline->data = job;
  uv_timer_start(job->deadline, od_on_deadline, waited < budget ? budget - waited : 0, 0);
  od_order_next(m);
}

/* od_take_parked unparks the jobs waiting for |name| and returns them as
 * a list (through ->next), oldest last. */
static od_job_t *od_take_parked(acme_manager_t *m, const char *name) {
  od_job_t *taken = NULL, **p = &m->od_parked;
  while (*p != NULL) {
    od_job_t *job = *p;
    if (strcmp(job->name, name) != 0) {
      p = &job->next;
      continue;
    }
    od_unpark(job); /* *p is now the next one */
    job->next = taken;
    taken = job;
  }
  return taken;
}

void acme__manager_od_wake(acme_manager_t *m, const char *name, acme_cert_t *cert) {
  (void)cert; /* installed by the caller */
  od_job_t *job = od_take_parked(m, name);
  while (job != NULL) {
    od_job_t *next = job->next;
    od_done(job, 1, NULL);
    job = next;
  }
}

void acme__manager_od_retry(acme_manager_t *m, const char *name) {
  od_job_t *job = od_take_parked(m, name);
  if (job == NULL) return;
  /* The node that held the lock may have failed for a reason of the
   * name's own: then this node does not order it again either. */
  char *why = NULL, *msg = NULL;
  if (acme_storage_refusal_get(m->storage, &why, name) == 0) {
    msg = gh_asprintf("refused by another node of the fleet: %s", why);
  } else {
    GH_INFO("fleet", "%s: the other node's lock is gone: ordering it here", name);
  }
  while (job != NULL) {
    od_job_t *next = job->next;
    if (msg != NULL) {
      od_done(job, 0, msg);
    } else {
      job->next = NULL;
      od_job_t **tail = &m->od_queue;
      while (*tail) tail = &(*tail)->next;
      *tail = job;
    }
    job = next;
  }
  if (msg == NULL) od_order_next(m);
  gh_free(msg);
  gh_free(why);
}

static void od_obtained(void *arg, int status, const char *err, acme_cert_t *cert) {
  od_job_t *job = arg;
  if (status == UV_EBUSY && acme_storage_shared(job->m->storage) && !job->m->stopping) {
    od_park(job);
    return;
  }
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

/* od_gate charges a fleet's shared on-demand limits (per registered
 * domain, then global) for the order the engine is about to place: only
 * the node that holds the name's lock gets here, so each order is charged
 * once however many nodes were asked for the name. A node's own buckets
 * were charged by its policy already; these make N nodes share one
 * budget. */
static int od_gate(void *arg, const char *const *names, size_t num_names, char **out_why) {
  acme_manager_t *m = arg;
  (void)num_names;
  const conf_on_demand_t *od = &m->conf->on_demand;
  const char *dom;
  size_t dom_len = acme_policy_domain(od, names[0], &dom);
  char *dkey = gh_asprintf("domain/%.*s", (int)dom_len, dom);
  struct {
    const char *key, *what;
    const conf_rate_t *rate;
  } limits[] = {{dkey, "per_domain", &od->rate_per_domain}, {"global", "global", &od->rate_global}};
  int rc = 0;
  for (size_t i = 0; i < GH_ARRAY_LEN(limits) && rc == 0; i++) {
    char *err = NULL;
    int ret = acme_storage_limit_take(m->storage, &err, limits[i].key, limits[i].rate->count,
                                      limits[i].rate->per_ms);
    if (ret == -EDQUOT) {
      *out_why = gh_asprintf("rate limit %s (%u per %llu s) for %s across the fleet: %s",
                             limits[i].what, limits[i].rate->count,
                             (unsigned long long)(limits[i].rate->per_ms / 1000),
                             i == 0 ? dkey + 7 : "all names", err);
      rc = UV_EAGAIN;
    } else if (ret != 0 && m->conf->fleet.issue_when_store_down != CONF_STORE_DOWN_LOCAL) {
      *out_why = gh_asprintf("the fleet's limits could not be read: %s", err);
      rc = UV_EAI_AGAIN;
    }
    gh_free(err);
  }
  gh_free(dkey);
  return rc;
}

/* od_order_next starts queued orders while slots are free. */
static void od_order_next(acme_manager_t *m) {
  while (m->od_queue != NULL && m->od_inflight < ORDERS_IN_FLIGHT) {
    od_job_t *job = m->od_queue;
    m->od_queue = job->next;
    const char *names[1] = {job->name};
    int rc = m->stopping ? UV_ECANCELED
             : acme_storage_shared(m->storage)
                 ? acme_engine_obtain_gated(m->engine, names, 1, od_gate, m, od_obtained, job)
                 : acme_engine_obtain(m->engine, names, 1, od_obtained, job);
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
  if (job->stored == NULL && acme_storage_down(m->storage) &&
      m->conf->fleet.issue_when_store_down == CONF_STORE_DOWN_DENY) {
    /* Without the fleet's lock, every node could order it. */
    static const char why[] = "the fleet's store (etcd) is unreachable and "
                              "fleet.issue_when_store_down is \"deny\"";
    GH_INFO("ondemand", "%s: refused: %s", name, why);
    od_done(job, 0, why);
    return;
  }
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
  while (m->od_parked != NULL) od_done(m->od_parked, 0, NULL);
}
