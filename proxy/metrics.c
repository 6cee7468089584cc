/* metrics.c: upstream slots and the Prometheus text rendering of the
 * counters (see metrics.h).
 *
 * Output follows the text exposition format 0.0.4: one "# HELP" and one
 * "# TYPE" line per family, then its samples; label values escaped
 * (backslash, double quote, newline). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "proxy/worker.h"
#include "proxy/metrics.h"
#include "proxy/upstream.h"

/* ---- upstream slots ---- */

static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER;
static char *slot_names[PX_METRICS_NUM_SLOTS]; /* [0] and [OTHER] unused */
static atomic_uint num_slots;                  /* slots 1..num_slots are named */

unsigned px_metrics_upstream_slot(const char *text) {
  pthread_mutex_lock(&slots_mu);
  unsigned n = atomic_load(&num_slots), slot = PX_METRICS_SLOT_OTHER;
  for (unsigned i = 1; i <= n; i++) {
    if (strcmp(slot_names[i], text) == 0) {
      slot = i;
      break;
    }
  }
  if (slot == PX_METRICS_SLOT_OTHER && n < PX_METRICS_MAX_UPSTREAMS) {
    slot = n + 1;
    slot_names[slot] = gh_strdup(text); /* lives as long as the process */
    atomic_store(&num_slots, slot);     /* publishes the name */
  }
  pthread_mutex_unlock(&slots_mu);
  return slot;
}

const char *px_metrics_slot_name(unsigned slot) {
  if (slot == 0) return "";
  if (slot == PX_METRICS_SLOT_OTHER) return "other";
  if (slot > atomic_load(&num_slots)) return NULL;
  return slot_names[slot];
}

/* ---- rendering ---- */

static void esc(px_buf_t *b, const char *s) {
  for (; *s; s++) {
    if (*s == '\\') px_buf_append(b, "\\\\", 2);
    else if (*s == '"') px_buf_append(b, "\\\"", 2);
    else if (*s == '\n') px_buf_append(b, "\\n", 2);
    else px_buf_append(b, s, 1);
  }
}

static void family(px_buf_t *b, const char *name, const char *type, const char *help) {
  px_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* sample writes one line; |labels| alternates names and values, NULL-ended. */
static void sample(px_buf_t *b, const char *name, const char *const *labels, const char *value) {
  px_buf_appendf(b, "%s", name);
  if (labels != NULL && labels[0] != NULL) {
    px_buf_append(b, "{", 1);
    for (size_t i = 0; labels[i] != NULL; i += 2) {
      px_buf_appendf(b, "%s%s=\"", i ? "," : "", labels[i]);
      esc(b, labels[i + 1]);
      px_buf_append(b, "\"", 1);
    }
    px_buf_append(b, "}", 1);
  }
  px_buf_appendf(b, " %s\n", value);
}

static void sample_u(px_buf_t *b, const char *name, const char *const *labels, uint64_t v) {
  char num[32];
  snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
  sample(b, name, labels, num);
}

static const char *const hs_reasons[PX_HS_NUM] = {"", "timeout", "closed", "alert",
                                                  "unknown_name", "protocol"};
const char *const px_status_classes[6] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};

static void listeners(px_buf_t *b, const px_metrics_src_t *src) {
  if (src->num_workers == 0) return;
  const px_worker_t *w0 = src->workers[0];
  for (int pass = 0; pass < 2; pass++) {
    const char *name = pass ? "gatehouse_connections_total" : "gatehouse_connections_open";
    family(b, name, pass ? "counter" : "gauge",
           pass ? "Connections accepted, per listener." : "Connections open now, per listener.");
    for (size_t i = 0; i < w0->num_listeners; i++) {
      uint64_t accepted = 0, closed = 0;
      for (unsigned k = 0; k < src->num_workers; k++) {
        const px_worker_t *w = src->workers[k];
        if (i >= w->num_listeners) continue;
        accepted += PX_STAT_GET(w->listeners[i].stats.accepted);
        closed += PX_STAT_GET(w->listeners[i].stats.closed);
      }
      const char *labels[] = {"listener", w0->listeners[i].label, NULL};
      /* Closes are counted after accepts: a racy read never goes negative. */
      sample_u(b, name, labels, pass ? accepted : (accepted > closed ? accepted - closed : 0));
    }
  }
}

