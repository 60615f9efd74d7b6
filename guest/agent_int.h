/* The agent's private structures, shared by its modules (lr_agent.h is the
 * public face):
 *
 *   agent.c          lifecycle, accepting streams, reading, the preamble
 *                    dispatch, writing, ending a stream
 *   agent_scan.c     sock_diag scans, the per-scan diff, own-inode exclusion,
 *                    when to scan (the eBPF trigger, lr_bpfwatch.h, or the timer)
 *   agent_control.c  the control stream: HELLO/WELCOME, listener reports,
 *                    PING/PONG, PORT_STATE, REVERSE_SET/REVERSE_FAIL
 *   agent_data.c     data streams: OPEN, connect to the guest server,
 *                    OPEN_RESULT, hand-over to the relay
 *   agent_reverse.c  published listeners, REVERSE_OPEN, ATTACH
 *   agent_udp.c      UDP flows: OPEN with LR_OPEN_UDP, a connected UDP socket
 *                    to the guest server, framed datagrams both ways
 *   agent_auth.c     who may open a stream: Unix peer credentials, the
 *                    key's challenge-response, the failure rate limit
 *
 * One record (conn_t) serves every kind of stream, with lr_relay_t embedded
 * first so that a data stream becomes its relay without a second
 * allocation and the relay's close callback hands back the whole record.
 * The phase says which module drives it. */
#ifndef LR_AGENT_INT_H
#define LR_AGENT_INT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "lr_agent.h"
#include "lr_auth.h"
#include "lr_net.h"
#include "lr_proto.h"
#include "lr_relay.h"
#include "lr_rxbuf.h"
#include "lr_sockdiag.h"

typedef enum {
  PH_PREAMBLE,   /* waiting for the host's preamble */
  PH_HELLO,      /* control stream, waiting for HELLO */
  PH_CONTROL,    /* the active control stream */
  PH_OPEN,       /* data stream, waiting for OPEN */
  PH_CONNECTING, /* data stream, connecting to the guest server */
  PH_RELAY,      /* data or reverse stream handed to the relay */
  PH_ATTACH,     /* reverse stream, waiting for ATTACH */
  PH_REV_WAIT,   /* a guest client on a published port, waiting for its stream */
  PH_DRAIN,      /* reply sent, write side shut, discarding input until EOF */
  PH_CLOSED,
} phase_t;

/* One stream. Allocated by agent_conn_new (called from agent.c when a
 * transport stream is accepted and from agent_reverse.c when a guest client
 * of a published port is); linked in agent->conns until freed, which only
 * agent.c does, once both the timer and the relay have closed.
 *   relay.ep[1]  the transport stream (unused for PH_REV_WAIT records)
 *   relay.ep[0]  the guest-side TCP socket: the server connection
 *                (agent_data.c) or the guest client (agent_reverse.c)
 *   Both handles belong to the relay from lr_relay_mark_open on; they are
 *   closed through lr_relay_close (agent_conn_close), never directly.
 *   timer        the record's own; closed by agent_close_timer
 *   rx           the record's own; freed when the relay starts or with
 *                the record, so an idle relayed stream holds no 4 KiB
 *   flow         UDP flows only: allocated by agent_udp.c, its socket
 *                closed with the stream (agent_udp_close) and freed in that
 *                close callback; the record waits for it (agent_conn_release) */
typedef struct conn_s {
  lr_relay_t relay; /* first: the relay's close callback hands back the conn */
  lr_agent_t *agent;
  struct conn_s *prev, *next;
  lr_rxbuf_t *rx;
  uv_timer_t timer;
  uv_connect_t creq;
  uv_shutdown_t sreq;
  phase_t phase;
  int timer_open;
  int relay_open;
  uint16_t port;   /* data streams: the guest port; reverse: the published port */
  uint8_t family;  /* 4 or 6 */
  uint32_t rev_id; /* PH_REV_WAIT: the id the host will ATTACH with */
  uint8_t kind;    /* the stream kind the host's preamble named */
  uint8_t preamble_owed; /* a data stream's preamble (this kind) goes out with
                          * its first frame: one write, one wakeup of the host */
  int authed;      /* with a key: the host's request proved it; replies carry our MAC */
  int probation;   /* admitted while the failed-auth bucket was empty (agent_auth.c) */
  struct agent_flow_s *flow; /* UDP flows (agent_udp.c): the socket to the guest server */
  int pass_fd;     /* one hop: hand the server socket to the host with OPEN_RESULT */
  lr_auth_ctx_t auth;
  uint64_t last_rx; /* PH_CONTROL: when the host was last heard from */
  char peer[96];
  int has_cred;      /* Unix transports: the peer's credentials were read at accept */
  uint32_t peer_uid;
} conn_t;

