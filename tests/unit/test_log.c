/* test_log.c: common/log_ring.c and common/log_writer.c — ring order
 * across wrap-arounds, full-ring drops counted (never waited for), one
 * producer racing the consumer, and the writer thread: each thread's
 * lines in order in the file, own and access lines split, reopen after a
 * rename, and a destination nobody reads (a FIFO) costing drops, not
 * waits, with a bounded stop. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "common/log.h"
#include "common/log_ring.h"
#include "test.h"

static char tmp_dir[] = "/tmp/gh_test_log_XXXXXX";

static char *tmp_path(const char *name) { return gh_asprintf("%s/%s", tmp_dir, name); }

static char *read_all(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return gh_strdup("");
  char *buf = gh_malloc(1 << 24);
  size_t n = fread(buf, 1, (1 << 24) - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

/* ---- the ring ---- */

static void test_ring_order_across_wraps(void) {
  gh_log_ring_t *r = gh_log_ring_new(4096);
  ASSERT_EQ(r->cap, 4096);
  char line[200], want[200];
  unsigned next_in = 0, next_out = 0;
  /* Uneven lengths, never quite emptied: the records land on every
   * offset, so padding records and wrap-arounds happen many times. */
  for (int round = 0; round < 2000; round++) {
    for (int k = 0; k < 3; k++) {
      int n = snprintf(line, sizeof(line), "line %u %.*s\n", next_in, (int)(next_in % 97), 
                       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
      if (gh_log_ring_push(r, next_in & 1, line, (size_t)n) == 0) next_in++;
    }
    for (int k = 0; k < 2; k++) {
      unsigned dest;
      const char *p;
      size_t len = gh_log_ring_peek(r, &dest, &p);
      if (len == 0) break;
      int n = snprintf(want, sizeof(want), "line %u %.*s\n", next_out, (int)(next_out % 97),
                       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
      ASSERT_EQ(len, n);
      ASSERT_EQ(memcmp(p, want, len), 0);
      ASSERT_EQ(dest, next_out & 1);
      gh_log_ring_pop(r);
      next_out++;
    }
  }
  unsigned dest;
  const char *p;
  while (gh_log_ring_peek(r, &dest, &p) > 0) {
    gh_log_ring_pop(r);
    next_out++;
  }
  ASSERT_EQ(next_out, next_in);
  ASSERT_TRUE(atomic_load(&r->tail) > 10 * r->cap); /* it did wrap, many times */
  gh_log_ring_free(r);
}

static void test_ring_full_drops_and_counts(void) {
  gh_log_ring_t *r = gh_log_ring_new(100); /* rounded up to 4096 */
  ASSERT_EQ(r->cap, 4096);
  char line[60];
  memset(line, 'a', sizeof(line));
  line[59] = '\n';
  unsigned ok = 0, dropped = 0;
  for (int i = 0; i < 200; i++) {
    if (gh_log_ring_push(r, 0, line, sizeof(line)) == 0) ok++;
    else dropped++;
  }
  /* 64 bytes a record (4 of header, 60 of line): exactly 64 fit. */
  ASSERT_EQ(ok, 64);
  ASSERT_EQ(dropped, 136);
  ASSERT_UEQ(gh_log_ring_dropped(r), 136);
  /* Too long for any ring: dropped too, not truncated. */
  char *big = gh_malloc(5000);
  memset(big, 'b', 5000);
  ASSERT_EQ(gh_log_ring_push(r, 0, big, 5000), -1);
  gh_free(big);
  ASSERT_UEQ(gh_log_ring_dropped(r), 137);
  /* Space freed by the consumer is usable again at once. */
  unsigned dest;
  const char *p;
  ASSERT_EQ(gh_log_ring_peek(r, &dest, &p), 60);
  gh_log_ring_pop(r);
  line[0] = 'z';
  ASSERT_EQ(gh_log_ring_push(r, 1, line, sizeof(line)), 0);
  ASSERT_EQ(gh_log_ring_push(r, 1, "y\n", 2), -1); /* full again */
  ASSERT_UEQ(gh_log_ring_dropped(r), 138);
  for (int i = 0; i < 63; i++) {
    ASSERT_EQ(gh_log_ring_peek(r, &dest, &p), 60);
    ASSERT_EQ(dest, 0);
    ASSERT_EQ(p[0], 'a');
    gh_log_ring_pop(r);
  }
  ASSERT_EQ(gh_log_ring_peek(r, &dest, &p), 60); /* the newest, after the wrap */
  ASSERT_EQ(dest, 1);
  ASSERT_EQ(p[0], 'z');
  gh_log_ring_pop(r);
  ASSERT_EQ(gh_log_ring_peek(r, &dest, &p), 0);
  gh_log_ring_free(r);
}

enum { RACE_LINES = 200000 };

static atomic_int race_done;

static void *race_producer(void *arg) {
  gh_log_ring_t *r = arg;
  char line[64];
  for (unsigned i = 0; i < RACE_LINES; i++) {
    int n = snprintf(line, sizeof(line), "%u %.*s\n", i, (int)(i % 23), "yyyyyyyyyyyyyyyyyyyyyyy");
    gh_log_ring_push(r, 0, line, (size_t)n);
  }
  atomic_store(&race_done, 1);
  return NULL;
}

static void test_ring_one_producer_one_consumer(void) {
  gh_log_ring_t *r = gh_log_ring_new(4096);
  pthread_t t;
  pthread_create(&t, NULL, race_producer, r);
  long last = -1;
  uint64_t got = 0, bad = 0;
  for (;;) {
    int done = atomic_load(&race_done); /* read before the ring: nothing comes after */
    unsigned dest;
    const char *p;
    size_t len = gh_log_ring_peek(r, &dest, &p);
    if (len == 0) {
      if (done) break;
      continue;
    }
    char copy[64];
    if (len >= sizeof(copy)) {
      bad++;
      len = sizeof(copy) - 1;
    }
    memcpy(copy, p, len);
    copy[len] = '\0';
    long n = strtol(copy, NULL, 10);
    if (n <= last || copy[len - 1] != '\n') bad++;
    last = n;
    got++;
    gh_log_ring_pop(r);
  }
  pthread_join(t, NULL);
  ASSERT_UEQ(bad, 0);
  ASSERT_UEQ(got + gh_log_ring_dropped(r), RACE_LINES);
  ASSERT_TRUE(got > 0);
  gh_log_ring_free(r);
}

/* ---- the writer thread ---- */

enum { THREADS = 4, PER_THREAD = 3000 };

static void *log_thread(void *arg) {
  unsigned id = (unsigned)(uintptr_t)arg;
  gh_log_thread_ring();
  for (unsigned i = 0; i < PER_THREAD; i++) GH_INFO("test", "t%u n%u", id, i);
  return NULL;
}

static void test_writer_keeps_each_threads_order(void) {
  char *path = tmp_path("order.log");
  uint64_t dropped0 = gh_log_dropped();
  ASSERT_EQ(gh_log_configure(path, NULL), 0);
  ASSERT_EQ(gh_log_start(1 << 20), 0);
  pthread_t t[THREADS];
  for (uintptr_t i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, log_thread, (void *)i);
  for (unsigned i = 0; i < PER_THREAD; i++) GH_INFO("test", "t%u n%u", (unsigned)THREADS, i);
  for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  gh_log_stop();
  ASSERT_EQ(gh_log_configure(NULL, NULL), 0);
  char *text = read_all(path);
  long next[THREADS + 1] = {0};
  unsigned lines = 0, disorder = 0;
  for (char *s = text, *nl; (nl = strchr(s, '\n')) != NULL; s = nl + 1) {
    unsigned id, n;
    char *m = strstr(s, "test: t");
    if (m == NULL || m > nl || sscanf(m, "test: t%u n%u", &id, &n) != 2 || id > THREADS) continue;
    if ((long)n < next[id]) disorder++;
    next[id] = (long)n + 1;
    lines++;
  }
  ASSERT_EQ(disorder, 0);
  ASSERT_UEQ(lines + (gh_log_dropped() - dropped0), (THREADS + 1) * PER_THREAD);
  /* A megabyte per ring and a file that takes everything: nothing lost. */
  ASSERT_EQ(lines, (THREADS + 1) * PER_THREAD);
  gh_free(text);
  unlink(path);
  gh_free(path);
}

static void test_writer_splits_access_lines(void) {
  char *own = tmp_path("own.log"), *acc = tmp_path("access.log");
  ASSERT_EQ(gh_log_configure(own, acc), 0);
  GH_INFO("test", "direct own line"); /* before the writer: written at once */
  gh_log_access("direct access line\n", 19);
  ASSERT_EQ(gh_log_start(0), 0);
  GH_INFO("test", "queued own line");
  gh_log_access("queued access line\n", 19);
  gh_log_stop();
  GH_INFO("test", "after stop");
  ASSERT_EQ(gh_log_configure(NULL, NULL), 0);
  char *o = read_all(own), *a = read_all(acc);
  ASSERT_CONTAINS(o, "direct own line");
  ASSERT_CONTAINS(o, "queued own line");
  ASSERT_CONTAINS(o, "after stop");
  ASSERT_TRUE(strstr(o, "access line") == NULL);
  ASSERT_STR_EQ(a, "direct access line\nqueued access line\n");
  struct stat st;
  ASSERT_EQ(stat(acc, &st), 0);
  mode_t mask = umask(0);
  umask(mask);
  ASSERT_EQ(st.st_mode & 0777, 0640 & ~mask);
  gh_free(o);
  gh_free(a);
  unlink(own);
  unlink(acc);
  gh_free(own);
  gh_free(acc);
}

static void test_writer_reopens_after_rename(void) {
  char *path = tmp_path("rot.log"), *moved = tmp_path("rot.log.1");
  ASSERT_EQ(gh_log_configure(path, NULL), 0);
  ASSERT_EQ(gh_log_start(0), 0);
  GH_INFO("test", "before rotation");
  /* Until the writer has written it, the line could follow the rename. */
  for (int i = 0; i < 5000; i++) {
    char *t = read_all(path);
    int seen = strstr(t, "before rotation") != NULL;
    gh_free(t);
    if (seen) break;
    usleep(1000);
  }
  ASSERT_EQ(rename(path, moved), 0);
  gh_log_reopen();
  struct stat st;
  for (int i = 0; i < 5000 && stat(path, &st) != 0; i++) usleep(1000);
  ASSERT_EQ(stat(path, &st), 0);
  GH_INFO("test", "after rotation");
  gh_log_stop();
  ASSERT_EQ(gh_log_configure(NULL, NULL), 0);
  char *old = read_all(moved), *cur = read_all(path);
  ASSERT_CONTAINS(old, "before rotation");
  ASSERT_TRUE(strstr(old, "after rotation") == NULL);
  ASSERT_CONTAINS(cur, "after rotation");
  gh_free(old);
  gh_free(cur);
  unlink(path);
  unlink(moved);
  gh_free(path);
  gh_free(moved);
}

static void *flood_thread(void *arg) {
  gh_log_thread_ring();
  for (unsigned i = 0; i < 50000; i++) GH_INFO("test", "flood %u %s", i, (const char *)arg);
  return NULL;
}

static void test_writer_never_waits_for_a_stuck_destination(void) {
  char *fifo = tmp_path("stuck.fifo");
  ASSERT_EQ(mkfifo(fifo, 0600), 0);
  /* A reader that never reads: the pipe fills after 64 KiB. */
  int rd = open(fifo, O_RDWR | O_NONBLOCK);
  ASSERT_TRUE(rd >= 0);
  uint64_t dropped0 = gh_log_dropped();
  ASSERT_EQ(gh_log_configure(fifo, NULL), 0);
  ASSERT_EQ(gh_log_start(64 * 1024), 0);
  char pad[200];
  memset(pad, 'p', sizeof(pad) - 1);
  pad[sizeof(pad) - 1] = '\0';
  pthread_t t;
  uint64_t t0 = gh_now_ms();
  pthread_create(&t, NULL, flood_thread, pad);
  pthread_join(t, NULL); /* 10 MB into a 64 KiB pipe: only possible by dropping */
  uint64_t t1 = gh_now_ms();
  ASSERT_TRUE(gh_log_dropped() - dropped0 > 10000);
  gh_log_stop(); /* the drain at exit gives up after a bounded time */
  uint64_t t2 = gh_now_ms();
  ASSERT_TRUE(t1 - t0 < 20000);
  ASSERT_TRUE(t2 - t1 < 8000);
  ASSERT_EQ(gh_log_configure(NULL, NULL), 0);
  /* What reached the pipe is whole lines, in order. */
  char buf[4096];
  ssize_t n = read(rd, buf, sizeof(buf) - 1);
  ASSERT_TRUE(n > 0);
  buf[n] = '\0';
  ASSERT_CONTAINS(buf, "flood 0 ppp");
  close(rd);
  unlink(fifo);
  gh_free(fifo);
}

int main(void) {
  if (mkdtemp(tmp_dir) == NULL) return 1;
  RUN(test_ring_order_across_wraps);
  RUN(test_ring_full_drops_and_counts);
  RUN(test_ring_one_producer_one_consumer);
  RUN(test_writer_keeps_each_threads_order);
  RUN(test_writer_splits_access_lines);
  RUN(test_writer_reopens_after_rename);
  RUN(test_writer_never_waits_for_a_stuck_destination);
  rmdir(tmp_dir);
  TEST_EXIT();
}
