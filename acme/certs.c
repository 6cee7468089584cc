/* certs.c: reference-counted certificates and the shared certificate table.
 *
 * Certificates are parsed once, when they are loaded or issued, and are
 * immutable afterwards, so any thread may read one it holds a reference to
 * without a lock. Chain certificates are CRYPTO_BUFFERs from one process-wide
 * pool: an intermediate shared by a thousand certificates is stored once.
 *
 * The table is a chained hash map keyed by lower-case pattern, guarded by a
 * write-preferring rwlock. The read path (every handshake) hashes the name
 * with a per-table SipHash key, walks one bucket and increments a refcount:
 * no allocation, and the wildcard key is built in a stack buffer. */
#include <arpa/inet.h>
#include "acme/certs.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/pool.h>
#include <openssl/rand.h>
#include <openssl/siphash.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/common.h"

/* A PEM file larger than this is not a certificate chain or a key. */
#define MAX_PEM_FILE (1u << 20)

/* Longest DNS name (RFC 1035); wildcard keys are "*." plus a parent. */
#define MAX_NAME_LEN 253

/* ---- certificates ---- */

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static CRYPTO_BUFFER_POOL *pool;

/* The pool is never freed: every CRYPTO_BUFFER made from it must die
 * first, and certificates live until the process ends. */
static void pool_init(void) {
  pool = CRYPTO_BUFFER_POOL_new();
  if (pool == NULL) abort();
}

static void lower_copy(char *out, const char *in, size_t len) {
  for (size_t i = 0; i < len; i++) {
    char c = in[i];
    out[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
  }
}

static char *lower_dup(const char *in, size_t len) {
  char *s = gh_malloc(len + 1);
  lower_copy(s, in, len);
  s[len] = '\0';
  return s;
}

static void cert_free(acme_cert_t *cert) {
  for (size_t i = 0; i < cert->num_chain; i++) CRYPTO_BUFFER_free(cert->chain[i]);
  gh_free(cert->chain);
  EVP_PKEY_free(cert->key);
  gh_free(cert->subject_cn);
  gh_free(cert->issuer_cn);
  for (size_t i = 0; i < cert->num_sans; i++) gh_free(cert->sans[i]);
  gh_free(cert->sans);
  gh_free(cert);
}

acme_cert_t *acme_cert_ref(acme_cert_t *cert) {
  atomic_fetch_add_explicit(&cert->refs_, 1, memory_order_relaxed);
  return cert;
}

void acme_cert_unref(acme_cert_t *cert) {
  if (cert == NULL) return;
  /* Release on every drop, acquire on the last, so the freeing thread sees
   * every other thread's last use (the usual refcount pattern). */
  if (atomic_fetch_sub_explicit(&cert->refs_, 1, memory_order_acq_rel) == 1) cert_free(cert);
}

/* The process-wide sequence that orders certificate uses: a number, not a
 * clock, so that no two uses tie. */
static _Atomic uint64_t use_seq = 1;

void acme_cert_touch(acme_cert_t *cert) {
  uint64_t seq = atomic_fetch_add_explicit(&use_seq, 1, memory_order_relaxed);
  atomic_store_explicit(&cert->last_used_, seq, memory_order_relaxed);
}

/* name_cn returns the first commonName of |name| as a new UTF-8 string, or
 * NULL if there is none (or it cannot be converted). */
static char *name_cn(const X509_NAME *name) {
  int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (i < 0) return NULL;
  const ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  unsigned char *utf8 = NULL;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) {
    ERR_clear_error();
    return NULL;
  }
  char *cn = gh_strndup((const char *)utf8, (size_t)len);
  OPENSSL_free(utf8);
  return cn;
}

/* asn1_time_posix converts |t| to seconds since the epoch. Returns 0 on
 * success, -1 if |t| is malformed. */
static int asn1_time_posix(const ASN1_TIME *t, time_t *out) {
  ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
  int days, secs;
  int ok = epoch != NULL && ASN1_TIME_diff(&days, &secs, epoch, t);
  ASN1_TIME_free(epoch);
  if (!ok) return -1;
  *out = (time_t)days * 86400 + secs;
  return 0;
}

int acme_cert_ip_text(char *out, const uint8_t *addr, size_t len) {
  if (len != 4 && len != 16) return -1;
  return inet_ntop(len == 4 ? AF_INET : AF_INET6, addr, out, INET6_ADDRSTRLEN) != NULL ? 0 : -1;
}

