/* UDP stand-ins and their flows, on the host.
 *
 * A guest UDP socket bound to a wildcard or loopback address gets a UDP
 * stand-in on the host loopback, by the same rules, policy and budgets as a
 * TCP listener (the port table calls lr_udp_bind/lr_udp_unbind through
 * lr_standin.c's hooks). UDP has no connections, so the unit of relaying is
 * a flow: each client address (source ip:port) seen on a stand-in gets its
 * own transport stream, opened by the host exactly as a TCP client's is
 * (lr_conn.c: preamble, OPEN with LR_OPEN_UDP, the key's handshake,
 * OPEN_RESULT), so a flow is an lr_conn_t whose client side is an address
 * rather than a socket. From then on the stream carries framed datagrams
 * (lr_dgram.h) both ways; the agent sends them from a UDP socket connected
 * to the guest server, and what comes back goes to this flow's client.
 *
 * Why a stream per flow and not one multiplexed stream per port: flows
 * then never block each other (one stalled stream drops its own datagrams,
 * LR_DGRAM_QUEUE_MAX, and nobody else's), the agent's reply routing is the
 * kernel's (one connected socket per flow), and the stream machinery, the
 * key's handshake included, is the TCP one unchanged.
 *
 * One hop: for a namespace guest (--netns, oneHop) there is no stream and
 * no OPEN: lorelayd takes a UDP socket made inside the guest's namespace
 * (lr_host_pal_t.nsock_*), connects it to the guest server, and the flow sends
 * to and reads from that socket directly: the agent is not in the data
 * path, and a datagram costs two system calls each way instead of six.
 *
 * A flow ends after udpIdleTimeout seconds without a datagram either way,
 * when its stream ends (the agent's socket saw the server go), and with
 * its stand-in (the guest socket closed). Datagrams that arrive while the
 * flow's stream is being opened wait in a short queue.
 *
 * Every queue here is bounded in bytes, not datagrams: a client decides how
 * big its datagrams are (up to 64 KiB each) and how many flows it opens
 * (one per source port), so a count would let one local user make the
 * daemon hold gigabytes while an agent is slow to answer OPEN. A flow holds
 * at most LR_DGRAM_QUEUE_MAX waiting for its stream and as many again
 * unsent on it; all the flows of a port, and of a guest, share
 * LR_DGRAM_PORT_QUEUE_MAX and LR_DGRAM_GUEST_QUEUE_MAX (counted in the
 * binding and the guest, which outlive every flow's queued writes).
 * Past a bound the datagram is dropped, counted in the port's drops, and
 * one rate-limited line says which bound. */
#include <stdlib.h>
#include <string.h>

#include "lr_dgram.h"
#include "lr_host_int.h"
#include "lr_log.h"

/* Bytes (datagrams plus their records) held for a flow whose stream is
 * still opening. */
#define FLOW_PENDING_MAX LR_DGRAM_QUEUE_MAX

typedef struct lr_udpsrv_s lr_udpsrv_t;

typedef struct pend_s {
  struct pend_s *next;
  size_t len;
  uint8_t bytes[];
} pend_t;

struct lr_flow_s {
  lr_conn_t *c;
  lr_udpsrv_t *s; /* NULL once the stand-in closed */
  struct sockaddr_storage peer;
  lr_dgram_rx_t rx;
  lr_dgram_tx_t tx;
  uint64_t last;  /* last datagram either way (uv_now) */
  uv_udp_t *direct; /* one hop: the guest server's connected socket; its own
                       allocation, holding the record (LR_HOLD_DIRECT) until
                       its close callback, which frees it */
  pend_t *pend, *pend_tail;
  size_t pend_bytes; /* counted in the port's and the guest's udp_queued too */
  lr_flow_t *prev, *next; /* in s->flows */
};

