/* The host core's private model, shared by its rooms and by nothing else:
 *
 *   lr_host.c     the host object: guests, shutdown accounting
 *   lr_session.c  one guest's control session: connect with backoff,
 *                 HELLO/WELCOME, listener reports, resync, PING, staleness
 *   lr_standin.c  stand-in listeners: the port table's bind/unbind hooks,
 *                 conflict retry, accepting clients
 *   lr_conn.c     relayed connections, forward (host client -> guest
 *                 server) and reverse (guest client -> host server)
 *   lr_udp.c      UDP stand-ins and their flows (one lr_conn_t each)
 *   lr_status.c   status documents and watch event lines
 *   lr_ctlsrv.c   the endpoint lorelayctl talks to: status requests and
 *                 watch subscriptions, fed by lr_host_event
 *
 * Lifetimes: one model for every record of the host core.
 *
 *   Every record a callback can name is either reference-counted or owned
 *   by exactly one parent that is itself counted. Whatever may still call
 *   back with a pointer to a record holds a reference to it, taken when
 *   the callback is armed and dropped inside that callback (after its last
 *   use of the record):
 *
 *   lr_host_t   h->refs. Holders: the host's own "running" reference
 *               (dropped by lr_host_shutdown), each guest record until it
 *               is freed, the status server and each status client while
 *               their handles close (lr_ctlsrv.c). When the count reaches
 *               0 after lr_host_shutdown, the done callback runs, once,
 *               from the drain (below); done may free the host.
 *   lr_guest_t  g->refs (lr_guest_ref/unref). Holders: its place in
 *               h->guests (dropped by guest_stop, on lr_host_remove_guest
 *               or lr_host_shutdown: a stopped guest is on no list), each
 *               of its three timers until their close callbacks, its
 *               control record (lr_ctl_t, from the connect attempt to the
 *               stream's close callback), a resolve in flight, each stand-in
 *               (TCP or UDP) until its handle's close callback, and each
 *               connection record until that record is freed. A guest
 *               holds a host reference until it is freed.
 *   lr_conn_t   c->holds, a set of named holders (LR_HOLD_*), not a count,
 *               so that each can be released exactly once: its relay until
 *               the relay's close callback (a connection always has this
 *               one from lr_conn_new), a transport attempt that lent ep[1]
 *               until it calls back, ep[1] itself when the attempt handed
 *               it over after the relay had closed (until that handle's
 *               close callback), and a one-hop UDP flow's server socket
 *               until its close callback. A record holds its guest and its
 *               binding (lr_binding_ref) until it is freed. Its lr_flow_t
 *               (UDP) is part of it: freed with it.
 *   lr_ctl_t, lr_standin_t, lr_udpsrv_t, status clients: owned by one
 *               handle each and freed in that handle's close callback (the
 *               transport attempt owns ctl->ep until its callback).
 *   lr_nsock_t  one hop: the pool of sockets made in a namespace guest's
 *               network namespace (lr_host_pal_t.nsock_*), opened by
 *               lr_host_add_guest and closed by guest_stop after the
 *               guest's connections; a socket it hands out is the taker's.
 *
 * Destruction is always deferred. The last release of a connection or a
 * guest does not free it: it puts the record on the host's dead list and
 * the host's drain (a uv_idle_t, started only while that list is not
 * empty) frees it at the next loop iteration, outside every callback.
 * Why an idle handle: while active it keeps the loop alive and makes the
 * next poll non-blocking, so a record dies one iteration later even when
 * no other event is due; a check handle would wait for the next event and
 * a zero timer would run only after the timers phase. Why deferred at all:
 * a release can come from inside a call whose caller still holds the
 * record (lr_relay_close runs its close callback at once when no handle is
 * open, a one-hop UDP flow's case; a failure inside a loop over g->conns),
 * and no caller should have to know which calls can free what. So, by
 * construction, a record named by a pointer on the stack stays readable
 * until the callback returns: iterating g->conns while closing or failing
 * its records (lr_conn_tick, lr_udp_tick, lr_conn_close_all) is safe, and
 * a record stays on g->conns, in the CLOSING or DEAD phase, until the
 * drain frees it. Teardown from anywhere (lr_host_remove_guest and
 * lr_host_shutdown are idempotent) is therefore allowed inside any
 * callback; each callback checks after its test hook that its record is
 * still live (phase, g->stopping) before it goes on.
 *
 * A connection's shape (lr_conn_shape_t) is fixed at creation and decides
 * what its close does (conn_closing in lr_conn.c: REVERSE_FAIL for a
 * reverse connection not yet attached, the flow's unlink and its server
 * socket's close for UDP); its phase (lr_conn_phase_t) says where it is. */
