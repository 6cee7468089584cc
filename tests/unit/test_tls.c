/* test_tls.c: proxy/tls.c — certificate choice by SNI, protocol limits,
 * ALPN, session tickets across SSL_CTXs, and certificate lifetime across a
 * table swap. Client and server SSLs talk through memory BIOs in one
 * thread; certificates are made at start-up in a temporary directory. */
#include <malloc.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "acme/acme.h"
#include "acme/certs.h"
#include "acme/csr.h"
#include "common/common.h"
#include "conf/conf.h"
#include "proxy/tls.h"
#include "test.h"
#include "testcert.h"

#define ROTATE_12H (12ull * 3600 * 1000)

/* ---- fixture: one certificate per kind of site ---- */

static tc_dir_t dir;
static struct {
  const char *crt, *key;
} exact, wild, dflt, rsa, spare;

static char *exact_hosts[] = {"a.example.com"};
static char *wild_hosts[] = {"*.example.com"};
static char *dflt_hosts[] = {"default.test"};
static char *rsa_hosts[] = {"rsa.test"};
static char *shared_hosts[] = {"shared.test", "*.shared.test"}; /* dflt's files again */
static char *acme_hosts[] = {"managed.test"};                   /* no files: ACME */

typedef struct {
  conf_t conf;
  conf_site_t sites[6];
} test_conf_t;

static void site(conf_site_t *s, char **hosts, size_t num_hosts, const char *crt,
                 const char *key) {
  memset(s, 0, sizeof(*s));
  s->hosts = hosts;
  s->num_hosts = num_hosts;
  s->cert_file = (char *)crt;
  s->key_file = (char *)key;
}

static void conf_init(test_conf_t *tc, int with_default) {
  memset(tc, 0, sizeof(*tc));
  site(&tc->sites[0], exact_hosts, 1, exact.crt, exact.key);
  site(&tc->sites[1], wild_hosts, 1, wild.crt, wild.key);
  site(&tc->sites[2], dflt_hosts, 1, dflt.crt, dflt.key);
  site(&tc->sites[3], rsa_hosts, 1, rsa.crt, rsa.key);
  site(&tc->sites[4], shared_hosts, 2, dflt.crt, dflt.key);
  site(&tc->sites[5], acme_hosts, 1, NULL, NULL);
  tc->sites[2].is_default = with_default;
  tc->conf.file = "test.json";
  tc->conf.sites = tc->sites;
  tc->conf.num_sites = GH_ARRAY_LEN(tc->sites);
  tc->conf.tls.resumption = 1;
  tc->conf.tls.ticket_rotate_ms = ROTATE_12H;
}

static SSL_CTX *server_ctx(const test_conf_t *tc) {
  char *err = NULL;
  SSL_CTX *ctx = px_tls_ctx_new(&err, &tc->conf);
  if (ctx == NULL) {
    fprintf(stderr, "px_tls_ctx_new: %s\n", err);
    abort();
  }
  return ctx;
}

/* site_server returns the server context of the fixture's sites, with or
 * without a default site. */
static SSL_CTX *site_server(int with_default) {
  test_conf_t tc;
  conf_init(&tc, with_default);
  return server_ctx(&tc);
}

/* ---- client side ---- */

static SSL_SESSION *last_session; /* newest session the client received */
static int num_sessions;
static int client_alert; /* last alert the client received, -1 for none */

static int on_new_session(SSL *ssl, SSL_SESSION *session) {
  num_sessions++;
  SSL_SESSION_free(last_session);
  last_session = session;
  return 1; /* we keep the reference */
}

static void on_info(const SSL *ssl, int type, int value) {
  if (type & SSL_CB_READ_ALERT) client_alert = value & 0xff;
}

typedef struct {
  uint16_t max_version;     /* 0 = TLS 1.3 */
  uint16_t min_version;     /* 0 = TLS 1.2 */
  const char *ciphers;      /* NULL = default */
  const char *curves;       /* NULL = default */
} client_opts_t;

static SSL_CTX *client_ctx(client_opts_t o) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  TC_CHECK(ctx);
  TC_CHECK(SSL_CTX_set_min_proto_version(ctx, o.min_version ? o.min_version : TLS1_2_VERSION));
  TC_CHECK(SSL_CTX_set_max_proto_version(ctx, o.max_version ? o.max_version : TLS1_3_VERSION));
  if (o.ciphers) TC_CHECK(SSL_CTX_set_strict_cipher_list(ctx, o.ciphers));
  if (o.curves) TC_CHECK(SSL_CTX_set1_curves_list(ctx, o.curves));
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
  SSL_CTX_sess_set_new_cb(ctx, on_new_session);
  SSL_CTX_set_info_callback(ctx, on_info);
  return ctx;
}

