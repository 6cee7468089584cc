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
  uv_udp_t udp;
  acme_dnscheck_t *check;
  acme_dns_server_t server;
  int open;    /* the handle was initialised: it must be closed */
  int live;    /* the socket works: it is asked every round */
  int pending; /* asked in this round, no answer yet */
  uint16_t id;
  char last[128]; /* the last outcome, for the failure message */
  uint8_t buf[ACME_DNS_MAX_MSG];
} probe_t;

struct acme_dnscheck {
  uv_loop_t *loop;
  uv_timer_t timer;
  int pausing; /* the timer ends a pause (else: the round's time is up) */
  probe_t *probes;
  size_t num_probes, num_pending;
  unsigned num_open; /* handles not yet closed */
  char *fqdn;
  char *value;
  uint64_t started_ms, deadline_ms, pause_ms;
  acme_dnscheck_cb cb;
  void *arg;
  int done;
};

static void check_free(acme_dnscheck_t *c) {
  gh_free(c->probes);
  gh_free(c->fqdn);
  gh_free(c->value);
  gh_free(c);
}

static void on_close(uv_handle_t *h) {
  acme_dnscheck_t *c = h->data;
  if (h->type == UV_UDP) c = ((probe_t *)h->data)->check;
  if (--c->num_open == 0) check_free(c);
}

/* check_close closes every handle; the memory goes with the last one. */
static void check_close(acme_dnscheck_t *c) {
  c->done = 1;
  c->cb = NULL;
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, on_close);
  for (size_t i = 0; i < c->num_probes; i++) {
    probe_t *p = &c->probes[i];
    if (p->open) uv_close((uv_handle_t *)&p->udp, on_close);
    p->open = 0;
  }
}

static void check_finish(acme_dnscheck_t *c, const probe_t *found) {
  acme_dnscheck_cb cb = c->cb;
  void *arg = c->arg;
  uint64_t elapsed = gh_now_ms() - c->started_ms;
  char *why = NULL;
  if (found == NULL) {
    size_t cap = c->num_probes * (sizeof(c->probes[0].server.text) + sizeof(c->probes[0].last) + 4) + 1;
    why = gh_calloc(1, cap);
    for (size_t i = 0; i < c->num_probes; i++) {
      size_t used = strlen(why);
      snprintf(why + used, cap - used, "%s%s: %s", i ? "; " : "", c->probes[i].server.text,
               c->probes[i].last);
    }
  }
  /* The probes stay allocated until the close callbacks run, after this. */
  check_close(c);
  if (cb != NULL) cb(arg, found ? 0 : UV_ETIMEDOUT, found ? &found->server : NULL, elapsed, why);
  gh_free(why);
}

static void round_start(acme_dnscheck_t *c);
static void on_timer(uv_timer_t *t);

static void round_end(acme_dnscheck_t *c) {
  uint64_t now = gh_now_ms();
  if (now >= c->deadline_ms) {
    check_finish(c, NULL);
    return;
  }
  uint64_t wait = c->pause_ms < c->deadline_ms - now ? c->pause_ms : c->deadline_ms - now;
  c->pause_ms = c->pause_ms * 2 > PAUSE_CAP_MS ? PAUSE_CAP_MS : c->pause_ms * 2;
  c->pausing = 1;
  uv_timer_start(&c->timer, on_timer, wait, 0);
}

static void on_timer(uv_timer_t *t) {
  acme_dnscheck_t *c = t->data;
  if (c->done) return;
  if (c->pausing) {
    round_start(c);
    return;
  }
  for (size_t i = 0; i < c->num_probes; i++) {
    probe_t *p = &c->probes[i];
    if (!p->pending) continue;
    p->pending = 0;
    snprintf(p->last, sizeof(p->last), "no answer within %u ms", QUERY_TIMEOUT_MS);
  }
  c->num_pending = 0;
  round_end(c);
}

