/* types.c: the row types of the schema. Each knows how to check and store
 * one kind of JSON value, how to emit it again, how to free it and whether
 * it is empty. Every check reports through conf__expected or conf__error,
 * naming what was expected and what was found; values are stored even when
 * a later, softer check fails (an unreadable file), so that cross-field
 * checks do not pile up follow-on errors. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/common.h"
#include "conf/conf.h"
#include "conf/internal.h"

#define FIELD(base, row, type) ((type *)(void *)((base) + (row)->off))
#define CFIELD(base, row, type) ((type const *)(const void *)((base) + (row)->off))
#define NUM(base, row) ((size_t *)(void *)((base) + (row)->num_off))
#define CNUM(base, row) (*(const size_t *)(const void *)((base) + (row)->num_off))

/* Durations beyond a century are typos, and keep "now + d" from overflowing. */
#define MAX_DURATION_MS (36500ull * 86400 * 1000)

static void store_uint(void *p, size_t size, uint64_t v) {
  if (size == sizeof(uint32_t)) {
    uint32_t u = (uint32_t)v;
    memcpy(p, &u, sizeof(u));
  } else {
    memcpy(p, &v, sizeof(v));
  }
}

static uint64_t load_uint(const void *p, size_t size) {
  if (size == sizeof(uint32_t)) {
    uint32_t u;
    memcpy(&u, p, sizeof(u));
    return u;
  }
  uint64_t v;
  memcpy(&v, p, sizeof(v));
  return v;
}

/* json_uint reads a JSON number that is a whole number. */
static int json_uint(const cJSON *v, uint64_t *out) {
  if (!cJSON_IsNumber(v)) return -1;
  double d = v->valuedouble;
  if (!(d >= 0) || d > 9007199254740992.0 || d != (double)(uint64_t)d) return -1;
  *out = (uint64_t)d;
  return 0;
}

static int plain_text(const char *s) {
  for (; *s; s++) {
    if ((unsigned char)*s < 0x20 || *s == 0x7f) return 0;
  }
  return 1;
}

/* get_text returns the non-empty string in |val| or reports that |what|
 * was expected. */
static const char *get_text(conf__ctx_t *ctx, const char *what, const cJSON *val) {
  if (!cJSON_IsString(val)) {
    conf__expected(ctx, what, val, NULL);
    return NULL;
  }
  if (val->valuestring[0] == '\0') {
    conf__expected(ctx, what, val, "empty");
    return NULL;
  }
  if (!plain_text(val->valuestring)) {
    conf__expected(ctx, what, val, "contains a control character");
    return NULL;
  }
  return val->valuestring;
}

/* --- strings --- */

typedef const char *(*text_check_fn)(const char *s);

static void parse_text(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val, char *base,
                       const char *what, text_check_fn check) {
  const char *s = get_text(ctx, what, val);
  if (s == NULL) return;
  const char *why = check ? check(s) : NULL;
  if (why != NULL) {
    conf__expected(ctx, what, val, why);
    return;
  }
  char **f = FIELD(base, row, char *);
  gh_free(*f);
  *f = gh_strdup(s);
}

static cJSON *emit_string(const conf__row_t *row, const char *base) {
  return cJSON_CreateString(*CFIELD(base, row, char *));
}

static void free_string(const conf__row_t *row, char *base) {
  char **f = FIELD(base, row, char *);
  gh_free(*f);
  *f = NULL;
}

static int string_empty(const conf__row_t *row, const char *base) {
  return *CFIELD(base, row, char *) == NULL;
}

#define TEXT_TYPE(name, what, check)                                                         \
  static void parse_##name(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val,      \
                           char *base) {                                                     \
    parse_text(ctx, row, val, base, what, check);                                            \
  }                                                                                          \
  const conf__type_t conf__t_##name = {parse_##name, emit_string, free_string, string_empty, 0}

static const char *check_url_path(const char *s) {
  if (s[0] != '/') return "must begin with \"/\"";
  if (strchr(s, ' ') != NULL) return "contains a space";
  return NULL;
}

static const char *check_base64url(const char *s) {
  size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
  if (n == 0) return "no base64url characters";
  if (strspn(s + n, "=") != strlen(s + n)) return "only letters, digits, \"-\" and \"_\"";
  return NULL;
}

/* Standard base64 (RFC 4648 section 4) with its padding, as TSIG secrets
 * are written in BIND's and Knot's key files. */
