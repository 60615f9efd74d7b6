/* Dropping the agent's privileges after set-up; see lr_privdrop.h. */
#include "lr_privdrop.h"

#include <errno.h>
#include <linux/capability.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

static const struct {
  int cap;
  const char *name;
} keep[] = {
    {CAP_DAC_READ_SEARCH, "cap_dac_read_search"}, /* list other users' /proc/PID/fd */
    {CAP_NET_BIND_SERVICE, "cap_net_bind_service"}, /* reverse ports below 1024 */
    {CAP_SYS_PTRACE, "cap_sys_ptrace"},             /* read their fd links, ns/net */
};

static int has(const struct __user_cap_data_struct d[2], int cap) {
  return (d[cap / 32].permitted >> (cap % 32)) & 1;
}

int lr_privdrop_agent(char *what, size_t whatlen, char *err, size_t errlen) {
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2], want[2];
  size_t off = 0;
  if (syscall(SYS_capget, &h, d) != 0) {
    snprintf(err, errlen, "capget: %s", strerror(errno));
    return -1;
  }
  memset(want, 0, sizeof want);
  what[0] = '\0';
  for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
    int c = keep[i].cap;
    if (!has(d, c)) continue;
    want[c / 32].permitted |= 1u << (c % 32);
    want[c / 32].effective |= 1u << (c % 32);
    int n = snprintf(what + off, whatlen - off, "%s%s", off ? ", " : "kept ", keep[i].name);
    if (n > 0 && (size_t)n < whatlen - off) off += (size_t)n;
  }
  if (!off) snprintf(what, whatlen, "no capabilities");
  /* The bounding set first: dropping from it needs CAP_SETPCAP, which the
   * capset below takes away. Without it (an unprivileged agent) there is
   * nothing to drop there that it could use anyway. */
  if (has(d, CAP_SETPCAP)) {
    for (int c = 0; c < 64; c++) {
      int kept = 0;
      for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) kept |= keep[i].cap == c;
      if (kept) continue;
      if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0) {
        if (errno == EINVAL) break; /* past the kernel's last capability */
        snprintf(err, errlen, "dropping capability %d from the bounding set: %s", c,
                 strerror(errno));
        return -1;
      }
    }
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
    snprintf(err, errlen, "clearing the ambient capabilities: %s", strerror(errno));
    return -1;
  }
  if (syscall(SYS_capset, &h, want) != 0) {
    snprintf(err, errlen, "capset: %s", strerror(errno));
    return -1;
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    snprintf(err, errlen, "no_new_privs: %s", strerror(errno));
    return -1;
  }
  off = strlen(what);
  snprintf(what + off, whatlen - off, "; no_new_privs");
  return 0;
}
