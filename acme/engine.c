/* engine.c: the ACME engine (RFC 8555) — its lifecycle, the job driver, the
 * one place where responses are retried, and the states that are not about
 * an order: directory, account and revocation. order.c holds the order's
 * states.
 *
 * A job is one call of the public API: an order, a revocation, an account
 * key rollover or an account deactivation. It moves through
 * the explicit states of acme_job_state_t: job_process() runs the request
 * half of its state, job_on_http() receives every response, keeps its
 * Replay-Nonce, and decides whether to send the same request again
 * (connection errors and timeouts, badNonce, serverInternal and 5xx,
 * rateLimited with a short Retry-After: bounded, with exponential back-off
 * and jitter) or to hand it to the response half, which picks the next
 * state. Everything runs on the engine's loop; nothing blocks but the
 * storage calls (small local files) and key generation. */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/pool.h>
#include <openssl/rand.h>

#include "acme/csr.h"
#include "acme/engine_internal.h"
#include <strings.h>

#include "acme/jws.h"
#include "common/b64.h"
#include "common/common.h"
#include "common/log.h"

#define JSON_MAX_BODY (256u * 1024u)
#define MAX_ATTEMPTS 5        /* transport errors and 5xx, per request */
/* badNonce, per request. A nonce is refused for the CA's reasons, and each
 * retry carries the fresh one from the refusal, at once. At 10, Pebble's
 * 50% rejection failed 1 request in 2048: an order of a dozen requests
 * about 1 in 170, seen in CI. At 20, 1 request in 2 million. */
#define MAX_NONCE_RETRIES 20
#define MAX_RATE_RETRIES 2    /* rateLimited with a short Retry-After */
#define RATE_WAIT_CAP_MS 60000u
#define BACKOFF_BASE_MS 250u
#define BACKOFF_CAP_MS 30000u
#define LOCK_TTL_S 900u
#define MAX_NAMES 100
#define HOOK_TIMEOUT_MS 120000u

enum { TIMER_PROCESS = 0, TIMER_SEND, TIMER_FAIL, TIMER_CANCEL, TIMER_HOOK_TIMEOUT, TIMER_STORED };

typedef struct {
  uv_process_t proc;
  acme_job_t *job; /* NULL: nobody waits (cleanup) */
} hook_t;

static void job_process(acme_job_t *job);
static void job_send(acme_job_t *job);
static void job_finish(acme_job_t *job, int status, const char *err, acme_cert_t *cert);
static void engine_destroy(acme_engine_t *e);

/* ---- helpers ---- */

const char *acme__json_str(acme_job_t *job, const cJSON *obj, const char *field) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
  if (!cJSON_IsString(v) || v->valuestring == NULL || v->valuestring[0] == '\0') {
    acme__job_fail(job, UV_EPROTO, "%s %s: the CA's response has no string field \"%s\"",
                   job->method, job->url, field);
    return NULL;
  }
  return v->valuestring;
}

const char *acme__url_problem(const char *url) {
  if (url == NULL || url[0] == '\0') return "it is empty";
  size_t n = strlen(url);
  if (n > 2048) return "it is over 2048 bytes";
  if (strncasecmp(url, "https://", 8) != 0) return "it is not an https:// URL";
  const char *host = url + 8;
  if (host[0] == '\0' || host[0] == '/' || host[0] == ':' || host[0] == '?' || host[0] == '#')
    return "it has no host";
  size_t auth = strcspn(host, "/?#");
  if (memchr(host, '@', auth) != NULL) return "it carries a user name";
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)url[i];
    if (c <= 0x20 || c >= 0x7f) return "it holds a space, control or non-ASCII byte";
  }
  return NULL;
}

const char *acme__json_url(acme_job_t *job, const cJSON *obj, const char *field) {
  const char *url = acme__json_str(job, obj, field);
  if (url == NULL) return NULL;
  const char *why = acme__url_problem(url);
  if (why != NULL) {
    acme__job_fail(job, UV_EPROTO, "%s %s: field \"%s\" of the CA's response is refused: %s",
                   job->method, job->url, field, why);
    return NULL;
  }
  return url;
}

uint64_t acme__retry_after_ms(const acme_httpc_resp_t *resp, uint64_t dflt_ms, uint64_t cap_ms) {
  const char *ra = acme_httpc_header(resp, "Retry-After");
  uint64_t ms;
  if (ra == NULL || acme__retry_after_parse(ra, time(NULL), &ms) != 0) return dflt_ms;
  return ms > cap_ms ? cap_ms : ms;
}

static uint64_t jitter(uint64_t max) {
  uint32_t r = 0;
  RAND_bytes((uint8_t *)&r, sizeof(r));
  return max ? r % (max + 1) : 0;
}

/* account_id_from_email derives the storage account id: the e-mail address
 * in lower case when it is a valid id, else "default". */
static char *account_id_from_email(const char *email) {
  if (email == NULL || email[0] == '\0' || strlen(email) > 200) return gh_strdup("default");
  char *id = gh_strdup(email);
  for (char *p = id; *p; p++) {
    *p = (char)tolower((unsigned char)*p);
    if (!(isalnum((unsigned char)*p) || strchr("._@+-", *p) != NULL)) {
      gh_free(id);
      return gh_strdup("default");
    }
  }
  if (!isalnum((unsigned char)id[0])) {
    gh_free(id);
    return gh_strdup("default");
  }
  return id;
}

/* ---- job lifecycle ---- */

static void job_free(acme_job_t *job) {
  acme_engine_t *e = job->engine;
  for (size_t i = 0; i < job->num_names; i++) gh_free(job->names[i]);
  gh_free(job->names);
  gh_free(job->fail_msg);
  gh_free(job->url);
  gh_free(job->payload);
  gh_free(job->order_url);
  gh_free(job->finalize_url);
  gh_free(job->cert_url);
  for (size_t i = 0; i < job->num_authz; i++) gh_free(job->authz_urls[i]);
  gh_free(job->authz_urls);
  gh_free(job->chall_url);
  gh_free(job->chall_token);
  gh_free(job->chall_name);
  gh_free(job->keyauth);
  gh_free(job->dns_fqdn);
  gh_free(job->dns_value);
  EVP_PKEY_free(job->cert_key);
  gh_free(job->chain_pem);
  acme__links_free(job->alt_urls, job->num_alt);
  gh_free(job->revoke_der_b64);
  EVP_PKEY_free(job->sign_key);
  EVP_PKEY_free(job->new_key);
  EVP_PKEY_free(job->probe_key);
  gh_free(job->ari_cert_id);
  gh_free(job->ari_explanation);
  acme_cert_unref(job->stored);
  gh_free(job->profile);
  gh_free(job->ca_errors);
  gh_free(job->issued_by);
  gh_free(job->stored_profile);
  gh_free(job);
  if (--e->num_jobs == 0 && e->closing) engine_destroy(e);
}

static void job_maybe_free(acme_job_t *job) {
  if (job->done && job->in_flight == 0 && job->timer_closed) job_free(job);
}

static void on_timer_close(uv_handle_t *h) {
  acme_job_t *job = h->data;
  job->timer_closed = 1;
  job_maybe_free(job);
}

static void on_timer(uv_timer_t *t) {
  acme_job_t *job = t->data;
  if (job->done) return;
  switch (job->timer_action) {
    case TIMER_SEND: job_send(job); break;
    case TIMER_FAIL: job_finish(job, job->fail_status, job->fail_msg, NULL); break;
    case TIMER_CANCEL: job_finish(job, UV_ECANCELED, "acme: the engine was stopped", NULL); break;
    case TIMER_STORED: job_finish(job, 0, NULL, job->stored); break;
    case TIMER_HOOK_TIMEOUT:
      acme__job_fail(job, UV_ETIMEDOUT, "dns hook %s present %s: no exit after %u s",
                     job->engine->acme->dns_hook, job->dns_fqdn ? job->dns_fqdn : "?",
                     HOOK_TIMEOUT_MS / 1000);
      break;
    default: job_process(job); break;
  }
}

static void job_timer(acme_job_t *job, int action, uint64_t delay_ms) {
  job->timer_action = action;
  uv_timer_start(&job->timer, on_timer, delay_ms, 0);
}

static acme_job_t *job_new(acme_engine_t *e, const char *const *names, size_t num_names) {
  acme_job_t *job = gh_calloc(1, sizeof(*job));
  job->engine = e;
  job->ca = &e->cas[0];
  job->chall_type = ACME_CHALL_NONE;
  job->used_chall = ACME_CHALL_NONE;
  job->started_ms = gh_now_ms();
  job->names = gh_calloc(num_names ? num_names : 1, sizeof(char *));
  for (size_t i = 0; i < num_names; i++) job->names[i] = gh_strdup(names[i]);
  job->num_names = num_names;
  uv_timer_init(e->loop, &job->timer);
  job->timer.data = job;
  job->next = e->jobs;
  e->jobs = job;
  e->num_jobs++;
  return job;
}

