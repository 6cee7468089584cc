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
#include "acme/dnsx.h"
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
  acme_dnsx_t *x;
  char server[64];
  char *zone, *key_name, *fqdn, *value;
  conf_tsig_alg_t alg;
  uint8_t *secret;
  size_t secret_len;
  int add;
  uint16_t id;
  uint8_t req_mac[ACME_TSIG_MAC_MAX];
  size_t req_mac_len;
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

static acme_tsig_key_t update_key(const acme_dnsupdate_t *u) {
  acme_tsig_key_t key = {u->key_name, u->alg, u->secret, u->secret_len};
  return key;
}

/* Each attempt is signed afresh: a new id, the time now. */
static int update_build(void *arg, uint8_t *out, size_t cap, size_t *out_len) {
  acme_dnsupdate_t *u = arg;
  acme_tsig_key_t key = update_key(u);
  RAND_bytes((uint8_t *)&u->id, sizeof(u->id));
  return acme__dnsupdate_build(out, cap, out_len, u->req_mac, &u->req_mac_len, u->id, &key,
                               (uint64_t)time(NULL), u->zone, u->add, u->fqdn, u->value);
}

static acme_dnsx_judgement_t update_judge(void *arg, const uint8_t *msg, size_t len) {
  acme_dnsupdate_t *u = arg;
  acme_tsig_key_t key = update_key(u);
  acme_dnsupdate_reply_t r;
  switch (acme__dnsupdate_parse(&r, msg, len, u->id, &key, u->req_mac, u->req_mac_len,
                                (uint64_t)time(NULL))) {
    case ACME_DNS_ANSWER: return ACME_DNSX_TAKE;
    case ACME_DNS_MISMATCH: return ACME_DNSX_IGNORE;
    case ACME_DNS_TRUNCATED: return ACME_DNSX_TCP;
    default: return ACME_DNSX_BAD;
  }
}

static void update_done(void *arg, int status, const uint8_t *msg, size_t len, const char *why) {
  acme_dnsupdate_t *u = arg;
  char *text;
  if (status == 0) {
    acme_tsig_key_t key = update_key(u);
    acme_dnsupdate_reply_t r;
    acme__dnsupdate_parse(&r, msg, len, u->id, &key, u->req_mac, u->req_mac_len,
                          (uint64_t)time(NULL));
    text = acme__dnsupdate_why(&r, u->server, u->zone, u->key_name, u->fqdn);
    if (text != NULL) status = UV_EPROTO;
  } else if (status == UV_EINVAL) {
    text = gh_asprintf("updating %s at %s (zone %s, key %s): cannot build the update (is the "
                       "name in the zone?)", u->fqdn, u->server, u->zone, u->key_name);
  } else {
    text = gh_asprintf("updating %s at %s (zone %s, key %s): %s", u->fqdn, u->server, u->zone,
                       u->key_name, why);
  }
  u->cb(u->arg, status, text);
  gh_free(text);
  update_free(u);
}

static const acme_dnsx_ops_t update_ops = {update_build, update_judge, update_done};

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
  snprintf(u->server, sizeof(u->server), "%s", server.text);
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
  int rc = acme__dnsx_start(&u->x, loop, &server, MAX_ATTEMPTS, ATTEMPT_TIMEOUT_MS, &update_ops, u);
  if (rc != 0) {
    *out_err = gh_asprintf("updating %s at %s: %s", fqdn, server.text, uv_strerror(rc));
    update_free(u);
    return rc;
  }
  *out = u;
  return 0;
}

void acme__dnsupdate_cancel(acme_dnsupdate_t *u) {
  if (u == NULL) return;
  acme__dnsx_cancel(u->x);
  update_free(u);
}
