/* adminc.c: the command line's admin API client, for commands that act
 * on a running server: `gatehouse health`, `gatehouse reload` and
 * `gatehouse cert renew NAME`.
 *
 *   gatehouse health [-c FILE | --admin ADDR] [--token T] [--timeout SECONDS]
 *   gatehouse reload [-c FILE | --admin ADDR] [--token T] [--timeout SECONDS]
 *   gatehouse cert renew NAME [-c FILE | --admin ADDR] [--token T] [--wait]
 *                             [--timeout SECONDS]
 *
 * The admin address and token come from, in order: the config file's
 * "admin" object (-c), --admin ADDR, or GATEHOUSE_ADMIN and
 * GATEHOUSE_ADMIN_TOKEN (what `gatehouse proxy` reads too); --token
 * overrides the token either way. An address is "IP:port" or "unix:PATH".
 * A wildcard admin address (":2019", "0.0.0.0:2019", "[::]:2019") is asked
 * over loopback.
 *
 * health is a liveness probe for container orchestrators that have no
 * HTTP client of their own (Docker's HEALTHCHECK runs a command inside the
 * image, and the runtime image carries no curl). It exits 0 when /health
 * answers 200, 1 otherwise (Docker's "unhealthy"; also when there is no
 * admin API to ask), 2 only for a malformed command line (Docker reserves
 * 2, so a health check that runs should never see it). reload and renew
 * exit 0 when the server did it, 1 when it refused or could not be asked,
 * 2 for a malformed command line. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/common.h"
#include "conf/conf.h"
#include "proxy/proxy.h"

#define MAX_ANSWER (1024 * 1024)

static const char target_usage[] =
    "  the server is found from -c FILE (its \"admin\" address and token), or\n"
    "  --admin ADDR (IP:port or unix:PATH; else GATEHOUSE_ADMIN) with --token T\n"
    "  (else GATEHOUSE_ADMIN_TOKEN or GATEHOUSE_ADMIN_TOKEN_FILE)\n";

/* Where and how to ask: the command's name for messages, the address,
 * the token (NULL: none), the deadline for each request. */
typedef struct {
  const char *cmd;
  conf_addr_t addr;
  char *token;
  int timeout_s;
  int wait; /* cert renew --wait */
  const char *name; /* cert renew NAME */
} target_t;

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

/* connect_wait finishes a non-blocking connect of |fd| to |sa|. Returns 0,
 * or -1 with |*why| set. */
static int connect_wait(int fd, const struct sockaddr *sa, socklen_t sa_len, int64_t deadline,
                        const char **why) {
  if (connect(fd, sa, sa_len) == 0) return 0;
  if (errno != EINPROGRESS && errno != EAGAIN) {
    *why = strerror(errno);
    return -1;
  }
  int ready = wait_fd(fd, POLLOUT, deadline);
  int err = 0;
  socklen_t len = sizeof(err);
  if (ready == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) return 0;
  *why = ready == 0 ? "timed out" : strerror(err ? err : errno);
  return -1;
}

/* connect_unix opens a connection to the unix socket |path|. Returns the
 * fd or -1 with |*why| set. */
