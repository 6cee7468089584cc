/* storage.c: the ACME storage directory (layout, names and the crash-safety
 * argument are in storage.h).
 *
 * Accepted input: certificate names, CA directory URLs and account ids come
 * from configuration, ClientHellos and the CA, so each is checked against a
 * whitelist before it becomes a path component. Stored files are read with
 * a size limit and parsed as untrusted: a corrupt entry is an error that
 * names the file, never a crash.
 *
 * Writers of one certificate name (save, delete) serialise on flock() of
 * the name's directory for the few milliseconds a write takes; readers take
 * no lock at all. A reader resolves `current` once and reads the three
 * files from that immutable version; if one of them vanishes because two
 * saves in a row collected its version, `current` has moved on and the
 * reader starts again from the new one. */
#include "acme/storage_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/rand.h>

#include "common/common.h"
#include "common/log.h"

#define MAX_JSON_FILE (1u << 20)
#define TMP_PREFIX ".tmp-"
#define VERSION_PREFIX "v-"
#define CURRENT "current"
/* How often a reader restarts because writers replaced the version it was
 * reading, and how often a writer retries a directory deleted under it. */
#define MAX_RETRIES 8

static const char *const bundle_files[] = {"cert.pem", "key.pem", "meta.json"};

int acme__storage_sys_err(char **out_err, const char *path, const char *what) {
  int e = errno ? errno : EIO;
  *out_err = gh_asprintf("%s: %s: %s", path, what, strerror(e));
  return -e;
}

static char *join(const char *dir, const char *file) { return gh_asprintf("%s/%s", dir, file); }

/* json_reason returns NULL if the |len| bytes at |text| are exactly one
 * JSON object (whitespace around it aside), else why not. */
static const char *json_reason(const char *text, size_t len) {
  const char *end = NULL;
  cJSON *json = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  const char *why = NULL;
  if (json == NULL) {
    why = "is not valid JSON (truncated?)";
  } else if (!cJSON_IsObject(json)) {
    why = "is not a JSON object";
  } else {
    for (; end < text + len; end++) {
      if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
        why = "has bytes after the JSON object";
        break;
      }
    }
  }
  cJSON_Delete(json);
  return why;
}

/* ---- files ---- */

/* sync_dir makes the entries of |dir| durable: a rename is not on disk
 * until its directory is. */
static int sync_dir(char **out_err, const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return acme__storage_sys_err(out_err, dir, "cannot open directory");
  int ret = 0;
  if (fsync(fd) != 0) ret = acme__storage_sys_err(out_err, dir, "fsync failed");
  close(fd);
  return ret;
}

/* make_dirs creates |path| and its missing parents 0700, syncing each
 * parent that gains an entry. Existing directories keep their modes: we
 * never loosen them, and tightening one the operator chose is not ours to
 * do. */
