/* driver.c: replays inputs through a libFuzzer target without libFuzzer,
 * so that every build (gcc included, plain or sanitized) runs the seed
 * corpus and every committed reproducer under ctest.
 *
 *   fuzz_<name>_replay FILE|DIR...
 *
 * Each file, and each regular file directly inside each directory (in name
 * order), is read whole and passed once to LLVMFuzzerTestOneInput. A crash
 * is the failure; the exit status is 1 if a file cannot be read or nothing
 * was run. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    perror(path);
    return -1;
  }
  size_t len = 0, cap = 4096;
  uint8_t *buf = malloc(cap);
  size_t n;
  while (buf != NULL && (n = fread(buf + len, 1, cap - len, f)) > 0) {
    len += n;
    if (len == cap) buf = realloc(buf, cap *= 2);
  }
  int bad = buf == NULL || ferror(f);
  fclose(f);
  if (bad) {
    fprintf(stderr, "%s: cannot read\n", path);
    free(buf);
    return -1;
  }
  /* An exact-size copy, so that ASan catches a read one past the input. */
  uint8_t *exact = malloc(len ? len : 1);
  if (exact == NULL) abort();
  memcpy(exact, buf, len);
  free(buf);
  fprintf(stderr, "replay %s (%zu bytes)\n", path, len);
  LLVMFuzzerTestOneInput(exact, len);
  free(exact);
  return 0;
}

static int only_files(const struct dirent *e) { return e->d_name[0] != '.'; }

/* add appends the absolute name of |path| to the list: a target may
 * change the working directory (fuzz_conf does). */
static int add(char ***list, size_t *num, const char *path) {
  char *abs = realpath(path, NULL);
  struct stat st;
  if (abs == NULL || stat(abs, &st) != 0) {
    perror(path);
    free(abs);
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    free(abs);
    return 0;
  }
  *list = realloc(*list, (*num + 1) * sizeof(char *));
  if (*list == NULL) abort();
  (*list)[(*num)++] = abs;
  return 0;
}

int main(int argc, char **argv) {
  int failed = 0;
  char **files = NULL;
  size_t num_files = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      perror(argv[i]);
      failed = 1;
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      if (add(&files, &num_files, argv[i]) != 0) failed = 1;
      continue;
    }
    struct dirent **names;
    int num = scandir(argv[i], &names, only_files, alphasort);
    if (num < 0) {
      perror(argv[i]);
      failed = 1;
      continue;
    }
    for (int k = 0; k < num; k++) {
      char path[4096];
      snprintf(path, sizeof(path), "%s/%s", argv[i], names[k]->d_name);
      if (add(&files, &num_files, path) != 0) failed = 1;
      free(names[k]);
    }
    free(names);
  }
  size_t runs = 0;
  for (size_t i = 0; i < num_files; i++) {
    if (run_file(files[i]) == 0) runs++;
    else failed = 1;
    free(files[i]);
  }
  free(files);
  fprintf(stderr, "%zu input(s) replayed\n", runs);
  return failed || runs == 0 ? 1 : 0;
}
