/* tls.c: the SSL_CTX every worker terminates TLS with.
 *
 * Three callbacks do the per-handshake work:
 *  - select_cert: SNI -> certificate, from the table in the SSL_CTX's
 *    ex_data (exact, wildcard, default site), or unrecognized_name;
 *  - alpn_select: "h2" (where the listener allows it), "http/1.1", or
 *    "acme-tls/1" for a challenge handshake;
 *  - ticket_key: session ticket keys from one process-wide ring, so every
 *    SSL_CTX (all workers, every reload) resumes every other's sessions;
 *    a site with client_auth gives its handshakes a session id context of
 *    its own (ccert.c), so its sessions resume there only.
 *
 * Protocol choices, and why:
 *  - TLS 1.2 and 1.3 only; TLS 1.2 with ECDHE and AEADs only, server order,
 *    ChaCha20 equal to AES-128-GCM so clients without AES hardware choose it
 *    (BoringSSL's equal-preference groups). TLS 1.3 suites are all AEADs and
 *    not configurable in BoringSSL.
 *  - Groups X25519, P-256, P-384.
 *  - Extended master secret (RFC 7627) needs no setting: BoringSSL always
 *    negotiates it when the client offers it (tests/unit/test_tls.c checks).
 *  - Renegotiation needs no setting either: a BoringSSL server rejects
 *    every renegotiation attempt.
 *  - No 0-RTT: early data is off unless enabled, and replayable requests
 *    are not worth one round trip.
 *  - SSL_MODE_RELEASE_BUFFERS is 0 in BoringSSL, which always frees the
 *    read and write buffers of an idle connection; handshake configuration
 *    (certificate, key, ...) is shed once the handshake is done, which
 *    keeps an idle connection's SSL small. */
#include "proxy/tls.h"

#include <stdatomic.h>
#include <time.h>

#include <openssl/bytestring.h>
#include <openssl/cipher.h>
#include <openssl/digest.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

/* TLS 1.2 suites in server preference order; [a|b] is an equal-preference
 * group, where the client's order decides. */
static const char cipher_list[] =
    "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]:"
    "[ECDHE-RSA-AES128-GCM-SHA256|ECDHE-RSA-CHACHA20-POLY1305]:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384";

static const char group_list[] = "X25519:P-256:P-384";

/* The table key of the certificate served when no pattern matches: the
 * default site's, or a site whose host pattern is "*". SNI names can never
 * look it up, since '*' is not a host name character. */
static const char default_key[] = "*";

/* Ticket keys rotate at this period when the configuration says nothing
 * (conf_t's default is the same 12h), and never more slowly than the cap. */
#define DEFAULT_ROTATE_MS (12ull * 3600 * 1000)
#define MAX_ROTATE_MS (30ull * 24 * 3600 * 1000)

/* ---- per-SSL_CTX state ---- */

typedef struct {
  acme_cert_table_t *table;
  uint64_t ticket_rotate_ms;
  px_tls_miss_fn on_miss; /* on-demand certificates (proxy/ondemand.c); may be NULL */
  void *on_miss_arg;
  acme_challenges_t *challenges; /* not owned; NULL: no TLS-ALPN-01 */
  px_ccert_t *ccert; /* client certificates, per site (ccert.c) */
  int ip_on_demand;  /* on_demand.allow_ip: a client without SNI may get one for our address */
} tls_state_t;

static pthread_once_t index_once = PTHREAD_ONCE_INIT;
static int ctx_index = -1;       /* SSL_CTX -> tls_state_t */
static int challenge_index = -1; /* SSL -> non-NULL when a challenge cert was served */
static int h2_index = -1;        /* SSL -> non-NULL when "h2" may be chosen */
static int local_ip_index = -1;  /* SSL -> the address the client connected to (text) */

static void state_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
                       void *argp) {
  tls_state_t *st = ptr;
  if (st == NULL) return;
  acme_cert_table_free(st->table);
  px_ccert_free(st->ccert);
  gh_free(st);
}

static void index_init(void) {
  ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, state_free);
  challenge_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
  h2_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
  local_ip_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
  if (ctx_index < 0 || challenge_index < 0 || h2_index < 0 || local_ip_index < 0) abort();
}

