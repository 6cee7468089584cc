/* health.c: `gatehouse health`, a liveness probe for container
 * orchestrators that have no HTTP client of their own (Docker's
 * HEALTHCHECK runs a command inside the image, and the runtime image
 * carries no curl). It asks the admin API's /health and exits 0 when the
 * answer is 200, 1 otherwise (Docker's "unhealthy"; also when there is no
 * admin API to ask), 2 only for a malformed command line (Docker reserves
 * 2, so a health check that runs should never see it).
 *
 *   gatehouse health [-c FILE | --admin ADDR] [--timeout SECONDS]
 *
 * The admin address and token come from, in order: the config file's
 * "admin" object (-c), --admin ADDR, or GATEHOUSE_ADMIN and
 * GATEHOUSE_ADMIN_TOKEN (what `gatehouse proxy` reads too). A wildcard
 * admin address (":2019", "0.0.0.0:2019", "[::]:2019") is asked over
 * loopback. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/common.h"
#include "conf/conf.h"
#include "proxy/proxy.h"

static const char health_usage[] =
    "usage: gatehouse health [-c FILE | --admin ADDR] [--timeout SECONDS]\n"
    "  asks the admin API's /health; exit 0 healthy, 1 not\n"
    "  (admin address from -c FILE, --admin, or GATEHOUSE_ADMIN;\n"
    "   token from the file or GATEHOUSE_ADMIN_TOKEN)\n";

/* wait_fd polls |fd| for |events| until |deadline|; 1 ready, 0 timed out,
 * -1 error. */
static int wait_fd(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - (int64_t)gh_now_ms();
    if (left <= 0) return 0;
    struct pollfd p = {.fd = fd, .events = events};
    int rc = poll(&p, 1, (int)left);
    if (rc > 0) return 1;
    if (rc == 0) return 0;
    if (errno != EINTR) return -1;
  }
}

/* connect_to opens a non-blocking TCP connection to |host|:|port| within
 * the deadline. Returns the fd or -1 with |*why| set. */
static int connect_to(const char *host, uint16_t port, int64_t deadline, const char **why) {
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  char service[8];
  snprintf(service, sizeof(service), "%u", port);
  int rc = getaddrinfo(host, service, &hints, &res);
  if (rc != 0) {
    *why = gai_strerror(rc);
    return -1;
  }
  int fd = -1;
  *why = "no address";
  for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      *why = strerror(errno);
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
      *why = strerror(errno);
    } else {
      int ready = wait_fd(fd, POLLOUT, deadline);
      int err = 0;
      socklen_t len = sizeof(err);
      if (ready == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) break;
      *why = ready == 0 ? "timed out" : strerror(err ? err : errno);
    }
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  return fd;
}

/* probe asks http://ADDR/health and returns the exit status. */
static int probe(const conf_addr_t *addr, const char *token, int timeout_s) {
  int64_t deadline = (int64_t)gh_now_ms() + (int64_t)timeout_s * 1000;
  /* The Host header names the admin address as configured, which is what
   * the admin API's DNS-rebinding check accepts; a wildcard is reached
   * (and named) over loopback. */
  const char *host = addr->host;
  const char *connect_host = host;
  if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0) connect_host = "127.0.0.1";
  if (strcmp(host, "::") == 0) connect_host = "::1";
  if (host[0] == '\0') host = "127.0.0.1";
  const char *why = NULL;
  int fd = connect_to(connect_host, addr->port, deadline, &why);
  if (fd < 0) {
    fprintf(stderr, "gatehouse health: admin %s: connect: %s\n", addr->text, why);
    return 1;
  }
  int v6 = strchr(host, ':') != NULL;
  char *req = gh_asprintf("GET /health HTTP/1.1\r\nHost: %s%s%s:%u\r\n%s%s%sConnection: close\r\n\r\n",
                          v6 ? "[" : "", host, v6 ? "]" : "", (unsigned)addr->port,
                          token ? "Authorization: Bearer " : "", token ? token : "",
                          token ? "\r\n" : "");
  size_t off = 0, len = strlen(req);
  int status = 1;
  while (off < len) {
    ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += (size_t)n;
    } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
      why = strerror(errno);
      break;
    } else if (wait_fd(fd, POLLOUT, deadline) != 1) {
      why = "timed out";
      break;
    }
  }
  char resp[512];
  size_t got = 0;
  while (off == len && got < sizeof(resp) - 1 && memchr(resp, '\n', got) == NULL) {
    ssize_t n = recv(fd, resp + got, sizeof(resp) - 1 - got, 0);
    if (n > 0) {
      got += (size_t)n;
    } else if (n == 0) {
      break;
    } else if (errno != EAGAIN && errno != EINTR) {
      why = strerror(errno);
      break;
    } else if (wait_fd(fd, POLLIN, deadline) != 1) {
      why = "timed out";
      break;
    }
  }
  close(fd);
  gh_free(req);
  resp[got] = '\0';
  char *eol = strpbrk(resp, "\r\n");
  if (eol != NULL) {
    *eol = '\0';
    if (strncmp(resp, "HTTP/1.1 200 ", 13) == 0 || strcmp(resp, "HTTP/1.1 200") == 0) {
      printf("ok\n");
      status = 0;
    } else {
      fprintf(stderr, "gatehouse health: admin %s answered \"%s\"\n", addr->text, resp);
    }
  } else {
    fprintf(stderr, "gatehouse health: admin %s: %s\n", addr->text,
            why ? why : "no answer");
  }
  return status;
}