#ifndef LR_HOST_INT_H
#define LR_HOST_INT_H

#include "lr_auth.h"
#include "lr_host.h"
#include "lr_log.h"
#include "lr_net.h"
#include "lr_ports.h"
#include "lr_proto.h"
#include "lr_relay.h"
#include "lr_rxbuf.h"

/* A guest reporting more listeners than any real one has is broken or
 * hostile: past this many tracked listeners (forwarded or not) new ones
 * are not even recorded. What it can make the host bind is the separate,
 * configurable maxStandins budget, counted in host sockets. */
#define LR_MAX_TRACKED_LISTENERS 16384
/* How often one kind of budget or policy line may be logged per guest. */
#define LR_BUDGET_LOG_MS 10000
#define LR_HANDSHAKE_TIMEOUT_MS 5000

typedef struct lr_guest_s lr_guest_t;
typedef struct lr_flow_s lr_flow_t;

typedef enum { LR_G_IDLE, LR_G_RESOLVING, LR_G_CONNECTING, LR_G_HANDSHAKE, LR_G_CONNECTED } lr_guest_state_t;

typedef struct {
  lr_endpoint_t ep;
  lr_rxbuf_t rx;
  lr_guest_t *g;
  int got_preamble;
  lr_auth_ctx_t auth; /* with a key: this stream's nonces */
  int hello_sent;     /* with a key: HELLO goes out only after CHALLENGE */
} lr_ctl_t;

/* What a connection is; fixed at creation. */
typedef enum {
  LR_CONN_TCP,         /* forward TCP through the agent: a data stream, OPEN */
  LR_CONN_TCP_ONEHOP,  /* forward TCP, connected in the guest's namespace */
  LR_CONN_REVERSE,     /* guest client -> host server: a reverse stream, ATTACH */
  LR_CONN_UDP,         /* a UDP flow through the agent: a data stream, OPEN (UDP) */
  LR_CONN_UDP_ONEHOP,  /* a UDP flow, its server's socket made in the namespace */
} lr_conn_shape_t;

/* Where a connection is; only forward, CLOSING and DEAD from anywhere. */
typedef enum {
  LR_CONN_WAIT_SOCKET,   /* one hop: on g->ns_wait for a socket from the pool */
  LR_CONN_LOCAL_CONNECT, /* reverse: connecting to the host's own server */
  LR_CONN_CONNECTING,    /* a transport attempt holds ep[1] */
  LR_CONN_HANDSHAKE,     /* preamble, CHALLENGE, OPEN or ATTACH; OPEN_RESULT awaited */
  LR_CONN_RELAYING,      /* bytes or datagrams flow */
  LR_CONN_CLOSING,       /* its close began: the holders' callbacks are awaited */
  LR_CONN_DEAD,          /* no holder left: on the host's dead list until the drain */
} lr_conn_phase_t;

/* The holders of a connection record (lr_conn_t.holds; see the top). */
#define LR_HOLD_RELAY 0x1     /* until the relay's close callback */
#define LR_HOLD_TRANSPORT 0x2 /* a transport attempt lent ep[1]: until it calls back */
#define LR_HOLD_LATE_EP 0x4   /* ep[1], handed over after the relay closed: its close */
#define LR_HOLD_DIRECT 0x8    /* one-hop UDP: the server's socket, until its close */