static tls_state_t *state_of(const SSL *ssl) {
  return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_index);
}

void px_tls_ctx_set_miss(SSL_CTX *ctx, px_tls_miss_fn fn, void *arg) {
  tls_state_t *st = SSL_CTX_get_ex_data(ctx, ctx_index);
  if (st == NULL) return;
  st->on_miss = fn;
  st->on_miss_arg = arg;
}

void px_tls_ctx_set_challenges(SSL_CTX *ctx, acme_challenges_t *challenges) {
  tls_state_t *st = SSL_CTX_get_ex_data(ctx, ctx_index);
  if (st) st->challenges = challenges;
}

void px_tls_allow_h2(SSL *ssl) {
  pthread_once(&index_once, index_init);
  SSL_set_ex_data(ssl, h2_index, (void *)1);
}

void px_tls_set_local_ip(SSL *ssl, const char *ip) {
  pthread_once(&index_once, index_init);
  SSL_set_ex_data(ssl, local_ip_index, (void *)ip);
}

int px_tls_is_challenge(const SSL *ssl) { return SSL_get_ex_data(ssl, challenge_index) != NULL; }

acme_cert_table_t *px_tls_ctx_table(SSL_CTX *ctx) {
  tls_state_t *st = SSL_CTX_get_ex_data(ctx, ctx_index);
  return st ? st->table : NULL;
}

const px_ccert_site_t *px_tls_ctx_client_auth(SSL_CTX *ctx, size_t site) {
  tls_state_t *st = SSL_CTX_get_ex_data(ctx, ctx_index);
  return st ? px_ccert_site(st->ccert, site) : NULL;
}

/* ---- certificate selection ---- */

/* sni_host finds the host_name in a server_name extension (RFC 6066 3).
 * Returns 0, or -1 if the extension is malformed; BoringSSL accepts exactly
 * one host_name entry and so do we. */
static int sni_host(CBS *out_host, const uint8_t *ext, size_t ext_len) {
  CBS cbs, list;
  uint8_t type;
  CBS_init(&cbs, ext, ext_len);
  if (!CBS_get_u16_length_prefixed(&cbs, &list) || CBS_len(&cbs) != 0 ||
      !CBS_get_u8(&list, &type) || !CBS_get_u16_length_prefixed(&list, out_host) ||
      CBS_len(&list) != 0 || type != TLSEXT_NAMETYPE_host_name) {
    return -1;
  }
  return 0;
}

/* sni_name writes the lower-cased |host| to |out| (256 bytes) and returns
 * its length, or returns 0 if it is not a DNS name a certificate could be
 * held for: LDH labels of 1-63 bytes, 253 bytes in all, no trailing dot.
 * Such names are never looked up (nor, later, ordered). */
static size_t sni_name(char *out, const CBS *host) {
  const uint8_t *p = CBS_data(host);
  size_t len = CBS_len(host);
  if (len == 0 || len > 253) return 0;
  size_t label = 0;
  for (size_t i = 0; i < len; i++) {
    uint8_t c = p[i];
    if (c == '.') {
      if (label == 0) return 0;
      label = 0;
    } else {
      if (c >= 'A' && c <= 'Z') c += 32;
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return 0;
      if (++label > 63) return 0;
    }
    out[i] = (char)c;
  }
  if (label == 0) return 0;
  out[len] = '\0';
  return len;
}

/* offers_acme_tls reports whether the ClientHello's ALPN list is exactly
 * "acme-tls/1", as an ACME validator sends it (RFC 8737 3); a browser that
 * happened to list it among others still gets the site's certificate. */
static int offers_acme_tls(const SSL_CLIENT_HELLO *hello) {
  static const char acme_tls[] = "acme-tls/1";
  const uint8_t *ext;
  size_t ext_len;
  if (!SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_application_layer_protocol_negotiation,
                                            &ext, &ext_len))
    return 0;
  CBS cbs, list, proto;
  CBS_init(&cbs, ext, ext_len);
  return CBS_get_u16_length_prefixed(&cbs, &list) && CBS_len(&cbs) == 0 &&
         CBS_get_u8_length_prefixed(&list, &proto) && CBS_len(&list) == 0 &&
         CBS_mem_equal(&proto, (const uint8_t *)acme_tls, sizeof(acme_tls) - 1);
}

