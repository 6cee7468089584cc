/* policy.c: the asynchronous half of the on-demand policy — the negative
 * cache, the ask endpoint (cached, coalesced) and the rate limits.
 *
 * A decision is a decision_t that moves through the steps of
 * acme_policy_decide and ends in finish(), which queues it on |pending|;
 * a uv_idle_t delivers the queue on the next loop turn, so no callback ever
 * runs inside acme_policy_decide. While an ask request is in flight its
 * decisions wait on the ask_t, found by name in |inflight|.
 *
 * Teardown (acme_policy_free) closes the idle handle and frees the HTTP
 * client; queued decisions are cancelled from the idle close callback and
 * waiting ones from their request's UV_ECANCELED callback. The policy is
 * freed when the idle handle and every request are gone (|refs|). */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>

#include "acme/httpc.h"
#include "acme/policy_internal.h"
#include "common/common.h"
#include "common/log.h"

#define MAP_CAP 100000
#define MAX_ASKS_IN_FLIGHT 1024
#define MAX_CLIENT_IP_LEN 63
#define ASK_MAX_BODY (64u * 1024u)
#define DEFAULT_ASK_TIMEOUT_MS 3000

/* What ended a decision, for the counters and the negative cache. */
typedef enum {
  CLS_ALLOWED,
  CLS_STORED_ONLY,
  CLS_PRECHECK,
  CLS_NEGATIVE,
  CLS_ASK,
  CLS_UNREACHABLE,
  CLS_RATE_CLIENT_IP,
  CLS_RATE_DOMAIN,
  CLS_RATE_GLOBAL,
} cls_t;

/* What outlives one policy (acme_policy_limits_t): the buckets, the rates
 * they were filled at, and the counters. */
struct acme_policy_limits {
  acme__pmap_t domain_buckets, ip_buckets;
  acme__bucket_t global;
  conf_rate_t rate_global, rate_per_domain, rate_per_client_ip;
  int used; /* a policy has run with them */
  acme_policy_stats_t stats;
};

struct acme_policy {
  uv_loop_t *loop;
  conf_on_demand_t od; /* a copy; owns allow, ask and public_suffixes */
  acme_httpc_t *httpc; /* NULL without an ask endpoint */
  uv_idle_t idle;      /* delivers |pending| */
  gh_link_t pending;
  acme__pmap_t negative, ask_cache, inflight;
  acme_policy_limits_t *lim;
  int own_lim;   /* made by acme_policy_new, freed with the policy */
  int fresh_lim; /* no policy used |lim| before this one */
  uint64_t (*now)(void);
  int closing;
  unsigned refs; /* the idle handle and each request in flight */
};

typedef struct {
  gh_link_t link; /* in p->pending or an ask's waiters */
  acme_policy_cb cb;
  void *arg;
  int have_stored, needs_order;
  cls_t cls;
  char reason[ACME__REASON_MAX]; /* "" when none */
  char client_ip[MAX_CLIENT_IP_LEN + 1];
  size_t name_len;
  char name[];
} decision_t;

typedef struct {
  acme_policy_t *p;
  gh_link_t waiters;
  uint64_t started_ms;
  size_t name_len;
  char name[];
} ask_t;

/* ---- delivering ---- */

static void maybe_release(acme_policy_t *p) {
  if (p->refs > 0) return;
  acme__pmap_cleanup(&p->negative);
  acme__pmap_cleanup(&p->ask_cache);
  acme__pmap_cleanup(&p->inflight);
  if (p->own_lim) acme_policy_limits_free(p->lim);
  for (size_t i = 0; i < p->od.num_allow; i++) gh_free(p->od.allow[i]);
  gh_free(p->od.allow);
  for (size_t i = 0; i < p->od.num_public_suffixes; i++) gh_free(p->od.public_suffixes[i]);
  gh_free(p->od.public_suffixes);
  gh_free(p->od.ask);
  gh_free(p);
}