static const char *check_base64(const char *s) {
  size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
  size_t pad = strspn(s + n, "=");
  if (n == 0) return "no base64 characters";
  if (s[n + pad] != '\0' || pad > 2) return "only letters, digits, \"+\", \"/\" and final \"=\"";
  if ((n + pad) % 4 != 0) return "its length is not a multiple of 4 (missing \"=\" padding?)";
  return NULL;
}

/* A request field name that Gatehouse writes itself (client_auth's): a
 * token (RFC 9110 5.1), and not one of the fields the proxy already
 * decides, whose meaning the upstream relies on. */
static const char *check_field_name(const char *s) {
  static const char tchar_extra[] = "!#$%&'*+-.^_`|~";
  for (const char *p = s; *p; p++) {
    unsigned char ch = (unsigned char)*p;
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          strchr(tchar_extra, ch) != NULL)) {
      return "a field name is letters, digits and !#$%&'*+-.^_`|~ only";
    }
  }
  static const char *const reserved[] = {
      "host", "connection", "keep-alive", "proxy-connection", "te", "trailer",
      "transfer-encoding", "upgrade", "content-length", "forwarded", "x-forwarded-for",
      "x-forwarded-proto", "x-forwarded-host",
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(reserved); i++) {
    if (strcasecmp(s, reserved[i]) == 0) return "the proxy writes or removes that field itself";
  }
  return NULL;
}

TEXT_TYPE(string, "a non-empty string", NULL);
TEXT_TYPE(field_name, "a header field name such as \"X-Client-Subject\"", check_field_name);
TEXT_TYPE(url, "an http:// or https:// URL", conf__url_check);
TEXT_TYPE(email, "an e-mail address", conf__email_check);
TEXT_TYPE(url_path, "a path such as \"/api/\"", check_url_path);
TEXT_TYPE(base64url, "a base64url string", check_base64url);
TEXT_TYPE(base64, "a base64 string", check_base64);

/* --- files --- */

/* writable_problem says why the file |path| (resolved) cannot be written
 * or created, or returns NULL. A file that does not exist yet is fine
 * when its directory does and can take a new file. */
static const char *writable_problem(const char *path, char **out_dir) {
  struct stat st;
  if (stat(path, &st) == 0) {
    if (S_ISDIR(st.st_mode)) return "it is a directory";
    return access(path, W_OK) != 0 ? strerror(errno) : NULL;
  }
  if (errno != ENOENT) return strerror(errno);
  const char *slash = strrchr(path, '/');
  *out_dir = slash == NULL ? gh_strdup(".")
             : slash == path ? gh_strdup("/") : gh_strndup(path, (size_t)(slash - path));
  if (stat(*out_dir, &st) != 0) return errno == ENOENT ? "no such directory" : strerror(errno);
  if (!S_ISDIR(st.st_mode)) return "not a directory";
  return access(*out_dir, W_OK | X_OK) != 0 ? strerror(errno) : NULL;
}

/* parse_file_into checks that the file |val| names (relative to the
 * configuration file) is a readable, or executable, regular file (with
 * CONF__CREATE: one that can be written or created), and stores the
 * resolved name in |*slot| either way. */
static void parse_file_into(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val,
                            char **slot) {
  const char *s = get_text(ctx, "a file name", val);
  if (s == NULL) return;
  char *path = conf__resolve(ctx, s);
  if (row->flags & CONF__CREATE) {
    char *dir = NULL;
    const char *problem = writable_problem(path, &dir);
    if (problem != NULL) {
      char *q = conf__quote(dir ? dir : path);
      conf__error(ctx, "cannot write %s%s: %s", dir ? "in the directory " : "", q, problem);
      gh_free(q);
    }
    gh_free(dir);
    gh_free(*slot);
    *slot = path;
    return;
  }
  int exec = (row->flags & CONF__EXEC) != 0;
  const char *problem = NULL;
  struct stat st;
  if (stat(path, &st) != 0) {
    problem = strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    problem = S_ISDIR(st.st_mode) ? "it is a directory" : "not a regular file";
  } else if (access(path, exec ? X_OK : R_OK) != 0) {
    problem = strerror(errno);
  }
  if (problem != NULL) {
    char *q = conf__quote(path);
    conf__error(ctx, "cannot %s %s: %s", exec ? "execute" : "read", q, problem);
    gh_free(q);
  }
  gh_free(*slot);
  *slot = path;
}

static void parse_file(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val, char *base) {
  parse_file_into(ctx, row, val, FIELD(base, row, char *));
}

const conf__type_t conf__t_file = {parse_file, emit_string, free_string, string_empty, 0};

/* A directory that need not exist yet (storage): resolved against the
 * configuration file's directory like the file names, so that where the
 * server keeps its keys does not depend on where it was started. */
