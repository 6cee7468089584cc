/* control.c: the control thread (DESIGN.md "The three planes"), the
 * bridge between the data plane and the certificate plane.
 *
 * When acme.directory is set, px_run starts one thread with its own loop.
 * It owns the storage handle and the ACME engine, and runs the
 * acme_manager_t (acme/manager.h), which decides what to order, renew,
 * load and install; the manager installs into the server's acme_cache_t,
 * which puts certificates into the current generation's table. This file
 * only carries work across threads, one way each: workers and the admin
 * API post requests to the thread (one queue under a mutex, one async
 * handle, run in the order posted), and the thread wakes the workers
 * waiting for an on-demand name when the manager is done with it
 * (px_ondemand_finish).
 *
 * With a fleet's store (storage.etcd, issue 15) the thread also keeps the
 * node's lease alive on a timer, and a watcher thread (acme/storage.h)
 * follows the store: certificates other nodes stored are posted here to
 * the manager like any request, and their challenge records go straight
 * into the challenge table's fleet layer. A validator asking about a
 * record the watch has not delivered yet is answered by a read through
 * the table's fetch function (acme_storage_reader_t).
 *
 * px_obtain (`gatehouse cert obtain`) runs the same thread for one order
 * and no manager. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acme/manager.h"
#include "acme/storage.h"
#include "common/log.h"
#include "proxy/control.h"
#include "proxy/conn.h"
#include "proxy/ondemand.h"

/* A posted request: an on-demand name, or a function to run (px_control_call). */
struct request {
  struct request *next;
  void (*fn)(px_control_t *ctl, void *arg); /* NULL: on-demand |name| */
  void *arg;
  char client_ip[64];
  char name[];
};

struct px_control {
  uv_loop_t loop;
  uv_thread_t thread;
  uv_async_t async; /* stop, from the main thread */
  px_gen_t *gen;    /* keeps the configuration the engine reads alive */
  acme_cache_t *cache;
  acme_challenges_t *challenges;
  /* A fleet's store (NULL/unused otherwise). */
  acme_storage_watcher_t *watcher; /* its own thread; stopped in on_stop */
  uv_timer_t keepalive;            /* the node's lease */
  int has_keepalive;
  acme_engine_t *engine;
  acme_storage_t *storage;
  acme_manager_t *manager; /* NULL in one-shot mode */
  int stopping;
  /* One-shot mode (px_control_obtain): these names instead of the sites. */
  const char *const *names;
  size_t num_names;
  px_control_done_cb done;
  void *done_arg;
  /* Requests posted by workers (px_control_ondemand) and the admin API
   * (px_control_call). */
  px_ondemand_t *ondemand;
  uv_async_t req_async;
  pthread_mutex_t req_mu;
  struct request *reqs; /* under req_mu, newest first */
};

/* ---- posting to the control thread ---- */

static void post(px_control_t *ctl, struct request *r) {
  pthread_mutex_lock(&ctl->req_mu);
  r->next = ctl->reqs;
  ctl->reqs = r;
  pthread_mutex_unlock(&ctl->req_mu);
  uv_async_send(&ctl->req_async);
}

void px_control_call(px_control_t *ctl, void (*fn)(px_control_t *ctl, void *arg), void *arg) {
  struct request *r = gh_calloc(1, sizeof(*r) + 1);
  r->fn = fn;
  r->arg = arg;
  post(ctl, r);
}

void px_control_ondemand(px_control_t *ctl, const char *name, size_t name_len,
                         const char *client_ip) {
  struct request *r = gh_calloc(1, sizeof(*r) + name_len + 1);
  memcpy(r->name, name, name_len);
  r->name[name_len] = '\0';
  snprintf(r->client_ip, sizeof(r->client_ip), "%s", client_ip);
  post(ctl, r);
}

static void on_requests(uv_async_t *a) {
  px_control_t *ctl = a->data;
  pthread_mutex_lock(&ctl->req_mu);
  struct request *list = ctl->reqs;
  ctl->reqs = NULL;
  pthread_mutex_unlock(&ctl->req_mu);
  /* The list is newest first: run the requests in the order they came. */
  struct request *ordered = NULL;
  while (list) {
    struct request *r = list;
    list = r->next;
    r->next = ordered;
    ordered = r;
  }
  while (ordered) {
    struct request *r = ordered;
    ordered = r->next;
    if (r->fn != NULL) {
      r->fn(ctl, r->arg);
    } else if (ctl->manager != NULL) {
      acme_manager_ondemand(ctl->manager, r->name, r->client_ip);
    }
    gh_free(r);
  }
}