/* A published (reverse) listener on the guest loopback. Allocated and
 * freed by agent_reverse.c only: held in agent->rev.v; once its handle is
 * initialised (open) it is freed in that handle's close callback. */
typedef struct rlsn_s {
  uv_tcp_t tcp;
  lr_agent_t *agent;
  uint16_t port;
  uint8_t family;
  int open;       /* handle initialised: close before free */
  int bound;      /* listening; inode is valid */
  uint32_t inode;
} rlsn_t;

/* Scan state, owned by agent_scan.c (agent_scan_init/agent_scan_free).
 * cur is the set last reported, next the scan in progress; adds/dels the
 * diff between them. All four arrays hold cap entries. */
typedef struct {
  lr_sockdiag_t sd;
  lr_sockdiag_list_t raw;
  lr_listener_t *cur, *next, *adds, *dels;
  size_t ncur, cap;
  char last_err[256]; /* logged once per distinct message */
  uint32_t *own;      /* inodes never reported: the transport + published listeners */
  size_t nown;
  struct agent_events_s *events; /* the eBPF trigger (agent_scan.c); NULL if it never loaded */
  /* Who owns each listener of cur, looked up once, when it appeared:
   * sorted like cur; o NULL when no process was found. */
  struct agent_owner_s *owners;
  size_t nowners;
  const char *proc_root; /* "/proc"; tests point it at a fake tree */
  unsigned long owner_walks; /* /proc walks so far (a test checks they follow new listeners) */
  int udp;            /* dump UDP sockets too (the host forwards UDP) */
  int udp_only;       /* this scan: UDP only, the TCP part kept from the last full one */
  size_t ntcp;        /* TCP entries at the front of raw after the last full dump */
} agent_scan_t;

struct lr_agent_s {
  uv_loop_t *loop;
  const lr_pal_t *pal;
  char name[128];
  uint8_t token[LR_TOKEN_MAX];
  size_t token_len;
  unsigned scan_ms, handshake_ms, control_live_ms;
  uint32_t allow_uids[LR_AGENT_MAX_ALLOW_UIDS];
  size_t n_allow_uids;
  /* agent_auth.c's: the failed-authentication bucket (in thousandths of a
   * failure) and its log gates */
  struct {
    unsigned per_sec;
    uint64_t credit, last;
    unsigned probation; /* streams on probation, waiting for their first request */
    lr_ratelimit_t fail_log, refuse_log, peer_log, mismatch_log, busy_log;
  } auth;
  /* The transport listener: opened by lr_agent_serve_fd, closed by
   * lr_agent_shutdown (agent.c). */
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } lsn;
  int lsn_open;
  lr_ep_kind_t conn_kind;
  lr_ratelimit_t accept_rl;
  lr_ratelimit_t fds_rl; /* "out of file descriptors", once a minute */
  uint32_t own_inode; /* the transport listener's */
  int have_own_inode;
  /* Initialised by lr_agent_new and closed by lr_agent_shutdown (agent.c);
   * started and stopped by agent_control.c with the control stream. */
  uv_timer_t scan_timer;
  int scan_timer_open;
  /* UDP: udp_enabled from the agent's config, report_udp from the current
   * host's HELLO. While the eBPF trigger works for TCP but its UDP hooks
   * did not attach, UDP sockets have their own, cheaper scan every
   * udp_scan_ms (udp_timer, initialised and closed like scan_timer, run by
   * agent_control.c). */
  int udp_enabled, report_udp;
  unsigned udp_scan_ms;
  uv_timer_t udp_timer;
  int udp_timer_open;
  agent_scan_t scan;
  conn_t *control; /* the active control stream, also linked in conns */
  conn_t *conns;
  /* Close notices: relayed data streams by the id the host's OPEN gave
   * (agent_data.c adds them, agent.c removes them when their relay has
   * closed, agent_control.c looks the host's notices up). */
  lr_relay_ids_t stream_ids;
  size_t nconns;
  int shutting_down;
  struct {
    rlsn_t **v;
    size_t n;
    unsigned retry_ticks;
    uint32_t next_id;
    lr_ratelimit_t accept_rl;
  } rev; /* agent_reverse.c's */
};

