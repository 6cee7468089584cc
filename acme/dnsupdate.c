/* dnsupdate.c: RFC 2136 dynamic updates signed with TSIG (RFC 8945) for
 * dns-01 (see dnsupdate.h). Messages are built with CBB and responses read
 * with CBS; a response is believed only when its TSIG record verifies
 * against our key and our request's MAC. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/base64.h>
#include <openssl/bytestring.h>
#include <openssl/digest.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>

#include "acme/dnsupdate.h"
#include "common/common.h"
#include "common/log.h"

#define DNS_OPCODE_UPDATE 5
#define DNS_TYPE_SOA 6
#define DNS_TYPE_TXT 16
#define DNS_TYPE_TSIG 250
#define DNS_CLASS_IN 1
#define DNS_CLASS_NONE 254
#define DNS_CLASS_ANY 255
#define DNS_FLAG_QR 0x8000u
#define DNS_FLAG_TC 0x0200u
#define DNS_HEADER_LEN 12
#define UDP_MAX 512

#define ATTEMPT_TIMEOUT_MS 3000u
#define MAX_ATTEMPTS 3

/* ---- TSIG ---- */

static const char *alg_name(conf_tsig_alg_t alg) {
  return alg == CONF_TSIG_HMAC_SHA512 ? "hmac-sha512." : "hmac-sha256.";
}

static const EVP_MD *alg_md(conf_tsig_alg_t alg) {
  return alg == CONF_TSIG_HMAC_SHA512 ? EVP_sha512() : EVP_sha256();
}

/* tsig_mac computes the MAC of |msg| (the message without its TSIG record,
 * ARCOUNT not counting it, the original id) per RFC 8945 section 4.3:
 * for a response, the request's MAC (|prior|, with its length) first; then
 * the message; then the TSIG variables. Returns the MAC's length or 0. */
static size_t tsig_mac(uint8_t out[ACME_TSIG_MAC_MAX], const acme_tsig_key_t *key,
                       const uint8_t *prior, size_t prior_len, const uint8_t *msg, size_t msg_len,
                       uint64_t time_signed, uint16_t fudge, uint16_t error,
                       const uint8_t *other, size_t other_len) {
  uint8_t key_wire[ACME_DNS_NAME_MAX], alg_wire[ACME_DNS_NAME_MAX];
  size_t key_len = acme__dns_name_to_wire(key_wire, key->name);
  size_t alg_len = acme__dns_name_to_wire(alg_wire, alg_name(key->alg));
  if (key_len == 0 || alg_len == 0) return 0;
  uint8_t vars[2 * ACME_DNS_NAME_MAX + 32];
  CBB cbb;
  size_t vars_len;
  if (!CBB_init_fixed(&cbb, vars, sizeof(vars)) || !CBB_add_bytes(&cbb, key_wire, key_len) ||
      !CBB_add_u16(&cbb, DNS_CLASS_ANY) || !CBB_add_u32(&cbb, 0) ||
      !CBB_add_bytes(&cbb, alg_wire, alg_len) || !CBB_add_u16(&cbb, (uint16_t)(time_signed >> 32)) ||
      !CBB_add_u32(&cbb, (uint32_t)time_signed) || !CBB_add_u16(&cbb, fudge) ||
      !CBB_add_u16(&cbb, error) || !CBB_add_u16(&cbb, (uint16_t)other_len) ||
      !CBB_finish(&cbb, NULL, &vars_len)) {
    CBB_cleanup(&cbb);
    return 0;
  }
  HMAC_CTX ctx;
  HMAC_CTX_init(&ctx);
  uint8_t plen[2] = {(uint8_t)(prior_len >> 8), (uint8_t)prior_len};
  unsigned mac_len = 0;
  int ok = HMAC_Init_ex(&ctx, key->secret, key->secret_len, alg_md(key->alg), NULL) &&
           (prior == NULL || (HMAC_Update(&ctx, plen, 2) && HMAC_Update(&ctx, prior, prior_len))) &&
           HMAC_Update(&ctx, msg, msg_len) && HMAC_Update(&ctx, vars, vars_len) &&
           (other_len == 0 || HMAC_Update(&ctx, other, other_len)) &&
           HMAC_Final(&ctx, out, &mac_len);
  HMAC_CTX_cleanup(&ctx);
  return ok ? mac_len : 0;
}

