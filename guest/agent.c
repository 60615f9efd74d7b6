/* The guest agent's streams (see lr_agent.h).
 *
 * One object per accepted stream, with lr_relay_t embedded first so that a
 * data stream becomes its relay without a second allocation and the relay's
 * close callback hands back the whole object. The handshake receive buffer
 * is a separate allocation freed as soon as the relay starts: an idle
 * relayed connection then costs the relay and a few words, not 4 KiB more.
 *
 * Streams fail alone: bad magic, a wrong version, an oversized frame, a
 * wrong token or silence past the handshake timeout end that one stream
 * with one log line. Error replies are sent, then the write side is shut
 * and input drained briefly before the close, so the peer reads the reason
 * instead of a reset that discards it.
 *
 * Reverse forwarding (host ports published on the guest loopback): a guest
 * client accepted on a published port waits, unread, while the agent asks
 * the host over the control stream (REVERSE_OPEN); the host opens a reverse
 * stream and names the client in ATTACH, and the client's socket is handed
 * to that stream's relay. The host thus still opens every stream. */
#define _GNU_SOURCE /* struct ucred */
#include "lr_agent.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/vm_sockets.h>

#include "lr_guest_pal.h"
#include "lr_listeners.h"
#include "lr_log.h"
#include "lr_relay.h"
#include "lr_rxbuf.h"
#include "lr_sbuf.h"
#include "lr_sockdiag.h"
#include "lr_version.h"

#define DRAIN_MS 1000

typedef enum {
  PH_PREAMBLE,   /* waiting for the host's preamble */
  PH_HELLO,      /* control stream, waiting for HELLO */
  PH_CONTROL,    /* the active control stream */
  PH_OPEN,       /* data stream, waiting for OPEN */
  PH_CONNECTING, /* data stream, connecting to the guest server */
  PH_RELAY,      /* data stream handed to the relay */
  PH_ATTACH,     /* reverse stream, waiting for ATTACH */
  PH_REV_WAIT,   /* a guest client on a published port, waiting for its stream */
  PH_DRAIN,      /* reply sent, write side shut, discarding input until EOF */
  PH_CLOSED,
} phase_t;

typedef struct conn_s {
  lr_relay_t relay; /* first: the relay's close callback hands back the conn */
  lr_agent_t *agent;
  struct conn_s *prev, *next;
  lr_rxbuf_t *rx; /* handshake/control frames; freed once the relay runs */
  uv_timer_t timer;
  uv_connect_t creq;
  uv_shutdown_t sreq;
  phase_t phase;
  int timer_open;
  int relay_open;
  uint16_t port;   /* data streams: the guest port; reverse: the published port */
  uint8_t family;  /* data streams: 4 or 6 */
  uint32_t rev_id; /* PH_REV_WAIT: the id the host will ATTACH with */
  char peer[96];
} conn_t;

/* A published (reverse) listener on the guest loopback. */
typedef struct rlsn_s {
  uv_tcp_t tcp;
  lr_agent_t *agent;
  uint16_t port;
  uint8_t family;
  int open;           /* handle initialised: close before free */
  int bound;
  uint32_t inode;
} rlsn_t;

struct lr_agent_s {
  uv_loop_t *loop;
  const lr_pal_t *pal;
  char name[128];
  uint8_t token[LR_TOKEN_MAX];
  size_t token_len;
  unsigned scan_ms, handshake_ms;
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } lsn;
  int lsn_open;
  lr_ep_kind_t conn_kind;
  uint32_t own_inode;
  int have_own_inode;
  uv_timer_t scan_timer;
  int scan_timer_open;
  lr_sockdiag_t sd;
  lr_sockdiag_list_t raw;
  lr_listener_t *cur, *next, *adds, *dels;
  size_t ncur, cap; /* cap applies to all four arrays */
  char last_scan_err[256];
  conn_t *control;
  conn_t *conns;
  size_t nconns;
  int shutting_down;
  /* reverse forwarding */
  rlsn_t **rev;
  size_t nrev;
  unsigned rev_retry_ticks;
  uint32_t next_rev_id;
  uint32_t *own;      /* inodes never reported: the transport + published listeners */
  size_t nown;
};

static void conn_close(conn_t *c);
static void conn_finish(conn_t *c);
static void conn_process(conn_t *c);
static void reverse_close_all(lr_agent_t *a);
static void reverse_retry(lr_agent_t *a);
static void reverse_set(lr_agent_t *a, const lr_reverse_set_t *m);
static void reverse_reset(conn_t *c);
static conn_t *reverse_pending(lr_agent_t *a, uint32_t id);
static void handle_attach(conn_t *c, const lr_frame_t *f);

/* ---- scanning ---------------------------------------------------------- */

static int ensure_cap(lr_agent_t *a, size_t n) {
  if (n <= a->cap) return 0;
  size_t ncap = a->cap ? a->cap : 64;
  while (ncap < n) ncap *= 2;
  lr_listener_t **arr[4] = {&a->cur, &a->next, &a->adds, &a->dels};
  for (int i = 0; i < 4; i++) {
    lr_listener_t *p = realloc(*arr[i], ncap * sizeof *p);
    if (!p) return -1;
    *arr[i] = p;
  }
  a->cap = ncap;
  return 0;
}

/* Dumps the kernel's listeners into a->next; returns the count or -1. The
 * error is logged once per distinct message, not every 100 ms. */