static void worker_counters(px_buf_t *b, const px_metrics_src_t *src) {
  uint64_t hs[PX_HS_NUM] = {0}, pp[PX_PP_NUM] = {0}, in = 0, out = 0;
  uint64_t req[PX_METRICS_NUM_SLOTS][6] = {{0}}, by_proto[2][6] = {{0}}, h2_conns = 0, h2_calm = 0;
  for (unsigned k = 0; k < src->num_workers; k++) {
    const px_worker_stats_t *st = &src->workers[k]->stats;
    for (int i = 0; i < PX_HS_NUM; i++) hs[i] += PX_STAT_GET(st->handshakes[i]);
    for (int i = 0; i < PX_PP_NUM; i++) pp[i] += PX_STAT_GET(st->pp_refused[i]);
    in += PX_STAT_GET(st->bytes_in);
    out += PX_STAT_GET(st->bytes_out);
    for (int s = 0; s < PX_METRICS_NUM_SLOTS; s++)
      for (int c = 0; c < 6; c++) req[s][c] += PX_STAT_GET(st->requests[s][c]);
    for (int p = 0; p < 2; p++)
      for (int c = 0; c < 6; c++) by_proto[p][c] += PX_STAT_GET(st->requests_by_proto[p][c]);
    h2_conns += PX_STAT_GET(st->h2_conns);
    h2_calm += PX_STAT_GET(st->h2_calm);
  }
  family(b, "gatehouse_handshakes_total", "counter",
         "TLS handshakes, by result and (for failures) a coarse reason.");
  {
    const char *labels[] = {"result", "ok", "reason", "", NULL};
    sample_u(b, "gatehouse_handshakes_total", labels, hs[PX_HS_OK]);
  }
  for (int i = 1; i < PX_HS_NUM; i++) {
    const char *labels[] = {"result", "failed", "reason", hs_reasons[i], NULL};
    sample_u(b, "gatehouse_handshakes_total", labels, hs[i]);
  }
  static const char *const pp_reasons[PX_PP_NUM] = {"untrusted", "invalid", "timeout", "closed"};
  family(b, "gatehouse_proxy_protocol_refused_total", "counter",
         "Connections to proxy_protocol listeners closed before a PROXY header was taken.");
  for (int i = 0; i < PX_PP_NUM; i++) {
    const char *labels[] = {"reason", pp_reasons[i], NULL};
    sample_u(b, "gatehouse_proxy_protocol_refused_total", labels, pp[i]);
  }
  family(b, "gatehouse_requests_total", "counter",
         "Requests answered, by status class and upstream (\"none\": answered locally).");
  for (unsigned s = 0; s < PX_METRICS_NUM_SLOTS; s++) {
    const char *up = px_metrics_slot_name(s);
    if (up == NULL) continue;
    for (int c = 0; c < 6; c++) {
      if (req[s][c] == 0) continue;
      const char *labels[] = {"status_class", px_status_classes[c], "upstream", s ? up : "none", NULL};
      sample_u(b, "gatehouse_requests_total", labels, req[s][c]);
    }
  }
  family(b, "gatehouse_requests_by_protocol_total", "counter",
         "Requests answered, by the client's protocol and status class.");
  for (int p = 0; p < 2; p++) {
    for (int c = 0; c < 6; c++) {
      if (by_proto[p][c] == 0) continue;
      const char *labels[] = {"protocol", p ? "h2" : "http/1.1", "status_class", px_status_classes[c], NULL};
      sample_u(b, "gatehouse_requests_by_protocol_total", labels, by_proto[p][c]);
    }
  }
  family(b, "gatehouse_http2_connections_total", "counter",
         "Client connections that negotiated HTTP/2.");
  sample_u(b, "gatehouse_http2_connections_total", NULL, h2_conns);
  family(b, "gatehouse_http2_calm_total", "counter",
         "HTTP/2 connections ended with GOAWAY ENHANCE_YOUR_CALM (rapid reset, floods).");
  sample_u(b, "gatehouse_http2_calm_total", NULL, h2_calm);
  family(b, "gatehouse_bytes_in_total", "counter", "Bytes received from clients.");
  sample_u(b, "gatehouse_bytes_in_total", NULL, in);
  family(b, "gatehouse_bytes_out_total", "counter", "Bytes sent to clients.");
  sample_u(b, "gatehouse_bytes_out_total", NULL, out);
}

/* target_healthy: |t| has a live endpoint in use (not backed off, not
 * failing its health check). */
static int target_healthy(px_target_t *t, uint64_t now) {
  size_t n = atomic_load(&t->num_used);
  for (size_t e = 0; e < n; e++) {
    px_addr_t *a = &t->eps[e];
    if (atomic_load(&a->live) && !atomic_load(&a->unhealthy) && atomic_load(&a->down_until_ms) <= now)
      return 1;
  }
  return 0;
}

