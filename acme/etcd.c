/* etcd.c: the etcd client's operations: KV (range, put, deleterange),
 * transactions with the order lock and fenced-write wrappers, and leases,
 * each one POST to the JSON gateway through acme__etcd_call. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "acme/etcd_internal.h"
#include "common/b64.h"

static void add_bytes(cJSON *obj, const char *name, gh_str_t bytes) {
  char *b = gh_b64_encode((const uint8_t *)bytes.ptr, bytes.len);
  cJSON_AddStringToObject(obj, name, b);
  gh_free(b);
}

static void add_i64(cJSON *obj, const char *name, int64_t v) {
  char buf[24];
  snprintf(buf, sizeof(buf), "%" PRId64, v);
  cJSON_AddStringToObject(obj, name, buf);
}

static void add_range_end(cJSON *obj, gh_str_t prefix) {
  uint8_t *end = gh_malloc(prefix.len + 1);
  size_t n = acme__etcd_range_end(end, prefix);
  add_bytes(obj, "range_end", (gh_str_t){(const char *)end, n});
  gh_free(end);
}

static int bad_response(acme_etcd_t *c, char **out_err, const char *path) {
  *out_err = gh_asprintf("etcd %s: POST %s: malformed response", acme_etcd_endpoint(c), path);
  return -EPROTO;
}

/* call_revision sends |req| (consumed) and reads the header revision. */
static int call(acme_etcd_t *c, char **out_err, cJSON **out_root, int64_t *out_revision,
                const char *path, cJSON *req, int flags) {
  int r = acme__etcd_call(c, out_err, out_root, path, req, flags);
  cJSON_Delete(req);
  if (r != 0) return r;
  int64_t rev;
  if (acme__etcd_header_revision(&rev, *out_root) != 0) {
    cJSON_Delete(*out_root);
    *out_root = NULL;
    return bad_response(c, out_err, path);
  }
  if (out_revision != NULL) *out_revision = rev;
  return 0;
}

/* ---- KV ---- */

int acme_etcd_get(acme_etcd_t *c, char **out_err, acme_etcd_kv_t *out_kv, int *out_found,
                  int64_t *out_revision, gh_str_t key) {
  memset(out_kv, 0, sizeof(*out_kv));
  *out_found = 0;
  cJSON *req = cJSON_CreateObject();
  add_bytes(req, "key", key);
  cJSON *root;
  int r = call(c, out_err, &root, out_revision, "/v3/kv/range", req, ACME__ETCD_RETRY_SAFE);
  if (r != 0) return r;
  acme_etcd_kv_t *kvs = NULL;
  size_t num = 0;
  if (acme__etcd_kvs_append(&kvs, &num, root) != 0 || num > 1) {
    r = bad_response(c, out_err, "/v3/kv/range");
  } else if (num == 1) {
    *out_kv = kvs[0];
    *out_found = 1;
    num = 0;
  }
  acme_etcd_kvs_free(kvs, num);
  cJSON_Delete(root);
  return r;
}

int acme_etcd_list(acme_etcd_t *c, char **out_err, acme_etcd_kv_t **out_kvs, size_t *out_num,
                   int64_t *out_revision, gh_str_t prefix) {
  *out_kvs = NULL;
  *out_num = 0;
  *out_err = NULL;
  if (prefix.len == 0) {
    *out_err = gh_strdup("etcd: list needs a prefix");
    return -EINVAL;
  }
  acme_etcd_kv_t *kvs = NULL;
  size_t num = 0;
  int64_t snapshot = 0;
  uint8_t *from = gh_malloc(prefix.len + 1);
  size_t from_len = prefix.len;
  memcpy(from, prefix.ptr, prefix.len);
  int r = 0;
  for (;;) {
    cJSON *req = cJSON_CreateObject();
    add_bytes(req, "key", (gh_str_t){(const char *)from, from_len});
    add_range_end(req, prefix);
    add_i64(req, "limit", ACME_ETCD_PAGE);
    if (snapshot != 0) add_i64(req, "revision", snapshot);
    cJSON *root;
    int64_t rev;
    r = call(c, out_err, &root, &rev, "/v3/kv/range", req, ACME__ETCD_RETRY_SAFE);
    if (r != 0) break;
    size_t before = num;
    const cJSON *more = cJSON_GetObjectItemCaseSensitive(root, "more");
    if (acme__etcd_kvs_append(&kvs, &num, root) != 0 || (more != NULL && !cJSON_IsBool(more)) ||
        (cJSON_IsTrue(more) && num == before)) {
      cJSON_Delete(root);
      r = bad_response(c, out_err, "/v3/kv/range");
      break;
    }
    cJSON_Delete(root);
    if (snapshot == 0) snapshot = rev;
    if (!cJSON_IsTrue(more)) break;
    /* The next page starts just after the last key: last key + "\0". */
    const acme_etcd_kv_t *last = &kvs[num - 1];
    from = gh_realloc(from, last->key_len + 1);
    memcpy(from, last->key, last->key_len);
    from[last->key_len] = 0;
    from_len = last->key_len + 1;
  }
  gh_free(from);
  if (r != 0) {
    acme_etcd_kvs_free(kvs, num);
    return r;
  }
  *out_kvs = kvs;
  *out_num = num;
  if (out_revision != NULL) *out_revision = snapshot;
  return 0;
}

