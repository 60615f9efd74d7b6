/* Helpers for the Linux-only unit tests (test_posix_*, test_guest_*): a
 * transport address that must parse, and the number of open descriptors,
 * for tests that prove an error path leaks none. Include after cmocka.h. */
#ifndef LR_TESTUTIL_LINUX_H
#define LR_TESTUTIL_LINUX_H

#include <dirent.h>

#include "lr_addr.h"

static inline lr_taddr_t lr_test_taddr(const char *s) {
  lr_taddr_t a;
  char err[256];
  if (lr_taddr_parse(s, &a, err, sizeof err) != 0) fail_msg("parse '%s': %s", s, err);
  return a;
}

static inline int lr_test_count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  assert_non_null(d);
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

#endif