static void upstream_health(px_buf_t *b, const px_metrics_src_t *src) {
  family(b, "gatehouse_upstream_healthy", "gauge",
         "1 if the upstream address is in use (a DNS name: one of its endpoints), 0 while "
         "failed or skipped.");
  if (src->gen == NULL) return;
  px_gen_t *gen = src->gen;
  uint64_t now = gh_now_ms();
  for (size_t i = 0; i < gen->num_targets; i++) {
    px_target_t *t = &gen->targets[i];
    int dup = 0;
    for (size_t j = 0; j < i && !dup; j++) dup = strcmp(gen->targets[j].conf->text, t->conf->text) == 0;
    if (dup) continue;
    int healthy = 1;
    for (size_t j = i; j < gen->num_targets; j++) {
      px_target_t *o = &gen->targets[j];
      if (strcmp(o->conf->text, t->conf->text) == 0 && !target_healthy(o, now)) healthy = 0;
    }
    const char *labels[] = {"upstream", t->conf->text, NULL};
    sample_u(b, "gatehouse_upstream_healthy", labels, (uint64_t)healthy);
  }
  const char *name = "gatehouse_upstream_endpoint_healthy";
  family(b, name, "gauge",
         "1 if the endpoint (one address the upstream resolves to) is in use, 0 while failed "
         "or skipped.");
  for (size_t i = 0; i < gen->num_targets; i++) {
    px_target_t *t = &gen->targets[i];
    int dup = 0;
    for (size_t j = 0; j < i && !dup; j++) dup = strcmp(gen->targets[j].conf->text, t->conf->text) == 0;
    if (dup) continue; /* the same address in another group: its first copy speaks for it */
    size_t n = atomic_load(&t->num_used);
    for (size_t e = 0; e < n; e++) {
      px_addr_t *a = &t->eps[e];
      if (!atomic_load(&a->live)) continue;
      char text[INET6_ADDRSTRLEN + 8];
      px_addr_text(a, text, sizeof(text));
      int ok = !atomic_load(&a->unhealthy) && atomic_load(&a->down_until_ms) <= now;
      const char *labels[] = {"upstream", t->conf->text, "address", text, NULL};
      sample_u(b, name, labels, (uint64_t)ok);
    }
  }
}

static void ondemand(px_buf_t *b, const px_metrics_src_t *src) {
  static const char *const reasons[PX_OD_NUM] = {"precheck", "negative_cache", "capacity",
                                                 "failed"};
  uint64_t refused[PX_OD_NUM] = {0};
  for (unsigned k = 0; k < src->num_workers; k++) {
    for (int i = 0; i < PX_OD_NUM; i++)
      refused[i] += PX_STAT_GET(src->workers[k]->stats.od_refused[i]);
  }
  const char *name = "gatehouse_ondemand_decisions_total";
  family(b, name, "counter",
         "On-demand decisions: names allowed (certificate installed) or refused by the "
         "control thread (reason policy: ask, rate limits or a failed order), and handshakes "
         "a worker refused before asking.");
  const char *ok[] = {"result", "allowed", "reason", "", NULL};
  sample_u(b, name, ok, src->ondemand->allowed);
  const char *no[] = {"result", "refused", "reason", "policy", NULL};
  sample_u(b, name, no, src->ondemand->refused);
  for (int i = 0; i < PX_OD_NUM; i++) {
    const char *labels[] = {"result", "refused", "reason", reasons[i], NULL};
    sample_u(b, name, labels, refused[i]);
  }
  /* The control thread's policy decisions, by their own reasons. */
  const acme_policy_stats_t *p = &src->ondemand->policy;
  const struct {
    const char *result, *reason;
    uint64_t n;
  } pol[] = {
      {"allowed", "policy", p->allowed},
      {"allowed", "ask_unreachable_stored", p->allowed_stored_only},
      {"refused", "ask", p->refused_ask},
      {"refused", "ask_unreachable", p->refused_ask_unreachable},
      {"refused", "rate_client_ip", p->refused_rate_client_ip},
      {"refused", "rate_domain", p->refused_rate_domain},
      {"refused", "rate_global", p->refused_rate_global},
      {"refused", "policy_negative_cache", p->refused_negative_cache},
  };
  const char *pname = "gatehouse_ondemand_policy_decisions_total";
  family(b, pname, "counter",
         "Decisions of the on-demand policy on the control thread (ask, rate limits), by "
         "result and reason.");
  for (size_t i = 0; i < GH_ARRAY_LEN(pol); i++) {
    const char *labels[] = {"result", pol[i].result, "reason", pol[i].reason, NULL};
    sample_u(b, pname, labels, pol[i].n);
  }
  char sum[32];
  snprintf(sum, sizeof(sum), "%.3f", (double)p->ask_latency_ms_sum / 1000.0);
  family(b, "gatehouse_ondemand_ask_latency_seconds", "summary",
         "Time the ask endpoint took to answer, over the requests sent.");
  sample(b, "gatehouse_ondemand_ask_latency_seconds_sum", NULL, sum);
  sample_u(b, "gatehouse_ondemand_ask_latency_seconds_count", NULL, p->ask_latency_count);
}

/* orders renders the ACME orders finished, by CA, challenge type and
 * result, and each CA's fallbacks and back-off. */
