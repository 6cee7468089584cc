/* manager_fleet.c: what a fleet's other nodes did, as the store's watch
 * reports it (see manager.h): their certificates installed here, their
 * revocations and deletions followed, and this node's on-demand names
 * that waited for them answered. */
#include <string.h>
#include <time.h>

#include "acme/manager_internal.h"
#include "common/common.h"
#include "common/log.h"

void acme_manager_fleet_cert(acme_manager_t *m, const char *name, acme_cert_t *cert,
                             const char *meta) {
  if (m->stopping) return;
  acme__site_t *site = acme__manager_site_of(m, name);
  acme_renewal_state_t state;
  acme_renewal_state_parse(&state, meta);
  if (cert == NULL || state.revoked) {
    /* Deleted or revoked by another node: an on-demand name stops being
     * served (it is obtained again at its next handshake); a site keeps
     * its certificate until the node that revoked it has the new one
     * (nothing better exists). */
    if (site == NULL && acme_cache_evict_name(m->cache, name))
      GH_INFO("fleet", "%s: %s by another node: no longer served", name,
              cert == NULL ? "deleted" : "revoked");
    if (cert == NULL) acme__manager_od_retry(m, name);
    return;
  }
  const acme_cert_t *have = acme__manager_tracked(m, name);
  if (acme_cert_same(have, cert)) { /* ours, or known already */
    acme__manager_od_wake(m, name, cert);
    return;
  }
  time_t now = time(NULL);
  if (cert->not_after <= now || (have != NULL && have->not_after > cert->not_after)) return;
  if (site != NULL) {
    if (!acme__manager_covers(cert, site->site)) return;
    acme_cache_install_site(m->cache, site->site, cert);
    uv_timer_stop(&site->retry); /* its own order, if it lost the race, is not needed */
    site->backoff_ms = 0;
  } else if (m->ondemand && m->conf->on_demand.enabled &&
             acme_policy_precheck(&m->conf->on_demand, name, strlen(name)) == NULL) {
    acme_cache_install_name(m->cache, name, cert, m->conf->on_demand.cache_capacity);
  } else {
    return; /* a name this node does not serve (its on_demand.allow differs) */
  }
  char *serial = acme_cert_serial_hex(cert);
  GH_INFO("fleet", "%s: certificate installed from the fleet (serial %s)", name,
          serial ? serial : "?");
  gh_free(serial);
  acme__manager_track(m, name, site, cert);
  acme__manager_od_wake(m, name, cert);
}

void acme_manager_fleet_unlocked(acme_manager_t *m, const char *name) {
  if (!m->stopping) acme__manager_od_retry(m, name);
}
