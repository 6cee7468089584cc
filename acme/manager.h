/* manager.h: the certificate plane's policy, on the control thread's loop
 * (DESIGN.md "The three planes"): which certificates the server needs,
 * when each is ordered, renewed or loaded from storage, and where it goes
 * once it is there. The data plane reaches it only through the control
 * thread, which passes on the names it is asked for and is told through
 * acme_manager_hooks_t when they are done.
 *
 * Managed sites. Every site of the configuration without static
 * certificate files (and without a "*" host) is "managed": at start the
 * manager installs its stored certificate if one is stored, covers the
 * site's names, has not expired and was not revoked, and otherwise orders
 * one (names = the site's hosts, the first being the storage name). A
 * failed order is logged and retried after a backoff that doubles from 1
 * minute to 1 hour. The managed sites are those of the configuration the
 * manager was made with; a site added by a reload gets its certificate at
 * the next start.
 *
 * Renewal. Every certificate installed (managed, on-demand, or found in
 * storage at start) gets a renewal time computed from the certificate:
 * when a third of its lifetime is left (whatever the lifetime), a little
 * earlier by jitter. Where the CA's directory offers renewalInfo (ACME
 * Renewal Information, RFC 9773), a random moment in the CA's suggested
 * window wins instead, asked again as its Retry-After says, and the new
 * order names the certificate it replaces. One timer fires for the
 * earliest event. A renewal orders the same names again (or installs a
 * newer valid certificate that another process stored); the engine stores
 * the result and the new certificate replaces the old one in the table
 * (handshakes in flight keep their reference). A failure retries after a
 * back-off with jitter that doubles from 1 minute to 6 hours (never past
 * the expiry less a margin, but never before the CA's Retry-After),
 * recorded in the certificate's meta.json so a restart resumes it. An
 * expired certificate that was not renewed is logged as an error once an
 * hour. A revoked certificate (acme_manager_cert_revoked) is renewed at
 * once and, after a restart, not served at all.
 *
 * On demand (DESIGN.md flow 2). A name posted with acme_manager_ondemand
 * is served from storage when a valid, unrevoked certificate is stored
 * there (the on-demand policy is still asked first, without charging its
 * rate limits), and otherwise ordered if the policy allows it. At most 4
 * on-demand orders are in flight; more wait in arrival order. Every
 * certificate in storage that is not a managed site's is scheduled for
 * renewal at start, so an idle name does not expire unnoticed.
 *
 * "Install" hands a certificate to an acme_cache_t (acme/cache.h), which
 * puts it into the data plane's current certificate table.
 *
 * Every function must be called on the loop's thread. */
#ifndef GH_ACME_MANAGER_H
#define GH_ACME_MANAGER_H

#include <uv.h>

#include "acme/acme.h"
#include "acme/cache.h"
#include "acme/policy.h"
#include "acme/storage.h"
#include "conf/conf.h"

typedef struct acme_manager acme_manager_t;

/* acme_manager_hooks_t is how the manager answers the on-demand names the
 * data plane posts. Both are called on the loop's thread. */
typedef struct {
  /* ondemand_done (required): |name| is finished, |ok| when its
   * certificate is installed, 0 when it was refused or could not be
   * obtained, |why| saying why (valid during the call), or NULL when it
   * was cancelled (the manager is stopping). Called once for every
   * acme_manager_ondemand call, also while stopping. */
  void (*ondemand_done)(void *arg, const char *name, int ok, const char *why);
  /* policy_stats (NULL: none): the on-demand policy's counters after a
   * decision, for metrics; |stats| is valid during the call. */
  void (*policy_stats)(void *arg, const acme_policy_stats_t *stats);
  /* limits (NULL: the policy's own): the rate limits' state, kept across
   * managers (acme_policy_new). */
  acme_policy_limits_t *limits;
  void *arg;
} acme_manager_hooks_t;

/* acme_manager_new returns a manager on |loop| for |conf| (its sites,
 * acme and on_demand settings; |conf| must outlive the manager), which
 * orders through |engine|, reads and writes |storage| and installs into
 * |cache|; none of them is owned, and |engine| must stay until
 * acme_manager_stop, the others until acme_manager_free. With |ondemand|
 * (copied; NULL: no on-demand names) it builds the on_demand policy (one
 * that cannot be built is logged, and every name is then refused). The
 * work starts from the loop, at its next turn. */
