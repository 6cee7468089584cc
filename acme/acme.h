/* acme.h: the certificate plane's public API, as the data plane and the
 * command line see it.
 *
 * Two pieces:
 *
 *  - The challenge table (acme_challenges_t): the answers to pending
 *    TLS-ALPN-01 and HTTP-01 challenges. The control thread writes it; every
 *    worker reads it (under a read lock, never blocking on the network).
 *
 *  - The engine (acme_engine_t): an asynchronous ACME client (RFC 8555) on
 *    one libuv loop, the control thread's. "Get a certificate for these
 *    names, call me back." It keeps its account and certificates in the
 *    storage directory and puts challenge answers in the table while an
 *    order is validated. Like libuv: if a function that takes a callback
 *    fails, the callback is never called. */
#ifndef GH_ACME_H
#define GH_ACME_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "acme/certs.h"
#include "conf/conf.h"

/* ---- challenge table ---- */

typedef struct acme_challenges acme_challenges_t;

acme_challenges_t *acme_challenges_new(void);
void acme_challenges_free(acme_challenges_t *table);

/* acme_challenges_put_tlsalpn makes |cert| (a TLS-ALPN-01 certificate for
 * |name|, see acme__tlsalpn_cert) the answer for |name|, taking a new
 * reference; NULL removes it. */
void acme_challenges_put_tlsalpn(acme_challenges_t *table, const char *name, acme_cert_t *cert);

/* acme_challenges_put_http01 makes |keyauth| the answer for
 * /.well-known/acme-challenge/|token|; NULL removes it. Copies both. */
void acme_challenges_put_http01(acme_challenges_t *table, const char *token, const char *keyauth);

/* acme_challenges_get_tlsalpn returns a new reference to the TLS-ALPN-01
 * certificate for the lower-case |name| (caller unrefs), or NULL. */
acme_cert_t *acme_challenges_get_tlsalpn(acme_challenges_t *table, const char *name,
                                         size_t name_len);

/* acme_challenges_get_http01 returns a newly allocated copy of the key
 * authorization for |token| (caller frees with gh_free), or NULL. */
char *acme_challenges_get_http01(acme_challenges_t *table, const char *token, size_t token_len);

/* Fleets (issue 15). acme_challenges_put_fleet makes |keyauth| the answer
 * another node published for the HTTP-01 token (|http01|) or TLS-ALPN-01
 * name |id| (NULL removes it). It lives beside this node's own answers,
 * which win, so the two never undo each other. Any thread. */
void acme_challenges_put_fleet(acme_challenges_t *table, int http01, const char *id,
                               const char *keyauth);

/* acme_challenges_fetch_fn is asked on a miss of both layers, from a
 * worker, one call at a time: the key authorization for |id| (|id_len|
 * bytes, unchecked: whatever a client sent), a new string, or NULL. It
 * must be quick and bounded. */
typedef char *(*acme_challenges_fetch_fn)(void *arg, int http01, const char *id, size_t id_len);

/* acme_challenges_set_fetch installs |fn| (NULL: none), calling the
 * previous one's |free_fn| (if any) on its |arg| once no call is in
 * flight. Removing it also forgets every fleet answer. */
void acme_challenges_set_fetch(acme_challenges_t *table, acme_challenges_fetch_fn fn,
                               void (*free_fn)(void *arg), void *arg);

/* ---- engine ---- */

typedef struct acme_engine acme_engine_t;

/* acme_engine_new creates an engine for |conf|'s acme and storage settings
 * on |loop|, writing challenge answers into |challenges| (not owned; must
 * outlive the engine). |conf| must outlive the engine. Returns NULL with
 * |*out_err| set (caller frees) if, e.g., the storage directory or a CA
 * root file cannot be used. Nothing touches the network until the first
 * request. */
acme_engine_t *acme_engine_new(char **out_err, uv_loop_t *loop, const conf_t *conf,
                               acme_challenges_t *challenges);

/* acme_engine_free stops the engine: orders in flight end with their
 * callbacks called with UV_ECANCELED (from the loop, after this returns).
 * acme_engine_free(NULL) does nothing. */
void acme_engine_free(acme_engine_t *engine);

/* acme_obtain_cb receives the outcome of acme_engine_obtain: |status| 0 and
 * |cert|, already written to storage (borrowed: take a reference with
 * acme_cert_ref to keep it); or a negative status and |err|, a message
 * naming the CA URL and the problem type and detail (RFC 8555 problem
 * document), valid during the call. */
typedef void (*acme_obtain_cb)(void *arg, int status, const char *err, acme_cert_t *cert);

