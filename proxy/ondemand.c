/* ondemand.c: the worker half of on-demand certificates (see ondemand.h).
 *
 * Shared state, under one mutex: the names in flight or recently refused
 * (a small hash table), and the counts of pending names and paused
 * handshakes that the caps bound. Each worker keeps its own list of paused
 * connections, touched only by that worker; the control thread reaches a
 * worker only by queueing a wake-up under the worker's mutex and sending
 * its async handle. */
#include <openssl/err.h>
#include <stdio.h>

#include "acme/policy.h"
#include "common/log.h"
#include "proxy/control.h"
#include "proxy/conn.h"
#include "proxy/ondemand.h"
#include "proxy/tls.h"

enum { OD_PENDING = 1, OD_REFUSED = 2 };
enum { NUM_BUCKETS = 1024, MAX_ENTRIES = 100000 };

typedef struct od_name {
  struct od_name *next;
  int state;
  uint64_t expires_ms; /* OD_REFUSED: until then */
  char client_ip[64];  /* OD_PENDING: of the first handshake, for the policy */
  char name[];
} od_name_t;

/* The last refusals, for the admin API (px_ondemand_refusals). */
#define RECENT_MAX 64

struct px_ondemand {
  pthread_mutex_t mu;
  /* The current generation's settings, replaced by px_ondemand_reconfigure
   * (under mu: workers read them in on_miss). */
  px_gen_t *gen; /* owns the configuration below */
  const conf_on_demand_t *conf;
  int enabled; /* on_demand and acme.directory are set */
  px_worker_t **workers;
  unsigned num_workers;
  /* Where names are posted. NULL before the control thread starts and
   * while a reload replaces it (|holding|): names then stay pending, and
   * px_ondemand_set_control posts every pending one. */
  px_control_t *ctl;
  int holding;
  od_name_t *buckets[NUM_BUCKETS];
  size_t num_entries;
  size_t num_pending;
  size_t num_paused;
  uint64_t num_allowed, num_refused; /* names finished, for metrics */
  acme_policy_stats_t policy_stats;  /* published by the control thread */
  acme_policy_limits_t *limits;      /* the control threads' policies, one after another */
  int stopped;              /* the control thread is gone for good */
  px_od_refused_t recent[RECENT_MAX]; /* a ring; recent_next is the oldest */
  size_t recent_next, num_recent;
};

/* A finished name, queued for one worker. */
struct px_wake {
  struct px_wake *next;
  int ok;
  char name[];
};

static size_t hash(const char *s, size_t len) {
  size_t h = 5381;
  for (size_t i = 0; i < len; i++) h = h * 33 + (unsigned char)s[i];
  return h % NUM_BUCKETS;
}

static od_name_t **find(px_ondemand_t *od, const char *name, size_t len) {
  od_name_t **p = &od->buckets[hash(name, len)];
  for (; *p; p = &(*p)->next) {
    if (strlen((*p)->name) == len && memcmp((*p)->name, name, len) == 0) return p;
  }
  return p;
}

static void remove_at(px_ondemand_t *od, od_name_t **p) {
  od_name_t *e = *p;
  *p = e->next;
  gh_free(e);
  od->num_entries--;
}

/* sweep drops refusals that have expired; called with the lock held when
 * the table is full. */
static void sweep(px_ondemand_t *od, uint64_t now) {
  for (size_t b = 0; b < NUM_BUCKETS; b++) {
    od_name_t **p = &od->buckets[b];
    while (*p) {
      if ((*p)->state == OD_REFUSED && (*p)->expires_ms <= now) {
        remove_at(od, p);
      } else {
        p = &(*p)->next;
      }
    }
  }
}

static int conf_enabled(const conf_t *conf) {
  return conf->on_demand.enabled && conf_acme_on(conf);
}

px_ondemand_t *px_ondemand_new(px_gen_t *gen, px_worker_t **workers, unsigned num_workers) {
  px_ondemand_t *od = gh_calloc(1, sizeof(*od));
  pthread_mutex_init(&od->mu, NULL);
  od->gen = px_gen_ref(gen);
  od->conf = &gen->conf->on_demand;
  od->enabled = conf_enabled(gen->conf);
  od->workers = workers;
  od->num_workers = num_workers;
  od->limits = acme_policy_limits_new();
  if (od->enabled) px_ondemand_attach(od, gen->ssl_ctx);
  return od;
}

