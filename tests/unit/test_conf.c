/* test_conf.c: the configuration module: the examples validate and round
 * trip through conf_to_json; invalid documents report every problem with
 * its JSON path and reason; syntax errors carry the right line and column;
 * value parsers; quick mode. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <unistd.h>

#include "common/common.h"
#include "conf/conf.h"
#include "test.h"

#define EXAMPLES GH_SOURCE_DIR "/conf/examples/"
#define CERT EXAMPLES "certs/example.crt"
#define KEY EXAMPLES "certs/example.key"
#define TLS "'tls': {'cert': '" CERT "', 'key': '" KEY "'}"
#define SITE(extra) "{'hosts': ['a.test'], 'upstreams': ['127.0.0.1:8080'], " TLS extra "}"
#define ONE_SITE(extra) "'sites': [" SITE(extra) "]"
#define ACME "'acme': {'directory': 'https://ca.test/dir'}"
#define RFC2136(extra) "'dns': {'rfc2136': {'server': '127.0.0.1', 'zone': 'a.test', "     \
                       "'key_name': 'k', 'key_secret': 'c2VjcmV0'" extra "}}"

/* json turns a document written with single quotes (readable in C) into
 * JSON. The result is a static buffer, valid until the next call. */
static const char *json(const char *s) {
  static char buf[8192];
  size_t n = strlen(s);
  if (n >= sizeof(buf)) abort();
  for (size_t i = 0; i <= n; i++) buf[i] = s[i] == '\'' ? '"' : s[i];
  return buf;
}

static conf_t *parse(char **err, const char *doc) {
  const char *text = json(doc);
  return conf_parse(err, "t.json", text, strlen(text));
}

/* parse_err returns the error text for a document that must not parse. */
static char *parse_err(const char *doc) {
  char *err = NULL;
  conf_t *conf = parse(&err, doc);
  if (conf != NULL) {
    conf_free(conf);
    return gh_strdup("(parsed without error)");
  }
  return err;
}

static size_t count_lines(const char *s) {
  size_t n = 0;
  for (; *s; s++) n += *s == '\n';
  return n;
}

/* --- deep comparison, field by field, for the round trip --- */

static int str_eq(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int strs_eq(char *const *a, size_t na, char *const *b, size_t nb) {
  if (na != nb) return 0;
  for (size_t i = 0; i < na; i++) {
    if (!str_eq(a[i], b[i])) return 0;
  }
  return 1;
}

static int cidrs_eq(const conf_cidr_t *a, size_t na, const conf_cidr_t *b, size_t nb) {
  if (na != nb) return 0;
  for (size_t i = 0; i < na; i++) {
    if (!str_eq(a[i].text, b[i].text) || a[i].family != b[i].family ||
        a[i].prefix != b[i].prefix || memcmp(a[i].addr, b[i].addr, 16) != 0)
      return 0;
  }
  return 1;
}

static int addr_eq(const conf_addr_t *a, const conf_addr_t *b) {
  if (a == NULL || b == NULL) return a == b;
  return str_eq(a->text, b->text) && str_eq(a->host, b->host) && a->port == b->port &&
         a->http2 == b->http2 && str_eq(a->unix_path, b->unix_path) &&
         a->proxy_protocol == b->proxy_protocol && cidrs_eq(a->proxy_trusted, a->num_proxy_trusted,
                                                            b->proxy_trusted, b->num_proxy_trusted);
}

static int addrs_eq(const conf_addr_t *a, size_t na, const conf_addr_t *b, size_t nb) {
  if (na != nb) return 0;
  for (size_t i = 0; i < na; i++) {
    if (!addr_eq(&a[i], &b[i])) return 0;
  }
  return 1;
}

static int group_eq(const conf_upstream_group_t *a, const conf_upstream_group_t *b) {
  return addrs_eq(a->addrs, a->num_addrs, b->addrs, b->num_addrs) && a->balance == b->balance &&
         str_eq(a->health.path, b->health.path) && a->health.interval_ms == b->health.interval_ms &&
         a->health.timeout_ms == b->health.timeout_ms && a->fail_backoff_ms == b->fail_backoff_ms &&
         a->max_idle == b->max_idle && a->idle_timeout_ms == b->idle_timeout_ms;
}

static int client_auth_eq(const conf_client_auth_t *a, const conf_client_auth_t *b) {
  return a->enabled == b->enabled &&
         strs_eq(a->ca_files, a->num_ca_files, b->ca_files, b->num_ca_files) &&
         a->mode == b->mode && str_eq(a->subject_header, b->subject_header) &&
         str_eq(a->fingerprint_header, b->fingerprint_header);
}

static int site_eq(const conf_site_t *a, const conf_site_t *b) {
  if (!strs_eq(a->hosts, a->num_hosts, b->hosts, b->num_hosts) || !group_eq(&a->group, &b->group) ||
      a->num_routes != b->num_routes || !str_eq(a->cert_file, b->cert_file) ||
      !str_eq(a->key_file, b->key_file) || a->is_default != b->is_default ||
      a->hsts_max_age_s != b->hsts_max_age_s ||
      a->hsts_include_subdomains != b->hsts_include_subdomains ||
      a->hsts_preload != b->hsts_preload || !client_auth_eq(&a->client_auth, &b->client_auth)) {
    return 0;
  }
  for (size_t i = 0; i < a->num_routes; i++) {
    if (!str_eq(a->routes[i].path_prefix, b->routes[i].path_prefix) ||
        !group_eq(&a->routes[i].group, &b->routes[i].group)) {
      return 0;
    }
  }
  return 1;
}

static int rate_eq(conf_rate_t a, conf_rate_t b) { return a.count == b.count && a.per_ms == b.per_ms; }

static int acme_eq(const conf_acme_t *a, const conf_acme_t *b) {
  if (a->num_challenges != b->num_challenges) return 0;
  for (size_t i = 0; i < a->num_challenges; i++) {
    if (a->challenges[i] != b->challenges[i]) return 0;
  }
  return str_eq(a->directory, b->directory) && str_eq(a->email, b->email) &&
         strs_eq(a->ca_roots, a->num_ca_roots, b->ca_roots, b->num_ca_roots) &&
         str_eq(a->eab_key_id, b->eab_key_id) && str_eq(a->eab_hmac_key, b->eab_hmac_key) &&
         a->key_type == b->key_type && a->reuse_key == b->reuse_key &&
         str_eq(a->dns_hook, b->dns_hook) &&
         a->dns_propagation_timeout_ms == b->dns_propagation_timeout_ms &&
         addrs_eq(a->dns_resolvers, a->num_dns_resolvers, b->dns_resolvers,
                  b->num_dns_resolvers) &&
         a->dns_given == b->dns_given && a->dns_rfc2136.enabled == b->dns_rfc2136.enabled &&
         str_eq(a->dns_rfc2136.server, b->dns_rfc2136.server) &&
         strcmp(a->dns_rfc2136.host, b->dns_rfc2136.host) == 0 &&
         a->dns_rfc2136.port == b->dns_rfc2136.port &&
         str_eq(a->dns_rfc2136.zone, b->dns_rfc2136.zone) &&
         str_eq(a->dns_rfc2136.key_name, b->dns_rfc2136.key_name) &&
         a->dns_rfc2136.key_algorithm == b->dns_rfc2136.key_algorithm &&
         str_eq(a->dns_rfc2136.key_secret, b->dns_rfc2136.key_secret) &&
         str_eq(a->preferred_chain, b->preferred_chain);
}

static int on_demand_eq(const conf_on_demand_t *a, const conf_on_demand_t *b) {
  return a->enabled == b->enabled && strs_eq(a->allow, a->num_allow, b->allow, b->num_allow) &&
         str_eq(a->ask, b->ask) && a->ask_timeout_ms == b->ask_timeout_ms &&
         a->ask_cache_ttl_ms == b->ask_cache_ttl_ms &&
         a->ask_negative_ttl_ms == b->ask_negative_ttl_ms && a->allow_ip == b->allow_ip &&
         a->max_labels == b->max_labels && rate_eq(a->rate_global, b->rate_global) &&
         rate_eq(a->rate_per_domain, b->rate_per_domain) &&
         rate_eq(a->rate_per_client_ip, b->rate_per_client_ip) &&
         strs_eq(a->public_suffixes, a->num_public_suffixes, b->public_suffixes,
                 b->num_public_suffixes) &&
         a->max_pending_names == b->max_pending_names &&
         a->max_paused_handshakes == b->max_paused_handshakes &&
         a->wait_budget_ms == b->wait_budget_ms && a->cache_capacity == b->cache_capacity &&
         a->negative_ttl_ms == b->negative_ttl_ms;
}

static int http2_eq(const conf_http2_t *a, const conf_http2_t *b) {
  return a->max_concurrent_streams == b->max_concurrent_streams &&
         a->max_header_list_bytes == b->max_header_list_bytes &&
         a->max_continuations == b->max_continuations && rate_eq(a->max_resets, b->max_resets) &&
         rate_eq(a->max_control_frames, b->max_control_frames) &&
         a->stream_window_bytes == b->stream_window_bytes &&
         a->connection_window_bytes == b->connection_window_bytes &&
         a->hpack_table_bytes == b->hpack_table_bytes;
}

static int conf_eq(const conf_t *a, const conf_t *b) {
  if (a->num_sites != b->num_sites) return 0;
  for (size_t i = 0; i < a->num_sites; i++) {
    if (!site_eq(&a->sites[i], &b->sites[i])) return 0;
  }
  return addrs_eq(a->https, a->num_https, b->https, b->num_https) &&
         addrs_eq(a->http, a->num_http, b->http, b->num_http) && a->workers == b->workers &&
         a->tls.resumption == b->tls.resumption &&
         a->tls.ticket_rotate_ms == b->tls.ticket_rotate_ms && acme_eq(&a->acme, &b->acme) &&
         on_demand_eq(&a->on_demand, &b->on_demand) && str_eq(a->storage, b->storage) &&
         addr_eq(a->admin, b->admin) && str_eq(a->admin_token, b->admin_token) &&
         a->admin_insecure_no_token == b->admin_insecure_no_token &&
         cidrs_eq(a->trusted_proxies, a->num_trusted_proxies, b->trusted_proxies,
                  b->num_trusted_proxies) &&
         memcmp(&a->timeouts, &b->timeouts, sizeof(a->timeouts)) == 0 &&
         memcmp(&a->limits, &b->limits, sizeof(a->limits)) == 0 && http2_eq(&a->http2, &b->http2) &&
         a->log_level == b->log_level &&
         a->log_format == b->log_format && a->access_log == b->access_log &&
         str_eq(a->log_file, b->log_file) && str_eq(a->log_access_file, b->log_access_file) &&
         a->log_buffer == b->log_buffer;
}

/* round_trip checks that conf_parse(conf_to_json(conf)) equals |conf| and
 * that emitting it again prints the same text; it frees |conf| and says
 * what (|name|) failed. */
static int round_trip(conf_t *conf, const char *name) {
  cJSON *j = conf_to_json(conf);
  char *text = cJSON_Print(j);
  cJSON_Delete(j);
  char *err = NULL;
  conf_t *again = conf_parse(&err, "printed.json", text, strlen(text));
  int ok = again != NULL && conf_eq(conf, again);
  if (again != NULL) {
    cJSON *j2 = conf_to_json(again);
    char *text2 = cJSON_Print(j2);
    ok = ok && strcmp(text, text2) == 0;
    cJSON_free(text2);
    cJSON_Delete(j2);
  }
  if (!ok) fprintf(stderr, "%s does not round-trip: %s\n%s\n", name, err ? err : "", text);
  gh_free(err);
  conf_free(again);
  conf_free(conf);
  cJSON_free(text);
  return ok;
}

/* --- the examples --- */

static const char *const examples[] = {"minimal.json", "static.json", "on-demand.json", "full.json"};

static void test_examples_validate_and_round_trip(void) {
  for (size_t i = 0; i < GH_ARRAY_LEN(examples); i++) {
    char path[512];
    snprintf(path, sizeof(path), "%s%s", EXAMPLES, examples[i]);
    char *err = NULL;
    conf_t *conf = conf_load(&err, path);
    if (conf == NULL) fprintf(stderr, "%s:\n", examples[i]);
    ASSERT_NULL(err);
    ASSERT_NOT_NULL(conf);
    ASSERT_STR_EQ(conf->file, path);
    ASSERT_TRUE(round_trip(conf, examples[i]));
  }
}

static void test_full_example_matches_readme(void) {
  /* README's "complete example" and full.json are one document. */
  char *err = NULL;
  FILE *f = fopen(GH_SOURCE_DIR "/README.md", "r");
  ASSERT_NOT_NULL(f);
  static char readme[65536];
  size_t n = fread(readme, 1, sizeof(readme) - 1, f);
  fclose(f);
  readme[n] = '\0';
  const char *start = strstr(readme, "A complete example");
  ASSERT_NOT_NULL(start);
  start = strstr(start, "```json\n");
  ASSERT_NOT_NULL(start);
  start += 8;
  const char *end = strstr(start, "```");
  ASSERT_NOT_NULL(end);
  cJSON *from_readme = cJSON_ParseWithLength(start, (size_t)(end - start));
  f = fopen(EXAMPLES "full.json", "r");
  ASSERT_NOT_NULL(f);
  static char full[65536];
  n = fread(full, 1, sizeof(full) - 1, f);
  fclose(f);
  full[n] = '\0';
  cJSON *from_file = cJSON_Parse(full);
  int same = cJSON_Compare(from_readme, from_file, 1);
  cJSON_Delete(from_readme);
  cJSON_Delete(from_file);
  ASSERT_TRUE(same);
  /* And full.json really has every key: the effective config adds none. */
  conf_t *conf = conf_load(&err, EXAMPLES "full.json");
  ASSERT_NOT_NULL(conf);
  cJSON *eff = conf_to_json(conf);
  cJSON *given = cJSON_Parse(full);
  int every = 1;
  for (cJSON *k = eff->child; k != NULL; k = k->next) {
    every &= cJSON_GetObjectItemCaseSensitive(given, k->string) != NULL;
  }
  cJSON *acme = cJSON_GetObjectItemCaseSensitive(given, "acme");
  for (cJSON *k = cJSON_GetObjectItemCaseSensitive(eff, "acme")->child; k; k = k->next) {
    every &= cJSON_GetObjectItemCaseSensitive(acme, k->string) != NULL;
  }
  cJSON *od = cJSON_GetObjectItemCaseSensitive(given, "on_demand");
  for (cJSON *k = cJSON_GetObjectItemCaseSensitive(eff, "on_demand")->child; k; k = k->next) {
    every &= cJSON_GetObjectItemCaseSensitive(od, k->string) != NULL;
  }
  cJSON_Delete(eff);
  cJSON_Delete(given);
  conf_free(conf);
  ASSERT_TRUE(every);
}

static void test_full_example_values(void) {
  char *err = NULL;
  conf_t *c = conf_load(&err, EXAMPLES "full.json");
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(c->num_sites, 2);
  ASSERT_EQ(c->sites[0].group.balance, CONF_BALANCE_LEAST_CONN);
  ASSERT_STR_EQ(c->sites[0].group.health.path, "/healthz");
  ASSERT_UEQ(c->sites[0].group.health.timeout_ms, 2000);
  ASSERT_EQ(c->sites[0].num_routes, 1);
  ASSERT_STR_EQ(c->sites[0].routes[0].path_prefix, "/api/");
  ASSERT_EQ(c->sites[0].routes[0].group.num_addrs, 1);
  ASSERT_EQ(c->sites[0].routes[0].group.addrs[0].port, 9000);
  ASSERT_UEQ(c->sites[0].hsts_max_age_s, 365ull * 86400);
  ASSERT_NULL(c->sites[0].cert_file);
  /* Relative file names are resolved against the file's directory. */
  ASSERT_STR_EQ(c->sites[1].cert_file, CERT);
  ASSERT_STR_EQ(c->sites[1].key_file, KEY);
  ASSERT_STR_EQ(c->acme.dns_hook, EXAMPLES "dns-hook.sh");
  ASSERT_TRUE(c->sites[1].is_default);
  ASSERT_STR_EQ(c->sites[1].hosts[0], "*.static.example");
  ASSERT_STR_EQ(c->acme.eab_key_id, "kid-1");
  ASSERT_EQ(c->acme.num_challenges, 2);
  ASSERT_EQ(c->acme.challenges[0], CONF_CHALLENGE_TLS_ALPN_01);
  ASSERT_TRUE(c->on_demand.enabled);
  ASSERT_EQ(c->on_demand.rate_global.count, 300);
  ASSERT_UEQ(c->on_demand.rate_global.per_ms, 3ull * 3600 * 1000);
  ASSERT_NOT_NULL(c->admin);
  ASSERT_STR_EQ(c->admin->host, "127.0.0.1");
  ASSERT_EQ(c->admin->port, 2019);
  ASSERT_STR_EQ(c->admin_token, "secret");
  ASSERT_STR_EQ(c->storage, "/var/lib/gatehouse");
  ASSERT_EQ(c->limits.max_header_bytes, 16384);
  ASSERT_EQ(c->http2.max_header_list_bytes, 65536);
  ASSERT_EQ(c->http2.max_resets.count, 100);
  ASSERT_EQ(c->https[0].http2, 1);
  conf_free(c);
}

static void test_relative_config_path(void) {
  /* A relative config path still yields absolute file names. */
  char *cwd = getcwd(NULL, 0);
  ASSERT_NOT_NULL(cwd);
  ASSERT_EQ(chdir(GH_SOURCE_DIR "/conf"), 0);
  char *err = NULL;
  conf_t *c = conf_load(&err, "./examples/static.json");
  int chdir_back = chdir(cwd);
  free(cwd);
  ASSERT_EQ(chdir_back, 0);
  ASSERT_NOT_NULL(c);
  ASSERT_STR_EQ(c->sites[0].cert_file, CERT);
  ASSERT_STR_EQ(c->file, "./examples/static.json");
  /* storage too, like every path (issue 13): not the working directory's. */
  ASSERT_STR_EQ(c->storage, GH_SOURCE_DIR "/conf/examples/gatehouse-data");
  /* "listen" strings stand for lists of one. */
  ASSERT_EQ(c->num_https, 1);
  ASSERT_STR_EQ(c->https[0].host, "");
  ASSERT_EQ(c->https[0].port, 8443);
  ASSERT_STR_EQ(c->sites[0].group.addrs[1].host, "::1");
  conf_free(c);
}

/* admin.listen "unix:PATH": PATH resolves against the config's directory
 * (here conf_parse's: the working directory), needs no token, and prints
 * as the resolved path, which parses back to the same. */
static void test_admin_unix(void) {
  char *cwd = getcwd(NULL, 0);
  ASSERT_NOT_NULL(cwd);
  char *err = NULL;
  conf_t *c = parse(&err, "{'admin': {'listen': 'unix:./run/admin.sock'}, " ONE_SITE("") "}");
  ASSERT_NULL(err);
  ASSERT_NOT_NULL(c);
  char *want = gh_asprintf("%s/run/admin.sock", cwd);
  char *want_text = gh_asprintf("unix:%s", want);
  ASSERT_STR_EQ(c->admin->unix_path, want);
  ASSERT_STR_EQ(c->admin->text, want_text);
  ASSERT_STR_EQ(c->admin->host, "");
  ASSERT_NULL(c->admin_token);
  ASSERT_FALSE(c->admin_insecure_no_token);
  cJSON *j = conf_to_json(c);
  char *text = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  conf_t *again = conf_parse(&err, "again.json", text, strlen(text));
  cJSON_free(text);
  ASSERT_NULL(err);
  ASSERT_NOT_NULL(again);
  ASSERT_STR_EQ(again->admin->unix_path, want);
  ASSERT_STR_EQ(again->admin->text, want_text);
  conf_free(again);
  conf_free(c);
  /* A token, when given, is kept (the server checks it there too). */
  c = parse(&err, "{'admin': {'listen': 'unix:/tmp/gh.sock', 'token': 'x'}, " ONE_SITE("") "}");
  ASSERT_NOT_NULL(c);
  ASSERT_STR_EQ(c->admin->unix_path, "/tmp/gh.sock");
  ASSERT_STR_EQ(c->admin_token, "x");
  conf_free(c);
  /* The command line's parser (gatehouse health --admin) takes it as given. */
  conf_addr_t a;
  ASSERT_EQ(conf_parse_addr(&a, "unix:rel.sock", 0), 0);
  ASSERT_STR_EQ(a.unix_path, "rel.sock");
  conf_addr_cleanup(&a);
  ASSERT_NULL(a.unix_path);
  ASSERT_EQ(conf_parse_addr(&a, "unix:/x.sock", 1), -1);
  gh_free(want);
  gh_free(want_text);
  free(cwd);
}

/* cgroup CPU quotas, as cpu.max (v2) and as v1's quota and period joined
 * by a space, round up and never say less than 1; "max" and -1 mean no
 * quota; anything else is refused. */
static void test_cpu_max(void) {
  static const struct {
    const char *text;
    int rc;
    unsigned cpus;
  } cases[] = {
      {"max 100000\n", 0, 0},     {"max 100000", 0, 0},        {"-1 100000\n", 0, 0},
      {"200000 100000\n", 0, 2},  {"150000 100000\n", 0, 2},  {"100000 100000", 0, 1},
      {"1000 100000\n", 0, 1},    {"50000 100000\n", 0, 1},   {"400001 100000\n", 0, 5},
      {"800000 200000\n", 0, 4},  {"", -1, 0},                 {"max", -1, 0},
      {"100000", -1, 0},           {"0 100000", -1, 0},         {"-2 100000", -1, 0},
      {"100000 0", -1, 0},         {"100000 -5", -1, 0},        {"abc 100000", -1, 0},
      {"100000 100000 x", -1, 0},  {"99999999999999999999 1", -1, 0},
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(cases); i++) {
    unsigned cpus = 12345;
    int rc = conf_cpu_max_parse(cases[i].text, &cpus);
    if (rc != cases[i].rc || (rc == 0 && cpus != cases[i].cpus))
      fprintf(stderr, "case %zu: \"%s\" -> %d, %u\n", i, cases[i].text, rc, cpus);
    ASSERT_EQ(rc, cases[i].rc);
    if (rc == 0) ASSERT_EQ(cpus, cases[i].cpus);
  }
  /* What "auto" resolves to is within the online count and at least 1. */
  unsigned n = conf_cpu_count();
  ASSERT_TRUE(n >= 1);
  ASSERT_TRUE(n <= (unsigned)sysconf(_SC_NPROCESSORS_ONLN));
}

/* "hsts" as the header's own text sets the fields the object does, and
 * prints back as the object, which parses to the same. */
static void test_hsts_string(void) {
  char *err = NULL;
  conf_t *c = parse(&err, "{'sites': [" SITE(", 'hsts': ' max-age=\\\"86400\\\" ; Preload ;'")
                          ", {'hosts': ['b.test'], 'upstreams': ['127.0.0.1:8080'], " TLS
                          ", 'hsts': 'max-age=31536000; includeSubDomains; preload'}]}");
  if (err) fprintf(stderr, "%s", err);
  ASSERT_NOT_NULL(c);
  ASSERT_UEQ(c->sites[0].hsts_max_age_s, 86400);
  ASSERT_FALSE(c->sites[0].hsts_include_subdomains);
  ASSERT_TRUE(c->sites[0].hsts_preload);
  ASSERT_UEQ(c->sites[1].hsts_max_age_s, 31536000);
  ASSERT_TRUE(c->sites[1].hsts_include_subdomains);
  ASSERT_TRUE(c->sites[1].hsts_preload);
  cJSON *j = conf_to_json(c);
  cJSON *h = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "sites"), 1), "hsts");
  ASSERT_TRUE(cJSON_IsObject(h));
  ASSERT_STR_EQ(cJSON_GetObjectItem(h, "max_age")->valuestring, "365d");
  ASSERT_TRUE(cJSON_IsTrue(cJSON_GetObjectItem(h, "preload")));
  char *text = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  conf_t *again = conf_parse(&err, "again.json", text, strlen(text));
  cJSON_free(text);
  ASSERT_NOT_NULL(again);
  ASSERT_TRUE(conf_eq(c, again));
  conf_free(again);
  conf_free(c);
}

