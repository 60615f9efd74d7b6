/* Relayed connections: one record per client, forward or reverse.
 *
 * Forward: a client accepted on a stand-in gets its own transport stream to
 * the agent (preamble + OPEN), waits for OPEN_RESULT, then hands both
 * sockets to the relay. For a namespace guest (one hop) there is no stream:
 * lorelayd connects to the server inside the namespace itself (below). Reverse: the agent asks over the control stream
 * (REVERSE_OPEN) for a port the host's reversePorts lists; the host connects
 * to its own loopback server, opens a reverse stream (preamble + ATTACH) and
 * relays. Either way the host opens every stream, and a refusal reaches the
 * client as a reset, as a direct connection to a closed port would. With a
 * shared key OPEN or ATTACH waits for the agent's CHALLENGE and carries the
 * host's nonce and MAC, and nothing is relayed before OPEN_RESULT's MAC
 * proves that the agent knows the key too.
 *
 * A record's lifetime follows lr_host_int.h's model: its holders
 * (LR_HOLD_*: the relay, a transport attempt, a late ep[1], a one-hop
 * flow's server socket) each release it once from their callbacks, and
 * the host's drain frees it after the last. Every close goes through
 * lr_conn_close, where the shape decides what a close does. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_host_int.h"
#include "lr_log.h"
#include "lr_transport.h"

static void ns_wait_unlink(lr_conn_t *c);

void lr_conn_release(lr_conn_t *c, unsigned hold) {
  c->holds &= ~hold;
  if (c->holds || c->phase == LR_CONN_DEAD) return;
  lr_host_t *h = c->g->host;
  c->phase = LR_CONN_DEAD;
  c->dead_next = h->dead_conns;
  h->dead_conns = c;
  lr_host_defer(h);
}

/* The drain's: no holder is left, and no callback names c any more. */
void lr_conn_free(lr_conn_t *c) {
  lr_guest_t *g = c->g;
  lr_relay_ids_del(&g->stream_ids, &c->relay);
  if (c->prev)
    c->prev->next = c->next;
  else
    g->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  if (c->rev_pending) g->nreverse_pending--;
  g->nconns--;
  c->b->active--;
  if (lr_conn_is_udp(c)) lr_udp_flow_free(c);
  lr_binding_unref(c->b);
  free(c->rx);
  free(c);
  lr_guest_unref(g);
}

/* What a close does, by shape; once, whoever began it (lr_conn_close, or
 * the relay ending by itself). */
static void conn_closing(lr_conn_t *c, const char *why) {
  lr_conn_phase_t was = c->phase;
  lr_guest_t *g = c->g;
  if (was >= LR_CONN_CLOSING) return;
  c->phase = LR_CONN_CLOSING;
  if (why && c->shape == LR_CONN_REVERSE) {
    lr_log_gated(&g->connfail_gate, uv_now(g->host->loop), g->name, "connection failed",
                 LR_LOG_INFO, "%s: guest connection to host port %u: %s", g->name,
                 c->b->key.port, why);
  } else if (why) {
    lr_log_gated(&g->connfail_gate, uv_now(g->host->loop), g->name, "connection failed",
                 LR_LOG_INFO, "%s: connection to guest port %u: %s", g->name,
                 c->b->key.guest_port ? c->b->key.guest_port : c->b->key.port,
                 lr_guest_err_text(g, why));
  }
  switch (c->shape) {
    case LR_CONN_REVERSE:
      if (why && was < LR_CONN_RELAYING) { /* the agent still holds the guest client */
        uint8_t f[LR_FRAME_HDR_LEN + 10 + LR_TEXT_MAX];
        lr_session_send(g, f, lr_encode_reverse_fail(f, sizeof f, c->rev_id, LR_ERR_REFUSED, why));
      }
      break;
    case LR_CONN_UDP:
    case LR_CONN_UDP_ONEHOP:
      lr_udp_flow_closing(c);
      break;
    case LR_CONN_TCP:
    case LR_CONN_TCP_ONEHOP:
      break;
  }
  if (was == LR_CONN_WAIT_SOCKET) ns_wait_unlink(c);
  free(c->rx);
  c->rx = NULL;
}

