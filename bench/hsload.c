/* hsload.c: a TLS load generator that really does full handshakes.
 *
 *   hsload handshake --connect HOST:PORT [--duration S] [--concurrency N]
 *   hsload idle      --connect HOST:PORT --conns N [--concurrency N] [--hold S]
 *   hsload probe     --connect HOST:PORT
 *   common: [--sni NAME] [--path /]
 *
 * Every connection is a fresh SSL with no session offered: TLS 1.3 only,
 * X25519 only, and ECDSA P-256 SHA-256 the only signature the server may
 * use. After the handshake it sends one GET and reads the response (by
 * Content-Length or chunked framing, or up to EOF).
 *
 * handshake: keeps N connections in flight for S seconds, each one
 *   "GET path" with "Connection: close", then closes. wrk and h2load
 *   resume sessions even with "Connection: close", which would hide the
 *   cost this measures.
 * idle: opens N connections (N at a time in flight), one keep-alive request
 *   each, then keeps them open and idle. When all are set up it prints its
 *   JSON line and holds them until standard input closes (or S seconds),
 *   then prints a second line with how many the server closed meanwhile.
 * probe: one connection, exit 0 if the answer was a 2xx.
 *
 * Output: one JSON object a line on stdout. A handshake that resumed, or
 * negotiated anything but X25519 / ECDSA P-256, counts as a failure (and in
 * "reused" or "wrong_params"), so a figure can never quietly measure
 * something else. "tickets" counts session tickets the server sent: with
 * resumption off it should be 0.
 *
 * Loopback only: the bench points it at 127.0.0.1; every run is bounded in
 * time and count. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONN_TIMEOUT_S 10.0
#define RESP_MAX (16 * 1024)

typedef enum { MODE_HANDSHAKE, MODE_IDLE, MODE_PROBE } mode_t_;

typedef enum {
  C_FREE,
  C_CONNECTING,
  C_HANDSHAKE,
  C_WRITE,
  C_READ,
  C_IDLE,
} cstate_t;

typedef struct {
  int fd;
  SSL *ssl;
  cstate_t state;
  double started;
  size_t req_off;
  size_t resp_len;
  char *resp;
} conn_t;

static struct {
  mode_t_ mode;
  struct sockaddr_in addr;
  const char *sni;
  const char *path;
  double duration;
  int concurrency;
  int conns;
  double hold;
} opt = {MODE_HANDSHAKE, {0}, "bench.local", "/", 5.0, 32, 0, 600.0};

static struct {
  uint64_t ok, fail, reused, wrong_params, tickets, dropped, bad_status;
  uint64_t fail_connect, fail_tls, fail_http, fail_timeout;
} st;

static SSL_CTX *ctx;
static int ep;
static int in_flight; /* connections started and not yet done or failed */
static char request[512];
static size_t request_len;
static double *lat;
static size_t lat_len, lat_cap;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *msg) {
  fprintf(stderr, "hsload: %s\n", msg);
  exit(2);
}

static int new_session(SSL *ssl, SSL_SESSION *session) {
  st.tickets++;
  return 0; /* not kept: every connection must be a full handshake */
}

static void ep_set(conn_t *c, uint32_t events, int op) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  if (epoll_ctl(ep, op, c->fd, &ev) != 0) die("epoll_ctl failed");
}

static void conn_reset(conn_t *c) {
  if (c->state != C_FREE && c->state != C_IDLE) in_flight--;
  if (c->ssl != NULL) SSL_free(c->ssl);
  if (c->fd >= 0) close(c->fd);
  c->ssl = NULL;
  c->fd = -1;
  c->state = C_FREE;
  c->req_off = 0;
  c->resp_len = 0;
}

static void conn_fail(conn_t *c, uint64_t *reason) {
  st.fail++;
  (*reason)++;
  conn_reset(c);
}

static int conn_start(conn_t *c) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) return -1;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  c->started = now_s();
  c->state = C_CONNECTING;
  in_flight++;
  if (connect(c->fd, (struct sockaddr *)&opt.addr, sizeof(opt.addr)) != 0 &&
      errno != EINPROGRESS) {
    conn_fail(c, &st.fail_connect);
    return 0;
  }
  ep_set(c, EPOLLOUT, EPOLL_CTL_ADD);
  return 0;
}

/* response_complete reports whether c->resp holds a whole response (1), not
 * yet (0), or garbage (-1). At EOF a response without framing is whole. */
