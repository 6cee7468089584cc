/* quick.c: quick mode, `gatehouse proxy --to ADDR ...`: command-line
 * flags turned into the JSON document a configuration file would hold, so
 * that quick mode and files share one validator. Only the shape of the
 * command line is checked here (known flags, values present, --to given);
 * the values themselves are checked by conf_parse.
 *
 * The flags are a table: a new flag is a row naming where its value goes,
 * plus the lines in build_doc that place it in the document. Both
 * "--flag VALUE" and "--flag=VALUE" are accepted. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "conf/conf.h"
#include "conf/internal.h"

typedef struct {
  cJSON *to, *from, *https, *http; /* string arrays, NULL until given */
  cJSON *ca_roots, *challenges, *on_demand;
  const char *cert, *key, *workers, *access_log, *log_level;
  const char *acme_directory, *email, *storage, *ask, *admin;
  int no_resumption, print_config;
} quick_t;

typedef enum {
  QUICK_LIST,   /* repeatable; each value appended to a cJSON array */
  QUICK_STRING, /* one value */
  QUICK_SWITCH, /* no value; sets an int */
} quick_kind_t;

typedef struct {
  const char *name;
  const char *metavar; /* for messages: "--to needs a value (ADDR)" */
  quick_kind_t kind;
  size_t off; /* the field of quick_t */
} quick_flag_t;

#define F(name, metavar, kind, field) {name, metavar, kind, offsetof(quick_t, field)}

static const quick_flag_t quick_flags[] = {
    F("--to", "ADDR", QUICK_LIST, to),
    F("--from", "NAME", QUICK_LIST, from),
    F("--https", "ADDR", QUICK_LIST, https),
    F("--http", "ADDR", QUICK_LIST, http),
    F("--cert", "FILE", QUICK_STRING, cert),
    F("--key", "FILE", QUICK_STRING, key),
    F("--workers", "N", QUICK_STRING, workers),
    F("--no-resumption", NULL, QUICK_SWITCH, no_resumption),
    F("--access-log", "json|combined|off", QUICK_STRING, access_log),
    F("--log-level", "debug|info|warn|error", QUICK_STRING, log_level),
    F("--print-config", NULL, QUICK_SWITCH, print_config),
    F("--acme-directory", "URL", QUICK_STRING, acme_directory),
    F("--acme-ca-root", "FILE", QUICK_LIST, ca_roots),
    F("--email", "ADDR", QUICK_STRING, email),
    F("--storage", "DIR", QUICK_STRING, storage),
    F("--challenge", "tls-alpn-01|http-01|dns-01", QUICK_LIST, challenges),
    F("--on-demand", "PATTERN", QUICK_LIST, on_demand),
    F("--ask", "URL", QUICK_STRING, ask),
    F("--admin", "ADDR", QUICK_STRING, admin),
};

#undef F

static const quick_flag_t *find_flag(const char *name, size_t len) {
  for (size_t i = 0; i < GH_ARRAY_LEN(quick_flags); i++) {
    if (strlen(quick_flags[i].name) == len && memcmp(quick_flags[i].name, name, len) == 0) {
      return &quick_flags[i];
    }
  }
  return NULL;
}

static char *unknown_flag(const char *arg, size_t len) {
  const char *names[GH_ARRAY_LEN(quick_flags)];
  for (size_t i = 0; i < GH_ARRAY_LEN(quick_flags); i++) names[i] = quick_flags[i].name;
  char *flag = gh_strndup(arg, len);
  char *q = conf__quote(flag);
  const char *near = conf__closest(flag, names, GH_ARRAY_LEN(names));
  char *msg = near ? gh_asprintf("unknown flag %s; did you mean \"%s\"?", q, near)
                   : gh_asprintf("unknown flag %s", q);
  gh_free(q);
  gh_free(flag);
  return msg;
}

/* apply stores |value| (NULL for a switch) as |flag| says. Returns NULL or
 * an error message. */
