/* dnscheck.h: is a DNS-01 TXT record visible yet? A small, asynchronous
 * DNS client (libuv) that asks servers (the zone's authoritative ones, or
 * recursive resolvers) for the TXT records of one name until they return
 * the expected value, the bounds-checked parser of their answers, and the
 * CAA lookup (caa.c). Internal to acme/.
 *
 * A truncated answer (TC bit) is asked again over TCP (dnsx.c). */
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

/* acme__dns_query_type is acme__dns_query for any |qtype| (16 TXT, 257
 * CAA, 6 SOA, 2 NS, 1 A, 28 AAAA), with RD set when |rd| is not 0. */
int acme__dns_query_type(uint8_t *out, size_t out_cap, size_t *out_len, uint16_t id,
                         const char *name, uint16_t qtype, int rd);

typedef enum {
  ACME_DNS_ANSWER = 0, /* NOERROR: the TXT records (perhaps none) are in the answer */
  ACME_DNS_NXDOMAIN,   /* the name does not exist */
  ACME_DNS_TRUNCATED,  /* TC set: ask again over TCP */
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

/* acme__dns_parse_rrset is the parser under acme__dns_parse_txt for any
 * |qtype|: it checks the response to the query for |qtype| at |name| as
 * that does and calls |add| with the rdata of each answer record of
 * |qtype| owned by |name| or by the target of a CNAME chain from it (|add|
 * returns 0, or -1 to call the message malformed). |*out_rcode| is the
 * response's RCODE. */
acme_dns_result_t acme__dns_parse_rrset(int *out_rcode, const uint8_t *msg, size_t msg_len,
                                        uint16_t id, const char *name, uint16_t qtype,
                                        int (*add)(void *arg, CBS rdata), void *arg);

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

/* acme_dnscheck_cb receives the outcome: |status| 0 when the servers
 * answered with the value (|server| the last of them, |why| the list of
 * those that did: "127.0.0.1:53, 127.0.53.1:53"), |elapsed_ms| after the
 * start; or UV_ETIMEDOUT when they did not before the deadline, |server|
 * NULL and |why| the last outcome at each server ("127.0.0.1:53:
 * NXDOMAIN"). Both pointers are valid during the call only. The check
 * frees itself after the call. */
typedef void (*acme_dnscheck_cb)(void *arg, int status, const acme_dns_server_t *server,
                                 uint64_t elapsed_ms, const char *why);

enum {
  ACME_DNSCHECK_ALL = 1,       /* every server must return the value, not just one */
  ACME_DNSCHECK_NORECURSE = 2, /* RD clear: the servers are the zone's authoritative ones */
};

/* acme__dnscheck_start asks every server in |servers| (copied) for the
 * TXT records of |fqdn| until one (with ACME_DNSCHECK_ALL in |flags|:
 * each; a server that has answered with the value is not asked again)
 * returns a record equal to |value|: a round of queries (each answered
 * within 2 s, or given up; a truncated answer is asked again over TCP),
 * then a pause that starts at 100 ms and doubles up to 2 s, until
 * |timeout_ms| has passed. Returns 0 and sets |*out| (the callback will
 * be called exactly once, unless acme__dnscheck_cancel is called first) or
 * a negative error (it will not be called). */
int acme__dnscheck_start(acme_dnscheck_t **out, uv_loop_t *loop,
                         const acme_dns_server_t *servers, size_t num_servers, const char *fqdn,
                         const char *value, uint64_t timeout_ms, unsigned flags,
                         acme_dnscheck_cb cb, void *arg);

/* acme__dnscheck_cancel stops |check| without calling its callback; its
 * memory is freed once its handles have closed. Must not be called once
 * the callback has run. acme__dnscheck_cancel(NULL) does nothing. */
void acme__dnscheck_cancel(acme_dnscheck_t *check);

/* ---- the zone's authoritative servers (authns.c) ---- */

/* acme__dns_soa_owner finds the first SOA record in the answer or the
 * authority section of the response |msg| and writes its owner (the
 * zone's apex) as dotted text without a root dot. Returns 0, or -1 when
 * there is none or the message is malformed. */
int acme__dns_soa_owner(char out[ACME_DNS_NAME_MAX + 1], const uint8_t *msg, size_t msg_len);

typedef struct acme_authns acme_authns_t;

/* acme_authns_cb receives the authoritative servers: |status| 0 with
 * |servers| (|num|, at most 8, port 53) of the zone |zone|; or UV_ENOENT
 * with |why| saying why none was found (no SOA up to the TLD, no NS, no
 * address, a failed query). Valid during the call only; the search frees
 * itself after it. */
typedef void (*acme_authns_cb)(void *arg, int status, const acme_dns_server_t *servers,
                               size_t num, const char *zone, const char *why);

/* acme__authns_start finds, through the recursive resolvers |resolvers|
 * (copied), the zone that holds |name| (the owner of the SOA record in the
 * answer to an SOA query, walking up the name while there is none), its
 * NS records and their A records (AAAA for a server without one), port
 * 53; each query as acme__dnsq_start
 * asks it, none started after |timeout_ms|. Returns 0 and sets |*out| (cb
 * is called exactly once, from the loop, unless acme__authns_cancel is
 * called first) or UV_EINVAL (it will not be). */
int acme__authns_start(acme_authns_t **out, uv_loop_t *loop, const acme_dns_server_t *resolvers,
                       size_t num_resolvers, const char *name, uint64_t timeout_ms,
                       acme_authns_cb cb, void *arg);

/* acme__authns_cancel stops |a| without calling cb. NULL does nothing. */
void acme__authns_cancel(acme_authns_t *a);

/* ---- CAA (RFC 8659, RFC 8657): who may issue for a name (caa.c) ---- */

/* acme_caa_rr_t is one CAA record. */
typedef struct {
  uint8_t flags;    /* 128: issuer critical */
  char *tag;        /* "issue", "issuewild", "iodef", ... as on the wire, NUL-terminated */
  char *value;      /* NUL-terminated for convenience; may hold NULs: use value_len */
  size_t value_len;
} acme_caa_rr_t;

/* acme__caa_parse_rdata parses the CAA rdata |rdata| (flags, tag length,
 * tag, value; RFC 8659 section 4.1) into |out| (free with
 * acme__caa_rrs_free). Returns 0, or -1 if it is malformed (an empty tag,
 * a tag longer than the rdata or not letters and digits). */
int acme__caa_parse_rdata(acme_caa_rr_t *out, CBS rdata);

/* acme__caa_parse parses a response to the CAA query with id |id| for
 * |name| as acme__dns_parse_rrset does (CNAME chains followed). On
 * ACME_DNS_ANSWER, |*out| holds |*out_num| records (perhaps none; caller
 * frees with acme__caa_rrs_free; at most ACME_DNS_MAX_TXTS kept); on any
 * other result nothing, and |*out_rcode| says the RCODE. */
acme_dns_result_t acme__caa_parse(acme_caa_rr_t **out, size_t *out_num, int *out_rcode,
                                  const uint8_t *msg, size_t msg_len, uint16_t id,
                                  const char *name);

/* acme__caa_rrs_free frees |num| records at |rrs| and the array. NULL is fine. */
void acme__caa_rrs_free(acme_caa_rr_t *rrs, size_t num);

/* acme__caa_permits decides whether the CAA records |rrs| (|n| of them:
 * the relevant RRset, as acme__caa_lookup_start finds it) let a CA whose
 * issuer domain names are |ca_domains| (|num_ca_domains|, e.g.
 * "letsencrypt.org") issue for a name, for the account |account_uri| (may
 * be NULL: then a record with an accounturi parameter does not match),
 * validated by |method| ("http-01", "dns-01", "tls-alpn-01"), |wildcard|
 * not 0 for a "*." name. RFC 8659 section 4: no records, or none that
 * restricts issuance (only iodef, only unknown non-critical tags, or only
 * issuewild for a non-wildcard name), permit; a record with the critical
 * flag and a tag other than issue, issuewild and iodef forbids; for a
 * wildcard the issuewild records decide when there are any, else the
 * issue records; they permit when one of them names one of |ca_domains|
 * (case-insensitively) and its parameters allow: accounturi must equal
 * |account_uri| exactly and validationmethods (a comma-separated list)
 * must contain |method| when given (RFC 8657); other parameters are
 * ignored. An empty issuer (";") or a value that breaks the RFC 8659
 * grammar names no CA. Returns 0 (permitted, |*out_why| NULL) or
 * UV_EPERM with |*out_why| saying which records forbid it (caller frees). */
int acme__caa_permits(char **out_why, const acme_caa_rr_t *rrs, size_t n,
                      const char *const *ca_domains, size_t num_ca_domains,
                      const char *account_uri, const char *method, int wildcard);

typedef struct acme_caa_lookup acme_caa_lookup_t;

/* acme_caa_cb receives the relevant CAA RRset: |status| 0 with |rrs|
 * (|num_rrs|, perhaps 0: no CAA anywhere up to the TLD, anyone may issue)
 * and |found_at| the name that holds them (NULL when none); or a negative
 * error (UV_EIO for SERVFAIL, REFUSED and the like; UV_ETIMEDOUT,
 * UV_EPROTO for a malformed answer, UV_ECONNREFUSED...: the last
 * resolver's) with |why| naming the name asked and what each
 * resolver said, never to be read as "no CAA". Everything is valid during
 * the call only; the lookup frees itself after it. */
typedef void (*acme_caa_cb)(void *arg, int status, const acme_caa_rr_t *rrs, size_t num_rrs,
                            const char *found_at, const char *why);

/* acme__caa_lookup_start finds the relevant CAA RRset of |name| (RFC 8659
 * section 3; "*.example.com" is looked up as example.com) through the
 * recursive resolvers |servers| (copied; see acme__dns_servers): the CAA
 * records at the name, else at its parent, and so on up to the top-level
 * domain, the resolver following CNAMEs. NXDOMAIN or an empty answer at a
 * level means "go up"; any other RCODE or no answer makes the next
 * resolver be asked (each query: UDP, again after 2 s, then TCP), and when
 * none answers, the lookup fails. Past |timeout_ms| in all it fails with
 * UV_ETIMEDOUT. Returns 0 and sets |*out| (the callback will be called
 * exactly once, from the loop, unless acme__caa_lookup_cancel is called
 * first) or UV_EINVAL (a bad name, no servers; it will not be called). */
int acme__caa_lookup_start(acme_caa_lookup_t **out, uv_loop_t *loop,
                           const acme_dns_server_t *servers, size_t num_servers,
                           const char *name, uint64_t timeout_ms, acme_caa_cb cb, void *arg);

/* acme__caa_lookup_cancel stops |l| without calling its callback. Must
 * not be called once the callback has run. NULL does nothing. */
void acme__caa_lookup_cancel(acme_caa_lookup_t *l);

#endif
