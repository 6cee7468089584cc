/* fuzz_conf.c: conf_parse on arbitrary bytes.
 *
 * Invariants: no crash, no leak, and every document that parses survives
 * the round trip the server relies on (conf_to_json, print, conf_parse):
 * the printed form parses again, and printing that gives the same text.
 *
 * Relative file names resolve against the working directory, which is set
 * to conf/examples so that the example configurations in the corpus
 * (certs/example.crt) parse fully. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/common.h"
#include "conf/conf.h"

static void init(void) {
  static int done;
  if (done) return;
  done = 1;
  if (chdir(GH_SOURCE_DIR "/conf/examples") != 0) {
    perror(GH_SOURCE_DIR "/conf/examples");
    abort();
  }
}

static char *print(const conf_t *conf) {
  cJSON *json = conf_to_json(conf);
  char *text = cJSON_PrintUnformatted(json);
  cJSON_Delete(json);
  if (text == NULL) abort();
  return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  init();
  char *err = NULL;
  conf_t *conf = conf_parse(&err, "fuzz.json", (const char *)data, size);
  if (conf == NULL) {
    if (err == NULL || err[0] == '\0') {
      fprintf(stderr, "conf_parse failed without saying why\n");
      abort();
    }
    gh_free(err);
    return 0;
  }
  char *text = print(conf);
  conf_free(conf);
  conf_t *again = conf_parse(&err, "fuzz.json", text, strlen(text));
  if (again == NULL) {
    fprintf(stderr, "round trip: conf_parse refused conf_to_json's output:\n%s\n%s", text, err);
    abort();
  }
  char *text2 = print(again);
  conf_free(again);
  if (strcmp(text, text2) != 0) {
    fprintf(stderr, "round trip: not stable:\n%s\n%s\n", text, text2);
    abort();
  }
  cJSON_free(text);
  cJSON_free(text2);
  return 0;
}