static long scan_now(lr_agent_t *a) {
  char err[256] = "";
  a->raw.n = 0;
  if (lr_sockdiag_dump(&a->sd, &a->raw, err, sizeof err) != 0 ||
      ensure_cap(a, a->raw.n > a->ncur ? a->raw.n : a->ncur) != 0) {
    if (!err[0]) snprintf(err, sizeof err, "out of memory");
    if (strcmp(err, a->last_scan_err) != 0) {
      LR_ERROR("listener scan failed: %s", err);
      snprintf(a->last_scan_err, sizeof a->last_scan_err, "%s", err);
    }
    return -1;
  }
  if (a->last_scan_err[0]) {
    LR_INFO("listener scan works again");
    a->last_scan_err[0] = 0;
  }
  return (long)lr_listeners_from_dump(a->raw.v, a->raw.n, a->own, a->nown, a->next);
}

static void swap_in_next(lr_agent_t *a, size_t n) {
  lr_listener_t *t = a->cur;
  a->cur = a->next;
  a->next = t;
  a->ncur = n;
}

/* ---- writing ----------------------------------------------------------- */

typedef struct {
  uv_write_t req;
  conn_t *c;
  size_t len;
  uint8_t data[];
} wreq_t;

static void on_written(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  conn_t *c = w->c;
  free(w);
  if (status < 0 && c->phase != PH_CLOSED && c->phase != PH_DRAIN) {
    LR_INFO("stream from %s: write failed: %s", c->peer, uv_strerror(status));
    conn_close(c);
  }
}

static uv_stream_t *transport(conn_t *c) { return &c->relay.ep[1].u.stream; }

/* Queues bytes on the transport stream. 0, or -1 after closing c. */
static int conn_send(conn_t *c, const void *buf, size_t len) {
  if (c->phase == PH_CLOSED || len == 0) return c->phase == PH_CLOSED ? -1 : 0;
  if (c->phase == PH_CONTROL &&
      uv_stream_get_write_queue_size(transport(c)) > LR_AGENT_CONTROL_BACKLOG) {
    LR_WARN("control stream from %s: host is not reading (%zu bytes queued); closing it",
            c->peer, uv_stream_get_write_queue_size(transport(c)));
    conn_close(c);
    return -1;
  }
  wreq_t *w = malloc(sizeof *w + len);
  if (!w) {
    LR_ERROR("stream from %s: out of memory", c->peer);
    conn_close(c);
    return -1;
  }
  w->c = c;
  w->len = len;
  memcpy(w->data, buf, len);
  uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)len);
  int rc = uv_write(&w->req, transport(c), &b, 1, on_written);
  if (rc != 0) {
    free(w);
    LR_INFO("stream from %s: write failed: %s", c->peer, uv_strerror(rc));
    conn_close(c);
    return -1;
  }
  return 0;
}

static int send_preamble(conn_t *c, uint8_t kind) {
  uint8_t p[LR_PREAMBLE_LEN];
  lr_preamble_encode(p, kind);
  return conn_send(c, p, sizeof p);
}

/* Sends an ERROR frame and ends the stream gracefully. */
static void fail_stream(conn_t *c, uint32_t code, const char *text) {
  uint8_t f[LR_FRAME_HDR_LEN + 4 + 2 + LR_TEXT_MAX];
  size_t n = lr_encode_error(f, sizeof f, code, text);
  if (conn_send(c, f, n) == 0) conn_finish(c);
}

static void send_open_result(conn_t *c, uint32_t status, const char *text, int finish) {
  uint8_t f[LR_FRAME_HDR_LEN + 4 + 2 + LR_TEXT_MAX];
  size_t n = lr_encode_open_result(f, sizeof f, status, text);
  if (conn_send(c, f, n) == 0 && finish) conn_finish(c);
}

static void sbuf_listener(lr_sbuf_t *b, uint16_t type, const lr_listener_t *l) {
  uint8_t f[64];
  size_t n = lr_encode_listener(f, sizeof f, type, l);
  lr_sbuf_append(b, (const char *)f, n);
}

static void log_listener(const char *what, const lr_listener_t *l) {
  char s[80];
  LR_DEBUG("%s %s%s", what, lr_listener_format(l, s, sizeof s),
           (l->flags & LR_LISTENER_V6ONLY) ? " (v6only)" : "");
}

/* The full listing a new control stream starts with. */
static void send_full_listing(lr_agent_t *a, conn_t *c) {
  long n = scan_now(a);
  if (n >= 0) swap_in_next(a, (size_t)n);
  lr_sbuf_t b;
  lr_sbuf_init(&b);
  for (size_t i = 0; i < a->ncur; i++) {
    log_listener("listener", &a->cur[i]);
    sbuf_listener(&b, LR_MSG_LISTENER_ADD, &a->cur[i]);
  }
  uint8_t f[16];
  lr_sbuf_append(&b, (const char *)f, lr_encode_empty(f, sizeof f, LR_MSG_SYNC_DONE));
  if (b.err) {
    LR_ERROR("control stream from %s: out of memory building the listener list", c->peer);
    conn_close(c);
  } else {
    conn_send(c, b.p, b.len);
    LR_INFO("control stream from %s: sent %zu listener(s)", c->peer, a->ncur);
  }
  lr_sbuf_free(&b);
}

static void on_scan_timer(uv_timer_t *t) {
  lr_agent_t *a = t->data;
  if (!a->control) return;
  if (++a->rev_retry_ticks * a->scan_ms >= 1000) {
    a->rev_retry_ticks = 0;
    reverse_retry(a);
  }
  long n = scan_now(a);
  if (n < 0) return;
  size_t nadds, ndels;
  lr_listeners_diff(a->cur, a->ncur, a->next, (size_t)n, a->adds, &nadds, a->dels, &ndels);
  swap_in_next(a, (size_t)n);
  if (nadds == 0 && ndels == 0) return;
  lr_sbuf_t b;
  lr_sbuf_init(&b);
  /* Removals first: a listener that changed only its V6ONLY flag must drop
   * its old host bindings before the new ones are requested. */
  for (size_t i = 0; i < ndels; i++) {
    log_listener("listener gone:", &a->dels[i]);
    sbuf_listener(&b, LR_MSG_LISTENER_DEL, &a->dels[i]);
  }
  for (size_t i = 0; i < nadds; i++) {
    log_listener("new listener:", &a->adds[i]);
    sbuf_listener(&b, LR_MSG_LISTENER_ADD, &a->adds[i]);
  }
  if (b.err)
    conn_close(a->control);
  else
    conn_send(a->control, b.p, b.len);
  lr_sbuf_free(&b);
}

