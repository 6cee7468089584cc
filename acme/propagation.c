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
#include "acme/dnsupdate.h"
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
    const conf_acme_t *acme = job->engine->acme;
    acme__job_fail(job, status, "dns-01: the TXT record %.*s is not visible after %" PRIu64
                   "%s (acme.dns_propagation_timeout) at %s; did %s %s publish it?",
                   fqdn_len(job->dns_fqdn), job->dns_fqdn, t % 1000 ? t : t / 1000,
                   t % 1000 ? " ms" : " s", why,
                   acme->dns_rfc2136.enabled ? "the update at" : "the dns hook",
                   acme->dns_rfc2136.enabled ? acme->dns_rfc2136.server : acme->dns_hook);
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
  acme__dnsupdate_cancel(job->dnsupdate);
  job->dnsupdate = NULL;
}

/* ---- RFC 2136 updates (acme.dns.rfc2136) ---- */

static void on_added(void *arg, int status, const char *why) {
  acme_job_t *job = arg;
  job->dnsupdate = NULL; /* it frees itself after this call */
  if (job->done || job->state != ACME_JOB_PRESENT) return;
  if (status != 0) {
    acme__job_fail(job, status, "dns-01: %s", why);
    return;
  }
  GH_INFO("acme", "dns-01: %.*s TXT added at %s (zone %s)", fqdn_len(job->dns_fqdn),
          job->dns_fqdn, job->engine->acme->dns_rfc2136.server,
          job->engine->acme->dns_rfc2136.zone);
  acme__order_dns_wait(job); /* then ACME_JOB_RESPOND, once the record is visible */
}

/* A removal outlives its job: what it says goes to the log only. */
static void on_removed(void *arg, int status, const char *why) {
  char *fqdn = arg;
  if (status != 0) {
    GH_WARN("acme", "dns-01 cleanup: %s", why);
  } else {
    GH_INFO("acme", "dns-01: %.*s TXT removed", fqdn_len(fqdn), fqdn);
  }
  gh_free(fqdn);
}

int acme__order_dns_update(acme_job_t *job, int add) {
  acme_engine_t *e = job->engine;
  acme_dnsupdate_t *u = NULL;
  char *err = NULL;
  char *fqdn = add ? NULL : gh_strdup(job->dns_fqdn);
  int rc = acme__dnsupdate_start(&u, &err, e->loop, &e->acme->dns_rfc2136, add, job->dns_fqdn,
                                 job->dns_value, add ? on_added : on_removed,
                                 add ? (void *)job : (void *)fqdn);
  if (rc != 0) {
    if (add) {
      acme__job_fail(job, rc, "dns-01: %s", err);
    } else {
      GH_WARN("acme", "dns-01 cleanup: %s", err);
      gh_free(fqdn);
    }
    gh_free(err);
    return rc;
  }
  if (add) job->dnsupdate = u;
  return 0;
}
