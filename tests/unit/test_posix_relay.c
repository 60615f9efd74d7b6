/* The relay engine on its own, on both of its paths: the copy path (libuv
 * reads and writes through pooled buffers) and the zero-copy path (splice
 * through pooled pipes, Linux). Each test builds one relay between two
 * connected socket pairs, TCP on the loopback and Unix socketpairs, drives
 * the outer peers by hand with non-blocking calls, and runs the loop until
 * what it waits for has happened. The same scenarios run on each path, so
 * half-close, reset and backpressure are proved the same on both. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "lr_host_pal.h"
#include "lr_proto.h"
#include "lr_relay.h"
#include "lr_testutil.h"

typedef enum { PATH_COPY, PATH_ZC, PATH_ZC_REFUSED, PATH_ZC_SMALL_PIPE } path_t;

typedef struct {
  uv_loop_t loop;
  lr_relay_t relay;
  lr_pal_t pal;
  int peer[2]; /* peer[i]: the far end of ep[i], driven by the test */
  int closed;  /* close_cb ran */
  int splice_calls;
  /* close notices the relay sent (fx_start_n with notices) */
  int notice_rc;  /* what the notice callback answers: 0 sent, -1 no control stream */
  int nnotices;
  uint8_t nkind[8];
  uint64_t nbytes[8];
} fx_t;

static fx_t *cur; /* the fixture a fake zc_move counts into */

static long refusing_zc_move(uv_os_fd_t in, uv_os_fd_t out, size_t len) {
  (void)in;
  (void)out;
  (void)len;
  cur->splice_calls++;
  return UV_EINVAL;
}

/* Pipes as the kernel makes them once the user's pipe quota is used up:
 * 2 pages. */
static long small_zc_pipe_open(uv_os_fd_t fds[2], size_t want) {
  (void)want;
  long cap = lr_pal_host()->base.zc_pipe_open(fds, 8192);
  if (cap > 0) cap = fcntl(fds[1], F_SETPIPE_SZ, 8192);
  cur->splice_calls++; /* counts pipes made */
  return cap;
}

static void on_relay_closed(lr_relay_t *r) {
  fx_t *f = r->data;
  f->closed = 1;
}

/* A connected TCP pair on 127.0.0.1: *a is ours, *b the peer's. */
static void tcp_pair(int *a, int *b) {
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(l >= 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof sa;
  assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(l, 1), 0);
  assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &len), 0);
  *b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_int_equal(connect(*b, (struct sockaddr *)&sa, sizeof sa), 0);
  *a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
  assert_true(*a >= 0);
  close(l);
}

static int record_notice(lr_relay_t *r, uint8_t kind, uint64_t bytes) {
  fx_t *f = r->data;
  if (f->nnotices < 8) {
    f->nkind[f->nnotices] = kind;
    f->nbytes[f->nnotices] = bytes;
  }
  f->nnotices++;
  return f->notice_rc;
}

/* notices: 0 none, 1 notices and a real shutdown too, 2 notices only (a
 * transport that loses half-closes). pre_fin >= 0: the peer's FIN notice
 * arrives before the relay starts. */
static void fx_start_n(fx_t *f, path_t path, lr_ep_kind_t kind, int notices, int64_t pre_fin);

static void fx_start(fx_t *f, path_t path, lr_ep_kind_t kind) { fx_start_n(f, path, kind, 0, -1); }