extern char **environ;

/* env_token reads the admin token as `gatehouse proxy` does
 * (conf_env_get: GATEHOUSE_ADMIN_TOKEN or GATEHOUSE_ADMIN_TOKEN_FILE).
 * Returns 0 (|*out| NULL when there is none) or -1 after saying why. */
static int env_token(char **out) {
  char *err = conf_env_get(environ, "GATEHOUSE_ADMIN_TOKEN", out);
  if (err != NULL) {
    fprintf(stderr, "gatehouse health: %s\n", err);
    gh_free(err);
    return -1;
  }
  if (*out != NULL && strpbrk(*out, "\r\n") != NULL) {
    fprintf(stderr, "gatehouse health: the admin token holds a line break\n");
    gh_free(*out);
    *out = NULL;
    return -1;
  }
  return 0;
}

int px_health_cmd(int argc, char **argv) {
  const char *file = NULL, *admin = NULL;
  int timeout_s = 5;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    int has_value = i + 1 < argc;
    if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && has_value) {
      file = argv[++i];
    } else if (strcmp(a, "--admin") == 0 && has_value) {
      admin = argv[++i];
    } else if (strcmp(a, "--timeout") == 0 && has_value) {
      char *end = NULL;
      long t = strtol(argv[++i], &end, 10);
      if (*end != '\0' || t < 1 || t > 3600) {
        fprintf(stderr, "gatehouse health: --timeout: expected whole seconds 1..3600, got \"%s\"\n",
                argv[i]);
        return 2;
      }
      timeout_s = (int)t;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(health_usage, stdout);
      return 0;
    } else {
      fprintf(stderr, "gatehouse health: unexpected argument \"%s\"\n%s", a, health_usage);
      return 2;
    }
  }
  if (file != NULL && admin != NULL) {
    fprintf(stderr, "gatehouse health: give -c FILE or --admin ADDR, not both\n");
    return 2;
  }
  if (file != NULL) {
    conf_t *conf = px_load_conf(file);
    if (conf == NULL) return 1;
    if (conf->admin == NULL) {
      fprintf(stderr, "gatehouse health: %s has no \"admin\" object: the admin API is off\n",
              file);
      conf_free(conf);
      return 1;
    }
    int rc = probe(conf->admin, conf->admin_token, timeout_s);
    conf_free(conf);
    return rc;
  }
  const char *from = "--admin";
  if (admin == NULL) {
    admin = getenv("GATEHOUSE_ADMIN");
    from = "GATEHOUSE_ADMIN";
  }
  if (admin == NULL || admin[0] == '\0') {
    fprintf(stderr, "gatehouse health: no admin address: give -c FILE, --admin ADDR, or set "
                    "GATEHOUSE_ADMIN\n");
    return 1;
  }
  conf_addr_t addr;
  if (conf_parse_addr(&addr, admin, 0) != 0) {
    fprintf(stderr, "gatehouse health: %s: expected an address such as 127.0.0.1:2019, got \"%s\"\n",
            from, admin);
    return 1;
  }
  char *token = NULL;
  if (env_token(&token) != 0) {
    conf_addr_cleanup(&addr);
    return 1;
  }
  int rc = probe(&addr, token, timeout_s);
  gh_free(token);
  conf_addr_cleanup(&addr);
  return rc;
}
