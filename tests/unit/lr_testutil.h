/* Helpers shared by the unit tests: building listeners by hand, and what a
 * test does when its scenario cannot run on this machine. */
#ifndef LR_TESTUTIL_H
#define LR_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_config.h"
#include "lr_pal.h"
#include "lr_proto.h"
#include "lr_sbuf.h"

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
static inline int lr_test_in_ci(void) {
  const char *v = getenv("CI");
  return v != NULL &&
         (lr_streq_nocase(v, "true") || lr_streq_nocase(v, "1") || lr_streq_nocase(v, "yes"));
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

/* A platform layer's handshake crypto: HMAC-SHA256 against RFC 4231 test
 * cases 2 and 6 (a key longer than the block), the same vectors for every
 * layer (libcrypto on Linux, BCrypt on Windows), and random bytes that
 * differ call to call. */
static inline void lr_test_pal_crypto(const lr_pal_t *pal) {
  static const uint8_t want2[32] = {
      0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7,
      0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43};
  static const uint8_t want6[32] = {
      0x60, 0xe4, 0x31, 0x59, 0x1e, 0xe0, 0xb6, 0x7f, 0x0d, 0x8a, 0x26, 0xaa, 0xcb, 0xf5, 0xb7, 0x7f,
      0x8e, 0x0b, 0xc6, 0x21, 0x37, 0x28, 0xc5, 0x14, 0x05, 0x46, 0x04, 0x0f, 0x0e, 0xe3, 0x7f, 0x54};
  uint8_t out[32], key6[131], r1[32], r2[32];
  const char *m2 = "what do ya want for nothing?";
  const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
  assert_non_null(pal->hmac_sha256);
  assert_non_null(pal->random_bytes);
  assert_int_equal(
      pal->hmac_sha256((const uint8_t *)"Jefe", 4, (const uint8_t *)m2, strlen(m2), out), 0);
  assert_memory_equal(out, want2, 32);
  memset(key6, 0xaa, sizeof key6);
  assert_int_equal(pal->hmac_sha256(key6, sizeof key6, (const uint8_t *)m6, strlen(m6), out), 0);
  assert_memory_equal(out, want6, 32);
  assert_int_equal(pal->random_bytes(r1, sizeof r1), 0);
  assert_int_equal(pal->random_bytes(r2, sizeof r2), 0);
  assert_memory_not_equal(r1, r2, sizeof r1);
}

#endif
