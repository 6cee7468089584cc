/* policy.h: the on-demand TLS policy — may this SNI name get a certificate?
 *
 * Two halves. acme_policy_precheck() is the cheap, pure test run in the TLS
 * handshake path on every certificate-cache miss: name hygiene and the
 * "allow" patterns. acme_policy_decide() is the full, asynchronous decision
 * for one miss: the negative cache, the operator's "ask" endpoint (answers
 * cached per name, concurrent questions for one name sharing one request)
 * and, when an order would be placed, the rate limits (token buckets: all
 * names, per registered domain, per client IP).
 *
 * Every map the policy keeps (refused names, ask answers, buckets) is keyed
 * with a secret-keyed SipHash and bounded: the least recently used entry
 * is dropped when a map is full, and entries that have expired (or buckets
 * that have refilled) are dropped as they are met. */
#ifndef GH_ACME_POLICY_H
#define GH_ACME_POLICY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "conf/conf.h"

/* acme_policy_precheck reports whether |name| (|name_len| bytes, not
 * necessarily NUL-terminated) may proceed to acme_policy_decide under |od|.
 * It returns NULL to proceed, or a static string saying why not ("invalid
 * name", "name too long", "label too long", "too many labels", "IP
 * literal", "not in on_demand.allow", ...).
 *
 * A name must be lower case (the caller folds SNI names first) and consist
 * of LDH labels of 1-63 bytes with no leading or trailing '-', 253 bytes at
 * most, at most |od->max_labels| labels (0: 10), and no all-numeric last
 * label. IP literals (a dotted quad, or anything with a ':') are refused
 * unless |od->allow_ip|. Then the name must match one of |od->allow| (exact,
 * "*.example.com" for exactly one more label, or "*"); with no allow
 * patterns, a configured "ask" decides alone. It is pure, allocation-free
 * and thread-safe. */
const char *acme_policy_precheck(const conf_on_demand_t *od, const char *name, size_t name_len);

/* acme_policy_domain finds the key of |name|'s per-domain rate limit: its
 * registered domain (eTLD+1, with |od|'s extra public suffixes), or an IP
 * literal itself. Sets |*out_start| within |name| and returns the length. */
size_t acme_policy_domain(const conf_on_demand_t *od, const char *name, const char **out_start);

typedef struct acme_policy acme_policy_t;

/* The outcome given to an acme_policy_cb. */
enum {
  ACME_POLICY_REFUSED = 0,
  ACME_POLICY_ALLOWED = 1,
  /* The ask endpoint could not be reached and a stored certificate exists:
   * serve it, but do not start an order (no rate limit was charged). */
  ACME_POLICY_STORED_ONLY = 2,
};

/* acme_policy_cb receives one decision: |allowed| is ACME_POLICY_ALLOWED,
 * ACME_POLICY_STORED_ONLY, ACME_POLICY_REFUSED, or UV_ECANCELED when the
 * policy was freed first. |reason| says why when refused (and what happened
 * for ACME_POLICY_STORED_ONLY); it is NULL when simply allowed. |reason| is
 * valid only during the call. */
typedef void (*acme_policy_cb)(void *arg, int allowed, const char *reason);

/* acme_policy_limits_t holds what one policy hands to the next when a
 * reload replaces it: the rate limits' buckets and the counters
 * (acme_policy_stats). A bucket whose rate the new policy changed starts
 * full at the new rate. It is used by one policy at a time, on that
 * policy's thread; the caller orders the hand-over (the next policy is
 * made after the previous one's thread has stopped). */
typedef struct acme_policy_limits acme_policy_limits_t;
acme_policy_limits_t *acme_policy_limits_new(void);
/* acme_policy_limits_free frees |l| once no policy uses it. NULL: nothing. */
void acme_policy_limits_free(acme_policy_limits_t *l);

/* acme_policy_new returns a policy on |loop| for |od|, which it copies (|od|
 * need not outlive the call), keeping its buckets and counters in |limits|
 * (not owned; NULL: its own, new ones). The ask endpoint, if any, is reached through
 * an HTTP(S) client that trusts the system roots plus the PEM files
 * |ca_roots[0..num_roots)|. On failure it returns NULL and sets |*out_err|
 * (caller frees). Every call but acme_policy_precheck must be made on
 * |loop|'s thread. */