/* client_auth: absent, its field names still have their defaults (every
 * request has them removed); present, "ca" is resolved against the
 * config file's directory, and it is printed back and parsed again the
 * same. */
static void test_client_auth(void) {
  char *err = NULL;
  conf_t *c = parse(&err, "{'sites': [" SITE(", 'client_auth': {'ca': ['" CERT "']}") ", "
                          "{'hosts': ['b.test'], 'upstreams': ['127.0.0.1:8080'], " TLS ", "
                          "'client_auth': {'ca': ['" CERT "', '" CERT "'], 'mode': 'optional', "
                          "'subject_header': 'X-Who', 'fingerprint_header': 'X-Which'}}, "
                          "{'hosts': ['c.test'], 'upstreams': ['127.0.0.1:8080'], " TLS "}]}");
  if (err) fprintf(stderr, "%s", err);
  ASSERT_NOT_NULL(c);
  const conf_client_auth_t *a = &c->sites[0].client_auth, *b = &c->sites[1].client_auth,
                           *none = &c->sites[2].client_auth;
  ASSERT_TRUE(a->enabled);
  ASSERT_UEQ(a->num_ca_files, 1);
  ASSERT_STR_EQ(a->ca_files[0], CERT);
  ASSERT_EQ(a->mode, CONF_CLIENT_AUTH_REQUIRED);
  ASSERT_STR_EQ(a->subject_header, "X-Client-Subject");
  ASSERT_STR_EQ(a->fingerprint_header, "X-Client-Cert-SHA256");
  ASSERT_UEQ(b->num_ca_files, 2);
  ASSERT_EQ(b->mode, CONF_CLIENT_AUTH_OPTIONAL);
  ASSERT_STR_EQ(b->subject_header, "X-Who");
  ASSERT_STR_EQ(b->fingerprint_header, "X-Which");
  ASSERT_FALSE(none->enabled);
  ASSERT_UEQ(none->num_ca_files, 0);
  ASSERT_STR_EQ(none->subject_header, "X-Client-Subject");
  ASSERT_STR_EQ(none->fingerprint_header, "X-Client-Cert-SHA256");
  cJSON *j = conf_to_json(c);
  cJSON *sites = cJSON_GetObjectItem(j, "sites");
  cJSON *ca = cJSON_GetObjectItem(cJSON_GetArrayItem(sites, 0), "client_auth");
  ASSERT_STR_EQ(cJSON_GetObjectItem(ca, "mode")->valuestring, "required");
  ASSERT_STR_EQ(cJSON_GetObjectItem(ca, "subject_header")->valuestring, "X-Client-Subject");
  ASSERT_NULL(cJSON_GetObjectItem(cJSON_GetArrayItem(sites, 2), "client_auth"));
  cJSON_Delete(j);
  ASSERT_TRUE(round_trip(c, "client_auth"));
  /* Relative to the config file, like the certificate files. */
  char dir[] = "/tmp/gh-conf-ca-XXXXXX";
  ASSERT_NOT_NULL(mkdtemp(dir));
  char *path = gh_asprintf("%s/ca.pem", dir);
  FILE *f = fopen(path, "w");
  ASSERT_NOT_NULL(f);
  fputs("x", f);
  fclose(f);
  char *file = gh_asprintf("%s/g.json", dir);
  f = fopen(file, "w");
  ASSERT_NOT_NULL(f);
  fputs(json("{" ONE_SITE(", 'client_auth': {'ca': ['ca.pem']}") "}"), f);
  fclose(f);
  c = conf_load(&err, file);
  if (err) fprintf(stderr, "%s", err);
  ASSERT_NOT_NULL(c);
  ASSERT_STR_EQ(c->sites[0].client_auth.ca_files[0], path);
  conf_free(c);
  unlink(path);
  unlink(file);
  rmdir(dir);
  gh_free(path);
  gh_free(file);
}

