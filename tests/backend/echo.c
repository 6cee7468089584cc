/* echo.c: gh_echo, the HTTP/1.1 backend of the tests and the benchmarks.
 *
 *   gh_echo --listen 127.0.0.1:PORT [--body-size N] [--delay-ms N]
 *           [--ready-file PATH]
 *
 * Port 0 picks a free port. Once listening it prints "listening on
 * HOST:PORT" and writes PORT to the ready file (atomically, by rename).
 * SIGTERM and SIGINT close everything and exit 0.
 *
 * Every request is answered, in order (keep-alive and pipelining), with a
 * JSON description of what arrived:
 *
 *   {"method":"GET","path":"/a?b","version":"HTTP/1.1",
 *    "headers":[["Host","x"],...],"body_bytes":N,"body_sha256":"hex"}
 *
 * plus "trailers":[[name,value],...] when a chunked request carried any.
 * Header bytes outside printable ASCII are escaped as \u00XX (each byte as a
 * Latin-1 character), so the JSON is always valid. Request bodies
 * (Content-Length or chunked) are counted and hashed as they stream; they
 * are never held whole.
 *
 * Paths with a meaning of their own:
 *   /size/N      N bytes of the pattern, with Content-Length, streamed
 *   /chunked/N   N bytes of the pattern, chunked, trailer "X-Trailer: done"
 *   /status/NNN  that status (200-599) with the JSON body; 204 and 304 have
 *                no body
 *   /delay/MS    the JSON answer, MS milliseconds after the request ended
 *   /ws          WebSocket upgrade: 101 with Sec-WebSocket-Accept, then
 *                every byte received is sent back unchanged
 *   /close       the JSON answer with "Connection: close", then close
 *   /stats       {"connections_accepted": N, "requests": N} (this request
 *                included)
 *
 * The pattern: byte i of a body is PATTERN[i % 64], PATTERN being
 * "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_".
 * --body-size N makes every other request get N pattern bytes instead of the
 * JSON (for benchmarks); --delay-ms N delays every answer.
 *
 * Every response carries "X-Echo-Conn: N", the serial number of the
 * connection (1 for the first accepted), and "X-Echo-Req: N", the serial of
 * the request on that connection, so tests can count connection reuse.
 * HEAD gets the headers of the GET answer and no body.
 *
 * Speed matters (the proxy must be the bottleneck in a benchmark): one read
 * buffer for the whole process, responses built in a per-connection buffer
 * and sent with uv_try_write, and write requests and buffers recycled, so a
 * keep-alive request costs no allocation once a connection is warm. */
#include <errno.h>
#include <limits.h>
#include <llhttp.h>
#include <openssl/base64.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define READ_BUF_LEN (64 * 1024)
#define STREAM_PIECE (64 * 1024)
/* Stop reading while more than this waits in the kernel-bound queue. */
#define WRITE_HIGH_WATER (256 * 1024)
/* Bodies up to this size are copied into the response buffer and sent at
 * once; larger ones are streamed from the static pattern. */
#define INLINE_BODY_MAX (64 * 1024)
#define MAX_HEAD_BYTES (64 * 1024)
#define MAX_HEADERS 256
#define LINGER_MS 2000
#define MAX_DELAY_MS 600000

static const char pattern_alphabet[65] =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
/* The pattern repeated so that any offset modulo 64 starts a 64 KiB run. */
static char pattern[STREAM_PIECE + 64];

static const char empty_sha256_hex[] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/* --- small helpers ------------------------------------------------------ */

static void *xrealloc(void *ptr, size_t len) {
  void *p = realloc(ptr, len);
  if (p == NULL) {
    fprintf(stderr, "gh_echo: out of memory\n");
    abort();
  }
  return p;
}

typedef struct {
  char *data;
  size_t len;
  size_t cap;
} buf_t;

static void buf_reserve(buf_t *b, size_t extra) {
  if (b->cap - b->len >= extra) return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap - b->len < extra) cap *= 2;
  b->data = xrealloc(b->data, cap);
  b->cap = cap;
}

static void buf_add(buf_t *b, const void *p, size_t n) {
  if (n == 0) return; /* b->data may still be NULL */
  buf_reserve(b, n);
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

#define BUF_LIT(b, lit) buf_add((b), (lit), sizeof(lit) - 1)

static void buf_u64(buf_t *b, uint64_t v) {
  char tmp[24];
  size_t i = sizeof(tmp);
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  buf_add(b, tmp + i, sizeof(tmp) - i);
}

/* buf_json_str appends |p|,|n| as a quoted JSON string; bytes outside
 * printable ASCII become \u00XX. */
static void buf_json_str(buf_t *b, const char *p, size_t n) {
  static const char hex[] = "0123456789abcdef";
  buf_reserve(b, n * 6 + 2);
  char *o = b->data + b->len;
  *o++ = '"';
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)p[i];
    if (ch == '"' || ch == '\\') {
      *o++ = '\\';
      *o++ = (char)ch;
    } else if (ch >= 0x20 && ch < 0x7f) {
      *o++ = (char)ch;
    } else {
      memcpy(o, "\\u00", 4);
      o[4] = hex[ch >> 4];
      o[5] = hex[ch & 15];
      o += 6;
    }
  }
  *o++ = '"';
  b->len = (size_t)(o - b->data);
}

