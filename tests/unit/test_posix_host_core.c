/* The host core (lr_host and its rooms, lr_transport, lr_relay) in one
 * process: a real lr_host_t on a libuv loop, a fake lr_host_pal_t that counts
 * what the core asks of the platform, and a scripted fake agent on a Unix
 * socket in the same loop. Clients are plain sockets of the test.
 *
 * The test first moves into a network namespace of its own (so stand-in
 * ports never meet another process's, and a loopback that is still down
 * gives the synchronous "network is unreachable" connect failure), then
 * brings that loopback up for the rest. Linux only for that reason; the
 * code under test is the portable core.
 *
 * Ownership bugs show up as invalid reads under the valgrind twin of this
 * binary (libuv is not instrumented, so ASan misses accesses inside it):
 * each test ends with a full shutdown, a loop with no handles left, and
 * uv_loop_close() == 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>
#include <uv.h>

#include "lr_auth.h"
#include "lr_config.h"
#include "lr_host.h"
#include "lr_log.h"
#include "lr_net.h"
#include "lr_host_pal.h"
#include "lr_posix.h"
#include "lr_proto.h"
#include "lr_relay.h"
#include "lr_rxbuf.h"
#include "lr_sbuf.h"
#include "lr_testutil.h"
#include "lr_testutil_linux.h"
#include "lr_transport.h"

/* ---- fake platform layer ---------------------------------------------------- */

static struct {
  int listens, busy_port, sock_closes, vm_calls;
  int listened_on[65536]; /* binds asked for, per port */
  int vm_mode; /* 0: refuse, 1: hand back a socket libuv cannot open, 2: answer late,
                * 3: answer in time while the loop is held past the deadline */
  /* Mode 3, written by the worker thread: when it entered, the socket it
   * returns, and that it is about to return. */
  _Atomic uint64_t vm_entered_ns;
  _Atomic int vm_late_fd, vm_returning;
} fake;

static int fake_listen(uv_loop_t *loop, uv_tcp_t *h, const struct sockaddr *sa, int backlog,
                       uv_connection_cb cb, uv_close_cb on_fail) {
  fake.listens++;
  fake.listened_on[ntohs(((const struct sockaddr_in *)sa)->sin_port)]++;
  if (fake.busy_port && ntohs(((const struct sockaddr_in *)sa)->sin_port) == fake.busy_port) {
    uv_tcp_init(loop, h);
    uv_close((uv_handle_t *)h, on_fail);
    return UV_EADDRINUSE;
  }
  return lr_pal_posix.listen_loopback(loop, h, sa, backlog, cb, on_fail);
}

static void fake_sock_close(uv_os_sock_t s) {
  fake.sock_closes++;
  if (s >= 0) close(s);
}

static int fake_vmsock_connect(const lr_taddr_t *a, uv_os_sock_t *out, char *err, size_t len) {
  (void)a;
  fake.vm_calls++;
  if (fake.vm_mode == 1) {
    /* A descriptor libuv refuses (none is open under that number):
     * uv_tcp_open fails and the core must hand it to sock_close. */
    *out = 1000000;
    return 0;
  }
  if (fake.vm_mode == 2) {
    /* Connects after the core's 5 s bound: the late socket is nobody's and
     * must be closed, not leaked. */
    usleep((LR_TRANSPORT_TIMEOUT_MS + 700) * 1000);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return UV_EIO;
    close(sv[1]);
    *out = sv[0];
    return 0;
  }
  if (fake.vm_mode == 3) {
    /* Connects within the bound, but the test holds the loop until the
     * deadline has passed too (test_vmsock_answer_at_deadline_not_leaked). */
    fake.vm_entered_ns = uv_hrtime();
    usleep((LR_TRANSPORT_TIMEOUT_MS - 500) * 1000);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return UV_EIO;
    close(sv[1]);
    *out = sv[0];
    fake.vm_late_fd = sv[0];
    fake.vm_returning = 1;
    return 0;
  }
  snprintf(err, len, "fake: no such VM");
  return UV_ECONNREFUSED;
}

static lr_host_pal_t fake_pal;

static void fake_pal_init(void) {
  memset(&fake, 0, sizeof fake);
  fake_pal = lr_pal_posix;
  fake_pal.base.name = "fake";
  fake_pal.listen_loopback = fake_listen;
  fake_pal.base.sock_close = fake_sock_close;
  /* VM connects go to the blocking fake (on a thread of the attempt's own),
   * never to the platform's real AF_VSOCK. */
  fake_pal.vmsock_connect_start = NULL;
  fake_pal.vmsock_connect_result = NULL;
  fake_pal.vmsock_connect = fake_vmsock_connect;
}

/* ---- fake agent ---------------------------------------------------------------- */

enum {
  AG_NORMAL,          /* WELCOME, listeners, OPEN_RESULT ok, echo */
  AG_CLOSE_ON_HELLO,  /* closes the control stream as soon as HELLO arrives */
  AG_NO_READ,         /* data streams: OPEN_RESULT ok, then never read again */
  AG_FLOOD_NO_READ,   /* after the listing: floods PINGs and never reads again */
  AG_HOLD_ATTACH,     /* reverse streams: read ATTACH, never answer */
  AG_KEYED,           /* AG_NORMAL with a shared key: CHALLENGE first, MACs checked */
  AG_BAD_WELCOME_MAC, /* keyed: WELCOME's MAC made with another key */
  AG_BAD_RESULT_MAC,  /* keyed: OPEN_RESULT's MAC made with another key */
  AG_FD_FLOOD,        /* hostile: after the listing, descriptors on the control stream */
  AG_HOLD_OPEN,       /* data streams: read OPEN, never answer */
};

/* The shared key of the keyed tests, and a key the host does not have. */
static const uint8_t KEY[] = "0123456789abcdef";
static const uint8_t OTHER_KEY[] = "fedcba9876543210";
#define KEY_LEN (sizeof KEY - 1)

typedef struct agent_s agent_t;

typedef struct astream_s {
  uv_pipe_t pipe;
  agent_t *ag;
  lr_rxbuf_t rx;
  int got_preamble, kind, relaying;
  lr_auth_ctx_t auth; /* keyed agents: this stream's nonces */
  uint32_t stream_id; /* what OPEN named it (close notices) */
  uint64_t echoed;    /* relayed bytes written back to the host */
  int fin_sent;       /* the test sent our FIN notice: echo nothing more */
  int eof;            /* the host shut the data stream down */
  struct astream_s *next;
} astream_t;

struct agent_s {
  uv_loop_t *loop;
  uv_pipe_t server;
  char path[108];
  int mode;
  lr_listener_t listeners[4];
  int nlisteners;
  int controls, hellos, opens, attaches, rev_fails;
  int passes; /* AG_FD_FLOOD: descriptors sent */
  int keyed;           /* speaks first with CHALLENGE and checks the host's MACs */
  int bad_macs;        /* host MACs that did not verify */
  size_t relayed;      /* bytes the echo relays received */
  int info; /* > 0: sends AGENT_INFO{detection = info - 1} after WELCOME */
  int close_notices;  /* says so in WELCOME (caps) */
  lr_stream_close_t notices[4]; /* STREAM_CLOSE frames from the host */
  int nnotices;
  astream_t *control; /* the live control stream */
  astream_t *streams;
};

static void as_closed(uv_handle_t *h) {
  astream_t *s = h->data;
  for (astream_t **pp = &s->ag->streams; *pp; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  if (s->ag->control == s) s->ag->control = NULL;
  free(s);
}

static void as_close(astream_t *s) {
  if (!uv_is_closing((uv_handle_t *)&s->pipe)) uv_close((uv_handle_t *)&s->pipe, as_closed);
}

static void as_send(astream_t *s, const void *buf, size_t len) {
  assert_int_equal(lr_write_copy((uv_stream_t *)&s->pipe, buf, len), 0);
}

static void as_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  astream_t *s = h->data;
  static char relay_buf[65536];
  size_t avail = 0;
  (void)sz;
  if (s->relaying) {
    buf->base = relay_buf;
    buf->len = sizeof relay_buf;
    return;
  }
  buf->base = (char *)lr_rxbuf_space(&s->rx, &avail);
  buf->len = avail;
}

static void agent_send_listing(astream_t *s) {
  uint8_t f[64];
  for (int i = 0; i < s->ag->nlisteners; i++)
    as_send(s, f, lr_encode_listener(f, sizeof f, LR_MSG_LISTENER_ADD, &s->ag->listeners[i]));
  as_send(s, f, lr_encode_empty(f, sizeof f, LR_MSG_SYNC_DONE));
}

/* A keyed agent's MAC on its reply, made with the wrong key when mode says
 * so: the host must not believe such an agent. */
static lr_auth_ctx_t as_signer(astream_t *s, int bad) {
  lr_auth_ctx_t a = s->auth;
  if (bad) a.key = OTHER_KEY;
  return a;
}

/* AG_FD_FLOOD: a PING, one byte per sendmsg, each byte carrying 64
 * descriptors (copies of one /dev/null), as the audit's hostile namespace
 * agent did with OPEN_RESULT. The host must close them all and drop the
 * stream; the agent's own copies are closed by the kernel's send. */
static void agent_fd_flood(astream_t *s) {
  uint8_t ping[32];
  size_t n = lr_encode_ping(ping, sizeof ping, LR_MSG_PING, 7);
  uv_os_fd_t sock;
  assert_int_equal(uv_fileno((uv_handle_t *)&s->pipe, &sock), 0);
  int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
  assert_true(null >= 0);
  int fds[64];
  for (int i = 0; i < 64; i++) fds[i] = null;
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof fds)];
  } u;
  for (size_t i = 0; i < n; i++) {
    struct iovec iov = {ping + i, 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                       .msg_controllen = sizeof u.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    if (sendmsg(sock, &m, MSG_NOSIGNAL) == 1) s->ag->passes += 64;
  }
  close(null);
}