static inline uv_stream_t *agent_transport(conn_t *c) { return &c->relay.ep[1].u.stream; }

/* agent.c */
conn_t *agent_conn_new(lr_agent_t *a); /* NULL when out of memory */
void agent_conn_close(conn_t *c);      /* abrupt; safe in any phase */
void agent_conn_finish(conn_t *c);     /* after the last reply: shut, drain, close */
void agent_close_timer(conn_t *c);
/* Queues a copy of buf on the transport. 0, or -1 after closing c. */
int agent_conn_send(conn_t *c, const void *buf, size_t len);
/* A data stream's owed preamble (preamble_owed), encoded into out and no
 * longer owed: its length, or 0 when none was owed. Whatever the agent
 * sends first on the stream starts with it. */
size_t agent_take_preamble(conn_t *c, uint8_t out[LR_PREAMBLE_LEN]);
void agent_fail_stream(conn_t *c, uint32_t code, const char *text); /* ERROR, then finish */
void agent_send_open_result(conn_t *c, uint32_t status, const char *text, int finish);
/* A known frame whose payload did not decode (rc): one log line, ERROR, end. */
void agent_bad_frame(conn_t *c, const lr_frame_t *f, int rc);
/* The first frame of a stream must be `type` (HELLO, OPEN, ATTACH): 1, or
 * 0 after a log line and a PROTOCOL error naming what came instead. */
int agent_first_frame_is(conn_t *c, const lr_frame_t *f, uint16_t type);
const char *agent_stream_name(const conn_t *c);

/* agent_auth.c */
void agent_auth_init(lr_agent_t *a, const lr_agent_opts_t *o);
/* A just-accepted stream: 1 to serve it (on probation after too many
 * failed authentications lately, which may close the oldest stream on
 * probation); 0 when it must be closed at once (a Unix peer whose uid is
 * not allowed), after a rate-limited log line. */
int agent_auth_admit(conn_t *c);
/* With a key: the preamble (kind LR_STREAM_ANY, flagged) and CHALLENGE, as
 * soon as the stream is accepted. 0, or -1 after closing c. */
int agent_auth_challenge(conn_t *c);
/* A host that did not prove the key: one rate-limited line naming the peer
 * and what failed, and a debit from the bucket. */
void agent_auth_failed(conn_t *c, const char *what);
/* The stream proved the key or is closing: it no longer counts against the
 * streams admitted on probation. Idempotent. */
void agent_auth_release(conn_t *c);
/* The host's first request on a stream (name: "HELLO", "OPEN", "ATTACH")
 * and whether its MAC verified. Without a key: 1. With one: 1 when it did
 * (our replies then carry our MAC); else 0 after agent_auth_failed and an
 * AUTH refusal (ERROR on a control stream, OPEN_RESULT elsewhere). */
int agent_auth_request(conn_t *c, const char *name, const lr_auth_t *auth, int verified);
/* A stream whose host has a key while this agent has none (or the other
 * way round): a rate-limited line; not counted as an attack. */
void agent_auth_mismatch(conn_t *c, const char *what);

