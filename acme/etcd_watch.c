/* etcd_watch.c: a watch over the JSON gateway: POST /v3/watch with one
 * {"create_request": ...}; the answer is a chunked stream of JSON
 * messages, each ended by "\n" ({"result": WatchResponse}, or {"error":
 * ...}), read incrementally from the watch's own connection: the first
 * confirms the watch ("created"), the others carry events, progress notes
 * (no events, the header revision moving on) or the cancellation (with
 * "compact_revision" when the start revision was compacted). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "acme/etcd_internal.h"
#include "common/b64.h"

struct acme_etcd_watch {
  acme_etcd_t *c;
  acme__etcd_conn_t conn;
  int64_t next_rev;
  int dead;      /* 0, or the code returned from then on */
  char *dead_msg;
  int64_t compact_rev;
};

static char *watch_body(gh_str_t prefix, int64_t start_revision) {
  cJSON *root = cJSON_CreateObject();
  cJSON *cr = cJSON_AddObjectToObject(root, "create_request");
  char *k = gh_b64_encode((const uint8_t *)prefix.ptr, prefix.len);
  cJSON_AddStringToObject(cr, "key", k);
  gh_free(k);
  uint8_t *end = gh_malloc(prefix.len + 1);
  size_t n = acme__etcd_range_end(end, prefix);
  char *e = gh_b64_encode(end, n);
  cJSON_AddStringToObject(cr, "range_end", e);
  gh_free(e);
  gh_free(end);
  if (start_revision > 0) {
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRId64, start_revision);
    cJSON_AddStringToObject(cr, "start_revision", buf);
  }
  cJSON_AddBoolToObject(cr, "progress_notify", 1);
  char *text = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (text == NULL) abort();
  return text;
}

/* next_msg waits until |deadline| for the next stream message. Returns 0
 * with |*out| to clean up, -ETIMEDOUT, or another negative code with
 * |*out_err| set. */
static int next_msg(acme_etcd_watch_t *w, char **out_err, acme__etcd_watch_msg_t *out,
                    uint64_t deadline) {
  for (;;) {
    char *line;
    size_t len;
    if (acme__etcd_next_line(&line, &len, &w->conn.hr.body)) {
      char *why = NULL;
      int r = acme__etcd_watch_decode(out, &why, line, len);
      gh_free(line);
      if (r == 0) return 0;
      *out_err = acme__etcd_msg(w->c, "watch: %s", why);
      gh_free(why);
      return -EPROTO;
    }
    if (w->conn.hr.msg_done) {
      *out_err = acme__etcd_msg(w->c, "watch: the stream ended");
      return -ECONNRESET;
    }
    int r = acme__etcd_read_more(w->c, &w->conn, out_err, deadline);
    if (r != 0) return r;
  }
}

/* start sends the watch request to the current endpoint and reads the
 * confirmation. Returns 0; or a negative code with |*out_err| and
 * |*out_repeat| (another endpoint may do better). */
static int start(acme_etcd_watch_t *w, char **out_err, int *out_repeat, const char *body) {
  acme_etcd_t *c = w->c;
  uint64_t deadline = gh_now_ms() + c->timeout_ms;
  int sent;
  *out_repeat = 1;
  int r = acme__etcd_send(c, &w->conn, out_err, &sent, "/v3/watch", body, strlen(body), deadline,
                          ACME_ETCD_MAX_RESPONSE);
  if (r == 0) r = acme__etcd_recv(c, &w->conn, out_err, 1, deadline);
  if (r != 0) return r;
  int status = w->conn.hr.status;
  if (status != 200) {
    r = acme__etcd_recv(c, &w->conn, out_err, 0, deadline);
    if (r != 0) return r;
    int code;
    char *m = acme__etcd_error_message(&code, w->conn.hr.body.ptr ? w->conn.hr.body.ptr : "",
                                       w->conn.hr.body.len);
    *out_err = acme__etcd_msg(c, "POST /v3/watch: HTTP %d: %s", status,
                              m ? m : "(no etcd error message)");
    r = acme__etcd_is_auth_error(code, m) ? ACME_ETCD_EAUTH : ACME_ETCD_ESERVER;
    *out_repeat = status >= 500;
    gh_free(m);
    return r;
  }
  acme__etcd_watch_msg_t m;
  r = next_msg(w, out_err, &m, deadline);
  if (r == -ETIMEDOUT) {
    *out_err = acme__etcd_msg(c, "watch: no confirmation within %llu ms",
                              (unsigned long long)c->timeout_ms);
  }
  if (r != 0) return r;
  if (m.error != NULL && !m.canceled) {
    int auth = acme__etcd_is_auth_error(-1, m.error) || strstr(m.error, "auth") != NULL;
    *out_err = acme__etcd_msg(c, "watch refused: %s", m.error);
    r = auth ? ACME_ETCD_EAUTH : ACME_ETCD_ESERVER;
    *out_repeat = 0;
  } else if (!m.created) {
    *out_err = acme__etcd_msg(c, "watch: the first message is not the confirmation");
    r = -EPROTO;
  }
  acme__etcd_watch_msg_cleanup(&m);
  return r;
}

