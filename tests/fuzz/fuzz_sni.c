/* fuzz_sni.c: an SNI name, as any client may send it, looked up in the
 * TLS-ALPN-01 challenge table, which reads reverse-mapping names
 * ("7.2.0.192.in-addr.arpa", RFC 8738 6) as the addresses they stand for,
 * and checked by the on-demand precheck (IP literals with allow_ip).
 *
 * Invariants: no crash, no leak, no read past the name; a certificate is
 * found only for one of the table's addresses, its reverse-mapping name
 * or its exact text. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "acme/acme.h"
#include "acme/csr.h"
#include "acme/policy.h"
#include "common/common.h"

static const char *const IPS[] = {"192.0.2.7", "2001:db8::1"};
static const char *const REVERSE[] = {
    "7.2.0.192.in-addr.arpa",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"};
static acme_challenges_t *table;

static void setup(void) {
  table = acme_challenges_new();
  for (size_t i = 0; i < 2; i++) {
    char *err = NULL;
    acme_cert_t *cert = acme__tlsalpn_cert(&err, IPS[i], "t.k");
    if (cert == NULL) abort();
    acme_challenges_put_tlsalpn(table, IPS[i], cert);
    acme_cert_unref(cert);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (table == NULL) setup();
  if (size > 300) return 0; /* an SNI host_name is at most 255 bytes */
  char *name = gh_malloc(size ? size : 1); /* exact size: a read past it is caught */
  memcpy(name, data, size);
  acme_cert_t *cert = acme_challenges_get_tlsalpn(table, name, size);
  if (cert != NULL) {
    int known = 0;
    for (size_t i = 0; i < 2; i++) {
      known |= (size == strlen(IPS[i]) && memcmp(name, IPS[i], size) == 0) ||
               (size == strlen(REVERSE[i]) && strncasecmp(name, REVERSE[i], size) == 0);
    }
    if (!known) {
      fprintf(stderr, "a challenge certificate for %.*s\n", (int)size, name);
      abort();
    }
    acme_cert_unref(cert);
  }
  conf_on_demand_t od = {.enabled = 1, .allow_ip = 1};
  char *allow[] = {"*"};
  od.allow = allow;
  od.num_allow = 1;
  (void)acme_policy_precheck(&od, name, size);
  gh_free(name);
  return 0;
}
