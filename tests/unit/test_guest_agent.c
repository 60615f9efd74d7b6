/* Tests of the agent's streams, end to end over real sockets.
 *
 * The agent runs on its own libuv loop in a thread and serves a TCP
 * listener on 127.0.0.1 (the tcp transport, so tokens are exercised and
 * its own socket must be left out of the listing); the test plays the host
 * with plain blocking sockets and plays the guest's servers with listeners
 * of its own. Every read has a timeout, so a missing reply fails the test
 * instead of hanging it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <uv.h>

#include "lr_agent.h"
#include "lr_glisten.h"
#include "lr_proto.h"

static const uint8_t TOKEN[] = "test-token";
#define TOKEN_LEN (sizeof TOKEN - 1)

typedef struct {
  uv_loop_t loop;
  uv_async_t stop;
  lr_agent_t *agent;
  pthread_t thread;
  uint16_t port; /* the agent's transport port */
} fixture_t;

static void on_stop(uv_async_t *h) {
  fixture_t *f = h->data;
  lr_agent_shutdown(f->agent);
  uv_close((uv_handle_t *)h, NULL);
}

static void *run_loop(void *arg) {
  fixture_t *f = arg;
  uv_run(&f->loop, UV_RUN_DEFAULT);
  return NULL;
}

static int setup(void **state) {
  static fixture_t f;
  memset(&f, 0, sizeof f);
  assert_int_equal(uv_loop_init(&f.loop), 0);
  lr_agent_opts_t o = {.name = "test-guest", .token = TOKEN, .token_len = TOKEN_LEN,
                       .scan_interval_ms = 20, .handshake_timeout_ms = 300};
  char err[256];
  f.agent = lr_agent_new(&f.loop, &o, err, sizeof err);
  assert_non_null(f.agent);
  lr_taddr_t ta;
  assert_int_equal(lr_taddr_parse("tcp:127.0.0.1:0", &ta, err, sizeof err), 0);
  int fd = lr_guest_listen(&ta, err, sizeof err);
  assert_true(fd >= 0);
  struct sockaddr_in sin;
  socklen_t len = sizeof sin;
  getsockname(fd, (struct sockaddr *)&sin, &len);
  f.port = ntohs(sin.sin_port);
  assert_int_equal(lr_agent_serve_fd(f.agent, fd, err, sizeof err), 0);
  uv_async_init(&f.loop, &f.stop, on_stop);
  f.stop.data = &f;
  assert_int_equal(pthread_create(&f.thread, NULL, run_loop, &f), 0);
  *state = &f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  uv_async_send(&f->stop);
  pthread_join(f->thread, NULL);
  lr_agent_free(f->agent);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  return 0;
}

/* ---- a minimal blocking host -------------------------------------------- */

static int tcp_connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct timeval tv = {3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
  return fd;
}

