/* log.h: levelled logging to stderr or files, never blocking a worker.
 *
 * Every line carries a timestamp, a level and a component ("proxy", "acme",
 * "conf", ...). The format is text by default or JSON lines. Logging is safe
 * from any thread: each line is formatted into a local buffer first.
 *
 * Until gh_log_start (and after gh_log_stop) a line is written directly,
 * with one write(2) under a lock, so nothing is lost at startup, in
 * one-shot commands or at exit. While the writer thread runs, no other
 * thread writes: a thread that called gh_log_thread_ring (a worker) queues
 * its lines in a bounded ring of its own, any other thread in one shared
 * ring under a short lock, and the writer drains them all in batches. A
 * line that does not fit is dropped and counted (gh_log_dropped), never
 * waited for; one thread's lines keep their order.
 *
 * Two destinations: gatehouse's own lines and access-log lines, each
 * stderr or a file (gh_log_configure); files are reopened on
 * gh_log_reopen (logrotate's move, then SIGUSR1). */
#ifndef GH_LOG_H
#define GH_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  GH_LOG_DEBUG = 0,
  GH_LOG_INFO = 1,
  GH_LOG_WARN = 2,
  GH_LOG_ERROR = 3,
} gh_log_level_t;

typedef enum {
  GH_LOG_TEXT = 0,
  GH_LOG_JSON = 1,
} gh_log_format_t;

/* gh_log_setup sets the minimum level and the format for all threads. */
void gh_log_setup(gh_log_level_t level, gh_log_format_t format);

/* gh_log_enabled reports whether |level| would be written, so callers can
 * skip building expensive arguments. */
int gh_log_enabled(gh_log_level_t level);

/* gh_log writes one line. The message must not contain a newline. */
void gh_log(gh_log_level_t level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* gh_log_access writes |line| (|len| bytes, ending in '\n') as is to the
 * access-log destination: the access log formats its own lines. */
void gh_log_access(const char *line, size_t len);

/* gh_log_configure makes |file| the destination of gatehouse's own lines
 * and |access_file| that of access lines (NULL: stderr; |access_file|
 * NULL: wherever |file| goes). Files are opened O_APPEND|O_CREAT, mode
 * 0640, by the caller's thread, and take over from the previous
 * destinations (the writer thread closes those once it has switched).
 * Returns 0, or -1 with the reason logged, keeping the previous ones. */
int gh_log_configure(const char *file, const char *access_file);

/* gh_log_start starts the writer thread; from then on lines go through
 * rings of |ring_bytes| each (0: 256 KiB). Returns 0, or a negative errno
 * with logging left direct. */
int gh_log_start(size_t ring_bytes);

/* gh_log_stop writes what the rings hold (for at most a few seconds if
 * the destination does not take it), stops the writer and frees the
 * rings; logging is direct again afterwards. Threads that had a ring must
 * not log concurrently. Does nothing if the writer is not running. */
void gh_log_stop(void);

/* gh_log_thread_ring gives the calling thread a ring of its own, drained
 * by the writer from the next line on (a worker calls it once at start).
 * It stays valid until gh_log_stop. */
void gh_log_thread_ring(void);

/* gh_log_reopen asks the writer thread to reopen the log files (the
 * SIGUSR1 handler); without the writer, it reopens them itself. Never
 * blocks on the destination. */
void gh_log_reopen(void);

/* gh_log_dropped returns how many lines were dropped because a ring was
 * full (or the destination failed), since the process started. */
uint64_t gh_log_dropped(void);

/* gh_log_level_parse maps "debug", "info", "warn", "error" to a level;
 * returns 0 on success, -1 if unknown. */
int gh_log_level_parse(const char *name, gh_log_level_t *out_level);

#define GH_DEBUG(comp, ...) \
  do { if (gh_log_enabled(GH_LOG_DEBUG)) gh_log(GH_LOG_DEBUG, comp, __VA_ARGS__); } while (0)
#define GH_INFO(comp, ...) gh_log(GH_LOG_INFO, comp, __VA_ARGS__)
#define GH_WARN(comp, ...) gh_log(GH_LOG_WARN, comp, __VA_ARGS__)
#define GH_ERROR(comp, ...) gh_log(GH_LOG_ERROR, comp, __VA_ARGS__)

#endif
