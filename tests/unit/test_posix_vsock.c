/* Tests for host/posix/vmsock_posix.c as far as a machine without a
 * reachable vsock peer allows: the pure sockaddr_vm conversion, the refusals
 * that must happen before any socket exists, and what this kernel does with
 * AF_VSOCK socket creation, bind and listen (plus handing the listener to
 * libuv the way the agent does). It NEVER connects an AF_VSOCK socket: the
 * only vsock peer reachable from these machines is the infrastructure.
 *
 * When the kernel has no AF_VSOCK (or no /dev/vsock for the local CID), the
 * pure tests still run and the binary exits 77 (skip) naming the reason, or
 * fails in CI (lr_test_in_ci): CI machines have AF_VSOCK socket creation and
 * bind, so a kernel without them there is a broken runner, not a skip. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

#include "lr_addr.h"
#include "lr_testutil.h"
#include "vmsock_posix.h"

static lr_taddr_t addr(const char *s) {
  lr_taddr_t a;
  char err[256];
  if (lr_taddr_parse(s, &a, err, sizeof err) != 0) fail_msg("parse '%s': %s", s, err);
  return a;
}

static int count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  assert_non_null(d);
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static void test_sockaddr_conversion(void **state) {
  struct sockaddr_vm sa;
  lr_taddr_t a;
  char err[256] = "";
  (void)state;

  a = addr("vsock:3:50505");
  memset(&sa, 0xEE, sizeof sa);
  assert_int_equal(lr_posix_vsock_sockaddr(&a, &sa, err, sizeof err), 0);
  assert_int_equal(sa.svm_family, AF_VSOCK);
  assert_int_equal(sa.svm_cid, 3);
  assert_int_equal(sa.svm_port, 50505);
  assert_int_equal(sa.svm_reserved1, 0);
  assert_int_equal(sa.svm_flags, 0);
  for (size_t i = 0; i < sizeof sa.svm_zero; i++) assert_int_equal(sa.svm_zero[i], 0);

  a = addr("vsock:any:1024");
  assert_int_equal(lr_posix_vsock_sockaddr(&a, &sa, err, sizeof err), 0);
  assert_int_equal(sa.svm_cid, VMADDR_CID_ANY);
  assert_int_equal(sa.svm_port, 1024);

  a = addr("vsock:2:4294967295");
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
    lr_taddr_t a = addr(others[i]);
    err[0] = '\0';
    assert_int_equal(lr_posix_vsock_sockaddr(&a, &sa, err, sizeof err), UV_EINVAL);
    if (strstr(err, "is not a vsock: address") == NULL) fail_msg("%s: '%s'", others[i], err);
  }
  assert_int_equal(lr_posix_vsock_sockaddr(NULL, &sa, err, sizeof err), UV_EINVAL);
}

/* Addresses the connect hook must refuse without creating a socket, so none
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
  int before = count_fds();
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    lr_taddr_t a = addr(cases[i].addr);
    fd = 1234;
    err[0] = '\0';
    assert_int_equal(lr_posix_vmsock_connect(&a, &fd, err, sizeof err), cases[i].code);
    assert_int_equal(fd, -1);
    if (strstr(err, cases[i].msg) == NULL) fail_msg("%s: '%s'", cases[i].addr, err);
    assert_null(strchr(err, '\n'));
  }
  assert_int_equal(lr_posix_vmsock_connect(NULL, &fd, err, sizeof err), UV_EINVAL);
  assert_int_equal(count_fds(), before);
}

static int vsock_available(char *why, size_t len) {
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(why, len, "socket(AF_VSOCK, SOCK_STREAM): %s", strerror(errno));
    return 0;
  }
  close(fd);
  return 1;
}

static void test_listen_any_port(void **state) {
  lr_taddr_t a = addr("vsock:any:4294967295"); /* VMADDR_PORT_ANY: the kernel picks */
  struct sockaddr_vm bound;
  socklen_t blen = sizeof bound;
  char err[256] = "", want[64];
  uv_os_sock_t fd = -1, fd2 = -1;
  (void)state;

  assert_int_equal(lr_posix_vsock_listen(&a, 16, &fd, err, sizeof err), 0);
  assert_true(fd >= 0);
  assert_int_equal(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&bound, &blen), 0);
  assert_int_equal(bound.svm_family, AF_VSOCK);
  assert_int_not_equal(bound.svm_port, VMADDR_PORT_ANY);

  /* The same port again: a clear "in use", the socket closed. */
  {
    int before = count_fds();
    char s[64];
    snprintf(s, sizeof s, "vsock:any:%u", bound.svm_port);
    a = addr(s);
    assert_int_equal(lr_posix_vsock_listen(&a, 16, &fd2, err, sizeof err), UV_EADDRINUSE);
    assert_int_equal(fd2, -1);
    snprintf(want, sizeof want, "vsock:any:%u: bind: ", bound.svm_port);
    if (strstr(err, want) == NULL || strstr(err, "another socket is bound") == NULL)
      fail_msg("unexpected error '%s'", err);
    assert_int_equal(count_fds(), before);
  }
  close(fd);
}

