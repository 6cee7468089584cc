/* log.h: levelled logging to stderr.
 *
 * Every line carries a timestamp, a level and a component ("proxy", "acme",
 * "conf", ...). The format is text by default or JSON lines. Logging is safe
 * from any thread: each line is formatted into a local buffer and written
 * with one write(2). */
#ifndef GH_LOG_H
#define GH_LOG_H

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

/* gh_log_raw writes |line| (which must end in '\n') as is: used by the
 * access log, whose lines are already formatted. */
void gh_log_raw(const char *line, unsigned len);

/* gh_log_level_parse maps "debug", "info", "warn", "error" to a level;
 * returns 0 on success, -1 if unknown. */
int gh_log_level_parse(const char *name, gh_log_level_t *out_level);

#define GH_DEBUG(comp, ...) \
  do { if (gh_log_enabled(GH_LOG_DEBUG)) gh_log(GH_LOG_DEBUG, comp, __VA_ARGS__); } while (0)
#define GH_INFO(comp, ...) gh_log(GH_LOG_INFO, comp, __VA_ARGS__)
#define GH_WARN(comp, ...) gh_log(GH_LOG_WARN, comp, __VA_ARGS__)
#define GH_ERROR(comp, ...) gh_log(GH_LOG_ERROR, comp, __VA_ARGS__)

#endif
