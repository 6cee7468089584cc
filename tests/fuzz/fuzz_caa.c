/* fuzz_caa.c: acme__caa_parse (acme/caa.c) on arbitrary bytes, as if they
 * were a resolver's answer to our CAA query for "a.test", then
 * acme__caa_permits on the records found, for a name and for a wildcard.
 * The query id is taken from the input's first two bytes.
 *
 * Invariants: no crash, no leak, no read outside the input (an exact-size
 * copy); records only in a full answer, each tag non-empty and
 * NUL-terminated, no value longer than the input; permits gives a reason
 * exactly when it forbids. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "acme/dnscheck.h"
#include "common/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const cas[] = {"ca.example", "letsencrypt.org"};
  uint8_t *msg = gh_malloc(size ? size : 1);
  memcpy(msg, data, size);
  uint16_t id = size >= 2 ? (uint16_t)(data[0] << 8 | data[1]) : 0;
  acme_caa_rr_t *rrs;
  size_t num;
  int rcode;
  acme_dns_result_t r = acme__caa_parse(&rrs, &num, &rcode, msg, size, id, "a.test");
  if (r != ACME_DNS_ANSWER && (rrs != NULL || num != 0)) abort();
  for (size_t i = 0; i < num; i++) {
    if (rrs[i].tag[0] == '\0' || rrs[i].value_len > size || rrs[i].value[rrs[i].value_len] != '\0') {
      abort();
    }
  }
  for (int wildcard = 0; wildcard < 2; wildcard++) {
    char *why = NULL;
    int rc = acme__caa_permits(&why, rrs, num, cas, 2, "https://ca.example/acct/1",
                               wildcard ? "dns-01" : "http-01", wildcard);
    if ((rc == 0) != (why == NULL) || (rc != 0 && rc != UV_EPERM)) abort();
    gh_free(why);
  }
  acme__caa_rrs_free(rrs, num);
  gh_free(msg);
  return 0;
}
