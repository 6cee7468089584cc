/* authns.c: the authoritative servers of the zone that holds a name, found
 * through the recursive resolvers (see dnscheck.h): the SOA of the name
 * (its owner, in the answer or the authority section, is the zone's apex;
 * without one, the parent is asked, and so on up to the top-level domain),
 * the apex's NS records, and their addresses (A; AAAA for a name server
 * without one). Every answer goes
 * through the bounds-checked parsers; a server name with bytes that are
 * not letters, digits, "-" or "_" is skipped. */
#include <stdio.h>
#include <string.h>

#include "acme/dnscheck.h"
#include "acme/dnsx.h"
#include "common/common.h"

#define DNS_TYPE_A 1
#define DNS_TYPE_NS 2
#define DNS_TYPE_SOA 6
#define DNS_TYPE_AAAA 28
#define MAX_NS 8
#define MAX_AUTH 8

typedef enum { STEP_SOA, STEP_NS, STEP_A, STEP_AAAA } step_t;

struct acme_authns {
  uv_loop_t *loop;
  acme_dns_server_t *resolvers;
  size_t num_resolvers;
  char *name;        /* the name, without a root dot */
  const char *level; /* the name whose SOA is asked: |name| or a parent */
  char zone[ACME_DNS_NAME_MAX + 1];
  char ns[MAX_NS][ACME_DNS_NAME_MAX + 1];
  size_t num_ns, ns_i;
  acme_dns_server_t found[MAX_AUTH];
  size_t num_found;
  step_t step;
  acme_dnsq_t *q;
  uint64_t deadline_ms;
  char why[512];
  acme_authns_cb cb;
  void *arg;
};

/* ---- reading answers ---- */

/* wire_to_text writes the wire name |w| as dotted text; returns 0, or -1
 * when a label holds a byte that has no place in a host name. */
static int wire_to_text(char out[ACME_DNS_NAME_MAX + 1], const uint8_t *w, size_t len) {
  size_t n = 0, i = 0;
  while (i < len && w[i] != 0) {
    uint8_t l = w[i++];
    if (i + l > len) return -1;
    if (n > 0) out[n++] = '.';
    for (uint8_t k = 0; k < l; k++) {
      uint8_t c = w[i + k];
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return -1;
      out[n++] = (char)c;
    }
    i += l;
  }
  out[n] = '\0';
  return n > 0 ? 0 : -1;
}

int acme__dns_soa_owner(char out[ACME_DNS_NAME_MAX + 1], const uint8_t *msg, size_t msg_len) {
  CBS all, cur;
  CBS_init(&all, msg, msg_len);
  cur = all;
  uint16_t counts[4];
  uint8_t nm[ACME_DNS_NAME_MAX];
  if (!CBS_skip(&cur, 4) || !CBS_get_u16(&cur, &counts[0]) || !CBS_get_u16(&cur, &counts[1]) ||
      !CBS_get_u16(&cur, &counts[2]) || !CBS_get_u16(&cur, &counts[3])) {
    return -1;
  }
  for (uint16_t i = 0; i < counts[0]; i++) {
    if (acme__dns_read_name(&all, &cur, nm) == 0 || !CBS_skip(&cur, 4)) return -1;
  }
  /* The answer, then the authority section. */
  for (size_t i = 0; i < (size_t)counts[1] + counts[2]; i++) {
    uint16_t type, class;
    CBS rdata;
    size_t nm_len = acme__dns_read_name(&all, &cur, nm);
    if (nm_len == 0 || !CBS_get_u16(&cur, &type) || !CBS_get_u16(&cur, &class) ||
        !CBS_skip(&cur, 4) || !CBS_get_u16_length_prefixed(&cur, &rdata)) {
      return -1;
    }
    if (type == DNS_TYPE_SOA && class == 1) return wire_to_text(out, nm, nm_len);
  }
  return -1;
}

typedef struct {
  const uint8_t *msg;
  size_t msg_len;
  acme_authns_t *a;
} ns_reader_t;

static int add_ns(void *arg, CBS rdata) {
  ns_reader_t *r = arg;
  acme_authns_t *a = r->a;
  /* The target may be compressed: read it in the whole message. */
  CBS all, target;
  uint8_t nm[ACME_DNS_NAME_MAX];
  CBS_init(&all, r->msg, r->msg_len);
  target = all;
  if (!CBS_skip(&target, (size_t)(CBS_data(&rdata) - r->msg))) return -1;
  size_t len = acme__dns_read_name(&all, &target, nm);
  if (len == 0) return -1;
  if (a->num_ns < MAX_NS && wire_to_text(a->ns[a->num_ns], nm, len) == 0) a->num_ns++;
  return 0;
}

static int add_addr(void *arg, CBS rdata) {
  acme_authns_t *a = arg;
  char ip[64];
  int family = CBS_len(&rdata) == 4 ? AF_INET : CBS_len(&rdata) == 16 ? AF_INET6 : 0;
  if (family == 0) return -1;
  if (a->num_found == MAX_AUTH || uv_inet_ntop(family, CBS_data(&rdata), ip, sizeof(ip)) != 0) {
    return 0;
  }
  acme_dns_server_t s;
  if (acme__dns_server_from(&s, ip, 53) != 0) return 0;
  for (size_t i = 0; i < a->num_found; i++) {
    if (strcmp(a->found[i].text, s.text) == 0) return 0;
  }
  a->found[a->num_found++] = s;
  return 0;
}

/* ---- the steps ---- */

