/* csr.h: the certificates the ACME client builds itself (internal to
 * acme/): the PKCS#10 certificate signing request sent to finalize an order
 * (RFC 8555 section 7.4), and the self-signed TLS-ALPN-01 challenge
 * certificate (RFC 8737 section 3).
 *
 * Names must already be valid lower-case DNS names (conf_host_pattern_valid:
 * labels of letters, digits and '-', 253 bytes at most, "*." only as the
 * whole first label); anything else is refused with an error naming it,
 * since a name from a ClientHello could otherwise reach a CA unchecked. */
#ifndef GH_ACME_CSR_H
#define GH_ACME_CSR_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/base.h>

#include "acme/certs.h"

/* acme__csr_der builds a CSR for the public half of |key| (a key that
 * acme__key_new makes), signed with SHA-256 by |key|: subject CN = the
 * first name when it fits in 64 bytes (otherwise an empty subject), and an
 * extensionRequest with a subjectAltName listing all |num_names| |names| as
 * dNSNames, in order. Returns 0 and sets |*out_der| (caller frees with
 * OPENSSL_free) and |*out_len|; or -1 with |*out_err| set (caller frees). */
int acme__csr_der(char **out_err, uint8_t **out_der, size_t *out_len, EVP_PKEY *key,
                  const char *const *names, size_t num_names);

/* acme__tlsalpn_cert builds the TLS-ALPN-01 certificate for |name| (no
 * wildcard: RFC 8737 section 3 forbids them) and the key authorization
 * |keyauth|: a fresh P-256 key, self-signed, subject CN and only SAN
 * dNSName = |name|, a critical id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31)
 * extension holding the DER OCTET STRING of SHA-256(|keyauth|), valid from
 * a day ago for a week, random serial. Returns a new certificate with one
 * reference (serve it like any other acme_cert_t; acme_cert_unref when
 * done), or NULL with |*out_err| set (caller frees). */
acme_cert_t *acme__tlsalpn_cert(char **out_err, const char *name, const char *keyauth);

/* acme__name_check returns 0 if |name| is a valid lower-case DNS name, an
 * IP address (conf_ip_literal) or, with |allow_wildcard|, a "*.name"
 * pattern; otherwise -1 with |*out_err|
 * set (caller frees) saying which name is wrong. |what| prefixes the
 * message ("CSR", "TLS-ALPN-01 certificate"). */
int acme__name_check(char **out_err, const char *what, const char *name, int allow_wildcard);

/* Shared by csr.c and tlsalpn.c; names must have passed acme__name_check.
 *
 * acme__subject_name returns a new X509_NAME (caller frees) holding
 * CN=|name| if |name| is a DNS name that fits the 64-byte upper bound of
 * commonName, else an empty name; NULL if BoringSSL fails.
 *
 * acme__san_ext returns a new non-critical subjectAltName extension (caller
 * frees) listing |names| as dNSNames, IP addresses as iPAddresses (RFC
 * 8738), or NULL if BoringSSL fails. */
X509_NAME *acme__subject_name(const char *name);
X509_EXTENSION *acme__san_ext(const char *const *names, size_t num_names);

#endif
