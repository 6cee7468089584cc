/* dnscheck.c: the DNS-01 propagation check (see dnscheck.h): DNS messages
 * (RFC 1035 section 4) built and parsed with BoringSSL's CBB/CBS, and the
 * rounds of UDP queries to the resolvers.
 *
 * Everything in a response is hostile: every read is bounds checked, a
 * compression pointer may only point backwards (so names cannot loop) and
 * at most MAX_JUMPS times, counts are believed only as far as the bytes go,
 * and an answer that is not for our id, from our resolver (the sockets are
 * connected) and to our question is ignored. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bytestring.h>
#include <openssl/rand.h>

#include "acme/dnscheck.h"
#include "acme/dnsx.h"
#include "common/common.h"
#include "common/log.h"

#define DNS_TYPE_CNAME 5
#define DNS_TYPE_TXT 16
#define DNS_CLASS_IN 1
#define DNS_FLAG_QR 0x8000u
#define DNS_FLAG_TC 0x0200u
#define DNS_FLAG_RD 0x0100u
#define DNS_OPCODE(f) (((f) >> 11) & 0xfu)
#define DNS_RCODE(f) ((f)&0xfu)
#define DNS_NAME_MAX ACME_DNS_NAME_MAX
#define MAX_JUMPS 64
#define MAX_CNAMES 8

#define QUERY_TIMEOUT_MS 2000u
#define PAUSE_FIRST_MS 100u
#define PAUSE_CAP_MS 2000u
#define MAX_SERVERS 8

/* ---- names ---- */

/* acme__dns_name_to_wire writes |name| as lower-case wire labels. Returns the length
 * or 0 if |name| is not a DNS name. */
size_t acme__dns_name_to_wire(uint8_t out[DNS_NAME_MAX], const char *name) {
  size_t n = 0, len = strlen(name);
  if (len > 0 && name[len - 1] == '.') len--;
  if (len == 0) return 0;
  const char *p = name, *end = name + len;
  while (p <= end) {
    const char *dot = memchr(p, '.', (size_t)(end - p));
    size_t label = (size_t)((dot ? dot : end) - p);
    if (label == 0 || label > 63 || n + 1 + label + 1 > DNS_NAME_MAX) return 0;
    out[n++] = (uint8_t)label;
    for (size_t i = 0; i < label; i++) out[n++] = (uint8_t)tolower((unsigned char)p[i]);
    if (dot == NULL) break;
    p = dot + 1;
  }
  out[n++] = 0;
  return n;
}

/* acme__dns_read_name reads the (possibly compressed) name at |cur| in the message
 * |msg| into |out| as lower-case wire labels, and advances |cur| past it.
 * Returns the length, or 0 if the name is malformed. */
size_t acme__dns_read_name(const CBS *msg, CBS *cur, uint8_t out[DNS_NAME_MAX]) {
  CBS at = *cur;
  int jumped = 0;
  size_t n = 0, jumps = 0;
  /* Where the current label sequence starts: a pointer must point before
   * it, so every jump goes strictly backwards and names cannot loop. */
  size_t seq_start = CBS_len(msg) - CBS_len(&at);
  for (;;) {
    uint8_t len;
    if (!CBS_get_u8(&at, &len)) return 0;
    if ((len & 0xc0) == 0xc0) {
      uint8_t lo;
      if (!CBS_get_u8(&at, &lo)) return 0;
      size_t target = ((size_t)(len & 0x3f) << 8) | lo;
      if (++jumps > MAX_JUMPS || target >= seq_start) return 0;
      if (!jumped) {
        *cur = at;
        jumped = 1;
      }
      at = *msg;
      if (!CBS_skip(&at, target)) return 0;
      seq_start = target;
      continue;
    }
    if (len & 0xc0) return 0; /* 0x40 and 0x80: extended label types, obsolete */
    if (len == 0) {
      if (n + 1 > DNS_NAME_MAX) return 0;
      out[n++] = 0;
      break;
    }
    CBS label;
    if (n + 1 + len + 1 > DNS_NAME_MAX || !CBS_get_bytes(&at, &label, len)) return 0;
    out[n++] = len;
    const uint8_t *d = CBS_data(&label);
    for (size_t i = 0; i < len; i++) out[n++] = (uint8_t)tolower(d[i]);
  }
  if (!jumped) *cur = at;
  return n;
}

