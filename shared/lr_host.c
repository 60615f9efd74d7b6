/* The host core; see lr_host.h.
 *
 * Objects and who owns what:
 *   lr_host_t     guests, the status server
 *   lr_guest_t    one agent: control stream, port table, timers, connections
 *   standin_t     one stand-in listener (lr_binding_t.io), closed on unbind
 *   conn_t        one relayed client: an lr_relay_t plus its handshake state;
 *                 holds a ref on its binding so counters outlive the listener
 * Control streams and connections are separate transport streams, so a slow
 * connection never blocks port updates and vice versa. */
#include "lr_host.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_addr.h"
#include "lr_log.h"
#include "lr_ports.h"
#include "lr_proto.h"
#include "lr_relay.h"
#include "lr_rxbuf.h"
#include "lr_transport.h"
#include "lr_version.h"

#define RETRY_MIN_MS 50
#define RETRY_MAX_MS 1000
#define AUTH_RETRY_MS 5000
#define TICK_MS 1000
#define PING_EVERY_MS 5000
#define DEAD_AFTER_MS 15000
#define STALE_AFTER_MS 5000
#define HANDSHAKE_TIMEOUT_MS 5000
#define STANDIN_BACKLOG 511
/* A guest reporting more listeners than any real one has is broken or
 * hostile; past this it cannot make the host open more stand-ins. */
#define MAX_LISTENERS_PER_GUEST 4096

typedef struct lr_guest_s lr_guest_t;

typedef enum { G_IDLE, G_CONNECTING, G_HANDSHAKE, G_CONNECTED } guest_state_t;

typedef struct ctl_s {
  lr_endpoint_t ep;
  lr_rxbuf_t rx;
  lr_guest_t *g;
  int got_preamble;
} ctl_t;

typedef struct conn_s {
  lr_relay_t relay; /* first: the relay's close callback gets &relay */
  lr_guest_t *g;
  lr_binding_t *b;
  lr_rxbuf_t *rx;   /* only during the handshake */
  uint64_t started;
  int got_preamble;
  int connecting;   /* a transport attempt holds ep[1]: c must outlive it */
  int dead;         /* the relay closed while connecting */
  /* reverse (guest client -> host server) connections */
  int reverse;
  uint32_t rev_id;    /* the agent's id for its waiting guest client */
  uint8_t rev_family; /* host loopback family being tried */
  int rev_tried_other;
  uv_connect_t creq;  /* the local connect to the host server */
  struct conn_s *prev, *next;
} conn_t;

typedef struct {
  uv_tcp_t tcp;
  lr_binding_t *b;
  lr_guest_t *g;
} standin_t;

struct lr_guest_s {
  lr_host_t *host;
  char name[300];
  char transport[300];
  lr_taddr_t addr;
  lr_guest_resolve_fn resolve;
  void *resolve_data;
  uint8_t token[LR_TOKEN_MAX];
  size_t token_len;
  lr_ports_t ports;
  /* reversePorts: one counter record per published host port */
  lr_binding_t **rev;
  size_t nrev;
  guest_state_t state;
  ctl_t *ctl;
  uv_timer_t retry_timer, conflict_timer, tick_timer;
  unsigned backoff_ms;
  uint64_t last_rx, lost_at;
  char last_err[300];
  int stopping;
  conn_t *conns;
  lr_guest_t *next;
};

typedef struct status_client_s {
  uv_pipe_t pipe;
  lr_host_t *host;
  char line[64];
  size_t len;
  lr_sbuf_t out;
  uv_write_t wreq;
  uv_shutdown_t sreq;
  struct status_client_s *next;
} status_client_t;

struct lr_host_s {
  uv_loop_t *loop;
  const lr_pal_t *pal;
  const lr_config_t *cfg;
  lr_guest_t *guests;
  uv_pipe_t status;
  int status_open;
  status_client_t *clients;
  char hostname[128];
  /* shutdown */
  int stopping;
  unsigned closing_handles;
  void (*done)(void *);
  void *done_data;
};

static void guest_schedule_connect(lr_guest_t *g, unsigned delay_ms);
static void guest_drop_control(lr_guest_t *g, const char *why);
static void handle_closed(uv_handle_t *h);

/* ---- shutdown accounting ------------------------------------------------ */

/* Every handle the host closes during shutdown goes through here so the
 * done callback runs exactly when the last one is gone. */
static void host_close(lr_host_t *h, uv_handle_t *handle, uv_close_cb cb) {
  if (uv_is_closing(handle)) return;
  h->closing_handles++;
  uv_close(handle, cb ? cb : handle_closed);
}

static void host_maybe_done(lr_host_t *h) {
  if (!h->stopping || h->closing_handles) return;
  for (lr_guest_t *g = h->guests; g; g = g->next)
    if (g->conns || g->ctl) return;
  if (h->done) {
    void (*done)(void *) = h->done;
    h->done = NULL;
    done(h->done_data);
  }
}

static lr_host_t *handle_host(uv_handle_t *handle) {
  /* Timers and the status pipe carry their guest/host in data. */
  return handle->data;
}

static void handle_closed(uv_handle_t *handle) {
  lr_host_t *h = handle_host(handle);
  h->closing_handles--;
  host_maybe_done(h);
}

/* ---- control stream: sending -------------------------------------------- */

typedef struct {
  uv_write_t req;
  size_t len;
  uint8_t data[];
} ctl_write_t;

static void ctl_written(uv_write_t *req, int status) {
  (void)status; /* a failed write shows up as a read error too */
  free(req);
}

static void ctl_send(lr_guest_t *g, const uint8_t *buf, size_t len) {
  if (!g->ctl || !len) return;
  ctl_write_t *w = malloc(sizeof *w + len);
  if (!w) return;
  memcpy(w->data, buf, len);
  w->len = len;
  uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)len);
  if (uv_write(&w->req, &g->ctl->ep.u.stream, &b, 1, ctl_written) != 0) free(w);
}

/* ---- stand-in listeners ------------------------------------------------- */

static void conn_start(lr_guest_t *g, standin_t *s);

static void standin_free(uv_handle_t *h) {
  standin_t *s = (standin_t *)h;
  lr_host_t *host = s->g->host;
  free(s);
  host->closing_handles--;
  host_maybe_done(host);
}

