/* etcd.h: a small, synchronous etcd v3 client over etcd's JSON gateway
 * (grpc-gateway: POST /v3/kv/range and friends, keys and values as
 * standard base64, 64-bit integers as JSON strings). It is the transport
 * of the fleet storage (issue 15).
 *
 * Threads. Every call blocks, bounded by the configured timeout, on plain
 * sockets (poll(2) for the deadlines, no libuv), so it may be made from any
 * thread: the control thread (as Caddy's storage interface does) and one
 * watcher thread. A handle is not locked: use one acme_etcd_t per thread,
 * and a watch only from the thread of the client that opened it.
 *
 * Endpoints. Requests go to the current endpoint over one keep-alive
 * connection (HTTP/1.1, TLS when the endpoint is https://). When a request
 * fails to connect, times out, or gets a 5xx, the client moves to the next
 * endpoint and tries again, once per endpoint, but only when a repeat is
 * safe:
 *   - always when the request was never sent (connect or TLS handshake
 *     failed) or when a reused keep-alive connection was found closed
 *     before any response byte (as acme/httpc.c does);
 *   - otherwise only for reads (get, list), lease keepalive and revoke,
 *     acme_etcd_create_if_absent and acme_etcd_put_if (guarded
 *     transactions: see there), and an acme_etcd_txn whose caller set
 *     |retry_safe|. put, delete and lease grant are not repeated once sent.
 * The endpoint that answered stays current for the next request.
 *
 * Authentication. With a username, the client gets a token from
 * /v3/auth/authenticate before its first request and sends it as the
 * Authorization header; a request refused with "invalid auth token" (the
 * token expired, or the server restarted) gets a new token and is repeated
 * once.
 *
 * Errors. Every function returning int returns 0 (or a non-negative
 * result named below) or a negative code: -errno for the transport
 * (-ETIMEDOUT, -ECONNREFUSED, -ECONNRESET, -EPROTO for a malformed
 * response, -EMSGSIZE for one over ACME_ETCD_MAX_RESPONSE, -EINVAL for bad
 * arguments), or one of the ACME_ETCD_E* codes below. On failure |*out_err|
 * is set to a message (caller frees) that names the endpoint and what
 * failed: the HTTP status and etcd's own message from its JSON error
 * ({"error": ..., "message": ..., "code": ...}). On success |*out_err| is
 * NULL.
 *
 * Ownership. Keys and values passed in are gh_str_t views (binary-safe,
 * copied during the call). What comes back (acme_etcd_kv_t and arrays of
 * them, events) is owned by the caller and released with the matching
 * *_free / *_cleanup function. */
#ifndef GH_ACME_ETCD_H
#define GH_ACME_ETCD_H

#include <stddef.h>
#include <stdint.h>

#include "acme/httpc.h"
#include "common/common.h"

#define ACME_ETCD_DEFAULT_TIMEOUT_MS 2000u
#define ACME_ETCD_MAX_RESPONSE (16u << 20) /* one response, or one watch message */

/* etcd answered with an error: a non-2xx status or a JSON error. */
#define ACME_ETCD_ESERVER (-30201)
/* Authentication failed (wrong user or password, permission denied, or
 * auth required and no username configured). */
#define ACME_ETCD_EAUTH (-30202)
/* TLS handshake or certificate verification (the same as httpc's). */
#define ACME_ETCD_ETLS ACME_HTTPC_ETLS

typedef struct acme_etcd acme_etcd_t;
typedef struct acme_etcd_watch acme_etcd_watch_t;

typedef struct {
  const char *const *endpoints; /* "http://host:port" or "https://host:port" */
  size_t num_endpoints;
  const char *ca;       /* PEM roots for https endpoints; NULL: the system's */
  const char *cert;     /* client certificate chain (PEM) for mTLS, or NULL */
  const char *key;      /* its private key (PEM), with |cert| */
  const char *username; /* NULL: no authentication */
  const char *password;
  uint64_t timeout_ms; /* per request (each endpoint tried); 0: the default */
} acme_etcd_conf_t;

/* A key-value pair. |key| and |value| are NUL-terminated copies (the NUL
 * not counted in the lengths), so text may be used as a C string. */
typedef struct {
  uint8_t *key;
  size_t key_len;
  uint8_t *value;
  size_t value_len;
  int64_t create_revision, mod_revision, version, lease;
} acme_etcd_kv_t;

/* acme_etcd_new returns a client for |conf| (copied: it need not outlive
 * the call) without connecting. Returns NULL and sets |*out_err| (caller
 * frees) for a malformed endpoint, an unreadable CA, certificate or key
 * file, or a password without a username. */
acme_etcd_t *acme_etcd_new(char **out_err, const acme_etcd_conf_t *conf);

/* acme_etcd_free closes the connection and frees |c|; a watch opened on it
 * must be freed first. acme_etcd_free(NULL) does nothing. */