static int name_eq(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len) {
  return a_len == b_len && memcmp(a, b, a_len) == 0;
}

/* ---- messages ---- */

int acme__dns_query(uint8_t *out, size_t out_cap, size_t *out_len, uint16_t id,
                    const char *name) {
  return acme__dns_query_type(out, out_cap, out_len, id, name, DNS_TYPE_TXT, 1);
}

int acme__dns_query_type(uint8_t *out, size_t out_cap, size_t *out_len, uint16_t id,
                         const char *name, uint16_t qtype, int rd) {
  uint8_t wire[DNS_NAME_MAX];
  size_t wire_len = acme__dns_name_to_wire(wire, name);
  if (wire_len == 0) return UV_EINVAL;
  CBB cbb;
  size_t len;
  if (!CBB_init_fixed(&cbb, out, out_cap) || !CBB_add_u16(&cbb, id) ||
      !CBB_add_u16(&cbb, rd ? DNS_FLAG_RD : 0) || !CBB_add_u16(&cbb, 1) || !CBB_add_u16(&cbb, 0) ||
      !CBB_add_u16(&cbb, 0) || !CBB_add_u16(&cbb, 0) || !CBB_add_bytes(&cbb, wire, wire_len) ||
      !CBB_add_u16(&cbb, qtype) || !CBB_add_u16(&cbb, DNS_CLASS_IN) ||
      !CBB_finish(&cbb, NULL, &len)) {
    CBB_cleanup(&cbb);
    return UV_EINVAL;
  }
  *out_len = len;
  return 0;
}

void acme__dns_answer_cleanup(acme_dns_answer_t *a) {
  for (size_t i = 0; i < a->num_txts; i++) gh_free(a->txts[i].data);
  memset(a, 0, sizeof(*a));
}

/* txt_add appends the TXT rdata |rdata| (one or more <len><bytes>
 * character-strings) to |out| as one record. Returns 0 or -1 (malformed). */
static int txt_add(acme_dns_answer_t *out, CBS rdata) {
  /* The concatenation is never longer than the rdata. */
  char *data = gh_malloc(CBS_len(&rdata) + 1);
  size_t len = 0;
  while (CBS_len(&rdata) > 0) {
    CBS s;
    if (!CBS_get_u8_length_prefixed(&rdata, &s)) {
      gh_free(data);
      return -1;
    }
    memcpy(data + len, CBS_data(&s), CBS_len(&s));
    len += CBS_len(&s);
  }
  data[len] = '\0';
  if (out->num_txts == ACME_DNS_MAX_TXTS) {
    gh_free(data);
    return 0;
  }
  out->txts[out->num_txts].data = data;
  out->txts[out->num_txts].len = len;
  out->num_txts++;
  return 0;
}

