/* fuzz_exchange.c: stateful fuzzing of the data plane. The real worker,
 * its connections (conn.c, over socketpairs: the TLS listener's behaviour
 * without the SSL, and the plain listener's), h1.c, exchange.c, upstream.c
 * and uph1.c run against scripted clients and a scripted upstream (two
 * listeners in the same loop), and the input is the script: a program
 * that interleaves what each side sends, closes, resets, stops or starts
 * reading, loop turns and the passing of time.
 *
 * Configuration (small limits, short timeouts): site a.test / *.b.test
 * (the default) goes to [upstream 1, 127.0.0.1:1, which refuses] and its
 * route /r/ to [upstream 1, upstream 2] (least_conn); site m.test, with
 * max_body 64, to [upstream 2]. Keep-alive pools hold 2 connections for
 * 4s; write_queue_bytes 4096, max_header_bytes 1024; timeouts: header_read
 * 2s, idle 3s, upstream_connect 1s, upstream_read 2s, client_body 2s,
 * client_send 2s, tunnel_idle 5s.
 *
 * Clients: slots 0 and 1 are connections of the TLS listener (requests go
 * upstream), slot 2 of the plain listener (redirects, HTTP-01 answers). A
 * slot opens on its first send, and again on a send after the client
 * closed it. Their socket buffers are small (4 KiB), and the proxy's
 * upstream sockets get a small SO_SNDBUF, so that a side that stops
 * reading soon fills the proxy's write queue. Upstream connections are
 * numbered in the order they were accepted, from 1; 0 is the newest one
 * not closed by the upstream.
 *
 * The program: one opcode byte each (low 4 bits the operation, high 4 bits
 * its argument A), some followed by bytes of their own:
 *   0 A L data  client A%3 sends L bytes (fewer if the input ends)
 *   1 A K       client A%3 sends (K+1) KiB of 'x'
 *   2 A L data  upstream A (0 newest) sends L bytes
 *   3 A K       upstream A sends (K+1) KiB of 'x'
 *   4 A         client (A&3)%3 leaves: A>>2 = 0 close (after reading what
 *               it was sent), 1 or 3 reset (close leaving it unread: the
 *               proxy reads ECONNRESET), 2 shutdown(SHUT_WR) only
 *   5 A         upstream A&7 closes; A&8: resets (SO_LINGER 0)
 *   6 A         client (A&3)%3 stops (A&4 = 0) or starts reading
 *   7 A         upstream A&7 stops (A&8 = 0) or starts reading
 *   8 A V       time passes: (V+1) units of A&7 (1ms, 10ms, 100ms, 1s,
 *               10s, 1min, 10min, 1h): the worker's clock offset moves and
 *               every timer whose time has come fires
 *   9 A         A+1 loop turns (uv_run NOWAIT)
 *  10 A         upstream A&7 shuts its write side (FIN, still reading)
 *  11           the worker starts draining (as server.c's begin_drain)
 *  12 0         reload: a new generation of the same configuration (at
 *               most 4 per input: a reload parses the configuration and
 *               builds an SSL_CTX, slow next to everything else)
 *  12 A>0, 13..15  one loop turn
 * 2..12 are shared with fuzz_h2 (fs_op, fuzz_script.h).
 * After the program, 8 loop turns, then everything is closed.
 *
 * Invariants: no crash, leak or assertion (exchange.c's lifecycle asserts
 * are on in the fuzz and sanitizer builds); what each client receives is
 * a well-formed sequence of responses (see oracle_t), and what each
 * upstream connection receives well-formed requests (see fuzz_script.h);
 * after every operation the ownership rules of exchange.h hold (a connection's exchange is its own;
 * exchange and upstream connection point at each other or neither does;
 * a closing connection's exchange has no upstream; idle connections
 * belong to no exchange and their pool counts them); after the input
 * fw_finish leaves no connection, upstream connection or handle open, no
 * request is counted as active on any address, and the clock offset is 0.
 *
 * GH_FUZZ_TRACE=1 prints the program as it runs; GH_FUZZ_ECHO=1 (see
 * fuzz_worker.c) what the clients receive. tests/fuzz/exchange_seeds.py
 * writes the seed corpus from readable programs. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/fuzz/fuzz_script.h"

enum {
  NUM_CLIENTS = 3,
  MAX_OPENS = 24, /* client connections opened per input */
  MAX_OUTBOX = 4 << 20,
};

static const char conf_fmt[] = FS_CONF("");

/* What a client receives must be a well-formed sequence of HTTP/1.1
 * responses (the proxy writes the framing itself, whatever the upstream
 * sent), no more final ones than it sent requests, no control character
 * in a reason phrase, and nothing after one that said Connection: close;
 * a reset may cut the last one short. The
 * client's llhttp judges, until a 101 (then the bytes are a tunnel's) or
 * a HEAD request (its response has no body whatever its head says, and
 * which response is the HEAD's is not known here). */
