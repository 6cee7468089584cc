/* admin.c: the admin API server (see admin.h).
 *
 * It runs on the main thread's loop, which otherwise only handles signals
 * and reloads: an admin request never delays a worker, and it reads the
 * current generation, and reloads, without any lock. What needs the ACME
 * engine (renew, revoke) runs on the control thread through
 * px_control_call; the outcome comes back through |async| as a finished
 * job. The admin server owns its jobs from start to end: one still queued
 * when the control thread stops is freed by px_admin_free.
 *
 * Requests are small and bounded (head 8 KiB, body 64 KiB), answered one at
 * a time per connection, in order; the parser pauses at the end of each
 * request until its answer is written.
 *
 * It listens on TCP or on a unix socket (admin.listen "unix:PATH"), and a
 * reload may move it (px_admin_apply): the new socket is bound first, the
 * old one closed after, and connections it accepted finish on their own;
 * each holds a reference to the listener it came from, whose address its
 * Host check uses. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "acme/storage.h"
#include "common/log.h"
#include "proxy/admin.h"
#include "proxy/metrics.h"
#include "proxy/tls.h"
#include "proxy/ui.h"
#include "proxy/upstream.h"

#define MAX_HEAD (8 * 1024)
#define MAX_BODY (64 * 1024)
#define CERTS_CACHE_MS 5000 /* certificates read for /metrics are reused this long */
#define IDLE_MS (30 * 1000) /* a connection that sends nothing this long is closed */
#define MAX_CONNS 64 /* operators and a scraper; more is a client misbehaving */

typedef struct admin_conn admin_conn_t;
typedef struct admin_job admin_job_t;

/* A stream handle of either kind. */
typedef union {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
} admin_stream_t;

/* A listening socket. It is freed when its handle has closed and the last
 * connection it accepted is gone (|refs|). */
typedef struct {
  admin_stream_t s;
  px_admin_t *admin; /* NULL once closed: the admin server may be gone before us */
  int refs;
  char *text;      /* the address as configured ("unix:" and the resolved path) */
  char *host;      /* TCP: its host part, "" for a wildcard */
  uint16_t port;
  int loopback;
  char *unix_path; /* unix: removed at close, if it is still our socket */
  dev_t dev;
  ino_t ino;
} admin_listener_t;

typedef enum { JOB_RENEW, JOB_REVOKE } job_kind_t;

/* A request for the control thread. Fields above |status| are written on
 * the main thread before posting; the control thread writes the outcome,
 * then hands the job back under admin->mu. */
struct admin_job {
  gh_link_t link;          /* admin->jobs; main thread */
  admin_job_t *next_done;  /* admin->done; under admin->mu */
  px_admin_t *admin;
  admin_conn_t *conn;      /* waiting for the answer (revoke); main thread */
  job_kind_t kind;
  px_gen_t *gen;           /* keeps |site| alive */
  const conf_site_t *site; /* renew a managed site; NULL: an on-demand name */
  char **names;            /* renew: the names to order, the first is the storage name */
  size_t num_names;
  acme_cert_t *cert;       /* revoke: the stored certificate */
  int reason;
  px_control_t *ctl;       /* control thread only */
  int status;
  char *err;
};

struct admin_conn {
  admin_stream_t s;
  uv_timer_t idle;
  int handles_open;
  px_admin_t *admin;
  admin_listener_t *listener; /* the one that accepted it (a reference) */
  gh_link_t link;
  llhttp_t parser;
  px_buf_t in; /* received, not yet parsed */
  px_buf_t url, body, field, value;
  char *host, *auth;
  int in_value;
  size_t head_bytes;
  int complete; /* a request is parsed and being answered */
  int pumping;
  int closing;
  int keep_alive;
  int too_big; /* 431 or 413 */
  admin_job_t *job;
};

/* A certificate as the admin API lists it. */
typedef struct {
  char *name;
  acme_cert_t *cert;
  char *meta;
  const char *source;
  char *version; /* the stored bundle's (acme_storage_cert_version); NULL: static, or untold */
} entry_t;

typedef struct {
  entry_t *v;
  size_t num;
} entries_t;

struct px_admin {
  uv_loop_t *loop;
  admin_listener_t *listener; /* NULL while the config has no "admin" */
  uv_async_t async;
  px_admin_env_t env;
  int stopping;
  gh_link_t conns;
  size_t num_conns;
  gh_link_t jobs;
  pthread_mutex_t mu;
  admin_job_t *done; /* under mu */
  llhttp_settings_t settings;
  entries_t certs; /* the certificates /certs or /metrics read last, at certs_at_ms */
  uint64_t certs_at_ms;
  int certs_valid;
};

/* ---- responses ---- */

typedef struct {
  uv_write_t req;
  admin_conn_t *conn;
  int close;
  size_t len;
  char data[];
} admin_write_t;

static void conn_close(admin_conn_t *c);
static void pump(admin_conn_t *c);
static void listener_unref(admin_listener_t *l);

static const char *reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 431: return "Request Header Fields Too Large";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

static void on_written(uv_write_t *req, int status) {
  admin_write_t *wr = (admin_write_t *)req;
  admin_conn_t *c = wr->conn;
  int close = wr->close || status < 0;
  gh_free(wr);
  if (close) conn_close(c);
}

/* finish_request forgets the answered request and goes on with the next
 * one, if its bytes are already here. */
static void finish_request(admin_conn_t *c) {
  c->url.len = c->body.len = c->field.len = c->value.len = 0;
  gh_free(c->host);
  c->host = NULL;
  gh_free(c->auth);
  c->auth = NULL;
  c->in_value = 0;
  c->head_bytes = 0;
  c->complete = 0;
  llhttp_resume(&c->parser);
  pump(c);
}

/* respond_with answers with |body|, its |type| and the header lines
 * |extra| ("" or lines each ending in CRLF). */
static void respond_with(admin_conn_t *c, int status, const char *type, const char *extra,
                         const char *body, size_t len) {
  if (c->closing) return;
  int close = !c->keep_alive || c->admin->stopping;
  char head[1024];
  int n = snprintf(head, sizeof(head),
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n%s"
                   "Connection: %s\r\n\r\n",
                   status, reason_phrase(status), type, len, extra,
                   close ? "close" : "keep-alive");
  if (n < 0 || (size_t)n >= sizeof(head)) n = 0; /* |extra| is ours: never */
  admin_write_t *wr = gh_malloc(sizeof(*wr) + (size_t)n + len);
  wr->conn = c;
  wr->close = close;
  wr->len = (size_t)n + len;
  memcpy(wr->data, head, (size_t)n);
  if (len) memcpy(wr->data + n, body, len);
  uv_buf_t b = uv_buf_init(wr->data, (unsigned)wr->len);
  if (uv_write(&wr->req, &c->s.stream, &b, 1, on_written) != 0) {
    gh_free(wr);
    conn_close(c);
    return;
  }
  if (!close) finish_request(c);
}

static void respond(admin_conn_t *c, int status, const char *type, const char *body, size_t len) {
  respond_with(c, status, type, "", body, len);
}

/* respond_json answers with |json| (taking it). */
static void respond_json(admin_conn_t *c, int status, cJSON *json) {
  char *s = cJSON_PrintUnformatted(json);
  cJSON_Delete(json);
  size_t len = strlen(s);
  char *body = gh_malloc(len + 2);
  memcpy(body, s, len);
  body[len] = '\n';
  cJSON_free(s);
  respond(c, status, "application/json", body, len + 1);
  gh_free(body);
}

static void respond_error(admin_conn_t *c, int status, const char *msg) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "error", msg);
  respond_json(c, status, o);
}

/* ---- certificates ---- */


/* managed_site returns the site of |conf| whose certificate is stored
 * under |name| (its first host, no static files), or NULL. */
static const conf_site_t *managed_site(const conf_t *conf, const char *name) {
  for (size_t i = 0; i < conf->num_sites; i++) {
    const conf_site_t *s = &conf->sites[i];
    if (s->cert_file == NULL && s->num_hosts > 0 && strcmp(s->hosts[0], name) == 0 &&
        strcmp(s->hosts[0], "*") != 0)
      return s;
  }
  return NULL;
}

/* clean_text returns |s| as text a browser can show (gh_text_clean): it
 * may come from a CA, a certificate, a client or an upstream. */
static cJSON *clean_text(const char *s) {
  char *t = gh_text_clean(gh_strdup(s));
  cJSON *v = cJSON_CreateString(t);
  gh_free(t);
  return v;
}

static void add_text(cJSON *o, const char *key, const char *s) {
  cJSON_AddItemToObject(o, key, clean_text(s));
}

static const char *meta_string(const cJSON *meta, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, key);
  return cJSON_IsString(v) && v->valuestring != NULL ? v->valuestring : NULL;
}