static int connect_unix(const char *path, int64_t deadline, const char **why) {
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sun.sun_path)) {
    *why = "the socket's path is too long";
    return -1;
  }
  memcpy(sun.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    *why = strerror(errno);
    return -1;
  }
  if (connect_wait(fd, (struct sockaddr *)&sun, sizeof(sun), deadline, why) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* connect_tcp opens a non-blocking TCP connection to |host|:|port| within
 * the deadline. Returns the fd or -1 with |*why| set. */
static int connect_tcp(const char *host, uint16_t port, int64_t deadline, const char **why) {
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
    if (connect_wait(fd, ai->ai_addr, ai->ai_addrlen, deadline, why) != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  return fd;
}

/* send_all writes |len| bytes of |p| to |fd| by the deadline; 0 or -1
 * with |*why| set. */
static int send_all(int fd, const char *p, size_t len, int64_t deadline, const char **why) {
  size_t off = 0;
  while (off < len) {
    ssize_t n = send(fd, p + off, len - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += (size_t)n;
    } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
      *why = strerror(errno);
      return -1;
    } else if (wait_fd(fd, POLLOUT, deadline) != 1) {
      *why = "timed out";
      return -1;
    }
  }
  return 0;
}

/* recv_all reads until the peer closes (the request said "Connection:
 * close"), at most MAX_ANSWER bytes. Returns the bytes, NUL-terminated, in
 * a new buffer (|*out_len| of them), or NULL with |*why| set. */
static char *recv_all(int fd, size_t *out_len, int64_t deadline, const char **why) {
  size_t cap = 4096, len = 0;
  char *buf = gh_malloc(cap);
  for (;;) {
    if (len + 1 == cap) {
      if (cap >= MAX_ANSWER) {
        *why = "the answer is too large";
        gh_free(buf);
        return NULL;
      }
      cap *= 2;
      buf = gh_realloc(buf, cap);
    }
    ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
    if (n > 0) {
      len += (size_t)n;
    } else if (n == 0) {
      break;
    } else if (errno != EAGAIN && errno != EINTR) {
      *why = strerror(errno);
      gh_free(buf);
      return NULL;
    } else if (wait_fd(fd, POLLIN, deadline) != 1) {
      *why = "timed out";
      gh_free(buf);
      return NULL;
    }
  }
  buf[len] = '\0';
  *out_len = len;
  return buf;
}

/* call sends |method| |path| to the admin API and reads the answer.
 * Returns the HTTP status with |*out_body| its body (caller frees), or -1
 * after printing why there is none. */
static int call(const target_t *t, const char *method, const char *path, char **out_body) {
  int64_t deadline = (int64_t)gh_now_ms() + (int64_t)t->timeout_s * 1000;
  const conf_addr_t *addr = &t->addr;
  const char *why = NULL;
  int fd;
  char *host_header;
  if (addr->unix_path != NULL) {
    fd = connect_unix(addr->unix_path, deadline, &why);
    host_header = gh_strdup("localhost");
  } else {
    /* The Host header names the admin address as configured, which is
     * what the admin API's DNS-rebinding check accepts; a wildcard is
     * reached (and named) over loopback. */
    const char *host = addr->host;
    const char *connect_host = host;
    if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0) connect_host = "127.0.0.1";
    if (strcmp(host, "::") == 0) connect_host = "::1";
    if (host[0] == '\0') host = "127.0.0.1";
    fd = connect_tcp(connect_host, addr->port, deadline, &why);
    int v6 = strchr(host, ':') != NULL;
    host_header = gh_asprintf("%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "",
                              (unsigned)addr->port);
  }
  if (fd < 0) {
    fprintf(stderr, "gatehouse %s: admin %s: connect: %s\n", t->cmd, addr->text, why);
    gh_free(host_header);
    return -1;
  }
  char *req = gh_asprintf("%s %s HTTP/1.1\r\nHost: %s\r\n%s%s%sContent-Length: 0\r\n"
                          "Connection: close\r\n\r\n",
                          method, path, host_header, t->token ? "Authorization: Bearer " : "",
                          t->token ? t->token : "", t->token ? "\r\n" : "");
  gh_free(host_header);
  size_t len = 0;
  char *resp = NULL;
  if (send_all(fd, req, strlen(req), deadline, &why) == 0) resp = recv_all(fd, &len, deadline, &why);
  close(fd);
  gh_free(req);
  if (resp == NULL) {
    fprintf(stderr, "gatehouse %s: admin %s: %s\n", t->cmd, addr->text, why);
    return -1;
  }
  int status = 0;
  char *body = strstr(resp, "\r\n\r\n");
  if (sscanf(resp, "HTTP/1.%*1[01] %3d", &status) != 1 || body == NULL) {
    char *eol = strpbrk(resp, "\r\n");
    if (eol != NULL) *eol = '\0';
    fprintf(stderr, "gatehouse %s: admin %s: not an HTTP answer: \"%.80s\"\n", t->cmd, addr->text,
            resp);
    gh_free(resp);
    return -1;
  }
  *out_body = gh_strdup(body + 4);
  gh_free(resp);
  return status;
}

/* json_string returns the string at |key| of the JSON object |doc|, or
 * NULL. */
