/* log_ring.c: the single-producer, single-consumer line ring (see
 * log_ring.h). The producer publishes a record by storing the tail with
 * release order after copying it; the consumer frees its space by storing
 * the head with release order after it is done with the bytes. */
#include "common/log_ring.h"

#include <string.h>

#include "common/common.h"

#define PAD_RECORD UINT32_MAX
#define HDR_LEN 4u

static size_t align4(size_t n) { return (n + 3) & ~(size_t)3; }

gh_log_ring_t *gh_log_ring_new(size_t cap) {
  size_t c = 4096;
  while (c < cap && c < ((size_t)1 << 30)) c <<= 1;
  gh_log_ring_t *r = gh_calloc(1, sizeof(*r));
  r->buf = gh_malloc(c);
  r->cap = c;
  atomic_init(&r->head, 0);
  atomic_init(&r->tail, 0);
  atomic_init(&r->dropped, 0);
  atomic_init(&r->kicked, 0);
  return r;
}

void gh_log_ring_free(gh_log_ring_t *r) {
  if (r == NULL) return;
  gh_free(r->buf);
  gh_free(r);
}

int gh_log_ring_push(gh_log_ring_t *r, unsigned dest, const char *p, size_t len) {
  uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
  uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
  size_t need = HDR_LEN + align4(len);
  size_t off = (size_t)(tail & (r->cap - 1));
  size_t to_end = r->cap - off; /* a multiple of 4: records are */
  size_t total = need > to_end ? to_end + need : need;
  if (len == 0 || len > (UINT32_MAX >> 1) || total > r->cap - (size_t)(tail - head)) {
    /* Only the producer writes the counter: no read-modify-write needed. */
    atomic_store_explicit(&r->dropped,
                          atomic_load_explicit(&r->dropped, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    return -1;
  }
  if (need > to_end) {
    uint32_t pad = PAD_RECORD;
    memcpy(r->buf + off, &pad, HDR_LEN);
    tail += to_end;
    off = 0;
  }
  uint32_t hdr = (uint32_t)len << 1 | (dest & 1);
  memcpy(r->buf + off, &hdr, HDR_LEN);
  memcpy(r->buf + off + HDR_LEN, p, len);
  atomic_store_explicit(&r->tail, tail + need, memory_order_release);
  return 0;
}

size_t gh_log_ring_peek(gh_log_ring_t *r, unsigned *out_dest, const char **out_p) {
  uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
  uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
  while (head != tail) {
    size_t off = (size_t)(head & (r->cap - 1));
    uint32_t hdr;
    memcpy(&hdr, r->buf + off, HDR_LEN);
    if (hdr == PAD_RECORD) {
      head += r->cap - off;
      atomic_store_explicit(&r->head, head, memory_order_release);
      continue;
    }
    *out_dest = hdr & 1;
    *out_p = r->buf + off + HDR_LEN;
    return hdr >> 1;
  }
  return 0;
}

void gh_log_ring_pop(gh_log_ring_t *r) {
  uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
  uint32_t hdr;
  memcpy(&hdr, r->buf + (head & (r->cap - 1)), HDR_LEN);
  atomic_store_explicit(&r->head, head + HDR_LEN + align4(hdr >> 1), memory_order_release);
}

int gh_log_ring_half_full(gh_log_ring_t *r) {
  uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
  uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
  return tail - head > r->cap / 2;
}

uint64_t gh_log_ring_dropped(gh_log_ring_t *r) {
  return atomic_load_explicit(&r->dropped, memory_order_relaxed);
}