static const char *const renew_sources[] = {"lifetime", "ari", "retry", "revoked", "fleet"};

/* cert_json describes |cert| stored (or configured) as |name|; |view| is
 * its renewal as the control thread schedules it (NULL: it follows none),
 * |renewing| says an order the admin API started for it is running. */
static cJSON *cert_json(const char *name, const acme_cert_t *cert, const char *meta_text,
                        const char *source, const acme_renewal_view_t *view, int renewing) {
  cJSON *meta = meta_text ? cJSON_Parse(meta_text) : NULL;
  if (meta != NULL && !cJSON_IsObject(meta)) {
    cJSON_Delete(meta);
    meta = NULL;
  }
  cJSON *o = cJSON_CreateObject();
  char t[32];
  cJSON_AddStringToObject(o, "name", name);
  add_text(o, "issuer", cert->issuer_cn ? cert->issuer_cn : "");
  char *serial = acme_cert_serial_hex(cert);
  cJSON_AddStringToObject(o, "serial", serial ? serial : "");
  gh_free(serial);
  gh_format_time(t, sizeof(t), cert->not_before);
  cJSON_AddStringToObject(o, "not_before", t);
  gh_format_time(t, sizeof(t), cert->not_after);
  cJSON_AddStringToObject(o, "not_after", t);
  /* The renewal state the control thread keeps in meta.json (acme
   * renewal.c): after a failure, the next attempt and the error. */
  const cJSON *state = cJSON_GetObjectItemCaseSensitive(meta, "renewal");
  if (!cJSON_IsObject(state)) state = NULL;
  const char *renew = meta_string(state, "next_retry");
  const cJSON *revoked = cJSON_GetObjectItemCaseSensitive(state, "revoked");
  if (view != NULL && strcmp(source, "static") != 0) {
    /* The schedule itself: ARI's window, the lifetime, a back-off. */
    cJSON_AddStringToObject(o, "renewal_time", gh_format_time(t, sizeof(t), view->due));
    cJSON_AddStringToObject(o, "renewal_source", renew_sources[view->source]);
    if (view->ari_start != 0) {
      cJSON *w = cJSON_AddObjectToObject(o, "ari_window");
      cJSON_AddStringToObject(w, "start", gh_format_time(t, sizeof(t), view->ari_start));
      cJSON_AddStringToObject(w, "end", gh_format_time(t, sizeof(t), view->ari_end));
    } else {
      cJSON_AddNullToObject(o, "ari_window");
    }
    renewing = renewing || view->ordering;
  } else if (strcmp(source, "static") == 0) {
    cJSON_AddNullToObject(o, "renewal_time");
    cJSON_AddNullToObject(o, "renewal_source");
    cJSON_AddNullToObject(o, "ari_window");
  } else {
    /* Not followed by this process (an on-demand name not asked for
     * since the start, or no control thread): what the stored state
     * says, else the time the scheduler computes, before jitter. */
    if (renew != NULL) {
      cJSON_AddStringToObject(o, "renewal_time", renew);
    } else {
      gh_format_time(t, sizeof(t), acme_renewal_nominal(cert->not_before, cert->not_after));
      cJSON_AddStringToObject(o, "renewal_time", t);
    }
    cJSON_AddStringToObject(o, "renewal_source",
                            renew != NULL ? "retry" : cJSON_IsTrue(revoked) ? "revoked" : "lifetime");
    cJSON_AddNullToObject(o, "ari_window");
  }
  cJSON_AddBoolToObject(o, "renewing", renewing);
  const char *last_error = meta_string(state, "last_error");
  if (last_error == NULL || last_error[0] == '\0') last_error = meta_string(meta, "last_error");
  if (last_error != NULL && last_error[0] != '\0') {
    add_text(o, "last_error", last_error);
  } else {
    cJSON_AddNullToObject(o, "last_error");
  }
  const cJSON *failures = cJSON_GetObjectItemCaseSensitive(state, "failures");
  cJSON_AddNumberToObject(o, "renewal_failures",
                          cJSON_IsNumber(failures) ? failures->valuedouble : 0);
  cJSON *sans = cJSON_AddArrayToObject(o, "sans");
  for (size_t k = 0; k < cert->num_sans; k++)
    cJSON_AddItemToArray(sans, clean_text(cert->sans[k]));
  cJSON_AddStringToObject(o, "source", source);
  /* Which CA issued it, and under which profile (meta.json, acme/order.c). */
  const char *ca = meta_string(meta, "ca"), *profile = meta_string(meta, "profile");
  if (ca != NULL) cJSON_AddStringToObject(o, "ca", ca);
  else cJSON_AddNullToObject(o, "ca");
  if (profile != NULL) cJSON_AddStringToObject(o, "profile", profile);
  else cJSON_AddNullToObject(o, "profile");
  cJSON_Delete(meta);
  return o;
}

static void entries_free(entries_t *es) {
  for (size_t i = 0; i < es->num; i++) {
    gh_free(es->v[i].name);
    acme_cert_unref(es->v[i].cert);
    gh_free(es->v[i].meta);
    gh_free(es->v[i].version);
  }
  gh_free(es->v);
  es->v = NULL;
  es->num = 0;
}

/* entries_add appends an entry taking |cert|, |meta| and |version|. */
static void entries_add(entries_t *es, const char *name, acme_cert_t *cert, char *meta,
                        const char *source, char *version) {
  es->v = gh_realloc(es->v, (es->num + 1) * sizeof(*es->v));
  es->v[es->num++] = (entry_t){gh_strdup(name), cert, meta, source, version};
}

/* known_find returns |prev|'s entry for the stored |name| if it was read
 * at |version|, else NULL. Names are asked for in sorted order, as the
 * store lists them, and |*k| walks |prev| once for a whole listing. */
static const entry_t *known_find(const entries_t *prev, size_t *k, const char *name,
                                 const char *version) {
  while (*k < prev->num &&
         (prev->v[*k].version == NULL || strcmp(prev->v[*k].name, name) < 0))
    (*k)++;
  if (*k < prev->num && strcmp(prev->v[*k].name, name) == 0 &&
      strcmp(prev->v[*k].version, version) == 0)
    return &prev->v[*k];
  return NULL;
}

/* collect gathers the static certificates of |conf| and what storage
 * holds (only with ACME on: opening storage creates its directory), or
 * only |only| when it is set. A stored certificate |prev| (the last
 * listing, or NULL) holds at the version stored now is reused instead of
 * read again: an on-demand server holds thousands, and a dashboard looks
 * every few seconds. Returns 0, or -1 with |*out_err| set. */
static int collect(entries_t *out, char **out_err, const conf_t *conf, const char *only,
                   const entries_t *prev) {
  for (size_t i = 0; i < conf->num_sites; i++) {
    const conf_site_t *s = &conf->sites[i];
    if (s->cert_file == NULL || s->num_hosts == 0) continue;
    if (only != NULL && strcmp(s->hosts[0], only) != 0) continue;
    char *err = NULL;
    acme_cert_t *cert = acme_cert_load_chain(&err, s->cert_file);
    if (cert == NULL) {
      GH_WARN("admin", "%s", err);
      gh_free(err);
      continue;
    }
    entries_add(out, s->hosts[0], cert, NULL, "static", NULL);
  }
  if (!conf_acme_on(conf)) return 0;
  /* The storage directory: in a fleet, the local copy the watch keeps
   * current, so the admin API costs etcd nothing and answers while it is
   * away. */
  acme_storage_t *st = acme_storage_open(out_err, conf->storage);
  if (st == NULL) return -1;
  char **names = NULL;
  size_t num_names = 0;
  if (only != NULL) {
    names = gh_calloc(1, sizeof(char *));
    names[0] = gh_strdup(only);
    num_names = 1;
  } else if (acme_storage_cert_list(st, &names, &num_names, out_err) != 0) {
    acme_storage_free(st);
    return -1;
  }
  size_t k = 0;
  for (size_t i = 0; i < num_names; i++) {
    const char *source = managed_site(conf, names[i]) ? "managed" : "on-demand";
    char *version = NULL;
    const entry_t *known = NULL;
    if (acme_storage_cert_version(st, &version, names[i]) == 0 && prev != NULL)
      known = known_find(prev, &k, names[i], version);
    if (known != NULL) {
      entries_add(out, names[i], acme_cert_ref(known->cert),
                  known->meta ? gh_strdup(known->meta) : NULL, source, version);
      continue;
    }
    /* Read after the version: if a writer moves it in between, this
     * entry is a newer bundle under an older version, read again next
     * time. */
    acme_cert_t *cert = NULL;
    char *meta = NULL, *err = NULL;
    int rc = acme_storage_cert_peek(st, &cert, &meta, &err, names[i]);
    if (rc != 0) {
      if (rc != -ENOENT && rc != -EINVAL) GH_WARN("admin", "%s", err);
      gh_free(err);
      gh_free(version);
      continue;
    }
    entries_add(out, names[i], cert, meta, source, version);
  }
  acme_storage_names_free(names, num_names);
  acme_storage_free(st);
  return 0;
}