static void count(acme_policy_t *p, cls_t cls) {
  acme_policy_stats_t *s = &p->lim->stats;
  switch (cls) {
  case CLS_ALLOWED: s->allowed++; break;
  case CLS_STORED_ONLY: s->allowed_stored_only++; break;
  case CLS_PRECHECK: s->refused_precheck++; break;
  case CLS_NEGATIVE: s->refused_negative_cache++; break;
  case CLS_ASK: s->refused_ask++; break;
  case CLS_UNREACHABLE: s->refused_ask_unreachable++; break;
  case CLS_RATE_CLIENT_IP: s->refused_rate_client_ip++; break;
  case CLS_RATE_DOMAIN: s->refused_rate_domain++; break;
  case CLS_RATE_GLOBAL: s->refused_rate_global++; break;
  }
}

/* deliver runs |d|'s callback (or cancels it) and frees it. */
static void deliver(acme_policy_t *p, decision_t *d, int cancelled) {
  gh_list_remove(&d->link);
  int result;
  const char *reason = d->reason[0] != '\0' ? d->reason : NULL;
  if (cancelled) {
    p->lim->stats.cancelled++;
    result = UV_ECANCELED;
    reason = "cancelled";
  } else {
    count(p, d->cls);
    result = d->cls == CLS_ALLOWED       ? ACME_POLICY_ALLOWED
             : d->cls == CLS_STORED_ONLY ? ACME_POLICY_STORED_ONLY
                                         : ACME_POLICY_REFUSED;
  }
  d->cb(d->arg, result, reason);
  gh_free(d);
}

static void on_idle(uv_idle_t *h) {
  acme_policy_t *p = h->data;
  /* Only the decisions queued before this turn: a callback that decides
   * again is answered on the next turn, not in a loop here. A callback may
   * also free the policy; the rest are then cancelled by on_idle_close. */
  gh_link_t batch;
  gh_list_init(&batch);
  while (!gh_list_empty(&p->pending)) {
    gh_link_t *l = p->pending.prev;
    gh_list_remove(l);
    gh_list_insert(&batch, l);
  }
  uv_idle_stop(&p->idle);
  while (!gh_list_empty(&batch)) {
    decision_t *d = GH_CONTAINER_OF(batch.next, decision_t, link);
    if (p->closing) {
      /* Hand the rest back for on_idle_close to cancel. */
      gh_list_remove(&d->link);
      gh_list_insert(p->pending.prev, &d->link);
      continue;
    }
    deliver(p, d, 0);
  }
}

static void on_idle_close(uv_handle_t *h) {
  acme_policy_t *p = h->data;
  while (!gh_list_empty(&p->pending)) {
    deliver(p, GH_CONTAINER_OF(p->pending.next, decision_t, link), 1);
  }
  p->refs--;
  maybe_release(p);
}

/* finish ends |d| with |cls| and a reason (printf-style; NULL: none),
 * remembers a refusal of the name itself in the negative cache, and queues
 * |d| for delivery. */
static void finish(acme_policy_t *p, decision_t *d, cls_t cls, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void finish(acme_policy_t *p, decision_t *d, cls_t cls, const char *fmt, ...) {
  d->cls = cls;
  d->reason[0] = '\0';
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->reason, sizeof(d->reason), fmt, ap);
    va_end(ap);
  }
  /* Only verdicts about the name are remembered: not a down ask endpoint,
   * and not one client's rate limit (else that client could lock a name
   * out for everyone); precheck refusals are cheaper to repeat than to
   * store. */
  int remember = cls == CLS_ASK || cls == CLS_RATE_DOMAIN || cls == CLS_RATE_GLOBAL;
  if (remember && p->od.negative_ttl_ms > 0) {
    uint64_t now = p->now();
    acme__pmap_entry_t *e = acme__pmap_put(&p->negative, d->name, d->name_len, now);
    e->expires_ms = now + p->od.negative_ttl_ms;
    snprintf(e->u.verdict.reason, sizeof(e->u.verdict.reason), "%s", d->reason);
  }
  gh_list_insert(p->pending.prev, &d->link); /* last: answered in order */
  uv_idle_start(&p->idle, on_idle);
}

/* ---- rate limits ---- */

/* client_key writes the per-client bucket key for |ip|: an IPv6 client by
 * its /64 (one subscriber's allocation), an IPv4 (or v4-mapped) one by its
 * address, anything unparsable as given. */
