/* tls.h: TLS termination settings shared by every worker.
 *
 * px_tls_ctx_new builds one SSL_CTX from the configuration: TLS 1.2 and
 * 1.3 only, AEAD-only ECDHE suites in server preference order, groups
 * X25519/P-256/P-384, ALPN "http/1.1" (and "acme-tls/1" for challenges),
 * session tickets from a process-wide key ring (so every worker, and every
 * SSL_CTX built by a reload, resumes the others' sessions), and certificate
 * choice in the select-certificate callback: SNI exact, then wildcard, then
 * the default site; otherwise the handshake fails with unrecognized_name.
 *
 * The certificate table lives in the SSL_CTX's ex_data and is freed with
 * it, so connections that started under an older configuration keep theirs
 * until they close. */
#ifndef GH_PROXY_TLS_H
#define GH_PROXY_TLS_H

#include <openssl/ssl.h>

#include "acme/acme.h"
#include "acme/certs.h"
#include "conf/conf.h"
#include "proxy/ccert.h"

/* px_tls_ctx_new returns a new SSL_CTX (caller frees with SSL_CTX_free), or
 * NULL with |*out_err| set (caller frees), e.g. when a certificate file is
 * unreadable or its key does not match. */
SSL_CTX *px_tls_ctx_new(char **out_err, const conf_t *conf);

/* px_tls_ctx_table returns the certificate table of |ctx| (owned by ctx). */
acme_cert_table_t *px_tls_ctx_table(SSL_CTX *ctx);

/* px_tls_ctx_client_auth returns the client_auth state of sites[|site|]
 * of the configuration |ctx| was built from (owned by ctx), or NULL when
 * that site has none. */
const px_ccert_site_t *px_tls_ctx_client_auth(SSL_CTX *ctx, size_t site);

/* px_tls_miss_fn is called by the select-certificate callback when a valid
 * SNI name is in neither the table nor its wildcard, before the default
 * certificate is tried. It returns ssl_select_cert_retry to pause the
 * handshake (select_cert runs again from the start when the worker retries
 * it), ssl_select_cert_error after sending an alert, or
 * ssl_select_cert_success to fall back to the default certificate (or
 * unrecognized_name without one) — or to serve |*out_cert| when it set
 * that (a reference, which select_cert takes over). |name| is valid
 * during the call only. */
typedef enum ssl_select_cert_result_t (*px_tls_miss_fn)(void *arg, const SSL_CLIENT_HELLO *hello,
                                                        const char *name, size_t name_len,
                                                        acme_cert_t **out_cert);

/* px_tls_ctx_set_miss installs |fn| (with |arg|) as |ctx|'s miss hook. */
void px_tls_ctx_set_miss(SSL_CTX *ctx, px_tls_miss_fn fn, void *arg);

/* px_tls_ctx_set_challenges makes |ctx| answer TLS-ALPN-01 validations from
 * |challenges| (not owned; must outlive |ctx|). */
void px_tls_ctx_set_challenges(SSL_CTX *ctx, acme_challenges_t *challenges);

/* px_tls_is_challenge reports whether the handshake on |ssl| was a
 * TLS-ALPN-01 validation (served a challenge certificate). Such a
 * connection is closed once the handshake is done (RFC 8737 3). */
int px_tls_is_challenge(const SSL *ssl);

/* px_tls_set_local_ip gives the handshake on |ssl| the address (text,
 * borrowed: it must outlive |ssl|) the client connected to: a ClientHello
 * without SNI is served the certificate of that IP address, when there is
 * one or on_demand.allow_ip may obtain one (RFC 8738). Before the
 * handshake. */
void px_tls_set_local_ip(SSL *ssl, const char *ip);

/* px_tls_allow_h2 lets the handshake on |ssl| choose "h2" (RFC 9113) when
 * the client offers it; without it, ALPN offers only "http/1.1". Call
 * before the handshake. */
void px_tls_allow_h2(SSL *ssl);

/* px__tls_set_clock replaces the clock (gh_now_ms) by which the
 * process-wide session ticket key ring ages and rotates, so tests can move
 * time; NULL restores gh_now_ms. Not for production code. */
void px__tls_set_clock(uint64_t (*now_ms)(void));

#endif