/* ---- a connection over memory BIOs ---- */

typedef struct {
  SSL *client, *server;
  BIO *c_in, *c_out, *s_in, *s_out; /* owned by the SSLs */
  int client_failed, server_failed;
} conn_t;

static void conn_open(conn_t *c, SSL_CTX *sctx, SSL_CTX *cctx, const char *sni,
                      const char *alpn, SSL_SESSION *session) {
  memset(c, 0, sizeof(*c));
  c->client = SSL_new(cctx);
  c->server = SSL_new(sctx);
  TC_CHECK(c->client && c->server);
  c->c_in = BIO_new(BIO_s_mem());
  c->c_out = BIO_new(BIO_s_mem());
  c->s_in = BIO_new(BIO_s_mem());
  c->s_out = BIO_new(BIO_s_mem());
  SSL_set_bio(c->client, c->c_in, c->c_out);
  SSL_set_bio(c->server, c->s_in, c->s_out);
  SSL_set_connect_state(c->client);
  SSL_set_accept_state(c->server);
  if (sni) TC_CHECK(SSL_set_tlsext_host_name(c->client, sni));
  if (alpn) TC_CHECK(SSL_set_alpn_protos(c->client, (const uint8_t *)alpn, strlen(alpn)) == 0);
  if (session) TC_CHECK(SSL_set_session(c->client, session));
  client_alert = -1;
}

static void shuttle(BIO *from, BIO *to) {
  uint8_t buf[4096];
  int n;
  while ((n = BIO_read(from, buf, sizeof(buf))) > 0) TC_CHECK(BIO_write(to, buf, n) == n);
}

/* step runs one side's handshake once. Returns 1 when done, 0 to go on,
 * -1 when it failed. */
static int step(SSL *ssl) {
  ERR_clear_error();
  int r = SSL_do_handshake(ssl);
  if (r == 1) return 1;
  int e = SSL_get_error(ssl, r);
  return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? 0 : -1;
}

/* conn_pump runs both handshakes for at most |rounds| rounds. Returns 1 if
 * both finished. Once done, the client reads what the server sent after
 * its handshake (TLS 1.3 session tickets). */
static int conn_pump(conn_t *c, int rounds) {
  int cs = 0, ss = 0;
  for (int i = 0; i < rounds && !(cs == 1 && ss == 1); i++) {
    if (cs == 0) cs = step(c->client);
    shuttle(c->c_out, c->s_in);
    if (ss == 0) ss = step(c->server);
    shuttle(c->s_out, c->c_in);
    if (cs == -1 || ss == -1) {
      /* Let the other side read the alert. */
      if (cs == 0) cs = step(c->client);
      if (ss == 0) ss = step(c->server);
      break;
    }
  }
  c->client_failed = cs == -1;
  c->server_failed = ss == -1;
  if (cs == 1 && ss == 1) {
    /* A BoringSSL server flushes TLS 1.3 tickets with its first write; a
     * zero-byte write stands in for the HTTP response. */
    uint8_t byte;
    TC_CHECK(SSL_write(c->server, &byte, 0) >= 0);
    shuttle(c->s_out, c->c_in);
    TC_CHECK(SSL_read(c->client, &byte, 1) <= 0);
    return 1;
  }
  return 0;
}

static int conn_handshake(conn_t *c) { return conn_pump(c, 16); }

static void conn_close(conn_t *c) {
  SSL_free(c->client);
  SSL_free(c->server);
  memset(c, 0, sizeof(*c));
}

/* peer_cn returns the subject CN of the certificate the client got. */
static const char *peer_cn(SSL *client) {
  static char cn[256];
  cn[0] = '\0';
  const STACK_OF(CRYPTO_BUFFER) *chain = SSL_get0_peer_certificates(client);
  if (chain == NULL || sk_CRYPTO_BUFFER_num(chain) == 0) return "(none)";
  X509 *x = X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(chain, 0));
  TC_CHECK(x);
  X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
  X509_free(x);
  return cn;
}

/* connect_cn handshakes with |sni| and returns the CN served, or "(failed)". */
static const char *connect_cn(SSL_CTX *sctx, SSL_CTX *cctx, const char *sni) {
  conn_t c;
  conn_open(&c, sctx, cctx, sni, NULL, NULL);
  const char *cn = conn_handshake(&c) ? peer_cn(c.client) : "(failed)";
  conn_close(&c);
  return cn;
}

