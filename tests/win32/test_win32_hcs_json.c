/* Unit tests for host/win32/hcs_json.c: picking the WSL utility VM out of an
 * HcsEnumerateComputeSystems answer. The documents below have the shape
 * HCS returns (an array of compute-system property objects); the cases are
 * the ones a real machine produces: WSL next to Hyper-V VMs and containers,
 * a WSL VM that is stopping, no WSL at all, and answers that are not what
 * we expect, which must give a reason, never a guess. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "lr_win32.h"

static void expect_vm(const char *json, const char *want_guid, int want_matches) {
  lr_guid_t g;
  char err[256] = "", s[40];
  int matches = -1;
  if (lr_hcs_find_wsl_vm(json, &g, &matches, err, sizeof err) != 0)
    fail_msg("no VM found: %s", err);
  assert_string_equal(lr_guid_format(&g, s, sizeof s), want_guid);
  assert_int_equal(matches, want_matches);
}

static void expect_none(const char *json, const char *reason) {
  lr_guid_t g;
  char err[256] = "";
  int matches = -1;
  assert_int_equal(lr_hcs_find_wsl_vm(json, &g, &matches, err, sizeof err), -1);
  if (strstr(err, reason) == NULL)
    fail_msg("error is '%s', expected to contain '%s'", err, reason);
  assert_null(strchr(err, '\n'));
}

static void test_wsl_among_others(void **state) {
  (void)state;
  const char *doc =
      "[{\"Id\":\"3FEC1B1D-2F5B-4B52-8E5D-7C1A7E6F0A11\",\"SystemType\":\"Container\","
      "\"Name\":\"c1\",\"Owner\":\"docker\",\"RuntimeId\":\"00000000-0000-0000-0000-000000000000\"},"
      "{\"Id\":\"6B2A9D2C-74E4-4D7E-9B1F-2E41C3A5D0AA\",\"SystemType\":\"VirtualMachine\","
      "\"Name\":\"dev-vm\",\"Owner\":\"VMMS\",\"RuntimeId\":\"6B2A9D2C-74E4-4D7E-9B1F-2E41C3A5D0AA\","
      "\"State\":\"Running\"},"
      "{\"Id\":\"9A1F34E0-0D8B-4F3A-A7C2-5D6E7F809102\",\"SystemType\":\"VirtualMachine\","
      "\"Name\":\"wsl\",\"Owner\":\"WSL\",\"RuntimeId\":\"d2f7a9b4-1c3e-4a5b-8d6f-0e1f2a3b4c5d\","
      "\"State\":\"Running\",\"RuntimeOsType\":\"Linux\"}]";
  /* RuntimeId is the partition id hvsock addresses, not the HCS Id. */
  expect_vm(doc, "D2F7A9B4-1C3E-4A5B-8D6F-0E1F2A3B4C5D", 1);
}

static void test_id_when_no_runtime_id(void **state) {
  (void)state;
  expect_vm("[{\"Id\":\"{9A1F34E0-0D8B-4F3A-A7C2-5D6E7F809102}\",\"SystemType\":\"virtualmachine\","
            "\"Owner\":\"wsl\"}]",
            "9A1F34E0-0D8B-4F3A-A7C2-5D6E7F809102", 1);
}

static void test_stopped_wsl_skipped(void **state) {
  (void)state;
  expect_vm("[{\"Id\":\"11111111-1111-1111-1111-111111111111\",\"SystemType\":\"VirtualMachine\","
            "\"Owner\":\"WSL\",\"State\":\"Stopped\"},"
            "{\"Id\":\"22222222-2222-2222-2222-222222222222\",\"SystemType\":\"VirtualMachine\","
            "\"Owner\":\"WSL\",\"State\":\"Running\"}]",
            "22222222-2222-2222-2222-222222222222", 1);
  expect_none("[{\"Id\":\"11111111-1111-1111-1111-111111111111\",\"SystemType\":"
              "\"VirtualMachine\",\"Owner\":\"WSL\",\"State\":\"Stopped\"}]",
              "no running WSL VM");
}

static void test_several_counted_first_used(void **state) {
  (void)state;
  expect_vm("[{\"Id\":\"33333333-3333-3333-3333-333333333333\",\"SystemType\":\"VirtualMachine\","
            "\"Owner\":\"WSL\"},"
            "{\"Id\":\"44444444-4444-4444-4444-444444444444\",\"SystemType\":\"VirtualMachine\","
            "\"Owner\":\"WSL\"}]",
            "33333333-3333-3333-3333-333333333333", 2);
}

static void test_no_wsl(void **state) {
  (void)state;
  expect_none("[]", "no running WSL VM");
  /* A WSL-owned container is not the utility VM. */
  expect_none("[{\"Id\":\"55555555-5555-5555-5555-555555555555\",\"SystemType\":\"Container\","
              "\"Owner\":\"WSL\"}]",
              "no running WSL VM");
  /* Fields of the wrong type are ignored, not trusted. */
  expect_none("[{\"Id\":7,\"SystemType\":\"VirtualMachine\",\"Owner\":\"WSL\"},"
              "{\"Id\":\"66666666-6666-6666-6666-666666666666\",\"SystemType\":\"VirtualMachine\","
              "\"Owner\":[\"WSL\"]}, 5, null]",
              "no running WSL VM");
}

static void test_bad_documents(void **state) {
  (void)state;
  expect_none(NULL, "no document");
  expect_none("", "not valid JSON");
  expect_none("[{\"Id\":\"x\",", "not valid JSON");
  expect_none("{\"Id\":\"77777777-7777-7777-7777-777777777777\",\"SystemType\":"
              "\"VirtualMachine\",\"Owner\":\"WSL\"}",
              "not a JSON array");
  expect_none("[{\"Id\":\"not-a-guid\",\"SystemType\":\"VirtualMachine\",\"Owner\":\"WSL\"}]",
              "'not-a-guid' is not a GUID");
  expect_none("[{\"Id\":\"88888888-8888-8888-8888-888888888888\",\"RuntimeId\":\"zz\","
              "\"SystemType\":\"VirtualMachine\",\"Owner\":\"WSL\"}]",
              "RuntimeId 'zz' is not a GUID");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_wsl_among_others),
      cmocka_unit_test(test_id_when_no_runtime_id),
      cmocka_unit_test(test_stopped_wsl_skipped),
      cmocka_unit_test(test_several_counted_first_used),
      cmocka_unit_test(test_no_wsl),
      cmocka_unit_test(test_bad_documents),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
