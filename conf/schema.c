/* schema.c: the configuration schema as tables, one per JSON object (see
 * internal.h). README.md ("Configuration") documents the same keys and
 * defaults; change both together. A row reads: key, type, where it is
 * stored, then its default (JSON text, the same syntax as in a file),
 * flags, range and type argument. */
#include <stddef.h>

#include "common/common.h"
#include "common/log.h"
#include "conf/conf.h"
#include "conf/internal.h"

/* FLD names a scalar field; LIST a pointer and its element count. */
#define FLD(st, f) .off = offsetof(st, f), .size = sizeof(((st *)0)->f)
#define LIST(st, f, n) .off = offsetof(st, f), .num_off = offsetof(st, n)
#define Q(s) "\"" s "\""
#define TABLE(r, ...) {.rows = r, .num_rows = GH_ARRAY_LEN(r), __VA_ARGS__}

#define REQUIRED CONF__REQUIRED
#define POSITIVE CONF__POSITIVE

/* The enum tables list names in C enum order: the index is the value. */
_Static_assert(CONF_BALANCE_LEAST_CONN == 1, "balance names");
_Static_assert(CONF_KEY_RSA2048 == 2, "key type names");
_Static_assert(CONF_CHALLENGE_DNS_01 == 2, "challenge names");
_Static_assert(CONF_ACCESS_COMBINED == 2 && CONF_ACCESS_OFF == 0, "access log names");
_Static_assert(CONF_CLIENT_AUTH_OPTIONAL == 1, "client_auth mode names");
_Static_assert(GH_LOG_ERROR == 3 && GH_LOG_JSON == 1, "log names");

static const char *const balance_names[] = {"round_robin", "least_conn"};
static const conf__enum_t balance_enum = {balance_names, 2};
static const char *const key_type_names[] = {"p256", "p384", "rsa2048"};
static const conf__enum_t key_type_enum = {key_type_names, 3};
static const char *const challenge_names[] = {"tls-alpn-01", "http-01", "dns-01"};
static const conf__enum_t challenge_enum = {challenge_names, 3};
static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const conf__enum_t level_enum = {level_names, 4};
static const char *const format_names[] = {"text", "json"};
static const conf__enum_t format_enum = {format_names, 2};
static const char *const access_names[] = {"off", "json", "combined"};
static const conf__enum_t access_enum = {access_names, 3};
static const char *const client_auth_mode_names[] = {"required", "optional"};
static const conf__enum_t client_auth_mode_enum = {client_auth_mode_names, 2};

/* --- sites --- */

static const conf__row_t health_rows[] = {
    {"path", &conf__t_url_path, FLD(conf_health_t, path), .flags = REQUIRED},
    {"interval", &conf__t_duration, FLD(conf_health_t, interval_ms), .def = Q("10s"), .flags = POSITIVE},
    {"timeout", &conf__t_duration, FLD(conf_health_t, timeout_ms), .def = Q("2s"), .flags = POSITIVE},
};
static const conf__table_t health_table = TABLE(health_rows, .check = conf__check_health);

static const conf__row_t keepalive_rows[] = {
    {"max_idle", &conf__t_count, FLD(conf_upstream_group_t, max_idle), .def = "64", .max = 100000},
    {"idle_timeout", &conf__t_duration, FLD(conf_upstream_group_t, idle_timeout_ms), .def = Q("60s"),
     .flags = POSITIVE},
};
static const conf__table_t keepalive_table = TABLE(keepalive_rows);

/* An entry of "upstreams" written as an object; a string entry S stands
 * for {"address": S}. */
static const char *const protocol_names[] = {"http/1.1", "h2", "h2c"};
static const conf__enum_t protocol_enum = {protocol_names, 3};
_Static_assert(CONF_UP_H2C == 2, "protocol names");