static void test_listen_foreign_cid(void **state) {
  uint32_t local = 0;
  char s[64], err[256] = "";
  uv_os_sock_t fd = -1;
  uint32_t cid = 0x7FFFFFF0u;
  (void)state;
  if (lr_posix_vsock_local_cid(&local) == 0 && local == cid) cid++;
  snprintf(s, sizeof s, "vsock:%u:50505", cid);
  lr_taddr_t a = addr(s);
  assert_int_equal(lr_posix_vsock_listen(&a, 16, &fd, err, sizeof err), UV_EADDRNOTAVAIL);
  assert_int_equal(fd, -1);
  if (strstr(err, "bind: ") == NULL || strstr(err, "listen on vsock:any:PORT") == NULL)
    fail_msg("unexpected error '%s'", err);
}

static void test_local_cid(void **state) {
  uint32_t cid = 0;
  struct stat st;
  int rc = lr_posix_vsock_local_cid(&cid);
  (void)state;
  if (stat("/dev/vsock", &st) != 0) {
    char why[128];
    snprintf(why, sizeof why, "/dev/vsock: %s; the local CID cannot be read", strerror(errno));
    assert_int_not_equal(rc, 0); /* no device: an error, never a made-up CID */
    LR_SKIP_OR_FAIL(why);
  }
  assert_int_equal(rc, 0);
  assert_int_not_equal(cid, VMADDR_CID_ANY);
  print_message("this machine's vsock CID is %u\n", cid);
}

static void on_close(uv_handle_t *h) { *(int *)h->data = 1; }
static void on_conn(uv_stream_t *s, int status) { (void)s, (void)status; }

/* The agent's path: a natively bound vsock listener handed to libuv. */
static void test_listener_into_libuv(void **state) {
  lr_taddr_t a = addr("vsock:any:4294967295");
  char err[256] = "";
  uv_os_sock_t fd = -1;
  uv_loop_t loop;
  uv_tcp_t tcp;
  int closed = 0;
  (void)state;

  assert_int_equal(lr_posix_vsock_listen(&a, 16, &fd, err, sizeof err), 0);
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(uv_tcp_init(&loop, &tcp), 0);
  assert_int_equal(uv_tcp_open(&tcp, fd), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&tcp, 16, on_conn), 0);
  /* One loop turn with nothing to accept must not block, and the listening
   * handle keeps the loop alive (uv_run returns non-zero while it is active). */
  assert_int_not_equal(uv_run(&loop, UV_RUN_NOWAIT), 0);
  tcp.data = &closed;
  uv_close((uv_handle_t *)&tcp, on_close);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(closed, 1);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(fcntl(fd, F_GETFD), -1); /* libuv closed it */
}

int main(void) {
  const struct CMUnitTest pure[] = {
      cmocka_unit_test(test_sockaddr_conversion),
      cmocka_unit_test(test_sockaddr_rejects_other_kinds),
      cmocka_unit_test(test_connect_refusals),
  };
  const struct CMUnitTest kernel[] = {
      cmocka_unit_test(test_listen_any_port),
      cmocka_unit_test(test_listen_foreign_cid),
      cmocka_unit_test(test_local_cid),
      cmocka_unit_test(test_listener_into_libuv),
  };
  char why[256], reason[384];
  int failed = cmocka_run_group_tests_name("vsock_pure", pure, NULL, NULL);

  if (!vsock_available(why, sizeof why)) {
    int rc;
    snprintf(reason, sizeof reason,
             "AF_VSOCK is unavailable in this kernel (%s); the socket/bind/listen tests did not run",
             why);
    rc = lr_test_group_unavailable("test_posix_vsock", reason);
    return failed ? failed : rc;
  }
  failed += cmocka_run_group_tests_name("vsock_kernel", kernel, NULL, NULL);
  return lr_test_exit_code(failed);
}