static void as_frame(astream_t *s, const lr_frame_t *f) {
  agent_t *ag = s->ag;
  uint8_t out[LR_PREAMBLE_LEN + 600];
  size_t pre = ag->keyed ? 0 : LR_PREAMBLE_LEN; /* keyed: the preamble went out at accept */
  if (f->type == LR_MSG_HELLO) {
    ag->hellos++;
    if (ag->mode == AG_CLOSE_ON_HELLO) {
      as_close(s);
      return;
    }
    lr_hello_t h, w;
    assert_int_equal(lr_decode_hello(f, &h), LR_PROTO_OK);
    if (ag->keyed && !lr_auth_verify_hello(&s->auth, LR_ROLE_HOST, LR_MSG_HELLO, &h)) {
      ag->bad_macs++;
      as_close(s);
      return;
    }
    memset(&w, 0, sizeof w);
    snprintf(w.name, sizeof w.name, "fake-agent");
    snprintf(w.version, sizeof w.version, "test");
    if (ag->close_notices) w.caps = LR_CAP_CLOSE_NOTICE;
    if (ag->keyed) {
      lr_auth_ctx_t a = as_signer(s, ag->mode == AG_BAD_WELCOME_MAC);
      assert_int_equal(lr_auth_sign_hello(&a, LR_ROLE_AGENT, LR_MSG_WELCOME, &w), 0);
    }
    lr_preamble_encode(out, LR_STREAM_CONTROL);
    size_t n = lr_encode_hello(out + pre, sizeof out - pre, LR_MSG_WELCOME, &w);
    as_send(s, out, pre + n);
    ag->control = s;
    if (ag->info > 0) {
      lr_agent_info_t ai = {(uint8_t)(ag->info - 1)};
      as_send(s, out, lr_encode_agent_info(out, sizeof out, &ai));
    }
    agent_send_listing(s);
    if (ag->mode == AG_FD_FLOOD) agent_fd_flood(s);
    if (ag->mode == AG_FLOOD_NO_READ) {
      /* 300 000 PINGs (4.8 MB): far more answers than the host may queue. */
      enum { N = 300000 };
      size_t one = lr_encode_ping(out, sizeof out, LR_MSG_PING, 1);
      uint8_t *flood = malloc(N * one);
      assert_non_null(flood);
      for (size_t i = 0; i < N; i++) memcpy(flood + i * one, out, one);
      as_send(s, flood, N * one);
      free(flood);
      uv_read_stop((uv_stream_t *)&s->pipe);
    }
  } else if (f->type == LR_MSG_OPEN) {
    ag->opens++;
    if (ag->mode == AG_HOLD_OPEN) return;
    lr_open_t o;
    lr_auth_t auth = {0};
    assert_int_equal(lr_decode_open(f, &o), LR_PROTO_OK);
    s->stream_id = o.stream_id;
    if (ag->keyed) {
      if (!lr_auth_verify_open(&s->auth, &o)) {
        ag->bad_macs++;
        as_close(s);
        return;
      }
      lr_auth_ctx_t a = as_signer(s, ag->mode == AG_BAD_RESULT_MAC);
      assert_int_equal(lr_auth_sign_result(&a, LR_OK, &auth), 0);
    }
    lr_preamble_encode(out, LR_STREAM_DATA);
    size_t n = lr_encode_open_result(out + pre, sizeof out - pre, LR_OK, "", &auth);
    as_send(s, out, pre + n);
    s->relaying = 1;
    if (ag->mode == AG_NO_READ) uv_read_stop((uv_stream_t *)&s->pipe);
  } else if (f->type == LR_MSG_ATTACH) {
    ag->attaches++; /* AG_HOLD_ATTACH: the guest client "waits" forever */
    if (ag->mode != AG_HOLD_ATTACH) { /* attached: an echo "guest client" */
      lr_auth_t auth = {0};
      lr_preamble_encode(out, LR_STREAM_REVERSE);
      size_t n = lr_encode_open_result(out + pre, sizeof out - pre, LR_OK, "", &auth);
      as_send(s, out, pre + n);
      s->relaying = 1;
    }
  } else if (f->type == LR_MSG_REVERSE_FAIL) {
    ag->rev_fails++;
  } else if (f->type == LR_MSG_STREAM_CLOSE) {
    lr_stream_close_t m;
    assert_int_equal(lr_decode_stream_close(f, &m), LR_PROTO_OK);
    if (ag->nnotices < 4) ag->notices[ag->nnotices] = m;
    ag->nnotices++;
  } else if (f->type == LR_MSG_PING) {
    uint64_t nonce;
    if (lr_decode_ping(f, &nonce) == LR_PROTO_OK)
      as_send(s, out, lr_encode_ping(out, sizeof out, LR_MSG_PONG, nonce));
  }
}

static void as_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  astream_t *s = st->data;
  if (n == UV_EOF && s->relaying && s->stream_id) {
    s->eof = 1; /* a relay with close notices: keep the stream until the host closes */
    return;
  }
  if (n < 0) {
    as_close(s);
    return;
  }
  if (s->relaying) { /* echo server */
    s->ag->relayed += (size_t)n;
    if (n > 0 && !s->fin_sent) {
      as_send(s, buf->base, (size_t)n);
      s->echoed += (uint64_t)n;
    }
    return;
  }
  lr_rxbuf_commit(&s->rx, (size_t)n);
  if (!s->got_preamble) {
    lr_preamble_t p;
    if (lr_rxbuf_preamble(&s->rx, &p) != LR_PROTO_OK) return;
    s->got_preamble = 1;
    s->kind = p.kind;
    s->auth.kind = p.kind;
    assert_int_equal(!!(p.flags & LR_PREAMBLE_KEYED), s->ag->keyed);
    if (p.kind == LR_STREAM_CONTROL) s->ag->controls++;
  }
  lr_frame_t f;
  while (!s->relaying && !uv_is_closing((uv_handle_t *)&s->pipe) &&
         lr_rxbuf_frame(&s->rx, &f) == LR_PROTO_OK)
    as_frame(s, &f);
  if (s->relaying && !uv_is_closing((uv_handle_t *)&s->pipe)) {
    size_t rest;
    const uint8_t *r = lr_rxbuf_rest(&s->rx, &rest);
    if (rest) as_send(s, r, rest);
  }
}

static void agent_on_conn(uv_stream_t *server, int status) {
  agent_t *ag = server->data;
  assert_int_equal(status, 0);
  astream_t *s = calloc(1, sizeof *s);
  assert_non_null(s);
  s->ag = ag;
  lr_rxbuf_init(&s->rx);
  uv_pipe_init(ag->loop, &s->pipe, 1); /* IPC: it may pass a socket */
  s->pipe.data = s;
  s->next = ag->streams;
  ag->streams = s;
  assert_int_equal(uv_accept(server, (uv_stream_t *)&s->pipe), 0);
  if (ag->keyed) {
    /* The agent speaks first: its preamble and a fresh nonce. */
    uint8_t out[LR_PREAMBLE_LEN + LR_FRAME_HDR_LEN + LR_NONCE_LEN];
    lr_auth_init(&s->auth, &lr_pal_posix.base, KEY, KEY_LEN, LR_STREAM_ANY);
    assert_int_equal(lr_auth_new_nonce(&s->auth, LR_ROLE_AGENT), 0);
    lr_preamble_encode_flags(out, LR_STREAM_ANY, LR_PREAMBLE_KEYED);
    size_t n = lr_encode_challenge(out + LR_PREAMBLE_LEN, sizeof out - LR_PREAMBLE_LEN,
                                   s->auth.agent_nonce);
    as_send(s, out, LR_PREAMBLE_LEN + n);
  }
  uv_read_start((uv_stream_t *)&s->pipe, as_alloc, as_read);
}

static void agent_start(agent_t *ag, uv_loop_t *loop, int mode) {
  static int seq;
  memset(ag, 0, sizeof *ag);
  ag->loop = loop;
  ag->mode = mode;
  ag->keyed = mode == AG_KEYED || mode == AG_BAD_WELCOME_MAC || mode == AG_BAD_RESULT_MAC;
  snprintf(ag->path, sizeof ag->path, "/tmp/lr-hostcore-%d-%d.sock", (int)getpid(), seq++);
  unlink(ag->path);
  assert_int_equal(uv_pipe_init(loop, &ag->server, 0), 0);
  ag->server.data = ag;
  assert_int_equal(uv_pipe_bind(&ag->server, ag->path), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&ag->server, 64, agent_on_conn), 0);
}

static void agent_stop(agent_t *ag) {
  if (!ag->loop) return; /* never started */
  if (!uv_is_closing((uv_handle_t *)&ag->server)) uv_close((uv_handle_t *)&ag->server, NULL);
  for (astream_t *s = ag->streams; s; s = s->next) as_close(s);
  unlink(ag->path);
}

/* ---- harness ---------------------------------------------------------------------- */

typedef struct {
  uv_loop_t loop;
  lr_config_t cfg;
  lr_host_t *host;
  agent_t agent;
  int done;       /* times the shutdown's done callback ran (once, always) */
  int shut;       /* lr_host_shutdown was called (by the test's hook) */
  int free_in_done; /* the done callback frees the host itself */
  char netns[64]; /* one hop: the guest's namespace (nsguest_t), or "" */
  /* The test hook (lr_host_set_test_hook): at the first callback named
   * hook_point, remove guest "g" or shut the host down. */
  const char *hook_point;
  int hook_shutdown, hook_fired;
} fx_t;

static fx_t *fx_new(void) {
  fx_t *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  lr_config_defaults(&f->cfg);
  f->cfg.conflict_retry_ms = 100;
  f->cfg.conflict_grace_s = 0; /* the grace has its own e2e test (hostile_port_grace) */
  fake_pal_init();
  return f;
}

static void on_done(void *data) {
  fx_t *f = data;
  f->done++;
  if (f->free_in_done) { /* a caller may free the host in done */
    lr_host_free(f->host);
    f->host = NULL;
  }
}

static void fx_hook(lr_host_t *h, const char *point, void *data) {
  fx_t *f = data;
  if (!f->hook_point || f->hook_fired || strcmp(point, f->hook_point) != 0) return;
  f->hook_fired = 1;
  if (f->hook_shutdown) {
    f->shut = 1;
    lr_host_shutdown(h, on_done, f);
  } else {
    lr_guest_t *g = lr_host_find_guest(h, "g");
    if (g) lr_host_remove_guest(g);
  }
}

/* A host with one guest "g" at transport; with the shared key KEY when the
 * fake agent is keyed or the transport is tcp: (which requires one). */
static void fx_host(fx_t *f, const char *transport) {
  char err[256];
  int keyed = f->agent.keyed || strncmp(transport, "tcp:", 4) == 0;
  f->host = lr_host_new(&f->loop, &fake_pal, &f->cfg);
  assert_non_null(f->host);
  lr_host_set_test_hook(f->host, fx_hook, f);
  lr_guest_opts_t o = {.name = "g", .transport = transport, .token = keyed ? KEY : NULL,
                       .token_len = keyed ? KEY_LEN : 0, .one_hop_netns = f->netns[0] ? f->netns : NULL};
  if (lr_host_add_guest(f->host, &o, err, sizeof err) != 0) fail_msg("add_guest: %s", err);
}

/* A host whose one guest is the fake agent f->agent. */
static void fx_host_agent(fx_t *f) {
  char t[160];
  snprintf(t, sizeof t, "unix:%s", f->agent.path);
  fx_host(f, t);
}

static void pump(fx_t *f, unsigned ms) {
  uint64_t end = uv_now(&f->loop) + ms;
  while (uv_now(&f->loop) < end) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    usleep(1000);
    uv_update_time(&f->loop);
  }
}

