/* dnsx.c: one DNS exchange with one server over UDP, then TCP (see
 * dnsx.h). The UDP socket is connected, so datagrams from anyone else are
 * dropped and a closed port comes back as ECONNREFUSED. At most one TCP
 * connection is made; it is the last attempt. */
#include <stdio.h>
#include <string.h>

#include "acme/dnsx.h"
#include "common/common.h"
#include "common/log.h"

#define UDP_MAX 512

struct acme_dnsx {
  uv_loop_t *loop;
  uv_timer_t timer;
  uv_udp_t udp;
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  int udp_open, tcp_open, done, use_tcp;
  unsigned attempt, max_attempts, attempt_ms, num_open;
  acme_dns_server_t server;
  acme_dnsx_ops_t ops;
  void *arg;
  uint8_t req[2 + ACME_DNS_MAX_MSG]; /* 2 bytes for TCP's length, then the message */
  size_t req_len;
  uint8_t resp[2 + ACME_DNS_MAX_MSG];
  size_t resp_len;
  char last[160]; /* why the last attempt failed */
};

static void on_close(uv_handle_t *h) {
  acme_dnsx_t *x = h->data;
  if (--x->num_open == 0) gh_free(x);
}

static void x_close(acme_dnsx_t *x) {
  x->done = 1;
  uv_timer_stop(&x->timer);
  uv_close((uv_handle_t *)&x->timer, on_close);
  if (x->udp_open) uv_close((uv_handle_t *)&x->udp, on_close);
  if (x->tcp_open) uv_close((uv_handle_t *)&x->tcp, on_close);
  x->udp_open = x->tcp_open = 0;
}

static void x_finish(acme_dnsx_t *x, int status, const uint8_t *msg, size_t len) {
  /* The buffers stay allocated until the close callbacks run, after this. */
  x_close(x);
  x->ops.done(x->arg, status, msg, len, status == 0 ? NULL : x->last);
}

static void attempt_start(acme_dnsx_t *x);

/* attempt_failed starts the next attempt after a silence, or ends the
 * exchange with |status|, |x->last| saying why. */
static void attempt_failed(acme_dnsx_t *x, int status) {
  uv_timer_stop(&x->timer);
  if (x->attempt >= x->max_attempts || status != UV_ETIMEDOUT) {
    x_finish(x, status, NULL, 0);
    return;
  }
  attempt_start(x);
}

static void on_timeout(uv_timer_t *t) {
  acme_dnsx_t *x = t->data;
  if (x->done) return;
  snprintf(x->last, sizeof(x->last), "no answer within %u ms%s (%u attempt%s)", x->attempt_ms,
           x->use_tcp ? " over TCP" : "", x->attempt, x->attempt == 1 ? "" : "s");
  if (x->tcp_open) {
    uv_close((uv_handle_t *)&x->tcp, on_close);
    x->tcp_open = 0;
  }
  attempt_failed(x, UV_ETIMEDOUT);
}

static void handle_answer(acme_dnsx_t *x, const uint8_t *msg, size_t len) {
  switch (x->ops.judge(x->arg, msg, len)) {
    case ACME_DNSX_IGNORE:
      return;
    case ACME_DNSX_TAKE:
      x_finish(x, 0, msg, len);
      return;
    case ACME_DNSX_TCP:
      if (!x->use_tcp) {
        GH_DEBUG("acme", "dns: %s: a truncated answer, asking again over TCP", x->server.text);
        uv_timer_stop(&x->timer);
        x->use_tcp = 1;
        attempt_start(x);
        return;
      }
      snprintf(x->last, sizeof(x->last), "a truncated answer over TCP");
      break;
    default:
      snprintf(x->last, sizeof(x->last), "a malformed answer");
      break;
  }
  attempt_failed(x, UV_EPROTO);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  acme_dnsx_t *x = h->data;
  (void)suggested;
  if (h->type == UV_UDP) {
    *buf = uv_buf_init((char *)x->resp, sizeof(x->resp));
  } else {
    *buf = uv_buf_init((char *)x->resp + x->resp_len, (unsigned)(sizeof(x->resp) - x->resp_len));
  }
}

static void on_udp_recv(uv_udp_t *udp, ssize_t nread, const uv_buf_t *buf,
                        const struct sockaddr *from, unsigned flags) {
  acme_dnsx_t *x = udp->data;
  if (x->done || x->use_tcp || (nread == 0 && from == NULL)) return;
  if (nread < 0) {
    snprintf(x->last, sizeof(x->last), "%s", uv_strerror((int)nread));
    attempt_failed(x, (int)nread);
    return;
  }
  if (flags & UV_UDP_PARTIAL) {
    uv_timer_stop(&x->timer);
    x->use_tcp = 1;
    attempt_start(x);
    return;
  }
  handle_answer(x, (const uint8_t *)buf->base, (size_t)nread);
}

static void on_tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  acme_dnsx_t *x = s->data;
  (void)buf;
  if (x->done) return;
  if (nread < 0) {
    snprintf(x->last, sizeof(x->last), "over TCP: %s",
             nread == UV_EOF ? "the server closed the connection" : uv_strerror((int)nread));
    attempt_failed(x, nread == UV_EOF ? UV_EPROTO : (int)nread);
    return;
  }
  x->resp_len += (size_t)nread;
  if (x->resp_len < 2) return;
  size_t want = (size_t)x->resp[0] << 8 | x->resp[1];
  if (want > sizeof(x->resp) - 2) {
    snprintf(x->last, sizeof(x->last), "over TCP: an answer of %zu bytes, over our limit", want);
    attempt_failed(x, UV_EPROTO);
    return;
  }
  if (x->resp_len < 2 + want) return;
  /* One answer a connection: what follows it is not read. */
  uv_read_stop(s);
  handle_answer(x, x->resp + 2, want);
}

