/* control.c: the control thread (DESIGN.md "The three planes") and the
 * server's list of managed certificates.
 *
 * When acme.directory is set, px_run starts one thread with its own loop
 * running an acme_engine_t. Every site without static certificate files is
 * "managed": at start the control thread installs its stored certificate
 * if one is on disk, covers the site's names and has not expired, and
 * otherwise orders one (names = the site's hosts, the first being the
 * storage name). A failed order is logged and retried after a backoff that
 * doubles from 1 minute to 1 hour.
 *
 * Renewal. Every certificate installed (managed, on-demand, or found in
 * storage at start) gets a renewal time computed from the certificate:
 * when a third of its lifetime is left (half, below 10 days), a little
 * earlier by jitter. Where the CA's directory offers renewalInfo (ACME
 * Renewal Information, RFC 9773), a random moment in the CA's suggested
 * window wins instead, asked again as its Retry-After says, and the new
 * order names the certificate it replaces. One timer fires for the
 * earliest event. A renewal orders the same names again; the engine stores the result and the new
 * certificate replaces the old one in the table (handshakes in flight keep
 * their reference). A failure retries after a back-off with jitter that
 * doubles from 1 minute to 6 hours (never past the expiry less a margin,
 * but never before the CA's Retry-After), recorded in the certificate's
 * meta.json so a restart resumes it. An expired certificate that was not
 * renewed is logged as an error once an hour. A revoked certificate
 * (px_control_cert_revoked) is renewed at once and, after a restart, not
 * served at all: a stored certificate is installed only while valid and
 * not revoked.
 *
 * "Install" hands the certificate to the server's acme_cache_t
 * (acme/cache.h), which puts it into the certificate table of the current
 * generation under each of the site's host patterns and remembers it, so
 * that reload() re-installs it into the next generation's table before any
 * worker sees that generation.
 *
 * The managed sites are those of the configuration the server started
 * with; a site added by a reload gets its certificate at the next start. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "acme/policy.h"
#include "acme/storage.h"
#include "common/log.h"
#include "proxy/control.h"
#include "proxy/ondemand.h"
#include "proxy/tls.h"

#define BACKOFF_MIN_MS (60 * 1000)
#define BACKOFF_MAX_MS (60 * 60 * 1000)

/* ---- the control thread ---- */

typedef struct {
  px_control_t *ctl;
  const conf_site_t *site;
  uv_timer_t retry;
  uint64_t backoff_ms;
  int ordering; /* an order is in flight */
} managed_site_t;

struct px_control {
  uv_loop_t loop;
  uv_thread_t thread;
  uv_async_t async; /* stop, from the main thread */
  px_gen_t *gen;    /* keeps the configuration the engine reads alive */
  acme_cache_t *cache;
  acme_engine_t *engine;
  acme_storage_t *storage;
  managed_site_t *sites;
  size_t num_sites;
  int stopping;
  /* One-shot mode (px_control_obtain): these names instead of the sites. */
  const char *const *names;
  size_t num_names;
  px_control_done_cb done;
  void *done_arg;
  /* On-demand names, posted by workers (px_control_ondemand). */
  px_ondemand_t *ondemand;
  acme_policy_t *policy;
  uv_async_t req_async;
  pthread_mutex_t req_mu;
  struct od_req *reqs; /* under req_mu */
  struct od_job *od_queue; /* waiting for an order slot */
  unsigned od_inflight;
  /* Renewal (see the top of the file). */
  struct renewal *renewals;
  int ari_unsupported; /* the CA's directory has no renewalInfo */
  uv_timer_t renew_timer; /* for the earliest renewal or expiry log */
};

static void renew_track(px_control_t *ctl, const char *name, managed_site_t *ms,
                        const acme_cert_t *cert);

static void obtain(managed_site_t *ms);

static void on_retry(uv_timer_t *t) {
  managed_site_t *ms = t->data;
  if (!ms->ctl->stopping) obtain(ms);
}

static void schedule_retry(managed_site_t *ms) {
  if (ms->ctl->stopping) return;
  ms->backoff_ms = ms->backoff_ms == 0 ? BACKOFF_MIN_MS : ms->backoff_ms * 2;
  if (ms->backoff_ms > BACKOFF_MAX_MS) ms->backoff_ms = BACKOFF_MAX_MS;
  GH_INFO("acme", "%s: next attempt in %llus", ms->site->hosts[0],
          (unsigned long long)(ms->backoff_ms / 1000));
  uv_timer_start(&ms->retry, on_retry, ms->backoff_ms, 0);
}

