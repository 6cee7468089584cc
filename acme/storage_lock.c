/* storage_lock.c: per-name locks, so that two processes sharing a storage
 * directory never order the same name at once (why flock(2), and the
 * contract, are in storage.h at acme__storage_lock). */
#include "acme/storage_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "common/log.h"

/* How often a locker retries when unlockers keep replacing the file. */
#define MAX_RETRIES 8

typedef struct {
  acme_storage_lock_t base;
  int fd;
  char *path;
} dir_lock_t;

static void dir_unlock(acme_storage_lock_t *l);

/* holder_record formats what a lock file says about its holder. */
static int holder_record(char *out, size_t out_size, unsigned ttl_s) {
  char host[256];
  if (gethostname(host, sizeof(host)) != 0) strcpy(host, "?");
  host[sizeof(host) - 1] = '\0';
  return snprintf(out, out_size, "pid=%ld host=%s expires=%lld\n", (long)getpid(), host,
                  (long long)time(NULL) + ttl_s);
}

/* held_message describes the holder of the lock open at |fd|. */
static char *held_message(int fd, const char *path) {
  char buf[320];
  ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
  buf[n > 0 ? n : 0] = '\0';
  buf[strcspn(buf, "\n")] = '\0';
  if (buf[0] == '\0') return gh_asprintf("%s: held by another process", path);
  char *record = acme__storage_printable(buf);
  const char *expires = strstr(buf, "expires=");
  long long when = expires ? strtoll(expires + 8, NULL, 10) : 0;
  char *msg = gh_asprintf("%s: held (%s)%s", path, record,
                          expires && when < (long long)time(NULL)
                              ? "; past its expiry but the holder is still running"
                              : "");
  gh_free(record);
  return msg;
}

int acme__dir_lock(acme_storage_t *st, acme_storage_lock_t **out_lock, char **out_err,
                   const char *name, unsigned ttl_s) {
  *out_lock = NULL;
  char file_name[NAME_MAX + 1];
  int ret = acme__storage_name_encode(file_name, sizeof(file_name), out_err, name);
  if (ret != 0) return ret;
  char *path = gh_asprintf("%s/locks/%s", st->root, file_name);
  for (int i = 0; i < MAX_RETRIES; i++) {
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
      ret = acme__storage_sys_err(out_err, path, "cannot open lock file");
      break;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) {
        *out_err = held_message(fd, path);
        ret = ACME_STORAGE_LOCK_HELD;
      } else {
        ret = acme__storage_sys_err(out_err, path, "cannot lock");
      }
      close(fd);
      break;
    }
    /* An unlocker unlinks the file before it lets go, so we may hold the
     * lock on a file that is no longer at |path| while someone else holds
     * the new one. Only the file at |path| counts. */
    struct stat locked, now;
    if (fstat(fd, &locked) != 0 || stat(path, &now) != 0 || locked.st_dev != now.st_dev ||
        locked.st_ino != now.st_ino) {
      close(fd);
      ret = -EAGAIN;
      continue;
    }
    char record[320];
    int len = holder_record(record, sizeof(record), ttl_s);
    /* The record is for people; the lock is the flock. */
    if (ftruncate(fd, 0) != 0 || pwrite(fd, record, (size_t)len, 0) != len) {
      GH_WARN("acme", "storage: %s: cannot record the holder: %s", path, strerror(errno));
    }
    dir_lock_t *lock = gh_calloc(1, sizeof(*lock));
    lock->base.release = dir_unlock;
    lock->fd = fd;
    lock->path = path;
    *out_lock = &lock->base;
    return ACME_STORAGE_LOCK_ACQUIRED;
  }
  if (ret == -EAGAIN) *out_err = gh_asprintf("%s: lock file replaced again and again", path);
  gh_free(path);
  return ret;
}

int acme__storage_lock(acme_storage_t *st, acme_storage_lock_t **out_lock, char **out_err,
                       const char *name, unsigned ttl_s) {
  return st->ops->lock(st, out_lock, out_err, name, ttl_s);
}

void acme__storage_unlock(acme_storage_lock_t *lock) {
  if (lock != NULL) lock->release(lock);
}

int acme__storage_lock_fresh(const acme_storage_lock_t *lock, char **out_why) {
  return lock == NULL || lock->fresh == NULL || lock->fresh(lock, out_why);
}

static void dir_unlock(acme_storage_lock_t *l) {
  dir_lock_t *lock = (dir_lock_t *)l;
  /* Unlink while still holding it: whoever locks the unlinked file next
   * sees that it is no longer at the path and tries again. */
  unlink(lock->path);
  close(lock->fd);
  gh_free(lock->path);
  gh_free(lock);
}