static void job_unlink(acme_job_t *job) {
  for (acme_job_t **p = &job->engine->jobs; *p != NULL; p = &(*p)->next) {
    if (*p == job) {
      *p = job->next;
      job->next = NULL;
      return;
    }
  }
}

/* kick_account_waiters restarts the jobs parked while another one found or
 * created |ca|'s account. */
static void kick_account_waiters(acme_ca_t *ca) {
  for (acme_job_t *j = ca->engine->jobs; j != NULL; j = j->next) {
    if (!j->done && j->ca == ca && j->state == ACME_JOB_ACCOUNT_WAIT) {
      j->state = ACME_JOB_ACCOUNT;
      job_timer(j, TIMER_PROCESS, 0);
    }
  }
}

/* account_release gives up a job's finding or creating of its CA's
 * account, so that another job may try. */
static void account_release(acme_job_t *job) {
  acme_ca_t *ca = job->ca;
  if (!job->account_owner) return;
  job->account_owner = 0;
  ca->account_busy = 0;
  if (job->probe_key != NULL) {
    /* An unfinished rollover is still unresolved: load and probe again. */
    EVP_PKEY_free(ca->account_key);
    ca->account_key = NULL;
    gh_free(ca->thumbprint);
    ca->thumbprint = NULL;
    EVP_PKEY_free(job->probe_key);
    job->probe_key = NULL;
  }
  kick_account_waiters(ca);
}

/* ca_usable reports whether orders may go to |ca| now: it is not backing
 * off after failures of its own. */
static int ca_usable(acme_ca_t *ca) {
  if (ca->engine->num_cas < 2) return 1; /* a lone CA is always tried */
  acme__ca_backoff_load(ca);
  int64_t until = atomic_load(&ca->backoff_until);
  return until == 0 || until <= (int64_t)time(NULL);
}

static acme_ca_t *ca_of(acme_engine_t *e, const char *directory);

/* stored_meta returns the meta.json of |name|'s stored certificate,
 * parsed (caller deletes), or NULL. */
static cJSON *stored_meta(acme_engine_t *e, const char *name) {
  acme_cert_t *cert = NULL;
  char *meta = NULL, *err = NULL;
  cJSON *m = NULL;
  if (acme_storage_cert_load(e->storage, &cert, &meta, &err, name) == 0) m = cJSON_Parse(meta);
  acme_cert_unref(cert);
  gh_free(meta);
  gh_free(err);
  return m;
}

/* profile_for returns the ACME profile |job| (an order) asks |ca| for
 * (a new string, or NULL for the CA's default): its managed site's
 * acme_profile, else the CA's profile (its own or acme.profile), else the
 * profile its stored certificate was issued under, so a renewal keeps it
 * (unless another of the configured CAs issued it). */
static char *profile_for(acme_ca_t *ca, const acme_job_t *job) {
  acme_engine_t *e = ca->engine;
  const char *name = job->names[0];
  for (size_t i = 0; i < e->conf->num_sites; i++) {
    const conf_site_t *s = &e->conf->sites[i];
    if (s->num_hosts > 0 && strcmp(s->hosts[0], name) == 0 && s->acme_profile != NULL)
      return gh_strdup(s->acme_profile);
  }
  if (ca->conf.profile != NULL) return gh_strdup(ca->conf.profile);
  /* Not a profile another of the configured CAs gave it: each CA names
   * its own. */
  acme_ca_t *from = ca_of(e, job->issued_by);
  const char *p = job->stored_profile;
  if (p != NULL && p[0] != '\0' && strlen(p) <= 64 && (from == NULL || from == ca))
    return gh_strdup(p);
  return NULL;
}

/* job_use_ca makes |ca| the one |job| talks to. A renewal names the
 * certificate it replaces (ARI "replaces") only to the CA that issued it. */
static void job_use_ca(acme_job_t *job, acme_ca_t *ca) {
  job->ca = ca;
  if (job->kind != ACME_KIND_OBTAIN) return;
  gh_free(job->profile);
  job->profile = profile_for(ca, job);
  if (job->ari_cert_id != NULL && job->issued_by != NULL &&
      strcmp(job->issued_by, ca->conf.directory) != 0) {
    gh_free(job->ari_cert_id);
    job->ari_cert_id = NULL;
  }
}

/* job_fall_back moves an order that failed at its CA for a reason of the
 * CA's to the next usable CA, starting over there. Returns 1 if it did;
 * 0 when the failure is final (there is no such CA, or it is not the
 * CA's). */
static int job_fall_back(acme_job_t *job, int status, const char *err) {
  acme_engine_t *e = job->engine;
  acme_ca_t *from = job->ca;
  int fault = job->ca_fault, skip = job->ca_skip;
  job->ca_fault = job->ca_skip = 0;
  if (job->kind != ACME_KIND_OBTAIN || status == 0 || status == UV_ECANCELED || e->closing ||
      (!fault && !skip))
    return 0;
  if (fault) acme__ca_failed(from, job->ca_retry_after_ms, err);
  acme_ca_t *next = NULL;
  for (size_t i = from->index + 1; i < e->num_cas && next == NULL; i++)
    if (ca_usable(&e->cas[i])) next = &e->cas[i];
  if (next == NULL) return 0;
  atomic_fetch_add_explicit(&from->fallbacks, 1, memory_order_relaxed);
  GH_WARN("acme", "order for %s: CA %s failed (%s); trying CA %s", job->names[0], from->name,
          err ? err : "?", next->name);
  char *errs = gh_asprintf("%s%sCA %s: %s", job->ca_errors ? job->ca_errors : "",
                           job->ca_errors ? "; " : "", from->name, err ? err : "?");
  gh_free(job->ca_errors);
  job->ca_errors = errs;
  account_release(job);
  acme__order_cleanup(job);
  acme__order_reset(job);
  job_use_ca(job, next);
  job->state = ACME_JOB_DIRECTORY;
  job_timer(job, TIMER_PROCESS, 0);
  return 1;
}

static void job_finish(acme_job_t *job, int status, const char *err, acme_cert_t *cert) {
  if (job->done) return;
  if (job_fall_back(job, status, err)) return;
  acme_engine_t *e = job->engine;
  acme_ca_t *ca = job->ca;
  job->done = 1;
  if (job->kind == ACME_KIND_OBTAIN && status != UV_ECANCELED && ca != NULL) {
    atomic_fetch_add_explicit(&ca->order_stats[acme__job_stats_chall(job)][status == 0 ? 0 : 1], 1,
                              memory_order_relaxed);
    if (status == 0) acme__ca_ok(ca);
  }
  char *full = NULL;
  if (status != 0 && job->ca_errors != NULL) {
    /* The CAs left before this one say why they were. */
    full = gh_asprintf("%s (before: %s)", err ? err : "unknown error", job->ca_errors);
    err = full;
  }
  if (job->kind == ACME_KIND_OBTAIN && status != UV_ECANCELED &&
      !(status == UV_EBUSY && acme_storage_shared(e->storage)))
    acme__order_log_add(e, job, status, err);
  account_release(job);
  acme__caa_stop(job);
  job->state = ACME_JOB_DONE;
  if (job->hook != NULL) uv_process_kill(&((hook_t *)job->hook)->proc, SIGTERM);
  acme__order_cleanup(job);
  uint64_t ms = gh_now_ms() - job->started_ms;
  static const char *const whats[] = {"order", "revocation", "key rollover", "deactivation",
                                      "renewal info"};
  const char *what = whats[job->kind];
  const char *name = job->num_names ? job->names[0] : "?";
  if (status == 0) {
    GH_INFO("acme", "%s for %s (%zu names) finished in %llu ms%s%s", what, name, job->num_names,
            (unsigned long long)ms, e->num_cas > 1 ? " at CA " : "",
            e->num_cas > 1 ? ca->name : "");
  } else if ((job->kind == ACME_KIND_ARI && status == UV_ENOTSUP) ||
             (status == UV_EBUSY && acme_storage_shared(e->storage))) {
    /* No renewal information; or another node of the fleet orders it. */
    GH_DEBUG("acme", "%s for %s: %s", what, name, err ? err : "not supported");
  } else {
    GH_WARN("acme", "%s for %s (%zu names) failed after %llu ms: %s", what, name,
            job->num_names, (unsigned long long)ms, err ? err : "unknown error");
  }
  job_unlink(job);
  if (job->kind == ACME_KIND_ARI) {
    if (job->ari_cb) job->ari_cb(job->arg, status, status ? err : NULL, status ? NULL : &job->ari);
  } else if (job->kind != ACME_KIND_OBTAIN) {
    if (job->status_cb) job->status_cb(job->arg, status, status ? err : NULL);
  } else if (job->obtain_cb) {
    job->obtain_cb(job->arg, status, status ? err : NULL, status ? NULL : cert);
  }
  gh_free(full);
  /* Released after the callback: in a fleet, what it records about the
   * name (a refusal others should not repeat) is in the store before
   * the nodes waiting on this lock see it go. */
  acme__storage_unlock(job->lock);
  job->lock = NULL;
  uv_timer_stop(&job->timer);
  uv_close((uv_handle_t *)&job->timer, on_timer_close);
}

