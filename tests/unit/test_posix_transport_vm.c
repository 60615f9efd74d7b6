/* lr_transport's VM-socket paths, without any VM socket: a fake
 * lr_host_pal_t stands in for the platform and connects loopback TCP
 * sockets instead (this machine's AF_VSOCK is never used: no vsock
 * socket is made, no CID connected or bound). What is under test is the
 * core's side: how it waits for a VM connect and what that costs the rest
 * of the loop.
 *
 *  - The non-blocking shape (vmsock_connect_start / _result, Linux's):
 *    a start that never completes (a loopback listener whose accept queue
 *    is full and which never accepts: the kernel drops the SYNs, so the
 *    connect stays in progress) times out at the core's deadline, 8 at
 *    once, while a job queued on libuv's thread pool after them still runs
 *    at once; a start that completes is wrapped and carries bytes; one the
 *    peer refuses ends with the platform's text for SO_ERROR, hint
 *    included (the real lr_posix_vmsock_connect_result reads it).
 *  - The blocking shape (vmsock_connect only, Windows's): 8 connects that
 *    take longer than the deadline hold no pool thread either, time out at
 *    the deadline, and the sockets they make late are closed, not leaked.
 *
 * Before these paths VM connects ran on libuv's 4 pool threads, so the
 * pool job waited for the connects' 5 s: both pool assertions fail there. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>
#include <uv.h>

#include "lr_transport.h"
#include "lr_testutil_linux.h"
#include "vmsock_posix.h"

#define N_ATTEMPTS 8
#define POOL_BOUND_MS 100

/* ---- fake platform ----------------------------------------------------- */

static struct sockaddr_in target; /* the "VM": a loopback TCP port */
static int result_calls;
static atomic_int sock_closes;
static int blocking_delay_ms;

static void fake_sock_close(uv_os_sock_t s) {
  sock_closes++;
  close(s);
}

static int fake_start(const lr_taddr_t *a, uv_os_sock_t *out, char *err, size_t errlen) {
  (void)a;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "fake: socket: %s", strerror(errno));
    return uv_translate_sys_error(errno);
  }
  if (connect(fd, (struct sockaddr *)&target, sizeof target) == 0) {
    *out = fd;
    return 0;
  }
  if (errno == EINPROGRESS) {
    *out = fd;
    return 1;
  }
  int e = errno;
  close(fd);
  snprintf(err, errlen, "fake: connect: %s", strerror(e));
  return uv_translate_sys_error(e);
}

static int fake_result(const lr_taddr_t *a, uv_os_sock_t s, char *err, size_t errlen) {
  result_calls++;
  return lr_posix_vmsock_connect_result(a, s, err, errlen);
}

/* Blocks for blocking_delay_ms, then "connects" (a socketpair end). */
static int fake_blocking(const lr_taddr_t *a, uv_os_sock_t *out, char *err, size_t errlen) {
  int sv[2];
  (void)a;
  usleep((useconds_t)blocking_delay_ms * 1000);
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    snprintf(err, errlen, "fake: socketpair: %s", strerror(errno));
    return UV_EIO;
  }
  close(sv[1]);
  *out = sv[0];
  return 0;
}

static const lr_host_pal_t nonblocking_pal = {
    .base = {.name = "fake-nonblocking", .sock_close = fake_sock_close},
    .vmsock_connect_start = fake_start,
    .vmsock_connect_result = fake_result,
};

static const lr_host_pal_t blocking_pal = {
    .base = {.name = "fake-blocking", .sock_close = fake_sock_close},
    .vmsock_connect = fake_blocking,
};

/* ---- loop, attempts, the pool probe ------------------------------------ */

static uv_loop_t loop;
static uv_timer_t tick; /* keeps uv_run(ONCE) returning while we wait */

typedef struct {
  lr_endpoint_t ep;
  int calls, status, open;
  uint64_t started, done;
  char err[512];
} att_t;