/* acme_engine_obtain orders one certificate covering |names| (lower-case,
 * the first is the storage name) through the configured CA: account (found
 * or created), newOrder, authorizations and challenges by the configured
 * preference, finalize with a CSR, download, store. Returns 0 (the
 * callback will be called exactly once) or a negative error (it will not). */
int acme_engine_obtain(acme_engine_t *engine, const char *const *names, size_t num_names,
                       acme_obtain_cb cb, void *arg);

/* acme_engine_renew is acme_engine_obtain for the renewal of |replaces|:
 * when the CA's directory offers renewalInfo (RFC 9773), the new order
 * names it ("replaces"). |replaces| is only read during the call. */
int acme_engine_renew(acme_engine_t *engine, const char *const *names, size_t num_names,
                      const acme_cert_t *replaces, acme_obtain_cb cb, void *arg);

/* acme_ari_t is the CA's renewal information for a certificate (RFC 9773):
 * its suggested window, the moment chosen in it (uniformly at random, now
 * if the window has passed), when to ask again (the CA's Retry-After, 6
 * hours by default, clamped to 1 minute..1 day) and its explanationURL
 * (NULL when absent). */
typedef struct {
  time_t start, end, renew_at;
  uint64_t retry_after_s;
  const char *explanation_url;
} acme_ari_t;

/* acme_ari_cb receives the outcome of acme_engine_renewal_info: |status| 0
 * and |info| (valid during the call), or a negative status and |err|;
 * UV_ENOTSUP when the CA's directory has no renewalInfo. */
typedef void (*acme_ari_cb)(void *arg, int status, const char *err, const acme_ari_t *info);

/* acme_engine_renewal_info asks the CA when to renew |cert| (an unsigned
 * GET of renewalInfo/<certID>). |cert| is only read during the call. Same
 * contract as acme_engine_obtain. */
int acme_engine_renewal_info(acme_engine_t *engine, const acme_cert_t *cert, acme_ari_cb cb,
                             void *arg);

/* acme_revoke_cb receives the outcome of acme_engine_revoke. */
typedef void (*acme_revoke_cb)(void *arg, int status, const char *err);

/* acme_engine_revoke revokes |cert| (RFC 8555 7.6) with CRL reason
 * |reason| (0-10 except 7), signed by the account key. Same contract as
 * acme_engine_obtain. */
int acme_engine_revoke(acme_engine_t *engine, acme_cert_t *cert, int reason, acme_revoke_cb cb,
                       void *arg);

/* acme_engine_revoke_by_cert_key is acme_engine_revoke signed by |cert|'s
 * own private key, its JWK in the protected header (RFC 8555 7.6): it
 * needs no account, so it also revokes a certificate whose account is
 * lost. Fails with UV_EINVAL if |cert| has no key. Same contract. */
int acme_engine_revoke_by_cert_key(acme_engine_t *engine, acme_cert_t *cert, int reason,
                                   acme_revoke_cb cb, void *arg);

/* acme_account_cb receives the outcome of acme_engine_rollover and
 * acme_engine_deactivate: |status| 0, or a negative status and |err| (as
 * for acme_obtain_cb), valid during the call. */
typedef void (*acme_account_cb)(void *arg, int status, const char *err);

/* acme_engine_rollover replaces the stored account's key with a new P-256
 * key (RFC 8555 7.3.5). The new key is stored beside the old one before the
 * CA hears of it, and alone (atomically) once the CA accepts, before
 * anything is signed with it; an engine that finds both (the process died
 * in between) asks the CA which one the account has. If the last write
 * fails the callback says so.
 * Requests of other jobs signed with the old key while the change is in
 * flight may be refused. Fails (through the callback) with UV_ENOENT if no
 * account is stored, UV_ENOTSUP if the CA has no keyChange. Returns 0 (the
 * callback will be called exactly once) or a negative error (it will not). */
int acme_engine_rollover(acme_engine_t *engine, acme_account_cb cb, void *arg);

/* acme_engine_deactivate deactivates the stored account at the CA (RFC
 * 8555 7.3.6), which cannot be undone, and marks it deactivated in
 * storage: the next order creates a new account with a new key. Orders in
 * flight on the account will fail. Same contract as acme_engine_rollover. */
int acme_engine_deactivate(acme_engine_t *engine, acme_account_cb cb, void *arg);

/* ---- renewal state ---- */

struct acme_storage;

/* acme_renewal_state_t is what a certificate's failed renewals leave in
 * its stored meta.json ("renewal"): how many failed in a row, when the
 * next attempt may be made, and why the last one failed. */
typedef struct {
  unsigned failures;
  time_t next_retry; /* 0: none */
  char last_error[256];
  int revoked; /* the certificate was revoked: renew it now, never serve it at start */
} acme_renewal_state_t;

