/* test_storage.c: acme/storage.c — names, modes, round trips, corrupt
 * entries, stray temporaries, per-name locks across processes, and crash
 * safety of certificate bundles under kill -9. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pool.h>

#include "acme/storage.h"
#include "common/common.h"
#include "test.h"
#include "testcert.h"

/* ---- fixtures ---- */

/* A self-signed certificate, its key, and their PEM texts. */
typedef struct {
  EVP_PKEY *key;
  X509 *x509;
  char *chain_pem;
  char *key_pem;
} pair_t;

static void pair_init(pair_t *p, const char *cn) {
  p->key = tc_key_ec();
  p->x509 = tc_cert(p->key, cn, cn, NULL, NULL, 90);
  p->chain_pem = tc_pem_certs(&p->x509, 1);
  p->key_pem = tc_pem_key(p->key);
}

static void pair_cleanup(pair_t *p) {
  EVP_PKEY_free(p->key);
  X509_free(p->x509);
  free(p->chain_pem);
  free(p->key_pem);
}

static gh_str_t str(const char *s) { return (gh_str_t){s, strlen(s)}; }

static acme_storage_bundle_t bundle(const pair_t *p, const char *meta) {
  return (acme_storage_bundle_t){str(p->chain_pem), str(p->key_pem), str(meta)};
}

/* same_leaf reports whether |cert|'s leaf is |p|'s certificate. */
static int same_leaf(const acme_cert_t *cert, const pair_t *p) {
  uint8_t *der = NULL;
  int len = i2d_X509(p->x509, &der);
  TC_CHECK(len > 0);
  int same = cert->num_chain >= 1 && CRYPTO_BUFFER_len(cert->chain[0]) == (size_t)len &&
             memcmp(CRYPTO_BUFFER_data(cert->chain[0]), der, (size_t)len) == 0;
  OPENSSL_free(der);
  return same;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  return remove(path);
}

/* A scratch directory, removed with everything in it. */
typedef struct {
  char path[64];
} scratch_t;

static void scratch_init(scratch_t *s) {
  snprintf(s->path, sizeof(s->path), "/tmp/gh-storage-XXXXXX");
  TC_CHECK(mkdtemp(s->path) != NULL);
}

static void scratch_cleanup(scratch_t *s) { nftw(s->path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* A storage in a fresh scratch directory, and two different pairs (A and
 * B) for "example.com". */
typedef struct {
  scratch_t s;
  pair_t a, b;
  acme_storage_t *st;
} fixture_t;

static void fixture_init(fixture_t *f) {
  scratch_init(&f->s);
  pair_init(&f->a, "example.com");
  pair_init(&f->b, "example.com");
  char *err = NULL;
  f->st = acme_storage_open(&err, f->s.path);
  if (f->st == NULL) {
    fprintf(stderr, "fixture: %s\n", err);
    abort();
  }
}

static void fixture_cleanup(fixture_t *f) {
  acme_storage_free(f->st);
  pair_cleanup(&f->a);
  pair_cleanup(&f->b);
  scratch_cleanup(&f->s);
}

static char *path_of(const char *a, const char *b) { return gh_asprintf("%s/%s", a, b); }

static unsigned mode_of(const char *path) {
  struct stat sb;
  if (lstat(path, &sb) != 0) return 0xffff;
  return (unsigned)(sb.st_mode & 07777);
}

static int exists(const char *path) {
  struct stat sb;
  return lstat(path, &sb) == 0;
}

static void put_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  TC_CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0);
}

/* count_entries counts the entries of |dir| whose names start with
 * |prefix|. */
static int count_entries(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  if (d == NULL) return -1;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) n += strncmp(de->d_name, prefix, strlen(prefix)) == 0;
  closedir(d);
  return n;
}

/* current_version returns the version directory `current` points to in
 * the name directory |dir| (caller frees). */
static char *current_version(const char *dir) {
  char *link = path_of(dir, "current");
  char buf[256];
  ssize_t n = readlink(link, buf, sizeof(buf) - 1);
  free(link);
  TC_CHECK(n > 0);
  buf[n] = '\0';
  return path_of(dir, buf);
}

/* dead_pid returns the pid of a child that has exited and been reaped. */
static pid_t dead_pid(void) {
  pid_t pid = fork();
  TC_CHECK(pid >= 0);
  if (pid == 0) _exit(0);
  TC_CHECK(waitpid(pid, NULL, 0) == pid);
  return pid;
}

/* ---- names ---- */

/* ldh_name writes a valid name of exactly |len| characters (not a
 * multiple of 64): labels of 63 and a shorter last one. */
static void ldh_name(char *out, size_t len) {
  memset(out, 'b', len);
  for (size_t i = 63; i < len; i += 64) out[i] = '.';
  out[len] = '\0';
}

