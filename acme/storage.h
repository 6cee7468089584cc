/* storage.h: the ACME storage directory — accounts, certificates and the
 * per-name locks that keep two processes from ordering the same name.
 *
 * Layout under the root (DESIGN.md "Storage layout"):
 *
 *   accounts/<ca-host>/<account-id>.json    0600, opaque JSON from the caller
 *   accounts/<ca-host>/ca-state.json        the CA's back-off (engine's ca_state.c)
 *   certs/<name>/current -> v-<time>-<rand>  symlink, switched atomically
 *   certs/<name>/v-<time>-<rand>/cert.pem    0644, chain, leaf first
 *                                key.pem     0600
 *                                meta.json   0644, opaque JSON from the caller
 *   certs/<name>/cert.pem -> current/cert.pem  (and key.pem, meta.json), so
 *                                the paths of DESIGN.md work for operators
 *   locks/<name>                             0600, flock()ed while ordering
 *
 * Every directory is created 0700 and existing ones are never loosened.
 * Every file write is atomic: a temporary ".tmp-<pid>-<hex>" in the same
 * directory, written, fsync()ed, renamed over the target, and the directory
 * fsync()ed. A crash leaves the old or the new file, never a torn one.
 * Temporaries are invisible to readers; acme_storage_open removes those
 * whose process is gone.
 *
 * A certificate is three files that must change together. Each version is a
 * complete, immutable directory and `current` is a symlink renamed over the
 * old one (the Kubernetes AtomicWriter scheme): rename(2) is the only step
 * that publishes, so a reader following `current` sees the old (cert, key,
 * meta) or the new one, whatever instant a writer crashes at. Renaming
 * cert.pem and key.pem one after the other could not give that: a crash
 * between the two renames would pair a new certificate with an old key.
 *
 * Names. A certificate name is a lower-case DNS name of LDH labels (at most
 * 253 characters, labels 1-63, no leading or trailing hyphen), optionally
 * with a leading "*." for a wildcard. On disk "*." is written "_wildcard."
 * ('*' is hostile to shells, and '_' cannot occur in an LDH name, so the
 * mapping is reversible); the stored form must fit NAME_MAX (255), which
 * limits a wildcard's parent to 245 characters. A CA is named by the host
 * of its directory URL, "host" or "host_port" when the URL has a port; an
 * account id is 1-200 of [a-z0-9._@+-] starting with a letter or digit.
 * Every name is checked before it touches the filesystem, so "..", "/",
 * NUL, empty and absolute names never reach a path.
 *
 * The directory backend serves one host: locks are flock(2) and stray
 * temporaries are judged by local pids. A fleet shares a different store.
 *
 * Functions return 0 on success or a negative errno: -ENOENT when nothing
 * is stored, -EINVAL for an invalid name, URL or JSON argument, -EBADMSG
 * for a stored entry that is corrupt, others from the filesystem. Every
 * failure sets |*out_err| (caller frees) to a message naming the file.
 * A handle may be used by one thread at a time; several handles, in one
 * process or several, may share a directory. */
#ifndef GH_ACME_STORAGE_H
#define GH_ACME_STORAGE_H

#include <stddef.h>

#include "acme/certs.h"
#include "conf/conf.h"
#include "common/common.h"

typedef struct acme_storage acme_storage_t;

/* acme_storage_open opens the storage directory |root|, creating it and its
 * missing parents 0700. It fails if |root| is not a directory, is writable
 * by others, or is not writable by us. It removes temporaries left by dead
 * processes. Returns a new handle (free with acme_storage_free), or NULL
 * with |*out_err| set. */
acme_storage_t *acme_storage_open(char **out_err, const char *root);

/* acme_storage_open_conf opens the store |conf| names: its storage
 * directory, or with storage.etcd the fleet's etcd store (storage_etcd.c)
 * with that directory as the node's local copy. etcd is not contacted
 * here: a node whose etcd is down still starts, from its copy. */
acme_storage_t *acme_storage_open_conf(char **out_err, const conf_t *conf);

/* acme_storage_shared reports (1 or 0) whether |st| is a fleet's shared
 * store (etcd): its locks, certificates and challenge records are seen by
 * every node. */
int acme_storage_shared(const acme_storage_t *st);

/* acme_storage_down reports (1 or 0) whether the last call to |st|'s
 * shared store failed to reach it (reads were then served from the local
 * copy). Always 0 for a directory. */
int acme_storage_down(const acme_storage_t *st);

