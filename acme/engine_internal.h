/* engine_internal.h: what the ACME engine's files (engine.c, order.c,
 * nonce.c, problem.c) share. Internal to acme/. */
#ifndef GH_ACME_ENGINE_INTERNAL_H
#define GH_ACME_ENGINE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "acme/certs.h"

/* ---- problem documents (RFC 7807, RFC 8555 section 6.7) ---- */

#define ACME_ERR_PREFIX "urn:ietf:params:acme:error:"

/* acme_problem_t is a parsed application/problem+json document. */
typedef struct {
  char *type;    /* "" when absent or not a string */
  char *detail;  /* "" when absent or not a string */
  char *message; /* "TYPE: DETAIL" plus "; subproblems: ..." when any */
} acme_problem_t;

/* acme__problem_parse parses the |body_len| bytes at |body| as a problem
 * document. Returns 0 and fills |out| (free with acme__problem_cleanup), or
 * -1 if the body is not a JSON object with a string "type" or "detail"
 * (|out| is then zeroed). Subproblems are bounded in number and length. */
int acme__problem_parse(acme_problem_t *out, const char *body, size_t body_len);

/* acme__problem_cleanup frees what acme__problem_parse allocated. */
void acme__problem_cleanup(acme_problem_t *p);

/* acme__problem_is reports (1 or 0) whether |p| has the ACME error type
 * ACME_ERR_PREFIX |name| ("badNonce", "rateLimited", ...). */
int acme__problem_is(const acme_problem_t *p, const char *name);

/* acme__retry_after_parse parses a Retry-After value (RFC 9110 10.2.3):
 * delta-seconds or an HTTP-date, relative to |now|. Returns 0 and sets
 * |*out_ms| (0 for a date in the past), or -1 if the value is neither. */
int acme__retry_after_parse(const char *value, time_t now, uint64_t *out_ms);

/* acme__links collects the URLs of every link with relation |rel| from the
 * Link header values |values[0..num_values)| (RFC 8288: comma-separated
 * "<url>; rel=..." entries, rel quoted or not, possibly a space-separated
 * list of relations, other parameters ignored). Returns the number found
 * and sets |*out_urls| to a new array of new strings (free with
 * acme__links_free), NULL when none. */
size_t acme__links(char ***out_urls, const char *const *values, size_t num_values,
                   const char *rel);

/* acme__links_free frees a result of acme__links. */
void acme__links_free(char **urls, size_t num_urls);

/* ---- ACME Renewal Information (RFC 9773), ari.c ---- */

/* acme__time_parse parses an RFC 3339 time ("2025-01-02T03:04:05Z",
 * optional fraction, "Z" or a numeric offset) into |*out|. Returns 0 or -1. */
int acme__time_parse(const char *s, time_t *out);

/* acme__ari_cert_id returns the ARI certificate identifier of |cert|'s
 * leaf (RFC 9773 4.1): base64url(authority key identifier) "."
 * base64url(serial number's DER content octets), as a new string (caller
 * frees), or NULL if the leaf has no authority key identifier. */
char *acme__ari_cert_id(const acme_cert_t *cert);

/* acme__ari_parse reads a renewalInfo response (RFC 9773 4.2): returns 0
 * with the suggested window's |*out_start| < |*out_end| and
 * |*out_explanation| (a new string or NULL, caller frees), or -1 if the
 * body is not such a document. */
int acme__ari_parse(time_t *out_start, time_t *out_end, char **out_explanation, const char *body,
                    size_t body_len);

/* acme__ari_pick returns a uniformly random time in [start, end] not
 * before |now|; |now| itself when the window has passed. */
time_t acme__ari_pick(time_t start, time_t end, time_t now);

/* ---- nonce pool (RFC 8555 section 7.2) ---- */

#define ACME_NONCE_POOL_MAX 16

typedef struct {
  char *nonces[ACME_NONCE_POOL_MAX];
  size_t num_nonces;
} acme_nonce_pool_t;

/* acme__nonce_push keeps a copy of |value| (a Replay-Nonce header; ignored
 * when empty, over 256 bytes or not base64url). When the pool is full the
 * oldest nonce is dropped: the newest are the least likely to be stale. */
void acme__nonce_push(acme_nonce_pool_t *pool, const char *value);