/* ---- the request ---- */

/* add_txt_rdata writes |value| as TXT rdata: character-strings of at most
 * 255 bytes each. */
static int add_txt_rdata(CBB *rr, const char *value) {
  CBB rdata;
  size_t len = strlen(value);
  if (!CBB_add_u16_length_prefixed(rr, &rdata)) return 0;
  for (size_t off = 0; off < len; off += 255) {
    CBB s;
    size_t n = len - off < 255 ? len - off : 255;
    if (!CBB_add_u8_length_prefixed(&rdata, &s) ||
        !CBB_add_bytes(&s, (const uint8_t *)value + off, n)) {
      return 0;
    }
  }
  return CBB_flush(rr);
}

/* in_zone says whether the wire name |name| is |zone| or below it. */
static int in_zone(const uint8_t *name, size_t name_len, const uint8_t *zone, size_t zone_len) {
  size_t i = 0;
  while (name_len - i > zone_len) {
    if (name[i] == 0) return 0;
    i += 1 + (size_t)name[i];
  }
  return name_len - i == zone_len && memcmp(name + i, zone, zone_len) == 0;
}

int acme__dnsupdate_build(uint8_t *out, size_t out_cap, size_t *out_len,
                          uint8_t out_mac[ACME_TSIG_MAC_MAX], size_t *out_mac_len, uint16_t id,
                          const acme_tsig_key_t *key, uint64_t now_s, const char *zone, int add,
                          const char *fqdn, const char *value) {
  uint8_t zone_wire[ACME_DNS_NAME_MAX], name_wire[ACME_DNS_NAME_MAX];
  size_t zone_len = acme__dns_name_to_wire(zone_wire, zone);
  size_t name_len = acme__dns_name_to_wire(name_wire, fqdn);
  if (zone_len == 0 || name_len == 0 || value[0] == '\0' ||
      !in_zone(name_wire, name_len, zone_wire, zone_len)) {
    return UV_EINVAL;
  }
  CBB cbb;
  size_t len;
  /* The message without its TSIG record (ARCOUNT 0), which is what the
   * MAC covers; acme__tsig_sign appends the record. */
  if (!CBB_init_fixed(&cbb, out, out_cap) || !CBB_add_u16(&cbb, id) ||
      !CBB_add_u16(&cbb, DNS_OPCODE_UPDATE << 11) || !CBB_add_u16(&cbb, 1) ||
      !CBB_add_u16(&cbb, 0) || !CBB_add_u16(&cbb, 1) || !CBB_add_u16(&cbb, 0) ||
      /* Zone section: the zone's SOA, class IN. */
      !CBB_add_bytes(&cbb, zone_wire, zone_len) || !CBB_add_u16(&cbb, DNS_TYPE_SOA) ||
      !CBB_add_u16(&cbb, DNS_CLASS_IN) ||
      /* Update section: add the RR (IN, TTL 60) or delete exactly it
       * (RFC 2136 2.5.4: class NONE, TTL 0). */
      !CBB_add_bytes(&cbb, name_wire, name_len) || !CBB_add_u16(&cbb, DNS_TYPE_TXT) ||
      !CBB_add_u16(&cbb, add ? DNS_CLASS_IN : DNS_CLASS_NONE) ||
      !CBB_add_u32(&cbb, add ? ACME_DNSUPDATE_TTL : 0) || !add_txt_rdata(&cbb, value)) {
    CBB_cleanup(&cbb);
    return UV_EINVAL;
  }
  if (!CBB_finish(&cbb, NULL, &len)) {
    CBB_cleanup(&cbb);
    return UV_EINVAL;
  }
  *out_len = len;
  return acme__tsig_sign(out, out_cap, out_len, out_mac, out_mac_len, key, now_s, NULL, 0, 0);
}

