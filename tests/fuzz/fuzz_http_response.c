/* fuzz_http_response.c: the upstream response path (exchange.c's llhttp
 * response callbacks, re-framing to the client, interim responses, 101 and
 * the tunnel, HEAD, close-delimited bodies, early responses, pooling) with
 * a fuzzed upstream.
 *
 * The worker's upstream is a listener on 127.0.0.1 in the same loop. A
 * client connection sends one of a few fixed requests; when the proxy
 * connects, the listener's side answers with the input.
 *
 * Input: two control bytes, then the upstream's bytes.
 *   byte 0  bits 0-2: the request (0 GET, 1 HEAD, 2 GET HTTP/1.0 on a
 *           route, 3 WebSocket upgrade, 4 chunked POST with a trailer,
 *           5 POST with Content-Length, 6 two pipelined GETs, 7 a POST whose
 *           body never ends); bit 3: the upstream closes after answering;
 *           bits 4-5: access log (0 off, 1 JSON, 2 combined); bit 6: answer
 *           in two writes, with loop turns between (the second to the
 *           newest upstream connection); bit 7: the client leaves after
 *           the first write.
 *   byte 1: where to cut the two writes, in 256ths.
 * Printable seeds: '0'..'7' one write per request kind, '8'..'?' the same
 * and the upstream closes.
 *
 * Invariants: no crash, no leak, everything closed after each input. */
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/fuzz/fuzz_worker.h"

static const char *const requests[8] = {
    "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
    "HEAD / HTTP/1.1\r\nHost: a.test\r\n\r\n",
    "GET /r/x HTTP/1.0\r\nHost: a.test\r\n\r\n",
    "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    ("POST /p HTTP/1.1\r\nHost: x.b.test\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"),
    "POST /p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello",
    "GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\nGET /2 HTTP/1.1\r\nHost: a.test\r\n\r\n",
    "POST /early HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\nabc",
};

enum { MAX_UP = 8 };

static uv_tcp_t g_listener;
static uv_tcp_t g_up[MAX_UP]; /* the upstream's side of accepted connections */
static size_t g_num_up;
static char g_rbuf[4096];

typedef struct {
  uv_write_t req;
  char data[];
} up_write_t;

static void on_written(uv_write_t *req, int status) {
  (void)status;
  gh_free(req);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h, (void)suggested;
  *buf = uv_buf_init(g_rbuf, sizeof(g_rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  if (nread < 0) uv_read_stop(s); /* the request is ignored; EOF is kept */
}

static void on_connection(uv_stream_t *server, int status) {
  if (status != 0 || g_num_up == MAX_UP) return;
  uv_tcp_t *t = &g_up[g_num_up];
  uv_tcp_init(server->loop, t);
  if (uv_accept(server, (uv_stream_t *)t) != 0) {
    uv_close((uv_handle_t *)t, NULL);
    return;
  }
  g_num_up++;
  uv_read_start((uv_stream_t *)t, on_alloc, on_read);
}

static void up_write(uv_tcp_t *t, const char *p, size_t len) {
  if (len == 0 || uv_is_closing((uv_handle_t *)t)) return;
  up_write_t *wr = gh_malloc(sizeof(*wr) + len);
  memcpy(wr->data, p, len);
  uv_buf_t b = uv_buf_init(wr->data, (unsigned)len);
  if (uv_write(&wr->req, (uv_stream_t *)t, &b, 1, on_written) != 0) gh_free(wr);
}

/* start listens on a free loopback port and returns the worker whose
 * upstream it is. */
static px_worker_t *start(void) {
  static px_worker_t *w;
  if (w) return w;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof(sa);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 64) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &sl) != 0)
    abort();
  char upstream[32];
  snprintf(upstream, sizeof(upstream), "127.0.0.1:%u", ntohs(sa.sin_port));
  w = fw_worker(upstream);
  uv_tcp_init(&w->loop, &g_listener);
  if (uv_tcp_open(&g_listener, fd) != 0 ||
      uv_listen((uv_stream_t *)&g_listener, 64, on_connection) != 0)
    abort();
  uv_unref((uv_handle_t *)&g_listener); /* fw_finish waits for the rest only */
  return w;
}

/* wait_upstream turns the loop until the proxy has connected (or given
 * up); returns the upstream's side or NULL. */
static uv_tcp_t *wait_upstream(px_worker_t *w, size_t index) {
  for (int i = 0; i < 50 && g_num_up <= index; i++) fw_spin(w, 1);
  return g_num_up > index ? &g_up[index] : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  px_worker_t *w = start();
  if (size < 2) return 0;
  uint8_t flags = data[0];
  const char *p = (const char *)data + 2;
  size_t len = size - 2;
  fw_set_access_log(w, flags >> 4);
  px_conn_t *c = fw_conn_new(w, 1);
  const char *req = requests[flags & 7];
  fw_feed(w, c, req, strlen(req));
  uv_tcp_t *up = wait_upstream(w, 0);
  if (up) {
    size_t off[4];
    size_t n = fw_split(len, flags & 64 ? 2 : 1, data[1], 0, off);
    for (size_t i = 0; i < n; i++) {
      /* A later write goes to the newest connection: after a response
       * that left the first one unusable, the next request dials again. */
      up = &g_up[g_num_up - 1];
      up_write(up, p + off[i], off[i + 1] - off[i]);
      fw_spin(w, 4);
      if (i == 0 && (flags & 128) && fw_alive(w, c)) px_conn_close(c);
    }
    if (flags & 8) uv_close((uv_handle_t *)up, NULL);
    fw_spin(w, 4);
    /* After a 101 the client's bytes go through the tunnel. */
    if ((flags & 7) == 3 && fw_alive(w, c)) fw_feed(w, c, "ping", 4);
    fw_spin(w, 4);
  }
  for (size_t i = 0; i < g_num_up; i++) {
    if (!uv_is_closing((uv_handle_t *)&g_up[i])) uv_close((uv_handle_t *)&g_up[i], NULL);
  }
  fw_finish(w);
  g_num_up = 0;
  return 0;
}