/* ---- stream lifecycle -------------------------------------------------- */

static void conn_maybe_free(conn_t *c) {
  if (c->timer_open || c->relay_open) return;
  lr_agent_t *a = c->agent;
  if (c->prev)
    c->prev->next = c->next;
  else
    a->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  a->nconns--;
  free(c->rx);
  free(c);
}

static void on_timer_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  c->timer_open = 0;
  conn_maybe_free(c);
}

static void close_timer(conn_t *c) {
  if (c->timer_open && !uv_is_closing((uv_handle_t *)&c->timer))
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void on_relay_closed(lr_relay_t *r) {
  conn_t *c = (conn_t *)r;
  c->relay_open = 0;
  if (c->phase != PH_CLOSED) {
    c->phase = PH_CLOSED;
    close_timer(c);
  }
  conn_maybe_free(c);
}

static void stop_control(conn_t *c) {
  lr_agent_t *a = c->agent;
  if (a->control != c) return;
  a->control = NULL;
  if (a->scan_timer_open) uv_timer_stop(&a->scan_timer);
  /* Nobody could serve a guest client of a published port now: refused
   * is the honest answer until the host is back and publishes again. */
  reverse_close_all(a);
}

static void conn_close(conn_t *c) {
  if (c->phase == PH_CLOSED) return;
  stop_control(c);
  c->phase = PH_CLOSED;
  close_timer(c);
  lr_relay_close(&c->relay, 0);
}

static void on_drain_timeout(uv_timer_t *t) {
  conn_close(t->data);
}

static void on_shutdown_done(uv_shutdown_t *req, int status) {
  conn_t *c = req->data;
  if (status < 0 && c->phase == PH_DRAIN) conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Ends a stream after its last reply: shut the write side once queued
 * writes are out, discard input until the peer closes (bounded by a timer). */
static void conn_finish(conn_t *c) {
  if (c->phase == PH_CLOSED || c->phase == PH_DRAIN) return;
  stop_control(c);
  c->phase = PH_DRAIN;
  c->sreq.data = c;
  if (uv_shutdown(&c->sreq, transport(c), on_shutdown_done) != 0) {
    conn_close(c);
    return;
  }
  uv_read_start(transport(c), on_alloc, on_read);
  uv_timer_start(&c->timer, on_drain_timeout, DRAIN_MS, 0);
}

/* ---- reading and the handshake ----------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn_t *c = h->data;
  size_t avail = 0;
  (void)suggested;
  if (c->phase == PH_DRAIN) lr_rxbuf_init(c->rx); /* discarding */
  uint8_t *p = lr_rxbuf_space(c->rx, &avail);
  *buf = uv_buf_init((char *)p, (unsigned)avail);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = s->data;
  (void)buf;
  if (nread == 0) return;
  if (c->phase == PH_CLOSED) return;
  if (nread < 0) {
    if (c->phase == PH_DRAIN) {
      conn_close(c);
    } else if (nread == UV_EOF) {
      if (c->phase == PH_CONTROL)
        LR_INFO("control stream from %s closed by the host", c->peer);
      else
        LR_WARN("stream from %s: premature end of stream during the handshake", c->peer);
      conn_close(c);
    } else if (nread == UV_ENOBUFS) {
      LR_WARN("stream from %s: receive buffer full; closing", c->peer);
      conn_close(c);
    } else {
      LR_INFO("stream from %s: read failed: %s", c->peer, uv_strerror((int)nread));
      conn_close(c);
    }
    return;
  }
  lr_rxbuf_commit(c->rx, (size_t)nread);
  if (c->phase != PH_DRAIN) conn_process(c);
}

static void on_handshake_timeout(uv_timer_t *t) {
  conn_t *c = t->data;
  if (c->phase == PH_CONNECTING) {
    char text[128];
    snprintf(text, sizeof text, "connect to %s:%u in the guest timed out",
             c->family == 6 ? "[::1]" : "127.0.0.1", c->port);
    LR_WARN("data stream from %s: %s", c->peer, text);
    send_open_result(c, LR_ERR_TIMEOUT, text, 1);
    return;
  }
  LR_WARN("stream from %s: no complete handshake within %u ms; closing", c->peer,
          c->agent->handshake_ms);
  conn_close(c);
}

static uint32_t map_connect_error(int status) {
  switch (status) {
    case UV_ECONNREFUSED:
      return LR_ERR_REFUSED;
    case UV_ENETUNREACH:
    case UV_EHOSTUNREACH:
    case UV_EADDRNOTAVAIL:
    case UV_EAFNOSUPPORT:
    case UV_ENETDOWN:
      return LR_ERR_UNREACHABLE;
    case UV_ETIMEDOUT:
      return LR_ERR_TIMEOUT;
    default:
      return LR_ERR_INTERNAL;
  }
}

static void on_connected(uv_connect_t *req, int status) {
  conn_t *c = req->data;
  if (c->phase != PH_CONNECTING) return; /* closing, or timed out already */
  const char *where = c->family == 6 ? "[::1]" : "127.0.0.1";
  if (status < 0) {
    char text[128];
    snprintf(text, sizeof text, "connect to %s:%u in the guest failed: %s", where, c->port,
             uv_strerror(status));
    LR_DEBUG("data stream from %s: %s", c->peer, text);
    send_open_result(c, map_connect_error(status), text, 1);
    return;
  }
  send_open_result(c, LR_OK, "", 0);
  if (c->phase == PH_CLOSED) return;
  LR_DEBUG("data stream from %s: relaying to %s:%u", c->peer, where, c->port);
  c->phase = PH_RELAY;
  uv_timer_stop(&c->timer);
  close_timer(c);
  size_t n;
  const uint8_t *rest = lr_rxbuf_rest(c->rx, &n);
  /* Bytes the host sent after OPEN were read from the transport and belong
   * to the server: exactly lr_relay_start's pending (ep[1] -> ep[0]). */
  int rc = lr_relay_start(&c->relay, rest, n);
  free(c->rx);
  c->rx = NULL;
  if (rc != 0) LR_WARN("data stream from %s: relay failed to start: %s", c->peer, uv_strerror(rc));
}

static int token_ok(lr_agent_t *a, const uint8_t *tok, size_t len) {
  if (a->token_len == 0) return 1;
  return lr_token_equal(tok, len, a->token, a->token_len);
}

static void handle_open(conn_t *c, const lr_frame_t *f) {
  lr_agent_t *a = c->agent;
  if (f->type != LR_MSG_OPEN) {
    LR_WARN("data stream from %s: expected OPEN, got %s (type %u); closing", c->peer,
            lr_msg_name(f->type), f->type);
    fail_stream(c, LR_ERR_PROTOCOL, "expected OPEN as the first frame of a data stream");
    return;
  }
  lr_open_t o;
  int rc = lr_decode_open(f, &o);
  if (rc != LR_PROTO_OK) {
    LR_WARN("data stream from %s: malformed OPEN: %s; closing", c->peer, lr_proto_strerror(rc));
    fail_stream(c, LR_ERR_PROTOCOL, "malformed OPEN frame");
    return;
  }
  if (!token_ok(a, o.token, o.token_len)) {
    LR_WARN("data stream from %s: wrong token; refused", c->peer);
    send_open_result(c, LR_ERR_AUTH, "wrong token", 1);
    return;
  }
  c->family = o.family;
  c->port = o.port;
  /* Stop reading: anything further belongs to the server, and the relay
   * reads it once the server connection exists. */
  uv_read_stop(transport(c));
  c->phase = PH_CONNECTING;

  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (o.family == 6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_addr = in6addr_loopback;
    s6->sin6_port = htons(o.port);
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    s4->sin_family = AF_INET;
    s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s4->sin_port = htons(o.port);
  }
  uv_tcp_init(a->loop, &c->relay.ep[0].u.tcp);
  lr_relay_mark_open(&c->relay, 0, LR_EP_TCP);
  c->creq.data = c;
  rc = uv_tcp_connect(&c->creq, &c->relay.ep[0].u.tcp, (struct sockaddr *)&ss, on_connected);
  if (rc != 0) {
    char text[128];
    snprintf(text, sizeof text, "connect to port %u in the guest failed: %s", o.port,
             uv_strerror(rc));
    LR_INFO("data stream from %s: %s", c->peer, text);
    send_open_result(c, map_connect_error(rc), text, 1);
  }
}

static void handle_hello(conn_t *c, const lr_frame_t *f) {
  lr_agent_t *a = c->agent;
  if (f->type != LR_MSG_HELLO) {
    LR_WARN("control stream from %s: expected HELLO, got %s (type %u); closing", c->peer,
            lr_msg_name(f->type), f->type);
    fail_stream(c, LR_ERR_PROTOCOL, "expected HELLO as the first frame of a control stream");
    return;
  }
  lr_hello_t h;
  int rc = lr_decode_hello(f, &h);
  if (rc != LR_PROTO_OK) {
    LR_WARN("control stream from %s: malformed HELLO: %s; closing", c->peer,
            lr_proto_strerror(rc));
    fail_stream(c, LR_ERR_PROTOCOL, "malformed HELLO frame");
    return;
  }
  if (!token_ok(a, h.token, h.token_len)) {
    LR_WARN("control stream from %s (host '%s'): wrong token; refused", c->peer, h.name);
    fail_stream(c, LR_ERR_AUTH, "wrong token");
    return;
  }
  lr_hello_t w;
  memset(&w, 0, sizeof w);
  snprintf(w.name, sizeof w.name, "%s", a->name);
  snprintf(w.version, sizeof w.version, "%s", LR_VERSION_STRING);
  uint8_t buf[LR_FRAME_HDR_LEN + 1 + LR_TOKEN_MAX + 2 + sizeof w.name + 2 + sizeof w.version];
  size_t n = lr_encode_hello(buf, sizeof buf, LR_MSG_WELCOME, &w);
  if (conn_send(c, buf, n) != 0) return;

  if (a->control && a->control != c) {
    /* The host reconnected (or restarted): the old stream is stale. */
    LR_INFO("control stream from %s replaces the one from %s", c->peer, a->control->peer);
    conn_close(a->control);
  }
  LR_INFO("control stream from %s: host '%s' version %s", c->peer, h.name, h.version);
  a->control = c;
  c->phase = PH_CONTROL;
  uv_timer_stop(&c->timer);
  send_full_listing(a, c);
  if (c->phase == PH_CONTROL && a->scan_timer_open)
    uv_timer_start(&a->scan_timer, on_scan_timer, a->scan_ms, a->scan_ms);
}

static void handle_control_frame(conn_t *c, const lr_frame_t *f) {
  switch (f->type) {
    case LR_MSG_PING: {
      uint64_t nonce;
      if (lr_decode_ping(f, &nonce) != LR_PROTO_OK) {
        LR_WARN("control stream from %s: malformed PING skipped", c->peer);
        return;
      }
      uint8_t out[32];
      conn_send(c, out, lr_encode_ping(out, sizeof out, LR_MSG_PONG, nonce));
      return;
    }
    case LR_MSG_PORT_STATE: {
      lr_port_state_msg_t m;
      char s[80];
      if (lr_decode_port_state(f, &m) != LR_PROTO_OK) {
        LR_WARN("control stream from %s: malformed PORT_STATE skipped", c->peer);
        return;
      }
      lr_listener_format(&m.listener, s, sizeof s);
      switch ((lr_port_state_t)m.state) {
        case LR_PORT_CONFLICT:
          LR_WARN("host could not bind port %u for %s: conflict (it retries)", m.host_port, s);
          break;
        case LR_PORT_REMAPPED:
          LR_INFO("host forwards %s on port %u (remapped)", s, m.host_port);
          break;
        case LR_PORT_IGNORED:
          LR_INFO("host ignores %s", s);
          break;
        case LR_PORT_FORWARDING:
          LR_INFO("host forwards %s on port %u", s, m.host_port);
          break;
      }
      return;
    }
    case LR_MSG_ERROR: {
      lr_error_msg_t e;
      if (lr_decode_error(f, &e) == LR_PROTO_OK)
        LR_WARN("control stream from %s: host reported %s: %s", c->peer, lr_err_name(e.code),
                e.text);
      else
        LR_WARN("control stream from %s: host reported a malformed error", c->peer);
      conn_close(c);
      return;
    }
    case LR_MSG_PONG:
      return;
    case LR_MSG_REVERSE_SET: {
      static lr_reverse_set_t m; /* 2 KiB; the loop is single-threaded */
      if (lr_decode_reverse_set(f, &m) != LR_PROTO_OK) {
        LR_WARN("control stream from %s: malformed REVERSE_SET skipped", c->peer);
        return;
      }
      reverse_set(c->agent, &m);
      return;
    }
    case LR_MSG_REVERSE_FAIL: {
      uint32_t id;
      lr_error_msg_t e;
      if (lr_decode_reverse_fail(f, &id, &e) != LR_PROTO_OK) {
        LR_WARN("control stream from %s: malformed REVERSE_FAIL skipped", c->peer);
        return;
      }
      conn_t *p = reverse_pending(c->agent, id);
      if (p) {
        LR_INFO("guest connection to localhost:%u: the host cannot serve it (%s%s%s): reset",
                p->port, lr_err_name(e.code), e.text[0] ? ": " : "", e.text);
        reverse_reset(p);
      }
      return;
    }
    default:
      /* Newer hosts may send what this agent does not know yet. */
      LR_DEBUG("control stream from %s: skipping %s frame (type %u, %u bytes)", c->peer,
               lr_msg_name(f->type), f->type, f->len);
      return;
  }
}

static void conn_process(conn_t *c) {
  while (c->phase == PH_PREAMBLE || c->phase == PH_HELLO || c->phase == PH_CONTROL ||
         c->phase == PH_OPEN || c->phase == PH_ATTACH) {
    if (c->phase == PH_PREAMBLE) {
      lr_preamble_t p;
      int rc = lr_rxbuf_preamble(c->rx, &p);
      if (rc == LR_PROTO_NEED_MORE) return;
      if (rc == LR_PROTO_EBADMAGIC) {
        LR_WARN("stream from %s: not a lorelay stream (bad magic); closing", c->peer);
        conn_close(c);
        return;
      }
      if (rc == LR_PROTO_EVERSION) {
        char text[128];
        snprintf(text, sizeof text,
                 "lorelay-agent %s speaks protocol version %d, the host sent version %u",
                 LR_VERSION_STRING, LR_PROTO_VERSION, p.version);
        LR_ERROR("stream from %s: %s; closing", c->peer, text);
        if (send_preamble(c, p.kind == LR_STREAM_DATA ? LR_STREAM_DATA : LR_STREAM_CONTROL) == 0)
          fail_stream(c, LR_ERR_VERSION, text);
        return;
      }
      if (rc != LR_PROTO_OK) {
        LR_WARN("stream from %s: bad preamble (%s); closing", c->peer, lr_proto_strerror(rc));
        conn_close(c);
        return;
      }
      if (send_preamble(c, p.kind) != 0) return;
      c->phase = p.kind == LR_STREAM_CONTROL ? PH_HELLO
                 : p.kind == LR_STREAM_REVERSE ? PH_ATTACH
                                               : PH_OPEN;
      continue;
    }
    lr_frame_t f;
    int rc = lr_rxbuf_frame(c->rx, &f);
    if (rc == LR_PROTO_NEED_MORE) return;
    if (rc != LR_PROTO_OK) {
      LR_WARN("stream from %s: %s; closing", c->peer, lr_proto_strerror(rc));
      fail_stream(c, LR_ERR_PROTOCOL, lr_proto_strerror(rc));
      return;
    }
    if (c->phase == PH_HELLO)
      handle_hello(c, &f);
    else if (c->phase == PH_OPEN)
      handle_open(c, &f);
    else if (c->phase == PH_ATTACH)
      handle_attach(c, &f);
    else
      handle_control_frame(c, &f);
  }
}

/* ---- reverse forwarding --------------------------------------------------- */

static void own_rebuild(lr_agent_t *a) {
  size_t n = (a->have_own_inode ? 1 : 0);
  for (size_t i = 0; i < a->nrev; i++) n += a->rev[i]->bound;
  uint32_t *own = realloc(a->own, (n ? n : 1) * sizeof *own);
  if (!own) return; /* keeps the old list: at worst a published port is reported */
  a->own = own;
  a->nown = 0;
  if (a->have_own_inode) own[a->nown++] = a->own_inode;
  for (size_t i = 0; i < a->nrev; i++)
    if (a->rev[i]->bound) own[a->nown++] = a->rev[i]->inode;
}

static void rlsn_free(uv_handle_t *h) { free(h->data); }

static void reverse_close_all(lr_agent_t *a) {
  for (size_t i = 0; i < a->nrev; i++) {
    rlsn_t *r = a->rev[i];
    r->tcp.data = r;
    if (r->open)
      uv_close((uv_handle_t *)&r->tcp, rlsn_free);
    else
      free(r);
  }
  free(a->rev);
  a->rev = NULL;
  a->nrev = 0;
  own_rebuild(a);
}

static void reverse_reset(conn_t *c) {
  if (c->phase == PH_CLOSED) return;
  c->phase = PH_CLOSED;
  close_timer(c);
  lr_relay_close(&c->relay, 1);
}

static conn_t *reverse_pending(lr_agent_t *a, uint32_t id) {
  for (conn_t *c = a->conns; c; c = c->next)
    if (c->phase == PH_REV_WAIT && c->rev_id == id) return c;
  return NULL;
}

static void on_rev_timeout(uv_timer_t *t) {
  conn_t *c = t->data;
  LR_WARN("guest connection to localhost:%u: the host opened no stream within %u ms: reset",
          c->port, c->agent->handshake_ms);
  reverse_reset(c);
}

static void on_reverse_connection(uv_stream_t *server, int status) {
  rlsn_t *r = server->data;
  lr_agent_t *a = r->agent;
  if (status < 0) return;
  conn_t *c = calloc(1, sizeof *c);
  if (!c) return;
  c->agent = a;
  c->port = r->port;
  c->family = r->family;
  snprintf(c->peer, sizeof c->peer, "guest client of %s:%u",
           r->family == 6 ? "[::1]" : "127.0.0.1", r->port);
  lr_relay_init(&c->relay, a->pal, on_relay_closed, a);
  uv_tcp_init(a->loop, &c->relay.ep[0].u.tcp);
  lr_relay_mark_open(&c->relay, 0, LR_EP_TCP);
  c->relay_open = 1;
  uv_timer_init(a->loop, &c->timer);
  c->timer.data = c;
  c->timer_open = 1;
  c->next = a->conns;
  if (a->conns) a->conns->prev = c;
  a->conns = c;
  a->nconns++;
  c->phase = PH_REV_WAIT;
  if (uv_accept(server, &c->relay.ep[0].u.stream) != 0 || !a->control) {
    reverse_reset(c);
    return;
  }
  /* Not read until attached: whatever the client sends waits in the kernel. */
  c->rev_id = ++a->next_rev_id;
  lr_reverse_open_t m = {c->rev_id, r->family, r->port};
  uint8_t f[32];
  if (conn_send(a->control, f, lr_encode_reverse_open(f, sizeof f, &m)) != 0) {
    reverse_reset(c);
    return;
  }
  LR_DEBUG("%s: asked the host for a stream (id %u)", c->peer, c->rev_id);
  uv_timer_start(&c->timer, on_rev_timeout, a->handshake_ms, 0);
}

static void rlsn_bind(lr_agent_t *a, rlsn_t *r) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (r->family == 6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_addr = in6addr_loopback;
    s6->sin6_port = htons(r->port);
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    s4->sin_family = AF_INET;
    s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s4->sin_port = htons(r->port);
  }
  int first = !r->open;
  if (r->open) { /* a failed earlier attempt: start from a fresh socket */
    uv_handle_t *old = (uv_handle_t *)&r->tcp;
    rlsn_t *n = calloc(1, sizeof *n);
    if (!n) return;
    *n = (rlsn_t){.agent = a, .port = r->port, .family = r->family};
    for (size_t i = 0; i < a->nrev; i++)
      if (a->rev[i] == r) a->rev[i] = n;
    old->data = r;
    uv_close(old, rlsn_free);
    r = n;
  }
  int rc = uv_tcp_init_ex(a->loop, &r->tcp, r->family == 6 ? AF_INET6 : AF_INET);
  if (rc) {
    if (first)
      LR_WARN("publishing host port %u on the guest's %s: %s", r->port,
              r->family == 6 ? "[::1]" : "127.0.0.1", uv_strerror(rc));
    return;
  }
  r->open = 1;
  r->tcp.data = r;
  rc = uv_tcp_bind(&r->tcp, (struct sockaddr *)&ss, r->family == 6 ? UV_TCP_IPV6ONLY : 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&r->tcp, 511, on_reverse_connection);
  if (rc) {
    if (first)
      LR_WARN("publishing host port %u on the guest's %s: %s (a guest program has it; retrying)",
              r->port, r->family == 6 ? "[::1]" : "127.0.0.1", uv_strerror(rc));
    return;
  }
  uv_os_fd_t fd;
  struct stat st;
  if (uv_fileno((uv_handle_t *)&r->tcp, &fd) == 0 && fstat(fd, &st) == 0)
    r->inode = (uint32_t)st.st_ino;
  r->bound = 1;
  LR_INFO("guest %s:%u now reaches the host's localhost:%u",
          r->family == 6 ? "[::1]" : "127.0.0.1", r->port, r->port);
}

