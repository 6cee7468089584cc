/* server.c: process lifecycle: worker threads, signals, reload, drain.
 *
 * The main thread runs a small loop that only handles signals. SIGHUP
 * re-reads the config file; a file that fails validation is refused (its
 * errors logged) and the running generation keeps serving. SIGTERM/SIGINT
 * stop accepting and let in-flight requests finish, bounded by
 * timeouts.drain. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "acme/storage.h"
#include "common/log.h"
#include "proxy/admin.h"
#include "proxy/control.h"
#include "proxy/conn.h"
#include "proxy/upstream.h"
#include "proxy/ondemand.h"
#include "proxy/proxy.h"
#include "proxy/tls.h"

typedef struct {
  uv_loop_t loop;
  uv_signal_t sig_term, sig_int, sig_hup;
  uv_signal_t sig_usr1; /* reopen the log files (logrotate) */
  uv_timer_t trim_timer;
  px_worker_t **workers;
  unsigned num_workers;
  const char *config_path;
  px_gen_t *gen;
  acme_challenges_t *challenges;
  acme_cache_t *cache;   /* certificates the control thread installed */
  px_control_t *control; /* NULL without acme.directory */
  char *control_key;     /* the settings |control| was started with (control_key) */
  px_ondemand_t *ondemand; /* NULL in px_obtain's mode */
  px_admin_t *admin;       /* NULL in px_obtain; listens only with admin.listen */
  int stopping;
  /* px_obtain: one order instead of serving; |done| wakes the main loop. */
  const char *const *names;
  size_t num_names;
  uv_async_t done;
  _Atomic int obtain_status;

} px_server_t;

int px_listen_open(px_listener_t *l, uv_loop_t *loop, const conf_addr_t *addr, char **out_err);
/* px_listen_probe reports whether |addr| can be bound by a socket without
 * SO_REUSEPORT: 0, or -1 with |*out_err| set. */
int px_listen_probe(const conf_addr_t *addr, char **out_err);

static void worker_close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void close_listeners(px_worker_t *w) {
  for (size_t i = 0; i < w->num_listeners; i++) {
    uv_handle_t *h = (uv_handle_t *)&w->listeners[i].tcp;
    if (h->data && !uv_is_closing(h)) uv_close(h, NULL);
  }
}

/* maybe_finish stops the loop once draining and no connection is left. */
static void maybe_finish(px_worker_t *w) {
  if (!w->draining || w->num_conns > 0) return;
  px_worker_pools_close(w);
  uv_stop(&w->loop);
}

void px_worker_conn_gone(px_worker_t *w) { maybe_finish(w); }

uint64_t px_now(const uv_loop_t *loop) {
  const px_worker_t *w = loop->data;
  return uv_now(loop) + w->clock_offset_ms;
}

static void drain_timeout(uv_timer_t *t) {
  px_worker_t *w = t->data;
  GH_WARN("proxy", "worker %u: drain timeout, closing %zu connection(s)", w->id, w->num_conns);
  gh_link_t *l = w->conns.next;
  while (l != &w->conns) {
    px_conn_t *c = GH_CONTAINER_OF(l, px_conn_t, link);
    l = l->next;
    px_conn_close(c);
  }
}

static void begin_drain(px_worker_t *w) {
  if (w->draining) return;
  w->draining = 1;
  close_listeners(w);
  uv_timer_stop(&w->health_timer);
  uv_timer_stop(&w->beat_timer);
  /* Idle keep-alive connections go now; busy ones after their response. */
  gh_link_t *l = w->conns.next;
  while (l != &w->conns) {
    px_conn_t *c = GH_CONTAINER_OF(l, px_conn_t, link);
    l = l->next;
    if (c->paused_name != NULL) {
      /* Paused for an on-demand certificate that the stopping control
       * thread will not deliver: nothing to finish. */
      px_conn_close(c);
    } else if (c->state == PX_CONN_OPEN) {
      px_conn_drain(c); /* idle ones close now */
    } else {
      c->h1.close_after = 1;
    }
  }
  uv_timer_start(&w->drain_timer, drain_timeout, w->gen->conf->timeouts.drain_ms, 0);
  maybe_finish(w);
}

