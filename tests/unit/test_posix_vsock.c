/* Tests for host/posix/vmsock_posix.c as far as a machine without a
 * reachable vsock peer allows: the pure sockaddr_vm conversion and the
 * refusals that must happen before any socket exists (how the core waits
 * for the connect, and the outcome read from SO_ERROR, are tested on TCP
 * sockets in test_posix_transport_vm.c). It NEVER connects an
 * AF_VSOCK socket: the only vsock peer reachable from these machines is the
 * infrastructure. (The guest's vsock listener is tested in
 * test_guest_vsock.c.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "lr_addr.h"
#include "lr_testutil_linux.h"
#include "vmsock_posix.h"

static void test_sockaddr_conversion(void **state) {
  struct sockaddr_vm sa;
  lr_taddr_t a;
  char err[256] = "";
  (void)state;

  a = lr_test_taddr("vsock:3:50505");
  memset(&sa, 0xEE, sizeof sa);
  assert_int_equal(lr_posix_vsock_sockaddr(&a, &sa, err, sizeof err), 0);
  assert_int_equal(sa.svm_family, AF_VSOCK);
  assert_int_equal(sa.svm_cid, 3);
  assert_int_equal(sa.svm_port, 50505);
  assert_int_equal(sa.svm_reserved1, 0);
  assert_int_equal(sa.svm_flags, 0);
  for (size_t i = 0; i < sizeof sa.svm_zero; i++) assert_int_equal(sa.svm_zero[i], 0);

  a = lr_test_taddr("vsock:any:1024");
  assert_int_equal(lr_posix_vsock_sockaddr(&a, &sa, err, sizeof err), 0);
  assert_int_equal(sa.svm_cid, VMADDR_CID_ANY);
  assert_int_equal(sa.svm_port, 1024);

  a = lr_test_taddr("vsock:2:4294967295");
  assert_int_equal(lr_posix_vsock_sockaddr(&a, &sa, err, sizeof err), 0);
  assert_int_equal(sa.svm_cid, VMADDR_CID_HOST);
  assert_int_equal(sa.svm_port, VMADDR_PORT_ANY);
}

static void test_sockaddr_rejects_other_kinds(void **state) {
  static const char *others[] = {"unix:/tmp/x", "tcp:127.0.0.1:1", "fc:/tmp/v.sock:5",
                                 "hvsock:parent:5"};
  struct sockaddr_vm sa;
  char err[256];
  (void)state;
  for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
    lr_taddr_t a = lr_test_taddr(others[i]);
    err[0] = '\0';
    assert_int_equal(lr_posix_vsock_sockaddr(&a, &sa, err, sizeof err), UV_EINVAL);
    if (strstr(err, "is not a vsock: address") == NULL) fail_msg("%s: '%s'", others[i], err);
  }
  assert_int_equal(lr_posix_vsock_sockaddr(NULL, &sa, err, sizeof err), UV_EINVAL);
}

/* Addresses the connect-start hook must refuse without creating a socket, so none
 * of them can ever reach connect(). */
static void test_connect_refusals(void **state) {
  static const struct {
    const char *addr;
    int code;
    const char *msg;
  } cases[] = {
      {"hvsock:parent:50505", UV_EAFNOSUPPORT, "need Windows"},
      {"vsock:any:50505", UV_EINVAL, "cannot connect to CID 'any'"},
      {"vsock:-1:1", UV_EINVAL, "cannot connect to CID 'any'"},
      {"unix:/tmp/agent.sock", UV_EINVAL, "is not a VM socket address"},
      {"tcp:127.0.0.1:50505", UV_EINVAL, "is not a VM socket address"},
      {"fc:/tmp/v.sock:50505", UV_EINVAL, "is not a VM socket address"},
  };
  char err[256];
  uv_os_sock_t fd;
  int before = lr_test_count_fds();
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    lr_taddr_t a = lr_test_taddr(cases[i].addr);
    fd = 1234;
    err[0] = '\0';
    assert_int_equal(lr_posix_vmsock_connect_start(&a, &fd, err, sizeof err), cases[i].code);
    assert_int_equal(fd, -1);
    if (strstr(err, cases[i].msg) == NULL) fail_msg("%s: '%s'", cases[i].addr, err);
    assert_null(strchr(err, '\n'));
  }
  assert_int_equal(lr_posix_vmsock_connect_start(NULL, &fd, err, sizeof err), UV_EINVAL);
  assert_int_equal(lr_test_count_fds(), before);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sockaddr_conversion),
      cmocka_unit_test(test_sockaddr_rejects_other_kinds),
      cmocka_unit_test(test_connect_refusals),
  };
  return cmocka_run_group_tests_name("vsock_pure", tests, NULL, NULL);
}
