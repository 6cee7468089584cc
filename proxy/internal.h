/* internal.h: the data plane's module headers, for the files of proxy/
 * that use several of them (server.c, admin.c, metrics.c, ...). Each
 * module's own .c includes only what it needs. */
#ifndef GH_PROXY_INTERNAL_H
#define GH_PROXY_INTERNAL_H

#include "proxy/conn.h"
#include "proxy/exchange.h"
#include "proxy/gen.h"
#include "proxy/h1.h"
#include "proxy/upstream.h"
#include "proxy/worker.h"

/* accesslog.c */
void px_access_log(px_exchange_t *ex);

#endif
