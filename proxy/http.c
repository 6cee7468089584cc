/* http.c: the downstream HTTP/1.1 side of a connection.
 *
 * Requests are parsed with llhttp in strict mode, plus a small scanner over
 * the raw request head for what llhttp 8 lets through: bare LF line ends
 * and obs-fold continuation lines (both 400), and the head size (431).
 * Accepted input: origin-form and absolute-form targets, HTTP/1.0 and 1.1.
 *
 * Bodies are re-framed, never buffered whole: a Content-Length body is
 * forwarded as is, a chunked one is re-chunked from llhttp's decoded data
 * (so the upstream always sees clean framing, trailers included). Once a
 * request is complete the parser is paused; pipelined bytes wait in
 * conn->pending until the response has been sent. */
#include <stdio.h>

#include "common/log.h"
#include "proxy/internal.h"

enum { SC_START, SC_START_CR, SC_LINE, SC_CR, SC_LF, SC_LFCR, SC_DONE };

static const char *reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 421: return "Misdirected Request";
    case 431: return "Request Header Fields Too Large";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
  }
}

static const conf_t *conf_of(px_conn_t *c) { return c->w->gen->conf; }

/* ---- local responses ---- */

/* respond sends a complete response generated here (errors, redirects).
 * |keep| allows keep-alive when the request was read completely. */
static void respond(px_conn_t *c, int status, const char *extra, const char *body, int keep) {
  char head[1024];
  size_t body_len = body ? strlen(body) : 0;
  int n = snprintf(head, sizeof(head),
                   "HTTP/1.1 %d %s\r\n%sContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n",
                   status, reason(status), extra ? extra : "", body_len,
                   keep ? "" : "Connection: close\r\n");
  if (n < 0 || (size_t)n >= sizeof(head)) n = 0;
  px_conn_send(c, head, (size_t)n);
  if (body_len && c->ex && c->ex->method != HTTP_HEAD) px_conn_send(c, body, body_len);
  if (c->ex) {
    c->ex->status = status;
    c->ex->resp_bytes = body_len;
  }
}

static void finish_exchange(px_conn_t *c);

void px_http_error(px_conn_t *c, int status, const char *why) {
  if (c->state == PX_CONN_CLOSING) return;
  GH_DEBUG("http", "%s: %d: %s", c->client_ip, status, why);
  char body[64];
  snprintf(body, sizeof(body), "%d %s\n", status, reason(status));
  c->close_after = 1;
  if (c->ex == NULL) c->ex = px_ex_new(c);
  respond(c, status, NULL, body, 0);
  finish_exchange(c);
}

/* ---- head scanner ---- */

/* scan_head checks the raw bytes of a request head; returns the number of
 * bytes that belong to the head (all of |len| while it is incomplete), or
 * -1 after sending an error. */
static int scan_head(px_conn_t *c, const char *p, size_t len) {
  size_t max = conf_of(c)->limits.max_header_bytes;
  for (size_t i = 0; i < len; i++) {
    char ch = p[i];
    switch (c->scan_state) {
      case SC_START:
        if (ch == '\r') { c->scan_state = SC_START_CR; continue; }
        if (ch == '\n') goto bare_lf;
        c->scan_state = SC_LINE;
        break;
      case SC_START_CR:
        if (ch != '\n') goto bare_cr;
        c->scan_state = SC_START;
        continue;
      case SC_LINE:
        if (ch == '\r') c->scan_state = SC_CR;
        else if (ch == '\n') goto bare_lf;
        break;
      case SC_CR:
        if (ch != '\n') goto bare_cr;
        c->scan_state = SC_LF;
        break;
      case SC_LF:
        if (ch == '\r') c->scan_state = SC_LFCR;
        else if (ch == ' ' || ch == '\t') {
          px_http_error(c, 400, "obsolete line folding in header");
          return -1;
        } else if (ch == '\n') goto bare_lf;
        else c->scan_state = SC_LINE;
        break;
      case SC_LFCR:
        if (ch != '\n') goto bare_cr;
        c->scan_state = SC_DONE;
        c->head_bytes++;
        return (int)(i + 1);
      default:
        return (int)i;
    }
    if (++c->head_bytes > max) {
      px_http_error(c, 431, "request head too large");
      return -1;
    }
  }
  return (int)len;
bare_lf:
  px_http_error(c, 400, "bare LF in request head");
  return -1;
bare_cr:
  px_http_error(c, 400, "bare CR in request head");
  return -1;
}

