/* etcd_internal.h: what acme/etcd*.c share: the client structure, the
 * blocking HTTP transport (etcd_conn.c) and the pure decoding of etcd's
 * JSON (etcd_json.c, also driven by tests/fuzz/fuzz_etcd.c). */
#ifndef GH_ACME_ETCD_INTERNAL_H
#define GH_ACME_ETCD_INTERNAL_H

#include <cjson/cJSON.h>
#include <openssl/base.h>

#include "acme/etcd.h"
#include "acme/httpc_internal.h"

typedef struct {
  char *url; /* scheme://host:port, no trailing slash */
  char *host;
  char port[8];
  int tls, host_is_ip;
} acme__etcd_endpoint_t;

/* One blocking HTTP/1.1 connection (plain or TLS over a non-blocking
 * socket, every wait a poll(2) bounded by a deadline) with its response
 * parser: the llhttp callbacks of httpc_wire.c run on |hc| and |hr|. */
typedef struct {
  int fd; /* -1: closed */
  SSL *ssl;
  size_t ep;  /* the endpoint it is connected to */
  int reused; /* it has carried a complete exchange */
  httpc_conn_t hc;
  httpc_req_t hr;
} acme__etcd_conn_t;

struct acme_etcd {
  acme__etcd_endpoint_t *eps;
  size_t num_eps, cur;
  SSL_CTX *ssl_ctx; /* NULL when no endpoint is https */
  uint64_t timeout_ms;
  char *username, *password;
  char *token; /* NULL: none yet */
  acme__etcd_conn_t conn; /* the keep-alive connection */
};

/* Flags of acme__etcd_call. */
#define ACME__ETCD_RETRY_SAFE 1 /* may be repeated on another endpoint once sent */
#define ACME__ETCD_NO_AUTH 2    /* no token (the authenticate call itself) */

/* acme__etcd_call POSTs the JSON |body| to |path| ("/v3/kv/range"), with
 * the token, the endpoint rotation and the repeats etcd.h describes.
 * Returns 0 and sets |*out_root| to the parsed 200 response (caller frees
 * with cJSON_Delete), or a negative code with |*out_err| set. */
int acme__etcd_call(acme_etcd_t *c, char **out_err, cJSON **out_root, const char *path,
                    const cJSON *body, int flags);

/* acme__etcd_conn_init readies |conn| (closed); acme__etcd_conn_close
 * closes it (and may be called again). */
void acme__etcd_conn_init(acme__etcd_conn_t *conn);
void acme__etcd_conn_close(acme__etcd_conn_t *conn);

/* acme__etcd_send opens |conn| to |c|'s current endpoint if it is closed,
 * and writes the POST of |body| to |path| (with the token) by |deadline|
 * (gh_now_ms time). Returns 0, or a negative code with |*out_err| set and
 * |*out_sent| saying whether the request may have reached etcd. */
int acme__etcd_send(acme_etcd_t *c, acme__etcd_conn_t *conn, char **out_err, int *out_sent,
                    const char *path, const char *body, size_t body_len, uint64_t deadline,
                    size_t max_body);

/* acme__etcd_send and acme__etcd_recv return ACME__ETCD_STALE (with
 * |*out_err| set, |conn| closed) when a reused keep-alive connection turns
 * out closed by the server before any response byte: nothing was
 * processed, so the request may go again on a fresh connection. */
#define ACME__ETCD_STALE (-30299)

/* acme__etcd_recv reads from |conn| until its response head is complete
 * (|until_head| set) or the whole response is (then |conn|'s parser holds
 * status and body), by |deadline|. Returns 0, or a negative code with
 * |*out_err| set and |conn| closed. */
int acme__etcd_recv(acme_etcd_t *c, acme__etcd_conn_t *conn, char **out_err, int until_head,
                    uint64_t deadline);

/* acme__etcd_read_more reads what is available (waiting until |deadline|)
 * into |conn|'s parser, body bytes appending to conn->hr.body. Returns 0
 * (something was read), -ETIMEDOUT, or another negative code with
 * |*out_err| set (the stream ended or broke). */
int acme__etcd_read_more(acme_etcd_t *c, acme__etcd_conn_t *conn, char **out_err,
                         uint64_t deadline);

