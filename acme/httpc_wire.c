/* httpc_wire.c: the bytes of the outbound HTTP client: absolute URLs,
 * the request head, and the response parser's callbacks with their limits
 * (ACME_HTTPC_MAX_HEAD for the head and trailers, max_body for the body).
 * Wire data is hostile: every callback bounds what it stores. */
#include <arpa/inet.h>
#include <stdio.h>
#include <strings.h>

#include "acme/httpc_internal.h"

#define MAX_HOST_LEN 253

void acme__httpc_reset_response(httpc_req_t *req) {
  for (size_t i = 0; i < req->num_headers; i++) {
    gh_free((char *)req->headers[i].name);
    gh_free((char *)req->headers[i].value);
  }
  req->num_headers = 0;
  httpc_buf_clear(&req->field);
  httpc_buf_clear(&req->value);
  httpc_buf_clear(&req->body);
  gh_free(req->parse_msg);
  req->parse_msg = NULL;
  req->status = 0;
  req->head_bytes = 0;
  req->headers_done = req->msg_done = req->got_byte = req->parse_err = 0;
}

/* ---- the response parser ---- */

static httpc_req_t *parser_req(llhttp_t *p) { return ((httpc_conn_t *)p->data)->req; }

static int head_add(httpc_req_t *req, size_t len) {
  req->head_bytes += len;
  if (req->head_bytes <= ACME_HTTPC_MAX_HEAD) return 0;
  req->parse_err = UV_EMSGSIZE;
  req->parse_msg = gh_asprintf("response head from %s is over %u bytes", req->conn->peer,
                               ACME_HTTPC_MAX_HEAD);
  return -1;
}

static int on_status(llhttp_t *p, const char *at, size_t len) {
  return head_add(parser_req(p), len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  httpc_req_t *req = parser_req(p);
  if (head_add(req, len) != 0) return -1;
  if (!req->headers_done) httpc_buf_add(&req->field, at, len); /* trailers are dropped */
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  httpc_req_t *req = parser_req(p);
  if (head_add(req, len) != 0) return -1;
  if (!req->headers_done) httpc_buf_add(&req->value, at, len);
  return 0;
}

static int on_header_value_complete(llhttp_t *p) {
  httpc_req_t *req = parser_req(p);
  if (head_add(req, 4) != 0) return -1; /* ": " and CRLF */
  if (!req->headers_done) {
    size_t vlen = req->value.len;
    const char *v = req->value.ptr;
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) vlen--;
    if (req->num_headers == req->cap_headers) {
      req->cap_headers = req->cap_headers ? req->cap_headers * 2 : 16;
      req->headers = gh_realloc(req->headers, req->cap_headers * sizeof(*req->headers));
    }
    acme_httpc_header_t *h = &req->headers[req->num_headers++];
    h->name = gh_strndup(req->field.ptr ? req->field.ptr : "", req->field.len);
    h->value = gh_strndup(req->value.ptr ? req->value.ptr : "", vlen);
  }
  httpc_buf_clear(&req->field);
  httpc_buf_clear(&req->value);
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  httpc_req_t *req = parser_req(p);
  req->status = p->status_code;
  req->headers_done = 1;
  if (req->status / 100 == 1) return 0;
  if ((p->flags & F_CONTENT_LENGTH) && p->content_length > req->max_body && !req->head_only &&
      req->status != 204 && req->status != 304) {
    req->parse_err = UV_EMSGSIZE;
    req->parse_msg = gh_asprintf("response body from %s is %llu bytes, over the limit of %zu",
                                 req->conn->peer, (unsigned long long)p->content_length,
                                 req->max_body);
    return -1;
  }
  return req->head_only ? 1 : 0; /* a HEAD response has no body */
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  httpc_req_t *req = parser_req(p);
  if (req->body.len + len > req->max_body) {
    req->parse_err = UV_EMSGSIZE;
    req->parse_msg = gh_asprintf("response body from %s is over the limit of %zu bytes",
                                 req->conn->peer, req->max_body);
    return -1;
  }
  httpc_buf_add(&req->body, at, len);
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  httpc_req_t *req = parser_req(p);
  if (req->status / 100 == 1 && req->status != 101) {
    /* An interim response (103 Early Hints): the real one follows. */
    size_t head = req->head_bytes;
    acme__httpc_reset_response(req);
    req->got_byte = 1;
    req->head_bytes = head;
    return 0;
  }
  req->msg_done = 1;
  return HPE_PAUSED;
}