/* ---- llhttp callbacks (request) ---- */

static px_conn_t *conn_of(llhttp_t *p) { return p->data; }

/* fail records a rejection found inside a parser callback; feed() answers
 * it once llhttp_execute has returned. */
static int fail(px_conn_t *c, int status, const char *why) {
  c->ex->reject_status = status;
  GH_DEBUG("http", "%s: %d: %s", c->client_ip, status, why);
  return -1;
}

static int on_message_begin(llhttp_t *p) {
  px_conn_t *c = conn_of(p);
  c->ex = px_ex_new(c);
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  px_conn_t *c = conn_of(p);
  px_exchange_t *ex = c->ex;
  if (ex->url_len + len > conf_of(c)->limits.max_uri_bytes)
    return fail(c, 414, "request target too long");
  px_hdrs_raw(&ex->req, at, len);
  ex->url_len += len;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  px_conn_t *c = conn_of(p);
  px_exchange_t *ex = c->ex;
  px_hdrs_t *hs = ex->in_req_trailers ? &ex->req_tr : &ex->req;
  size_t before = hs->num;
  px_hdrs_name(hs, at, len);
  if (hs->num != before && hs->num > conf_of(c)->limits.max_headers)
    return fail(c, 431, "too many header fields");
  return 0;
}

static int on_header_field_complete(llhttp_t *p) {
  px_exchange_t *ex = conn_of(p)->ex;
  (ex->in_req_trailers ? &ex->req_tr : &ex->req)->in_value = 1;
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  px_exchange_t *ex = conn_of(p)->ex;
  px_hdrs_value(ex->in_req_trailers ? &ex->req_tr : &ex->req, at, len);
  return 0;
}

static int is_tchar(unsigned char ch) {
  static const char extra[] = "!#$%&'*+-.^_`|~";
  return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch && strchr(extra, ch) != NULL);
}

static int valid_token(gh_str_t s) {
  if (s.len == 0) return 0;
  for (size_t i = 0; i < s.len; i++) {
    if (!is_tchar((unsigned char)s.ptr[i])) return 0;
  }
  return 1;
}

/* valid_host checks a Host value (RFC 9112 3.2): a reg-name or an IPv4
 * address, or an IPv6 literal in brackets, then an optional ":" and port
 * digits (at most 65535). */
static int valid_host(gh_str_t s) {
  if (s.len == 0 || s.len > 260) return 0;
  size_t i = 0;
  if (s.ptr[0] == '[') {
    for (i = 1; i < s.len && s.ptr[i] != ']'; i++) {
      unsigned char ch = (unsigned char)s.ptr[i];
      if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F') ||
            ch == ':' || ch == '.'))
        return 0;
    }
    if (i == s.len || i == 1) return 0;
    i++;
  } else {
    for (; i < s.len && s.ptr[i] != ':'; i++) {
      unsigned char ch = (unsigned char)s.ptr[i];
      if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
            ch == '-' || ch == '.' || ch == '_'))
        return 0;
    }
    if (i == 0) return 0;
  }
  if (i == s.len) return 1;
  if (s.ptr[i] != ':') return 0;
  unsigned long port = 0;
  size_t digits = 0;
  for (i++; i < s.len; i++, digits++) {
    if (s.ptr[i] < '0' || s.ptr[i] > '9' || digits >= 5) return 0;
    port = port * 10 + (unsigned long)(s.ptr[i] - '0');
  }
  return port <= 65535;
}

