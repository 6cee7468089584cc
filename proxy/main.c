/* main.c: the gatehouse command line. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "common/log.h"
#include "conf/conf.h"
#include "proxy/proxy.h"

static const char usage[] =
    "usage: gatehouse <command> [options]\n"
    "\n"
    "commands:\n"
    "  run -c FILE         serve the configuration in FILE\n"
    "  validate -c FILE    check FILE; prints OK or every error (exit 2)\n"
    "     [--print]        and print the effective configuration as JSON\n"
    "  proxy --to ADDR ... quick mode: a proxy with no config file\n"
    "     [--from NAME]... [--https ADDR] [--http ADDR] [--cert F --key F]\n"
    "     [--workers N] [--no-resumption] [--http2 on|off]\n"
    "     [--access-log json|combined|off]\n"
    "     [--log-level L] [--log-format text|json] [--print-config] [--admin ADDR]\n"
    "     [--acme-directory URL [--acme-ca-root FILE]... [--email ADDR]\n"
    "      [--eab-kid KID --eab-hmac-key KEY]\n"
    "      [--storage DIR] [--challenge tls-alpn-01|http-01|dns-01]...\n"
    "      [--on-demand PATTERN]... [--ask URL]] [--admin-token TOKEN]\n"
    "                      every flag has a GATEHOUSE_* variable, read when\n"
    "                      the flag is absent: see `gatehouse help proxy`\n"
    "  cert list -c FILE [--json]      certificates in the storage directory\n"
    "  cert revoke NAME -c FILE [--reason R]\n"
    "                      revoke a stored certificate at the CA\n"
    "  cert obtain NAME... -c FILE     order a certificate, serving the challenges\n"
    "                      on the config's listeners (exit 2 if they are taken)\n"
    "\n"
    "commands for a running server, through its admin API: SERVER is -c FILE\n"
    "(its \"admin\" address and token) or --admin ADDR [--token T] (ADDR is\n"
    "IP:port or unix:PATH; else GATEHOUSE_ADMIN and GATEHOUSE_ADMIN_TOKEN):\n"
    "  health [SERVER]     ask /health (exit 0 healthy, 1 not)\n"
    "  reload [SERVER]     re-read the config file, as SIGHUP does; prints the\n"
    "                      server's errors and exits 1 if it refused the file\n"
    "  cert renew NAME [SERVER] [--wait]\n"
    "                      order a new certificate for NAME now (--wait: until\n"
    "                      the server has it)\n"
    "\n"
    "  version             print the version\n"
    "  help                print this text\n"
    "\n"
    "signals to `run`/`proxy`: SIGHUP reloads the config file (a bad file is\n"
    "refused, the old one keeps serving); SIGTERM or SIGINT stops gracefully\n"
    "(in-flight requests finish, up to timeouts.drain); SIGUSR1 reopens the\n"
    "log files.\n"
    "\n"
    "configuration reference: README.md, section \"Configuration\" (every key,\n"
    "its default and meaning); `gatehouse validate -c FILE --print` shows the\n"
    "effective configuration with every default filled in.\n";

/* find_config returns the value of -c/--config in argv, or NULL. */
static const char *find_config(int argc, char **argv) {
  for (int i = 0; i + 1 < argc; i++) {
    if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) return argv[i + 1];
  }
  return NULL;
}

static int has_flag(int argc, char **argv, const char *flag) {
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], flag) == 0) return 1;
  }
  return 0;
}

static void print_json(const conf_t *conf) {
  cJSON *j = conf_to_json(conf);
  char *s = cJSON_Print(j);
  printf("%s\n", s);
  cJSON_free(s);
  cJSON_Delete(j);
}

static int cmd_validate(int argc, char **argv) {
  const char *path = find_config(argc, argv);
  if (path == NULL) {
    fprintf(stderr, "gatehouse validate: missing -c FILE\n");
    return 2;
  }
  conf_t *conf = px_load_conf(path);
  if (conf == NULL) return 2;
  if (has_flag(argc, argv, "--print")) {
    print_json(conf);
  } else {
    printf("OK\n");
  }
  conf_free(conf);
  return 0;
}