static void on_client(uv_stream_t *server, int status) {
  standin_t *s = server->data;
  if (status < 0) {
    /* EMFILE repeats for every pending client: say it once a minute. */
    static uint64_t last_warn;
    uint64_t now = uv_now(s->g->host->loop);
    if (!last_warn || now - last_warn >= 60000) {
      last_warn = now;
      lr_log(LR_LOG_WARN, "stand-in port %u: accept: %s%s", s->b ? s->b->actual_port : 0,
             uv_strerror(status),
             status == UV_EMFILE ? " (raise the open-files limit: LimitNOFILE= / ulimit -n)" : "");
    }
    return;
  }
  if (!s->b) return;
  conn_start(s->g, s);
}

static void make_loopback(int family, uint16_t port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (family == 4) {
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    uv_inet_pton(AF_INET, "127.0.0.1", &sin->sin_addr);
  } else {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    uv_inet_pton(AF_INET6, "::1", &sin6->sin6_addr);
  }
}

static int ops_bind(lr_binding_t *b, uint16_t port, void *data) {
  lr_guest_t *g = data;
  lr_host_t *h = g->host;
  standin_t *s = calloc(1, sizeof *s);
  struct sockaddr_storage ss;
  if (!s) return LR_BIND_INUSE;
  s->g = g;
  make_loopback(b->key.family, port, &ss);
  h->closing_handles++; /* balanced by standin_free, on failure too */
  int rc = h->pal->listen_loopback(h->loop, &s->tcp, (struct sockaddr *)&ss, STANDIN_BACKLOG,
                                   on_client, standin_free);
  if (rc == 0) {
    /* Counted while open, not while closing: see ops_unbind. */
    h->closing_handles--;
    struct sockaddr_storage got;
    int len = sizeof got;
    if (uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&got, &len) == 0)
      port = ntohs(((struct sockaddr_in *)&got)->sin_port);
    s->b = b;
    s->tcp.data = s;
    b->io = s;
    b->actual_port = port;
    lr_log(LR_LOG_INFO, "%s: forwarding host %s:%u", g->name,
           b->key.family == 6 ? "[::1]" : "127.0.0.1", port);
    return LR_BIND_OK;
  }
  if (rc == UV_EADDRNOTAVAIL || rc == UV_EAFNOSUPPORT) return LR_BIND_UNAVAILABLE;
  if (rc != UV_EADDRINUSE && rc != UV_EACCES)
    lr_log(LR_LOG_WARN, "%s: stand-in %s:%u: %s", g->name,
           b->key.family == 6 ? "[::1]" : "127.0.0.1", port, uv_strerror(rc));
  return LR_BIND_INUSE;
}

static void ops_unbind(lr_binding_t *b, void *data) {
  lr_guest_t *g = data;
  standin_t *s = b->io;
  if (!s) return;
  s->b = NULL;
  b->io = NULL;
  lr_log(LR_LOG_INFO, "%s: stopped forwarding host %s:%u", g->name,
         b->key.family == 6 ? "[::1]" : "127.0.0.1", b->actual_port);
  g->host->closing_handles++;
  uv_close((uv_handle_t *)&s->tcp, standin_free);
}

static void conflict_tick(uv_timer_t *t) {
  lr_guest_t *g = t->data;
  if (lr_ports_retry_conflicts(&g->ports) == 0) uv_timer_stop(&g->conflict_timer);
}

static void arm_conflict_timer(lr_guest_t *g) {
  if (lr_ports_conflicts(&g->ports) > 0 && !uv_is_active((uv_handle_t *)&g->conflict_timer))
    uv_timer_start(&g->conflict_timer, conflict_tick, g->host->cfg->conflict_retry_ms,
                   g->host->cfg->conflict_retry_ms);
}

static void ops_state_changed(const lr_port_entry_t *e, lr_port_state_t st, void *data) {
  lr_guest_t *g = data;
  lr_port_state_msg_t m;
  uint8_t buf[64];
  memset(&m, 0, sizeof m);
  m.listener = e->listener;
  m.state = (uint8_t)st;
  m.host_port = e->nb ? e->b[0]->actual_port ? e->b[0]->actual_port : e->b[0]->key.port : 0;
  if (g->state == G_CONNECTED) ctl_send(g, buf, lr_encode_port_state(buf, sizeof buf, &m));
}

/* ---- relayed connections ------------------------------------------------ */

static void conn_destroy(conn_t *c) {
  lr_guest_t *g = c->g;
  if (c->prev)
    c->prev->next = c->next;
  else
    g->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->b->active--;
  lr_binding_unref(c->b);
  free(c->rx);
  free(c);
  host_maybe_done(g->host);
}

static void conn_closed(lr_relay_t *r) {
  conn_t *c = (conn_t *)r;
  if (c->connecting)
    c->dead = 1; /* conn_transport_ready finishes the job */
  else
    conn_destroy(c);
}

static void conn_late_closed(uv_handle_t *h) { conn_destroy(h->data); }

static void conn_fail(conn_t *c, int reset, const char *fmt, ...) LR_PRINTF(3, 4);
static void conn_fail(conn_t *c, int reset, const char *fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (c->reverse) {
    lr_log(LR_LOG_INFO, "%s: guest connection to host port %u: %s", c->g->name, c->b->key.port,
           msg);
    if (c->rx) { /* not attached yet: the agent still holds the guest client */
      uint8_t f[LR_FRAME_HDR_LEN + 10 + LR_TEXT_MAX];
      ctl_send(c->g, f, lr_encode_reverse_fail(f, sizeof f, c->rev_id, LR_ERR_REFUSED, msg));
    }
  } else {
    lr_log(LR_LOG_INFO, "%s: connection to guest port %u: %s", c->g->name, c->b->key.port, msg);
  }
  free(c->rx);
  c->rx = NULL;
  lr_relay_close(&c->relay, reset);
}

static void conn_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  conn_t *c = h->data;
  size_t avail = 0;
  (void)sz;
  buf->base = c->rx ? (char *)lr_rxbuf_space(c->rx, &avail) : NULL;
  buf->len = avail;
}

