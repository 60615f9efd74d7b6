/* The guest agent's lifecycle and its streams up to the first frame (see
 * lr_agent.h; the structures are in agent_int.h).
 *
 * This file accepts transport streams, reads them, checks the preamble and
 * hands each frame to the module that owns the stream's phase: control
 * (agent_control.c), data (agent_data.c) or reverse (agent_reverse.c). It
 * also owns the record's life, so that allocation, linking and freeing are
 * in one place whichever module ends a stream.
 *
 * Streams fail alone: bad magic, a wrong version, an oversized or malformed
 * frame, a host that cannot prove the key or silence past the handshake
 * timeout end that one stream with one log line. (Who may open a stream at
 * all, and the key's challenge, are agent_auth.c's.) Error replies are
 * sent, then the write side is shut and input drained briefly before the
 * close, so the peer reads the reason instead of a reset that discards it. */
#define _GNU_SOURCE /* struct ucred */
#include "agent_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/vm_sockets.h>

#include "lr_guest_pal.h"
#include "lr_log.h"
#include "lr_version.h"

#define DRAIN_MS 1000

static void conn_process(conn_t *c);

/* ---- writing ----------------------------------------------------------- */

size_t agent_take_preamble(conn_t *c, uint8_t out[LR_PREAMBLE_LEN]) {
  if (!c->preamble_owed) return 0;
  lr_preamble_encode(out, c->preamble_owed);
  c->preamble_owed = 0;
  return LR_PREAMBLE_LEN;
}

int agent_conn_send(conn_t *c, const void *buf, size_t len) {
  if (c->phase == PH_CLOSED) return -1;
  /* A host that stops reading must not make the agent buffer without end:
   * listener changes keep coming, so the control stream has a cap. */
  if (c->phase == PH_CONTROL &&
      uv_stream_get_write_queue_size(agent_transport(c)) > LR_AGENT_CONTROL_BACKLOG) {
    LR_WARN("control stream from %s: host is not reading (%zu bytes queued); closing it",
            c->peer, uv_stream_get_write_queue_size(agent_transport(c)));
    agent_conn_close(c);
    return -1;
  }
  /* A write that fails later is seen by the read side (every stream is
   * being read while it sends), which closes the stream. */
  uint8_t with_preamble[LR_PREAMBLE_LEN + LR_FRAME_HDR_LEN + 4 + 2 + LR_TEXT_MAX + 1 + LR_MAC_LEN];
  if (c->preamble_owed) {
    if (len > sizeof with_preamble - LR_PREAMBLE_LEN) { /* not a data stream's answer */
      uint8_t p[LR_PREAMBLE_LEN];
      if (agent_conn_send(c, p, agent_take_preamble(c, p)) != 0) return -1;
    } else {
      size_t n = agent_take_preamble(c, with_preamble);
      memcpy(with_preamble + n, buf, len);
      buf = with_preamble;
      len += n;
    }
  }
  int rc = lr_write_copy(agent_transport(c), buf, len);
  if (rc != 0) {
    LR_INFO("stream from %s: write failed: %s", c->peer, uv_strerror(rc));
    agent_conn_close(c);
    return -1;
  }
  return 0;
}

static int send_preamble(conn_t *c, uint8_t kind) {
  uint8_t p[LR_PREAMBLE_LEN];
  lr_preamble_encode(p, kind);
  return agent_conn_send(c, p, sizeof p);
}

void agent_fail_stream(conn_t *c, uint32_t code, const char *text) {
  uint8_t f[LR_FRAME_HDR_LEN + 4 + 2 + LR_TEXT_MAX];
  size_t n = lr_encode_error(f, sizeof f, code, text);
  if (agent_conn_send(c, f, n) == 0) agent_conn_finish(c);
}