static const conf__row_t upstream_rows[] = {
    {"address", &conf__t_addr_here, .off = 0, .flags = REQUIRED | CONF__SCHEME},
    {"protocol", &conf__t_enum, FLD(conf_addr_t, protocol), .def = Q("http/1.1"),
     .arg = &protocol_enum},
    {"ca", &conf__t_file_list, LIST(conf_addr_t, tls_ca, num_tls_ca), .def = "[]"},
    {"server_name", &conf__t_string, FLD(conf_addr_t, server_name)},
    {"client_cert", &conf__t_file, FLD(conf_addr_t, tls_cert)},
    {"client_key", &conf__t_file, FLD(conf_addr_t, tls_key)},
    {"insecure_skip_verify", &conf__t_bool, FLD(conf_addr_t, insecure_skip_verify), .def = "false"},
    {"send_proxy_protocol", &conf__t_bool, FLD(conf_addr_t, send_proxy), .def = "false"},
};
static const conf__table_t upstream_table = TABLE(upstream_rows, .check = conf__check_upstream);

/* The keys of an upstream group, shared by sites and routes. */
#define GROUP_ROWS(st, g, upstream_flags)                                                       \
  {"upstreams", &conf__t_addr_list, LIST(st, g.addrs, g.num_addrs),                             \
   .flags = CONF__NONEMPTY | CONF__SCHEME | (upstream_flags), .arg = &upstream_table},          \
      {"balance", &conf__t_enum, FLD(st, g.balance), .def = Q("round_robin"), .arg = &balance_enum}, \
      {"health_check", &conf__t_object, .off = offsetof(st, g.health), .arg = &health_table},   \
      {"fail_backoff", &conf__t_duration, FLD(st, g.fail_backoff_ms), .def = Q("10s")},         \
      {"keepalive", &conf__t_object, .off = offsetof(st, g), .arg = &keepalive_table}

static const conf__row_t route_rows[] = {
    {"path", &conf__t_url_path, FLD(conf_route_t, path_prefix), .flags = REQUIRED},
    GROUP_ROWS(conf_route_t, group, REQUIRED),
};
static const conf__table_t route_table = TABLE(route_rows);

static const conf__row_t site_tls_rows[] = {
    {"cert", &conf__t_file, FLD(conf_site_t, cert_file), .flags = REQUIRED},
    {"key", &conf__t_file, FLD(conf_site_t, key_file), .flags = REQUIRED},
};
static const conf__table_t site_tls_table = TABLE(site_tls_rows);

static const conf__row_t hsts_rows[] = {
    {"max_age", &conf__t_duration, FLD(conf_site_t, hsts_max_age_s),
     .flags = REQUIRED | POSITIVE | CONF__SECONDS},
    {"include_subdomains", &conf__t_bool, FLD(conf_site_t, hsts_include_subdomains), .def = "false"},
    {"preload", &conf__t_bool, FLD(conf_site_t, hsts_preload), .def = "false"},
};
static const conf__table_t hsts_table = TABLE(hsts_rows);

static const conf__row_t client_auth_rows[] = {
    {"ca", &conf__t_file_list, LIST(conf_client_auth_t, ca_files, num_ca_files),
     .flags = REQUIRED | CONF__NONEMPTY},
    {"mode", &conf__t_enum, FLD(conf_client_auth_t, mode), .def = Q("required"),
     .arg = &client_auth_mode_enum},
    {"subject_header", &conf__t_field_name, FLD(conf_client_auth_t, subject_header),
     .def = Q("X-Client-Subject")},
    {"fingerprint_header", &conf__t_field_name, FLD(conf_client_auth_t, fingerprint_header),
     .def = Q("X-Client-Cert-SHA256")},
};
/* Absent, the object still gets its default field names: every request
 * has them removed, client_auth or not. */
static const conf__table_t client_auth_table =
    TABLE(client_auth_rows, .has_present = 1, .present_off = offsetof(conf_client_auth_t, enabled),
          .check = conf__check_client_auth);

static const conf__row_t site_rows[] = {
    {"hosts", &conf__t_host_list, LIST(conf_site_t, hosts, num_hosts),
     .flags = REQUIRED | CONF__NONEMPTY | CONF__ANY_HOST},
    GROUP_ROWS(conf_site_t, group, 0),
    {"routes", &conf__t_object_list, LIST(conf_site_t, routes, num_routes),
     .size = sizeof(conf_route_t), .arg = &route_table},
    {"tls", &conf__t_object, .off = 0, .arg = &site_tls_table},
    {"default", &conf__t_bool, FLD(conf_site_t, is_default), .def = "false"},
    {"hsts", &conf__t_hsts, .off = 0, .arg = &hsts_table},
    {"max_body", &conf__t_size, FLD(conf_site_t, max_body), .def = "0", .max = 1ull << 50},
    {"client_auth", &conf__t_object, .off = offsetof(conf_site_t, client_auth),
     .arg = &client_auth_table},
    {"acme_profile", &conf__t_string, FLD(conf_site_t, acme_profile)},
};
static const conf__table_t site_table = TABLE(site_rows, .check = conf__check_site);