struct lr_udpsrv_s {
  uv_udp_t udp;
  lr_binding_t *b; /* NULL once unbound */
  lr_guest_t *g;
  lr_flow_t *flows;
};

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr *b) {
  if (a->ss_family != b->sa_family) return 0;
  if (b->sa_family == AF_INET) {
    const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
    return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
  return x->sin6_port == y->sin6_port &&
         memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
}

static void flow_unlink(lr_flow_t *f) {
  if (!f->s) return;
  if (f->prev)
    f->prev->next = f->next;
  else
    f->s->flows = f->next;
  if (f->next) f->next->prev = f->prev;
  f->prev = f->next = NULL;
  f->s = NULL;
}

/* The datagrams still waiting for the stream, and their share of the
 * port's and the guest's bounds. */
static void flow_drop_pending(lr_flow_t *f) {
  while (f->pend) {
    pend_t *p = f->pend;
    f->pend = p->next;
    free(p);
  }
  f->pend_tail = NULL;
  lr_dgram_shared_add(&f->tx, f->pend_bytes, -1);
  f->pend_bytes = 0;
}

static void flow_close(lr_flow_t *f) { lr_conn_close(f->c, 0, NULL); }

static void direct_closed(uv_handle_t *h) {
  lr_conn_t *c = h->data;
  c->flow->direct = NULL;
  free(h);
  lr_conn_release(c, LR_HOLD_DIRECT);
}

/* The UDP shapes' part of lr_conn_close: the flow leaves its stand-in,
 * drops what waits for the stream, and its server's socket closes. */
void lr_udp_flow_closing(lr_conn_t *c) {
  lr_flow_t *f = c->flow;
  flow_unlink(f);
  flow_drop_pending(f);
  if (f->direct && !uv_is_closing((uv_handle_t *)f->direct))
    uv_close((uv_handle_t *)f->direct, direct_closed);
}

void lr_udp_flow_free(lr_conn_t *c) {
  lr_flow_t *f = c->flow;
  lr_dgram_rx_free(&f->rx);
  c->g->nflows--;
  c->flow = NULL;
  free(f);
}

static uv_stream_t *flow_stream(lr_flow_t *f) { return &f->c->relay.ep[1].u.stream; }

static void drop_datagram(lr_binding_t *b) { b->drops++; }

/* A datagram dropped at a byte bound: one line per bound per guest every
 * LR_BUDGET_LOG_MS (a flooding client would otherwise write one per
 * datagram), with the port's drops so far. */
static void queue_full(lr_flow_t *f, size_t cost, const char *why) {
  lr_guest_t *g = f->c->g;
  const lr_binding_t *b = f->c->b;
  int k = 0; /* one gate per bound: which one holds matters to the operator */
  static const char *const bound[3] = {"the flow's queue (256 KiB) is full",
                                       "the port's UDP queues (4 MiB) are full",
                                       "the guest's UDP queues (16 MiB) are full"};
  if (g->udp_queued + cost > LR_DGRAM_GUEST_QUEUE_MAX)
    k = 2;
  else if (b->udp_queued + cost > LR_DGRAM_PORT_QUEUE_MAX)
    k = 1;
  lr_guest_warn(g, &g->udp_queue_log[k], "UDP port %u: %s; %s: datagram dropped "
                "(%llu dropped on this port so far)",
                b->key.port, why, bound[k], (unsigned long long)b->drops);
}

/* Client -> guest: one datagram onto the flow's stream. 0, or -1 when the
 * flow was closed. */
static int flow_to_guest(lr_flow_t *f, const uint8_t *p, size_t n) {
  if (f->direct) {
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int rc = uv_udp_try_send(f->direct, &b, 1, NULL);
    if (rc >= 0) {
      f->c->b->bytes_to_guest += n;
    } else if (rc == UV_ECONNREFUSED) { /* the server's socket is gone */
      flow_close(f);
      return -1;
    } else {
      f->tx.dropped++;
      f->c->b->drops++;
    }
    return 0;
  }
  int rc = lr_dgram_send(flow_stream(f), &f->tx, p, n);
  if (rc == 1) queue_full(f, n + LR_DGRAM_HDR, "the flow's stream is not keeping up");
  if (rc < 0) {
    LR_DEBUG("%s: UDP flow to guest port %u: %s", f->c->g->name, f->c->b->key.port,
             uv_strerror(rc));
    flow_close(f);
    return -1;
  }
  if (rc == 0) f->c->b->bytes_to_guest += n;
  return 0;
}

/* Guest -> client: one datagram from the stream to this flow's client. */
static int flow_deliver(void *data, const uint8_t *p, size_t n) {
  lr_flow_t *f = data;
  if (!f->s) return 1; /* the stand-in is gone: so is the flow */
  uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
  int rc = uv_udp_try_send(&f->s->udp, &b, 1, (const struct sockaddr *)&f->peer);
  if (rc >= 0) {
    f->c->b->bytes_to_host += n;
  } else {
    /* A full socket buffer or an unreachable client: the datagram is
     * lost, as it would be between two UDP sockets. */
    f->tx.dropped++;
    f->c->b->drops++;
  }
  return 0;
}

/* The decoder stopped on the agent's bytes: the flow closes, and a bad
 * frame is logged (rate-limited) wherever it arrived, in a read of its own
 * or in the one that carried OPEN_RESULT. */
static void flow_bad_frame(lr_flow_t *f, int rc) {
  if (rc != LR_DGRAM_STOPPED)
    lr_guest_warn(f->c->g, &f->c->g->dgram_log,
                  "UDP flow from guest port %u: bad datagram frame from the agent (%s): "
                  "flow closed",
                  f->c->b->key.port,
                  rc == LR_PROTO_ETOOBIG ? "length over 65507" : lr_proto_strerror(rc));
  flow_close(f);
}

static void flow_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  lr_conn_t *c = st->data;
  lr_flow_t *f = c->flow;
  LR_HOOK(c->g->host, "udp-stream");
  int live = c->phase == LR_CONN_RELAYING;
  if (live && lr_guest_refuse_fds(c->g, &c->relay.ep[1], "a UDP flow's stream")) {
    flow_close(f); /* closing the stream closes what it received */
  } else if (n > 0 && live) {
    f->last = uv_now(st->loop);
    int rc = lr_dgram_rx_feed(&f->rx, (const uint8_t *)buf->base, (size_t)n, flow_deliver, f);
    if (rc != LR_PROTO_OK) flow_bad_frame(f, rc);
  } else if (n < 0 && live) {
    if (lr_dgram_rx_partial(&f->rx))
      lr_guest_warn(f->c->g, &f->c->g->trunc_log,
                    "UDP flow from guest port %u: the agent's stream ended inside a datagram "
                    "(truncated frame): flow closed",
                    f->c->b->key.port);
    flow_close(f);
  }
  free(buf->base);
}

