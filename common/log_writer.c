/* log_writer.c: where finished log lines go: straight to the destination
 * before the writer thread starts (and after it stops), through the
 * rings while it runs (see log.h).
 *
 * The writer moves lines from every ring into one staging buffer per
 * destination and writes each buffer with one write(2). Under load (a
 * pass that moved lines less than BATCH_MS after the previous one) it then
 * waits BATCH_MS for more, so that it writes
 * (and wakes) about every BATCH_MS rather than once a line; a producer
 * whose ring passes half full wakes it sooner. Once a pass finds nothing
 * it sleeps in poll(2), on an eventfd that producers signal only when it
 * sleeps (the first line after a quiet spell), and,
 * for a pipe or socket, on the destination becoming writable; it then
 * writes at most PIPE_BUF bytes, which a writable pipe takes without
 * blocking, so a stop request reaches it even when nobody reads the
 * other end, and the drain at exit is bounded (DRAIN_MS). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "common/log_internal.h"
#include "common/log_ring.h"

#define DEFAULT_RING_BYTES (256 * 1024)
#define STAGE_BYTES (64 * 1024)
#define DRAIN_MS 3000      /* at stop, for a destination that takes nothing */
#define WARN_EVERY_MS 10000 /* the "dropped N log lines" warning, at most */
#define IDLE_MS 250        /* a missed wake-up costs at most this much delay */
#define BATCH_MS 10        /* under load, lines leave in batches this far apart */

/* Where the two kinds of lines go. path[GH__LOG_ACCESS] NULL means the
 * access lines share gatehouse's own destination (and fd). */
typedef struct {
  int fd[2];
  int is_reg[2]; /* a regular file: written without poll or PIPE_BUF chunks */
  char *path[2]; /* NULL: stderr (or shared, for access) */
} dest_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
/* Under g_mu. Before the writer runs and after it stops, direct writes use
 * it; while it runs, only the writer changes it (and reads it unlocked). */
static dest_t g_dest = {{STDERR_FILENO, STDERR_FILENO}, {0, 0}, {NULL, NULL}};
static dest_t *g_pending;                 /* under g_mu: for the writer to take */
static gh_log_ring_t *_Atomic g_rings;    /* every ring, newest first; g_mu to add */
static uint64_t g_dropped_retired;        /* under g_mu: counts of freed rings */
static _Atomic uint64_t g_dropped_writes; /* lines lost to a failed write */

static _Atomic int g_running; /* lines go to the rings */
static _Atomic int g_stop, g_reopen, g_has_pending, g_sleeping;
static _Atomic unsigned g_gen; /* bumped at each start: older thread rings are stale */
static int g_wake_fd = -1;
static size_t g_ring_bytes;
static pthread_t g_thread;
static int g_abandoned; /* a stop timed out: the writer thread is left behind */

static pthread_mutex_t g_shared_mu = PTHREAD_MUTEX_INITIALIZER;
static gh_log_ring_t *g_shared; /* producers hold g_shared_mu */

static pthread_mutex_t g_done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_done_cond = PTHREAD_COND_INITIALIZER;
static int g_done; /* under g_done_mu: the writer has finished */

static _Thread_local gh_log_ring_t *tl_ring;
static _Thread_local unsigned tl_gen;

/* ---- destinations ---- */

static void write_all(int fd, const char *p, size_t len) {
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    len -= (size_t)w;
  }
}

/* open_file opens |path| for appending; returns the fd or -errno. */
static int open_file(const char *path, int *out_is_reg) {
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
  if (fd < 0) return -errno;
  struct stat st;
  *out_is_reg = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  return fd;
}

static void dest_close(dest_t *d) {
  for (int i = 0; i < 2; i++) {
    if (d->path[i] != NULL) close(d->fd[i]);
    gh_free(d->path[i]);
    d->path[i] = NULL;
  }
}

/* dest_open fills |d| for |file| and |access_file|; returns 0, or -1 with
 * the reason logged and nothing left open. */
