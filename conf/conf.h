/* conf.h: Gatehouse configuration: JSON text in, validated typed structs out.
 *
 * Pure code: no I/O beyond reading the file (and checking that referenced
 * files exist and are readable), no globals. Every problem found is
 * reported, each naming the file, the JSON path and what was expected, e.g.
 *
 *   gatehouse.json: sites[2].upstreams[0]: expected "host:port", got "x"
 *
 * The schema is documented in README.md ("Configuration"). Durations are
 * strings such as "500ms", "30s", "5m", "12h", "7d"; sizes are integers
 * (bytes) or strings such as "16k", "1m". All durations below are stored in
 * milliseconds. */
#ifndef GH_CONF_H
#define GH_CONF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct cJSON cJSON;

/* conf_addr_t is a listen or upstream address. |host| is the text before the
 * port ("" for a wildcard listen address such as ":443", "127.0.0.1",
 * "::1" without brackets, or a DNS name for upstreams). */
/* conf_cidr_t is an address block, "10.0.0.0/8", "::1/128" or a single
 * address ("127.0.0.1" stands for "127.0.0.1/32"). */
typedef struct {
  char *text;       /* as written */
  int family;       /* AF_INET or AF_INET6 */
  uint8_t addr[16]; /* network order; bits past |prefix| are zero */
  unsigned prefix;  /* 0..32 or 0..128 */
} conf_cidr_t;

typedef struct {
  char *text; /* as written in the config, e.g. "[::1]:8443" */
  char *host;
  uint16_t port;
  int http2; /* listen.https entries: offer h2 by ALPN; default 1 */
  int proxy_protocol; /* listen entries: a PROXY header (v1 or v2) comes first; default 0 */
  conf_cidr_t *proxy_trusted; /* listen entries: who may send it; required with it */
  size_t num_proxy_trusted;
  char *unix_path; /* admin.listen "unix:PATH": the socket's path (resolved against the
                      config file's directory); NULL for a TCP address, whose |host| is
                      then "" */
  /* upstreams entries (issue 14): "https://host:port", or an object with
   * "address" and the options below. */
  int tls;                  /* speak TLS to it ("https://"); verified unless skip_verify */
  int protocol;             /* conf_up_protocol_t */
  char **tls_ca;            /* "ca": trust only these PEM files; none = the system roots */
  size_t num_tls_ca;
  char *server_name;        /* SNI and the name verified; NULL = |host| */
  char *tls_cert, *tls_key; /* "client_cert"/"client_key": mTLS to the backend */
  int insecure_skip_verify; /* accept any certificate (logged loudly) */
  int send_proxy;           /* "send_proxy_protocol": a PROXY v2 header opens each connection */
} conf_addr_t;

/* storage.etcd (issue 15): the store a fleet of nodes shares. */
typedef struct {
  int enabled;               /* the object was given */
  conf_addr_t *endpoints;    /* "http://host:port" or "https://host:port" (|tls|) */
  size_t num_endpoints;
  char *prefix;              /* every key under it; begins and ends with "/" */
  char *ca, *cert, *key;     /* TLS to etcd: CA file, client certificate and key */
  char *username, *password; /* etcd authentication (both or neither) */
  uint64_t timeout_ms;       /* per request; default 2s */
  char *encryption_key;      /* file with 32 bytes: private keys sealed in etcd (NULL: not) */
} conf_etcd_t;

/* What a node does with a new on-demand name while the store is down. */
typedef enum {
  CONF_STORE_DOWN_DENY = 0,  /* refuse it (the default: no duplicate orders) */
  CONF_STORE_DOWN_LOCAL = 1, /* order it alone and keep it locally */
} conf_store_down_t;

typedef struct {
  conf_store_down_t issue_when_store_down;
  uint64_t lease_ttl_ms; /* the node's etcd lease; default 30s */
  char *node;            /* this node's name in the store; default the host name */
} conf_fleet_t;

