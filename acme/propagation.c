/* propagation.c: the DNS-01 propagation check of an order. Once the dns
 * hook's "present" has exited 0 (or the RFC 2136 update has been
 * confirmed), the job waits (ACME_JOB_PROPAGATE) until the TXT record at
 * _acme-challenge.NAME is visible, and only then asks the CA to validate:
 * a CA that looks too early marks the authorization invalid for good.
 * "Visible" means at every authoritative server of the zone, found through
 * the resolvers (acme.dns_resolvers, else /etc/resolv.conf) and asked
 * directly, as the CA's own resolver will ask them; when none can be
 * found, at one of the resolvers. Past acme.dns_propagation_timeout the
 * order fails, naming the name, the servers and the timeout; the cleanup
 * runs as for any failure (acme__order_cleanup). */
#include <inttypes.h>
#include <string.h>
#include <strings.h>

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

/* checked reports the end of the check: |zone| is the zone whose
 * authoritative servers were asked, or NULL for the resolvers. */
static void checked(acme_job_t *job, const char *zone, int status, const acme_dns_server_t *server,
                    uint64_t elapsed_ms, const char *why) {
  job->dnscheck = NULL; /* it frees itself after this call */
  if (job->done || job->state != ACME_JOB_PROPAGATE) return;
  uint64_t t = job->engine->acme->dns_propagation_timeout_ms;
  if (status != 0) {
    const conf_acme_t *acme = job->engine->acme;
    acme__job_fail(job, status, "dns-01: the TXT record %.*s is not visible%s%s after %" PRIu64
                   "%s (acme.dns_propagation_timeout) at %s; did %s %s publish it?",
                   fqdn_len(job->dns_fqdn), job->dns_fqdn,
                   zone ? " at every authoritative server of " : "", zone ? zone : "",
                   t % 1000 ? t : t / 1000, t % 1000 ? " ms" : " s", why,
                   acme->dns_rfc2136.enabled ? "the update at" : "the dns hook",
                   acme->dns_rfc2136.enabled ? acme->dns_rfc2136.server : acme->dns_hook);
    return;
  }
  if (zone != NULL) {
    GH_INFO("acme", "dns-01: %.*s visible at every authoritative server of %s (%s) after %" PRIu64
            " ms", fqdn_len(job->dns_fqdn), job->dns_fqdn, zone, why, elapsed_ms);
  } else {
    GH_INFO("acme", "dns-01: %.*s visible at %s after %" PRIu64 " ms", fqdn_len(job->dns_fqdn),
            job->dns_fqdn, server->text, elapsed_ms);
  }
  acme__job_goto(job, ACME_JOB_RESPOND);
}

static void on_checked(void *arg, int status, const acme_dns_server_t *server,
                       uint64_t elapsed_ms, const char *why) {
  checked(arg, NULL, status, server, elapsed_ms, why);
}

static void on_checked_auth(void *arg, int status, const acme_dns_server_t *server,
                            uint64_t elapsed_ms, const char *why) {
  acme_job_t *job = arg;
  char *zone = job->dns_zone;
  job->dns_zone = NULL;
  checked(job, zone, status, server, elapsed_ms, why);
  gh_free(zone);
}

/* resolvers returns acme.dns_resolvers or /etc/resolv.conf's, or fails
 * the job and returns -1. */
static int resolvers(acme_job_t *job, acme_dns_server_t **out, size_t *out_num) {
  char *err = NULL;
  int rc = acme__dns_servers(&err, out, out_num, job->engine->acme, RESOLV_CONF);
  if (rc != 0) {
    acme__job_fail(job, rc, "dns-01: cannot check %.*s: %s", fqdn_len(job->dns_fqdn),
                   job->dns_fqdn, err);
    gh_free(err);
    return -1;
  }
  return 0;
}

