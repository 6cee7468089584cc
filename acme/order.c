/* order.c: the order's states (RFC 8555 section 7.4): newOrder, the
 * authorizations one after the other (skipping valid ones, presenting the
 * preferred challenge, responding, polling), finalize with a CSR, poll the
 * order, download the chain (or a preferred alternate), and store.
 *
 * Polling starts fast (POLL_FIRST_MS, doubling up to POLL_CAP_MS) because
 * on-demand issuance keeps a client's handshake waiting; a Retry-After from
 * the CA is honoured up to the same cap. */
#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "acme/csr.h"
#include "acme/engine_internal.h"
#include "acme/jws.h"
#include "common/b64.h"
#include "common/common.h"
#include "common/log.h"

/* 10 ms: a local or nearby CA validates in a few milliseconds, and the
 * on-demand client is waiting; the doubling keeps the extra polls against
 * a slow CA to a handful per order. (50 ms here made two fixed waits
 * nearly all of a new name's first response, 113 ms against Pebble.) */
#define POLL_FIRST_MS 10u
#define POLL_CAP_MS 10000u
#define POLL_DEADLINE_MS (5u * 60u * 1000u)
#define CERT_MAX_BODY (1u << 20)

static const char *chall_names[] = {"tls-alpn-01", "http-01", "dns-01"};

static int prepare_key(acme_job_t *job);

/* ---- request halves ---- */

void acme__order_request(acme_job_t *job) {
  acme_ca_t *ca = job->ca;
  switch (job->state) {
    case ACME_JOB_NEW_ORDER: {
      if (acme__caa_gate(job) != 0) return; /* waiting for CAA, or forbidden here */
      cJSON *p = cJSON_CreateObject();
      cJSON *ids = cJSON_AddArrayToObject(p, "identifiers");
      for (size_t i = 0; i < job->num_names; i++) {
        cJSON *id = cJSON_CreateObject();
        cJSON_AddStringToObject(id, "type", conf_ip_literal(job->names[i], NULL, NULL) ? "ip"
                                                                                         : "dns");
        cJSON_AddStringToObject(id, "value", job->names[i]);
        cJSON_AddItemToArray(ids, id);
      }
      /* RFC 9773 5: a renewal names the certificate it replaces, where
       * the CA speaks ARI. */
      if (job->ari_cert_id != NULL && ca->url_renewal_info != NULL)
        cJSON_AddStringToObject(p, "replaces", job->ari_cert_id);
      if (job->profile != NULL) {
        char *why = acme__profile_problem(ca, job->profile);
        if (why != NULL) {
          cJSON_Delete(p);
          acme__job_fail(job, UV_EINVAL, "%s", why);
          gh_free(why);
          return;
        }
        cJSON_AddStringToObject(p, "profile", job->profile);
      }
      char *payload = cJSON_PrintUnformatted(p);
      cJSON_Delete(p);
      acme__job_request(job, "POST", ca->url_new_order, payload, 0);
      free(payload);
      return;
    }
    case ACME_JOB_AUTHZ:
    case ACME_JOB_AUTHZ_POLL:
      acme__job_request(job, "POST",
                        job->authz_urls[job->pend_polling ? job->pend[job->pend_i].authz
                                                          : job->authz_i],
                        "", 0);
      return;
    case ACME_JOB_RESPOND:
      acme__job_request(job, "POST", job->chall_url, "{}", 0);
      return;
    case ACME_JOB_PROPAGATE:
      return; /* woken by the DNS check (propagation.c) */
    case ACME_JOB_ORDER_POLL:
      acme__job_request(job, "POST", job->order_url, "", 0);
      return;
    case ACME_JOB_FINALIZE: {
      if (prepare_key(job) != 0) return;
      char *err = NULL;
      uint8_t *der = NULL;
      size_t der_len = 0;
      if (acme__csr_der(&err, &der, &der_len, job->cert_key, (const char *const *)job->names,
                        job->num_names) != 0) {
        acme__job_fail(job, UV_EINVAL, "building the CSR: %s", err);
        gh_free(err);
        return;
      }
      char *b64 = gh_b64url_encode(der, der_len);
      OPENSSL_free(der);
      char *payload = gh_asprintf("{\"csr\":\"%s\"}", b64);
      gh_free(b64);
      acme__job_request(job, "POST", job->finalize_url, payload, 0);
      gh_free(payload);
      return;
    }
    case ACME_JOB_CERT:
      acme__job_request(job, "POST", job->cert_url, "", CERT_MAX_BODY);
      return;
    case ACME_JOB_ALT_CERT:
      acme__job_request(job, "POST", job->alt_urls[job->alt_i], "", CERT_MAX_BODY);
      return;
    default:
      acme__job_fail(job, UV_EINVAL, "internal error: no request for state %d", (int)job->state);
      return;
  }
}

/* ---- challenges ---- */

/* publish writes the answer of the current challenge (|kind|, |id|) to a
 * fleet's store before the CA is told to validate, since its validator may
 * reach any node. Returns 0 (published, or nothing to publish) or -1 (the
 * job failed). With fleet.issue_when_store_down "local", a store that
 * cannot be reached is logged and the order goes on with this node's
 * answer only. */