static void on_obtained(void *arg, int status, const char *err, acme_cert_t *cert) {
  managed_site_t *ms = arg;
  ms->ordering = 0;
  if (status == UV_ECANCELED && ms->ctl->stopping) return;
  if (status != 0) {
    GH_ERROR("acme", "%s: %s", ms->site->hosts[0], err ? err : uv_strerror(status));
    schedule_retry(ms);
    return;
  }
  ms->backoff_ms = 0;
  acme_cache_install_site(ms->ctl->cache, ms->site, cert);
  char t[32];
  GH_INFO("acme", "%s: certificate from %s installed (valid until %s)", ms->site->hosts[0],
          cert->issuer_cn ? cert->issuer_cn : "?", gh_format_time(t, sizeof(t), cert->not_after));
  renew_track(ms->ctl, ms->site->hosts[0], ms, cert);
}

static void obtain(managed_site_t *ms) {
  if (ms->ordering) return;
  int rc = acme_engine_obtain(ms->ctl->engine, (const char *const *)ms->site->hosts,
                              ms->site->num_hosts, on_obtained, ms);
  if (rc != 0) {
    GH_ERROR("acme", "%s: cannot start an order: %s", ms->site->hosts[0], uv_strerror(rc));
    schedule_retry(ms);
    return;
  }
  ms->ordering = 1;
}

/* covers reports whether |cert| names every host of |site|. */
static int covers(const acme_cert_t *cert, const conf_site_t *site) {
  for (size_t i = 0; i < site->num_hosts; i++) {
    int found = 0;
    for (size_t j = 0; j < cert->num_sans && !found; j++)
      found = strcmp(cert->sans[j], site->hosts[i]) == 0;
    if (!found) return 0;
  }
  return 1;
}

/* stored_revoked reports whether |name|'s stored certificate is marked
 * revoked in its meta.json. */
static int stored_revoked(px_control_t *ctl, const char *name) {
  acme_renewal_state_t st;
  return acme_renewal_state_load(ctl->storage, &st, name) == 0 && st.revoked;
}

/* start_site installs the stored certificate of |ms| if it is usable, and
 * otherwise orders one. */