int acme_etcd_put(acme_etcd_t *c, char **out_err, int64_t *out_revision, gh_str_t key,
                  gh_str_t value, int64_t lease) {
  cJSON *req = cJSON_CreateObject();
  add_bytes(req, "key", key);
  add_bytes(req, "value", value);
  if (lease != 0) add_i64(req, "lease", lease);
  cJSON *root;
  int r = call(c, out_err, &root, out_revision, "/v3/kv/put", req, 0);
  cJSON_Delete(root);
  return r;
}

int acme_etcd_delete(acme_etcd_t *c, char **out_err, int64_t *out_deleted,
                     int64_t *out_revision, gh_str_t key, int prefix) {
  *out_err = NULL;
  if (prefix && key.len == 0) {
    *out_err = gh_strdup("etcd: delete needs a prefix");
    return -EINVAL;
  }
  cJSON *req = cJSON_CreateObject();
  add_bytes(req, "key", key);
  if (prefix) add_range_end(req, key);
  cJSON *root;
  int r = call(c, out_err, &root, out_revision, "/v3/kv/deleterange", req, 0);
  if (r != 0) return r;
  int64_t deleted;
  if (acme__etcd_i64(&deleted, root, "deleted") != 0) {
    r = bad_response(c, out_err, "/v3/kv/deleterange");
  } else if (out_deleted != NULL) {
    *out_deleted = deleted;
  }
  cJSON_Delete(root);
  return r;
}

/* ---- transactions ---- */

static cJSON *txn_ops(const acme_etcd_op_t *ops, size_t num) {
  cJSON *arr = cJSON_CreateArray();
  for (size_t i = 0; i < num; i++) {
    const acme_etcd_op_t *op = &ops[i];
    cJSON *wrap = cJSON_CreateObject();
    cJSON *o = cJSON_CreateObject();
    add_bytes(o, "key", op->key);
    if (op->type == ACME_ETCD_OP_PUT) {
      add_bytes(o, "value", op->value);
      if (op->lease != 0) add_i64(o, "lease", op->lease);
    }
    cJSON_AddItemToObject(wrap,
                          op->type == ACME_ETCD_OP_PUT      ? "request_put"
                          : op->type == ACME_ETCD_OP_DELETE ? "request_delete_range"
                                                            : "request_range",
                          o);
    cJSON_AddItemToArray(arr, wrap);
  }
  return arr;
}