static void test_name_encode(void) {
  static const char *const valid[] = {"example.com", "a", "localhost", "xn--bcher-kva.example",
                                      "a-b.c0.example", "1.2.3.4"};
  char out[256];
  char back[256];
  char *err = NULL;
  for (size_t i = 0; i < GH_ARRAY_LEN(valid); i++) {
    ASSERT_EQ(acme__storage_name_encode(out, sizeof(out), &err, valid[i]), 0);
    ASSERT_STR_EQ(out, valid[i]);
    ASSERT_EQ(acme__storage_name_decode(back, sizeof(back), out), 0);
    ASSERT_STR_EQ(back, valid[i]);
  }
  /* The wildcard mapping, both ways. */
  ASSERT_EQ(acme__storage_name_encode(out, sizeof(out), &err, "*.example.com"), 0);
  ASSERT_STR_EQ(out, "_wildcard.example.com");
  ASSERT_EQ(acme__storage_name_decode(back, sizeof(back), out), 0);
  ASSERT_STR_EQ(back, "*.example.com");
  /* An IPv6 address (RFC 8738) with '_' for ':'. */
  ASSERT_EQ(acme__storage_name_encode(out, sizeof(out), &err, "2001:db8::1"), 0);
  ASSERT_STR_EQ(out, "2001_db8__1");
  ASSERT_EQ(acme__storage_name_decode(back, sizeof(back), out), 0);
  ASSERT_STR_EQ(back, "2001:db8::1");
  ASSERT_EQ(acme__storage_name_decode(back, sizeof(back), "2001_db8_0__1"), -EINVAL);

  static const char *const invalid[] = {
      "../x", "a/b", "", ".", "..", "A.example", "*.*.x", "*", "*.", "x.*.com", "-a.com",
      "a-.com", "a..b", "example.com.", ".example.com", "/etc/passwd", "a b", "a\x01z",
      "_wildcard.example.com", "a_b.com", "ex\xc3\xa4mple.com", "2001:DB8::1",
      "2001:db8:0::1", "::g", "2001_db8__1"};
  for (size_t i = 0; i < GH_ARRAY_LEN(invalid); i++) {
    err = NULL;
    if (acme__storage_name_encode(out, sizeof(out), &err, invalid[i]) != -EINVAL) {
      TEST_FAIL_("accepted \"%s\"", invalid[i]);
    }
    ASSERT_CONTAINS(err, "certificate name \"");
    gh_free(err);
  }
  err = NULL;
  ASSERT_EQ(acme__storage_name_encode(out, sizeof(out), &err, "../x"), -EINVAL);
  ASSERT_CONTAINS(err, "\"../x\" has an empty label");
  gh_free(err);

  /* Lengths: labels of 63, names of 253, and the stored form in NAME_MAX. */
  char name[300];
  memset(name, 'a', 63);
  strcpy(name + 63, ".com");
  ASSERT_EQ(acme__storage_name_encode(out, sizeof(out), &err, name), 0);
  memset(name, 'a', 64);
  strcpy(name + 64, ".com");
  err = NULL;
  ASSERT_EQ(acme__storage_name_encode(out, sizeof(out), &err, name), -EINVAL);
  ASSERT_CONTAINS(err, "longer than 63");
  gh_free(err);
  ldh_name(name, 253);
  ASSERT_EQ(acme__storage_name_encode(out, sizeof(out), &err, name), 0);
  ldh_name(name, 254);
  err = NULL;
  ASSERT_EQ(acme__storage_name_encode(out, sizeof(out), &err, name), -EINVAL);
  ASSERT_CONTAINS(err, "longer than 253");
  gh_free(err);
  /* "*." and a parent of 245 characters fits: the stored form is 255. */
  name[0] = '*';
  name[1] = '.';
  ldh_name(name + 2, 245);
  ASSERT_EQ(acme__storage_name_encode(out, sizeof(out), &err, name), 0);
  ASSERT_EQ(strlen(out), 255);
  ASSERT_EQ(acme__storage_name_decode(back, sizeof(back), out), 0);
  ASSERT_STR_EQ(back, name);
  /* A parent of 246 is a valid DNS name but too long to store. */
  ldh_name(name + 2, 246);
  err = NULL;
  ASSERT_EQ(acme__storage_name_encode(out, sizeof(out), &err, name), -EINVAL);
  ASSERT_CONTAINS(err, "too long to store");
  gh_free(err);

  /* Directory entries that are not a stored name decode to nothing. */
  static const char *const not_names[] = {".tmp-1-00", "current", ".", "..", "_wildcard.",
                                          "_wildcard.*.x", "_wildcard._wildcard.x",
                                          "x_wildcard.com", "Upper.com", "v-2020"};
  for (size_t i = 0; i < GH_ARRAY_LEN(not_names); i++) {
    if (acme__storage_name_decode(back, sizeof(back), not_names[i]) == 0 &&
        strcmp(not_names[i], back) != 0) {
      TEST_FAIL_("decoded \"%s\" to \"%s\"", not_names[i], back);
    }
  }
  ASSERT_EQ(acme__storage_name_decode(back, sizeof(back), "_wildcard."), -EINVAL);
  ASSERT_EQ(acme__storage_name_decode(back, sizeof(back), ".tmp-1-00"), -EINVAL);
  ASSERT_EQ(acme__storage_name_decode(back, sizeof(back), "Upper.com"), -EINVAL);
}