/* How a request goes to an upstream. */
typedef enum {
  CONF_UP_HTTP1 = 0, /* "http/1.1" */
  CONF_UP_H2 = 1,    /* "h2": HTTP/2 over TLS (ALPN) */
  CONF_UP_H2C = 2,   /* "h2c": HTTP/2 in cleartext, prior knowledge */
} conf_up_protocol_t;

typedef enum {
  CONF_BALANCE_ROUND_ROBIN = 0,
  CONF_BALANCE_LEAST_CONN = 1,
} conf_balance_t;

typedef struct {
  char *path;            /* GET this path; NULL = no active health check */
  uint64_t interval_ms;  /* default 10s */
  uint64_t timeout_ms;   /* default 2s */
} conf_health_t;

/* An upstream group: where a site or route forwards to. */
typedef struct {
  conf_addr_t *addrs;
  size_t num_addrs;
  conf_balance_t balance;
  conf_health_t health;
  uint64_t fail_backoff_ms; /* passive health: skip a failed upstream this long; default 10s */
  size_t max_idle;          /* idle keep-alive connections kept per worker; default 64 */
  uint64_t idle_timeout_ms; /* default 60s */
} conf_upstream_group_t;

typedef struct {
  char *path_prefix; /* begins with '/' */
  conf_upstream_group_t group;
} conf_route_t;

typedef enum {
  CONF_CLIENT_AUTH_REQUIRED = 0,
  CONF_CLIENT_AUTH_OPTIONAL = 1,
} conf_client_auth_mode_t;

/* A site's "client_auth": TLS client certificates, verified against the
 * site's own CAs (nginx ssl_verify_client, Caddy client_auth). */
typedef struct {
  int enabled;     /* set when the "client_auth" object is present */
  char **ca_files; /* PEM files of the CAs that issue client certificates, resolved;
                      read when the TLS context is built (proxy/ccert.c) */
  size_t num_ca_files;
  conf_client_auth_mode_t mode; /* default required */
  /* Request fields that carry the verified certificate to the upstream;
   * removed from every client request, whatever the site. Valid field
   * names (tokens); defaults "X-Client-Subject", "X-Client-Cert-SHA256". */
  char *subject_header;
  char *fingerprint_header;
} conf_client_auth_t;

typedef struct {
  char **hosts; /* lower-case; exact names or "*.example.com" */
  size_t num_hosts;
  conf_upstream_group_t group; /* used when no route matches */
  conf_route_t *routes;        /* longest prefix wins */
  size_t num_routes;
  char *cert_file; /* static certificate chain (PEM); NULL = ACME-managed */
  char *key_file;
  int is_default; /* served for unknown SNI names / Host headers */
  uint64_t hsts_max_age_s; /* 0 = no HSTS header */
  uint64_t max_body;       /* request body limit in bytes; 0 = unlimited (default) */
  int hsts_include_subdomains;
  int hsts_preload;
  conf_client_auth_t client_auth;
  char *acme_profile; /* "acme_profile": the ACME profile of its certificate; NULL: acme.profile */
} conf_site_t;

typedef enum {
  CONF_KEY_P256 = 0,
  CONF_KEY_P384 = 1,
  CONF_KEY_RSA2048 = 2,
} conf_key_type_t;

typedef enum {
  CONF_CHALLENGE_TLS_ALPN_01 = 0,
  CONF_CHALLENGE_HTTP_01 = 1,
  CONF_CHALLENGE_DNS_01 = 2,
} conf_challenge_t;

typedef enum {
  CONF_TSIG_HMAC_SHA256 = 0,
  CONF_TSIG_HMAC_SHA512 = 1,
} conf_tsig_alg_t;

/* acme.dns.rfc2136: dns-01 TXT records published by RFC 2136 dynamic
 * updates signed with TSIG (RFC 8945), instead of a dns hook. */
typedef struct {
  int enabled;        /* set when the "rfc2136" object is given */
  char *server;       /* "IP[:port]" as written */
  char host[48];      /* its IP address (set by the check) */
  uint16_t port;      /* its port, default 53 (set by the check) */
  char *zone;         /* the zone updated, "example.com" */
  char *key_name;     /* the TSIG key's name */
  conf_tsig_alg_t key_algorithm; /* default hmac-sha256 */
  char *key_secret;   /* base64 (RFC 4648 section 4, padded) */
} conf_rfc2136_t;

