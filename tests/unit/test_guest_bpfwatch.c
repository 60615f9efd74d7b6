/* Tests of the eBPF listener trigger (lr_bpfwatch), loaded for real.
 *
 * What must hold: a socket of this network namespace entering and leaving
 * LISTEN arrives as one record each, with its family and port; the TCP
 * handshake and teardown of a connection (state changes that do not touch
 * LISTEN) wake nobody; a UDP socket's bind() and its close arrive as one
 * UDP record each, while a connected UDP socket and UDP-lite wake nobody;
 * and a listener or UDP socket in another network namespace is filtered
 * out in the kernel. The UDP hooks also need a cgroup2 mount and
 * CAP_NET_ADMIN; without either the TCP trigger works alone and says why. Loading needs root (CAP_BPF, CAP_PERFMON),
 * the other namespace CAP_SYS_ADMIN, and the program a build with clang,
 * bpftool and libbpf: without them the tests are skipped outside CI and
 * fail in CI, as every scenario that cannot run. */
#define _GNU_SOURCE /* unshare */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <uv.h>

#include "lr_bpfwatch.h"
#include "lr_testutil.h"

#define MAX_EVENTS 256

typedef struct {
  uv_loop_t loop;
  lr_bpfwatch_t *w;
  lr_bpfwatch_event_t ev[MAX_EVENTS];
  size_t n;
  int failed;
} fx_t;

static void on_event(void *data, const lr_bpfwatch_event_t *ev) {
  fx_t *f = data;
  if (f->n < MAX_EVENTS) f->ev[f->n++] = *ev;
}

static void on_fail(void *data, const char *why) {
  fx_t *f = data;
  f->failed = 1;
  print_message("watcher failed: %s\n", why);
}

/* Starts the watcher, or skips (fails in CI) saying why it cannot run. */
static fx_t *fx_start(void) {
  static fx_t f;
  char err[512];
  memset(&f, 0, sizeof f);
  if (!lr_bpfwatch_compiled())
    LR_SKIP_OR_FAIL("built without the eBPF trigger (clang, bpftool or libbpf-dev missing "
                    "at configure time)");
  if (geteuid() != 0) LR_SKIP_OR_FAIL("not root: loading eBPF needs CAP_BPF and CAP_PERFMON");
  assert_int_equal(uv_loop_init(&f.loop), 0);
  f.w = lr_bpfwatch_start(&f.loop, on_event, on_fail, &f, err, sizeof err);
  if (!f.w) {
    uv_loop_close(&f.loop);
    LR_SKIP_OR_FAIL(err);
  }
  return &f;
}

static void fx_stop(fx_t *f) {
  lr_bpfwatch_close(f->w);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
}

static uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

/* Index of the first record for (family, port, listening) of a TCP
 * listener (udp 0) or a UDP socket (udp 1) from index `from`, pumping the
 * loop for up to ms; -1 if none came. */