static void test_ca_dir(void) {
  static const char *const good[][2] = {
      {"https://acme-v02.api.letsencrypt.org/directory", "acme-v02.api.letsencrypt.org"},
      {"https://localhost:14000/dir", "localhost_14000"},
      {"https://Pebble:14000", "pebble_14000"},
      {"http://127.0.0.1:4001/directory?x=1", "127.0.0.1_4001"},
      {"https://a/../b:1", "a"}, /* the path is not ours to judge */
  };
  char out[256];
  char *err = NULL;
  for (size_t i = 0; i < GH_ARRAY_LEN(good); i++) {
    ASSERT_EQ(acme__storage_ca_dir(out, sizeof(out), &err, good[i][0]), 0);
    ASSERT_STR_EQ(out, good[i][1]);
  }
  static const char *const bad[] = {
      "",    "ftp://x/",         "https://",           "https:///dir",          "https://../x",
      "x",   "https://a@b/dir",  "https://[::1]:14000/", "https://host:0/",     "https://h:65536/",
      "https://host:/", "https://ho_st/", "https://host:1x/", "//host/dir"};
  for (size_t i = 0; i < GH_ARRAY_LEN(bad); i++) {
    err = NULL;
    if (acme__storage_ca_dir(out, sizeof(out), &err, bad[i]) != -EINVAL) {
      TEST_FAIL_("accepted \"%s\" as \"%s\"", bad[i], out);
    }
    ASSERT_CONTAINS(err, "CA directory URL");
    gh_free(err);
  }
}

/* ---- opening ---- */

static void test_open_modes(void) {
  scratch_t s;
  scratch_init(&s);
  char *root = gh_asprintf("%s/a/b/store/", s.path);
  char *err = NULL;
  acme_storage_t *st = acme_storage_open(&err, root);
  ASSERT_NOT_NULL(st);
  static const char *const dirs[] = {"a", "a/b", "a/b/store", "a/b/store/accounts",
                                     "a/b/store/certs", "a/b/store/locks"};
  for (size_t i = 0; i < GH_ARRAY_LEN(dirs); i++) {
    char *p = path_of(s.path, dirs[i]);
    if (mode_of(p) != 0700) TEST_FAIL_("%s: mode %04o", p, mode_of(p));
    free(p);
  }
  acme_storage_free(st);
  acme_storage_free(NULL);

  /* An existing directory keeps its mode: not loosened, not changed. */
  char *loose = path_of(s.path, "loose");
  TC_CHECK(mkdir(loose, 0755) == 0 && chmod(loose, 0755) == 0);
  st = acme_storage_open(&err, loose);
  ASSERT_NOT_NULL(st);
  acme_storage_free(st);
  ASSERT_EQ(mode_of(loose), 0755);

  /* World-writable: refused. */
  TC_CHECK(chmod(loose, 0777) == 0);
  ASSERT_NULL(acme_storage_open(&err, loose));
  ASSERT_CONTAINS(err, loose);
  ASSERT_CONTAINS(err, "writable by every user");
  gh_free(err);

  /* A file, or a path through one: refused. */
  char *file = path_of(s.path, "file");
  put_file(file, "x");
  err = NULL;
  ASSERT_NULL(acme_storage_open(&err, file));
  ASSERT_CONTAINS(err, file);
  gh_free(err);
  char *under = path_of(file, "store");
  err = NULL;
  ASSERT_NULL(acme_storage_open(&err, under));
  ASSERT_CONTAINS(err, file);
  gh_free(err);
  err = NULL;
  ASSERT_NULL(acme_storage_open(&err, ""));
  gh_free(err);

  free(under);
  free(file);
  free(loose);
  free(root);
  scratch_cleanup(&s);
}

/* ---- accounts ---- */

#define PEBBLE "https://localhost:14000/dir"

/* A directory store serves one node: it keeps no challenge records and
 * says so, rather than pretending to share them. */
static void test_no_challenge_records(void) {
  fixture_t f;
  fixture_init(&f);
  char *err = NULL, *ka = NULL;
  ASSERT_EQ(acme_storage_challenge_put(f.st, &err, ACME_STORAGE_HTTP01, "tok", "tok.x", NULL), -ENOTSUP);
  ASSERT_NOT_NULL(strstr(err, "directory store keeps none"));
  gh_free(err);
  err = NULL;
  ASSERT_EQ(acme_storage_challenge_get(f.st, &ka, &err, ACME_STORAGE_TLSALPN01, "a.test"), -ENOTSUP);
  ASSERT_NULL(ka);
  gh_free(err);
  fixture_cleanup(&f);
}

