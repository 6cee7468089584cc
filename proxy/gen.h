/* gen.h: one configuration generation, shared read-mostly by the workers:
 * the parsed config, the SSL_CTX with its certificate table, and the
 * upstream addresses, their endpoints and health state (atomics). A reload builds a
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
#include "proxy/ccert.h"

typedef struct px_group px_group_t;
typedef struct px_target px_target_t;

/* PX_MAX_ENDPOINTS bounds the endpoints one DNS name expands to: an
 * answer with more addresses uses the first ones (resolver order). */
#define PX_MAX_ENDPOINTS 32

/* One endpoint: an address to connect to, with its own health, in-flight
 * count and (per worker) keep-alive pool. An IP literal is one endpoint;
 * a DNS name owns PX_MAX_ENDPOINTS slots, filled from its answers
 * (endpoints.c). A slot keeps its address, and with it its health, across
 * re-resolutions that return that address again; an address that
 * disappears leaves its slot |live| = 0 (no new requests; pooled
 * connections are closed when they are next released or time out). A slot
 * is reused for another address only when every free one is spent; |seq|
 * then changes, so connections to the old address are never pooled. */
typedef struct {
  const conf_addr_t *conf;  /* the configured address it came from */
  px_group_t *group;
  px_target_t *target;
  /* Written only under target->sa_lock (a name's slots), read under it. */
  struct sockaddr_storage sa;
  socklen_t sa_len;
  char text[INET6_ADDRSTRLEN + 8]; /* "ip:port", "[v6]:port" */
  atomic_int live;                    /* in the current answer */
  atomic_uint seq;                    /* bumped when the slot changes address */
  atomic_uint_fast64_t down_until_ms; /* passive health: skipped until then */
  atomic_int unhealthy;               /* active health check result */
  atomic_int active;                  /* requests in flight, all workers */
  size_t index;                       /* into gen->addrs and worker pools */
  atomic_uint stat_slot;              /* px_metrics_upstream_slot, 0 until known */
  /* The last failure counted against it (px_upstream_mark_failed, or the
   * active check), for the admin API: when (wall clock, ms; 0: none) and
   * why. Under target->sa_lock. */
  uint64_t last_fail_ms;
  char last_fail[128];
} px_addr_t;

/* One configured upstream address ("backend:8080"), and the endpoints it
 * resolves to: |eps[0..num_eps)| (1 for an IP literal), of which the first
 * |num_used| have held an address. A DNS name is resolved again in the
 * background (px_addr_refresh). */
struct px_target {
  const conf_addr_t *conf;
  SSL_CTX *tls_ctx; /* "https://" upstreams (uptls.c); NULL for plain ones */
  px_group_t *group;
  int is_name;
  pthread_mutex_t sa_lock;
  px_addr_t *eps;
  size_t num_eps;
  atomic_size_t num_used;
  atomic_uint_fast64_t resolved_ms; /* last successful resolution */
  atomic_uint_fast64_t tried_ms;    /* last attempt */
  atomic_int resolving;             /* a lookup is in flight */
  atomic_uint answers;              /* bumped by each resolution that changed the set */
};

struct px_group {
  const conf_upstream_group_t *conf;
  px_target_t **targets;
  size_t num_targets;
  int any_name; /* some target is a DNS name */
  int h2;       /* its upstreams speak HTTP/2 ("h2" or "h2c"; all or none, conf checks) */
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
  const px_ccert_site_t *client_auth; /* owned by the gen's SSL_CTX; NULL: none */
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
  px_target_t *targets; /* every configured upstream address of every group */
  size_t num_targets;
  px_addr_t *addrs; /* every endpoint slot of every target */
  size_t num_addrs;
  char *https_port_suffix; /* ":8443" for redirects, "" for 443 */
  acme_challenges_t *challenges; /* the server's; outlives every generation */
  /* Every site's client_auth field names (defaults too, for sites
   * without it), each once: removed from every client request, so that
   * no client can send what only a verified certificate may say. Views
   * of the strings in |conf|. */
  gh_str_t *ccert_fields;
  size_t num_ccert_fields;
} px_gen_t;

px_gen_t *px_gen_new(char **out_err, conf_t *conf, acme_challenges_t *challenges);
px_gen_t *px_gen_ref(px_gen_t *gen);
void px_gen_unref(px_gen_t *gen);
/* px_gen_site finds the site for a Host header value (port stripped,
 * any case): exact, wildcard, "*", then default. NULL if none. */
px_site_t *px_gen_site(px_gen_t *gen, const char *host, size_t host_len);
/* px_gen_ccert_field reports whether a request field named |name| (any
 * case) is one of the client_auth fields, which no client may send. */
int px_gen_ccert_field(const px_gen_t *gen, gh_str_t name);
px_group_t *px_site_route(px_site_t *site, const char *path, size_t path_len);

#endif