static int make_dirs(char **out_err, const char *path) {
  struct stat sb;
  if (stat(path, &sb) == 0) {
    if (S_ISDIR(sb.st_mode)) return 0;
    errno = ENOTDIR;
    return acme__storage_sys_err(out_err, path, "cannot use as a directory");
  }
  char *copy = gh_strdup(path);
  int ret = 0;
  for (char *p = copy + 1; ret == 0; p++) {
    if (*p != '/' && *p != '\0') continue;
    char saved = *p;
    *p = '\0';
    if (mkdir(copy, 0700) == 0) {
      char *slash = strrchr(copy, '/');
      if (slash == NULL) {
        ret = sync_dir(out_err, ".");
      } else {
        *slash = '\0';
        ret = sync_dir(out_err, slash == copy ? "/" : copy);
        *slash = '/';
      }
    } else if (errno != EEXIST) {
      ret = acme__storage_sys_err(out_err, copy, "cannot create directory");
    } else if (stat(copy, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
      errno = ENOTDIR;
      ret = acme__storage_sys_err(out_err, copy, "cannot use as a directory");
    }
    *p = saved;
    if (saved == '\0') break;
  }
  gh_free(copy);
  return ret;
}

/* tmp_name returns a new name for a temporary: ".tmp-<pid>-<hex>". The pid
 * lets acme_storage_open tell a crashed writer's leftovers from a live
 * writer's work in progress. */
static char *tmp_name(void) {
  uint64_t r;
  RAND_bytes((uint8_t *)&r, sizeof(r));
  return gh_asprintf(TMP_PREFIX "%ld-%016llx", (long)getpid(), (unsigned long long)r);
}

/* is_stale_tmp reports whether the directory entry |name| is a temporary
 * whose writer is no longer running on this host. */
static int is_stale_tmp(const char *name) {
  size_t prefix_len = strlen(TMP_PREFIX);
  if (strncmp(name, TMP_PREFIX, prefix_len) != 0) return 0;
  char *end;
  errno = 0;
  long pid = strtol(name + prefix_len, &end, 10);
  if (errno != 0 || end == name + prefix_len || *end != '-' || pid <= 0 || pid > INT_MAX ||
      pid == (long)getpid()) {
    return 0;
  }
  /* EPERM means the process exists under another user: not stale. */
  return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* remove_tree removes |path|, whatever it is; a directory with everything
 * in it. Returns 0 (also if it did not exist) or a negative errno. */
static int remove_tree(const char *path) {
  struct stat sb;
  if (lstat(path, &sb) != 0) return errno == ENOENT ? 0 : -errno;
  if (!S_ISDIR(sb.st_mode)) return (unlink(path) == 0 || errno == ENOENT) ? 0 : -errno;
  DIR *dir = opendir(path);
  if (dir == NULL) return -errno;
  int ret = 0;
  struct dirent *de;
  while ((de = readdir(dir)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    char *child = join(path, de->d_name);
    int r = remove_tree(child);
    if (ret == 0) ret = r;
    gh_free(child);
  }
  closedir(dir);
  if (rmdir(path) != 0 && errno != ENOENT && ret == 0) ret = -errno;
  return ret;
}

/* clean_tmp removes the stale temporaries in |dir| (not below it). */
static void clean_tmp(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL) return;
  int removed = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (!is_stale_tmp(de->d_name)) continue;
    char *path = join(dir, de->d_name);
    if (remove_tree(path) == 0) {
      GH_INFO("acme", "storage: removed %s, left by a writer that died", path);
      removed = 1;
    }
    gh_free(path);
  }
  closedir(d);
  char *err = NULL;
  if (removed && sync_dir(&err, dir) != 0) gh_free(err);
}

/* clean_tmp_below cleans |dir| and each of its subdirectories. */
static void clean_tmp_below(const char *dir) {
  clean_tmp(dir);
  DIR *d = opendir(dir);
  if (d == NULL) return;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') continue;
    char *path = join(dir, de->d_name);
    struct stat sb;
    if (lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) clean_tmp(path);
    gh_free(path);
  }
  closedir(d);
}

static int write_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

/* write_new creates |path|, which must not exist, with |mode|, writes
 * |data| and fsyncs it. On failure nothing is left behind. */
static int write_new(char **out_err, const char *path, gh_str_t data, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return acme__storage_sys_err(out_err, path, "cannot create");
  int ret = 0;
  if (write_all(fd, data.ptr, data.len) != 0) {
    ret = acme__storage_sys_err(out_err, path, "write failed");
  } else if (fsync(fd) != 0) {
    ret = acme__storage_sys_err(out_err, path, "fsync failed");
  }
  if (close(fd) != 0 && ret == 0) ret = acme__storage_sys_err(out_err, path, "close failed");
  if (ret != 0) unlink(path);
  return ret;
}

/* install renames the temporary |tmp| over |dir|/|file| (removing |tmp| if
 * that fails) and syncs |dir|: the one step that publishes a write. */
static int install(char **out_err, const char *dir, const char *tmp, const char *file) {
  char *path = join(dir, file);
  int ret = 0;
  if (rename(tmp, path) != 0) {
    ret = acme__storage_sys_err(out_err, path, "cannot rename into place");
    unlink(tmp);
  }
  if (ret == 0) ret = sync_dir(out_err, dir);
  gh_free(path);
  return ret;
}