void lr_conn_close(lr_conn_t *c, int reset, const char *why) {
  if (c->phase >= LR_CONN_CLOSING) return;
  conn_closing(c, why);
  lr_relay_close(&c->relay, reset); /* its close callback may run at once: c stays */
}

static void conn_closed(lr_relay_t *r) {
  lr_conn_t *c = (lr_conn_t *)r;
  LR_HOOK(c->g->host, "relay-closed");
  if (r->fds_refused)
    lr_guest_warn(c->g, &c->g->fds_log,
                  "the agent sent file descriptors on a %s stream: closed them and dropped it",
                  c->shape == LR_CONN_REVERSE ? "reverse" : "data");
  conn_closing(c, NULL); /* a relay that ended by itself */
  lr_conn_release(c, LR_HOLD_RELAY);
}

/* ep[1], handed over by the transport after the relay had closed. */
static void conn_late_closed(uv_handle_t *h) { lr_conn_release(h->data, LR_HOLD_LATE_EP); }

static void conn_fail(lr_conn_t *c, int reset, const char *fmt, ...) LR_PRINTF(3, 4);
static void conn_fail(lr_conn_t *c, int reset, const char *fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lr_conn_close(c, reset, msg);
}

static void conn_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  lr_conn_t *c = h->data;
  size_t avail = 0;
  (void)sz;
  buf->base = c->rx ? (char *)lr_rxbuf_space(c->rx, &avail) : NULL;
  buf->len = avail;
}

/* Writes on the fresh transport stream: a few hundred bytes at most, which
 * such a stream takes at once; if it ever does not, it is not usable
 * anyway. 0, or -1 after failing c. */
static int conn_write(lr_conn_t *c, const uint8_t *p, size_t n, const char *what) {
  uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
  int w = uv_try_write(&c->relay.ep[1].u.stream, &b, 1);
  if (w != (int)n) {
    conn_fail(c, 1, "sending %s: %s", what, w < 0 ? uv_strerror(w) : "short write");
    return -1;
  }
  return 0;
}

/* Close notices for this connection, sent on the guest's control stream;
 * -1 while there is none (the relay then shuts the stream down itself). */
static int conn_notice(lr_relay_t *r, uint8_t kind, uint64_t bytes) {
  lr_conn_t *c = (lr_conn_t *)r;
  lr_guest_t *g = c->g;
  if (!g->ctl || g->state != LR_G_CONNECTED) return -1;
  lr_stream_close_t m = {r->id, kind, bytes};
  uint8_t f[LR_FRAME_HDR_LEN + 13];
  lr_session_send(g, f, lr_encode_stream_close(f, sizeof f, &m));
  return g->ctl ? 0 : -1; /* the send may have dropped an agent that does not read */
}

/* A relayed TCP stream (forward or reverse) of an agent that takes close
 * notices gets an id for them. Over hybrid vsock our FIN then goes as a notice alone: the device
 * would turn a shutdown of its Unix stream into a full close of the guest's
 * socket, and the guest server could no longer answer. */
static uint32_t conn_number(lr_conn_t *c) {
  lr_guest_t *g = c->g;
  if (lr_conn_is_udp(c) || !(g->agent_caps & LR_CAP_CLOSE_NOTICE)) return 0;
  if (!c->relay.id) {
    /* Skips 0 and, after a wrap, ids still in use. */
    for (int tries = 0; tries < 16 && !c->relay.id; tries++) {
      c->relay.id = ++g->next_stream_id ? g->next_stream_id : ++g->next_stream_id;
      if (lr_relay_ids_add(&g->stream_ids, &c->relay) != 0) c->relay.id = 0;
    }
    if (!c->relay.id) return 0;
    c->relay.notice = conn_notice;
    c->relay.notice_only = g->addr.kind == LR_TADDR_FC;
  }
  return c->relay.id;
}