int acme__tsig_sign(uint8_t *msg, size_t msg_cap, size_t *msg_len,
                    uint8_t out_mac[ACME_TSIG_MAC_MAX], size_t *out_mac_len,
                    const acme_tsig_key_t *key, uint64_t now_s, const uint8_t *prior,
                    size_t prior_len, uint16_t error) {
  uint8_t key_wire[ACME_DNS_NAME_MAX], alg_wire[ACME_DNS_NAME_MAX];
  size_t key_len = acme__dns_name_to_wire(key_wire, key->name);
  size_t alg_len = acme__dns_name_to_wire(alg_wire, alg_name(key->alg));
  if (*msg_len < DNS_HEADER_LEN || key_len == 0 || alg_len == 0) return UV_EINVAL;
  uint16_t arcount = (uint16_t)(msg[10] << 8 | msg[11]);
  if (arcount == 0xffff) return UV_EINVAL;
  size_t mac_len = tsig_mac(out_mac, key, prior, prior_len, msg, *msg_len, now_s, ACME_TSIG_FUDGE, error,
                            NULL, 0);
  uint16_t id = (uint16_t)(msg[0] << 8 | msg[1]);
  CBB cbb, rr;
  size_t len;
  if (mac_len == 0 || !CBB_init_fixed(&cbb, msg + *msg_len, msg_cap - *msg_len) ||
      !CBB_add_bytes(&cbb, key_wire, key_len) || !CBB_add_u16(&cbb, DNS_TYPE_TSIG) ||
      !CBB_add_u16(&cbb, DNS_CLASS_ANY) || !CBB_add_u32(&cbb, 0) ||
      !CBB_add_u16_length_prefixed(&cbb, &rr) || !CBB_add_bytes(&rr, alg_wire, alg_len) ||
      !CBB_add_u16(&rr, (uint16_t)(now_s >> 32)) || !CBB_add_u32(&rr, (uint32_t)now_s) ||
      !CBB_add_u16(&rr, ACME_TSIG_FUDGE) || !CBB_add_u16(&rr, (uint16_t)mac_len) ||
      !CBB_add_bytes(&rr, out_mac, mac_len) || !CBB_add_u16(&rr, id) ||
      !CBB_add_u16(&rr, error) || !CBB_add_u16(&rr, 0) || !CBB_finish(&cbb, NULL, &len)) {
    CBB_cleanup(&cbb);
    return UV_EINVAL;
  }
  arcount++;
  msg[10] = (uint8_t)(arcount >> 8);
  msg[11] = (uint8_t)arcount;
  *msg_len += len;
  *out_mac_len = mac_len;
  return 0;
}

/* ---- the response ---- */

/* skip_rr skips one resource record at |cur|. Returns 1, or 0 if it is
 * malformed. */
static int skip_rr(const CBS *all, CBS *cur) {
  uint8_t nm[ACME_DNS_NAME_MAX];
  CBS rdata;
  return acme__dns_read_name(all, cur, nm) != 0 && CBS_skip(cur, 8) &&
         CBS_get_u16_length_prefixed(cur, &rdata);
}