/* acme_storage_keepalive renews an etcd store's node lease when a third of
 * it has passed (call it on a timer, well within fleet.lease_ttl); the
 * directory needs none. Returns 0 or a negative error (logged). */
int acme_storage_keepalive(acme_storage_t *st);

/* Challenge records (issue 15): in a fleet the CA's validator may reach
 * any node, so a node writes each challenge it is about to have validated
 * to the store, bound to its lease, before telling the CA, and every node
 * answers from what it watched (or, on a miss, from a read). |id| is the
 * HTTP-01 token (base64url) or the TLS-ALPN-01 name; |key_auth| the key
 * authorization. A directory store has none: -ENOTSUP. */
struct acme_storage_lock; /* acme__storage_lock, below */
typedef enum {
  ACME_STORAGE_HTTP01 = 0,
  ACME_STORAGE_TLSALPN01 = 1,
} acme_storage_challenge_t;
/* With |lock| (the order's lock on its name; NULL: none) a write is
 * fenced like a certificate's: refused (-ESTALE) once another node holds
 * the name, so a node that stalled never overwrites or removes the new
 * holder's record. */
int acme_storage_challenge_put(acme_storage_t *st, char **out_err, acme_storage_challenge_t kind,
                               const char *id, const char *key_auth,
                               const struct acme_storage_lock *lock);
int acme_storage_challenge_delete(acme_storage_t *st, char **out_err,
                                  acme_storage_challenge_t kind, const char *id,
                                  const struct acme_storage_lock *lock);
/* acme_storage_challenge_get reads one record (a linearizable read):
 * 0 with |*out_key_auth| (caller frees), -ENOENT, or another error. */
int acme_storage_challenge_get(acme_storage_t *st, char **out_key_auth, char **out_err,
                               acme_storage_challenge_t kind, const char *id);

/* acme_storage_watch_start follows a fleet (etcd) store from a thread of
 * its own (with its own etcd client). From that thread it calls
 * |cbs->cert| for every certificate stored now, then for every one put
 * (|cert| a reference for the call only, |meta| its JSON) or deleted
 * (|cert| and |meta| NULL) by any node; and |cbs->challenge| likewise for
 * challenge records (|key_auth| NULL: deleted, or gone with its node's
 * lease). All in revision order; after a compaction or a broken stream it
 * lists again (calling back for what is there then). Returns NULL with
 * |*out_err| for a directory store. Stop it (acme_storage_watch_stop waits
 * for the thread, at most about 0.5 s) before freeing the store. */
typedef struct acme_storage_watcher acme_storage_watcher_t;
typedef struct {
  void (*cert)(void *arg, const char *name, acme_cert_t *cert, const char *meta);
  void (*challenge)(void *arg, acme_storage_challenge_t kind, const char *id,
                    const char *key_auth);
  /* unlocked (NULL: not wanted): the order lock on |name| is gone,
   * released by its holder or lapsed with its node's lease. */
  void (*unlocked)(void *arg, const char *name);
  /* refused (NULL: not wanted): a node refused the on-demand name |name|
   * for |why| until |until_ms| (wall clock, ms since the epoch). */
  void (*refused)(void *arg, const char *name, const char *why, uint64_t until_ms);
} acme_storage_watch_cbs_t;
acme_storage_watcher_t *acme_storage_watch_start(acme_storage_t *st, char **out_err,
                                                 const acme_storage_watch_cbs_t *cbs, void *arg);
void acme_storage_watch_stop(acme_storage_watcher_t *w);

/* Fleet-wide on-demand limits and refusals (issue 15), so N nodes do not
 * each allow the whole budget or each retry a name one of them was
 * refused. acme_storage_limit_take takes one order from the fleet's window
 * |limit_key| ("domain/example.com", "global"), |count| per |per_ms|:
 * 0, -EDQUOT with |*out_err| saying when the window ends, -ENOTSUP for a
 * directory (its node's own buckets are the limit), or another error.
 * acme_storage_refusal_put records that |name| was refused for |why|,
 * for |ttl_ms| (0 for a directory); acme_storage_refusal_get reads it back:
 * 0 with |*out_why| (caller frees), -ENOENT, or another error. */
int acme_storage_limit_take(acme_storage_t *st, char **out_err, const char *limit_key,
                            uint32_t count, uint64_t per_ms);
int acme_storage_refusal_put(acme_storage_t *st, char **out_err, const char *name,
                             const char *why, uint64_t ttl_ms);
int acme_storage_refusal_get(acme_storage_t *st, char **out_why, const char *name);