static void on_write(uv_write_t *w, int status) {
  acme_dnsx_t *x = w->data;
  if (x->done || status == 0) return;
  snprintf(x->last, sizeof(x->last), "sending over TCP: %s", uv_strerror(status));
  attempt_failed(x, status);
}

static void on_connect(uv_connect_t *c, int status) {
  acme_dnsx_t *x = c->data;
  if (x->done || status == UV_ECANCELED) return;
  if (status != 0) {
    snprintf(x->last, sizeof(x->last), "connecting over TCP: %s", uv_strerror(status));
    attempt_failed(x, status);
    return;
  }
  x->resp_len = 0;
  uv_buf_t b = uv_buf_init((char *)x->req, (unsigned)(2 + x->req_len));
  x->write.data = x;
  int rc = uv_write(&x->write, (uv_stream_t *)&x->tcp, &b, 1, on_write);
  if (rc == 0) rc = uv_read_start((uv_stream_t *)&x->tcp, on_alloc, on_tcp_read);
  if (rc != 0) {
    snprintf(x->last, sizeof(x->last), "over TCP: %s", uv_strerror(rc));
    attempt_failed(x, rc);
  }
}

/* attempt_start has a fresh message built and sends it: over UDP, or over
 * TCP once needed and for the last attempt. */
static void attempt_start(acme_dnsx_t *x) {
  x->attempt++;
  int rc = x->ops.build(x->arg, x->req + 2, sizeof(x->req) - 2, &x->req_len);
  if (rc != 0) {
    snprintf(x->last, sizeof(x->last), "cannot build the message");
    attempt_failed(x, rc);
    return;
  }
  x->req[0] = (uint8_t)(x->req_len >> 8);
  x->req[1] = (uint8_t)x->req_len;
  if (x->req_len > UDP_MAX || (x->max_attempts > 1 && x->attempt >= x->max_attempts)) {
    x->use_tcp = 1;
  }
  uv_timer_start(&x->timer, on_timeout, x->attempt_ms, 0);
  if (!x->use_tcp) {
    uv_buf_t b = uv_buf_init((char *)x->req + 2, (unsigned)x->req_len);
    rc = uv_udp_try_send(&x->udp, &b, 1, NULL);
    if (rc < 0) {
      snprintf(x->last, sizeof(x->last), "sending: %s", uv_strerror(rc));
      attempt_failed(x, rc);
    }
    return;
  }
  x->attempt = x->max_attempts; /* one TCP attempt: it is the last */
  rc = uv_tcp_init(x->loop, &x->tcp);
  if (rc != 0) {
    snprintf(x->last, sizeof(x->last), "TCP socket: %s", uv_strerror(rc));
    attempt_failed(x, rc);
    return;
  }
  x->tcp.data = x;
  x->tcp_open = 1;
  x->num_open++;
  x->connect.data = x;
  rc = uv_tcp_connect(&x->connect, &x->tcp, (const struct sockaddr *)&x->server.addr, on_connect);
  if (rc != 0) {
    snprintf(x->last, sizeof(x->last), "connecting over TCP: %s", uv_strerror(rc));
    attempt_failed(x, rc);
  }
}

static void on_first(uv_timer_t *t) {
  acme_dnsx_t *x = t->data;
  if (!x->done) attempt_start(x);
}

int acme__dnsx_start(acme_dnsx_t **out, uv_loop_t *loop, const acme_dns_server_t *server,
                     unsigned max_attempts, unsigned attempt_ms, const acme_dnsx_ops_t *ops,
                     void *arg) {
  *out = NULL;
  if (max_attempts == 0 || ops == NULL || ops->build == NULL || ops->judge == NULL ||
      ops->done == NULL) {
    return UV_EINVAL;
  }
  acme_dnsx_t *x = gh_calloc(1, sizeof(*x));
  x->loop = loop;
  x->server = *server;
  x->max_attempts = max_attempts;
  x->attempt_ms = attempt_ms;
  x->ops = *ops;
  x->arg = arg;
  snprintf(x->last, sizeof(x->last), "no answer");
  uv_timer_init(loop, &x->timer);
  x->timer.data = x;
  x->num_open = 1;
  int rc = uv_udp_init_ex(loop, &x->udp, server->addr.ss_family);
  if (rc == 0) {
    x->udp.data = x;
    x->udp_open = 1;
    x->num_open++;
    rc = uv_udp_connect(&x->udp, (const struct sockaddr *)&server->addr);
    if (rc == 0) rc = uv_udp_recv_start(&x->udp, on_alloc, on_udp_recv);
  }
  if (rc != 0) {
    x_close(x);
    return rc;
  }
  /* The first attempt starts from the loop: done never runs before this
   * function has returned. */
  uv_timer_start(&x->timer, on_first, 0, 0);
  *out = x;
  return 0;
}

void acme__dnsx_cancel(acme_dnsx_t *x) {
  if (x == NULL || x->done) return;
  x_close(x);
}