void px_ondemand_free(px_ondemand_t *od) {
  if (od == NULL) return;
  for (size_t b = 0; b < NUM_BUCKETS; b++) {
    while (od->buckets[b]) remove_at(od, &od->buckets[b]);
  }
  pthread_mutex_destroy(&od->mu);
  acme_policy_limits_free(od->limits);
  px_gen_unref(od->gen);
  gh_free(od);
}

acme_policy_limits_t *px_ondemand_limits(px_ondemand_t *od) { return od->limits; }

int px_ondemand_enabled(px_ondemand_t *od) {
  pthread_mutex_lock(&od->mu);
  int on = od->enabled;
  pthread_mutex_unlock(&od->mu);
  return on;
}

void px_ondemand_reconfigure(px_ondemand_t *od, px_gen_t *gen) {
  pthread_mutex_lock(&od->mu);
  px_gen_t *old = od->gen;
  od->gen = px_gen_ref(gen);
  od->conf = &gen->conf->on_demand;
  od->enabled = conf_enabled(gen->conf);
  /* Refusals were made under the old policy (a name outside the old
   * allow list may be inside the new one): forget them. */
  for (size_t b = 0; b < NUM_BUCKETS; b++) {
    od_name_t **p = &od->buckets[b];
    while (*p) {
      if ((*p)->state == OD_REFUSED) remove_at(od, p);
      else p = &(*p)->next;
    }
  }
  pthread_mutex_unlock(&od->mu);
  /* Older generations keep the hook: their handshakes ask the current
   * settings (on_miss), which may say no. */
  if (od->enabled) px_ondemand_attach(od, gen->ssl_ctx);
  px_gen_unref(old);
}

void px_ondemand_hold(px_ondemand_t *od) {
  pthread_mutex_lock(&od->mu);
  od->ctl = NULL;
  od->holding = 1;
  pthread_mutex_unlock(&od->mu);
}

void px_ondemand_set_control(px_ondemand_t *od, px_control_t *ctl) {
  char **failed = NULL;
  size_t num_failed = 0;
  pthread_mutex_lock(&od->mu);
  od->holding = 0;
  if (od->stopped) ctl = NULL;
  od->ctl = od->enabled ? ctl : NULL;
  /* Every pending name goes to the new control thread (the names posted
   * before it started, or cancelled by the one a reload stopped), or, with
   * on-demand now off, fails. */
  for (size_t b = 0; b < NUM_BUCKETS; b++) {
    for (od_name_t *e = od->buckets[b]; e != NULL; e = e->next) {
      if (e->state != OD_PENDING) continue;
      if (od->ctl != NULL) {
        px_control_ondemand(od->ctl, e->name, strlen(e->name), e->client_ip);
      } else if (!od->stopped) {
        failed = gh_realloc(failed, (num_failed + 1) * sizeof(*failed));
        failed[num_failed++] = gh_strdup(e->name);
      }
    }
  }
  pthread_mutex_unlock(&od->mu);
  for (size_t i = 0; i < num_failed; i++) {
    px_ondemand_finish(od, failed[i], 0, "on-demand certificates were turned off by a reload");
    gh_free(failed[i]);
  }
  gh_free(failed);
}

void px_ondemand_stop(px_ondemand_t *od) {
  pthread_mutex_lock(&od->mu);
  od->ctl = NULL;
  od->holding = 0;
  od->stopped = 1;
  pthread_mutex_unlock(&od->mu);
}

/* record keeps |name|'s refusal for px_ondemand_refusals: a name already
 * there for the same reason is counted again, not added twice. Under
 * od->mu. */