static void fx_start_n(fx_t *f, path_t path, lr_ep_kind_t kind, int notices, int64_t pre_fin) {
  memset(f, 0, sizeof *f);
  cur = f;
  assert_int_equal(uv_loop_init(&f->loop), 0);
  f->pal = lr_pal_host()->base;
  if (path == PATH_ZC_REFUSED) f->pal.zc_move = refusing_zc_move;
  if (path == PATH_ZC_SMALL_PIPE) f->pal.zc_pipe_open = small_zc_pipe_open;
  lr_relay_set_zero_copy(path != PATH_COPY, 0);
  lr_relay_init(&f->relay, &f->pal, on_relay_closed, f);
  for (int i = 0; i < 2; i++) {
    int mine;
    if (kind == LR_EP_TCP) {
      tcp_pair(&mine, &f->peer[i]);
      assert_int_equal(uv_tcp_init(&f->loop, &f->relay.ep[i].u.tcp), 0);
      assert_int_equal(uv_tcp_open(&f->relay.ep[i].u.tcp, mine), 0);
    } else {
      int sv[2];
      assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
      mine = sv[0];
      f->peer[i] = sv[1];
      assert_int_equal(uv_pipe_init(&f->loop, &f->relay.ep[i].u.pipe, 0), 0);
      assert_int_equal(uv_pipe_open(&f->relay.ep[i].u.pipe, mine), 0);
    }
    lr_relay_mark_open(&f->relay, i, kind);
    fcntl(f->peer[i], F_SETFL, O_NONBLOCK);
  }
  if (notices) {
    f->relay.id = 7;
    f->relay.notice = record_notice;
    f->relay.notice_only = notices == 2;
  }
  if (pre_fin >= 0) lr_relay_peer_notice(&f->relay, LR_CLOSE_FIN, (uint64_t)pre_fin);
  assert_int_equal(lr_relay_start(&f->relay, NULL, 0), 0);
}

static void fx_finish(fx_t *f) {
  lr_relay_close(&f->relay, 0);
  for (int i = 0; i < 200 && !f->closed; i++) uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_true(f->closed);
  for (int i = 0; i < 2; i++)
    if (f->peer[i] >= 0) close(f->peer[i]);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  /* Nothing in flight once the relay is gone: no buffer, no pipe. */
  assert_int_equal(lr_relay_pool_in_use(), 0);
  assert_int_equal(lr_relay_zc_pipes_in_use(), 0);
  assert_int_equal(lr_relay_zc_active(), 0);
  lr_relay_set_zero_copy(1, 65536);
  cur = NULL;
}

static uint8_t pattern(uint64_t off, int dir) { return (uint8_t)((off * 131u + 7u) ^ (dir ? 0x5a : 0)); }

/* Streams n bytes from peer[0] to peer[1] and n the other way at once,
 * checking every byte; runs the loop between steps. */
static void stream_both_ways(fx_t *f, size_t n) {
  uint64_t sent[2] = {0, 0}, got[2] = {0, 0};
  uint64_t before[2] = {f->relay.bytes[0], f->relay.bytes[1]};
  uint8_t buf[65536];
  for (int spins = 0; spins < 2000000 && (got[0] < n || got[1] < n); spins++) {
    for (int d = 0; d < 2; d++) {
      if (sent[d] < n) {
        size_t k = n - sent[d] < sizeof buf ? n - sent[d] : sizeof buf;
        for (size_t j = 0; j < k; j++) buf[j] = pattern(sent[d] + j, d);
        ssize_t w = send(f->peer[d], buf, k, MSG_NOSIGNAL);
        if (w > 0) sent[d] += (uint64_t)w;
      }
      ssize_t r = recv(f->peer[1 - d], buf, sizeof buf, 0);
      for (ssize_t j = 0; j < r; j++)
        if (buf[j] != pattern(got[d] + (uint64_t)j, d))
          fail_msg("direction %d: byte %llu is wrong", d, (unsigned long long)(got[d] + (uint64_t)j));
      if (r > 0) got[d] += (uint64_t)r;
    }
    uv_run(&f->loop, UV_RUN_NOWAIT);
  }
  assert_int_equal(got[0], n);
  assert_int_equal(got[1], n);
  assert_int_equal(f->relay.bytes[0] - before[0], n);
  assert_int_equal(f->relay.bytes[1] - before[1], n);
}

/* Runs the loop until recv on fd says EOF (0) or an error; returns 0 or -errno. */
static int wait_end(fx_t *f, int fd) {
  char b[4096];
  for (int i = 0; i < 200000; i++) {
    ssize_t r = recv(fd, b, sizeof b, 0);
    if (r == 0) return 0;
    if (r < 0 && errno != EAGAIN) return -errno;
    uv_run(&f->loop, UV_RUN_NOWAIT);
    if (r < 0) usleep(50);
  }
  fail_msg("no end of stream");
  return 1;
}