static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn_t *c = s->data;
  (void)buf;
  if (!c->rx || c->relay.closing) return;
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
  int rc = lr_rxbuf_frame(c->rx, &f);
  if (rc == LR_PROTO_NEED_MORE) return;
  if (rc != LR_PROTO_OK) {
    conn_fail(c, 1, "%s", lr_proto_strerror(rc));
    return;
  }
  lr_error_msg_t em;
  if ((f.type != LR_MSG_OPEN_RESULT && f.type != LR_MSG_ERROR) ||
      (rc = lr_decode_error(&f, &em)) != LR_PROTO_OK) {
    conn_fail(c, 1, "expected OPEN_RESULT, got %s", lr_msg_name(f.type));
    return;
  }
  if (f.type == LR_MSG_ERROR || em.code != LR_OK) {
    /* A refusal reaches the client as a reset, exactly as a direct
     * connection to a closed port would. */
    conn_fail(c, 1, "%s%s%s", lr_err_name(em.code), em.text[0] ? ": " : "", em.text);
    return;
  }
  uv_read_stop(s);
  size_t rest_len;
  const uint8_t *rest = lr_rxbuf_rest(c->rx, &rest_len);
  lr_rxbuf_t *rx = c->rx;
  c->rx = NULL;
  c->relay.counter[0] = &c->b->bytes_to_guest;
  c->relay.counter[1] = &c->b->bytes_to_host;
  int src = lr_relay_start(&c->relay, rest, rest_len);
  free(rx);
  if (src) lr_log(LR_LOG_WARN, "%s: relay start: %s", c->g->name, uv_strerror(src));
}

static void conn_transport_ready(lr_endpoint_t *ep, int status, const char *err, void *data) {
  conn_t *c = data;
  (void)ep;
  c->connecting = 0;
  if (c->dead) { /* the client side is already gone */
    if (status == 0) {
      c->relay.ep[1].u.handle.data = c;
      uv_close(&c->relay.ep[1].u.handle, conn_late_closed);
    } else {
      conn_destroy(c);
    }
    return;
  }
  if (status < 0) {
    if (c->relay.closing)
      return; /* the relay's close callback frees c */
    conn_fail(c, 1, "cannot reach the agent: %s", err ? err : uv_strerror(status));
    return;
  }
  lr_relay_mark_open(&c->relay, 1, c->relay.ep[1].kind);
  if (c->relay.closing) { /* closing raced the connect: close ep[1] too */
    lr_relay_close(&c->relay, 1);
    return;
  }
  c->relay.ep[1].u.handle.data = c;
  uint8_t buf[LR_PREAMBLE_LEN + LR_FRAME_HDR_LEN + 300];
  size_t n;
  if (c->reverse) {
    lr_attach_t at;
    memset(&at, 0, sizeof at);
    at.token_len = (uint8_t)c->g->token_len;
    memcpy(at.token, c->g->token, c->g->token_len);
    at.id = c->rev_id;
    lr_preamble_encode(buf, LR_STREAM_REVERSE);
    n = lr_encode_attach(buf + LR_PREAMBLE_LEN, sizeof buf - LR_PREAMBLE_LEN, &at);
  } else {
    lr_open_t o;
    memset(&o, 0, sizeof o);
    o.token_len = (uint8_t)c->g->token_len;
    memcpy(o.token, c->g->token, c->g->token_len);
    o.family = c->b->key.family;
    o.port = c->b->key.port;
    lr_preamble_encode(buf, LR_STREAM_DATA);
    n = lr_encode_open(buf + LR_PREAMBLE_LEN, sizeof buf - LR_PREAMBLE_LEN, &o);
  }
  uv_buf_t b = uv_buf_init((char *)buf, (unsigned)(LR_PREAMBLE_LEN + n));
  /* A fresh stream takes a few hundred bytes at once; if it ever does not,
   * this stream is not usable anyway. */
  int w = uv_try_write(&c->relay.ep[1].u.stream, &b, 1);
  if (w != (int)b.len) {
    conn_fail(c, 1, "sending OPEN: %s", w < 0 ? uv_strerror(w) : "short write");
    return;
  }
  int rc = uv_read_start(&c->relay.ep[1].u.stream, conn_alloc, conn_read);
  if (rc) conn_fail(c, 1, "reading OPEN_RESULT: %s", uv_strerror(rc));
}

/* A connection record counted on b, with its relay initialised. */
static conn_t *conn_new(lr_guest_t *g, lr_binding_t *b) {
  lr_host_t *h = g->host;
  conn_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->g = g;
  c->b = b;
  lr_binding_ref(b);
  b->connections++;
  b->active++;
  c->started = uv_now(h->loop);
  c->next = g->conns;
  if (g->conns) g->conns->prev = c;
  g->conns = c;
  lr_relay_init(&c->relay, h->pal, conn_closed, c);
  return c;
}

/* ep[0] is connected: open the transport stream that carries it. */
static void conn_open_transport(conn_t *c) {
  lr_host_t *h = c->g->host;
  char err[300];
  if (!c->rx) c->rx = malloc(sizeof *c->rx);
  if (!c->rx) {
    lr_relay_close(&c->relay, 1);
    return;
  }
  lr_rxbuf_init(c->rx);
  c->connecting = 1;
  if (lr_transport_connect(h->loop, h->pal, &c->g->addr, &c->relay.ep[1], conn_transport_ready,
                           c, err, sizeof err) != 0) {
    c->connecting = 0;
    conn_fail(c, 1, "cannot reach the agent: %s", err);
  }
}

static void conn_start(lr_guest_t *g, standin_t *s) {
  conn_t *c = conn_new(g, s->b);
  if (!c) return;
  uv_tcp_init(g->host->loop, &c->relay.ep[0].u.tcp);
  lr_relay_mark_open(&c->relay, 0, LR_EP_TCP);
  if (uv_accept((uv_stream_t *)&s->tcp, &c->relay.ep[0].u.stream) != 0) {
    lr_relay_close(&c->relay, 0);
    return;
  }
  conn_open_transport(c);
}

/* ---- reverse forwarding: guest client -> host server --------------------- */

static void reverse_start(lr_guest_t *g, lr_binding_t *b, uint32_t id, uint8_t family,
                          int tried_other);