static void job_failv(acme_job_t *job, int status, const char *fmt, va_list ap) {
  char buf[4096];
  vsnprintf(buf, sizeof(buf), fmt, ap);
  char *msg = gh_asprintf("acme: %s", buf);
  job_finish(job, status, msg, NULL);
  gh_free(msg);
}

void acme__job_fail(acme_job_t *job, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  job_failv(job, status, fmt, ap);
  va_end(ap);
}

void acme__job_ca_fault(acme_job_t *job, int status, const char *fmt, ...) {
  job->ca_fault = 1;
  va_list ap;
  va_start(ap, fmt);
  job_failv(job, status, fmt, ap);
  va_end(ap);
}

void acme__job_succeed(acme_job_t *job, acme_cert_t *cert) { job_finish(job, 0, NULL, cert); }

/* ---- sending: the request as the state built it, signed anew each try ---- */

static void job_on_http(const acme_httpc_resp_t *resp, void *arg);

void acme__job_request(acme_job_t *job, const char *method, const char *url,
                       const char *payload, size_t max_body) {
  if (job->url != url) {
    gh_free(job->url);
    job->url = gh_strdup(url);
  }
  gh_free(job->payload);
  job->payload = payload ? gh_strdup(payload) : NULL;
  job->method = method;
  job->max_body = max_body ? max_body : JSON_MAX_BODY;
  job->use_jwk = job->state == ACME_JOB_ACCOUNT || job->sign_key != NULL;
  job->attempts = job->nonce_retries = job->rate_retries = 0;
  job_send(job);
}

static void job_send(acme_job_t *job) {
  acme_ca_t *ca = job->ca;
  acme_engine_t *e = job->engine;
  if (e->closing) {
    job_finish(job, UV_ECANCELED, "acme: the engine was stopped", NULL);
    return;
  }
  char *why = NULL;
  if (!acme__storage_lock_fresh(job->lock, &why)) {
    /* A fleet's lock this node may have lost: not one more request. */
    acme__job_fail(job, UV_ETIMEDOUT, "%s: stopped before the next ACME request: %s",
                   job->names[0], why);
    gh_free(why);
    return;
  }
  acme_httpc_req_t req;
  memset(&req, 0, sizeof(req));
  acme_httpc_header_t hdr = {"Content-Type", "application/jose+json"};
  char *body = NULL;
  job->fetching_nonce = 0;
  if (job->payload == NULL) {
    req.method = job->method;
    req.url = job->url;
  } else {
    char *nonce = acme__nonce_pop(&ca->nonces);
    if (nonce == NULL) {
      job->fetching_nonce = 1;
      req.method = "HEAD";
      req.url = ca->url_new_nonce;
    } else {
      char *err = NULL;
      EVP_PKEY *key = job->sign_key    ? job->sign_key
                      : job->probe_key ? job->probe_key
                                       : ca->account_key;
      body = acme__jws_sign(&err, key, job->use_jwk ? NULL : ca->kid, nonce, job->url,
                            job->payload);
      gh_free(nonce);
      if (body == NULL) {
        acme__job_fail(job, UV_EINVAL, "signing POST %s: %s", job->url, err);
        gh_free(err);
        return;
      }
      req.method = "POST";
      req.url = job->url;
      req.headers = &hdr;
      req.num_headers = 1;
      req.body = body;
      req.body_len = strlen(body);
      req.max_body = job->max_body;
    }
  }
  if (req.max_body == 0) req.max_body = job->max_body ? job->max_body : JSON_MAX_BODY;
  int rc = acme_httpc_request(ca->httpc, &req, job_on_http, job);
  gh_free(body);
  if (rc != 0) {
    acme__job_fail(job, rc, "%s %s: %s", req.method, req.url, uv_strerror(rc));
    return;
  }
  job->in_flight++;
}

static int transport_retryable(int err) {
  return err == UV_ETIMEDOUT || err == UV_ECONNREFUSED || err == UV_ECONNRESET ||
         err == UV_EOF || err == UV_EPIPE || err == UV_EAI_AGAIN || err == UV_ECONNABORTED ||
         err == UV_EHOSTUNREACH || err == UV_ENETUNREACH;
}

/* job_backoff is the one place where a failed exchange is tried again:
 * exponential back-off with jitter, bounded attempts. Returns 1 if a retry
 * was scheduled. */
static int job_backoff(acme_job_t *job, uint64_t min_delay_ms) {
  if (++job->attempts >= MAX_ATTEMPTS) return 0;
  uint64_t d = (uint64_t)BACKOFF_BASE_MS << (job->attempts - 1);
  if (d > BACKOFF_CAP_MS) d = BACKOFF_CAP_MS;
  d = d / 2 + jitter(d / 2);
  if (d < min_delay_ms) d = min_delay_ms;
  GH_DEBUG("acme", "retrying %s %s in %llu ms (attempt %u)", job->method, job->url,
           (unsigned long long)d, job->attempts + 1);
  job_timer(job, TIMER_SEND, d);
  return 1;
}

static void job_response(acme_job_t *job, const acme_httpc_resp_t *resp);

/* paused_account says once, clearly, that the CA has paused this account
 * (Let's Encrypt does after too many failed validations for a name: every
 * order for it fails until someone visits the unpause URL in the error). */
static int paused_account(acme_ca_t *ca, const acme_problem_t *p) {
  if (!acme__problem_is(p, "unauthorized")) return 0;
  const char *url = strstr(p->detail, "https://");
  if (url == NULL || strstr(p->detail, "paus") == NULL) return 0;
  size_t n = strcspn(url, " \t\r\n\"'<>");
  if (ca->paused_logged) return 1;
  ca->paused_logged = 1;
  GH_ERROR("acme", "the CA has PAUSED account %s at %s: orders fail until it is unpaused at "
           "%.*s (%s)", ca->account_id, ca->conf.directory, (int)n, url, p->detail);
  return 1;
}

static void job_on_http(const acme_httpc_resp_t *resp, void *arg) {
  acme_job_t *job = arg;
  acme_engine_t *e = job->engine;
  acme_ca_t *ca = job->ca;
  job->in_flight--;
  if (job->done) {
    job_maybe_free(job);
    return;
  }
  if (e->closing || resp->error == UV_ECANCELED) {
    job_finish(job, UV_ECANCELED, "acme: the engine was stopped", NULL);
    return;
  }
  if (resp->error != 0) {
    if (transport_retryable(resp->error) && job_backoff(job, 0)) return;
    acme__job_ca_fault(job, resp->error, "%s",
                       resp->error_msg ? resp->error_msg : "request failed");
    return;
  }
  acme__nonce_push(&ca->nonces, acme_httpc_header(resp, "Replay-Nonce"));
  if (job->fetching_nonce) {
    job->fetching_nonce = 0;
    if (resp->status >= 500 && job_backoff(job, 0)) return;
    if (ca->nonces.num_nonces == 0) {
      acme__job_ca_fault(job, UV_EPROTO, "HEAD %s: status %d and no usable Replay-Nonce header",
                         ca->url_new_nonce, resp->status);
      return;
    }
    job_send(job);
    return;
  }
  if (resp->status >= 400) {
    acme_problem_t p;
    int have = acme__problem_parse(&p, resp->body, resp->body_len) == 0;
    const char *what = have ? p.message : "no problem document";
    if (have && acme__problem_is(&p, "badNonce") && job->nonce_retries++ < MAX_NONCE_RETRIES) {
      acme__problem_cleanup(&p);
      job_send(job); /* with the fresh nonce from this very response */
      return;
    }
    if (job->state == ACME_JOB_NEW_ORDER && job->ari_cert_id != NULL && resp->status < 500 &&
        !(have && (acme__problem_is(&p, "rateLimited") ||
                   acme__problem_is(&p, "accountDoesNotExist") ||
                   acme__problem_is(&p, "badNonce")))) {
      /* RFC 9773 5: a CA may refuse "replaces" (alreadyReplaced: an order
       * that reached the CA but not our storage already replaced it; or an
       * identifier it does not accept). Renewing matters more: order again
       * without it. */
      GH_WARN("acme", "%s %s: the order replacing %s was refused (%s): ordering without "
              "\"replaces\"", job->method, job->url, job->ari_cert_id, what);
      gh_free(job->ari_cert_id);
      job->ari_cert_id = NULL;
      if (have) acme__problem_cleanup(&p);
      job_process(job);
      return;
    }
    if (have && job->state == ACME_JOB_ACCOUNT && job->account_lookup &&
        acme__problem_is(&p, "accountDoesNotExist")) {
      acme__problem_cleanup(&p);
      if (job->probe_key != NULL) {
        /* The rollover never reached the CA: look up the current key. */
        EVP_PKEY_free(job->probe_key);
        job->probe_key = NULL;
      } else {
        job->account_lookup = 0; /* the stored key has no account yet: create it */
      }
      job_process(job);
      return;
    }
    if (have && job->kind == ACME_KIND_OBTAIN && job->state != ACME_JOB_ACCOUNT &&
        acme__problem_is(&p, "accountDoesNotExist") && job->account_resets++ == 0) {
      /* The CA no longer knows the account we hold (a CA reset, or it was
       * deactivated elsewhere): forget it, find or create it again, and
       * carry on with this job. */
      acme__problem_cleanup(&p);
      GH_WARN("acme", "account %s at %s: the CA does not know it any more; registering again",
              ca->account_id, ca->conf.directory);
      gh_free(ca->kid);
      ca->kid = NULL;
      job->account_lookup = 1;
      acme__job_goto(job, ACME_JOB_ACCOUNT);
      return;
    }
    if (have && acme__problem_is(&p, "rateLimited")) {
      uint64_t wait = acme__retry_after_ms(resp, UINT64_MAX, UINT64_MAX);
      if (wait <= RATE_WAIT_CAP_MS && job->rate_retries++ < MAX_RATE_RETRIES) {
        acme__problem_cleanup(&p);
        GH_WARN("acme", "%s %s: rate limited, retrying in %llu ms", job->method, job->url,
                (unsigned long long)wait);
        job_timer(job, TIMER_SEND, wait);
        return;
      }
      char ra[64] = "";
      if (wait != UINT64_MAX) snprintf(ra, sizeof(ra), " (retry after %llu s)",
                                       (unsigned long long)(wait / 1000));
      job->ca_retry_after_ms = wait != UINT64_MAX ? wait : 0;
      acme__job_ca_fault(job, UV_EAGAIN, "%s %s: status %d: %s%s", job->method, job->url,
                         resp->status, what, ra);
      acme__problem_cleanup(&p);
      return;
    }
    if ((resp->status >= 500 || (have && acme__problem_is(&p, "serverInternal"))) &&
        job_backoff(job, acme__retry_after_ms(resp, 0, BACKOFF_CAP_MS))) {
      acme__problem_cleanup(&p);
      return;
    }
    /* The CA's own trouble: it fails, or it has paused the account. */
    job->ca_fault = resp->status >= 500 || (have && (acme__problem_is(&p, "badNonce") ||
                                                     acme__problem_is(&p, "serverInternal") ||
                                                     paused_account(ca, &p)));
    acme__job_fail(job, UV_EPROTO, "%s %s: status %d: %s", job->method, job->url, resp->status,
                   what);
    if (have) acme__problem_cleanup(&p);
    return;
  }
  job_response(job, resp);
}