static void parse_path(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val, char *base) {
  const char *s = get_text(ctx, "a non-empty string", val);
  if (s == NULL) return;
  char **f = FIELD(base, row, char *);
  gh_free(*f);
  *f = conf__resolve(ctx, s);
}

const conf__type_t conf__t_path = {parse_path, emit_string, free_string, string_empty, 0};

/* --- lists --- */

typedef void (*elem_fn)(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *item, void *slot);

/* parse_list checks that |val| is a list of |what| (or one string, with
 * CONF__ONE_OR_LIST) and calls |fn| on each element with its path. It
 * returns a new array of |*out_num| elements of |elem_size| bytes: an
 * element that fails its check stays zero, so indexes match the file. */
static void *parse_list(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val,
                        const char *what, size_t elem_size, elem_fn fn, size_t *out_num) {
  *out_num = 0;
  int single = cJSON_IsString(val) && (row->flags & CONF__ONE_OR_LIST);
  if (!single && !cJSON_IsArray(val)) {
    conf__expected(ctx, what, val, NULL);
    return NULL;
  }
  size_t n = single ? 1 : (size_t)cJSON_GetArraySize(val);
  if (n == 0 && (row->flags & CONF__NONEMPTY)) {
    conf__error(ctx, "expected %s, got an empty list", what);
    return NULL;
  }
  if (row->max != 0 && n > row->max) {
    conf__error(ctx, "expected at most %llu entries, got %zu", (unsigned long long)row->max, n);
    return NULL;
  }
  char *arr = n ? gh_calloc(n, elem_size) : NULL;
  if (single) {
    fn(ctx, row, val, arr);
  } else {
    size_t i = 0;
    for (const cJSON *item = val->child; item != NULL && i < n; item = item->next, i++) {
      size_t mark = conf__path_index(ctx, i);
      fn(ctx, row, item, arr + i * elem_size);
      conf__path_pop(ctx, mark);
    }
  }
  *out_num = n;
  return arr;
}

static int list_empty(const conf__row_t *row, const char *base) { return CNUM(base, row) == 0; }

static void free_string_list(const conf__row_t *row, char *base) {
  char ***f = FIELD(base, row, char **);
  size_t *num = NUM(base, row);
  for (size_t i = 0; i < *num && *f != NULL; i++) gh_free((*f)[i]);
  gh_free(*f);
  *f = NULL;
  *num = 0;
}

static cJSON *emit_string_list(const conf__row_t *row, const char *base) {
  char *const *list = *CFIELD(base, row, char **);
  cJSON *arr = cJSON_CreateArray();
  for (size_t i = 0; i < CNUM(base, row); i++) cJSON_AddItemToArray(arr, cJSON_CreateString(list[i]));
  return arr;
}

static void store_list(const conf__row_t *row, char *base, void *arr, size_t n) {
  *FIELD(base, row, void *) = arr;
  *NUM(base, row) = n;
}

static void file_elem(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *item, void *slot) {
  parse_file_into(ctx, row, item, slot);
}

static void parse_file_list(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val,
                            char *base) {
  size_t n;
  void *arr = parse_list(ctx, row, val, "a list of file names", sizeof(char *), file_elem, &n);
  store_list(row, base, arr, n);
}

const conf__type_t conf__t_file_list = {parse_file_list, emit_string_list, free_string_list,
                                         list_empty, 0};

static const char *host_what(unsigned flags) {
  if (flags & CONF__NO_WILDCARD) return "a lower-case host name";
  if (flags & CONF__ANY_HOST) return "a lower-case host name, \"*.name\" pattern or \"*\"";
  return "a lower-case host name or \"*.name\" pattern";
}

static void host_elem(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *item, void *slot) {
  const char *what = host_what(row->flags);
  if (!cJSON_IsString(item)) {
    conf__expected(ctx, what, item, NULL);
    return;
  }
  const char *why = conf__host_check(item->valuestring, row->flags);
  if (why != NULL) {
    conf__expected(ctx, what, item, why);
    return;
  }
  *(char **)slot = gh_strdup(item->valuestring);
}

static void parse_host_list(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val,
                            char *base) {
  size_t n;
  const char *what = (row->flags & CONF__NO_WILDCARD) ? "a list of host names"
                                                      : "a list of host names and patterns";
  void *arr = parse_list(ctx, row, val, what, sizeof(char *), host_elem, &n);
  store_list(row, base, arr, n);
}

const conf__type_t conf__t_host_list = {parse_host_list, emit_string_list, free_string_list,
                                         list_empty, 0};

/* --- addresses --- */

