/* cache.c: the installed certificates and their on-demand LRU eviction
 * (see cache.h). A short array is enough: managed sites are few, and the
 * on-demand entries are bounded by on_demand.cache_capacity. */
#include "acme/cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "common/common.h"
#include "common/log.h"

typedef struct {
  char **hosts; /* the site's host patterns (one name for on-demand) */
  size_t num_hosts;
  int on_demand; /* installed by acme_cache_install_name */
  acme_cert_t *cert;
} entry_t;

struct acme_cache {
  pthread_mutex_t mu;
  acme_cache_release_fn release;
  /* Where installs go: the table, the configuration it serves, and what
   * keeps both alive. */
  acme_cert_table_t *table;
  const conf_t *conf;
  void *owner;
  entry_t *entries;
  size_t num_entries;
};

acme_cache_t *acme_cache_new(acme_cache_release_fn release) {
  acme_cache_t *c = gh_calloc(1, sizeof(*c));
  pthread_mutex_init(&c->mu, NULL);
  c->release = release;
  return c;
}

static void entry_cleanup(entry_t *e) {
  for (size_t i = 0; i < e->num_hosts; i++) gh_free(e->hosts[i]);
  gh_free(e->hosts);
  e->hosts = NULL;
  acme_cert_unref(e->cert);
  e->cert = NULL;
}

void acme_cache_free(acme_cache_t *c) {
  if (c == NULL) return;
  for (size_t i = 0; i < c->num_entries; i++) entry_cleanup(&c->entries[i]);
  gh_free(c->entries);
  c->entries = NULL;
  if (c->owner != NULL && c->release != NULL) c->release(c->owner);
  c->owner = NULL;
  pthread_mutex_destroy(&c->mu);
  gh_free(c);
}

/* put_entry maps |e|'s patterns in |table|, those that |conf| still
 * manages (a reload may have given a name static files or dropped it).
 * Called with c->mu held. */
static void put_entry(acme_cert_table_t *table, const conf_t *conf, const entry_t *e) {
  if (table == NULL || conf == NULL) return;
  if (e->on_demand) {
    if (conf->on_demand.enabled) acme_cert_table_put(table, e->hosts[0], e->cert);
    return;
  }
  for (size_t h = 0; h < e->num_hosts; h++) {
    for (size_t i = 0; i < conf->num_sites; i++) {
      const conf_site_t *site = &conf->sites[i];
      if (site->cert_file != NULL) continue;
      for (size_t k = 0; k < site->num_hosts; k++) {
        if (strcmp(site->hosts[k], e->hosts[h]) != 0) continue;
        acme_cert_table_put(table, e->hosts[h], e->cert);
        /* The same key the TLS code uses for the default certificate. */
        if (site->is_default) acme_cert_table_put(table, "*", e->cert);
      }
    }
  }
}

void acme_cache_set_table(acme_cache_t *c, acme_cert_table_t *table, const conf_t *conf,
                          void *owner) {
  pthread_mutex_lock(&c->mu);
  for (size_t i = 0; i < c->num_entries; i++) put_entry(table, conf, &c->entries[i]);
  void *old = c->owner;
  c->table = table;
  c->conf = conf;
  c->owner = owner;
  pthread_mutex_unlock(&c->mu);
  if (old != NULL && c->release != NULL) c->release(old);
}

/* add_entry returns a new, zeroed entry at the end of the list. Called
 * with c->mu held. */
static entry_t *add_entry(acme_cache_t *c) {
  c->entries = gh_realloc(c->entries, (c->num_entries + 1) * sizeof(*c->entries));
  entry_t *e = &c->entries[c->num_entries++];
  memset(e, 0, sizeof(*e));
  return e;
}

/* remove_entry drops entry |i| from the list (not from the table). Called
 * with c->mu held. */
static void remove_entry(acme_cache_t *c, size_t i) {
  entry_cleanup(&c->entries[i]);
  c->entries[i] = c->entries[--c->num_entries];
}

void acme_cache_install_site(acme_cache_t *c, const conf_site_t *site, acme_cert_t *cert) {
  pthread_mutex_lock(&c->mu);
  entry_t *e = NULL;
  for (size_t i = 0; i < c->num_entries && e == NULL; i++) {
    if (!c->entries[i].on_demand && c->entries[i].num_hosts > 0 &&
        strcmp(c->entries[i].hosts[0], site->hosts[0]) == 0)
      e = &c->entries[i];
  }
  if (e == NULL) {
    e = add_entry(c);
  } else {
    entry_cleanup(e);
  }
  e->hosts = gh_calloc(site->num_hosts, sizeof(char *));
  for (size_t i = 0; i < site->num_hosts; i++) e->hosts[i] = gh_strdup(site->hosts[i]);
  e->num_hosts = site->num_hosts;
  e->cert = acme_cert_ref(cert);
  put_entry(c->table, c->conf, e);
  pthread_mutex_unlock(&c->mu);
}

/* evict_lru drops the least recently used on-demand certificate from the
 * list and the table: it reloads from storage at its next handshake.
 * Called with c->mu held. */
static void evict_lru(acme_cache_t *c) {
  size_t victim = c->num_entries;
  uint64_t oldest = UINT64_MAX;
  for (size_t i = 0; i < c->num_entries; i++) {
    if (!c->entries[i].on_demand) continue;
    uint64_t used = atomic_load_explicit(&c->entries[i].cert->last_used_, memory_order_relaxed);
    if (used < oldest) {
      oldest = used;
      victim = i;
    }
  }
  if (victim == c->num_entries) return;
  if (c->table != NULL) acme_cert_table_put(c->table, c->entries[victim].hosts[0], NULL);
  GH_DEBUG("ondemand", "%s: evicted from memory (cache_capacity)", c->entries[victim].hosts[0]);
  remove_entry(c, victim);
}

void acme_cache_install_name(acme_cache_t *c, const char *name, acme_cert_t *cert,
                             size_t capacity) {
  pthread_mutex_lock(&c->mu);
  entry_t *e = NULL;
  size_t num_on_demand = 0;
  for (size_t i = 0; i < c->num_entries; i++) {
    if (!c->entries[i].on_demand) continue;
    num_on_demand++;
    if (strcmp(c->entries[i].hosts[0], name) == 0) e = &c->entries[i];
  }
  if (e == NULL) {
    if (capacity && num_on_demand >= capacity) evict_lru(c);
    e = add_entry(c);
  } else {
    entry_cleanup(e);
  }
  e->hosts = gh_calloc(1, sizeof(char *));
  e->hosts[0] = gh_strdup(name);
  e->num_hosts = 1;
  e->on_demand = 1;
  e->cert = acme_cert_ref(cert);
  /* Installing counts as a use: what was just obtained is not evicted first. */
  acme_cert_touch(e->cert);
  put_entry(c->table, c->conf, e);
  pthread_mutex_unlock(&c->mu);
}

int acme_cache_evict_name(acme_cache_t *c, const char *name) {
  int found = 0;
  pthread_mutex_lock(&c->mu);
  for (size_t i = 0; i < c->num_entries; i++) {
    if (!c->entries[i].on_demand || strcmp(c->entries[i].hosts[0], name) != 0) continue;
    if (c->table != NULL) acme_cert_table_put(c->table, name, NULL);
    remove_entry(c, i);
    found = 1;
    break;
  }
  pthread_mutex_unlock(&c->mu);
  return found;
}