/* acme__nonce_pop returns the newest nonce (caller frees) or NULL. */
char *acme__nonce_pop(acme_nonce_pool_t *pool);

/* acme__nonce_cleanup frees every nonce in |pool|. */
void acme__nonce_cleanup(acme_nonce_pool_t *pool);

/* ---- the engine's jobs (engine.c drives them, order.c holds the order
 * states' halves) ---- */

#include <pthread.h>
#include <uv.h>
#include <openssl/base.h>

#include "acme/acme.h"
#include "acme/httpc.h"
#include "acme/storage.h"

/* The states of a job. Each state that talks to the CA has a request half
 * (what to send) and a response half (what the answer means and which state
 * comes next); job_process() in engine.c runs the request halves and
 * job_on_http() decides, in one place, whether a response is retried
 * (transport errors, badNonce, serverInternal, rateLimited) or handed to the
 * response half. */
typedef enum {
  ACME_JOB_DIRECTORY = 0, /* GET the directory, unless cached */
  ACME_JOB_ACCOUNT,       /* POST newAccount: find (onlyReturnExisting) or create */
  ACME_JOB_ACCOUNT_WAIT,  /* another job is creating the account: no request */
  ACME_JOB_CAA_WAIT,      /* the CAA lookups (caa_check.c) are not done: no request */
  ACME_JOB_NEW_ORDER,     /* POST newOrder */
  ACME_JOB_AUTHZ,         /* POST-as-GET authorizations[authz_i], choose a challenge */
  ACME_JOB_PRESENT,       /* dns-01: the hook's "present" runs: no request */
  ACME_JOB_PROPAGATE,     /* dns-01: until a resolver has the TXT record: no request */
  ACME_JOB_RESPOND,       /* POST {} to the chosen challenge */
  ACME_JOB_AUTHZ_POLL,    /* POST-as-GET the authorization until valid/invalid */
  ACME_JOB_ORDER_POLL,    /* POST-as-GET the order until ready/valid/invalid */
  ACME_JOB_FINALIZE,      /* POST the CSR */
  ACME_JOB_CERT,          /* POST-as-GET the certificate chain */
  ACME_JOB_ALT_CERT,      /* POST-as-GET alternate chain alt_i (preferred_chain) */
  ACME_JOB_REVOKE,        /* POST revokeCert */
  ACME_JOB_KEY_CHANGE,    /* POST keyChange: the new key's JWS inside the old key's */
  ACME_JOB_DEACTIVATE,    /* POST {"status":"deactivated"} to the account URL */
  ACME_JOB_RENEWAL_INFO,  /* GET renewalInfo/<certID> (RFC 9773), unsigned */
  ACME_JOB_DONE,
} acme_job_state_t;

/* What a job is for: it decides the state after the account and the
 * callback that reports the outcome. */
typedef enum {
  ACME_KIND_OBTAIN = 0, /* acme_engine_obtain */
  ACME_KIND_REVOKE,     /* acme_engine_revoke, acme_engine_revoke_by_cert_key */
  ACME_KIND_ROLLOVER,   /* acme_engine_rollover */
  ACME_KIND_DEACTIVATE, /* acme_engine_deactivate */
  ACME_KIND_ARI,        /* acme_engine_renewal_info */
} acme_job_kind_t;

typedef enum {
  ACME_CHALL_NONE = -1,
  ACME_CHALL_TLS_ALPN_01 = CONF_CHALLENGE_TLS_ALPN_01,
  ACME_CHALL_HTTP_01 = CONF_CHALLENGE_HTTP_01,
  ACME_CHALL_DNS_01 = CONF_CHALLENGE_DNS_01,
} acme_chall_type_t;

typedef struct acme_job acme_job_t;

/* acme_ca_t is one CA the engine orders from (acme.issuers, in order of
 * preference): its settings, HTTPS client, directory, nonces, account and
 * back-off. A job talks to one CA at a time (job->ca); an order that fails
 * there for a reason of the CA's (acme__job_ca_fault) moves on to the next
 * one that is not backing off. */
