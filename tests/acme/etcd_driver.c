/* etcd_driver.c (test_etcd): acme/etcd.h driven by a script, for
 * tests/integration/test_etcd_client.py.
 *
 *   test_etcd --endpoints URL[,URL...] [--ca F] [--cert F --key F]
 *             [--user U --password P] [--timeout MS]
 *
 * Reads one JSON command a line on stdin and answers each with one JSON
 * line on stdout (flushed), so a test can interleave its own actions
 * (etcdctl, killing a server) with the client's. Keys and values are hex
 * ("k", "v", "guard"), so they may hold any byte. Every answer has "ok"
 * and "ms" (how long the call took); a failure has "code" and "err".
 *
 *   {"op":"get","k":HEX}               -> found, v, create, mod, lease, rev
 *   {"op":"list","k":HEX}              -> kvs: [{k, v, create, mod, lease}], rev
 *   {"op":"put","k":HEX,"v":HEX,"lease":"N"}     -> rev
 *   {"op":"delete","k":HEX,"prefix":true}        -> deleted, rev
 *   {"op":"create","k":HEX,"v":HEX,"lease":"N"}  -> created, rev
 *   {"op":"put_if","k":HEX,"v":HEX,"lease":"N","guard":HEX,"guard_rev":"N"} -> done, rev
 *   {"op":"grant","ttl":N} -> id, ttl     {"op":"keepalive","id":"N"} -> ttl
 *   {"op":"revoke","id":"N"}
 *   {"op":"watch","k":HEX,"rev":"N"}   (one watch at a time)
 *   {"op":"next","timeout":MS}         -> result ("events", "timeout",
 *                                         "compacted"), events: [{type, k, v,
 *                                         mod}], rev, resume
 *   {"op":"unwatch"}
 *   {"op":"endpoint"}                  -> endpoint
 * Revisions and lease ids travel as decimal strings (they are int64). */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "acme/etcd.h"
#include "common/common.h"

static uint8_t *hex_decode(const char *s, size_t *out_len) {
  size_t n = s ? strlen(s) / 2 : 0;
  uint8_t *out = gh_malloc(n + 1);
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    if (sscanf(s + 2 * i, "%2x", &v) != 1) v = 0;
    out[i] = (uint8_t)v;
  }
  *out_len = n;
  return out;
}

static void add_hex(cJSON *o, const char *name, const uint8_t *p, size_t len) {
  char *s = gh_malloc(len * 2 + 1);
  for (size_t i = 0; i < len; i++) sprintf(s + 2 * i, "%02x", p[i]);
  s[len * 2] = '\0';
  cJSON_AddStringToObject(o, name, s);
  gh_free(s);
}

static void add_i64(cJSON *o, const char *name, int64_t v) {
  char buf[24];
  snprintf(buf, sizeof(buf), "%" PRId64, v);
  cJSON_AddStringToObject(o, name, buf);
}

static int64_t get_i64(const cJSON *cmd, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(cmd, name);
  if (cJSON_IsString(v)) return strtoll(v->valuestring, NULL, 10);
  if (cJSON_IsNumber(v)) return (int64_t)v->valuedouble;
  return 0;
}

/* A hex argument as a view; the buffer goes to |*keep| (caller frees). */
static gh_str_t get_bytes(const cJSON *cmd, const char *name, uint8_t **keep) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(cmd, name);
  size_t len;
  *keep = hex_decode(cJSON_IsString(v) ? v->valuestring : NULL, &len);
  return (gh_str_t){(const char *)*keep, len};
}

static void add_kv(cJSON *o, const acme_etcd_kv_t *kv) {
  add_hex(o, "k", kv->key, kv->key_len);
  add_hex(o, "v", kv->value, kv->value_len);
  add_i64(o, "create", kv->create_revision);
  add_i64(o, "mod", kv->mod_revision);
  add_i64(o, "lease", kv->lease);
}

