/* Tests of the agent's streams, end to end over real sockets.
 *
 * The agent runs on its own libuv loop in a thread and serves a TCP
 * listener on 127.0.0.1 (the tcp transport, so the shared key and its
 * challenge-response are exercised and its own socket must be left out of
 * the listing), or a Unix socket for the peer-credential and no-key tests;
 * the test plays the host with plain blocking sockets, computing its MACs
 * with lr_auth over the guest's platform layer (libcrypto), and plays the
 * guest's servers with listeners of its own. Every read has a timeout, so
 * a missing reply fails the test instead of hanging it. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <uv.h>

#include "agent_int.h" /* scan.owner_walks */
#include "lr_agent.h"
#include "lr_auth.h"
#include "lr_glisten.h"
#include "lr_guest_pal.h"
#include "lr_file.h"
#include "lr_linux.h"
#include "lr_token.h"
#include "lr_proto.h"
#include "lr_testutil.h"

static const uint8_t KEY[] = "test-key-0123456789";
#define KEY_LEN (sizeof KEY - 1)
static const uint8_t OTHER_KEY[] = "not-the-key-0123456";
#define OTHER_KEY_LEN (sizeof OTHER_KEY - 1)
#define HANDSHAKE_MS 1000
#define CONTROL_LIVE_MS 1000