static int response_complete(conn_t *c, int eof) {
  const char *r = c->resp;
  size_t n = c->resp_len;
  const char *end = memmem(r, n, "\r\n\r\n", 4);
  if (end == NULL) return eof ? -1 : 0;
  size_t head_len = (size_t)(end - r) + 4;
  if (n < 12 || memcmp(r, "HTTP/1.", 7) != 0) return -1;
  if (r[9] != '2') st.bad_status++;
  /* Find Content-Length or chunked in the head (case-insensitive). */
  long long clen = -1;
  int chunked = 0;
  for (const char *line = memchr(r, '\n', head_len); line != NULL && line < end;
       line = memchr(line + 1, '\n', (size_t)(end - line - 1) + 1)) {
    const char *l = line + 1;
    if (strncasecmp(l, "content-length:", 15) == 0) clen = atoll(l + 15);
    if (strncasecmp(l, "transfer-encoding:", 18) == 0 &&
        memmem(l, (size_t)(end - l), "chunked", 7) != NULL) {
      chunked = 1;
    }
  }
  if (r[9] == '1' || memcmp(r + 9, "204", 3) == 0 || memcmp(r + 9, "304", 3) == 0) return 1;
  if (chunked) return memmem(r + head_len, n - head_len, "0\r\n\r\n", 5) != NULL ? 1 : eof ? -1 : 0;
  if (clen >= 0) return n - head_len >= (size_t)clen ? 1 : eof ? -1 : 0;
  return eof ? 1 : 0;
}

static void record_latency(double d) {
  if (lat_len == lat_cap) {
    lat_cap = lat_cap ? lat_cap * 2 : 65536;
    lat = realloc(lat, lat_cap * sizeof(*lat));
    if (lat == NULL) die("out of memory");
  }
  lat[lat_len++] = d;
}

static void conn_done(conn_t *c) {
  st.ok++;
  record_latency(now_s() - c->started);
  if (opt.mode == MODE_IDLE) {
    in_flight--;
    c->state = C_IDLE;
    c->resp_len = 0;
    ep_set(c, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_MOD);
    return;
  }
  conn_reset(c);
}

static int check_params(conn_t *c) {
  if (SSL_session_reused(c->ssl)) {
    st.reused++;
    return -1;
  }
  if (SSL_version(c->ssl) != TLS1_3_VERSION || SSL_get_curve_id(c->ssl) != SSL_CURVE_X25519 ||
      SSL_get_peer_signature_algorithm(c->ssl) != SSL_SIGN_ECDSA_SECP256R1_SHA256) {
    st.wrong_params++;
    return -1;
  }
  return 0;
}

/* drive moves one connection as far as it can go without blocking. */
static void drive(conn_t *c) {
  for (;;) {
    int r = 0, err;
    switch (c->state) {
      case C_FREE:
      case C_IDLE:
        return;
      case C_CONNECTING: {
        /* Called on EPOLLOUT: the connect has finished, well or not. */
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
        if (soerr != 0) {
          conn_fail(c, &st.fail_connect);
          return;
        }
        c->ssl = SSL_new(ctx);
        if (c->ssl == NULL) die("SSL_new failed");
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_connect_state(c->ssl);
        SSL_set_tlsext_host_name(c->ssl, opt.sni);
        c->state = C_HANDSHAKE;
        continue;
      }
      case C_HANDSHAKE:
        ERR_clear_error();
        r = SSL_do_handshake(c->ssl);
        if (r == 1) {
          if (check_params(c) != 0) {
            conn_fail(c, &st.fail_tls);
            return;
          }
          c->state = C_WRITE;
          continue;
        }
        break;
      case C_WRITE:
        ERR_clear_error();
        r = SSL_write(c->ssl, request + c->req_off, (int)(request_len - c->req_off));
        if (r > 0) {
          c->req_off += (size_t)r;
          if (c->req_off == request_len) c->state = C_READ;
          continue;
        }
        break;
      case C_READ:
        if (c->resp_len == RESP_MAX) {
          conn_fail(c, &st.fail_http);
          return;
        }
        ERR_clear_error();
        r = SSL_read(c->ssl, c->resp + c->resp_len, (int)(RESP_MAX - c->resp_len));
        if (r > 0) {
          c->resp_len += (size_t)r;
          int done = response_complete(c, 0);
          if (done < 0) {
            conn_fail(c, &st.fail_http);
            return;
          }
          if (done) {
            conn_done(c);
            return;
          }
          continue;
        }
        if (SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN ||
            (SSL_get_error(c->ssl, r) == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
          if (response_complete(c, 1) == 1) {
            conn_done(c);
          } else {
            conn_fail(c, &st.fail_http);
          }
          return;
        }
        break;
    }
    err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ) {
      ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
    } else if (err == SSL_ERROR_WANT_WRITE) {
      ep_set(c, EPOLLOUT, EPOLL_CTL_MOD);
    } else {
      conn_fail(c, c->state == C_HANDSHAKE ? &st.fail_tls : &st.fail_http);
    }
    return;
  }
}

