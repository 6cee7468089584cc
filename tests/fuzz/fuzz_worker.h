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

/* fw_worker_conf is fw_worker with a configuration of the caller's:
 * |conf_fmt| is the JSON text as a printf format in which "%1$s" stands
 * for the site certificate's file and "%2$s" for its key's (and any other
 * '%' is doubled). */
px_worker_t *fw_worker_conf(const char *conf_fmt);

/* fw_reload gives |w| a new generation built from the same configuration,
 * as a reload does (px_worker_adopt_gen): idle upstream connections of
 * the old one are closed; connections and exchanges keep the old one for
 * as long as they hold it; HTTP/2 connections are sent GOAWAY. */
void fw_reload(px_worker_t *w);

/* fw_conn_new creates a downstream connection over one end of a fresh
 * socketpair, as px_conn_accept does after the handshake: |proxy| 1 gives
 * it the TLS listener's behaviour (requests go upstream; the bytes stay
 * plaintext), 2 the same after ALPN chose "h2" (px_h2_start: the server's
 * SETTINGS are queued at once), 0 the plain-HTTP listener's (redirects). */
px_conn_t *fw_conn_new(px_worker_t *w, int proxy);

/* fw_conn_open is fw_conn_new for a target that plays the client over the
 * socket: |*peer| (if not NULL) is the client's end of the socketpair,
 * which fw_spin keeps reading (and dropping) unless fw_peer_reading
 * turned that off, and which fw_finish closes unless fw_peer_close did.
 * With |sockbuf| > 0 both ends get SO_SNDBUF and SO_RCVBUF of that size,
 * so that a client that stops reading soon fills the proxy's write queue.
 * Returns NULL when the input has opened too many connections. */
px_conn_t *fw_conn_open(px_worker_t *w, int proxy, int sockbuf, int *peer);
void fw_peer_reading(int peer, int on);
/* fw_peer_sink: |fn| (NULL: none) sees every byte fw_spin reads from a
 * peer, for a target that checks what the clients receive. */
void fw_peer_sink(void (*fn)(int peer, const char *p, size_t len));
void fw_peer_close(int peer);
/* fw_peer_drain reads what is waiting for |peer|'s client, as fw_spin
 * does (whether or not it is reading). */
void fw_peer_drain(int peer);

/* fw_feed hands |len| bytes to |c| as one socket read would. Returns 0, or
 * -1 if the connection has been closed (|c| may be freed by the loop). */
int fw_feed(px_worker_t *w, px_conn_t *c, const char *data, size_t len);

/* fw_alive reports whether |c| is still an open connection of |w|. */
int fw_alive(px_worker_t *w, px_conn_t *c);

/* fw_spin runs the loop without blocking |rounds| times. */
void fw_spin(px_worker_t *w, int rounds);

/* fw_finish closes every connection, downstream and upstream, runs the
 * loop until all of them are gone, and aborts if anything is left. The
 * next input starts from the same state: peers closed, clock offset 0,
 * no upstream marked down, round robin at its start. */
void fw_finish(px_worker_t *w);

/* fw_split cuts |len| bytes into at most 3 slices at fractions |f1| and
 * |f2| (of 256) of what remains; returns the number of slices and fills
 * |off| (num + 1 offsets). */
size_t fw_split(size_t len, unsigned slices, uint8_t f1, uint8_t f2, size_t off[4]);

/* fw_set_access_log picks the access log format by |bits| (0 off, 1 JSON,
 * 2 combined, 3 off) so the formatter sees fuzzed hosts and paths. */
void fw_set_access_log(px_worker_t *w, unsigned bits);

/* A scripted upstream for fuzz_http_response and fuzz_uph2: a listener on
 * a free loopback port in the worker's loop. fw_up_worker makes the
 * worker with it as the upstream: fw_worker's configuration when
 * |conf_fmt| is NULL, else |conf_fmt| with the address for its first two
 * %s and the certificate and key for the next two. fw_up_wait turns the
 * loop until the proxy has made its |index|th connection (or gave up) and
 * returns the upstream's side of it or NULL; fw_up_newest is the latest;
 * what the proxy sends there is read and dropped. fw_up_write writes to
 * one; fw_up_close_all closes them all and forgets them. */
px_worker_t *fw_up_worker(const char *conf_fmt);
uv_tcp_t *fw_up_wait(px_worker_t *w, size_t index);
uv_tcp_t *fw_up_newest(void);
void fw_up_write(uv_tcp_t *t, const char *p, size_t len);
void fw_up_close_all(void);
/* fw_up_answer waits for the proxy's first upstream connection and
 * answers |len| bytes at |p| as the shared control byte |flags| says: bit
 * 6 in two writes cut at |cut| (in 256ths; the second to the newest
 * connection), bit 7 the client |c| leaves after the first, bit 3 the
 * upstream closes after. Returns 0 when the proxy never connected. */
int fw_up_answer(px_worker_t *w, px_conn_t *c, const char *p, size_t len, uint8_t flags,
                 uint8_t cut);

#endif