static SSL_CTX *default_client(void) { return client_ctx((client_opts_t){0}); }

/* ---- tests ---- */

/* A modern client gets TLS 1.3, X25519 and http/1.1. */
static void test_handshake_defaults(void) {
  SSL_CTX *s = site_server(1), *cl = default_client();
  conn_t c;
  conn_open(&c, s, cl, "a.example.com", "\x02h2\x08http/1.1", NULL);
  ASSERT_TRUE(conn_handshake(&c));
  ASSERT_STR_EQ(peer_cn(c.client), "a.example.com");
  ASSERT_EQ(SSL_version(c.server), TLS1_3_VERSION);
  ASSERT_EQ(SSL_get_curve_id(c.server), SSL_CURVE_X25519);
  const uint8_t *proto;
  unsigned proto_len;
  SSL_get0_alpn_selected(c.client, &proto, &proto_len);
  ASSERT_EQ(proto_len, 8);
  ASSERT_TRUE(memcmp(proto, "http/1.1", 8) == 0);
  ASSERT_STR_EQ(SSL_get_servername(c.server, TLSEXT_NAMETYPE_host_name), "a.example.com");
  conn_close(&c);
  SSL_CTX_free(s);
  SSL_CTX_free(cl);
}

/* Which certificate each SNI name gets: exact, then wildcard, then the
 * default site, else unrecognized_name. */
static void test_cert_choice(void) {
  char too_long[255]; /* 254 bytes: one more than a DNS name may have */
  memset(too_long, 'a', sizeof(too_long) - 1);
  too_long[sizeof(too_long) - 1] = '\0';
  for (size_t i = 50; i < sizeof(too_long) - 1; i += 50) too_long[i] = '.';
  const struct {
    int with_default;
    const char *sni;
    const char *want; /* CN served; NULL: unrecognized_name */
  } cases[] = {
      {1, "a.example.com", "a.example.com"}, /* exact beats the wildcard */
      {1, "A.Example.COM", "a.example.com"}, /* SNI is case-insensitive */
      {1, "b.example.com", "*.example.com"},
      {1, "x.shared.test", "default.test"},  /* dflt's files, shared */
      {1, "a.b.example.com", "default.test"}, /* '*' is one label only */
      {1, "unknown.test", "default.test"},
      {1, NULL, "default.test"},
      {1, "managed.test", "default.test"}, /* ACME-managed: nothing yet */
      {1, "bad_name.example.com", "default.test"}, /* not a DNS name */
      {0, "b.example.com", "*.example.com"},
      {0, "a.b.example.com", NULL},
      {0, "unknown.test", NULL},
      {0, NULL, NULL},
      {0, "bad_name.example.com", NULL},
      {0, too_long, NULL},
  };
  SSL_CTX *servers[2] = {site_server(0), site_server(1)};
  SSL_CTX *cl = default_client();
  for (size_t i = 0; i < GH_ARRAY_LEN(cases); i++) {
    conn_t c;
    conn_open(&c, servers[cases[i].with_default], cl, cases[i].sni, NULL, NULL);
    int ok = conn_handshake(&c);
    const char *got = ok ? peer_cn(c.client) : "(failed)";
    if (ok != (cases[i].want != NULL) || (ok && strcmp(got, cases[i].want) != 0)) {
      fprintf(stderr, "case %zu: %s -> %s\n", i, cases[i].sni ? cases[i].sni : "(no SNI)", got);
    }
    if (cases[i].want != NULL) {
      ASSERT_STR_EQ(got, cases[i].want);
    } else {
      ASSERT_FALSE(ok);
      ASSERT_TRUE(c.server_failed && c.client_failed);
      ASSERT_EQ(client_alert, SSL_AD_UNRECOGNIZED_NAME);
    }
    conn_close(&c);
  }
  SSL_CTX_free(servers[0]);
  SSL_CTX_free(servers[1]);
  SSL_CTX_free(cl);
}

static void test_file_pairs_shared(void) {
  SSL_CTX *s = site_server(1);
  acme_cert_table_t *t = px_tls_ctx_table(s);
  /* 6 host patterns with files, plus the default entry. */
  ASSERT_EQ(acme_cert_table_size(t), 7);
  acme_cert_t *a = acme_cert_table_get(t, "default.test", 12);
  acme_cert_t *b = acme_cert_table_get(t, "shared.test", 11);
  ASSERT_NOT_NULL(a);
  ASSERT_TRUE(a == b);
  ASSERT_NULL(acme_cert_table_get(t, "managed.test", 12));
  acme_cert_unref(a);
  acme_cert_unref(b);
  SSL_CTX_free(s);
}

