/* endpoints.c: the endpoints of a configured upstream address (see
 * gen.h): which slot each address of a DNS answer takes, so that an
 * address keeps its health across re-resolutions, and installing an
 * answer. Answers are hostile input: duplicates collapse, and no more than
 * a target's slots are used (PX_MAX_ENDPOINTS for a name). */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "proxy/upstream.h"

int px_sa_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
  if (a->ss_family != b->ss_family) return 0;
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
    return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  if (a->ss_family == AF_INET6) {
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
  }
  return 0;
}

void px_sa_text(const struct sockaddr_storage *sa, char *buf, size_t len) {
  char ip[INET6_ADDRSTRLEN];
  if (sa->ss_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const void *)sa;
    if (inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip)) == NULL) snprintf(ip, sizeof(ip), "?");
    snprintf(buf, len, "[%s]:%u", ip, (unsigned)ntohs(s6->sin6_port));
  } else if (sa->ss_family == AF_INET) {
    const struct sockaddr_in *s4 = (const void *)sa;
    if (inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip)) == NULL) snprintf(ip, sizeof(ip), "?");
    snprintf(buf, len, "%s:%u", ip, (unsigned)ntohs(s4->sin_port));
  } else {
    snprintf(buf, len, "?");
  }
}

size_t px_ep_assign(const struct sockaddr_storage *cur, size_t num_cur, size_t cap,
                    const struct sockaddr_storage *next, size_t num_next, int *out_slot) {
  unsigned char kept[PX_MAX_ENDPOINTS] = {0};
  if (cap > PX_MAX_ENDPOINTS) cap = PX_MAX_ENDPOINTS;
  if (num_cur > cap) num_cur = cap;
  /* First, every address that already has a slot keeps it. */
  for (size_t i = 0; i < num_next; i++) {
    out_slot[i] = -1;
    for (size_t j = 0; j < num_cur; j++) {
      if (px_sa_equal(&cur[j], &next[i])) {
        out_slot[i] = (int)j;
        kept[j] = 1;
        break;
      }
    }
  }
  /* Then new addresses: a never-used slot, else one whose address left. */
  size_t used = num_cur;
  for (size_t i = 0; i < num_next; i++) {
    if (out_slot[i] >= 0) continue;
    int dup = -1;
    for (size_t k = 0; k < i && dup < 0; k++) {
      if (out_slot[k] >= 0 && px_sa_equal(&next[k], &next[i])) dup = out_slot[k];
    }
    if (dup >= 0) {
      out_slot[i] = dup;
      continue;
    }
    if (used < cap) {
      kept[used] = 1;
      out_slot[i] = (int)used++;
      continue;
    }
    for (size_t j = 0; j < num_cur; j++) {
      if (!kept[j]) {
        kept[j] = 1;
        out_slot[i] = (int)j;
        break;
      }
    }
  }
  return used;
}

int px_target_install(px_target_t *t, const struct sockaddr_storage *next, size_t num_next) {
  struct sockaddr_storage cur[PX_MAX_ENDPOINTS];
  int slot[PX_MAX_ENDPOINTS * 4];
  unsigned char live[PX_MAX_ENDPOINTS] = {0};
  if (num_next > GH_ARRAY_LEN(slot)) num_next = GH_ARRAY_LEN(slot);
  int changed = 0;
  pthread_mutex_lock(&t->sa_lock);
  size_t num_cur = atomic_load(&t->num_used);
  for (size_t j = 0; j < num_cur; j++) cur[j] = t->eps[j].sa;
  size_t used = px_ep_assign(cur, num_cur, t->num_eps, next, num_next, slot);
  size_t dropped = 0;
  for (size_t i = 0; i < num_next; i++) {
    if (slot[i] < 0) {
      dropped++;
      continue;
    }
    px_addr_t *e = &t->eps[slot[i]];
    live[slot[i]] = 1;
    if ((size_t)slot[i] >= num_cur || !px_sa_equal(&e->sa, &next[i])) {
      /* A new address in this slot owes nothing to the old one's failures. */
      e->sa = next[i];
      e->sa_len = next[i].ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                : sizeof(struct sockaddr_in);
      px_sa_text(&e->sa, e->text, sizeof(e->text));
      atomic_fetch_add(&e->seq, 1);
      atomic_store(&e->down_until_ms, 0);
      atomic_store(&e->unhealthy, 0);
      changed = 1;
    }
  }
  for (size_t j = 0; j < used; j++) {
    if (atomic_load(&t->eps[j].live) != live[j]) changed = 1;
    atomic_store(&t->eps[j].live, live[j]);
  }
  atomic_store(&t->num_used, used);
  if (changed) atomic_fetch_add(&t->answers, 1);
  pthread_mutex_unlock(&t->sa_lock);
  if (dropped) {
    GH_WARN("proxy", "upstream %s: %zu more addresses than the %zu endpoints used", t->conf->text,
            dropped, t->num_eps);
  }
  return changed;
}

size_t px_target_from_addrinfo(px_target_t *t, const struct addrinfo *res, int quiet) {
  struct sockaddr_storage next[PX_MAX_ENDPOINTS * 4];
  size_t n = 0;
  for (const struct addrinfo *ai = res; ai != NULL && n < GH_ARRAY_LEN(next); ai = ai->ai_next) {
    if (ai->ai_addr == NULL || (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)) continue;
    if (ai->ai_addrlen > sizeof(next[0])) continue;
    memset(&next[n], 0, sizeof(next[n]));
    memcpy(&next[n], ai->ai_addr, ai->ai_addrlen);
    n++;
  }
  if (n == 0) return 0; /* keep what we had: an empty answer is no reason to stop */
  if (px_target_install(t, next, n) && !quiet) {
    char list[256] = "";
    size_t used = atomic_load(&t->num_used), at = 0;
    pthread_mutex_lock(&t->sa_lock);
    for (size_t j = 0; j < used && at + 2 < sizeof(list); j++) {
      if (!atomic_load(&t->eps[j].live)) continue;
      int k = snprintf(list + at, sizeof(list) - at, "%s%s", at ? " " : "", t->eps[j].text);
      if (k < 0) break;
      at += (size_t)k;
    }
    pthread_mutex_unlock(&t->sa_lock);
    if (at >= sizeof(list)) at = sizeof(list) - 1;
    GH_INFO("proxy", "upstream %s: now at %s", t->conf->text, list);
  }
  return n;
}

int px_addr_sockaddr(px_addr_t *a, struct sockaddr_storage *out, unsigned *out_seq) {
  px_target_t *t = a->target;
  if (!t->is_name) { /* fixed since the generation was built */
    memcpy(out, &a->sa, sizeof(*out));
    if (out_seq) *out_seq = atomic_load(&a->seq);
    return 0;
  }
  pthread_mutex_lock(&t->sa_lock);
  int ok = a->sa_len > 0 && atomic_load(&a->live);
  if (ok) memcpy(out, &a->sa, sizeof(*out));
  if (out_seq) *out_seq = atomic_load(&a->seq);
  pthread_mutex_unlock(&t->sa_lock);
  return ok ? 0 : -1;
}

void px_addr_text(px_addr_t *a, char *buf, size_t len) {
  pthread_mutex_lock(&a->target->sa_lock);
  snprintf(buf, len, "%s", a->sa_len ? a->text : "-");
  pthread_mutex_unlock(&a->target->sa_lock);
}
