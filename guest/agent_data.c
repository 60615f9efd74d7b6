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
  agent_send_open_result(c, LR_OK, "", 0);
  if (c->phase == PH_CLOSED) return;
  LR_DEBUG("data stream from %s: relaying to %s:%u", c->peer, where, c->port);
  agent_data_start_relay(c, "data stream");
}

void agent_data_open(conn_t *c, const lr_frame_t *f) {
  lr_agent_t *a = c->agent;
  if (f->type != LR_MSG_OPEN) {
    LR_WARN("data stream from %s: expected OPEN, got %s (type %u); closing", c->peer,
            lr_msg_name(f->type), f->type);
    agent_fail_stream(c, LR_ERR_PROTOCOL, "expected OPEN as the first frame of a data stream");
    return;
  }
  lr_open_t o;
  int rc = lr_decode_open(f, &o);
  if (rc != LR_PROTO_OK) {
    agent_bad_frame(c, f, rc);
    return;
  }
  if (a->token_len) {
    /* Nothing is connected for a host that has not proved the key. */
    if (!lr_auth_verify_open(&c->auth, &o)) {
      agent_auth_failed(c, o.auth.len == LR_AUTH_HOST_LEN ? "OPEN's MAC does not verify"
                                                          : "OPEN carries no MAC");
      agent_send_open_result(c, LR_ERR_AUTH,
                             "the host did not prove the shared key (wrong key?)", 1);
      return;
    }
    c->authed = 1;
  }
  c->family = o.family;
  c->port = o.port;
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
  if (rc != 0) {
    char text[128];
    snprintf(text, sizeof text, "connect to %s:%u in the guest failed: %s",
             lr_loopback_str(o.family), o.port, uv_strerror(rc));
    LR_INFO("data stream from %s: %s", c->peer, text);
    agent_send_open_result(c, map_connect_error(rc), text, 1);
  }
}
