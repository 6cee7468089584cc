/* fuzz_script.c: see fuzz_script.h. */
#include "tests/fuzz/fuzz_script.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
  MAX_UP = 32, /* upstream connections kept per input; more are closed at once */
  MAX_DUE = 256,
};

/* An upstream connection, and the oracle on what it receives: the proxy
 * writes the framing itself, and a body longer or shorter than announced
 * would put the next request (on a pooled connection) out of step. */
struct fs_up {
  uv_tcp_t tcp;
  int closed; /* closed (or reset) by the upstream */
  int eof;    /* the proxy closed its side */
  int reading;
  int judge;
  llhttp_t parser;
  px_buf_t got; /* what was received, for the report */
};

typedef struct {
  uv_write_t req;
  char data[];
} up_write_t;

const char *fs_name = "fuzz";
int fs_trace;
char fs_fill[FS_FILL];
const uint64_t fs_units[8] = {1, 10, 100, 1000, 10000, 60000, 600000, 3600000};

static uv_tcp_t g_listener[2];
static fs_up_t g_up[MAX_UP];
static size_t g_num_up;
static char g_rbuf[16 * 1024];
static unsigned g_reloads;
static int g_closing; /* fs_close_ups was called: the input is ending */
static llhttp_settings_t g_req_settings;

/* ---- the request oracle ---- */

static void up_fail(fs_up_t *u, const char *why) {
  fprintf(stderr, "%s: upstream %d received a broken request stream: %s\n"
          "--- received (%zu bytes) ---\n%.*s\n--- end ---\n",
          fs_name, (int)(u - g_up) + 1, why, u->got.len, (int)u->got.len, u->got.p);
  abort();
}

/* on_target: llhttp lets TAB and FF through in a request target (and so
 * would the proxy's own llhttp); RFC 9112 3.2 allows no whitespace or
 * control character there, and a server that splits the request line on
 * them reads another target than the proxy routed. */
static int on_target(llhttp_t *p, const char *at, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)at[i];
    if (ch <= 0x20 || ch == 0x7f) up_fail(p->data, "control character in the request target");
  }
  return 0;
}

static void up_judge(fs_up_t *u, const char *p, size_t len) {
  if (!u->judge) return;
  if (u->got.len < 64 * 1024) px_buf_append(&u->got, p, len);
  llhttp_errno_t e = llhttp_execute(&u->parser, p, len);
  if (e == HPE_PAUSED_UPGRADE) {
    u->judge = 0;
  } else if (e != HPE_OK) {
    up_fail(u, llhttp_get_error_reason(&u->parser));
  }
}

/* ---- the scripted upstream ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h, (void)suggested;
  *buf = uv_buf_init(g_rbuf, sizeof(g_rbuf));
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  fs_up_t *u = s->data;
  if (nread > 0) up_judge(u, buf->base, (size_t)nread);
  if (nread >= 0) return;
  u->eof = 1;
  u->reading = 0;
  uv_read_stop(s);
}

static void free_handle(uv_handle_t *h) { gh_free(h); }

static void on_connection(uv_stream_t *server, int status) {
  if (status != 0) return;
  /* Always accept: a connection left in the backlog would reach the next
   * input. Past MAX_UP, or once the input is ending (fs_close_ups closed
   * the others; the slots are reused by the next input), it is closed at
   * once. */
  int keep = g_num_up < MAX_UP && !g_closing;
  uv_tcp_t *t = keep ? &g_up[g_num_up].tcp : gh_malloc(sizeof(uv_tcp_t));
  uv_tcp_init(server->loop, t);
  if (uv_accept(server, (uv_stream_t *)t) != 0 || !keep) {
    uv_close((uv_handle_t *)t, keep ? NULL : free_handle);
    if (keep) g_up[g_num_up++].closed = 1; /* the slot is closing: never reused */
    return;
  }
  fs_up_t *u = &g_up[g_num_up++];
  u->closed = u->eof = 0;
  u->reading = 1;
  u->judge = 1;
  u->got.len = 0;
  llhttp_init(&u->parser, HTTP_REQUEST, &g_req_settings);
  u->parser.data = u;
  t->data = u;
  uv_tcp_nodelay(t, 1);
  uv_read_start((uv_stream_t *)t, on_alloc, on_up_read);
  FS_TRACE("  [upstream %zu accepted]\n", g_num_up);
}