void agent_send_open_result(conn_t *c, uint32_t status, const char *text, int finish) {
  uint8_t f[LR_FRAME_HDR_LEN + 4 + 2 + LR_TEXT_MAX + 1 + LR_MAC_LEN];
  lr_auth_t auth;
  auth.len = 0;
  /* Once the host has proved the key, every answer proves it back. */
  if (c->authed && lr_auth_sign_result(&c->auth, status, &auth) != 0) auth.len = 0;
  size_t n = lr_encode_open_result(f, sizeof f, status, text, &auth);
  if (agent_conn_send(c, f, n) == 0 && finish) agent_conn_finish(c);
}

const char *agent_stream_name(const conn_t *c) {
  switch (c->phase) {
    case PH_HELLO:
    case PH_CONTROL:
      return "control stream";
    case PH_ATTACH:
      return "reverse stream";
    case PH_PREAMBLE:
      return "stream";
    default:
      return "data stream";
  }
}

/* The host does the same with a bad frame from the agent: a peer that sends
 * a known message with a payload that does not decode is broken, and
 * guessing past it would leave the two sides disagreeing about state
 * (published ports, say). */
int agent_first_frame_is(conn_t *c, const lr_frame_t *f, uint16_t type) {
  char text[96];
  if (f->type == type) return 1;
  LR_WARN("%s from %s: expected %s, got %s (type %u); closing", agent_stream_name(c), c->peer,
          lr_msg_name(type), lr_msg_name(f->type), f->type);
  snprintf(text, sizeof text, "expected %s as the first frame of a %s", lr_msg_name(type),
           agent_stream_name(c));
  agent_fail_stream(c, LR_ERR_PROTOCOL, text);
  return 0;
}

void agent_bad_frame(conn_t *c, const lr_frame_t *f, int rc) {
  char text[128];
  snprintf(text, sizeof text, "bad %s message: %s", lr_msg_name(f->type),
           lr_proto_strerror(rc));
  LR_WARN("%s from %s: bad %s message from the host: %s; closing", agent_stream_name(c),
          c->peer, lr_msg_name(f->type), lr_proto_strerror(rc));
  agent_fail_stream(c, LR_ERR_PROTOCOL, text);
}

/* ---- stream lifecycle -------------------------------------------------- */

static void conn_maybe_free(conn_t *c) {
  if (c->timer_open || c->relay_open || c->flow) return;
  lr_agent_t *a = c->agent;
  agent_auth_release(c);
  if (c->prev)
    c->prev->next = c->next;
  else
    a->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  a->nconns--;
  free(c->rx);
  free(c);
}

void agent_conn_release(conn_t *c) { conn_maybe_free(c); }

static void on_timer_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  c->timer_open = 0;
  conn_maybe_free(c);
}

void agent_close_timer(conn_t *c) {
  if (c->timer_open && !uv_is_closing((uv_handle_t *)&c->timer))
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void on_relay_closed(lr_relay_t *r) {
  conn_t *c = (conn_t *)r;
  c->relay_open = 0;
  lr_relay_ids_del(&c->agent->stream_ids, r);
  if (c->phase != PH_CLOSED) {
    c->phase = PH_CLOSED;
    agent_close_timer(c);
  }
  agent_udp_close(c);
  conn_maybe_free(c);
}

conn_t *agent_conn_new(lr_agent_t *a) {
  conn_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->agent = a;
  lr_relay_init(&c->relay, a->pal, on_relay_closed, a);
  c->relay_open = 1; /* on_relay_closed runs even if no handle is ever marked open */
  uv_timer_init(a->loop, &c->timer);
  c->timer.data = c;
  c->timer_open = 1;
  c->next = a->conns;
  if (a->conns) a->conns->prev = c;
  a->conns = c;
  a->nconns++;
  return c;
}

void agent_conn_close(conn_t *c) {
  if (c->phase == PH_CLOSED) return;
  agent_auth_release(c);
  agent_control_stop(c);
  c->phase = PH_CLOSED;
  agent_close_timer(c);
  agent_udp_close(c);
  lr_relay_close(&c->relay, 0);
}

static void on_drain_timeout(uv_timer_t *t) { agent_conn_close(t->data); }

static void on_shutdown_done(uv_shutdown_t *req, int status) {
  conn_t *c = req->data;
  if (status < 0 && c->phase == PH_DRAIN) agent_conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

void agent_conn_finish(conn_t *c) {
  if (c->phase == PH_CLOSED || c->phase == PH_DRAIN) return;
  agent_control_stop(c);
  c->phase = PH_DRAIN;
  c->sreq.data = c;
  if (uv_shutdown(&c->sreq, agent_transport(c), on_shutdown_done) != 0) {
    agent_conn_close(c);
    return;
  }
  uv_read_start(agent_transport(c), on_alloc, on_read);
  uv_timer_start(&c->timer, on_drain_timeout, DRAIN_MS, 0);
}

/* ---- reading and the preamble ------------------------------------------ */

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
      /* the peer has read the reply and closed: done */
    } else if (nread == UV_EOF) {
      if (c->phase == PH_CONTROL)
        LR_INFO("control stream from %s closed by the host", c->peer);
      else
        LR_WARN("stream from %s: premature end of stream during the handshake", c->peer);
    } else if (nread == UV_ENOBUFS) {
      LR_WARN("stream from %s: receive buffer full; closing", c->peer);
    } else {
      LR_INFO("stream from %s: read failed: %s", c->peer, uv_strerror((int)nread));
    }
    agent_conn_close(c);
    return;
  }
  lr_rxbuf_commit(c->rx, (size_t)nread);
  if (c->phase == PH_CONTROL) c->last_rx = uv_now(c->agent->loop);
  if (c->phase != PH_DRAIN) conn_process(c);
}