/* Pumps until the status JSON contains want (or fails after ms). */
static void pump_until_status(fx_t *f, const char *want, unsigned ms) {
  uint64_t end = uv_now(&f->loop) + ms;
  for (;;) {
    lr_sbuf_t s;
    lr_sbuf_init(&s);
    lr_host_status_json(f->host, &s);
    int hit = s.p && strstr(s.p, want) != NULL;
    if (!hit && uv_now(&f->loop) >= end) fail_msg("status never showed '%s':\n%s", want, s.p);
    lr_sbuf_free(&s);
    if (hit) return;
    pump(f, 5);
  }
}

/* What the lifetime tests are doing, for their failure messages. */
static char fx_life[120];

static void walk_close(uv_handle_t *h, void *arg) {
  (void)arg;
  fprintf(stderr, "left open: handle type %d\n", (int)h->type);
}

/* Shuts the host down, checks done ran and nothing is left on the loop. */
static void fx_free(fx_t *f) {
  if (f->host || f->shut) {
    if (!f->shut) lr_host_shutdown(f->host, on_done, f);
    agent_stop(&f->agent);
    uint64_t end = uv_now(&f->loop) + 8000;
    while (!f->done && uv_now(&f->loop) < end) pump(f, 10);
    pump(f, 20); /* a second done would come now */
    if (f->done != 1) fail_msg("done ran %d times %s", f->done, fx_life);
    if (f->host) lr_host_free(f->host);
  } else {
    agent_stop(&f->agent);
  }
  /* Finishes the last closes; a handle still active after that is a leak
   * (bounded: a leaked timer or stream must fail the test, not hang it). */
  uint64_t end = uv_now(&f->loop) + 2000;
  while (uv_loop_alive(&f->loop) && uv_now(&f->loop) < end) pump(f, 5);
  if (uv_loop_close(&f->loop) != 0) {
    uv_walk(&f->loop, walk_close, NULL);
    fail_msg("handles left on the loop after shutdown%s%s", fx_life[0] ? ": " : "", fx_life);
  }
  fx_life[0] = '\0';
  free(f);
}