static const conf_t *conf_now(px_admin_t *a) { return (*a->env.gen)->conf; }

static int renewing_now(px_admin_t *a, const char *name);

/* running_engine and manager return the control thread's, while it runs,
 * or NULL. */
static acme_engine_t *running_engine(px_admin_t *a) {
  px_control_t *ctl = a->env.control ? *a->env.control : NULL;
  return ctl != NULL ? px_control_engine(ctl) : NULL;
}

static acme_manager_t *manager(px_admin_t *a) {
  return running_engine(a) != NULL ? px_control_manager(*a->env.control) : NULL;
}

/* entry_json describes |e| with its renewal schedule |view| (NULL: the
 * control thread follows none). */
static cJSON *entry_json(px_admin_t *a, const entry_t *e, const acme_renewal_view_t *view) {
  return cert_json(e->name, e->cert, e->meta, e->source, view, renewing_now(a, e->name));
}

static int named_find(const void *key, const void *elem) {
  return strcmp(key, ((const acme_renewal_named_t *)elem)->name);
}

static void get_certs(admin_conn_t *c, const char *only) {
  px_admin_t *a = c->admin;
  entries_t es = {0};
  char *err = NULL;
  if (collect(&es, &err, conf_now(a), only, only == NULL ? &a->certs : NULL) != 0) {
    entries_free(&es); /* the static ones it had read */
    respond_error(c, 503, err);
    gh_free(err);
    return;
  }
  if (only != NULL) {
    acme_renewal_view_t view;
    acme_manager_t *m = manager(a);
    if (es.num == 0) {
      respond_error(c, 404, "no such certificate");
    } else {
      int have = m != NULL && acme_manager_renewal_view(m, es.v[0].name, &view) == 0;
      respond_json(c, 200, entry_json(a, &es.v[0], have ? &view : NULL));
    }
    entries_free(&es);
    return;
  }
  /* Every schedule at once, looked up by name: a listing of thousands
   * takes the manager's lock once. */
  acme_renewal_named_t *views = NULL;
  size_t num_views = 0;
  acme_manager_renewal_views(manager(a), &views, &num_views);
  cJSON *arr = cJSON_CreateArray();
  for (size_t i = 0; i < es.num; i++) {
    const acme_renewal_named_t *v =
        num_views > 0 ? bsearch(es.v[i].name, views, num_views, sizeof(*views), named_find) : NULL;
    cJSON_AddItemToArray(arr, entry_json(a, &es.v[i], v ? &v->view : NULL));
  }
  acme_renewal_views_free(views, num_views);
  /* The next look, and /metrics, start from this one. */
  entries_free(&a->certs);
  a->certs = es;
  a->certs_at_ms = uv_now(a->loop);
  a->certs_valid = 1;
  respond_json(c, 200, arr);
}

/* ---- jobs on the control thread ---- */

static void job_free(admin_job_t *job) {
  gh_list_remove(&job->link);
  for (size_t i = 0; i < job->num_names; i++) gh_free(job->names[i]);
  gh_free(job->names);
  acme_cert_unref(job->cert);
  px_gen_unref(job->gen);
  gh_free(job->err);
  gh_free(job);
}

/* job_finish hands |job| back to the main loop. Control thread. */
static void job_finish(admin_job_t *job, int status, const char *err) {
  px_admin_t *a = job->admin;
  job->status = status;
  job->err = status != 0 ? gh_strdup(err ? err : uv_strerror(status)) : NULL;
  pthread_mutex_lock(&a->mu);
  job->next_done = a->done;
  a->done = job;
  pthread_mutex_unlock(&a->mu);
  uv_async_send(&a->async);
}

static void on_renewed(void *arg, int status, const char *err, acme_cert_t *cert) {
  admin_job_t *job = arg;
  if (status == 0) {
    acme_cache_t *cache = px_control_cache(job->ctl);
    if (job->site != NULL) {
      acme_cache_install_site(cache, job->site, cert);
    } else {
      acme_cache_install_name(cache, job->names[0], cert,
                              job->gen->conf->on_demand.cache_capacity);
    }
    /* The renewal scheduler goes on from the new certificate. */
    acme_manager_t *manager = px_control_manager(job->ctl);
    if (manager != NULL) acme_manager_cert_renewed(manager, job->names[0], cert);
  }
  job_finish(job, status, err);
}

static void on_revoked(void *arg, int status, const char *err) {
  admin_job_t *job = arg;
  /* Recorded in meta.json, and renewed at once by the scheduler. */
  acme_manager_t *manager = px_control_manager(job->ctl);
  if (status == 0 && manager != NULL) acme_manager_cert_revoked(manager, job->names[0]);
  job_finish(job, status, err);
}

static void job_run(px_control_t *ctl, void *arg) {
  admin_job_t *job = arg;
  job->ctl = ctl;
  acme_engine_t *engine = px_control_engine(ctl);
  int rc = UV_ECANCELED;
  if (engine != NULL && job->kind == JOB_RENEW) {
    /* In a fleet it names the certificate it replaces: a newer one another
     * node stored meanwhile then does instead, and only a renewal of the
     * current one is ordered (the order says which, ARI's "replaces"). */
    acme_storage_t *st = px_control_storage(ctl);
    acme_cert_t *current = NULL;
    char *err = NULL;
    if (acme_storage_shared(st) &&
        acme_storage_cert_load(st, &current, NULL, &err, job->names[0]) != 0) {
      acme_cert_unref(current);
      current = NULL;
    }
    gh_free(err);
    rc = acme_engine_renew(engine, (const char *const *)job->names, job->num_names, current,
                           on_renewed, job);
    acme_cert_unref(current);
  } else if (engine != NULL) {
    rc = acme_engine_revoke(engine, job->cert, job->reason, on_revoked, job);
  }
  if (rc != 0) job_finish(job, rc, NULL);
}

/* on_jobs_done runs on the main loop: answers and frees finished jobs. */
static void on_jobs_done(uv_async_t *h) {
  px_admin_t *a = h->data;
  pthread_mutex_lock(&a->mu);
  admin_job_t *list = a->done;
  a->done = NULL;
  pthread_mutex_unlock(&a->mu);
  while (list) {
    admin_job_t *job = list;
    list = job->next_done;
    const char *name = job->names[0];
    const char *what = job->kind == JOB_RENEW ? "renewal" : "revocation";
    if (job->status == 0) {
      GH_INFO("admin", "%s: %s done", name, what);
    } else {
      GH_ERROR("admin", "%s: %s failed: %s", name, what, job->err);
    }
    admin_conn_t *c = job->conn;
    if (c != NULL) {
      c->job = NULL;
      uv_timer_again(&c->idle);
      if (job->status == 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "status", "revoked");
        cJSON_AddStringToObject(o, "name", name);
        respond_json(c, 200, o);
      } else {
        respond_error(c, 502, job->err);
      }
    }
    job_free(job);
  }
}

static admin_job_t *job_new(px_admin_t *a, job_kind_t kind) {
  admin_job_t *job = gh_calloc(1, sizeof(*job));
  job->admin = a;
  job->kind = kind;
  job->gen = px_gen_ref(*a->env.gen);
  gh_list_insert(&a->jobs, &job->link);
  return job;
}

/* control returns the control thread to post to, or answers and returns
 * NULL. */
static px_control_t *control(admin_conn_t *c) {
  px_control_t *ctl = c->admin->env.control ? *c->admin->env.control : NULL;
  if (ctl == NULL || c->admin->stopping) {
    respond_error(c, 409, c->admin->stopping ? "stopping" : "ACME is off (no acme.directory or acme.issuers)");
    return NULL;
  }
  return ctl;
}

static acme_cert_t *stored_cert(admin_conn_t *c, const char *name) {
  const conf_t *conf = conf_now(c->admin);
  char *err = NULL;
  acme_cert_t *cert = NULL;
  acme_storage_t *st = acme_storage_open(&err, conf->storage); /* see collect */
  int rc = st ? acme_storage_cert_load(st, &cert, NULL, &err, name) : -EIO;
  acme_storage_free(st);
  if (rc != 0) {
    respond_error(c, rc == -ENOENT || rc == -EINVAL ? 404 : 503, err ? err : "storage");
    gh_free(err);
    return NULL;
  }
  return cert;
}

