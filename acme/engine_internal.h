/* engine_internal.h: what the ACME engine's files (engine.c, order.c,
 * nonce.c, problem.c) share. Internal to acme/. */
#ifndef GH_ACME_ENGINE_INTERNAL_H
#define GH_ACME_ENGINE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ---- problem documents (RFC 7807, RFC 8555 section 6.7) ---- */

#define ACME_ERR_PREFIX "urn:ietf:params:acme:error:"

/* acme_problem_t is a parsed application/problem+json document. */
typedef struct {
  char *type;    /* "" when absent or not a string */
  char *detail;  /* "" when absent or not a string */
  char *message; /* "TYPE: DETAIL" plus "; subproblems: ..." when any */
} acme_problem_t;

/* acme__problem_parse parses the |body_len| bytes at |body| as a problem
 * document. Returns 0 and fills |out| (free with acme__problem_cleanup), or
 * -1 if the body is not a JSON object with a string "type" or "detail"
 * (|out| is then zeroed). Subproblems are bounded in number and length. */
int acme__problem_parse(acme_problem_t *out, const char *body, size_t body_len);

/* acme__problem_cleanup frees what acme__problem_parse allocated. */
void acme__problem_cleanup(acme_problem_t *p);

/* acme__problem_is reports (1 or 0) whether |p| has the ACME error type
 * ACME_ERR_PREFIX |name| ("badNonce", "rateLimited", ...). */
int acme__problem_is(const acme_problem_t *p, const char *name);

/* acme__retry_after_parse parses a Retry-After value (RFC 9110 10.2.3):
 * delta-seconds or an HTTP-date, relative to |now|. Returns 0 and sets
 * |*out_ms| (0 for a date in the past), or -1 if the value is neither. */
int acme__retry_after_parse(const char *value, time_t now, uint64_t *out_ms);

/* acme__links collects the URLs of every link with relation |rel| from the
 * Link header values |values[0..num_values)| (RFC 8288: comma-separated
 * "<url>; rel=..." entries, rel quoted or not, possibly a space-separated
 * list of relations, other parameters ignored). Returns the number found
 * and sets |*out_urls| to a new array of new strings (free with
 * acme__links_free), NULL when none. */
size_t acme__links(char ***out_urls, const char *const *values, size_t num_values,
                   const char *rel);

/* acme__links_free frees a result of acme__links. */
void acme__links_free(char **urls, size_t num_urls);

/* ---- nonce pool (RFC 8555 section 7.2) ---- */

#define ACME_NONCE_POOL_MAX 16

typedef struct {
  char *nonces[ACME_NONCE_POOL_MAX];
  size_t num_nonces;
} acme_nonce_pool_t;

/* acme__nonce_push keeps a copy of |value| (a Replay-Nonce header; ignored
 * when empty, over 256 bytes or not base64url). When the pool is full the
 * oldest nonce is dropped: the newest are the least likely to be stale. */
void acme__nonce_push(acme_nonce_pool_t *pool, const char *value);

/* acme__nonce_pop returns the newest nonce (caller frees) or NULL. */
char *acme__nonce_pop(acme_nonce_pool_t *pool);

/* acme__nonce_cleanup frees every nonce in |pool|. */
void acme__nonce_cleanup(acme_nonce_pool_t *pool);

#endif