static void test_account_round_trip(void) {
  fixture_t f;
  fixture_init(&f);
  char *err = NULL;
  const char *json = "{\"url\":\"https://localhost:14000/my-account/1\",\"key\":\"...\"}";
  ASSERT_EQ(acme_storage_account_save(f.st, &err, PEBBLE, "ops@example.com", str(json)), 0);
  char *got = NULL;
  ASSERT_EQ(acme_storage_account_load(f.st, &got, &err, PEBBLE, "ops@example.com"), 0);
  ASSERT_STR_EQ(got, json);
  gh_free(got);

  char *dir = gh_asprintf("%s/accounts/localhost_14000", f.s.path);
  char *file = path_of(dir, "ops@example.com.json");
  ASSERT_EQ(mode_of(dir), 0700);
  ASSERT_EQ(mode_of(file), 0600);

  /* Replaced atomically: no temporary left behind. */
  const char *json2 = "{\"url\":\"https://localhost:14000/my-account/2\"}\n";
  ASSERT_EQ(acme_storage_account_save(f.st, &err, PEBBLE, "ops@example.com", str(json2)), 0);
  ASSERT_EQ(acme_storage_account_load(f.st, &got, &err, PEBBLE, "ops@example.com"), 0);
  ASSERT_STR_EQ(got, json2);
  gh_free(got);
  ASSERT_EQ(count_entries(dir, ".tmp-"), 0);
  ASSERT_EQ(mode_of(file), 0600);

  /* Another CA, same id: another file. */
  ASSERT_EQ(acme_storage_account_load(f.st, &got, &err,
                                      "https://acme-v02.api.letsencrypt.org/directory",
                                      "ops@example.com"),
            -ENOENT);
  ASSERT_NULL(got);
  ASSERT_CONTAINS(err, "acme-v02.api.letsencrypt.org/ops@example.com.json");
  gh_free(err);

  /* Bad ids, URLs and JSON are refused before anything is written. */
  static const char *const bad_ids[] = {"", "../x", "a/b", ".hidden", "..", "Upper", "-x",
                                        "a b"};
  for (size_t i = 0; i < GH_ARRAY_LEN(bad_ids); i++) {
    err = NULL;
    if (acme_storage_account_save(f.st, &err, PEBBLE, bad_ids[i], str("{}")) != -EINVAL) {
      TEST_FAIL_("accepted account id \"%s\"", bad_ids[i]);
    }
    ASSERT_CONTAINS(err, "account id");
    gh_free(err);
  }
  err = NULL;
  ASSERT_EQ(acme_storage_account_save(f.st, &err, "https://../", "a", str("{}")), -EINVAL);
  gh_free(err);
  static const char *const bad_json[] = {"", "{", "[1]", "\"x\"", "{} x", "{\"a\":1}}"};
  for (size_t i = 0; i < GH_ARRAY_LEN(bad_json); i++) {
    err = NULL;
    if (acme_storage_account_save(f.st, &err, PEBBLE, "ops@example.com", str(bad_json[i])) !=
        -EINVAL) {
      TEST_FAIL_("accepted JSON '%s'", bad_json[i]);
    }
    ASSERT_CONTAINS(err, "refusing to store JSON");
    gh_free(err);
  }
  ASSERT_EQ(acme_storage_account_load(f.st, &got, &err, PEBBLE, "ops@example.com"), 0);
  ASSERT_STR_EQ(got, json2);
  gh_free(got);

  /* Truncated on disk (by someone else): an error naming the file. */
  put_file(file, "{\"url\":\"https://loc");
  err = NULL;
  ASSERT_EQ(acme_storage_account_load(f.st, &got, &err, PEBBLE, "ops@example.com"), -EBADMSG);
  ASSERT_NULL(got);
  ASSERT_CONTAINS(err, file);
  ASSERT_CONTAINS(err, "not valid JSON");
  gh_free(err);

  free(file);
  free(dir);
  fixture_cleanup(&f);
}

/* ---- certificates ---- */