static long wait_proto_event(fx_t *f, size_t from, int udp, uint8_t family, uint16_t port,
                             int listening, unsigned ms) {
  uint64_t end = now_ms() + ms;
  for (;;) {
    for (size_t i = from; i < f->n; i++)
      if (f->ev[i].family == family && f->ev[i].port == port &&
          f->ev[i].listening == listening && f->ev[i].udp == udp)
        return (long)i;
    if (now_ms() >= end) return -1;
    uv_run(&f->loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
}

static long wait_event(fx_t *f, size_t from, uint8_t family, uint16_t port, int listening,
                       unsigned ms) {
  return wait_proto_event(f, from, 0, family, port, listening, ms);
}

/* Pumps the loop for ms, so late records have every chance to arrive. */
static void pump(fx_t *f, unsigned ms) {
  uint64_t end = now_ms() + ms;
  while (now_ms() < end) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
}

static size_t count_port(const fx_t *f, uint16_t port) {
  size_t k = 0;
  for (size_t i = 0; i < f->n; i++) k += f->ev[i].port == port;
  return k;
}

/* A socket of type and protocol bound to the loopback of family af on
 * *port (0: the kernel chooses, and *port says which), or -1. */
static int bound_socket(int af, int type, int proto, uint16_t *port) {
  int fd = socket(af, type | SOCK_CLOEXEC, proto);
  if (fd < 0) return -1;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t len = af == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  ss.ss_family = (sa_family_t)af;
  if (af == AF_INET) {
    ((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ((struct sockaddr_in *)&ss)->sin_port = htons(*port);
  } else {
    ((struct sockaddr_in6 *)&ss)->sin6_addr = in6addr_loopback;
    ((struct sockaddr_in6 *)&ss)->sin6_port = htons(*port);
  }
  if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
    close(fd);
    return -1;
  }
  len = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &len);
  *port = ntohs(af == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                              : ((struct sockaddr_in6 *)&ss)->sin6_port);
  return fd;
}

/* A listener of family af (AF_INET or AF_INET6) on the loopback, on *port,
 * or on an ephemeral port when *port is 0. The kernel gives back a port it
 * chose itself when the socket closes, and the close record then says
 * port 0; a port named in bind() stays in the record. */
static int listen_on(int af, uint16_t *port) {
  int fd = bound_socket(af, SOCK_STREAM, 0, port);
  if (fd >= 0) assert_int_equal(listen(fd, 8), 0);
  return fd;
}

/* The watcher with its UDP hooks attached, or a skip (a failure in CI)
 * saying why they are not. */
static fx_t *fx_start_udp(void) {
  fx_t *f = fx_start();
  const char *why;
  if (!lr_bpfwatch_udp(f->w, &why)) {
    char msg[600];
    snprintf(msg, sizeof msg, "the eBPF UDP hooks did not attach: %s", why);
    fx_stop(f);
    LR_SKIP_OR_FAIL(msg);
  }
  return f;
}

/* Runs a socket of type (SOCK_STREAM: listening; SOCK_DGRAM: bound) in a
 * network namespace of its own, in a child, and closes it again; its port,
 * or 0 when the child could not make a namespace. */
static uint16_t other_namespace_socket(int type) {
  int pfd[2];
  assert_int_equal(pipe(pfd), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* The child: a namespace of its own, a socket there, its port to
     * the parent, then close. 0 means it could not. */
    uint16_t port = 0;
    if (unshare(CLONE_NEWNET) == 0) {
      int fd = socket(AF_INET, type, 0);
      struct sockaddr_in sin = {.sin_family = AF_INET}; /* 0.0.0.0: lo may be down */
      socklen_t len = sizeof sin;
      if (fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0 &&
          (type != SOCK_STREAM || listen(fd, 1) == 0) &&
          getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
        port = ntohs(sin.sin_port);
      if (write(pfd[1], &port, sizeof port) != sizeof port) _exit(1);
      usleep(50000);
      if (fd >= 0) close(fd);
    } else if (write(pfd[1], &port, sizeof port) != sizeof port) {
      _exit(1);
    }
    _exit(0);
  }
  close(pfd[1]);
  uint16_t other = 0;
  ssize_t r = read(pfd[0], &other, sizeof other);
  close(pfd[0]);
  int st;
  waitpid(pid, &st, 0);
  return r == sizeof other ? other : 0;
}

/* ---- tests -------------------------------------------------------------- */

/* listen() and close() in this namespace: one record each, both families;
 * a connection's handshake and teardown produce none. */
static void test_listen_close_and_connections(void **state) {
  (void)state;
  fx_t *f = fx_start();
  /* A port named in bind(), as servers do: found free first. */
  uint16_t p4 = 0;
  int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in pin = {.sin_family = AF_INET};
  socklen_t plen = sizeof pin;
  pin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(probe, (struct sockaddr *)&pin, sizeof pin), 0);
  getsockname(probe, (struct sockaddr *)&pin, &plen);
  p4 = ntohs(pin.sin_port);
  close(probe);
  int l4 = listen_on(AF_INET, &p4);
  assert_true(l4 >= 0);
  long i = wait_event(f, 0, 4, p4, 1, 2000);
  if (i < 0) fail_msg("no record for listen() on 127.0.0.1:%u", p4);

  /* a connection: SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT... never LISTEN */
  int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(p4)};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(c, (struct sockaddr *)&sin, sizeof sin), 0);
  int a = accept(l4, NULL, NULL);
  assert_true(a >= 0);
  close(c);
  close(a);
  pump(f, 100);
  assert_int_equal(count_port(f, p4), 1); /* still only the listen() */

  close(l4);
  if (wait_event(f, (size_t)i + 1, 4, p4, 0, 2000) < 0)
    fail_msg("no record for close() of the listener on 127.0.0.1:%u", p4);

  /* An ephemeral port: its close record says port 0 (see listen_on). */
  uint16_t p6 = 0;
  int l6 = listen_on(AF_INET6, &p6);
  if (l6 >= 0) { /* a kernel without IPv6 has nothing to report here */
    if (wait_event(f, 0, 6, p6, 1, 2000) < 0) fail_msg("no record for listen() on [::1]:%u", p6);
    close(l6);
    if (wait_event(f, 0, 6, p6, 0, 300) < 0 && wait_event(f, 0, 6, 0, 0, 2000) < 0)
      fail_msg("no record for close() of [::1]:%u", p6);
  }
  assert_false(f->failed);
  fx_stop(f);
}