static void reverse_local_connected(uv_connect_t *req, int status) {
  conn_t *c = req->data;
  if (c->relay.closing) return;
  if (status == UV_ECONNREFUSED && !c->rev_tried_other && c->g->host->cfg->ipv6) {
    /* "localhost" in the guest may be either family and the host server may
     * listen on only one: try the other before refusing. A new record takes
     * over (a libuv handle cannot be reused before it is closed). */
    lr_binding_t *b = c->b;
    b->connections--; /* the same logical connection */
    free(c->rx);
    c->rx = NULL; /* no REVERSE_FAIL: the agent keeps waiting */
    lr_relay_close(&c->relay, 0);
    reverse_start(c->g, b, c->rev_id, c->rev_family == 6 ? 4 : 6, 1);
    return;
  }
  if (status < 0) {
    conn_fail(c, 0, "host %s:%u: %s", c->rev_family == 6 ? "[::1]" : "127.0.0.1",
              c->b->key.port, uv_strerror(status));
    return;
  }
  conn_open_transport(c);
}

static void reverse_start(lr_guest_t *g, lr_binding_t *b, uint32_t id, uint8_t family,
                          int tried_other) {
  struct sockaddr_storage ss;
  conn_t *c = conn_new(g, b);
  if (!c) return;
  c->reverse = 1;
  c->rev_id = id;
  c->rev_family = family;
  c->rev_tried_other = tried_other;
  c->rx = malloc(sizeof *c->rx); /* also marks "not attached yet" for conn_fail */
  if (!c->rx) {
    lr_relay_close(&c->relay, 0);
    return;
  }
  lr_rxbuf_init(c->rx);
  make_loopback(family, b->key.port, &ss);
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

static void reverse_open(lr_guest_t *g, const lr_reverse_open_t *m) {
  lr_binding_t *b = reverse_find(g, m->port);
  if (!b) {
    /* Only ports the host's config publishes: a guest must not make the
     * host connect wherever it likes. */
    uint8_t f[LR_FRAME_HDR_LEN + 10 + 80];
    lr_log(LR_LOG_WARN, "%s: agent asked for host port %u, which reversePorts does not list",
           g->name, m->port);
    ctl_send(g, f, lr_encode_reverse_fail(f, sizeof f, m->id, LR_ERR_REFUSED,
                                          "port not in the host's reversePorts"));
    return;
  }
  reverse_start(g, b, m->id, m->family == 6 && g->host->cfg->ipv6 ? 6 : 4, 0);
}

static void reverse_send_set(lr_guest_t *g) {
  static lr_reverse_set_t m; /* 2 KiB: not on the stack */
  static uint8_t f[LR_FRAME_HDR_LEN + 3 + 2 * LR_REVERSE_MAX_PORTS];
  memset(&m, 0, sizeof m);
  m.flags = g->host->cfg->ipv6 ? LR_REVERSE_IPV6 : 0;
  for (size_t i = 0; i < g->nrev; i++) m.ports[m.n++] = g->rev[i]->key.port;
  ctl_send(g, f, lr_encode_reverse_set(f, sizeof f, &m));
}

static int reverse_init(lr_guest_t *g, char *err, size_t errlen) {
  const lr_portset_t *ps = &g->host->cfg->reverse_ports;
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

/* ---- control stream: receiving ------------------------------------------ */

static void ctl_handle_frame(lr_guest_t *g, const lr_frame_t *f) {
  lr_listener_t l;
  lr_hello_t hello;
  lr_error_msg_t em;
  char ls[80];
  uint8_t buf[32];
  uint64_t nonce;
  int rc = LR_PROTO_OK;

  if (g->state != G_CONNECTED && f->type != LR_MSG_WELCOME && f->type != LR_MSG_ERROR) {
    guest_drop_control(g, "agent sent a message before WELCOME");
    return;
  }
  switch (f->type) {
    case LR_MSG_WELCOME:
      if ((rc = lr_decode_hello(f, &hello))) break;
      if (g->state == G_CONNECTED) break;
      g->state = G_CONNECTED;
      g->backoff_ms = RETRY_MIN_MS;
      g->last_err[0] = '\0';
      lr_log(LR_LOG_INFO, "%s: connected to agent \"%s\" (version %s) over %s", g->name,
             hello.name, hello.version, g->transport);
      lr_ports_sync_begin(&g->ports);
      reverse_send_set(g);
      return;
    case LR_MSG_ERROR:
      if ((rc = lr_decode_error(f, &em))) break;
      lr_log(em.code == LR_ERR_AUTH || em.code == LR_ERR_VERSION ? LR_LOG_ERROR : LR_LOG_WARN,
             "%s: agent refused us: %s%s%s", g->name, lr_err_name(em.code),
             em.text[0] ? ": " : "", em.text);
      snprintf(g->last_err, sizeof g->last_err, "agent refused: %s", lr_err_name(em.code));
      guest_drop_control(g, NULL);
      if (em.code == LR_ERR_AUTH || em.code == LR_ERR_VERSION) {
        uv_timer_stop(&g->retry_timer);
        guest_schedule_connect(g, AUTH_RETRY_MS);
      }
      return;
    case LR_MSG_LISTENER_ADD:
    case LR_MSG_LISTENER_DEL:
      if ((rc = lr_decode_listener(f, &l))) break;
      lr_listener_format(&l, ls, sizeof ls);
      lr_log(LR_LOG_DEBUG, "%s: guest %s %s", g->name,
             f->type == LR_MSG_LISTENER_ADD ? "listens on" : "closed", ls);
      if (f->type == LR_MSG_LISTENER_ADD) {
        if (lr_ports_count(&g->ports) >= MAX_LISTENERS_PER_GUEST) {
          lr_log(LR_LOG_WARN, "%s: guest reports more than %d listeners: %s not forwarded",
                 g->name, MAX_LISTENERS_PER_GUEST, ls);
          return;
        }
        lr_ports_add(&g->ports, &l);
        arm_conflict_timer(g);
      } else {
        lr_ports_del(&g->ports, &l);
      }
      return;
    case LR_MSG_SYNC_DONE:
      if (g->ports.syncing) {
        int n = lr_ports_sync_end(&g->ports);
        if (n) lr_log(LR_LOG_INFO, "%s: resync removed %d stale listener(s)", g->name, n);
      }
      return;
    case LR_MSG_PING:
      if ((rc = lr_decode_ping(f, &nonce))) break;
      ctl_send(g, buf, lr_encode_ping(buf, sizeof buf, LR_MSG_PONG, nonce));
      return;
    case LR_MSG_PONG:
      return;
    case LR_MSG_REVERSE_OPEN: {
      lr_reverse_open_t ro;
      if ((rc = lr_decode_reverse_open(f, &ro))) break;
      reverse_open(g, &ro);
      return;
    }
    default:
      lr_log(LR_LOG_DEBUG, "%s: skipping unknown control message type %u", g->name, f->type);
      return;
  }
  char why[200];
  snprintf(why, sizeof why, "bad %s message from agent: %s", lr_msg_name(f->type),
           lr_proto_strerror(rc));
  guest_drop_control(g, why);
}

static void ctl_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  ctl_t *ctl = h->data;
  size_t avail;
  (void)sz;
  buf->base = (char *)lr_rxbuf_space(&ctl->rx, &avail);
  buf->len = avail;
}

static void ctl_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  ctl_t *ctl = s->data;
  lr_guest_t *g = ctl->g;
  (void)buf;
  if (!g || g->ctl != ctl) return;
  if (n < 0) {
    char why[200];
    snprintf(why, sizeof why, "control stream closed by the agent (%s)", uv_strerror((int)n));
    guest_drop_control(g, why);
    return;
  }
  if (n == 0) return;
  g->last_rx = uv_now(g->host->loop);
  lr_rxbuf_commit(&ctl->rx, (size_t)n);
  if (!ctl->got_preamble) {
    lr_preamble_t p;
    int rc = lr_rxbuf_preamble(&ctl->rx, &p);
    if (rc == LR_PROTO_NEED_MORE) return;
    if (rc == LR_PROTO_EVERSION) {
      char why[200];
      snprintf(why, sizeof why,
               "agent speaks protocol version %u, this lorelayd speaks %u: update one side",
               p.version, LR_PROTO_VERSION);
      lr_log(LR_LOG_ERROR, "%s: %s", g->name, why);
      snprintf(g->last_err, sizeof g->last_err, "%s", why);
      guest_drop_control(g, NULL);
      uv_timer_stop(&g->retry_timer);
      guest_schedule_connect(g, AUTH_RETRY_MS);
      return;
    }
    if (rc != LR_PROTO_OK) {
      guest_drop_control(g, "the peer is not a lorelay agent (bad preamble)");
      return;
    }
    ctl->got_preamble = 1;
  }
  for (;;) {
    lr_frame_t f;
    int rc = lr_rxbuf_frame(&ctl->rx, &f);
    if (rc == LR_PROTO_NEED_MORE) return;
    if (rc != LR_PROTO_OK) {
      char why[200];
      snprintf(why, sizeof why, "agent sent a bad frame: %s", lr_proto_strerror(rc));
      guest_drop_control(g, why);
      return;
    }
    ctl_handle_frame(g, &f);
    if (g->ctl != ctl) return; /* dropped while handling */
  }
}