static int publish(acme_job_t *job, acme_storage_challenge_t kind, const char *id) {
  acme_engine_t *e = job->engine;
  if (!acme_storage_shared(e->storage)) return 0;
  char *err = NULL;
  int rc = acme_storage_challenge_put(e->storage, &err, kind, id, job->keyauth, job->lock);
  if (rc != 0 && rc != -ESTALE && e->conf->fleet.issue_when_store_down == CONF_STORE_DOWN_LOCAL) {
    GH_WARN("fleet", "%s: challenge not published (%s): only this node answers it", id, err);
    rc = 0;
  } else if (rc != 0) {
    acme__job_fail(job, UV_EAI_AGAIN, "%s: cannot publish the challenge to the fleet: %s", id,
                   err);
  }
  gh_free(err);
  return rc == 0 ? 0 : -1;
}

/* unpublish removes what publish wrote; a failure is only logged (the
 * record goes with the node's lease at the latest). */
static void unpublish(acme_job_t *job, acme_storage_challenge_t kind, const char *id) {
  acme_engine_t *e = job->engine;
  if (!acme_storage_shared(e->storage)) return;
  char *err = NULL;
  if (acme_storage_challenge_delete(e->storage, &err, kind, id, job->lock) != 0)
    GH_DEBUG("fleet", "%s: challenge record not removed: %s", id, err);
  gh_free(err);
}

/* challenge_unpresent removes the answer of the current challenge. */
/* answer_remove takes the TLS-ALPN-01 (name |id|) or HTTP-01 (token |id|)
 * answer out of the challenge table and the fleet's store. */
static void answer_remove(acme_job_t *job, acme_chall_type_t type, const char *id) {
  acme_engine_t *e = job->engine;
  if (type == ACME_CHALL_TLS_ALPN_01) {
    acme_challenges_put_tlsalpn(e->challenges, id, NULL);
    unpublish(job, ACME_STORAGE_TLSALPN01, id);
  } else {
    acme_challenges_put_http01(e->challenges, id, NULL);
    unpublish(job, ACME_STORAGE_HTTP01, id);
  }
}

static void challenge_unpresent(acme_job_t *job) {
  acme__order_dns_cancel(job);
  if (job->presented) {
    switch (job->chall_type) {
      case ACME_CHALL_TLS_ALPN_01:
        answer_remove(job, job->chall_type, job->chall_name);
        break;
      case ACME_CHALL_HTTP_01:
        answer_remove(job, job->chall_type, job->chall_token);
        break;
      case ACME_CHALL_DNS_01:
        if (job->engine->acme->dns_rfc2136.enabled) {
          acme__order_dns_update(job, 0);
        } else {
          acme__hook_run(job, "cleanup", job->dns_fqdn, job->dns_value);
        }
        break;
      default:
        break;
    }
  }
  job->presented = 0;
  job->chall_type = ACME_CHALL_NONE;
  char **owned[] = {&job->chall_url, &job->chall_token, &job->chall_name,
                    &job->keyauth,   &job->dns_fqdn,    &job->dns_value};
  for (size_t i = 0; i < GH_ARRAY_LEN(owned); i++) {
    gh_free(*owned[i]);
    *owned[i] = NULL;
  }
}

/* pend_unpresent removes the answer of the deferred challenge |p|. */
static void pend_unpresent(acme_job_t *job, struct acme_pend *p) {
  answer_remove(job, p->type, p->id);
  gh_free(p->id);
  p->id = NULL;
}

void acme__order_cleanup(acme_job_t *job) {
  challenge_unpresent(job);
  for (size_t i = 0; i < job->num_pend; i++)
    if (job->pend[i].id != NULL) pend_unpresent(job, &job->pend[i]);
  gh_free(job->pend);
  job->pend = NULL;
  job->num_pend = 0;
}

void acme__order_reset(acme_job_t *job) {
  char **strs[] = {&job->order_url, &job->finalize_url, &job->cert_url, &job->chall_url,
                   &job->chall_token, &job->chall_name, &job->keyauth, &job->dns_fqdn,
                   &job->dns_value, &job->chain_pem};
  for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
    gh_free(*strs[i]);
    *strs[i] = NULL;
  }
  for (size_t i = 0; i < job->num_authz; i++) gh_free(job->authz_urls[i]);
  gh_free(job->authz_urls);
  job->authz_urls = NULL;
  job->num_authz = job->authz_i = job->pend_i = 0;
  job->pend_polling = job->finalized = job->presented = 0;
  job->chall_type = ACME_CHALL_NONE;
  acme__links_free(job->alt_urls, job->num_alt);
  job->alt_urls = NULL;
  job->num_alt = job->alt_i = 0;
  job->account_lookup = job->account_resets = 0;
}

/* authz_advance moves to the next authorization, or once all were
 * fetched to polling the ones answered in parallel, or to the order. */
