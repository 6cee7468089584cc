/* emit.c: conf_to_json, the effective configuration as JSON, by walking
 * the schema tables that parsing used. Rows with a default are always
 * written (so the output shows every default); rows without one are
 * written only when they hold something, and an optional object only when
 * it was given. Durations come out in their shortest exact form ("2m"),
 * sizes as numbers of bytes. conf_parse of the printed result yields an
 * equal configuration. */
#include "conf/conf.h"
#include "conf/internal.h"

int conf__table_absent(const conf__table_t *t, const char *base) {
  if (t->has_present) return !*(const int *)(const void *)(base + t->present_off);
  for (size_t i = 0; i < t->num_rows; i++) {
    const conf__row_t *row = &t->rows[i];
    if ((row->flags & CONF__REQUIRED) && row->type->is_empty && row->type->is_empty(row, base)) {
      return 1;
    }
  }
  return 0;
}

cJSON *conf__emit_walk(const conf__table_t *t, const char *base) {
  cJSON *obj = cJSON_CreateObject();
  for (size_t i = 0; i < t->num_rows; i++) {
    const conf__row_t *row = &t->rows[i];
    if (row->def == NULL && row->type->is_empty && row->type->is_empty(row, base)) continue;
    cJSON_AddItemToObject(obj, row->name, row->type->emit(row, base));
  }
  return obj;
}

cJSON *conf_to_json(const conf_t *conf) {
  if (conf == NULL) return NULL;
  return conf__emit_walk(&conf__root_table, (const char *)conf);
}