int acme_etcd_txn(acme_etcd_t *c, char **out_err, int *out_succeeded, int64_t *out_revision,
                  acme_etcd_kv_t **out_kvs, size_t *out_num_kvs, const acme_etcd_txn_t *txn) {
  *out_succeeded = 0;
  if (out_kvs != NULL) {
    *out_kvs = NULL;
    *out_num_kvs = 0;
  }
  cJSON *req = cJSON_CreateObject();
  cJSON *cmps = cJSON_AddArrayToObject(req, "compare");
  for (size_t i = 0; i < txn->num_cmps; i++) {
    const acme_etcd_cmp_t *cmp = &txn->cmps[i];
    cJSON *o = cJSON_CreateObject();
    add_bytes(o, "key", cmp->key);
    cJSON_AddStringToObject(o, "result", "EQUAL");
    switch (cmp->target) {
    case ACME_ETCD_CMP_CREATE:
      cJSON_AddStringToObject(o, "target", "CREATE");
      add_i64(o, "create_revision", cmp->revision);
      break;
    case ACME_ETCD_CMP_MOD:
      cJSON_AddStringToObject(o, "target", "MOD");
      add_i64(o, "mod_revision", cmp->revision);
      break;
    case ACME_ETCD_CMP_VALUE:
      cJSON_AddStringToObject(o, "target", "VALUE");
      add_bytes(o, "value", cmp->value);
      break;
    }
    cJSON_AddItemToArray(cmps, o);
  }
  cJSON_AddItemToObject(req, "success", txn_ops(txn->success, txn->num_success));
  cJSON_AddItemToObject(req, "failure", txn_ops(txn->failure, txn->num_failure));
  cJSON *root;
  int r = call(c, out_err, &root, out_revision, "/v3/kv/txn", req,
               txn->retry_safe ? ACME__ETCD_RETRY_SAFE : 0);
  if (r != 0) return r;
  const cJSON *succeeded = cJSON_GetObjectItemCaseSensitive(root, "succeeded");
  const cJSON *resps = cJSON_GetObjectItemCaseSensitive(root, "responses");
  if ((succeeded != NULL && !cJSON_IsBool(succeeded)) || (resps != NULL && !cJSON_IsArray(resps)))
    r = -1;
  *out_succeeded = cJSON_IsTrue(succeeded);
  acme_etcd_kv_t *kvs = NULL;
  size_t num = 0;
  const cJSON *item;
  if (r == 0 && out_kvs != NULL) {
    cJSON_ArrayForEach(item, resps) {
      const cJSON *range = cJSON_GetObjectItemCaseSensitive(item, "response_range");
      if (range != NULL && acme__etcd_kvs_append(&kvs, &num, range) != 0) {
        r = -1;
        break;
      }
    }
  }
  cJSON_Delete(root);
  if (r != 0) {
    acme_etcd_kvs_free(kvs, num);
    *out_succeeded = 0;
    return bad_response(c, out_err, "/v3/kv/txn");
  }
  if (out_kvs != NULL) {
    *out_kvs = kvs;
    *out_num_kvs = num;
  }
  return 0;
}

int acme_etcd_create_if_absent(acme_etcd_t *c, char **out_err, int *out_created,
                               int64_t *out_revision, gh_str_t key, gh_str_t value,
                               int64_t lease) {
  *out_created = 0;
  *out_revision = 0;
  acme_etcd_cmp_t cmp = {.key = key, .target = ACME_ETCD_CMP_CREATE, .revision = 0};
  acme_etcd_op_t put = {.type = ACME_ETCD_OP_PUT, .key = key, .value = value, .lease = lease};
  acme_etcd_op_t get = {.type = ACME_ETCD_OP_GET, .key = key};
  acme_etcd_txn_t txn = {.cmps = &cmp, .num_cmps = 1, .success = &put, .num_success = 1,
                         .failure = &get, .num_failure = 1, .retry_safe = 1};
  int succeeded;
  int64_t rev;
  acme_etcd_kv_t *kvs;
  size_t num;
  int r = acme_etcd_txn(c, out_err, &succeeded, &rev, &kvs, &num, &txn);
  if (r != 0) return r;
  if (succeeded) {
    *out_created = 1;
    *out_revision = rev; /* the put's revision is the key's create_revision */
  } else if (num == 1) {
    const acme_etcd_kv_t *kv = &kvs[0];
    *out_revision = kv->create_revision;
    /* Our own earlier attempt whose answer was lost (a repeat after a
     * timeout): the same lease and value. */
    *out_created = lease != 0 && kv->lease == lease && kv->value_len == value.len &&
                   memcmp(kv->value, value.ptr, value.len) == 0;
  }
  /* num == 0 after a failed compare: the key vanished in between (its
   * lease ended); the caller may try again. */
  acme_etcd_kvs_free(kvs, num);
  return 0;
}