static void test_defaults(void) {
  char *err = NULL;
  conf_t *c = parse(&err, "{" ONE_SITE("") "}");
  ASSERT_NULL(err);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(c->num_https, 1);
  ASSERT_STR_EQ(c->https[0].text, ":443");
  ASSERT_EQ(c->num_http, 1);
  ASSERT_STR_EQ(c->http[0].text, ":80");
  unsigned cpus = conf_cpu_count();
  ASSERT_EQ(c->workers, cpus > 256 ? 256 : cpus);
  const conf_upstream_group_t *g = &c->sites[0].group;
  ASSERT_EQ(g->balance, CONF_BALANCE_ROUND_ROBIN);
  ASSERT_NULL(g->health.path);
  ASSERT_UEQ(g->health.interval_ms, 10000);
  ASSERT_UEQ(g->health.timeout_ms, 2000);
  ASSERT_UEQ(g->fail_backoff_ms, 10000);
  ASSERT_EQ(g->max_idle, 64);
  ASSERT_UEQ(g->idle_timeout_ms, 60000);
  ASSERT_FALSE(c->sites[0].is_default);
  ASSERT_UEQ(c->sites[0].hsts_max_age_s, 0);
  ASSERT_TRUE(c->tls.resumption);
  ASSERT_UEQ(c->tls.ticket_rotate_ms, 12ull * 3600 * 1000);
  ASSERT_NULL(c->acme.directory);
  ASSERT_EQ(c->acme.num_challenges, 2);
  ASSERT_EQ(c->acme.challenges[0], CONF_CHALLENGE_TLS_ALPN_01);
  ASSERT_EQ(c->acme.challenges[1], CONF_CHALLENGE_HTTP_01);
  ASSERT_EQ(c->acme.key_type, CONF_KEY_P256);
  ASSERT_UEQ(c->acme.dns_propagation_timeout_ms, 120000);
  ASSERT_EQ(c->acme.num_dns_resolvers, 0); /* the engine reads /etc/resolv.conf */
  ASSERT_FALSE(c->on_demand.enabled);
  ASSERT_UEQ(c->on_demand.ask_timeout_ms, 3000);
  ASSERT_UEQ(c->on_demand.ask_cache_ttl_ms, 3600000);
  ASSERT_UEQ(c->on_demand.ask_negative_ttl_ms, 300000);
  ASSERT_EQ(c->on_demand.max_labels, 10);
  ASSERT_EQ(c->on_demand.rate_global.count, 300);
  ASSERT_UEQ(c->on_demand.rate_global.per_ms, 3ull * 3600000);
  ASSERT_EQ(c->on_demand.max_pending_names, 100);
  ASSERT_EQ(c->on_demand.max_paused_handshakes, 10000);
  ASSERT_UEQ(c->on_demand.wait_budget_ms, 30000);
  ASSERT_EQ(c->on_demand.cache_capacity, 10000);
  ASSERT_UEQ(c->on_demand.negative_ttl_ms, 300000);
  /* Without a file, relative to the working directory. */
  char *cwd = getcwd(NULL, 0);
  char *storage = gh_asprintf("%s/gatehouse-data", cwd);
  ASSERT_STR_EQ(c->storage, storage);
  gh_free(storage);
  free(cwd);
  ASSERT_NULL(c->admin);
  ASSERT_UEQ(c->timeouts.handshake_ms, 10000);
  ASSERT_UEQ(c->timeouts.header_read_ms, 10000);
  ASSERT_UEQ(c->timeouts.idle_ms, 60000);
  ASSERT_UEQ(c->timeouts.upstream_connect_ms, 5000);
  ASSERT_UEQ(c->timeouts.upstream_read_ms, 60000);
  ASSERT_UEQ(c->timeouts.upstream_response_ms, 0);
  ASSERT_UEQ(c->timeouts.client_body_ms, 60000);
  ASSERT_UEQ(c->timeouts.client_send_ms, 60000);
  ASSERT_UEQ(c->timeouts.tunnel_idle_ms, 3600000);
  ASSERT_UEQ(c->sites[0].max_body, 0);
  ASSERT_UEQ(c->timeouts.drain_ms, 30000);
  ASSERT_EQ(c->limits.max_header_bytes, 16384);
  ASSERT_EQ(c->limits.max_headers, 100);
  ASSERT_EQ(c->limits.max_uri_bytes, 8192);
  ASSERT_EQ(c->limits.write_queue_bytes, 262144);
  ASSERT_EQ(c->limits.max_connections, 0);
  ASSERT_EQ(c->http2.max_concurrent_streams, 128);
  ASSERT_EQ(c->http2.max_header_list_bytes, 65536);
  ASSERT_EQ(c->http2.max_continuations, 8);
  ASSERT_EQ(c->http2.max_resets.count, 100);
  ASSERT_UEQ(c->http2.max_resets.per_ms, 1000);
  ASSERT_EQ(c->http2.max_control_frames.count, 500);
  ASSERT_UEQ(c->http2.max_control_frames.per_ms, 1000);
  ASSERT_EQ(c->http2.stream_window_bytes, 262144);
  ASSERT_EQ(c->http2.connection_window_bytes, 1048576);
  ASSERT_EQ(c->http2.hpack_table_bytes, 4096);
  ASSERT_EQ(c->log_level, 1);
  ASSERT_EQ(c->log_format, 0);
  ASSERT_EQ(c->access_log, CONF_ACCESS_JSON);
  ASSERT_NULL(c->log_file);
  ASSERT_NULL(c->log_access_file);
  ASSERT_EQ(c->log_buffer, 256 * 1024);
  ASSERT_TRUE(round_trip(c, "the defaults"));
}

/* "upstream_response" is the old name of "upstream_read" (issue 11). */
/* Log files resolve like every file name; they need not exist yet. */
static void test_log_files(void) {
  char *err = NULL;
  conf_t *c = parse(&err, "{'log': {'file': 'not-yet.log', 'access_file': '/tmp/gh-access.log',"
                          " 'buffer': '1m'}, " ONE_SITE("") "}");
  ASSERT_NOT_NULL(c);
  char *cwd = getcwd(NULL, 0);
  char *want = gh_asprintf("%s/not-yet.log", cwd);
  free(cwd);
  ASSERT_STR_EQ(c->log_file, want);
  gh_free(want);
  ASSERT_STR_EQ(c->log_access_file, "/tmp/gh-access.log");
  ASSERT_EQ(c->log_buffer, 1 << 20);
  ASSERT_TRUE(round_trip(c, "log files"));
}

static void test_upstream_read_old_name(void) {
  char *err = NULL;
  conf_t *c = parse(&err, "{'sites': [{'hosts': ['a.test'], 'upstreams': ['127.0.0.1:1'], " TLS "}],"
                          " 'timeouts': {'upstream_response': '7s'}}");
  ASSERT_NOT_NULL(c);
  ASSERT_UEQ(c->timeouts.upstream_read_ms, 7000);
  /* Printed under its new name only, so the printed file parses again. */
  cJSON *eff = conf_to_json(c);
  cJSON *t = cJSON_GetObjectItemCaseSensitive(eff, "timeouts");
  ASSERT_NULL(cJSON_GetObjectItemCaseSensitive(t, "upstream_response"));
  ASSERT_STR_EQ(cJSON_GetObjectItemCaseSensitive(t, "upstream_read")->valuestring, "7s");
  cJSON_Delete(eff);
  conf_free(c);
  err = parse_err("{'sites': [{'hosts': ['a.test'], 'upstreams': ['127.0.0.1:1'], " TLS "}],"
                  " 'timeouts': {'upstream_response': '7s', 'upstream_read': '8s'}}");
  ASSERT_CONTAINS(err, "t.json: timeouts.upstream_response: is the old name of "
                       "timeouts.upstream_read; give only upstream_read");
  gh_free(err);
  err = parse_err("{'sites': [{'hosts': ['a.test'], 'upstreams': ['127.0.0.1:1'], " TLS
                  ", 'max_body': 'lots'}]}");
  ASSERT_CONTAINS(err, "sites[0].max_body: expected a size");
  gh_free(err);
}

/* The per-domain and per-client-IP limits default on only without "ask";
 * with it the application decides, unless a limit is given anyway. */
static void test_rate_defaults_follow_ask(void) {
  char *err = NULL;
  conf_t *c = parse(&err, "{" ACME ", 'on_demand': {'allow': ['*.a.test']}, " ONE_SITE("") "}");
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(c->on_demand.rate_global.count, 300);
  ASSERT_EQ(c->on_demand.rate_per_domain.count, 50);
  ASSERT_UEQ(c->on_demand.rate_per_domain.per_ms, 168ull * 3600000);
  ASSERT_EQ(c->on_demand.rate_per_client_ip.count, 20);
  ASSERT_UEQ(c->on_demand.rate_per_client_ip.per_ms, 3600000);
  ASSERT_TRUE(round_trip(c, "on_demand")); /* frees c */
  c = parse(&err, "{" ACME ", 'on_demand': {'ask': 'http://127.0.0.1:1/'}, " ONE_SITE("") "}");
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(c->on_demand.rate_global.count, 300);
  ASSERT_EQ(c->on_demand.rate_per_domain.count, 0);
  ASSERT_EQ(c->on_demand.rate_per_client_ip.count, 0);
  ASSERT_TRUE(round_trip(c, "on_demand")); /* frees c */
  c = parse(&err, "{" ACME ", 'on_demand': {'ask': 'http://127.0.0.1:1/', 'rate_limits': "
                  "{'per_domain': '5/1d', 'global': '0'}}, " ONE_SITE("") "}");
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(c->on_demand.rate_global.count, 0);
  ASSERT_EQ(c->on_demand.rate_per_domain.count, 5);
  ASSERT_EQ(c->on_demand.rate_per_client_ip.count, 0);
  ASSERT_TRUE(round_trip(c, "on_demand")); /* frees c */
}

static void test_listen_defaults_only_when_absent(void) {
  char *err = NULL;
  conf_t *c = parse(&err, "{'listen': {'https': '127.0.0.1:8443'}, " ONE_SITE("") "}");
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(c->num_https, 1);
  ASSERT_EQ(c->num_http, 0);
  ASSERT_EQ(c->https[0].port, 8443);
  ASSERT_TRUE(round_trip(c, "listen"));
}

/* listen.https entries are strings or {"address": ..., "http2": ...}. */
static void test_listen_https_objects(void) {
  char *err = NULL;
  conf_t *c = parse(&err, "{'listen': {'https': [':443', {'address': '127.0.0.1:8443', 'http2': "
                          "false}, {'http2': true, 'address': '[::1]:8443'}], 'http': ':80'}, "
                          ONE_SITE("") "}");
  ASSERT_NULL(err);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(c->num_https, 3);
  ASSERT_STR_EQ(c->https[0].text, ":443");
  ASSERT_EQ(c->https[0].http2, 1); /* a string: the default */
  ASSERT_STR_EQ(c->https[1].text, "127.0.0.1:8443");
  ASSERT_STR_EQ(c->https[1].host, "127.0.0.1");
  ASSERT_EQ(c->https[1].port, 8443);
  ASSERT_EQ(c->https[1].http2, 0);
  ASSERT_STR_EQ(c->https[2].host, "::1");
  ASSERT_EQ(c->https[2].http2, 1);
  ASSERT_EQ(c->http[0].http2, 0); /* no h2c on the plain listener */
  /* Printed as a string unless http2 is off. */
  cJSON *eff = conf_to_json(c);
  cJSON *https = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(eff, "listen"),
                                                  "https");
  ASSERT_STR_EQ(cJSON_GetArrayItem(https, 0)->valuestring, ":443");
  cJSON *off = cJSON_GetArrayItem(https, 1);
  ASSERT_STR_EQ(cJSON_GetObjectItemCaseSensitive(off, "address")->valuestring, "127.0.0.1:8443");
  ASSERT_TRUE(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(off, "http2")));
  ASSERT_STR_EQ(cJSON_GetArrayItem(https, 2)->valuestring, "[::1]:8443");
  cJSON_Delete(eff);
  ASSERT_TRUE(round_trip(c, "listen.https objects"));
  /* The listen default, ":443", offers h2. */
  c = parse(&err, "{" ONE_SITE("") "}");
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(c->https[0].http2, 1);
  conf_free(c);
}

static void test_proxy_protocol_and_trusted_proxies(void) {
  char *err = NULL;
  conf_t *c = parse(&err, "{'listen': {'https': [{'address': ':8443', 'proxy_protocol': true, "
                          "'proxy_trusted': ['10.0.0.0/8', '::1/128', '127.0.0.1']}], "
                          "'http': [':80', {'address': ':8080', 'proxy_protocol': true, "
                          "'proxy_trusted': ['192.168.0.0/16']}]}, "
                          "'trusted_proxies': ['172.16.0.0/12', '2001:db8::/32'], " ONE_SITE("") "}");
  ASSERT_NULL(err);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(c->https[0].proxy_protocol, 1);
  ASSERT_EQ(c->https[0].http2, 1);
  ASSERT_EQ(c->https[0].num_proxy_trusted, 3);
  ASSERT_EQ(c->https[0].proxy_trusted[2].prefix, 32);
  ASSERT_EQ(c->http[0].proxy_protocol, 0);
  ASSERT_EQ(c->http[1].proxy_protocol, 1);
  ASSERT_EQ(c->http[1].http2, 0);
  ASSERT_EQ(c->num_trusted_proxies, 2);
  const conf_cidr_t *t = c->trusted_proxies;
  uint8_t a4[4] = {172, 31, 255, 1}, b4[4] = {172, 32, 0, 1};
  uint8_t m6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 172, 16, 0, 9};
  uint8_t a6[16] = {0x20, 0x01, 0x0d, 0xb8, 0xff}, b6[16] = {0x20, 0x01, 0x0d, 0xb9};
  ASSERT_EQ(conf_cidr_match(t, 2, AF_INET, a4), 1);
  ASSERT_EQ(conf_cidr_match(t, 2, AF_INET, b4), 0);
  ASSERT_EQ(conf_cidr_match(t, 2, AF_INET6, m6), 1); /* IPv4-mapped counts as IPv4 */
  ASSERT_EQ(conf_cidr_match(t, 2, AF_INET6, a6), 1);
  ASSERT_EQ(conf_cidr_match(t, 2, AF_INET6, b6), 0);
  ASSERT_EQ(conf_cidr_match(c->https[0].proxy_trusted, 3, AF_INET, (const uint8_t *)"\x7f\0\0\x01"), 1);
  ASSERT_EQ(conf_cidr_match(c->https[0].proxy_trusted, 3, AF_INET, (const uint8_t *)"\x7f\0\0\x02"), 0);
  /* Strings stay strings; entries with a PROXY header print as objects. */
  cJSON *eff = conf_to_json(c);
  cJSON *listen = cJSON_GetObjectItemCaseSensitive(eff, "listen");
  cJSON *http = cJSON_GetObjectItemCaseSensitive(listen, "http");
  ASSERT_STR_EQ(cJSON_GetArrayItem(http, 0)->valuestring, ":80");
  ASSERT_TRUE(cJSON_IsObject(cJSON_GetArrayItem(http, 1)));
  ASSERT_NULL(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(http, 1), "http2"));
  cJSON_Delete(eff);
  ASSERT_TRUE(round_trip(c, "proxy protocol"));
  c = parse(&err, "{" ONE_SITE("") "}");
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(c->num_trusted_proxies, 0); /* by default nobody's X-Forwarded-For is kept */
  conf_free(c);
}