void px_worker_adopt_gen(px_worker_t *w, px_gen_t *gen) {
  px_worker_pools_close(w);
  px_worker_pools_free(w);
  px_gen_t *old = w->gen;
  w->gen = gen;
  px_worker_pools_new(w, gen);
  px_gen_unref(old);
  if (w->id == 0) px_health_start(w);
}

static void worker_async(uv_async_t *a) {
  px_worker_t *w = a->data;
  pthread_mutex_lock(&w->mu);
  px_gen_t *next = w->next_gen;
  w->next_gen = NULL;
  int stop = w->stop_requested;
  pthread_mutex_unlock(&w->mu);
  if (next) {
    px_worker_adopt_gen(w, next);
    /* HTTP/2 connections made under the old configuration (its TLS
     * settings and certificates) are asked to move on: GOAWAY, their open
     * streams finish, new requests come on a new connection. */
    gh_link_t *l = w->conns.next;
    while (l != &w->conns) {
      px_conn_t *c = GH_CONTAINER_OF(l, px_conn_t, link);
      l = l->next;
      if (c->h2) px_conn_drain(c);
    }
  }
  if (w->ondemand) px_ondemand_wakeups(w);
  if (stop) begin_drain(w);
}

static void beat(uv_timer_t *t) {
  px_worker_t *w = t->data;
  atomic_store_explicit(&w->beat_ms, gh_now_ms(), memory_order_relaxed);
}

static void worker_main(void *arg) {
  px_worker_t *w = arg;
  const conf_t *conf = w->gen->conf;
  char *err = NULL;
  gh_log_thread_ring(); /* a worker never waits for the log destination */
  w->num_listeners = conf->num_https + conf->num_http;
  w->listeners = gh_calloc(w->num_listeners ? w->num_listeners : 1, sizeof(px_listener_t));
  size_t k = 0;
  for (size_t i = 0; i < conf->num_https + conf->num_http; i++, k++) {
    int is_tls = i < conf->num_https;
    const conf_addr_t *addr = is_tls ? &conf->https[i] : &conf->http[i - conf->num_https];
    px_listener_t *l = &w->listeners[k];
    l->w = w;
    snprintf(l->label, sizeof(l->label), "%s:%s", is_tls ? "https" : "http", addr->text);
    l->is_tls = is_tls;
    l->http2 = is_tls && addr->http2;
    l->proxy_protocol = addr->proxy_protocol;
    if (addr->num_proxy_trusted) {
      /* The listener outlives this generation's configuration. */
      l->num_proxy_trusted = addr->num_proxy_trusted;
      l->proxy_trusted = gh_calloc(l->num_proxy_trusted, sizeof(conf_cidr_t));
      memcpy(l->proxy_trusted, addr->proxy_trusted, l->num_proxy_trusted * sizeof(conf_cidr_t));
      for (size_t j = 0; j < l->num_proxy_trusted; j++) l->proxy_trusted[j].text = NULL;
    }
    if (px_listen_open(l, &w->loop, addr, &err) != 0) {
      if (w->id == 0) GH_ERROR("proxy", "%s", err);
      gh_free(err);
      w->start_err = 1;
      break;
    }
  }
  uv_sem_post(w->started);
  if (w->start_err) {
    close_listeners(w);
    uv_run(&w->loop, UV_RUN_NOWAIT);
    return;
  }
  if (w->id == 0) px_health_start(w);
  uv_timer_start(&w->beat_timer, beat, PX_BEAT_MS, PX_BEAT_MS);
  uv_run(&w->loop, UV_RUN_DEFAULT);
}