/* --- TLS, ACME, on-demand --- */

static const conf__row_t tls_rows[] = {
    {"resumption", &conf__t_bool, FLD(conf_tls_t, resumption), .def = "true"},
    {"ticket_rotation", &conf__t_duration, FLD(conf_tls_t, ticket_rotate_ms), .def = Q("12h"),
     .flags = POSITIVE},
};
static const conf__table_t tls_table = TABLE(tls_rows);

static const conf__row_t eab_rows[] = {
    {"key_id", &conf__t_string, FLD(conf_acme_t, eab_key_id), .flags = REQUIRED},
    {"hmac_key", &conf__t_base64url, FLD(conf_acme_t, eab_hmac_key), .flags = REQUIRED},
};
static const conf__table_t eab_table = TABLE(eab_rows);

static const conf__row_t issuer_eab_rows[] = {
    {"key_id", &conf__t_string, FLD(conf_issuer_t, eab_key_id), .flags = REQUIRED},
    {"hmac_key", &conf__t_base64url, FLD(conf_issuer_t, eab_hmac_key), .flags = REQUIRED},
};
static const conf__table_t issuer_eab_table = TABLE(issuer_eab_rows);

/* One CA of acme.issuers: the keys of "acme" that are about one CA. */
static const conf__row_t issuer_rows[] = {
    {"name", &conf__t_string, FLD(conf_issuer_t, name)},
    {"directory", &conf__t_url, FLD(conf_issuer_t, directory), .flags = REQUIRED},
    {"email", &conf__t_email, FLD(conf_issuer_t, email)},
    {"ca_roots", &conf__t_file_list, LIST(conf_issuer_t, ca_roots, num_ca_roots)},
    {"eab", &conf__t_object, .off = 0, .arg = &issuer_eab_table},
    {"preferred_chain", &conf__t_string, FLD(conf_issuer_t, preferred_chain)},
    {"profile", &conf__t_string, FLD(conf_issuer_t, profile)},
    {"caa_identities", &conf__t_host_list, LIST(conf_issuer_t, caa_identities, num_caa_identities),
     .flags = CONF__NO_WILDCARD},
};
static const conf__table_t issuer_table = TABLE(issuer_rows, .check = conf__check_issuer);
static const char *const tsig_alg_names[] = {"hmac-sha256", "hmac-sha512"};
static const conf__enum_t tsig_alg_enum = {tsig_alg_names, 2};
_Static_assert(CONF_TSIG_HMAC_SHA512 == 1, "TSIG algorithm names");

static const conf__row_t rfc2136_rows[] = {
    {"server", &conf__t_string, FLD(conf_rfc2136_t, server), .flags = REQUIRED},
    {"zone", &conf__t_string, FLD(conf_rfc2136_t, zone), .flags = REQUIRED},
    {"key_name", &conf__t_string, FLD(conf_rfc2136_t, key_name), .flags = REQUIRED},
    {"key_algorithm", &conf__t_enum, FLD(conf_rfc2136_t, key_algorithm), .def = Q("hmac-sha256"),
     .arg = &tsig_alg_enum},
    {"key_secret", &conf__t_base64, FLD(conf_rfc2136_t, key_secret), .flags = REQUIRED},
};
static const conf__table_t rfc2136_table =
    TABLE(rfc2136_rows, .has_present = 1, .present_off = offsetof(conf_rfc2136_t, enabled),
          .check = conf__check_rfc2136);

static const conf__row_t acme_dns_rows[] = {
    {"rfc2136", &conf__t_object, .off = offsetof(conf_acme_t, dns_rfc2136), .arg = &rfc2136_table},
};
static const conf__table_t acme_dns_table =
    TABLE(acme_dns_rows, .has_present = 1, .present_off = offsetof(conf_acme_t, dns_given));