acme_dns_result_t acme__dns_parse_rrset(int *out_rcode, const uint8_t *msg, size_t msg_len,
                                        uint16_t id, const char *name, uint16_t qtype,
                                        int (*add)(void *arg, CBS rdata), void *arg) {
  *out_rcode = 0;
  uint8_t qname[DNS_NAME_MAX];
  size_t qname_len = acme__dns_name_to_wire(qname, name);
  if (qname_len == 0) return ACME_DNS_MISMATCH;
  CBS all, cur;
  CBS_init(&all, msg, msg_len);
  cur = all;
  uint16_t rid, flags, qdcount, ancount, nscount, arcount;
  if (!CBS_get_u16(&cur, &rid) || !CBS_get_u16(&cur, &flags) || !CBS_get_u16(&cur, &qdcount) ||
      !CBS_get_u16(&cur, &ancount) || !CBS_get_u16(&cur, &nscount) ||
      !CBS_get_u16(&cur, &arcount)) {
    return ACME_DNS_MALFORMED;
  }
  if (rid != id || !(flags & DNS_FLAG_QR) || DNS_OPCODE(flags) != 0) return ACME_DNS_MISMATCH;
  *out_rcode = (int)DNS_RCODE(flags);
  /* A truncated message may end anywhere: nothing after the header counts. */
  if (flags & DNS_FLAG_TC) return ACME_DNS_TRUNCATED;
  if (qdcount != 1) {
    /* FORMERR and friends may come without the question. */
    return *out_rcode != 0 && qdcount == 0 ? ACME_DNS_RCODE : ACME_DNS_MISMATCH;
  }
  uint8_t nm[DNS_NAME_MAX];
  size_t nm_len = acme__dns_read_name(&all, &cur, nm);
  uint16_t q_type, qclass;
  if (nm_len == 0 || !CBS_get_u16(&cur, &q_type) || !CBS_get_u16(&cur, &qclass)) {
    return ACME_DNS_MALFORMED;
  }
  if (!name_eq(nm, nm_len, qname, qname_len) || q_type != qtype || qclass != DNS_CLASS_IN) {
    return ACME_DNS_MISMATCH;
  }
  if (*out_rcode == 3) return ACME_DNS_NXDOMAIN;
  if (*out_rcode != 0) return ACME_DNS_RCODE;

  /* The owners whose records are ours: the name and, when it is an
   * alias (a delegated _acme-challenge, say), the CNAME chain from it. */
  uint8_t owners[1 + MAX_CNAMES][DNS_NAME_MAX];
  size_t owner_lens[1 + MAX_CNAMES], num_owners = 1;
  memcpy(owners[0], qname, qname_len);
  owner_lens[0] = qname_len;
  /* Each record takes at least 11 bytes: a huge count runs out of bytes
   * long before it costs anything. */
  for (uint16_t i = 0; i < ancount; i++) {
    uint16_t type, class;
    uint32_t ttl;
    CBS rdata;
    nm_len = acme__dns_read_name(&all, &cur, nm);
    if (nm_len == 0 || !CBS_get_u16(&cur, &type) || !CBS_get_u16(&cur, &class) ||
        !CBS_get_u32(&cur, &ttl) || !CBS_get_u16_length_prefixed(&cur, &rdata)) {
      return ACME_DNS_MALFORMED;
    }
    if (class != DNS_CLASS_IN || (type != qtype && type != DNS_TYPE_CNAME)) continue;
    int ours = 0;
    for (size_t k = 0; k < num_owners && !ours; k++) {
      ours = name_eq(nm, nm_len, owners[k], owner_lens[k]);
    }
    if (!ours) continue;
    if (type == DNS_TYPE_CNAME) {
      /* The target may be compressed: read it in the whole message. */
      CBS target = all;
      if (!CBS_skip(&target, (size_t)(CBS_data(&rdata) - msg))) {
        return ACME_DNS_MALFORMED;
      }
      size_t t_len = acme__dns_read_name(&all, &target, nm);
      if (t_len == 0) {
        return ACME_DNS_MALFORMED;
      }
      if (num_owners < GH_ARRAY_LEN(owners)) {
        memcpy(owners[num_owners], nm, t_len);
        owner_lens[num_owners++] = t_len;
      }
      continue;
    }
    if (add(arg, rdata) != 0) return ACME_DNS_MALFORMED;
  }
  /* The authority and additional sections tell us nothing we need. */
  (void)nscount;
  (void)arcount;
  return ACME_DNS_ANSWER;
}

static int txt_add_cb(void *arg, CBS rdata) { return txt_add(arg, rdata); }

acme_dns_result_t acme__dns_parse_txt(acme_dns_answer_t *out, const uint8_t *msg,
                                      size_t msg_len, uint16_t id, const char *name) {
  memset(out, 0, sizeof(*out));
  int rcode;
  acme_dns_result_t r =
      acme__dns_parse_rrset(&rcode, msg, msg_len, id, name, DNS_TYPE_TXT, txt_add_cb, out);
  if (r != ACME_DNS_ANSWER) acme__dns_answer_cleanup(out);
  out->rcode = r == ACME_DNS_ANSWER ? 0 : rcode;
  return r;
}