/* parse_u64 reads a decimal number that fills |p|,|n| exactly and is at
 * most |max|; returns 0 or -1. */
static int parse_u64(uint64_t *out, const char *p, size_t n, uint64_t max) {
  if (n == 0 || n > 19) return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] < '0' || p[i] > '9') return -1;
    v = v * 10 + (uint64_t)(p[i] - '0');
  }
  if (v > max) return -1;
  *out = v;
  return 0;
}

static int span_ieq(const char *p, size_t n, const char *lit) {
  size_t m = strlen(lit);
  if (n != m) return 0;
  for (size_t i = 0; i < n; i++) {
    char a = p[i], c = lit[i];
    if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
    if (a != c) return 0;
  }
  return 1;
}

/* --- connections ---------------------------------------------------------- */

typedef enum {
  ROUTE_ECHO,
  ROUTE_SIZE,
  ROUTE_CHUNKED,
  ROUTE_STATUS,
  ROUTE_STATS,
  ROUTE_CLOSE,
  ROUTE_WS,
  ROUTE_BAD,
} route_t;

typedef enum {
  ST_HTTP,     /* reading and parsing requests */
  ST_DELAY,    /* a request waits for its timer; parser paused */
  ST_STREAM,   /* a large body is being written; parser paused */
  ST_RESUME,   /* a response finished; parse what was left over */
  ST_WS,       /* after a 101: echo every byte */
  ST_CLOSING,  /* flush, then shut down the write side */
  ST_LINGER,   /* write side shut; drain input briefly, then close */
} conn_state_t;

typedef struct {
  uint32_t name_off, name_len, value_off, value_len;
} header_t;

typedef struct conn_s conn_t;
struct conn_s {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shutdown_req;
  llhttp_t parser;
  conn_t *prev, *next;
  int open_handles;
  unsigned closing : 1, reading : 1, eof : 1, shutdown_started : 1,
      keep_alive : 1, is_head : 1, hashing : 1, in_field : 1;
  conn_state_t state;
  uint64_t serial;
  uint64_t num_requests;

  /* The request being parsed: target and header bytes in |head|. */
  buf_t head;
  uint32_t url_len;
  header_t headers[MAX_HEADERS];
  uint32_t num_headers;
  uint32_t num_main_headers; /* the rest are trailers */
  int head_error; /* 431 when the head is too large */
  uint64_t body_bytes;
  SHA256_CTX sha;
  char sha_hex[64]; /* of the body, once the request is complete */

  /* The answer, decided when the head is complete. */
  route_t route;
  uint64_t route_arg;
  uint64_t delay_ms;
  const char *bad_msg;
  uint16_t http_minor;

  /* A streamed body in progress. */
  uint64_t stream_left;
  uint64_t stream_off;
  unsigned stream_chunked : 1;

  buf_t out;     /* response bytes not yet handed to libuv */
  buf_t pending; /* input received while the parser was paused */
};

/* A write handed to libuv: either owns |data| (copied response bytes) or
 * points into the static pattern. Recycled through a free list. */
typedef struct wreq_s wreq_t;
struct wreq_s {
  uv_write_t req; /* first: a uv_write_t * is a wreq_t * */
  wreq_t *next_free;
  buf_t data;
  char chunk_head[24];
};

static uv_loop_t *loop;
static uv_tcp_t server;
static uv_signal_t sig_term, sig_int;
static conn_t *conns;
static wreq_t *free_wreqs;
static int stopping;

static uint64_t opt_body_size = UINT64_MAX; /* UINT64_MAX: the JSON echo */
static uint64_t opt_delay_ms;
static uint64_t stat_connections;
static uint64_t stat_requests;

static char read_buf[READ_BUF_LEN];
static buf_t scratch; /* JSON bodies are built here, then copied */
static char crlf[] = "\r\n";

static llhttp_settings_t parser_settings;

static void conn_close(conn_t *c);
static void advance(conn_t *c);
static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *out);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b);

/* --- writing ----------------------------------------------------------- */