/* A socket of type (SOCK_STREAM: a listener; SOCK_DGRAM: a bound UDP
 * socket) in another network namespace never reaches this one's agent,
 * while one here does; f is stopped. */
static void check_other_namespace(fx_t *f, int type) {
  int udp = type == SOCK_DGRAM;
  uint16_t other = other_namespace_socket(type);
  if (other == 0) {
    fx_stop(f);
    LR_SKIP_OR_FAIL("cannot create a network namespace (unshare CLONE_NEWNET)");
  }
  /* A socket here afterwards: once its record is in, the other one's
   * would have been too. */
  uint16_t mine = 0;
  int fd = udp ? bound_socket(AF_INET, SOCK_DGRAM, 0, &mine) : listen_on(AF_INET, &mine);
  assert_true(fd >= 0);
  if (wait_proto_event(f, 0, udp, 4, mine, 1, 2000) < 0)
    fail_msg("no record for our own %s socket", udp ? "UDP" : "TCP");
  pump(f, 50);
  if (mine != other && count_port(f, other) != 0)
    fail_msg("a %s socket on port %u in another namespace reached this one", udp ? "UDP" : "TCP",
             other);
  close(fd);
  fx_stop(f);
}

/* A listener in another network namespace: the kernel program compares
 * the socket's namespace with ours. */
static void test_other_namespace_filtered(void **state) {
  (void)state;
  check_other_namespace(fx_start(), SOCK_STREAM);
}

/* A UDP server's socket: bind() and close() are one record each, both
 * families, whether bind() named the port or let the kernel choose it, and
 * only UDP records. A client's UDP socket (its port comes from connect()
 * or the first sendto(), not bind()) and UDP-lite wake nobody. */