static void start_site(managed_site_t *ms) {
  px_control_t *ctl = ms->ctl;
  const char *name = ms->site->hosts[0];
  acme_cert_t *cert = NULL;
  char *err = NULL;
  int rc = acme_storage_cert_load(ctl->storage, &cert, NULL, &err, name);
  if (rc == 0) {
    if (cert->not_after > time(NULL) && covers(cert, ms->site) && !stored_revoked(ctl, name)) {
      acme_cache_install_site(ctl->cache, ms->site, cert);
      char t[32];
      GH_INFO("acme", "%s: stored certificate installed (valid until %s)", name,
              gh_format_time(t, sizeof(t), cert->not_after));
      renew_track(ctl, name, ms, cert);
      acme_cert_unref(cert);
      return;
    }
    if (covers(cert, ms->site)) {
      /* Expired or revoked: renewing it resumes any back-off stored with
       * it, so a restart loop cannot hammer the CA. */
      GH_INFO("acme", "%s: the stored certificate has expired or was revoked: renewing", name);
      renew_track(ctl, name, ms, cert);
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

static void free_handle(uv_handle_t *h) { gh_free(h); }

static void on_oneshot(void *arg, int status, const char *err, acme_cert_t *cert) {
  px_control_t *ctl = arg;
  if (status == 0) {
    char t[32];
    GH_INFO("acme", "%s: certificate from %s stored (valid until %s)", ctl->names[0],
            cert->issuer_cn ? cert->issuer_cn : "?", gh_format_time(t, sizeof(t), cert->not_after));
  } else {
    GH_ERROR("acme", "%s: %s", ctl->names[0], err ? err : uv_strerror(status));
  }
  if (!ctl->stopping) ctl->done(ctl->done_arg, status);
}

static void track_stored_ondemand(px_control_t *ctl);

static void on_start(uv_timer_t *t) {
  px_control_t *ctl = t->data;
  uv_close((uv_handle_t *)t, free_handle);
  if (ctl->done != NULL && !ctl->stopping) {
    int rc = acme_engine_obtain(ctl->engine, ctl->names, ctl->num_names, on_oneshot, ctl);
    if (rc != 0) {
      GH_ERROR("acme", "%s: cannot start an order: %s", ctl->names[0], uv_strerror(rc));
      ctl->done(ctl->done_arg, rc);
    }
    return;
  }
  for (size_t i = 0; i < ctl->num_sites && !ctl->stopping; i++) start_site(&ctl->sites[i]);
  if (ctl->ondemand != NULL && ctl->gen->conf->on_demand.enabled && !ctl->stopping)
    track_stored_ondemand(ctl);
}

/* ---- on-demand names ---- */

/* A posted request: an on-demand name, or a function to run (px_control_call). */
struct od_req {
  struct od_req *next;
  void (*fn)(px_control_t *ctl, void *arg); /* NULL: on-demand |name| */
  void *arg;
  char client_ip[64];
  char name[];
};

static void post(px_control_t *ctl, struct od_req *r) {
  pthread_mutex_lock(&ctl->req_mu);
  r->next = ctl->reqs;
  ctl->reqs = r;
  pthread_mutex_unlock(&ctl->req_mu);
  uv_async_send(&ctl->req_async);
}

void px_control_call(px_control_t *ctl, void (*fn)(px_control_t *ctl, void *arg), void *arg) {
  struct od_req *r = gh_calloc(1, sizeof(*r) + 1);
  r->fn = fn;
  r->arg = arg;
  post(ctl, r);
}

acme_engine_t *px_control_engine(px_control_t *ctl) { return ctl->stopping ? NULL : ctl->engine; }
acme_storage_t *px_control_storage(px_control_t *ctl) { return ctl->storage; }
acme_cache_t *px_control_cache(px_control_t *ctl) { return ctl->cache; }
uv_loop_t *px_control_loop(px_control_t *ctl) { return &ctl->loop; }

typedef struct od_job {
  px_control_t *ctl;
  acme_cert_t *stored; /* a usable stored certificate, or NULL */
  uint64_t start_ms;
  int ordering;        /* holds one of the ORDERS_IN_FLIGHT slots */
  struct od_job *next; /* in ctl->od_queue while waiting for a slot */
  char name[];
} od_job_t;

/* On-demand orders in flight at once; more wait in a queue. It keeps a
 * burst of new names from flooding the CA: Pebble 2.4 deadlocks when
 * dozens of challenges are answered at the same moment, and a public CA
 * would rather see a steady stream too. Waiting costs little: an order
 * takes about 100 ms against a local CA. */
#define ORDERS_IN_FLIGHT 4

static void od_order_next(px_control_t *ctl);

void px_control_ondemand(px_control_t *ctl, const char *name, size_t name_len,
                         const char *client_ip) {
  struct od_req *r = gh_calloc(1, sizeof(*r) + name_len + 1);
  memcpy(r->name, name, name_len);
  r->name[name_len] = '\0';
  snprintf(r->client_ip, sizeof(r->client_ip), "%s", client_ip);
  post(ctl, r);
}

static void od_done(od_job_t *job, int ok) {
  px_control_t *ctl = job->ctl;
  px_ondemand_finish(ctl->ondemand, job->name, ok);
  acme_cert_unref(job->stored);
  int freed_slot = job->ordering;
  gh_free(job);
  if (freed_slot) {
    ctl->od_inflight--;
    od_order_next(ctl);
  }
}

static void od_install(od_job_t *job, acme_cert_t *cert, const char *how) {
  px_control_t *ctl = job->ctl;
  acme_cache_install_name(ctl->cache, job->name, cert,
                          ctl->gen->conf->on_demand.cache_capacity);
  char t[32];
  GH_INFO("ondemand", "%s: certificate %s in %llu ms (valid until %s)", job->name, how,
          (unsigned long long)(uv_now(&ctl->loop) - job->start_ms),
          gh_format_time(t, sizeof(t), cert->not_after));
  renew_track(ctl, job->name, NULL, cert);
}

static void od_obtained(void *arg, int status, const char *err, acme_cert_t *cert) {
  od_job_t *job = arg;
  if (status != 0) {
    if (status != UV_ECANCELED)
      GH_WARN("ondemand", "%s: not obtained: %s", job->name, err ? err : uv_strerror(status));
    od_done(job, 0);
    return;
  }
  od_install(job, cert, "obtained");
  od_done(job, 1);
}

static void od_decided(void *arg, int allowed, const char *reason) {
  od_job_t *job = arg;
  px_control_t *ctl = job->ctl;
  if (ctl->policy != NULL) {
    acme_policy_stats_t st;
    acme_policy_stats(ctl->policy, &st);
    px_ondemand_set_policy_stats(ctl->ondemand, &st);
  }
  /* ACME_POLICY_ALLOWED, or ACME_POLICY_STORED_ONLY (ask is down and a
   * stored certificate exists: serve it, order nothing); refused or
   * cancelled (UV_ECANCELED, the policy is shutting down) otherwise. */
  if (allowed != ACME_POLICY_ALLOWED && allowed != ACME_POLICY_STORED_ONLY) {
    if (allowed != UV_ECANCELED)
      GH_INFO("ondemand", "%s: refused: %s", job->name, reason ? reason : "-");
    od_done(job, 0);
    return;
  }
  if (job->stored != NULL || allowed == ACME_POLICY_STORED_ONLY) {
    if (job->stored == NULL) { /* cannot happen: STORED_ONLY needs have_stored */
      od_done(job, 0);
      return;
    }
    od_install(job, job->stored, "loaded from storage");
    od_done(job, 1);
    return;
  }
  /* Wait for a slot, in arrival order. */
  job->next = NULL;
  od_job_t **tail = &ctl->od_queue;
  while (*tail) tail = &(*tail)->next;
  *tail = job;
  od_order_next(ctl);
}

/* od_order_next starts queued orders while slots are free. */
static void od_order_next(px_control_t *ctl) {
  while (ctl->od_queue != NULL && ctl->od_inflight < ORDERS_IN_FLIGHT) {
    od_job_t *job = ctl->od_queue;
    ctl->od_queue = job->next;
    const char *names[1] = {job->name};
    int rc = ctl->stopping ? UV_ECANCELED
                           : acme_engine_obtain(ctl->engine, names, 1, od_obtained, job);
    if (rc != 0) {
      if (rc != UV_ECANCELED)
        GH_WARN("ondemand", "%s: cannot start an order: %s", job->name, uv_strerror(rc));
      od_done(job, 0);
      continue;
    }
    job->ordering = 1;
    ctl->od_inflight++;
  }
}

/* od_start handles one posted name: a usable stored certificate is loaded
 * (policy is still checked first, without spending an order from the rate
 * limits), otherwise the policy decides whether to order one. */
static void od_start(px_control_t *ctl, const char *name, const char *client_ip) {
  size_t len = strlen(name);
  od_job_t *job = gh_calloc(1, sizeof(*job) + len + 1);
  memcpy(job->name, name, len + 1);
  job->ctl = ctl;
  job->start_ms = uv_now(&ctl->loop);
  if (ctl->stopping || ctl->policy == NULL) {
    od_done(job, 0);
    return;
  }
  acme_cert_t *cert = NULL;
  char *err = NULL;
  int rc = acme_storage_cert_load(ctl->storage, &cert, NULL, &err, name);
  if (rc == 0 && cert->not_after > time(NULL) && !stored_revoked(ctl, name)) {
    job->stored = cert;
  } else {
    if (rc != 0 && rc != -ENOENT) GH_WARN("ondemand", "%s: %s: ordering a new one", name, err);
    acme_cert_unref(cert);
  }
  gh_free(err);
  rc = acme_policy_decide(ctl->policy, name, client_ip, job->stored != NULL,
                          job->stored == NULL, od_decided, job);
  if (rc != 0) {
    GH_WARN("ondemand", "%s: policy: %s", name, uv_strerror(rc));
    od_done(job, 0);
  }
}

static void on_requests(uv_async_t *a) {
  px_control_t *ctl = a->data;
  pthread_mutex_lock(&ctl->req_mu);
  struct od_req *list = ctl->reqs;
  ctl->reqs = NULL;
  pthread_mutex_unlock(&ctl->req_mu);
  /* The list is newest first: run the requests in the order they came. */
  struct od_req *ordered = NULL;
  while (list) {
    struct od_req *r = list;
    list = r->next;
    r->next = ordered;
    ordered = r;
  }
  while (ordered) {
    struct od_req *r = ordered;
    ordered = r->next;
    if (r->fn != NULL) {
      r->fn(ctl, r->arg);
    } else {
      od_start(ctl, r->name, r->client_ip);
    }
    gh_free(r);
  }
}

/* ---- renewal ---- */

#define RENEW_BACKOFF_MIN_S 60
#define RENEW_BACKOFF_MAX_S (6 * 3600)
#define EXPIRED_LOG_EVERY_S 3600
#define RENEW_TIMER_CAP_S (24 * 3600) /* the wall clock may jump: look again daily */

typedef struct renewal {
  struct renewal *next;
  px_control_t *ctl;
  char *name;         /* the storage name */
  managed_site_t *ms; /* the managed site, or NULL for an on-demand name */
  time_t not_before, not_after;
  time_t due;            /* the next attempt */
  time_t expired_logged; /* the last EXPIRED error, 0: none */
  acme_renewal_state_t state;
  int ordering;
  acme_cert_t *cert;  /* the certificate to renew (a reference) */
  time_t ari_next;    /* when to ask for renewal information, 0: never */
  int ari_inflight;   /* a renewalInfo request is out */
  int ari_stale;      /* |cert| changed while it was out */
} renewal_t;

static uint64_t random_below(uint64_t n) {
  uint64_t r = 0;
  RAND_bytes((uint8_t *)&r, sizeof(r));
  return n ? r % n : 0;
}

/* renewal_time is when a certificate valid from |nb| to |na| is renewed:
 * with a third of its lifetime left (half, below 10 days), less a jitter
 * of up to a tenth of that (at most an hour), so that certificates issued
 * together are not all renewed in the same second. */
static time_t renewal_time(time_t nb, time_t na) {
  time_t life = na - nb;
  if (life <= 0) return na;
  time_t left = life < 10 * 86400 ? life / 2 : life / 3;
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

/* renew_arm starts the one timer for the earliest event of any renewal. */
static void renew_arm(px_control_t *ctl) {
  if (ctl->stopping) return;
  time_t now = time(NULL), next = 0;
  for (renewal_t *e = ctl->renewals; e != NULL; e = e->next) {
    time_t t = next_event(e);
    if (t != 0 && (next == 0 || t < next)) next = t;
  }
  if (next == 0) {
    uv_timer_stop(&ctl->renew_timer);
    return;
  }
  uint64_t delay_s = next > now ? (uint64_t)(next - now) : 0;
  if (delay_s > RENEW_TIMER_CAP_S) delay_s = RENEW_TIMER_CAP_S;
  uv_timer_start(&ctl->renew_timer, on_renew_timer, delay_s * 1000, 0);
}

/* renew_track schedules the renewal of |cert|, just installed (or found in
 * storage) as |name|: for |ms|'s site, or on-demand when |ms| is NULL. A
 * back-off stored with the certificate is resumed. */
static void renew_track(px_control_t *ctl, const char *name, managed_site_t *ms,
                        const acme_cert_t *cert) {
  if (ctl->stopping) return;
  renewal_t *e = ctl->renewals;
  while (e != NULL && strcmp(e->name, name) != 0) e = e->next;
  if (e == NULL) {
    e = gh_calloc(1, sizeof(*e));
    e->ctl = ctl;
    e->name = gh_strdup(name);
    e->next = ctl->renewals;
    ctl->renewals = e;
  }
  e->ms = ms;
  acme_cert_unref(e->cert);
  e->cert = acme_cert_ref((acme_cert_t *)cert);
  e->ari_stale = e->ari_inflight;
  e->ari_next = ctl->ari_unsupported ? 0 : time(NULL); /* ask the CA first */
  e->not_before = cert->not_before;
  e->not_after = cert->not_after;
  e->expired_logged = 0;
  e->due = renewal_time(cert->not_before, cert->not_after);
  acme_renewal_state_load(ctl->storage, &e->state, name);
  char t1[32], t2[32];
  if (e->state.revoked && e->state.failures == 0) {
    e->due = time(NULL);
    GH_WARN("acme", "%s: the certificate was revoked: renewing now", name);
  } else if (e->state.failures > 0 && e->state.next_retry != 0) {
    e->due = e->state.next_retry;
    GH_WARN("acme", "%s: %u renewal(s) failed (last: %s); next attempt at %s", name,
            e->state.failures, e->state.last_error, gh_format_time(t1, sizeof(t1), e->due));
  } else {
    time_t now = time(NULL);
    GH_INFO("acme", "%s: renewal scheduled at %s (in %llds; valid until %s)", name,
            gh_format_time(t1, sizeof(t1), e->due), (long long)(e->due > now ? e->due - now : 0),
            gh_format_time(t2, sizeof(t2), e->not_after));
  }
  renew_arm(ctl);
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
  px_control_t *ctl = e->ctl;
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
  char t[32];
  GH_ERROR("acme", "%s: renewal failed (%u in a row): %s; next attempt at %s (in %llus)", e->name,
           e->state.failures, e->state.last_error, gh_format_time(t, sizeof(t), e->due),
           (unsigned long long)delay);
  char *serr = NULL;
  if (acme_renewal_state_save(ctl->storage, &serr, e->name, &e->state) != 0) {
    GH_WARN("acme", "%s: cannot store the renewal state: %s", e->name, serr);
    gh_free(serr);
  }
  renew_arm(ctl);
}

static void renewed(void *arg, int status, const char *err, acme_cert_t *cert) {
  renewal_t *e = arg;
  px_control_t *ctl = e->ctl;
  e->ordering = 0;
  if (ctl->stopping) return;
  if (status != 0) {
    renew_failed(e, status, err);
    return;
  }
  if (e->ms != NULL) {
    acme_cache_install_site(ctl->cache, e->ms->site, cert);
  } else {
    acme_cache_install_name(ctl->cache, e->name, cert, ctl->gen->conf->on_demand.cache_capacity);
  }
  char t[32];
  GH_INFO("acme", "%s: renewed: certificate from %s installed (valid until %s)", e->name,
          cert->issuer_cn ? cert->issuer_cn : "?", gh_format_time(t, sizeof(t), cert->not_after));
  renew_track(ctl, e->name, e->ms, cert);
}

/* install_newer installs |e|'s stored certificate instead of ordering
 * when storage already holds a newer valid one (another process sharing
 * the storage, such as `gatehouse cert obtain`, renewed it). Returns 1 if
 * it did. */
static int install_newer(renewal_t *e) {
  px_control_t *ctl = e->ctl;
  acme_cert_t *cert = NULL;
  char *err = NULL;
  int done = 0;
  if (acme_storage_cert_load(ctl->storage, &cert, NULL, &err, e->name) == 0 &&
      cert->not_after > e->not_after && cert->not_after > time(NULL) &&
      renewal_time(cert->not_before, cert->not_after) > time(NULL) &&
      (e->ms == NULL || covers(cert, e->ms->site)) && !stored_revoked(ctl, e->name)) {
    if (e->ms != NULL) {
      acme_cache_install_site(ctl->cache, e->ms->site, cert);
    } else {
      acme_cache_install_name(ctl->cache, e->name, cert,
                              ctl->gen->conf->on_demand.cache_capacity);
    }
    char t[32];
    GH_INFO("acme", "%s: a newer stored certificate installed (valid until %s)", e->name,
            gh_format_time(t, sizeof(t), cert->not_after));
    renew_track(ctl, e->name, e->ms, cert);
    done = 1;
  }
  gh_free(err);
  acme_cert_unref(cert);
  return done;
}

static void renew_start(renewal_t *e) {
  px_control_t *ctl = e->ctl;
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
  int rc = acme_engine_renew(ctl->engine, names, num_names, e->cert, renewed, e);
  if (rc != 0) {
    renew_failed(e, rc, "cannot start an order");
    return;
  }
  e->ordering = 1;
}

static void ari_done(void *arg, int status, const char *err, const acme_ari_t *info) {
  renewal_t *e = arg;
  px_control_t *ctl = e->ctl;
  e->ari_inflight = 0;
  if (ctl->stopping) return;
  time_t now = time(NULL);
  if (e->ari_stale) { /* about the certificate before: ask about this one */
    e->ari_stale = 0;
    e->ari_next = now;
  } else if (status == UV_ENOTSUP) {
    ctl->ari_unsupported = 1;
    e->ari_next = 0;
    GH_DEBUG("acme", "%s: the CA offers no renewal information (ARI)", e->name);
  } else if (status != 0) {
    e->ari_next = now + 3600;
    GH_WARN("acme", "%s: renewal information (ARI): %s; keeping the renewal time", e->name, err);
  } else {
    e->ari_next = now + (time_t)info->retry_after_s;
    char t1[32], t2[32], t3[32];
    if (e->state.failures == 0) e->due = info->renew_at;
    GH_INFO("acme", "%s: ARI suggests renewal between %s and %s: renewal at %s (in %llds)%s%s",
            e->name, gh_format_time(t1, sizeof(t1), info->start), gh_format_time(t2, sizeof(t2), info->end),
            gh_format_time(t3, sizeof(t3), e->due), (long long)(e->due > now ? e->due - now : 0),
            info->explanation_url ? "; see " : "",
            info->explanation_url ? info->explanation_url : "");
  }
  renew_arm(ctl);
}

/* ari_ask asks the CA when to renew |e| (RFC 9773). */
static void ari_ask(renewal_t *e) {
  if (e->ctl->ari_unsupported || e->cert == NULL) {
    e->ari_next = 0;
    return;
  }
  int rc = acme_engine_renewal_info(e->ctl->engine, e->cert, ari_done, e);
  if (rc != 0) {
    e->ari_next = 0; /* no ARI identifier (no authority key identifier) */
    return;
  }
  e->ari_inflight = 1;
}

static void on_renew_timer(uv_timer_t *t) {
  px_control_t *ctl = t->data;
  if (ctl->stopping) return;
  time_t now = time(NULL);
  for (renewal_t *e = ctl->renewals; e != NULL; e = e->next) {
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
  renew_arm(ctl);
}

/* track_stored_ondemand schedules the renewal of every on-demand
 * certificate in storage (every stored name that is not a managed site's),
 * so an idle name does not expire unnoticed. */
static void track_stored_ondemand(px_control_t *ctl) {
  char **names = NULL, *err = NULL;
  size_t num = 0;
  if (acme_storage_cert_list(ctl->storage, &names, &num, &err) != 0) {
    GH_WARN("ondemand", "listing stored certificates: %s", err);
    gh_free(err);
    return;
  }
  for (size_t i = 0; i < num; i++) {
    int managed = 0;
    for (size_t k = 0; k < ctl->num_sites && !managed; k++)
      managed = strcmp(ctl->sites[k].site->hosts[0], names[i]) == 0;
    renewal_t *e = ctl->renewals;
    while (e != NULL && strcmp(e->name, names[i]) != 0) e = e->next;
    if (managed || e != NULL) continue;
    acme_cert_t *cert = NULL;
    if (acme_storage_cert_load(ctl->storage, &cert, NULL, &err, names[i]) == 0)
      renew_track(ctl, names[i], NULL, cert);
    gh_free(err);
    err = NULL;
    acme_cert_unref(cert);
  }
  acme_storage_names_free(names, num);
}

/* renewal_find returns the renewal of |name|, or NULL. */
static renewal_t *renewal_find(px_control_t *ctl, const char *name) {
  renewal_t *e = ctl->renewals;
  while (e != NULL && strcmp(e->name, name) != 0) e = e->next;
  return e;
}

/* site_of returns the managed site stored as |name|, or NULL. */
static managed_site_t *site_of(px_control_t *ctl, const char *name) {
  for (size_t i = 0; i < ctl->num_sites; i++)
    if (strcmp(ctl->sites[i].site->hosts[0], name) == 0) return &ctl->sites[i];
  return NULL;
}

void px_control_cert_renewed(px_control_t *ctl, const char *name, const acme_cert_t *cert) {
  if (ctl->stopping || cert == NULL) return;
  renewal_t *e = renewal_find(ctl, name);
  renew_track(ctl, name, e ? e->ms : site_of(ctl, name), cert);
}

void px_control_cert_revoked(px_control_t *ctl, const char *name) {
  if (ctl->stopping) return;
  renewal_t *e = renewal_find(ctl, name);
  acme_renewal_state_t st;
  char *err = NULL;
  acme_renewal_state_load(ctl->storage, &st, name);
  st.revoked = 1;
  if (acme_renewal_state_save(ctl->storage, &err, name, &st) != 0) {
    GH_WARN("acme", "%s: cannot record the revocation: %s", name, err);
    gh_free(err);
  }
  if (e == NULL) return; /* not served: it is renewed if it is ever asked for */
  e->state.revoked = 1;
  e->state.failures = 0;
  e->due = time(NULL);
  GH_WARN("acme", "%s: the certificate was revoked: renewing now", name);
  renew_arm(ctl);
}

/* renew_free_all frees the renewals once the loop has stopped. */
static void renew_free_all(px_control_t *ctl) {
  while (ctl->renewals != NULL) {
    renewal_t *e = ctl->renewals;
    ctl->renewals = e->next;
    gh_free(e->name);
    acme_cert_unref(e->cert);
    gh_free(e);
  }
}

static void on_stop(uv_async_t *a) {
  px_control_t *ctl = a->data;
  ctl->stopping = 1;
  /* Orders in flight end with UV_ECANCELED, from the loop, and schedule
   * nothing: on_obtained sees |stopping|. */
  acme_engine_free(ctl->engine);
  ctl->engine = NULL;
  acme_policy_free(ctl->policy);
  ctl->policy = NULL;
  while (ctl->od_queue != NULL) { /* never started: nothing to cancel */
    od_job_t *job = ctl->od_queue;
    ctl->od_queue = job->next;
    od_done(job, 0);
  }
  uv_close((uv_handle_t *)&ctl->req_async, NULL);
  for (size_t i = 0; i < ctl->num_sites; i++)
    uv_close((uv_handle_t *)&ctl->sites[i].retry, NULL);
  uv_close((uv_handle_t *)&ctl->renew_timer, NULL);
  uv_close((uv_handle_t *)&ctl->async, NULL);
}

static void control_main(void *arg) {
  px_control_t *ctl = arg;
  uv_run(&ctl->loop, UV_RUN_DEFAULT);
}

static int site_is_managed(const conf_site_t *site) {
  if (site->cert_file != NULL || site->num_hosts == 0) return 0;
  /* "*" is for on-demand certificates, which are a later issue. */
  for (size_t i = 0; i < site->num_hosts; i++) {
    if (strcmp(site->hosts[i], "*") == 0) return 0;
  }
  return 1;
}

static px_control_t *control_new(char **out_err, px_gen_t *gen, acme_challenges_t *challenges,
                                 acme_cache_t *cache, px_ondemand_t *ondemand,
                                 const char *const *names, size_t num_names,
                                 px_control_done_cb done, void *done_arg) {
  const conf_t *conf = gen->conf;
  px_control_t *ctl = gh_calloc(1, sizeof(*ctl));
  ctl->names = names;
  ctl->num_names = num_names;
  ctl->done = done;
  ctl->done_arg = done_arg;
  uv_loop_init(&ctl->loop);
  ctl->storage = acme_storage_open(out_err, conf->storage);
  if (ctl->storage != NULL) ctl->engine = acme_engine_new(out_err, &ctl->loop, conf, challenges);
  if (ctl->engine == NULL) {
    acme_storage_free(ctl->storage);
    uv_run(&ctl->loop, UV_RUN_DEFAULT);
    uv_loop_close(&ctl->loop);
    gh_free(ctl);
    return NULL;
  }
  ctl->gen = px_gen_ref(gen);
  ctl->cache = cache;
  ctl->sites = gh_calloc(conf->num_sites ? conf->num_sites : 1, sizeof(managed_site_t));
  for (size_t i = 0; i < conf->num_sites && done == NULL; i++) {
    if (!site_is_managed(&conf->sites[i])) continue;
    managed_site_t *ms = &ctl->sites[ctl->num_sites++];
    ms->ctl = ctl;
    ms->site = &conf->sites[i];
    uv_timer_init(&ctl->loop, &ms->retry);
    ms->retry.data = ms;
  }
  uv_async_init(&ctl->loop, &ctl->async, on_stop);
  ctl->async.data = ctl;
  uv_timer_init(&ctl->loop, &ctl->renew_timer);
  ctl->renew_timer.data = ctl;
  pthread_mutex_init(&ctl->req_mu, NULL);
  uv_async_init(&ctl->loop, &ctl->req_async, on_requests);
  ctl->req_async.data = ctl;
  ctl->ondemand = ondemand;
  if (ondemand != NULL) {
    char *perr = NULL;
    ctl->policy = acme_policy_new(&perr, &ctl->loop, &conf->on_demand,
                                  (const char *const *)conf->acme.ca_roots,
                                  conf->acme.num_ca_roots);
    if (ctl->policy == NULL) {
      GH_ERROR("ondemand", "on-demand certificates are off: %s", perr);
      gh_free(perr);
    }
  }
  /* The first orders start from the loop, in the control thread. */
  uv_timer_t *start = gh_malloc(sizeof(*start));
  uv_timer_init(&ctl->loop, start);
  start->data = ctl;
  uv_timer_start(start, on_start, 0, 0);
  if (done == NULL) {
    GH_INFO("acme", "control thread: %zu managed site(s), CA %s", ctl->num_sites,
            conf->acme.directory);
  }
  uv_thread_create(&ctl->thread, control_main, ctl);
  return ctl;
}

px_control_t *px_control_start(char **out_err, px_gen_t *gen, acme_challenges_t *challenges,
                               acme_cache_t *cache, px_ondemand_t *ondemand) {
  px_control_t *ctl = control_new(out_err, gen, challenges, cache, ondemand, NULL, 0, NULL, NULL);
  if (ctl != NULL && ondemand != NULL) px_ondemand_set_control(ondemand, ctl);
  return ctl;
}

px_control_t *px_control_obtain(char **out_err, px_gen_t *gen, acme_challenges_t *challenges,
                                const char *const *names, size_t num_names,
                                px_control_done_cb done, void *done_arg) {
  return control_new(out_err, gen, challenges, NULL, NULL, names, num_names, done, done_arg);
}

void px_control_stop(px_control_t *ctl) {
  if (ctl == NULL) return;
  uv_async_send(&ctl->async);
  uv_thread_join(&ctl->thread);
  if (uv_loop_close(&ctl->loop) != 0) GH_WARN("acme", "control thread: loop not empty at exit");
  acme_storage_free(ctl->storage);
  while (ctl->reqs) {
    struct od_req *r = ctl->reqs;
    ctl->reqs = r->next;
    gh_free(r);
  }
  pthread_mutex_destroy(&ctl->req_mu);
  renew_free_all(ctl);
  gh_free(ctl->sites);
  px_gen_unref(ctl->gen);
  gh_free(ctl);
}