static enum ssl_select_cert_result_t reject(SSL *ssl, uint8_t alert) {
  /* The first alert sent wins: BoringSSL's own handshake_failure after an
   * ssl_select_cert_error is then refused. */
  SSL_send_fatal_alert(ssl, alert);
  return ssl_select_cert_error;
}

/* select_cert runs before BoringSSL has parsed the ClientHello's
 * extensions, so it reads server_name itself. */
static enum ssl_select_cert_result_t select_cert(const SSL_CLIENT_HELLO *hello) {
  SSL *ssl = hello->ssl;
  tls_state_t *st = state_of(ssl);
  char name[256];
  size_t name_len = 0;
  const uint8_t *ext;
  size_t ext_len;
  if (SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_server_name, &ext, &ext_len)) {
    CBS host;
    if (sni_host(&host, ext, ext_len) != 0) return reject(ssl, SSL_AD_DECODE_ERROR);
    name_len = sni_name(name, &host);
  }
  /* No SNI (a client connecting to an IP address sends none, RFC 6066 3):
   * the certificate for the address it connected to, if there is one or
   * on-demand may get one (RFC 8738); else the default, as before. */
  const char *local_ip = name_len == 0 ? SSL_get_ex_data(ssl, local_ip_index) : NULL;
  acme_cert_t *cert = NULL;
  int by_ip = 0; /* |name| is the address; |cert| its certificate, if the table has one */
  if (local_ip != NULL && local_ip[0] != '\0' && strlen(local_ip) < sizeof(name)) {
    size_t ip_len = strlen(local_ip);
    cert = acme_cert_table_get(st->table, local_ip, ip_len);
    if (cert != NULL || st->ip_on_demand) {
      name_len = ip_len;
      memcpy(name, local_ip, ip_len + 1);
      by_ip = 1;
    }
  }

  /* TLS-ALPN-01 (RFC 8737, DESIGN.md flow 3): a ClientHello that offers
   * "acme-tls/1" for a name with a pending challenge gets the challenge
   * certificate, and alpn_select then picks "acme-tls/1". Any other
   * ClientHello for the same name is unaffected. */
  const int validator = offers_acme_tls(hello);
  if (name_len != 0 && !by_ip && st->challenges != NULL && validator) {
    cert = acme_challenges_get_tlsalpn(st->challenges, name, name_len);
    if (cert != NULL) {
      SSL_set_ex_data(ssl, challenge_index, (void *)1);
      int ok = SSL_set_chain_and_key(ssl, cert->chain, cert->num_chain, cert->key, NULL);
      acme_cert_unref(cert);
      if (!ok) return reject(ssl, SSL_AD_INTERNAL_ERROR);
      SSL_set_shed_handshake_config(ssl, 1);
      return ssl_select_cert_success;
    }
  }
  if (name_len != 0) {
    if (!by_ip) cert = acme_cert_table_get(st->table, name, name_len);
    /* On demand (DESIGN.md flow 2): see px_tls_miss_fn. */
    /* Never pause a validator's handshake for an on-demand order: it is
     * the CA checking a challenge (one we no longer have), and pausing it
     * would stall the CA's validation workers. */
    if (cert == NULL && st->on_miss != NULL && !validator) {
      enum ssl_select_cert_result_t r =
          st->on_miss(st->on_miss_arg, hello, name, name_len, &cert);
      if (r != ssl_select_cert_success) return r;
    }
  }
  if (cert == NULL) cert = acme_cert_table_get(st->table, default_key, sizeof(default_key) - 1);
  if (cert != NULL) {
    /* For the on-demand cache's least-recently-used eviction. */
    acme_cert_touch(cert);
  }
  if (cert == NULL) return reject(ssl, SSL_AD_UNRECOGNIZED_NAME);

  /* The SSL takes its own references to the buffers and the key, and drops
   * them when it sheds its configuration after the handshake; ours goes now,
   * so a certificate swapped out of the table is freed as soon as the last
   * handshake using it is done with it. */
  int ok = SSL_set_chain_and_key(ssl, cert->chain, cert->num_chain, cert->key, NULL);
  acme_cert_unref(cert);
  if (!ok) return reject(ssl, SSL_AD_INTERNAL_ERROR);
  /* A client certificate is asked for only here, never for a TLS-ALPN-01
   * validator (above): the CA has none to give. */
  if (px_ccert_handshake(st->ccert, ssl, name, name_len) != 0) {
    return reject(ssl, SSL_AD_INTERNAL_ERROR);
  }
  /* Whoever made the SSL (proxy/conn.c does too): every SSL of this
   * SSL_CTX frees its handshake configuration once done. */
  SSL_set_shed_handshake_config(ssl, 1);
  return ssl_select_cert_success;
}