acme_dns_result_t acme__dnsupdate_parse(acme_dnsupdate_reply_t *out, const uint8_t *msg,
                                        size_t msg_len, uint16_t id, const acme_tsig_key_t *key,
                                        const uint8_t *req_mac, size_t req_mac_len,
                                        uint64_t now_s) {
  memset(out, 0, sizeof(*out));
  CBS all, cur;
  CBS_init(&all, msg, msg_len);
  cur = all;
  uint16_t rid, flags, counts[4];
  if (!CBS_get_u16(&cur, &rid) || !CBS_get_u16(&cur, &flags) || !CBS_get_u16(&cur, &counts[0]) ||
      !CBS_get_u16(&cur, &counts[1]) || !CBS_get_u16(&cur, &counts[2]) ||
      !CBS_get_u16(&cur, &counts[3])) {
    return ACME_DNS_MALFORMED;
  }
  if (rid != id || !(flags & DNS_FLAG_QR) || ((flags >> 11) & 0xfu) != DNS_OPCODE_UPDATE) {
    return ACME_DNS_MISMATCH;
  }
  if (flags & DNS_FLAG_TC) return ACME_DNS_TRUNCATED;
  out->rcode = (int)(flags & 0xfu);
  /* The zone section: name, type, class. */
  for (uint16_t i = 0; i < counts[0]; i++) {
    uint8_t nm[ACME_DNS_NAME_MAX];
    if (acme__dns_read_name(&all, &cur, nm) == 0 || !CBS_skip(&cur, 4)) return ACME_DNS_MALFORMED;
  }
  /* Then every record; a TSIG record must be the last one (RFC 8945 5.1). */
  size_t num_rrs = (size_t)counts[1] + counts[2] + counts[3];
  for (size_t i = 0; i + 1 < num_rrs; i++) {
    if (!skip_rr(&all, &cur)) return ACME_DNS_MALFORMED;
  }
  if (num_rrs == 0 || counts[3] == 0) return CBS_len(&cur) == 0 ? ACME_DNS_ANSWER : ACME_DNS_MALFORMED;
  size_t tsig_at = msg_len - CBS_len(&cur);
  uint8_t owner[ACME_DNS_NAME_MAX], want[ACME_DNS_NAME_MAX];
  uint16_t type, class, mac_len, orig_id, error, t_hi, fudge;
  uint32_t ttl, t_lo;
  CBS rdata, mac, other;
  size_t owner_len = acme__dns_read_name(&all, &cur, owner);
  if (owner_len == 0 || !CBS_get_u16(&cur, &type) || !CBS_get_u16(&cur, &class) ||
      !CBS_get_u32(&cur, &ttl) || !CBS_get_u16_length_prefixed(&cur, &rdata) ||
      CBS_len(&cur) != 0) {
    return ACME_DNS_MALFORMED;
  }
  if (type != DNS_TYPE_TSIG) return ACME_DNS_ANSWER; /* unsigned */
  uint8_t alg[ACME_DNS_NAME_MAX], alg_want[ACME_DNS_NAME_MAX];
  size_t alg_len = acme__dns_read_name(&all, &rdata, alg);
  if (alg_len == 0 || !CBS_get_u16(&rdata, &t_hi) || !CBS_get_u32(&rdata, &t_lo) ||
      !CBS_get_u16(&rdata, &fudge) || !CBS_get_u16(&rdata, &mac_len) ||
      !CBS_get_bytes(&rdata, &mac, mac_len) || !CBS_get_u16(&rdata, &orig_id) ||
      !CBS_get_u16(&rdata, &error) || !CBS_get_u16_length_prefixed(&rdata, &other) ||
      CBS_len(&rdata) != 0 || class != DNS_CLASS_ANY || ttl != 0) {
    return ACME_DNS_MALFORMED;
  }
  out->has_tsig = 1;
  out->tsig_error = error;
  uint64_t time_signed = (uint64_t)t_hi << 32 | t_lo;
  out->time_ok = (time_signed > now_s ? time_signed - now_s : now_s - time_signed) <= fudge;
  size_t want_len = acme__dns_name_to_wire(want, key->name);
  size_t alg_want_len = acme__dns_name_to_wire(alg_want, alg_name(key->alg));
  if (owner_len != want_len || memcmp(owner, want, owner_len) != 0 || alg_len != alg_want_len ||
      memcmp(alg, alg_want, alg_len) != 0 || CBS_len(&mac) == 0) {
    return ACME_DNS_ANSWER; /* not signed with our key: not verified */
  }
  /* The MAC covers the message as it was before the TSIG record was
   * added: ARCOUNT one less, and the original id. */
  uint8_t *copy = gh_malloc(tsig_at);
  memcpy(copy, msg, tsig_at);
  copy[0] = (uint8_t)(orig_id >> 8);
  copy[1] = (uint8_t)orig_id;
  copy[10] = (uint8_t)((counts[3] - 1) >> 8);
  copy[11] = (uint8_t)(counts[3] - 1);
  uint8_t calc[ACME_TSIG_MAC_MAX];
  size_t calc_len = tsig_mac(calc, key, req_mac, req_mac_len, copy, tsig_at, time_signed, fudge,
                             error, CBS_data(&other), CBS_len(&other));
  gh_free(copy);
  out->verified = calc_len != 0 && calc_len == CBS_len(&mac) &&
                  CRYPTO_memcmp(calc, CBS_data(&mac), calc_len) == 0;
  return ACME_DNS_ANSWER;
}

