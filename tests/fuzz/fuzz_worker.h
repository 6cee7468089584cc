/* fuzz_worker.h: one in-process proxy worker for the HTTP fuzz targets.
 *
 * The worker is built the way server.c's worker_new builds one, from a
 * configuration with one site (a fresh self-signed certificate, made at
 * start-up) but without listeners or threads: the target creates
 * connections itself, feeds them bytes, and runs the loop by hand. */
#ifndef GH_FUZZ_WORKER_H
#define GH_FUZZ_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/conn.h"
#include "proxy/upstream.h"

/* fw_worker returns the process-wide worker, creating it on the first
 * call with every site and route sending to |upstream| ("host:port"). The
 * worker is torn down at exit, which checks that its loop closes empty. */
px_worker_t *fw_worker(const char *upstream);

/* fw_conn_new creates a downstream connection over one end of a fresh
 * socketpair, as px_conn_accept does after the handshake: |proxy| 1 gives
 * it the TLS listener's behaviour (requests go upstream; the bytes stay
 * plaintext), 0 the plain-HTTP listener's (redirects). */
px_conn_t *fw_conn_new(px_worker_t *w, int proxy);

/* fw_feed hands |len| bytes to |c| as one socket read would. Returns 0, or
 * -1 if the connection has been closed (|c| may be freed by the loop). */
int fw_feed(px_worker_t *w, px_conn_t *c, const char *data, size_t len);

/* fw_alive reports whether |c| is still an open connection of |w|. */
int fw_alive(px_worker_t *w, px_conn_t *c);

/* fw_spin runs the loop without blocking |rounds| times. */
void fw_spin(px_worker_t *w, int rounds);

/* fw_finish closes every connection, downstream and upstream, runs the
 * loop until all of them are gone, and aborts if anything is left. */
void fw_finish(px_worker_t *w);

/* fw_split cuts |len| bytes into at most 3 slices at fractions |f1| and
 * |f2| (of 256) of what remains; returns the number of slices and fills
 * |off| (num + 1 offsets). */
size_t fw_split(size_t len, unsigned slices, uint8_t f1, uint8_t f2, size_t off[4]);

/* fw_set_access_log picks the access log format by |bits| (0 off, 1 JSON,
 * 2 combined, 3 off) so the formatter sees fuzzed hosts and paths. */
void fw_set_access_log(px_worker_t *w, unsigned bits);

#endif
