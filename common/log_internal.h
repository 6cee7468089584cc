/* log_internal.h: what log.c and log_writer.c share; not part of the API. */
#ifndef GH_LOG_INTERNAL_H
#define GH_LOG_INTERNAL_H

#include <stddef.h>

#include "common/log.h"

/* The two destinations a line can have. */
enum { GH__LOG_OWN = 0, GH__LOG_ACCESS = 1 };

/* gh__log_emit hands one line (ending in '\n') to the writer thread's
 * rings while it runs, or writes it directly (log_writer.c). */
void gh__log_emit(unsigned dest, const char *line, size_t len);

/* gh__log_format formats one line of gatehouse's own log into |line|
 * (|cap| bytes, at least 64) in the configured format and returns its
 * length, '\n' included (log.c). */
size_t gh__log_format(char *line, size_t cap, gh_log_level_t level, const char *component,
                      const char *msg);

#endif