typedef struct acme_ca {
  acme_engine_t *engine;
  size_t index;
  conf_issuer_t conf; /* conf_issuer: the configuration's strings, borrowed */
  char *name;         /* conf.name, else the directory's host ("host" or "host_port") */
  acme_httpc_t *httpc;
  char *account_id;
  /* the directory, once fetched */
  int have_directory;
  char *url_new_nonce, *url_new_account, *url_new_order, *url_revoke;
  char *url_key_change; /* NULL when the CA's directory has none */
  char *url_renewal_info; /* NULL when the CA's directory has none (RFC 9773) */
  char **profiles;        /* meta.profiles' names (draft-aaron-acme-profiles) */
  size_t num_profiles;
  char **caa_ids;         /* meta.caaIdentities, else conf.caa_identities (borrowed then) */
  size_t num_caa_ids;
  int own_caa_ids;        /* caa_ids is ours to free */
  acme_nonce_pool_t nonces;
  /* the account, once found or created */
  EVP_PKEY *account_key;
  char *thumbprint;
  char *kid;
  int account_busy; /* a job is finding or creating the account */
  int paused_logged; /* the CA's "account paused" error was logged once */
  /* Back-off after a CA-side failure, with several CAs only: orders skip
   * the CA until then. Kept in the store (ca_state.c), so a restart or
   * another node of a fleet does not try a CA that is down at once. */
  _Atomic int64_t backoff_until; /* time_t; 0: none */
  unsigned backoff_failures;     /* in a row */
  int backoff_loaded;
  /* Orders finished here, by the last challenge type used (tls-alpn-01,
   * http-01, dns-01, none) and result (ok, failed); and those handed on to
   * the next CA. Read by any thread (acme_engine_ca_stats). */
  _Atomic uint64_t order_stats[4][2];
  _Atomic uint64_t fallbacks;
} acme_ca_t;

struct acme_engine {
  uv_loop_t *loop;
  const conf_t *conf;
  const conf_acme_t *acme; /* what every CA shares: challenges, keys, DNS */
  acme_challenges_t *challenges;
  acme_storage_t *storage;
  acme_ca_t cas[ACME_MAX_CAS];
  size_t num_cas;
  acme_job_t *jobs; /* not yet finished */
  size_t num_jobs;  /* not yet freed */
  int closing;
  /* The last orders to finish (order_log.c): a ring, written by the
   * control thread and read by the admin API's, under log_mu. */
  pthread_mutex_t log_mu;
  acme_order_event_t log[ACME_ORDER_LOG];
  size_t log_next, log_num;
};

struct acme_job {
  acme_engine_t *engine;
  acme_ca_t *ca;  /* the CA this job talks to now */
  int ca_fault;   /* the failure being reported is the CA's (acme__job_ca_fault) */
  int ca_skip;    /* the failure is this CA's only (CAA forbids it): next CA, no back-off */
  uint64_t ca_retry_after_ms; /* with it: the CA's Retry-After, 0 when none */
  char *ca_errors; /* an order's failures at the CAs it left, for the final message */
  char *issued_by;      /* an order: the CA (directory) of the stored certificate, or NULL */
  char *stored_profile; /* and its profile, or NULL */
  acme_job_t *next;
  acme_job_state_t state;
  acme_job_kind_t kind;
  acme_obtain_cb obtain_cb;
  acme_revoke_cb status_cb; /* every kind but ACME_KIND_OBTAIN */
  void *arg;
  char **names;
  size_t num_names;
  uint64_t started_ms;
  int renewal;    /* an order replacing a certificate (acme_engine_renew) */
  acme_storage_lock_t *lock;
  acme_cert_t *stored; /* a fleet's certificate that made the order needless */
  uv_timer_t timer;
  int timer_action; /* what the timer does when it fires (engine.c) */
  int timer_closed;
  unsigned in_flight; /* HTTP requests and processes that will call back */
  int done;           /* the user's callback has been called */
  int fail_status;    /* with fail_msg: failure to deliver from the loop */
  char *fail_msg;

  /* the request in progress, kept to re-sign it on a retry */
  const char *method;
  char *url;
  char *payload; /* NULL: unsigned; "" POST-as-GET */
  int use_jwk;
  EVP_PKEY *sign_key; /* NULL: the account key; else signs with its "jwk" */
  size_t max_body;
  int fetching_nonce;
  unsigned attempts, nonce_retries, rate_retries;