static int client_connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_storage ss;
  lr_loopback_sockaddr(4, port, &ss);
  if (connect(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Pumps the loop until fd has n bytes (or EOF/error). Returns bytes read. */
static ssize_t client_read(fx_t *f, int fd, char *buf, size_t n, unsigned ms) {
  size_t got = 0;
  uint64_t end = uv_now(&f->loop) + ms;
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  while (got < n && uv_now(&f->loop) < end) {
    ssize_t r = recv(fd, buf + got, n - got, 0);
    if (r > 0) {
      got += (size_t)r;
      continue;
    }
    if (r == 0 || (r < 0 && errno != EAGAIN)) return r == 0 ? (ssize_t)got : -errno;
    pump(f, 2);
  }
  return (ssize_t)got;
}

static uint16_t free_port(void) {
  static uint16_t next = 20000;
  return next++;
}

static void agent_listens(agent_t *ag, uint16_t port) {
  ag->listeners[ag->nlisteners++] = lr_test_v4(127, 0, 0, 1, port);
}

/* A host forwarding one guest port from a fake agent in the given mode. */
static fx_t *fx_forwarding(int mode, uint16_t port) {
  fx_t *f = fx_new();
  agent_start(&f->agent, &f->loop, mode);
  agent_listens(&f->agent, port);
  fx_host_agent(f);
  pump_until_status(f, "\"state\":\"forwarding\"", 3000);
  return f;
}

static void echo_roundtrip(fx_t *f, uint16_t port) {
  char buf[16];
  int fd = client_connect(port);
  assert_true(fd >= 0);
  assert_int_equal(send(fd, "hello", 5, 0), 5);
  assert_int_equal(client_read(f, fd, buf, 5, 3000), 5);
  assert_memory_equal(buf, "hello", 5);
  close(fd);
}

/* ---- tests ---------------------------------------------------------------------------- */

/* lo is still down: the tcp connect fails inside uv_tcp_connect. The
 * attempt must close its handle before the session frees the record that
 * holds it (valgrind reported reads of freed memory here before). */
static void test_connect_fails_synchronously(void **state) {
  (void)state;
  fx_t *f = fx_new();
  fx_host(f, "tcp:127.0.0.1:1");
  pump_until_status(f, "unreachable", 2000);
  pump(f, 300); /* several retries */
  fx_free(f);
}

static int set_lo_up(void) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
  int rc = ioctl(fd, SIOCGIFFLAGS, &ifr);
  if (rc == 0) {
    ifr.ifr_flags |= IFF_UP;
    rc = ioctl(fd, SIOCSIFFLAGS, &ifr);
  }
  close(fd);
  return rc;
}

static int lo_up(void **state) {
  (void)state;
  assert_int_equal(set_lo_up(), 0);
  return 0;
}

/* No agent at the path: the failure arrives through the callback, is
 * shown in status, and retried. */
static void test_connect_fails_asynchronously(void **state) {
  (void)state;
  fx_t *f = fx_new();
  fx_host(f, "unix:/tmp/lr-hostcore-nobody-here.sock");
  pump_until_status(f, "no such file or directory", 2000);
  fx_free(f);
}

/* VM sockets: the platform's socket is closed through sock_close when
 * libuv cannot wrap it, and a refusal is an error in status. */
static void test_vmsock_wrap_failure_closes_socket(void **state) {
  (void)state;
  fx_t *f = fx_new();
  fake.vm_mode = 1;
  fx_host(f, "vsock:3:50505");
  pump_until_status(f, "wrapping the VM socket", 3000);
  assert_true(fake.vm_calls >= 1);
  assert_true(fake.sock_closes >= 1);
  fx_free(f);
}

/* A VM connect that answers after the core's bound: the session sees a
 * timeout at 5 s, and the late socket is closed, not leaked. */
static void test_vmsock_late_answer_is_closed(void **state) {
  (void)state;
  fx_t *f = fx_new();
  fake.vm_mode = 2;
  fx_host(f, "vsock:3:50505");
  pump_until_status(f, "no answer within 5000 ms", 7000);
  uint64_t end = uv_now(&f->loop) + 4000;
  while (fake.sock_closes == 0 && uv_now(&f->loop) < end) pump(f, 20);
  assert_int_equal(fake.sock_closes, 1);
  fake.vm_mode = 0; /* later attempts fail at once */
  fx_free(f);
}

/* The VM connect succeeds on the worker thread, but the loop only gets to
 * it after the 5 s deadline has fired too (a loop busy elsewhere): on this
 * libuv the timer runs first. Whichever wins, the socket the worker made is
 * either handed to the session or closed, never leaked. (The worker's
 * result used to share the attempt's status with the timeout, which
 * overwrote it: the late success was read as a failure and its socket
 * left open.) */
static void test_vmsock_answer_at_deadline_not_leaked(void **state) {
  (void)state;
  fx_t *f = fx_new();
  fake.vm_late_fd = -1;
  fake.vm_mode = 3;
  fx_host(f, "vsock:3:50505");
  uint64_t end = uv_now(&f->loop) + 3000;
  while (fake.vm_entered_ns == 0 && uv_now(&f->loop) < end) pump(f, 5);
  assert_true(fake.vm_entered_ns != 0);
  /* Hold the loop: the worker returns, and the deadline passes. */
  while (!fake.vm_returning ||
         uv_hrtime() - fake.vm_entered_ns < (uint64_t)(LR_TRANSPORT_TIMEOUT_MS + 300) * 1000000u)
    usleep(10 * 1000);
  usleep(50 * 1000);
  fake.vm_mode = 0; /* later attempts fail at once */
  pump(f, 300);
  int fd = fake.vm_late_fd;
  assert_true(fd >= 0);
  fx_free(f);
  errno = 0;
  assert_int_equal(fcntl(fd, F_GETFD), -1);
  assert_int_equal(errno, EBADF);
}

/* The agent hangs up right after HELLO: the host retries and keeps no
 * stream of that attempt. */
static void test_agent_closes_mid_handshake(void **state) {
  (void)state;
  fx_t *f = fx_new();
  agent_start(&f->agent, &f->loop, AG_CLOSE_ON_HELLO);
  fx_host_agent(f);
  uint64_t end = uv_now(&f->loop) + 3000;
  while (f->agent.hellos < 3 && uv_now(&f->loop) < end) pump(f, 10);
  assert_true(f->agent.hellos >= 3);
  pump_until_status(f, "\"state\":\"connecting\"", 100);
  fx_free(f);
}

/* A forwarded connection relays both ways; when the control stream drops,
 * the stand-in and the open connection keep working, and the reconnect
 * resyncs. */
static void test_control_drop_keeps_connections(void **state) {
  (void)state;
  fx_t *f = fx_new();
  uint16_t port = free_port();
  agent_start(&f->agent, &f->loop, AG_NORMAL);
  agent_listens(&f->agent, port);
  char want[64], buf[16];
  fx_host_agent(f);
  snprintf(want, sizeof want, "\"host\":[\"127.0.0.1:%u\"],\"state\":\"forwarding\"", port);
  pump_until_status(f, want, 3000);
  echo_roundtrip(f, port);

  int fd = client_connect(port);
  assert_true(fd >= 0);
  assert_int_equal(send(fd, "one", 3, 0), 3);
  assert_int_equal(client_read(f, fd, buf, 3, 3000), 3);
  assert_non_null(f->agent.control);
  int controls = f->agent.controls;
  as_close(f->agent.control);
  pump(f, 50);
  assert_int_equal(send(fd, "two", 3, 0), 3); /* the connection is its own stream */
  assert_int_equal(client_read(f, fd, buf, 3, 3000), 3);
  assert_memory_equal(buf, "two", 3);
  uint64_t end = uv_now(&f->loop) + 3000;
  while (f->agent.controls == controls && uv_now(&f->loop) < end) pump(f, 10);
  assert_true(f->agent.controls > controls); /* reconnected */
  pump_until_status(f, want, 3000);
  echo_roundtrip(f, port); /* the stand-in survived */
  close(fd);
  fx_free(f);
}

/* A host port taken by someone else: conflict, retried until it frees. */
static void test_conflict_then_forwarding(void **state) {
  (void)state;
  fx_t *f = fx_new();
  uint16_t port = free_port();
  int squat = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_storage ss;
  lr_loopback_sockaddr(4, port, &ss);
  assert_int_equal(bind(squat, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  assert_int_equal(listen(squat, 1), 0);
  agent_start(&f->agent, &f->loop, AG_NORMAL);
  agent_listens(&f->agent, port);
  fx_host_agent(f);
  pump_until_status(f, "\"state\":\"conflict\"", 3000);
  close(squat);
  pump_until_status(f, "\"state\":\"forwarding\"", 2000);
  echo_roundtrip(f, port);
  fx_free(f);
}

/* remapOnConflict: the stand-in moves to a free port, shown in status. */
static void test_conflict_remapped(void **state) {
  (void)state;
  fx_t *f = fx_new();
  f->cfg.remap_on_conflict = 1;
  uint16_t port = free_port();
  fake.busy_port = port;
  agent_start(&f->agent, &f->loop, AG_NORMAL);
  agent_listens(&f->agent, port);
  fx_host_agent(f);
  pump_until_status(f, "\"state\":\"remapped\"", 3000);
  lr_sbuf_t s;
  lr_sbuf_init(&s);
  lr_host_status_json(f->host, &s);
  const char *h = strstr(s.p, "\"host\":[\"127.0.0.1:");
  assert_non_null(h);
  unsigned remapped = (unsigned)atoi(h + strlen("\"host\":[\"127.0.0.1:"));
  lr_sbuf_free(&s);
  assert_int_not_equal(remapped, port);
  echo_roundtrip(f, (uint16_t)remapped);
  fx_free(f);
}

/* A reload: a guest's configuration changes under a live connection, then
 * the guest is removed while the connection is still open. The port
 * follows the new rules, the connection outlives the reconfiguration, and
 * the removed guest's record is freed once its last close has run (the
 * valgrind twin checks nothing is touched after that). */
static void test_reconfigure_and_remove_guest(void **state) {
  (void)state;
  char err[256], buf[16];
  uint16_t port = free_port();
  fx_t *f = fx_forwarding(AG_NORMAL, port);
  lr_guest_t *g = lr_host_find_guest(f->host, "g");
  assert_non_null(g);
  lr_guest_opts_t dup = {.name = "g", .transport = "unix:/nonexistent"};
  assert_int_equal(lr_host_add_guest(f->host, &dup, err, sizeof err), -1);
  assert_non_null(strstr(err, "two guests named 'g'"));

  int fd = client_connect(port);
  assert_true(fd >= 0);
  assert_int_equal(send(fd, "one", 3, 0), 3);
  assert_int_equal(client_read(f, fd, buf, 3, 3000), 3);

  lr_config_t c = f->cfg;
  assert_int_equal(lr_portset_parse(&c.ignore_ports, "1-65535", err, sizeof err), 0);
  lr_host_configure_guest(g, &c);
  pump_until_status(f, "\"state\":\"ignored\"", 1000);
  assert_int_equal(client_connect(port), -1); /* the stand-in is gone */
  assert_int_equal(send(fd, "two", 3, 0), 3); /* the connection is not */
  assert_int_equal(client_read(f, fd, buf, 3, 3000), 3);
  assert_memory_equal(buf, "two", 3);

  c.ignore_ports.n = 0;
  lr_host_configure_guest(g, &c);
  pump_until_status(f, "\"state\":\"forwarding\"", 1000);
  echo_roundtrip(f, port);

  lr_host_remove_guest(g);
  pump_until_status(f, "\"guests\":[]}", 1000);
  assert_true(client_read(f, fd, buf, sizeof buf, 3000) <= 0); /* closed with the guest */
  close(fd);
  assert_int_equal(client_connect(port), -1);
  pump(f, 300); /* the drain frees the record once its last close has run */
  fx_free(f);
}

/* AGENT_INFO: the guest's listener detection in status; an agent that
 * never sends one (an older agent) polls. */
static void test_agent_info_detection(void **state) {
  (void)state;
  for (int info = 0; info <= 2; info++) {
    fx_t *f = fx_new();
    agent_start(&f->agent, &f->loop, AG_NORMAL);
    f->agent.info = info;
    agent_listens(&f->agent, free_port());
    char t[160];
    snprintf(t, sizeof t, "unix:%s", f->agent.path);
    fx_host(f, t);
    pump_until_status(f, "\"state\":\"forwarding\"", 3000);
    pump_until_status(f, info == 2 ? "\"detection\":\"ebpf\"" : "\"detection\":\"poll\"", 1000);
    lr_sbuf_t s;
    lr_sbuf_init(&s);
    lr_host_status_table(f->host, &s);
    assert_non_null(strstr(s.p, info == 2 ? "detection ebpf" : "detection poll"));
    lr_sbuf_free(&s);
    fx_free(f);
  }
}

static void agent_send_control(agent_t *ag, const uint8_t *buf, size_t len);

/* Close notices: an agent that announces them gets a stream id in OPEN;
 * its FIN notice ends the host client's read side after exactly the bytes
 * it counts, though the data stream stays open; notices for ids that name
 * no stream (a flood of them, with any kind and count) change nothing;
 * the client's half-close comes to the agent as a notice with its count,
 * and both directions done, the host closes the connection. */
static void test_close_notices(void **state) {
  (void)state;
  fx_t *f = fx_new();
  uint16_t port = free_port();
  agent_start(&f->agent, &f->loop, AG_NORMAL);
  f->agent.close_notices = 1;
  agent_listens(&f->agent, port);
  fx_host_agent(f);
  pump_until_status(f, "\"state\":\"forwarding\"", 3000);
  char buf[64];
  int fd = client_connect(port);
  assert_true(fd >= 0);
  assert_int_equal(send(fd, "hello", 5, 0), 5);
  assert_int_equal(client_read(f, fd, buf, 5, 3000), 5);
  astream_t *ds = NULL;
  for (astream_t *s = f->agent.streams; s; s = s->next)
    if (s->relaying) ds = s;
  assert_non_null(ds);
  assert_true(ds->stream_id != 0);

  /* Unknown ids: ignored, whatever they say. */
  uint8_t fr[64];
  for (uint32_t i = 1; i <= 20000; i++) {
    lr_stream_close_t m = {ds->stream_id + i, (uint8_t)(i % 3 + 1), (uint64_t)i << 40};
    agent_send_control(&f->agent, fr, lr_encode_stream_close(fr, sizeof fr, &m));
  }
  pump(f, 100);
  assert_int_equal(send(fd, "again", 5, 0), 5);
  assert_int_equal(client_read(f, fd, buf, 5, 3000), 5);
  assert_memory_equal(buf, "again", 5);

  /* The agent's FIN, counted: the client reads EOF; the stream is still open. */
  ds->fin_sent = 1;
  lr_stream_close_t fin = {ds->stream_id, LR_CLOSE_FIN, ds->echoed};
  agent_send_control(&f->agent, fr, lr_encode_stream_close(fr, sizeof fr, &fin));
  assert_int_equal(client_read(f, fd, buf, sizeof buf, 3000), 0);
  assert_false(ds->eof);

  /* The client's half-close: the notice counts its 10 bytes; the unix
   * transport carries the shutdown too; then the connection closes. */
  assert_int_equal(shutdown(fd, SHUT_WR), 0);
  uint64_t end = uv_now(&f->loop) + 3000;
  while (!f->agent.nnotices && uv_now(&f->loop) < end) pump(f, 5);
  assert_int_equal(f->agent.nnotices, 1);
  assert_int_equal(f->agent.notices[0].id, ds->stream_id);
  assert_int_equal(f->agent.notices[0].kind, LR_CLOSE_FIN);
  assert_true(f->agent.notices[0].bytes == 10);
  pump_until_status(f, "\"active\":0", 3000);
  close(fd);
  fx_free(f);
}

/* Shutdown while connections are open: done runs, clients see the end. */
static void test_shutdown_with_live_connections(void **state) {
  (void)state;
  uint16_t port = free_port();
  char buf[8];
  fx_t *f = fx_forwarding(AG_NORMAL, port);
  int fds[3];
  for (int i = 0; i < 3; i++) {
    fds[i] = client_connect(port);
    assert_true(fds[i] >= 0);
    assert_int_equal(send(fds[i], "x", 1, 0), 1);
    assert_int_equal(client_read(f, fds[i], buf, 1, 3000), 1);
  }
  pump_until_status(f, "\"active\":3", 1000);
  lr_host_shutdown(f->host, on_done, f);
  uint64_t end = uv_now(&f->loop) + 5000;
  while (!f->done && uv_now(&f->loop) < end) pump(f, 10);
  assert_int_equal(f->done, 1);
  for (int i = 0; i < 3; i++) {
    ssize_t r = recv(fds[i], buf, sizeof buf, 0);
    assert_true(r <= 0); /* EOF or reset, never a hang */
    close(fds[i]);
  }
  lr_host_free(f->host); /* after done, as a daemon does */
  f->host = NULL;
  fx_free(f);
}

/* The agent's side stops reading while the client keeps sending: the
 * relay stops reading the client (kernel buffers fill, the client's send
 * blocks) and holds at most one pool buffer per direction. */
static void test_relay_peer_stops_reading(void **state) {
  (void)state;
  uint16_t port = free_port();
  fx_t *f = fx_forwarding(AG_NO_READ, port);
  int fd = client_connect(port);
  assert_true(fd >= 0);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  static char chunk[65536];
  size_t sent = 0;
  int blocked_turns = 0;
  uint64_t end = uv_now(&f->loop) + 5000;
  while (blocked_turns < 50 && uv_now(&f->loop) < end) {
    ssize_t r = send(fd, chunk, sizeof chunk, 0);
    if (r > 0) {
      sent += (size_t)r;
      blocked_turns = 0;
    } else {
      assert_int_equal(errno, EAGAIN);
      blocked_turns++;
    }
    pump(f, 2);
  }
  assert_int_equal(blocked_turns, 50); /* the client is held back */
  assert_true(lr_relay_pool_in_use() <= 2);
  /* What was accepted sits in kernel socket buffers, not in our memory:
   * bounded by them (a few MiB on loopback), far below an unbounded queue. */
  assert_true(sent < 64u * 1024 * 1024);
  print_message("client held back after %zu bytes; pool buffers in use: %zu\n", sent,
                lr_relay_pool_in_use());
  close(fd);
  fx_free(f);
}

/* Sends frames on the agent's live control stream, as a guest would. */
static void agent_send_control(agent_t *ag, const uint8_t *buf, size_t len) {
  assert_non_null(ag->control);
  as_send(ag->control, buf, len);
}

/* An agent that floods requests and never reads the answers: the host
 * drops its control stream at controlQueueBytes instead of queueing. */
static void test_control_queue_budget(void **state) {
  (void)state;
  fx_t *f = fx_new();
  f->cfg.control_queue_bytes = 65536;
  agent_start(&f->agent, &f->loop, AG_FLOOD_NO_READ);
  fx_host_agent(f);
  uint64_t end = uv_now(&f->loop) + 5000;
  while (f->agent.controls < 2 && uv_now(&f->loop) < end) pump(f, 10);
  assert_true(f->agent.controls >= 2); /* dropped, then reconnected */
  fx_free(f);
}

/* The port policy: privileged ports, port 0 and reversePorts are never
 * bound, and status says why. */
static void test_port_policy_denied(void **state) {
  (void)state;
  fx_t *f = fx_new();
  char err[128];
  assert_int_equal(lr_portset_parse(&f->cfg.reverse_ports, "20999", err, sizeof err), 0);
  uint16_t ok = free_port();
  agent_start(&f->agent, &f->loop, AG_NORMAL);
  agent_listens(&f->agent, 22);
  agent_listens(&f->agent, 0);
  agent_listens(&f->agent, 20999);
  agent_listens(&f->agent, ok);
  fx_host_agent(f);
  pump_until_status(f, "\"state\":\"forwarding\"", 3000);
  pump_until_status(f, "\"guest\":\"127.0.0.1:22\",\"host\":[],\"state\":\"denied\","
                       "\"reason\":\"port 22 is outside forwardPorts (1024-65535)\"", 100);
  pump_until_status(f, "port 0 would bind a random host port", 100);
  pump_until_status(f, "host port 20999 is published to the guest (reversePorts)", 100);
  assert_int_equal(fake.listened_on[22], 0);
  assert_int_equal(fake.listened_on[0], 0);
  assert_int_equal(fake.listened_on[20999], 0);
  assert_int_equal(fake.listened_on[ok], 1);
  fx_free(f);
}

/* maxStandins counts host sockets; past it a listener is denied, and it is
 * bound as soon as a stand-in closes. */
static void test_standin_budget(void **state) {
  (void)state;
  fx_t *f = fx_new();
  f->cfg.max_standins = 2;
  uint16_t p[3] = {free_port(), free_port(), free_port()};
  agent_start(&f->agent, &f->loop, AG_NORMAL);
  for (int i = 0; i < 3; i++) agent_listens(&f->agent, p[i]);
  fx_host_agent(f);
  pump_until_status(f, "maxStandins (2 host sockets) reached", 3000);
  int bound = 0;
  for (int i = 0; i < 3; i++) bound += fake.listened_on[p[i]];
  assert_int_equal(bound, 2);
  /* The guest closes one: the denied one takes its place. */
  uint8_t fr[64];
  lr_listener_t l = lr_test_v4(127, 0, 0, 1, p[0]);
  agent_send_control(&f->agent, fr, lr_encode_listener(fr, sizeof fr, LR_MSG_LISTENER_DEL, &l));
  uint64_t end = uv_now(&f->loop) + 3000;
  for (;;) {
    lr_sbuf_t s;
    lr_sbuf_init(&s);
    lr_host_status_json(f->host, &s);
    int denied = strstr(s.p, "denied") != NULL;
    lr_sbuf_free(&s);
    if (!denied) break;
    assert_true(uv_now(&f->loop) < end);
    pump(f, 10);
  }
  echo_roundtrip(f, p[1]);
  echo_roundtrip(f, p[2]);
  fx_free(f);
}

/* maxConnectionsPerPort: the excess client is reset, the others work. */
static void test_connection_budget(void **state) {
  (void)state;
  fx_t *f = fx_new();
  f->cfg.max_connections_per_port = 2;
  uint16_t port = free_port();
  agent_start(&f->agent, &f->loop, AG_NORMAL);
  agent_listens(&f->agent, port);
  char buf[8];
  fx_host_agent(f);
  pump_until_status(f, "\"state\":\"forwarding\"", 3000);
  int a = client_connect(port), b = client_connect(port);
  assert_int_equal(send(a, "a", 1, 0), 1);
  assert_int_equal(client_read(f, a, buf, 1, 3000), 1);
  assert_int_equal(send(b, "b", 1, 0), 1);
  assert_int_equal(client_read(f, b, buf, 1, 3000), 1);
  int c = client_connect(port);
  assert_true(client_read(f, c, buf, 1, 3000) <= 0); /* reset or EOF, never served */
  assert_int_equal(send(a, "A", 1, 0), 1);
  assert_int_equal(client_read(f, a, buf, 1, 3000), 1);
  close(a);
  close(b);
  close(c);
  fx_free(f);
}

/* maxPendingReverse: REVERSE_OPENs beyond the budget fail at once. */
static void test_reverse_pending_budget(void **state) {
  (void)state;
  fx_t *f = fx_new();
  f->cfg.max_pending_reverse = 4;
  uint16_t hp = free_port();
  char err[128], ps[16];
  snprintf(ps, sizeof ps, "%u", hp);
  assert_int_equal(lr_portset_parse(&f->cfg.reverse_ports, ps, err, sizeof err), 0);
  /* A host server that listens (the kernel completes connects) but is
   * never served: every reverse connection stays pending. */
  int srv = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_storage ss;
  lr_loopback_sockaddr(4, hp, &ss);
  assert_int_equal(bind(srv, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  assert_int_equal(listen(srv, 64), 0);
  agent_start(&f->agent, &f->loop, AG_HOLD_ATTACH);
  fx_host_agent(f);
  pump_until_status(f, "\"state\":\"connected\"", 3000);
  uint8_t fr[64];
  for (uint32_t id = 1; id <= 10; id++) {
    lr_reverse_open_t ro = {.id = id, .family = 4, .port = hp};
    agent_send_control(&f->agent, fr, lr_encode_reverse_open(fr, sizeof fr, &ro));
  }
  uint64_t end = uv_now(&f->loop) + 3000;
  while ((f->agent.attaches < 4 || f->agent.rev_fails < 6) && uv_now(&f->loop) < end) pump(f, 10);
  assert_int_equal(f->agent.attaches, 4);
  assert_int_equal(f->agent.rev_fails, 6);
  close(srv);
  fx_free(f);
}

static int status_connect(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sun;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
  assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof sun), 0);
  return fd;
}

/* Status clients: at most maxStatusClients at once (a newcomer cuts the
 * oldest idle one, so idle clients cannot lock lorelayctl out), each cut
 * after statusIdleTimeoutMs; the endpoint is mode 0660. */
static void test_status_client_budget(void **state) {
  (void)state;
  fx_t *f = fx_new();
  f->cfg.max_status_clients = 2;
  f->cfg.status_idle_timeout_ms = 300;
  char path[108], err[256], buf[4096];
  snprintf(path, sizeof path, "/tmp/lr-hostcore-status-%d.sock", (int)getpid());
  unlink(path);
  fx_host(f, "unix:/tmp/lr-hostcore-nobody-here.sock");
  if (lr_host_serve_status(f->host, path, err, sizeof err) != 0) fail_msg("%s", err);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0660);
  int a = status_connect(path);
  pump(f, 20);
  int b = status_connect(path);
  pump(f, 20);
  uint64_t t0 = uv_now(&f->loop);
  int d = status_connect(path); /* a third: the oldest idle one (a) goes */
  assert_int_equal(client_read(f, a, buf, 1, 1000), 0);
  assert_true(uv_now(&f->loop) - t0 < 200);
  assert_int_equal(send(d, "status json\n", 12, 0), 12);
  ssize_t n = client_read(f, d, buf, sizeof buf - 1, 2000);
  assert_true(n > 0);
  buf[n] = '\0';
  assert_non_null(strstr(buf, ",\"guests\":["));
  assert_true(uv_now(&f->loop) - t0 < 200); /* answered at once, not after the idle ones */
  t0 = uv_now(&f->loop);
  assert_int_equal(client_read(f, b, buf, 1, 3000), 0); /* idle: cut */
  assert_true(uv_now(&f->loop) - t0 < 1000);
  close(a);
  close(b);
  close(d);
  fx_free(f);
  unlink(path);
}

/* Counts the log lines that contain a needle, from log_count_start (which
 * also sets the level) to log_count_stop (which puts the level back). */
typedef struct {
  const char *needle;
  int n;
  lr_log_level_t level_was;
} log_count_t;

static void log_count_line(lr_log_level_t level, const char *line, void *data) {
  log_count_t *lc = data;
  (void)level;
  if (strstr(line, lc->needle)) lc->n++;
}

static void log_count_start(log_count_t *lc, const char *needle, lr_log_level_t level) {
  lc->needle = needle;
  lc->n = 0;
  lc->level_was = lr_log_get_level();
  lr_log_set_level(level);
  lr_log_set_sink(log_count_line, lc);
}

static int log_count_stop(log_count_t *lc) {
  lr_log_set_sink(NULL, NULL);
  lr_log_set_level(lc->level_was);
  return lc->n;
}

/* EMFILE: libuv drops clients silently when accept fails so; the host
 * notices within a second and says so, once per interval. */
static void test_fd_exhaustion_is_logged(void **state) {
  (void)state;
  fx_t *f = fx_new();
  fx_host(f, "unix:/tmp/lr-hostcore-nobody-here.sock");
  pump(f, 50);
  struct rlimit was, tight;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &was), 0);
  int probe = dup(0);
  assert_true(probe >= 0);
  close(probe);
  tight = was;
  tight.rlim_cur = (rlim_t)probe; /* every descriptor from here on is refused */
  log_count_t lc;
  log_count_start(&lc, "out of file descriptors", LR_LOG_WARN);
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &tight), 0);
  pump(f, 2500);
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &was), 0);
  assert_int_equal(log_count_stop(&lc), 1); /* said, and said once */
  fx_free(f);
}