/* write_atomic replaces |dir|/|file| with |data|: a temporary in |dir|,
 * renamed over the target once it is on disk. */
static int write_atomic(char **out_err, const char *dir, const char *file, gh_str_t data,
                        mode_t mode) {
  char *name = tmp_name();
  char *tmp = join(dir, name);
  int ret = write_new(out_err, tmp, data, mode);
  if (ret == 0) ret = install(out_err, dir, tmp, file);
  gh_free(name);
  gh_free(tmp);
  return ret;
}

/* read_small reads the regular file |path| of at most |max| bytes into a
 * new NUL-terminated buffer. Returns 0, or a negative errno (-ENOENT if it
 * does not exist) with |*out_err| naming |path|. */
static int read_small(char **out, size_t *out_len, char **out_err, const char *path, size_t max) {
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return acme__storage_sys_err(out_err, path, "cannot open");
  struct stat sb;
  int ret = 0;
  char *buf = NULL;
  size_t len = 0;
  if (fstat(fd, &sb) != 0) {
    ret = acme__storage_sys_err(out_err, path, "cannot stat");
  } else if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > max) {
    *out_err = gh_asprintf("%s: not a regular file of at most %zu bytes", path, max);
    ret = -EBADMSG;
  } else {
    buf = gh_malloc(max + 1);
    for (;;) {
      ssize_t n = read(fd, buf + len, max + 1 - len);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) ret = acme__storage_sys_err(out_err, path, "read failed");
      if (n <= 0) break;
      len += (size_t)n;
      if (len > max) {
        *out_err = gh_asprintf("%s: larger than %zu bytes", path, max);
        ret = -EBADMSG;
        break;
      }
    }
  }
  close(fd);
  if (ret != 0) {
    gh_free(buf);
    return ret;
  }
  buf[len] = '\0';
  *out = buf;
  if (out_len != NULL) *out_len = len;
  return 0;
}

/* read_json reads |path| and checks that it holds one JSON object. */
static int read_json(char **out, char **out_err, const char *path) {
  char *text;
  size_t len;
  int ret = read_small(&text, &len, out_err, path, MAX_JSON_FILE);
  if (ret != 0) return ret;
  const char *why = json_reason(text, len);
  if (why != NULL) {
    *out_err = gh_asprintf("%s: %s", path, why);
    gh_free(text);
    return -EBADMSG;
  }
  *out = text;
  return 0;
}

/* ---- opening ---- */

static const acme_storage_ops_t dir_ops;

acme_storage_t *acme_storage_open(char **out_err, const char *root) {
  if (root == NULL || root[0] == '\0') {
    *out_err = gh_strdup("storage directory: empty path");
    return NULL;
  }
  size_t len = strlen(root);
  while (len > 1 && root[len - 1] == '/') len--;
  char *path = gh_strndup(root, len);
  struct stat sb;
  if (make_dirs(out_err, path) != 0) goto err;
  if (stat(path, &sb) != 0) {
    acme__storage_sys_err(out_err, path, "cannot stat");
    goto err;
  }
  /* Anyone who can write the root can swap a key or a certificate. */
  if (sb.st_mode & S_IWOTH) {
    *out_err = gh_asprintf("%s: writable by every user (mode %04o); run chmod o-w on it", path,
                           (unsigned)(sb.st_mode & 07777));
    goto err;
  }
  if (access(path, W_OK | X_OK) != 0) {
    acme__storage_sys_err(out_err, path, "storage directory is not writable");
    goto err;
  }
  static const char *const subdirs[] = {"accounts", "certs", "locks"};
  for (size_t i = 0; i < GH_ARRAY_LEN(subdirs); i++) {
    char *sub = join(path, subdirs[i]);
    int ret = make_dirs(out_err, sub);
    if (ret == 0) clean_tmp_below(sub);
    gh_free(sub);
    if (ret != 0) goto err;
  }
  clean_tmp(path);
  acme_storage_t *st = gh_calloc(1, sizeof(*st));
  st->ops = &dir_ops;
  st->root = path;
  return st;
err:
  gh_free(path);
  return NULL;
}

