/* ccert.c: TLS client certificates (see ccert.h).
 *
 * The SSL_CTX is made with TLS_with_buffers_method (tls.c): certificates
 * stay CRYPTO_BUFFERs and BoringSSL has no X509 verifier to run, so
 * SSL_set_verify and SSL_set1_verify_cert_store would fail every
 * certificate. Verification is ours instead, in a custom verify callback
 * (SSL_set_custom_verify): the peer's chain parsed into X509 objects and
 * checked by X509_verify_cert against the site's X509_STORE with the
 * "ssl_client" purpose, as OpenSSL's own server-side check does. The CA
 * names of the CertificateRequest are DER subjects (SSL_set0_client_CAs),
 * for the same reason. */
#include "proxy/ccert.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pool.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "common/common.h"
#include "common/log.h"

struct px_ccert_site {
  X509_STORE *store;
  STACK_OF(CRYPTO_BUFFER) *ca_names; /* DER subjects of the CA certificates */
  int required;
  uint8_t id[PX_CCERT_ID_LEN];
};

struct px_ccert {
  /* Copies of the sites' host patterns and default flags, all that
   * conf_site_find reads; the rest of each is zero. */
  conf_site_t *sites;
  px_ccert_site_t **auth; /* per site; NULL: no client_auth */
  size_t num_sites;
  int any; /* some site has client_auth */
};

static pthread_once_t index_once = PTHREAD_ONCE_INIT;
static int site_index = -1; /* SSL -> the px_ccert_site_t it was asked a certificate for */

static void index_init(void) {
  site_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
  if (site_index < 0) abort();
}

/* ---- building ---- */

static void site_free(px_ccert_site_t *s) {
  if (s == NULL) return;
  X509_STORE_free(s->store);
  sk_CRYPTO_BUFFER_pop_free(s->ca_names, CRYPTO_BUFFER_free);
  gh_free(s);
}

void px_ccert_free(px_ccert_t *cc) {
  if (cc == NULL) return;
  for (size_t i = 0; i < cc->num_sites; i++) {
    for (size_t h = 0; h < cc->sites[i].num_hosts; h++) gh_free(cc->sites[i].hosts[h]);
    gh_free(cc->sites[i].hosts);
    site_free(cc->auth[i]);
  }
  gh_free(cc->sites);
  gh_free(cc->auth);
  gh_free(cc);
}

/* add_ca adds one CA certificate to |s| (its store, its name for the
 * CertificateRequest) and to the identity hash. Returns 0 or -1. */
static int add_ca(px_ccert_site_t *s, SHA256_CTX *id, X509 *x) {
  uint8_t *der = NULL, *name = NULL;
  int der_len = i2d_X509(x, &der);
  int name_len = i2d_X509_NAME(X509_get_subject_name(x), &name);
  int ok = der_len > 0 && name_len > 0 && X509_STORE_add_cert(s->store, x);
  if (ok) {
    SHA256_Update(id, der, (size_t)der_len);
    CRYPTO_BUFFER *buf = CRYPTO_BUFFER_new(name, (size_t)name_len, NULL);
    ok = buf != NULL && sk_CRYPTO_BUFFER_push(s->ca_names, buf) != 0;
    if (!ok) CRYPTO_BUFFER_free(buf);
  }
  OPENSSL_free(der);
  OPENSSL_free(name);
  return ok ? 0 : -1;
}

/* load_ca_file adds every certificate of the PEM file |path| to |s|.
 * Returns 0, or -1 with |*out_why| a new message. A file with no
 * certificate at all is refused: a site that trusts nothing would refuse
 * every client, or in optional mode quietly accept only clients without
 * one. */
static int load_ca_file(char **out_why, px_ccert_site_t *s, SHA256_CTX *id, const char *path) {
  BIO *bio = BIO_new_file(path, "r");
  if (bio == NULL) {
    *out_why = gh_asprintf("cannot read \"%s\": %s", path, strerror(errno));
    return -1;
  }
  size_t n = 0;
  int ret = 0;
  ERR_clear_error();
  for (;;) {
    X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (x == NULL) break;
    n++;
    if (add_ca(s, id, x) != 0) {
      *out_why = gh_asprintf("\"%s\": certificate %zu cannot be used as a CA", path, n);
      ret = -1;
    }
    X509_free(x);
    if (ret != 0) break;
  }
  uint32_t e = ERR_peek_last_error();
  if (ret == 0 && e != 0 &&
      !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
    char msg[120];
    ERR_error_string_n(e, msg, sizeof(msg));
    *out_why = gh_asprintf("\"%s\": certificate %zu is not valid PEM (%s)", path, n + 1, msg);
    ret = -1;
  } else if (ret == 0 && n == 0) {
    *out_why = gh_asprintf("\"%s\": no PEM certificate in it", path);
    ret = -1;
  }
  ERR_clear_error();
  BIO_free(bio);
  return ret;
}

/* site_new builds the client_auth state of sites[|i|], or returns NULL
 * with |*out_err| set. */