static void authz_advance(acme_job_t *job) {
  if (++job->authz_i < job->num_authz) {
    acme__job_goto(job, ACME_JOB_AUTHZ);
  } else if (job->pend_i < job->num_pend) {
    job->pend_polling = 1;
    job->poll_delay_ms = POLL_FIRST_MS * 2;
    job->poll_deadline_ms = gh_now_ms() + POLL_DEADLINE_MS;
    acme__job_wait(job, ACME_JOB_AUTHZ_POLL, POLL_FIRST_MS);
  } else {
    job->pend_polling = 0;
    job->poll_delay_ms = POLL_FIRST_MS;
    job->poll_deadline_ms = gh_now_ms() + POLL_DEADLINE_MS;
    acme__job_goto(job, ACME_JOB_ORDER_POLL);
  }
}

/* defer_challenge hands the challenge just answered to the CA over to the
 * parallel list (it stays presented) and fetches the next authorization. */
static void defer_challenge(acme_job_t *job) {
  job->pend = gh_realloc(job->pend, (job->num_pend + 1) * sizeof(*job->pend));
  job->pend[job->num_pend++] = (struct acme_pend){
      job->authz_i, job->chall_type,
      gh_strdup(job->chall_type == ACME_CHALL_HTTP_01 ? job->chall_token : job->chall_name)};
  job->presented = 0; /* now the list's to remove */
  challenge_unpresent(job);
  authz_advance(job);
}

/* challenge_present puts the chosen challenge's answer in place; returns 0
 * (the state is set) or -1 (the job failed). */
static int challenge_present(acme_job_t *job) {
  acme_engine_t *e = job->engine;
  char *err = NULL;
  job->used_chall = job->chall_type;
  switch (job->chall_type) {
    case ACME_CHALL_TLS_ALPN_01: {
      acme_cert_t *cert = acme__tlsalpn_cert(&err, job->chall_name, job->keyauth);
      if (cert == NULL) {
        acme__job_fail(job, UV_EINVAL, "%s: TLS-ALPN-01 certificate: %s", job->chall_url, err);
        gh_free(err);
        return -1;
      }
      acme_challenges_put_tlsalpn(e->challenges, job->chall_name, cert);
      acme_cert_unref(cert);
      job->presented = 1;
      if (publish(job, ACME_STORAGE_TLSALPN01, job->chall_name) != 0) return -1;
      acme__job_goto(job, ACME_JOB_RESPOND);
      return 0;
    }
    case ACME_CHALL_HTTP_01:
      acme_challenges_put_http01(e->challenges, job->chall_token, job->keyauth);
      job->presented = 1;
      if (publish(job, ACME_STORAGE_HTTP01, job->chall_token) != 0) return -1;
      acme__job_goto(job, ACME_JOB_RESPOND);
      return 0;
    case ACME_CHALL_DNS_01: {
      if (e->acme->dns_hook == NULL && !e->acme->dns_rfc2136.enabled) {
        acme__job_fail(job, UV_EINVAL, "%s: dns-01 needs acme.dns_hook or acme.dns.rfc2136",
                       job->chall_url);
        return -1;
      }
      job->dns_fqdn = gh_asprintf("_acme-challenge.%s.", job->chall_name);
      job->dns_value = acme__dns01_value(job->keyauth);
      job->state = ACME_JOB_PRESENT;
      if (e->acme->dns_rfc2136.enabled) {
        if (acme__order_dns_update(job, 1) != 0) return -1;
        job->presented = 1; /* the delete runs even if the add fails half-way */
        return 0;
      }
      int rc = acme__hook_run(job, "present", job->dns_fqdn, job->dns_value);
      if (rc != 0) {
        acme__job_fail(job, rc, "dns hook %s: %s", e->acme->dns_hook, uv_strerror(rc));
        return -1;
      }
      job->presented = 1; /* cleanup runs even if present fails half-way */
      return 0;
    }
    default:
      return -1;
  }
}

void acme__order_hook_done(acme_job_t *job, int64_t exit_status, int term_signal) {
  if (job->state != ACME_JOB_PRESENT) return;
  if (exit_status != 0 || term_signal != 0) {
    acme__job_fail(job, UV_EIO, "dns hook %s present %s failed (exit status %lld, signal %d)",
                   job->engine->acme->dns_hook, job->dns_fqdn, (long long)exit_status,
                   term_signal);
    return;
  }
  acme__order_dns_wait(job); /* then ACME_JOB_RESPOND, once the record is visible */
}

/* problem_text formats an embedded problem object ("error" of a challenge
 * or an order) as text (caller frees). */
static char *problem_text(const cJSON *obj) {
  if (!cJSON_IsObject(obj)) return gh_strdup("no error given");
  char *s = cJSON_PrintUnformatted(obj);
  acme_problem_t p;
  char *out;
  if (s != NULL && acme__problem_parse(&p, s, strlen(s)) == 0) {
    out = gh_strdup(p.message);
    acme__problem_cleanup(&p);
  } else {
    out = gh_strdup("an error without type or detail");
  }
  free(s);
  return out;
}

static void authz_advance(acme_job_t *job);
static void pend_unpresent(acme_job_t *job, struct acme_pend *p);

static void authz_next(acme_job_t *job) {
  challenge_unpresent(job);
  authz_advance(job);
}

/* poll_again schedules the next poll of the current state, or fails once
 * the deadline has passed. */