static wreq_t *wreq_get(void) {
  wreq_t *w = free_wreqs;
  if (w != NULL) {
    free_wreqs = w->next_free;
    return w;
  }
  w = xrealloc(NULL, sizeof(*w));
  memset(w, 0, sizeof(*w));
  return w;
}

static void wreq_put(wreq_t *w) {
  w->data.len = 0;
  /* A one-off large buffer should not stay pinned in the free list. */
  if (w->data.cap > 1024 * 1024) {
    free(w->data.data);
    w->data = (buf_t){0};
  }
  w->next_free = free_wreqs;
  free_wreqs = w;
}

static size_t write_queued(const conn_t *c) { return c->tcp.write_queue_size; }

/* update_reading reads when the state wants input and the peer is keeping
 * up with what we send (back-pressure for pipelining and WebSocket echo). */
static void update_reading(conn_t *c) {
  int want = 0;
  if (!c->closing && !c->eof) {
    if (c->state == ST_LINGER) {
      want = 1;
    } else if (c->state == ST_HTTP || c->state == ST_WS) {
      want = write_queued(c) < WRITE_HIGH_WATER;
    }
  }
  if (want == (int)c->reading) return;
  c->reading = (unsigned)want;
  if (!want) {
    uv_read_stop((uv_stream_t *)&c->tcp);
  } else if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
    conn_close(c);
  }
}

static void on_write(uv_write_t *req, int status) {
  conn_t *c = req->data;
  wreq_put((wreq_t *)req);
  if (c->closing) return;
  if (status < 0) {
    conn_close(c);
  } else if (c->state == ST_STREAM) {
    advance(c);
  } else {
    update_reading(c);
  }
}

static void submit(conn_t *c, wreq_t *w, uv_buf_t *bufs, unsigned num_bufs) {
  w->req.data = c;
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, num_bufs, on_write) != 0) {
    wreq_put(w);
    conn_close(c);
  }
}

/* flush hands c->out to the kernel: straight away when nothing is queued
 * (the common case, no allocation), otherwise a write request takes the
 * buffer over and c->out gets the request's old one. */
static void flush(conn_t *c) {
  if (c->closing || c->out.len == 0) return;
  size_t off = 0;
  uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
  int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  if (n > 0) {
    off = (size_t)n;
  } else if (n != UV_EAGAIN) {
    conn_close(c);
    return;
  }
  if (off == c->out.len) {
    c->out.len = 0;
    return;
  }
  wreq_t *w = wreq_get();
  buf_t spare = w->data;
  w->data = c->out;
  c->out = spare;
  c->out.len = 0;
  b = uv_buf_init(w->data.data + off, (unsigned)(w->data.len - off));
  submit(c, w, &b, 1);
}

static void buf_hex(buf_t *b, uint64_t v) {
  static const char hex[] = "0123456789abcdef";
  char tmp[16];
  size_t i = sizeof(tmp);
  do {
    tmp[--i] = hex[v & 15];
    v >>= 4;
  } while (v != 0);
  buf_add(b, tmp + i, sizeof(tmp) - i);
}

/* pump queues the next pieces of a streamed body straight from the static
 * pattern. Returns 1 once all of it (and the last chunk) is queued. */
static int pump(conn_t *c) {
  flush(c);
  while (c->stream_left > 0 && !c->closing && write_queued(c) < WRITE_HIGH_WATER) {
    size_t n = c->stream_left < STREAM_PIECE ? (size_t)c->stream_left : STREAM_PIECE;
    wreq_t *w = wreq_get();
    uv_buf_t bufs[3];
    unsigned nb = 0;
    if (c->stream_chunked) {
      int len = snprintf(w->chunk_head, sizeof(w->chunk_head), "%zx\r\n", n);
      bufs[nb++] = uv_buf_init(w->chunk_head, (unsigned)len);
    }
    bufs[nb++] = uv_buf_init(pattern + c->stream_off % 64, (unsigned)n);
    if (c->stream_chunked) bufs[nb++] = uv_buf_init(crlf, 2);
    c->stream_off += n;
    c->stream_left -= n;
    submit(c, w, bufs, nb);
  }
  if (c->stream_left > 0 || c->closing) return 0;
  if (c->stream_chunked) BUF_LIT(&c->out, "0\r\nX-Trailer: done\r\n\r\n");
  flush(c);
  return 1;
}

/* --- responses ------------------------------------------------------------ */

static const char *reason(unsigned status) {
  switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
  }
}