typedef struct lr_conn_s {
  lr_relay_t relay; /* first: the relay's close callback gets &relay */
  lr_guest_t *g;
  lr_binding_t *b;  /* counted reference: its counters outlive the stand-in */
  lr_conn_shape_t shape;
  lr_conn_phase_t phase;
  unsigned holds;   /* LR_HOLD_*: freed (deferred) once none is left */
  lr_rxbuf_t *rx;   /* the handshake's buffer (CONNECTING, HANDSHAKE) */
  uint64_t started;
  int got_preamble;
  lr_auth_ctx_t auth; /* with a key: this stream's nonces */
  int req_sent;       /* OPEN/ATTACH sent (with a key: after CHALLENGE) */
  /* reverse (guest client -> host server) connections */
  uint32_t rev_id;    /* the agent's id for its waiting guest client */
  uint8_t rev_family; /* host loopback family being tried */
  int rev_tried_other;
  int rev_pending;    /* counted in the guest's nreverse_pending */
  struct lr_conn_s *ns_next; /* WAIT_SOCKET: on g->ns_wait */
  uv_os_sock_t server_sock; /* one hop, UDP: the socket made in the namespace,
                               until lr_udp_flow_adopted gives it a handle */
  uv_connect_t creq;  /* the local connect to the host server */
  lr_flow_t *flow;    /* the UDP shapes' flow (lr_udp.c), freed with the record */
  struct lr_conn_s *prev, *next; /* in g->conns, until the record is freed */
  struct lr_conn_s *dead_next;   /* DEAD: on the host's dead list */
} lr_conn_t;

static inline int lr_conn_is_udp(const lr_conn_t *c) {
  return c->shape == LR_CONN_UDP || c->shape == LR_CONN_UDP_ONEHOP;
}

typedef struct {
  uv_tcp_t tcp;
  lr_binding_t *b; /* NULL once unbound (the close is under way) */
  lr_guest_t *g;   /* a counted reference, until the close callback */
} lr_standin_t;