/* alpn_select picks "h2" if offered and allowed on this listener
 * (px_tls_allow_h2), else "http/1.1" if offered: the server's preference,
 * whatever the client's order. "acme-tls/1" (RFC 8737) is chosen
 * only for a handshake that was served a challenge certificate (flagged in
 * the SSL's ex_data by select_cert).
 * With no protocol in common the handshake fails with
 * no_application_protocol (RFC 7301 3.2): in particular a validator
 * offering only acme-tls/1 for a name with no challenge. A client that
 * sends no ALPN at all never gets here and is served HTTP/1.1. */
static int alpn_select(SSL *ssl, const uint8_t **out, uint8_t *out_len, const uint8_t *in,
                       unsigned in_len, void *arg) {
  static const char http11[] = "http/1.1";
  static const char h2[] = "h2";
  static const char acme_tls[] = "acme-tls/1";
  const int challenge = SSL_get_ex_data(ssl, challenge_index) != NULL;
  const int allow_h2 = SSL_get_ex_data(ssl, h2_index) != NULL;
  CBS list, proto;
  CBS_init(&list, in, in_len);
  const uint8_t *pick = NULL;
  uint8_t pick_len = 0;
  while (CBS_len(&list) != 0) {
    if (!CBS_get_u8_length_prefixed(&list, &proto)) return SSL_TLSEXT_ERR_ALERT_FATAL;
    if (challenge && CBS_mem_equal(&proto, (const uint8_t *)acme_tls, sizeof(acme_tls) - 1)) {
      pick = CBS_data(&proto);
      pick_len = (uint8_t)CBS_len(&proto);
      break;
    }
    if (!challenge && allow_h2 && CBS_mem_equal(&proto, (const uint8_t *)h2, sizeof(h2) - 1)) {
      pick = CBS_data(&proto);
      pick_len = (uint8_t)CBS_len(&proto);
      break;
    }
    if (!challenge && CBS_mem_equal(&proto, (const uint8_t *)http11, sizeof(http11) - 1)) {
      pick = CBS_data(&proto);
      pick_len = (uint8_t)CBS_len(&proto);
    }
  }
  if (pick == NULL) return SSL_TLSEXT_ERR_ALERT_FATAL; /* sends no_application_protocol */
  *out = pick;
  *out_len = pick_len;
  return SSL_TLSEXT_ERR_OK;
}

/* ---- session ticket keys ---- */

/* The ring holds the current key, which encrypts new tickets, and the
 * previous one, which still decrypts (asking for renewal) for one more
 * period. It rotates lazily, when a ticket is made or opened. One ring
 * serves every SSL_CTX in the process: two configurations with different
 * periods (around a reload) rotate it at the shorter one. */
typedef struct {
  uint8_t name[SSL_TICKET_KEY_NAME_LEN];
  uint8_t hmac_key[32];
  uint8_t aes_key[32];
  uint64_t created_ms;
  int in_use;
} ticket_key_t;

static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
static ticket_key_t ring[2]; /* [0] current, [1] previous */
/* The ring's clock (gh_now_ms unless a test set another), read and set
 * under ring_lock. */
static uint64_t (*ring_clock)(void) = gh_now_ms;

void px__tls_set_clock(uint64_t (*now_ms)(void)) {
  pthread_mutex_lock(&ring_lock);
  ring_clock = now_ms != NULL ? now_ms : gh_now_ms;
  pthread_mutex_unlock(&ring_lock);
}

