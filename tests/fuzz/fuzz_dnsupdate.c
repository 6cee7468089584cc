/* fuzz_dnsupdate.c: acme__dnsupdate_parse (acme/dnsupdate.c) on arbitrary
 * bytes, as if they were a server's answer to an UPDATE signed with a
 * fixed key, and acme__dnsupdate_why on what it found. The update id is
 * taken from the input's first two bytes, so that inputs get past the id
 * check; the request MAC is fixed.
 *
 * Invariants: no crash, no leak, no read outside the input (an exact-size
 * copy); "verified" only with a TSIG record; a message always names the
 * server unless the answer is a verified, timely NOERROR. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "acme/dnsupdate.h"
#include "common/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint8_t secret[32] = "0123456789abcdef0123456789abcde";
  static const uint8_t req_mac[32] = "fedcba9876543210fedcba987654321";
  const acme_tsig_key_t key = {"gh-key", size % 2 ? CONF_TSIG_HMAC_SHA512 : CONF_TSIG_HMAC_SHA256,
                               secret, sizeof(secret)};
  uint8_t *msg = gh_malloc(size ? size : 1);
  memcpy(msg, data, size);
  uint16_t id = size >= 2 ? (uint16_t)(data[0] << 8 | data[1]) : 0;
  acme_dnsupdate_reply_t r;
  acme_dns_result_t res =
      acme__dnsupdate_parse(&r, msg, size, id, &key, req_mac, sizeof(req_mac), 1700000000u);
  if (r.verified && !r.has_tsig) abort();
  if (res == ACME_DNS_ANSWER) {
    char *why = acme__dnsupdate_why(&r, "127.0.0.1:53", "a.test", "gh-key", "_acme-challenge.a.test.");
    if (why == NULL ? !(r.verified && r.time_ok && r.rcode == 0 && r.tsig_error == 0)
                    : strstr(why, "127.0.0.1:53") == NULL) {
      abort();
    }
    gh_free(why);
  }
  gh_free(msg);
  return 0;
}
