/* dnsq.c: one question to the recursive resolvers, asked in turn until
 * one gives an answer that means something (see dnsx.h): NOERROR or
 * NXDOMAIN. SERVFAIL, REFUSED, silence and malformed answers make the
 * next resolver be asked, and are reported when none is left. */
#include <stdio.h>
#include <string.h>

#include <openssl/rand.h>

#include "acme/dnsx.h"
#include "common/common.h"

#define QUERY_ATTEMPTS 3 /* UDP, UDP, TCP */
#define QUERY_MS 2000u

struct acme_dnsq {
  uv_loop_t *loop;
  acme_dns_server_t *servers;
  size_t num_servers, server_i;
  char *name;
  uint16_t qtype, id;
  int rd;
  acme_dnsx_t *x;
  char why[1024]; /* what each resolver said */
  acme_dnsq_cb cb;
  void *arg;
};

static void q_free(acme_dnsq_t *q) {
  gh_free(q->servers);
  gh_free(q->name);
  gh_free(q);
}

static int no_add(void *arg, CBS rdata) {
  (void)arg;
  (void)rdata;
  return 0;
}

static int q_build(void *arg, uint8_t *out, size_t cap, size_t *out_len) {
  acme_dnsq_t *q = arg;
  RAND_bytes((uint8_t *)&q->id, sizeof(q->id));
  return acme__dns_query_type(out, cap, out_len, q->id, q->name, q->qtype, q->rd);
}

static acme_dnsx_judgement_t q_judge(void *arg, const uint8_t *msg, size_t len) {
  acme_dnsq_t *q = arg;
  int rcode;
  switch (acme__dns_parse_rrset(&rcode, msg, len, q->id, q->name, q->qtype, no_add, NULL)) {
    case ACME_DNS_MISMATCH: return ACME_DNSX_IGNORE;
    case ACME_DNS_TRUNCATED: return ACME_DNSX_TCP;
    case ACME_DNS_MALFORMED: return ACME_DNSX_BAD;
    default: return ACME_DNSX_TAKE;
  }
}

static void ask(acme_dnsq_t *q);

/* note records what the current resolver said, then asks the next one
 * or gives up with |status|. */
static void note_and_next(acme_dnsq_t *q, int status, const char *what) {
  size_t used = strlen(q->why);
  snprintf(q->why + used, sizeof(q->why) - used, "%s%s: %s", used ? "; " : "",
           q->servers[q->server_i].text, what);
  if (++q->server_i < q->num_servers) {
    ask(q);
    return;
  }
  q->cb(q->arg, status, NULL, 0, q->id, q->why);
  q_free(q);
}

static void q_done(void *arg, int status, const uint8_t *msg, size_t len, const char *why) {
  acme_dnsq_t *q = arg;
  q->x = NULL;
  if (status != 0) {
    note_and_next(q, status, why);
    return;
  }
  int rcode;
  acme__dns_parse_rrset(&rcode, msg, len, q->id, q->name, q->qtype, no_add, NULL);
  if (rcode != 0 && rcode != 3) {
    note_and_next(q, UV_EIO, acme__dns_rcode_name(rcode));
    return;
  }
  q->cb(q->arg, 0, msg, len, q->id, NULL);
  q_free(q);
}

static const acme_dnsx_ops_t q_ops = {q_build, q_judge, q_done};

static void ask(acme_dnsq_t *q) {
  int rc = acme__dnsx_start(&q->x, q->loop, &q->servers[q->server_i], QUERY_ATTEMPTS, QUERY_MS,
                            &q_ops, q);
  if (rc != 0) note_and_next(q, rc, uv_strerror(rc)); /* no socket: done will not come */
}

int acme__dnsq_start(acme_dnsq_t **out, uv_loop_t *loop, const acme_dns_server_t *servers,
                     size_t num_servers, const char *name, uint16_t qtype, int rd,
                     acme_dnsq_cb cb, void *arg) {
  *out = NULL;
  uint8_t wire[ACME_DNS_NAME_MAX];
  if (cb == NULL || num_servers == 0 || acme__dns_name_to_wire(wire, name) == 0) return UV_EINVAL;
  acme_dnsq_t *q = gh_calloc(1, sizeof(*q));
  q->loop = loop;
  q->servers = gh_calloc(num_servers, sizeof(*servers));
  memcpy(q->servers, servers, num_servers * sizeof(*servers));
  q->num_servers = num_servers;
  q->name = gh_strdup(name);
  q->qtype = qtype;
  q->rd = rd;
  q->cb = cb;
  q->arg = arg;
  /* The exchange starts from the loop: cb never runs before this returns. */
  int rc = acme__dnsx_start(&q->x, loop, &q->servers[0], QUERY_ATTEMPTS, QUERY_MS, &q_ops, q);
  if (rc != 0) {
    q_free(q);
    return rc;
  }
  *out = q;
  return 0;
}

void acme__dnsq_cancel(acme_dnsq_t *q) {
  if (q == NULL) return;
  acme__dnsx_cancel(q->x);
  q_free(q);
}
