/* control.h: the control thread, which runs the ACME engine for the
 * managed sites, and the server's list of managed certificates (see
 * control.c). */
#ifndef GH_PROXY_CONTROL_H
#define GH_PROXY_CONTROL_H

#include <pthread.h>

#include "proxy/internal.h"

typedef struct px_managed_cert px_managed_cert_t;

/* px_managed_t: the certificates the control thread obtained or loaded,
 * and the generation they are installed in. Shared by the main thread
 * (reload) and the control thread (install), under |mu|. */
typedef struct {
  pthread_mutex_t mu;
  px_gen_t *gen; /* current generation (a reference) */
  px_managed_cert_t *certs;
  size_t num_certs;
} px_managed_t;

/* px_managed_init starts an empty list installing into |gen| (taking a
 * reference); px_managed_cleanup releases everything. */
void px_managed_init(px_managed_t *m, px_gen_t *gen);
void px_managed_cleanup(px_managed_t *m);

/* px_managed_install remembers |cert| (taking a reference) for |site|,
 * replacing the previous one, and puts it into the current generation's
 * certificate table under each of the site's host patterns. Any thread. */
void px_managed_install(px_managed_t *m, const conf_site_t *site, acme_cert_t *cert);

/* px_managed_set_gen installs every remembered certificate into |gen|'s
 * table (for the patterns |gen|'s configuration still manages) and makes
 * |gen| the current generation. Called by reload() before |gen| is handed
 * to the workers. */
void px_managed_set_gen(px_managed_t *m, px_gen_t *gen);

/* px_managed_install_name remembers |cert| (taking a reference) as the
 * on-demand certificate of |name| and puts it into the current
 * generation's table; beyond |capacity| on-demand certificates (0: no cap)
 * the least recently used one leaves memory (it reloads from storage at
 * its next handshake). Any thread. */
void px_managed_install_name(px_managed_t *m, const char *name, acme_cert_t *cert,
                             size_t capacity);

/* px_managed_evict_name forgets the on-demand certificate of |name| and
 * takes it out of the current table, so that a reload does not put it back
 * (it reloads from storage at its next handshake). Returns 1 if it was
 * there, else 0. Any thread. */
int px_managed_evict_name(px_managed_t *m, const char *name);

typedef struct px_control px_control_t;
struct px_ondemand;

/* px_control_start opens the storage, creates the engine for |gen|'s
 * configuration (which must have acme.directory) and starts the control
 * thread, which installs or orders the managed sites' certificates into
 * |managed|, and serves the names |ondemand| posts (NULL: none). Returns
 * the thread's handle, or NULL with |*out_err| set (caller frees). */
px_control_t *px_control_start(char **out_err, px_gen_t *gen, acme_challenges_t *challenges,
                               px_managed_t *managed, struct px_ondemand *ondemand);

/* px_control_ondemand posts |name| (|name_len| bytes) for an on-demand
 * certificate, from any thread; the answer comes back through
 * px_ondemand_finish. */
void px_control_ondemand(px_control_t *ctl, const char *name, size_t name_len,
                         const char *client_ip);

/* px_control_done_cb receives the outcome of a px_control_obtain order, on
 * the control thread: 0 or a negative error (already logged). */
typedef void (*px_control_done_cb)(void *arg, int status);

/* px_control_obtain is px_control_start for one order of |names| (kept
 * alive by the caller until px_control_stop) instead of the managed sites:
 * |done| is called once, on the control thread, unless the thread is
 * stopped first. */
px_control_t *px_control_obtain(char **out_err, px_gen_t *gen, acme_challenges_t *challenges,
                                const char *const *names, size_t num_names,
                                px_control_done_cb done, void *done_arg);

/* px_control_stop tells the control thread to stop (orders in flight are
 * cancelled), joins it and frees everything. NULL does nothing. */
void px_control_stop(px_control_t *ctl);

/* px_control_call runs |fn|(|ctl|, |arg|) on the control thread, from any
 * thread; requests run in the order they were posted. |fn| also runs (and
 * must cope) while the thread is stopping: px_control_engine then returns
 * NULL. Requests still queued when the thread has stopped are dropped
 * without running. */
void px_control_call(px_control_t *ctl, void (*fn)(px_control_t *ctl, void *arg), void *arg);

/* px_control_cert_renewed tells the renewal scheduler that |cert| was
 * obtained and installed for |name| outside it (an operator's renew): the
 * next renewal is computed from |cert|. Control thread only. */
void px_control_cert_renewed(px_control_t *ctl, const char *name, const acme_cert_t *cert);

/* px_control_cert_revoked records in |name|'s meta.json that its stored
 * certificate was revoked and renews it at once; until the new one is
 * installed the revoked one is still served (nothing better exists), and
 * after a restart it is never installed. Control thread only. */
void px_control_cert_revoked(px_control_t *ctl, const char *name);

/* Accessors for code running on the control thread (px_control_call):
 * the engine (NULL while stopping), the storage handle, the managed
 * certificates, the loop. */
acme_engine_t *px_control_engine(px_control_t *ctl);
struct acme_storage;
struct acme_storage *px_control_storage(px_control_t *ctl);
px_managed_t *px_control_managed(px_control_t *ctl);
uv_loop_t *px_control_loop(px_control_t *ctl);

#endif
