/* quick.c: quick mode, `gatehouse proxy --to ADDR ...`: command-line
 * flags, or the environment variables that stand for them, turned into the
 * JSON document a configuration file would hold, so that quick mode and
 * files share one validator. Only the shape of the input is checked here
 * (known flags, values present, the upstream given, on|off values, which
 * become JSON booleans); the values themselves are checked by conf_parse.
 *
 * The flags are a table: a new flag is a row naming its environment
 * variable and where its value goes, plus the lines in build_doc that
 * place it in the document. Both "--flag VALUE" and "--flag=VALUE" are
 * accepted. Every flag has exactly one variable and the other way round,
 * so a container configured by its environment and a command line never
 * drift apart; a flag given on the command line overrides its variable. */
#include <stddef.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/common.h"
#include "conf/conf.h"
#include "conf/internal.h"

typedef struct {
  cJSON *to, *from, *https, *http; /* string arrays, NULL until given */
  cJSON *ca_roots, *challenges, *on_demand;
  const char *cert, *key, *workers, *access_log, *log_level;
  const char *acme_directory, *email, *storage, *ask, *admin, *admin_token, *log_format;
  const char *eab_kid, *eab_hmac_key;
  const char *http2; /* on|off, as switches in variables: checked by check_shape */
  int no_resumption, print_config;
  unsigned char given[32]; /* per quick_flags row: GIVEN_FLAG or GIVEN_ENV */
  char *owned[32];          /* per row: the value taken from the environment */
} quick_t;

enum { GIVEN_FLAG = 1, GIVEN_ENV = 2 };

typedef enum {
  QUICK_LIST,   /* repeatable; each value appended to a cJSON array. In a
                   variable: values separated by commas or white space */
  QUICK_STRING, /* one value */
  QUICK_SWITCH, /* no value; sets an int. In a variable: 1/true/yes/on or
                   0/false/no/off */
} quick_kind_t;

typedef struct {
  const char *name;
  const char *env;
  const char *metavar; /* for messages: "--to needs a value (ADDR)" */
  quick_kind_t kind;
  size_t off; /* the field of quick_t */
} quick_flag_t;

#define F(name, env, metavar, kind, field) \
  {name, "GATEHOUSE_" env, metavar, kind, offsetof(quick_t, field)}

static const quick_flag_t quick_flags[] = {
    F("--to", "UPSTREAM", "ADDR", QUICK_LIST, to),
    F("--from", "HOSTS", "NAME", QUICK_LIST, from),
    F("--https", "HTTPS", "ADDR", QUICK_LIST, https),
    F("--http", "HTTP", "ADDR", QUICK_LIST, http),
    F("--http2", "HTTP2", "on|off", QUICK_STRING, http2),
    F("--cert", "CERT", "FILE", QUICK_STRING, cert),
    F("--key", "KEY", "FILE", QUICK_STRING, key),
    F("--workers", "WORKERS", "N", QUICK_STRING, workers),
    F("--no-resumption", "NO_RESUMPTION", NULL, QUICK_SWITCH, no_resumption),
    F("--access-log", "ACCESS_LOG", "json|combined|off", QUICK_STRING, access_log),
    F("--log-level", "LOG_LEVEL", "debug|info|warn|error", QUICK_STRING, log_level),
    F("--log-format", "LOG_FORMAT", "text|json", QUICK_STRING, log_format),
    F("--print-config", "PRINT_CONFIG", NULL, QUICK_SWITCH, print_config),
    F("--acme-directory", "ACME_DIRECTORY", "URL", QUICK_STRING, acme_directory),
    F("--acme-ca-root", "ACME_CA_ROOT", "FILE", QUICK_LIST, ca_roots),
    F("--email", "EMAIL", "ADDR", QUICK_STRING, email),
    F("--eab-kid", "EAB_KID", "KID", QUICK_STRING, eab_kid),
    F("--eab-hmac-key", "EAB_HMAC_KEY", "KEY", QUICK_STRING, eab_hmac_key),
    F("--storage", "STORAGE", "DIR", QUICK_STRING, storage),
    F("--challenge", "CHALLENGE", "tls-alpn-01|http-01|dns-01", QUICK_LIST, challenges),
    F("--on-demand", "ON_DEMAND_ALLOW", "PATTERN", QUICK_LIST, on_demand),
    F("--ask", "ON_DEMAND_ASK", "URL", QUICK_STRING, ask),
    F("--admin", "ADMIN", "ADDR", QUICK_STRING, admin),
    F("--admin-token", "ADMIN_TOKEN", "TOKEN", QUICK_STRING, admin_token),
};

#undef F

