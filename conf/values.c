/* values.c: the syntax of single values: durations, sizes, rates,
 * addresses, host names and patterns, URLs, e-mail addresses; and the
 * "did you mean" suggestion. Every function takes a NUL-terminated string
 * that came from a parsed JSON document and never reads past its end. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "common/common.h"
#include "conf/conf.h"
#include "conf/internal.h"

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_lower(char c) { return c >= 'a' && c <= 'z'; }
static int is_upper(char c) { return c >= 'A' && c <= 'Z'; }

/* parse_uint reads the decimal digits at |*p|, advancing it. Returns -1 if
 * there are none or the value exceeds |max|. */
static int parse_uint(const char **p, uint64_t max, uint64_t *out) {
  const char *s = *p;
  uint64_t n = 0;
  if (!is_digit(*s)) return -1;
  for (; is_digit(*s); s++) {
    uint64_t d = (uint64_t)(*s - '0');
    if (n > (max - d) / 10) return -1;
    n = n * 10 + d;
  }
  *p = s;
  *out = n;
  return 0;
}

static const struct {
  const char *suffix;
  uint64_t ms;
} duration_units[] = {
    {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1},
};

int conf_parse_duration(const char *s, uint64_t *out_ms) {
  uint64_t n;
  if (s == NULL || parse_uint(&s, UINT64_MAX, &n) != 0) return -1;
  if (*s == '\0') {
    /* A bare number is ambiguous, except zero. */
    if (n != 0) return -1;
    *out_ms = 0;
    return 0;
  }
  for (size_t i = 0; i < GH_ARRAY_LEN(duration_units); i++) {
    if (strcmp(s, duration_units[i].suffix) != 0) continue;
    if (n > UINT64_MAX / duration_units[i].ms) return -1;
    *out_ms = n * duration_units[i].ms;
    return 0;
  }
  return -1;
}

void conf__format_duration(char *buf, size_t buf_len, uint64_t ms) {
  if (ms == 0) {
    snprintf(buf, buf_len, "0s");
    return;
  }
  for (size_t i = 0; i < GH_ARRAY_LEN(duration_units); i++) {
    if (ms % duration_units[i].ms == 0) {
      snprintf(buf, buf_len, "%llu%s", (unsigned long long)(ms / duration_units[i].ms),
               duration_units[i].suffix);
      return;
    }
  }
}

int conf__parse_size(const char *s, uint64_t *out) {
  uint64_t n, mult = 1;
  if (parse_uint(&s, UINT64_MAX, &n) != 0) return -1;
  if (*s == 'k' || *s == 'K') {
    mult = 1024;
    s++;
  } else if (*s == 'm' || *s == 'M') {
    mult = 1024 * 1024;
    s++;
  }
  if (*s != '\0' || n > UINT64_MAX / mult) return -1;
  *out = n * mult;
  return 0;
}

void conf__format_size(char *buf, size_t buf_len, uint64_t n) {
  if (n != 0 && n % (1024 * 1024) == 0) {
    snprintf(buf, buf_len, "%llum", (unsigned long long)(n / (1024 * 1024)));
  } else if (n != 0 && n % 1024 == 0) {
    snprintf(buf, buf_len, "%lluk", (unsigned long long)(n / 1024));
  } else {
    snprintf(buf, buf_len, "%llu", (unsigned long long)n);
  }
}

const char *conf__parse_rate(const char *s, int allow_none, conf_rate_t *out) {
  uint64_t count, per;
  if (strcmp(s, "0") == 0) {
    if (!allow_none) return "a limit is required here";
    out->count = 0;
    out->per_ms = 0;
    return NULL;
  }
  const char *slash = strchr(s, '/');
  if (slash == NULL) return "missing \"/\"";
  if (parse_uint(&s, UINT32_MAX, &count) != 0 || s != slash) return "bad count";
  if (count == 0) return allow_none ? "use \"0\" for no limit" : "the count must be at least 1";
  if (conf_parse_duration(slash + 1, &per) != 0) return "bad duration";
  if (per == 0) return "the duration must be positive";
  out->count = (uint32_t)count;
  out->per_ms = per;
  return NULL;
}

