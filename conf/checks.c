/* checks.c: rules that span keys, run by the walk once an object's keys
 * are parsed (the tables in schema.c name them). Each check is careful not
 * to repeat a problem that a key's own check already reported: where a key
 * was given but is invalid, its field is empty, so the rules look at
 * whether the key is present in the JSON rather than at the field. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#include "common/common.h"
#include "conf/conf.h"
#include "conf/internal.h"

static int has_key(const cJSON *obj, const char *key) {
  return cJSON_GetObjectItemCaseSensitive(obj, key) != NULL;
}

void conf__check_health(conf__ctx_t *ctx, const cJSON *obj, char *base) {
  const conf_health_t *h = (const conf_health_t *)(const void *)base;
  if (obj == NULL || h->interval_ms == 0 || h->timeout_ms == 0) return;
  if (h->timeout_ms >= h->interval_ms) {
    char interval[32], timeout[32];
    conf__format_duration(interval, sizeof(interval), h->interval_ms);
    conf__format_duration(timeout, sizeof(timeout), h->timeout_ms);
    size_t mark = conf__path_key(ctx, "timeout");
    conf__error(ctx, "expected less than \"interval\" (%s), got \"%s\"", interval, timeout);
    conf__path_pop(ctx, mark);
  }
}

/* check_protocols: one group's upstreams speak one HTTP version, because
 * the request body is framed for it before an upstream is picked. */
static void check_protocols(conf__ctx_t *ctx, const conf_upstream_group_t *g) {
  for (size_t i = 1; i < g->num_addrs; i++) {
    if ((g->addrs[i].protocol == CONF_UP_HTTP1) == (g->addrs[0].protocol == CONF_UP_HTTP1)) continue;
    size_t mark = conf__path_key(ctx, "upstreams");
    conf__path_index(ctx, i);
    conf__error(ctx, "speaks HTTP/%s but upstreams[0] speaks HTTP/%s: the upstreams of one site or "
                     "route use one HTTP version (put the others in a route)",
                g->addrs[i].protocol == CONF_UP_HTTP1 ? "1.1" : "2",
                g->addrs[0].protocol == CONF_UP_HTTP1 ? "1.1" : "2");
    conf__path_pop(ctx, mark);
    return;
  }
}

/* check_profile: an ACME profile name is a short token, as CAs name them
 * ("classic", "tlsserver", "shortlived"). */