/* listenAddress: a LAN address is warned of once per guest; a loopback one
 * (127.0.0.3, ::1, ::ffff:127.0.0.1) is not, as it exposes nothing. */
static void test_listen_address_warning(void **state) {
  (void)state;
  static const struct {
    const char *addr;
    int warned;
  } cases[] = {{"0.0.0.0", 1}, {"192.168.1.10", 1}, {"::", 1}, {"fe80::1", 1},
               {"127.0.0.3", 0}, {"127.255.0.1", 0}, {"::1", 0}, {"::ffff:127.0.0.1", 0},
               {"128.0.0.1", 1}, {"::2", 1}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fx_t *f = fx_new();
    snprintf(f->cfg.listen_address, sizeof f->cfg.listen_address, "%s", cases[i].addr);
    log_count_t lc; /* the warning's words; the loopback case's info line has others */
    log_count_start(&lc, "reachable from other machines", LR_LOG_INFO);
    fx_host(f, "unix:/tmp/lr-hostcore-nobody-here.sock");
    int warned = log_count_stop(&lc);
    if (warned != cases[i].warned)
      fail_msg("listenAddress %s: %d warning(s), want %d", cases[i].addr, warned,
               cases[i].warned);
    fx_free(f);
  }
}

/* ---- the shared key ----------------------------------------------------------------- */

/* The agent challenges first; the host proves the key in HELLO and OPEN
 * (the fake agent checks both MACs with lr_auth and the posix layer's
 * libcrypto), the agent proves it back in WELCOME and OPEN_RESULT, and the
 * connection relays. */
static void test_keyed_handshake_relays(void **state) {
  (void)state;
  fx_t *f = fx_new();
  uint16_t port = free_port();
  agent_start(&f->agent, &f->loop, AG_KEYED);
  agent_listens(&f->agent, port);
  char want[64];
  fx_host_agent(f);
  snprintf(want, sizeof want, "\"host\":[\"127.0.0.1:%u\"],\"state\":\"forwarding\"", port);
  pump_until_status(f, want, 3000);
  echo_roundtrip(f, port);
  echo_roundtrip(f, port);
  assert_int_equal(f->agent.bad_macs, 0);
  assert_int_equal(f->agent.opens, 2);
  assert_int_equal(f->agent.hellos, 1);
  fx_free(f);
}