typedef struct {
  uv_loop_t loop;
  uv_async_t stop;
  lr_agent_t *agent;
  pthread_t thread;
  uint16_t port;  /* the agent's transport port (tcp fixtures) */
  char path[108]; /* the agent's socket (unix fixtures) */
  int keyed;
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

/* An agent serving addr ("tcp:127.0.0.1:0" or a unix: path) with o. */
static int fixture_start(void **state, lr_agent_opts_t *o, const char *addr) {
  static fixture_t f;
  memset(&f, 0, sizeof f);
  assert_int_equal(uv_loop_init(&f.loop), 0);
  o->name = "test-guest";
  o->scan_interval_ms = 20;
  o->handshake_timeout_ms = HANDSHAKE_MS;
  o->control_live_ms = CONTROL_LIVE_MS;
  f.keyed = o->token_len > 0;
  char err[256];
  f.agent = lr_agent_new(&f.loop, o, err, sizeof err);
  if (!f.agent) fail_msg("lr_agent_new: %s", err);
  lr_taddr_t ta;
  assert_int_equal(lr_taddr_parse(addr, &ta, err, sizeof err), 0);
  mode_t old = umask(0); /* the socket must come out 0600 all the same */
  int fd = lr_guest_listen(&ta, err, sizeof err);
  umask(old);
  if (fd < 0) fail_msg("listen: %s", err);
  if (ta.kind == LR_TADDR_UNIX) {
    snprintf(f.path, sizeof f.path, "%s", ta.path);
  } else {
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    getsockname(fd, (struct sockaddr *)&sin, &len);
    f.port = ntohs(sin.sin_port);
  }
  assert_int_equal(lr_agent_serve_fd(f.agent, fd, err, sizeof err), 0);
  uv_async_init(&f.loop, &f.stop, on_stop);
  f.stop.data = &f;
  assert_int_equal(pthread_create(&f.thread, NULL, run_loop, &f), 0);
  *state = &f;
  return 0;
}

/* The usual agent: tcp, with the shared key. */
static int setup(void **state) {
  lr_agent_opts_t o = {.token = KEY, .token_len = KEY_LEN};
  return fixture_start(state, &o, "tcp:127.0.0.1:0");
}

/* ... whose failed-authentication bucket holds 1 and refills in a second. */
static int setup_ratelimit(void **state) {
  lr_agent_opts_t o = {.token = KEY, .token_len = KEY_LEN, .auth_fails_per_sec = 1};
  return fixture_start(state, &o, "tcp:127.0.0.1:0");
}

/* No key: the version-1 shape of the handshake, no challenge. */
static int setup_nokey(void **state) {
  lr_agent_opts_t o = {.token_len = 0};
  return fixture_start(state, &o, "tcp:127.0.0.1:0");
}

static char unix_path[108];

static int setup_unix(void **state) {
  lr_agent_opts_t o = {.token_len = 0};
  snprintf(unix_path, sizeof unix_path, "unix:/tmp/lr-agent-test-%d.sock", (int)getpid());
  return fixture_start(state, &o, unix_path);
}

static int setup_unix_allow(void **state) {
  static const uint32_t uids[] = {65534};
  lr_agent_opts_t o = {.token_len = 0, .allow_uids = uids, .n_allow_uids = 1};
  snprintf(unix_path, sizeof unix_path, "unix:/tmp/lr-agent-test-%d.sock", (int)getpid());
  return fixture_start(state, &o, unix_path);
}

static int teardown(void **state) {
  fixture_t *f = *state;
  uv_async_send(&f->stop);
  pthread_join(f->thread, NULL);
  lr_agent_free(f->agent);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  if (f->path[0]) unlink(f->path);
  return 0;
}

/* ---- a minimal blocking host -------------------------------------------- */

static void set_timeout(int fd) {
  struct timeval tv = {3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

static int tcp_connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  set_timeout(fd);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
  return fd;
}

static int unix_connect(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  set_timeout(fd);
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
  if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int agent_connect(fixture_t *f) {
  if (!f->path[0]) return tcp_connect(f->port);
  int fd = unix_connect(f->path);
  assert_true(fd >= 0);
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
  set_timeout(fd);
  return fd;
}

/* No connection is waiting on listener lsn (the agent connected nowhere). */
static void expect_no_connection(int lsn) {
  fcntl(lsn, F_SETFL, fcntl(lsn, F_GETFL) | O_NONBLOCK);
  int fd = accept(lsn, NULL, NULL);
  if (fd >= 0) fail_msg("the agent connected to the guest server");
  assert_int_equal(errno, EAGAIN);
  fcntl(lsn, F_SETFL, fcntl(lsn, F_GETFL) & ~O_NONBLOCK);
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

static lr_preamble_t read_preamble(int fd) {
  uint8_t p[LR_PREAMBLE_LEN];
  lr_preamble_t pre;
  assert_int_equal(recv_n(fd, p, sizeof p), sizeof p);
  assert_int_equal(lr_preamble_decode(p, sizeof p, &pre), LR_PROTO_OK);
  return pre;
}

static void expect_preamble(int fd, uint8_t kind) {
  lr_preamble_t pre = read_preamble(fd);
  assert_int_equal(pre.kind, kind);
  assert_int_equal(pre.flags, 0);
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

/* A keyed agent's first words on every stream: its preamble, sent before it
 * knows the kind and flagged, then CHALLENGE; the nonce goes into a. */
static void read_challenge(int fd, lr_auth_ctx_t *a) {
  lr_preamble_t pre = read_preamble(fd);
  assert_int_equal(pre.kind, LR_STREAM_ANY);
  assert_int_equal(pre.flags, LR_PREAMBLE_KEYED);
  lr_frame_t fr = read_frame(fd);
  assert_int_equal(fr.type, LR_MSG_CHALLENGE);
  assert_int_equal(lr_decode_challenge(&fr, a->agent_nonce), LR_PROTO_OK);
}

/* What the agent says first on a stream of kind (after our preamble, when
 * it has no key). */
static void expect_agent_start(fixture_t *f, int fd, uint8_t kind, lr_auth_ctx_t *a) {
  lr_auth_ctx_t tmp;
  if (f->keyed)
    read_challenge(fd, a ? a : &tmp);
  else
    expect_preamble(fd, kind);
}

/* Opens a stream of kind as the host does. With a key: reads the agent's
 * preamble and CHALLENGE (into a) and sends a flagged preamble. Without:
 * sends the plain preamble; the caller reads the agent's. */
static int open_stream(fixture_t *f, uint8_t kind, lr_auth_ctx_t *a) {
  int fd = agent_connect(f);
  lr_auth_init(a, &lr_guest_pal, f->keyed ? KEY : NULL, f->keyed ? KEY_LEN : 0, kind);
  uint8_t p[LR_PREAMBLE_LEN];
  if (f->keyed) {
    read_challenge(fd, a);
    lr_preamble_encode_flags(p, kind, LR_PREAMBLE_KEYED);
  } else {
    lr_preamble_encode(p, kind);
  }
  send_all(fd, p, sizeof p);
  return fd;
}

/* The host's auth block for a message signed with key (NULL: none at all);
 * a keeps the real key afterwards, to check the agent's answer with. */
static void sign_as_host(fixture_t *f, lr_auth_ctx_t *a, const uint8_t *key, size_t klen) {
  if (!f->keyed || !key) return;
  a->key = key;
  a->key_len = klen;
  assert_int_equal(lr_auth_new_nonce(a, LR_ROLE_HOST), 0);
}

/* A control stream whose HELLO proves key (NULL: no MAC). The HELLO frame
 * is copied to cap (when given) for replays. */
static int start_control_key(fixture_t *f, const uint8_t *key, size_t klen, lr_auth_ctx_t *a,
                             uint8_t *cap, size_t *caplen) {
  lr_auth_ctx_t tmp;
  if (!a) a = &tmp;
  int fd = open_stream(f, LR_STREAM_CONTROL, a);
  uint8_t buf[512];
  lr_hello_t h;
  memset(&h, 0, sizeof h);
  strcpy(h.name, "test-host");
  strcpy(h.version, "0.0.0");
  sign_as_host(f, a, key, klen);
  if (f->keyed && key)
    assert_int_equal(lr_auth_sign_hello(a, LR_ROLE_HOST, LR_MSG_HELLO, &h), 0);
  a->key = KEY;
  a->key_len = f->keyed ? KEY_LEN : 0;
  size_t n = lr_encode_hello(buf, sizeof buf, LR_MSG_HELLO, &h);
  assert_true(n > 0);
  if (cap) {
    memcpy(cap, buf, n);
    *caplen = n;
  }
  send_all(fd, buf, n);
  if (!f->keyed) expect_preamble(fd, LR_STREAM_CONTROL);
  return fd;
}

static int start_control(fixture_t *f) {
  return start_control_key(f, KEY, KEY_LEN, NULL, NULL, NULL);
}

/* WELCOME, whose MAC (with a key) must prove the agent knows it too. */
static lr_hello_t expect_welcome(fixture_t *f, int fd, lr_auth_ctx_t *a) {
  lr_frame_t fr = read_frame(fd);
  assert_int_equal(fr.type, LR_MSG_WELCOME);
  lr_hello_t w;
  assert_int_equal(lr_decode_hello(&fr, &w), LR_PROTO_OK);
  if (f->keyed) {
    assert_int_equal(w.auth.len, LR_AUTH_AGENT_LEN);
    if (a) assert_true(lr_auth_verify_hello(a, LR_ROLE_AGENT, LR_MSG_WELCOME, &w));
  } else {
    assert_int_equal(w.auth.len, 0);
  }
  return w;
}

static void expect_error(int fd, uint32_t code) {
  lr_frame_t fr = read_frame(fd);
  assert_int_equal(fr.type, LR_MSG_ERROR);
  lr_error_msg_t e;
  assert_int_equal(lr_decode_error(&fr, &e), LR_PROTO_OK);
  assert_int_equal(e.code, code);
}

/* A data stream whose OPEN proves key (NULL: no MAC), extra bytes after it
 * in the same write; the OPEN frame is copied to cap when given. */
static int start_data_key(fixture_t *f, uint8_t family, uint16_t port, const char *extra,
                          const uint8_t *key, size_t klen, lr_auth_ctx_t *a, uint8_t *cap,
                          size_t *caplen) {
  lr_auth_ctx_t tmp;
  if (!a) a = &tmp;
  int fd = open_stream(f, LR_STREAM_DATA, a);
  uint8_t buf[512];
  lr_open_t o;
  memset(&o, 0, sizeof o);
  o.family = family;
  o.port = port;
  sign_as_host(f, a, key, klen);
  if (f->keyed && key) assert_int_equal(lr_auth_sign_open(a, &o), 0);
  a->key = KEY;
  a->key_len = f->keyed ? KEY_LEN : 0;
  size_t n = lr_encode_open(buf, 128, &o);
  assert_true(n > 0);
  if (cap) {
    memcpy(cap, buf, n);
    *caplen = n;
  }
  memcpy(buf + n, extra, strlen(extra));
  send_all(fd, buf, n + strlen(extra));
  if (!f->keyed) expect_preamble(fd, LR_STREAM_DATA);
  return fd;
}

static int start_data(fixture_t *f, uint8_t family, uint16_t port, const char *extra) {
  return start_data_key(f, family, port, extra, KEY, KEY_LEN, NULL, NULL, NULL);
}

/* OPEN_RESULT with code; with a key, an ok one must carry the agent's MAC. */
static void expect_open_result(fixture_t *f, int fd, lr_auth_ctx_t *a, uint32_t code) {
  lr_frame_t fr = read_frame(fd);
  assert_int_equal(fr.type, LR_MSG_OPEN_RESULT);
  lr_error_msg_t r;
  lr_auth_t auth;
  assert_int_equal(lr_decode_open_result(&fr, &r, &auth), LR_PROTO_OK);
  assert_int_equal(r.code, code);
  if (f->keyed && code == LR_OK) {
    assert_int_equal(auth.len, LR_AUTH_AGENT_LEN);
    if (a) assert_true(lr_auth_verify_result(a, LR_OK, &auth));
  }
  if (code == LR_ERR_AUTH) assert_int_equal(auth.len, 0); /* nothing proved, nothing signed */
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
    assert_false(f->port && l.port == f->port && l.family == 4); /* never itself */
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

static void expect_pong(int fd, uint64_t nonce) {
  uint8_t buf[32];
  send_all(fd, buf, lr_encode_ping(buf, sizeof buf, LR_MSG_PING, nonce));
  for (int i = 0; i < 1000; i++) {
    lr_frame_t fr = read_frame(fd);
    if (fr.type != LR_MSG_PONG) continue;
    uint64_t got;
    assert_int_equal(lr_decode_ping(&fr, &got), LR_PROTO_OK);
    assert_true(got == nonce);
    return;
  }
  fail_msg("no PONG");
}

static void expect_relaying_pair(int d, int srv) {
  uint8_t b[16];
  send_all(d, "ping", 4);
  assert_int_equal(recv_n(srv, b, 4), 4);
  assert_memory_equal(b, "ping", 4);
  send_all(srv, "pong", 4);
  assert_int_equal(recv_n(d, b, 4), 4);
  assert_memory_equal(b, "pong", 4);
}

/* ---- tests -------------------------------------------------------------- */

static void test_control_listing_changes_and_ping(void **state) {
  fixture_t *f = *state;
  uint16_t p1;
  int l1 = tcp_listen_any(AF_INET, &p1);
  lr_auth_ctx_t a;
  int c = start_control_key(f, KEY, KEY_LEN, &a, NULL, NULL);
  lr_hello_t w = expect_welcome(f, c, &a);
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
  send_all(c, buf, n);
  expect_pong(c, 0x1122334455667788ull);
  close(c);
  close(l2);
}

/* The listing names the owner of a listener (this very process), and the
 * agent walks /proc only for new listeners: one walk for the listing, then
 * at most one per report that added something, not one per scan (the
 * fixture scans every 20 ms; other programs' listeners on this host may
 * come and go meanwhile, which is why later walks are compared with the
 * additions seen, not with zero). */
static void test_owner_reported_once(void **state) {
  fixture_t *f = *state;
  uint16_t p1;
  int l1 = tcp_listen_any(AF_INET, &p1);
  lr_auth_ctx_t a;
  int c = start_control_key(f, KEY, KEY_LEN, &a, NULL, NULL);
  expect_welcome(f, c, &a);
  unsigned long adds = 0; /* after the listing */
  int owned = 0;
  for (int seen_pong = 0, sync = 0; !seen_pong;) {
    if (sync == 1) { /* after the listing: ten scans' time, then a PING to end the read */
      usleep(200 * 1000);
      uint8_t buf[32];
      send_all(c, buf, lr_encode_ping(buf, sizeof buf, LR_MSG_PING, 7));
      sync = 2;
    }
    lr_frame_t fr = read_frame(c);
    if (fr.type == LR_MSG_SYNC_DONE) sync = 1;
    if (fr.type == LR_MSG_PONG) seen_pong = 1;
    if (fr.type != LR_MSG_LISTENER_ADD) continue;
    adds += sync > 0;
    lr_listener_t l;
    lr_proc_owner_t o;
    assert_int_equal(lr_decode_listener_add(&fr, &l, &o), LR_PROTO_OK);
    if (l.port != p1) continue;
    assert_int_equal(o.pid, (uint32_t)getpid());
    if (!strstr(o.cmd, "test_guest_agent")) fail_msg("owner command: %s", o.cmd);
    owned = 1;
  }
  assert_true(owned);
  unsigned long walks = f->agent->scan.owner_walks;
  if (walks < 1 || walks > 1 + adds)
    fail_msg("%lu /proc walks for a listing and %lu additions", walks, adds);
  close(c);
  close(l1);
}

static void test_wrong_key_is_refused(void **state) {
  fixture_t *f = *state;
  int c = start_control_key(f, OTHER_KEY, OTHER_KEY_LEN, NULL, NULL, NULL);
  expect_error(c, LR_ERR_AUTH);
  expect_eof(c);
  close(c);
}

/* A host that cannot prove the key gets nothing: no WELCOME, no listener,
 * no connection to a guest server, whichever way it fails. */
static void test_unproved_host_gets_nothing(void **state) {
  fixture_t *f = *state;
  uint16_t port;
  int lsn = tcp_listen_any(AF_INET, &port); /* a guest server, and a listener to report */

  /* HELLO with no MAC at all under a flagged preamble. */
  int c = start_control_key(f, NULL, 0, NULL, NULL, NULL);
  expect_error(c, LR_ERR_AUTH);
  expect_eof(c);
  close(c);

  /* A host with no key: plain preamble and HELLO at once, as version 1
   * hosts did. The agent has challenged already; it refuses. */
  c = tcp_connect(f->port);
  uint8_t buf[256];
  lr_preamble_encode(buf, LR_STREAM_CONTROL);
  lr_hello_t h;
  memset(&h, 0, sizeof h);
  strcpy(h.name, "keyless");
  strcpy(h.version, "0");
  size_t n = LR_PREAMBLE_LEN + lr_encode_hello(buf + LR_PREAMBLE_LEN, 200, LR_MSG_HELLO, &h);
  send_all(c, buf, n);
  lr_auth_ctx_t a;
  read_challenge(c, &a);
  expect_error(c, LR_ERR_AUTH);
  expect_eof(c);
  close(c);

  /* OPEN with a MAC made with another key: refused, and nothing connects. */
  int d = start_data_key(f, 4, port, "early", OTHER_KEY, OTHER_KEY_LEN, NULL, NULL, NULL);
  expect_open_result(f, d, NULL, LR_ERR_AUTH);
  expect_eof(d);
  close(d);
  /* OPEN without a MAC. */
  d = start_data_key(f, 4, port, "", NULL, 0, NULL, NULL, NULL);
  expect_open_result(f, d, NULL, LR_ERR_AUTH);
  expect_eof(d);
  close(d);
  expect_no_connection(lsn);
  close(lsn);
}

/* Frames captured from a good session prove nothing on a new stream: the
 * agent's nonce differs every time. */
static void test_replayed_frames_refused(void **state) {
  fixture_t *f = *state;
  uint16_t port;
  int lsn = tcp_listen_any(AF_INET, &port);
  uint8_t open_cap[128], hello_cap[512];
  size_t open_len, hello_len;

  /* A real data stream, its OPEN captured; the agent's answer proves the
   * key back. */
  lr_auth_ctx_t a;
  int d = start_data_key(f, 4, port, "", KEY, KEY_LEN, &a, open_cap, &open_len);
  expect_open_result(f, d, &a, LR_OK);
  int srv = accept(lsn, NULL, NULL);
  assert_true(srv >= 0);
  set_timeout(srv);

  /* The same OPEN on a new data stream. */
  lr_auth_ctx_t b;
  int d2 = open_stream(f, LR_STREAM_DATA, &b);
  send_all(d2, open_cap, open_len);
  expect_open_result(f, d2, NULL, LR_ERR_AUTH);
  expect_eof(d2);
  close(d2);
  expect_no_connection(lsn);

  /* A real control stream's HELLO, replayed on a new one. */
  lr_auth_ctx_t ca;
  int c = start_control_key(f, KEY, KEY_LEN, &ca, hello_cap, &hello_len);
  expect_welcome(f, c, &ca);
  int c2 = open_stream(f, LR_STREAM_CONTROL, &b);
  send_all(c2, hello_cap, hello_len);
  expect_error(c2, LR_ERR_AUTH);
  expect_eof(c2);
  close(c2);

  /* The agent's own WELCOME, from the first stream, does not verify with
   * another stream's nonces either (the host side of the same rule). */
  lr_hello_t w;
  lr_auth_ctx_t other = ca;
  assert_int_equal(lr_auth_new_nonce(&other, LR_ROLE_HOST), 0);
  memset(&w, 0, sizeof w);
  strcpy(w.name, "test-guest");
  snprintf(w.version, sizeof w.version, "%s", "x");
  assert_int_equal(lr_auth_sign_hello(&ca, LR_ROLE_AGENT, LR_MSG_WELCOME, &w), 0);
  assert_true(lr_auth_verify_hello(&ca, LR_ROLE_AGENT, LR_MSG_WELCOME, &w));
  assert_false(lr_auth_verify_hello(&other, LR_ROLE_AGENT, LR_MSG_WELCOME, &w));

  expect_relaying_pair(d, srv);
  close(c);
  close(d);
  close(srv);
  close(lsn);
}

/* A second HELLO while the control stream is live is refused (BUSY) and
 * the live one keeps working; after CONTROL_LIVE_MS of silence from its
 * host, a new one takes over. */
static void test_second_hello_refused_while_live(void **state) {
  fixture_t *f = *state;
  lr_auth_ctx_t a;
  int c1 = start_control_key(f, KEY, KEY_LEN, &a, NULL, NULL);
  expect_welcome(f, c1, &a);
  read_listing(f, c1, 0);

  int c2 = start_control(f);
  expect_error(c2, LR_ERR_BUSY);
  expect_eof(c2);
  close(c2);
  expect_pong(c1, 7);

  usleep((CONTROL_LIVE_MS + 300) * 1000);
  int c3 = start_control(f);
  expect_welcome(f, c3, NULL);
  read_listing(f, c3, 0);
  expect_eof(c1); /* taken over */
  expect_pong(c3, 8);
  close(c1);
  close(c3);
}

static void test_data_stream_relays_both_ways(void **state) {
  fixture_t *f = *state;
  uint16_t port;
  int lsn = tcp_listen_any(AF_INET6, &port); /* dual-stack [::]: reachable as ::1 */
  /* Bytes sent in the same write as OPEN belong to the server. */
  lr_auth_ctx_t a;
  int d = start_data_key(f, 6, port, "early bytes", KEY, KEY_LEN, &a, NULL, NULL);
  int srv = accept(lsn, NULL, NULL);
  assert_true(srv >= 0);
  set_timeout(srv);
  expect_open_result(f, d, &a, LR_OK);

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
  lr_auth_ctx_t a;
  int d = start_data_key(f, 4, port, "", KEY, KEY_LEN, &a, NULL, NULL);
  expect_open_result(f, d, &a, LR_ERR_REFUSED);
  expect_eof(d);
  close(d);

  /* HELLO on a data stream is a protocol error. */
  d = open_stream(f, LR_STREAM_DATA, &a);
  uint8_t buf[128];
  lr_hello_t h;
  memset(&h, 0, sizeof h);
  size_t n = lr_encode_hello(buf, 100, LR_MSG_HELLO, &h);
  send_all(d, buf, n);
  if (!f->keyed) expect_preamble(d, LR_STREAM_DATA);
  expect_error(d, LR_ERR_PROTOCOL);
  expect_eof(d);
  close(d);
}

static void test_garbage_version_oversize_silence(void **state) {
  fixture_t *f = *state;
  uint8_t flags = f->keyed ? LR_PREAMBLE_KEYED : 0;
  /* Wrong magic: closed (after the challenge, with a key). */
  int d = tcp_connect(f->port);
  send_all(d, "GET / HTTP/1.1\r\n\r\n", 18);
  expect_eof(d);
  close(d);

  /* Another protocol version: our preamble, then ERROR(VERSION). */
  d = tcp_connect(f->port);
  uint8_t p[LR_PREAMBLE_LEN];
  lr_preamble_encode_flags(p, LR_STREAM_CONTROL, flags);
  p[4] = LR_PROTO_VERSION + 1;
  send_all(d, p, sizeof p);
  expect_agent_start(f, d, LR_STREAM_CONTROL, NULL);
  expect_error(d, LR_ERR_VERSION);
  expect_eof(d);
  close(d);

  /* A version-1 host: the same, and v1 hosts read the agent's version. */
  d = tcp_connect(f->port);
  lr_preamble_encode(p, LR_STREAM_DATA);
  p[4] = 1;
  send_all(d, p, sizeof p);
  {
    uint8_t q[LR_PREAMBLE_LEN];
    assert_int_equal(recv_n(d, q, sizeof q), sizeof q);
    assert_memory_equal(q, "LRLY", 4);
    assert_int_equal(q[4], LR_PROTO_VERSION);
  }
  expect_eof(d);
  close(d);

  /* A frame header announcing more than the maximum payload. */
  d = tcp_connect(f->port);
  uint8_t big[LR_PREAMBLE_LEN + LR_FRAME_HDR_LEN] = {0};
  lr_preamble_encode_flags(big, LR_STREAM_CONTROL, flags);
  big[LR_PREAMBLE_LEN + 1] = LR_MSG_HELLO;
  big[LR_PREAMBLE_LEN + 5] = 0x10; /* 1 MiB */
  send_all(d, big, sizeof big);
  expect_agent_start(f, d, LR_STREAM_CONTROL, NULL);
  expect_error(d, LR_ERR_PROTOCOL);
  expect_eof(d);
  close(d);

  /* A preamble without a stream kind is the agent's alone. */
  d = tcp_connect(f->port);
  lr_preamble_encode_flags(p, LR_STREAM_ANY, flags);
  send_all(d, p, sizeof p);
  expect_eof(d);
  close(d);

  /* Silence: closed after the handshake timeout. */
  struct timeval t0, t1;
  gettimeofday(&t0, NULL);
  d = tcp_connect(f->port);
  send_all(d, "LRL", 3);
  expect_eof(d);
  gettimeofday(&t1, NULL);
  long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_usec - t0.tv_usec) / 1000;
  assert_true(ms >= HANDSHAKE_MS - 50 && ms < HANDSHAKE_MS + 2500);
  close(d);

  /* None of that disturbed the agent: a control stream still works. */
  int c = start_control(f);
  expect_welcome(f, c, NULL);
  close(c);
}

/* After auth_fails_per_sec failures (1 here) new streams are admitted on
 * probation: the real host, which proves the key in its first request, is
 * still served (it used to be refused until the bucket refilled); a wrong
 * key is still refused; and at most 16 silent streams wait on probation, a
 * newcomer closing the oldest. */
static void test_failed_auth_rate_limited(void **state) {
  fixture_t *f = *state;
  for (int i = 0; i < 3; i++) {
    int c = start_control_key(f, OTHER_KEY, OTHER_KEY_LEN, NULL, NULL, NULL);
    expect_error(c, LR_ERR_AUTH);
    expect_eof(c);
    close(c);
  }
  int c = start_control(f); /* the bucket is empty: the key still gets in */
  expect_welcome(f, c, NULL);
  close(c);
  int idle[17];
  for (int i = 0; i < 17; i++) idle[i] = tcp_connect(f->port);
  uint8_t b[64];
  usleep(300 * 1000);
  /* The first silent stream was closed when the 17th came: EOF after its
   * challenge; the 17th still waits (its challenge, then nothing). */
  struct timeval tv = {2, 0};
  setsockopt(idle[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ssize_t n, total = 0;
  while ((n = recv(idle[0], b, sizeof b, 0)) > 0) total += n;
  assert_true(total > 0 && n == 0);
  tv.tv_sec = 0;
  tv.tv_usec = 300 * 1000;
  setsockopt(idle[16], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  assert_true(recv(idle[16], b, sizeof b, 0) > 0);
  assert_true(recv(idle[16], b, sizeof b, 0) < 0); /* still open, nothing more */
  for (int i = 0; i < 17; i++) close(idle[i]);
  c = start_control(f);
  expect_welcome(f, c, NULL);
  close(c);
}

/* Without a key nothing changes: the host's preamble and HELLO go in one
 * write and the agent answers with its preamble and WELCOME (no challenge,
 * no round trip added); a host that has a key is told this agent has none. */
static void test_no_key_no_challenge(void **state) {
  fixture_t *f = *state;
  assert_false(f->keyed);
  int c = start_control(f);
  expect_welcome(f, c, NULL);
  read_listing(f, c, 0);
  close(c);

  uint16_t port;
  int lsn = tcp_listen_any(AF_INET, &port);
  int d = start_data(f, 4, port, "x");
  expect_open_result(f, d, NULL, LR_OK);
  int srv = accept(lsn, NULL, NULL);
  assert_true(srv >= 0);
  close(srv);
  close(d);
  close(lsn);

  d = tcp_connect(f->port);
  uint8_t p[LR_PREAMBLE_LEN];
  lr_preamble_encode_flags(p, LR_STREAM_CONTROL, LR_PREAMBLE_KEYED);
  send_all(d, p, sizeof p);
  expect_preamble(d, LR_STREAM_CONTROL);
  expect_error(d, LR_ERR_AUTH);
  expect_eof(d);
  close(d);
}

/* 1: the peer was closed before it heard a byte; 0: it got the agent's
 * preamble; 2: anything else. For a forked child that changed its uid. */
static int try_unix_handshake(const char *path) {
  int fd = unix_connect(path);
  if (fd < 0) return 2;
  uint8_t buf[128];
  lr_preamble_encode(buf, LR_STREAM_CONTROL);
  lr_hello_t h;
  memset(&h, 0, sizeof h);
  size_t n = LR_PREAMBLE_LEN + lr_encode_hello(buf + LR_PREAMBLE_LEN, 100, LR_MSG_HELLO, &h);
  if (send(fd, buf, n, MSG_NOSIGNAL) != (ssize_t)n) {
    close(fd);
    return errno == EPIPE || errno == ECONNRESET ? 1 : 2;
  }
  ssize_t r = recv(fd, buf, LR_PREAMBLE_LEN, MSG_WAITALL);
  close(fd);
  if (r <= 0) return r == 0 || errno == ECONNRESET ? 1 : 2;
  return r == LR_PREAMBLE_LEN && memcmp(buf, "LRLY", 4) == 0 ? 0 : 2;
}

/* Runs try_unix_handshake as uid 65534 (nobody) in a child: this binary
 * again (main's "--handshake PATH"), so that the child is a fresh process.
 * A child that only forked would inherit the agent's loop thread's
 * allocations without the thread, and under valgrind its exit would report
 * them as leaked whenever the fork caught that thread mid-scan. */
/* This binary, from main's argv[0]: under valgrind /proc/self/exe is valgrind. */
static char self_path[4096];

static int handshake_as_nobody(const char *path) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
    char *const argv[] = {(char *)"test_guest_agent", (char *)"--handshake", (char *)path, NULL};
    execv(self_path, argv);
    _exit(4);
  }
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  return WEXITSTATUS(st);
}

/* The Unix socket is 0600 whatever the umask; a peer whose uid is neither
 * root nor the agent's is closed at once (the socket is opened up here so
 * that the credential check is what refuses it). */
static void test_unix_peer_uid_refused(void **state) {
  fixture_t *f = *state;
  struct stat st;
  assert_int_equal(stat(f->path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  if (geteuid() != 0) LR_SKIP_OR_FAIL("changing a child's uid needs root");
  int c = start_control(f); /* root may */
  expect_welcome(f, c, NULL);
  close(c);
  assert_int_equal(chmod(f->path, 0666), 0);
  assert_int_equal(handshake_as_nobody(f->path), 1);
  c = start_control(f);
  expect_welcome(f, c, NULL);
  close(c);
}

/* --allow-uid lets that uid in. */
static void test_unix_peer_uid_allowed(void **state) {
  fixture_t *f = *state;
  if (geteuid() != 0) LR_SKIP_OR_FAIL("changing a child's uid needs root");
  assert_int_equal(chmod(f->path, 0666), 0);
  assert_int_equal(handshake_as_nobody(f->path), 0);
}

/* Reverse streams: ATTACH must prove the key too, bound to the id. */
static void test_attach_needs_the_key(void **state) {
  fixture_t *f = *state;
  uint16_t port;
  close(tcp_listen_any(AF_INET, &port)); /* a port nobody holds */
  lr_auth_ctx_t a;
  int c = start_control_key(f, KEY, KEY_LEN, &a, NULL, NULL);
  expect_welcome(f, c, &a);
  read_listing(f, c, 0);
  uint8_t buf[128];
  lr_reverse_set_t *rs = calloc(1, sizeof *rs);
  assert_non_null(rs);
  rs->n = 1;
  rs->ports[0] = port;
  send_all(c, buf, lr_encode_reverse_set(buf, sizeof buf, rs));
  free(rs);

  /* A guest client of the published port: the agent asks for a stream. */
  int gc = -1;
  for (int i = 0; i < 300 && gc < 0; i++) {
    gc = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(gc, (struct sockaddr *)&sin, sizeof sin) != 0) {
      close(gc);
      gc = -1;
      usleep(10000);
    }
  }
  assert_true(gc >= 0);
  set_timeout(gc);
  lr_reverse_open_t ro;
  for (;;) {
    lr_frame_t fr = read_frame(c);
    if (fr.type != LR_MSG_REVERSE_OPEN) continue;
    assert_int_equal(lr_decode_reverse_open(&fr, &ro), LR_PROTO_OK);
    break;
  }

  /* ATTACH with a MAC made with another key: refused. */
  lr_auth_ctx_t r;
  int s = open_stream(f, LR_STREAM_REVERSE, &r);
  lr_attach_t at = {.id = ro.id};
  r.key = OTHER_KEY;
  r.key_len = OTHER_KEY_LEN;
  assert_int_equal(lr_auth_new_nonce(&r, LR_ROLE_HOST), 0);
  assert_int_equal(lr_auth_sign_attach(&r, &at), 0);
  size_t n = lr_encode_attach(buf, sizeof buf, &at);
  assert_true(n > 0);
  send_all(s, buf, n);
  expect_open_result(f, s, NULL, LR_ERR_AUTH);
  expect_eof(s);
  close(s);

  /* The right key: the waiting client is relayed, and OPEN_RESULT proves
   * the agent's key over this stream's nonces. */
  s = open_stream(f, LR_STREAM_REVERSE, &r);
  memset(&at, 0, sizeof at);
  at.id = ro.id;
  assert_int_equal(lr_auth_new_nonce(&r, LR_ROLE_HOST), 0);
  assert_int_equal(lr_auth_sign_attach(&r, &at), 0);
  send_all(s, buf, lr_encode_attach(buf, sizeof buf, &at));
  expect_open_result(f, s, &r, LR_OK);
  expect_relaying_pair(gc, s);
  close(s);
  close(gc);
  close(c);
}

/* Keys shorter than 16 bytes are refused at start-up, by the agent and by
 * the token-file loader both programs use. */
static void test_short_key_refused(void **state) {
  (void)state;
  uv_loop_t loop;
  char err[256] = "";
  assert_int_equal(uv_loop_init(&loop), 0);
  static const uint8_t k15[] = "0123456789abcde";
  lr_agent_opts_t o = {.name = "x", .token = k15, .token_len = sizeof k15 - 1};
  assert_null(lr_agent_new(&loop, &o, err, sizeof err));
  assert_non_null(strstr(err, "at least 16"));
  assert_int_equal(uv_loop_close(&loop), 0);

  char path[64];
  snprintf(path, sizeof path, "/tmp/lr-token-test-%d", (int)getpid());
  uint8_t tok[LR_TOKEN_MAX];
  size_t len = 0;
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs("0123456789abcde\n", fp); /* 15 bytes and a newline */
  fclose(fp);
  assert_int_equal(lr_token_load_file(path, tok, &len, err, sizeof err), -1);
  assert_non_null(strstr(err, "at least 16"));
  assert_null(strchr(err, '\n'));
  fp = fopen(path, "w");
  assert_non_null(fp);
  fputs("  0123456789abcdef\r\n", fp);
  fclose(fp);
  assert_int_equal(lr_token_load_file(path, tok, &len, err, sizeof err), 0);
  assert_int_equal(len, 16);
  assert_memory_equal(tok, "0123456789abcdef", 16);
  unlink(path);
}

/* Weak keys and exposed key files are refused by the loader both programs
 * use, each with the file's name and the fix. */
static void test_weak_key_files_refused(void **state) {
  (void)state;
  char path[64], err[512];
  uint8_t tok[LR_TOKEN_MAX];
  size_t len = 0;
  snprintf(path, sizeof path, "/tmp/lr-weak-key-%d", (int)getpid());
  static const struct {
    const char *data;
    size_t n;
    const char *why;
  } weak[] = {
      {"aaaaaaaaaaaaaaaa\n", 17, "only 1 distinct"},
      {"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16, "only 1 distinct"},
      {"abcdefgabcdefgabcdefg", 21, "only 7 distinct"},
      {"0123456789abcdef0123456789abcdef", 32, "16-byte pattern repeated"},
      {"0123456789abcdefXY0123456789abcdefXY", 36, "18-byte pattern repeated"},
  };
  for (size_t i = 0; i < sizeof weak / sizeof weak[0]; i++) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fwrite(weak[i].data, 1, weak[i].n, fp);
    fclose(fp);
    assert_int_equal(lr_token_load_file(path, tok, &len, err, sizeof err), -1);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, weak[i].why));
  }
  /* Owner and mode, with the check the programs install. */
  lr_file_secret_check = lr_linux_secret_check;
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  fputs("q8Vd0fK2nL5xZr7PbT1mWc4yHs9jGe3A\n", fp);
  fclose(fp);
  assert_int_equal(chmod(path, 0640), 0);
  assert_int_equal(lr_token_load_file(path, tok, &len, err, sizeof err), -1);
  assert_non_null(strstr(err, "mode 0640"));
  assert_non_null(strstr(err, "chmod 600"));
  assert_int_equal(chmod(path, 0600), 0);
  assert_int_equal(lr_token_load_file(path, tok, &len, err, sizeof err), 0);
  assert_int_equal(len, 32);
  if (geteuid() == 0) {
    assert_int_equal(chown(path, 65534, (gid_t)-1), 0);
    assert_int_equal(lr_token_load_file(path, tok, &len, err, sizeof err), -1);
    assert_non_null(strstr(err, "belongs to uid 65534"));
  }
  lr_file_secret_check = NULL;
  unlink(path);
}

/* The guest's handshake crypto (platform/linux: libcrypto, getrandom). */
static void test_guest_pal_crypto(void **state) {
  (void)state;
  lr_test_pal_crypto(&lr_guest_pal);
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
  set_timeout(*srv);
  expect_open_result(f, d, NULL, LR_OK);
  return d;
}

static int start_control_welcomed(fixture_t *f) {
  lr_auth_ctx_t a;
  int c = start_control_key(f, KEY, KEY_LEN, &a, NULL, NULL);
  expect_welcome(f, c, &a);
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
  expect_relaying_pair(d, srv);
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
  expect_relaying_pair(d, srv);
  c = start_control_welcomed(f);
  close(c);
  close(d);
  close(srv);
  close(lsn);
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--handshake") == 0) /* handshake_as_nobody's child */
    return try_unix_handshake(argv[2]);
  if (!realpath(argv[0], self_path)) snprintf(self_path, sizeof self_path, "%s", argv[0]);
  signal(SIGPIPE, SIG_IGN); /* the agent in this process writes to closed sockets */
  const struct CMUnitTest tests[] = {
      /* with the shared key, over tcp */
      cmocka_unit_test_setup_teardown(test_control_listing_changes_and_ping, setup, teardown),
      cmocka_unit_test_setup_teardown(test_owner_reported_once, setup, teardown),
      cmocka_unit_test_setup_teardown(test_wrong_key_is_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unproved_host_gets_nothing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_replayed_frames_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_second_hello_refused_while_live, setup, teardown),
      cmocka_unit_test_setup_teardown(test_data_stream_relays_both_ways, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refused_and_bad_open, setup, teardown),
      cmocka_unit_test_setup_teardown(test_garbage_version_oversize_silence, setup, teardown),
      cmocka_unit_test_setup_teardown(test_malformed_ping_closes_control, setup, teardown),
      cmocka_unit_test_setup_teardown(test_malformed_reverse_set_closes_control, setup, teardown),
      cmocka_unit_test_setup_teardown(test_attach_needs_the_key, setup, teardown),
      cmocka_unit_test_setup_teardown(test_failed_auth_rate_limited, setup_ratelimit, teardown),
      /* without a key */
      cmocka_unit_test_setup_teardown(test_no_key_no_challenge, setup_nokey, teardown),
      cmocka_unit_test_setup_teardown(test_data_stream_relays_both_ways, setup_nokey, teardown),
      cmocka_unit_test_setup_teardown(test_refused_and_bad_open, setup_nokey, teardown),
      cmocka_unit_test_setup_teardown(test_garbage_version_oversize_silence, setup_nokey,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_second_hello_refused_while_live, setup_nokey,
                                      teardown),
      /* unix transport: the socket's mode and the peer's uid */
      cmocka_unit_test_setup_teardown(test_unix_peer_uid_refused, setup_unix, teardown),
      cmocka_unit_test_setup_teardown(test_unix_peer_uid_allowed, setup_unix_allow, teardown),
      /* start-up and the platform layer */
      cmocka_unit_test(test_short_key_refused),
      cmocka_unit_test(test_weak_key_files_refused),
      cmocka_unit_test(test_guest_pal_crypto),
  };
  return lr_test_exit_code(cmocka_run_group_tests(tests, NULL, NULL));
}
