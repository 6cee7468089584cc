/* storage_names.c: the names storage turns into path components —
 * certificate names (and their wildcard mapping), CA hosts, account ids —
 * checked against a whitelist before they touch the filesystem (the rules
 * are in storage.h). */
#include "acme/storage_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "acme/csr.h"
#include "common/common.h"

#define MAX_DNS_NAME 253
#define MAX_LABEL 63
#define MAX_ACCOUNT_ID 200
#define WILDCARD_FILE_PREFIX "_wildcard."

char *acme__storage_printable(const char *s) {
  size_t len = strnlen(s, 81);
  char *out = gh_malloc(len + 4);
  for (size_t i = 0; i < len && i < 80; i++) {
    unsigned char c = (unsigned char)s[i];
    out[i] = (c >= 0x20 && c < 0x7f && c != '"') ? (char)c : '?';
  }
  strcpy(out + (len > 80 ? 80 : len), len > 80 ? "..." : "");
  return out;
}

/* ldh_reason checks that the |len| bytes at |s| are a lower-case DNS name
 * of LDH labels. Returns NULL, or why not. */
static const char *ldh_reason(const char *s, size_t len) {
  if (len == 0) return "is empty";
  if (len > MAX_DNS_NAME) return "is longer than 253 characters";
  size_t label = 0;
  for (size_t i = 0; i <= len; i++) {
    char c = i < len ? s[i] : '.';
    if (c == '.') {
      if (label == 0) return "has an empty label";
      if (s[i - label] == '-' || s[i - 1] == '-') return "has a label that starts or ends with '-'";
      label = 0;
    } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
      if (++label > MAX_LABEL) return "has a label longer than 63 characters";
    } else if (c >= 'A' && c <= 'Z') {
      return "is not lower-case";
    } else {
      return "has a character other than a-z, 0-9, '-' and '.'";
    }
  }
  return NULL;
}

/* An IPv6 certificate name (RFC 8738) is stored with '_' for ':', which
 * neither an LDH name nor a path minds; '_' is otherwise only in the
 * wildcard prefix, so the mapping is reversible. */
static int ipv6_file(char *out, size_t out_size, const char *name, char from, char to) {
  size_t len = strlen(name);
  if (len >= out_size || len >= INET6_ADDRSTRLEN || strchr(name, from) == NULL) return 0;
  for (size_t i = 0; i <= len; i++) out[i] = name[i] == from ? to : name[i];
  return conf_ip_literal(to == ':' ? out : name, NULL, NULL);
}

int acme__storage_name_encode(char *out, size_t out_size, char **out_err, const char *name) {
  if (ipv6_file(out, out_size, name, ':', '_')) return 0;
  size_t len = strlen(name);
  int wild = len >= 2 && name[0] == '*' && name[1] == '.';
  const char *base = wild ? name + 2 : name;
  size_t base_len = wild ? len - 2 : len;
  size_t file_len = wild ? strlen(WILDCARD_FILE_PREFIX) + base_len : len;
  const char *why =
      len > MAX_DNS_NAME ? "is longer than 253 characters" : ldh_reason(base, base_len);
  if (why == NULL && (file_len > NAME_MAX || file_len >= out_size)) {
    why = "is too long to store (a wildcard's parent may have at most 245 characters)";
  }
  if (why != NULL) {
    char *p = acme__storage_printable(name);
    *out_err = gh_asprintf("certificate name \"%s\" %s", p, why);
    gh_free(p);
    return -EINVAL;
  }
  snprintf(out, out_size, "%s%s", wild ? WILDCARD_FILE_PREFIX : "", base);
  return 0;
}

int acme__storage_name_decode(char *out, size_t out_size, const char *file) {
  if (ipv6_file(out, out_size, file, '_', ':')) return 0;
  size_t len = strlen(file), prefix_len = strlen(WILDCARD_FILE_PREFIX);
  int wild = strncmp(file, WILDCARD_FILE_PREFIX, prefix_len) == 0;
  const char *base = wild ? file + prefix_len : file;
  size_t base_len = wild ? len - prefix_len : len;
  size_t name_len = wild ? 2 + base_len : len;
  if (len > NAME_MAX || name_len > MAX_DNS_NAME || name_len >= out_size ||
      ldh_reason(base, base_len) != NULL) {
    return -EINVAL;
  }
  snprintf(out, out_size, "%s%s", wild ? "*." : "", base);
  return 0;
}

int acme__storage_ca_dir(char *out, size_t out_size, char **out_err, const char *ca_url) {
  const char *why = NULL;
  const char *p = ca_url;
  if (strncmp(p, "https://", 8) == 0) {
    p += 8;
  } else if (strncmp(p, "http://", 7) == 0) {
    p += 7;
  } else {
    why = "is not an http(s) URL";
  }
  char host[MAX_DNS_NAME + 1];
  size_t host_len = 0, port_len = 0;
  const char *port = NULL;
  if (why == NULL) {
    size_t authority_len = strcspn(p, "/?#");
    const char *colon = memchr(p, ':', authority_len);
    host_len = colon ? (size_t)(colon - p) : authority_len;
    if (colon != NULL) {
      port = colon + 1;
      port_len = authority_len - host_len - 1;
    }
    if (memchr(p, '@', authority_len) != NULL) why = "has user information";
  }
  if (why == NULL && host_len > MAX_DNS_NAME) why = "has a host longer than 253 characters";
  if (why == NULL) {
    /* URL hosts are case-insensitive; IP literals in brackets are refused
     * by the LDH check, as no CA is reached that way. */
    for (size_t i = 0; i < host_len; i++) {
      char c = p[i];
      host[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    host[host_len] = '\0';
    if (ldh_reason(host, host_len) != NULL) why = "has a host that is not a DNS name";
  }
  if (why == NULL && port != NULL) {
    unsigned long value = 0;
    for (size_t i = 0; i < port_len && why == NULL; i++) {
      if (port[i] < '0' || port[i] > '9') why = "has a port that is not a number";
      value = value * 10 + (unsigned long)(port[i] - '0');
      if (why == NULL && value > 65535) why = "has a port above 65535";
    }
    if (why == NULL && (port_len == 0 || value == 0)) why = "has an empty or zero port";
  }
  if (why == NULL && host_len + 1 + port_len >= out_size) why = "is too long";
  if (why != NULL) {
    char *q = acme__storage_printable(ca_url);
    *out_err = gh_asprintf("CA directory URL \"%s\" %s", q, why);
    gh_free(q);
    return -EINVAL;
  }
  snprintf(out, out_size, "%s%s%.*s", host, port ? "_" : "", (int)port_len, port ? port : "");
  return 0;
}

int acme__storage_account_id_check(char **out_err, const char *id) {
  size_t len = strlen(id);
  const char *why = NULL;
  if (len == 0 || len > MAX_ACCOUNT_ID) why = "must have 1 to 200 characters";
  for (size_t i = 0; i < len && why == NULL; i++) {
    char c = id[i];
    int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || strchr("._@+-", c) == NULL)) {
      why = "must be of a-z, 0-9 and \"._@+-\", starting with a letter or digit";
    }
  }
  if (why == NULL) return 0;
  char *p = acme__storage_printable(id);
  *out_err = gh_asprintf("account id \"%s\" %s", p, why);
  gh_free(p);
  return -EINVAL;
}