void lr_udp_flow_ready(lr_conn_t *c, const uint8_t *rest, size_t rest_len) {
  lr_flow_t *f = c->flow;
  c->phase = LR_CONN_RELAYING; /* datagrams go on the stream (or direct) */
  while (f->pend) {
    pend_t *p = f->pend;
    f->pend = p->next;
    if (!f->pend) f->pend_tail = NULL;
    size_t cost = sizeof *p + p->len;
    f->pend_bytes -= cost;
    lr_dgram_shared_add(&f->tx, cost, -1);
    int rc = flow_to_guest(f, p->bytes, p->len);
    free(p);
    if (rc != 0) return;
  }
  if (rest_len) {
    int rc = lr_dgram_rx_feed(&f->rx, rest, rest_len, flow_deliver, f);
    if (rc != LR_PROTO_OK) {
      flow_bad_frame(f, rc);
      return;
    }
  }
  if (f->direct) return; /* one hop: no stream to read */
  int rc = uv_read_start(flow_stream(f), lr_dgram_alloc, flow_read);
  if (rc) {
    LR_WARN("%s: UDP flow: reading the stream: %s", c->g->name, uv_strerror(rc));
    flow_close(f);
  }
}

/* One hop: the server's reply, straight from its connected socket. */
static void on_direct(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *addr,
                      unsigned flags) {
  lr_conn_t *c = h->data;
  (void)addr;
  LR_HOOK(c->g->host, "udp-direct");
  if (c->phase != LR_CONN_RELAYING) return; /* closed meanwhile */
  lr_flow_t *f = c->flow;
  if (n < 0) { /* ECONNREFUSED: the server's socket went */
    flow_close(f);
    return;
  }
  if (n == 0 && !addr) return;
  if (flags & UV_UDP_PARTIAL) {
    drop_datagram(c->b);
    return;
  }
  f->last = uv_now(h->loop);
  if (flow_deliver(f, (const uint8_t *)buf->base, (size_t)n)) flow_close(f);
}

