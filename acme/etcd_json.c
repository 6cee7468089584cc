/* etcd_json.c: decoding what etcd's JSON gateway sends. Pure functions of
 * their input (no I/O), driven by tests/fuzz/fuzz_etcd.c.
 *
 * Accepted: grpc-gateway's JSON of etcd 3.4's messages: int64 as strings
 * of digits ("revision": "12"; integral numbers are taken too), bytes as
 * padded standard base64, fields at their zero value left out (a PUT event
 * has no "type", an empty value no "value"). Every node's type is checked
 * before use; anything else fails. */
#include <errno.h>

#include "acme/etcd_internal.h"
#include "common/b64.h"

int acme__etcd_i64(int64_t *out, const cJSON *obj, const char *name) {
  *out = 0;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
  if (v == NULL || cJSON_IsNull(v)) return 0;
  if (cJSON_IsNumber(v)) {
    double d = v->valuedouble;
    if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0) || d != (double)(int64_t)d)
      return -1;
    *out = (int64_t)d;
    return 0;
  }
  if (!cJSON_IsString(v) || v->valuestring == NULL) return -1;
  const char *s = v->valuestring;
  int neg = *s == '-';
  if (neg) s++;
  if (*s == '\0' || strlen(s) > 19) return -1;
  uint64_t n = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    n = n * 10 + (uint64_t)(*s - '0');
  }
  if (n > (uint64_t)INT64_MAX) return -1;
  *out = neg ? -(int64_t)n : (int64_t)n;
  return 0;
}

int acme__etcd_bytes(uint8_t **out, size_t *out_len, const cJSON *obj, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
  if (v == NULL || cJSON_IsNull(v)) {
    *out = gh_calloc(1, 1);
    *out_len = 0;
    return 0;
  }
  if (!cJSON_IsString(v) || v->valuestring == NULL) {
    *out = NULL;
    *out_len = 0;
    return -1;
  }
  return gh_b64_decode(out, out_len, v->valuestring, strlen(v->valuestring));
}

int acme__etcd_header_revision(int64_t *out, const cJSON *root) {
  *out = 0;
  const cJSON *h = cJSON_GetObjectItemCaseSensitive(root, "header");
  if (h == NULL) return 0;
  if (!cJSON_IsObject(h)) return -1;
  return acme__etcd_i64(out, h, "revision");
}

int acme__etcd_kv_decode(acme_etcd_kv_t *out, const cJSON *obj) {
  memset(out, 0, sizeof(*out));
  if (!cJSON_IsObject(obj) || acme__etcd_bytes(&out->key, &out->key_len, obj, "key") != 0 ||
      acme__etcd_bytes(&out->value, &out->value_len, obj, "value") != 0 ||
      acme__etcd_i64(&out->create_revision, obj, "create_revision") != 0 ||
      acme__etcd_i64(&out->mod_revision, obj, "mod_revision") != 0 ||
      acme__etcd_i64(&out->version, obj, "version") != 0 ||
      acme__etcd_i64(&out->lease, obj, "lease") != 0) {
    acme_etcd_kv_cleanup(out);
    return -1;
  }
  return 0;
}

int acme__etcd_kvs_append(acme_etcd_kv_t **kvs, size_t *num, const cJSON *range) {
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(range, "kvs");
  if (arr == NULL) return 0;
  if (!cJSON_IsArray(arr)) return -1;
  size_t n = (size_t)cJSON_GetArraySize(arr);
  if (n == 0) return 0;
  *kvs = gh_realloc(*kvs, (*num + n) * sizeof(**kvs));
  const cJSON *item;
  cJSON_ArrayForEach(item, arr) {
    if (acme__etcd_kv_decode(&(*kvs)[*num], item) != 0) return -1;
    (*num)++;
  }
  return 0;
}

void acme_etcd_kv_cleanup(acme_etcd_kv_t *kv) {
  if (kv == NULL) return;
  gh_free(kv->key);
  gh_free(kv->value);
  memset(kv, 0, sizeof(*kv));
}

void acme_etcd_kvs_free(acme_etcd_kv_t *kvs, size_t num) {
  if (kvs == NULL) return;
  for (size_t i = 0; i < num; i++) acme_etcd_kv_cleanup(&kvs[i]);
  gh_free(kvs);
}

void acme_etcd_events_free(acme_etcd_event_t *events, size_t num) {
  if (events == NULL) return;
  for (size_t i = 0; i < num; i++) acme_etcd_kv_cleanup(&events[i].kv);
  gh_free(events);
}

static const char *json_str(const cJSON *obj, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
  return cJSON_IsString(v) && v->valuestring != NULL ? v->valuestring : NULL;
}

/* error_text takes the message out of an error object: "message", else
 * "error" when it is a string. */
static char *error_text(int *out_code, const cJSON *obj) {
  int64_t code = -1;
  if (cJSON_GetObjectItemCaseSensitive(obj, "code") != NULL) {
    if (acme__etcd_i64(&code, obj, "code") != 0) code = -1;
  } else if (cJSON_GetObjectItemCaseSensitive(obj, "grpc_code") != NULL) {
    if (acme__etcd_i64(&code, obj, "grpc_code") != 0) code = -1;
  }
  *out_code = code >= 0 && code < 1000 ? (int)code : -1;
  const char *m = json_str(obj, "message");
  if (m == NULL || *m == '\0') m = json_str(obj, "error");
  if (m == NULL) return NULL;
  /* Bounded and printable: it ends up in a log line. */
  size_t n = strnlen(m, 512);
  char *out = gh_strndup(m, n);
  for (char *p = out; *p; p++) {
    if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
  }
  return out;
}

