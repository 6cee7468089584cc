/* uph1.c: HTTP/1.1 toward the upstream: the request head as we write it,
 * and the response as we read it.
 *
 * llhttp parses response heads only: on_headers_complete pauses it, and
 * the body's framing is decided here from the parser's state (status,
 * request method, Transfer-Encoding, Content-Length) and decoded here
 * (a length countdown, chunked.c, or until the close), so a peer's
 * headers never decide what we forward as framing. The parser is reset
 * for every head. */
#include <stdio.h>

#include "common/log.h"
#include "proxy/upstream.h"

enum { MAX_REASON = 256, MAX_RESP_HEAD = 64 * 1024, MAX_RESP_FIELDS = 256 };

/* ---- the request head ---- */

/* forwarded_field sorts a request field that says where the request came
 * from: 1 X-Forwarded-For, 2 -Proto, 3 -Host, 4 Forwarded (RFC 7239); 0
 * for any other. */
static int forwarded_field(gh_str_t name) {
  if (gh_str_ieq(name, GH_STR("x-forwarded-for"))) return 1;
  if (gh_str_ieq(name, GH_STR("x-forwarded-proto"))) return 2;
  if (gh_str_ieq(name, GH_STR("x-forwarded-host"))) return 3;
  if (gh_str_ieq(name, GH_STR("forwarded"))) return 4;
  return 0;
}

/* A client in trusted_proxies (a balancer of ours) has its X-Forwarded-For
 * extended with its own address, its X-Forwarded-Proto/-Host and Forwarded
 * kept; from anyone else those fields are dropped and ours alone say where
 * the request came from, so that a client cannot forge its address. The
 * client_auth fields are dropped from everyone, whatever the site, and
 * written by us from a verified certificate only. */
void px_uph1_build_head(px_exchange_t *ex, gh_str_t host, gh_str_t target) {
  const px_hdrs_t *hs = &ex->req;
  px_buf_t *b = &ex->up_head;
  const char *method = llhttp_method_name((llhttp_method_t)ex->method);
  px_buf_append(b, method, strlen(method));
  px_buf_append(b, " ", 1);
  px_buf_append(b, target.ptr, target.len);
  px_buf_append(b, " HTTP/1.1\r\nHost: ", 17);
  px_buf_append(b, host.ptr, host.len);
  px_buf_append(b, "\r\n", 2);
  gh_str_t fwd[4] = {{NULL, 0}, {NULL, 0}, {NULL, 0}, {NULL, 0}}; /* the kept ones, by kind */
  px_buf_t xff = {0}; /* every kept X-Forwarded-For line, in order, as one list */
  for (size_t i = 0; i < hs->num; i++) {
    gh_str_t name = px_hdr_name(hs, i);
    if (gh_str_ieq(name, GH_STR("host"))) continue;
    int kind = forwarded_field(name);
    if (kind == 4 && ex->trusted_proxy) {
      /* Forwarded goes through as it came, each field line kept. */
    } else if (kind == 1) {
      gh_str_t v = px_hdr_value(hs, i);
      if (ex->trusted_proxy && v.len) {
        px_buf_append(&xff, v.ptr, v.len);
        px_buf_append(&xff, ", ", 2);
      }
      continue;
    } else if (kind != 0) {
      if (ex->trusted_proxy && fwd[kind - 1].ptr == NULL) fwd[kind - 1] = px_hdr_value(hs, i);
      continue;
    }
    if (px_hop_by_hop(hs, name) || px_gen_ccert_field(ex->gen, name)) continue;
    gh_str_t value = px_hdr_value(hs, i);
    px_buf_append(b, name.ptr, name.len);
    px_buf_append(b, ": ", 2);
    px_buf_append(b, value.ptr, value.len);
    px_buf_append(b, "\r\n", 2);
  }
  px_buf_append(b, "X-Forwarded-For: ", 17);
  px_buf_append(b, xff.p, xff.len);
  px_buf_free(&xff);
  px_buf_append(b, ex->client_ip, strlen(ex->client_ip));
  gh_str_t proto = fwd[1].len ? fwd[1] : ex->is_tls ? GH_STR("https") : GH_STR("http");
  px_buf_append(b, "\r\nX-Forwarded-Proto: ", 21);
  px_buf_append(b, proto.ptr, proto.len);
  gh_str_t xfh = fwd[2].len ? fwd[2] : host;
  px_buf_append(b, "\r\nX-Forwarded-Host: ", 20);
  px_buf_append(b, xfh.ptr, xfh.len);
  px_buf_append(b, "\r\n", 2);
  /* The client certificate, verified for this very site (the stream
   * answered 421 otherwise, px_ccert_allows). */
  const px_ccert_peer_t *peer = ex->peer;
  if (ex->site && ex->site->client_auth && peer && peer->subject) {
    const conf_client_auth_t *ca = &ex->site->conf->client_auth;
    px_buf_appendf(b, "%s: %s\r\n%s: %s\r\n", ca->subject_header, peer->subject,
                   ca->fingerprint_header, peer->fingerprint);
  }
  /* The framing is the one we decoded, written by us (issue 11). */
  if (ex->req_framing == PX_BODY_CHUNKED) {
    px_buf_append(b, "Transfer-Encoding: chunked\r\n", 28);
  } else if (ex->req_framing == PX_BODY_LENGTH) {
    char num[24];
    px_buf_append(b, "Content-Length: ", 16);
    px_buf_append(b, num, px_u64_text(num, ex->req_len));
    px_buf_append(b, "\r\n", 2);
  }
  gh_str_t up = ex->upgrade ? px_hdrs_get(hs, GH_STR("upgrade")) : (gh_str_t){NULL, 0};
  if (up.ptr) {
    px_buf_append(b, "Connection: upgrade\r\nUpgrade: ", 30);
    px_buf_append(b, up.ptr, up.len);
    px_buf_append(b, "\r\n", 2);
  }
  px_buf_append(b, "\r\n", 2);
}