/* ---- the driver ---- */

void acme__job_goto(acme_job_t *job, acme_job_state_t state) {
  job->state = state;
  job_process(job);
}

void acme__job_wait(acme_job_t *job, acme_job_state_t state, uint64_t delay_ms) {
  job->state = state;
  job_timer(job, TIMER_PROCESS, delay_ms);
}

static void account_request(acme_job_t *job);
static void key_change_request(acme_job_t *job);

/* after_directory is the state after the directory: the account, except
 * for a revocation signed by the certificate's key, which needs none. */
static acme_job_state_t after_directory(const acme_job_t *job) {
  if (job->kind == ACME_KIND_ARI) return ACME_JOB_RENEWAL_INFO; /* unauthenticated */
  return job->kind == ACME_KIND_REVOKE && job->sign_key != NULL ? ACME_JOB_REVOKE
                                                                : ACME_JOB_ACCOUNT;
}

static void job_process(acme_job_t *job) {
  acme_ca_t *ca = job->ca;
  acme_engine_t *e = job->engine;
  if (job->done) return;
  if (e->closing) {
    job_finish(job, UV_ECANCELED, "acme: the engine was stopped", NULL);
    return;
  }
  switch (job->state) {
    case ACME_JOB_DIRECTORY:
      if (ca->have_directory) {
        acme__job_goto(job, after_directory(job));
        return;
      }
      acme__job_request(job, "GET", ca->conf.directory, NULL, JSON_MAX_BODY);
      return;
    case ACME_JOB_ACCOUNT:
      account_request(job);
      return;
    case ACME_JOB_ACCOUNT_WAIT:
    case ACME_JOB_CAA_WAIT:
    case ACME_JOB_PRESENT:
    case ACME_JOB_DONE:
      return; /* woken by someone else */
    case ACME_JOB_REVOKE: {
      char *payload = gh_asprintf("{\"certificate\":\"%s\",\"reason\":%d}", job->revoke_der_b64,
                                  job->reason);
      acme__job_request(job, "POST", ca->url_revoke, payload, JSON_MAX_BODY);
      gh_free(payload);
      return;
    }
    case ACME_JOB_KEY_CHANGE:
      key_change_request(job);
      return;
    case ACME_JOB_DEACTIVATE:
      acme__job_request(job, "POST", ca->kid, "{\"status\":\"deactivated\"}", JSON_MAX_BODY);
      return;
    case ACME_JOB_RENEWAL_INFO: {
      if (ca->url_renewal_info == NULL) {
        acme__job_fail(job, UV_ENOTSUP, "the directory %s has no renewalInfo", ca->conf.directory);
        return;
      }
      size_t n = strlen(ca->url_renewal_info);
      int slash = n > 0 && ca->url_renewal_info[n - 1] == '/';
      char *url = gh_asprintf("%s%s%s", ca->url_renewal_info, slash ? "" : "/", job->ari_cert_id);
      acme__job_request(job, "GET", url, NULL, JSON_MAX_BODY);
      gh_free(url);
      return;
    }
    default:
      acme__order_request(job);
      return;
  }
}

/* after_account moves a job past the account states. */
static void after_account(acme_job_t *job) {
  acme_ca_t *ca = job->ca;
  if (ca->thumbprint == NULL) ca->thumbprint = acme__jwk_thumbprint(ca->account_key);
  if (ca->thumbprint == NULL) {
    acme__job_fail(job, UV_EINVAL, "cannot compute the account key's thumbprint");
    return;
  }
  static const acme_job_state_t next[] = {ACME_JOB_NEW_ORDER, ACME_JOB_REVOKE,
                                          ACME_JOB_KEY_CHANGE, ACME_JOB_DEACTIVATE,
                                          ACME_JOB_RENEWAL_INFO};
  acme__job_goto(job, next[job->kind]);
}

char *acme__profile_problem(const acme_ca_t *ca, const char *name) {
  for (size_t i = 0; i < ca->num_profiles; i++)
    if (strcmp(ca->profiles[i], name) == 0) return NULL;
  if (ca->num_profiles == 0)
    return gh_asprintf("the CA at %s offers no profiles (its directory has no meta.profiles)",
                       ca->conf.directory);
  size_t len = 0;
  for (size_t i = 0; i < ca->num_profiles; i++) len += strlen(ca->profiles[i]) + 2;
  char *list = gh_calloc(1, len + 1);
  for (size_t i = 0; i < ca->num_profiles; i++) {
    if (i) strcat(list, ", ");
    strcat(list, ca->profiles[i]);
  }
  char *why = gh_asprintf("the CA at %s does not offer profile \"%s\"; it offers: %s",
                          ca->conf.directory, name, list);
  gh_free(list);
  return why;
}

/* check_profiles logs, once |ca|'s directory is known, each configured
 * profile it does not offer: orders for it there will fail with the same
 * words. */
static void check_profiles(acme_ca_t *ca) {
  const conf_t *conf = ca->engine->conf;
  for (size_t i = 0; i <= conf->num_sites; i++) {
    const char *name = i == 0 ? ca->conf.profile : conf->sites[i - 1].acme_profile;
    if (name == NULL) continue;
    char *why = acme__profile_problem(ca, name);
    if (why == NULL) continue;
    char *where = i > 0 ? gh_asprintf("sites[%s].acme_profile", conf->sites[i - 1].hosts[0])
                  : conf->acme.num_issuers > 0 && conf->acme.issuers[ca->index].profile != NULL
                      ? gh_asprintf("acme.issuers[%zu].profile", ca->index)
                      : gh_strdup("acme.profile");
    GH_ERROR("acme", "%s: %s", where, why);
    gh_free(where);
    gh_free(why);
  }
}

