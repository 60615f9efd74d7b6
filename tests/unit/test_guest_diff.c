/* Unit tests for guest listener sets: sort/dedupe, self-exclusion and the
 * diff the agent turns into LISTENER_ADD/DEL messages.
 *
 * The host's port table is only as right as these messages, so the diff is
 * checked against an independent brute-force membership check on sets
 * built from many pseudo-random listeners, besides the hand-written cases. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "lr_listeners.h"
#include "lr_testutil.h"

static lr_listener_t v6any(uint16_t port, int v6only) {
  lr_listener_t l;
  memset(&l, 0, sizeof l);
  l.family = 6;
  l.port = port;
  l.flags = v6only ? LR_LISTENER_V6ONLY : 0;
  return l;
}

static int contains(const lr_listener_t *v, size_t n, const lr_listener_t *l) {
  for (size_t i = 0; i < n; i++)
    if (lr_listener_cmp(&v[i], l) == 0) return 1;
  return 0;
}

static void test_sort_unique_removes_reuseport_duplicates(void **state) {
  (void)state;
  lr_listener_t v[] = {lr_test_v4(0, 0, 0, 0, 8080), v6any(22, 0), lr_test_v4(0, 0, 0, 0, 8080),
                       lr_test_v4(127, 0, 0, 1, 53),  lr_test_v4(0, 0, 0, 0, 8080), v6any(22, 0)};
  size_t n = lr_listeners_sort_unique(v, 6);
  assert_int_equal(n, 3);
  for (size_t i = 1; i < n; i++) assert_true(lr_listener_cmp(&v[i - 1], &v[i]) < 0);
  assert_int_equal(lr_listeners_sort_unique(v, 0), 0);
}

static void test_v6only_flag_makes_a_different_listener(void **state) {
  (void)state;
  lr_listener_t v[] = {v6any(443, 0), v6any(443, 1)};
  assert_int_equal(lr_listeners_sort_unique(v, 2), 2);
}

static void test_from_dump_excludes_own_inode(void **state) {
  (void)state;
  lr_sockdiag_entry_t e[4];
  memset(e, 0, sizeof e);
  e[0].l = lr_test_v4(127, 0, 0, 1, 7000);
  e[0].inode = 111; /* the agent's own transport listener */
  e[1].l = lr_test_v4(0, 0, 0, 0, 8000);
  e[1].inode = 222;
  e[2].l = lr_test_v4(0, 0, 0, 0, 8000);
  e[2].inode = 223; /* SO_REUSEPORT sibling */
  e[3].l = v6any(8000, 1);
  e[3].inode = 224;
  uint32_t own = 111;
  lr_listener_t out[4];
  size_t n = lr_listeners_from_dump(e, 4, &own, 1, out);
  assert_int_equal(n, 2);
  lr_listener_t mine = lr_test_v4(127, 0, 0, 1, 7000);
  assert_false(contains(out, n, &mine));
  assert_true(contains(out, n, &e[1].l));
  assert_true(contains(out, n, &e[3].l));
  /* Without an own inode everything is reported. */
  assert_int_equal(lr_listeners_from_dump(e, 4, NULL, 0, out), 3);
}

static void check_diff(const lr_listener_t *old, size_t nold, const lr_listener_t *cur,
                       size_t ncur, size_t want_adds, size_t want_dels) {
  lr_listener_t adds[64], dels[64];
  size_t na = 99, nd = 99;
  lr_listeners_diff(old, nold, cur, ncur, adds, &na, dels, &nd);
  assert_int_equal(na, want_adds);
  assert_int_equal(nd, want_dels);
  for (size_t i = 0; i < na; i++) {
    assert_true(contains(cur, ncur, &adds[i]));
    assert_false(contains(old, nold, &adds[i]));
  }
  for (size_t i = 0; i < nd; i++) {
    assert_true(contains(old, nold, &dels[i]));
    assert_false(contains(cur, ncur, &dels[i]));
  }
}

static void test_diff_basic_cases(void **state) {
  (void)state;
  lr_listener_t a[] = {lr_test_v4(0, 0, 0, 0, 80), lr_test_v4(127, 0, 0, 1, 8080), v6any(22, 0)};
  size_t na = lr_listeners_sort_unique(a, 3);
  lr_listener_t b[] = {lr_test_v4(0, 0, 0, 0, 80), v6any(22, 1), v6any(9000, 0)};
  size_t nb = lr_listeners_sort_unique(b, 3);

  check_diff(NULL, 0, NULL, 0, 0, 0);
  check_diff(NULL, 0, a, na, 3, 0); /* first scan: everything is new */
  check_diff(a, na, NULL, 0, 0, 3); /* everything closed */
  check_diff(a, na, a, na, 0, 0);   /* nothing changed: nothing to send */
  /* 8080 and the dual-stack 22 went; V6ONLY 22 and 9000 came. */
  check_diff(a, na, b, nb, 2, 2);
}

static void test_diff_outputs_are_sorted(void **state) {
  (void)state;
  lr_listener_t cur[] = {lr_test_v4(0, 0, 0, 0, 3), lr_test_v4(0, 0, 0, 0, 1), lr_test_v4(0, 0, 0, 0, 2)};
  size_t nc = lr_listeners_sort_unique(cur, 3);
  lr_listener_t adds[3], dels[1];
  size_t na, nd;
  lr_listeners_diff(NULL, 0, cur, nc, adds, &na, dels, &nd);
  assert_int_equal(na, 3);
  assert_int_equal(adds[0].port, 1);
  assert_int_equal(adds[2].port, 3);
}

/* Deterministic pseudo-random sets, compared with brute force. */
static uint32_t rng = 12345;
static uint32_t next_rand(void) {
  rng = rng * 1103515245u + 12345u;
  return rng >> 8;
}

static size_t random_set(lr_listener_t *v, size_t max) {
  size_t n = next_rand() % max;
  for (size_t i = 0; i < n; i++) {
    uint32_t r = next_rand();
    if (r & 1)
      v[i] = lr_test_v4(r & 2 ? 127 : 0, 0, 0, r & 2 ? 1 : 0, (uint16_t)(1000 + (r >> 4) % 20));
    else
      v[i] = v6any((uint16_t)(1000 + (r >> 4) % 20), (r >> 2) & 1);
  }
  return lr_listeners_sort_unique(v, n);
}

static void test_diff_matches_brute_force(void **state) {
  (void)state;
  for (int round = 0; round < 500; round++) {
    lr_listener_t old[64], cur[64], adds[64], dels[64];
    size_t no = random_set(old, 64), nc = random_set(cur, 64), na, nd;
    lr_listeners_diff(old, no, cur, nc, adds, &na, dels, &nd);
    size_t want_a = 0, want_d = 0;
    for (size_t i = 0; i < nc; i++) want_a += !contains(old, no, &cur[i]);
    for (size_t i = 0; i < no; i++) want_d += !contains(cur, nc, &old[i]);
    check_diff(old, no, cur, nc, want_a, want_d);
    assert_int_equal(na, want_a);
    assert_int_equal(nd, want_d);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sort_unique_removes_reuseport_duplicates),
      cmocka_unit_test(test_v6only_flag_makes_a_different_listener),
      cmocka_unit_test(test_from_dump_excludes_own_inode),
      cmocka_unit_test(test_diff_basic_cases),
      cmocka_unit_test(test_diff_outputs_are_sorted),
      cmocka_unit_test(test_diff_matches_brute_force),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