static void test_udp_bind_release(void **state) {
  (void)state;
  fx_t *f = fx_start_udp();
  uint16_t p4 = 0;
  int u4 = bound_socket(AF_INET, SOCK_DGRAM, 0, &p4);
  assert_true(u4 >= 0);
  long i = wait_proto_event(f, 0, 1, 4, p4, 1, 2000);
  if (i < 0) fail_msg("no UDP record for bind() on 127.0.0.1:%u", p4);

  /* a client: connected to u4, closed; then UDP-lite, bound and closed */
  int c = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(p4)};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(c, (struct sockaddr *)&sin, sizeof sin), 0);
  socklen_t len = sizeof sin;
  assert_int_equal(getsockname(c, (struct sockaddr *)&sin, &len), 0);
  uint16_t client = ntohs(sin.sin_port);
  close(c);
  /* an unconnected client: its port comes with its first sendto() */
  int uc = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sin.sin_port = htons(p4);
  assert_int_equal(sendto(uc, "x", 1, 0, (struct sockaddr *)&sin, sizeof sin), 1);
  len = sizeof sin;
  assert_int_equal(getsockname(uc, (struct sockaddr *)&sin, &len), 0);
  uint16_t sender = ntohs(sin.sin_port);
  close(uc);
  uint16_t plite = 0;
  int lite = bound_socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE, &plite);
  if (lite >= 0) close(lite); /* a kernel without UDP-lite has nothing to show */

  close(u4);
  long j = wait_proto_event(f, (size_t)i + 1, 1, 4, p4, 0, 2000);
  if (j < 0) fail_msg("no UDP record for close() of 127.0.0.1:%u", p4);
  /* the close record of u4 came after the client's and UDP-lite's would have */
  assert_int_equal(count_port(f, client), 0);
  assert_int_equal(count_port(f, sender), 0);
  if (lite >= 0) assert_int_equal(count_port(f, plite), 0);
  assert_int_equal(count_port(f, p4), 2);
  assert_int_equal(wait_event(f, 0, 4, p4, 1, 0), -1); /* not taken for a TCP listener */

  /* [::1]: first on a port the kernel chooses, then on that port named in
   * bind(); each bound and closed, in order */
  uint16_t p6 = 0;
  int probe = bound_socket(AF_INET6, SOCK_DGRAM, 0, &p6);
  if (probe >= 0) { /* a kernel without IPv6 has nothing to report here */
    long b = wait_proto_event(f, 0, 1, 6, p6, 1, 2000);
    if (b < 0) fail_msg("no UDP record for bind() on [::1] (port %u chosen)", p6);
    close(probe);
    long r = wait_proto_event(f, (size_t)b + 1, 1, 6, p6, 0, 2000);
    if (r < 0) fail_msg("no UDP record for close() of [::1]:%u (port chosen)", p6);
    int u6 = bound_socket(AF_INET6, SOCK_DGRAM, 0, &p6);
    assert_true(u6 >= 0);
    b = wait_proto_event(f, (size_t)r + 1, 1, 6, p6, 1, 2000);
    if (b < 0) fail_msg("no UDP record for bind() on [::1]:%u", p6);
    close(u6);
    if (wait_proto_event(f, (size_t)b + 1, 1, 6, p6, 0, 2000) < 0)
      fail_msg("no UDP record for close() of [::1]:%u", p6);
  }
  assert_false(f->failed);
  fx_stop(f);
}

/* A UDP socket bound in another network namespace: the cgroup hooks see
 * every socket below the cgroup root, and the program compares the
 * socket's namespace cookie with ours. */
static void test_udp_other_namespace_filtered(void **state) {
  (void)state;
  check_other_namespace(fx_start_udp(), SOCK_DGRAM);
}

/* Unmounts every cgroup2 file system this (child) process sees, in a mount
 * namespace of its own; 0, or -1 when it could not. */
static int hide_cgroup2(void) {
  if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) != 0)
    return -1;
  for (int round = 0; round < 8; round++) {
    FILE *mi = fopen("/proc/self/mountinfo", "re");
    if (!mi) return -1;
    char line[4096], dir[1024] = "";
    while (!dir[0] && fgets(line, sizeof line, mi)) {
      char *sep = strstr(line, " - ");
      if (sep && strncmp(sep + 3, "cgroup2 ", 8) == 0 &&
          sscanf(line, "%*s %*s %*s %*s %1023s", dir) != 1)
        dir[0] = 0;
    }
    fclose(mi);
    if (!dir[0]) return 0;
    if (umount2(dir, MNT_DETACH) != 0) return -1;
  }
  return -1;
}

/* Drops CAP_NET_ADMIN and CAP_SYS_ADMIN (which stands in for it) from this
 * (child) process, keeping CAP_BPF and CAP_PERFMON; 0 or -1. */