static void on_handshake_timeout(uv_timer_t *t) {
  conn_t *c = t->data;
  if (c->phase == PH_CONNECTING) {
    agent_data_timeout(c);
    return;
  }
  LR_WARN("stream from %s: no complete handshake within %u ms; closing", c->peer,
          c->agent->handshake_ms);
  agent_conn_close(c);
}

/* Returns 1 when frames follow, 0 when the stream is waiting or has ended.
 * With a key our preamble went out at accept (agent_auth_challenge). */
static int handle_preamble(conn_t *c) {
  lr_preamble_t p;
  int keyed = c->agent->token_len > 0;
  int rc = lr_rxbuf_preamble(c->rx, &p);
  if (rc == LR_PROTO_NEED_MORE) return 0;
  if (rc == LR_PROTO_EBADMAGIC) {
    LR_WARN("stream from %s: not a lorelay stream (bad magic); closing", c->peer);
    agent_conn_close(c);
    return 0;
  }
  if (rc == LR_PROTO_EVERSION) {
    char text[128];
    snprintf(text, sizeof text,
             "lorelay-agent %s speaks protocol version %d, the host sent version %u",
             LR_VERSION_STRING, LR_PROTO_VERSION, p.version);
    LR_ERROR("stream from %s: %s; closing", c->peer, text);
    if (keyed ||
        send_preamble(c, p.kind == LR_STREAM_DATA ? LR_STREAM_DATA : LR_STREAM_CONTROL) == 0)
      agent_fail_stream(c, LR_ERR_VERSION, text);
    return 0;
  }
  if (rc != LR_PROTO_OK || p.kind == LR_STREAM_ANY) {
    LR_WARN("stream from %s: bad preamble (%s); closing", c->peer,
            rc != LR_PROTO_OK ? lr_proto_strerror(rc) : "no stream kind");
    agent_conn_close(c);
    return 0;
  }
  if (keyed && !(p.flags & LR_PREAMBLE_KEYED)) {
    agent_auth_failed(c, "the host has no key (its preamble is not flagged)");
    agent_fail_stream(c, LR_ERR_AUTH,
                      "this agent requires a shared key: give lorelayd the same --token-file");
    return 0;
  }
  if (!keyed && (p.flags & LR_PREAMBLE_KEYED)) {
    agent_auth_mismatch(c, "the host has a shared key and this agent none (give both sides the "
                           "same --token-file)");
    if (send_preamble(c, p.kind) == 0)
      agent_fail_stream(c, LR_ERR_AUTH,
                        "this agent has no shared key but the host has one: give both sides "
                        "the same --token-file");
    return 0;
  }
  /* A data stream's answer (OPEN_RESULT, with the server socket on one
   * hop) is the next thing we send: the preamble goes with it. */
  if (!keyed && p.kind == LR_STREAM_DATA)
    c->preamble_owed = p.kind;
  else if (!keyed && send_preamble(c, p.kind) != 0)
    return 0;
  c->kind = p.kind;
  c->auth.kind = p.kind; /* what the host's MAC binds */
  c->phase = p.kind == LR_STREAM_CONTROL   ? PH_HELLO
             : p.kind == LR_STREAM_REVERSE ? PH_ATTACH
                                           : PH_OPEN;
  return 1;
}