/* An agent that cannot prove the key in WELCOME is not believed: its
 * listing is not applied, status shows the authentication error, and the
 * host retries only after the AUTH backoff. */
static void test_agent_bad_welcome_mac_refused(void **state) {
  (void)state;
  fx_t *f = fx_new();
  uint16_t port = free_port();
  agent_start(&f->agent, &f->loop, AG_BAD_WELCOME_MAC);
  agent_listens(&f->agent, port);
  char t[160], want[300];
  fx_host_agent(f);
  snprintf(t, sizeof t, "unix:%s", f->agent.path);
  snprintf(want, sizeof want, "\"error\":\"agent at %s failed authentication (wrong key?)\"", t);
  pump_until_status(f, want, 3000);
  pump_until_status(f, "\"state\":\"connecting\"", 100);
  pump(f, 1000);
  assert_int_equal(f->agent.hellos, 1); /* not hammered: the AUTH backoff */
  assert_int_equal(f->agent.bad_macs, 0); /* the host's own MACs were right */
  lr_sbuf_t s;
  lr_sbuf_init(&s);
  lr_host_status_json(f->host, &s);
  char port_s[16];
  snprintf(port_s, sizeof port_s, ":%u\"", port);
  if (strstr(s.p, port_s)) fail_msg("the unproved agent's listener was applied:\n%s", s.p);
  lr_sbuf_free(&s);
  assert_true(client_connect(port) < 0);
  fx_free(f);
}

/* An agent whose OPEN_RESULT does not carry the key's MAC gets nothing:
 * the client is reset and not one byte of it reaches the agent. */
static void test_agent_bad_result_mac_relays_nothing(void **state) {
  (void)state;
  uint16_t port = free_port();
  char buf[16];
  fx_t *f = fx_forwarding(AG_BAD_RESULT_MAC, port);
  int fd = client_connect(port);
  assert_true(fd >= 0);
  assert_int_equal(send(fd, "secret", 6, 0), 6);
  uint64_t t0 = uv_now(&f->loop);
  ssize_t r = client_read(f, fd, buf, sizeof buf, 3000);
  assert_true(r <= 0);                        /* EOF or reset ... */
  assert_true(uv_now(&f->loop) - t0 < 3000); /* ... not a timeout */
  assert_int_equal(f->agent.opens, 1);
  assert_int_equal(f->agent.relayed, 0);
  close(fd);
  fx_free(f);
}

/* The posix layer's handshake crypto (platform/linux: libcrypto, getrandom). */
static void test_posix_pal_crypto(void **state) {
  (void)state;
  lr_test_pal_crypto(&lr_pal_posix.base);
}

/* Keys shorter than 16 bytes are refused when the guest is added. */
static void test_short_key_refused(void **state) {
  (void)state;
  fx_t *f = fx_new();
  char err[256] = "";
  static const uint8_t short_key[] = "0123456789abcde"; /* 15 bytes */
  f->host = lr_host_new(&f->loop, &fake_pal, &f->cfg);
  assert_non_null(f->host);
  lr_guest_opts_t o = {.name = "g", .transport = "tcp:127.0.0.1:9", .token = short_key,
                       .token_len = sizeof short_key - 1};
  assert_int_equal(lr_host_add_guest(f->host, &o, err, sizeof err), -1);
  assert_non_null(strstr(err, "at least 16"));
  fx_free(f);
}

/* ---- one hop: the host connects inside the guest's namespace ------------- */

/* The "guest": a thread in a network namespace of its own, with lo up and
 * an echo server on 127.0.0.1:port that serves one client at a time until
 * the test closes its listener. The host reaches it only through sockets
 * made in that namespace (nsock, given /proc/self/task/TID/ns/net). */
typedef struct {
  pthread_t t;
  uint16_t port;
  int lsn;
  int usock; /* a UDP socket bound to port that never reads: flows stay up */
  pid_t tid;
  int ready; /* 1 listening, -1 failed */
  pthread_mutex_t mu;
  pthread_cond_t cv;
} nsguest_t;

static void *nsguest_main(void *arg) {
  nsguest_t *n = arg;
  int ok = unshare(CLONE_NEWNET) == 0;
  if (ok) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    ok = s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0;
    ifr.ifr_flags |= IFF_UP;
    ok = ok && ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
    if (s >= 0) close(s);
  }
  struct sockaddr_storage ss;
  lr_loopback_sockaddr(4, n->port, &ss);
  n->lsn = ok ? socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) : -1;
  int one = 1;
  if (n->lsn >= 0) setsockopt(n->lsn, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ok = n->lsn >= 0 && bind(n->lsn, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)) == 0 &&
       listen(n->lsn, 16) == 0;
  n->usock = ok ? socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0) : -1;
  ok = ok && n->usock >= 0 && bind(n->usock, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)) == 0;
  pthread_mutex_lock(&n->mu);
  n->tid = (pid_t)syscall(SYS_gettid);
  n->ready = ok ? 1 : -1;
  pthread_cond_signal(&n->cv);
  pthread_mutex_unlock(&n->mu);
  if (!ok) return NULL;
  for (;;) {
    int c = accept4(n->lsn, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) break; /* the test shut the listener down */
    char buf[256];
    ssize_t r;
    while ((r = recv(c, buf, sizeof buf, 0)) > 0) {
      if (buf[r - 1] == '!') { /* the server fails: a reset */
        struct linger lg = {1, 0};
        setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        break;
      }
      if (send(c, buf, (size_t)r, MSG_NOSIGNAL) != r) break;
    }
    close(c);
  }
  return NULL;
}

static void nsguest_start(nsguest_t *n, uint16_t port, char *path, size_t len) {
  memset(n, 0, sizeof *n);
  n->port = port;
  pthread_mutex_init(&n->mu, NULL);
  pthread_cond_init(&n->cv, NULL);
  assert_int_equal(pthread_create(&n->t, NULL, nsguest_main, n), 0);
  pthread_mutex_lock(&n->mu);
  while (!n->ready) pthread_cond_wait(&n->cv, &n->mu);
  pthread_mutex_unlock(&n->mu);
  assert_int_equal(n->ready, 1);
  snprintf(path, len, "/proc/self/task/%d/ns/net", (int)n->tid);
}

static void nsguest_stop(nsguest_t *n) {
  shutdown(n->lsn, SHUT_RDWR);
  pthread_join(n->t, NULL);
  close(n->lsn);
  if (n->usock >= 0) close(n->usock);
}

/* The host relays a client to the server in the guest's namespace by
 * itself: the agent sees no OPEN, and a port nothing listens on in the
 * namespace resets the client. */
static void test_one_hop_connects_in_namespace(void **state) {
  (void)state;
  nsguest_t n;
  uint16_t port = free_port(), closed_port = free_port();
  fx_t *f = fx_new();
  nsguest_start(&n, port, f->netns, sizeof f->netns);
  agent_start(&f->agent, &f->loop, AG_NORMAL);
  agent_listens(&f->agent, port);
  agent_listens(&f->agent, closed_port);
  fx_host_agent(f);
  pump_until_status(f, "\"state\":\"forwarding\"", 3000);
  for (int i = 0; i < 40; i++) /* past the pool's first refill */
    echo_roundtrip(f, port);
  assert_int_equal(f->agent.opens, 0);
  char buf[4];
  int fd = client_connect(closed_port);
  assert_true(fd >= 0);
  assert_true(client_read(f, fd, buf, 1, 3000) <= 0); /* reset: nothing listens there */
  close(fd);
  assert_int_equal(f->agent.opens, 0);
  pump_until_status(f, "\"active\":0", 2000);
  fx_free(f);
  nsguest_stop(&n);
}

static void nop_ready(void *data) { (void)data; }

/* A namespace that is missing or cannot be entered is an error at once,
 * naming it, and leaves nothing behind (no thread, descriptor or memory:
 * the valgrind twin checks); so is a guest whose namespace it is. */
static void test_nsock_open_errors(void **state) {
  (void)state;
  char err[256] = "";
  fx_t *f = fx_new();
  int before = lr_test_count_fds();
  assert_null(lr_posix_nsock_open(&f->loop, "/nonexistent/lr-ns", nop_ready, NULL, err,
                                  sizeof err));
  assert_non_null(strstr(err, "/nonexistent/lr-ns"));
  assert_null(lr_posix_nsock_open(&f->loop, "/dev/null", nop_ready, NULL, err, sizeof err));
  assert_non_null(strstr(err, "cannot enter network namespace /dev/null"));
  f->host = lr_host_new(&f->loop, &fake_pal, &f->cfg);
  lr_guest_opts_t o = {.name = "g", .transport = "unix:/nonexistent.sock",
                       .one_hop_netns = "/dev/null"};
  assert_int_equal(lr_host_add_guest(f->host, &o, err, sizeof err), -1);
  assert_non_null(strstr(err, "cannot enter network namespace"));
  pump(f, 20); /* the pools' loop handles close */
  assert_int_equal(lr_test_count_fds(), before);
  fx_free(f);
}

/* A hostile agent sends descriptors on the control stream, one byte per
 * sendmsg with 64 each: the host closes every one and drops the stream
 * with one line, its fd count comes back, and it keeps serving. */
static void test_agent_descriptors_refused(void **state) {
  (void)state;
  nsguest_t n;
  uint16_t port = free_port();
  fx_t *f = fx_new();
  nsguest_start(&n, port, f->netns, sizeof f->netns);
  int before = lr_test_count_fds();
  log_count_t lc;
  log_count_start(&lc, "the agent sent file descriptors on the control stream", LR_LOG_WARN);
  agent_start(&f->agent, &f->loop, AG_FD_FLOOD);
  agent_listens(&f->agent, port);
  fx_host_agent(f);
  uint64_t end = uv_now(&f->loop) + 3000;
  while (f->agent.controls < 2 && uv_now(&f->loop) < end) pump(f, 10);
  assert_true(f->agent.passes >= 64);
  assert_true(f->agent.controls >= 2); /* the first stream was dropped: a new one came */
  assert_int_equal(log_count_stop(&lc), 1); /* rate-limited: one line */
  pump(f, 200);
  int after = lr_test_count_fds();
  /* The agent's stream, the host's reconnected control stream and pool
   * sockets (16 at most per kind) may be open: nothing like 64 x bytes. */
  assert_true(after <= before + 24);
  fx_free(f);
  nsguest_stop(&n);
}

/* conflictGraceSeconds: a port someone else held is taken only once it
 * stayed free for the grace. A squatter that closes and binds again within
 * it keeps the port (the host's probes neither take it nor log a stand-in);
 * once it is gone for good the port is forwarded after the grace, with one
 * line naming the guest that took it. */