void lr_conn_stream_close(lr_guest_t *g, const lr_stream_close_t *m) {
  lr_relay_t *r = lr_relay_ids_find(&g->stream_ids, m->id);
  if (r) lr_relay_peer_notice(r, m->kind, m->bytes);
}

/* OPEN or ATTACH, with the preamble in front unless it went out already
 * (with a key it goes first, and the request waits for CHALLENGE). */
static int conn_send_request(lr_conn_t *c, int with_preamble) {
  uint8_t buf[LR_PREAMBLE_LEN + LR_FRAME_HDR_LEN + 300];
  size_t n = 0;
  int keyed = c->g->token_len > 0, rc = 0;
  if (keyed) rc = lr_auth_new_nonce(&c->auth, LR_ROLE_HOST);
  int reverse = c->shape == LR_CONN_REVERSE;
  if (with_preamble) {
    lr_preamble_encode(buf, reverse ? LR_STREAM_REVERSE : LR_STREAM_DATA);
    n = LR_PREAMBLE_LEN;
  }
  if (reverse) {
    lr_attach_t at;
    memset(&at, 0, sizeof at);
    at.id = c->rev_id;
    at.stream_id = conn_number(c);
    if (keyed && rc == 0) rc = lr_auth_sign_attach(&c->auth, &at);
    n += lr_encode_attach(buf + n, sizeof buf - n, &at);
  } else {
    lr_open_t o;
    memset(&o, 0, sizeof o);
    o.family = c->b->key.family;
    o.port = c->b->key.guest_port ? c->b->key.guest_port : c->b->key.port; /* portMap */
    o.flags = lr_conn_is_udp(c) ? LR_OPEN_UDP : 0;
    o.stream_id = conn_number(c);
    if (keyed && rc == 0) rc = lr_auth_sign_open(&c->auth, &o);
    n += lr_encode_open(buf + n, sizeof buf - n, &o);
  }
  if (rc != 0) {
    conn_fail(c, 1, "cannot compute the handshake's MAC (no random bytes or no HMAC)");
    return -1;
  }
  c->req_sent = 1;
  return conn_write(c, buf, n, reverse ? "ATTACH" : "OPEN");
}

static void conn_start_relay(lr_conn_t *c, const uint8_t *rest, size_t rest_len) {
  c->phase = LR_CONN_RELAYING;
  c->relay.counter[0] = &c->b->bytes_to_guest;
  c->relay.counter[1] = &c->b->bytes_to_host;
  int rc = lr_relay_start(&c->relay, rest, rest_len);
  if (rc) LR_WARN("%s: relay start: %s", c->g->name, uv_strerror(rc));
}

/* ---- one hop: lorelayd connects inside the guest's namespace -------------
 * A namespace guest's forward connections and UDP flows never touch the
 * agent: a socket made in the guest's namespace in advance (lr_host_pal_t.nsock_*)
 * is connected to the guest's server and relayed to the client in the same
 * loop turn as the accept. When the pool of such sockets is empty the
 * record waits, in order, on g->ns_wait until the pool's thread has made
 * more (lr_conn_ns_ready). */

static void ns_wait_unlink(lr_conn_t *c) {
  lr_guest_t *g = c->g;
  lr_conn_t **pp = &g->ns_wait, *prev = NULL;
  while (*pp && *pp != c) {
    prev = *pp;
    pp = &(*pp)->ns_next;
  }
  if (!*pp) return;
  *pp = c->ns_next;
  if (g->ns_wait_tail == c) g->ns_wait_tail = prev;
  c->ns_next = NULL;
}