/* acme__etcd_rotate moves |c| to the next endpoint, closing the
 * keep-alive connection; simple tokens are member-local, so the token is
 * dropped too. */
void acme__etcd_rotate(acme_etcd_t *c);

/* acme__etcd_authenticate gets a token for |c|'s username. Returns 0 or a
 * negative code with |*out_err| set. */
int acme__etcd_authenticate(acme_etcd_t *c, char **out_err);

/* acme__etcd_is_auth_error reports whether etcd's error (gRPC |code|,
 * message |msg|) is about authentication: Unauthenticated (16),
 * PermissionDenied (7), or "user name is empty". */
int acme__etcd_is_auth_error(int code, const char *msg);

/* acme__etcd_msg returns "etcd <current endpoint>: <formatted>" (caller
 * frees). */
char *acme__etcd_msg(const acme_etcd_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- decoding (etcd_json.c): pure functions of their input ---- */

/* acme__etcd_error_message returns etcd's error text from a JSON error
 * body ({"error": "...", "message": "...", "code": N}, or a watch stream's
 * {"error": {"message": ..., "grpc_code": N}}) as a new string (caller
 * frees) and its gRPC code in |*out_code| (-1 unknown), or NULL when the
 * body is not such a document. */
char *acme__etcd_error_message(int *out_code, const char *body, size_t len);

/* acme__etcd_i64 reads the integer member |name| of |obj| (a JSON string
 * of decimal digits, as the gateway writes int64, or an integral number);
 * absent or null is 0. Returns 0 or -1 when malformed. */
int acme__etcd_i64(int64_t *out, const cJSON *obj, const char *name);

/* acme__etcd_bytes decodes the base64 member |name| of |obj| into a new
 * NUL-terminated buffer (absent: empty). Returns 0 or -1. */
int acme__etcd_bytes(uint8_t **out, size_t *out_len, const cJSON *obj, const char *name);

/* acme__etcd_header_revision reads root.header.revision. Returns 0/-1. */
int acme__etcd_header_revision(int64_t *out, const cJSON *root);

/* acme__etcd_kv_decode fills |out| from a mvccpb.KeyValue object. Returns
 * 0, or -1 with |out| cleaned up. */
int acme__etcd_kv_decode(acme_etcd_kv_t *out, const cJSON *obj);

/* acme__etcd_kvs_append decodes the "kvs" array of a range response onto
 * |*kvs| (|*num| of them, grown). Returns 0 or -1 (what was appended
 * stays, for the caller to free). */
int acme__etcd_kvs_append(acme_etcd_kv_t **kvs, size_t *num, const cJSON *range);

/* A decoded watch stream message. */
typedef struct {
  int created, canceled;
  int64_t revision, compact_revision;
  acme_etcd_event_t *events;
  size_t num_events;
  char *error; /* a stream error or a cancel reason, else NULL */
} acme__etcd_watch_msg_t;

/* acme__etcd_watch_decode decodes one message of the watch stream
 * ({"result": WatchResponse} or {"error": {...}}). Returns 0 (with
 * |out| to clean up) or -1 with |*out_err| set (caller frees). */
int acme__etcd_watch_decode(acme__etcd_watch_msg_t *out, char **out_err, const char *msg,
                            size_t len);
void acme__etcd_watch_msg_cleanup(acme__etcd_watch_msg_t *m);

/* acme__etcd_next_line takes the first newline-terminated message off
 * |buf| (the gateway ends each JSON message of a stream with "\n"):
 * returns 1 and sets |*out| (caller frees) and |*out_len|, or 0 when no
 * whole line is buffered yet. Empty lines are skipped. */
int acme__etcd_next_line(char **out, size_t *out_len, httpc_buf_t *buf);

/* acme__etcd_range_end writes into |out| (|len| + 1 bytes) the end of the
 * range of keys starting with |prefix|: the prefix with its last byte that
 * is not 0xff incremented and what follows dropped; "\0" (every key from
 * the prefix on) when there is none. Returns the length. */
size_t acme__etcd_range_end(uint8_t *out, gh_str_t prefix);

#endif
