/* gen.c: a configuration generation: the config, its SSL_CTX, and the
 * routing and upstream state built from it, shared read-mostly by every
 * worker and reference-counted so a reload can replace it while requests
 * started under the old one finish. */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/log.h"
#include "common/common.h"
#include "proxy/gen.h"
#include "proxy/tls.h"
#include "proxy/upstream.h"

/* resolve fills the endpoints of |t| from its configured host and port.
 * An IP literal is one fixed endpoint; a DNS name expands to every
 * address it resolves to (up to PX_MAX_ENDPOINTS). A name that does not
 * resolve yet is not an error: a backend container may start after the
 * proxy, and px_addr_refresh looks it up again when a request needs it. */
static void resolve(px_target_t *t) {
  const char *host = t->conf->host[0] ? t->conf->host : "127.0.0.1";
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (t->is_name ? 0 : AI_NUMERICHOST);
  char port[8];
  snprintf(port, sizeof(port), "%u", t->conf->port);
  uint64_t now = gh_now_ms();
  atomic_init(&t->tried_ms, now);
  atomic_init(&t->resolved_ms, 0);
  atomic_init(&t->resolving, 0);
  int rc = getaddrinfo(host, port, &hints, &res);
  if (rc != 0 || res == NULL || px_target_from_addrinfo(t, res, 1) == 0) {
    GH_WARN("proxy", "upstream %s: cannot resolve: %s; trying again when a request needs it",
            t->conf->text, rc ? gai_strerror(rc) : "no address");
  } else {
    atomic_store(&t->resolved_ms, now);
  }
  if (res) freeaddrinfo(res);
}

static int prefix_cmp(const void *x, const void *y) {
  const px_route_t *a = x, *b = y;
  return (a->prefix_len < b->prefix_len) - (a->prefix_len > b->prefix_len);
}

/* is_name: |a| names a host rather than an IP literal. */
static int is_name(const conf_addr_t *a) {
  const char *host = a->host[0] ? a->host : "127.0.0.1";
  struct in6_addr ip;
  return inet_pton(AF_INET, host, &ip) != 1 && inet_pton(AF_INET6, host, &ip) != 1;
}

static size_t group_slots(const conf_upstream_group_t *g) {
  size_t n = 0;
  for (size_t k = 0; k < g->num_addrs; k++) n += is_name(&g->addrs[k]) ? PX_MAX_ENDPOINTS : 1;
  return n;
}

static size_t count_groups(const conf_t *conf, size_t *out_targets, size_t *out_slots) {
  size_t groups = 0, targets = 0, slots = 0;
  for (size_t i = 0; i < conf->num_sites; i++) {
    groups++;
    targets += conf->sites[i].group.num_addrs;
    slots += group_slots(&conf->sites[i].group);
    for (size_t j = 0; j < conf->sites[i].num_routes; j++) {
      groups++;
      targets += conf->sites[i].routes[j].group.num_addrs;
      slots += group_slots(&conf->sites[i].routes[j].group);
    }
  }
  *out_targets = targets;
  *out_slots = slots;
  return groups;
}

static px_group_t *build_group(px_gen_t *gen, size_t *gi, size_t *ti, size_t *ai,
                               const conf_upstream_group_t *cg, char **out_err) {
  px_group_t *g = &gen->groups[(*gi)++];
  g->conf = cg;
  g->num_targets = cg->num_addrs;
  g->targets = gh_calloc(cg->num_addrs, sizeof(px_target_t *));
  atomic_init(&g->rr, 0);
  for (size_t k = 0; k < cg->num_addrs; k++) {
    px_target_t *t = &gen->targets[(*ti)++];
    t->conf = &cg->addrs[k];
    t->group = g;
    t->is_name = is_name(t->conf);
    g->any_name |= t->is_name;
    g->h2 = t->conf->protocol != CONF_UP_HTTP1;
    pthread_mutex_init(&t->sa_lock, NULL);
    t->num_eps = t->is_name ? PX_MAX_ENDPOINTS : 1;
    t->eps = &gen->addrs[*ai];
    atomic_init(&t->num_used, 0);
    atomic_init(&t->answers, 0);
    for (size_t e = 0; e < t->num_eps; e++) {
      px_addr_t *a = &gen->addrs[*ai];
      a->index = (*ai)++;
      a->conf = t->conf;
      a->group = g;
      a->target = t;
      atomic_init(&a->live, 0);
      atomic_init(&a->seq, 0);
      atomic_init(&a->down_until_ms, 0);
      atomic_init(&a->unhealthy, 0);
      atomic_init(&a->active, 0);
      atomic_init(&a->stat_slot, 0);
    }
    resolve(t);
    g->targets[k] = t;
    if (t->conf->tls && (t->tls_ctx = px_uptls_ctx_new(out_err, t->conf)) == NULL) return NULL;
  }
  return g;
}