/* 1: done with (relaying, or failed and closing); 0: no socket pooled. */
static int conn_ns_connect(lr_conn_t *c) {
  lr_guest_t *g = c->g;
  const lr_host_pal_t *pal = g->host->pal;
  struct sockaddr_storage ss;
  uv_os_sock_t s;
  /* The guest's loopback of the listener's family: where the agent would
   * have connected (a wildcard listener answers there too). */
  uint16_t port = c->b->key.guest_port ? c->b->key.guest_port : c->b->key.port; /* portMap */
  lr_loopback_sockaddr(c->b->key.family, port, &ss);
  int udp = c->shape == LR_CONN_UDP_ONEHOP;
  int rc = pal->nsock_take(g->nsock, (struct sockaddr *)&ss, udp, &s);
  if (rc == UV_EAGAIN) return 0;
  if (rc < 0) {
    conn_fail(c, 1, "%sconnect to %s:%u in the namespace: %s", udp ? "UDP " : "",
              lr_loopback_str(c->b->key.family), port, uv_strerror(rc));
    return 1;
  }
  if (udp) { /* the host sends to the server's socket itself */
    c->server_sock = s;
    lr_udp_flow_adopted(c);
    return 1;
  }
  uv_tcp_init(g->host->loop, &c->relay.ep[1].u.tcp);
  lr_relay_mark_open(&c->relay, 1, LR_EP_TCP);
  rc = uv_tcp_open(&c->relay.ep[1].u.tcp, s);
  if (rc) {
    pal->base.sock_close(s); /* the handle does not own it */
    conn_fail(c, 1, "cannot relay the socket made in the namespace: %s", uv_strerror(rc));
    return 1;
  }
  /* A connect still under way (1: rare on loopback) needs no
   * wait of its own: writes queue until it completes, and a refusal reaches
   * the relay's read as an error, which resets the client. */
  conn_start_relay(c, NULL, 0);
  return 1;
}

/* Queues c (WAIT_SOCKET) for a socket from the pool, oldest first. */
static void ns_wait_append(lr_conn_t *c) {
  lr_guest_t *g = c->g;
  c->phase = LR_CONN_WAIT_SOCKET;
  if (g->ns_wait_tail)
    g->ns_wait_tail->ns_next = c;
  else
    g->ns_wait = c;
  g->ns_wait_tail = c;
}

void lr_conn_ns_ready(void *data) {
  lr_guest_t *g = data;
  LR_HOOK(g->host, "ns-ready");
  if (g->stopping) return; /* its records were closed, and left the list */
  while (g->ns_wait) {
    lr_conn_t *c = g->ns_wait;
    ns_wait_unlink(c); /* a record that fails now closes off the list */
    if (!conn_ns_connect(c)) { /* still empty: c stays first */
      c->ns_next = g->ns_wait;
      g->ns_wait = c;
      if (!g->ns_wait_tail) g->ns_wait_tail = c;
      return;
    }
  }
}

