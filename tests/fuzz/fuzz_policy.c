/* fuzz_policy.c: the on-demand policy (acme/policy.c) as SNI names and
 * client addresses drive it, across reloads: a program of operations read
 * from the input decides names (bytes as given, so also non-LDH ones),
 * lets time pass, and replaces the policy by a new one that carries the
 * rate limits' state over (acme_policy_limits_t), with the same or other
 * rates, as a reload does. No ask endpoint (no network).
 *
 * Invariants: no crash or leak; acme_policy_precheck passes only
 * lower-case LDH names of at most 253 bytes, labels of 1-63 bytes, within
 * max_labels, that match an allow pattern; every decision answers exactly
 * once, from the loop, with ALLOWED or REFUSED; between two moments time
 * passes, no more orders are allowed than the global bucket and each
 * client's bucket hold (their counts), also across a reload that keeps
 * the rates — a reload must not refill a bucket.
 *
 * Layout: each operation is one byte, op = byte % 4, arg = byte / 4:
 *   0 decide: the next byte is a length L (% 41), then a name of L bytes
 *     taken from the input; client ip[arg % 2] (of two); the decision
 *     places an order unless arg & 2;
 *   1 time passes: arg minutes;
 *   2 reload, same rates;
 *   3 reload with rates from arg: global (arg % 4) + 1 per hour,
 *     per client IP (arg / 4 % 4) + 1 per hour. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "acme/policy.h"
#include "acme/policy_internal.h"
#include "common/common.h"
#include "conf/conf.h"

static uint64_t fake_now;
static uint64_t clock_fn(void) { return fake_now; }

typedef struct {
  int calls;
  int allowed;
} answer_t;

static void on_answer(void *arg, int allowed, const char *reason) {
  (void)reason;
  answer_t *a = arg;
  a->calls++;
  a->allowed = allowed;
}

static int ldh_ok(const conf_on_demand_t *od, const char *s, size_t len) {
  if (len == 0 || len > 253) return 0;
  size_t label = 0, labels = 1;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (c == '.') {
      if (label == 0) return 0;
      label = 0;
      labels++;
    } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
      if (++label > 63) return 0;
    } else {
      return 0;
    }
  }
  if (label == 0 || labels > od->max_labels) return 0;
  for (size_t i = 0; i < od->num_allow; i++)
    if (conf_host_match(od->allow[i], s, len)) return 1;
  return 0;
}

static acme_policy_t *make(uv_loop_t *loop, const conf_on_demand_t *od,
                           acme_policy_limits_t *lim) {
  char *err = NULL;
  acme_policy_t *p = acme_policy_new(&err, loop, od, NULL, 0, lim);
  if (p == NULL) abort();
  acme__policy_set_clock(p, clock_fn);
  return p;
}

static void drop(uv_loop_t *loop, acme_policy_t *p) {
  acme_policy_free(p);
  uv_run(loop, UV_RUN_DEFAULT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char *allow[] = {"*.a.test", "b.test", "*.c.b.test"};
  conf_on_demand_t od;
  memset(&od, 0, sizeof(od));
  od.enabled = 1;
  od.allow = allow;
  od.num_allow = 3;
  od.max_labels = 4;
  od.negative_ttl_ms = 60000;
  od.rate_global = (conf_rate_t){3, 3600000};
  od.rate_per_client_ip = (conf_rate_t){2, 3600000};
  static const char *const ips[] = {"192.0.2.1", "198.51.100.7"};
  fake_now = 1000000;
  uv_loop_t loop;
  uv_loop_init(&loop);
  acme_policy_limits_t *lim = acme_policy_limits_new();
  acme_policy_t *p = make(&loop, &od, lim);
  /* Orders allowed since time last passed (or the rate changed). */
  unsigned global_n = 0, ip_n[2] = {0, 0};
  size_t i = 0;
  while (i < size) {
    uint8_t b = data[i++];
    unsigned op = b % 4, arg = b / 4;
    if (op == 0) {
      size_t len = i < size ? data[i++] % 41 : 0;
      if (len > size - i) len = size - i;
      char name[41];
      memcpy(name, data + i, len);
      name[len] = '\0';
      i += len;
      size_t nlen = strlen(name); /* an embedded NUL ends it, as in C */
      if (acme_policy_precheck(&od, name, nlen) == NULL && !ldh_ok(&od, name, nlen)) abort();
      unsigned ip = arg % 2;
      int needs_order = (arg & 2) == 0;
      answer_t a = {0, -1};
      if (acme_policy_decide(p, name, ips[ip], 0, needs_order, on_answer, &a) != 0) abort();
      if (a.calls != 0) abort(); /* never from within the call */
      uv_run(&loop, UV_RUN_NOWAIT);
      for (int k = 0; k < 4 && a.calls == 0; k++) uv_run(&loop, UV_RUN_ONCE);
      if (a.calls != 1) abort();
      if (a.allowed != ACME_POLICY_ALLOWED && a.allowed != ACME_POLICY_REFUSED) abort();
      if (a.allowed == ACME_POLICY_ALLOWED && needs_order) {
        global_n++;
        ip_n[ip]++;
        if (global_n > od.rate_global.count || ip_n[ip] > od.rate_per_client_ip.count) abort();
      }
    } else if (op == 1) {
      fake_now += (uint64_t)arg * 60000;
      if (arg > 0) global_n = ip_n[0] = ip_n[1] = 0;
    } else {
      drop(&loop, p);
      if (op == 3) {
        conf_rate_t g = {arg % 4 + 1, 3600000}, c = {arg / 4 % 4 + 1, 3600000};
        if (g.count != od.rate_global.count) global_n = 0;
        if (c.count != od.rate_per_client_ip.count) ip_n[0] = ip_n[1] = 0;
        od.rate_global = g;
        od.rate_per_client_ip = c;
      }
      p = make(&loop, &od, lim);
    }
  }
  drop(&loop, p);
  acme_policy_limits_free(lim);
  if (uv_loop_close(&loop) != 0) abort();
  return 0;
}