/* One CA of acme.issuers (issue 16): the keys "acme" takes for a single
 * CA. Unset keys take acme's (email, ca_roots, profile, preferred_chain):
 * conf_issuer resolves them. */
typedef struct {
  char *name;      /* "name": for logs, /certs and metrics; default the directory's host */
  char *directory; /* ACME directory URL */
  char *email;
  char **ca_roots; /* extra PEM files trusted for the directory's HTTPS */
  size_t num_ca_roots;
  char *eab_key_id; /* external account binding; both NULL or both set */
  char *eab_hmac_key;
  char *preferred_chain;
  char *profile;
  char **caa_identities; /* the CA's CAA issuer domains, when its directory names none */
  size_t num_caa_identities;
} conf_issuer_t;

typedef struct {
  /* The CAs, in order: "issuers", or the one CA of "directory" and its
   * keys below (conf_issuer). */
  conf_issuer_t *issuers;
  size_t num_issuers;
  int present; /* the "acme" object was given */
  char *directory; /* ACME directory URL of a single CA; NULL with "issuers" or ACME off */
  char *email;
  char **ca_roots; /* extra PEM files trusted for the directory's HTTPS */
  size_t num_ca_roots;
  char *eab_key_id; /* external account binding; both NULL or both set */
  char *eab_hmac_key; /* base64url, as CAs hand it out */
  conf_challenge_t challenges[3]; /* in order of preference */
  size_t num_challenges;          /* default: tls-alpn-01, http-01 */
  conf_key_type_t key_type;
  int reuse_key;        /* keep the certificate key across renewals */
  char *dns_hook;       /* executable for dns-01: present|cleanup FQDN VALUE */
  uint64_t dns_propagation_timeout_ms; /* default 2m */
  conf_addr_t *dns_resolvers; /* asked whether a TXT record is visible; "IP:port" */
  size_t num_dns_resolvers;   /* default 0: the nameservers of /etc/resolv.conf, read
                                 by the engine when it checks */
  int dns_given;              /* the "dns" object is given */
  conf_rfc2136_t dns_rfc2136; /* acme.dns.rfc2136; enabled = 0 when absent */
  char *preferred_chain; /* issuer common name of the preferred alternate chain */
  char *profile; /* ACME profile (draft-aaron-acme-profiles) for orders; NULL: the CA's default */
  char **caa_identities; /* CAA issuer domains of the CA(s) whose directory names none */
  size_t num_caa_identities;
  int caa_check; /* look up CAA before ordering (default on) */
} conf_acme_t;

/* A token bucket: |count| events per |per_ms|; count 0 = unlimited. */
typedef struct {
  uint32_t count;
  uint64_t per_ms;
} conf_rate_t;

typedef struct {
  int enabled;      /* set when the "on_demand" object is present */
  char **allow;     /* exact names or "*.example.com" or "*" */
  size_t num_allow;
  char *ask;        /* URL; NULL = no ask endpoint */
  uint64_t ask_timeout_ms;     /* default 3s */
  uint64_t ask_cache_ttl_ms;   /* positive answers; default 1h */
  uint64_t ask_negative_ttl_ms; /* refusals and failures; default 5m */
  int allow_ip;                /* IP-literal SNI names; default off */
  unsigned max_labels;         /* default 10 */
  conf_rate_t rate_global;        /* new orders, all names; default 300/3h */
  /* Without "ask" the next two default to 50/168h and 20/1h; with it, to
   * unlimited (the application is the authority). */
  conf_rate_t rate_per_domain;    /* per registered domain */
  conf_rate_t rate_per_client_ip; /* per client IP */
  char **public_suffixes; /* extra suffixes ("co.example") for the per-domain limit */
  size_t num_public_suffixes;
  size_t max_pending_names;       /* names in flight at once; default 100 */
  size_t max_paused_handshakes;   /* default 10000 */
  uint64_t wait_budget_ms;        /* default 30s */
  size_t cache_capacity;          /* in-memory certificates; default 10000 */
  uint64_t negative_ttl_ms;       /* refused names remembered; default 5m */
} conf_on_demand_t;