void acme_etcd_free(acme_etcd_t *c);

/* acme_etcd_endpoint returns the URL of the current endpoint (owned by
 * |c|, valid until the next call on it). */
const char *acme_etcd_endpoint(const acme_etcd_t *c);

/* acme_etcd_kv_cleanup frees what |kv| holds and zeroes it;
 * acme_etcd_kvs_free frees an array of |num| pairs. Both accept NULL. */
void acme_etcd_kv_cleanup(acme_etcd_kv_t *kv);
void acme_etcd_kvs_free(acme_etcd_kv_t *kvs, size_t num);

/* ---- KV ---- */

/* acme_etcd_get reads |key| (a linearizable read). Returns 0, setting
 * |*out_found| (1: |*out_kv| holds the pair, caller cleans it up; 0: no
 * such key, |*out_kv| zeroed) and |*out_revision| (the store's revision,
 * from the response header; may be NULL). Repeated on another endpoint. */
int acme_etcd_get(acme_etcd_t *c, char **out_err, acme_etcd_kv_t *out_kv, int *out_found,
                  int64_t *out_revision, gh_str_t key);

/* acme_etcd_list reads every key starting with |prefix| (not empty), in
 * key order, in pages of ACME_ETCD_PAGE keys that all read the revision of
 * the first page (one consistent snapshot). Returns 0 and sets |*out_kvs|
 * (caller frees with acme_etcd_kvs_free; NULL when none), |*out_num| and
 * |*out_revision| (the snapshot's revision: watch from revision + 1). */
#define ACME_ETCD_PAGE 500
int acme_etcd_list(acme_etcd_t *c, char **out_err, acme_etcd_kv_t **out_kvs, size_t *out_num,
                   int64_t *out_revision, gh_str_t prefix);

/* acme_etcd_put writes |key| = |value|, bound to lease |lease| (0: none).
 * Returns 0 and sets |*out_revision| (the revision of the write; may be
 * NULL). Not repeated once sent. */
int acme_etcd_put(acme_etcd_t *c, char **out_err, int64_t *out_revision, gh_str_t key,
                  gh_str_t value, int64_t lease);

/* acme_etcd_delete deletes |key|, or with |prefix| set every key starting
 * with it. Returns 0 and sets |*out_deleted| (how many; may be NULL) and
 * |*out_revision| (may be NULL). Not repeated once sent. */
int acme_etcd_delete(acme_etcd_t *c, char **out_err, int64_t *out_deleted,
                     int64_t *out_revision, gh_str_t key, int prefix);

/* ---- transactions ---- */

typedef enum {
  ACME_ETCD_CMP_CREATE, /* create_revision == revision (0: the key is absent) */
  ACME_ETCD_CMP_MOD,    /* mod_revision == revision */
  ACME_ETCD_CMP_VALUE,  /* value == value */
} acme_etcd_cmp_target_t;

typedef struct {
  gh_str_t key;
  acme_etcd_cmp_target_t target;
  int64_t revision;
  gh_str_t value;
} acme_etcd_cmp_t;

typedef enum {
  ACME_ETCD_OP_PUT,    /* key = value, with lease (0: none) */
  ACME_ETCD_OP_DELETE, /* key */
  ACME_ETCD_OP_GET,    /* key: its pair is returned */
} acme_etcd_op_type_t;

typedef struct {
  acme_etcd_op_type_t type;
  gh_str_t key;
  gh_str_t value;
  int64_t lease;
} acme_etcd_op_t;

typedef struct {
  const acme_etcd_cmp_t *cmps; /* all must hold (equality only) */
  size_t num_cmps;
  const acme_etcd_op_t *success; /* run when they hold */
  size_t num_success;
  const acme_etcd_op_t *failure; /* run otherwise */
  size_t num_failure;
  int retry_safe; /* the caller vouches that running it twice is harmless */
} acme_etcd_txn_t;

/* acme_etcd_txn runs |txn| atomically. Returns 0 and sets |*out_succeeded|
 * (whether the compares held), |*out_revision| (the header revision: the
 * revision of the writes when it succeeded; may be NULL) and, when
 * |out_kvs| is not NULL, the pairs the GET ops of the branch that ran
 * found, in order (caller frees with acme_etcd_kvs_free). */
int acme_etcd_txn(acme_etcd_t *c, char **out_err, int *out_succeeded, int64_t *out_revision,
                  acme_etcd_kv_t **out_kvs, size_t *out_num_kvs, const acme_etcd_txn_t *txn);

/* acme_etcd_create_if_absent creates |key| = |value| bound to |lease| only
 * if |key| does not exist (the order lock). Returns 0 and sets
 * |*out_created| and |*out_revision|: the key's create_revision, ours when
 * created (the fencing token), the holder's when refused. Safe to repeat:
 * when the key exists with our lease and value, a lost answer to our own
 * earlier attempt is assumed and it counts as created (use a value unique
 * to the caller, e.g. its node id, with a lease of its own). */