static void reverse_set(lr_agent_t *a, const lr_reverse_set_t *m) {
  reverse_close_all(a);
  size_t want = (size_t)m->n * ((m->flags & LR_REVERSE_IPV6) ? 2 : 1);
  if (!want) return;
  a->rev = calloc(want, sizeof *a->rev);
  if (!a->rev) return;
  for (size_t i = 0; i < m->n; i++)
    for (int fam = 4; fam <= 6; fam += 2) {
      if (fam == 6 && !(m->flags & LR_REVERSE_IPV6)) continue;
      rlsn_t *r = calloc(1, sizeof *r);
      if (!r) continue;
      *r = (rlsn_t){.agent = a, .port = m->ports[i], .family = (uint8_t)fam};
      a->rev[a->nrev++] = r;
      rlsn_bind(a, r);
    }
  own_rebuild(a);
}

static void reverse_retry(lr_agent_t *a) {
  int changed = 0;
  for (size_t i = 0; i < a->nrev; i++) {
    if (a->rev[i]->bound) continue;
    rlsn_bind(a, a->rev[i]);
    changed |= a->rev[i]->bound;
  }
  if (changed) own_rebuild(a);
}

/* The first frame of a reverse stream names the waiting guest client. */
static void handle_attach(conn_t *c, const lr_frame_t *f) {
  lr_agent_t *a = c->agent;
  lr_attach_t at;
  if (f->type != LR_MSG_ATTACH || lr_decode_attach(f, &at) != LR_PROTO_OK) {
    LR_WARN("reverse stream from %s: expected a valid ATTACH, got %s; closing", c->peer,
            lr_msg_name(f->type));
    fail_stream(c, LR_ERR_PROTOCOL, "expected ATTACH as the first frame of a reverse stream");
    return;
  }
  if (!token_ok(a, at.token, at.token_len)) {
    LR_WARN("reverse stream from %s: wrong token; refused", c->peer);
    send_open_result(c, LR_ERR_AUTH, "wrong token", 1);
    return;
  }
  conn_t *p = reverse_pending(a, at.id);
  if (!p) {
    LR_INFO("reverse stream from %s: no guest client waits under id %u (timed out?)", c->peer,
            at.id);
    send_open_result(c, LR_ERR_REFUSED, "no such guest connection", 1);
    return;
  }
  /* Hand the client's socket to this stream's relay: a duplicate of the fd
   * keeps it open (and unread) while the waiting record closes. */
  uv_os_fd_t fd;
  int nfd = -1;
  if (uv_fileno(&p->relay.ep[0].u.handle, &fd) == 0) nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (nfd < 0 || uv_tcp_init(a->loop, &c->relay.ep[0].u.tcp) != 0) {
    if (nfd >= 0) close(nfd);
    send_open_result(c, LR_ERR_INTERNAL, "cannot take over the guest connection", 1);
    reverse_reset(p);
    return;
  }
  lr_relay_mark_open(&c->relay, 0, LR_EP_TCP);
  if (uv_tcp_open(&c->relay.ep[0].u.tcp, nfd) != 0) {
    close(nfd);
    send_open_result(c, LR_ERR_INTERNAL, "cannot take over the guest connection", 1);
    reverse_reset(p);
    return;
  }
  c->port = p->port;
  c->family = p->family;
  p->phase = PH_CLOSED;
  close_timer(p);
  lr_relay_close(&p->relay, 0); /* closes our copy only: the client stays connected */
  send_open_result(c, LR_OK, "", 0);
  if (c->phase == PH_CLOSED) return;
  LR_DEBUG("reverse stream from %s: relaying guest client of localhost:%u", c->peer, c->port);
  c->phase = PH_RELAY;
  uv_timer_stop(&c->timer);
  close_timer(c);
  uv_read_stop(transport(c));
  size_t n;
  const uint8_t *rest = lr_rxbuf_rest(c->rx, &n);
  int rc = lr_relay_start(&c->relay, rest, n);
  free(c->rx);
  c->rx = NULL;
  if (rc != 0) LR_WARN("reverse stream from %s: relay failed to start: %s", c->peer, uv_strerror(rc));
}