typedef struct {
  llhttp_t parser;
  int judge;
  unsigned finals;    /* final responses received */
  unsigned requests;  /* "HTTP/" in what the client sent: heads it may have sent */
  char tail[4];       /* the last bytes sent, to find those split between sends */
  size_t tail_len;
  px_buf_t got;       /* what was received, for the report */
} oracle_t;

typedef struct {
  int open;    /* a connection of this input, not closed by the client */
  int peer;    /* the client's end of the socketpair */
  int reading;
  px_buf_t out; /* bytes the client has yet to write, from |off| */
  size_t off;
  oracle_t o;
} client_t;

static px_worker_t *g_w;
static client_t g_clients[NUM_CLIENTS];
static unsigned g_opens;

#define CHECK FS_CHECK
#define TRACE FS_TRACE
#define g_fill fs_fill

/* ---- the response oracle ---- */

static llhttp_settings_t g_resp_settings;

static void oracle_fail(client_t *cl, const char *why) {
  fprintf(stderr, "fuzz_exchange: client %d received a broken response stream: %s\n"
          "--- received (%zu bytes) ---\n%.*s\n--- end ---\n",
          (int)(cl - g_clients), why, cl->o.got.len, (int)cl->o.got.len, cl->o.got.p);
  abort();
}

static int on_response_complete(llhttp_t *p) {
  client_t *cl = p->data;
  if (p->status_code >= 200 || p->status_code == 101) cl->o.finals++;
  /* A request the proxy could not parse is answered once, then closed. */
  if (cl->o.finals > cl->o.requests + 1) oracle_fail(cl, "more responses than requests");
  return 0;
}

/* on_reason: RFC 9112 4, reason-phrase = *( HTAB / SP / VCHAR / obs-text );
 * llhttp lets control characters through, a client may not. */
static int on_reason(llhttp_t *p, const char *at, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)at[i];
    if ((ch < 0x20 && ch != '\t') || ch == 0x7f) oracle_fail(p->data, "control character in the reason phrase");
  }
  return 0;
}

static void oracle_start(client_t *cl) {
  oracle_t *o = &cl->o;
  px_buf_free(&o->got);
  memset(o, 0, sizeof(*o));
  if (g_resp_settings.on_message_complete == NULL) {
    llhttp_settings_init(&g_resp_settings);
    g_resp_settings.on_message_complete = on_response_complete;
    g_resp_settings.on_status = on_reason;
  }
  llhttp_init(&o->parser, HTTP_RESPONSE, &g_resp_settings);
  o->parser.data = cl;
  o->judge = 1;
}

/* oracle_sent counts the request heads the client may have sent and
 * stops judging after a HEAD. |len| is at most 255 (filler is not
 * scanned: it holds neither). */
static void oracle_sent(client_t *cl, const char *p, size_t len) {
  oracle_t *o = &cl->o;
  char buf[4 + 256];
  memcpy(buf, o->tail, o->tail_len);
  memcpy(buf + o->tail_len, p, len);
  size_t all = o->tail_len + len;
  /* A match that lies in the tail alone was counted with the last bytes. */
  for (const char *q = buf; (q = memmem(q, (size_t)(buf + all - q), "HTTP/", 5)) != NULL; q++) {
    if (q + 5 > buf + o->tail_len) o->requests++;
  }
  if (memmem(buf, all, "HEAD", 4) != NULL) o->judge = 0;
  o->tail_len = all < 4 ? all : 4;
  memcpy(o->tail, buf + all - o->tail_len, o->tail_len);
}

static void oracle_got(int peer, const char *p, size_t len) {
  client_t *cl = NULL;
  for (unsigned k = 0; k < NUM_CLIENTS; k++) {
    if (g_clients[k].open && g_clients[k].peer == peer) cl = &g_clients[k];
  }
  if (cl == NULL || !cl->o.judge) return;
  if (cl->o.got.len < 64 * 1024) px_buf_append(&cl->o.got, p, len);
  llhttp_errno_t e = llhttp_execute(&cl->o.parser, p, len);
  if (e == HPE_PAUSED_UPGRADE) cl->o.judge = 0;
  else if (e != HPE_OK) oracle_fail(cl, llhttp_get_error_reason(&cl->o.parser));
}

/* ---- the scripted clients ---- */

static client_t *client_open(unsigned slot) {
  client_t *cl = &g_clients[slot];
  if (cl->open) return cl;
  if (g_opens == MAX_OPENS) return NULL;
  /* Slots 0 and 1: the TLS listener's behaviour; 2: the plain listener. */
  if (fw_conn_open(g_w, slot < 2, FS_SOCKBUF, &cl->peer) == NULL) return NULL;
  g_opens++;
  cl->open = 1;
  cl->reading = 1;
  cl->out.len = cl->off = 0;
  oracle_start(cl);
  TRACE("  [client %u connected]\n", slot);
  return cl;
}

static void client_send(unsigned slot, const char *p, size_t len) {
  client_t *cl = client_open(slot);
  if (cl == NULL || cl->out.len - cl->off + len > MAX_OUTBOX) return;
  px_buf_append(&cl->out, p, len);
  if (p == g_fill) {
    memcpy(cl->o.tail, g_fill, 4);
    cl->o.tail_len = 4;
  } else {
    oracle_sent(cl, p, len);
  }
}