/* check_port parses the port at |s| (to the end of the string). */
static const char *check_port(const char *s, uint16_t *out) {
  uint64_t port;
  if (*s == '\0') return "missing port";
  if (parse_uint(&s, 99999, &port) != 0 || *s != '\0' || port < 1 || port > 65535) {
    return "port must be 1-65535";
  }
  *out = (uint16_t)port;
  return NULL;
}

/* check_dns_name checks |len| bytes at |s| as a DNS name for a connection:
 * letters of either case, digits, '-' and '_' (service names), labels of
 * 1-63 bytes, 253 bytes in all. */
static const char *check_dns_name(const char *s, size_t len) {
  if (len > 253) return "host name longer than 253 bytes";
  size_t label = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i == len || s[i] == '.') {
      if (label == 0) return "empty label in host name";
      if (label > 63) return "host name label longer than 63 bytes";
      label = 0;
      continue;
    }
    char c = s[i];
    if (!is_lower(c) && !is_upper(c) && !is_digit(c) && c != '-' && c != '_') {
      return "invalid character in host name";
    }
    label++;
  }
  return NULL;
}

/* looks_ipv4 reports whether |s| is digits and dots only: a name that
 * looks like that is meant as an IPv4 address and must be one. */
static int looks_ipv4(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (!is_digit(s[i]) && s[i] != '.') return 0;
  }
  return len > 0;
}

/* check_host checks the host part of an address or URL (without brackets;
 * |bracketed| says whether it had them). */
static const char *check_host(const char *s, size_t len, int bracketed, unsigned flags) {
  char ip[64];
  if (bracketed || looks_ipv4(s, len)) {
    if (len >= sizeof(ip)) return bracketed ? "not an IPv6 address" : "not an IPv4 address";
    memcpy(ip, s, len);
    ip[len] = '\0';
    unsigned char bin[16];
    if (inet_pton(bracketed ? AF_INET6 : AF_INET, ip, bin) != 1) {
      return bracketed ? "not an IPv6 address" : "not an IPv4 address";
    }
    return NULL;
  }
  if (flags & CONF__ADDR_IP_ONLY) {
    return (flags & CONF__ADDR_NEED_HOST) ? "an IP address is needed here, not a name"
                                          : "a listener needs an IP address, not a name";
  }
  return check_dns_name(s, len);
}

/* addr_with_scheme parses "http://ADDR" and "https://ADDR" (an optional
 * trailing "/"; the port defaults to the scheme's), keeping the text as
 * written. */
static const char *addr_with_scheme(conf_addr_t *out, const char *s, unsigned flags) {
  int tls = strncmp(s, "https://", 8) == 0;
  const char *rest = s + (tls ? 8 : 7);
  size_t len = strlen(rest);
  if (len > 0 && rest[len - 1] == '/') len--;
  if (memchr(rest, '/', len) != NULL) return "an upstream address takes no path";
  const char *close = memchr(rest, ']', len), *colon = NULL;
  for (const char *p = close ? close : rest; p < rest + len; p++) {
    if (*p == ':') colon = p;
  }
  char *full = colon ? gh_asprintf("%.*s", (int)len, rest)
                     : gh_asprintf("%.*s:%s", (int)len, rest, tls ? "443" : "80");
  const char *why = conf__addr_parse(out, full, flags & ~CONF__ADDR_SCHEME);
  gh_free(full);
  if (why != NULL) return why;
  gh_free(out->text);
  out->text = gh_strdup(s);
  out->tls = tls;
  return NULL;
}

const char *conf__addr_parse(conf_addr_t *out, const char *s, unsigned flags) {
  const char *host, *port_text;
  size_t host_len;
  int bracketed = 0;
  memset(out, 0, sizeof(*out));
  if ((flags & CONF__ADDR_SCHEME) &&
      (strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0)) {
    return addr_with_scheme(out, s, flags);
  }
  if (strstr(s, "://") != NULL) return "the scheme must be \"http://\" or \"https://\"";
  if ((flags & CONF__ADDR_UNIX) && strncmp(s, "unix:", 5) == 0) {
    if (s[5] == '\0') return "missing the socket's path after \"unix:\"";
    out->text = gh_strdup(s);
    out->host = gh_strdup("");
    out->unix_path = gh_strdup(s + 5);
    return NULL;
  }
  if (s[0] == '[') {
    const char *close = strchr(s, ']');
    if (close == NULL) return "missing \"]\"";
    if (close[1] != ':') return "missing port";
    host = s + 1;
    host_len = (size_t)(close - host);
    port_text = close + 2;
    bracketed = 1;
  } else {
    const char *colon = strrchr(s, ':');
    if (colon == NULL) return "missing port";
    host = s;
    host_len = (size_t)(colon - s);
    if (memchr(host, ':', host_len) != NULL) {
      return "an IPv6 address needs brackets, as in \"[::1]:8080\"";
    }
    port_text = colon + 1;
  }
  if (host_len == 0) {
    if (bracketed) return "not an IPv6 address";
    if (flags & CONF__ADDR_NEED_HOST) return "missing host; \":port\" is for listeners only";
  } else {
    const char *why = check_host(host, host_len, bracketed, flags);
    if (why != NULL) return why;
  }
  uint16_t port;
  const char *why = check_port(port_text, &port);
  if (why != NULL) return why;
  out->text = gh_strdup(s);
  out->host = gh_strndup(host, host_len);
  out->port = port;
  return NULL;
}

