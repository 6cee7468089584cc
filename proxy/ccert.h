/* ccert.h: TLS client certificates, sites[].client_auth (issue 14).
 *
 * With an SSL_CTX (tls.c) comes one px_ccert_t: a CA store per site with
 * client_auth, read from its "ca" files when the context is built, and a
 * copy of every site's host patterns, since an SSL_CTX outlives the
 * configuration it was built from (connections keep theirs after a
 * reload). In the select-certificate callback, px_ccert_handshake finds
 * the site the SNI name belongs to, the way Host routing does
 * (px_gen_site), and only when that site has client_auth asks for a
 * certificate, verified against that site's CAs alone.
 *
 * Each client_auth site has an identity, a SHA-256 over its host patterns,
 * mode and CA certificates. It is the session id context of that site's
 * handshakes, so a session resumes only into the same site with the same
 * CAs and mode (session tickets are process-wide, tls.c), never into
 * another site or past a change of CAs; and it is what a request's routed
 * site is compared with (px_ccert_allows), across reloads too. */
#ifndef GH_PROXY_CCERT_H
#define GH_PROXY_CCERT_H

#include <openssl/ssl.h>
#include <stdint.h>

#include "conf/conf.h"

typedef struct px_ccert px_ccert_t;
typedef struct px_ccert_site px_ccert_site_t;

#define PX_CCERT_ID_LEN 32

/* px_ccert_new builds the client-certificate state of every site of
 * |conf|. Returns it (the caller frees it with px_ccert_free), or NULL
 * with |*out_err| set (caller frees) naming the file, the JSON path of the
 * "ca" entry and the problem: unreadable, not PEM, no certificate in it. */
px_ccert_t *px_ccert_new(char **out_err, const conf_t *conf);

/* px_ccert_free frees |cc|; px_ccert_free(NULL) does nothing. */
void px_ccert_free(px_ccert_t *cc);

/* px_ccert_site returns the client_auth state of site |index| of the
 * configuration |cc| was built from (owned by |cc|), or NULL when the site
 * has no client_auth. */
const px_ccert_site_t *px_ccert_site(const px_ccert_t *cc, size_t index);

/* px_ccert_handshake is called by the select-certificate callback once
 * the certificate is chosen, with the handshake's SNI name (lower-case;
 * |name_len| 0: none, or not a host name). When the site serving that name
 * (exact, wildcard, "*", then the default site) has client_auth, it sets
 * on |ssl| the verification of a client certificate against the site's
 * CAs (required or optional), the CA names sent in the CertificateRequest
 * and the site's session id context. Other handshakes are not asked for a
 * certificate. Returns 0, or -1 when BoringSSL refused a setting. */
int px_ccert_handshake(const px_ccert_t *cc, SSL *ssl, const char *name, size_t name_len);

/* What a connection's handshake established, kept by the connection. */
typedef struct {
  int auth_site;                   /* the handshake's site has client_auth */
  uint8_t site_id[PX_CCERT_ID_LEN]; /* that site's identity */
  char *subject;                   /* the verified certificate's subject (RFC 2253),
                                      or NULL when none was presented */
  char fingerprint[2 * 32 + 1];    /* lower-case hex SHA-256 of its DER, or "" */
} px_ccert_peer_t;

/* px_ccert_peer_init fills |out| from the completed (or resumed) handshake
 * of |ssl|: once per connection, so requests only copy the strings. */
void px_ccert_peer_init(px_ccert_peer_t *out, SSL *ssl);

/* px_ccert_peer_cleanup frees what px_ccert_peer_init allocated. */
void px_ccert_peer_cleanup(px_ccert_peer_t *peer);

/* px_ccert_allows reports whether a request on a connection whose
 * handshake established |peer| may go to a site with client_auth |site|
 * (NULL: the site has none): 1 when |site| is NULL or is the handshake's
 * site, 0 otherwise (the caller answers 421: the request was routed by
 * Host to a site whose certificate check this connection never passed,
 * HTTP/2 connection reuse or a Host that differs from the SNI name). */
int px_ccert_allows(const px_ccert_peer_t *peer, const px_ccert_site_t *site);

#endif
