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
  ctl->ondemand = ondemand;
  uv_async_init(&ctl->loop, &ctl->async, on_stop);
  ctl->async.data = ctl;
  pthread_mutex_init(&ctl->req_mu, NULL);
  uv_async_init(&ctl->loop, &ctl->req_async, on_requests);
  ctl->req_async.data = ctl;
  if (done == NULL) {
    acme_manager_hooks_t hooks = {.ondemand_done = ondemand_done, .policy_stats = policy_stats,
                                  .limits = ondemand ? px_ondemand_limits(ondemand) : NULL,
                                  .arg = ctl};
    ctl->manager = acme_manager_new(&ctl->loop, conf, ctl->engine, ctl->storage, cache,
                                    ondemand != NULL ? &hooks : NULL);
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