static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  lr_conn_t *c = s->data;
  (void)buf;
  LR_HOOK(c->g->host, "handshake-read");
  if (c->phase != LR_CONN_HANDSHAKE) return; /* closed meanwhile */
  int reverse = c->shape == LR_CONN_REVERSE;
  if (lr_guest_refuse_fds(c->g, &c->relay.ep[1], reverse ? "a reverse stream" : "a data stream")) {
    lr_conn_close(c, 1, NULL); /* closing the pipe closes what it received */
    return;
  }
  if (n < 0) {
    conn_fail(c, 1, "agent closed the stream during the handshake (%s)", uv_strerror((int)n));
    return;
  }
  lr_rxbuf_commit(c->rx, (size_t)n);
  if (!c->got_preamble) {
    lr_preamble_t p;
    int rc = lr_rxbuf_preamble(c->rx, &p);
    if (rc == LR_PROTO_NEED_MORE) return;
    if (rc != LR_PROTO_OK) {
      conn_fail(c, 1, "%s%s", lr_proto_strerror(rc),
                rc == LR_PROTO_EVERSION ? " (update lorelay on one side)" : "");
      return;
    }
    c->got_preamble = 1;
  }
  lr_frame_t f;
  int rc;
  for (;;) {
    rc = lr_rxbuf_frame(c->rx, &f);
    if (rc == LR_PROTO_NEED_MORE) return;
    if (rc != LR_PROTO_OK) {
      conn_fail(c, 1, "%s", lr_proto_strerror(rc));
      return;
    }
    if (f.type != LR_MSG_CHALLENGE || c->req_sent) break;
    /* The agent's nonce: the request proves the key over it. */
    if (!c->g->token_len) {
      conn_fail(c, 1, "the agent requires a shared key (it sent CHALLENGE)");
      return;
    }
    if ((rc = lr_decode_challenge(&f, c->auth.agent_nonce)) != LR_PROTO_OK) {
      conn_fail(c, 1, "bad CHALLENGE message: %s", lr_proto_strerror(rc));
      return;
    }
    if (conn_send_request(c, 0) != 0) return;
  }
  lr_error_msg_t em;
  lr_auth_t auth;
  rc = f.type == LR_MSG_OPEN_RESULT ? lr_decode_open_result(&f, &em, &auth)
       : f.type == LR_MSG_ERROR     ? lr_decode_error(&f, &em)
                                    : LR_PROTO_EINVAL;
  if (rc != LR_PROTO_OK || (!c->req_sent && f.type != LR_MSG_ERROR)) {
    conn_fail(c, 1, "expected %s, got %s", c->req_sent ? "OPEN_RESULT" : "CHALLENGE",
              lr_msg_name(f.type));
    return;
  }
  if (f.type == LR_MSG_ERROR || em.code != LR_OK) {
    /* A refusal reaches the client as a reset, exactly as a direct
     * connection to a closed port would. A forward connection the guest
     * could not make (its server unreachable while status says
     * forwarding) is worth a warning, and counted on the port. */
    if (!reverse) {
      c->b->connect_failures++;
      lr_guest_warn(c->g, &c->g->connect_log,
                    "guest port %u: the guest could not connect to its server: %s%s%s",
                    c->b->key.guest_port ? c->b->key.guest_port : c->b->key.port, lr_err_name(em.code), em.text[0] ? ": " : "", em.text);
      lr_conn_close(c, 1, NULL);
      return;
    }
    conn_fail(c, 1, "%s%s%s", lr_err_name(em.code), em.text[0] ? ": " : "", em.text);
    return;
  }
  if (c->g->token_len && !lr_auth_verify_result(&c->auth, LR_OK, &auth)) {
    lr_session_auth_failed(c->g, reverse
                                     ? "OPEN_RESULT's MAC on a reverse stream does not verify"
                                     : "OPEN_RESULT's MAC on a data stream does not verify");
    conn_fail(c, 1, "the agent failed authentication (wrong key?)");
    return;
  }
  uv_read_stop(s);
  size_t rest_len;
  const uint8_t *rest = lr_rxbuf_rest(c->rx, &rest_len);
  lr_rxbuf_t *rx = c->rx;
  c->rx = NULL;
  if (lr_conn_is_udp(c)) { /* datagrams from here on, framed (lr_dgram.h) */
    lr_udp_flow_ready(c, rest, rest_len);
    free(rx);
    return;
  }
  if (c->rev_pending) {
    c->rev_pending = 0;
    c->g->nreverse_pending--;
  }
  conn_start_relay(c, rest, rest_len);
  free(rx);
}

