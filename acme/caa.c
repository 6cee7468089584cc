/* caa.c: CAA records (RFC 8659, with RFC 8657's accounturi and
 * validationmethods): the parser of the rdata, the decision whether they
 * let a CA issue, and the climb from a name towards the top-level domain
 * that finds the relevant RRset through the recursive resolvers (see
 * dnscheck.h). Record values are hostile text: read through {ptr,len}
 * views, never as C strings. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "acme/dnscheck.h"
#include "acme/dnsx.h"
#include "common/common.h"

#define DNS_TYPE_CAA 257
#define CAA_FLAG_CRITICAL 0x80

/* ---- records ---- */

static int is_alnum(uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int acme__caa_parse_rdata(acme_caa_rr_t *out, CBS rdata) {
  memset(out, 0, sizeof(*out));
  uint8_t flags;
  CBS tag;
  if (!CBS_get_u8(&rdata, &flags) || !CBS_get_u8_length_prefixed(&rdata, &tag) ||
      CBS_len(&tag) == 0) {
    return -1;
  }
  for (size_t i = 0; i < CBS_len(&tag); i++) {
    if (!is_alnum(CBS_data(&tag)[i])) return -1;
  }
  out->flags = flags;
  out->tag = gh_malloc(CBS_len(&tag) + 1);
  memcpy(out->tag, CBS_data(&tag), CBS_len(&tag));
  out->tag[CBS_len(&tag)] = '\0';
  out->value_len = CBS_len(&rdata);
  out->value = gh_malloc(out->value_len + 1);
  memcpy(out->value, CBS_data(&rdata), out->value_len);
  out->value[out->value_len] = '\0';
  return 0;
}

void acme__caa_rrs_free(acme_caa_rr_t *rrs, size_t num) {
  for (size_t i = 0; rrs != NULL && i < num; i++) {
    gh_free(rrs[i].tag);
    gh_free(rrs[i].value);
  }
  gh_free(rrs);
}

typedef struct {
  acme_caa_rr_t *rrs;
  size_t num;
} caa_list_t;

static int caa_add(void *arg, CBS rdata) {
  caa_list_t *l = arg;
  acme_caa_rr_t rr;
  if (acme__caa_parse_rdata(&rr, rdata) != 0) return -1;
  if (l->num == ACME_DNS_MAX_TXTS) {
    gh_free(rr.tag);
    gh_free(rr.value);
    return 0;
  }
  l->rrs = gh_realloc(l->rrs, (l->num + 1) * sizeof(*l->rrs));
  l->rrs[l->num++] = rr;
  return 0;
}

acme_dns_result_t acme__caa_parse(acme_caa_rr_t **out, size_t *out_num, int *out_rcode,
                                  const uint8_t *msg, size_t msg_len, uint16_t id,
                                  const char *name) {
  caa_list_t l = {NULL, 0};
  acme_dns_result_t r =
      acme__dns_parse_rrset(out_rcode, msg, msg_len, id, name, DNS_TYPE_CAA, caa_add, &l);
  if (r != ACME_DNS_ANSWER) {
    acme__caa_rrs_free(l.rrs, l.num);
    l.rrs = NULL;
    l.num = 0;
  }
  *out = l.rrs;
  *out_num = l.num;
  return r;
}

/* ---- the decision ---- */

typedef struct {
  const char *p;
  size_t len;
} view_t;

static int is_wsp(char c) { return c == ' ' || c == '\t'; }

static void skip_wsp(view_t *v) {
  while (v->len > 0 && is_wsp(*v->p)) {
    v->p++;
    v->len--;
  }
}

/* take_label takes a label or a parameter tag: (ALPHA / DIGIT) *( *"-"
 * (ALPHA / DIGIT) ). Returns its length, 0 if there is none. */
static size_t take_label(view_t *v) {
  size_t n = 0;
  if (v->len == 0 || !is_alnum((uint8_t)v->p[0])) return 0;
  while (n < v->len && (is_alnum((uint8_t)v->p[n]) || v->p[n] == '-')) n++;
  while (n > 0 && v->p[n - 1] == '-') n--; /* a label ends with a letter or digit */
  v->p += n;
  v->len -= n;
  return n;
}

static int view_eq(view_t a, const char *s) { return a.len == strlen(s) && memcmp(a.p, s, a.len) == 0; }

static int view_eq_nocase(view_t a, const char *s) {
  return a.len == strlen(s) && strncasecmp(a.p, s, a.len) == 0;
}

/* issue_matches reads an issue or issuewild value (RFC 8659 4.2):
 *   *WSP [issuer-domain-name *WSP] [";" *WSP [parameters *WSP]]
 * and says whether it names one of |ca_domains| with parameters that let
 * |account_uri| validate by |method| (RFC 8657). A value that breaks the
 * grammar matches no CA. */
static int issue_matches(view_t v, const char *const *ca_domains, size_t num_ca_domains,
                         const char *account_uri, const char *method) {
  skip_wsp(&v);
  view_t domain = {v.p, 0};
  while (v.len > 0 && *v.p != ';' && !is_wsp(*v.p)) {
    if (domain.len > 0) {
      if (*v.p != '.') return 0;
      v.p++;
      v.len--;
    }
    if (take_label(&v) == 0) return 0;
    domain.len = (size_t)(v.p - domain.p);
  }
  skip_wsp(&v);
  int ours = 0;
  for (size_t i = 0; domain.len > 0 && i < num_ca_domains && !ours; i++) {
    ours = view_eq_nocase(domain, ca_domains[i]);
  }
  if (v.len == 0) return ours;
  if (*v.p != ';') return 0;
  v.p++;
  v.len--;
  skip_wsp(&v);
  /* parameters = (parameter *WSP ";" *WSP parameters) / parameter */
  while (v.len > 0) {
    view_t tag = {v.p, 0};
    tag.len = take_label(&v);
    if (tag.len == 0) return 0;
    skip_wsp(&v);
    if (v.len == 0 || *v.p != '=') return 0;
    v.p++;
    v.len--;
    skip_wsp(&v);
    view_t val = {v.p, 0};
    while (v.len > 0 && (uint8_t)*v.p >= 0x21 && (uint8_t)*v.p <= 0x7e && *v.p != ';') {
      v.p++;
      v.len--;
    }
    val.len = (size_t)(v.p - val.p);
    skip_wsp(&v);
    if (view_eq_nocase(tag, "accounturi")) {
      if (account_uri == NULL || !view_eq(val, account_uri)) ours = 0;
    } else if (view_eq_nocase(tag, "validationmethods")) {
      int listed = 0;
      for (size_t i = 0; i < val.len;) {
        size_t j = i;
        while (j < val.len && val.p[j] != ',') j++;
        view_t m = {val.p + i, j - i};
        listed |= method != NULL && view_eq(m, method);
        i = j + 1;
      }
      if (!listed) ours = 0;
    } /* other parameters: not ours to judge */
    if (v.len == 0) break;
    if (*v.p != ';') return 0;
    v.p++;
    v.len--;
    skip_wsp(&v);
    if (v.len == 0) return 0; /* a ";" must be followed by a parameter */
  }
  return ours;
}

int acme__caa_permits(char **out_why, const acme_caa_rr_t *rrs, size_t n,
                      const char *const *ca_domains, size_t num_ca_domains,
                      const char *account_uri, const char *method, int wildcard) {
  *out_why = NULL;
  size_t num_issue = 0, num_wild = 0;
  for (size_t i = 0; i < n; i++) {
    view_t tag = {rrs[i].tag, strlen(rrs[i].tag)};
    if (view_eq_nocase(tag, "issue")) {
      num_issue++;
    } else if (view_eq_nocase(tag, "issuewild")) {
      num_wild++;
    } else if (!view_eq_nocase(tag, "iodef") && (rrs[i].flags & CAA_FLAG_CRITICAL)) {
      /* RFC 8659 4.1: a critical property we do not understand forbids. */
      *out_why = gh_asprintf("CAA has a critical \"%.*s\" property this CA does not know",
                             (int)tag.len, tag.p);
      return UV_EPERM;
    }
  }
  /* RFC 8659 4.3: for a wildcard, issuewild records (when any) replace
   * issue records; for other names they do not count. */
  const char *which = wildcard && num_wild > 0 ? "issuewild" : "issue";
  if ((wildcard && num_wild > 0 ? num_wild : num_issue) == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    view_t tag = {rrs[i].tag, strlen(rrs[i].tag)};
    view_t value = {rrs[i].value, rrs[i].value_len};
    if (view_eq_nocase(tag, which) &&
        issue_matches(value, ca_domains, num_ca_domains, account_uri, method)) {
      return 0;
    }
  }
  /* Say what the records allow, for the person reading the log. */
  size_t cap = 64;
  for (size_t i = 0; i < n; i++) cap += rrs[i].value_len + 8;
  char *list = gh_calloc(1, cap);
  for (size_t i = 0; i < n; i++) {
    view_t tag = {rrs[i].tag, strlen(rrs[i].tag)};
    if (!view_eq_nocase(tag, which)) continue;
    size_t used = strlen(list);
    snprintf(list + used, cap - used, "%s\"", used ? ", " : "");
    used = strlen(list);
    for (size_t k = 0; k < rrs[i].value_len && used + 2 < cap; k++) {
      char c = rrs[i].value[k];
      list[used++] = (c >= 0x20 && c < 0x7f && c != '"') ? c : '?';
    }
    snprintf(list + used, cap - used, "\"");
  }
  *out_why = gh_asprintf("CAA %s records allow only %s, not %s%s%s%s by %s", which, list,
                         num_ca_domains > 0 ? ca_domains[0] : "this CA",
                         account_uri ? " (account " : "", account_uri ? account_uri : "",
                         account_uri ? ")" : "", method ? method : "any method");
  gh_free(list);
  return UV_EPERM;
}

/* ---- the lookup ---- */

struct acme_caa_lookup {
  uv_loop_t *loop;
  acme_dns_server_t *servers;
  size_t num_servers;
  char *name;        /* the whole name, without "*." or a root dot */
  const char *level; /* the name being asked: |name| or a parent of it */
  acme_dnsq_t *q;
  uint64_t deadline_ms, timeout_ms;
  acme_caa_cb cb;
  void *arg;
};

static void lookup_free(acme_caa_lookup_t *l) {
  gh_free(l->servers);
  gh_free(l->name);
  gh_free(l);
}

static void lookup_finish(acme_caa_lookup_t *l, int status, const acme_caa_rr_t *rrs,
                          size_t num, const char *found_at, const char *why) {
  l->cb(l->arg, status, rrs, num, found_at, why);
  lookup_free(l);
}

static void on_answer(void *arg, int status, const uint8_t *msg, size_t len, uint16_t id,
                      const char *why);

/* ask asks the resolvers about the current level; returns 0 or an error
 * (the lookup has then been finished, unless |first|). */
static int ask(acme_caa_lookup_t *l, int first) {
  int rc;
  if (gh_now_ms() >= l->deadline_ms) {
    rc = UV_ETIMEDOUT;
  } else {
    rc = acme__dnsq_start(&l->q, l->loop, l->servers, l->num_servers, l->level, DNS_TYPE_CAA, 1,
                          on_answer, l);
  }
  if (rc != 0 && !first) {
    char *why = gh_asprintf("the CAA lookup of %s stopped at %s: %s", l->name, l->level,
                            rc == UV_ETIMEDOUT ? "out of time" : uv_strerror(rc));
    lookup_finish(l, rc, NULL, 0, NULL, why);
    gh_free(why);
  }
  return rc;
}

static void on_answer(void *arg, int status, const uint8_t *msg, size_t len, uint16_t id,
                      const char *why) {
  acme_caa_lookup_t *l = arg;
  l->q = NULL;
  if (status != 0) {
    char *text = gh_asprintf("no resolver answered the CAA query for %s: %s", l->level, why);
    lookup_finish(l, status, NULL, 0, NULL, text);
    gh_free(text);
    return;
  }
  acme_caa_rr_t *rrs;
  size_t num;
  int rcode;
  acme_dns_result_t r = acme__caa_parse(&rrs, &num, &rcode, msg, len, id, l->level);
  if (r == ACME_DNS_ANSWER && num > 0) {
    lookup_finish(l, 0, rrs, num, l->level, NULL);
    acme__caa_rrs_free(rrs, num);
    return;
  }
  acme__caa_rrs_free(rrs, num);
  if (r != ACME_DNS_ANSWER && r != ACME_DNS_NXDOMAIN) {
    char *text = gh_asprintf("the CAA answer for %s is malformed", l->level);
    lookup_finish(l, UV_EPROTO, NULL, 0, NULL, text);
    gh_free(text);
    return;
  }
  /* Nothing here: the parent's records are the relevant ones, up to the
   * top-level domain. */
  const char *dot = strchr(l->level, '.');
  if (dot == NULL) {
    lookup_finish(l, 0, NULL, 0, NULL, NULL);
    return;
  }
  l->level = dot + 1;
  ask(l, 0);
}

int acme__caa_lookup_start(acme_caa_lookup_t **out, uv_loop_t *loop,
                           const acme_dns_server_t *servers, size_t num_servers,
                           const char *name, uint64_t timeout_ms, acme_caa_cb cb, void *arg) {
  *out = NULL;
  uint8_t wire[ACME_DNS_NAME_MAX];
  if (strncmp(name, "*.", 2) == 0) name += 2;
  if (cb == NULL || num_servers == 0 || acme__dns_name_to_wire(wire, name) == 0) return UV_EINVAL;
  acme_caa_lookup_t *l = gh_calloc(1, sizeof(*l));
  l->loop = loop;
  l->servers = gh_calloc(num_servers, sizeof(*servers));
  memcpy(l->servers, servers, num_servers * sizeof(*servers));
  l->num_servers = num_servers;
  l->name = gh_strdup(name);
  size_t len = strlen(l->name);
  if (l->name[len - 1] == '.') l->name[len - 1] = '\0';
  l->level = l->name;
  l->timeout_ms = timeout_ms;
  l->deadline_ms = gh_now_ms() + timeout_ms;
  l->cb = cb;
  l->arg = arg;
  int rc = ask(l, 1);
  if (rc != 0) {
    lookup_free(l);
    return rc;
  }
  *out = l;
  return 0;
}

void acme__caa_lookup_cancel(acme_caa_lookup_t *l) {
  if (l == NULL) return;
  acme__dnsq_cancel(l->q);
  lookup_free(l);
}
