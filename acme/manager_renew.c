/* manager_renew.c: renewal scheduling and ACME Renewal Information (RFC
 * 9773) for every certificate the manager installed (see manager.h). Each
 * certificate has one renewal entry: when to renew it, its failures (also
 * kept in its meta.json), and when to ask the CA about it next; one timer
 * fires for the earliest event of any entry. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "acme/manager_internal.h"
#include "common/common.h"
#include "common/log.h"

#define RENEW_BACKOFF_MIN_S 60
#define RENEW_BACKOFF_MAX_S (6 * 3600)
#define EXPIRED_LOG_EVERY_S 3600
#define RENEW_TIMER_CAP_S (24 * 3600) /* the wall clock may jump: look again daily */

typedef struct acme__renewal {
  struct acme__renewal *next;
  acme_manager_t *m;
  char *name;       /* the storage name */
  acme__site_t *ms; /* the managed site, or NULL for an on-demand name */
  time_t not_before, not_after;
  time_t due;            /* the next attempt */
  time_t expired_logged; /* the last EXPIRED error, 0: none */
  acme_renewal_state_t state;
  int ordering;
  acme_cert_t *cert;  /* the certificate to renew (a reference) */
  time_t ari_next;    /* when to ask for renewal information, 0: never */
  int ari_inflight;   /* a renewalInfo request is out */
  int ari_stale;      /* |cert| changed while it was out */
  acme_renew_source_t source; /* why |due| is when it is */
  time_t ari_start, ari_end;  /* the CA's last suggested window */
  acme_renewal_view_t pub;    /* what other threads see; under m->sched_mu */
} renewal_t;

static uint64_t random_below(uint64_t n) {
  uint64_t r = 0;
  RAND_bytes((uint8_t *)&r, sizeof(r));
  return n ? r % n : 0;
}

/* renewal_time is when a certificate valid from |nb| to |na| is renewed:
 * with a third of its real lifetime left (a 6-day certificate after 4
 * days, a 90-day one after 60; issue 16), less a jitter
 * of up to a tenth of that (at most an hour), so that certificates issued
 * together are not all renewed in the same second. */
static time_t renewal_time(time_t nb, time_t na) {
  time_t life = na - nb;
  if (life <= 0) return na;
  time_t left = na - acme_renewal_nominal(nb, na);
  uint64_t spread = (uint64_t)left / 10;
  if (spread > 3600) spread = 3600;
  return na - left - (time_t)random_below(spread + 1);
}

static void on_renew_timer(uv_timer_t *t);

/* next_event is when |e| next needs the timer: its renewal, or its
 * expiry (the next EXPIRED error), whichever comes first. */
static time_t next_event(const renewal_t *e) {
  time_t t = e->ordering ? 0 : e->due;
  time_t x = e->expired_logged ? e->expired_logged + EXPIRED_LOG_EVERY_S : e->not_after;
  if (t == 0 || x < t) t = x;
  if (e->ari_next != 0 && !e->ari_inflight && !e->ordering && e->ari_next < t) t = e->ari_next;
  return t;
}

/* renew_arm starts the one timer for the earliest event of any renewal.
 * Every change to a schedule ends here, so it also publishes them. */
static void renew_arm(acme_manager_t *m) {
  if (m->stopping) return;
  pthread_mutex_lock(&m->sched_mu);
  for (renewal_t *e = m->renewals; e != NULL; e = e->next) {
    int ari = e->source == ACME_RENEW_ARI;
    e->pub = (acme_renewal_view_t){e->due, e->source, ari ? e->ari_start : 0,
                                   ari ? e->ari_end : 0, e->ordering};
  }
  pthread_mutex_unlock(&m->sched_mu);
  time_t now = time(NULL), next = 0;
  for (renewal_t *e = m->renewals; e != NULL; e = e->next) {
    time_t t = next_event(e);
    if (t != 0 && (next == 0 || t < next)) next = t;
  }
  if (next == 0) {
    uv_timer_stop(&m->renew_timer);
    return;
  }
  uint64_t delay_s = next > now ? (uint64_t)(next - now) : 0;
  if (delay_s > RENEW_TIMER_CAP_S) delay_s = RENEW_TIMER_CAP_S;
  uv_timer_start(&m->renew_timer, on_renew_timer, delay_s * 1000, 0);
}