/* in_list reports whether |name| appears in the comma-separated |list|. */
static int in_list(gh_str_t list, gh_str_t name) {
  size_t i = 0;
  while (i < list.len) {
    while (i < list.len && (list.ptr[i] == ' ' || list.ptr[i] == '\t' || list.ptr[i] == ','))
      i++;
    size_t start = i;
    while (i < list.len && list.ptr[i] != ',') i++;
    size_t end = i;
    while (end > start && (list.ptr[end - 1] == ' ' || list.ptr[end - 1] == '\t')) end--;
    if (gh_str_ieq((gh_str_t){list.ptr + start, end - start}, name)) return 1;
  }
  return 0;
}

/* px_http_hop_by_hop reports whether header |name| must not be forwarded:
 * the RFC 9110 connection-specific fields, and any named in Connection. */
int px_http_hop_by_hop(const px_hdrs_t *hs, gh_str_t name) {
  static const gh_str_t hop[] = {GH_STR("connection"), GH_STR("keep-alive"),
                                 GH_STR("proxy-connection"), GH_STR("te"),
                                 GH_STR("transfer-encoding"), GH_STR("upgrade")};
  for (size_t i = 0; i < GH_ARRAY_LEN(hop); i++) {
    if (gh_str_ieq(name, hop[i])) return 1;
  }
  for (size_t i = 0; i < hs->num; i++) {
    if (gh_str_ieq(px_hdr_name(hs, i), GH_STR("connection")) &&
        in_list(px_hdr_value(hs, i), name))
      return 1;
  }
  return 0;
}

/* handle_redirect answers a request on the plain-HTTP listener: ACME
 * HTTP-01 tokens (none yet: 404) and a 308 to https for everything else. */
static int handle_redirect(px_conn_t *c, gh_str_t host, gh_str_t target) {
  static const char acme_prefix[] = "/.well-known/acme-challenge/";
  px_exchange_t *ex = c->ex;
  ex->status = 0;
  if (target.len >= sizeof(acme_prefix) - 1 &&
      memcmp(target.ptr, acme_prefix, sizeof(acme_prefix) - 1) == 0) {
    /* HTTP-01 (RFC 8555 8.3): the token is the rest of the path. */
    const char *token = target.ptr + sizeof(acme_prefix) - 1;
    size_t token_len = target.len - (sizeof(acme_prefix) - 1);
    gh_free(ex->http01_answer);
    ex->http01_answer = token_len && ex->gen->challenges
                            ? acme_challenges_get_http01(ex->gen->challenges, token, token_len)
                            : NULL;
    ex->status = ex->http01_answer ? 200 : 404;
    if (ex->http01_answer) GH_INFO("acme", "%s: served an http-01 challenge", c->client_ip);
    return 0;
  }
  if (host.len == 0) return fail(c, 400, "missing Host");
  ex->status = 308;
  /* Drop any port from Host; the https listener's own port is appended. */
  size_t hl = host.len;
  if (host.ptr[0] == '[') {
    const char *end = memchr(host.ptr, ']', host.len);
    if (end) hl = (size_t)(end - host.ptr) + 1;
  } else {
    const char *colon = memchr(host.ptr, ':', host.len);
    if (colon) hl = (size_t)(colon - host.ptr);
  }
  ex->host = gh_strndup(host.ptr, hl);
  return 0;
}

