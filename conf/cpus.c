/* cpus.c: how many CPUs this process may use, what "workers": "auto"
 * means. A container limited to 2 CPUs on a 64-core host should not start
 * 64 workers that the kernel then throttles: the online count is lowered
 * by the affinity mask (taskset, cpusets) and by the cgroup's CPU quota,
 * rounded up (1.5 CPUs of quota: 2 workers). The quota is read from cgroup
 * v2 (cpu.max of the process's own cgroup, or of the namespace root a
 * container sees) or else v1 (cpu.cfs_quota_us and cpu.cfs_period_us). */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "conf/conf.h"

/* parse_long reads a decimal integer (an optional '-') at |*p| and
 * advances past it; -1 when there is none or it overflows. */
static int parse_long(const char **p, long long *out) {
  const char *s = *p;
  int neg = *s == '-';
  if (neg) s++;
  if (*s < '0' || *s > '9') return -1;
  long long n = 0;
  for (; *s >= '0' && *s <= '9'; s++) {
    if (n > (999999999999999LL - (*s - '0')) / 10) return -1;
    n = n * 10 + (*s - '0');
  }
  *p = s;
  *out = neg ? -n : n;
  return 0;
}

int conf_cpu_max_parse(const char *text, unsigned *out_cpus) {
  const char *p = text;
  long long quota = -1, period = 0;
  int unlimited = 0;
  if (strncmp(p, "max", 3) == 0) {
    unlimited = 1;
    p += 3;
  } else if (parse_long(&p, &quota) != 0 || (quota < 0 && quota != -1) || quota == 0) {
    return -1;
  }
  if (*p != ' ' && *p != '\t') return -1;
  while (*p == ' ' || *p == '\t') p++;
  if (parse_long(&p, &period) != 0 || period <= 0) return -1;
  while (*p == '\n' || *p == ' ') p++;
  if (*p != '\0') return -1;
  if (unlimited || quota == -1) {
    *out_cpus = 0;
    return 0;
  }
  long long cpus = (quota + period - 1) / period;
  *out_cpus = cpus > 100000 ? 100000u : (unsigned)cpus;
  return 0;
}

/* read_small reads up to |cap|-1 bytes of |path| into |buf|; 0 or -1. */
static int read_small(const char *path, char *buf, size_t cap) {
  FILE *f = fopen(path, "re");
  if (f == NULL) return -1;
  size_t n = fread(buf, 1, cap - 1, f);
  fclose(f);
  buf[n] = '\0';
  return n > 0 ? 0 : -1;
}

/* own_cgroup_v2 writes the process's cgroup v2 path ("0::/a/b" in
 * /proc/self/cgroup) into |out|; 0 or -1. */
static int own_cgroup_v2(char *out, size_t cap) {
  char buf[4096];
  if (read_small("/proc/self/cgroup", buf, sizeof(buf)) != 0) return -1;
  for (char *line = buf, *nl; line && *line; line = nl ? nl + 1 : NULL) {
    nl = strchr(line, '\n');
    if (nl) *nl = '\0';
    if (strncmp(line, "0::", 3) == 0 && strlen(line + 3) < cap) {
      strcpy(out, line + 3);
      return 0;
    }
  }
  return -1;
}

/* quota_cpus returns the CPUs the cgroup quota allows, or 0 for none (or
 * none found). */
static unsigned quota_cpus(void) {
  char text[128], path[4200], own[4096];
  unsigned cpus = 0;
  /* cgroup v2: the process's own group first, then the root (what a
   * container with its own cgroup namespace sees as its group). */
  if (own_cgroup_v2(own, sizeof(own)) == 0 && strcmp(own, "/") != 0) {
    snprintf(path, sizeof(path), "/sys/fs/cgroup%s/cpu.max", own);
    if (read_small(path, text, sizeof(text)) == 0 && conf_cpu_max_parse(text, &cpus) == 0)
      return cpus;
  }
  if (read_small("/sys/fs/cgroup/cpu.max", text, sizeof(text)) == 0 &&
      conf_cpu_max_parse(text, &cpus) == 0)
    return cpus;
  /* cgroup v1. */
  static const char *const dirs[] = {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"};
  for (size_t i = 0; i < GH_ARRAY_LEN(dirs); i++) {
    char quota[64], period[64];
    snprintf(path, sizeof(path), "%s/cpu.cfs_quota_us", dirs[i]);
    if (read_small(path, quota, sizeof(quota)) != 0) continue;
    snprintf(path, sizeof(path), "%s/cpu.cfs_period_us", dirs[i]);
    if (read_small(path, period, sizeof(period)) != 0) continue;
    quota[strcspn(quota, "\n")] = '\0';
    snprintf(text, sizeof(text), "%s %s", quota, period);
    if (conf_cpu_max_parse(text, &cpus) == 0) return cpus;
  }
  return 0;
}

unsigned conf_cpu_count(void) {
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned n = online > 0 ? (unsigned)online : 1;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int allowed = CPU_COUNT(&set);
    if (allowed > 0 && (unsigned)allowed < n) n = (unsigned)allowed;
  }
  unsigned quota = quota_cpus();
  if (quota > 0 && quota < n) n = quota;
  return n > 0 ? n : 1;
}