static void test_cert_round_trip(void) {
  fixture_t f;
  fixture_init(&f);
  char *err = NULL;
  acme_storage_bundle_t ba = bundle(&f.a, "{\"issued\":1}");
  ASSERT_EQ(acme_storage_cert_save(f.st, &err, "example.com", &ba), 0);
  acme_cert_t *cert = NULL;
  char *meta = NULL;
  ASSERT_EQ(acme_storage_cert_load(f.st, &cert, &meta, &err, "example.com"), 0);
  ASSERT_TRUE(same_leaf(cert, &f.a));
  ASSERT_STR_EQ(meta, "{\"issued\":1}");
  ASSERT_EQ(cert->num_sans, 1);
  ASSERT_STR_EQ(cert->sans[0], "example.com");
  acme_cert_unref(cert);
  gh_free(meta);

  /* Modes, and the DESIGN.md paths through the operator links. */
  char *dir = gh_asprintf("%s/certs/example.com", f.s.path);
  char *version = current_version(dir);
  char *key = path_of(version, "key.pem");
  char *chain = path_of(version, "cert.pem");
  char *meta_file = path_of(version, "meta.json");
  ASSERT_EQ(mode_of(dir), 0700);
  ASSERT_EQ(mode_of(version), 0700);
  ASSERT_EQ(mode_of(key), 0600);
  ASSERT_EQ(mode_of(chain), 0644);
  ASSERT_EQ(mode_of(meta_file), 0644);
  char *link = path_of(dir, "key.pem");
  acme_cert_t *direct = acme_cert_load(&err, chain, link);
  ASSERT_NOT_NULL(direct);
  acme_cert_unref(direct);
  free(link);

  /* Replaced as a whole; old versions are collected (current and the one
   * before it are kept). */
  acme_storage_bundle_t bb = bundle(&f.b, "{\"issued\":2}");
  for (int i = 0; i < 5; i++) {
    ASSERT_EQ(acme_storage_cert_save(f.st, &err, "example.com", i % 2 ? &ba : &bb), 0);
  }
  ASSERT_EQ(acme_storage_cert_load(f.st, &cert, NULL, &err, "example.com"), 0);
  ASSERT_TRUE(same_leaf(cert, &f.b));
  acme_cert_unref(cert);
  ASSERT_EQ(count_entries(dir, "v-"), 2);
  ASSERT_EQ(count_entries(dir, ".tmp-"), 0);

  /* Refused: a key that does not match, meta that is not an object. The
   * stored bundle is untouched. */
  acme_storage_bundle_t torn = {str(f.a.chain_pem), str(f.b.key_pem), str("{}")};
  ASSERT_EQ(acme_storage_cert_save(f.st, &err, "example.com", &torn), -EINVAL);
  ASSERT_CONTAINS(err, "does not match");
  gh_free(err);
  acme_storage_bundle_t bad_meta = bundle(&f.a, "{\"issued\":");
  ASSERT_EQ(acme_storage_cert_save(f.st, &err, "example.com", &bad_meta), -EINVAL);
  ASSERT_CONTAINS(err, "meta JSON");
  gh_free(err);
  ASSERT_EQ(acme_storage_cert_save(f.st, &err, "../example.com", &ba), -EINVAL);
  gh_free(err);
  ASSERT_EQ(acme_storage_cert_load(f.st, &cert, NULL, &err, "example.com"), 0);
  ASSERT_TRUE(same_leaf(cert, &f.b));
  acme_cert_unref(cert);

  /* Wildcards are stored under their mapped name and listed as
   * themselves; a name directory never published is not listed. */
  ASSERT_EQ(acme_storage_cert_save(f.st, &err, "*.example.com", &ba), 0);
  char *wild = gh_asprintf("%s/certs/_wildcard.example.com", f.s.path);
  ASSERT_TRUE(exists(wild));
  char *unpublished = gh_asprintf("%s/certs/half.example.com", f.s.path);
  TC_CHECK(mkdir(unpublished, 0700) == 0);
  char **names = NULL;
  size_t num_names = 0;
  ASSERT_EQ(acme_storage_cert_list(f.st, &names, &num_names, &err), 0);
  ASSERT_EQ(num_names, 2);
  ASSERT_STR_EQ(names[0], "*.example.com");
  ASSERT_STR_EQ(names[1], "example.com");
  acme_storage_names_free(names, num_names);
  ASSERT_EQ(acme_storage_cert_load(f.st, &cert, NULL, &err, "half.example.com"), -ENOENT);
  ASSERT_CONTAINS(err, "no certificate stored");
  gh_free(err);

  /* Delete. */
  ASSERT_EQ(acme_storage_cert_delete(f.st, &err, "example.com"), 0);
  ASSERT_FALSE(exists(dir));
  ASSERT_EQ(acme_storage_cert_load(f.st, &cert, NULL, &err, "example.com"), -ENOENT);
  ASSERT_NULL(cert);
  gh_free(err);
  ASSERT_EQ(acme_storage_cert_delete(f.st, &err, "example.com"), -ENOENT);
  gh_free(err);
  ASSERT_EQ(acme_storage_cert_list(f.st, &names, &num_names, &err), 0);
  ASSERT_EQ(num_names, 1);
  ASSERT_STR_EQ(names[0], "*.example.com");
  acme_storage_names_free(names, num_names);
  /* And stored again after a delete. */
  ASSERT_EQ(acme_storage_cert_save(f.st, &err, "example.com", &ba), 0);
  ASSERT_EQ(acme_storage_cert_load(f.st, &cert, NULL, &err, "example.com"), 0);
  ASSERT_TRUE(same_leaf(cert, &f.a));
  acme_cert_unref(cert);

  free(unpublished);
  free(wild);
  free(meta_file);
  free(chain);
  free(key);
  free(version);
  free(dir);
  fixture_cleanup(&f);
}

/* expect_corrupt loads "example.com" and checks for -EBADMSG with a
 * message that contains |what|. */
static int expect_corrupt(acme_storage_t *st, const char *what) {
  acme_cert_t *cert = NULL;
  char *meta = NULL;
  char *err = NULL;
  int ret = acme_storage_cert_load(st, &cert, &meta, &err, "example.com");
  int ok = ret == -EBADMSG && cert == NULL && meta == NULL && err != NULL &&
           strstr(err, what) != NULL;
  if (!ok) fprintf(stderr, "want -EBADMSG naming %s, got %d: %s\n", what, ret, err);
  gh_free(err);
  return ok;
}

static void test_cert_corrupt(void) {
  fixture_t f;
  fixture_init(&f);
  char *err = NULL;
  acme_storage_bundle_t ba = bundle(&f.a, "{}");
  ASSERT_EQ(acme_storage_cert_save(f.st, &err, "example.com", &ba), 0);
  char *dir = gh_asprintf("%s/certs/example.com", f.s.path);
  char *version = current_version(dir);
  char *chain = path_of(version, "cert.pem");
  char *key = path_of(version, "key.pem");
  char *meta = path_of(version, "meta.json");

  /* Truncated PEM. */
  char *half = gh_strndup(f.a.chain_pem, strlen(f.a.chain_pem) / 2);
  put_file(chain, half);
  ASSERT_TRUE(expect_corrupt(f.st, chain));
  put_file(chain, "");
  ASSERT_TRUE(expect_corrupt(f.st, chain));
  put_file(chain, f.a.chain_pem);

  /* A key that does not match the certificate. */
  put_file(key, f.b.key_pem);
  ASSERT_TRUE(expect_corrupt(f.st, key));
  ASSERT_TRUE(expect_corrupt(f.st, "does not match"));
  put_file(key, "garbage");
  ASSERT_TRUE(expect_corrupt(f.st, key));
  put_file(key, f.a.key_pem);

  /* Garbage and truncated meta. */
  put_file(meta, "\x01\x02garbage");
  ASSERT_TRUE(expect_corrupt(f.st, meta));
  put_file(meta, "{\"issued\":");
  ASSERT_TRUE(expect_corrupt(f.st, meta));
  TC_CHECK(unlink(meta) == 0);
  ASSERT_TRUE(expect_corrupt(f.st, meta));
  put_file(meta, "{}");

  acme_cert_t *cert = NULL;
  ASSERT_EQ(acme_storage_cert_load(f.st, &cert, NULL, &err, "example.com"), 0);
  acme_cert_unref(cert);

  /* `current` dangling, or not a symlink at all. */
  char *link = path_of(dir, "current");
  TC_CHECK(unlink(link) == 0 && symlink("v-gone", link) == 0);
  ASSERT_TRUE(expect_corrupt(f.st, "v-gone"));
  TC_CHECK(unlink(link) == 0 && symlink("../../accounts", link) == 0);
  ASSERT_TRUE(expect_corrupt(f.st, "current"));
  TC_CHECK(unlink(link) == 0);
  put_file(link, "v-x");
  ASSERT_TRUE(expect_corrupt(f.st, "current"));

  /* A save repairs it all. */
  TC_CHECK(unlink(link) == 0);
  ASSERT_EQ(acme_storage_cert_save(f.st, &err, "example.com", &ba), 0);
  ASSERT_EQ(acme_storage_cert_load(f.st, &cert, NULL, &err, "example.com"), 0);
  ASSERT_TRUE(same_leaf(cert, &f.a));
  acme_cert_unref(cert);

  free(link);
  free(half);
  free(meta);
  free(key);
  free(chain);
  free(version);
  free(dir);
  fixture_cleanup(&f);
}