static void conn_process(conn_t *c) {
  for (;;) {
    if (c->phase == PH_PREAMBLE) {
      if (!handle_preamble(c)) return;
      continue;
    }
    if (c->phase != PH_HELLO && c->phase != PH_CONTROL && c->phase != PH_OPEN &&
        c->phase != PH_ATTACH)
      return; /* relaying, connecting, draining or closed: no more frames */
    lr_frame_t f;
    int rc = lr_rxbuf_frame(c->rx, &f);
    if (rc == LR_PROTO_NEED_MORE) return;
    if (rc != LR_PROTO_OK) {
      LR_WARN("%s from %s: %s; closing", agent_stream_name(c), c->peer, lr_proto_strerror(rc));
      agent_fail_stream(c, LR_ERR_PROTOCOL, lr_proto_strerror(rc));
      return;
    }
    switch (c->phase) {
      case PH_HELLO:
        agent_control_hello(c, &f);
        break;
      case PH_CONTROL:
        agent_control_frame(c, &f);
        break;
      case PH_OPEN:
        agent_data_open(c, &f);
        break;
      default:
        agent_reverse_attach(c, &f);
        break;
    }
  }
}

/* ---- accepting --------------------------------------------------------- */

static void describe_peer(conn_t *c) {
  uv_os_fd_t fd;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  snprintf(c->peer, sizeof c->peer, "unknown peer");
  if (uv_fileno(&c->relay.ep[1].u.handle, &fd) != 0) return;
  memset(&ss, 0, sizeof ss);
  /* A Unix listener's peers are Unix sockets: one call fewer per stream,
   * which on the one-hop path is one per relayed connection. */
  if (c->agent->conn_kind == LR_EP_PIPE)
    ss.ss_family = AF_UNIX;
  else if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
    return;
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    char ip[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "tcp:%s:%d", ip, ntohs(s4->sin_port));
  } else if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "tcp:[%s]:%d", ip, ntohs(s6->sin6_port));
  } else if (ss.ss_family == AF_VSOCK) {
    struct sockaddr_vm *vm = (struct sockaddr_vm *)&ss;
    snprintf(c->peer, sizeof c->peer, "vsock:%u:%u", vm->svm_cid, vm->svm_port);
  } else if (ss.ss_family == AF_UNIX) {
    struct ucred cr;
    socklen_t crlen = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == 0) {
      snprintf(c->peer, sizeof c->peer, "unix peer pid %d uid %u", (int)cr.pid,
               (unsigned)cr.uid);
      c->has_cred = 1; /* agent_auth_admit decides on it */
      c->peer_uid = cr.uid;
    } else
      snprintf(c->peer, sizeof c->peer, "unix peer");
  }
}