const llhttp_settings_t acme__httpc_parser_settings = {
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- building a request ---- */

static int is_tchar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_token(const char *s) {
  if (*s == '\0') return 0;
  for (; *s; s++) {
    if (!is_tchar((unsigned char)*s)) return 0;
  }
  return 1;
}

static int is_field_value(const char *s) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c < 0x20 && c != '\t') || c == 0x7f) return 0;
  }
  return 1;
}

/* url_parse splits an absolute http(s) URL. Accepted: scheme "http" or
 * "https" (any case), a host name of letters, digits, '-', '.', '_' or a
 * bracketed IPv6 literal, an optional port 1-65535, and a path and query
 * of visible ASCII; no user info. The fragment is dropped. */
static int url_parse(httpc_req_t *req, char **out_authority, char **out_target, const char *url) {
  size_t n;
  if (strncasecmp(url, "https://", 8) == 0) {
    req->tls = 1;
    n = 8;
  } else if (strncasecmp(url, "http://", 7) == 0) {
    n = 7;
  } else {
    return -1;
  }
  const char *auth = url + n;
  size_t auth_len = strcspn(auth, "/?#");
  const char *host = auth, *port = NULL;
  size_t host_len;
  if (auth_len > 0 && auth[0] == '[') {
    const char *close = memchr(auth, ']', auth_len);
    if (close == NULL) return -1;
    host = auth + 1;
    host_len = (size_t)(close - host);
    const char *rest = close + 1;
    if (rest < auth + auth_len) {
      if (*rest != ':') return -1;
      port = rest + 1;
    }
    for (size_t i = 0; i < host_len; i++) {
      if (!strchr("0123456789abcdefABCDEF:.", host[i])) return -1;
    }
  } else {
    const char *colon = memchr(auth, ':', auth_len);
    host_len = colon ? (size_t)(colon - auth) : auth_len;
    if (colon) port = colon + 1;
    for (size_t i = 0; i < host_len; i++) {
      char c = host[i];
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_'))
        return -1;
    }
  }
  if (host_len == 0 || host_len > MAX_HOST_LEN) return -1;
  unsigned long port_num = req->tls ? 443 : 80;
  if (port != NULL) {
    size_t plen = (size_t)(auth + auth_len - port);
    if (plen == 0 || plen > 5) return -1;
    port_num = 0;
    for (size_t i = 0; i < plen; i++) {
      if (port[i] < '0' || port[i] > '9') return -1;
      port_num = port_num * 10 + (unsigned long)(port[i] - '0');
    }
    if (port_num == 0 || port_num > 65535) return -1;
  }
  const char *target = auth + auth_len;
  size_t target_len = strcspn(target, "#");
  for (size_t i = 0; i < target_len; i++) {
    unsigned char c = (unsigned char)target[i];
    if (c <= 0x20 || c >= 0x7f) return -1;
  }
  req->host = gh_strndup(host, host_len);
  for (char *p = req->host; *p; p++) {
    if (*p >= 'A' && *p <= 'Z') *p = (char)(*p + 32);
  }
  unsigned char tmp[sizeof(struct in6_addr)];
  req->host_is_ip =
      inet_pton(AF_INET, req->host, tmp) == 1 || inet_pton(AF_INET6, req->host, tmp) == 1;
  int v6 = strchr(req->host, ':') != NULL;
  if ((host != auth) != v6 || (v6 && !req->host_is_ip)) return -1; /* [IPv6] only */
  snprintf(req->port_str, sizeof(req->port_str), "%lu", port_num);
  req->key = gh_asprintf("%s://%s%s%s:%lu", req->tls ? "https" : "http", v6 ? "[" : "", req->host,
                         v6 ? "]" : "", port_num);
  char port_part[8] = "";
  if (port_num != (req->tls ? 443u : 80u)) snprintf(port_part, sizeof(port_part), ":%lu", port_num);
  *out_authority = gh_asprintf("%s%s%s%s", v6 ? "[" : "", req->host, v6 ? "]" : "", port_part);
  *out_target = gh_asprintf("%s%.*s", target_len == 0 || target[0] == '?' ? "/" : "",
                            (int)target_len, target);
  return 0;
}

