/* fuzz_uph2.c: the HTTP/2 upstream path (uph2.c on nghttp2's client
 * session, and exchange.c's px_ex__h2_* events: heads, 1xx, DATA with flow
 * control, trailers, END_STREAM, RST_STREAM, GOAWAY and its retries,
 * content-length checks, a connection shared by pipelined requests) with a
 * fuzzed upstream: an h2c backend ("protocol": "h2c") whose bytes are the
 * input.
 *
 * The worker's upstream is a listener on 127.0.0.1 in the same loop. An
 * HTTP/1.1 client connection sends one of a few fixed requests; when the
 * proxy connects, the listener's side answers with the input (what the
 * proxy sends it, its preface and frames, is read and dropped).
 *
 * Input: two control bytes, then the upstream's bytes.
 *   byte 0  bits 0-2: the request (0 GET, 1 HEAD, 2 chunked POST with a
 *           trailer, 3 POST with Content-Length, 4 two pipelined GETs,
 *           5 a gRPC POST (TE: trailers, grpc-timeout), 6 a POST whose
 *           body never ends, 7 GET on a route); bit 3: the upstream closes
 *           after answering; bits 4-5: access log; bit 6: answer in two
 *           writes, with loop turns between (the second to the newest
 *           connection); bit 7: the client leaves after the first write.
 *   byte 1: where to cut the two writes, in 256ths.
 * Seeds (tests/fuzz/uph2_seeds.py) are real server frame sequences.
 *
 * Invariants: no crash, no leak, no lifecycle assertion, everything closed
 * after each input. */
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/fuzz/fuzz_worker.h"

static const char conf_template[] =
    "{\"listen\": {\"https\": \"127.0.0.1:8443\"},"
    " \"workers\": 1,"
    " \"sites\": [{\"hosts\": [\"a.test\"],"
    "   \"upstreams\": [{\"address\": \"%s\", \"protocol\": \"h2c\"}],"
    "   \"routes\": [{\"path\": \"/r/\", \"upstreams\": [{\"address\": \"%s\", \"protocol\": \"h2c\"}]}],"
    "   \"tls\": {\"cert\": \"%s\", \"key\": \"%s\"}, \"default\": true}],"
    " \"limits\": {\"max_header_bytes\": 1024, \"max_headers\": 16, \"write_queue_bytes\": 4096},"
    " \"timeouts\": {\"upstream_read\": \"100ms\"},"
    " \"log\": {\"level\": \"error\", \"access\": \"off\"}}";

static const char *const requests[8] = {
    "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
    "HEAD / HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ("POST /p HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"),
    "POST /p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello",
    "GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\nGET /2 HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ("POST /svc/M HTTP/1.1\r\nHost: a.test\r\nContent-Type: application/grpc\r\nTE: trailers\r\n"
     "grpc-timeout: 50m\r\nContent-Length: 6\r\n\r\n\0\0\0\0\1x"),
    "POST /early HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\nabc",
    "GET /r/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  px_worker_t *w = fw_up_worker(conf_template);
  if (size < 2) return 0;
  uint8_t flags = data[0];
  const char *p = (const char *)data + 2;
  size_t len = size - 2;
  fw_set_access_log(w, flags >> 4);
  px_conn_t *c = fw_conn_new(w, 1);
  const char *req = requests[flags & 7];
  size_t req_len = (flags & 7) == 5 ? strlen(req) + 6 : strlen(req); /* the gRPC frame has NULs */
  fw_feed(w, c, req, req_len);
  fw_up_answer(w, c, p, len, flags, data[1]);
  fw_up_close_all();
  fw_finish(w);
  return 0;
}
