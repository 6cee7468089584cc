/* manager.c: the manager's life cycle and its managed sites (see
 * manager.h). Renewal is in manager_renew.c, on-demand names in
 * manager_ondemand.c. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "acme/manager_internal.h"
#include "common/common.h"
#include "common/log.h"

#define BACKOFF_MIN_MS (60 * 1000)
#define BACKOFF_MAX_MS (60 * 60 * 1000)

/* ---- managed sites ---- */

static void obtain(acme__site_t *ms);

static void on_retry(uv_timer_t *t) {
  acme__site_t *ms = t->data;
  if (!ms->m->stopping) obtain(ms);
}

static void schedule_retry(acme__site_t *ms) {
  if (ms->m->stopping) return;
  ms->backoff_ms = ms->backoff_ms == 0 ? BACKOFF_MIN_MS : ms->backoff_ms * 2;
  if (ms->backoff_ms > BACKOFF_MAX_MS) ms->backoff_ms = BACKOFF_MAX_MS;
  GH_INFO("acme", "%s: next attempt in %llus", ms->site->hosts[0],
          (unsigned long long)(ms->backoff_ms / 1000));
  uv_timer_start(&ms->retry, on_retry, ms->backoff_ms, 0);
}

static void on_obtained(void *arg, int status, const char *err, acme_cert_t *cert) {
  acme__site_t *ms = arg;
  ms->ordering = 0;
  if (status == UV_ECANCELED && ms->m->stopping) return;
  if (status == UV_EBUSY && acme_storage_shared(ms->m->storage)) {
    /* Another node of the fleet orders it: its certificate comes through
     * the watch (acme_manager_fleet_cert), which cancels this retry. */
    GH_INFO("fleet", "%s: ordered by another node; waiting for its certificate",
            ms->site->hosts[0]);
    schedule_retry(ms);
    return;
  }
  if (status != 0) {
    GH_ERROR("acme", "%s: %s", ms->site->hosts[0], err ? err : uv_strerror(status));
    schedule_retry(ms);
    return;
  }
  ms->backoff_ms = 0;
  acme_cache_install_site(ms->m->cache, ms->site, cert);
  char t[32];
  GH_INFO("acme", "%s: certificate from %s installed (valid until %s)", ms->site->hosts[0],
          cert->issuer_cn ? cert->issuer_cn : "?", gh_format_time(t, sizeof(t), cert->not_after));
  acme__manager_track(ms->m, ms->site->hosts[0], ms, cert);
}

static void obtain(acme__site_t *ms) {
  if (ms->ordering) return;
  int rc = acme_engine_obtain(ms->m->engine, (const char *const *)ms->site->hosts,
                              ms->site->num_hosts, on_obtained, ms);
  if (rc != 0) {
    GH_ERROR("acme", "%s: cannot start an order: %s", ms->site->hosts[0], uv_strerror(rc));
    schedule_retry(ms);
    return;
  }
  ms->ordering = 1;
}

int acme__manager_covers(const acme_cert_t *cert, const conf_site_t *site) {
  return acme_cert_covers(cert, (const char *const *)site->hosts, site->num_hosts);
}

int acme__manager_stored_revoked(acme_manager_t *m, const char *name) {
  acme_renewal_state_t st;
  return acme_renewal_state_load(m->storage, &st, name) == 0 && st.revoked;
}

acme__site_t *acme__manager_site_of(acme_manager_t *m, const char *name) {
  for (size_t i = 0; i < m->num_sites; i++)
    if (strcmp(m->sites[i].site->hosts[0], name) == 0) return &m->sites[i];
  return NULL;
}

/* start_site installs the stored certificate of |ms| if it is usable, and
 * otherwise orders one. */
static void start_site(acme__site_t *ms) {
  acme_manager_t *m = ms->m;
  const char *name = ms->site->hosts[0];
  acme_cert_t *cert = NULL;
  char *err = NULL;
  int rc = acme_storage_cert_load(m->storage, &cert, NULL, &err, name);
  if (rc == 0) {
    int covers = acme__manager_covers(cert, ms->site);
    if (cert->not_after > time(NULL) && covers && !acme__manager_stored_revoked(m, name)) {
      acme_cache_install_site(m->cache, ms->site, cert);
      char t[32];
      GH_INFO("acme", "%s: stored certificate installed (valid until %s)", name,
              gh_format_time(t, sizeof(t), cert->not_after));
      acme__manager_track(m, name, ms, cert);
      acme_cert_unref(cert);
      return;
    }
    if (covers) {
      /* Expired or revoked: renewing it resumes any back-off stored with
       * it, so a restart loop cannot hammer the CA. */
      GH_INFO("acme", "%s: the stored certificate has expired or was revoked: renewing", name);
      acme__manager_track(m, name, ms, cert);
      acme_cert_unref(cert);
      return;
    }
    GH_INFO("acme", "%s: the stored certificate misses a name: ordering", name);
  } else if (rc != -ENOENT) {
    GH_WARN("acme", "%s: %s: ordering a new certificate", name, err);
  }
  gh_free(err);
  acme_cert_unref(cert);
  obtain(ms);
}