/* start_head appends the status line and the headers every answer has. */
static void start_head(conn_t *c, unsigned status) {
  buf_t *o = &c->out;
  BUF_LIT(o, "HTTP/1.1 ");
  buf_u64(o, status);
  buf_add(o, " ", 1);
  const char *r = reason(status);
  buf_add(o, r, strlen(r));
  BUF_LIT(o, "\r\nX-Echo-Conn: ");
  buf_u64(o, c->serial);
  BUF_LIT(o, "\r\nX-Echo-Req: ");
  buf_u64(o, c->num_requests);
  BUF_LIT(o, "\r\n");
  if (!c->keep_alive) {
    BUF_LIT(o, "Connection: close\r\n");
  } else if (c->http_minor == 0) {
    BUF_LIT(o, "Connection: keep-alive\r\n");
  }
}

static void respond_body(conn_t *c, unsigned status, const char *type, const char *body,
                         size_t body_len) {
  start_head(c, status);
  BUF_LIT(&c->out, "Content-Type: ");
  buf_add(&c->out, type, strlen(type));
  BUF_LIT(&c->out, "\r\nContent-Length: ");
  buf_u64(&c->out, body_len);
  BUF_LIT(&c->out, "\r\n\r\n");
  if (!c->is_head) buf_add(&c->out, body, body_len);
}

/* respond_pattern answers with |n| pattern bytes. Returns 1 if the body is
 * to be streamed (the caller enters ST_STREAM), 0 if it is all in c->out. */
static int respond_pattern(conn_t *c, uint64_t n, int chunked) {
  start_head(c, 200);
  BUF_LIT(&c->out, "Content-Type: application/octet-stream\r\n");
  if (chunked) {
    BUF_LIT(&c->out, "Transfer-Encoding: chunked\r\nTrailer: X-Trailer\r\n\r\n");
  } else {
    BUF_LIT(&c->out, "Content-Length: ");
    buf_u64(&c->out, n);
    BUF_LIT(&c->out, "\r\n\r\n");
  }
  if (c->is_head) return 0;
  if (n > INLINE_BODY_MAX) {
    c->stream_left = n;
    c->stream_off = 0;
    c->stream_chunked = (unsigned)chunked;
    return 1;
  }
  if (chunked && n > 0) {
    buf_hex(&c->out, n);
    BUF_LIT(&c->out, "\r\n");
  }
  buf_add(&c->out, pattern, (size_t)n);
  if (chunked) {
    if (n > 0) BUF_LIT(&c->out, "\r\n");
    BUF_LIT(&c->out, "0\r\nX-Trailer: done\r\n\r\n");
  }
  return 0;
}

static void json_pairs(buf_t *b, const conn_t *c, uint32_t from, uint32_t to) {
  BUF_LIT(b, "[");
  for (uint32_t i = from; i < to; i++) {
    const header_t *h = &c->headers[i];
    if (i != from) BUF_LIT(b, ",");
    BUF_LIT(b, "[");
    buf_json_str(b, c->head.data + h->name_off, h->name_len);
    BUF_LIT(b, ",");
    buf_json_str(b, c->head.data + h->value_off, h->value_len);
    BUF_LIT(b, "]");
  }
  BUF_LIT(b, "]");
}

static void respond_json_echo(conn_t *c, unsigned status) {
  buf_t *b = &scratch;
  b->len = 0;
  const char *method = llhttp_method_name((llhttp_method_t)c->parser.method);
  BUF_LIT(b, "{\"method\":");
  buf_json_str(b, method, strlen(method));
  BUF_LIT(b, ",\"path\":");
  buf_json_str(b, c->head.data, c->url_len);
  BUF_LIT(b, ",\"version\":\"HTTP/1.");
  buf_u64(b, c->http_minor);
  BUF_LIT(b, "\",\"headers\":");
  json_pairs(b, c, 0, c->num_main_headers);
  if (c->num_headers > c->num_main_headers) {
    BUF_LIT(b, ",\"trailers\":");
    json_pairs(b, c, c->num_main_headers, c->num_headers);
  }
  BUF_LIT(b, ",\"body_bytes\":");
  buf_u64(b, c->body_bytes);
  BUF_LIT(b, ",\"body_sha256\":\"");
  buf_add(b, c->sha_hex, 64);
  BUF_LIT(b, "\"}");
  respond_body(c, status, "application/json", b->data, b->len);
}

