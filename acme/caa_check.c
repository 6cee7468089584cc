/* caa_check.c: the CAA pre-check of an order (issue 16; RFC 8659, RFC
 * 8657). A CA checks CAA before it issues, and a name whose records forbid
 * it fails its authorization, which Let's Encrypt counts (5 failures per
 * name an hour, then the account is paused for it). So when an order
 * starts, every name's CAA records are looked up in the background,
 * through acme.dns_resolvers or /etc/resolv.conf, while the directory and
 * the account are fetched; before newOrder at a CA the job waits for them
 * and checks them against that CA's issuer domains (its directory's
 * meta.caaIdentities, else caa_identities), its account URL and the
 * configured challenge types. Records that forbid every one of them end
 * the order at this CA at once, with the reason: the next CA of
 * acme.issuers is tried (no back-off: the CA did nothing wrong), or the
 * order fails. A lookup that fails is not a refusal: the CA decides. */
#include <string.h>

#include "acme/csr.h"
#include "acme/dnscheck.h"
#include "acme/engine_internal.h"
#include "common/common.h"
#include "common/log.h"

#define RESOLV_CONF "/etc/resolv.conf"
#define CAA_TIMEOUT_MS 5000u
#define ALL_TYPES 7u

static const char *const method_names[] = {"tls-alpn-01", "http-01", "dns-01"};

static void lookup_next(acme_job_t *job);

static void on_caa(void *arg, int status, const acme_caa_rr_t *rrs, size_t num_rrs,
                   const char *found_at, const char *why) {
  acme_job_t *job = arg;
  job->caa_lookup = NULL; /* it frees itself after this call */
  struct acme_caa_name *c = &job->caa[job->caa_next];
  if (status == 0) {
    c->looked_up = 1;
    if (num_rrs > 0) {
      acme_caa_rr_t *copy = gh_calloc(num_rrs, sizeof(*copy));
      for (size_t i = 0; i < num_rrs; i++) {
        copy[i].flags = rrs[i].flags;
        copy[i].tag = gh_strdup(rrs[i].tag);
        copy[i].value = gh_malloc(rrs[i].value_len + 1);
        memcpy(copy[i].value, rrs[i].value, rrs[i].value_len);
        copy[i].value[rrs[i].value_len] = '\0';
        copy[i].value_len = rrs[i].value_len;
      }
      c->rrs = copy;
      c->num_rrs = num_rrs;
      c->found_at = gh_strdup(found_at ? found_at : "?");
    }
  } else {
    GH_INFO("acme", "CAA of %s not checked before ordering (the CA checks it): %s",
            job->names[job->caa_next], why ? why : uv_strerror(status));
  }
  job->caa_next++;
  lookup_next(job);
}

static void lookup_next(acme_job_t *job) {
  acme_engine_t *e = job->engine;
  while (job->caa_next < job->num_names) {
    /* CAA is about names, not addresses (RFC 8738 gives it no part). */
    if (conf_ip_literal(job->names[job->caa_next], NULL, NULL)) {
      job->caa_next++;
      continue;
    }
    uint64_t now = gh_now_ms();
    if (now >= job->caa_deadline_ms) {
      GH_INFO("acme", "CAA of %s and the names after it not checked before ordering: the "
              "lookups took over %u ms", job->names[job->caa_next], CAA_TIMEOUT_MS);
      break;
    }
    char *err = NULL;
    acme_dns_server_t *servers = NULL;
    size_t num_servers = 0;
    int rc = acme__dns_servers(&err, &servers, &num_servers, e->acme, RESOLV_CONF);
    if (rc == 0) {
      rc = acme__caa_lookup_start(&job->caa_lookup, e->loop, servers, num_servers,
                                  job->names[job->caa_next], job->caa_deadline_ms - now, on_caa,
                                  job);
      gh_free(servers);
      if (rc == 0) return; /* on_caa goes on */
    }
    GH_INFO("acme", "CAA of %s not checked before ordering: %s", job->names[job->caa_next],
            err ? err : uv_strerror(rc));
    gh_free(err);
    job->caa_next++;
  }
  job->caa_done = 1;
  if (!job->done && job->state == ACME_JOB_CAA_WAIT) acme__job_goto(job, ACME_JOB_NEW_ORDER);
}

void acme__caa_start(acme_job_t *job) {
  if (!job->engine->acme->caa_check || job->kind != ACME_KIND_OBTAIN || job->caa != NULL) {
    job->caa_done = 1;
    return;
  }
  job->caa = gh_calloc(job->num_names, sizeof(*job->caa));
  job->caa_deadline_ms = gh_now_ms() + CAA_TIMEOUT_MS; /* for all names together */
  lookup_next(job);
}

void acme__caa_stop(acme_job_t *job) {
  acme__caa_lookup_cancel(job->caa_lookup);
  job->caa_lookup = NULL;
  for (size_t i = 0; job->caa != NULL && i < job->num_names; i++) {
    acme__caa_rrs_free(job->caa[i].rrs, job->caa[i].num_rrs);
    gh_free(job->caa[i].found_at);
  }
  gh_free(job->caa);
  job->caa = NULL;
}

int acme__caa_gate(acme_job_t *job) {
  if (job->caa == NULL) return 0;
  if (!job->caa_done) {
    job->state = ACME_JOB_CAA_WAIT; /* lookup_next resumes it */
    return 1;
  }
  acme_ca_t *ca = job->ca;
  const conf_acme_t *acme = job->engine->acme;
  for (size_t i = 0; i < job->num_names; i++) {
    struct acme_caa_name *c = &job->caa[i];
    c->allowed = ALL_TYPES;
    if (c->num_rrs == 0) continue;
    if (ca->num_caa_ids == 0) {
      GH_DEBUG("acme", "CAA of %s not checked for CA %s: it names no CAA identities (set "
               "caa_identities)", job->names[i], ca->name);
      continue;
    }
    const char *name = job->names[i];
    int wildcard = strncmp(name, "*.", 2) == 0, ip = conf_ip_literal(name, NULL, NULL);
    char *why = NULL;
    c->allowed = 0;
    for (size_t k = 0; k < acme->num_challenges; k++) {
      acme_chall_type_t t = (acme_chall_type_t)acme->challenges[k];
      if ((wildcard && t != ACME_CHALL_DNS_01) || (ip && t == ACME_CHALL_DNS_01)) continue;
      char *w = NULL;
      if (acme__caa_permits(&w, c->rrs, c->num_rrs, (const char *const *)ca->caa_ids,
                            ca->num_caa_ids, ca->kid, method_names[t], wildcard) == 0) {
        c->allowed |= 1u << t;
      } else if (why == NULL) {
        why = w;
        w = NULL;
      }
      gh_free(w);
    }
    if (c->allowed == 0) {
      job->ca_skip = 1;
      acme__job_fail(job, UV_EPERM, "%s: not ordered: the CAA records at %s forbid CA %s: %s",
                     name, c->found_at, ca->name, why ? why : "no challenge type is allowed");
      gh_free(why);
      return -1;
    }
    gh_free(why);
  }
  return 0;
}

int acme__caa_allows(const acme_job_t *job, const char *name, acme_chall_type_t type) {
  if (job->caa == NULL || type < 0) return 1;
  for (size_t i = 0; i < job->num_names; i++) {
    const char *n = job->names[i];
    if (strncmp(n, "*.", 2) == 0) n += 2;
    if (strcmp(n, name) == 0 && job->caa[i].allowed != 0) return (job->caa[i].allowed >> type) & 1;
  }
  return 1;
}