char *acme__dnsupdate_why(const acme_dnsupdate_reply_t *r, const char *server, const char *zone,
                          const char *key_name, const char *fqdn) {
  const char *hint = NULL;
  int code = r->rcode;
  if (r->tsig_error != 0) {
    code = r->tsig_error;
    switch (r->tsig_error) {
      case 16: hint = "the server rejected the signature: is key_secret (or key_algorithm) right?"; break;
      case 17:
        hint = "the server does not know this key with this algorithm, or does not take it for "
               "this zone";
        break;
      case 18: hint = "our clock and the server's differ by more than 300 s"; break;
      default: hint = "a TSIG error"; break;
    }
  } else if (r->rcode != 0) {
    switch (r->rcode) {
      case 1: hint = "the server could not read the update"; break;
      case 2: hint = "the server failed to apply it"; break;
      case 4: hint = "the server does not do dynamic updates"; break;
      case 5: hint = "the server refused it: does its ACL let the key update the zone?"; break;
      case 9: hint = "the server is not authoritative for the zone, or the key may not update it"; break;
      case 10: hint = "the name is not in the zone"; break;
      default: hint = "the update failed"; break;
    }
  } else if (!r->has_tsig || !r->verified) {
    return gh_asprintf("updating %s at %s (zone %s, key %s): the answer is not signed with the "
                       "key, so it cannot be trusted",
                       fqdn, server, zone, key_name);
  } else if (!r->time_ok) {
    return gh_asprintf("updating %s at %s (zone %s, key %s): the answer's time is more than "
                       "300 s from ours (BADTIME)",
                       fqdn, server, zone, key_name);
  } else {
    return NULL;
  }
  if (r->tsig_error != 0 && r->rcode != 0) {
    return gh_asprintf("updating %s at %s (zone %s, key %s): %s, %s (%s)", fqdn, server, zone,
                       key_name, acme__dns_rcode_name(r->rcode), acme__dns_rcode_name(code), hint);
  }
  return gh_asprintf("updating %s at %s (zone %s, key %s): %s (%s)", fqdn, server, zone, key_name,
                     acme__dns_rcode_name(code), hint);
}

/* ---- one update ---- */

struct acme_dnsupdate {
  uv_loop_t *loop;
  uv_timer_t timer;
  uv_udp_t udp;
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  int udp_open, tcp_open, done, use_tcp, attempt;
  unsigned num_open;
  acme_dns_server_t server;
  char *zone, *key_name, *fqdn, *value;
  conf_tsig_alg_t alg;
  uint8_t *secret;
  size_t secret_len;
  int add;
  uint16_t id;
  uint8_t req_mac[ACME_TSIG_MAC_MAX];
  size_t req_mac_len;
  uint8_t req[2 + ACME_DNS_MAX_MSG]; /* 2 bytes for TCP's length, then the message */
  size_t req_len;
  uint8_t resp[2 + ACME_DNS_MAX_MSG];
  size_t resp_len;
  char last[160]; /* why the last attempt failed */
  uint64_t started_ms;
  acme_dnsupdate_cb cb;
  void *arg;
};

static void update_free(acme_dnsupdate_t *u) {
  gh_free(u->zone);
  gh_free(u->key_name);
  gh_free(u->fqdn);
  gh_free(u->value);
  if (u->secret != NULL) OPENSSL_cleanse(u->secret, u->secret_len);
  gh_free(u->secret);
  gh_free(u);
}

static void on_close(uv_handle_t *h) {
  acme_dnsupdate_t *u = h->data;
  if (--u->num_open == 0) update_free(u);
}

