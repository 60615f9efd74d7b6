/* Tests for the Firecracker / Cloud Hypervisor hybrid-vsock transport.
 *
 * Two layers: the pure handshake functions (lr_fc_request and
 * lr_fc_parse_reply, byte for byte), and lr_transport_connect on a real
 * libuv loop against a peer in this test that plays the hypervisor's
 * Unix-socket end exactly as Firecracker documents it: read
 * "CONNECT <port>\n", answer "OK <host-side port>\n", then carry the guest
 * agent's bytes (here: an echo). The misbehaving peers (garbage, ERR, close,
 * silence, an endless line) must each end in a clear error, never a hang.
 *
 * The peer uses AF_UNIX and blocking sockets, so the end-to-end part is
 * built on Linux only; the pure part also runs in the Windows build. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "lr_addr.h"
#include "lr_proto.h"
#include "lr_transport.h"

/* ---- pure handshake ---------------------------------------------------- */

static void test_request_bytes(void **state) {
  char buf[64];
  size_t n;
  (void)state;
  memset(buf, 'Z', sizeof buf);
  n = lr_fc_request(1234, buf, sizeof buf);
  assert_int_equal(n, 13);
  assert_memory_equal(buf, "CONNECT 1234\n", 13);

  n = lr_fc_request(0, buf, sizeof buf);
  assert_int_equal(n, 10);
  assert_memory_equal(buf, "CONNECT 0\n", 10);

  n = lr_fc_request(4294967295u, buf, sizeof buf);
  assert_int_equal(n, 19);
  assert_memory_equal(buf, "CONNECT 4294967295\n", 19);

  n = lr_fc_request(50505, buf, sizeof buf);
  assert_int_equal(n, 14);
  assert_memory_equal(buf, "CONNECT 50505\n", 14);
}

static void test_request_small_buffer(void **state) {
  char buf[32];
  size_t n;
  (void)state;
  /* A buffer too small for the line must not be overrun, and whatever is
   * returned must not claim a complete request. */
  memset(buf, 'Z', sizeof buf);
  n = lr_fc_request(1234, buf, 6);
  assert_true(n <= 6);
  for (size_t i = 6; i < sizeof buf; i++) assert_int_equal(buf[i], 'Z');
}

static void expect_reply(const char *reply, size_t len, int want, uint32_t want_port,
                         size_t want_consumed) {
  uint32_t port = 0xDEADBEEF;
  size_t consumed = 999;
  int rc = lr_fc_parse_reply(reply, len, &port, &consumed);
  if (rc != want)
    fail_msg("reply '%.*s' (%lu bytes): got %d, want %d", (int)len, reply, (unsigned long)len, rc, want);
  if (want == LR_PROTO_OK) {
    assert_int_equal(port, want_port);
    assert_int_equal(consumed, want_consumed);
  }
}

#define REPLY(s, want, port, consumed) expect_reply((s), sizeof(s) - 1, (want), (port), (consumed))

static void test_reply_ok(void **state) {
  (void)state;
  REPLY("OK 1073741824\n", LR_PROTO_OK, 1073741824u, 14);
  REPLY("OK 0\n", LR_PROTO_OK, 0, 5);
  REPLY("OK 4294967295\n", LR_PROTO_OK, 4294967295u, 14);
  /* Bytes after the line belong to the stream, not to the handshake. */
  REPLY("OK 1073741825\nHELLO FROM THE AGENT", LR_PROTO_OK, 1073741825u, 14);
  REPLY("OK 7\n\n\n", LR_PROTO_OK, 7, 5);
}

static void test_reply_partial(void **state) {
  const char *full = "OK 1073741824\n";
  (void)state;
  /* Every strict prefix of a good reply (also: the missing newline) waits. */
  for (size_t len = 0; len < strlen(full); len++)
    expect_reply(full, len, LR_PROTO_NEED_MORE, 0, 0);
}

static void test_reply_errors(void **state) {
  (void)state;
  REPLY("ERR\n", LR_PROTO_EINVAL, 0, 0);
  REPLY("ERR no listener on port 50505\n", LR_PROTO_EINVAL, 0, 0);
  REPLY("HTTP/1.1 400 Bad Request\r\n", LR_PROTO_EINVAL, 0, 0);
  REPLY("OK\n", LR_PROTO_EINVAL, 0, 0);
  REPLY("OK \n", LR_PROTO_EINVAL, 0, 0);
  REPLY("OK abc\n", LR_PROTO_EINVAL, 0, 0);
  REPLY("OK 12a\n", LR_PROTO_EINVAL, 0, 0);
  REPLY("OK -1\n", LR_PROTO_EINVAL, 0, 0);
  REPLY("OK 4294967296\n", LR_PROTO_EINVAL, 0, 0);
  REPLY("OK 99999999999999999999\n", LR_PROTO_EINVAL, 0, 0);
  REPLY("ok 5\n", LR_PROTO_EINVAL, 0, 0);
  REPLY("\n", LR_PROTO_EINVAL, 0, 0);
  REPLY("CONNECT 5\n", LR_PROTO_EINVAL, 0, 0);
  /* A NUL inside the line is garbage, not a terminator. */
  expect_reply("OK 1\0\n", 6, LR_PROTO_EINVAL, 0, 0);
}