static const char *json_string(const cJSON *doc, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* refused prints the server's answer |body| with |status| to stderr. */
static void refused(const target_t *t, int status, const char *body) {
  cJSON *doc = cJSON_Parse(body);
  const cJSON *errors = cJSON_GetObjectItemCaseSensitive(doc, "errors");
  const char *err = json_string(doc, "error");
  if (cJSON_IsArray(errors)) {
    fprintf(stderr, "gatehouse %s: refused (%d):\n", t->cmd, status);
    const cJSON *e;
    cJSON_ArrayForEach(e, errors) {
      if (cJSON_IsString(e)) fprintf(stderr, "  %s\n", e->valuestring);
    }
  } else {
    size_t n = strcspn(body, "\r\n");
    fprintf(stderr, "gatehouse %s: admin %s answered %d: %.*s\n", t->cmd, t->addr.text, status,
            err ? (int)strlen(err) : (int)n, err ? err : body);
  }
  cJSON_Delete(doc);
}

extern char **environ;

/* env_token reads the admin token as `gatehouse proxy` does
 * (conf_env_get: GATEHOUSE_ADMIN_TOKEN or GATEHOUSE_ADMIN_TOKEN_FILE).
 * Returns 0 (|*out| NULL when there is none) or -1 after saying why. */
static int env_token(const char *cmd, char **out) {
  char *err = conf_env_get(environ, "GATEHOUSE_ADMIN_TOKEN", out);
  if (err != NULL) {
    fprintf(stderr, "gatehouse %s: %s\n", cmd, err);
    gh_free(err);
    return -1;
  }
  if (*out != NULL && strpbrk(*out, "\r\n") != NULL) {
    fprintf(stderr, "gatehouse %s: the admin token holds a line break\n", cmd);
    gh_free(*out);
    *out = NULL;
    return -1;
  }
  return 0;
}

/* find_target reads the command line (after the command's name, and
 * NAME for renew) into |t|. Returns 0; 2 for a malformed command line or
 * -1 (--help: 0 to exit with) after printing; 1 when there is no server to
 * ask. */
static int find_target(target_t *t, int argc, char **argv, const char *usage) {
  const char *file = NULL, *admin = NULL, *token = NULL;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    int has_value = i + 1 < argc;
    if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && has_value) {
      file = argv[++i];
    } else if (strcmp(a, "--admin") == 0 && has_value) {
      admin = argv[++i];
    } else if (strcmp(a, "--token") == 0 && has_value) {
      token = argv[++i];
    } else if (strcmp(a, "--wait") == 0 && t->name != NULL) {
      t->wait = 1;
    } else if (strcmp(a, "--timeout") == 0 && has_value) {
      char *end = NULL;
      long s = strtol(argv[++i], &end, 10);
      if (*end != '\0' || s < 1 || s > 3600) {
        fprintf(stderr, "gatehouse %s: --timeout: expected whole seconds 1..3600, got \"%s\"\n",
                t->cmd, argv[i]);
        return 2;
      }
      t->timeout_s = (int)s;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      printf("%s%s", usage, target_usage);
      return -1;
    } else {
      fprintf(stderr, "gatehouse %s: unexpected argument \"%s\"\n%s%s", t->cmd, a, usage,
              target_usage);
      return 2;
    }
  }
  if (file != NULL && admin != NULL) {
    fprintf(stderr, "gatehouse %s: give -c FILE or --admin ADDR, not both\n", t->cmd);
    return 2;
  }
  if (token != NULL && (token[0] == '\0' || strpbrk(token, "\r\n") != NULL)) {
    fprintf(stderr, "gatehouse %s: --token: expected a token on one line\n", t->cmd);
    return 2;
  }
  if (file != NULL) {
    conf_t *conf = px_load_conf(file);
    if (conf == NULL) {
      fprintf(stderr, "gatehouse %s: %s does not validate (errors above)\n", t->cmd, file);
      return 1;
    }
    if (conf->admin == NULL) {
      fprintf(stderr, "gatehouse %s: %s has no \"admin\" object: the admin API is off\n",
              t->cmd, file);
      conf_free(conf);
      return 1;
    }
    t->addr = *conf->admin;
    memset(conf->admin, 0, sizeof(*conf->admin)); /* |t| owns its strings now */
    const char *tok = token ? token : conf->admin_token;
    t->token = tok ? gh_strdup(tok) : NULL;
    conf_free(conf);
    return 0;
  }
  const char *from = "--admin";
  if (admin == NULL) {
    admin = getenv("GATEHOUSE_ADMIN");
    from = "GATEHOUSE_ADMIN";
  }
  if (admin == NULL || admin[0] == '\0') {
    fprintf(stderr, "gatehouse %s: no admin address: give -c FILE, --admin ADDR, or set "
                    "GATEHOUSE_ADMIN\n", t->cmd);
    return 1;
  }
  if (conf_parse_addr(&t->addr, admin, 0) != 0) {
    fprintf(stderr, "gatehouse %s: %s: expected an address such as 127.0.0.1:2019 or "
                    "unix:/run/gatehouse/admin.sock, got \"%s\"\n", t->cmd, from, admin);
    return 1;
  }
  if (token != NULL) {
    t->token = gh_strdup(token);
  } else if (env_token(t->cmd, &t->token) != 0) {
    return 1;
  }
  return 0;
}

static void target_cleanup(target_t *t) {
  conf_addr_cleanup(&t->addr);
  gh_free(t->token);
  t->token = NULL;
}

/* run_target reads the command line into |t|. Returns -1 to go on, or
 * the exit status (0 after --help). */
static int run_target(target_t *t, const char *cmd, int argc, char **argv, const char *usage,
                      int timeout_s) {
  const char *name = t->name;
  memset(t, 0, sizeof(*t));
  t->cmd = cmd;
  t->name = name;
  t->timeout_s = timeout_s;
  int rc = find_target(t, argc, argv, usage);
  if (rc == 0) return -1;
  target_cleanup(t);
  return rc < 0 ? 0 : rc;
}

