/* parse.c: the document level: reading the file, JSON syntax errors with
 * their line and column, the table-driven walk over the schema, the list of
 * problems, and freeing.
 *
 * Accepted input: one JSON object (strict RFC 8259 syntax, see syntax.c;
 * an optional UTF-8 byte-order mark; no "\u0000" in strings), from a file
 * of at most CONF_MAX_FILE bytes. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "conf/conf.h"
#include "conf/internal.h"

#define CONF_MAX_FILE (16u * 1024 * 1024)

/* --- problems and paths --- */

static void append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
  if (*len + n + 1 > *cap) {
    size_t want = *cap ? *cap * 2 : 256;
    while (want < *len + n + 1) want *= 2;
    *buf = gh_realloc(*buf, want);
    *cap = want;
  }
  memcpy(*buf + *len, s, n);
  *len += n;
  (*buf)[*len] = '\0';
}

static void add_line(conf__ctx_t *ctx, const char *where, const char *msg) {
  char *line = where[0] ? gh_asprintf("%s: %s: %s\n", ctx->file, where, msg)
                        : gh_asprintf("%s: %s\n", ctx->file, msg);
  append(&ctx->errs, &ctx->errs_len, &ctx->errs_cap, line, strlen(line));
  gh_free(line);
  ctx->num_errs++;
}

static void add_vline(conf__ctx_t *ctx, const char *where, const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  size_t len = (size_t)(n < 0 ? 0 : n) + 1;
  char *msg = gh_malloc(len);
  vsnprintf(msg, len, fmt, ap2);
  va_end(ap2);
  add_line(ctx, where, msg);
  gh_free(msg);
}

void conf__error(conf__ctx_t *ctx, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  add_vline(ctx, ctx->path ? ctx->path : "", fmt, ap);
  va_end(ap);
}

void conf__error_at(conf__ctx_t *ctx, const char *path, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  add_vline(ctx, path, fmt, ap);
  va_end(ap);
}

void conf__expected(conf__ctx_t *ctx, const char *what, const cJSON *got, const char *reason) {
  char *desc = conf__describe(got);
  if (reason != NULL) {
    conf__error(ctx, "expected %s, got %s (%s)", what, desc, reason);
  } else {
    conf__error(ctx, "expected %s, got %s", what, desc);
  }
  gh_free(desc);
}

size_t conf__path_key(conf__ctx_t *ctx, const char *key) {
  size_t old = ctx->path_len;
  if (old > 0) append(&ctx->path, &ctx->path_len, &ctx->path_cap, ".", 1);
  append(&ctx->path, &ctx->path_len, &ctx->path_cap, key, strlen(key));
  return old;
}

size_t conf__path_index(conf__ctx_t *ctx, size_t i) {
  size_t old = ctx->path_len;
  char buf[32];
  int n = snprintf(buf, sizeof(buf), "[%zu]", i);
  append(&ctx->path, &ctx->path_len, &ctx->path_cap, buf, (size_t)n);
  return old;
}

void conf__path_pop(conf__ctx_t *ctx, size_t len) {
  ctx->path_len = len;
  if (ctx->path != NULL) ctx->path[len] = '\0';
}

char *conf__quote(const char *s) {
  char *out = NULL;
  size_t len = 0, cap = 0;
  append(&out, &len, &cap, "\"", 1);
  size_t i = 0;
  /* Cut after 80 bytes, but not inside a UTF-8 sequence. */
  for (; s[i] && (i < 80 || ((unsigned char)s[i] & 0xc0) == 0x80); i++) {
    unsigned char c = (unsigned char)s[i];
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      append(&out, &len, &cap, esc, 2);
    } else if (c < 0x20 || c == 0x7f) {
      int n = snprintf(esc, sizeof(esc), "\\u%04x", c);
      append(&out, &len, &cap, esc, (size_t)n);
    } else {
      append(&out, &len, &cap, s + i, 1);
    }
  }
  if (s[i]) append(&out, &len, &cap, "...", 3);
  append(&out, &len, &cap, "\"", 1);
  return out;
}

char *conf__describe(const cJSON *v) {
  if (cJSON_IsString(v)) return conf__quote(v->valuestring);
  if (cJSON_IsNumber(v)) return gh_asprintf("%.15g", v->valuedouble);
  if (cJSON_IsTrue(v)) return gh_strdup("true");
  if (cJSON_IsFalse(v)) return gh_strdup("false");
  if (cJSON_IsNull(v)) return gh_strdup("null");
  if (cJSON_IsArray(v)) return gh_strdup("a list");
  if (cJSON_IsObject(v)) return gh_strdup("an object");
  return gh_strdup("nothing");
}

