/* lr_netns_ensure (host/posix/netns.c) runs on lorelayd's loop thread, so
 * it must create a namespace, and bring up its lo, without a child process
 * to wait for. Proved here by counting SIGCHLD around real calls: the old
 * code forked up to three children (and waitpid()ed each), which this
 * counts. The namespace made must still be real: /run/netns/NAME is a
 * network namespace file (NS_GET_NSTYPE), and lo is up inside it.
 *
 * Needs root (it creates /run/netns/NAME, as lorelayd --netns does):
 * skipped without it outside CI, a failure in CI. The test first moves
 * into a mount namespace of its own with a tmpfs on /run/netns, so what it
 * makes there (a FIFO among them, which would hang anyone's `ip netns
 * list`) is never seen by another process, and goes with the test. An
 * alarm ends the test (exit 1) if a call blocks anyway. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "lr_posix.h"
#include "lr_testutil.h"
#include "lr_testutil_linux.h"

static char isolated[200]; /* why not, or "" once /run/netns is our own */

static volatile sig_atomic_t chld;
static void on_chld(int s) {
  (void)s;
  chld++;
}

static void count_children(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_chld;
  sigemptyset(&sa.sa_mask);
  assert_int_equal(sigaction(SIGCHLD, &sa, NULL), 0);
  chld = 0;
}

static void remove_netns(const char *path) {
  umount2(path, MNT_DETACH);
  unlink(path);
}

/* Inside the namespace at path (on a thread of its own): lo's flags. */
static void *lo_flags_thread(void *arg) {
  const char *path = arg;
  intptr_t flags = -1;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0 && setns(fd, CLONE_NEWNET) == 0) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    if (s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0) flags = ifr.ifr_flags;
    if (s >= 0) close(s);
  }
  if (fd >= 0) close(fd);
  return (void *)flags;
}

static void expect_netns_with_lo_up(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  assert_int_equal(ioctl(fd, NS_GET_NSTYPE), CLONE_NEWNET);
  close(fd);
  pthread_t t;
  void *ret;
  assert_int_equal(pthread_create(&t, NULL, lo_flags_thread, (void *)path), 0);
  assert_int_equal(pthread_join(t, &ret), 0);
  intptr_t flags = (intptr_t)ret;
  assert_true(flags >= 0);
  assert_true(flags & IFF_UP);
}

static void on_alarm(int s) {
  static const char msg[] = "test_posix_netns: lr_netns_ensure blocked for 10 s\n";
  (void)s;
  if (write(2, msg, sizeof msg - 1) < 0) _exit(1);
  _exit(1);
}

static void test_creates_namespace_without_a_child(void **state) {
  char name[64], path[128], err[256] = "";
  (void)state;
  if (isolated[0]) LR_SKIP_OR_FAIL(isolated);
  snprintf(name, sizeof name, "lrut-netns-%d", (int)getpid());
  snprintf(path, sizeof path, "/run/netns/%s", name);
  remove_netns(path);
  count_children();
  int before = lr_test_count_fds();

  if (lr_netns_ensure(name, err, sizeof err) != 0) fail_msg("create: %s", err);
  assert_int_equal(chld, 0);
  expect_netns_with_lo_up(path);
  /* Again, now that it exists: only lo is brought up (it is already). */
  if (lr_netns_ensure(name, err, sizeof err) != 0) fail_msg("existing: %s", err);
  assert_int_equal(chld, 0);
  assert_int_equal(lr_test_count_fds(), before);
  remove_netns(path);
}

static void test_refuses_a_file_that_is_no_namespace(void **state) {
  char name[64], path[128], err[256] = "";
  (void)state;
  if (isolated[0]) LR_SKIP_OR_FAIL(isolated);
  snprintf(name, sizeof name, "lrut-plain-%d", (int)getpid());
  snprintf(path, sizeof path, "/run/netns/%s", name);
  assert_int_equal(lr_posix_mkdir_p("/run/netns", 0755), 0);
  remove_netns(path);
  /* A FIFO: opening it without O_NONBLOCK would hang the loop thread. */
  assert_int_equal(mkfifo(path, 0600), 0);
  count_children();
  alarm(10);
  assert_int_equal(lr_netns_ensure(name, err, sizeof err), -1);
  alarm(0);
  if (strstr(err, "exists but is not a network namespace") == NULL) fail_msg("err: '%s'", err);
  assert_int_equal(chld, 0);
  unlink(path);
}

/* A mount namespace of our own, /run/netns a tmpfs in it. */
static void isolate(void) {
  if (geteuid() != 0) {
    snprintf(isolated, sizeof isolated, "not root: creating /run/netns/NAME needs CAP_SYS_ADMIN");
    return;
  }
  if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) != 0 ||
      lr_posix_mkdir_p("/run/netns", 0755) != 0 ||
      mount("lrut-netns", "/run/netns", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0)
    snprintf(isolated, sizeof isolated, "cannot give the test a /run/netns of its own: %s",
             strerror(errno));
}

int main(void) {
  signal(SIGALRM, on_alarm);
  isolate();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_creates_namespace_without_a_child),
      cmocka_unit_test(test_refuses_a_file_that_is_no_namespace),
  };
  return lr_test_exit_code(cmocka_run_group_tests_name("netns", tests, NULL, NULL));
}