acme_engine_t *px_control_engine(px_control_t *ctl) { return ctl->stopping ? NULL : ctl->engine; }
acme_storage_t *px_control_storage(px_control_t *ctl) { return ctl->storage; }
acme_cache_t *px_control_cache(px_control_t *ctl) { return ctl->cache; }
acme_manager_t *px_control_manager(px_control_t *ctl) { return ctl->manager; }
uv_loop_t *px_control_loop(px_control_t *ctl) { return &ctl->loop; }

/* ---- waking workers: the manager's hooks ---- */

static void ondemand_done(void *arg, const char *name, int ok, const char *why) {
  px_control_t *ctl = arg;
  px_ondemand_finish(ctl->ondemand, name, ok, why);
}

static void policy_stats(void *arg, const acme_policy_stats_t *st) {
  px_control_t *ctl = arg;
  px_ondemand_set_policy_stats(ctl->ondemand, st);
}

/* ---- the fleet ---- */

/* What the watcher saw, carried to the control thread. */
typedef struct {
  char *name;
  acme_cert_t *cert; /* NULL: deleted, or |unlocked| */
  char *meta;
  int unlocked;
} fleet_event_t;

static void fleet_event_run(px_control_t *ctl, void *arg) {
  fleet_event_t *ev = arg;
  if (ctl->manager != NULL && !ctl->stopping) {
    if (ev->unlocked) acme_manager_fleet_unlocked(ctl->manager, ev->name);
    else acme_manager_fleet_cert(ctl->manager, ev->name, ev->cert, ev->meta);
  }
  acme_cert_unref(ev->cert);
  gh_free(ev->meta);
  gh_free(ev->name);
  gh_free(ev);
}

/* The watcher's callbacks, on its thread. */
static void fleet_cert(void *arg, const char *name, acme_cert_t *cert, const char *meta) {
  fleet_event_t *ev = gh_calloc(1, sizeof(*ev));
  ev->name = gh_strdup(name);
  ev->cert = cert ? acme_cert_ref(cert) : NULL;
  ev->meta = meta ? gh_strdup(meta) : NULL;
  px_control_call(arg, fleet_event_run, ev);
}

static void fleet_unlocked(void *arg, const char *name) {
  fleet_event_t *ev = gh_calloc(1, sizeof(*ev));
  ev->name = gh_strdup(name);
  ev->unlocked = 1;
  px_control_call(arg, fleet_event_run, ev);
}

static void fleet_challenge(void *arg, acme_storage_challenge_t kind, const char *id,
                            const char *key_auth) {
  px_control_t *ctl = arg;
  acme_challenges_put_fleet(ctl->challenges, kind == ACME_STORAGE_HTTP01, id, key_auth);
}

static void fleet_refused(void *arg, const char *name, const char *why, uint64_t until_ms) {
  px_control_t *ctl = arg;
  uint64_t now = gh_wall_ms();
  if (ctl->ondemand == NULL || until_ms <= now) return;
  GH_DEBUG("fleet", "%s: refused by a node of the fleet for %llu s more: %s", name,
           (unsigned long long)((until_ms - now) / 1000), why);
  px_ondemand_refuse(ctl->ondemand, name, why, until_ms - now);
}

/* fleet_fetch is the challenge table's fetch function: a worker's miss. */
static char *fleet_fetch(void *arg, int http01, const char *id, size_t id_len) {
  return acme_storage_reader_challenge(arg, http01 ? ACME_STORAGE_HTTP01 : ACME_STORAGE_TLSALPN01,
                                       id, id_len);
}

static void fleet_reader_free(void *arg) { acme_storage_reader_free(arg); }

static void on_keepalive(uv_timer_t *t) {
  px_control_t *ctl = t->data;
  if (ctl->engine != NULL) acme_storage_keepalive(acme_engine_storage(ctl->engine));
}