static void orders(px_buf_t *b, const px_metrics_src_t *src) {
  static const char *const results[2] = {"ok", "failed"};
  const char *name = "gatehouse_acme_orders_total";
  family(b, name, "counter",
         "ACME orders (issuance and renewal) finished, by CA, the challenge type last used "
         "and result.");
  for (size_t i = 0; i < src->num_cas; i++) {
    for (int c = 0; c < 4; c++) {
      for (int r = 0; r < 2; r++) {
        const char *labels[] = {"ca", src->cas[i].directory, "challenge", acme_stats_challenges[c], "result",
                                results[r], NULL};
        sample_u(b, name, labels, src->cas[i].orders[c][r]);
      }
    }
  }
  name = "gatehouse_acme_ca_fallbacks_total";
  family(b, name, "counter",
         "Orders handed on to the next CA of acme.issuers after a failure of this CA's "
         "(unreachable, 5xx, rate limited, account paused).");
  for (size_t i = 0; i < src->num_cas; i++) {
    const char *labels[] = {"ca", src->cas[i].directory, NULL};
    sample_u(b, name, labels, src->cas[i].fallbacks);
  }
  name = "gatehouse_acme_ca_backoff_seconds";
  family(b, name, "gauge",
         "Seconds until orders try this CA again after failures of its own; 0 when they do.");
  time_t now = time(NULL);
  for (size_t i = 0; i < src->num_cas; i++) {
    const char *labels[] = {"ca", src->cas[i].directory, NULL};
    time_t until = src->cas[i].backoff_until;
    sample_u(b, name, labels, until > now ? (uint64_t)(until - now) : 0);
  }
}

/* fleet renders a fleet store's counters (issue 15). */
static void fleet(px_buf_t *b, const acme_fleet_stats_t *f) {
  family(b, "gatehouse_fleet_store_up", "gauge",
         "1 when the last call to the fleet's etcd reached it, else 0.");
  sample_u(b, "gatehouse_fleet_store_up", NULL, (uint64_t)f->up);
  const struct {
    const char *name, *help;
    uint64_t v;
  } c[] = {
      {"gatehouse_fleet_store_outages_total", "Times etcd went from reachable to unreachable.",
       f->outages},
      {"gatehouse_fleet_watch_events_total", "Changes other nodes made, seen through the watch.",
       f->watch_events},
      {"gatehouse_fleet_challenge_reads_total",
       "Challenge records read from etcd on a miss (the watch had not delivered them yet).",
       f->challenge_reads},
      {"gatehouse_fleet_fenced_writes_refused_total",
       "Certificate writes refused because this node's lock on the name was gone.",
       f->fence_refusals},
  };
  for (size_t i = 0; i < GH_ARRAY_LEN(c); i++) {
    family(b, c[i].name, "counter", c[i].help);
    sample_u(b, c[i].name, NULL, c[i].v);
  }
}

char *px_metrics_render(size_t *out_len, const px_metrics_src_t *src) {
  px_buf_t b = {0};
  listeners(&b, src);
  worker_counters(&b, src);
  family(&b, "gatehouse_handshakes_paused", "gauge",
         "Handshakes paused now, waiting for an on-demand certificate.");
  sample_u(&b, "gatehouse_handshakes_paused", NULL,
           src->num_paused > 0 ? (uint64_t)src->num_paused : 0);
  upstream_health(&b, src);
  family(&b, "gatehouse_certificate_expiry_timestamp_seconds", "gauge",
         "When each certificate expires (notAfter), in seconds since the epoch.");
  for (size_t i = 0; i < src->num_certs; i++) {
    char num[32];
    snprintf(num, sizeof(num), "%lld", (long long)src->certs[i].not_after);
    const char *labels[] = {"name", src->certs[i].name, NULL};
    sample(&b, "gatehouse_certificate_expiry_timestamp_seconds", labels, num);
  }
  family(&b, "gatehouse_certificate_renewal_failures", "gauge",
         "Consecutive failed renewal attempts of each stored certificate (0 after a success).");
  for (size_t i = 0; i < src->num_certs; i++) {
    const char *labels[] = {"name", src->certs[i].name, NULL};
    sample_u(&b, "gatehouse_certificate_renewal_failures", labels, src->certs[i].renewal_failures);
  }
  if (src->ondemand != NULL) ondemand(&b, src);
  if (src->num_cas > 0) orders(&b, src);
  if (src->fleet != NULL) fleet(&b, src->fleet);
  family(&b, "gatehouse_log_dropped_total", "counter",
         "Log lines dropped because the log destination did not keep up.");
  sample_u(&b, "gatehouse_log_dropped_total", NULL, src->log_dropped);
  *out_len = b.len;
  px_buf_append(&b, "", 1); /* NUL, not counted */
  return b.p;
}
