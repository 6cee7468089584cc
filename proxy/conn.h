/* conn.h: a downstream connection: accept, TLS through a custom BIO,
 * reads, writes, timers and close. Its HTTP is h1.c's, or h2.c's when the
 * TLS handshake chose "h2".
 *
 * Lifetime: px_conn_close starts closing (state CLOSING) and never frees;
 * the memory, and the exchange the connection owns, go in the last close
 * callback, so a caller that closed the connection may still look at it
 * (c->state) until it returns to the loop. */
#ifndef GH_PROXY_CONN_H
#define GH_PROXY_CONN_H

#include <netinet/in.h>
#include <openssl/ssl.h>

#include "proxy/ccert.h"
#include "proxy/h1.h"
#include "proxy/h2.h"
#include "proxy/worker.h"

typedef enum {
  PX_CONN_HANDSHAKE,
  PX_CONN_PROXY, /* waiting for the PROXY header (listen.*[].proxy_protocol) */
  PX_CONN_OPEN, /* the handshake is done (or plain HTTP): h1.c drives it */
  PX_CONN_CLOSING,
} px_conn_state_t;

struct px_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shutdown_req;
  px_lazy_t tl;
  int handles_open;
  px_worker_t *w;
  px_listener_t *listener; /* counts this connection (NULL if never accepted) */
  gh_link_t link;
  SSL *ssl; /* NULL on the plain-HTTP listener */
  px_conn_state_t state;
  int is_tls;
  int reading;
  int close_when_flushed;    /* close as soon as all output is written */
  int shutdown_when_flushed; /* send FIN once all output is written (lingering close) */
  int shut_down;
  char client_ip[INET6_ADDRSTRLEN];
  int client_family;       /* of client_ip: AF_INET, AF_INET6, or 0 when unknown */
  uint8_t client_addr[16]; /* client_ip in binary (4 bytes for AF_INET) */
  uint16_t client_port;
  char local_ip[INET6_ADDRSTRLEN]; /* the address the client connected to; "" unknown */
  px_buf_t held; /* ciphertext held while the handshake is paused */
  const uint8_t *in_ptr; /* ciphertext being fed to SSL (custom BIO) */
  size_t in_len;
  px_exchange_t *ex; /* the current exchange, owned */
  px_h1_t h1;
  px_h2_t *h2; /* set when the handshake chose "h2": h2.c drives it, not h1.c */
  px_ccert_peer_t peer; /* the client certificate, set once the handshake is done */
  uint64_t requests;
  char *paused_name;     /* handshake paused for this name (ondemand.c) */
  gh_link_t paused_link; /* in w->paused while paused_name is set */
  int ondemand_failed;
  uint64_t od_deadline_ms; /* gh_now_ms when the on-demand wait budget ends; 0: never paused */
};

void px_conn_accept(px_listener_t *l);
/* px_conn_trusted_proxy reports whether the client address (the PROXY
 * header's, if any) is in the current configuration's trusted_proxies,
 * whose X-Forwarded-* headers are kept. Returns 1 or 0. */
int px_conn_trusted_proxy(const px_conn_t *c);
/* px_conn_send queues bytes for the client; never closes. */
void px_conn_send(px_conn_t *c, const void *data, size_t len);
/* px_conn_flush writes what is queued. Returns 0, or -1 when the
 * connection is closing afterwards (write error, or done and flushed). */
int px_conn_flush(px_conn_t *c);
/* px_conn_close starts closing |c| (see above). */
void px_conn_close(px_conn_t *c);
/* px_conn_finish ends |c| gracefully: queued bytes and a TLS close_notify
 * go out first. With |linger|, the write side is shut once flushed and
 * what the client still sends is read and dropped (bounded by the caller)
 * until it closes, so that unread bytes do not turn the close into a
 * reset that loses the answer. May close. */
void px_conn_finish(px_conn_t *c, int linger);
/* px_conn_drain: the worker is stopping; an idle connection closes now,
 * a busy one after its current response (HTTP/1.1) or its open streams
 * (HTTP/2, after GOAWAY). May close. */
void px_conn_drain(px_conn_t *c);
void px_conn_read_start(px_conn_t *c);
void px_conn_read_stop(px_conn_t *c);
size_t px_conn_write_queue(px_conn_t *c);
void px_conn_set_timer(px_conn_t *c, uint64_t ms);
void px_worker_bio_init(px_worker_t *w);
/* px_bio_method_new makes a source/sink BIO method over a connection's
 * buffers: |rd| and |wr| move the bytes, flush always succeeds (the
 * bytes are written after the SSL call). For conn.c and uptls.c. */
BIO_METHOD *px_bio_method_new(const char *name, int (*rd)(BIO *, char *, int),
                              int (*wr)(BIO *, const char *, int));
/* px_conn_resume_handshake continues a handshake ondemand.c paused. */
void px_conn_resume_handshake(px_conn_t *c);

#endif