static void check_path(fx_t *f, path_t path) {
  if (path == PATH_ZC) {
    assert_non_null(f->relay.zc);
    assert_int_equal(lr_relay_zc_active(), 1);
  } else {
    assert_null(f->relay.zc);
  }
  if (path == PATH_ZC_REFUSED || path == PATH_ZC_SMALL_PIPE) {
    assert_true(f->splice_calls >= 1);
    assert_true(f->relay.zc_refused);
  }
}

static void run_bytes(path_t path, lr_ep_kind_t kind) {
  fx_t f;
  fx_start(&f, path, kind);
  stream_both_ways(&f, 8u << 20);
  check_path(&f, path);
  fx_finish(&f);
}

/* Half-close each way: EOF arrives after the data; the other direction
 * keeps working; both closed -> the relay closes by itself. */
static void run_half_close(path_t path, lr_ep_kind_t kind) {
  fx_t f;
  fx_start(&f, path, kind);
  stream_both_ways(&f, 300000);
  assert_int_equal(shutdown(f.peer[0], SHUT_WR), 0);
  assert_int_equal(wait_end(&f, f.peer[1]), 0);
  /* The other way still flows. */
  const char msg[] = "after the half-close";
  assert_int_equal(send(f.peer[1], msg, sizeof msg, 0), (ssize_t)sizeof msg);
  char b[64];
  ssize_t r = -1;
  for (int i = 0; i < 100000 && r <= 0; i++) {
    uv_run(&f.loop, UV_RUN_NOWAIT);
    r = recv(f.peer[0], b, sizeof b, 0);
  }
  assert_int_equal(r, (ssize_t)sizeof msg);
  assert_memory_equal(b, msg, sizeof msg);
  check_path(&f, path);
  assert_int_equal(shutdown(f.peer[1], SHUT_WR), 0);
  assert_int_equal(wait_end(&f, f.peer[0]), 0);
  for (int i = 0; i < 1000 && !f.closed; i++) uv_run(&f.loop, UV_RUN_NOWAIT);
  assert_true(f.closed); /* graceful close once both ways ended */
  fx_finish(&f);
}

/* A reset on one TCP side arrives as a reset on the other. */
static void run_reset(path_t path) {
  fx_t f;
  fx_start(&f, path, LR_EP_TCP);
  stream_both_ways(&f, 300000);
  struct linger lg = {1, 0};
  assert_int_equal(setsockopt(f.peer[1], SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(f.peer[1]);
  f.peer[1] = -1;
  assert_int_equal(wait_end(&f, f.peer[0]), -ECONNRESET);
  fx_finish(&f);
}

/* The far reader stops: the relay holds back the source instead of
 * buffering, with at most one buffer or one pipe for that direction. */
static void run_backpressure(path_t path, lr_ep_kind_t kind) {
  fx_t f;
  fx_start(&f, path, kind);
  stream_both_ways(&f, 300000);
  static uint8_t buf[65536];
  memset(buf, 'x', sizeof buf);
  uint64_t sent = 0;
  int stalled = 0;
  for (int i = 0; i < 20000 && stalled < 200; i++) {
    ssize_t w = send(f.peer[0], buf, sizeof buf, MSG_NOSIGNAL);
    if (w > 0) {
      sent += (uint64_t)w;
      stalled = 0;
    } else {
      stalled++;
    }
    uv_run(&f.loop, UV_RUN_NOWAIT);
  }
  assert_true(stalled >= 200); /* the source was held back */
  assert_true(sent < (64u << 20));
  assert_true(lr_relay_pool_in_use() <= 1);
  assert_true(lr_relay_zc_pipes_in_use() <= 1);
  check_path(&f, path);
  fx_finish(&f);
}

#define BOTH_KINDS(name, run, path)                                             \
  static void test_##name##_tcp(void **s) {                                      \
    (void)s;                                                                     \
    run(path, LR_EP_TCP);                                                        \
  }                                                                              \
  static void test_##name##_unix(void **s) {                                     \
    (void)s;                                                                     \
    run(path, LR_EP_PIPE);                                                       \
  }

