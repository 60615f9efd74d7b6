/* Unit tests for the listener owner lookup (guest/procowner.c) on a fake
 * /proc tree: descriptors are symlinks to "socket:[INODE]" as the kernel
 * shows them, command lines NUL-separated. Checked: the right pid and
 * command per inode, several inodes in one walk, a process without a
 * command line shown as [comm], an over-long or non-UTF-8 command cut and
 * cleaned, an inode nobody holds left at pid 0, and the real /proc: this
 * process's own listening socket. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lr_procowner.h"

static char root[64];

static void put(const char *rel, const void *data, size_t len) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", root, rel);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  fclose(f);
}

static void dir(const char *rel) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", root, rel);
  assert_int_equal(mkdir(path, 0700), 0);
}

static void fd_link(const char *pid, int fd, const char *target) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s/fd/%d", root, pid, fd);
  assert_int_equal(symlink(target, path), 0);
}

static void proc(const char *pid, const void *cmdline, size_t len) {
  char rel[64];
  dir(pid);
  snprintf(rel, sizeof rel, "%s/fd", pid);
  dir(rel);
  snprintf(rel, sizeof rel, "%s/cmdline", pid);
  put(rel, cmdline, len);
  snprintf(rel, sizeof rel, "%s/comm", pid);
  put(rel, "kworker/0:1\n", 12);
}

static int setup(void **state) {
  (void)state;
  snprintf(root, sizeof root, "/tmp/lr-procowner-XXXXXX");
  assert_non_null(mkdtemp(root));
  proc("123", "python3\0-m\0http.server\0" "8000\0", 29);
  fd_link("123", 0, "/dev/null");
  fd_link("123", 3, "socket:[555]");
  fd_link("123", 4, "pipe:[556]");
  proc("77", "", 0);
  fd_link("77", 5, "socket:[777]");
  char big[1000];
  memset(big, 'x', sizeof big);
  big[1] = '\0';
  big[2] = (char)0xff;
  big[255] = (char)0xe2; /* cut by the cap */
  proc("9000", big, sizeof big);
  fd_link("9000", 7, "socket:[900]");
  fd_link("9000", 8, "socket:[901]");
  dir("self"); /* no ns/net: one pass over everything */
  dir("sys");
  return 0;
}

static int teardown(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  assert_int_equal(system(cmd), 0);
  return 0;
}

static void test_fake_tree(void **state) {
  (void)state;
  lr_owner_query_t q[5];
  memset(q, 0, sizeof q);
  uint32_t inodes[5] = {901, 555, 12345, 777, 900};
  for (size_t i = 0; i < 5; i++) q[i].inode = inodes[i], q[i].tag = i;
  assert_int_equal(lr_procowner_lookup(root, q, 5), 4);
  for (size_t i = 0; i < 5; i++) {
    const lr_proc_owner_t *o = &q[i].owner;
    switch (inodes[q[i].tag]) {
      case 555:
        assert_int_equal(o->pid, 123);
        assert_string_equal(o->cmd, "python3 -m http.server 8000");
        break;
      case 777:
        assert_int_equal(o->pid, 77);
        assert_string_equal(o->cmd, "[kworker/0:1]");
        break;
      case 900:
      case 901:
        assert_int_equal(o->pid, 9000);
        assert_int_equal(strlen(o->cmd), LR_CMD_MAX);
        assert_memory_equal(o->cmd, "x ?xx", 5);
        assert_int_equal(o->cmd[LR_CMD_MAX - 1], '?');
        break;
      default:
        assert_int_equal(q[i].inode, 12345);
        assert_int_equal(o->pid, 0);
        assert_string_equal(o->cmd, "");
    }
  }
  assert_int_equal(lr_procowner_lookup(root, q, 0), 0);
}

/* The real /proc: a listening socket of this very process. */
static void test_real_proc(void **state) {
  (void)state;
  int s = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(s >= 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(s, 1), 0);
  struct stat st;
  assert_int_equal(fstat(s, &st), 0);
  lr_owner_query_t q;
  memset(&q, 0, sizeof q);
  q.inode = (uint32_t)st.st_ino;
  assert_int_equal(lr_procowner_lookup("/proc", &q, 1), 1);
  assert_int_equal(q.owner.pid, (uint32_t)getpid());
  assert_non_null(strstr(q.owner.cmd, "test_guest_procowner"));
  close(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_fake_tree, setup, teardown),
      cmocka_unit_test(test_real_proc),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