static void respond_ws(conn_t *c) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  const header_t *key = NULL;
  for (uint32_t i = 0; i < c->num_main_headers; i++) {
    const header_t *h = &c->headers[i];
    if (span_ieq(c->head.data + h->name_off, h->name_len, "sec-websocket-key")) key = h;
  }
  /* on_headers_complete only routes here when the key is present. */
  const char *k = c->head.data + key->value_off;
  size_t k_len = key->value_len;
  while (k_len > 0 && (k[k_len - 1] == ' ' || k[k_len - 1] == '\t')) k_len--;
  SHA_CTX sha;
  uint8_t digest[SHA_DIGEST_LENGTH];
  SHA1_Init(&sha);
  SHA1_Update(&sha, k, k_len);
  SHA1_Update(&sha, guid, sizeof(guid) - 1);
  SHA1_Final(digest, &sha);
  uint8_t accept[32];
  size_t accept_len = EVP_EncodeBlock(accept, digest, sizeof(digest));

  buf_t *o = &c->out;
  BUF_LIT(o, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Accept: ");
  buf_add(o, accept, accept_len);
  BUF_LIT(o, "\r\nX-Echo-Conn: ");
  buf_u64(o, c->serial);
  BUF_LIT(o, "\r\nX-Echo-Req: ");
  buf_u64(o, c->num_requests);
  BUF_LIT(o, "\r\n\r\n");
}

/* respond writes the answer to the request just parsed. Returns 1 if a
 * body remains to be streamed, 0 if the answer is complete in c->out. */
static int respond(conn_t *c) {
  switch (c->route) {
    case ROUTE_SIZE:
      return respond_pattern(c, c->route_arg, 0);
    case ROUTE_CHUNKED:
      return respond_pattern(c, c->route_arg, 1);
    case ROUTE_STATUS:
      if (c->route_arg == 204 || c->route_arg == 304) {
        start_head(c, (unsigned)c->route_arg);
        BUF_LIT(&c->out, "\r\n");
      } else {
        respond_json_echo(c, (unsigned)c->route_arg);
      }
      return 0;
    case ROUTE_STATS:
      scratch.len = 0;
      BUF_LIT(&scratch, "{\"connections_accepted\": ");
      buf_u64(&scratch, stat_connections);
      BUF_LIT(&scratch, ", \"requests\": ");
      buf_u64(&scratch, stat_requests);
      BUF_LIT(&scratch, "}");
      respond_body(c, 200, "application/json", scratch.data, scratch.len);
      return 0;
    case ROUTE_WS:
      respond_ws(c);
      return 0;
    case ROUTE_BAD:
      respond_body(c, (unsigned)c->route_arg, "text/plain", c->bad_msg, strlen(c->bad_msg));
      return 0;
    case ROUTE_CLOSE:
      respond_json_echo(c, 200);
      return 0;
    case ROUTE_ECHO:
      break;
  }
  if (opt_body_size != UINT64_MAX) return respond_pattern(c, opt_body_size, 0);
  respond_json_echo(c, 200);
  return 0;
}

/* after_response picks the state that follows a complete answer. */
static void after_response(conn_t *c) { c->state = c->keep_alive ? ST_RESUME : ST_CLOSING; }

/* --- parsing -------------------------------------------------------------- */

static int head_add(conn_t *c, const char *at, size_t len) {
  if (c->head.len + len > MAX_HEAD_BYTES) {
    c->head_error = 431;
    return -1;
  }
  buf_add(&c->head, at, len);
  return 0;
}

static int on_message_begin(llhttp_t *p) {
  conn_t *c = p->data;
  c->head.len = 0;
  c->url_len = 0;
  c->num_headers = 0;
  c->num_main_headers = 0;
  c->in_field = 0;
  c->hashing = 0;
  c->body_bytes = 0;
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (head_add(c, at, len) != 0) return -1;
  c->url_len += (uint32_t)len;
  return 0;
}

/* Field and value callbacks may come in pieces (a read can end anywhere):
 * a field piece after a value starts a new header. */
static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (!c->in_field) {
    if (c->num_headers == MAX_HEADERS) {
      c->head_error = 431;
      return -1;
    }
    header_t *h = &c->headers[c->num_headers++];
    h->name_off = h->value_off = (uint32_t)c->head.len;
    h->name_len = h->value_len = 0;
    c->in_field = 1;
  }
  if (head_add(c, at, len) != 0) return -1;
  c->headers[c->num_headers - 1].name_len += (uint32_t)len;
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  conn_t *c = p->data;
  header_t *h = &c->headers[c->num_headers - 1];
  if (c->in_field) {
    h->value_off = (uint32_t)c->head.len;
    c->in_field = 0;
  }
  if (head_add(c, at, len) != 0) return -1;
  h->value_len += (uint32_t)len;
  return 0;
}

static const header_t *find_header(const conn_t *c, const char *lower_name) {
  for (uint32_t i = 0; i < c->num_main_headers; i++) {
    const header_t *h = &c->headers[i];
    if (span_ieq(c->head.data + h->name_off, h->name_len, lower_name)) return h;
  }
  return NULL;
}

static void route_bad(conn_t *c, unsigned status, const char *msg) {
  c->route = ROUTE_BAD;
  c->route_arg = status;
  c->bad_msg = msg;
}

