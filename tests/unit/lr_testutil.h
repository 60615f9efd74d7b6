/* Helpers shared by the unit tests: building listeners by hand, and what a
 * test does when its scenario cannot run on this machine. */
#ifndef LR_TESTUTIL_H
#define LR_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_config.h"
#include "lr_proto.h"

static inline lr_listener_t lr_test_v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port) {
  lr_listener_t l;
  memset(&l, 0, sizeof l);
  l.family = 4;
  l.port = port;
  l.addr[0] = a;
  l.addr[1] = b;
  l.addr[2] = c;
  l.addr[3] = d;
  return l;
}

/* ---- CI, and scenarios that cannot run here ------------------------------
 * The product's test rule: outside CI a scenario that cannot run on this
 * machine is a skip (the binary exits 77, ctest's SKIP_RETURN_CODE); in CI
 * it is a failure, so a broken CI image cannot hide behind skips.
 *
 * CI means: the environment variable CI is "true", "1" or "yes", in any case
 * (the same rule as tests/lrci.py, tests/lrci.sh and LORELAY_IN_CI in
 * cmake/LorelayTesting.cmake). */
static inline int lr_test_ieq_(const char *a, const char *b) {
  for (; *a && *b; a++, b++) {
    char x = *a >= 'A' && *a <= 'Z' ? (char)(*a - 'A' + 'a') : *a;
    if (x != *b) return 0;
  }
  return *a == *b;
}

static inline int lr_test_in_ci(void) {
  const char *v = getenv("CI");
  return v != NULL && (lr_test_ieq_(v, "true") || lr_test_ieq_(v, "1") || lr_test_ieq_(v, "yes"));
}

/* How many tests of this binary were skipped (see lr_test_exit_code). */
static inline int *lr_test_skips_(void) {
  static int n;
  return &n;
}

/* Inside a cmocka test: fail in CI, skip() outside. cmocka counts a skipped
 * test as passed, so main() must return lr_test_exit_code(failed) for the
 * skip to reach ctest as exit 77. Does not return. */
#define LR_SKIP_OR_FAIL(reason)                                                          \
  do {                                                                                   \
    const char *lr_reason_ = (reason);                                                   \
    if (lr_test_in_ci())                                                                 \
      fail_msg("CI is set, so a scenario that cannot run is a failure: %s", lr_reason_); \
    print_message("SKIP: %s\n", lr_reason_);                                             \
    (*lr_test_skips_())++;                                                               \
    skip();                                                                              \
  } while (0)

/* main()'s exit code: the failures cmocka counted, else 77 if any test was
 * skipped (LR_SKIP_OR_FAIL outside CI), else 0. */
static inline int lr_test_exit_code(int failed) {
  if (failed) return failed;
  if (*lr_test_skips_() > 0) {
    fprintf(stderr, "SKIP: %d test(s) could not run their scenario on this machine\n",
            *lr_test_skips_());
    return 77;
  }
  return 0;
}

/* From main(), when a whole group cannot run: prints one line naming why and
 * returns the exit code (1 in CI, 77 outside). */
static inline int lr_test_group_unavailable(const char *prog, const char *reason) {
  if (lr_test_in_ci()) {
    fprintf(stderr, "%s: FAIL (CI is set, a scenario that cannot run is a failure): %s\n", prog,
            reason);
    return 1;
  }
  fprintf(stderr, "%s: SKIP: %s\n", prog, reason);
  return 77;
}

/* The default config with the port policy opened to every port, for tests
 * of the mapping itself (the policy has tests of its own). */
static inline void lr_test_config_all_ports(lr_config_t *c) {
  lr_config_defaults(c);
  c->forward_ports.n = 1;
  c->forward_ports.r[0].lo = 1;
  c->forward_ports.r[0].hi = 65535;
}

#endif