static void client_key(char *buf, size_t buf_len, const char *ip) {
  struct in6_addr a6;
  if (strchr(ip, ':') != NULL && inet_pton(AF_INET6, ip, &a6) == 1) {
    if (IN6_IS_ADDR_V4MAPPED(&a6)) {
      inet_ntop(AF_INET, &a6.s6_addr[12], buf, (socklen_t)buf_len);
      return;
    }
    memset(&a6.s6_addr[8], 0, 8);
    char text[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &a6, text, sizeof(text));
    snprintf(buf, buf_len, "%s/64", text);
    return;
  }
  snprintf(buf, buf_len, "%s", ip);
}

/* bucket_ok reports whether the bucket of |key| in |m| (none: full) holds a
 * token. */
static int bucket_ok(acme__pmap_t *m, const conf_rate_t *rate, const char *key,
                     size_t key_len, uint64_t now) {
  if (rate->count == 0) return 1;
  acme__pmap_entry_t *e = acme__pmap_get(m, key, key_len, now);
  return e == NULL || acme__bucket_has(&e->u.bucket, rate, now);
}

static void bucket_charge(acme__pmap_t *m, const conf_rate_t *rate, const char *key,
                          size_t key_len, uint64_t now) {
  if (rate->count == 0) return;
  acme__pmap_entry_t *e = acme__pmap_put(m, key, key_len, now);
  if (e->expires_ms == 0) acme__bucket_init(&e->u.bucket, rate, now); /* new */
  acme__bucket_has(&e->u.bucket, rate, now);
  acme__bucket_take(&e->u.bucket, rate);
  /* A bucket that has refilled is the same as none: let it expire then. */
  e->expires_ms = acme__bucket_full_at(&e->u.bucket, rate);
}

size_t acme_policy_domain(const conf_on_demand_t *od, const char *name, const char **out_start) {
  size_t len = strlen(name);
  *out_start = name;
  /* An IP literal (with on_demand.allow_ip) is its own domain. */
  if (memchr(name, ':', len) != NULL || strspn(name, "0123456789.") == len) return len;
  return acme__registered_domain(name, len, (const char *const *)od->public_suffixes,
                                 od->num_public_suffixes, out_start);
}

static void step_rate(acme_policy_t *p, decision_t *d) {
  if (!d->needs_order) {
    finish(p, d, CLS_ALLOWED, NULL);
    return;
  }
  uint64_t now = p->now();
  const conf_on_demand_t *od = &p->od;
  char rate[48];
  char ip_key[MAX_CLIENT_IP_LEN + 8] = "";
  if (d->client_ip[0] != '\0') client_key(ip_key, sizeof(ip_key), d->client_ip);
  size_t ip_len = strlen(ip_key);
  const char *dom;
  size_t dom_len = acme_policy_domain(od, d->name, &dom);
  if (ip_len > 0 && !bucket_ok(&p->lim->ip_buckets, &od->rate_per_client_ip, ip_key, ip_len, now)) {
    acme__format_rate(rate, sizeof(rate), &od->rate_per_client_ip);
    finish(p, d, CLS_RATE_CLIENT_IP, "rate limit per_client_ip (%s) for %s", rate, ip_key);
    return;
  }
  if (!bucket_ok(&p->lim->domain_buckets, &od->rate_per_domain, dom, dom_len, now)) {
    acme__format_rate(rate, sizeof(rate), &od->rate_per_domain);
    finish(p, d, CLS_RATE_DOMAIN, "rate limit per_domain (%s) for %.*s", rate, (int)dom_len, dom);
    return;
  }
  if (!acme__bucket_has(&p->lim->global, &od->rate_global, now)) {
    acme__format_rate(rate, sizeof(rate), &od->rate_global);
    finish(p, d, CLS_RATE_GLOBAL, "rate limit global (%s)", rate);
    return;
  }
  /* Charged only now that all three pass: a refusal costs no other limit. */
  if (ip_len > 0) bucket_charge(&p->lim->ip_buckets, &od->rate_per_client_ip, ip_key, ip_len, now);
  bucket_charge(&p->lim->domain_buckets, &od->rate_per_domain, dom, dom_len, now);
  acme__bucket_take(&p->lim->global, &od->rate_global);
  finish(p, d, CLS_ALLOWED, NULL);
}