static void build_upstream_head(px_conn_t *c, gh_str_t host, gh_str_t target) {
  px_exchange_t *ex = c->ex;
  const px_hdrs_t *hs = &ex->req;
  px_buf_t *b = &ex->up_head;
  const char *method = llhttp_method_name((llhttp_method_t)ex->method);
  px_buf_appendf(b, "%s ", method);
  px_buf_append(b, target.ptr, target.len);
  px_buf_append(b, " HTTP/1.1\r\nHost: ", 17);
  px_buf_append(b, host.ptr, host.len);
  px_buf_append(b, "\r\n", 2);
  gh_str_t xff = {NULL, 0};
  for (size_t i = 0; i < hs->num; i++) {
    gh_str_t name = px_hdr_name(hs, i);
    if (gh_str_ieq(name, GH_STR("host")) || gh_str_ieq(name, GH_STR("x-forwarded-proto")) ||
        gh_str_ieq(name, GH_STR("x-forwarded-host")))
      continue;
    if (gh_str_ieq(name, GH_STR("x-forwarded-for"))) {
      xff = px_hdr_value(hs, i);
      continue;
    }
    if (px_http_hop_by_hop(hs, name)) continue;
    gh_str_t value = px_hdr_value(hs, i);
    px_buf_append(b, name.ptr, name.len);
    px_buf_append(b, ": ", 2);
    px_buf_append(b, value.ptr, value.len);
    px_buf_append(b, "\r\n", 2);
  }
  px_buf_append(b, "X-Forwarded-For: ", 17);
  if (xff.len) {
    px_buf_append(b, xff.ptr, xff.len);
    px_buf_append(b, ", ", 2);
  }
  px_buf_appendf(b, "%s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Host: ", c->client_ip,
                 c->is_tls ? "https" : "http");
  px_buf_append(b, host.ptr, host.len);
  px_buf_append(b, "\r\n", 2);
  if (ex->req_chunked) px_buf_append(b, "Transfer-Encoding: chunked\r\n", 28);
  if (ex->upgrade) {
    for (size_t i = 0; i < hs->num; i++) {
      if (gh_str_ieq(px_hdr_name(hs, i), GH_STR("upgrade"))) {
        gh_str_t v = px_hdr_value(hs, i);
        px_buf_append(b, "Connection: upgrade\r\nUpgrade: ", 30);
        px_buf_append(b, v.ptr, v.len);
        px_buf_append(b, "\r\n", 2);
        break;
      }
    }
  }
  px_buf_append(b, "\r\n", 2);
}

