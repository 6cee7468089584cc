/* policy_check.c: the pure half of the on-demand policy — name hygiene,
 * the allow patterns, and the registered domain of a name. Nothing here
 * allocates or keeps state, so the TLS handshake path may call it from any
 * thread. */
#include <arpa/inet.h>
#include <string.h>

#include "acme/policy_internal.h"
#include "common/common.h"

#define MAX_NAME_LEN 253
#define MAX_LABEL_LEN 63
#define DEFAULT_MAX_LABELS 10

/* is_ip_literal reports whether |name| is an IP literal: anything with a
 * ':' (IPv6; SNI never carries one, so nothing legitimate is lost), or a
 * dotted quad that inet_pton accepts. Sets |*out_valid| when it parses. */
static int is_ip_literal(const char *name, size_t len, int *out_valid) {
  char buf[64];
  *out_valid = 0;
  if (memchr(name, ':', len) != NULL) {
    if (len < sizeof(buf)) {
      memcpy(buf, name, len);
      buf[len] = '\0';
      struct in6_addr a6;
      *out_valid = inet_pton(AF_INET6, buf, &a6) == 1;
    }
    return 1;
  }
  for (size_t i = 0; i < len; i++) {
    if (name[i] != '.' && (name[i] < '0' || name[i] > '9')) return 0;
  }
  if (len >= sizeof(buf)) return 0;
  memcpy(buf, name, len);
  buf[len] = '\0';
  struct in_addr a4;
  if (inet_pton(AF_INET, buf, &a4) != 1) return 0;
  *out_valid = 1;
  return 1;
}

/* check_ldh checks |name| as LDH labels and counts them. */
static const char *check_ldh(const char *name, size_t len, unsigned *out_labels) {
  unsigned labels = 0;
  size_t start = 0;
  int numeric = 1; /* the current label is all digits so far */
  for (size_t i = 0; i <= len; i++) {
    if (i == len || name[i] == '.') {
      size_t label_len = i - start;
      if (label_len == 0) return "empty label";
      if (label_len > MAX_LABEL_LEN) return "label too long";
      if (name[start] == '-' || name[i - 1] == '-') return "label starts or ends with '-'";
      labels++;
      if (i == len && numeric) return "all-numeric top-level label";
      start = i + 1;
      numeric = 1;
      continue;
    }
    char c = name[i];
    if (c >= '0' && c <= '9') continue;
    numeric = 0;
    if ((c >= 'a' && c <= 'z') || c == '-') continue;
    if (c >= 'A' && c <= 'Z') return "upper-case name";
    return "invalid name";
  }
  *out_labels = labels;
  return NULL;
}

const char *acme_policy_precheck(const conf_on_demand_t *od, const char *name, size_t name_len) {
  if (od == NULL || !od->enabled) return "on_demand is not enabled";
  if (name == NULL || name_len == 0) return "invalid name";
  if (name_len > MAX_NAME_LEN) return "name too long";
  int ip_valid;
  if (is_ip_literal(name, name_len, &ip_valid)) {
    if (!od->allow_ip) return "IP literal";
    if (!ip_valid) return "invalid name";
    for (size_t i = 0; i < name_len; i++) {
      if (name[i] >= 'A' && name[i] <= 'Z') return "upper-case name";
    }
  } else {
    unsigned labels, max_labels = od->max_labels ? od->max_labels : DEFAULT_MAX_LABELS;
    const char *bad = check_ldh(name, name_len, &labels);
    if (bad != NULL) return bad;
    if (labels > max_labels) return "too many labels";
  }
  if (od->num_allow == 0) return od->ask != NULL ? NULL : "not in on_demand.allow";
  for (size_t i = 0; i < od->num_allow; i++) {
    if (conf_host_match(od->allow[i], name, name_len)) return NULL;
  }
  return "not in on_demand.allow";
}

/* ---- registered domains ---- */

/* Well-known public suffixes of more than one label, sorted (strcmp) for
 * bsearch. Single-label TLDs need no entry: the last label is always a
 * suffix. Operators add their own with on_demand.public_suffixes. */
static const char *const SUFFIXES[] = {
    "ac.jp",         "ac.nz",           "ac.uk",          "amplifyapp.com", "appspot.com",
    "azurewebsites.net", "blogspot.com", "cloudfront.net", "co.il",         "co.in",
    "co.jp",         "co.kr",           "co.nz",          "co.uk",          "co.za",
    "com.ar",        "com.au",          "com.br",         "com.cn",         "com.hk",
    "com.mx",        "com.sg",          "com.tr",         "com.tw",         "com.ua",
    "edu.au",        "firebaseapp.com", "fly.dev",        "github.io",      "gitlab.io",
    "go.jp",         "gov.au",          "gov.uk",         "herokuapp.com",  "ltd.uk",
    "me.uk",         "ne.jp",           "net.au",         "net.br",         "net.cn",
    "net.in",        "net.nz",          "netlify.app",    "onrender.com",   "or.jp",
    "or.kr",         "org.au",          "org.br",         "org.cn",         "org.in",
    "org.mx",        "org.nz",          "org.uk",         "org.za",         "pages.dev",
    "plc.uk",        "r2.dev",          "vercel.app",     "web.app",        "workers.dev",
};

/* view_cmp compares |key|/|key_len| with the C string |s| as strcmp would
 * compare their NUL-terminated forms. */
static int view_cmp(const char *key, size_t key_len, const char *s) {
  size_t s_len = strlen(s);
  int c = memcmp(key, s, key_len < s_len ? key_len : s_len);
  if (c != 0) return c;
  return key_len < s_len ? -1 : key_len > s_len;
}

static int is_suffix(const char *s, size_t len, const char *const *extra, size_t num_extra) {
  size_t lo = 0, hi = GH_ARRAY_LEN(SUFFIXES);
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = view_cmp(s, len, SUFFIXES[mid]);
    if (c == 0) return 1;
    if (c < 0) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  for (size_t i = 0; i < num_extra; i++) {
    if (extra[i] != NULL && view_cmp(s, len, extra[i]) == 0) return 1;
  }
  return 0;
}

size_t acme__registered_domain(const char *name, size_t len, const char *const *extra_suffixes,
                               size_t num_extra, const char **out_start) {
  *out_start = name;
  if (len == 0) return 0;
  /* Walk the label boundaries from the left: the first (longest) tail that
   * is a public suffix wins; the last label is one by default. |prev| is
   * the start of the label before the current tail. */
  size_t prev = 0, start = 0;
  int have_prev = 0;
  for (;;) {
    const char *dot = memchr(name + start, '.', len - start);
    if (dot == NULL || is_suffix(name + start, len - start, extra_suffixes, num_extra)) break;
    prev = start;
    have_prev = 1;
    start = (size_t)(dot - name) + 1;
  }
  if (!have_prev) return len; /* the name is itself a public suffix */
  *out_start = name + prev;
  return len - prev;
}