px_worker_t *fs_start(const char *name, const char *conf_fmt,
                      void (*sink)(int peer, const char *p, size_t len)) {
  fs_name = name;
  fw_peer_sink(sink);
  fs_trace = getenv("GH_FUZZ_TRACE") != NULL;
  llhttp_settings_init(&g_req_settings);
  g_req_settings.on_url = on_target;
  memset(fs_fill, 'x', sizeof(fs_fill));
  /* The listeners need the loop and the configuration needs their ports:
   * bind the sockets first, hand them to the loop after. */
  unsigned ports[2];
  int fds[2];
  for (int i = 0; i < 2; i++) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int size = FS_SOCKBUF;
    fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fds[i] < 0 || setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof(size)) != 0 ||
        bind(fds[i], (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fds[i], 64) != 0 ||
        getsockname(fds[i], (struct sockaddr *)&sa, &sl) != 0)
      abort();
    ports[i] = ntohs(sa.sin_port);
  }
  char *fmt = gh_asprintf(conf_fmt, ports[0], ports[0], ports[1], ports[1]);
  px_worker_t *w = fw_worker_conf(fmt);
  gh_free(fmt);
  for (int i = 0; i < 2; i++) {
    uv_tcp_init(&w->loop, &g_listener[i]);
    if (uv_tcp_open(&g_listener[i], fds[i]) != 0 ||
        uv_listen((uv_stream_t *)&g_listener[i], 64, on_connection) != 0)
      abort();
    uv_unref((uv_handle_t *)&g_listener[i]); /* fw_finish waits for the rest only */
  }
  return w;
}

fs_up_t *fs_up_pick(unsigned sel) {
  if (sel >= 1 && sel <= g_num_up) return g_up[sel - 1].closed ? NULL : &g_up[sel - 1];
  for (size_t i = g_num_up; i > 0; i--) {
    if (!g_up[i - 1].closed) return &g_up[i - 1];
  }
  return NULL;
}

static void on_up_written(uv_write_t *req, int status) {
  (void)status;
  gh_free(req);
}

void fs_up_send(fs_up_t *u, const char *p, size_t len) {
  if (u == NULL || len == 0) return;
  up_write_t *wr = gh_malloc(sizeof(*wr) + len);
  memcpy(wr->data, p, len);
  uv_buf_t b = uv_buf_init(wr->data, (unsigned)len);
  if (uv_write(&wr->req, (uv_stream_t *)&u->tcp, &b, 1, on_up_written) != 0) gh_free(wr);
}

void fs_up_close(fs_up_t *u, int reset) {
  if (u == NULL) return;
  u->closed = 1;
  if (!reset || uv_tcp_close_reset(&u->tcp, NULL) != 0) uv_close((uv_handle_t *)&u->tcp, NULL);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  gh_free(req);
}

void fs_up_shutdown(fs_up_t *u) {
  if (u == NULL) return;
  uv_shutdown_t *req = gh_malloc(sizeof(*req));
  if (uv_shutdown(req, (uv_stream_t *)&u->tcp, on_shutdown) != 0) gh_free(req);
}

void fs_up_reading(fs_up_t *u, int on) {
  if (u == NULL || u->eof || u->reading == on) return;
  u->reading = on;
  if (on) uv_read_start((uv_stream_t *)&u->tcp, on_alloc, on_up_read);
  else uv_read_stop((uv_stream_t *)&u->tcp);
}

void fs_small_sndbufs(px_worker_t *w) {
  for (gh_link_t *l = w->upconns.next; l != &w->upconns; l = l->next) {
    px_upconn_t *u = GH_CONTAINER_OF(l, px_upconn_t, all);
    uv_os_fd_t fd;
    int size = FS_SOCKBUF;
    if (!uv_is_closing((uv_handle_t *)&u->tcp) && uv_fileno((uv_handle_t *)&u->tcp, &fd) == 0)
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  }
}

/* ---- the clock ---- */

typedef struct {
  uv_timer_t *t[MAX_DUE];
  size_t n;
  uint64_t limit;
} due_t;