/* ---- accepting --------------------------------------------------------- */

static void describe_peer(conn_t *c) {
  uv_os_fd_t fd;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  snprintf(c->peer, sizeof c->peer, "unknown peer");
  if (uv_fileno(&c->relay.ep[1].u.handle, &fd) != 0) return;
  memset(&ss, 0, sizeof ss);
  if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0) return;
  if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
    char ip[64] = "?";
    int port;
    if (ss.ss_family == AF_INET) {
      struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
      inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
      port = ntohs(s4->sin_port);
      snprintf(c->peer, sizeof c->peer, "tcp:%s:%d", ip, port);
    } else {
      struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
      inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
      port = ntohs(s6->sin6_port);
      snprintf(c->peer, sizeof c->peer, "tcp:[%s]:%d", ip, port);
    }
  } else if (ss.ss_family == AF_VSOCK) {
    struct sockaddr_vm *vm = (struct sockaddr_vm *)&ss;
    snprintf(c->peer, sizeof c->peer, "vsock:%u:%u", vm->svm_cid, vm->svm_port);
  } else if (ss.ss_family == AF_UNIX) {
    struct ucred cr;
    socklen_t crlen = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == 0)
      snprintf(c->peer, sizeof c->peer, "unix peer pid %d uid %u", (int)cr.pid,
               (unsigned)cr.uid);
    else
      snprintf(c->peer, sizeof c->peer, "unix peer");
  }
}