px_gen_t *px_gen_new(char **out_err, conf_t *conf, acme_challenges_t *challenges) {
  SSL_CTX *ctx = px_tls_ctx_new(out_err, conf);
  if (ctx == NULL) return NULL;
  px_tls_ctx_set_challenges(ctx, challenges);
  px_gen_t *gen = gh_calloc(1, sizeof(*gen));
  atomic_init(&gen->refs, 1);
  gen->conf = conf;
  gen->ssl_ctx = ctx;
  gen->challenges = challenges;
  gen->num_groups = count_groups(conf, &gen->num_targets, &gen->num_addrs);
  gen->groups = gh_calloc(gen->num_groups, sizeof(px_group_t));
  gen->targets = gh_calloc(gen->num_targets, sizeof(px_target_t));
  gen->addrs = gh_calloc(gen->num_addrs, sizeof(px_addr_t));
  gen->num_sites = conf->num_sites;
  gen->sites = gh_calloc(conf->num_sites, sizeof(px_site_t));
  size_t gi = 0, ti = 0, ai = 0;
  for (size_t i = 0; i < conf->num_sites; i++) {
    const conf_site_t *cs = &conf->sites[i];
    px_site_t *s = &gen->sites[i];
    s->conf = cs;
    if ((s->group = build_group(gen, &gi, &ti, &ai, &cs->group, out_err)) == NULL) goto fail;
    s->num_routes = cs->num_routes;
    s->routes = gh_calloc(cs->num_routes, sizeof(px_route_t));
    for (size_t j = 0; j < cs->num_routes; j++) {
      s->routes[j].prefix = cs->routes[j].path_prefix;
      s->routes[j].prefix_len = strlen(cs->routes[j].path_prefix);
      if ((s->routes[j].group = build_group(gen, &gi, &ti, &ai, &cs->routes[j].group, out_err)) == NULL)
        goto fail;
    }
    qsort(s->routes, s->num_routes, sizeof(px_route_t), prefix_cmp);
    if (cs->hsts_max_age_s) {
      s->hsts_header = gh_asprintf("Strict-Transport-Security: max-age=%llu%s%s\r\n",
                                   (unsigned long long)cs->hsts_max_age_s,
                                   cs->hsts_include_subdomains ? "; includeSubDomains" : "",
                                   cs->hsts_preload ? "; preload" : "");
      static const char name[] = "Strict-Transport-Security: ";
      s->hsts_value = (gh_str_t){s->hsts_header + sizeof(name) - 1,
                                 strlen(s->hsts_header) - (sizeof(name) - 1) - 2};
    }
    if (cs->is_default) gen->default_site = s;
    s->client_auth = px_tls_ctx_client_auth(ctx, i);
  }
  gen->ccert_fields = gh_calloc(2 * conf->num_sites, sizeof(gh_str_t));
  for (size_t i = 0; i < conf->num_sites; i++) {
    const char *names[2] = {conf->sites[i].client_auth.subject_header,
                            conf->sites[i].client_auth.fingerprint_header};
    for (size_t k = 0; k < 2; k++) {
      gh_str_t name = {names[k], names[k] ? strlen(names[k]) : 0};
      if (name.len && !px_gen_ccert_field(gen, name)) gen->ccert_fields[gen->num_ccert_fields++] = name;
    }
  }
  uint16_t port = conf->num_https ? conf->https[0].port : 443;
  gen->https_port_suffix = port == 443 ? gh_strdup("") : gh_asprintf(":%u", port);
  return gen;
fail:
  gen->conf = NULL; /* the caller keeps |conf| when this fails */
  px_gen_unref(gen);
  return NULL;
}

px_gen_t *px_gen_ref(px_gen_t *gen) {
  atomic_fetch_add(&gen->refs, 1);
  return gen;
}

void px_gen_unref(px_gen_t *gen) {
  if (gen == NULL || atomic_fetch_sub(&gen->refs, 1) != 1) return;
  for (size_t i = 0; i < gen->num_sites; i++) {
    gh_free(gen->sites[i].routes);
    gh_free(gen->sites[i].hsts_header);
  }
  for (size_t i = 0; i < gen->num_groups; i++) gh_free(gen->groups[i].targets);
  for (size_t i = 0; i < gen->num_targets; i++) {
    if (gen->targets[i].conf != NULL) pthread_mutex_destroy(&gen->targets[i].sa_lock);
    SSL_CTX_free(gen->targets[i].tls_ctx);
  }
  gh_free(gen->targets);
  gh_free(gen->sites);
  gh_free(gen->groups);
  gh_free(gen->addrs);
  gh_free(gen->https_port_suffix);
  gh_free(gen->ccert_fields);
  SSL_CTX_free(gen->ssl_ctx);
  conf_free(gen->conf);
  gh_free(gen);
}

px_site_t *px_gen_site(px_gen_t *gen, const char *host, size_t host_len) {
  char name[256];
  /* Strip the port; "[v6]:port" keeps its brackets out too. */
  if (host_len && host[0] == '[') {
    const char *end = memchr(host, ']', host_len);
    host_len = end ? (size_t)(end - host) + 1 : host_len;
  } else if (host_len) { /* an HTTP/1.0 request without Host has host NULL */
    const char *colon = memchr(host, ':', host_len);
    if (colon) host_len = (size_t)(colon - host);
  }
  if (host_len && host[host_len - 1] == '.') host_len--; /* absolute form */
  if (host_len == 0 || host_len >= sizeof(name)) return gen->default_site;
  for (size_t i = 0; i < host_len; i++) {
    char ch = host[i];
    name[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
  }
  name[host_len] = '\0';
  size_t i = conf_site_find(gen->conf->sites, gen->conf->num_sites, name, host_len);
  return i == SIZE_MAX ? NULL : &gen->sites[i];
}

int px_gen_ccert_field(const px_gen_t *gen, gh_str_t name) {
  for (size_t i = 0; i < gen->num_ccert_fields; i++) {
    if (gh_str_ieq(gen->ccert_fields[i], name)) return 1;
  }
  return 0;
}

px_group_t *px_site_route(px_site_t *site, const char *path, size_t path_len) {
  for (size_t i = 0; i < site->num_routes; i++) {
    const px_route_t *r = &site->routes[i];
    if (path_len >= r->prefix_len && memcmp(path, r->prefix, r->prefix_len) == 0) return r->group;
  }
  return site->group;
}