static void collect_due(uv_handle_t *h, void *arg) {
  due_t *d = arg;
  if (h->type != UV_TIMER || !uv_is_active(h) || uv_is_closing(h) || d->n == MAX_DUE) return;
  uv_timer_t *t = (uv_timer_t *)h;
  if (uv_timer_get_due_in(t) <= d->limit) d->t[d->n++] = t;
}

static int by_due(const void *a, const void *b) {
  uint64_t x = uv_timer_get_due_in(*(uv_timer_t *const *)a);
  uint64_t y = uv_timer_get_due_in(*(uv_timer_t *const *)b);
  return x < y ? -1 : x > y;
}

/* fs_advance: the loop's timers are due on loop time; those of the worker
 * are all lazy (worker.h): each callback compares px_now with its own
 * deadline and re-arms for the rest. So every timer due within the whole
 * offset fires, in order, as libuv would fire it (stopped first); one
 * that comes early only re-arms. */
void fs_advance(px_worker_t *w, uint64_t ms) {
  w->clock_offset_ms += ms;
  due_t d = {.n = 0, .limit = w->clock_offset_ms};
  uv_walk(&w->loop, collect_due, &d);
  qsort(d.t, d.n, sizeof(d.t[0]), by_due);
  for (size_t i = 0; i < d.n; i++) {
    uv_timer_t *t = d.t[i];
    /* An earlier callback may have stopped or closed it (the handle's
     * memory goes only in a close callback, in a later loop turn). */
    if (!uv_is_active((uv_handle_t *)t) || uv_is_closing((uv_handle_t *)t)) continue;
    uv_timer_cb cb = t->timer_cb; /* libuv's field; there is no getter */
    uv_timer_stop(t);
    if (uv_timer_get_repeat(t)) uv_timer_again(t);
    cb(t);
  }
}

void fs_drain(px_worker_t *w) {
  w->draining = 1;
  for (gh_link_t *l = w->conns.next; l != &w->conns;) {
    px_conn_t *c = GH_CONTAINER_OF(l, px_conn_t, link);
    l = l->next;
    if (c->state == PX_CONN_OPEN) px_conn_drain(c);
    else c->h1.close_after = 1;
  }
  if (w->num_conns == 0) px_worker_pools_close(w);
}

/* ---- the shared operations ---- */

const uint8_t *fs_take(const uint8_t **p, const uint8_t *end, size_t *len) {
  *len = *p < end ? *(*p)++ : 0;
  if (*len > (size_t)(end - *p)) *len = (size_t)(end - *p);
  const uint8_t *at = *p;
  *p += *len;
  return at;
}

void fs_write(int fd, px_buf_t *out, size_t *off) {
  while (*off < out->len) {
    ssize_t n = write(fd, out->p + *off, out->len - *off);
    if (n > 0) {
      *off += (size_t)n;
    } else {
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
      break;
    }
  }
  out->len = *off = 0;
}

int fs_leave(int peer, px_buf_t *out, size_t *off, unsigned mode) {
  if (mode == 2) {
    fs_write(peer, out, off);
    shutdown(peer, SHUT_WR);
    return 0;
  }
  if (mode == 0) fw_peer_drain(peer); /* an orderly close: what was sent is read first */
  fw_peer_close(peer);
  out->len = *off = 0;
  return 1;
}

