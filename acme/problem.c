/* problem.c: reading what an ACME CA says besides its resources: problem
 * documents (RFC 7807 as RFC 8555 section 6.7 uses them), Retry-After and
 * Link headers. All input is hostile: types are checked before use, every
 * copy is bounded, and nothing here needs a NUL-terminated wire string
 * beyond what acme/httpc already guarantees. */
#include <ctype.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "acme/engine_internal.h"
#include "common/common.h"

#define PROBLEM_MAX_FIELD 1024  /* bytes kept of a type or detail */
#define PROBLEM_MAX_SUB 10      /* subproblems described */

static char *bounded_str(const cJSON *obj, const char *field) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
  if (!cJSON_IsString(v) || v->valuestring == NULL) return gh_strdup("");
  return gh_strndup(v->valuestring, strnlen(v->valuestring, PROBLEM_MAX_FIELD));
}

/* append adds |s| to the growing message |*buf| (|*len| bytes). */
static void append(char **buf, size_t *len, const char *s) {
  size_t n = strlen(s);
  *buf = gh_realloc(*buf, *len + n + 1);
  memcpy(*buf + *len, s, n + 1);
  *len += n;
}

int acme__problem_parse(acme_problem_t *out, const char *body, size_t body_len) {
  memset(out, 0, sizeof(*out));
  cJSON *doc = cJSON_ParseWithLength(body, body_len);
  if (!cJSON_IsObject(doc) ||
      (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(doc, "type")) &&
       !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(doc, "detail")))) {
    cJSON_Delete(doc);
    return -1;
  }
  out->type = bounded_str(doc, "type");
  out->detail = bounded_str(doc, "detail");
  size_t len = 0;
  char *msg = gh_strdup("");
  append(&msg, &len, out->type[0] ? out->type : "(no type)");
  append(&msg, &len, ": ");
  append(&msg, &len, out->detail[0] ? out->detail : "(no detail)");
  const cJSON *subs = cJSON_GetObjectItemCaseSensitive(doc, "subproblems");
  if (cJSON_IsArray(subs) && cJSON_GetArraySize(subs) > 0) {
    append(&msg, &len, "; subproblems:");
    int i = 0;
    const cJSON *sub;
    cJSON_ArrayForEach(sub, subs) {
      if (i++ == PROBLEM_MAX_SUB) {
        append(&msg, &len, " ...");
        break;
      }
      if (!cJSON_IsObject(sub)) {
        append(&msg, &len, " (not an object)");
        continue;
      }
      char *type = bounded_str(sub, "type"), *detail = bounded_str(sub, "detail");
      const cJSON *id = cJSON_GetObjectItemCaseSensitive(sub, "identifier");
      char *value = cJSON_IsObject(id) ? bounded_str(id, "value") : gh_strdup("");
      char *part = gh_asprintf(" [%s%s%s: %s]", value, value[0] ? ": " : "",
                               type[0] ? type : "(no type)", detail[0] ? detail : "(no detail)");
      append(&msg, &len, part);
      gh_free(part);
      gh_free(type);
      gh_free(detail);
      gh_free(value);
    }
  }
  out->message = msg;
  cJSON_Delete(doc);
  return 0;
}

void acme__problem_cleanup(acme_problem_t *p) {
  gh_free(p->type);
  gh_free(p->detail);
  gh_free(p->message);
  memset(p, 0, sizeof(*p));
}

int acme__problem_is(const acme_problem_t *p, const char *name) {
  size_t n = sizeof(ACME_ERR_PREFIX) - 1;
  return p->type != NULL && strncmp(p->type, ACME_ERR_PREFIX, n) == 0 &&
         strcmp(p->type + n, name) == 0;
}

int acme__retry_after_parse(const char *value, time_t now, uint64_t *out_ms) {
  const char *p = value;
  while (*p == ' ' || *p == '\t') p++;
  if (isdigit((unsigned char)*p)) {
    uint64_t s = 0;
    for (; isdigit((unsigned char)*p); p++) {
      if (s > 100000000u) return -1; /* absurd: over three years */
      s = s * 10 + (uint64_t)(*p - '0');
    }
    while (*p == ' ' || *p == '\t') p++;
    if (*p != '\0') return -1;
    *out_ms = s * 1000;
    return 0;
  }
  /* IMF-fixdate, the only form a sender may generate: "Sun, 06 Nov 1994
   * 08:49:37 GMT". */
  struct tm tm;
  memset(&tm, 0, sizeof(tm));
  const char *end = strptime(p, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == NULL) return -1;
  while (*end == ' ' || *end == '\t') end++;
  if (*end != '\0') return -1;
  time_t t = timegm(&tm);
  if (t == (time_t)-1) return -1;
  *out_ms = t > now ? (uint64_t)(t - now) * 1000 : 0;
  return 0;
}

/* rel_matches reports whether the rel parameter value |v| (|len| bytes,
 * unquoted) lists |rel| among its space-separated relation types. */
static int rel_matches(const char *v, size_t len, const char *rel) {
  size_t rlen = strlen(rel), i = 0;
  while (i < len) {
    while (i < len && v[i] == ' ') i++;
    size_t start = i;
    while (i < len && v[i] != ' ') i++;
    if (i - start == rlen && strncasecmp(v + start, rel, rlen) == 0) return 1;
  }
  return 0;
}

/* parse_links walks one header value, appending matches to |*urls|. */
static void parse_links(char ***urls, size_t *num, const char *s, const char *rel) {
  const char *p = s;
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == ',') p++;
    if (*p != '<') return; /* malformed: give up on this value */
    const char *url = ++p;
    while (*p != '\0' && *p != '>') p++;
    if (*p != '>') return;
    size_t url_len = (size_t)(p - url);
    p++;
    int match = 0;
    /* parameters: ; name=value or ; name="quoted" */
    for (;;) {
      while (*p == ' ' || *p == '\t') p++;
      if (*p != ';') break;
      p++;
      while (*p == ' ' || *p == '\t') p++;
      const char *name = p;
      while (*p != '\0' && *p != '=' && *p != ';' && *p != ',' && *p != ' ') p++;
      size_t name_len = (size_t)(p - name);
      while (*p == ' ' || *p == '\t') p++;
      const char *val = p;
      size_t val_len = 0;
      if (*p == '=') {
        p++;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '"') {
          val = ++p;
          while (*p != '\0' && *p != '"') {
            if (*p == '\\' && p[1] != '\0') p++;
            p++;
          }
          val_len = (size_t)(p - val);
          if (*p == '"') p++;
        } else {
          val = p;
          while (*p != '\0' && *p != ';' && *p != ',' && *p != ' ') p++;
          val_len = (size_t)(p - val);
        }
      }
      if (name_len == 3 && strncasecmp(name, "rel", 3) == 0 && rel_matches(val, val_len, rel))
        match = 1;
    }
    if (match && url_len > 0 && *num < 64) {
      *urls = gh_realloc(*urls, (*num + 1) * sizeof(char *));
      (*urls)[(*num)++] = gh_strndup(url, url_len);
    }
    while (*p != '\0' && *p != ',') p++;
    if (*p == '\0') return;
  }
}

size_t acme__links(char ***out_urls, const char *const *values, size_t num_values,
                   const char *rel) {
  char **urls = NULL;
  size_t num = 0;
  for (size_t i = 0; i < num_values; i++) parse_links(&urls, &num, values[i], rel);
  *out_urls = urls;
  return num;
}

void acme__links_free(char **urls, size_t num_urls) {
  for (size_t i = 0; i < num_urls; i++) gh_free(urls[i]);
  gh_free(urls);
}
