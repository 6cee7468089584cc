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
 *   GET    /metrics             Prometheus text (metrics.h)
 *
 * Requests whose Host is not the admin address are refused with 421 (a
 * DNS-rebinding defence: a browser page cannot talk to it under another
 * name); with admin.token set, requests without "Authorization: Bearer
 * TOKEN" get 401. */
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

/* px_admin_start listens on |(*env->gen)->conf->admin| on |loop| (the
 * main thread's). Returns the server, or NULL with |*out_err| set (caller
 * frees). |env| is copied. */
px_admin_t *px_admin_start(char **out_err, uv_loop_t *loop, const px_admin_env_t *env);

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