void lr_udp_flow_adopted(lr_conn_t *c) {
  lr_flow_t *f = c->flow;
  lr_host_t *h = c->g->host;
  int rc = UV_ENOMEM;
  f->direct = malloc(sizeof *f->direct);
  if (f->direct) {
    uv_udp_init(h->loop, f->direct);
    f->direct->data = c;
    c->holds |= LR_HOLD_DIRECT;
    rc = uv_udp_open(f->direct, c->server_sock);
    if (rc) h->pal->base.sock_close(c->server_sock); /* the handle does not own it */
    if (rc == 0) {
      lr_dgram_sockbufs(f->direct);
      rc = uv_udp_recv_start(f->direct, lr_dgram_udp_alloc, on_direct);
    }
  } else {
    h->pal->base.sock_close(c->server_sock);
  }
  if (rc) {
    LR_WARN("%s: UDP flow: cannot use the socket made in the namespace: %s", c->g->name,
            uv_strerror(rc));
    flow_close(f);
    return;
  }
  lr_udp_flow_ready(c, NULL, 0);
}

/* Budgets: UDP flows per guest and per port (and the guest's open
 * connections, since each flow holds a transport stream). */
static int flow_budget_left(lr_guest_t *g, const lr_binding_t *b) {
  const lr_config_t *cfg = &g->cfg;
  const char *what = NULL;
  unsigned max = 0;
  if (g->nflows >= cfg->max_udp_flows) {
    what = "maxUdpFlows";
    max = cfg->max_udp_flows;
  } else if (b->active >= cfg->max_udp_flows_per_port) {
    what = "maxUdpFlowsPerPort";
    max = cfg->max_udp_flows_per_port;
  } else if (g->nconns >= cfg->max_connections) {
    what = "maxConnections";
    max = cfg->max_connections;
  }
  if (!what) return 1;
  lr_guest_warn(g, &g->flows_log, "%s (%u) open: datagram from a new client of UDP port %u "
                "dropped", what, max, b->key.port);
  return 0;
}

