/* cache.h: the certificates the certificate plane has installed for the
 * data plane to serve, remembered so that every new certificate table gets
 * them too (a reload builds a new table before any worker sees it).
 *
 * Two kinds of entry. A managed site's certificate is put into the table
 * under each of the site's host patterns and stays. An on-demand name's
 * certificate is put under that one name; at most a given capacity of them
 * stay in memory, and beyond it the least recently used one (see
 * acme_cert_touch) leaves the cache and the table: it is loaded again from
 * storage at its next handshake.
 *
 * The table installs go to is set by the caller together with the
 * configuration it serves and an opaque |owner| that keeps both alive (the
 * data plane's generation). Everything is under one mutex: the control
 * thread installs while the main thread switches tables, so every function
 * may be called from any thread. */
#ifndef GH_ACME_CACHE_H
#define GH_ACME_CACHE_H

#include <stddef.h>

#include "acme/certs.h"
#include "conf/conf.h"

typedef struct acme_cache acme_cache_t;

/* acme_cache_release_fn gives up an |owner| passed to acme_cache_set_table
 * once the cache no longer installs into its table. */
typedef void (*acme_cache_release_fn)(void *owner);

/* acme_cache_new returns an empty cache with no table yet (installs are
 * only remembered); |release| is called for each owner it lets go. */
acme_cache_t *acme_cache_new(acme_cache_release_fn release);

/* acme_cache_free releases every certificate and the current owner.
 * acme_cache_free(NULL) does nothing. */
void acme_cache_free(acme_cache_t *c);

/* acme_cache_set_table puts every remembered certificate into |table|
 * (NULL: none), under the patterns that |conf| still manages — a site
 * without certificate files for a site's certificate, on_demand.enabled
 * for an on-demand one, as a reload may have changed either — and makes
 * |table| the one later installs go to. The cache holds |owner|, which
 * must keep |table| and |conf| alive, until the next call or
 * acme_cache_free, and then releases it (after this call's installs). */
void acme_cache_set_table(acme_cache_t *c, acme_cert_table_t *table, const conf_t *conf,
                          void *owner);

/* acme_cache_install_site remembers |cert| (taking a reference) as the
 * certificate of |site| (known by its first host), replacing the previous
 * one, and puts it into the current table under each of the site's host
 * patterns (and as the default certificate for the default site). */
void acme_cache_install_site(acme_cache_t *c, const conf_site_t *site, acme_cert_t *cert);

/* acme_cache_install_name remembers |cert| (taking a reference) as the
 * on-demand certificate of |name| and puts it into the current table; a
 * new name beyond |capacity| on-demand certificates (0: no cap) first
 * evicts the least recently used one. Installing counts as a use. */
void acme_cache_install_name(acme_cache_t *c, const char *name, acme_cert_t *cert,
                             size_t capacity);

/* acme_cache_evict_name forgets the on-demand certificate of |name| and
 * takes it out of the current table, so that a new table does not get it
 * back. Returns 1 if it was there, else 0. */
int acme_cache_evict_name(acme_cache_t *c, const char *name);

#endif