  int account_lookup; /* ACCOUNT: onlyReturnExisting */
  int account_resets; /* times the CA forgot the account during this job */
  int used_chall;     /* the last challenge type presented (acme_chall_t), for stats */
  int account_owner;  /* this job finds or creates the engine's account */
  EVP_PKEY *probe_key; /* ACCOUNT: an interrupted rollover's key, looked up first */

  /* the order */
  char *order_url, *finalize_url, *cert_url;
  char **authz_urls;
  size_t num_authz, authz_i;
  int finalized;
  uint64_t poll_delay_ms, poll_deadline_ms;
  /* the challenge being validated */
  acme_chall_type_t chall_type;
  int presented;
  char *chall_url, *chall_token, *chall_name, *keyauth, *dns_fqdn, *dns_value;
  void *hook; /* the dns hook's "present" while it runs (engine.c) */
  struct acme_dnscheck *dnscheck; /* ACME_JOB_PROPAGATE (propagation.c) */
  struct acme_dnsupdate *dnsupdate; /* ACME_JOB_PRESENT by RFC 2136 (propagation.c) */
  struct acme_authns *authns;       /* ACME_JOB_PROPAGATE: finding the zone's servers */
  char *dns_zone;                   /* ACME_JOB_PROPAGATE: the zone they serve */
  /* the certificate */
  EVP_PKEY *cert_key;
  char *chain_pem;
  char **alt_urls;
  size_t num_alt, alt_i;

  /* revocation */
  char *revoke_der_b64;
  int reason;

  /* key rollover: the new account key, until it is the engine's */
  EVP_PKEY *new_key;

  char *profile; /* the ACME profile this order asks for, or NULL */
  /* CAA, looked up while the order starts (caa_check.c): per name, the
   * relevant records and which challenge types may be used at job->ca */
  struct acme_caa_name {
    void *rrs;                     /* acme_caa_rr_t[] (dnscheck.h), or NULL */
    size_t num_rrs;
    char *found_at;
    int looked_up;                 /* the lookup answered (else: not checked) */
    unsigned allowed;              /* bit per acme_chall_type_t; all when unchecked */
  } *caa;
  struct acme_caa_lookup *caa_lookup;
  size_t caa_next;
  uint64_t caa_deadline_ms;
  int caa_done;
  /* Authorizations validated in parallel (issue 16): an HTTP-01 or
   * TLS-ALPN-01 challenge is answered and left to the CA while the next
   * authorization is fetched; once all are, each is polled in turn. */
  struct acme_pend {
    size_t authz;        /* index in authz_urls */
    acme_chall_type_t type;
    char *id;            /* the token (http-01) or the name (tls-alpn-01) */
  } *pend;
  size_t num_pend, pend_i;
  int pend_polling;      /* polling pend[pend_i] */

  /* renewal information (RFC 9773): the certificate's ARI identifier, for
   * ACME_KIND_ARI and for an order's "replaces" */
  char *ari_cert_id;
  acme_ari_cb ari_cb;
  acme_ari_t ari;
  char *ari_explanation;
};

/* acme__job_stats_chall is |job|'s challenge as the order statistics
 * count it: an index into acme_stats_challenges. */
static inline int acme__job_stats_chall(const acme_job_t *job) {
  return job->used_chall >= 0 && job->used_chall < 3 ? job->used_chall : 3;
}

/* order_log.c: acme__order_log_add records |job|, an order that just
 * finished with |status| (and |err|); acme__order_log_free empties the
 * ring when the engine goes. */
void acme__order_log_add(acme_engine_t *e, const acme_job_t *job, int status, const char *err);
void acme__order_log_free(acme_engine_t *e);

/* engine.c, for order.c */
void acme__job_request(acme_job_t *job, const char *method, const char *url,
                       const char *payload, size_t max_body);