static void on_done(lr_endpoint_t *ep, int status, const char *err, void *data) {
  att_t *t = data;
  (void)ep;
  t->calls++;
  t->status = status;
  t->done = uv_now(&loop);
  t->open = status == 0;
  snprintf(t->err, sizeof t->err, "%s", err ? err : "");
}

static void start(att_t *t, const lr_host_pal_t *pal, int i) {
  char as[64], err[256] = "";
  memset(t, 0, sizeof *t);
  snprintf(as, sizeof as, "vsock:3:%d", 50500 + i); /* only ever formatted */
  lr_taddr_t a = lr_test_taddr(as);
  uv_update_time(&loop);
  t->started = uv_now(&loop);
  if (lr_transport_connect(&loop, pal, &a, 0, &t->ep, on_done, t, err, sizeof err) != 0)
    fail_msg("lr_transport_connect: %s", err);
  assert_int_equal(t->calls, 0); /* never from inside the call */
}

typedef struct {
  uv_work_t w;
  uint64_t queued_ns, done_ns;
} probe_t;

static void probe_work(uv_work_t *w) { (void)w; }
static void probe_after(uv_work_t *w, int status) {
  probe_t *p = (probe_t *)w;
  (void)status;
  p->done_ns = uv_hrtime();
}

static void on_tick(uv_timer_t *t) { (void)t; }

static void pump_until(int (*cond)(void *), void *arg, uint64_t ms) {
  uv_update_time(&loop);
  uint64_t end = uv_now(&loop) + ms;
  while (!cond(arg) && uv_now(&loop) < end) uv_run(&loop, UV_RUN_ONCE);
}

static int probe_done(void *arg) { return ((probe_t *)arg)->done_ns != 0; }
static int all_done(void *arg) {
  att_t *t = arg;
  for (int i = 0; i < N_ATTEMPTS; i++)
    if (!t[i].calls) return 0;
  return 1;
}
static int fds_back(void *arg) { return lr_test_count_fds() == *(int *)arg; }
static int closes_reach(void *arg) { return sock_closes >= *(int *)arg; }

/* Queues a pool job behind whatever the attempts hold and says how long it
 * took to run (microseconds); the attempts must all still be waiting. */
static uint64_t pool_latency_us(att_t *t) {
  probe_t p;
  memset(&p, 0, sizeof p);
  p.queued_ns = uv_hrtime();
  assert_int_equal(uv_queue_work(&loop, &p.w, probe_work, probe_after), 0);
  pump_until(probe_done, &p, 7000);
  assert_true(p.done_ns != 0);
  for (int i = 0; i < N_ATTEMPTS; i++) assert_int_equal(t[i].calls, 0);
  return (p.done_ns - p.queued_ns) / 1000u;
}

static void expect_timeouts(att_t *t) {
  pump_until(all_done, t, LR_TRANSPORT_TIMEOUT_MS + 2000);
  for (int i = 0; i < N_ATTEMPTS; i++) {
    uint64_t took = t[i].done - t[i].started;
    assert_int_equal(t[i].calls, 1);
    assert_int_equal(t[i].status, UV_ETIMEDOUT);
    if (strstr(t[i].err, "no answer within 5000 ms") == NULL) fail_msg("err: '%s'", t[i].err);
    if (took < LR_TRANSPORT_TIMEOUT_MS - 10 || took > LR_TRANSPORT_TIMEOUT_MS + 1000)
      fail_msg("attempt %d ended after %lu ms, not at the %d ms deadline", i,
               (unsigned long)took, LR_TRANSPORT_TIMEOUT_MS);
  }
}

