/* listen.c: listening sockets. Each worker opens its own socket for every
 * listener with SO_REUSEPORT, so the kernel spreads new connections across
 * workers and no accept lock or hand-off between threads is needed.
 * libuv 1.44 has no flag for SO_REUSEPORT: create the socket, set the
 * option, bind, then hand it to uv_tcp_open. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/capability.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"
#include "proxy/conn.h"
#include "proxy/proxy.h"

static void on_connection(uv_stream_t *server, int status) {
  px_listener_t *l = server->data;
  if (status < 0) {
    GH_WARN("proxy", "accept: %s", uv_strerror(status));
    return;
  }
  px_conn_accept(l);
}

/* bind_socket returns a socket bound to |addr| (SO_REUSEPORT when
 * |reuseport|), or -1 with |*out_err| set. */
static int bind_socket(const conf_addr_t *addr, int reuseport, char **out_err) {
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char port[8];
  snprintf(port, sizeof(port), "%u", addr->port);
  int rc = getaddrinfo(addr->host[0] ? addr->host : NULL, port, &hints, &res);
  if (rc != 0) {
    *out_err = gh_asprintf("listen %s: %s", addr->text, gai_strerror(rc));
    return -1;
  }
  /* For ":port" prefer the IPv6 wildcard, which also accepts IPv4. */
  struct addrinfo *ai = res;
  if (!addr->host[0]) {
    for (struct addrinfo *p = res; p; p = p->ai_next) {
      if (p->ai_family == AF_INET6) ai = p;
    }
  }
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    *out_err = gh_asprintf("listen %s: socket: %s", addr->text, strerror(errno));
    freeaddrinfo(res);
    return -1;
  }
  int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    /* The usual cause in a container: the capability was dropped
     * (--cap-drop, no-new-privileges) for a non-root user. */
    int privileged = (errno == EACCES || errno == EPERM) && addr->port < 1024;
    int err = errno;
    *out_err = gh_asprintf("listen %s: bind: %s%s", addr->text, strerror(err),
                           privileged ? " (ports below 1024 need root or the "
                                        "cap_net_bind_service capability)"
                                      : "");
    close(fd);
    freeaddrinfo(res);
    errno = err; /* for the caller's hint */
    return -1;
  }
  freeaddrinfo(res);
  return fd;
}

void px_raise_bind_capability(void) {
  struct __user_cap_header_struct head = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
  if (syscall(SYS_capget, &head, data) != 0) return;
  uint32_t bit = 1u << CAP_NET_BIND_SERVICE; /* in the first word */
  if (!(data[0].permitted & bit) || (data[0].effective & bit)) return;
  data[0].effective |= bit;
  (void)syscall(SYS_capset, &head, data);
}

int px_listen_probe(const conf_addr_t *addr, char **out_err) {
  /* Without SO_REUSEPORT the bind fails while another process listens
   * there with it, as every gatehouse worker does. */
  int fd = bind_socket(addr, 0, out_err);
  if (fd < 0) return -1;
  close(fd);
  return 0;
}

int px_listen_open(px_listener_t *l, uv_loop_t *loop, const conf_addr_t *addr, char **out_err) {
  int rc, fd = bind_socket(addr, 1, out_err);
  if (fd < 0) return -1;
  uv_tcp_init(loop, &l->tcp);
  l->tcp.data = l;
  if ((rc = uv_tcp_open(&l->tcp, fd)) != 0 ||
      (rc = uv_listen((uv_stream_t *)&l->tcp, 4096, on_connection)) != 0) {
    *out_err = gh_asprintf("listen %s: %s", addr->text, uv_strerror(rc));
    return -1;
  }
  return 0;
}