/* fleet_lease keeps a fleet node's lease alive, also for the one order of
 * `gatehouse cert obtain`: its lock hangs off it. */
static void fleet_lease(px_control_t *ctl, const conf_t *conf) {
  if (!acme_storage_shared(ctl->storage)) return;
  uint64_t every = conf->fleet.lease_ttl_ms / 6;
  uv_timer_init(&ctl->loop, &ctl->keepalive);
  ctl->keepalive.data = ctl;
  ctl->has_keepalive = 1;
  uv_timer_start(&ctl->keepalive, on_keepalive, 0, every < 250 ? 250 : every);
}

/* fleet_start follows a fleet's store: the watch, the reads on a miss.
 * Logged, not fatal, if a part cannot start: the node still serves what
 * it has. */
static void fleet_start(px_control_t *ctl, const conf_t *conf) {
  if (!acme_storage_shared(ctl->storage)) {
    /* Not (or no longer, after a reload) in a fleet. */
    acme_challenges_set_fetch(ctl->challenges, NULL, NULL, NULL);
    return;
  }
  char *err = NULL;
  acme_storage_reader_t *reader = acme_storage_reader_new(ctl->storage, &err);
  if (reader != NULL) {
    acme_challenges_set_fetch(ctl->challenges, fleet_fetch, fleet_reader_free, reader);
  } else {
    GH_WARN("fleet", "challenge reads on a miss are off: %s", err);
    gh_free(err);
    err = NULL;
  }
  const acme_storage_watch_cbs_t cbs = {fleet_cert, fleet_challenge, fleet_unlocked,
                                        fleet_refused};
  ctl->watcher = acme_storage_watch_start(ctl->storage, &err, &cbs, ctl);
  if (ctl->watcher == NULL) {
    GH_ERROR("fleet", "not following the fleet's store: %s", err);
    gh_free(err);
  }
  GH_INFO("fleet", "node %s in the fleet at %s (prefix %s)",
          conf->fleet.node ? conf->fleet.node : "(host name)", conf->etcd.endpoints[0].text,
          conf->etcd.prefix);
}

/* ---- the thread ---- */

static void free_handle(uv_handle_t *h) { gh_free(h); }

static void on_oneshot(void *arg, int status, const char *err, acme_cert_t *cert) {
  px_control_t *ctl = arg;
  if (status == 0) {
    char t[32];
    GH_INFO("acme", "%s: certificate from %s stored (valid until %s)", ctl->names[0],
            cert->issuer_cn ? cert->issuer_cn : "?", gh_format_time(t, sizeof(t), cert->not_after));
  } else {
    GH_ERROR("acme", "%s: %s", ctl->names[0], err ? err : uv_strerror(status));
  }
  if (!ctl->stopping) ctl->done(ctl->done_arg, status);
}

/* on_oneshot_start places the one order of px_control_obtain, from the
 * loop. */
static void on_oneshot_start(uv_timer_t *t) {
  px_control_t *ctl = t->data;
  uv_close((uv_handle_t *)t, free_handle);
  if (ctl->stopping) return;
  int rc = acme_engine_obtain(ctl->engine, ctl->names, ctl->num_names, on_oneshot, ctl);
  if (rc != 0) {
    GH_ERROR("acme", "%s: cannot start an order: %s", ctl->names[0], uv_strerror(rc));
    ctl->done(ctl->done_arg, rc);
  }
}

static void on_stop(uv_async_t *a) {
  px_control_t *ctl = a->data;
  ctl->stopping = 1;
  /* The manager schedules nothing more; then orders in flight end with
   * UV_ECANCELED, from the loop, and install nothing. */
  if (ctl->manager != NULL) acme_manager_stop(ctl->manager);
  /* The watcher posts to req_async: it stops before that closes. */
  acme_storage_watch_stop(ctl->watcher);
  ctl->watcher = NULL;
  if (ctl->has_keepalive) uv_close((uv_handle_t *)&ctl->keepalive, NULL);
  acme_engine_free(ctl->engine);
  ctl->engine = NULL;
  uv_close((uv_handle_t *)&ctl->req_async, NULL);
  uv_close((uv_handle_t *)&ctl->async, NULL);
}

