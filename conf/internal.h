/* internal.h: declarations shared by the files of conf/; not part of the API.
 *
 * The schema is a set of tables (schema.c), one per JSON object, in the
 * manner of nginx's ngx_command_t arrays: each row names a key, the type of
 * its value, where the value is stored (an offset into the C struct that
 * the object maps to) and its default, written as JSON text in the same
 * syntax a configuration file uses. One generic walk (parse.c) checks a
 * JSON object against its table, reports unknown and duplicate keys, fills
 * in defaults and runs the table's cross-field check; emit.c walks the same
 * tables back into JSON, and conf_free walks them to free what was
 * allocated. A row type (types.c) knows how to parse, emit, free and test
 * for emptiness one kind of value. */
#ifndef GH_CONF_INTERNAL_H
#define GH_CONF_INTERNAL_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

/* --- problems and the JSON path they are at (parse.c) --- */

/* conf__ctx_t collects every problem found while checking one document. */
typedef struct {
  const char *file;     /* for messages */
  const char *base_dir; /* relative file names are resolved against it; NULL = as is */
  char *errs;           /* "FILE: PATH: message\n" lines */
  size_t errs_len;
  size_t errs_cap;
  size_t num_errs;
  char *path; /* the JSON path being checked, e.g. "sites[0].upstreams[1]" */
  size_t path_len;
  size_t path_cap;
} conf__ctx_t;

/* conf__error adds "FILE: PATH: message" for the current path (just
 * "FILE: message" at the top level). */