static const conf__row_t acme_rows[] = {
    {"directory", &conf__t_url, FLD(conf_acme_t, directory)},
    {"issuers", &conf__t_object_list, LIST(conf_acme_t, issuers, num_issuers),
     .size = sizeof(conf_issuer_t), .flags = CONF__NONEMPTY, .max = 8, .arg = &issuer_table},
    {"email", &conf__t_email, FLD(conf_acme_t, email)},
    {"ca_roots", &conf__t_file_list, LIST(conf_acme_t, ca_roots, num_ca_roots), .def = "[]"},
    {"eab", &conf__t_object, .off = 0, .arg = &eab_table},
    {"challenges", &conf__t_enum_list, LIST(conf_acme_t, challenges, num_challenges),
     .def = "[" Q("tls-alpn-01") "," Q("http-01") "]", .flags = CONF__NONEMPTY,
     .max = GH_ARRAY_LEN(((conf_acme_t *)0)->challenges), .arg = &challenge_enum},
    {"key_type", &conf__t_enum, FLD(conf_acme_t, key_type), .def = Q("p256"), .arg = &key_type_enum},
    {"reuse_key", &conf__t_bool, FLD(conf_acme_t, reuse_key), .def = "false"},
    {"dns_hook", &conf__t_file, FLD(conf_acme_t, dns_hook), .flags = CONF__EXEC},
    {"dns_propagation_timeout", &conf__t_duration, FLD(conf_acme_t, dns_propagation_timeout_ms),
     .def = Q("2m"), .flags = POSITIVE},
    {"dns_resolvers", &conf__t_addr_list, LIST(conf_acme_t, dns_resolvers, num_dns_resolvers),
     .def = "[]", .flags = CONF__IP_HOST, .max = 8},
    {"dns", &conf__t_object, .off = 0, .arg = &acme_dns_table},
    {"preferred_chain", &conf__t_string, FLD(conf_acme_t, preferred_chain)},
    {"profile", &conf__t_string, FLD(conf_acme_t, profile)},
    {"caa_identities", &conf__t_host_list, LIST(conf_acme_t, caa_identities, num_caa_identities),
     .def = "[]", .flags = CONF__NO_WILDCARD},
    {"caa_check", &conf__t_bool, FLD(conf_acme_t, caa_check), .def = "true"},
};
static const conf__table_t acme_table =
    TABLE(acme_rows, .has_present = 1, .present_off = offsetof(conf_acme_t, present),
          .check = conf__check_acme);

static const conf__row_t rate_rows[] = {
    {"global", &conf__t_rate, FLD(conf_on_demand_t, rate_global), .def = Q("300/3h")},
    /* No default here: conf__check_on_demand sets one only without "ask". */
    {"per_domain", &conf__t_rate, FLD(conf_on_demand_t, rate_per_domain)},
    {"per_client_ip", &conf__t_rate, FLD(conf_on_demand_t, rate_per_client_ip)},
};
static const conf__table_t rate_table = TABLE(rate_rows);

