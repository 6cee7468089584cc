/* policy_internal.h: what the policy files (policy.c, policy_check.c,
 * policy_map.c) and their unit test share. Nothing else includes it. */
#ifndef GH_ACME_POLICY_INTERNAL_H
#define GH_ACME_POLICY_INTERNAL_H

#include "acme/policy.h"
#include "common/list.h"

/* acme__registered_domain finds the registered domain (eTLD+1) of |name|
 * (|len| bytes, lower case, already checked by acme_policy_precheck): the
 * longest public suffix that ends |name| — from a small built-in set of
 * well-known multi-label suffixes ("co.uk", "github.io", ...), the
 * |extra_suffixes[0..num_extra)|, or else its last label — plus one more
 * label. A name that is itself a public suffix is its own registered
 * domain. Sets |*out_start| to where it begins within |name| and returns
 * its length (0, with |*out_start| = |name|, for an empty name). */
size_t acme__registered_domain(const char *name, size_t len, const char *const *extra_suffixes,
                               size_t num_extra, const char **out_start);

/* A token bucket in fixed point: one token is |per_ms| units and each
 * millisecond adds |count| units, up to |count| tokens, so refill is exact
 * integer arithmetic. A bucket not yet used is full. */
typedef struct {
  unsigned __int128 level;
  uint64_t at_ms; /* when |level| was last brought up to date */
} acme__bucket_t;

/* acme__bucket_init makes |b| full at |now_ms|. */
void acme__bucket_init(acme__bucket_t *b, const conf_rate_t *rate, uint64_t now_ms);

/* acme__bucket_has reports (1 or 0) whether |b| holds a whole token at
 * |now_ms| under |rate| (always 1 when rate->count is 0), after refilling
 * it; acme__bucket_take then removes that token. acme__bucket_full_at
 * returns when |b| will be full again. */
int acme__bucket_has(acme__bucket_t *b, const conf_rate_t *rate, uint64_t now_ms);
void acme__bucket_take(acme__bucket_t *b, const conf_rate_t *rate);
uint64_t acme__bucket_full_at(const acme__bucket_t *b, const conf_rate_t *rate);

/* acme__format_rate writes "10/1h" for |rate| into |buf|. */
void acme__format_rate(char *buf, size_t buf_len, const conf_rate_t *rate);

/* ---- the bounded maps ---- */

#define ACME__REASON_MAX 160

typedef struct acme__pmap_entry {
  struct acme__pmap_entry *chain; /* next in the same slot */
  gh_link_t lru;                  /* most recently used first */
  uint64_t hash;
  uint64_t expires_ms; /* dropped when met at or after this time */
  union {
    struct {
      int status;                   /* ask cache: the HTTP status */
      char reason[ACME__REASON_MAX]; /* negative cache */
    } verdict;
    acme__bucket_t bucket;
    void *ptr; /* asks in flight */
  } u;
  size_t key_len;
  char key[]; /* NUL-terminated */
} acme__pmap_entry_t;

typedef struct {
  acme__pmap_entry_t **slots;
  size_t num_slots; /* a power of two */
  size_t count;
  size_t cap;
  gh_link_t lru;
  uint64_t seed[2];
} acme__pmap_t;

/* acme__pmap_init makes an empty map of at most |cap| entries;
 * acme__pmap_cleanup frees every entry. */
void acme__pmap_init(acme__pmap_t *m, size_t cap);
void acme__pmap_cleanup(acme__pmap_t *m);

/* acme__pmap_get returns the entry for |key|, marking it most recently
 * used, or NULL when there is none or it expired by |now_ms| (it is then
 * dropped). */
acme__pmap_entry_t *acme__pmap_get(acme__pmap_t *m, const char *key, size_t key_len,
                                   uint64_t now_ms);

/* acme__pmap_put returns the entry for |key|, creating it zeroed (with
 * expires_ms 0) if needed; a new entry may first drop expired entries and,
 * when the map is full, the least recently used one. */
acme__pmap_entry_t *acme__pmap_put(acme__pmap_t *m, const char *key, size_t key_len,
                                   uint64_t now_ms);

/* acme__pmap_del drops |e| from |m| and frees it. */
void acme__pmap_del(acme__pmap_t *m, acme__pmap_entry_t *e);

/* acme__policy_set_clock replaces the policy's clock (gh_now_ms) for the
 * caches and buckets, so tests can move time. NULL restores gh_now_ms. */
void acme__policy_set_clock(acme_policy_t *p, uint64_t (*now_ms)(void));

/* acme__policy_set_map_cap sets the capacity of every map of |p| (tests of
 * the bounds); only before the first decision. */
void acme__policy_set_map_cap(acme_policy_t *p, size_t cap);

#endif