void conf__error(conf__ctx_t *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* conf__error_at does the same for another |path| (cross-field checks). */
void conf__error_at(conf__ctx_t *ctx, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* conf__expected adds "expected WHAT, got VALUE" for the current path, with
 * " (REASON)" appended when |reason| is not NULL. */
void conf__expected(conf__ctx_t *ctx, const char *what, const cJSON *got, const char *reason);

/* conf__path_key and conf__path_index append ".key" (or "key" at the top)
 * and "[i]" to the current path; both return the previous length, which
 * conf__path_pop restores. */
size_t conf__path_key(conf__ctx_t *ctx, const char *key);
size_t conf__path_index(conf__ctx_t *ctx, size_t i);
void conf__path_pop(conf__ctx_t *ctx, size_t len);

/* conf__quote returns |s| as a double-quoted string for a message, with
 * control characters escaped and anything past 80 bytes cut to "...".
 * conf__describe does the same for any JSON value ("an object", 5, true,
 * "text"). Both return new strings. */
char *conf__quote(const char *s);
char *conf__describe(const cJSON *v);

/* --- the schema (internal.h types, schema.c tables, types.c row types) --- */

typedef struct conf__row conf__row_t;
typedef struct conf__table conf__table_t;

typedef struct {
  /* parse checks |val| and stores it in the field of |base| that |row|
   * names, reporting every problem through |ctx|. |val| is NULL only for
   * types with |takes_absent| set (objects, so that their defaults apply
   * when the whole object is missing). */
  void (*parse)(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val, char *base);
  /* emit returns the field as a new JSON value. */
  cJSON *(*emit)(const conf__row_t *row, const char *base);
  /* free releases what parse allocated and zeroes the field; may be NULL. */
  void (*free)(const conf__row_t *row, char *base);
  /* is_empty reports whether the field holds nothing (NULL, no elements);
   * an empty row without a default is left out of the emitted JSON. May be
   * NULL (never empty). */
  int (*is_empty)(const conf__row_t *row, const char *base);
  int takes_absent;
} conf__type_t;

/* Row flags. */
enum {
  CONF__REQUIRED = 1u << 0,    /* must be present when its object is */
  CONF__POSITIVE = 1u << 1,    /* durations: zero is not allowed; rates: nor is "0" (no limit) */
  CONF__SECONDS = 1u << 2,     /* durations: stored in whole seconds, not ms */
  CONF__NONEMPTY = 1u << 3,    /* lists: at least one element */
  CONF__ONE_OR_LIST = 1u << 4, /* lists: a single string stands for a list of one */
  CONF__LISTENER = 1u << 5,    /* addresses: ":port" allowed, IP addresses only */
  CONF__ANY_HOST = 1u << 6,    /* host lists: "*" (any name) allowed */
  CONF__NO_WILDCARD = 1u << 7, /* host lists: plain names only */
  CONF__EXEC = 1u << 8,        /* files: must be executable, not just readable */
  CONF__IP_HOST = 1u << 9,     /* addresses: "IP:port" only, host required */
  CONF__UNIX = 1u << 10,       /* addresses: "unix:PATH" allowed, PATH resolved like files */
  CONF__CREATE = 1u << 11,     /* files: written, may not exist yet; its directory must */
  CONF__SCHEME = 1u << 12,     /* addresses: "http://" or "https://" may come first (upstreams) */
};

struct conf__row {
  const char *name;
  const conf__type_t *type;
  size_t off;      /* the field, as an offset from the object's struct */
  size_t num_off;  /* lists: the element count field */
  size_t size;     /* integers: sizeof the field; object lists: sizeof an element */
  const char *def; /* the default as JSON text; NULL = none */
  unsigned flags;
  uint64_t min, max; /* numbers: the accepted range; lists: max = most elements */
  const void *arg;   /* enums: a conf__enum_t; objects: a conf__table_t; address lists:
                        the conf__table_t of an entry written as an object, or NULL */
};

struct conf__table {
  const conf__row_t *rows;
  size_t num_rows;
  int has_present;    /* whether |present_off| names an int set when the object is given */
  size_t present_off;
  /* check runs after every row has been parsed: cross-field rules. |obj| is
   * NULL when the object is absent (its defaults were applied). */
  void (*check)(conf__ctx_t *ctx, const cJSON *obj, char *base);
};

typedef struct {
  const char *const *names; /* index = the C enum value */
  size_t num;
} conf__enum_t;

extern const conf__table_t conf__root_table;

extern const conf__type_t conf__t_string, conf__t_url, conf__t_email, conf__t_url_path,
    conf__t_file, conf__t_path, conf__t_file_list, conf__t_base64url, conf__t_base64, conf__t_bool, conf__t_duration,
    conf__t_size, conf__t_count, conf__t_rate, conf__t_enum, conf__t_enum_list,
    conf__t_addr_list, conf__t_addr, conf__t_addr_here, conf__t_cidr_list, conf__t_host_list, conf__t_workers,
    conf__t_object, conf__t_object_list, conf__t_hsts, conf__t_field_name, conf__t_storage;

/* conf__walk checks |obj| (NULL: absent, defaults only) against |t| and
 * stores the values in |base| (parse.c). */
void conf__walk(conf__ctx_t *ctx, const conf__table_t *t, const cJSON *obj, char *base);

/* conf__free_walk frees what conf__walk allocated in |base| (parse.c). */
void conf__free_walk(const conf__table_t *t, char *base);

/* conf__emit_walk returns |base| as a JSON object, and conf__table_absent
 * reports whether the object it maps would be left out because it was not
 * given: its presence flag is clear or a required key is empty (emit.c). */
cJSON *conf__emit_walk(const conf__table_t *t, const char *base);
int conf__table_absent(const conf__table_t *t, const char *base);

/* conf__resolve returns |path| resolved against the configuration file's
 * directory when it is relative (parse.c). */
char *conf__resolve(const conf__ctx_t *ctx, const char *path);

/* Cross-field checks (checks.c), named by the tables in schema.c. */
void conf__check_root(conf__ctx_t *ctx, const cJSON *obj, char *base);
void conf__check_listen(conf__ctx_t *ctx, const cJSON *obj, char *base);
void conf__check_listener(conf__ctx_t *ctx, const cJSON *obj, char *base);
void conf__check_upstream(conf__ctx_t *ctx, const cJSON *obj, char *base);
void conf__check_etcd(conf__ctx_t *ctx, const cJSON *obj, char *base);
void conf__check_site(conf__ctx_t *ctx, const cJSON *obj, char *base);
void conf__check_health(conf__ctx_t *ctx, const cJSON *obj, char *base);
void conf__check_acme(conf__ctx_t *ctx, const cJSON *obj, char *base);
void conf__check_issuer(conf__ctx_t *ctx, const cJSON *obj, char *base);
void conf__check_rfc2136(conf__ctx_t *ctx, const cJSON *obj, char *base);
void conf__check_on_demand(conf__ctx_t *ctx, const cJSON *obj, char *base);
void conf__check_admin(conf__ctx_t *ctx, const cJSON *obj, char *base);
void conf__check_timeouts(conf__ctx_t *ctx, const cJSON *obj, char *base);
void conf__check_client_auth(conf__ctx_t *ctx, const cJSON *obj, char *base);

/* conf__json_check checks that |text| is exactly one JSON value (RFC 8259,
 * plus: no "\u0000" escapes). Returns SIZE_MAX if so, or the byte offset
 * of the first error with |*out_reason| set to a short description
 * (syntax.c). */
size_t conf__json_check(const char *text, size_t len, const char **out_reason);

/* --- value syntax (values.c) ---
 * The checkers return NULL when |s| is acceptable, or a short reason for a
 * message ("missing port", "use lower case"). */

enum {
  CONF__ADDR_NEED_HOST = 1u << 0, /* reject ":port" */
  CONF__ADDR_IP_ONLY = 1u << 1,   /* reject DNS names */
  CONF__ADDR_UNIX = 1u << 2,      /* accept "unix:PATH" (unix_path = PATH as given) */
  CONF__ADDR_SCHEME = 1u << 3,    /* accept "http://" and "https://" (sets |tls|); the port
                                     then defaults to 80 or 443 */
};

/* conf__addr_parse is conf_parse_addr with a reason; on failure |out| is
 * left zeroed. */
const char *conf__addr_parse(conf_addr_t *out, const char *s, unsigned flags);

/* conf__cidr_parse parses "IP/len" or "IP" into |out| (|out->text| a
 * copy of |s|); on failure |out| is left zeroed. conf__cidrs_free frees a
 * list of them and zeroes it. */
const char *conf__cidr_parse(conf_cidr_t *out, const char *s);
void conf__cidrs_free(conf_cidr_t **list, size_t *num);

/* conf__host_check checks a host pattern; CONF__ANY_HOST allows "*" and
 * CONF__NO_WILDCARD rejects "*.name". */
const char *conf__host_check(const char *s, unsigned flags);
const char *conf__url_check(const char *s);
const char *conf__email_check(const char *s);

/* conf__parse_size parses "16384", "16k", "1m" into bytes; 0 or -1. */
int conf__parse_size(const char *s, uint64_t *out);

/* conf__parse_rate parses "COUNT/DURATION", or "0" (no limit) if
 * |allow_none|; returns NULL or a reason. */
const char *conf__parse_rate(const char *s, int allow_none, conf_rate_t *out);

/* conf__format_duration and conf__format_size write the shortest exact
 * form ("90s", "2m", "16k") into |buf|. */
void conf__format_duration(char *buf, size_t buf_len, uint64_t ms);
void conf__format_size(char *buf, size_t buf_len, uint64_t n);

/* conf__read_file reads all of |path| (at most CONF_MAX_FILE bytes) into a
 * new buffer; returns 0, or -1 with errno set. */
int conf__read_file(const char *path, char **out, size_t *out_len);

/* conf__closest returns the candidate nearest to |word| by edit distance
 * when it is close enough to be a likely typo, or NULL. */
const char *conf__closest(const char *word, const char *const *cands, size_t num_cands);

/* conf__hsts_parse parses a Strict-Transport-Security value (RFC 6797
 * 6.1), "max-age=31536000; includeSubDomains; preload": max-age required,
 * a positive whole number of seconds; includeSubDomains and preload
 * optional; directive names in any case, each at most once; nothing else.
 * Returns NULL with the outputs set, or a reason. */
const char *conf__hsts_parse(const char *s, uint64_t *out_max_age_s, int *out_subdomains,
                             int *out_preload);

/* conf__is_loopback reports whether an IP address (as in conf_addr_t.host)
 * is a loopback address. */
int conf__is_loopback(const char *host);

#endif