static px_ccert_site_t *site_new(char **out_err, const conf_t *conf, size_t i) {
  const conf_site_t *site = &conf->sites[i];
  const conf_client_auth_t *ca = &site->client_auth;
  px_ccert_site_t *s = gh_calloc(1, sizeof(*s));
  s->store = X509_STORE_new();
  s->ca_names = sk_CRYPTO_BUFFER_new_null();
  if (s->store == NULL || s->ca_names == NULL) abort();
  s->required = ca->mode == CONF_CLIENT_AUTH_REQUIRED;
  /* The identity: everything that decides whether a certificate is good
   * for this site. */
  SHA256_CTX id;
  SHA256_Init(&id);
  static const char label[] = "gatehouse client_auth";
  SHA256_Update(&id, label, sizeof(label));
  SHA256_Update(&id, s->required ? "R" : "O", 1);
  for (size_t h = 0; h < site->num_hosts; h++) {
    SHA256_Update(&id, site->hosts[h], strlen(site->hosts[h]) + 1);
  }
  for (size_t f = 0; f < ca->num_ca_files; f++) {
    char *why = NULL;
    if (load_ca_file(&why, s, &id, ca->ca_files[f]) != 0) {
      *out_err = gh_asprintf("%s: sites[%zu].client_auth.ca[%zu]: %s",
                             conf->file ? conf->file : "config", i, f, why);
      gh_free(why);
      site_free(s);
      return NULL;
    }
  }
  SHA256_Final(s->id, &id);
  return s;
}

px_ccert_t *px_ccert_new(char **out_err, const conf_t *conf) {
  pthread_once(&index_once, index_init);
  px_ccert_t *cc = gh_calloc(1, sizeof(*cc));
  cc->num_sites = conf->num_sites;
  cc->sites = gh_calloc(conf->num_sites, sizeof(*cc->sites));
  cc->auth = gh_calloc(conf->num_sites, sizeof(*cc->auth));
  for (size_t i = 0; i < conf->num_sites; i++) {
    const conf_site_t *site = &conf->sites[i];
    conf_site_t *copy = &cc->sites[i];
    copy->is_default = site->is_default;
    copy->hosts = gh_calloc(site->num_hosts, sizeof(char *));
    for (size_t h = 0; h < site->num_hosts; h++) copy->hosts[h] = gh_strdup(site->hosts[h]);
    copy->num_hosts = site->num_hosts;
    if (!site->client_auth.enabled) continue;
    if ((cc->auth[i] = site_new(out_err, conf, i)) == NULL) {
      px_ccert_free(cc);
      return NULL;
    }
    cc->any = 1;
  }
  return cc;
}

const px_ccert_site_t *px_ccert_site(const px_ccert_t *cc, size_t index) {
  return cc != NULL && index < cc->num_sites ? cc->auth[index] : NULL;
}

/* ---- the handshake ---- */

/* verify_alert picks the alert for a failed verification (RFC 8446 6.2). */
static uint8_t verify_alert(int err) {
  switch (err) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return SSL_AD_CERTIFICATE_EXPIRED;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      return SSL_AD_UNKNOWN_CA;
    case X509_V_ERR_INVALID_PURPOSE:
      return SSL_AD_UNSUPPORTED_CERTIFICATE;
    default:
      return SSL_AD_BAD_CERTIFICATE;
  }
}

/* verify_peer is the custom verify callback: BoringSSL calls it only when
 * the client sent a certificate (no certificate is settled by the verify
 * mode: refused when required, let through when optional), and never on
 * a resumed session, whose certificate was verified for the same site
 * identity (the session id context). */
static enum ssl_verify_result_t verify_peer(SSL *ssl, uint8_t *out_alert) {
  const px_ccert_site_t *site = SSL_get_ex_data(ssl, site_index);
  const STACK_OF(CRYPTO_BUFFER) *certs = SSL_get0_peer_certificates(ssl);
  *out_alert = SSL_AD_INTERNAL_ERROR;
  if (site == NULL || certs == NULL || sk_CRYPTO_BUFFER_num(certs) == 0) return ssl_verify_invalid;
  X509 *leaf = X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(certs, 0));
  STACK_OF(X509) *chain = sk_X509_new_null();
  X509_STORE_CTX *sctx = X509_STORE_CTX_new();
  enum ssl_verify_result_t ret = ssl_verify_invalid;
  if (leaf == NULL) {
    *out_alert = SSL_AD_BAD_CERTIFICATE;
    goto done;
  }
  if (chain == NULL || sctx == NULL) goto done;
  for (size_t i = 1; i < sk_CRYPTO_BUFFER_num(certs); i++) {
    X509 *x = X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(certs, i));
    if (x == NULL) {
      *out_alert = SSL_AD_BAD_CERTIFICATE;
      goto done;
    }
    if (!sk_X509_push(chain, x)) {
      X509_free(x);
      goto done;
    }
  }
  /* "ssl_client": a certificate with an extendedKeyUsage must allow
   * clientAuth, as OpenSSL checks for a server. */
  if (!X509_STORE_CTX_init(sctx, site->store, leaf, chain) ||
      !X509_STORE_CTX_set_default(sctx, "ssl_client")) {
    goto done;
  }
  if (X509_verify_cert(sctx) == 1) {
    ret = ssl_verify_ok;
  } else {
    int err = X509_STORE_CTX_get_error(sctx);
    *out_alert = verify_alert(err);
    GH_DEBUG("tls", "client certificate refused: %s", X509_verify_cert_error_string(err));
  }