_Static_assert(GH_ARRAY_LEN(quick_flags) <= sizeof(((quick_t *)0)->given), "quick_t.given");

static const quick_flag_t *find_flag(const char *name, size_t len) {
  for (size_t i = 0; i < GH_ARRAY_LEN(quick_flags); i++) {
    if (strlen(quick_flags[i].name) == len && memcmp(quick_flags[i].name, name, len) == 0) {
      return &quick_flags[i];
    }
  }
  return NULL;
}

/* row returns the table row whose value lives at |off| in quick_t. */
static const quick_flag_t *row(size_t off) {
  for (size_t i = 0; i < GH_ARRAY_LEN(quick_flags); i++) {
    if (quick_flags[i].off == off) return &quick_flags[i];
  }
  return NULL; /* not reached: every field has a row */
}

#define ROW(field) row(offsetof(quick_t, field))

/* said names a setting the way the user gave it: the flag or the
 * variable. */
static const char *said(const quick_t *q, const quick_flag_t *f) {
  return q->given[f - quick_flags] == GIVEN_ENV ? f->env : f->name;
}

/* wanted names a setting that is missing, both ways: "--key FILE (or
 * GATEHOUSE_KEY)". The result is allocated. */
static char *wanted(const quick_flag_t *f) {
  return gh_asprintf("%s %s (or %s)", f->name, f->metavar, f->env);
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

/* env_value returns the value of |name| in |envp| ("NAME=VALUE" strings),
 * or NULL. */
static const char *env_value(char *const *envp, const char *name) {
  size_t len = strlen(name);
  for (char *const *e = envp; e && *e; e++) {
    if (strncmp(*e, name, len) == 0 && (*e)[len] == '=') return *e + len + 1;
  }
  return NULL;
}

static const char *const truthy[] = {"1", "true", "yes", "on"};
static const char *const falsy[] = {"0", "false", "no", "off"};

static int one_of(const char *s, const char *const *words, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (strcasecmp(s, words[i]) == 0) return 1;
  }
  return 0;
}

/* switch_value reads a switch's value: 1 for 1/true/yes/on, 0 for
 * 0/false/no/off (any case), -1 for anything else. */
static int switch_value(const char *s) {
  if (one_of(s, truthy, GH_ARRAY_LEN(truthy))) return 1;
  return one_of(s, falsy, GH_ARRAY_LEN(falsy)) ? 0 : -1;
}

/* bad_switch returns the message for a switch value |v| given as |name|. */
static char *bad_switch(const char *name, const char *v) {
  char *qv = conf__quote(v);
  char *msg =
      gh_asprintf("%s: expected 1, true, yes or on (or 0, false, no, off), got %s", name, qv);
  gh_free(qv);
  return msg;
}

char *conf_env_get(char *const *envp, const char *name, char **out) {
  *out = NULL;
  char *file_var = gh_asprintf("%s_FILE", name);
  const char *path = env_value(envp, file_var);
  const char *v = env_value(envp, name);
  char *err = NULL;
  if (path != NULL && path[0] != '\0') {
    char *text = NULL;
    size_t len = 0;
    if (conf__read_file(path, &text, &len) != 0) {
      char *qp = conf__quote(path);
      err = gh_asprintf("%s: cannot read %s: %s", file_var, qp, strerror(errno));
      gh_free(qp);
    } else {
      /* The file's last line break (and trailing blanks) are not part of
       * the value; a NUL byte would cut it short unseen. */
      while (len > 0 && strchr(" \t\r\n", text[len - 1]) != NULL) len--;
      if (memchr(text, '\0', len) != NULL) {
        err = gh_asprintf("%s: %s holds a NUL byte", file_var, path);
        gh_free(text);
      } else if (v != NULL && v[0] != '\0') {
        err = gh_asprintf("%s and %s are both set; set one", name, file_var);
        gh_free(text);
      } else {
        text[len] = '\0'; /* len < the buffer: read_file stops at a full one only at EOF */
        *out = text;
      }
    }
  } else if (v != NULL) {
    *out = gh_strdup(v);
  }
  if (*out != NULL && (*out)[0] == '\0') { /* empty counts as unset */
    gh_free(*out);
    *out = NULL;
  }
  gh_free(file_var);
  return err;
}

/* apply_env fills every setting the command line left out from its
 * variable, or from the file its NAME_FILE variable names. An empty
 * variable counts as unset. Returns NULL or an error. */