static int on_headers_complete(llhttp_t *p) {
  px_conn_t *c = conn_of(p);
  px_exchange_t *ex = c->ex;
  px_hdrs_t *hs = &ex->req;
  ex->method = p->method;
  ex->method_known = 1;
  ex->http_minor = p->http_minor;
  ex->in_req_trailers = 1;
  c->scan_state = SC_DONE;
  px_conn_set_timer(c, 0);
  if (p->http_major != 1 || p->http_minor > 1) return fail(c, 505, "unsupported HTTP version");
  gh_str_t host = {NULL, 0};
  int num_host = 0, has_te = 0;
  for (size_t i = 0; i < hs->num; i++) {
    gh_str_t name = px_hdr_name(hs, i);
    if (!valid_token(name)) return fail(c, 400, "invalid header name");
    if (gh_str_ieq(name, GH_STR("host"))) {
      host = px_hdr_value(hs, i);
      num_host++;
    } else if (gh_str_ieq(name, GH_STR("transfer-encoding"))) {
      has_te = 1;
    }
  }
  /* RFC 9112 6.3: a request whose Transfer-Encoding does not end in
   * chunked has no reliable length; neither does one sent by HTTP/1.0. */
  if (has_te && (!(p->flags & F_CHUNKED) || p->http_minor == 0))
    return fail(c, 400, "Transfer-Encoding without final chunked");
  if (num_host > 1) return fail(c, 400, "more than one Host header");
  if (num_host == 0 && p->http_minor == 1) return fail(c, 400, "missing Host header");
  if (num_host && !valid_host(host)) return fail(c, 400, "invalid Host header");
  if (p->method == HTTP_CONNECT) return fail(c, 405, "CONNECT is not supported");

  gh_str_t target = {hs->buf, ex->url_len};
  /* Absolute-form (RFC 9112 3.2.2): the authority in the target wins. */
  if (target.len > 8 && (gh_str_ieq((gh_str_t){target.ptr, 7}, GH_STR("http://")) ||
                         gh_str_ieq((gh_str_t){target.ptr, 8}, GH_STR("https://")))) {
    const char *auth = memchr(target.ptr, '/', target.len) + 2;
    const char *end = target.ptr + target.len;
    const char *slash = memchr(auth, '/', (size_t)(end - auth));
    host = (gh_str_t){auth, (size_t)((slash ? slash : end) - auth)};
    if (!valid_host(host)) return fail(c, 400, "invalid authority in request target");
    target = slash ? (gh_str_t){slash, (size_t)(end - slash)} : GH_STR("/");
  } else if (!(target.len && (target.ptr[0] == '/' ||
                              (target.len == 1 && target.ptr[0] == '*' && p->method == HTTP_OPTIONS)))) {
    return fail(c, 400, "invalid request target");
  }

  if (!c->is_tls) return handle_redirect(c, host, target);

  /* Host without port, lower-case, for routing and the access log. */
  ex->site = px_gen_site(ex->gen, host.ptr, host.len);
  ex->host = gh_strndup(host.ptr ? host.ptr : "", host.len);
  if (ex->site == NULL) return fail(c, 421, "no site for this host");
  ex->group = px_site_route(ex->site, target.ptr, target.len);
  ex->req_chunked = (p->flags & F_CHUNKED) != 0;
  ex->upgrade = p->upgrade;
  build_upstream_head(c, host, target);
  c->state = PX_CONN_EXCHANGE;
  px_ex_start(ex);
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  px_conn_t *c = conn_of(p);
  px_exchange_t *ex = c->ex;
  if (c->close_deferred) return -1;
  if (!c->is_tls) return 0;
  if (ex->req_chunked) {
    char size[24];
    size_t n = px_chunk_head(size, len);
    px_ex_send_body(ex, size, n);
    px_ex_send_body(ex, at, len);
    px_ex_send_body(ex, "\r\n", 2);
  } else {
    px_ex_send_body(ex, at, len);
  }
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  px_conn_t *c = conn_of(p);
  px_exchange_t *ex = c->ex;
  if (c->close_deferred) return -1;
  ex->client_keepalive = llhttp_should_keep_alive(p);
  ex->req_done = 1;
  if (!c->is_tls) {
    /* Plain listener: answer now. */
    if (ex->status == 308) {
      char extra[600];
      const char *target = ex->req.buf;
      size_t tlen = ex->url_len;
      if (tlen > 400) tlen = 1, target = "/";
      snprintf(extra, sizeof(extra), "Location: https://%s%s%.*s\r\n", ex->host,
               ex->gen->https_port_suffix, (int)tlen, target);
      respond(c, 308, extra, "", ex->client_keepalive && !c->close_after);
    } else if (ex->status == 200) {
      respond(c, 200, NULL, ex->http01_answer, ex->client_keepalive && !c->close_after);
    } else {
      respond(c, 404, NULL, "404 Not Found\n", ex->client_keepalive && !c->close_after);
    }
    if (!ex->client_keepalive) c->close_after = 1;
    ex->local_done = 1;
    return HPE_PAUSED;
  }
  if (ex->req_chunked) {
    px_ex_send_body(ex, "0\r\n", 3);
    const px_hdrs_t *tr = &ex->req_tr;
    for (size_t i = 0; i < tr->num; i++) {
      gh_str_t n = px_hdr_name(tr, i), v = px_hdr_value(tr, i);
      px_ex_send_body(ex, n.ptr, n.len);
      px_ex_send_body(ex, ": ", 2);
      px_ex_send_body(ex, v.ptr, v.len);
      px_ex_send_body(ex, "\r\n", 2);
    }
    px_ex_send_body(ex, "\r\n", 2);
  }
  return HPE_PAUSED;
}

void px_http_init_settings(px_worker_t *w) {
  llhttp_settings_t *s = &w->req_settings;
  llhttp_settings_init(s);
  s->on_message_begin = on_message_begin;
  s->on_url = on_url;
  s->on_header_field = on_header_field;
  s->on_header_field_complete = on_header_field_complete;
  s->on_header_value = on_header_value;
  s->on_headers_complete = on_headers_complete;
  s->on_body = on_body;
  s->on_message_complete = on_message_complete;
}

/* ---- driving the parser ---- */

static void start_head(px_conn_t *c, uint64_t timeout_ms) {
  c->state = PX_CONN_HEAD;
  c->head_started = 0;
  c->head_bytes = 0;
  c->scan_state = SC_START;
  px_conn_set_timer(c, timeout_ms);
}

void px_http_conn_ready(px_conn_t *c) {
  llhttp_init(&c->parser, HTTP_REQUEST, &c->w->req_settings);
  c->parser.data = c;
  /* The first request must arrive within the header timeout. */
  start_head(c, conf_of(c)->timeouts.header_read_ms);
  c->head_started = 1;
}