static void record(px_ondemand_t *od, const char *raw, size_t len, const char *client_ip,
                   const char *why) {
  if (len >= sizeof(od->recent[0].name)) len = sizeof(od->recent[0].name) - 1;
  /* The SNI as a client sent it, which may be any bytes: kept printable
   * ASCII ('?' for the rest), so that what the admin API and the
   * dashboard show is valid UTF-8 and cannot break a line. */
  char name[sizeof(od->recent[0].name)];
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)raw[i];
    name[i] = ch > 0x20 && ch < 0x7f ? (char)ch : '?';
  }
  uint64_t now = gh_now_ms();
  for (size_t i = 0; i < od->num_recent; i++) {
    px_od_refused_t *r = &od->recent[i];
    if (strlen(r->name) == len && memcmp(r->name, name, len) == 0 &&
        strncmp(r->reason, why, sizeof(r->reason) - 1) == 0) {
      r->count++;
      r->at_ms = now;
      if (client_ip != NULL) snprintf(r->client_ip, sizeof(r->client_ip), "%s", client_ip);
      return;
    }
  }
  px_od_refused_t *r = &od->recent[od->recent_next];
  od->recent_next = (od->recent_next + 1) % RECENT_MAX;
  if (od->num_recent < RECENT_MAX) od->num_recent++;
  memset(r, 0, sizeof(*r));
  memcpy(r->name, name, len);
  snprintf(r->reason, sizeof(r->reason), "%s", why);
  snprintf(r->client_ip, sizeof(r->client_ip), "%s", client_ip != NULL ? client_ip : "");
  r->at_ms = now;
  r->count = 1;
}

size_t px_ondemand_refusals(px_ondemand_t *od, px_od_refused_t *out, size_t cap) {
  pthread_mutex_lock(&od->mu);
  size_t n = 0;
  /* Newest first. */
  for (size_t i = 0; i < od->num_recent && n < cap; i++) {
    size_t k = (od->recent_next + RECENT_MAX - 1 - i) % RECENT_MAX;
    out[n++] = od->recent[k];
  }
  pthread_mutex_unlock(&od->mu);
  return n;
}

void px_ondemand_stats(px_ondemand_t *od, size_t *out_paused, uint64_t *out_allowed,
                       uint64_t *out_refused) {
  pthread_mutex_lock(&od->mu);
  *out_paused = od->num_paused;
  *out_allowed = od->num_allowed;
  *out_refused = od->num_refused;
  pthread_mutex_unlock(&od->mu);
}

static px_conn_t *conn_of_ssl(const SSL *ssl) { return BIO_get_data(SSL_get_rbio(ssl)); }

/* refuse declines to order |name|: the handshake goes on with the default
 * site's certificate if there is one, and otherwise select_cert fails it at
 * once with unrecognized_name. */
static enum ssl_select_cert_result_t refuse(px_ondemand_t *od, px_conn_t *c,
                                            px_od_refusal_t reason, const char *name, size_t len,
                                            const char *why) {
  PX_STAT_ADD(c->w->stats.od_refused[reason], 1);
  GH_DEBUG("ondemand", "%s: %.*s: not ordered: %s", c->client_ip, (int)len, name, why);
  pthread_mutex_lock(&od->mu);
  record(od, name, len, c->client_ip, why);
  pthread_mutex_unlock(&od->mu);
  return ssl_select_cert_success;
}

/* on_miss is the tls_miss_fn (proxy/tls.c) for every generation's SSL_CTX:
 * |name| has no certificate in the table. */