char *acme__etcd_error_message(int *out_code, const char *body, size_t len) {
  *out_code = -1;
  cJSON *root = cJSON_ParseWithLength(body, len);
  if (root == NULL) return NULL;
  char *msg = NULL;
  if (cJSON_IsObject(root)) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
    msg = cJSON_IsObject(e) ? error_text(out_code, e) : error_text(out_code, root);
  }
  cJSON_Delete(root);
  return msg;
}

void acme__etcd_watch_msg_cleanup(acme__etcd_watch_msg_t *m) {
  acme_etcd_events_free(m->events, m->num_events);
  gh_free(m->error);
  memset(m, 0, sizeof(*m));
}

static int watch_events(acme__etcd_watch_msg_t *out, const cJSON *arr) {
  if (arr == NULL) return 0;
  if (!cJSON_IsArray(arr)) return -1;
  size_t n = (size_t)cJSON_GetArraySize(arr);
  if (n == 0) return 0;
  out->events = gh_calloc(n, sizeof(*out->events));
  const cJSON *ev;
  cJSON_ArrayForEach(ev, arr) {
    if (!cJSON_IsObject(ev)) return -1;
    acme_etcd_event_t *e = &out->events[out->num_events];
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(ev, "type");
    if (type == NULL || (cJSON_IsString(type) && strcmp(type->valuestring, "PUT") == 0) ||
        (cJSON_IsNumber(type) && type->valuedouble == 0)) {
      e->type = ACME_ETCD_EVENT_PUT;
    } else if ((cJSON_IsString(type) && strcmp(type->valuestring, "DELETE") == 0) ||
               (cJSON_IsNumber(type) && type->valuedouble == 1)) {
      e->type = ACME_ETCD_EVENT_DELETE;
    } else {
      return -1;
    }
    if (acme__etcd_kv_decode(&e->kv, cJSON_GetObjectItemCaseSensitive(ev, "kv")) != 0) return -1;
    out->num_events++;
  }
  return 0;
}

int acme__etcd_watch_decode(acme__etcd_watch_msg_t *out, char **out_err, const char *msg,
                            size_t len) {
  memset(out, 0, sizeof(*out));
  *out_err = NULL;
  cJSON *root = cJSON_ParseWithLength(msg, len);
  if (root == NULL || !cJSON_IsObject(root)) {
    cJSON_Delete(root);
    *out_err = gh_strdup("a watch message that is not a JSON object");
    return -1;
  }
  const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
  const cJSON *res = cJSON_GetObjectItemCaseSensitive(root, "result");
  int ret = 0;
  if (err != NULL) {
    int code;
    out->error = cJSON_IsObject(err) ? error_text(&code, err) : error_text(&code, root);
    if (out->error == NULL) out->error = gh_strdup("(no message)");
  } else if (!cJSON_IsObject(res)) {
    *out_err = gh_strdup("a watch message without \"result\"");
    ret = -1;
  } else {
    const cJSON *created = cJSON_GetObjectItemCaseSensitive(res, "created");
    const cJSON *canceled = cJSON_GetObjectItemCaseSensitive(res, "canceled");
    out->created = cJSON_IsTrue(created);
    out->canceled = cJSON_IsTrue(canceled);
    const char *reason = json_str(res, "cancel_reason");
    if (reason != NULL && *reason != '\0') out->error = gh_strndup(reason, strnlen(reason, 512));
    if ((created != NULL && !cJSON_IsBool(created)) ||
        (canceled != NULL && !cJSON_IsBool(canceled)) ||
        acme__etcd_header_revision(&out->revision, res) != 0 ||
        acme__etcd_i64(&out->compact_revision, res, "compact_revision") != 0 ||
        watch_events(out, cJSON_GetObjectItemCaseSensitive(res, "events")) != 0) {
      *out_err = gh_strdup("a malformed watch message");
      ret = -1;
    }
  }
  cJSON_Delete(root);
  if (ret != 0) acme__etcd_watch_msg_cleanup(out);
  return ret;
}

int acme__etcd_next_line(char **out, size_t *out_len, httpc_buf_t *buf) {
  for (;;) {
    const char *nl = buf->len ? memchr(buf->ptr, '\n', buf->len) : NULL;
    if (nl == NULL) return 0;
    size_t n = (size_t)(nl - buf->ptr);
    size_t line_len = n;
    while (line_len > 0 && buf->ptr[line_len - 1] == '\r') line_len--;
    char *line = NULL;
    if (line_len > 0) { /* not gh_strndup: the line may hold a NUL */
      line = gh_malloc(line_len + 1);
      memcpy(line, buf->ptr, line_len);
      line[line_len] = '\0';
    }
    memmove(buf->ptr, nl + 1, buf->len - n - 1);
    buf->len -= n + 1;
    buf->ptr[buf->len] = '\0';
    if (line != NULL) {
      *out = line;
      *out_len = line_len;
      return 1;
    }
  }
}

size_t acme__etcd_range_end(uint8_t *out, gh_str_t prefix) {
  size_t n = prefix.len;
  memcpy(out, prefix.ptr, n);
  while (n > 0) {
    if (out[n - 1] != 0xff) {
      out[n - 1]++;
      return n;
    }
    n--;
  }
  out[0] = 0;
  return 1;
}