BOTH_KINDS(bytes_copy, run_bytes, PATH_COPY)
BOTH_KINDS(bytes_zc, run_bytes, PATH_ZC)
BOTH_KINDS(bytes_refused, run_bytes, PATH_ZC_REFUSED)
/* First in the list: the pool of pipes is the process's, and a pipe cached
 * by an earlier test would be a big one. */
BOTH_KINDS(bytes_small_pipe, run_bytes, PATH_ZC_SMALL_PIPE)
BOTH_KINDS(half_close_copy, run_half_close, PATH_COPY)
BOTH_KINDS(half_close_zc, run_half_close, PATH_ZC)
BOTH_KINDS(backpressure_copy, run_backpressure, PATH_COPY)
BOTH_KINDS(backpressure_zc, run_backpressure, PATH_ZC)

static void test_reset_copy(void **s) {
  (void)s;
  run_reset(PATH_COPY);
}
static void test_reset_zc(void **s) {
  (void)s;
  run_reset(PATH_ZC);
}

/* A Unix endpoint's send buffer is raised from the kernel default to what
 * the relay asks for (doubled by the kernel, capped at net.core.wmem_max):
 * the two-hop path's bytes in flight between the relays. */
static long sysctl_long(const char *path) {
  FILE *fp = fopen(path, "r");
  long v = -1;
  if (fp) {
    if (fscanf(fp, "%ld", &v) != 1) v = -1;
    fclose(fp);
  }
  return v;
}

static void test_unix_send_buffer(void **s) {
  (void)s;
  long wmax = sysctl_long("/proc/sys/net/core/wmem_max");
  long wdef = sysctl_long("/proc/sys/net/core/wmem_default");
  assert_true(wmax > 0 && wdef > 0);
  long want = 2L * (LR_RELAY_UNIX_SNDBUF < wmax ? LR_RELAY_UNIX_SNDBUF : wmax);
  fx_t f;
  fx_start(&f, PATH_ZC, LR_EP_PIPE);
  for (int i = 0; i < 2; i++) {
    int fd = -1, v = 0;
    socklen_t len = sizeof v;
    assert_int_equal(uv_fileno(&f.relay.ep[i].u.handle, &fd), 0);
    assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, &len), 0);
    assert_int_equal(v, want);
    if (wmax > wdef) assert_true(v > wdef); /* more than the kernel's default */
  }
  stream_both_ways(&f, 4 << 20);
  fx_finish(&f);
}

/* The switch happens only once a read brings zeroCopyAfter bytes at once:
 * many small messages stay on the copy path, bulk data moves over. */
static void test_switch_threshold(void **s) {
  (void)s;
  fx_t f;
  fx_start(&f, PATH_COPY, LR_EP_TCP);
  lr_relay_set_zero_copy(1, 16384);
  uint8_t small[100];
  memset(small, 's', sizeof small);
  for (int i = 0; i < 2000; i++) { /* 200 000 bytes, one message at a time */
    assert_int_equal(send(f.peer[0], small, sizeof small, 0), (ssize_t)sizeof small);
    size_t got = 0;
    for (int k = 0; k < 100000 && got < sizeof small; k++) {
      uv_run(&f.loop, UV_RUN_NOWAIT);
      ssize_t r = recv(f.peer[1], small, sizeof small, 0);
      if (r > 0) got += (size_t)r;
    }
    assert_int_equal(got, sizeof small);
  }
  assert_null(f.relay.zc);
  stream_both_ways(&f, 4u << 20);
  assert_non_null(f.relay.zc); /* bulk data: switched */
  fx_finish(&f);
}

/* The switch must not happen inside the callback of the write that
 * unblocked it: libuv still watches that stream's descriptor for
 * writability until the callback returns, and a poll on the same
 * descriptor then is a second watcher (libuv refuses it with UV_EEXIST,
 * and the relay gave up zero copy on that connection for good). Here one
 * direction queues a write (its reader is full) after bulk data was seen,
 * the reader drains, the other direction talks, and bulk both ways must
 * then run on the zero-copy path. */
