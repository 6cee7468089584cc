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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  px_worker_t *w = fw_up_worker(NULL);
  if (size < 2) return 0;
  uint8_t flags = data[0];
  const char *p = (const char *)data + 2;
  size_t len = size - 2;
  fw_set_access_log(w, flags >> 4);
  px_conn_t *c = fw_conn_new(w, 1);
  const char *req = requests[flags & 7];
  fw_feed(w, c, req, strlen(req));
  if (fw_up_answer(w, c, p, len, flags, data[1])) {
    /* After a 101 the client's bytes go through the tunnel. */
    if ((flags & 7) == 3 && fw_alive(w, c)) fw_feed(w, c, "ping", 4);
    fw_spin(w, 4);
  }
  fw_up_close_all();
  fw_finish(w);
  return 0;
}
