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

/* px_ondemand_new returns the on-demand state for |gen|'s configuration
 * (on_demand.enabled must be set), waking |workers| when names finish. */
px_ondemand_t *px_ondemand_new(px_gen_t *gen, px_worker_t **workers, unsigned num_workers);
void px_ondemand_free(px_ondemand_t *od);

/* px_ondemand_set_control tells |od| where to post names (NULL: none, so
 * every miss is refused). */
void px_ondemand_set_control(px_ondemand_t *od, px_control_t *ctl);

/* px_ondemand_attach makes |ctx| (a generation's SSL_CTX) call
 * px_ondemand_on_miss for names it has no certificate for. */
void px_ondemand_attach(px_ondemand_t *od, SSL_CTX *ctx);

/* px_ondemand_finish is called on the control thread when |name| is done:
 * |ok| when its certificate is in the table, otherwise it is remembered as
 * refused for on_demand.negative_ttl. Wakes the waiting workers. */
void px_ondemand_finish(px_ondemand_t *od, const char *name, int ok);

/* px_ondemand_wakeups runs on worker |w| (from its async handle): resumes
 * or fails the handshakes paused for the names that finished. */
void px_ondemand_wakeups(px_worker_t *w);

/* px_ondemand_worker_cleanup frees wake-ups still queued for |w|. */
void px_ondemand_worker_cleanup(px_worker_t *w);

/* px_ondemand_conn_gone unregisters a paused connection that is closing.
 * Worker thread. */
void px_ondemand_conn_gone(px_conn_t *c);

/* px_ondemand_conf returns the on-demand settings |od| runs with. */
const conf_on_demand_t *px_ondemand_conf(const px_ondemand_t *od);

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
