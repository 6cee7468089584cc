/* dnsx.h: one DNS exchange with one server — a message sent over UDP,
 * again on silence, and over TCP (two-byte length prefix) once an answer
 * is truncated, the message is too big for a datagram, or for the last
 * of several attempts — for the dynamic updates (dnsupdate.c) and the lookups
 * (caa.c). The caller builds each attempt's message and judges each
 * answer. Internal to acme/. */
#ifndef GH_ACME_DNSX_H
#define GH_ACME_DNSX_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "acme/dnscheck.h"

typedef enum {
  ACME_DNSX_TAKE = 0, /* the answer: the exchange ends with it */
  ACME_DNSX_IGNORE,   /* not an answer to this attempt: keep waiting */
  ACME_DNSX_TCP,      /* truncated: ask again over TCP */
  ACME_DNSX_BAD,      /* malformed: the exchange fails */
} acme_dnsx_judgement_t;

typedef struct {
  /* build writes the message of a new attempt (a fresh id) into |out|
   * (|cap| bytes); returns 0 and sets |*out_len|, or a negative error
   * that ends the exchange. */
  int (*build)(void *arg, uint8_t *out, size_t cap, size_t *out_len);
  /* judge looks at the |len| bytes of an answer. */
  acme_dnsx_judgement_t (*judge)(void *arg, const uint8_t *msg, size_t len);
  /* done receives the answer taken (|status| 0; |msg| valid during the
   * call) or a failure (|msg| NULL, |why| saying what happened at the
   * server). Called once, from the loop; the exchange frees itself
   * afterwards. */
  void (*done)(void *arg, int status, const uint8_t *msg, size_t len, const char *why);
} acme_dnsx_ops_t;

typedef struct acme_dnsx acme_dnsx_t;

/* acme__dnsx_start sends a message to |server| (copied): up to
 * |max_attempts| attempts, each answered within |attempt_ms| or given up.
 * Returns 0 and sets |*out| (done will be called exactly once unless
 * acme__dnsx_cancel is called first), or a negative error (it will not
 * be called). */
int acme__dnsx_start(acme_dnsx_t **out, uv_loop_t *loop, const acme_dns_server_t *server,
                     unsigned max_attempts, unsigned attempt_ms, const acme_dnsx_ops_t *ops,
                     void *arg);

/* acme__dnsx_cancel stops |x| without calling done; its memory goes once
 * its handles have closed. acme__dnsx_cancel(NULL) does nothing. */
void acme__dnsx_cancel(acme_dnsx_t *x);

/* ---- one question to the recursive resolvers (dnsq.c) ---- */

typedef struct acme_dnsq acme_dnsq_t;

/* acme_dnsq_cb receives the answer to the question: |status| 0 with the
 * message (|msg|, |len|, a response to |id| with RCODE NOERROR or
 * NXDOMAIN: parse it with acme__dns_parse_rrset and friends); or a
 * negative error (the last resolver's: UV_EIO for SERVFAIL, REFUSED and
 * other RCODEs, UV_ETIMEDOUT, UV_ECONNREFUSED...) with |why| saying what
 * each resolver said ("127.0.0.1:53: SERVFAIL; ..."). Valid during the
 * call only; the query frees itself after it. */
typedef void (*acme_dnsq_cb)(void *arg, int status, const uint8_t *msg, size_t len, uint16_t id,
                             const char *why);

/* acme__dnsq_start asks |servers| (copied) in turn, each as acme__dnsx_start
 * does (UDP, again after 2 s, then TCP), for the records of |qtype| at
 * |name|, RD set if |rd|, until one answers NOERROR or NXDOMAIN. Returns 0
 * and sets |*out| (cb is called exactly once, from the loop, unless
 * acme__dnsq_cancel is called first) or UV_EINVAL (a bad name, no servers:
 * it will not be). */
int acme__dnsq_start(acme_dnsq_t **out, uv_loop_t *loop, const acme_dns_server_t *servers,
                     size_t num_servers, const char *name, uint16_t qtype, int rd,
                     acme_dnsq_cb cb, void *arg);

/* acme__dnsq_cancel stops |q| without calling cb. Must not be called once
 * cb has run. NULL does nothing. */
void acme__dnsq_cancel(acme_dnsq_t *q);

#endif