int acme_etcd_create_if_absent(acme_etcd_t *c, char **out_err, int *out_created,
                               int64_t *out_revision, gh_str_t key, gh_str_t value,
                               int64_t lease);

/* acme_etcd_put_if writes |key| = |value| (bound to |lease|, 0: none) only
 * if |guard_key|'s create_revision is still |guard_create_revision| (the
 * fenced write: the lock taken with acme_etcd_create_if_absent still
 * exists and is the same one). Returns 0 and sets |*out_done| and
 * |*out_revision| (the write's revision when done; may be NULL). Safe to
 * repeat: a second run writes the same value under the same guard. */
int acme_etcd_put_if(acme_etcd_t *c, char **out_err, int *out_done, int64_t *out_revision,
                     gh_str_t key, gh_str_t value, int64_t lease, gh_str_t guard_key,
                     int64_t guard_create_revision);

/* ---- leases ---- */

/* acme_etcd_lease_grant creates a lease of |ttl_s| seconds. Returns 0 and
 * sets |*out_id| and |*out_ttl_s| (the TTL granted). Not repeated once
 * sent (a repeat could leave an orphan lease until its TTL ends). */
int acme_etcd_lease_grant(acme_etcd_t *c, char **out_err, int64_t *out_id, int64_t *out_ttl_s,
                          int64_t ttl_s);

/* acme_etcd_lease_keepalive renews lease |id| once. Returns 0 and sets
 * |*out_ttl_s| to its new remaining TTL, 0 when the lease is gone (expired
 * or revoked: whatever was bound to it is deleted). */
int acme_etcd_lease_keepalive(acme_etcd_t *c, char **out_err, int64_t *out_ttl_s, int64_t id);

/* acme_etcd_lease_revoke ends lease |id| and deletes the keys bound to it.
 * Returns 0, also when the lease was already gone ("lease not found" on a
 * repeat after a lost answer). */
int acme_etcd_lease_revoke(acme_etcd_t *c, char **out_err, int64_t id);

/* ---- watch ---- */

typedef enum { ACME_ETCD_EVENT_PUT, ACME_ETCD_EVENT_DELETE } acme_etcd_event_type_t;

typedef struct {
  acme_etcd_event_type_t type;
  acme_etcd_kv_t kv; /* for a DELETE: key and mod_revision only */
} acme_etcd_event_t;

/* acme_etcd_watch_next's results besides errors. */
typedef enum {
  ACME_ETCD_WATCH_EVENTS = 0,    /* events (or, with none, a progress note) */
  ACME_ETCD_WATCH_TIMEOUT = 1,   /* nothing within the time given */
  ACME_ETCD_WATCH_COMPACTED = 2, /* the start revision was compacted */
} acme_etcd_watch_result_t;

/* acme_etcd_watch_open watches every key starting with |prefix| (not
 * empty) from revision |start_revision| (0: from now), with progress
 * notifications, on a connection of its own to |c|'s current endpoint
 * (rotating as requests do while opening). Returns the watch once etcd has
 * confirmed it, or NULL with |*out_err| set. Used only from |c|'s thread;
 * free it before |c|. */
acme_etcd_watch_t *acme_etcd_watch_open(acme_etcd_t *c, char **out_err, gh_str_t prefix,
                                        int64_t start_revision);

/* acme_etcd_watch_next waits up to |timeout_ms| for the next message.
 * Returns:
 *  - ACME_ETCD_WATCH_EVENTS with |*out_events| (caller frees with
 *    acme_etcd_events_free; NULL when none) and |*out_num| set, in
 *    revision order; |*out_revision| is the header revision (progress);
 *  - ACME_ETCD_WATCH_TIMEOUT, nothing set: check whether to stop, call
 *    again;
 *  - ACME_ETCD_WATCH_COMPACTED with |*out_revision| the compact revision:
 *    the events since the start are lost; re-list and open a new watch;
 *  - a negative code with |*out_err| set: the stream is broken; open a new
 *    watch from acme_etcd_watch_revision().
 * After COMPACTED or an error the watch only returns that again. */
int acme_etcd_watch_next(acme_etcd_watch_t *w, char **out_err, acme_etcd_event_t **out_events,
                         size_t *out_num, int64_t *out_revision, uint64_t timeout_ms);

/* acme_etcd_watch_revision returns the revision to resume from: one past
 * the last event or progress note delivered (or the start revision). */
int64_t acme_etcd_watch_revision(const acme_etcd_watch_t *w);

/* acme_etcd_watch_free closes the stream and frees |w|. NULL does
 * nothing. */
void acme_etcd_watch_free(acme_etcd_watch_t *w);

void acme_etcd_events_free(acme_etcd_event_t *events, size_t num);

#endif