/* ---- stray temporaries ---- */

static void test_stray_tmp(void) {
  fixture_t f;
  fixture_init(&f);
  char *err = NULL;
  acme_storage_bundle_t ba = bundle(&f.a, "{}");
  ASSERT_EQ(acme_storage_cert_save(f.st, &err, "example.com", &ba), 0);
  ASSERT_EQ(acme_storage_account_save(f.st, &err, PEBBLE, "ops", str("{}")), 0);

  /* What a writer killed mid-write leaves: torn temporaries everywhere. */
  pid_t dead = dead_pid();
  pid_t live = getppid();
  static const char *const where[] = {".", "accounts", "accounts/localhost_14000", "certs",
                                      "certs/example.com", "locks"};
  for (size_t i = 0; i < GH_ARRAY_LEN(where); i++) {
    char *stray = gh_asprintf("%s/%s/.tmp-%ld-%016zx", f.s.path, where[i], (long)dead, i);
    put_file(stray, "-----BEGIN CERT");
    free(stray);
  }
  char *stray_dir = gh_asprintf("%s/certs/example.com/.tmp-%ld-ff", f.s.path, (long)dead);
  TC_CHECK(mkdir(stray_dir, 0700) == 0);
  char *stray_inner = path_of(stray_dir, "key.pem");
  put_file(stray_inner, "torn");
  char *live_tmp = gh_asprintf("%s/certs/example.com/.tmp-%ld-00", f.s.path, (long)live);
  put_file(live_tmp, "in progress");
  char *not_ours = gh_asprintf("%s/certs/example.com/.tmp-x", f.s.path);
  put_file(not_ours, "?");

  /* Ignored on read. */
  acme_cert_t *cert = NULL;
  ASSERT_EQ(acme_storage_cert_load(f.st, &cert, NULL, &err, "example.com"), 0);
  ASSERT_TRUE(same_leaf(cert, &f.a));
  acme_cert_unref(cert);
  char *json = NULL;
  ASSERT_EQ(acme_storage_account_load(f.st, &json, &err, PEBBLE, "ops"), 0);
  gh_free(json);
  char **names = NULL;
  size_t num_names = 0;
  ASSERT_EQ(acme_storage_cert_list(f.st, &names, &num_names, &err), 0);
  ASSERT_EQ(num_names, 1);
  acme_storage_names_free(names, num_names);
  acme_storage_free(f.st);

  /* Cleaned when the storage is opened: the dead writer's, not the live
   * one's, nor what is not ours. */
  f.st = acme_storage_open(&err, f.s.path);
  ASSERT_NOT_NULL(f.st);
  char *dead_prefix = gh_asprintf(".tmp-%ld-", (long)dead);
  for (size_t i = 0; i < GH_ARRAY_LEN(where); i++) {
    char *d = path_of(f.s.path, where[i]);
    if (count_entries(d, dead_prefix) != 0) TEST_FAIL_("stray temporary left in %s", d);
    free(d);
  }
  ASSERT_TRUE(exists(live_tmp));
  ASSERT_TRUE(exists(not_ours));
  ASSERT_EQ(acme_storage_cert_load(f.st, &cert, NULL, &err, "example.com"), 0);
  acme_cert_unref(cert);

  free(dead_prefix);
  free(not_ours);
  free(live_tmp);
  free(stray_inner);
  free(stray_dir);
  fixture_cleanup(&f);
}

/* ---- locks ---- */