static const char health_usage[] =
    "usage: gatehouse health [-c FILE | --admin ADDR] [--token T] [--timeout SECONDS]\n"
    "  asks the admin API's /health; exit 0 healthy, 1 not\n";

int px_health_cmd(int argc, char **argv) {
  target_t t = {0};
  int rc = run_target(&t, "health", argc, argv, health_usage, 5);
  if (rc >= 0) return rc;
  char *body = NULL;
  int status = call(&t, "GET", "/health", &body);
  rc = 1;
  if (status == 200) {
    printf("ok\n");
    rc = 0;
  } else if (status > 0) {
    fprintf(stderr, "gatehouse health: admin %s answered %d: %.*s\n", t.addr.text, status,
            (int)strcspn(body, "\r\n"), body);
  }
  gh_free(body);
  target_cleanup(&t);
  return rc;
}

static const char reload_usage[] =
    "usage: gatehouse reload [-c FILE | --admin ADDR] [--token T] [--timeout SECONDS]\n"
    "  asks the running server to re-read its config file (POST /reload, as SIGHUP\n"
    "  does); exit 0 reloaded, 1 refused (the server's errors are printed). When the\n"
    "  new file moves admin.listen, name the old address with --admin.\n";

int px_reload_cmd(int argc, char **argv) {
  target_t t = {0};
  int rc = run_target(&t, "reload", argc, argv, reload_usage, 30);
  if (rc >= 0) return rc;
  char *body = NULL;
  int status = call(&t, "POST", "/reload", &body);
  rc = 1;
  if (status == 200) {
    printf("reloaded\n");
    rc = 0;
  } else if (status > 0) {
    refused(&t, status, body);
  }
  gh_free(body);
  target_cleanup(&t);
  return rc;
}

static const char renew_usage[] =
    "usage: gatehouse cert renew NAME [-c FILE | --admin ADDR] [--token T] [--wait]\n"
    "                            [--timeout SECONDS]\n"
    "  asks the running server to order a new certificate for NAME now (POST\n"
    "  /certs/NAME/renew); with --wait, waits until it serves a new one\n";

/* serial_of returns the serial number the admin API shows for |name| (a
 * new string), or NULL. */
static char *serial_of(const target_t *t, const char *path) {
  char *body = NULL;
  char *serial = NULL;
  if (call(t, "GET", path, &body) == 200) {
    cJSON *doc = cJSON_Parse(body);
    const char *s = json_string(doc, "serial");
    if (s != NULL && s[0] != '\0') serial = gh_strdup(s);
    cJSON_Delete(doc);
  }
  gh_free(body);
  return serial;
}

int px_cert_renew_cmd(int argc, char **argv) {
  if (argc < 1 || argv[0][0] == '-') {
    fprintf(stderr, "gatehouse cert renew: missing NAME\n%s%s", renew_usage, target_usage);
    return argc >= 1 && (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) ? 0 : 2;
  }
  target_t t = {.name = argv[0]};
  int rc = run_target(&t, "cert renew", argc - 1, argv + 1, renew_usage, 120);
  if (rc >= 0) return rc;
  /* The name goes into the path: the admin API takes DNS names only. */
  if (!conf_host_pattern_valid(t.name)) {
    fprintf(stderr, "gatehouse cert renew: \"%s\" is not a lower-case host name\n", t.name);
    target_cleanup(&t);
    return 2;
  }
  char *path = gh_asprintf("/certs/%s", t.name);
  char *action = gh_asprintf("%s/renew", path);
  char *before = t.wait ? serial_of(&t, path) : NULL;
  char *body = NULL;
  int64_t deadline = (int64_t)gh_now_ms() + (int64_t)t.timeout_s * 1000;
  int status = call(&t, "POST", action, &body);
  rc = 1;
  if (status == 202 && !t.wait) {
    printf("%s: renewal started (the server logs the outcome; --wait waits for it)\n", t.name);
    rc = 0;
  } else if (status == 202) {
    printf("%s: renewal started\n", t.name);
    fflush(stdout);
    while (rc != 0 && (int64_t)gh_now_ms() < deadline) {
      char *now = serial_of(&t, path);
      if (now != NULL && (before == NULL || strcmp(now, before) != 0)) {
        printf("%s: renewed, serial %s\n", t.name, now);
        rc = 0;
      } else {
        usleep(250 * 1000);
      }
      gh_free(now);
    }
    if (rc != 0) {
      fprintf(stderr, "gatehouse cert renew: no new certificate for %s within %ds; the server's "
                      "log says why\n", t.name, t.timeout_s);
    }
  } else if (status > 0) {
    refused(&t, status, body);
  }
  gh_free(body);
  gh_free(before);
  gh_free(action);
  gh_free(path);
  target_cleanup(&t);
  return rc;
}
