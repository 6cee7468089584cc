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

/* FS_CONF(extra): the configuration format of the stateful targets (for
 * fs_start), with |extra| (a string literal of top-level members, each
 * starting with a space and ending in a comma) before "log". Site a.test /
 * *.b.test (the default) goes to [upstream 1, 127.0.0.1:1, which refuses]
 * and its route /r/ to [upstream 1, upstream 2] (least_conn); site m.test,
 * with max_body 64, to [upstream 2]. Keep-alive pools hold 2 connections
 * for 4s; write_queue_bytes 4096, max_header_bytes 1024; timeouts:
 * header_read 2s, idle 3s, upstream_connect 1s, upstream_read 2s,
 * client_body 2s, client_send 2s, tunnel_idle 5s. */
#define FS_CONF(extra) \
    "{\"listen\": {\"https\": \"127.0.0.1:8443\", \"http\": \"127.0.0.1:8080\"}," \
    " \"workers\": 1," \
    " \"sites\": [" \
    "  {\"hosts\": [\"a.test\", \"*.b.test\"]," \
    "   \"upstreams\": [\"127.0.0.1:%u\", \"127.0.0.1:1\"]," \
    "   \"keepalive\": {\"max_idle\": 2, \"idle_timeout\": \"4s\"}, \"fail_backoff\": \"1h\"," \
    "   \"routes\": [{\"path\": \"/r/\", \"upstreams\": [\"127.0.0.1:%u\", \"127.0.0.1:%u\"]," \
    "     \"balance\": \"least_conn\", \"keepalive\": {\"max_idle\": 2, \"idle_timeout\": \"4s\"}}]," \
    "   \"tls\": {\"cert\": \"%%1$s\", \"key\": \"%%2$s\"}," \
    "   \"hsts\": {\"max_age\": \"1d\"}, \"default\": true}," \
    "  {\"hosts\": [\"m.test\"], \"upstreams\": [\"127.0.0.1:%u\"], \"max_body\": 64," \
    "   \"tls\": {\"cert\": \"%%1$s\", \"key\": \"%%2$s\"}}]," \
    " \"timeouts\": {\"handshake\": \"1s\", \"header_read\": \"2s\", \"idle\": \"3s\"," \
    "   \"upstream_connect\": \"1s\", \"upstream_read\": \"2s\", \"client_body\": \"2s\"," \
    "   \"client_send\": \"2s\", \"tunnel_idle\": \"5s\", \"drain\": \"3s\"}," \
    " \"limits\": {\"max_header_bytes\": 1024, \"max_headers\": 16, \"max_uri_bytes\": 256," \
    "   \"write_queue_bytes\": 4096}," \
    extra \
    " \"log\": {\"level\": \"error\", \"access\": \"off\"}}"

/* The target's name for messages, and GH_FUZZ_TRACE=1 (set by fs_start). */
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

/* fs_start creates the worker and the upstream's two listeners, whose
 * ports go into |conf_fmt| (fw_worker_conf's format, in which the four
 * %u are: port 1, port 1, port 2, port 2). |sink| sees what the clients
 * receive (fw_peer_sink). |name| is the target's, for messages. */
px_worker_t *fs_start(const char *name, const char *conf_fmt,
                      void (*sink)(int peer, const char *p, size_t len));

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

/* What a target gives fs_op: its number of clients and what it does for
 * the client operations they share. */
typedef struct {
  unsigned num_clients;
  void (*spin)(int rounds);                     /* loop turns, clients flushed */
  void (*client_close)(unsigned slot, unsigned mode); /* 0 close, 1 reset, 2 shutdown */
  void (*client_reading)(unsigned slot, int on);
} fs_target_t;

/* fs_op runs the operation |op| if it is one the stateful targets share
 * (same number, same meaning; the tables are at the top of
 * fuzz_exchange.c and fuzz_h2.c), its own bytes taken from *|p|:
 *   2 A L data  upstream A (0 newest) sends L bytes
 *   3 A K       upstream A sends (K+1) KiB of 'x'
 *   4 A         client (A&3) % num_clients leaves: A>>2 = 0 close, 1 or 3
 *               reset, 2 shutdown(SHUT_WR)
 *   5 A         upstream A&7 closes; A&8: resets (SO_LINGER 0)
 *   6 A         client (A&3) % num_clients stops (A&4 = 0) or starts reading
 *   7 A         upstream A&7 stops (A&8 = 0) or starts reading
 *   8 A V       time passes: (V+1) units of A&7 (1ms, 10ms, 100ms, 1s,
 *               10s, 1min, 10min, 1h), every due timer fires
 *   9 A         A+1 loop turns
 *  10 A         upstream A&7 shuts its write side (FIN, still reading)
 *  11           the worker starts draining
 *  12 0         reload (at most 4 per input); 12 A>0: one loop turn
 * Returns 0 (nothing done) for any other operation. */
int fs_op(px_worker_t *w, const fs_target_t *t, uint8_t op, const uint8_t **p, const uint8_t *end);

/* fs_take takes a length byte and that many bytes from *|p| (fewer if the
 * input ends); returns where they start. */
const uint8_t *fs_take(const uint8_t **p, const uint8_t *end, size_t *len);

/* fs_write writes the bytes of |out| from |*off| to the client's socket
 * |fd| as far as it takes them; the rest waits for the proxy to read. A
 * refused write (the proxy closed) drops them all. */
void fs_write(int fd, px_buf_t *out, size_t *off);

/* fs_leave: the client of socket |peer| leaves, by |mode|: 0 closes after
 * reading what it was sent, 1 resets (closes leaving it unread: the proxy
 * reads ECONNRESET), 2 only shuts its write side (what |out| holds from
 * |*off| is written first). Returns 1 if the socket is closed (|out| is
 * emptied), 0 if not. */
int fs_leave(int peer, px_buf_t *out, size_t *off, unsigned mode);

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