int px_uph1_last_chunk(px_exchange_t *ex) {
  px_buf_t b = {0};
  px_buf_append(&b, "0\r\n", 3);
  const px_hdrs_t *tr = &ex->req_tr;
  for (size_t i = 0; i < tr->num; i++) {
    gh_str_t n = px_hdr_name(tr, i), v = px_hdr_value(tr, i);
    if (px_hop_by_hop(tr, n)) continue;
    px_buf_append(&b, n.ptr, n.len);
    px_buf_append(&b, ": ", 2);
    px_buf_append(&b, v.ptr, v.len);
    px_buf_append(&b, "\r\n", 2);
  }
  px_buf_append(&b, "\r\n", 2);
  int full = px_ex_req_body(ex, b.p, b.len);
  px_buf_free(&b);
  return full;
}

/* ---- the response head (llhttp callbacks) ---- */

static px_exchange_t *ex_of(llhttp_t *p) { return ((px_upconn_t *)p->data)->ex; }

static int r_message_begin(llhttp_t *p) {
  px_exchange_t *ex = ex_of(p);
  px_hdrs_reset(&ex->resp);
  ex->status_len = 0;
  return 0;
}

static int r_status(llhttp_t *p, const char *at, size_t len) {
  px_exchange_t *ex = ex_of(p);
  if (ex->status_len + len > MAX_REASON) return -1;
  /* RFC 9112 4: reason-phrase = *( HTAB / SP / VCHAR / obs-text ). llhttp
   * lets other control characters (NUL included) through; the reason is
   * relayed as it is, so a broken one is a bad response. */
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)at[i];
    if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return -1;
  }
  px_hdrs_raw(&ex->resp, at, len);
  ex->status_len += len;
  return 0;
}

static int r_header_field(llhttp_t *p, const char *at, size_t len) {
  px_hdrs_t *hs = &ex_of(p)->resp;
  if (hs->len + len > MAX_RESP_HEAD || hs->num > MAX_RESP_FIELDS) return -1;
  /* RFC 9110 5.1: field-name = token. llhttp's lenient token takes a space
   * too; the name is relayed as it is (in HTTP/2 a malformed response,
   * RFC 9113 8.2.1), so a broken one is a bad response. */
  if (memchr(at, ' ', len)) return -1;
  px_hdrs_name(hs, at, len);
  return 0;
}

static int r_header_field_complete(llhttp_t *p) {
  px_hdrs_t *hs = &ex_of(p)->resp;
  /* A field name is never empty (RFC 9110 5.1); llhttp lets ": x" through,
   * and its value would be relayed under no name. */
  if (hs->num == 0 || hs->in_value || hs->h[hs->num - 1].name_len == 0) return -1;
  hs->in_value = 1;
  return 0;
}

static int r_header_value(llhttp_t *p, const char *at, size_t len) {
  px_hdrs_t *hs = &ex_of(p)->resp;
  if (hs->len + len > MAX_RESP_HEAD) return -1;
  px_hdrs_value(hs, at, len);
  return 0;
}

/* llhttp leaves a value's trailing whitespace in it; relayed, it would
 * make an HTTP/2 response malformed (RFC 9113 8.2.1). */
static int r_header_value_complete(llhttp_t *p) {
  px_hdrs_trim_value(&ex_of(p)->resp);
  return 0;
}

static int r_headers_complete(llhttp_t *p) {
  ex_of(p)->resp_status = p->status_code;
  return HPE_PAUSED; /* the body is ours (uph1_next) */
}

void px_uph1_init_settings(px_worker_t *w) {
  llhttp_settings_t *s = &w->resp_settings;
  llhttp_settings_init(s);
  s->on_message_begin = r_message_begin;
  s->on_status = r_status;
  s->on_header_field = r_header_field;
  s->on_header_field_complete = r_header_field_complete;
  s->on_header_value = r_header_value;
  s->on_header_value_complete = r_header_value_complete;
  s->on_headers_complete = r_headers_complete;
}

void px_uph1_begin(px_upconn_t *u) {
  llhttp_init(&u->parser, HTTP_RESPONSE, &u->w->resp_settings);
  u->parser.data = u;
  u->phase = PX_UPH1_HEAD;
  u->framing = PX_BODY_NONE;
  u->left = 0;
}