static void check_profile(conf__ctx_t *ctx, const char *key, const char *name) {
  if (name == NULL) return;
  size_t n = strlen(name);
  if (n >= 1 && n <= 64 && strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789._-") == n)
    return;
  size_t mark = conf__path_key(ctx, key);
  conf__error(ctx, "expected a profile name the CA offers (1-64 letters, digits, '.', '_' or "
                   "'-'), such as \"shortlived\"");
  conf__path_pop(ctx, mark);
}

void conf__check_site(conf__ctx_t *ctx, const cJSON *obj, char *base) {
  const conf_site_t *site = (const conf_site_t *)(const void *)base;
  if (obj == NULL) return;
  check_profile(ctx, "acme_profile", site->acme_profile);
  if (site->acme_profile != NULL && site->cert_file != NULL) {
    size_t mark = conf__path_key(ctx, "acme_profile");
    conf__error(ctx, "applies to sites whose certificate ACME obtains, and this one has \"tls\" "
                     "files");
    conf__path_pop(ctx, mark);
  }
  check_protocols(ctx, &site->group);
  for (size_t j = 0; j < site->num_routes; j++) {
    size_t mark = conf__path_key(ctx, "routes");
    conf__path_index(ctx, j);
    check_protocols(ctx, &site->routes[j].group);
    conf__path_pop(ctx, mark);
  }
  /* Requests that match no route go to the site's upstreams: without them
   * a route must catch everything. */
  const cJSON *routes = cJSON_GetObjectItemCaseSensitive(obj, "routes");
  if (!has_key(obj, "upstreams") && (routes == NULL || cJSON_IsArray(routes))) {
    int catch_all = 0;
    for (const cJSON *r = routes ? routes->child : NULL; r != NULL; r = r->next) {
      const cJSON *p = cJSON_GetObjectItemCaseSensitive(r, "path");
      catch_all |= cJSON_IsString(p) && strcmp(p->valuestring, "/") == 0;
    }
    if (!catch_all) {
      conf__error(ctx, "missing required key \"upstreams\" (needed unless a route has path \"/\")");
    }
  }
  for (size_t j = 0; j < site->num_routes; j++) {
    for (size_t i = 0; i < j; i++) {
      const char *a = site->routes[i].path_prefix, *b = site->routes[j].path_prefix;
      if (a == NULL || b == NULL || strcmp(a, b) != 0) continue;
      size_t mark = conf__path_key(ctx, "routes");
      conf__path_index(ctx, j);
      conf__path_key(ctx, "path");
      char *q = conf__quote(b);
      conf__error(ctx, "%s is also the path of routes[%zu]", q, i);
      gh_free(q);
      conf__path_pop(ctx, mark);
      break;
    }
  }
}

/* The two field names of client_auth must differ: one would overwrite
 * the other upstream. */
void conf__check_client_auth(conf__ctx_t *ctx, const cJSON *obj, char *base) {
  const conf_client_auth_t *ca = (const conf_client_auth_t *)(const void *)base;
  if (obj == NULL || ca->subject_header == NULL || ca->fingerprint_header == NULL) return;
  if (strcasecmp(ca->subject_header, ca->fingerprint_header) != 0) return;
  size_t mark = conf__path_key(ctx, "fingerprint_header");
  char *q = conf__quote(ca->fingerprint_header);
  conf__error(ctx, "%s is also \"subject_header\"; the two fields need different names", q);
  gh_free(q);
  conf__path_pop(ctx, mark);
}

void conf__check_issuer(conf__ctx_t *ctx, const cJSON *obj, char *base) {
  const conf_issuer_t *is = (const conf_issuer_t *)(const void *)base;
  if (obj == NULL) return;
  check_profile(ctx, "profile", is->profile);
  if (is->name != NULL && (strlen(is->name) > 64 || is->name[0] == '\0' ||
                           strspn(is->name, "abcdefghijklmnopqrstuvwxyz0123456789._-") !=
                               strlen(is->name))) {
    size_t mark = conf__path_key(ctx, "name");
    conf__error(ctx, "expected a short name for the CA (1-64 of a-z, 0-9, '.', '_', '-'), such "
                     "as \"letsencrypt\"");
    conf__path_pop(ctx, mark);
  }
}

/* check_issuers: "directory" is one CA, "issuers" several in order; one
 * of the two, and no CA twice. */
static void check_issuers(conf__ctx_t *ctx, const cJSON *obj, const conf_acme_t *acme) {
  int dir = has_key(obj, "directory"), list = has_key(obj, "issuers");
  if (!dir && !list) {
    conf__error(ctx, "missing \"directory\" (the CA's ACME directory URL) or \"issuers\" (CAs "
                     "in order of preference)");
    return;
  }
  if (!list) return;
  if (dir) conf__error(ctx, "give either \"directory\" (one CA) or \"issuers\" (CAs in order), "
                            "not both");
  if (has_key(obj, "eab"))
    conf__error(ctx, "\"eab\" belongs to the entry of \"issuers\" whose CA issued it");
  for (size_t i = 0; i < acme->num_issuers; i++) {
    const conf_issuer_t *a = &acme->issuers[i];
    for (size_t j = 0; j < i; j++) {
      const conf_issuer_t *b = &acme->issuers[j];
      const char *key = NULL;
      if (a->directory && b->directory && strcmp(a->directory, b->directory) == 0) key = "directory";
      else if (a->name && b->name && strcmp(a->name, b->name) == 0) key = "name";
      if (key == NULL) continue;
      char *path = gh_asprintf("acme.issuers[%zu].%s", i, key);
      conf__error_at(ctx, path, "is also that of acme.issuers[%zu]", j);
      gh_free(path);
      break;
    }
  }
}

void conf__check_acme(conf__ctx_t *ctx, const cJSON *obj, char *base) {
  const conf_acme_t *acme = (const conf_acme_t *)(const void *)base;
  if (obj != NULL) {
    check_profile(ctx, "profile", acme->profile);
    check_issuers(ctx, obj, acme);
  }
  if (obj == NULL) return;
  int hook = has_key(obj, "dns_hook"), rfc2136 = acme->dns_rfc2136.enabled;
  if (hook && rfc2136) {
    conf__error(ctx, "both \"dns_hook\" and \"dns.rfc2136\" publish dns-01 TXT records; give "
                     "one of them");
    return;
  }
  if (hook || rfc2136) return;
  for (size_t i = 0; i < acme->num_challenges; i++) {
    if (acme->challenges[i] == CONF_CHALLENGE_DNS_01) {
      conf__error(ctx, "missing \"dns_hook\" or \"dns.rfc2136\", one of which \"dns-01\" in "
                       "\"challenges\" needs to publish its TXT records");
      return;
    }
  }
}

/* acme.dns.rfc2136: the server is an IP address with an optional port
 * (53), the zone and key name are DNS names (which names the zone covers
 * is only known per order). */
void conf__check_rfc2136(conf__ctx_t *ctx, const cJSON *obj, char *base) {
  conf_rfc2136_t *r = (conf_rfc2136_t *)(void *)base;
  if (obj == NULL || r->server == NULL || r->zone == NULL || r->key_name == NULL) return;
  conf_addr_t a;
  const unsigned flags = CONF__ADDR_IP_ONLY | CONF__ADDR_NEED_HOST;
  const char *why = conf__addr_parse(&a, r->server, flags);
  if (why != NULL && strcmp(why, "missing port") == 0) {
    conf_addr_cleanup(&a);
    int v6 = strchr(r->server, ':') != NULL && r->server[0] != '[';
    char *with_port = gh_asprintf(v6 ? "[%s]:53" : "%s:53", r->server);
    why = conf__addr_parse(&a, with_port, flags);
    gh_free(with_port);
  }
  if (why == NULL && strlen(a.host) >= sizeof(r->host)) why = "not an IP address";
  if (why != NULL) {
    size_t mark = conf__path_key(ctx, "server");
    char *q = conf__quote(r->server);
    conf__error(ctx, "expected an address \"IP\", \"IP:port\" or \"[IPv6]:port\", got %s (%s)", q,
                why);
    gh_free(q);
    conf__path_pop(ctx, mark);
  } else {
    snprintf(r->host, sizeof(r->host), "%s", a.host);
    r->port = a.port;
  }
  conf_addr_cleanup(&a);
  const char *const keys[] = {"zone", "key_name"};
  const char *const vals[] = {r->zone, r->key_name};
  for (size_t i = 0; i < 2; i++) {
    size_t len = strlen(vals[i]);
    char *name = gh_strdup(vals[i]);
    if (len > 1 && name[len - 1] == '.') name[len - 1] = '\0'; /* a root dot is fine */
    for (char *p = name; *p; p++) *p = (char)tolower((unsigned char)*p);
    why = conf__host_check(name, CONF__NO_WILDCARD);
    gh_free(name);
    if (why == NULL) continue;
    size_t mark = conf__path_key(ctx, keys[i]);
    char *q = conf__quote(vals[i]);
    conf__error(ctx, "expected a DNS name, got %s (%s)", q, why);
    gh_free(q);
    conf__path_pop(ctx, mark);
  }
}

/* The per-domain and per-client-IP limits apply by default only without
 * "ask": with it, the application decides who gets a certificate (as in
 * Caddy), and a per-IP bucket would be a per-fleet bucket behind an L4
 * balancer. Their values when they apply: Let's Encrypt's 50 certificates
 * per registered domain per week, and 20 an hour from one client. The
 * global default (300/3h, Let's Encrypt's new orders per account) is in
 * the schema. Either is still settable, "0" meaning unlimited. */
#define RATE_PER_DOMAIN_DEFAULT ((conf_rate_t){50, 168ull * 3600 * 1000})
#define RATE_PER_CLIENT_IP_DEFAULT ((conf_rate_t){20, 3600ull * 1000})

void conf__check_on_demand(conf__ctx_t *ctx, const cJSON *obj, char *base) {
  conf_on_demand_t *od = (conf_on_demand_t *)(void *)base;
  if (obj == NULL) return;
  const cJSON *rates = cJSON_GetObjectItemCaseSensitive(obj, "rate_limits");
  if (!has_key(obj, "ask")) {
    if (!has_key(rates, "per_domain")) od->rate_per_domain = RATE_PER_DOMAIN_DEFAULT;
    if (!has_key(rates, "per_client_ip")) od->rate_per_client_ip = RATE_PER_CLIENT_IP_DEFAULT;
  }
  if (has_key(obj, "ask") || has_key(obj, "allow") || od->num_allow > 0) return;
  conf__error(ctx, "needs \"allow\" or \"ask\": without either, any name could get a certificate");
}

/* A TCP admin address needs a token, loopback included (issue 13): any
 * local process, or a backend that can be made to send requests (SSRF),
 * could otherwise reload the server or revoke its certificates. A unix
 * socket is guarded by its file's permissions (0600) instead; a token, if
 * set, is checked there too. "insecure_no_token" lifts the rule for
 * loopback only: a wildcard or public address without a token is never
 * accepted. */
void conf__check_admin(conf__ctx_t *ctx, const cJSON *obj, char *base) {
  const conf_t *conf = (const conf_t *)(const void *)base;
  if (obj == NULL || conf->admin == NULL) return;
  int has_token = has_key(obj, "token");
  if (has_token && conf->admin_insecure_no_token) {
    conf__error(ctx, "\"insecure_no_token\" is true but a \"token\" is set: remove one of them");
    return;
  }
  if (has_token || conf->admin->unix_path != NULL) return;
  char *q = conf__quote(conf->admin->text);
  if (!conf__is_loopback(conf->admin->host)) {
    conf__error(ctx, "missing \"token\", which \"listen\" %s needs (it is not a loopback "
                     "address): set \"token\", or listen on a unix socket such as "
                     "\"unix:/run/gatehouse/admin.sock\"", q);
  } else if (!conf->admin_insecure_no_token) {
    conf__error(ctx, "missing \"token\", which a TCP \"listen\" address needs, loopback too "
                     "(got %s; any local process or a backend open to SSRF could reload the "
                     "server or revoke certificates): set \"token\", listen on a unix socket "
                     "such as \"unix:/run/gatehouse/admin.sock\" (file permissions guard it), "
                     "or set \"insecure_no_token\": true to accept the risk", q);
  }
  gh_free(q);
}

void conf__check_listen(conf__ctx_t *ctx, const cJSON *obj, char *base) {
  const conf_t *conf = (const conf_t *)(const void *)base;
  if (obj == NULL || conf->num_https + conf->num_http > 0) return;
  const cJSON *https = cJSON_GetObjectItemCaseSensitive(obj, "https");
  const cJSON *http = cJSON_GetObjectItemCaseSensitive(obj, "http");
  if ((https != NULL && !cJSON_IsArray(https)) || (http != NULL && !cJSON_IsArray(http))) {
    return; /* already reported as the wrong type */
  }
  conf__error(ctx, "expected at least one address in \"https\" or \"http\", got none");
}

/* conf__check_listener: a listener that takes a PROXY header must say
 * from whom, or anyone could claim any client address. */
void conf__check_listener(conf__ctx_t *ctx, const cJSON *obj, char *base) {
  (void)obj;
  const conf_addr_t *addr = (const conf_addr_t *)(const void *)base;
  if (addr->proxy_protocol && addr->num_proxy_trusted == 0) {
    size_t mark = conf__path_key(ctx, "proxy_trusted");
    conf__error(ctx, "required when proxy_protocol is on: the address blocks of the load "
                     "balancers that may send the PROXY header, e.g. [\"10.0.0.0/8\"]");
    conf__path_pop(ctx, mark);
  }
}

/* conf__check_upstream: the TLS options need an "https://" upstream (a
 * plain one would silently ignore them), HTTP/2 over TLS needs TLS and
 * h2c must not have it, a client certificate needs its key, and a
 * server_name must be a name or address that could be verified. */
void conf__check_upstream(conf__ctx_t *ctx, const cJSON *obj, char *base) {
  const conf_addr_t *a = (const conf_addr_t *)(const void *)base;
  if (obj == NULL || a->text == NULL) return;
  static const char *const tls_keys[] = {"ca", "server_name", "client_cert", "client_key",
                                         "insecure_skip_verify"};
  for (size_t i = 0; i < GH_ARRAY_LEN(tls_keys) && !a->tls; i++) {
    if (!has_key(obj, tls_keys[i])) continue;
    size_t mark = conf__path_key(ctx, tls_keys[i]);
    conf__error(ctx, "applies to TLS upstreams only: write the address as \"https://%s:%u\"",
                a->host, a->port);
    conf__path_pop(ctx, mark);
  }
  if (a->protocol == CONF_UP_H2 && !a->tls) {
    size_t mark = conf__path_key(ctx, "protocol");
    conf__error(ctx, "\"h2\" is HTTP/2 over TLS: write the address as \"https://%s:%u\", or use "
                     "\"h2c\" for cleartext HTTP/2", a->host, a->port);
    conf__path_pop(ctx, mark);
  }
  if (a->protocol == CONF_UP_H2C && a->tls) {
    size_t mark = conf__path_key(ctx, "protocol");
    conf__error(ctx, "\"h2c\" is cleartext HTTP/2, but the address is https://; use \"h2\"");
    conf__path_pop(ctx, mark);
  }
  if (a->send_proxy && a->protocol != CONF_UP_HTTP1) {
    size_t mark = conf__path_key(ctx, "send_proxy_protocol");
    conf__error(ctx, "needs \"protocol\": \"http/1.1\": an HTTP/2 connection carries the "
                     "requests of many clients, and a PROXY header names one");
    conf__path_pop(ctx, mark);
  }
  if ((a->tls_cert == NULL) != (a->tls_key == NULL) && a->tls) {
    size_t mark = conf__path_key(ctx, a->tls_cert ? "client_key" : "client_cert");
    conf__error(ctx, "required with \"%s\"", a->tls_cert ? "client_cert" : "client_key");
    conf__path_pop(ctx, mark);
  }
  if (a->server_name != NULL) {
    struct in6_addr ip;
    int is_ip = inet_pton(AF_INET, a->server_name, &ip) == 1 ||
                inet_pton(AF_INET6, a->server_name, &ip) == 1;
    const char *why = is_ip ? NULL : conf__host_check(a->server_name, CONF__NO_WILDCARD);
    if (why != NULL) {
      size_t mark = conf__path_key(ctx, "server_name");
      char *q = conf__quote(a->server_name);
      conf__error(ctx, "expected a host name or IP address, got %s: %s", q, why);
      gh_free(q);
      conf__path_pop(ctx, mark);
    }
  }
}

/* conf__check_etcd: a prefix that keys can be put under, a client
 * certificate with its key, a user with a password, and TLS options only
 * for https:// endpoints (they would silently not apply). */
void conf__check_etcd(conf__ctx_t *ctx, const cJSON *obj, char *base) {
  const conf_etcd_t *e = (const conf_etcd_t *)(const void *)base;
  if (obj == NULL) return;
  const char *p = e->prefix;
  if (p != NULL && (p[0] != '/' || p[strlen(p) - 1] != '/' || strlen(p) < 2)) {
    size_t mark = conf__path_key(ctx, "prefix");
    conf__error(ctx, "expected a key prefix that begins and ends with \"/\", such as "
                     "\"/gatehouse/prod/\"");
    conf__path_pop(ctx, mark);
  }
  if ((e->cert == NULL) != (e->key == NULL)) {
    size_t mark = conf__path_key(ctx, e->cert ? "key" : "cert");
    conf__error(ctx, "required with \"%s\"", e->cert ? "cert" : "key");
    conf__path_pop(ctx, mark);
  }
  if ((e->username == NULL) != (e->password == NULL)) {
    size_t mark = conf__path_key(ctx, e->username ? "password" : "username");
    conf__error(ctx, "required with \"%s\"", e->username ? "username" : "password");
    conf__path_pop(ctx, mark);
  }
  int any_tls = 0;
  for (size_t i = 0; i < e->num_endpoints; i++) any_tls |= e->endpoints[i].tls;
  if (!any_tls && (e->ca || e->cert)) {
    size_t mark = conf__path_key(ctx, e->ca ? "ca" : "cert");
    conf__error(ctx, "applies to https:// endpoints only, and every endpoint is http://");
    conf__path_pop(ctx, mark);
  }
}

/* --- across the whole document --- */

typedef struct {
  const conf_addr_t *addr;
  char *path;
} listener_t;

/* check_ports reports listeners that would compete for one port: the same
 * address twice, or a wildcard and any address on the same port. */
static void check_ports(conf__ctx_t *ctx, const conf_t *conf) {
  size_t n = conf->num_https + conf->num_http + (conf->admin != NULL), k = 0;
  listener_t *ls = gh_calloc(n, sizeof(*ls));
  for (size_t i = 0; i < conf->num_https; i++, k++) {
    ls[k] = (listener_t){&conf->https[i], gh_asprintf("listen.https[%zu]", i)};
  }
  for (size_t i = 0; i < conf->num_http; i++, k++) {
    ls[k] = (listener_t){&conf->http[i], gh_asprintf("listen.http[%zu]", i)};
  }
  if (conf->admin != NULL) ls[k++] = (listener_t){conf->admin, gh_strdup("admin.listen")};
  for (size_t j = 0; j < n; j++) {
    const conf_addr_t *b = ls[j].addr;
    for (size_t i = 0; i < j && b->text != NULL; i++) {
      const conf_addr_t *a = ls[i].addr;
      if (a->text == NULL || a->port != b->port || b->unix_path != NULL) continue;
      if (strcmp(a->host, b->host) != 0 && a->host[0] != '\0' && b->host[0] != '\0') continue;
      char *qa = conf__quote(a->text), *qb = conf__quote(b->text);
      conf__error_at(ctx, ls[j].path, "%s uses the same port as %s (%s)", qb, ls[i].path, qa);
      gh_free(qa);
      gh_free(qb);
      break;
    }
  }
  for (size_t i = 0; i < n; i++) gh_free(ls[i].path);
  gh_free(ls);
}

typedef struct {
  const char *host;
  size_t site, idx;
  size_t first_site, first_idx; /* for duplicates: where the name appeared first */
} host_ref_t;

static int by_host(const void *a, const void *b) {
  const host_ref_t *x = a, *y = b;
  int c = strcmp(x->host, y->host);
  if (c != 0) return c;
  if (x->site != y->site) return x->site < y->site ? -1 : 1;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int by_place(const void *a, const void *b) {
  const host_ref_t *x = a, *y = b;
  if (x->site != y->site) return x->site < y->site ? -1 : 1;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* check_duplicate_hosts reports every name listed more than once, within
 * a site or across sites, in file order. Sorting keeps large name lists
 * cheap. */
static void check_duplicate_hosts(conf__ctx_t *ctx, const conf_t *conf) {
  size_t n = 0;
  for (size_t s = 0; s < conf->num_sites; s++) n += conf->sites[s].num_hosts;
  host_ref_t *refs = gh_calloc(n, sizeof(*refs));
  size_t k = 0;
  for (size_t s = 0; s < conf->num_sites; s++) {
    for (size_t h = 0; h < conf->sites[s].num_hosts; h++) {
      if (conf->sites[s].hosts[h] != NULL) refs[k++] = (host_ref_t){conf->sites[s].hosts[h], s, h, 0, 0};
    }
  }
  qsort(refs, k, sizeof(*refs), by_host);
  size_t num_dups = 0;
  for (size_t i = 0, first = 0; i < k; i++) {
    if (i == 0 || strcmp(refs[i].host, refs[first].host) != 0) {
      first = i;
      continue;
    }
    host_ref_t dup = refs[i];
    dup.first_site = refs[first].site;
    dup.first_idx = refs[first].idx;
    refs[num_dups++] = dup; /* num_dups <= i: never overwrites what is still to be read */
  }
  qsort(refs, num_dups, sizeof(*refs), by_place);
  for (size_t i = 0; i < num_dups; i++) {
    char *path = gh_asprintf("sites[%zu].hosts[%zu]", refs[i].site, refs[i].idx);
    char *q = conf__quote(refs[i].host);
    conf__error_at(ctx, path, "%s is already in sites[%zu].hosts[%zu]", q, refs[i].first_site,
                   refs[i].first_idx);
    gh_free(q);
    gh_free(path);
  }
  gh_free(refs);
}

/* check_certificates reports sites whose names no certificate can cover. */
static void check_certificates(conf__ctx_t *ctx, const conf_t *conf, const cJSON *sites,
                               int acme_on) {
  int dns01 = 0;
  for (size_t i = 0; i < conf->acme.num_challenges; i++) {
    dns01 |= conf->acme.challenges[i] == CONF_CHALLENGE_DNS_01;
  }
  size_t s = 0;
  for (const cJSON *so = sites->child; so != NULL && s < conf->num_sites; so = so->next, s++) {
    if (!cJSON_IsObject(so) || has_key(so, "tls")) continue;
    const conf_site_t *site = &conf->sites[s];
    if (!acme_on) {
      char *path = gh_asprintf("sites[%zu]", s);
      conf__error_at(ctx, path, "no certificate for its names: add \"tls\" with \"cert\" and "
                                "\"key\", or an \"acme\" section with a \"directory\"");
      gh_free(path);
      continue;
    }
    if (conf->on_demand.enabled) continue; /* names are issued one by one at first sight */
    for (size_t h = 0; h < site->num_hosts; h++) {
      const char *host = site->hosts[h];
      if (host == NULL || host[0] != '*' || (host[1] == '.' && dns01)) continue;
      char *path = gh_asprintf("sites[%zu].hosts[%zu]", s, h);
      char *q = conf__quote(host);
      if (host[1] == '\0') {
        conf__error_at(ctx, path, "\"*\" without a static certificate (\"tls\") needs "
                                  "\"on_demand\": the names are not known in advance");
      } else {
        conf__error_at(ctx, path, "wildcard %s without a static certificate (\"tls\") needs "
                                  "\"dns-01\" in acme.challenges (wildcard certificates require "
                                  "DNS-01), or \"on_demand\"", q);
      }
      gh_free(q);
      gh_free(path);
    }
  }
}

void conf__check_root(conf__ctx_t *ctx, const cJSON *obj, char *base) {
  const conf_t *conf = (const conf_t *)(const void *)base;
  const cJSON *acme = cJSON_GetObjectItemCaseSensitive(obj, "acme");
  int acme_on = cJSON_IsObject(acme) && (has_key(acme, "directory") || has_key(acme, "issuers"));

  size_t first_default = SIZE_MAX;
  for (size_t s = 0; s < conf->num_sites; s++) {
    if (!conf->sites[s].is_default) continue;
    if (first_default == SIZE_MAX) {
      first_default = s;
      continue;
    }
    char *path = gh_asprintf("sites[%zu].default", s);
    conf__error_at(ctx, path, "sites[%zu] is already the default; at most one site may be",
                   first_default);
    gh_free(path);
  }
  check_duplicate_hosts(ctx, conf);
  const cJSON *sites = cJSON_GetObjectItemCaseSensitive(obj, "sites");
  if (cJSON_IsArray(sites)) check_certificates(ctx, conf, sites, acme_on);
  if (conf->on_demand.enabled && !acme_on) {
    conf__error_at(ctx, "on_demand", "needs an \"acme\" section with a \"directory\" to obtain "
                                     "certificates");
  }
  check_ports(ctx, conf);
}

/* "upstream_response" is the old name of "upstream_read" (issue 11): a file
 * written before keeps its meaning; naming both is ambiguous. The old
 * field is cleared once merged, so the printed configuration names only
 * the new key. */
void conf__check_timeouts(conf__ctx_t *ctx, const cJSON *obj, char *base) {
  conf_timeouts_t *t = (conf_timeouts_t *)(void *)base;
  if (obj == NULL || t->upstream_response_ms == 0) return;
  if (has_key(obj, "upstream_read")) {
    conf__error_at(ctx, "timeouts.upstream_response",
                   "is the old name of timeouts.upstream_read; give only upstream_read");
  } else {
    t->upstream_read_ms = t->upstream_response_ms;
  }
  t->upstream_response_ms = 0;
}