static void authns_free(acme_authns_t *a) {
  gh_free(a->resolvers);
  gh_free(a->name);
  gh_free(a);
}

static void finish(acme_authns_t *a, const char *fmt, const char *what) {
  if (fmt != NULL) {
    size_t used = strlen(a->why);
    snprintf(a->why + used, sizeof(a->why) - used, fmt, what);
  }
  a->cb(a->arg, a->num_found ? 0 : UV_ENOENT, a->found, a->num_found, a->zone[0] ? a->zone : NULL,
        a->num_found ? NULL : a->why);
  authns_free(a);
}

static void on_answer(void *arg, int status, const uint8_t *msg, size_t len, uint16_t id,
                      const char *why);

static void ask(acme_authns_t *a, step_t step, const char *name, uint16_t qtype) {
  a->step = step;
  if (gh_now_ms() >= a->deadline_ms) {
    finish(a, "out of time asking about %s", name);
    return;
  }
  int rc = acme__dnsq_start(&a->q, a->loop, a->resolvers, a->num_resolvers, name, qtype, 1,
                            on_answer, a);
  if (rc != 0) finish(a, "cannot ask about %s", name);
}

/* next_address asks for the next address of the servers named: A, and
 * AAAA only for a name without one (one address a name server: a host
 * without IPv6 routes must not wait on servers it cannot reach), or
 * finishes. */
static void next_address(acme_authns_t *a, size_t num_before) {
  if (a->step == STEP_A && a->num_found == num_before) {
    ask(a, STEP_AAAA, a->ns[a->ns_i], DNS_TYPE_AAAA);
    return;
  }
  a->step = STEP_AAAA;
  if (a->step == STEP_AAAA) a->ns_i++;
  if (a->ns_i < a->num_ns && a->num_found < MAX_AUTH) {
    ask(a, STEP_A, a->ns[a->ns_i], DNS_TYPE_A);
    return;
  }
  finish(a, a->num_found ? NULL : "no address for the zone's name servers", NULL);
}

static void on_answer(void *arg, int status, const uint8_t *msg, size_t len, uint16_t id,
                      const char *why) {
  acme_authns_t *a = arg;
  a->q = NULL;
  int rcode;
  switch (a->step) {
    case STEP_SOA: {
      if (status != 0) {
        snprintf(a->why, sizeof(a->why), "the SOA query for %s failed: ", a->level);
        finish(a, "%s", why);
        return;
      }
      if (acme__dns_soa_owner(a->zone, msg, len) != 0) {
        a->zone[0] = '\0';
        const char *dot = strchr(a->level, '.');
        if (dot == NULL) {
          finish(a, "no SOA record for %s or any parent", a->name);
          return;
        }
        a->level = dot + 1;
        ask(a, STEP_SOA, a->level, DNS_TYPE_SOA);
        return;
      }
      ask(a, STEP_NS, a->zone, DNS_TYPE_NS);
      return;
    }
    case STEP_NS: {
      ns_reader_t r = {msg, len, a};
      if (status != 0) {
        snprintf(a->why, sizeof(a->why), "the NS query for %s failed: ", a->zone);
        finish(a, "%s", why);
        return;
      }
      if (acme__dns_parse_rrset(&rcode, msg, len, id, a->zone, DNS_TYPE_NS, add_ns, &r) !=
              ACME_DNS_ANSWER ||
          a->num_ns == 0) {
        finish(a, "no NS records for %s", a->zone);
        return;
      }
      a->ns_i = 0;
      ask(a, STEP_A, a->ns[0], DNS_TYPE_A);
      return;
    }
    default: {
      /* A server name without addresses, or whose lookup fails, is one
       * server less; the others may do. */
      size_t before = a->num_found;
      if (status == 0) {
        acme__dns_parse_rrset(&rcode, msg, len, id, a->ns[a->ns_i],
                              a->step == STEP_A ? DNS_TYPE_A : DNS_TYPE_AAAA, add_addr, a);
      }
      next_address(a, before);
      return;
    }
  }
}

int acme__authns_start(acme_authns_t **out, uv_loop_t *loop, const acme_dns_server_t *resolvers,
                       size_t num_resolvers, const char *name, uint64_t timeout_ms,
                       acme_authns_cb cb, void *arg) {
  *out = NULL;
  uint8_t wire[ACME_DNS_NAME_MAX];
  if (cb == NULL || num_resolvers == 0 || acme__dns_name_to_wire(wire, name) == 0) {
    return UV_EINVAL;
  }
  acme_authns_t *a = gh_calloc(1, sizeof(*a));
  a->loop = loop;
  a->resolvers = gh_calloc(num_resolvers, sizeof(*resolvers));
  memcpy(a->resolvers, resolvers, num_resolvers * sizeof(*resolvers));
  a->num_resolvers = num_resolvers;
  a->name = gh_strdup(name);
  size_t len = strlen(a->name);
  if (a->name[len - 1] == '.') a->name[len - 1] = '\0';
  a->level = a->name;
  a->deadline_ms = gh_now_ms() + timeout_ms;
  a->cb = cb;
  a->arg = arg;
  a->step = STEP_SOA;
  int rc = acme__dnsq_start(&a->q, loop, a->resolvers, num_resolvers, a->level, DNS_TYPE_SOA, 1,
                            on_answer, a);
  if (rc != 0) {
    authns_free(a);
    return rc;
  }
  *out = a;
  return 0;
}

void acme__authns_cancel(acme_authns_t *a) {
  if (a == NULL) return;
  acme__dnsq_cancel(a->q);
  authns_free(a);
}
