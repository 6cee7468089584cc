/* fuzz_dns.c: acme__dns_parse_txt (acme/dnscheck.c) on arbitrary bytes, as
 * if they were a resolver's answer to our query for the TXT records of
 * "_acme-challenge.a.test.". The query id is taken from the input's first
 * two bytes, so that inputs get past the id check.
 *
 * Invariants: no crash, no leak, no read outside the input (an exact-size
 * copy); only a full answer carries records, each no longer than the input
 * and NUL-terminated. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "acme/dnscheck.h"
#include "common/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *msg = gh_malloc(size ? size : 1);
  memcpy(msg, data, size);
  uint16_t id = size >= 2 ? (uint16_t)(data[0] << 8 | data[1]) : 0;
  acme_dns_answer_t ans;
  acme_dns_result_t r = acme__dns_parse_txt(&ans, msg, size, id, "_acme-challenge.a.test.");
  if (r != ACME_DNS_ANSWER && ans.num_txts != 0) abort();
  if (ans.num_txts > ACME_DNS_MAX_TXTS) abort();
  for (size_t i = 0; i < ans.num_txts; i++) {
    if (ans.txts[i].len > size || ans.txts[i].data[ans.txts[i].len] != '\0') abort();
  }
  acme__dns_answer_cleanup(&ans);
  gh_free(msg);
  return 0;
}