static px_worker_t *worker_new(unsigned id, px_gen_t *gen, uv_sem_t *started) {
  px_worker_t *w = gh_calloc(1, sizeof(*w));
  w->id = id;
  uv_loop_init(&w->loop);
  w->loop.data = w;
  uv_async_init(&w->loop, &w->async, worker_async);
  w->async.data = w;
  uv_timer_init(&w->loop, &w->drain_timer);
  w->drain_timer.data = w;
  uv_timer_init(&w->loop, &w->health_timer);
  w->health_timer.data = w;
  uv_timer_init(&w->loop, &w->beat_timer);
  w->beat_timer.data = w;
  atomic_init(&w->beat_ms, gh_now_ms());
  pthread_mutex_init(&w->mu, NULL);
  gh_list_init(&w->conns);
  gh_list_init(&w->upconns);
  gh_list_init(&w->paused);
  w->gen = px_gen_ref(gen);
  px_worker_pools_new(w, gen);
  w->started = started;
  px_h1_init_settings(w);
  px_uph1_init_settings(w);
  px_worker_bio_init(w);
  px_uptls_worker_init(w);
  return w;
}

static void worker_free(px_worker_t *w) {
  /* Close whatever is left (async, timers, stray handles) and run the loop
   * until every close callback has fired. */
  uv_walk(&w->loop, worker_close_walk, NULL);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&w->loop) != 0) GH_WARN("proxy", "worker %u: loop not empty at exit", w->id);
  px_ex_cache_free(w);
  px_h2_worker_free(w);
  px_ondemand_worker_cleanup(w);
  px_worker_pools_free(w);
  px_gen_unref(w->gen);
  px_gen_unref(w->next_gen);
  for (size_t i = 0; i < w->num_listeners; i++) gh_free(w->listeners[i].proxy_trusted);
  gh_free(w->listeners);
  gh_free(w->obuf);
  px_buf_free(&w->pout);
  BIO_meth_free(w->bio_method);
  px_uptls_worker_free(w);
  pthread_mutex_destroy(&w->mu);
  gh_free(w);
}

static void post_to_workers(px_server_t *s, px_gen_t *gen, int stop) {
  for (unsigned i = 0; i < s->num_workers; i++) {
    px_worker_t *w = s->workers[i];
    pthread_mutex_lock(&w->mu);
    if (gen) {
      px_gen_unref(w->next_gen);
      w->next_gen = px_gen_ref(gen);
    }
    if (stop) w->stop_requested = 1;
    pthread_mutex_unlock(&w->mu);
    uv_async_send(&w->async);
  }
}

static void gen_release(void *gen) { px_gen_unref(gen); }

/* cache_set_gen makes the certificate cache install into |gen|'s table,
 * and puts what it holds there first. */
static void cache_set_gen(acme_cache_t *cache, px_gen_t *gen) {
  acme_cache_set_table(cache, px_tls_ctx_table(gen->ssl_ctx), gen->conf, px_gen_ref(gen));
}

/* same_listeners reports whether |a| and |b| listen on the same addresses
 * (with the same options). */
static int same_listener(const conf_addr_t *a, const conf_addr_t *b) {
  if (strcmp(a->text, b->text) != 0 || a->http2 != b->http2 ||
      a->proxy_protocol != b->proxy_protocol || a->num_proxy_trusted != b->num_proxy_trusted)
    return 0;
  for (size_t i = 0; i < a->num_proxy_trusted; i++) {
    if (strcmp(a->proxy_trusted[i].text, b->proxy_trusted[i].text) != 0) return 0;
  }
  return 1;
}

static int same_listeners(const conf_t *a, const conf_t *b) {
  if (a->num_https != b->num_https || a->num_http != b->num_http) return 0;
  for (size_t i = 0; i < a->num_https; i++) {
    if (!same_listener(&a->https[i], &b->https[i])) return 0;
  }
  for (size_t i = 0; i < a->num_http; i++) {
    if (!same_listener(&a->http[i], &b->http[i])) return 0;
  }
  return 1;
}

/* control_key returns (a new string) the settings the control thread is
 * started with: acme, on_demand, storage, and the hosts of the sites it
 * manages (those without certificate files). A reload that changes any of
 * them restarts the thread (restart_control). */