static char *apply(quick_t *q, const quick_flag_t *flag, const char *value) {
  char *field = (char *)q + flag->off;
  switch (flag->kind) {
    case QUICK_LIST: {
      cJSON **arr = (cJSON **)(void *)field;
      if (*arr == NULL) *arr = cJSON_CreateArray();
      cJSON_AddItemToArray(*arr, cJSON_CreateString(value));
      return NULL;
    }
    case QUICK_STRING: {
      const char **s = (const char **)(void *)field;
      if (*s != NULL) return gh_asprintf("%s given twice", flag->name);
      *s = value;
      return NULL;
    }
    case QUICK_SWITCH:
      *(int *)(void *)field = 1;
      return NULL;
  }
  return NULL;
}

static cJSON *list_or(cJSON **given, const char *def) {
  cJSON *arr = *given;
  *given = NULL;
  if (arr == NULL) {
    arr = cJSON_CreateArray();
    cJSON_AddItemToArray(arr, cJSON_CreateString(def));
  }
  return arr;
}

static int all_digits(const char *s) {
  if (*s == '\0' || strlen(s) > 9) return 0;
  return strspn(s, "0123456789") == strlen(s);
}

/* build_doc turns the flags into the configuration document, taking the
 * arrays out of |q|. */
static cJSON *build_doc(quick_t *q) {
  cJSON *doc = cJSON_CreateObject();
  /* Each listener has its own default here, unlike in a file, where the
   * defaults apply only when "listen" is absent. */
  cJSON *listen = cJSON_AddObjectToObject(doc, "listen");
  cJSON_AddItemToObject(listen, "https", list_or(&q->https, ":443"));
  cJSON_AddItemToObject(listen, "http", list_or(&q->http, ":80"));
  if (q->workers != NULL) {
    cJSON_AddItemToObject(doc, "workers", all_digits(q->workers)
                                              ? cJSON_CreateNumber((double)atol(q->workers))
                                              : cJSON_CreateString(q->workers));
  }
  cJSON *site = cJSON_CreateObject();
  if (q->on_demand != NULL || q->ask != NULL) {
    /* On demand: the site answers any name; the policy decides which get a
     * certificate at their first handshake. */
    cJSON *hosts = q->from ? q->from : cJSON_CreateArray();
    q->from = NULL;
    cJSON_AddItemToArray(hosts, cJSON_CreateString("*"));
    cJSON_AddItemToObject(site, "hosts", hosts);
    cJSON_AddTrueToObject(site, "default");
  } else if (q->from != NULL) {
    cJSON_AddItemToObject(site, "hosts", q->from);
    q->from = NULL;
  } else {
    /* No --from: answer every name, including those without SNI. */
    cJSON_AddItemToObject(site, "hosts", list_or(&q->from, "*"));
    cJSON_AddTrueToObject(site, "default");
  }
  cJSON_AddItemToObject(site, "upstreams", q->to);
  q->to = NULL;
  if (q->cert != NULL || q->key != NULL) {
    cJSON *tls = cJSON_AddObjectToObject(site, "tls");
    if (q->cert != NULL) cJSON_AddStringToObject(tls, "cert", q->cert);
    if (q->key != NULL) cJSON_AddStringToObject(tls, "key", q->key);
  }
  cJSON *sites = cJSON_AddArrayToObject(doc, "sites");
  cJSON_AddItemToArray(sites, site);
  if (q->acme_directory != NULL) {
    cJSON *acme = cJSON_AddObjectToObject(doc, "acme");
    cJSON_AddStringToObject(acme, "directory", q->acme_directory);
    if (q->email != NULL) cJSON_AddStringToObject(acme, "email", q->email);
    if (q->ca_roots != NULL) cJSON_AddItemToObject(acme, "ca_roots", q->ca_roots);
    q->ca_roots = NULL;
    if (q->challenges != NULL) cJSON_AddItemToObject(acme, "challenges", q->challenges);
    q->challenges = NULL;
  }
  if (q->on_demand != NULL || q->ask != NULL) {
    cJSON *od = cJSON_AddObjectToObject(doc, "on_demand");
    if (q->on_demand != NULL) cJSON_AddItemToObject(od, "allow", q->on_demand);
    q->on_demand = NULL;
    if (q->ask != NULL) cJSON_AddStringToObject(od, "ask", q->ask);
  }
  if (q->storage != NULL) cJSON_AddStringToObject(doc, "storage", q->storage);
  if (q->admin != NULL) {
    cJSON *admin = cJSON_AddObjectToObject(doc, "admin");
    cJSON_AddStringToObject(admin, "listen", q->admin);
  }
  if (q->no_resumption) {
    cJSON *tls = cJSON_AddObjectToObject(doc, "tls");
    cJSON_AddFalseToObject(tls, "resumption");
  }
  if (q->log_level != NULL || q->access_log != NULL) {
    cJSON *log = cJSON_AddObjectToObject(doc, "log");
    if (q->log_level != NULL) cJSON_AddStringToObject(log, "level", q->log_level);
    if (q->access_log != NULL) cJSON_AddStringToObject(log, "access", q->access_log);
  }
  return doc;
}