/* ---- control stream: lifecycle ------------------------------------------ */

static void ctl_free(uv_handle_t *h) {
  ctl_t *ctl = h->data;
  lr_host_t *host = ctl->g->host;
  free(ctl);
  host->closing_handles--;
  host_maybe_done(host);
}

static void guest_drop_control(lr_guest_t *g, const char *why) {
  ctl_t *ctl = g->ctl;
  if (why) {
    lr_log(g->state == G_CONNECTED ? LR_LOG_WARN : LR_LOG_DEBUG, "%s: %s", g->name, why);
    snprintf(g->last_err, sizeof g->last_err, "%s", why);
  }
  if (g->state == G_CONNECTED) g->lost_at = uv_now(g->host->loop);
  if (g->ports.syncing) g->ports.syncing = 0; /* an unfinished resync sweeps nothing */
  g->state = G_IDLE;
  g->ctl = NULL;
  if (ctl) {
    ctl->ep.u.handle.data = ctl;
    g->host->closing_handles++;
    uv_close(&ctl->ep.u.handle, ctl_free);
  }
  if (!g->stopping) guest_schedule_connect(g, g->backoff_ms);
}

static void ctl_connected(lr_endpoint_t *ep, int status, const char *err, void *data) {
  ctl_t *ctl = data;
  lr_guest_t *g = ctl->g;
  (void)ep;
  if (g->stopping || g->ctl != ctl) {
    if (g->ctl == ctl) g->ctl = NULL;
    if (status == 0) {
      ctl->ep.u.handle.data = ctl;
      g->host->closing_handles++;
      uv_close(&ctl->ep.u.handle, ctl_free);
    } else {
      free(ctl);
      host_maybe_done(g->host);
    }
    return;
  }
  if (status < 0) {
    /* Log a failure once, not at every retry. */
    if (strcmp(g->last_err, err ? err : "") != 0) {
      lr_log(LR_LOG_WARN, "%s: cannot reach the agent: %s (retrying)", g->name,
             err ? err : uv_strerror(status));
      snprintf(g->last_err, sizeof g->last_err, "%s", err ? err : uv_strerror(status));
    }
    g->ctl = NULL;
    free(ctl);
    g->state = G_IDLE;
    guest_schedule_connect(g, g->backoff_ms);
    return;
  }
  g->state = G_HANDSHAKE;
  ctl->ep.u.handle.data = ctl;
  uint8_t buf[LR_PREAMBLE_LEN + LR_FRAME_HDR_LEN + 512];
  lr_hello_t hello;
  memset(&hello, 0, sizeof hello);
  hello.token_len = (uint8_t)g->token_len;
  memcpy(hello.token, g->token, g->token_len);
  snprintf(hello.name, sizeof hello.name, "%s", g->host->hostname);
  snprintf(hello.version, sizeof hello.version, "%s", LR_VERSION_STRING);
  lr_preamble_encode(buf, LR_STREAM_CONTROL);
  size_t n = lr_encode_hello(buf + LR_PREAMBLE_LEN, sizeof buf - LR_PREAMBLE_LEN, LR_MSG_HELLO, &hello);
  ctl_send(g, buf, LR_PREAMBLE_LEN + n);
  g->last_rx = uv_now(g->host->loop);
  int rc = uv_read_start(&ctl->ep.u.stream, ctl_alloc, ctl_read);
  if (rc) guest_drop_control(g, "cannot read the control stream");
}

