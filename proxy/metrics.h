/* metrics.h: the data plane's counters and their Prometheus rendering.
 *
 * Counters live in the structs of the thread that moves them (a worker's
 * px_worker_stats_t, a listener's px_listener_stats_t): one writer each,
 * bumped with PX_STAT_ADD, a relaxed store of the incremented value (no
 * lock, no read-modify-write on a shared cache line; the same instruction
 * as a plain increment). GET /metrics sums them from another thread with
 * relaxed loads: a scrape may miss the last few increments, never tears. */
#ifndef GH_PROXY_METRICS_H
#define GH_PROXY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "acme/acme.h"
#include "acme/policy.h"
#include "acme/storage.h"

/* PX_STAT_ADD adds |n| to the counter |field|; only its owner calls it. */
#define PX_STAT_ADD(field, n) __atomic_store_n(&(field), (field) + (n), __ATOMIC_RELAXED)
#define PX_STAT_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/* Handshake outcomes, coarse on purpose. */
typedef enum {
  PX_HS_OK,
  PX_HS_TIMEOUT,      /* the handshake timeout expired */
  PX_HS_CLOSED,       /* the client closed the connection mid-handshake */
  PX_HS_ALERT,        /* the client sent a fatal alert */
  PX_HS_UNKNOWN_NAME, /* no certificate for the name (or on-demand refused it) */
  PX_HS_PROTOCOL,     /* any other TLS error */
  PX_HS_NUM,
} px_hs_result_t;

/* Upstream slots: 0 is "no upstream" (answered locally), 1..MAX name the
 * upstream addresses in order of first use; later ones share "other". */
#define PX_METRICS_MAX_UPSTREAMS 62
#define PX_METRICS_SLOT_OTHER (PX_METRICS_MAX_UPSTREAMS + 1)
#define PX_METRICS_NUM_SLOTS (PX_METRICS_MAX_UPSTREAMS + 2)

/* Why a worker declined to pause a handshake for an on-demand name. */
typedef enum {
  PX_OD_PRECHECK,       /* name hygiene or not in on_demand.allow */
  PX_OD_NEGATIVE_CACHE, /* refused within negative_ttl */
  PX_OD_CAPACITY,       /* max_paused_handshakes or max_pending_names */
  PX_OD_FAILED,         /* woken after the name could not be obtained */
  PX_OD_NUM,
} px_od_refusal_t;

/* Why a connection to a proxy_protocol listener was closed before its
 * PROXY header was taken. */
typedef enum {
  PX_PP_UNTRUSTED, /* the peer is not in the listener's proxy_trusted */
  PX_PP_INVALID,   /* what came first is not a PROXY header we accept */
  PX_PP_TIMEOUT,   /* no whole header within timeouts.handshake */
  PX_PP_CLOSED,    /* the peer closed before sending one */
  PX_PP_NUM,
} px_pp_refusal_t;

typedef struct {
  uint64_t handshakes[PX_HS_NUM];
  uint64_t pp_refused[PX_PP_NUM];
  uint64_t od_refused[PX_OD_NUM];
  uint64_t bytes_in, bytes_out; /* on the client side, as on the wire */
  /* Requests by upstream slot and status class (0: none/other, 1-5:
   * px_status_classes). */
  uint64_t requests[PX_METRICS_NUM_SLOTS][6];
  /* The same requests by the client's protocol: [0] HTTP/1.x, [1] HTTP/2. */
  uint64_t requests_by_proto[2][6];
  uint64_t h2_conns; /* connections that negotiated h2 */
  uint64_t h2_calm;  /* HTTP/2 connections ended with ENHANCE_YOUR_CALM (floods) */
} px_worker_stats_t;

/* The status classes' names, as the requests counters index them. */
extern const char *const px_status_classes[6];

typedef struct {
  uint64_t accepted, closed; /* open = accepted - closed */
} px_listener_stats_t;

/* px_metrics_upstream_slot returns the slot of the upstream address named
 * |text| (1..PX_METRICS_MAX_UPSTREAMS, or PX_METRICS_SLOT_OTHER once the
 * slots are spent), assigning one on first use. Any thread; takes a lock,
 * so callers cache the answer (px_addr_t.stat_slot). */
unsigned px_metrics_upstream_slot(const char *text);

/* px_metrics_slot_name returns the address text of |slot| ("" for 0,
 * "other" for PX_METRICS_SLOT_OTHER), or NULL if the slot is unused. */
const char *px_metrics_slot_name(unsigned slot);

/* What a scrape reads besides the workers' counters. */
struct px_worker;
struct px_gen;

typedef struct {
  const char *name;
  int64_t not_after;         /* seconds since the epoch */
  unsigned renewal_failures; /* consecutive, from the renewal state in meta.json */
} px_metrics_cert_t;

typedef struct {
  uint64_t allowed, refused; /* on-demand names decided by the control thread */
  acme_policy_stats_t policy; /* the control thread's policy counters */
} px_metrics_ondemand_t;

typedef struct {
  struct px_worker *const *workers;
  unsigned num_workers;
  struct px_gen *gen;           /* the current generation: upstream health */
  long num_paused;              /* handshakes paused now; -1 without on-demand */
  const px_metrics_cert_t *certs; /* expiry per certificate name */
  size_t num_certs;
  const px_metrics_ondemand_t *ondemand; /* NULL without on-demand */
  const acme_ca_stats_t *cas;     /* acme_engine_ca_stats: the CAs, in order; none without ACME */
  size_t num_cas;
  uint64_t log_dropped;           /* gh_log_dropped */
  const acme_fleet_stats_t *fleet; /* NULL without a fleet store */
} px_metrics_src_t;

/* px_metrics_render returns the Prometheus text exposition (version 0.0.4)
 * of |src| as a new NUL-terminated string of |*out_len| bytes (caller frees
 * with gh_free). Any thread, while the workers exist. */
char *px_metrics_render(size_t *out_len, const px_metrics_src_t *src);

#endif