static void post_renew(admin_conn_t *c, const char *name) {
  px_control_t *ctl = control(c);
  if (ctl == NULL) return;
  const conf_t *conf = conf_now(c->admin);
  const conf_site_t *site = managed_site(conf, name);
  acme_cert_t *cert = NULL;
  if (site == NULL && (cert = stored_cert(c, name)) == NULL) return;
  admin_job_t *job = job_new(c->admin, JOB_RENEW);
  job->site = site;
  size_t n = site ? site->num_hosts : cert->num_sans + 1;
  job->names = gh_calloc(n, sizeof(char *));
  job->names[job->num_names++] = gh_strdup(name);
  for (size_t i = 0; site != NULL && i < site->num_hosts; i++) {
    if (strcmp(site->hosts[i], name) != 0) job->names[job->num_names++] = gh_strdup(site->hosts[i]);
  }
  for (size_t i = 0; cert != NULL && i < cert->num_sans; i++) {
    if (strcmp(cert->sans[i], name) != 0) job->names[job->num_names++] = gh_strdup(cert->sans[i]);
  }
  acme_cert_unref(cert);
  GH_INFO("admin", "%s: renewal requested", name);
  px_control_call(ctl, job_run, job);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "status", "renewing");
  cJSON_AddStringToObject(o, "name", name);
  respond_json(c, 202, o);
}

/* RFC 5280 5.3.1 reasons a subscriber may give (RFC 8555 7.6). */
static int parse_reason(const cJSON *v) {
  static const char *const names[] = {"unspecified", "keyCompromise", "cACompromise",
                                      "affiliationChanged", "superseded",
                                      "cessationOfOperation", "certificateHold", NULL,
                                      "removeFromCRL", "privilegeWithdrawn", "aACompromise"};
  if (v == NULL) return 0;
  if (cJSON_IsNumber(v)) {
    double d = v->valuedouble;
    if (d < 0 || d > 10 || d == 7 || d != (double)(int)d) return -1;
    return (int)d;
  }
  if (cJSON_IsString(v) && v->valuestring != NULL) {
    for (int i = 0; i < (int)GH_ARRAY_LEN(names); i++) {
      if (names[i] != NULL && strcmp(names[i], v->valuestring) == 0) return i;
    }
  }
  return -1;
}

static void post_revoke(admin_conn_t *c, const char *name) {
  int reason = 0;
  if (c->body.len > 0) {
    cJSON *body = cJSON_ParseWithLength(c->body.p, c->body.len);
    if (body == NULL || !cJSON_IsObject(body) ||
        (reason = parse_reason(cJSON_GetObjectItemCaseSensitive(body, "reason"))) < 0) {
      cJSON_Delete(body);
      respond_error(c, 400, "the body must be {\"reason\": a CRL reason code 0-10 except 7, "
                            "or its name such as \"keyCompromise\"}");
      return;
    }
    cJSON_Delete(body);
  }
  px_control_t *ctl = control(c);
  if (ctl == NULL) return;
  acme_cert_t *cert = stored_cert(c, name);
  if (cert == NULL) return;
  admin_job_t *job = job_new(c->admin, JOB_REVOKE);
  job->names = gh_calloc(1, sizeof(char *));
  job->names[job->num_names++] = gh_strdup(name);
  job->cert = cert;
  job->reason = reason;
  job->conn = c;
  c->job = job;
  GH_INFO("admin", "%s: revocation requested (reason %d)", name, reason);
  px_control_call(ctl, job_run, job);
}

/* delete_cert evicts |name| from the current certificate table: an
 * on-demand name reloads from storage at its next handshake. */
static void delete_cert(admin_conn_t *c, const char *name) {
  px_gen_t *gen = *c->admin->env.gen;
  if (managed_site(gen->conf, name) != NULL) {
    respond_error(c, 409, "a managed site's certificate stays in memory; renew it instead");
    return;
  }
  for (size_t i = 0; i < gen->conf->num_sites; i++) {
    const conf_site_t *s = &gen->conf->sites[i];
    if (s->cert_file != NULL && s->num_hosts > 0 && strcmp(s->hosts[0], name) == 0) {
      respond_error(c, 409, "a static certificate comes from the config; edit it and reload");
      return;
    }
  }
  acme_cert_table_t *table = px_tls_ctx_table(gen->ssl_ctx);
  acme_cert_t *cert = table ? acme_cert_table_get(table, name, strlen(name)) : NULL;
  int exact = 0;
  for (size_t i = 0; cert != NULL && i < cert->num_sans && !exact; i++)
    exact = strcmp(cert->sans[i], name) == 0;
  acme_cert_unref(cert);
  if (!exact) {
    respond_error(c, 404, "not in memory");
    return;
  }
  acme_cert_table_put(table, name, NULL);
  /* Also from the list a reload re-installs from. */
  px_control_t *ctl = c->admin->env.control ? *c->admin->env.control : NULL;
  if (ctl != NULL) acme_cache_evict_name(px_control_cache(ctl), name);
  GH_INFO("admin", "%s: evicted from memory", name);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "status", "evicted");
  cJSON_AddStringToObject(o, "name", name);
  respond_json(c, 200, o);
}

static void post_reload(admin_conn_t *c) {
  px_admin_t *a = c->admin;
  char *err = NULL;
  if (a->env.reload(a->env.reload_arg, &err) == 0) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "reloaded");
    respond_json(c, 200, o);
    return;
  }
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "status", "refused");
  cJSON *errors = cJSON_AddArrayToObject(o, "errors");
  char *save = NULL;
  for (char *line = strtok_r(err, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
    cJSON_AddItemToArray(errors, cJSON_CreateString(line));
  gh_free(err);
  respond_json(c, 422, o);
}

/* renewal_failures reads "renewal": {"failures": N} from |meta_text|. */
static unsigned renewal_failures(const char *meta_text) {
  cJSON *meta = meta_text ? cJSON_Parse(meta_text) : NULL;
  const cJSON *state = cJSON_GetObjectItemCaseSensitive(meta, "renewal");
  const cJSON *n = cJSON_GetObjectItemCaseSensitive(state, "failures");
  unsigned out = cJSON_IsNumber(n) && n->valuedouble > 0 ? (unsigned)n->valuedouble : 0;
  cJSON_Delete(meta);
  return out;
}

static void get_metrics(admin_conn_t *c) {
  px_admin_t *a = c->admin;
  px_metrics_src_t src = {.workers = a->env.workers, .num_workers = a->env.num_workers,
                          .gen = *a->env.gen, .num_paused = -1,
                          .log_dropped = gh_log_dropped()};
  px_metrics_ondemand_t od = {0};
  if (a->env.ondemand != NULL) {
    size_t paused = 0;
    px_ondemand_stats(a->env.ondemand, &paused, &od.allowed, &od.refused);
    px_ondemand_policy_stats(a->env.ondemand, &od.policy);
    src.num_paused = (long)paused;
    src.ondemand = &od;
  }
  acme_engine_t *engine = running_engine(a);
  acme_ca_stats_t cas[ACME_MAX_CAS];
  if (engine != NULL) {
    src.num_cas = acme_engine_ca_stats(engine, cas, ACME_MAX_CAS);
    src.cas = cas;
  }
  acme_fleet_stats_t fleet_stats;
  acme_storage_fleet_stats(&fleet_stats);
  if (fleet_stats.enabled) src.fleet = &fleet_stats;
  /* Reading every stored certificate costs disk reads and parsing: a
   * scraper polling every second reuses the last look for a few seconds. */
  uint64_t now = uv_now(a->loop);
  if (!a->certs_valid || now - a->certs_at_ms >= CERTS_CACHE_MS) {
    entries_t es = {0};
    char *err = NULL;
    if (collect(&es, &err, conf_now(a), NULL, &a->certs) != 0) {
      GH_WARN("admin", "metrics: %s", err);
      gh_free(err);
    }
    entries_free(&a->certs);
    a->certs = es;
    a->certs_valid = 1;
    a->certs_at_ms = now;
  }
  const entries_t *es = &a->certs;
  px_metrics_cert_t *certs = gh_calloc(es->num ? es->num : 1, sizeof(*certs));
  for (size_t i = 0; i < es->num; i++) {
    certs[i] = (px_metrics_cert_t){es->v[i].name, es->v[i].cert->not_after,
                                   renewal_failures(es->v[i].meta)};
  }
  src.certs = certs;
  src.num_certs = es->num;
  size_t len = 0;
  char *text = px_metrics_render(&len, &src);
  gh_free(certs);
  respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
  gh_free(text);
}

/* ---- routing ---- */

/* host_ok reports whether the Host header |h| names the admin address
 * |a|: its host:port as configured, or a loopback name with its port when
 * it listens on loopback (or everywhere).
 *
 * On a unix socket any Host is accepted, none included. The check is a
 * defence against DNS rebinding: a browser page that makes a victim's
 * browser send requests to a TCP address under the attacker's name. No
 * browser connects to a unix socket, and every process that can is
 * already allowed to by the socket file's permissions and could send any
 * Host it likes; clients such as curl --unix-socket send "localhost", and
 * others the name of their choosing. */
static int host_ok(const admin_listener_t *a, const char *h) {
  if (a->unix_path != NULL) return 1;
  if (h == NULL) return 0;
  const char *host = h, *port = NULL;
  size_t host_len;
  if (h[0] == '[') {
    const char *end = strchr(h, ']');
    if (end == NULL) return 0;
    host = h + 1;
    host_len = (size_t)(end - host);
    if (end[1] == ':') port = end + 2;
    else if (end[1] != '\0') return 0;
  } else {
    const char *colon = strrchr(h, ':');
    host_len = colon ? (size_t)(colon - h) : strlen(h);
    if (colon) port = colon + 1;
  }
  char want[8];
  snprintf(want, sizeof(want), "%u", (unsigned)a->port);
  if (port == NULL ? a->port != 80 : strcmp(port, want) != 0) return 0;
  if (a->host[0] != '\0' && strlen(a->host) == host_len && strncasecmp(a->host, host, host_len) == 0)
    return 1;
  if (!a->loopback && a->host[0] != '\0') return 0;
  static const char *const loop_names[] = {"localhost", "127.0.0.1", "::1"};
  for (size_t i = 0; i < GH_ARRAY_LEN(loop_names); i++) {
    if (strlen(loop_names[i]) == host_len && strncasecmp(loop_names[i], host, host_len) == 0)
      return 1;
  }
  return 0;
}

/* token_ok compares the Authorization header with "Bearer TOKEN" in
 * constant time (over digests, so the length leaks nothing either). */
static int token_ok(const char *token, const char *auth) {
  if (token == NULL) return 1;
  if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0) return 0;
  uint8_t a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
  SHA256((const uint8_t *)auth + 7, strlen(auth + 7), a);
  SHA256((const uint8_t *)token, strlen(token), b);
  return CRYPTO_memcmp(a, b, sizeof(a)) == 0;
}