static void test_protocol_versions(void) {
  SSL_CTX *s = site_server(1);

  SSL_CTX *old = client_ctx((client_opts_t){.min_version = TLS1_1_VERSION,
                                            .max_version = TLS1_1_VERSION});
  conn_t c;
  conn_open(&c, s, old, "a.example.com", NULL, NULL);
  ASSERT_FALSE(conn_handshake(&c));
  ASSERT_EQ(client_alert, SSL_AD_PROTOCOL_VERSION);
  conn_close(&c);
  SSL_CTX_free(old);

  /* TLS 1.2 works, with an AEAD suite and extended master secret. */
  SSL_CTX *v12 = client_ctx((client_opts_t){.max_version = TLS1_2_VERSION});
  conn_open(&c, s, v12, "a.example.com", "\x08http/1.1", NULL);
  ASSERT_TRUE(conn_handshake(&c));
  ASSERT_EQ(SSL_version(c.server), TLS1_2_VERSION);
  ASSERT_TRUE(SSL_CIPHER_is_aead(SSL_get_current_cipher(c.server)));
  ASSERT_EQ(SSL_CIPHER_get_kx_nid(SSL_get_current_cipher(c.server)), NID_kx_ecdhe);
  ASSERT_EQ(SSL_get_extms_support(c.server), 1);
  conn_close(&c);
  SSL_CTX_free(v12);
  SSL_CTX_free(s);
}