static char *control_key(const conf_t *conf) {
  cJSON *all = conf_to_json(conf);
  cJSON *key = cJSON_CreateObject();
  static const char *const keys[] = {"acme", "on_demand", "storage", "fleet"};
  for (size_t i = 0; i < GH_ARRAY_LEN(keys); i++) {
    cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(all, keys[i]);
    if (v != NULL) cJSON_AddItemToObject(key, keys[i], v);
  }
  cJSON *sites = cJSON_AddArrayToObject(key, "sites");
  cJSON *site;
  cJSON_ArrayForEach(site, cJSON_GetObjectItemCaseSensitive(all, "sites")) {
    if (cJSON_GetObjectItemCaseSensitive(site, "tls") != NULL) continue;
    cJSON *m = cJSON_CreateObject();
    cJSON_AddItemToObject(m, "hosts",
                          cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(site, "hosts"), 1));
    cJSON_AddItemToObject(m, "default",
                          cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(site, "default"), 1));
    cJSON_AddItemToArray(sites, m);
  }
  char *text = cJSON_PrintUnformatted(key);
  char *out = gh_strdup(text);
  cJSON_free(text);
  cJSON_Delete(key);
  cJSON_Delete(all);
  return out;
}

/* start_control starts the control thread for |s->gen| when ACME is on,
 * and hands it the on-demand names. Returns 0, or -1 with the error
 * logged. */
static int start_control(px_server_t *s) {
  gh_free(s->control_key);
  s->control_key = control_key(s->gen->conf);
  if (!conf_acme_on(s->gen->conf)) {
    px_ondemand_set_control(s->ondemand, NULL);
    return 0;
  }
  char *err = NULL;
  px_ondemand_t *od = px_ondemand_enabled(s->ondemand) ? s->ondemand : NULL;
  s->control = px_control_start(&err, s->gen, s->challenges, s->cache, od);
  if (s->control == NULL) {
    GH_ERROR("acme", "%s", err);
    gh_free(err);
  }
  px_ondemand_set_control(s->ondemand, s->control);
  return s->control != NULL ? 0 : -1;
}

/* restart_control replaces the control thread after a reload changed its
 * settings. The old one stops first (one thread orders at a time: two
 * would order the same names twice): its orders in flight are cancelled,
 * the admin API's renewals among them answer "cancelled"; the names
 * handshakes are paused for are held and posted again to the new thread,
 * so those handshakes keep waiting instead of failing. The new thread
 * installs what is stored, orders what is missing (a site the reload
 * added), and renews only what the new configuration has (a site it
 * removed stops renewing). The rate limits' buckets carry over. */
static void restart_control(px_server_t *s) {
  px_ondemand_hold(s->ondemand);
  px_control_stop(s->control);
  s->control = NULL;
  if (start_control(s) != 0) {
    GH_ERROR("acme", "reload: certificates are not ordered or renewed until a reload fixes "
                     "this");
  } else if (s->control != NULL) {
    GH_INFO("acme", "reload: the certificate plane restarted with the new settings");
  }
}

/* refuse_reload logs why a reload was refused (|why|, which it frees) and
 * copies it to |*out_err| if |out_err| is not NULL. Returns -1. */
static int refuse_reload(char **out_err, char *why) {
  GH_ERROR("proxy", "reload refused, still serving the previous configuration: %s", why);
  if (out_err) *out_err = why;
  else gh_free(why);
  return -1;
}

/* reload re-reads the config file (SIGHUP, POST /reload). Returns 0, or
 * -1 with the errors logged and, if |out_err| is not NULL, copied there
 * (caller frees). */