/* cert_name checks a NAME taken from the path: a lower-case DNS name, or
 * a wildcard. */
static int cert_name_ok(const char *s, size_t len) {
  if (len == 0 || len > 253) return 0;
  for (size_t i = 0; i < len; i++) {
    char ch = s[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' ||
          (ch == '*' && i == 0)))
      return 0;
  }
  return 1;
}

/* get_health answers 200 {"status":"ok"}, or 503 {"status":"stalled",
 * "stalled_workers":[ID...]} when a worker's loop has not turned for
 * PX_STALL_MS: the process is up but cannot serve, which is what a
 * container health check has to notice. */
static void get_health(admin_conn_t *c) {
  px_admin_t *a = c->admin;
  uint64_t now = gh_now_ms();
  cJSON *stalled = cJSON_CreateArray();
  for (unsigned i = 0; i < a->env.num_workers; i++) {
    px_worker_t *w = a->env.workers[i];
    uint64_t beat = atomic_load_explicit(&w->beat_ms, memory_order_relaxed);
    if (now > beat && now - beat >= PX_STALL_MS) {
      cJSON_AddItemToArray(stalled, cJSON_CreateNumber(w->id));
    }
  }
  cJSON *o = cJSON_CreateObject();
  int ok = cJSON_GetArraySize(stalled) == 0;
  cJSON_AddStringToObject(o, "status", ok ? "ok" : "stalled");
  if (ok) {
    cJSON_Delete(stalled);
  } else {
    cJSON_AddItemToObject(o, "stalled_workers", stalled);
  }
  respond_json(c, ok ? 200 : 503, o);
}

/* get_ondemand answers the on-demand state: on or off, handshakes paused
 * now, and the last refused names with why (the allow list, the negative
 * cache, ask, a rate limit, a failed order), newest first. */
static void get_ondemand(admin_conn_t *c) {
  px_admin_t *a = c->admin;
  cJSON *o = cJSON_CreateObject();
  px_ondemand_t *od = a->env.ondemand;
  cJSON_AddBoolToObject(o, "enabled", od != NULL && px_ondemand_enabled(od));
  size_t paused = 0;
  uint64_t allowed = 0, refused = 0;
  if (od != NULL) px_ondemand_stats(od, &paused, &allowed, &refused);
  cJSON_AddNumberToObject(o, "paused_handshakes", (double)paused);
  cJSON_AddNumberToObject(o, "allowed", (double)allowed);
  cJSON_AddNumberToObject(o, "refused", (double)refused);
  /* The ask endpoint's side of the decisions. */
  acme_policy_stats_t ps = {0};
  if (od != NULL) px_ondemand_policy_stats(od, &ps);
  cJSON *ask = cJSON_AddObjectToObject(o, "ask");
  cJSON_AddNumberToObject(ask, "requests", (double)ps.ask_requests);
  cJSON_AddNumberToObject(ask, "cache_hits", (double)ps.ask_cache_hits);
  cJSON_AddNumberToObject(ask, "coalesced", (double)ps.ask_coalesced);
  cJSON_AddNumberToObject(ask, "unreachable", (double)ps.ask_unreachable);
  if (ps.ask_latency_count > 0) {
    cJSON_AddNumberToObject(ask, "latency_ms_avg",
                            (double)ps.ask_latency_ms_sum / (double)ps.ask_latency_count);
  } else {
    cJSON_AddNullToObject(ask, "latency_ms_avg");
  }
  cJSON *list = cJSON_AddArrayToObject(o, "recent_refusals");
  if (od != NULL) {
    enum { MAX = 64 };
    px_od_refused_t *rs = gh_calloc(MAX, sizeof(*rs));
    size_t n = px_ondemand_refusals(od, rs, MAX);
    uint64_t now_ms = gh_now_ms();
    time_t now = time(NULL);
    for (size_t i = 0; i < n; i++) {
      cJSON *e = cJSON_CreateObject();
      add_text(e, "name", rs[i].name);
      add_text(e, "reason", rs[i].reason);
      cJSON_AddStringToObject(e, "client_ip", rs[i].client_ip);
      char t[32];
      time_t at = now - (time_t)((now_ms - rs[i].at_ms) / 1000);
      cJSON_AddStringToObject(e, "at", gh_format_time(t, sizeof(t), at));
      cJSON_AddNumberToObject(e, "count", (double)rs[i].count);
      cJSON_AddItemToArray(list, e);
    }
    gh_free(rs);
  }
  respond_json(c, 200, o);
}

/* renewing_now reports whether a renewal the admin API started for
 * |name| is still running. */
static int renewing_now(px_admin_t *a, const char *name) {
  for (gh_link_t *l = a->jobs.next; l != &a->jobs; l = l->next) {
    const admin_job_t *j = GH_CONTAINER_OF(l, admin_job_t, link);
    if (j->kind == JOB_RENEW && j->num_names > 0 && strcmp(j->names[0], name) == 0) return 1;
  }
  return 0;
}

static void add_time_or_null(cJSON *o, const char *key, time_t at) {
  char t[32];
  if (at != 0) cJSON_AddStringToObject(o, key, gh_format_time(t, sizeof(t), at));
  else cJSON_AddNullToObject(o, key);
}

/* get_acme answers the CAs with their order counters (by challenge type
 * and result, since the start: a page computes rates between looks),
 * fallbacks and back-off, and the last orders to finish, newest first. */