struct lr_guest_s {
  lr_host_t *host;
  /* This guest's own configuration: the host's, or its [guest NAME]
   * section over it. Replaced in place by lr_host_configure_guest. */
  lr_config_t cfg;
  /* Where its stand-ins listen, per family (index 0: IPv4, 1: IPv6), from
   * cfg's listenAddress/hostAddress; loopback by default. */
  struct sockaddr_storage bind_sa[2];
  char bind_str[2][LR_ADDRESS_MAX + 2]; /* "127.0.0.2", "[::1]" */
  unsigned refs; /* see the top: freed (deferred) when the last one goes */
  lr_guest_t *dead_next; /* on the host's dead list */
  char name[300];
  char transport[300];
  lr_taddr_t addr;
  lr_guest_resolve_fn resolve;
  void *resolve_data;
  uint8_t token[LR_TOKEN_MAX]; /* the shared key; 0 bytes: none */
  size_t token_len;
  lr_ratelimit_t auth_log;     /* failed authentications (lr_session_auth_failed) */
  uint64_t last_ping;
  lr_ports_t ports;
  /* reversePorts: one counter record per published host port */
  lr_binding_t **rev;
  size_t nrev;
  lr_guest_state_t state;
  uint8_t detection; /* LR_DETECT_*: from the agent's AGENT_INFO; poll until one arrives */
  uint8_t agent_caps; /* LR_CAP_*: from the agent's last WELCOME */
  /* Close notices: forward data streams by the id their OPEN carried
   * (lr_conn.c adds and removes them; the session looks notices up). */
  lr_relay_ids_t stream_ids;
  uint32_t next_stream_id;
  lr_ctl_t *ctl;
  uv_timer_t retry_timer, conflict_timer, tick_timer;
  unsigned backoff_ms;
  uint64_t last_rx, lost_at;
  uint64_t connected_at; /* loop time of the last WELCOME: uptime_s */
  char last_err[300];
  char prev_err[300];    /* the error that ended the previous connection (last_error) */
  int stopping;
  /* One hop (a namespace guest, oneHop on): sockets made in its namespace,
   * owned by the guest from lr_host_add_guest to guest_stop, which closes
   * it (lr_host_pal_t.nsock_close). NULL: every connection through the agent. */
  lr_nsock_t *nsock;
  lr_conn_t *ns_wait, *ns_wait_tail; /* records waiting for a socket, oldest first */
  /* A namespace guest's unix: streams are libuv IPC pipes, read with a
   * control buffer, so a descriptor the agent sends is seen, closed and its
   * stream dropped (lr_guest_refuse_fds); fds_log gates that line. */
  int ipc_reads;
  lr_ratelimit_t fds_log;
  int one_hop;               /* new connections go one hop (nsock, and oneHop on): a
                              * reload may turn it either way */
  uint64_t added_at;         /* loop time lr_host_add_guest ran */
  int err_quiet;             /* last_err was logged at debug only (a namespace still starting) */
  unsigned nstandins;        /* open stand-in listeners (the maxStandins budget) */
  unsigned nconns;           /* open relayed connections (maxConnections) */
  unsigned nreverse_pending; /* REVERSE_OPENs not yet relaying (maxPendingReverse) */
  unsigned nflows;           /* open UDP flows (maxUdpFlows) */
  lr_ratelimit_t flows_log;  /* UDP flow budgets */
  lr_ratelimit_t dgram_log, trunc_log; /* oversized and truncated datagram frames */
  size_t udp_queued;         /* bytes its UDP flows hold queued (LR_DGRAM_GUEST_QUEUE_MAX) */
  lr_ratelimit_t udp_queue_log[3]; /* datagrams dropped at a flow's, port's, guest's byte bound */
  lr_log_gate_t standin_gate;   /* stand-in opened/closed lines (listener churn) */
  lr_log_gate_t connfail_gate;  /* a relayed connection failed (a client or the guest) */
  lr_log_gate_t agentinfo_gate; /* the agent's detection changed (AGENT_INFO) */
  /* one log gate per kind of line a guest can provoke at will */
  lr_ratelimit_t accept_log, denied_log, standins_log, tracked_log, conns_log, reverse_log,
      control_log;
  lr_ratelimit_t connect_log; /* the guest's server unreachable (connect_failures) */
  lr_conn_t *conns;
  lr_guest_t *next;
};

typedef struct lr_status_client_s lr_status_client_t;

struct lr_host_s {
  uv_loop_t *loop;
  const lr_host_pal_t *pal;
  const lr_config_t *cfg;
  lr_guest_t *guests; /* running guests; a stopped one is on no list */
  unsigned refs;      /* see the top */
  /* The deferral point: records whose last holder went, freed by the
   * drain at the next loop iteration. Its own allocation, freed in its
   * close callback (the host itself may be freed before that). */
  uv_idle_t *drain;
  lr_conn_t *dead_conns;
  lr_guest_t *dead_guests;
  uv_pipe_t status;
  int status_open;
  lr_status_client_t *clients;
  unsigned nclients;
  unsigned nwatchers;  /* clients that subscribed to events (counted in nclients too) */
  lr_ratelimit_t status_accept_log, status_budget_log;
  char hostname[128];
  /* status "config": the file in effect and the last reload */
  struct {
    char path[512]; /* empty: none */
    int64_t loaded_at, reload_time;
    int reload_ok;
    char reload_error[400];
  } config_info;
  lr_host_test_hook_fn test_hook; /* lr_host_set_test_hook: tests only */
  void *test_hook_data;
  /* shutdown */
  int stopping;
  void (*done)(void *);
  void *done_data;
};

/* A callback's entry, for lr_host_set_test_hook. */
#define LR_HOOK(h, point)                                                                     \
  do {                                                                                        \
    if ((h)->test_hook) (h)->test_hook((h), (point), (h)->test_hook_data);                    \
  } while (0)

/* A stand-in opened or closed: a line per event while they are rare, at
 * most LR_LOG_BURST a second (a guest can churn listeners at will). */
