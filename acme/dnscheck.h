/* dnscheck.h: is a DNS-01 TXT record visible yet? A small, asynchronous
 * DNS client (UDP, libuv) that asks recursive resolvers for the TXT records
 * of one name until one of them returns the expected value, and the
 * bounds-checked parser of their answers. Internal to acme/.
 *
 * Only UDP: a truncated answer (TC bit) counts as "not yet", with no retry
 * over TCP. A DNS-01 name holds a few short TXT records, which fit in 512
 * bytes unless someone left hundreds of stale ones behind. */
#ifndef GH_ACME_DNSCHECK_H
#define GH_ACME_DNSCHECK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/bytestring.h>
#include <uv.h>

#include "conf/conf.h"

#define ACME_DNS_MAX_MSG 4096 /* the largest answer read */
#define ACME_DNS_MAX_TXTS 64  /* TXT records kept from one answer; more are skipped */

/* ---- the wire (pure functions, for the unit tests and the fuzzer) ---- */

#define ACME_DNS_NAME_MAX 255 /* a name in wire form, root label included */

/* acme__dns_name_to_wire writes the dotted |name| (trailing dot optional)
 * as lower-case wire labels. Returns the length, or 0 if |name| is not a
 * DNS name (empty label, a label over 63 bytes, over 255 bytes in all). */
size_t acme__dns_name_to_wire(uint8_t out[ACME_DNS_NAME_MAX], const char *name);

/* acme__dns_read_name reads the (possibly compressed) name at |cur| in the
 * message |msg| into |out| as lower-case wire labels and advances |cur|
 * past it. Pointers may only point backwards, at most 64 times. Returns
 * the length, or 0 if the name is malformed. */
size_t acme__dns_read_name(const CBS *msg, CBS *cur, uint8_t out[ACME_DNS_NAME_MAX]);

/* acme__dns_rcode_name names an RCODE or TSIG error ("NOTAUTH", "BADSIG"),
 * or returns "an error". */
const char *acme__dns_rcode_name(int rcode);

/* acme__dns_query writes a DNS query for the TXT records of |name| (a
 * dotted name, the trailing dot optional) with id |id|, RD set, QCLASS IN,
 * into |out| (|out_cap| bytes). Returns 0 and sets |*out_len|, or UV_EINVAL
 * if |name| is not a valid DNS name (empty label, a label over 63 bytes,
 * over 255 bytes in all) or |out| is too small. */
int acme__dns_query(uint8_t *out, size_t out_cap, size_t *out_len, uint16_t id,
                    const char *name);

typedef enum {
  ACME_DNS_ANSWER = 0, /* NOERROR: the TXT records (perhaps none) are in the answer */
  ACME_DNS_NXDOMAIN,   /* the name does not exist */
  ACME_DNS_TRUNCATED,  /* TC set: counts as "not yet" (no TCP fallback) */
  ACME_DNS_RCODE,      /* another error: SERVFAIL, REFUSED, ... (in rcode) */
  ACME_DNS_MISMATCH,   /* not an answer to our query: wrong id, not a response,
                          another question; ignored, the real answer may follow */
  ACME_DNS_MALFORMED,  /* the message breaks the format */
} acme_dns_result_t;

typedef struct {
  char *data; /* the record's character-strings concatenated, NUL-terminated
                 for convenience (data may hold NULs: use len) */
  size_t len;
} acme_dns_txt_t;

/* acme_dns_answer_t is what acme__dns_parse_txt found. */
typedef struct {
  int rcode;
  acme_dns_txt_t txts[ACME_DNS_MAX_TXTS];
  size_t num_txts;
} acme_dns_answer_t;

/* acme__dns_parse_txt parses the |msg_len| bytes at |msg|, a response to
 * the query acme__dns_query made for |id| and |name|. Every read is bounds
 * checked (CBS); compressed names are followed backwards only, at most 64
 * jumps. On ACME_DNS_ANSWER, |out| holds the TXT records owned by |name|
 * or by the target of a CNAME chain from it (free with
 * acme__dns_answer_cleanup); for every other result |out| holds nothing
 * but |rcode| (cleanup is still safe). */
acme_dns_result_t acme__dns_parse_txt(acme_dns_answer_t *out, const uint8_t *msg,
                                      size_t msg_len, uint16_t id, const char *name);

/* acme__dns_answer_cleanup frees the records in |a| and zeroes it. */
void acme__dns_answer_cleanup(acme_dns_answer_t *a);

/* ---- the resolvers ---- */

typedef struct {
  struct sockaddr_storage addr;
  char text[64]; /* "IP:port" or "[IPv6]:port", for messages */
} acme_dns_server_t;

/* acme__dns_server_from fills |s| from the IP address |host| and |port|.
 * Returns 0 or -1 (not an IP address). */
int acme__dns_server_from(acme_dns_server_t *s, const char *host, uint16_t port);

/* acme__dns_servers returns the resolvers to ask: acme.dns_resolvers from
 * |acme|, or when that is empty the "nameserver" lines of |resolv_conf|
 * (port 53), read now. Returns 0 and sets |*out| (caller frees with
 * gh_free) and |*out_num| (at least 1), or a negative error with |*out_err|
 * set to a message that names the file (caller frees). */
int acme__dns_servers(char **out_err, acme_dns_server_t **out, size_t *out_num,
                      const conf_acme_t *acme, const char *resolv_conf);

/* ---- the check ---- */

typedef struct acme_dnscheck acme_dnscheck_t;

/* acme_dnscheck_cb receives the outcome: |status| 0 when |server| answered
 * with the value, |elapsed_ms| after the start; or UV_ETIMEDOUT when no
 * resolver did before the deadline, |server| NULL and |why| the last
 * outcome at each resolver ("127.0.0.1:53: NXDOMAIN"). Both pointers are
 * valid during the call only. The check frees itself after the call. */
typedef void (*acme_dnscheck_cb)(void *arg, int status, const acme_dns_server_t *server,
                                 uint64_t elapsed_ms, const char *why);

/* acme__dnscheck_start asks every server in |servers| (copied) for the
 * TXT records of |fqdn| until one returns a record equal to |value|: a
 * round of queries (each answered within 2 s, or given up), then a pause
 * that starts at 100 ms and doubles up to 2 s, until |timeout_ms| has
 * passed. Returns 0 and sets |*out| (the callback will be called exactly
 * once, unless acme__dnscheck_cancel is called first) or a negative error
 * (it will not be called). */
int acme__dnscheck_start(acme_dnscheck_t **out, uv_loop_t *loop,
                         const acme_dns_server_t *servers, size_t num_servers, const char *fqdn,
                         const char *value, uint64_t timeout_ms, acme_dnscheck_cb cb, void *arg);

/* acme__dnscheck_cancel stops |check| without calling its callback; its
 * memory is freed once its handles have closed. Must not be called once
 * the callback has run. acme__dnscheck_cancel(NULL) does nothing. */
void acme__dnscheck_cancel(acme_dnscheck_t *check);

#endif