static void run_switch_after_queued_write(lr_ep_kind_t kind) {
  fx_t f;
  fx_start(&f, PATH_COPY, kind);
  lr_relay_set_zero_copy(1, 16384);
  /* Small socket buffers towards peer[1], so a bulk read does not fit. */
  uv_os_fd_t fd1;
  int small = 16384;
  assert_int_equal(uv_fileno(&f.relay.ep[1].u.handle, &fd1), 0);
  assert_int_equal(setsockopt(fd1, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  assert_int_equal(setsockopt(f.peer[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  static uint8_t buf[65536];
  memset(buf, 'q', sizeof buf);
  /* peer[1] does not read: small messages (no bulk yet) until the relay
   * has a write queued to ep[1] and has stopped reading ep[0]. */
  for (int i = 0; i < 100000 && !f.relay.wr[0].buf; i++) {
    (void)send(f.peer[0], buf, 1000, MSG_NOSIGNAL);
    uv_run(&f.loop, UV_RUN_NOWAIT);
  }
  assert_non_null(f.relay.wr[0].buf);
  assert_false(f.relay.zc_wanted);
  /* Bulk waits in ep[0]; peer[1] makes room a little at a time, so the
   * bulk read finds ep[1] nearly full and queues a write again. */
  size_t bulk = 0;
  for (int i = 0; i < 64 && bulk < (1u << 20); i++) {
    ssize_t w = send(f.peer[0], buf, sizeof buf, MSG_NOSIGNAL);
    if (w <= 0) break;
    bulk += (size_t)w;
  }
  assert_true(bulk >= sizeof buf);
  for (int i = 0; i < 100000 && !(f.relay.zc_wanted && f.relay.wr[0].buf); i++) {
    (void)recv(f.peer[1], buf, 4096, 0);
    uv_run(&f.loop, UV_RUN_NOWAIT);
  }
  assert_true(f.relay.zc_wanted);
  assert_non_null(f.relay.wr[0].buf);
  assert_null(f.relay.zc);
  /* peer[1] drains everything; the queued write completes. */
  int idle = 0;
  for (int i = 0; i < 2000000 && idle < 2000; i++) {
    ssize_t r = recv(f.peer[1], buf, sizeof buf, 0);
    idle = r > 0 || f.relay.wr[0].buf ? 0 : idle + 1;
    uv_run(&f.loop, UV_RUN_NOWAIT);
  }
  assert_null(f.relay.wr[0].buf);
  /* Now the other way: a short message from peer[1] must reach peer[0]. */
  const char msg[] = "the other way";
  assert_int_equal(send(f.peer[1], msg, sizeof msg, 0), (ssize_t)sizeof msg);
  char b[64];
  ssize_t r = -1;
  for (int i = 0; i < 200000 && r <= 0; i++) {
    uv_run(&f.loop, UV_RUN_NOWAIT);
    r = recv(f.peer[0], b, sizeof b, 0);
    if (r <= 0) usleep(10);
  }
  assert_int_equal(r, (ssize_t)sizeof msg);
  assert_memory_equal(b, msg, sizeof msg);
  /* Bulk both ways still flows, on the zero-copy path. */
  stream_both_ways(&f, 1u << 20);
  assert_non_null(f.relay.zc);
  fx_finish(&f);
}

/* Unix sockets only: their buffers can be made small enough for a bulk
 * read not to fit (loopback TCP's 64 KiB segments and window rules make
 * that state a matter of timing); the relay code under test is the same. */
static void test_switch_after_queued_write_unix(void **s) {
  (void)s;
  run_switch_after_queued_write(LR_EP_PIPE);
}

/* ---- close notices ----------------------------------------------------- */

/* Runs the loop a while; 1 if peer fd has seen EOF meanwhile (0: nothing
 * to read, the stream open). */
static int eof_within_spins(fx_t *f, int fd, int spins) {
  char b[16];
  for (int i = 0; i < spins; i++) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    ssize_t r = recv(fd, b, sizeof b, MSG_PEEK);
    if (r == 0) return 1;
    if (r > 0) fail_msg("unexpected bytes");
  }
  return 0;
}

static void send_all(fx_t *f, int fd, size_t n, int dir, uint64_t off) {
  uint8_t buf[4096];
  size_t sent = 0;
  for (int i = 0; i < 1000000 && sent < n; i++) {
    size_t k = n - sent < sizeof buf ? n - sent : sizeof buf;
    for (size_t j = 0; j < k; j++) buf[j] = pattern(off + sent + j, dir);
    ssize_t w = send(fd, buf, k, MSG_NOSIGNAL);
    if (w > 0) sent += (size_t)w;
    uv_run(&f->loop, UV_RUN_NOWAIT);
  }
  assert_int_equal(sent, n);
}

static void recv_exactly(fx_t *f, int fd, size_t n, int dir, uint64_t off) {
  uint8_t buf[65536];
  size_t got = 0;
  for (int i = 0; i < 1000000 && got < n; i++) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    ssize_t r = recv(fd, buf, n - got < sizeof buf ? n - got : sizeof buf, 0);
    if (r == 0) fail_msg("EOF after %lu of %lu bytes", (unsigned long)got, (unsigned long)n);
    for (ssize_t j = 0; j < r; j++)
      if (buf[j] != pattern(off + got + (uint64_t)j, dir)) fail_msg("byte %lu wrong", (unsigned long)(got + (size_t)j));
    if (r > 0) got += (size_t)r;
  }
  assert_int_equal(got, n);
}

/* The peer's FIN notice names a count not reached yet: the outer side gets
 * every byte up to it and then EOF, though the transport never ended; the
 * other direction keeps flowing; our own FIN goes as a notice (and, unless
 * notice_only, as a shutdown too); both done: the relay closes. */
static void run_peer_fin(path_t path, lr_ep_kind_t kind, int notices) {
  fx_t f;
  fx_start_n(&f, path, kind, notices, -1);
  stream_both_ways(&f, 300000);
  if (path == PATH_ZC) assert_non_null(f.relay.zc);
  const size_t k = 200000;
  uint64_t base = f.relay.bytes[1];
  lr_relay_peer_notice(&f.relay, LR_CLOSE_FIN, base + k);
  assert_int_equal(eof_within_spins(&f, f.peer[0], 2000), 0); /* gated: not yet */
  send_all(&f, f.peer[1], k, 1, 0);
  recv_exactly(&f, f.peer[0], k, 1, 0);
  assert_int_equal(wait_end(&f, f.peer[0]), 0);
  assert_int_equal(f.relay.eof[1], 1);
  /* The other way still flows. */
  send_all(&f, f.peer[0], 5000, 0, 0);
  recv_exactly(&f, f.peer[1], 5000, 0, 0);
  assert_int_equal(f.nnotices, 0);
  assert_int_equal(shutdown(f.peer[0], SHUT_WR), 0);
  for (int i = 0; i < 100000 && !f.closed; i++) uv_run(&f.loop, UV_RUN_NOWAIT);
  assert_true(f.closed); /* both directions done: closed by itself */
  assert_int_equal(f.nnotices, 1);
  assert_int_equal(f.nkind[0], LR_CLOSE_FIN);
  assert_true(f.nbytes[0] == f.relay.bytes[0]);
  if (notices == 1) assert_int_equal(wait_end(&f, f.peer[1]), 0);
  fx_finish(&f);
}

static void test_peer_fin_copy_unix(void **s) {
  (void)s;
  run_peer_fin(PATH_COPY, LR_EP_PIPE, 2);
}
static void test_peer_fin_zc_unix(void **s) {
  (void)s;
  run_peer_fin(PATH_ZC, LR_EP_PIPE, 2);
}
static void test_peer_fin_copy_tcp(void **s) {
  (void)s;
  run_peer_fin(PATH_COPY, LR_EP_TCP, 1);
}
static void test_peer_fin_zc_tcp(void **s) {
  (void)s;
  run_peer_fin(PATH_ZC, LR_EP_TCP, 1);
}

/* notice_only: the transport's write side is never shut down (a
 * hybrid-vsock device would turn that into a full close): the peer of
 * ep[1] sees no EOF after our FIN, only the notice says it. */
static void test_notice_only_keeps_transport_open(void **s) {
  (void)s;
  fx_t f;
  fx_start_n(&f, PATH_COPY, LR_EP_PIPE, 2, -1);
  send_all(&f, f.peer[0], 1234, 0, 0);
  recv_exactly(&f, f.peer[1], 1234, 0, 0);
  assert_int_equal(shutdown(f.peer[0], SHUT_WR), 0);
  for (int i = 0; i < 100000 && !f.nnotices; i++) uv_run(&f.loop, UV_RUN_NOWAIT);
  assert_int_equal(f.nnotices, 1);
  assert_true(f.nbytes[0] == 1234);
  assert_int_equal(eof_within_spins(&f, f.peer[1], 2000), 0);
  /* The answer still comes back, then the peer's own EOF ends it all. */
  send_all(&f, f.peer[1], 777, 1, 0);
  recv_exactly(&f, f.peer[0], 777, 1, 0);
  assert_int_equal(shutdown(f.peer[1], SHUT_WR), 0);
  assert_int_equal(wait_end(&f, f.peer[0]), 0);
  for (int i = 0; i < 100000 && !f.closed; i++) uv_run(&f.loop, UV_RUN_NOWAIT);
  assert_true(f.closed);
  fx_finish(&f);
}

/* No control stream (the notice cannot go): the relay shuts the transport
 * down itself, notice_only or not. */
static void test_notice_failed_falls_back(void **s) {
  (void)s;
  fx_t f;
  fx_start_n(&f, PATH_COPY, LR_EP_PIPE, 2, -1);
  f.notice_rc = -1;
  assert_int_equal(shutdown(f.peer[0], SHUT_WR), 0);
  assert_int_equal(wait_end(&f, f.peer[1]), 0);
  assert_int_equal(f.nnotices, 1);
  fx_finish(&f);
}

/* The FIN notice before the relay starts, with the count already reached
 * (0 bytes): EOF at once. A later real EOF and a second notice change
 * nothing. */
static void test_peer_fin_before_start(void **s) {
  (void)s;
  fx_t f;
  fx_start_n(&f, PATH_COPY, LR_EP_PIPE, 1, 0);
  assert_int_equal(wait_end(&f, f.peer[0]), 0);
  lr_relay_peer_notice(&f.relay, LR_CLOSE_FIN, 99);
  lr_relay_peer_notice(&f.relay, 77, 0); /* a kind this side does not know */
  assert_int_equal(shutdown(f.peer[1], SHUT_WR), 0);
  send_all(&f, f.peer[0], 10, 0, 0);
  recv_exactly(&f, f.peer[1], 10, 0, 0);
  assert_int_equal(shutdown(f.peer[0], SHUT_WR), 0);
  for (int i = 0; i < 100000 && !f.closed; i++) uv_run(&f.loop, UV_RUN_NOWAIT);
  assert_true(f.closed);
  fx_finish(&f);
}

/* A count the stream already went past is a lie: reset, and the reset is
 * told back. */
static void test_peer_fin_lie_resets(void **s) {
  (void)s;
  fx_t f;
  fx_start_n(&f, PATH_COPY, LR_EP_TCP, 1, -1);
  stream_both_ways(&f, 1000);
  lr_relay_peer_notice(&f.relay, LR_CLOSE_FIN, 10);
  assert_int_equal(wait_end(&f, f.peer[0]), -ECONNRESET);
  assert_int_equal(f.nnotices, 1);
  assert_int_equal(f.nkind[0], LR_CLOSE_RESET);
  fx_finish(&f);
}

/* The peer's RESET notice resets the outer side (not told back); an outer
 * reset is told to the peer. */
static void test_peer_reset(void **s) {
  (void)s;
  fx_t f;
  fx_start_n(&f, PATH_COPY, LR_EP_TCP, 1, -1);
  stream_both_ways(&f, 1000);
  lr_relay_peer_notice(&f.relay, LR_CLOSE_RESET, 0);
  assert_int_equal(wait_end(&f, f.peer[0]), -ECONNRESET);
  assert_int_equal(f.nnotices, 0);
  fx_finish(&f);

  fx_start_n(&f, PATH_COPY, LR_EP_TCP, 1, -1);
  stream_both_ways(&f, 1000);
  struct linger lg = {1, 0};
  assert_int_equal(setsockopt(f.peer[0], SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(f.peer[0]);
  f.peer[0] = -1;
  for (int i = 0; i < 100000 && !f.nnotices; i++) uv_run(&f.loop, UV_RUN_NOWAIT);
  assert_int_equal(f.nnotices, 1);
  assert_int_equal(f.nkind[0], LR_CLOSE_RESET);
  fx_finish(&f);
}

/* The id table: ids found, 0 and duplicates refused, removal exact. */
static void test_relay_ids(void **s) {
  (void)s;
  static lr_relay_ids_t t;
  static lr_relay_t r[600];
  memset(&t, 0, sizeof t);
  for (int i = 0; i < 600; i++) {
    memset(&r[i], 0, sizeof r[i]);
    r[i].id = (uint32_t)(i + 1) * 3u;
    assert_int_equal(lr_relay_ids_add(&t, &r[i]), 0);
  }
  lr_relay_t dup = {0}, zero = {0};
  dup.id = 300;
  assert_int_equal(lr_relay_ids_add(&t, &dup), -1);
  assert_int_equal(lr_relay_ids_add(&t, &zero), -1);
  assert_null(lr_relay_ids_find(&t, 0));
  for (int i = 0; i < 600; i++) assert_ptr_equal(lr_relay_ids_find(&t, r[i].id), &r[i]);
  assert_null(lr_relay_ids_find(&t, 1));
  lr_relay_ids_del(&t, &dup); /* not in it: nothing happens */
  assert_ptr_equal(lr_relay_ids_find(&t, 300), &r[99]);
  for (int i = 0; i < 600; i += 2) lr_relay_ids_del(&t, &r[i]);
  for (int i = 0; i < 600; i++)
    assert_ptr_equal(lr_relay_ids_find(&t, r[i].id), i % 2 ? &r[i] : NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bytes_small_pipe_tcp),  cmocka_unit_test(test_bytes_small_pipe_unix),
      cmocka_unit_test(test_bytes_copy_tcp),        cmocka_unit_test(test_bytes_copy_unix),
      cmocka_unit_test(test_bytes_zc_tcp),          cmocka_unit_test(test_bytes_zc_unix),
      cmocka_unit_test(test_bytes_refused_tcp),     cmocka_unit_test(test_bytes_refused_unix),
      cmocka_unit_test(test_half_close_copy_tcp),   cmocka_unit_test(test_half_close_copy_unix),
      cmocka_unit_test(test_half_close_zc_tcp),     cmocka_unit_test(test_half_close_zc_unix),
      cmocka_unit_test(test_backpressure_copy_tcp), cmocka_unit_test(test_backpressure_copy_unix),
      cmocka_unit_test(test_backpressure_zc_tcp),   cmocka_unit_test(test_backpressure_zc_unix),
      cmocka_unit_test(test_unix_send_buffer),
      cmocka_unit_test(test_reset_copy),            cmocka_unit_test(test_reset_zc),
      cmocka_unit_test(test_switch_threshold),
      cmocka_unit_test(test_switch_after_queued_write_unix),
      cmocka_unit_test(test_peer_fin_copy_unix),
      cmocka_unit_test(test_peer_fin_zc_unix),
      cmocka_unit_test(test_peer_fin_copy_tcp),
      cmocka_unit_test(test_peer_fin_zc_tcp),
      cmocka_unit_test(test_notice_only_keeps_transport_open),
      cmocka_unit_test(test_notice_failed_falls_back),
      cmocka_unit_test(test_peer_fin_before_start),
      cmocka_unit_test(test_peer_fin_lie_resets),
      cmocka_unit_test(test_peer_reset),
      cmocka_unit_test(test_relay_ids),
  };
  return lr_test_exit_code(cmocka_run_group_tests(tests, NULL, NULL));
}
