/* fuzz_etcd.c: the decoding of what etcd's JSON gateway sends
 * (acme/etcd_json.c), on arbitrary bytes.
 *
 * Byte 0 steers: bits 0-3 + 1 are the size of the pieces the watch stream
 * arrives in. The rest is both
 *  - a watch stream: cut into lines by acme__etcd_next_line as it arrives
 *    piece by piece, each line decoded by acme__etcd_watch_decode; and
 *  - one response body: acme__etcd_error_message, the header revision, the
 *    "kvs" of a range response and of each txn "responses[].response_range",
 *    and the keepalive "result"; and a key prefix for acme__etcd_range_end.
 *
 * Invariants: no crash or leak; the lines do not depend on how the stream
 * was cut (the same lines as from the whole input at once); decoded keys
 * and values are NUL-terminated; a decode failure leaves nothing to free;
 * the range end sorts after the prefix and after every key that starts
 * with it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "acme/etcd_internal.h"

static void check_kv(const acme_etcd_kv_t *kv) {
  if (kv->key[kv->key_len] != '\0' || kv->value[kv->value_len] != '\0') abort();
}

/* lines cuts |data| into lines, fed |piece| bytes at a time, and decodes
 * each; returns them joined by '\n' (caller frees). */
static httpc_buf_t lines(const uint8_t *data, size_t size, size_t piece) {
  httpc_buf_t stream = {0}, out = {0};
  for (size_t off = 0; off < size; off += piece) {
    size_t n = size - off < piece ? size - off : piece;
    httpc_buf_add(&stream, (const char *)data + off, n);
    char *line;
    size_t len;
    while (acme__etcd_next_line(&line, &len, &stream)) {
      if (len == 0 || memchr(line, '\n', len) != NULL) abort();
      httpc_buf_add(&out, line, len);
      httpc_buf_add(&out, "\n", 1);
      acme__etcd_watch_msg_t m;
      char *err = NULL;
      if (acme__etcd_watch_decode(&m, &err, line, len) == 0) {
        if (err != NULL) abort();
        for (size_t i = 0; i < m.num_events; i++) check_kv(&m.events[i].kv);
        acme__etcd_watch_msg_cleanup(&m);
      } else if (err == NULL || m.events != NULL || m.error != NULL) {
        abort();
      }
      gh_free(err);
      gh_free(line);
    }
  }
  httpc_buf_clear(&stream);
  return out;
}

static void response(const char *body, size_t len) {
  int code;
  gh_free(acme__etcd_error_message(&code, body, len));
  cJSON *root = cJSON_ParseWithLength(body, len);
  if (root == NULL) return;
  int64_t rev, ttl;
  (void)acme__etcd_header_revision(&rev, root);
  acme_etcd_kv_t *kvs = NULL;
  size_t num = 0;
  (void)acme__etcd_kvs_append(&kvs, &num, root);
  const cJSON *item;
  cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(root, "responses")) {
    const cJSON *range = cJSON_GetObjectItemCaseSensitive(item, "response_range");
    if (range != NULL && acme__etcd_kvs_append(&kvs, &num, range) != 0) break;
  }
  for (size_t i = 0; i < num; i++) check_kv(&kvs[i]);
  acme_etcd_kvs_free(kvs, num);
  const cJSON *res = cJSON_GetObjectItemCaseSensitive(root, "result");
  if (cJSON_IsObject(res)) (void)acme__etcd_i64(&ttl, res, "TTL");
  cJSON_Delete(root);
}

static int cmp_bytes(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
  int c = memcmp(a, b, alen < blen ? alen : blen);
  return c != 0 ? c : (alen > blen) - (alen < blen);
}

static void range_end(const uint8_t *p, size_t len) {
  if (len == 0 || len > 64) return;
  uint8_t end[65];
  size_t n = acme__etcd_range_end(end, (gh_str_t){(const char *)p, len});
  if (n == 1 && end[0] == 0) {
    for (size_t i = 0; i < len; i++) {
      if (p[i] != 0xff) abort(); /* "every key from the prefix on": all 0xff */
    }
    return;
  }
  if (cmp_bytes(end, n, p, len) <= 0) abort();
  /* The greatest key with the prefix that we can write: prefix + 0xff*8. */
  uint8_t big[72];
  memcpy(big, p, len);
  memset(big + len, 0xff, 8);
  if (cmp_bytes(end, n, big, len + 8) <= 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  size_t piece = (size_t)(data[0] & 15) + 1;
  data++;
  size--;
  httpc_buf_t whole = lines(data, size, size ? size : 1);
  httpc_buf_t cut = lines(data, size, piece);
  if (whole.len != cut.len || (whole.len && memcmp(whole.ptr, cut.ptr, whole.len) != 0)) abort();
  httpc_buf_clear(&whole);
  httpc_buf_clear(&cut);
  char *body = gh_malloc(size + 1);
  memcpy(body, data, size);
  body[size] = '\0';
  response(body, size);
  gh_free(body);
  range_end(data, size);
  return 0;
}