static void on_idle_event(conn_t *c) {
  /* An idle connection became readable: the server closed it (or sent
   * something we did not ask for). Either way it is gone. */
  char tmp[4096];
  ERR_clear_error();
  int r = SSL_read(c->ssl, tmp, sizeof(tmp));
  if (r <= 0 && SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_READ) return;
  st.dropped++;
  conn_reset(c);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double percentile(double p) {
  if (lat_len == 0) return 0;
  size_t i = (size_t)(p * (double)(lat_len - 1) + 0.5);
  return lat[i];
}

static void print_result(double elapsed) {
  qsort(lat, lat_len, sizeof(*lat), cmp_double);
  printf("{\"mode\":\"%s\",\"ok\":%llu,\"fail\":%llu,\"reused\":%llu,\"wrong_params\":%llu,"
         "\"tickets\":%llu,\"bad_status\":%llu,\"fail_connect\":%llu,\"fail_tls\":%llu,"
         "\"fail_http\":%llu,\"fail_timeout\":%llu,\"seconds\":%.3f,\"rate\":%.1f,"
         "\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
         opt.mode == MODE_IDLE ? "idle" : opt.mode == MODE_PROBE ? "probe" : "handshake",
         (unsigned long long)st.ok, (unsigned long long)st.fail, (unsigned long long)st.reused,
         (unsigned long long)st.wrong_params, (unsigned long long)st.tickets,
         (unsigned long long)st.bad_status, (unsigned long long)st.fail_connect,
         (unsigned long long)st.fail_tls, (unsigned long long)st.fail_http,
         (unsigned long long)st.fail_timeout, elapsed, elapsed > 0 ? (double)st.ok / elapsed : 0,
         percentile(0.5) * 1e3, percentile(0.99) * 1e3);
  fflush(stdout);
}

static void usage(void) {
  fprintf(stderr,
          "usage: hsload handshake|idle|probe --connect HOST:PORT [--sni NAME] [--path P]\n"
          "       [--duration S] [--concurrency N] [--conns N] [--hold S]\n");
  exit(2);
}

static void parse_args(int argc, char **argv) {
  if (argc < 2) usage();
  if (strcmp(argv[1], "handshake") == 0) {
    opt.mode = MODE_HANDSHAKE;
  } else if (strcmp(argv[1], "idle") == 0) {
    opt.mode = MODE_IDLE;
  } else if (strcmp(argv[1], "probe") == 0) {
    opt.mode = MODE_PROBE;
  } else {
    usage();
  }
  const char *connect_to = NULL;
  for (int i = 2; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (strcmp(k, "--connect") == 0) {
      connect_to = v;
    } else if (strcmp(k, "--sni") == 0) {
      opt.sni = v;
    } else if (strcmp(k, "--path") == 0) {
      opt.path = v;
    } else if (strcmp(k, "--duration") == 0) {
      opt.duration = atof(v);
    } else if (strcmp(k, "--concurrency") == 0) {
      opt.concurrency = atoi(v);
    } else if (strcmp(k, "--conns") == 0) {
      opt.conns = atoi(v);
    } else if (strcmp(k, "--hold") == 0) {
      opt.hold = atof(v);
    } else {
      usage();
    }
  }
  if ((argc - 2) % 2 != 0 || connect_to == NULL || opt.concurrency < 1) usage();
  char host[64];
  const char *colon = strrchr(connect_to, ':');
  if (colon == NULL || (size_t)(colon - connect_to) >= sizeof(host)) usage();
  memcpy(host, connect_to, (size_t)(colon - connect_to));
  host[colon - connect_to] = '\0';
  opt.addr.sin_family = AF_INET;
  opt.addr.sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &opt.addr.sin_addr) != 1) usage();
  if (opt.mode == MODE_PROBE) {
    opt.conns = 1;
    opt.concurrency = 1;
  }
  if (opt.mode == MODE_IDLE && opt.conns < 1) usage();
}

