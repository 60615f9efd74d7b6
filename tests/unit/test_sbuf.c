/* Unit tests for lr_sbuf: appending, and growth under printf at and
 * around each capacity boundary. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_sbuf.h"

static void test_init_empty(void **state) {
  (void)state;
  lr_sbuf_t b;
  lr_sbuf_init(&b);
  assert_int_equal(b.len, 0);
  assert_int_equal(b.err, 0);
  lr_sbuf_free(&b);
  /* free must leave a reusable, empty buffer (callers free then reuse) */
  assert_int_equal(b.len, 0);
  lr_sbuf_free(&b);
}

static void test_append_and_puts(void **state) {
  (void)state;
  lr_sbuf_t b;
  lr_sbuf_init(&b);
  lr_sbuf_puts(&b, "abc");
  lr_sbuf_append(&b, "defXXX", 3);
  lr_sbuf_puts(&b, "");
  lr_sbuf_append(&b, "g", 1);
  assert_int_equal(b.err, 0);
  assert_int_equal(b.len, 7);
  assert_string_equal(b.p, "abcdefg");
  lr_sbuf_free(&b);
}

static void test_printf_basic(void **state) {
  (void)state;
  lr_sbuf_t b;
  lr_sbuf_init(&b);
  lr_sbuf_printf(&b, "%s:%d", "port", 8000);
  lr_sbuf_printf(&b, "/%u/%lu", 7u, 4294967295ul);
  assert_int_equal(b.err, 0);
  assert_string_equal(b.p, "port:8000/7/4294967295");
  assert_int_equal(b.len, strlen(b.p));
  lr_sbuf_free(&b);
}

/* One printf far bigger than any initial capacity, then thousands of small
 * ones: the buffer must grow (possibly several times) and keep every byte. */
static void test_printf_growth(void **state) {
  (void)state;
  enum { BIG = 70000 };
  char *big = malloc(BIG + 1);
  assert_non_null(big);
  for (size_t i = 0; i < BIG; i++) big[i] = (char)('a' + i % 26);
  big[BIG] = 0;

  lr_sbuf_t b;
  lr_sbuf_init(&b);
  lr_sbuf_printf(&b, "<%s>", big);
  assert_int_equal(b.err, 0);
  assert_int_equal(b.len, BIG + 2);
  assert_int_equal(b.p[0], '<');
  assert_memory_equal(b.p + 1, big, BIG);
  assert_int_equal(b.p[BIG + 1], '>');
  assert_int_equal(b.p[BIG + 2], 0);
  assert_true(b.cap > b.len);

  lr_sbuf_t c;
  lr_sbuf_init(&c);
  char expect[16];
  for (int i = 0; i < 5000; i++) lr_sbuf_printf(&c, "%04d,", i);
  assert_int_equal(c.err, 0);
  assert_int_equal(c.len, 5000 * 5);
  for (int i = 0; i < 5000; i += 997) {
    snprintf(expect, sizeof expect, "%04d,", i);
    assert_memory_equal(c.p + i * 5, expect, 5);
  }
  assert_int_equal(c.p[c.len], 0);
  lr_sbuf_free(&c);
  lr_sbuf_free(&b);
  free(big);
}

/* Exactly crossing a power-of-two boundary is where off-by-one growth bugs
 * (forgetting the NUL) show; valgrind/asan report the overflow. */
static void test_growth_boundaries(void **state) {
  (void)state;
  for (size_t n = 1; n <= 600; n++) {
    lr_sbuf_t b;
    lr_sbuf_init(&b);
    for (size_t i = 0; i < n; i++) lr_sbuf_append(&b, "x", 1);
    assert_int_equal(b.len, n);
    assert_int_equal(b.p[n], 0);
    assert_int_equal(b.p[n - 1], 'x');
    lr_sbuf_free(&b);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init_empty),
      cmocka_unit_test(test_append_and_puts),
      cmocka_unit_test(test_printf_basic),
      cmocka_unit_test(test_printf_growth),
      cmocka_unit_test(test_growth_boundaries),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