static int setup(void **state) {
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  uv_timer_init(&loop, &tick);
  uv_timer_start(&tick, on_tick, 5, 5);
  /* libuv keeps one descriptor in reserve per loop from its first stream
   * handle on (for running out of them): take it now, so that counts of
   * open descriptors see only the attempts'. */
  uv_tcp_t first;
  uv_tcp_init(&loop, &first);
  uv_close((uv_handle_t *)&first, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  /* libuv starts its pool's threads with the first job (slow under
   * valgrind): start them here, so the probes measure waiting only. */
  probe_t warm;
  memset(&warm, 0, sizeof warm);
  assert_int_equal(uv_queue_work(&loop, &warm.w, probe_work, probe_after), 0);
  pump_until(probe_done, &warm, 10000);
  assert_true(warm.done_ns != 0);
  sock_closes = 0;
  result_calls = 0;
  return 0;
}

static int teardown(void **state) {
  (void)state;
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
  return 0;
}

/* A loopback listener on an ephemeral port: backlog as given. */
static int listener(int backlog) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  socklen_t len = sizeof target;
  assert_true(fd >= 0);
  memset(&target, 0, sizeof target);
  target.sin_family = AF_INET;
  target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&target, sizeof target), 0);
  assert_int_equal(listen(fd, backlog), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&target, &len), 0);
  return fd;
}

/* ---- the non-blocking shape -------------------------------------------- */

static void test_nonblocking_hang_times_out_pool_free(void **state) {
  (void)state;
  /* Backlog 0 holds one connection; the filler takes it, and as nobody
   * accepts, every later SYN is dropped: those connects never complete. */
  int lfd = listener(0);
  int filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_int_equal(connect(filler, (struct sockaddr *)&target, sizeof target), 0);
  int before = lr_test_count_fds();
  att_t t[N_ATTEMPTS];
  for (int i = 0; i < N_ATTEMPTS; i++) start(&t[i], &nonblocking_pal, i);
  assert_int_equal(lr_test_count_fds(), before + N_ATTEMPTS); /* all under way */
  uint64_t us = pool_latency_us(t);
  print_message("pool job with %d hanging non-blocking VM connects: %lu us\n", N_ATTEMPTS,
                (unsigned long)us);
  if (us >= POOL_BOUND_MS * 1000u) fail_msg("the pool job waited %lu ms", (unsigned long)(us / 1000));
  expect_timeouts(t);
  assert_int_equal(result_calls, 0); /* never writable */
  pump_until(fds_back, &before, 1000);
  assert_int_equal(lr_test_count_fds(), before);
  assert_int_equal(sock_closes, N_ATTEMPTS);
  close(filler);
  close(lfd);
}

static void on_ep_closed(uv_handle_t *h) { *(int *)h->data = 1; }
static int flag_set(void *arg) { return *(int *)arg; }
static int att_called(void *arg) { return ((att_t *)arg)->calls != 0; }

static char rx[64];
static size_t rx_len;
static void rx_alloc(uv_handle_t *h, size_t n, uv_buf_t *b) {
  (void)h, (void)n;
  b->base = rx + rx_len;
  b->len = sizeof rx - rx_len;
}
static void rx_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)s, (void)b;
  if (n > 0) rx_len += (size_t)n;
}
static int rx_has(void *arg) { return rx_len >= strlen(arg); }

static void test_nonblocking_connects_and_carries_bytes(void **state) {
  (void)state;
  int lfd = listener(8);
  int before = lr_test_count_fds();
  att_t t;
  start(&t, &nonblocking_pal, 0);
  pump_until(att_called, &t, 3000);
  assert_int_equal(t.calls, 1);
  if (t.status != 0) fail_msg("status %d: %s", t.status, t.err);
  assert_int_equal(result_calls, 1);
  assert_int_equal(t.ep.kind, LR_EP_VMSOCK);
  struct pollfd p = {.fd = lfd, .events = POLLIN};
  assert_int_equal(poll(&p, 1, 2000), 1);
  int peer = accept(lfd, NULL, NULL);
  assert_true(peer >= 0);

  /* Both ways through the wrapped descriptor. */
  static char ping[] = "ping";
  uv_buf_t b = uv_buf_init(ping, 4);
  assert_int_equal(uv_try_write(&t.ep.u.stream, &b, 1), 4);
  char got[8] = "";
  p.fd = peer;
  assert_int_equal(poll(&p, 1, 2000), 1);
  assert_int_equal(read(peer, got, sizeof got), 4);
  assert_memory_equal(got, "ping", 4);
  rx_len = 0;
  assert_int_equal(uv_read_start(&t.ep.u.stream, rx_alloc, rx_read), 0);
  assert_int_equal(write(peer, "pong", 4), 4);
  pump_until(rx_has, "pong", 2000);
  assert_int_equal(rx_len, 4);
  assert_memory_equal(rx, "pong", 4);

  int closed = 0;
  t.ep.u.handle.data = &closed;
  uv_close(&t.ep.u.handle, on_ep_closed);
  pump_until(flag_set, &closed, 1000);
  close(peer);
  assert_int_equal(lr_test_count_fds(), before); /* the handle closed the socket */
  assert_int_equal(sock_closes, 0);
  close(lfd);
}