int conf_parse_addr(conf_addr_t *out, const char *s, int need_host) {
  if (out == NULL || s == NULL) return -1;
  return conf__addr_parse(out, s, need_host ? CONF__ADDR_NEED_HOST : CONF__ADDR_UNIX) == NULL
             ? 0
             : -1;
}

void conf__cidrs_free(conf_cidr_t **list, size_t *num) {
  for (size_t i = 0; i < *num && *list != NULL; i++) gh_free((*list)[i].text);
  gh_free(*list);
  *list = NULL;
  *num = 0;
}

const char *conf__cidr_parse(conf_cidr_t *out, const char *s) {
  memset(out, 0, sizeof(*out));
  char ip[INET6_ADDRSTRLEN];
  const char *slash = strchr(s, '/');
  size_t n = slash ? (size_t)(slash - s) : strlen(s);
  if (n == 0 || n >= sizeof(ip)) return "not an IP address";
  memcpy(ip, s, n);
  ip[n] = '\0';
  if (inet_pton(AF_INET, ip, out->addr) == 1) out->family = AF_INET;
  else if (inet_pton(AF_INET6, ip, out->addr) == 1) out->family = AF_INET6;
  else return "not an IP address";
  unsigned max = out->family == AF_INET ? 32 : 128, prefix = max;
  if (slash != NULL) {
    const char *d = slash + 1;
    if (*d == '\0' || strlen(d) > 3) return "the prefix length is not a number";
    prefix = 0;
    for (; *d; d++) {
      if (*d < '0' || *d > '9') return "the prefix length is not a number";
      prefix = prefix * 10 + (unsigned)(*d - '0');
    }
    if (prefix > max) return out->family == AF_INET ? "the prefix length is over 32"
                                                     : "the prefix length is over 128";
  }
  for (unsigned bit = prefix; bit < max; bit++) {
    if (out->addr[bit / 8] & (0x80u >> (bit % 8))) return "bits are set past the prefix length";
  }
  out->prefix = prefix;
  out->text = gh_strdup(s);
  return NULL;
}

static int in_block(const conf_cidr_t *c, const uint8_t *addr) {
  unsigned full = c->prefix / 8, rest = c->prefix % 8;
  if (memcmp(c->addr, addr, full) != 0) return 0;
  if (rest == 0) return 1;
  uint8_t mask = (uint8_t)(0xff00u >> rest);
  return (c->addr[full] & mask) == (addr[full] & mask);
}

int conf_cidr_match(const conf_cidr_t *list, size_t num, int family, const uint8_t *addr) {
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (family == AF_INET6 && memcmp(addr, mapped, 12) == 0) {
    family = AF_INET;
    addr += 12;
  }
  for (size_t i = 0; i < num; i++) {
    if (list[i].family == family && in_block(&list[i], addr)) return 1;
  }
  return 0;
}

void conf_addr_cleanup(conf_addr_t *addr) {
  if (addr == NULL) return;
  conf__cidrs_free(&addr->proxy_trusted, &addr->num_proxy_trusted);
  addr->proxy_protocol = 0;
  gh_free(addr->text);
  addr->text = NULL;
  gh_free(addr->host);
  addr->host = NULL;
  gh_free(addr->unix_path);
  addr->unix_path = NULL;
  addr->port = 0;
  for (size_t i = 0; i < addr->num_tls_ca; i++) gh_free(addr->tls_ca[i]);
  gh_free(addr->tls_ca);
  addr->tls_ca = NULL;
  addr->num_tls_ca = 0;
  gh_free(addr->server_name);
  gh_free(addr->tls_cert);
  gh_free(addr->tls_key);
  addr->server_name = addr->tls_cert = addr->tls_key = NULL;
  addr->tls = addr->protocol = addr->insecure_skip_verify = addr->send_proxy = 0;
}