#define LISTENER_OBJECT_WHAT \
  "a listen address \":port\", \"IP:port\" or \"[IPv6]:port\", or an object with \"address\""

static const char *addr_what(unsigned flags) {
  if (flags & CONF__UNIX) {
    return "a listen address \":port\", \"IP:port\", \"[IPv6]:port\" or \"unix:PATH\"";
  }
  if (flags & CONF__IP_HOST) return "an address \"IP:port\" or \"[IPv6]:port\"";
  if (flags & CONF__SCHEME) return "an address \"host:port\", \"http://host:port\" or \"https://host:port\"";
  return (flags & CONF__LISTENER) ? "a listen address \":port\", \"IP:port\" or \"[IPv6]:port\""
                                  : "an address \"host:port\"";
}

/* resolve_unix resolves a unix socket's path like a file name, and makes
 * |addr->text| name the resolved path, so that messages and the printed
 * configuration say which socket it is. */
static void resolve_unix(conf__ctx_t *ctx, conf_addr_t *addr, const cJSON *item) {
  char *path = conf__resolve(ctx, addr->unix_path);
  gh_free(addr->unix_path);
  addr->unix_path = path;
  gh_free(addr->text);
  addr->text = gh_asprintf("unix:%s", path);
  struct sockaddr_un sun;
  if (strlen(path) >= sizeof(sun.sun_path)) {
    char why[64];
    snprintf(why, sizeof(why), "the resolved path is longer than %zu bytes",
             sizeof(sun.sun_path) - 1);
    conf__expected(ctx, addr_what(CONF__UNIX), item, why);
  }
}

/* string_http2 is the http2 a string entry of |row|'s list gets: on
 * where its object form has the key (listen.https), else off. */
static int string_http2(const conf__row_t *row) {
  const conf__table_t *t = row->arg;
  for (size_t i = 0; t != NULL && i < t->num_rows; i++) {
    if (strcmp(t->rows[i].name, "http2") == 0) return 1;
  }
  return 0;
}

/* addr_elem parses one address. A list whose row has a table (|arg|,
 * listen.https) also takes an object, {"address": ..., "http2": ...}; its
 * string entries stand for {"address": S} and get the table's http2
 * default. */
static void addr_elem(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *item, void *slot) {
  if (row->arg != NULL && cJSON_IsObject(item)) {
    conf__walk(ctx, row->arg, item, slot);
    return;
  }
  const char *what = addr_what(row->flags);
  if (!cJSON_IsString(item)) {
    const char *obj_what = (row->flags & CONF__LISTENER) ? LISTENER_OBJECT_WHAT
                           : "an address \"host:port\" or \"https://host:port\", or an object "
                             "with \"address\"";
    conf__expected(ctx, row->arg ? obj_what : what, item, NULL);
    return;
  }
  unsigned flags = (row->flags & CONF__LISTENER) ? CONF__ADDR_IP_ONLY : CONF__ADDR_NEED_HOST;
  if (row->flags & CONF__IP_HOST) flags = CONF__ADDR_IP_ONLY | CONF__ADDR_NEED_HOST;
  if (row->flags & CONF__UNIX) flags |= CONF__ADDR_UNIX;
  if (row->flags & CONF__SCHEME) flags |= CONF__ADDR_SCHEME;
  conf_addr_t *addr = slot;
  const char *why = conf__addr_parse(addr, item->valuestring, flags);
  if (why != NULL) {
    conf__expected(ctx, what, item, why);
  } else if (addr->unix_path != NULL) {
    resolve_unix(ctx, addr, item);
  } else {
    addr->http2 = string_http2(row);
  }
}

static void parse_addr_list(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val,
                            char *base) {
  size_t n;
  const char *what = (row->flags & CONF__LISTENER) ? "a list of listen addresses"
                     : (row->flags & CONF__IP_HOST) ? "a list of addresses \"IP:port\""
                                                    : "a list of addresses \"host:port\"";
  void *arr = parse_list(ctx, row, val, what, sizeof(conf_addr_t), addr_elem, &n);
  store_list(row, base, arr, n);
}

/* An entry that takes an object is written as one only where it differs
 * from the string form's defaults (http2 off, a PROXY header, upstream
 * options). */