int fs_op(px_worker_t *w, const fs_target_t *t, uint8_t op, const uint8_t **pp, const uint8_t *end) {
  unsigned a = op >> 4;
  const uint8_t *p = *pp;
  switch (op & 15) {
    case 2: {
      size_t len;
      const uint8_t *at = fs_take(&p, end, &len);
      FS_TRACE("upstream %u sends %zu: %.*s\n", a, len, (int)len, (const char *)at);
      fs_up_send(fs_up_pick(a), (const char *)at, len);
      break;
    }
    case 3: {
      size_t len = ((size_t)(p < end ? *p++ : 0) + 1) * 1024;
      FS_TRACE("upstream %u sends %zu KiB\n", a, len / 1024);
      fs_up_send(fs_up_pick(a), fs_fill, len);
      break;
    }
    case 4:
      FS_TRACE("client %u %s\n", (a & 3) % t->num_clients,
               (const char *[]){"closes", "resets", "shuts its write side", "resets"}[a >> 2]);
      t->client_close((a & 3) % t->num_clients, (a >> 2) == 3 ? 1 : a >> 2);
      break;
    case 5:
      FS_TRACE("upstream %u %s\n", a & 7, a & 8 ? "resets" : "closes");
      fs_up_close(fs_up_pick(a & 7), (a & 8) != 0);
      break;
    case 6:
      FS_TRACE("client %u %s reading\n", (a & 3) % t->num_clients, a & 4 ? "starts" : "stops");
      t->client_reading((a & 3) % t->num_clients, (a & 4) != 0);
      break;
    case 7:
      FS_TRACE("upstream %u %s reading\n", a & 7, a & 8 ? "starts" : "stops");
      fs_up_reading(fs_up_pick(a & 7), (a & 8) != 0);
      break;
    case 8: {
      uint64_t ms = ((uint64_t)(p < end ? *p++ : 0) + 1) * fs_units[a & 7];
      FS_TRACE("%llu ms pass\n", (unsigned long long)ms);
      fs_advance(w, ms);
      break;
    }
    case 9:
      FS_TRACE("%u loop turns\n", a + 1);
      t->spin((int)a + 1);
      break;
    case 10:
      FS_TRACE("upstream %u shuts its write side\n", a & 7);
      fs_up_shutdown(fs_up_pick(a & 7));
      break;
    case 11:
      FS_TRACE("the worker drains\n");
      fs_drain(w);
      break;
    case 12:
      /* A reload parses the configuration and builds an SSL_CTX: slow next
       * to everything else, so at most 4 per input. */
      if (a == 0 && g_reloads < 4) {
        FS_TRACE("reload\n");
        g_reloads++;
        fw_reload(w);
      } else {
        t->spin(1);
      }
      break;
    default:
      return 0;
  }
  *pp = p;
  return 1;
}

/* ---- invariants and the end of an input ---- */

size_t fs_check_upconns(px_worker_t *w) {
  size_t with_ex = 0;
  size_t *idle = gh_calloc(w->gen->num_addrs + 1, sizeof(size_t));
  for (gh_link_t *l = w->upconns.next; l != &w->upconns; l = l->next) {
    px_upconn_t *u = GH_CONTAINER_OF(l, px_upconn_t, all);
    if (u->ex) {
      FS_CHECK(u->ex->up == u);
      FS_CHECK(u->ex->w == w);
      FS_CHECK(!uv_is_closing((uv_handle_t *)&u->tcp));
      with_ex++;
    }
    if (u->idle) {
      FS_CHECK(u->ex == NULL);
      FS_CHECK(u->connected);
      FS_CHECK(u->gen == w->gen);
      idle[u->addr->index]++;
    }
  }
  for (size_t i = 0; i < w->gen->num_addrs; i++) {
    size_t n = 0;
    for (gh_link_t *l = w->pools[i].idle.next; l != &w->pools[i].idle; l = l->next) n++;
    FS_CHECK(n == w->pools[i].num_idle);
    FS_CHECK(n == idle[i]);
  }
  gh_free(idle);
  return with_ex;
}

void fs_close_ups(void) {
  g_closing = 1;
  for (size_t i = 0; i < g_num_up; i++) {
    if (!uv_is_closing((uv_handle_t *)&g_up[i].tcp)) uv_close((uv_handle_t *)&g_up[i].tcp, NULL);
  }
}

void fs_finished(px_worker_t *w) {
  for (size_t i = 0; i < MAX_UP; i++) px_buf_free(&g_up[i].got);
  /* What the proxy dialled and closed before it was accepted. */
  for (int i = 0; i < 2; i++) {
    uv_os_fd_t lfd;
    if (uv_fileno((uv_handle_t *)&g_listener[i], &lfd) != 0) abort();
    int fd;
    while ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0) close(fd);
  }
  for (size_t i = 0; i < w->gen->num_addrs; i++) FS_CHECK(atomic_load(&w->gen->addrs[i].active) == 0);
  FS_CHECK(w->clock_offset_ms == 0);
  g_num_up = 0;
  g_reloads = 0;
  g_closing = 0;
}