/* word_eq compares |len| bytes at |s| with |word|, ignoring ASCII case. */
static int word_eq(const char *s, size_t len, const char *word) {
  if (strlen(word) != len) return 0;
  for (size_t i = 0; i < len; i++) {
    char a = s[i], b = word[i];
    if (is_upper(a)) a = (char)(a - 'A' + 'a');
    if (is_upper(b)) b = (char)(b - 'A' + 'a');
    if (a != b) return 0;
  }
  return 1;
}

static const char *skip_blanks(const char *p) {
  while (*p == ' ' || *p == '\t') p++;
  return p;
}

const char *conf__hsts_parse(const char *s, uint64_t *out_max_age_s, int *out_subdomains,
                             int *out_preload) {
  uint64_t max_age = 0;
  int have_age = 0, sub = 0, preload = 0;
  const char *p = s;
  for (;;) {
    p = skip_blanks(p);
    const char *name = p;
    while (*p && *p != ';' && *p != '=' && *p != ' ' && *p != '\t') p++;
    size_t name_len = (size_t)(p - name);
    p = skip_blanks(p);
    const char *val = NULL;
    size_t val_len = 0;
    if (*p == '=') {
      p = skip_blanks(p + 1);
      if (*p == '"') { /* RFC 6797 6.1: a value may be a quoted-string */
        val = ++p;
        while (*p && *p != '"') p++;
        if (*p != '"') return "a quoted value is not closed";
        val_len = (size_t)(p++ - val);
      } else {
        val = p;
        while (*p && *p != ';' && *p != ' ' && *p != '\t') p++;
        val_len = (size_t)(p - val);
      }
      p = skip_blanks(p);
    }
    if (*p != ';' && *p != '\0') return "directives are separated by \";\"";
    if (name_len == 0) {
      if (val != NULL) return "a value without a directive name";
    } else if (word_eq(name, name_len, "max-age")) {
      if (have_age) return "max-age is given twice";
      uint64_t n;
      char digits[24];
      if (val == NULL || val_len == 0 || val_len >= sizeof(digits)) {
        return "max-age needs a positive whole number of seconds";
      }
      memcpy(digits, val, val_len);
      digits[val_len] = '\0';
      const char *v = digits;
      if (parse_uint(&v, UINT64_MAX, &n) != 0 || *v != '\0' || n == 0) {
        return "max-age needs a positive whole number of seconds";
      }
      if (n > 36500ull * 86400) return "max-age is at most 3153600000 (36500 days)";
      max_age = n;
      have_age = 1;
    } else if (word_eq(name, name_len, "includeSubDomains") || word_eq(name, name_len, "preload")) {
      int *flag = word_eq(name, name_len, "preload") ? &preload : &sub;
      if (*flag) return "a directive is given twice";
      if (val != NULL) return "includeSubDomains and preload take no value";
      *flag = 1;
    } else {
      return "unknown directive; known: max-age, includeSubDomains, preload";
    }
    if (*p == '\0') break;
    p++;
  }
  if (!have_age) return "max-age is required";
  *out_max_age_s = max_age;
  *out_subdomains = sub;
  *out_preload = preload;
  return NULL;
}

int conf__is_loopback(const char *host) {
  unsigned char bin[16];
  if (strcmp(host, "::1") == 0) return 1;
  return inet_pton(AF_INET, host, bin) == 1 && bin[0] == 127;
}

int conf_ip_literal(const char *s, uint8_t *out, size_t *out_len) {
  uint8_t buf[16];
  char text[INET6_ADDRSTRLEN];
  int family = strchr(s, ':') != NULL ? AF_INET6 : AF_INET;
  if (inet_pton(family, s, buf) != 1 || inet_ntop(family, buf, text, sizeof(text)) == NULL ||
      strcmp(text, s) != 0)
    return 0;
  if (out != NULL) {
    size_t n = family == AF_INET ? 4 : 16;
    memcpy(out, buf, n);
    *out_len = n;
  }
  return 1;
}