typedef struct {
  uint64_t handshake_ms;         /* default 10s */
  uint64_t header_read_ms;       /* default 10s */
  uint64_t idle_ms;              /* client keep-alive; default 60s */
  uint64_t upstream_connect_ms;  /* default 5s */
  /* Gap between upstream bytes while the upstream owes some (the request
   * is sent, or it is not taking the request's bytes) and we are not
   * holding it back; default 60s. "upstream_response" is its old name. */
  uint64_t upstream_read_ms;
  uint64_t upstream_response_ms; /* the old name as given; 0 once merged */
  uint64_t client_body_ms;  /* gap between reads of a request body; default 60s */
  uint64_t client_send_ms;  /* client not taking response bytes; default 60s */
  uint64_t tunnel_idle_ms;  /* upgraded connection quiet both ways; default 1h */
  uint64_t drain_ms;             /* graceful shutdown; default 30s */
} conf_timeouts_t;

typedef struct {
  size_t max_header_bytes; /* request head; default 16k */
  size_t max_headers;      /* default 100 */
  size_t max_uri_bytes;    /* default 8k */
  size_t write_queue_bytes; /* back-pressure threshold per side; default 256k */
  size_t max_connections;  /* per worker; 0 = unlimited */
} conf_limits_t;

/* HTTP/2 toward clients, on the listen.https entries that offer it. Sizes
 * in bytes. */
typedef struct {
  uint32_t max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS; default 128; 1..2^31-1 */
  size_t max_header_list_bytes;    /* request header list (RFC 9113 6.5.2, names+values+32
                                      each); default "64k"; 1k..16m */
  size_t max_continuations;        /* CONTINUATION frames after one HEADERS; default 8; 0..1000 */
  conf_rate_t max_resets;          /* rapid reset: client RST_STREAMs; default "100/1s" */
  conf_rate_t max_control_frames;  /* SETTINGS, PING, PRIORITY, empty DATA, tiny
                                      WINDOW_UPDATE; default "500/1s" */
  size_t stream_window_bytes;      /* our initial stream window; default "256k";
                                      65535..2147483647 */
  size_t connection_window_bytes;  /* our connection window; default "1m"; 65535..2147483647 */
  size_t hpack_table_bytes;        /* HPACK dynamic table, both directions; default 4096;
                                      0..65536 */
} conf_http2_t;

typedef enum {
  CONF_ACCESS_OFF = 0,
  CONF_ACCESS_JSON = 1,
  CONF_ACCESS_COMBINED = 2,
} conf_access_log_t;

typedef struct {
  int resumption;            /* session tickets; default on */
  uint64_t ticket_rotate_ms; /* default 12h */
} conf_tls_t;

typedef struct {
  char *file; /* the path the config was read from ("<args>" for quick mode) */
  conf_addr_t *https;  /* listen addresses; may be empty */
  size_t num_https;
  conf_addr_t *http;
  size_t num_http;
  unsigned workers;    /* "auto" is resolved to the CPUs this process may use
                          (conf_cpu_count) */
  conf_site_t *sites;
  size_t num_sites;
  conf_tls_t tls;
  conf_acme_t acme;
  conf_on_demand_t on_demand;
  char *storage;       /* default "./gatehouse-data", resolved against the config file's
                          directory (quick mode: the working directory); with |etcd| the
                          node's local copy */
  conf_etcd_t etcd;    /* storage.etcd: a fleet's shared store (issue 15) */
  conf_fleet_t fleet;
  conf_addr_t *admin;  /* NULL = admin API off */
  char *admin_token;   /* bearer token; required for a TCP address unless
                          |admin_insecure_no_token| */
  int admin_insecure_no_token; /* admin.insecure_no_token: a loopback TCP admin address
                                  without a token, asked for explicitly */
  conf_cidr_t *trusted_proxies; /* clients whose X-Forwarded-* are kept (extended) */
  size_t num_trusted_proxies;
  conf_timeouts_t timeouts;
  conf_limits_t limits;
  conf_http2_t http2;
  int log_level;       /* gh_log_level_t; default info */
  int log_format;      /* gh_log_format_t; default text */
  conf_access_log_t access_log; /* default json */
  char *log_file;        /* gatehouse's own lines; NULL = stderr */
  char *log_access_file; /* access lines; NULL = wherever log_file goes */
  size_t log_buffer;     /* bytes of each thread's log ring; default 256k */
} conf_t;