/* acme_storage_fleet_stats: the process's fleet counters, for metrics.
 * |enabled| once a fleet store was opened; |up| whether its last call
 * reached etcd; |outages| the times it went from reachable to not. */
typedef struct {
  int enabled, up;
  uint64_t outages, watch_events, challenge_reads, fence_refusals;
} acme_fleet_stats_t;
void acme_storage_fleet_stats(acme_fleet_stats_t *out);

/* A challenge reader answers the data plane's misses (a validator asked
 * this node about a challenge another node published, before this node's
 * watch delivered it) with a linearizable read of the record, from any
 * thread. It is built to be asked by strangers: ids are checked, reads
 * are serialized, at most 50 a second are made, none for a second after
 * one failed to reach etcd, and each waits at most 500 ms.
 * acme_storage_reader_new returns NULL for a directory store. */
typedef struct acme_storage_reader acme_storage_reader_t;
acme_storage_reader_t *acme_storage_reader_new(acme_storage_t *st, char **out_err);
/* acme_storage_reader_challenge returns the key authorization of the
 * record (|id|, |id_len| bytes), a new string (caller frees), or NULL. */
char *acme_storage_reader_challenge(acme_storage_reader_t *r, acme_storage_challenge_t kind,
                                    const char *id, size_t id_len);
void acme_storage_reader_free(acme_storage_reader_t *r);

/* acme_storage_free closes |st|. acme_storage_free(NULL) does nothing. */
void acme_storage_free(acme_storage_t *st);

/* acme_storage_account_save stores |json| (a JSON object: the account URL,
 * key and whatever else the caller keeps) as the account |account_id| at
 * the CA whose directory URL is |ca_url|, replacing any previous one
 * atomically. Returns 0 or a negative errno with |*out_err|. */
int acme_storage_account_save(acme_storage_t *st, char **out_err, const char *ca_url,
                              const char *account_id, gh_str_t json);

/* acme_storage_account_load reads the account stored by
 * acme_storage_account_save. On success |*out_json| is a new NUL-terminated
 * string (caller frees with gh_free) holding a JSON object. Returns 0,
 * -ENOENT if there is none, or another negative errno; |*out_err| is set on
 * every failure. */
int acme_storage_account_load(acme_storage_t *st, char **out_json, char **out_err,
                              const char *ca_url, const char *account_id);

/* acme_storage_bundle_t is what is stored for a certificate name. */
typedef struct {
  gh_str_t chain_pem; /* leaf first */
  gh_str_t key_pem;
  gh_str_t meta_json; /* a JSON object, opaque to storage */
} acme_storage_bundle_t;

/* acme_storage_cert_save stores |bundle| under |name|, replacing the
 * previous bundle atomically as a whole. The key must match the leaf and
 * the meta must be a JSON object, or nothing is written (-EINVAL). Returns
 * 0 or a negative errno with |*out_err|. */
int acme_storage_cert_save(acme_storage_t *st, char **out_err, const char *name,
                           const acme_storage_bundle_t *bundle);

/* acme_storage_cert_save_over is acme_storage_cert_save for a new version
 * of the same certificate (its meta changed): in a fleet it stores only if
 * the stored leaf is still |expected|, else -ESTALE (another node replaced
 * it meanwhile, and its version stays). */
int acme_storage_cert_save_over(acme_storage_t *st, char **out_err, const char *name,
                                const acme_storage_bundle_t *bundle, const acme_cert_t *expected);

/* acme_storage_cert_load reads the bundle stored under |name|. On success
 * |*out_cert| holds one reference (caller unrefs) and, if |out_meta| is not
 * NULL, |*out_meta| is the meta JSON text (caller frees). Returns 0,
 * -ENOENT if nothing is stored under |name|, -EBADMSG if what is stored is
 * corrupt, or another negative errno; |*out_err| is set on every failure
 * and names the file. */
int acme_storage_cert_load(acme_storage_t *st, acme_cert_t **out_cert, char **out_meta,
                           char **out_err, const char *name);

/* acme_storage_cert_peek is acme_storage_cert_load for a certificate that
 * is only described (the admin API's listing): its |key| may be NULL, as
 * the private key is not read where that can be avoided. */
int acme_storage_cert_peek(acme_storage_t *st, acme_cert_t **out_cert, char **out_meta,
                           char **out_err, const char *name);