done:
  ERR_clear_error();
  X509_STORE_CTX_free(sctx);
  sk_X509_pop_free(chain, X509_free);
  X509_free(leaf);
  return ret;
}

int px_ccert_handshake(const px_ccert_t *cc, SSL *ssl, const char *name, size_t name_len) {
  if (cc == NULL || !cc->any) return 0;
  size_t i = conf_site_find(cc->sites, cc->num_sites, name, name_len);
  const px_ccert_site_t *site = i == SIZE_MAX ? NULL : cc->auth[i];
  /* select_cert runs again after an on-demand pause: start clean. */
  SSL_set_ex_data(ssl, site_index, (void *)site);
  if (site == NULL) return 0;
  /* The SSL takes the list; the names themselves are shared. */
  STACK_OF(CRYPTO_BUFFER) *names = sk_CRYPTO_BUFFER_new_null();
  if (names == NULL) return -1;
  for (size_t k = 0; k < sk_CRYPTO_BUFFER_num(site->ca_names); k++) {
    CRYPTO_BUFFER *b = sk_CRYPTO_BUFFER_value(site->ca_names, k);
    if (!sk_CRYPTO_BUFFER_push(names, b)) {
      sk_CRYPTO_BUFFER_pop_free(names, CRYPTO_BUFFER_free);
      return -1;
    }
    CRYPTO_BUFFER_up_ref(b);
  }
  SSL_set0_client_CAs(ssl, names);
  SSL_set_custom_verify(ssl,
                        SSL_VERIFY_PEER | (site->required ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                        verify_peer);
  return SSL_set_session_id_context(ssl, site->id, sizeof(site->id)) ? 0 : -1;
}

/* ---- after the handshake ---- */

/* subject_text returns the RFC 2253 form of |name| ("CN=alice,O=Example")
 * as a new string. XN_FLAG_RFC2253 escapes control characters and bytes
 * past ASCII; anything else that could break a header line is replaced
 * all the same, since the text goes into one. */
static char *subject_text(const X509_NAME *name) {
  BIO *bio = BIO_new(BIO_s_mem());
  if (bio == NULL) abort();
  char *out = NULL;
  if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
    const uint8_t *p;
    size_t len;
    if (BIO_mem_contents(bio, &p, &len)) {
      out = gh_strndup((const char *)p, len);
      for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)out[i];
        if (ch < 0x20 || ch >= 0x7f) out[i] = '?';
      }
    }
  }
  BIO_free(bio);
  return out;
}

void px_ccert_peer_init(px_ccert_peer_t *out, SSL *ssl) {
  memset(out, 0, sizeof(*out));
  pthread_once(&index_once, index_init);
  const px_ccert_site_t *site = SSL_get_ex_data(ssl, site_index);
  if (site == NULL) return;
  out->auth_site = 1;
  memcpy(out->site_id, site->id, sizeof(out->site_id));
  const STACK_OF(CRYPTO_BUFFER) *certs = SSL_get0_peer_certificates(ssl);
  /* A certificate that failed verification never gets here (the
   * handshake failed); the check of the result guards against a change
   * of that. */
  if (certs == NULL || sk_CRYPTO_BUFFER_num(certs) == 0 ||
      SSL_get_verify_result(ssl) != X509_V_OK) {
    return;
  }
  CRYPTO_BUFFER *leaf_buf = sk_CRYPTO_BUFFER_value(certs, 0);
  X509 *leaf = X509_parse_from_buffer(leaf_buf);
  if (leaf == NULL) return;
  out->subject = subject_text(X509_get_subject_name(leaf));
  X509_free(leaf);
  if (out->subject == NULL) return;
  uint8_t md[SHA256_DIGEST_LENGTH];
  SHA256(CRYPTO_BUFFER_data(leaf_buf), CRYPTO_BUFFER_len(leaf_buf), md);
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < sizeof(md); i++) {
    out->fingerprint[2 * i] = hex[md[i] >> 4];
    out->fingerprint[2 * i + 1] = hex[md[i] & 15];
  }
  out->fingerprint[2 * sizeof(md)] = '\0';
}

void px_ccert_peer_cleanup(px_ccert_peer_t *peer) {
  gh_free(peer->subject);
  peer->subject = NULL;
}

int px_ccert_allows(const px_ccert_peer_t *peer, const px_ccert_site_t *site) {
  if (site == NULL) return 1;
  return peer != NULL && peer->auth_site &&
         memcmp(peer->site_id, site->id, sizeof(peer->site_id)) == 0;
}