static enum ssl_select_cert_result_t on_miss(void *arg, const SSL_CLIENT_HELLO *hello,
                                             const char *name, size_t name_len,
                                             acme_cert_t **out_cert) {
  px_ondemand_t *od = arg;
  px_conn_t *c = conn_of_ssl(hello->ssl);
  if (c == NULL) return ssl_select_cert_success;
  /* A handshake that began before a reload has the old generation's
   * table, which later certificates do not reach: the current one has
   * them. */
  px_gen_t *cur = c->w->gen;
  if (cur->ssl_ctx != SSL_get_SSL_CTX(hello->ssl)) {
    acme_cert_t *cert = acme_cert_table_get(px_tls_ctx_table(cur->ssl_ctx), name, name_len);
    if (cert != NULL) {
      *out_cert = cert;
      return ssl_select_cert_success;
    }
  }
  /* Woken after the name failed, or the certificate went away again. */
  if (c->ondemand_failed)
    return refuse(od, c, PX_OD_FAILED, name, name_len, "it could not be obtained");
  uint64_t now = gh_now_ms();
  /* One wait budget per handshake, however many times it pauses. */
  if (c->od_deadline_ms != 0 && now >= c->od_deadline_ms)
    return refuse(od, c, PX_OD_FAILED, name, name_len, "wait budget spent");
  int post = 0;
  pthread_mutex_lock(&od->mu);
  if (!od->enabled || od->stopped) {
    pthread_mutex_unlock(&od->mu);
    return refuse(od, c, PX_OD_PRECHECK, name, name_len,
                  od->stopped ? "shutting down" : "on-demand certificates are off");
  }
  const char *why = acme_policy_precheck(od->conf, name, name_len);
  if (why != NULL) {
    pthread_mutex_unlock(&od->mu);
    return refuse(od, c, PX_OD_PRECHECK, name, name_len, why);
  }
  if (c->od_deadline_ms == 0) c->od_deadline_ms = now + od->conf->wait_budget_ms;
  uint64_t wait_ms = c->od_deadline_ms - now;
  od_name_t **p = find(od, name, name_len);
  if (*p && (*p)->state == OD_REFUSED) {
    if ((*p)->expires_ms > now) {
      pthread_mutex_unlock(&od->mu);
      return refuse(od, c, PX_OD_NEGATIVE_CACHE, name, name_len,
                    "refused recently (negative cache)");
    }
    remove_at(od, p);
    p = find(od, name, name_len);
  }
  if (od->num_paused >= od->conf->max_paused_handshakes) {
    size_t max = od->conf->max_paused_handshakes;
    pthread_mutex_unlock(&od->mu);
    GH_WARN("ondemand", "%.*s: not ordered: %zu handshakes already paused (max_paused_handshakes)",
            (int)name_len, name, max);
    return refuse(od, c, PX_OD_CAPACITY, name, name_len, "max_paused_handshakes reached");
  }
  if (*p == NULL) {
    if (od->num_pending >= od->conf->max_pending_names) {
      pthread_mutex_unlock(&od->mu);
      GH_WARN("ondemand", "%.*s: not ordered: too many names in flight (max_pending_names)",
              (int)name_len, name);
      return refuse(od, c, PX_OD_CAPACITY, name, name_len, "max_pending_names reached");
    }
    if (od->num_entries >= MAX_ENTRIES) sweep(od, now);
    od_name_t *e = gh_malloc(sizeof(*e) + name_len + 1);
    memcpy(e->name, name, name_len);
    e->name[name_len] = '\0';
    e->state = OD_PENDING;
    e->expires_ms = 0;
    snprintf(e->client_ip, sizeof(e->client_ip), "%s", c->client_ip);
    e->next = NULL;
    *p = e;
    od->num_entries++;
    od->num_pending++;
    post = 1;
  }
  od->num_paused++;
  /* Posted under the lock: px_ondemand_stop then guarantees that no
   * worker still uses the control thread it is about to stop. Without a
   * control thread (not started yet, or being replaced by a reload) the
   * name stays pending: px_ondemand_set_control posts it. */
  if (post && od->ctl != NULL) px_control_ondemand(od->ctl, name, name_len, c->client_ip);
  pthread_mutex_unlock(&od->mu);

  /* The ClientHello is only valid during this call: keep a copy of the
   * name, and register the connection on its worker. */
  c->paused_name = gh_strndup(name, name_len);
  gh_list_insert(&c->w->paused, &c->paused_link);
  px_conn_set_timer(c, wait_ms);
  GH_DEBUG("ondemand", "%s: %s: handshake paused%s", c->client_ip, c->paused_name,
           post ? ", name posted" : ", joining the order in flight");
  return ssl_select_cert_retry;
}

void px_ondemand_attach(px_ondemand_t *od, SSL_CTX *ctx) { px_tls_ctx_set_miss(ctx, on_miss, od); }

/* unpause takes |c| off its worker's paused list. */
static void unpause(px_ondemand_t *od, px_conn_t *c) {
  gh_list_remove(&c->paused_link);
  gh_free(c->paused_name);
  c->paused_name = NULL;
  pthread_mutex_lock(&od->mu);
  od->num_paused--;
  pthread_mutex_unlock(&od->mu);
}