static void test_tls12_ciphers(void) {
  SSL_CTX *s = site_server(1);
  static const struct {
    const char *ciphers, *sni;
    int ok;
  } cases[] = {
      {"ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA", "a.example.com", 0},
      {"AES128-GCM-SHA256:AES256-GCM-SHA384", "rsa.test", 0}, /* RSA key exchange */
      {"ECDHE-RSA-AES128-SHA", "rsa.test", 0},
      {"ECDHE-ECDSA-AES256-GCM-SHA384", "a.example.com", 1},
      {"ECDHE-ECDSA-CHACHA20-POLY1305", "a.example.com", 1},
      {"ECDHE-RSA-AES128-GCM-SHA256", "rsa.test", 1},
      {"ECDHE-RSA-AES256-GCM-SHA384", "rsa.test", 1},
      {"ECDHE-RSA-CHACHA20-POLY1305", "rsa.test", 1},
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(cases); i++) {
    SSL_CTX *cl =
        client_ctx((client_opts_t){.max_version = TLS1_2_VERSION, .ciphers = cases[i].ciphers});
    conn_t c;
    conn_open(&c, s, cl, cases[i].sni, NULL, NULL);
    int ok = conn_handshake(&c);
    if (ok != cases[i].ok) fprintf(stderr, "cipher case %zu: %s\n", i, cases[i].ciphers);
    ASSERT_EQ(ok, cases[i].ok);
    if (!ok) ASSERT_EQ(client_alert, SSL_AD_HANDSHAKE_FAILURE);
    conn_close(&c);
    SSL_CTX_free(cl);
  }
  /* The server's order wins: AES-128-GCM (or its ChaCha20 equal) first. */
  SSL_CTX *cl = client_ctx((client_opts_t){
      .max_version = TLS1_2_VERSION,
      .ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"});
  conn_t c;
  conn_open(&c, s, cl, "a.example.com", NULL, NULL);
  ASSERT_TRUE(conn_handshake(&c));
  ASSERT_STR_EQ(SSL_CIPHER_get_name(SSL_get_current_cipher(c.server)),
                "ECDHE-ECDSA-AES128-GCM-SHA256");
  conn_close(&c);
  SSL_CTX_free(cl);
  SSL_CTX_free(s);
}

static void test_groups(void) {
  SSL_CTX *s = site_server(1);
  static const struct {
    const char *curves;
    uint16_t max_version;
    int want; /* curve id, 0 = handshake fails */
  } cases[] = {
      {"P-256", 0, SSL_CURVE_SECP256R1},
      {"P-384", 0, SSL_CURVE_SECP384R1},
      {"P-521:P-384", 0, SSL_CURVE_SECP384R1}, /* HelloRetryRequest */
      {"P-521", 0, 0},
      {"P-521", TLS1_2_VERSION, 0},
      {"P-256:X25519", TLS1_2_VERSION, SSL_CURVE_X25519}, /* server order */
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(cases); i++) {
    SSL_CTX *cl = client_ctx(
        (client_opts_t){.curves = cases[i].curves, .max_version = cases[i].max_version});
    conn_t c;
    conn_open(&c, s, cl, "a.example.com", NULL, NULL);
    int ok = conn_handshake(&c);
    if (ok != (cases[i].want != 0)) fprintf(stderr, "group case %zu\n", i);
    ASSERT_EQ(ok, cases[i].want != 0);
    if (ok) ASSERT_EQ(SSL_get_curve_id(c.server), cases[i].want);
    conn_close(&c);
    SSL_CTX_free(cl);
  }
  SSL_CTX_free(s);
}

static void test_alpn(void) {
  SSL_CTX *s = site_server(1), *cl = default_client();
  static const struct {
    const char *offer, *want; /* want NULL: no ALPN; "!": fails */
  } cases[] = {
      {"\x08http/1.1", "http/1.1"},
      {"\x02h2\x0a" "acme-tls/1\x08http/1.1", "http/1.1"},
      {NULL, NULL},
      {"\x0a" "acme-tls/1", "!"}, /* no challenge for this name */
      {"\x02h2", "!"},
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(cases); i++) {
    conn_t c;
    conn_open(&c, s, cl, "a.example.com", cases[i].offer, NULL);
    int ok = conn_handshake(&c);
    if (ok != (cases[i].want == NULL || cases[i].want[0] != '!')) {
      fprintf(stderr, "alpn case %zu\n", i);
    }
    if (cases[i].want != NULL && cases[i].want[0] == '!') {
      ASSERT_FALSE(ok);
      ASSERT_EQ(client_alert, SSL_AD_NO_APPLICATION_PROTOCOL);
    } else {
      ASSERT_TRUE(ok);
      const uint8_t *proto;
      unsigned len;
      SSL_get0_alpn_selected(c.client, &proto, &len);
      size_t want_len = cases[i].want ? strlen(cases[i].want) : 0;
      ASSERT_EQ(len, want_len);
      ASSERT_TRUE(want_len == 0 || memcmp(proto, cases[i].want, want_len) == 0);
    }
    conn_close(&c);
  }
  SSL_CTX_free(s);
  SSL_CTX_free(cl);
}

/* resume handshakes with |session| and returns whether it was resumed. */
static int resume(SSL_CTX *s, SSL_CTX *cl, SSL_SESSION *session) {
  conn_t c;
  conn_open(&c, s, cl, "a.example.com", NULL, session);
  int ok = conn_handshake(&c);
  int reused = ok && SSL_session_reused(c.server);
  conn_close(&c);
  return ok ? reused : -1;
}

static SSL_SESSION *take_session(void) {
  SSL_SESSION *s = last_session;
  last_session = NULL;
  return s;
}

/* TLS-ALPN-01: a ClientHello offering only acme-tls/1 for a name with a
 * pending challenge gets the challenge certificate and acme-tls/1; other
 * clients of that name are unaffected; without the challenge, such a
 * ClientHello fails with no_application_protocol. */
static void test_tlsalpn_challenge(void) {
  SSL_CTX *s = site_server(1), *cl = default_client();
  acme_challenges_t *ch = acme_challenges_new();
  px_tls_ctx_set_challenges(s, ch);
  char *err = NULL;
  acme_cert_t *chal = acme__tlsalpn_cert(&err, "a.example.com", "token.thumbprint");
  ASSERT_NOT_NULL(chal);
  acme_challenges_put_tlsalpn(ch, "a.example.com", chal);
  acme_cert_unref(chal);

  conn_t c;
  conn_open(&c, s, cl, "a.example.com", "\x0a" "acme-tls/1", NULL);
  ASSERT_TRUE(conn_handshake(&c));
  const uint8_t *proto;
  unsigned len;
  SSL_get0_alpn_selected(c.client, &proto, &len);
  ASSERT_EQ(len, 10);
  ASSERT_TRUE(memcmp(proto, "acme-tls/1", 10) == 0);
  ASSERT_TRUE(px_tls_is_challenge(c.server));
  /* The served leaf carries the critical id-pe-acmeIdentifier extension. */
  const STACK_OF(CRYPTO_BUFFER) *bufs = SSL_get0_peer_certificates(c.client);
  ASSERT_NOT_NULL(bufs);
  const CRYPTO_BUFFER *leaf = sk_CRYPTO_BUFFER_value(bufs, 0);
  const uint8_t *der = CRYPTO_BUFFER_data(leaf);
  X509 *x = d2i_X509(NULL, &der, (long)CRYPTO_BUFFER_len(leaf));
  ASSERT_NOT_NULL(x);
  ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
  int idx = X509_get_ext_by_OBJ(x, oid, -1);
  ASSERT_TRUE(idx >= 0);
  ASSERT_TRUE(X509_EXTENSION_get_critical(X509_get_ext(x, idx)));
  ASN1_OBJECT_free(oid);
  X509_free(x);
  conn_close(&c);

  /* A normal client of the same name gets the site's certificate. */
  ASSERT_STR_EQ(connect_cn(s, cl, "a.example.com"), "a.example.com");
  conn_open(&c, s, cl, "a.example.com", "\x08http/1.1", NULL);
  ASSERT_TRUE(conn_handshake(&c));
  ASSERT_FALSE(px_tls_is_challenge(c.server));
  conn_close(&c);

  /* No challenge any more: the validator's ClientHello fails. */
  acme_challenges_put_tlsalpn(ch, "a.example.com", NULL);
  conn_open(&c, s, cl, "a.example.com", "\x0a" "acme-tls/1", NULL);
  ASSERT_FALSE(conn_handshake(&c));
  ASSERT_EQ(client_alert, SSL_AD_NO_APPLICATION_PROTOCOL);
  conn_close(&c);
  SSL_CTX_free(s);
  SSL_CTX_free(cl);
  acme_challenges_free(ch);
}

static void test_resumption_across_ctxs(void) {
  /* Two workers, or the old and the new configuration around a reload. */
  SSL_CTX *s1 = site_server(1), *s2 = site_server(1);
  uint16_t versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};
  for (size_t i = 0; i < GH_ARRAY_LEN(versions); i++) {
    SSL_CTX *cl = client_ctx((client_opts_t){.max_version = versions[i]});
    num_sessions = 0;
    ASSERT_STR_EQ(connect_cn(s1, cl, "a.example.com"), "a.example.com");
    ASSERT_TRUE(num_sessions >= 1);
    SSL_SESSION *session = take_session();
    ASSERT_NOT_NULL(session);
    ASSERT_TRUE(SSL_SESSION_has_ticket(session));
    ASSERT_EQ(resume(s2, cl, session), 1);
    ASSERT_EQ(resume(s1, cl, session), 1);
    SSL_SESSION_free(session);
    SSL_SESSION_free(take_session());
    SSL_CTX_free(cl);
  }
  SSL_CTX_free(s1);
  SSL_CTX_free(s2);
}

static void test_no_tickets_when_off(void) {
  test_conf_t tc;
  conf_init(&tc, 1);
  tc.conf.tls.resumption = 0;
  SSL_CTX *s = server_ctx(&tc);
  ASSERT_TRUE(SSL_CTX_get_options(s) & SSL_OP_NO_TICKET);
  uint16_t versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};
  for (size_t i = 0; i < GH_ARRAY_LEN(versions); i++) {
    SSL_CTX *cl = client_ctx((client_opts_t){.max_version = versions[i]});
    num_sessions = 0;
    conn_t c;
    conn_open(&c, s, cl, "a.example.com", NULL, NULL);
    ASSERT_TRUE(conn_handshake(&c));
    ASSERT_EQ(num_sessions, 0); /* nothing resumable reached the client */
    /* Nor can the session it has be resumed (no ticket, no session ID). */
    SSL_SESSION *session = SSL_get1_session(c.client);
    conn_close(&c);
    ASSERT_NOT_NULL(session);
    ASSERT_FALSE(SSL_SESSION_has_ticket(session));
    unsigned id_len = 0;
    SSL_SESSION_get_id(session, &id_len);
    ASSERT_EQ(id_len, 0);
    ASSERT_NE(resume(s, cl, session), 1);
    SSL_SESSION_free(session);
    SSL_CTX_free(cl);
  }
  SSL_CTX_free(s);
}