static void setup_tls(void) {
  static const uint16_t sigalgs[] = {SSL_SIGN_ECDSA_SECP256R1_SHA256};
  static const uint8_t alpn[] = "\x08http/1.1";
  ctx = SSL_CTX_new(TLS_method());
  if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
      !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
      !SSL_CTX_set1_curves_list(ctx, "X25519") ||
      !SSL_CTX_set_verify_algorithm_prefs(ctx, sigalgs, 1) ||
      SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0) {
    die("cannot set up the TLS context");
  }
  /* The bench certificate is self-signed: the cost measured is the
   * server's, and the server signs whether or not we check the chain. */
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  /* Sessions are handed to new_session (which counts and drops them) and
   * never cached, so no connection can offer one. */
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
  SSL_CTX_sess_set_new_cb(ctx, new_session);
}

static void raise_nofile(int need) {
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur >= (rlim_t)need) return;
  if (rl.rlim_max < (rlim_t)need) rl.rlim_max = (rlim_t)need; /* works as root */
  rl.rlim_cur = (rlim_t)need;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    fprintf(stderr, "hsload: could only raise RLIMIT_NOFILE to %llu\n",
            (unsigned long long)rl.rlim_max);
  }
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  setup_tls();
  int keep_alive = opt.mode == MODE_IDLE;
  request_len = (size_t)snprintf(request, sizeof(request),
                                 "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: %s\r\n\r\n", opt.path,
                                 opt.sni, keep_alive ? "keep-alive" : "close");
  if (request_len >= sizeof(request)) die("path too long");

  int num_slots = opt.mode == MODE_IDLE ? opt.conns : opt.concurrency;
  raise_nofile(num_slots + 64);
  conn_t *conns = calloc((size_t)num_slots, sizeof(*conns));
  if (conns == NULL) die("out of memory");
  for (int i = 0; i < num_slots; i++) {
    conns[i].fd = -1;
    conns[i].resp = malloc(RESP_MAX);
    if (conns[i].resp == NULL) die("out of memory");
  }
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1 failed");

  double start = now_s();
  double stop_starting = start + opt.duration;
  double next_timeout_scan = start;
  int started = 0; /* idle and probe: slots [0, started) have been used */
  struct epoll_event events[256];
  for (;;) {
    double t = now_s();
    if (opt.mode == MODE_HANDSHAKE) {
      for (int i = 0; i < num_slots && t < stop_starting; i++) {
        if (conns[i].state != C_FREE) continue;
        if (conn_start(&conns[i]) != 0) die("socket() failed");
      }
      if (in_flight == 0 && t >= stop_starting) break;
    } else {
      while (started < opt.conns && in_flight < opt.concurrency) {
        conn_t *c = &conns[started++];
        if (conn_start(c) != 0) die("socket() failed (file descriptor limit?)");
      }
      if (in_flight == 0 && started >= opt.conns) break;
    }
    int n = epoll_wait(ep, events, (int)(sizeof(events) / sizeof(events[0])), 50);
    for (int i = 0; i < n; i++) {
      conn_t *c = events[i].data.ptr;
      if (c->state == C_IDLE) {
        on_idle_event(c);
      } else {
        drive(c);
      }
    }
    t = now_s();
    if (t >= next_timeout_scan) {
      next_timeout_scan = t + 0.2;
      for (int i = 0; i < num_slots; i++) {
        conn_t *c = &conns[i];
        if (c->state != C_FREE && c->state != C_IDLE && t - c->started > CONN_TIMEOUT_S) {
          conn_fail(c, &st.fail_timeout);
        }
      }
    }
  }
  double elapsed = now_s() - start;
  print_result(elapsed);

  if (opt.mode == MODE_IDLE) {
    /* Hold until stdin closes or the hold time is up, watching for
     * connections the server drops. */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    double until = now_s() + opt.hold;
    int done = 0;
    while (!done && now_s() < until) {
      int n = epoll_wait(ep, events, (int)(sizeof(events) / sizeof(events[0])), 200);
      for (int i = 0; i < n; i++) {
        conn_t *c = events[i].data.ptr;
        if (c == NULL) {
          char tmp[256];
          if (read(0, tmp, sizeof(tmp)) <= 0) done = 1;
        } else if (c->state == C_IDLE) {
          on_idle_event(c);
        }
      }
    }
    printf("{\"dropped\":%llu}\n", (unsigned long long)st.dropped);
    fflush(stdout);
  }
  for (int i = 0; i < num_slots; i++) {
    conn_reset(&conns[i]);
    free(conns[i].resp);
  }
  free(conns);
  free(lat);
  close(ep);
  SSL_CTX_free(ctx);
  if (opt.mode == MODE_PROBE) return st.ok == 1 && st.bad_status == 0 ? 0 : 1;
  return 0;
}