static int tcp_listen_any(int family, uint16_t *port) {
  int fd = socket(family, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t len;
  if (family == AF_INET) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    s4->sin_family = AF_INET;
    s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof *s4;
  } else {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    s6->sin6_family = AF_INET6;
    len = sizeof *s6;
  }
  assert_int_equal(bind(fd, (struct sockaddr *)&ss, len), 0);
  assert_int_equal(listen(fd, 8), 0);
  len = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &len);
  *port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                  : ((struct sockaddr_in6 *)&ss)->sin6_port);
  struct timeval tv = {3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

static void send_all(int fd, const void *p, size_t n) {
  assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Reads exactly n bytes; returns bytes read before EOF/timeout otherwise. */
static size_t recv_n(int fd, uint8_t *p, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = recv(fd, p + got, n - got, 0);
    if (r <= 0) break;
    got += (size_t)r;
  }
  return got;
}

static void expect_preamble(int fd, uint8_t kind) {
  uint8_t p[LR_PREAMBLE_LEN];
  lr_preamble_t pre;
  assert_int_equal(recv_n(fd, p, sizeof p), sizeof p);
  assert_int_equal(lr_preamble_decode(p, sizeof p, &pre), LR_PROTO_OK);
  assert_int_equal(pre.kind, kind);
}

static uint8_t frame_buf[LR_FRAME_HDR_LEN + LR_FRAME_MAX_PAYLOAD];

static lr_frame_t read_frame(int fd) {
  lr_frame_t f;
  size_t consumed;
  assert_int_equal(recv_n(fd, frame_buf, LR_FRAME_HDR_LEN), LR_FRAME_HDR_LEN);
  uint32_t len = (uint32_t)frame_buf[4] << 24 | (uint32_t)frame_buf[5] << 16 |
                 (uint32_t)frame_buf[6] << 8 | frame_buf[7];
  assert_true(len <= LR_FRAME_MAX_PAYLOAD);
  assert_int_equal(recv_n(fd, frame_buf + LR_FRAME_HDR_LEN, len), len);
  assert_int_equal(lr_frame_decode(frame_buf, LR_FRAME_HDR_LEN + len, &f, &consumed),
                   LR_PROTO_OK);
  return f;
}

static void expect_eof(int fd) {
  uint8_t b[64];
  ssize_t r;
  do {
    r = recv(fd, b, sizeof b, 0);
  } while (r > 0);
  assert_true(r == 0 || errno == ECONNRESET); /* not a timeout */
}

static int start_control(fixture_t *f, const uint8_t *tok, size_t toklen) {
  int fd = tcp_connect(f->port);
  uint8_t buf[512];
  lr_preamble_encode(buf, LR_STREAM_CONTROL);
  lr_hello_t h;
  memset(&h, 0, sizeof h);
  h.token_len = (uint8_t)toklen;
  memcpy(h.token, tok, toklen);
  strcpy(h.name, "test-host");
  strcpy(h.version, "0.0.0");
  size_t n = lr_encode_hello(buf + LR_PREAMBLE_LEN, sizeof buf - LR_PREAMBLE_LEN, LR_MSG_HELLO, &h);
  assert_true(n > 0);
  send_all(fd, buf, LR_PREAMBLE_LEN + n);
  expect_preamble(fd, LR_STREAM_CONTROL);
  return fd;
}

/* Reads LISTENER_ADD frames up to SYNC_DONE; returns whether port was listed
 * (family 4, 127.0.0.1) and fails if the agent's own port shows up. */
static int read_listing(fixture_t *f, int fd, uint16_t port) {
  int found = 0;
  for (;;) {
    lr_frame_t fr = read_frame(fd);
    if (fr.type == LR_MSG_SYNC_DONE) return found;
    if (fr.type == LR_MSG_AGENT_INFO) { /* this fixture's agent polls (opts.ebpf 0) */
      lr_agent_info_t ai;
      assert_int_equal(lr_decode_agent_info(&fr, &ai), LR_PROTO_OK);
      assert_int_equal(ai.detection, LR_DETECT_POLL);
      continue;
    }
    assert_int_equal(fr.type, LR_MSG_LISTENER_ADD);
    lr_listener_t l;
    assert_int_equal(lr_decode_listener(&fr, &l), LR_PROTO_OK);
    assert_false(l.port == f->port && l.family == 4); /* never itself */
    if (l.port == port) found = 1;
  }
}

/* Waits for a LISTENER_ADD/DEL of port, skipping others and PONGs. */
static void expect_change(int fd, uint16_t type, uint16_t port) {
  for (int i = 0; i < 1000; i++) {
    lr_frame_t fr = read_frame(fd);
    if (fr.type != type) continue;
    lr_listener_t l;
    assert_int_equal(lr_decode_listener(&fr, &l), LR_PROTO_OK);
    if (l.port == port) return;
  }
  fail_msg("no %s for port %u", lr_msg_name(type), port);
}

/* ---- tests -------------------------------------------------------------- */

static void test_control_listing_changes_and_ping(void **state) {
  fixture_t *f = *state;
  uint16_t p1;
  int l1 = tcp_listen_any(AF_INET, &p1);
  int c = start_control(f, TOKEN, TOKEN_LEN);
  lr_frame_t fr = read_frame(c);
  assert_int_equal(fr.type, LR_MSG_WELCOME);
  lr_hello_t w;
  assert_int_equal(lr_decode_hello(&fr, &w), LR_PROTO_OK);
  assert_string_equal(w.name, "test-guest");
  assert_true(read_listing(f, c, p1));

  /* A listener that appears and one that goes are reported. */
  uint16_t p2;
  int l2 = tcp_listen_any(AF_INET6, &p2);
  expect_change(c, LR_MSG_LISTENER_ADD, p2);
  close(l1);
  expect_change(c, LR_MSG_LISTENER_DEL, p1);

  /* An unknown frame type is skipped; PING still gets its PONG. */
  uint8_t buf[64];
  size_t n = lr_encode_empty(buf, sizeof buf, 999);
  n += lr_encode_ping(buf + n, sizeof buf - n, LR_MSG_PING, 0x1122334455667788ull);
  send_all(c, buf, n);
  for (;;) {
    fr = read_frame(c);
    if (fr.type != LR_MSG_PONG) continue;
    uint64_t nonce;
    assert_int_equal(lr_decode_ping(&fr, &nonce), LR_PROTO_OK);
    assert_true(nonce == 0x1122334455667788ull);
    break;
  }

  /* A second control stream (the host reconnected) replaces the first,
   * and gets a full listing of its own. */
  int c2 = start_control(f, TOKEN, TOKEN_LEN);
  assert_int_equal(read_frame(c2).type, LR_MSG_WELCOME);
  assert_true(read_listing(f, c2, p2));
  expect_eof(c);
  close(c);
  close(c2);
  close(l2);
}

static void test_wrong_token_is_refused(void **state) {
  fixture_t *f = *state;
  int c = start_control(f, (const uint8_t *)"nope", 4);
  lr_frame_t fr = read_frame(c);
  assert_int_equal(fr.type, LR_MSG_ERROR);
  lr_error_msg_t e;
  assert_int_equal(lr_decode_error(&fr, &e), LR_PROTO_OK);
  assert_int_equal(e.code, LR_ERR_AUTH);
  expect_eof(c);
  close(c);
}

static int start_data(fixture_t *f, uint8_t family, uint16_t port, const char *extra) {
  int fd = tcp_connect(f->port);
  uint8_t buf[512];
  lr_preamble_encode(buf, LR_STREAM_DATA);
  lr_open_t o;
  memset(&o, 0, sizeof o);
  o.token_len = TOKEN_LEN;
  memcpy(o.token, TOKEN, TOKEN_LEN);
  o.family = family;
  o.port = port;
  size_t n = LR_PREAMBLE_LEN + lr_encode_open(buf + LR_PREAMBLE_LEN, 64, &o);
  memcpy(buf + n, extra, strlen(extra));
  send_all(fd, buf, n + strlen(extra));
  expect_preamble(fd, LR_STREAM_DATA);
  return fd;
}

static void test_data_stream_relays_both_ways(void **state) {
  fixture_t *f = *state;
  uint16_t port;
  int lsn = tcp_listen_any(AF_INET6, &port); /* dual-stack [::]: reachable as ::1 */
  /* Bytes sent in the same write as OPEN belong to the server. */
  int d = start_data(f, 6, port, "early bytes");
  int srv = accept(lsn, NULL, NULL);
  assert_true(srv >= 0);
  struct timeval tv = {3, 0};
  setsockopt(srv, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  lr_frame_t fr = read_frame(d);
  assert_int_equal(fr.type, LR_MSG_OPEN_RESULT);
  lr_error_msg_t r;
  assert_int_equal(lr_decode_error(&fr, &r), LR_PROTO_OK);
  assert_int_equal(r.code, LR_OK);

  uint8_t b[64];
  assert_int_equal(recv_n(srv, b, 11), 11);
  assert_memory_equal(b, "early bytes", 11);
  send_all(d, "more", 4);
  assert_int_equal(recv_n(srv, b, 4), 4);
  assert_memory_equal(b, "more", 4);
  /* Half-close: the host's EOF reaches the server, which still answers. */
  shutdown(d, SHUT_WR);
  assert_int_equal(recv(srv, b, sizeof b, 0), 0);
  send_all(srv, "reply after eof", 15);
  close(srv);
  assert_int_equal(recv_n(d, b, 15), 15);
  assert_memory_equal(b, "reply after eof", 15);
  expect_eof(d);
  close(d);
  close(lsn);
}

static void test_refused_and_bad_open(void **state) {
  fixture_t *f = *state;
  uint16_t port;
  int lsn = tcp_listen_any(AF_INET, &port);
  close(lsn); /* nothing listens there now */
  int d = start_data(f, 4, port, "");
  lr_frame_t fr = read_frame(d);
  assert_int_equal(fr.type, LR_MSG_OPEN_RESULT);
  lr_error_msg_t r;
  assert_int_equal(lr_decode_error(&fr, &r), LR_PROTO_OK);
  assert_int_equal(r.code, LR_ERR_REFUSED);
  expect_eof(d);
  close(d);

  /* HELLO on a data stream is a protocol error. */
  d = tcp_connect(f->port);
  uint8_t buf[128];
  lr_preamble_encode(buf, LR_STREAM_DATA);
  lr_hello_t h;
  memset(&h, 0, sizeof h);
  size_t n = LR_PREAMBLE_LEN + lr_encode_hello(buf + LR_PREAMBLE_LEN, 100, LR_MSG_HELLO, &h);
  send_all(d, buf, n);
  expect_preamble(d, LR_STREAM_DATA);
  fr = read_frame(d);
  assert_int_equal(fr.type, LR_MSG_ERROR);
  assert_int_equal(lr_decode_error(&fr, &r), LR_PROTO_OK);
  assert_int_equal(r.code, LR_ERR_PROTOCOL);
  expect_eof(d);
  close(d);
}

static void test_garbage_version_oversize_silence(void **state) {
  fixture_t *f = *state;
  /* Wrong magic: closed without a reply. */
  int d = tcp_connect(f->port);
  send_all(d, "GET / HTTP/1.1\r\n\r\n", 18);
  expect_eof(d);
  close(d);

  /* Another protocol version: our preamble, then ERROR(VERSION). */
  d = tcp_connect(f->port);
  uint8_t p[LR_PREAMBLE_LEN];
  lr_preamble_encode(p, LR_STREAM_CONTROL);
  p[4] = LR_PROTO_VERSION + 1;
  send_all(d, p, sizeof p);
  expect_preamble(d, LR_STREAM_CONTROL);
  lr_frame_t fr = read_frame(d);
  assert_int_equal(fr.type, LR_MSG_ERROR);
  lr_error_msg_t e;
  assert_int_equal(lr_decode_error(&fr, &e), LR_PROTO_OK);
  assert_int_equal(e.code, LR_ERR_VERSION);
  expect_eof(d);
  close(d);

  /* A frame header announcing more than the maximum payload. */
  d = tcp_connect(f->port);
  uint8_t big[LR_PREAMBLE_LEN + LR_FRAME_HDR_LEN] = {0};
  lr_preamble_encode(big, LR_STREAM_CONTROL);
  big[LR_PREAMBLE_LEN + 1] = LR_MSG_HELLO;
  big[LR_PREAMBLE_LEN + 5] = 0x10; /* 1 MiB */
  send_all(d, big, sizeof big);
  expect_preamble(d, LR_STREAM_CONTROL);
  fr = read_frame(d);
  assert_int_equal(fr.type, LR_MSG_ERROR);
  assert_int_equal(lr_decode_error(&fr, &e), LR_PROTO_OK);
  assert_int_equal(e.code, LR_ERR_PROTOCOL);
  expect_eof(d);
  close(d);

  /* Silence: closed after the handshake timeout (300 ms here). */
  struct timeval t0, t1;
  gettimeofday(&t0, NULL);
  d = tcp_connect(f->port);
  send_all(d, "LRL", 3);
  expect_eof(d);
  gettimeofday(&t1, NULL);
  long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_usec - t0.tv_usec) / 1000;
  assert_true(ms >= 250 && ms < 2500);
  close(d);

  /* None of that disturbed the agent: a control stream still works. */
  int c = start_control(f, TOKEN, TOKEN_LEN);
  assert_int_equal(read_frame(c).type, LR_MSG_WELCOME);
  close(c);
}

/* ---- malformed frames on the control stream ------------------------------ */

/* A frame with any payload, as a broken host would send it. */
static size_t raw_frame(uint8_t *out, uint16_t type, const uint8_t *payload, uint32_t len) {
  out[0] = (uint8_t)(type >> 8);
  out[1] = (uint8_t)type;
  out[2] = out[3] = 0;
  out[4] = (uint8_t)(len >> 24);
  out[5] = (uint8_t)(len >> 16);
  out[6] = (uint8_t)(len >> 8);
  out[7] = (uint8_t)len;
  memcpy(out + LR_FRAME_HDR_LEN, payload, len);
  return LR_FRAME_HDR_LEN + len;
}

/* Skips listener reports up to the agent's ERROR, which must name a
 * protocol error, then the end of the stream. */
static void expect_protocol_error_and_eof(int fd) {
  for (int i = 0; i < 1000; i++) {
    lr_frame_t fr = read_frame(fd);
    if (fr.type != LR_MSG_ERROR) continue;
    lr_error_msg_t e;
    assert_int_equal(lr_decode_error(&fr, &e), LR_PROTO_OK);
    assert_int_equal(e.code, LR_ERR_PROTOCOL);
    expect_eof(fd);
    return;
  }
  fail_msg("no ERROR frame");
}

/* A data stream relaying to a fresh server; *srv gets the server's side. */
static int relayed_pair(fixture_t *f, int *srv, int *lsn) {
  uint16_t port;
  *lsn = tcp_listen_any(AF_INET, &port);
  int d = start_data(f, 4, port, "");
  *srv = accept(*lsn, NULL, NULL);
  assert_true(*srv >= 0);
  struct timeval tv = {3, 0};
  setsockopt(*srv, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  lr_frame_t fr = read_frame(d);
  assert_int_equal(fr.type, LR_MSG_OPEN_RESULT);
  return d;
}

static void expect_relaying(int d, int srv) {
  uint8_t b[16];
  send_all(d, "ping", 4);
  assert_int_equal(recv_n(srv, b, 4), 4);
  assert_memory_equal(b, "ping", 4);
  send_all(srv, "pong", 4);
  assert_int_equal(recv_n(d, b, 4), 4);
  assert_memory_equal(b, "pong", 4);
}

static int start_control_welcomed(fixture_t *f) {
  int c = start_control(f, TOKEN, TOKEN_LEN);
  assert_int_equal(read_frame(c).type, LR_MSG_WELCOME);
  read_listing(f, c, 0);
  return c;
}

static void test_malformed_ping_closes_control(void **state) {
  fixture_t *f = *state;
  int srv, lsn;
  int d = relayed_pair(f, &srv, &lsn);
  int c = start_control_welcomed(f);

  /* A PING needs an 8-byte nonce; 3 bytes is a broken host. */
  uint8_t buf[64];
  static const uint8_t short_nonce[3] = {1, 2, 3};
  send_all(c, buf, raw_frame(buf, LR_MSG_PING, short_nonce, sizeof short_nonce));
  expect_protocol_error_and_eof(c);
  close(c);

  /* Only that stream ended: the data stream still relays, and the host can
   * come back with a new control stream. */
  expect_relaying(d, srv);
  c = start_control_welcomed(f);
  size_t n = lr_encode_ping(buf, sizeof buf, LR_MSG_PING, 42);
  send_all(c, buf, n);
  for (;;) {
    lr_frame_t fr = read_frame(c);
    if (fr.type == LR_MSG_PONG) break;
  }
  close(c);
  close(d);
  close(srv);
  close(lsn);
}

/* 0 when 127.0.0.1:port can be bound, else the errno. */
static int try_bind(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int rc = bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0 ? 0 : errno;
  close(fd);
  return rc;
}

/* Polls for up to 3 s until try_bind(port) gives want. */
static void wait_bind(uint16_t port, int want) {
  for (int i = 0; i < 300; i++) {
    if (try_bind(port) == want) return;
    usleep(10000);
  }
  fail_msg("127.0.0.1:%u: bind never gave %s", port, want ? strerror(want) : "success");
}

static void test_malformed_reverse_set_closes_control(void **state) {
  fixture_t *f = *state;
  uint16_t port;
  close(tcp_listen_any(AF_INET, &port)); /* a port nobody holds */
  int srv, lsn;
  int d = relayed_pair(f, &srv, &lsn);
  int c = start_control_welcomed(f);

  /* A good REVERSE_SET first: the agent publishes the port. */
  uint8_t buf[64];
  lr_reverse_set_t *rs = calloc(1, sizeof *rs);
  assert_non_null(rs);
  rs->n = 1;
  rs->ports[0] = port;
  send_all(c, buf, lr_encode_reverse_set(buf, sizeof buf, rs));
  free(rs);
  wait_bind(port, EADDRINUSE);

  /* Three ports announced, one present. */
  const uint8_t bad[] = {0, 0, 3, (uint8_t)(port >> 8), (uint8_t)port};
  send_all(c, buf, raw_frame(buf, LR_MSG_REVERSE_SET, bad, sizeof bad));
  expect_protocol_error_and_eof(c);
  close(c);

  /* The published port went with the control stream; the data stream and
   * a new control stream are unaffected. */
  wait_bind(port, 0);
  expect_relaying(d, srv);
  c = start_control_welcomed(f);
  close(c);
  close(d);
  close(srv);
  close(lsn);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_control_listing_changes_and_ping, setup, teardown),
      cmocka_unit_test_setup_teardown(test_wrong_token_is_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_data_stream_relays_both_ways, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refused_and_bad_open, setup, teardown),
      cmocka_unit_test_setup_teardown(test_garbage_version_oversize_silence, setup, teardown),
      cmocka_unit_test_setup_teardown(test_malformed_ping_closes_control, setup, teardown),
      cmocka_unit_test_setup_teardown(test_malformed_reverse_set_closes_control, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