static void frozen_time(const SSL *ssl, struct timeval *out_clock) {
  out_clock->tv_sec = 1700000000;
  out_clock->tv_usec = 0;
}

static uint64_t fake_ms;
static uint64_t fake_clock(void) { return fake_ms; }

/* resume_renews resumes |session| and reports whether the server renewed
 * its ticket: 1 (resumed, new ticket), 0 (resumed, none), or -1 (not
 * resumed, or the handshake failed). A new ticket becomes the client's
 * last_session. */
static int resume_renews(SSL_CTX *s, SSL_CTX *cl, SSL_SESSION *session) {
  num_sessions = 0;
  if (resume(s, cl, session) != 1) return -1;
  return num_sessions != 0;
}

/* A key encrypts for one period and decrypts (asking for a new ticket) for
 * one more, both counted from its creation; after that its tickets mean a
 * full handshake. The ring runs on a fake clock, so each step sits exactly
 * on a boundary. */
static void test_ticket_rotation(void) {
  const uint64_t period = 1000;
  test_conf_t tc;
  conf_init(&tc, 1);
  tc.conf.tls.ticket_rotate_ms = period;
  SSL_CTX *s = server_ctx(&tc);
  SSL_CTX *cl = client_ctx((client_opts_t){.max_version = TLS1_2_VERSION});
  /* BoringSSL's session clock has whole seconds; freeze it, so only the key
   * ring decides below. */
  SSL_CTX_set_current_time_cb(s, frozen_time);
  SSL_CTX_set_current_time_cb(cl, frozen_time);
  /* Far from any time gh_now_ms gave earlier cases: the ring's current key
   * is more than two periods old, so the first ticket below is made with a
   * key created right now, at |t0|. */
  const uint64_t t0 = UINT64_C(1) << 62;
  fake_ms = t0;
  px__tls_set_clock(fake_clock);
  num_sessions = 0;
  ASSERT_STR_EQ(connect_cn(s, cl, "a.example.com"), "a.example.com");
  SSL_SESSION *first = take_session();
  ASSERT_NOT_NULL(first);
  /* To the end of its first period: the current key, no new ticket. */
  fake_ms = t0 + period - 1;
  ASSERT_EQ(resume_renews(s, cl, first), 0);
  /* From the start of its second period: the previous key, so a new
   * ticket, made with the new current key. */
  fake_ms = t0 + period;
  ASSERT_EQ(resume_renews(s, cl, first), 1);
  SSL_SESSION *renewed = take_session();
  ASSERT_NOT_NULL(renewed);
  ASSERT_EQ(resume_renews(s, cl, renewed), 0);
  fake_ms = t0 + 2 * period - 1;
  ASSERT_EQ(resume_renews(s, cl, first), 1);
  SSL_SESSION_free(take_session());
  /* After two periods the first key is gone: a full handshake, and a
   * ticket made with the key created now. */
  fake_ms = t0 + 2 * period;
  num_sessions = 0;
  ASSERT_EQ(resume(s, cl, first), 0);
  ASSERT_EQ(num_sessions, 1);
  SSL_SESSION *later = take_session();
  ASSERT_NOT_NULL(later);
  /* No handshake wakes the ring until half a period after the next
   * rotation was due: the rotation comes late, but |later|'s key still
   * stops decrypting two periods after it was created. */
  fake_ms = t0 + 3 * period + period / 2;
  ASSERT_EQ(resume_renews(s, cl, later), 1);
  SSL_SESSION_free(take_session());
  fake_ms = t0 + 4 * period - 1;
  ASSERT_EQ(resume_renews(s, cl, later), 1);
  SSL_SESSION_free(take_session());
  fake_ms = t0 + 4 * period;
  ASSERT_EQ(resume(s, cl, later), 0);
  SSL_SESSION_free(take_session());
  px__tls_set_clock(NULL);
  SSL_SESSION_free(first);
  SSL_SESSION_free(renewed);
  SSL_SESSION_free(later);
  SSL_CTX_free(cl);
  SSL_CTX_free(s);
}