static int dest_open(dest_t *d, const char *file, const char *access_file) {
  *d = (dest_t){{STDERR_FILENO, STDERR_FILENO}, {0, 0}, {NULL, NULL}};
  struct stat st;
  d->is_reg[0] = fstat(STDERR_FILENO, &st) == 0 && S_ISREG(st.st_mode);
  if (access_file != NULL && file != NULL && strcmp(access_file, file) == 0) access_file = NULL;
  const char *paths[2] = {file, access_file};
  for (int i = 0; i < 2; i++) {
    if (paths[i] == NULL) continue;
    int fd = open_file(paths[i], &d->is_reg[i]);
    if (fd < 0) {
      GH_ERROR("log", "cannot open log file \"%s\": %s", paths[i], strerror(-fd));
      dest_close(d);
      return -1;
    }
    d->fd[i] = fd;
    d->path[i] = gh_strdup(paths[i]);
  }
  if (d->path[1] == NULL) {
    d->fd[1] = d->fd[0];
    d->is_reg[1] = d->is_reg[0];
  }
  return 0;
}

/* reopen_files opens every file of |d| again, in place; a file that
 * cannot be opened keeps its old descriptor (and says so). */
static void reopen_files(dest_t *d) {
  for (int i = 0; i < 2; i++) {
    if (d->path[i] == NULL) continue;
    int is_reg = 0;
    int fd = open_file(d->path[i], &is_reg);
    if (fd < 0) {
      GH_ERROR("log", "cannot reopen log file \"%s\", still writing to the old one: %s",
               d->path[i], strerror(-fd));
      continue;
    }
    pthread_mutex_lock(&g_mu);
    int old = d->fd[i];
    d->fd[i] = fd;
    d->is_reg[i] = is_reg;
    if (i == 0 && d->path[1] == NULL) {
      d->fd[1] = fd;
      d->is_reg[1] = is_reg;
    }
    pthread_mutex_unlock(&g_mu);
    close(old);
  }
}

int gh_log_configure(const char *file, const char *access_file) {
  dest_t *d = gh_calloc(1, sizeof(*d));
  if (dest_open(d, file, access_file) != 0) {
    gh_free(d);
    return -1;
  }
  pthread_mutex_lock(&g_mu);
  if (atomic_load(&g_running)) {
    /* The writer may be in the middle of a write to the old files: it
     * switches (and closes them) itself. */
    if (g_pending != NULL) {
      dest_close(g_pending);
      gh_free(g_pending);
    }
    g_pending = d;
    d = NULL;
    atomic_store(&g_has_pending, 1);
  } else {
    dest_t old = g_dest;
    g_dest = *d;
    dest_close(&old);
  }
  pthread_mutex_unlock(&g_mu);
  gh_free(d);
  if (atomic_load(&g_running) && g_wake_fd >= 0) {
    uint64_t one = 1;
    (void)!write(g_wake_fd, &one, sizeof(one));
  }
  return 0;
}

/* ---- producers ---- */

/* wake_writer runs after a line went into |r|. */
static void wake_writer(gh_log_ring_t *r) {
  /* Pairs with the fence in writer_sleep: either the writer sees the new
   * line before it sleeps, or we see it sleeping and wake it. */
  atomic_thread_fence(memory_order_seq_cst);
  int wake = atomic_load_explicit(&g_sleeping, memory_order_relaxed) &&
             atomic_exchange(&g_sleeping, 0);
  /* Batching (BATCH_MS) must not overflow a busy ring: past half full,
   * once until the writer has drained it. */
  if (!wake && gh_log_ring_half_full(r) && !atomic_load_explicit(&r->kicked, memory_order_relaxed))
    wake = !atomic_exchange(&r->kicked, 1);
  if (wake) {
    uint64_t one = 1;
    (void)!write(g_wake_fd, &one, sizeof(one)); /* an eventfd: never blocks */
  }
}

void gh__log_emit(unsigned dest, const char *line, size_t len) {
  if (atomic_load_explicit(&g_running, memory_order_acquire)) {
    gh_log_ring_t *r = tl_ring;
    if (r != NULL && tl_gen == atomic_load_explicit(&g_gen, memory_order_relaxed)) {
      gh_log_ring_push(r, dest, line, len);
      wake_writer(r);
    } else {
      pthread_mutex_lock(&g_shared_mu);
      gh_log_ring_push(g_shared, dest, line, len);
      wake_writer(g_shared);
      pthread_mutex_unlock(&g_shared_mu);
    }
    return;
  }
  pthread_mutex_lock(&g_mu);
  write_all(g_dest.fd[dest & 1], line, len);
  pthread_mutex_unlock(&g_mu);
}