static void check_start(acme_job_t *job, const acme_dns_server_t *servers, size_t num,
                         unsigned flags, acme_dnscheck_cb cb) {
  acme_engine_t *e = job->engine;
  acme_dnscheck_t *check = NULL;
  int rc = acme__dnscheck_start(&check, e->loop, servers, num, job->dns_fqdn, job->dns_value,
                                e->acme->dns_propagation_timeout_ms, flags, cb, job);
  if (rc != 0) {
    acme__job_fail(job, rc, "dns-01: cannot check %.*s: %s", fqdn_len(job->dns_fqdn),
                   job->dns_fqdn, uv_strerror(rc));
    return;
  }
  job->dnscheck = check;
}

/* in_zone says whether the dotted |name| is |zone| or below it (case
 * blind, root dots ignored). */
static int in_zone(const char *name, const char *zone) {
  size_t n = (size_t)fqdn_len(name), z = (size_t)fqdn_len(zone);
  return n >= z && strncasecmp(name + n - z, zone, z) == 0 && (n == z || name[n - z - 1] == '.');
}

/* on_authns asks the zone's authoritative servers directly (RD clear)
 * until every one has the record; with acme.dns.rfc2136, the server
 * updated is one of them for its zone. Without any, the resolvers. */
static void on_authns(void *arg, int status, const acme_dns_server_t *servers, size_t num,
                      const char *zone, const char *why) {
  acme_job_t *job = arg;
  job->authns = NULL;
  if (job->done || job->state != ACME_JOB_PROPAGATE) return;
  const conf_rfc2136_t *r = &job->engine->acme->dns_rfc2136;
  acme_dns_server_t list[9];
  size_t n = 0;
  for (size_t i = 0; i < num && i < 8; i++) list[n++] = servers[i];
  if (r->enabled && in_zone(job->dns_fqdn, r->zone) && (zone == NULL || in_zone(zone, r->zone)) &&
      acme__dns_server_from(&list[n], r->host, r->port) == 0) {
    int dup = 0;
    for (size_t i = 0; i < n && !dup; i++) dup = strcmp(list[i].text, list[n].text) == 0;
    if (!dup) n++;
    if (zone == NULL) zone = r->zone;
  }
  if (n > 0) {
    job->dns_zone = gh_strdup(zone);
    check_start(job, list, n, ACME_DNSCHECK_ALL | ACME_DNSCHECK_NORECURSE, on_checked_auth);
    return;
  }
  GH_INFO("acme", "dns-01: no authoritative server found for %.*s (%s): asking the resolvers "
          "instead", fqdn_len(job->dns_fqdn), job->dns_fqdn, why ? why : uv_strerror(status));
  acme_dns_server_t *res = NULL;
  size_t num_res = 0;
  if (resolvers(job, &res, &num_res) != 0) return;
  check_start(job, res, num_res, 0, on_checked);
  gh_free(res);
}

void acme__order_dns_wait(acme_job_t *job) {
  acme_engine_t *e = job->engine;
  acme_dns_server_t *res = NULL;
  size_t num_res = 0;
  if (resolvers(job, &res, &num_res) != 0) return;
  job->state = ACME_JOB_PROPAGATE;
  acme_authns_t *a = NULL;
  int rc = acme__authns_start(&a, e->loop, res, num_res, job->dns_fqdn,
                              e->acme->dns_propagation_timeout_ms, on_authns, job);
  gh_free(res);
  if (rc != 0) {
    acme__job_fail(job, rc, "dns-01: cannot check %.*s: %s", fqdn_len(job->dns_fqdn),
                   job->dns_fqdn, uv_strerror(rc));
    return;
  }
  job->authns = a;
}

void acme__order_dns_cancel(acme_job_t *job) {
  acme__authns_cancel(job->authns);
  job->authns = NULL;
  acme__dnscheck_cancel(job->dnscheck);
  job->dnscheck = NULL;
  gh_free(job->dns_zone);
  job->dns_zone = NULL;
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