/* conf_parse parses and validates the JSON document |text| (|text_len|
 * bytes) read from |file| (used in messages only). On success it returns a
 * new conf_t, which the caller frees with conf_free. On failure it returns
 * NULL and sets |*out_err| to a newly allocated, newline-separated list of
 * every problem found, which the caller frees. */
conf_t *conf_parse(char **out_err, const char *file, const char *text, size_t text_len);

/* conf_load reads |path| and calls conf_parse. Same contract. */
conf_t *conf_load(char **out_err, const char *path);

/* conf_free frees |conf| and everything it owns. conf_free(NULL) does
 * nothing. */
void conf_free(conf_t *conf);

/* conf_acme_on reports (1 or 0) whether |conf| has a CA to obtain
 * certificates from (acme.directory or acme.issuers). */
int conf_acme_on(const conf_t *conf);

/* conf_num_issuers is how many CAs |conf| orders from, in order of
 * preference (acme.issuers, or the one of acme.directory); conf_issuer
 * fills |out| with the |i|-th one's settings, the keys it leaves unset
 * taken from acme's (email, ca_roots, profile, preferred_chain). The
 * strings are |conf|'s, borrowed; |out->name| is NULL when not given. */
size_t conf_num_issuers(const conf_t *conf);
void conf_issuer(const conf_t *conf, size_t i, conf_issuer_t *out);

/* conf_to_json returns the effective configuration, defaults included, as
 * a new cJSON object (caller frees with cJSON_Delete). Feeding its printed
 * form back to conf_parse yields an equal configuration. */
cJSON *conf_to_json(const conf_t *conf);

/* conf_parse_duration parses "250ms", "30s", "5m", "2h", "7d" into
 * milliseconds. Returns 0 on success, -1 if |s| is not a duration. */
int conf_parse_duration(const char *s, uint64_t *out_ms);

/* conf_parse_addr parses "host:port", ":port", "[v6]:port", and, unless
 * |need_host|, "unix:PATH" (|out->unix_path| = PATH as given, not
 * resolved). |need_host| rejects ":port". Returns 0 on success (filling
 * |out|, caller frees with conf_addr_cleanup) or -1. */
int conf_parse_addr(conf_addr_t *out, const char *s, int need_host);
void conf_addr_cleanup(conf_addr_t *addr);

/* conf_cidr_match reports whether the address |addr| of |family|
 * (AF_INET: 4 bytes, AF_INET6: 16, an IPv4-mapped one counting as IPv4)
 * is in any of the |num| blocks of |list|. Returns 1 or 0. */
int conf_cidr_match(const conf_cidr_t *list, size_t num, int family, const uint8_t *addr);

/* conf_host_pattern_valid reports whether |s| is a valid lower-case host
 * name or "*.name" pattern (LDH labels of 1-63 bytes, 253 bytes total).
 * Returns 1 or 0. */
int conf_host_pattern_valid(const char *s);

/* conf_ip_literal reports (1 or 0) whether |s| is an IP address in the
 * one text form an "ip" identifier (RFC 8738 3) has: IPv4 dotted decimal,
 * IPv6 as RFC 5952 writes it (lower case, the longest run of zeros as
 * "::"). With |out| (16 bytes) it also gives the address's |*out_len| (4
 * or 16) octets. */
int conf_ip_literal(const char *s, uint8_t *out, size_t *out_len);

/* conf_host_match reports whether host |name| (lower-case) matches
 * |pattern|: exact, "*.example.com" (exactly one label in place of '*'), or
 * "*" (anything). Returns 1 or 0. */