void acme__manager_track(acme_manager_t *m, const char *name, acme__site_t *ms,
                         const acme_cert_t *cert) {
  if (m->stopping) return;
  renewal_t *e = m->renewals;
  while (e != NULL && strcmp(e->name, name) != 0) e = e->next;
  if (e == NULL) {
    e = gh_calloc(1, sizeof(*e));
    e->m = m;
    e->name = gh_strdup(name);
    pthread_mutex_lock(&m->sched_mu);
    e->next = m->renewals;
    m->renewals = e;
    pthread_mutex_unlock(&m->sched_mu);
  }
  e->ms = ms;
  acme_cert_unref(e->cert);
  e->cert = acme_cert_ref((acme_cert_t *)cert);
  e->ari_stale = e->ari_inflight;
  e->ari_next = m->ari_unsupported ? 0 : time(NULL); /* ask the CA first */
  e->not_before = cert->not_before;
  e->not_after = cert->not_after;
  e->expired_logged = 0;
  e->due = renewal_time(cert->not_before, cert->not_after);
  e->source = ACME_RENEW_LIFETIME;
  acme_renewal_state_load(m->storage, &e->state, name);
  char t1[32], t2[32];
  if (e->state.revoked && e->state.failures == 0) {
    e->due = time(NULL);
    e->source = ACME_RENEW_REVOKED;
    GH_WARN("acme", "%s: the certificate was revoked: renewing now", name);
  } else if (e->state.failures > 0 && e->state.next_retry != 0) {
    e->due = e->state.next_retry;
    e->source = ACME_RENEW_RETRY;
    GH_WARN("acme", "%s: %u renewal(s) failed (last: %s); next attempt at %s", name,
            e->state.failures, e->state.last_error, gh_format_time(t1, sizeof(t1), e->due));
  } else {
    time_t now = time(NULL);
    GH_INFO("acme", "%s: renewal scheduled at %s (in %llds; valid until %s)", name,
            gh_format_time(t1, sizeof(t1), e->due), (long long)(e->due > now ? e->due - now : 0),
            gh_format_time(t2, sizeof(t2), e->not_after));
  }
  renew_arm(m);
}

/* retry_after_s finds the CA's Retry-After in an engine message about a
 * rate limit (acme_engine_obtain's UV_EAGAIN: "... (retry after N s)"). */
static uint64_t retry_after_s(const char *err) {
  const char *p = err ? strstr(err, "(retry after ") : NULL;
  unsigned long long s;
  if (p == NULL || sscanf(p, "(retry after %llu s)", &s) != 1) return 0;
  return s;
}

/* renew_failed records a failed renewal of |e| and schedules the next. */
static void renew_failed(renewal_t *e, int status, const char *err) {
  acme_manager_t *m = e->m;
  time_t now = time(NULL);
  e->state.failures++;
  unsigned n = e->state.failures < 20 ? e->state.failures : 20;
  uint64_t delay = (uint64_t)RENEW_BACKOFF_MIN_S << (n - 1);
  if (delay > RENEW_BACKOFF_MAX_S) delay = RENEW_BACKOFF_MAX_S;
  delay -= random_below(delay / 4 + 1); /* jitter: up to a quarter earlier */
  /* Never sleep past the expiry less a margin while it can still help. */
  time_t life = e->not_after - e->not_before;
  time_t margin = life / 10 < 3600 ? life / 10 : 3600;
  time_t last_chance = e->not_after - margin;
  if (now < last_chance && now + (time_t)delay > last_chance) delay = (uint64_t)(last_chance - now);
  if (delay < 1) delay = 1;
  /* A rate limit's Retry-After is the CA's to decide. */
  uint64_t ra = status == UV_EAGAIN ? retry_after_s(err) : 0;
  if (ra > delay) delay = ra;
  e->state.next_retry = now + (time_t)delay;
  snprintf(e->state.last_error, sizeof(e->state.last_error), "%s",
           err ? err : uv_strerror(status));
  e->due = e->state.next_retry;
  e->source = ACME_RENEW_RETRY;
  char t[32];
  GH_ERROR("acme", "%s: renewal failed (%u in a row): %s; next attempt at %s (in %llus)", e->name,
           e->state.failures, e->state.last_error, gh_format_time(t, sizeof(t), e->due),
           (unsigned long long)delay);
  char *serr = NULL;
  if (acme_renewal_state_save(m->storage, &serr, e->name, &e->state) != 0) {
    GH_WARN("acme", "%s: cannot store the renewal state: %s", e->name, serr);
    gh_free(serr);
  }
  renew_arm(m);
}

