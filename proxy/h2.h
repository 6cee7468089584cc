/* h2.h: HTTP/2 toward clients (RFC 9113), on nghttp2: the codec glue
 * between a TLS connection that negotiated "h2" and its exchanges, one per
 * request stream.
 *
 * nghttp2 owns framing, HPACK, stream states and flow control; it is
 * driven with memory buffers (mem_recv on the plaintext conn.c decrypted,
 * mem_send into px_conn_send), so the frames of one event leave in few TLS
 * records through the connection's one TLS path.
 *
 * Ownership: the connection owns its px_h2_t; the px_h2_t owns its
 * streams; each stream owns its exchange and frees it when nghttp2 closes
 * the stream (or when the connection's memory goes). nghttp2 runs the
 * stream-close callback only inside mem_recv and mem_send, and those are
 * called only at the top of an event or from the exchange's settle, never
 * while an exchange function is on the stack. The exchange's ops only
 * queue (submit frames, append response bytes); none sends or frees.
 *
 * Flow control is back-pressure: a request body's DATA is acknowledged
 * (WINDOW_UPDATE) only once the exchange took it without going over the
 * write-queue limit, or later when the upstream drained (want_body); a
 * response is read from the upstream only while the stream's buffered
 * bytes and the connection's write queue are under that limit. So memory
 * per stream is bounded by our window plus the limit, whatever windows
 * the client announces. */
#ifndef GH_PROXY_H2_H
#define GH_PROXY_H2_H

#include <nghttp2/nghttp2.h>

#include "proxy/worker.h"

typedef struct px_h2 px_h2_t;

/* px_h2_alpn_is_h2 reports whether the handshake on |ssl| chose "h2". */
int px_h2_alpn_is_h2(const SSL *ssl);

/* Called by conn.c for a connection that negotiated h2. None of them
 * frees the connection; those that may close it say so. */
void px_h2_start(px_conn_t *c);                                  /* may close */
void px_h2_on_bytes(px_conn_t *c, const char *data, size_t len); /* may close */
void px_h2_on_timeout(px_conn_t *c);                             /* may close */
void px_h2_on_written(px_conn_t *c);                             /* may close */
void px_h2_closing(px_conn_t *c); /* closing: every stream's exchange is told */
void px_h2_freed(px_conn_t *c);   /* the connection's memory goes: free the streams */
/* px_h2_worker_mem is the allocator of the worker's nghttp2 sessions,
 * client-facing and upstream (uph2.c) alike: per-worker free lists by
 * size class, so a request's small blocks skip malloc. */
nghttp2_mem px_h2_worker_mem(px_worker_t *w);

/* px_h2_worker_free releases the worker's HTTP/2 memory lists (server.c,
 * once the worker's connections are gone). */
void px_h2_worker_free(px_worker_t *w);
/* px_h2_drain sends GOAWAY with the last stream processed; open streams
 * finish, then the connection closes. May close. */
void px_h2_drain(px_conn_t *c);

#endif