/* ---- ask ---- */

static void unreachable(acme_policy_t *p, decision_t *d) {
  if (d->have_stored) {
    finish(p, d, CLS_STORED_ONLY, "ask unreachable; serving the stored certificate");
  } else {
    finish(p, d, CLS_UNREACHABLE, "ask unreachable");
  }
}

static void on_ask_done(const acme_httpc_resp_t *resp, void *arg) {
  ask_t *a = arg;
  acme_policy_t *p = a->p;
  acme__pmap_entry_t *e = acme__pmap_get(&p->inflight, a->name, a->name_len, 0);
  if (e != NULL) acme__pmap_del(&p->inflight, e);
  if (p->closing || resp->error == UV_ECANCELED) {
    while (!gh_list_empty(&a->waiters)) {
      deliver(p, GH_CONTAINER_OF(a->waiters.next, decision_t, link), 1);
    }
  } else {
    p->lim->stats.ask_latency_ms_sum += gh_now_ms() - a->started_ms;
    p->lim->stats.ask_latency_count++;
    uint64_t now = p->now();
    int down = resp->error != 0 || resp->status >= 500;
    int ok = !down && resp->status >= 200 && resp->status <= 299;
    if (down) {
      p->lim->stats.ask_unreachable++;
      if (resp->error != 0) {
        GH_WARN("acme", "on_demand ask for %s: %s", a->name, resp->error_msg);
      } else {
        GH_WARN("acme", "on_demand ask for %s: %s answered %d", a->name, resp->url, resp->status);
      }
    } else {
      uint64_t ttl = ok ? p->od.ask_cache_ttl_ms : p->od.ask_negative_ttl_ms;
      if (ttl > 0) {
        e = acme__pmap_put(&p->ask_cache, a->name, a->name_len, now);
        e->expires_ms = now + ttl;
        e->u.verdict.status = resp->status;
      }
    }
    while (!gh_list_empty(&a->waiters)) {
      decision_t *d = GH_CONTAINER_OF(a->waiters.next, decision_t, link);
      gh_list_remove(&d->link);
      if (down) {
        unreachable(p, d);
      } else if (ok) {
        step_rate(p, d);
      } else {
        finish(p, d, CLS_ASK, "ask refused: %d", resp->status);
      }
    }
  }
  gh_free(a);
  p->refs--;
  maybe_release(p);
}

/* append_encoded appends |s| percent-encoded (all but RFC 3986 unreserved
 * characters) at |*pos| in |buf|, which the caller sized 3 bytes a byte. */
static void append_encoded(char *buf, size_t *pos, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (; *s != '\0'; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      buf[(*pos)++] = (char)c;
    } else {
      buf[(*pos)++] = '%';
      buf[(*pos)++] = hex[c >> 4];
      buf[(*pos)++] = hex[c & 15];
    }
  }
  buf[*pos] = '\0';
}

/* ask_url returns ASK?domain=NAME&client_ip=IP (caller frees), joining with
 * '&' when ASK already has a query and dropping any fragment. */
static char *ask_url(const char *ask, const char *name, const char *client_ip) {
  size_t base_len = strcspn(ask, "#");
  size_t cap = base_len + 32 + 3 * (strlen(name) + strlen(client_ip));
  char *url = gh_malloc(cap);
  memcpy(url, ask, base_len);
  size_t pos = base_len;
  int has_query = memchr(ask, '?', base_len) != NULL;
  int bare = has_query && (ask[base_len - 1] == '?' || ask[base_len - 1] == '&');
  const char *sep = bare ? "" : has_query ? "&" : "?";
  pos += (size_t)snprintf(url + pos, cap - pos, "%sdomain=", sep);
  append_encoded(url, &pos, name);
  pos += (size_t)snprintf(url + pos, cap - pos, "&client_ip=");
  append_encoded(url, &pos, client_ip);
  return url;
}

