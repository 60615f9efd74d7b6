/* Data streams: one OPEN from the host, a connect to 127.0.0.1:P or
 * [::1]:P in the guest, one OPEN_RESULT back, then the relay.
 *
 * Reading from the transport stops at OPEN: whatever the host sent after it
 * belongs to the guest server and goes to the relay as its pending bytes,
 * so the data path between the host's stream and the server is this file
 * once and lr_relay for the rest of the connection. A refused or failed
 * connect is answered with its own status, so the host can reset its client
 * the way a direct connection to a closed port would be. */
#include "agent_int.h"

#include <stdio.h>
#include <stdlib.h>

#include "lr_log.h"

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

/* Close notices for this stream, on the active control stream; -1 while
 * there is none. The relay shuts the transport down as well, always: the
 * agent cannot tell which VMM is on the far side, and a hybrid-vsock device
 * merely drops the guest's half-close, where the notice then carries it. */
static int data_notice(lr_relay_t *r, uint8_t kind, uint64_t bytes) {
  conn_t *c = (conn_t *)r;
  conn_t *ctl = c->agent->control;
  if (!ctl || ctl->phase != PH_CONTROL) return -1;
  lr_stream_close_t m = {r->id, kind, bytes};
  uint8_t f[LR_FRAME_HDR_LEN + 13];
  return agent_conn_send(ctl, f, lr_encode_stream_close(f, sizeof f, &m));
}

void agent_data_number(conn_t *c, uint32_t stream_id) {
  /* Registered before OPEN_RESULT goes out, so that any notice the host
   * sends (only once it has that answer) finds the stream. An id already
   * in use gets no notices; the stream relays as before. */
  if (!stream_id) return;
  c->relay.id = stream_id;
  if (lr_relay_ids_add(&c->agent->stream_ids, &c->relay) == 0)
    c->relay.notice = data_notice;
  else
    c->relay.id = 0;
}

void agent_data_stream_close(lr_agent_t *a, const lr_stream_close_t *m) {
  lr_relay_t *r = lr_relay_ids_find(&a->stream_ids, m->id);
  if (r) lr_relay_peer_notice(r, m->kind, m->bytes);
}

void agent_data_start_relay(conn_t *c, const char *what) {
  c->phase = PH_RELAY;
  uv_timer_stop(&c->timer);
  agent_close_timer(c);
  uv_read_stop(agent_transport(c));
  size_t n;
  const uint8_t *rest = lr_rxbuf_rest(c->rx, &n);
  /* Bytes the host sent after its first frame were read from the transport
   * and belong to ep[0]: exactly lr_relay_start's pending. */
  int rc = lr_relay_start(&c->relay, rest, n);
  free(c->rx);
  c->rx = NULL;
  if (rc != 0) LR_WARN("%s from %s: relay failed to start: %s", what, c->peer, uv_strerror(rc));
}

void agent_data_timeout(conn_t *c) {
  char text[128];
  snprintf(text, sizeof text, "connect to %s:%u in the guest timed out",
           lr_loopback_str(c->family), c->port);
  LR_WARN("data stream from %s: %s", c->peer, text);
  agent_send_open_result(c, LR_ERR_TIMEOUT, text, 1);
}

/* ---- one hop ----------------------------------------------------------------- */

typedef struct {
  uv_write_t req;
  conn_t *c;
  uint8_t frame[LR_PREAMBLE_LEN + LR_FRAME_HDR_LEN + 4 + 2 + 1 + LR_MAC_LEN];
} pass_write_t;

static void on_passed(uv_write_t *req, int status) {
  pass_write_t *w = (pass_write_t *)req;
  conn_t *c = w->c;
  free(w);
  if (status == UV_ECANCELED) return; /* the stream closed first */
  if (status < 0)
    LR_INFO("data stream from %s: passing the server socket failed: %s", c->peer,
            uv_strerror(status));
  else
    LR_DEBUG("data stream from %s: server socket handed to the host", c->peer);
  /* Our copy of the server socket and the stream go; the host's copy of
   * the socket lives on (closing one descriptor of it sends nothing). */
  agent_conn_close(c);
}

/* The host shares our kernel and asked for the connected server socket
 * itself: it goes with OPEN_RESULT (SCM_RIGHTS over the Unix transport),
 * and the host relays client <-> server in one hop. */