static void control_main(void *arg) {
  px_control_t *ctl = arg;
  uv_run(&ctl->loop, UV_RUN_DEFAULT);
}

static px_control_t *control_new(char **out_err, px_gen_t *gen, acme_challenges_t *challenges,
                                 acme_cache_t *cache, px_ondemand_t *ondemand,
                                 const char *const *names, size_t num_names,
                                 px_control_done_cb done, void *done_arg) {
  const conf_t *conf = gen->conf;
  px_control_t *ctl = gh_calloc(1, sizeof(*ctl));
  ctl->names = names;
  ctl->num_names = num_names;
  ctl->done = done;
  ctl->done_arg = done_arg;
  uv_loop_init(&ctl->loop);
  ctl->storage = acme_storage_open_conf(out_err, conf);
  if (ctl->storage != NULL) ctl->engine = acme_engine_new(out_err, &ctl->loop, conf, challenges);
  if (ctl->engine == NULL) {
    acme_storage_free(ctl->storage);
    uv_run(&ctl->loop, UV_RUN_DEFAULT);
    uv_loop_close(&ctl->loop);
    gh_free(ctl);
    return NULL;
  }
  ctl->gen = px_gen_ref(gen);
  ctl->cache = cache;
  ctl->challenges = challenges;
  ctl->ondemand = ondemand;
  uv_async_init(&ctl->loop, &ctl->async, on_stop);
  ctl->async.data = ctl;
  pthread_mutex_init(&ctl->req_mu, NULL);
  uv_async_init(&ctl->loop, &ctl->req_async, on_requests);
  ctl->req_async.data = ctl;
  fleet_lease(ctl, conf);
  if (done == NULL) {
    acme_manager_hooks_t hooks = {.ondemand_done = ondemand_done, .policy_stats = policy_stats,
                                  .limits = ondemand ? px_ondemand_limits(ondemand) : NULL,
                                  .arg = ctl};
    ctl->manager = acme_manager_new(&ctl->loop, conf, ctl->engine, ctl->storage, cache,
                                    ondemand != NULL ? &hooks : NULL);
    fleet_start(ctl, conf);
  } else {
    /* The order starts from the loop, in the control thread. */
    uv_timer_t *start = gh_malloc(sizeof(*start));
    uv_timer_init(&ctl->loop, start);
    start->data = ctl;
    uv_timer_start(start, on_oneshot_start, 0, 0);
  }
  uv_thread_create(&ctl->thread, control_main, ctl);
  return ctl;
}

px_control_t *px_control_start(char **out_err, px_gen_t *gen, acme_challenges_t *challenges,
                               acme_cache_t *cache, px_ondemand_t *ondemand) {
  return control_new(out_err, gen, challenges, cache, ondemand, NULL, 0, NULL, NULL);
}

px_control_t *px_control_obtain(char **out_err, px_gen_t *gen, acme_challenges_t *challenges,
                                const char *const *names, size_t num_names,
                                px_control_done_cb done, void *done_arg) {
  return control_new(out_err, gen, challenges, NULL, NULL, names, num_names, done, done_arg);
}

void px_control_stop(px_control_t *ctl) {
  if (ctl == NULL) return;
  uv_async_send(&ctl->async);
  uv_thread_join(&ctl->thread);
  if (uv_loop_close(&ctl->loop) != 0) GH_WARN("acme", "control thread: loop not empty at exit");
  /* The challenge table keeps its fetch function (the reader has its own
   * etcd client) and its fleet answers: while a reload replaces this
   * thread, the validator may be checking another node's challenge here.
   * The next thread replaces the function; the table's end frees it. */
  acme_manager_free(ctl->manager);
  acme_storage_free(ctl->storage);
  /* Calls posted too late still run, here, with no engine (so they answer
   * as cancelled): the admin API's jobs are answered, not lost. On-demand
   * names are dropped: px_ondemand_set_control posts them again to the
   * next thread. */
  while (ctl->reqs) {
    struct request *r = ctl->reqs;
    ctl->reqs = r->next;
    if (r->fn != NULL) r->fn(ctl, r->arg);
    gh_free(r);
  }
  pthread_mutex_destroy(&ctl->req_mu);
  px_gen_unref(ctl->gen);
  gh_free(ctl);
}