static const conf__row_t on_demand_rows[] = {
    {"allow", &conf__t_host_list, LIST(conf_on_demand_t, allow, num_allow), .def = "[]",
     .flags = CONF__ANY_HOST},
    {"ask", &conf__t_url, FLD(conf_on_demand_t, ask)},
    {"ask_timeout", &conf__t_duration, FLD(conf_on_demand_t, ask_timeout_ms), .def = Q("3s"),
     .flags = POSITIVE},
    {"ask_cache_ttl", &conf__t_duration, FLD(conf_on_demand_t, ask_cache_ttl_ms), .def = Q("1h")},
    {"ask_negative_ttl", &conf__t_duration, FLD(conf_on_demand_t, ask_negative_ttl_ms),
     .def = Q("5m")},
    {"allow_ip", &conf__t_bool, FLD(conf_on_demand_t, allow_ip), .def = "false"},
    {"max_labels", &conf__t_count, FLD(conf_on_demand_t, max_labels), .def = "10", .min = 1,
     .max = 127},
    {"rate_limits", &conf__t_object, .off = 0, .arg = &rate_table},
    {"public_suffixes", &conf__t_host_list, LIST(conf_on_demand_t, public_suffixes, num_public_suffixes),
     .def = "[]", .flags = CONF__NO_WILDCARD},
    {"max_pending_names", &conf__t_count, FLD(conf_on_demand_t, max_pending_names), .def = "100",
     .min = 1, .max = 1000000},
    {"max_paused_handshakes", &conf__t_count, FLD(conf_on_demand_t, max_paused_handshakes),
     .def = "10000", .min = 1, .max = 10000000},
    {"wait_budget", &conf__t_duration, FLD(conf_on_demand_t, wait_budget_ms), .def = Q("30s"),
     .flags = POSITIVE},
    {"cache_capacity", &conf__t_count, FLD(conf_on_demand_t, cache_capacity), .def = "10000",
     .min = 1, .max = 100000000},
    {"negative_ttl", &conf__t_duration, FLD(conf_on_demand_t, negative_ttl_ms), .def = Q("5m")},
};
static const conf__table_t on_demand_table =
    TABLE(on_demand_rows, .has_present = 1, .present_off = offsetof(conf_on_demand_t, enabled),
          .check = conf__check_on_demand);

/* --- the rest of the top level --- */

/* An entry of listen.https or listen.http written as an object; a string
 * entry S stands for {"address": S}. */
#define PROXY_PROTOCOL_ROWS                                                                  \
  {"proxy_protocol", &conf__t_bool, FLD(conf_addr_t, proxy_protocol), .def = "false"},     \
      {"proxy_trusted", &conf__t_cidr_list, LIST(conf_addr_t, proxy_trusted, num_proxy_trusted)}

static const conf__row_t https_listener_rows[] = {
    {"address", &conf__t_addr_here, .off = 0, .flags = REQUIRED | CONF__LISTENER},
    {"http2", &conf__t_bool, FLD(conf_addr_t, http2), .def = "true"},
    PROXY_PROTOCOL_ROWS,
};
static const conf__table_t https_listener_table =
    TABLE(https_listener_rows, .check = conf__check_listener);

static const conf__row_t http_listener_rows[] = {
    {"address", &conf__t_addr_here, .off = 0, .flags = REQUIRED | CONF__LISTENER},
    PROXY_PROTOCOL_ROWS,
};
static const conf__table_t http_listener_table =
    TABLE(http_listener_rows, .check = conf__check_listener);

static const conf__row_t listen_rows[] = {
    {"https", &conf__t_addr_list, LIST(conf_t, https, num_https),
     .flags = CONF__LISTENER | CONF__ONE_OR_LIST, .arg = &https_listener_table},
    {"http", &conf__t_addr_list, LIST(conf_t, http, num_http),
     .flags = CONF__LISTENER | CONF__ONE_OR_LIST, .arg = &http_listener_table},
};
static const conf__table_t listen_table = TABLE(listen_rows, .check = conf__check_listen);

static const conf__row_t admin_rows[] = {
    {"listen", &conf__t_addr, .off = offsetof(conf_t, admin),
     .flags = REQUIRED | CONF__LISTENER | CONF__UNIX},
    {"token", &conf__t_string, FLD(conf_t, admin_token)},
    {"insecure_no_token", &conf__t_bool, FLD(conf_t, admin_insecure_no_token), .def = "false"},
};
static const conf__table_t admin_table = TABLE(admin_rows, .check = conf__check_admin);