static void add_ring(gh_log_ring_t *r) {
  pthread_mutex_lock(&g_mu);
  r->next = atomic_load(&g_rings);
  atomic_store_explicit(&g_rings, r, memory_order_release);
  pthread_mutex_unlock(&g_mu);
}

void gh_log_thread_ring(void) {
  if (!atomic_load(&g_running)) return;
  unsigned gen = atomic_load(&g_gen);
  if (tl_ring != NULL && tl_gen == gen) return;
  gh_log_ring_t *r = gh_log_ring_new(g_ring_bytes);
  add_ring(r);
  tl_ring = r;
  tl_gen = gen;
}

uint64_t gh_log_dropped(void) {
  pthread_mutex_lock(&g_mu);
  uint64_t n = g_dropped_retired + atomic_load(&g_dropped_writes);
  for (gh_log_ring_t *r = atomic_load(&g_rings); r != NULL; r = r->next) {
    n += gh_log_ring_dropped(r);
  }
  pthread_mutex_unlock(&g_mu);
  return n;
}

/* ---- the writer thread ---- */

typedef struct {
  char *stage[2]; /* by destination; [1] unused while access lines share [0] */
  size_t len[2];
  int stopping;
  uint64_t deadline;
  uint64_t reported; /* dropped lines already warned about */
  uint64_t moved_ms; /* gh_now_ms of the last pass that moved lines */
  uint64_t last_warn_ms;
} writer_t;

static void drain_wake_fd(void) {
  uint64_t v;
  (void)!read(g_wake_fd, &v, sizeof(v));
}

static void note_stop(writer_t *w) {
  if (!w->stopping && atomic_load(&g_stop)) {
    w->stopping = 1;
    w->deadline = gh_now_ms() + DRAIN_MS;
  }
}

/* wait_writable waits until |fd| takes bytes. Returns 0, or -1 once
 * stopping and the drain deadline has passed. */
static int wait_writable(writer_t *w, int fd) {
  for (;;) {
    note_stop(w);
    int timeout = -1;
    if (w->stopping) {
      uint64_t now = gh_now_ms();
      timeout = now >= w->deadline ? 0 : (int)(w->deadline - now);
    }
    struct pollfd pfd[2] = {{.fd = fd, .events = POLLOUT}, {.fd = g_wake_fd, .events = POLLIN}};
    int n = poll(pfd, 2, timeout);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return 0; /* let the write say what is wrong */
    if (pfd[0].revents != 0) return 0;
    if (pfd[1].revents & POLLIN) drain_wake_fd();
    if (n == 0 && w->stopping) return -1;
    /* New destinations replace this one: what it would not take is lost. */
    if (atomic_load(&g_has_pending)) return -1;
  }
}

