/* manager_internal.h: what the manager's files share — manager.c (life
 * cycle and managed sites), manager_renew.c (renewal scheduling and ARI)
 * and manager_ondemand.c (the on-demand queue). Nothing else includes
 * it. */
#ifndef GH_ACME_MANAGER_INTERNAL_H
#define GH_ACME_MANAGER_INTERNAL_H

#include <pthread.h>

#include "acme/manager.h"

/* A managed site (see manager.h). */
typedef struct {
  acme_manager_t *m;
  const conf_site_t *site;
  uv_timer_t retry;
  uint64_t backoff_ms;
  int ordering; /* an order is in flight */
} acme__site_t;

struct acme__renewal;
struct acme__od_job;

struct acme_manager {
  uv_loop_t *loop;
  const conf_t *conf;
  acme_engine_t *engine;
  acme_storage_t *storage;
  acme_cache_t *cache;
  int stopping;
  acme__site_t *sites;
  size_t num_sites;
  /* On-demand names (manager_ondemand.c). */
  int ondemand;
  acme_manager_hooks_t hooks;
  acme_policy_t *policy;
  struct acme__od_job *od_queue; /* waiting for an order slot */
  struct acme__od_job *od_parked; /* waiting for another node of the fleet */
  unsigned od_inflight;
  /* Renewal (manager_renew.c). */
  struct acme__renewal *renewals;
  int ari_unsupported; /* the CA's directory has no renewalInfo */
  uv_timer_t renew_timer; /* for the earliest renewal or expiry log */
  /* Other threads read the schedule (acme_manager_renewal_view): the
   * list's links and each entry's |pub| change under it. */
  pthread_mutex_t sched_mu;
};

/* acme__manager_covers reports whether |cert| names every host of
 * |site|. */
int acme__manager_covers(const acme_cert_t *cert, const conf_site_t *site);

/* acme__manager_stored_revoked reports whether |name|'s stored certificate
 * is marked revoked in its meta.json. */
int acme__manager_stored_revoked(acme_manager_t *m, const char *name);

/* acme__manager_site_of returns the managed site stored as |name|, or
 * NULL. */
acme__site_t *acme__manager_site_of(acme_manager_t *m, const char *name);

/* acme__manager_track schedules the renewal of |cert|, just installed (or
 * found in storage) as |name|: for |site|, or on-demand when |site| is
 * NULL. A back-off stored with the certificate is resumed. Does nothing
 * while stopping. */
void acme__manager_track(acme_manager_t *m, const char *name, acme__site_t *site,
                         const acme_cert_t *cert);

/* acme__manager_track_stored schedules the renewal of every on-demand
 * certificate in storage (every stored name that is not a managed site's
 * and not scheduled yet). */
void acme__manager_track_stored(acme_manager_t *m);

/* acme__manager_renewals_free frees the renewals once the loop has
 * stopped. */
void acme__manager_renewals_free(acme_manager_t *m);

/* acme__manager_od_wake finishes, as ok, the on-demand jobs for |name|
 * that wait for another node of the fleet, once |cert| (installed by the
 * caller) arrived. */
void acme__manager_od_wake(acme_manager_t *m, const char *name, acme_cert_t *cert);

/* acme__manager_od_retry puts the jobs for |name| that wait for another
 * node back in the order queue: that node's lock went without a
 * certificate (it failed, or died with its lease). */
void acme__manager_od_retry(acme_manager_t *m, const char *name);

/* acme__manager_tracked returns the certificate |name|'s renewal follows
 * (no reference), or NULL. */
const acme_cert_t *acme__manager_tracked(acme_manager_t *m, const char *name);

/* acme__manager_ondemand_stop finishes, as not ok, every on-demand name
 * still waiting for an order slot. */
void acme__manager_ondemand_stop(acme_manager_t *m);

#endif