static void probe_done(probe_t *p) {
  acme_dnscheck_t *c = p->check;
  p->pending = 0;
  if (--c->num_pending == 0) {
    uv_timer_stop(&c->timer);
    round_end(c);
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  probe_t *p = h->data;
  (void)suggested;
  *buf = uv_buf_init((char *)p->buf, sizeof(p->buf));
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

static void on_recv(uv_udp_t *udp, ssize_t nread, const uv_buf_t *buf,
                    const struct sockaddr *from, unsigned flags) {
  probe_t *p = udp->data;
  acme_dnscheck_t *c = p->check;
  if (c->done || !p->pending || (nread == 0 && from == NULL)) return;
  if (nread < 0) {
    /* ECONNREFUSED: an ICMP "port unreachable" on the connected socket. */
    snprintf(p->last, sizeof(p->last), "%s", uv_strerror((int)nread));
    probe_done(p);
    return;
  }
  acme_dns_answer_t ans;
  acme_dns_result_t r = (flags & UV_UDP_PARTIAL)
                            ? ACME_DNS_TRUNCATED
                            : acme__dns_parse_txt(&ans, (const uint8_t *)buf->base,
                                                  (size_t)nread, p->id, c->fqdn);
  if (flags & UV_UDP_PARTIAL) memset(&ans, 0, sizeof(ans));
  switch (r) {
    case ACME_DNS_MISMATCH:
      GH_DEBUG("acme", "dns-01: %s: ignoring a response that is not for our query",
               p->server.text);
      return;
    case ACME_DNS_ANSWER: {
      size_t value_len = strlen(c->value);
      for (size_t i = 0; i < ans.num_txts; i++) {
        if (ans.txts[i].len == value_len && memcmp(ans.txts[i].data, c->value, value_len) == 0) {
          acme__dns_answer_cleanup(&ans);
          check_finish(c, p);
          return;
        }
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
    case ACME_DNS_TRUNCATED:
      snprintf(p->last, sizeof(p->last), "a truncated answer (no TCP fallback)");
      break;
    case ACME_DNS_RCODE:
      snprintf(p->last, sizeof(p->last), "%s (rcode %d)", acme__dns_rcode_name(ans.rcode), ans.rcode);
      break;
    default:
      snprintf(p->last, sizeof(p->last), "a malformed response");
      break;
  }
  acme__dns_answer_cleanup(&ans);
  probe_done(p);
}

static void round_start(acme_dnscheck_t *c) {
  uint64_t now = gh_now_ms();
  if (now >= c->deadline_ms) {
    check_finish(c, NULL);
    return;
  }
  c->pausing = 0;
  c->num_pending = 0;
  for (size_t i = 0; i < c->num_probes; i++) {
    probe_t *p = &c->probes[i];
    if (!p->live) continue;
    uint8_t q[DNS_NAME_MAX + 32];
    size_t q_len;
    RAND_bytes((uint8_t *)&p->id, sizeof(p->id));
    if (acme__dns_query(q, sizeof(q), &q_len, p->id, c->fqdn) != 0) continue;
    uv_buf_t b = uv_buf_init((char *)q, (unsigned)q_len);
    int rc = uv_udp_try_send(&p->udp, &b, 1, NULL);
    if (rc < 0) {
      snprintf(p->last, sizeof(p->last), "sending the query: %s", uv_strerror(rc));
      continue;
    }
    p->pending = 1;
    c->num_pending++;
  }
  if (c->num_pending == 0) {
    round_end(c);
    return;
  }
  uint64_t left = c->deadline_ms - now;
  uv_timer_start(&c->timer, on_timer, left < QUERY_TIMEOUT_MS ? left : QUERY_TIMEOUT_MS, 0);
}

int acme__dnscheck_start(acme_dnscheck_t **out, uv_loop_t *loop,
                         const acme_dns_server_t *servers, size_t num_servers, const char *fqdn,
                         const char *value, uint64_t timeout_ms, acme_dnscheck_cb cb, void *arg) {
  *out = NULL;
  uint8_t wire[DNS_NAME_MAX];
  if (num_servers == 0 || cb == NULL || acme__dns_name_to_wire(wire, fqdn) == 0) return UV_EINVAL;
  acme_dnscheck_t *c = gh_calloc(1, sizeof(*c));
  c->loop = loop;
  c->fqdn = gh_strdup(fqdn);
  c->value = gh_strdup(value);
  c->cb = cb;
  c->arg = arg;
  c->started_ms = gh_now_ms();
  c->deadline_ms = c->started_ms + timeout_ms;
  c->pause_ms = PAUSE_FIRST_MS;
  c->probes = gh_calloc(num_servers, sizeof(*c->probes));
  c->num_probes = num_servers;
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  c->num_open = 1;
  for (size_t i = 0; i < num_servers; i++) {
    probe_t *p = &c->probes[i];
    p->check = c;
    p->server = servers[i];
    snprintf(p->last, sizeof(p->last), "no answer yet");
    int rc = uv_udp_init_ex(loop, &p->udp, servers[i].addr.ss_family);
    if (rc != 0) {
      snprintf(p->last, sizeof(p->last), "socket: %s", uv_strerror(rc));
      continue; /* no handle to close */
    }
    p->udp.data = p;
    p->open = 1;
    c->num_open++;
    /* Connected: the kernel drops datagrams from anyone else, and a
     * closed port comes back as ECONNREFUSED instead of silence. */
    rc = uv_udp_connect(&p->udp, (const struct sockaddr *)&servers[i].addr);
    if (rc == 0) rc = uv_udp_recv_start(&p->udp, on_alloc, on_recv);
    if (rc != 0) {
      snprintf(p->last, sizeof(p->last), "%s", uv_strerror(rc));
      continue;
    }
    p->live = 1;
  }
  /* The first round starts from the loop: the callback never runs before
   * this function has returned. */
  c->pausing = 1;
  uv_timer_start(&c->timer, on_timer, 0, 0);
  *out = c;
  return 0;
}

void acme__dnscheck_cancel(acme_dnscheck_t *check) {
  if (check == NULL || check->done) return;
  check_close(check);
}