static void conn_transport_ready(lr_endpoint_t *ep, int status, const char *err, void *data) {
  lr_conn_t *c = data;
  (void)ep;
  LR_HOOK(c->g->host, "transport-connected");
  if (status < 0) { /* the attempt closed ep[1] */
    if (c->phase < LR_CONN_CLOSING)
      conn_fail(c, 1, "cannot reach the agent: %s",
                err ? lr_guest_err_text(c->g, err) : uv_strerror(status));
    lr_conn_release(c, LR_HOLD_TRANSPORT);
    return;
  }
  if (!(c->holds & LR_HOLD_RELAY)) { /* the relay is gone already: ep[1] is ours alone */
    c->relay.ep[1].u.handle.data = c;
    c->holds |= LR_HOLD_LATE_EP;
    uv_close(&c->relay.ep[1].u.handle, conn_late_closed);
    lr_conn_release(c, LR_HOLD_TRANSPORT);
    return;
  }
  lr_relay_mark_open(&c->relay, 1, c->relay.ep[1].kind); /* the relay's from now on */
  lr_conn_release(c, LR_HOLD_TRANSPORT);
  if (c->phase >= LR_CONN_CLOSING) { /* closing raced the connect: close ep[1] too */
    lr_relay_close(&c->relay, 1);
    return;
  }
  c->phase = LR_CONN_HANDSHAKE;
  c->relay.ep[1].u.handle.data = c;
  uint8_t kind = c->shape == LR_CONN_REVERSE ? LR_STREAM_REVERSE : LR_STREAM_DATA;
  lr_auth_init(&c->auth, &c->g->host->pal->base, c->g->token, c->g->token_len, kind);
  c->req_sent = 0;
  if (c->g->token_len) {
    /* With a key the agent speaks first (CHALLENGE): the preamble now, the
     * request once the agent's nonce is in. */
    uint8_t p[LR_PREAMBLE_LEN];
    lr_preamble_encode_flags(p, kind, LR_PREAMBLE_KEYED);
    if (conn_write(c, p, sizeof p, "the preamble") != 0) return;
  } else if (conn_send_request(c, 1) != 0) {
    return;
  }
  int rc = uv_read_start(&c->relay.ep[1].u.stream, conn_alloc, conn_read);
  if (rc) conn_fail(c, 1, "reading OPEN_RESULT: %s", uv_strerror(rc));
}

/* A connection record of a shape, counted on b and on its guest, with its
 * relay initialised (the relay is its first holder). */
lr_conn_t *lr_conn_new(lr_guest_t *g, lr_binding_t *b, lr_conn_shape_t shape) {
  lr_host_t *h = g->host;
  lr_conn_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->g = g;
  c->b = b;
  c->shape = shape;
  c->holds = LR_HOLD_RELAY;
  lr_guest_ref(g);
  lr_binding_ref(b);
  b->connections++;
  b->active++;
  g->nconns++;
  c->started = uv_now(h->loop);
  c->next = g->conns;
  if (g->conns) g->conns->prev = c;
  g->conns = c;
  lr_relay_init(&c->relay, &h->pal->base, conn_closed, c);
  return c;
}

/* ep[0] is connected (or c is a UDP flow): open the transport stream that
 * carries it, or, one hop, take a socket made in the namespace. */
void lr_conn_open_transport(lr_conn_t *c) {
  lr_host_t *h = c->g->host;
  char err[300];
  if (c->shape == LR_CONN_TCP_ONEHOP || c->shape == LR_CONN_UDP_ONEHOP) {
    if (!conn_ns_connect(c)) ns_wait_append(c);
    return;
  }
  if (!c->rx) c->rx = malloc(sizeof *c->rx);
  if (!c->rx) {
    lr_conn_close(c, 1, NULL);
    return;
  }
  lr_rxbuf_init(c->rx);
  c->phase = LR_CONN_CONNECTING;
  c->holds |= LR_HOLD_TRANSPORT;
  if (lr_transport_connect(h->loop, h->pal, &c->g->addr,
                           c->g->ipc_reads ? LR_TRANSPORT_IPC : 0,
                           &c->relay.ep[1], conn_transport_ready, c, err, sizeof err) != 0) {
    lr_conn_release(c, LR_HOLD_TRANSPORT); /* nothing was started */
    conn_fail(c, 1, "cannot reach the agent: %s", lr_guest_err_text(c->g, err));
  }
}

/* Budgets: open connections per guest and per port. */
static int conn_budget_left(lr_guest_t *g, const lr_binding_t *b) {
  const lr_config_t *cfg = &g->cfg;
  if (g->nconns >= cfg->max_connections) {
    lr_guest_warn(g, &g->conns_log, "maxConnections (%u) open: new connection refused",
                  cfg->max_connections);
    return 0;
  }
  if (b->active >= cfg->max_connections_per_port) {
    lr_guest_warn(g, &g->conns_log,
                  "maxConnectionsPerPort (%u) open on port %u: new connection refused",
                  cfg->max_connections_per_port, b->key.port);
    return 0;
  }
  return 1;
}