/* install installs |cert| as |e|'s certificate: its site's, or its
 * on-demand name's. */
static void install(renewal_t *e, acme_cert_t *cert) {
  acme_manager_t *m = e->m;
  if (e->ms != NULL) {
    acme_cache_install_site(m->cache, e->ms->site, cert);
  } else {
    acme_cache_install_name(m->cache, e->name, cert, m->conf->on_demand.cache_capacity);
  }
}

static void renewed(void *arg, int status, const char *err, acme_cert_t *cert) {
  renewal_t *e = arg;
  acme_manager_t *m = e->m;
  e->ordering = 0;
  if (m->stopping) return;
  if (status == UV_EBUSY && acme_storage_shared(m->storage)) {
    /* Another node of the fleet renews it: its certificate comes through
     * the watch (acme_manager_fleet_cert), which schedules the next
     * renewal. Not a failure, and nothing written to the shared meta,
     * which that node is about to replace. Look again in a few minutes in
     * case it fails. */
    GH_INFO("fleet", "%s: renewed by another node; waiting for its certificate", e->name);
    e->due = time(NULL) + RENEW_BACKOFF_MIN_S * 5 + (time_t)random_below(RENEW_BACKOFF_MIN_S);
    e->source = ACME_RENEW_FLEET;
    renew_arm(m);
    return;
  }
  if (status != 0) {
    renew_failed(e, status, err);
    return;
  }
  install(e, cert);
  char t[32];
  GH_INFO("acme", "%s: renewed: certificate from %s installed (valid until %s)", e->name,
          cert->issuer_cn ? cert->issuer_cn : "?", gh_format_time(t, sizeof(t), cert->not_after));
  acme__manager_track(m, e->name, e->ms, cert);
}

/* install_newer installs |e|'s stored certificate instead of ordering
 * when storage already holds a newer valid one (another process sharing
 * the storage, such as `gatehouse cert obtain`, renewed it). Returns 1 if
 * it did. */
static int install_newer(renewal_t *e) {
  acme_manager_t *m = e->m;
  acme_cert_t *cert = NULL;
  char *err = NULL;
  int done = 0;
  if (acme_storage_cert_load(m->storage, &cert, NULL, &err, e->name) == 0 &&
      cert->not_after > e->not_after && cert->not_after > time(NULL) &&
      renewal_time(cert->not_before, cert->not_after) > time(NULL) &&
      (e->ms == NULL || acme__manager_covers(cert, e->ms->site)) &&
      !acme__manager_stored_revoked(m, e->name)) {
    install(e, cert);
    char t[32];
    GH_INFO("acme", "%s: a newer stored certificate installed (valid until %s)", e->name,
            gh_format_time(t, sizeof(t), cert->not_after));
    acme__manager_track(m, e->name, e->ms, cert);
    done = 1;
  }
  gh_free(err);
  acme_cert_unref(cert);
  return done;
}

static void renew_start(renewal_t *e) {
  acme_manager_t *m = e->m;
  if (e->ms != NULL && e->ms->ordering) { /* the site's own order will do */
    e->due = time(NULL) + RENEW_BACKOFF_MIN_S;
    return;
  }
  if (install_newer(e)) return;
  const char *one[1] = {e->name};
  const char *const *names = e->ms ? (const char *const *)e->ms->site->hosts : one;
  size_t num_names = e->ms ? e->ms->site->num_hosts : 1;
  char t[32];
  GH_INFO("acme", "%s: renewing (certificate valid until %s)", e->name,
          gh_format_time(t, sizeof(t), e->not_after));
  int rc = acme_engine_renew(m->engine, names, num_names, e->cert, renewed, e);
  if (rc != 0) {
    renew_failed(e, rc, "cannot start an order");
    return;
  }
  e->ordering = 1;
}