const char *acme__dns_rcode_name(int rcode) {
  /* RFC 1035, 2136 (6-10) and 8945 (TSIG errors 16-18, 22). */
  static const char *const names[] = {
      "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP",  "REFUSED", "YXDOMAIN", "YXRRSET",
      "NXRRSET", "NOTAUTH", "NOTZONE",  NULL,       NULL,      NULL,      NULL,       NULL,
      "BADSIG",  "BADKEY",  "BADTIME",  NULL,       NULL,      NULL,      "BADTRUNC"};
  return rcode >= 0 && (size_t)rcode < GH_ARRAY_LEN(names) && names[rcode] ? names[rcode]
                                                                             : "an error";
}

/* ---- the resolvers ---- */

int acme__dns_server_from(acme_dns_server_t *s, const char *host, uint16_t port) {
  memset(s, 0, sizeof(*s));
  if (strchr(host, ':') != NULL) {
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)&s->addr) != 0) return -1;
    snprintf(s->text, sizeof(s->text), "[%s]:%u", host, (unsigned)port);
  } else {
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&s->addr) != 0) return -1;
    snprintf(s->text, sizeof(s->text), "%s:%u", host, (unsigned)port);
  }
  return 0;
}

int acme__dns_servers(char **out_err, acme_dns_server_t **out, size_t *out_num,
                      const conf_acme_t *acme, const char *resolv_conf) {
  *out_err = NULL;
  *out = NULL;
  *out_num = 0;
  acme_dns_server_t *list = gh_calloc(MAX_SERVERS, sizeof(*list));
  size_t n = 0;
  if (acme->num_dns_resolvers > 0) {
    for (size_t i = 0; i < acme->num_dns_resolvers && n < MAX_SERVERS; i++) {
      const conf_addr_t *a = &acme->dns_resolvers[i];
      if (acme__dns_server_from(&list[n], a->host, a->port) != 0) {
        *out_err = gh_asprintf("acme.dns_resolvers[%zu]: \"%s\" is not an IP address and port",
                               i, a->text);
        gh_free(list);
        return UV_EINVAL;
      }
      snprintf(list[n].text, sizeof(list[n].text), "%s", a->text);
      n++;
    }
  } else {
    FILE *f = fopen(resolv_conf, "r");
    if (f == NULL) {
      int rc = -errno;
      *out_err = gh_asprintf("acme.dns_resolvers is empty and %s cannot be read: %s",
                             resolv_conf, strerror(-rc));
      gh_free(list);
      return rc;
    }
    char line[512];
    while (n < MAX_SERVERS && fgets(line, sizeof(line), f) != NULL) {
      char word[16], addr[128];
      /* "nameserver ADDR": anything else (options, search, comments) is not ours. */
      if (sscanf(line, " %15s %127s", word, addr) != 2 || strcmp(word, "nameserver") != 0) {
        continue;
      }
      if (acme__dns_server_from(&list[n], addr, 53) == 0) n++;
    }
    fclose(f);
    if (n == 0) {
      *out_err = gh_asprintf("acme.dns_resolvers is empty and %s names no nameserver",
                             resolv_conf);
      gh_free(list);
      return UV_ENOENT;
    }
  }
  *out = list;
  *out_num = n;
  return 0;
}

/* ---- the check ---- */

typedef struct {
  acme_dnscheck_t *check;
  acme_dns_server_t server;
  acme_dnsx_t *x; /* this round's query, while it runs */
  int seen;       /* returned the value: with ACME_DNSCHECK_ALL, not asked again */
  uint16_t id;
  char last[128]; /* the last outcome, for the failure message */
} probe_t;

struct acme_dnscheck {
  uv_loop_t *loop;
  uv_timer_t timer; /* the pauses between rounds */
  probe_t *probes;
  size_t num_probes, num_pending, num_seen;
  unsigned flags;
  char *fqdn;
  char *value;
  uint64_t started_ms, deadline_ms, pause_ms;
  acme_dnscheck_cb cb;
  void *arg;
  int done;
};

static void on_close(uv_handle_t *h) {
  acme_dnscheck_t *c = h->data;
  gh_free(c->probes);
  gh_free(c->fqdn);
  gh_free(c->value);
  gh_free(c);
}

/* check_close stops every query and the timer; the memory goes with the
 * timer's close callback. */