static void get_acme(admin_conn_t *c) {
  px_admin_t *a = c->admin;
  acme_engine_t *engine = running_engine(a);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddBoolToObject(o, "enabled", engine != NULL);
  cJSON *cas = cJSON_AddArrayToObject(o, "cas");
  cJSON *recent = cJSON_AddArrayToObject(o, "recent_orders");
  if (engine == NULL) {
    respond_json(c, 200, o);
    return;
  }
  acme_ca_stats_t st[ACME_MAX_CAS];
  size_t n = acme_engine_ca_stats(engine, st, ACME_MAX_CAS);
  for (size_t i = 0; i < n; i++) {
    cJSON *ca = cJSON_CreateObject();
    cJSON_AddStringToObject(ca, "name", st[i].name);
    cJSON_AddStringToObject(ca, "directory", st[i].directory);
    cJSON_AddNumberToObject(ca, "fallbacks", (double)st[i].fallbacks);
    add_time_or_null(ca, "backoff_until", st[i].backoff_until);
    cJSON *orders = cJSON_AddArrayToObject(ca, "orders");
    for (int ch = 0; ch < 4; ch++) {
      for (int r = 0; r < 2; r++) {
        cJSON *row = cJSON_CreateObject();
        cJSON_AddStringToObject(row, "challenge", acme_stats_challenges[ch]);
        cJSON_AddStringToObject(row, "result", r == 0 ? "ok" : "failed");
        cJSON_AddNumberToObject(row, "count", (double)st[i].orders[ch][r]);
        cJSON_AddItemToArray(orders, row);
      }
    }
    cJSON_AddItemToArray(cas, ca);
  }
  acme_order_event_t *evs = gh_calloc(ACME_ORDER_LOG, sizeof(*evs));
  size_t ne = acme_engine_recent_orders(engine, evs, ACME_ORDER_LOG);
  for (size_t i = 0; i < ne; i++) {
    const acme_order_event_t *ev = &evs[i];
    cJSON *e = cJSON_CreateObject();
    add_time_or_null(e, "at", ev->at);
    cJSON *names = cJSON_AddArrayToObject(e, "names");
    for (size_t k = 0; k < ev->num_names; k++)
      cJSON_AddItemToArray(names, clean_text(ev->names[k]));
    if (ev->ca != NULL) cJSON_AddStringToObject(e, "ca", ev->ca);
    else cJSON_AddNullToObject(e, "ca");
    cJSON_AddStringToObject(e, "kind", ev->renewal ? "renew" : "issue");
    cJSON_AddStringToObject(e, "challenge", acme_stats_challenges[ev->challenge & 3]);
    cJSON_AddStringToObject(e, "result", ev->ok ? "ok" : "failed");
    if (ev->error != NULL) add_text(e, "error", ev->error);
    else cJSON_AddNullToObject(e, "error");
    cJSON_AddNumberToObject(e, "duration_ms", (double)ev->duration_ms);
    cJSON_AddItemToArray(recent, e);
  }
  acme_order_events_free(evs, ne);
  gh_free(evs);
  respond_json(c, 200, o);
}

/* endpoint_state names what choosing would make of endpoint |ep| now. */
static const char *endpoint_state(px_addr_t *ep, uint64_t now_ms) {
  if (!atomic_load(&ep->live)) return "gone";
  if (atomic_load(&ep->unhealthy)) return "check_failed";
  if (atomic_load(&ep->down_until_ms) > now_ms) return "backing_off";
  return "up";
}

static cJSON *target_json(px_target_t *t, px_worker_t *const *workers, unsigned num_workers) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "address", t->conf->text);
  uint64_t now = gh_now_ms();
  cJSON *eps = cJSON_CreateArray();
  double in_flight = 0;
  unsigned slot = 0;
  size_t n = atomic_load(&t->num_used);
  for (size_t k = 0; k < n; k++) {
    px_addr_t *ep = &t->eps[k];
    if (slot == 0) slot = atomic_load(&ep->stat_slot);
    char text[INET6_ADDRSTRLEN + 8], why[sizeof(ep->last_fail)];
    px_addr_text(ep, text, sizeof(text));
    pthread_mutex_lock(&t->sa_lock);
    uint64_t fail_ms = ep->last_fail_ms;
    memcpy(why, ep->last_fail, sizeof(why));
    pthread_mutex_unlock(&t->sa_lock);
    why[sizeof(why) - 1] = '\0';
    int active = atomic_load(&ep->active);
    in_flight += active > 0 ? active : 0;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "address", text);
    cJSON_AddStringToObject(e, "state", endpoint_state(ep, now));
    cJSON_AddNumberToObject(e, "in_flight", active > 0 ? active : 0);
    if (fail_ms != 0) {
      cJSON *f = cJSON_AddObjectToObject(e, "last_failure");
      add_time_or_null(f, "at", (time_t)(fail_ms / 1000));
      add_text(f, "reason", why);
    } else {
      cJSON_AddNullToObject(e, "last_failure");
    }
    cJSON_AddItemToArray(eps, e);
  }
  cJSON_AddNumberToObject(o, "in_flight", in_flight);
  /* Requests are counted per configured address (px_metrics_upstream_slot). */
  uint64_t req[6] = {0};
  if (slot != 0) {
    for (unsigned w = 0; w < num_workers; w++)
      for (int cl = 0; cl < 6; cl++) req[cl] += PX_STAT_GET(workers[w]->stats.requests[slot][cl]);
  }
  cJSON *r = cJSON_AddObjectToObject(o, "requests");
  for (int cl = 1; cl < 6; cl++) cJSON_AddNumberToObject(r, px_status_classes[cl], (double)req[cl]);
  cJSON_AddNumberToObject(r, px_status_classes[0], (double)req[0]);
  cJSON_AddItemToObject(o, "endpoints", eps);
  return o;
}

static cJSON *group_json(const px_site_t *site, const char *route, px_group_t *g,
                         px_worker_t *const *workers, unsigned num_workers) {
  static const char *const protos[] = {"http/1.1", "h2", "h2c"};
  cJSON *o = cJSON_CreateObject();
  const conf_site_t *cs = site->conf;
  cJSON_AddStringToObject(o, "site", cs->num_hosts > 0 ? cs->hosts[0] : "*");
  if (route != NULL) cJSON_AddStringToObject(o, "route", route);
  else cJSON_AddNullToObject(o, "route");
  cJSON_AddStringToObject(o, "balance",
                          g->conf->balance == CONF_BALANCE_LEAST_CONN ? "least_conn" : "round_robin");
  int proto = g->conf->num_addrs > 0 ? (int)g->conf->addrs[0].protocol : 0;
  cJSON_AddStringToObject(o, "protocol", protos[proto >= 0 && proto < 3 ? proto : 0]);
  if (g->conf->health.path != NULL) cJSON_AddStringToObject(o, "health_check", g->conf->health.path);
  else cJSON_AddNullToObject(o, "health_check");
  cJSON *ts = cJSON_AddArrayToObject(o, "targets");
  for (size_t k = 0; k < g->num_targets; k++)
    cJSON_AddItemToArray(ts, target_json(g->targets[k], workers, num_workers));
  return o;
}

/* get_upstreams answers every site's and route's upstream addresses with
 * their endpoints: state, requests in flight, the last failure, and the
 * requests answered by status class. */
static void get_upstreams(admin_conn_t *c) {
  px_admin_t *a = c->admin;
  px_gen_t *gen = *a->env.gen;
  cJSON *o = cJSON_CreateObject();
  cJSON *list = cJSON_AddArrayToObject(o, "upstreams");
  for (size_t i = 0; i < gen->num_sites; i++) {
    const px_site_t *site = &gen->sites[i];
    if (site->group != NULL && site->group->num_targets > 0)
      cJSON_AddItemToArray(list, group_json(site, NULL, site->group, a->env.workers,
                                            a->env.num_workers));
    for (size_t r = 0; r < site->num_routes; r++) {
      const px_route_t *rt = &site->routes[r];
      if (rt->group != NULL && rt->group->num_targets > 0)
        cJSON_AddItemToArray(list, group_json(site, rt->prefix, rt->group, a->env.workers,
                                              a->env.num_workers));
    }
  }
  respond_json(c, 200, o);
}

/* The dashboard's page may run only its own script and style, talk only
 * to this origin, and never be framed: certificate names and ACME errors
 * it shows come from whoever can make a client send a name, so even a
 * slip that inserted one as HTML could not run anything or send data
 * elsewhere. */
#define UI_HEADERS                                                                             \
  "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "        \
  "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "                 \
  "frame-ancestors 'none'\r\n"                                                                \
  "X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n"                                \
  "Cross-Origin-Resource-Policy: same-origin\r\nCross-Origin-Opener-Policy: same-origin\r\n"

/* ui_asset returns the embedded dashboard file served at |path|, or NULL. */
static const px_ui_asset_t *ui_asset(const char *path) {
  for (const px_ui_asset_t *f = px_ui_assets; f->path != NULL; f++)
    if (strcmp(f->path, path) == 0) return f;
  return NULL;
}

static void get_ui(admin_conn_t *c, const px_ui_asset_t *f) {
  const char *dot = strrchr(f->path, '.');
  const char *type = "text/html; charset=utf-8";
  if (dot != NULL && strcmp(dot, ".js") == 0) type = "text/javascript; charset=utf-8";
  else if (dot != NULL && strcmp(dot, ".css") == 0) type = "text/css; charset=utf-8";
  else if (dot != NULL && strcmp(dot, ".svg") == 0) type = "image/svg+xml";
  respond_with(c, 200, type, UI_HEADERS, (const char *)f->data, f->len);
}