void acme_storage_free(acme_storage_t *st) {
  if (st != NULL) st->ops->free(st);
}

static void dir_free(acme_storage_t *st) {
  gh_free(st->root);
  gh_free(st);
}

/* ---- accounts ---- */

/* account_dir checks |ca_url| and |account_id| and returns the account's
 * directory and file name (caller frees both). */
static int account_path(acme_storage_t *st, char **out_dir, char **out_file, char **out_err,
                        const char *ca_url, const char *account_id) {
  char ca[NAME_MAX + 1];
  int ret = acme__storage_ca_dir(ca, sizeof(ca), out_err, ca_url);
  if (ret == 0) ret = acme__storage_account_id_check(out_err, account_id);
  if (ret != 0) return ret;
  *out_dir = gh_asprintf("%s/accounts/%s", st->root, ca);
  *out_file = gh_asprintf("%s.json", account_id);
  return 0;
}

static int dir_account_save(acme_storage_t *st, char **out_err, const char *ca_url,
                              const char *account_id, gh_str_t json) {
  char *dir, *file;
  int ret = account_path(st, &dir, &file, out_err, ca_url, account_id);
  if (ret != 0) return ret;
  const char *why = json_reason(json.ptr, json.len);
  if (why != NULL) {
    *out_err =
        gh_asprintf("account %s at %s: refusing to store JSON that %s", account_id, dir, why);
    ret = -EINVAL;
  }
  if (ret == 0) ret = make_dirs(out_err, dir);
  if (ret == 0) ret = write_atomic(out_err, dir, file, json, 0600);
  gh_free(dir);
  gh_free(file);
  return ret;
}

static int dir_account_load(acme_storage_t *st, char **out_json, char **out_err,
                              const char *ca_url, const char *account_id) {
  *out_json = NULL;
  char *dir, *file;
  int ret = account_path(st, &dir, &file, out_err, ca_url, account_id);
  if (ret != 0) return ret;
  char *path = join(dir, file);
  ret = read_json(out_json, out_err, path);
  gh_free(path);
  gh_free(dir);
  gh_free(file);
  return ret;
}

/* ---- certificates ---- */

static char *cert_dir(acme_storage_t *st, const char *file_name) {
  return gh_asprintf("%s/certs/%s", st->root, file_name);
}

/* lock_dir opens the directory |dir| (creating it if |create|) and holds
 * flock(LOCK_EX) on it, which serialises the writers of one name. After
 * locking it checks that |dir| is still the directory it locked: a delete
 * may have removed it while we waited. Returns 0 with |*out_fd|, -ENOENT
 * (no message) if |dir| does not exist and |create| is 0, or another
 * negative errno with |*out_err|. */
static int lock_dir(int *out_fd, char **out_err, const char *dir, int create) {
  for (int i = 0; i < MAX_RETRIES; i++) {
    if (create) {
      int ret = make_dirs(out_err, dir);
      if (ret != 0) return ret;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT && !create) return -ENOENT;
      if (errno == ENOENT) continue;
      return acme__storage_sys_err(out_err, dir, "cannot open directory");
    }
    int r;
    while ((r = flock(fd, LOCK_EX)) != 0 && errno == EINTR) {
    }
    if (r != 0) {
      r = acme__storage_sys_err(out_err, dir, "cannot lock");
      close(fd);
      return r;
    }
    struct stat locked, now;
    if (fstat(fd, &locked) == 0 && stat(dir, &now) == 0 && locked.st_dev == now.st_dev &&
        locked.st_ino == now.st_ino) {
      *out_fd = fd;
      return 0;
    }
    close(fd);
  }
  *out_err = gh_asprintf("%s: removed again and again while waiting to write", dir);
  return -EAGAIN;
}

/* read_current returns the version `current` in |dir| points to (caller
 * frees), or NULL with errno set (ENOENT: nothing published). A target that
 * is not a plain "v-..." entry of |dir| is EBADMSG. */