/* route_request decides the answer from the request target. */
static void route_request(conn_t *c, llhttp_t *p) {
  const char *path = c->head.data;
  size_t len = c->url_len;
  const char *q = memchr(path, '?', len);
  if (q != NULL) len = (size_t)(q - path);
  uint64_t n = 0;
  c->route = ROUTE_ECHO;
  c->route_arg = 0;
  c->delay_ms = opt_delay_ms;
#define PREFIX(lit) (len > sizeof(lit) - 1 && memcmp(path, lit, sizeof(lit) - 1) == 0)
#define REST(lit) path + sizeof(lit) - 1, len - (sizeof(lit) - 1)
  if (len == 6 && memcmp(path, "/stats", 6) == 0) {
    c->route = ROUTE_STATS;
  } else if (len == 6 && memcmp(path, "/close", 6) == 0) {
    c->route = ROUTE_CLOSE;
  } else if (len == 3 && memcmp(path, "/ws", 3) == 0) {
    if (p->upgrade && p->method == HTTP_GET && find_header(c, "sec-websocket-key") != NULL) {
      c->route = ROUTE_WS;
    } else {
      route_bad(c, 400, "expected a WebSocket upgrade\n");
    }
  } else if (PREFIX("/size/")) {
    c->route = ROUTE_SIZE;
    if (parse_u64(&n, REST("/size/"), UINT64_C(1) << 40) != 0) route_bad(c, 400, "bad size\n");
  } else if (PREFIX("/chunked/")) {
    c->route = ROUTE_CHUNKED;
    if (parse_u64(&n, REST("/chunked/"), UINT64_C(1) << 40) != 0) route_bad(c, 400, "bad size\n");
  } else if (PREFIX("/status/")) {
    c->route = ROUTE_STATUS;
    if (parse_u64(&n, REST("/status/"), 599) != 0 || n < 200) route_bad(c, 400, "bad status\n");
  } else if (PREFIX("/delay/")) {
    if (parse_u64(&n, REST("/delay/"), MAX_DELAY_MS) != 0) route_bad(c, 400, "bad delay\n");
    c->delay_ms = n;
  }
#undef PREFIX
#undef REST
  if (c->route != ROUTE_BAD) c->route_arg = n;
}

static int on_headers_complete(llhttp_t *p) {
  conn_t *c = p->data;
  c->num_main_headers = c->num_headers;
  c->in_field = 0;
  route_request(c, p);
  /* Only /ws switches protocols; any other Upgrade (or CONNECT) is
   * answered as a plain request and the connection stays HTTP. */
  if (c->route != ROUTE_WS) p->upgrade = 0;
  const header_t *expect = find_header(c, "expect");
  if (expect != NULL && p->http_minor == 1 &&
      span_ieq(c->head.data + expect->value_off, expect->value_len, "100-continue")) {
    BUF_LIT(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
    flush(c);
  }
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (!c->hashing) {
    SHA256_Init(&c->sha);
    c->hashing = 1;
  }
  SHA256_Update(&c->sha, at, len);
  c->body_bytes += len;
  return 0;
}

static void on_delay(uv_timer_t *timer) {
  conn_t *c = timer->data;
  if (respond(c)) {
    c->state = ST_STREAM;
  } else {
    after_response(c);
  }
  advance(c);
}

static int on_message_complete(llhttp_t *p) {
  static const char hex[] = "0123456789abcdef";
  conn_t *c = p->data;
  c->num_requests++;
  stat_requests++;
  c->keep_alive = (unsigned)llhttp_should_keep_alive(p);
  c->http_minor = p->http_minor;
  c->is_head = p->method == HTTP_HEAD;
  if (c->hashing) {
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256_Final(digest, &c->sha);
    for (size_t i = 0; i < sizeof(digest); i++) {
      c->sha_hex[2 * i] = hex[digest[i] >> 4];
      c->sha_hex[2 * i + 1] = hex[digest[i] & 15];
    }
    c->hashing = 0;
  } else {
    memcpy(c->sha_hex, empty_sha256_hex, 64);
  }
  if (c->route == ROUTE_CLOSE || c->route == ROUTE_BAD) c->keep_alive = 0;
  if (c->route == ROUTE_WS) {
    /* llhttp_execute now returns HPE_PAUSED_UPGRADE; the bytes after the
     * request are the first to echo. */
    respond_ws(c);
    c->state = ST_WS;
    return 0;
  }
  if (c->delay_ms > 0) {
    c->state = ST_DELAY;
    uv_timer_start(&c->timer, on_delay, c->delay_ms, 0);
    return HPE_PAUSED;
  }
  if (respond(c)) {
    c->state = ST_STREAM;
    return HPE_PAUSED;
  }
  if (!c->keep_alive) {
    c->state = ST_CLOSING;
    return HPE_PAUSED;
  }
  return 0;
}

/* parse runs the parser over |data|. When it pauses (an answer that is not
 * complete yet), the unparsed rest waits in c->pending; |data| may itself
 * be c->pending. */
static void parse(conn_t *c, const char *data, size_t len) {
  llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
  if (err == HPE_OK) return;
  const char *pos = llhttp_get_error_pos(&c->parser);
  if (pos == NULL) pos = data + len;
  size_t rest = len - (size_t)(pos - data);
  if (err == HPE_PAUSED) {
    if (data == c->pending.data) {
      memmove(c->pending.data, pos, rest);
      c->pending.len = rest;
    } else {
      c->pending.len = 0;
      buf_add(&c->pending, pos, rest);
    }
    return;
  }
  if (err == HPE_PAUSED_UPGRADE) {
    buf_add(&c->out, pos, rest);
    return;
  }
  /* A malformed request: answer 400 (or 431) and close. */
  unsigned status = c->head_error ? (unsigned)c->head_error : 400;
  route_bad(c, status, status == 431 ? "request head too large\n" : "malformed request\n");
  c->keep_alive = 0;
  c->is_head = 0;
  respond(c);
  c->state = ST_CLOSING;
}

/* --- connection life ------------------------------------------------------ */

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *out) {
  /* One buffer for every connection: what a read delivers is parsed (or
   * copied) before the callback returns. */
  *out = uv_buf_init(read_buf, sizeof(read_buf));
}