static void update_close(acme_dnsupdate_t *u) {
  u->done = 1;
  u->cb = NULL;
  uv_timer_stop(&u->timer);
  uv_close((uv_handle_t *)&u->timer, on_close);
  if (u->udp_open) uv_close((uv_handle_t *)&u->udp, on_close);
  if (u->tcp_open) uv_close((uv_handle_t *)&u->tcp, on_close);
  u->udp_open = u->tcp_open = 0;
}

static void update_finish(acme_dnsupdate_t *u, int status, const char *why) {
  acme_dnsupdate_cb cb = u->cb;
  void *arg = u->arg;
  char *msg = why ? gh_strdup(why) : NULL;
  update_close(u);
  if (cb != NULL) cb(arg, status, msg);
  gh_free(msg);
}

static void attempt_start(acme_dnsupdate_t *u);

/* attempt_failed records why this attempt failed and starts the next. */
static void attempt_failed(acme_dnsupdate_t *u, int status) {
  if (u->attempt >= MAX_ATTEMPTS || status != UV_ETIMEDOUT) {
    char *why = gh_asprintf("updating %s at %s (zone %s, key %s): %s", u->fqdn, u->server.text,
                            u->zone, u->key_name, u->last);
    update_finish(u, status, why);
    gh_free(why);
    return;
  }
  attempt_start(u);
}

static void on_timeout(uv_timer_t *t) {
  acme_dnsupdate_t *u = t->data;
  if (u->done) return;
  snprintf(u->last, sizeof(u->last), "no answer within %u ms%s (%d attempts)",
           ATTEMPT_TIMEOUT_MS, u->use_tcp ? " over TCP" : "", u->attempt);
  if (u->tcp_open) {
    uv_close((uv_handle_t *)&u->tcp, on_close);
    u->tcp_open = 0;
  }
  attempt_failed(u, UV_ETIMEDOUT);
}

/* handle_response judges a whole response. */
static void handle_response(acme_dnsupdate_t *u, const uint8_t *msg, size_t len) {
  acme_tsig_key_t key = {u->key_name, u->alg, u->secret, u->secret_len};
  acme_dnsupdate_reply_t r;
  acme_dns_result_t res = acme__dnsupdate_parse(&r, msg, len, u->id, &key, u->req_mac,
                                                u->req_mac_len, (uint64_t)time(NULL));
  switch (res) {
    case ACME_DNS_MISMATCH:
      GH_DEBUG("acme", "dns-01 update: %s: ignoring a response that is not for our update",
               u->server.text);
      return;
    case ACME_DNS_TRUNCATED:
      if (u->use_tcp) break;
      uv_timer_stop(&u->timer);
      u->use_tcp = 1;
      attempt_start(u);
      return;
    case ACME_DNS_ANSWER: {
      char *why = acme__dnsupdate_why(&r, u->server.text, u->zone, u->key_name, u->fqdn);
      update_finish(u, why == NULL ? 0 : UV_EPROTO, why);
      gh_free(why);
      return;
    }
    default:
      break;
  }
  snprintf(u->last, sizeof(u->last), "a malformed answer");
  uv_timer_stop(&u->timer);
  attempt_failed(u, UV_EPROTO);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  acme_dnsupdate_t *u = h->data;
  (void)suggested;
  if (h->type == UV_UDP) {
    *buf = uv_buf_init((char *)u->resp, sizeof(u->resp));
  } else {
    *buf = uv_buf_init((char *)u->resp + u->resp_len, (unsigned)(sizeof(u->resp) - u->resp_len));
  }
}

static void on_udp_recv(uv_udp_t *udp, ssize_t nread, const uv_buf_t *buf,
                        const struct sockaddr *from, unsigned flags) {
  acme_dnsupdate_t *u = udp->data;
  if (u->done || u->use_tcp || (nread == 0 && from == NULL)) return;
  if (nread < 0) {
    snprintf(u->last, sizeof(u->last), "%s", uv_strerror((int)nread));
    uv_timer_stop(&u->timer);
    attempt_failed(u, (int)nread);
    return;
  }
  if (flags & UV_UDP_PARTIAL) {
    uv_timer_stop(&u->timer);
    u->use_tcp = 1;
    attempt_start(u);
    return;
  }
  handle_response(u, (const uint8_t *)buf->base, (size_t)nread);
}