#define LR_STANDIN_LOG(g, ...)                                                                \
  lr_log_gated(&(g)->standin_gate, uv_now((g)->host->loop), (g)->name,                     \
               "stand-in opened or closed", LR_LOG_INFO, __VA_ARGS__)

/* Logs one warning of a kind at most every LR_BUDGET_LOG_MS per guest,
 * saying how many were not logged since. */
void lr_guest_warn(lr_guest_t *g, lr_ratelimit_t *gate, const char *fmt, ...) LR_PRINTF(3, 4);

/* 1 when ep (a guest stream) has received file descriptors: one
 * rate-limited line naming what; the caller then drops the stream, whose
 * close closes them. lorelayd never keeps a guest's descriptor. */
int lr_guest_refuse_fds(lr_guest_t *g, lr_endpoint_t *ep, const char *what);
/* err without its leading "ADDRESS: " when g is named by that address
 * (no --name), so a line says the address once. */
const char *lr_guest_err_text(const lr_guest_t *g, const char *err);

/* The host address of g's stand-ins of a family (4 or 6), as text for
 * messages ("127.0.0.2", "[::1]") and as a socket address. */
const char *lr_guest_host_str(const lr_guest_t *g, int family);
void lr_guest_sockaddr(const lr_guest_t *g, int family, uint16_t port,
                       struct sockaddr_storage *ss);

/* lr_host.c: the references of the model above. An unref that drops the
 * last one never frees at once: the record goes to the host's drain. */
void lr_host_ref(lr_host_t *h);
void lr_host_unref(lr_host_t *h);
void lr_guest_ref(lr_guest_t *g);
void lr_guest_unref(lr_guest_t *g);
/* lr_conn.c: drops one LR_HOLD_* holder of c; the last one sends c to the
 * drain. lr_conn_free is the drain's. */
void lr_conn_release(lr_conn_t *c, unsigned hold);
void lr_conn_free(lr_conn_t *c);
/* Puts a dead record's host on the drain's schedule. */
void lr_host_defer(lr_host_t *h);

/* lr_session.c */
/* An agent that failed to prove the key, on the control stream or another
 * (what says which): one rate-limited line. */
void lr_session_auth_failed(lr_guest_t *g, const char *what);
void lr_session_start(lr_guest_t *g);
void lr_session_send(lr_guest_t *g, const uint8_t *buf, size_t len);
void lr_session_stop(lr_guest_t *g);
void lr_session_tick(uv_timer_t *t);

/* lr_standin.c */
lr_ports_ops_t lr_standin_ops(lr_guest_t *g);
void lr_standin_arm_retry(lr_guest_t *g);
/* A bind of b's wanted port found it taken (EADDRINUSE): who holds it,
 * another guest's stand-in first, else the platform's socket table, into
 * b->holder. Looked up once, when the port first turns out to be taken. */
void lr_standin_find_holder(lr_guest_t *g, lr_binding_t *b, uint16_t port);

/* lr_conn.c */
void lr_conn_accept(lr_guest_t *g, lr_standin_t *s);
/* A STREAM_CLOSE from the agent: applied to the stream it names, ignored
 * for any other id (closed already, never ours). */
void lr_conn_stream_close(lr_guest_t *g, const lr_stream_close_t *m);
void lr_conn_reverse_open(lr_guest_t *g, const lr_reverse_open_t *m);
void lr_conn_reverse_send_set(lr_guest_t *g);
int lr_conn_reverse_init(lr_guest_t *g, char *err, size_t errlen);
void lr_conn_reverse_free(lr_guest_t *g);
/* Fails connections whose agent has not answered OPEN in time. */
void lr_conn_tick(lr_guest_t *g, uint64_t now);
void lr_conn_close_all(lr_guest_t *g);
/* The one close path of every shape: logs why (NULL: a silent close, no
 * line and no REVERSE_FAIL), does what the shape's close does and closes
 * the relay. Any phase, more than once; c stays readable until the drain. */
void lr_conn_close(lr_conn_t *c, int reset, const char *why);

