/* ui.h: the dashboard's files (ui/), embedded in the binary at build time
 * (cmake/embed.cmake) and served by the admin API at "/" and "/ui/...". */
#ifndef GH_PROXY_UI_H
#define GH_PROXY_UI_H

#include <stddef.h>

typedef struct {
  const char *path; /* as served: "/", "/ui/app.js" */
  const unsigned char *data;
  size_t len;
} px_ui_asset_t;

/* Ends with an entry whose |path| is NULL. */
extern const px_ui_asset_t px_ui_assets[];

#endif