/* site_is_managed reports whether the manager orders |site|'s
 * certificate. */
static int site_is_managed(const conf_site_t *site) {
  if (site->cert_file != NULL || site->num_hosts == 0) return 0;
  /* "*" is for on-demand certificates, which are a later issue. */
  for (size_t i = 0; i < site->num_hosts; i++) {
    if (strcmp(site->hosts[i], "*") == 0) return 0;
  }
  return 1;
}

/* ---- life cycle ---- */

static void free_handle(uv_handle_t *h) { gh_free(h); }

static void on_start(uv_timer_t *t) {
  acme_manager_t *m = t->data;
  uv_close((uv_handle_t *)t, free_handle);
  for (size_t i = 0; i < m->num_sites && !m->stopping; i++) start_site(&m->sites[i]);
  if (m->ondemand && m->conf->on_demand.enabled && !m->stopping) acme__manager_track_stored(m);
}

acme_manager_t *acme_manager_new(uv_loop_t *loop, const conf_t *conf, acme_engine_t *engine,
                                 acme_storage_t *storage, acme_cache_t *cache,
                                 const acme_manager_hooks_t *ondemand) {
  acme_manager_t *m = gh_calloc(1, sizeof(*m));
  pthread_mutex_init(&m->sched_mu, NULL);
  m->loop = loop;
  m->conf = conf;
  m->engine = engine;
  m->storage = storage;
  m->cache = cache;
  m->sites = gh_calloc(conf->num_sites ? conf->num_sites : 1, sizeof(acme__site_t));
  for (size_t i = 0; i < conf->num_sites; i++) {
    if (!site_is_managed(&conf->sites[i])) continue;
    acme__site_t *ms = &m->sites[m->num_sites++];
    ms->m = m;
    ms->site = &conf->sites[i];
    uv_timer_init(loop, &ms->retry);
    ms->retry.data = ms;
  }
  uv_timer_init(loop, &m->renew_timer);
  m->renew_timer.data = m;
  if (ondemand != NULL) {
    m->ondemand = 1;
    m->hooks = *ondemand;
    char *perr = NULL;
    m->policy = acme_policy_new(&perr, loop, &conf->on_demand,
                                (const char *const *)conf->acme.ca_roots, conf->acme.num_ca_roots,
                                ondemand->limits);
    if (m->policy == NULL) {
      GH_ERROR("ondemand", "on-demand certificates are off: %s", perr);
      gh_free(perr);
    }
  }
  /* The first orders start from the loop, on its thread. */
  uv_timer_t *start = gh_malloc(sizeof(*start));
  uv_timer_init(loop, start);
  start->data = m;
  uv_timer_start(start, on_start, 0, 0);
  conf_issuer_t first;
  conf_issuer(conf, 0, &first);
  size_t num_cas = conf_num_issuers(conf);
  GH_INFO("acme", "control thread: %zu managed site(s), CA %s%s", m->num_sites, first.directory,
          num_cas > 1 ? " (then the other acme.issuers in turn)" : "");
  return m;
}

void acme_manager_stop(acme_manager_t *m) {
  m->stopping = 1;
  /* Decisions in flight end with UV_ECANCELED, from the loop. */
  acme_policy_free(m->policy);
  m->policy = NULL;
  acme__manager_ondemand_stop(m);
  for (size_t i = 0; i < m->num_sites; i++) uv_close((uv_handle_t *)&m->sites[i].retry, NULL);
  uv_close((uv_handle_t *)&m->renew_timer, NULL);
}

void acme_manager_free(acme_manager_t *m) {
  if (m == NULL) return;
  acme__manager_renewals_free(m);
  pthread_mutex_destroy(&m->sched_mu);
  gh_free(m->sites);
  gh_free(m);
}