static void ari_done(void *arg, int status, const char *err, const acme_ari_t *info) {
  renewal_t *e = arg;
  acme_manager_t *m = e->m;
  e->ari_inflight = 0;
  if (m->stopping) return;
  time_t now = time(NULL);
  if (e->ari_stale) { /* about the certificate before: ask about this one */
    e->ari_stale = 0;
    e->ari_next = now;
  } else if (status == UV_ENOTSUP) {
    m->ari_unsupported = 1;
    e->ari_next = 0;
    GH_DEBUG("acme", "%s: the CA offers no renewal information (ARI)", e->name);
  } else if (status != 0) {
    e->ari_next = now + 3600;
    GH_WARN("acme", "%s: renewal information (ARI): %s; keeping the renewal time", e->name, err);
  } else {
    e->ari_next = now + (time_t)info->retry_after_s;
    char t1[32], t2[32], t3[32];
    e->ari_start = info->start;
    e->ari_end = info->end;
    if (e->state.failures == 0) {
      e->due = info->renew_at;
      e->source = ACME_RENEW_ARI;
    }
    GH_INFO("acme", "%s: ARI suggests renewal between %s and %s: renewal at %s (in %llds)%s%s",
            e->name, gh_format_time(t1, sizeof(t1), info->start),
            gh_format_time(t2, sizeof(t2), info->end),
            gh_format_time(t3, sizeof(t3), e->due), (long long)(e->due > now ? e->due - now : 0),
            info->explanation_url ? "; see " : "",
            info->explanation_url ? info->explanation_url : "");
  }
  renew_arm(m);
}

/* ari_ask asks the CA when to renew |e| (RFC 9773). */
static void ari_ask(renewal_t *e) {
  if (e->m->ari_unsupported || e->cert == NULL) {
    e->ari_next = 0;
    return;
  }
  int rc = acme_engine_renewal_info(e->m->engine, e->cert, ari_done, e);
  if (rc != 0) {
    e->ari_next = 0; /* no ARI identifier (no authority key identifier) */
    return;
  }
  e->ari_inflight = 1;
}

static void on_renew_timer(uv_timer_t *t) {
  acme_manager_t *m = t->data;
  if (m->stopping) return;
  time_t now = time(NULL);
  for (renewal_t *e = m->renewals; e != NULL; e = e->next) {
    if (e->not_after <= now &&
        (e->expired_logged == 0 || now - e->expired_logged >= EXPIRED_LOG_EVERY_S)) {
      char t1[32];
      GH_ERROR("acme", "EXPIRED: %s since %s, not renewed (%u failure(s); last error: %s)",
               e->name, gh_format_time(t1, sizeof(t1), e->not_after), e->state.failures,
               e->state.last_error[0] ? e->state.last_error : "-");
      e->expired_logged = now;
    }
    if (!e->ordering && e->due <= now) renew_start(e);
    if (!e->ordering && !e->ari_inflight && e->ari_next != 0 && e->ari_next <= now) ari_ask(e);
  }
  renew_arm(m);
}

void acme__manager_track_stored(acme_manager_t *m) {
  char **names = NULL, *err = NULL;
  size_t num = 0;
  if (acme_storage_cert_list(m->storage, &names, &num, &err) != 0) {
    GH_WARN("ondemand", "listing stored certificates: %s", err);
    gh_free(err);
    return;
  }
  for (size_t i = 0; i < num; i++) {
    int managed = 0;
    for (size_t k = 0; k < m->num_sites && !managed; k++)
      managed = strcmp(m->sites[k].site->hosts[0], names[i]) == 0;
    renewal_t *e = m->renewals;
    while (e != NULL && strcmp(e->name, names[i]) != 0) e = e->next;
    if (managed || e != NULL) continue;
    acme_cert_t *cert = NULL;
    if (acme_storage_cert_load(m->storage, &cert, NULL, &err, names[i]) == 0)
      acme__manager_track(m, names[i], NULL, cert);
    gh_free(err);
    err = NULL;
    acme_cert_unref(cert);
  }
  acme_storage_names_free(names, num);
}