static void on_tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  acme_dnsupdate_t *u = s->data;
  (void)buf;
  if (u->done) return;
  if (nread < 0) {
    snprintf(u->last, sizeof(u->last), "over TCP: %s", nread == UV_EOF ? "the server closed the connection" : uv_strerror((int)nread));
    uv_timer_stop(&u->timer);
    attempt_failed(u, nread == UV_EOF ? UV_EPROTO : (int)nread);
    return;
  }
  u->resp_len += (size_t)nread;
  if (u->resp_len < 2) return;
  size_t want = (size_t)u->resp[0] << 8 | u->resp[1];
  if (want > sizeof(u->resp) - 2) {
    snprintf(u->last, sizeof(u->last), "over TCP: an answer of %zu bytes, over our limit", want);
    uv_timer_stop(&u->timer);
    attempt_failed(u, UV_EPROTO);
    return;
  }
  if (u->resp_len < 2 + want) return;
  handle_response(u, u->resp + 2, want);
}

static void on_write(uv_write_t *w, int status) {
  acme_dnsupdate_t *u = w->data;
  if (u->done || status == 0) return;
  snprintf(u->last, sizeof(u->last), "sending over TCP: %s", uv_strerror(status));
  uv_timer_stop(&u->timer);
  attempt_failed(u, status);
}

static void on_connect(uv_connect_t *c, int status) {
  acme_dnsupdate_t *u = c->data;
  if (u->done || status == UV_ECANCELED) return;
  if (status != 0) {
    snprintf(u->last, sizeof(u->last), "connecting over TCP: %s", uv_strerror(status));
    uv_timer_stop(&u->timer);
    attempt_failed(u, status);
    return;
  }
  u->resp_len = 0;
  uv_buf_t b = uv_buf_init((char *)u->req, (unsigned)(2 + u->req_len));
  u->write.data = u;
  int rc = uv_write(&u->write, (uv_stream_t *)&u->tcp, &b, 1, on_write);
  if (rc == 0) rc = uv_read_start((uv_stream_t *)&u->tcp, on_alloc, on_tcp_read);
  if (rc != 0) {
    snprintf(u->last, sizeof(u->last), "over TCP: %s", uv_strerror(rc));
    uv_timer_stop(&u->timer);
    attempt_failed(u, rc);
  }
}

/* attempt_start signs a fresh message (a new id, the time now) and sends
 * it: over UDP, or over TCP once needed and for the last attempt. */
static void attempt_start(acme_dnsupdate_t *u) {
  u->attempt++;
  acme_tsig_key_t key = {u->key_name, u->alg, u->secret, u->secret_len};
  RAND_bytes((uint8_t *)&u->id, sizeof(u->id));
  int rc = acme__dnsupdate_build(u->req + 2, sizeof(u->req) - 2, &u->req_len, u->req_mac,
                                 &u->req_mac_len, u->id, &key, (uint64_t)time(NULL), u->zone,
                                 u->add, u->fqdn, u->value);
  if (rc != 0) {
    snprintf(u->last, sizeof(u->last), "cannot build the update (is the name in the zone?)");
    attempt_failed(u, rc);
    return;
  }
  u->req[0] = (uint8_t)(u->req_len >> 8);
  u->req[1] = (uint8_t)u->req_len;
  if (u->req_len > UDP_MAX || u->attempt == MAX_ATTEMPTS) u->use_tcp = 1;
  uv_timer_start(&u->timer, on_timeout, ATTEMPT_TIMEOUT_MS, 0);
  if (!u->use_tcp) {
    uv_buf_t b = uv_buf_init((char *)u->req + 2, (unsigned)u->req_len);
    rc = uv_udp_try_send(&u->udp, &b, 1, NULL);
    if (rc < 0) {
      snprintf(u->last, sizeof(u->last), "sending: %s", uv_strerror(rc));
      uv_timer_stop(&u->timer);
      attempt_failed(u, rc);
    }
    return;
  }
  if (u->tcp_open) return; /* one TCP attempt: it is the last */
  rc = uv_tcp_init(u->loop, &u->tcp);
  if (rc != 0) {
    snprintf(u->last, sizeof(u->last), "TCP socket: %s", uv_strerror(rc));
    uv_timer_stop(&u->timer);
    attempt_failed(u, rc);
    return;
  }
  u->tcp.data = u;
  u->tcp_open = 1;
  u->num_open++;
  u->connect.data = u;
  u->attempt = MAX_ATTEMPTS;
  rc = uv_tcp_connect(&u->connect, &u->tcp, (const struct sockaddr *)&u->server.addr, on_connect);
  if (rc != 0) {
    snprintf(u->last, sizeof(u->last), "connecting over TCP: %s", uv_strerror(rc));
    uv_timer_stop(&u->timer);
    attempt_failed(u, rc);
  }
}