static void test_valid_variants(void) {
  /* Documents that must parse: each exercises a rule's permitted side. */
  static const char *const docs[] = {
      /* Without site upstreams, a route for "/" catches every request. */
      "{'sites': [{'hosts': ['a.test'], " TLS ", 'routes': [{'path': '/', 'upstreams': "
      "['127.0.0.1:1']}]}]}",
      /* Wildcards under ACME with dns-01, and "*" with on_demand. */
      "{'sites': [{'hosts': ['*.a.test'], 'upstreams': ['b.test:80']}], 'acme': {'directory': "
      "'https://ca.test/dir', 'challenges': ['dns-01'], 'dns_hook': '" EXAMPLES "dns-hook.sh', "
      "'dns_resolvers': ['127.0.0.1:5353', '[::1]:53'], 'dns_propagation_timeout': '2s'}}",
      "{'sites': [{'hosts': ['*'], 'upstreams': ['b.test:80']}], " ACME ", 'on_demand': "
      "{'allow': ['*']}}",
      /* dns-01 by RFC 2136 updates instead of a hook, in each server form. */
      "{'sites': [{'hosts': ['*.a.test'], 'upstreams': ['b.test:80']}], 'acme': {'directory': "
      "'https://ca.test/dir', 'challenges': ['dns-01'], 'dns': {'rfc2136': {'server': "
      "'127.0.0.1', 'zone': 'a.test', 'key_name': 'gh-key', 'key_secret': 'c2VjcmV0'}}}}",
      "{'sites': [{'hosts': ['*.a.test'], 'upstreams': ['b.test:80']}], 'acme': {'directory': "
      "'https://ca.test/dir', 'challenges': ['dns-01'], 'dns': {'rfc2136': {'server': "
      "'[::1]:5353', 'zone': 'A.Test.', 'key_name': 'k.a.test.', 'key_algorithm': 'hmac-sha512', "
      "'key_secret': 'c2VjcmV0MQ=='}}}}",
      /* Loopback admin without a token, asked for; IPv6 listeners; zero
       * durations where zero means "none". */
      "{'admin': {'listen': '[::1]:2019', 'insecure_no_token': true}, 'listen': {'https': ['[::]:8443'], 'http': []}, "
      "'timeouts': {'drain': '0s'}, " ONE_SITE(", 'fail_backoff': '0'") "}",
      /* Non-loopback admin with a token; sizes as numbers and strings. */
      "{'admin': {'listen': '0.0.0.0:2019', 'token': 't'}, 'limits': {'max_header_bytes': 2048, "
      "'write_queue_bytes': '1m', 'max_connections': 5}, " ONE_SITE("") "}",
      /* The "http2" bounds themselves are accepted. */
      "{'http2': {'max_concurrent_streams': 1, 'max_header_list_size': '1k', "
      "'max_continuations': 0, 'max_resets': '1/1h', 'max_control_frames': '1/1ms', "
      "'stream_window': 65535, 'connection_window': 65535, 'hpack_table_size': 0}, " ONE_SITE("") "}",
      "{'http2': {'max_concurrent_streams': 2147483647, 'max_header_list_size': '16m', "
      "'max_continuations': 1000, 'stream_window': 2147483647, 'connection_window': "
      "2147483647, 'hpack_table_size': '64k'}, " ONE_SITE("") "}",
      /* A fleet's etcd store (issue 15), in both spellings of an endpoint. */
      "{'storage': {'directory': '/tmp/gh-local', 'etcd': {'endpoints': ['http://127.0.0.1:2379', "
      "'https://etcd.internal:2379'], 'prefix': '/gatehouse/prod/', 'ca': '" EXAMPLES "certs/example.crt', "
      "'username': 'u', 'password': 'p', 'timeout': '500ms'}}, 'fleet': {'issue_when_store_down': "
      "'local', 'lease_ttl': '10s', 'node': 'n1'}, " ONE_SITE("") "}",
      /* Upper-case upstream host names are fine (DNS is case-blind). */
      "{'sites': [{'hosts': ['a.test'], 'upstreams': ['Backend_1.internal:8080'], " TLS "}]}",
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(docs); i++) {
    char *err = NULL;
    conf_t *c = parse(&err, docs[i]);
    if (c == NULL) fprintf(stderr, "case %zu: %s\n", i, json(docs[i]));
    ASSERT_NULL(err);
    ASSERT_NOT_NULL(c);
    ASSERT_TRUE(round_trip(c, json(docs[i])));
  }
}

static void test_rfc2136(void) {
  char *err = NULL;
  conf_t *c = parse(&err, "{'acme': {'directory': 'https://ca.test/', 'challenges': ['dns-01'], "
                          "'dns': {'rfc2136': {'server': '[::1]', 'zone': 'a.test', "
                          "'key_name': 'k', 'key_secret': 'c2VjcmV0'}}}, " ONE_SITE("") "}");
  ASSERT_NOT_NULL(c);
  ASSERT_TRUE(c->acme.dns_rfc2136.enabled);
  ASSERT_STR_EQ(c->acme.dns_rfc2136.host, "::1");
  ASSERT_EQ(c->acme.dns_rfc2136.port, 53);
  ASSERT_EQ(c->acme.dns_rfc2136.key_algorithm, CONF_TSIG_HMAC_SHA256);
  conf_free(c);
  c = parse(&err, "{'acme': {'directory': 'https://ca.test/', " RFC2136("") "}, " ONE_SITE("") "}");
  ASSERT_NOT_NULL(c);
  ASSERT_STR_EQ(c->acme.dns_rfc2136.host, "127.0.0.1");
  conf_free(c);
  c = parse(&err, "{" ACME ", " ONE_SITE("") "}");
  ASSERT_NOT_NULL(c);
  ASSERT_FALSE(c->acme.dns_rfc2136.enabled);
  conf_free(c);
}

/* --- invalid documents: each names the path and the reason --- */

typedef struct {
  const char *doc;
  const char *want; /* "PATH: message" (or part of it) */
  const char *also; /* a second substring, or NULL */
} bad_case_t;

