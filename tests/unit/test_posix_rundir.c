/* The Linux host's run directory (lr_posix_own_dir): created 0750, and
 * refused when it is not a real directory of the daemon's own uid, so that
 * another local user cannot pre-create /tmp/lorelay-UID (or /run/lorelay)
 * and swap the daemon's sockets. Needs root to hand a directory to another
 * uid; without root the scenario is skipped outside CI and fails in CI. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "lr_posix.h"
#include "lr_testutil.h"

static char base[64];

static int setup(void **state) {
  (void)state;
  snprintf(base, sizeof base, "/tmp/lr-rundir-XXXXXX");
  return mkdtemp(base) ? 0 : -1;
}

static int teardown(void **state) {
  char cmd[128];
  (void)state;
  snprintf(cmd, sizeof cmd, "rm -rf %s", base);
  return system(cmd) == 0 ? 0 : -1;
}

static void test_created_private(void **state) {
  char dir[128], err[256];
  struct stat st;
  (void)state;
  snprintf(dir, sizeof dir, "%s/run/lorelay", base);
  assert_int_equal(lr_posix_own_dir(dir, err, sizeof err), 0);
  assert_int_equal(stat(dir, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0750);
  assert_int_equal(st.st_uid, geteuid());
}

static void test_permissive_mode_is_narrowed(void **state) {
  char dir[128], err[256];
  struct stat st;
  (void)state;
  snprintf(dir, sizeof dir, "%s/wide", base);
  assert_int_equal(mkdir(dir, 0777), 0);
  assert_int_equal(chmod(dir, 0777), 0);
  assert_int_equal(lr_posix_own_dir(dir, err, sizeof err), 0);
  assert_int_equal(stat(dir, &st), 0);
  assert_int_equal(st.st_mode & 022, 0);
}

static void test_foreign_owner_refused(void **state) {
  char dir[128], err[256];
  (void)state;
  if (geteuid() != 0) LR_SKIP_OR_FAIL("handing a directory to another uid needs root");
  snprintf(dir, sizeof dir, "%s/squatted", base);
  assert_int_equal(mkdir(dir, 0700), 0);
  assert_int_equal(chown(dir, 65534, 65534), 0);
  assert_int_equal(lr_posix_own_dir(dir, err, sizeof err), -1);
  if (!strstr(err, "belongs to uid 65534") || strchr(err, '\n')) fail_msg("error: %s", err);
}

static void test_symlink_refused(void **state) {
  char dir[128], target[128], err[256];
  (void)state;
  snprintf(target, sizeof target, "%s/elsewhere", base);
  snprintf(dir, sizeof dir, "%s/link", base);
  assert_int_equal(mkdir(target, 0700), 0);
  assert_int_equal(symlink(target, dir), 0);
  assert_int_equal(lr_posix_own_dir(dir, err, sizeof err), -1);
  assert_non_null(strstr(err, "not a directory"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_created_private),
      cmocka_unit_test(test_permissive_mode_is_narrowed),
      cmocka_unit_test(test_foreign_owner_refused),
      cmocka_unit_test(test_symlink_refused),
  };
  return lr_test_exit_code(cmocka_run_group_tests_name("posix_rundir", tests, setup, teardown));
}