/* acme_engine_gate_fn is asked once an order's lock is taken (and, in a
 * fleet, no stored certificate made it needless), just before its first
 * request to the CA, on the engine's loop: 0 to go on, or a negative
 * errno (libuv style) and |*out_why| (caller frees) to fail the order
 * with it. acme_engine_obtain_gated is acme_engine_obtain with one: the
 * on-demand manager charges a fleet's shared limits there, where only the
 * node that will really order gets to. */
typedef int (*acme_engine_gate_fn)(void *arg, const char *const *names, size_t num_names,
                                   char **out_why);
int acme_engine_obtain_gated(acme_engine_t *engine, const char *const *names, size_t num_names,
                             acme_engine_gate_fn gate, void *gate_arg, acme_obtain_cb cb,
                             void *arg);

/* acme_engine_storage returns the store |engine| orders with (its locks
 * and challenge records are bound to that store's node lease, which the
 * caller keeps alive with acme_storage_keepalive). Valid until
 * acme_engine_free. */
struct acme_storage *acme_engine_storage(acme_engine_t *engine);

/* acme_renewal_state_load reads the renewal state stored with |name|'s
 * certificate into |out| (all zero when there is none). Returns 0, or a
 * negative errno as acme_storage_cert_load does (|out| zeroed). */
int acme_renewal_state_load(struct acme_storage *st, acme_renewal_state_t *out, const char *name);

/* acme_renewal_state_parse reads the renewal state from a certificate's
 * meta JSON text |meta| (NULL or not JSON: all zero). */
void acme_renewal_state_parse(acme_renewal_state_t *out, const char *meta);

/* acme_renewal_nominal is when a certificate valid from |not_before| to
 * |not_after| is due for renewal, before jitter and ARI: with a third of
 * its lifetime left, whatever the lifetime (a 6-day certificate after 4
 * days, a 90-day one after 60). */
time_t acme_renewal_nominal(time_t not_before, time_t not_after);

/* acme_renewal_state_save stores |state| with |name|'s certificate (a new
 * version of the bundle, same certificate and key). Returns 0 or a
 * negative errno with |*out_err| (caller frees). */
int acme_renewal_state_save(struct acme_storage *st, char **out_err, const char *name,
                            const acme_renewal_state_t *state);

/* acme_ca_stats_t is what acme_engine_ca_stats says of one CA: its name
 * (acme.issuers[].name, else its directory's host) and directory URL
 * (valid until acme_engine_free), the orders finished there (cancelled
 * ones not counted) by the last challenge type used — [0] tls-alpn-01,
 * [1] http-01, [2] dns-01, [3] none (every authorization was already
 * valid) — and result ([0] ok, [1] failed), the orders handed on to the
 * next CA after a failure of this one's, and until when orders skip it
 * (0: they do not). */
#define ACME_MAX_CAS 8 /* acme.issuers' entries at most */

typedef struct {
  const char *name, *directory;
  uint64_t orders[4][2];
  uint64_t fallbacks;
  time_t backoff_until;
} acme_ca_stats_t;

/* acme_engine_ca_stats fills |out| with up to |max| CAs, in the order
 * orders try them, and returns how many. Any thread. */
size_t acme_engine_ca_stats(acme_engine_t *engine, acme_ca_stats_t *out, size_t max);

/* The challenge types acme_ca_stats_t's orders (and acme_order_event_t)
 * count by, in their order: "tls-alpn-01", "http-01", "dns-01", "none". */
extern const char *const acme_stats_challenges[4];

/* acme_order_event_t is one finished order, as acme_engine_recent_orders
 * tells it: when it finished, its names, the CA it ended at (its name),
 * whether it renewed a certificate, the last challenge type used (as in
 * acme_ca_stats_t), whether it succeeded, why not, and how long it took.
 * Orders another node of a fleet took over, and cancelled ones, are not
 * listed. */
#define ACME_ORDER_LOG 100 /* orders remembered */

typedef struct {
  time_t at;
  char **names;
  size_t num_names;
  char *ca;
  int renewal;
  int challenge;
  int ok;
  char *error; /* NULL when it succeeded */
  uint64_t duration_ms;
} acme_order_event_t;

/* acme_engine_recent_orders copies up to |max| of the last orders to
 * finish into |out|, newest first, and returns how many; free them with
 * acme_order_events_free. Any thread. */
size_t acme_engine_recent_orders(acme_engine_t *engine, acme_order_event_t *out, size_t max);
void acme_order_events_free(acme_order_event_t *events, size_t num);

#endif