static cJSON *emit_addr_list(const conf__row_t *row, const char *base) {
  const conf_addr_t *list = *CFIELD(base, row, conf_addr_t *);
  cJSON *arr = cJSON_CreateArray();
  for (size_t i = 0; i < CNUM(base, row); i++) {
    const conf_addr_t *a = &list[i];
    int plain = a->http2 == string_http2(row) && !a->proxy_protocol && a->num_proxy_trusted == 0 &&
                a->protocol == CONF_UP_HTTP1 && a->num_tls_ca == 0 && a->server_name == NULL &&
                a->tls_cert == NULL && !a->insecure_skip_verify && !a->send_proxy;
    cJSON_AddItemToArray(arr, row->arg != NULL && !plain
                                  ? conf__emit_walk(row->arg, (const char *)&list[i])
                                  : cJSON_CreateString(list[i].text));
  }
  return arr;
}

static void free_addr_list(const conf__row_t *row, char *base) {
  conf_addr_t **f = FIELD(base, row, conf_addr_t *);
  size_t *num = NUM(base, row);
  for (size_t i = 0; i < *num && *f != NULL; i++) conf_addr_cleanup(&(*f)[i]);
  gh_free(*f);
  *f = NULL;
  *num = 0;
}

const conf__type_t conf__t_addr_list = {parse_addr_list, emit_addr_list, free_addr_list,
                                         list_empty, 0};

/* A list of address blocks (proxy_trusted, trusted_proxies). */
static void cidr_elem(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *item, void *slot) {
  (void)row;
  static const char what[] = "an address block \"IP/len\" or an IP address";
  if (!cJSON_IsString(item)) {
    conf__expected(ctx, what, item, NULL);
    return;
  }
  const char *why = conf__cidr_parse(slot, item->valuestring);
  if (why != NULL) conf__expected(ctx, what, item, why);
}

static void parse_cidr_list(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val,
                            char *base) {
  size_t n;
  conf__cidrs_free(FIELD(base, row, conf_cidr_t *), NUM(base, row));
  void *arr = parse_list(ctx, row, val, "a list of address blocks \"IP/len\"",
                         sizeof(conf_cidr_t), cidr_elem, &n);
  store_list(row, base, arr, n);
}

static cJSON *emit_cidr_list(const conf__row_t *row, const char *base) {
  const conf_cidr_t *list = *CFIELD(base, row, conf_cidr_t *);
  cJSON *arr = cJSON_CreateArray();
  for (size_t i = 0; i < CNUM(base, row); i++) {
    cJSON_AddItemToArray(arr, cJSON_CreateString(list[i].text ? list[i].text : ""));
  }
  return arr;
}

static void free_cidr_list(const conf__row_t *row, char *base) {
  conf__cidrs_free(FIELD(base, row, conf_cidr_t *), NUM(base, row));
}

const conf__type_t conf__t_cidr_list = {parse_cidr_list, emit_cidr_list, free_cidr_list,
                                         list_empty, 0};

/* A single, optional address held by pointer (admin.listen). */
static void parse_addr(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val, char *base) {
  conf_addr_t addr;
  memset(&addr, 0, sizeof(addr));
  addr_elem(ctx, row, val, &addr);
  if (addr.text == NULL) return;
  conf_addr_t **f = FIELD(base, row, conf_addr_t *);
  *f = gh_malloc(sizeof(**f));
  **f = addr;
}

static cJSON *emit_addr(const conf__row_t *row, const char *base) {
  return cJSON_CreateString((*CFIELD(base, row, conf_addr_t *))->text);
}

static void free_addr(const conf__row_t *row, char *base) {
  conf_addr_t **f = FIELD(base, row, conf_addr_t *);
  conf_addr_cleanup(*f);
  gh_free(*f);
  *f = NULL;
}

static int addr_empty(const conf__row_t *row, const char *base) {
  return *CFIELD(base, row, conf_addr_t *) == NULL;
}

const conf__type_t conf__t_addr = {parse_addr, emit_addr, free_addr, addr_empty, 0};

/* A single address held in place, the "address" of a listen.https object:
 * only the address's own fields are set, so the object's other keys may
 * come in any order. */
static void parse_addr_here(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val,
                            char *base) {
  conf_addr_t addr;
  memset(&addr, 0, sizeof(addr));
  addr_elem(ctx, row, val, &addr);
  if (addr.text == NULL) return;
  conf_addr_t *f = FIELD(base, row, conf_addr_t);
  conf_addr_cleanup(f);
  f->text = addr.text;
  f->host = addr.host;
  f->port = addr.port;
  f->tls = addr.tls;
}

static cJSON *emit_addr_here(const conf__row_t *row, const char *base) {
  return cJSON_CreateString(CFIELD(base, row, conf_addr_t)->text);
}

static void free_addr_here(const conf__row_t *row, char *base) {
  conf_addr_cleanup(FIELD(base, row, conf_addr_t));
}