static void ring_rotate_locked(uint64_t now, uint64_t period) {
  if (ring[0].in_use && now - ring[0].created_ms < period) return;
  if (ring[0].in_use && now - ring[0].created_ms < 2 * period) {
    ring[1] = ring[0];
  } else {
    OPENSSL_cleanse(&ring[1], sizeof(ring[1]));
  }
  RAND_bytes(ring[0].name, sizeof(ring[0].name));
  RAND_bytes(ring[0].hmac_key, sizeof(ring[0].hmac_key));
  RAND_bytes(ring[0].aes_key, sizeof(ring[0].aes_key));
  ring[0].created_ms = now;
  ring[0].in_use = 1;
}

/* ring_find copies the key named |name| to |out|. Returns 1 for the current
 * key, 2 for the previous one, 0 if there is no such key (or it is older
 * than two periods). */
static int ring_find(ticket_key_t *out, const uint8_t *name, uint64_t period) {
  int found = 0;
  pthread_mutex_lock(&ring_lock);
  uint64_t now = ring_clock();
  ring_rotate_locked(now, period);
  for (int i = 0; i < 2 && !found; i++) {
    if (ring[i].in_use && now - ring[i].created_ms < 2 * period &&
        CRYPTO_memcmp(ring[i].name, name, SSL_TICKET_KEY_NAME_LEN) == 0) {
      *out = ring[i];
      found = i + 1;
    }
  }
  pthread_mutex_unlock(&ring_lock);
  return found;
}

static void ring_current(ticket_key_t *out, uint64_t period) {
  pthread_mutex_lock(&ring_lock);
  ring_rotate_locked(ring_clock(), period);
  *out = ring[0];
  pthread_mutex_unlock(&ring_lock);
}

/* ticket_key follows SSL_CTX_set_tlsext_ticket_key_cb's contract (see
 * ssl.h): encrypting, 1 or -1; decrypting, 1, 2 (renew: the key is the
 * previous one), 0 (unknown key: full handshake) or -1. */
static int ticket_key(SSL *ssl, uint8_t *key_name, uint8_t *iv, EVP_CIPHER_CTX *cipher,
                      HMAC_CTX *hmac, int encrypt) {
  const uint64_t period = state_of(ssl)->ticket_rotate_ms;
  ticket_key_t key;
  int ret;
  if (encrypt) {
    ring_current(&key, period);
    memcpy(key_name, key.name, SSL_TICKET_KEY_NAME_LEN);
    ret = RAND_bytes(iv, EVP_CIPHER_iv_length(EVP_aes_256_cbc())) &&
                  EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), NULL, key.aes_key, iv) &&
                  HMAC_Init_ex(hmac, key.hmac_key, sizeof(key.hmac_key), EVP_sha256(), NULL)
              ? 1
              : -1;
  } else {
    int which = ring_find(&key, key_name, period);
    if (which == 0) return 0;
    ret = HMAC_Init_ex(hmac, key.hmac_key, sizeof(key.hmac_key), EVP_sha256(), NULL) &&
                  EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), NULL, key.aes_key, iv)
              ? which
              : -1;
  }
  OPENSSL_cleanse(&key, sizeof(key));
  return ret;
}

/* ---- building an SSL_CTX ---- */

/* configure applies the protocol settings. Returns 0, or -1 with |*out_err|
 * naming the call that failed (these fail only when BoringSSL changes). */
static int configure(char **out_err, SSL_CTX *ctx, const conf_t *conf, uint64_t rotate_ms) {
  const char *failed = NULL;
  if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
      !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)) {
    failed = "protocol versions";
  } else if (!SSL_CTX_set_strict_cipher_list(ctx, cipher_list)) {
    failed = "cipher list";
  } else if (!SSL_CTX_set1_curves_list(ctx, group_list)) {
    failed = "groups";
  }
  if (failed != NULL) {
    *out_err = gh_asprintf("TLS setup: BoringSSL rejected the %s", failed);
    return -1;
  }
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
  /* Resumption is by ticket only: a server-side cache would be per
   * SSL_CTX, so per worker and per reload. */
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_select_certificate_cb(ctx, select_cert);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
  if (conf->tls.resumption) {
    /* One context for every SSL_CTX, so sessions resume across them. */
    static const uint8_t sid_ctx[] = "gatehouse";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_tlsext_ticket_key_cb(ctx, ticket_key);
    /* A ticket stays decryptable for at least one rotation period; do not
     * promise clients more. */
    uint64_t secs = rotate_ms / 1000 ? rotate_ms / 1000 : 1;
    if (secs < SSL_DEFAULT_SESSION_TIMEOUT) SSL_CTX_set_timeout(ctx, (uint32_t)secs);
    if (secs < SSL_DEFAULT_SESSION_PSK_DHE_TIMEOUT) {
      SSL_CTX_set_session_psk_dhe_timeout(ctx, (uint32_t)secs);
    }
  } else {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
  }
  return 0;
}