static void guest_connect_now(uv_timer_t *t) {
  lr_guest_t *g = t->data;
  char err[300];
  if (g->stopping || g->ctl) return;
  if (g->resolve) {
    lr_taddr_t a;
    if (g->resolve(g->resolve_data, &a, err, sizeof err) != 0) {
      if (strcmp(g->last_err, err) != 0) {
        lr_log(LR_LOG_WARN, "%s: %s (retrying)", g->name, err);
        snprintf(g->last_err, sizeof g->last_err, "%s", err);
      }
      guest_schedule_connect(g, g->backoff_ms);
      return;
    }
    if (memcmp(&a, &g->addr, sizeof a) != 0) {
      g->addr = a;
      lr_taddr_format(&a, g->transport, sizeof g->transport);
      lr_log(LR_LOG_INFO, "%s: guest agent now at %s", g->name, g->transport);
    }
  }
  ctl_t *ctl = calloc(1, sizeof *ctl);
  if (!ctl) {
    guest_schedule_connect(g, RETRY_MAX_MS);
    return;
  }
  ctl->g = g;
  lr_rxbuf_init(&ctl->rx);
  g->ctl = ctl;
  g->state = G_CONNECTING;
  if (lr_transport_connect(g->host->loop, g->host->pal, &g->addr, &ctl->ep, ctl_connected, ctl,
                           err, sizeof err) != 0) {
    g->ctl = NULL;
    free(ctl);
    g->state = G_IDLE;
    if (strcmp(g->last_err, err) != 0) {
      lr_log(LR_LOG_WARN, "%s: %s (retrying)", g->name, err);
      snprintf(g->last_err, sizeof g->last_err, "%s", err);
    }
    guest_schedule_connect(g, g->backoff_ms);
  }
}

static void guest_schedule_connect(lr_guest_t *g, unsigned delay_ms) {
  if (g->stopping) return;
  uv_timer_start(&g->retry_timer, guest_connect_now, delay_ms, 0);
  g->backoff_ms = g->backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : g->backoff_ms * 2;
}

static void guest_tick(uv_timer_t *t) {
  lr_guest_t *g = t->data;
  uint64_t now = uv_now(g->host->loop);
  uint8_t buf[32];
  if (g->state == G_CONNECTED) {
    if (now - g->last_rx > DEAD_AFTER_MS) {
      guest_drop_control(g, "agent stopped answering (no message for 15 s)");
    } else if (now - g->last_rx > PING_EVERY_MS) {
      ctl_send(g, buf, lr_encode_ping(buf, sizeof buf, LR_MSG_PING, now));
    }
  } else if (g->state == G_HANDSHAKE && now - g->last_rx > HANDSHAKE_TIMEOUT_MS) {
    guest_drop_control(g, "agent did not answer HELLO within 5 s");
  } else if (g->state != G_CONNECTED && g->lost_at && now - g->lost_at > STALE_AFTER_MS &&
             lr_ports_count(&g->ports)) {
    /* The guest is gone for longer than any restart takes: its stand-ins
     * would only reset clients. Resync brings them back when it returns. */
    lr_log(LR_LOG_WARN, "%s: agent unreachable for %d s: closing %zu forwarded port(s)", g->name,
           STALE_AFTER_MS / 1000, lr_ports_count(&g->ports));
    lr_ports_clear(&g->ports);
    uv_timer_stop(&g->conflict_timer);
  }
  for (conn_t *c = g->conns; c; c = c->next)
    if (c->rx && !c->connecting && !c->relay.closing && now - c->started > HANDSHAKE_TIMEOUT_MS)
      conn_fail(c, 1, "agent did not answer OPEN within 5 s");
}

/* ---- public API ---------------------------------------------------------- */

lr_host_t *lr_host_new(uv_loop_t *loop, const lr_pal_t *pal, const lr_config_t *cfg) {
  lr_host_t *h = calloc(1, sizeof *h);
  if (!h) return NULL;
  h->loop = loop;
  h->pal = pal;
  h->cfg = cfg;
  size_t n = sizeof h->hostname;
  if (uv_os_gethostname(h->hostname, &n) != 0) snprintf(h->hostname, sizeof h->hostname, "host");
  return h;
}

int lr_host_add_guest(lr_host_t *h, const lr_guest_opts_t *o, char *err, size_t errlen) {
  lr_taddr_t a;
  if (!o->transport) {
    snprintf(err, errlen, "no guest address given");
    return -1;
  }
  memset(&a, 0, sizeof a);
  if (!o->resolve && lr_taddr_parse(o->transport, &a, err, errlen) != 0) return -1;
  if (a.kind == LR_TADDR_TCP && o->token_len == 0) {
    snprintf(err, errlen,
             "%s: the tcp transport needs a shared token (--token-file) on both sides",
             o->transport);
    return -1;
  }
  if (o->token_len > LR_TOKEN_MAX) {
    snprintf(err, errlen, "token longer than %d bytes", LR_TOKEN_MAX);
    return -1;
  }
  lr_guest_t *g = calloc(1, sizeof *g);
  if (!g) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  g->host = h;
  g->addr = a;
  g->resolve = o->resolve;
  g->resolve_data = o->resolve_data;
  if (o->resolve)
    snprintf(g->transport, sizeof g->transport, "%s", o->transport);
  else
    lr_taddr_format(&a, g->transport, sizeof g->transport);
  snprintf(g->name, sizeof g->name, "%s", o->name && *o->name ? o->name : g->transport);
  if (o->token_len) memcpy(g->token, o->token, o->token_len);
  g->token_len = o->token_len;
  lr_ports_ops_t ops = {ops_bind, ops_unbind, ops_state_changed, g};
  lr_ports_init(&g->ports, h->cfg, &ops);
  if (reverse_init(g, err, errlen) != 0) {
    for (size_t i = 0; i < g->nrev; i++) lr_binding_unref(g->rev[i]);
    free(g->rev);
    free(g);
    return -1;
  }
  g->backoff_ms = RETRY_MIN_MS;
  uv_timer_init(h->loop, &g->retry_timer);
  uv_timer_init(h->loop, &g->conflict_timer);
  uv_timer_init(h->loop, &g->tick_timer);
  g->retry_timer.data = g->conflict_timer.data = g->tick_timer.data = g;
  uv_timer_start(&g->tick_timer, guest_tick, TICK_MS, TICK_MS);
  g->next = h->guests;
  h->guests = g;
  lr_log(LR_LOG_INFO, "%s: guest agent at %s", g->name, g->transport);
  uv_timer_start(&g->retry_timer, guest_connect_now, 0, 0);
  return 0;
}

/* ---- status ---------------------------------------------------------------- */