static int addr_here_empty(const conf__row_t *row, const char *base) {
  return CFIELD(base, row, conf_addr_t)->text == NULL;
}

const conf__type_t conf__t_addr_here = {parse_addr_here, emit_addr_here, free_addr_here,
                                         addr_here_empty, 0};

/* --- scalars --- */

static void parse_bool(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val, char *base) {
  if (!cJSON_IsBool(val)) {
    conf__expected(ctx, "true or false", val, NULL);
    return;
  }
  *FIELD(base, row, int) = cJSON_IsTrue(val);
}

static cJSON *emit_bool(const conf__row_t *row, const char *base) {
  return cJSON_CreateBool(*CFIELD(base, row, int));
}

const conf__type_t conf__t_bool = {parse_bool, emit_bool, NULL, NULL, 0};

#define DURATION_WHAT "a duration such as \"30s\", \"5m\", \"500ms\""

static void parse_duration(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val,
                           char *base) {
  uint64_t ms;
  if (!cJSON_IsString(val) || conf_parse_duration(val->valuestring, &ms) != 0) {
    conf__expected(ctx, DURATION_WHAT, val, NULL);
    return;
  }
  const char *why = NULL;
  if (ms == 0 && (row->flags & CONF__POSITIVE)) {
    why = "must be more than 0";
  } else if (ms > MAX_DURATION_MS) {
    why = "at most 36500d";
  } else if ((row->flags & CONF__SECONDS) && ms % 1000 != 0) {
    why = "whole seconds only";
  }
  if (why != NULL) {
    conf__expected(ctx, DURATION_WHAT, val, why);
    return;
  }
  *FIELD(base, row, uint64_t) = (row->flags & CONF__SECONDS) ? ms / 1000 : ms;
}

static cJSON *emit_duration(const conf__row_t *row, const char *base) {
  uint64_t v = *CFIELD(base, row, uint64_t);
  char buf[32];
  conf__format_duration(buf, sizeof(buf), (row->flags & CONF__SECONDS) ? v * 1000 : v);
  return cJSON_CreateString(buf);
}

/* Zero counts as empty: a required duration (hsts.max_age) must be
 * positive, so zero means that its object was not given. */
static int duration_empty(const conf__row_t *row, const char *base) {
  return *CFIELD(base, row, uint64_t) == 0;
}

const conf__type_t conf__t_duration = {parse_duration, emit_duration, NULL, duration_empty, 0};

static void parse_size(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val, char *base) {
  static const char what[] = "a size such as 16384 or \"16k\"";
  uint64_t n;
  int ok = cJSON_IsString(val) ? conf__parse_size(val->valuestring, &n) == 0
                               : json_uint(val, &n) == 0;
  if (!ok) {
    conf__expected(ctx, what, val, NULL);
    return;
  }
  if (n < row->min || n > row->max) {
    char lo[32], hi[32], why[80];
    conf__format_size(lo, sizeof(lo), row->min);
    conf__format_size(hi, sizeof(hi), row->max);
    snprintf(why, sizeof(why), "must be from %s to %s", lo, hi);
    conf__expected(ctx, what, val, why);
    return;
  }
  store_uint(base + row->off, row->size, n);
}

static cJSON *emit_uint(const conf__row_t *row, const char *base) {
  return cJSON_CreateNumber((double)load_uint(base + row->off, row->size));
}

const conf__type_t conf__t_size = {parse_size, emit_uint, NULL, NULL, 0};

/* check_count stores the whole number in |val| if it is within the row's
 * range; |alt| names what else would have done ("\"auto\" or "). */
static void check_count(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val, char *base,
                        const char *alt) {
  uint64_t n;
  if (json_uint(val, &n) != 0 || n < row->min || n > row->max) {
    char what[96];
    snprintf(what, sizeof(what), "%sa whole number from %llu to %llu", alt,
             (unsigned long long)row->min, (unsigned long long)row->max);
    conf__expected(ctx, what, val, NULL);
    return;
  }
  store_uint(base + row->off, row->size, n);
}

static void parse_count(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val,
                        char *base) {
  check_count(ctx, row, val, base, "");
}

const conf__type_t conf__t_count = {parse_count, emit_uint, NULL, NULL, 0};

/* "auto" is resolved here, to the CPUs this process may use (cpus.c)
 * within the row's range. */
static void parse_workers(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val,
                          char *base) {
  if (!cJSON_IsString(val) || strcmp(val->valuestring, "auto") != 0) {
    check_count(ctx, row, val, base, "\"auto\" or ");
    return;
  }
  uint64_t n = conf_cpu_count();
  store_uint(base + row->off, row->size, n < row->min ? row->min : n > row->max ? row->max : n);
}