static void on_connection(uv_stream_t *server, int status) {
  lr_agent_t *a = server->data;
  if (status < 0) {
    /* EMFILE repeats for every pending stream: say it once a minute. */
    static uint64_t last_warn;
    uint64_t now = uv_now(a->loop);
    if (!last_warn || now - last_warn >= 60000) {
      last_warn = now;
      LR_WARN("accept failed: %s%s", uv_strerror(status),
              status == UV_EMFILE ? " (raise the open-files limit: LimitNOFILE= / ulimit -n)" : "");
    }
    return;
  }
  conn_t *c = calloc(1, sizeof *c);
  if (!c) {
    LR_ERROR("out of memory accepting a stream");
    return;
  }
  /* Without its receive buffer the stream is still accepted, then closed
   * below: libuv stops accepting while a connection is left pending. */
  c->rx = malloc(sizeof *c->rx);
  if (c->rx) lr_rxbuf_init(c->rx);
  c->agent = a;
  lr_relay_init(&c->relay, a->pal, on_relay_closed, a);
  if (a->conn_kind == LR_EP_PIPE)
    uv_pipe_init(a->loop, &c->relay.ep[1].u.pipe, 0);
  else
    uv_tcp_init(a->loop, &c->relay.ep[1].u.tcp);
  lr_relay_mark_open(&c->relay, 1, a->conn_kind);
  c->relay_open = 1;
  uv_timer_init(a->loop, &c->timer);
  c->timer.data = c;
  c->timer_open = 1;
  c->next = a->conns;
  if (a->conns) a->conns->prev = c;
  a->conns = c;
  a->nconns++;
  c->phase = PH_PREAMBLE;

  int rc = uv_accept(server, transport(c));
  if (rc != 0) {
    LR_WARN("accept failed: %s", uv_strerror(rc));
    conn_close(c);
    return;
  }
  if (!c->rx) {
    LR_ERROR("out of memory accepting a stream");
    conn_close(c);
    return;
  }
  if (a->conn_kind == LR_EP_TCP) uv_tcp_nodelay(&c->relay.ep[1].u.tcp, 1);
  describe_peer(c);
  LR_DEBUG("stream from %s accepted", c->peer);
  uv_timer_start(&c->timer, on_handshake_timeout, a->handshake_ms, 0);
  rc = uv_read_start(transport(c), on_alloc, on_read);
  if (rc != 0) {
    LR_WARN("stream from %s: cannot read: %s", c->peer, uv_strerror(rc));
    conn_close(c);
  }
}