static void binding_addr(const lr_binding_t *b, char *out, size_t len) {
  uint16_t port = b->state == LR_BINDING_BOUND || b->state == LR_BINDING_REMAPPED
                      ? b->actual_port
                      : b->key.port;
  snprintf(out, len, "%s:%u", b->key.family == 6 ? "[::1]" : "127.0.0.1", port);
}

static const char *guest_state_name(const lr_guest_t *g) {
  return g->state == G_CONNECTED ? "connected" : "connecting";
}

/* Listeners on specific non-loopback addresses are never forwarded and
 * would only crowd the status of a real VM: they are tracked, not shown. */
static int status_listed(const lr_port_entry_t *e) { return e->rule != LR_RULE_NOT_LOOPBACK; }

typedef struct {
  uint64_t conns, active, to_guest, to_host;
} entry_stats_t;

static entry_stats_t entry_stats(const lr_port_entry_t *e) {
  entry_stats_t s = {0, 0, 0, 0};
  for (int i = 0; i < e->nb; i++) {
    s.conns += e->b[i]->connections;
    s.active += e->b[i]->active;
    s.to_guest += e->b[i]->bytes_to_guest;
    s.to_host += e->b[i]->bytes_to_host;
  }
  return s;
}

void lr_host_status_json(lr_host_t *h, lr_sbuf_t *out) {
  char s[80];
  lr_sbuf_puts(out, "{\"guests\":[");
  for (lr_guest_t *g = h->guests; g; g = g->next) {
    lr_sbuf_puts(out, "{\"name\":");
    lr_sbuf_json_str(out, g->name);
    lr_sbuf_puts(out, ",\"transport\":");
    lr_sbuf_json_str(out, g->transport);
    lr_sbuf_printf(out, ",\"state\":\"%s\"", guest_state_name(g));
    if (g->state != G_CONNECTED && g->last_err[0]) {
      lr_sbuf_puts(out, ",\"error\":");
      lr_sbuf_json_str(out, g->last_err);
    }
    lr_sbuf_puts(out, ",\"ports\":[");
    int first_entry = 1;
    for (lr_port_entry_t *e = g->ports.entries; e; e = e->next) {
      if (!status_listed(e)) continue;
      entry_stats_t st = entry_stats(e);
      if (!first_entry) lr_sbuf_puts(out, ",");
      first_entry = 0;
      lr_sbuf_printf(out, "{\"proto\":\"tcp\",\"guest\":\"%s\",\"host\":[",
                     lr_listener_format(&e->listener, s, sizeof s));
      int first = 1;
      for (int i = 0; i < e->nb; i++) {
        if (e->b[i]->state == LR_BINDING_UNAVAILABLE) continue;
        binding_addr(e->b[i], s, sizeof s);
        lr_sbuf_printf(out, "%s\"%s\"", first ? "" : ",", s);
        first = 0;
      }
      lr_sbuf_printf(out,
                     "],\"state\":\"%s\",\"connections\":%llu,\"active\":%llu,"
                     "\"bytes_to_guest\":%llu,\"bytes_to_host\":%llu}",
                     lr_port_state_name(lr_ports_entry_state(e)), (unsigned long long)st.conns,
                     (unsigned long long)st.active, (unsigned long long)st.to_guest,
                     (unsigned long long)st.to_host);
    }
    /* Reverse forwarding: host ports published on the guest loopback. */
    lr_sbuf_puts(out, "],\"reverse\":[");
    for (size_t i = 0; i < g->nrev; i++) {
      const lr_binding_t *b = g->rev[i];
      lr_sbuf_printf(out, "%s{\"proto\":\"tcp\",\"guest\":[\"127.0.0.1:%u\"", i ? "," : "",
                     b->key.port);
      if (h->cfg->ipv6) lr_sbuf_printf(out, ",\"[::1]:%u\"", b->key.port);
      lr_sbuf_printf(out,
                     "],\"host\":\"localhost:%u\",\"connections\":%llu,\"active\":%u,"
                     "\"bytes_to_guest\":%llu,\"bytes_to_host\":%llu}",
                     b->key.port, (unsigned long long)b->connections, b->active,
                     (unsigned long long)b->bytes_to_guest, (unsigned long long)b->bytes_to_host);
    }
    lr_sbuf_printf(out, "]}%s", g->next ? "," : "");
  }
  lr_sbuf_puts(out, "]}\n");
}