const conf__type_t conf__t_workers = {parse_workers, emit_uint, NULL, NULL, 0};

static void parse_rate(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val, char *base) {
  int allow_none = !(row->flags & CONF__POSITIVE);
  const char *what = allow_none ? "a rate \"COUNT/DURATION\" such as \"10/1h\", or \"0\""
                                : "a rate \"COUNT/DURATION\" such as \"10/1h\"";
  if (!cJSON_IsString(val)) {
    conf__expected(ctx, what, val, NULL);
    return;
  }
  conf_rate_t rate;
  const char *why = conf__parse_rate(val->valuestring, allow_none, &rate);
  if (why == NULL && rate.per_ms > MAX_DURATION_MS) why = "at most 36500d";
  if (why != NULL) {
    conf__expected(ctx, what, val, why);
    return;
  }
  *FIELD(base, row, conf_rate_t) = rate;
}

static cJSON *emit_rate(const conf__row_t *row, const char *base) {
  const conf_rate_t *r = CFIELD(base, row, conf_rate_t);
  if (r->count == 0) return cJSON_CreateString("0");
  char dur[32], buf[64];
  conf__format_duration(dur, sizeof(dur), r->per_ms);
  snprintf(buf, sizeof(buf), "%u/%s", (unsigned)r->count, dur);
  return cJSON_CreateString(buf);
}

const conf__type_t conf__t_rate = {parse_rate, emit_rate, NULL, NULL, 0};

/* --- enumerations --- */

/* enum_value returns the index of |val| among the row's names, or reports
 * the names and the closest one and returns -1. */
static int enum_value(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val) {
  const conf__enum_t *e = row->arg;
  if (cJSON_IsString(val)) {
    for (size_t i = 0; i < e->num; i++) {
      if (strcmp(val->valuestring, e->names[i]) == 0) return (int)i;
    }
  }
  char *what = gh_strdup("one of");
  for (size_t i = 0; i < e->num; i++) {
    char *next = gh_asprintf("%s%s \"%s\"", what, i ? "," : "", e->names[i]);
    gh_free(what);
    what = next;
  }
  const char *near = cJSON_IsString(val) ? conf__closest(val->valuestring, e->names, e->num) : NULL;
  char *why = near ? gh_asprintf("did you mean \"%s\"?", near) : NULL;
  conf__expected(ctx, what, val, why);
  gh_free(why);
  gh_free(what);
  return -1;
}

static void parse_enum(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val, char *base) {
  int v = enum_value(ctx, row, val);
  if (v >= 0) *FIELD(base, row, int) = v;
}

static cJSON *emit_enum(const conf__row_t *row, const char *base) {
  const conf__enum_t *e = row->arg;
  int v = *CFIELD(base, row, int);
  return cJSON_CreateString(v >= 0 && (size_t)v < e->num ? e->names[v] : "?");
}

const conf__type_t conf__t_enum = {parse_enum, emit_enum, NULL, NULL, 0};

/* An enum list is stored in a fixed array of row->max ints at row->off,
 * with its count at row->num_off (acme.challenges). */
static void enum_elem(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *item, void *slot) {
  *(int *)slot = enum_value(ctx, row, item);
}

static void parse_enum_list(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val,
                            char *base) {
  size_t n;
  int *vals = parse_list(ctx, row, val, "a list of names", sizeof(int), enum_elem, &n);
  int *out = FIELD(base, row, int);
  size_t kept = 0;
  for (size_t i = 0; i < n; i++) {
    if (vals[i] < 0) continue;
    int dup = 0;
    for (size_t j = 0; j < kept; j++) dup |= out[j] == vals[i];
    if (dup) {
      size_t mark = conf__path_index(ctx, i);
      conf__error(ctx, "\"%s\" is listed twice", ((const conf__enum_t *)row->arg)->names[vals[i]]);
      conf__path_pop(ctx, mark);
      continue;
    }
    out[kept++] = vals[i];
  }
  gh_free(vals);
  *NUM(base, row) = kept;
}

static cJSON *emit_enum_list(const conf__row_t *row, const char *base) {
  const conf__enum_t *e = row->arg;
  const int *vals = CFIELD(base, row, int);
  cJSON *arr = cJSON_CreateArray();
  for (size_t i = 0; i < CNUM(base, row); i++) {
    cJSON_AddItemToArray(arr, cJSON_CreateString(e->names[vals[i]]));
  }
  return arr;
}

const conf__type_t conf__t_enum_list = {parse_enum_list, emit_enum_list, NULL, list_empty, 0};