static void test_lock_same_process(void) {
  fixture_t f;
  fixture_init(&f);
  char *err = NULL;
  acme_storage_lock_t *lock = NULL, *other = NULL;
  ASSERT_EQ(acme__storage_lock(f.st, &lock, &err, "*.example.com", 600),
            ACME_STORAGE_LOCK_ACQUIRED);
  ASSERT_NOT_NULL(lock);
  char *file = gh_asprintf("%s/locks/_wildcard.example.com", f.s.path);
  ASSERT_EQ(mode_of(file), 0600);

  /* A second holder in the same process is refused too, and told who. */
  ASSERT_EQ(acme__storage_lock(f.st, &other, &err, "*.example.com", 600), ACME_STORAGE_LOCK_HELD);
  ASSERT_NULL(other);
  char *pid = gh_asprintf("pid=%ld ", (long)getpid());
  ASSERT_CONTAINS(err, pid);
  ASSERT_CONTAINS(err, file);
  gh_free(err);
  ASSERT_EQ(acme__storage_lock(f.st, &other, &err, "example.com", 600), ACME_STORAGE_LOCK_ACQUIRED);
  acme__storage_unlock(other);

  acme__storage_unlock(lock);
  ASSERT_FALSE(exists(file));
  ASSERT_EQ(acme__storage_lock(f.st, &lock, &err, "*.example.com", 600),
            ACME_STORAGE_LOCK_ACQUIRED);
  acme__storage_unlock(lock);
  acme__storage_unlock(NULL);
  err = NULL;
  ASSERT_EQ(acme__storage_lock(f.st, &lock, &err, "../locks", 600), -EINVAL);
  ASSERT_NULL(lock);
  gh_free(err);

  free(pid);
  free(file);
  fixture_cleanup(&f);
}

/* A child that tries the lock on "example.com" each time it reads 't' from
 * |cmd| and answers 'A' (acquired, and released again), 'H' (held) or 'E';
 * end of file ends it. */
static void try_locker(acme_storage_t *st, int cmd, int reply) {
  char c;
  while (read(cmd, &c, 1) == 1 && c == 't') {
    acme_storage_lock_t *lock = NULL;
    char *err = NULL;
    int ret = acme__storage_lock(st, &lock, &err, "example.com", 60);
    c = ret == ACME_STORAGE_LOCK_ACQUIRED ? 'A' : ret == ACME_STORAGE_LOCK_HELD ? 'H' : 'E';
    acme__storage_unlock(lock);
    gh_free(err);
    if (write(reply, &c, 1) != 1) break;
  }
  _exit(0);
}

static char ask(int cmd, int reply) {
  char c = 't';
  if (write(cmd, &c, 1) != 1 || read(reply, &c, 1) != 1) return '?';
  return c;
}

static void test_lock_other_process(void) {
  fixture_t f;
  fixture_init(&f);
  char *err = NULL;
  int to_child[2], from_child[2];
  TC_CHECK(pipe(to_child) == 0 && pipe(from_child) == 0);
  /* Forked before the lock is taken, so the child shares no descriptor of
   * it (see acme__storage_lock on fork). */
  pid_t pid = fork();
  TC_CHECK(pid >= 0);
  if (pid == 0) {
    /* Only the parent's ends stay open there, so the child sees EOF and
     * ends if the parent dies. */
    close(to_child[1]);
    close(from_child[0]);
    try_locker(f.st, to_child[0], from_child[1]);
  }
  close(to_child[0]);
  close(from_child[1]);
  acme_storage_lock_t *lock = NULL;
  int held = acme__storage_lock(f.st, &lock, &err, "example.com", 60);
  char first = ask(to_child[1], from_child[0]);
  acme__storage_unlock(lock);
  char second = ask(to_child[1], from_child[0]);
  /* The child released it again: ours once more. */
  int again = acme__storage_lock(f.st, &lock, &err, "example.com", 60);
  acme__storage_unlock(lock);
  close(to_child[1]);
  int status;
  TC_CHECK(waitpid(pid, &status, 0) == pid);
  close(from_child[0]);
  ASSERT_EQ(held, ACME_STORAGE_LOCK_ACQUIRED);
  ASSERT_EQ(again, ACME_STORAGE_LOCK_ACQUIRED);
  ASSERT_EQ(first, 'H');
  ASSERT_EQ(second, 'A');
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  fixture_cleanup(&f);
}

static void test_lock_holder_killed(void) {
  fixture_t f;
  fixture_init(&f);
  char *err = NULL;
  int ready[2];
  TC_CHECK(pipe(ready) == 0);
  pid_t pid = fork();
  TC_CHECK(pid >= 0);
  if (pid == 0) {
    acme_storage_lock_t *held = NULL;
    char c = acme__storage_lock(f.st, &held, &err, "example.com", 60) == 0 ? 'L' : 'E';
    if (write(ready[1], &c, 1) != 1) _exit(1);
    for (;;) pause();
  }
  char c = '?';
  TC_CHECK(read(ready[0], &c, 1) == 1);
  close(ready[0]);
  close(ready[1]);
  acme_storage_lock_t *lock = NULL;
  int held = acme__storage_lock(f.st, &lock, &err, "example.com", 60);
  char *who = gh_asprintf("pid=%ld ", (long)pid);
  int names_holder = err != NULL && strstr(err, who) != NULL;
  gh_free(err);
  free(who);
  /* The holder dies without unlocking (and without unlinking the file):
   * the kernel has dropped its lock, so the lock is free at once. */
  TC_CHECK(kill(pid, SIGKILL) == 0 && waitpid(pid, NULL, 0) == pid);
  ASSERT_EQ(c, 'L');
  ASSERT_EQ(held, ACME_STORAGE_LOCK_HELD);
  ASSERT_TRUE(names_holder);
  ASSERT_EQ(acme__storage_lock(f.st, &lock, &err, "example.com", 60), ACME_STORAGE_LOCK_ACQUIRED);
  acme__storage_unlock(lock);
  fixture_cleanup(&f);
}