/* One hop: the pool has sockets again (lr_host_pal_t.nsock_open's ready). */
void lr_conn_ns_ready(void *data);

/* lr_conn.c, for lr_udp.c: a record of a shape counted on b, and opening
 * its transport stream (OPEN carries LR_OPEN_UDP for the UDP shapes). */
lr_conn_t *lr_conn_new(lr_guest_t *g, lr_binding_t *b, lr_conn_shape_t shape);
void lr_conn_open_transport(lr_conn_t *c);

/* lr_udp.c: the bind/unbind hooks for UDP bindings (LR_BIND_* results),
 * the flow's data path once OPEN_RESULT said yes (rest: bytes read past
 * it), the UDP shapes' part of a close (lr_udp_flow_closing: off the
 * stand-in, queue dropped, the one-hop server socket closed) and of the
 * record's free, and closing the flows idle for udpIdleTimeout. */
int lr_udp_bind(lr_guest_t *g, lr_binding_t *b, uint16_t port);
void lr_udp_unbind(lr_guest_t *g, lr_binding_t *b);
void lr_udp_flow_ready(lr_conn_t *c, const uint8_t *rest, size_t rest_len);
/* One hop: c->server_sock is a UDP socket made in the guest's namespace and
 * connected to the server; the flow takes it over. */
void lr_udp_flow_adopted(lr_conn_t *c);
void lr_udp_flow_closing(lr_conn_t *c);
void lr_udp_flow_free(lr_conn_t *c);
void lr_udp_tick(lr_guest_t *g, uint64_t now);

/* ---- events (lorelayctl watch) -----------------------------------------------
 * The host core calls lr_host_event where what status shows changes: a port
 * appears, goes or changes state (lr_standin.c, from the port table's
 * hooks), a guest connects or drops (lr_session.c). lr_ctlsrv.c fans it out
 * to the watchers; with none it costs a test and a return. */
typedef enum {
  LR_EV_PORT_ADDED,
  LR_EV_PORT_REMOVED,
  LR_EV_PORT_STATE,
  LR_EV_GUEST_CONNECTED,
  LR_EV_GUEST_DISCONNECTED,
} lr_event_kind_t;

typedef struct {
  lr_event_kind_t kind;
  const lr_guest_t *g;
  const lr_port_entry_t *e;  /* port events: the entry (still in its table) */
  lr_port_state_t previous;  /* LR_EV_PORT_STATE: the state before */
  const char *reason;        /* LR_EV_GUEST_DISCONNECTED: why, or NULL */
  int snapshot;              /* a watch's opening state, not a change */
} lr_event_t;

void lr_host_event(lr_host_t *h, const lr_event_t *ev);

/* Listeners on specific non-loopback addresses are never forwarded and
 * would only crowd the status of a real VM: they are tracked, not shown. */
static inline int lr_status_listed(const lr_port_entry_t *e) {
  return e->rule != LR_RULE_NOT_LOOPBACK;
}

/* lr_status.c: the documents and event lines (one line each, '\n'-ended). */
uint64_t lr_guest_uptime_s(const lr_guest_t *g);
const char *lr_event_name(lr_event_kind_t k);
void lr_status_event_json(lr_host_t *h, const lr_event_t *ev, lr_sbuf_t *out);
void lr_status_event_text(lr_host_t *h, const lr_event_t *ev, lr_sbuf_t *out);
void lr_status_dropped(uint64_t count, int json, lr_sbuf_t *out);
/* The line that ends a watch's opening snapshot. */
void lr_status_snapshot_end(int json, lr_sbuf_t *out);
/* RFC 3339 UTC with milliseconds, from Unix time. */
void lr_status_time(int64_t sec, int32_t usec, char *out, size_t len);
/* Guest text for a terminal: control characters (C0, DEL, C1) as \xNN /
 * \u00NN, a backslash doubled, so nothing can forge a line or an escape. */
void lr_text_escape(lr_sbuf_t *out, const char *s);

/* lr_ctlsrv.c */
void lr_status_stop(lr_host_t *h);

#endif