/* --- objects --- */

static void parse_object(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val,
                         char *base) {
  if (val != NULL && !cJSON_IsObject(val)) {
    conf__expected(ctx, "an object", val, NULL);
    val = NULL; /* still apply the defaults, so that checks see sane values */
  }
  conf__walk(ctx, row->arg, val, base + row->off);
}

static cJSON *emit_object(const conf__row_t *row, const char *base) {
  return conf__emit_walk(row->arg, base + row->off);
}

static void free_object(const conf__row_t *row, char *base) {
  conf__free_walk(row->arg, base + row->off);
}

static int object_empty(const conf__row_t *row, const char *base) {
  return conf__table_absent(row->arg, base + row->off);
}

const conf__type_t conf__t_object = {parse_object, emit_object, free_object, object_empty, 1};

/* A site's "hsts": the object of the row's table, or the header's value
 * as text, "max-age=31536000; includeSubDomains; preload", which sets the
 * same fields (and is printed back as the object). */
static void parse_hsts(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val, char *base) {
  if (!cJSON_IsString(val)) {
    if (val != NULL && !cJSON_IsObject(val)) {
      conf__expected(ctx, "an object or a header value such as \"max-age=31536000; "
                          "includeSubDomains\"", val, NULL);
      val = NULL;
    }
    conf__walk(ctx, row->arg, val, base + row->off);
    return;
  }
  conf_site_t *site = (conf_site_t *)(void *)(base + row->off);
  const char *why = conf__hsts_parse(val->valuestring, &site->hsts_max_age_s,
                                     &site->hsts_include_subdomains, &site->hsts_preload);
  if (why != NULL) {
    conf__expected(ctx, "a Strict-Transport-Security value such as \"max-age=31536000; "
                        "includeSubDomains\"", val, why);
  }
}

const conf__type_t conf__t_hsts = {parse_hsts, emit_object, free_object, object_empty, 1};

/* "storage": a directory as a string, or the object of the row's table
 * ({"directory": ..., "etcd": {...}}). Printed back as the string unless
 * etcd is on, so configurations without a fleet read as they always did. */
static void parse_storage(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val,
                          char *base) {
  if (cJSON_IsString(val)) {
    /* The defaults first, then the string as "directory", at the path
     * "storage" itself, which is where the user wrote it. */
    const conf__table_t *t = row->arg;
    conf__walk(ctx, t, NULL, base + row->off);
    t->rows[0].type->parse(ctx, &t->rows[0], val, base + row->off);
    return;
  }
  if (val != NULL && !cJSON_IsObject(val)) {
    conf__expected(ctx, "a directory, or an object with \"directory\" and \"etcd\"", val, NULL);
    val = NULL;
  }
  conf__walk(ctx, row->arg, val, base + row->off);
}

static cJSON *emit_storage(const conf__row_t *row, const char *base) {
  const conf_t *conf = (const conf_t *)(const void *)(base + row->off);
  if (!conf->etcd.enabled) return cJSON_CreateString(conf->storage);
  return conf__emit_walk(row->arg, base + row->off);
}

const conf__type_t conf__t_storage = {parse_storage, emit_storage, free_object, object_empty, 1};

/* An object list holds row->size-byte elements (sites, routes). */
static void object_elem(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *item,
                        void *slot) {
  if (!cJSON_IsObject(item)) {
    conf__expected(ctx, "an object", item, NULL);
    return;
  }
  conf__walk(ctx, row->arg, item, slot);
}

static void parse_object_list(conf__ctx_t *ctx, const conf__row_t *row, const cJSON *val,
                              char *base) {
  size_t n;
  void *arr = parse_list(ctx, row, val, "a list of objects", row->size, object_elem, &n);
  store_list(row, base, arr, n);
}

static cJSON *emit_object_list(const conf__row_t *row, const char *base) {
  const char *arr = *CFIELD(base, row, char *);
  cJSON *out = cJSON_CreateArray();
  for (size_t i = 0; i < CNUM(base, row); i++) {
    cJSON_AddItemToArray(out, conf__emit_walk(row->arg, arr + i * row->size));
  }
  return out;
}

static void free_object_list(const conf__row_t *row, char *base) {
  char **f = FIELD(base, row, char *);
  size_t *num = NUM(base, row);
  for (size_t i = 0; i < *num && *f != NULL; i++) conf__free_walk(row->arg, *f + i * row->size);
  gh_free(*f);
  *f = NULL;
  *num = 0;
}

const conf__type_t conf__t_object_list = {parse_object_list, emit_object_list, free_object_list,
                                           list_empty, 0};
