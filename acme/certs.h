/* certs.h: certificates and the shared certificate table.
 *
 * An acme_cert_t is an immutable, reference-counted certificate: its chain
 * as CRYPTO_BUFFERs, its private key, and facts read from the leaf. Workers
 * take a reference for the duration of a handshake, so swapping a newer
 * certificate into the table never disturbs a handshake in flight; the old
 * one is freed when its last user lets go.
 *
 * The table maps host patterns (exact names and "*.example.com") to
 * certificates. Every worker reads it; the control thread (and reload)
 * write it. Reads take a read lock for a hash lookup and a reference
 * increment only. */
#ifndef GH_ACME_CERTS_H
#define GH_ACME_CERTS_H

#include <openssl/base.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct acme_cert {
  CRYPTO_BUFFER **chain; /* leaf first */
  size_t num_chain;
  EVP_PKEY *key;
  time_t not_before;
  time_t not_after;
  char *subject_cn;  /* may be NULL */
  char *issuer_cn;   /* may be NULL */
  char **sans;       /* DNS names from subjectAltName, lower-case */
  size_t num_sans;
  /* When a handshake last used it (acme_cert_touch), as a process-wide use
   * sequence number (ordered, never tied): on-demand LRU eviction. */
  _Atomic uint64_t last_used_;
  /* private */
  _Atomic int refs_;
} acme_cert_t;

/* acme_cert_ip_text writes the address of an iPAddress SAN (|len| bytes
 * at |addr|: 4 or 16) as text into |out| (at least 46 bytes, as
 * INET6_ADDRSTRLEN): the form a certificate's |sans| and an "ip" identifier
 * (RFC 8738) use. Returns 0, or -1 for any other length. */
int acme_cert_ip_text(char *out, const uint8_t *addr, size_t len);

/* acme_cert_from_pem parses a PEM chain (leaf first) and a PEM private key
 * and checks that the key matches the leaf. Returns a new certificate with
 * one reference, or NULL with |*out_err| set (caller frees) naming what is
 * wrong. */
acme_cert_t *acme_cert_from_pem(char **out_err, const char *chain_pem, size_t chain_len,
                                const char *key_pem, size_t key_len);

/* acme_cert_load reads |cert_file| and |key_file| and calls
 * acme_cert_from_pem; errors name the file. */
acme_cert_t *acme_cert_load(char **out_err, const char *cert_file, const char *key_file);

/* acme_cert_load_chain reads only |cert_file|: a certificate to describe
 * (the admin API's listing), never to serve. Its |key| is NULL; the
 * private key, the costly part to parse, is neither read nor checked. */
acme_cert_t *acme_cert_load_chain(char **out_err, const char *cert_file);

/* acme_cert_serial_hex returns the leaf's serial number in lower-case hex
 * without leading zeros, as CAs show it (caller frees), or NULL. */
char *acme_cert_serial_hex(const acme_cert_t *cert);

/* acme_cert_covers reports whether |cert|'s DNS names include every one
 * of |names[0..num_names)|. */
int acme_cert_covers(const acme_cert_t *cert, const char *const *names, size_t num_names);

/* acme_cert_same reports whether |a| and |b| have the same leaf (NULL is
 * the same only as NULL). */
int acme_cert_same(const acme_cert_t *a, const acme_cert_t *b);

/* acme_cert_to_pem writes |cert|'s chain and key as PEM: 0 with two new
 * strings (caller frees; cleanse the key), or -1. */
int acme_cert_to_pem(const acme_cert_t *cert, char **out_chain, char **out_key);

/* acme_cert_ref adds a reference and returns |cert|; acme_cert_unref drops
 * one and frees on the last. acme_cert_unref(NULL) does nothing. Safe from
 * any thread. */
acme_cert_t *acme_cert_ref(acme_cert_t *cert);
void acme_cert_unref(acme_cert_t *cert);

/* acme_cert_touch records that |cert| was used just now (a handshake chose
 * it, or it was just installed): it sets last_used_ to the next number of
 * a process-wide sequence, which the on-demand cache's least-recently-used
 * eviction compares (acme/cache.h). Safe from any thread. */
void acme_cert_touch(acme_cert_t *cert);

typedef struct acme_cert_table acme_cert_table_t;

acme_cert_table_t *acme_cert_table_new(void);
void acme_cert_table_free(acme_cert_table_t *table);

/* acme_cert_table_put maps |pattern| to |cert| (taking a new reference),
 * replacing and unreferencing any previous certificate for it. |cert| NULL
 * removes the pattern. */
void acme_cert_table_put(acme_cert_table_t *table, const char *pattern, acme_cert_t *cert);

/* acme_cert_table_get looks up the lower-case host |name|: exact match
 * first, then the wildcard for its parent ("*.example.com" for
 * "a.example.com"). Returns a new reference (caller unrefs) or NULL. */
acme_cert_t *acme_cert_table_get(acme_cert_table_t *table, const char *name, size_t name_len);

/* acme_cert_table_size returns the number of patterns in the table. */
size_t acme_cert_table_size(acme_cert_table_t *table);

#endif
