/* proxy.h: the data plane. */
#ifndef GH_PROXY_H
#define GH_PROXY_H

#include "conf/conf.h"

/* px_run serves |conf| until SIGTERM/SIGINT (graceful drain, returns 0) and
 * re-reads |config_path| on SIGHUP (NULL in quick mode: SIGHUP is then
 * ignored). Takes ownership of |conf|. Returns 0 on a clean stop, or
 * non-zero if it could not start (the reason has been logged). */
int px_run(conf_t *conf, const char *config_path);

/* px_obtain runs |conf|'s listeners only until one order for |names|
 * (the first is the storage name) has finished, so that the CA can reach
 * the challenge answers: the command line's `cert obtain`. Takes ownership
 * of |conf|. Returns 0 when the certificate is stored, a negative error
 * when the order failed (logged), PX_OBTAIN_LISTEN_FAILED when a listener
 * could not be bound (a gatehouse is probably running), or 1 when it could
 * not start for another reason (logged). */
#define PX_OBTAIN_LISTEN_FAILED 3
int px_obtain(conf_t *conf, const char *const *names, size_t num_names);

/* px_cert_cmd runs `gatehouse cert ARGS...` (|argv| starts after "cert"):
 * list, revoke or obtain. Returns the process exit status: 0 on success,
 * 1 when the storage or the CA failed, 2 for a usage error. */
int px_cert_cmd(int argc, char **argv);

/* px_load_conf loads and validates the config file |path|. Returns a new
 * conf_t, or NULL after printing every error to stderr. */
conf_t *px_load_conf(const char *path);

/* px_health_cmd runs `gatehouse health ARGS...`: GET /health on the admin
 * API. Returns 0 when it answered 200, 1 when not (or there is no admin API
 * to ask), 2 for a malformed command line. */
int px_health_cmd(int argc, char **argv);

/* px_reload_cmd runs `gatehouse reload ARGS...`: POST /reload on the admin
 * API of the running server. Returns 0 when it reloaded, 1 when it refused
 * (its errors printed) or could not be asked, 2 for a malformed command
 * line. */
int px_reload_cmd(int argc, char **argv);

/* px_cert_renew_cmd runs `gatehouse cert renew NAME ARGS...` (|argv|
 * starts at NAME): POST /certs/NAME/renew on the running server's admin
 * API, and with --wait, GET /certs/NAME until its serial changes. Returns
 * 0 when the renewal started (--wait: finished), 1 when it did not, 2 for
 * a malformed command line. */
int px_cert_renew_cmd(int argc, char **argv);

/* px_raise_bind_capability makes CAP_NET_BIND_SERVICE effective when it is
 * permitted but not effective: the container image gives the binary the
 * capability as permitted only (setcap cap_net_bind_service=+p), because a
 * file whose capability is also marked effective cannot be executed at
 * all where the capability was dropped (--cap-drop ALL). Called before
 * any thread starts, as capabilities are per thread and inherited. */
void px_raise_bind_capability(void);

#endif