/* acme_storage_cert_version tells which version of |name|'s bundle is
 * stored now: a new string (caller frees) that changes whenever anything
 * in the bundle does (the certificate, its key or its meta), without
 * reading the bundle; a reader that kept what it parsed at that version
 * can reuse it. Returns 0, or a negative errno (-ENOTSUP: this store does
 * not tell; -ENOENT: nothing stored). */
int acme_storage_cert_version(acme_storage_t *st, char **out_version, const char *name);

/* acme_storage_cert_list returns the names that have a stored bundle, in
 * their original form ("*.example.com"), sorted. On success |*out_names| is
 * a new array of |*out_num_names| strings (free with
 * acme_storage_names_free). Returns 0 or a negative errno with |*out_err|. */
int acme_storage_cert_list(acme_storage_t *st, char ***out_names, size_t *out_num_names,
                           char **out_err);

/* acme_storage_names_free frees a list from acme_storage_cert_list. */
void acme_storage_names_free(char **names, size_t num_names);

/* acme_storage_cert_delete removes every version stored under |name|.
 * Returns 0, -ENOENT if nothing was stored, or another negative errno with
 * |*out_err|. */
int acme_storage_cert_delete(acme_storage_t *st, char **out_err, const char *name);

/* ---- internal to acme/ ---- */

/* acme__storage_printable returns a copy of |s| fit for a message (caller
 * frees): at most 80 characters, anything but printable ASCII as '?'. */
char *acme__storage_printable(const char *s);

/* Results of acme__storage_lock besides negative errnos. */
typedef enum {
  ACME_STORAGE_LOCK_ACQUIRED = 0,
  ACME_STORAGE_LOCK_HELD = 1, /* another holder, in this process or another */
} acme_storage_lock_result_t;

typedef struct acme_storage_lock acme_storage_lock_t;

/* acme__storage_lock takes the lock on |name| without waiting, for the
 * duration of an order. The lock is flock(2) on locks/<name>: the kernel
 * drops it when its holder dies, however it dies, so a crashed holder never
 * leaves a stale lock and no pid or expiry has to be trusted to decide that
 * a lock may be taken over (two processes that both judged an O_EXCL lock
 * file stale could both take it over). The file records "pid= host=
 * expires=" (now + |ttl_s|) for operators and for the message given to a
 * refused locker; a live holder past its expiry is reported, never
 * preempted. Holders are open file descriptions: a second call in the same
 * process is refused too, and a child forked while the lock is held shares
 * it until the child exits or execs (the descriptor is O_CLOEXEC).
 *
 * Returns ACME_STORAGE_LOCK_ACQUIRED with |*out_lock| set (release with
 * acme__storage_unlock), ACME_STORAGE_LOCK_HELD with |*out_err| naming the
 * holder, or a negative errno with |*out_err|. */
int acme__storage_lock(acme_storage_t *st, acme_storage_lock_t **out_lock, char **out_err,
                       const char *name, unsigned ttl_s);

/* acme__storage_unlock releases and frees |lock|. NULL does nothing. */
void acme__storage_unlock(acme_storage_lock_t *lock);

/* acme__storage_lock_fresh reports whether the holder of |lock| may still
 * act on it: 1 for a directory lock (flock lasts while we live) and for a
 * fleet lock whose node lease was renewed recently enough that it cannot
 * lapse before the next step; 0 with |*out_why| (caller frees) when the
 * lease was lost or has not been renewed for two thirds of its TTL (a node
 * that was stopped, or cut off from etcd), so the order stops before its
 * next ACME request instead of racing the node that takes the name over.
 * NULL is fresh. */
int acme__storage_lock_fresh(const acme_storage_lock_t *lock, char **out_why);

/* acme__storage_name_encode checks the certificate name |name| and writes
 * its on-disk form ("*." as "_wildcard.") to |out| (|out_size| bytes, 256
 * is always enough). Returns 0, or -EINVAL with |*out_err| saying why. */
int acme__storage_name_encode(char *out, size_t out_size, char **out_err, const char *name);

/* acme__storage_name_decode is the inverse: it checks that |file| is the
 * on-disk form of a valid name and writes the name to |out|. Returns 0 or
 * -EINVAL (no message: directory entries that are not names are skipped). */
int acme__storage_name_decode(char *out, size_t out_size, const char *file);

/* acme__storage_ca_dir maps the CA directory URL |ca_url|
 * ("https://host[:port]/path") to its directory name, "host" or
 * "host_port", in |out|. Returns 0, or -EINVAL with |*out_err|. */
int acme__storage_ca_dir(char *out, size_t out_size, char **out_err, const char *ca_url);

#endif