static void poll_again(acme_job_t *job, const acme_httpc_resp_t *resp, const char *status) {
  if (gh_now_ms() >= job->poll_deadline_ms) {
    acme__job_fail(job, UV_ETIMEDOUT, "%s: still \"%s\" after %u s", job->url, status,
                   POLL_DEADLINE_MS / 1000);
    return;
  }
  uint64_t delay = acme__retry_after_ms(resp, job->poll_delay_ms, POLL_CAP_MS);
  job->poll_delay_ms *= 2;
  if (job->poll_delay_ms > POLL_CAP_MS) job->poll_delay_ms = POLL_CAP_MS;
  acme__job_wait(job, job->state, delay);
}

/* authz_ours checks that the authorization |json| is for an identifier
 * this order asked for (a DNS name of job->names, "*." with "wildcard");
 * otherwise it fails the job and returns -1. */
static int authz_ours(acme_job_t *job, const cJSON *json) {
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(json, "identifier");
  if (!cJSON_IsObject(id)) {
    acme__job_fail(job, UV_EPROTO, "%s: the authorization has no object \"identifier\"", job->url);
    return -1;
  }
  const char *value = acme__json_str(job, id, "value");
  const char *type = value ? acme__json_str(job, id, "type") : NULL;
  if (type == NULL) return -1;
  int wildcard = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(json, "wildcard"));
  int ip = strcmp(type, "ip") == 0;
  for (size_t i = 0; (ip || strcmp(type, "dns") == 0) && i < job->num_names; i++) {
    const char *n = job->names[i];
    if (ip != conf_ip_literal(n, NULL, NULL)) continue;
    if (wildcard && strncmp(n, "*.", 2) == 0 && strcasecmp(n + 2, value) == 0) return 0;
    if (!wildcard && strcasecmp(n, value) == 0) return 0;
  }
  char *p = acme__storage_printable(value);
  acme__job_fail(job, UV_EPROTO, "%s: the authorization is for %s %s%s, which this order did not "
                 "ask for", job->url, strcmp(type, "dns") == 0 ? "the name" : type,
                 wildcard ? "*." : "", p);
  gh_free(p);
  return -1;
}

static void authz_response(acme_job_t *job, const acme_httpc_resp_t *resp, const cJSON *json) {
  acme_ca_t *ca = job->ca;
  acme_engine_t *e = job->engine;
  const char *status = acme__json_str(job, json, "status");
  if (status == NULL) return;
  if (authz_ours(job, json) != 0) return;
  if (strcmp(status, "valid") == 0 && job->state == ACME_JOB_AUTHZ_POLL) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(json, "identifier");
    GH_DEBUG("acme", "%s: authorization for %s is valid", job->url,
             cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(id, "value")));
  }
  if (job->pend_polling && strcmp(status, "valid") == 0) {
    pend_unpresent(job, &job->pend[job->pend_i]);
    if (++job->pend_i < job->num_pend) {
      acme__job_goto(job, ACME_JOB_AUTHZ_POLL); /* validated meanwhile, most likely */
    } else {
      authz_advance(job);
    }
    return;
  }
  if (strcmp(status, "valid") == 0) {
    authz_next(job);
    return;
  }
  const cJSON *chs = cJSON_GetObjectItemCaseSensitive(json, "challenges");
  if (strcmp(status, "pending") != 0) {
    /* invalid, deactivated, expired, revoked: say why if a challenge does */
    char *why = NULL;
    const cJSON *ch, *list = cJSON_IsArray(chs) ? chs : NULL;
    cJSON_ArrayForEach(ch, list) {
      const cJSON *err = cJSON_GetObjectItemCaseSensitive(ch, "error");
      if (cJSON_IsObject(err)) {
        why = problem_text(err);
        break;
      }
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(json, "identifier");
    const cJSON *val = cJSON_IsObject(id) ? cJSON_GetObjectItemCaseSensitive(id, "value") : NULL;
    acme__job_fail(job, UV_EPROTO, "%s: authorization for %s is %s: %s", job->url,
                   cJSON_IsString(val) ? val->valuestring : "?", status,
                   why ? why : "no challenge error given");
    gh_free(why);
    return;
  }
  if (job->state == ACME_JOB_AUTHZ_POLL) {
    poll_again(job, resp, status);
    return;
  }
  /* pending, first look: choose a challenge */
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(json, "identifier");
  if (!cJSON_IsObject(id)) {
    acme__job_fail(job, UV_EPROTO, "%s: the authorization has no object \"identifier\"", job->url);
    return;
  }
  const char *value = acme__json_str(job, id, "value");
  if (value == NULL) return;
  char *err = NULL;
  if (acme__name_check(&err, "authorization identifier", value, 0) != 0) {
    acme__job_fail(job, UV_EPROTO, "%s: field \"identifier.value\": %s", job->url, err);
    gh_free(err);
    return;
  }
  int wildcard = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(json, "wildcard"));
  if (!cJSON_IsArray(chs)) {
    acme__job_fail(job, UV_EPROTO, "%s: the authorization has no array \"challenges\"", job->url);
    return;
  }
  const cJSON *chosen = NULL;
  acme_chall_type_t type = ACME_CHALL_NONE;
  for (size_t i = 0; i < e->acme->num_challenges && chosen == NULL; i++) {
    acme_chall_type_t want = (acme_chall_type_t)e->acme->challenges[i];
    if (wildcard && want != ACME_CHALL_DNS_01) continue; /* RFC 8555 7.1.3 */
    if (want == ACME_CHALL_DNS_01 && conf_ip_literal(value, NULL, NULL))
      continue; /* RFC 8738 7: no dns-01 for an IP address */
    if (!acme__caa_allows(job, value, want)) continue; /* CAA validationmethods */
    const cJSON *ch;
    cJSON_ArrayForEach(ch, chs) {
      const cJSON *t = cJSON_GetObjectItemCaseSensitive(ch, "type");
      if (cJSON_IsString(t) && strcmp(t->valuestring, chall_names[want]) == 0) {
        chosen = ch;
        type = want;
        break;
      }
    }
  }
  if (chosen == NULL) {
    char offered[256] = "";
    const cJSON *ch;
    cJSON_ArrayForEach(ch, chs) {
      const cJSON *t = cJSON_GetObjectItemCaseSensitive(ch, "type");
      if (cJSON_IsString(t) && strlen(offered) + strlen(t->valuestring) + 2 < sizeof(offered)) {
        if (offered[0]) strcat(offered, ", ");
        strcat(offered, t->valuestring);
      }
    }
    acme__job_fail(job, UV_EPROTO, "%s: no offered challenge for %s%s (offered: %s) is in "
                   "acme.challenges%s", job->url, wildcard ? "*." : "", value,
                   offered[0] ? offered : "none", wildcard ? " (a wildcard needs dns-01)" : "");
    return;
  }
  const char *url = acme__json_url(job, chosen, "url");
  if (url == NULL) return;
  const char *token = acme__json_str(job, chosen, "token");
  if (token == NULL) return;
  char *keyauth = acme__key_authorization(token, ca->thumbprint);
  if (keyauth == NULL) {
    acme__job_fail(job, UV_EPROTO, "%s: field \"token\" of the %s challenge is not a valid "
                   "token", job->url, chall_names[type]);
    return;
  }
  job->chall_type = type;
  job->chall_url = gh_strdup(url);
  job->chall_token = gh_strdup(token);
  job->chall_name = gh_strdup(value);
  job->keyauth = keyauth;
  job->poll_delay_ms = POLL_FIRST_MS;
  job->poll_deadline_ms = gh_now_ms() + POLL_DEADLINE_MS +
                          (type == ACME_CHALL_DNS_01 ? e->acme->dns_propagation_timeout_ms : 0);
  GH_DEBUG("acme", "%s: %s for %s", job->url, chall_names[type], value);
  challenge_present(job);
}

