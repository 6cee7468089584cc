/* gen.h: one configuration generation, shared read-mostly by the workers:
 * the parsed config, the SSL_CTX with its certificate table, and the
 * upstream addresses with their health state (atomics). A reload builds a
 * new generation and hands it to each worker; connections and exchanges
 * keep working on whatever they hold references to. */
#ifndef GH_PROXY_GEN_H
#define GH_PROXY_GEN_H

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>

#include "common/common.h"
#include "acme/acme.h"
#include "conf/conf.h"

typedef struct px_group px_group_t;

typedef struct {
  const conf_addr_t *conf;
  px_group_t *group; /* the one group this address belongs to */
  /* Where to connect. An IP literal is fixed at build; a DNS name is
   * resolved again in the background (px_addr_refresh), so |sa| and
   * |sa_len| (0 = not resolved yet) are read and written under |sa_lock|. */
  struct sockaddr_storage sa;
  socklen_t sa_len;
  int is_name;
  pthread_mutex_t sa_lock;
  atomic_uint_fast64_t resolved_ms; /* last successful resolution */
  atomic_uint_fast64_t tried_ms;    /* last attempt */
  atomic_int resolving;             /* a lookup is in flight */
  atomic_uint_fast64_t down_until_ms; /* passive health: skipped until then */
  atomic_int unhealthy;               /* active health check result */
  atomic_int active;                  /* requests in flight, all workers */
  size_t index;                       /* into gen->addrs */
  atomic_uint stat_slot;              /* px_metrics_upstream_slot, 0 until known */
} px_addr_t;

struct px_group {
  const conf_upstream_group_t *conf;
  px_addr_t **addrs;
  size_t num_addrs;
  atomic_uint rr;
  uint64_t next_check_ms; /* active health check; worker 0 only */
};

typedef struct {
  const char *prefix;
  size_t prefix_len;
  px_group_t *group;
} px_route_t;

typedef struct {
  const conf_site_t *conf;
  px_group_t *group;
  px_route_t *routes; /* sorted longest prefix first */
  size_t num_routes;
  char *hsts_header;  /* full header line or NULL */
  gh_str_t hsts_value; /* its value, inside hsts_header (HTTP/2 sends the field alone) */
} px_site_t;

typedef struct px_gen {
  atomic_int refs;
  conf_t *conf;
  SSL_CTX *ssl_ctx;
  px_site_t *sites;
  size_t num_sites;
  px_site_t *default_site;
  px_group_t *groups; /* one per site and per route */
  size_t num_groups;
  px_addr_t *addrs; /* every upstream address of every group */
  size_t num_addrs;
  char *https_port_suffix; /* ":8443" for redirects, "" for 443 */
  acme_challenges_t *challenges; /* the server's; outlives every generation */
} px_gen_t;

px_gen_t *px_gen_new(char **out_err, conf_t *conf, acme_challenges_t *challenges);
px_gen_t *px_gen_ref(px_gen_t *gen);
void px_gen_unref(px_gen_t *gen);
/* px_gen_site finds the site for a Host header value (port stripped,
 * any case): exact, wildcard, "*", then default. NULL if none. */
px_site_t *px_gen_site(px_gen_t *gen, const char *host, size_t host_len);
px_group_t *px_site_route(px_site_t *site, const char *path, size_t path_len);

#endif