void agent_data_pass(conn_t *c, uv_handle_t *server) {
  size_t rest;
  lr_rxbuf_rest(c->rx, &rest);
  pass_write_t *w = rest ? NULL : malloc(sizeof *w);
  if (!w) {
    agent_send_open_result(c, LR_ERR_INTERNAL,
                           rest ? "bytes after OPEN on a one-hop stream" : "out of memory", 1);
    return;
  }
  lr_auth_t auth;
  auth.len = 0;
  if (c->authed && lr_auth_sign_result(&c->auth, LR_OK, &auth) != 0) auth.len = 0;
  size_t n = agent_take_preamble(c, w->frame);
  n += lr_encode_open_result(w->frame + n, sizeof w->frame - n, LR_OK, "", &auth);
  w->c = c;
  c->phase = PH_DRAIN;
  agent_close_timer(c);
  uv_buf_t b = uv_buf_init((char *)w->frame, (unsigned)n);
  int rc = uv_write2(&w->req, agent_transport(c), &b, 1, (uv_stream_t *)server, on_passed);
  if (rc != 0) {
    free(w);
    LR_INFO("data stream from %s: cannot pass the server socket: %s", c->peer, uv_strerror(rc));
    agent_conn_close(c);
  }
}

static void on_connected(uv_connect_t *req, int status) {
  conn_t *c = req->data;
  if (c->phase != PH_CONNECTING) return; /* closing, or timed out already */
  const char *where = lr_loopback_str(c->family);
  if (status < 0) {
    char text[128];
    snprintf(text, sizeof text, "connect to %s:%u in the guest failed: %s", where, c->port,
             uv_strerror(status));
    LR_DEBUG("data stream from %s: %s", c->peer, text);
    agent_send_open_result(c, map_connect_error(status), text, 1);
    return;
  }
  if (c->pass_fd) {
    agent_data_pass(c, &c->relay.ep[0].u.handle);
    return;
  }
  agent_send_open_result(c, LR_OK, "", 0);
  if (c->phase == PH_CLOSED) return;
  LR_DEBUG("data stream from %s: relaying to %s:%u", c->peer, where, c->port);
  agent_data_start_relay(c, "data stream");
}

/* Has a non-blocking connect completed already? (getpeername answers only
 * for a connected socket.) */
static int connected_now(uv_tcp_t *t) {
  struct sockaddr_storage peer;
  int len = (int)sizeof peer;
  return uv_tcp_getpeername(t, (struct sockaddr *)&peer, &len) == 0;
}

void agent_data_open(conn_t *c, const lr_frame_t *f) {
  lr_agent_t *a = c->agent;
  if (!agent_first_frame_is(c, f, LR_MSG_OPEN)) return;
  lr_open_t o;
  int rc = lr_decode_open(f, &o);
  if (rc != LR_PROTO_OK) {
    agent_bad_frame(c, f, rc);
    return;
  }
  if (!agent_auth_request(c, "OPEN", &o.auth,
                          a->token_len && lr_auth_verify_open(&c->auth, &o)))
    return;
  c->family = o.family;
  c->port = o.port;
  /* Only over a Unix transport (the host shares our kernel); elsewhere the
   * request is ignored and the stream relays as usual. */
  c->pass_fd = (o.flags & LR_OPEN_PASS_FD) && c->relay.ep[1].kind == LR_EP_PIPE;
  if (o.flags & LR_OPEN_UDP) {
    agent_udp_open(c);
    return;
  }
  if (!c->pass_fd) agent_data_number(c, o.stream_id);
  /* Stop reading: anything further belongs to the server, and the relay
   * reads it once the server connection exists. */
  uv_read_stop(agent_transport(c));
  c->phase = PH_CONNECTING;

  struct sockaddr_storage ss;
  lr_loopback_sockaddr(o.family, o.port, &ss);
  uv_tcp_init(a->loop, &c->relay.ep[0].u.tcp);
  lr_relay_mark_open(&c->relay, 0, LR_EP_TCP);
  c->creq.data = c;
  rc = uv_tcp_connect(&c->creq, &c->relay.ep[0].u.tcp, (struct sockaddr *)&ss, on_connected);
  if (rc == 0 && c->pass_fd && connected_now(&c->relay.ep[0].u.tcp)) {
    /* Loopback usually finishes the handshake inside connect(): the socket
     * goes to the host now, without a loop turn to learn what getpeername
     * already says. The pending connect request ends with UV_ECANCELED when
     * the handle closes, and on_connected ignores it (phase is past
     * PH_CONNECTING). */
    agent_data_pass(c, &c->relay.ep[0].u.handle);
    return;
  }
  if (rc != 0) {
    char text[128];
    snprintf(text, sizeof text, "connect to %s:%u in the guest failed: %s",
             lr_loopback_str(o.family), o.port, uv_strerror(rc));
    LR_INFO("data stream from %s: %s", c->peer, text);
    agent_send_open_result(c, map_connect_error(rc), text, 1);
  }
}