static const bad_case_t bad_cases[] = {
    /* Structure. */
    {"[]", "t.json: expected a JSON object at the top level, got a list", NULL},
    {"{}", "t.json: missing required key \"sites\"", NULL},
    {"{'sites': []}", "t.json: sites: expected a list of objects, got an empty list", NULL},
    {"{'sites': 'nope'}", "t.json: sites: expected a list of objects, got \"nope\"", NULL},
    {"{'sites': [5]}", "sites[0]: expected an object, got 5", NULL},
    {"{'tiemouts': {}, " ONE_SITE("") "}",
     "t.json: unknown key \"tiemouts\"; did you mean \"timeouts\"?", NULL},
    {"{'zzz': 1, " ONE_SITE("") "}", "t.json: unknown key \"zzz\"\n", NULL},
    {"{'sites': [{'hosts': ['a.test'], 'upstream': ['127.0.0.1:1'], " TLS "}]}",
     "sites[0]: unknown key \"upstream\"; did you mean \"upstreams\"?",
     "sites[0]: missing required key \"upstreams\""},
    {"{'workers': 2, 'workers': 3, " ONE_SITE("") "}", "t.json: duplicate key \"workers\"", NULL},
    {"{'timeouts': [], " ONE_SITE("") "}", "timeouts: expected an object, got a list", NULL},
    /* Addresses. */
    {"{'sites': [{'hosts': ['a.test'], 'upstreams': ['127.0.0.1:1', 'localhost'], " TLS "}]}",
     "t.json: sites[0].upstreams[1]: expected an address \"host:port\", \"http://host:port\" or \"https://host:port\", got \"localhost\"",
     "(missing port)"},
    {"{'sites': [{'hosts': ['a.test'], 'upstreams': [':8080'], " TLS "}]}",
     "sites[0].upstreams[0]: expected an address \"host:port\", \"http://host:port\" or \"https://host:port\", got \":8080\"", "missing host"},
    {"{'sites': [{'hosts': ['a.test'], 'upstreams': ['a.test:0'], " TLS "}]}",
     "sites[0].upstreams[0]:", "port must be 1-65535"},
    {"{'sites': [{'hosts': ['a.test'], 'upstreams': ['a.test:65536'], " TLS "}]}",
     "sites[0].upstreams[0]:", "port must be 1-65535"},
    {"{'sites': [{'hosts': ['a.test'], 'upstreams': ['::1:80'], " TLS "}]}",
     "sites[0].upstreams[0]:", "needs brackets"},
    {"{'sites': [{'hosts': ['a.test'], 'upstreams': ['[::zz]:80'], " TLS "}]}",
     "sites[0].upstreams[0]:", "not an IPv6 address"},
    {"{'sites': [{'hosts': ['a.test'], 'upstreams': ['999.1.1.1:80'], " TLS "}]}",
     "sites[0].upstreams[0]:", "not an IPv4 address"},
    {"{'sites': [{'hosts': ['a.test'], 'upstreams': [], " TLS "}]}",
     "sites[0].upstreams: expected a list of addresses \"host:port\", got an empty list", NULL},
    {"{'listen': {'https': ['localhost:443']}, " ONE_SITE("") "}",
     "listen.https[0]: expected a listen address", "a listener needs an IP address, not a name"},
    {"{'listen': {}, " ONE_SITE("") "}",
     "t.json: listen: expected at least one address in \"https\" or \"http\", got none", NULL},
    {"{'listen': {'https': ':8443', 'http': ['127.0.0.1:8443']}, " ONE_SITE("") "}",
     "listen.http[0]: \"127.0.0.1:8443\" uses the same port as listen.https[0] (\":8443\")",
     NULL},
    {"{'listen': {'https': [':443', {'address': ':8443', 'http2': 'no'}]}, " ONE_SITE("") "}",
     "t.json: listen.https[1].http2: expected true or false, got \"no\"", NULL},
    {"{'listen': {'https': [{'http2': false}]}, " ONE_SITE("") "}",
     "t.json: listen.https[0]: missing required key \"address\"", NULL},
    {"{'listen': {'https': [{'address': ':8443', 'htpp2': false}]}, " ONE_SITE("") "}",
     "t.json: listen.https[0]: unknown key \"htpp2\"; did you mean \"http2\"?", NULL},
    {"{'listen': {'https': [{'address': 'localhost:8443'}]}, " ONE_SITE("") "}",
     "listen.https[0].address: expected a listen address",
     "a listener needs an IP address, not a name"},
    {"{'listen': {'https': [8443]}, " ONE_SITE("") "}",
     "listen.https[0]: expected a listen address \":port\", \"IP:port\" or \"[IPv6]:port\", or "
     "an object with \"address\", got 8443", NULL},
    {"{'listen': {'http': [{'address': ':8080', 'http2': false}]}, " ONE_SITE("") "}",
     "listen.http[0]: unknown key \"http2\"", NULL},
    {"{'listen': {'http': [{'address': ':8080', 'proxy_protocol': true}]}, " ONE_SITE("") "}",
     "listen.http[0].proxy_trusted: required when proxy_protocol is on", NULL},
    {"{'listen': {'https': [{'address': ':8443', 'proxy_protocol': true, "
     "'proxy_trusted': ['10.0.0.1/8', '::1/129', 'x', 5]}]}, " ONE_SITE("") "}",
     "listen.https[0].proxy_trusted[0]: expected an address block \"IP/len\" or an IP address, "
     "got \"10.0.0.1/8\" (bits are set past the prefix length)",
     "listen.https[0].proxy_trusted[1]: expected an address block \"IP/len\" or an IP address, "
     "got \"::1/129\" (the prefix length is over 128)"},
    {"{'trusted_proxies': '10.0.0.0/8', " ONE_SITE("") "}",
     "trusted_proxies: expected a list of address blocks \"IP/len\", got \"10.0.0.0/8\"", NULL},
    {"{'listen': {'https': [':8443', {'address': '127.0.0.1:8443', 'http2': false}]}, " ONE_SITE(
         "") "}",
     "listen.https[1]: \"127.0.0.1:8443\" uses the same port as listen.https[0] (\":8443\")",
     NULL},
    /* Host names and patterns. */
    {"{'sites': [{'hosts': ['Example.com'], 'upstreams': ['127.0.0.1:1'], " TLS "}]}",
     "sites[0].hosts[0]: expected a lower-case host name", "(use lower case)"},
    {"{'sites': [{'hosts': ['a.*.test'], 'upstreams': ['127.0.0.1:1'], " TLS "}]}",
     "sites[0].hosts[0]:", "\"*\" may only be the whole first label"},
    {"{'sites': [{'hosts': ['aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test'], "
     "'upstreams': ['127.0.0.1:1'], " TLS "}]}",
     "sites[0].hosts[0]:", "label longer than 63 bytes"},
    {"{'sites': [{'hosts': ['-a.test'], 'upstreams': ['127.0.0.1:1'], " TLS "}]}",
     "sites[0].hosts[0]:", "may not begin or end with \"-\""},
    {"{'sites': [{'hosts': ['a..test'], 'upstreams': ['127.0.0.1:1'], " TLS "}]}",
     "sites[0].hosts[0]:", "(empty label)"},
    {"{'sites': [{'hosts': ['a_b.test'], 'upstreams': ['127.0.0.1:1'], " TLS "}]}",
     "sites[0].hosts[0]:", "only letters, digits"},
    {"{'sites': [{'hosts': ['2001:db8:0::1'], 'upstreams': ['127.0.0.1:1'], " TLS "}]}",
     "sites[0].hosts[0]:", "an IPv6 address must be written as RFC 5952 does"},
    {"{'sites': [{'hosts': ['2001:db8::g'], 'upstreams': ['127.0.0.1:1'], " TLS "}]}",
     "sites[0].hosts[0]:", "neither a DNS name nor an IPv6 address"},
    {"{'sites': [{'hosts': 'a.test', 'upstreams': ['127.0.0.1:1'], " TLS "}]}",
     "sites[0].hosts: expected a list of host names and patterns, got \"a.test\"", NULL},
    {"{'sites': [{'upstreams': ['127.0.0.1:1'], " TLS "}]}",
     "sites[0]: missing required key \"hosts\"", NULL},
    /* Durations, sizes, counts, rates. */
    {"{'timeouts': {'idle': 'soon'}, " ONE_SITE("") "}",
     "t.json: timeouts.idle: expected a duration such as \"30s\", \"5m\", \"500ms\", got \"soon\"",
     NULL},
    {"{'timeouts': {'idle': '0s'}, " ONE_SITE("") "}", "timeouts.idle:", "(must be more than 0)"},
    {"{'timeouts': {'handshake': 30}, " ONE_SITE("") "}",
     "timeouts.handshake: expected a duration", "got 30"},
    {"{'limits': {'max_header_bytes': '16q'}, " ONE_SITE("") "}",
     "limits.max_header_bytes: expected a size such as 16384 or \"16k\", got \"16q\"", NULL},
    {"{'limits': {'max_header_bytes': 10}, " ONE_SITE("") "}",
     "limits.max_header_bytes:", "(must be from 1k to 16m)"},
    {"{'limits': {'max_headers': 1.5}, " ONE_SITE("") "}",
     "limits.max_headers: expected a whole number from 1 to 10000, got 1.5", NULL},
    {"{'limits': {'max_connections': -1}, " ONE_SITE("") "}",
     "limits.max_connections: expected a whole number", "got -1"},
    {"{'sites': [" SITE(", 'hsts': 'includeSubDomains'") "]}",
     "sites[0].hsts: expected a Strict-Transport-Security value such as \"max-age=31536000; "
     "includeSubDomains\", got \"includeSubDomains\" (max-age is required)", NULL},
    {"{'sites': [" SITE(", 'hsts': 'max-age=0'") "]}", "sites[0].hsts: expected",
     "(max-age needs a positive whole number of seconds)"},
    {"{'sites': [" SITE(", 'hsts': 'max-age=9; x=1'") "]}", "sites[0].hsts: expected",
     "(unknown directive; known: max-age, includeSubDomains, preload)"},
    {"{'sites': [" SITE(", 'hsts': 5") "]}",
     "sites[0].hsts: expected an object or a header value", NULL},
    {"{'sites': [" SITE(", 'hsts': {'max_age': '1500ms'}") "]}", "sites[0].hsts.max_age:",
     "whole seconds only"},
    {"{'workers': 0, " ONE_SITE("") "}",
     "workers: expected \"auto\" or a whole number from 1 to 256, got 0", NULL},
    {"{'workers': 'many', " ONE_SITE("") "}", "workers: expected \"auto\"", "got \"many\""},
    {"{" ACME ", 'on_demand': {'ask': 'http://127.0.0.1:1/', 'rate_limits': {'global': "
     "'ten/1h'}}, " ONE_SITE("") "}",
     "on_demand.rate_limits.global: expected a rate \"COUNT/DURATION\"", "got \"ten/1h\""},
    {"{" ACME ", 'on_demand': {'ask': 'http://127.0.0.1:1/', 'rate_limits': {'per_domain': "
     "'0/1h'}}, " ONE_SITE("") "}",
     "on_demand.rate_limits.per_domain:", "use \"0\" for no limit"},
    {"{" ACME ", 'on_demand': {'allow': ['*'], 'max_labels': 0}, " ONE_SITE("") "}",
     "on_demand.max_labels: expected a whole number from 1 to 127, got 0", NULL},
    /* http2: each bound, and the rates must limit. */
    {"{'http2': {'max_concurrent_streams': 0}, " ONE_SITE("") "}",
     "t.json: http2.max_concurrent_streams: expected a whole number from 1 to 2147483647, got 0",
     NULL},
    {"{'http2': {'max_concurrent_streams': 2147483648}, " ONE_SITE("") "}",
     "http2.max_concurrent_streams: expected a whole number from 1 to 2147483647, got 2147483648",
     NULL},
    {"{'http2': {'max_header_list_size': 1023}, " ONE_SITE("") "}",
     "http2.max_header_list_size: expected a size such as 16384 or \"16k\", got 1023 (must be "
     "from 1k to 16m)", NULL},
    {"{'http2': {'max_header_list_size': '17m'}, " ONE_SITE("") "}",
     "http2.max_header_list_size:", "got \"17m\" (must be from 1k to 16m)"},
    {"{'http2': {'max_continuations': 1001}, " ONE_SITE("") "}",
     "http2.max_continuations: expected a whole number from 0 to 1000, got 1001", NULL},
    {"{'http2': {'max_resets': '0'}, " ONE_SITE("") "}",
     "http2.max_resets: expected a rate \"COUNT/DURATION\" such as \"10/1h\", got \"0\" (a "
     "limit is required here)", NULL},
    {"{'http2': {'max_resets': '0/1s'}, " ONE_SITE("") "}",
     "http2.max_resets:", "got \"0/1s\" (the count must be at least 1)"},
    {"{'http2': {'max_control_frames': '0'}, " ONE_SITE("") "}",
     "http2.max_control_frames:", "got \"0\" (a limit is required here)"},
    {"{'http2': {'max_control_frames': '500'}, " ONE_SITE("") "}",
     "http2.max_control_frames:", "got \"500\" (missing \"/\")"},
    {"{'http2': {'stream_window': 65534}, " ONE_SITE("") "}",
     "http2.stream_window:", "got 65534 (must be from 65535 to 2147483647)"},
    {"{'http2': {'stream_window': '2048m'}, " ONE_SITE("") "}",
     "http2.stream_window:", "got \"2048m\" (must be from 65535 to 2147483647)"},
    {"{'http2': {'connection_window': '16k'}, " ONE_SITE("") "}",
     "http2.connection_window:", "got \"16k\" (must be from 65535 to 2147483647)"},
    {"{'http2': {'connection_window': 2147483648}, " ONE_SITE("") "}",
     "http2.connection_window:", "got 2147483648 (must be from 65535 to 2147483647)"},
    {"{'http2': {'hpack_table_size': 65537}, " ONE_SITE("") "}",
     "http2.hpack_table_size:", "got 65537 (must be from 0 to 64k)"},
    {"{'http2': {'max_streams': 10}, " ONE_SITE("") "}",
     "t.json: http2: unknown key \"max_streams\"", NULL},
    {"{'http2': {'hpack_table_sise': 10}, " ONE_SITE("") "}",
     "http2: unknown key \"hpack_table_sise\"; did you mean \"hpack_table_size\"?", NULL},
    {"{'http2': true, " ONE_SITE("") "}", "t.json: http2: expected an object, got true", NULL},
    /* Enumerations and booleans. */
    {"{'sites': [" SITE(", 'balance': 'leastconn'") "]}",
     "sites[0].balance: expected one of \"round_robin\", \"least_conn\", got \"leastconn\"",
     "did you mean \"least_conn\"?"},
    {"{'acme': {'directory': 'https://ca.test/', 'key_type': 'rsa4096'}, " ONE_SITE("") "}",
     "acme.key_type: expected one of \"p256\", \"p384\", \"rsa2048\", got \"rsa4096\"", NULL},
    {"{'acme': {'directory': 'https://ca.test/', 'profile': 'short lived'}, " ONE_SITE("") "}",
     "acme.profile: expected a profile name the CA offers", NULL},
    {"{" ACME ", " ONE_SITE(", 'acme_profile': 'shortlived'") "}",
     "sites[0].acme_profile: applies to sites whose certificate ACME obtains", NULL},
    {"{'log': {'level': 'verbose'}, " ONE_SITE("") "}",
     "log.level: expected one of \"debug\", \"info\", \"warn\", \"error\", got \"verbose\"", NULL},
    {"{'log': {'format': 'xml', 'access': 'common'}, " ONE_SITE("") "}",
     "log.format: expected one of \"text\", \"json\", got \"xml\"",
     "log.access: expected one of \"off\", \"json\", \"combined\", got \"common\""},
    {"{'sites': [" SITE(", 'default': 'yes'") "]}",
     "sites[0].default: expected true or false, got \"yes\"", NULL},
    {"{'acme': {'directory': 'https://ca.test/', 'challenges': ['http-01', 'http-01']}, " ONE_SITE(
         "") "}",
     "acme.challenges[1]: \"http-01\" is listed twice", NULL},
    {"{'acme': {'directory': 'https://ca.test/', 'challenges': []}, " ONE_SITE("") "}",
     "acme.challenges: expected a list of names, got an empty list", NULL},
    {"{'acme': {'directory': 'https://ca.test/', 'dns_resolvers': ['127.0.0.1:53', "
     "'ns.example.com:53']}, " ONE_SITE("") "}",
     "acme.dns_resolvers[1]: expected an address \"IP:port\" or \"[IPv6]:port\", got "
     "\"ns.example.com:53\"", "an IP address is needed here, not a name"},
    {"{'acme': {'directory': 'https://ca.test/', 'dns_resolvers': [':53']}, " ONE_SITE("") "}",
     "acme.dns_resolvers[0]:", "missing host"},
    {"{'acme': {'directory': 'https://ca.test/', 'challenges': ['dns-01']}, " ONE_SITE("") "}",
     "t.json: acme: missing \"dns_hook\" or \"dns.rfc2136\", one of which \"dns-01\" in "
     "\"challenges\" needs to publish its TXT records", NULL},
    {"{'acme': {'directory': 'https://ca.test/', 'challenges': ['dns-01'], 'dns': {}}, "
     ONE_SITE("") "}", "t.json: acme: missing \"dns_hook\" or \"dns.rfc2136\"", NULL},
    {"{'acme': {'directory': 'https://ca.test/', 'challenges': ['dns-01'], 'dns_hook': '"
     EXAMPLES "dns-hook.sh', " RFC2136("") "}, " ONE_SITE("") "}",
     "t.json: acme: both \"dns_hook\" and \"dns.rfc2136\" publish dns-01 TXT records; give one "
     "of them", NULL},
    {"{'acme': {'directory': 'https://ca.test/', 'dns': {'rfc2136': {}}}, " ONE_SITE("") "}",
     "acme.dns.rfc2136: missing required key \"server\"", "missing required key \"key_secret\""},
    {"{'acme': {'directory': 'https://ca.test/', " RFC2136(", 'port': 53") "}, " ONE_SITE("") "}",
     "acme.dns.rfc2136: unknown key \"port\"", NULL},
    {"{'acme': {'directory': 'https://ca.test/', 'dns': {'rfc2136': {'server': 'ns1.a.test', "
     "'zone': 'a.test', 'key_name': 'k', 'key_secret': 'c2VjcmV0'}}}, " ONE_SITE("") "}",
     "acme.dns.rfc2136.server: expected an address \"IP\", \"IP:port\" or \"[IPv6]:port\", got "
     "\"ns1.a.test\" (an IP address is needed here, not a name)", NULL},
    {"{'acme': {'directory': 'https://ca.test/', 'dns': {'rfc2136': {'server': '127.0.0.1:99999', "
     "'zone': 'a.test', 'key_name': 'k', 'key_secret': 'c2VjcmV0'}}}, " ONE_SITE("") "}",
     "acme.dns.rfc2136.server: expected an address \"IP\", \"IP:port\" or \"[IPv6]:port\", got "
     "\"127.0.0.1:99999\"", NULL},
    {"{'acme': {'directory': 'https://ca.test/', 'dns': {'rfc2136': {'server': '127.0.0.1', "
     "'zone': 'a..test', 'key_name': 'k', 'key_secret': 'c2VjcmV0'}}}, " ONE_SITE("") "}",
     "acme.dns.rfc2136.zone: expected a DNS name, got \"a..test\" (empty label)", NULL},
    {"{'acme': {'directory': 'https://ca.test/', 'dns': {'rfc2136': {'server': '127.0.0.1', "
     "'zone': 'a.test', 'key_name': 'my key', 'key_secret': 'c2VjcmV0'}}}, " ONE_SITE("") "}",
     "acme.dns.rfc2136.key_name: expected a DNS name, got \"my key\"", NULL},
    {"{'acme': {'directory': 'https://ca.test/', 'dns': {'rfc2136': {'server': '127.0.0.1', "
     "'zone': 'a.test', 'key_name': 'k', 'key_secret': 'c2VjcmV0MQ'}}}, " ONE_SITE("") "}",
     "acme.dns.rfc2136.key_secret: expected a base64 string, got \"c2VjcmV0MQ\"",
     "its length is not a multiple of 4 (missing \"=\" padding?)"},
    {"{'acme': {'directory': 'https://ca.test/', 'dns': {'rfc2136': {'server': '127.0.0.1', "
     "'zone': 'a.test', 'key_name': 'k', 'key_secret': 'c2Vj-mV0'}}}, " ONE_SITE("") "}",
     "acme.dns.rfc2136.key_secret: expected a base64 string, got \"c2Vj-mV0\"", NULL},
    {"{'acme': {'directory': 'https://ca.test/', " RFC2136(", 'key_algorithm': 'hmac-md5'") "}, "
     ONE_SITE("") "}",
     "acme.dns.rfc2136.key_algorithm: expected one of \"hmac-sha256\", \"hmac-sha512\", got "
     "\"hmac-md5\"", NULL},
    /* Sites across the document. */
    {"{'sites': [" SITE(", 'default': true") ", {'hosts': ['b.test'], 'upstreams': "
     "['127.0.0.1:1'], " TLS ", 'default': true}]}",
     "sites[1].default: sites[0] is already the default; at most one site may be", NULL},
    {"{'sites': [" SITE("") ", {'hosts': ['b.test', 'a.test'], 'upstreams': ['127.0.0.1:1'], " TLS
     "}]}",
     "sites[1].hosts[1]: \"a.test\" is already in sites[0].hosts[0]", NULL},
    {"{'sites': [{'hosts': ['a.test'], 'upstreams': ['127.0.0.1:1'], 'tls': {'cert': '" CERT
     "'}}]}",
     "sites[0].tls: missing required key \"key\"", NULL},
    {"{'sites': [{'hosts': ['a.test'], 'upstreams': ['127.0.0.1:1'], 'tls': {'cert': "
     "'/nonexistent/x.crt', 'key': '" KEY "'}}]}",
     "sites[0].tls.cert: cannot read \"/nonexistent/x.crt\": No such file or directory", NULL},
    {"{'sites': [{'hosts': ['a.test'], 'upstreams': ['127.0.0.1:1'], 'tls': {'cert': '" EXAMPLES
     "', 'key': '" KEY "'}}]}",
     "sites[0].tls.cert: cannot read", "it is a directory"},
    {"{'sites': [{'hosts': ['a.test'], " TLS "}]}",
     "sites[0]: missing required key \"upstreams\" (needed unless a route has path \"/\")", NULL},
    {"{'sites': [{'hosts': ['a.test'], " TLS ", 'routes': [{'path': '/api/', 'upstreams': "
     "['127.0.0.1:1']}]}]}",
     "sites[0]: missing required key \"upstreams\"", NULL},
    {"{'sites': [" SITE(", 'routes': [{'path': 'api', 'upstreams': ['127.0.0.1:1']}]") "]}",
     "sites[0].routes[0].path: expected a path such as \"/api/\", got \"api\" (must begin with \"/\")", NULL},
    {"{'sites': [" SITE(", 'routes': [{'path': '/api/'}]") "]}",
     "sites[0].routes[0]: missing required key \"upstreams\"", NULL},
    {"{'sites': [" SITE(", 'routes': [{'path': '/a/', 'upstreams': ['127.0.0.1:1']}, {'path': "
                        "'/a/', 'upstreams': ['127.0.0.1:2']}]") "]}",
     "sites[0].routes[1].path: \"/a/\" is also the path of routes[0]", NULL},
    {"{'sites': [" SITE(", 'health_check': {'path': '/h', 'interval': '5s', 'timeout': '5s'}") "]}",
     "sites[0].health_check.timeout: expected less than \"interval\" (5s), got \"5s\"", NULL},
    {"{'sites': [" SITE(", 'health_check': {'interval': '5s'}") "]}",
     "sites[0].health_check: missing required key \"path\"", NULL},
    /* Certificates: static, ACME, wildcards. */
    {"{'sites': [{'hosts': ['a.test'], 'upstreams': ['127.0.0.1:1']}]}",
     "sites[0]: no certificate for its names", NULL},
    {"{'sites': [{'hosts': ['*.a.test'], 'upstreams': ['127.0.0.1:1']}], " ACME "}",
     "sites[0].hosts[0]: wildcard \"*.a.test\" without a static certificate",
     "(wildcard certificates require DNS-01)"},
    {"{'sites': [{'hosts': ['*'], 'upstreams': ['127.0.0.1:1']}], " ACME "}",
     "sites[0].hosts[0]: \"*\" without a static certificate (\"tls\") needs \"on_demand\"", NULL},
    /* ACME. */
    {"{'acme': {'email': 'a@b.test'}, " ONE_SITE("") "}",
     "t.json: acme: missing \"directory\" (the CA's ACME directory URL) or \"issuers\"", NULL},
    {"{'acme': {'directory': 'https://a.test/', 'issuers': [{'directory': 'https://b.test/'}]}, "
     ONE_SITE("") "}",
     "acme: give either \"directory\" (one CA) or \"issuers\" (CAs in order), not both", NULL},
    {"{'acme': {'issuers': []}, " ONE_SITE("") "}",
     "acme.issuers: expected a list of objects, got an empty list", NULL},
    {"{'acme': {'issuers': [{'email': 'a@b.test'}]}, " ONE_SITE("") "}",
     "acme.issuers[0]: missing required key \"directory\"", NULL},
    {"{'acme': {'issuers': [{'directory': 'https://a.test/'}, {'directory': 'https://a.test/'}]}, "
     ONE_SITE("") "}",
     "acme.issuers[1].directory: is also that of acme.issuers[0]", NULL},
    {"{'acme': {'issuers': [{'directory': 'https://a.test/', 'name': 'x'}, "
     "{'directory': 'https://b.test/', 'name': 'x'}]}, " ONE_SITE("") "}",
     "acme.issuers[1].name: is also that of acme.issuers[0]", NULL},
    {"{'acme': {'issuers': [{'directory': 'https://a.test/', 'name': 'Big CA'}]}, " ONE_SITE("") "}",
     "acme.issuers[0].name: expected a short name for the CA", NULL},
    {"{'acme': {'issuers': [{'directory': 'https://a.test/', 'profile': 'a b'}]}, " ONE_SITE("") "}",
     "acme.issuers[0].profile: expected a profile name the CA offers", NULL},
    {"{'acme': {'issuers': [{'directory': 'https://a.test/', 'eab': {'key_id': 'k'}}]}, "
     ONE_SITE("") "}",
     "acme.issuers[0].eab: missing required key \"hmac_key\"", NULL},
    {"{'acme': {'issuers': [{'directory': 'https://a.test/'}], 'eab': {'key_id': 'k', "
     "'hmac_key': 'abc'}}, " ONE_SITE("") "}",
     "acme: \"eab\" belongs to the entry of \"issuers\" whose CA issued it", NULL},
    {"{'acme': {'issuers': [{'directory': 'https://a.test/', 'extra': 1}]}, " ONE_SITE("") "}",
     "acme.issuers[0]: unknown key \"extra\"", NULL},
    {"{'acme': {'directory': 'ftp://ca.test/'}, " ONE_SITE("") "}",
     "acme.directory: expected an http:// or https:// URL, got \"ftp://ca.test/\"",
     "(the scheme must be http:// or https://)"},
    {"{'acme': {'directory': 'https:///dir'}, " ONE_SITE("") "}", "acme.directory:",
     "(missing host)"},
    {"{'acme': {'directory': 'https://ca.test/', 'email': 'ops'}, " ONE_SITE("") "}",
     "acme.email: expected an e-mail address, got \"ops\"", NULL},
    {"{'acme': {'directory': 'https://ca.test/', 'eab': {'key_id': 'k'}}, " ONE_SITE("") "}",
     "acme.eab: missing required key \"hmac_key\"", NULL},
    {"{'acme': {'directory': 'https://ca.test/', 'eab': {'key_id': 'k', 'hmac_key': 'a+b/c'}}, " ONE_SITE(
         "") "}",
     "acme.eab.hmac_key: expected a base64url string, got \"a+b/c\"", NULL},
    {"{'acme': {'directory': 'https://ca.test/', 'ca_roots': ['/nonexistent/ca.pem']}, " ONE_SITE(
         "") "}",
     "acme.ca_roots[0]: cannot read \"/nonexistent/ca.pem\": No such file or directory", NULL},
    {"{'acme': {'directory': 'https://ca.test/', 'challenges': ['dns-01'], 'dns_hook': '" KEY
     "'}, " ONE_SITE("") "}",
     "acme.dns_hook: cannot execute \"" KEY "\": Permission denied", NULL},
    /* On-demand and admin. */
    {"{'on_demand': {'allow': ['*.a.test']}, " ONE_SITE("") "}",
     "t.json: on_demand: needs an \"acme\" section with a \"directory\"", NULL},
    {"{" ACME ", 'on_demand': {'max_labels': 5}, " ONE_SITE("") "}",
     "t.json: on_demand: needs \"allow\" or \"ask\"", NULL},
    {"{" ACME ", 'on_demand': {'allow': ['Shop.test']}, " ONE_SITE("") "}",
     "on_demand.allow[0]:", "(use lower case)"},
    {"{" ACME ", 'on_demand': {'allow': ['*'], 'public_suffixes': ['*.co.test']}, " ONE_SITE("") "}",
     "on_demand.public_suffixes[0]: expected a lower-case host name, got \"*.co.test\"",
     "(wildcards are not allowed here)"},
    {"{'admin': {'listen': '0.0.0.0:2019'}, " ONE_SITE("") "}",
     "t.json: admin: missing \"token\", which \"listen\" \"0.0.0.0:2019\" needs (it is not a "
     "loopback address): set \"token\", or listen on a unix socket", NULL},
    /* insecure_no_token is for loopback only. */
    {"{'admin': {'listen': '0.0.0.0:2019', 'insecure_no_token': true}, " ONE_SITE("") "}",
     "t.json: admin: missing \"token\", which \"listen\" \"0.0.0.0:2019\" needs", NULL},
    /* Loopback needs a token too (issue 13), and the message says the three ways out. */
    {"{'admin': {'listen': '127.0.0.1:2019'}, " ONE_SITE("") "}",
     "t.json: admin: missing \"token\", which a TCP \"listen\" address needs, loopback too "
     "(got \"127.0.0.1:2019\";",
     "set \"token\", listen on a unix socket such as \"unix:/run/gatehouse/admin.sock\" (file "
     "permissions guard it), or set \"insecure_no_token\": true"},
    {"{'admin': {'listen': '[::1]:2019', 'insecure_no_token': false}, " ONE_SITE("") "}",
     "t.json: admin: missing \"token\", which a TCP \"listen\" address needs", NULL},
    {"{'admin': {'listen': '127.0.0.1:2019', 'token': 't', 'insecure_no_token': true}, "
     ONE_SITE("") "}",
     "t.json: admin: \"insecure_no_token\" is true but a \"token\" is set: remove one", NULL},
    {"{'admin': {'listen': 'unix:'}, " ONE_SITE("") "}",
     "admin.listen: expected a listen address \":port\", \"IP:port\", \"[IPv6]:port\" or "
     "\"unix:PATH\", got \"unix:\" (missing the socket's path after \"unix:\")", NULL},
    {"{'admin': {'listen': 'unix:/" "0123456789012345678901234567890123456789012345678901234567890"
     "12345678901234567890123456789012345678901234567890'}, " ONE_SITE("") "}",
     "admin.listen: expected", "(the resolved path is longer than 107 bytes)"},
    {"{'listen': {'http': ['unix:/tmp/x.sock']}, " ONE_SITE("") "}",
     "listen.http[0]: expected a listen address", NULL},
    {"{'admin': {'token': 'x'}, " ONE_SITE("") "}", "t.json: admin: missing required key \"listen\"",
     NULL},
    {"{'admin': {'listen': '127.0.0.1:443'}, " ONE_SITE("") "}",
     "admin.listen: \"127.0.0.1:443\" uses the same port as listen.https[0] (\":443\")", NULL},
    /* Strings. */
    {"{'storage': 'a\\nb', " ONE_SITE("") "}", "storage: expected a non-empty string",
     "(contains a control character)"},
    {"{'storage': '', " ONE_SITE("") "}", "storage: expected a non-empty string, got \"\" (empty)",
     NULL},
    /* storage.etcd (issue 15). */
    {"{'storage': 5, " ONE_SITE("") "}",
     "storage: expected a directory, or an object with \"directory\" and \"etcd\", got 5", NULL},
    {"{'storage': {'etcd': {'endpoints': []}}, " ONE_SITE("") "}", "storage.etcd.endpoints:", NULL},
    {"{'storage': {'etcd': {'endpoints': ['ftp://a:1']}}, " ONE_SITE("") "}",
     "storage.etcd.endpoints[0]: expected an address", "the scheme must be"},
    {"{'storage': {'etcd': {'endpoints': ['http://a:1'], 'prefix': 'gh'}}, " ONE_SITE("") "}",
     "storage.etcd.prefix: expected a key prefix that begins and ends with \"/\"", NULL},
    {"{'storage': {'etcd': {'endpoints': ['https://a:1'], 'username': 'u'}}, " ONE_SITE("") "}",
     "storage.etcd.password: required with \"username\"", NULL},
    {"{'storage': {'etcd': {'endpoints': ['http://a:1'], 'ca': '" EXAMPLES "certs/example.crt'}}, "
     ONE_SITE("") "}", "storage.etcd.ca: applies to https:// endpoints only", NULL},
    {"{'fleet': {'issue_when_store_down': 'maybe'}, " ONE_SITE("") "}",
     "fleet.issue_when_store_down: expected one of", NULL},
    /* Log files: need not exist, but their directory must. */
    {"{'log': {'file': '/nonexistent-gh-dir/gatehouse.log'}, " ONE_SITE("") "}",
     "t.json: log.file: cannot write in the directory \"/nonexistent-gh-dir\": no such directory",
     NULL},
    {"{'log': {'access_file': '/'}, " ONE_SITE("") "}",
     "t.json: log.access_file: cannot write \"/\": it is a directory", NULL},
    {"{'log': {'file': '" KEY "/x.log'}, " ONE_SITE("") "}",
     "log.file: cannot write \"" KEY "/x.log\": Not a directory", NULL},
    {"{'log': {'buffer': '1k'}, " ONE_SITE("") "}", "log.buffer:", NULL},
    /* client_auth. */
    {"{" ONE_SITE(", 'client_auth': {'mode': 'optional'}") "}",
     "t.json: sites[0].client_auth: missing required key \"ca\"", NULL},
    {"{" ONE_SITE(", 'client_auth': {'ca': []}") "}",
     "t.json: sites[0].client_auth.ca: expected a list of file names, got an empty list", NULL},
    {"{" ONE_SITE(", 'client_auth': {'ca': '" CERT "'}") "}",
     "t.json: sites[0].client_auth.ca: expected a list of file names, got \"", NULL},
    {"{" ONE_SITE(", 'client_auth': {'ca': ['/nonexistent-gh/ca.pem']}") "}",
     "t.json: sites[0].client_auth.ca[0]: cannot read \"/nonexistent-gh/ca.pem\": No such file",
     NULL},
    {"{" ONE_SITE(", 'client_auth': {'ca': ['" CERT "'], 'mode': 'on'}") "}",
     "t.json: sites[0].client_auth.mode: expected one of \"required\", \"optional\", got \"on\"",
     NULL},
    {"{" ONE_SITE(", 'client_auth': {'ca': ['" CERT "'], 'subject_header': 'X Subject'}") "}",
     "t.json: sites[0].client_auth.subject_header: expected a header field name such as "
     "\"X-Client-Subject\", got \"X Subject\" (a field name is letters, digits and", NULL},
    {"{" ONE_SITE(", 'client_auth': {'ca': ['" CERT "'], 'fingerprint_header': 'X-Forwarded-For'}") "}",
     "sites[0].client_auth.fingerprint_header: expected a header field name",
     "(the proxy writes or removes that field itself)"},
    {"{" ONE_SITE(", 'client_auth': {'ca': ['" CERT "'], 'subject_header': 'x-id', "
     "'fingerprint_header': 'X-ID'}") "}",
     "t.json: sites[0].client_auth.fingerprint_header: \"X-ID\" is also \"subject_header\"", NULL},
    {"{" ONE_SITE(", 'client_auth': {'ca': ['" CERT "'], 'verify': 'on'}") "}",
     "t.json: sites[0].client_auth: unknown key \"verify\"", NULL},
};