static int directory_response(acme_job_t *job, const cJSON *json) {
  acme_ca_t *ca = job->ca;
  const char *nn, *na, *no, *rv;
  if ((nn = acme__json_url(job, json, "newNonce")) == NULL ||
      (na = acme__json_url(job, json, "newAccount")) == NULL ||
      (no = acme__json_url(job, json, "newOrder")) == NULL ||
      (rv = acme__json_url(job, json, "revokeCert")) == NULL)
    return -1;
  if (!ca->have_directory) {
    ca->url_new_nonce = gh_strdup(nn);
    ca->url_new_account = gh_strdup(na);
    ca->url_new_order = gh_strdup(no);
    ca->url_revoke = gh_strdup(rv);
    /* Optional here: only a key rollover needs it, and says so. */
    const cJSON *kc = cJSON_GetObjectItemCaseSensitive(json, "keyChange");
    if (cJSON_IsString(kc) && acme__url_problem(kc->valuestring) == NULL)
      ca->url_key_change = gh_strdup(kc->valuestring);
    const cJSON *ri = cJSON_GetObjectItemCaseSensitive(json, "renewalInfo");
    if (cJSON_IsString(ri) && acme__url_problem(ri->valuestring) == NULL)
      ca->url_renewal_info = gh_strdup(ri->valuestring);
    /* meta.profiles: {"name": "description", ...}, a few short names. */
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(json, "meta");
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(meta, "profiles"), *it;
    if (cJSON_IsObject(pr)) {
      ca->profiles = gh_calloc(32, sizeof(char *));
      cJSON_ArrayForEach(it, pr) {
        if (ca->num_profiles < 32 && it->string != NULL && strlen(it->string) <= 64)
          ca->profiles[ca->num_profiles++] = gh_strdup(it->string);
      }
    }
    /* meta.caaIdentities: the issuer domains its CAA records name. */
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(meta, "caaIdentities");
    if (cJSON_IsArray(ids) && cJSON_GetArraySize(ids) > 0) {
      ca->caa_ids = gh_calloc(8, sizeof(char *));
      ca->own_caa_ids = 1;
      cJSON_ArrayForEach(it, ids) {
        if (ca->num_caa_ids < 8 && cJSON_IsString(it) && conf_host_pattern_valid(it->valuestring))
          ca->caa_ids[ca->num_caa_ids++] = gh_strdup(it->valuestring);
      }
    } else {
      ca->caa_ids = ca->conf.caa_identities;
      ca->num_caa_ids = ca->conf.num_caa_identities;
    }
    ca->have_directory = 1;
    check_profiles(ca);
  }
  return 0;
}

/* account_store replaces the stored account with |obj| (deleted here). */
static int account_store(acme_job_t *job, cJSON *obj) {
  acme_ca_t *ca = job->ca;
  acme_engine_t *e = job->engine;
  if (ca->conf.email) cJSON_AddStringToObject(obj, "email", ca->conf.email);
  char *text = cJSON_PrintUnformatted(obj);
  cJSON_Delete(obj);
  char *err = NULL;
  int rc = acme_storage_account_save(e->storage, &err, ca->conf.directory, ca->account_id,
                                     (gh_str_t){text, strlen(text)});
  OPENSSL_cleanse(text, strlen(text));
  free(text);
  if (rc != 0) {
    acme__job_fail(job, rc, "saving the account: %s", err);
    gh_free(err);
    return -1;
  }
  return 0;
}

/* add_key adds |key| as PKCS#8 PEM member |name| of |obj|. */
static int add_key(acme_job_t *job, cJSON *obj, const char *name, const EVP_PKEY *key) {
  char *pem = acme__key_to_pem(key);
  if (pem == NULL) {
    acme__job_fail(job, UV_EINVAL, "cannot encode the account key");
    return -1;
  }
  cJSON_AddStringToObject(obj, name, pem);
  OPENSSL_cleanse(pem, strlen(pem));
  gh_free(pem);
  return 0;
}

/* account_save_next stores the account key, once known its URL, and with
 * |next_key| the key a rollover in flight is moving to ("next_key"): if
 * the process dies before it learns the outcome, the next load asks the
 * CA which of the two keys the account has (account_load). */
static int account_save_next(acme_job_t *job, const EVP_PKEY *next_key) {
  acme_ca_t *ca = job->ca;
  cJSON *obj = cJSON_CreateObject();
  if (ca->kid) cJSON_AddStringToObject(obj, "url", ca->kid);
  if (add_key(job, obj, "key", ca->account_key) != 0 ||
      (next_key != NULL && add_key(job, obj, "next_key", next_key) != 0)) {
    cJSON_Delete(obj);
    return -1;
  }
  return account_store(job, obj);
}

/* account_save stores the account key and, once known, its URL. */
static int account_save(acme_job_t *job) { return account_save_next(job, NULL); }

/* account_forget marks the stored account deactivated (its URL kept for
 * the record, its key dropped) and forgets it in memory: the next order
 * creates a new account with a new key. */
static int account_forget(acme_job_t *job) {
  acme_ca_t *ca = job->ca;
  cJSON *obj = cJSON_CreateObject();
  cJSON_AddStringToObject(obj, "deactivated", ca->kid);
  int rc = account_store(job, obj);
  EVP_PKEY_free(ca->account_key);
  ca->account_key = NULL;
  gh_free(ca->kid);
  ca->kid = NULL;
  gh_free(ca->thumbprint);
  ca->thumbprint = NULL;
  return rc;
}

/* account_load_next: a stored "next_key" means a rollover died before
 * it learned whether the CA took the new key. The account is then looked
 * up (onlyReturnExisting) with the new key first (job->probe_key): found,
 * the new key is the account's; accountDoesNotExist, the stored key still
 * is (job_on_http). Returns 0, or -1 with the job failed. */
static int account_load_next(acme_job_t *job, const cJSON *obj) {
  acme_ca_t *ca = job->ca;
  const cJSON *next = cJSON_GetObjectItemCaseSensitive(obj, "next_key");
  if (!cJSON_IsString(next)) return 0;
  char *err = NULL;
  job->probe_key = acme__key_from_pem(&err, next->valuestring, strlen(next->valuestring));
  if (job->probe_key == NULL) {
    acme__job_fail(job, UV_EINVAL, "the stored account %s: next_key: %s", ca->account_id, err);
    gh_free(err);
    return -1;
  }
  GH_WARN("acme", "account %s at %s: a key rollover was interrupted; asking the CA which key "
          "it has", ca->account_id, ca->conf.directory);
  return 0;
}

/* account_load reads a stored account, if any. Returns 1 when the account
 * (key and URL) is ready, 0 when a request is needed, -1 on failure. */
static int account_load(acme_job_t *job) {
  acme_ca_t *ca = job->ca;
  acme_engine_t *e = job->engine;
  char *json = NULL, *err = NULL;
  int rc = acme_storage_account_load(e->storage, &json, &err, ca->conf.directory, ca->account_id);
  cJSON *obj = NULL;
  if (rc == 0) {
    obj = cJSON_Parse(json);
    OPENSSL_cleanse(json, strlen(json));
    gh_free(json);
    if (cJSON_GetObjectItemCaseSensitive(obj, "deactivated") != NULL) {
      rc = -ENOENT; /* what is left of a deactivated account: start afresh */
      err = gh_strdup("deactivated");
    }
  }
  if (rc == -ENOENT) {
    gh_free(err);
    cJSON_Delete(obj);
    if (job->kind == ACME_KIND_ROLLOVER || job->kind == ACME_KIND_DEACTIVATE) {
      acme__job_fail(job, UV_ENOENT, "there is no account %s for %s in the storage",
                     ca->account_id, ca->conf.directory);
      return -1;
    }
    ca->account_key = acme__key_new(CONF_KEY_P256);
    if (ca->account_key == NULL) {
      acme__job_fail(job, UV_ENOMEM, "cannot generate an account key");
      return -1;
    }
    /* Saved before newAccount, so that a crash after the CA created the
     * account finds it again with onlyReturnExisting. */
    if (account_save(job) != 0) return -1;
    job->account_lookup = 0;
    return 0;
  }
  if (rc != 0) {
    acme__job_fail(job, rc, "loading the account: %s", err);
    gh_free(err);
    return -1;
  }
  const cJSON *key = cJSON_GetObjectItemCaseSensitive(obj, "key");
  const cJSON *url = cJSON_GetObjectItemCaseSensitive(obj, "url");
  if (!cJSON_IsString(key)) {
    cJSON_Delete(obj);
    acme__job_fail(job, UV_EINVAL, "the stored account %s has no \"key\"", ca->account_id);
    return -1;
  }
  ca->account_key = acme__key_from_pem(&err, key->valuestring, strlen(key->valuestring));
  if (ca->account_key == NULL) {
    cJSON_Delete(obj);
    acme__job_fail(job, UV_EINVAL, "the stored account %s: %s", ca->account_id, err);
    gh_free(err);
    return -1;
  }
  int ready = 0;
  if (account_load_next(job, obj) != 0) {
    EVP_PKEY_free(ca->account_key); /* the next job reads the storage again */
    ca->account_key = NULL;
    ready = -1;
  } else if (job->probe_key == NULL && cJSON_IsString(url) && url->valuestring[0] != '\0') {
    ca->kid = gh_strdup(url->valuestring);
    ready = 1;
  }
  job->account_lookup = ready == 0;
  cJSON_Delete(obj);
  return ready;
}