acme_etcd_watch_t *acme_etcd_watch_open(acme_etcd_t *c, char **out_err, gh_str_t prefix,
                                        int64_t start_revision) {
  *out_err = NULL;
  if (prefix.len == 0) {
    *out_err = gh_strdup("etcd: watch needs a prefix");
    return NULL;
  }
  acme_etcd_watch_t *w = gh_calloc(1, sizeof(*w));
  w->c = c;
  w->next_rev = start_revision;
  acme__etcd_conn_init(&w->conn);
  char *body = watch_body(prefix, start_revision);
  httpc_buf_t errs = {0};
  int r = 0, auth_retried = 0;
  for (size_t tries = 0; tries < c->num_eps;) {
    char *e = NULL;
    int repeat = 0;
    if (c->username != NULL && c->token == NULL) {
      r = acme__etcd_authenticate(c, &e);
    } else {
      r = start(w, &e, &repeat, body);
      if (r == 0) break;
      acme__etcd_conn_close(&w->conn);
      if (r == ACME_ETCD_EAUTH && c->username != NULL && !auth_retried) {
        /* Perhaps an expired token: a new one, once. */
        auth_retried = 1;
        gh_free(c->token);
        c->token = NULL;
        gh_free(e);
        continue;
      }
    }
    if (errs.len) httpc_buf_add(&errs, "; ", 2);
    httpc_buf_add(&errs, e, strlen(e));
    gh_free(e);
    if (!repeat) break;
    tries++;
    acme__etcd_rotate(c);
  }
  gh_free(body);
  if (r != 0) {
    *out_err = errs.ptr;
    acme_etcd_watch_free(w);
    return NULL;
  }
  httpc_buf_clear(&errs);
  return w;
}

int acme_etcd_watch_next(acme_etcd_watch_t *w, char **out_err, acme_etcd_event_t **out_events,
                         size_t *out_num, int64_t *out_revision, uint64_t timeout_ms) {
  *out_err = NULL;
  *out_events = NULL;
  *out_num = 0;
  if (w->dead == ACME_ETCD_WATCH_COMPACTED) {
    *out_revision = w->compact_rev;
    return ACME_ETCD_WATCH_COMPACTED;
  }
  if (w->dead != 0) {
    *out_err = gh_strdup(w->dead_msg);
    return w->dead;
  }
  uint64_t deadline = gh_now_ms() + timeout_ms;
  for (;;) {
    acme__etcd_watch_msg_t m;
    char *e = NULL;
    int r = next_msg(w, &e, &m, deadline);
    if (r == -ETIMEDOUT) return ACME_ETCD_WATCH_TIMEOUT;
    if (r == 0 && m.canceled && m.compact_revision > 0) {
      w->dead = ACME_ETCD_WATCH_COMPACTED;
      w->compact_rev = m.compact_revision;
      *out_revision = m.compact_revision;
      acme__etcd_watch_msg_cleanup(&m);
      acme__etcd_conn_close(&w->conn);
      return ACME_ETCD_WATCH_COMPACTED;
    }
    if (r == 0 && (m.canceled || m.error != NULL)) {
      e = acme__etcd_msg(w->c, "watch %s: %s", m.canceled ? "canceled" : "failed",
                         m.error ? m.error : "(no reason given)");
      r = ACME_ETCD_ESERVER;
      acme__etcd_watch_msg_cleanup(&m);
    }
    if (r != 0) {
      w->dead = r;
      w->dead_msg = e;
      acme__etcd_conn_close(&w->conn);
      *out_err = gh_strdup(e);
      return r;
    }
    if (m.created) {
      acme__etcd_watch_msg_cleanup(&m);
      continue;
    }
    if (m.num_events > 0) {
      int64_t last = m.events[m.num_events - 1].kv.mod_revision;
      if (last + 1 > w->next_rev) w->next_rev = last + 1;
    } else if (m.revision + 1 > w->next_rev) {
      w->next_rev = m.revision + 1; /* a progress note */
    }
    *out_events = m.events;
    *out_num = m.num_events;
    *out_revision = m.revision;
    m.events = NULL;
    m.num_events = 0;
    acme__etcd_watch_msg_cleanup(&m);
    return ACME_ETCD_WATCH_EVENTS;
  }
}

int64_t acme_etcd_watch_revision(const acme_etcd_watch_t *w) { return w->next_rev; }

void acme_etcd_watch_free(acme_etcd_watch_t *w) {
  if (w == NULL) return;
  acme__etcd_conn_close(&w->conn);
  gh_free(w->dead_msg);
  gh_free(w);
}