static char *read_current(const char *dir) {
  char *link = join(dir, CURRENT);
  char buf[NAME_MAX + 1];
  ssize_t n = readlink(link, buf, sizeof(buf));
  int e = errno;
  gh_free(link);
  if (n < 0) {
    errno = e;
    return NULL;
  }
  if ((size_t)n >= sizeof(buf) || strncmp(buf, VERSION_PREFIX, strlen(VERSION_PREFIX)) != 0 ||
      memchr(buf, '/', (size_t)n) != NULL) {
    errno = EBADMSG;
    return NULL;
  }
  return gh_strndup(buf, (size_t)n);
}

/* write_version writes |bundle| as a new, complete version directory in
 * |dir| and returns its name (caller frees). It is built under a temporary
 * name and renamed once every file and the directory itself are on disk,
 * so a "v-..." directory is always complete. */
static int write_version(char **out_version, char **out_err, const char *dir,
                         const acme_storage_bundle_t *bundle) {
  const gh_str_t data[] = {bundle->chain_pem, bundle->key_pem, bundle->meta_json};
  const mode_t modes[] = {0644, 0600, 0644};
  char *name = tmp_name();
  char *tmp = join(dir, name);
  gh_free(name);
  int ret = 0;
  if (mkdir(tmp, 0700) != 0) ret = acme__storage_sys_err(out_err, tmp, "cannot create directory");
  for (size_t i = 0; i < GH_ARRAY_LEN(bundle_files) && ret == 0; i++) {
    char *path = join(tmp, bundle_files[i]);
    ret = write_new(out_err, path, data[i], modes[i]);
    gh_free(path);
  }
  if (ret == 0) ret = sync_dir(out_err, tmp);
  char *version = NULL;
  if (ret == 0) {
    /* The time is for operators; the random part makes it unique. */
    char stamp[32];
    struct tm tm;
    time_t now = time(NULL);
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", gmtime_r(&now, &tm));
    uint32_t r;
    RAND_bytes((uint8_t *)&r, sizeof(r));
    version = gh_asprintf(VERSION_PREFIX "%s-%08x", stamp, r);
    char *path = join(dir, version);
    if (rename(tmp, path) != 0) {
      ret = acme__storage_sys_err(out_err, path, "cannot rename into place");
    }
    gh_free(path);
  }
  if (ret == 0) ret = sync_dir(out_err, dir);
  if (ret != 0) {
    remove_tree(tmp);
    gh_free(version);
    version = NULL;
  }
  gh_free(tmp);
  *out_version = version;
  return ret;
}

/* publish points `current` in |dir| at |version|: a symlink made under a
 * temporary name and renamed over the old one, the single atomic step. */
static int publish(char **out_err, const char *dir, const char *version) {
  char *name = tmp_name();
  char *tmp = join(dir, name);
  int ret = 0;
  if (symlink(version, tmp) != 0) {
    ret = acme__storage_sys_err(out_err, tmp, "cannot create symlink");
  } else {
    ret = install(out_err, dir, tmp, CURRENT);
  }
  gh_free(name);
  gh_free(tmp);
  return ret;
}

/* collect removes from |dir| every version but |keep| and |previous| (a
 * reader may still be in the previous one), which includes versions a
 * crashed writer completed but never published, and stale temporaries. It
 * also adds the operator links cert.pem -> current/cert.pem and so on. */
static void collect(const char *dir, const char *keep, const char *previous) {
  DIR *d = opendir(dir);
  if (d == NULL) return;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    const char *n = de->d_name;
    int old_version = strncmp(n, VERSION_PREFIX, strlen(VERSION_PREFIX)) == 0 &&
                      strcmp(n, keep) != 0 && (previous == NULL || strcmp(n, previous) != 0);
    if (old_version || is_stale_tmp(n)) {
      char *path = join(dir, n);
      remove_tree(path);
      gh_free(path);
    }
  }
  closedir(d);
  for (size_t i = 0; i < GH_ARRAY_LEN(bundle_files); i++) {
    char *target = gh_asprintf(CURRENT "/%s", bundle_files[i]);
    char *link = join(dir, bundle_files[i]);
    if (symlink(target, link) != 0 && errno != EEXIST) {
      GH_WARN("acme", "storage: %s: cannot create symlink: %s", link, strerror(errno));
    }
    gh_free(target);
    gh_free(link);
  }
}