void lr_conn_accept(lr_guest_t *g, lr_standin_t *s) {
  if (!conn_budget_left(g, s->b)) {
    lr_drop_pending((uv_stream_t *)&s->tcp);
    return;
  }
  lr_conn_t *c = lr_conn_new(g, s->b, g->one_hop ? LR_CONN_TCP_ONEHOP : LR_CONN_TCP);
  if (!c) return;
  uv_tcp_init(g->host->loop, &c->relay.ep[0].u.tcp);
  lr_relay_mark_open(&c->relay, 0, LR_EP_TCP);
  if (uv_accept((uv_stream_t *)&s->tcp, &c->relay.ep[0].u.stream) != 0) {
    lr_conn_close(c, 0, NULL);
    return;
  }
  lr_conn_open_transport(c);
}

/* ---- reverse: guest client -> host server ------------------------------- */

static void reverse_start(lr_guest_t *g, lr_binding_t *b, uint32_t id, uint8_t family,
                          int tried_other);

static void reverse_local_connected(uv_connect_t *req, int status) {
  lr_conn_t *c = req->data;
  LR_HOOK(c->g->host, "reverse-local-connected");
  if (c->phase != LR_CONN_LOCAL_CONNECT) return; /* closed meanwhile (ECANCELED) */
  if (status == UV_ECONNREFUSED && !c->rev_tried_other && c->g->cfg.ipv6) {
    /* "localhost" in the guest may be either family and the host server may
     * listen on only one: try the other before refusing. A new record takes
     * over (a libuv handle cannot be reused before it is closed). */
    lr_binding_t *b = c->b;
    b->connections--; /* the same logical connection */
    lr_conn_close(c, 0, NULL); /* silent, so no REVERSE_FAIL: the agent keeps waiting */
    reverse_start(c->g, b, c->rev_id, c->rev_family == 6 ? 4 : 6, 1);
    return;
  }
  if (status < 0) {
    conn_fail(c, 0, "host %s:%u: %s", lr_loopback_str(c->rev_family),
              c->b->key.port, uv_strerror(status));
    return;
  }
  lr_conn_open_transport(c);
}

static void reverse_start(lr_guest_t *g, lr_binding_t *b, uint32_t id, uint8_t family,
                          int tried_other) {
  struct sockaddr_storage ss;
  lr_conn_t *c = lr_conn_new(g, b, LR_CONN_REVERSE);
  if (!c) return;
  c->phase = LR_CONN_LOCAL_CONNECT;
  c->rev_pending = 1;
  g->nreverse_pending++;
  c->rev_id = id;
  c->rev_family = family;
  c->rev_tried_other = tried_other;
  lr_loopback_sockaddr(family, b->key.port, &ss);
  uv_tcp_init(g->host->loop, &c->relay.ep[0].u.tcp);
  lr_relay_mark_open(&c->relay, 0, LR_EP_TCP);
  c->creq.data = c;
  int rc = uv_tcp_connect(&c->creq, &c->relay.ep[0].u.tcp, (struct sockaddr *)&ss,
                          reverse_local_connected);
  if (rc) conn_fail(c, 0, "connect: %s", uv_strerror(rc));
}

static lr_binding_t *reverse_find(lr_guest_t *g, uint16_t port) {
  for (size_t i = 0; i < g->nrev; i++)
    if (g->rev[i]->key.port == port) return g->rev[i];
  return NULL;
}