/* renewal_find returns the renewal of |name|, or NULL. */
static renewal_t *renewal_find(acme_manager_t *m, const char *name) {
  renewal_t *e = m->renewals;
  while (e != NULL && strcmp(e->name, name) != 0) e = e->next;
  return e;
}

const acme_cert_t *acme__manager_tracked(acme_manager_t *m, const char *name) {
  renewal_t *e = renewal_find(m, name);
  return e ? e->cert : NULL;
}

void acme_manager_cert_renewed(acme_manager_t *m, const char *name, const acme_cert_t *cert) {
  if (m->stopping || cert == NULL) return;
  renewal_t *e = renewal_find(m, name);
  acme__manager_track(m, name, e ? e->ms : acme__manager_site_of(m, name), cert);
}

void acme_manager_cert_revoked(acme_manager_t *m, const char *name) {
  if (m->stopping) return;
  renewal_t *e = renewal_find(m, name);
  acme_renewal_state_t st;
  char *err = NULL;
  acme_renewal_state_load(m->storage, &st, name);
  st.revoked = 1;
  if (acme_renewal_state_save(m->storage, &err, name, &st) != 0) {
    GH_WARN("acme", "%s: cannot record the revocation: %s", name, err);
    gh_free(err);
  }
  if (e == NULL) return; /* not served: it is renewed if it is ever asked for */
  e->state.revoked = 1;
  e->state.failures = 0;
  e->due = time(NULL);
  e->source = ACME_RENEW_REVOKED;
  GH_WARN("acme", "%s: the certificate was revoked: renewing now", name);
  renew_arm(m);
}

int acme_manager_renewal_view(acme_manager_t *m, const char *name, acme_renewal_view_t *out) {
  if (m == NULL) return -1;
  int rc = -1;
  pthread_mutex_lock(&m->sched_mu);
  for (renewal_t *e = m->renewals; e != NULL && rc != 0; e = e->next) {
    if (strcmp(e->name, name) == 0 && e->pub.due != 0) {
      *out = e->pub;
      rc = 0;
    }
  }
  pthread_mutex_unlock(&m->sched_mu);
  return rc;
}

static int named_cmp(const void *a, const void *b) {
  return strcmp(((const acme_renewal_named_t *)a)->name, ((const acme_renewal_named_t *)b)->name);
}

void acme_manager_renewal_views(acme_manager_t *m, acme_renewal_named_t **out, size_t *out_num) {
  *out = NULL;
  *out_num = 0;
  if (m == NULL) return;
  pthread_mutex_lock(&m->sched_mu);
  size_t n = 0;
  for (renewal_t *e = m->renewals; e != NULL; e = e->next) n++;
  acme_renewal_named_t *v = gh_calloc(n ? n : 1, sizeof(*v));
  size_t k = 0;
  for (renewal_t *e = m->renewals; e != NULL; e = e->next) {
    if (e->pub.due == 0) continue; /* not published yet */
    v[k].name = gh_strdup(e->name);
    v[k++].view = e->pub;
  }
  pthread_mutex_unlock(&m->sched_mu);
  qsort(v, k, sizeof(*v), named_cmp);
  *out = v;
  *out_num = k;
}

void acme_renewal_views_free(acme_renewal_named_t *views, size_t num) {
  for (size_t i = 0; i < num; i++) gh_free(views[i].name);
  gh_free(views);
}

void acme__manager_renewals_free(acme_manager_t *m) {
  pthread_mutex_lock(&m->sched_mu);
  renewal_t *list = m->renewals;
  m->renewals = NULL;
  pthread_mutex_unlock(&m->sched_mu);
  while (list != NULL) {
    renewal_t *e = list;
    list = e->next;
    gh_free(e->name);
    acme_cert_unref(e->cert);
    gh_free(e);
  }
}