static void human_bytes(uint64_t v, char *out, size_t len) {
  static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double d = (double)v;
  int u = 0;
  while (d >= 1024 && u < 4) {
    d /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(out, len, "%llu B", (unsigned long long)v);
  else
    snprintf(out, len, "%.1f %s", d, units[u]);
}

void lr_host_status_table(lr_host_t *h, lr_sbuf_t *out) {
  char s[80], hosts[200], tg[32], th[32];
  if (!h->guests) lr_sbuf_puts(out, "no guests\n");
  for (lr_guest_t *g = h->guests; g; g = g->next) {
    lr_sbuf_printf(out, "guest %s  %s  %s\n", g->name, g->transport, guest_state_name(g));
    if (g->state != G_CONNECTED && g->last_err[0])
      lr_sbuf_printf(out, "  last error: %s\n", g->last_err);
    for (size_t i = 0; i < g->nrev; i++) {
      const lr_binding_t *b = g->rev[i];
      human_bytes(b->bytes_to_guest, tg, sizeof tg);
      human_bytes(b->bytes_to_host, th, sizeof th);
      lr_sbuf_printf(out, "  reverse: guest localhost:%-5u -> host localhost:%-5u  %llu conns, "
                          "%u open, %s to guest, %s to host\n",
                     b->key.port, b->key.port, (unsigned long long)b->connections, b->active, tg,
                     th);
    }
    if (!g->ports.entries) {
      lr_sbuf_puts(out, "  (no listening ports reported)\n");
      continue;
    }
    lr_sbuf_printf(out, "  %-5s %-28s %-34s %-10s %6s %6s %10s %10s\n", "PROTO", "GUEST", "HOST",
                   "STATE", "CONNS", "OPEN", "TO GUEST", "TO HOST");
    for (lr_port_entry_t *e = g->ports.entries; e; e = e->next) {
      if (!status_listed(e)) continue;
      entry_stats_t st = entry_stats(e);
      hosts[0] = '\0';
      for (int i = 0; i < e->nb; i++) {
        if (e->b[i]->state == LR_BINDING_UNAVAILABLE) continue;
        binding_addr(e->b[i], s, sizeof s);
        size_t l = strlen(hosts);
        snprintf(hosts + l, sizeof hosts - l, "%s%s", l ? "," : "", s);
      }
      if (!hosts[0]) snprintf(hosts, sizeof hosts, "-");
      human_bytes(st.to_guest, tg, sizeof tg);
      human_bytes(st.to_host, th, sizeof th);
      lr_sbuf_printf(out, "  %-5s %-28s %-34s %-10s %6llu %6llu %10s %10s\n", "tcp",
                     lr_listener_format(&e->listener, s, sizeof s), hosts,
                     lr_port_state_name(lr_ports_entry_state(e)), (unsigned long long)st.conns,
                     (unsigned long long)st.active, tg, th);
    }
  }
}

/* Status endpoint: one request line, one document, close. */

static void status_client_free(uv_handle_t *hd) {
  status_client_t *c = (status_client_t *)hd;
  lr_host_t *h = c->host;
  for (status_client_t **pp = &h->clients; *pp; pp = &(*pp)->next)
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  lr_sbuf_free(&c->out);
  free(c);
  h->closing_handles--;
  host_maybe_done(h);
}

static void status_client_close(status_client_t *c) {
  if (uv_is_closing((uv_handle_t *)&c->pipe)) return;
  c->host->closing_handles++;
  uv_close((uv_handle_t *)&c->pipe, status_client_free);
}

static void status_shut(uv_shutdown_t *req, int st) {
  (void)st;
  status_client_close(req->data);
}

static void status_written(uv_write_t *req, int st) {
  status_client_t *c = req->data;
  if (st < 0 || uv_shutdown(&c->sreq, (uv_stream_t *)&c->pipe, status_shut) != 0)
    status_client_close(c);
}

static void status_alloc(uv_handle_t *hd, size_t sz, uv_buf_t *buf) {
  status_client_t *c = hd->data;
  (void)sz;
  buf->base = c->line + c->len;
  buf->len = sizeof c->line - 1 - c->len;
}

static void status_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  status_client_t *c = s->data;
  (void)buf;
  if (n < 0) {
    status_client_close(c);
    return;
  }
  c->len += (size_t)n;
  c->line[c->len] = '\0';
  char *nl = strchr(c->line, '\n');
  if (!nl && c->len < sizeof c->line - 1) return;
  uv_read_stop(s);
  if (nl) *nl = '\0';
  size_t l = strlen(c->line);
  if (l && c->line[l - 1] == '\r') c->line[l - 1] = '\0';
  if (strcmp(c->line, "status json") == 0 || strcmp(c->line, "status --json") == 0)
    lr_host_status_json(c->host, &c->out);
  else if (strcmp(c->line, "status table") == 0 || strcmp(c->line, "status") == 0)
    lr_host_status_table(c->host, &c->out);
  else
    lr_sbuf_printf(&c->out, "error: unknown request '%.40s' (try: status json, status table)\n",
                   c->line);
  if (c->out.err || !c->out.len) {
    status_client_close(c);
    return;
  }
  uv_buf_t b = uv_buf_init(c->out.p, (unsigned)c->out.len);
  c->wreq.data = c;
  c->sreq.data = c;
  if (uv_write(&c->wreq, s, &b, 1, status_written) != 0) status_client_close(c);
}

static void status_conn(uv_stream_t *server, int status) {
  lr_host_t *h = server->data;
  if (status < 0 || h->stopping) return;
  status_client_t *c = calloc(1, sizeof *c);
  if (!c) return;
  c->host = h;
  lr_sbuf_init(&c->out);
  uv_pipe_init(h->loop, &c->pipe, 0);
  c->pipe.data = c;
  c->next = h->clients;
  h->clients = c;
  if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0 ||
      uv_read_start((uv_stream_t *)&c->pipe, status_alloc, status_read) != 0)
    status_client_close(c);
}

int lr_host_serve_status(lr_host_t *h, const char *path, char *err, size_t errlen) {
  int rc = uv_pipe_init(h->loop, &h->status, 0);
  if (rc == 0) {
    h->status.data = h;
    h->status_open = 1;
    rc = uv_pipe_bind(&h->status, path);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&h->status, 16, status_conn);
    if (rc == 0) uv_pipe_chmod(&h->status, UV_READABLE | UV_WRITABLE);
  }
  if (rc) {
    snprintf(err, errlen, "status endpoint %s: %s", path, uv_strerror(rc));
    if (h->status_open) {
      h->status_open = 0;
      host_close(h, (uv_handle_t *)&h->status, NULL);
    }
    return -1;
  }
  lr_log(LR_LOG_INFO, "status endpoint: %s", path);
  return 0;
}

/* ---- shutdown --------------------------------------------------------------- */

static void guest_timer_closed(uv_handle_t *t) {
  lr_guest_t *g = t->data;
  lr_host_t *h = g->host;
  h->closing_handles--;
  host_maybe_done(h);
}

void lr_host_shutdown(lr_host_t *h, void (*done)(void *), void *data) {
  h->stopping = 1;
  h->done = done;
  h->done_data = data;
  if (h->status_open) {
    h->status_open = 0;
    h->status.data = h;
    host_close(h, (uv_handle_t *)&h->status, NULL);
  }
  for (lr_guest_t *g = h->guests; g; g = g->next) {
    g->stopping = 1;
    uv_timer_t *timers[3] = {&g->retry_timer, &g->conflict_timer, &g->tick_timer};
    for (int i = 0; i < 3; i++) {
      h->closing_handles++;
      uv_close((uv_handle_t *)timers[i], guest_timer_closed);
    }
    if (g->ctl && g->state != G_CONNECTING) guest_drop_control(g, NULL);
    lr_ports_clear(&g->ports);
    for (conn_t *c = g->conns; c; c = c->next) lr_relay_close(&c->relay, 0);
  }
  host_maybe_done(h);
}

void lr_host_free(lr_host_t *h) {
  while (h->guests) {
    lr_guest_t *g = h->guests;
    h->guests = g->next;
    for (size_t i = 0; i < g->nrev; i++) lr_binding_unref(g->rev[i]);
    free(g->rev);
    free(g);
  }
  free(h);
}