static int dir_cert_save(acme_storage_t *st, char **out_err, const char *name,
                           const acme_storage_bundle_t *bundle) {
  char file_name[NAME_MAX + 1];
  int ret = acme__storage_name_encode(file_name, sizeof(file_name), out_err, name);
  if (ret != 0) return ret;
  /* Never store a pair that would not load. */
  char *err = NULL;
  acme_cert_t *cert = acme_cert_from_pem(&err, bundle->chain_pem.ptr, bundle->chain_pem.len,
                                         bundle->key_pem.ptr, bundle->key_pem.len);
  const char *why = json_reason(bundle->meta_json.ptr, bundle->meta_json.len);
  if (cert == NULL || why != NULL) {
    *out_err = cert == NULL
                   ? gh_asprintf("certificate %s: refusing to store: %s", name, err)
                   : gh_asprintf("certificate %s: refusing to store meta JSON that %s", name, why);
    gh_free(err);
    acme_cert_unref(cert);
    return -EINVAL;
  }
  acme_cert_unref(cert);
  char *dir = cert_dir(st, file_name);
  int fd = -1;
  ret = lock_dir(&fd, out_err, dir, 1);
  char *previous = NULL, *version = NULL;
  if (ret == 0) {
    previous = read_current(dir);
    ret = write_version(&version, out_err, dir, bundle);
  }
  if (ret == 0) ret = publish(out_err, dir, version);
  if (ret == 0) collect(dir, version, previous);
  if (fd >= 0) close(fd);
  gh_free(previous);
  gh_free(version);
  gh_free(dir);
  return ret;
}

/* load_version reads the bundle in the version directory |vdir| (with
 * |peek|, all but the private key). */
static int load_version(acme_cert_t **out_cert, char **out_meta, char **out_err, const char *vdir,
                        int peek) {
  char *cert_path = join(vdir, "cert.pem");
  char *key_path = join(vdir, "key.pem");
  char *meta_path = join(vdir, "meta.json");
  char *meta = NULL;
  int ret = 0;
  /* acme_cert_load names the file at fault, and checks the key matches. */
  acme_cert_t *cert = peek ? acme_cert_load_chain(out_err, cert_path)
                          : acme_cert_load(out_err, cert_path, key_path);
  if (cert == NULL) ret = -EBADMSG;
  if (ret == 0) {
    ret = read_json(&meta, out_err, meta_path);
    if (ret == -ENOENT) ret = -EBADMSG;
  }
  if (ret == 0) {
    *out_cert = cert;
    if (out_meta != NULL) {
      *out_meta = meta;
      meta = NULL;
    }
  } else {
    acme_cert_unref(cert);
  }
  gh_free(meta);
  gh_free(cert_path);
  gh_free(key_path);
  gh_free(meta_path);
  return ret;
}

static int dir_cert_read(acme_storage_t *st, acme_cert_t **out_cert, char **out_meta,
                         char **out_err, const char *name, int peek) {
  *out_cert = NULL;
  if (out_meta != NULL) *out_meta = NULL;
  char file_name[NAME_MAX + 1];
  int ret = acme__storage_name_encode(file_name, sizeof(file_name), out_err, name);
  if (ret != 0) return ret;
  char *dir = cert_dir(st, file_name);
  for (int attempt = 0;; attempt++) {
    char *version = read_current(dir);
    if (version == NULL) {
      if (errno == ENOENT || errno == ENOTDIR) {
        *out_err = gh_asprintf("%s: no certificate stored for %s", dir, name);
        ret = -ENOENT;
      } else if (errno == EBADMSG || errno == EINVAL) {
        *out_err = gh_asprintf("%s/" CURRENT ": not a symlink to a version directory", dir);
        ret = -EBADMSG;
      } else {
        ret = acme__storage_sys_err(out_err, dir, "cannot read " CURRENT);
      }
      break;
    }
    char *vdir = join(dir, version);
    ret = load_version(out_cert, out_meta, out_err, vdir, peek);
    gh_free(vdir);
    char *now = ret != 0 ? read_current(dir) : NULL;
    int moved = ret != 0 && (now == NULL || strcmp(now, version) != 0);
    gh_free(now);
    gh_free(version);
    if (!moved || attempt + 1 == MAX_RETRIES) break;
    /* Writers replaced the version under us: what failed is not what is
     * stored now. Read again. */
    gh_free(*out_err);
    *out_err = NULL;
  }
  gh_free(dir);
  return ret;
}