static void order_response(acme_job_t *job, const acme_httpc_resp_t *resp, const cJSON *json) {
  const char *status = acme__json_str(job, json, "status");
  if (status == NULL) return;
  if (strcmp(status, "valid") == 0) {
    const char *cert = acme__json_url(job, json, "certificate");
    if (cert == NULL) return;
    gh_free(job->cert_url);
    job->cert_url = gh_strdup(cert);
    acme__job_goto(job, ACME_JOB_CERT);
  } else if (strcmp(status, "ready") == 0 && !job->finalized) {
    if (job->finalize_url == NULL) {
      const char *fin = acme__json_url(job, json, "finalize");
      if (fin == NULL) return;
      job->finalize_url = gh_strdup(fin);
    }
    job->finalized = 1;
    acme__job_goto(job, ACME_JOB_FINALIZE);
  } else if (strcmp(status, "pending") == 0 || strcmp(status, "processing") == 0 ||
             strcmp(status, "ready") == 0) {
    job->state = ACME_JOB_ORDER_POLL;
    poll_again(job, resp, status);
  } else {
    char *why = problem_text(cJSON_GetObjectItemCaseSensitive(json, "error"));
    acme__job_fail(job, UV_EPROTO, "%s: order is %s: %s", job->url, status, why);
    gh_free(why);
  }
}

