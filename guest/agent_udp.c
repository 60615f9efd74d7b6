/* UDP flows in the guest: the other end of lr_udp.c.
 *
 * The host opens one data stream per client address of a UDP stand-in,
 * with OPEN carrying LR_OPEN_UDP. The agent answers with a UDP socket
 * connected to 127.0.0.1:P or [::1]:P: connected, so the guest server sees
 * one stable peer per host client (its replies come back to this socket
 * alone, which is how they find their flow), and so the kernel reports the
 * server's socket going away (ICMP port unreachable becomes ECONNREFUSED),
 * which ends the flow. After OPEN_RESULT the stream carries framed
 * datagrams both ways (lr_dgram.h); a stream that falls behind drops
 * datagrams rather than queueing them without bound.
 *
 * One hop (OPEN also asks for LR_OPEN_PASS_FD, over a Unix transport): the
 * connected socket goes to the host with OPEN_RESULT, as agent_data.c does
 * for TCP, and the agent leaves the flow's data path.
 *
 * The flow lives in its stream's conn_t record: the socket is closed with
 * the stream (agent_udp_close, from agent_conn_close) and the record waits
 * for that close before it is freed. */
#include "agent_int.h"

#include <stdio.h>
#include <stdlib.h>

#include "lr_dgram.h"
#include "lr_log.h"

typedef struct agent_flow_s {
  uv_udp_t udp;
  conn_t *c;
  lr_dgram_rx_t rx;
  lr_dgram_tx_t tx;
  int closing;
} agent_flow_t;

static void on_flow_closed(uv_handle_t *h) {
  agent_flow_t *f = h->data;
  conn_t *c = f->c;
  lr_dgram_rx_free(&f->rx);
  if (f->tx.dropped)
    LR_DEBUG("UDP flow to port %u: %llu datagram(s) dropped (the stream fell behind)", c->port,
             (unsigned long long)f->tx.dropped);
  free(f);
  c->flow = NULL;
  agent_conn_release(c);
}

void agent_udp_close(conn_t *c) {
  agent_flow_t *f = c->flow;
  if (!f || f->closing) return;
  f->closing = 1;
  uv_close((uv_handle_t *)&f->udp, on_flow_closed);
}

/* Host -> server: one datagram from the stream. */
static int to_server(void *data, const uint8_t *p, size_t n) {
  conn_t *c = data;
  agent_flow_t *f = c->flow;
  uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
  int rc = uv_udp_try_send(&f->udp, &b, 1, NULL);
  if (rc == UV_ECONNREFUSED) return 1; /* the server's socket is gone */
  if (rc < 0) f->tx.dropped++;         /* a full socket buffer: lost, as UDP would */
  return 0;
}

static void on_stream_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn_t *c = s->data;
  agent_flow_t *f = c->flow;
  if (c->phase != PH_RELAY || !f || f->closing) {
    free(buf->base);
    return;
  }
  if (n > 0) {
    int rc = lr_dgram_rx_feed(&f->rx, (const uint8_t *)buf->base, (size_t)n, to_server, c);
    if (rc == LR_DGRAM_STOPPED) {
      LR_DEBUG("UDP flow from %s: the server at port %u is gone", c->peer, c->port);
      agent_conn_close(c);
    } else if (rc != LR_PROTO_OK) {
      LR_WARN("UDP flow from %s: bad datagram frame from the host (%s); closing", c->peer,
              rc == LR_PROTO_ETOOBIG ? "length over 65507" : lr_proto_strerror(rc));
      agent_conn_close(c);
    }
  } else if (n < 0) {
    if (lr_dgram_rx_partial(&f->rx))
      LR_WARN("UDP flow from %s: the stream ended inside a datagram (truncated frame)",
              c->peer);
    agent_conn_close(c);
  }
  free(buf->base);
}