static uint64_t count_lines(const char *p, size_t len) {
  uint64_t n = 0;
  for (const char *e = p + len; (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++) n++;
  return n;
}

/* put writes |p| to destination |slot|; bytes it cannot write (an error,
 * or the drain deadline) are dropped and counted. */
static void put(writer_t *w, int slot, const char *p, size_t len) {
  int fd = g_dest.fd[slot], is_reg = g_dest.is_reg[slot];
  while (len > 0) {
    size_t n = len;
    if (!is_reg) {
      if (n > PIPE_BUF) n = PIPE_BUF;
      if (wait_writable(w, fd) != 0) break;
    }
    ssize_t r = write(fd, p, n);
    if (r < 0 && (errno == EINTR || (errno == EAGAIN && !is_reg))) continue;
    if (r <= 0) break;
    p += r;
    len -= (size_t)r;
  }
  if (len > 0) atomic_fetch_add(&g_dropped_writes, count_lines(p, len));
}

static void flush(writer_t *w) {
  for (int i = 0; i < 2; i++) {
    if (w->len[i] > 0) put(w, i, w->stage[i], w->len[i]);
    w->len[i] = 0;
  }
}

static void stage(writer_t *w, unsigned dest, const char *p, size_t len) {
  int slot = dest == GH__LOG_ACCESS && g_dest.path[GH__LOG_ACCESS] != NULL;
  if (w->len[slot] + len > STAGE_BYTES) flush(w);
  if (len > STAGE_BYTES) {
    put(w, slot, p, len);
    return;
  }
  memcpy(w->stage[slot] + w->len[slot], p, len);
  w->len[slot] += len;
}

/* drain moves what the rings hold to the staging buffers (and out, as
 * they fill), at most a ring's size from each per pass so that one busy
 * thread cannot starve the others. Returns whether anything moved. */
static int drain(writer_t *w) {
  int moved = 0;
  for (gh_log_ring_t *r = atomic_load_explicit(&g_rings, memory_order_acquire); r != NULL;
       r = r->next) {
    size_t budget = r->cap, len;
    unsigned dest;
    const char *p;
    while (budget > 0 && (len = gh_log_ring_peek(r, &dest, &p)) > 0) {
      stage(w, dest, p, len);
      gh_log_ring_pop(r);
      budget = len < budget ? budget - len : 0;
      moved = 1;
    }
    atomic_store_explicit(&r->kicked, 0, memory_order_relaxed);
  }
  return moved;
}

static int rings_empty(void) {
  for (gh_log_ring_t *r = atomic_load_explicit(&g_rings, memory_order_acquire); r != NULL;
       r = r->next) {
    if (atomic_load_explicit(&r->head, memory_order_relaxed) !=
        atomic_load_explicit(&r->tail, memory_order_acquire))
      return 0;
  }
  return 1;
}

/* warn_drops stages the rate-limited warning once lines were dropped; it
 * runs after a flush, when the destination has taken bytes again. */
static void warn_drops(writer_t *w) {
  uint64_t total = gh_log_dropped(), now = gh_now_ms();
  if (total <= w->reported || (w->last_warn_ms != 0 && now - w->last_warn_ms < WARN_EVERY_MS))
    return;
  if (gh_log_enabled(GH_LOG_WARN)) {
    char msg[128], line[512];
    snprintf(msg, sizeof(msg), "dropped %llu log lines: the log destination is not keeping up",
             (unsigned long long)(total - w->reported));
    size_t n = gh__log_format(line, sizeof(line), GH_LOG_WARN, "log", msg);
    stage(w, GH__LOG_OWN, line, n);
    flush(w);
  }
  w->reported = total;
  w->last_warn_ms = now;
}

static void take_pending(writer_t *w) {
  if (!atomic_exchange(&g_has_pending, 0)) return;
  flush(w); /* what is staged belongs to the old destinations */
  pthread_mutex_lock(&g_mu);
  dest_t old = g_dest;
  if (g_pending != NULL) {
    g_dest = *g_pending;
    gh_free(g_pending);
    g_pending = NULL;
  } else {
    old = (dest_t){{-1, -1}, {0, 0}, {NULL, NULL}};
  }
  pthread_mutex_unlock(&g_mu);
  dest_close(&old);
}

static void writer_sleep(void) {
  atomic_store(&g_sleeping, 1);
  atomic_thread_fence(memory_order_seq_cst);
  if (rings_empty() && !atomic_load(&g_stop) && !atomic_load(&g_reopen) &&
      !atomic_load(&g_has_pending)) {
    struct pollfd pfd = {.fd = g_wake_fd, .events = POLLIN};
    if (poll(&pfd, 1, IDLE_MS) > 0) drain_wake_fd();
  }
  atomic_store(&g_sleeping, 0);
}

/* writer_batch waits up to BATCH_MS for more lines after a pass that
 * moved some (producers do not signal meanwhile, unless a ring passes half
 * full or a stop, reopen or new destination comes). */
static void writer_batch(void) {
  if (atomic_load(&g_stop) || atomic_load(&g_reopen) || atomic_load(&g_has_pending)) return;
  struct pollfd pfd = {.fd = g_wake_fd, .events = POLLIN};
  if (poll(&pfd, 1, BATCH_MS) > 0) drain_wake_fd();
}

static void *writer_main(void *arg) {
  (void)arg;
  /* Signals belong to the main thread's loop. */
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  writer_t w = {.stage = {gh_malloc(STAGE_BYTES), gh_malloc(STAGE_BYTES)}};
  for (;;) {
    take_pending(&w);
    if (atomic_exchange(&g_reopen, 0)) {
      flush(&w);
      reopen_files(&g_dest);
    }
    note_stop(&w);
    int moved = drain(&w);
    flush(&w);
    warn_drops(&w);
    if (w.stopping && (!moved || gh_now_ms() >= w.deadline)) break;
    /* Batches only under load (passes less than BATCH_MS apart): a line
     * on its own leaves at once. */
    uint64_t now = gh_now_ms();
    if (!moved) {
      writer_sleep();
    } else {
      if (!w.stopping && now - w.moved_ms < BATCH_MS) writer_batch();
      w.moved_ms = now;
    }
  }
  gh_free(w.stage[0]);
  gh_free(w.stage[1]);
  pthread_mutex_lock(&g_done_mu);
  g_done = 1;
  pthread_cond_signal(&g_done_cond);
  pthread_mutex_unlock(&g_done_mu);
  return NULL;
}

int gh_log_start(size_t ring_bytes) {
  if (atomic_load(&g_running) || g_abandoned) return -EBUSY;
  g_wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (g_wake_fd < 0) return -errno;
  g_ring_bytes = ring_bytes ? ring_bytes : DEFAULT_RING_BYTES;
  struct stat st;
  if (g_dest.path[0] == NULL) g_dest.is_reg[0] = fstat(STDERR_FILENO, &st) == 0 && S_ISREG(st.st_mode);
  if (g_dest.path[1] == NULL) g_dest.is_reg[1] = g_dest.is_reg[0];
  g_shared = gh_log_ring_new(g_ring_bytes);
  add_ring(g_shared);
  atomic_fetch_add(&g_gen, 1);
  atomic_store(&g_stop, 0);
  g_done = 0;
  int rc = pthread_create(&g_thread, NULL, writer_main, NULL);
  if (rc != 0) {
    close(g_wake_fd);
    g_wake_fd = -1;
    pthread_mutex_lock(&g_mu);
    atomic_store(&g_rings, NULL);
    pthread_mutex_unlock(&g_mu);
    gh_log_ring_free(g_shared);
    g_shared = NULL;
    return -rc;
  }
  atomic_store_explicit(&g_running, 1, memory_order_release);
  return 0;
}

void gh_log_stop(void) {
  if (!atomic_load(&g_running) || g_abandoned) return;
  atomic_store(&g_stop, 1);
  uint64_t one = 1;
  (void)!write(g_wake_fd, &one, sizeof(one));
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += DRAIN_MS / 1000 + 2;
  pthread_mutex_lock(&g_done_mu);
  while (!g_done) {
    if (pthread_cond_timedwait(&g_done_cond, &g_done_mu, &until) == ETIMEDOUT) break;
  }
  int done = g_done;
  pthread_mutex_unlock(&g_done_mu);
  if (!done) {
    /* Stuck in a write after all (a destination poll(2) misjudged): the
     * process is about to exit; lines keep going to the rings. */
    g_abandoned = 1;
    pthread_detach(g_thread);
    return;
  }
  pthread_join(g_thread, NULL);
  atomic_store(&g_running, 0);
  take_pending(&(writer_t){0}); /* a configure that raced the stop */
  pthread_mutex_lock(&g_mu);
  gh_log_ring_t *r = atomic_load(&g_rings);
  atomic_store(&g_rings, NULL);
  for (gh_log_ring_t *next; r != NULL; r = next) {
    next = r->next;
    g_dropped_retired += gh_log_ring_dropped(r);
    gh_log_ring_free(r);
  }
  pthread_mutex_unlock(&g_mu);
  g_shared = NULL;
  close(g_wake_fd);
  g_wake_fd = -1;
}

void gh_log_reopen(void) {
  if (atomic_load(&g_running)) {
    atomic_store(&g_reopen, 1);
    uint64_t one = 1;
    (void)!write(g_wake_fd, &one, sizeof(one));
    return;
  }
  reopen_files(&g_dest);
}
