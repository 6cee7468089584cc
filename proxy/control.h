/* control.h: the control thread, the bridge to the certificate plane: it
 * runs the ACME engine and the acme_manager_t (acme/manager.h) on its own
 * loop, takes the work that workers and the admin API post to it, and
 * wakes the workers waiting for on-demand names (see control.c). */
#ifndef GH_PROXY_CONTROL_H
#define GH_PROXY_CONTROL_H

#include <pthread.h>

#include "acme/cache.h"
#include "acme/manager.h"
#include "proxy/gen.h"

typedef struct px_control px_control_t;
struct px_ondemand;

/* px_control_start opens the storage, creates the engine and the manager
 * for |gen|'s configuration (which must have acme.directory) and starts
 * the control thread, where the manager installs or orders the managed
 * sites' certificates into |cache| (not owned; it must outlive the
 * thread) and serves the names |ondemand| posts (NULL: none; the caller
 * then calls px_ondemand_set_control). Returns the thread's handle, or
 * NULL with |*out_err| set (caller frees). */
px_control_t *px_control_start(char **out_err, px_gen_t *gen, acme_challenges_t *challenges,
                               acme_cache_t *cache, struct px_ondemand *ondemand);

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
 * NULL. Requests still queued when the thread has stopped run then, on
 * the thread calling px_control_stop, in that stopping state. */
void px_control_call(px_control_t *ctl, void (*fn)(px_control_t *ctl, void *arg), void *arg);

/* Accessors for code running on the control thread (px_control_call):
 * the engine (NULL while stopping), the storage handle, the installed
 * certificates, the manager (NULL in px_control_obtain's one-shot mode),
 * the loop. */
acme_engine_t *px_control_engine(px_control_t *ctl);
struct acme_storage;
struct acme_storage *px_control_storage(px_control_t *ctl);
acme_cache_t *px_control_cache(px_control_t *ctl);
acme_manager_t *px_control_manager(px_control_t *ctl);
uv_loop_t *px_control_loop(px_control_t *ctl);

#endif