/* build_wire serializes the request line, headers and body. */
static int name_is(const char *name, gh_str_t want) {
  return gh_str_ieq((gh_str_t){name, strlen(name)}, want);
}

static int build_wire(httpc_req_t *req, const acme_httpc_req_t *r, const char *authority,
                      const char *target) {
  httpc_buf_t w = {0};
  char *line = gh_asprintf("%s %s HTTP/1.1\r\nHost: %s\r\n", req->method, target, authority);
  httpc_buf_add(&w, line, strlen(line));
  gh_free(line);
  int has_ua = 0;
  for (size_t i = 0; i < r->num_headers; i++) {
    const acme_httpc_header_t *h = &r->headers[i];
    if (h->name == NULL || h->value == NULL || !is_token(h->name) || !is_field_value(h->value) ||
        name_is(h->name, GH_STR("Host")) || name_is(h->name, GH_STR("Content-Length")) ||
        name_is(h->name, GH_STR("Transfer-Encoding"))) {
      httpc_buf_clear(&w);
      return UV_EINVAL;
    }
    has_ua |= name_is(h->name, GH_STR("User-Agent"));
    httpc_buf_add(&w, h->name, strlen(h->name));
    httpc_buf_add(&w, ": ", 2);
    httpc_buf_add(&w, h->value, strlen(h->value));
    httpc_buf_add(&w, "\r\n", 2);
  }
  /* RFC 8555 6.1: ACME clients must send a User-Agent. */
  if (!has_ua) httpc_buf_add(&w, "User-Agent: gatehouse-acme\r\n", 28);
  if (r->body_len > 0 || strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0) {
    char cl[48];
    int n = snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", r->body_len);
    httpc_buf_add(&w, cl, (size_t)n);
  }
  httpc_buf_add(&w, "\r\n", 2);
  if (r->body_len > 0) httpc_buf_add(&w, r->body, r->body_len);
  req->wire = w.ptr;
  req->wire_len = w.len;
  return 0;
}

int acme__httpc_prepare(httpc_req_t *req, const acme_httpc_req_t *r) {
  if (!is_token(r->method)) return UV_EINVAL;
  char *authority = NULL, *target = NULL;
  int err = url_parse(req, &authority, &target, r->url) != 0 ? UV_EINVAL : 0;
  if (err == 0) err = build_wire(req, r, authority, target);
  gh_free(authority);
  gh_free(target);
  return err;
}

/* ---- responses ---- */

const char *acme_httpc_header_next(const acme_httpc_resp_t *resp, const char *name, size_t *pos) {
  gh_str_t want = {name, strlen(name)};
  for (size_t i = *pos; i < resp->num_headers; i++) {
    const acme_httpc_header_t *h = &resp->headers[i];
    if (name_is(h->name, want)) {
      *pos = i + 1;
      return h->value;
    }
  }
  *pos = resp->num_headers;
  return NULL;
}

const char *acme_httpc_header(const acme_httpc_resp_t *resp, const char *name) {
  size_t pos = 0;
  return acme_httpc_header_next(resp, name, &pos);
}