void px_ondemand_conn_gone(px_conn_t *c) {
  if (c->paused_name == NULL || c->w->ondemand == NULL) return;
  GH_DEBUG("ondemand", "%s: %s: client left while waiting", c->client_ip, c->paused_name);
  unpause(c->w->ondemand, c);
}

void px_ondemand_finish(px_ondemand_t *od, const char *name, int ok, const char *why) {
  size_t len = strlen(name);
  pthread_mutex_lock(&od->mu);
  if (!ok && od->holding) {
    /* Cancelled by the control thread a reload is stopping: the name
     * stays pending for the next one, its handshakes keep waiting. */
    pthread_mutex_unlock(&od->mu);
    return;
  }
  od_name_t **p = find(od, name, len);
  if (!ok) record(od, name, len, *p ? (*p)->client_ip : NULL, why ? why : "not obtained");
  if (ok) od->num_allowed++;
  else od->num_refused++;
  if (*p && (*p)->state == OD_PENDING) {
    od->num_pending--;
    if (ok) {
      remove_at(od, p);
    } else {
      (*p)->state = OD_REFUSED;
      (*p)->expires_ms = gh_now_ms() + od->conf->negative_ttl_ms;
    }
  }
  pthread_mutex_unlock(&od->mu);
  for (unsigned i = 0; i < od->num_workers; i++) {
    px_worker_t *w = od->workers[i];
    struct px_wake *wk = gh_malloc(sizeof(*wk) + len + 1);
    memcpy(wk->name, name, len + 1);
    wk->ok = ok;
    pthread_mutex_lock(&w->mu);
    wk->next = w->wakes;
    w->wakes = wk;
    pthread_mutex_unlock(&w->mu);
    uv_async_send(&w->async);
  }
}

void px_ondemand_refuse(px_ondemand_t *od, const char *name, const char *why,
                        uint64_t ttl_ms) {
  size_t len = strlen(name);
  uint64_t now = gh_now_ms();
  pthread_mutex_lock(&od->mu);
  od_name_t **p = find(od, name, len);
  if (*p == NULL) {
    if (od->num_entries >= MAX_ENTRIES) sweep(od, now);
    if (od->num_entries < MAX_ENTRIES) {
      od_name_t *e = gh_calloc(1, sizeof(*e) + len + 1);
      memcpy(e->name, name, len + 1);
      e->state = OD_REFUSED;
      e->expires_ms = now + ttl_ms;
      *p = e;
      od->num_entries++;
      record(od, name, len, NULL, why);
    }
  } else if ((*p)->state == OD_REFUSED && (*p)->expires_ms < now + ttl_ms) {
    (*p)->expires_ms = now + ttl_ms;
  }
  /* A name pending here is the manager's to answer. */
  pthread_mutex_unlock(&od->mu);
}

void px_conn_resume_handshake(px_conn_t *c);

void px_ondemand_wakeups(px_worker_t *w) {
  pthread_mutex_lock(&w->mu);
  struct px_wake *list = w->wakes;
  w->wakes = NULL;
  pthread_mutex_unlock(&w->mu);
  while (list) {
    struct px_wake *wk = list;
    list = wk->next;
    gh_link_t *l = w->paused.next;
    while (l != &w->paused) {
      px_conn_t *c = GH_CONTAINER_OF(l, px_conn_t, paused_link);
      l = l->next;
      if (strcmp(c->paused_name, wk->name) != 0) continue;
      unpause(w->ondemand, c);
      if (!wk->ok) c->ondemand_failed = 1;
      px_conn_resume_handshake(c);
    }
    gh_free(wk);
  }
}

void px_ondemand_worker_cleanup(px_worker_t *w) {
  while (w->wakes) {
    struct px_wake *wk = w->wakes;
    w->wakes = wk->next;
    gh_free(wk);
  }
}

void px_ondemand_set_policy_stats(px_ondemand_t *od, const acme_policy_stats_t *st) {
  pthread_mutex_lock(&od->mu);
  od->policy_stats = *st;
  pthread_mutex_unlock(&od->mu);
}

void px_ondemand_policy_stats(px_ondemand_t *od, acme_policy_stats_t *out) {
  pthread_mutex_lock(&od->mu);
  *out = od->policy_stats;
  pthread_mutex_unlock(&od->mu);
}