static int dir_cert_load(acme_storage_t *st, acme_cert_t **out_cert, char **out_meta,
                         char **out_err, const char *name) {
  return dir_cert_read(st, out_cert, out_meta, out_err, name, 0);
}

static int dir_cert_peek(acme_storage_t *st, acme_cert_t **out_cert, char **out_meta,
                         char **out_err, const char *name) {
  return dir_cert_read(st, out_cert, out_meta, out_err, name, 1);
}

static int dir_cert_version(acme_storage_t *st, char **out_version, const char *name) {
  char file_name[NAME_MAX + 1], *err = NULL;
  if (acme__storage_name_encode(file_name, sizeof(file_name), &err, name) != 0) {
    gh_free(err);
    return -EINVAL;
  }
  char *dir = cert_dir(st, file_name);
  /* A version directory is written whole and never changed; a new one,
   * with a new name, is published by moving the symlink. */
  *out_version = read_current(dir);
  int ret = *out_version != NULL ? 0 : errno == ENOENT || errno == ENOTDIR ? -ENOENT : -EIO;
  gh_free(dir);
  return ret;
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int dir_cert_list(acme_storage_t *st, char ***out_names, size_t *out_num_names,
                           char **out_err) {
  *out_names = NULL;
  *out_num_names = 0;
  char *certs = join(st->root, "certs");
  DIR *d = opendir(certs);
  if (d == NULL) {
    int ret = acme__storage_sys_err(out_err, certs, "cannot open directory");
    gh_free(certs);
    return ret;
  }
  char **names = NULL;
  size_t num = 0, cap = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    char name[NAME_MAX + 1];
    /* Temporaries, hidden files and anything that is not a name's stored
     * form are not ours to list. */
    if (acme__storage_name_decode(name, sizeof(name), de->d_name) != 0) continue;
    char *dir = join(certs, de->d_name);
    char *version = read_current(dir);
    gh_free(dir);
    if (version == NULL) continue; /* never published, or being deleted */
    gh_free(version);
    if (num == cap) {
      cap = cap ? cap * 2 : 8;
      names = gh_realloc(names, cap * sizeof(*names));
    }
    names[num++] = gh_strdup(name);
  }
  closedir(d);
  gh_free(certs);
  if (num > 1) qsort(names, num, sizeof(*names), compare_names);
  *out_names = names;
  *out_num_names = num;
  return 0;
}

void acme_storage_names_free(char **names, size_t num_names) {
  for (size_t i = 0; i < num_names; i++) gh_free(names[i]);
  gh_free(names);
}

static int dir_cert_delete(acme_storage_t *st, char **out_err, const char *name) {
  char file_name[NAME_MAX + 1];
  int ret = acme__storage_name_encode(file_name, sizeof(file_name), out_err, name);
  if (ret != 0) return ret;
  char *dir = cert_dir(st, file_name);
  int fd = -1;
  ret = lock_dir(&fd, out_err, dir, 0);
  if (ret == 0) {
    /* Unlinking `current` is the atomic step: from here readers find
     * nothing, and the rest is tidying. */
    char *link = join(dir, CURRENT);
    int had = unlink(link) == 0;
    gh_free(link);
    if (had) ret = sync_dir(out_err, dir);
    int r = remove_tree(dir);
    if (r != 0 && ret == 0) {
      errno = -r;
      ret = acme__storage_sys_err(out_err, dir, "cannot remove");
    }
    if (ret == 0 && !had) ret = -ENOENT;
  }
  if (ret == 0) {
    char *certs = join(st->root, "certs");
    ret = sync_dir(out_err, certs);
    gh_free(certs);
  }
  if (ret == -ENOENT) *out_err = gh_asprintf("%s: no certificate stored for %s", dir, name);
  if (fd >= 0) close(fd);
  gh_free(dir);
  return ret;
}