int conf_host_match(const char *pattern, const char *name, size_t name_len);

/* conf_site_find returns the index of the site, among the |num_sites| of
 * |sites|, that serves the lower-case host |name| (no port, no trailing
 * dot): an exact name, else the first site with a matching "*.name"
 * pattern, else the first with "*", else the default site; SIZE_MAX when
 * none does. Without a name (|name_len| 0) the default site, else the
 * first with "*". Only |hosts| and |is_default| of each site are read. */
size_t conf_site_find(const conf_site_t *sites, size_t num_sites, const char *name,
                      size_t name_len);

/* conf_cpu_max_parse reads the text of a cgroup v2 "cpu.max" file,
 * "QUOTA PERIOD" or "max PERIOD" (for cgroup v1, cpu.cfs_quota_us and
 * cpu.cfs_period_us joined by a space, where a quota of -1 means none).
 * Returns 0 with |*out_cpus| the CPUs the quota allows, rounded up and at
 * least 1, or 0 when there is no quota; -1 when |text| is malformed. */
int conf_cpu_max_parse(const char *text, unsigned *out_cpus);

/* conf_cpu_count returns the CPUs this process may use, what "workers":
 * "auto" means: the online CPUs, fewer if the affinity mask
 * (sched_getaffinity) or the cgroup's CPU quota (v2 cpu.max, v1
 * cpu.cfs_quota_us) allows fewer; at least 1. */
unsigned conf_cpu_count(void);

/* What conf_quick_json says besides the document. */
typedef struct {
  int print_config;   /* --print-config (or GATEHOUSE_PRINT_CONFIG) was given */
  const char *source; /* for conf_parse's messages: "<command line>",
                         "<environment>" or "<command line and environment>" */
  char *warnings;     /* lines naming GATEHOUSE_* variables no flag stands
                         for, or NULL; the caller frees it */
} conf_quick_info_t;

/* conf_quick_json builds the configuration document for quick mode
 * (`gatehouse proxy --to ADDR ...`) from the arguments after "proxy" and
 * the environment |envp| ("NAME=VALUE" strings, NULL-terminated; may be
 * NULL). Every flag has one variable, GATEHOUSE_*, read when the flag is
 * not on the command line (an empty variable counts as unset; lists are
 * separated by commas or white space; switches take 1/true/yes/on or
 * 0/false/no/off). It returns a new cJSON object that conf_parse accepts
 * when printed (so quick mode and files go through one validator), or NULL
 * with |*out_err| set to a message naming the bad flag or variable. Flags:
 * --to ADDR (repeatable, required), --from NAME (repeatable), --https ADDR,
 * --http ADDR, --http2 on|off (h2 on the --https listeners; default on),
 * --cert FILE, --key FILE, --workers N, --no-resumption,
 * --access-log json|combined|off, --log-level L, --log-format text|json,
 * --acme-directory URL, --acme-ca-root FILE (repeatable), --email ADDR,
 * --eab-kid KID and --eab-hmac-key KEY (together), --storage DIR,
 * --challenge NAME (repeatable, in order of preference), --on-demand
 * PATTERN (repeatable), --ask URL, --admin ADDR, --admin-token TOKEN. With
 * --acme-directory, --cert/--key may be left out: the --from names are
 * then ACME-managed. */
cJSON *conf_quick_json(char **out_err, conf_quick_info_t *info, int argc, char **argv,
                       char *const *envp);

/* conf_env_get reads the variable |name| from |envp| the way quick mode
 * does: its value, or the contents of the file NAME_FILE names (trailing
 * blanks and line breaks dropped); empty counts as unset. Returns NULL with
 * |*out| a new copy of the value (NULL when unset), or an error message
 * naming the variable (both NAME and NAME_FILE set, an unreadable file, a
 * NUL byte in it); the caller frees either. */
char *conf_env_get(char *const *envp, const char *name, char **out);

/* conf_quick_usage returns the table of flags and their variables, a line
 * each, for help text. The caller frees it. */
char *conf_quick_usage(void);

#endif