char *conf__resolve(const conf__ctx_t *ctx, const char *path) {
  if (path[0] == '/' || ctx->base_dir == NULL) return gh_strdup(path);
  /* "./data" is "data": no "/./" in the names shown. */
  while (path[0] == '.' && path[1] == '/' && path[2] != '\0') path += 2;
  if (strcmp(ctx->base_dir, "/") == 0) return gh_asprintf("/%s", path);
  return gh_asprintf("%s/%s", ctx->base_dir, path);
}

/* --- the walk --- */

static const conf__row_t *find_row(const conf__table_t *t, const char *key) {
  for (size_t i = 0; i < t->num_rows; i++) {
    if (strcmp(t->rows[i].name, key) == 0) return &t->rows[i];
  }
  return NULL;
}

/* check_keys reports the keys of |obj| that the table does not know, with
 * the closest known one, and keys given twice (cJSON keeps both; the walk
 * would silently use the first). */
static void check_keys(conf__ctx_t *ctx, const conf__table_t *t, const cJSON *obj) {
  const char **names = gh_calloc(t->num_rows, sizeof(*names));
  for (size_t i = 0; i < t->num_rows; i++) names[i] = t->rows[i].name;
  for (const cJSON *c = obj->child; c != NULL; c = c->next) {
    char *key = conf__quote(c->string);
    if (find_row(t, c->string) == NULL) {
      const char *near = conf__closest(c->string, names, t->num_rows);
      if (near != NULL) {
        conf__error(ctx, "unknown key %s; did you mean \"%s\"?", key, near);
      } else {
        conf__error(ctx, "unknown key %s", key);
      }
    } else {
      for (const cJSON *d = obj->child; d != c; d = d->next) {
        if (strcmp(d->string, c->string) == 0) {
          conf__error(ctx, "duplicate key %s", key);
          break;
        }
      }
    }
    gh_free(key);
  }
  gh_free(names);
}

static void apply_default(conf__ctx_t *ctx, const conf__row_t *row, char *base) {
  cJSON *def = cJSON_Parse(row->def);
  if (def == NULL) {
    conf__error(ctx, "internal error: the default %s does not parse", row->def);
    return;
  }
  row->type->parse(ctx, row, def, base);
  cJSON_Delete(def);
}

void conf__walk(conf__ctx_t *ctx, const conf__table_t *t, const cJSON *obj, char *base) {
  if (obj != NULL) check_keys(ctx, t, obj);
  for (size_t i = 0; i < t->num_rows; i++) {
    const conf__row_t *row = &t->rows[i];
    const cJSON *val = obj ? cJSON_GetObjectItemCaseSensitive(obj, row->name) : NULL;
    if (val == NULL && obj != NULL && (row->flags & CONF__REQUIRED)) {
      conf__error(ctx, "missing required key \"%s\"", row->name);
      continue;
    }
    size_t mark = conf__path_key(ctx, row->name);
    if (val != NULL) {
      row->type->parse(ctx, row, val, base);
    } else if (row->def != NULL) {
      apply_default(ctx, row, base);
    } else if (row->type->takes_absent) {
      row->type->parse(ctx, row, NULL, base);
    }
    conf__path_pop(ctx, mark);
  }
  if (obj != NULL && t->has_present) *(int *)(void *)(base + t->present_off) = 1;
  if (t->check != NULL) t->check(ctx, obj, base);
}

void conf__free_walk(const conf__table_t *t, char *base) {
  for (size_t i = 0; i < t->num_rows; i++) {
    if (t->rows[i].type->free != NULL) t->rows[i].type->free(&t->rows[i], base);
  }
}

/* --- the document --- */

/* syntax_error reports a JSON syntax error at byte |pos| of |text| as
 * FILE:LINE:COL, counting columns in characters (UTF-8 sequences count
 * once) from 1, the way editors do. */
static void syntax_error(conf__ctx_t *ctx, const char *text, size_t pos, const char *why) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < pos; i++) {
    if (text[i] == '\n') {
      line++;
      col = 1;
    } else if (((unsigned char)text[i] & 0xc0) != 0x80) {
      col++;
    }
  }
  char *msg = gh_asprintf("%s:%zu:%zu: JSON syntax error (%s)\n", ctx->file, line, col, why);
  append(&ctx->errs, &ctx->errs_len, &ctx->errs_cap, msg, strlen(msg));
  gh_free(msg);
  ctx->num_errs++;
}

/* parse_json parses |text| as one JSON value, reporting a syntax error
 * with its position. Returns the value or NULL. */