acme_policy_t *acme_policy_new(char **out_err, uv_loop_t *loop, const conf_on_demand_t *od,
                               const char *const *ca_roots, size_t num_roots,
                               acme_policy_limits_t *limits);

/* acme_policy_free cancels the decisions in flight: their callbacks run
 * later, from the loop, with UV_ECANCELED (libuv style), so their |arg|
 * must stay valid until then. The memory is released once the last handle
 * and request have finished; keep running the loop until it is empty. May
 * be called from an acme_policy_cb. acme_policy_free(NULL) does nothing. */
void acme_policy_free(acme_policy_t *p);

/* acme_policy_decide decides whether |name| (lower case, NUL-terminated),
 * reached by client |client_ip| (text form; NULL or "" when unknown: no
 * per-IP limit then), may be served. |have_stored| says a stored
 * certificate exists for it; |needs_order| that allowing it means placing
 * an order, so the rate limits apply (and are charged only when all three
 * pass). The steps, each refusal ending the decision:
 *
 *   0. acme_policy_precheck;
 *   1. a name refused within on_demand.negative_ttl: "recently refused: R";
 *   2. the ask endpoint, if configured: GET ASK?domain=NAME&client_ip=IP.
 *      2xx allows, any other status refuses ("ask refused: 403"), both
 *      cached for ask_cache_ttl / ask_negative_ttl. A connection error,
 *      timeout or 5xx is "unreachable" and never cached: ACME_POLICY_
 *      STORED_ONLY if |have_stored|, else refused ("ask unreachable").
 *      Decisions for one name made while its request is in flight share it
 *      (with the first decision's client_ip);
 *   3. when |needs_order|: per client IP (IPv6 clients by /64), per
 *      registered domain, then global: "rate limit per_domain (10/1h) for
 *      example.com".
 *
 * Refusals are remembered in the negative cache for negative_ttl, except
 * "ask unreachable" (not the name's fault) and per-client-IP rate limits
 * (else one client could lock a name out for everyone).
 *
 * Returns 0, after which |cb| runs exactly once, ALWAYS from the loop and
 * never from within this call (callers need not guard against
 * re-entrance); or UV_EINVAL (NULL name or cb, or a client_ip over 63
 * bytes), and |cb| is never called. */
int acme_policy_decide(acme_policy_t *p, const char *name, const char *client_ip,
                       int have_stored, int needs_order, acme_policy_cb cb, void *arg);

/* Counters since acme_policy_new (or since its acme_policy_limits_t was
 * made), for metrics. */
typedef struct {
  uint64_t allowed;             /* ACME_POLICY_ALLOWED */
  uint64_t allowed_stored_only; /* ACME_POLICY_STORED_ONLY */
  uint64_t refused_precheck;
  uint64_t refused_negative_cache;
  uint64_t refused_ask;             /* non-2xx answers, fresh or cached */
  uint64_t refused_ask_unreachable; /* unreachable with nothing stored */
  uint64_t refused_rate_client_ip;
  uint64_t refused_rate_domain;
  uint64_t refused_rate_global;
  uint64_t cancelled;
  uint64_t ask_requests;    /* requests sent */
  uint64_t ask_cache_hits;  /* decisions answered from the ask cache */
  uint64_t ask_coalesced;   /* decisions that joined a request in flight */
  uint64_t ask_unreachable; /* requests that failed or got a 5xx */
  uint64_t ask_latency_ms_sum; /* over finished requests */
  uint64_t ask_latency_count;
  size_t num_negative; /* entries now in each map */
  size_t num_ask_cached;
  size_t num_domain_buckets;
  size_t num_ip_buckets;
} acme_policy_stats_t;

/* acme_policy_stats fills |out| with the counters of |p|. */
void acme_policy_stats(const acme_policy_t *p, acme_policy_stats_t *out);

#endif
