/* certcmd.c: `gatehouse cert list|revoke|obtain`, the command line's view
 * of the storage directory and the ACME engine.
 *
 *   cert list -c FILE [--json]                 stored certificates
 *   cert revoke NAME -c FILE [--reason R]      revoke the stored one
 *   cert obtain NAME... -c FILE                (see below)
 *   cert renew NAME -c FILE [--wait]           ask the running server (adminc.c)
 *
 * revoke runs an engine on a loop in this process: it needs no listener.
 * obtain needs the CA to reach this process's challenge answers, so it
 * binds the configured listeners and serves them (px_obtain) until the
 * order finishes; when they are taken (a gatehouse is running, and it
 * obtains its managed names itself) it says so and exits 2. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "acme/acme.h"
#include "acme/storage.h"
#include "common/common.h"
#include "common/log.h"
#include "proxy/proxy.h"

static const char cert_usage[] =
    "usage: gatehouse cert list -c FILE [--json]\n"
    "       gatehouse cert revoke NAME -c FILE [--reason R]\n"
    "       gatehouse cert obtain NAME... -c FILE\n"
    "       gatehouse cert renew NAME [-c FILE | --admin ADDR] [--token T] [--wait]\n";

/* RFC 5280 5.3.1 CRL reasons that RFC 8555 7.6 lets a subscriber give. */
static const struct {
  const char *name;
  int code;
} reasons[] = {
    {"unspecified", 0},          {"keyCompromise", 1},  {"cACompromise", 2},
    {"affiliationChanged", 3},   {"superseded", 4},     {"cessationOfOperation", 5},
    {"certificateHold", 6},      {"removeFromCRL", 8},  {"privilegeWithdrawn", 9},
    {"aACompromise", 10},
};

static int parse_reason(const char *s) {
  for (size_t i = 0; i < GH_ARRAY_LEN(reasons); i++) {
    if (strcmp(s, reasons[i].name) == 0) return reasons[i].code;
  }
  char *end = NULL;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < 0 || v > 10 || v == 7) return -1;
  return (int)v;
}

/* args_t: the command line after "cert <sub>": -c FILE, flags, names. */
typedef struct {
  const char *config;
  const char *reason;
  int json;
  const char **names;
  size_t num_names;
} args_t;

static int parse_args(args_t *a, int argc, char **argv) {
  memset(a, 0, sizeof(*a));
  a->names = gh_calloc((size_t)argc + 1, sizeof(char *));
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0 ||
        strcmp(argv[i], "--reason") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "gatehouse cert: %s needs a value\n", argv[i]);
        return -1;
      }
      if (strcmp(argv[i], "--reason") == 0) {
        a->reason = argv[++i];
      } else {
        a->config = argv[++i];
      }
    } else if (strcmp(argv[i], "--json") == 0) {
      a->json = 1;
    } else if (argv[i][0] == '-') {
      fprintf(stderr, "gatehouse cert: unknown flag \"%s\"\n%s", argv[i], cert_usage);
      return -1;
    } else {
      a->names[a->num_names++] = argv[i];
    }
  }
  if (a->config == NULL) {
    fprintf(stderr, "gatehouse cert: missing -c FILE\n");
    return -1;
  }
  return 0;
}

conf_t *px_load_conf(const char *path) {
  char *err = NULL;
  conf_t *conf = conf_load(&err, path);
  if (conf == NULL) {
    fprintf(stderr, "%s", err);
    if (err[0] && err[strlen(err) - 1] != '\n') fputc('\n', stderr);
    gh_free(err);
  }
  return conf;
}

static int cert_list(const args_t *a) {
  conf_t *conf = px_load_conf(a->config);
  if (conf == NULL) return 2;
  char *err = NULL;
  acme_storage_t *st = acme_storage_open_conf(&err, conf);
  char **names = NULL;
  size_t num_names = 0;
  if (st == NULL || acme_storage_cert_list(st, &names, &num_names, &err) != 0) {
    fprintf(stderr, "gatehouse cert list: %s\n", err);
    gh_free(err);
    acme_storage_free(st);
    conf_free(conf);
    return 1;
  }
  int rc = 0;
  time_t now = time(NULL);
  cJSON *arr = a->json ? cJSON_CreateArray() : NULL;
  for (size_t i = 0; i < num_names; i++) {
    acme_cert_t *cert = NULL;
    if (acme_storage_cert_load(st, &cert, NULL, &err, names[i]) != 0) {
      fprintf(stderr, "gatehouse cert list: %s\n", err);
      gh_free(err);
      err = NULL;
      rc = 1;
      continue;
    }
    char when[32];
    gh_format_time(when, sizeof(when), cert->not_after);
    const char *status = cert->not_after > now ? "valid" : "expired";
    const char *issuer = cert->issuer_cn ? cert->issuer_cn : "";
    if (arr != NULL) {
      cJSON *o = cJSON_CreateObject();
      cJSON_AddStringToObject(o, "name", names[i]);
      cJSON_AddStringToObject(o, "issuer", issuer);
      cJSON_AddStringToObject(o, "not_after", when);
      cJSON_AddStringToObject(o, "status", status);
      cJSON *sans = cJSON_AddArrayToObject(o, "sans");
      for (size_t k = 0; k < cert->num_sans; k++)
        cJSON_AddItemToArray(sans, cJSON_CreateString(cert->sans[k]));
      cJSON_AddItemToArray(arr, o);
    } else {
      printf("%s\t%s\t%s\t%s\n", names[i], issuer, when, status);
    }
    acme_cert_unref(cert);
  }
  if (arr != NULL) {
    char *s = cJSON_Print(arr);
    printf("%s\n", s);
    cJSON_free(s);
    cJSON_Delete(arr);
  }
  acme_storage_names_free(names, num_names);
  acme_storage_free(st);
  conf_free(conf);
  return rc;
}