static void on_linger_timeout(uv_timer_t *timer) { conn_close(timer->data); }

static void on_shutdown(uv_shutdown_t *req, int status) {
  conn_t *c = req->data;
  if (c->closing) return;
  if (status < 0 || c->eof) {
    conn_close(c);
    return;
  }
  /* Closing now could turn input still in flight into a reset that
   * destroys our last answer before the peer reads it: drain for a while. */
  c->state = ST_LINGER;
  uv_timer_start(&c->timer, on_linger_timeout, LINGER_MS, 0);
  update_reading(c);
}

static void start_shutdown(conn_t *c) {
  if (c->shutdown_started || c->closing) return;
  c->shutdown_started = 1;
  update_reading(c);
  c->shutdown_req.data = c;
  if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) conn_close(c);
}

/* advance moves a connection on until it has to wait for the network or a
 * timer. */
static void advance(conn_t *c) {
  while (!c->closing) {
    switch (c->state) {
      case ST_STREAM:
        if (!pump(c)) {
          update_reading(c);
          return;
        }
        after_response(c);
        break;
      case ST_RESUME:
        c->state = ST_HTTP;
        llhttp_resume(&c->parser);
        if (c->pending.len > 0) {
          size_t len = c->pending.len;
          c->pending.len = 0;
          parse(c, c->pending.data, len);
        }
        break;
      case ST_HTTP:
      case ST_WS:
      case ST_DELAY:
        flush(c);
        update_reading(c);
        return;
      case ST_CLOSING:
        flush(c);
        start_shutdown(c);
        return;
      case ST_LINGER:
        update_reading(c);
        return;
    }
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b) {
  conn_t *c = stream->data;
  if (nread == 0) return;
  if (nread < 0) {
    if (nread != UV_EOF || c->state == ST_LINGER) {
      conn_close(c);
      return;
    }
    c->eof = 1;
    /* A request cut short gets no answer; the answers given are flushed
     * before the write side is shut. */
    if (c->state == ST_HTTP || c->state == ST_WS) c->state = ST_CLOSING;
    advance(c);
    return;
  }
  if (c->state == ST_HTTP) {
    parse(c, b->base, (size_t)nread);
  } else if (c->state == ST_WS) {
    buf_add(&c->out, b->base, (size_t)nread);
  } else {
    return; /* lingering: discard */
  }
  advance(c);
}

static void on_conn_handle_close(uv_handle_t *handle) {
  conn_t *c = handle->data;
  if (--c->open_handles > 0) return;
  free(c->head.data);
  free(c->out.data);
  free(c->pending.data);
  free(c);
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  if (c->prev != NULL) {
    c->prev->next = c->next;
  } else {
    conns = c->next;
  }
  if (c->next != NULL) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  uv_close((uv_handle_t *)&c->tcp, on_conn_handle_close);
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_close);
}

static void on_connection(uv_stream_t *srv, int status) {
  if (status < 0) return;
  conn_t *c = xrealloc(NULL, sizeof(*c));
  memset(c, 0, sizeof(*c));
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->open_handles = 2;
  c->next = conns;
  if (conns != NULL) conns->prev = c;
  conns = c;
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->serial = ++stat_connections;
  llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
  c->parser.data = c;
  c->state = ST_HTTP;
  update_reading(c);
}