/* parse_args fills |q| from the command line; returns NULL or an error. */
static char *parse_args(quick_t *q, int argc, char **argv) {
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i];
    if (strncmp(arg, "--", 2) != 0) {
      char *qa = conf__quote(arg);
      char *msg = gh_asprintf("unexpected argument %s (flags start with \"--\")", qa);
      gh_free(qa);
      return msg;
    }
    const char *eq = strchr(arg, '=');
    size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
    const quick_flag_t *flag = find_flag(arg, name_len);
    if (flag == NULL) return unknown_flag(arg, name_len);
    const char *value = NULL;
    if (flag->metavar == NULL) {
      if (eq != NULL) return gh_asprintf("%s takes no value", flag->name);
    } else if (eq != NULL) {
      value = eq + 1;
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return gh_asprintf("%s needs a value (%s)", flag->name, flag->metavar);
    }
    char *err = apply(q, flag, value);
    if (err != NULL) return err;
  }
  if (q->to == NULL) return gh_strdup("--to ADDR is required: the upstream to forward to");
  if ((q->cert == NULL) != (q->key == NULL)) {
    return gh_strdup(q->cert ? "--cert FILE needs --key FILE" : "--key FILE needs --cert FILE");
  }
  if (q->acme_directory == NULL) {
    static const char *const needs_acme[] = {"--acme-ca-root", "--email", "--challenge",
                                             "--on-demand", "--ask"};
    const void *given[] = {q->ca_roots, q->email, q->challenges, q->on_demand, q->ask};
    for (size_t i = 0; i < GH_ARRAY_LEN(needs_acme); i++) {
      if (given[i] != NULL) return gh_asprintf("%s needs --acme-directory URL", needs_acme[i]);
    }
  }
  if (q->cert == NULL && q->acme_directory == NULL) {
    return gh_strdup("--cert FILE and --key FILE are required, or --acme-directory URL to "
                     "obtain certificates for the --from names");
  }
  /* Without --cert the --from names are ACME-managed: without them there
   * is no name to order a certificate for. */
  if (q->cert == NULL && q->from == NULL && q->on_demand == NULL && q->ask == NULL) {
    return gh_strdup("name the hosts with --from: certificates from --acme-directory are "
                     "ordered for the --from names");
  }
  return NULL;
}

cJSON *conf_quick_json(char **out_err, int *out_print_config, int argc, char **argv) {
  quick_t q;
  memset(&q, 0, sizeof(q));
  *out_err = NULL;
  if (out_print_config != NULL) *out_print_config = 0;
  cJSON *doc = NULL;
  char *err = parse_args(&q, argc, argv);
  if (err != NULL) {
    *out_err = err;
  } else {
    doc = build_doc(&q);
    if (out_print_config != NULL) *out_print_config = q.print_config;
  }
  cJSON_Delete(q.to);
  cJSON_Delete(q.from);
  cJSON_Delete(q.https);
  cJSON_Delete(q.http);
  cJSON_Delete(q.ca_roots);
  cJSON_Delete(q.challenges);
  cJSON_Delete(q.on_demand);
  return doc;
}