static void test_nonblocking_refused_says_why(void **state) {
  (void)state;
  close(listener(1)); /* a loopback port nobody listens on */
  int before = lr_test_count_fds();
  att_t t;
  start(&t, &nonblocking_pal, 0);
  pump_until(att_called, &t, 3000);
  assert_int_equal(t.calls, 1);
  if (t.status != UV_ECONNREFUSED) fail_msg("status %d: %s", t.status, t.err);
  /* Found through SO_ERROR (loopback answers a non-blocking connect with
   * EINPROGRESS), and said as a failed connect() would be, hint included. */
  assert_int_equal(result_calls, 1);
  if (strcmp(t.err, "vsock:3:50500: connect: Connection refused (nothing listens on that port in "
                    "the guest: is lorelay-agent running?)") != 0)
    fail_msg("err: '%s'", t.err); /* the address once, not twice */
  pump_until(fds_back, &before, 1000);
  assert_int_equal(lr_test_count_fds(), before);
  assert_int_equal(sock_closes, 1);
}

/* ---- the blocking shape ------------------------------------------------ */

static void test_blocking_on_own_threads_late_sockets_closed(void **state) {
  (void)state;
  int before = lr_test_count_fds();
  blocking_delay_ms = LR_TRANSPORT_TIMEOUT_MS + 700;
  att_t t[N_ATTEMPTS];
  for (int i = 0; i < N_ATTEMPTS; i++) start(&t[i], &blocking_pal, i);
  uint64_t us = pool_latency_us(t);
  print_message("pool job with %d hanging blocking VM connects: %lu us\n", N_ATTEMPTS,
                (unsigned long)us);
  if (us >= POOL_BOUND_MS * 1000u) fail_msg("the pool job waited %lu ms", (unsigned long)(us / 1000));
  expect_timeouts(t);
  /* Each thread connects 700 ms after the deadline: its socket is nobody's. */
  int want = N_ATTEMPTS;
  pump_until(closes_reach, &want, 3000);
  assert_int_equal(sock_closes, N_ATTEMPTS);
  pump_until(fds_back, &before, 1000);
  assert_int_equal(lr_test_count_fds(), before);
}

static void test_blocking_connects(void **state) {
  (void)state;
  int before = lr_test_count_fds();
  blocking_delay_ms = 10;
  att_t t;
  start(&t, &blocking_pal, 0);
  pump_until(att_called, &t, 3000);
  assert_int_equal(t.calls, 1);
  if (t.status != 0) fail_msg("status %d: %s", t.status, t.err);
  assert_int_equal(lr_test_count_fds(), before + 1);
  int closed = 0;
  t.ep.u.handle.data = &closed;
  uv_close(&t.ep.u.handle, on_ep_closed);
  pump_until(flag_set, &closed, 1000);
  assert_int_equal(lr_test_count_fds(), before);
  assert_int_equal(sock_closes, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_nonblocking_hang_times_out_pool_free, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nonblocking_connects_and_carries_bytes, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_nonblocking_refused_says_why, setup, teardown),
      cmocka_unit_test_setup_teardown(test_blocking_on_own_threads_late_sockets_closed, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_blocking_connects, setup, teardown),
  };
  return cmocka_run_group_tests_name("transport_vm", tests, NULL, NULL);
}