static void test_invalid_documents(void) {
  for (size_t i = 0; i < GH_ARRAY_LEN(bad_cases); i++) {
    char *err = parse_err(bad_cases[i].doc);
    int ok = strstr(err, bad_cases[i].want) != NULL &&
             (bad_cases[i].also == NULL || strstr(err, bad_cases[i].also) != NULL);
    if (!ok) {
      fprintf(stderr, "bad case %zu: %s\nwant: %s%s%s\n", i, json(bad_cases[i].doc),
              bad_cases[i].want, bad_cases[i].also ? "\nand:  " : "",
              bad_cases[i].also ? bad_cases[i].also : "");
    }
    char *copy = gh_strdup(err);
    gh_free(err);
    ASSERT_CONTAINS(copy, bad_cases[i].want);
    if (bad_cases[i].also != NULL) ASSERT_CONTAINS(copy, bad_cases[i].also);
    /* Every line has the shape "t.json: ...". */
    for (const char *line = copy; *line; line = strchr(line, '\n') + 1) {
      ASSERT_TRUE(strncmp(line, "t.json: ", 8) == 0);
      ASSERT_NOT_NULL(strchr(line, '\n'));
    }
    gh_free(copy);
  }
  ASSERT_TRUE(GH_ARRAY_LEN(bad_cases) >= 35);
}

static void test_every_error_is_reported(void) {
  char *err = parse_err(
      "{'listen': {'https': ['localhost:443']},"
      " 'sites': [{'hosts': ['A.test'], 'upstreams': ['127.0.0.1:1', 'localhost'], " TLS "},"
      "           {'hosts': ['b.test'], 'upstreams': ['127.0.0.1:2'], 'balanse': 'x', " TLS "}],"
      " 'timeouts': {'idle': 'soon', 'drain': 'later'},"
      " 'log': {'level': 'loud'}}");
  ASSERT_CONTAINS(err, "t.json: listen.https[0]: expected a listen address");
  ASSERT_CONTAINS(err, "t.json: sites[0].hosts[0]: expected a lower-case host name");
  ASSERT_CONTAINS(err, "t.json: sites[0].upstreams[1]: expected an address \"host:port\"");
  ASSERT_CONTAINS(err, "t.json: sites[1]: unknown key \"balanse\"; did you mean \"balance\"?");
  ASSERT_CONTAINS(err, "t.json: timeouts.idle: expected a duration");
  ASSERT_CONTAINS(err, "t.json: timeouts.drain: expected a duration");
  ASSERT_CONTAINS(err, "t.json: log.level: expected one of");
  /* Exactly those: no follow-on errors from the bad values. */
  ASSERT_EQ(count_lines(err), 7);
  /* In document order. */
  ASSERT_TRUE(strstr(err, "listen.https[0]") < strstr(err, "sites[0].hosts[0]"));
  ASSERT_TRUE(strstr(err, "sites[1]") < strstr(err, "timeouts.idle"));
  gh_free(err);
}

/* --- JSON syntax errors --- */

static void expect_syntax(const char *text, const char *want) {
  char *err = NULL;
  conf_t *c = conf_parse(&err, "s.json", text, strlen(text));
  ASSERT_NULL(c);
  ASSERT_NOT_NULL(err);
  if (strcmp(err, want) != 0) fprintf(stderr, "for %s", text);
  ASSERT_STR_EQ(err, want);
  gh_free(err);
}

static void test_syntax_errors(void) {
  /* The second ',' on line 4 is column 26. */
  expect_syntax("{\n  \"workers\": 2,\n  \"sites\": [\n    {\"hosts\": [\"a.test\"],,}\n  ]\n}\n",
                "s.json:4:26: JSON syntax error (expected a key in double quotes)\n");
  /* A trailing comma is reported at the bracket that follows it. */
  expect_syntax("{\n  \"a\": 1,\n}\n", "s.json:3:1: JSON syntax error (trailing comma)\n");
  expect_syntax("[1,\n ]", "s.json:2:2: JSON syntax error (trailing comma)\n");
  expect_syntax("{a: 1}", "s.json:1:2: JSON syntax error (expected a key in double quotes)\n");
  expect_syntax("{\"a\" 1}", "s.json:1:6: JSON syntax error (expected \":\")\n");
  expect_syntax("{\"a\": 1 \"b\": 2}",
                "s.json:1:9: JSON syntax error (expected \",\" or \"}\")\n");
  expect_syntax("{\"a\": tru}", "s.json:1:7: JSON syntax error (expected a value)\n");
  expect_syntax("{\"a\": 01}", "s.json:1:8: JSON syntax error (bad number (leading zero))\n");
  expect_syntax("{\"a\": 1.}", "s.json:1:9: JSON syntax error (bad number)\n");
  expect_syntax("{\n\"a\": 1\n} x", "s.json:3:3: JSON syntax error (more text after the document)\n");
  /* Columns count characters, not bytes: "\u00e9" is one. */
  expect_syntax("{\"\xc3\xa9\": 1,}", "s.json:1:9: JSON syntax error (trailing comma)\n");
  expect_syntax("", "s.json:1:1: JSON syntax error (unexpected end of input)\n");
  expect_syntax("{\n  \"a\": [1, 2\n", "s.json:3:1: JSON syntax error (unexpected end of input)\n");
  expect_syntax("{\"a\": \"abc", "s.json:1:7: JSON syntax error (unterminated string)\n");
  expect_syntax("{\"a\": \"x\\qy\"}", "s.json:1:9: JSON syntax error (bad escape)\n");
  expect_syntax("{\"a\": \"x\\u12G4\"}", "s.json:1:9: JSON syntax error (bad \\u escape)\n");
  expect_syntax("{\"a\": \"x\ty\"}",
                "s.json:1:9: JSON syntax error (control character in a string; escape it)\n");
  expect_syntax("{\"storage\": \"a\\u0000b\"}",
                "s.json:1:15: JSON syntax error (\\u0000 in a string)\n");
  /* Nesting beyond 512 levels is refused before cJSON sees it. */
  static char deep[1100];
  memset(deep, '[', 600);
  deep[600] = '\0';
  expect_syntax(deep, "s.json:1:513: JSON syntax error (nested too deeply)\n");
  /* An embedded NUL byte is an error, not the end of the document. */
  char *err = NULL;
  conf_t *c = conf_parse(&err, "s.json", "{}\0{", 4);
  ASSERT_NULL(c);
  ASSERT_STR_EQ(err, "s.json:1:3: JSON syntax error (more text after the document)\n");
  gh_free(err);
  /* Text need not be NUL-terminated, and a byte-order mark is skipped. */
  const char *doc = json("\xef\xbb\xbf{" ONE_SITE("") "}");
  char *copy = gh_malloc(strlen(doc));
  memcpy(copy, doc, strlen(doc));
  c = conf_parse(&err, "s.json", copy, strlen(doc));
  gh_free(copy);
  ASSERT_NULL(err);
  ASSERT_NOT_NULL(c);
  conf_free(c);
}