void lr_conn_reverse_open(lr_guest_t *g, const lr_reverse_open_t *m) {
  lr_binding_t *b = reverse_find(g, m->port);
  const lr_config_t *cfg = &g->cfg;
  const char *why = NULL;
  if (!b) {
    /* Only ports the host's config publishes: a guest must not make the
     * host connect wherever it likes. */
    lr_guest_warn(g, &g->reverse_log,
                  "agent asked for host port %u, which reversePorts does not list", m->port);
    why = "port not in the host's reversePorts";
  } else if (g->nreverse_pending >= cfg->max_pending_reverse) {
    lr_guest_warn(g, &g->reverse_log,
                  "maxPendingReverse (%u) guest connections waiting: host port %u refused",
                  cfg->max_pending_reverse, m->port);
    why = "maxPendingReverse reached on the host";
  } else if (g->nconns >= cfg->max_connections || b->active >= cfg->max_connections_per_port) {
    lr_guest_warn(g, &g->reverse_log,
                  "maxConnections/maxConnectionsPerPort reached: host port %u refused", m->port);
    why = "connection budget reached on the host";
  }
  if (why) {
    uint8_t f[LR_FRAME_HDR_LEN + 10 + 80];
    lr_session_send(g, f, lr_encode_reverse_fail(f, sizeof f, m->id, LR_ERR_REFUSED, why));
    return;
  }
  reverse_start(g, b, m->id, m->family == 6 && g->cfg.ipv6 ? 6 : 4, 0);
}

void lr_conn_reverse_send_set(lr_guest_t *g) {
  static lr_reverse_set_t m; /* 2 KiB: not on the stack */
  static uint8_t f[LR_FRAME_HDR_LEN + 3 + 2 * LR_REVERSE_MAX_PORTS];
  memset(&m, 0, sizeof m);
  m.flags = g->cfg.ipv6 ? LR_REVERSE_IPV6 : 0;
  for (size_t i = 0; i < g->nrev; i++) m.ports[m.n++] = g->rev[i]->key.port;
  lr_session_send(g, f, lr_encode_reverse_set(f, sizeof f, &m));
}

int lr_conn_reverse_init(lr_guest_t *g, char *err, size_t errlen) {
  const lr_portset_t *ps = &g->cfg.reverse_ports;
  size_t total = 0;
  for (size_t i = 0; i < ps->n; i++) total += (size_t)(ps->r[i].hi - ps->r[i].lo) + 1;
  if (total > LR_REVERSE_MAX_PORTS) {
    snprintf(err, errlen, "reversePorts lists %zu ports; at most %d can be published", total,
             LR_REVERSE_MAX_PORTS);
    return -1;
  }
  if (!total) return 0;
  g->rev = calloc(total, sizeof *g->rev);
  if (!g->rev) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < ps->n; i++)
    for (uint32_t p = ps->r[i].lo; p <= ps->r[i].hi; p++) {
      if (reverse_find(g, (uint16_t)p)) continue;
      lr_binding_t *b = calloc(1, sizeof *b);
      if (!b) {
        snprintf(err, errlen, "out of memory");
        return -1;
      }
      b->key.family = 4;
      b->key.port = (uint16_t)p;
      b->actual_port = (uint16_t)p;
      b->state = LR_BINDING_BOUND;
      b->refs = 1; /* the guest's own reference */
      g->rev[g->nrev++] = b;
    }
  return 0;
}

void lr_conn_reverse_free(lr_guest_t *g) {
  for (size_t i = 0; i < g->nrev; i++) lr_binding_unref(g->rev[i]);
  free(g->rev);
  g->rev = NULL;
  g->nrev = 0;
}

/* ---- housekeeping -------------------------------------------------------- */

/* Both loops fail records as they go: safe by construction, since no
 * record is freed before the host's drain (c->next stays valid). */
void lr_conn_tick(lr_guest_t *g, uint64_t now) {
  for (lr_conn_t *c = g->conns; c; c = c->next) {
    if (now - c->started <= LR_HANDSHAKE_TIMEOUT_MS) continue;
    if (c->phase == LR_CONN_HANDSHAKE || c->phase == LR_CONN_LOCAL_CONNECT)
      conn_fail(c, 1, "agent did not answer OPEN within 5 s");
    else if (c->phase == LR_CONN_WAIT_SOCKET)
      conn_fail(c, 1, "no socket could be made in the namespace within 5 s");
  }
  lr_udp_tick(g, now);
}

void lr_conn_close_all(lr_guest_t *g) {
  for (lr_conn_t *c = g->conns; c; c = c->next) lr_conn_close(c, 0, NULL);
}