const char *conf__host_check(const char *s, unsigned flags) {
  size_t len = strlen(s);
  if (len == 0) return "empty name";
  if (strcmp(s, "*") == 0) {
    return (flags & CONF__ANY_HOST) ? NULL : "\"*\" (any name) is not allowed here";
  }
  for (size_t i = 0; i < len; i++) {
    if (is_upper(s[i])) return "use lower case";
  }
  if (len > 253) return "longer than 253 bytes";
  if (strchr(s, ':') != NULL) { /* an IPv6 address, for an IP certificate (RFC 8738) */
    uint8_t a[16];
    if (conf_ip_literal(s, NULL, NULL)) return NULL;
    return inet_pton(AF_INET6, s, a) == 1 ? "an IPv6 address must be written as RFC 5952 does"
                                          : "neither a DNS name nor an IPv6 address";
  }
  const char *p = s;
  if (s[0] == '*' && s[1] == '.') {
    if (flags & CONF__NO_WILDCARD) return "wildcards are not allowed here";
    p += 2;
  }
  const char *label = p;
  for (;; p++) {
    if (*p == '.' || *p == '\0') {
      size_t n = (size_t)(p - label);
      if (n == 0) return "empty label";
      if (n > 63) return "label longer than 63 bytes";
      if (label[0] == '-' || p[-1] == '-') return "a label may not begin or end with \"-\"";
      if (*p == '\0') return NULL;
      label = p + 1;
    } else if (*p == '*') {
      return "\"*\" may only be the whole first label, as in \"*.example.com\"";
    } else if (!is_lower(*p) && !is_digit(*p) && *p != '-') {
      return "only letters, digits, \"-\" and \".\" are allowed";
    }
  }
}

int conf_host_pattern_valid(const char *s) {
  return s != NULL && conf__host_check(s, 0) == NULL;
}

static int lower(int c) { return is_upper((char)c) ? c + 32 : c; }

/* ieq compares |len| bytes ignoring ASCII case. */
static int ieq(const char *a, const char *b, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) return 0;
  }
  return 1;
}

int conf_host_match(const char *pattern, const char *name, size_t name_len) {
  if (pattern == NULL || name == NULL || name_len == 0) return 0;
  if (strcmp(pattern, "*") == 0) return 1;
  size_t pat_len = strlen(pattern);
  if (pattern[0] == '*' && pattern[1] == '.') {
    /* "*.example.com": |name| is one non-empty label, then ".example.com". */
    const char *suffix = pattern + 1;
    size_t suffix_len = pat_len - 1;
    if (name_len <= suffix_len) return 0;
    size_t label_len = name_len - suffix_len;
    if (memchr(name, '.', label_len) != NULL) return 0;
    return ieq(name + label_len, suffix, suffix_len);
  }
  return pat_len == name_len && ieq(pattern, name, name_len);
}

size_t conf_site_find(const conf_site_t *sites, size_t num_sites, const char *name,
                      size_t name_len) {
  size_t wild = SIZE_MAX, any = SIZE_MAX, def = SIZE_MAX;
  for (size_t i = 0; i < num_sites; i++) {
    if (sites[i].is_default && def == SIZE_MAX) def = i;
    for (size_t j = 0; j < sites[i].num_hosts; j++) {
      const char *p = sites[i].hosts[j];
      if (p[0] == '*' && p[1] == '\0') {
        if (any == SIZE_MAX) any = i;
      } else if (p[0] == '*') {
        if (wild == SIZE_MAX && conf_host_match(p, name, name_len)) wild = i;
      } else if (name_len != 0 && strlen(p) == name_len && memcmp(p, name, name_len) == 0) {
        return i;
      }
    }
  }
  if (name_len == 0) return def != SIZE_MAX ? def : any;
  return wild != SIZE_MAX ? wild : any != SIZE_MAX ? any : def;
}