static void step_ask(acme_policy_t *p, decision_t *d) {
  uint64_t now = p->now();
  acme__pmap_entry_t *e = acme__pmap_get(&p->ask_cache, d->name, d->name_len, now);
  if (e != NULL) {
    p->lim->stats.ask_cache_hits++;
    int status = e->u.verdict.status;
    if (status >= 200 && status <= 299) {
      step_rate(p, d);
    } else {
      finish(p, d, CLS_ASK, "ask refused: %d", status);
    }
    return;
  }
  e = acme__pmap_get(&p->inflight, d->name, d->name_len, 0);
  if (e != NULL) {
    ask_t *a = e->u.ptr;
    p->lim->stats.ask_coalesced++;
    gh_list_insert(a->waiters.prev, &d->link);
    return;
  }
  if (p->inflight.count >= MAX_ASKS_IN_FLIGHT) {
    /* The endpoint is not keeping up; treat it as down rather than queue
     * without bound. */
    unreachable(p, d);
    return;
  }
  char *url = ask_url(p->od.ask, d->name, d->client_ip);
  acme_httpc_req_t req = {
      .method = "GET",
      .url = url,
      .timeout_ms = p->od.ask_timeout_ms ? p->od.ask_timeout_ms : DEFAULT_ASK_TIMEOUT_MS,
      .max_body = ASK_MAX_BODY,
  };
  ask_t *a = gh_calloc(1, sizeof(*a) + d->name_len + 1);
  a->p = p;
  gh_list_init(&a->waiters);
  a->started_ms = gh_now_ms();
  a->name_len = d->name_len;
  memcpy(a->name, d->name, d->name_len);
  int rc = acme_httpc_request(p->httpc, &req, on_ask_done, a);
  gh_free(url);
  if (rc != 0) {
    GH_WARN("acme", "on_demand ask for %s: %s", d->name, uv_strerror(rc));
    gh_free(a);
    p->lim->stats.ask_unreachable++;
    unreachable(p, d);
    return;
  }
  p->lim->stats.ask_requests++;
  p->refs++;
  e = acme__pmap_put(&p->inflight, d->name, d->name_len, 0);
  e->u.ptr = a;
  gh_list_insert(&a->waiters, &d->link);
}

/* ---- the API ---- */

static char **dup_list(char *const *list, size_t num) {
  if (num == 0) return NULL;
  char **out = gh_calloc(num, sizeof(*out));
  for (size_t i = 0; i < num; i++) out[i] = gh_strdup(list[i]);
  return out;
}

acme_policy_limits_t *acme_policy_limits_new(void) {
  acme_policy_limits_t *l = gh_calloc(1, sizeof(*l));
  acme__pmap_init(&l->domain_buckets, MAP_CAP);
  acme__pmap_init(&l->ip_buckets, MAP_CAP);
  return l;
}

void acme_policy_limits_free(acme_policy_limits_t *l) {
  if (l == NULL) return;
  acme__pmap_cleanup(&l->domain_buckets);
  acme__pmap_cleanup(&l->ip_buckets);
  gh_free(l);
}

static int rate_eq(const conf_rate_t *a, const conf_rate_t *b) {
  return a->count == b->count && (a->count == 0 || a->per_ms == b->per_ms);
}

/* limits_adopt makes |l| serve the rates of |od|: a bucket filled at
 * another rate is not comparable (its level is in that rate's units), so
 * a changed rate starts from full buckets. */
static void limits_adopt(acme_policy_limits_t *l, const conf_on_demand_t *od, uint64_t now) {
  if (!l->used || !rate_eq(&l->rate_global, &od->rate_global))
    acme__bucket_init(&l->global, &od->rate_global, now);
  if (l->used && !rate_eq(&l->rate_per_domain, &od->rate_per_domain)) {
    acme__pmap_cleanup(&l->domain_buckets);
    acme__pmap_init(&l->domain_buckets, MAP_CAP);
  }
  if (l->used && !rate_eq(&l->rate_per_client_ip, &od->rate_per_client_ip)) {
    acme__pmap_cleanup(&l->ip_buckets);
    acme__pmap_init(&l->ip_buckets, MAP_CAP);
  }
  l->rate_global = od->rate_global;
  l->rate_per_domain = od->rate_per_domain;
  l->rate_per_client_ip = od->rate_per_client_ip;
  l->used = 1;
}

