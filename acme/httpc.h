/* httpc.h: the ACME engine's outbound HTTP/1.1 client (HTTPS, and plain
 * HTTP for the on-demand `ask` endpoint).
 *
 * One client runs on one uv_loop_t (the control thread's). Requests are
 * asynchronous: acme_httpc_request() starts one and its callback runs once,
 * later, from the loop, with the response or with an error that says what
 * failed and for which URL. Names are resolved with uv_getaddrinfo; every
 * address is tried in turn. HTTPS uses the client's own SSL_CTX: TLS 1.2 or
 * newer, the peer chain verified against the system roots plus the extra
 * roots given to acme_httpc_new, the host name checked (an IP literal is
 * checked against the IP SANs), SNI sent for names.
 *
 * Connections are kept alive per scheme://host:port in a small idle pool
 * and reused. A request whose reused connection turns out to be stale (EOF
 * or reset before the first response byte) is retried once on a fresh
 * connection.
 *
 * Responses are bounded: a head over ACME_HTTPC_MAX_HEAD bytes, a body over
 * the request's max_body, a malformed or truncated response, or a response
 * that does not finish within timeout_ms is an error, never a crash or an
 * unbounded allocation. */
#ifndef GH_ACME_HTTPC_H
#define GH_ACME_HTTPC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include <openssl/ssl.h>

#define ACME_HTTPC_MAX_HEAD (64u * 1024u)
#define ACME_HTTPC_DEFAULT_TIMEOUT_MS 30000u
#define ACME_HTTPC_DEFAULT_MAX_BODY (1u << 20)

/* Errors in acme_httpc_resp_t.error, besides libuv's (UV_EAI_* for name
 * resolution, UV_ECONNREFUSED and friends for connect, UV_ETIMEDOUT for the
 * request timeout, UV_ECANCELED when the client was freed first, UV_EOF for
 * a connection closed before the response was complete, UV_EMSGSIZE for a
 * head or body over its limit, UV_EPROTO for a malformed response). */
#define ACME_HTTPC_ETLS (-30001) /* TLS handshake or certificate verification */

typedef struct acme_httpc acme_httpc_t;

typedef struct {
  const char *name;
  const char *value;
} acme_httpc_header_t;

typedef struct {
  const char *method;                 /* "GET", "HEAD" or "POST" */
  const char *url;                    /* https://host[:port]/path, or http:// */
  const acme_httpc_header_t *headers; /* extra request headers, may be NULL */
  size_t num_headers;
  const void *body; /* sent with a Content-Length when body_len > 0 or POST */
  size_t body_len;
  uint64_t timeout_ms; /* the whole exchange; 0: ACME_HTTPC_DEFAULT_TIMEOUT_MS */
  size_t max_body;     /* 0: ACME_HTTPC_DEFAULT_MAX_BODY */
} acme_httpc_req_t;

/* A response, valid only during the callback. When |error| is 0, |status|,
 * |headers| and |body| hold the response (|body| is NUL-terminated, "" when
 * empty; header values have surrounding whitespace removed). Otherwise
 * |error| is negative, |error_msg| says what failed and names the method
 * and URL, and the other fields are empty. */
typedef struct {
  int error;
  const char *error_msg;
  const char *url;
  int status;
  const acme_httpc_header_t *headers;
  size_t num_headers;
  const char *body;
  size_t body_len;
} acme_httpc_resp_t;

typedef void (*acme_httpc_cb)(const acme_httpc_resp_t *resp, void *arg);

/* acme_httpc_new returns a client on |loop| that trusts the system roots
 * (/etc/ssl/certs/ca-certificates.crt, when present) plus the PEM files
 * |extra_roots[0..num_roots)|. On failure it returns NULL and sets
 * |*out_err| (caller frees) to a message naming the file at fault. */
acme_httpc_t *acme_httpc_new(char **out_err, uv_loop_t *loop, const char *const *extra_roots,
                             size_t num_roots);

/* acme_httpc_load_roots makes |ctx| trust the PEM certificates in |path|,
 * or with |path| NULL the system roots. Returns 0, or -1 with |*out_err|
 * set (caller frees) to a message naming the file. */
int acme_httpc_load_roots(char **out_err, SSL_CTX *ctx, const char *path);

/* acme_httpc_free closes the idle connections and cancels the requests in
 * flight: their callbacks run later, from the loop, with UV_ECANCELED, so
 * their |arg| must stay valid until then. The memory is released once the
 * last handle has closed; the caller keeps running the loop until it is
 * empty. acme_httpc_free(NULL) does nothing. May be called from a
 * callback. */
void acme_httpc_free(acme_httpc_t *client);

/* acme_httpc_request starts |req| (which, with everything it points to, is
 * copied: it need not outlive the call). Returns 0, after which |cb| runs
 * exactly once with |arg|; or a negative libuv code (UV_EINVAL for a bad
 * URL, method or header) and |cb| is never called. */
int acme_httpc_request(acme_httpc_t *client, const acme_httpc_req_t *req, acme_httpc_cb cb,
                       void *arg);

/* acme_httpc_header returns the value of the first header of |resp| named
 * |name| (ASCII case-insensitive), or NULL. */
const char *acme_httpc_header(const acme_httpc_resp_t *resp, const char *name);

/* acme_httpc_header_next returns the value of the next header named |name|
 * at or after index |*pos| and moves |*pos| past it, or NULL when there is
 * none: start at 0 to walk every "Link" header. */
const char *acme_httpc_header_next(const acme_httpc_resp_t *resp, const char *name, size_t *pos);

#endif
