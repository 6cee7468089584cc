/* h1.h: HTTP/1.1 toward clients: the codec glue between a connection's
 * plaintext and its exchanges, one exchange at a time.
 *
 * llhttp (strict) parses request heads only, plus a small scanner over the
 * raw head for what llhttp 8 lets through (bare LF, obs-fold, the size).
 * Bodies are framed here: a Content-Length countdown or chunked.c, both
 * with the site's max_body; the framing sent upstream is written from
 * that state. Pipelined bytes wait in |pending| until the response to the
 * current request is done. Phases:
 *
 *   HEAD -> BODY -> WAIT -> HEAD (keep-alive) ...
 *            |       |
 *            |       +--> TUNNEL (101)
 *            +-> (response done first) LINGER: the rest of the body is
 *                read and dropped while the client keeps sending (5 s idle,
 *                30 s and 64 MiB at most), then the connection closes.
 *
 * Local answers (errors, the plain listener's redirects and HTTP-01
 * answers) end the exchange at once and, when bytes of the request may
 * still follow, close through LINGER as well. */
#ifndef GH_PROXY_H1_H
#define GH_PROXY_H1_H

#include <llhttp.h>

#include "proxy/chunked.h"
#include "proxy/exchange.h"

typedef enum {
  PX_H1_HEAD = 0, /* waiting for or reading a request head */
  PX_H1_BODY,     /* reading the request body */
  PX_H1_WAIT,     /* the request is read; its response is not done */
  PX_H1_TUNNEL,   /* after 101: bytes both ways */
  PX_H1_LINGER,   /* answered, closing: drop what the client still sends */
} px_h1_phase_t;

typedef struct {
  px_h1_phase_t phase;
  llhttp_t parser;      /* request heads only */
  uint8_t scan_state;   /* head scanner (h1.c) */
  uint8_t head_started; /* bytes of the current head have arrived */
  uint8_t close_after;  /* no keep-alive after the current response */
  uint8_t client_paused; /* reads stopped: the upstream is behind */
  uint8_t resp_chunked; /* the response body is re-chunked toward the client */
  size_t head_bytes;
  int reject_status;    /* set by a parser callback; answered after llhttp returns */
  const char *reject_why;
  uint64_t body_left;  /* LENGTH: bytes still to come */
  uint64_t body_bytes; /* received so far, for max_body */
  px_chunked_t ck;
  uint64_t linger_bytes;
  uint64_t linger_start; /* loop time the answer was out (LINGER) */
  uint64_t read_mark;  /* loop time of the last body (or tunnel) byte */
  uint64_t send_mark;  /* loop time the client last took bytes; 0 = nothing queued */
  px_buf_t pending;    /* plaintext received but not yet processed */
  /* The routed head, as offsets into the exchange's req.buf (target_off
   * SIZE_MAX: the target is "/", from an absolute-form without a path). */
  size_t host_off, host_len, target_off, target_len;
} px_h1_t;

/* Called by conn.c. None of them frees the connection; those that may
 * close it say so, and conn.c checks c->state afterwards. */
void px_h1_init_settings(px_worker_t *w);
void px_h1_start(px_conn_t *c);                                /* after handshake/accept */
void px_h1_on_bytes(px_conn_t *c, const char *data, size_t len); /* may close */
void px_h1_on_timeout(px_conn_t *c);                           /* may close */
void px_h1_on_written(px_conn_t *c);                           /* may close */
void px_h1_closing(px_conn_t *c); /* the connection is closing: tell the exchange */
void px_h1_freed(px_conn_t *c);   /* the connection's memory goes: free the exchange */
/* px_h1_drain: the worker is stopping; close now if idle, else after the
 * current response. May close. */
void px_h1_drain(px_conn_t *c);

#endif
