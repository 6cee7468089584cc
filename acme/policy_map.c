/* policy_map.c: the policy's bounded state — string-keyed maps with expiry
 * and an LRU bound, and the token buckets some of them hold.
 *
 * Keys are attacker-chosen (SNI names, client addresses), so slots are
 * picked with SipHash under a random key (no hash flooding), and every map
 * holds at most |cap| entries: a new entry first drops up to a few expired
 * ones from the cold end, then, if still full, the least recently used. */
#include <openssl/rand.h>
#include <openssl/siphash.h>
#include <stdio.h>

#include "acme/policy_internal.h"
#include "common/common.h"

#define INITIAL_SLOTS 64
#define SWEEP_PER_PUT 4

/* ---- token buckets ---- */

typedef unsigned __int128 u128;

static u128 bucket_cap(const conf_rate_t *rate) { return (u128)rate->count * rate->per_ms; }

static int unlimited(const conf_rate_t *rate) { return rate->count == 0 || rate->per_ms == 0; }

void acme__bucket_init(acme__bucket_t *b, const conf_rate_t *rate, uint64_t now_ms) {
  b->level = bucket_cap(rate);
  b->at_ms = now_ms;
}

int acme__bucket_has(acme__bucket_t *b, const conf_rate_t *rate, uint64_t now_ms) {
  if (unlimited(rate)) return 1;
  if (now_ms > b->at_ms) {
    /* Each millisecond adds |count| units; a token is |per_ms| units. */
    u128 cap = bucket_cap(rate);
    u128 add = (u128)(now_ms - b->at_ms) * rate->count;
    b->level = cap - b->level <= add ? cap : b->level + add;
    b->at_ms = now_ms;
  }
  return b->level >= rate->per_ms;
}

void acme__bucket_take(acme__bucket_t *b, const conf_rate_t *rate) {
  if (unlimited(rate) || b->level < rate->per_ms) return;
  b->level -= rate->per_ms;
}

uint64_t acme__bucket_full_at(const acme__bucket_t *b, const conf_rate_t *rate) {
  if (unlimited(rate)) return b->at_ms;
  u128 missing = bucket_cap(rate) - b->level;
  u128 ms = (missing + rate->count - 1) / rate->count;
  return ms >= UINT64_MAX - b->at_ms ? UINT64_MAX : b->at_ms + (uint64_t)ms;
}

void acme__format_rate(char *buf, size_t buf_len, const conf_rate_t *rate) {
  static const struct {
    uint64_t ms;
    const char *unit;
  } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}};
  if (unlimited(rate)) {
    snprintf(buf, buf_len, "unlimited");
    return;
  }
  for (size_t i = 0; i < GH_ARRAY_LEN(units); i++) {
    if (rate->per_ms % units[i].ms == 0) {
      snprintf(buf, buf_len, "%u/%llu%s", (unsigned)rate->count,
               (unsigned long long)(rate->per_ms / units[i].ms), units[i].unit);
      return;
    }
  }
}

/* ---- maps ---- */

void acme__pmap_init(acme__pmap_t *m, size_t cap) {
  memset(m, 0, sizeof(*m));
  m->num_slots = INITIAL_SLOTS;
  m->slots = gh_calloc(m->num_slots, sizeof(*m->slots));
  m->cap = cap > 0 ? cap : 1;
  gh_list_init(&m->lru);
  RAND_bytes((uint8_t *)m->seed, sizeof(m->seed));
}

void acme__pmap_cleanup(acme__pmap_t *m) {
  while (!gh_list_empty(&m->lru)) {
    acme__pmap_del(m, GH_CONTAINER_OF(m->lru.next, acme__pmap_entry_t, lru));
  }
  gh_free(m->slots);
  m->slots = NULL;
}

static acme__pmap_entry_t **slot_of(acme__pmap_t *m, uint64_t hash) {
  return &m->slots[hash & (m->num_slots - 1)];
}

static void grow(acme__pmap_t *m) {
  size_t old_num = m->num_slots;
  acme__pmap_entry_t **old = m->slots;
  m->num_slots = old_num * 2;
  m->slots = gh_calloc(m->num_slots, sizeof(*m->slots));
  for (size_t i = 0; i < old_num; i++) {
    acme__pmap_entry_t *e = old[i];
    while (e != NULL) {
      acme__pmap_entry_t *next = e->chain;
      acme__pmap_entry_t **s = slot_of(m, e->hash);
      e->chain = *s;
      *s = e;
      e = next;
    }
  }
  gh_free(old);
}

void acme__pmap_del(acme__pmap_t *m, acme__pmap_entry_t *e) {
  for (acme__pmap_entry_t **pp = slot_of(m, e->hash); *pp != NULL; pp = &(*pp)->chain) {
    if (*pp == e) {
      *pp = e->chain;
      break;
    }
  }
  gh_list_remove(&e->lru);
  m->count--;
  gh_free(e);
}

static int expired(const acme__pmap_entry_t *e, uint64_t now_ms) {
  return e->expires_ms != 0 && now_ms >= e->expires_ms;
}

static acme__pmap_entry_t *find(acme__pmap_t *m, const char *key, size_t key_len, uint64_t hash) {
  for (acme__pmap_entry_t *e = *slot_of(m, hash); e != NULL; e = e->chain) {
    if (e->hash == hash && e->key_len == key_len && memcmp(e->key, key, key_len) == 0) return e;
  }
  return NULL;
}

acme__pmap_entry_t *acme__pmap_get(acme__pmap_t *m, const char *key, size_t key_len,
                                   uint64_t now_ms) {
  uint64_t hash = SIPHASH_24(m->seed, (const uint8_t *)key, key_len);
  acme__pmap_entry_t *e = find(m, key, key_len, hash);
  if (e == NULL) return NULL;
  if (expired(e, now_ms)) {
    acme__pmap_del(m, e);
    return NULL;
  }
  gh_list_remove(&e->lru);
  gh_list_insert(&m->lru, &e->lru);
  return e;
}

acme__pmap_entry_t *acme__pmap_put(acme__pmap_t *m, const char *key, size_t key_len,
                                   uint64_t now_ms) {
  acme__pmap_entry_t *e = acme__pmap_get(m, key, key_len, now_ms);
  if (e != NULL) return e;
  /* Expired entries gather at the cold end when TTLs are alike; drop a few
   * of them there so a busy map stays small, then enforce the bound. */
  for (int i = 0; i < SWEEP_PER_PUT && !gh_list_empty(&m->lru); i++) {
    acme__pmap_entry_t *cold = GH_CONTAINER_OF(m->lru.prev, acme__pmap_entry_t, lru);
    if (!expired(cold, now_ms)) break;
    acme__pmap_del(m, cold);
  }
  if (m->count >= m->cap) {
    acme__pmap_del(m, GH_CONTAINER_OF(m->lru.prev, acme__pmap_entry_t, lru));
  }
  if (m->count >= m->num_slots) grow(m);
  e = gh_calloc(1, sizeof(*e) + key_len + 1);
  memcpy(e->key, key, key_len);
  e->key_len = key_len;
  e->hash = SIPHASH_24(m->seed, (const uint8_t *)key, key_len);
  acme__pmap_entry_t **s = slot_of(m, e->hash);
  e->chain = *s;
  *s = e;
  gh_list_insert(&m->lru, &e->lru);
  m->count++;
  return e;
}