static void dispatch(admin_conn_t *c) {
  px_admin_t *a = c->admin;
  if (c->too_big) {
    c->keep_alive = 0;
    respond_error(c, c->too_big, c->too_big == 413 ? "body too large" : "head too large");
    return;
  }
  if (!host_ok(c->listener, c->host)) {
    respond_error(c, 421, "the Host header does not name the admin address");
    return;
  }
  px_buf_append(&c->url, "", 1);
  c->url.len--;
  const char *path = c->url.p;
  char *q = strchr(path, '?');
  if (q) *q = '\0';
  int method = llhttp_get_method(&c->parser);
  int get = method == HTTP_GET;
  /* The dashboard's files hold no data, and a browser cannot send the
   * bearer header when it opens a page: they need no token (the Host
   * check above still applies). The page then asks for the token and
   * sends it with every API request. */
  const px_ui_asset_t *ui = ui_asset(path);
  if (ui != NULL) {
    if (!get) goto not_allowed;
    get_ui(c, ui);
    return;
  }
  if (!token_ok(conf_now(a)->admin_token, c->auth)) {
    respond_error(c, 401, "missing or wrong bearer token");
    return;
  }
  if (strcmp(path, "/health") == 0) {
    if (!get) goto not_allowed;
    get_health(c);
    return;
  }
  if (strcmp(path, "/metrics") == 0) {
    if (!get) goto not_allowed;
    get_metrics(c);
    return;
  }
  if (strcmp(path, "/reload") == 0) {
    if (method != HTTP_POST) goto not_allowed;
    post_reload(c);
    return;
  }
  if (strcmp(path, "/certs") == 0) {
    if (!get) goto not_allowed;
    get_certs(c, NULL);
    return;
  }
  if (strcmp(path, "/ondemand") == 0) {
    if (!get) goto not_allowed;
    get_ondemand(c);
    return;
  }
  if (strcmp(path, "/acme") == 0) {
    if (!get) goto not_allowed;
    get_acme(c);
    return;
  }
  if (strcmp(path, "/upstreams") == 0) {
    if (!get) goto not_allowed;
    get_upstreams(c);
    return;
  }
  if (strncmp(path, "/certs/", 7) == 0) {
    const char *name = path + 7;
    const char *slash = strchr(name, '/');
    size_t name_len = slash ? (size_t)(slash - name) : strlen(name);
    if (!cert_name_ok(name, name_len)) {
      respond_error(c, 404, "not a certificate name");
      return;
    }
    char *n = gh_strndup(name, name_len);
    const char *action = slash ? slash + 1 : NULL;
    if (action == NULL && get) {
      get_certs(c, n);
    } else if (action == NULL && method == HTTP_DELETE) {
      delete_cert(c, n);
    } else if (action != NULL && strcmp(action, "renew") == 0 && method == HTTP_POST) {
      post_renew(c, n);
    } else if (action != NULL && strcmp(action, "revoke") == 0 && method == HTTP_POST) {
      post_revoke(c, n);
    } else if (action == NULL || strcmp(action, "renew") == 0 || strcmp(action, "revoke") == 0) {
      gh_free(n);
      goto not_allowed;
    } else {
      respond_error(c, 404, "no such endpoint");
    }
    gh_free(n);
    return;
  }
  respond_error(c, 404, "no such endpoint");
  return;
not_allowed:
  respond_error(c, 405, "method not allowed");
}

/* ---- parsing ---- */

static admin_conn_t *conn_of(llhttp_t *p) { return p->data; }