/* feed runs the parser over |p| and returns how many bytes it consumed;
 * the rest waits until the current exchange is done. */
static size_t feed(px_conn_t *c, const char *p, size_t len) {
  if (c->state == PX_CONN_HEAD && c->scan_state != SC_DONE) {
    if (!c->head_started) {
      c->head_started = 1;
      px_conn_set_timer(c, conf_of(c)->timeouts.header_read_ms);
    }
    if (scan_head(c, p, len) < 0) return len;
  }
  c->in_parser = 1;
  llhttp_errno_t e = llhttp_execute(&c->parser, p, len);
  c->in_parser = 0;
  if (c->close_deferred) {
    px_conn_close(c);
    return len;
  }
  if (e == HPE_OK) return len;
  if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
    return (size_t)(llhttp_get_error_pos(&c->parser) - p);
  }
  if (c->state == PX_CONN_CLOSING) return len;
  /* A callback's refusal surfaces as HPE_USER or as HPE_CB_*, by callback. */
  if (c->ex && c->ex->reject_status) {
    px_http_error(c, c->ex->reject_status, "rejected");
  } else if (e == HPE_INVALID_VERSION) {
    px_http_error(c, 505, "unsupported HTTP version");
  } else {
    px_http_error(c, 400, llhttp_get_error_reason(&c->parser));
  }
  return len;
}

/* blocked reports whether the parser must not run now: a request is
 * complete and its response is not. */
static int blocked(px_conn_t *c) {
  llhttp_errno_t e = llhttp_get_errno(&c->parser);
  return e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE;
}

static void check_backpressure(px_conn_t *c) {
  if (c->state == PX_CONN_CLOSING) return;
  px_exchange_t *ex = c->ex;
  size_t limit = conf_of(c)->limits.write_queue_bytes;
  int congested = c->pending.len > limit ||
                  (ex && (ex->up_out.len > limit ||
                          (ex->up && px_upconn_write_queue(ex->up) > limit)));
  if (congested) px_conn_read_stop(c);
}

static void reset_for_next(px_conn_t *c);

/* run parses whatever is pending and then |data|, in order, for as long as
 * the connection can take requests; what it cannot take yet is kept in
 * conn->pending. Exchanges that finish meanwhile are closed out here, never
 * from inside llhttp_execute. */
static void run(px_conn_t *c, const char *data, size_t len) {
  if (c->pending.len && len) {
    px_buf_append(&c->pending, data, len);
    len = 0;
  }
  for (;;) {
    if (c->state == PX_CONN_CLOSING) return;
    if (c->finish_deferred) {
      c->finish_deferred = 0;
      reset_for_next(c);
      continue;
    }
    if (c->ex && c->ex->local_done) {
      c->ex->local_done = 0;
      reset_for_next(c);
      continue;
    }
    if (c->state == PX_CONN_TUNNEL || blocked(c)) break;
    int from_pending = c->pending.len > 0;
    const char *p = from_pending ? c->pending.p : data;
    size_t n = from_pending ? c->pending.len : len;
    if (n == 0) break;
    size_t used = feed(c, p, n);
    if (c->state == PX_CONN_CLOSING) return;
    if (from_pending) {
      px_buf_consume(&c->pending, used);
    } else {
      data += used;
      len -= used;
    }
    if (used == 0 && !c->finish_deferred && !(c->ex && c->ex->local_done)) break;
  }
  if (c->state == PX_CONN_TUNNEL) {
    if (c->pending.len && c->ex) px_ex_tunnel_client_data(c->ex, c->pending.p, c->pending.len);
    c->pending.len = 0;
    if (len && c->ex) px_ex_tunnel_client_data(c->ex, data, len);
    len = 0;
  }
  if (len) px_buf_append(&c->pending, data, len);
  if (c->pending.len == 0 && c->pending.cap > 0) px_buf_free(&c->pending);
  check_backpressure(c);
}