static void test_load_errors(void) {
  char *err = NULL;
  conf_t *c = conf_load(&err, "/nonexistent/gatehouse.json");
  ASSERT_NULL(c);
  ASSERT_STR_EQ(err, "/nonexistent/gatehouse.json: cannot read: No such file or directory\n");
  gh_free(err);
  c = conf_load(&err, GH_SOURCE_DIR "/conf");
  ASSERT_NULL(c);
  ASSERT_CONTAINS(err, "cannot read: Is a directory");
  gh_free(err);
  ASSERT_NULL(conf_to_json(NULL));
  conf_free(NULL);
}

/* --- value parsers --- */

static void test_durations(void) {
  static const struct {
    const char *s;
    uint64_t ms;
  } good[] = {
      {"500ms", 500}, {"30s", 30000}, {"5m", 300000}, {"2h", 7200000}, {"7d", 604800000},
      {"0", 0},       {"0s", 0},      {"1ms", 1},     {"90s", 90000},
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(good); i++) {
    uint64_t ms = 1;
    ASSERT_EQ(conf_parse_duration(good[i].s, &ms), 0);
    ASSERT_UEQ(ms, good[i].ms);
  }
  static const char *const bad[] = {"",   "s",    "5",   "-1s",  "1.5s", " 1s",
                                    "1s ", "1sec", "5M",  "1h30m", "ms",  "99999999999999999999d",
                                    "9999999999999999999d"};
  for (size_t i = 0; i < GH_ARRAY_LEN(bad); i++) {
    uint64_t ms = 7;
    if (conf_parse_duration(bad[i], &ms) == 0) fprintf(stderr, "accepted \"%s\"\n", bad[i]);
    ASSERT_EQ(conf_parse_duration(bad[i], &ms), -1);
    ASSERT_UEQ(ms, 7);
  }
  ASSERT_EQ(conf_parse_duration(NULL, NULL), -1);
}

static void test_addresses(void) {
  conf_addr_t a;
  ASSERT_EQ(conf_parse_addr(&a, "127.0.0.1:8080", 1), 0);
  ASSERT_STR_EQ(a.text, "127.0.0.1:8080");
  ASSERT_STR_EQ(a.host, "127.0.0.1");
  ASSERT_EQ(a.port, 8080);
  conf_addr_cleanup(&a);
  ASSERT_NULL(a.text);
  ASSERT_EQ(conf_parse_addr(&a, ":443", 0), 0);
  ASSERT_STR_EQ(a.host, "");
  ASSERT_EQ(a.port, 443);
  conf_addr_cleanup(&a);
  ASSERT_EQ(conf_parse_addr(&a, "[::1]:8443", 1), 0);
  ASSERT_STR_EQ(a.host, "::1");
  ASSERT_STR_EQ(a.text, "[::1]:8443");
  ASSERT_EQ(a.port, 8443);
  conf_addr_cleanup(&a);
  ASSERT_EQ(conf_parse_addr(&a, "backend.internal:65535", 1), 0);
  ASSERT_STR_EQ(a.host, "backend.internal");
  ASSERT_EQ(a.port, 65535);
  conf_addr_cleanup(&a);
  static const char *const bad[] = {
      ":443",     "x",       "x:",      "x:0",      "x:65536", "x:8o",   "[::1]",  "[::1]:",
      "[::1:80",  "::1:80",  "[1.2.3.4]:80", "1.2.3:80", "a b:80",  "a..b:80", "x:+80", "[]:80",
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(bad); i++) {
    if (conf_parse_addr(&a, bad[i], 1) == 0) fprintf(stderr, "accepted \"%s\"\n", bad[i]);
    ASSERT_EQ(conf_parse_addr(&a, bad[i], 1), -1);
    ASSERT_NULL(a.text);
  }
  conf_addr_cleanup(NULL);
}

static void test_host_patterns(void) {
  char label63[64], long_name[260];
  memset(label63, 'a', 63);
  label63[63] = '\0';
  /* 4 labels of 63 and dots: 255 bytes, over the limit of 253. */
  snprintf(long_name, sizeof(long_name), "%s.%s.%s.%s", label63, label63, label63, label63);
  static const char *const good[] = {"example.com", "*.example.com", "a-b.c", "xn--80ak6aa92e.com",
                                     "localhost",   "1.example",     "*.com"};
  for (size_t i = 0; i < GH_ARRAY_LEN(good); i++) ASSERT_EQ(conf_host_pattern_valid(good[i]), 1);
  ASSERT_EQ(conf_host_pattern_valid(label63), 1);
  const char *bad[] = {"*",   "",      "Example.com", "*.*.com", "a*.com", "*a.com", "-a.com",
                       "a-.com", "a..b", ".a",        "a.",      "a b",    "a_b",    "*.",
                       long_name, NULL};
  char label64[66];
  memset(label64, 'a', 64);
  label64[64] = '\0';
  bad[GH_ARRAY_LEN(bad) - 1] = label64;
  for (size_t i = 0; i < GH_ARRAY_LEN(bad); i++) {
    if (conf_host_pattern_valid(bad[i])) fprintf(stderr, "accepted \"%s\"\n", bad[i]);
    ASSERT_EQ(conf_host_pattern_valid(bad[i]), 0);
  }
  ASSERT_EQ(conf_host_pattern_valid(NULL), 0);
}

static int match(const char *pattern, const char *name) {
  return conf_host_match(pattern, name, strlen(name));
}

static void test_host_match(void) {
  ASSERT_EQ(match("example.com", "example.com"), 1);
  ASSERT_EQ(match("example.com", "www.example.com"), 0);
  ASSERT_EQ(match("example.com", "example.co"), 0);
  ASSERT_EQ(match("*.example.com", "www.example.com"), 1);
  ASSERT_EQ(match("*.example.com", "example.com"), 0);
  ASSERT_EQ(match("*.example.com", "a.b.example.com"), 0);
  ASSERT_EQ(match("*.example.com", ".example.com"), 0);
  ASSERT_EQ(match("*.example.com", "wwwexample.com"), 0);
  ASSERT_EQ(match("*", "anything.at.all"), 1);
  ASSERT_EQ(match("*", ""), 0);
  /* Only |name_len| bytes count. */
  ASSERT_EQ(conf_host_match("a.test", "a.test.evil", 6), 1);
  ASSERT_EQ(conf_host_match("a.test", "a.tes", 5), 0);
  ASSERT_EQ(conf_host_match(NULL, "a", 1), 0);
}

/* --- quick mode --- */

/* quick_parse runs |args| through quick mode and then the validator, as
 * `gatehouse proxy` does. Returns the configuration, or NULL with |*err|
 * set by whichever step failed. */
static conf_t *quick_parse_env(const char *const *args, int argc, char *const *envp, int *print,
                               char **err) {
  conf_quick_info_t info;
  cJSON *doc = conf_quick_json(err, &info, argc, (char **)args, envp);
  *print = info.print_config;
  gh_free(info.warnings);
  if (doc == NULL) return NULL;
  char *text = cJSON_Print(doc);
  cJSON_Delete(doc);
  conf_t *c = conf_parse(err, info.source, text, strlen(text));
  cJSON_free(text);
  return c;
}

static conf_t *quick_parse(const char *const *args, int argc, int *print, char **err) {
  return quick_parse_env(args, argc, NULL, print, err);
}

static void test_quick_full(void) {
  const char *args[] = {"--to", "127.0.0.1:9001", "--to=127.0.0.1:9002", "--from", "a.test",
                        "--from", "b.test", "--https", "127.0.0.1:8443", "--https",
                        "[::1]:8443", "--http2", "off", "--http",
                        "127.0.0.1:8080", "--cert", CERT, "--key", KEY, "--workers", "3",
                        "--no-resumption", "--access-log", "off", "--log-level", "debug",
                        "--print-config"};
  char *err = NULL;
  int print = -1;
  conf_t *c = quick_parse(args, (int)GH_ARRAY_LEN(args), &print, &err);
  ASSERT_NULL(err);
  ASSERT_EQ(print, 1);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(c->num_sites, 1);
  ASSERT_EQ(c->sites[0].num_hosts, 2);
  ASSERT_STR_EQ(c->sites[0].hosts[1], "b.test");
  ASSERT_FALSE(c->sites[0].is_default);
  ASSERT_EQ(c->sites[0].group.num_addrs, 2);
  ASSERT_EQ(c->sites[0].group.addrs[1].port, 9002);
  ASSERT_STR_EQ(c->sites[0].cert_file, CERT);
  ASSERT_EQ(c->num_https, 2);
  ASSERT_EQ(c->https[0].port, 8443);
  ASSERT_STR_EQ(c->https[1].host, "::1");
  /* --http2 off: every --https listener, HTTP/1.1 only. */
  ASSERT_EQ(c->https[0].http2, 0);
  ASSERT_EQ(c->https[1].http2, 0);
  ASSERT_EQ(c->num_http, 1);
  ASSERT_EQ(c->http[0].port, 8080);
  ASSERT_EQ(c->workers, 3);
  ASSERT_FALSE(c->tls.resumption);
  ASSERT_EQ(c->access_log, CONF_ACCESS_OFF);
  ASSERT_EQ(c->log_level, 0);
  conf_free(c);
}

static void test_quick_defaults(void) {
  const char *args[] = {"--to", "127.0.0.1:9001", "--cert", CERT, "--key", KEY};
  char *err = NULL;
  int print = -1;
  conf_t *c = quick_parse(args, (int)GH_ARRAY_LEN(args), &print, &err);
  ASSERT_NULL(err);
  ASSERT_EQ(print, 0);
  ASSERT_NOT_NULL(c);
  /* No --from: one default site that answers any name. */
  ASSERT_EQ(c->sites[0].num_hosts, 1);
  ASSERT_STR_EQ(c->sites[0].hosts[0], "*");
  ASSERT_TRUE(c->sites[0].is_default);
  ASSERT_STR_EQ(c->https[0].text, ":443");
  ASSERT_EQ(c->https[0].http2, 1); /* --http2 on by default */
  ASSERT_STR_EQ(c->http[0].text, ":80");
  ASSERT_TRUE(c->tls.resumption);
  conf_free(c);
  /* Only --https given: --http keeps its own default. */
  const char *args2[] = {"--to", "127.0.0.1:9001", "--cert", CERT, "--key", KEY,
                         "--https", "[::1]:8443", "--workers", "auto"};
  c = quick_parse(args2, (int)GH_ARRAY_LEN(args2), &print, &err);
  ASSERT_NULL(err);
  ASSERT_NOT_NULL(c);
  ASSERT_STR_EQ(c->https[0].host, "::1");
  ASSERT_STR_EQ(c->http[0].text, ":80");
  conf_free(c);
  /* --http2 on, said explicitly, on the default listener. */
  const char *args3[] = {"--to", "127.0.0.1:9001", "--cert", CERT, "--key", KEY, "--http2=ON"};
  c = quick_parse(args3, (int)GH_ARRAY_LEN(args3), &print, &err);
  ASSERT_NULL(err);
  ASSERT_NOT_NULL(c);
  ASSERT_STR_EQ(c->https[0].text, ":443");
  ASSERT_EQ(c->https[0].http2, 1);
  conf_free(c);
}

static void test_quick_acme(void) {
  const char *args[] = {"--to", "127.0.0.1:1", "--from", "a.test", "--acme-directory",
                        "https://ca.test/dir", "--acme-ca-root", CERT, "--email", "ops@a.test",
                        "--storage", "/tmp/gh-quick-store", "--challenge", "http-01",
                        "--challenge", "tls-alpn-01"};
  char *err = NULL;
  int print = -1;
  conf_t *c = quick_parse(args, (int)GH_ARRAY_LEN(args), &print, &err);
  if (c == NULL) fprintf(stderr, "%s\n", err);
  ASSERT_NOT_NULL(c);
  ASSERT_STR_EQ(c->acme.directory, "https://ca.test/dir");
  ASSERT_STR_EQ(c->acme.email, "ops@a.test");
  ASSERT_EQ(c->acme.num_ca_roots, 1);
  ASSERT_EQ(c->acme.num_challenges, 2);
  ASSERT_EQ(c->acme.challenges[0], CONF_CHALLENGE_HTTP_01);
  ASSERT_EQ(c->acme.challenges[1], CONF_CHALLENGE_TLS_ALPN_01);
  ASSERT_STR_EQ(c->storage, "/tmp/gh-quick-store");
  ASSERT_NULL(c->sites[0].cert_file);
  conf_free(c);
}

/* acme.issuers: CAs in order, each taking acme's keys it leaves unset;
 * a single "directory" is a list of one. */