static int head_add(admin_conn_t *c, px_buf_t *b, const char *at, size_t len) {
  c->head_bytes += len;
  if (c->head_bytes > MAX_HEAD) {
    c->too_big = 431;
    return HPE_PAUSED;
  }
  px_buf_append(b, at, len);
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  admin_conn_t *c = conn_of(p);
  return head_add(c, &c->url, at, len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  admin_conn_t *c = conn_of(p);
  return head_add(c, &c->field, at, len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  admin_conn_t *c = conn_of(p);
  return head_add(c, &c->value, at, len);
}

static int on_header_value_complete(llhttp_t *p) {
  admin_conn_t *c = conn_of(p);
  char **slot = NULL;
  if (c->field.len == 4 && strncasecmp(c->field.p, "host", 4) == 0) slot = &c->host;
  if (c->field.len == 13 && strncasecmp(c->field.p, "authorization", 13) == 0) slot = &c->auth;
  if (slot != NULL) {
    if (*slot != NULL) {
      /* Two Host (or Authorization) headers: refuse rather than guess. */
      gh_free(*slot);
      *slot = gh_strdup("");
    } else {
      *slot = gh_strndup(c->value.len ? c->value.p : "", c->value.len);
    }
  }
  c->field.len = c->value.len = 0;
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  admin_conn_t *c = conn_of(p);
  if (c->body.len + len > MAX_BODY) {
    c->too_big = 413;
    return HPE_PAUSED;
  }
  px_buf_append(&c->body, at, len);
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  admin_conn_t *c = conn_of(p);
  c->keep_alive = llhttp_should_keep_alive(p);
  return HPE_PAUSED;
}

/* pump parses what has arrived and answers each complete request, one at
 * a time: while an answer is pending (revoke), the rest waits. */
static void pump(admin_conn_t *c) {
  if (c->pumping) return;
  c->pumping = 1;
  while (!c->closing && !c->complete && c->in.len > 0) {
    llhttp_errno_t e = llhttp_execute(&c->parser, c->in.p, c->in.len);
    if (e == HPE_OK) {
      c->in.len = 0;
      break;
    }
    if (e == HPE_PAUSED) {
      px_buf_consume(&c->in, (size_t)(llhttp_get_error_pos(&c->parser) - c->in.p));
      c->complete = 1;
      if (c->too_big) c->keep_alive = 0;
      dispatch(c);
      continue;
    }
    c->keep_alive = 0;
    c->complete = 1;
    respond_error(c, 400, llhttp_errno_name(e));
    break;
  }
  c->pumping = 0;
}

/* ---- connections ---- */

static void conn_closed(uv_handle_t *h) {
  admin_conn_t *c = h->data;
  if (--c->handles_open > 0) return;
  px_buf_free(&c->in);
  px_buf_free(&c->url);
  px_buf_free(&c->body);
  px_buf_free(&c->field);
  px_buf_free(&c->value);
  gh_free(c->host);
  gh_free(c->auth);
  listener_unref(c->listener);
  gh_free(c);
}

static void conn_close(admin_conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  if (c->job != NULL) {
    c->job->conn = NULL; /* the job goes on; its answer has nowhere to go */
    c->job = NULL;
  }
  gh_list_remove(&c->link);
  c->admin->num_conns--;
  uv_close((uv_handle_t *)&c->idle, conn_closed);
  uv_close(&c->s.handle, conn_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  admin_conn_t *c = h->data;
  if (c->in.cap - c->in.len < 4096) {
    c->in.cap = c->in.cap ? c->in.cap * 2 : 8192;
    c->in.p = gh_realloc(c->in.p, c->in.cap);
  }
  buf->base = c->in.p + c->in.len;
  buf->len = c->in.cap - c->in.len;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  admin_conn_t *c = s->data;
  if (nread == 0) return;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  c->in.len += (size_t)nread;
  uv_timer_again(&c->idle);
  if (c->in.len > MAX_HEAD + MAX_BODY + 4096) { /* a client that does not wait */
    conn_close(c);
    return;
  }
  pump(c);
}

static void on_idle(uv_timer_t *t) {
  admin_conn_t *c = t->data;
  if (c->job != NULL) return; /* waiting for the CA: the answer closes or re-arms */
  conn_close(c);
}

static void on_connection(uv_stream_t *server, int status) {
  admin_listener_t *l = server->data;
  px_admin_t *a = l->admin;
  if (status < 0 || a == NULL || a->stopping) return;
  admin_conn_t *c = gh_calloc(1, sizeof(*c));
  c->admin = a;
  c->listener = l;
  l->refs++;
  if (l->unix_path != NULL) {
    uv_pipe_init(a->loop, &c->s.pipe, 0);
  } else {
    uv_tcp_init(a->loop, &c->s.tcp);
  }
  c->s.handle.data = c;
  uv_timer_init(a->loop, &c->idle);
  c->idle.data = c;
  c->handles_open = 2;
  gh_list_insert(&a->conns, &c->link);
  a->num_conns++;
  if (uv_accept(server, &c->s.stream) != 0 || a->num_conns > MAX_CONNS) {
    conn_close(c);
    return;
  }
  llhttp_init(&c->parser, HTTP_REQUEST, &a->settings);
  c->parser.data = c;
  uv_timer_start(&c->idle, on_idle, IDLE_MS, IDLE_MS);
  uv_read_start(&c->s.stream, on_alloc, on_read);
}

/* ---- listeners ---- */

static int is_loopback(const char *host) {
  return strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
         strcmp(host, "::1") == 0;
}


static void listener_unref(admin_listener_t *l) {
  if (l == NULL || --l->refs > 0) return;
  gh_free(l->text);
  gh_free(l->host);
  gh_free(l->unix_path);
  gh_free(l);
}

static void listener_closed(uv_handle_t *h) { listener_unref(h->data); }

/* listener_close stops accepting on |l| and removes its socket file,
 * unless another process has put its own there since. Connections it
 * accepted go on. */
static void listener_close(admin_listener_t *l) {
  struct stat st;
  if (l->unix_path != NULL && lstat(l->unix_path, &st) == 0 && st.st_dev == l->dev &&
      st.st_ino == l->ino)
    unlink(l->unix_path);
  l->admin = NULL;
  uv_close(&l->s.handle, listener_closed);
}

/* unix_clear makes way for a socket at |path|: nothing there, or a stale
 * socket (one that refuses connections: its server is gone), which it
 * removes. A live socket or another kind of file stays. Returns 0 or a
 * negative errno, with |*why| set for a message. */
static int unix_clear(const char *path, const char **why) {
  struct stat st;
  if (lstat(path, &st) != 0) {
    *why = strerror(errno);
    return errno == ENOENT ? 0 : -errno;
  }
  if (!S_ISSOCK(st.st_mode)) {
    *why = "the file exists and is not a socket";
    return -EEXIST;
  }
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *why = strerror(errno);
    return -errno;
  }
  int rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
  int err = errno;
  close(fd);
  if (rc == 0) {
    *why = "another process is listening on it";
    return -EADDRINUSE;
  }
  if (err != ECONNREFUSED) {
    *why = strerror(err);
    return -err;
  }
  if (unlink(path) != 0 && errno != ENOENT) {
    *why = strerror(errno);
    return -errno;
  }
  return 0;
}

/* listen_unix binds |l| to its path, readable and writable by our user
 * only: the mode is set between bind and listen, before any client can
 * connect (the process-wide umask is not touched, as other threads create
 * files meanwhile). */
static int listen_unix(admin_listener_t *l, const char **why) {
  int rc = unix_clear(l->unix_path, why);
  if (rc != 0) return rc;
  uv_pipe_init(l->admin->loop, &l->s.pipe, 0);
  l->s.handle.data = l;
  l->refs = 1;
  struct stat st;
  if ((rc = uv_pipe_bind(&l->s.pipe, l->unix_path)) != 0) {
    *why = uv_strerror(rc);
    return rc;
  }
  if (chmod(l->unix_path, 0600) != 0 || lstat(l->unix_path, &st) != 0) {
    rc = -errno;
    *why = strerror(errno);
    unlink(l->unix_path);
    return rc;
  }
  l->dev = st.st_dev;
  l->ino = st.st_ino;
  if ((rc = uv_listen(&l->s.stream, 64, on_connection)) != 0) {
    *why = uv_strerror(rc);
    unlink(l->unix_path);
  }
  return rc;
}

static int listen_tcp(admin_listener_t *l, const conf_addr_t *addr, const char **why) {
  char port[8];
  snprintf(port, sizeof(port), "%u", (unsigned)addr->port);
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  int rc = getaddrinfo(addr->host[0] ? addr->host : NULL, port, &hints, &res);
  if (rc != 0) {
    *why = gai_strerror(rc);
    return UV_EINVAL;
  }
  uv_tcp_init(l->admin->loop, &l->s.tcp);
  l->s.handle.data = l;
  l->refs = 1;
  rc = uv_tcp_bind(&l->s.tcp, res->ai_addr, 0);
  freeaddrinfo(res);
  if (rc == 0) rc = uv_listen(&l->s.stream, 64, on_connection);
  if (rc != 0) *why = uv_strerror(rc);
  return rc;
}

/* listener_open listens on |addr|. Returns the listener, or NULL with
 * |*out_err| set ("admin.listen ADDR: why"). */
static admin_listener_t *listener_open(px_admin_t *a, char **out_err, const conf_addr_t *addr) {
  admin_listener_t *l = gh_calloc(1, sizeof(*l));
  l->admin = a;
  l->text = gh_strdup(addr->text);
  l->host = gh_strdup(addr->host);
  l->port = addr->port;
  l->loopback = is_loopback(addr->host);
  l->unix_path = addr->unix_path ? gh_strdup(addr->unix_path) : NULL;
  const char *why = NULL;
  int rc = l->unix_path ? listen_unix(l, &why) : listen_tcp(l, addr, &why);
  if (rc == 0) return l;
  *out_err = gh_asprintf("admin.listen %s: %s", addr->text, why);
  l->admin = NULL;
  if (l->refs == 0) {
    l->refs = 1; /* no handle was made: free it now */
    listener_unref(l);
  } else {
    uv_close(&l->s.handle, listener_closed);
  }
  return NULL;
}

/* warn_insecure says loudly, at start and at each reload, that a TCP
 * admin address has no token (admin.insecure_no_token). */
static void warn_insecure(const conf_t *conf) {
  if (conf->admin == NULL || conf->admin->unix_path != NULL || conf->admin_token != NULL) return;
  GH_WARN("admin", "INSECURE: the admin API on %s has no token (admin.insecure_no_token): any "
          "local process, or a backend that can be made to send requests (SSRF), can reload "
          "this server and renew or revoke its certificates; set admin.token or listen on a "
          "unix socket", conf->admin->text);
}

static void log_listening(const px_admin_t *a, const conf_t *conf) {
  const admin_listener_t *l = a->listener;
  if (l->unix_path != NULL) {
    GH_INFO("admin", "admin API on %s (mode 0600)%s", l->text,
            conf->admin_token ? " (bearer token required)" : "");
  } else {
    GH_INFO("admin", "admin API on http://%s%s", l->text,
            conf->admin_token ? " (bearer token required)" : "");
  }
  warn_insecure(conf);
}

px_admin_t *px_admin_start(char **out_err, uv_loop_t *loop, const px_admin_env_t *env) {
  const conf_t *conf = (*env->gen)->conf;
  px_admin_t *a = gh_calloc(1, sizeof(*a));
  a->loop = loop;
  a->env = *env;
  gh_list_init(&a->conns);
  gh_list_init(&a->jobs);
  llhttp_settings_init(&a->settings);
  a->settings.on_url = on_url;
  a->settings.on_header_field = on_header_field;
  a->settings.on_header_value = on_header_value;
  a->settings.on_header_value_complete = on_header_value_complete;
  a->settings.on_body = on_body;
  a->settings.on_message_complete = on_message_complete;
  if (conf->admin != NULL && (a->listener = listener_open(a, out_err, conf->admin)) == NULL) {
    gh_free(a);
    return NULL;
  }
  pthread_mutex_init(&a->mu, NULL);
  uv_async_init(loop, &a->async, on_jobs_done);
  a->async.data = a;
  if (a->listener != NULL) log_listening(a, conf);
  return a;
}

int px_admin_apply(px_admin_t *a, char **out_err, const conf_t *conf) {
  if (a == NULL || a->stopping) return 0;
  admin_listener_t *old = a->listener;
  if (conf->admin != NULL && old != NULL && strcmp(conf->admin->text, old->text) == 0) {
    warn_insecure(conf);
    return 0;
  }
  admin_listener_t *l = NULL;
  if (conf->admin != NULL && (l = listener_open(a, out_err, conf->admin)) == NULL) return -1;
  if (old != NULL) {
    GH_INFO("admin", "admin API no longer on %s", old->text);
    listener_close(old);
  }
  a->listener = l;
  if (l != NULL) log_listening(a, conf);
  return 0;
}

void px_admin_stop(px_admin_t *admin) {
  if (admin == NULL || admin->stopping) return;
  admin->stopping = 1;
  if (admin->listener != NULL) listener_close(admin->listener);
  admin->listener = NULL;
  while (admin->conns.next != &admin->conns)
    conn_close(GH_CONTAINER_OF(admin->conns.next, admin_conn_t, link));
  /* Jobs may still finish until the control thread stops. */
  uv_unref((uv_handle_t *)&admin->async);
}

static void admin_closed(uv_handle_t *h) {
  px_admin_t *a = h->data;
  entries_free(&a->certs);
  pthread_mutex_destroy(&a->mu);
  gh_free(a);
}

void px_admin_free(px_admin_t *admin) {
  if (admin == NULL) return;
  px_admin_stop(admin);
  /* The control thread is gone: every job left is ours alone. */
  while (admin->jobs.next != &admin->jobs)
    job_free(GH_CONTAINER_OF(admin->jobs.next, admin_job_t, link));
  admin->done = NULL;
  uv_close((uv_handle_t *)&admin->async, admin_closed);
}