/* names_protocol reports whether a 101's head names the new protocol:
 * RFC 9110 7.8 requires an Upgrade, and a client that does not see one
 * takes the new protocol's bytes for the next HTTP response. The first
 * Upgrade field is the one h1.c relays, so it is the one that must not
 * be empty. */
static int names_protocol(const px_hdrs_t *resp) {
  return px_hdrs_get(resp, GH_STR("upgrade")).len > 0;
}

/* head_done decides the response's framing once its head is parsed
 * (RFC 9112 6.3), and what the stream announces. */
static px_up_event_t head_done(px_upconn_t *u, px_exchange_t *ex) {
  llhttp_t *p = &u->parser;
  int status = p->status_code;
  if (p->http_major != 1) return PX_UP_BAD;
  if (status < 100 || status > 599) return PX_UP_BAD; /* RFC 9110 15; llhttp takes any 3 digits */
  if (status == 101) return names_protocol(&ex->resp) ? PX_UP_UPGRADE : PX_UP_BAD;
  if (status >= 100 && status < 200) {
    llhttp_reset(p); /* another head follows */
    return PX_UP_INTERIM;
  }
  px_hdrs_reset(&ex->resp_tr);
  int chunked = (p->flags & F_CHUNKED) != 0;
  int has_te = (p->flags & F_TRANSFER_ENCODING) != 0;
  int has_length = (p->flags & F_CONTENT_LENGTH) != 0;
  /* What the head announces (for HEAD and 304 it describes another body). */
  if (chunked || has_te) {
    ex->resp_framing = chunked ? PX_BODY_CHUNKED : PX_BODY_CLOSE;
  } else if (has_length) {
    ex->resp_framing = PX_BODY_LENGTH;
    ex->resp_len = p->content_length;
  } else {
    ex->resp_framing = PX_BODY_CLOSE;
  }
  if (ex->method == HTTP_HEAD || status == 204 || status == 304) {
    /* No body follows; pass on only what the head itself announced. */
    if (status == 204 || ex->resp_framing == PX_BODY_CLOSE) ex->resp_framing = PX_BODY_NONE;
    u->framing = PX_BODY_NONE;
  } else {
    u->framing = ex->resp_framing;
    u->left = ex->resp_len;
    if (u->framing == PX_BODY_CHUNKED) px_chunked_init(&u->ck);
  }
  u->phase = PX_UPH1_BODY;
  return PX_UP_HEAD;
}

px_up_event_t px_uph1_next(px_upconn_t *u, px_exchange_t *ex, const char **pp, size_t *plen,
                           gh_str_t *out_data) {
  const char *p = *pp;
  size_t len = *plen;
  switch (u->phase) {
    case PX_UPH1_HEAD: {
      if (len == 0) return PX_UP_NEED;
      llhttp_errno_t e = llhttp_execute(&u->parser, p, len);
      if (e == HPE_OK) {
        *pp = p + len, *plen = 0;
        return PX_UP_NEED;
      }
      if (e != HPE_PAUSED) return PX_UP_BAD;
      const char *end = llhttp_get_error_pos(&u->parser);
      *plen = len - (size_t)(end - p);
      *pp = end;
      return head_done(u, ex);
    }
    case PX_UPH1_BODY:
      break;
    default:
      /* Bytes after the end of the response: the caller sees them left. */
      return len ? PX_UP_BAD : PX_UP_NEED;
  }
  switch (u->framing) {
    case PX_BODY_NONE:
      u->phase = PX_UPH1_DONE;
      return PX_UP_END;
    case PX_BODY_LENGTH: {
      if (u->left == 0) {
        u->phase = PX_UPH1_DONE;
        return PX_UP_END;
      }
      if (len == 0) return PX_UP_NEED;
      size_t n = (uint64_t)len < u->left ? len : (size_t)u->left;
      u->left -= n;
      *out_data = (gh_str_t){p, n};
      *pp = p + n, *plen = len - n;
      return PX_UP_DATA;
    }
    case PX_BODY_CLOSE:
      if (len == 0) return PX_UP_NEED;
      *out_data = (gh_str_t){p, len};
      *pp = p + len, *plen = 0;
      return PX_UP_DATA;
    case PX_BODY_CHUNKED:
      for (;;) {
        uint64_t announced;
        px_ck_event_t ev = px_chunked_next(&u->ck, &ex->resp_tr, MAX_RESP_HEAD, pp, plen, out_data,
                                           &announced);
        switch (ev) {
          case PX_CK_NEED: return PX_UP_NEED;
          case PX_CK_CHUNK: continue;
          case PX_CK_DATA: return PX_UP_DATA;
          case PX_CK_DONE:
            u->phase = PX_UPH1_DONE;
            return PX_UP_END;
          default: return PX_UP_BAD;
        }
      }
  }
  return PX_UP_BAD;
}

int px_uph1_eof_ends(const px_upconn_t *u) {
  return u->phase == PX_UPH1_BODY && u->framing == PX_BODY_CLOSE;
}
