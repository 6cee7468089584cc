/* admin.h: the admin API (config "admin"): a small plain-HTTP/1.1 server
 * on the main thread's loop for operators and monitoring.
 *
 *   GET    /health              {"status":"ok"}
 *   GET    /certs               every certificate: stored (managed and
 *                               on-demand) and static (config files)
 *   GET    /certs/NAME          one of them
 *   POST   /certs/NAME/renew    order a new one now (202; control thread)
 *   POST   /certs/NAME/revoke   {"reason": N | "keyCompromise" ...}
 *   DELETE /certs/NAME          evict an on-demand certificate from memory
 *   POST   /reload              re-read the config file, as SIGHUP does
 *   GET    /ondemand            on-demand state and the last refused names
 *   GET    /acme                the CAs' order counters and the last orders
 *   GET    /upstreams           every upstream address: endpoints, state,
 *                               in flight, requests by status, last failure
 *   GET    /metrics             Prometheus text (metrics.h)
 *   GET    /, /ui/...           the dashboard (ui/, embedded): no token, as
 *                               a browser opening a page sends none; the
 *                               page sends it with its API requests
 *
 * It listens on a TCP address or a unix socket ("unix:PATH", mode 0600,
 * removed at exit). On TCP, requests whose Host is not the admin address
 * are refused with 421 (a DNS-rebinding defence: a browser page cannot
 * talk to it under another name); a unix socket takes any Host. With
 * admin.token set, requests without "Authorization: Bearer TOKEN" get 401
 * (on either kind). */
#ifndef GH_PROXY_ADMIN_H
#define GH_PROXY_ADMIN_H

#include "proxy/control.h"
#include "proxy/worker.h"
#include "proxy/ondemand.h"

/* What the admin server reads from the server it belongs to. The pointers
 * point into the server and are read on the main loop only. */
typedef struct {
  px_gen_t *const *gen;          /* the current generation */
  px_worker_t *const *workers;
  unsigned num_workers;
  px_control_t *const *control;  /* NULL without ACME, and once stopping */
  px_ondemand_t *ondemand;       /* NULL in px_obtain's mode */
  /* reload re-reads the config file: 0, or -1 with |*out_err| set. */
  int (*reload)(void *arg, char **out_err);
  void *reload_arg;
} px_admin_env_t;

typedef struct px_admin px_admin_t;

/* px_admin_start starts the admin server on |loop| (the main thread's),
 * listening on |(*env->gen)->conf->admin|, or on nothing while that is
 * NULL (a reload may add it: px_admin_apply). Returns the server, or NULL
 * with |*out_err| set (caller frees) when the address cannot be bound.
 * |env| is copied. */
px_admin_t *px_admin_start(char **out_err, uv_loop_t *loop, const px_admin_env_t *env);

/* px_admin_apply makes |admin| listen where |conf| (a reload's new
 * configuration, not yet in use) says: a changed address is bound first
 * and only then is the old one closed (its connections finish); an added
 * "admin" starts listening, a removed one stops. Call it before the new
 * configuration is committed. Returns 0, or -1 with |*out_err| set
 * ("admin.listen ADDR: why"; caller frees) and nothing changed, when the
 * new address cannot be bound. Tokens need nothing here: each request
 * reads the current generation's. NULL |admin| does nothing. */
int px_admin_apply(px_admin_t *admin, char **out_err, const conf_t *conf);

/* px_admin_stop closes the listener and every admin connection, and posts
 * nothing to the control thread afterwards: call it before the control
 * thread stops. The server no longer keeps the loop alive. NULL does
 * nothing. */
void px_admin_stop(px_admin_t *admin);

/* px_admin_free releases |admin| once the control thread has stopped (no
 * callback of it can still arrive); its handles close on the loop's next
 * run. NULL does nothing. */
void px_admin_free(px_admin_t *admin);

#endif
