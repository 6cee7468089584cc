/* fuzz_fleet.c: what a fleet's store hands a node (issue 15), on arbitrary
 * bytes. Whatever is under the prefix was written by another node, or by
 * anyone with write access to it: the watcher's routing
 * (acme__storage_etcd_route, acme/storage_etcd.c) parses certificate
 * entries, accounts, refusals and lock and challenge keys from it, writes
 * what it accepts through to a local copy, and the node puts challenge
 * records into its challenge table (acme_challenges_put_fleet builds a
 * TLS-ALPN-01 certificate from the name and key authorization).
 *
 * Byte 0 steers: bit 0 a put (else a delete), bit 1 keep a local copy.
 * The rest is the key under the prefix up to the first NUL, then the
 * value.
 *
 * Invariants: no crash or leak; a certificate handed on has a leaf and a
 * key; a challenge record's id and a refused name are NUL-terminated and
 * the answer put into the table is the one read back; a refusal's reason
 * is printable ASCII and ends later than now. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acme/acme.h"
#include "acme/storage_internal.h"
#include "common/common.h"

static acme_challenges_t *g_table;
static char g_root[64];

static void on_cert(void *arg, const char *name, acme_cert_t *cert, const char *meta) {
  (void)arg;
  if (name == NULL) abort();
  if (cert != NULL) {
    if (cert->num_chain == 0 || cert->key == NULL || meta == NULL) abort();
    gh_free(acme_cert_serial_hex(cert));
  }
}

static void on_challenge(void *arg, acme_storage_challenge_t kind, const char *id,
                         const char *key_auth) {
  (void)arg;
  int http01 = kind == ACME_STORAGE_HTTP01;
  acme_challenges_put_fleet(g_table, http01, id, key_auth);
  if (http01) {
    char *got = acme_challenges_get_http01(g_table, id, strlen(id));
    if ((key_auth == NULL) != (got == NULL) || (got && strcmp(got, key_auth) != 0)) abort();
    gh_free(got);
  } else {
    acme_cert_unref(acme_challenges_get_tlsalpn(g_table, id, strlen(id)));
  }
  acme_challenges_put_fleet(g_table, http01, id, NULL); /* keep the table small */
}

static void on_unlocked(void *arg, const char *name) {
  (void)arg;
  if (strlen(name) == 0) abort();
}

static void on_refused(void *arg, const char *name, const char *why, uint64_t until_ms) {
  (void)arg;
  (void)name;
  if (until_ms <= gh_wall_ms() - 1000) abort();
  for (const char *p = why; *p; p++)
    if (*p < 0x20 || *p > 0x7e) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (g_table == NULL) {
    g_table = acme_challenges_new();
    snprintf(g_root, sizeof(g_root), "/tmp/gh-fuzz-fleet-%d", (int)getpid());
  }
  if (size < 1) return 0;
  int put = data[0] & 1, local = (data[0] & 2) != 0;
  data++;
  size--;
  const uint8_t *nul = memchr(data, '\0', size);
  size_t key_len = nul ? (size_t)(nul - data) : size;
  const uint8_t *value = nul ? nul + 1 : data + size;
  size_t value_len = nul ? size - key_len - 1 : 0;
  static const acme_storage_watch_cbs_t cbs = {on_cert, on_challenge, on_unlocked, on_refused};
  acme__storage_etcd_route("/gatehouse/fuzz/", local ? g_root : NULL, data, key_len, value,
                           value_len, put, &cbs, NULL);
  return 0;
}