static void check_close(acme_dnscheck_t *c) {
  c->done = 1;
  c->cb = NULL;
  for (size_t i = 0; i < c->num_probes; i++) {
    acme__dnsx_cancel(c->probes[i].x);
    c->probes[i].x = NULL;
  }
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, on_close);
}

/* server_list says, for each server, what it last said ("A: NXDOMAIN;
 * B: ...") or, with |seen_only|, which servers returned the value. */
static char *server_list(const acme_dnscheck_t *c, int seen_only) {
  size_t cap = c->num_probes * (sizeof(c->probes[0].server.text) + sizeof(c->probes[0].last) + 4) + 1;
  char *s = gh_calloc(1, cap);
  for (size_t i = 0; i < c->num_probes; i++) {
    const probe_t *p = &c->probes[i];
    if (seen_only && !p->seen) continue;
    size_t used = strlen(s);
    if (seen_only) {
      snprintf(s + used, cap - used, "%s%s", used ? ", " : "", p->server.text);
    } else {
      snprintf(s + used, cap - used, "%s%s: %s", used ? "; " : "", p->server.text,
               p->seen ? "has the record" : p->last);
    }
  }
  return s;
}

static void check_finish(acme_dnscheck_t *c, const probe_t *found) {
  acme_dnscheck_cb cb = c->cb;
  void *arg = c->arg;
  uint64_t elapsed = gh_now_ms() - c->started_ms;
  char *why = server_list(c, found != NULL);
  acme_dns_server_t server;
  if (found != NULL) server = found->server;
  check_close(c);
  if (cb != NULL) cb(arg, found ? 0 : UV_ETIMEDOUT, found ? &server : NULL, elapsed, why);
  gh_free(why);
}

static void round_start(acme_dnscheck_t *c);

static void on_pause(uv_timer_t *t) {
  acme_dnscheck_t *c = t->data;
  if (!c->done) round_start(c);
}

static void round_end(acme_dnscheck_t *c) {
  uint64_t now = gh_now_ms();
  if (now >= c->deadline_ms) {
    check_finish(c, NULL);
    return;
  }
  uint64_t wait = c->pause_ms < c->deadline_ms - now ? c->pause_ms : c->deadline_ms - now;
  c->pause_ms = c->pause_ms * 2 > PAUSE_CAP_MS ? PAUSE_CAP_MS : c->pause_ms * 2;
  uv_timer_start(&c->timer, on_pause, wait, 0);
}

static int probe_build(void *arg, uint8_t *out, size_t cap, size_t *out_len) {
  probe_t *p = arg;
  RAND_bytes((uint8_t *)&p->id, sizeof(p->id));
  return acme__dns_query_type(out, cap, out_len, p->id, p->check->fqdn, DNS_TYPE_TXT,
                              !(p->check->flags & ACME_DNSCHECK_NORECURSE));
}

static acme_dnsx_judgement_t probe_judge(void *arg, const uint8_t *msg, size_t len) {
  probe_t *p = arg;
  acme_dns_answer_t ans;
  acme_dns_result_t r = acme__dns_parse_txt(&ans, msg, len, p->id, p->check->fqdn);
  acme__dns_answer_cleanup(&ans);
  switch (r) {
    case ACME_DNS_MISMATCH:
      GH_DEBUG("acme", "dns-01: %s: ignoring a response that is not for our query",
               p->server.text);
      return ACME_DNSX_IGNORE;
    case ACME_DNS_TRUNCATED: return ACME_DNSX_TCP;
    case ACME_DNS_MALFORMED: return ACME_DNSX_BAD;
    default: return ACME_DNSX_TAKE;
  }
}

/* probe_judged records what the answer said; returns 1 if it holds the
 * value. */