typedef struct {
  acme_engine_t *engine;
  int status;
} revoke_t;

static void on_revoked(void *arg, int status, const char *err) {
  revoke_t *r = arg;
  r->status = status;
  if (status != 0) fprintf(stderr, "gatehouse cert revoke: %s\n", err ? err : uv_strerror(status));
  acme_engine_free(r->engine);
  r->engine = NULL;
}

static int cert_revoke(const args_t *a) {
  if (a->num_names != 1) {
    fprintf(stderr, "gatehouse cert revoke: name one certificate\n%s", cert_usage);
    return 2;
  }
  int reason = 0;
  if (a->reason != NULL && (reason = parse_reason(a->reason)) < 0) {
    fprintf(stderr, "gatehouse cert revoke: unknown --reason \"%s\" (a CRL reason code 0-10 "
                    "except 7, or a name such as keyCompromise)\n", a->reason);
    return 2;
  }
  conf_t *conf = px_load_conf(a->config);
  if (conf == NULL) return 2;
  if (!conf_acme_on(conf)) {
    fprintf(stderr, "gatehouse cert revoke: %s has no acme.directory or acme.issuers\n", a->config);
    conf_free(conf);
    return 2;
  }
  gh_log_setup((gh_log_level_t)conf->log_level, GH_LOG_TEXT);
  char *err = NULL;
  acme_cert_t *cert = NULL;
  acme_storage_t *st = acme_storage_open_conf(&err, conf);
  if (st == NULL || acme_storage_cert_load(st, &cert, NULL, &err, a->names[0]) != 0) {
    fprintf(stderr, "gatehouse cert revoke: %s\n", err);
    gh_free(err);
    acme_storage_free(st);
    conf_free(conf);
    return 1;
  }
  acme_storage_free(st);
  uv_loop_t loop;
  uv_loop_init(&loop);
  acme_challenges_t *table = acme_challenges_new();
  revoke_t r = {NULL, -1};
  r.engine = acme_engine_new(&err, &loop, conf, table);
  if (r.engine == NULL) {
    fprintf(stderr, "gatehouse cert revoke: %s\n", err);
    gh_free(err);
  } else {
    int rc = acme_engine_revoke(r.engine, cert, reason, on_revoked, &r);
    if (rc != 0) {
      fprintf(stderr, "gatehouse cert revoke: %s\n", uv_strerror(rc));
      acme_engine_free(r.engine);
      r.engine = NULL;
    }
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  if (r.status == 0) printf("revoked %s\n", a->names[0]);
  acme_challenges_free(table);
  acme_cert_unref(cert);
  conf_free(conf);
  return r.status == 0 ? 0 : 1;
}

static int cert_obtain(const args_t *a) {
  if (a->num_names == 0) {
    fprintf(stderr, "gatehouse cert obtain: name at least one host\n%s", cert_usage);
    return 2;
  }
  for (size_t i = 0; i < a->num_names; i++) {
    if (!conf_host_pattern_valid(a->names[i])) {
      fprintf(stderr, "gatehouse cert obtain: \"%s\" is not a lower-case host name\n",
              a->names[i]);
      return 2;
    }
  }
  conf_t *conf = px_load_conf(a->config);
  if (conf == NULL) return 2;
  if (!conf_acme_on(conf)) {
    fprintf(stderr, "gatehouse cert obtain: %s has no acme.directory or acme.issuers\n", a->config);
    conf_free(conf);
    return 2;
  }
  gh_log_setup((gh_log_level_t)conf->log_level, GH_LOG_TEXT);
  int rc = px_obtain(conf, a->names, a->num_names);
  if (rc == PX_OBTAIN_LISTEN_FAILED) {
    fprintf(stderr, "gatehouse cert obtain: cert obtain needs the server's listeners; start "
                    "`gatehouse run` (it obtains managed names at start)\n");
    return 2;
  }
  if (rc != 0) {
    fprintf(stderr, "gatehouse cert obtain: no certificate for %s (the reason is logged above)\n",
            a->names[0]);
    return 1;
  }
  printf("obtained %s\n", a->names[0]);
  return 0;
}

int px_cert_cmd(int argc, char **argv) {
  if (argc < 1) {
    fputs(cert_usage, stderr);
    return 2;
  }
  const char *sub = argv[0];
  /* renew asks the running server, which owns the renewal schedule. */
  if (strcmp(sub, "renew") == 0) return px_cert_renew_cmd(argc - 1, argv + 1);
  if (strcmp(sub, "list") != 0 && strcmp(sub, "revoke") != 0 && strcmp(sub, "obtain") != 0) {
    fprintf(stderr, "gatehouse cert: unknown subcommand \"%s\"\n%s", sub, cert_usage);
    return 2;
  }
  args_t a;
  int rc = 2;
  if (parse_args(&a, argc - 1, argv + 1) == 0) {
    if (strcmp(sub, "list") == 0) {
      rc = cert_list(&a);
    } else if (strcmp(sub, "revoke") == 0) {
      rc = cert_revoke(&a);
    } else {
      rc = cert_obtain(&a);
    }
  }
  gh_free(a.names);
  return rc;
}