static void account_request(acme_job_t *job) {
  acme_ca_t *ca = job->ca;
  if (ca->kid != NULL) {
    after_account(job);
    return;
  }
  if (!job->account_owner) {
    if (ca->account_busy) {
      job->state = ACME_JOB_ACCOUNT_WAIT; /* kicked when the owner is done */
      return;
    }
    ca->account_busy = 1;
    job->account_owner = 1;
    if (ca->account_key == NULL) {
      int rc = account_load(job);
      if (rc < 0) return;
      if (rc == 1) {
        ca->account_busy = 0;
        job->account_owner = 0;
        kick_account_waiters(ca);
        after_account(job);
        return;
      }
    } else {
      job->account_lookup = 1; /* a key but no URL: a previous attempt failed */
    }
  }
  if (ca->thumbprint == NULL) ca->thumbprint = acme__jwk_thumbprint(ca->account_key);
  cJSON *p = cJSON_CreateObject();
  if (job->account_lookup) {
    cJSON_AddTrueToObject(p, "onlyReturnExisting");
  } else {
    cJSON_AddTrueToObject(p, "termsOfServiceAgreed");
    if (ca->conf.email != NULL && ca->conf.email[0] != '\0') {
      cJSON *contact = cJSON_AddArrayToObject(p, "contact");
      char *mailto = gh_asprintf("mailto:%s", ca->conf.email);
      cJSON_AddItemToArray(contact, cJSON_CreateString(mailto));
      gh_free(mailto);
    }
    if (ca->conf.eab_key_id != NULL) {
      char *err = NULL;
      cJSON *eab = acme__jws_eab(&err, ca->conf.eab_key_id, ca->conf.eab_hmac_key,
                                 ca->account_key, ca->url_new_account);
      if (eab == NULL) {
        cJSON_Delete(p);
        acme__job_fail(job, UV_EINVAL, "external account binding: %s", err);
        gh_free(err);
        return;
      }
      cJSON_AddItemToObject(p, "externalAccountBinding", eab);
    }
  }
  char *payload = cJSON_PrintUnformatted(p);
  cJSON_Delete(p);
  acme__job_request(job, "POST", ca->url_new_account, payload, JSON_MAX_BODY);
  free(payload);
}

static void account_response(acme_job_t *job, const acme_httpc_resp_t *resp) {
  acme_ca_t *ca = job->ca;
  const char *loc = acme_httpc_header(resp, "Location");
  if (loc == NULL || loc[0] == '\0') {
    acme__job_fail(job, UV_EPROTO, "POST %s: status %d without a Location header (the account "
                   "URL)", job->url, resp->status);
    return;
  }
  const char *why = acme__url_problem(loc);
  if (why != NULL) {
    acme__job_fail(job, UV_EPROTO, "POST %s: the account URL (Location) is refused: %s",
                   job->url, why);
    return;
  }
  ca->kid = gh_strdup(loc);
  if (job->probe_key != NULL) {
    /* The interrupted rollover did reach the CA: the new key is the one. */
    EVP_PKEY_free(ca->account_key);
    ca->account_key = job->probe_key;
    job->probe_key = NULL;
    gh_free(ca->thumbprint);
    ca->thumbprint = NULL;
  }
  if (account_save(job) != 0) return;
  GH_INFO("acme", "account %s at %s: %s", ca->account_id, ca->conf.directory, ca->kid);
  ca->account_busy = 0;
  job->account_owner = 0;
  kick_account_waiters(ca);
  after_account(job);
}

/* key_change_request is the request half of ACME_JOB_KEY_CHANGE (RFC 8555
 * section 7.3.5): the outer JWS, signed by the current key with its kid as
 * every request is, carries the inner one, signed by the new key. The new
 * key is made once per job, so a retry sends the same inner JWS. */
static void key_change_request(acme_job_t *job) {
  acme_ca_t *ca = job->ca;
  if (ca->url_key_change == NULL) {
    acme__job_fail(job, UV_ENOTSUP, "the directory %s has no keyChange URL", ca->conf.directory);
    return;
  }
  if (job->new_key == NULL) {
    job->new_key = acme__key_new(CONF_KEY_P256);
    if (job->new_key == NULL) {
      acme__job_fail(job, UV_ENOMEM, "cannot generate an account key");
      return;
    }
    /* Stored before the CA hears of it: a crash after the CA switched
     * keys must not lose the only key that still works. */
    if (account_save_next(job, job->new_key) != 0) return;
  }
  char *err = NULL;
  char *inner = acme__jws_key_change(&err, job->new_key, ca->account_key, ca->kid,
                                     ca->url_key_change);
  if (inner == NULL) {
    acme__job_fail(job, UV_EINVAL, "POST %s: %s", ca->url_key_change, err);
    gh_free(err);
    return;
  }
  acme__job_request(job, "POST", ca->url_key_change, inner, JSON_MAX_BODY);
  gh_free(inner);
}

/* key_change_response: the CA now knows the account by the new key. It is
 * stored (atomically) before anything is signed with it, so a crash from
 * here on finds the key that works. */
static void key_change_response(acme_job_t *job) {
  acme_ca_t *ca = job->ca;
  EVP_PKEY_free(ca->account_key);
  ca->account_key = job->new_key;
  job->new_key = NULL;
  gh_free(ca->thumbprint);
  ca->thumbprint = acme__jwk_thumbprint(ca->account_key);
  if (account_save(job) != 0) return;
  GH_INFO("acme", "account %s at %s: new key %s", ca->account_id, ca->conf.directory,
          ca->thumbprint ? ca->thumbprint : "?");
  acme__job_succeed(job, NULL);
}

static void deactivate_response(acme_job_t *job) {
  acme_ca_t *ca = job->ca;
  GH_INFO("acme", "account %s at %s deactivated: %s", ca->account_id, ca->conf.directory, ca->kid);
  if (account_forget(job) != 0) return;
  acme__job_succeed(job, NULL);
}

/* job_response is the response half of every state, for responses that
 * the retry logic let through (status below 400). */
#define ARI_RETRY_DEFAULT_S (6 * 3600)
#define ARI_RETRY_MIN_S 60
#define ARI_RETRY_MAX_S (24 * 3600)

/* renewal_info_response reads a renewalInfo answer (RFC 9773 4.2). */
static void renewal_info_response(acme_job_t *job, const acme_httpc_resp_t *resp) {
  acme_ari_t *a = &job->ari;
  if (acme__ari_parse(&a->start, &a->end, &job->ari_explanation, resp->body, resp->body_len) !=
      0) {
    acme__job_fail(job, UV_EPROTO, "GET %s: status %d: not a renewalInfo document with a "
                   "valid suggestedWindow", job->url, resp->status);
    return;
  }
  a->explanation_url = job->ari_explanation;
  a->renew_at = acme__ari_pick(a->start, a->end, time(NULL));
  uint64_t s = acme__retry_after_ms(resp, ARI_RETRY_DEFAULT_S * 1000ull, ARI_RETRY_MAX_S * 1000ull) /
               1000;
  a->retry_after_s = s < ARI_RETRY_MIN_S ? ARI_RETRY_MIN_S : s;
  acme__job_succeed(job, NULL);
}

static void job_response(acme_job_t *job, const acme_httpc_resp_t *resp) {
  switch (job->state) {
    case ACME_JOB_DIRECTORY: {
      /* A CA without a usable directory is down, as far as orders go. */
      job->ca_fault = 1;
      cJSON *json = cJSON_ParseWithLength(resp->body, resp->body_len);
      int ok = 0;
      if (!cJSON_IsObject(json)) {
        acme__job_fail(job, UV_EPROTO, "GET %s: status %d: the directory is not a JSON object",
                       job->url, resp->status);
      } else {
        ok = directory_response(job, json) == 0;
      }
      cJSON_Delete(json);
      if (ok) {
        job->ca_fault = 0;
        acme__job_goto(job, after_directory(job));
      }
      return;
    }
    case ACME_JOB_ACCOUNT:
      account_response(job, resp);
      return;
    case ACME_JOB_REVOKE:
      acme__job_succeed(job, NULL);
      return;
    case ACME_JOB_KEY_CHANGE:
      key_change_response(job);
      return;
    case ACME_JOB_DEACTIVATE:
      deactivate_response(job);
      return;
    case ACME_JOB_RENEWAL_INFO:
      renewal_info_response(job, resp);
      return;
    default:
      acme__order_response(job, resp, NULL);
      return;
  }
}

/* ---- dns hook ---- */


static void on_hook_close(uv_handle_t *h) { gh_free(h->data); }

static void on_hook_exit(uv_process_t *proc, int64_t exit_status, int term_signal) {
  hook_t *hook = proc->data;
  acme_job_t *job = hook->job;
  uv_close((uv_handle_t *)proc, on_hook_close);
  if (job == NULL) return;
  job->hook = NULL;
  job->in_flight--;
  if (!job->done) uv_timer_stop(&job->timer); /* the hook's deadline */
  if (job->done) {
    job_maybe_free(job);
    return;
  }
  acme__order_hook_done(job, exit_status, term_signal);
}