static int run(acme_etcd_t *c, acme_etcd_watch_t **w, const cJSON *cmd, cJSON *out,
               char **err) {
  const cJSON *opj = cJSON_GetObjectItemCaseSensitive(cmd, "op");
  const char *op = cJSON_IsString(opj) ? opj->valuestring : "";
  uint8_t *kb = NULL, *vb = NULL, *gb = NULL;
  gh_str_t k = get_bytes(cmd, "k", &kb), v = get_bytes(cmd, "v", &vb);
  gh_str_t guard = get_bytes(cmd, "guard", &gb);
  int64_t lease = get_i64(cmd, "lease"), rev = 0;
  int r;
  if (strcmp(op, "get") == 0) {
    acme_etcd_kv_t kv;
    int found;
    r = acme_etcd_get(c, err, &kv, &found, &rev, k);
    if (r == 0) {
      cJSON_AddBoolToObject(out, "found", found);
      if (found) add_kv(out, &kv);
      acme_etcd_kv_cleanup(&kv);
    }
  } else if (strcmp(op, "list") == 0) {
    acme_etcd_kv_t *kvs;
    size_t num;
    r = acme_etcd_list(c, err, &kvs, &num, &rev, k);
    if (r == 0) {
      cJSON *arr = cJSON_AddArrayToObject(out, "kvs");
      for (size_t i = 0; i < num; i++) {
        cJSON *o = cJSON_CreateObject();
        add_kv(o, &kvs[i]);
        cJSON_AddItemToArray(arr, o);
      }
      acme_etcd_kvs_free(kvs, num);
    }
  } else if (strcmp(op, "put") == 0) {
    r = acme_etcd_put(c, err, &rev, k, v, lease);
  } else if (strcmp(op, "delete") == 0) {
    int64_t deleted = 0;
    r = acme_etcd_delete(c, err, &deleted, &rev, k,
                         cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cmd, "prefix")));
    if (r == 0) add_i64(out, "deleted", deleted);
  } else if (strcmp(op, "create") == 0) {
    int created;
    r = acme_etcd_create_if_absent(c, err, &created, &rev, k, v, lease);
    if (r == 0) cJSON_AddBoolToObject(out, "created", created);
  } else if (strcmp(op, "put_if") == 0) {
    int done;
    r = acme_etcd_put_if(c, err, &done, &rev, k, v, lease, guard, get_i64(cmd, "guard_rev"));
    if (r == 0) cJSON_AddBoolToObject(out, "done", done);
  } else if (strcmp(op, "grant") == 0) {
    int64_t id, ttl;
    r = acme_etcd_lease_grant(c, err, &id, &ttl, get_i64(cmd, "ttl"));
    if (r == 0) {
      add_i64(out, "id", id);
      add_i64(out, "ttl", ttl);
    }
  } else if (strcmp(op, "keepalive") == 0) {
    int64_t ttl;
    r = acme_etcd_lease_keepalive(c, err, &ttl, get_i64(cmd, "id"));
    if (r == 0) add_i64(out, "ttl", ttl);
  } else if (strcmp(op, "revoke") == 0) {
    r = acme_etcd_lease_revoke(c, err, get_i64(cmd, "id"));
  } else if (strcmp(op, "watch") == 0) {
    acme_etcd_watch_free(*w);
    *w = acme_etcd_watch_open(c, err, k, get_i64(cmd, "rev"));
    r = *w ? 0 : -1;
  } else if (strcmp(op, "next") == 0) {
    acme_etcd_event_t *evs = NULL;
    size_t num = 0;
    r = *w ? acme_etcd_watch_next(*w, err, &evs, &num, &rev, (uint64_t)get_i64(cmd, "timeout"))
           : -EINVAL;
    if (r >= 0) {
      static const char *const names[] = {"events", "timeout", "compacted"};
      cJSON_AddStringToObject(out, "result", names[r]);
      cJSON *arr = cJSON_AddArrayToObject(out, "events");
      for (size_t i = 0; i < num; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", evs[i].type == ACME_ETCD_EVENT_PUT ? "PUT" : "DELETE");
        add_kv(o, &evs[i].kv);
        cJSON_AddItemToArray(arr, o);
      }
      acme_etcd_events_free(evs, num);
      add_i64(out, "resume", acme_etcd_watch_revision(*w));
      r = 0;
    }
  } else if (strcmp(op, "unwatch") == 0) {
    acme_etcd_watch_free(*w);
    *w = NULL;
    r = 0;
  } else if (strcmp(op, "endpoint") == 0) {
    cJSON_AddStringToObject(out, "endpoint", acme_etcd_endpoint(c));
    r = 0;
  } else {
    *err = gh_asprintf("unknown op \"%s\"", op);
    r = -EINVAL;
  }
  if (r == 0) add_i64(out, "rev", rev);
  gh_free(kb);
  gh_free(vb);
  gh_free(gb);
  return r;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN); /* as gatehouse does: TLS writes to a closed peer */
  acme_etcd_conf_t conf = {0};
  const char *eps[8];
  char *eplist = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    if (strcmp(a, "--endpoints") == 0) {
      eplist = gh_strdup(v);
      for (char *p = strtok(eplist, ","); p && conf.num_endpoints < 8; p = strtok(NULL, ","))
        eps[conf.num_endpoints++] = p;
      conf.endpoints = eps;
    } else if (strcmp(a, "--ca") == 0) {
      conf.ca = v;
    } else if (strcmp(a, "--cert") == 0) {
      conf.cert = v;
    } else if (strcmp(a, "--key") == 0) {
      conf.key = v;
    } else if (strcmp(a, "--user") == 0) {
      conf.username = v;
    } else if (strcmp(a, "--password") == 0) {
      conf.password = v;
    } else if (strcmp(a, "--timeout") == 0) {
      conf.timeout_ms = strtoull(v, NULL, 10);
    } else {
      fprintf(stderr, "test_etcd: unknown option %s\n", a);
      return 2;
    }
  }
  char *err = NULL;
  acme_etcd_t *c = acme_etcd_new(&err, &conf);
  if (c == NULL) {
    printf("{\"ok\":false,\"err\":\"new\"}\n");
    fprintf(stderr, "test_etcd: %s\n", err);
    gh_free(err);
    gh_free(eplist);
    return 1;
  }
  acme_etcd_watch_t *w = NULL;
  char line[1 << 16];
  while (fgets(line, sizeof(line), stdin) != NULL) {
    cJSON *cmd = cJSON_Parse(line);
    cJSON *out = cJSON_CreateObject();
    err = NULL;
    uint64_t t0 = gh_now_ms();
    int r = cmd ? run(c, &w, cmd, out, &err) : -EINVAL;
    add_i64(out, "ms", (int64_t)(gh_now_ms() - t0));
    cJSON_AddBoolToObject(out, "ok", r == 0);
    if (r != 0) {
      cJSON_AddNumberToObject(out, "code", r);
      cJSON_AddStringToObject(out, "err", err ? err : "(no message)");
    }
    char *text = cJSON_PrintUnformatted(out);
    printf("%s\n", text);
    fflush(stdout);
    cJSON_free(text);
    cJSON_Delete(out);
    cJSON_Delete(cmd);
    gh_free(err);
  }
  acme_etcd_watch_free(w);
  acme_etcd_free(c);
  gh_free(eplist);
  return 0;
}