static void test_issuers(void) {
  char *err = NULL;
  conf_t *c = parse(&err, "{'acme': {'email': 'ops@a.test', 'profile': 'classic', 'issuers': ["
                          "{'directory': 'https://one.test/dir', 'name': 'one', "
                          "'eab': {'key_id': 'k', 'hmac_key': 'abc'}}, "
                          "{'directory': 'https://two.test:8443/dir', 'email': 'b@a.test', "
                          "'profile': 'shortlived', 'preferred_chain': 'Root X'}]}, "
                          ONE_SITE("") "}");
  if (c == NULL) fprintf(stderr, "%s\n", err);
  ASSERT_NOT_NULL(c);
  ASSERT_TRUE(conf_acme_on(c));
  ASSERT_EQ(conf_num_issuers(c), 2);
  conf_issuer_t is;
  conf_issuer(c, 0, &is);
  ASSERT_STR_EQ(is.name, "one");
  ASSERT_STR_EQ(is.directory, "https://one.test/dir");
  ASSERT_STR_EQ(is.email, "ops@a.test");
  ASSERT_STR_EQ(is.profile, "classic");
  ASSERT_STR_EQ(is.eab_key_id, "k");
  conf_issuer(c, 1, &is);
  ASSERT_NULL(is.name);
  ASSERT_STR_EQ(is.email, "b@a.test");
  ASSERT_STR_EQ(is.profile, "shortlived");
  ASSERT_STR_EQ(is.preferred_chain, "Root X");
  ASSERT_NULL(is.eab_key_id);
  /* It prints and reads back the same. */
  cJSON *j = conf_to_json(c);
  char *text = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  conf_t *again = conf_parse(&err, "printed.json", text, strlen(text));
  if (again == NULL) fprintf(stderr, "%s\n", err);
  ASSERT_NOT_NULL(again);
  ASSERT_EQ(conf_num_issuers(again), 2);
  conf_free(again);
  free(text);
  conf_free(c);

  c = parse(&err, "{'acme': {'directory': 'https://ca.test/dir', 'email': 'x@a.test'}, "
                  ONE_SITE("") "}");
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(conf_num_issuers(c), 1);
  conf_issuer(c, 0, &is);
  ASSERT_STR_EQ(is.directory, "https://ca.test/dir");
  ASSERT_STR_EQ(is.email, "x@a.test");
  conf_free(c);
  c = parse(&err, "{" ONE_SITE("") "}");
  if (c == NULL) fprintf(stderr, "%s\n", err);
  ASSERT_NOT_NULL(c);
  ASSERT_FALSE(conf_acme_on(c));
  ASSERT_EQ(conf_num_issuers(c), 0);
  conf_free(c);
}

static void test_quick_errors(void) {
  static const struct {
    const char *args[6];
    int argc;
    const char *want;
  } cases[] = {
      {{"--to", "127.0.0.1:1", "--form", "a.test"}, 4,
       "unknown flag \"--form\"; did you mean \"--from\"?"},
      {{"--to", "127.0.0.1:1", "--bogus-flag"}, 3, "unknown flag \"--bogus-flag\""},
      {{"--to"}, 1, "--to needs a value (ADDR)"},
      {{"--to", "127.0.0.1:1", "--log-level"}, 3, "--log-level needs a value"},
      {{"--from", "a.test"}, 2, "--to ADDR (or GATEHOUSE_UPSTREAM) is required"},
      {{"--to", "127.0.0.1:1", "--workers", "2", "--workers", "3"}, 6, "--workers given twice"},
      {{"--to", "127.0.0.1:1", "--no-resumption=yes"}, 3, "--no-resumption takes no value"},
      {{"--to", "127.0.0.1:1", "--http2"}, 3, "--http2 needs a value (on|off)"},
      {{"--to", "127.0.0.1:1", "--http2", "maybe"}, 4,
       "--http2: expected 1, true, yes or on (or 0, false, no, off), got \"maybe\""},
      {{"--to", "127.0.0.1:1", "--http2", "on", "--http2", "off"}, 6, "--http2 given twice"},
      {{"--to", "127.0.0.1:1", "stray"}, 3, "unexpected argument \"stray\""},
      {{"--to", "127.0.0.1:1", "--cert", "c.pem"}, 4, "--cert needs --key FILE (or GATEHOUSE_KEY)"},
      {{"--to", "127.0.0.1:1", "--key", "k.pem"}, 4, "--key needs --cert FILE (or GATEHOUSE_CERT)"},
      {{"--to", "127.0.0.1:1"}, 2, "--cert FILE (or GATEHOUSE_CERT) and --key FILE (or GATEHOUSE_KEY) are required"},
      {{"--to", "127.0.0.1:1", "--acme-directory", "https://ca.test/dir"}, 4,
       "name the hosts to obtain certificates for with --from NAME (or GATEHOUSE_HOSTS)"},
      {{"--to", "127.0.0.1:1", "--email", "a@b.test"}, 4, "--email needs --acme-directory URL (or GATEHOUSE_ACME_DIRECTORY)"},
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(cases); i++) {
    char *err = NULL;
    int print = -1;
    conf_t *c = quick_parse(cases[i].args, cases[i].argc, &print, &err);
    ASSERT_NULL(c);
    ASSERT_NOT_NULL(err);
    if (strstr(err, cases[i].want) == NULL) fprintf(stderr, "quick case %zu\n", i);
    char *copy = gh_strdup(err);
    gh_free(err);
    ASSERT_CONTAINS(copy, cases[i].want);
    gh_free(copy);
  }
  /* Bad values get through the flags and are caught by the validator. */
  const char *args[] = {"--to", "localhost", "--from", "A.test", "--cert", CERT, "--key", KEY,
                        "--workers", "0", "--access-log", "xml"};
  char *err = NULL;
  int print = -1;
  conf_t *c = quick_parse(args, (int)GH_ARRAY_LEN(args), &print, &err);
  ASSERT_NULL(c);
  ASSERT_CONTAINS(err, "<command line>: sites[0].upstreams[0]: expected an address");
  ASSERT_CONTAINS(err, "<command line>: sites[0].hosts[0]:");
  ASSERT_CONTAINS(err, "<command line>: workers: expected \"auto\"");
  ASSERT_CONTAINS(err, "<command line>: log.access: expected one of");
  gh_free(err);
}

/* The environment stands in for every flag the command line leaves out. */
static void test_quick_env(void) {
  char *const env[] = {"GATEHOUSE_UPSTREAM=127.0.0.1:9001, 127.0.0.1:9002",
                       "GATEHOUSE_HOSTS= a.test\tb.test ",
                       "GATEHOUSE_CERT=" CERT,
                       "GATEHOUSE_KEY=" KEY,
                       "GATEHOUSE_WORKERS=3",
                       "GATEHOUSE_NO_RESUMPTION=yes",
                       "GATEHOUSE_PRINT_CONFIG=0",
                       "GATEHOUSE_ADMIN=127.0.0.1:2019",
                       "GATEHOUSE_ADMIN_TOKEN=t",
                       "GATEHOUSE_HTTPS=:8443 127.0.0.1:9443",
                       "GATEHOUSE_HTTP2=no",
                       "GATEHOUSE_ACCESS_LOG=",
                       "PATH=/usr/bin",
                       NULL};
  char *err = NULL;
  int print = -1;
  conf_t *c = quick_parse_env(NULL, 0, env, &print, &err);
  if (c == NULL) fprintf(stderr, "%s\n", err);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(print, 0);
  ASSERT_EQ(c->sites[0].group.num_addrs, 2);
  ASSERT_EQ(c->sites[0].group.addrs[1].port, 9002);
  ASSERT_EQ(c->sites[0].num_hosts, 2);
  ASSERT_STR_EQ(c->sites[0].hosts[1], "b.test");
  ASSERT_EQ(c->workers, 3);
  ASSERT_FALSE(c->tls.resumption);
  ASSERT_NOT_NULL(c->admin);
  ASSERT_EQ(c->admin->port, 2019);
  ASSERT_EQ(c->access_log, CONF_ACCESS_JSON); /* empty = unset = the default */
  ASSERT_EQ(c->num_https, 2);
  ASSERT_EQ(c->https[0].http2, 0);
  ASSERT_EQ(c->https[1].http2, 0);
  conf_free(c);

  /* A flag overrides its variable, a list as a whole. */
  const char *args[] = {"--to", "127.0.0.1:7000", "--workers", "1"};
  c = quick_parse_env(args, 4, env, &print, &err);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(c->sites[0].group.num_addrs, 1);
  ASSERT_EQ(c->sites[0].group.addrs[0].port, 7000);
  ASSERT_EQ(c->workers, 1);
  ASSERT_EQ(c->sites[0].num_hosts, 2);
  conf_free(c);
  const char *h2_on[] = {"--http2", "1"};
  c = quick_parse_env(h2_on, 2, env, &print, &err);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ(c->https[1].http2, 1);
  conf_free(c);

  /* Errors name the variable the value came from. */
  char *const bad_switch[] = {"GATEHOUSE_UPSTREAM=127.0.0.1:1", "GATEHOUSE_NO_RESUMPTION=maybe",
                              NULL};
  ASSERT_NULL(quick_parse_env(NULL, 0, bad_switch, &print, &err));
  ASSERT_CONTAINS(err, "GATEHOUSE_NO_RESUMPTION: expected 1, true, yes or on");
  ASSERT_CONTAINS(err, "\"maybe\"");
  gh_free(err);
  char *const bad_http2[] = {"GATEHOUSE_UPSTREAM=127.0.0.1:1", "GATEHOUSE_CERT=" CERT,
                             "GATEHOUSE_KEY=" KEY, "GATEHOUSE_HTTP2=h2", NULL};
  ASSERT_NULL(quick_parse_env(NULL, 0, bad_http2, &print, &err));
  ASSERT_CONTAINS(err, "GATEHOUSE_HTTP2: expected 1, true, yes or on (or 0, false, no, off), got "
                       "\"h2\"");
  gh_free(err);
  char *const lone_email[] = {"GATEHOUSE_UPSTREAM=127.0.0.1:1", "GATEHOUSE_EMAIL=a@b.test", NULL};
  ASSERT_NULL(quick_parse_env(NULL, 0, lone_email, &print, &err));
  ASSERT_CONTAINS(err, "GATEHOUSE_EMAIL needs --acme-directory URL (or GATEHOUSE_ACME_DIRECTORY)");
  gh_free(err);
  char *const bad_value[] = {"GATEHOUSE_UPSTREAM=nowhere", "GATEHOUSE_CERT=" CERT,
                             "GATEHOUSE_KEY=" KEY, NULL};
  ASSERT_NULL(quick_parse_env(NULL, 0, bad_value, &print, &err));
  ASSERT_CONTAINS(err, "<environment>: sites[0].upstreams[0]: expected an address");
  gh_free(err);
  char *const empty[] = {"GATEHOUSE_UPSTREAM=", NULL};
  ASSERT_NULL(quick_parse_env(NULL, 0, empty, &print, &err));
  ASSERT_CONTAINS(err, "--to ADDR (or GATEHOUSE_UPSTREAM) is required");
  gh_free(err);
}

/* NAME_FILE: the value from a file, for secrets mounted as files. */
static void test_quick_env_file(void) {
  const char *path = "/tmp/gh-test-conf-secret";
  FILE *f = fopen(path, "w");
  ASSERT_NOT_NULL(f);
  fputs("s3cret-token\n", f);
  fclose(f);
  char *const env[] = {"GATEHOUSE_UPSTREAM=127.0.0.1:1", "GATEHOUSE_CERT=" CERT,
                       "GATEHOUSE_KEY=" KEY, "GATEHOUSE_ADMIN=127.0.0.1:2019",
                       "GATEHOUSE_ADMIN_TOKEN_FILE=/tmp/gh-test-conf-secret", NULL};
  char *err = NULL;
  int print = -1;
  conf_t *c = quick_parse_env(NULL, 0, env, &print, &err);
  if (c == NULL) fprintf(stderr, "%s\n", err);
  ASSERT_NOT_NULL(c);
  ASSERT_STR_EQ(c->admin_token, "s3cret-token");
  conf_free(c);
  char *const both[] = {"GATEHOUSE_UPSTREAM=127.0.0.1:1", "GATEHOUSE_UPSTREAM_FILE=/tmp/gh-test-conf-secret",
                        NULL};
  ASSERT_NULL(quick_parse_env(NULL, 0, both, &print, &err));
  ASSERT_CONTAINS(err, "GATEHOUSE_UPSTREAM and GATEHOUSE_UPSTREAM_FILE are both set");
  gh_free(err);
  unlink(path);
  char *const missing[] = {"GATEHOUSE_UPSTREAM=127.0.0.1:1",
                           "GATEHOUSE_EAB_HMAC_KEY_FILE=/nonexistent/secret", NULL};
  ASSERT_NULL(quick_parse_env(NULL, 0, missing, &print, &err));
  ASSERT_CONTAINS(err, "GATEHOUSE_EAB_HMAC_KEY_FILE: cannot read \"/nonexistent/secret\": No such "
                       "file or directory");
  gh_free(err);
  /* NAME_FILE of a real variable draws no warning. */
  conf_quick_info_t info;
  char *const ok[] = {"GATEHOUSE_UPSTREAM=127.0.0.1:1", "GATEHOUSE_EMAIL_FILE=", NULL};
  const char *args[] = {"--cert", CERT, "--key", KEY};
  cJSON *doc = conf_quick_json(&err, &info, 4, (char **)args, ok);
  ASSERT_NOT_NULL(doc);
  cJSON_Delete(doc);
  ASSERT_NULL(info.warnings);
}

/* A GATEHOUSE_* variable no flag stands for is named in a warning. */
static void test_quick_env_warnings(void) {
  char *const env[] = {"GATEHOUSE_UPSTRAEM=127.0.0.1:1", "GATEHOUSE_SOMETHING_ELSE=1",
                       "GATEHOUSE_BIN=/usr/bin/x",
                       "GATEHOUSE_UPSTREAM=127.0.0.1:1", NULL};
  conf_quick_info_t info;
  char *err = NULL;
  const char *args[] = {"--cert", CERT, "--key", KEY};
  cJSON *doc = conf_quick_json(&err, &info, 4, (char **)args, env);
  ASSERT_NOT_NULL(doc);
  cJSON_Delete(doc);
  ASSERT_STR_EQ(info.source, "<command line and environment>");
  ASSERT_NOT_NULL(info.warnings);
  ASSERT_CONTAINS(info.warnings, "GATEHOUSE_UPSTRAEM is not a gatehouse variable (ignored); did "
                                 "you mean GATEHOUSE_UPSTREAM?");
  ASSERT_CONTAINS(info.warnings, "GATEHOUSE_SOMETHING_ELSE is not a gatehouse variable (ignored)\n");
  /* Nothing near: no suggestion ("BIN" is not "KEY"). */
  ASSERT_CONTAINS(info.warnings, "GATEHOUSE_BIN is not a gatehouse variable (ignored)\n");
  gh_free(info.warnings);
}

int main(void) {
  RUN(test_examples_validate_and_round_trip);
  RUN(test_full_example_matches_readme);
  RUN(test_full_example_values);
  RUN(test_relative_config_path);
  RUN(test_admin_unix);
  RUN(test_cpu_max);
  RUN(test_hsts_string);
  RUN(test_client_auth);
  RUN(test_defaults);
  RUN(test_rate_defaults_follow_ask);
  RUN(test_listen_defaults_only_when_absent);
  RUN(test_listen_https_objects);
  RUN(test_proxy_protocol_and_trusted_proxies);
  RUN(test_upstream_read_old_name);
  RUN(test_log_files);
  RUN(test_valid_variants);
  RUN(test_rfc2136);
  RUN(test_invalid_documents);
  RUN(test_every_error_is_reported);
  RUN(test_syntax_errors);
  RUN(test_load_errors);
  RUN(test_durations);
  RUN(test_addresses);
  RUN(test_host_patterns);
  RUN(test_host_match);
  RUN(test_quick_full);
  RUN(test_quick_defaults);
  RUN(test_issuers);
  RUN(test_quick_errors);
  RUN(test_quick_env);
  RUN(test_quick_env_warnings);
  RUN(test_quick_env_file);
  RUN(test_quick_acme);
  TEST_EXIT();
}