static int reload(px_server_t *s, char **out_err) {
  if (s->config_path == NULL) {
    GH_WARN("proxy", "reload ignored: quick mode has no config file to re-read");
    if (out_err) *out_err = gh_strdup("quick mode has no config file to re-read");
    return -1;
  }
  char *err = NULL;
  conf_t *conf = conf_load(&err, s->config_path);
  if (conf == NULL) {
    if (out_err) *out_err = gh_strdup(err);
    GH_ERROR("proxy", "reload refused, still serving the previous configuration:");
    char *line = err, *save = NULL;
    for (line = strtok_r(err, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
      GH_ERROR("conf", "%s", line);
    }
    gh_free(err);
    return -1;
  }
  px_gen_t *gen = px_gen_new(&err, conf, s->challenges);
  if (gen == NULL) {
    conf_free(conf);
    return refuse_reload(out_err, err);
  }
  char *key = control_key(conf);
  int restart = s->control_key == NULL || strcmp(key, s->control_key) != 0;
  gh_free(key);
  if (restart && conf_acme_on(conf) &&
      (strcmp(conf->storage, s->gen->conf->storage) != 0 || conf->etcd.enabled)) {
    /* A storage the new thread could not open (a directory, a fleet's
     * encryption key file) is refused now, while the old thread still
     * runs. Opening a fleet's store does not contact etcd. */
    acme_storage_t *st = acme_storage_open_conf(&err, conf);
    if (st == NULL) {
      char *why = gh_asprintf("storage %s: %s", conf->storage, err);
      gh_free(err);
      px_gen_unref(gen);
      return refuse_reload(out_err, why);
    }
    acme_storage_free(st);
  }
  /* A new admin address is bound before anything is committed: if it
   * cannot be, the reload is refused and the old address keeps serving. */
  if (px_admin_apply(s->admin, &err, conf) != 0) {
    GH_ERROR("proxy", "reload refused: %s; still serving the previous configuration", err);
    if (out_err) *out_err = gh_asprintf("%s; still serving the previous configuration", err);
    gh_free(err);
    px_gen_unref(gen); /* and |conf| with it */
    return -1;
  }
  if (conf->workers != s->gen->conf->workers || !same_listeners(conf, s->gen->conf)) {
    GH_WARN("proxy", "reload: listener and worker changes take effect at the next restart "
                     "(listen, workers)");
  }
  gh_log_setup((gh_log_level_t)conf->log_level, (gh_log_format_t)conf->log_format);
  gh_log_configure(conf->log_file, conf->log_access_file); /* keeps the old files on failure */
  /* Managed certificates go into the new table before any worker sees it,
   * so no handshake under the new generation misses them. */
  cache_set_gen(s->cache, gen);
  px_ondemand_reconfigure(s->ondemand, gen);
  post_to_workers(s, gen, 0);
  px_gen_unref(s->gen);
  s->gen = gen;
  if (restart) restart_control(s);
  GH_INFO("proxy", "configuration reloaded from %s", s->config_path);
  return 0;
}

static int admin_reload(void *arg, char **out_err) { return reload(arg, out_err); }

static void stop_server(px_server_t *s) {
  s->stopping = 1;
  post_to_workers(s, NULL, 1);
  /* Like the on-demand state, the admin API posts to the control thread:
   * it stops first. */
  px_admin_stop(s->admin);
  if (s->ondemand) px_ondemand_stop(s->ondemand);
  px_control_stop(s->control);
  s->control = NULL;
  uv_close((uv_handle_t *)&s->sig_term, NULL);
  uv_close((uv_handle_t *)&s->sig_int, NULL);
  uv_close((uv_handle_t *)&s->sig_hup, NULL);
  uv_close((uv_handle_t *)&s->sig_usr1, NULL);
  uv_close((uv_handle_t *)&s->trim_timer, NULL);
  if (s->names != NULL) uv_close((uv_handle_t *)&s->done, NULL);
}

static void on_signal(uv_signal_t *h, int signum) {
  px_server_t *s = h->data;
  if (signum == SIGHUP) {
    reload(s, NULL);
    return;
  }
  if (signum == SIGUSR1) {
    gh_log_reopen(); /* the writer thread does it */
    return;
  }
  if (s->stopping) {
    GH_WARN("proxy", "second stop signal: exiting now");
    _exit(1);
  }
  GH_INFO("proxy", "%s: draining (up to %llums)", strsignal(signum),
          (unsigned long long)s->gen->conf->timeouts.drain_ms);
  stop_server(s);
}

/* Freed heap goes back to the system every PX_TRIM_MS. Bursts of large
 * bodies leave glibc's arenas holding free pages (its mmap threshold rises
 * with the largest buffer freed), so without this the resident size only
 * ever grows to the worst moment's; malloc_trim also releases free pages
 * in the middle of an arena. It runs on the main thread, off the hot path. */
#define PX_TRIM_MS 30000

static void trim_heap(uv_timer_t *t) {
  (void)t;
  malloc_trim(0);
}

static void on_obtain_done(uv_async_t *a) {
  px_server_t *s = a->data;
  if (!s->stopping) stop_server(s);
}

/* obtain_done runs on the control thread. */
static void obtain_done(void *arg, int status) {
  px_server_t *s = arg;
  atomic_store(&s->obtain_status, status);
  uv_async_send(&s->done);
}

/* serve runs px_run, or px_obtain when |names| is set. */
static int serve(conf_t *conf, const char *config_path, const char *const *names,
                 size_t num_names) {
  signal(SIGPIPE, SIG_IGN);
  /* Buffers of 64 KiB and more (write leftovers, pipelined input, a big
   * head) come from mmap and go back when freed; glibc would otherwise
   * raise this threshold to the largest buffer freed and keep such bursts
   * in its arenas, fragmented, for good (the soak's RSS growth). */
  mallopt(M_MMAP_THRESHOLD, 64 * 1024);
  char *err = NULL;
  px_server_t s = {0};
  s.config_path = config_path;
  s.names = names;
  s.num_names = num_names;
  atomic_init(&s.obtain_status, UV_ECANCELED);
  s.challenges = acme_challenges_new();
  s.gen = px_gen_new(&err, conf, s.challenges);
  if (s.gen == NULL) {
    GH_ERROR("proxy", "%s", err);
    gh_free(err);
    conf_free(conf);
    acme_challenges_free(s.challenges);
    return 1;
  }
  uv_loop_init(&s.loop);
  s.num_workers = conf->workers ? conf->workers : 1;
  s.workers = gh_calloc(s.num_workers, sizeof(px_worker_t *));
  uv_sem_t started;
  uv_sem_init(&started, 0);
  int failed = 0;
  for (unsigned i = 0; i < s.num_workers; i++) {
    s.workers[i] = worker_new(i, s.gen, &started);
  }
  if (names == NULL) {
    /* Made even with on-demand off: a reload may turn it on. */
    s.ondemand = px_ondemand_new(s.gen, s.workers, s.num_workers);
    for (unsigned i = 0; i < s.num_workers; i++) s.workers[i]->ondemand = s.ondemand;
  }
  for (unsigned i = 0; i < s.num_workers; i++) {
    uv_thread_create(&s.workers[i]->thread, worker_main, s.workers[i]);
  }
  for (unsigned i = 0; i < s.num_workers; i++) uv_sem_wait(&started);
  for (unsigned i = 0; i < s.num_workers; i++) failed |= s.workers[i]->start_err;
  uv_sem_destroy(&started);
  s.cache = acme_cache_new(gen_release);
  cache_set_gen(s.cache, s.gen);
  int listen_failed = failed;
  if (!failed && names != NULL) {
    uv_async_init(&s.loop, &s.done, on_obtain_done);
    s.done.data = &s;
    s.control = px_control_obtain(&err, s.gen, s.challenges, names, num_names, obtain_done, &s);
    if (s.control == NULL) {
      GH_ERROR("acme", "%s", err);
      gh_free(err);
      failed = 1;
    }
  } else if (!failed) {
    if (start_control(&s) != 0) failed = 1;
  }
  /* The admin server exists even without "admin", so that a reload can
   * add it. */
  if (!failed && names == NULL) {
    px_admin_env_t env = {.gen = &s.gen, .workers = s.workers, .num_workers = s.num_workers,
                          .control = &s.control, .ondemand = s.ondemand,
                          .reload = admin_reload, .reload_arg = &s};
    s.admin = px_admin_start(&err, &s.loop, &env);
    if (s.admin == NULL) {
      GH_ERROR("admin", "%s", err);
      gh_free(err);
      failed = 1;
    }
  }

  if (!failed) {
    uv_signal_init(&s.loop, &s.sig_term);
    uv_signal_init(&s.loop, &s.sig_int);
    uv_signal_init(&s.loop, &s.sig_hup);
    s.sig_term.data = s.sig_int.data = s.sig_hup.data = &s;
    uv_signal_start(&s.sig_term, on_signal, SIGTERM);
    uv_signal_start(&s.sig_int, on_signal, SIGINT);
    uv_signal_start(&s.sig_hup, on_signal, SIGHUP);
    uv_signal_init(&s.loop, &s.sig_usr1);
    s.sig_usr1.data = &s;
    uv_signal_start(&s.sig_usr1, on_signal, SIGUSR1);
    uv_timer_init(&s.loop, &s.trim_timer);
    uv_timer_start(&s.trim_timer, trim_heap, PX_TRIM_MS, PX_TRIM_MS);
    for (size_t i = 0; i < conf->num_https; i++)
      GH_INFO("proxy", "listening on %s (https)", conf->https[i].text);
    for (size_t i = 0; i < conf->num_http; i++)
      GH_INFO("proxy", "listening on %s (http)", conf->http[i].text);
    if (names == NULL) {
      GH_INFO("proxy", "gatehouse %s ready: %u worker(s), %zu site(s)", GATEHOUSE_VERSION,
              s.num_workers, conf->num_sites);
    }
    uv_run(&s.loop, UV_RUN_DEFAULT);
  } else {
    post_to_workers(&s, NULL, 1);
  }
  for (unsigned i = 0; i < s.num_workers; i++) uv_thread_join(&s.workers[i]->thread);
  /* The control thread may still wake workers (px_ondemand_finish): stop
   * it while their async handles exist. */
  px_admin_stop(s.admin);
  if (s.ondemand) px_ondemand_stop(s.ondemand);
  px_control_stop(s.control);
  s.control = NULL;
  gh_free(s.control_key);
  px_admin_free(s.admin);
  s.admin = NULL;
  for (unsigned i = 0; i < s.num_workers; i++) worker_free(s.workers[i]);
  gh_free(s.workers);
  px_ondemand_free(s.ondemand);
  uv_walk(&s.loop, worker_close_walk, NULL);
  uv_run(&s.loop, UV_RUN_DEFAULT);
  uv_loop_close(&s.loop);
  acme_cache_free(s.cache);
  px_gen_unref(s.gen);
  acme_challenges_free(s.challenges);
  if (names != NULL) {
    if (listen_failed) return PX_OBTAIN_LISTEN_FAILED;
    return failed ? 1 : atomic_load(&s.obtain_status);
  }
  if (!failed) GH_INFO("proxy", "stopped");
  return failed ? 1 : 0;
}

/* serve_logged runs serve with the log writer thread: lines go to
 * log.file / log.access_file through the rings until serve returns, and
 * what is queued then is written before the process goes on to exit. */
static int serve_logged(conf_t *conf, const char *config_path, const char *const *names,
                        size_t num_names) {
  if (gh_log_configure(conf->log_file, conf->log_access_file) != 0) {
    conf_free(conf);
    return 1;
  }
  int rc = gh_log_start(conf->log_buffer);
  if (rc != 0) GH_WARN("proxy", "log writer thread: %s; logging directly", uv_strerror(rc));
  rc = serve(conf, config_path, names, num_names);
  gh_log_stop();
  return rc;
}

/* listeners_free reports whether every listener of |conf| can be bound.
 * Workers bind with SO_REUSEPORT, which would silently share the ports with
 * another gatehouse already running there (the kernel would split the
 * connections between the two): probe without it first and refuse. */
static int listeners_free(const conf_t *conf) {
  for (size_t i = 0; i < conf->num_https + conf->num_http; i++) {
    const conf_addr_t *addr =
        i < conf->num_https ? &conf->https[i] : &conf->http[i - conf->num_https];
    char *err = NULL;
    if (px_listen_probe(addr, &err) != 0) {
      int in_use = errno == EADDRINUSE;
      GH_ERROR("proxy", "%s%s", err, in_use ? " (is another server running there?)" : "");
      gh_free(err);
      return 0;
    }
  }
  return 1;
}

int px_run(conf_t *conf, const char *config_path) {
  if (!listeners_free(conf)) {
    conf_free(conf);
    return 1;
  }
  return serve_logged(conf, config_path, NULL, 0);
}

int px_obtain(conf_t *conf, const char *const *names, size_t num_names) {
  /* A running gatehouse would share the ports and leave the CA's
   * validations to chance. */
  if (!listeners_free(conf)) {
    conf_free(conf);
    return PX_OBTAIN_LISTEN_FAILED;
  }
  return serve_logged(conf, NULL, names, num_names);
}