acme_manager_t *acme_manager_new(uv_loop_t *loop, const conf_t *conf, acme_engine_t *engine,
                                 acme_storage_t *storage, acme_cache_t *cache,
                                 const acme_manager_hooks_t *ondemand);

/* acme_manager_stop stops scheduling: its timers close, the policy's
 * decisions in flight are cancelled, and names waiting for an order slot
 * finish as not ok. Free the engine right after it: orders in flight then
 * end with UV_ECANCELED and install nothing. */
void acme_manager_stop(acme_manager_t *m);

/* acme_manager_free releases |m| after acme_manager_stop, once its loop
 * has run until no handle or request is left (no callback can still
 * arrive). acme_manager_free(NULL) does nothing. */
void acme_manager_free(acme_manager_t *m);

/* acme_manager_ondemand serves the on-demand name |name| (lower case,
 * already through acme_policy_precheck) for client |client_ip| (text form,
 * NULL or "" when unknown), as described at the top. The outcome comes
 * through hooks.ondemand_done, perhaps before this returns. A manager made
 * without hooks ignores it. */
void acme_manager_ondemand(acme_manager_t *m, const char *name, const char *client_ip);

/* acme_manager_cert_renewed tells the renewal scheduler that |cert| was
 * obtained and installed for the storage name |name| outside it (an
 * operator's renew): the next renewal is computed from |cert|. */
void acme_manager_cert_renewed(acme_manager_t *m, const char *name, const acme_cert_t *cert);

/* acme_manager_cert_revoked records in |name|'s meta.json that its stored
 * certificate was revoked and renews it at once; until the new one is
 * installed the revoked one is still served (nothing better exists), and
 * after a restart it is never installed. */
void acme_manager_cert_revoked(acme_manager_t *m, const char *name);

/* Why a certificate is renewed when it is (acme_manager_renewal_view). */
typedef enum {
  ACME_RENEW_LIFETIME = 0, /* with a third of its lifetime left (acme_renewal_nominal) */
  ACME_RENEW_ARI,          /* inside the window the CA's renewal information suggests */
  ACME_RENEW_RETRY,        /* after failed renewals, backing off */
  ACME_RENEW_REVOKED,      /* it was revoked: now */
  ACME_RENEW_FLEET,        /* another node of the fleet renews it: look again then */
} acme_renew_source_t;

typedef struct {
  time_t due;                 /* the next attempt */
  acme_renew_source_t source;
  time_t ari_start, ari_end;  /* the CA's suggested window, when it gave one */
  int ordering;               /* an order for it is running now */
} acme_renewal_view_t;

/* acme_manager_renewal_view copies |name|'s renewal as scheduled now into
 * |out|. Returns 0, or -1 when the manager follows no certificate of that
 * storage name. Any thread, until acme_manager_free. */
int acme_manager_renewal_view(acme_manager_t *m, const char *name, acme_renewal_view_t *out);

/* acme_manager_renewal_views copies every renewal the manager follows
 * into |*out| (a new array of |*out_num|, sorted by storage name; free
 * with acme_renewal_views_free): one lock for a whole listing. Any
 * thread, until acme_manager_free. */
typedef struct {
  char *name;
  acme_renewal_view_t view;
} acme_renewal_named_t;

void acme_manager_renewal_views(acme_manager_t *m, acme_renewal_named_t **out, size_t *out_num);
void acme_renewal_views_free(acme_renewal_named_t *views, size_t num);

/* Fleets (issue 15): the control thread passes on what the store's watch
 * reports. acme_manager_fleet_cert: |name|'s certificate as any node
 * stored it (|cert| a reference for the call, |meta| its JSON), or NULL
 * when it was deleted. A valid one that is new here is installed (a site
 * it covers, or an on-demand name when on_demand is on), its renewal
 * scheduled from it, and the on-demand handshakes that waited for another
 * node's order answered; a revoked or deleted on-demand name stops being
 * served. */
void acme_manager_fleet_cert(acme_manager_t *m, const char *name, acme_cert_t *cert,
                             const char *meta);

/* acme_manager_fleet_unlocked: the order lock on |name| is gone. Names
 * that waited for the node that held it and got no certificate are
 * ordered here (that node failed or died). */
void acme_manager_fleet_unlocked(acme_manager_t *m, const char *name);

#endif