static int probe_judged(probe_t *p, const uint8_t *msg, size_t len) {
  acme_dnscheck_t *c = p->check;
  acme_dns_answer_t ans;
  acme_dns_result_t r = acme__dns_parse_txt(&ans, msg, len, p->id, c->fqdn);
  int has = 0;
  switch (r) {
    case ACME_DNS_ANSWER: {
      size_t value_len = strlen(c->value);
      for (size_t i = 0; i < ans.num_txts && !has; i++) {
        has = ans.txts[i].len == value_len && memcmp(ans.txts[i].data, c->value, value_len) == 0;
      }
      if (ans.num_txts == 0) {
        snprintf(p->last, sizeof(p->last), "no TXT record");
      } else {
        snprintf(p->last, sizeof(p->last), "%zu TXT record%s, none with the value", ans.num_txts,
                 ans.num_txts == 1 ? "" : "s");
      }
      break;
    }
    case ACME_DNS_NXDOMAIN:
      snprintf(p->last, sizeof(p->last), "NXDOMAIN");
      break;
    case ACME_DNS_RCODE:
      snprintf(p->last, sizeof(p->last), "%s (rcode %d)", acme__dns_rcode_name(ans.rcode),
               ans.rcode);
      break;
    default:
      snprintf(p->last, sizeof(p->last), "a malformed response");
      break;
  }
  acme__dns_answer_cleanup(&ans);
  return has;
}

static void probe_done(void *arg, int status, const uint8_t *msg, size_t len, const char *why) {
  probe_t *p = arg;
  acme_dnscheck_t *c = p->check;
  p->x = NULL;
  if (status != 0) {
    snprintf(p->last, sizeof(p->last), "%s", why);
  } else if (probe_judged(p, msg, len)) {
    p->seen = 1;
    c->num_seen++;
    if (!(c->flags & ACME_DNSCHECK_ALL) || c->num_seen == c->num_probes) {
      check_finish(c, p);
      return;
    }
  }
  if (--c->num_pending == 0) round_end(c);
}

static const acme_dnsx_ops_t probe_ops = {probe_build, probe_judge, probe_done};

static void round_start(acme_dnscheck_t *c) {
  uint64_t now = gh_now_ms();
  if (now >= c->deadline_ms) {
    check_finish(c, NULL);
    return;
  }
  uint64_t left = c->deadline_ms - now;
  unsigned wait = (unsigned)(left < QUERY_TIMEOUT_MS ? left : QUERY_TIMEOUT_MS);
  c->num_pending = 0;
  for (size_t i = 0; i < c->num_probes; i++) {
    probe_t *p = &c->probes[i];
    if (p->seen) continue;
    /* One UDP query a round (over TCP if the answer is truncated). */
    int rc = acme__dnsx_start(&p->x, c->loop, &p->server, 1, wait, &probe_ops, p);
    if (rc != 0) {
      snprintf(p->last, sizeof(p->last), "socket: %s", uv_strerror(rc));
      continue;
    }
    c->num_pending++;
  }
  if (c->num_pending == 0) round_end(c);
}

int acme__dnscheck_start(acme_dnscheck_t **out, uv_loop_t *loop,
                         const acme_dns_server_t *servers, size_t num_servers, const char *fqdn,
                         const char *value, uint64_t timeout_ms, unsigned flags,
                         acme_dnscheck_cb cb, void *arg) {
  *out = NULL;
  uint8_t wire[DNS_NAME_MAX];
  if (num_servers == 0 || cb == NULL || acme__dns_name_to_wire(wire, fqdn) == 0) return UV_EINVAL;
  acme_dnscheck_t *c = gh_calloc(1, sizeof(*c));
  c->loop = loop;
  c->fqdn = gh_strdup(fqdn);
  c->value = gh_strdup(value);
  c->flags = flags;
  c->cb = cb;
  c->arg = arg;
  c->started_ms = gh_now_ms();
  c->deadline_ms = c->started_ms + timeout_ms;
  c->pause_ms = PAUSE_FIRST_MS;
  c->probes = gh_calloc(num_servers, sizeof(*c->probes));
  c->num_probes = num_servers;
  for (size_t i = 0; i < num_servers; i++) {
    c->probes[i].check = c;
    c->probes[i].server = servers[i];
    snprintf(c->probes[i].last, sizeof(c->probes[i].last), "no answer yet");
  }
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  /* The first round starts from the loop: the callback never runs before
   * this function has returned. */
  uv_timer_start(&c->timer, on_pause, 0, 0);
  *out = c;
  return 0;
}

void acme__dnscheck_cancel(acme_dnscheck_t *check) {
  if (check == NULL || check->done) return;
  check_close(check);
}