/* ---- public ------------------------------------------------------------ */

lr_agent_t *lr_agent_new(uv_loop_t *loop, const lr_agent_opts_t *o, char *err, size_t errlen) {
  lr_agent_t *a = calloc(1, sizeof *a);
  if (!a) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  a->loop = loop;
  a->pal = o->pal ? o->pal : &lr_guest_pal;
  snprintf(a->name, sizeof a->name, "%s", o->name ? o->name : "");
  if (o->token_len > LR_TOKEN_MAX) {
    snprintf(err, errlen, "token longer than %d bytes", LR_TOKEN_MAX);
    free(a);
    return NULL;
  }
  if (o->token_len) memcpy(a->token, o->token, o->token_len);
  a->token_len = o->token_len;
  a->scan_ms = o->scan_interval_ms ? o->scan_interval_ms : 100;
  a->handshake_ms = o->handshake_timeout_ms ? o->handshake_timeout_ms : LR_AGENT_HANDSHAKE_MS;
  lr_sockdiag_list_init(&a->raw);
  if (lr_sockdiag_open(&a->sd, err, errlen) != 0) {
    free(a);
    return NULL;
  }
  if (ensure_cap(a, 64) != 0) {
    snprintf(err, errlen, "out of memory");
    lr_agent_free(a);
    return NULL;
  }
  uv_timer_init(loop, &a->scan_timer);
  a->scan_timer.data = a;
  a->scan_timer_open = 1;
  return a;
}