static cJSON *parse_json(conf__ctx_t *ctx, const char *text, size_t len) {
  const char *why = NULL;
  size_t pos = conf__json_check(text, len, &why);
  if (pos != SIZE_MAX) {
    syntax_error(ctx, text, pos, why);
    return NULL;
  }
  /* The caller's text need not be NUL-terminated; cJSON is safest with a
   * copy that is. */
  char *copy = gh_strndup(text, len);
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(copy, len, &end, 0);
  if (root == NULL) {
    /* Valid JSON that cJSON cannot take (it ran out of memory): report
     * where cJSON stopped. */
    pos = end != NULL && end >= copy && end <= copy + len ? (size_t)(end - copy) : 0;
    syntax_error(ctx, copy, pos, "cannot parse");
  }
  gh_free(copy);
  return root;
}

/* conf_parse_in is conf_parse with relative file names resolved against
 * |base_dir| (NULL: left as they are). */
static conf_t *conf_parse_in(char **out_err, const char *file, const char *base_dir,
                             const char *text, size_t text_len) {
  conf__ctx_t ctx = {.file = file ? file : "<config>", .base_dir = base_dir};
  conf_t *conf = NULL;
  *out_err = NULL;
  /* A UTF-8 byte-order mark is not JSON but some editors write one. */
  if (text_len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
    text += 3;
    text_len -= 3;
  }
  cJSON *root = parse_json(&ctx, text, text_len);
  if (root != NULL && !cJSON_IsObject(root)) {
    conf__expected(&ctx, "a JSON object at the top level", root, NULL);
  } else if (root != NULL) {
    conf = gh_calloc(1, sizeof(*conf));
    conf->file = gh_strdup(ctx.file);
    conf__walk(&ctx, &conf__root_table, root, (char *)conf);
  }
  cJSON_Delete(root);
  gh_free(ctx.path);
  if (ctx.num_errs > 0) {
    conf_free(conf);
    *out_err = ctx.errs;
    return NULL;
  }
  gh_free(ctx.errs);
  return conf;
}

/* absolute_dir returns the directory of |path| as an absolute name
 * (|path| NULL: the working directory), or NULL if the working directory
 * is unknown. Relative file names in a configuration are resolved against
 * it once, so that the effective configuration does not depend on the
 * directory the server later runs in. */
static char *absolute_dir(const char *path) {
  const char *slash = path ? strrchr(path, '/') : NULL;
  if (path != NULL && path[0] == '/') {
    return slash == path ? gh_strdup("/") : gh_strndup(path, (size_t)(slash - path));
  }
  char *cwd = getcwd(NULL, 0); /* malloc'd, and gh_free is free */
  if (cwd == NULL || slash == NULL) return cwd;
  const char *rel = path;
  while (strncmp(rel, "./", 2) == 0) rel += 2;
  if (rel >= slash) return cwd;
  char *dir = gh_asprintf("%s/%.*s", cwd, (int)(slash - rel), rel);
  gh_free(cwd);
  return dir;
}

conf_t *conf_parse(char **out_err, const char *file, const char *text, size_t text_len) {
  char *dir = absolute_dir(NULL);
  conf_t *conf = conf_parse_in(out_err, file, dir, text, text_len);
  gh_free(dir);
  return conf;
}

int conf__read_file(const char *path, char **out, size_t *out_len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0) goto fail;
  if (S_ISDIR(st.st_mode)) {
    errno = EISDIR;
    goto fail;
  }
  size_t len = 0, cap = 4096;
  char *buf = gh_malloc(cap);
  for (;;) {
    if (len == cap) {
      if (cap >= CONF_MAX_FILE) {
        gh_free(buf);
        errno = EFBIG;
        goto fail;
      }
      cap *= 2;
      buf = gh_realloc(buf, cap);
    }
    ssize_t n = read(fd, buf + len, cap - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      gh_free(buf);
      goto fail;
    }
    if (n == 0) break;
    len += (size_t)n;
  }
  close(fd);
  *out = buf;
  *out_len = len;
  return 0;
fail:;
  int saved = errno;
  close(fd);
  errno = saved;
  return -1;
}

conf_t *conf_load(char **out_err, const char *path) {
  char *text;
  size_t len;
  *out_err = NULL;
  if (conf__read_file(path, &text, &len) != 0) {
    *out_err = gh_asprintf("%s: cannot read: %s\n", path, strerror(errno));
    return NULL;
  }
  /* File names in the configuration are relative to its directory. */
  char *dir = absolute_dir(path);
  conf_t *conf = conf_parse_in(out_err, path, dir, text, len);
  gh_free(dir);
  gh_free(text);
  return conf;
}

void conf_free(conf_t *conf) {
  if (conf == NULL) return;
  conf__free_walk(&conf__root_table, (char *)conf);
  gh_free(conf->file);
  gh_free(conf);
}
