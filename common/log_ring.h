/* log_ring.h: the bounded ring a thread queues its log lines in (log.c,
 * log_writer.c; internal to common/, declared here for the unit test).
 *
 * One producer (the thread that owns the ring, or whoever holds the
 * shared ring's mutex) and one consumer (the writer thread). Neither ever
 * waits for the other: a line that does not fit is dropped and counted.
 * Records are a 4-byte header (length << 1 | destination) and the line,
 * padded to 4 bytes; a record never wraps around the end (a padding
 * record fills the tail instead), so the consumer sees every line as one
 * contiguous run of bytes. Head and tail count bytes since creation. */
#ifndef GH_LOG_RING_H
#define GH_LOG_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gh_log_ring {
  _Atomic uint64_t head; /* consumer: next byte to read */
  char pad_[56];         /* keep the two ends on different cache lines */
  _Atomic uint64_t tail; /* producer: next byte to write */
  _Atomic uint64_t dropped;
  _Atomic int kicked; /* the producer woke the writer for a ring past half full */
  char *buf;
  size_t cap;                    /* a power of two */
  struct gh_log_ring *next;      /* the writer's list of rings (log_writer.c) */
} gh_log_ring_t;

/* gh_log_ring_new returns an empty ring of |cap| bytes, rounded up to a
 * power of two (at least 4096). Never NULL; free with gh_log_ring_free. */
gh_log_ring_t *gh_log_ring_new(size_t cap);
void gh_log_ring_free(gh_log_ring_t *r);

/* gh_log_ring_push copies the line |p| (|len| bytes) for destination
 * |dest| (0 or 1) into the ring. Returns 0, or -1 when the ring has no
 * room: the line is dropped and counted. Producer only. */
int gh_log_ring_push(gh_log_ring_t *r, unsigned dest, const char *p, size_t len);

/* gh_log_ring_peek points |*out_p| at the oldest line and returns its
 * length (setting |*out_dest|), or returns 0 when the ring is empty. The
 * line stays valid until gh_log_ring_pop. Consumer only. */
size_t gh_log_ring_peek(gh_log_ring_t *r, unsigned *out_dest, const char **out_p);

/* gh_log_ring_pop releases the line the last peek returned. */
void gh_log_ring_pop(gh_log_ring_t *r);

/* gh_log_ring_half_full reports whether more than half the ring is in
 * use. Producer. */
int gh_log_ring_half_full(gh_log_ring_t *r);

/* gh_log_ring_dropped returns how many lines the ring has dropped. Any
 * thread. */
uint64_t gh_log_ring_dropped(gh_log_ring_t *r);

#endif
