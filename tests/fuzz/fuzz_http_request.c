/* fuzz_http_request.c: the downstream HTTP/1.1 request path (http.c's
 * head scanner, llhttp in strict mode and its callbacks, the checks on
 * framing, Host and target, pipelining, local responses, and the hand-off
 * to exchange.c) on one in-process connection.
 *
 * Input: three control bytes, then the bytes the client sends.
 *   byte 0  bits 0-1: slices - 1 (3 means 3); bit 2: proxy (the TLS
 *           listener's path: requests go upstream, which refuses, so they
 *           end in 502) rather than the plain listener's redirects; bit 3:
 *           fire the header/idle timeout at the end; bits 4-5: access log
 *           (0 off, 1 JSON, 2 combined); bit 7: the worker is draining.
 *   byte 1, 2: where to cut the slices, in 256ths of what remains.
 * Printable seeds: '@' plain, 'D' proxy, 'E'/'F' proxy in 2/3 slices,
 * 'L' proxy then timeout, 'T' proxy with the JSON access log.
 *
 * Invariants: no crash, no leak, and every connection and upstream
 * connection is closed once the connection is (fw_finish). */
#include <stdint.h>

#include "tests/fuzz/fuzz_worker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  px_worker_t *w = fw_worker("127.0.0.1:1");
  if (size < 3) return 0;
  uint8_t flags = data[0];
  uint8_t f1 = data[1], f2 = data[2];
  const char *p = (const char *)data + 3;
  size_t len = size - 3;
  fw_set_access_log(w, flags >> 4);
  w->draining = flags >> 7;
  px_conn_t *c = fw_conn_new(w, (flags >> 2) & 1);
  size_t off[4];
  size_t n = fw_split(len, (flags & 3) + 1, f1, f2, off);
  for (size_t i = 0; i < n; i++) {
    if (off[i + 1] > off[i] && fw_feed(w, c, p + off[i], off[i + 1] - off[i]) != 0) break;
    fw_spin(w, 4); /* the refused connect comes back here */
  }
  fw_spin(w, 8);
  if ((flags & 8) && fw_alive(w, c)) {
    px_h1_on_timeout(c);
    if (fw_alive(w, c)) px_conn_flush(c);
    fw_spin(w, 2);
  }
  fw_finish(w);
  return 0;
}