static void read_sans(acme_cert_t *cert, const X509 *leaf) {
  GENERAL_NAMES *names = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
  if (names == NULL) {
    ERR_clear_error(); /* absent or malformed: no names either way */
    return;
  }
  size_t n = sk_GENERAL_NAME_num(names);
  cert->sans = gh_calloc(n, sizeof(char *));
  for (size_t i = 0; i < n; i++) {
    const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
    if (gn->type == GEN_IPADD) {
      /* An IP certificate (RFC 8738): the address as text, the key it is
       * found by when a client connects to it without SNI. */
      char text[INET6_ADDRSTRLEN];
      if (acme_cert_ip_text(text, ASN1_STRING_get0_data(gn->d.iPAddress),
                            (size_t)ASN1_STRING_length(gn->d.iPAddress)) == 0)
        cert->sans[cert->num_sans++] = gh_strdup(text);
      continue;
    }
    if (gn->type != GEN_DNS) continue;
    const char *p = (const char *)ASN1_STRING_get0_data(gn->d.dNSName);
    size_t len = (size_t)ASN1_STRING_length(gn->d.dNSName);
    /* A NUL inside a name is an attack on C-string consumers; drop it. */
    if (len == 0 || memchr(p, '\0', len) != NULL) continue;
    cert->sans[cert->num_sans++] = lower_dup(p, len);
  }
  GENERAL_NAMES_free(names);
}

/* read_chain appends every CERTIFICATE block of |pem| to |cert|'s chain
 * (other blocks, such as a key in a combined file, are skipped). Returns 0,
 * or -1 with |*out_err| set. */