static void on_connection(uv_stream_t *server, int status) {
  lr_agent_t *a = server->data;
  if (status < 0) {
    /* EMFILE repeats for every pending stream: the gate says it once a minute. */
    lr_log_accept_error(&a->accept_rl, a->loop, "transport listener", status);
    return;
  }
  conn_t *c = agent_conn_new(a);
  if (!c) {
    LR_ERROR("out of memory accepting a stream");
    return;
  }
  /* Without its receive buffer the stream is still accepted, then closed
   * below: libuv stops accepting while a connection is left pending. */
  c->rx = malloc(sizeof *c->rx);
  if (c->rx) lr_rxbuf_init(c->rx);
  if (a->conn_kind == LR_EP_PIPE) /* IPC: it can pass a server socket to the host */
    uv_pipe_init(a->loop, &c->relay.ep[1].u.pipe, 1);
  else
    uv_tcp_init(a->loop, &c->relay.ep[1].u.tcp);
  lr_relay_mark_open(&c->relay, 1, a->conn_kind);
  c->phase = PH_PREAMBLE;

  int rc = uv_accept(server, agent_transport(c));
  if (rc != 0) {
    LR_WARN("accept failed: %s", uv_strerror(rc));
    agent_conn_close(c);
    return;
  }
  if (!c->rx) {
    LR_ERROR("out of memory accepting a stream");
    agent_conn_close(c);
    return;
  }
  if (a->conn_kind == LR_EP_TCP) uv_tcp_nodelay(&c->relay.ep[1].u.tcp, 1);
  describe_peer(c);
  LR_DEBUG("stream from %s accepted", c->peer);
  if (!agent_auth_admit(c)) {
    agent_conn_close(c);
    return;
  }
  if (agent_auth_challenge(c) != 0) return;
  uv_timer_start(&c->timer, on_handshake_timeout, a->handshake_ms, 0);
  rc = uv_read_start(agent_transport(c), on_alloc, on_read);
  if (rc != 0) {
    LR_WARN("stream from %s: cannot read: %s", c->peer, uv_strerror(rc));
    agent_conn_close(c);
  }
}

/* ---- public ------------------------------------------------------------ */

lr_agent_t *lr_agent_new(uv_loop_t *loop, const lr_agent_opts_t *o, char *err, size_t errlen) {
  const lr_pal_t *pal = o->pal ? o->pal : &lr_guest_pal;
  if (lr_auth_key_check(pal, o->token_len, err, errlen) != 0) return NULL;
  if (o->n_allow_uids > LR_AGENT_MAX_ALLOW_UIDS) {
    snprintf(err, errlen, "at most %d uids can be allowed", LR_AGENT_MAX_ALLOW_UIDS);
    return NULL;
  }
  lr_agent_t *a = calloc(1, sizeof *a);
  if (!a) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  a->loop = loop;
  a->pal = pal;
  snprintf(a->name, sizeof a->name, "%s", o->name ? o->name : "");
  if (o->token_len) memcpy(a->token, o->token, o->token_len);
  a->token_len = o->token_len;
  a->scan_ms = o->scan_interval_ms ? o->scan_interval_ms : 100;
  a->handshake_ms = o->handshake_timeout_ms ? o->handshake_timeout_ms : LR_AGENT_HANDSHAKE_MS;
  a->control_live_ms = o->control_live_ms ? o->control_live_ms : LR_AGENT_CONTROL_LIVE_MS;
  if (o->n_allow_uids)
    memcpy(a->allow_uids, o->allow_uids, o->n_allow_uids * sizeof *o->allow_uids);
  a->n_allow_uids = o->n_allow_uids;
  agent_auth_init(a, o);
  if (agent_scan_init(a, err, errlen) != 0) {
    free(a);
    return NULL;
  }
  uv_timer_init(loop, &a->scan_timer);
  a->scan_timer.data = a;
  a->scan_timer_open = 1;
  a->udp_enabled = !o->no_udp;
  a->udp_scan_ms = o->udp_scan_interval_ms ? o->udp_scan_interval_ms : 250;
  uv_timer_init(loop, &a->udp_timer);
  a->udp_timer.data = a;
  a->udp_timer_open = 1;
  agent_scan_events_start(a, o);
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
  agent_scan_own_rebuild(a);
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
  if (a->udp_timer_open && !uv_is_closing((uv_handle_t *)&a->udp_timer))
    uv_close((uv_handle_t *)&a->udp_timer, NULL);
  agent_scan_events_stop(a);
  for (conn_t *c = a->conns, *next; c; c = next) {
    next = c->next;
    agent_conn_close(c);
  }
  agent_reverse_close_all(a);
}

void lr_agent_free(lr_agent_t *a) {
  if (!a) return;
  agent_scan_free(a);
  free(a);
}