static void test_conflict_grace(void **state) {
  (void)state;
  fx_t *f = fx_new();
  f->cfg.conflict_grace_s = 1;
  uint16_t port = free_port();
  struct sockaddr_storage ss;
  lr_loopback_sockaddr(4, port, &ss);
  int one = 1;
  int squat = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  setsockopt(squat, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  assert_int_equal(bind(squat, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  assert_int_equal(listen(squat, 1), 0);
  agent_start(&f->agent, &f->loop, AG_NORMAL);
  agent_listens(&f->agent, port);
  fx_host_agent(f);
  pump_until_status(f, "\"state\":\"conflict\"", 3000);
  close(squat); /* a restart: gone for 300 ms, probed meanwhile */
  pump(f, 300);
  squat = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  setsockopt(squat, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  assert_int_equal(bind(squat, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  assert_int_equal(listen(squat, 1), 0);
  pump(f, 400); /* back, and seen taken again: the count starts over */
  pump_until_status(f, "\"state\":\"conflict\"", 10);
  log_count_t lc;
  log_count_start(&lc, "stayed free for 1 s after another program or guest held it: taken by "
                       "guest", LR_LOG_WARN);
  close(squat);
  uint64_t t0 = uv_now(&f->loop);
  pump_until_status(f, "\"state\":\"forwarding\"", 5000);
  uint64_t took = uv_now(&f->loop) - t0;
  assert_int_equal(log_count_stop(&lc), 1);
  assert_true(took >= 900);
  echo_roundtrip(f, port);
  fx_free(f);
}

/* ---- lifetimes: every shape of connection, torn down every way ----------
 * Five shapes (TCP through the agent, TCP one hop, reverse, UDP through the
 * agent, UDP one hop), each in the phases a test can hold it in (the
 * handshake, with an agent that never answers; relaying), torn down by the
 * client, by the guest side failing, by lr_host_remove_guest (a reload) and
 * by lr_host_shutdown. Then the same lives with the guest removed or the
 * host shut down from inside each callback the core runs (the test hook).
 * The valgrind twin is the check: no read of a freed record, no leak, and
 * the loop closes; done runs exactly once. The phases a test cannot hold
 * (connecting, waiting for a namespace socket, the reverse local connect)
 * end in a callback: the hook tears down there. */

typedef enum { SH_TCP, SH_TCP_ONEHOP, SH_REVERSE, SH_UDP, SH_UDP_ONEHOP, SH_N } shape_t;
static const char *const shape_name[SH_N] = {"tcp", "tcp-onehop", "reverse", "udp",
                                             "udp-onehop"};
typedef enum { PH_HANDSHAKE, PH_RELAYING } phase_t;
typedef enum { BY_CLIENT, BY_GUEST, BY_REMOVE, BY_SHUTDOWN } cause_t;

typedef struct {
  fx_t *f;
  shape_t shape;
  nsguest_t ns;
  int has_ns;
  uint16_t port;
  int srv; /* reverse: the host server's listener */
  int fd;  /* the client: a TCP or UDP socket; reverse: the host server's side */
} sc_t;

/* Once the hook has torn something down, the steps after it may fail. */
#define SC_CHECK(sc, cond)                                                                    \
  do {                                                                                        \
    if (!(cond) && !(sc)->f->hook_fired)                                                      \
      fail_msg("%s: %s (line %d)", fx_life, #cond, __LINE__);                                 \
  } while (0)

static int sc_udp(const sc_t *sc) { return sc->shape == SH_UDP || sc->shape == SH_UDP_ONEHOP; }

/* Pumps until the status JSON contains want: 1; 0 after ms, or at once
 * when the hook has fired (the guest or the host may be gone). */
static int sc_status(sc_t *sc, const char *want, unsigned ms) {
  uint64_t end = uv_now(&sc->f->loop) + ms;
  while (!sc->f->hook_fired) {
    lr_sbuf_t s;
    lr_sbuf_init(&s);
    lr_host_status_json(sc->f->host, &s);
    int hit = s.p && strstr(s.p, want) != NULL;
    lr_sbuf_free(&s);
    if (hit) return 1;
    if (uv_now(&sc->f->loop) >= end) return 0;
    pump(sc->f, 5);
  }
  return 0;
}

static void sc_start(sc_t *sc, shape_t shape, int mode, const char *point, int shutdown) {
  memset(sc, 0, sizeof *sc);
  sc->shape = shape;
  sc->fd = sc->srv = -1;
  fx_t *f = sc->f = fx_new();
  f->cfg.udp_idle_timeout_s = 1;
  f->hook_point = point;
  f->hook_shutdown = shutdown;
  sc->port = free_port();
  if (shape == SH_TCP_ONEHOP || shape == SH_UDP_ONEHOP) {
    nsguest_start(&sc->ns, sc->port, f->netns, sizeof f->netns);
    sc->has_ns = 1;
  }
  if (shape == SH_REVERSE) {
    char err[128], ps[16];
    struct sockaddr_storage ss;
    snprintf(ps, sizeof ps, "%u", sc->port);
    assert_int_equal(lr_portset_parse(&f->cfg.reverse_ports, ps, err, sizeof err), 0);
    sc->srv = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    lr_loopback_sockaddr(4, sc->port, &ss);
    assert_int_equal(bind(sc->srv, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
    assert_int_equal(listen(sc->srv, 16), 0);
  }
  agent_start(&f->agent, &f->loop, mode);
  if (shape != SH_REVERSE) {
    lr_listener_t l = lr_test_v4(127, 0, 0, 1, sc->port);
    if (sc_udp(sc)) l.flags |= LR_LISTENER_UDP;
    f->agent.listeners[f->agent.nlisteners++] = l;
  }
  fx_host_agent(f);
  SC_CHECK(sc, sc_status(sc, shape == SH_REVERSE ? "\"state\":\"connected\""
                                                  : "\"state\":\"forwarding\"", 3000));
}

/* One connection (or flow) of the shape's client. */
static void sc_open(sc_t *sc) {
  fx_t *f = sc->f;
  struct sockaddr_storage ss;
  lr_loopback_sockaddr(4, sc->port, &ss);
  if (sc_udp(sc)) {
    sc->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_int_equal(connect(sc->fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
    assert_int_equal(send(sc->fd, "ping", 4, 0), 4);
    pump(f, 20);
  } else if (sc->shape == SH_REVERSE) {
    uint8_t fr[64];
    lr_reverse_open_t ro = {.id = 1, .family = 4, .port = sc->port};
    SC_CHECK(sc, f->agent.control != NULL);
    if (!f->agent.control) return;
    agent_send_control(&f->agent, fr, lr_encode_reverse_open(fr, sizeof fr, &ro));
    uint64_t end = uv_now(&f->loop) + 3000;
    while (sc->fd < 0 && uv_now(&f->loop) < end) {
      sc->fd = accept4(sc->srv, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (sc->fd < 0) pump(f, 5);
    }
    SC_CHECK(sc, sc->fd >= 0);
  } else {
    sc->fd = client_connect(sc->port);
    SC_CHECK(sc, sc->fd >= 0);
  }
}

/* Pumps until the connection is in the phase (soft once the hook fired). */
static void sc_reach(sc_t *sc, phase_t ph) {
  fx_t *f = sc->f;
  char buf[16];
  if (sc->fd < 0) return;
  if (ph == PH_HANDSHAKE) { /* the agent holds the request */
    uint64_t end = uv_now(&f->loop) + 3000;
    while (!f->agent.opens && !f->agent.attaches && uv_now(&f->loop) < end) pump(f, 5);
    SC_CHECK(sc, f->agent.opens + f->agent.attaches == 1);
    return;
  }
  if (sc->shape == SH_UDP_ONEHOP) { /* the server never answers: the flow is up */
    SC_CHECK(sc, sc_status(sc, "\"active\":1", 2000));
    return;
  }
  if (sc->shape == SH_UDP) { /* the agent echoes the datagram */
    uint64_t end = uv_now(&f->loop) + 3000;
    ssize_t r = -1;
    while ((r = recv(sc->fd, buf, sizeof buf, 0)) < 0 && uv_now(&f->loop) < end) pump(f, 5);
    SC_CHECK(sc, r == 4);
    return;
  }
  SC_CHECK(sc, send(sc->fd, "hello", 5, MSG_NOSIGNAL) == 5);
  SC_CHECK(sc, client_read(f, sc->fd, buf, 5, 3000) == 5);
}

static void sc_guest_fails(sc_t *sc) {
  fx_t *f = sc->f;
  if (sc->shape == SH_TCP_ONEHOP) { /* the server resets */
    SC_CHECK(sc, send(sc->fd, "!", 1, MSG_NOSIGNAL) == 1);
  } else if (sc->shape == SH_UDP_ONEHOP) { /* the server's socket goes: refused */
    close(sc->ns.usock);
    sc->ns.usock = -1;
    for (int i = 0; i < 3; i++) {
      (void)send(sc->fd, "ping", 4, 0);
      pump(f, 30);
    }
  } else { /* the agent drops every data or reverse stream */
    for (astream_t *s = f->agent.streams; s; s = s->next)
      if (s != f->agent.control) as_close(s);
  }
  pump(f, 100);
}

static void sc_teardown(sc_t *sc, phase_t ph, cause_t by) {
  fx_t *f = sc->f;
  char buf[16];
  switch (by) {
    case BY_CLIENT:
      if (sc_udp(sc)) { /* a flow's client just stops: udpIdleTimeout */
        pump(f, 2500);
        break;
      }
      close(sc->fd);
      sc->fd = -1;
      /* In the handshake nothing reads the client: the 5 s bound ends it. */
      pump(f, ph == PH_HANDSHAKE ? 6200 : 300);
      break;
    case BY_GUEST:
      sc_guest_fails(sc);
      break;
    case BY_REMOVE:
      lr_host_remove_guest(lr_host_find_guest(f->host, "g"));
      SC_CHECK(sc, sc_status(sc, "\"guests\":[]", 1000));
      break;
    case BY_SHUTDOWN:
      f->shut = 1;
      lr_host_shutdown(f->host, on_done, f);
      break;
  }
  if (sc->fd >= 0 && !sc_udp(sc)) /* the client sees the end */
    SC_CHECK(sc, client_read(f, sc->fd, buf, sizeof buf, 3000) <= 0);
  if ((by == BY_CLIENT || by == BY_GUEST) && sc->shape != SH_REVERSE)
    SC_CHECK(sc, sc_status(sc, "\"active\":0", 3000));
}

static void sc_end(sc_t *sc) {
  if (sc->fd >= 0) close(sc->fd);
  pump(sc->f, 50);
  fx_free(sc->f);
  if (sc->srv >= 0) close(sc->srv);
  if (sc->has_ns) nsguest_stop(&sc->ns);
}

static int shape_mode(shape_t sh, phase_t ph) {
  if (ph == PH_RELAYING) return AG_NORMAL;
  return sh == SH_REVERSE ? AG_HOLD_ATTACH : AG_HOLD_OPEN;
}

static void lifetime_matrix(shape_t sh) {
  for (phase_t ph = PH_HANDSHAKE; ph <= PH_RELAYING; ph++) {
    /* One hop has no handshake; a flow's client cannot end it before OPEN_RESULT. */
    if (ph == PH_HANDSHAKE && (sh == SH_TCP_ONEHOP || sh == SH_UDP_ONEHOP)) continue;
    for (cause_t by = BY_CLIENT; by <= BY_SHUTDOWN; by++) {
      if (ph == PH_HANDSHAKE && sh == SH_UDP && by == BY_CLIENT) continue;
      sc_t sc;
      static const char *const ph_name[] = {"handshake", "relaying"};
      static const char *const by_name[] = {"client", "guest", "remove", "shutdown"};
      snprintf(fx_life, sizeof fx_life, "%s, %s, closed by %s", shape_name[sh], ph_name[ph],
               by_name[by]);
      sc_start(&sc, sh, shape_mode(sh, ph), NULL, 0);
      sc_open(&sc);
      sc_reach(&sc, ph);
      sc_teardown(&sc, ph, by);
      sc_end(&sc);
    }
  }
}

static void test_lifetime_tcp(void **state) { (void)state; lifetime_matrix(SH_TCP); }
static void test_lifetime_tcp_onehop(void **state) { (void)state; lifetime_matrix(SH_TCP_ONEHOP); }
static void test_lifetime_reverse(void **state) { (void)state; lifetime_matrix(SH_REVERSE); }
static void test_lifetime_udp(void **state) { (void)state; lifetime_matrix(SH_UDP); }
static void test_lifetime_udp_onehop(void **state) { (void)state; lifetime_matrix(SH_UDP_ONEHOP); }

/* One whole life of a connection of the shape (the session coming up, the
 * connection opened, relaying, its end, a tick), with the hook armed at
 * point: the guest removed, or the host shut down (done then frees the
 * host itself, as a caller may), from inside that callback. */
static void hook_life(shape_t sh, const char *point, int shutdown) {
  sc_t sc;
  snprintf(fx_life, sizeof fx_life, "%s, %s at %s", shape_name[sh],
           shutdown ? "shutdown" : "guest removed", point);
  sc_start(&sc, sh, AG_NORMAL, point, shutdown);
  sc.f->free_in_done = shutdown;
  sc_open(&sc);
  sc_reach(&sc, PH_RELAYING);
  if (sc.shape == SH_UDP_ONEHOP) {
    sc_guest_fails(&sc); /* the only way its server's socket calls back */
  } else if (sc_udp(&sc)) { /* idle: closed at a tick (only these points come that late) */
    pump(sc.f, strcmp(point, "tick") && strcmp(point, "relay-closed") ? 300 : 2500);
  } else {
    close(sc.fd);
    sc.fd = -1;
    pump(sc.f, strcmp(point, "tick") ? 300 : 1200);
  }
  if (!sc.f->hook_fired) fail_msg("%s: the hook point was never reached", fx_life);
  sc_end(&sc);
}

static void hook_lives(shape_t sh, const char *const *points) {
  for (const char *const *p = points; *p; p++)
    for (int shutdown = 0; shutdown <= 1; shutdown++) hook_life(sh, *p, shutdown);
}

static void test_teardown_in_callbacks_tcp(void **state) {
  (void)state;
  static const char *const points[] = {"session-connected", "welcome", "listener-report",
                                       "accept", "transport-connected", "handshake-read",
                                       "relay-closed", "tick", NULL};
  hook_lives(SH_TCP, points);
}

static void test_teardown_in_callbacks_tcp_onehop(void **state) {
  (void)state;
  static const char *const points[] = {"accept", "relay-closed", NULL};
  hook_lives(SH_TCP_ONEHOP, points);
}

static void test_teardown_in_callbacks_reverse(void **state) {
  (void)state;
  static const char *const points[] = {"reverse-open", "reverse-local-connected",
                                       "transport-connected", "handshake-read",
                                       "relay-closed", NULL};
  hook_lives(SH_REVERSE, points);
}

static void test_teardown_in_callbacks_udp(void **state) {
  (void)state;
  static const char *const points[] = {"udp-datagram", "transport-connected", "handshake-read",
                                       "udp-stream", "relay-closed", "tick", NULL};
  hook_lives(SH_UDP, points);
}

static void test_teardown_in_callbacks_udp_onehop(void **state) {
  (void)state;
  static const char *const points[] = {"udp-datagram", "udp-direct", "relay-closed", NULL};
  hook_lives(SH_UDP_ONEHOP, points);
}

/* Two one-hop UDP flows go idle at the same tick; the first one's close
 * (its relay calls back at once: no handle of its own is open) removes the
 * guest or shuts the host down, which closes the second flow while the
 * idle sweep is still walking the guest's connections. */
static void test_teardown_in_udp_idle_sweep(void **state) {
  (void)state;
  for (int shutdown = 0; shutdown <= 1; shutdown++) {
    sc_t sc;
    snprintf(fx_life, sizeof fx_life, "udp-onehop idle sweep, %s at relay-closed",
             shutdown ? "shutdown" : "guest removed");
    sc_start(&sc, SH_UDP_ONEHOP, AG_NORMAL, "relay-closed", shutdown);
    sc_open(&sc);
    int second = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_storage ss;
    lr_loopback_sockaddr(4, sc.port, &ss);
    assert_int_equal(connect(second, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
    assert_int_equal(send(second, "ping", 4, 0), 4);
    assert_true(sc_status(&sc, "\"active\":2", 2000));
    pump(sc.f, 2500); /* both idle: closed by the same sweep */
    assert_true(sc.f->hook_fired);
    close(second);
    sc_end(&sc);
  }
}

/* One hop with the namespace socket pool run dry: a burst of clients is
 * accepted in one loop turn, so the last ones wait for sockets
 * (WAIT_SOCKET). The guest is removed or the host shut down while they
 * wait, or from inside the pool's ready callback. */
static void test_teardown_waiting_for_sockets(void **state) {
  (void)state;
  enum { N = 48 }; /* three times the pool's 16 sockets per kind */
  static const char *const way_name[] = {"guest removed", "shutdown",
                                         "guest removed at ns-ready", "shutdown at ns-ready"};
  for (int way = 0; way < 4; way++) {
    sc_t sc;
    int fds[N];
    snprintf(fx_life, sizeof fx_life, "tcp-onehop burst, %s", way_name[way]);
    sc_start(&sc, SH_TCP_ONEHOP, AG_NORMAL, way >= 2 ? "ns-ready" : NULL, way & 1);
    for (int i = 0; i < N; i++) {
      fds[i] = client_connect(sc.port);
      assert_true(fds[i] >= 0);
    }
    uv_run(&sc.f->loop, UV_RUN_NOWAIT); /* one turn: every accept, the pool runs dry */
    if (way == 0) lr_host_remove_guest(lr_host_find_guest(sc.f->host, "g"));
    if (way == 1) {
      sc.f->shut = 1;
      lr_host_shutdown(sc.f->host, on_done, sc.f);
    }
    pump(sc.f, 500);
    if (way >= 2) assert_true(sc.f->hook_fired);
    for (int i = 0; i < N; i++) close(fds[i]);
    sc_end(&sc);
  }
}

int main(void) {
  char err[128] = "";
  if (unshare(CLONE_NEWNET) != 0 && unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0)
    snprintf(err, sizeof err, "unshare(CLONE_NEWNET): %s", strerror(errno));
  if (err[0]) {
    char reason[200];
    snprintf(reason, sizeof reason, "cannot get a network namespace of its own (%s)", err);
    return lr_test_group_unavailable("test_posix_host_core", reason);
  }
  lr_posix_init();
  lr_log_set_level(getenv("LR_TEST_DEBUG") ? LR_LOG_DEBUG : LR_LOG_ERROR);
  const struct CMUnitTest lo_down[] = {
      cmocka_unit_test(test_connect_fails_synchronously),
  };
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_connect_fails_asynchronously),
      cmocka_unit_test(test_vmsock_wrap_failure_closes_socket),
      cmocka_unit_test(test_vmsock_late_answer_is_closed),
      cmocka_unit_test(test_vmsock_answer_at_deadline_not_leaked),
      cmocka_unit_test(test_agent_closes_mid_handshake),
      cmocka_unit_test(test_control_drop_keeps_connections),
      cmocka_unit_test(test_conflict_then_forwarding),
      cmocka_unit_test(test_conflict_remapped),
      cmocka_unit_test(test_conflict_grace),
      cmocka_unit_test(test_reconfigure_and_remove_guest),
      cmocka_unit_test(test_agent_info_detection),
      cmocka_unit_test(test_close_notices),
      cmocka_unit_test(test_shutdown_with_live_connections),
      cmocka_unit_test(test_relay_peer_stops_reading),
      cmocka_unit_test(test_control_queue_budget),
      cmocka_unit_test(test_port_policy_denied),
      cmocka_unit_test(test_standin_budget),
      cmocka_unit_test(test_connection_budget),
      cmocka_unit_test(test_reverse_pending_budget),
      cmocka_unit_test(test_status_client_budget),
      cmocka_unit_test(test_fd_exhaustion_is_logged),
      cmocka_unit_test(test_listen_address_warning),
      cmocka_unit_test(test_one_hop_connects_in_namespace),
      cmocka_unit_test(test_agent_descriptors_refused),
      cmocka_unit_test(test_nsock_open_errors),
      cmocka_unit_test(test_keyed_handshake_relays),
      cmocka_unit_test(test_agent_bad_welcome_mac_refused),
      cmocka_unit_test(test_agent_bad_result_mac_relays_nothing),
      cmocka_unit_test(test_short_key_refused),
      cmocka_unit_test(test_posix_pal_crypto),
  };
  const struct CMUnitTest lifetimes[] = {
      cmocka_unit_test(test_lifetime_tcp),
      cmocka_unit_test(test_lifetime_tcp_onehop),
      cmocka_unit_test(test_lifetime_reverse),
      cmocka_unit_test(test_lifetime_udp),
      cmocka_unit_test(test_lifetime_udp_onehop),
      cmocka_unit_test(test_teardown_in_callbacks_tcp),
      cmocka_unit_test(test_teardown_in_callbacks_tcp_onehop),
      cmocka_unit_test(test_teardown_in_callbacks_reverse),
      cmocka_unit_test(test_teardown_in_callbacks_udp),
      cmocka_unit_test(test_teardown_in_callbacks_udp_onehop),
      cmocka_unit_test(test_teardown_in_udp_idle_sweep),
      cmocka_unit_test(test_teardown_waiting_for_sockets),
  };
  int failed = cmocka_run_group_tests_name("host_core_lo_down", lo_down, NULL, NULL);
  failed += cmocka_run_group_tests_name("host_core", tests, lo_up, NULL);
  return failed + cmocka_run_group_tests_name("host_core_lifetimes", lifetimes, lo_up, NULL);
}
