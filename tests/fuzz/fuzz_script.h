/* fuzz_script.h: what the stateful targets (fuzz_exchange, fuzz_h2) share
 * besides the worker (fuzz_worker.h): the scripted upstream with its
 * request oracle, time passing on the worker's clock, and the ownership
 * checks on upstream connections and pools.
 *
 * The scripted upstream is two listeners in the worker's loop (their
 * ports go into the target's configuration). Upstream connections are
 * numbered in the order they were accepted, from 1; 0 names the newest
 * one the upstream has not closed. What each receives must parse (llhttp)
 * as well-formed requests with no control character in a target, until
 * an upgrade request (then it is a tunnel's); a close may cut the last one
 * short. */
#ifndef GH_FUZZ_SCRIPT_H
#define GH_FUZZ_SCRIPT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "tests/fuzz/fuzz_worker.h"

enum {
  FS_SOCKBUF = 4096, /* socket buffers of the clients and of the proxy's upstream sockets */
  FS_FILL = 256 * 1024,
};

/* The target's name for messages, and GH_FUZZ_TRACE=1 (set by fs_bind). */
extern const char *fs_name;
extern int fs_trace;
/* FS_FILL bytes of 'x', for the "sends K KiB" operations. */
extern char fs_fill[FS_FILL];

#define FS_CHECK(x)                                                                     \
  do {                                                                                  \
    if (!(x)) {                                                                         \
      fprintf(stderr, "%s: invariant broken: %s (%s:%d)\n", fs_name, #x, __FILE__, __LINE__); \
      abort();                                                                          \
    }                                                                                   \
  } while (0)

#define FS_TRACE(...)                             \
  do {                                            \
    if (fs_trace) fprintf(stderr, __VA_ARGS__); \
  } while (0)

/* fs_bind binds the two upstream listeners' sockets (before the worker
 * exists, since its configuration names their ports) and returns their
 * ports; fs_listen hands them to the worker's loop. */
void fs_bind(const char *name, unsigned ports[2]);
void fs_listen(px_worker_t *w);

typedef struct fs_up fs_up_t;
/* fs_up_pick: upstream |sel| (1-based, in accept order), or for 0 (or one
 * not accepted) the newest the upstream has not closed. NULL if none. All
 * the functions below do nothing with NULL. */
fs_up_t *fs_up_pick(unsigned sel);
void fs_up_send(fs_up_t *u, const char *p, size_t len);
void fs_up_close(fs_up_t *u, int reset); /* reset: SO_LINGER 0 */
void fs_up_shutdown(fs_up_t *u);         /* FIN, still reading */
void fs_up_reading(fs_up_t *u, int on);

/* fs_small_sndbufs gives the proxy's upstream sockets a small send
 * buffer (as the clients' sockets have), so that an upstream that stops
 * reading soon shows in the proxy's write queue. Call after each loop
 * turn. */
void fs_small_sndbufs(px_worker_t *w);

/* fs_advance moves the data plane's clock on by |ms| and fires, in
 * order, every timer due within the whole offset (see fuzz_script.c). */
void fs_advance(px_worker_t *w, uint64_t ms);
/* The units of the "time passes" operations: 1ms .. 1h. */
extern const uint64_t fs_units[8];

/* fs_drain begins a graceful stop, as server.c's begin_drain does (there
 * are no listeners or worker timers here). */
void fs_drain(px_worker_t *w);

/* fs_check_upconns checks the ownership rules of exchange.h from the
 * upstream side (an upstream connection's exchange points back at it and
 * it is not closing; idle connections belong to no exchange, are of the
 * current generation and counted by their pool). Returns the number of
 * upstream connections attached to an exchange. */
size_t fs_check_upconns(px_worker_t *w);

/* fs_close_ups closes the upstream's ends (before fw_finish); fs_finished
 * (after it) drops what the proxy dialled and closed before it was
 * accepted, checks that no request is counted active on any address and
 * that the clock offset is back to 0, and readies the next input. */
void fs_close_ups(void);
void fs_finished(px_worker_t *w);

#endif