static void test_reply_overlong(void **state) {
  char line[200];
  (void)state;
  /* A peer that never sends a newline must not make us buffer forever:
   * past 32 bytes without one, the reply is invalid. */
  memset(line, '1', sizeof line);
  memcpy(line, "OK ", 3);
  expect_reply(line, 40, LR_PROTO_EINVAL, 0, 0);
  expect_reply(line, sizeof line, LR_PROTO_EINVAL, 0, 0);
  memset(line, 'x', sizeof line);
  expect_reply(line, 64, LR_PROTO_EINVAL, 0, 0);
  /* ... and a complete line that long is invalid too. */
  memset(line, ' ', sizeof line);
  memcpy(line, "OK 5", 4);
  line[60] = '\n';
  expect_reply(line, 61, LR_PROTO_EINVAL, 0, 0);
}

#ifndef _WIN32
/* ---- end to end against a hybrid-vsock peer ---------------------------- */

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef enum {
  PEER_ECHO,       /* "OK 1073741824\n" (+ early bytes), then echo */
  PEER_GARBAGE,    /* "HELLO WORLD\n" */
  PEER_ERR,        /* "ERR\n" */
  PEER_CLOSE,      /* reads the request, closes */
  PEER_SILENT,     /* reads the request, says nothing */
  PEER_ENDLESS,    /* "OK 1111..." with no newline, keeps the socket open */
} peer_mode_t;

typedef struct {
  peer_mode_t mode;
  const char *early; /* PEER_ECHO: bytes sent right behind the OK line */
  char dir[64];
  char path[128];
  int lfd;
  uv_thread_t thread;
  char request[128]; /* the line the client sent, as received */
  size_t request_len;
  int echoed;        /* bytes echoed back */
} peer_t;

/* Blocking read with a bound, so a broken client cannot hang the peer. */
static ssize_t peer_read(int fd, char *buf, size_t len, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, timeout_ms) <= 0) return -1;
  return read(fd, buf, len);
}

static void peer_main(void *arg) {
  peer_t *p = arg;
  struct pollfd lp = {.fd = p->lfd, .events = POLLIN};
  int fd;
  char c, buf[4096];

  if (poll(&lp, 1, 10000) <= 0) return;
  fd = accept(p->lfd, NULL, NULL);
  if (fd < 0) return;
  /* The request line, byte by byte as a hypervisor reads it. */
  while (p->request_len < sizeof p->request - 1) {
    if (peer_read(fd, &c, 1, 10000) != 1) break;
    p->request[p->request_len++] = c;
    if (c == '\n') break;
  }
  switch (p->mode) {
  case PEER_ECHO: {
    char ok[128];
    int n = snprintf(ok, sizeof ok, "OK 1073741824\n%s", p->early ? p->early : "");
    if (write(fd, ok, (size_t)n) != n) break;
    for (;;) {
      ssize_t r = peer_read(fd, buf, sizeof buf, 10000);
      if (r <= 0) break;
      if (write(fd, buf, (size_t)r) != r) break;
      p->echoed += (int)r;
    }
    break;
  }
  case PEER_GARBAGE:
    if (write(fd, "HELLO WORLD\n", 12) != 12) break;
    (void)peer_read(fd, buf, sizeof buf, 10000); /* until the client hangs up */
    break;
  case PEER_ERR:
    if (write(fd, "ERR\n", 4) != 4) break;
    (void)peer_read(fd, buf, sizeof buf, 10000);
    break;
  case PEER_CLOSE:
    break;
  case PEER_SILENT:
    (void)peer_read(fd, buf, sizeof buf, 15000);
    break;
  case PEER_ENDLESS: {
    char ones[100];
    memset(ones, '1', sizeof ones);
    memcpy(ones, "OK ", 3);
    if (write(fd, ones, sizeof ones) != (ssize_t)sizeof ones) break;
    (void)peer_read(fd, buf, sizeof buf, 10000);
    break;
  }
  }
  close(fd);
}

