/* ondemand.h: certificates obtained during the first handshake for a name
 * (DESIGN.md flow 2).
 *
 * A worker whose select-certificate callback misses calls
 * px_ondemand_on_miss: cheap checks first (name hygiene and the allow
 * patterns, the negative cache, the caps), then the connection is
 * registered as a waiter, the name is posted to the control thread (once
 * per name however many workers and connections ask: coalescing), and the
 * handshake pauses with ssl_select_cert_retry. The worker keeps serving
 * everyone else. The control thread decides (ask endpoint, rate limits),
 * loads the stored certificate or orders one, installs it in the table and
 * calls px_ondemand_finish, which wakes every worker that has waiters for
 * the name; each resumes its paused handshakes. A waiter that leaves
 * (client gone, wait budget spent) is unregistered on its own worker, so a
 * finished order never touches a freed connection. */
#ifndef GH_PROXY_ONDEMAND_H
#define GH_PROXY_ONDEMAND_H

#include <openssl/ssl.h>

#include "acme/policy.h"
#include "proxy/worker.h"

typedef struct px_ondemand px_ondemand_t;
typedef struct px_control px_control_t;

/* px_ondemand_new returns the on-demand state, made once for the
 * server's life, with |gen|'s settings (on_demand may be off: a reload may
 * turn it on), waking |workers| when names finish. It attaches itself to
 * |gen|'s SSL_CTX when on. */
px_ondemand_t *px_ondemand_new(px_gen_t *gen, px_worker_t **workers, unsigned num_workers);
void px_ondemand_free(px_ondemand_t *od);

/* px_ondemand_reconfigure switches |od| to |gen|'s settings (a reload),
 * for every handshake from now on, also those that began under an older
 * generation: the allow list, the caps, on or off. Refusals remembered
 * under the old settings are forgotten. Attaches to |gen|'s SSL_CTX when
 * on. Main thread. */
void px_ondemand_reconfigure(px_ondemand_t *od, px_gen_t *gen);

/* px_ondemand_enabled reports whether on-demand certificates are on
 * (on_demand and acme.directory set in the current settings). */
int px_ondemand_enabled(px_ondemand_t *od);

/* px_ondemand_hold stops posting names, before a reload stops the control
 * thread: names then stay pending, and a name the stopping thread
 * cancels (px_ondemand_finish, not ok) stays pending too, its handshakes
 * still paused. */
void px_ondemand_hold(px_ondemand_t *od);

/* px_ondemand_set_control tells |od| where to post names from now on and
 * posts every pending name there (those posted before the thread started,
 * or held across a reload). With |ctl| NULL, or on-demand off, the
 * pending names fail instead. Ends px_ondemand_hold. */
void px_ondemand_set_control(px_ondemand_t *od, px_control_t *ctl);

/* px_ondemand_stop: the server is stopping; every later miss is refused
 * and nothing is posted again. */
void px_ondemand_stop(px_ondemand_t *od);

/* px_ondemand_limits returns the rate limits' state that every control
 * thread's policy uses in turn (acme_policy_limits_t). */
acme_policy_limits_t *px_ondemand_limits(px_ondemand_t *od);

/* px_ondemand_attach makes |ctx| (a generation's SSL_CTX) call
 * px_ondemand_on_miss for names it has no certificate for. */
void px_ondemand_attach(px_ondemand_t *od, SSL_CTX *ctx);

/* px_ondemand_finish is called on the control thread when |name| is done:
 * |ok| when its certificate is in the table, otherwise it is remembered as
 * refused for on_demand.negative_ttl, and |why| (NULL: "not obtained") is
 * kept among the last refusals. Wakes the waiting workers. */
void px_ondemand_finish(px_ondemand_t *od, const char *name, int ok, const char *why);

/* One of the last refusals: the name, why, the client that asked (last
 * one), when (the last time, gh_now_ms) and how often. */
typedef struct {
  char name[256];
  char reason[160];
  char client_ip[64];
  uint64_t at_ms;
  uint64_t count;
} px_od_refused_t;

/* px_ondemand_refuse remembers that another node of the fleet refused
 * |name| for |why|, for |ttl_ms|: its handshakes here fail at once too,
 * as for a refusal of this node's own. A name pending here is left to
 * this node's manager. Any thread. */
void px_ondemand_refuse(px_ondemand_t *od, const char *name, const char *why, uint64_t ttl_ms);

/* px_ondemand_refusals copies up to |cap| of the last refusals (of
 * distinct name and reason), newest first; returns how many. Any
 * thread. */
size_t px_ondemand_refusals(px_ondemand_t *od, px_od_refused_t *out, size_t cap);

/* px_ondemand_wakeups runs on worker |w| (from its async handle): resumes
 * or fails the handshakes paused for the names that finished. */
void px_ondemand_wakeups(px_worker_t *w);

/* px_ondemand_worker_cleanup frees wake-ups still queued for |w|. */
void px_ondemand_worker_cleanup(px_worker_t *w);

/* px_ondemand_conn_gone unregisters a paused connection that is closing.
 * Worker thread. */
void px_ondemand_conn_gone(px_conn_t *c);

/* px_ondemand_stats reports, for metrics, the handshakes paused now and
 * the names finished since start, allowed (certificate installed) or
 * refused. Any thread. */
void px_ondemand_stats(px_ondemand_t *od, size_t *out_paused, uint64_t *out_allowed,
                       uint64_t *out_refused);

/* px_ondemand_set_policy_stats publishes the control thread's policy
 * counters (acme_policy_stats) for /metrics; px_ondemand_policy_stats
 * copies the last ones published. Any thread. */
void px_ondemand_set_policy_stats(px_ondemand_t *od, const acme_policy_stats_t *st);
void px_ondemand_policy_stats(px_ondemand_t *od, acme_policy_stats_t *out);

#endif