void acme__job_goto(acme_job_t *job, acme_job_state_t state);
void acme__job_wait(acme_job_t *job, acme_job_state_t state, uint64_t delay_ms);
void acme__job_fail(acme_job_t *job, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void acme__job_succeed(acme_job_t *job, acme_cert_t *cert);
/* acme__job_ca_fault is acme__job_fail for a failure that is the CA's
 * (unreachable, 5xx, rate limited, account paused, a broken answer): an
 * order moves on to the next CA, if there is one, instead of failing. */
void acme__job_ca_fault(acme_job_t *job, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *acme__json_str(acme_job_t *job, const cJSON *obj, const char *field);
/* acme__url_problem says why |url|, given by the CA, is not to be
 * followed (NULL: it is fine): every URL must be https:// (so it gets the
 * same TLS checks as the directory, against the same roots), with a host,
 * no user name, no space or control byte, at most 2048 bytes.
 * acme__json_url is acme__json_str for such a URL: it fails the job with
 * the reason. */
const char *acme__url_problem(const char *url);
const char *acme__json_url(acme_job_t *job, const cJSON *obj, const char *field);
/* acme__profile_problem says why |ca| will not take an order for profile
 * |name| (a new string: which profiles it offers), or NULL. */
char *acme__profile_problem(const acme_ca_t *ca, const char *name);
/* acme__cert_problem checks a certificate chain a CA returned (|chain_pem|,
 * |chain_len| bytes, leaf first) for an order of |names| whose CSR has
 * |key|: the leaf's key is |key|, its DNS names are exactly |names|, it is
 * valid now, and each certificate is issued and signed by the next.
 * Returns NULL, or why not (a new string). */
char *acme__cert_problem(const char *chain_pem, size_t chain_len, const char *const *names,
                         size_t num_names, const EVP_PKEY *key);
uint64_t acme__retry_after_ms(const acme_httpc_resp_t *resp, uint64_t dflt_ms, uint64_t cap_ms);
int acme__hook_run(acme_job_t *job, const char *action, const char *fqdn, const char *value);

/* order.c */
void acme__order_request(acme_job_t *job);
void acme__order_response(acme_job_t *job, const acme_httpc_resp_t *resp, const cJSON *json);
void acme__order_hook_done(acme_job_t *job, int64_t exit_status, int term_signal);
void acme__order_cleanup(acme_job_t *job);
/* acme__order_reset forgets an order's state at its CA (its URLs, the
 * challenge, the chain), so the job can order again from the start at
 * another CA; the certificate key is kept. After acme__order_cleanup. */
void acme__order_reset(acme_job_t *job);

/* ca_state.c: a CA's back-off, in the store beside its accounts.
 * acme__ca_backoff_load reads it once; acme__ca_failed lengthens it (the
 * CA's Retry-After when longer) and stores it; acme__ca_ok clears it. */
void acme__ca_backoff_load(acme_ca_t *ca);
void acme__ca_failed(acme_ca_t *ca, uint64_t retry_after_ms, const char *why);
void acme__ca_ok(acme_ca_t *ca);

/* caa_check.c: the CAA pre-check (RFC 8659, RFC 8657). acme__caa_start
 * looks up every name's CAA records in the background when an order
 * starts; acme__caa_gate, before newOrder at a CA, returns 0 to go on,
 * 1 when the job now waits for the lookups (ACME_JOB_CAA_WAIT), -1 when
 * it failed or moved on because the records forbid this CA;
 * acme__caa_allows says whether a challenge type may prove |name| there;
 * acme__caa_stop cancels and frees. */
void acme__caa_start(acme_job_t *job);
int acme__caa_gate(acme_job_t *job);
int acme__caa_allows(const acme_job_t *job, const char *name, acme_chall_type_t type);
void acme__caa_stop(acme_job_t *job);

/* propagation.c: acme__order_dns_wait moves a job whose dns hook (or
 * update) has presented the record to ACME_JOB_PROPAGATE and, once the
 * zone's authoritative servers (else a resolver) have it, to
 * ACME_JOB_RESPOND (or fails it); acme__order_dns_cancel stops the wait
 * and a present update in flight. */
void acme__order_dns_wait(acme_job_t *job);
void acme__order_dns_cancel(acme_job_t *job);

/* propagation.c: acme__order_dns_update publishes (|add| 1) the job's TXT
 * record by an RFC 2136 update (acme.dns.rfc2136) and, once the server has
 * confirmed it, calls acme__order_dns_wait; or removes it (|add| 0), best
 * effort, logging the outcome, detached from the job. Returns 0, or a
 * negative error once the job has been failed (|add| 1) or the failure
 * logged (|add| 0). */
int acme__order_dns_update(acme_job_t *job, int add);

#endif