static const conf__row_t timeouts_rows[] = {
    {"handshake", &conf__t_duration, FLD(conf_timeouts_t, handshake_ms), .def = Q("10s"),
     .flags = POSITIVE},
    {"header_read", &conf__t_duration, FLD(conf_timeouts_t, header_read_ms), .def = Q("10s"),
     .flags = POSITIVE},
    {"idle", &conf__t_duration, FLD(conf_timeouts_t, idle_ms), .def = Q("60s"), .flags = POSITIVE},
    {"upstream_connect", &conf__t_duration, FLD(conf_timeouts_t, upstream_connect_ms),
     .def = Q("5s"), .flags = POSITIVE},
    {"upstream_read", &conf__t_duration, FLD(conf_timeouts_t, upstream_read_ms),
     .def = Q("60s"), .flags = POSITIVE},
    {"upstream_response", &conf__t_duration, FLD(conf_timeouts_t, upstream_response_ms),
     .flags = POSITIVE},
    {"client_body", &conf__t_duration, FLD(conf_timeouts_t, client_body_ms), .def = Q("60s"),
     .flags = POSITIVE},
    {"client_send", &conf__t_duration, FLD(conf_timeouts_t, client_send_ms), .def = Q("60s"),
     .flags = POSITIVE},
    {"tunnel_idle", &conf__t_duration, FLD(conf_timeouts_t, tunnel_idle_ms), .def = Q("1h"),
     .flags = POSITIVE},
    {"drain", &conf__t_duration, FLD(conf_timeouts_t, drain_ms), .def = Q("30s")},
};
static const conf__table_t timeouts_table = TABLE(timeouts_rows, .check = conf__check_timeouts);

static const conf__row_t limits_rows[] = {
    {"max_header_bytes", &conf__t_size, FLD(conf_limits_t, max_header_bytes), .def = Q("16k"),
     .min = 1024, .max = 16u << 20},
    {"max_headers", &conf__t_count, FLD(conf_limits_t, max_headers), .def = "100", .min = 1,
     .max = 10000},
    {"max_uri_bytes", &conf__t_size, FLD(conf_limits_t, max_uri_bytes), .def = Q("8k"), .min = 256,
     .max = 16u << 20},
    {"write_queue_bytes", &conf__t_size, FLD(conf_limits_t, write_queue_bytes), .def = Q("256k"),
     .min = 4096, .max = 1u << 30},
    {"max_connections", &conf__t_count, FLD(conf_limits_t, max_connections), .def = "0",
     .max = 10000000},
};
static const conf__table_t limits_table = TABLE(limits_rows);

static const conf__row_t http2_rows[] = {
    {"max_concurrent_streams", &conf__t_count, FLD(conf_http2_t, max_concurrent_streams),
     .def = "128", .min = 1, .max = (1u << 31) - 1},
    {"max_header_list_size", &conf__t_size, FLD(conf_http2_t, max_header_list_bytes),
     .def = Q("64k"), .min = 1024, .max = 16u << 20},
    {"max_continuations", &conf__t_count, FLD(conf_http2_t, max_continuations), .def = "8",
     .max = 1000},
    {"max_resets", &conf__t_rate, FLD(conf_http2_t, max_resets), .def = Q("100/1s"),
     .flags = POSITIVE},
    {"max_control_frames", &conf__t_rate, FLD(conf_http2_t, max_control_frames),
     .def = Q("500/1s"), .flags = POSITIVE},
    {"stream_window", &conf__t_size, FLD(conf_http2_t, stream_window_bytes), .def = Q("256k"),
     .min = 65535, .max = (1u << 31) - 1},
    {"connection_window", &conf__t_size, FLD(conf_http2_t, connection_window_bytes),
     .def = Q("1m"), .min = 65535, .max = (1u << 31) - 1},
    {"hpack_table_size", &conf__t_size, FLD(conf_http2_t, hpack_table_bytes), .def = "4096",
     .max = 65536},
};
static const conf__table_t http2_table = TABLE(http2_rows);

static const conf__row_t log_rows[] = {
    {"level", &conf__t_enum, FLD(conf_t, log_level), .def = Q("info"), .arg = &level_enum},
    {"format", &conf__t_enum, FLD(conf_t, log_format), .def = Q("text"), .arg = &format_enum},
    {"access", &conf__t_enum, FLD(conf_t, access_log), .def = Q("json"), .arg = &access_enum},
    {"file", &conf__t_file, FLD(conf_t, log_file), .flags = CONF__CREATE},
    {"access_file", &conf__t_file, FLD(conf_t, log_access_file), .flags = CONF__CREATE},
    {"buffer", &conf__t_size, FLD(conf_t, log_buffer), .def = Q("256k"), .min = 16384,
     .max = 64u << 20},
};
static const conf__table_t log_table = TABLE(log_rows);

/* --- storage and the fleet (issue 15) --- */

