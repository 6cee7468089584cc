/* dnsupdate.h: dns-01 TXT records published by RFC 2136 dynamic updates
 * signed with TSIG (RFC 8945), the way acme.dns.rfc2136 asks instead of a
 * dns hook: the messages (pure functions, for the unit tests and the
 * fuzzer) and one asynchronous update (UDP, then TCP when the answer is
 * truncated or the message too big for a datagram). Internal to acme/. */
#ifndef GH_ACME_DNSUPDATE_H
#define GH_ACME_DNSUPDATE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "acme/dnscheck.h"
#include "conf/conf.h"

#define ACME_TSIG_FUDGE 300     /* seconds of clock difference allowed */
#define ACME_TSIG_MAC_MAX 64    /* HMAC-SHA512 */
#define ACME_DNSUPDATE_TTL 60   /* of the TXT record added */

/* acme_tsig_key_t is a TSIG key: its name, algorithm and secret. */
typedef struct {
  const char *name;
  conf_tsig_alg_t alg;
  const uint8_t *secret;
  size_t secret_len;
} acme_tsig_key_t;

/* acme__dnsupdate_build writes an UPDATE message (RFC 2136) with id |id|
 * for |zone| that adds (|add| 1: "_acme-challenge... 60 IN TXT value") or
 * deletes exactly (|add| 0: class NONE, TTL 0) the TXT record |value| at
 * |fqdn|, signed with |key| at |now_s| (seconds since 1970), into |out|
 * (|out_cap| bytes). Returns 0, sets |*out_len| and the request's MAC
 * (|out_mac|, ACME_TSIG_MAC_MAX bytes, and |*out_mac_len|), which
 * verifying the response needs; or UV_EINVAL if a name is not a DNS name,
 * |fqdn| is not in |zone|, |value| is empty, or |out| is too small. */
int acme__dnsupdate_build(uint8_t *out, size_t out_cap, size_t *out_len,
                          uint8_t out_mac[ACME_TSIG_MAC_MAX], size_t *out_mac_len, uint16_t id,
                          const acme_tsig_key_t *key, uint64_t now_s, const char *zone, int add,
                          const char *fqdn, const char *value);

/* acme__tsig_sign appends a TSIG record (RFC 8945 section 4) to the
 * message of |*msg_len| bytes at |msg| (|msg_cap| bytes of room), signed
 * with |key| at |now_s| with the TSIG error |error|, and counts it in
 * ARCOUNT. A response's MAC covers the request's MAC |prior| (NULL for a
 * request). Returns 0, updates |*msg_len| and sets the MAC (|out_mac|,
 * |*out_mac_len|), or UV_EINVAL (no room, a bad key name). */
int acme__tsig_sign(uint8_t *msg, size_t msg_cap, size_t *msg_len,
                    uint8_t out_mac[ACME_TSIG_MAC_MAX], size_t *out_mac_len,
                    const acme_tsig_key_t *key, uint64_t now_s, const uint8_t *prior,
                    size_t prior_len, uint16_t error);

/* acme_dnsupdate_reply_t is what a response to an update says. */
typedef struct {
  int rcode;      /* the header's RCODE: 0, NOTAUTH (9), REFUSED (5), ... */
  int has_tsig;   /* the response carries a TSIG record */
  int tsig_error; /* that record's error: BADSIG (16), BADKEY (17), BADTIME (18); 0 if none */
  int verified;   /* its MAC is right for |key| and the request's MAC */
  int time_ok;    /* its time signed is within the fudge of |now_s| */
} acme_dnsupdate_reply_t;

/* acme__dnsupdate_parse reads the |msg_len| bytes at |msg| as a response
 * to the update with id |id| whose MAC was |req_mac|, and checks its TSIG
 * record against |key| (RFC 8945 section 5.3). Returns ACME_DNS_ANSWER
 * with |out| filled (any rcode: see acme__dnsupdate_why), or
 * ACME_DNS_TRUNCATED (retry over TCP), ACME_DNS_MISMATCH (not an answer
 * to the update: ignore it) or ACME_DNS_MALFORMED. Every read is bounds
 * checked (CBS). */
acme_dns_result_t acme__dnsupdate_parse(acme_dnsupdate_reply_t *out, const uint8_t *msg,
                                        size_t msg_len, uint16_t id, const acme_tsig_key_t *key,
                                        const uint8_t *req_mac, size_t req_mac_len,
                                        uint64_t now_s);

/* acme__dnsupdate_why returns NULL when |r| says the update was done (a
 * signed, verified NOERROR), else a message (caller frees) that names the
 * error and its likely cause, for |server|, |zone|, |key_name| and
 * |fqdn|. */
char *acme__dnsupdate_why(const acme_dnsupdate_reply_t *r, const char *server, const char *zone,
                          const char *key_name, const char *fqdn);

/* ---- one update ---- */

typedef struct acme_dnsupdate acme_dnsupdate_t;

/* acme_dnsupdate_cb receives the outcome: |status| 0 when the server
 * confirmed the update, or a negative error with |why| (valid during the
 * call) naming the server, the zone and the name. The update frees itself
 * after the call. */
typedef void (*acme_dnsupdate_cb)(void *arg, int status, const char *why);

/* acme__dnsupdate_start sends the update of |fqdn|'s TXT record |value|
 * (|add| 1 to add, 0 to delete) described by |conf| (copied): over UDP,
 * each attempt answered within 3 s or given up, at most three attempts,
 * over TCP once a response is truncated or the message exceeds 512 bytes,
 * and for the last attempt. Returns 0 and sets |*out| (the callback will
 * be called exactly once, from the loop, unless acme__dnsupdate_cancel is
 * called first) or a negative error (it will not be called) with
 * |*out_err| set (caller frees). */
int acme__dnsupdate_start(acme_dnsupdate_t **out, char **out_err, uv_loop_t *loop,
                          const conf_rfc2136_t *conf, int add, const char *fqdn,
                          const char *value, acme_dnsupdate_cb cb, void *arg);

/* acme__dnsupdate_cancel stops |u| without calling its callback; its
 * memory goes once its handles have closed. Must not be called once the
 * callback has run. acme__dnsupdate_cancel(NULL) does nothing. */
void acme__dnsupdate_cancel(acme_dnsupdate_t *u);

#endif