/* ---- crash safety ---- */

/* check_bundle loads "example.com" and checks that it is A or B, whole:
 * acme_cert_load checks the key against the leaf, and the meta must come
 * from the same save too. Returns NULL or what is wrong (caller frees). */
static char *check_bundle(acme_storage_t *st, const pair_t *a, const pair_t *b, int *seen_a,
                          int *seen_b) {
  acme_cert_t *cert = NULL;
  char *meta = NULL, *err = NULL, *bad = NULL;
  int ret = acme_storage_cert_load(st, &cert, &meta, &err, "example.com");
  if (ret != 0) {
    bad = gh_asprintf("load: %d: %s", ret, err);
  } else if (!same_leaf(cert, a) && !same_leaf(cert, b)) {
    bad = gh_strdup("neither A nor B");
  } else if (strcmp(meta, same_leaf(cert, a) ? "{\"pair\":\"A\"}" : "{\"pair\":\"B\"}") != 0) {
    bad = gh_asprintf("meta %s with the other certificate", meta);
  } else {
    *seen_a += same_leaf(cert, a);
    *seen_b += same_leaf(cert, b);
  }
  acme_cert_unref(cert);
  gh_free(meta);
  gh_free(err);
  return bad;
}

/* A child rewrites "example.com" with B and A in turn until it is killed
 * at a random instant: before, during or after any step of a save. After
 * each kill the stored bundle must be A or B, whole. While the child runs,
 * the parent reads too: readers never see a torn pair either. */
static void test_crash_safety(void) {
  fixture_t f;
  fixture_init(&f);
  char *err = NULL;
  acme_storage_bundle_t ba = bundle(&f.a, "{\"pair\":\"A\"}");
  acme_storage_bundle_t bb = bundle(&f.b, "{\"pair\":\"B\"}");
  ASSERT_EQ(acme_storage_cert_save(f.st, &err, "example.com", &ba), 0);
  srand((unsigned)time(NULL) ^ (unsigned)getpid());
  int seen_a = 0, seen_b = 0, kills = 0;
  char *bad = NULL;
  uint64_t start = gh_now_ms();
  for (; kills < 50 && bad == NULL && gh_now_ms() - start < 8000; kills++) {
    pid_t pid = fork();
    TC_CHECK(pid >= 0);
    if (pid == 0) {
      char *child_err = NULL;
      /* B first: rewriting the A that is stored with A would hide a tear. */
      for (int n = 0;; n++) {
        if (acme_storage_cert_save(f.st, &child_err, "example.com", n % 2 ? &ba : &bb) != 0) {
          fprintf(stderr, "writer: %s\n", child_err);
          _exit(1);
        }
      }
    }
    /* A save takes a few milliseconds (fsyncs): kill anywhere in the
     * first few. */
    uint64_t until = gh_now_ms() + 1 + (uint64_t)(rand() % 40);
    while (bad == NULL && gh_now_ms() < until) {
      bad = check_bundle(f.st, &f.a, &f.b, &seen_a, &seen_b);
    }
    int status;
    TC_CHECK(kill(pid, SIGKILL) == 0 && waitpid(pid, &status, 0) == pid);
    if (bad == NULL && !WIFSIGNALED(status)) bad = gh_strdup("the writer failed");
    /* Every tenth time, restart as a process would after a crash. */
    if (kills % 10 == 9) {
      acme_storage_free(f.st);
      f.st = acme_storage_open(&err, f.s.path);
      TC_CHECK(f.st != NULL);
    }
    if (bad == NULL) bad = check_bundle(f.st, &f.a, &f.b, &seen_a, &seen_b);
  }
  if (bad != NULL) TEST_FAIL_("after %d kills: %s", kills, bad);
  fprintf(stderr, "crash safety: %d kills, %d reads (A %d, B %d) in %llu ms\n", kills,
          seen_a + seen_b, seen_a, seen_b, (unsigned long long)(gh_now_ms() - start));
  ASSERT_TRUE(seen_b > 0);

  /* After a restart and one more save, nothing of the crashes is left:
   * the current version, the previous one, and the operator links. */
  acme_storage_free(f.st);
  f.st = acme_storage_open(&err, f.s.path);
  ASSERT_NOT_NULL(f.st);
  ASSERT_EQ(acme_storage_cert_save(f.st, &err, "example.com", &bb), 0);
  char *dir = gh_asprintf("%s/certs/example.com", f.s.path);
  ASSERT_EQ(count_entries(dir, ".tmp-"), 0);
  ASSERT_TRUE(count_entries(dir, "v-") <= 2);
  ASSERT_EQ(count_entries(dir, ""), 2 + 1 + 3 + count_entries(dir, "v-"));
  free(dir);
  fixture_cleanup(&f);
}

int main(void) {
  RUN(test_name_encode);
  RUN(test_ca_dir);
  RUN(test_open_modes);
  RUN(test_no_challenge_records);
  RUN(test_account_round_trip);
  RUN(test_cert_round_trip);
  RUN(test_cert_corrupt);
  RUN(test_stray_tmp);
  RUN(test_lock_same_process);
  RUN(test_lock_other_process);
  RUN(test_lock_holder_killed);
  RUN(test_crash_safety);
  TEST_EXIT();
}
