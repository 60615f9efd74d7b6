/* Tests of the guest's vsock transport listener (lr_guest_listen on
 * vsock:any:PORT, guest/glisten.c): what this kernel does with AF_VSOCK
 * socket creation, bind and listen, the hints that come with the usual
 * mistakes, and the descriptor handed to libuv the way the agent does. It
 * NEVER connects an AF_VSOCK socket: the only vsock peer reachable from
 * these machines is the infrastructure.
 *
 * When the kernel has no AF_VSOCK the binary exits 77 (skip) naming the
 * reason, or fails in CI (lr_test_in_ci). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include <cmocka.h>
#include <uv.h>

#include "lr_addr.h"
#include "lr_testutil_linux.h"
#include "lr_glisten.h"
#include "lr_testutil.h"

static void test_listen_any_port(void **state) {
  lr_taddr_t a = lr_test_taddr("vsock:any:4294967295"); /* VMADDR_PORT_ANY: the kernel picks */
  struct sockaddr_vm bound;
  socklen_t blen = sizeof bound;
  char err[256] = "", want[96];
  int family = 0;
  (void)state;

  int fd = lr_guest_listen(&a, err, sizeof err);
  if (fd < 0) fail_msg("lr_guest_listen: %s", err);
  assert_int_equal(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&bound, &blen), 0);
  assert_int_equal(bound.svm_family, AF_VSOCK);
  assert_int_equal(bound.svm_cid, VMADDR_CID_ANY);
  assert_int_not_equal(bound.svm_port, VMADDR_PORT_ANY);
  assert_int_equal(lr_guest_listen_check(fd, &family, err, sizeof err), 0);
  assert_int_equal(family, AF_VSOCK);

  /* The same port again: a clear "in use", and no descriptor left behind. */
  int before = lr_test_count_fds();
  char s[64];
  snprintf(s, sizeof s, "vsock:any:%u", bound.svm_port);
  a = lr_test_taddr(s);
  errno = 0;
  assert_int_equal(lr_guest_listen(&a, err, sizeof err), -1);
  assert_int_equal(errno, EADDRINUSE);
  snprintf(want, sizeof want, "cannot bind vsock:any:%u: ", bound.svm_port);
  if (strstr(err, want) == NULL || strstr(err, "another socket is bound") == NULL)
    fail_msg("unexpected error '%s'", err);
  assert_null(strchr(err, '\n'));
  assert_int_equal(lr_test_count_fds(), before);
  close(fd);
}

/* This machine's CID, or VMADDR_CID_ANY when /dev/vsock cannot say. */
static uint32_t local_cid(void) {
  unsigned int cid = VMADDR_CID_ANY;
  int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return VMADDR_CID_ANY;
  if (ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) < 0) cid = VMADDR_CID_ANY;
  close(fd);
  return cid;
}

static void test_listen_foreign_cid(void **state) {
  char s[64], err[256] = "";
  uint32_t cid = 0x7FFFFFF0u;
  (void)state;
  if (local_cid() == cid) cid++;
  snprintf(s, sizeof s, "vsock:%u:50505", cid);
  lr_taddr_t a = lr_test_taddr(s);
  int before = lr_test_count_fds();
  errno = 0;
  assert_int_equal(lr_guest_listen(&a, err, sizeof err), -1);
  assert_int_equal(errno, EADDRNOTAVAIL);
  if (strstr(err, "cannot bind ") == NULL || strstr(err, "listen on vsock:any:PORT") == NULL)
    fail_msg("unexpected error '%s'", err);
  assert_int_equal(lr_test_count_fds(), before);
}

static void on_close(uv_handle_t *h) { *(int *)h->data = 1; }
static void on_conn(uv_stream_t *s, int status) { (void)s, (void)status; }

/* The agent's path: the natively bound listener handed to libuv. */
static void test_listener_into_libuv(void **state) {
  lr_taddr_t a = lr_test_taddr("vsock:any:4294967295");
  char err[256] = "";
  uv_loop_t loop;
  uv_tcp_t tcp;
  int closed = 0;
  (void)state;

  int fd = lr_guest_listen(&a, err, sizeof err);
  if (fd < 0) fail_msg("lr_guest_listen: %s", err);
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(uv_tcp_init(&loop, &tcp), 0);
  assert_int_equal(uv_tcp_open(&tcp, fd), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&tcp, 16, on_conn), 0);
  /* One loop turn with nothing to accept must not block or fail. */
  /* One turn with nothing to accept must not block; the active listener
   * keeps the loop alive, so uv_run says there is more to do. */
  assert_int_not_equal(uv_run(&loop, UV_RUN_NOWAIT), 0);
  tcp.data = &closed;
  uv_close((uv_handle_t *)&tcp, on_close);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(closed, 1);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(fcntl(fd, F_GETFD), -1); /* libuv closed it */
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

int main(void) {
  const struct CMUnitTest kernel[] = {
      cmocka_unit_test(test_listen_any_port),
      cmocka_unit_test(test_listen_foreign_cid),
      cmocka_unit_test(test_listener_into_libuv),
  };
  char why[256], reason[320];
  if (!vsock_available(why, sizeof why)) {
    snprintf(reason, sizeof reason, "AF_VSOCK is unavailable in this kernel (%s)", why);
    return lr_test_group_unavailable("test_guest_vsock", reason);
  }
  return cmocka_run_group_tests_name("guest_vsock", kernel, NULL, NULL);
}