static lr_flow_t *flow_new(lr_udpsrv_t *s, const struct sockaddr *addr) {
  lr_guest_t *g = s->g;
  if (!flow_budget_left(g, s->b)) return NULL;
  lr_flow_t *f = calloc(1, sizeof *f);
  if (!f) return NULL;
  lr_conn_t *c = lr_conn_new(g, s->b, g->one_hop ? LR_CONN_UDP_ONEHOP : LR_CONN_UDP);
  if (!c) {
    free(f);
    return NULL;
  }
  g->nflows++;
  c->flow = f;
  f->c = c;
  f->s = s;
  memcpy(&f->peer, addr,
         addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
  f->last = uv_now(g->host->loop);
  f->tx.drop_counter = &s->b->drops;
  f->tx.shared[0] = &s->b->udp_queued;
  f->tx.shared_max[0] = LR_DGRAM_PORT_QUEUE_MAX;
  f->tx.shared[1] = &g->udp_queued;
  f->tx.shared_max[1] = LR_DGRAM_GUEST_QUEUE_MAX;
  lr_dgram_rx_init(&f->rx);
  f->next = s->flows;
  if (s->flows) s->flows->prev = f;
  s->flows = f;
  lr_conn_open_transport(c);
  return c->phase < LR_CONN_CLOSING ? f : NULL; /* a failure closed it at once */
}

static void flow_pend(lr_flow_t *f, const uint8_t *p, size_t n) {
  size_t cost = sizeof(pend_t) + n;
  int fits = f->pend_bytes + cost <= FLOW_PENDING_MAX && lr_dgram_shared_fits(&f->tx, cost);
  pend_t *d = fits ? malloc(cost) : NULL;
  if (!d) {
    drop_datagram(f->c->b);
    f->tx.dropped++;
    queue_full(f, cost, "the agent has not answered the flow's OPEN yet");
    return;
  }
  d->next = NULL;
  d->len = n;
  memcpy(d->bytes, p, n);
  if (f->pend_tail)
    f->pend_tail->next = d;
  else
    f->pend = d;
  f->pend_tail = d;
  f->pend_bytes += cost;
  lr_dgram_shared_add(&f->tx, cost, 1);
}

static void on_datagram(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *addr,
                        unsigned flags) {
  lr_udpsrv_t *s = h->data;
  LR_HOOK(s->g->host, "udp-datagram");
  if (n < 0) {
    /* An ICMP error for an earlier reply (the client went): nothing to do
     * for the others. */
    LR_DEBUG("%s: UDP stand-in port %u: %s", s->g->name, s->b ? s->b->actual_port : 0,
             uv_strerror((int)n));
    return;
  }
  if (!addr || !s->b) return;
  if ((flags & UV_UDP_PARTIAL) || (size_t)n > LR_DGRAM_MAX) {
    drop_datagram(s->b);
    return;
  }
  lr_flow_t *f = s->flows; /* live flows only: a close unlinks */
  while (f && !same_addr(&f->peer, addr)) f = f->next;
  if (!f) f = flow_new(s, addr);
  if (!f) {
    if (s->b) drop_datagram(s->b);
    return;
  }
  f->last = uv_now(h->loop);
  if (f->c->phase == LR_CONN_RELAYING)
    flow_to_guest(f, (const uint8_t *)buf->base, (size_t)n);
  else
    flow_pend(f, (const uint8_t *)buf->base, (size_t)n);
}

static void udpsrv_free(uv_handle_t *h) {
  lr_udpsrv_t *s = h->data;
  lr_guest_t *g = s->g;
  free(s);
  lr_guest_unref(g);
}

int lr_udp_bind(lr_guest_t *g, lr_binding_t *b, uint16_t port) {
  lr_host_t *h = g->host;
  struct sockaddr_storage ss;
  if (!h->pal->udp_bind_loopback) return LR_BIND_UNAVAILABLE;
  lr_udpsrv_t *s = calloc(1, sizeof *s);
  if (!s) return LR_BIND_INUSE;
  s->g = g;
  lr_guest_ref(g); /* until udpsrv_free */
  s->udp.data = s;
  lr_guest_sockaddr(g, b->key.family, port, &ss);
  int rc = h->pal->udp_bind_loopback(h->loop, &s->udp, (struct sockaddr *)&ss, udpsrv_free);
  if (rc == 0) {
    struct sockaddr_storage got;
    int len = sizeof got;
    if (uv_udp_getsockname(&s->udp, (struct sockaddr *)&got, &len) == 0)
      port = ntohs(((struct sockaddr_in *)&got)->sin_port);
    lr_dgram_sockbufs(&s->udp);
    rc = uv_udp_recv_start(&s->udp, lr_dgram_udp_alloc, on_datagram);
    if (rc) {
      uv_close((uv_handle_t *)&s->udp, udpsrv_free);
      LR_WARN("%s: UDP stand-in %s:%u: %s", g->name, lr_guest_host_str(g, b->key.family), port,
              uv_strerror(rc));
      return LR_BIND_INUSE;
    }
    s->b = b;
    b->io = s;
    b->actual_port = port;
    g->nstandins++;
    if (!b->probing)
      LR_STANDIN_LOG(g, "%s: forwarding host %s:%u/udp", g->name,
                     lr_guest_host_str(g, b->key.family), port);
    return LR_BIND_OK;
  }
  /* The platform is closing s (if it got as far as a handle): udpsrv_free
   * drops the guest's reference. */
  if (!s->udp.loop) {
    free(s);
    lr_guest_unref(g);
  }
  if (rc == UV_EADDRNOTAVAIL || rc == UV_EAFNOSUPPORT) return LR_BIND_UNAVAILABLE;
  if (rc != UV_EADDRINUSE && rc != UV_EACCES)
    LR_WARN("%s: UDP stand-in %s:%u: %s", g->name, lr_guest_host_str(g, b->key.family), port,
            uv_strerror(rc));
  if (rc == UV_EADDRINUSE) lr_standin_find_holder(g, b, port);
  return LR_BIND_INUSE;
}

void lr_udp_unbind(lr_guest_t *g, lr_binding_t *b) {
  lr_udpsrv_t *s = b->io;
  s->b = NULL;
  b->io = NULL;
  g->nstandins--;
  /* The guest socket went: its flows go with the stand-in. */
  while (s->flows) flow_close(s->flows);
  if (!b->probing)
    LR_STANDIN_LOG(g, "%s: stopped forwarding host %s:%u/udp", g->name,
                   lr_guest_host_str(g, b->key.family), b->actual_port);
  uv_close((uv_handle_t *)&s->udp, udpsrv_free);
}

void lr_udp_tick(lr_guest_t *g, uint64_t now) {
  uint64_t idle_ms = (uint64_t)g->cfg.udp_idle_timeout_s * 1000;
  for (lr_conn_t *c = g->conns; c; c = c->next) { /* safe: see lr_conn_tick */
    lr_flow_t *f = c->flow;
    if (!lr_conn_is_udp(c) || c->phase != LR_CONN_RELAYING || now - f->last < idle_ms) continue;
    LR_DEBUG("%s: UDP flow on port %u idle for %u s: closed", g->name, c->b->key.port,
             g->cfg.udp_idle_timeout_s);
    flow_close(f);
  }
}