int acme_etcd_put_if(acme_etcd_t *c, char **out_err, int *out_done, int64_t *out_revision,
                     gh_str_t key, gh_str_t value, int64_t lease, gh_str_t guard_key,
                     int64_t guard_create_revision) {
  *out_done = 0;
  *out_err = NULL;
  if (guard_create_revision <= 0) {
    *out_err = gh_strdup("etcd: put_if needs the guard's create revision");
    return -EINVAL;
  }
  acme_etcd_cmp_t cmp = {.key = guard_key, .target = ACME_ETCD_CMP_CREATE,
                         .revision = guard_create_revision};
  acme_etcd_op_t put = {.type = ACME_ETCD_OP_PUT, .key = key, .value = value, .lease = lease};
  acme_etcd_txn_t txn = {.cmps = &cmp, .num_cmps = 1, .success = &put, .num_success = 1,
                         .retry_safe = 1};
  int64_t rev;
  int r = acme_etcd_txn(c, out_err, out_done, &rev, NULL, NULL, &txn);
  if (r == 0 && *out_done && out_revision != NULL) *out_revision = rev;
  return r;
}

/* ---- leases ---- */

int acme_etcd_lease_grant(acme_etcd_t *c, char **out_err, int64_t *out_id, int64_t *out_ttl_s,
                          int64_t ttl_s) {
  *out_id = 0;
  *out_ttl_s = 0;
  cJSON *req = cJSON_CreateObject();
  add_i64(req, "TTL", ttl_s);
  cJSON *root;
  int r = call(c, out_err, &root, NULL, "/v3/lease/grant", req, 0);
  if (r != 0) return r;
  if (acme__etcd_i64(out_id, root, "ID") != 0 || acme__etcd_i64(out_ttl_s, root, "TTL") != 0 ||
      *out_id == 0) {
    *out_id = *out_ttl_s = 0;
    r = bad_response(c, out_err, "/v3/lease/grant");
  }
  cJSON_Delete(root);
  return r;
}

int acme_etcd_lease_keepalive(acme_etcd_t *c, char **out_err, int64_t *out_ttl_s, int64_t id) {
  *out_ttl_s = 0;
  cJSON *req = cJSON_CreateObject();
  add_i64(req, "ID", id);
  cJSON *root;
  /* The gateway runs the LeaseKeepAlive stream for one request and answers
   * {"result": {"header", "ID", "TTL"}}; a lease that is gone has no TTL. */
  int r = acme__etcd_call(c, out_err, &root, "/v3/lease/keepalive", req, ACME__ETCD_RETRY_SAFE);
  cJSON_Delete(req);
  if (r != 0) return r;
  const cJSON *res = cJSON_GetObjectItemCaseSensitive(root, "result");
  if (!cJSON_IsObject(res) || acme__etcd_i64(out_ttl_s, res, "TTL") != 0) {
    *out_ttl_s = 0;
    int code;
    char *text = cJSON_PrintUnformatted(root);
    char *m = text ? acme__etcd_error_message(&code, text, strlen(text)) : NULL;
    cJSON_free(text);
    if (m != NULL) {
      *out_err = gh_asprintf("etcd %s: POST /v3/lease/keepalive: %s", acme_etcd_endpoint(c), m);
      r = ACME_ETCD_ESERVER;
    } else {
      r = bad_response(c, out_err, "/v3/lease/keepalive");
    }
    gh_free(m);
  } else if (*out_ttl_s < 0) {
    *out_ttl_s = 0;
  }
  cJSON_Delete(root);
  return r;
}

int acme_etcd_lease_revoke(acme_etcd_t *c, char **out_err, int64_t id) {
  cJSON *req = cJSON_CreateObject();
  add_i64(req, "ID", id);
  cJSON *root;
  int r = call(c, out_err, &root, NULL, "/v3/lease/revoke", req, ACME__ETCD_RETRY_SAFE);
  cJSON_Delete(root);
  if (r == ACME_ETCD_ESERVER && strstr(*out_err, "requested lease not found") != NULL) {
    gh_free(*out_err);
    *out_err = NULL;
    r = 0;
  }
  return r;
}
