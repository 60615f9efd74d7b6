/* Unit tests for lorelay-init's pure parts: the restart backoff and the
 * search for --listen among the agent arguments it pre-binds. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "lr_glisten.h"
#include "lr_supervise.h"

static void test_backoff_doubles_to_the_cap(void **state) {
  (void)state;
  lr_backoff_t b;
  lr_backoff_init(&b);
  const unsigned want[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    assert_int_equal(lr_backoff_next(&b, 50), want[i]);
}

static void test_backoff_resets_after_a_healthy_run(void **state) {
  (void)state;
  lr_backoff_t b;
  lr_backoff_init(&b);
  for (int i = 0; i < 8; i++) lr_backoff_next(&b, 10);
  assert_int_equal(lr_backoff_next(&b, 9999), 5000); /* not quite healthy */
  assert_int_equal(lr_backoff_next(&b, 10000), 100); /* ran 10 s: fast again */
  assert_int_equal(lr_backoff_next(&b, 0), 200);
}

static void test_find_listen_arg(void **state) {
  (void)state;
  int missing;
  char *a1[] = {"--name", "demo", "--listen", "unix:/run/x.sock", "--log-level", "debug"};
  assert_string_equal(lr_guest_find_listen_arg(6, a1, &missing), "unix:/run/x.sock");
  assert_int_equal(missing, 0);

  char *a2[] = {"--listen=tcp:0.0.0.0:7000", "--token-file", "/t"};
  assert_string_equal(lr_guest_find_listen_arg(3, a2, &missing), "tcp:0.0.0.0:7000");

  /* A value that happens to be "--listen" belongs to the option before it. */
  char *a3[] = {"--name", "--listen", "--listen", "vsock:any:5000"};
  assert_string_equal(lr_guest_find_listen_arg(4, a3, &missing), "vsock:any:5000");

  char *a4[] = {"--name", "x", "--listen"};
  assert_null(lr_guest_find_listen_arg(3, a4, &missing));
  assert_int_equal(missing, 1);

  char *a5[] = {"--name", "x"};
  assert_null(lr_guest_find_listen_arg(2, a5, &missing));
  assert_int_equal(missing, 0);

  char *a6[] = {"--help", "--listen", "unix:/a"};
  assert_string_equal(lr_guest_find_listen_arg(3, a6, &missing), "unix:/a");

  /* -V (the agent's --version) takes no value either. */
  char *a7[] = {"-V", "--listen", "unix:/b"};
  assert_string_equal(lr_guest_find_listen_arg(3, a7, &missing), "unix:/b");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_backoff_doubles_to_the_cap),
      cmocka_unit_test(test_backoff_resets_after_a_healthy_run),
      cmocka_unit_test(test_find_listen_arg),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