static int drop_net_admin(void) {
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct d[2];
  if (syscall(SYS_capget, &h, d) != 0) return -1;
  const int drop[] = {CAP_NET_ADMIN, CAP_SYS_ADMIN};
  for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++) {
    d[drop[i] / 32].effective &= ~(1u << (drop[i] % 32));
    d[drop[i] / 32].permitted &= ~(1u << (drop[i] % 32));
  }
  return (int)syscall(SYS_capset, &h, d);
}

/* In a child that prep() (0 or -1) has deprived of what the UDP hooks
 * need: the TCP trigger still loads and reports a listener, and
 * lr_bpfwatch_udp says why the hooks are not there, naming `expect`. */
static void check_tcp_only(int (*prep)(void), const char *expect, const char *cannot) {
  fx_t *f = fx_start_udp(); /* this machine has the hooks: the child shows their absence */
  fx_stop(f);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (prep() != 0) _exit(2);
    fx_t c;
    char err[512];
    memset(&c, 0, sizeof c);
    if (uv_loop_init(&c.loop) != 0) _exit(3);
    c.w = lr_bpfwatch_start(&c.loop, on_event, on_fail, &c, err, sizeof err);
    if (!c.w) {
      fprintf(stderr, "child: the TCP trigger did not load: %s\n", err);
      _exit(4);
    }
    const char *why;
    int udp = lr_bpfwatch_udp(c.w, &why);
    fprintf(stderr, "child: UDP hooks %s: %s\n", udp ? "attached" : "not attached", why);
    int rc = udp || !strstr(why, expect) ? 5 : 0;
    uint16_t port = 0;
    int l = listen_on(AF_INET, &port);
    if (rc == 0 && (l < 0 || wait_event(&c, 0, 4, port, 1, 2000) < 0)) rc = 6;
    if (l >= 0) close(l);
    lr_bpfwatch_close(c.w);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    uv_loop_close(&c.loop);
    _exit(rc);
  }
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  if (WEXITSTATUS(st) == 2) LR_SKIP_OR_FAIL(cannot);
  if (WEXITSTATUS(st) != 0)
    fail_msg("child exited %d (4: TCP trigger not loaded, 5: UDP hooks attached or the "
             "reason does not name %s, 6: no TCP record)", WEXITSTATUS(st), expect);
}

/* Without a cgroup2 mount there is nothing to attach the UDP hooks to. */
static void test_udp_without_cgroup2(void **state) {
  (void)state;
  check_tcp_only(hide_cgroup2, "cgroup2", "cannot hide cgroup2 in a mount namespace");
}

/* Without CAP_NET_ADMIN the kernel refuses to load the hooks: the object
 * is loaded again without them. */
static void test_udp_not_permitted(void **state) {
  (void)state;
  check_tcp_only(drop_net_admin, "CAP_NET_ADMIN", "cannot drop CAP_NET_ADMIN (capset)");
}

/* Many listeners at once: every one is seen (the ring buffer holds about a
 * thousand records), and stopping with records still queued is clean. */
static void test_burst(void **state) {
  (void)state;
  enum { N = 64 };
  fx_t *f = fx_start();
  int fds[N];
  uint16_t ports[N];
  for (int i = 0; i < N; i++) {
    ports[i] = 0;
    fds[i] = listen_on(AF_INET, &ports[i]);
    assert_true(fds[i] >= 0);
  }
  for (int i = 0; i < N; i++)
    if (wait_event(f, 0, 4, ports[i], 1, 2000) < 0) fail_msg("listener %d of %d not seen", i, N);
  assert_int_equal(lr_bpfwatch_dropped(f->w), 0);
  for (int i = 0; i < N; i++) close(fds[i]);
  fx_stop(f); /* the close records are still queued */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_listen_close_and_connections),
      cmocka_unit_test(test_other_namespace_filtered),
      cmocka_unit_test(test_udp_bind_release),
      cmocka_unit_test(test_udp_other_namespace_filtered),
      cmocka_unit_test(test_udp_without_cgroup2),
      cmocka_unit_test(test_udp_not_permitted),
      cmocka_unit_test(test_burst),
  };
  return lr_test_exit_code(cmocka_run_group_tests(tests, NULL, NULL));
}