/* agent_scan.c */
int agent_scan_init(lr_agent_t *a, char *err, size_t errlen);
void agent_scan_free(lr_agent_t *a);
/* Rescans into scan.cur (kept as it was when the scan fails). */
void agent_scan_full(lr_agent_t *a);
/* Rescans and leaves what changed since the last scan in scan.adds and
 * scan.dels. -1 when the scan failed (nothing changed then). */
int agent_scan_diff(lr_agent_t *a, size_t *nadds, size_t *ndels);
/* Makes scan.owners match scan.cur: owners of listeners that are new since
 * the last call are looked up (one /proc walk for all of them), those of
 * vanished ones forgotten. Call after a scan whose result is reported. */
void agent_scan_owners_sync(lr_agent_t *a);
/* The owner of a listener of scan.cur, or NULL when none is known. */
const lr_proc_owner_t *agent_scan_owner(const lr_agent_t *a, const lr_listener_t *l);
/* Recomputes scan.own from the transport listener and the published ones. */
void agent_scan_own_rebuild(lr_agent_t *a);
/* Event-driven detection: loads the eBPF trigger if o asks for it (else, or
 * when it fails, one log line and polling), and stops it at shutdown. */
void agent_scan_events_start(lr_agent_t *a, const lr_agent_opts_t *o);
void agent_scan_events_stop(lr_agent_t *a);
/* 1 while the trigger's UDP hooks work: UDP needs no poll of its own. */
int agent_scan_udp_events(const lr_agent_t *a);
/* The AGENT_INFO frame (how listeners are detected) into out; its length. */
size_t agent_scan_info_frame(const lr_agent_t *a, uint8_t *out, size_t cap);

/* agent_control.c */
void agent_control_hello(conn_t *c, const lr_frame_t *f);  /* PH_HELLO */
void agent_control_frame(conn_t *c, const lr_frame_t *f);  /* PH_CONTROL */
void agent_control_stop(conn_t *c); /* c is ending; no-op unless it is the control stream */
/* Scans now and reports what changed on the control stream (if any). */
void agent_control_report(lr_agent_t *a);

/* agent_data.c */
void agent_data_open(conn_t *c, const lr_frame_t *f); /* PH_OPEN */
void agent_data_timeout(conn_t *c);                   /* handshake timer in PH_CONNECTING */
/* One hop: OPEN_RESULT goes with the connected server socket (TCP or UDP)
 * over the Unix transport; then c closes (the host keeps its copy). */
void agent_data_pass(conn_t *c, uv_handle_t *server);
/* The transport stream becomes a relay: the bytes already read past the
 * handshake go to ep[0] first. what names the stream in log lines. */
void agent_data_start_relay(conn_t *c, const char *what);
/* The stream id the host's OPEN or ATTACH gave (0: none): c's relay takes
 * close notices under it. Before OPEN_RESULT goes out. */
void agent_data_number(conn_t *c, uint32_t stream_id);
/* A STREAM_CLOSE from the host: applied to the stream it names, ignored
 * for any other id. */
void agent_data_stream_close(lr_agent_t *a, const lr_stream_close_t *m);

/* agent.c: frees c once its timer, relay and flow are all closed. */
void agent_conn_release(conn_t *c);

/* agent_udp.c */
void agent_udp_open(conn_t *c);  /* an authorised OPEN with LR_OPEN_UDP */
void agent_udp_close(conn_t *c); /* c is closing: its flow socket too (no-op without) */

/* agent_control.c: a UDP-only scan and report (the eBPF trigger's
 * companion), and the timer that runs it. */
void agent_control_report_udp(lr_agent_t *a);
/* Starts or stops that timer as the detection in use needs it (after
 * HELLO, and when the eBPF trigger fails). */
void agent_control_udp_poll(lr_agent_t *a);

/* agent_reverse.c */
void agent_reverse_set(lr_agent_t *a, const lr_reverse_set_t *m);
void agent_reverse_retry(lr_agent_t *a);
void agent_reverse_close_all(lr_agent_t *a);
void agent_reverse_fail(lr_agent_t *a, uint32_t id, const lr_error_msg_t *e);
void agent_reverse_attach(conn_t *c, const lr_frame_t *f); /* PH_ATTACH */

#endif