/* --- process --------------------------------------------------------------- */

static void on_signal(uv_signal_t *sig, int signum) {
  if (stopping) return;
  stopping = 1;
  uv_close((uv_handle_t *)&server, NULL);
  uv_close((uv_handle_t *)&sig_term, NULL);
  uv_close((uv_handle_t *)&sig_int, NULL);
  while (conns != NULL) conn_close(conns);
}

static int usage(void) {
  fprintf(stderr,
          "usage: gh_echo --listen HOST:PORT [--body-size N] [--delay-ms N] "
          "[--ready-file PATH]\n");
  return 2;
}

static int parse_listen(struct sockaddr_storage *out, const char *arg) {
  const char *colon = strrchr(arg, ':');
  if (colon == NULL) return -1;
  char host[64];
  size_t host_len = (size_t)(colon - arg);
  const char *h = arg;
  if (host_len >= 2 && arg[0] == '[' && colon[-1] == ']') {
    h++;
    host_len -= 2;
  }
  if (host_len >= sizeof(host)) return -1;
  memcpy(host, h, host_len);
  host[host_len] = '\0';
  uint64_t port;
  if (parse_u64(&port, colon + 1, strlen(colon + 1), 65535) != 0) return -1;
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0) return 0;
  if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) == 0) return 0;
  return -1;
}

static int write_ready_file(const char *path, int port) {
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) return -1;
  FILE *f = fopen(tmp, "w");
  if (f == NULL) return -1;
  fprintf(f, "%d\n", port);
  if (fclose(f) != 0) return -1;
  return rename(tmp, path);
}

int main(int argc, char **argv) {
  const char *listen_arg = NULL, *ready_file = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) return usage();
    const char *v = argv[++i];
    if (strcmp(a, "--listen") == 0) {
      listen_arg = v;
    } else if (strcmp(a, "--ready-file") == 0) {
      ready_file = v;
    } else if (strcmp(a, "--body-size") == 0) {
      if (parse_u64(&opt_body_size, v, strlen(v), UINT64_C(1) << 40) != 0) return usage();
    } else if (strcmp(a, "--delay-ms") == 0) {
      if (parse_u64(&opt_delay_ms, v, strlen(v), MAX_DELAY_MS) != 0) return usage();
    } else {
      return usage();
    }
  }
  struct sockaddr_storage addr;
  if (listen_arg == NULL) return usage();
  if (parse_listen(&addr, listen_arg) != 0) {
    fprintf(stderr, "gh_echo: bad --listen address \"%s\"\n", listen_arg);
    return 2;
  }
  for (size_t i = 0; i < sizeof(pattern); i++) pattern[i] = pattern_alphabet[i % 64];
  signal(SIGPIPE, SIG_IGN);

  llhttp_settings_init(&parser_settings);
  parser_settings.on_message_begin = on_message_begin;
  parser_settings.on_url = on_url;
  parser_settings.on_header_field = on_header_field;
  parser_settings.on_header_value = on_header_value;
  parser_settings.on_headers_complete = on_headers_complete;
  parser_settings.on_body = on_body;
  parser_settings.on_message_complete = on_message_complete;

  loop = uv_default_loop();
  uv_tcp_init(loop, &server);
  int rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&server, 4096, on_connection);
  if (rc != 0) {
    fprintf(stderr, "gh_echo: cannot listen on %s: %s\n", listen_arg, uv_strerror(rc));
    return 1;
  }
  struct sockaddr_storage bound;
  int bound_len = sizeof(bound);
  uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &bound_len);
  int port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                               : ((struct sockaddr_in *)&bound)->sin_port);
  uv_signal_init(loop, &sig_term);
  uv_signal_init(loop, &sig_int);
  uv_signal_start(&sig_term, on_signal, SIGTERM);
  uv_signal_start(&sig_int, on_signal, SIGINT);

  const char *colon = strrchr(listen_arg, ':');
  printf("listening on %.*s:%d\n", (int)(colon - listen_arg), listen_arg, port);
  fflush(stdout);
  if (ready_file != NULL && write_ready_file(ready_file, port) != 0) {
    fprintf(stderr, "gh_echo: cannot write %s: %s\n", ready_file, strerror(errno));
    return 1;
  }

  uv_run(loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(loop);
  while (free_wreqs != NULL) {
    wreq_t *w = free_wreqs;
    free_wreqs = w->next_free;
    free(w->data.data);
    free(w);
  }
  free(scratch.data);
  return rc == 0 ? 0 : 1;
}