static void new_order_response(acme_job_t *job, const acme_httpc_resp_t *resp,
                               const cJSON *json) {
  const char *loc = acme_httpc_header(resp, "Location");
  if (loc == NULL || loc[0] == '\0') {
    acme__job_fail(job, UV_EPROTO, "POST %s: status %d without a Location header (the order "
                   "URL)", job->url, resp->status);
    return;
  }
  const char *why = acme__url_problem(loc);
  if (why != NULL) {
    acme__job_fail(job, UV_EPROTO, "POST %s: the order URL (Location) is refused: %s", job->url,
                   why);
    return;
  }
  const char *fin = acme__json_url(job, json, "finalize");
  if (fin == NULL || acme__json_str(job, json, "status") == NULL) return;
  const cJSON *az = cJSON_GetObjectItemCaseSensitive(json, "authorizations");
  int n = cJSON_IsArray(az) ? cJSON_GetArraySize(az) : -1;
  if (n < 0) {
    acme__job_fail(job, UV_EPROTO, "POST %s: field \"authorizations\" is not an array of URLs",
                   job->url);
    return;
  }
  /* One authorization per identifier (RFC 8555 7.1.4): more is a CA
   * sending this order on errands. */
  if ((size_t)n > job->num_names) {
    acme__job_fail(job, UV_EPROTO, "POST %s: %d authorizations for an order of %zu name(s)",
                   job->url, n, job->num_names);
    return;
  }
  job->order_url = gh_strdup(loc);
  job->finalize_url = gh_strdup(fin);
  job->authz_urls = gh_calloc((size_t)n + 1, sizeof(char *));
  const cJSON *a;
  cJSON_ArrayForEach(a, az) {
    if (!cJSON_IsString(a) || a->valuestring[0] == '\0') {
      acme__job_fail(job, UV_EPROTO, "POST %s: field \"authorizations\" holds a non-string",
                     job->url);
      return;
    }
    if ((why = acme__url_problem(a->valuestring)) != NULL) {
      acme__job_fail(job, UV_EPROTO, "POST %s: an authorization URL is refused: %s", job->url,
                     why);
      return;
    }
    job->authz_urls[job->num_authz++] = gh_strdup(a->valuestring);
  }
  GH_DEBUG("acme", "order %s: %zu authorizations", job->order_url, job->num_authz);
  job->authz_i = 0;
  if (job->num_authz == 0) {
    job->authz_i = (size_t)-1; /* authz_next moves to 0 == num_authz: the order */
    authz_next(job);
  } else {
    acme__job_goto(job, ACME_JOB_AUTHZ);
  }
}

/* ---- the certificate ---- */

/* chain_top_issuer returns the issuer CN of the last certificate of the
 * PEM chain (caller frees), or NULL. Sets |*out_num| to the chain length. */
static char *chain_top_issuer(const char *pem, size_t len, size_t *out_num) {
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  X509 *x, *last = NULL;
  size_t n = 0;
  while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    X509_free(last);
    last = x;
    n++;
  }
  ERR_clear_error();
  BIO_free(bio);
  *out_num = n;
  if (last == NULL) return NULL;
  char cn[256];
  int r = X509_NAME_get_text_by_NID(X509_get_issuer_name(last), NID_commonName, cn, sizeof(cn));
  X509_free(last);
  return r > 0 ? gh_strdup(cn) : NULL;
}

/* acme__cert_problem checks the chain the CA returned before anything stores or
 * serves it: the leaf's key is the CSR's, its DNS names are exactly the
 * ordered ones, it is valid now, and each certificate of the chain is
 * issued (and signed) by the next one. Returns NULL or why not (a new
 * string). */
