/* propagation.c: the DNS-01 propagation check of an order. Once the dns
 * hook's "present" has exited 0, the job waits (ACME_JOB_PROPAGATE) until a
 * resolver (acme.dns_resolvers, else /etc/resolv.conf) returns the TXT
 * record at _acme-challenge.NAME, and only then asks the CA to validate: a
 * CA that looks too early marks the authorization invalid for good. Past
 * acme.dns_propagation_timeout the order fails, naming the name, the
 * resolvers and the timeout; the cleanup hook runs as for any failure
 * (acme__order_cleanup). */
#include <inttypes.h>
#include <string.h>

#include "acme/dnscheck.h"
#include "acme/engine_internal.h"
#include "common/common.h"
#include "common/log.h"

#define RESOLV_CONF "/etc/resolv.conf"

/* fqdn_len is the length of |fqdn| without its root dot, for messages. */
static int fqdn_len(const char *fqdn) {
  size_t n = strlen(fqdn);
  return (int)(n > 0 && fqdn[n - 1] == '.' ? n - 1 : n);
}

static void on_checked(void *arg, int status, const acme_dns_server_t *server,
                       uint64_t elapsed_ms, const char *why) {
  acme_job_t *job = arg;
  job->dnscheck = NULL; /* it frees itself after this call */
  if (job->done || job->state != ACME_JOB_PROPAGATE) return;
  uint64_t t = job->engine->acme->dns_propagation_timeout_ms;
  if (status != 0) {
    acme__job_fail(job, status, "dns-01: the TXT record %.*s is not visible after %" PRIu64
                   "%s (acme.dns_propagation_timeout) at %s; did the dns hook %s publish it?",
                   fqdn_len(job->dns_fqdn), job->dns_fqdn, t % 1000 ? t : t / 1000,
                   t % 1000 ? " ms" : " s", why, job->engine->acme->dns_hook);
    return;
  }
  GH_INFO("acme", "dns-01: %.*s visible at %s after %" PRIu64 " ms", fqdn_len(job->dns_fqdn),
          job->dns_fqdn, server->text, elapsed_ms);
  acme__job_goto(job, ACME_JOB_RESPOND);
}

void acme__order_dns_wait(acme_job_t *job) {
  acme_engine_t *e = job->engine;
  char *err = NULL;
  acme_dns_server_t *servers = NULL;
  size_t num_servers = 0;
  int rc = acme__dns_servers(&err, &servers, &num_servers, e->acme, RESOLV_CONF);
  if (rc != 0) {
    acme__job_fail(job, rc, "dns-01: cannot check %.*s: %s", fqdn_len(job->dns_fqdn),
                   job->dns_fqdn, err);
    gh_free(err);
    return;
  }
  job->state = ACME_JOB_PROPAGATE;
  acme_dnscheck_t *check = NULL;
  rc = acme__dnscheck_start(&check, e->loop, servers, num_servers, job->dns_fqdn, job->dns_value,
                            e->acme->dns_propagation_timeout_ms, on_checked, job);
  gh_free(servers);
  if (rc != 0) {
    acme__job_fail(job, rc, "dns-01: cannot check %.*s: %s", fqdn_len(job->dns_fqdn),
                   job->dns_fqdn, uv_strerror(rc));
    return;
  }
  job->dnscheck = check;
}

void acme__order_dns_cancel(acme_job_t *job) {
  acme__dnscheck_cancel(job->dnscheck);
  job->dnscheck = NULL;
}
