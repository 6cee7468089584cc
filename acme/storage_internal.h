/* storage_internal.h: what the storage files (storage.c, storage_names.c,
 * storage_lock.c) share. Nothing outside them includes it. */
#ifndef GH_ACME_STORAGE_INTERNAL_H
#define GH_ACME_STORAGE_INTERNAL_H

#include "acme/storage.h"

struct acme_storage {
  char *root; /* no trailing slash */
};

/* acme__storage_sys_err sets |*out_err| to "|path|: |what|: <errno text>"
 * and returns the negative errno, which the caller must not have disturbed
 * since the failing call. */
int acme__storage_sys_err(char **out_err, const char *path, const char *what);

/* acme__storage_printable returns a copy of |s| fit for a message (caller
 * frees): at most 80 characters, anything but printable ASCII as '?'. */
char *acme__storage_printable(const char *s);

/* acme__storage_account_id_check accepts 1-200 of [a-z0-9._@+-], starting
 * with a letter or digit: enough for an e-mail address or a key thumbprint,
 * and never ".", "..", a hidden file or a temporary. Returns 0, or -EINVAL
 * with |*out_err|. */
int acme__storage_account_id_check(char **out_err, const char *id);

#endif