static const acme_storage_ops_t dir_ops = {
    .kind = "directory",
    .free = dir_free,
    .account_save = dir_account_save,
    .account_load = dir_account_load,
    .cert_save = dir_cert_save,
    .cert_load = dir_cert_load,
    .cert_peek = dir_cert_peek,
    .cert_version = dir_cert_version,
    .cert_list = dir_cert_list,
    .cert_delete = dir_cert_delete,
    .lock = acme__dir_lock,
};

/* ---- the public calls: the backend's ---- */

int acme_storage_account_save(acme_storage_t *st, char **out_err, const char *ca_url,
                              const char *account_id, gh_str_t json) {
  return st->ops->account_save(st, out_err, ca_url, account_id, json);
}

int acme_storage_account_load(acme_storage_t *st, char **out_json, char **out_err,
                              const char *ca_url, const char *account_id) {
  return st->ops->account_load(st, out_json, out_err, ca_url, account_id);
}

int acme_storage_cert_save(acme_storage_t *st, char **out_err, const char *name,
                           const acme_storage_bundle_t *bundle) {
  return st->ops->cert_save(st, out_err, name, bundle);
}

int acme_storage_cert_load(acme_storage_t *st, acme_cert_t **out_cert, char **out_meta,
                           char **out_err, const char *name) {
  return st->ops->cert_load(st, out_cert, out_meta, out_err, name);
}

int acme_storage_cert_peek(acme_storage_t *st, acme_cert_t **out_cert, char **out_meta,
                           char **out_err, const char *name) {
  if (st->ops->cert_peek == NULL) return st->ops->cert_load(st, out_cert, out_meta, out_err, name);
  return st->ops->cert_peek(st, out_cert, out_meta, out_err, name);
}

int acme_storage_cert_version(acme_storage_t *st, char **out_version, const char *name) {
  *out_version = NULL;
  if (st->ops->cert_version == NULL) return -ENOTSUP;
  return st->ops->cert_version(st, out_version, name);
}

int acme_storage_cert_list(acme_storage_t *st, char ***out_names, size_t *out_num_names,
                           char **out_err) {
  return st->ops->cert_list(st, out_names, out_num_names, out_err);
}

int acme_storage_cert_save_over(acme_storage_t *st, char **out_err, const char *name,
                                const acme_storage_bundle_t *bundle, const acme_cert_t *expected) {
  if (st->ops->cert_save_over == NULL) return st->ops->cert_save(st, out_err, name, bundle);
  return st->ops->cert_save_over(st, out_err, name, bundle, expected);
}

int acme_storage_cert_delete(acme_storage_t *st, char **out_err, const char *name) {
  return st->ops->cert_delete(st, out_err, name);
}

static int no_challenges(acme_storage_t *st, char **out_err) {
  *out_err = gh_asprintf("challenge records: a %s store keeps none (one node answers its own)",
                         st->ops->kind);
  return -ENOTSUP;
}

int acme_storage_challenge_put(acme_storage_t *st, char **out_err, acme_storage_challenge_t kind,
                               const char *id, const char *key_auth,
                               const acme_storage_lock_t *lock) {
  if (st->ops->challenge_put == NULL) return no_challenges(st, out_err);
  return st->ops->challenge_put(st, out_err, kind, id, key_auth, lock);
}

int acme_storage_challenge_delete(acme_storage_t *st, char **out_err,
                                  acme_storage_challenge_t kind, const char *id,
                                  const acme_storage_lock_t *lock) {
  if (st->ops->challenge_delete == NULL) return no_challenges(st, out_err);
  return st->ops->challenge_delete(st, out_err, kind, id, lock);
}

int acme_storage_challenge_get(acme_storage_t *st, char **out_key_auth, char **out_err,
                               acme_storage_challenge_t kind, const char *id) {
  *out_key_auth = NULL;
  if (st->ops->challenge_get == NULL) return no_challenges(st, out_err);
  return st->ops->challenge_get(st, out_key_auth, out_err, kind, id);
}