int lr_agent_serve_fd(lr_agent_t *a, int fd, char *err, size_t errlen) {
  int family = 0;
  socklen_t len = sizeof family;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) != 0) {
    snprintf(err, errlen, "fd %d is not a socket: %s", fd, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) == 0) {
    a->own_inode = (uint32_t)st.st_ino;
    a->have_own_inode = 1;
  }
  own_rebuild(a);
  int rc;
  if (family == AF_UNIX) {
    a->conn_kind = LR_EP_PIPE;
    uv_pipe_init(a->loop, &a->lsn.pipe, 0);
    rc = uv_pipe_open(&a->lsn.pipe, fd);
  } else {
    /* TCP, and AF_VSOCK, which libuv drives as a TCP handle once the
     * socket exists (it only cannot create or bind one itself). */
    a->conn_kind = family == AF_VSOCK ? LR_EP_VMSOCK : LR_EP_TCP;
    uv_tcp_init(a->loop, &a->lsn.tcp);
    rc = uv_tcp_open(&a->lsn.tcp, fd);
  }
  a->lsn_open = 1;
  a->lsn.handle.data = a;
  if (rc == 0) rc = uv_listen(&a->lsn.stream, 4096, on_connection);
  if (rc != 0) {
    snprintf(err, errlen, "cannot serve on fd %d: %s", fd, uv_strerror(rc));
    return -1;
  }
  return 0;
}

void lr_agent_shutdown(lr_agent_t *a) {
  a->shutting_down = 1;
  if (a->lsn_open && !uv_is_closing(&a->lsn.handle)) uv_close(&a->lsn.handle, NULL);
  if (a->scan_timer_open && !uv_is_closing((uv_handle_t *)&a->scan_timer))
    uv_close((uv_handle_t *)&a->scan_timer, NULL);
  for (conn_t *c = a->conns, *next; c; c = next) {
    next = c->next;
    conn_close(c);
  }
  reverse_close_all(a);
}

void lr_agent_free(lr_agent_t *a) {
  if (!a) return;
  lr_sockdiag_close(&a->sd);
  lr_sockdiag_list_free(&a->raw);
  free(a->cur);
  free(a->next);
  free(a->adds);
  free(a->dels);
  free(a->own);
  free(a);
}

size_t lr_agent_stream_count(const lr_agent_t *a) { return a->nconns; }