static char *apply_env(quick_t *q, char *const *envp) {
  static const char seps[] = ", \t\r\n";
  for (size_t i = 0; i < GH_ARRAY_LEN(quick_flags); i++) {
    const quick_flag_t *f = &quick_flags[i];
    if (q->given[i]) continue;
    char *v = NULL;
    char *err = conf_env_get(envp, f->env, &v);
    if (err != NULL) return err;
    if (v == NULL) continue;
    q->owned[i] = v; /* QUICK_STRING values point into it */
    switch (f->kind) {
      case QUICK_LIST:
        for (const char *p = v + strspn(v, seps); *p; p += strspn(p, seps)) {
          size_t n = strcspn(p, seps);
          char *item = gh_strndup(p, n);
          apply(q, f, item);
          gh_free(item);
          p += n;
        }
        break;
      case QUICK_STRING:
        apply(q, f, v);
        break;
      case QUICK_SWITCH: {
        int on = switch_value(v);
        if (on < 0) return bad_switch(f->env, v);
        if (on) apply(q, f, NULL);
        break;
      }
    }
    q->given[i] = GIVEN_ENV;
  }
  return NULL;
}

/* env_warnings returns one line per GATEHOUSE_* variable in |envp| that
 * no flag stands for (a misspelt name would otherwise be ignored without a
 * word), or NULL. */
static char *env_warnings(char *const *envp) {
  /* Names are compared without the common prefix, so that a suggestion
   * must be near in the part that differs. */
  const char *names[GH_ARRAY_LEN(quick_flags)];
  for (size_t i = 0; i < GH_ARRAY_LEN(quick_flags); i++) names[i] = quick_flags[i].env + 10;
  char *out = NULL;
  for (char *const *e = envp; e && *e; e++) {
    if (strncmp(*e, "GATEHOUSE_", 10) != 0) continue;
    const char *eq = strchr(*e, '=');
    char *name = gh_strndup(*e, eq ? (size_t)(eq - *e) : strlen(*e));
    int known = 0;
    const char *rest = name + 10;
    size_t len = strlen(rest);
    for (size_t i = 0; i < GH_ARRAY_LEN(names); i++) {
      size_t n = strlen(names[i]);
      known |= strcmp(rest, names[i]) == 0 ||
               (len == n + 5 && strncmp(rest, names[i], n) == 0 && strcmp(rest + n, "_FILE") == 0);
    }
    if (!known) {
      const char *near = conf__closest(rest, names, GH_ARRAY_LEN(names));
      char *line = near ? gh_asprintf("%s%s is not a gatehouse variable (ignored); did you mean "
                                      "GATEHOUSE_%s?\n",
                                      out ? out : "", name, near)
                        : gh_asprintf("%s%s is not a gatehouse variable (ignored)\n",
                                      out ? out : "", name);
      gh_free(out);
      out = line;
    }
    gh_free(name);
  }
  return out;
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

/* with_http2 returns the addresses of |list| as listen.https objects,
 * {"address": A, "http2": on}, and frees |list|. */
static cJSON *with_http2(cJSON *list, int on) {
  cJSON *out = cJSON_CreateArray();
  for (const cJSON *a = list->child; a != NULL; a = a->next) {
    cJSON *entry = cJSON_CreateObject();
    cJSON_AddStringToObject(entry, "address", a->valuestring);
    cJSON_AddBoolToObject(entry, "http2", on);
    cJSON_AddItemToArray(out, entry);
  }
  cJSON_Delete(list);
  return out;
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
  cJSON *https = list_or(&q->https, ":443");
  if (q->http2 != NULL) https = with_http2(https, switch_value(q->http2));
  cJSON_AddItemToObject(listen, "https", https);
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
    if (q->eab_kid != NULL) {
      cJSON *eab = cJSON_AddObjectToObject(acme, "eab");
      cJSON_AddStringToObject(eab, "key_id", q->eab_kid);
      cJSON_AddStringToObject(eab, "hmac_key", q->eab_hmac_key);
    }
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
    if (q->admin_token != NULL) cJSON_AddStringToObject(admin, "token", q->admin_token);
  }
  if (q->no_resumption) {
    cJSON *tls = cJSON_AddObjectToObject(doc, "tls");
    cJSON_AddFalseToObject(tls, "resumption");
  }
  if (q->log_level != NULL || q->access_log != NULL || q->log_format != NULL) {
    cJSON *log = cJSON_AddObjectToObject(doc, "log");
    if (q->log_level != NULL) cJSON_AddStringToObject(log, "level", q->log_level);
    if (q->log_format != NULL) cJSON_AddStringToObject(log, "format", q->log_format);
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
    q->given[flag - quick_flags] = GIVEN_FLAG;
  }
  return NULL;
}

/* check_shape checks what the validator cannot: the settings that must
 * come together, and values that become JSON booleans. Returns NULL or an
 * error naming each setting the way it was given. */