char *acme__cert_problem(const char *chain_pem, size_t chain_len, const char *const *names,
                         size_t num_names, const EVP_PKEY *key) {
  STACK_OF(X509) *chain = sk_X509_new_null();
  BIO *bio = chain_len <= INT_MAX ? BIO_new_mem_buf(chain_pem, (int)chain_len) : NULL;
  X509 *x;
  while (bio != NULL && sk_X509_num(chain) < 16 &&
         (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
    sk_X509_push(chain, x);
  ERR_clear_error();
  BIO_free(bio);
  char *why = NULL;
  X509 *leaf = sk_X509_num(chain) > 0 ? sk_X509_value(chain, 0) : NULL;
  EVP_PKEY *leaf_key = leaf ? X509_get_pubkey(leaf) : NULL;
  time_t now = time(NULL);
  if (leaf == NULL) {
    why = gh_strdup("no certificate in it");
  } else if (leaf_key == NULL || EVP_PKEY_cmp(leaf_key, key) != 1) {
    why = gh_strdup("its key is not the one of this order's CSR");
  } else if (X509_cmp_time(X509_get0_notAfter(leaf), &now) <= 0) {
    why = gh_strdup("it has expired");
  } else if (X509_cmp_time(X509_get0_notBefore(leaf), &(time_t){now + 300}) > 0) {
    why = gh_strdup("it is not valid yet");
  } else if (sk_X509_num(chain) < 2) {
    why = gh_strdup("no issuer certificate came with it");
  }
  if (why == NULL) { /* the names: exactly the ordered ones */
    GENERAL_NAMES *sans = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    size_t found = 0, count = 0;
    for (size_t i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans) && why == NULL; i++) {
      const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
      char ip[INET6_ADDRSTRLEN];
      const unsigned char *d;
      int len;
      if (g->type == GEN_IPADD) { /* RFC 8738: compared in its text form */
        if (acme_cert_ip_text(ip, ASN1_STRING_get0_data(g->d.iPAddress),
                              (size_t)ASN1_STRING_length(g->d.iPAddress)) != 0) {
          why = gh_strdup("it names a malformed IP address");
          break;
        }
        d = (const unsigned char *)ip;
        len = (int)strlen(ip);
      } else if (g->type == GEN_DNS) {
        d = ASN1_STRING_get0_data(g->d.dNSName);
        len = ASN1_STRING_length(g->d.dNSName);
      } else {
        why = gh_strdup("it names something other than DNS names and IP addresses");
        break;
      }
      int ours = 0;
      for (size_t k = 0; k < num_names && !ours; k++)
        ours = strlen(names[k]) == (size_t)len &&
               strncasecmp(names[k], (const char *)d, (size_t)len) == 0;
      if (!ours) {
        char *p = gh_strndup((const char *)d, (size_t)len), *q = acme__storage_printable(p);
        why = gh_asprintf("it names %s, which this order did not ask for", q);
        gh_free(p);
        gh_free(q);
      }
      found += ours;
      count++;
    }
    GENERAL_NAMES_free(sans);
    if (why == NULL && found != num_names)
      why = gh_asprintf("it names %zu of the %zu ordered names", found, num_names);
  }
  for (size_t i = 0; why == NULL && i + 1 < sk_X509_num(chain); i++) {
    X509 *sub = sk_X509_value(chain, i), *iss = sk_X509_value(chain, i + 1);
    EVP_PKEY *ik = X509_get_pubkey(iss);
    if (X509_check_issued(iss, sub) != X509_V_OK || ik == NULL || X509_verify(sub, ik) != 1)
      why = gh_asprintf("certificate %zu of the chain is not issued by the next one", i);
    EVP_PKEY_free(ik);
  }
  EVP_PKEY_free(leaf_key);
  ERR_clear_error();
  sk_X509_pop_free(chain, X509_free);
  return why;
}

static void store_cert(acme_job_t *job) {
  acme_ca_t *ca = job->ca;
  acme_engine_t *e = job->engine;
  char *err = NULL;
  char *why = acme__cert_problem(job->chain_pem, strlen(job->chain_pem),
                                 (const char *const *)job->names, job->num_names, job->cert_key);
  if (why != NULL) {
    /* The CA's fault: another CA may issue a sound one. */
    acme__job_ca_fault(job, UV_EPROTO, "%s: the certificate for %s is refused: %s",
                       job->cert_url, job->names[0], why);
    gh_free(why);
    return;
  }
  char *key_pem = acme__key_to_pem(job->cert_key);
  if (key_pem == NULL) {
    acme__job_fail(job, UV_EINVAL, "cannot encode the certificate key");
    return;
  }
  size_t chain_len = strlen(job->chain_pem);
  acme_cert_t *cert = acme_cert_from_pem(&err, job->chain_pem, chain_len, key_pem,
                                         strlen(key_pem));
  if (cert == NULL) {
    acme__job_fail(job, UV_EPROTO, "%s: the certificate chain: %s", job->cert_url, err);
    gh_free(err);
    gh_free(key_pem);
    return;
  }
  cJSON *meta = cJSON_CreateObject();
  cJSON *names = cJSON_AddArrayToObject(meta, "names");
  for (size_t i = 0; i < job->num_names; i++)
    cJSON_AddItemToArray(names, cJSON_CreateString(job->names[i]));
  cJSON_AddStringToObject(meta, "issuer", cert->issuer_cn ? cert->issuer_cn : "");
  char t[32];
  gh_format_time(t, sizeof(t), cert->not_before);
  cJSON_AddStringToObject(meta, "not_before", t);
  gh_format_time(t, sizeof(t), cert->not_after);
  cJSON_AddStringToObject(meta, "not_after", t);
  cJSON_AddStringToObject(meta, "order_url", job->order_url ? job->order_url : "");
  cJSON_AddStringToObject(meta, "certificate_url", job->cert_url ? job->cert_url : "");
  cJSON_AddStringToObject(meta, "ca", ca->conf.directory);
  if (job->profile != NULL) cJSON_AddStringToObject(meta, "profile", job->profile);
  cJSON_AddStringToObject(meta, "key_type", e->acme->key_type == CONF_KEY_P384 ? "p384"
                                            : e->acme->key_type == CONF_KEY_RSA2048 ? "rsa2048"
                                                                                   : "p256");
  gh_format_time(t, sizeof(t), time(NULL));
  cJSON_AddStringToObject(meta, "obtained", t);
  char *meta_text = cJSON_PrintUnformatted(meta);
  cJSON_Delete(meta);
  acme_storage_bundle_t bundle = {
      .chain_pem = {job->chain_pem, chain_len},
      .key_pem = {key_pem, strlen(key_pem)},
      .meta_json = {meta_text, strlen(meta_text)},
  };
  int rc = acme_storage_cert_save(e->storage, &err, job->names[0], &bundle);
  OPENSSL_cleanse(key_pem, strlen(key_pem));
  gh_free(key_pem);
  free(meta_text);
  if (rc != 0) {
    acme_cert_unref(cert);
    acme__job_fail(job, rc, "storing the certificate for %s: %s", job->names[0], err);
    gh_free(err);
    return;
  }
  acme__job_succeed(job, cert);
  acme_cert_unref(cert);
}

/* chain_ok checks that a downloaded body looks like a PEM chain. */
static int chain_ok(acme_job_t *job, const acme_httpc_resp_t *resp) {
  static const char begin[] = "-----BEGIN CERTIFICATE-----";
  if (resp->body_len < sizeof(begin) - 1 ||
      memmem(resp->body, resp->body_len, begin, sizeof(begin) - 1) == NULL ||
      memchr(resp->body, '\0', resp->body_len) != NULL) {
    acme__job_fail(job, UV_EPROTO, "POST %s: status %d: the body is not a PEM certificate "
                   "chain", job->url, resp->status);
    return 0;
  }
  return 1;
}

static void cert_response(acme_job_t *job, const acme_httpc_resp_t *resp) {
  acme_ca_t *ca = job->ca;
  if (!chain_ok(job, resp)) return;
  const char *pref = ca->conf.preferred_chain;
  if (job->state == ACME_JOB_CERT) {
    job->chain_pem = gh_strndup(resp->body, resp->body_len);
    if (pref != NULL) {
      size_t n;
      char *top = chain_top_issuer(resp->body, resp->body_len, &n);
      int match = top != NULL && strcmp(top, pref) == 0;
      gh_free(top);
      if (!match) {
        const char *vals[16];
        size_t nv = 0, pos = 0;
        const char *v;
        while (nv < GH_ARRAY_LEN(vals) && (v = acme_httpc_header_next(resp, "Link", &pos)) != NULL)
          vals[nv++] = v;
        job->num_alt = acme__links(&job->alt_urls, vals, nv, "alternate");
        /* Only https alternates are followed; the others are dropped. */
        size_t kept = 0;
        for (size_t i = 0; i < job->num_alt; i++) {
          if (acme__url_problem(job->alt_urls[i]) == NULL) {
            job->alt_urls[kept++] = job->alt_urls[i];
          } else {
            GH_WARN("acme", "%s: an alternate chain URL is not followed: %s", job->cert_url,
                    acme__url_problem(job->alt_urls[i]));
            gh_free(job->alt_urls[i]);
          }
        }
        job->num_alt = kept;
        if (job->num_alt > 0) {
          job->alt_i = 0;
          acme__job_goto(job, ACME_JOB_ALT_CERT);
          return;
        }
      }
    }
    store_cert(job);
    return;
  }
  /* an alternate chain */
  size_t n;
  char *top = chain_top_issuer(resp->body, resp->body_len, &n);
  int match = top != NULL && strcmp(top, pref) == 0;
  gh_free(top);
  if (match) {
    gh_free(job->chain_pem);
    job->chain_pem = gh_strndup(resp->body, resp->body_len);
  } else if (++job->alt_i < job->num_alt) {
    acme__job_goto(job, ACME_JOB_ALT_CERT);
    return;
  } else {
    GH_INFO("acme", "no chain of %s is issued by \"%s\": keeping the default one",
            job->names[0], pref);
  }
  store_cert(job);
}

/* prepare_key makes (or, with reuse_key, finds) the certificate key. */
static int prepare_key(acme_job_t *job) {
  acme_engine_t *e = job->engine;
  if (job->cert_key != NULL) return 0;
  if (e->acme->reuse_key) {
    acme_cert_t *old = NULL;
    char *err = NULL;
    if (acme_storage_cert_load(e->storage, &old, NULL, &err, job->names[0]) == 0) {
      EVP_PKEY_up_ref(old->key);
      job->cert_key = old->key;
      acme_cert_unref(old);
      return 0;
    }
    gh_free(err);
  }
  job->cert_key = acme__key_new(e->acme->key_type);
  if (job->cert_key == NULL) {
    acme__job_fail(job, UV_ENOMEM, "cannot generate a certificate key");
    return -1;
  }
  return 0;
}

/* ---- response halves ---- */

void acme__order_response(acme_job_t *job, const acme_httpc_resp_t *resp, const cJSON *unused) {
  (void)unused;
  if (job->state == ACME_JOB_CERT || job->state == ACME_JOB_ALT_CERT) {
    cert_response(job, resp);
    return;
  }
  cJSON *json = cJSON_ParseWithLength(resp->body, resp->body_len);
  if (!cJSON_IsObject(json)) {
    acme__job_fail(job, UV_EPROTO, "%s %s: status %d: the response is not a JSON object%s",
                   job->method, job->url, resp->status,
                   resp->body_len == 0 ? " (empty body)" : "");
    cJSON_Delete(json);
    return;
  }
  switch (job->state) {
    case ACME_JOB_NEW_ORDER:
      new_order_response(job, resp, json);
      break;
    case ACME_JOB_AUTHZ:
    case ACME_JOB_AUTHZ_POLL:
      authz_response(job, resp, json);
      break;
    case ACME_JOB_RESPOND:
      if (job->chall_type != ACME_CHALL_DNS_01 && job->num_authz > 1) {
        /* Left to the CA while the next authorizations are fetched and
         * answered: they are all validated at once. */
        defer_challenge(job);
        break;
      }
      /* The challenge is now processing: poll its authorization soon. */
      acme__job_wait(job, ACME_JOB_AUTHZ_POLL, POLL_FIRST_MS);
      job->poll_delay_ms = POLL_FIRST_MS * 2;
      break;
    case ACME_JOB_FINALIZE:
    case ACME_JOB_ORDER_POLL:
      if (job->state == ACME_JOB_ORDER_POLL || job->finalized) {
        if (job->state == ACME_JOB_FINALIZE) {
          job->poll_delay_ms = POLL_FIRST_MS;
          job->poll_deadline_ms = gh_now_ms() + POLL_DEADLINE_MS;
          job->state = ACME_JOB_ORDER_POLL;
        }
        order_response(job, resp, json);
      }
      break;
    default:
      acme__job_fail(job, UV_EINVAL, "internal error: no response half for state %d",
                     (int)job->state);
      break;
  }
  cJSON_Delete(json);
}