/* A handshake keeps the certificate it was given while the table moves on,
 * and the replaced certificate is freed once its last user is done. Under
 * ASan a lifetime mistake here is a use after free. */
static void test_table_swap_during_handshake(void) {
  SSL_CTX *s = site_server(0), *cl = default_client();
  acme_cert_table_t *t = px_tls_ctx_table(s);
  char *err = NULL;
  acme_cert_t *fresh = acme_cert_load(&err, spare.crt, spare.key);
  ASSERT_NOT_NULL(fresh);
  acme_cert_t *old = acme_cert_table_get(t, "a.example.com", 13);
  ASSERT_NOT_NULL(old);

  conn_t c;
  conn_open(&c, s, cl, "a.example.com", NULL, NULL);
  ASSERT_FALSE(conn_pump(&c, 1)); /* ClientHello read, certificate chosen */
  acme_cert_table_put(t, "a.example.com", fresh);
  acme_cert_unref(fresh);
  ASSERT_STR_EQ(old->subject_cn, "a.example.com"); /* our reference still holds */
  acme_cert_unref(old);                            /* the last one: freed */
  ASSERT_TRUE(conn_handshake(&c));
  ASSERT_STR_EQ(peer_cn(c.client), "a.example.com");
  ASSERT_STR_EQ(connect_cn(s, cl, "a.example.com"), "spare.test");
  conn_close(&c);
  SSL_CTX_free(s);
  SSL_CTX_free(cl);
}