const char *conf__url_check(const char *s) {
  const char *rest;
  if (strncmp(s, "https://", 8) == 0) {
    rest = s + 8;
  } else if (strncmp(s, "http://", 7) == 0) {
    rest = s + 7;
  } else {
    return "the scheme must be http:// or https://";
  }
  for (const char *p = s; *p; p++) {
    if ((unsigned char)*p <= ' ' || *p == 0x7f) return "contains a space or control character";
  }
  size_t auth_len = strcspn(rest, "/?#");
  if (auth_len == 0) return "missing host";
  if (memchr(rest, '@', auth_len) != NULL) return "a user name or password does not belong in it";
  /* Split "host[:port]" or "[v6][:port]" within the authority. */
  const char *host = rest, *port = NULL;
  size_t host_len = auth_len;
  int bracketed = 0;
  if (rest[0] == '[') {
    const char *close = memchr(rest, ']', auth_len);
    if (close == NULL) return "missing \"]\"";
    host = rest + 1;
    host_len = (size_t)(close - host);
    bracketed = 1;
    if (close + 1 < rest + auth_len) {
      if (close[1] != ':') return "junk after \"]\"";
      port = close + 2;
    }
  } else {
    const char *colon = memchr(rest, ':', auth_len);
    if (colon != NULL) {
      host_len = (size_t)(colon - rest);
      port = colon + 1;
    }
  }
  if (host_len == 0) return "missing host";
  const char *why = check_host(host, host_len, bracketed, 0);
  if (why != NULL) return why;
  if (port != NULL) {
    char buf[8];
    size_t port_len = (size_t)(rest + auth_len - port);
    if (port_len >= sizeof(buf)) return "port must be 1-65535";
    memcpy(buf, port, port_len);
    buf[port_len] = '\0';
    uint16_t unused;
    if (check_port(buf, &unused) != NULL) return "port must be 1-65535";
  }
  return NULL;
}

const char *conf__email_check(const char *s) {
  const char *at = strchr(s, '@');
  if (at == NULL || at == s) return "missing \"user@\"";
  for (const char *p = s; p < at; p++) {
    if ((unsigned char)*p <= ' ' || *p == 0x7f || strchr("<>(),;:\"[]\\", *p) != NULL) {
      return "invalid character before \"@\"";
    }
  }
  if (at[1] == '\0') return "missing domain after \"@\"";
  if (check_dns_name(at + 1, strlen(at + 1)) != NULL) return "invalid domain after \"@\"";
  return NULL;
}

/* edit_distance is the Levenshtein distance, ignoring ASCII case, of two
 * strings of at most 64 bytes (longer ones count as far apart). */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 64 || lb > 64) return SIZE_MAX;
  size_t row[65];
  for (size_t j = 0; j <= lb; j++) row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t cost = lower((unsigned char)a[i - 1]) == lower((unsigned char)b[j - 1]) ? 0 : 1;
      size_t best = diag + cost;
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

const char *conf__closest(const char *word, const char *const *cands, size_t num_cands) {
  /* A third of the word may be wrong, at least one character: "upstream"
   * finds "upstreams", "helth_check" finds "health_check", "x" finds
   * nothing worth suggesting. */
  size_t limit = strlen(word) / 3;
  if (limit < 1) limit = 1;
  const char *best = NULL;
  size_t best_d = SIZE_MAX;
  for (size_t i = 0; i < num_cands; i++) {
    size_t d = edit_distance(word, cands[i]);
    if (d < best_d && d < strlen(cands[i])) {
      best_d = d;
      best = cands[i];
    }
  }
  return best_d <= limit ? best : NULL;
}

int conf_acme_on(const conf_t *conf) { return conf_num_issuers(conf) > 0; }

size_t conf_num_issuers(const conf_t *conf) {
  if (conf->acme.num_issuers > 0) return conf->acme.num_issuers;
  return conf->acme.directory != NULL ? 1 : 0;
}

void conf_issuer(const conf_t *conf, size_t i, conf_issuer_t *out) {
  const conf_acme_t *a = &conf->acme;
  memset(out, 0, sizeof(*out));
  if (i < a->num_issuers) *out = a->issuers[i];
  else out->directory = a->directory, out->eab_key_id = a->eab_key_id,
       out->eab_hmac_key = a->eab_hmac_key;
  if (out->email == NULL) out->email = a->email;
  if (out->num_ca_roots == 0) out->ca_roots = a->ca_roots, out->num_ca_roots = a->num_ca_roots;
  if (out->profile == NULL) out->profile = a->profile;
  if (out->preferred_chain == NULL) out->preferred_chain = a->preferred_chain;
  if (out->num_caa_identities == 0)
    out->caa_identities = a->caa_identities, out->num_caa_identities = a->num_caa_identities;
}