typedef struct {
  const char *cert_file;
  const char *key_file;
  acme_cert_t *cert;
} loaded_t;

/* load_sites loads each distinct (cert, key) file pair once and maps every
 * host pattern of its sites to it; the default site's certificate also
 * goes under default_key. Sites without files are ACME-managed and add
 * nothing yet. Returns 0, or -1 with |*out_err| set. */
static int load_sites(char **out_err, acme_cert_table_t *table, const conf_t *conf) {
  const char *file = conf->file ? conf->file : "config";
  loaded_t *loaded = gh_calloc(conf->num_sites, sizeof(*loaded));
  size_t num_loaded = 0;
  acme_cert_t *default_cert = NULL;
  int ret = 0;
  for (size_t i = 0; i < conf->num_sites && ret == 0; i++) {
    const conf_site_t *site = &conf->sites[i];
    if (site->cert_file == NULL && site->key_file == NULL) continue;
    if (site->cert_file == NULL || site->key_file == NULL) {
      *out_err = gh_asprintf("%s: sites[%zu].tls: needs both cert and key", file, i);
      ret = -1;
      break;
    }
    acme_cert_t *cert = NULL;
    for (size_t j = 0; j < num_loaded && cert == NULL; j++) {
      if (strcmp(loaded[j].cert_file, site->cert_file) == 0 &&
          strcmp(loaded[j].key_file, site->key_file) == 0) {
        cert = loaded[j].cert;
      }
    }
    if (cert == NULL) {
      char *err = NULL;
      cert = acme_cert_load(&err, site->cert_file, site->key_file);
      if (cert == NULL) {
        *out_err = gh_asprintf("%s: sites[%zu].tls: %s", file, i, err);
        gh_free(err);
        ret = -1;
        break;
      }
      loaded[num_loaded++] = (loaded_t){site->cert_file, site->key_file, cert};
    }
    for (size_t h = 0; h < site->num_hosts; h++) acme_cert_table_put(table, site->hosts[h], cert);
    if (site->is_default) default_cert = cert;
  }
  if (ret == 0 && default_cert != NULL) acme_cert_table_put(table, default_key, default_cert);
  for (size_t j = 0; j < num_loaded; j++) acme_cert_unref(loaded[j].cert);
  gh_free(loaded);
  return ret;
}

SSL_CTX *px_tls_ctx_new(char **out_err, const conf_t *conf) {
  pthread_once(&index_once, index_init);
  /* With buffers: certificates stay CRYPTO_BUFFERs, never X509 objects. */
  SSL_CTX *ctx = SSL_CTX_new(TLS_with_buffers_method());
  if (ctx == NULL) abort();
  tls_state_t *st = gh_calloc(1, sizeof(*st));
  st->table = acme_cert_table_new();
  st->ticket_rotate_ms = conf->tls.ticket_rotate_ms ? conf->tls.ticket_rotate_ms
                                                    : DEFAULT_ROTATE_MS;
  if (st->ticket_rotate_ms > MAX_ROTATE_MS) st->ticket_rotate_ms = MAX_ROTATE_MS;
  st->ip_on_demand = conf->on_demand.enabled && conf->on_demand.allow_ip;
  /* From here on SSL_CTX_free frees |st| too. */
  if (!SSL_CTX_set_ex_data(ctx, ctx_index, st)) abort();
  if (configure(out_err, ctx, conf, st->ticket_rotate_ms) != 0 ||
      load_sites(out_err, st->table, conf) != 0 ||
      (st->ccert = px_ccert_new(out_err, conf)) == NULL) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}