acme_policy_t *acme_policy_new(char **out_err, uv_loop_t *loop, const conf_on_demand_t *od,
                               const char *const *ca_roots, size_t num_roots,
                               acme_policy_limits_t *limits) {
  acme_policy_t *p = gh_calloc(1, sizeof(*p));
  if (od->ask != NULL) {
    p->httpc = acme_httpc_new(out_err, loop, ca_roots, num_roots);
    if (p->httpc == NULL) {
      gh_free(p);
      return NULL;
    }
  }
  p->loop = loop;
  p->od = *od;
  p->od.allow = dup_list(od->allow, od->num_allow);
  p->od.public_suffixes = dup_list(od->public_suffixes, od->num_public_suffixes);
  p->od.ask = od->ask != NULL ? gh_strdup(od->ask) : NULL;
  p->now = gh_now_ms;
  gh_list_init(&p->pending);
  acme__pmap_init(&p->negative, MAP_CAP);
  acme__pmap_init(&p->ask_cache, MAP_CAP);
  acme__pmap_init(&p->inflight, MAX_ASKS_IN_FLIGHT + 1);
  p->own_lim = limits == NULL;
  p->lim = limits != NULL ? limits : acme_policy_limits_new();
  p->fresh_lim = !p->lim->used;
  limits_adopt(p->lim, &p->od, p->now());
  uv_idle_init(loop, &p->idle);
  p->idle.data = p;
  p->refs = 1;
  return p;
}

void acme_policy_free(acme_policy_t *p) {
  if (p == NULL || p->closing) return;
  p->closing = 1;
  uv_close((uv_handle_t *)&p->idle, on_idle_close);
  /* Its requests end later with UV_ECANCELED, in on_ask_done. */
  acme_httpc_free(p->httpc);
  p->httpc = NULL;
}

int acme_policy_decide(acme_policy_t *p, const char *name, const char *client_ip,
                       int have_stored, int needs_order, acme_policy_cb cb, void *arg) {
  if (name == NULL || cb == NULL || p->closing) return UV_EINVAL;
  if (client_ip == NULL) client_ip = "";
  if (strlen(client_ip) > MAX_CLIENT_IP_LEN) return UV_EINVAL;
  /* The name is checked before its length is trusted for a copy. */
  size_t name_len = strnlen(name, 256);
  decision_t *d = gh_calloc(1, sizeof(*d) + name_len + 1);
  d->cb = cb;
  d->arg = arg;
  d->have_stored = have_stored;
  d->needs_order = needs_order;
  memcpy(d->client_ip, client_ip, strlen(client_ip));
  memcpy(d->name, name, name_len);
  d->name_len = name_len;

  const char *bad = acme_policy_precheck(&p->od, name, name_len);
  if (bad != NULL) {
    finish(p, d, CLS_PRECHECK, "%s", bad);
    return 0;
  }
  acme__pmap_entry_t *e = acme__pmap_get(&p->negative, d->name, d->name_len, p->now());
  if (e != NULL) {
    finish(p, d, CLS_NEGATIVE, "recently refused: %s", e->u.verdict.reason);
    return 0;
  }
  if (p->od.ask != NULL) {
    step_ask(p, d);
  } else {
    step_rate(p, d);
  }
  return 0;
}

void acme_policy_stats(const acme_policy_t *p, acme_policy_stats_t *out) {
  *out = p->lim->stats;
  out->num_negative = p->negative.count;
  out->num_ask_cached = p->ask_cache.count;
  out->num_domain_buckets = p->lim->domain_buckets.count;
  out->num_ip_buckets = p->lim->ip_buckets.count;
}

void acme__policy_set_clock(acme_policy_t *p, uint64_t (*now_ms)(void)) {
  p->now = now_ms != NULL ? now_ms : gh_now_ms;
  /* A bucket carried over from an earlier policy keeps its state. */
  if (p->fresh_lim) acme__bucket_init(&p->lim->global, &p->od.rate_global, p->now());
}

void acme__policy_set_map_cap(acme_policy_t *p, size_t cap) {
  p->negative.cap = cap;
  p->ask_cache.cap = cap;
  p->lim->domain_buckets.cap = cap;
  p->lim->ip_buckets.cap = cap;
}