static int serve(conf_t *conf, const char *path) {
  gh_log_setup((gh_log_level_t)conf->log_level, (gh_log_format_t)conf->log_format);
  return px_run(conf, path) == 0 ? 0 : 1;
}

static int cmd_run(int argc, char **argv) {
  const char *path = find_config(argc, argv);
  if (path == NULL) {
    fprintf(stderr, "gatehouse run: missing -c FILE\n");
    return 2;
  }
  conf_t *conf = px_load_conf(path);
  if (conf == NULL) return 2;
  return serve(conf, path);
}

extern char **environ;

static void help_proxy(void);

static int cmd_proxy(int argc, char **argv) {
  if (has_flag(argc, argv, "--help") || has_flag(argc, argv, "-h")) {
    help_proxy();
    return 0;
  }
  char *err = NULL;
  conf_quick_info_t info;
  cJSON *doc = conf_quick_json(&err, &info, argc, argv, environ);
  if (info.warnings != NULL) {
    /* One "gatehouse proxy: warning: " prefix per line. */
    for (char *line = info.warnings, *nl; *line; line = nl + 1) {
      nl = strchr(line, '\n');
      fprintf(stderr, "gatehouse proxy: warning: %.*s\n", (int)(nl - line), line);
    }
    gh_free(info.warnings);
  }
  if (doc == NULL) {
    fprintf(stderr, "gatehouse proxy: %s\n", err);
    gh_free(err);
    return 2;
  }
  char *text = cJSON_Print(doc);
  cJSON_Delete(doc);
  conf_t *conf = conf_parse(&err, info.source, text, strlen(text));
  cJSON_free(text);
  if (conf == NULL) {
    fprintf(stderr, "%s", err);
    if (err[0] && err[strlen(err) - 1] != '\n') fputc('\n', stderr);
    gh_free(err);
    return 2;
  }
  if (info.print_config) {
    print_json(conf);
    conf_free(conf);
    return 0;
  }
  return serve(conf, NULL);
}

static void help_proxy(void) {
  char *table = conf_quick_usage();
  printf("usage: gatehouse proxy --to ADDR [flags]\n"
         "\n"
         "Quick mode: a proxy with no config file. Each flag has one environment\n"
         "variable, read when the flag is not given (a flag overrides its variable;\n"
         "an empty variable counts as unset; a list takes values separated by\n"
         "commas or spaces; a switch takes 1/true/yes/on or 0/false/no/off).\n"
         "NAME_FILE=PATH instead of NAME=VALUE reads the value from PATH (for\n"
         "secrets mounted as files):\n"
         "\n%s",
         table);
  gh_free(table);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage, stderr);
    return 2;
  }
  const char *cmd = argv[1];
  px_raise_bind_capability();
  if (strcmp(cmd, "run") == 0) return cmd_run(argc - 2, argv + 2);
  if (strcmp(cmd, "validate") == 0) return cmd_validate(argc - 2, argv + 2);
  if (strcmp(cmd, "proxy") == 0) return cmd_proxy(argc - 2, argv + 2);
  if (strcmp(cmd, "cert") == 0) return px_cert_cmd(argc - 2, argv + 2);
  if (strcmp(cmd, "health") == 0) return px_health_cmd(argc - 2, argv + 2);
  if (strcmp(cmd, "reload") == 0) return px_reload_cmd(argc - 2, argv + 2);
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    printf("gatehouse %s\n", GATEHOUSE_VERSION);
    return 0;
  }
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    if (argc > 2 && strcmp(argv[2], "proxy") == 0) {
      help_proxy();
      return 0;
    }
    fputs(usage, stdout);
    return 0;
  }
  fprintf(stderr, "gatehouse: unknown command \"%s\"\n\n%s", cmd, usage);
  return 2;
}
