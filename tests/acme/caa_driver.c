/* caa_driver.c (gh_caa): the CAA lookup (acme/caa.c) against real DNS
 * servers, for the integration tests.
 *
 *   gh_caa RESOLVER NAME CA_DOMAIN METHOD [ACCOUNT_URI]
 *
 * RESOLVER is "IP:port". Looks up the relevant CAA RRset of NAME and asks
 * acme__caa_permits whether CA_DOMAIN may issue for it (a wildcard when
 * NAME starts with "*."), validated by METHOD. Prints one JSON line:
 * {"status", "found_at", "records": [{"flags", "tag", "value"}],
 * "permitted", "why"}, and exits 0 if the lookup succeeded. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "acme/dnscheck.h"
#include "common/common.h"

typedef struct {
  const char *ca, *method, *account, *name;
  int status;
} run_t;

static void on_caa(void *arg, int status, const acme_caa_rr_t *rrs, size_t num,
                   const char *found_at, const char *why) {
  run_t *r = arg;
  r->status = status;
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "status", status);
  cJSON_AddStringToObject(o, "status_name", status ? uv_err_name(status) : "ok");
  if (found_at != NULL) cJSON_AddStringToObject(o, "found_at", found_at);
  cJSON *list = cJSON_AddArrayToObject(o, "records");
  for (size_t i = 0; i < num; i++) {
    cJSON *rr = cJSON_CreateObject();
    cJSON_AddNumberToObject(rr, "flags", rrs[i].flags);
    cJSON_AddStringToObject(rr, "tag", rrs[i].tag);
    cJSON_AddStringToObject(rr, "value", rrs[i].value);
    cJSON_AddItemToArray(list, rr);
  }
  if (status == 0) {
    char *pwhy = NULL;
    const char *cas[] = {r->ca};
    int rc = acme__caa_permits(&pwhy, rrs, num, cas, 1, r->account, r->method,
                               strncmp(r->name, "*.", 2) == 0);
    cJSON_AddBoolToObject(o, "permitted", rc == 0);
    if (pwhy != NULL) cJSON_AddStringToObject(o, "why", pwhy);
    gh_free(pwhy);
  } else {
    cJSON_AddStringToObject(o, "why", why ? why : "");
  }
  char *s = cJSON_PrintUnformatted(o);
  printf("%s\n", s);
  free(s);
  cJSON_Delete(o);
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: gh_caa RESOLVER NAME CA_DOMAIN METHOD [ACCOUNT_URI]\n");
    return 2;
  }
  char host[64];
  const char *colon = strrchr(argv[1], ':');
  if (colon == NULL || (size_t)(colon - argv[1]) >= sizeof(host)) return 2;
  memcpy(host, argv[1], (size_t)(colon - argv[1]));
  host[colon - argv[1]] = '\0';
  acme_dns_server_t server;
  if (acme__dns_server_from(&server, host, (uint16_t)atoi(colon + 1)) != 0) return 2;
  run_t r = {argv[3], argv[4], argc > 5 ? argv[5] : NULL, argv[2], -1};
  uv_loop_t loop;
  uv_loop_init(&loop);
  acme_caa_lookup_t *l = NULL;
  if (acme__caa_lookup_start(&l, &loop, &server, 1, argv[2], 20000, on_caa, &r) != 0) {
    fprintf(stderr, "gh_caa: bad arguments\n");
    return 2;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return r.status == 0 ? 0 : 1;
}