static void client_flush(client_t *cl) {
  if (cl->open) fs_write(cl->peer, &cl->out, &cl->off);
}

static void client_close(unsigned slot, unsigned mode) {
  client_t *cl = &g_clients[slot];
  if (!cl->open || !fs_leave(cl->peer, &cl->out, &cl->off, mode)) return;
  cl->open = 0;
}

static void client_reading(unsigned slot, int on) {
  client_t *cl = &g_clients[slot];
  if (!cl->open) return;
  cl->reading = on;
  fw_peer_reading(cl->peer, on);
}

/* ---- the loop and the clock ---- */

static void spin(int rounds) {
  for (int i = 0; i < rounds; i++) {
    for (unsigned k = 0; k < NUM_CLIENTS; k++) client_flush(&g_clients[k]);
    fw_spin(g_w, 1);
    fs_small_sndbufs(g_w);
  }
}

/* ---- invariants ---- */

static void check_ownership(void) {
  px_worker_t *w = g_w;
  size_t attached = 0;
  for (gh_link_t *l = w->conns.next; l != &w->conns; l = l->next) {
    px_conn_t *c = GH_CONTAINER_OF(l, px_conn_t, link);
    px_exchange_t *ex = c->ex;
    if (ex == NULL) continue;
    CHECK(ex->stream == c);
    CHECK(ex->w == w);
    if (c->state == PX_CONN_CLOSING) CHECK(ex->up == NULL);
    if (ex->up) {
      CHECK(ex->up->ex == ex);
      CHECK(!ex->up->idle);
      attached++;
    }
  }
  CHECK(attached == fs_check_upconns(w));
}

/* trace_state prints, in trace mode, what each connection is doing. */
static void trace_state(void) {
  if (!fs_trace) return;
  static const char *const phases[] = {"head", "body", "wait", "tunnel", "linger"};
  static const char *const states[] = {"head", "connect", "wait", "body", "tunnel", "done", "aborted"};
  for (gh_link_t *l = g_w->conns.next; l != &g_w->conns; l = l->next) {
    px_conn_t *c = GH_CONTAINER_OF(l, px_conn_t, link);
    fprintf(stderr, "  . conn %p%s %s%s queued %zu pending %zu", (void *)c,
            c->state == PX_CONN_CLOSING ? " closing" : "", phases[c->h1.phase],
            c->h1.client_paused ? " paused" : "", px_conn_write_queue(c), c->h1.pending.len);
    if (c->ex) {
      fprintf(stderr, " ex %s%s", states[c->ex->state], c->ex->up_paused ? " up-paused" : "");
      if (c->ex->up) fprintf(stderr, " up %p queued %zu", (void *)c->ex->up, px_upconn_write_queue(c->ex->up));
    }
    fprintf(stderr, "\n");
  }
  for (gh_link_t *l = g_w->upconns.next; l != &g_w->upconns; l = l->next) {
    px_upconn_t *u = GH_CONTAINER_OF(l, px_upconn_t, all);
    if (u->idle) fprintf(stderr, "  . up %p idle (%s)\n", (void *)u, u->addr->conf->text);
  }
}

/* ---- set-up and teardown ---- */

static px_worker_t *start(void) {
  if (g_w == NULL) g_w = fs_start("fuzz_exchange", conf_fmt, oracle_got);
  return g_w;
}

static void finish(void) {
  fs_close_ups();
  /* What the clients were sent last is judged too. */
  for (unsigned k = 0; k < NUM_CLIENTS; k++) {
    if (g_clients[k].open) fw_peer_drain(g_clients[k].peer);
  }
  for (unsigned k = 0; k < NUM_CLIENTS; k++) {
    px_buf_free(&g_clients[k].out);
    px_buf_free(&g_clients[k].o.got);
    memset(&g_clients[k], 0, sizeof(g_clients[k]));
  }
  fw_finish(g_w); /* closes the peers too */
  fs_finished(g_w);
  g_opens = 0;
}

/* ---- the program ---- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  start();
  const uint8_t *p = data, *end = data + size;
  static const fs_target_t target = {NUM_CLIENTS, spin, client_close, client_reading};
  while (p < end) {
    uint8_t op = *p++;
    unsigned a = op >> 4;
    switch (op & 15) {
      case 0: {
        size_t len;
        const uint8_t *at = fs_take(&p, end, &len);
        TRACE("client %u sends %zu: %.*s\n", a % 3, len, (int)len, (const char *)at);
        client_send(a % 3, (const char *)at, len);
        break;
      }
      case 1: {
        size_t len = ((size_t)(p < end ? *p++ : 0) + 1) * 1024;
        TRACE("client %u sends %zu KiB\n", a % 3, len / 1024);
        client_send(a % 3, g_fill, len);
        break;
      }
      default:
        if (!fs_op(g_w, &target, op, &p, end)) spin(1);
        break;
    }
    check_ownership();
    trace_state();
  }
  spin(8);
  check_ownership();
  finish();
  return 0;
}
