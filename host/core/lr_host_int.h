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
 * Ownership, one owner per handle:
 *   lr_host_t     allocated by lr_host_new, freed by lr_host_free after
 *                 lr_host_shutdown's done callback. Owns the guests and the
 *                 status server (lr_ctlsrv.c closes it, with its clients).
 *   lr_guest_t    allocated by lr_host_add_guest, freed by lr_host_free;
 *                 one removed by a reload (lr_host_remove_guest) is freed
 *                 earlier by the host's reaper timer (reap in lr_host.c),
 *                 once nothing of it is left.
 *                 Owns its three timers (closed by lr_host_shutdown), its
 *                 control session and its connections.
 *   lr_ctl_t      allocated by the session when a connect starts; the
 *                 transport attempt owns ctl->ep until its callback, then
 *                 the session closes it (lr_session_drop) and frees the
 *                 record in the close callback, or at once when the connect
 *                 failed (the transport closed ep before the callback).
 *   lr_standin_t  allocated by the bind hook; its listener is closed by the
 *                 unbind hook (or the platform on a failed listen) and the
 *                 record freed in that close callback.
 *   lr_conn_t     allocated by lr_conn_* with its relay; the relay owns the
 *                 two handles from lr_relay_mark_open on, and the record is
 *                 freed only in the relay's close callback (or after a
 *                 transport attempt it lent ep[1] to has called back).
 *                 A UDP flow is an lr_conn_t whose ep[0] is never opened
 *                 (its client is an address on the stand-in's socket); its
 *                 lr_flow_t is allocated by lr_udp.c and freed with the
 *                 record (lr_udp_flow_free from the record's destroy).
 *   lr_nsock_t    one hop: the pool of sockets made in a namespace guest's
 *                 network namespace (lr_host_pal_t.nsock_*), opened by
 *                 lr_host_add_guest and closed by guest_stop after the
 *                 guest's connections; a socket it hands out is the taker's
 *                 (a relay handle's once uv_tcp_open/uv_udp_open took it).
 *   lr_udpsrv_t   a UDP stand-in: allocated by the bind hook (lr_udp_bind),
 *                 its socket closed by the unbind hook, which first closes
 *                 every flow it carries; freed in the socket's close callback.
 *
 * Every handle closed while the host stops is counted in closing_handles
 * (lr_host_closing / lr_host_closed), so the done callback runs exactly
 * when the last one is gone. */
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

typedef struct lr_conn_s {
  lr_relay_t relay; /* first: the relay's close callback gets &relay */
  lr_guest_t *g;
  lr_binding_t *b;  /* counted reference: its counters outlive the stand-in */
  lr_rxbuf_t *rx;   /* only during the handshake */
  uint64_t started;
  int got_preamble;
  lr_auth_ctx_t auth; /* with a key: this stream's nonces */
  int req_sent;       /* OPEN/ATTACH sent (with a key: after CHALLENGE) */
  int connecting;   /* a transport attempt holds ep[1]: c must outlive it */
  int dead;         /* the relay closed while connecting */
  /* reverse (guest client -> host server) connections */
  int reverse;
  uint32_t rev_id;    /* the agent's id for its waiting guest client */
  uint8_t rev_family; /* host loopback family being tried */
  int rev_tried_other;
  int rev_pending;    /* counted in the guest's nreverse_pending */
  int ns_waiting;     /* one hop: on g->ns_wait for a socket from the namespace */
  struct lr_conn_s *ns_next;
  uv_os_sock_t server_sock; /* one hop, UDP: the socket made in the namespace,
                               until lr_udp_flow_adopted gives it a handle */
  uv_connect_t creq;  /* the local connect to the host server */
  lr_flow_t *flow;    /* UDP flows only (lr_udp.c) */
  struct lr_conn_s *prev, *next;
} lr_conn_t;

typedef struct {
  uv_tcp_t tcp;
  lr_binding_t *b; /* NULL once unbound (the close is under way) */
  lr_guest_t *g;
  lr_host_t *host; /* the close callback's: a removed guest may be gone by then */
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
  int removed; /* on the host's removed list until nothing of it is left */
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
  lr_guest_t *guests;
  /* Guests taken away by a reload: stopped, out of status, freed by the
   * reaper once no handle or connection of theirs is left. */
  lr_guest_t *removed;
  uv_timer_t reaper;
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
  /* shutdown */
  int stopping;
  unsigned closing_handles;
  void (*done)(void *);
  void *done_data;
};

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

/* lr_host.c: shutdown accounting. closing() before a uv_close whose callback
 * ends in closed(); closed() runs the done callback when nothing is left. */
void lr_host_closing(lr_host_t *h);
void lr_host_closed(lr_host_t *h);
void lr_host_maybe_done(lr_host_t *h);

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

/* One hop: the pool has sockets again (lr_host_pal_t.nsock_open's ready). */
void lr_conn_ns_ready(void *data);

/* lr_conn.c, for lr_udp.c: a forward record counted on b, and opening its
 * transport stream (OPEN carries LR_OPEN_UDP when c->flow is set). */
lr_conn_t *lr_conn_new(lr_guest_t *g, lr_binding_t *b);
void lr_conn_open_transport(lr_conn_t *c);

/* lr_udp.c: the bind/unbind hooks for UDP bindings (LR_BIND_* results),
 * the flow's data path once OPEN_RESULT said yes (rest: bytes read past
 * it), the flow's part of the record's destruction, and closing the flows
 * idle for udpIdleTimeout. */
int lr_udp_bind(lr_guest_t *g, lr_binding_t *b, uint16_t port);
void lr_udp_unbind(lr_guest_t *g, lr_binding_t *b);
void lr_udp_flow_ready(lr_conn_t *c, const uint8_t *rest, size_t rest_len);
/* One hop: c->server_sock is a UDP socket made in the guest's namespace and
 * connected to the server; the flow takes it over. */
void lr_udp_flow_adopted(lr_conn_t *c);
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