static char *check_shape(const quick_t *q) {
  char *w = NULL, *msg = NULL;
  if (q->http2 != NULL && switch_value(q->http2) < 0) {
    msg = bad_switch(said(q, ROW(http2)), q->http2);
  } else if (q->to == NULL) {
    w = wanted(ROW(to));
    msg = gh_asprintf("%s is required: the upstream to forward to", w);
  } else if ((q->cert == NULL) != (q->key == NULL)) {
    const quick_flag_t *has = q->cert ? ROW(cert) : ROW(key);
    w = wanted(q->cert ? ROW(key) : ROW(cert));
    msg = gh_asprintf("%s needs %s", said(q, has), w);
  } else if ((q->eab_kid == NULL) != (q->eab_hmac_key == NULL)) {
    const quick_flag_t *has = q->eab_kid ? ROW(eab_kid) : ROW(eab_hmac_key);
    w = wanted(q->eab_kid ? ROW(eab_hmac_key) : ROW(eab_kid));
    msg = gh_asprintf("%s needs %s", said(q, has), w);
  } else if (q->acme_directory == NULL) {
    const void *needs[] = {q->ca_roots, q->email, q->challenges, q->on_demand, q->ask,
                           q->eab_kid};
    const quick_flag_t *rows[] = {ROW(ca_roots), ROW(email), ROW(challenges), ROW(on_demand),
                                  ROW(ask), ROW(eab_kid)};
    for (size_t i = 0; i < GH_ARRAY_LEN(needs) && msg == NULL; i++) {
      if (needs[i] == NULL) continue;
      w = wanted(ROW(acme_directory));
      msg = gh_asprintf("%s needs %s", said(q, rows[i]), w);
    }
    if (msg == NULL && q->cert == NULL) {
      char *w2 = wanted(ROW(key));
      w = wanted(ROW(cert));
      char *w3 = wanted(ROW(acme_directory));
      msg = gh_asprintf("%s and %s are required, or %s to obtain certificates from a CA", w, w2,
                        w3);
      gh_free(w2);
      gh_free(w3);
    }
  } else if (q->cert == NULL && q->from == NULL && q->on_demand == NULL && q->ask == NULL) {
    /* Without a certificate the hosts are ACME-managed: without them there
     * is no name to order a certificate for. */
    char *w2 = wanted(ROW(on_demand));
    w = wanted(ROW(from));
    msg = gh_asprintf("name the hosts to obtain certificates for with %s, or allow names on "
                      "demand with %s",
                      w, w2);
    gh_free(w2);
  }
  gh_free(w);
  return msg;
}

cJSON *conf_quick_json(char **out_err, conf_quick_info_t *info, int argc, char **argv,
                       char *const *envp) {
  quick_t q;
  memset(&q, 0, sizeof(q));
  memset(info, 0, sizeof(*info));
  *out_err = NULL;
  cJSON *doc = NULL;
  char *err = parse_args(&q, argc, argv);
  if (err == NULL) err = apply_env(&q, envp);
  if (err == NULL) err = check_shape(&q);
  if (err != NULL) {
    *out_err = err;
  } else {
    doc = build_doc(&q);
    info->print_config = q.print_config;
  }
  int flags = 0, env = 0;
  for (size_t i = 0; i < GH_ARRAY_LEN(quick_flags); i++) {
    flags |= q.given[i] == GIVEN_FLAG;
    env |= q.given[i] == GIVEN_ENV;
  }
  info->source = env ? (flags ? "<command line and environment>" : "<environment>")
                     : "<command line>";
  info->warnings = env_warnings(envp);
  cJSON_Delete(q.to);
  cJSON_Delete(q.from);
  cJSON_Delete(q.https);
  cJSON_Delete(q.http);
  cJSON_Delete(q.ca_roots);
  cJSON_Delete(q.challenges);
  cJSON_Delete(q.on_demand);
  for (size_t i = 0; i < GH_ARRAY_LEN(q.owned); i++) gh_free(q.owned[i]);
  return doc;
}

char *conf_quick_usage(void) {
  char *out = gh_strdup("");
  for (size_t i = 0; i < GH_ARRAY_LEN(quick_flags); i++) {
    const quick_flag_t *f = &quick_flags[i];
    char *flag = f->metavar ? gh_asprintf("%s %s", f->name, f->metavar) : gh_strdup(f->name);
    char *next = gh_asprintf("%s  %-48s %s%s\n", out, flag, f->env,
                             f->kind == QUICK_LIST ? " (a list)" : "");
    gh_free(flag);
    gh_free(out);
    out = next;
  }
  return out;
}