void px_http_on_plain(px_conn_t *c, const char *data, size_t len) {
  if (c->state == PX_CONN_CLOSING) return;
  if (c->state == PX_CONN_TUNNEL) {
    if (c->ex) px_ex_tunnel_client_data(c->ex, data, len);
    check_backpressure(c);
    return;
  }
  run(c, data, len);
}

/* reset_for_next ends the current exchange: log it, free it, and either
 * close the connection or get ready for the next request. */
static void reset_for_next(px_conn_t *c) {
  px_exchange_t *ex = c->ex;
  if (ex) {
    if (ex->status > 0) {
      px_access_log(ex);
      unsigned cls = ex->status >= 100 && ex->status < 600 ? (unsigned)ex->status / 100 : 0;
      PX_STAT_ADD(c->w->stats.requests[ex->up_slot][cls], 1);
    }
    if (!ex->client_keepalive || !ex->req_done || (ex->upgrade && ex->status != 101))
      c->close_after = 1;
    c->ex = NULL;
    px_ex_free(ex);
  }
  c->requests++;
  if (c->close_after || c->w->draining) {
    px_conn_flush(c); /* staged plaintext goes before close_notify */
    if (c->state == PX_CONN_CLOSING) return;
    if (c->ssl) SSL_shutdown(c->ssl);
    c->close_when_flushed = 1;
    px_conn_flush(c);
    if (c->state != PX_CONN_CLOSING && px_conn_write_queue(c) == 0) px_conn_close(c);
    return;
  }
  llhttp_resume(&c->parser);
  start_head(c, conf_of(c)->timeouts.idle_ms);
  px_conn_read_start(c);
}

static void finish_exchange(px_conn_t *c) {
  if (c->in_parser) {
    c->finish_deferred = 1;
    return;
  }
  reset_for_next(c);
  if (c->state == PX_CONN_CLOSING) return;
  run(c, NULL, 0);
  if (c->state != PX_CONN_CLOSING) px_conn_flush(c);
}

/* px_http_exchange_done is called by exchange.c once the response has been
 * handed to the connection in full. */
void px_http_exchange_done(px_conn_t *c) {
  if (c->state == PX_CONN_CLOSING) return;
  finish_exchange(c);
}

/* px_http_tunnel starts byte-for-byte forwarding after a 101. */
void px_http_tunnel(px_conn_t *c) {
  c->state = PX_CONN_TUNNEL;
  px_conn_set_timer(c, 0);
  px_conn_read_start(c);
  if (c->pending.len && c->ex) {
    px_ex_tunnel_client_data(c->ex, c->pending.p, c->pending.len);
    px_buf_free(&c->pending);
  }
}

void px_http_on_timeout(px_conn_t *c) {
  if (c->state == PX_CONN_HEAD) {
    if (c->head_started && (c->head_bytes > 0 || c->pending.len > 0)) {
      GH_DEBUG("http", "%s: request head not received in time", c->client_ip);
      px_http_error(c, 408, "header read timeout");
    } else {
      GH_DEBUG("http", "%s: idle timeout", c->client_ip);
      px_conn_close(c);
    }
    return;
  }
  px_conn_close(c);
}

void px_http_conn_closed(px_conn_t *c) {
  px_exchange_t *ex = c->ex;
  if (ex == NULL) return;
  if (ex->method_known && ex->status == 0) {
    /* A whole request the client gave up on before any answer: logged as
     * 499, as nginx does, so a client (or health probe) timing out is not
     * invisible. A partly sent answer keeps its own status. */
    ex->status = 499;
    px_access_log(ex);
    PX_STAT_ADD(c->w->stats.requests[ex->up_slot][4], 1);
  }
  c->ex = NULL;
  px_ex_client_gone(ex);
}

void px_http_on_client_drained(px_conn_t *c) {
  if (c->ex) px_ex_resume_upstream(c->ex);
}

/* px_http_upstream_drained is called when the upstream write queue has
 * fallen below the limit: read from the client again. */
void px_http_upstream_drained(px_conn_t *c) {
  if (c->state == PX_CONN_CLOSING) return;
  px_conn_read_start(c);
  check_backpressure(c);
}