/* Server -> host: one datagram onto the stream. */
static void on_datagram(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *addr,
                        unsigned flags) {
  agent_flow_t *f = h->data;
  conn_t *c = f->c;
  (void)addr;
  if (f->closing || c->phase != PH_RELAY) return;
  if (n < 0) {
    /* ECONNREFUSED: the server's socket went; the flow goes with it. */
    LR_DEBUG("UDP flow from %s: port %u: %s", c->peer, c->port, uv_strerror((int)n));
    agent_conn_close(c);
    return;
  }
  if (n == 0 && !addr) return; /* nothing more to read */
  if (flags & UV_UDP_PARTIAL) {
    f->tx.dropped++;
    return;
  }
  int rc = lr_dgram_send(agent_transport(c), &f->tx, (const uint8_t *)buf->base, (size_t)n);
  if (rc < 0) agent_conn_close(c);
}

void agent_udp_open(conn_t *c) {
  lr_agent_t *a = c->agent;
  char text[128];
  if (!a->udp_enabled) {
    agent_send_open_result(c, LR_ERR_REFUSED, "UDP forwarding is off in this agent (udp = false)",
                           1);
    return;
  }
  agent_flow_t *f = calloc(1, sizeof *f);
  if (!f) {
    agent_send_open_result(c, LR_ERR_INTERNAL, "out of memory", 1);
    return;
  }
  f->c = c;
  lr_dgram_rx_init(&f->rx);
  uv_udp_init(a->loop, &f->udp);
  f->udp.data = f;
  c->flow = f;
  struct sockaddr_storage ss;
  lr_loopback_sockaddr(c->family, c->port, &ss);
  int rc = uv_udp_connect(&f->udp, (struct sockaddr *)&ss);
  if (rc != 0) {
    snprintf(text, sizeof text, "UDP connect to %s:%u in the guest failed: %s",
             lr_loopback_str(c->family), c->port, uv_strerror(rc));
    LR_INFO("data stream from %s: %s", c->peer, text);
    agent_send_open_result(c, rc == UV_EADDRNOTAVAIL || rc == UV_EAFNOSUPPORT ? LR_ERR_UNREACHABLE
                                                                              : LR_ERR_INTERNAL,
                           text, 1);
    return;
  }
  lr_dgram_sockbufs(&f->udp);
  if (c->pass_fd) { /* one hop: the host sends to the server itself */
    uv_read_stop(agent_transport(c));
    agent_data_pass(c, (uv_handle_t *)&f->udp);
    return;
  }
  agent_send_open_result(c, LR_OK, "", 0);
  if (c->phase == PH_CLOSED) return;
  c->phase = PH_RELAY;
  uv_timer_stop(&c->timer);
  agent_close_timer(c);
  size_t rest_len;
  const uint8_t *rest = lr_rxbuf_rest(c->rx, &rest_len);
  rc = rest_len ? lr_dgram_rx_feed(&f->rx, rest, rest_len, to_server, c) : LR_PROTO_OK;
  free(c->rx);
  c->rx = NULL;
  if (rc != LR_PROTO_OK) {
    if (rc != LR_DGRAM_STOPPED) /* logged in the OPEN's read as in any other */
      LR_WARN("UDP flow from %s: bad datagram frame from the host (%s); closing", c->peer,
              rc == LR_PROTO_ETOOBIG ? "length over 65507" : lr_proto_strerror(rc));
    agent_conn_close(c);
    return;
  }
  LR_DEBUG("data stream from %s: UDP flow to %s:%u", c->peer, lr_loopback_str(c->family),
           c->port);
  rc = uv_udp_recv_start(&f->udp, lr_dgram_udp_alloc, on_datagram);
  uv_read_stop(agent_transport(c)); /* the handshake's reader gives way */
  if (rc == 0) rc = uv_read_start(agent_transport(c), lr_dgram_alloc, on_stream_read);
  if (rc != 0) {
    LR_WARN("UDP flow from %s: %s", c->peer, uv_strerror(rc));
    agent_conn_close(c);
  }
}