static void test_ctx_errors(void) {
  test_conf_t tc;
  conf_init(&tc, 1);
  char *err = NULL;
  tc.sites[3].key_file = (char *)exact.key;
  ASSERT_NULL(px_tls_ctx_new(&err, &tc.conf));
  char want[512];
  snprintf(want, sizeof(want), "test.json: sites[3].tls: %s: key does not match certificate (%s)",
           exact.key, rsa.crt);
  ASSERT_STR_EQ(err, want);
  free(err);

  conf_init(&tc, 1);
  tc.sites[1].cert_file = "/nonexistent/wild.crt";
  ASSERT_NULL(px_tls_ctx_new(&err, &tc.conf));
  ASSERT_STR_EQ(err, "test.json: sites[1].tls: /nonexistent/wild.crt: cannot open: "
                     "No such file or directory");
  free(err);

  conf_init(&tc, 1);
  tc.sites[0].key_file = NULL;
  ASSERT_NULL(px_tls_ctx_new(&err, &tc.conf));
  ASSERT_STR_EQ(err, "test.json: sites[0].tls: needs both cert and key");
  free(err);
}

/* The SSL state an idle, finished connection keeps (BoringSSL frees the
 * record buffers when empty, and the handshake configuration is shed).
 * mallinfo2 does not see through ASan's allocator, so this runs only in the
 * plain build. */
static void test_idle_connection_memory(void) {
#if defined(__SANITIZE_ADDRESS__)
  fprintf(stderr, "     (skipped under ASan)\n");
#else
  enum { N = 64 };
  SSL_CTX *s = site_server(1), *cl = default_client();
  SSL *servers[N];
  for (int i = 0; i < N; i++) {
    conn_t c;
    conn_open(&c, s, cl, "a.example.com", "\x08http/1.1", NULL);
    ASSERT_TRUE(conn_handshake(&c));
    servers[i] = c.server;
    /* Fresh, empty BIOs: the real transport is the worker's, not ours. */
    SSL_set_bio(c.server, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
    SSL_free(c.client);
  }
  SSL_SESSION_free(take_session());
  size_t before = mallinfo2().uordblks;
  for (int i = 0; i < N; i++) SSL_free(servers[i]);
  size_t per_conn = (before - mallinfo2().uordblks) / N;
  fprintf(stderr, "     idle TLS connection: %zu bytes of SSL state\n", per_conn);
  ASSERT_TRUE(per_conn < 6 * 1024);
  SSL_CTX_free(s);
  SSL_CTX_free(cl);
#endif
}

int main(void) {
  tc_dir_init(&dir);
  tc_issue(&dir, "exact", "a.example.com", "a.example.com", 0, &exact.crt, &exact.key);
  tc_issue(&dir, "wild", "*.example.com", "*.example.com", 0, &wild.crt, &wild.key);
  tc_issue(&dir, "default", "default.test", "default.test", 0, &dflt.crt, &dflt.key);
  tc_issue(&dir, "rsa", "rsa.test", "rsa.test", 1, &rsa.crt, &rsa.key);
  tc_issue(&dir, "spare", "spare.test", "a.example.com", 0, &spare.crt, &spare.key);

  RUN(test_handshake_defaults);
  RUN(test_cert_choice);
  RUN(test_file_pairs_shared);
  RUN(test_protocol_versions);
  RUN(test_tls12_ciphers);
  RUN(test_groups);
  RUN(test_alpn);
  RUN(test_tlsalpn_challenge);
  RUN(test_resumption_across_ctxs);
  RUN(test_no_tickets_when_off);
  RUN(test_ticket_rotation);
  RUN(test_table_swap_during_handshake);
  RUN(test_ctx_errors);
  RUN(test_idle_connection_memory);

  SSL_SESSION_free(last_session);
  tc_dir_cleanup(&dir);
  TEST_EXIT();
}