int acme__hook_run(acme_job_t *job, const char *action, const char *fqdn, const char *value) {
  acme_engine_t *e = job->engine;
  hook_t *hook = gh_calloc(1, sizeof(*hook));
  hook->proc.data = hook;
  hook->job = strcmp(action, "present") == 0 ? job : NULL;
  char *args[] = {e->acme->dns_hook, (char *)action, (char *)fqdn, (char *)value, NULL};
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;
  /* The hook's output goes to our stderr, the log: stdout may be data. */
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 2;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  uv_process_options_t opt;
  memset(&opt, 0, sizeof(opt));
  opt.file = e->acme->dns_hook;
  opt.args = args;
  opt.exit_cb = on_hook_exit;
  opt.stdio = stdio;
  opt.stdio_count = 3;
  int rc = uv_spawn(e->loop, &hook->proc, &opt);
  if (rc != 0) {
    uv_close((uv_handle_t *)&hook->proc, on_hook_close);
    GH_WARN("acme", "dns hook %s %s %s: %s", e->acme->dns_hook, action, fqdn, uv_strerror(rc));
    return rc;
  }
  if (hook->job != NULL) {
    /* A hook that hangs must not hold the order (and the lock) forever. */
    job->hook = hook;
    job->in_flight++;
    job_timer(job, TIMER_HOOK_TIMEOUT, HOOK_TIMEOUT_MS);
  }
  return 0;
}

/* ---- public API ---- */

acme_engine_t *acme_engine_new(char **out_err, uv_loop_t *loop, const conf_t *conf,
                               acme_challenges_t *challenges) {
  *out_err = NULL;
  size_t num_cas = conf_num_issuers(conf);
  if (num_cas == 0) {
    *out_err = gh_strdup("acme: no ACME directory configured");
    return NULL;
  }
  if (num_cas > ACME_MAX_CAS) num_cas = ACME_MAX_CAS; /* the schema allows no more */
  acme_engine_t *e = gh_calloc(1, sizeof(*e));
  pthread_mutex_init(&e->log_mu, NULL);
  e->loop = loop;
  e->conf = conf;
  e->acme = &conf->acme;
  e->challenges = challenges;
  e->storage = acme_storage_open_conf(out_err, conf);
  if (e->storage == NULL) {
    engine_destroy(e);
    return NULL;
  }
  for (size_t i = 0; i < num_cas; i++) {
    acme_ca_t *ca = &e->cas[i];
    ca->engine = e;
    ca->index = i;
    conf_issuer(conf, i, &ca->conf);
    char host[256];
    char *err = NULL;
    if (ca->conf.name != NULL) {
      ca->name = gh_strdup(ca->conf.name);
    } else if (acme__storage_ca_dir(host, sizeof(host), &err, ca->conf.directory) == 0) {
      ca->name = gh_strdup(host);
    } else {
      ca->name = gh_strdup(ca->conf.directory);
      gh_free(err);
    }
    ca->account_id = account_id_from_email(ca->conf.email);
    e->num_cas++;
    ca->httpc = acme_httpc_new(out_err, loop, (const char *const *)ca->conf.ca_roots,
                               ca->conf.num_ca_roots);
    if (ca->httpc == NULL) {
      engine_destroy(e);
      return NULL;
    }
  }
  return e;
}

static void engine_destroy(acme_engine_t *e) {
  acme_storage_free(e->storage);
  for (size_t i = 0; i < e->num_cas; i++) {
    acme_ca_t *ca = &e->cas[i];
    acme_httpc_free(ca->httpc);
    acme__nonce_cleanup(&ca->nonces);
    gh_free(ca->url_new_nonce);
    gh_free(ca->url_new_account);
    gh_free(ca->url_new_order);
    gh_free(ca->url_revoke);
    gh_free(ca->url_key_change);
    gh_free(ca->url_renewal_info);
    for (size_t j = 0; j < ca->num_profiles; j++) gh_free(ca->profiles[j]);
    gh_free(ca->profiles);
    for (size_t j = 0; ca->own_caa_ids && j < ca->num_caa_ids; j++) gh_free(ca->caa_ids[j]);
    if (ca->own_caa_ids) gh_free(ca->caa_ids);
    EVP_PKEY_free(ca->account_key);
    gh_free(ca->thumbprint);
    gh_free(ca->kid);
    gh_free(ca->account_id);
    gh_free(ca->name);
  }
  acme__order_log_free(e);
  gh_free(e);
}

void acme_engine_free(acme_engine_t *engine) {
  if (engine == NULL) return;
  engine->closing = 1;
  for (size_t i = 0; i < engine->num_cas; i++) {
    acme_httpc_free(engine->cas[i].httpc); /* requests in flight call back with UV_ECANCELED */
    engine->cas[i].httpc = NULL;
  }
  for (acme_job_t *j = engine->jobs; j != NULL; j = j->next) job_timer(j, TIMER_CANCEL, 0);
  if (engine->num_jobs == 0) engine_destroy(engine);
}

/* ca_of returns the CA whose directory is |directory|, or NULL. */
static acme_ca_t *ca_of(acme_engine_t *e, const char *directory) {
  for (size_t i = 0; directory != NULL && i < e->num_cas; i++)
    if (strcmp(e->cas[i].conf.directory, directory) == 0) return &e->cas[i];
  return NULL;
}

/* issued_by returns the directory URL of the CA that issued |name|'s stored
 * certificate, as its meta.json says (a new string), or NULL. */
static char *issued_by(acme_engine_t *e, const char *name) {
  cJSON *m = stored_meta(e, name);
  const char *by = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "ca"));
  char *out = by != NULL ? gh_strdup(by) : NULL;
  cJSON_Delete(m);
  return out;
}

/* ca_for_cert is the CA to ask about |cert| (revocation, renewal
 * information): the one that issued it, by its stored meta, else the
 * first. */
static acme_ca_t *ca_for_cert(acme_engine_t *e, const acme_cert_t *cert) {
  const char *name = cert->num_sans ? cert->sans[0] : cert->subject_cn;
  if (e->num_cas == 1 || name == NULL) return &e->cas[0];
  char *by = issued_by(e, name);
  acme_ca_t *ca = ca_of(e, by);
  gh_free(by);
  return ca != NULL ? ca : &e->cas[0];
}

/* job_start runs the first state from the loop, or delivers a failure
 * found while starting (such as a held lock) from the loop, as the
 * contract wants every callback. */
static void job_start(acme_job_t *job, int status, char *msg) {
  if (status != 0) {
    job->fail_status = status;
    job->fail_msg = msg;
    job_timer(job, TIMER_FAIL, 0);
  } else {
    job->state = ACME_JOB_DIRECTORY;
    job_timer(job, TIMER_PROCESS, 0);
    acme__caa_start(job); /* meanwhile */
  }
}

struct acme_storage *acme_engine_storage(acme_engine_t *engine) { return engine->storage; }

const char *const acme_stats_challenges[4] = {"tls-alpn-01", "http-01", "dns-01", "none"};

size_t acme_engine_ca_stats(acme_engine_t *engine, acme_ca_stats_t *out, size_t max) {
  size_t n = engine->num_cas < max ? engine->num_cas : max;
  for (size_t i = 0; i < n; i++) {
    acme_ca_t *ca = &engine->cas[i];
    out[i].name = ca->name;
    out[i].directory = ca->conf.directory;
    for (int c = 0; c < 4; c++) {
      for (int r = 0; r < 2; r++)
        out[i].orders[c][r] = atomic_load_explicit(&ca->order_stats[c][r], memory_order_relaxed);
    }
    out[i].fallbacks = atomic_load_explicit(&ca->fallbacks, memory_order_relaxed);
    int64_t until = atomic_load_explicit(&ca->backoff_until, memory_order_relaxed);
    out[i].backoff_until = until > (int64_t)time(NULL) ? (time_t)until : 0;
  }
  return n;
}

int acme_engine_obtain(acme_engine_t *engine, const char *const *names, size_t num_names,
                       acme_obtain_cb cb, void *arg) {
  return acme_engine_renew(engine, names, num_names, NULL, cb, arg);
}

int acme_engine_renewal_info(acme_engine_t *engine, const acme_cert_t *cert, acme_ari_cb cb,
                             void *arg) {
  if (engine == NULL || engine->closing || cb == NULL || cert == NULL) return UV_EINVAL;
  char *id = acme__ari_cert_id(cert);
  if (id == NULL) return UV_EINVAL;
  const char *name = cert->num_sans ? cert->sans[0] : cert->subject_cn ? cert->subject_cn : "?";
  acme_job_t *job = job_new(engine, &name, 1);
  job->ca = ca_for_cert(engine, cert);
  job->kind = ACME_KIND_ARI;
  job->ari_cb = cb;
  job->arg = arg;
  job->ari_cert_id = id;
  job_start(job, 0, NULL);
  return 0;
}