static const conf__row_t etcd_rows[] = {
    {"endpoints", &conf__t_addr_list, LIST(conf_etcd_t, endpoints, num_endpoints),
     .flags = REQUIRED | CONF__NONEMPTY | CONF__SCHEME, .max = 16},
    {"prefix", &conf__t_string, FLD(conf_etcd_t, prefix), .def = Q("/gatehouse/default/")},
    {"ca", &conf__t_file, FLD(conf_etcd_t, ca)},
    {"cert", &conf__t_file, FLD(conf_etcd_t, cert)},
    {"key", &conf__t_file, FLD(conf_etcd_t, key)},
    {"username", &conf__t_string, FLD(conf_etcd_t, username)},
    {"password", &conf__t_string, FLD(conf_etcd_t, password)},
    {"timeout", &conf__t_duration, FLD(conf_etcd_t, timeout_ms), .def = Q("2s"), .flags = POSITIVE},
    {"encryption_key", &conf__t_file, FLD(conf_etcd_t, encryption_key)},
};
static const conf__table_t etcd_table =
    TABLE(etcd_rows, .has_present = 1, .present_off = offsetof(conf_etcd_t, enabled),
          .check = conf__check_etcd);

/* "storage" is a directory, or {"directory": ..., "etcd": {...}}. */
static const conf__row_t storage_rows[] = {
    {"directory", &conf__t_path, FLD(conf_t, storage), .def = Q("./gatehouse-data")},
    {"etcd", &conf__t_object, .off = offsetof(conf_t, etcd), .arg = &etcd_table},
};
static const conf__table_t storage_table = TABLE(storage_rows);

static const char *const store_down_names[] = {"deny", "local"};
static const conf__enum_t store_down_enum = {store_down_names, 2};
_Static_assert(CONF_STORE_DOWN_LOCAL == 1, "store-down names");

static const conf__row_t fleet_rows[] = {
    {"issue_when_store_down", &conf__t_enum, FLD(conf_fleet_t, issue_when_store_down),
     .def = Q("deny"), .arg = &store_down_enum},
    {"lease_ttl", &conf__t_duration, FLD(conf_fleet_t, lease_ttl_ms), .def = Q("30s"),
     .flags = POSITIVE},
    {"node", &conf__t_string, FLD(conf_fleet_t, node)},
};
static const conf__table_t fleet_table = TABLE(fleet_rows);

static const conf__row_t root_rows[] = {
    /* The listen defaults apply only when "listen" is absent: a file that
     * lists only "https" gets no plain-HTTP listener. */
    {"listen", &conf__t_object, .off = 0,
     .def = "{" Q("https") ":[" Q(":443") "]," Q("http") ":[" Q(":80") "]}", .arg = &listen_table},
    {"workers", &conf__t_workers, FLD(conf_t, workers), .def = Q("auto"), .min = 1, .max = 256},
    {"sites", &conf__t_object_list, LIST(conf_t, sites, num_sites), .size = sizeof(conf_site_t),
     .flags = REQUIRED | CONF__NONEMPTY, .arg = &site_table},
    {"tls", &conf__t_object, .off = offsetof(conf_t, tls), .arg = &tls_table},
    {"acme", &conf__t_object, .off = offsetof(conf_t, acme), .arg = &acme_table},
    {"on_demand", &conf__t_object, .off = offsetof(conf_t, on_demand), .arg = &on_demand_table},
    {"storage", &conf__t_storage, .off = 0, .arg = &storage_table},
    {"fleet", &conf__t_object, .off = offsetof(conf_t, fleet), .arg = &fleet_table},
    {"admin", &conf__t_object, .off = 0, .arg = &admin_table},
    {"trusted_proxies", &conf__t_cidr_list, LIST(conf_t, trusted_proxies, num_trusted_proxies),
     .def = "[]"},
    {"timeouts", &conf__t_object, .off = offsetof(conf_t, timeouts), .arg = &timeouts_table},
    {"limits", &conf__t_object, .off = offsetof(conf_t, limits), .arg = &limits_table},
    {"http2", &conf__t_object, .off = offsetof(conf_t, http2), .arg = &http2_table},
    {"log", &conf__t_object, .off = 0, .arg = &log_table},
};
const conf__table_t conf__root_table = TABLE(root_rows, .check = conf__check_root);