static int read_chain(acme_cert_t *cert, char **out_err, const char *label, const char *pem,
                      size_t pem_len) {
  if (pem_len > INT_MAX) {
    *out_err = gh_asprintf("%s: too large", label);
    return -1;
  }
  BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
  if (bio == NULL) abort();
  size_t cap = 0;
  int ret = 0;
  ERR_clear_error();
  for (;;) {
    char *name = NULL, *header = NULL;
    uint8_t *data = NULL;
    long len = 0;
    if (!PEM_read_bio(bio, &name, &header, &data, &len)) {
      /* The loop ends on "no start line"; anything else is a broken block
       * (the nginx ngx_ssl_load_certificate test). */
      uint32_t e = ERR_peek_last_error();
      if (ERR_GET_LIB(e) != ERR_LIB_PEM || ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
        *out_err = gh_asprintf("%s: malformed PEM after %zu certificate(s)", label,
                               cert->num_chain);
        ret = -1;
      }
      ERR_clear_error();
      break;
    }
    int is_cert = strcmp(name, PEM_STRING_X509) == 0 || strcmp(name, PEM_STRING_X509_OLD) == 0;
    if (is_cert) {
      if (cert->num_chain == cap) {
        cap = cap ? cap * 2 : 4;
        cert->chain = gh_realloc(cert->chain, cap * sizeof(CRYPTO_BUFFER *));
      }
      CRYPTO_BUFFER *buf = CRYPTO_BUFFER_new(data, (size_t)len, pool);
      if (buf == NULL) abort();
      cert->chain[cert->num_chain++] = buf;
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(data);
  }
  BIO_free(bio);
  if (ret == 0 && cert->num_chain == 0) {
    *out_err = gh_asprintf("%s: no certificate found", label);
    ret = -1;
  }
  return ret;
}

/* A zero-returning password callback: without one, OpenSSL-derived code
 * may prompt on the terminal for an encrypted key. */
static int no_password(char *buf, int size, int rwflag, void *u) { return 0; }

static EVP_PKEY *read_key(char **out_err, const char *label, const char *pem, size_t pem_len) {
  if (pem_len > INT_MAX) {
    *out_err = gh_asprintf("%s: too large", label);
    return NULL;
  }
  BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
  if (bio == NULL) abort();
  EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
  BIO_free(bio);
  ERR_clear_error();
  if (key == NULL) {
    *out_err = gh_asprintf("%s: no private key found (expected an unencrypted PEM key)", label);
  }
  return key;
}

/* read_leaf fills the facts of |cert| from its first chain certificate and
 * checks every chain certificate parses. Returns 0, or -1 with |*out_err|. */
static int read_leaf(acme_cert_t *cert, char **out_err, const char *chain_label,
                     const char *key_label) {
  X509 *leaf = NULL;
  int ret = -1;
  for (size_t i = 0; i < cert->num_chain; i++) {
    X509 *x = X509_parse_from_buffer(cert->chain[i]);
    if (x == NULL) {
      ERR_clear_error();
      *out_err = gh_asprintf("%s: certificate %zu is not a valid X.509 certificate",
                             chain_label, i + 1);
      goto out;
    }
    if (i == 0) {
      leaf = x;
    } else {
      X509_free(x);
    }
  }
  EVP_PKEY *pub = cert->key != NULL ? X509_get_pubkey(leaf) : NULL;
  int match = cert->key == NULL || (pub != NULL && EVP_PKEY_cmp(pub, cert->key) == 1);
  EVP_PKEY_free(pub);
  ERR_clear_error();
  if (!match) {
    *out_err = gh_asprintf("%s: key does not match certificate (%s)", key_label, chain_label);
    goto out;
  }
  if (asn1_time_posix(X509_get0_notBefore(leaf), &cert->not_before) != 0 ||
      asn1_time_posix(X509_get0_notAfter(leaf), &cert->not_after) != 0) {
    ERR_clear_error();
    *out_err = gh_asprintf("%s: certificate has a malformed validity period", chain_label);
    goto out;
  }
  cert->subject_cn = name_cn(X509_get_subject_name(leaf));
  cert->issuer_cn = name_cn(X509_get_issuer_name(leaf));
  read_sans(cert, leaf);
  ret = 0;
out:
  X509_free(leaf);
  return ret;
}

/* cert_parse is acme_cert_from_pem with the names used in messages; with
 * |key_label| NULL, the chain alone (acme_cert_load_chain). */
static acme_cert_t *cert_parse(char **out_err, const char *chain_label, const char *chain_pem,
                               size_t chain_len, const char *key_label, const char *key_pem,
                               size_t key_len) {
  pthread_once(&pool_once, pool_init);
  acme_cert_t *cert = gh_calloc(1, sizeof(*cert));
  atomic_init(&cert->refs_, 1);
  if (read_chain(cert, out_err, chain_label, chain_pem, chain_len) != 0) goto err;
  if (key_label != NULL && (cert->key = read_key(out_err, key_label, key_pem, key_len)) == NULL)
    goto err;
  if (read_leaf(cert, out_err, chain_label, key_label) != 0) goto err;
  return cert;
err:
  cert_free(cert);
  return NULL;
}

acme_cert_t *acme_cert_from_pem(char **out_err, const char *chain_pem, size_t chain_len,
                                const char *key_pem, size_t key_len) {
  return cert_parse(out_err, "certificate PEM", chain_pem, chain_len, "key PEM", key_pem,
                    key_len);
}

/* read_file reads all of |path| into a new buffer. Returns it, or NULL with
 * |*out_err| set. */
static char *read_file(char **out_err, const char *path, size_t *out_len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    *out_err = gh_asprintf("%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  /* Sized by the file, not by the limit: the admin API reads every
   * certificate at each look, and a 1 MiB buffer per file was an mmap,
   * page faults and an munmap each time. */
  struct stat sb;
  size_t cap = MAX_PEM_FILE;
  if (fstat(fileno(f), &sb) == 0 && sb.st_size >= 0 && (uint64_t)sb.st_size < MAX_PEM_FILE)
    cap = (size_t)sb.st_size;
  char *buf = gh_malloc(cap + 1);
  size_t len = fread(buf, 1, cap + 1, f);
  int failed = ferror(f);
  fclose(f);
  if (failed) {
    *out_err = gh_asprintf("%s: read error", path);
  } else if (len > MAX_PEM_FILE) {
    *out_err = gh_asprintf("%s: larger than %u bytes, not a PEM file", path, MAX_PEM_FILE);
  } else if (len > cap) {
    *out_err = gh_asprintf("%s: it changed while being read", path);
  } else {
    *out_len = len;
    return buf;
  }
  gh_free(buf);
  return NULL;
}

acme_cert_t *acme_cert_load_chain(char **out_err, const char *cert_file) {
  size_t len = 0;
  char *chain = read_file(out_err, cert_file, &len);
  if (chain == NULL) return NULL;
  acme_cert_t *cert = cert_parse(out_err, cert_file, chain, len, NULL, NULL, 0);
  gh_free(chain);
  return cert;
}

acme_cert_t *acme_cert_load(char **out_err, const char *cert_file, const char *key_file) {
  size_t chain_len = 0, key_len = 0;
  char *chain = read_file(out_err, cert_file, &chain_len);
  if (chain == NULL) return NULL;
  char *key = read_file(out_err, key_file, &key_len);
  acme_cert_t *cert = NULL;
  if (key != NULL) {
    cert = cert_parse(out_err, cert_file, chain, chain_len, key_file, key, key_len);
    OPENSSL_cleanse(key, key_len);
  }
  gh_free(chain);
  gh_free(key);
  return cert;
}

/* ---- table ---- */

typedef struct entry {
  struct entry *next;
  uint64_t hash;
  acme_cert_t *cert;
  size_t key_len;
  char key[]; /* lower-case pattern, NUL-terminated */
} entry_t;

struct acme_cert_table {
  pthread_rwlock_t lock;
  uint64_t seed[2]; /* SipHash key: bucket choice is not predictable */
  entry_t **buckets;
  size_t num_buckets; /* a power of two */
  size_t num_entries;
};

acme_cert_table_t *acme_cert_table_new(void) {
  acme_cert_table_t *t = gh_calloc(1, sizeof(*t));
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  /* glibc prefers readers by default; under a steady stream of handshakes
   * the control thread would never get to swap a renewed certificate in. */
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  if (pthread_rwlock_init(&t->lock, &attr) != 0) abort();
  pthread_rwlockattr_destroy(&attr);
  RAND_bytes((uint8_t *)t->seed, sizeof(t->seed));
  t->num_buckets = 16;
  t->buckets = gh_calloc(t->num_buckets, sizeof(entry_t *));
  return t;
}

void acme_cert_table_free(acme_cert_table_t *table) {
  if (table == NULL) return;
  for (size_t i = 0; i < table->num_buckets; i++) {
    entry_t *e = table->buckets[i];
    while (e != NULL) {
      entry_t *next = e->next;
      acme_cert_unref(e->cert);
      gh_free(e);
      e = next;
    }
  }
  gh_free(table->buckets);
  pthread_rwlock_destroy(&table->lock);
  gh_free(table);
}

static uint64_t key_hash(const acme_cert_table_t *t, const char *key, size_t len) {
  return SIPHASH_24(t->seed, (const uint8_t *)key, len);
}

/* find returns the link that points at |key|'s entry (or the NULL at the
 * end of its bucket). Caller holds the lock. */
static entry_t **find(acme_cert_table_t *t, uint64_t hash, const char *key, size_t len) {
  entry_t **link = &t->buckets[hash & (t->num_buckets - 1)];
  while (*link != NULL) {
    entry_t *e = *link;
    if (e->hash == hash && e->key_len == len && memcmp(e->key, key, len) == 0) break;
    link = &e->next;
  }
  return link;
}

static void grow(acme_cert_table_t *t) {
  size_t n = t->num_buckets * 2;
  entry_t **buckets = gh_calloc(n, sizeof(entry_t *));
  for (size_t i = 0; i < t->num_buckets; i++) {
    entry_t *e = t->buckets[i];
    while (e != NULL) {
      entry_t *next = e->next;
      entry_t **head = &buckets[e->hash & (n - 1)];
      e->next = *head;
      *head = e;
      e = next;
    }
  }
  gh_free(t->buckets);
  t->buckets = buckets;
  t->num_buckets = n;
}

void acme_cert_table_put(acme_cert_table_t *table, const char *pattern, acme_cert_t *cert) {
  /* The entry (or, to remove, just its key) is built before locking, so
   * the write lock covers pointer swaps only. */
  size_t len = strlen(pattern);
  entry_t *fresh = gh_malloc(sizeof(*fresh) + len + 1);
  lower_copy(fresh->key, pattern, len);
  fresh->key[len] = '\0';
  fresh->key_len = len;
  fresh->hash = key_hash(table, fresh->key, len);
  fresh->cert = cert ? acme_cert_ref(cert) : NULL;

  pthread_rwlock_wrlock(&table->lock);
  entry_t **link = find(table, fresh->hash, fresh->key, len);
  entry_t *old = *link;
  if (cert != NULL) {
    fresh->next = old ? old->next : NULL;
    *link = fresh;
    fresh = NULL;
    if (old == NULL && ++table->num_entries > table->num_buckets) grow(table);
  } else if (old != NULL) {
    *link = old->next;
    table->num_entries--;
  }
  pthread_rwlock_unlock(&table->lock);

  /* The last reference may go here: free outside the lock. */
  if (old != NULL) {
    acme_cert_unref(old->cert);
    gh_free(old);
  }
  gh_free(fresh);
}

acme_cert_t *acme_cert_table_get(acme_cert_table_t *table, const char *name, size_t name_len) {
  if (name_len == 0 || name_len > MAX_NAME_LEN) return NULL;
  acme_cert_t *cert = NULL;
  pthread_rwlock_rdlock(&table->lock);
  entry_t *e = *find(table, key_hash(table, name, name_len), name, name_len);
  const char *dot = memchr(name, '.', name_len);
  if (e == NULL && dot != NULL && dot + 1 < name + name_len) {
    /* "a.example.com" -> "*.example.com", built on the stack. */
    char wild[MAX_NAME_LEN + 2];
    size_t parent_len = (size_t)(name + name_len - (dot + 1));
    wild[0] = '*';
    wild[1] = '.';
    memcpy(wild + 2, dot + 1, parent_len);
    e = *find(table, key_hash(table, wild, parent_len + 2), wild, parent_len + 2);
  }
  if (e != NULL) cert = acme_cert_ref(e->cert);
  pthread_rwlock_unlock(&table->lock);
  return cert;
}

size_t acme_cert_table_size(acme_cert_table_t *table) {
  pthread_rwlock_rdlock(&table->lock);
  size_t n = table->num_entries;
  pthread_rwlock_unlock(&table->lock);
  return n;
}

char *acme_cert_serial_hex(const acme_cert_t *cert) {
  if (cert->num_chain == 0) return NULL;
  const uint8_t *p = CRYPTO_BUFFER_data(cert->chain[0]);
  X509 *x = d2i_X509(NULL, &p, (long)CRYPTO_BUFFER_len(cert->chain[0]));
  if (x == NULL) return NULL;
  BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
  X509_free(x);
  if (bn == NULL) return NULL;
  char *hex = BN_bn2hex(bn);
  BN_free(bn);
  if (hex == NULL) return NULL;
  const char *digits = hex;
  while (digits[0] == '0' && digits[1] != '\0') digits++;
  char *out = gh_strdup(digits);
  OPENSSL_free(hex);
  for (char *q = out; *q; q++) {
    if (*q >= 'A' && *q <= 'F') *q = (char)(*q - 'A' + 'a');
  }
  return out;
}

int acme_cert_covers(const acme_cert_t *cert, const char *const *names, size_t num_names) {
  for (size_t i = 0; i < num_names; i++) {
    int found = 0;
    for (size_t j = 0; j < cert->num_sans && !found; j++) found = strcmp(cert->sans[j], names[i]) == 0;
    if (!found) return 0;
  }
  return 1;
}

int acme_cert_same(const acme_cert_t *a, const acme_cert_t *b) {
  if (a == NULL || b == NULL || a->num_chain == 0 || b->num_chain == 0) return a == b;
  return CRYPTO_BUFFER_len(a->chain[0]) == CRYPTO_BUFFER_len(b->chain[0]) &&
         memcmp(CRYPTO_BUFFER_data(a->chain[0]), CRYPTO_BUFFER_data(b->chain[0]),
                CRYPTO_BUFFER_len(a->chain[0])) == 0;
}

/* bio_text returns what |bio| holds as a new string. */
static char *bio_text(BIO *bio) {
  const uint8_t *data;
  size_t len;
  if (!BIO_mem_contents(bio, &data, &len)) return NULL;
  return gh_strndup((const char *)data, len);
}

int acme_cert_to_pem(const acme_cert_t *cert, char **out_chain, char **out_key) {
  *out_chain = *out_key = NULL;
  BIO *chain = BIO_new(BIO_s_mem()), *key = BIO_new(BIO_s_mem());
  int ok = chain != NULL && key != NULL && cert->num_chain > 0;
  for (size_t i = 0; ok && i < cert->num_chain; i++) {
    const uint8_t *p = CRYPTO_BUFFER_data(cert->chain[i]);
    X509 *x = d2i_X509(NULL, &p, (long)CRYPTO_BUFFER_len(cert->chain[i]));
    ok = x != NULL && PEM_write_bio_X509(chain, x);
    X509_free(x);
  }
  ok = ok && PEM_write_bio_PrivateKey(key, cert->key, NULL, NULL, 0, NULL, NULL);
  if (ok) {
    *out_chain = bio_text(chain);
    *out_key = bio_text(key);
    ok = *out_chain != NULL && *out_key != NULL;
  }
  BIO_free(chain);
  if (key != NULL) {
    const uint8_t *data;
    size_t len;
    if (BIO_mem_contents(key, &data, &len)) OPENSSL_cleanse((void *)data, len);
    BIO_free(key);
  }
  if (!ok) {
    gh_free(*out_chain);
    gh_free(*out_key);
    *out_chain = *out_key = NULL;
    return -1;
  }
  return 0;
}