static void peer_start(peer_t *p, peer_mode_t mode) {
  struct sockaddr_un sa;
  memset(p, 0, sizeof *p);
  p->mode = mode;
  strcpy(p->dir, "/tmp/lr-fc-test-XXXXXX");
  assert_non_null(mkdtemp(p->dir));
  snprintf(p->path, sizeof p->path, "%s/v.sock", p->dir);
  p->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(p->lfd >= 0);
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  strcpy(sa.sun_path, p->path);
  assert_int_equal(bind(p->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(p->lfd, 4), 0);
}

static void peer_run(peer_t *p) { assert_int_equal(uv_thread_create(&p->thread, peer_main, p), 0); }

static void peer_stop(peer_t *p) {
  uv_thread_join(&p->thread);
  close(p->lfd);
  unlink(p->path);
  rmdir(p->dir);
}

/* The client side: one lr_transport_connect, then for a success a ping
 * through the echo. */
typedef struct {
  uv_loop_t loop;
  uv_timer_t guard;
  lr_endpoint_t ep;
  int cb_calls;
  int status;
  char err[512];
  uint64_t started, finished;
  int ep_open;
  char rx[256];
  size_t rx_len, rx_want;
  uv_write_t wreq;
  int guard_fired;
  int finished_flag;
} client_t;

static void on_ep_closed(uv_handle_t *h) { (void)h; }

static void on_guard(uv_timer_t *t) {
  client_t *c = t->data;
  c->guard_fired = 1;
  uv_stop(&c->loop);
}

static void finish(client_t *c) {
  if (c->finished_flag) return;
  c->finished_flag = 1;
  if (c->ep_open) {
    c->ep_open = 0;
    uv_close(&c->ep.u.handle, on_ep_closed);
  }
  uv_close((uv_handle_t *)&c->guard, NULL);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  client_t *c = h->data;
  (void)suggested;
  buf->base = c->rx + c->rx_len;
  buf->len = sizeof c->rx - c->rx_len;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  client_t *c = s->data;
  (void)buf;
  if (n > 0) c->rx_len += (size_t)n;
  if (n < 0 || c->rx_len >= c->rx_want || c->rx_len == sizeof c->rx) finish(c);
}

static void on_written(uv_write_t *w, int status) { (void)w, (void)status; }

static void on_connected(lr_endpoint_t *ep, int status, const char *err, void *data) {
  client_t *c = data;
  static char ping[] = "ping through the hybrid vsock";
  uv_buf_t b = uv_buf_init(ping, sizeof ping - 1);
  c->cb_calls++;
  c->status = status;
  c->finished = uv_now(&c->loop);
  snprintf(c->err, sizeof c->err, "%s", err ? err : "");
  if (status < 0) {
    finish(c);
    return;
  }
  c->ep_open = 1;
  ep->u.handle.data = c;
  c->rx_want += sizeof ping - 1;
  if (uv_read_start(&ep->u.stream, on_alloc, on_read) != 0 ||
      uv_write(&c->wreq, &ep->u.stream, &b, 1, on_written) != 0)
    finish(c);
}

static const lr_host_pal_t test_pal = {.base = {.name = "test"}}; /* fc: needs no platform hook */

/* Runs one connect against p; returns when the callback ran (or the guard
 * timer proved a hang). */
static void run_client(client_t *c, peer_t *p, uint32_t port, size_t early_len) {
  char addrs[200], err[256] = "";
  lr_taddr_t a;
  memset(c, 0, sizeof *c);
  snprintf(addrs, sizeof addrs, "fc:%s:%u", p->path, port);
  assert_int_equal(lr_taddr_parse(addrs, &a, err, sizeof err), 0);
  assert_int_equal(uv_loop_init(&c->loop), 0);
  assert_int_equal(uv_timer_init(&c->loop, &c->guard), 0);
  c->guard.data = c;
  /* Well past LR_TRANSPORT_TIMEOUT_MS: firing means the transport hung. */
  assert_int_equal(uv_timer_start(&c->guard, on_guard, LR_TRANSPORT_TIMEOUT_MS + 5000, 0), 0);
  c->rx_want = early_len;
  c->started = uv_now(&c->loop);
  if (lr_transport_connect(&c->loop, &test_pal, &a, 0, &c->ep, on_connected, c, err, sizeof err) != 0)
    fail_msg("lr_transport_connect refused %s: %s", addrs, err);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  if (c->guard_fired) fail_msg("no result within %d ms: the fc connect hung", LR_TRANSPORT_TIMEOUT_MS + 5000);
  assert_int_equal(c->cb_calls, 1);
  assert_int_equal(uv_loop_close(&c->loop), 0);
}

static void expect_failure(peer_mode_t mode, const char *what) {
  peer_t p;
  client_t c;
  peer_start(&p, mode);
  peer_run(&p);
  run_client(&c, &p, 50505, 0);
  peer_stop(&p);
  if (c.status >= 0) fail_msg("%s: connect succeeded", what);
  if (c.err[0] == '\0' || strchr(c.err, '\n') != NULL) fail_msg("%s: error '%s' is not one line", what, c.err);
  print_message("%s -> %s (%llu ms)\n", what, c.err, (unsigned long long)(c.finished - c.started));
}

static void test_e2e_echo(void **state) {
  peer_t p;
  client_t c;
  (void)state;
  peer_start(&p, PEER_ECHO);
  peer_run(&p);
  run_client(&c, &p, 50505, 0);
  peer_stop(&p);
  if (c.status != 0) fail_msg("connect failed: %s", c.err);
  /* The hypervisor saw exactly the documented request. */
  assert_int_equal(p.request_len, 14);
  assert_memory_equal(p.request, "CONNECT 50505\n", 14);
  assert_int_equal(c.ep.kind, LR_EP_PIPE);
  assert_int_equal(c.rx_len, 29);
  assert_memory_equal(c.rx, "ping through the hybrid vsock", 29);
  assert_int_equal(p.echoed, 29);
}

/* The agent speaks only after the host's preamble, so bytes glued to the
 * OK line are a protocol violation. Whatever the transport does with them,
 * they must not vanish silently: either they reach the stream, or the
 * connect fails with an error that says so. */
static void test_e2e_bytes_after_ok_not_lost(void **state) {
  peer_t p;
  client_t c;
  (void)state;
  peer_start(&p, PEER_ECHO);
  p.early = "EARLY";
  peer_run(&p);
  run_client(&c, &p, 7, 5);
  peer_stop(&p);
  assert_memory_equal(p.request, "CONNECT 7\n", 10);
  if (c.status == 0) {
    assert_true(c.rx_len >= 5);
    assert_memory_equal(c.rx, "EARLY", 5);
  } else {
    print_message("bytes after OK -> %s\n", c.err);
    if (strstr(c.err, "after") == NULL) fail_msg("error does not say what was wrong: '%s'", c.err);
  }
}

static void test_e2e_garbage(void **state) {
  (void)state;
  expect_failure(PEER_GARBAGE, "peer answers garbage");
}

static void test_e2e_err(void **state) {
  (void)state;
  expect_failure(PEER_ERR, "peer answers ERR");
}

static void test_e2e_close(void **state) {
  (void)state;
  expect_failure(PEER_CLOSE, "peer closes after the request");
}

static void test_e2e_endless_line(void **state) {
  (void)state;
  expect_failure(PEER_ENDLESS, "peer sends an endless line");
}

static void test_e2e_silent_times_out(void **state) {
  peer_t p;
  client_t c;
  uint64_t took;
  (void)state;
  peer_start(&p, PEER_SILENT);
  peer_run(&p);
  run_client(&c, &p, 50505, 0);
  peer_stop(&p);
  took = c.finished - c.started;
  if (c.status >= 0) fail_msg("silent peer: connect succeeded");
  print_message("silent peer -> %s (%llu ms)\n", c.err, (unsigned long long)took);
  /* The bound is the transport's own timeout, not the peer giving up. */
  assert_true(took + 200 >= LR_TRANSPORT_TIMEOUT_MS);
  assert_true(took <= LR_TRANSPORT_TIMEOUT_MS + 2000);
}

static void test_e2e_no_socket(void **state) {
  client_t c;
  peer_t p;
  (void)state;
  /* A path where nothing listens: the VM is not running. */
  memset(&p, 0, sizeof p);
  strcpy(p.path, "/tmp/lr-fc-test-does-not-exist/v.sock");
  run_client(&c, &p, 50505, 0);
  if (c.status >= 0) fail_msg("connect to a missing socket succeeded");
  assert_true(c.err[0] != '\0');
  print_message("missing socket -> %s\n", c.err);
}
#endif

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_request_bytes),
      cmocka_unit_test(test_request_small_buffer),
      cmocka_unit_test(test_reply_ok),
      cmocka_unit_test(test_reply_partial),
      cmocka_unit_test(test_reply_errors),
      cmocka_unit_test(test_reply_overlong),
#ifndef _WIN32
      cmocka_unit_test(test_e2e_echo),
      cmocka_unit_test(test_e2e_bytes_after_ok_not_lost),
      cmocka_unit_test(test_e2e_garbage),
      cmocka_unit_test(test_e2e_err),
      cmocka_unit_test(test_e2e_close),
      cmocka_unit_test(test_e2e_endless_line),
      cmocka_unit_test(test_e2e_no_socket),
      cmocka_unit_test(test_e2e_silent_times_out),
#endif
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