/* stored_meanwhile returns (a reference) the certificate a fleet's store
 * holds for |names| if it makes this order needless: valid for a while
 * yet, covering every name, not revoked, and for a renewal newer than
 * |replaces|. Another node may have finished between this node's look at
 * the store and its taking the lock. A directory store answers NULL: its
 * one process looked just before. */
static acme_cert_t *stored_meanwhile(acme_engine_t *engine, const char *const *names,
                                     size_t num_names, const acme_cert_t *replaces) {
  if (!acme_storage_shared(engine->storage)) return NULL;
  acme_cert_t *have = NULL;
  char *err = NULL;
  int rc = acme_storage_cert_load(engine->storage, &have, NULL, &err, names[0]);
  gh_free(err);
  if (rc != 0) return NULL;
  int ok = have->not_after > time(NULL) + 60 && acme_cert_covers(have, names, num_names);
  if (ok && replaces != NULL)
    ok = !acme_cert_same(have, replaces) && have->not_after > replaces->not_after;
  acme_renewal_state_t st;
  if (ok && acme_renewal_state_load(engine->storage, &st, names[0]) == 0) ok = !st.revoked;
  if (!ok) {
    acme_cert_unref(have);
    return NULL;
  }
  return have;
}

/* every_ca_backing_off says, for an order of |name| (a new string), that
 * every CA is backing off, until when and why. */
static char *every_ca_backing_off(acme_engine_t *e, const char *name) {
  char *msg = gh_asprintf("acme: %s: every CA is backing off after failures of its own:", name);
  time_t now = time(NULL);
  for (size_t i = 0; i < e->num_cas; i++) {
    char *m = gh_asprintf("%s%s CA %s for %lld s more", msg, i ? ";" : "", e->cas[i].name,
                          (long long)(atomic_load(&e->cas[i].backoff_until) - now));
    gh_free(msg);
    msg = m;
  }
  return msg;
}

/* order_start is acme_engine_renew with an optional gate
 * (acme_engine_obtain_gated). */
static int order_start(acme_engine_t *engine, const char *const *names, size_t num_names,
                       const acme_cert_t *replaces, acme_engine_gate_fn gate, void *gate_arg,
                       acme_obtain_cb cb, void *arg);

int acme_engine_renew(acme_engine_t *engine, const char *const *names, size_t num_names,
                      const acme_cert_t *replaces, acme_obtain_cb cb, void *arg) {
  return order_start(engine, names, num_names, replaces, NULL, NULL, cb, arg);
}

int acme_engine_obtain_gated(acme_engine_t *engine, const char *const *names, size_t num_names,
                             acme_engine_gate_fn gate, void *gate_arg, acme_obtain_cb cb,
                             void *arg) {
  return order_start(engine, names, num_names, NULL, gate, gate_arg, cb, arg);
}

static int order_start(acme_engine_t *engine, const char *const *names, size_t num_names,
                       const acme_cert_t *replaces, acme_engine_gate_fn gate, void *gate_arg,
                       acme_obtain_cb cb, void *arg) {
  if (engine == NULL || engine->closing || cb == NULL) return UV_EINVAL;
  if (num_names == 0 || num_names > MAX_NAMES) return UV_EINVAL;
  for (size_t i = 0; i < num_names; i++) {
    char *err = NULL;
    if (names[i] == NULL || acme__name_check(&err, "order", names[i], 1) != 0) {
      gh_free(err);
      return UV_EINVAL;
    }
    for (size_t j = 0; j < i; j++)
      if (strcmp(names[i], names[j]) == 0) return UV_EINVAL;
  }
  acme_job_t *job = job_new(engine, names, num_names);
  job->obtain_cb = cb;
  job->arg = arg;
  /* What the stored certificate's meta says, read once: which CA issued
   * it (a renewal names it to that CA only) and under which profile. */
  cJSON *meta = stored_meta(engine, names[0]);
  const char *by = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(meta, "ca"));
  const char *prof = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(meta, "profile"));
  job->issued_by = by != NULL ? gh_strdup(by) : NULL;
  job->stored_profile = prof != NULL ? gh_strdup(prof) : NULL;
  job->renewal = replaces != NULL || meta != NULL; /* a certificate is stored for it */
  cJSON_Delete(meta);
  if (replaces != NULL) job->ari_cert_id = acme__ari_cert_id(replaces);
  acme_ca_t *ca = NULL;
  for (size_t i = 0; i < engine->num_cas && ca == NULL; i++)
    if (ca_usable(&engine->cas[i])) ca = &engine->cas[i];
  job_use_ca(job, ca != NULL ? ca : &engine->cas[0]);
  if (ca == NULL) {
    job_start(job, UV_EAGAIN, every_ca_backing_off(engine, names[0]));
    return 0;
  }
  char *err = NULL;
  int rc = acme__storage_lock(engine->storage, &job->lock, &err, names[0], LOCK_TTL_S);
  if (rc == ACME_STORAGE_LOCK_ACQUIRED &&
      (job->stored = stored_meanwhile(engine, names, num_names, replaces)) != NULL) {
    GH_INFO("acme", "%s: another node stored a valid certificate meanwhile: not ordering",
            names[0]);
    job_timer(job, TIMER_STORED, 0);
  } else if (rc == ACME_STORAGE_LOCK_ACQUIRED) {
    char *why = NULL;
    int gate_rc = gate != NULL ? gate(gate_arg, names, num_names, &why) : 0;
    if (gate_rc != 0) {
      job_start(job, gate_rc, gh_asprintf("acme: %s: %s", names[0], why ? why : "refused"));
    } else {
      GH_INFO("acme", "order for %s (%zu names) started", names[0], num_names);
      job_start(job, 0, NULL);
    }
    gh_free(why);
  } else if (rc == ACME_STORAGE_LOCK_HELD) {
    job_start(job, UV_EBUSY,
              gh_asprintf("acme: %s is locked by another process or order: %s", names[0], err));
  } else {
    job_start(job, rc, gh_asprintf("acme: locking %s: %s", names[0], err));
  }
  gh_free(err);
  return 0;
}

/* revoke_start is acme_engine_revoke, signed by the account key when
 * |by_cert_key| is 0 and by the certificate's own key otherwise. */
static int revoke_start(acme_engine_t *engine, acme_cert_t *cert, int reason, int by_cert_key,
                        acme_revoke_cb cb, void *arg) {
  if (engine == NULL || engine->closing || cb == NULL || cert == NULL || cert->num_chain == 0)
    return UV_EINVAL;
  if (by_cert_key && cert->key == NULL) return UV_EINVAL;
  if (reason < 0 || reason > 10 || reason == 7) return UV_EINVAL;
  const char *name = cert->num_sans ? cert->sans[0] : cert->subject_cn ? cert->subject_cn : "?";
  acme_job_t *job = job_new(engine, &name, 1);
  job->ca = ca_for_cert(engine, cert);
  job->kind = ACME_KIND_REVOKE;
  job->status_cb = cb;
  job->arg = arg;
  job->reason = reason;
  job->revoke_der_b64 = gh_b64url_encode(CRYPTO_BUFFER_data(cert->chain[0]),
                                         CRYPTO_BUFFER_len(cert->chain[0]));
  if (by_cert_key) {
    EVP_PKEY_up_ref(cert->key);
    job->sign_key = cert->key;
  }
  GH_INFO("acme", "revocation for %s started (reason %d, signed by the %s key)", name, reason,
          by_cert_key ? "certificate's" : "account");
  job_start(job, 0, NULL);
  return 0;
}

int acme_engine_revoke(acme_engine_t *engine, acme_cert_t *cert, int reason, acme_revoke_cb cb,
                       void *arg) {
  return revoke_start(engine, cert, reason, 0, cb, arg);
}

int acme_engine_revoke_by_cert_key(acme_engine_t *engine, acme_cert_t *cert, int reason,
                                   acme_revoke_cb cb, void *arg) {
  return revoke_start(engine, cert, reason, 1, cb, arg);
}

/* account_job_start starts a job on the stored account itself. */
static int account_job_start(acme_engine_t *engine, acme_job_kind_t kind, acme_account_cb cb,
                             void *arg) {
  if (engine == NULL || engine->closing || cb == NULL) return UV_EINVAL;
  acme_ca_t *ca = &engine->cas[0]; /* the first CA's account */
  acme_job_t *job = job_new(engine, (const char *const *)&ca->account_id, 1);
  job->kind = kind;
  job->status_cb = cb;
  job->arg = arg;
  GH_INFO("acme", "%s of account %s at %s started",
          kind == ACME_KIND_ROLLOVER ? "key rollover" : "deactivation", ca->account_id,
          ca->conf.directory);
  job_start(job, 0, NULL);
  return 0;
}

int acme_engine_rollover(acme_engine_t *engine, acme_account_cb cb, void *arg) {
  return account_job_start(engine, ACME_KIND_ROLLOVER, cb, arg);
}

int acme_engine_deactivate(acme_engine_t *engine, acme_account_cb cb, void *arg) {
  return account_job_start(engine, ACME_KIND_DEACTIVATE, cb, arg);
}