static void on_first(uv_timer_t *t) {
  acme_dnsupdate_t *u = t->data;
  if (!u->done) attempt_start(u);
}

int acme__dnsupdate_start(acme_dnsupdate_t **out, char **out_err, uv_loop_t *loop,
                          const conf_rfc2136_t *conf, int add, const char *fqdn,
                          const char *value, acme_dnsupdate_cb cb, void *arg) {
  *out = NULL;
  *out_err = NULL;
  acme_dns_server_t server;
  if (cb == NULL || acme__dns_server_from(&server, conf->host, conf->port) != 0) {
    *out_err = gh_asprintf("acme.dns.rfc2136.server: \"%s\" is not an IP address",
                           conf->server ? conf->server : "");
    return UV_EINVAL;
  }
  size_t max = 0, secret_len = 0, in_len = strlen(conf->key_secret);
  if (!EVP_DecodedLength(&max, in_len)) max = 0;
  uint8_t *secret = gh_malloc(max ? max : 1);
  if (max == 0 || !EVP_DecodeBase64(secret, &secret_len, max, (const uint8_t *)conf->key_secret,
                                    in_len)) {
    gh_free(secret);
    *out_err = gh_strdup("acme.dns.rfc2136.key_secret: not valid base64");
    return UV_EINVAL;
  }
  acme_dnsupdate_t *u = gh_calloc(1, sizeof(*u));
  u->loop = loop;
  u->server = server;
  u->zone = gh_strdup(conf->zone);
  u->key_name = gh_strdup(conf->key_name);
  u->alg = conf->key_algorithm;
  u->secret = secret;
  u->secret_len = secret_len;
  u->fqdn = gh_strdup(fqdn);
  u->value = gh_strdup(value);
  u->add = add;
  u->cb = cb;
  u->arg = arg;
  u->started_ms = gh_now_ms();
  snprintf(u->last, sizeof(u->last), "no answer");
  uv_timer_init(loop, &u->timer);
  u->timer.data = u;
  u->num_open = 1;
  int rc = uv_udp_init_ex(loop, &u->udp, server.addr.ss_family);
  if (rc == 0) {
    u->udp.data = u;
    u->udp_open = 1;
    u->num_open++;
    /* Connected: datagrams from anyone else are dropped, a closed port
     * comes back as ECONNREFUSED. */
    rc = uv_udp_connect(&u->udp, (const struct sockaddr *)&server.addr);
    if (rc == 0) rc = uv_udp_recv_start(&u->udp, on_alloc, on_udp_recv);
  }
  if (rc != 0) {
    *out_err = gh_asprintf("updating %s at %s: %s", fqdn, server.text, uv_strerror(rc));
    update_close(u);
    return rc;
  }
  /* The first attempt starts from the loop: the callback never runs
   * before this function has returned. */
  uv_timer_start(&u->timer, on_first, 0, 0);
  *out = u;
  return 0;
}

void acme__dnsupdate_cancel(acme_dnsupdate_t *u) {
  if (u == NULL || u->done) return;
  update_close(u);
}
